"""Images that do not belong to one stack (break42b F4, F8): a prior exam's images merged into the series (another
AcquisitionDate, another FrameOfReferenceUID) are left out with a stack warning naming why, the latest examination
and the Frame of Reference holding the most slice positions measured, LGE and cine alike; a FrameOfReferenceUID new
on every image (an anonymiser's) and an examination running past midnight change nothing. A cine slice acquired once
with twice the phases of the others is said to be so (not "acquired 2 times") and measured on the others' phases.
Real headers: the demo LGE (tests/data) and Sunnybrook SCD0000101 (12 slices x 20 phases)."""
from __future__ import annotations

import copy
import warnings
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from dicomnode.cmr import understand_study
from dicomnode.cmr.frames import frames_of, one_examination, one_pass_of_more_phases
from dicomnode.cmr.grouping import read_header
from dicomnode.cmr.types import FrameRef, StudyError
from dicomnode.cmr.volume import finer_sampled_slices, keep_latest_passes
from dicomnode.results.display_copy import shared_frame_of_reference
from tests.data.field_inputs import lge_variant
from test_cine_repeats import _frame
from test_cmr_cine_phases import _cine_volume, _slice_and_phase, scd101_headers

PSIR = range(8, 14)  # 6 slices of the demo PSIR stack, base to apex


@pytest.fixture()
def scd101(datasets):
    with warnings.catch_warnings():  # Sunnybrook UIDs have leading-zero components; pydicom warns on every read
        warnings.filterwarnings("ignore", message="Invalid value for VR UI")
        return scd101_headers(datasets)


def _lge_with_prior(tmp_path, prior_date: str, prior_frame: bool, shift_mm: float = 5.0, prior_indices=PSIR):
    """The demo PSIR slices as one series (AcquisitionDate 2024-01-31) and a second copy of `prior_indices` in the SAME
    study and series, `shift_mm` along the normal, acquired on `prior_date`, in its own Frame of Reference where
    `prior_frame`. Returns (study, current paths, prior paths)."""
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()

    def current(ds, index):
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SeriesNumber = study_uid, series_uid, 21
        ds.FrameOfReferenceUID, ds.AcquisitionDate, ds.InstanceNumber = frame_uid, "20240131", index

    def prior(ds, index):
        current(ds, index)
        if prior_frame:
            ds.FrameOfReferenceUID = prior_uid
        ds.AcquisitionDate, ds.InstanceNumber = prior_date, 100 + index
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        position = np.array([float(v) for v in ds.ImagePositionPatient]) + shift_mm * np.cross(iop[:3], iop[3:])
        ds.ImagePositionPatient = [round(float(v), 4) for v in position]

    prior_uid = generate_uid()
    kept = lge_variant(tmp_path / "now", current, indices=PSIR)
    other = lge_variant(tmp_path / "prior", prior, indices=prior_indices)
    return understand_study([read_header(p) for p in kept + other]), kept, other


