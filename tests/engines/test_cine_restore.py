"""Rebuilding the shipped cine model's CV fold checkpoint (engines.cine.restore): the shipped weights land in the fold
whose held-out patients the card lists, marked finished, and carry on training like any finished fold."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from engines.cine import restore, train  # noqa: E402
from engines.cine.data import acdc_folds  # noqa: E402

pytestmark = pytest.mark.torch

MODELS = Path(__file__).resolve().parents[2] / "engines" / "models"


def _models(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    models.mkdir()
    for name in ("cine_unet.pt", "cine_unet.json"):
        shutil.copy(MODELS / name, models / name)
    return models


def test_the_shipped_weights_land_in_their_fold_with_the_cards_subjects(tmp_path):
    models = _models(tmp_path)
    card = json.loads((models / "cine_unet.json").read_text())
    path = restore.restore(models, tmp_path / "run")
    saved = torch.load(path, weights_only=False)
    fold = int(path.parent.name.removeprefix("fold"))
    held_out = sorted(s for s in card["training"]["held_out_subjects"] if s.startswith("patient"))
    assert sorted(acdc_folds(5, card["training"]["split_seed"])[fold]) == held_out
    assert set(held_out) <= set(saved["test_subjects"]) and not set(held_out) & set(saved["train_subjects"])
    shipped = torch.load(models / "cine_unet.pt", weights_only=True)
    assert all(torch.equal(shipped[k], saved["state_dict"][k]) for k in shipped)
    assert saved["final"] and saved["iterations"] == card["training"]["iterations"]
    assert saved["history"][0]["iterations"] == card["training"]["iterations"] and "restored" in saved["history"][0]
    with pytest.raises(FileExistsError):
        restore.restore(models, tmp_path / "run")


def test_a_restored_fold_carries_on_training(tmp_path):
    from tests.engines.test_cine_train import _args, _data

    path = restore.restore(_models(tmp_path), tmp_path / "run")
    before = torch.load(path, weights_only=False)
    fold = path.parent.name
    # carried to a larger budget: continues from the shipped weights, with the restore and the carry in its history
    args = _args(tmp_path / "run", before["iterations"] + 1)
    train.train_one(fold, ["patient004"], _data(), args, torch.device("cpu"))
    after = torch.load(path, weights_only=False)
    assert after["iterations"] == before["iterations"] + 1 and after["final"]
    assert "restored" in after["history"][0] and after["history"][1]["continued_to"] == before["iterations"] + 1
    assert not torch.equal(after["state_dict"]["head.weight"], before["state_dict"]["head.weight"])


def test_a_card_whose_held_out_patients_are_no_fold_is_refused(tmp_path):
    models = _models(tmp_path)
    card = json.loads((models / "cine_unet.json").read_text())
    card["training"]["held_out_subjects"] = ["patient001", "patient002"]
    (models / "cine_unet.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="no fold"):
        restore.restore(models, tmp_path / "run")
    assert not (tmp_path / "run").exists()
