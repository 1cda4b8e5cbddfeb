"""Candidate basal-slice rules per phase and per ventricle, and a maximal-wall-thickness slice rule, measured against
the node's current rules on stored cross-validation models, the shipped model and the expert labels (issue #16).

    python -m engines.cine.basal_rules segment --cv engines/checkpoints/cine_basal3 --shipped --threads 2
    python -m engines.cine.basal_rules evaluate --out engines/checkpoints/cine_basal_rules/results.json

`segment` caches each held-out ACDC patient's ED and ES label maps as the node makes them
(engines.cine.evaluate.segment_node_way: localisation, resampling, largest-structure rule) for every fold model of
--cv (five folds, 100 held-out patients) and, with --shipped, for the shipped ONNX model on its 20 held-out patients
and the four whole cines of the shared data; the expert labels beside them (engines/runs/basal_rules/*.npz).
`evaluate` applies each rule to the model's label maps and to the expert's (the rule must not cut real ventricle:
expert volumes unchanged or nearly) and gives, per rule, the agreement with the expert values under the node's
current rule, and per-patient paired differences of absolute errors (mean ± SE) against the current rule.

ACDC stacks run base -> apex (z = 0 basal). Whole cines: the basal end is the end slice with the larger LV section
(blood pool + myocardium) at the largest-LV phase (an experiment's convention, not the node's; the node knows it
from ImageOrientationPatient, cine.apex_first).

Rules (all on label maps alone; LV rule = the node's 50 % surround rule, cine_metrics.lv_slice_volumes_ml):
- RV_current: every RV slice as segmented (the node today).
- RV_within_lv: at each phase, RV blood pool counted only in slices at or apical to the most basal slice holding LV
  myocardium at that phase (the RA lies above the AV plane; SCMR 2020 keeps the RV outflow tract, which lies beside
  the LV outflow tract, so a stack whose RV reaches above the LV myocardium is what this would cut).
- RV_es_below_lv: at ES, RV counted only in slices apical to the LV's most basal counted slice at ES (the tricuspid
  annulus lies apical to the mitral annulus).
- RV_es_descent: at ES, the RV left out in the slice(s) at or basal to the RV's most basal slice at ED (the tricuspid
  annulus descends 15-25 mm in systole, TAPSE, against 5-10 mm ACDC slice steps).
- RV_es_not_shrinking: at ES, the RV's most basal slice left out where its RV area is not smaller than at ED (an atrium
  fills in systole, a ventricle empties: the SCMR criterion for telling the two apart, judged on areas).
- LV_basal_taper / RV_basal_taper: at each phase, the ventricle's basal end slice left out where it holds less than
  half the blood pool of the next slice (a partial-volume cut through the valve plane or the atrium: from apex to
  base a ventricle widens up to its annulus).
- LV_es_descent: at ES, the LV blood pool left out in the slice that was the LV's most basal counted slice at ED
  (the mitral annulus descends 10-15 mm in systole), beside the 50 % rule.
Wall thickness (dicomnode.analysis.wall_thickness.max_wall_thickness, ED):
- WT_current: every slice the basal rule keeps.
- WT_no_basal_end: the most basal slice holding LV blood pool at ED not measured.
- WT_basal_taper: that slice not measured only where its LV blood pool is less than half the next slice's (the
  LV_basal_taper criterion at ED): wall_thickness.BASAL_END_RULE, max_wall_thickness with basal_end "first", as the
  node runs it where the stack's basal end is known.
HCM criterion counts (>= 15 mm) per ACDC group, model and expert.
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from dicomnode.analysis.cine_metrics import (ejection_fraction_percent, lv_slice_volumes_ml, measure_cine,
                                             myocardial_mass_g, rv_cardiac_phases, slice_volumes_ml, trigger_phase)
from dicomnode.analysis.wall_thickness import HCM_THRESHOLD_MM, max_wall_thickness
from dicomnode.cmr.orientation import canonical_inplane
from dicomnode.labels import MYOCARDIUM_LABELS, Label
from engines.cine.data import (SUNNYBROOK_HELD_OUT, acdc_groups, acdc_nifti_dirs, load_acdc_nifti_volume,
                               load_sunnybrook_cine, read_info_cfg)
from engines.cine.evaluate import (OnnxModel, TorchFoldModel, acdc_nifti_subject, acdc_png_subject, agreement,
                                   segment_node_way, sunnybrook_orientation)

LV, RV = int(Label.LV_BLOOD_POOL), int(Label.RV_BLOOD_POOL)
MYO = [int(v) for v in MYOCARDIUM_LABELS]
CACHE = Path("engines/runs/basal_rules")
QUANTITIES = ("lv_edv_ml", "lv_esv_ml", "lv_ef_percent", "lv_mass_g", "rv_edv_ml", "rv_esv_ml", "rv_ef_percent")


# ---------------------------------------------------------------- segmentation cache

def _save_acdc(datasets: Path, model, patient: str, nifti: dict, path: Path) -> None:
    if path.is_file():
        return
    pixels, truth, spacing, dz = acdc_nifti_subject(nifti[patient]) if patient in nifti \
        else acdc_png_subject(datasets, patient)
    voxel_ml = spacing[0] * spacing[1] * dz / 1000.0
    predicted, _ = segment_node_way(pixels, spacing, model, voxel_ml)
    np.savez_compressed(path, predicted=predicted.astype(np.uint8), truth=truth.astype(np.uint8), voxel_ml=voxel_ml,
                        spacing=np.array([*spacing, dz]))
    print(path.name, flush=True)


def _save_whole_cines(datasets: Path, model, out: Path) -> None:
    folder = datasets / "acdc-4d-sample" / "patient090"
    path = out / "whole_ACDC_patient090.npz"
    if folder.is_dir() and not path.is_file():
        info = read_info_cfg(folder / "Info.cfg")
        pixels, spacing, dz = load_acdc_nifti_volume(folder / "patient090_4d.nii.gz")
        voxel_ml = spacing[0] * spacing[1] * dz / 1000.0
        predicted, _ = segment_node_way(pixels, spacing, model, voxel_ml)
        _, truth, _, _ = acdc_nifti_subject(folder)
        np.savez_compressed(path, predicted=predicted.astype(np.uint8), truth=truth.astype(np.uint8),
                            voxel_ml=voxel_ml, reference_phases=np.array([int(info["ED"]) - 1, int(info["ES"]) - 1]))
        print(path.name, flush=True)
    contour_csv = datasets / "sunnybrook-scd" / "reference_values_from_contours.csv"
    table = {r["patient_id"]: r for r in csv.DictReader(open(contour_csv))} if contour_csv.is_file() else {}
    for patient in SUNNYBROOK_HELD_OUT:
        path = out / f"whole_Sunnybrook_{patient}.npz"
        if patient not in table or path.is_file():
            continue
        pixels, spacing, dz, _, trigger_times = load_sunnybrook_cine(datasets, patient)
        canonical = canonical_inplane(sunnybrook_orientation(datasets, patient))
        first_phase = trigger_phase(trigger_times, len(pixels))[0]
        voxel_ml = spacing[0] * spacing[1] * dz / 1000.0
        predicted, _ = segment_node_way(pixels, spacing, model, voxel_ml, trigger_times, first_phase, canonical)
        row = table[patient]
        np.savez_compressed(path, predicted=predicted.astype(np.uint8), voxel_ml=voxel_ml,
                            trigger_times=np.array([np.nan if t is None else t for t in trigger_times], float),
                            reference_phases=np.array([int(row["ed_phase_index"]), int(row["es_phase_index"])]),
                            reference=np.array([float(row["lv_edv_ml"]), float(row["lv_esv_ml"]),
                                                float(row["lv_ef_pct"])]))
        print(path.name, flush=True)


def segment(args) -> None:
    args.cache.mkdir(parents=True, exist_ok=True)
    nifti = {folder.name: folder for folder in acdc_nifti_dirs(args.datasets)}
    if args.shipped:
        model = OnnxModel(args.models, threads=args.threads)
        for patient in sorted(s for s in model.card["training"]["held_out_subjects"] if s.startswith("patient")):
            _save_acdc(args.datasets, model, patient, nifti, args.cache / f"shipped_{patient}.npz")
        _save_whole_cines(args.datasets, model, args.cache)
    if args.cv is not None:
        for weights in sorted(list(args.cv.glob("fold*/weights.pt")) + list(args.cv.glob("fold*/checkpoint.pt"))):
            model = TorchFoldModel(weights, args.threads)
            for patient in [s for s in model.checkpoint["test_subjects"] if s.startswith("patient")]:
                _save_acdc(args.datasets, model, patient, nifti,
                           args.cache / f"{args.cv.name}_{weights.parent.name}_{patient}.npz")


# ---------------------------------------------------------------- rules

def _first(mask2: np.ndarray) -> int | None:
    """Index of the first True slice of a (slices,) mask (the basal end, z = 0 basal), None where none."""
    z = np.flatnonzero(mask2)
    return int(z[0]) if z.size else None


def lv_counted(labels: np.ndarray, voxel_ml: float, rule: str, es: int) -> np.ndarray:
    """(phases, slices) LV blood-pool volumes (mL) the rule counts."""
    volumes, _ = lv_slice_volumes_ml(labels, voxel_ml)
    if rule == "LV_basal_taper":
        volumes = _taper(volumes)
    if rule == "LV_es_descent":
        base_ed = _first(volumes[0 if es else 1] > 0) if labels.shape[0] == 2 else None
        if base_ed is not None:
            volumes = volumes.copy()
            volumes[es, :base_ed + 1] = 0.0
    return volumes


#: the basal end slice counts only with at least this share of the next slice's blood pool (the *_basal_taper rules)
TAPER_FRACTION = 0.5


def _taper(volumes: np.ndarray) -> np.ndarray:
    """(phases, slices) volumes with, at each phase, the basal end slice left out where it holds less than
    TAPER_FRACTION of the next slice's volume (a partial-volume cut through the valve plane or the atrium)."""
    volumes = volumes.copy()
    for phase in range(volumes.shape[0]):
        z = np.flatnonzero(volumes[phase] > 0)
        if z.size > 1 and volumes[phase, z[0]] < TAPER_FRACTION * volumes[phase, z[1]]:
            volumes[phase, z[0]] = 0.0
    return volumes