def _sop(path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _used(volume) -> set[str]:
    return {ref.sop_instance_uid for phase in volume.frames for ref in phase}


@pytest.mark.parametrize("prior_frame", [True, False], ids=["own_frame_of_reference", "same_frame_of_reference"])
def test_a_prior_exam_in_the_lge_series_is_left_out_and_named(tmp_path, prior_frame):
    study, kept, prior = _lge_with_prior(tmp_path, "20230131", prior_frame)
    (series,) = [s for s in study.series if s.sequence.value == "lge" and s.view.value == "sax"]
    assert series.slices == 6  # recognition counts the current exam only, not 12 slices at 5 mm
    volume = study.load_volume(series)
    assert volume.pixels.shape[:2] == (1, 6)
    assert _used(volume) == {_sop(p) for p in kept}
    (warning,) = [w for w in volume.warnings if "another examination" in w]
    assert warning.startswith("6 image(s) at 6 slice position(s) of series 21")
    assert "acquired on 2023-01-31" in warning and "(acquired on 2024-01-31)" in warning
    assert "the latest examination is measured" in warning
    assert ("in another Frame of Reference" in warning) is prior_frame
    assert {e["sop_instance_uid"] for e in volume.excluded} == {_sop(p) for p in prior}
    assert all("another examination" in e["reason"] for e in volume.excluded)
    assert not [w for w in volume.warnings if "irregular slice spacing" in w]


def test_a_frame_of_reference_holding_fewer_slices_is_left_out(tmp_path):
    """The same day, 3 slices in another Frame of Reference (the patient moved and part of the stack was acquired
    again): positions not comparable, the Frame of Reference holding the most slice positions is measured."""
    study, kept, other = _lge_with_prior(tmp_path, "20240131", True, prior_indices=range(8, 11))
    (series,) = [s for s in study.series if s.sequence.value == "lge" and s.view.value == "sax"]
    volume = study.load_volume(series)
    assert _used(volume) == {_sop(p) for p in kept}
    (warning,) = [w for w in volume.warnings if "FrameOfReferenceUID" in w]
    assert warning.startswith("3 image(s) at 3 slice position(s)")
    assert "PS3.3 C.7.4.1" in warning and "the frame of reference holding the most slice positions" in warning
    assert "acquired on" not in warning  # the same day: the Frame of Reference alone sets them apart


def test_a_frame_of_reference_new_on_every_image_and_an_exam_past_midnight_change_nothing(tmp_path):
    def change(ds, index):
        ds.FrameOfReferenceUID = generate_uid()  # an anonymiser's: one per image
        ds.AcquisitionDate, ds.AcquisitionTime = ("20240131", "235950") if index < 11 else ("20240201", "000010")
    paths = lge_variant(tmp_path, change, indices=PSIR)
    frames = [f for p in paths for f in frames_of(read_header(p))]
    assert one_examination(frames) is None
    study = understand_study([read_header(p) for p in paths])
    (series,) = [s for s in study.series if s.sequence.value == "lge" and s.view.value == "sax"]
    volume = study.load_volume(series)
    assert volume.pixels.shape[:2] == (1, 6)
    assert not [w for w in volume.warnings if "examination" in w or "FrameOfReferenceUID" in w]


def _clone(header, **changes):
    clone = copy.copy(header)
    clone.dataset = copy.deepcopy(header.dataset)
    clone.sop_instance_uid = clone.dataset.SOPInstanceUID = generate_uid()
    for keyword, value in changes.items():
        setattr(clone.dataset, keyword, value)
    return clone


def test_a_prior_exam_in_the_cine_series_is_left_out_and_named(scd101):
    """Sunnybrook writes a FrameOfReferenceUID per image (not used); the prior exam is told by its date."""
    for header in scd101:
        header.dataset.AcquisitionDate = "20240131"
    prior = []
    for header in scd101:
        ds = header.dataset
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        position = np.array([float(v) for v in ds.ImagePositionPatient]) + 5.0 * np.cross(iop[:3], iop[3:])
        prior.append(_clone(header, AcquisitionDate="20230131", InstanceNumber=int(ds.InstanceNumber) + 1000,
                            ImagePositionPatient=[round(float(v), 4) for v in position],
                            SliceLocation=float(ds.SliceLocation) + 5.0))
    series, volume = _cine_volume(scd101 + prior)
    assert (series.slices, series.phases) == (12, 20)
    assert volume.pixels.shape[:2] == (20, 12)
    assert _used(volume) == {h.sop_instance_uid for h in scd101}
    (warning,) = [w for w in volume.warnings if "another examination" in w]
    assert warning.startswith("240 image(s) at 12 slice position(s) of series 300")
    assert sum("acquired on 2023-01-31" in e["reason"] for e in volume.excluded) == 240


# ---------------------------------------------------------------- F8: one slice with twice the phases, one pass
def _finer_slice(headers, slice_index: int):
    """Slice `slice_index` given 40 phases in one pass: a new image half a phase after each of its 20 (TriggerTime
    step 18.75 ms instead of 37.5, the same AcquisitionTime), CardiacNumberOfImages 40 on all 40."""
    where = _slice_and_phase(headers)
    extra = []
    for header in (h for h in headers if where[id(h)][0] == slice_index):
        header.dataset.CardiacNumberOfImages = 40
        extra.append(_clone(header, TriggerTime=round(float(header.dataset.TriggerTime) + 18.75, 3),
                            NominalCardiacTriggerDelayTime=round(float(header.dataset.TriggerTime) + 18.75, 3),
                            InstanceNumber=int(header.dataset.InstanceNumber) + 2000))
    return extra


def test_a_slice_of_twice_the_phases_in_one_pass_is_measured_on_the_others_phases(scd101):
    where = _slice_and_phase(scd101)
    original = {h.sop_instance_uid for h in scd101 if where[id(h)][0] == 6}
    extra = _finer_slice(scd101, 6)
    series, volume = _cine_volume(scd101 + extra)
    assert series.phases == 20
    assert volume.pixels.shape[:2] == (20, 12)
    assert original <= _used(volume) and not {h.sop_instance_uid for h in extra} & _used(volume)
    (warning,) = [w for w in volume.warnings if "finer temporal resolution" in w]
    assert "holds 40 cardiac phases in one pass" in warning and "not acquired 2 times" in warning
    assert "2 times the 20 phases of the other slices" in warning and "the 20 in between left out" in warning
    assert not [w for w in volume.warnings if "cardiac phases present" in w or "is missing at slice" in w]
    assert volume.declared_phases == 20 and volume.acquired_phases == 20
    assert sum("finer temporal resolution" in e["reason"] for e in volume.excluded) == 20


def _stack(sizes, finer_delay_ms: float = 0.0):
    """Slices of `sizes` phases over one 750 ms cycle from TriggerTime 18.75 ms, untimed; the slices of more phases
    start `finer_delay_ms` later."""
    return [[_frame(100 * z + k, None, 18.75 + (finer_delay_ms if n > 20 else 0.0) + 750.0 / n * k)
             for k in range(n)] for z, n in enumerate(sizes)]


def test_one_pass_of_more_phases_is_told_from_two_passes():
    usual = _stack((20, 20, 40, 20))
    assert one_pass_of_more_phases(usual[2], usual, 20)
    # two passes over one cycle: the same trigger times again, or interleaved unevenly (another RR)
    repeated = [f for f in usual[0]] + [_frame(900 + k, None, f.trigger_time) for k, f in enumerate(usual[0])]
    assert not one_pass_of_more_phases(repeated, usual[:2] + [repeated] + usual[3:], 20)
    uneven = usual[0] + [_frame(900 + k, None, 35.0 * k + 20.0) for k in range(20)]
    assert not one_pass_of_more_phases(uneven, usual[:2] + [uneven] + usual[3:], 20)
    # untimed, as break42b F8: not refused as "acquired 2 times", left to finer_sampled_slices
    kept = keep_latest_passes("s", usual, [0.0, 10.0, 20.0, 30.0], [], [])
    assert [len(s) for s in kept] == [20, 20, 40, 20]
    with pytest.raises(StudyError, match=r"acquired 2 times"):
        keep_latest_passes("s", usual[:2] + [repeated] + usual[3:], [0.0, 10.0, 20.0, 30.0], [], [])


def test_finer_sampled_slices_keeps_the_phases_at_the_others_points_of_the_cycle_or_refuses_naming_why():
    stack = _stack((20, 20, 40, 20))
    warnings_, left_out = [], []
    kept, resampled = finer_sampled_slices("s", stack, [0.0, 10.0, 20.0, 30.0], warnings_, left_out)
    assert kept[2] == stack[2][::2] and kept[0] == stack[0] and len(resampled) == 20
    assert len(left_out) == 20 and {id(f) for f, _ in left_out} == {id(f) for f in stack[2][1::2]}
    (warning,) = warnings_
    assert "slice at 20.00 mm holds 40 cardiac phases in one pass" in warning
    # the finer slice's phases a quarter of a phase off the others' points of the cycle: refused, saying so
    shifted = _stack((20, 20, 40, 20), finer_delay_ms=9.375)
    with pytest.raises(StudyError, match=r"holds 40 cardiac phases in one pass .* finer temporal resolution, not "
                                         r"acquired 2 times; its phases do not fall on the other slices' points"):
        finer_sampled_slices("s", shifted, [0.0, 10.0, 20.0, 30.0], [], [])


def test_the_seg_frame_of_reference_is_judged_on_the_images_the_volume_uses():
    """A prior exam's images left out of the stack (another FrameOfReferenceUID) do not make the SEG's display copies
    take a new Frame of Reference: the analysed images share one."""
    def instance(uid: str, frame_uid: str):
        ds = pydicom.Dataset()
        ds.FrameOfReferenceUID = frame_uid
        return SimpleNamespace(sop_instance_uid=uid, dataset=ds)

    instances = [instance("1.1", "9.1"), instance("1.2", "9.1"), instance("2.1", "9.2")]
    used = SimpleNamespace(frames=[[FrameRef("1.1", "1.2", "1", None), FrameRef("1.2", "1.2", "1", None)]])
    segmentation = SimpleNamespace(series=SimpleNamespace(instances=instances), volume=used)
    assert shared_frame_of_reference(segmentation) is None
    everything = SimpleNamespace(frames=used.frames + [[FrameRef("2.1", "1.2", "1", None)]])
    assert shared_frame_of_reference(SimpleNamespace(series=segmentation.series, volume=everything)) is not None
