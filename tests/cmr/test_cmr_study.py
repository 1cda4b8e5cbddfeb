"""Study-level rules: patient facts, repeats beside merged stacks and inside series, slice gaps and duplicates,
perfusion dynamics."""
from __future__ import annotations

import copy
import dataclasses

import pydicom
from pydicom.uid import generate_uid

from dicomnode.cmr import PatientInfo, understand_study
from dicomnode.cmr.frames import are_repeats, frames_of, images_per_slice
from dicomnode.cmr.grouping import read_header
from cmr_helpers import generated  # noqa: F401 (fixture)


def _clone(header, *, sop_suffix: str, series_suffix: str | None = None, **attributes):
    clone = copy.copy(header)
    clone.dataset = copy.deepcopy(header.dataset)
    # a derived UID that stays valid (at most 64 characters): malformed UIDs are declined
    clone.sop_instance_uid = clone.dataset.SOPInstanceUID = generate_uid(entropy_srcs=[header.sop_instance_uid,
                                                                                       sop_suffix])
    if series_suffix:
        clone.series_instance_uid = clone.dataset.SeriesInstanceUID = generate_uid(
            entropy_srcs=[header.series_instance_uid, series_suffix])
    for keyword, value in attributes.items():
        setattr(clone.dataset, keyword, value)
    return clone


def test_patient_info_from_header():
    ds = pydicom.Dataset()
    ds.PatientSex, ds.PatientAge, ds.PatientSize, ds.PatientWeight = "F", "045Y", "1.68", "70"
    assert PatientInfo.from_dataset(ds) == PatientInfo("F", 45.0, 1.68, 70.0)
    ds.PatientSex, ds.PatientAge, ds.PatientSize, ds.PatientWeight = "", "018M", "168", "0"
    assert PatientInfo.from_dataset(ds) == PatientInfo(None, 1.5, None, None)
    assert PatientInfo.from_dataset(pydicom.Dataset()) == PatientInfo()


def test_repeated_slice_is_kept_apart_from_the_merged_stack(generated):
    headers = [read_header(p) for p in generated[("lge", "siemens", None)].paths]
    psir = sorted((h for h in headers if "psir" in h.path.name), key=lambda h: int(h.dataset.SeriesNumber))
    repeat = _clone(psir[2], sop_suffix=".99", series_suffix=".99", SeriesNumber=99, SeriesTime="093000")
    study = understand_study(headers + [repeat])
    stack = study.preferred("lge")
    assert stack.slices == 5 and stack.lge_kind == "psir" and len(stack.series_instance_uids) == 5
    single = [s for s in study.series if s.series_number == 99]
    assert len(single) == 1 and single[0].slices == 1 and single[0].view.value == "other"


def test_repeat_inside_a_one_slice_series_joins_the_stack_and_the_latest_image_counts(generated):
    """A scanner re-sending one slice of a one-series-per-slice LGE export (new SOPInstanceUID, same series): the
    stack keeps every slice, the later acquisition is used and the earlier one is named, not the slice dropped."""
    headers = [read_header(p) for p in generated[("lge", "siemens", None)].paths]
    psir = sorted((h for h in headers if "psir" in h.path.name), key=lambda h: int(h.dataset.SeriesNumber))
    later = _clone(psir[2], sop_suffix=".2", InstanceNumber=2, AcquisitionTime="235959.000000")
    study = understand_study(headers + [later])
    stack = study.preferred("lge")
    assert (stack.slices, stack.phases, len(stack.series_instance_uids)) == (5, 1, 5)
    volume = study.load_volume(stack)
    assert volume.shape[:2] == (1, 5)
    used = {ref.sop_instance_uid for ref in volume.frames[0]}
    assert later.sop_instance_uid in used and psir[2].sop_instance_uid not in used
    (entry,) = volume.excluded
    assert entry["sop_instance_uid"] == psir[2].sop_instance_uid and "repeat of one slice" in entry["reason"]


