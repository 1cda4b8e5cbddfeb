"""The maximal ED wall thickness and the adult-range decision on every output: SR (DCM 122445 derived as Maximum,
its AHA segment), PDF key numbers and reference column, console (break40b F13 and F5)."""
from __future__ import annotations

import numpy as np
import pytest

from dicomnode.analysis.aha import aha_segments
from dicomnode.analysis.reference_age import age_adjusted_flags, reference_ranges_summary
from dicomnode.analysis.wall_thickness import max_wall_thickness, wall_thickness_flag
from dicomnode.cmr.age import age_from_age_string
from dicomnode.results import codes
from dicomnode.results.report import ADULT_RANGE_ROWS, WALL_THICKNESS_ROW, first_page, key_number_table
from dicomnode.results.sr import build_sr
from dicomnode.summary_view import print_summary_table
from synthetic import SPACING, make_study, write
from test_results_report import _page_text, _with_summary
from test_results_sr import concept, groups, nums, report_comments, segs_of
from validators import assert_valid

#: a range flag as normal_range_flags words it, in ASCII (the SR's character set is another finding's matter)
RANGE_FLAG = "LV mass index above normal range (108.3 g/m2; men 49-85 g/m2, women 41-81 g/m2)"


def _with_wall(age_string: str | None):
    """make_study with the cine's max_wall_thickness measured on its ED label map, and flags as CinePipeline makes
    them for a patient of that age."""
    study, results, context = make_study()
    cine = results[1]
    labels = np.asarray(cine.segmentations[0].labelmap[0]).astype(np.int16)
    volume = cine.segmentations[0].volume
    aha = aha_segments(labels, SPACING, volume.positions[:, 2], "first", scar=False)
    wall = max_wall_thickness(labels, SPACING, aha.segment_map).summary()
    wall["max_mm"] = 16.25  # past the cut-off, so that the flag is raised (the synthetic heart is thin)
    slices = [{"slice_index": k, "ed": {"instance_number": 100 + k}} for k in range(len(labels))]
    age = age_from_age_string(age_string)
    flags = age_adjusted_flags([RANGE_FLAG, wall_thickness_flag(wall, slices, 8.4)], age)
    cine = _with_summary(cine, max_wall_thickness=wall, slices=slices, flags=flags,
                         reference_ranges=reference_ranges_summary(age))
    return study, [results[0], cine, *results[2:]], context


@pytest.fixture(scope="module")
def adult():
    return _with_wall("045Y")


@pytest.fixture(scope="module")
def child():
    return _with_wall("006M")


def test_the_sr_codes_the_maximal_wall_thickness_with_its_segment_and_passes_the_validators(adult, tmp_path_factory):
    study, results, context = adult
    header = study.series[0].instances[0].dataset
    sr = build_sr(header, results, segs_of(results, context), context, 9100)
    wall = results[1].summary["max_wall_thickness"]
    (group,) = [g for g in groups(sr) if any(c == ("122445", "DCM") for c, *_ in nums(g))]
    (value, unit, item) = [(v, u, i) for c, v, u, i in nums(group) if c == ("122445", "DCM")][0]
    assert value == pytest.approx(16.25) and unit == "mm"
    derivation = [m for m in item.ContentSequence if concept(m) == ("121401", "DCM")]
    assert derivation[0].ConceptCodeSequence[0].CodeValue == codes.MAXIMUM.value
    sites = {m.ConceptCodeSequence[0].CodeValue for m in item.ContentSequence if concept(m) == ("363698007", "SCT")}
    assert codes.AHA_SEGMENTS[wall["segment"]].value in sites and codes.LV_MYOCARDIUM.value in sites
    comments = [i.TextValue for i in group.ContentSequence if concept(i) == ("121106", "DCM")]
    assert any(c.startswith("cine: maximal LV wall thickness 16.3 mm at ED") for c in comments)
    assert_valid(write(sr, tmp_path_factory.mktemp("sr") / "sr.dcm"), "DicomSRValidator")


def test_the_pdf_gives_the_value_where_and_the_hcm_criterion(adult):
    study, results, context = adult
    rows = {q: (v, r) for q, v, r in key_number_table(results, (2.0, "mosteller"), "M")}
    value, reference = rows[WALL_THICKNESS_ROW]
    wall = results[1].summary["max_wall_thickness"]
    # the slice's place among the ED images in InstanceNumber order, as the ED display copies are numbered (break45a F7)
    slices = results[1].summary["slices"]
    numbers = sorted(e["ed"]["instance_number"] for e in slices)
    number = next(e["ed"]["instance_number"] for e in slices if e["slice_index"] == wall["slice_index"])
    assert value == f"16.3 mm (AHA {wall['segment']}, slice {numbers.index(number) + 1} of 6 in series order)"
    assert reference == "HCM if ≥ 15 mm (adults)"
    assert rows["LV mass (cine, ED) / index"][1] == "index 49-85 g/m²"  # an adult (man): his range shown
    outside = rows["Outside the reference range"][0]
    assert "maximal LV wall thickness 16.3 mm at ED" in outside and "LV mass index above normal range" in outside


def test_a_child_gets_no_adult_range_on_any_output(child, capsys, tmp_path_factory):
    study, results, context = child
    rows = key_number_table(results, (0.36, "mosteller"), "F")
    shown = {q: r for q, _, r in rows}
    for quantity in ADULT_RANGE_ROWS:
        assert shown[quantity] == "adult reference ranges not applied: patient 6 months"
    assert "16.3 mm" in dict((q, v) for q, v, _ in rows)[WALL_THICKNESS_ROW]  # the number stays
    page = _page_text(first_page(study.series[0].instances[0].dataset, results, context, (0.36, "mosteller")))
    assert "adult reference ranges not applied: patient 6 months" in page and "women 41-81" not in page
    print_summary_table({"studies": [{"study_instance_uid": "1.2.3", "series": [], "outputs": [],
                                      "cine": results[1].summary}]})
    out = capsys.readouterr().out
    assert "Cine check: adult reference ranges not applied: patient 6 months" in out
    assert "above normal range" not in out and "meets the HCM" not in out
    assert "Cine LV maximal ED wall thickness: 16.3 mm (AHA segment" in out
    sr = build_sr(study.series[0].instances[0].dataset, results, segs_of(results, context), context, 9100)
    comments = {i.TextValue for g in groups(sr) for i in g.ContentSequence if concept(i) == ("121106", "DCM")}
    comments |= set(report_comments(sr))  # notes on the whole cine: said once, at the report level
    assert any(c.startswith("cine: adult reference ranges not applied: patient 6 months") for c in comments)
    assert not any("above normal range" in c or "meets the HCM" in c for c in comments)


def test_the_console_prints_the_maximal_wall_thickness_and_its_flag(adult, capsys):
    _, results, _ = adult
    print_summary_table({"studies": [{"study_instance_uid": "1.2.3", "series": [], "outputs": [],
                                      "cine": results[1].summary}]})
    out = capsys.readouterr().out
    assert "Cine LV maximal ED wall thickness: 16.3 mm (AHA segment" in out
    assert "Cine check: maximal LV wall thickness 16.3 mm at ED" in out and "LV mass bias +8.4 g" in out
