"""Pretrain the cine U-Net encoder: masked image modelling + line heatmaps + relative stack position; resumable.

python -m engines.ssl.pretrain --cache engines/runs/ssl/data/cache.npz --out engines/runs/ssl/pretrain_all \
    --minutes 12 --w-mim 1 --w-lines 1 --w-position 1
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engines.ssl.model import CPU_WIDTHS, PretextNet

GPU_WIDTHS = (12, 24, 48, 96, 192)
CROP = 96
PATCH = 8
MASK_RATIO = 0.6
SEED = 2026


def held_out_subjects(datasets: Path | None = None) -> list[str]:
    """The ACDC subjects the few-shot evaluation tests on: never seen in pretraining (cine helper's split, seed 2026)."""
    from engines.cine.data import acdc_subject_split

    return acdc_subject_split(datasets or Path("."))[1]


def load_cache(path: Path, exclude_subjects: set[str]) -> dict[str, np.ndarray]:
    data = dict(np.load(path))
    keep = ~np.isin(data["subject"], sorted(exclude_subjects))
    return {key: value[keep] for key, value in data.items()}


def random_patch_mask(batch: int, size: int, generator: torch.Generator, ratio: float = MASK_RATIO,
                      patch: int = PATCH) -> torch.Tensor:
    """(B, 1, size, size) float mask, 1 = hidden: a random `ratio` of the patch x patch cells of each image."""
    cells = size // patch
    scores = torch.rand(batch, cells * cells, generator=generator)
    hidden = int(round(ratio * cells * cells))
    order = scores.argsort(dim=1)
    grid = torch.zeros(batch, cells * cells)
    grid.scatter_(1, order[:, :hidden], 1.0)
    grid = grid.view(batch, 1, cells, cells)
    return grid.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)


def sample_batch(data: dict[str, torch.Tensor], batch: int, generator: torch.Generator, crop: int = CROP):
    """Random frames, random crop from the canvas and the same random flip / 90-degree turn for image and lines."""
    count, canvas = data["images"].shape[0], data["images"].shape[-1]
    index = torch.randint(0, count, (batch,), generator=generator)
    images, lines = data["images"][index].float(), data["lines"][index].float() / 255.0
    top = torch.randint(0, canvas - crop + 1, (batch,), generator=generator)
    left = torch.randint(0, canvas - crop + 1, (batch,), generator=generator)
    turns = torch.randint(0, 4, (batch,), generator=generator)
    flips = torch.rand(batch, generator=generator) < 0.5
    out_images, out_lines = [], []
    for b in range(batch):
        pair = torch.stack([images[b], lines[b]])[:, top[b]:top[b] + crop, left[b]:left[b] + crop]
        pair = torch.rot90(pair, int(turns[b]), dims=(1, 2))
        if flips[b]:
            pair = pair.flip(2)
        out_images.append(pair[0])
        out_lines.append(pair[1])
    return (torch.stack(out_images).unsqueeze(1), torch.stack(out_lines).unsqueeze(1),
            data["has_lines"][index], data["position"][index])


