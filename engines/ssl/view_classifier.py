"""Train a tiny cine / LGE / localizer frame classifier on the pretrained backbone; export ONNX + model card.

python -m engines.ssl.view_classifier --cache engines/runs/ssl/data/cache.npz \
    --backbone engines/runs/ssl/pretrain_all/checkpoint.pt --models engines/models
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engines.ssl.dataset import CANVAS_SIZE, SEQUENCE_CLASSES, TARGET_SPACING_MM
from engines.ssl.model import Backbone

MODEL_NAME = "view_classifier"
SEED = 2026
#: validation subjects (never trained on): one whole Sunnybrook study (cine + its localizer, head-first patient)
#: plus every 5th ACDC / EMIDEC subject
VALIDATION_SUNNYBROOK = ("SCD0000301",)


class FrameClassifier(nn.Module):
    """Backbone -> global average pool of the two deepest levels -> linear -> softmax over SEQUENCE_CLASSES."""

    def __init__(self, backbone: Backbone):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.widths[-1] + backbone.widths[-2], len(SEQUENCE_CLASSES))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        levels = self.backbone(x)
        return torch.cat([levels[-1].mean(dim=(2, 3)), levels[-2].mean(dim=(2, 3))], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.head(self.features(x)), dim=1)


def validation_mask(subjects: np.ndarray) -> np.ndarray:
    names = sorted(set(subjects))
    other = [s for s in names if s not in VALIDATION_SUNNYBROOK and not s.startswith("SCD")]
    chosen = set(VALIDATION_SUNNYBROOK) | set(other[::5])
    return np.isin(subjects, sorted(chosen))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--backbone", type=Path, required=True, help="pretrain checkpoint.pt")
    parser.add_argument("--models", type=Path, default=Path("engines/models"))
    parser.add_argument("--steps", type=int, default=600, help="optimiser steps of the linear head")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    started = time.time()

    data = np.load(args.cache)
    keep = np.isin(data["sequence"], SEQUENCE_CLASSES)
    images = data["images"][keep].astype(np.float32)
    labels = np.array([SEQUENCE_CLASSES.index(s) for s in data["sequence"][keep]])
    subjects = data["subject"][keep]
    state = torch.load(args.backbone, map_location="cpu", weights_only=False)
    backbone = Backbone(1, tuple(state["widths"]))
    backbone.load_state_dict(state["backbone"])
    model = FrameClassifier(backbone).eval()
    def features_of(array: np.ndarray) -> torch.Tensor:
        with torch.no_grad():  # the backbone stays frozen: features once, then a linear head
            return torch.cat([model.features(torch.from_numpy(np.ascontiguousarray(array[i:i + 64, None])))
                              for i in range(0, len(array), 64)])

    features = features_of(images)
    val = validation_mask(subjects)
    # orientation augmentation: every other flip / 90-degree turn of the scarce localizer frames, one random
    # turn of a quarter of the others (localizers come in few orientations and from few subjects)
    rng = np.random.default_rng(SEED)
    train_index = np.flatnonzero(~val)
    scarce = train_index[labels[train_index] == SEQUENCE_CLASSES.index("localizer")]
    extra_images, extra_labels = [], []
    for index in scarce:
        for turns in range(4):
            for flip in (False, True):
                if turns or flip:
                    turned = np.rot90(images[index], turns)
                    extra_images.append(turned[:, ::-1] if flip else turned)
                    extra_labels.append(labels[index])
    for index in rng.choice(np.setdiff1d(train_index, scarce), size=len(train_index) // 4, replace=False):
        turned = np.rot90(images[index], int(rng.integers(1, 4)))
        extra_images.append(turned[:, ::-1] if rng.random() < 0.5 else turned)
        extra_labels.append(labels[index])
    train_x = torch.cat([features[~val], features_of(np.stack(extra_images))])
    train_y = torch.from_numpy(np.concatenate([labels[~val], np.asarray(extra_labels)]))
    counts = torch.bincount(train_y, minlength=len(SEQUENCE_CLASSES)).float()
    loss_fn = nn.CrossEntropyLoss(weight=counts.sum() / (len(counts) * counts.clamp_min(1)))
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    head = nn.Linear(train_x.shape[1], len(SEQUENCE_CLASSES))
    optimiser = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(args.steps):
        loss = loss_fn(head((train_x - mean) / std), train_y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    # fold the feature standardisation into the exported linear layer
    with torch.no_grad():
        model.head.weight.copy_(head.weight / std)
        model.head.bias.copy_(head.bias - (head.weight * mean / std).sum(1))
        probabilities = torch.softmax(model.head(features), dim=1).numpy()
    predicted = probabilities.argmax(1)
    metrics = {}
    for split, mask in (("train", ~val), ("validation", val)):
        per_class = {}
        for index, name in enumerate(SEQUENCE_CLASSES):
            members = mask & (labels == index)
            per_class[name] = {"frames": int(members.sum()),
                               "accuracy": float((predicted[members] == index).mean()) if members.any() else None}
        metrics[split] = {"accuracy": float((predicted[mask] == labels[mask]).mean()), "per_class": per_class,
                          "subjects": int(len(set(subjects[mask])))}
    print(json.dumps(metrics, indent=1))

    args.models.mkdir(parents=True, exist_ok=True)
    onnx_path = args.models / f"{MODEL_NAME}.onnx"
    example = torch.from_numpy(images[:2, None])
    torch.onnx.export(model, example, str(onnx_path), input_names=["image"], output_names=["probabilities"],
                      dynamic_axes={"image": {0: "N"}, "probabilities": {0: "N"}}, opset_version=17, dynamo=False)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        reference = model(torch.from_numpy(images[:16, None])).numpy()
    parity = float(np.abs(session.run(None, {"image": images[:16, None]})[0] - reference).max())
    card = {
        "name": MODEL_NAME, "algorithm_name": "dicomnode-frame-sequence-classifier",
        "version": time.strftime("%Y.%m.%d"), "manufacturer": "dicomnode project",
        "description": ("Tiny frame classifier (cine SSFP vs LGE vs localizer) on the self-supervised cine U-Net encoder; "
                        "a fallback for series whose DICOM tags do not say what they are. Research use."),
        "framework": "PyTorch -> ONNX", "onnx_opset": 17,
        "input": {"name": "image", "shape": ["N", 1, CANVAS_SIZE, CANVAS_SIZE], "dtype": "float32",
                  "spacing_mm": TARGET_SPACING_MM, "canvas_size": CANVAS_SIZE,
                  "resampling": "dicomnode.cmr.InplaneResampler, linear, centred on the image centre, zero outside",
                  "normalisation": "per frame on the canvas: dicomnode.cmr.intensity.normalise_slices"},
        "output": {"name": "probabilities", "shape": ["N", len(SEQUENCE_CLASSES)], "classes": list(SEQUENCE_CLASSES)},
        "architecture": {"type": "CineUNet encoder (engines.cine.model) + linear head on pooled features",
                         "widths": list(state["widths"]), "backbone_frozen": True,
                         "backbone_pretraining": {"steps": state["step"], "weights": state["weights"]}},
        "training": {"labels": "sequence from the node's tag rules (dicomnode.cmr.recognize) on the pretraining cache",
                     "frames": int(len(labels)), "validation_subjects": sorted(set(subjects[val]))[:40],
                     "seed": SEED, "head_steps": args.steps, "elapsed_s": round(time.time() - started, 1)},
        "metrics": metrics, "export_parity_max_abs": parity,
        "licence": ("Weights derived from ACDC and EMIDEC (CC BY-NC-SA 4.0: non-commercial research only, share-alike, "
                    "cite Bernard et al. 2018 and Lalande et al. 2020) and Sunnybrook (CC0 1.0)."),
        "intended_use": ("Fallback sequence recognition when the tags are missing or stripped; the tag rules win whenever "
                         "they answer. Trained on 1.5 T GE cine + localizers, ACDC cine and EMIDEC LGE (8-bit PNG "
                         "origin) only: expect errors on other vendors, T1/T2 maps, perfusion, long-axis views."),
        "sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
    }
    (args.models / f"{MODEL_NAME}.json").write_text(json.dumps(card, indent=1))
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size / 1e6:.2f} MB), parity {parity:.2e}")
    return card


if __name__ == "__main__":
    main()
