"""Model registry and the Runtime that hands out warm models on the backend the config chooses.

Backends: TensorRT engines, ONNX Runtime (TensorRT EP / CUDA EP / CPU), PyTorch (the card's torch definition).
`auto` tries TensorRT (tensorrt + GPU), then ONNX Runtime CUDA, then torch CUDA, then ONNX Runtime CPU, per model.
GPU work from any thread runs FIFO on one worker thread per device; CPU work runs in the caller under a lock.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from dicomnode.config import InferenceConfig, NodeConfig
from dicomnode.inference import probe
from dicomnode.inference.batching import run_in_chunks
from dicomnode.inference.cuda_memory import set_device
from dicomnode.inference.ort_session import OnnxRuntimeSession
from dicomnode.inference.shapes import Profile, max_batch, onnx_input_spec, precision_for, profile_for
from dicomnode.inference.tensorrt_build import EngineKey, ensure_engine, require_tensorrt
from dicomnode.inference.tensorrt_session import EngineLoadError, TensorRTSession
from dicomnode.inference.torch_session import TorchSession, torch_entry
from dicomnode.inference.worker import DeviceWorker, worker_for
from dicomnode.types import AlgorithmInfo

# the backend modules above import their library (onnxruntime, torch, tensorrt) only when a session is made

DEVICE_UID_ROOT = "2.25."
log = logging.getLogger("dicomnode.inference")


class RuntimeErrorNoModel(RuntimeError):
    """A model the pipeline needs is not installed."""


class BackendUnavailable(RuntimeError):
    """The configured backend cannot run this model here; the message says why."""


@dataclass(frozen=True)
class ModelCard:
    """The machine-readable card beside each ONNX file (<name>.json)."""

    name: str
    path: Path
    data: dict

    @functools.cached_property
    def sha256(self) -> str:
        digest = hashlib.sha256()
        with open(self.path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def max_batch(self) -> int:
        return max_batch(self.data)

    def profile(self) -> Profile:
        """The TensorRT profile: card["tensorrt"]["profile"], else derived from the ONNX input (see shapes.py)."""
        return profile_for(self.data, onnx_input_spec(self.path))

    def decision_settings(self) -> dict:
        """The card's decision thresholds applied to the model's output (output.channels[].logit_offset,
        output.epicardial_logit_offset; only those set): they change the results as much as the weights do."""
        output = self.data.get("output") if isinstance(self.data.get("output"), dict) else {}
        settings = {f"logit_offset[{c.get('channel')}]": float(c["logit_offset"])
                    for c in output.get("channels") or [] if isinstance(c, dict) and c.get("logit_offset")}
        if output.get("epicardial_logit_offset"):
            settings["epicardial_logit_offset"] = float(output["epicardial_logit_offset"])
        return settings

    def algorithm(self) -> AlgorithmInfo:
        # Device UID (IHE AIR) derived from the model bytes and the card's decision thresholds: a retrained or
        # recalibrated model gets a new UID (a card without thresholds keeps the UID of its bytes alone)
        digest = self.sha256
        if self.decision_settings():
            digest = hashlib.sha256((self.sha256 + json.dumps(self.decision_settings(), sort_keys=True))
                                    .encode()).hexdigest()
        device_uid = DEVICE_UID_ROOT + str(uuid.UUID(digest[:32]).int)
        return AlgorithmInfo(
            name=self.data.get("algorithm_name", self.name),
            version=str(self.data.get("version", "0")),
            manufacturer=self.data.get("manufacturer", "dicomnode project"),
            device_uid=device_uid,
            description=self.data.get("description", ""),
        )


class LoadedModel:
    """One warm model. `run` takes the model's input array (float32) and returns its first output as float32.

    Inputs larger than `max_batch` along the first axis run in chunks and are concatenated. A TensorRT model
    given a shape outside its optimisation profile runs that call on ONNX Runtime instead (logged once).
    """

    def __init__(self, card: ModelCard, backend: str, session, *, worker: DeviceWorker | None = None,
                 max_batch: int | None = None, fallback: Callable[[], object] | None = None):
        self.card = card
        self.backend = backend
        self._session = session
        self._worker = worker
        self._lock = threading.Lock()
        self._fallback_factory = fallback
        self._fallback = None
        self.max_batch = max_batch or card.max_batch
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        self.algorithm = card.algorithm()

    @property
    def description(self) -> str:
        """Backend and device actually in use, e.g. 'onnxruntime[CPU]' or 'tensorrt[cuda:0,fp16]'."""
        return getattr(self._session, "description", self.backend)

    @property
    def device(self) -> str:
        return getattr(self._session, "device", "cpu")

    def _run_chunk(self, chunk: np.ndarray) -> np.ndarray:
        accepts = getattr(self._session, "accepts", None)
        if accepts is not None and not accepts(chunk.shape) and self._fallback_factory is not None:
            if self._fallback is None:
                log.warning("%s: input shape %s is outside the TensorRT profile; running it on ONNX Runtime",
                            self.card.name, chunk.shape)
                self._fallback = self._fallback_factory()
            return self._fallback.run(chunk)
        return self._session.run(np.ascontiguousarray(chunk))

    def _run_all(self, inputs: np.ndarray) -> np.ndarray:
        return run_in_chunks(self._run_chunk, inputs, self.max_batch)

    def run(self, inputs: np.ndarray) -> np.ndarray:
        inputs = np.ascontiguousarray(inputs, dtype=np.float32)
        if self._worker is not None:
            return self._worker.call(self._run_all, inputs)
        with self._lock:
            return self._run_all(inputs)

    def close(self) -> None:
        def close_all():
            for session in (self._session, self._fallback):
                if session is not None and hasattr(session, "close"):
                    session.close()

        if self._worker is not None:
            self._worker.call(close_all)
        else:
            close_all()


def shipped_models_dir() -> Path:
    """The ONNX models and cards shipped in the `engines` package's models/ folder, found without importing
    `engines` (its training code is no part of the running node). Raises RuntimeErrorNoModel if not installed."""
    spec = importlib.util.find_spec("engines")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeErrorNoModel("the engines package (shipped models) is not installed; set inference.models_dir")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


class Runtime:
    """Hands out models by name; each is loaded once (on the configured backend) and reused across studies."""

    def __init__(self, config: InferenceConfig | None = None, *, storage_dir: Path | None = None):
        self.config = config or InferenceConfig()
        if self.config.models_dir is not None:
            self.models_dir = Path(self.config.models_dir)
        else:
            self.models_dir = shipped_models_dir()
        if self.config.engine_cache_dir is not None:
            self.engine_cache_dir = Path(self.config.engine_cache_dir)
        else:
            self.engine_cache_dir = Path(storage_dir or NodeConfig().storage_dir) / "engines"
        self._models: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        """Every installed model (an .onnx with its .json card) in models_dir."""
        if not self.models_dir.is_dir():
            return []
        return sorted(p.stem for p in self.models_dir.glob("*.onnx") if p.with_suffix(".json").is_file())

    def card(self, name: str) -> ModelCard:
        path = self.models_dir / f"{name}.onnx"
        card_path = self.models_dir / f"{name}.json"
        if not path.is_file() or not card_path.is_file():
            raise RuntimeErrorNoModel(f"model {name!r} is not installed in {self.models_dir} (need {name}.onnx + {name}.json)")
        return ModelCard(name=name, path=path, data=json.loads(card_path.read_text(encoding="utf-8")))

    def available(self, name: str) -> bool:
        return (self.models_dir / f"{name}.onnx").is_file() and (self.models_dir / f"{name}.json").is_file()

    def plan(self) -> list[tuple[str, str]]:
        """(backend, device) candidates tried in order for each model under this config."""
        device_id = self.config.device_id
        has_gpu = probe.gpu(device_id) is not None
        backend = self.config.backend
        if backend == "auto":
            return probe.auto_order(device_id)
        if backend == "tensorrt":
            return [("tensorrt", "cuda")]
        if backend == "onnxruntime":
            gpu_providers = {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(probe.onnxruntime_providers())
            return [("onnxruntime", "cuda" if has_gpu and gpu_providers else "cpu")]
        return [("torch", "cuda" if has_gpu and probe.torch_cuda_build() else "cpu")]

    def model(self, name: str) -> LoadedModel:
        with self._lock:
            if name not in self._models:
                self._models[name] = self._load(self.card(name))
            return self._models[name]

    def load(self, name: str, backend: str, device: str) -> LoadedModel:
        """A fresh (uncached) model on exactly this backend and device ('cpu' | 'cuda'), for benchmarks and parity."""
        if backend not in probe.BACKENDS or device not in ("cpu", "cuda"):
            raise ValueError(f"backend must be one of {probe.BACKENDS} and device cpu or cuda, got {backend!r}/{device!r}")
        if backend == "tensorrt" and device != "cuda":
            raise ValueError("the TensorRT backend runs on cuda only")
        card = self.card(name)
        worker = self._worker(device)
        factory = getattr(self, f"_load_{backend}")
        return worker.call(factory, card, device) if worker else factory(card, device)

    def warm_up(self, names: Iterable[str] | None = None) -> dict[str, LoadedModel]:
        """Load the named models (default: all installed) now, so the first study does not pay for it."""
        chosen = list(names) if names is not None else self.names()
        return {name: self.model(name) for name in chosen}

    def close(self) -> None:
        with self._lock:
            for loaded in self._models.values():
                loaded.close()
            self._models.clear()

    def _worker(self, device: str) -> DeviceWorker | None:
        return worker_for(f"cuda:{self.config.device_id}") if device == "cuda" else None

    def _load(self, card: ModelCard) -> LoadedModel:
        failures = []
        for backend, device in self.plan():
            worker = self._worker(device)
            try:
                factory = getattr(self, f"_load_{backend}")
                loaded = worker.call(factory, card, device) if worker else factory(card, device)
            except Exception as exc:  # noqa: BLE001 - each backend fails in its own way; auto tries the next
                if self.config.backend != "auto":
                    raise BackendUnavailable(f"{card.name}: backend {backend!r} on {device} failed: {exc}") from exc
                failures.append(f"{backend}/{device}: {exc}")
                log.warning("%s: %s on %s unavailable (%s); trying the next backend", card.name, backend, device, exc)
                continue
            log.info("%s loaded on %s", card.name, loaded.description)
            return loaded
        raise BackendUnavailable(f"{card.name}: no backend could load it: " + " | ".join(failures))

    def _load_onnxruntime(self, card: ModelCard, device: str) -> LoadedModel:
        profile = card.profile() if device == "cuda" else None
        session = OnnxRuntimeSession(card.path, self.config, device, profile, self.engine_cache_dir)
        return LoadedModel(card, "onnxruntime", session, worker=self._worker(device))

    def _load_torch(self, card: ModelCard, device: str) -> LoadedModel:
        torch_entry(card.data, card.directory)  # refuse a card without a torch entry before importing torch
        session = TorchSession(card.data, card.directory, self.config, device)
        return LoadedModel(card, "torch", session, worker=self._worker(device))

    def _load_tensorrt(self, card: ModelCard, device: str) -> LoadedModel:
        version, gpu = require_tensorrt(self.config.device_id)
        set_device(self.config.device_id)
        profile = card.profile()
        key = EngineKey(card.name, card.sha256, version, gpu.sm, precision_for(card.data, self.config.precision), profile)
        path, meta, built = ensure_engine(card.path, key, self.engine_cache_dir)
        if built:
            log.warning("%s: built TensorRT engine %s at start-up (run `dicomnode engines build` beforehand)",
                        card.name, path.name)
        try:
            session = TensorRTSession(path, profile, self.config.device_id, meta.get("precision", key.precision))
        except EngineLoadError as exc:
            log.warning("%s: %s; rebuilding", card.name, exc)
            path, meta, _ = ensure_engine(card.path, key, self.engine_cache_dir, force=True)
            session = TensorRTSession(path, profile, self.config.device_id, meta.get("precision", key.precision))
        ort_device = "cuda" if "CUDAExecutionProvider" in probe.onnxruntime_providers() else "cpu"

        def fallback():
            return OnnxRuntimeSession(card.path, self.config, ort_device, None, None, use_tensorrt_ep=False)

        return LoadedModel(card, "tensorrt", session, worker=self._worker(device),
                           max_batch=min(card.max_batch, profile.max[0]), fallback=fallback)