def rv_counted(labels: np.ndarray, voxel_ml: float, rule: str, ed: int, es: int, es_phases=None) -> np.ndarray:
    """(phases, slices) RV blood-pool volumes (mL) the rule counts; `es_phases` the phases an ES rule judges
    (default: es)."""
    rv = slice_volumes_ml(labels, [RV], voxel_ml).copy()
    if rule == "RV_current":
        return rv
    if rule == "RV_basal_taper":
        return _taper(rv)
    myo = slice_volumes_ml(labels, MYO, voxel_ml) > 0
    lv, _ = lv_slice_volumes_ml(labels, voxel_ml)
    rv_ed = slice_volumes_ml(labels[ed:ed + 1], [RV], voxel_ml)[0]
    for phase in (range(labels.shape[0]) if rule == "RV_within_lv" else (es_phases if es_phases is not None else [es])):
        if rule == "RV_within_lv":
            base = _first(myo[phase])
            if base is not None:
                rv[phase, :base] = 0.0
        elif rule == "RV_es_below_lv":
            base = _first(lv[phase] > 0)
            if base is not None:
                rv[phase, :base + 1] = 0.0
        elif rule == "RV_es_descent":
            base = _first(rv_ed > 0)
            if base is not None:
                rv[phase, :base + 1] = 0.0
        elif rule == "RV_es_not_shrinking":
            base = _first(rv[phase] > 0)
            if base is not None and rv[phase, base] >= rv_ed[base]:
                rv[phase, base] = 0.0
        else:
            raise ValueError(f"unknown RV rule {rule}")
    return rv


