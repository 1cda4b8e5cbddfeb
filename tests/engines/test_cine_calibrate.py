"""engines.cine.calibrate: the objective, the choice, and cross-fitting that never lets a fold choose for itself."""
from __future__ import annotations

import pytest

pytest.importorskip("torch")

from engines.cine.calibrate import GRID, choose, grid_key, lvef_mae, objective, offsets_for  # noqa: E402
from dicomnode.labels import Label  # noqa: E402

BEST = grid_key((0.5, -0.25, 0.0))


def subject(fold: str, mass_error_at_zero: float) -> dict:
    """Reference values and, at every grid point, predictions whose errors vanish at BEST (and grow away from it)."""
    reference = {"lv_ef_percent": 55.0, "rv_ef_percent": 50.0, "lv_mass_g": 120.0}
    predicted = {}
    for triple in GRID:
        key = grid_key(triple)
        distance = sum(abs(a - b) for a, b in zip(triple, (0.5, -0.25, 0.0)))
        predicted[key] = {"lv_ef_percent": 55.0 + 2 * distance, "rv_ef_percent": 50.0 - 3 * distance,
                          "lv_mass_g": 120.0 + (0.0 if key == BEST else mass_error_at_zero * distance)}
    return {"subject": f"patient-{fold}", "fold": fold, "reference": reference, "predicted": predicted}


def test_objective_weighs_each_error_by_its_goal():
    s = subject("fold0", 10.0)
    assert objective([s], BEST) == 0.0
    zero = grid_key((0.0, 0.0, 0.0))
    distance = 0.5 + 0.25
    assert objective([s], zero) == pytest.approx(3 * distance / 6 + 10.0 * distance / 5)


def test_the_choice_never_trades_lvef():
    subjects = [subject(f"fold{k}", 10.0) for k in range(5)]
    assert choose(subjects) == BEST  # better on everything: chosen
    for s in subjects:  # the same triple now costs LVEF: no longer eligible, whatever it gains elsewhere
        s["predicted"][BEST]["lv_ef_percent"] = s["reference"]["lv_ef_percent"] + 5.0
    chosen = choose(subjects)
    zero = grid_key((0.0, 0.0, 0.0))
    assert chosen != BEST and lvef_mae(subjects, chosen) <= lvef_mae(subjects, zero) + 0.02


def test_offsets_follow_the_model_channel_order():
    labels = (int(Label.BACKGROUND), int(Label.LV_BLOOD_POOL), int(Label.LV_MYOCARDIUM), int(Label.RV_BLOOD_POOL))
    assert offsets_for(labels, (0.5, -0.25, -0.5)) == (0.5, 0.0, -0.25, -0.5)
    assert offsets_for(labels[::-1], (0.5, -0.25, -0.5)) == (-0.5, -0.25, 0.0, 0.5)
