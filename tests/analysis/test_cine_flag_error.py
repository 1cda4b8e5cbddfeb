"""Cine flags that compare a measurement with a cut-off or a reference range do not assert more than the model can
know: within the model's known error of the limit (its card's cross-validated bias and MAE) they say "confirm by
reading" (dicomnode/analysis/model_error.py, cine_metrics.range_judgements / stroke_volume_mismatch), and
summary `cine.flag_validation` carries the numbers used."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from dicomnode.analysis.cine import function_validation_from_card
from dicomnode.analysis.cine_metrics import (SV_DIFFERENCE, is_near_flag, is_range_flag, known_errors, measure_cine,
                                             normal_range_flags, range_judgements, stroke_volume_mismatch_note)
from dicomnode.analysis.lge import lge_percent_validation
from dicomnode.analysis.model_error import beyond_known_error
from test_cine_metrics import synthetic_cine

ROOT = Path(__file__).resolve().parents[2]
#: the shipped card's cross-validated RVEF agreement (engines/models/cine_unet.json, acdc_cv_rv_ef_percent)
RVEF_CV = {"n": 100, "mae": 9.323, "mean_error": -4.989, "sd_error": 11.247, "card_metric": "acdc_cv_rv_ef_percent",
           "data": "ACDC cross-validation", "source": "engines/cine/EVALUATION.md"}
VALIDATION = {"rv_ef_percent": RVEF_CV,
              "rv_edv_ml": {"n": 100, "mae": 10.677, "mean_error": -6.407, "sd_error": 13.979},
              "lv_mass_g": {"n": 100, "mae": 11.758, "mean_error": 10.712, "sd_error": 11.038},
              SV_DIFFERENCE: {"n": 100, "mae": 16.466, "mean_error": 7.926, "sd_error": 20.962}}


# ---------------------------------------------------------------- the pure rule
def test_a_value_a_few_points_under_the_cutoff_with_a_negative_bias_is_no_evidence():
    # RVEF 42 % (<= 45 %: dysfunction by Gulati) from a model reading RVEF 5 points low: a reader expects ~47 %
    assert not beyond_known_error(42.0, 45.0, "below", mae=9.3, bias=-5.0)
    # 25 % (expected 30 %, 15 points under the cut-off, more than the MAE): asserted
    assert beyond_known_error(25.0, 45.0, "below", mae=9.3, bias=-5.0)
    # the boundary: expected exactly one MAE under the cut-off is still within the error
    assert not beyond_known_error(30.0, 45.0, "below", mae=10.0, bias=-5.0)
    assert beyond_known_error(29.9, 45.0, "below", mae=10.0, bias=-5.0)
    # the bias works both ways: a model reading LV mass 10 g high needs a value a bias further above the limit
    assert not beyond_known_error(98.0, 85.0, "above", mae=6.0, bias=8.0)
    assert beyond_known_error(100.0, 85.0, "above", mae=6.0, bias=8.0)


def test_without_a_bias_the_rule_is_the_lge_rule_and_never_asserts_the_normal_side():
    for value in np.arange(0.0, 30.0, 0.25):  # the flag given on %LGE >= 15: "large" above, "not large" below
        side = "above" if value >= 15.0 else "below"
        assert (not beyond_known_error(value, 15.0, side, 5.8)) == (abs(value - 15.0) <= 5.8)
    metrics = {"myops_lge_percent": {"n": 33, "mae": 5.8, "bias": 0.81, "sd": 7.4}}
    assert lge_percent_validation(metrics, "native", 9.1, False, 15.0)["near_cutoff"] is False
    assert lge_percent_validation(metrics, "native", 9.3, False, 15.0)["near_cutoff"] is True
    assert lge_percent_validation(metrics, "native", 20.8, True, 15.0)["near_cutoff"] is True
    assert lge_percent_validation(metrics, "native", 20.9, True, 15.0)["near_cutoff"] is False
    # mae >= |bias| holds for any set of errors, so a value on the normal side is never beyond the limit
    rng = np.random.default_rng(7)
    for _ in range(200):
        errors = rng.normal(rng.uniform(-10, 10), rng.uniform(0.1, 10), size=20)
        mae, bias = float(np.abs(errors).mean()), float(errors.mean())
        assert not beyond_known_error(45.5, 45.0, "below", mae, bias)
        assert not beyond_known_error(44.5, 45.0, "above", mae, bias)


@pytest.mark.parametrize("kwargs, what", [({"mae": -1.0}, "mae must not be negative"),
                                          ({"mae": math.nan}, "mae must be a finite number"),
                                          ({"mae": 1.0, "bias": math.inf}, "bias must be a finite number"),
                                          ({"mae": 1.0, "side": "over"}, "side must be")])
def test_bad_error_input_is_refused_by_name(kwargs, what):
    arguments = {"value": 40.0, "limit": 45.0, "side": "below", **kwargs}
    with pytest.raises(ValueError, match=what):
        beyond_known_error(**arguments)


# ---------------------------------------------------------------- the flags
def test_a_clearly_low_rvef_still_flags_plainly_and_one_within_the_error_asks_for_reading():
    errors = known_errors(VALIDATION)
    [plain] = normal_range_flags({"rv_ef_percent": 25.0}, None, errors)
    assert plain == "RVEF below the RV systolic dysfunction cut-off (25.0 %; dysfunction at ≤ 45 %, Gulati 2013)"
    assert is_range_flag(plain) and not is_near_flag(plain)
    [near] = normal_range_flags({"rv_ef_percent": 42.0}, None, errors)
    assert near.startswith("RVEF below the RV systolic dysfunction cut-off, within the model's known error: confirm "
                           "by reading (42.0 %; dysfunction at ≤ 45 %, Gulati 2013; this model's RVEF vs expert "
                           "readers: bias -5.0, mean abs. error 9.3 points (ACDC cross-validation, 100 patients))")
    assert is_range_flag(near) and is_near_flag(near)
    # without a known error (label maps of no particular model) the flag is as before; normal values stay silent
    assert normal_range_flags({"rv_ef_percent": 42.0}, None)[0].startswith("RVEF below the RV systolic")
    assert normal_range_flags({"rv_ef_percent": 46.0}, None, errors) == []


def test_indexed_values_take_the_card_error_over_the_patient_bsa():
    errors = known_errors(VALIDATION, bsa_m2=2.0)
    assert errors["rv_edvi_ml_m2"]["mae"] == pytest.approx(10.677 / 2.0)
    assert errors["rv_edvi_ml_m2"]["bias"] == pytest.approx(-6.407 / 2.0)
    assert errors["lv_mass_index_g_m2"]["per_bsa_m2"] == 2.0
    assert "rv_edvi_ml_m2" not in known_errors(VALIDATION)  # no BSA, no indexed error
    # LV mass index, men 49-85 g/m²; the model reads mass 10.7 g (5.4 g/m²) high, MAE 5.9 g/m²
    [(key, text, near)] = range_judgements({"lv_mass_index_g_m2": 93.0}, "M", errors)
    assert (key, near) == ("lv_mass_index_g_m2", True)
    assert text.startswith("LV mass index above the upper limit of normal, within the model's known error: confirm by "
                           "reading (93.0 g/m²; men 49–85 g/m²; this model's LV mass index vs expert readers: bias "
                           "+5.4, mean abs. error 5.9 g/m² at BSA 2.00 m²")
    assert range_judgements({"lv_mass_index_g_m2": 97.0}, "M", errors)[0][2] is False
    # sex unknown: asserted only beyond both sexes' limits it is flagged against by more than the error
    assert range_judgements({"rv_edvi_ml_m2": 116.0}, None, errors)[0][2] is True  # 119.2 expected: under 114.4 + 5.3
    assert range_judgements({"rv_edvi_ml_m2": 125.0}, None, errors)[0][2] is False


def test_the_stroke_volume_check_takes_the_model_error_of_the_difference():
    error = known_errors(VALIDATION)[SV_DIFFERENCE]
    near = stroke_volume_mismatch_note(80.0, 40.0, error=error)  # 40 mL apart, 32 after the bias: within 16.5
    assert near.startswith("LV and RV stroke volumes disagree only within the model's known error of the mismatch "
                           "threshold: confirm by reading (LV SV 80.0 mL, RV SV 40.0 mL, 40.0 mL apart;")
    assert "bias +7.9, mean abs. error 16.5 mL" in near and "Check the RV" not in near
    plain = stroke_volume_mismatch_note(100.0, 40.0, error=error)  # 60 apart, 52 after the bias
    assert plain.startswith("LV and RV stroke volumes disagree: LV SV 100.0 mL") and "Check the RV" in plain
    assert stroke_volume_mismatch_note(80.0, 40.0).startswith("LV and RV stroke volumes disagree: ")  # no error known


def test_measure_cine_words_the_flags_and_reports_the_numbers_used():
    # LV 150 -> 50 mL, RV 160 -> 90 mL: RVEF 43.8 %, within the model's error of the 45 % cut-off
    maps = synthetic_cine([120, 150, 50, 90], [150, 160, 90, 140], myo_voxels=100, shape=(4, 30, 30))
    result = measure_cine(maps, 1.0, height_m=1.80, weight_kg=80.0, sex="M", function_validation=VALIDATION)
    assert any(f.startswith("RVEF below the RV systolic dysfunction cut-off, within the model's known error")
               for f in result.flags), result.flags
    assert not any(f.startswith("RVEF below the RV systolic dysfunction cut-off (") for f in result.flags)
    block = result.flag_validation
    assert block["rv_ef_percent"] == {"data": "ACDC cross-validation", "patients": 100,
                                      "card_metric": "acdc_cv_rv_ef_percent", "source": "engines/cine/EVALUATION.md",
                                      "unit": "%", "mae": 9.32, "bias": -4.99, "sd": pytest.approx(11.25, abs=0.01),
                                      "near_cutoff": True}
    assert block["rv_edvi_ml_m2"]["near_cutoff"] is None  # judged, not flagged
    assert block["rv_edvi_ml_m2"]["per_bsa_m2"] == pytest.approx(result.bsa_m2, abs=1e-3)
    assert "lv_ef_percent" not in block  # no known error for LVEF in VALIDATION: not judged with one
    assert json.loads(json.dumps(block, allow_nan=False)) == block
    # a clearly low RVEF (160 -> 130 mL: 18.8 %) is asserted, and the block says so
    low = measure_cine(synthetic_cine([120, 150, 50, 90], [150, 160, 130, 140], myo_voxels=100, shape=(4, 30, 30)),
                       1.0, sex="M", function_validation=VALIDATION)
    assert any(f.startswith("RVEF below the RV systolic dysfunction cut-off (18.8 %") for f in low.flags)
    assert low.flag_validation["rv_ef_percent"]["near_cutoff"] is False
    assert measure_cine(maps, 1.0, sex="M").flag_validation == {}  # no model: no error, flags as before


# ---------------------------------------------------------------- the shipped card and the ACDC normals
def _cv_subjects() -> list[dict]:
    return json.loads((ROOT / "engines/cine/evaluation.json").read_text())["cv"]["subjects"]


def test_the_card_carries_the_cross_validated_error_of_every_flagged_quantity():
    from engines.cine.evaluate import cv_card_metrics, stale_cv_mass, sv_difference_agreement

    card = json.loads((ROOT / "engines/models/cine_unet.json").read_text())
    evaluation = json.loads((ROOT / "engines/cine/evaluation.json").read_text())
    validation = function_validation_from_card(card)
    agreements = {**evaluation["cv"]["agreement"], SV_DIFFERENCE: sv_difference_agreement(evaluation["cv"]["subjects"])}
    # the card's epicardial offset (engines/cine/EPICARDIUM.md) moves only the wall: the CV's volumes and EFs stay
    # its own, its LV mass (measured without the offset) is replaced by the held-out split's, measured with it
    stale = stale_cv_mass({"model": card, "cv": evaluation["cv"]})
    assert stale == bool(card["output"].get("epicardial_logit_offset"))
    for quantity in ("lv_edv_ml", "lv_esv_ml", "lv_ef_percent", "lv_mass_g", "rv_edv_ml", "rv_ef_percent", SV_DIFFERENCE):
        found = validation[quantity]
        if stale and quantity == "lv_mass_g":
            assert found["card_metric"] == "acdc_lv_mass_g" and found["n"] == 20
            assert found["mean_error"] == pytest.approx(card["metrics"]["acdc_lv_mass_g"]["mean_error"])
            continue
        assert found["card_metric"] == f"acdc_cv_{quantity}" and found["n"] == 100, quantity
        for key in ("mae", "mean_error", "sd_error"):
            assert found[key] == pytest.approx(agreements[quantity][key], abs=5e-4), (quantity, key)
    # the card holds what engines/cine/evaluate.py --update-card writes from these cross-validation results
    written = cv_card_metrics(evaluation["cv"], skip=("lv_mass_g",) if stale else ())
    assert {key: card["metrics"][key] for key in written} == written
    assert not stale or "acdc_cv_lv_mass_g" not in card["metrics"]
    # a card without cross-validation falls back to its held-out split, and without either gives nothing
    held_out = function_validation_from_card({"metrics": {"acdc_lv_ef_percent": {"n": 20, "mae": 4.2}}})
    assert held_out["lv_ef_percent"]["card_metric"] == "acdc_lv_ef_percent"
    assert function_validation_from_card({"metrics": {}}) == {} == function_validation_from_card(None)


def test_acdc_normals_no_longer_get_an_asserted_rv_dysfunction_within_the_model_error():
    """The 20 ACDC NOR patients (training numbering 061-080) as the cross-validation folds that held them out
    segmented them: the RVEF flag fired on 8 (the experts' contours: 1); with the card's error, 7 of them read
    "confirm by reading" and the one left asserted lies beyond the error (patient078: 29.5 %, the experts 55.8 %)."""
    card = json.loads((ROOT / "engines/models/cine_unet.json").read_text())
    errors = known_errors(function_validation_from_card(card))
    normals = [s for s in _cv_subjects() if 61 <= int(s["subject"].removeprefix("patient")) <= 80]
    assert len(normals) == 20
    before = [s for s in normals if normal_range_flags({"rv_ef_percent": s["predicted"]["rv_ef_percent"]}, None)]
    after = {s["subject"]: range_judgements({"rv_ef_percent": s["predicted"]["rv_ef_percent"]}, None, errors)
             for s in normals}
    asserted = [subject for subject, judged in after.items() if judged and judged[0][2] is False]
    near = [subject for subject, judged in after.items() if judged and judged[0][2] is True]
    assert len(before) == 8 and asserted == ["patient078"] and len(near) == 7
    error = errors["rv_ef_percent"]
    for s in normals:
        value = s["predicted"]["rv_ef_percent"]
        if s["subject"] in near:
            assert value - error["bias"] >= 45.0 - error["mae"]


def test_lower_bounds_are_not_judged_against_the_lower_limit_of_normal():
    """break40b F3: ACDC patient090's apex is cut off, so its LV EDV, EDVi and mass index are lower bounds, yet they
    were flagged "below normal range"; a lower bound above the upper limit still is a finding."""
    from dicomnode.analysis.cine_metrics import LOWER_BOUND_KEYS, lower_bound_note, range_judgements
    values = {"lv_edv_ml": 81.4, "lv_edvi_ml_m2": 49.1, "lv_mass_index_g_m2": 48.5, "lv_esv_ml": 20.0,
              "lv_ef_percent": 80.4}
    whole = {key for key, *_ in range_judgements(values, "M")}
    assert {"lv_edv_ml", "lv_edvi_ml_m2", "lv_mass_index_g_m2"} <= whole
    partial = {key: text for key, text, _ in range_judgements(values, "M", None, LOWER_BOUND_KEYS)}
    assert set(partial) == {"lv_ef_percent"}  # EF is no lower bound: judged as before
    assert lower_bound_note(values, "M") == ("lower limits of normal not applied to lower bounds (incomplete LV "
                                             "coverage): LV EDV 81.4 mL, LV EDVi 49.1 mL/m², "
                                             "LV mass index 48.5 g/m², LV ESV 20.0 mL")
    large = {"lv_edv_ml": 290.0, "lv_edvi_ml_m2": 150.0}
    flagged = {key: text for key, text, _ in range_judgements(large, "M", None, LOWER_BOUND_KEYS)}
    assert flagged["lv_edv_ml"].startswith("LV EDV above normal range") and lower_bound_note(large, "M") is None
    # unknown sex: below for one sex and within for the other is no finding on a lower bound either
    assert not range_judgements({"lv_edv_ml": 100.0}, None, None, LOWER_BOUND_KEYS)
    # the note names only what a whole stack's value would have been flagged for (review F4): an RV EDVi of 50 mL/m²
    # is within the women's range, and RV EDVi is judged against both ranges' union where the sex is unknown
    assert not range_judgements({"rv_edvi_ml_m2": 50.0}, None)
    assert lower_bound_note({"rv_edvi_ml_m2": 50.0}, None) is None
    assert lower_bound_note({"rv_edvi_ml_m2": 50.0}, "M") == ("lower limits of normal not applied to lower bounds "
                                                              "(incomplete LV coverage): RV EDVi 50.0 mL/m²")


def test_only_a_systematic_bias_moves_the_flag_rule():
    """Review F7: the cine flags subtracted the card's bias and the LGE flag did not; one rule now: the bias is
    subtracted where its 95 % confidence interval excludes 0 (model_error.systematic_bias), for both."""
    from dicomnode.analysis.model_error import systematic_bias
    assert systematic_bias(-4.99, 11.25, 100) == -4.99   # cine RVEF: 4.4 standard errors from 0
    assert systematic_bias(-1.46, 7.76, 100) == 0.0      # cine LV ESV: 1.9 standard errors, chance
    assert systematic_bias(0.81, 7.40, 33) == 0.0        # %LGE on MyoPS: chance
    assert systematic_bias(2.0, None, None) == 2.0 and systematic_bias(None, 1.0, 10) == 0.0
    # the LGE flag follows a systematic %LGE bias as the cine flags do: a model reading %LGE 3 points high over 100
    # patients (SD 4) makes 19.5 % expected at 16.5 %, within its MAE of 4 of the 15 % cut-off
    systematic = {"myops_lge_percent": {"n": 100, "mae": 4.0, "bias": 3.0, "sd": 4.0}}
    assert lge_percent_validation(systematic, "native", 19.5, True, 15.0)["near_cutoff"] is True
    chance = {"myops_lge_percent": {"n": 4, "mae": 4.0, "bias": 3.0, "sd": 4.0}}  # the same bias over 4 patients
    assert lge_percent_validation(chance, "native", 19.5, True, 15.0)["near_cutoff"] is False
    # a cine flag whose card bias is chance is judged as with no bias
    errors = {"lv_esv_ml": {"mae": 5.6, "bias": -1.46, "sd": 7.76, "patients": 100, "unit": "mL", "data": "x"}}
    judged = {key: near for key, _, near in range_judgements({"lv_esv_ml": 88.0}, "M", errors)}
    assert judged == {"lv_esv_ml": False}  # 88 > 82 + 5.6 as measured; with the -1.46 bias it would be 89.46 too
    judged = {key: near for key, _, near in range_judgements({"lv_esv_ml": 87.0}, "M", errors)}
    assert judged == {"lv_esv_ml": True}   # 87 - 82 = 5.0 <= 5.6; with the bias 6.46 > 5.6 would have asserted it


def test_error_text_says_whose_error_and_which_bias_was_applied():
    """Review: a bias the rule does not subtract was shown as if it were, and a refining model's flag quoted the
    all-phase model's error as 'this model's'."""
    from dicomnode.analysis.cine_metrics import error_text
    from dicomnode.analysis.model_error import systematic_bias
    chance = {"unit": "mL", "mae": 5.6, "bias": -1.46, "sd": 7.76, "patients": 100, "data": "ACDC cross-validation"}
    assert "bias -1.5 (chance: not applied), mean abs. error 5.6 mL" in error_text(chance, "LV ESV")
    systematic = {**chance, "bias": -4.67, "sd": 7.36}
    assert "bias -4.7, mean abs. error" in error_text(systematic, "LV EDV")
    borrowed = {**chance, "bias": 0.0, "card_metric": "cine_unet card: acdc_cv_lv_esv_ml"}
    text = error_text(borrowed, "LV ESV")
    assert text.startswith("the cine_unet model's LV ESV vs expert readers: mean abs. error 5.6 mL") and "bias" not in text
    # malformed card values never fail the pipeline: NaN or missing counts, negative SD
    assert systematic_bias(-4.0, 7.0, float("nan")) == -4.0 and systematic_bias(-4.0, -1.0, 100) == -4.0


def test_a_child_gets_no_note_on_adult_lower_limits():
    """Review: under 18 every adult range flag is withheld, but the note 'lower limits of normal not applied to lower
    bounds' still named adult below-normal findings."""
    from dicomnode.analysis.cine_metrics import LOWER_BOUND_NOTE_START, lower_bound_note
    from dicomnode.analysis.reference_age import age_adjusted_flags
    from dicomnode.cmr.age import PatientAge
    note = lower_bound_note({"lv_edv_ml": 70.0}, "M")
    assert note.startswith(LOWER_BOUND_NOTE_START)
    child = PatientAge(years=9.0, text="009Y", source="PatientAge")
    flags = age_adjusted_flags([note, "coarse temporal resolution: …"], child)
    assert note not in flags and "coarse temporal resolution: …" in flags
