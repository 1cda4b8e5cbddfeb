"""Cine evaluation in one command; writes engines/cine/EVALUATION.md + evaluation.json.

python -m engines.cine.evaluate --datasets ../shared/datasets --cv engines/runs/cine_cv

- Cross-validation (--cv, the run folder of `engines.cine.train --folds 5`): every finished fold model segments the
  ED and ES frames of its own held-out ACDC patients (20 each, 100 in all): Dice per class at ED/ES, LV/RV
  EDV/ESV/SV/EF and LV mass agreement (bias ± SD, MAE, r).
- The shipped ONNX model on its own held-out split (20 ACDC patients), beside the CV models on the same 20.
- Whole cines: every phase of every whole cine in the shared data (Sunnybrook SCD0000101/201/301 against their
  ED/ES contours, ACDC patient090 against its labelled frames) through dicomnode.analysis.cine_metrics.measure_cine
  (basal-slice rule, ED/ES choice, phase flags): chosen ED/ES beside the reference phases, LVEF error.
All segmentation runs through the node's own path (dicomnode.analysis.cine.segment_and_measure): with a refining
model installed (`cine_unet_refine`, --refine), the shipped model segments every phase and chooses ED/ES, and the
refining model segments those two phases, as the node does; the held-out ACDC split (ED and ES frames only) is then
measured by the refining model.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import platform
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from dicomnode.analysis.cine import FLAG_ERROR_QUANTITIES, CineModelSpec, segment_and_measure
import dicomnode.cmr.orientation as orientation
from dicomnode.cmr.orientation import ALL_TRANSFORMS, InplaneTransform, canonical_inplane
from dicomnode.analysis.cine_metrics import (SV_DIFFERENCE, ejection_fraction_percent, lv_slice_volumes_ml,
                                             measure_cine, myocardial_mass_g, trigger_phase, volume_curve_ml)
from dicomnode.labels import Label
from engines.cine.data import (SUNNYBROOK_HELD_OUT, acdc_groups, acdc_nifti_dirs, acdc_to_allowed,
                               bitmask_to_labels, load_acdc_nifti_volume, load_sunnybrook_cine, polygon_mask,
                               read_info_cfg, sunnybrook_contoured, sunnybrook_link)

CLASSES = {"lv_blood_pool": int(Label.LV_BLOOD_POOL), "lv_myocardium": int(Label.LV_MYOCARDIUM), "rv_blood_pool": int(Label.RV_BLOOD_POOL)}
ANCHORS = {
    "ACDC test, best (cmr-reference.md)": "LV Dice 0.967 ED / 0.928 ES, myocardium 0.904 / 0.923, LVEF r 0.993, bias -0.36 ± 2.7 %",
    "CineMA foundation model": "LVEF MAE 3.33 %, RVEF MAE 5.49 %",
    "human precision": "scan-rescan CoV LVEF 6.0 %, LV mass 4.8 %; inter-reader EF spread 4.2-7.5 %",
}
GOALS = {"lv_dice_ed": 0.93, "lvef_mae": 3.0, "lvef_bias": 1.0, "lvef_sd": 3.0, "rvef_mae": 6.0, "lv_mass_bias": 5.0,
         "whole_cine_phase": 1, "whole_cine_lvef": 5.0}
FUNCTION_KEYS = ("lv_edv_ml", "lv_esv_ml", "lv_sv_ml", "lv_ef_percent", "lv_mass_g", "rv_edv_ml", "rv_esv_ml",
                 "rv_sv_ml", "rv_ef_percent")
UNITS = {"lv_edv_ml": "mL", "lv_esv_ml": "mL", "lv_sv_ml": "mL", "lv_ef_percent": "points", "lv_mass_g": "g",
         "rv_edv_ml": "mL", "rv_esv_ml": "mL", "rv_sv_ml": "mL", "rv_ef_percent": "points"}


def dice(prediction: np.ndarray, truth: np.ndarray, label: int) -> float | None:
    p, t = prediction == label, truth == label
    total = int(p.sum() + t.sum())
    return None if total == 0 else 2.0 * int((p & t).sum()) / total


class OnnxModel:
    def __init__(self, models_dir: Path, name: str = "cine_unet", threads: int = 1):
        import onnxruntime as ort

        self.card = json.loads((models_dir / f"{name}.json").read_text())
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(models_dir / f"{name}.onnx"), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.spec = CineModelSpec.from_card(self.card)

        #: (run, spec) of a model that re-segments the ED and ES phases this one finds (segment_and_measure), or None
        self.refine = None

    def run(self, inputs: np.ndarray) -> np.ndarray:
        outputs = [self.session.run(None, {self.input: inputs[i:i + 64]})[0] for i in range(0, len(inputs), 64)]
        return np.concatenate(outputs)


class TorchFoldModel:
    """A cross-validation fold checkpoint (engines.cine.train) run on the CPU in fp32, with the node's preprocessing."""

    def __init__(self, checkpoint: Path, threads: int = 1):
        import torch

        from engines.cine.model import CineUNet

        torch.set_num_threads(threads)
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
        self.model = CineUNet(int(saved.get("in_channels", 1)), saved["n_classes"], tuple(saved["widths"]))
        self.model.load_state_dict(saved["state_dict"])
        self.model.eval()
        self.checkpoint = saved
        self.spec = CineModelSpec(float(saved["target_spacing_mm"]), int(saved["crop_size"]),
                                  tuple(int(v) for v in saved["channel_labels"]), saved.get("context", "none"))

    def run(self, inputs: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return np.concatenate([self.model(torch.from_numpy(inputs[i:i + 32])).numpy()
                                   for i in range(0, len(inputs), 32)])


def acdc_png_subject(datasets: Path, patient: str):
    """(pixels (2, slices, rows, cols) [ED, ES], truth node labels same shape, spacing_rc, slice spacing)."""
    from PIL import Image

    root = datasets / "acdc-train-png"
    rows = [r for r in csv.DictReader(open(root / "slices.csv", newline="")) if r["patient"] == patient]
    pixels, truth = [], []
    for phase in ("ED", "ES"):
        chosen = sorted((r for r in rows if r["phase"] == phase), key=lambda r: int(r["z"]))
        pixels.append([np.asarray(Image.open(root / "images" / r["file"]), np.float32) for r in chosen])
        truth.append([bitmask_to_labels(acdc_to_allowed(np.asarray(Image.open(root / "labels" / r["file"]), np.uint8)))
                      for r in chosen])
    first = rows[0]
    return (np.asarray(pixels), np.asarray(truth), (float(first["pixel_spacing_row_mm"]), float(first["pixel_spacing_col_mm"])),
            float(first["slice_spacing_mm"]))


def acdc_nifti_subject(folder: Path):
    info = read_info_cfg(folder / "Info.cfg")
    pixels, truth = [], []
    for key in ("ED", "ES"):
        frame = int(info[key])
        image, spacing, dz = load_acdc_nifti_volume(folder / f"{folder.name}_frame{frame:02d}.nii.gz")
        labels, _, _ = load_acdc_nifti_volume(folder / f"{folder.name}_frame{frame:02d}_gt.nii.gz")
        pixels.append(image)
        truth.append(bitmask_to_labels(acdc_to_allowed(labels.astype(np.uint8))))
    return np.asarray(pixels), np.asarray(truth), spacing, dz


LEVELS = ("basal", "mid", "apical")


def lv_overlap_by_level(predicted: np.ndarray, truth: np.ndarray) -> dict:
    """LV blood-pool overlap counts per third of the slices that hold LV (ACDC slice order is base -> apex).

    Returns {phase: {level: [intersection, predicted + truth voxels]}}, to be pooled over subjects.
    """
    label = CLASSES["lv_blood_pool"]
    out = {}
    for index, phase in enumerate(("ED", "ES")):
        holding = [z for z in range(truth.shape[1]) if (truth[index, z] == label).any() or (predicted[index, z] == label).any()]
        thirds = np.array_split(np.array(holding, dtype=int), 3)
        out[phase] = {}
        for level, zs in zip(LEVELS, thirds):
            p, t = predicted[index, zs] == label, truth[index, zs] == label
            out[phase][level] = [int((p & t).sum()), int(p.sum() + t.sum())]
    return out


def function_values(labels_ed_es: np.ndarray, voxel_ml: float) -> dict[str, float | None]:
    """LV (basal-slice rule of cine_metrics) and RV volumes, EF and LV mass from (2, slices, rows, cols) [ED, ES]."""
    lv = lv_slice_volumes_ml(labels_ed_es, voxel_ml)[0].sum(axis=1)
    rv = volume_curve_ml(labels_ed_es, [CLASSES["rv_blood_pool"]], voxel_ml)
    return {"lv_edv_ml": float(lv[0]), "lv_esv_ml": float(lv[1]), "lv_sv_ml": float(lv[0] - lv[1]),
            "lv_ef_percent": ejection_fraction_percent(lv[0], lv[1]),
            "lv_mass_g": myocardial_mass_g(labels_ed_es[0], voxel_ml), "rv_edv_ml": float(rv[0]),
            "rv_esv_ml": float(rv[1]), "rv_sv_ml": float(rv[0] - rv[1]),
            "rv_ef_percent": ejection_fraction_percent(rv[0], rv[1])}


def agreement(pairs: list[tuple[float, float]]) -> dict:
    """Errors (prediction - reference): mean ± SD, MAE, Pearson r, n."""
    pairs = [(p, t) for p, t in pairs if p is not None and t is not None]
    if not pairs:
        return {"n": 0}
    predicted, truth = np.array(pairs, dtype=np.float64).T
    errors = predicted - truth
    r = float(np.corrcoef(predicted, truth)[0, 1]) if len(pairs) > 2 and predicted.std() > 0 and truth.std() > 0 else None
    return {"n": len(pairs), "mean_error": float(errors.mean()), "sd_error": float(errors.std(ddof=1)) if len(pairs) > 1 else 0.0,
            "mae": float(np.abs(errors).mean()), "r": r}


IDENTITY = InplaneTransform(False, False, False)


def pose_key() -> str:
    """The part of a cached result's key that names the anatomical pose rule the node hands the network
    (dicomnode.cmr.orientation.RV_DIRECTION_WINDOW_DEG): results from before it, or from another window, are not
    reused."""
    low, high = orientation.RV_DIRECTION_WINDOW_DEG
    return f"-pose{low:g}-{high:g}"


def segment_node_way(pixels: np.ndarray, spacing, model, voxel_ml: float, trigger_times=None, first_phase: int = 0,
                     stored: InplaneTransform = IDENTITY):
    """(label maps (phases, slices, rows, cols) on the given grid, CineMeasurements) as the node's cine pipeline makes
    them (dicomnode.analysis.cine.segment_and_measure; the refining model of `model.refine` when set), the plane
    handed to the network re-stored by `stored` (the node: the canonical orientation of ImageOrientationPatient)."""
    def measure(maps, timing=None):
        return measure_cine(stored.invert(maps), voxel_ml, trigger_times=trigger_times, timing=timing)

    maps, measured, _ = segment_and_measure(stored.apply(pixels), stored.spacing(spacing), model.run, model.spec, measure,
                                            first_phase, refine=getattr(model, "refine", None))
    return stored.invert(maps), measured


def evaluate_acdc_subject(datasets: Path, model, patient: str, nifti: dict[str, Path]) -> dict:
    """ED and ES frames of one ACDC patient: Dice per class, function values predicted and reference."""
    pixels, truth, spacing, dz = acdc_nifti_subject(nifti[patient]) if patient in nifti else acdc_png_subject(datasets, patient)
    voxel_ml = spacing[0] * spacing[1] * dz / 1000.0
    predicted, _ = segment_node_way(pixels, spacing, model, voxel_ml)
    entry = {"subject": patient, "slices": int(pixels.shape[1]), "spacing_mm": [*spacing, dz],
             "lv_overlap_by_level": lv_overlap_by_level(predicted, truth),
             "dice": {phase: {name: dice(predicted[i], truth[i], label) for name, label in CLASSES.items()}
                      for i, phase in enumerate(("ED", "ES"))},
             "predicted": function_values(predicted, voxel_ml), "reference": function_values(truth, voxel_ml)}
    print(f"{patient}: LV Dice ED {fmt(entry['dice']['ED']['lv_blood_pool'], 3)} ES {fmt(entry['dice']['ES']['lv_blood_pool'], 3)} "
          f"LVEF {fmt(entry['predicted']['lv_ef_percent'])} vs {fmt(entry['reference']['lv_ef_percent'])}", flush=True)
    return entry


def summarise_acdc(subjects: list[dict]) -> dict:
    """Dice mean ± SD per class and phase, pooled LV Dice by level, agreement of every function value."""
    dice_summary = {}
    for phase in ("ED", "ES"):
        for name in CLASSES:
            values = [s["dice"][phase][name] for s in subjects if s["dice"][phase][name] is not None]
            dice_summary[f"{name}_{phase}"] = {"mean": float(np.mean(values)) if values else None,
                                               "sd": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                                               "n": len(values)}
    by_level = {phase: {level: 2 * sum(s["lv_overlap_by_level"][phase][level][0] for s in subjects)
                        / max(1, sum(s["lv_overlap_by_level"][phase][level][1] for s in subjects)) for level in LEVELS}
                for phase in ("ED", "ES")}
    agreements = {key: agreement([(s["predicted"][key], s["reference"][key]) for s in subjects]) for key in FUNCTION_KEYS}
    return {"n": len(subjects), "dice": dice_summary, "lv_dice_by_level_pooled": by_level, "agreement": agreements}


def evaluate_acdc(datasets: Path, model, test_subjects: list[str]) -> dict:
    nifti = {folder.name: folder for folder in acdc_nifti_dirs(datasets)}
    subjects = [evaluate_acdc_subject(datasets, model, patient, nifti) for patient in test_subjects]
    return {"subjects": subjects, **summarise_acdc(subjects)}


def fold_status(run_dir: Path) -> tuple[list[Path], list[dict]]:
    """(fold<k>/checkpoint.pt of the finished folds, [{fold, iterations, steps}] of the unfinished ones)."""
    import torch

    done, unfinished = [], []
    for path in sorted(run_dir.glob("fold*/checkpoint.pt")):
        saved = torch.load(path, map_location="cpu", weights_only=False)
        if saved.get("final"):
            done.append(path)
        else:
            unfinished.append({"fold": path.parent.name, "iterations": saved["iterations"], "steps": saved.get("steps")})
    return done, unfinished


def calibrated_offsets(calibration: dict, fold: str, channel_labels: tuple[int, ...]) -> tuple[float, ...]:
    """A fold's cross-fitted logit offsets (engines.cine.calibrate) in the model's channel order."""
    by_label = dict(zip(calibration["channel_labels"], calibration["per_fold"][fold]["offsets"]))
    return tuple(float(by_label.get(int(label), 0.0)) for label in channel_labels)


def evaluate_cv(datasets: Path, run_dir: Path, threads: int, max_subjects: int = 0,
                calibration: dict | None = None) -> dict:
    """Every finished fold model on its own held-out ACDC patients (the first `max_subjects` if > 0); pooled.
    With `calibration` (<run_dir>/calibration.json) each fold uses the logit offsets chosen without its patients."""
    folds, subjects = [], []
    nifti = {folder.name: folder for folder in acdc_nifti_dirs(datasets)}
    finished, unfinished = fold_status(run_dir)
    for checkpoint in finished:
        # a fold's results are kept beside its checkpoint, keyed by the checkpoint's content: re-running the report
        # after another fold finished evaluates only the new fold
        offsets = calibration["per_fold"][checkpoint.parent.name]["offsets"] if calibration else []
        key = (hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:16] + f"-{max_subjects}"
               + (f"-{offsets}" if offsets else "") + pose_key())
        cached = checkpoint.parent / ("heldout_evaluation_calibrated.json" if calibration else "heldout_evaluation.json")
        if cached.is_file() and json.loads(cached.read_text()).get("key") == key:
            fold, fold_subjects = json.loads(cached.read_text())["fold"], json.loads(cached.read_text())["subjects"]
        else:
            model = TorchFoldModel(checkpoint, threads)
            if calibration:
                model.spec = dataclasses.replace(model.spec, logit_offsets=calibrated_offsets(
                    calibration, checkpoint.parent.name, model.spec.channel_labels))
            held_out = [s for s in model.checkpoint["test_subjects"] if s.startswith("patient")]
            held_out = held_out[:max_subjects] if max_subjects > 0 else held_out
            fold_subjects = [evaluate_acdc_subject(datasets, model, patient, nifti) | {"fold": checkpoint.parent.name}
                             for patient in held_out]
            saved = model.checkpoint
            fold = {"fold": checkpoint.parent.name, "held_out": held_out, "iterations": saved["iterations"],
                    "batch": saved["batch"], "elapsed_s": round(float(saved["elapsed_s"]), 1),
                    "device": saved["device"], "autocast": saved.get("autocast"), "threads": saved.get("threads"),
                    "training_slices": saved["n_training_slices"], "logit_offsets": list(model.spec.logit_offsets),
                    "lvef_mae": agreement([(s["predicted"]["lv_ef_percent"], s["reference"]["lv_ef_percent"])
                                           for s in fold_subjects]).get("mae")}
            cached.write_text(json.dumps({"key": key, "fold": fold, "subjects": fold_subjects}, default=float))
        subjects += fold_subjects
        folds.append(fold)
    return {"folds": folds, "unfinished_folds": unfinished, "subjects": subjects,
            **(summarise_acdc(subjects) if subjects else {"n": 0})}


