"""Export the shipped LGE model: the ensemble of the cross-validation fold models (engines.lge.model.LGEEnsemble)
as one ONNX graph, with a parity check against torch, the fp16 torch weights and the model card.

    python -m engines.lge.export --runs engines/runs/lge2_cv --out engines/models
"""
from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
from pathlib import Path

import numpy as np
import torch

from engines.lge.model import CLASS_NAMES, LGEEnsemble
from engines.lge.train import BATCH_SIZE, MODEL_SPACING_MM, PATCH_SIZE, load_model

OPSET = 17
MODEL_NAME = "lge_unet"
LOCALISER_NAME = f"{MODEL_NAME}_localiser"
CROP_SIZE = 128
LOCALISATION_SIZE = 256
EVALUATION_JSON = Path(__file__).resolve().parent / "EVALUATION.json"


def export_onnx(model: torch.nn.Module, path: Path, example_size: int = CROP_SIZE) -> None:
    """Write `model` as ONNX: input "image" (N,1,D,H,W) float32, output "logits" (N,C,D,H,W), dynamic axes."""
    model = model.eval().cpu()
    example = torch.zeros(1, 1, 3, example_size, example_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {0: "batch", 2: "depth", 3: "rows", 4: "cols"}
    with torch.no_grad():
        torch.onnx.export(model, (example,), str(path), input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": axes, "logits": axes}, opset_version=OPSET, dynamo=False)


def parity(model: torch.nn.Module, path: Path, shapes=((1, 1, 5, 128, 128), (2, 1, 3, 96, 96), (1, 1, 2, 256, 256)),
           seed: int = 0, reference_dtype: torch.dtype = torch.float64) -> float:
    """Largest absolute difference between ONNX Runtime and torch outputs on fresh random inputs (torch in
    `reference_dtype`: float64 measures the export's own error)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    reference = copy.deepcopy(model).eval().to(reference_dtype)
    rng = np.random.default_rng(seed)
    worst = 0.0
    for shape in shapes:
        x = rng.normal(0.0, 1.0, size=shape).astype(np.float32)
        with torch.no_grad():
            expected = reference(torch.from_numpy(x).to(reference_dtype)).double().numpy()
        got = session.run(None, {"image": x})[0]
        if got.shape != expected.shape:
            raise AssertionError(f"ONNX output shape {got.shape} != torch {expected.shape} for input {shape}")
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def ensemble_from_runs(runs: Path, flip_tta: bool, members: int = 0) -> tuple[LGEEnsemble, list[dict]]:
    """The ensemble of the finished fold models (runs/fold*/model.pt, the first `members` of them; 0: all) of one
    cross-validation run."""
    paths = sorted(Path(runs).glob("fold*/model.pt"))[: members or None]
    if not paths:
        raise SystemExit(f"no fold*/model.pt under {runs}")
    loaded = [load_model(p) for p in paths]
    return LGEEnsemble.from_members([m for m, _ in loaded], flip_tta=flip_tta), [meta for _, meta in loaded]


MEMBER_KEYS = ("fold", "steps", "seed", "patch_size", "batch_size", "device", "bf16_autocast", "dice_weight",
               "history")


def member_training(metadata: list[dict]) -> list[dict]:
    """Each member's own training record (fold, steps, seed, patch, history...), in ensemble order: members trained
    by different recipes (a from-scratch fold beside a continued one) each keep theirs, and engines.lge.restore
    gives each rebuilt fold its own."""
    return [{key: meta[key] for key in MEMBER_KEYS if key in meta} | {"held_out_cases": len(meta.get("held_out", []))}
            for meta in metadata]


def model_card(model: LGEEnsemble, metadata: list[dict], metrics: dict | None, train_command: str) -> dict:
    first = metadata[0]
    histories = [meta.get("history") or {} for meta in metadata]
    shared_history = histories[0] if all(h == histories[0] for h in histories) else "per member: see members"
    return {
        "name": MODEL_NAME,
        "algorithm_name": "dicomnode-lge-unet",
        # to the minute (UTC): two exports of one day are different models and must not share an AlgorithmVersion
        "version": dt.datetime.now(dt.timezone.utc).strftime("%Y.%m.%d.%H%M"),
        "manufacturer": "dicomnode project",
        "description": "Ensemble of 2D U-Nets segmenting LV blood pool, healthy myocardium, scar, MVO and RV blood "
                       "pool in LGE short-axis stacks (research / decision support; not for diagnostic use without "
                       "review)",
        "architecture": {"type": "ensemble of 2D nnU-Net-style U-Nets (MONAI DynUNet), slices folded into the batch",
                         **model.config, "members_from": "the cross-validation fold models",
                         "parameters": int(sum(p.numel() for p in model.parameters()))},
        "input": {
            "name": "image", "layout": "N,1,D,H,W", "dtype": "float32",
            "crop_size": CROP_SIZE, "pixel_spacing_mm": MODEL_SPACING_MM, "spatial_multiple": model.spatial_multiple,
            "localisation_size": LOCALISATION_SIZE,
            **({"slice_context": int(model.config["context"]),
                "depth": "any (each slice is segmented with its previous and next slice as context, built inside "
                         "the model; the slice itself at either end)"}
               if model.config.get("context") else {"depth": "any (slices are segmented independently)"}),
            "normalisation": {"method": "zscore", "low_percentile": 0.5, "high_percentile": 99.5,
                              "computed_over": "the whole source stack before resampling"},
            "crop_centre": "pass 1 over the whole field of view (at most 256x256 at the model spacing) finds the LV; "
                           "pass 2 crops 128x128 (192 mm) around it (smaller on an axis whose field of view is "
                           "shorter, and kept inside the field), on the plane in the canonical orientation of its "
                           "ImageOrientationPatient (dicomnode.cmr.orientation)",
        },
        "output": {"name": "logits", "layout": "N,6,D,H,W", "class_names": list(CLASS_NAMES),
                   "channel_labels": list(range(len(CLASS_NAMES))),
                   "semantics": "log of the members' mean softmax probability"},
        "opset": OPSET,
        "training": {
            "data": "EMIDEC challenge training set (100 cases, 8-bit PNG without geometry and with non-square pixels "
                    "from the release's resize to 256 x 256: per-case row/column spacing assumed so that the LV is "
                    "round, 1.4 mm on average, 10 mm slices; Dijon) and MyoPS 2020 (33 post-MI patients, 12-bit "
                    "NIfTI with real spacing; second centre)",
            "steps": first.get("steps"), "batch_size": first.get("batch_size", BATCH_SIZE),
            "patch_size": first.get("patch_size", PATCH_SIZE), "history": shared_history,
            "members": member_training(metadata),
            "filters": first.get("filters"), "seed": first.get("seed"), "device": first.get("device"),
            "bf16_autocast": first.get("bf16_autocast"),
            "loss": "Dice + cross-entropy with deep supervision, marginalised per centre (EMIDEC: no RV label; "
                    "MyoPS: MVO inside scar)",
            "command": train_command,
        },
        "licence": "CC BY-NC-SA 4.0 (weights derived from the EMIDEC database; non-commercial use only). Also trained "
                   "on MyoPS 2020 data released for research use with citation; its redistribution terms could not "
                   "be verified: research / non-commercial use only.",
        "citation": "A. Lalande et al., Emidec: A Database Usable for the Automatic Evaluation of Myocardial "
                    "Infarction from Delayed-Enhancement Cardiac MRI, Data 2020, 5(4):89; L. Li et al., MyoPS: A "
                    "benchmark of myocardial pathology segmentation combining three-sequence cardiac magnetic "
                    "resonance images, Medical Image Analysis 2023",
        "intended_use": "research and decision support; not for diagnostic use without review by a qualified reader",
        "metrics": metrics or {},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("engines/runs/lge2_cv"))
    parser.add_argument("--out", type=Path, default=Path("engines/models"))
    parser.add_argument("--flip-tta", action="store_true", help="average with a left-right flipped pass")
    parser.add_argument("--members", type=int, default=0, help="fold models in the ensemble (0: all; chosen by "
                                                                "bench/lge_latency.py against the latency goal)")
    parser.add_argument("--evaluation", type=Path, default=EVALUATION_JSON,
                        help="EVALUATION.json whose shipped_metrics go on the card (that of the same runs)")
    parser.add_argument("--calibration", type=Path, default=None,
                        help="lge_calibration.json of engines.lge.calibrate for the same runs: its shipped scar "
                             "decision offsets go into the card's decision block, which the node applies per input kind")
    parser.add_argument("--tolerance", type=float, default=1e-3)
    parser.add_argument("--train-command", default="python -m engines.lge.train --out engines/runs/lge2_cv --folds 5 "
                                                     "--steps 1400, then the same with --steps 3000 (resumed: the "
                                                     "cosine schedule restarted at 56 % of the peak rate)")
    parser.add_argument("--card-only", action="store_true",
                        help="keep the exported weights and rewrite only the cards' metrics (--evaluation), decision "
                             "block (--calibration) and version, after a re-evaluation of the same runs")
    args = parser.parse_args(argv)
    if args.card_only:
        update_cards(args.out, args.evaluation, args.calibration, args.runs)
        return 0
    torch.set_num_threads(2)
    model, metadata = ensemble_from_runs(args.runs, args.flip_tta, args.members)
    onnx_path = args.out / f"{MODEL_NAME}.onnx"
    export_onnx(model, onnx_path)
    worst = parity(model, onnx_path)
    if worst > args.tolerance:
        raise SystemExit(f"parity check failed: max |onnx - torch| = {worst:.3g} > {args.tolerance}")
    # the torch backend's weights: float32, so that it matches the ONNX graph to 1e-4 (the runtime's parity rule)
    torch.save(model.state_dict(), args.out / f"{MODEL_NAME}.pt")
    metrics = json.loads(args.evaluation.read_text()).get("shipped_metrics") if args.evaluation.is_file() else None
    card = model_card(model, metadata, metrics, args.train_command)
    if args.calibration is not None:
        card["decision"] = decision_block(json.loads(args.calibration.read_text()), args.runs)
    card["parity_max_abs_diff"] = worst
    card["parity_reference"] = "torch float64 forward pass of the same weights, 3 random inputs (export.parity)"
    card["torch"] = {"module": "engines.lge.model", "factory": "LGEEnsemble",
                     "kwargs": {k: model.config[k] for k in ("members", "filters", "classes", "flip_tta",
                                                             "deep_supervision_heads")},
                     "weights": f"{MODEL_NAME}.pt"}
    card["tensorrt"] = {"profile": {"min": [1, 1, 1, 96, 96], "opt": [1, 1, 12, 128, 128],
                                    "max": [1, 1, 24, LOCALISATION_SIZE, LOCALISATION_SIZE]}}
    if len(model.members) > 1:
        card["localiser"] = export_localiser(model, card, args.out, args.tolerance)
    else:
        for stale in (args.out / f"{LOCALISER_NAME}{suffix}" for suffix in (".onnx", ".pt", ".json")):
            stale.unlink(missing_ok=True)
    (args.out / f"{MODEL_NAME}.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size / 1e6:.2f} MB), parity max |diff| {worst:.2e}")
    return 0


def decision_block(calibration: dict, runs: Path) -> dict:
    """The card's "decision" block from engines.lge.calibrate's lge_calibration.json: the shipped scar + MVO
    log-probability offsets per input kind, which the node applies (dicomnode.analysis.lge.ScarDecision)."""
    return {
        "scar_log_offset": calibration["shipped"],
        "rule": "added to log P(scar) and log P(MVO) before the arg-max; one value for every input kind "
                "(engines.lge.calibrate: the kind is guessed from the stored values and does not tell the centre "
                "whose reading convention an offset encodes)",
        "calibration": {k: calibration[k] for k in ("objective", "per_fold", "results", "date")},
        "command": f"python -m engines.lge.calibrate --cv {runs}",
    }


def update_cards(out: Path, evaluation: Path, calibration: Path | None, runs: Path) -> None:
    """Rewrite <out>/lge_unet.json's metrics (EVALUATION.json's shipped_metrics) and, with `calibration`, its
    decision block, and give it and its localiser's card a new version (to the minute, UTC): the weights are
    unchanged, but a changed decision or preprocessing is another algorithm version in the results' provenance."""
    path = out / f"{MODEL_NAME}.json"
    card = json.loads(path.read_text(encoding="utf-8"))
    card["metrics"] = json.loads(evaluation.read_text()).get("shipped_metrics") or {}
    if calibration is not None:
        card["decision"] = decision_block(json.loads(calibration.read_text()), runs)
    card["version"] = dt.datetime.now(dt.timezone.utc).strftime("%Y.%m.%d.%H%M")
    path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    localiser = out / f"{LOCALISER_NAME}.json"
    if localiser.is_file():
        localiser_card = json.loads(localiser.read_text(encoding="utf-8"))
        localiser_card["version"] = card["version"]
        localiser.write_text(json.dumps(localiser_card, indent=2) + "\n", encoding="utf-8")
    print(f"updated {path} (version {card['version']})")


def export_localiser(model: LGEEnsemble, card: dict, out: Path, tolerance: float) -> dict:
    """Write the ensemble's first member alone as <out>/lge_unet_localiser.{onnx,pt,json} and return the ensemble
    card's "localiser" block. The node finds the heart with it (pass 1 and the candidate-crop comparison,
    dicomnode.analysis.lge.segment_stack's locate_model) and segments with the whole ensemble: as each
    cross-validation fold model does on its own, at a fifth of the ensemble's cost on a 256 x 256 field."""
    member = LGEEnsemble.from_members([model.members[0]])
    onnx_path = out / f"{LOCALISER_NAME}.onnx"
    export_onnx(member, onnx_path)
    worst = parity(member, onnx_path)
    if worst > tolerance:
        raise SystemExit(f"localiser parity check failed: max |onnx - torch| = {worst:.3g} > {tolerance}")
    torch.save(member.state_dict(), out / f"{LOCALISER_NAME}.pt")
    localiser = {key: copy.deepcopy(card[key]) for key in ("manufacturer", "input", "output", "opset", "licence",
                                                           "citation", "tensorrt")}
    localiser |= {
        "name": LOCALISER_NAME, "algorithm_name": "dicomnode-lge-unet-localiser", "version": card["version"],
        "description": f"Member 0 of {MODEL_NAME} {card['version']} alone: the node finds the heart in an LGE stack "
                       f"with it before {MODEL_NAME} segments the stack (its results are never reported)",
        "architecture": {**member.config, "members_from": f"member 0 of {MODEL_NAME} (fold 0)",
                         "parameters": int(sum(p.numel() for p in member.parameters()))},
        "intended_use": f"internal to the node's LGE pipeline: heart localisation for {MODEL_NAME}",
        "training": {"see": f"{MODEL_NAME}.json training.members[0]"},
        "metrics": {},
        "parity_max_abs_diff": worst,
        "parity_reference": card["parity_reference"],
        "torch": {**card["torch"], "kwargs": {**card["torch"]["kwargs"], "members": 1},
                  "weights": f"{LOCALISER_NAME}.pt"},
    }
    (out / f"{LOCALISER_NAME}.json").write_text(json.dumps(localiser, indent=2) + "\n", encoding="utf-8")
    return {"model": LOCALISER_NAME, "member": 0,
            "use": "pass 1 over the field of view and the candidate-crop comparison "
                   "(dicomnode.analysis.lge.segment_stack locate_model); the ensemble segments every slice"}


if __name__ == "__main__":
    raise SystemExit(main())
