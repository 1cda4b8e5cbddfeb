"""Maximal ED wall thickness (dicomnode.analysis.wall_thickness) on ACDC's HCM and normal patients: from the expert
myocardium and from the shipped cine model's, their agreement, and how the 15 mm HCM cut-off separates the groups.

nice -n 19 python -m engines.cine.wall_thickness_eval --datasets ../shared/datasets [--no-model] [--out FILE.json]

Each patient's ED frame (ACDC Info.cfg; its ES frame is segmented too, as the node segments both, but only ED is
measured): the expert label map and the model's (engines.cine.evaluate.segment_node_way: the node's own
segmentation path, ONNX on the CPU), one slice order base -> apex (ACDC z), AHA segments from the same label map.
The shipped model was trained on 80 of the 100 ACDC patients (engines.cine.data.acdc_subject_split): its numbers on
those are optimistic; the held-out ones are reported separately.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from dicomnode.analysis.aha import aha_segments
from dicomnode.analysis.wall_thickness import HCM_THRESHOLD_MM, METHOD, max_wall_thickness
from engines.cine.data import acdc_groups, acdc_nifti_dirs, acdc_subject_split
from engines.cine.evaluate import OnnxModel, acdc_nifti_subject, acdc_png_subject, segment_node_way

GROUPS = ("HCM", "NOR")
#: the same in every row: written once, at the top of the JSON
SHARED_KEYS = ("method", "threshold_mm", "threshold_source")


def measure(labels_ed: np.ndarray, spacing, dz: float) -> dict:
    """max_wall_thickness of one ED label map (slices base -> apex, so the basal end is the first, as the node
    knows it from the geometry) with its AHA segment."""
    positions = np.arange(labels_ed.shape[0]) * dz
    aha = aha_segments(labels_ed.astype(np.int16), spacing, positions, "first", scar=False)
    found = max_wall_thickness(labels_ed.astype(np.int16), spacing, aha.segment_map if aha.applicable else None,
                               basal_end="first")
    return {key: value for key, value in found.summary().items() if key not in SHARED_KEYS}


def separation(values: dict[str, list[float]]) -> dict:
    """Counts at >= HCM_THRESHOLD_MM per group."""
    return {group: {"n": len(v), "at_or_above": int(sum(x >= HCM_THRESHOLD_MM for x in v)),
                    "median_mm": round(float(np.median(v)), 2) if v else None,
                    "range_mm": [round(float(min(v)), 2), round(float(max(v)), 2)] if v else None}
            for group, v in values.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--models", type=Path, default=Path("engines/models"))
    parser.add_argument("--no-model", action="store_true", help="expert labels only")
    parser.add_argument("--out", type=Path, default=Path("engines/cine/wall_thickness.json"))
    args = parser.parse_args()
    nifti = {p.name: p for p in acdc_nifti_dirs(args.datasets)}
    _, held_out = acdc_subject_split(args.datasets)
    model = None if args.no_model else OnnxModel(args.models)
    rows = []
    for group in GROUPS:
        for patient in acdc_groups()[group]:
            pixels, truth, spacing, dz = acdc_nifti_subject(nifti[patient]) if patient in nifti \
                else acdc_png_subject(args.datasets, patient)
            row = {"patient": patient, "group": group, "held_out": patient in held_out,
                   "spacing_mm": [*spacing, dz], "expert": measure(truth[0], spacing, dz)}
            if model is not None:
                predicted, measured = segment_node_way(pixels, spacing, model, spacing[0] * spacing[1] * dz / 1000.0)
                row["model"] = measure(predicted[measured.ed_phase], spacing, dz)
            rows.append(row)
            print(patient, group, row["expert"]["max_mm"], row["expert"]["segment"],
                  (row.get("model") or {}).get("max_mm"), (row.get("model") or {}).get("segment"), flush=True)
    result = {"method": METHOD, "threshold_mm": HCM_THRESHOLD_MM,
              "note": "ACDC slice order base -> apex without patient geometry: the AHA segment numbers are consistent "
                      "between expert and model but may be mirrored (anterior <-> inferior)", "rows": rows}
    for source in ("expert", "model"):
        if all(source in r for r in rows):
            result[f"{source}_separation"] = separation(
                {g: [r[source]["max_mm"] for r in rows if r["group"] == g] for g in GROUPS})
    if model is not None:
        for subset, chosen in (("all", rows), ("held_out", [r for r in rows if r["held_out"]])):
            diff = np.array([r["model"]["max_mm"] - r["expert"]["max_mm"] for r in chosen])
            pairs = np.array([[r["expert"]["max_mm"], r["model"]["max_mm"]] for r in chosen])
            result[f"agreement_{subset}"] = {
                "n": len(chosen), "bias_mm": round(float(diff.mean()), 2), "sd_mm": round(float(diff.std(ddof=1)), 2),
                "mae_mm": round(float(np.abs(diff).mean()), 2),
                "r": round(float(np.corrcoef(pairs.T)[0, 1]), 3) if len(chosen) > 2 else None,
                "same_side_of_cutoff": int(sum((e >= HCM_THRESHOLD_MM) == (m >= HCM_THRESHOLD_MM) for e, m in pairs)),
                "same_segment": int(sum(r["model"]["segment"] == r["expert"]["segment"] for r in chosen))}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))


if __name__ == "__main__":
    main()
