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
    whole = {quantity: value for quantity, value, _ in key_number_table([_cine(True)], (2.0, "mosteller"), "M")}
    assert not any("≥" in value or "partial" in value for value in whole.values())


def test_incomplete_coverage_is_a_comment_in_the_sr():
    assert _stack_comments(_cine(False)) == [f"cine input stack: incomplete LV coverage: {REASON}; {COVERAGE_CAVEAT}"]
    assert _stack_comments(_cine(True)) == []
