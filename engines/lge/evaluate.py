"""Cross-validated evaluation of the LGE U-Net on EMIDEC: Dice (3D and per slice), volumes, %LGE, burden flag.

    python -m engines.lge.evaluate --runs engines/runs/lge --report engines/lge/EVALUATION.md

Each fold's model segments its own held-out cases exactly as the node does (dicomnode.analysis.lge.segment_stack:
wide localisation pass, then a crop around the heart, probabilities mapped back to the 256x256 source grid).
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dicomnode.analysis.lge import LGEInputSpec, segment_stack
from dicomnode.analysis.lge_metrics import fwhm_enhancement, large_burden, lge_volumes, nsd_enhancement
from engines.lge.data import ASSUMED_PNG_SPACING_MM, ASSUMED_SLICE_SPACING_MM, load_cases
from engines.lge.train import DEFAULT_DATA, MODEL_SPACING_MM, load_checkpoint

#: structure -> node labels it is made of (EMIDEC evaluation convention)
STRUCTURES = {
    "lv_blood_pool": (1,),
    "myocardium": (2, 3, 4),
    "infarct": (3, 4),
    "mvo": (4,),
    "healthy_myocardium": (2,),
    "scar_without_mvo": (3,),
}
ANCHORS = {"myocardium": 0.879, "infarct": 0.712, "mvo": 0.785}
GOALS = {"dice_myocardium_per_slice": 0.88, "dice_infarct_per_slice": 0.72, "lge_percent_mae": 3.0,
         "flag_accuracy": 0.95}
CUTOFF = 15.0


def dice(a: np.ndarray, b: np.ndarray) -> float | None:
    """Dice of two boolean masks; None when both are empty."""
    total = int(a.sum() + b.sum())
    return None if total == 0 else 2.0 * int((a & b).sum()) / total


def case_metrics(truth: np.ndarray, predicted: np.ndarray, image: np.ndarray) -> dict:
    voxel_ml = ASSUMED_PNG_SPACING_MM[0] * ASSUMED_PNG_SPACING_MM[1] * ASSUMED_SLICE_SPACING_MM / 1000
    out: dict = {"dice_3d": {}, "dice_per_slice": {}}
    for name, labels in STRUCTURES.items():
        t, p = np.isin(truth, labels), np.isin(predicted, labels)
        out["dice_3d"][name] = dice(t, p) if t.any() else None
        # EMIDEC style: 2-D Dice on every slice where the structure is in the ground truth, averaged per case
        per_slice = [dice(t[k], p[k]) for k in range(truth.shape[0]) if t[k].any()]
        out["dice_per_slice"][name] = float(np.mean(per_slice)) if per_slice else None
    true_volumes = lge_volumes(truth, voxel_ml, cutoff_percent=CUTOFF)
    predicted_volumes = lge_volumes(predicted, voxel_ml, cutoff_percent=CUTOFF)
    out["truth"] = {"myocardium_ml": true_volumes.myocardium_volume_ml,
                    "infarct_ml": true_volumes.scar_volume_ml + true_volumes.mvo_volume_ml,
                    "mvo_ml": true_volumes.mvo_volume_ml, "lge_percent": true_volumes.lge_percent,
                    "large_burden": true_volumes.large_scar_burden}
    out["predicted"] = {"myocardium_ml": predicted_volumes.myocardium_volume_ml,
                        "infarct_ml": predicted_volumes.scar_volume_ml + predicted_volumes.mvo_volume_ml,
                        "mvo_ml": predicted_volumes.mvo_volume_ml, "lge_percent": predicted_volumes.lge_percent,
                        "large_burden": predicted_volumes.large_scar_burden}
    for key, method in (("nsd5", lambda: nsd_enhancement(image, predicted, 5, voxel_ml)),
                        ("fwhm", lambda: fwhm_enhancement(image, predicted, voxel_ml))):
        try:
            out["predicted"][f"{key}_lge_percent"] = method().lge_percent
        except ValueError:
            out["predicted"][f"{key}_lge_percent"] = None
    return out


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def aggregate(cases: dict[str, dict]) -> dict:
    """Means over cases (Dice over cases where the structure exists), volume errors, %LGE agreement, flag accuracy."""
    out: dict = {"cases": len(cases)}
    for kind in ("dice_3d", "dice_per_slice"):
        out[kind] = {name: _mean(c[kind][name] for c in cases.values()) for name in STRUCTURES}
    for volume in ("myocardium_ml", "infarct_ml", "mvo_ml"):
        diffs = np.array([c["predicted"][volume] - c["truth"][volume] for c in cases.values()])
        out[f"{volume}_abs_error"] = float(np.abs(diffs).mean())
        out[f"{volume}_bias"] = float(diffs.mean())
    truth = np.array([c["truth"]["lge_percent"] for c in cases.values()])
    for key in ("lge_percent", "nsd5_lge_percent", "fwhm_lge_percent"):
        predicted = np.array([np.nan if c["predicted"][key] is None else c["predicted"][key] for c in cases.values()])
        ok = np.isfinite(predicted)
        name = "dl" if key == "lge_percent" else key.replace("_lge_percent", "")
        out[f"{name}_lge_percent_mae"] = float(np.abs(predicted[ok] - truth[ok]).mean()) if ok.any() else None
        out[f"{name}_lge_percent_bias"] = float((predicted[ok] - truth[ok]).mean()) if ok.any() else None
        out[f"{name}_lge_percent_r"] = (float(np.corrcoef(predicted[ok], truth[ok])[0, 1])
                                        if ok.sum() > 2 and np.std(predicted[ok]) > 0 else None)
        out[f"{name}_flag_accuracy"] = (float(np.mean([large_burden(p, CUTOFF) == large_burden(t, CUTOFF)
                                                       for p, t in zip(predicted[ok], truth[ok])])) if ok.any() else None)
    normal = [c for name, c in cases.items() if name.startswith("Case_N")]
    out["normal_cases_with_predicted_infarct"] = sum(c["predicted"]["infarct_ml"] > 0 for c in normal)
    out["normal_cases"] = len(normal)
    return out


def evaluate(runs: Path, data: Path, log=print) -> dict:
    folds = json.loads((runs / "folds.json").read_text())["folds"]
    by_name = {c.name: c for c in load_cases(data)}
    per_case: dict[str, dict] = {}
    per_fold: dict[str, dict] = {}
    seconds = []
    settings = None
    for fold in range(len(folds)):
        checkpoint = runs / f"fold{fold}" / "model.pt"
        if not checkpoint.is_file():
            log(f"fold {fold}: no checkpoint at {checkpoint}, skipped")
            continue
        model, metadata = load_checkpoint(checkpoint)
        settings = {k: metadata.get(k) for k in ("epochs", "base_channels", "seed", "device", "crop_size")}
        settings["model_spacing_mm"] = MODEL_SPACING_MM

        def run_model(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return model(torch.from_numpy(x)).numpy()

        fold_cases = {}
        for name in metadata["held_out"]:
            case = by_name[name]
            began = time.perf_counter()
            predicted = segment_stack(case.image.astype(np.float32), ASSUMED_PNG_SPACING_MM, run_model).labels
            seconds.append(time.perf_counter() - began)
            fold_cases[name] = case_metrics(case.labels, predicted, case.image.astype(np.float64))
        per_case.update(fold_cases)
        per_fold[str(fold)] = aggregate(fold_cases)
        log(f"fold {fold}: myocardium per-slice Dice {per_fold[str(fold)]['dice_per_slice']['myocardium']:.3f}")
    if not per_case:
        raise SystemExit(f"no fold checkpoints under {runs}")
    return {"summary": aggregate(per_case), "per_fold": per_fold, "per_case": per_case, "settings": settings,
            "folds_evaluated": sorted(per_fold), "torch_seconds_per_case_median": float(np.median(seconds)),
            "assumed_spacing_mm": list(ASSUMED_PNG_SPACING_MM) + [ASSUMED_SLICE_SPACING_MM]}


def evaluate_shipped(model_path: Path, data: Path) -> dict:
    """The shipped ONNX model on every case it was trained on (resubstitution: optimistic, not a generalisation
    estimate), through the same path as the node."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    spec = LGEInputSpec.from_card(json.loads(model_path.with_suffix(".json").read_text()))
    cases = {}
    for case in load_cases(data):
        labels = segment_stack(case.image.astype(np.float32), ASSUMED_PNG_SPACING_MM,
                               lambda x: session.run(None, {"image": x})[0], spec).labels
        cases[case.name] = case_metrics(case.labels, labels, case.image.astype(np.float64))
    return aggregate(cases)


