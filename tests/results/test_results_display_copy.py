"""A SEG whose labelled images are only part of their source series (a localizer, or the other phases of a whole-cycle
cine share it) references an unchanged copy of its images in a series of its own (OHIF v3 needs it)."""
from __future__ import annotations

import copy

from dataclasses import replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from dicomnode.cmr.types import FrameRef, InstanceHeader
from dicomnode.results.display_copy import (DERIVATION, PLACED_DERIVATION, PROCESSING_EQUIPMENT, needs_display_copies,
                                            tilted_sources)
from dicomnode.results.objects import build_result_objects
from dicomnode.results.provenance import NODE_MANUFACTURER, NODE_MODEL_NAME
from dicomnode.results.seg import segment_masks, segment_plan
from synthetic import (as_enhanced_mr, cine_one_series_per_slice, make_study, one_series_per_slice,
                       tilt_slices, write)
from validators import assert_all_valid, assert_valid


def with_files_and_a_localizer(tmp_path: Path, **attributes):
    """The synthetic study with its cine frames written as files (pixel data included) and a localizer image in the
    cine's own series; `attributes` (keyword: value) set on every instance first."""
    study, results, context = make_study(slices=3, cine_phases=5)
    for series in study.series:
        for instance in series.instances:
            for keyword, value in attributes.items():
                setattr(instance.dataset, keyword, value)
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


def test_copies_of_a_multi_valued_patient_id_carry_it_as_received(tmp_path):
    """review45 #1: display copies carry a PatientID / PatientName / AccessionNumber of several values as received,
    backslash included, like every other result object, and are written without an error."""
    identity = {"PatientID": "123\\456", "PatientName": "Doe^John\\Roe^Richard", "AccessionNumber": "A1\\B2"}
    study, results, context = with_files_and_a_localizer(tmp_path, **identity)
    objects = build_result_objects(study, results[1:2], context)
    copies = [o for o in objects if o.Modality == "MR"]
    assert copies
    for n, duplicate in enumerate(copies):
        back = pydicom.dcmread(write(duplicate, tmp_path / f"copy{n}.dcm"))
        for keyword, value in identity.items():
            written = back[keyword].value
            assert ("\\".join(str(v) for v in written) if back[keyword].VM > 1 else str(written)) == value


def test_copies_are_numbered_in_the_sources_instance_order_and_name_the_node(tmp_path):
    """Instance Number 1..N in each copy series in the order of the sources' Instance Numbers (a viewer opens the copy
    at the same end as the source: here the scanner numbered the slices against the stack order), not the source's
    own numbers; the scanner stays in General Equipment and the node is named in the Contributing Equipment Sequence
    (PS3.3 C.7.5.1)."""
    study, results, context = with_files_and_a_localizer(tmp_path)
    cine = study.series[0]
    frames = results[1].segmentations[0].volume.frames
    for p, row in enumerate(frames):  # the scanner's numbers run from the last slice of the stack to the first
        for k, ref in enumerate(row):
            instance = next(i for i in cine.instances if i.sop_instance_uid == ref.sop_instance_uid)
            instance.dataset.InstanceNumber = p * len(row) + (len(row) - k)
    copies = [o for o in build_result_objects(study, results[1:2], context) if o.Modality == "MR"]
    by_series: dict[str, list] = {}
    for duplicate in copies:
        by_series.setdefault(duplicate.SeriesInstanceUID, []).append(duplicate)
    assert len(by_series) == 2
    for series in by_series.values():
        in_stack_order = sorted(series, key=lambda c: float(c.ImagePositionPatient[2]))
        assert [int(c.InstanceNumber) for c in in_stack_order] == [3, 2, 1]
        sources = {i.sop_instance_uid: int(i.dataset.InstanceNumber) for i in cine.instances}
        in_source_order = sorted(series, key=lambda c: sources[c.SourceImageSequence[0].ReferencedSOPInstanceUID])
        assert [int(c.InstanceNumber) for c in in_source_order] == [1, 2, 3]
    for duplicate in copies:
        # the node authors the copy (break46a #5): General Equipment is the node's, the scanner acquisition equipment
        assert duplicate.Manufacturer == NODE_MANUFACTURER and duplicate.ManufacturerModelName == NODE_MODEL_NAME
        scanner = duplicate.ContributingEquipmentSequence[-2]
        assert scanner.Manufacturer == "SIEMENS" and scanner.ManufacturerModelName == "Avanto"
        node = duplicate.ContributingEquipmentSequence[-1]
        purpose = node.PurposeOfReferenceCodeSequence[0]
        assert (purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning) == (
            PROCESSING_EQUIPMENT.value, PROCESSING_EQUIPMENT.scheme_designator, PROCESSING_EQUIPMENT.meaning)
        assert node.Manufacturer == NODE_MANUFACTURER and node.ManufacturerModelName == NODE_MODEL_NAME
        assert node.SoftwareVersions and node.ContributionDescription == DERIVATION
        assert node.ContributionDateTime.startswith(context.started_at.strftime("%Y%m%d%H%M%S"))


