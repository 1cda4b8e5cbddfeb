"""engines.cine.calibrate_epicardium's choice, and the card a calibrated model gets (engines.cine.evaluate): the CV's
LV mass, measured without the offset, is not quoted as the calibrated model's error."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from engines.cine.calibrate_epicardium import GRID, choose, key, mass_bias, summary, write_card  # noqa: E402
from engines.cine.evaluate import cv_card_metrics, stale_cv_mass  # noqa: E402
from dicomnode.analysis.cine import CineModelSpec, function_validation_from_card  # noqa: E402


def subject(fold: str, mass_error_at: dict[float, float]) -> dict:
    reference = {"lv_mass_g": 120.0, "lv_ef_percent": 55.0, "lv_edv_ml": 150.0, "lv_esv_ml": 67.5,
                 "rv_ef_percent": 50.0}
    predicted = {key(o): {**reference, "lv_mass_g": 120.0 + mass_error_at.get(o, 20.0 - 8 * o)} for o in GRID}
    return {"subject": f"patient-{fold}", "fold": fold, "reference": reference, "predicted": predicted,
            "myocardium_dice": {key(o): [0.9, 0.9] for o in GRID}}


def test_the_offset_with_the_smallest_mass_bias_is_chosen_and_a_tie_takes_the_smaller():
    subjects = [subject("fold0", {}), subject("fold1", {})]  # bias 20 - 8 * offset: zero at 2.5
    assert choose(subjects) == key(2.5)
    assert mass_bias(subjects, key(0.0)) == pytest.approx(20.0)
    tie = [subject("fold0", {o: (0.0 if o in (1.0, 2.0) else 5.0) for o in GRID})]
    assert choose(tie) == key(1.0)


def test_each_fold_is_reported_with_the_offset_chosen_for_it():
    subjects = [subject("fold0", {1.0: 0.0}), subject("fold1", {2.0: 0.0})]
    result = summary(subjects, {"fold0": key(1.0), "fold1": key(2.0)})
    assert result["calibrated"]["lv_mass_g"]["mean_error"] == pytest.approx(0.0)
    assert result["uncalibrated"]["lv_mass_g"]["mean_error"] == pytest.approx(20.0)


def _results(card_offset: float | None, cv_offset: float | None) -> dict:
    output = {} if card_offset is None else {"epicardial_logit_offset": card_offset}
    cv = {"n": 100, "agreement": {"lv_mass_g": {"n": 100, "mean_error": 10.7, "sd_error": 11.0, "mae": 11.8, "r": 0.98},
                                  "lv_ef_percent": {"n": 100, "mean_error": -1.0, "sd_error": 5.3, "mae": 3.5,
                                                    "r": 0.97}},
          "subjects": []}
    if cv_offset is not None:
        cv["epicardial_offset"] = cv_offset
    return {"model": {"output": output}, "cv": cv}


def test_a_cv_measured_without_the_cards_offset_gives_no_mass_block():
    assert not stale_cv_mass(_results(None, None))
    assert stale_cv_mass(_results(1.0, None)) and not stale_cv_mass(_results(1.0, 1.0))
    written = cv_card_metrics(_results(1.0, None)["cv"], skip=("lv_mass_g",))
    assert "acdc_cv_lv_mass_g" not in written and "acdc_cv_lv_ef_percent" in written
    # the node then quotes the held-out split's mass (measured with the offset) and the CV's LVEF
    card = {"metrics": {**written, "acdc_lv_mass_g": {"n": 20, "mean_error": 0.4, "sd_error": 9.0, "mae": 7.0}}}
    found = function_validation_from_card(card)
    assert found["lv_mass_g"]["card_metric"] == "acdc_lv_mass_g"
    assert found["lv_ef_percent"]["card_metric"] == "acdc_cv_lv_ef_percent"


def test_write_card_refuses_another_models_card_and_the_node_reads_what_it_writes(tmp_path):
    import torch

    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"test_subjects": ["patient001", "SCD0000101"]}, checkpoint)
    block = {"lv_mass_g": {"mean_error": 9.0}, "lv_ef_percent": {"mae": 3.0}}
    result = {"checkpoint": str(checkpoint), "offset": key(1.25), "date": "today",
              "training": {"n": 80, "uncalibrated": block, "calibrated": {**block, "lv_mass_g": {"mean_error": 0.2}}}}
    card = {"training": {"held_out_subjects": ["patient001"]}, "input": {"spacing_mm": 1.5, "crop_size": 128},
            "output": {"channels": [{"channel": c, "node_label": v} for c, v in enumerate((0, 1, 2, 5))]}}
    path = tmp_path / "cine_unet.json"
    path.write_text(json.dumps(card))
    write_card(path, result)
    written = json.loads(path.read_text())
    assert CineModelSpec.from_card(written).epicardial_offset == 1.25
    assert "+9.0 -> +0.2 g" in written["output"]["epicardial_offset"]
    path.write_text(json.dumps({**card, "training": {"held_out_subjects": ["patient002"]}}))
    with pytest.raises(ValueError, match="another model"):
        write_card(path, result)
