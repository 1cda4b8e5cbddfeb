"""review49 findings on the suggestions' LGE checks: one presence decision with no absence stated for a focal scar
(#2), 'transmural' judged on the scarred part of a segment (#5), extent words only where they qualify the scar and
'moderate' refused only well under 10 % (#6), segment ranges and wall-motion walls (#8), no 'no scar' text where the
node states no absence (#9)."""
from __future__ import annotations

import pytest

from dicomnode.analysis.lge_metrics import FOCAL_SEGMENT_EXTENT_PERCENT, lge_presence
from dicomnode.analysis.report_text import (BLANK, contradicted, fitting_text, report_claims, segment_numbers,
                                            sentence_claims, unsupported_walls)
from test_report_text_aha import CASE3032, aha, facts_of
from test_suggestion_safety import NORMAL_LGE


# --- #2: a %LGE under the band with a focal scar in one segment states no absence ---------------------------------

def test_a_focal_scar_under_the_band_is_uncertain_and_absence_is_worded_as_a_measurement():
    """EMIDEC Case_P003 (experts 10 %) read 1.24 % in the cross-validation: 1.4 % of the LV is a quarter of a segment."""
    focal = aha({10: (150, "26-50")})  # 25 % of segment 10
    block = lge_presence(1.24, aha=focal)
    assert block["significant"] is None and block["kind"] == "uncertain" and block["uncertain"] is True
    assert block["text"].startswith("LGE presence uncertain: %LGE 1.24 % is under 1.5 %, but AHA segment 10 holds "
                                    "25 % scar")
    just_under = aha({10: (59, "1-25")})  # 9.8 %
    assert FOCAL_SEGMENT_EXTENT_PERCENT == 10.0 and lge_presence(1.24, aha=just_under)["significant"] is False
    absent = lge_presence(0.64, aha=just_under)
    assert absent["text"] == ("no significant LGE by the automatic count: %LGE 0.64 % is under 1.5 %, the level normal "
                              "hearts read in cross-validation, and no AHA segment holds 10 % scar or more; a small "
                              "focal scar can still be missed")
    assert "1 of those 99 read under 1.5 % (Case_P003, 1.24 % against the experts' 10 %)" in absent["basis"]
    # no AHA segments: a focal scar cannot be checked, no absence stated
    unassigned = lge_presence(0.64, aha={"applicable": False, "reason": "orientation"})
    assert unassigned["significant"] is None and unassigned["kind"] == "not_stated"
    # the focal heart: neither scar nor no-scar text offered
    summary = {"lge": {**NORMAL_LGE["lge"], "lge_percent": 1.24, "aha_segments": focal}}
    for text in ("No late gadolinium enhancement.", "Inferior subendocardial infarct."):
        assert "LGE presence uncertain" in contradicted(report_claims(text), facts_of(summary))


# --- #5: 'transmural' on the scarred part of a segment ------------------------------------------------------------

def test_transmural_is_judged_on_the_scarred_part_not_the_diluted_segment_mean():
    """A fully transmural infarct over a third of a segment's arc: segment mean 33 % (class 26-50), scarred part 95 %."""
    partial_arc = {"lge": {**CASE3032["lge"], "lge_percent": 9.0, "aha_segments": aha({10: (200, "26-50", 95.0)})}}
    sentence = "Inferior transmural infarct."
    assert facts_of(partial_arc).transmural is True
    assert fitting_text(sentence, facts_of(partial_arc))[0] == sentence
    shallow = {"lge": {**partial_arc["lge"], "aha_segments": aha({10: (200, "26-50", 40.0)})}}
    assert fitting_text(sentence, facts_of(shallow))[0] == f"Inferior {BLANK} infarct."
    # a summary without the scarred part's figure: not judged (nothing blanked)
    older = aha({10: (200, "26-50")})
    older["segments"][9].pop("transmurality_scarred_mean_percent")
    assert facts_of({"lge": {**partial_arc["lge"], "aha_segments": older}}).transmural is None


# --- #6: the extent word must qualify the scar --------------------------------------------------------------------

@pytest.mark.parametrize("text, extent", [
    ("Inferior infarct scar, moderate LV dysfunction.", None),
    ("Moderate mitral regurgitation and inferior infarct.", None),
    ("Moderate LV dysfunction with an inferior scar.", None),
    ("Ischaemic scar, moderate: 13% LGE, inferior territory.", "moderate"),
    ("Ischaemic scar, moderate (13% LGE).", "moderate"),
    ("Moderate inferior infarct.", "moderate"),
    ("Small anterior and inferior scar.", "small"),
    ("Myocardial infarction of moderate extent.", "moderate"),
])
def test_an_extent_word_is_read_only_where_it_qualifies_the_scar(text, extent):
    found = [value for point, value in sentence_claims(text) if point == "extent"]
    assert found == ([extent] if extent else [])


def test_moderate_dysfunction_beside_a_small_scar_is_not_refused():
    small = {"lge": {**CASE3032["lge"], "lge_percent": 4.5, "aha_segments": aha({4: (100, "1-25")})}}
    assert "LGE extent" not in contradicted(report_claims("Inferior infarct scar, moderate LV dysfunction."),
                                           facts_of(small))


# --- #8: segment ranges, German plural, wall motion ---------------------------------------------------------------

def test_segment_lists_read_ranges_and_the_german_plural():
    assert segment_numbers("1-4") == {1, 2, 3, 4} and segment_numbers("1 to 3 and 7") == {1, 2, 3, 7}
    assert segment_numbers("13 bis 15") == {13, 14, 15} and segment_numbers("4, 10") == {4, 10}
    assert unsupported_walls("LGE in segments 1-4.", frozenset({2, 3})) == []
    assert [w for _, _, w in unsupported_walls("LGE in Segmente 1-3.", frozenset({10}))] == ["Segmente 1-3"]


def test_a_wall_named_for_its_motion_is_not_held_to_the_scar():
    inferior = {"lge": {**CASE3032["lge"], "lge_percent": 12.0, "aha_segments": aha({4: (300, "76-100"),
                                                                                     10: (400, "76-100")})}}
    text = "Inferior transmural infarct with anterior wall hypokinesia."
    assert fitting_text(text, facts_of(inferior))[0] == text
    assert fitting_text("Septal scar and hypokinesia of the anterior wall.", facts_of(inferior))[0] == \
        f"{BLANK} scar and hypokinesia of the anterior wall."


# --- #9: no 'no scar' text where the node states no absence -------------------------------------------------------

@pytest.mark.parametrize("lge", [
    {**NORMAL_LGE["lge"], "lge_percent": 0.8, "large_scar_burden": None, "large_scar_burden_reason": "withheld: short"},
    {**NORMAL_LGE["lge"], "lge_percent": 0.8, "lge_presence": lge_presence(0.8, not_stated_reason="dark-blood LGE")},
])
def test_no_scar_texts_are_not_offered_where_the_node_states_no_absence(lge):
    facts = facts_of({"lge": lge})
    assert facts.significant_lge is None
    for text in ("No late gadolinium enhancement. Impression: Normal late enhancement study: no scar.",
                 "Impression: Structurally normal heart."):
        assert "LGE absence not stated" in contradicted(report_claims(text), facts)
    assert contradicted(report_claims("Inferior subendocardial infarct."), facts) == ()
