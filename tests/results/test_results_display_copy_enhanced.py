"""Display copies of a tilted Enhanced MR stack (break37c_emf finding 2, follow-up): frames whose per-frame Plane
Orientation differs from the stack's mean plane get single-frame MR Image copies placed in that plane, as the slices
of a tilted single-frame stack do, and the SEG references the copies with SpatialLocationsPreserved YES."""
from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import EnhancedMRImageStorage, MRImageStorage, RLELossless, generate_uid

from dicomnode.cmr.frames import frames_of, stack_plane
from dicomnode.cmr.types import FrameRef, InstanceHeader
from dicomnode.cmr.volume import build_volume
from dicomnode.results.display_copy import (FRAME_PLACED_DERIVATION, display_copies, needs_display_copies,
                                            tilted_sources)
from dicomnode.results.objects import build_result_objects
from dicomnode.results.seg import segment_masks, segment_plan
from dicomnode.results.single_frame import frame_pixel_data, single_frame_image
from synthetic import make_study, tilt_slices, write
from validators import assert_all_valid, assert_valid

#: classic attributes an Enhanced MR instance keeps in functional groups (or not at all), never at the top level
CLASSIC_ONLY = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "TriggerTime",
                "ScanningSequence", "SequenceVariant", "ScanOptions", "EchoTime", "RepetitionTime", "EchoTrainLength",
                "InversionTime", "PixelData", "InstanceNumber")