def cyclic_distance(a: int, b: int, n: int) -> int:
    return min((a - b) % n, (b - a) % n)


def whole_cine_row(subject: str, predicted: np.ndarray, measured, voxel_ml: float, reference: dict,
                   seconds: float) -> dict:
    """One whole cine: label maps of every phase and their CineMeasurements (segment_node_way) against the reference;
    `at the reference phases`: the same label maps read at the reader's ED/ES (with a refining model, phases it did
    not segment are the all-phase model's)."""
    n = predicted.shape[0]
    row = {"subject": subject, "phases": n, "slices": int(predicted.shape[1]), "seconds": round(seconds, 1),
           "ed_phase": measured.ed_phase, "es_phase": measured.es_phase,
           "reference_ed_phase": reference["ed"], "reference_es_phase": reference["es"],
           "ed_off_by": cyclic_distance(measured.ed_phase, reference["ed"], n),
           "es_off_by": cyclic_distance(measured.es_phase, reference["es"], n),
           "lv_edv_ml": measured.lv_edv_ml, "lv_esv_ml": measured.lv_esv_ml, "lv_ef_percent": measured.lv_ef_percent,
           "rv_ef_percent": measured.rv_ef_percent,
           "reference_lv_edv_ml": reference["edv"], "reference_lv_esv_ml": reference["esv"],
           "reference_lv_ef_percent": reference["ef"], "reference_source": reference["source"],
           "lv_curve_ml": [round(v, 1) for v in measured.lv_curve_ml],
           "rv_curve_ml": [round(v, 1) for v in measured.rv_curve_ml],
           "flagged_phases": measured.timing.flagged_phases, "timing_notes": measured.timing.notes,
           "basal_slices_excluded": len(measured.basal_excluded)}
    row["lvef_error"] = None if row["lv_ef_percent"] is None else row["lv_ef_percent"] - reference["ef"]
    # the same segmentation read at the reference phases: separates the timing error from the segmentation error
    at_reference = function_values(predicted[[reference["ed"], reference["es"]]], voxel_ml)
    row["lv_ef_percent_at_reference_phases"] = at_reference["lv_ef_percent"]
    print(f"{subject}: ED/ES {row['ed_phase']}/{row['es_phase']} vs {reference['ed']}/{reference['es']}, LVEF "
          f"{fmt(row['lv_ef_percent'])} vs {fmt(reference['ef'])} (at the reference phases {fmt(at_reference['lv_ef_percent'])}), "
          f"flagged {row['flagged_phases']}", flush=True)
    return row


