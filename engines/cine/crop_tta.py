"""Measure test-time averaging over shifted crops (and a mirrored input) on the cine CV folds.

    python -m engines.cine.crop_tta --cv engines/checkpoints/cine_w32 --threads 2

Why: the network's output moves with where the heart lies in its 192 mm crop (break44b: patient090's LVEF 44.6 ->
49-54 % for 7-18 mm shifts; SCD0000101 23.7 -> 30.3 for 11 mm). Averaging the class probabilities of a few crops
shifted around the heart (mapped back to the source grid, then arg-maxed) should cancel part of that noise. This
script measures whether it does, per variant, on each fold model's held-out ACDC ED and ES frames, with the node's
own localisation, resampling, largest-structure rule and basal-slice rule (engines.cine.evaluate.function_values).

Variants (VARIANTS): the crop offsets in mm around the node's centre and whether the left-right mirrored input is
added. Writes <cv>/crop_tta.json and prints the paired table against the single crop.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from dicomnode.analysis.cine import locate_heart, preprocess_cine, softmax
from dicomnode.cmr.structures import keep_largest_structures
from engines.cine.data import acdc_nifti_dirs
from engines.cine.evaluate import (TorchFoldModel, acdc_nifti_subject, acdc_png_subject, agreement, fold_status,
                                   function_values)

SHIFT_MM = 8.0
#: name -> (crop offsets (drow, dcol) in mm around the node's centre, mirrored input added)
VARIANTS = {
    "single": (((0.0, 0.0),), False),
    "mirror": (((0.0, 0.0),), True),
    "shift5": (((0.0, 0.0), (SHIFT_MM, 0.0), (-SHIFT_MM, 0.0), (0.0, SHIFT_MM), (0.0, -SHIFT_MM)), False),
    "shift5_mirror": (((0.0, 0.0), (SHIFT_MM, 0.0), (-SHIFT_MM, 0.0), (0.0, SHIFT_MM), (0.0, -SHIFT_MM)), True),
}
REPORTED = ("lv_ef_percent", "lv_edv_ml", "lv_esv_ml", "lv_mass_g", "rv_ef_percent")


def source_probabilities(pixels, spacing, model, centre, mirror: bool) -> np.ndarray:
    """(phases, slices, C, rows, cols) class probabilities on the source grid for one crop centre."""
    if mirror:
        pixels = pixels[..., ::-1]
        centre = (centre[0], pixels.shape[-1] - 1 - centre[1])
    inputs, resampler = preprocess_cine(np.ascontiguousarray(pixels), spacing, model.spec, 0, centre)
    size, channels = model.spec.crop_size, len(model.spec.channel_labels)
    probabilities = softmax(model.run(inputs).reshape(pixels.shape[:2] + (channels, size, size)), axis=2)
    scores = resampler.inverse_probabilities(probabilities)
    scores[:, :, 0] += scores.sum(axis=2) == 0
    return scores[..., ::-1] if mirror else scores


def evaluate_subject(datasets: Path, model: TorchFoldModel, patient: str, nifti: dict) -> dict:
    pixels, truth, spacing, dz = (acdc_nifti_subject(nifti[patient]) if patient in nifti
                                  else acdc_png_subject(datasets, patient))
    centre = locate_heart(pixels, spacing, model.run, model.spec, 0)
    if centre is None:
        centre = ((pixels.shape[-2] - 1) / 2.0, (pixels.shape[-1] - 1) / 2.0)
    lookup = np.asarray(model.spec.channel_labels, np.uint8)
    voxel_ml = spacing[0] * spacing[1] * dz / 1000.0
    cache: dict[tuple, np.ndarray] = {}
    predicted = {}
    for name, (offsets, mirror) in VARIANTS.items():
        total = 0.0
        for offset in offsets:
            for flipped in ((False, True) if mirror else (False,)):
                crop = (round(centre[0] + offset[0] / spacing[0], 3), round(centre[1] + offset[1] / spacing[1], 3),
                        flipped)
                if crop not in cache:
                    cache[crop] = source_probabilities(pixels, spacing, model, crop[:2], flipped)
                total = total + cache[crop]
        labels = keep_largest_structures(lookup[np.argmax(total, axis=2)])
        predicted[name] = function_values(labels, voxel_ml)
    reference = function_values(truth, voxel_ml)
    print(f"{patient}: LVEF ref {reference['lv_ef_percent']:.1f} "
          + " ".join(f"{n} {v['lv_ef_percent']:.1f}" for n, v in predicted.items()), flush=True)
    return {"subject": patient, "reference": reference, "predicted": predicted}


def paired(subjects: list[dict], name: str, against: str = "single") -> dict:
    out = {}
    for quantity in REPORTED:
        rows = [s for s in subjects if s["reference"][quantity] is not None
                and s["predicted"][name][quantity] is not None and s["predicted"][against][quantity] is not None]
        a = np.array([abs(s["predicted"][name][quantity] - s["reference"][quantity]) for s in rows])
        b = np.array([abs(s["predicted"][against][quantity] - s["reference"][quantity]) for s in rows])
        d = a - b
        out[quantity] = {**agreement([(s["predicted"][name][quantity], s["reference"][quantity]) for s in rows]),
                         "paired_mae_difference": float(d.mean()),
                         "paired_se": float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "datasets")
    parser.add_argument("--cv", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    started = time.time()
    finished, unfinished = fold_status(args.cv)
    if unfinished or not finished:
        raise SystemExit(f"{args.cv}: every fold must be finished first (unfinished: {unfinished})")
    nifti = {folder.name: folder for folder in acdc_nifti_dirs(args.datasets)}
    subjects = []
    for checkpoint in finished:
        model = TorchFoldModel(checkpoint, args.threads)
        for patient in [s for s in model.checkpoint["test_subjects"] if s.startswith("patient")]:
            subjects.append({"fold": checkpoint.parent.name, **evaluate_subject(args.datasets, model, patient, nifti)})
    result = {"run": str(args.cv), "shift_mm": SHIFT_MM, "variants": {k: {"offsets_mm": v[0], "mirror": v[1]}
                                                                      for k, v in VARIANTS.items()},
              "summary": {name: paired(subjects, name) for name in VARIANTS}, "subjects": subjects,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "wall_s": round(time.time() - started, 1)}
    (args.out or args.cv / "crop_tta.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    print("| variant | " + " | ".join(f"{q} MAE (bias ± SD; paired Δ ± SE)" for q in REPORTED) + " |")
    print("|---|" + "---|" * len(REPORTED))
    for name, block in result["summary"].items():
        print(f"| {name} | " + " | ".join(
            f"{block[q]['mae']:.2f} ({block[q]['mean_error']:+.2f} ± {block[q]['sd_error']:.2f}; "
            f"{block[q]['paired_mae_difference']:+.2f} ± {block[q]['paired_se']:.2f})" for q in REPORTED) + " |")


if __name__ == "__main__":
    main()