def test_no_copy_when_the_series_holds_only_the_stack(tmp_path):
    """The LGE path is unchanged: a single-phase series holding only its stack, or a stack sent as one series per
    slice, keeps its SEGs on the original images."""
    study, results, context = make_study(slices=3, cine_phases=5)
    objects = build_result_objects(study, results[:1], context)
    assert not [o for o in objects if o.Modality == "MR"]
    (seg,) = [o for o in objects if o.Modality == "SEG"]
    assert [s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence] == [study.series[1].series_instance_uid]
    one_series_per_slice(results[0].segmentations[0])
    objects = build_result_objects(study, results[:1], context)
    assert not [o for o in objects if o.Modality == "MR"] and len([o for o in objects if o.Modality == "SEG"]) == 2


def _referenced_images(seg) -> set[str]:
    return {i.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence for i in s.ReferencedInstanceSequence}


def test_a_cine_holding_every_phase_in_one_series_gets_one_copy_series_per_labelled_phase():
    """A1: a GE/Philips cine (N slices x M phases in one series) opens in OHIF 3.13 as a 4-D volume at time point 1,
    where the ED and ES labels are never seen: each SEG references a copy series holding exactly its phase's images,
    and the SR draws its cine outlines on the same copies (A8), which it lists in its evidence."""
    study, results, context = make_study(slices=3, cine_phases=5)
    segmentation = results[1].segmentations[0]
    assert needs_display_copies(study, segmentation)
    objects = build_result_objects(study, results[1:2], context)
    copies = [o for o in objects if o.Modality == "MR"]
    segs = [o for o in objects if o.Modality == "SEG"]
    assert len(segs) == 2 and len(copies) == 6 and len({c.SeriesInstanceUID for c in copies}) == 2
    copy_of = {c.SOPInstanceUID: c.SourceImageSequence[0].ReferencedSOPInstanceUID for c in copies}
    for seg, phase_index in zip(segs, segmentation.phases):  # ED first, then ES
        (series,) = seg.ReferencedSeriesSequence
        mine = {c.SOPInstanceUID for c in copies if c.SeriesInstanceUID == series.SeriesInstanceUID}
        assert _referenced_images(seg) == mine  # exactly the copy series' images
        originals = {ref.sop_instance_uid for ref in segmentation.volume.frames[phase_index]}
        assert {copy_of[uid] for uid in mine} == originals
        for frame in seg.PerFrameFunctionalGroupsSequence:
            assert frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID in mine
    sr = next(o for o in objects if o.Modality == "SR" and o.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34")
    drawn_on = set()
    stack = list(sr.ContentSequence)
    while stack:
        item = stack.pop()
        if item.ValueType == "SCOORD":  # an outline, SELECTED FROM its image
            drawn_on.add(item.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        stack.extend(item.get("ContentSequence", []))
    assert drawn_on and drawn_on <= set(copy_of)  # outlines on the copies the SEGs reference, not the 4-D series
    evidence = {i.ReferencedSOPInstanceUID for study_item in sr.CurrentRequestedProcedureEvidenceSequence
                for series in study_item.ReferencedSeriesSequence for i in series.ReferencedSOPSequence}
    assert drawn_on <= evidence


def test_a_cine_sent_as_one_series_per_slice_gets_one_seg_per_phase_on_its_copies():
    """Every slice series holds all phases of its slice (Siemens style): the copies of a phase gather all its slices
    in one series, so each phase has one SEG (not one per slice series), numbered in the source series' order."""
    study, results, context = make_study(slices=3, cine_phases=5)
    cine_one_series_per_slice(results[1].segmentations[0], [30 - k for k in range(3)])
    objects = build_result_objects(study, results[1:2], context)
    copies = [o for o in objects if o.Modality == "MR"]
    segs = [o for o in objects if o.Modality == "SEG"]
    assert len(segs) == 2 and len(copies) == 6 and len({c.SeriesInstanceUID for c in copies}) == 2
    for seg in segs:
        assert len(seg.ReferencedSeriesSequence) == 1 and len(_referenced_images(seg)) == 3
    for series_uid in {c.SeriesInstanceUID for c in copies}:
        mine = sorted((c for c in copies if c.SeriesInstanceUID == series_uid), key=lambda c: int(c.InstanceNumber))
        # numbered in the order of the source series (28, 29, 30: the last slice first)
        assert [float(c.ImagePositionPatient[2]) for c in mine] == sorted(
            (float(c.ImagePositionPatient[2]) for c in mine), reverse=True)


def test_a_multi_frame_source_keeps_its_seg_on_the_original():
    study, results, _ = make_study(slices=3, cine_phases=5)
    assert not needs_display_copies(study, as_enhanced_mr(results[1].segmentations[0]))


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
    # the copy series were made at the analysis: their Series Date is the analysis date (order_for_viewers)
    assert {c.SeriesDate for c in copies} == {context.started_at.strftime("%Y%m%d")}


def _tilted_objects(degrees: float = 1.0):
    """(segmentation, copies, SEGs) of the synthetic LGE whose 4 slices are tilted by +-degrees (tilt_slices)."""
    study, results, context = make_study(slices=4, cine_phases=2)
    segmentation = tilt_slices(results[0].segmentations[0], degrees)
    objects = build_result_objects(study, results[:1], context)
    return (segmentation, [o for o in objects if o.Modality == "MR"], [o for o in objects if o.Modality == "SEG"])


def test_a_tilted_stack_gets_its_seg_on_copies_placed_in_the_mean_plane(tmp_path):
    """OHIF refuses a SEG whose orientation differs from its source image's by more than 1e-3 per component
    ("orthogonal to the acquisition plane", break37b finding 1): a stack tilted +-1 degree gets DERIVED copies whose
    ImageOrientationPatient is exactly the SEG's and whose positions are the SEG frames', pixels unchanged."""
    segmentation, copies, segs = _tilted_objects()
    assert tilted_sources(segmentation)
    (seg,) = segs
    assert len(copies) == 4
    orientation = [float(v) for v in seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
                   .ImageOrientationPatient]
    np.testing.assert_allclose(orientation, segmentation.volume.orientation, atol=1e-12)
    by_uid = {str(c.SOPInstanceUID): c for c in copies}
    originals = {i.sop_instance_uid: i.dataset for i in segmentation.series.instances}
    assert [s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence] == [copies[0].SeriesInstanceUID]
    for frame in seg.PerFrameFunctionalGroupsSequence:
        source = frame.DerivationImageSequence[0].SourceImageSequence[0]
        duplicate = by_uid[source.ReferencedSOPInstanceUID]
        assert source.SpatialLocationsPreserved == "YES"
        assert [float(v) for v in duplicate.ImageOrientationPatient] == orientation  # OHIF: equal, not 1 deg off
        np.testing.assert_allclose([float(v) for v in duplicate.ImagePositionPatient],
                                   [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient], atol=1e-6)
    for duplicate in copies:
        assert list(duplicate.ImageType[:2]) == ["DERIVED", "SECONDARY"]
        assert duplicate.DerivationDescription == PLACED_DERIVATION
        reference = duplicate.SourceImageSequence[0]
        assert reference.SpatialLocationsPreserved == "NO"
        assert duplicate.PixelData == originals[reference.ReferencedSOPInstanceUID].PixelData
    read = hd.seg.segread(write(seg, tmp_path / "tilted.dcm"))
    uids = [ref.sop_instance_uid for ref in read_frames(segmentation, copies)]
    pixels = read.get_pixels_by_source_instance(uids, assert_missing_frames_are_empty=True)
    np.testing.assert_array_equal(pixels, segment_masks(segmentation, segment_plan(segmentation)))


def read_frames(segmentation, copies):
    """The copies' FrameRefs in the volume's slice order (each copy names its original)."""
    by_original = {str(c.SourceImageSequence[0].ReferencedSOPInstanceUID): c for c in copies}
    return [FrameRef(str(by_original[ref.sop_instance_uid].SOPInstanceUID), str(copies[0].SOPClassUID),
                     str(copies[0].SeriesInstanceUID), None) for ref in segmentation.volume.frames[0]]


def test_orientation_rounding_noise_keeps_the_seg_on_the_originals():
    """Orientations differing by rounding (1e-5 per component, under ORIENTATION_NOISE 1e-4) take the direct route:
    no copies, the SEG on the original images (OHIF displays them: its tolerance is 1e-3)."""
    study, results, context = make_study(slices=4, cine_phases=2)
    segmentation = results[0].segmentations[0]
    for k, instance in enumerate(segmentation.series.instances):
        orientation = [float(v) for v in instance.dataset.ImageOrientationPatient]
        orientation[1] += 1e-5 * (k % 2)
        instance.dataset.ImageOrientationPatient = orientation
    assert not tilted_sources(segmentation)
    objects = build_result_objects(study, results[:1], context)
    assert not [o for o in objects if o.Modality == "MR"]


@pytest.mark.peers
def test_placed_copy_and_its_seg_pass_dciodvfy_and_pixelmed(tmp_path):
    _, copies, segs = _tilted_objects()
    assert_all_valid([(write(copies[0], tmp_path / "placed.dcm"), "DicomInstanceValidator"),
                      (write(segs[0], tmp_path / "seg.dcm"), "DicomInstanceValidator")])
