"""A child's report-text suggestions (break51c #1): the adult range flags and the large-burden flag are withheld for a
child, and a withheld flag is not a "normal" one. Sizes are held to the measured indexed EDV where no normal heart
reaches it, a burden to the measured %LGE where it lies under the cut-off by more than the model's error; what the
node does not judge for a child (size, wall thickness, large burden) is not offered as agreeing."""
from __future__ import annotations

import pytest

from dicomnode.analysis.lge import child_burden_reason, child_lge_note
from dicomnode.analysis.reference_age import adult_ranges_note
from dicomnode.analysis.report_text import (EDVI_BEYOND_ANY_NORMAL, contradicted, fitting_text, node_facts,
                                            report_claims)
from dicomnode.analysis.suggestions import (LgeFindings, SuggestionsPipeline, contradicted_points, node_lge_findings,
                                            stored_lge_findings)
from dicomnode.cmr.age import age_from_age_string
from dicomnode.config import Config
from dicomnode.inference.runtime import Runtime
from test_suggestion_safety import context_for

CHILD_NOTE = adult_ranges_note(age_from_age_string("010Y"))
#: study B of break51c as the node wrote it: a 10-year-old (BSA 1.11 m²), LV EDVi 168 mL/m², LVEF 31 %, maximal wall
#: 11 mm, every adult range flag withheld; %LGE 14.2 % on a stack missing the apex, the large-burden flag withheld
CHILD_CINE = {"lv_edv_ml": 186.38, "lv_esv_ml": 128.43, "lv_ef_percent": 31.09, "rv_edv_ml": 95.34,
              "rv_esv_ml": 30.51, "rv_ef_percent": 68.01, "bsa_m2": 1.108,
              "indexed": {"lv_edvi_ml_m2": 168.28, "rv_edvi_ml_m2": 86.09},
              "flags": [CHILD_NOTE], "coverage": {"complete": True}, "max_wall_thickness": {"max_mm": 10.98},
              "reference_ranges": {"adult_ranges_applied": False, "patient_age": "10 years", "note": CHILD_NOTE}}
CHILD_LGE = {"determined": True, "lge_percent": 14.21, "myocardium_volume_ml": 166.74, "scar_volume_ml": 23.69,
             "mvo_volume_ml": 0.42, "large_scar_burden": None, "large_scar_burden_reason": child_burden_reason(CHILD_NOTE),
             "lge_percent_validation": {"mae": 6.22, "near_cutoff": None},
             "mvo_validation": {"presence_stated": False},
             "lge_presence": {"significant": True, "kind": "present", "uncertain": False},
             "coverage": {"complete": False}, "aha_segments": {"applicable": False},
             "stack_warnings": [child_lge_note("patient 10 years (from PatientBirthDate and StudyDate), whose LV is "
                                               "shorter than an adult's; the other coverage checks still apply")]}
CHILD = {"cine": CHILD_CINE, "lge": CHILD_LGE}
#: the same numbers of an adult: no range flag (a 168 mL/m² LV would be flagged; here the flags are the point)
ADULT_CINE = {**CHILD_CINE, "flags": [], "reference_ranges": {"adult_ranges_applied": True}}


def facts_of(summary: dict, cutoff: float = 15.0):
    findings = node_lge_findings(summary.get("lge"), cutoff)
    return node_facts(summary, *((findings.significant_lge, findings.large_burden, findings.mvo,
                                  findings.presence_uncertain, findings.large_excluded) if findings else ()))


def test_a_child_s_withheld_range_flags_are_unknown_and_a_size_beyond_any_normal_is_dilated():
    facts = facts_of(CHILD)
    assert (facts.lv_dilated, facts.rv_dilated, facts.hypertrophy) == (True, None, None)
    assert EDVI_BEYOND_ANY_NORMAL["lv_edvi_ml_m2"] < 168.28
    # the tester's suggestion acdc-patient054 was offered; the correct text was refused
    assert contradicted(report_claims("Non-dilated LV, severely reduced global systolic function."), facts) == (
        "LV size",)
    assert contradicted(report_claims("Dilated LV, severely reduced global systolic function."), facts) == ()
    # an adult's flags are read as before: no flag on a complete stack is "not dilated", 11 mm is no hypertrophy
    adult = facts_of({"cine": ADULT_CINE, "lge": CHILD_LGE})
    assert (adult.rv_dilated, adult.hypertrophy) == (False, False)
    assert adult.lv_dilated is True  # 168 mL/m² is beyond any normal: a missing flag does not make it normal
    # a child whose LV lies under that: its size is not judged, neither normal nor dilated
    small = facts_of({"cine": {**CHILD_CINE, "indexed": {"lv_edvi_ml_m2": 95.0, "rv_edvi_ml_m2": 86.09}}})
    assert (small.lv_dilated, small.rv_dilated, small.hypertrophy) == (None, None, None)
    # a wall of 15 mm is hypertrophy at any age
    thick = facts_of({"cine": {**CHILD_CINE, "max_wall_thickness": {"max_mm": 16.0}}})
    assert thick.hypertrophy is True


