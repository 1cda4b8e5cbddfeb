"""LGE evaluation: the training-fit sample is drawn only from what a model trained on, per centre, reproducibly."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("torch")
pytest.importorskip("monai")

pytestmark = pytest.mark.torch


def _cases():
    return ({f"Case_P{i:03d}": SimpleNamespace(centre="emidec") for i in range(12)}
            | {f"Case30{i:02d}": SimpleNamespace(centre="myops") for i in range(6)})


def test_training_fit_sample_holds_no_held_out_case_and_is_seeded_per_fold():
    from engines.lge.evaluate import training_sample

    cases = _cases()
    held_out = ["Case_P000", "Case_P001", "Case_P002", "Case3000", "Case3001"]
    sample = training_sample({"held_out": held_out, "fold": 2}, cases, 3)
    assert not set(sample) & set(held_out)
    assert sum(n.startswith("Case_P") for n in sample) == 3 and sum(n.startswith("Case30") for n in sample) == 3
    assert sample == training_sample({"held_out": held_out, "fold": 2}, cases, 3)
    # fewer training cases than asked: all of them
    assert len(training_sample({"held_out": held_out, "fold": 2}, cases, 50)) == 12 - 3 + 6 - 2


def test_training_fit_sample_of_a_single_centre_model_is_from_that_centre():
    from engines.lge.evaluate import training_sample

    cases = _cases()
    myops = [n for n, c in cases.items() if c.centre == "myops"]
    sample = training_sample({"held_out": myops, "train_centres": ["emidec"]}, cases, 4)
    assert len(sample) == 4 and all(n.startswith("Case_P") for n in sample)
