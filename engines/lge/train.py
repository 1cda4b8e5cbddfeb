"""Train the LGE segmentation network on EMIDEC + MyoPS: patient-level k-fold cross-validation, leave-one-centre-
out runs, resumable from checkpoints, on CUDA when present (else the CPU, both cores; bf16 autocast where the CPU
has native bf16 matrix units, which measurably helps only there).

    python -m engines.lge.train --out engines/runs/lge2 --folds 5 --steps 1500            # every fold
    python -m engines.lge.train --out engines/runs/lge2 --only-folds 0 --steps 1500       # one fold (resumes)
    python -m engines.lge.train --out engines/runs/lge2_loco --train-centres emidec --steps 1200

Each run folder holds checkpoint.pt (model, optimiser, schedule, RNG, step: a stopped run continues where it
stopped), model.pt when finished, held-out case names, and train.log.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from dicomnode.analysis.lge import normalise_zscore
from engines.lge.augment import sample_patch
from engines.lge.data import Case, case_folds, load_acdc_cine, load_cases
from engines.lge.losses import deep_supervision_loss, merge_matrix
from dicomnode.cmr.orientation import RV_DIRECTION_WINDOW_DEG
from engines.lge.model import CLASS_NAMES, DEFAULT_FILTERS, LGESliceUNet
from engines.lge.pose import DEFAULT_PLAN, load_plan

#: the preprocessing plan (nnU-Net's "plans"): copied onto the model card, read back by the node
MODEL_SPACING_MM = 1.5
PATCH_SIZE = 96
BATCH_SIZE = 16
SEED = 20261130


class SliceSampler:
    """Random training patches, half from each centre present (so the 33 MyoPS patients weigh as much as the
    100 EMIDEC ones), each slice normalised with its whole stack as the node does; with `context` 1 each patch has
    three channels, the slice, its previous and its next slice (engines.lge.model.with_neighbours). With
    `pose_window` (degrees) a case with an entry in `rv_directions` (engines.lge.pose) is rotated only into the poses
    that put its RV inside the window (engines.lge.augment.sample_patch); other cases, any rotation."""

    def __init__(self, cases: list[Case], rng: np.random.Generator, patch: int = PATCH_SIZE,
                 zoom_probability: float = 1.0, context: int = 0, intensity_probability: float = 1.0,
                 auxiliary: list[Case] = (), auxiliary_share: float = 0.0,
                 pose_window: tuple[float, float] | None = None, rv_directions: dict[str, float] | None = None):
        self.rng = rng
        self.pose_window = pose_window
        self.rv_directions = rv_directions or {}
        self.patch = patch
        self.zoom_probability = zoom_probability
        self.intensity_probability = intensity_probability
        self.context = context
        self.by_centre: dict[str, list[tuple[np.ndarray, np.ndarray, Case]]] = {}
        for case in cases:
            self.by_centre.setdefault(case.centre, []).extend(self._labelled_slices(case))
        self.centres = sorted(self.by_centre)
        self.classes = len(CLASS_NAMES)
        self.auxiliary = [item for case in auxiliary for item in self._labelled_slices(case)]
        self.auxiliary_share = auxiliary_share if self.auxiliary else 0.0

    def _labelled_slices(self, case: Case) -> list[tuple[np.ndarray, np.ndarray, Case]]:
        """(image, labels, case) of each labelled slice, normalised with its whole stack as the node does."""
        normalised = normalise_zscore(case.image)
        last = case.image.shape[0] - 1
        return [(normalised[index] if not self.context else
                 normalised[[index, max(index - 1, 0), min(index + 1, last)]], case.labels[index], case)
                for index in range(case.image.shape[0]) if case.labels[index].any()]

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The last round(`auxiliary_share` x size) patches of a batch come from the auxiliary (cine) cases, the
        others alternate between the LGE centres."""
        images, labels, merges, available = [], [], [], []
        lge = size - int(round(self.auxiliary_share * size))
        for item in range(size):
            pool = self.by_centre[self.centres[item % len(self.centres)]] if item < lge else self.auxiliary
            image, label, case = pool[self.rng.integers(len(pool))]
            patch, patch_labels = sample_patch(image, label, case.spacing_rc, MODEL_SPACING_MM, self.patch, self.rng,
                                               zoom_probability=self.zoom_probability,
                                               intensity_probability=self.intensity_probability,
                                               rv_direction_deg=self.rv_directions.get(case.name),
                                               pose_window_deg=self.pose_window)
            images.append(patch)
            labels.append(patch_labels)
            merges.append(merge_matrix(case.labelled, self.classes))
            available.append(torch.tensor([c in case.labelled for c in range(self.classes)]))
        images = np.stack(images)
        images = images[:, None] if images.ndim == 3 else images
        return (torch.from_numpy(images).contiguous(memory_format=torch.channels_last),
                torch.from_numpy(np.stack(labels)).long(), torch.stack(merges), torch.stack(available))


