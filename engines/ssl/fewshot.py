"""Few-shot cine segmentation on ACDC: from scratch vs from a pretrained backbone, same subjects/steps/seeds; + report.

python -m engines.ssl.fewshot run --init scratch --shots 1 3 5 10 --out engines/runs/ssl/fewshot
python -m engines.ssl.fewshot run --init engines/runs/ssl/pretrain_all/checkpoint.pt --name all --shots 1 3 5 10 ...
python -m engines.ssl.fewshot report --out engines/runs/ssl/fewshot --json engines/ssl/evaluation.json
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from dicomnode.cmr.intensity import normalise_slices
from dicomnode.devtools.sources import datasets_dir
from dicomnode.labels import Label
from engines.cine.augment import augment_batch
from engines.cine.data import (ACDC_GROUPS, CHANNEL_LABELS, N_CLASSES, acdc_subject_split, bitmask_to_labels,
                               build_canvas, load_acdc_nifti, load_acdc_png)
from engines.cine.train import partial_label_loss
from engines.ssl.model import CPU_WIDTHS, segmentation_model

SPACING_MM = 2.0
CANVAS = 112
CROP = 96
SEED = 2026
STRUCTURES = {"lv": int(Label.LV_BLOOD_POOL), "myo": int(Label.LV_MYOCARDIUM), "rv": int(Label.RV_BLOOD_POOL)}


def subject_order(train_subjects: list[str], available: set[str], seed: int = SEED) -> list[str]:
    """Few-shot pool order: shuffled per ACDC group, then round-robin over groups (k shots = first k, nested)."""
    rng = random.Random(seed)
    per_group = []
    for index, group in enumerate(ACDC_GROUPS):
        members = [s for s in train_subjects if s in available and (int(s[-3:]) - 1) // 20 == index]
        rng.shuffle(members)
        per_group.append(members)
    order = []
    while any(per_group):
        for members in per_group:
            if members:
                order.append(members.pop(0))
    return order


def pool_order(datasets: Path) -> list[str]:
    """The few-shot training pool (acdc-train-png subjects outside the test split) in few-shot order."""
    import csv

    train, _ = acdc_subject_split(datasets)
    with open(datasets / "acdc-train-png" / "slices.csv", newline="") as handle:
        available = {row["patient"] for row in csv.DictReader(handle)}
    return subject_order(train, available)


def load_split(datasets: Path):
    """(training pool in few-shot order, pool slices, test slices): test = the cine helper's held-out ACDC subjects."""
    train, test = acdc_subject_split(datasets)
    order = pool_order(datasets)
    pool_slices = load_acdc_png(datasets, set(order))
    test_slices = load_acdc_png(datasets, set(test)) + load_acdc_nifti(datasets, set(test))
    return order, pool_slices, test_slices


def canvas_of(slices) -> tuple[np.ndarray, np.ndarray]:
    return build_canvas(slices, SPACING_MM, CANVAS)


def centre(array: np.ndarray) -> np.ndarray:
    start = (CANVAS - CROP) // 2
    return array[..., start:start + CROP, start:start + CROP]


def predict(model: torch.nn.Module, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """Raw canvases (N, S, S) -> node labels (N, CROP, CROP) on the centre crop."""
    crops = normalise_slices(centre(images))
    lookup = np.asarray(CHANNEL_LABELS, np.uint8)
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(crops), batch):
            logits = model(torch.from_numpy(crops[start:start + batch, None]))
            out.append(lookup[logits.argmax(1).numpy()])
    return np.concatenate(out)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return float(2 * (a & b).sum() / total) if total else 1.0


def evaluate(predicted: np.ndarray, truth: np.ndarray, slices) -> dict:
    """Per subject and phase: 3-D Dice of LV/MYO/RV over the stack; per subject: LVEF from voxel counts."""
    per_case, ef_errors = [], []
    subjects = sorted({s.subject for s in slices})
    for subject in subjects:
        volumes = {}
        for phase in ("ED", "ES"):
            index = [i for i, s in enumerate(slices) if s.subject == subject and s.phase == phase]
            if not index:
                continue
            p, t = predicted[index], truth[index]
            per_case.append({name: dice(p == label, t == label) for name, label in STRUCTURES.items()})
            voxel_ml = SPACING_MM * SPACING_MM * slices[index[0]].slice_spacing / 1000.0
            volumes[phase] = ((p == STRUCTURES["lv"]).sum() * voxel_ml, (t == STRUCTURES["lv"]).sum() * voxel_ml)
        if "ED" in volumes and "ES" in volumes and volumes["ED"][1] > 0:
            ef_pred = 100 * (volumes["ED"][0] - volumes["ES"][0]) / max(volumes["ED"][0], 1e-6)
            ef_true = 100 * (volumes["ED"][1] - volumes["ES"][1]) / volumes["ED"][1]
            ef_errors.append(ef_pred - ef_true)
    mean = {name: float(np.mean([c[name] for c in per_case])) for name in STRUCTURES}
    return {"dice": mean, "dice_mean": float(np.mean(list(mean.values()))),
            "lvef_mae": float(np.mean(np.abs(ef_errors))), "lvef_bias": float(np.mean(ef_errors)),
            "test_subjects": len(subjects), "cases": len(per_case)}


