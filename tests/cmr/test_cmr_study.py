"""Study-level rules: patient facts, repeats beside merged stacks and inside series, slice gaps and duplicates,
perfusion dynamics, multi-frame frames without geometry, SOPInstanceUID collisions, one series per cardiac phase."""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from dicomnode.cmr import PatientInfo, understand_study
from dicomnode.cmr.age import PatientAge
from dicomnode.cmr.study import load_studies
from dicomnode.cmr.types import StudyError
from dicomnode.cmr.frames import are_repeats, frames_of, images_per_slice
from dicomnode.cmr.grouping import read_header
from cmr_helpers import generated  # noqa: F401 (fixture)
from tests.data.field_inputs import lge_variant


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
    assert PatientInfo.from_dataset(ds) == PatientInfo("F", 45.0, 1.68, 70.0, PatientAge(45.0, "45 years", "PatientAge"))
    ds.PatientSex, ds.PatientAge, ds.PatientSize, ds.PatientWeight = "", "018M", "1.68", "0"
    # a weight of 0 is kept (break40b F11): the BSA says it is not plausible, instead of "height/weight missing"
    months18 = PatientAge(1.5, "18 months", "PatientAge")
    assert PatientInfo.from_dataset(ds) == PatientInfo(None, 1.5, 1.68, 0.0, months18)
    # implausible values are kept: the BSA refuses them with the reason (a flag), rather than dropping them unseen
    ds.PatientSize, ds.PatientWeight = "175", "75000"
    assert PatientInfo.from_dataset(ds) == PatientInfo(None, 1.5, 175.0, 75000.0, months18)
    # no PatientAge: the birth date and the study date say it
    del ds.PatientAge
    ds.PatientBirthDate, ds.StudyDate = "20200615", "20260614"
    info = PatientInfo.from_dataset(ds)
    assert (info.age.text, info.age.source) == ("5 years", "PatientBirthDate and StudyDate")
    assert 5.99 < info.age_years < 6.0
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


def _as_colour(photometric: str):
    """A change for lge_variant: the image stored as 8-bit colour (what a screen capture relabelled as MR holds)."""
    def change(ds, _index):
        grey = ds.pixel_array.astype(np.float64)
        grey = np.round(255 * (grey - grey.min()) / max(np.ptp(grey), 1)).astype(np.uint8)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        if photometric == "PALETTE COLOR":
            ds.SamplesPerPixel = 1
            ds.PixelData = grey.tobytes()
        else:
            ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
            ds.PixelData = np.repeat(grey[..., None], 3, axis=-1).tobytes()
        ds.PhotometricInterpretation = photometric
        for keyword in ("WindowCenter", "WindowWidth", "RescaleSlope", "RescaleIntercept"):
            if keyword in ds:
                del ds[keyword]
    return change


@pytest.mark.parametrize("photometric", ["RGB", "YBR_FULL", "PALETTE COLOR"])
def test_a_colour_slice_is_left_out_with_its_reason_and_the_stack_kept(tmp_path, photometric):
    """break34 F5: one colour image in an MR stack (the demo LGE, one series per slice) is excluded on its own,
    listed in excluded_instances, the other slices analysed; before, the whole stack was declined with an internal
    shape text."""
    colour = _as_colour(photometric)
    lge_variant(tmp_path, lambda ds, index: colour(ds, index) if index == 11 else None)  # a PSIR slice mid-stack
    (study,) = load_studies([tmp_path])
    stack = study.preferred("lge")
    assert stack.slices == 8
    volume = study.load_volume(stack)
    assert volume.shape[:2] == (1, 7)
    (entry,) = volume.excluded
    assert entry["reason"].startswith(f"colour image (PhotometricInterpretation {photometric}")
    assert "not an MR magnitude image" in entry["reason"]
    assert entry in study.excluded_instances
    assert any("colour image" in warning for warning in volume.warnings)


def test_a_stack_of_colour_images_is_declined_with_the_reason(tmp_path):
    lge_variant(tmp_path, _as_colour("RGB"))
    (study,) = load_studies([tmp_path])
    with pytest.raises(StudyError, match=r"no usable pixel data \(colour image \(PhotometricInterpretation RGB"):
        study.load_volume(study.preferred("lge"))


def test_a_declined_palette_color_series_is_named_in_words_and_its_images_listed(tmp_path):
    """break45c #8: the reason named the internal grouping key ('uid#5#OTHER') and excluded_instances stayed empty."""
    lge_variant(tmp_path, _as_colour("PALETTE COLOR"))
    (study,) = load_studies([tmp_path])
    stack = study.preferred("lge")
    with pytest.raises(StudyError, match=r"no usable pixel data \(colour image \(PhotometricInterpretation PALETTE") as error:
        study.load_volume(stack)
    words = f"series {stack.series_number} '{stack.description}' (UID {stack.series_instance_uid})"
    assert str(error.value).startswith(words + ": ") and stack.key not in str(error.value)
    listed = {e["sop_instance_uid"] for e in study.excluded_instances}
    assert listed == {h.sop_instance_uid for h in stack.instances}
    assert all(e["reason"].startswith("colour image (PhotometricInterpretation PALETTE COLOR") for e in study.excluded_instances)


