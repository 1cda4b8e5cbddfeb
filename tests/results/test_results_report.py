"""Visual report (PDF + PNG), Encapsulated PDF and Secondary Capture, and build_result_objects as a whole."""
from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image

from dicomnode.analysis.pipeline import Declined
from dicomnode.results.objects import build_result_objects
from dicomnode.results.sr import build_suggestions_sr
from dicomnode.results.report import build_pdf_document, key_number_rows, per_slice_scar_percent, render_report
from synthetic import make_study, write
from validators import assert_valid, forget_started, validate_later


@pytest.fixture(scope="module")
def built():
    study, results, context = make_study()
    results[1].declined.append(Declined("1.2.3.4.5", "cine 2CH view: no short-axis stack"))
    objects = build_result_objects(study, results, context, secondary_capture=True)
    return study, results, context, objects


def _own(objects):
    """The node's own result objects, without the display copies of the cine (MR images, display_copy.py)."""
    return [o for o in objects if o.Modality != "MR"]


def test_result_objects_go_to_the_source_study_in_new_series(built):
    study, results, context, objects = built
    # the cine holds every phase in one series: an ED and an ES copy series (6 slices each) for its SEGs, first;
    # SEGs: LGE, cine ED, cine ES; the TID 1500 SR, the text-only suggestions SR, PDF, SC
    assert [o.Modality for o in objects] == ["SEG"] + ["MR"] * 12 + ["SEG", "SEG", "SR", "SR", "DOC", "OT"]
    assert {o.StudyInstanceUID for o in objects} == {study.study_instance_uid}
    source_series = {i.dataset.SeriesInstanceUID for s in study.series for i in s.instances}
    series = [o.SeriesInstanceUID for o in objects]
    assert len(set(series)) == len(_own(objects)) + 2 and not set(series) & source_series
    numbers = {o.SeriesInstanceUID: o.SeriesNumber for o in objects}
    assert len(set(numbers.values())) == len(numbers) and min(numbers.values()) >= 9000
    for o in _own(objects):
        assert o.SeriesDescription.startswith("AI ") and "unverified" in o.SeriesDescription
        assert o.ContentDate == context.started_at.strftime("%Y%m%d")
        assert any(i.PurposeOfReferenceCodeSequence[0].CodeValue == "Newcode1" for i in o.ContributingEquipmentSequence)
    again = build_result_objects(study, results, context)
    assert not {o.SOPInstanceUID for o in again} & {o.SOPInstanceUID for o in objects}
    assert [o.Modality for o in _own(again)] == ["SEG", "SEG", "SEG", "SR", "SR", "DOC"]  # no SC unless asked


def _listed_by_ohif(objects):
    """The series of the objects as OHIF 3.13 lists its "low priority" modalities (SEG, SR, DOC, ...): newest Series
    Date + Time first (seriesInfoSortingCriteria / compareSeriesDateTime)."""
    series = {o.SeriesInstanceUID: o for o in objects}
    return sorted(series.values(), key=lambda o: f"{o.SeriesDate} {o.SeriesTime}", reverse=True)