def _f(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _run_section(result: dict, title: str) -> list[str]:
    s = result["summary"]
    lines = [
        f"## {title}",
        "",
        f"Run `{result['runs']}`: training {result['settings']}; folds evaluated {result['folds_evaluated']} "
        f"({s['cases']} held-out cases).",
        "",
        "| metric | this model | anchor (cmr-reference.md) | goal |",
        "|---|---|---|---|",
        f"| Dice myocardium, per slice (EMIDEC style) | {_f(s['dice_per_slice']['myocardium'])} | 0.879 (EMIDEC winner) "
        "| >= 0.88 |",
        f"| Dice infarct (scar+MVO), per slice, MI cases | {_f(s['dice_per_slice']['infarct'])} | 0.712 (EMIDEC winner) "
        "| >= 0.72 |",
        f"| Dice MVO, per slice, cases with MVO | {_f(s['dice_per_slice']['mvo'])} | 0.785 (EMIDEC winner) | |",
        f"| Dice LV blood pool, per slice | {_f(s['dice_per_slice']['lv_blood_pool'])} | | |",
        f"| Dice myocardium, 3D | {_f(s['dice_3d']['myocardium'])} | | |",
        f"| Dice infarct, 3D | {_f(s['dice_3d']['infarct'])} | 0.54 (Fahmy, HCM scar, 3D) | |",
        f"| Dice MVO, 3D | {_f(s['dice_3d']['mvo'])} | | |",
        f"| %LGE MAE (points) | {_f(s['dl_lge_percent_mae'], 2)} | | <= 3 |",
        f"| %LGE bias (points) | {_f(s['dl_lge_percent_bias'], 2)} | | |",
        f"| %LGE Pearson r | {_f(s['dl_lge_percent_r'])} | 0.91 (Fahmy) | |",
        f"| >= 15 % flag accuracy | {_f(s['dl_flag_accuracy'])} | 0.98 (Fahmy, > 15 %) | >= 0.95 |",
        f"| myocardial volume abs. error / bias (mL) | {_f(s['myocardium_ml_abs_error'], 1)} / "
        f"{_f(s['myocardium_ml_bias'], 1)} | | |",
        f"| infarct volume abs. error / bias (mL) | {_f(s['infarct_ml_abs_error'], 2)} / {_f(s['infarct_ml_bias'], 2)} | | |",
        f"| MVO volume abs. error / bias (mL) | {_f(s['mvo_ml_abs_error'], 2)} / {_f(s['mvo_ml_bias'], 2)} | | |",
        f"| normal cases with any predicted infarct | {s['normal_cases_with_predicted_infarct']} / {s['normal_cases']} "
        "| | |",
        "",
        "Threshold methods inside the predicted myocardium (endocardial rim excluded), against the expert %LGE:",
        "",
        "| method | %LGE MAE | bias | r | >= 15 % flag accuracy |",
        "|---|---|---|---|---|",
    ]
    for name, label in (("dl", "DL (U-Net labels)"), ("nsd5", "5-SD, automatic remote sector"), ("fwhm", "FWHM")):
        lines.append(f"| {label} | {_f(s[f'{name}_lge_percent_mae'], 2)} | {_f(s[f'{name}_lge_percent_bias'], 2)} | "
                     f"{_f(s[f'{name}_lge_percent_r'])} | {_f(s[f'{name}_flag_accuracy'])} |")
    lines += ["", "Per fold:", "",
              "| fold | cases | Dice myo (slice) | Dice infarct (slice) | Dice MVO (slice) | Dice myo (3D) | "
              "Dice infarct (3D) | %LGE MAE | %LGE r | flag acc. |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for fold, f in result["per_fold"].items():
        lines.append(f"| {fold} | {f['cases']} | {_f(f['dice_per_slice']['myocardium'])} | "
                     f"{_f(f['dice_per_slice']['infarct'])} | {_f(f['dice_per_slice']['mvo'])} | "
                     f"{_f(f['dice_3d']['myocardium'])} | {_f(f['dice_3d']['infarct'])} | "
                     f"{_f(f['dl_lge_percent_mae'], 2)} | {_f(f['dl_lge_percent_r'])} | {_f(f['dl_flag_accuracy'])} |")
    lines += ["", f"Median torch CPU time per case through segment_stack (both passes): "
              f"{result['torch_seconds_per_case_median']:.3f} s.", ""]
    return lines


def report_markdown(results: list[dict], shipped: dict | None, command: str) -> str:
    spacing = results[0]["assumed_spacing_mm"]
    lines = [
        "# LGE U-Net: cross-validated evaluation on EMIDEC",
        "",
        f"Produced by: `{command}`",
        "",
        "Data: EMIDEC training set, 100 cases (67 MI, 33 normal), 8-bit PNG 256x256, case-level 5-fold split "
        "(stratified MI/normal, seeded, `folds.json` of each run). Every evaluated case is predicted by a fold model "
        "that never saw it, through the node's own inference path (`dicomnode.analysis.lge.segment_stack`: "
        "128x128 localisation pass, 96x96 crop at 2.25 mm, probabilities mapped back to the 256x256 source grid).",
        f"Volumes use an **assumed** spacing of {spacing[0]} x {spacing[1]} mm in-plane and {spacing[2]} mm between "
        "slices (the PNGs carry no geometry); %LGE and Dice do not depend on it.",
        "",
    ]
    for index, result in enumerate(results):
        title = result.get("title") or f"Cross-validation run {index + 1}"
        lines += _run_section(result, title)
    if shipped:
        lines += [
            "## Shipped model (trained on all 100 cases) re-applied to its own training cases",
            "",
            "Resubstitution, optimistic by construction: an upper bracket, not a generalisation estimate.",
            "",
            "| Dice myo (slice) | Dice infarct (slice) | Dice MVO (slice) | Dice myo (3D) | Dice infarct (3D) | "
            "%LGE MAE | %LGE r | flag acc. |",
            "|---|---|---|---|---|---|---|---|",
            f"| {_f(shipped['dice_per_slice']['myocardium'])} | {_f(shipped['dice_per_slice']['infarct'])} | "
            f"{_f(shipped['dice_per_slice']['mvo'])} | {_f(shipped['dice_3d']['myocardium'])} | "
            f"{_f(shipped['dice_3d']['infarct'])} | {_f(shipped['dl_lge_percent_mae'], 2)} | "
            f"{_f(shipped['dl_lge_percent_r'])} | {_f(shipped['dl_flag_accuracy'])} |",
            "",
        ]
    lines += [
        "## Definitions",
        "- Myocardium = labels 2+3+4, infarct = 3+4 (MVO counted as scar), MVO = 4 (EMIDEC convention).",
        "- Per-slice Dice: 2-D Dice on each slice where the structure is present in the ground truth, averaged per "
        "case, then over the cases that have the structure (infarct: MI cases; MVO: cases with MVO). False "
        "positives on slices without ground truth are not in this number; they show in the 3D Dice, the volume "
        "errors and the normal-case count.",
        "- 3D Dice: over the whole stack, averaged over the cases that have the structure.",
        "- %LGE = (scar + MVO) / myocardium x 100 per case; flag = %LGE >= 15; r = Pearson over cases.",
        "- 5-SD and FWHM run on the 8-bit PNG intensities inside the U-Net myocardium.",
        "",
        f"Machine: {platform.machine()}, Python {platform.python_version()}, torch {torch.__version__}, "
        "CPU only (2 cores shared with other jobs; torch 1 thread).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, nargs="+", default=[Path("engines/runs/lge")],
                        help="training output folders (folds.json + fold<k>/model.pt); the first one feeds the card")
    parser.add_argument("--titles", type=str, nargs="*", default=[], help="a section title per --runs folder")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--report", type=Path, default=Path(__file__).resolve().parent / "EVALUATION.md")
    parser.add_argument("--shipped", type=Path, default=None,
                        help="also apply this ONNX model (e.g. engines/models/lge_unet.onnx) to all its training cases")
    parser.add_argument("--notes", type=Path, default=None, help="markdown appended to the report (discussion)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = []
    for index, runs in enumerate(args.runs):
        result = evaluate(runs, args.data)
        result["runs"] = str(runs)
        result["title"] = args.titles[index] if index < len(args.titles) else None
        results.append(result)
    shipped = evaluate_shipped(args.shipped, args.data) if args.shipped is not None else None
    command = "python -m engines.lge.evaluate " + shlex.join(sys.argv[1:] if argv is None else argv)
    text = report_markdown(results, shipped, command.strip())
    if args.notes is not None:
        text += "\n" + args.notes.read_text(encoding="utf-8")
    args.report.write_text(text, encoding="utf-8")
    document = {"summary": results[0]["summary"], "runs": results, "shipped_model_on_training_data": shipped}
    args.report.with_suffix(".json").write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