LV_RULES = ("LV_current", "LV_es_descent", "LV_basal_taper")
RV_RULES = ("RV_current", "RV_within_lv", "RV_es_below_lv", "RV_es_descent", "RV_es_not_shrinking", "RV_basal_taper")
WT_RULES = ("WT_current", "WT_no_basal_end", "WT_basal_taper")


def function_values(labels: np.ndarray, voxel_ml: float, lv_rule: str, rv_rule: str) -> dict:
    """ED (index 0) and ES (index 1) values under the rules."""
    lv = lv_counted(labels, voxel_ml, lv_rule, 1).sum(axis=1)
    rv = rv_counted(labels, voxel_ml, rv_rule, 0, 1).sum(axis=1)
    return {"lv_edv_ml": float(lv[0]), "lv_esv_ml": float(lv[1]), "lv_ef_percent": ejection_fraction_percent(lv[0], lv[1]),
            "lv_mass_g": myocardial_mass_g(labels[0], voxel_ml), "rv_edv_ml": float(rv[0]), "rv_esv_ml": float(rv[1]),
            "rv_ef_percent": ejection_fraction_percent(rv[0], rv[1])}


def wall_thickness(labels_ed: np.ndarray, spacing, rule: str) -> float | None:
    """Maximal ED wall thickness (mm) under the rule (z = 0 basal)."""
    labels_ed = labels_ed.astype(np.int16)
    if rule == "WT_no_basal_end":
        base = _first((labels_ed == LV).any(axis=(1, 2)))
        if base is not None:
            labels_ed = labels_ed.copy()
            labels_ed[base] = 0
    return max_wall_thickness(labels_ed, spacing[:2], basal_end="first" if rule == "WT_basal_taper" else None).max_mm


