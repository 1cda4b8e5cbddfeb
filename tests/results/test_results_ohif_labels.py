"""What OHIF v3 shows of the result series and of the SR (break48b #5, #7, #8): descriptions whose distinguishing
words come first (OHIF's series list cuts them after about 22 characters), Series Times in Series Number order, a
re-analysis named as the run it is and the run it replaces, the rejection note naming what it retires, report times
to the second, and the report-level notices (superseded report, series left unread) as NUMs OHIF draws."""
from __future__ import annotations

import datetime as dt
import re

import pytest

from dicomnode.results import codes
from dicomnode.results.objects import SEG_SERIES_BASE, SR_SERIES, build_result_objects, reanalysis_description
from dicomnode.results.provenance import ai_series_description, report_time
from dicomnode.results.rejection import SEG_SERIES_OFFSET, rejection_description
from dicomnode.results.report import NOT_ANALYSED_ROW, first_page
from dicomnode.results.sr import build_sr
from dicomnode.types import Declined
from synthetic import make_study
from test_results_ohif_reading import _cine_report
from test_results_report import _page_text
from test_results_sr import groups, nums, report_comments, segs_of

#: what OHIF 3.13's series list shows of a description (break48b shots: "AI LGE SEG S:23 (dicom…")
OHIF_SHOWN = 22
T1_MAP = ('series 21 "MOLLI_5(3)3_SAX_T1 MAP" (t1map, sax): T1 map recognised but not measured: this version measures '
          'LGE and cine only (no native or post-contrast T1 values, no ECV)')
PERFUSION = ('series 23 "PERFUSION_STRESS_SAX" (perfusion, sax): first-pass perfusion series (3 slice position(s) x 30 '
             'dynamics) recognised but not measured: this version measures LGE and cine only (no perfusion assessment)')
MOLLI = ('series 20 "MOLLI_5(3)3_SAX" (t1map, sax): T1-mapping source images (8 per slice position) recognised but not '
         'measured: this version measures LGE and cine only (no native or post-contrast T1 values, no ECV)')
EARLIER = {"sop_instance_uid": "1.2.3", "series_instance_uid": "1.2.4", "series_number": 9100,
           "pdf_series_number": 9200, "report_time": "2026-12-07 13:45:14"}
SUPERSEDES = (codes.SUPERSEDES_SR.value, codes.PRIVATE_SCHEME)
SUPERSEDES_N = (codes.SUPERSEDES_COUNT.value, codes.PRIVATE_SCHEME)
NOT_ANALYSED = (codes.NOT_ANALYSED.value, codes.PRIVATE_SCHEME)


@pytest.fixture(scope="module")
def two_runs():
    study, results, context = make_study(slices=3, cine_phases=5)
    earlier = [{**EARLIER, "study_instance_uid": study.study_instance_uid}]
    maps = [Declined("1.2.826.0.1.3680043.8.498.21", T1_MAP)]
    first = build_result_objects(study, results, context, not_measured=maps)
    second = build_result_objects(study, results, context, supersedes=earlier, not_measured=maps)
    return study, results, context, first, second


def _series(objects):
    """One dataset per result series, in Series Number order."""
    found = {}
    for dataset in objects:
        found.setdefault(str(dataset.SeriesInstanceUID), dataset)
    return sorted(found.values(), key=lambda d: int(d.SeriesNumber))


def test_unverified_comes_first_where_ohif_cuts_the_description(two_runs):
    """break48b #7: "AI LGE SEG S:23 (dicom…": the "- unverified" suffix never showed in OHIF's series list."""
    _, _, _, first, _ = two_runs
    own = [d for d in _series(first) if d.Modality != "MR"]
    assert own and all(str(d.SeriesDescription).startswith("AI unverified ") for d in own), \
        [d.SeriesDescription for d in own]
    assert all(str(d.SeriesDescription).endswith(" (dicomnode)") for d in own)
    lge = next(str(d.SeriesDescription) for d in own if d.Modality == "SEG")
    assert lge.startswith("AI unverified LGE S:") and " SEG" in lge


def test_a_flag_goes_before_the_unverified_mark_and_stays_first_after_a_rerun():
    """A SEG held for review only (its numbers withheld) says so first; a re-analysis keeps it first."""
    text = ai_series_description("LGE S:23 SEG", flag="REVIEW ONLY")
    assert text == "REVIEW ONLY AI unverified LGE S:23 SEG (dicomnode)"
    again = reanalysis_description(text, 2)
    assert again.startswith("REVIEW ONLY AI run 2 LGE S:23 SEG unverified") and len(again) <= 64, again
    with pytest.raises(ValueError):
        ai_series_description(" ")


