"""LGE scar-decision calibration: the offset choice, one cross-fitted offset for every input kind, and no offset
where the pooled result does not improve or a centre loses flag accuracy (engines/lge/calibrate.py)."""
from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("torch")
pytest.importorskip("monai")

pytestmark = pytest.mark.torch


def _case(kind, truth, best_offset, slope=4.0):
    """A swept case whose %LGE error is zero at `best_offset` and grows linearly away from it."""
    from engines.lge.calibrate import GRID

    return {"kind": kind, "centre": "myops" if kind == "native" else "emidec", "truth": truth,
            "errors": [slope * (offset - best_offset) for offset in GRID]}


def test_choose_takes_an_offset_only_when_it_gains_enough():
    from engines.lge.calibrate import MIN_GAIN, choose

    assert choose([_case("native", 20.0, -1.0)] * 3) == -1.0
    # best at -0.25 but only 0.2 points better than none: below MIN_GAIN, so none
    flat = [_case("native", 20.0, -0.25, slope=0.8)] * 3
    assert 0.8 * 0.25 < MIN_GAIN and choose(flat) == 0.0
    assert choose([]) == 0.0


def _calibrate(tmp_path, folds):
    from engines.lge.calibrate import GRID, calibrate

    for fold, cases in folds.items():
        (tmp_path / fold).mkdir()
        (tmp_path / fold / "model.pt").write_bytes(b"")
        sweep = tmp_path / fold / "calibration_sweep.json"
        sweep.write_text(json.dumps({"grid": list(GRID), "cases": cases}))
        os.utime(sweep, (2e9, 2e9))  # newer than the model: the sweep is reused, no model is loaded
    return calibrate(tmp_path, {}, log=lambda _: None)


def test_one_cross_fitted_offset_serves_every_input_kind(tmp_path):
    """Every case over-called alike: the pooled offset is taken, the same for both kinds in every fold."""
    folds = {f"fold{k}": {f"n{k}": _case("native", 20.0 + k, -1.0), f"e{k}": _case("windowed_8bit", 25.0, -1.0)}
             for k in range(3)}
    result = _calibrate(tmp_path, folds)
    assert result["shipped"] == {"native": -1.0, "windowed_8bit": -1.0}
    assert all(offsets == {"native": -1.0, "windowed_8bit": -1.0} for offsets in result["per_fold"].values())
    assert result["results"]["all"]["adopted"] and result["results"]["all"]["cross_fitted"]["lge_percent_mae"] == 0


def test_a_centre_convention_is_not_applied_by_input_kind(tmp_path):
    """Native (MyoPS-like) cases over-called, 8-bit ones unbiased and three times as many: the per-kind rule of
    before gave the native kind -1 (so re-encoding the same images as 8-bit moved %LGE, break47a #1); pooled, the
    evidence does not support an offset and both kinds get none."""
    folds = {f"fold{k}": {f"n{k}": _case("native", 20.0, -1.0),
                          **{f"e{k}{i}": _case("windowed_8bit", 20.0, 0.0) for i in range(3)}} for k in range(3)}
    result = _calibrate(tmp_path, folds)
    assert result["shipped"] == {"native": 0.0, "windowed_8bit": 0.0}
    assert all(set(offsets.values()) == {0.0} for offsets in result["per_fold"].values())
    assert result["results"]["kind native"]["uncalibrated"]["lge_percent_mae"] == pytest.approx(4.0)


def test_an_offset_that_costs_one_centre_flag_accuracy_is_not_taken(tmp_path):
    """The pooled offset fixes two MyoPS flags and breaks the EMIDEC one: overall flag accuracy rises, but a centre
    loses, so the decision stays uncalibrated."""
    folds = {f"fold{k}": {f"n{k}a": _case("native", 14.0, -1.0), f"n{k}b": _case("native", 14.0, -1.0),
                          f"e{k}": _case("windowed_8bit", 15.5, 0.0)} for k in range(3)}
    result = _calibrate(tmp_path, folds)
    every = result["results"]["all"]
    assert every["cross_fitted"]["flag_accuracy"] > every["uncalibrated"]["flag_accuracy"]
    assert result["results"]["centre emidec"]["cross_fitted"]["flag_accuracy"] < 1.0
    assert not every["adopted"] and result["shipped"] == {"native": 0.0, "windowed_8bit": 0.0}


def test_an_offset_that_makes_one_centre_worse_is_not_taken(tmp_path):
    """Many MyoPS-like cases over-called, a few EMIDEC ones unbiased: pooled, the offset gains overall but costs
    EMIDEC 4 %LGE points per case, so it is not taken (flags unchanged: every truth far from the cut-off)."""
    folds = {f"fold{k}": {**{f"n{k}{i}": _case("native", 40.0, -1.0) for i in range(4)},
                          f"e{k}": _case("windowed_8bit", 40.0, 0.0)} for k in range(3)}
    result = _calibrate(tmp_path, folds)
    every = result["results"]["all"]
    assert every["uncalibrated"]["lge_percent_mae"] - every["cross_fitted"]["lge_percent_mae"] > 1.0
    assert result["results"]["centre emidec"]["cross_fitted"]["lge_percent_mae"] == pytest.approx(4.0)
    assert not every["adopted"] and result["shipped"] == {"native": 0.0, "windowed_8bit": 0.0}


def test_the_evaluation_report_words_a_pooled_calibration(tmp_path):
    from engines.lge.evaluate import calibration_text

    folds = {f"fold{k}": {f"n{k}": _case("native", 20.0 + k, -1.0), f"e{k}": _case("windowed_8bit", 25.0, -1.0)}
             for k in range(3)}
    text = calibration_text(_calibrate(tmp_path, folds))
    assert text.startswith("one offset for every input kind, calibrated, per-fold offsets [-1.0]")
    assert "per centre emidec: %LGE MAE 4.00 -> 0.00" in text and "myops: %LGE MAE 4.00 -> 0.00" in text
