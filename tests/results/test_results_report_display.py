"""What a radiologist reads on the PDF and the console (break4 findings 2, 4, 6, 7, 10): one rounding of every value
on every output, captions within their images, threshold methods said once in plain words (reasons in full on page
2), no "≥ 0.0", no "0%" beside a transmurality class, and the large-burden flag of a partial stack qualified."""
from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from dicomnode.results.report import key_number_table
from dicomnode.rounding import display_round, number_text
from dicomnode.summary_view import print_summary_table
from synthetic import make_study
from test_results_report import _page_text, _with_summary

#: values stored with 2 decimals whose float formatting rounds down (binary 223.0499...): a reader rounds them up
HALF_UP = [(223.05, 1, "223.1"), (1.25, 1, "1.3"), (14.25, 1, "14.3"), (0.05, 1, "0.1"), (2.675, 2, "2.68"),
           (0.5, 0, "1"), (1.45, 1, "1.5"), (-1.25, 1, "-1.3"), (-0.04, 1, "0.0"), (12, 1, "12.0")]
ESV_FLAG = "LV ESV above normal range (223.0 mL; men 26–82 mL, women 22–66 mL)"
NOT_VALIDATED = ("not validated on the automatic myocardium: agreement with expert %LGE r = 0.34 in the model's "
                 "cross-validation on real 12-bit scans (needs r >= 0.8); analysis.lge.threshold_methods = 'always' "
                 "computes it for research")
PSIR = "PSIR input: the stored zero is arbitrary, so half the maximum has no fixed meaning"
QUANTISED = ("only 212 distinct values in 458752 pixels: quantised input (an 8-bit export or a narrow window), the "
             "export's window compresses the scanner's signal range")


@pytest.mark.parametrize("value, digits, shown", HALF_UP)
def test_display_rounding_is_half_up_on_the_stored_decimal_value(value, digits, shown):
    assert number_text(value, digits) == shown
    assert number_text(np.float64(value), digits) == shown  # numpy values as the analysis gives them
    assert f"{1.25:.1f}" == "1.2" and f"{14.25:.1f}" == "14.2"  # what float formatting printed (break4 finding 4)


def test_display_rounding_never_shows_a_present_extent_as_0_and_says_what_is_no_number():
    assert number_text(0.4, 0, below=True) == "<1" and number_text(0.04, 1, below=True) == "<0.1"
    assert number_text(0.0, 0, below=True) == "0" and number_text(0.6, 0, below=True) == "1"
    assert number_text(None) == number_text(True) == number_text("x") == "n/a"
    assert display_round(float("nan")) is None and display_round(223.05) == Decimal("223.1")


def _study_with(lge_changes: dict, cine_changes: dict):
    study, results, context = make_study()
    lge = _with_summary(results[0], **lge_changes)
    cine = _with_summary(results[1], **cine_changes)
    return study, [lge, cine, *results[2:]], context


def _summary_json(results) -> dict:
    """The summary.json shape print_summary_table reads, from the results' summaries."""
    return {"studies": [{"study_instance_uid": "1.2.3", "series": [], "outputs": [],
                         "lge": results[0].summary, "cine": results[1].summary}]}


def test_one_value_is_printed_alike_on_page_1_page_2_and_the_console(capsys):
    """break4 finding 4: LV ESV 223.05 mL was 223.1 on page 1, 223.0 in page 2's flag text and 223 on the console;
    scar 1.25 and %LGE 14.25 were 1.3 / 14.3 on the PDF but 1.2 / 14.2 on the console."""
    from dicomnode.results.report import display_flag, second_page

    study, results, context = _study_with({"scar_volume_ml": 1.25, "lge_percent": 14.25},
                                          {"lv_esv_ml": 223.05, "flags": [ESV_FLAG]})
    rows = {q: v for q, v, _ in key_number_table(results, None)}
    assert rows["LV ESV / ESVi"].startswith("223.1 mL") and rows["Scar volume (incl. MVO)"] == "1.3 mL"
    assert rows["%LGE (DL, scar incl. MVO / LV myocardium)"] == "14.3 %"
    page_2 = " ".join(_page_text(second_page(study.series[0].instances[0].dataset, results, context)).split())
    assert "LV ESV above normal range (223.1 mL; men 26–82 mL" in page_2 and "223.0" not in page_2
    print_summary_table(_summary_json(results))
    out = capsys.readouterr().out
    assert "ESV 223.1 mL" in out and "scar 1.3 mL" in out and "LGE 14.3 %" in out
    # a flag whose number is another quantity than the stored value is left as it is; other flags too
    assert display_flag(ESV_FLAG, {"lv_esv_ml": 180.0}) == ESV_FLAG
    assert display_flag("phase 3: LV volume 38.25 mL jumps", {"lv_esv_ml": 38.25}) == "phase 3: LV volume 38.25 mL jumps"
    assert display_flag("LV EDVi above normal range (136.5 mL/m²; men 57–105 mL/m²)",
                        {"indexed": {"lv_edvi_ml_m2": 136.45}}).startswith("LV EDVi above normal range (136.5 mL/m²;")


