"""Contrastive training of the projection and the evaluation's metrics (training needs torch: engines extra)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from engines.retrieval.evaluate import chance, metrics, ranks, subject_split
from engines.retrieval.train import Pair, load_pairs


def test_ranks_and_metrics_of_a_known_similarity_matrix():
    similarity = np.array([[0.9, 0.1, 0.2], [0.8, 0.5, 0.1], [0.1, 0.2, 0.3]])
    assert ranks(similarity).tolist() == [1, 2, 1]
    found = metrics(similarity, ["a", "a", "b"])
    assert found["R@1"] == pytest.approx(2 / 3) and found["median_rank"] == 1.0
    assert found["top1_same_group"] == pytest.approx(1.0)
    assert chance(3, ["a", "a", "b"])["R@1"] == pytest.approx(1 / 3)


def test_subject_split_is_seeded_stratified_and_disjoint():
    pairs = [Pair(id=str(i), text="t", features={}, group="g" + str(i % 3), dataset="d") for i in range(40)]
    train, test = subject_split(pairs, seed=1, test_fraction=0.25)
    assert not set(train) & set(test) and len(train) + len(test) == 40
    assert (train, test) == subject_split(pairs, seed=1, test_fraction=0.25)
    assert test != subject_split(pairs, seed=2, test_fraction=0.25)[1]
    assert {pairs[i].group for i in test} == {"g0", "g1", "g2"}


def test_pairs_file_accepts_features_summaries_and_bank_records(tmp_path):
    lines = [{"id": f"f{i}", "text": f"report {i}", "features": {"lv_ef_percent": 30 + i}} for i in range(4)]
    lines += [{"id": f"s{i}", "text": f"report s{i}", "summary": {"cine": {"lv_ef_percent": 50 + i}}} for i in range(3)]
    lines += [{"id": "b", "text": "bank", "metadata": {"group": "NOR", "study_features": {"lge_percent": 0}}}]
    lines += [{"id": "empty", "text": "no numbers", "features": {}}]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines))
    pairs = load_pairs(path)
    assert [p.id for p in pairs][-1] == "b" and len(pairs) == 8 and pairs[-1].group == "NOR"
    path.write_text(json.dumps({"id": "x", "text": "t"}))
    with pytest.raises(ValueError, match="features"):
        load_pairs(path)


@pytest.mark.torch
def test_training_learns_to_pair_studies_with_their_reports_and_numpy_matches_torch():
    pytest.importorskip("torch")
    from engines.retrieval.train import train_projection

    rng = np.random.default_rng(0)
    n = 48
    from dicomnode.analysis.suggestions import FEATURE_DIM
    features = rng.normal(size=(n, FEATURE_DIM)).astype(np.float32)
    mixing = rng.normal(size=(FEATURE_DIM, 384)).astype(np.float32)
    texts = np.tanh(features @ mixing)
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)
    projection, losses = train_projection(features, texts, seed=0, epochs=150)  # raises if numpy != torch
    assert losses[-1] < 0.5 * losses[0]
    hits = np.argmax(projection(features) @ texts.T, axis=1)
    assert np.mean(hits == np.arange(n)) > 0.8


@pytest.mark.torch
def test_train_command_writes_weights_and_card(tmp_path, models_dir):
    pytest.importorskip("torch")
    from engines.retrieval.train import main

    out = tmp_path / "projection.npz"
    assert main(["--pairs", str(models_dir / "report_bank" / "reports.jsonl"), "--out", str(out), "--epochs", "20"]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["pairs"] == 205 and card["embedding_dim"] == 384
    from dicomnode.analysis.suggestions import StudyProjection

    assert StudyProjection.load(out).dim == 384