def _item(**values) -> Dataset:
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def enhanced_lge(degrees: float = 1.0, tmp_path: Path | None = None):
    """(study, [lge result], context, the Enhanced MR dataset): the synthetic 4-slice LGE tilted +-degrees
    (synthetic.tilt_slices) and re-sent as ONE Enhanced MR instance as a scanner writes it: every frame's Plane
    Position / Orientation, Frame Content, Cardiac Synchronization and Pixel Value Transformation per frame, Pixel
    Measures and the MR groups shared, the MR Pulse Sequence module at the top level, no classic MR attributes; the
    volume's geometry rebuilt from its frames as the node builds it (`stack_plane`)."""
    study, results, context = make_study(slices=4, cine_phases=2)
    segmentation = tilt_slices(results[0].segmentations[0], degrees) if degrees else results[0].segmentations[0]
    classic = [i.dataset for i in segmentation.series.instances]
    first = classic[0]
    ds = Dataset()
    ds.update({k: copy.deepcopy(first[k]) for k in first.keys()})
    for keyword in CLASSIC_ONLY:
        if keyword in ds:
            delattr(ds, keyword)
    ds.file_meta = copy.deepcopy(first.file_meta)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "T1", "NONE"]
    ds.ContentDate, ds.ContentTime, ds.AcquisitionDateTime = "20261121", "101700", "20261121101600"
    ds.ContentQualification, ds.ResonantNucleus, ds.KSpaceFiltering = "PRODUCT", "1H", "NONE"
    ds.ApplicableSafetyStandardAgency, ds.MagneticFieldStrength = "IEC", 1.5
    ds.PixelPresentation, ds.VolumetricProperties, ds.VolumeBasedCalculationTechnique = "MONOCHROME", "VOLUME", "NONE"
    ds.ComplexImageComponent, ds.AcquisitionContrast = "MAGNITUDE", "T1"
    ds.PulseSequenceName, ds.MRAcquisitionType, ds.EchoPulseSequence = "tfl2d1", "2D", "GRADIENT"
    ds.MultipleSpinEcho = ds.MultiPlanarExcitation = ds.PhaseContrast = "NO"
    ds.TimeOfFlightContrast = ds.SaturationRecovery = ds.EchoPlanarPulseSequence = "NO"
    ds.SteadyStatePulseSequence = ds.SpectrallySelectedSuppression = ds.OversamplingPhase = "NONE"
    ds.GeometryOfKSpaceTraversal, ds.SegmentedKSpaceTraversal = "RECTILINEAR", "PARTIAL"
    ds.RectilinearPhaseEncodeReordering, ds.CoverageOfKSpace, ds.NumberOfKSpaceTrajectories = "LINEAR", "FULL", 1
    ds.CardiacSynchronizationTechnique, ds.CardiacSignalSource = "REALTIME", "ECG"
    ds.CardiacRRIntervalSpecified, ds.CardiacBeatRejectionTechnique = 1000.0, "NONE"
    ds.RespiratoryMotionCompensationTechnique, ds.RespiratorySignalSource = "NONE", "NONE"
    ds.AcquisitionContextSequence = DicomSequence([])
    ds.BurnedInAnnotation, ds.LossyImageCompression, ds.PresentationLUTShape = "NO", "00", "IDENTITY"
    ds.NumberOfFrames = len(classic)
    organisation = generate_uid()
    ds.DimensionOrganizationSequence = DicomSequence([_item(DimensionOrganizationUID=organisation)])
    ds.DimensionIndexSequence = DicomSequence([_item(
        DimensionOrganizationUID=organisation, DimensionIndexPointer=pydicom.datadict.tag_for_keyword(
            "InStackPositionNumber"), FunctionalGroupPointer=pydicom.datadict.tag_for_keyword("FrameContentSequence"))])
    shared = _item(
        PixelMeasuresSequence=DicomSequence([_item(PixelSpacing=list(first.PixelSpacing), SliceThickness=8.0)]),
        MRTimingAndRelatedParametersSequence=DicomSequence([_item(
            RepetitionTime=3.0, FlipAngle=25.0, EchoTrainLength=1, RFEchoTrainLength=1, GradientEchoTrainLength=1,
            SpecificAbsorptionRateSequence=DicomSequence([_item(SpecificAbsorptionRateDefinition="IEC_WHOLE_BODY",
                                                                SpecificAbsorptionRateValue=0.5)]),
            GradientOutputType="DB_DT", GradientOutput=10.0, OperatingModeSequence=DicomSequence(
                [_item(OperatingModeType=t, OperatingMode="IEC_NORMAL")
                 for t in ("STATIC FIELD", "RF", "GRADIENT")]))]),
        MREchoSequence=DicomSequence([_item(EffectiveEchoTime=1.2)]),
        MRModifierSequence=DicomSequence([_item(
            InversionRecovery="YES", InversionTimes=[300.0], FlowCompensation="NONE", T2Preparation="NO",
            SpatialPresaturation="NONE", PartialFourier="NO", ParallelAcquisition="NO",
            SpectrallySelectedExcitation="NONE")]),
        MRImageFrameTypeSequence=DicomSequence([_item(
            FrameType=["ORIGINAL", "PRIMARY", "T1", "NONE"], PixelPresentation="MONOCHROME",
            VolumetricProperties="VOLUME", VolumeBasedCalculationTechnique="NONE", ComplexImageComponent="MAGNITUDE",
            AcquisitionContrast="T1")]),
    )
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per_frame, frames = [], []
    for k, image in enumerate(classic):
        per_frame.append(_item(
            FrameContentSequence=DicomSequence([_item(
                StackID="1", InStackPositionNumber=k + 1, DimensionIndexValues=[k + 1],
                FrameAcquisitionDateTime=f"20261121101{k}00.000000")]),
            PlanePositionSequence=DicomSequence([_item(ImagePositionPatient=list(image.ImagePositionPatient))]),
            PlaneOrientationSequence=DicomSequence([_item(
                ImageOrientationPatient=list(image.ImageOrientationPatient))]),
            CardiacSynchronizationSequence=DicomSequence([_item(NominalCardiacTriggerDelayTime=400.0 + k,
                                                                RRIntervalTimeNominal=1000.0)]),
            PixelValueTransformationSequence=DicomSequence([_item(RescaleIntercept=-4096.0 + k, RescaleSlope=2.0,
                                                                  RescaleType="US")]),
        ))
        frames.append(FrameRef(ds.SOPInstanceUID, EnhancedMRImageStorage, ds.SeriesInstanceUID, k + 1))
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    ds.PixelData = b"".join(image.PixelData for image in classic)
    path = write(ds, tmp_path / "enhanced.dcm") if tmp_path is not None else Path("/dev/null/enhanced")
    header = InstanceHeader(path, ds.SOPInstanceUID, EnhancedMRImageStorage, ds.SeriesInstanceUID, ds)
    orientation, positions = stack_plane(frames_of(header))
    volume = replace(segmentation.volume, frames=[frames], orientation=orientation, positions=positions)
    series = replace(segmentation.series, instances=[header])
    lge = replace(results[0], segmentations=[replace(segmentation, series=series, volume=volume)])
    study.series[1] = series
    return study, [lge], context, ds


def _objects(degrees: float = 1.0):
    study, results, context, source = enhanced_lge(degrees)
    objects = build_result_objects(study, results, context)
    return results[0].segmentations[0], source, objects


