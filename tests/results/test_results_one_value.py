"""One value per quantity on every output, and the reason where a value is not given (break40b F6, F11): an indexed
value is computed once (the pipeline's, measured value / unrounded BSA) and rounded once, at display, from the
measured value; a weight of 0 or an absent height is said, not "height/weight missing"."""
from __future__ import annotations

import random

import pydicom
import pytest

from dicomnode.analysis.cine_metrics import _bsa_or_note, body_surface_area_m2, normal_range_flags
from dicomnode.analysis.pipeline import PipelineResult
from dicomnode.cmr import PatientInfo
from dicomnode.results.report import key_number_table
from dicomnode.rounding import number_text, stored_value
from dicomnode.summary_view import print_summary_table


def test_a_stored_value_rounds_to_the_digits_of_the_measured_value():
    """90.146 stored as 90.15 read 90.2 on the console and in the flag, 90.1 on the PDF (double rounding)."""
    assert stored_value(90.146) == 90.14 and number_text(stored_value(90.146)) == "90.1"
    assert stored_value(90.144) == 90.14 and stored_value(223.04999999999998) == 223.05
    assert stored_value(0.35551, 3, 2) == 0.356 and stored_value(None) is None
    rng = random.Random(40)
    for _ in range(2000):
        value = rng.uniform(-50, 400)
        stored = stored_value(value)
        assert number_text(stored) == number_text(value) and abs(stored - value) < 0.01 + 1e-9
        assert stored == round(stored, 2)  # never a third decimal (break45a F11)


def test_a_stored_value_has_the_same_decimals_as_every_other_of_its_kind():
    """break45a F11: "RV SV 43.945 ml" stood beside "LV SV 43.93 ml" in one SR; the third decimal was kept so that
    43.95 would not read 44.0. The neighbour towards zero, 43.94, reads 43.9 as the measured value does."""
    assert stored_value(43.945) == 43.94 and stored_value(145.148) == 145.14 and stored_value(24.548) == 24.54
    assert stored_value(-43.945) == -43.94 and stored_value(132.949) == 132.94
    assert stored_value(0.35551, 3, 2) == 0.356 and stored_value(0.35549, 3, 2) == 0.355
    assert stored_value(0.3545, 3, 2) == 0.354  # 0.355 would read 0.36 at 2 decimals, the BSA 0.35


def test_a_range_flag_rounds_the_measured_value_once():
    """p001: LV mass index 198.64 g / 2.2035 m² = 90.146 g/m²: "90.1", as the PDF's key numbers, not "90.2"."""
    [flag] = normal_range_flags({"lv_mass_index_g_m2": 198.64 / 2.2035}, "M")
    assert flag.startswith("LV mass index above normal range (90.1 g/m²;"), flag


def _cine(bsa: float) -> PipelineResult:
    """v_ped: EDV 139.1 mL, mass 116.1 g, BSA 0.3555 m² (Mosteller 65 cm, 7 kg), as the cine pipeline stores it."""
    volumes = {"lv_edv_ml": 139.1, "lv_esv_ml": 50.9, "lv_mass_g": 116.1, "rv_edv_ml": 164.4}
    indexed = {"lv_edvi_ml_m2": 139.1 / bsa, "lv_esvi_ml_m2": 50.9 / bsa, "lv_mass_index_g_m2": 116.1 / bsa,
               "rv_edvi_ml_m2": 164.4 / bsa}
    summary = {**{k: stored_value(v) for k, v in volumes.items()}, "lv_sv_ml": 88.2, "lv_ef_percent": 63.4,
               "rv_esv_ml": 82.3, "rv_sv_ml": 82.1, "rv_ef_percent": 49.9, "ed_phase": 0, "es_phase": 1,
               "bsa_m2": stored_value(bsa, 3, 2), "bsa_formula": "mosteller",
               "indexed": {k: stored_value(v) for k, v in indexed.items()}, "flags": []}
    return PipelineResult(name="cine", summary=summary,
                          measurements={"bsa_m2": stored_value(bsa, 3, 2), "indexed": indexed})


def test_page_1_and_the_console_give_the_pipelines_indexed_values(capsys):
    """v_ped: page 1 divided by the BSA rounded to 0.356 m² (EDVi 390.7, mass index 326.1 g/m²); page 2, the SR and
    summary.json gave 391.3 and 326.6."""
    bsa = body_surface_area_m2(0.65, 7.0)
    cine = _cine(bsa)
    rows = {q: v for q, v, _ in key_number_table([cine], (cine.measurements["bsa_m2"], "mosteller"), "F")}
    edvi, mass_index = number_text(139.1 / bsa), number_text(116.1 / bsa)
    assert (edvi, mass_index) == ("391.3", "326.6")
    assert rows["LV EDV / EDVi"] == f"139.1 mL / {edvi} mL/m²"
    assert rows["LV mass (cine, ED) / index"] == f"116.1 g / {mass_index} g/m²"
    print_summary_table({"studies": [{"study_instance_uid": "1.2.3", "series": [], "outputs": [],
                                      "cine": cine.summary}]})
    out = capsys.readouterr().out
    assert f"LV EDVi {edvi} mL/m²" in out and f"LV mass index {mass_index} g/m²" in out and "BSA 0.36 m²" in out


@pytest.mark.parametrize("height, weight, said", [
    (1.70, 0.0, "implausible weight 0 kg for BSA: PatientWeight 0 kg is not between 1 and 500 kg (both excluded)"),
    (None, 70.0, "PatientSize absent from the header"),
    (None, None, "PatientSize and PatientWeight absent from the header")])
def test_why_there_are_no_indexed_values_is_a_flag(height, weight, said):
    """F11: weight 0 read as absent ("height/weight missing" on the PDF, nothing in summary.json or on the console)."""
    bsa, notes = _bsa_or_note(height, weight, "mosteller")
    assert bsa is None and len(notes) == 1 and notes[0].startswith(f"no indexed values: {said}"), notes


def test_a_weight_of_0_reaches_the_bsa_as_0_and_the_pdf_names_it():
    ds = pydicom.Dataset()
    ds.PatientSize, ds.PatientWeight = "1.70", "0"
    assert PatientInfo.from_dataset(ds).weight_kg == 0.0
    cine = _cine(1.8)
    for flag, shown in (("no indexed values: implausible weight 0 kg for BSA: PatientWeight 0 kg is not between 1 and 500 kg (both excluded)",
                         "(no index: implausible weight 0 kg in the header)"),
                        ("no indexed values: PatientWeight absent from the header (BSA needs PatientSize and "
                         "PatientWeight)", "(no index: PatientWeight absent from the header)")):
        cine.summary["flags"] = [flag]
        refs = {q: r for q, _, r in key_number_table([cine], None, "M")}
        assert refs["LV mass (cine, ED) / index"].endswith(shown), refs
