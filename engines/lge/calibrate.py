"""Calibrate the LGE model's scar decision (a log-probability offset on scar + MVO before the arg-max), one offset
for every input kind, by cross-fitting on the cross-validation folds.

    python -m engines.lge.calibrate --cv engines/runs/lge4_cv --threads 2

Why: the network is trained on two centres whose readers draw scar differently, and it cannot tell them apart; it
over-calls scar on MyoPS's 12-bit scans, even on the MyoPS patients it trained on (+8 %LGE points,
engines/lge/EVALUATION.md, "Fit on the models' own training cases"), while it is unbiased on EMIDEC's 8-bit exports.
Until 2026-12-07 the decision was calibrated per input kind (dicomnode.analysis.lge.input_kind: scanner-native values
or an 8-bit windowed export, told apart by counting distinct grey values), and with two centres kind and centre
coincided: the "native" offset (-0.75) was what MyoPS's readers call scar. But the kind is a guess from the stored
values, and the network's output hardly depends on it: the same images re-encoded with +-1 unit of noise or a
bilinear 512-pixel interpolation crossed the guess and moved %LGE from 25.1 to 20.7, and a real MyoPS stack read
10.4 % as sent and 14.2 % as an 8-bit export (break47a #1). A centre's reading convention is not something the node
can see in the pixels, so one offset now serves every kind: chosen on all cases pooled (a second centre's readers
weigh as their patients do), and the same value is written for each kind of the card's per-kind block.

How, without leaking the test patients into the choice: every fold model segments its held-out cases once (the
node's segment_stack; probabilities kept); each offset of GRID is applied to the stored probabilities
(dicomnode.analysis.lge.decide_labels); for fold k the offset minimising the %LGE MAE over the other folds' cases
is chosen (cross-fitting), but only when it beats no offset there by MIN_GAIN points (else 0: a gain within the
noise of a few dozen patients is not taken). The decision is calibrated at all only where the cross-fitted result
over all cases beats no offset by MIN_GAIN %LGE points without losing large-burden flag accuracy on any centre or
making any centre's %LGE MAE worse by MIN_GAIN or more;
otherwise the offset is 0 in every fold and in the shipped model. The per-kind and per-centre results are reported
beside the pooled one. Fold k's reported results use its choice
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
    """Whether a cross-fitted calibration is an improvement: %LGE MAE down by MIN_GAIN or more and the
    large-burden flag no less often right than without it."""
    before, after = result["uncalibrated"], result["cross_fitted"]
    return (before["lge_percent_mae"] - after["lge_percent_mae"] >= MIN_GAIN
            and after["flag_accuracy"] >= before["flag_accuracy"])


def calibrate(run_dir: Path, cases: dict[str, Case], log=print) -> dict:
    """Sweep every fold (cached beside its model while the model is unchanged), cross-fit one offset over all
    cases (pooled_calibration), and return lge_calibration.json's content."""
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
    return pooled_calibration(swept)


def pooled_calibration(swept: dict[str, dict[str, dict]]) -> dict:
    """lge_calibration.json's content from every fold's swept held-out cases ({fold: {case: sweep_case}}): one
    cross-fitted offset per fold, the same for every input kind; results pooled ("all"), per kind and per centre."""
    fold_offset = {fold: choose([c for other, found in swept.items() if other != fold for c in found.values()])
                   for fold in swept}
    every = [(c, fold_offset[fold]) for fold, found in swept.items() for c in found.values()]

    def result(pairs) -> dict:
        return {"uncalibrated": summarise([c for c, _ in pairs], [0.0] * len(pairs)),
                "cross_fitted": summarise([c for c, _ in pairs], [o for _, o in pairs]),
                "centres": sorted({c["centre"] for c, _ in pairs})}

    results = {"all": result(every)}
    for key, group in [*((kind, "kind") for kind in INPUT_KINDS),
                       *((centre, "centre") for centre in sorted({c["centre"] for c, _ in every}))]:
        pairs = [(c, o) for c, o in every if c[group] == key]
        if pairs:
            results[f"{group} {key}"] = result(pairs)
    take = adopted(results["all"]) and all(
        block["cross_fitted"]["flag_accuracy"] >= block["uncalibrated"]["flag_accuracy"]
        and block["cross_fitted"]["lge_percent_mae"] - block["uncalibrated"]["lge_percent_mae"] < MIN_GAIN
        for name, block in results.items() if name.startswith("centre "))
    results["all"]["adopted"] = take
    shipped_value = choose([c for c, _ in every]) if take else 0.0
    if not take:  # not calibrated: no offset in the folds' reports, as shipped
        fold_offset = {fold: 0.0 for fold in fold_offset}
    return {"grid": list(GRID), "min_gain": MIN_GAIN,
            "objective": f"%LGE MAE over all cases, one offset for every input kind (cut-off {CUTOFF:g} %); an "
                         f"offset is taken only when it gains >= {MIN_GAIN} points over none on the cases it is "
                         f"chosen on, and the decision is calibrated only when the cross-fitted result gains >= "
                         f"{MIN_GAIN} points without losing large-burden flag accuracy on any centre or making any "
                         f"centre's %LGE MAE worse by {MIN_GAIN} or more (otherwise the offset is 0 in every fold "
                         f"and shipped)",
            "per_fold": {fold: {kind: value for kind in INPUT_KINDS} for fold, value in fold_offset.items()},
            "shipped": {kind: shipped_value for kind in INPUT_KINDS}, "results": results,
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
