"""Train the cine U-Net: subject-level K-fold CV on ACDC (+ Sunnybrook partial labels + MyoPS bSSFP), resumable.

python -m engines.cine.train --datasets ../shared/datasets --out engines/runs/cine_cv --folds 5 --only-folds 0 \
    --steps 800 --threads 1

Each fold trains on the other folds' ACDC patients, the non-held-out Sunnybrook patients (LV contours only:
partial-label loss) and all 33 MyoPS 2020 `C0` bSSFP volumes (another centre and vendor); it writes
<out>/fold<k>/checkpoint.pt every `--save-every` iterations and at the end. A stopped run started again with the
same arguments continues from its last checkpoint (model, optimiser, sampler state, iteration). The learning-rate
schedule follows the iteration count, so a resumed run is the same schedule. `--folds 0` trains the single
held-out split of acdc_subject_split instead. bf16 autocast only on CUDA or on a CPU with native bf16 (AMX or
AVX512-BF16 in /proc/cpuinfo); fp32 otherwise.

`--context first_phase` trains the two-channel variant: each slice is given with the same slice at the cine's
first phase (ED, R-wave triggered) as a second input channel, so that the end-systolic slice is segmented knowing
where the LV and RV were at ED (dicomnode.analysis.cine.CineModelSpec.context); at ED both channels are the same
image.

`--context neighbours` trains the 2.5-D variant: each slice is given with the previous and the next slice of its stack
at the same phase as two more input channels (the slice itself at either end of the stack; a Sunnybrook series that is
not one whole stack gives the slice itself), swapped at random in training so that the model does not depend on the
stack's direction (base to apex or back), which the node does not always know.

`--teacher RUN --distill-weight W` distils a cross-validation run into this one (Hinton, Vinyals & Dean, "Distilling
the knowledge in a neural network", 2015): each fold adds W x T^2 x KL(teacher || student) at temperature T
(`--distill-temperature`) to its loss, the teacher being RUN's model of the same fold (fold<k>/checkpoint.pt, which
must hold out exactly this fold's patients, so the held-out results stay clean), run on the same augmented batch.
It lets the shipped network learn from a wider one (engines/checkpoints/cine_w32: LVEF MAE 3.04 against 3.48 in CV, at
~4.7x the inference time) without the wider one's latency.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dicomnode.cmr.orientation import RV_DIRECTION_WINDOW_DEG
from engines.cine.augment import augment_batch
from engines.cine.data import (CANVAS_SIZE, CHANNEL_LABELS, N_CLASSES, SPLIT_SEED, SUNNYBROOK_HELD_OUT, acdc_folds,
                               acdc_subject_split, basal_slices, build_canvas, canvas_rv_directions, training_slices)
from engines.cine.model import CineUNet

TARGET_SPACING_MM = 1.5
CROP_SIZE = 128
WIDTHS = (12, 24, 48, 96, 192)
#: slices per ACDC stack that --basal-weight up-weights, counted from the base
BASAL_SLICES = 2
#: input context of the multi-channel variants (see dicomnode.analysis.cine.CONTEXTS)
CONTEXTS = ("none", "first_phase", "neighbours")
IN_CHANNELS = {"none": 1, "first_phase": 2, "neighbours": 3}


def partial_label_loss(logits: torch.Tensor, allowed: torch.Tensor, dice_weight: float = 1.0) -> torch.Tensor:
    """Marginal cross-entropy (-log of the summed probability of the allowed classes) + `dice_weight` x soft Dice on
    fully labelled pixels. logits (B, C, H, W); allowed (B, C, H, W) 0/1, the classes a pixel's label allows.
    Soft Dice can bias volumes where boundaries are uncertain, cross-entropy does not (Bertels et al., "Optimization
    with soft Dice can lead to a volumetric bias", MICCAI BrainLes 2019): a smaller weight trades overlap for volume."""
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
    return cross_entropy + dice_weight * (1.0 - dice[1:]).mean()


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float = 2.0) -> torch.Tensor:
    """T^2 x KL(softmax(teacher / T) || softmax(student / T)), summed over classes and averaged over pixels (Hinton et
    al. 2015: the T^2 keeps the soft term's gradients on the hard loss's scale). logits (B, C, H, W); the teacher's
    are not differentiated. Raises ValueError on mismatched shapes or a temperature <= 0."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ in shape")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    student = torch.log_softmax(student_logits.float() / temperature, dim=1)
    teacher = torch.log_softmax(teacher_logits.detach().float() / temperature, dim=1)
    kl = torch.nn.functional.kl_div(student, teacher, log_target=True, reduction="none").sum(dim=1)
    return kl.mean() * temperature ** 2


def load_teacher(path: Path, test_subjects: list[str], context: str, device: torch.device) -> torch.nn.Module:
    """The frozen teacher of one fold: `path` (a checkpoint of engines.cine.train) must hold out exactly the patients
    this fold holds out (`test_subjects` plus the Sunnybrook held-out ones) and take the same input `context`.
    Raises SystemExit naming the difference otherwise, FileNotFoundError where it is missing."""
    if not path.is_file():
        raise FileNotFoundError(f"teacher checkpoint {path} not found (--teacher RUN needs RUN/fold<k>/checkpoint.pt)")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    ours = sorted(set(test_subjects) | set(SUNNYBROOK_HELD_OUT))
    theirs = sorted(set(saved.get("test_subjects", [])))
    if theirs != ours:
        only_theirs, only_ours = sorted(set(theirs) - set(ours)), sorted(set(ours) - set(theirs))
        raise SystemExit(f"teacher {path} holds out other patients than this fold (teacher only: {only_theirs[:5]}, "
                         f"this fold only: {only_ours[:5]}): its knowledge of this fold's held-out patients would "
                         f"leak into the held-out results")
    if saved.get("context", "none") != context:
        raise SystemExit(f"teacher {path} was trained with --context {saved.get('context', 'none')}, not {context}")
    teacher = CineUNet(int(saved.get("in_channels", 1)), int(saved["n_classes"]), tuple(saved["widths"]))
    teacher.load_state_dict(saved["state_dict"])
    teacher.to(device, memory_format=torch.channels_last).eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True when the CPU flags list amx_bf16 or avx512_bf16 (bf16 matmuls in hardware)."""
    try:
        flags = set(cpuinfo.read_text().split())
    except OSError:
        return False
    return bool(flags & {"amx_bf16", "avx512_bf16"})


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 on CUDA and on CPUs with native bf16; None (fp32) elsewhere, where emulated bf16 is slower."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if cpu_has_native_bf16() else None