# --- inputs F2/F4, cine F5/F6 (break34): per-frame geometry, SOPInstanceUID collisions, one series per phase,
# re-sent images. Built from the bundled demo studies (no ../shared needed).

def _demo_cine(dest, change=None) -> list:
    """The demo cine short-axis series (10 slices x 20 phases) written under dest with change(ds, slice, phase)."""
    from tests.data.field_inputs import demo_cine_files

    datasets = [pydicom.dcmread(p) for p in demo_cine_files()]
    datasets = [ds for ds in datasets if str(ds.SeriesNumber) == "5"]
    positions = sorted({round(float(ds.SliceLocation), 2) for ds in datasets})
    by_slice: dict = {}
    for ds in datasets:
        by_slice.setdefault(round(float(ds.SliceLocation), 2), []).append(ds)
    dest.mkdir(parents=True, exist_ok=True)
    study_uid = generate_uid()
    paths = []
    for slice_index, position in enumerate(positions):
        for phase, ds in enumerate(sorted(by_slice[position], key=lambda d: float(d.TriggerTime))):
            ds.StudyInstanceUID = study_uid
            if change is not None:
                change(ds, slice_index, phase)
            path = dest / f"IM{slice_index:02d}{phase:02d}.dcm"
            ds.save_as(path, enforce_file_format=False)
            paths.append(path)
    return paths


def test_a_multiframe_frame_without_plane_position_is_left_out_alone(tmp_path):
    """Legacy Converted Enhanced MR (8 PSIR frames) with Plane Position Sequence removed from frame 4 only: the other
    7 frames are analysed, frame 4 is named (instance, frame number, what is missing) in excluded_instances."""
    from tests.data.field_inputs import legacy_converted

    path = legacy_converted(tmp_path)
    ds = pydicom.dcmread(path)
    del ds.PerFrameFunctionalGroupsSequence[3].PlanePositionSequence
    ds.save_as(path, enforce_file_format=True)
    study = understand_study([read_header(path)])
    series = study.preferred("lge")
    assert series is not None and (series.slices, series.phases) == (7, 1), study.declined
    assert study.declined == []
    (entry,) = study.excluded_instances
    assert entry["sop_instance_uid"] == ds.SOPInstanceUID and entry["frame_number"] == 4
    assert "frame 4 of 8" in entry["reason"]
    assert "missing ImagePositionPatient (Plane Position Sequence" in entry["reason"]
    assert any("frame 4 of 8" in note for note in series.notes)
    assert not any("other kinds" in note for note in series.notes)
    volume = study.load_volume(series)
    assert volume.shape[:2] == (1, 7)
    assert 4 not in {ref.frame_number for ref in volume.frames[0]}
    assert any("gap: missing slice" in warning for warning in volume.warnings)
    assert [e.get("frame_number") for e in study.excluded_instances] == [4]


def test_a_multiframe_instance_without_any_frame_geometry_is_still_excluded_whole(tmp_path):
    from tests.data.field_inputs import legacy_converted

    path = legacy_converted(tmp_path)
    ds = pydicom.dcmread(path)
    for item in ds.PerFrameFunctionalGroupsSequence:
        del item.PlanePositionSequence
    ds.save_as(path, enforce_file_format=True)
    study = understand_study([read_header(path)])
    assert study.series == []
    (entry,) = study.excluded_instances
    assert "frame_number" not in entry and entry["reason"] == "no geometry: missing ImagePositionPatient"


def _psir_stack(dest, change=None):
    from tests.data.field_inputs import lge_variant

    return lge_variant(dest, change, indices=range(8, 16))


def test_two_different_images_sharing_a_sop_instance_uid_are_named_as_such(tmp_path):
    """Slice 5 carries slice 4's SOPInstanceUID (another series, position and pixels): not 'received twice' but a UID
    collision, in declined, excluded_instances and the stack's notes; both files stay on disk."""
    paths = _psir_stack(tmp_path)
    second = pydicom.dcmread(paths[5])
    second.SOPInstanceUID = second.file_meta.MediaStorageSOPInstanceUID = pydicom.dcmread(paths[4]).SOPInstanceUID
    second.save_as(paths[5], enforce_file_format=False)
    study = understand_study([read_header(p) for p in paths])
    assert not any("received twice" in d.reason for d in study.declined)
    (declined,) = study.declined
    assert f"two different images share SOPInstanceUID {second.SOPInstanceUID}" in declined.reason
    assert "ImagePositionPatient" in declined.reason and "the sender reuses UIDs" in declined.reason
    assert f"the second, {paths[5]}, was left out" in declined.reason
    (entry,) = study.excluded_instances
    assert (entry["sop_instance_uid"], entry["series_instance_uid"]) == (second.SOPInstanceUID,
                                                                         second.SeriesInstanceUID)
    assert entry["reason"] in declined.reason
    stack = study.preferred("lge")
    assert stack.slices == 7 and any("two different images share" in note for note in stack.notes)
    assert all(p.exists() for p in paths)


