"""ONNX -> TensorRT engine: FP16 (FP32 fallback), an optimisation profile, a timing cache, and a keyed engine cache.

Engines are cached as <cache>/<name>-<model sha256[:12]>-trt<version>-<sm>-<precision>-p<profile hash>.engine with a
.json beside it: a changed model, TensorRT version, GPU (compute capability) or profile gives a new key, so such a
change rebuilds instead of loading an incompatible engine. Written against the TensorRT 10 Python API.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from dicomnode import strict_json
from dicomnode.inference import probe
from dicomnode.inference.shapes import Profile

WORKSPACE_BYTES = 4 << 30


class TensorRTUnavailable(RuntimeError):
    """TensorRT (or cuda-python, or a GPU) is missing here."""


class EngineBuildError(RuntimeError):
    """TensorRT could not parse the ONNX model or build an engine from it."""


def require_tensorrt(device_id: int = 0) -> tuple[str, probe.GPU]:
    """(TensorRT version, GPU) or a TensorRTUnavailable naming exactly what is missing."""
    version = probe.tensorrt_version()
    if version is None:
        raise TensorRTUnavailable(
            "TensorRT is not installed (the Python module `tensorrt` does not import). Install the optional extra "
            "on a machine with an NVIDIA GPU: pip install 'dicomnode[tensorrt]' (the wheels fetch from NVIDIA's index)."
        )
    device = probe.gpu(device_id)
    if device is None:
        raise TensorRTUnavailable(f"TensorRT {version} is installed but there is no CUDA device {device_id}")
    if not probe.cuda_python_installed():
        raise TensorRTUnavailable("cuda-python is not installed; the TensorRT backend needs it (pip install cuda-python)")
    return version, device


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; `filename` changes when any of it does."""

    model_name: str
    model_sha256: str
    tensorrt_version: str
    sm: str
    precision: str
    profile: Profile

    @property
    def profile_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.profile.as_dict(), sort_keys=True).encode()).hexdigest()[:8]

    @property
    def filename(self) -> str:
        return (f"{self.model_name}-{self.model_sha256[:12]}-trt{self.tensorrt_version}-{self.sm}-"
                f"{self.precision}-p{self.profile_hash}.engine")

    def timing_cache_name(self) -> str:
        return f"timing-trt{self.tensorrt_version}-{self.sm}.cache"


def cached_engines(cache_dir: Path, model_name: str | None = None) -> list[dict]:
    """Metadata of every engine in the cache (optionally of one model), newest first."""
    if not cache_dir.is_dir():
        return []
    found = []
    for meta_path in cache_dir.glob("*.engine.json"):
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        engine = meta_path.with_suffix("")
        if not engine.is_file() or (model_name is not None and meta.get("model_name") != model_name):
            continue
        meta["path"] = str(engine)
        found.append(meta)
    return sorted(found, key=lambda m: m.get("built_at", ""), reverse=True)


class TextProgress:
    """A plain stderr progress display: one line per phase, redrawn in place on a terminal."""

    def __init__(self, stream: TextIO | None = None, label: str = ""):
        self.stream = stream or sys.stderr
        self.label = label
        self._phases: dict[str, tuple[int, str | None]] = {}
        self._lock = threading.Lock()
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def _depth(self, phase: str) -> int:
        depth, parent = 0, self._phases.get(phase, (0, None))[1]
        while parent is not None and depth < 8:
            depth += 1
            parent = self._phases.get(parent, (0, None))[1]
        return depth

    def _draw(self, phase: str, done: int, total: int, end: str) -> None:
        width = 24
        filled = width * done // max(total, 1)
        line = f"{self.label}{'  ' * self._depth(phase)}[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {phase}"
        if self._tty:
            self.stream.write("\r\x1b[K" + line + end)
        elif end:
            self.stream.write(line + end)
        self.stream.flush()

    def phase_start(self, phase: str, parent: str | None, steps: int) -> None:
        with self._lock:
            self._phases[phase] = (steps, parent)
            self._draw(phase, 0, steps, "" if self._tty else "\n")

    def step_complete(self, phase: str, step: int) -> bool:
        with self._lock:
            steps = self._phases.get(phase, (step + 1, None))[0]
            if self._tty:
                self._draw(phase, step + 1, steps, "")
        return True

    def phase_finish(self, phase: str) -> None:
        with self._lock:
            steps = self._phases.get(phase, (1, None))[0]
            if self._phases.get(phase, (0, None))[1] is None:
                self._draw(phase, steps, steps, "\n")
            self._phases.pop(phase, None)

    def message(self, text: str) -> None:
        with self._lock:
            self.stream.write(f"{self.label}{text}\n")
            self.stream.flush()