def _table_text(figure) -> str:
    return " ".join(cell.get_text().get_text() for ax in figure.axes for table in ax.tables
                    for cell in table.get_celld().values()).replace("\n", " ")


@pytest.mark.parametrize("nsd_reason, fwhm_reason, shown", [
    (QUANTISED, QUANTISED, "not reported - quantised (8-bit) input (details: page 2)"),
    (NOT_VALIDATED, PSIR, "not reported - 5-SD: not validated; FWHM: PSIR input (details: page 2)"),
])
def test_threshold_methods_that_do_not_apply_take_one_short_row_and_their_reasons_go_to_page_2(
        nsd_reason, fwhm_reason, shown):
    """break4 finding 10: two long rows of 'not applicable: <config key broken mid-word, pixel statistics>' on page
    1; now one row in plain words, the reasons in full (the config key unbroken) in page 2's methods."""
    from dicomnode.results.report import first_page, second_page

    study, results, context = _study_with({"nsd": {"n": 5, "lge_percent": None, "applicable": False,
                                                    "reason": nsd_reason},
                                            "fwhm": {"lge_percent": None, "applicable": False,
                                                     "reason": fwhm_reason}}, {})
    rows = {q: v for q, v, _ in key_number_table(results, None)}
    assert rows["Threshold methods (5-SD, FWHM)"] == shown
    assert "%LGE (5-SD threshold)" not in rows and "%LGE (FWHM threshold)" not in rows
    header = study.series[0].instances[0].dataset
    page_1 = _table_text(first_page(header, results, context))
    assert "analysis" not in page_1 and "distinct values" not in page_1 and "r = 0.34" not in page_1
    page_2 = " ".join(_page_text(second_page(header, results, context)).split())
    if nsd_reason == fwhm_reason:
        assert f"Threshold methods 5-SD and FWHM not reported: {nsd_reason}." in page_2
        assert page_2.count("distinct values") == 1
    else:
        assert f"Threshold method 5-SD not reported: {nsd_reason}." in page_2
        assert f"Threshold method FWHM not reported: {fwhm_reason}." in page_2
        assert "analysis.lge.threshold_methods" in page_2  # on one line, never 'an alysis'


def test_one_threshold_method_applying_keeps_both_rows_short():
    _, results, _ = _study_with({"nsd": {"n": 5, "lge_percent": 12.25},
                                 "fwhm": {"lge_percent": None, "applicable": False, "reason": PSIR}}, {})
    rows = {q: v for q, v, _ in key_number_table(results, None)}
    assert rows["%LGE (5-SD threshold)"] == "12.3 %"
    assert rows["%LGE (FWHM threshold)"] == "not reported - PSIR input (details: page 2)"
    assert "Threshold methods (5-SD, FWHM)" not in rows


def test_an_unknown_reason_with_numbers_or_settings_is_not_put_on_page_1():
    from dicomnode.results.report import short_method_reason

    assert short_method_reason({"reason": "windowed input: 3.1 % of the LV is at the maximum"}) == \
        "clipped (windowed) input"
    assert short_method_reason({"error": "no remote myocardium"}) == "no remote myocardium"
    assert short_method_reason({"reason": "cut at 245 of 458752 pixels"}) == "not applicable to this input"
    assert short_method_reason({"reason": "see analysis.lge.nsd_n"}) == "not applicable to this input"


def test_table_cells_break_between_words_only():
    from dicomnode.results.report_layout import wrap_cell

    text = "computed as analysis.lge.threshold_methods = 'always' for research"
    wrapped = wrap_cell(text, 12, fits=lambda line: len(line) <= 34)
    assert "analysis.lge.threshold_methods" in wrapped.split("\n") and wrapped.replace("\n", " ") == text
    # a word wider than the cell alone is still broken (never drawn over the next cell)
    assert all(len(line) <= 10 for line in wrap_cell("x" * 25, 10, fits=lambda line: len(line) <= 10).split("\n"))