def load_cache(datasets: Path, cache_dir: Path, context: str = "none", myops_border_px: int = 0):
    """Canvas of every training-eligible slice (all ACDC, Sunnybrook not held out, MyoPS C0), cached by content key.

    Returns (images, allowed, subjects, sources, basal); images are (N, S, S), (N, 2, S, S) [slice, first phase]
    with context "first_phase", or (N, 3, S, S) [slice, previous, next slice] with context "neighbours"; basal (N,)
    bool marks ACDC's BASAL_SLICES slices nearest the base of each stack (engines.cine.data.basal_slices).
    """
    if context not in CONTEXTS:
        raise ValueError(f"context {context!r} is not one of {CONTEXTS}")
    acdc = {f"patient{n:03d}" for n in range(1, 101)}
    parts = [sorted(acdc), sorted(SUNNYBROOK_HELD_OUT), TARGET_SPACING_MM, CANVAS_SIZE, "myops-c0", "inplane-resampler",
             f"basal-{BASAL_SLICES}"]
    if context != "none":
        parts.append(context)
    if myops_border_px > 0:
        parts.append(f"myops-border-{myops_border_px}")
    key = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]
    cache = cache_dir / f"canvas_cache_{key}.npz"
    if cache.is_file():
        data = np.load(cache)
        return (with_context(data["images"], data, context), data["allowed"], data["subjects"], data["sources"],
                data["basal"])
    slices = training_slices(datasets, acdc, myops_border_px=myops_border_px)
    arrays = build_canvas(slices, TARGET_SPACING_MM, CANVAS_SIZE, first_phase=context == "first_phase",
                          neighbours=context == "neighbours")
    images, allowed = arrays[:2]
    subjects = np.array([s.subject for s in slices])
    sources = np.array([s.source for s in slices])
    basal = basal_slices(slices, BASAL_SLICES)
    cache_dir.mkdir(parents=True, exist_ok=True)
    extra = {context: arrays[2]} if context != "none" else {}
    # Each writer has its own partial file: folds trained side by side in one run folder build the same cache at once.
    handle, partial_name = tempfile.mkstemp(prefix=cache.stem + ".", suffix=".partial.npz", dir=cache_dir)
    with os.fdopen(handle, "wb") as partial:
        np.savez(partial, images=images, allowed=allowed, subjects=subjects, sources=sources, basal=basal, **extra)
    os.chmod(partial_name, 0o644)  # mkstemp's 0600 would hide the cache from other users of the run folder
    Path(partial_name).replace(cache)
    return with_context(images, extra, context), allowed, subjects, sources, basal