def test_series_times_increase_with_the_series_numbers(two_runs):
    """break48b #7: SEG 9001 had a later Series Time than SEG 9010, the opposite of the numbers, and OHIF listed the
    SEGs 9005, 9009, 9001 …; now the times follow the numbers, in the first analysis and in a re-analysis."""
    _, _, context, first, second = two_runs
    for objects in (first, second):
        series = _series(objects)
        times = [f"{d.SeriesDate}{d.SeriesTime}" for d in series]
        assert times == sorted(times) and len(set(times)) == len(times), [(d.SeriesNumber, t)
                                                                          for d, t in zip(series, times)]
        assert min(times) == context.started_at.strftime("%Y%m%d%H%M%S.%f")


def test_a_rerun_says_which_run_it_is_and_which_it_replaces(two_runs):
    """break48b #8: "rerun 2" was the first re-run (a reader looked for "rerun 1") and did not say what it replaced."""
    _, _, _, first, second = two_runs
    for before, after in zip(_series(first), _series(second)):
        text = str(after.SeriesDescription)
        assert text.startswith(("AI run 2 ", "Run 2 ")), text
        if after.Modality != "MR":
            assert "unverified, replaces run 1" in text, text
            # what the series is still shows within OHIF's cut: the SEGs of a stack differ there
            what = str(before.SeriesDescription).removeprefix("AI unverified ").split(" ")[0]
            assert what in text[:OHIF_SHOWN + 4], (text, what)
    assert reanalysis_description("AI unverified LGE S:25 SEG (dicomnode)", 3) == \
        "AI run 3 LGE S:25 SEG unverified, replaces run 2 (dicomnode)"


def test_report_times_are_given_to_the_second():
    """break48b #8: two analyses 42 s apart both read "13:45"; the banner and the note could not tell them apart."""
    assert report_time("20261207", "134514.636738") == "2026-12-07 13:45:14"
    assert report_time("20261207", "1345") == "2026-12-07 13:45"
    assert report_time("2026120", "134514") is None


def test_the_rejection_note_description_says_what_it_retires_and_by_what():
    """break48b #8: "Rejected for Quality Rea…" read as bad images and named no series; the note's document title
    keeps IOCM's code (113001), its free-text description is the node's."""
    assert SEG_SERIES_OFFSET == SR_SERIES - SEG_SERIES_BASE
    text = rejection_description("2026-12-07 13:45:14", 9100, 9200, 2)
    assert text == "Superseded by AI run 2: series 9001-9200 of 2026-12-07 13:45:14"
    assert rejection_description("2026-12-07 13:45:14") == "Superseded: AI results of 2026-12-07 13:45:14"
    long = rejection_description("2026-12-07 13:45:14", 18100, 18200, 10)
    assert len(long) <= 64 and long.startswith("Superseded") and "18001-18200" in long and "13:45:14" in long


def test_the_sr_says_first_which_report_it_replaces_and_how_many_series_were_not_analysed(two_runs):
    """break48b #5 and #8: the supersede notice and the maps / perfusion left unread were comments OHIF never shows;
    each is now a NUM first in the first group with numbers of each analysis (LGE, cine), where OHIF draws it."""
    _, _, _, first, second = two_runs
    for objects, superseding in ((first, False), (second, True)):
        sr = next(d for d in objects if d.Modality == "SR" and "measurements" in str(d.SeriesDescription))
        with_numbers = [g for g in groups(sr) if nums(g)]
        leading = [[c for c, *_ in nums(g)][:2] for g in with_numbers]
        expected = [SUPERSEDES, NOT_ANALYSED] if superseding else [NOT_ANALYSED]
        assert leading[0][:len(expected)] == expected, leading[0]
        noticed = [g for g in with_numbers if NOT_ANALYSED in {c for c, *_ in nums(g)}]
        assert len(noticed) == 2  # the first group of the LGE and of the cine analysis, no other
        for group in noticed:
            values = {c: v for c, v, *_ in nums(group)}
            assert values[NOT_ANALYSED] == 1.0
            if superseding:
                assert values[SUPERSEDES] == 9100.0
        assert any(T1_MAP == c for c in report_comments(sr))


def test_a_rerun_not_every_destination_received_counts_what_it_replaces():
    study, results, context = make_study(slices=3, cine_phases=5)
    header = study.series[0].instances[0].dataset
    earlier = [{**EARLIER, "study_instance_uid": study.study_instance_uid, "partial": True}] * 2
    sr = build_sr(header, results, segs_of(results, context), context, 11100, supersedes=earlier)
    first = nums(next(g for g in groups(sr) if nums(g)))
    assert first[0][0] == SUPERSEDES_N and first[0][1] == 2.0
    assert SUPERSEDES not in {c for g in groups(sr) for c, *_ in nums(g)}


