"""A SEG whose source series also holds a localizer references an unchanged copy of the stack (OHIF v3 needs it)."""
from __future__ import annotations

import copy

from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from dicomnode.cmr.types import InstanceHeader
from dicomnode.results.display_copy import DERIVATION, PROCESSING_EQUIPMENT
from dicomnode.results.objects import build_result_objects
from dicomnode.results.provenance import NODE_MANUFACTURER, NODE_MODEL_NAME
from synthetic import make_study, write
from validators import assert_valid


def with_files_and_a_localizer(tmp_path: Path):
    """The synthetic study with its cine frames written as files (pixel data included) and a localizer image in the
    cine's own series."""
    study, results, context = make_study(slices=3, cine_phases=5)
    cine = study.series[0]
    headers = []
    for n, instance in enumerate(cine.instances):
        ds = instance.dataset
        ds.PixelData = (np.arange(ds.Rows * ds.Columns, dtype=np.uint16) % 4000).tobytes()
        path = write(ds, tmp_path / f"cine{n}.dcm")
        headers.append(InstanceHeader(path, instance.sop_instance_uid, instance.sop_class_uid,
                                      instance.series_instance_uid, ds))
    cine.instances[:] = headers
    localizer = copy.deepcopy(cine.instances[0].dataset)
    localizer.SOPInstanceUID = generate_uid()
    localizer.ImageOrientationPatient = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
    study.series.append(replace(cine, key=f"{cine.series_instance_uid}#localizer", instances=[InstanceHeader(
        Path("/dev/null/localizer"), localizer.SOPInstanceUID, localizer.SOPClassUID, localizer.SeriesInstanceUID,
        localizer)]))
    return study, results, context


def test_seg_of_a_series_shared_with_a_localizer_references_a_copy(tmp_path):
    study, results, context = with_files_and_a_localizer(tmp_path)
    objects = build_result_objects(study, results[1:2], context)
    copies = [o for o in objects if o.Modality == "MR"]
    segs = [o for o in objects if o.Modality == "SEG"]
    assert len(segs) == 2 and len(copies) == 6  # ED and ES, 3 slices each
    cine_seg = results[1].segmentations[0]
    for seg, phase_index in zip(segs, cine_seg.phases):
        copy_series = {c.SeriesInstanceUID for c in copies if c.SeriesNumber == seg.SeriesNumber + 300}
        assert [s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence] == list(copy_series)
        originals = {ref.sop_instance_uid for ref in cine_seg.volume.frames[phase_index]}
        mine = [c for c in copies if c.SeriesInstanceUID in copy_series]
        assert {c.SourceImageSequence[0].ReferencedSOPInstanceUID for c in mine} == originals
        for duplicate in mine:
            assert list(duplicate.ImageType[:2]) == ["DERIVED", "SECONDARY"]
            original = next(i.dataset for i in cine_seg.series.instances
                            if i.sop_instance_uid == duplicate.SourceImageSequence[0].ReferencedSOPInstanceUID)
            assert duplicate.PixelData == original.PixelData
            assert duplicate.ImagePositionPatient == original.ImagePositionPatient
            assert duplicate.FrameOfReferenceUID == original.FrameOfReferenceUID
    assert len({c.SOPInstanceUID for c in copies}) == 6


def test_copies_are_numbered_in_stack_order_and_name_the_node(tmp_path):
    """Instance Number 1..N in stack order in each copy series, not the source's (here 1..3 and 10..12); the scanner
    stays in General Equipment and the node is named in the Contributing Equipment Sequence (PS3.3 C.7.5.1)."""
    study, results, context = with_files_and_a_localizer(tmp_path)
    copies = [o for o in build_result_objects(study, results[1:2], context) if o.Modality == "MR"]
    by_series: dict[str, list] = {}
    for duplicate in copies:
        by_series.setdefault(duplicate.SeriesInstanceUID, []).append(duplicate)
    assert len(by_series) == 2
    for series in by_series.values():
        in_stack_order = sorted(series, key=lambda c: float(c.ImagePositionPatient[2]))
        assert [int(c.InstanceNumber) for c in in_stack_order] == [1, 2, 3]
    for duplicate in copies:
        assert duplicate.Manufacturer == "SIEMENS" and duplicate.ManufacturerModelName == "Avanto"
        node = duplicate.ContributingEquipmentSequence[-1]
        purpose = node.PurposeOfReferenceCodeSequence[0]
        assert (purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning) == (
            PROCESSING_EQUIPMENT.value, PROCESSING_EQUIPMENT.scheme_designator, PROCESSING_EQUIPMENT.meaning)
        assert node.Manufacturer == NODE_MANUFACTURER and node.ManufacturerModelName == NODE_MODEL_NAME
        assert node.SoftwareVersions and node.ContributionDescription == DERIVATION
        assert node.ContributionDateTime.startswith(context.started_at.strftime("%Y%m%d%H%M%S"))


def test_no_copy_when_the_series_holds_only_the_stack(tmp_path):
    study, results, context = make_study(slices=3, cine_phases=5)
    assert not [o for o in build_result_objects(study, results[1:2], context) if o.Modality == "MR"]


@pytest.mark.peers
def test_copy_passes_dciodvfy_and_pixelmed(tmp_path):
    study, results, context = with_files_and_a_localizer(tmp_path)
    duplicate = next(o for o in build_result_objects(study, results[1:2], context) if o.Modality == "MR")
    assert_valid(write(duplicate, tmp_path / "copy.dcm"), "DicomInstanceValidator")


def test_copies_of_images_without_a_common_frame_of_reference_share_one_and_lose_invalid_dates(tmp_path):
    """Sunnybrook gives every image its own Frame of Reference and dates like 20120000: the copies of one
    segmentation (ED and ES alike) get one new Frame of Reference, the SEGs carry it, and invalid dates are emptied."""
    study, results, context = with_files_and_a_localizer(tmp_path)
    cine = study.series[0]
    for n, instance in enumerate(cine.instances):
        dataset = pydicom.dcmread(instance.path)  # the copies are made from the files, the headers read from them
        dataset.FrameOfReferenceUID = generate_uid()
        dataset.SeriesDate = dataset.AcquisitionDate = "20120000"
        dataset.ContentTime = "083000.5"
        write(dataset, instance.path)
        cine.instances[n] = replace(instance, dataset=pydicom.dcmread(instance.path, stop_before_pixels=True))
    objects = build_result_objects(study, results[1:2], context)
    copies = [o for o in objects if o.Modality == "MR"]
    segs = [o for o in objects if o.Modality == "SEG"]
    shared = {c.FrameOfReferenceUID for c in copies}
    assert len(shared) == 1 and shared != {i.dataset.FrameOfReferenceUID for i in study.series[0].instances}
    assert {s.FrameOfReferenceUID for s in segs} == shared
    assert {c.AcquisitionDate for c in copies} == {""} and {c.ContentTime for c in copies} == {"083000.5"}
    assert {c.get("SeriesDate", "") for c in copies} == {""}
