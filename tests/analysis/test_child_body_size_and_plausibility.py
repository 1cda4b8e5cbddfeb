"""A child of unknown age (no PatientAge, no birth date) with a child's body size is not judged against adult
ranges (break42b finding 6); the adult 'whole LV >= 40 mm' coverage rule is not applied to a child, cine or LGE
(finding 7); a ventricle beyond even severely dilated hearts gets a note to check the geometry (finding 10)."""
from __future__ import annotations

import numpy as np
import pytest

from dicomnode.analysis.cine_metrics import MIN_LV_EXTENT_MM, normal_range_flags, stack_coverage
from dicomnode.analysis.lge import CHILD_LGE_NOTE_START, lge_coverage, short_stack_reason
from dicomnode.analysis.plausibility import IMPLAUSIBLE_SIZE_START, MAX_PLAUSIBLE_EDV_ML, implausible_size_notes
from dicomnode.analysis.reference_age import (ADULT_RANGES_NOT_APPLIED, adult_ranges_apply, age_adjusted_flags,
                                              child_body_size, lv_extent_rule_withheld, patient_child_size,
                                              reference_ranges_summary)
from dicomnode.cmr.age import age_from_age_string
from dicomnode.cmr.study import PatientInfo
from tests.analysis import test_lge_withheld_and_coverage as lge_coverage_tests
from tests.analysis.test_lge_withheld_and_coverage import rings, run_with

pipeline, study = lge_coverage_tests.pipeline, lge_coverage_tests.study  # the LGE pipeline and EMIDEC study fixtures

CHILD_FLAGS = normal_range_flags({"lv_edv_ml": 59.6, "rv_edvi_ml_m2": 33.0}, "M")


def test_a_child_body_size_is_told_from_height_bsa_or_weight():
    assert child_body_size(1.15, 20.0, 0.80) == \
        "height 1.15 m, weight 20 kg, BSA 0.80 m²: height under 1.40 m, BSA under 1.1 m²"
    # no height: the weight decides, and the text names that criterion, not the others (break50b #5)
    assert child_body_size(None, 25.0) == "weight 25 kg: weight under 30 kg without a height"
    assert child_body_size(1.45, 32.0, 1.07) is not None  # BSA under 1.1 m²
    for adult in ((1.75, 80.0, 1.97), (1.52, 45.0, 1.38), (None, None, None), (None, 55.0, None),
                  (175.0, 80.0, None), (0.0, 0.0, None), ("tall", None, None)):
        assert child_body_size(*adult) is None, adult
    assert patient_child_size(PatientInfo(height_m=1.15, weight_kg=20.0)) == \
        "height 1.15 m, weight 20 kg, BSA 0.80 m²: height under 1.40 m, BSA under 1.1 m²"
    assert patient_child_size(PatientInfo(height_m=1.80, weight_kg=75000.0)) is None  # grams, read as 75 kg: adult
    assert patient_child_size(None) is None


def test_an_unknown_age_with_a_child_body_size_withholds_the_adult_range_flags():
    assert len(CHILD_FLAGS) == 2  # "LV EDV below normal range (59.6 mL; men 106-214 mL)" as in the finding
    size = child_body_size(1.15, 20.0, 0.80)
    flags = age_adjusted_flags(CHILD_FLAGS + ["a note"], None, size)
    assert flags[0].startswith(f"{ADULT_RANGES_NOT_APPLIED}: patient of unknown age") and size in flags[0]
    assert flags[1:] == ["a note"]
    summary = reference_ranges_summary(None, size)
    assert summary["adult_ranges_applied"] is False and summary["child_body_size"] == size
    assert summary["patient_age"] is None and "unknown age" in summary["note"]
    # a known age decides over the body size; an unknown age with an adult's size keeps the adult ranges
    assert adult_ranges_apply(age_from_age_string("045Y"), size)
    assert reference_ranges_summary(age_from_age_string("045Y"), size)["child_body_size"] is None
    assert age_adjusted_flags(CHILD_FLAGS, None, child_body_size(1.80, 80.0)) == CHILD_FLAGS


