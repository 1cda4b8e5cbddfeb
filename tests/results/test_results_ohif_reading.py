"""What a reader in OHIF v3 learns from the result objects (break43d): outlines on non-square pixels said to be
misplaced beside them (OHIF exchanges the row and column spacings of a 2-D SCOORD), a re-analysis told apart from the
analysis it supersedes in the series list, and ED / ES SEG series told apart within the ~24 characters it shows."""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import replace

import pytest
from pydicom.uid import SecondaryCaptureImageStorage

from dicomnode.results import codes
from dicomnode.results.objects import (REANALYSIS_SERIES_STEP, build_result_objects, reanalysis_description)
from dicomnode.results.regions import non_square_aspect, non_square_note
from dicomnode.results.report import _methods_lines
from dicomnode.results.sr import build_sr
from synthetic import make_study, write
from test_results_sr import groups, nums, segs_of
from test_results_sr_display import identifier_of
from validators import assert_valid

ASPECT = (codes.NON_SQUARE_PIXELS.value, "99DICOMNODE")


def _with_spacing(results, spacing):
    """The results with the LGE and cine volumes on pixels of `spacing` (between rows, between columns) mm."""
    for result in results[:2]:
        result.segmentations = [replace(s, volume=replace(s.volume, pixel_spacing=spacing))
                                for s in result.segmentations]
    return results


def test_non_square_aspect_is_row_over_column_spacing_beyond_one_percent():
    assert non_square_aspect((1.0801, 1.8147)) == pytest.approx(0.595)
    assert non_square_aspect((1.5484, 1.2658)) == pytest.approx(1.223)
    assert non_square_aspect((1.25, 1.25)) is None and non_square_aspect((1.25, 1.2501)) is None
    assert non_square_aspect(None) is None and non_square_aspect((0, 1.0)) is None
    assert "1.5484\\1.2658" in non_square_note((1.5484, 1.2658)) and non_square_note((1.5, 1.5)) is None


def test_outlines_on_non_square_pixels_say_so_first_in_every_group_with_numbers():
    """break43d F1: OHIF drew the outlines of EMIDEC-geometry studies (the demo) off the LV while their labels named AHA
    segments; each group with numbers now begins with a NUM whose concept says the outline may be misplaced."""
    study, results, context = make_study(slices=4, cine_phases=4)
    header = study.series[0].instances[0].dataset
    square = build_sr(header, results, segs_of(results, context), context, 9100)
    assert ASPECT not in {c for g in groups(square) for c, *_ in nums(g)}
    _with_spacing(results, (1.8, 1.2))
    sr = build_sr(header, results, segs_of(results, context), context, 9100)
    with_numbers = [g for g in groups(sr) if nums(g)]
    assert with_numbers
    for group in with_numbers:
        first = nums(group)[0]
        assert first[0] == ASPECT and first[1] == pytest.approx(1.5), identifier_of(group)
    comments = [str(i.TextValue) for i in sr.ContentSequence[-1].ContentSequence if i.ValueType == "TEXT"]
    assert any("non-square pixels" in c and "OHIF" in c for c in comments)
    assert any("non-square pixels (PixelSpacing 1.8\\1.2 mm)" in line for line in _methods_lines(results))


@pytest.mark.peers
def test_a_report_on_non_square_pixels_passes_dciodvfy_and_pixelmed(tmp_path):
    study, results, context = make_study(slices=4, cine_phases=4)
    _with_spacing(results, (1.8, 1.2))
    sr = build_sr(study.series[0].instances[0].dataset, results, segs_of(results, context), context, 9100)
    assert_valid(write(sr, tmp_path / "sr.dcm"), "DicomSRValidator")