def test_the_large_burden_flag_of_a_partial_stack_is_qualified_and_a_zero_lower_bound_is_no_bound(capsys):
    """break4 findings 2 and 10: 'no' on a stack the node calls partial read as a whole-LV answer; 'MVO ≥ 0.0 mL'
    says nothing."""
    for flag, shown in ((False, "no (slices present only)"), (True, "yes (slices present only)")):
        _, results, _ = _study_with({"coverage": {"complete": False}, "large_scar_burden": flag,
                                     "large_scar_burden_reason": None, "mvo_volume_ml": 0.0}, {})
        rows = {q: v for q, v, _ in key_number_table(results, None)}
        assert rows["Large scar burden"] == shown
        assert rows["  of which MVO"] == "0.0 mL" and rows["Scar volume (incl. MVO)"].startswith("≥ ")
        print_summary_table(_summary_json(results))
        out = capsys.readouterr().out
        assert "(slices present only)" in out and "MVO 0.0 mL" in out and "≥ 0.0" not in out
    _, results, _ = make_study()  # a whole stack: plain yes / no
    assert {q: v for q, v, _ in key_number_table(results, None)}["Large scar burden"] in ("yes", "no")


def test_a_bullseye_segment_with_scar_under_half_a_percent_reads_under_1_percent():
    """break4 finding 6: '0% T 1-25' beside a non-zero transmurality class."""
    from matplotlib.figure import Figure

    from dicomnode.results.bullseye import draw_bullseye

    ax = Figure().add_subplot()
    draw_bullseye(ax, {3: 0.4, 4: 0.0, 5: 12.5, 6: 0.5}, "Scar extent", "% of segment",
                  labels={3: "1-25", 4: "0", 5: "1-25", 6: "1-25"})
    texts = [t.get_text() for t in ax.texts]
    assert "3\n<1%\nT 1-25" in texts and "4\n0%" in texts and "5\n13%\nT 1-25" in texts and "6\n1%\nT 1-25" in texts
    assert not any(text.endswith("\n0%\nT 1-25") for text in texts)


def test_captions_of_five_images_in_one_row_wrap_within_their_image():
    """break4 finding 7: five captions (cine + LGE) printed over each other and off the page's left edge."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from dicomnode.results.report_layout import PAGE_INCHES, captioned_grid, text_span

    figure = Figure(figsize=PAGE_INCHES)
    FigureCanvasAgg(figure)
    captions = ["cine ED (phase 20) mid: S:300 I:120, -50.2 mm", "cine ES (phase 8) mid: S:300 I:108, -50.2 mm",
                "LGE basal (scar 10 %): S:11 I:2, -0.4 mm", "LGE mid (scar 19 %): S:11 I:4, -24.4 mm",
                "LGE apical (scar 3 %): S:11 I:5, -36.4 mm"]
    span, done = text_span(figure, 7.0)
    columns, width, height, caption, wrapped = captioned_grid(captions, 0.20, 0.03, span, 0.0102, 0.0056)
    assert columns == 5 and height > 0
    for original, text in zip(captions, wrapped):
        lines = text.split("\n")
        assert " ".join(lines) == original  # broken between words only
        assert all(span(line) <= width + 1e-9 for line in lines)  # within its own image's width
        assert caption >= 0.0102 * len(lines)  # the caption room above the images holds every line
    done()


def test_the_lge_caption_of_a_slice_with_a_trace_of_scar_does_not_read_0_percent():
    from dicomnode.results.report import _fmt

    assert _fmt(0.4, "%", 0, below=True) == "<1 %" and _fmt(0.0, "%", 0, below=True) == "0 %"
    assert _fmt(9.5, "%", 0, below=True) == "10 %" and _fmt(float("nan"), "%", 0, below=True) == "nan %"


def test_rounding_survives_huge_values_and_a_lower_bound_that_reads_zero_has_no_sign():
    """review F10/F11: number_text(1e27) raised decimal.InvalidOperation; 0.004 mL on a partial stack read '≥ 0.0 mL'."""
    from dicomnode.results.report import lower_bound_text
    from dicomnode.rounding import number_text
    from dicomnode.summary_view import _bound
    assert number_text(1e27) == "1000000000000000000000000000.0"
    assert lower_bound_text(0.004, "mL", True) == "0.0 mL" and _bound(0.004, "mL", True) == "0.0 mL"
    assert lower_bound_text(0.06, "mL", True) == "≥ 0.1 mL" and _bound(0.06, "mL", True) == "≥ 0.1 mL"
