"""Calibrate the LGE model's scar decision (a log-probability offset on scar + MVO before the arg-max) per input
kind, by cross-fitting on the cross-validation folds.

    python -m engines.lge.calibrate --cv engines/runs/lge4_cv --threads 2

Why: the network is trained on two centres whose readers draw scar differently, and it cannot tell them apart; it
over-calls scar on MyoPS's 12-bit scans, even on the MyoPS patients it trained on (+8 %LGE points,
engines/lge/EVALUATION.md, "Fit on the models' own training cases"), while it is unbiased on EMIDEC's 8-bit exports.
The stored values say which kind of input a stack is (dicomnode.analysis.lge.input_kind: scanner-native values or
an 8-bit windowed export), so the decision is calibrated per kind. With two centres, kind and centre coincide: the
"native" offset is what MyoPS's readers call scar, the only scanner-native reference there is.

How, without leaking the test patients into the choice: every fold model segments its held-out cases once (the
node's segment_stack; probabilities kept); each offset of GRID is applied to the stored probabilities
(dicomnode.analysis.lge.decide_labels); for fold k and each kind the offset minimising the %LGE MAE over the other
folds' cases of that kind is chosen (cross-fitting), but only when it beats no offset there by MIN_GAIN points
(else 0: a gain within the noise of a few dozen patients is not taken). A kind is calibrated at all only where the
cross-fitted result beats no offset by MIN_GAIN %LGE points without losing large-burden flag accuracy; otherwise its
offset is 0 in every fold and in the shipped model. Fold k's reported results use its choice
(engines.lge.evaluate --calibration). The shipped model gets the choice made on all folds' cases. Writes
<cv>/lge_calibration.json, read by engines.lge.evaluate --calibration and engines.lge.export --calibration.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from dicomnode.analysis.lge import INPUT_KINDS, LGEInputSpec, decide_labels, input_kind, segment_stack
from dicomnode.analysis.lge_metrics import lge_volumes
from engines.lge.data import Case, load_cases
from engines.lge.export import CROP_SIZE, LOCALISATION_SIZE
from engines.lge.train import MODEL_SPACING_MM, load_model

#: scar + MVO log-probability offsets tried
GRID = tuple(float(v) for v in np.round(np.arange(-2.0, 1.01, 0.25), 2))
#: %LGE MAE (points) an offset must gain over no offset, on the cases it is chosen on, to be taken
MIN_GAIN = 0.25
CUTOFF = 15.0


def case_kind(case: Case) -> str:
    """The input kind the node would see for this case (no BitsStored in PNG / NIfTI: read from the values)."""
    return input_kind(case.image, None)


def sweep_case(case: Case, probabilities: np.ndarray) -> dict:
    """%LGE error (predicted - expert) at every GRID offset for one case's source-grid probabilities."""
    truth = lge_volumes(case.labels, case.voxel_volume_ml, cutoff_percent=CUTOFF).lge_percent
    errors = [lge_volumes(decide_labels(probabilities, offset), case.voxel_volume_ml,
                          cutoff_percent=CUTOFF).lge_percent - truth for offset in GRID]
    return {"kind": case_kind(case), "centre": case.centre, "truth": truth, "errors": errors}