def test_a_tilted_enhanced_stack_gets_single_frame_copies_placed_in_the_mean_plane(tmp_path):
    segmentation, source, objects = _objects()
    assert tilted_sources(segmentation) and all(isinstance(key, tuple) for key in tilted_sources(segmentation))
    copies = [o for o in objects if o.Modality == "MR"]
    (seg,) = [o for o in objects if o.Modality == "SEG"]
    assert len(copies) == 4 and {c.SOPClassUID for c in copies} == {MRImageStorage}
    assert len({c.SeriesInstanceUID for c in copies}) == 1 and len({c.SOPInstanceUID for c in copies}) == 4
    orientation = [float(v) for v in seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
                   .ImageOrientationPatient]
    by_uid = {str(c.SOPInstanceUID): c for c in copies}
    # the SEG references the copies (its only series) with their own geometry
    assert [s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence] == [copies[0].SeriesInstanceUID]
    for frame in seg.PerFrameFunctionalGroupsSequence:
        reference = frame.DerivationImageSequence[0].SourceImageSequence[0]
        duplicate = by_uid[reference.ReferencedSOPInstanceUID]
        assert reference.SpatialLocationsPreserved == "YES" and "ReferencedFrameNumber" not in reference
        assert [float(v) for v in duplicate.ImageOrientationPatient] == orientation
        np.testing.assert_allclose([float(v) for v in duplicate.ImagePositionPatient],
                                   [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient], atol=1e-6)
    size = int(source.Rows) * int(source.Columns) * 2
    for duplicate in copies:
        reference = duplicate.SourceImageSequence[0]
        number = int(reference.ReferencedFrameNumber)
        assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert reference.ReferencedSOPClassUID == EnhancedMRImageStorage
        assert reference.SpatialLocationsPreserved == "NO"
        assert duplicate.DerivationDescription == FRAME_PLACED_DERIVATION
        assert list(duplicate.ImageType[:3]) == ["DERIVED", "SECONDARY", "T1"]
        assert duplicate.PixelData == source.PixelData[(number - 1) * size:number * size]  # the frame, not resampled
        # patient, study, Frame of Reference: the source's; the frame's own values in the classic attributes
        for keyword in ("StudyInstanceUID", "PatientID", "PatientName", "FrameOfReferenceUID"):
            assert duplicate.get(keyword) == source.get(keyword), keyword
        # the scanner as acquisition equipment of the copy the node authors (break46a #5)
        assert duplicate.ContributingEquipmentSequence[-2].Manufacturer == source.Manufacturer
        assert int(duplicate.InstanceNumber) == number  # the frames' order (slice order here)
        assert float(duplicate.TriggerTime) == 400.0 + number - 1
        assert float(duplicate.RescaleIntercept) == -4096.0 + number - 1 and float(duplicate.RescaleSlope) == 2.0
        assert float(duplicate.InversionTime) == 300.0 and float(duplicate.EchoTime) == 1.2
        assert float(duplicate.RepetitionTime) == 3.0 and float(duplicate.SliceThickness) == 8.0
        assert list(duplicate.ScanningSequence) == ["GR", "IR"] and list(duplicate.SequenceVariant) == ["SK", "MP"]
        assert duplicate.ScanOptions == "CG" and duplicate.SequenceName == "tfl2d1"
        assert duplicate.AcquisitionDateTime.startswith("20261121101")
        for keyword in ("NumberOfFrames", "PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence",
                        "EchoPulseSequence", "DimensionIndexSequence", "AcquisitionContrast"):
            assert keyword not in duplicate, keyword
    # the labels sit on the copies where the volume has them
    read = hd.seg.segread(write(seg, tmp_path / "seg.dcm"))
    copy_of = {int(c.SourceImageSequence[0].ReferencedFrameNumber): str(c.SOPInstanceUID) for c in copies}
    uids = [copy_of[ref.frame_number] for ref in segmentation.volume.frames[0]]
    pixels = read.get_pixels_by_source_instance(uids, assert_missing_frames_are_empty=True)
    np.testing.assert_array_equal(pixels, segment_masks(segmentation, segment_plan(segmentation)))