def _progress_monitor(trt, progress: TextProgress):
    """A trt.IProgressMonitor forwarding to `progress` (TensorRT >= 10)."""

    class Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name, parent_phase, num_steps):
            progress.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name, step):
            return progress.step_complete(phase_name, step)

        def phase_finish(self, phase_name):
            progress.phase_finish(phase_name)

    return Monitor()


def _atomic_write(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def build_engine(onnx_path: Path, key: EngineKey, cache_dir: Path, progress: TextProgress | None = None,
                 workspace_bytes: int = WORKSPACE_BYTES) -> dict:
    """Build the engine for `key` into `cache_dir`; returns its metadata (written beside it as .json).

    FP16 is used when requested and the GPU has fast FP16; when the FP16 build fails, FP32 is tried.
    The timing cache is loaded before and saved after the build so later builds on this GPU are faster.
    """
    import tensorrt as trt  # optional backend, absent on CPU-only hosts

    cache_dir.mkdir(parents=True, exist_ok=True)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if int(trt.__version__.split(".")[0]) < 10:  # explicit batch is the only mode (and the flag deprecated) in 10
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    if network.num_inputs != 1 or network.get_input(0).name != key.profile.input_name:
        names = [network.get_input(i).name for i in range(network.num_inputs)]
        raise EngineBuildError(f"{onnx_path.name}: expected one input {key.profile.input_name!r}, found {names}")

    timing_path = cache_dir / key.timing_cache_name()
    monitor = _progress_monitor(trt, progress) if progress is not None and hasattr(trt, "IProgressMonitor") else None

    def attempt(precision: str):
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
        if precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        else:
            config.clear_flag(trt.BuilderFlag.TF32)  # on by default; FP32 parity (<= 1e-4) needs true FP32
        profile = builder.create_optimization_profile()
        profile.set_shape(key.profile.input_name, key.profile.min, key.profile.opt, key.profile.max)
        config.add_optimization_profile(profile)
        timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
        config.set_timing_cache(timing, False)  # ignore_mismatch=False
        if monitor is not None:
            config.progress_monitor = monitor
        serialized = builder.build_serialized_network(network, config)
        return serialized, config

    started = time.monotonic()
    precision = key.precision
    if precision == "fp16" and not getattr(builder, "platform_has_fast_fp16", True):
        precision = "fp32"
        if progress:
            progress.message("this GPU has no fast FP16: building FP32")
    serialized, config = attempt(precision)
    if serialized is None and precision == "fp16":
        if progress:
            progress.message("FP16 build failed: falling back to FP32")
        precision = "fp32"
        serialized, config = attempt(precision)
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build an engine for {onnx_path.name} (see the TensorRT log above)")

    engine_path = cache_dir / key.filename
    _atomic_write(engine_path, bytes(memoryview(serialized)))
    _atomic_write(timing_path, bytes(memoryview(config.get_timing_cache().serialize())))
    meta = {
        "model_name": key.model_name, "model_sha256": key.model_sha256, "tensorrt_version": key.tensorrt_version,
        "sm": key.sm, "requested_precision": key.precision, "precision": precision, "profile": key.profile.as_dict(),
        "build_seconds": round(time.monotonic() - started, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "onnx": str(onnx_path),
    }
    _atomic_write(engine_path.with_name(engine_path.name + ".json"),
                  strict_json.dumps(meta, "engine metadata", indent=2).encode())
    meta["path"] = str(engine_path)
    return meta


def ensure_engine(onnx_path: Path, key: EngineKey, cache_dir: Path, force: bool = False,
                  progress: TextProgress | None = None) -> tuple[Path, dict, bool]:
    """(engine path, metadata, built now?) — the cached engine for `key`, built first when missing or forced."""
    engine_path = cache_dir / key.filename
    meta_path = engine_path.with_name(engine_path.name + ".json")
    if not force and engine_path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        meta["path"] = str(engine_path)
        return engine_path, meta, False
    meta = build_engine(onnx_path, key, cache_dir, progress)
    return engine_path, meta, True