def orientation_spread(pixels: np.ndarray, spacing, model, voxel_ml: float, trigger_times, first_phase: int = 0) -> list:
    """LVEF (%) of the whole cine segmented in each of the eight ways its plane can be stored (dicomnode.cmr.
    orientation.ALL_TRANSFORMS): how much the network's answer depends on the grid it is handed."""
    return [round(float(segment_node_way(pixels, spacing, model, voxel_ml, trigger_times, first_phase, stored)[1]
                        .lv_ef_percent), 1) for stored in ALL_TRANSFORMS]


def evaluate_whole_cines(datasets: Path, model) -> list[dict]:
    """Every whole cine of the shared data: ACDC patient090 (12 frames) and Sunnybrook's three 20-phase cines.

    Sunnybrook's DICOM carries its real ImageOrientationPatient: segmented in its canonical orientation as the node
    does. ACDC's NIfTI carries none: segmented as stored. Each row also gives the LVEF over all eight storage
    orientations."""
    rows = []
    folder = datasets / "acdc-4d-sample" / "patient090"
    if folder.is_dir():
        info = read_info_cfg(folder / "Info.cfg")
        pixels, spacing, dz = load_acdc_nifti_volume(folder / "patient090_4d.nii.gz")
        voxel_ml = spacing[0] * spacing[1] * dz / 1000.0
        started = time.perf_counter()
        predicted, measured = segment_node_way(pixels, spacing, model, voxel_ml)
        seconds = time.perf_counter() - started
        _, truth, _, _ = acdc_nifti_subject(folder)
        truth_values = function_values(truth, voxel_ml)
        reference = {"ed": int(info["ED"]) - 1, "es": int(info["ES"]) - 1, "edv": truth_values["lv_edv_ml"],
                     "esv": truth_values["lv_esv_ml"], "ef": truth_values["lv_ef_percent"],
                     "source": "ACDC labelled ED/ES frames (Info.cfg)"}
        # NIfTI carries no TriggerTime: frame 1 is the first after the R wave (ACDC acquisition), as the node assumes
        row = whole_cine_row("ACDC patient090", predicted, measured, voxel_ml, reference, seconds)
        row["orientation"] = "as stored (NIfTI: no patient orientation)"
        row["lvef_over_orientations"] = orientation_spread(pixels, spacing, model, voxel_ml, None)
        rows.append(row)
    contour_csv = datasets / "sunnybrook-scd" / "reference_values_from_contours.csv"
    table = {r["patient_id"]: r for r in csv.DictReader(open(contour_csv))} if contour_csv.is_file() else {}
    for patient in SUNNYBROOK_HELD_OUT:
        if patient not in table:
            continue
        pixels, spacing, dz, _, trigger_times = load_sunnybrook_cine(datasets, patient)
        canonical = canonical_inplane(sunnybrook_orientation(datasets, patient))
        first_phase = trigger_phase(trigger_times, len(pixels))[0]
        voxel_ml = spacing[0] * spacing[1] * dz / 1000.0
        started = time.perf_counter()
        predicted, measured = segment_node_way(pixels, spacing, model, voxel_ml, trigger_times, first_phase, canonical)
        seconds = time.perf_counter() - started
        row = table[patient]
        reference = {"ed": int(row["ed_phase_index"]), "es": int(row["es_phase_index"]), "edv": float(row["lv_edv_ml"]),
                     "esv": float(row["lv_esv_ml"]), "ef": float(row["lv_ef_pct"]),
                     "source": "expert ED/ES contours, contoured slices only (reference_values_from_contours.csv)"}
        result = whole_cine_row(f"Sunnybrook {patient}", predicted, measured, voxel_ml, reference, seconds)
        result["orientation"] = "canonical" + ("" if canonical.is_identity else f" ({canonical})")
        result["lvef_over_orientations"] = orientation_spread(pixels, spacing, model, voxel_ml, trigger_times, first_phase)
        rows.append(result)
    return rows


