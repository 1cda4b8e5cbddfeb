"""Export a trained cine U-Net checkpoint to ONNX (opset 17, dynamic batch), check parity, write the model card.

python -m engines.cine.export --checkpoint engines/runs/cine/checkpoint.pt --out engines/models
python -m engines.cine.export --checkpoint engines/runs/cine_w32_ship/split/checkpoint.pt --name cine_unet_refine
    (the wider model the node runs at the ED and ES phases only, dicomnode.analysis.cine.segment_and_measure)
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import numpy as np
import torch

from engines.cine.model import CineUNet

MODEL_NAME = "cine_unet"
OPSET = 17
LABEL_NAMES = {0: "background", 1: "LV blood pool", 2: "LV myocardium", 5: "RV blood pool"}
ACDC_CITATION = ("O. Bernard, A. Lalande, C. Zotti, F. Cervenansky, et al., \"Deep Learning Techniques for Automatic MRI "
                 "Cardiac Multi-structures Segmentation and Diagnosis: Is the Problem Solved?\", IEEE TMI 37(11):2514-2525, "
                 "2018, doi:10.1109/TMI.2018.2837502")
SUNNYBROOK_CITATION = ("Radau P, Lu Y, Connelly K, Paul G, Dick AJ, Wright GA. \"Evaluation Framework for Algorithms Segmenting "
                       "Short Axis Cardiac MRI.\" The MIDAS Journal - Cardiac MR Left Ventricle Segmentation Challenge, "
                       "http://hdl.handle.net/10380/3070")


def load_model(checkpoint_path: Path) -> tuple[CineUNet, dict]:
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    model = CineUNet(int(checkpoint.get("in_channels", 1)), checkpoint["n_classes"], tuple(checkpoint["widths"]))
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), checkpoint


def export_onnx(model: torch.nn.Module, path: Path, crop_size: int, opset: int = OPSET, in_channels: int = 1) -> Path:
    """Write `model` as ONNX with input "image" (N, in_channels, crop, crop) float32 and output "logits", batch dynamic."""
    model = model.eval()
    example = torch.zeros(2, in_channels, crop_size, crop_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # the torch.export-based exporter (default since torch 2.9)
        torch.onnx.export(model, (example,), str(path), input_names=["image"], output_names=["logits"], opset_version=opset,
                          dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=4096)}}, dynamo=True,
                          external_data=False, verbose=False)
    except Exception as error:  # noqa: BLE001 - older torch / onnxscript: the TorchScript exporter gives the same graph
        print(f"dynamo ONNX export failed ({error}); using the TorchScript exporter")
        torch.onnx.export(model, (example,), str(path), input_names=["image"], output_names=["logits"], opset_version=opset,
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    return path


def onnx_parity(model: torch.nn.Module, path: Path, crop_size: int, batch: int = 3, seed: int = 0,
                in_channels: int = 1) -> float:
    """Largest |ONNX Runtime - torch| over the logits of fresh random inputs."""
    import onnxruntime as ort

    inputs = np.random.default_rng(seed).standard_normal((batch, in_channels, crop_size, crop_size)).astype(np.float32)
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(inputs)).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: inputs})[0]
    return float(np.abs(got - expected).max())


MYOPS_DATA = {"name": "MyoPS 2020 bSSFP (C0) volumes, 33 patients (myops2020-lge)",
              "labels": "LV blood pool, LV myocardium (incl. scar and edema), RV blood pool",
              "licence": "research / non-commercial use only (redistribution terms not verified)",
              "citation": "Li L. et al., MyoPS: A benchmark of myocardial pathology segmentation combining three-sequence "
                          "cardiac magnetic resonance images, Medical Image Analysis 2023; Zhuang X. et al."}


REFINE_NAME = "cine_unet_refine"


def model_card(checkpoint: dict, parity: float, metrics: dict | None = None,
               calibration: dict | None = None, fold: str | None = None, name: str = MODEL_NAME) -> dict:
    """The model card; `calibration` (engines.cine.calibrate's calibration.json) adds each channel's logit_offset:
    for a CV `fold` model the offsets chosen without that fold's patients (so its held-out evaluation stays clean),
    else those chosen on all folds."""
    channel_labels = list(checkpoint["channel_labels"])
    chosen = (calibration["per_fold"][fold]["offsets"] if calibration and fold in calibration["per_fold"]
              else calibration["shipped"] if calibration else [])
    offsets = dict(zip(calibration["channel_labels"], chosen)) if calibration else {}
    refine = name == REFINE_NAME
    return {
        "name": name,
        "algorithm_name": "dicomnode-cine-unet" + ("-refine" if refine else ""),
        "version": dt.date.today().strftime("%Y.%m.%d"),
        "manufacturer": "dicomnode project",
        "description": "2-D U-Net segmentation of short-axis cine SSFP slices into LV blood pool, LV myocardium and RV "
                       "blood pool; research / decision support, not for diagnostic use without expert review."
                       + (" The node runs it only at the ED and ES phases that cine_unet chooses over the whole cine "
                          "(dicomnode.analysis.cine.segment_and_measure): EDV, ESV, SV, EF, mass and the SEG are its "
                          "segmentation." if refine else ""),
        "framework": "PyTorch -> ONNX",
        "onnx_opset": OPSET,
        "input": {
            "name": "image", "shape": ["N", int(checkpoint.get("in_channels", 1)), checkpoint["crop_size"],
                                       checkpoint["crop_size"]], "dtype": "float32",
            "context": checkpoint.get("context", "none"),
            "spacing_mm": checkpoint["target_spacing_mm"], "crop_size": checkpoint["crop_size"],
            "crop_centre": ("image centre, or the heart (LV + RV box found on the middle slices at the R-wave phase) "
                            "when that reaches within 10 mm of the image-centred crop's edge "
                            "(dicomnode.analysis.cine.locate_heart); the node hands the plane to the network in the "
                            "canonical orientation of its ImageOrientationPatient (dicomnode.cmr.orientation: columns "
                            "towards the patient's left, rows towards posterior)"),
            "resampling": "linear (dicomnode.cmr.InplaneResampler), zero outside the image",
            "normalisation": "per slice on the crop: clip to [0, 99.5th percentile], then zero mean / unit SD "
                             "(dicomnode.cmr.intensity.normalise_slices)",
        },
        "output": {
            "name": "logits", "shape": ["N", len(channel_labels), checkpoint["crop_size"], checkpoint["crop_size"]],
            "kind": "logits (softmax over channel axis)",
            "channels": [{"channel": c, "node_label": label, "name": LABEL_NAMES[label],
                          **({"logit_offset": float(offsets.get(label, 0.0))} if calibration else {})}
                         for c, label in enumerate(channel_labels)],
            **({"logit_offsets": "added to each channel's logit before the softmax: decision thresholds chosen by "
                                 f"cross-fitting on the CV folds ({calibration['objective']}; "
                                 "engines/cine/calibrate.py)" + (f", chosen without {fold}'s patients"
                                 if fold in calibration["per_fold"] else ", chosen on all folds' patients")}
               if calibration else {}),
            "papillary_muscles": "cavity (ACDC and Sunnybrook convention)",
        },
        "architecture": {"type": "U-Net 2-D", "widths": list(checkpoint["widths"]), "norm": "BatchNorm (folded at export)",
                         "parameters": int(sum(v.numel() for k, v in checkpoint["state_dict"].items()
                                               if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))))},
        "training": {
            "data": [
                {"name": "ACDC training set (acdc-train-png, acdc-sample, acdc-4d-sample)", "subjects": "80 of 100 (subject split)",
                 "labels": "RV, LV myocardium, LV cavity at ED and ES", "licence": "CC BY-NC-SA 4.0", "citation": ACDC_CITATION},
            ] + ([{"name": "Sunnybrook Cardiac Data (sunnybrook-scd-extra: SCD0000401, SCD0000501)",
                   "labels": "LV endocardium ED+ES, epicardium ED (SCD0000501 epicardium dropped: misaligned); "
                             "partial-label loss", "licence": "CC0 1.0", "citation": SUNNYBROOK_CITATION}]
                 if any(str(s).startswith("SCD") for s in checkpoint["train_subjects"]) else [])
              + ([MYOPS_DATA] if any(str(s).startswith("Case") for s in checkpoint["train_subjects"]) else []),
            "train_subjects": checkpoint["train_subjects"], "held_out_subjects": checkpoint["test_subjects"],
            "split_seed": checkpoint["seed"], "iterations": checkpoint["iterations"], "batch": checkpoint["batch"],
            "wall_time_s": round(checkpoint["elapsed_s"], 1), "device": checkpoint["device"],
            "training_slices": checkpoint["n_training_slices"],
            "loss": "marginal (partial-label) cross-entropy + "
                    + ("" if float(checkpoint.get("dice_weight", 1.0)) == 1.0
                       else f"{float(checkpoint.get('dice_weight', 1.0)):g} x ")
                    + "soft Dice on fully labelled pixels",
            "dice_weight": float(checkpoint.get("dice_weight", 1.0)),
        },
        "licence": "Weights derived from ACDC: CC BY-NC-SA 4.0 (non-commercial research only, share-alike, cite "
                   "Bernard et al. 2018)"
                   + ("; Sunnybrook part CC0 1.0" if any(str(s).startswith("SCD") for s in checkpoint["train_subjects"])
                      else "")
                   + ("; MyoPS 2020 part research / non-commercial only." if any(
                       str(s).startswith("Case") for s in checkpoint["train_subjects"]) else "."),
        "intended_use": "Research and decision support for cine short-axis LV/RV function; not for diagnostic use without "
                        "review of the contours by a qualified reader.",
        "max_batch": 64,
        "torch": {"module": "engines.cine.model", "factory": "build_model",
                  "kwargs": {"in_channels": int(checkpoint.get("in_channels", 1)), "n_classes": len(channel_labels), "widths": list(checkpoint["widths"])},
                  "weights": f"{name}.pt"},
        "export_parity_max_abs": parity,
        "metrics": metrics or {},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", type=Path, default=Path("engines/runs/cine/checkpoint.pt"))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "models")
    parser.add_argument("--calibration", type=Path, default=None,
                        help="calibration.json of engines.cine.calibrate: its shipped logit offsets go into the card")
    parser.add_argument("--name", default=MODEL_NAME, choices=(MODEL_NAME, REFINE_NAME),
                        help=f"{MODEL_NAME}: the all-phase model; {REFINE_NAME}: the model run at ED and ES only")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, checkpoint = load_model(args.checkpoint)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out / f"{args.name}.pt")
    in_channels = int(checkpoint.get("in_channels", 1))
    onnx_path = export_onnx(model, args.out / f"{args.name}.onnx", checkpoint["crop_size"], in_channels=in_channels)
    parity = onnx_parity(model, onnx_path, checkpoint["crop_size"], in_channels=in_channels)
    if parity > 1e-4:
        raise SystemExit(f"ONNX parity {parity:.2e} exceeds 1e-4")
    card_path = args.out / f"{args.name}.json"
    # metrics belong to this exact model: engines.cine.evaluate fills them in after export
    calibration = json.loads(args.calibration.read_text()) if args.calibration else None
    card_path.write_text(json.dumps(model_card(checkpoint, parity, calibration=calibration,
                                               fold=args.checkpoint.parent.name, name=args.name), indent=1) + "\n")
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size / 1e6:.1f} MB), parity {parity:.2e}, card {card_path}")


if __name__ == "__main__":
    main()