def test_same_header_other_pixel_data_under_one_uid_is_a_collision(tmp_path):
    paths = _psir_stack(tmp_path)
    other = tmp_path / "other.dcm"
    ds = pydicom.dcmread(paths[2])
    ds.PixelData = (ds.pixel_array // 2).astype(ds.pixel_array.dtype).tobytes()
    ds.save_as(other, enforce_file_format=False)
    study = understand_study([read_header(p) for p in paths] + [read_header(other)])
    (declined,) = study.declined
    assert "two different images share SOPInstanceUID" in declined.reason and "pixel data differ" in declined.reason


def test_an_identical_copy_is_counted_once_not_declined(tmp_path):
    paths = _psir_stack(tmp_path)
    for index in (1, 6):
        (tmp_path / f"copy{index}.dcm").write_bytes(paths[index].read_bytes())
    study = understand_study([read_header(p) for p in sorted(tmp_path.glob("*.dcm"))])
    assert study.declined == [] and study.excluded_instances == []
    stack = study.preferred("lge")
    assert stack.slices == 8
    assert any(note.startswith("2 instance(s) received more than once with the same SOPInstanceUID and the same "
                               "content") for note in stack.notes)


def test_one_series_per_cardiac_phase_is_merged_into_one_cine(tmp_path):
    """20 one-phase stacks (one series per phase, differing TriggerTime and SeriesNumber): one cine short-axis
    series of 10 slices x 20 phases, noting the series it was merged from."""
    series_uids: dict = {}

    def per_phase(ds, _slice, phase):
        ds.SeriesInstanceUID = series_uids.setdefault(phase, generate_uid())
        ds.SeriesNumber = 200 + phase

    paths = _demo_cine(tmp_path, per_phase)
    study = understand_study([read_header(p) for p in paths])
    cine = study.preferred("cine")
    assert cine is not None, [s.summary() for s in study.series]
    assert (cine.view.value, cine.slices, cine.phases) == ("sax", 10, 20)
    assert len(cine.series_instance_uids) == 20 and cine.series_number == 200
    assert any(note.startswith("merged from 20 single-phase series (SeriesNumber 200, 201") for note in cine.notes)
    volume = study.load_volume(cine)
    assert volume.shape[:2] == (20, 10)
    assert volume.trigger_times == sorted(volume.trigger_times)


def test_one_phase_stacks_minutes_apart_stay_separate_repeats(tmp_path):
    """Two LGE stacks of the same planes, TriggerTime and acquisitions minutes apart (a repeat, not phases): not a
    cine."""
    first = _psir_stack(tmp_path / "a")
    study_uid = pydicom.dcmread(first[0], stop_before_pixels=True).StudyInstanceUID

    def later(ds, _index):
        ds.StudyInstanceUID = study_uid
        ds.TriggerTime = float(ds.get("TriggerTime") or 0) + 100.0
        ds.AcquisitionTime = "235959"
        ds.SeriesNumber = int(ds.SeriesNumber) + 100

    second = _psir_stack(tmp_path / "b", later)
    study = understand_study([read_header(p) for p in first + second])
    lge = [s for s in study.series if s.sequence.value == "lge"]
    assert [(s.slices, s.phases) for s in lge] == [(8, 1), (8, 1)]
    assert not any("single-phase" in note for s in study.series for note in s.notes)


def test_resent_cine_images_count_phases_once_and_are_not_declined(tmp_path):
    """Slice 6 re-sent under new SOPInstanceUIDs and 10 files copied twice: 20 phases (not 40), nothing declined,
    each kind of duplicate reported once as a count in the series notes."""
    paths = _demo_cine(tmp_path / "cine")
    extra = tmp_path / "extra"
    extra.mkdir()
    for path in paths:
        ds = pydicom.dcmread(path)
        if path.name.startswith("IM06"):
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.InstanceNumber = 1000 + int(ds.InstanceNumber)
            ds.save_as(extra / f"resent_{path.name}", enforce_file_format=False)
        if path.name.startswith("IM08") and int(path.stem[-2:]) < 10:
            (extra / f"copy_{path.name}").write_bytes(path.read_bytes())
    study = understand_study([read_header(p) for p in sorted(tmp_path.rglob("*.dcm"))])
    assert study.declined == []
    cine = study.preferred("cine")
    assert (cine.slices, cine.phases) == (10, 20)
    assert cine.summary()["phases"] == 20
    assert any(n.startswith("10 instance(s) received more than once") for n in cine.notes), cine.notes
    assert any(n.startswith("20 image(s) repeat the slice position") for n in cine.notes), cine.notes
