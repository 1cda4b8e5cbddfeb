"""break37 findings 4 and 6: one slice re-acquired on another pixel grid (matrix / FOV / PixelSpacing) is left out
of the stack and named, not a refusal of the whole stack; a series named a TI scout whose TI is written per image is
a TI scout, not T1-mapping source images, while a MOLLI so written stays t1map."""
from __future__ import annotations

import numpy as np
import pytest

from dicomnode.analysis.cine import slice_positions_mm
from dicomnode.analysis.cine_metrics import disc_thickness_mm
from dicomnode.analysis.lge import gap_notes
from dicomnode.cmr.types import StudyError
from tests.cmr.test_recognize_field_series import _by_number, _Study


def _coarse(ds):
    """The image on a 2x coarser grid about the same FOV: half the matrix at twice the spacing."""
    pixels = ds.pixel_array[::2, ::2].copy()
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelData = pixels.tobytes()
    ds.PixelSpacing = [2 * float(v) for v in ds.PixelSpacing]


def _lge(tmp_path, odd: set[int], change, images_per_slice: int = 1, headers=None, per_image=None):
    study = _Study(tmp_path)
    study.series(30, {"SeriesDescription": "LGE_SAX", **(headers or {})}, slices=range(6),
                 images_per_slice=images_per_slice, per_image=per_image,
                 after=lambda ds: change(ds) if int(ds.InstanceNumber) in odd else None)
    cmr = study.load()
    return cmr, _by_number(cmr)[30]


@pytest.mark.parametrize("change", [_coarse, lambda ds: setattr(ds, "PixelSpacing", [0.8, 0.8])],
                         ids=["matrix-fov", "pixel-spacing"])
def test_one_slice_on_another_grid_is_left_out_and_named(tmp_path, change):
    cmr, series = _lge(tmp_path, {4}, change)
    volume = cmr.load_volume(series)
    assert volume.pixels.shape[1] == 5
    (entry,) = volume.excluded
    assert entry["instance_number"] == 4 and "another matrix / FOV, left out" in entry["reason"]
    assert any("ImagePositionPatient" in w and "left out" in w for w in volume.warnings)
    assert any("gap: missing slice?" in w for w in volume.warnings)


def test_two_slices_left_out_keep_the_nominal_step(tmp_path):
    # break37b finding 2: slices 2 and 5 of 6 on another grid; the kept median step doubled (24 for 12 mm), the
    # 12 mm steps read as the odd ones, no gap note and the end discs weighted 24 mm (myocardium +11.5 %)
    cmr, series = _lge(tmp_path, {2, 5}, _coarse)
    volume = cmr.load_volume(series)
    steps = np.diff(np.sort(slice_positions_mm(volume)))
    assert volume.pixels.shape[1] == 4 and volume.nominal_step_mm == pytest.approx(steps.min())
    (spacing,) = [w for w in volume.warnings if "irregular slice spacing" in w]
    assert spacing.startswith(f"irregular slice spacing: median {steps.min():.2f} mm, also")
    assert "gap: missing slice?" in spacing and "slices left out included" in spacing
    assert "interpolate across the gap" in gap_notes(slice_positions_mm(volume), volume.nominal_step_mm)[0]
    # each end disc reaches half the nominal step outwards (was half the doubled step: 20 mm for 15)
    thickness = disc_thickness_mm(slice_positions_mm(volume), volume.nominal_step_mm)
    assert thickness[[0, -1]] == pytest.approx([(steps.min() + steps[0]) / 2, (steps.min() + steps[-1]) / 2])


@pytest.mark.parametrize("odd", [1, 6], ids=["first", "last"])
def test_an_end_slice_left_out_says_the_volumes_are_lower_bounds(tmp_path, odd):
    # break37b finding 6: an off-grid slice at an end dropped ~13 % of the myocardium without a word
    cmr, series = _lge(tmp_path, {odd}, _coarse)
    volume = cmr.load_volume(series)
    assert any(w.startswith("end slice left out") and "lower bounds" in w for w in volume.warnings)
    middle = cmr.load_volume(_lge(tmp_path / "mid", {3}, _coarse)[1])
    assert not any(w.startswith("end slice left out") for w in middle.warnings)


