"""Page 1 of a study with both LGE and cine (break41b F1): the overlays stay on page 1 beside a long key-number table,
the table never runs into the footer, and where the images truly cannot fit they are on page 3 and page 1 says so."""
from __future__ import annotations

import copy
import dataclasses

import pytest

from dicomnode.results import report
from synthetic import make_study

#: as dicomnode/analysis/lge.py words it for an 8-bit export (EMIDEC P071 of break41b's v_both2_p071_sb101)
QUANTISED = ("only 210 distinct values in 327680 pixels: quantised input (an 8-bit export or a narrow window), the "
             "export's window compresses the scanner's signal range")
#: the cine flags of break41b's v_both2 (Sunnybrook SCD0000101 without height or weight), as the pipeline gave them
FLAGS = [
    "LV EDV outside the normal range for one sex (185.4 mL: within for men; above for women; men 106–214 mL, women "
    "86–178 mL)",
    "LV ESV above normal range (141.5 mL; men 26–82 mL, women 22–66 mL)",
    "LVEF below normal range (23.7 %; men 57–77 %, women 57–77 %)",
    "RV volumes and RVEF are less reliable than the LV's: this model's RVEF error is 9.3 points MAE in "
    "cross-validation over 100 ACDC patients (bias -5.0 ± 11.2 points), 10.2 points MAE on its 20 held-out ACDC "
    "patients (bias -2.1 ± 13.6 points); review the RV contours at ED and ES before using RV EDV, ESV, SV or RVEF",
    "ED at phase 20 (the R-wave phase is phase 1): the largest LV volume near the R wave on the curve that times the "
    "cycle (mid-ventricular slices, smoothed; 170.4 mL against 169.2 mL at phase 19), while the all-slice LV curve "
    "reported is larger at phase 19 (186.4 against 185.4 mL): EDV is read at phase 20",
    "no indexed values: PatientSize and PatientWeight absent from the header (BSA needs PatientSize and "
    "PatientWeight)",
]


def _combined_study():
    """A LGE + cine study with the long cells of break41b's v_both2: sex unknown (both sexes' ranges), no BSA, an
    indeterminate large-burden flag, both threshold methods not applicable, six cine flags."""
    study, results, context = make_study()
    lge, cine = results[0], results[1]
    lge = dataclasses.replace(lge, summary={
        **lge.summary, "large_scar_burden": None,
        "large_scar_burden_reason": "indeterminate: %LGE 13.0 % lies within the model's mean absolute error (4.09 "
                                    "points) of the 15 % cut-off",
        "lge_percent_validation": {"data": "EMIDEC: 8-bit windowed LGE exports", "patients": 100, "mae": 4.09,
                                   "sd": 6.02, "near_cutoff": True},
        "nsd": {"n": 5, "lge_percent": None, "applicable": False, "reason": QUANTISED},
        "fwhm": {"lge_percent": None, "applicable": False, "reason": QUANTISED}})
    cine = dataclasses.replace(cine, summary={
        **cine.summary, "flags": FLAGS,
        "max_wall_thickness": {"max_mm": 10.81, "slice_index": 3, "segment": 1, "segment_name": "basal anterior"}})
    header = copy.deepcopy(study.series[0].instances[0].dataset)
    del header.PatientSex
    return header, [lge, cine, results[2]], context


def _fraction(box, figure):
    return box.transformed(figure.transFigure.inverted())


def _table_and_footer(figure):
    renderer = figure.canvas.get_renderer()
    [table] = [t for ax in figure.axes for t in ax.tables]
    [footer] = [t for t in figure.texts if t.get_position()[1] < 0.02]
    return (_fraction(table.get_window_extent(renderer), figure),
            _fraction(footer.get_window_extent(renderer), figure), footer.get_text())


def _overlay_axes(figure):
    return [ax for ax in figure.axes if ax.images]