def test_copies_of_frames_stored_out_of_spatial_order_are_numbered_in_spatial_order():
    """Finding (break1 #8): an Enhanced MR whose frames are stored out of spatial order (frames 1..4 = slices 3, 1,
    4, 2) got copies numbered in frame order, so a viewer ordering by Instance Number showed the stack shuffled. The
    copies are numbered along the stack normal, in the volume's (the SEG's) slice order."""
    study, results, context, source = enhanced_lge(1.0)
    segmentation = results[0].segmentations[0]
    order = [2, 0, 3, 1]  # stored frame j holds slice order[j]
    size = int(source.Rows) * int(source.Columns) * 2
    per_frame = list(source.PerFrameFunctionalGroupsSequence)
    pixels = bytes(source.PixelData)
    source.PerFrameFunctionalGroupsSequence = DicomSequence([per_frame[k] for k in order])
    source.PixelData = b"".join(pixels[k * size:(k + 1) * size] for k in order)
    frame_of_slice = {k: j + 1 for j, k in enumerate(order)}
    frames = [replace(ref, frame_number=frame_of_slice[k]) for k, ref in enumerate(segmentation.volume.frames[0])]
    segmentation = replace(segmentation, volume=replace(segmentation.volume, frames=[frames]))
    results = [replace(results[0], segmentations=[segmentation])]
    objects = build_result_objects(study, results, context)
    copies = sorted((o for o in objects if o.Modality == "MR"), key=lambda c: int(c.InstanceNumber))
    assert [int(c.InstanceNumber) for c in copies] == [1, 2, 3, 4]
    # the copy numbered k is slice k of the volume: its frame, its pixels, its position
    assert [int(c.SourceImageSequence[0].ReferencedFrameNumber) for c in copies] == [frame_of_slice[k]
                                                                                       for k in range(4)]
    for k, duplicate in enumerate(copies):
        assert duplicate.PixelData == pixels[k * size:(k + 1) * size]
    normal = np.cross(*np.reshape(np.asarray(segmentation.volume.orientation, float), (2, 3)))
    along = [float(np.dot(normal, [float(v) for v in c.ImagePositionPatient])) for c in copies]
    np.testing.assert_allclose(along, np.asarray(segmentation.volume.positions, float) @ normal, atol=1e-6)
    assert np.all(np.diff(along) > 0) or np.all(np.diff(along) < 0)
    (seg,) = [o for o in objects if o.Modality == "SEG"]
    referenced = [f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
                  for f in seg.PerFrameFunctionalGroupsSequence]
    number_of = {str(c.SOPInstanceUID): int(c.InstanceNumber) for c in copies}
    by_segment: dict[int, list[int]] = {}
    for frame, uid in zip(seg.PerFrameFunctionalGroupsSequence, referenced):
        segment = int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        by_segment.setdefault(segment, []).append(number_of[uid])
    for numbers in by_segment.values():  # each segment's frames (spatial order) run through the copies in one order
        assert numbers == sorted(numbers) or numbers == sorted(numbers, reverse=True), by_segment