def sunnybrook_orientation(datasets: Path, patient: str) -> np.ndarray:
    """ImageOrientationPatient (6,) of a Sunnybrook patient's cine (one plane for the whole stack)."""
    import pydicom

    root, _ = sunnybrook_link(datasets)[patient]
    first = sorted((root / "dicoms" / patient).glob("*.dcm"))[0]
    return np.asarray(pydicom.dcmread(str(first), stop_before_pixels=True).ImageOrientationPatient, float)


def mean_or_none(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def fmt(value, digits=1):
    return "–" if value is None else f"{value:.{digits}f}"


def acdc_tables(block: dict) -> list[str]:
    lines = ["| class | Dice ED (mean ± SD) | Dice ES (mean ± SD) |", "|---|---|---|"]
    for name in CLASSES:
        ed, es = block["dice"][f"{name}_ED"], block["dice"][f"{name}_ES"]
        lines.append(f"| {name.replace('_', ' ')} | {fmt(ed['mean'], 3)} ± {fmt(ed['sd'], 3)} | "
                     f"{fmt(es['mean'], 3)} ± {fmt(es['sd'], 3)} |")
    lines += ["", "| quantity | bias (pred − ref) ± SD | MAE | r |", "|---|---|---|---|"]
    for key in FUNCTION_KEYS:
        stats = block["agreement"][key]
        lines.append(f"| {key} ({UNITS[key]}) | {fmt(stats.get('mean_error'))} ± {fmt(stats.get('sd_error'))} | "
                     f"{fmt(stats.get('mae'))} | {fmt(stats.get('r'), 3)} |")
    return lines


def _train_commands(cv: dict | None) -> list[str]:
    """The engines.cine.train command lines that made the CV folds of the report (one per iteration budget)."""
    if not cv or not cv.get("folds"):
        return ["python -m engines.cine.train --folds 5 --steps 1600 --threads 1   # every fold (resumable)"]
    budgets: dict[tuple[int, int], list[str]] = {}
    for fold in cv["folds"]:
        budgets.setdefault((fold["iterations"], fold.get("threads") or 1), []).append(fold["fold"].removeprefix("fold"))
    return [f"python -m engines.cine.train --folds 5 --only-folds {' '.join(folds)} --steps {steps} --threads {threads}"
            f"   # resumable" for (steps, threads), folds in sorted(budgets.items())]


def write_report(results: dict, path: Path) -> None:
    cv, shipped, whole = results.get("cv"), results["shipped"], results["whole_cines"]
    card = results["model"]
    lines = [
        "# Cine U-Net — evaluation", "",
        f"Evaluated {results['date']} on {results['machine']}. Every segmentation runs through the node's own path "
        "(`dicomnode.analysis.cine.segment_cine`: 1.5 mm, a 128×128 crop centred on the image, or on the heart when "
        "the heart found there comes within 10 mm of that crop's edge (`locate_heart`), per-slice normalisation, class "
        "probabilities mapped back with `dicomnode.cmr.InplaneResampler`); volumes and ED/ES through "
        "`dicomnode.analysis.cine_metrics` (LV basal-slice rule: blood pool counted where ≥ 50 % of its outline "
        "borders myocardium, SCMR 2020, the same rule for prediction and reference).", "",
        "**Command** (from the repository root):", "```",
        *_train_commands(cv),
        *([f"python -m engines.cine.calibrate --cv {results.get('cv_dir', 'engines/runs/cine_cv')}"
           "          # decision thresholds, cross-fitted"] if results.get("calibration") else []),
        f"python -m engines.cine.evaluate --cv {results.get('cv_dir', 'engines/runs/cine_cv')}"
        + (" --calibrated" if results.get("calibration") else "")
        + (" --training-note '…'" if results.get("training_note") else "") + "          # this report", "```",
        *([f"Cross-validation results of {results['cv_date']}, kept (`--reuse-cv`) when the shipped model's results "
           f"were refreshed on {results['date']}: "
           + results.get("reuse_cv_note", "the change then made does not touch the two-phase ACDC evaluation."),
           ""] if results.get("cv_date") else [""])]
    if cv and cv.get("n"):
        budget = cv["folds"][0]
        lines += [
            f"## ACDC 5-fold cross-validation ({cv['n']} patients in {len(cv['folds'])} finished folds)", "",
            "Subject-level folds stratified by ACDC group (4 patients of each of DCM/HCM/MINF/NOR/RV per fold, seed "
            "2026). Each fold model trains on the other folds' ACDC patients, the non-held-out Sunnybrook patients "
            "(LV contours, partial-label loss) and the 33 MyoPS 2020 bSSFP `C0` volumes (another centre and vendor), "
            "and is evaluated on its held-out ACDC ED and ES frames (3-D Dice per volume).", "",
            f"**Compute budget, stated honestly:** {sorted({f['iterations'] for f in cv['folds']})} iterations × batch "
            f"{budget['batch']} per fold (table: iterations and wall minutes of each fold, {budget['threads']} thread "
            f"of a shared 2-core x86_64 CPU, device {budget['device']}, autocast {budget['autocast']}; bf16 only on "
            "CUDA or a CPU with native bf16). "
            + ("The folds differ in iterations (table): they were cut to fit a time box. "
               if len({f['iterations'] for f in cv['folds']}) > 1 else "")
            + (results["training_note"] + " " if results.get("training_note") else "")
            + f"The model of the next section had {card['training']['iterations']} iterations"
            + (": the CV models are under-trained by that factor, so these figures measure a budget-limited recipe, "
               "not the architecture's ceiling." if card['training']['iterations'] > max(f['iterations'] for f in cv['folds'])
               else "."), "",
            "| fold | held-out ACDC | iterations | minutes | LVEF MAE |", "|---|---|---|---|---|"]
        for fold in cv["folds"]:
            lines.append(f"| {fold['fold']} | {len(fold['held_out'])} | {fold['iterations']} | "
                         f"{fold['elapsed_s'] / 60:.0f} | {fmt(fold['lvef_mae'], 2)} |")
        calibration = results.get("calibration")
        if calibration:
            lines += ["", "**Decision thresholds (logit offsets), cross-fitted:** the network draws the LV myocardium "
                      "thicker all round than ACDC's readers (on its own training patients as on held-out ones), so "
                      "constants are added to the background / LV myocardium / RV logits before the softmax "
                      f"(`engines/cine/calibrate.py`; grid of {len(calibration['grid'])} triples; objective "
                      f"{calibration['objective']}). Each fold's patients are segmented with the triple chosen on the "
                      "other four folds' patients, so no patient influences its own thresholds; the shipped model "
                      f"carries the triple chosen on all of them, {calibration['shipped']} (background, myocardium, "
                      "RV). Objective over all patients: uncalibrated "
                      f"{calibration['objective_all_subjects']['uncalibrated']:.3f}, shipped triple "
                      f"{calibration['objective_all_subjects']['shipped']:.3f}. Per fold: "
                      + "; ".join(f"{fold} {v['offsets']}" for fold, v in sorted(calibration["per_fold"].items()))
                      + ".", ""]
        for fold in cv.get("unfinished_folds", []):
            lines.append(f"| {fold['fold']} | unfinished at report time (resumes from its checkpoint) | {fold['iterations']} of "
                         f"{fold['steps']} | – | – |")
        lines += [""] + acdc_tables(cv) + [""]
        a = cv["agreement"]
        lines += ["Against the issue's goals and the anchors (cmr-reference.md):", "",
                  f"- LVEF MAE {fmt(a['lv_ef_percent'].get('mae'), 2)} (goal ≤ {GOALS['lvef_mae']:g}; CineMA 3.33), bias "
                  f"{fmt(a['lv_ef_percent'].get('mean_error'), 2)} ± {fmt(a['lv_ef_percent'].get('sd_error'), 2)} (goal within "
                  f"±{GOALS['lvef_bias']:g}, SD ≤ {GOALS['lvef_sd']:g}; ACDC best −0.36 ± 2.7).",
                  f"- RVEF MAE {fmt(a['rv_ef_percent'].get('mae'), 2)} (goal ≤ {GOALS['rvef_mae']:g}; CineMA 5.49).",
                  f"- LV mass bias {fmt(a['lv_mass_g'].get('mean_error'), 1)} g (goal within ±{GOALS['lv_mass_bias']:g} g)."]
        if stale_cv_mass(results):
            lines += [f"- The fold models above decided the wall without the epicardial offset the shipped card carries "
                      f"({card['output']['epicardial_logit_offset']:g} logits), which moves only LV mass and the "
                      "myocardium (every blood pool as decided): the CV mass row is the network's own wall; with the "
                      "offset, cross-fitted on two other recipes' 5 folds and on the shipped model's held-out "
                      "patients below, see engines/cine/EPICARDIUM.md. The card quotes the held-out mass."]
        lines += [""]
    lines += [f"## Model `{results['model_path']}` on the ACDC patients its card holds out ({shipped['n']})", "",
              f"sha256 `{results['model_sha256'][:16]}…`, trained {card['training']['iterations']} iterations × batch "
              f"{card['training']['batch']} ({card['training']['wall_time_s'] / 60:.0f} min, {card['training']['device']}); "
              f"one subject-level split, no cross-validation; evaluated {results['model_results_date']}.", ""]
    if card["output"].get("epicardial_logit_offset"):
        lines += [f"Decided with the card's epicardial offset ({card['output']['epicardial_logit_offset']:g} logits "
                  "on the myocardium / background decision only): " + str(card["output"].get("epicardial_offset", ""))
                  + ".", ""]
    if results.get("refine_model"):
        refine = results["refine_model"]
        lines += [f"With the refining model `{results['refine_model_path']}` installed, as here, the node measures ED "
                  "and ES with it (`segment_and_measure`): these ED and ES frames, and the ED/ES label maps of the whole "
                  f"cines below, are its segmentation (widths {refine['architecture'].get('widths')}, trained "
                  f"{refine['training']['iterations']} iterations on the same split); the shipped model chooses the "
                  "phases and segments every other phase.", ""]
    lines += acdc_tables(shipped) + [""]
    if cv and cv.get("n") and results.get("cv_on_shipped_split"):
        same = results["cv_on_shipped_split"]
        lines += [f"The CV fold models on the same {same['n']} patients (each by the fold that held it out):", ""]
        lines += acdc_tables(same) + [""]
    lines += [
        "## Whole cines: every phase segmented, ED/ES chosen by the node (shipped model; all four held out of its training)", "",
        "ED = the R-wave phase (smallest TriggerTime; phase 0 for the NIfTI without one) cross-checked with the "
        "largest LV volume within ±15 % of the cycle; ES = smallest volume of the temporally consistent, periodically "
        "smoothed curve, both on a curve that counts one fixed set of slices at every phase (a basal slice whose "
        "basal-rule decision flips between phases would move them: SCD0000201 was ED 17 / ES 8, LVEF +4.4, when the "
        "curve followed the rule per phase); flagged phases (volume jumps) are never chosen. Phase distances are "
        "cyclic. 'LVEF at ref. "
        "phases' reads the same segmentation at the reference ED/ES phases: it separates the timing error from the "
        "segmentation error. Sunnybrook's cines are segmented in the canonical orientation of their "
        "ImageOrientationPatient, as the node does (dicomnode.cmr.orientation), ACDC's NIfTI as stored; 'LVEF over the "
        "8 orientations' is the range when the same cine is handed to the network in each of the eight ways its plane "
        "can be stored.", "",
        "| cine | phases × slices | ED ours (ref) | ES ours (ref) | LVEF ours | LVEF ref | error | LVEF at ref. phases | "
        "LVEF over the 8 orientations | flagged phases | basal slices left out | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in whole:
        spread = r.get("lvef_over_orientations") or []
        lines.append(
            f"| {r['subject']} | {r['phases']} × {r['slices']} | {r['ed_phase']} ({r['reference_ed_phase']}) | "
            f"{r['es_phase']} ({r['reference_es_phase']}) | {fmt(r['lv_ef_percent'])} | {fmt(r['reference_lv_ef_percent'])} | "
            f"{fmt(r['lvef_error'])} | {fmt(r['lv_ef_percent_at_reference_phases'])} | "
            f"{f'{min(spread):.1f}–{max(spread):.1f}' if spread else '–'} | {r['flagged_phases'] or '–'} | "
            f"{r['basal_slices_excluded']} | {r['seconds']} |")
    within_phase = all(r["ed_off_by"] <= GOALS["whole_cine_phase"] and r["es_off_by"] <= GOALS["whole_cine_phase"]
                       for r in whole)
    within_ef = [r["subject"] for r in whole if r["lvef_error"] is None or abs(r["lvef_error"]) > GOALS["whole_cine_lvef"]]
    lines += ["", f"- ED and ES within one phase of the reference on every whole cine: **{'met' if within_phase else 'NOT met'}**.",
              f"- LVEF within {GOALS['whole_cine_lvef']:g} points on every whole cine: **"
              f"{'met' if not within_ef else 'NOT met (' + ', '.join(within_ef) + ')'}**.", ""]
    for r in whole:
        lines.append(f"- {r['subject']} LV curve (mL): {r['lv_curve_ml']}")
    lines += ["", "## Anchors", ""] + [f"- {name}: {text}" for name, text in ANCHORS.items()]
    lines += ["", "## Where it falls short and why", ""] + [f"- {text}" for text in results["shortfalls"]] + [""]
    path.write_text("\n".join(lines), encoding="utf-8")


#: CV patients whose LVEF error exceeds this many points are listed by name in the shortfalls
GROSS_LVEF_ERROR = 15.0


def shortfalls(results: dict) -> list[str]:
    notes = []
    cv = results.get("cv")
    if not cv or not cv.get("n"):
        notes.append("No finished cross-validation folds were given (--cv): the only ACDC figures are the single split.")
    elif len(cv["folds"]) < 5:
        notes.append(f"Only {len(cv['folds'])} of 5 folds finished in the time box: the CV covers {cv['n']} of 100 patients.")
    if cv and cv.get("n"):
        group_of = {patient: group for group, patients in acdc_groups().items() for patient in patients}
        errors = [(s["predicted"]["lv_ef_percent"] - s["reference"]["lv_ef_percent"], s) for s in cv["subjects"]
                  if s["predicted"]["lv_ef_percent"] is not None and s["reference"]["lv_ef_percent"] is not None]
        gross = sorted(((e, s) for e, s in errors if abs(e) > GROSS_LVEF_ERROR), key=lambda pair: -abs(pair[0]))
        if gross:
            rest = [abs(e) for e, s in errors if abs(e) <= GROSS_LVEF_ERROR]
            listed = "; ".join(
                f"{s['subject']} ({group_of.get(s['subject'], '?')}, {s['fold']}) {e:+.1f} points, LV Dice ED "
                f"{fmt(s['dice']['ED']['lv_blood_pool'], 2)} / ES {fmt(s['dice']['ES']['lv_blood_pool'], 2)}"
                for e, s in gross)
            notes.append(f"CV: {len(gross)} of {len(errors)} patients have an LVEF error over "
                         f"{GROSS_LVEF_ERROR:g} points and carry {sum(abs(e) for e, _ in gross) / len(errors):.2f} of "
                         f"the {fmt(cv['agreement']['lv_ef_percent'].get('mae'), 2)}-point MAE (the other "
                         f"{len(rest)}: {np.mean(rest):.2f}): {listed}."
                         + (" Looked at (run of 2026-12-01): at end systole the fold model labelled part of the "
                            "dilated RV of patient086, and the RV beside the nearly obliterated LV cavity of "
                            "patient034, as LV blood pool: an LV/RV identity error, not a boundary error."
                            if {"patient086", "patient034"} <= {s["subject"] for _, s in gross} else ""))
    same = results.get("cv_on_shipped_split")
    if same and same.get("n"):
        cv_mae = same["agreement"]["lv_ef_percent"].get("mae")
        shipped_subjects = {s["subject"]: s for s in results["shipped"]["subjects"]}
        pairs = [(shipped_subjects[s]["predicted"]["lv_ef_percent"], shipped_subjects[s]["reference"]["lv_ef_percent"])
                 for s in same["subjects"] if s in shipped_subjects]
        shipped_mae = agreement(pairs).get("mae")
        if cv_mae is not None and shipped_mae is not None:
            verdict = ("the shipped model is kept" if cv_mae > shipped_mae else
                       "the CV recipe is at least as good on these patients")
            notes.append(f"Shipped model vs the CV fold models on the same {same['n']} held-out patients: LVEF MAE "
                         f"{fmt(shipped_mae, 2)} vs {fmt(cv_mae, 2)} points, LV Dice ED "
                         f"{fmt(np.mean([shipped_subjects[s]['dice']['ED']['lv_blood_pool'] for s in same['subjects']]), 3)}"
                         f" vs {fmt(same['dice']['lv_blood_pool_ED']['mean'], 3)}: {verdict}.")
    for r in results["whole_cines"]:
        if r["lvef_error"] is not None and abs(r["lvef_error"]) > GOALS["whole_cine_lvef"]:
            at_ref = r["lv_ef_percent_at_reference_phases"]
            timing_part = None if at_ref is None else r["lv_ef_percent"] - at_ref
            segmentation_part = None if at_ref is None else at_ref - r["reference_lv_ef_percent"]
            notes.append(
                f"{r['subject']}: LVEF {fmt(r['lv_ef_percent'])} vs {fmt(r['reference_lv_ef_percent'])} %. Read at the "
                f"reference phases the same segmentation gives {fmt(at_ref)} %: the segmentation carries "
                f"{fmt(segmentation_part)} points of the error and the ED/ES choice (ED {r['ed_phase']} vs "
                f"{r['reference_ed_phase']}, {r['ed_off_by']} off; ES {r['es_phase']} vs {r['reference_es_phase']}, "
                f"{r['es_off_by']} off) {fmt(timing_part)} points.")
    notes.append("Sunnybrook references cover the contoured slices only and are loose (±10 %); ACDC images carry no real "
                 "patient orientation (rotation/flip augmentation stands in for it).")
    return notes


def _shown(path: Path) -> str:
    """The path relative to the working directory when it lies below it (reports carry no machine paths)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "datasets")
    parser.add_argument("--models", type=Path, default=Path(__file__).resolve().parents[1] / "models")
    parser.add_argument("--cv", type=Path, default=None, help="run folder of engines.cine.train --folds 5")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--update-card", action="store_true", help="write the shipped split's metrics into the card")
    parser.add_argument("--max-subjects", type=int, default=0,
                        help="smoke test: only the first N held-out ACDC patients per model (0: all)")
    parser.add_argument("--training-note", default="", help="how the folds were trained, where the checkpoints alone "
                                                               "do not say (e.g. continued from a shorter budget)")
    parser.add_argument("--no-whole-cines", action="store_true", help="smoke test: skip the whole-cine table")
    parser.add_argument("--refine", default="cine_unet_refine",
                        help="model in --models that re-segments the ED/ES phases the shipped model finds, as the "
                             "node does when it is installed ('' or missing: the shipped model alone)")
    parser.add_argument("--calibrated", action="store_true",
                        help="CV folds use the cross-fitted logit offsets of <cv>/calibration.json (engines.cine.calibrate)")
    parser.add_argument("--reuse-model-results", action="store_true",
                        help="take the model's held-out split and whole-cine results from <out>/evaluation.json when "
                             "it was written for the same ONNX file (sha256) and the same --max-subjects; "
                             "only the CV part is recomputed")
    parser.add_argument("--reuse-cv", action="store_true",
                        help="without --cv: keep the cross-validation results (and their training note) of "
                             "<out>/evaluation.json, for a change that does not touch the two-phase ACDC CV (e.g. the "
                             "whole-cine timing rule) when the CV run folders are not on this machine")
    parser.add_argument("--reuse-cv-note", default="",
                        help="with --reuse-cv: how the change made since bears on the kept CV results (the report's "
                             "default says it does not touch them)")
    args = parser.parse_args(argv)
    if args.reuse_cv and args.cv is not None:
        parser.error("--reuse-cv keeps earlier CV results; it cannot be combined with --cv")

    model = OnnxModel(args.models, threads=args.threads)
    held_out = model.card["training"]["held_out_subjects"]
    test_acdc = sorted(s for s in held_out if s.startswith("patient"))
    trained_on = set(model.card["training"]["train_subjects"])
    if trained_on & set(test_acdc) or trained_on & set(SUNNYBROOK_HELD_OUT) or "patient090" in trained_on:
        raise SystemExit("the model card lists evaluation subjects among its training subjects: refusing to evaluate")
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()} ({__import__('os').cpu_count()} CPU cores, shared with other training)",
        "model": model.card, "model_path": _shown(args.models / "cine_unet.onnx"), "model_sha256": hashlib.sha256((args.models / "cine_unet.onnx").read_bytes()).hexdigest(),
    }
    if args.refine and (args.models / f"{args.refine}.onnx").is_file():
        refine = OnnxModel(args.models, args.refine, threads=args.threads)
        refine_trained_on = set(refine.card["training"]["train_subjects"])
        if refine_trained_on & (set(test_acdc) | set(SUNNYBROOK_HELD_OUT) | {"patient090"}):
            raise SystemExit(f"{args.refine}'s card lists evaluation subjects among its training subjects: refusing")
        model.refine = (refine.run, refine.spec)
        results["refine_model"] = refine.card
        results["refine_model_path"] = _shown(args.models / f"{args.refine}.onnx")
        # the results below depend on both networks: reuse (--reuse-model-results) needs both unchanged
        results["model_sha256"] = hashlib.sha256((args.models / "cine_unet.onnx").read_bytes()
                                                 + (args.models / f"{args.refine}.onnx").read_bytes()).hexdigest()
    results["training_note"] = args.training_note
    if args.reuse_cv:
        earlier_path = args.out / "evaluation.json"
        if not earlier_path.is_file():
            raise SystemExit(f"--reuse-cv: {earlier_path} does not exist")
        earlier = json.loads(earlier_path.read_text())
        if "cv" not in earlier:
            raise SystemExit(f"--reuse-cv: {earlier_path} holds no cross-validation results")
        for key in ("cv_dir", "cv", "calibration", "cv_on_shipped_split"):
            if key in earlier:
                results[key] = earlier[key]
        results["training_note"] = args.training_note or earlier.get("training_note", "")
        results["cv_date"] = earlier.get("cv_date", earlier["date"])
        if args.reuse_cv_note:
            results["reuse_cv_note"] = args.reuse_cv_note
    if args.cv is not None:
        results["cv_dir"] = _shown(args.cv)
        calibration = json.loads((args.cv / "calibration.json").read_text()) if args.calibrated else None
        results["cv"] = evaluate_cv(args.datasets, args.cv, args.threads, args.max_subjects, calibration)
        if calibration:
            results["calibration"] = {k: calibration[k] for k in ("objective", "per_fold", "shipped", "grid",
                                                                   "objective_all_subjects", "channels")}
        same = [s for s in results["cv"]["subjects"] if s["subject"] in test_acdc]
        if same:
            results["cv_on_shipped_split"] = {"subjects": [s["subject"] for s in same], **summarise_acdc(same)}
    previous_path = args.out / "evaluation.json"
    previous = json.loads(previous_path.read_text()) if args.reuse_model_results and previous_path.is_file() else {}
    if (previous.get("model_sha256") == results["model_sha256"] and previous.get("max_subjects") == args.max_subjects
            and "shipped" in previous and "whole_cines" in previous):
        print(f"reusing the model's held-out split and whole-cine results of {previous['date']}")
        results["shipped"], results["whole_cines"] = previous["shipped"], previous["whole_cines"]
        results["model_results_date"] = previous.get("model_results_date", previous["date"])
    else:
        results["shipped"] = evaluate_acdc(args.datasets, model,
                                           test_acdc[:args.max_subjects] if args.max_subjects > 0 else test_acdc)
        results["whole_cines"] = [] if args.no_whole_cines else evaluate_whole_cines(args.datasets, model)
        results["model_results_date"] = results["date"]
    results["max_subjects"] = args.max_subjects
    results["shortfalls"] = shortfalls(results)
    json_results = {k: v for k, v in results.items() if k not in ("model", "refine_model")}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "evaluation.json").write_text(json.dumps(json_results, indent=1, default=float) + "\n")
    write_report(results, args.out / "EVALUATION.md")
    print(f"wrote {args.out / 'EVALUATION.md'} and {args.out / 'evaluation.json'}")
    if args.update_card:
        # with a refining model, the held-out split and the whole cines' ED/ES values are its: they go into its card
        card_path = args.models / (f"{args.refine}.json" if results.get("refine_model") else "cine_unet.json")
        card = json.loads(card_path.read_text())
        shipped = results["shipped"]
        card["metrics"] = {
            "evaluation": "engines/cine/EVALUATION.md", "held_out_acdc_subjects": shipped["n"],
            "acdc_dice": {k: round(v["mean"], 4) for k, v in shipped["dice"].items()},
            **{f"acdc_{key}": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in shipped["agreement"][key].items()}
               for key in ("lv_ef_percent", "lv_mass_g", "rv_ef_percent")},
            # agreement over the whole cross-validation: the node quotes the RVEF's beside every RV number
            # (dicomnode.analysis.cine.rv_validation_from_card) and each flagged quantity's as the known error of its
            # flag (function_validation_from_card); the all-phase model's card only, as the cross-validation folds
            # are all-phase models
            **(cv_card_metrics(results["cv"], skip=("lv_mass_g",) if stale_cv_mass(results) else ())
               if not results.get("refine_model") and (results.get("cv") or {}).get("agreement") else {}),
            "whole_cines": [{k: r[k] for k in ("subject", "ed_phase", "es_phase", "reference_ed_phase",
                                                "reference_es_phase", "lv_ef_percent", "reference_lv_ef_percent")}
                            for r in results["whole_cines"]],
        }
        card_path.write_text(json.dumps(card, indent=1) + "\n")
        print(f"metrics written into {card_path}")


def sv_difference_agreement(subjects: list[dict]) -> dict:
    """Agreement (`agreement`) of LV SV - RV SV (mL), the quantity the node's stroke-volume check compares
    (dicomnode.analysis.cine_metrics.stroke_volume_mismatch), from each subject's predicted and reference values."""
    def difference(values: dict) -> float | None:
        lv, rv = values.get("lv_sv_ml"), values.get("rv_sv_ml")
        return None if lv is None or rv is None else float(lv) - float(rv)
    return agreement([(difference(s["predicted"]), difference(s["reference"])) for s in subjects])


def cv_card_metrics(cv: dict, skip: tuple[str, ...] = ()) -> dict:
    """The card's "acdc_cv_<quantity>" agreement blocks of a cross-validation (`evaluate_cv`'s result) for every
    quantity whose error the node quotes beside a flag (dicomnode.analysis.cine.FLAG_ERROR_QUANTITIES) but `skip`."""
    agreements = {**cv["agreement"], SV_DIFFERENCE: sv_difference_agreement(cv["subjects"])}
    return {f"acdc_cv_{quantity}": card_agreement(agreements[quantity]) for quantity in FLAG_ERROR_QUANTITIES
            if (agreements.get(quantity) or {}).get("n") and quantity not in skip}


def stale_cv_mass(results: dict) -> bool:
    """True when the shipped card's epicardial offset (engines.cine.calibrate_epicardium) is not the one the CV fold
    models were measured with (evaluate_cv: none): the CV's LV mass then describes another wall, so the card keeps
    the held-out split's mass block only (the node reads that one: dicomnode.analysis.cine.function_validation_from_card)."""
    card_offset = float(((results.get("model") or {}).get("output") or {}).get("epicardial_logit_offset", 0.0))
    cv = results.get("cv") or {}
    return bool(cv.get("n")) and card_offset != float(cv.get("epicardial_offset", 0.0))


def card_agreement(block: dict) -> dict:
    """An agreement block ({"n", "mean_error", "sd_error", "mae", "r"}) as the card stores it: floats to 3 decimals."""
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in block.items()}


if __name__ == "__main__":
    main()
