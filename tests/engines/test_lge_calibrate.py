"""LGE scar-decision calibration: the offset choice, cross-fitting per fold, and a kind left uncalibrated where the
cross-fitted result does not improve it (engines/lge/calibrate.py)."""
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


def test_cross_fitted_per_fold_and_a_kind_that_does_not_improve_stays_uncalibrated(tmp_path):
    from engines.lge.calibrate import calibrate

    folds = {
        # native cases over-called by the same amount in every fold: calibrated
        # 8-bit cases: each fold's best offset differs, so each fold's choice is wrong for its own cases
        "fold0": {"n0": _case("native", 20.0, -1.0), "e0": _case("windowed_8bit", 20.0, 1.0)},
        "fold1": {"n1": _case("native", 22.0, -1.0), "e1": _case("windowed_8bit", 20.0, -1.0)},
        "fold2": {"n2": _case("native", 24.0, -1.0), "e2": _case("windowed_8bit", 20.0, 0.0)},
    }
    from engines.lge.calibrate import GRID

    for fold, cases in folds.items():
        (tmp_path / fold).mkdir()
        (tmp_path / fold / "model.pt").write_bytes(b"")
        sweep = tmp_path / fold / "calibration_sweep.json"
        sweep.write_text(json.dumps({"grid": list(GRID), "cases": cases}))
        os.utime(sweep, (2e9, 2e9))  # newer than the model: the sweep is reused, no model is loaded
    result = calibrate(tmp_path, {}, log=lambda _: None)
    assert result["shipped"]["native"] == -1.0
    assert all(offsets["native"] == -1.0 for offsets in result["per_fold"].values())
    native = result["results"]["native"]
    assert native["adopted"] and native["cross_fitted"]["lge_percent_mae"] == 0.0
    windowed = result["results"]["windowed_8bit"]
    assert not windowed["adopted"]
    assert result["shipped"]["windowed_8bit"] == 0.0
    assert all(offsets["windowed_8bit"] == 0.0 for offsets in result["per_fold"].values())
