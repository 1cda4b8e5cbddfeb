"""Train the study -> report-text projection contrastively (symmetric InfoNCE) on study–report pairs; save as .npz."""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dicomnode.analysis.suggestions import (DESCRIPTOR_FEATURES, FEATURE_DIM, FEATURE_NAMES, StudyProjection,
                                            feature_vector, has_measurements, study_features)

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
USAGE = """A site runs this on its own archive:
    python -m engines.retrieval.train --pairs pairs.jsonl --out retrieval_projection.npz
pairs.jsonl: one JSON object per line with "id", "text" (the report) and either "features" (the flat dict of
dicomnode.analysis.suggestions.study_features) or "summary" (a study block of the node's summary.json, from
which the features are computed). Records of a report bank (metadata.study_features) are accepted too."""
HIDDEN = 256
DESCRIPTOR_DROP_PROBABILITY = 0.3  # per study and step: train as if the label-map descriptors were not available
DUPLICATE_COSINE = 0.98  # reports this similar count as the same target (multi-positive InfoNCE)


@dataclass(frozen=True)
class Pair:
    id: str
    text: str
    features: dict
    group: str = ""
    dataset: str = ""


def load_pairs(path: Path) -> list[Pair]:
    pairs = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        record = json.loads(line)
        metadata = record.get("metadata") or {}
        if "features" in record:
            features = record["features"]
        elif "summary" in record:
            features = study_features(record["summary"])
        elif "study_features" in metadata:
            features = metadata["study_features"]
        else:
            raise ValueError(f"{path}:{number}: needs 'features', 'summary' or metadata.study_features")
        if not record.get("text"):
            raise ValueError(f"{path}:{number}: no report 'text'")
        if not has_measurements(features):
            continue
        pairs.append(Pair(id=str(record.get("id", number)), text=record["text"], features=features,
                          group=str(metadata.get("group", record.get("group", ""))),
                          dataset=str(metadata.get("dataset", record.get("dataset", "")))))
    if len(pairs) < 8:
        raise ValueError(f"{path}: {len(pairs)} usable pairs; contrastive training needs at least 8")
    return pairs


def encode_texts(texts: list[str], encoder_dir: Path) -> np.ndarray:
    from dicomnode.analysis.text_encoder import TextEncoder

    return TextEncoder(encoder_dir).encode(texts)


def train_projection(features: np.ndarray, text_embeddings: np.ndarray, seed: int = 0, epochs: int = 400,
                     hidden: int = HIDDEN, lr: float = 3e-3, weight_decay: float = 1e-2, temperature: float = 0.05,
                     dropout: float = 0.1) -> tuple[StudyProjection, list[float]]:
    """Fit standardise -> Linear -> GELU -> Linear so that projected studies match their report embeddings.

    Loss: InfoNCE in both directions over the full batch, with every report whose text embedding is a
    near-duplicate (cosine >= 0.98) of the true one counted as a positive too. Augmentation: each step, some
    studies lose their label-map descriptors (value and presence flag), as when the node has summary numbers only.
    """
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    if features.shape[0] != text_embeddings.shape[0]:
        raise ValueError(f"{features.shape[0]} feature rows but {text_embeddings.shape[0]} text embeddings")
    mean = features.mean(axis=0).astype(np.float32)
    std = features.std(axis=0).astype(np.float32)
    std = np.where(std < 1e-6, 1.0, std).astype(np.float32)
    raw = torch.from_numpy(features).float()
    mean_t, std_t = torch.from_numpy(mean), torch.from_numpy(std)
    descriptor_columns = [FEATURE_NAMES.index(n) for n in DESCRIPTOR_FEATURES]
    descriptor_columns += [len(FEATURE_NAMES) + c for c in descriptor_columns]
    descriptor_mask = torch.zeros(features.shape[1])
    descriptor_mask[descriptor_columns] = 1.0
    x = (raw - mean_t) / std_t
    t = torch.from_numpy(text_embeddings).float()
    positives = (t @ t.T >= DUPLICATE_COSINE).float()
    targets = positives / positives.sum(dim=1, keepdim=True)
    model = torch.nn.Sequential(torch.nn.Dropout(dropout), torch.nn.Linear(features.shape[1], hidden),
                                torch.nn.GELU(approximate="tanh"), torch.nn.Linear(hidden, text_embeddings.shape[1]))
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=epochs)
    losses = []
    for _ in range(epochs):
        model.train()
        drop = (torch.rand(raw.shape[0], 1) < DESCRIPTOR_DROP_PROBABILITY).float() * descriptor_mask
        z = torch.nn.functional.normalize(model((raw * (1.0 - drop) - mean_t) / std_t), dim=1)
        logits = z @ t.T / temperature
        loss = 0.5 * (torch.sum(-targets * torch.log_softmax(logits, dim=1), dim=1).mean()
                      + torch.sum(-targets * torch.log_softmax(logits.T, dim=1), dim=1).mean())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
    model.eval()
    first, second = model[1], model[3]
    projection = StudyProjection(
        feature_mean=mean, feature_std=std,
        w1=first.weight.detach().numpy().T.copy(), b1=first.bias.detach().numpy().copy(),
        w2=second.weight.detach().numpy().T.copy(), b2=second.bias.detach().numpy().copy(),
        feature_names=FEATURE_NAMES,
        combined_fraction=float(np.mean((features[:, -2] > 0) & (features[:, -1] > 0))))
    with torch.no_grad():
        reference = torch.nn.functional.normalize(model(x), dim=1).numpy()
    if not np.allclose(projection((features)), reference, atol=1e-4):
        raise AssertionError("numpy projection disagrees with the trained torch module")
    return projection, losses


def feature_matrix(pairs: list[Pair]) -> np.ndarray:
    return np.stack([feature_vector(p.features) for p in pairs]).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, epilog=USAGE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=Path, required=True, help="JSONL of study-report pairs")
    parser.add_argument("--out", type=Path, required=True, help="output .npz (a .json card is written beside it)")
    parser.add_argument("--encoder-dir", type=Path, default=MODELS_DIR / "text_encoder")
    parser.add_argument("--epochs", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    pairs = load_pairs(args.pairs)
    texts = encode_texts([p.text for p in pairs], args.encoder_dir)
    projection, losses = train_projection(feature_matrix(pairs), texts, seed=args.seed, epochs=args.epochs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    projection.save(args.out)
    card = {
        "name": args.out.stem,
        "algorithm_name": "dicomnode-retrieval-projection",
        "kind": "numpy weights (.npz): standardise -> Linear -> GELU(tanh) -> Linear -> L2 norm",
        "feature_dim": FEATURE_DIM,
        "feature_names": list(FEATURE_NAMES),
        "hidden": int(projection.w1.shape[1]),
        "embedding_dim": projection.dim,
        "text_encoder_sha256": hashlib.sha256((args.encoder_dir / "model.onnx").read_bytes()).hexdigest(),
        "training": {"pairs": len(pairs), "pairs_file": args.pairs.name, "epochs": args.epochs, "seed": args.seed,
                     "loss": "symmetric InfoNCE, temperature 0.05, near-duplicate reports as extra positives",
                     "final_loss": round(losses[-1], 4), "date": dt.date.today().isoformat()},
        "npz_sha256": hashlib.sha256(args.out.read_bytes()).hexdigest(),
    }
    args.out.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    print(f"trained on {len(pairs)} pairs, final loss {losses[-1]:.4f}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
