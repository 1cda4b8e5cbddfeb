"""A stack whose only coverage reason is that its base is not confirmed covered (cine_metrics.base_unconfirmed_only,
the PLATEAU stack): the SR says its numbers "may be lower bounds"; the PDF key numbers and the console say
"(base not confirmed)", never "≥" or "(partial stack)" as facts (review48b #5), and a stated large-burden verdict is
qualified "(slices present only; base not confirmed)" (review48b #1)."""
from __future__ import annotations

import numpy as np

from dicomnode.analysis.cine_metrics import stack_coverage
from dicomnode.analysis.lge import lge_coverage
from dicomnode.analysis.pipeline import PipelineResult
from dicomnode.results.report import key_number_table
from dicomnode.summary_view import print_summary_table
from tests.analysis.test_base_coverage import disc_stack
from tests.analysis.test_base_unconfirmed import PLATEAU

POSITIONS = np.arange(len(PLATEAU)) * 10.0


def _lge_summary(flag: bool) -> dict:
    coverage = lge_coverage(disc_stack(PLATEAU), POSITIONS, True)
    return {"determined": True, "scar_volume_ml": 24.0, "mvo_volume_ml": 1.5, "myocardium_volume_ml": 80.0,
            "lv_mass_g": 84.0, "lge_percent": 30.0 if flag else 2.5, "large_scar_burden": flag,
            "large_scar_burden_reason": None, "nsd": {}, "fwhm": {}, "coverage": coverage}


def _cine_summary() -> dict:
    coverage = stack_coverage(disc_stack(PLATEAU), POSITIONS, apex_first=True).summary()
    return {"lv_edv_ml": 152.0, "lv_esv_ml": 70.0, "lv_sv_ml": 82.0, "lv_ef_percent": 53.9, "lv_mass_g": 120.0,
            "rv_edv_ml": 160.0, "rv_esv_ml": 80.0, "rv_sv_ml": 80.0, "rv_ef_percent": 50.0, "ed_phase": 0,
            "es_phase": 7, "flags": [], "stack_warnings": [], "coverage": coverage}


def test_the_plateau_stack_is_base_unconfirmed_only():
    lge, cine = _lge_summary(False)["coverage"], _cine_summary()["coverage"]
    assert lge["complete"] is False and cine["complete"] is False
    assert all(r.startswith("base coverage not confirmed") for r in lge["reasons"] + cine["reasons"])


def test_the_pdf_key_numbers_say_base_not_confirmed_not_lower_bounds():
    for flag, said in ((False, "no"), (True, "yes")):
        lge = PipelineResult(name="lge", summary=_lge_summary(flag))
        rows = {q: v for q, v, _ in key_number_table([lge, PipelineResult(name="cine", summary=_cine_summary())],
                                                      (2.0, "mosteller"), "M")}
        assert not any("≥" in value or "partial stack" in value for value in rows.values()), rows
        assert rows["Large scar burden"] == f"{said} (slices present only; base not confirmed)"
        assert rows["%LGE (DL, scar incl. MVO / LV myocardium)"].endswith("% (base not confirmed)")
        assert rows["Scar volume (incl. MVO)"] == "24.0 mL (base not confirmed)"
        assert rows["LV EDV / EDVi"] == "152.0 mL / 76.0 mL/m² (base not confirmed)"
        assert rows["LV EF"] == "53.9 % (base not confirmed)"
        assert rows["RV EDV / ESV"].startswith("160.0 mL / 80.0 mL") and rows["RV EDV / ESV"].endswith(
            "(base not confirmed)")
        assert rows["LV mass (cine, ED) / index"] == "120.0 g / 60.0 g/m² (base not confirmed)"


def test_the_console_says_base_not_confirmed_not_lower_bounds(capsys):
    cine = dict(_cine_summary(), bsa_m2=2.0, bsa_formula="mosteller",
                indexed={"lv_edvi_ml_m2": 76.0, "lv_esvi_ml_m2": 35.0, "lv_svi_ml_m2": 41.0})
    print_summary_table({"studies": [{"study_instance_uid": "1.2.3", "series": [], "outputs": [],
                                      "lge": _lge_summary(False), "cine": cine}]})
    out = capsys.readouterr().out
    printed = "\n".join(line for line in out.splitlines() if "incomplete LV coverage" not in line)
    assert "≥" not in printed and "partial stack" not in printed, printed
    assert "scar 24.0 mL (base not confirmed)" in out
    assert "large scar burden: no (slices present only; base not confirmed)" in out
    assert "Cine LV: EDV 152.0 mL, ESV 70.0 mL (base not confirmed), SV 82.0 mL, EF 53.9 % (base not confirmed)" in out
    assert "LV EDVi 76.0 mL/m²" in out and out.count("(base not confirmed)") >= 5
