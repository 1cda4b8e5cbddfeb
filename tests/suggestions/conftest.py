"""Fixtures for the suggestions tests: a fast deterministic stand-in encoder and the shipped model paths."""
from __future__ import annotations

import hashlib
import re
import threading
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "engines" / "models"


class WordHashEncoder:
    """Bag of hashed words -> unit vector of 384; counts how many texts it embedded."""

    def __init__(self, tag: str = "words-v1", dim: int = 384):
        self.model_sha256 = hashlib.sha256(tag.encode()).hexdigest()
        self.dim = dim
        self.encoded: list[str] = []
        self.gate: threading.Event | None = None  # when set, encode waits for it (to hold a refresh open)
        self.entered = threading.Event()

    def encode(self, texts: list[str]) -> np.ndarray:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10), "test gate never opened"
        self.encoded.extend(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                out[row, int(hashlib.md5(word.encode()).hexdigest()[:8], 16) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


@pytest.fixture
def word_encoder() -> WordHashEncoder:
    return WordHashEncoder()


@pytest.fixture
def make_word_encoder():
    return WordHashEncoder


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return MODELS


@pytest.fixture(scope="session")
def text_encoder():
    from dicomnode.analysis.text_encoder import TextEncoder

    return TextEncoder(MODELS / "text_encoder")