# ---------------------------------------------------------------- evaluation

def _paired(rows: list[dict], source: str, rule: str, current: str, quantity: str) -> dict:
    """Agreement of `rule` with the expert (current rule on the expert labels) and the paired difference of absolute
    errors against `current` (negative: the rule is closer)."""
    pairs, diffs, changes = [], [], []
    for row in rows:
        reference = row["expert"][current][quantity]
        new, old = row[source][rule][quantity], row[source][current][quantity]
        if reference is None or new is None or old is None:
            continue
        pairs.append((new, reference))
        diffs.append(abs(new - reference) - abs(old - reference))
        changes.append(new - old)
    d = np.array(diffs)
    return {**agreement(pairs), "paired_abs_error_difference": float(d.mean()) if d.size else None,
            "paired_se": float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else None,
            "changed_patients": int(np.sum(np.abs(changes) > 1e-6)), "mean_change": float(np.mean(changes)) if changes else None}


def evaluate_acdc(files: list[Path]) -> dict:
    groups = {patient: group for group, patients in acdc_groups().items() for patient in patients}
    rows = []
    for path in files:
        data = np.load(path)
        predicted, truth, voxel_ml, spacing = data["predicted"], data["truth"], float(data["voxel_ml"]), data["spacing"]
        patient = path.stem.split("_")[-1]
        row = {"file": path.stem, "patient": patient, "group": groups.get(patient)}
        for source, labels in (("model", predicted), ("expert", truth)):
            row[source] = {}
            for rule in LV_RULES + RV_RULES:
                lv_rule = rule if rule.startswith("LV") else "LV_current"
                rv_rule = rule if rule.startswith("RV") else "RV_current"
                row[source][rule] = function_values(labels, voxel_ml, lv_rule, rv_rule)
            row[source]["LV_current"] = row[source]["RV_current"]
            row[source]["wall_thickness_mm"] = {rule: wall_thickness(labels[0], spacing, rule) for rule in WT_RULES}
        rows.append(row)
    summary = {}
    for rule in LV_RULES[1:] + RV_RULES:
        summary[rule] = {source: {q: _paired(rows, source, rule, "RV_current", q) for q in QUANTITIES}
                         for source in ("model", "expert")}
    wall = {}
    for rule in WT_RULES:
        block = {}
        for source in ("model", "expert"):
            values = [(r["group"], r[source]["wall_thickness_mm"][rule]) for r in rows]
            block[source] = {"HCM_at_or_above": sum(1 for g, v in values if g == "HCM" and v is not None and v >= HCM_THRESHOLD_MM),
                             "HCM_n": sum(1 for g, _ in values if g == "HCM"),
                             "non_HCM_at_or_above": sum(1 for g, v in values if g != "HCM" and v is not None and v >= HCM_THRESHOLD_MM),
                             "non_HCM_n": sum(1 for g, _ in values if g != "HCM"),
                             "non_HCM_flagged": [r["patient"] for r in rows if r["group"] != "HCM"
                                                 and (r[source]["wall_thickness_mm"][rule] or 0) >= HCM_THRESHOLD_MM],
                             "HCM_missed": [r["patient"] for r in rows if r["group"] == "HCM"
                                            and (r[source]["wall_thickness_mm"][rule] or 0) < HCM_THRESHOLD_MM]}
        model_vs_expert = np.array([r["model"]["wall_thickness_mm"][rule] - r["expert"]["wall_thickness_mm"][rule]
                                    for r in rows if r["model"]["wall_thickness_mm"][rule] is not None
                                    and r["expert"]["wall_thickness_mm"][rule] is not None])
        block["model_vs_expert"] = {"n": int(model_vs_expert.size), "bias_mm": float(model_vs_expert.mean()),
                                    "sd_mm": float(model_vs_expert.std(ddof=1)),
                                    "mae_mm": float(np.abs(model_vs_expert).mean())}
        wall[rule] = block
    return {"n": len(rows), "rules": summary, "wall_thickness": wall, "rows": rows}