def test_the_sr_draws_the_tilted_enhanced_outlines_on_the_copies():
    _, _, objects = _objects()
    copies = {str(c.SOPInstanceUID) for c in objects if c.Modality == "MR"}
    sr = next(o for o in objects if o.Modality == "SR" and o.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34")
    drawn_on, stack = set(), list(sr.ContentSequence)
    while stack:
        item = stack.pop()
        if item.ValueType == "SCOORD":
            drawn_on.add(item.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        stack.extend(item.get("ContentSequence", []))
    assert drawn_on and drawn_on <= copies
    evidence = {i.ReferencedSOPInstanceUID for study_item in sr.CurrentRequestedProcedureEvidenceSequence
                for series in study_item.ReferencedSeriesSequence for i in series.ReferencedSOPSequence}
    assert drawn_on <= evidence


def test_an_untilted_enhanced_stack_keeps_its_seg_on_the_frames():
    study, results, context, source = enhanced_lge(degrees=0)
    segmentation = results[0].segmentations[0]
    assert not tilted_sources(segmentation) and not needs_display_copies(study, segmentation)
    with pytest.raises(ValueError, match="only where its stack is tilted"):
        display_copies(segmentation, 0, 9301)
    objects = build_result_objects(study, results, context)
    assert not [o for o in objects if o.Modality == "MR"]
    (seg,) = [o for o in objects if o.Modality == "SEG"]
    references = [f.DerivationImageSequence[0].SourceImageSequence[0] for f in seg.PerFrameFunctionalGroupsSequence]
    assert {r.ReferencedSOPInstanceUID for r in references} == {source.SOPInstanceUID}
    assert {r.SpatialLocationsPreserved for r in references} == {"YES"}


def test_a_frame_of_an_encapsulated_source_keeps_its_own_bitstream():
    _, _, _, source = enhanced_lge()
    native = bytes(source.PixelData)
    source.compress(RLELossless, generate_instance_uid=False)
    element = frame_pixel_data(source, 3)
    assert element.is_undefined_length
    image = single_frame_image(source, 3)
    image.file_meta.TransferSyntaxUID = RLELossless
    size = int(source.Rows) * int(source.Columns) * 2
    np.testing.assert_array_equal(image.pixel_array,
                                  np.frombuffer(native[2 * size:3 * size], "<u2").reshape(source.Rows, source.Columns))
    with pytest.raises(ValueError):
        single_frame_image(source, 5)


@pytest.mark.peers
def test_tilted_enhanced_copy_and_its_seg_pass_dciodvfy_and_pixelmed(tmp_path):
    _, _, objects = _objects()
    duplicate = next(o for o in objects if o.Modality == "MR")
    seg = next(o for o in objects if o.Modality == "SEG")
    assert_all_valid([(write(duplicate, tmp_path / "frame_copy.dcm"), "DicomInstanceValidator"),
                      (write(seg, tmp_path / "seg.dcm"), "DicomInstanceValidator")])


def test_the_volume_of_a_tilted_enhanced_stack_no_longer_warns_that_viewers_may_not_show_its_seg(tmp_path):
    """The frames are analysed in the stack's mean plane as before; their SEG now sits on display copies, as a tilted
    single-frame stack's does, which says nothing about viewers either."""
    _, results, _, _ = enhanced_lge(tmp_path=tmp_path)
    segmentation = results[0].segmentations[0]
    volume = build_volume(segmentation.series)
    np.testing.assert_allclose(volume.orientation, segmentation.volume.orientation, atol=1e-9)
    assert not [w for w in volume.warnings if "SpatialLocationsPreserved" in w or "viewers" in w], volume.warnings


def _legacy_converted_frame(tmp_path: Path) -> tuple[Path, Dataset]:
    """Frame 2 of the synthetic LGE converted to ONE Legacy Converted Enhanced MR instance (highdicom's converter):
    its classic attributes sit in the Unassigned Converted Attributes and Frame Anatomy groups."""
    _, results, _ = make_study(slices=4, cine_phases=2)
    classic = [i.dataset for i in results[0].segmentations[0].series.instances]
    for dataset in classic:
        dataset.ScanningSequence, dataset.InversionTime = ["GR", "IR"], 300
    converted = hd.legacy.LegacyConvertedEnhancedMRImage(
        legacy_datasets=classic, series_instance_uid=generate_uid(), series_number=7, sop_instance_uid=generate_uid(),
        instance_number=1)
    image = single_frame_image(converted, 2)
    image.SOPInstanceUID = image.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    # the converter orders the frames its own way: the original is the image at the frame's position
    original = next(d for d in classic if list(d.ImagePositionPatient) == list(image.ImagePositionPatient))
    return write(image, tmp_path / "legacy_frame.dcm"), original


def test_a_frame_of_a_legacy_converted_source_gets_its_classic_attributes_back(tmp_path):
    path, original = _legacy_converted_frame(tmp_path)
    image = pydicom.dcmread(path)
    assert image.SOPClassUID == MRImageStorage and "NumberOfFrames" not in image
    assert "ReferencedSeriesSequence" not in image  # the converter's sources: the copy names its own
    assert list(image.ScanningSequence) == ["GR", "IR"] and float(image.InversionTime) == 300.0
    assert image.PixelData == original.PixelData and float(image.TriggerTime) == float(original.TriggerTime)


@pytest.mark.peers
def test_a_frame_of_a_legacy_converted_source_passes_dciodvfy(tmp_path):
    path, _ = _legacy_converted_frame(tmp_path)
    assert_valid(path, "DicomInstanceValidator")


def _vendor_variant(inversion_recovery: bool):
    """(segmentation, source, objects) of the tilted Enhanced MR LGE written as a Philips-style export does: no
    Echo Pulse Sequence at the top level (so the copies' Scanning Sequence is the one term IR, or RM), the Inversion
    Times in each frame's own MR Modifier item (300 + frame index ms) over a shared one, and each frame's VOI LUT
    window (break1 finding 6). `inversion_recovery` False: a non-IR source (no inversion, no Inversion Times)."""
    study, results, context, source = enhanced_lge()
    del source.EchoPulseSequence
    shared = source.SharedFunctionalGroupsSequence[0]
    modifier = shared.MRModifierSequence[0]
    if inversion_recovery:
        modifier.InversionTimes = [250.0]
    else:
        modifier.InversionRecovery = "NO"
        del modifier.InversionTimes
    for k, frame in enumerate(source.PerFrameFunctionalGroupsSequence):
        if inversion_recovery:
            own = copy.deepcopy(modifier)
            own.InversionTimes = [300.0 + k]
            frame.MRModifierSequence = DicomSequence([own])
        frame.FrameVOILUTSequence = DicomSequence([_item(WindowCenter=400 + k, WindowWidth=1200)])
    objects = build_result_objects(study, results, context)
    return results[0].segmentations[0], source, objects


@pytest.mark.parametrize("inversion_recovery", [True, False])
def test_copies_carry_the_frame_inversion_time_and_window(inversion_recovery):
    _, _, objects = _vendor_variant(inversion_recovery)
    copies = [o for o in objects if o.Modality == "MR"]
    assert len(copies) == 4
    for duplicate in copies:
        number = int(duplicate.SourceImageSequence[0].ReferencedFrameNumber)
        if inversion_recovery:  # the frame's own Inversion Times, not the shared item's, and never dropped
            assert duplicate.ScanningSequence == "IR" and float(duplicate.InversionTime) == 300.0 + number - 1
        else:
            assert duplicate.ScanningSequence == "RM" and "InversionTime" not in duplicate
        assert float(duplicate.WindowCenter) == 400 + number - 1 and float(duplicate.WindowWidth) == 1200
        # Rescale kept on purpose (a PSIR's sign lives in it), Type 2 attributes present
        assert float(duplicate.RescaleSlope) == 2.0 and float(duplicate.EchoTrainLength) == 1
        for keyword in ("MRAcquisitionType", "EchoTime", "RepetitionTime", "SliceThickness", "ScanOptions"):
            assert keyword in duplicate, keyword


def test_a_frame_that_says_ir_without_a_time_gets_an_empty_inversion_time():
    _, _, _, source = enhanced_lge()
    del source.SharedFunctionalGroupsSequence[0].MRModifierSequence[0].InversionTimes
    image = single_frame_image(source, 1)
    assert "IR" in list(image.ScanningSequence) and "InversionTime" in image and image.InversionTime in (None, "")


def test_a_one_term_scanning_sequence_keeps_its_inversion_time():
    """A classic copy whose Scanning Sequence is the single term IR keeps its Inversion Time (it was read as the
    characters I, R and dropped); a non-IR one loses a stray one; an IR one without a time gets it empty."""
    from dicomnode.results.display_copy import drop_unsatisfied_conditionals
    one = Dataset()
    one.ScanningSequence, one.InversionTime = "IR", 300
    drop_unsatisfied_conditionals(one)
    assert float(one.InversionTime) == 300
    stray = Dataset()
    stray.ScanningSequence, stray.InversionTime = "GR", 300
    drop_unsatisfied_conditionals(stray)
    assert "InversionTime" not in stray
    missing = Dataset()
    missing.ScanningSequence = ["GR", "IR"]
    drop_unsatisfied_conditionals(missing)
    assert "InversionTime" in missing and missing.InversionTime in (None, "")


@pytest.mark.peers
@pytest.mark.parametrize("inversion_recovery", [True, False])
def test_copies_of_ir_and_non_ir_vendor_sources_pass_dciodvfy(tmp_path, inversion_recovery):
    """No dciodvfy error on the copies, with or without -new (the Type 2C Inversion Time of break1 finding 6); the
    Rescale warnings are the only accepted ones about the Modality LUT (kept for PSIR, single_frame.GROUP_ATTRIBUTES)."""
    from tests.conftest import require_peer
    import subprocess
    _, _, objects = _vendor_variant(inversion_recovery)
    for n, duplicate in enumerate(o for o in objects if o.Modality == "MR"):
        path = write(duplicate, tmp_path / f"copy{n}.dcm")
        assert_valid(path, "DicomInstanceValidator")
        run = subprocess.run([require_peer("dciodvfy"), "-new", str(path)], capture_output=True, text=True, timeout=120)
        errors = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]
        assert not errors, errors
