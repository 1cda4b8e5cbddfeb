"""Offline sentence encoder for report texts: a tokenizer.json + ONNX model (mean pooling, L2 norm) on ONNX Runtime."""
from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np

EMBEDDING_DIM = 384
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2
BATCH_SIZE = 32


class TextEncoder:
    """Embeds texts as unit vectors of length 384; `model_dir` holds model.onnx and tokenizer.json."""

    def __init__(self, model_dir: str | Path, intra_op_threads: int = 0):
        self.model_dir = Path(model_dir)
        model_path = self.model_dir / "model.onnx"
        tokenizer_path = self.model_dir / "tokenizer.json"
        missing = [p.name for p in (model_path, tokenizer_path) if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"text encoder folder {self.model_dir} lacks {', '.join(missing)}")
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self._tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]", pad_type_id=0)
        options = ort.SessionOptions()
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        self._session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        self._input_names = {i.name for i in self._session.get_inputs()}
        output_shape = self._session.get_outputs()[0].shape
        if output_shape[-1] != EMBEDDING_DIM:
            raise ValueError(f"{model_path} outputs {output_shape}, expected (batch, {EMBEDDING_DIM})")
        self.model_sha256 = _sha256(model_path)
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return EMBEDDING_DIM

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), 384) float32, each row of unit length; an empty list gives a (0, 384) array."""
        if isinstance(texts, str):
            raise TypeError("encode takes a list of strings, not one string")
        out = np.zeros((len(texts), EMBEDDING_DIM), dtype=np.float32)
        for start in range(0, len(texts), BATCH_SIZE):
            batch = [str(t) for t in texts[start:start + BATCH_SIZE]]
            out[start:start + len(batch)] = self._encode_batch(batch)
        return out

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        feeds = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        feeds = {name: value for name, value in feeds.items() if name in self._input_names}
        with self._lock:
            vectors = self._session.run(None, feeds)[0].astype(np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