def sampling_record(args) -> dict[str, float]:
    """The sampling weights a checkpoint records and a resumed run must match."""
    return {"sunnybrook": float(args.sunnybrook_weight), "myops": float(args.myops_weight),
            "acdc_basal": float(getattr(args, "basal_weight", 1.0))}


def with_context(images: np.ndarray, stored, context: str) -> np.ndarray:
    """Canvas images (N, S, S) and the cache's context arrays -> the model's input channels: (N, S, S) for "none",
    (N, 2, S, S) [slice, first phase], or (N, 3, S, S) [slice, previous, next] for "neighbours"."""
    if context == "none":
        return images
    if context == "first_phase":
        return np.stack([images, stored["first_phase"]], axis=1)
    return np.concatenate([images[:, None], stored["neighbours"]], axis=1)


def swap_neighbours(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(B, 3, H, W) [slice, previous, next] -> the same with previous and next swapped in a random half of the batch,
    so that a "neighbours" model does not learn which way the stack runs."""
    swap = (torch.rand(x.shape[0], generator=generator) < 0.5).to(x.device)
    swapped = x[:, [0, 2, 1]]
    return torch.where(swap.view(-1, 1, 1, 1), swapped, x)


def fold_plan(datasets: Path, n_folds: int, seed: int) -> list[tuple[str, list[str]]]:
    """[(run name, held-out ACDC patients)]: K folds, or the single held-out split when n_folds is 0."""
    if n_folds == 0:
        return [("split", acdc_subject_split(datasets, seed)[1])]
    return [(f"fold{k}", test) for k, test in enumerate(acdc_folds(n_folds, seed))]


def train_one(name: str, test_subjects: list[str], data, args, device: torch.device) -> Path:
    """Train (or resume) one model; returns its checkpoint path."""
    images, allowed, subjects, sources, basal = data
    border_px = int(getattr(args, "myops_border_px", 0))
    out = args.out / name
    out.mkdir(parents=True, exist_ok=True)
    path = out / "checkpoint.pt"
    basal_weight = float(getattr(args, "basal_weight", 1.0))
    sampling_weight = np.select([sources == "sunnybrook", sources == "myops"],
                                [args.sunnybrook_weight, args.myops_weight], 1.0) * np.where(basal, basal_weight, 1.0)
    keep = ~np.isin(subjects, test_subjects) & (sampling_weight > 0)  # weight 0: not training data at all
    weights_np = sampling_weight[keep]
    images_t = torch.from_numpy(images[keep]).to(device)
    allowed_t = torch.from_numpy(allowed[keep]).to(device)
    weights = torch.from_numpy(weights_np)
    pose_margin = getattr(args, "pose_margin", None)
    window = None
    directions_t = None
    if pose_margin is not None:
        low, high = RV_DIRECTION_WINDOW_DEG
        window = (low - pose_margin, high + pose_margin)
        directions_t = torch.from_numpy(canvas_rv_directions(allowed[keep], TARGET_SPACING_MM))
    in_channels = IN_CHANNELS[args.context]
    widths = tuple(int(w) for w in (getattr(args, "widths", None) or WIDTHS))
    model = CineUNet(in_channels, N_CLASSES, widths).to(device, memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(args.seed)
    distill_weight = float(getattr(args, "distill_weight", 0.0))
    temperature = float(getattr(args, "distill_temperature", 2.0))
    teacher_run = getattr(args, "teacher", None)
    distillation = {"teacher": str(teacher_run) if teacher_run and distill_weight > 0 else None,
                    "weight": distill_weight if teacher_run else 0.0, "temperature": temperature}
    teacher = load_teacher(Path(teacher_run) / name / "checkpoint.pt", test_subjects, args.context, device) \
        if distillation["teacher"] else None
    iteration, elapsed_before = 0, 0.0
    history: list[dict] = []
    resumed_autocast = None
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=False)
        if saved.get("context", "none") != args.context:
            raise SystemExit(f"{path} was trained with --context {saved.get('context', 'none')}, not {args.context}: "
                             f"use another --out")
        weights_now = sampling_record(args)
        weights_then = {"acdc_basal": 1.0, **saved.get("sampling_weights", weights_now)}  # older runs: no basal weight
        if weights_then != weights_now:
            raise SystemExit(f"{path} was trained with sampling weights {weights_then}, not {weights_now} "
                             f"(--sunnybrook-weight, --myops-weight, --basal-weight): use another --out")
        if tuple(saved.get("widths", WIDTHS)) != widths:
            raise SystemExit(f"{path} was trained with --widths {' '.join(map(str, saved['widths']))}, not "
                             f"{' '.join(map(str, widths))}: use another --out")
        if int(saved.get("myops_border_px", 0)) != border_px:
            raise SystemExit(f"{path} was trained with --myops-border-px {saved.get('myops_border_px', 0)}, not "
                             f"{border_px}: use another --out")
        then = saved.get("distillation", {"teacher": None, "weight": 0.0, "temperature": 2.0})
        if then["teacher"] != distillation["teacher"] or (distillation["teacher"] and then != distillation):
            raise SystemExit(f"{path} was trained with distillation {then}, not {distillation} (--teacher, "
                             f"--distill-weight, --distill-temperature): use another --out")
        if saved.get("final") and saved["iterations"] >= args.steps:
            print(f"{name}: already trained ({saved['iterations']} iterations)", flush=True)
            return path
        model.load_state_dict(saved["state_dict"])
        optimiser.load_state_dict(saved["optimiser"])
        generator.set_state(saved["generator"])
        iteration, elapsed_before = int(saved["iterations"]), float(saved["elapsed_s"])
        history = list(saved.get("history", []))
        resumed_autocast = saved.get("autocast")
        if saved.get("final"):  # a finished run carried to a larger budget: the schedule re-enters at this iteration
            history.append({"iterations": iteration, "steps": int(saved["steps"]), "continued_to": args.steps})
        if saved.get("pose_margin_deg") != pose_margin:
            history.append({"iterations": iteration, "pose_margin_deg": saved.get("pose_margin_deg"),
                            "pose_margin_deg_from_here": pose_margin})
        if float(saved.get("dice_weight", 1.0)) != args.dice_weight:
            history.append({"iterations": iteration, "dice_weight": float(saved.get("dice_weight", 1.0)),
                            "dice_weight_from_here": args.dice_weight})
        print(f"{name}: resuming at iteration {iteration}"
              + (f" (finished at {iteration} of {saved['steps']}; continued to {args.steps})" if saved.get("final")
                 else ""), flush=True)
    amp = autocast_dtype(device)
    if resumed_autocast not in (None, str(amp)):
        # resumed on another host (bf16 there, fp32 here or back): the record says where the precision changed
        history.append({"iterations": iteration, "autocast": resumed_autocast, "autocast_from_here": str(amp)})
    if directions_t is not None:
        print(f"{name}: rotations restricted to the anatomical poses {window} for "
              f"{int(torch.isfinite(directions_t).sum())} slices with an RV", flush=True)
    print(f"{name}: {int(keep.sum())} training slices ({int((sources[keep] == 'sunnybrook').sum())} Sunnybrook, "
          f"{int((sources[keep] == 'myops').sum())} MyoPS), {len(test_subjects)} ACDC held out, device {device}, "
          f"autocast {amp}", flush=True)
    started = time.time()

    def save(final: bool):
        checkpoint = {
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimiser": optimiser.state_dict(), "generator": generator.get_state(),
            "widths": widths, "n_classes": N_CLASSES, "channel_labels": CHANNEL_LABELS,
            "in_channels": in_channels, "context": args.context,
            "target_spacing_mm": TARGET_SPACING_MM, "crop_size": CROP_SIZE, "iterations": iteration,
            "steps": args.steps, "batch": args.batch, "elapsed_s": elapsed_before + time.time() - started,
            "final": final, "seed": args.seed, "test_subjects": list(test_subjects) + list(SUNNYBROOK_HELD_OUT),
            "train_subjects": sorted(set(subjects[keep].tolist())), "n_training_slices": int(keep.sum()),
            "device": str(device), "autocast": str(amp), "threads": args.threads, "history": history,
            "dice_weight": args.dice_weight, "myops_border_px": border_px,
            "sampling_weights": sampling_record(args), "pose_margin_deg": pose_margin,
            "distillation": distillation,
        }
        partial = path.with_suffix(".partial")
        torch.save(checkpoint, partial)
        partial.replace(path)

    model.train()
    running: list[float] = []
    last_log = time.time()
    while iteration < args.steps:
        warmup = min(1.0, (iteration + 1) / 100)
        for group in optimiser.param_groups:
            group["lr"] = args.lr * warmup * (1 - iteration / args.steps) ** 0.9
        index = torch.multinomial(weights, args.batch, replacement=True, generator=generator).to(device)
        x, target = augment_batch(images_t[index], allowed_t[index], CROP_SIZE, N_CLASSES, generator,
                                  directions=None if directions_t is None else directions_t[index.cpu()],
                                  window_deg=window)
        if args.context == "neighbours":
            x = swap_neighbours(x, generator)
        x = x.contiguous(memory_format=torch.channels_last)  # ~1.3x faster convolutions under bf16 on this CPU
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(x)
        loss = partial_label_loss(logits.float(), target, args.dice_weight)
        if teacher is not None:
            with torch.no_grad(), torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                teacher_logits = teacher(x)
            loss = loss + distill_weight * distillation_loss(logits, teacher_logits, temperature)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        running.append(float(loss.detach()))
        iteration += 1
        if iteration % 25 == 0:
            now = time.time()
            print(f"{name} it {iteration}/{args.steps} {(now - started) / 60:.1f} min, {(now - last_log) / len(running):.2f} "
                  f"s/it, loss {np.mean(running):.4f} lr {optimiser.param_groups[0]['lr']:.2e}", flush=True)
            running, last_log = [], now
        if iteration % args.save_every == 0:
            save(final=False)
    save(final=True)
    total = elapsed_before + time.time() - started
    (out / "train_summary.json").write_text(json.dumps(
        {"iterations": iteration, "elapsed_s": round(total, 1), "s_per_iteration": round(total / max(iteration, 1), 3),
         "batch": args.batch, "slices": int(keep.sum()), "device": str(device), "autocast": str(amp),
         "threads": args.threads}, indent=1))
    print(f"{name}: done, {iteration} iterations in {total / 60:.1f} min", flush=True)
    return path


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "datasets")
    parser.add_argument("--out", type=Path, default=Path("engines/runs/cine_cv"))
    parser.add_argument("--folds", type=int, default=5, help="K of the ACDC K-fold CV; 0: the single held-out split")
    parser.add_argument("--only-folds", type=int, nargs="*", default=None, help="train only these fold indices")
    parser.add_argument("--steps", type=int, default=1600, help="iterations per model")
    parser.add_argument("--save-every", type=int, default=50)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=SPLIT_SEED)
    parser.add_argument("--context", choices=CONTEXTS, default="none",
                        help="first_phase: a second input channel with the same slice at the first phase (ED); "
                             "neighbours: 2.5-D, the previous and next slice of the stack as two more channels")
    parser.add_argument("--sunnybrook-weight", type=float, default=4.0, help="sampling weight of a Sunnybrook slice")
    parser.add_argument("--myops-weight", type=float, default=1.0,
                        help="sampling weight of a MyoPS bSSFP slice (0 with --sunnybrook-weight 0: ACDC only)")
    parser.add_argument("--basal-weight", type=float, default=1.0,
                        help=f"sampling weight multiplier of the {BASAL_SLICES} ACDC slices nearest the base of each "
                             "stack (engines.cine.data.basal_slices); recorded in the checkpoint")
    parser.add_argument("--dice-weight", type=float, default=1.0,
                        help="loss = cross-entropy + W x soft Dice (0: cross-entropy alone); recorded in the checkpoint")
    parser.add_argument("--myops-border-px", type=int, default=0,
                        help="MyoPS bSSFP myocardium borders as partial labels this many pixels wide (0: as labelled;"
                             " engines.cine.data.soften_wall_borders); recorded in the checkpoint")
    parser.add_argument("--pose-margin", type=float, default=None, metavar="DEGREES",
                        help="rotate each slice with an RV label only into the node's anatomical poses (its RV inside "
                             "RV_DIRECTION_WINDOW_DEG widened by DEGREES on each side) instead of any angle (default: "
                             "any angle, the shipped recipe); recorded in the checkpoint")
    parser.add_argument("--widths", type=int, nargs="+", default=list(WIDTHS),
                        help=f"U-Net channel widths per level (default {' '.join(map(str, WIDTHS))}; one pooling "
                             "between levels, so 5 levels need a crop divisible by 16); recorded in the checkpoint")
    parser.add_argument("--teacher", type=Path, default=None, metavar="RUN",
                        help="distil RUN's model of the same fold (RUN/fold<k>/checkpoint.pt, holding out the same "
                             "patients) into this one; needs --distill-weight > 0; recorded in the checkpoint")
    parser.add_argument("--distill-weight", type=float, default=0.0,
                        help="weight W of the distillation term W x T^2 x KL(teacher || student) (0: none)")
    parser.add_argument("--distill-temperature", type=float, default=2.0, help="softmax temperature T of distillation")
    args = parser.parse_args(argv)
    if args.distill_weight < 0 or args.distill_temperature <= 0:
        parser.error("--distill-weight must be >= 0 and --distill-temperature > 0")
    if (args.teacher is None) != (args.distill_weight == 0):
        parser.error("--teacher and --distill-weight > 0 go together")
    if len(args.widths) < 2 or min(args.widths) < 1 or CROP_SIZE % 2 ** (len(args.widths) - 1):
        parser.error(f"--widths needs 2 or more positive widths and at most log2({CROP_SIZE}) poolings")
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    if args.basal_weight <= 0:
        parser.error(f"--basal-weight must be > 0, got {args.basal_weight}")
    if args.dice_weight < 0:
        parser.error(f"--dice-weight must be >= 0, got {args.dice_weight}")
    if args.pose_margin is not None and not 0 <= args.pose_margin < 135:
        parser.error(f"--pose-margin must be within 0-135 degrees, got {args.pose_margin}")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.myops_border_px < 0:
        parser.error(f"--myops-border-px must be >= 0, got {args.myops_border_px}")
    data = load_cache(args.datasets, args.out, args.context, args.myops_border_px)
    plan = fold_plan(args.datasets, args.folds, args.seed)
    if args.only_folds is not None:
        unknown = set(args.only_folds) - set(range(len(plan)))
        if unknown:
            parser.error(f"--only-folds {sorted(unknown)} outside 0..{len(plan) - 1}")
        plan = [plan[k] for k in args.only_folds]
    return [train_one(name, test, data, args, device) for name, test in plan]


if __name__ == "__main__":
    main()