def test_a_viewer_lists_the_results_in_the_intended_order(built):
    """A5: every result series of one analysis has its own Series Date/Time, so a viewer sorting by them (OHIF's
    default series sort, newest first) lists them in one order: since break48b #7 the times increase with the Series
    Numbers (the SEGs in stack order - LGE, cine ED, cine ES -, the measurement SR, the suggestions SR, the PDF, the
    SC, the display copies), so sorting by time and by number agree; the node's own objects carry the same Content
    Date/Time."""
    _, _, context, objects = built
    own = _own(objects)
    times = [f"{o.SeriesDate}{o.SeriesTime}" for o in own]
    assert len(set(times)) == len(own)
    assert all(len(o.SeriesTime) == len("203015.250000") for o in objects)  # compared as strings by OHIF
    listed = _listed_by_ohif(objects)
    measurement_sr = next(o for o in own if o.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34")
    suggestions = next(o for o in own if o.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33")
    segs = [o for o in own if o.Modality == "SEG"]
    intended = [*segs, measurement_sr, suggestions] + [next(o for o in own if o.Modality == m) for m in ("DOC", "OT")]
    assert [o.SeriesNumber for o in listed[:2]] == [9302, 9301]  # the copies latest, ES after ED
    assert [o.SOPInstanceUID for o in listed[2:]] == [o.SOPInstanceUID for o in reversed(intended)]
    assert [int(o.SeriesNumber) for o in listed] == sorted((int(o.SeriesNumber) for o in listed), reverse=True)
    assert [s.ContentDescription.split("(")[1] for s in segs] == ["late enhancement), unverified",
                                                                   "end diastole), unverified",
                                                                   "end systole), unverified"]
    for o in own:
        assert (o.ContentDate, o.ContentTime) == (o.SeriesDate, o.SeriesTime)
    assert min(times) >= context.started_at.strftime("%Y%m%d%H%M%S.%f")


def test_segs_of_a_stack_sent_slice_by_slice_are_numbered_and_listed_in_the_source_series_order():
    """A5: one SEG per slice series: SEG 9001 is the SEG of the lowest source series number (here the scanner
    numbered the slice series against the stack order), and a viewer sorting by Series Time lists them in that
    order (newest first: the reverse; break48b #7, the times follow the numbers)."""
    from synthetic import one_series_per_slice

    study, results, context = make_study(slices=4)
    segmentation = results[0].segmentations[0]
    by_uid = one_series_per_slice(segmentation)
    for k, ref in enumerate(segmentation.volume.frames[0]):
        by_uid[ref.sop_instance_uid].SeriesNumber = 40 - k
    objects = build_result_objects(study, results[:1], context)
    segs = [o for o in objects if o.Modality == "SEG"]
    source_numbers = {ds.SOPInstanceUID: int(ds.SeriesNumber) for ds in by_uid.values()}
    sources = [source_numbers[seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID]
               for seg in sorted(segs, key=lambda seg: int(seg.SeriesNumber))]
    assert sources == sorted(sources) and len(sources) >= 2
    listed = [o for o in _listed_by_ohif(objects) if o.Modality == "SEG"]
    assert [int(o.SeriesNumber) for o in listed] == sorted((int(o.SeriesNumber) for o in segs), reverse=True)


def test_report_options_follow_the_config(built):
    study, results, context, _ = built
    config = context.config.model_copy(deep=True)
    config.analysis.report_pdf = False
    quiet = type(context)(config=config, runtime=None, started_at=context.started_at)
    assert [o.Modality for o in _own(build_result_objects(study, results, quiet))] == ["SEG", "SEG", "SEG", "SR", "SR"]
    only_suggestions = build_result_objects(study, [results[2]], quiet)
    assert [o.SOPClassUID for o in only_suggestions] == ["1.2.840.10008.5.1.4.1.1.88.33"]  # stand-alone SR


def test_render_report_gives_a_pdf_and_a_png(built):
    study, results, context, _ = built
    header = study.series[0].instances[0].dataset
    pdf, png = render_report(header, results, context, bsa=(2.0, "mosteller"),
                             declined=[Declined(None, "no LGE series")])
    assert pdf.startswith(b"%PDF") and b"%%EOF" in pdf[-32:]
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size[1] > image.size[0] > 800
    pixels = np.asarray(image.convert("RGB"))
    top = pixels[: pixels.shape[0] // 30].reshape(-1, 3).mean(axis=0)
    assert top[0] > 120 and top[1] < 60  # the red "not verified" banner runs across the top


def test_key_numbers_and_scar_extent(built):
    _, results, _, _ = built
    rows = dict(key_number_rows(results, (2.0, "mosteller")))
    summary = results[0].summary
    assert rows["%LGE (DL, scar incl. MVO / LV myocardium)"] == f"{summary['lge_percent']:.1f} %"
    assert rows["%LGE (5-SD threshold)"] == f"{summary['nsd']['lge_percent']:.1f} %"
    assert rows["BSA"] == "2.00 m² (mosteller)"
    cine = results[1].summary
    assert rows["LV SV / EF"] == (f"{cine['lv_sv_ml']:.1f} mL / {cine['lv_ef_percent']:.1f} %; "
                                  f"SVi {cine['lv_sv_ml'] / 2:.1f} mL/m²")
    # every RV index summary.json gives (break41b F7), as the console prints them
    assert rows["RV EDV / ESV"].endswith(f"; EDVi {cine['rv_edv_ml'] / 2:.1f} mL/m² / "
                                         f"ESVi {cine['rv_esv_ml'] / 2:.1f} mL/m²")
    assert rows["RV SV / EF"].endswith(f"; SVi {cine['rv_sv_ml'] / 2:.1f} mL/m²")
    # phases counted from 1 as a viewer counts them; values outside the reference range said on the page
    assert rows["ED / ES phase"].startswith(f"{cine['ed_phase'] + 1} / {cine['es_phase'] + 1}")
    assert "counted from 1" in rows["ED / ES phase"]
    assert "Outside the reference range" not in rows or cine.get("flags")
    import dataclasses
    flagged = dataclasses.replace(results[1], summary={**cine, "flags": [
        "LVEF below normal range (30.3 % < 57 %, male)", "LV ESV above normal range (128.9 mL > 76 mL, male)"]})
    rows = dict(key_number_rows([results[0], flagged], (2.0, "mosteller")))
    assert rows["Outside the reference range"] == "LVEF below normal range; LV ESV above normal range"
    extent = per_slice_scar_percent(results[0].segmentations[0])
    labels = results[0].segmentations[0].labelmap[0]
    k = 1
    expected = 100 * np.isin(labels[k], [3, 4]).sum() / np.isin(labels[k], [2, 3, 4]).sum()
    assert extent[k] == pytest.approx(expected)
    assert extent[0] == 0 and np.isnan(extent[-1])  # no scar / no myocardium at all


def test_encapsulated_pdf_holds_the_report(built):
    study, results, context, objects = built
    document = next(o for o in objects if o.Modality == "DOC")
    assert document.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.1"
    length = int(document.EncapsulatedDocumentLength)
    assert bytes(document.EncapsulatedDocument)[:length].startswith(b"%PDF")
    assert document.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert {i.ReferencedSOPInstanceUID for i in document.SourceInstanceSequence} == \
        {o.SOPInstanceUID for o in objects[:objects.index(document)]}
    with pytest.raises(ValueError, match="not a PDF"):
        build_pdf_document(b"PNG", study.series[0].instances[0].dataset, context, results[0].algorithms, 9200)


def test_secondary_capture_is_the_png(built):
    *_, objects = built
    capture = next(o for o in objects if o.Modality == "OT")
    assert capture.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert capture.PhotometricInterpretation == "RGB" and capture.BurnedInAnnotation == "YES"
    assert capture.pixel_array.shape[2] == 3 and capture.pixel_array.shape[0] > 800


@pytest.fixture(scope="module")
def validated_objects(built, tmp_path_factory):
    """kind -> (file, pixelmed validator) of the suggestions SR, the PDF and the SC, all handed to dciodvfy and
    pixelmed at once (validators.validate_later: side by side instead of one after the other)."""
    study, results, context, objects = built
    folder = tmp_path_factory.mktemp("validated")
    files = {}
    for kind in ("suggestions-sr", "pdf", "sc"):
        if kind == "suggestions-sr":
            dataset = build_suggestions_sr(study.series[0].instances[0].dataset, results[2], context, 9101)
        else:
            dataset = next(o for o in objects if o.Modality == ("DOC" if kind == "pdf" else "OT"))
        validator = "DicomSRValidator" if dataset.Modality == "SR" else "DicomInstanceValidator"
        files[kind] = (validate_later(write(dataset, folder / f"{kind}.dcm"), validator), validator)
    yield files
    forget_started(path for path, _ in files.values())


@pytest.mark.peers
@pytest.mark.parametrize("kind", ["suggestions-sr", "pdf", "sc"])
def test_objects_pass_dciodvfy_and_pixelmed(validated_objects, kind):
    assert_valid(*validated_objects[kind])


def test_crop_box_is_a_square_around_every_label():
    from dicomnode.results.report import crop_box

    labels = np.zeros((2, 3, 100, 80), np.uint8)
    labels[0, 1, 40:50, 10:20] = 1
    labels[1, 2, 60:62, 30:35] = 5
    rows, cols = crop_box(labels, margin=4)
    assert rows.stop - rows.start == cols.stop - cols.start
    assert rows.start <= 36 and rows.stop >= 66 and cols.start <= 6 and cols.stop >= 39
    assert 0 <= rows.start and rows.stop <= 100 and 0 <= cols.start and cols.stop <= 80
    assert crop_box(np.zeros((4, 30, 20), np.uint8)) == (slice(0, 30), slice(0, 20))


def test_threshold_methods_that_could_not_run_say_why(built):
    from dicomnode.results.report import key_number_table, method_value

    assert method_value({"lge_percent": None, "error": "no remote myocardium"}) == \
        "not applicable: no remote myocardium"
    assert method_value({"applicable": False, "reason": "magnitude image"}) == "not applicable: magnitude image"
    assert method_value({"lge_percent": 12.25}) == "12.3 %"  # half up, as a reader rounds
    assert method_value(7.0) == "7.0 %"
    _, results, _, _ = built
    rows = {q: (v, r) for q, v, r in key_number_table(results, (2.0, "mosteller"), "M")}
    assert rows["LV EF"][1] == "57-77 %"  # mean +/- 2 SD for men (cmr-reference.md)
    assert rows["LV EDV / EDVi"][1].startswith("106-214 mL")


def test_bullseye_follows_the_aha_layout():
    from dicomnode.results.bullseye import segment_geometry

    assert segment_geometry(1)[2:] == (60.0, 120.0)  # basal anterior at the top
    assert segment_geometry(2)[2:] == (120.0, 180.0)  # anteroseptal upper left: septum on the left
    assert segment_geometry(4)[2:] == (240.0, 300.0)  # inferior at the bottom
    assert segment_geometry(14)[2:] == (135.0, 225.0)  # apical septal on the left
    assert segment_geometry(17)[:2] == (0.0, 0.25)
    with pytest.raises(ValueError):
        segment_geometry(18)


def test_methods_state_the_calibrated_scar_decision_only_where_one_was_applied():
    from dicomnode.analysis.pipeline import PipelineResult
    from dicomnode.results.report import _methods_lines

    def lge(decision):
        return PipelineResult(name="lge", summary={"method": "dl"},
                              measurements={"lge_kind": "psir", "scar_decision": decision})

    [calibrated, _] = _methods_lines([lge({"input_kind": "native", "scar_log_offset": -1.25})])
    assert "Scar decision calibrated for scanner-native input" in calibrated and "e^-1.25" in calibrated
    [plain, _] = _methods_lines([lge({"input_kind": "windowed_8bit", "scar_log_offset": 0.0})])
    assert "Scar decision" not in plain and plain.startswith("LGE: deep-learning segmentation of the PSIR")


#: cine flags as measure_cine words them: values outside the ranges, then timing notes naming phases from 1
RANGE_FLAGS = ["LV EDV below normal range (81.4 mL; men 106–214 mL, women 86–178 mL)",
               "LV mass index outside the normal range for one sex (48.5 g/m²: below for men; within for women; "
               "men 49–85 g/m², women 41–81 g/m²)"]
JUMP_NOTES = [f"phase {p + 1}: LV volume {60.0 + p:.1f} mL jumps from its temporal neighbours (found on the slices "
              f"that time the cycle: 50.0 mL there against their per-slice median 40.0 mL); not used as ED or ES"
              for p in (1, 10)]


def _with_flags(cine, flags, flagged=(1, 10), phases=12):
    import dataclasses

    curve = [100.0 - 3 * p for p in range(phases)]
    summary = {**cine.summary, "flags": list(flags), "lv_volume_curve_ml": curve,
               "timing": {"flagged_phases": list(flagged)}}
    return dataclasses.replace(cine, summary=summary, measurements={**cine.measurements, "lv_volume_curve_ml": curve})


def test_timing_notes_have_their_own_row_counted_from_1_as_the_phases(built):
    _, results, _, _ = built
    cine = _with_flags(results[1], RANGE_FLAGS + JUMP_NOTES)
    rows = dict(key_number_rows([cine], (2.0, "mosteller")))
    assert rows["Outside the reference range"] == \
        "LV EDV below normal range; LV mass index outside the normal range for one sex"
    assert rows["Notes (phases counted from 1)"] == ("phase 2: LV volume 61.0 mL jumps from its temporal neighbours; "
                                                     "phase 11: LV volume 70.0 mL jumps from its temporal neighbours")
    assert rows["ED / ES phase"] == "1 / 4 of 12 (counted from 1)"


def _extent(artist, figure):
    renderer = figure.canvas.get_renderer()
    return artist.get_tightbbox(renderer) if hasattr(artist, "get_tightbbox") else artist.get_window_extent(renderer)


def _page_blocks(figure):
    """(name, box in pixels) of every block drawn on a report page: table, bullseye, images, free text lines."""
    figure.canvas.draw()
    blocks = []
    for ax in figure.axes:
        if ax.tables:
            blocks.append(("table", ax.tables[0].get_window_extent(figure.canvas.get_renderer())))
        elif ax.images:
            blocks.append((f"image {ax.get_title()}", _extent(ax, figure)))
        else:
            blocks.append(("bullseye", _extent(ax, figure)))
    blocks += [(f"text {text.get_text()[:30]}", _extent(text, figure)) for text in figure.texts]
    return blocks


@pytest.mark.parametrize("case", ["cine only, 6 flags", "LGE and cine, 14 flags", "LGE and cine, no flags",
                                  "LGE and cine, 14 flags and 10 stack warnings"])
def test_first_page_blocks_never_overlap_and_cells_hold_their_text(built, case):
    """The key-number table wraps long cells inside their cells and pushes the images down (they shrink, or the
    flag cells are cut with a pointer to page 2, when space runs out): no block of page 1 overlaps another or leaves
    the page, for long flag lists too."""
    from dicomnode.results.report import first_page

    study, results, context, _ = built
    header = study.series[0].instances[0].dataset
    lge, cine = results[0], results[1]
    if case == "cine only, 6 flags":
        shown = [_with_flags(cine, RANGE_FLAGS * 2 + JUMP_NOTES)]
    elif case == "LGE and cine, 14 flags":
        shown = [lge, _with_flags(cine, RANGE_FLAGS * 4 + JUMP_NOTES * 3)]
    elif case == "LGE and cine, 14 flags and 10 stack warnings":
        shown = [_with_summary(lge, stack_warnings=[GAP_WARNING] + [LEFT_OUT_WARNING] * 8),
                 _with_summary(_with_flags(cine, RANGE_FLAGS * 4 + JUMP_NOTES * 3, phases=2),
                               stack_warnings=[PARTIAL_WARNING], ed_phase=0, es_phase=1)]
    else:
        shown = [lge, cine]
    figure = first_page(header, shown, context, (2.0, "mosteller"))
    blocks = _page_blocks(figure)
    assert sum(name.startswith("image") for name, _ in blocks) == (2 if case.startswith("cine") else 5)
    page = figure.bbox
    for name, box in blocks:
        assert page.x0 - 1 <= box.x0 and box.x1 <= page.x1 + 1 and page.y0 - 1 <= box.y0 and box.y1 <= page.y1 + 1, \
            f"{name} leaves the page"
    banner = ("text AI-generated", "text AI CMR analysis report", "text Algorithms")  # stacked above everything
    for i, (name, box) in enumerate(blocks):
        for other, other_box in blocks[i + 1:]:
            if name.startswith(banner) and other.startswith(banner):
                continue
            assert not box.overlaps(other_box), f"{name} overlaps {other}"
    renderer = figure.canvas.get_renderer()
    [table] = [t for ax in figure.axes for t in ax.tables]
    for (row, column), cell in table.get_celld().items():
        text, frame = cell.get_text().get_window_extent(renderer), cell.get_window_extent(renderer)
        assert frame.x0 - 1 <= text.x0 and text.x1 <= frame.x1 + 1 and frame.y0 - 1 <= text.y0 and \
            text.y1 <= frame.y1 + 1, f"cell {row},{column} {cell.get_text().get_text()!r} runs out of its cell"
    images = [box for name, box in blocks if name.startswith("image")]
    assert min(box.height for box in images) >= 0.12 * page.height  # readable overlays


def test_a_cut_flag_cell_points_to_page_2_which_gives_every_flag_in_full(built):
    from dicomnode.results.report import first_page, second_page

    study, results, context, _ = built
    header = study.series[0].instances[0].dataset
    flags = RANGE_FLAGS * 4 + JUMP_NOTES * 3
    shown = [results[0], _with_flags(results[1], flags)]
    first = first_page(header, shown, context, (2.0, "mosteller"))
    [table] = [t for ax in first.axes for t in ax.tables]
    cells = [cell.get_text().get_text() for cell in table.get_celld().values()]
    assert any("in full on page 2" in text for text in cells)
    second = second_page(header, shown, context)
    text = " ".join(t.get_text() for t in second.texts).replace("\n", " ").replace("   ", " ").replace("  ", " ")
    for flag in set(flags):
        assert flag in text


def test_the_volume_curve_explains_its_x_markers(built):
    """The flagged phases carry an x on the LV curve at their number counted from 1, named in the legend."""
    from dicomnode.results.report import second_page

    study, results, context, _ = built
    header = study.series[0].instances[0].dataset
    second = second_page(header, [_with_flags(results[1], JUMP_NOTES)], context)
    curve_ax = next(ax for ax in second.axes if ax.get_title(loc="left").startswith("Ventricular volume"))
    legend = [t.get_text() for t in curve_ax.get_legend().get_texts()]
    assert "LV volume jumps: phase not used as ED/ES" in legend
    [markers] = [line for line in curve_ax.get_lines() if line.get_marker() == "x"]
    assert list(markers.get_xdata()) == [2, 11]
    assert curve_ax.get_xlabel() == "cardiac phase (counted from 1)"


def test_page_header_lines_stay_on_the_page(built):
    import copy

    from dicomnode.results.report import second_page

    study, results, context, _ = built
    header = copy.deepcopy(study.series[0].instances[0].dataset)
    header.PatientID = "A-VERY-LONG-PATIENT-IDENTIFIER-0123456789"
    second = second_page(header, results, context)
    second.canvas.draw()
    for text in second.texts:
        box = text.get_window_extent(second.canvas.get_renderer())
        assert box.x1 <= second.bbox.x1, text.get_text()[:40]


#: stack warnings as dicomnode/cmr/volume.py words them (summary `stack_warnings`)
GAP_WARNING = "irregular slice spacing: median 10.00 mm, also 20.00 mm (gap: missing slice?)"
PARTIAL_WARNING = "2 of 30 cardiac phases present (CardiacNumberOfImages 30)"
LEFT_OUT_WARNING = ("instance 1.2.826.0.1.3680043.8.498.12345678901234567890123456789012 left out: Pixel Data is "
                    "empty")


def _with_summary(result, **changes):
    import dataclasses

    return dataclasses.replace(result, summary={**result.summary, **changes})


def _page_text(figure) -> str:
    """Every text drawn on a page (free text, table cells, axes titles and labels), newlines as spaces."""
    texts = [t.get_text() for t in figure.texts]
    for ax in figure.axes:
        texts += [ax.get_title(), ax.get_title(loc="left"), ax.get_xlabel()]
        texts += [cell.get_text().get_text() for table in ax.tables for cell in table.get_celld().values()]
    return " ".join(texts).replace("\n", " ")


def test_stack_warnings_stand_beside_the_numbers_they_qualify_on_page_1_and_in_full_on_page_2(built):
    """F1: a gap in the LGE stack (volumes lack a slice) and an instance left out of the cine are said in the
    key-number table, last in their pipeline's block and in red, and in full on page 2."""
    from dicomnode.results.report import STACK_ROWS, first_page, key_number_table, second_page
    from dicomnode.results.report_layout import EMPHASIS_COLOUR

    study, results, context, _ = built
    header = study.series[0].instances[0].dataset
    lge = _with_summary(results[0], stack_warnings=[GAP_WARNING])
    cine = _with_summary(results[1], stack_warnings=[LEFT_OUT_WARNING])
    rows = key_number_table([lge, cine], (2.0, "mosteller"), "M")
    names = [row[0] for row in rows]
    lge_row = names.index(STACK_ROWS["lge"])
    assert names[lge_row - 1] == "%LGE (FWHM threshold)" and names[lge_row + 1] == "LV EF"  # ends the LGE block
    assert rows[lge_row][1] == GAP_WARNING and "LGE volumes, mass and %LGE" in rows[lge_row][2]
    assert rows[names.index(STACK_ROWS["cine"])][1] == LEFT_OUT_WARNING and names[-1] == "BSA"
    figure = first_page(header, [lge, cine], context, (2.0, "mosteller"))
    [table] = [t for ax in figure.axes for t in ax.tables]
    cells = {(r, c): cell for (r, c), cell in table.get_celld().items()}
    gap_cell = cells[(lge_row + 1, 1)]
    assert gap_cell.get_text().get_text().replace("\n", " ") == GAP_WARNING
    assert gap_cell.get_text().get_color() == EMPHASIS_COLOUR
    text = _page_text(second_page(header, [lge, cine], context))
    assert f"LGE: {GAP_WARNING}" in text and f"Cine: {LEFT_OUT_WARNING}" in text


def test_a_long_list_of_stack_warnings_is_cut_on_page_1_with_a_pointer_and_given_in_full_on_page_2(built):
    from dicomnode.results.report import STACK_ROWS, first_page, second_page

    study, results, context, _ = built
    header = study.series[0].instances[0].dataset
    warnings = [LEFT_OUT_WARNING.replace("12345", str(10000 + k)) for k in range(8)] + [GAP_WARNING]
    shown = [_with_summary(results[0], stack_warnings=warnings), _with_flags(results[1], RANGE_FLAGS * 4 + JUMP_NOTES)]
    first = first_page(header, shown, context, (2.0, "mosteller"))
    [table] = [t for ax in first.axes for t in ax.tables]
    [row] = [r for (r, c), cell in table.get_celld().items() if c == 0 and cell.get_text().get_text().replace(
        "\n", " ") == STACK_ROWS["lge"]]
    assert "in full on page 2" in table.get_celld()[(row, 1)].get_text().get_text().replace("\n", " ")
    text = _page_text(second_page(header, shown, context)).replace("   ", " ").replace("  ", " ")
    for warning in warnings:
        assert warning in text


def test_a_cine_of_2_of_30_phases_says_so_and_how_ed_and_es_were_chosen(built):
    """F6: "1 / 2 of 2" read as a whole cycle of 2 phases; the page says 2 of the 30 phases were sent and ED / ES
    are the larger / smaller of the two, still counted from 1."""
    import dataclasses

    from dicomnode.results.report import first_page, key_number_table, second_page

    study, results, context, _ = built
    header = study.series[0].instances[0].dataset
    cine = results[1]
    curve = [120.0, 70.0]
    cine = dataclasses.replace(
        cine, summary={**cine.summary, "ed_phase": 0, "es_phase": 1, "lv_volume_curve_ml": curve,
                       "stack_warnings": [PARTIAL_WARNING]},
        measurements={**cine.measurements, "lv_volume_curve_ml": curve, "trigger_times": [0.0, 366.0]},
        segmentations=[dataclasses.replace(cine.segmentations[0], phases=[0, 1])])
    rows = {q: (v, r) for q, v, r in key_number_table([cine], (2.0, "mosteller"), "M")}
    value, reference = rows["ED / ES phase"]
    assert value == "1 / 2 of the 2 phases sent (counted from 1); TriggerTime 0 ms / 366 ms"
    assert reference.startswith("only 2 of the 30 phases of the cycle sent")
    assert "larger / smaller LV volume" in reference and "not detected over the cycle" in reference
    first = _page_text(first_page(header, [cine], context, (2.0, "mosteller")))
    assert "of 2 (" not in first and "cine ED (phase 1 of 2 sent)" in first and "cine ES (phase 2 of 2 sent)" in first
    # placed on the cycle (acquisition numbers 1 and 9 of 30): named so, with how many were sent
    placed = dataclasses.replace(cine, summary={**cine.summary, "phase_numbers": [1, 9], "phases_acquired": 30})
    first = _page_text(first_page(header, [placed], context, (2.0, "mosteller")))
    assert "cine ED (phase 1 of 30; 2 sent)" in first and "cine ES (phase 9 of 30; 2 sent)" in first
    second = _page_text(second_page(header, [cine], context))
    assert "phase of the 2 sent (counted from 1; the cycle has 30)" in second
    assert "Ventricular volume at the 2 phases sent" in second and "over the cardiac cycle" not in second
    assert "ED / ES = larger / smaller LV volume of the 2 phases sent (of the 30 phases of the cycle)" in second
    assert "ES = smallest volume of the temporally smoothed curve" not in second
    # a whole cycle keeps the short form
    whole = {q: v for q, v, _ in key_number_table([_with_flags(results[1], [])], None)}
    assert whole["ED / ES phase"] == "1 / 4 of 12 (counted from 1)"


def test_the_page_header_identifies_patient_and_study_each_labelled(built):
    """F5: name (PN as "Family, Given", Greek glyphs drawn), Patient ID, birth date, sex, study date, accession;
    break50b #13: the age used with its source, PatientSize and PatientWeight as written."""
    import copy
    import warnings

    from dicomnode.results.report import FIELD_SEPARATOR, first_page, identification_line

    study, results, context, _ = built
    header = copy.deepcopy(study.series[0].instances[0].dataset)
    header.SpecificCharacterSet = "ISO_IR 192"
    header.PatientName = "Παπαδόπουλος^Γιώργος"
    header.PatientSex = "F"
    line = identification_line(header)
    assert line == ("Patient: Παπαδόπουλος, Γιώργος   Patient ID: SYN001   Birth date: 1960-01-01   Sex: female   "
                    "Study date: 2026-11-21   Accession no.: ACC1   Age: 66 years (from PatientBirthDate and StudyDate)"
                    "   Height: 1.8 m   Weight: 80.0 kg")  # break50b #13: the inputs of the age and the BSA
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph ... missing from font(s)" for a glyph it lacks
        figure = first_page(header, results, context, (2.0, "mosteller"))
        figure.canvas.draw()
    # the longer line (break50b #13) may be broken onto two between fields (fit_identification)
    assert line in [t.get_text().replace("\n", FIELD_SEPARATOR) for t in figure.texts]


def _no_cjk_font() -> None:
    """Skip without a CJK font, but fail under DICOMNODE_REQUIRE_PEERS=1 (.ci/run installs fonts-wqy-microhei)."""
    from tests.conftest import REQUIRE_PEERS

    if REQUIRE_PEERS:
        pytest.fail("no CJK font installed (Debian: fonts-wqy-microhei) but DICOMNODE_REQUIRE_PEERS=1")
    pytest.skip("no CJK font installed (Debian: fonts-wqy-microhei)")


@pytest.mark.parametrize("name, shown", [
    ("Doe^John^Q^Dr^Jr", "Doe, Dr John Q, Jr"),
    ("Müller^Zoë", "Müller, Zoë"),
    ("Yamada^Tarou=山田^太郎", "Yamada, Tarou (山田 太郎)"),  # the alphabetic group first, the others beside it
    # break41b F8: the ideographic group Japanese staff read was left out of a 3-group name
    ("Yamada^Tarou=山田^太郎=やまだ^たろう", "Yamada, Tarou (山田 太郎, やまだ たろう)"),
    ("Yamada^Tarou==やまだ^たろう", "Yamada, Tarou (やまだ たろう)"),
    ("Smith^Ann=Smith^Ann", "Smith, Ann"),  # a group repeated is not repeated
    ("=山田^太郎", "山田, 太郎"),  # drawn in the CJK font, else as '?' with a note (mark_undrawable)
    ("", "not given"),
    ("^", "not given"),
])
def test_person_names_are_shown_readably(name, shown):
    from dicomnode.results.report import person_name, report_fonts

    if any(ord(c) > 0x3000 for c in shown) and len(report_fonts()) < 2:
        _no_cjk_font()
    assert person_name(name) == shown


def test_without_a_cjk_font_a_name_keeps_the_groups_it_can_draw(monkeypatch):
    """No CJK font: the ideographic and phonetic groups would be '?' only, so the alphabetic group stands alone; a
    name with only a CJK group is still drawn ('?' with a note, mark_undrawable)."""
    from dicomnode.results import report

    monkeypatch.setattr(report, "_font_glyphs", lambda: frozenset(range(0x3000)))
    assert report.person_name("Yamada^Tarou=山田^太郎=やまだ^たろう") == "Yamada, Tarou"
    assert report.person_name("=山田^太郎") == "山田, 太郎"


def test_the_page_header_names_a_japanese_patient_in_every_group(built):
    """break41b F8 as the node gets it: PatientName in ISO 2022 IR 87 (JIS X 0208), all three groups on page 1."""
    import copy

    from pydicom.charset import encode_string
    from pydicom.valuerep import PersonName

    from dicomnode.results.report import identification_line, report_fonts

    if len(report_fonts()) < 2:
        _no_cjk_font()
    study, _, _, _ = built
    header = copy.deepcopy(study.series[0].instances[0].dataset)
    header.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    encodings = ["iso8859", "iso2022_jp"]
    raw = b"=".join(encode_string(group, encodings) for group in ("Yamada^Tarou", "山田^太郎", "やまだ^たろう"))
    header.PatientName = PersonName(raw, encodings)  # as pydicom reads it from the file
    assert identification_line(header).startswith("Patient: Yamada, Tarou (山田 太郎, やまだ たろう)   Patient ID:")



CJK_PATIENT = "=山田^太郎"  # ideographic group only (PN, ISO_IR 192)
CJK_SERIES = {"lge": "지연 조영 증강 단축", "cine": "电影 短轴"}  # Korean LGE, Chinese cine SeriesDescription


def _cjk_header(study):
    import copy

    header = copy.deepcopy(study.series[0].instances[0].dataset)
    header.SpecificCharacterSet = "ISO_IR 192"
    header.PatientName = CJK_PATIENT
    return header


def _cjk_series(results):
    return [_with_summary(r, series_number=7, series_description=CJK_SERIES[r.name])
            if r.name in CJK_SERIES and isinstance(r.summary, dict) else r for r in results]


def test_cjk_patient_and_series_names_are_real_text_in_the_pdf(built, tmp_path):
    """The Japanese patient name and the Korean / Chinese series names are drawn in the CJK font (report_fonts) and
    come back out of the PDF as the same text (poppler's pdftotext), no glyph missing."""
    import shutil
    import subprocess
    import warnings

    from dicomnode.results.report import report_fonts
    from tests.conftest import REQUIRE_PEERS

    missing = [what for what, absent in (("a CJK font (Debian: fonts-wqy-microhei)", len(report_fonts()) < 2),
                                         ("pdftotext (Debian: poppler-utils)", shutil.which("pdftotext") is None))
               if absent]
    if missing:
        message = "not installed: " + ", ".join(missing)
        if REQUIRE_PEERS:
            pytest.fail(message + " but DICOMNODE_REQUIRE_PEERS=1 (.ci/run installs them)")
        pytest.skip(message)
    study, results, context, _ = built
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph ... missing from font(s)" for a glyph it lacks
        pdf, _ = render_report(_cjk_header(study), _cjk_series(results), context, (2.0, "mosteller"))
    (tmp_path / "report.pdf").write_bytes(pdf)
    text = subprocess.run(["pdftotext", "-enc", "UTF-8", str(tmp_path / "report.pdf"), "-"], capture_output=True,
                          check=True).stdout.decode("utf-8")
    flat = "".join(text.split())
    for name in ("山田,太郎", *CJK_SERIES.values()):
        assert "".join(name.split()) in flat, (name, text[:2000])


def test_without_a_cjk_font_cjk_names_are_drawn_as_question_marks_with_a_note(built, monkeypatch):
    """No CJK font installed: each character no font has is '?' (never an empty box, never a crash) and the banner
    says what '?' stands for."""
    import warnings

    import matplotlib

    from dicomnode.results import report

    study, results, context, _ = built
    monkeypatch.setattr(report, "report_fonts", lambda: (report.HEADER_FONT,))
    monkeypatch.setitem(matplotlib.rcParams, "font.family", [report.HEADER_FONT])
    report._font_glyphs.cache_clear()
    try:
        with warnings.catch_warnings():
            # laid out with the missing glyphs (report_fonts ignores matplotlib's warning where no CJK font is there)
            warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font", category=UserWarning)
            pages = [report.first_page(_cjk_header(study), _cjk_series(results), context, (2.0, "mosteller")),
                     report.second_page(_cjk_header(study), _cjk_series(results), context)]
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # ... and drawn without any: '?' stands in for each
            for page in pages:
                page.canvas.draw()
    finally:
        report._font_glyphs.cache_clear()
    for page in pages:
        texts = [t.get_text() for t in page.texts]
        assert report.UNDRAWABLE_NOTE in texts
        assert any(t.startswith("Patient: ??, ??   Patient ID:") for t in texts)
    assert '"?? ?? ?? ??"' in _page_text(pages[1]) and '"?? ??"' in _page_text(pages[1])  # the series names

def test_an_absent_patient_or_study_attribute_is_said_absent(built):
    import copy

    from dicomnode.results.report import FIELD_SEPARATOR, first_page, second_page

    study, results, context, _ = built
    header = copy.deepcopy(study.series[0].instances[0].dataset)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "AccessionNumber"):
        delattr(header, keyword)
    expected = ("Patient: not given   Patient ID: not given   Birth date: not given   Sex: not given   "
                "Study date: not given   Accession no.: not given   Age: unknown   Height: 1.8 m   Weight: 80.0 kg")
    for page in (first_page(header, results, context), second_page(header, results, context)):
        page.canvas.draw()
        assert expected in [t.get_text().replace("\n", FIELD_SEPARATOR) for t in page.texts]  # two lines or one
    header.PatientName, header.PatientBirthDate, header.PatientSex = "", "1960", "X"
    text = _page_text(first_page(header, results, context))
    assert "Patient: not given" in text and "Birth date: 1960" in text and "Sex: X" in text


def test_image_titles_sharing_a_row_never_overlap():
    """F10: five overlays in one row with long titles: each title stays within its own column (wrapped or
    shrunk, measured with the renderer)."""
    import dataclasses

    from dicomnode.results.report import first_page

    study, results, context = make_study(slices=10, cine_phases=25)  # titles "cine ED (phase 13), slice 5 of 10"
    header = study.series[0].instances[0].dataset
    cine = results[1]
    cine = dataclasses.replace(_with_flags(cine, RANGE_FLAGS * 4 + JUMP_NOTES * 3, phases=25),  # a long table
                               segmentations=[dataclasses.replace(cine.segmentations[0], phases=[12, 24])])
    cine = _with_summary(cine, ed_phase=12, es_phase=24)
    reason = ("245 distinct values in 458752 pixels: 8-bit data rescaled, the export's window compresses the "
              "scanner's signal range")  # as on a real 8-bit export: two tall rows
    lge = _with_summary(results[0], nsd={"n": 5, "lge_percent": None, "applicable": False, "reason": reason},
                        fwhm={"lge_percent": None, "applicable": False, "reason": reason})
    figure = first_page(header, [lge, cine], context, (2.0, "mosteller"))
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    images = [ax for ax in figure.axes if ax.images]
    assert len(images) == 5
    rows = {}
    for ax in images:
        rows.setdefault(round(ax.get_position().y0, 3), []).append(ax)
    # three or more side by side (the one threshold-methods row of break4 finding 10, and the smaller table font of
    # break41b F1, leave room for a second row of larger images here; five in one row:
    # test_captions_of_five_images_in_one_row_wrap_within_their_image)
    assert max(len(row) for row in rows.values()) >= 3
    for row in rows.values():
        row.sort(key=lambda ax: ax.get_position().x0)
        boxes = [ax.title.get_window_extent(renderer) for ax in row]
        for left, right in zip(boxes, boxes[1:]):
            assert left.x1 < right.x0, f"{left} runs into {right}"
        for ax, box in zip(row, boxes):
            assert box.y0 >= ax.get_window_extent(renderer).y1 - 1  # above its own image
    for ax in images:
        title = ax.title.get_window_extent(renderer)
        for other in figure.axes:
            if other is not ax and other.tables:
                assert not title.overlaps(other.tables[0].get_window_extent(renderer))


@pytest.mark.parametrize("shown, present, absent", [
    ("cine", ["red LV blood pool", "green LV myocardium (whole)", "blue RV blood pool"],
     ["scar", "MVO", "non-enhanced"]),
    ("lge", ["red LV blood pool", "green non-enhanced LV myocardium", "yellow scar", "purple MVO",
             "blue RV blood pool"], ["whole"]),
    ("both", ["red LV blood pool", "cine: whole", "LGE: non-enhanced", "yellow scar",
              "purple MVO (not validated) on the LGE images"], []),
])
def test_the_overlay_legend_names_only_what_the_shown_images_draw(built, shown, present, absent):
    """F11: a cine-only study (LGE declined) has no scar, MVO or non-enhanced myocardium in its overlays."""
    from dicomnode.analysis.pipeline import PipelineResult
    from dicomnode.results.report import first_page

    study, results, context, _ = built
    header = study.series[0].instances[0].dataset
    declined_lge = PipelineResult(name="lge", summary=None, declined=[Declined(None, "no LGE series")])
    declined_cine = PipelineResult(name="cine", summary=None, declined=[Declined(None, "no cine series")])
    shown_results = {"cine": [declined_lge, results[1]], "lge": [results[0], declined_cine],
                     "both": [results[0], results[1]]}[shown]
    figure = first_page(header, shown_results, context, (2.0, "mosteller"))
    [footer] = [t.get_text() for t in figure.texts if t.get_text().startswith("Overlay:")]
    legend = footer.split("\n")[0]
    for words in present:
        assert words in legend
    for words in absent:
        assert words not in legend


def _image_axes(figure):
    return [ax for ax in figure.axes if ax.images]


def test_overlays_keep_the_shape_of_non_square_pixels():
    """A4: PixelSpacing 2.2 \\ 0.9 mm (EMIDEC-like): each image is drawn with aspect row / column spacing, so the LV is
    round on the page as in a viewer, and its crop window is square in millimetres, not in pixels."""
    import dataclasses

    from dicomnode.results.report import crop_box, first_page, pixel_aspect

    study, results, context = make_study()
    segmentation = results[0].segmentations[0]
    segmentation.volume = dataclasses.replace(segmentation.volume, pixel_spacing=(2.2, 0.9))
    figure = first_page(study.series[0].instances[0].dataset, results[:1], context)
    images = _image_axes(figure)
    assert images and all(ax.get_aspect() == pytest.approx(2.2 / 0.9) for ax in images)
    assert pixel_aspect((1.5, 1.5)) == 1.0
    labels = np.zeros((1, 2, 100, 80), np.uint8)
    labels[0, 1, 40:50, 10:30] = 1
    rows, cols = crop_box(labels, margin=4, spacing=(2.0, 1.0))
    assert abs((rows.stop - rows.start) * 2.0 - (cols.stop - cols.start) * 1.0) <= 2.0  # square in mm
    assert rows.start <= 40 and rows.stop >= 50 and cols.start <= 10 and cols.stop >= 30


def test_images_and_per_slice_bars_name_slices_as_the_viewer_numbers_them():
    """A3: the PDF names each slice by what a viewer shows - the source series and image (Instance) number and the
    slice location in mm - and its short-axis level, not "slice k of N" in the node's stack order; the per-slice bars
    run in the viewer's order. Here the scanner numbered the images from the other end of the stack."""
    from dicomnode.results.report import first_page, scar_bar_labels, second_page, slice_levels

    study, results, context = make_study(slices=8)
    lge = results[0]
    segmentation = lge.segmentations[0]
    by_uid = {i.sop_instance_uid: i.dataset for i in segmentation.series.instances}
    for k, ref in enumerate(segmentation.volume.frames[0]):
        by_uid[ref.sop_instance_uid].InstanceNumber = 8 - k
        by_uid[ref.sop_instance_uid].SliceLocation = 100.0 - 8 * k
    header = study.series[0].instances[0].dataset
    titles = [" ".join(ax.get_title().split()) for ax in _image_axes(first_page(header, [lge], context))]
    levels = slice_levels(lge, segmentation)
    thirds = lge.summary["aha_segments"]["thirds"]
    assert levels == {k: level for level, slices in thirds.items() for k in slices}
    extent = per_slice_scar_percent(segmentation)
    chosen = [5, 3, 1]  # the 15/50/85 % slices of those with myocardium (0..6), in the viewer's order
    assert titles == [f"LGE {levels[k]} (scar {extent[k]:.0f} %): S:7 I:{8 - k}, {100.0 - 8 * k:.1f} mm"
                      for k in chosen]
    assert not [t for t in titles if "of 8" in t]
    order, labels, axis = scar_bar_labels(lge, segmentation)
    assert order == list(range(7, -1, -1))  # image 1 first, as the viewer opens the series
    assert labels[0] == "1\n44" and labels[-1] == f"8\n100\n{'bas' if levels[0] == 'basal' else levels[0][:3]}"
    assert axis.startswith("LGE image no. in series 7, position (mm)")
    page = second_page(header, [lge], context)
    bars = next(ax for ax in page.axes if ax.patches)
    assert [t.get_text() for t in bars.get_xticklabels()] == labels
    heights = np.nan_to_num(extent[order])
    assert [round(p.get_height(), 6) for p in bars.patches] == [round(float(v), 6) for v in heights]
    # where the analysis withheld the thirds (a stack spanning clearly less than the LV, or numbers not
    # determined) the PDF names no level either
    for withheld in ({"coverage": {"lv_shorter_than_whole": True}}, {"determined": False}):
        short = dataclasses.replace(lge, summary={**lge.summary, **withheld,
                                                  "aha_segments": {"applicable": False, "reason": "withheld"}})
        assert slice_levels(short, segmentation) == {}


def test_cine_images_name_their_series_image_and_level():
    from dicomnode.results.report import first_page, mid_ventricular_slice, slice_levels

    study, results, context = make_study()
    cine = results[1]
    segmentation = cine.segmentations[0]
    header = study.series[0].instances[0].dataset
    titles = [" ".join(ax.get_title().split()) for ax in _image_axes(first_page(header, [cine], context))]
    levels = slice_levels(cine, segmentation)
    headers = {i.sop_instance_uid: i.dataset for i in segmentation.series.instances}
    assert len(titles) == 2
    for title, position in zip(titles, (0, 1)):
        k = mid_ventricular_slice(segmentation, position)
        ref = segmentation.volume.frames[segmentation.phases[position]][k]
        number = int(headers[ref.sop_instance_uid].InstanceNumber)
        assert title.endswith(f" {levels[k]}: S:5 I:{number}, "
                              f"{float(segmentation.volume.positions[k][2]):.1f} mm"), title
