"""A declined series' geometry reason quotes the value as stored and names the series (break49a finding 3): a
PixelSpacing written with decimal commas is not read as points, and the decline says so."""
from __future__ import annotations

import pydicom

from dicomnode.cmr.study import load_studies
from tests.data.field_inputs import lge_variant


def _comma_spacing(ds, index):
    """PixelSpacing written with decimal commas (a converter on a decimal-comma locale); PSIR images only."""
    if index >= 8:
        del ds.PixelSpacing
        ds.add_new(0x00280030, "LO", "1,5484\\1,2658")
        ds[0x00280030].VR = "DS"


def test_a_decimal_comma_pixel_spacing_is_declined_naming_the_value_and_the_series(tmp_path):
    paths = lge_variant(tmp_path, _comma_spacing)
    (study,) = load_studies([tmp_path])
    assert {s.lge_kind for s in study.series} == {"magnitude"}  # not read as 1.5484 mm
    reasons = [d.reason for d in study.declined]
    assert reasons and all("no geometry in series " in r for r in reasons), reasons
    assert all("malformed PixelSpacing '1,5484\\1,2658' (not a decimal string (DS): a decimal comma?)" in r
               for r in reasons), reasons
    first = pydicom.dcmread(paths[8], stop_before_pixels=True)
    assert any(f"series {first.SeriesNumber} '{first.SeriesDescription}'" in r for r in reasons), reasons
    excluded = [e for e in study.excluded_instances if "PixelSpacing" in e["reason"]]
    assert len(excluded) == 8 and all("'1,5484\\1,2658'" in e["reason"] for e in excluded)


def test_other_malformed_geometry_says_what_is_wrong_with_the_value(tmp_path):
    def change(ds, index):
        if index == 8:
            ds.PixelSpacing = [0, 1.25]
        elif index == 9:
            ds.ImageOrientationPatient = [1, 0, 0, 1, 0, 0]
    lge_variant(tmp_path, change)
    (study,) = load_studies([tmp_path])
    reasons = " | ".join(d.reason for d in study.declined)
    assert "malformed PixelSpacing '0.0\\1.25' (a spacing must be above 0 mm)" in reasons, reasons
    assert ("malformed ImageOrientationPatient '1.0\\0.0\\0.0\\1.0\\0.0\\0.0' (the row and column direction "
            "cosines") in reasons
