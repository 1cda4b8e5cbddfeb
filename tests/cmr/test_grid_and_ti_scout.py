"""break37 findings 4 and 6: one slice re-acquired on another pixel grid (matrix / FOV / PixelSpacing) is left out
of the stack and named, not a refusal of the whole stack; a series named a TI scout whose TI is written per image is
a TI scout, not T1-mapping source images, while a MOLLI so written stays t1map."""
from __future__ import annotations

import pytest

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
                                           ("inversion scout", "other"), ("Look-Locker", "other"),
                                           ("TIスカウト", "other"), ("MOLLI_5(3)3_SAX", "t1map"),
                                           ("SAX", "t1map")])
def test_a_ti_scout_with_its_ti_per_image_is_a_ti_scout(tmp_path, name, expected):
    study = _Study(tmp_path)
    study.series(30, {"SeriesDescription": "LGE_SAX"})
    study.series(20, {**GR_IR, "SpecificCharacterSet": "ISO_IR 192", "SeriesDescription": name,
                                "ProtocolName": name}, slices=[3], images_per_slice=20,
                 per_image=lambda k, j: {"InversionTime": str(100 + 25 * j), "TriggerTime": str(100 + 25 * j)})
    scout = _by_number(study.load())[20]
    assert scout.sequence.value == expected, scout.sequence.evidence
    if expected == "other":
        assert any("a TI scout" in e for e in scout.sequence.evidence)
