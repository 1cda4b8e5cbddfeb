"""The shipped ONNX text encoder: unit vectors, batch-invariance, meaning, and agreement with its fp32 original."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dicomnode.analysis.text_encoder import EMBEDDING_DIM, TextEncoder

MODELS = Path(__file__).resolve().parents[2] / "engines" / "models"


def test_encode_gives_unit_rows_of_384(text_encoder):
    vectors = text_encoder.encode(["Normal LV size and function.", "Transmural inferior infarct."])
    assert vectors.shape == (2, EMBEDDING_DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_empty_list_and_single_string(text_encoder):
    assert text_encoder.encode([]).shape == (0, EMBEDDING_DIM)
    with pytest.raises(TypeError):
        text_encoder.encode("a bare string")


def test_batch_padding_does_not_change_an_embedding(text_encoder):
    texts = ["EF 24%.", "Large transmural anterior infarct with microvascular obstruction over six slices. " * 3]
    together = text_encoder.encode(texts)
    alone = np.vstack([text_encoder.encode([t]) for t in texts])
    np.testing.assert_allclose(np.sum(together * alone, axis=1), 1.0, atol=1e-5)


def test_long_text_is_truncated_not_refused(text_encoder):
    assert text_encoder.encode(["dilated ventricle " * 400]).shape == (1, EMBEDDING_DIM)


def test_similar_meaning_is_closer(text_encoder):
    query, near, far = text_encoder.encode([
        "The left ventricle is dilated with severely impaired systolic function.",
        "Dilated cardiomyopathy with severely reduced ejection fraction.",
        "No late gadolinium enhancement; no myocardial scar.",
    ])
    assert query @ near > query @ far + 0.1


def test_shipped_int8_stays_within_099_of_fp32_on_every_bank_text(text_encoder):
    """reference_fp32_bank_embeddings.npy was written by the fp32 export of the same model on the bank texts."""
    reference = np.load(MODELS / "text_encoder" / "reference_fp32_bank_embeddings.npy")
    texts = [json.loads(line)["text"] for line in
             (MODELS / "report_bank" / "reports.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    assert reference.shape == (len(texts), EMBEDDING_DIM), "bank changed: re-run engines.retrieval.export_text_encoder"
    cosines = np.sum(text_encoder.encode(texts) * reference, axis=1)
    assert cosines.min() >= 0.99, f"min cosine to fp32 {cosines.min():.4f}"


def test_card_describes_the_shipped_file(text_encoder):
    card = json.loads((MODELS / "text_encoder" / "card.json").read_text())
    assert card["model_sha256"] == text_encoder.model_sha256
    assert card["embedding_dim"] == EMBEDDING_DIM
    assert card["agreement_with_fp32_on_bank"]["shipped"]["min_cosine"] >= 0.99
    assert (MODELS / "text_encoder" / "model.onnx").stat().st_size < 30 * 1024 * 1024


def test_missing_folder_is_refused_by_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.onnx"):
        TextEncoder(tmp_path)
