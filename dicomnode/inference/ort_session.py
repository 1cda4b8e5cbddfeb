"""ONNX Runtime backend: one InferenceSession with the best execution providers this machine offers."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dicomnode.config import InferenceConfig
from dicomnode.inference import probe
from dicomnode.inference.shapes import Profile


def _shape_text(name: str, shape: tuple[int, ...]) -> str:
    return f"{name}:" + "x".join(str(s) for s in shape)


def providers_for(device: str, config: InferenceConfig, profile: Profile | None, cache_dir: Path | None,
                  use_tensorrt_ep: bool = True) -> list:
    """Provider list for a session: 'cpu' -> CPU only; 'cuda' -> TensorRT EP (when TensorRT is installed), CUDA EP, CPU."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    available = probe.onnxruntime_providers()
    chosen: list = []
    if use_tensorrt_ep and "TensorrtExecutionProvider" in available and probe.tensorrt_version() is not None:
        options: dict = {"device_id": config.device_id, "trt_fp16_enable": config.precision == "fp16"}
        if cache_dir is not None:
            options.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache_dir / "ort-trt"),
                           trt_timing_cache_enable=True, trt_timing_cache_path=str(cache_dir / "ort-trt"))
        if profile is not None:
            options.update(trt_profile_min_shapes=_shape_text(profile.input_name, profile.min),
                           trt_profile_opt_shapes=_shape_text(profile.input_name, profile.opt),
                           trt_profile_max_shapes=_shape_text(profile.input_name, profile.max))
        chosen.append(("TensorrtExecutionProvider", options))
    if "CUDAExecutionProvider" in available:
        # TF32 convolutions only when FP16 is acceptable anyway; FP32 means FP32 (parity <= 1e-4)
        chosen.append(("CUDAExecutionProvider", {"device_id": config.device_id,
                                                 "use_tf32": int(config.precision != "fp32")}))
    if not chosen:
        raise RuntimeError(f"ONNX Runtime here has no GPU execution provider (available: {available})")
    chosen.append("CPUExecutionProvider")
    return chosen


class OnnxRuntimeSession:
    """Runs the ONNX model with ONNX Runtime; `providers` says which execution providers it really got."""

    backend = "onnxruntime"

    def __init__(self, path: Path, config: InferenceConfig, device: str = "cpu",
                 profile: Profile | None = None, cache_dir: Path | None = None, use_tensorrt_ep: bool = True):
        import onnxruntime as ort  # lazy: heavy (~0.5 s), and only a session needs it

        options = ort.SessionOptions()
        if config.intra_op_threads:
            options.intra_op_num_threads = config.intra_op_threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if cache_dir is not None and device != "cpu":
            (cache_dir / "ort-trt").mkdir(parents=True, exist_ok=True)
        self.device = device if device == "cpu" else f"cuda:{config.device_id}"
        self._session = ort.InferenceSession(str(path), options, providers=providers_for(device, config, profile, cache_dir, use_tensorrt_ep))
        self.providers = self._session.get_providers()
        self._input = self._session.get_inputs()[0].name

    @property
    def description(self) -> str:
        return "onnxruntime[" + ",".join(p.replace("ExecutionProvider", "") for p in self.providers) + "]"

    def run(self, inputs: np.ndarray) -> np.ndarray:
        output = self._session.run(None, {self._input: inputs})[0]
        return np.asarray(output, dtype=np.float32)

    def close(self) -> None:
        self._session = None