def pretext_losses(outputs: dict[str, torch.Tensor], image: torch.Tensor, mask: torch.Tensor, lines: torch.Tensor,
                   has_lines: torch.Tensor, position: torch.Tensor) -> dict[str, torch.Tensor]:
    """L1 on masked pixels; BCE on line heatmaps of frames that have crossing planes; L1 on known positions."""
    mim = ((outputs["reconstruction"] - image).abs() * mask).sum() / mask.sum().clamp_min(1.0)
    zero = outputs["position"].sum() * 0.0
    if bool(has_lines.any()):
        line = F.binary_cross_entropy_with_logits(outputs["line_logits"][has_lines], lines[has_lines])
    else:
        line = zero + outputs["line_logits"].sum() * 0.0
    known = torch.isfinite(position)
    pos = (outputs["position"][known] - position[known]).abs().mean() if bool(known.any()) else zero
    return {"mim": mim, "lines": line, "position": pos}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, required=True, help="cache.npz from engines.ssl.build_dataset")
    parser.add_argument("--out", type=Path, required=True, help="folder for checkpoint.pt + pretrain_summary.json")
    parser.add_argument("--minutes", type=float, default=12.0, help="wall-time budget of this invocation")
    parser.add_argument("--steps", type=int, default=0, help="total optimiser steps (0: until the time budget)")
    parser.add_argument("--batch", type=int, default=0, help="0: 16 on CPU, 64 on GPU")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--w-mim", type=float, default=1.0)
    parser.add_argument("--w-lines", type=float, default=1.0)
    parser.add_argument("--w-position", type=float, default=1.0)
    parser.add_argument("--widths", type=str, default="", help="comma list; default CPU 8..128, GPU 12..192")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--keep-held-out", action="store_true", help="do not drop the few-shot test subjects")
    parser.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint in --out")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    widths = tuple(int(w) for w in args.widths.split(",")) if args.widths else (GPU_WIDTHS if device.type == "cuda" else CPU_WIDTHS)
    batch = args.batch or (64 if device.type == "cuda" else 16)
    if min(args.w_mim, args.w_lines, args.w_position) < 0 or args.w_mim + args.w_lines + args.w_position == 0:
        raise SystemExit("multitask weights must be >= 0 and not all zero")
    excluded = set() if args.keep_held_out else set(held_out_subjects())
    arrays = load_cache(args.cache, excluded)
    data = {"images": torch.from_numpy(arrays["images"]), "lines": torch.from_numpy(arrays["lines"]),
            "has_lines": torch.from_numpy(arrays["has_lines"]), "position": torch.from_numpy(arrays["position"])}
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint_path = args.out / "checkpoint.pt"
    model = PretextNet(widths).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(args.seed)
    step, history, elapsed_before = 0, [], 0.0
    weights = {"mim": args.w_mim, "lines": args.w_lines, "position": args.w_position}
    if checkpoint_path.is_file() and not args.no_resume:
        state = torch.load(checkpoint_path, map_location=device, weights_only=False)
        if tuple(state["widths"]) != widths or state["weights"] != weights:
            raise SystemExit(f"{checkpoint_path} was trained with widths {state['widths']} / weights {state['weights']}; "
                             "use another --out or --no-resume")
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        generator.set_state(state["generator"])
        step, history, elapsed_before = state["step"], state["history"], state["elapsed_s"]
        print(f"resumed at step {step}", flush=True)
    print(f"{len(arrays['images'])} frames ({int(arrays['has_lines'].sum())} with lines, "
          f"{int(np.isfinite(arrays['position']).sum())} with position), excluded {len(excluded)} held-out subjects, "
          f"device {device}, widths {widths}, batch {batch}, weights {weights}", flush=True)

    def save():
        torch.save({"model": model.state_dict(), "optimiser": optimiser.state_dict(), "generator": generator.get_state(),
                    "step": step, "history": history, "elapsed_s": elapsed_before + time.time() - started,
                    "widths": widths, "weights": weights, "batch": batch, "crop": CROP, "spacing_mm": 2.0,
                    "backbone": {k: v.detach().cpu() for k, v in model.backbone.state_dict().items()}}, checkpoint_path)

    started = time.time()
    budget = args.minutes * 60.0
    total_steps = args.steps
    running: dict[str, list[float]] = {k: [] for k in weights}
    model.train()
    while (time.time() - started) < budget and (not total_steps or step < total_steps):
        progress = step / total_steps if total_steps else min(1.0, (time.time() - started) / budget)
        for group in optimiser.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / 50) * (0.5 * (1 + np.cos(np.pi * progress)) * 0.95 + 0.05)
        image, lines, has_lines, position = sample_batch(data, batch, generator)
        mask = random_patch_mask(batch, CROP, generator)
        image, lines, mask = image.to(device), lines.to(device), mask.to(device)
        outputs = model(image * (1 - mask))
        losses = pretext_losses(outputs, image, mask, lines, has_lines.to(device), position.to(device))
        loss = sum(weights[k] * losses[k] for k in weights if weights[k] > 0)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        step += 1
        for key in running:
            running[key].append(float(losses[key].detach()))
        if step % 25 == 0:
            entry = {"step": step, "t_s": round(elapsed_before + time.time() - started, 1),
                     **{k: round(float(np.mean(v)), 4) for k, v in running.items()}}
            history.append(entry)
            print(json.dumps(entry), flush=True)
            running = {k: [] for k in weights}
        if step % 200 == 0:
            save()
    save()
    summary = {"steps": step, "elapsed_s": round(elapsed_before + time.time() - started, 1), "device": str(device),
               "widths": widths, "batch": batch, "weights": weights, "frames": int(len(arrays["images"])),
               "final": history[-1] if history else None}
    (args.out / "pretrain_summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
