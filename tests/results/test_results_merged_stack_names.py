"""A stack merged from one-slice series (Siemens: one series per slice) is named by the range of its SeriesNumbers
on every output, as the series left aside beside it is (break45a F1): the measured EMIDEC PSIR stack (series 21,
23, ..., 35) read "series 21" in the console, the SR, the PDF and summary.json next to "series 20-34" for its
magnitude twin, and a reader opening series 21 in the PACS found one slice of the eight measured."""
from __future__ import annotations

from pydicom.dataset import Dataset

from dicomnode.analysis.phase_text import merged_numbers, series_name, source_series_name
from dicomnode.cmr.types import AnalysisSeries, InstanceHeader, Recognition, series_number_range
from dicomnode.results.report import _methods_lines
from dicomnode.results.sr import build_sr
from dicomnode.summary_view import print_summary_table
from synthetic import make_study
from test_results_sr import walk

PSIR_NUMBERS = list(range(21, 36, 2))  # 21, 23, ..., 35: one PSIR slice per series


def _series(numbers: list[int], description: str = "LGE_PSIR_SAX") -> AnalysisSeries:
    instances = []
    for k, number in enumerate(numbers):
        dataset = Dataset()
        dataset.SeriesNumber = number
        instances.append(InstanceHeader(path=None, sop_instance_uid=f"2.25.{k + 1}", sop_class_uid="1.2",
                                        series_instance_uid=f"2.25.{100 + number}", dataset=dataset))
    return AnalysisSeries(key="k", series_instance_uids=[i.series_instance_uid for i in instances],
                          series_number=numbers[0], description=description, sequence=Recognition("lge", 1.0),
                          view=Recognition("sax", 1.0), lge_kind="psir", instances=instances, slices=len(numbers),
                          phases=1)


def test_the_range_is_the_one_way_a_merged_stack_is_named():
    merged, single = _series(PSIR_NUMBERS), _series([21])
    assert series_number_range([35, 21, None, 23]) == "21-35" and series_number_range([7]) == "7"
    assert series_number_range([None]) is None
    assert merged.series_number_text() == "21-35" and single.series_number_text() == "21"
    assert merged_numbers(merged) == {"series_numbers": PSIR_NUMBERS} and merged_numbers(single) == {}
    assert series_name(merged) == 'series 21-35 "LGE_PSIR_SAX"'
    summary = {"series_number": 21, "series_description": "LGE_PSIR_SAX", **merged_numbers(merged)}
    assert source_series_name(summary) == 'series 21-35 "LGE_PSIR_SAX"'
    assert source_series_name({"series_number": 21, "series_description": "LGE_PSIR_SAX"}) == \
        'series 21 "LGE_PSIR_SAX"'


def test_console_sr_and_pdf_name_the_measured_merged_stack_by_its_range(capsys):
    study, results, context = make_study(slices=3, cine_phases=5)
    lge = results[0]
    # as the LGE pipeline writes it for a merged stack
    lge.summary.update(series_number=21, series_description="LGE_PSIR_SAX", series_numbers=[21, 23, 25])
    named = 'series 21-25 "LGE_PSIR_SAX"'
    # PDF Methods
    assert any(f"({named})" in line for line in _methods_lines(results)), _methods_lines(results)
    # SR comment
    sr = build_sr(study.series[0].instances[0].dataset, results[:1], {}, context, 9100,
                  seg_missing={s.key: "not written here" for s in lge.segmentations})
    texts = [item.TextValue for _, item in walk(sr.ContentSequence) if item.ValueType == "TEXT"]
    assert f"LGE measured on {named}" in texts, texts
    assert not any("measured on series 21 " in text for text in texts)
    # console: the series list entry of the merged stack (summary.json series[].merged_series)
    entry = {"series_instance_uid": "2.25.121", "series_number": 21, "sequence": "lge", "view": "sax", "slices": 3,
             "phases": 1, "preferred": True,
             "merged_series": [{"series_instance_uid": f"2.25.1{n}", "series_number": n} for n in (21, 23, 25)]}
    print_summary_table({"studies": [{"study_instance_uid": "1.2.3", "series": [entry], "outputs": []}]})
    out = capsys.readouterr().out
    assert "series #21-25  lge" in out, out