def test_a_reanalysis_is_told_apart_in_the_series_list():
    """break43d F3: a re-analysis showed its SEG, SR and PDF under the series numbers and descriptions of the results
    it supersedes. It now numbers every series REANALYSIS_SERIES_STEP higher per earlier analysis and begins each
    description with the run's number (break48b #8: "AI run 2 ... replaces run 1", once "rerun 2", which read as the
    second re-run); new series and UIDs as before."""
    study, results, context = make_study(slices=3, cine_phases=5)
    first = build_result_objects(study, results, context)
    earlier = [{"sop_instance_uid": "1.2.3", "series_instance_uid": "1.2.4",
                "study_instance_uid": study.study_instance_uid}]
    second = build_result_objects(study, results, context, supersedes=earlier)
    assert len(first) == len(second)
    for before, after in zip(first, second):
        assert int(after.SeriesNumber) == int(before.SeriesNumber) + REANALYSIS_SERIES_STEP
        assert after.SeriesInstanceUID != before.SeriesInstanceUID and after.SOPInstanceUID != before.SOPInstanceUID
        text = str(after.SeriesDescription)
        assert len(text) <= 64 and text.startswith(("AI run 2 ", "Run 2 ")), text
        assert "run" not in str(before.SeriesDescription).lower().replace("unverified", "")
        if str(before.SeriesDescription).startswith("AI unverified "):
            assert "unverified, replaces run 1" in text
    # a SEG on display copies names the renumbered copy series, not the first analysis's
    copies = {int(d.SeriesNumber) for d in second if d.Modality == "MR"}
    named = [int(n) for d in second if d.Modality == "SEG"
             for n in re.findall(r"(?:series |S:)(\d+)", str(d.SeriesDescription))]
    assert copies and copies <= set(named) and all(n >= REANALYSIS_SERIES_STEP for n in copies)
    third = build_result_objects(study, results, context, supersedes=earlier * 2)
    assert {int(d.SeriesNumber) for d in third}.isdisjoint({int(d.SeriesNumber) for d in second})


def test_a_reanalysis_says_on_every_page_and_in_the_sr_which_report_it_replaces():
    """break45a F5: the rerun PDF, its report image and the SR said nothing of the report they replace (only the
    "rerun 2" series prefix and a Predecessor Documents Sequence OHIF does not show). Every PDF page's banner, the
    report image (page 1) and the SR's first report-level comment now say which report, when and why."""
    from test_results_sr import report_comments

    study, results, context = make_study(slices=3, cine_phases=5)
    earlier = [{"sop_instance_uid": "1.2.3", "series_instance_uid": "1.2.4", "study_instance_uid":
                study.study_instance_uid, "series_number": 9100, "pdf_series_number": 9200,
                "report_time": "2026-12-07 04:11", "reason": "20 instance(s) received after that report"}]
    notice = ("Supersedes the report of 2026-12-07 04:11 (PDF series 9200, SR series 9100); analysed again: 20 "
              "instance(s) received after that report: its numbers are replaced by these")
    first = build_result_objects(study, results, context, secondary_capture=True)
    second = build_result_objects(study, results, context, supersedes=earlier, secondary_capture=True)
    sr = next(d for d in second if d.get("PredecessorDocumentsSequence"))  # the measurement report
    assert report_comments(sr)[0] == notice
    assert not any("Supersedes" in c for d in first if d.Modality == "SR" and d.get("ContentSequence")
                   for c in report_comments(d))
    pdfs = [next(d for d in objects if d.Modality == "DOC") for objects in (first, second)]
    if shutil.which("pdftotext"):
        pages = subprocess.run(["pdftotext", "-", "-"], input=pdfs[1].EncapsulatedDocument, capture_output=True,
                               check=True).stdout.decode().split("\f")
        pages = [" ".join(page.split()) for page in pages if page.strip()]
        assert len(pages) >= 2 and all("Supersedes the report of 2026-12-07 04:11 (PDF series 9200, SR series 9100)"
                                       in page for page in pages), pages
        before = subprocess.run(["pdftotext", "-", "-"], input=pdfs[0].EncapsulatedDocument, capture_output=True,
                                check=True).stdout.decode()
        assert "Supersedes" not in before
    # the report image is page 1 of the PDF: it carries the same banner line
    images = [next(d for d in objects if d.SOPClassUID == SecondaryCaptureImageStorage) for objects in (first, second)]
    assert images[0].PixelData != images[1].PixelData


