"""Export a trained LGE U-Net to ONNX (dynamic batch, depth, rows, cols) with a torch parity check and model card.

    python -m engines.lge.export --checkpoint engines/runs/lge_long/final_e100/final/model.pt --out engines/models
"""
from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
from pathlib import Path

import numpy as np
import torch

from engines.lge.data import ASSUMED_PNG_SPACING_MM, ASSUMED_SLICE_SPACING_MM
from engines.lge.model import CLASS_NAMES, LGEUNet
from engines.lge.train import CROP_SIZE, MODEL_SPACING_MM, load_checkpoint

OPSET = 17
MODEL_NAME = "lge_unet"
EVALUATION_JSON = Path(__file__).resolve().parent / "EVALUATION.json"


def export_onnx(model: LGEUNet, path: Path) -> None:
    """Write `model` as ONNX: input "image" (N,1,D,H,W) float32, output "logits" (N,5,D,H,W)."""
    model = model.eval().cpu()
    example = torch.zeros(1, 1, 6, CROP_SIZE, CROP_SIZE)
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {0: "batch", 2: "depth", 3: "rows", 4: "cols"}
    with torch.no_grad():
        torch.onnx.export(model, (example,), str(path), input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": axes, "logits": axes}, opset_version=OPSET, dynamo=False)


def parity(model: LGEUNet, path: Path, shapes=((1, 1, 5, 96, 96), (2, 1, 9, 96, 96), (1, 1, 7, 160, 160)),
           seed: int = 0, reference_dtype: torch.dtype = torch.float64) -> float:
    """Largest absolute difference between ONNX Runtime and torch logits on fresh random inputs.

    The torch reference runs in `reference_dtype`: float64 (default) measures the export's own error; a float32
    reference adds torch's rounding too, which grows with the logit magnitude (|logits| ~ 20-30 for a trained model).
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    reference = copy.deepcopy(model).eval().to(reference_dtype)
    rng = np.random.default_rng(seed)
    worst = 0.0
    for shape in shapes:
        x = rng.normal(0.4, 0.3, size=shape).astype(np.float32)
        with torch.no_grad():
            expected = reference(torch.from_numpy(x).to(reference_dtype)).double().numpy()
        got = session.run(None, {"image": x})[0]
        if got.shape != expected.shape:
            raise AssertionError(f"ONNX output shape {got.shape} != torch {expected.shape} for input {shape}")
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def torch_model_from_onnx(path: Path, architecture: dict) -> LGEUNet:
    """An LGEUNet whose weights are the ONNX file's initializers (names are the torch state_dict keys)."""
    import onnx
    from onnx import numpy_helper

    model = LGEUNet(**{k: architecture[k] for k in ("base_channels", "levels", "in_plane_levels", "classes")})
    initializers = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    state = model.state_dict()
    missing = [k for k in state if k not in initializers]
    if missing:
        raise ValueError(f"{path} lacks weights {missing[:5]} (exported by another exporter?)")
    model.load_state_dict({k: torch.from_numpy(initializers[k].copy()) for k in state})
    return model.eval()


#: the command that trained the shipped checkpoint (recorded on the card)
DEFAULT_TRAIN_COMMAND = ("python -m engines.lge.train --out engines/runs/lge_long/final_e100 --only-folds none "
                         "--final-epochs 100")


def model_card(model: LGEUNet, metadata: dict, metrics: dict | None,
               train_command: str = DEFAULT_TRAIN_COMMAND) -> dict:
    return {
        "name": MODEL_NAME,
        "algorithm_name": "dicomnode-lge-unet",
        "version": dt.date.today().strftime("%Y.%m.%d"),
        "manufacturer": "dicomnode project",
        "description": "Anisotropic 3D U-Net segmenting LV blood pool, healthy myocardium, scar and MVO in LGE "
                       "short-axis stacks (research / decision support; not for diagnostic use without review)",
        "architecture": {"type": "anisotropic 3D U-Net", **model.config,
                         "kernels": "(1,3,3) in the first in_plane_levels levels, (3,3,3) deeper; pooling (1,2,2)",
                         "parameters": int(sum(p.numel() for p in model.parameters()))},
        "input": {
            "name": "image", "layout": "N,1,D,H,W", "dtype": "float32",
            "crop_size": CROP_SIZE, "pixel_spacing_mm": MODEL_SPACING_MM, "spatial_multiple": model.spatial_multiple,
            "localisation_size": 128,
            "depth": "any (depth is never pooled)",
            "normalisation": {"method": "percentile", "low_percentile": 1.0, "high_percentile": 99.0,
                              "computed_over": "the whole model-grid crop of the stack"},
            "crop_centre": "pass 1 over a 128x128 field at the image centre finds the LV; pass 2 crops 96x96 around it",
        },
        "output": {"name": "logits", "layout": "N,5,D,H,W", "class_names": list(CLASS_NAMES),
                   "channel_labels": [0, 1, 2, 3, 4]},
        "opset": OPSET,
        "training": {
            "data": "EMIDEC challenge training set, 100 cases (67 MI, 33 normal), 8-bit PNG 256x256 "
                    "(/work/shared/datasets/emidec-lge-png)",
            "assumed_source_spacing_mm": list(ASSUMED_PNG_SPACING_MM) + [ASSUMED_SLICE_SPACING_MM],
            "epochs": metadata.get("epochs"), "seed": metadata.get("seed"), "device": metadata.get("device"),
            "command": train_command,
        },
        "licence": "CC BY-NC-SA 4.0 (weights derived from the EMIDEC database; non-commercial use only)",
        "citation": "A. Lalande et al., Emidec: A Database Usable for the Automatic Evaluation of Myocardial "
                    "Infarction from Delayed-Enhancement Cardiac MRI, Data 2020, 5(4):89",
        "intended_use": "research and decision support; not for diagnostic use without review by a qualified reader",
        "metrics": metrics or {},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=Path("engines/runs/lge_long/final_e100/final/model.pt"))
    parser.add_argument("--out", type=Path, default=Path("engines/models"))
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--train-command", type=str, default=DEFAULT_TRAIN_COMMAND,
                        help="the command that trained --checkpoint, recorded on the model card")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, metadata = load_checkpoint(args.checkpoint)
    onnx_path = args.out / f"{MODEL_NAME}.onnx"
    export_onnx(model, onnx_path)
    worst = parity(model, onnx_path)
    if worst > args.tolerance:
        raise SystemExit(f"parity check failed: max |onnx - torch| = {worst:.3g} > {args.tolerance}")
    metrics = None
    if EVALUATION_JSON.is_file():
        evaluation = json.loads(EVALUATION_JSON.read_text())
        first = evaluation["runs"][0]
        metrics = {"source": f"engines/lge/EVALUATION.json, run {first['runs']!r} ({first.get('title')}): held-out "
                             f"folds {first['folds_evaluated']} of a seeded case-level 5-fold split; goals NOT met",
                   **evaluation["summary"]}
    card = model_card(model, metadata, metrics, args.train_command)
    card["parity_max_abs_diff"] = worst
    card["parity_reference"] = "torch float64 forward pass of the same weights, 3 random inputs (export.parity)"
    card["parity_max_abs_diff_vs_float32_torch"] = parity(model, onnx_path, reference_dtype=torch.float32)
    (args.out / f"{MODEL_NAME}.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size / 1e6:.2f} MB), parity max |diff| {worst:.2e} vs float64 "
          f"torch, {card['parity_max_abs_diff_vs_float32_torch']:.2e} vs float32 torch")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
