"""Calibrate the cine model's decision thresholds (per-channel logit offsets) by cross-fitting on the CV folds.

    python -m engines.cine.calibrate --cv engines/runs/cine_cv_4000 --threads 2

Why: the network draws the LV myocardium about a third of a pixel thicker all round than ACDC's readers (on its own
training patients as on held-out ones: +11 mL, so LV mass +11 g), which no longer training removes. Adding a constant
to the background, myocardium and RV logits before the softmax moves those boundaries without retraining.

How, without leaking the test patients into the choice: every fold model's held-out patients are segmented once; each
offset triple of GRID is applied to the stored logits; for fold k the triple that minimises OBJECTIVE over the other
folds' patients is chosen (cross-fitting), and fold k's reported results use it. The shipped model gets the triple
chosen on all folds' patients. Writes <cv>/calibration.json, which engines.cine.evaluate --calibrated and
engines.cine.export --calibration read.

CHOICE: LVEF is the number a report leads with, so it is never traded: among the triples whose LVEF MAE is no worse
than without offsets (LVEF_TOLERANCE), the one minimising RVEF MAE / 6 + |LV mass bias| / 5 g (each error relative to
its goal in issue #16). An earlier unconstrained sum (LVEF MAE / 3 + ...) fixed the mass bias at the price of LVEF
(CV MAE 3.74 -> 3.90, the shipped fold's 3.89 -> 4.95).
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

from dicomnode.analysis.cine import labels_from_probabilities, preprocess_cine, softmax
from dicomnode.cmr.structures import keep_largest_structures
from dicomnode.labels import Label
from engines.cine.evaluate import (TorchFoldModel, acdc_nifti_subject, acdc_png_subject, fold_status,
                                   function_values)
from engines.cine.data import acdc_nifti_dirs

#: (background, LV myocardium, RV blood pool) logit offsets tried; the LV blood pool stays the reference (0)
GRID = tuple(itertools.product((0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5), (0.0, -0.25, -0.5), (0.0, -0.25, -0.5)))
CHANNELS = (int(Label.BACKGROUND), int(Label.LV_MYOCARDIUM), int(Label.RV_BLOOD_POOL))
GOALS = {"lv_ef_percent": 3.0, "rv_ef_percent": 6.0, "lv_mass_g": 5.0}
#: LVEF MAE (points) a triple may add over no offsets and still be chosen
LVEF_TOLERANCE = 0.02


def grid_key(offsets: tuple[float, ...]) -> str:
    return ",".join(f"{v:+.2f}" for v in offsets)


def offsets_for(channel_labels: tuple[int, ...], triple: tuple[float, float, float]) -> tuple[float, ...]:
    """Per-channel offsets (the model's channel order) from a (background, myocardium, RV) triple."""
    by_label = dict(zip(CHANNELS, triple))
    return tuple(float(by_label.get(int(label), 0.0)) for label in channel_labels)


def _errors(subjects: list[dict], key: str, name: str) -> np.ndarray:
    return np.array([s["predicted"][key][name] - s["reference"][name] for s in subjects
                     if s["predicted"][key][name] is not None and s["reference"][name] is not None])


def lvef_mae(subjects: list[dict], key: str) -> float:
    return float(np.abs(_errors(subjects, key, "lv_ef_percent")).mean())


def objective(subjects: list[dict], key: str) -> float:
    """RVEF MAE and |LV mass bias| relative to their goals over `subjects` at grid point `key` (lower is better)."""
    return float(np.abs(_errors(subjects, key, "rv_ef_percent")).mean() / GOALS["rv_ef_percent"]
                 + abs(_errors(subjects, key, "lv_mass_g").mean()) / GOALS["lv_mass_g"])


def choose(subjects: list[dict]) -> str:
    """The grid point minimising OBJECTIVE over `subjects` among those whose LVEF MAE is within LVEF_TOLERANCE of
    no offsets (ties: the first, i.e. the smallest change)."""
    zero = grid_key((0.0, 0.0, 0.0))
    allowed = lvef_mae(subjects, zero) + LVEF_TOLERANCE
    candidates = [grid_key(t) for t in GRID if lvef_mae(subjects, grid_key(t)) <= allowed]
    return min(candidates, key=lambda key: objective(subjects, key))


def sweep_fold(datasets: Path, checkpoint: Path, threads: int) -> list[dict]:
    """Function values at every grid point for each held-out ACDC patient of one fold model."""
    model = TorchFoldModel(checkpoint, threads)
    nifti = {folder.name: folder for folder in acdc_nifti_dirs(datasets)}
    labels = model.spec.channel_labels
    out = []
    for patient in [s for s in model.checkpoint["test_subjects"] if s.startswith("patient")]:
        pixels, truth, spacing, dz = (acdc_nifti_subject(nifti[patient]) if patient in nifti
                                      else acdc_png_subject(datasets, patient))
        inputs, resampler = preprocess_cine(pixels, spacing, model.spec)
        logits = model.run(inputs).reshape(pixels.shape[:2] + (len(labels), model.spec.crop_size, model.spec.crop_size))
        voxel_ml = spacing[0] * spacing[1] * dz / 1000.0
        predicted = {}
        for triple in GRID:
            shift = np.asarray(offsets_for(labels, triple), dtype=np.float32)[:, None, None]
            segmented = keep_largest_structures(labels_from_probabilities(softmax(logits + shift, axis=2), resampler,
                                                                          labels))
            predicted[grid_key(triple)] = function_values(segmented, voxel_ml)
        out.append({"subject": patient, "fold": checkpoint.parent.name, "reference": function_values(truth, voxel_ml),
                    "predicted": predicted})
        print(f"{checkpoint.parent.name} {patient}", flush=True)
    return out


def calibrate(datasets: Path, run_dir: Path, threads: int) -> dict:
    """Sweep every finished fold (cached per fold beside its checkpoint), cross-fit, return calibration.json's content."""
    finished, unfinished = fold_status(run_dir)
    if unfinished or not finished:
        raise SystemExit(f"{run_dir}: every fold must be finished first (unfinished: {unfinished})")
    subjects: list[dict] = []
    for checkpoint in finished:
        cache = checkpoint.parent / "calibration_sweep.json"
        stamp = checkpoint.stat().st_mtime
        if cache.is_file() and json.loads(cache.read_text()).get("checkpoint_mtime") == stamp \
                and json.loads(cache.read_text()).get("grid") == [list(t) for t in GRID]:
            subjects += json.loads(cache.read_text())["subjects"]
            continue
        swept = sweep_fold(datasets, checkpoint, threads)
        cache.write_text(json.dumps({"checkpoint_mtime": stamp, "grid": [list(t) for t in GRID], "subjects": swept},
                                    default=float))
        subjects += swept
    folds = sorted({s["fold"] for s in subjects})
    per_fold = {}
    for fold in folds:
        chosen = choose([s for s in subjects if s["fold"] != fold])
        per_fold[fold] = {"offsets": [float(v) for v in chosen.split(",")], "chosen_without": fold}
    shipped = choose(subjects)
    zero = grid_key((0.0, 0.0, 0.0))
    return {
        "channels": ["background", "lv_myocardium", "rv_blood_pool"], "channel_labels": list(CHANNELS),
        "grid": [list(t) for t in GRID],
        "objective": (f"RVEF MAE / 6 + |LV mass bias| / 5 g among the triples whose LVEF MAE is within "
                      f"{LVEF_TOLERANCE} points of no offsets"),
        "per_fold": per_fold, "shipped": [float(v) for v in shipped.split(",")],
        "objective_all_subjects": {"uncalibrated": objective(subjects, zero), "shipped": objective(subjects, shipped)},
        "n_subjects": len(subjects), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "datasets")
    parser.add_argument("--cv", type=Path, required=True, help="run folder of engines.cine.train --folds 5")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    result = calibrate(args.datasets, args.cv, args.threads)
    (args.cv / "calibration.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("per_fold", "shipped", "objective_all_subjects")}, indent=1))


if __name__ == "__main__":
    main()