def test_reanalysis_description_keeps_the_unverified_mark_and_whole_words():
    text = reanalysis_description("AI unverified ED cine segmentation, series 1234 with a longer source name "
                                  "(dicomnode)", 12)
    assert len(text) <= 64 and text.startswith("AI run 12 ED cine segmentation") \
        and text.endswith(" unverified"), text
    assert reanalysis_description("ED copy of CINE_SSFP_SAX for AI SEG", 2) == \
        "Run 2 ED copy of CINE_SSFP_SAX for AI SEG"
    # review48b #9: a single word longer than the room is cut, never the "unverified" tail
    text = reanalysis_description("AI unverified " + "X" * 70 + " (dicomnode)", 3)
    assert len(text) == 64 and text.startswith("AI run 3 XXX") and text.endswith(" unverified"), text


def test_ed_and_es_seg_and_copy_series_differ_within_what_ohif_shows():
    """break43d F8: "AI cine segmentation E..." for both; the phase now comes first."""
    study, results, context = make_study(slices=3, cine_phases=5)
    objects = build_result_objects(study, results, context)
    cine_segs = [str(o.SeriesDescription) for o in objects if o.Modality == "SEG" and "cine" in o.SeriesDescription]
    assert len(cine_segs) == 2 and len({text[:24] for text in cine_segs}) == 2, cine_segs
    copies = {str(o.SeriesDescription) for o in objects if o.Modality == "MR"}
    assert len(copies) == 2 and all(text.startswith(("ED copy of ", "ES copy of ")) for text in copies), copies


CYCLE = (codes.PARTIAL_CYCLE.value, "99DICOMNODE")
CINE_GROUPS = ("LV blood pool ED", "LV blood pool ES", "RV blood pool ED", "LV myocardium ED", "LV function (ED and ES)",
               "RV function (ED and ES)")


def _cine_report(phases: int, warnings=()):
    from test_results_sr import group_named
    study, results, context = make_study(slices=4, cine_phases=phases)
    results[1].summary["stack_warnings"] = list(warnings)
    results[1].summary["phases_acquired"] = phases  # as the cine pipeline reports it
    sr = build_sr(study.series[0].instances[0].dataset, results, segs_of(results, context), context, 9100)
    return {name: nums(group_named(sr, name)) for name in CINE_GROUPS}


def test_ed_and_es_of_a_partial_cycle_say_so_beside_the_volumes_and_ef():
    """break43d F2: an ED + ES export (2 of 30 phases) showed "Left ventricular end-diastolic volume: 300.76 ml" in
    OHIF with its caveat only in a comment OHIF never shows; the cine groups now begin with a NUM whose concept says
    ED / ES were chosen among the phases sent, its value their number."""
    for name, found in _cine_report(5, ["5 of 30 cardiac phases present"]).items():  # fewer than the cycle
        assert found[0][0] == CYCLE and found[0][1] == 5.0, name
    for name, found in _cine_report(4).items():  # too few for a volume curve
        assert found[0][0] == CYCLE and found[0][1] == 4.0, name
    for name, found in _cine_report(5).items():  # a whole cycle
        assert CYCLE not in {c for c, *_ in found}, name


def test_a_cine_only_report_says_the_lge_analysis_was_not_performed():
    """break43d F5: a cine-only study's SR said nothing about LGE (only page 2 of the PDF did)."""
    from dicomnode.analysis.pipeline import PipelineResult
    from dicomnode.types import Declined
    study, results, context = make_study(slices=4, cine_phases=4)
    no_lge = PipelineResult(name="lge", summary=None, declined=[Declined(None, "no LGE short-axis stack in the study")])
    sr = build_sr(study.series[0].instances[0].dataset, [no_lge, results[1]], segs_of(results, context), context,
                  9100)
    comments = [str(i.TextValue) for i in sr.ContentSequence[-1].ContentSequence if i.ValueType == "TEXT"]
    assert "LGE analysis not performed: no LGE short-axis stack in the study" in comments
    full = build_sr(study.series[0].instances[0].dataset, results, segs_of(results, context), context, 9100)
    assert not any("not performed" in str(i.get("TextValue", "")) for i in full.ContentSequence[-1].ContentSequence)
