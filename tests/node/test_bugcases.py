"""The field cases of ../shared/bugcases (issue 14) through `process`, each with its expected behaviour; skipped
when the folder is absent (the kinds are also covered by tests built from the demo data: test_field_inputs.py,
test_field_network.py, tests/cmr/test_charsets.py)."""
from __future__ import annotations

import pydicom
import pytest

from dicomnode.config import Config
from dicomnode.process import process_folder
from tests.data.field_inputs import BUGCASES
from tests.results.validators import dciodvfy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def analyser():
    from dicomnode.analysis.run import Analyser

    return Analyser(Config())


@pytest.fixture
def run(analyser, tmp_path):
    def process(case: str) -> tuple[list[dict], object]:
        folder = BUGCASES / case
        if not folder.is_dir():
            pytest.skip(f"{folder} is absent")
        out = tmp_path / case
        summary = process_folder(folder, out, Config(), analyser=analyser)
        assert (out / "summary.json").is_file()
        return summary["studies"], out
    return process


def _lge_percent(studies) -> float:
    return next(s for s in studies if "lge" in s)["lge"]["lge_percent"]


def test_c01b_japanese_character_set(run):
    studies, out = run("c01b_charset_jis")
    [study] = studies
    assert "lge" in study and study["outputs"]
    source = next((BUGCASES / "c01b_charset_jis").iterdir())
    name = str(pydicom.dcmread(source, stop_before_pixels=True).PatientName)
    for relative in study["outputs"]:
        assert str(pydicom.dcmread(out / relative).PatientName) == name
        assert not dciodvfy(out / relative).errors


def test_c01f_one_bad_study_does_not_take_the_other_down(run):
    studies, _ = run("c01f_two_studies_one_bad")
    assert len(studies) == 2 and all(s["outputs"] for s in studies)


def test_c04_monochrome1_numbers_match_monochrome2(run):
    inverted, _ = run("c04_monochrome1")
    original, _ = run("c11_non_mr_objects")  # the same stack stored as MONOCHROME2
    assert _lge_percent(inverted) == pytest.approx(_lge_percent(original), abs=0.5)


def test_c07a_malformed_study_uid_declined_up_front(run):
    [study], _ = run("c07a_uid_too_long")
    assert not study["outputs"]
    assert any("malformed Study Instance UID" in d["reason"] for d in study["declined"])


def test_c10_empty_pixel_data_is_named_and_the_rest_analysed(run):
    [study], _ = run("c10_zero_length_pixeldata")
    assert "lge" in study
    assert [e["reason"] for e in study["excluded_instances"]] == ["Pixel Data is empty"]
    # the left-out slice and the gap it leaves are in the LGE block, beside the numbers they affect
    warnings = study["lge"]["stack_warnings"]
    left_out = study["excluded_instances"][0]["sop_instance_uid"]
    assert any(left_out in w and "Pixel Data is empty" in w for w in warnings), warnings
    assert any("gap: missing slice?" in w for w in warnings), warnings


def test_stack_warnings_are_printed_beside_the_numbers(capsys):
    from dicomnode.summary_view import print_summary_table

    print_summary_table({"studies": [{"study_instance_uid": "1.2", "series": [], "outputs": [], "lge": {
        "scar_volume_ml": 1.0, "mvo_volume_ml": 0.0, "myocardium_volume_ml": 100.0, "lv_mass_g": 105.0,
        "lge_percent": 1.0, "large_scar_burden": False, "nsd": None, "fwhm": None,
        "stack_warnings": ["irregular slice spacing: median 10.00 mm, also 20.00 mm (gap: missing slice?)"]}}]})
    assert "LGE input: irregular slice spacing: median 10.00 mm, also 20.00 mm (gap: missing slice?)" in \
        capsys.readouterr().out


def test_c11_non_mr_objects_declined_mr_analysed(run):
    [study], _ = run("c11_non_mr_objects")
    assert "lge" in study
    assert sum("not an MR image" in d["reason"] for d in study["declined"]) == 2


def test_c13a_legacy_converted_enhanced_mr(run):
    [study], _ = run("c13a_legacy_converted_enhanced_mr")
    assert [(s["sequence"], s["view"]) for s in study["series"]] == [("lge", "sax")]
    assert "lge" in study