class _SamplerStream(torch.utils.data.IterableDataset):
    """Endless batches from a `SliceSampler` per loader worker, each worker with its own generator (seeded from the
    run's seed, the step it starts at and its worker index), so a GPU need not wait for the CPU augmentation."""

    def __init__(self, cases: list[Case], seed: int, patch: int, batch_size: int, zoom_probability: float,
                 context: int = 0, intensity_probability: float = 1.0, auxiliary: list[Case] = (),
                 auxiliary_share: float = 0.0, pose_window=None, rv_directions=None):
        super().__init__()
        self.pose_window, self.rv_directions = pose_window, rv_directions
        self.cases, self.seed, self.patch, self.batch_size = cases, seed, patch, batch_size
        self.zoom_probability, self.context = zoom_probability, context
        self.intensity_probability = intensity_probability
        self.auxiliary, self.auxiliary_share = auxiliary, auxiliary_share

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, info.id if info else 0])
        sampler = SliceSampler(self.cases, rng, self.patch, self.zoom_probability, self.context,
                               self.intensity_probability, self.auxiliary, self.auxiliary_share, self.pose_window,
                               self.rv_directions)
        while True:
            yield sampler.batch(self.batch_size)


def batch_stream(cases: list[Case], rng: np.random.Generator, seed: int, step: int, patch: int, batch_size: int,
                 workers: int, zoom_probability: float = 1.0, context: int = 0,
                 intensity_probability: float = 1.0, auxiliary: list[Case] = (), auxiliary_share: float = 0.0,
                 pose_window=None, rv_directions=None):
    """Training batches (images, labels, merges, available): drawn in this process from `rng` when `workers` is 0
    (exactly reproducible on resume, the checkpoint holds `rng`), else prefetched by `workers` loader processes
    (a resumed run continues with fresh generators seeded from `seed` and `step`)."""
    if not workers:
        sampler = SliceSampler(cases, rng, patch, zoom_probability, context, intensity_probability, auxiliary,
                               auxiliary_share, pose_window, rv_directions)
        while True:
            yield sampler.batch(batch_size)
    loader = torch.utils.data.DataLoader(_SamplerStream(cases, seed * 1_000_003 + step, patch, batch_size,
                                                                        zoom_probability, context,
                                                                        intensity_probability, auxiliary,
                                                                        auxiliary_share, pose_window,
                                                                        rv_directions),
                                         batch_size=None, num_workers=workers, prefetch_factor=4,
                                         pin_memory=torch.cuda.is_available(), persistent_workers=True)
    yield from loader