def test_what_the_node_does_not_judge_for_a_child_is_taken_out_of_the_offered_text():
    facts = facts_of({"cine": {**CHILD_CINE, "indexed": {"lv_edvi_ml_m2": 95.0, "rv_edvi_ml_m2": 86.09}}})
    text = ("Findings: LVEDV 180 mL (95 mL/m2); LVEF 30% (severely reduced). Non-dilated LV, severely reduced global "
            "systolic function. Normal LV wall thickness (about 9 mm at the thickest level). Right ventricle: EDV "
            "90 mL (80 mL/m2), EF 60%, normal size. The right ventricle is not dilated with normal function. "
            "Impression: Increased LV wall thickness and mass: HCM pattern.")
    fitted, removed = fitting_text(text, facts)
    assert fitted == ("Findings: LVEDV 180 mL (95 mL/m2); LVEF 30% (severely reduced). Severely reduced global "
                      "systolic function. Right ventricle: EDV 90 mL (80 mL/m2), EF 60%.")
    assert not {point for point, _ in report_claims(fitted)} & {"lv_size", "rv_size", "hypertrophy"}
    assert {r.split(" statements (adult reference ranges not applied")[0] for r in removed} == {
        "LV size", "RV size", "wall thickness"}, removed
    # an adult's text is left as it was
    assert fitting_text(text, facts_of({"cine": ADULT_CINE}))[0] == text


@pytest.mark.parametrize("text", ["Large scar burden (at least 15% of LV mass).", "Scar burden of 15% or more.",
                                  "Infarct size >= 20 % of the LV myocardium."])
def test_a_large_burden_stated_as_a_threshold_is_a_large_burden_claim(text):
    assert ("extent", "large") in report_claims(text)


@pytest.mark.parametrize("text", ["Scar burden approximately 14% of left ventricular myocardial volume.",
                                  "Scar burden of 5% or more."])
def test_a_burden_value_or_a_small_threshold_is_no_large_burden_claim(text):
    assert ("extent", "large") not in report_claims(text)


def test_a_withheld_large_burden_flag_is_not_restated_by_a_suggestion():
    facts = facts_of(CHILD)
    assert facts.large_burden is None and facts.burden_withheld
    # break51c: offered to the child at 14.2 % (B) and 22.5 % (D), whose flag was withheld on purpose
    for text in ("Impression: Moderate subendocardial to mid-wall myocardial infarction (14% of LV myocardium), "
                 "inferior. Large scar burden (at least 15% of LV mass).",
                 "Impression: Myocardial infarction, inferior. Scar burden of 15% or more."):
        fitted, removed = fitting_text(text, facts)
        assert ("extent", "large") not in report_claims(fitted) and fitted.startswith("Impression: ")
        assert any(r.startswith("large-burden statements (this study's large-burden flag is not given: withheld: "
                                "adult reference ranges not applied") for r in removed)
    fitted, _ = fitting_text("Large transmural myocardial infarction.", facts)
    assert fitted == "___ transmural myocardial infarction."
    # an adult's stated flag keeps its text
    adult = facts_of({"lge": {**CHILD_LGE, "large_scar_burden": True, "large_scar_burden_reason": None}})
    assert fitting_text("Scar burden of 15% or more.", adult) == ("Scar burden of 15% or more.", [])
    assert contradicted(report_claims("Scar burden of 15% or more."),
                        facts_of({"lge": {**CHILD_LGE, "large_scar_burden": False,
                                          "large_scar_burden_reason": None}})) == ("LGE extent",)


def test_a_large_burden_is_held_to_the_child_s_measured_lge_percent():
    """%LGE 6 % on a stack covering the LV: a "large burden" contradicts the measurement for a child as for an
    adult (the adult's flag says No), though the child's flag is withheld."""
    low = {**CHILD_LGE, "lge_percent": 6.0, "coverage": {"complete": True}}
    findings = node_lge_findings(low, 15.0)
    assert findings == LgeFindings(True, None, None, large_excluded=True)
    assert contradicted(report_claims("Large scar burden (at least 15% of LV mass)."), facts_of({"lge": low})) == (
        "LGE extent",)
    assert contradicted_points(findings, stored_lge_findings({"lge_percent": 30.0, "large_scar_burden": 1.0})) == (
        "large burden",)
    # not where the measurement cannot settle it: within the model's error of the cut-off, on a stack missing part of
    # the LV, or with another warning on the input (the child's reason hides the flag's other reasons)
    for lge in ({**low, "lge_percent": 9.0}, {**low, "coverage": {"complete": False}},
                {**low, "stack_warnings": [*low["stack_warnings"], "small field of view: 150 mm"]}):
        assert node_lge_findings(lge, 15.0).large_excluded is False
        assert contradicted(report_claims("Large scar burden."), facts_of({"lge": lge})) == ()


def test_the_child_s_suggestions_follow_the_same_facts_end_to_end(tmp_path):
    """The shipped bank's suggestions for study B: what the SR, PDF and console show (they render these)."""
    config = Config()
    config.node.storage_dir = tmp_path
    pipeline = SuggestionsPipeline(config, Runtime(config.inference))
    assert pipeline.wait_until_indexed(120)
    result = pipeline.run(None, context_for(config, CHILD))
    assert result.summary, result.measurements
    excluded = result.measurements["contradicting_reports_excluded"]
    assert excluded.get("LV size"), excluded  # "Non-dilated LV" at 168 mL/m²
    for suggestion in result.summary:
        claims = report_claims(suggestion["text"])
        assert ("lv_size", "normal") not in claims, suggestion
        assert not {point for point, _ in claims} & {"rv_size", "hypertrophy"}, suggestion
        assert ("extent", "large") not in claims, suggestion
    for impression in result.measurements.get("impressions", {}).values():
        assert ("extent", "large") not in report_claims(impression)