def test_the_adult_lv_length_rule_is_not_applied_to_a_child():
    spacing = (1.0, 1.0)
    labels = rings((5, 120, 120), spacing, [3, 6, 9, 12, 12])  # a whole small LV, apex first, 5 x 5 mm = 25 mm
    positions = np.arange(5) * 5.0
    adult = stack_coverage(labels, positions, True)
    assert not adult.complete and any(f"{MIN_LV_EXTENT_MM:.0f} mm long" in r for r in adult.reasons)
    why = lv_extent_rule_withheld(age_from_age_string("002Y"))
    assert why.startswith("patient 2 years (from PatientAge)")
    child = stack_coverage(labels, positions, True, extent_rule_withheld=why)
    assert child.complete and child.reasons == [] and any(why in n for n in child.notes)
    block = lge_coverage(labels, positions, True, extent_rule_withheld=why)
    assert block["complete"] is True and block["lv_shorter_than_whole"] is False and short_stack_reason(block) is None
    assert lge_coverage(labels, positions, True)["lv_shorter_than_whole"] is True
    assert lv_extent_rule_withheld(None) is None and lv_extent_rule_withheld(age_from_age_string("030Y")) is None
    assert "unknown age" in lv_extent_rule_withheld(None, child_body_size(0.88, 12.0))


def test_a_child_lge_stack_keeps_its_thirds_with_a_note_and_the_adult_burden_flag_withheld(pipeline, study,
                                                                                         monkeypatch):
    """break42b F7: a 2-year-old's whole LV spanning 20 mm was called incomplete, its volumes lower bounds and its
    large-burden flag withheld 'under the 40 mm of the shortest whole LV'. break50b #6: the large-burden cut-off
    (Chan 2014) is an adult HCM marker: withheld for a child whatever the coverage, with the adult-ranges note."""
    monkeypatch.setattr(study, "patient", PatientInfo(age=age_from_age_string("002Y")), raising=False)
    result = run_with(pipeline, study, monkeypatch, [0, 0, 22, 24, 0], scar_slices=(2, 3))
    summary = result.summary
    assert summary["coverage"]["lv_shorter_than_whole"] is False and summary["coverage"]["complete"] is True
    assert summary["large_scar_burden"] is None
    assert summary["large_scar_burden_reason"].startswith("withheld: adult reference ranges not applied: patient 2 "
                                                          "years (from PatientAge)")
    assert summary["aha_segments"]["applicable"] is True
    [note] = [w for w in summary["stack_warnings"] if w.startswith(CHILD_LGE_NOTE_START)]
    assert "2 years" in note and "adult" in note
    monkeypatch.setattr(study, "patient", PatientInfo(age=age_from_age_string("040Y")), raising=False)
    adult = run_with(pipeline, study, monkeypatch, [0, 0, 22, 24, 0], scar_slices=(2, 3)).summary
    assert adult["coverage"]["lv_shorter_than_whole"] is True and adult["large_scar_burden"] is None
    assert not any(w.startswith(CHILD_LGE_NOTE_START) for w in adult["stack_warnings"])
    # break50b #8: unusable age data are named on an LGE-only study too, as the cine's first flag
    unknown = PatientInfo(age_note="age unknown: PatientAge 000Y is 0, an archive's placeholder")
    monkeypatch.setattr(study, "patient", unknown, raising=False)
    warnings = run_with(pipeline, study, monkeypatch, [0, 0, 22, 24, 0], scar_slices=(2, 3)).summary["stack_warnings"]
    assert "age unknown: PatientAge 000Y is 0, an archive's placeholder; adult reference ranges applied, assuming an " \
        "adult" in warnings
    # review50 #6: a child's body size is judged with the report's one BSA formula (the cine's) in the LGE too
    monkeypatch.setattr(study, "patient", PatientInfo(height_m=1.42, weight_kg=30.5), raising=False)  # 1.097 / 1.116 m²
    for formula, child in (("mosteller", True), ("dubois", False)):
        monkeypatch.setattr(pipeline[0].config.analysis.cine, "bsa_formula", formula)
        warnings = run_with(pipeline, study, monkeypatch, [0, 0, 22, 24, 0], scar_slices=(2, 3)).summary["stack_warnings"]
        assert any(w.startswith(CHILD_LGE_NOTE_START) for w in warnings) is child, formula


@pytest.mark.parametrize("lv, rv, expected", [(676.3, 320.0, ["LV"]), (420.0, 610.0, ["RV"]), (374.0, 295.0, []),
                                              (None, None, []), (float("nan"), 900.0, ["RV"])])
def test_a_ventricle_beyond_severely_dilated_hearts_gets_a_geometry_note(lv, rv, expected):
    notes = implausible_size_notes(lv, rv)
    assert [n.split(":")[0].split()[-1] for n in notes] == expected
    for note in notes:
        assert note.startswith(IMPLAUSIBLE_SIZE_START) and "PixelSpacing" in note
        assert f"{MAX_PLAUSIBLE_EDV_ML:.0f} mL" in note
