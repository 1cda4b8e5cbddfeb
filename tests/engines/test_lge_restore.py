"""Rebuilding a run folder from the shipped LGE ensemble (engines.lge.restore): each member becomes the fold model it
was, with its held-out cases and history, and continues training like any finished fold."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

pytestmark = pytest.mark.torch

FILTERS = (4, 8, 16, 32)


def _shipped(models_dir, members=2, card_filters=FILTERS):
    """A models folder holding an ensemble of `members` distinct small U-Nets and its card."""
    from engines.lge.model import LGEEnsemble, LGESliceUNet

    torch.manual_seed(0)
    nets = []
    for _ in range(members):
        net = LGESliceUNet(FILTERS)
        with torch.no_grad():
            for parameter in net.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.1)
        nets.append(net)
    ensemble = LGEEnsemble.from_members(nets)
    models_dir.mkdir(parents=True, exist_ok=True)
    torch.save(ensemble.state_dict(), models_dir / "lge_unet.pt")
    card = {"version": "2026.12.02.0640",
            "architecture": {"members": members, "filters": list(card_filters), "classes": 6,
                             "deep_supervision_heads": 2},
            "input": {"pixel_spacing_mm": 1.5},
            "training": {"steps": 7, "seed": 11, "device": "cpu", "bf16_autocast": True, "patch_size": 32,
                         "batch_size": 2, "history": {"steps 0-5": {"device": "cpu"}}}}
    (models_dir / "lge_unet.json").write_text(json.dumps(card))
    return nets


@pytest.fixture
def cases(monkeypatch):
    from engines.lge import restore
    from tests.engines.test_lge_train import _cases

    monkeypatch.setattr(restore, "load_cases", _cases)
    return _cases()


def test_every_member_becomes_its_fold_model_with_its_held_out_cases(tmp_path, cases):
    from engines.lge.data import case_folds
    from engines.lge.restore import restore

    nets = _shipped(tmp_path / "models")
    written = restore(tmp_path / "models", tmp_path / "run", folds=2)
    assert written == [tmp_path / "run" / f"fold{k}" / "model.pt" for k in range(2)]
    split = case_folds(cases, 2, 11)
    assert json.loads((tmp_path / "run" / "folds.json").read_text()) == {"seed": 11, "folds": split}
    for fold, (path, net) in enumerate(zip(written, nets)):
        saved = torch.load(path, weights_only=True)
        for name, value in net.state_dict().items():
            assert torch.equal(saved["state_dict"][name], value), name
        metadata = saved["metadata"]
        assert metadata["held_out"] == sorted(split[fold]) and metadata["fold"] == fold
        assert metadata["steps"] == 7 and metadata["seed"] == 11 + fold and metadata["patch_size"] == 32
        assert "steps 0-5" in metadata["history"] and "restored at step 7" in metadata["history"]
    # the two members differ, so a swapped order would have failed above
    assert not torch.equal(nets[0].state_dict()["net.input_block.conv1.conv.weight"],
                           nets[1].state_dict()["net.input_block.conv1.conv.weight"])


def test_a_restored_fold_continues_training_from_its_weights(tmp_path, cases):
    from engines.lge.restore import restore
    from engines.lge.train import train_run

    torch.set_num_threads(1)
    _shipped(tmp_path / "models", members=1)
    [path] = restore(tmp_path / "models", tmp_path / "run", folds=2)
    before = torch.load(path, weights_only=True)
    messages: list[str] = []
    train_run(cases, path.parent, 8, seed=11, device=torch.device("cpu"), log=messages.append, filters=FILTERS,
              checkpoint_every=1, metadata={"fold": 0}, patch_size=32, batch_size=2)
    assert any("continued from model.pt at step 7/8" in m for m in messages)
    after = torch.load(path, weights_only=True)
    assert after["metadata"]["steps"] == 8 and "restored at step 7" in after["metadata"]["history"]
    name = "net.input_block.conv1.conv.weight"
    assert not torch.equal(before["state_dict"][name], after["state_dict"][name])


def test_restoring_over_a_fold_model_or_with_a_mismatched_card_is_refused(tmp_path, cases):
    from engines.lge.restore import restore

    _shipped(tmp_path / "models")
    restore(tmp_path / "models", tmp_path / "run", folds=2)
    with pytest.raises(FileExistsError, match="fold0"):
        restore(tmp_path / "models", tmp_path / "run", folds=2)
    _shipped(tmp_path / "other", card_filters=(8, 16, 32, 64))
    with pytest.raises(RuntimeError, match="size mismatch"):
        restore(tmp_path / "other", tmp_path / "run2", folds=2)



def test_members_trained_by_different_recipes_each_get_their_own_record_back(tmp_path, cases):
    """An ensemble of a continued fold and a from-scratch fold: the card keeps one training record per member (as
    engines.lge.export writes it) and restore gives each fold its own steps, history and loss weighting."""
    from engines.lge.data import case_folds
    from engines.lge.export import member_training
    from engines.lge.restore import restore

    _shipped(tmp_path / "models")
    split = case_folds(cases, 2, 11)
    records = member_training([
        {"fold": 0, "steps": 7, "seed": 11, "patch_size": 32, "history": {"restored at step 5": "earlier ensemble"},
         "held_out": split[0], "learning_rate": 3e-3},
        {"fold": 1, "steps": 9, "seed": 12, "patch_size": 32, "dice_weight": 1.0, "history": {},
         "held_out": split[1]}])
    assert records[0] == {"fold": 0, "steps": 7, "seed": 11, "patch_size": 32,
                          "history": {"restored at step 5": "earlier ensemble"}, "held_out_cases": len(split[0])}
    card_path = tmp_path / "models" / "lge_unet.json"
    card = json.loads(card_path.read_text())
    card["training"] |= {"history": "per member: see members", "members": records}
    card_path.write_text(json.dumps(card))
    written = restore(tmp_path / "models", tmp_path / "run", folds=2)
    first, second = (torch.load(p, weights_only=True)["metadata"] for p in written)
    assert first["steps"] == 7 and set(first["history"]) == {"restored at step 5", "restored at step 7"}
    assert second["steps"] == 9 and set(second["history"]) == {"restored at step 9"}
    assert second["dice_weight"] == 1.0 and "dice_weight" not in first

    records[1]["held_out_cases"] += 1
    card["training"]["members"] = records
    card_path.write_text(json.dumps(card))
    with pytest.raises(ValueError, match="not the card's split"):
        restore(tmp_path / "models", tmp_path / "run3", folds=2)


def test_chosen_members_join_a_folder_whose_other_folds_were_retrained(tmp_path, cases):
    """The next ensemble replaces some members: the others are restored beside the retrained folds, into a folder
    whose split must be the card's; the retrained folds are left as they are."""
    from engines.lge.data import case_folds
    from engines.lge.restore import restore

    nets = _shipped(tmp_path / "models")
    run = tmp_path / "run"
    (run / "fold0").mkdir(parents=True)
    (run / "fold0" / "model.pt").write_bytes(b"retrained fold 0")
    (run / "folds.json").write_text(json.dumps({"seed": 11, "folds": case_folds(cases, 2, 11)}))
    [path] = restore(tmp_path / "models", run, folds=2, members=[1])
    assert path == run / "fold1" / "model.pt"
    assert (run / "fold0" / "model.pt").read_bytes() == b"retrained fold 0"
    saved = torch.load(path, weights_only=True)
    assert saved["metadata"]["fold"] == 1
    for name, value in nets[1].state_dict().items():
        assert torch.equal(saved["state_dict"][name], value), name

    with pytest.raises(ValueError, match="members 0-1, not \\[2\\]"):
        restore(tmp_path / "models", tmp_path / "run2", folds=2, members=[2])
    other = tmp_path / "run3"
    other.mkdir()
    (other / "folds.json").write_text(json.dumps({"seed": 12, "folds": case_folds(cases, 2, 12)}))
    with pytest.raises(ValueError, match="not the split"):
        restore(tmp_path / "models", other, folds=2, members=[1])
    assert not (other / "fold1").exists()