def train_once(images: np.ndarray, allowed: np.ndarray, backbone: dict | None, steps: int, batch: int, lr: float,
               seed: int, widths=CPU_WIDTHS) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = segmentation_model(widths, backbone)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    images_t, allowed_t = torch.from_numpy(images), torch.from_numpy(allowed)
    model.train()
    for step in range(steps):
        for group in optimiser.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 20) * (1 - step / steps) ** 0.9
        index = torch.randint(0, len(images), (batch,), generator=generator)
        x, target = augment_batch(images_t[index], allowed_t[index], CROP, N_CLASSES, generator)
        loss = partial_label_loss(model(x), target)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    return model


def run(args) -> None:
    torch.set_num_threads(args.threads)
    datasets = datasets_dir(args.datasets)
    order, pool, test = load_split(datasets)
    test_images, test_allowed = canvas_of(test)
    truth = bitmask_to_labels(centre(test_allowed))
    backbone, init_name = None, "scratch"
    if args.init != "scratch":
        state = torch.load(args.init, map_location="cpu", weights_only=False)
        backbone, init_name = state["backbone"], args.name or Path(args.init).parent.name
        if tuple(state["widths"]) != CPU_WIDTHS:
            raise SystemExit(f"{args.init}: widths {state['widths']} differ from the few-shot model {CPU_WIDTHS}")
    args.out.mkdir(parents=True, exist_ok=True)
    for shots in args.shots:
        subjects = order if shots == "all" else order[:int(shots)]
        chosen = [s for s in pool if s.subject in set(subjects)]
        images, allowed = canvas_of(chosen)
        for seed in args.seeds:
            started = time.time()
            model = train_once(images, allowed, backbone, args.steps, args.batch, args.lr, seed)
            train_s = time.time() - started
            metrics = evaluate(predict(model, test_images), truth, test)
            record = {"init": init_name, "shots": shots, "seed": seed, "training_subjects": subjects, "slices": len(chosen),
                      "steps": args.steps, "batch": args.batch, "lr": args.lr, "train_s": round(train_s, 1),
                      "eval_s": round(time.time() - started - train_s, 1), **metrics}
            (args.out / f"{init_name}_{shots}_{seed}.json").write_text(json.dumps(record, indent=1))
            print(json.dumps({k: v for k, v in record.items() if k != "training_subjects"}), flush=True)


def report(args) -> None:
    records = [json.loads(p.read_text()) for p in sorted(args.out.glob("*.json"))]
    order = pool_order(datasets_dir(None))
    for record in records:  # the training subjects of a run follow from the fixed pool order
        record["training_subjects"] = order if record["shots"] == "all" else order[:int(record["shots"])]
        record.pop("subjects", None)
    table: dict[tuple[str, str], list[dict]] = {}
    for record in records:
        table.setdefault((record["init"], str(record["shots"])), []).append(record)
    rows = []
    for (init, shots), items in sorted(table.items(), key=lambda kv: (kv[0][0], kv[0][1] == "all", kv[0][1].zfill(3))):
        rows.append({"init": init, "shots": shots, "seeds": len(items),
                     **{f"dice_{k}": float(np.mean([i["dice"][k] for i in items])) for k in STRUCTURES},
                     "dice_mean": float(np.mean([i["dice_mean"] for i in items])),
                     "lvef_mae": float(np.mean([i["lvef_mae"] for i in items])),
                     "lvef_bias": float(np.mean([i["lvef_bias"] for i in items])),
                     "train_s": float(np.sum([i["train_s"] for i in items]))})
    lines = ["| init | labelled subjects | seeds | Dice LV | Dice MYO | Dice RV | mean Dice | LVEF MAE (%) | LVEF bias (%) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['init']} | {r['shots']} | {r['seeds']} | {r['dice_lv']:.3f} | {r['dice_myo']:.3f} | "
                     f"{r['dice_rv']:.3f} | {r['dice_mean']:.3f} | {r['lvef_mae']:.1f} | {r['lvef_bias']:+.1f} |")
    print("\n".join(lines))
    if args.json:
        pretraining = {Path(d).name: json.loads((Path(d) / "pretrain_summary.json").read_text()) for d in args.pretrain}
        args.json.write_text(json.dumps({"rows": rows, "runs": records, "pretraining": pretraining}, indent=1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="train + evaluate one initialisation at several shot counts")
    run_parser.add_argument("--init", default="scratch", help="'scratch' or a pretrain checkpoint.pt")
    run_parser.add_argument("--name", default="", help="name of the initialisation in the results")
    run_parser.add_argument("--shots", nargs="+", default=["1", "3", "5", "10"], help="subject counts or 'all'")
    run_parser.add_argument("--seeds", nargs="+", type=int, default=[SEED])
    run_parser.add_argument("--steps", type=int, default=300)
    run_parser.add_argument("--batch", type=int, default=8)
    run_parser.add_argument("--lr", type=float, default=2e-3)
    run_parser.add_argument("--threads", type=int, default=1)
    run_parser.add_argument("--datasets", type=Path, default=None)
    run_parser.add_argument("--out", type=Path, required=True)
    report_parser = sub.add_parser("report", help="aggregate the run JSONs into a markdown table (+ JSON)")
    report_parser.add_argument("--out", type=Path, required=True)
    report_parser.add_argument("--json", type=Path, default=None)
    report_parser.add_argument("--pretrain", nargs="*", default=[], help="pretrain run folders to include in the JSON")
    args = parser.parse_args(argv)
    run(args) if args.command == "run" else report(args)


if __name__ == "__main__":
    main()
