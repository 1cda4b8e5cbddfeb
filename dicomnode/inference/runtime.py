"""Model registry and the Runtime that hands out warm models (ONNX Runtime on CPU by default)."""
from __future__ import annotations

import hashlib
import json
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dicomnode.analysis.pipeline import AlgorithmInfo
from dicomnode.config import InferenceConfig

DEVICE_UID_ROOT = "2.25."


class RuntimeErrorNoModel(RuntimeError):
    """A model the pipeline needs is not installed."""


@dataclass(frozen=True)
class ModelCard:
    """The machine-readable card beside each ONNX file (<name>.json)."""

    name: str
    path: Path
    data: dict

    @property
    def sha256(self) -> str:
        digest = hashlib.sha256()
        with open(self.path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    def algorithm(self) -> AlgorithmInfo:
        # Device UID (IHE AIR) derived from the model bytes: a retrained model gets a new UID.
        device_uid = DEVICE_UID_ROOT + str(uuid.UUID(self.sha256[:32]).int)
        return AlgorithmInfo(
            name=self.data.get("algorithm_name", self.name),
            version=str(self.data.get("version", "0")),
            manufacturer=self.data.get("manufacturer", "dicomnode project"),
            device_uid=device_uid,
            description=self.data.get("description", ""),
        )


class LoadedModel:
    """One warm model. `run` takes the model's input array (float32) and returns its first output."""

    def __init__(self, card: ModelCard, backend: str, session):
        self.card = card
        self.backend = backend
        self._session = session
        self._lock = threading.Lock()
        self.algorithm = card.algorithm()

    def run(self, inputs: np.ndarray) -> np.ndarray:
        with self._lock:
            return self._session.run(np.ascontiguousarray(inputs, dtype=np.float32))


class _OnnxRuntimeSession:
    def __init__(self, path: Path, config: InferenceConfig):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if config.intra_op_threads:
            options.intra_op_num_threads = config.intra_op_threads
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def run(self, inputs: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: inputs})[0]


class Runtime:
    """Hands out models by name; each is loaded once and reused across studies."""

    def __init__(self, config: InferenceConfig | None = None):
        self.config = config or InferenceConfig()
        if self.config.models_dir is not None:
            self.models_dir = Path(self.config.models_dir)
        else:
            from engines import models_dir

            self.models_dir = models_dir()
        self._models: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()

    def card(self, name: str) -> ModelCard:
        path = self.models_dir / f"{name}.onnx"
        card_path = self.models_dir / f"{name}.json"
        if not path.is_file() or not card_path.is_file():
            raise RuntimeErrorNoModel(f"model {name!r} is not installed in {self.models_dir} (need {name}.onnx + {name}.json)")
        return ModelCard(name=name, path=path, data=json.loads(card_path.read_text(encoding="utf-8")))

    def available(self, name: str) -> bool:
        return (self.models_dir / f"{name}.onnx").is_file() and (self.models_dir / f"{name}.json").is_file()

    def model(self, name: str) -> LoadedModel:
        with self._lock:
            if name not in self._models:
                card = self.card(name)
                self._models[name] = LoadedModel(card, "onnxruntime", _OnnxRuntimeSession(card.path, self.config))
            return self._models[name]
