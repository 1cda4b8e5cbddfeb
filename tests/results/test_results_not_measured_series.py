"""Series recognised but never measured (T1 / T2 maps, MOLLI source images, perfusion) reach the PDF and the SR as
summary.json `declined` lists them, and the PDF's list never ends in "- none" after an entry (break47a #3)."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest

from dicomnode.analysis import run
from dicomnode.results import objects
from dicomnode.results.report import PDF_DECLINED_LINES, second_page
from dicomnode.types import Declined, PipelineResult
from synthetic import make_study
from test_results_report import _page_text
from test_results_sr import report_comments

T1_MAP = ('series 510-512 "T1 Map 短軸" (t1map, sax): T1 map recognised but not measured: this version measures LGE and '
          'cine only (no native or post-contrast T1 values, no ECV)')
MAP_UID = "1.2.826.0.1.3680043.8.498.510"
LEFT_ASIDE = "series 10 'LGE SAX' (magnitude of the same slices) not measured: PSIR preferred"


@pytest.fixture(scope="module")
def made():
    return make_study()


def _declined_block(figure) -> str:
    text = " ".join(_page_text(figure).split())
    return text[text.index("Declined / not analysed"):]


def test_the_pdf_and_the_sr_list_a_map_recognised_but_not_measured(made, monkeypatch):
    study, results, context = made
    given = {}
    real = objects.render_report

    def spy(*args, **kwargs):
        given.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(objects, "render_report", spy)
    built = objects.build_result_objects(study, results, context, not_measured=[Declined(MAP_UID, T1_MAP)])
    [sr] = [o for o in built if o.Modality == "SR" and "measurements" in str(o.SeriesDescription).lower()]
    assert T1_MAP in report_comments(sr)
    assert [d.reason for d in given["declined"]] == [T1_MAP]
    page = _declined_block(second_page(study.series[0].instances[0].dataset, results, context, given["declined"],
                                       {MAP_UID: 'series 510-512 "T1 Map 短軸"'}))
    assert f"- {T1_MAP}" in page and page.count("series 510-512") == 1  # its name not said twice
    assert "- none" not in page


def test_the_declined_list_says_none_only_when_it_is_empty(made):
    study, results, context = made
    header = study.series[0].instances[0].dataset
    aside = dataclasses.replace(results[0], summary={**results[0].summary, "series_left_aside": [LEFT_ASIDE]})
    only_aside = _declined_block(second_page(header, [aside, results[1]], context))
    assert f"- LGE: {LEFT_ASIDE}" in only_aside and "- none" not in only_aside
    assert "- none" in _declined_block(second_page(header, results, context))
    many = [Declined(None, f"reason number {k}") for k in range(PDF_DECLINED_LINES + 3)]
    cut = _declined_block(second_page(header, [aside, results[1]], context, many))
    # the aside line and 8 declines, then the count of the rest
    assert f"reason number {PDF_DECLINED_LINES - 3}" in cut and f"reason number {PDF_DECLINED_LINES - 2}" not in cut
    assert "- ... and 5 more (summary.json declined)" in cut


def test_the_analyser_hands_the_maps_to_the_result_objects_and_summary(monkeypatch):
    """run.Analyser.analyse added them to summary.json only, after the PDF and the SR had been built."""
    given = {}

    def build(study, results, context, **kwargs):
        given.update(kwargs)
        return []

    class Cine:
        def run(self, study, context):
            return PipelineResult(name="cine", summary={"lv_edv_ml": 100.0})

    monkeypatch.setattr(run, "build_result_objects", build)
    monkeypatch.setattr(run, "maps_not_measured", lambda series: [(MAP_UID, T1_MAP)])
    analyser = run.Analyser(SimpleNamespace(analysis=SimpleNamespace(secondary_capture=False)), runtime=object())
    analyser._pipelines["cine"] = Cine()
    study = SimpleNamespace(study_instance_uid="1.2.3", series=[object()], declined=[], excluded_instances=[],
                            summary_series=lambda: [])
    outcome = analyser.analyse(study, ["cine"])
    assert [(d.series_instance_uid, d.reason) for d in given["not_measured"]] == [(MAP_UID, T1_MAP)]
    assert outcome.summary["declined"] == [Declined(MAP_UID, T1_MAP).summary()]


def test_the_sr_names_the_phase_the_rv_volume_was_read_at_where_it_is_not_the_lvs(made):
    """break47a #2: RV EDV / ESV may come from a neighbour of the LV's ED / ES (cine.timing.rv_ed_phase); the group is
    drawn at the phase the RV volume was read at (f49b: the cine segmentation carries it) and its name says so, with
    the LV's phase beside it."""
    from dicomnode.results.sr import build_sr
    from synthetic import rv_at_own_phases
    from test_results_sr import groups, identifier_of, segs_of

    names = {}
    for moved in (False, True):
        study, results, context = make_study()
        ed = results[1].summary["ed_phase"]
        if moved:
            rv_at_own_phases(results, rv_ed=(ed + 1) % 5)
        sr = build_sr(study.series[0].instances[0].dataset, results[:2], segs_of(results, context), context, 9100)
        names[moved] = [identifier_of(g) for g in groups(sr) if identifier_of(g).startswith("RV blood pool")]
    assert names[False] and not any("not LV's" in name for name in names[False])
    ed_names = [n for n in names[True] if n.startswith("RV blood pool ED")]
    assert ed_names and all(n.startswith(f"RV blood pool ED (phase {(ed + 1) % 5 + 1} of 5, not LV's {ed + 1})")
                            for n in ed_names), ed_names
    assert not any("not LV's" in n for n in names[True] if n.startswith("RV blood pool ES"))
