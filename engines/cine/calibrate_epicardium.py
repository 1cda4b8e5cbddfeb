"""Calibrate the cine model's epicardial decision: the LV myocardium / background threshold alone.

    python -m engines.cine.calibrate_epicardium --cv engines/checkpoints/cine_w32 --threads 2
    python -m engines.cine.restore --out engines/runs/cine_ship
    python -m engines.cine.calibrate_epicardium --fit-training engines/runs/cine_ship/fold1/checkpoint.pt --threads 2 \
        --write-card engines/models/cine_unet.json

Why: the network draws the LV wall about a third of a pixel thicker than ACDC's readers on its own training patients as
on held-out ones (LV mass bias +9 to +11 g in every recipe's cross-validation). Per-channel logit offsets
(engines.cine.calibrate) fixed the mass but moved the blood-pool borders too, and LVEF got worse, so none shipped.
Here only the decision between myocardium and background moves (dicomnode.analysis.cine.labels_from_probabilities,
`epicardial_offset`): every blood-pool pixel keeps its label, so LV and RV volumes and EF are unchanged by
construction and only the outer wall, i.e. LV mass and the myocardium's Dice, moves.

How, without choosing on the patients it is judged on:
- `--cv RUN`: each finished fold model of a 5-fold run segments its held-out ACDC patients once (the node's
  localisation and resampling); every offset of GRID is applied to the stored probabilities; fold k's offset is the
  one whose LV mass bias is smallest in magnitude over the *other* folds' patients (cross-fitting), and fold k's
  reported results use it.
- `--fit-training CHECKPOINT`: one model (the shipped one, restored by engines.cine.restore) chooses its offset on its
  own training patients and is reported on its held-out patients; `--write-card` puts that offset into the model
  card (output.epicardial_logit_offset, read by dicomnode.analysis.cine.CineModelSpec.from_card) with how it was
  chosen. Run engines.cine.evaluate --update-card afterwards: the card's metrics then describe the calibrated model.

Writes JSON (`--out`, default beside the run / checkpoint: epicardium.json) and prints a table.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from dicomnode.analysis.cine import labels_from_probabilities, locate_heart, preprocess_cine, softmax
from dicomnode.cmr.structures import keep_largest_structures
from engines.cine.data import acdc_nifti_dirs
from engines.cine.evaluate import (CLASSES, TorchFoldModel, acdc_nifti_subject, acdc_png_subject, agreement, dice,
                                   fold_status, function_values)

#: epicardial logit offsets tried (0: the network's own decision)
GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0)
REPORTED = ("lv_mass_g", "lv_ef_percent", "lv_edv_ml", "lv_esv_ml", "rv_ef_percent")


def key(offset: float) -> str:
    return f"{offset:.2f}"


def sweep(datasets: Path, model: TorchFoldModel, subjects: list[str], label: str) -> list[dict]:
    """Per patient: reference function values and, for every GRID offset, predicted values and myocardium Dice."""
    nifti = {folder.name: folder for folder in acdc_nifti_dirs(datasets)}
    channels = model.spec.channel_labels
    out = []
    for patient in subjects:
        pixels, truth, spacing, dz = (acdc_nifti_subject(nifti[patient]) if patient in nifti
                                      else acdc_png_subject(datasets, patient))
        centre = locate_heart(pixels, spacing, model.run, model.spec, 0)
        inputs, resampler = preprocess_cine(pixels, spacing, model.spec, 0, centre)
        size = model.spec.crop_size
        probabilities = softmax(model.run(inputs).reshape(pixels.shape[:2] + (len(channels), size, size)), axis=2)
        voxel_ml = spacing[0] * spacing[1] * dz / 1000.0
        predicted, myocardium_dice = {}, {}
        for offset in GRID:
            labels = keep_largest_structures(labels_from_probabilities(probabilities, resampler, channels,
                                                                       epicardial_offset=offset))
            predicted[key(offset)] = function_values(labels, voxel_ml)
            myocardium_dice[key(offset)] = [dice(labels[i], truth[i], CLASSES["lv_myocardium"]) for i in range(2)]
        out.append({"subject": patient, "fold": label, "reference": function_values(truth, voxel_ml),
                    "predicted": predicted, "myocardium_dice": myocardium_dice})
        print(f"{label} {patient}: mass {predicted['0.00']['lv_mass_g']:.1f} vs {out[-1]['reference']['lv_mass_g']:.1f} g",
              flush=True)
    return out


def mass_bias(subjects: list[dict], offset: str) -> float:
    return float(np.mean([s["predicted"][offset]["lv_mass_g"] - s["reference"]["lv_mass_g"] for s in subjects]))


def choose(subjects: list[dict]) -> str:
    """The GRID offset with the smallest |LV mass bias| over `subjects` (ties: the smaller offset)."""
    return min((key(o) for o in GRID), key=lambda k: (round(abs(mass_bias(subjects, k)), 6), float(k)))


def summary(subjects: list[dict], chosen: dict[str, str]) -> dict:
    """Agreement of REPORTED values and mean myocardium Dice, without offset and with each fold's chosen offset."""
    def block(pick) -> dict:
        values = {name: agreement([(s["predicted"][pick(s)][name], s["reference"][name]) for s in subjects])
                  for name in REPORTED}
        for phase, i in (("ED", 0), ("ES", 1)):
            scores = [s["myocardium_dice"][pick(s)][i] for s in subjects if s["myocardium_dice"][pick(s)][i] is not None]
            values[f"myocardium_dice_{phase}"] = float(np.mean(scores))
        return values
    return {"n": len(subjects), "uncalibrated": block(lambda s: key(0.0)),
            "calibrated": block(lambda s: chosen[s["fold"]])}


