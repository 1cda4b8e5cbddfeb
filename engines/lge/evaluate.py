"""Evaluate LGE segmentation runs on EMIDEC + MyoPS: cross-validation with a row per centre, leave-one-centre-out,
Dice (per slice as EMIDEC, and 3D), %LGE agreement, volumes in mL, the >= 15 % flag, and the classical n-SD /
FWHM methods (with the DL and with the expert myocardium) beside the anchors of cmr-reference.md.

    python -m engines.lge.evaluate --cv engines/runs/lge2_cv --loco engines/runs/lge2_loco_emidec \
        engines/runs/lge2_loco_myops --report engines/lge/EVALUATION.md

Every held-out case is segmented by a model that never saw it, through the node's own inference path
(dicomnode.analysis.lge.segment_stack: localisation over the whole field of view, crop around the heart,
probabilities mapped back to the source grid).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

import dicomnode.analysis.lge as node_lge
import dicomnode.cmr.orientation as orientation
from dicomnode.analysis.lge import LGEInputSpec, segment_stack
from dicomnode.analysis.lge_metrics import NSD_FACTORS, fwhm_enhancement, large_burden, lge_volumes, nsd_enhancement
from engines.lge.calibrate import case_kind
from engines.lge.data import Case, load_cases
from engines.lge.export import CROP_SIZE, LOCALISATION_SIZE
from engines.lge.model import LGEEnsemble
from engines.lge.train import MODEL_SPACING_MM, load_model

#: structure -> node labels it is made of
STRUCTURES = {"lv_blood_pool": (1,), "myocardium": (2, 3, 4), "scar": (3, 4), "mvo": (4,), "rv_blood_pool": (5,)}
#: structures a centre's experts label (MyoPS: MVO inside scar; EMIDEC: no RV)
LABELLED = {"emidec": ("lv_blood_pool", "myocardium", "scar", "mvo"),
            "myops": ("lv_blood_pool", "myocardium", "scar", "rv_blood_pool")}
ANCHORS = {"dice_myocardium_per_slice": "0.879 (EMIDEC winner)", "dice_scar_per_slice": "0.712 (EMIDEC winner)",
           "dice_mvo_per_slice": "0.785 (EMIDEC winner)", "lge_percent_r": "0.91 (Fahmy 2020)",
           "flag_accuracy": "0.98 (Fahmy 2020, > 15 %)", "dice_scar_3d": "0.54 (Fahmy 2020, HCM, 3D)"}
GOALS = {"myops": {"dice_myocardium_3d": 0.85, "dice_scar_3d": 0.65, "lge_percent_mae": 4.0},
         "emidec": {"dice_myocardium_per_slice": 0.88, "dice_scar_per_slice": 0.72, "dice_mvo_per_slice": 0.5,
                    "lge_percent_mae": 3.0, "flag_accuracy": 0.95}}
CUTOFF = 15.0
METHODS = tuple(f"nsd{n}" for n in NSD_FACTORS) + ("fwhm",)


def dice(a: np.ndarray, b: np.ndarray) -> float | None:
    """Dice of two boolean masks; None when both are empty."""
    total = int(a.sum() + b.sum())
    return None if total == 0 else 2.0 * int((a & b).sum()) / total


def classical(image: np.ndarray, labels: np.ndarray, case: Case) -> dict[str, float | None]:
    """%LGE of every threshold method inside the myocardium of `labels` (None where a method refuses)."""
    out: dict[str, float | None] = {}
    for n in NSD_FACTORS:
        try:
            out[f"nsd{n}"] = nsd_enhancement(image, labels, n, case.voxel_volume_ml, case.spacing_rc).lge_percent
        except ValueError:
            out[f"nsd{n}"] = None
    try:
        out["fwhm"] = fwhm_enhancement(image, labels, case.voxel_volume_ml, case.spacing_rc).lge_percent
    except ValueError:
        out["fwhm"] = None
    return out


def case_metrics(case: Case, predicted: np.ndarray) -> dict:
    truth = case.labels
    out: dict = {"centre": case.centre, "dice_3d": {}, "dice_per_slice": {}}
    for name in LABELLED[case.centre]:
        labels = STRUCTURES[name] if not (case.centre == "myops" and name == "scar") else (3, 4)
        t, p = np.isin(truth, labels), np.isin(predicted, labels)
        out["dice_3d"][name] = dice(t, p) if t.any() else None
        per_slice = [dice(t[k], p[k]) for k in range(truth.shape[0]) if t[k].any()]
        out["dice_per_slice"][name] = float(np.mean(per_slice)) if per_slice else None
    true_v = lge_volumes(truth, case.voxel_volume_ml, cutoff_percent=CUTOFF)
    pred_v = lge_volumes(predicted, case.voxel_volume_ml, cutoff_percent=CUTOFF)
    for key, volumes in (("truth", true_v), ("predicted", pred_v)):
        out[key] = {"myocardium_ml": volumes.myocardium_volume_ml, "scar_ml": volumes.scar_volume_ml,
                    "mvo_ml": volumes.mvo_volume_ml, "lge_percent": volumes.lge_percent,
                    "large_burden": volumes.large_scar_burden}
    image = case.image.astype(np.float64)
    out["classical_dl_myocardium"] = classical(image, predicted, case)
    out["classical_expert_myocardium"] = classical(image, truth, case)
    return out


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def agreement(predicted, truth) -> dict:
    predicted = np.array([np.nan if p is None else p for p in predicted], dtype=float)
    truth = np.asarray(truth, dtype=float)
    ok = np.isfinite(predicted)
    if not ok.any():
        return {"mae": None, "bias": None, "sd": None, "r": None, "flag_accuracy": None, "n": 0}
    diff = predicted[ok] - truth[ok]
    r = float(np.corrcoef(predicted[ok], truth[ok])[0, 1]) if ok.sum() > 2 and np.std(predicted[ok]) > 0 else None
    flags = [large_burden(p, CUTOFF) == large_burden(t, CUTOFF) for p, t in zip(predicted[ok], truth[ok])]
    return {"mae": float(np.abs(diff).mean()), "bias": float(diff.mean()), "sd": float(diff.std(ddof=1)) if diff.size > 1
            else 0.0, "r": r, "flag_accuracy": float(np.mean(flags)), "n": int(ok.sum())}


def aggregate(cases: dict[str, dict]) -> dict:
    """Means over cases (Dice over cases where the structure exists), volume errors, %LGE agreement, flags."""
    out: dict = {"cases": len(cases)}
    if not cases:
        return out
    for kind in ("dice_3d", "dice_per_slice"):
        out[kind] = {name: _mean(c[kind].get(name) for c in cases.values()) for name in STRUCTURES}
    for volume in ("myocardium_ml", "scar_ml", "mvo_ml"):
        diffs = np.array([c["predicted"][volume] - c["truth"][volume] for c in cases.values()])
        out[f"{volume}_abs_error"] = float(np.abs(diffs).mean())
        out[f"{volume}_bias"] = float(diffs.mean())
    truth = [c["truth"]["lge_percent"] for c in cases.values()]
    out["dl"] = agreement([c["predicted"]["lge_percent"] for c in cases.values()], truth)
    for source in ("classical_dl_myocardium", "classical_expert_myocardium"):
        out[source] = {m: agreement([c[source][m] for c in cases.values()], truth) for m in METHODS}
    return out


#: MVO volume floors (mL) over which 'MVO present' (predicted MVO volume above the floor) is scored against the
#: expert's (any expert MVO): the node reads presence at 0; the others show whether dropping specks would help
MVO_FLOORS_ML = (0.0, 0.1, 0.25, 0.5, 1.0, 1.5)


def mvo_agreement(cases: dict[str, dict], floors_ml=MVO_FLOORS_ML) -> dict:
    """How the model's MVO agrees with the experts' over per-case metrics (case_metrics) of one centre that labels
    MVO: {"n", "dice_per_slice" (EMIDEC's convention, over cases with expert MVO), "volume_mae_ml",
    "volume_bias_ml", "with_mvo" / "without_mvo" (expert), "without_mvo_with_predicted" (hearts without expert MVO
    where the model segments any), "presence": [{"floor_ml", "accuracy", "sensitivity", "specificity"}, ...]}: per
    floor, 'MVO present' = predicted MVO volume above the floor, against any expert MVO. Fractions 0-1, None where
    nothing was scored."""
    if not cases:
        return {"n": 0}
    truth = np.array([c["truth"]["mvo_ml"] for c in cases.values()], dtype=float) > 0
    predicted = np.array([c["predicted"]["mvo_ml"] for c in cases.values()], dtype=float)
    diffs = predicted - np.array([c["truth"]["mvo_ml"] for c in cases.values()], dtype=float)

    def share(hits: np.ndarray, of: np.ndarray) -> float | None:
        return float(hits[of].mean()) if of.any() else None

    presence = [{"floor_ml": float(floor), "accuracy": float(((predicted > floor) == truth).mean()),
                 "sensitivity": share(predicted > floor, truth), "specificity": share(predicted <= floor, ~truth)}
                for floor in floors_ml]
    return {"n": len(cases), "dice_per_slice": _mean(c["dice_per_slice"].get("mvo") for c in cases.values()),
            "volume_mae_ml": float(np.abs(diffs).mean()), "volume_bias_ml": float(diffs.mean()),
            "with_mvo": int(truth.sum()), "without_mvo": int((~truth).sum()),
            "without_mvo_with_predicted": int((predicted[~truth] > 0).sum()), "presence": presence}


def mvo_presence_text(centre: str, block: dict) -> str:
    """One EVALUATION.md line on how often 'MVO present' from the MVO volume is right (mvo_agreement's block)."""
    floors = "; ".join(f"> {p['floor_ml']:g} mL: {p['accuracy']:.2f} (sensitivity {_f(p['sensitivity'], 2)}, "
                       f"specificity {_f(p['specificity'], 2)})" for p in block.get("presence") or [])
    return (f"MVO presence ({centre}, {block.get('n')} cases, {block.get('with_mvo')} with expert MVO): 'MVO present' "
            f"= predicted MVO volume above a floor, right in {floors}; {block.get('without_mvo_with_predicted')} of "
            f"{block.get('without_mvo')} hearts without expert MVO are given some; MVO volume MAE "
            f"{_f(block.get('volume_mae_ml'), 2)} mL (bias {_f(block.get('volume_bias_ml'), 2)}). The node states no "
            "MVO presence below the goals (dicomnode.analysis.lge.mvo_validation).")


def model_input_spec(model, spec: LGEInputSpec) -> LGEInputSpec:
    """`spec` with the slice context the model (LGESliceUNet or LGEEnsemble) was trained with."""
    return dataclasses.replace(spec, slice_context=int(model.config.get("context", 0)))


def _segment_cases(model, names, cases: dict[str, Case], spec: LGEInputSpec,
                   offsets: dict[str, float] | None = None) -> tuple[dict[str, dict], list[float]]:
    """Per-case metrics and seconds of `model` (torch, CPU) on the named cases, through the node's segment_stack;
    `offsets`: the scar decision offset per input kind (engines.lge.calibrate), none by default."""
    def run_model(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    metrics: dict[str, dict] = {}
    seconds: list[float] = []
    spec = model_input_spec(model, spec)
    for name in names:
        case = cases[name]
        began = time.perf_counter()
        offset = (offsets or {}).get(case_kind(case), 0.0)
        predicted = segment_stack(case.image, case.spacing_rc, run_model, spec, offset).labels
        seconds.append(time.perf_counter() - began)
        metrics[name] = case_metrics(case, predicted)
    return metrics, seconds


def training_sample(metadata: dict, cases: dict[str, Case], per_centre: int, seed: int = 0) -> list[str]:
    """Up to `per_centre` cases of each centre that the model trained on (not held out), seeded by its fold."""
    held_out = set(metadata["held_out"])
    rng = np.random.default_rng(seed + int(metadata.get("fold", 0)))
    sample: list[str] = []
    for centre in sorted({c.centre for c in cases.values()}):
        pool = sorted(n for n, c in cases.items() if c.centre == centre and n not in held_out)
        if pool and centre in metadata.get("train_centres", [centre]):
            sample += [str(n) for n in rng.choice(pool, min(per_centre, len(pool)), replace=False)]
    return sorted(sample)


def segmentation_settings() -> dict:
    """The node's segment_stack settings that change its output: per-model results cached beside a model are reused
    only while they are unchanged."""
    return {"average_crops": node_lge.AVERAGE_CROPS, "probe_slices": node_lge.PROBE_SLICES,
            "recentre_mm": node_lge.RECENTRE_MM, "min_lv_area_mm2": node_lge.MIN_LV_AREA_MM2,
            "max_lv_offset": node_lge.MAX_LV_OFFSET,
            "rv_direction_window_deg": list(orientation.RV_DIRECTION_WINDOW_DEG)}


def predict_runs(run_dirs: list[Path], cases: dict[str, Case], log, flip_tta: bool = False,
                 fit_per_centre: int = 0, calibration: dict | None = None
                 ) -> tuple[dict[str, dict], list[float], dict[str, dict]]:
    """Per-case metrics of every held-out case of the runs' fold models, seconds per case (torch, CPU), and with
    `fit_per_centre` > 0 the metrics of that many of each model's own training cases per centre (keyed
    "<fold>/<case>": how well the model fits what it saw, beside how it does on what it did not).
    `flip_tta` averages each model with its left-right flipped pass (engines.lge.model.LGEEnsemble); `calibration`
    (lge_calibration.json of engines.lge.calibrate) gives each fold model the scar decision offsets chosen without
    its own held-out cases."""
    spec = LGEInputSpec(crop_size=CROP_SIZE, pixel_spacing_mm=MODEL_SPACING_MM, localisation_size=LOCALISATION_SIZE)
    per_case: dict[str, dict] = {}
    seconds: list[float] = []
    fit: dict[str, dict] = {}
    for run in run_dirs:
        for path in sorted(Path(run).glob("fold*/model.pt")):
            suffix = ("_flip" if flip_tta else "") + ("_calibrated" if calibration else "")
            offsets = calibration["per_fold"][path.parent.name] if calibration else None
            cache = path.with_name(f"held_out_metrics{suffix}.json")
            fit_cache = path.with_name(f"training_fit_metrics{suffix}.json")
            model = metadata = None
            cached = json.loads(cache.read_text()) if cache.is_file() and \
                cache.stat().st_mtime >= path.stat().st_mtime else None
            inference = segmentation_settings()
            if cached is not None and cached.get("offsets") == offsets and cached.get("inference") == inference:
                per_case.update(cached["per_case"])
                seconds.extend(cached["seconds"])
                log(f"{path}: {len(cached['per_case'])} held-out cases (from {cache.name})")
            else:
                model, metadata = load_model(path)
                if flip_tta:
                    model = LGEEnsemble.from_members([model], flip_tta=True)
                model_cases, model_seconds = _segment_cases(model, metadata["held_out"], cases, spec, offsets)
                # per-model results beside the model, reused while the model is unchanged
                cache.write_text(json.dumps({"per_case": model_cases, "seconds": model_seconds, "offsets": offsets,
                                             "inference": inference}, default=float))
                per_case.update(model_cases)
                seconds.extend(model_seconds)
                log(f"{path}: {len(metadata['held_out'])} held-out cases")
            if fit_per_centre <= 0:
                continue
            if fit_cache.is_file() and fit_cache.stat().st_mtime >= path.stat().st_mtime:
                cached = json.loads(fit_cache.read_text())
                if (cached.get("per_centre") == fit_per_centre and cached.get("offsets") == offsets
                        and cached.get("inference") == inference):
                    fit.update({f"{path.parent.name}/{n}": m for n, m in cached["per_case"].items()})
                    continue
            if model is None:
                model, metadata = load_model(path)
                if flip_tta:
                    model = LGEEnsemble.from_members([model], flip_tta=True)
            sample = training_sample(metadata, cases, fit_per_centre)
            fitted, _ = _segment_cases(model, sample, cases, spec, offsets)
            fit_cache.write_text(json.dumps({"per_centre": fit_per_centre, "per_case": fitted, "offsets": offsets,
                                             "inference": inference}, default=float))
            fit.update({f"{path.parent.name}/{n}": m for n, m in fitted.items()})
            log(f"{path}: {len(sample)} of its own training cases")
    return per_case, seconds, fit


def _agreement_change(before: dict, after: dict) -> str:
    return (f"%LGE MAE {before['lge_percent_mae']:.2f} -> {after['lge_percent_mae']:.2f}, bias "
            f"{before['bias']:+.2f} -> {after['bias']:+.2f}, flag accuracy "
            f"{before.get('flag_accuracy', float('nan')):.3f} -> {after.get('flag_accuracy', float('nan')):.3f}")


def calibration_text(calibration: dict) -> str:
    """The per-fold offsets and the uncalibrated vs cross-fitted %LGE agreement, in words: pooled over all cases with
    each centre beside it (engines.lge.calibrate's one offset for every input kind), or per kind for a calibration
    written before 2026-12-07."""
    results = calibration.get("results", {})
    if "all" in results:
        pooled = results["all"]
        chosen = sorted({value for offsets in calibration["per_fold"].values() for value in offsets.values()})
        head = ("one offset for every input kind, "
                + ("calibrated, per-fold offsets " + str(chosen) if pooled.get("adopted") else
                   "not calibrated (offset 0): the cross-fitted choice did not improve all cases without costing a "
                   "centre")
                + f"; the cross-fitted choice over all cases ({', '.join(pooled['centres'])}): "
                + _agreement_change(pooled["uncalibrated"], pooled["cross_fitted"]))
        centres = [f"{name.split(' ', 1)[1]}: {_agreement_change(block['uncalibrated'], block['cross_fitted'])}"
                   for name, block in results.items() if name.startswith("centre ")]
        return head + ("; per centre " + "; ".join(centres) if centres else "")
    parts = []
    for kind, result in results.items():
        chosen = sorted({offsets[kind] for offsets in calibration["per_fold"].values()})
        parts.append(f"{kind} ({', '.join(result['centres'])}): "
                     + ("calibrated, per-fold offsets " + str(chosen) if result.get("adopted", True) else
                        "not calibrated (offset 0), its cross-fitted choice did not improve it")
                     + ": " + _agreement_change(result["uncalibrated"], result["cross_fitted"]))
    return "; ".join(parts)


def _shown(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def by_centre(per_case: dict[str, dict]) -> dict[str, dict]:
    return {centre: aggregate({k: v for k, v in per_case.items() if v["centre"] == centre})
            for centre in ("emidec", "myops", "all")
            if centre == "all" or any(v["centre"] == centre for v in per_case.values())} | {"all": aggregate(per_case)}


def _f(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def goal_status(centre: str, summary: dict) -> list[tuple[str, str, str, str]]:
    values = {"dice_myocardium_3d": summary["dice_3d"]["myocardium"], "dice_scar_3d": summary["dice_3d"]["scar"],
              "dice_myocardium_per_slice": summary["dice_per_slice"]["myocardium"],
              "dice_scar_per_slice": summary["dice_per_slice"]["scar"],
              "dice_mvo_per_slice": summary["dice_per_slice"]["mvo"], "lge_percent_mae": summary["dl"]["mae"],
              "flag_accuracy": summary["dl"]["flag_accuracy"]}
    rows = []
    for key, goal in GOALS.get(centre, {}).items():
        value = values[key]
        met = value is not None and (value <= goal if key.endswith("mae") else value >= goal)
        rows.append((key, _f(value), f"{'<=' if key.endswith('mae') else '>='} {goal}", "met" if met else "missed"))
    return rows


def centre_table(results: dict[str, dict]) -> list[str]:
    lines = ["| centre | cases | Dice myo (slice / 3D) | Dice scar (slice / 3D) | Dice MVO (slice) | Dice LV pool (3D) | "
             "Dice RV (3D) | %LGE MAE | bias ± SD | r | flag acc. | myo mL err / bias | scar mL err / bias |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for centre, s in results.items():
        if s.get("cases", 0) == 0:
            continue
        d3, ds, dl = s["dice_3d"], s["dice_per_slice"], s["dl"]
        lines.append(
            f"| {centre} | {s['cases']} | {_f(ds['myocardium'])} / {_f(d3['myocardium'])} | {_f(ds['scar'])} / "
            f"{_f(d3['scar'])} | {_f(ds['mvo'])} | {_f(d3['lv_blood_pool'])} | {_f(d3['rv_blood_pool'])} | "
            f"{_f(dl['mae'], 2)} | {_f(dl['bias'], 2)} ± {_f(dl['sd'], 2)} | {_f(dl['r'])} | {_f(dl['flag_accuracy'])} "
            f"| {_f(s['myocardium_ml_abs_error'], 1)} / {_f(s['myocardium_ml_bias'], 1)} | "
            f"{_f(s['scar_ml_abs_error'], 1)} / {_f(s['scar_ml_bias'], 1)} |")
    return lines


def classical_table(results: dict[str, dict]) -> list[str]:
    lines = ["| centre | myocardium from | " + " | ".join(m.upper() for m in METHODS) + " |",
             "|---|---|" + "---|" * len(METHODS)]
    for centre, s in results.items():
        if centre == "all" or s.get("cases", 0) == 0:
            continue
        for source, title in (("classical_dl_myocardium", "DL"), ("classical_expert_myocardium", "expert")):
            cells = [f"r {_f(s[source][m]['r'], 2)}, MAE {_f(s[source][m]['mae'], 1)}, bias {_f(s[source][m]['bias'], 1)}"
                     for m in METHODS]
            lines.append(f"| {centre} | {title} | " + " | ".join(cells) + " |")
    return lines


def _loco_source(command: str, path: Path) -> str:
    """Where carried leave-one-centre-out results came from: the run folders named by the earlier command's --loco."""
    words = shlex.split(command) if command else []
    runs = []
    if "--loco" in words:
        for word in words[words.index("--loco") + 1:]:
            if word.startswith("--"):
                break
            runs.append(word)
    return f"{_shown(path)} ({', '.join(runs) or 'run folders not named'})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cv", type=Path, required=True, help="cross-validation run folder (fold*/model.pt)")
    parser.add_argument("--loco", type=Path, nargs="*", default=[], help="leave-one-centre-out run folders")
    parser.add_argument("--loco-from", type=Path, default=None, metavar="EVALUATION.json",
                        help="carry the leave-one-centre-out results of an earlier evaluation (its run folders are "
                             "gone); the report names where they came from")
    parser.add_argument("--training-note", default="", help="how the runs were trained where their metadata cannot "
                                                            "say (e.g. a run continued with more steps)")
    parser.add_argument("--report", type=Path, default=Path(__file__).resolve().parent / "EVALUATION.md")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--training-fit", type=int, default=6, metavar="N",
                        help="also segment N of each CV model's own training cases per centre (0: skip): the fit on "
                             "what a model saw, beside the held-out result, tells underfitting from overfitting")
    parser.add_argument("--calibration", type=Path, default=None,
                        help="lge_calibration.json of engines.lge.calibrate: each CV fold model decides scar with the "
                             "offsets cross-fitted without its held-out cases (leave-one-centre-out models: none)")
    parser.add_argument("--flip-tta", action="store_true",
                        help="evaluate each model averaged with its left-right flipped pass (test-time augmentation)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cases = {c.name: c for c in load_cases()}
    began = time.time()
    calibration = json.loads(args.calibration.read_text()) if args.calibration else None
    cv_cases, seconds, fit_cases = predict_runs([args.cv], cases, print, args.flip_tta, args.training_fit, calibration)
    cv = by_centre(cv_cases)
    fit = by_centre(fit_cases) if fit_cases else {}
    loco, loco_steps = {}, {}
    for run in args.loco:
        meta = json.loads((run / "folds.json").read_text())
        loco_cases, _, _ = predict_runs([run], cases, print, args.flip_tta)
        loco[f"train {'+'.join(meta['train_centres'])}"] = by_centre(loco_cases)
        loco_steps[f"train {'+'.join(meta['train_centres'])}"] = load_model(run / "fold0" / "model.pt")[1].get("steps")
    loco_carried = ""
    if args.loco_from:
        earlier = json.loads(args.loco_from.read_text())
        for name, results in earlier.get("loco", {}).items():
            if name not in loco:
                loco[name] = results
                loco_carried = (earlier.get("loco_carried_from")
                                or _loco_source(earlier.get("command", ""), args.loco_from))
    folds = sorted(p.parent.name for p in args.cv.glob("fold*/model.pt"))
    folds_total = len(json.loads((args.cv / "folds.json").read_text())["folds"])
    meta = load_model(next(args.cv.glob("fold*/model.pt")))[1]
    evaluation = {"cv": cv, "training_fit": fit, "calibration": calibration, "loco": loco,
                  "loco_carried_from": loco_carried or None, "folds_evaluated": folds, "folds_total": folds_total,
                  "training": meta, "flip_tta": args.flip_tta,
                  "torch_seconds_per_case_median": float(np.median(seconds)), "per_case": cv_cases,
                  "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
                  "command": "python -m engines.lge.evaluate " + shlex.join(sys.argv[1:] if argv is None else argv)}
    evaluation["shipped_metrics"] = {
        "source": f"engines/lge/EVALUATION.json: patient-level {folds_total}-fold cross-validation over EMIDEC + MyoPS"
                  + (f", the held-out cases of {len(folds)} of the {folds_total} folds ({', '.join(folds)})"
                     if len(folds) < folds_total else "")
                  + " (each case predicted by a fold model that never saw it)",
        **{f"{centre}_{key}": value for centre in ("emidec", "myops") if centre in cv
           for key, value in (("cases", cv[centre]["cases"]), ("dice_3d", cv[centre]["dice_3d"]),
                              ("dice_per_slice", cv[centre]["dice_per_slice"]), ("lge_percent", cv[centre]["dl"]))},
        **{f"loco_{name}_{centre}_lge_percent": r[centre]["dl"] for name, r in loco.items() for centre in r
           if centre != "all"},
        # read by the node (dicomnode.analysis.lge.mvo_validation): MVO agreement where the experts label MVO
        **{f"{centre}_mvo": mvo_agreement({n: c for n, c in cv_cases.items() if c["centre"] == centre})
           for centre in ("emidec", "myops") if centre in cv and "mvo" in LABELLED[centre]},
        # read by the node (dicomnode.analysis.lge): a threshold method is reported only where this r >= 0.8
        "threshold_methods_on_model_myocardium_myops": cv["myops"]["classical_dl_myocardium"] if "myops" in cv else {},
    }
    json_path = args.report.with_suffix(".json")
    json_path.write_text(json.dumps(evaluation, indent=1, default=float) + "\n")
    lines = [
        "# LGE segmentation: cross-validated evaluation on two centres",
        "",
        f"Produced by `{evaluation['command']}` in {time.time() - began:.0f} s on {evaluation['machine']}.",
        "",
        "Data: EMIDEC (Dijon; 100 cases, 67 MI / 33 normal, 8-bit PNG without geometry and with non-square "
        "pixels (the release resized every slice to 256 × 256): row and column spacing **assumed** per case so that "
        "the LV is round, 1.4 mm on average, 10 mm slices, so its mL are nominal; Dice is computed on the PNG grid) and MyoPS 2020 (second centre; 33 post-MI patients, 12-bit, real spacing 0.73-0.76 mm "
        "in-plane, 12-23 mm between slices; expert labels drawn with LGE, T2 and bSSFP together, scar = label 2221, "
        "edema counted as myocardium). Patient-level folds stratified by centre (and MI/normal), seeded "
        "(`folds.json` of the run). Dice per slice is EMIDEC's convention (2-D Dice on each slice where the "
        "structure is in the ground truth, averaged per case, then over cases); 3-D Dice over the stack. MyoPS "
        "has no separate MVO label and EMIDEC no RV label: those cells are empty.",
        "",
        f"Training per fold: {meta.get('steps')} batches of {meta.get('batch_size')} patches "
        f"{meta.get('patch_size')}² at {meta.get('model_spacing_mm')} mm, filters {meta.get('filters')}, device "
        f"{meta.get('device')}, bf16 autocast {meta.get('bf16_autocast')}."
        + (" Leave-one-centre-out models: " + ", ".join(f"{name} {steps} batches" for name, steps in loco_steps.items())
           + "." if loco_steps else "") + (f" {args.training_note}" if args.training_note else "")
        + (" Every model is evaluated with test-time augmentation: the mean of its softmax on the slice and on "
           "the left-right flipped slice." if args.flip_tta else "")
        + (f" Scar decision calibration (engines.lge.calibrate, `{_shown(args.calibration)}`): each CV "
           f"fold model uses the scar + MVO log-probability offsets chosen on the other folds' cases "
           f"({calibration_text(calibration)}); the shipped model takes {calibration['shipped']}. Leave-one-centre-out "
           f"models are not calibrated (there is no other fold of their test centre to choose on)."
           if calibration else ""),
        "",
        f"## Patient-level cross-validation ({', '.join(folds)}"
        + (f": {len(folds)} of the {folds_total} folds of `folds.json`, so {cv['all']['cases']} of the cases)"
           if len(folds) < folds_total else ")"),
        "",
        *centre_table(cv),
        "",
        "Goals (issue #13) and anchors (cmr-reference.md):",
        "",
        "| centre | metric | this model | goal | |",
        "|---|---|---|---|---|",
        *[f"| {centre} | {k} | {v} | {g} | {s} |" for centre in ("myops", "emidec") if centre in cv
          for k, v, g, s in goal_status(centre, cv[centre])],
        "",
        "Anchors: " + "; ".join(f"{k} {v}" for k, v in ANCHORS.items()) + ".",
        "",
        *[line for key, block in evaluation["shipped_metrics"].items() if key.endswith("_mvo")
          for line in (mvo_presence_text(key.removesuffix("_mvo"), block), "")],
    ]
    if fit:
        lines += [
            "## Fit on the models' own training cases",
            "",
            f"The same CV fold models on {args.training_fit} of their own training cases per centre each (seeded "
            f"sample; {fit['all']['cases']} case-model pairs), through the same inference path. Where these are no "
            "better than the cross-validation above, the models underfit (capacity, budget or the labels' own "
            "consistency limit them), and more data or regularisation would not help; where they are much better, "
            "they overfit.",
            "",
            *centre_table(fit),
            "",
        ]
    for name, results in loco.items():
        carried = (f"Carried from the earlier evaluation `{loco_carried}` (its run folders are not on this machine; "
                   f"these models do not change with the cross-validation models above).") if (
            loco_carried and name not in loco_steps) else ""
        lines += [f"## Leave one centre out: {name}", "", *([carried, ""] if carried else []), *centre_table(results),
                  ""]
    lines += [
        "## Classical threshold methods against the expert %LGE (cross-validation cases)",
        "",
        "n-SD: remote = healthy myocardium without rims, >= 10 mm in-plane from any scar/MVO of its slice; FWHM: "
        "half the maximum of the labelled enhanced region, in-plane 8-connected regions overlapping it; both inside "
        "the myocardium without its endocardial and epicardial one-pixel rims, regions < 10 mm² dropped. EMIDEC's "
        "8-bit windowed PNGs are shown for completeness: the node declares the methods not applicable to such input.",
        "",
        *classical_table(cv),
        "",
        f"Median torch CPU time per case through segment_stack (one fold model, both passes): "
        f"{evaluation['torch_seconds_per_case_median']:.3f} s.",
        "",
    ]
    args.report.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
