"""Rebuild a cross-validation run folder from the shipped LGE ensemble, so its fold models can be carried on when
the run folder itself is gone (engines/runs is not committed; the shipped ensemble's members are the first fold
models of the run named on its card).

    python -m engines.lge.restore --out engines/runs/lge8_cv
    python -m engines.lge.train --out engines/runs/lge8_cv --only-folds 0 --patch-size 128 --steps 16000 --threads 1

Each member k becomes fold{k}/model.pt with the card's training metadata (steps, history, patch and batch size; the
member's own record where the card keeps one per member, as for members trained by different recipes) and
the held-out cases of fold k as `engines.lge.data.case_folds` draws them with the card's seed; the training command
then continues it from those weights with a fresh optimiser (the optimiser state is not shipped). The folds.json of
the folder is the full split, so folds without a member (the card's ensemble holds fewer members than folds) can be
trained from scratch into the same folder.

`--members 3 4` restores only those members, into a folder whose other folds were retrained (a folder already holding
a folds.json must hold the card's split): the next ensemble can replace some members and keep the others.

    python -m engines.lge.restore --out engines/runs/lge8_cv --members 3 4
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from engines.lge.data import case_folds, load_cases
from engines.lge.model import LGEEnsemble

MODEL_NAME = "lge_unet"
FOLDS = 5


def restore(models_dir: Path, out: Path, folds: int = FOLDS, members: list[int] | None = None) -> list[Path]:
    """Write out/folds.json and out/fold{k}/model.pt for every member of models_dir/lge_unet.pt (or only the
    `members` listed); returns the written model paths. Refuses (ValueError) a member whose architecture differs
    from the card's, a member index the ensemble does not hold, and an existing out/folds.json that is not the
    card's split; (FileExistsError) a fold that already holds a model or a checkpoint."""
    card = json.loads((models_dir / f"{MODEL_NAME}.json").read_text())
    architecture, training, plan = card["architecture"], card["training"], card["input"]
    ensemble = LGEEnsemble(architecture["members"], tuple(architecture["filters"]), architecture["classes"],
                           deep_supervision_heads=architecture["deep_supervision_heads"])
    state = torch.load(models_dir / f"{MODEL_NAME}.pt", map_location="cpu", weights_only=True)
    ensemble.load_state_dict(state)  # refuses weights that do not match the card
    seed = int(training["seed"])
    split = case_folds(load_cases(), folds, seed)
    chosen = range(len(ensemble.members)) if members is None else sorted(set(members))
    if missing := [k for k in chosen if not 0 <= k < len(ensemble.members)]:
        raise ValueError(f"the shipped ensemble holds members 0-{len(ensemble.members) - 1}, not {missing}")
    existing = out / "folds.json"
    if existing.is_file() and json.loads(existing.read_text()) != {"seed": seed, "folds": split}:
        raise ValueError(f"{existing} is not the split the card's seed {seed} draws over {folds} folds: "
                         f"its folds were trained on other cases than the shipped members")
    written = []
    recorded = training.get("members") or []
    for fold in chosen:
        member = ensemble.members[fold]
        own = recorded[fold] if fold < len(recorded) else {}
        history = own["history"] if "history" in own else training.get("history", {})
        steps = int(own.get("steps", training["steps"]))
        if "held_out_cases" in own and own["held_out_cases"] != len(split[fold]):
            raise ValueError(f"member {fold} was trained without {own['held_out_cases']} cases, but fold {fold} of "
                             f"the split drawn with seed {seed} holds {len(split[fold])}: not the card's split")
        folder = out / f"fold{fold}"
        if (folder / "model.pt").exists() or (folder / "checkpoint.pt").exists():
            raise FileExistsError(f"{folder} already holds a model or checkpoint; restore into an empty folder")
        folder.mkdir(parents=True, exist_ok=True)
        metadata = {"filters": list(architecture["filters"]), "learning_rate": training.get("learning_rate", 3e-3),
                    "fold": fold, "held_out": sorted(split[fold]),
                    "history": {**(history if isinstance(history, dict) else {}), f"restored at step {steps}":
                                f"{MODEL_NAME} {card['version']} member {fold}; optimiser state not shipped"},
                    "steps": steps, "seed": seed + fold, "device": own.get("device", training.get("device", "cpu")),
                    "bf16_autocast": own.get("bf16_autocast", training.get("bf16_autocast")),
                    "model_spacing_mm": plan["pixel_spacing_mm"],
                    "patch_size": own.get("patch_size", training.get("patch_size")),
                    "batch_size": own.get("batch_size", training.get("batch_size"))}
        if "dice_weight" in own:
            metadata["dice_weight"] = own["dice_weight"]
        torch.save({"state_dict": member.state_dict(), "config": member.config, "metadata": metadata},
                   folder / "model.pt")
        written.append(folder / "model.pt")
    (out / "folds.json").write_text(json.dumps({"seed": seed, "folds": split}, indent=1))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=Path("engines/models"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--folds", type=int, default=FOLDS)
    parser.add_argument("--members", type=int, nargs="+", help="restore only these members (default: all)")
    args = parser.parse_args(argv)
    for path in restore(args.models_dir, args.out, args.folds, args.members):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