def cpu_has_native_bf16() -> bool:
    """True where the CPU advertises AMX or AVX-512 BF16. Without them bf16 autocast is emulated and much slower
    than fp32: on a 2-core AVX2-only AMD EPYC (2026-12-06) one step of the shipped 16-256 U-Net on 16 x 128² took
    9-12 s under bf16 autocast against 1.3 s in fp32 (on AVX-512 BF16 hosts bf16 was ~5x faster than fp32)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


RATE_PROBE_STEPS = 200


def lr_at(step: int, steps: int, peak: float, warmup: int = 50) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup))))


def train_run(cases: list[Case], folder: Path, steps: int, seed: int, device: torch.device, log,
              filters=DEFAULT_FILTERS, learning_rate: float = 3e-3, checkpoint_every: int = 100,
              metadata: dict | None = None, patch_size: int = PATCH_SIZE,
              batch_size: int = BATCH_SIZE, dice_weight: float = 1.0,
              time_limit_s: float = 0.0, loader_workers: int = 0,
              zoom_probability: float = 1.0, context: int = 0, dice_per_sample: bool = False,
              intensity_probability: float = 1.0, auxiliary: list[Case] = (),
              auxiliary_share: float = 0.0, pose_margin_deg: float | None = None,
              rv_directions: dict[str, float] | None = None) -> LGESliceUNet:
    """Train one model on `cases` for `steps` batches of `batch_size` patches of `patch_size`² pixels, resuming
    from folder/checkpoint.pt when present (else continuing a finished folder/model.pt of fewer steps with a fresh
    optimiser); writes folder/model.pt (weights + config + metadata) at the end and returns the model in eval mode.
    A run continued with another patch or batch size or Dice weight (`engines.lge.losses`) records the earlier ones
    in its history.

    `time_limit_s` (0: none) bounds the training time of this call: the rate is measured over the `RATE_PROBE_STEPS`
    batches after the first 50 (which carry CUDA start-up and the learning-rate warm-up) and, when `steps` cannot be
    reached in time, `steps` is lowered once to what fits, so the cosine schedule still ends at its floor; the budget
    actually used is recorded in the model's metadata (`time_limited_from`). `loader_workers` > 0 prepares the
    batches in that many loader processes (`batch_stream`). `context` 1 trains the 2.5-D variant (each slice with
    its neighbours as input channels, engines.lge.model); a checkpoint resumes only with the context it began with.
    `auxiliary` cases (cine stacks, `engines.lge.data.load_acdc_cine`) fill `auxiliary_share` of every batch.
    `pose_margin_deg` (None: any rotation, the earlier recipe) rotates each case with an entry in `rv_directions`
    (engines.lge.pose) only into the node's anatomical poses, RV_DIRECTION_WINDOW_DEG widened by the margin on each
    side; a change of it on a continued run is kept in the history."""
    pose_window = None
    if pose_margin_deg is not None:
        if not rv_directions:
            raise ValueError("a pose margin needs the cases' RV directions (engines.lge.pose)")
        low, high = RV_DIRECTION_WINDOW_DEG
        pose_window = (low - pose_margin_deg, high + pose_margin_deg)
        if not 0.0 <= pose_margin_deg < (360.0 - (high - low)) / 2:
            raise ValueError(f"pose margin must be within 0-{(360.0 - (high - low)) / 2:.0f} degrees, got "
                             f"{pose_margin_deg}")
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = LGESliceUNet(filters, context=context).to(device).to(memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=3e-5)
    bf16 = device.type == "cuda" or cpu_has_native_bf16()
    checkpoint_path = folder / "checkpoint.pt"
    step, previous_zoom, previous_intensity, previous_margin = 0, 1.0, 1.0, None
    history = dict((metadata or {}).get("history", {}))
    if checkpoint_path.is_file():
        state = torch.load(checkpoint_path, map_location=device, weights_only=False)
        if int(state.get("context", 0)) != context:
            raise ValueError(f"{checkpoint_path} was trained with slice context {state.get('context', 0)}, asked "
                             f"to continue with {context}: the input channels differ")
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        step = state["step"]
        history = state.get("history", history)
        previous_zoom = state.get("zoom_probability", 1.0)
        previous_intensity = state.get("intensity_probability", 1.0)
        previous_margin = state.get("pose_margin_deg")
        finished_path = folder / "model.pt"
        if finished_path.is_file() and step < steps:
            finished = torch.load(finished_path, map_location="cpu", weights_only=True)["metadata"]
            if int(finished.get("steps", -1)) == step:  # a finished run carried to a larger budget, optimiser kept
                history = {**history, f"steps 0-{step}": {k: finished.get(k) for k in ("device", "bf16_autocast",
                                                                                        "patch_size", "batch_size",
                                                                                        "dice_weight")},
                           "continued_at_step": step, f"optimiser at step {step}": "kept (resumed from checkpoint)"}
        log(f"resumed at step {step}/{steps}")
    elif (folder / "model.pt").is_file():
        # a finished run asked for more steps (or one whose checkpoint was not kept): continue from its weights with
        # a fresh optimiser; the cosine schedule re-enters at the finished step of the longer schedule
        finished = torch.load(folder / "model.pt", map_location=device, weights_only=True)
        if int(finished["config"].get("context", 0)) != context:
            raise ValueError(f"{folder / 'model.pt'} was trained with slice context "
                             f"{finished['config'].get('context', 0)}, asked to continue with {context}")
        model.load_state_dict(finished["state_dict"])
        step = int(finished["metadata"]["steps"])
        previous_zoom = finished["metadata"].get("zoom_probability", 1.0)
        previous_intensity = finished["metadata"].get("intensity_probability", 1.0)
        previous_margin = finished["metadata"].get("pose_margin_deg")
        if step >= steps:
            log(f"model.pt already has {step} >= {steps} steps")
            return model.eval().cpu().to(memory_format=torch.contiguous_format)
        history = {**finished["metadata"].get("history", {}),
                   f"steps 0-{step}": {k: finished["metadata"].get(k) for k in ("device", "bf16_autocast",
                                                                                  "patch_size", "batch_size",
                                                                                  "dice_weight")},
                   "continued_at_step": step}
        rng = np.random.default_rng(seed + step)
        torch.manual_seed(seed + step)
        log(f"continued from model.pt at step {step}/{steps} (fresh optimiser)")
    if step and zoom_probability != float(previous_zoom):
        history = {**history, f"zoom_probability at step {step}": {"was": float(previous_zoom),
                                                                    "now": zoom_probability}}
    if step and intensity_probability != float(previous_intensity):
        history = {**history, f"intensity_probability at step {step}": {"was": float(previous_intensity),
                                                                         "now": intensity_probability}}
    if step and pose_margin_deg != previous_margin:
        history = {**history, f"pose_margin_deg at step {step}": {"was": previous_margin, "now": pose_margin_deg}}
    batches = batch_stream(cases, rng, seed, step, patch_size, batch_size, loader_workers, zoom_probability, context,
                           intensity_probability, auxiliary, auxiliary_share, pose_window, rv_directions)
    started, losses = time.time(), []
    probe_from, probe_started, requested_steps = step + 50, None, steps
    model.train()
    while step < steps:
        if time_limit_s and step == probe_from:
            probe_started = time.time()
        elif time_limit_s and probe_started is not None and step == probe_from + RATE_PROBE_STEPS:
            rate = RATE_PROBE_STEPS / max(1e-6, time.time() - probe_started)
            affordable = step + int(rate * max(0.0, time_limit_s - (time.time() - started)))
            probe_started = None
            if affordable < steps:
                steps = max(step + 1, affordable)
                history = {**history, "time_limited_from": requested_steps, "time_limit_s": time_limit_s}
                log(f"time limit {time_limit_s:.0f} s at {rate:.1f} batches/s: {requested_steps} -> {steps} steps")
        for group in optimiser.param_groups:
            group["lr"] = lr_at(step, steps, learning_rate)
        images, labels, merges, available = (t.to(device, non_blocking=True) for t in next(batches))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            outputs = model.forward_slices(images)
        loss = deep_supervision_loss(outputs.float(), labels, merges, available, dice_weight, dice_per_sample)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 12.0)
        optimiser.step()
        losses.append(float(loss.detach()))
        step += 1
        if step % checkpoint_every == 0 or step == steps:
            torch.save({"model": model.state_dict(), "optimiser": optimiser.state_dict(), "step": step,
                        "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                        "history": history, "zoom_probability": zoom_probability, "context": context,
                        "intensity_probability": intensity_probability, "pose_margin_deg": pose_margin_deg},
                       checkpoint_path.with_suffix(".tmp"))
            checkpoint_path.with_suffix(".tmp").replace(checkpoint_path)
            log(f"step {step}/{steps} loss {np.mean(losses[-checkpoint_every:]):.4f} "
                f"lr {lr_at(step - 1, steps, learning_rate):.2e} {time.time() - started:.0f}s"
                f"{' bf16' if bf16 else ''}")
    model = model.eval().cpu().to(memory_format=torch.contiguous_format)
    torch.save({"state_dict": model.state_dict(), "config": model.config,
                "metadata": {**(metadata or {}), **({"history": history} if history else {}),
                             "steps": steps, "seed": seed, "device": str(device),
                             "bf16_autocast": bf16, "model_spacing_mm": MODEL_SPACING_MM, "patch_size": patch_size,
                             "batch_size": batch_size, "dice_weight": dice_weight,
                             **({"loader_workers": loader_workers} if loader_workers else {}),
                             **({"zoom_probability": zoom_probability} if zoom_probability != 1.0 else {}),
                             **({"context": context} if context else {}),
                             **({"dice_per_sample": True} if dice_per_sample else {}),
                             **({"intensity_probability": intensity_probability}
                                if intensity_probability != 1.0 else {}),
                             **({"auxiliary_cine_share": auxiliary_share, "auxiliary_cine_stacks": len(auxiliary)}
                                if auxiliary and auxiliary_share else {}),
                             **({"pose_margin_deg": pose_margin_deg,
                                 "pose_window_deg": list(pose_window),
                                 "pose_planned_cases": sum(case.name in rv_directions for case in cases)}
                                if pose_window is not None else {})}},
               folder / "model.pt")
    return model


def load_model(path: Path) -> tuple[LGESliceUNet, dict]:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    config = checkpoint["config"]
    model = LGESliceUNet(tuple(config["filters"]), config["classes"], config["deep_supervision_heads"],
                         int(config.get("context", 0)))
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), checkpoint["metadata"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("engines/runs/lge2"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--only-folds", default="", help="comma-separated fold indices (default: all)")
    parser.add_argument("--train-centres", default="",
                        help="leave-one-centre-out: train on these centres only (e.g. 'emidec'); the rest is held out")
    parser.add_argument("--fold-centres", default="",
                        help="cross-validation folds trained on these centres' training cases only (e.g. 'emidec'; "
                             "the folds and held-out cases stay those of both centres): does one centre's model fit "
                             "its own data better than the joint one?")
    parser.add_argument("--steps", type=int, default=1500, help="training batches per model")
    parser.add_argument("--filters", default=",".join(map(str, DEFAULT_FILTERS)))
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--patch-size", type=int, default=PATCH_SIZE, help="training patch side, pixels at "
                        f"{MODEL_SPACING_MM} mm (the node's crop is engines.lge.export.CROP_SIZE)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--dice-weight", type=float, default=1.0,
                        help="weight of the soft Dice term beside cross-entropy (engines.lge.losses; 0: cross-entropy "
                             "only)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all cores)")
    parser.add_argument("--time-limit", type=float, default=0.0, metavar="SECONDS",
                        help="wall-clock budget per model: --steps is lowered once, early, to what fits (0: none)")
    parser.add_argument("--zoom-probability", type=float, default=1.0,
                        help="share of training patches zoomed 0.7-1.4 (1.0: all, the shipped recipe; nnU-Net: 0.2)")
    parser.add_argument("--intensity-probability", type=float, default=1.0,
                        help="share of training patches given the intensity augmentation (1.0: all, the shipped "
                             "recipe; 0: spatial augmentation only)")
    parser.add_argument("--dice-per-sample", action="store_true",
                        help="soft Dice per patch and class (every patch weighs the same, as EMIDEC's per-slice Dice) "
                             "instead of over the batch")
    parser.add_argument("--context", type=int, choices=(0, 1), default=0,
                        help="1: 2.5-D input, each slice with its previous and next slice of the stack as two more "
                             "channels (0: the slice alone, the shipped recipe)")
    parser.add_argument("--aux-cine-share", type=float, default=0.0,
                        help="share of every batch drawn from the 100 ACDC patients' ED/ES cine stacks (LV, "
                             "myocardium, RV; scar counted as myocardium), extra shape data never held out (0: none, "
                             "the shipped recipe)")
    parser.add_argument("--pose-margin", type=float, default=None, metavar="DEGREES",
                        help="rotate each case only into the node's anatomical poses (its RV inside "
                             "RV_DIRECTION_WINDOW_DEG widened by DEGREES on each side; directions from --pose-plan) "
                             "instead of any angle (default: any angle, the shipped recipe)")
    parser.add_argument("--pose-plan", type=Path, default=DEFAULT_PLAN,
                        help="per-case RV directions (python -m engines.lge.pose)")
    parser.add_argument("--loader-workers", type=int, default=0,
                        help="processes preparing batches ahead of the GPU (0: in the training process, exactly "
                             "reproducible on resume)")
    args = parser.parse_args(argv)
    filters = tuple(int(f) for f in args.filters.split(","))
    stride = 2 ** (len(filters) - 1)  # one pooling between consecutive levels
    if args.patch_size < 2 * stride or args.patch_size % stride:
        parser.error(f"--patch-size must be a multiple of {stride} and at least {2 * stride} ({len(filters) - 1} "
                     f"poolings of the filters {args.filters}), got {args.patch_size}")
    if args.batch_size < 2:
        parser.error(f"--batch-size must be at least 2 (one patch per centre), got {args.batch_size}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    args.out.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {message}"
        print(line, flush=True)
        with open(args.out / "train.log", "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    cases = load_cases()
    common = {"filters": list(filters), "learning_rate": args.learning_rate}
    if not 0.0 <= args.zoom_probability <= 1.0:
        parser.error(f"--zoom-probability must be within 0-1, got {args.zoom_probability}")
    if not 0.0 <= args.intensity_probability <= 1.0:
        parser.error(f"--intensity-probability must be within 0-1, got {args.intensity_probability}")
    if args.dice_weight < 0:
        parser.error(f"--dice-weight must be >= 0, got {args.dice_weight}")
    if not 0.0 <= args.aux_cine_share < 1.0:
        parser.error(f"--aux-cine-share must be within 0-1 (exclusive of 1), got {args.aux_cine_share}")
    auxiliary = load_acdc_cine() if args.aux_cine_share else []
    if auxiliary:
        log(f"auxiliary cine: {len(auxiliary)} ACDC ED/ES stacks, {args.aux_cine_share:.2f} of every batch")
    sizes = {"patch_size": args.patch_size, "batch_size": args.batch_size, "dice_weight": args.dice_weight,
             "time_limit_s": args.time_limit, "loader_workers": args.loader_workers,
             "zoom_probability": args.zoom_probability, "context": args.context,
             "dice_per_sample": args.dice_per_sample, "intensity_probability": args.intensity_probability,
             "auxiliary": auxiliary, "auxiliary_share": args.aux_cine_share,
             "pose_margin_deg": args.pose_margin,
             "rv_directions": load_plan(args.pose_plan) if args.pose_margin is not None else None}
    if args.train_centres and args.fold_centres:
        parser.error("--train-centres (leave-one-centre-out) and --fold-centres (folds of some centres) exclude "
                     "each other")
    if args.train_centres:
        train_centres = set(args.train_centres.split(","))
        training = [c for c in cases if c.centre in train_centres]
        held_out = sorted(c.name for c in cases if c.centre not in train_centres)
        log(f"leave-one-centre-out: training on {sorted(train_centres)} ({len(training)} cases), "
            f"{len(held_out)} held out, device {device}")
        (args.out / "folds.json").write_text(json.dumps({"seed": args.seed, "folds": [held_out],
                                                         "train_centres": sorted(train_centres)}, indent=1))
        train_run(training, args.out / "fold0", args.steps, args.seed, device, log, filters, args.learning_rate,
                  metadata={**common, "held_out": held_out, "train_centres": sorted(train_centres)}, **sizes)
        return 0
    folds = case_folds(cases, args.folds, args.seed)
    (args.out / "folds.json").write_text(json.dumps({"seed": args.seed, "folds": folds}, indent=1))
    selected = [int(f) for f in args.only_folds.split(",") if f] or list(range(args.folds))
    fold_centres = sorted(set(args.fold_centres.split(","))) if args.fold_centres else []
    unknown = set(fold_centres) - {c.centre for c in cases}
    if unknown:
        parser.error(f"--fold-centres: no cases of {sorted(unknown)} (centres: {sorted({c.centre for c in cases})})")
    for fold in selected:
        held_out = set(folds[fold])
        training = [c for c in cases if c.name not in held_out and (not fold_centres or c.centre in fold_centres)]
        log(f"fold {fold}: {len(training)} training cases{f' of {fold_centres}' if fold_centres else ''}, "
            f"{len(held_out)} held out, device {device}")
        extra = {"train_centres": fold_centres} if fold_centres else {}
        train_run(training, args.out / f"fold{fold}", args.steps, args.seed + fold, device, log, filters,
                  args.learning_rate, metadata={**common, "fold": fold, "held_out": sorted(held_out), **extra},
                  **sizes)
    log("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