def test_a_combined_lge_and_cine_page_1_keeps_its_overlays_above_the_footer():
    """break41b F1: both pipelines' rows left the images no room: page 1 had none while its footer described them, and
    the table ran over the footer and off the page. Now the flag cells are cut and the table's font shrinks until
    the five overlays fit, readable, between table and footer."""
    header, results, context = _combined_study()
    figure = report.first_page(header, results, context, None)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    images = _overlay_axes(figure)
    assert len(images) == 5
    table, footer, text = _table_and_footer(figure)
    assert table.y0 >= footer.y1 and table.y0 >= report.FOOTER_TOP, "the key numbers run into the footer"
    assert text.startswith("Overlay: ")  # the legend describes images drawn on this page
    for ax in images:
        box = _fraction(ax.get_tightbbox(renderer), figure)
        assert box.y1 <= table.y0 and box.y0 >= footer.y1, f"{ax.get_title()!r} overlaps the table or footer"
        assert _fraction(ax.get_window_extent(renderer), figure).height >= report.MIN_READABLE_PANEL - 1e-3
    # every cell holds its text (a smaller font wraps wider, never past its cell)
    [cells] = [t for ax in figure.axes for t in ax.tables]
    for (row, column), cell in cells.get_celld().items():
        inner, frame = cell.get_text().get_window_extent(renderer), cell.get_window_extent(renderer)
        assert frame.x0 - 1 <= inner.x0 and inner.x1 <= frame.x1 + 1 and frame.y0 - 1 <= inner.y0 \
            and inner.y1 <= frame.y1 + 1, f"cell {row},{column} runs out of its cell"


def _poppler(pdf: bytes, tmp_path) -> tuple[int, list[int]]:
    """(pages, the page of each image) of a PDF as poppler (pdfinfo, pdfimages) reads it; skipped without them."""
    import shutil
    import subprocess

    from tests.conftest import REQUIRE_PEERS

    if shutil.which("pdfimages") is None or shutil.which("pdfinfo") is None:
        if REQUIRE_PEERS:
            pytest.fail("poppler-utils not installed but DICOMNODE_REQUIRE_PEERS=1 (.ci/run installs them)")
        pytest.skip("not installed: pdfimages, pdfinfo (Debian: poppler-utils)")
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True).stdout
    pages = int(next(line.split()[1] for line in info.splitlines() if line.startswith("Pages:")))
    listed = subprocess.run(["pdfimages", "-list", str(path)], capture_output=True, text=True, check=True).stdout
    return pages, [int(line.split()[0]) for line in listed.splitlines()[2:] if line.strip()]


def test_the_pdf_of_a_combined_study_has_its_overlay_images_on_page_1(tmp_path):
    """The PDF as a reader opens it (break41b counted with pdfimages): page 1 holds the five overlays, no third
    page is made."""
    header, results, context = _combined_study()
    pdf, _ = report.render_report(header, results, context, None)
    pages, images = _poppler(pdf, tmp_path)
    assert pages == 2
    assert images.count(1) >= 5


def test_overlays_that_cannot_fit_on_page_1_are_on_page_3_and_page_1_says_so(monkeypatch, tmp_path):
    """Where no cut and no font leaves the images MIN_READABLE_PANEL, page 1 keeps the table above the footer, draws
    no image, and its footer points to page 3, which draws them all with their legend."""
    monkeypatch.setattr(report, "MIN_READABLE_PANEL", 0.5)  # more than any page 1 leaves
    header, results, context = _combined_study()
    first = report.first_page(header, results, context, None)
    first.canvas.draw()
    assert not _overlay_axes(first) and not report.has_overlays(first)
    table, footer, text = _table_and_footer(first)
    assert table.y0 >= footer.y1
    assert text.startswith(report.MOVED_OVERLAYS.format(page=3) + ": red LV blood pool")
    third = report.overlay_page(header, results, context)
    assert len(_overlay_axes(third)) == 5 and report.has_overlays(third)
    assert any(t.get_text().startswith("Overlay: red LV blood pool") for t in third.texts)
    pdf, _ = report.render_report(header, results, context, None)
    pages, images = _poppler(pdf, tmp_path)
    assert pages == 3 and 1 not in images and images.count(3) >= 5


def test_a_short_report_keeps_the_largest_font():
    """The table's font shrinks only where the images need the room: a plain LGE + cine study keeps TABLE_FONT."""
    study, results, context = make_study()
    figure = report.first_page(study.series[0].instances[0].dataset, results, context, (2.0, "mosteller"))
    [table] = [t for ax in figure.axes for t in ax.tables]
    assert {cell.get_fontsize() for cell in table.get_celld().values()} == {report.TABLE_FONT}
    assert len(_overlay_axes(figure)) == 5