def test_the_partial_cycle_caveat_fits_ohifs_label_and_is_in_full_in_a_comment():
    """break48b #7: "ED/ES among the phases sent, not a whole cycle: phase…" ran off the viewport."""
    assert len(codes.PARTIAL_CYCLE.meaning) <= 40
    from test_results_ohif_reading import CYCLE
    assert all(found[0][0] == CYCLE for found in _cine_report(4).values())
    study, results, context = make_study(slices=4, cine_phases=4)
    results[1].summary["phases_acquired"] = 4
    sr = build_sr(study.series[0].instances[0].dataset, results, segs_of(results, context), context, 9100)
    assert any(c.startswith("cine: ED and ES chosen among the 4 phases sent, not a whole cardiac cycle")
               for c in report_comments(sr)), report_comments(sr)


def test_page_one_names_the_series_not_analysed_in_one_row():
    """break48b #5: the maps, MOLLI and perfusion were named on page 2 only."""
    study, results, context = make_study(slices=3, cine_phases=5)
    header = study.series[0].instances[0].dataset
    text = " ".join(_page_text(first_page(header, results, context, not_analysed=[MOLLI, T1_MAP, PERFUSION])).split())
    assert f"{NOT_ANALYSED_ROW} T1 source images S:20, T1 map S:21, perfusion S:23: read them yourself" in text, text
    assert NOT_ANALYSED_ROW not in " ".join(_page_text(first_page(header, results, context)).split())
    started: dt.datetime = context.started_at
    assert f"analysis {started:%Y-%m-%d %H:%M:%S}" in text  # to the second, as the supersede notice


def test_the_notices_of_a_rerun_never_push_a_numbers_caveat_out_of_what_ohif_shows():
    """review48b #4: SUPERSEDES and NOTANALYSED took the first cine group's two caveat lines, so on a partial stack
    with a BSA disagreement OHIF showed LV EDV and EDVi with no "lower bounds" nor "BSA uncertain". The caveats that
    qualify a group's numbers keep their place in every group; the notices go where OHIF still shows them."""
    from test_results_sr_display import PARTIAL, identifier_of

    study, results, context = make_study(slices=4, cine_phases=4)
    header = study.series[0].instances[0].dataset
    results[1].summary["coverage"] = dict(PARTIAL)
    results[1].summary["bsa_other_m2"] = 1.657
    earlier = [{**EARLIER, "study_instance_uid": study.study_instance_uid}]
    sr = build_sr(header, results, segs_of(results, context), context, 10100, supersedes=earlier,
                  not_measured=[T1_MAP, PERFUSION])
    qualifying = {(c.value, codes.PRIVATE_SCHEME) for c in (codes.LOWER_BOUNDS_LV_EXTENT, codes.PARTIAL_STACK_LV_EXTENT,
                                                            codes.PARTIAL_STACK_ESV_LOWER, codes.BSA_DISAGREEMENT)}
    cine = [g for g in groups(sr) if nums(g) and re.search(r"\((lower bound|partial stack)", identifier_of(g))]
    assert len(cine) == 7, [identifier_of(g) for g in cine]  # LV / RV blood pool ED, ES, LV myocardium, function
    first = cine[0]
    assert identifier_of(first).startswith("LV blood pool ED")  # the group OHIF opens the cine part on
    assert {c for c, *_ in nums(first)[:5]} >= {(codes.LOWER_BOUNDS_LV_EXTENT.value, codes.PRIVATE_SCHEME),
                                                 (codes.BSA_DISAGREEMENT.value, codes.PRIVATE_SCHEME)}, nums(first)
    for group in cine:  # every caveat a group carries that qualifies its numbers is among the five OHIF shows
        concepts = [c for c, *_ in nums(group)]
        assert qualifying & set(concepts) <= set(concepts[:5]), (identifier_of(group), concepts)
        assert len([c for c in concepts[:5] if c not in qualifying | {SUPERSEDES, NOT_ANALYSED}]) >= 3 \
            or len(concepts) < 5  # and the group's own numbers still shown
    shown = [c for g in groups(sr) if nums(g) for c in [c for c, *_ in nums(g)][:5]]
    assert SUPERSEDES in shown and NOT_ANALYSED in shown  # the notices still reach OHIF, in a group with room
