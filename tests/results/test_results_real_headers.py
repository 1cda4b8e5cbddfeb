"""Result objects built on real Sunnybrook cine headers (dates like "20120000", UIDs with leading zeros)."""
from __future__ import annotations

import datetime as dt
import re

import highdicom as hd
import numpy as np
import pytest

from dicomnode.analysis.pipeline import AnalysisContext, PipelineResult, SegmentationResult
from dicomnode.cmr.study import load_studies
from dicomnode.config import Config
from dicomnode.results.objects import build_result_objects
from dicomnode.results.seg import segment_masks, segment_plan
from synthetic import algorithm, write
from validators import dciodvfy

LEADING_ZERO_UID = re.compile(r"<([0-9.]+)> - Leading zeroes in embedded numeric component")


@pytest.fixture(scope="module")
def real_cine(datasets):
    studies = [s for s in load_studies([datasets / "sunnybrook-scd"]) if s.preferred("cine")]
    study = min(studies, key=lambda s: s.preferred("cine").slices)
    series = study.preferred("cine")
    volume = study.load_volume(series)
    phases, slices, rows, cols = volume.pixels.shape
    rr, cc = np.mgrid[:rows, :cols]
    distance = (rr - rows // 2) ** 2 + (cc - cols // 2) ** 2
    labelmap = np.zeros((2, slices, rows, cols), np.uint8)
    for position, radius in enumerate((20, 14)):
        labelmap[position, 1:-1][:, distance <= (radius + 6) ** 2] = 2
        labelmap[position, 1:-1][:, distance <= radius ** 2] = 1
    segmentation = SegmentationResult(series=series, volume=volume, labelmap=labelmap, phases=[0, phases // 2],
                                      phase_names=["end diastole", "end systole"], algorithm=algorithm("cine"),
                                      pipeline="cine")
    result = PipelineResult(name="cine", summary={"lv_edv_ml": 120.0, "lv_esv_ml": 60.0, "lv_sv_ml": 60.0,
                                                  "lv_ef_percent": 50.0, "lv_mass_g": 95.0, "ed_phase": 0,
                                                  "es_phase": phases // 2},
                            segmentations=[segmentation], algorithms=[segmentation.algorithm])
    context = AnalysisContext(config=Config(), runtime=None, started_at=dt.datetime.now().astimezone())
    return study, segmentation, build_result_objects(study, [result], context, secondary_capture=True)


def test_real_headers_give_valid_objects_in_the_source_study(real_cine, tmp_path):
    """Sunnybrook holds every phase of the cine in one series: each SEG (ED, ES) references a display copy of its
    phase's images (display_copy.py), valid like every other result object."""
    study, segmentation, objects = real_cine
    slices = len(segmentation.volume.frames[0])
    assert [o.Modality for o in objects] == ["MR"] * 2 * slices + ["SEG", "SEG", "SR", "DOC", "OT"]
    source_uids = {i.sop_instance_uid for i in segmentation.series.instances}
    for n, dataset in enumerate(objects):
        assert dataset.StudyInstanceUID == study.study_instance_uid
        assert not dataset.get("StudyDate")  # the source's "20120000" is not a date
        findings = dciodvfy(write(dataset, tmp_path / f"{n}.dcm"))
        # the only errors allowed: the source's own UIDs (leading zeros) that the SEG must reference verbatim
        source_uid_errors = [e for e in findings.errors
                             if LEADING_ZERO_UID.search(e) and LEADING_ZERO_UID.search(e).group(1) in source_uids]
        foreign = [e for e in findings.errors if e not in source_uid_errors
                   and not (source_uid_errors and "contains invalid data values" in e)]
        assert not foreign, "\n".join(foreign)


def test_real_seg_reads_back_on_ed_and_es_frames(real_cine, tmp_path):
    _, segmentation, objects = real_cine
    plan = segment_plan(segmentation)
    masks = segment_masks(segmentation, plan)
    segs = [o for o in objects if o.Modality == "SEG"]
    copy_of = {o.SourceImageSequence[0].ReferencedSOPInstanceUID: o.SOPInstanceUID for o in objects
               if o.Modality == "MR"}
    for segment in plan:
        read = hd.seg.segread(write(segs[segment.phase_position], tmp_path / "seg.dcm"))
        number = next(int(s.SegmentNumber) for s in read.SegmentSequence if s.SegmentLabel == segment.label)
        uids = [copy_of[ref.sop_instance_uid] for ref in segmentation.volume.frames[segment.phase_index]]
        pixels = read.get_pixels_by_source_instance(uids, segment_numbers=[number],
                                                    assert_missing_frames_are_empty=True)
        np.testing.assert_array_equal(pixels[..., 0], masks[..., segment.number - 1])
