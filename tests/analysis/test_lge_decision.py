"""The LGE scar decision: the input kind read from the stored values, the model card's per-kind offset, and the
arg-max it shifts (dicomnode.analysis.lge; chosen by engines/lge/calibrate.py)."""
from __future__ import annotations

import numpy as np
import pytest

from dicomnode.analysis.lge import LGEDecision, decide_labels, input_kind
from dicomnode.labels import Label


def test_input_kind_tells_scanner_values_from_8_bit_exports():
    rng = np.random.default_rng(0)
    scan = np.round(rng.gamma(2.0, 300.0, (4, 128, 128)))  # 12-bit-like: thousands of distinct values
    assert input_kind(scan, 12) == "native" and input_kind(scan, None) == "native"
    png = np.round(rng.uniform(0, 255, scan.shape))
    assert input_kind(png, None) == "windowed_8bit"
    assert input_kind(scan, 8) == "windowed_8bit"  # BitsStored says so
    # an 8-bit export stored again as 16-bit with a linear rescale (a PSIR range): still 256 levels at most
    assert input_kind(png * 8.0 - 512.0, 16) == "windowed_8bit"
    # a small image with few values by chance is not called 8-bit on the level count alone
    assert input_kind(np.round(rng.uniform(300, 400, (1, 32, 32))), 12) == "native"


def test_decision_block_of_the_card():
    assert LGEDecision.from_card({}).offset("native") == 0.0
    decision = LGEDecision.from_card({"decision": {"scar_log_offset": {"native": -1.25}}})
    assert decision.offset("native") == -1.25 and decision.offset("windowed_8bit") == 0.0
    with pytest.raises(ValueError, match="unknown input kind"):
        LGEDecision.from_card({"decision": {"scar_log_offset": {"dixon": 1.0}}})
    with pytest.raises(ValueError, match="finite"):
        LGEDecision({"native": float("nan")})
    with pytest.raises(ValueError, match="unknown input kind"):
        decision.offset("psir")


def test_the_offset_moves_the_scar_boundary_only():
    probabilities = np.zeros((1, 6, 8, 8), np.float32)
    probabilities[0, Label.BACKGROUND] = 1.0
    ring = (slice(2, 6), slice(2, 6))
    probabilities[0, :, ring[0], ring[1]] = 0.0
    probabilities[0, Label.LV_MYOCARDIUM, ring[0], ring[1]] = 0.45
    probabilities[0, Label.SCAR, ring[0], ring[1]] = 0.40
    probabilities[0, Label.LV_BLOOD_POOL, ring[0], ring[1]] = 0.15
    probabilities[0, Label.LV_BLOOD_POOL, 3:5, 3:5] = 0.9  # a cavity inside, sure of itself
    probabilities[0, Label.LV_MYOCARDIUM, 3:5, 3:5] = 0.05
    probabilities[0, Label.SCAR, 3:5, 3:5] = 0.05
    plain = decide_labels(probabilities)
    assert (plain[0][2:6, 2:6] != Label.SCAR).all()
    eager = decide_labels(probabilities, 0.25)  # 0.40 e^0.25 = 0.51 > 0.45: the uncertain wall turns scar
    assert (eager[0][eager[0] != plain[0]] == Label.SCAR).all() and (eager == Label.SCAR).sum() == 12
    assert (eager[0][3:5, 3:5] == Label.LV_BLOOD_POOL).all()  # a confident class stays
    assert np.array_equal(decide_labels(probabilities, -2.0), plain)
    assert probabilities[0, Label.SCAR, 2, 2] == pytest.approx(0.40)  # the input is not modified


def test_the_shipped_scar_decision_does_not_depend_on_the_guessed_input_kind():
    """break47a #1: the kind is guessed from the stored values (a level count), so the same images re-encoded with
    +-1 unit of noise or interpolated to 512 pixels crossed the guess, and a per-kind offset (-0.75 on 'native')
    moved their %LGE by 4 points. engines.lge.calibrate now writes one offset for every kind; the shipped card must
    keep it that way."""
    import json
    from pathlib import Path

    from dicomnode.analysis.lge import INPUT_KINDS

    card = json.loads((Path(__file__).resolve().parents[2] / "engines" / "models" / "lge_unet.json").read_text())
    decision = LGEDecision.from_card(card)
    assert len({decision.offset(kind) for kind in INPUT_KINDS}) == 1