def _basal_first(predicted: np.ndarray) -> np.ndarray:
    """The label maps flipped along the stack where the last slice is the basal end (whole cines)."""
    lv_section = slice_volumes_ml(predicted, [LV] + MYO, 1.0)
    phase = int(np.argmax(slice_volumes_ml(predicted, [LV], 1.0).sum(axis=1)))
    ends = np.flatnonzero(lv_section[phase] > 0)
    return predicted[:, ::-1] if lv_section[phase, ends[-1]] > lv_section[phase, ends[0]] else predicted


def evaluate_whole_cines(files: list[Path]) -> list[dict]:
    """Each whole cine measured by the node (measure_cine: timing, LV rule), then the RV ES rules applied at the
    RV ES window (the LV's ES phase and its neighbours) and the RV ED/ES read as the node does (rv_cardiac_phases)."""
    out = []
    for path in files:
        data = np.load(path)
        predicted, voxel_ml = data["predicted"], float(data["voxel_ml"])
        trigger_times = [None if np.isnan(t) else float(t) for t in data["trigger_times"]] \
            if "trigger_times" in data else None
        measured = measure_cine(predicted, voxel_ml, trigger_times=trigger_times)
        ed, es = measured.ed_phase, measured.es_phase
        labels = _basal_first(predicted)
        n = labels.shape[0]
        row = {"subject": path.stem.replace("whole_", ""), "ed": ed, "es": es,
               "reference_phases": [int(v) for v in data["reference_phases"]],
               "lv_ef_percent": measured.lv_ef_percent, "rv": {}}
        if "reference" in data:
            row["reference_lv_ef_percent"] = float(data["reference"][2])
        if "truth" in data:
            truth = data["truth"]
            row["reference_lv_ef_percent"] = function_values(truth, voxel_ml, "LV_current", "RV_current")["lv_ef_percent"]
            row["reference_rv"] = {rule: function_values(truth, voxel_ml, "LV_current", rule)["rv_ef_percent"]
                                   for rule in RV_RULES}
        window = [(es + k) % n for k in (-1, 0, 1)]
        for rule in RV_RULES:
            curve = rv_counted(labels, voxel_ml, rule, ed, es, window).sum(axis=1)
            rv_ed, rv_es = rv_cardiac_phases(curve, ed, es)
            row["rv"][rule] = {"rv_edv_ml": float(curve[rv_ed]), "rv_esv_ml": float(curve[rv_es]),
                               "rv_ef_percent": ejection_fraction_percent(curve[rv_ed], curve[rv_es])}
        out.append(row)
    return out


