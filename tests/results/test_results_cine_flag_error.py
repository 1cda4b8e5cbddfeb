"""The PDF, the SR and the console say a cine flag is within the model's known error of its limit ("confirm by
reading") instead of asserting it, and still assert a value beyond it (dicomnode/analysis/cine_metrics.py
range_judgements)."""
from __future__ import annotations

import dataclasses
import shutil
import subprocess

import pytest

from dicomnode.analysis.cine_metrics import known_errors, normal_range_flags
from dicomnode.results.report import FLAG_ROWS, key_number_table, render_report
from dicomnode.results.sr import _stack_comments
from dicomnode.summary_view import print_summary_table
from synthetic import make_study

RVEF_CV = {"rv_ef_percent": {"n": 100, "mae": 9.323, "mean_error": -4.989, "sd_error": 11.247,
                             "card_metric": "acdc_cv_rv_ef_percent", "data": "ACDC cross-validation"},
           "lv_ef_percent": {"n": 100, "mae": 3.483, "mean_error": -1.036, "sd_error": 5.262,
                             "card_metric": "acdc_cv_lv_ef_percent", "data": "ACDC cross-validation"}}


def _flags(rvef: float, lvef: float) -> list[str]:
    return normal_range_flags({"rv_ef_percent": rvef, "lv_ef_percent": lvef}, "M", known_errors(RVEF_CV))


def _cine(results, rvef: float = 42.0, lvef: float = 30.0):
    """The synthetic study's cine result with an RVEF within the model's error of the cut-off and a clearly low LVEF."""
    cine = results[1]
    return dataclasses.replace(cine, summary={**cine.summary, "rv_ef_percent": rvef, "lv_ef_percent": lvef,
                                              "flags": _flags(rvef, lvef)})


def test_the_key_numbers_list_a_flag_within_the_model_error_apart_and_assert_the_clear_one():
    _, results, _ = make_study()
    rows = {quantity: (value, reference) for quantity, value, reference in
            key_number_table([results[0], _cine(results)], (2.0, "mosteller"), "M")}
    assert rows[FLAG_ROWS[0]][0] == "LVEF below normal range"
    assert rows[FLAG_ROWS[2]] == ("RVEF below the RV systolic dysfunction cut-off",
                                  "confirm by reading; the model's error (card cross-validation) in full on page 2")
    clear = {quantity: value for quantity, value, _ in
             key_number_table([results[0], _cine(results, rvef=25.0)], (2.0, "mosteller"), "M")}
    assert clear[FLAG_ROWS[0]] == "LVEF below normal range; RVEF below the RV systolic dysfunction cut-off"
    assert FLAG_ROWS[2] not in clear


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="pdftotext not installed")
def test_the_pdf_text_says_confirm_by_reading_with_the_model_error(tmp_path):
    study, results, context = make_study()
    pdf, _ = render_report(study.series[0].instances[0].dataset, [results[0], _cine(results), *results[2:]], context,
                           bsa=(2.0, "mosteller"))
    (tmp_path / "r.pdf").write_bytes(pdf)
    text = " ".join(subprocess.run(["pdftotext", str(tmp_path / "r.pdf"), "-"], capture_output=True,
                                   text=True).stdout.split())
    assert "RVEF below the RV systolic dysfunction cut-off" in text
    assert "RVEF below the RV systolic dysfunction cut-off (" not in text  # never asserted
    # page 2 gives the flag in full: the model's bias and MAE, and the rule in the methods
    assert "within the model's known error: confirm by reading (42.0 %" in text
    assert "bias -5.0, mean abs. error 9.3 points" in text
    assert "is called within the model's error: confirm by reading" in text


def test_the_sr_comments_and_the_console_word_it_alike(capsys):
    _, results, _ = make_study()
    comments = _stack_comments(_cine(results))
    assert any(c.startswith("cine: RVEF below the RV systolic dysfunction cut-off, within the model's known error: "
                            "confirm by reading (42.0 %") for c in comments), comments
    assert not any("RVEF below the RV systolic dysfunction cut-off (" in c for c in comments)
    assert any(c.startswith("cine: LVEF below normal range") for c in comments)
    cine = {**_cine(results).summary, "lv_volume_curve_ml": [150.0] * 5}
    print_summary_table({"studies": [{"study_instance_uid": "1.2.3", "series": [], "outputs": [], "cine": cine}]})
    out = capsys.readouterr().out
    assert "Cine check: RVEF below the RV systolic dysfunction cut-off, within the model's known error: confirm by " \
           "reading" in out
    assert "RVEF below the RV systolic dysfunction cut-off (" not in out and "Cine check: LVEF below normal range" in out