def cross_fit(datasets: Path, run_dir: Path, threads: int) -> dict:
    finished, unfinished = fold_status(run_dir)
    if unfinished or not finished:
        raise SystemExit(f"{run_dir}: every fold must be finished first (unfinished: {unfinished})")
    subjects: list[dict] = []
    for checkpoint in finished:
        model = TorchFoldModel(checkpoint, threads)
        patients = [s for s in model.checkpoint["test_subjects"] if s.startswith("patient")]
        subjects += sweep(datasets, model, patients, checkpoint.parent.name)
    folds = sorted({s["fold"] for s in subjects})
    chosen = {fold: choose([s for s in subjects if s["fold"] != fold]) for fold in folds}
    return {"mode": "cross-fitted over the folds' held-out ACDC patients", "run": str(run_dir),
            "per_fold_offset": chosen, "all_folds_offset": choose(subjects), **summary(subjects, chosen),
            "mass_bias_by_offset": {key(o): mass_bias(subjects, key(o)) for o in GRID}, "subjects": subjects}


def fit_training(datasets: Path, checkpoint: Path, threads: int) -> dict:
    model = TorchFoldModel(checkpoint, threads)
    training = [s for s in model.checkpoint["train_subjects"] if s.startswith("patient")]
    held_out = [s for s in model.checkpoint["test_subjects"] if s.startswith("patient")]
    fitted = sweep(datasets, model, training, "training")
    offset = choose(fitted)
    tested = sweep(datasets, model, held_out, "held_out")
    return {"mode": "chosen on the model's own training patients, reported on its held-out patients",
            "checkpoint": str(checkpoint), "offset": offset, "training_mass_bias_by_offset":
            {key(o): mass_bias(fitted, key(o)) for o in GRID}, "training": summary(fitted, {"training": offset}),
            **summary(tested, {"held_out": offset}), "subjects": tested}


def write_card(card_path: Path, result: dict) -> None:
    """Put a --fit-training result's offset into the model card at `card_path` (output.epicardial_logit_offset and
    output.epicardial_offset: how it was chosen and what it did on the training patients). Raises ValueError when
    the card's held-out subjects are not the checkpoint's (another model)."""
    import torch

    card = json.loads(card_path.read_text())
    saved = torch.load(result["checkpoint"], map_location="cpu", weights_only=False)
    held_out = sorted(s for s in card["training"]["held_out_subjects"] if s.startswith("patient"))
    if held_out != sorted(s for s in saved["test_subjects"] if s.startswith("patient")):
        raise ValueError(f"{card_path} holds out other ACDC patients than {result['checkpoint']}: another model")
    training = result["training"]
    card["output"]["epicardial_logit_offset"] = float(result["offset"])
    card["version"] = time.strftime("%Y.%m.%d", time.gmtime())  # the model's outputs change with the offset
    card["output"]["epicardial_offset"] = (
        "the LV myocardium / background decision alone moved by this many logits (myocardium the LV or RV blood pool "
        "touches kept; dicomnode.analysis.cine.labels_from_probabilities): the network draws the outer wall thicker "
        "than ACDC's readers. Chosen on the model's own " f"{training['n']} ACDC training patients as the offset with "
        f"the smallest |LV mass bias| (engines/cine/calibrate_epicardium.py, {result['date']}): there LV mass bias "
        f"{training['uncalibrated']['lv_mass_g']['mean_error']:+.1f} -> "
        f"{training['calibrated']['lv_mass_g']['mean_error']:+.1f} g, LVEF MAE "
        f"{training['uncalibrated']['lv_ef_percent']['mae']:.2f} -> {training['calibrated']['lv_ef_percent']['mae']:.2f}")
    card_path.write_text(json.dumps(card, indent=1) + "\n")


def table(result: dict) -> str:
    lines = ["| quantity | uncalibrated bias ± SD (MAE) | calibrated bias ± SD (MAE) |", "|---|---|---|"]
    for name in REPORTED:
        before, after = result["uncalibrated"][name], result["calibrated"][name]
        lines.append(f"| {name} | {before['mean_error']:+.2f} ± {before['sd_error']:.2f} ({before['mae']:.2f}) | "
                     f"{after['mean_error']:+.2f} ± {after['sd_error']:.2f} ({after['mae']:.2f}) |")
    for phase in ("ED", "ES"):
        name = f"myocardium_dice_{phase}"
        lines.append(f"| {name} | {result['uncalibrated'][name]:.3f} | {result['calibrated'][name]:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "datasets")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--cv", type=Path, help="run folder of engines.cine.train --folds 5")
    source.add_argument("--fit-training", type=Path, help="one fold checkpoint: choose on its training patients")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--write-card", type=Path, default=None,
                        help="with --fit-training: the model card (JSON) to put the chosen offset into")
    args = parser.parse_args(argv)
    if args.write_card and not args.fit_training:
        parser.error("--write-card needs --fit-training (the offset of the model the card describes)")
    started = time.time()
    if args.cv:
        result = cross_fit(args.datasets, args.cv, args.threads)
        out = args.out or args.cv / "epicardium.json"
    else:
        result = fit_training(args.datasets, args.fit_training, args.threads)
        out = args.out or args.fit_training.parent / "epicardium.json"
    result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    result["wall_s"] = round(time.time() - started, 1)
    out.write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(table(result))
    if args.write_card:
        write_card(args.write_card, result)
        print(f"epicardial offset {result['offset']} written into {args.write_card}")
    print(json.dumps({k: result[k] for k in ("per_fold_offset", "all_folds_offset", "offset") if k in result}))


if __name__ == "__main__":
    main()
