"""A cine stack that misses part of the LV (summary `coverage`, cine_metrics.stack_coverage): the PDF key numbers
mark the volumes and mass as lower bounds and the SR carries the reason beside every cine measurement."""
from __future__ import annotations

from dicomnode.analysis.cine_metrics import COVERAGE_CAVEAT
from dicomnode.analysis.pipeline import PipelineResult
from dicomnode.results.report import key_number_table
from dicomnode.results.sr import _stack_comments

REASON = ("the LV still covers 63 % of its largest section on the apical (first) slice of the stack at ED (a whole "
          "stack ends at the apex with under 50 %): apex cut off")


def _cine(complete: bool) -> PipelineResult:
    summary = {"lv_edv_ml": 168.0, "lv_esv_ml": 123.8, "lv_sv_ml": 44.2, "lv_ef_percent": 26.3, "lv_mass_g": 125.3,
               "rv_edv_ml": 70.0, "rv_esv_ml": 30.0, "rv_sv_ml": 40.0, "rv_ef_percent": 57.1, "ed_phase": 19,
               "es_phase": 7, "flags": [] if complete else [f"incomplete LV coverage: {REASON}; {COVERAGE_CAVEAT}"],
               "stack_warnings": [],
               "coverage": {"complete": complete, "reasons": [] if complete else [REASON], "notes": [],
                            "caveat": None if complete else COVERAGE_CAVEAT}}
    return PipelineResult(name="cine", summary=summary)


def test_incomplete_coverage_marks_lower_bounds_in_the_key_numbers():
    rows = {quantity: value for quantity, value, _ in key_number_table([_cine(False)], (2.0, "mosteller"), "M")}
    assert rows["LV EDV / EDVi"].startswith("≥ 168") and "/ ≥ 84" in rows["LV EDV / EDVi"]
    assert rows["LV mass (cine, ED) / index"].startswith("≥ 125") and rows["LV EF"].endswith("(partial stack)")
    # the RV's volumes too: the part of the heart outside the stack holds RV as well (review F4)
    assert rows["RV EDV / ESV"] == "≥ 70.0 mL / ≥ 30.0 mL; EDVi ≥ 35.0 mL/m² / ESVi ≥ 15.0 mL/m²"
    # the stroke volume is a difference, not a lower bound (break41b F7: RV ESVi and SVi as summary.json gives them)
    assert rows["RV SV / EF"] == "40.0 mL / 57.1 % (partial stack); SVi 20.0 mL/m²"
    # a lower bound of 0 says nothing: an RV the model did not find reads 0.0, as on the console
    missing_rv = _cine(False)
    missing_rv.summary.update({"rv_edv_ml": 0.0, "rv_esv_ml": 0.0, "rv_sv_ml": 0.0, "rv_ef_percent": None})
    rows = {quantity: value for quantity, value, _ in key_number_table([missing_rv], (2.0, "mosteller"), "M")}
    assert rows["RV EDV / ESV"] == "0.0 mL / 0.0 mL; EDVi 0.0 mL/m² / ESVi 0.0 mL/m²"
    whole = {quantity: value for quantity, value, _ in key_number_table([_cine(True)], (2.0, "mosteller"), "M")}
    assert not any("≥" in value or "partial" in value for value in whole.values())


def test_incomplete_coverage_is_a_comment_in_the_sr():
    assert _stack_comments(_cine(False)) == [f"cine input stack: incomplete LV coverage: {REASON}; {COVERAGE_CAVEAT}"]
    assert _stack_comments(_cine(True)) == []


def test_key_numbers_say_why_there_is_no_index():
    """A height in centimetres or a weight in grams: the PDF names the header value, not 'height/weight missing'."""
    cine = _cine(True)
    cine.summary["flags"] = ["no indexed values: implausible weight 75000 kg for BSA: it looks like grams; "
                             "PatientWeight is in kilograms"]
    refs = {quantity: reference for quantity, _, reference in key_number_table([cine], None, "M")}
    assert refs["LV mass (cine, ED) / index"].endswith("(no index: implausible weight 75000 kg in the header)")
    refs = {quantity: reference for quantity, _, reference in key_number_table([_cine(True)], None, "M")}
    assert refs["LV mass (cine, ED) / index"].endswith("(no index: height/weight missing)")


def test_the_numbers_name_the_series_they_come_from():
    """A reader sees which series was measured (SeriesNumber and SeriesDescription, as the viewer lists it) in the
    SR beside every number and in the PDF's methods."""
    from dicomnode.analysis.phase_text import source_series_name
    from dicomnode.results.report import _methods_lines

    cine = _cine(True)
    cine.summary.update(series_number=7, series_description="SA_CINE_TF2D")
    assert source_series_name(cine.summary) == 'series 7 "SA_CINE_TF2D"'
    assert source_series_name({"series_number": None, "series_description": "x"}) == '"x"'
    assert source_series_name({}) is None
    assert _stack_comments(cine) == ['cine measured on series 7 "SA_CINE_TF2D"']
    assert any(line.startswith('Cine (series 7 "SA_CINE_TF2D"): summation of discs') for line in _methods_lines([cine]))
