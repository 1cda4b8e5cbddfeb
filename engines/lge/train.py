"""Train the LGE U-Net on EMIDEC: case-level k-fold cross-validation, then one final model on every case.

    python -m engines.lge.train --data /work/shared/datasets/emidec-lge-png --out engines/runs/lge \
        --folds 5 --epochs 12 --final-epochs 30 --final-first

Writes <out>/fold<k>/model.pt (+ held-out case names) and <out>/final/model.pt; a GPU is used when present.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engines.lge.augment import crop_and_augment
from engines.lge.data import ASSUMED_PNG_SPACING_MM, Case, case_folds, load_cases
from engines.lge.model import LGEUNet

DEFAULT_DATA = Path("/work/shared/datasets/emidec-lge-png")
#: model grid: 1.5 source (PNG) pixels per model pixel, so the 96 crop spans 144 PNG pixels
MODEL_SPACING_MM = 2.25
CROP_SIZE = 96


#: cross-entropy weights per class: scar and MVO are rare (a few % of the crop) and were never predicted unweighted
CLASS_WEIGHTS = (1.0, 1.0, 1.0, 4.0, 4.0)


def dice_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Class-weighted cross-entropy plus soft Dice over the foreground classes present in the ground truth
    (logits (N,C,D,H,W), labels (N,D,H,W)); absent classes are left to the cross-entropy."""
    weights = torch.tensor(CLASS_WEIGHTS, device=logits.device, dtype=logits.dtype)
    ce = F.cross_entropy(logits, labels, weight=weights)
    probabilities = logits.softmax(dim=1)
    one_hot = F.one_hot(labels, logits.shape[1]).permute(0, 4, 1, 2, 3).to(logits.dtype)
    dims = (0, 2, 3, 4)
    intersection = (probabilities * one_hot).sum(dims)
    truth = one_hot.sum(dims)
    dice = (2 * intersection + 1.0) / (probabilities.sum(dims) + truth + 1.0)
    present = truth[1:] > 0
    return ce + ((1 - dice[1:]) * present).sum() / present.sum().clamp(min=1)


def train_model(
    cases: list[Case], epochs: int, seed: int, base_channels: int, device: torch.device, log, learning_rate: float = 3e-3,
    after_epoch=None,
) -> LGEUNet:
    """One model trained on `cases` for `epochs` passes (one case per step, whole stack); `after_epoch(model, epoch)`
    is called after each pass (e.g. to save a partial checkpoint)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = LGEUNet(base_channels=base_channels).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    total_steps = epochs * len(cases)
    warmup = min(50, total_steps // 10)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup))) * 0.98 + 0.02

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, schedule)
    scale = MODEL_SPACING_MM / ASSUMED_PNG_SPACING_MM[0]
    started = time.time()
    step = 0
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(len(cases))
        losses = []
        for index in order:
            case = cases[index]
            image, labels = crop_and_augment(case.image, case.labels, rng, CROP_SIZE, scale, augment=True)
            logits = model(image[None].to(device))
            loss = dice_cross_entropy(logits, labels[None].to(device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimiser.step()
            scheduler.step()
            losses.append(loss.item())
            step += 1
        log(f"epoch {epoch + 1}/{epochs} loss {np.mean(losses):.4f} lr {scheduler.get_last_lr()[0]:.2e} "
            f"elapsed {time.time() - started:.0f}s")
        if after_epoch is not None:
            after_epoch(model, epoch + 1)
    return model.eval()


def save_checkpoint(model: LGEUNet, path: Path, **metadata) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "config": model.config, "metadata": metadata}, path)


def load_checkpoint(path: Path) -> tuple[LGEUNet, dict]:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = LGEUNet(**checkpoint["config"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), checkpoint["metadata"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=Path("engines/runs/lge"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=12, help="epochs per cross-validation fold")
    parser.add_argument("--final-epochs", type=int, default=30, help="epochs of the final model on all cases (0: skip)")
    parser.add_argument("--only-folds", type=str, default="", help="comma-separated fold indices to run (default all; 'none': final model only)")
    parser.add_argument("--final-first", action="store_true", help="train the shipped final model before the folds")
    parser.add_argument("--base-channels", type=int, default=8)
    parser.add_argument("--seed", type=int, default=20261121)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--save-partial", action="store_true",
                        help="after every epoch write partial.pt beside model.pt (mid-schedule; for interrupted runs)")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.final_epochs < 0:
        parser.error("--epochs must be >= 1 and --final-epochs >= 0")
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / "train.log"

    def log(message: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {message}"
        print(line, flush=True)
        with open(log_path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    cases = load_cases(args.data)
    folds = case_folds(cases, args.folds, args.seed)
    (args.out / "folds.json").write_text(json.dumps({"seed": args.seed, "folds": folds}, indent=1))
    if args.only_folds == "none":
        selected = []
    else:
        selected = [int(f) for f in args.only_folds.split(",") if f] or list(range(args.folds))
    settings = {"epochs": args.epochs, "base_channels": args.base_channels, "seed": args.seed, "device": str(device),
                "crop_size": CROP_SIZE, "model_spacing_mm": MODEL_SPACING_MM}
    def partial_saver(folder: Path, **metadata):
        if not args.save_partial:
            return None

        def save(model: LGEUNet, epoch: int) -> None:
            state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            folder.mkdir(parents=True, exist_ok=True)
            torch.save({"state_dict": state, "config": model.config,
                        "metadata": {**metadata, "completed_epochs": epoch}}, folder / "partial.pt")
        return save

    def run_folds() -> None:
        for fold in selected:
            held_out = set(folds[fold])
            training = [c for c in cases if c.name not in held_out]
            log(f"fold {fold}: {len(training)} training cases, {len(held_out)} held out, device {device}")
            model = train_model(training, args.epochs, args.seed + fold, args.base_channels, device, log,
                                after_epoch=partial_saver(args.out / f"fold{fold}", fold=fold,
                                                          held_out=sorted(held_out), **settings))
            save_checkpoint(model.cpu(), args.out / f"fold{fold}" / "model.pt", fold=fold, held_out=sorted(held_out),
                            **settings)

    def run_final() -> None:
        if args.final_epochs:
            log(f"final model: all {len(cases)} cases, {args.final_epochs} epochs")
            model = train_model(cases, args.final_epochs, args.seed + 1000, args.base_channels, device, log,
                                after_epoch=partial_saver(args.out / "final", fold=None, held_out=[],
                                                          **{**settings, "epochs": args.final_epochs}))
            save_checkpoint(model.cpu(), args.out / "final" / "model.pt", fold=None, held_out=[],
                            **{**settings, "epochs": args.final_epochs})

    for stage in ((run_final, run_folds) if args.final_first else (run_folds, run_final)):
        stage()
    log("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