def _rounded(value):
    """The results with every float to 3 decimals (mL, %, g, mm: far below what the comparison resolves)."""
    if isinstance(value, dict):
        return {key: _rounded(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return round(float(value), 3)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _table(block: dict, title: str) -> list[str]:
    lines = [f"### {title}", "", "| rule | source | " + " | ".join(QUANTITIES) + " |", "|---|---|" + "---|" * len(QUANTITIES)]
    for rule, sources in block.items():
        for source, values in sources.items():
            cells = []
            for q in QUANTITIES:
                v = values[q]
                if not v.get("n"):
                    cells.append("-")
                    continue
                cells.append(f"MAE {v['mae']:.2f} bias {v['mean_error']:+.2f}; Δ {v['paired_abs_error_difference']:+.2f} "
                             f"± {v['paired_se']:.2f} ({v['changed_patients']} changed)")
            lines.append(f"| {rule} | {source} | " + " | ".join(cells) + " |")
    return lines + [""]


def evaluate(args) -> None:
    started = time.time()
    cache = args.cache
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "cv": evaluate_acdc(sorted(cache.glob("cine_basal3_fold*_patient*.npz"))),
              "shipped": evaluate_acdc(sorted(cache.glob("shipped_patient*.npz"))),
              "whole_cines": evaluate_whole_cines(sorted(cache.glob("whole_*.npz")))}
    result["wall_s"] = round(time.time() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(_rounded(result), separators=(",", ":")) + "\n")
    lines = []
    for key, title in (("cv", "cine_basal3, 5 CV folds, 100 held-out ACDC patients"),
                       ("shipped", "shipped cine_unet (CV fold 1), its 20 held-out ACDC patients")):
        block = result[key]
        current = {"model": {q: _paired(block["rows"], "model", "RV_current", "RV_current", q) for q in QUANTITIES}}
        lines += _table({"current": current, **block["rules"]}, f"{title} (n = {block['n']})")
        lines += [f"Wall thickness ({title}):", ""]
        for rule, wt in block["wall_thickness"].items():
            lines.append(f"- {rule}: model HCM {wt['model']['HCM_at_or_above']}/{wt['model']['HCM_n']}, non-HCM flagged "
                         f"{wt['model']['non_HCM_at_or_above']}/{wt['model']['non_HCM_n']} {wt['model']['non_HCM_flagged']}; "
                         f"expert HCM {wt['expert']['HCM_at_or_above']}/{wt['expert']['HCM_n']}, non-HCM flagged "
                         f"{wt['expert']['non_HCM_at_or_above']}/{wt['expert']['non_HCM_n']} {wt['expert']['non_HCM_flagged']}; "
                         f"model - expert {wt['model_vs_expert']['bias_mm']:+.2f} ± {wt['model_vs_expert']['sd_mm']:.2f} mm, "
                         f"MAE {wt['model_vs_expert']['mae_mm']:.2f}")
        lines.append("")
    lines += ["### Whole cines (shipped model)", "", "| cine | ED/ES (ref) | LVEF (ref) | " + " | ".join(RV_RULES) + " |",
              "|---|---|---|" + "---|" * len(RV_RULES)]
    for row in result["whole_cines"]:
        ref = row.get("reference_rv", {})
        lines.append(f"| {row['subject']} | {row['ed']}/{row['es']} ({row['reference_phases'][0]}/{row['reference_phases'][1]}) | "
                     f"{row['lv_ef_percent']:.1f} ({row.get('reference_lv_ef_percent', float('nan')):.1f}) | "
                     + " | ".join(f"RVEF {row['rv'][r]['rv_ef_percent']:.1f}" + (f" (expert {ref[r]:.1f})" if r in ref else "")
                                  for r in RV_RULES) + " |")
    text = "\n".join(lines) + "\n"
    args.out.with_suffix(".md").write_text(text)
    print(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    seg = sub.add_parser("segment")
    seg.add_argument("--datasets", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "datasets")
    seg.add_argument("--models", type=Path, default=Path(__file__).resolve().parents[1] / "models")
    seg.add_argument("--cv", type=Path, default=None, help="folder of fold*/weights.pt or fold*/checkpoint.pt")
    seg.add_argument("--shipped", action="store_true")
    seg.add_argument("--threads", type=int, default=1)
    seg.add_argument("--cache", type=Path, default=CACHE)
    ev = sub.add_parser("evaluate")
    ev.add_argument("--cache", type=Path, default=CACHE)
    ev.add_argument("--out", type=Path, default=Path("engines/checkpoints/cine_basal_rules/results.json"))
    args = parser.parse_args(argv)
    segment(args) if args.command == "segment" else evaluate(args)


if __name__ == "__main__":
    main()