def test_reacquired_slice_in_a_multislice_series_keeps_the_stack(generated):
    """One slice of a one-series LGE stack acquired again: the series is not read as two phases (nor refused)."""
    headers = [read_header(p) for p in generated[("lge", "ge", None)].paths if "psir" in p.name]
    headers.sort(key=lambda h: int(h.dataset.InstanceNumber))
    again = _clone(headers[3], sop_suffix=".again", InstanceNumber=99, AcquisitionTime="235959.000000")
    study = understand_study(headers + [again])
    stack = study.preferred("lge")
    assert (stack.slices, stack.phases) == (5, 1)
    volume = study.load_volume(stack)
    assert volume.shape[:2] == (1, 5)
    assert again.sop_instance_uid in {ref.sop_instance_uid for ref in volume.frames[0]}
    assert [e["sop_instance_uid"] for e in volume.excluded] == [headers[3].sop_instance_uid]


def test_distinct_phases_or_inversion_times_are_not_repeats(generated):
    header = read_header(generated[("lge", "ge", None)].paths[0])
    (frame,) = frames_of(header)
    same = dataclasses.replace(frame, acquisition_time=(frame.acquisition_time or 0) + 30.0, instance_number=7)
    assert are_repeats([frame, same])
    assert not are_repeats([frame])
    assert not are_repeats([frame, dataclasses.replace(frame, trigger_time=(frame.trigger_time or 0) + 40.0)])
    assert not are_repeats([frame, dataclasses.replace(frame, inversion_time=(frame.inversion_time or 0) + 50.0)])
    assert not are_repeats([frame, dataclasses.replace(frame, temporal_index=(frame.temporal_index or 0) + 1)])
    assert not are_repeats([frame, dataclasses.replace(frame, image_type=("ORIGINAL", "PRIMARY", "OTHER"))])
    # a cine slice keeps its phases; a stack whose every slice holds several images is not touched
    phases = [dataclasses.replace(frame, trigger_time=40.0 * k) for k in range(3)]
    assert images_per_slice([phases, [frame]]) == [3, 1]
    assert images_per_slice([[frame, same], [frame]]) == [1, 1]
    assert images_per_slice([[frame, same], [frame, same]]) == [2, 2]


def test_an_intact_copy_wins_over_a_truncated_copy_of_the_same_instance(generated, tmp_path):
    """Two files of one SOPInstanceUID, the truncated one first in file order: the whole file is analysed and the
    declined entry names both files."""
    paths = [p for p in generated[("lge", "ge", None)].paths if "psir" in p.name]
    whole = paths[2]
    cut = tmp_path / "a_cut.dcm"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    headers = [read_header(cut)] + [read_header(p) for p in paths]
    study = understand_study(headers)
    volume = study.load_volume(study.preferred("lge"))
    assert volume.shape[:2] == (1, 5) and volume.excluded == []
    (entry,) = [d for d in study.declined if "duplicate SOPInstanceUID" in d.reason]
    assert f"{cut} left out, {whole} kept" in entry.reason


def test_gap_and_duplicate_are_reported(generated):
    study = generated[("lge", "ge", None)]
    headers = [read_header(p) for p in study.paths if "psir" in p.name]
    headers.sort(key=lambda h: int(h.dataset.InstanceNumber))
    duplicate = _clone(headers[0], sop_suffix=".1")
    cmr = understand_study(headers[:2] + headers[3:] + [duplicate])
    volume = cmr.load_volume(cmr.preferred("lge"))
    assert volume.shape[1] == 4
    assert any(w.startswith("irregular slice spacing: median 10.00 mm, also 20.00 mm (gap") for w in volume.warnings)
    assert any(w.startswith("duplicate frame at slice") and duplicate.sop_instance_uid in w for w in volume.warnings)


def test_perfusion_dynamics(generated):
    headers = [read_header(p) for p in generated[("lge", "ge", None)].paths if "magnitude" in p.name]
    dynamics = []
    for index in range(30):
        for header in headers:
            dynamics.append(_clone(header, sop_suffix=f".{index}", series_suffix=".7", SeriesNumber=7,
                                   ScanningSequence="GR", SequenceVariant=["SP", "SK"], InversionTime="0",
                                   ImageType=["ORIGINAL", "PRIMARY", "M", "NONE"], SeriesDescription="",
                                   AcquisitionTime=f"0900{index:02d}.000000", TriggerTime="50"))
    (series,) = understand_study(dynamics).series
    assert series.sequence.value == "perfusion", series.sequence.evidence
    assert series.phases == 30 and series.slices == 5
