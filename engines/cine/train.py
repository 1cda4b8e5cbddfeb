"""Train the cine U-Net on every labelled cine set (subject-level split, partial-label loss); time-boxed, CPU or CUDA.

python -m engines.cine.train --datasets ../shared/datasets --out engines/runs/cine --minutes 40
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from engines.cine.augment import augment_batch
from engines.cine.data import (CANVAS_SIZE, CHANNEL_LABELS, N_CLASSES, SPLIT_SEED, acdc_subject_split, build_canvas,
                               sunnybrook_link, training_slices, SUNNYBROOK_HELD_OUT)
from engines.cine.model import CineUNet

TARGET_SPACING_MM = 1.5
CROP_SIZE = 128
WIDTHS = (12, 24, 48, 96, 192)


def partial_label_loss(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Marginal cross-entropy (-log of the summed probability of the allowed classes) + soft Dice on fully labelled pixels."""
    log_all = torch.logsumexp(logits, dim=1)
    log_allowed = torch.logsumexp(logits.masked_fill(allowed == 0, -1e4), dim=1)
    cross_entropy = (log_all - log_allowed).mean()
    known = (allowed.sum(dim=1, keepdim=True) == 1).float()
    probs = torch.softmax(logits, dim=1) * known
    target = allowed * known
    dims = (0, 2, 3)
    intersection = (probs * target).sum(dims)
    denominator = probs.sum(dims) + target.sum(dims)
    dice = (2 * intersection + 1.0) / (denominator + 1.0)
    return cross_entropy + (1.0 - dice[1:]).mean()


def load_cache(datasets: Path, cache: Path, train_subjects: set[str]):
    if cache.is_file():
        data = np.load(cache)
        return data["images"], data["allowed"], data["is_sunnybrook"]
    slices = training_slices(datasets, train_subjects)
    images, allowed = build_canvas(slices, TARGET_SPACING_MM, CANVAS_SIZE)
    is_sunnybrook = np.array([s.source == "sunnybrook" for s in slices])
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, images=images, allowed=allowed, is_sunnybrook=is_sunnybrook)
    return images, allowed, is_sunnybrook


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "datasets")
    parser.add_argument("--out", type=Path, default=Path("engines/runs/cine"))
    parser.add_argument("--minutes", type=float, default=40.0, help="training wall-time budget")
    parser.add_argument("--max-iterations", type=int, default=0, help="stop after this many iterations (0: time only)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=SPLIT_SEED)
    parser.add_argument("--sunnybrook-weight", type=float, default=4.0, help="sampling weight of a Sunnybrook slice")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    train_acdc, test_acdc = acdc_subject_split(args.datasets, args.seed)
    sunnybrook_train = sorted(p for p in sunnybrook_link(args.datasets) if p not in SUNNYBROOK_HELD_OUT)
    args.out.mkdir(parents=True, exist_ok=True)
    train_subjects = sorted(set(train_acdc) | set(sunnybrook_train))
    cache_key = hashlib.sha256(json.dumps([train_subjects, TARGET_SPACING_MM, CANVAS_SIZE]).encode()).hexdigest()[:12]
    images, allowed, is_sunnybrook = load_cache(args.datasets, args.out / f"canvas_cache_{cache_key}.npz", set(train_subjects))
    print(f"{len(images)} training slices ({is_sunnybrook.sum()} Sunnybrook), device {device}", flush=True)
    images_t = torch.from_numpy(images).to(device)
    allowed_t = torch.from_numpy(allowed).to(device)
    weights = torch.from_numpy(np.where(is_sunnybrook, args.sunnybrook_weight, 1.0))

    model = CineUNet(1, N_CLASSES, WIDTHS).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(args.seed)
    budget = args.minutes * 60.0
    started = time.time()
    iteration, running = 0, []

    def save(final: bool):
        checkpoint = {
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "widths": WIDTHS, "n_classes": N_CLASSES, "channel_labels": CHANNEL_LABELS,
            "target_spacing_mm": TARGET_SPACING_MM, "crop_size": CROP_SIZE, "iterations": iteration,
            "batch": args.batch, "elapsed_s": time.time() - started, "final": final, "seed": args.seed,
            "train_subjects": train_acdc + sunnybrook_train, "test_subjects": test_acdc + list(SUNNYBROOK_HELD_OUT),
            "n_training_slices": int(len(images)), "device": str(device),
        }
        torch.save(checkpoint, args.out / "checkpoint.pt")

    model.train()
    while True:
        elapsed = time.time() - started
        if elapsed >= budget or (args.max_iterations and iteration >= args.max_iterations):
            break
        progress = elapsed / budget
        if args.max_iterations:
            progress = max(progress, iteration / args.max_iterations)
        warmup = min(1.0, (iteration + 1) / 100)
        for group in optimiser.param_groups:
            group["lr"] = args.lr * warmup * (1 - progress) ** 0.9
        index = torch.multinomial(weights, args.batch, replacement=True, generator=generator).to(device)
        x, target = augment_batch(images_t[index], allowed_t[index], CROP_SIZE, N_CLASSES, generator)
        loss = partial_label_loss(model(x), target)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        running.append(float(loss.detach()))
        iteration += 1
        if iteration % 50 == 0:
            print(f"it {iteration} t {elapsed/60:.1f} min loss {np.mean(running):.4f} lr {optimiser.param_groups[0]['lr']:.2e}",
                  flush=True)
            running = []
        if iteration % 500 == 0:
            save(final=False)
    save(final=True)
    (args.out / "train_summary.json").write_text(json.dumps(
        {"iterations": iteration, "elapsed_s": time.time() - started, "batch": args.batch, "slices": int(len(images)),
         "device": str(device)}, indent=1))
    print(f"done: {iteration} iterations in {(time.time()-started)/60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