def test_a_later_reacquisition_on_another_grid_names_the_kept_slice_the_older(tmp_path):
    # break37b finding 7: slice 4 acquired again later on another grid; the older on-grid slice is kept (images are
    # not resampled), and the warning now says so
    study = _Study(tmp_path)
    uid = study.series(30, {"SeriesDescription": "LGE_SAX", "AcquisitionTime": "080000"}, slices=range(6))
    study.series(31, {"SeriesDescription": "LGE_SAX", "SeriesInstanceUID": uid, "SeriesNumber": "30",
                      "InstanceNumber": "7", "AcquisitionTime": "093000"}, slices=[3], after=_coarse)
    volume = study.load().load_volume(_by_number(study.load())[30])
    assert volume.pixels.shape[1] == 6
    (entry,) = volume.excluded
    assert "LATER acquisition" in entry["reason"] and "OLDER acquisition" in entry["reason"]
    assert any("OLDER acquisition" in w for w in volume.warnings)


def test_no_majority_grid_refuses_naming_each_slice(tmp_path):
    cmr, series = _lge(tmp_path, {1, 2, 3}, _coarse)
    with pytest.raises(StudyError, match="no grid holds over half") as error:
        cmr.load_volume(series)
    assert str(error.value).count("slice at ImagePositionPatient") == 6


def test_a_cine_slice_on_another_grid_is_left_out_whole(tmp_path):
    # an SSFP cine of 6 slices x 3 phases, instances numbered phase-major: slice 2 is instances 2, 8, 14
    cmr, series = _lge(tmp_path, {2, 8, 14}, _coarse, images_per_slice=3,
                       headers={"SeriesDescription": "cine_SAX", "ScanningSequence": "GR", "SequenceVariant": "SS",
                                "InversionTime": None}, per_image=lambda k, j: {"TriggerTime": str(40 * j)})
    volume = cmr.load_volume(series)
    assert volume.pixels.shape[:2] == (3, 5)
    assert sorted(e["instance_number"] for e in volume.excluded) == [2, 8, 14]
    assert sum("another matrix / FOV" in w for w in volume.warnings) == 1


GR_IR = {"ScanningSequence": ["GR", "IR"], "SequenceVariant": ["SK", "SP", "MP"], "SequenceName": "*tfl2d1",
         "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"]}


@pytest.mark.parametrize("name,expected", [("TI_Scout_SAX", "other"), ("TI-Scout", "other"), ("TIscout", "other"),
                                           ("inversion scout", "other"), ("Look-Locker", "t1map"),
                                           ("TIスカウト", "other"), ("MOLLI_5(3)3_SAX", "t1map"),
                                           ("SAX", "other")])
def test_a_ti_scout_with_its_ti_per_image_is_a_ti_scout(tmp_path, name, expected):
    study = _Study(tmp_path)
    study.series(30, {"SeriesDescription": "LGE_SAX"})
    study.series(20, {**GR_IR, "SpecificCharacterSet": "ISO_IR 192", "SeriesDescription": name,
                                "ProtocolName": name}, slices=[3], images_per_slice=20,
                 per_image=lambda k, j: {"InversionTime": str(100 + 25 * j), "TriggerTime": str(100 + 25 * j)})
    # break47a finding 6: unnamed ('SAX'), the TI rising with the TriggerTime in one beat is a TI scout too (was
    # t1map: 'T1-mapping source images', and 'post-contrast T1 map' beside an LGE); a Look-Locker name keeps t1map
    scout = _by_number(study.load())[20]
    assert scout.sequence.value == expected, scout.sequence.evidence
    if expected == "other":
        assert any("a TI scout" in e for e in scout.sequence.evidence)


MOLLI_TIS = [100, 180, 260, 1100, 1180, 1260, 2100, 2180, 3100, 4100, 5100]  # ms, three inversions (5(3)3-like)


@pytest.mark.parametrize("name,expected", [("modified Look-Locker SAX", "t1map"), ("LL_T1_SAX", "t1map"),
                                           ("Look-Locker T1 SAX", "t1map"), ("TI scout", "t1map")])
def test_molli_source_images_named_look_locker_stay_t1map(tmp_path, name, expected):
    # break37b finding 8: 11 images at one position, TI 100-5100 ms over three inversions, one TriggerTime: MOLLI
    # (modified Look-Locker) source images, not a TI scout, whatever Look-Locker / scout name they carry
    study = _Study(tmp_path)
    study.series(30, {"SeriesDescription": "LGE_SAX"})
    study.series(20, {**GR_IR, "SeriesDescription": name, "ProtocolName": name}, slices=[3],
                 images_per_slice=len(MOLLI_TIS),
                 per_image=lambda k, j: {"InversionTime": str(MOLLI_TIS[j]), "TriggerTime": "500"})
    series = _by_number(study.load())[20]
    assert series.sequence.value == expected, series.sequence.evidence
