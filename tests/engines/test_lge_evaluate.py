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


def test_a_partial_cross_validation_says_which_folds_and_carries_earlier_leave_one_centre_out_results(
        tmp_path, monkeypatch):
    import json

    import torch

    from engines.lge import evaluate
    from engines.lge.train import train_run
    from tests.engines.test_lge_train import _cases as tiny_cases

    torch.set_num_threads(1)
    monkeypatch.setattr(evaluate, "load_cases", tiny_cases)
    run = tmp_path / "cv"
    train_run(tiny_cases(), run / "fold0", 1, seed=3, device=torch.device("cpu"), log=lambda _: None,
              filters=(4, 8, 16, 32), metadata={"fold": 0, "held_out": ["case0", "case1"]}, patch_size=32,
              batch_size=2)
    (run / "folds.json").write_text(json.dumps({"seed": 3, "folds": [["case0", "case1"], [], [], [], []]}))
    earlier = tmp_path / "EARLIER.json"
    loco = {"train emidec": {"myops": {"cases": 33, "dl": {"mae": 8.0}}, "all": {"cases": 33, "dl": {"mae": 8.0}}}}
    earlier.write_text(json.dumps({"loco": loco, "command": "python -m engines.lge.evaluate --cv runs/a --loco "
                                                            "runs/loco_emidec --threads 2"}))
    monkeypatch.setattr(evaluate, "centre_table", lambda results: [f"table of {results['all']['cases']} cases"])
    report = tmp_path / "EVALUATION.md"
    evaluate.main(["--cv", str(run), "--report", str(report), "--training-fit", "0", "--threads", "1",
                   "--loco-from", str(earlier)])
    text = report.read_text()
    assert "(fold0: 1 of the 5 folds of `folds.json`, so 2 of the cases)" in text
    assert "## Leave one centre out: train emidec" in text and "runs/loco_emidec" in text
    assert "table of 33 cases" in text
    written = json.loads(report.with_suffix(".json").read_text())
    assert written["loco"] == loco and written["folds_total"] == 5
    assert "1 of the 5 folds (fold0)" in written["shipped_metrics"]["source"]
    again = tmp_path / "AGAIN.md"
    evaluate.main(["--cv", str(run), "--report", str(again), "--training-fit", "0", "--threads", "1",
                   "--loco-from", str(report.with_suffix(".json"))])
    carried_twice = json.loads(again.with_suffix(".json").read_text())
    assert carried_twice["loco"] == loco
    assert carried_twice["loco_carried_from"] == written["loco_carried_from"]
    assert "runs/loco_emidec" in again.read_text()


def test_cached_per_model_results_are_not_reused_after_the_node_segments_differently(tmp_path, monkeypatch):
    """Results cached beside a fold model carry the segment_stack settings they were made with: changing one (here
    the crop averaging) segments the held-out cases again instead of reporting the old numbers."""
    import json

    import torch

    import dicomnode.analysis.lge as node_lge
    from engines.lge.evaluate import predict_runs
    from engines.lge.train import train_run
    from tests.engines.test_lge_train import _cases as tiny_cases

    torch.set_num_threads(1)
    run = tmp_path / "cv"
    train_run(tiny_cases(), run / "fold0", 1, seed=3, device=torch.device("cpu"), log=lambda _: None,
              filters=(4, 8, 16, 32), metadata={"fold": 0, "held_out": ["case0"]}, patch_size=32, batch_size=2)
    (run / "folds.json").write_text(json.dumps({"seed": 3, "folds": [["case0"]]}))
    messages: list[str] = []
    cases = {case.name: case for case in tiny_cases()}
    predict_runs([run], cases, messages.append)
    predict_runs([run], cases, messages.append)
    assert "(from held_out_metrics.json)" not in messages[0] and "(from held_out_metrics.json)" in messages[1]
    monkeypatch.setattr(node_lge, "AVERAGE_CROPS", not node_lge.AVERAGE_CROPS)
    predict_runs([run], cases, messages.append)
    assert "(from held_out_metrics.json)" not in messages[2], messages


def _mvo_case(truth_ml: float, predicted_ml: float, dice: float | None) -> dict:
    return {"centre": "emidec", "dice_per_slice": {"mvo": dice},
            "truth": {"mvo_ml": truth_ml}, "predicted": {"mvo_ml": predicted_ml}}


def test_mvo_agreement_scores_presence_per_floor_and_counts_specks_on_hearts_without_mvo():
    from engines.lge.evaluate import mvo_agreement

    cases = {"a": _mvo_case(2.0, 1.5, 0.5), "b": _mvo_case(1.0, 0.2, 0.3), "c": _mvo_case(0.0, 0.3, None),
             "d": _mvo_case(0.0, 0.0, None)}
    block = mvo_agreement(cases, floors_ml=(0.0, 0.25, 1.0))
    assert block["n"] == 4 and block["with_mvo"] == 2 and block["without_mvo"] == 2
    assert block["without_mvo_with_predicted"] == 1 and block["dice_per_slice"] == pytest.approx(0.4)
    assert block["volume_mae_ml"] == pytest.approx((0.5 + 0.8 + 0.3) / 4)
    assert block["volume_bias_ml"] == pytest.approx((-0.5 - 0.8 + 0.3) / 4)
    assert [(p["floor_ml"], p["accuracy"], p["sensitivity"], p["specificity"]) for p in block["presence"]] == [
        (0.0, 0.75, 1.0, 0.5), (0.25, 0.5, 0.5, 0.5), (1.0, 0.75, 0.5, 1.0)]
    assert mvo_agreement({}) == {"n": 0}


def test_the_shipped_card_carries_the_mvo_agreement_of_its_cross_validation():
    import json
    from pathlib import Path

    from engines.lge.evaluate import mvo_agreement

    root = Path(__file__).resolve().parents[2]
    evaluation = json.loads((root / "engines/lge/EVALUATION.json").read_text())
    card = json.loads((root / "engines/models/lge_unet.json").read_text())
    expected = mvo_agreement({n: c for n, c in evaluation["per_case"].items() if c["centre"] == "emidec"})
    assert card["metrics"]["emidec_mvo"] == evaluation["shipped_metrics"]["emidec_mvo"] == expected
