"""The shipped models (engines/models/lge_unet, cine_unet): run on ONNX Runtime CPU, and match torch on random and real inputs.

Skips, with the reason, while a model is not shipped yet. Real inputs are EMIDEC LGE / ACDC cine PNG slices from the
shared datasets, centre-cropped to the model's input size and z-score normalised per stack (parity compares backends on
the same input, so the exact clinical preprocessing does not matter here; realistic intensity content does).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dicomnode.config import InferenceConfig
from dicomnode.inference import Runtime
from dicomnode.inference.parity import compare, derived_differences, judge

SHIPPED = ["lge_unet", "cine_unet"]
VOXEL_ML = {"lge_unet": 1.5 * 1.5 * 10 / 1000, "cine_unet": 1.5 * 1.5 * 8 / 1000}  # stated model spacings


def shipped(name: str) -> Runtime:
    runtime = Runtime(InferenceConfig(backend="onnxruntime"))
    if not runtime.available(name):
        pytest.skip(f"{name} is not shipped yet (engines/models/{name}.onnx + .json missing)")
    return runtime


def representative_shape(runtime: Runtime, name: str) -> tuple[int, ...]:
    """One LGE stack at 12 slices, or a 12-frame cine batch, at the profile's opt in-plane size (small and fast)."""
    opt = list(runtime.card(name).profile().opt)
    if len(opt) == 5:
        opt[0], opt[2] = 1, 12
    else:
        opt[0] = 12
    return tuple(opt)


def _centre_fit(image: np.ndarray, height: int, width: int) -> np.ndarray:
    out = np.zeros((height, width), np.float32)
    rows, cols = min(height, image.shape[0]), min(width, image.shape[1])
    top, left = (image.shape[0] - rows) // 2, (image.shape[1] - cols) // 2
    out_top, out_left = (height - rows) // 2, (width - cols) // 2
    out[out_top:out_top + rows, out_left:out_left + cols] = image[top:top + rows, left:left + cols]
    return out


def real_input(datasets: Path, shape: tuple[int, ...]) -> np.ndarray:
    from PIL import Image

    if len(shape) == 5:  # (N, 1, D, H, W) LGE stack from one EMIDEC case
        files = sorted((datasets / "emidec-lge-png" / "train").glob("Case_P0*_slice*.png"))
        case = files[0].name.split("_slice")[0]
        files = [f for f in files if f.name.startswith(case + "_")]
        depth = shape[2]
        files = [files[min(i, len(files) - 1)] for i in range(depth)]
    else:  # (N, 1, H, W) cine frames from ACDC slices
        files = sorted((datasets / "acdc-train-png" / "images").glob("patient0*_frame*_z*.png"))[: shape[0]]
    slices = np.stack([_centre_fit(np.asarray(Image.open(f), np.float32), shape[-2], shape[-1]) for f in files])
    slices = (slices - slices.mean()) / (slices.std() + 1e-6)
    return slices.reshape(shape).astype(np.float32)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_runs_on_onnxruntime_cpu(name):
    runtime = shipped(name)
    model = runtime.model(name)
    shape = representative_shape(runtime, name)
    output = model.run(np.random.default_rng(0).normal(size=shape).astype(np.float32))
    assert output.dtype == np.float32 and output.shape[0] == shape[0] and output.shape[2:] == shape[2:]
    assert np.isfinite(output).all()
    assert model.algorithm.device_uid.startswith("2.25.")


@pytest.mark.torch
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_onnxruntime_matches_torch(name, datasets):
    runtime = shipped(name)
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    if "torch" not in runtime.card(name).data:
        pytest.skip(f"{name}'s card has no 'torch' entry (module, factory, weights) yet")
    ort_model = runtime.model(name)
    torch_model = Runtime(InferenceConfig(backend="torch")).model(name)
    shape = representative_shape(runtime, name)
    inputs = {"random": np.random.default_rng(1).normal(size=shape).astype(np.float32),
              "real": real_input(datasets, shape)}
    for kind, x in inputs.items():
        reference, candidate = torch_model.run(x), ort_model.run(x)
        report = compare(reference, candidate)
        derived = None
        if kind == "real":  # clinical numbers mean something on images only, not on noise with near-tied logits
            derived = derived_differences(reference.argmax(1), candidate.argmax(1), VOXEL_ML[name],
                                          classes=None if name == "lge_unet" else reference.shape[1])
        verdict = judge(report, "fp32", derived=derived)
        assert verdict.passed, f"{name} {kind}: {verdict.failures} ({report.as_dict()})"


def gpu_backends() -> list[tuple[str, str, str]]:
    """(backend, device, precision) on the GPU of this machine; empty without one."""
    from dicomnode.inference import probe

    if probe.gpu(0) is None:
        return []
    found = []
    if "CUDAExecutionProvider" in probe.onnxruntime_providers():
        found.append(("onnxruntime", "cuda", "fp32"))
    if probe.torch_cuda_build():
        found += [("torch", "cuda", "fp32"), ("torch", "cuda", "fp16")]
    if probe.tensorrt_usable(0):
        found += [("tensorrt", "cuda", "fp32"), ("tensorrt", "cuda", "fp16")]
    return found


@pytest.mark.torch
@pytest.mark.tensorrt
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_every_gpu_backend_matches_torch_cpu(name, datasets, tmp_path):
    runtime = shipped(name)
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    backends = gpu_backends()
    if not backends:
        pytest.skip("no GPU backend on this machine")
    card = runtime.card(name)
    if "torch" not in card.data:
        pytest.skip(f"{name}'s card has no 'torch' entry yet")
    fp16_tolerance = card.data.get("parity", {}).get("fp16_max_abs", 5e-2)
    shape = representative_shape(runtime, name)
    inputs = {"random": np.random.default_rng(1).normal(size=shape).astype(np.float32),
              "real": real_input(datasets, shape)}
    reference_model = Runtime(InferenceConfig(backend="torch")).load(name, "torch", "cpu")
    references = {kind: reference_model.run(x) for kind, x in inputs.items()}
    failures = []
    for backend, device, precision in backends:
        candidate_runtime = Runtime(InferenceConfig(backend=backend, precision=precision,
                                                    engine_cache_dir=tmp_path / "engines"))
        model = candidate_runtime.load(name, backend, device)
        for kind, x in inputs.items():
            reference, candidate = references[kind], model.run(x)
            derived = None
            if kind == "real":
                derived = derived_differences(reference.argmax(1), candidate.argmax(1), VOXEL_ML[name],
                                              classes=None if name == "lge_unet" else reference.shape[1])
            verdict = judge(compare(reference, candidate), precision, fp16_max_abs=fp16_tolerance, derived=derived)
            if not verdict.passed:
                failures.append(f"{model.description} {kind}: {verdict.failures}")
        model.close()
    assert not failures, failures
