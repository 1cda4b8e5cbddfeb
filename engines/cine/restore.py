"""Rebuild the cross-validation fold checkpoint of the shipped cine model, so it can be carried on (fine-tuned, or
trained further with another loss) when its run folder is gone (engines/runs is not committed; the shipped model
is one fold of the ACDC 5-fold CV, the fold whose held-out patients its card lists).

    python -m engines.cine.restore --out engines/runs/cine_ft
    python -m engines.cine.train --out engines/runs/cine_ft --only-folds 1 --steps 3600 --threads 1

The shipped weights become fold<k>/checkpoint.pt, marked finished at the card's iterations, with the card's
training and held-out subjects and a history entry `restored`; the training command then carries it to a larger
budget the way it carries any finished fold (the poly schedule re-enters at the card's iteration), with a fresh
optimiser and sampler (neither is shipped).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from engines.cine.data import CHANNEL_LABELS, N_CLASSES, SUNNYBROOK_HELD_OUT, acdc_folds
from engines.cine.model import CineUNet

MODEL_NAME = "cine_unet"


def shipped_fold(card: dict, folds: int) -> int:
    """Index k of the fold of acdc_folds(folds, card seed) whose held-out ACDC patients are the card's.
    ValueError when no fold matches (a model of the single held-out split, or another seed)."""
    held_out = sorted(s for s in card["training"]["held_out_subjects"] if s.startswith("patient"))
    for k, fold in enumerate(acdc_folds(folds, int(card["training"]["split_seed"]))):
        if sorted(fold) == held_out:
            return k
    raise ValueError(f"the card's {len(held_out)} held-out ACDC patients are no fold of the {folds}-fold split "
                     f"with seed {card['training']['split_seed']}")


def restore(models_dir: Path, out: Path, folds: int = 5) -> Path:
    """Write out/fold<k>/checkpoint.pt from models_dir/cine_unet.pt and its card; returns its path.
    Raises FileExistsError when that fold already holds a checkpoint, ValueError when the weights do not fit the
    card's architecture or the card's held-out patients are no fold of the split."""
    card = json.loads((models_dir / f"{MODEL_NAME}.json").read_text())
    training, plan = card["training"], card["input"]
    widths = tuple(int(w) for w in card["architecture"]["widths"])
    in_channels = int(plan["shape"][1])
    channel_labels = [int(c["node_label"]) for c in card["output"]["channels"]]
    if channel_labels != [int(v) for v in CHANNEL_LABELS] or len(channel_labels) != N_CLASSES:
        raise ValueError(f"the card's output channels {channel_labels} are not the trainer's {list(CHANNEL_LABELS)}")
    model = CineUNet(in_channels, N_CLASSES, widths)
    try:
        model.load_state_dict(torch.load(models_dir / f"{MODEL_NAME}.pt", map_location="cpu", weights_only=True))
    except RuntimeError as error:
        raise ValueError(f"{MODEL_NAME}.pt does not fit its card's architecture: {error}") from None
    fold = shipped_fold(card, folds)
    folder = out / f"fold{fold}"
    path = folder / "checkpoint.pt"
    if path.exists():
        raise FileExistsError(f"{path} exists; restore into an empty folder")
    folder.mkdir(parents=True, exist_ok=True)
    seed = int(training["split_seed"])
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    iterations = int(training["iterations"])
    torch.save({
        "state_dict": model.state_dict(), "optimiser": optimiser.state_dict(),
        "generator": torch.Generator().manual_seed(seed + 1000 * (fold + 1)).get_state(),
        "widths": widths, "n_classes": N_CLASSES, "channel_labels": CHANNEL_LABELS, "in_channels": in_channels,
        "context": plan.get("context", "none"), "target_spacing_mm": float(plan["spacing_mm"]),
        "crop_size": int(plan["crop_size"]), "iterations": iterations, "steps": iterations,
        "batch": int(training["batch"]), "elapsed_s": float(training["wall_time_s"]), "final": True, "seed": seed,
        "test_subjects": sorted(set(training["held_out_subjects"]) | set(SUNNYBROOK_HELD_OUT)),
        "train_subjects": list(training["train_subjects"]), "n_training_slices": int(training["training_slices"]),
        "device": training["device"], "autocast": training.get("autocast"), "threads": training.get("threads"),
        "dice_weight": float(training.get("dice_weight", 1.0)),
        "history": [{"iterations": iterations, "restored": f"{MODEL_NAME} {card['version']}; optimiser and "
                                                           "sampler state not shipped"}],
    }, path)
    return path


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=Path(__file__).resolve().parents[1] / "models")
    parser.add_argument("--out", type=Path, required=True, help="run folder to write fold<k>/checkpoint.pt into")
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args(argv)
    try:
        path = restore(args.models, args.out, args.folds)
    except (FileExistsError, ValueError) as error:
        parser.error(str(error))
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