def sweep_fold(model_path: Path, cases: dict[str, Case]) -> dict[str, dict]:
    """sweep_case for every held-out case of one fold model."""
    model, metadata = load_model(model_path)
    spec = LGEInputSpec(crop_size=CROP_SIZE, pixel_spacing_mm=MODEL_SPACING_MM, localisation_size=LOCALISATION_SIZE,
                        slice_context=int(model.config.get("context", 0)))

    def run_model(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    out = {}
    for name in metadata["held_out"]:
        case = cases[name]
        out[name] = sweep_case(case, segment_stack(case.image, case.spacing_rc, run_model, spec).probabilities)
    return out


def choose(swept: list[dict]) -> float:
    """The GRID offset with the smallest %LGE MAE over `swept` cases, or 0 unless it gains MIN_GAIN over 0."""
    if not swept:
        return 0.0
    mae = np.abs(np.array([case["errors"] for case in swept], dtype=float)).mean(axis=0)
    zero = GRID.index(0.0)
    best = int(np.argmin(mae))
    return GRID[best] if mae[zero] - mae[best] >= MIN_GAIN else 0.0


def summarise(swept: list[dict], offsets: list[float]) -> dict:
    """%LGE MAE, bias and r over cases, each at its own offset."""
    errors = np.array([case["errors"][GRID.index(offset)] for case, offset in zip(swept, offsets)])
    truth = np.array([case["truth"] for case in swept])
    predicted = errors + truth
    r = (float(np.corrcoef(predicted, truth)[0, 1]) if len(swept) > 2 and predicted.std() > 0 and truth.std() > 0
         else None)
    return {"cases": len(swept), "lge_percent_mae": float(np.abs(errors).mean()), "bias": float(errors.mean()),
            "r": r, "flag_accuracy": float(np.mean((predicted >= CUTOFF) == (truth >= CUTOFF)))}


def adopted(result: dict) -> bool:
    """Whether a kind's cross-fitted calibration is an improvement: %LGE MAE down by MIN_GAIN or more and the
    large-burden flag no less often right than without it."""
    before, after = result["uncalibrated"], result["cross_fitted"]
    return (before["lge_percent_mae"] - after["lge_percent_mae"] >= MIN_GAIN
            and after["flag_accuracy"] >= before["flag_accuracy"])


def calibrate(run_dir: Path, cases: dict[str, Case], log=print) -> dict:
    """Sweep every fold (cached beside its model while the model is unchanged), cross-fit per kind, and return
    lge_calibration.json's content."""
    models = sorted(run_dir.glob("fold*/model.pt"))
    if not models:
        raise SystemExit(f"{run_dir}: no fold*/model.pt")
    swept: dict[str, dict[str, dict]] = {}
    for path in models:
        cache = path.with_name("calibration_sweep.json")
        if cache.is_file() and cache.stat().st_mtime >= path.stat().st_mtime \
                and json.loads(cache.read_text()).get("grid") == list(GRID):
            swept[path.parent.name] = json.loads(cache.read_text())["cases"]
        else:
            swept[path.parent.name] = sweep_fold(path, cases)
            cache.write_text(json.dumps({"grid": list(GRID), "cases": swept[path.parent.name]}, default=float))
        log(f"{path}: {len(swept[path.parent.name])} held-out cases swept")
    per_fold = {fold: {kind: choose([c for other, found in swept.items() if other != fold for c in found.values()
                                     if c["kind"] == kind]) for kind in INPUT_KINDS} for fold in swept}
    every = [c for found in swept.values() for c in found.values()]
    shipped = {kind: choose([c for c in every if c["kind"] == kind]) for kind in INPUT_KINDS}
    results = {}
    for kind in INPUT_KINDS:
        pairs = [(c, per_fold[fold][kind]) for fold, found in swept.items() for c in found.values() if c["kind"] == kind]
        if pairs:
            results[kind] = {"uncalibrated": summarise([c for c, _ in pairs], [0.0] * len(pairs)),
                             "cross_fitted": summarise([c for c, _ in pairs], [o for _, o in pairs]),
                             "centres": sorted({c["centre"] for c, _ in pairs})}
            results[kind]["adopted"] = adopted(results[kind])
        if not results.get(kind, {}).get("adopted"):  # no offset for this kind, in the folds' reports as shipped
            shipped[kind] = 0.0
            for offsets in per_fold.values():
                offsets[kind] = 0.0
    return {"grid": list(GRID), "min_gain": MIN_GAIN,
            "objective": f"%LGE MAE per input kind (cut-off {CUTOFF:g} %); an offset is taken only when it gains "
                         f">= {MIN_GAIN} points over none on the cases it is chosen on, and a kind is calibrated "
                         f"only when its cross-fitted result gains >= {MIN_GAIN} points without losing "
                         f"large-burden flag accuracy (otherwise its offsets are 0 in every fold and shipped)",
            "per_fold": per_fold, "shipped": shipped, "results": results,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cv", type=Path, required=True, help="cross-validation run folder (fold*/model.pt)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = calibrate(args.cv, {c.name: c for c in load_cases()})
    (args.cv / "lge_calibration.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("per_fold", "shipped", "results")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
