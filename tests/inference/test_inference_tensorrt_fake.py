"""The TensorRT backend's own logic (build, cache, buffers, fallback, CLI) run here against a fake TensorRT + cudart.

This checks the code paths and their bookkeeping, not TensorRT itself: see test_inference_tensorrt.py for the real one.
"""
from __future__ import annotations

import importlib
import json
import sys

import numpy as np
import pytest
from inference_models import pointwise_reference, pointwise_weights

from dicomnode.config import InferenceConfig
from dicomnode.inference import Runtime, cuda_memory, probe
from dicomnode.inference.cli import main
from dicomnode.inference.tensorrt_build import cached_engines


@pytest.fixture
def fake_trt(monkeypatch):
    pytest.importorskip("onnx")
    fake = importlib.import_module("fake_tensorrt")
    fake = importlib.reload(fake)
    rt = fake.make_cudart()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(probe, "tensorrt_version", lambda: fake.__version__)
    monkeypatch.setattr(probe, "cuda_python_installed", lambda: True)
    monkeypatch.setattr(probe, "gpus", lambda: (probe.GPU(0, "Fake H100", "9.0"),))
    monkeypatch.setattr(probe, "cudart", lambda: rt)
    monkeypatch.setattr(cuda_memory, "cudart", lambda: rt)
    monkeypatch.setattr(probe, "onnxruntime_providers", lambda: ["CPUExecutionProvider"])
    return fake


def trt_runtime(models_dir, tmp_path, **overrides):
    return Runtime(InferenceConfig(backend=overrides.pop("backend", "tensorrt"), models_dir=models_dir,
                                   engine_cache_dir=tmp_path / "engines", **overrides))


def test_builds_caches_and_runs_with_chunks_and_fallback(fake_trt, models_dir, tmp_path):
    model = trt_runtime(models_dir, tmp_path, precision="fp32").model("tiny3d")
    assert model.backend == "tensorrt" and model.description == "tensorrt[cuda:0,fp32]" and model.max_batch == 2
    assert len(fake_trt.builds) == 1 and fake_trt.builds[0]["profile"]["image"][2] == [2, 1, 24, 128, 128]
    assert not fake_trt.builds[0]["tf32"] and not fake_trt.builds[0]["fp16"]  # FP32 means FP32
    weight, bias = pointwise_weights(3, 1)
    rng = np.random.default_rng(0)
    for shape in [(1, 1, 4, 32, 32), (5, 1, 12, 40, 40), (2, 1, 24, 128, 128), (1, 1, 6, 32, 32)]:
        x = rng.normal(size=shape).astype(np.float32)
        np.testing.assert_array_equal(model.run(x), pointwise_reference(x, weight, bias))
    session = model._session
    assert session._device_buffers["image"].capacity == 2 * 24 * 128 * 128 * 4  # grown to the largest, kept
    outside = rng.normal(size=(1, 1, 30, 32, 32)).astype(np.float32)  # depth 30 > 24: ONNX Runtime runs it
    np.testing.assert_allclose(model.run(outside), pointwise_reference(outside, weight, bias), atol=1e-6)
    assert model._fallback is not None and model._fallback.backend == "onnxruntime"

    engines = cached_engines(tmp_path / "engines", "tiny3d")
    assert len(engines) == 1 and engines[0]["precision"] == "fp32" and engines[0]["sm"] == "sm90"
    assert (tmp_path / "engines" / "timing-trt10.99.0-fake-sm90.cache").read_bytes() == b"1"
    trt_runtime(models_dir, tmp_path, precision="fp32").model("tiny3d")  # a new node process: reuses the engine
    assert len(fake_trt.builds) == 1
    model.close()


def test_fp16_engine_and_fallback_to_fp32_when_fp16_fails(fake_trt, models_dir, tmp_path):
    model = trt_runtime(models_dir, tmp_path).model("tiny2d")
    assert fake_trt.builds[-1]["fp16"] and model.description == "tensorrt[cuda:0,fp16]"
    x = np.random.default_rng(1).normal(size=(3, 1, 64, 64)).astype(np.float32)
    np.testing.assert_allclose(model.run(x), pointwise_reference(x, *pointwise_weights(3, 0)), rtol=1e-3, atol=1e-3)
    fake_trt.fail_fp16 = True
    model = trt_runtime(models_dir, tmp_path / "other").model("tiny2d")
    assert [b["fp16"] for b in fake_trt.builds[-2:]] == [True, False]
    assert cached_engines(tmp_path / "other" / "engines")[0]["precision"] == "fp32"
    assert cached_engines(tmp_path / "other" / "engines")[0]["requested_precision"] == "fp16"


def test_damaged_or_foreign_engine_is_rebuilt(fake_trt, models_dir, tmp_path):
    trt_runtime(models_dir, tmp_path).model("tiny2d")
    engine = next((tmp_path / "engines").glob("tiny2d-*.engine"))
    engine.write_bytes(b"built by another TensorRT")
    model = trt_runtime(models_dir, tmp_path).model("tiny2d")
    assert len(fake_trt.builds) == 2
    assert model.run(np.ones((1, 1, 32, 32), np.float32)).shape == (1, 3, 32, 32)


def test_auto_picks_tensorrt_on_a_gpu(fake_trt, models_dir, tmp_path):
    model = trt_runtime(models_dir, tmp_path, backend="auto").model("tiny2d")
    assert model.backend == "tensorrt" and model.device == "cuda:0"


def test_engines_build_and_list(fake_trt, models_dir, tmp_path, capsys):
    config = tmp_path / "node.toml"
    config.write_text(f'[inference]\nmodels_dir = "{models_dir}"\nengine_cache_dir = "{tmp_path / "engines"}"\n')
    assert main(["engines", "build", "--config", str(config), "--precision", "fp32"]) == 0
    err = capsys.readouterr().err
    assert "TensorRT 10.99.0-fake on Fake H100 (sm90)" in err
    assert "[1/2] tiny2d [########################] 2/2 Building engine" in err
    assert "[2/2] tiny3d built in" in err and "fp32" in err
    assert main(["engines", "build", "--config", str(config), "--precision", "fp32", "--model", "tiny3d"]) == 0
    assert "[1/1] tiny3d cached" in capsys.readouterr().err
    assert main(["engines", "build", "--config", str(config), "--precision", "fp32", "--model", "tiny3d", "--force"]) == 0
    assert len(fake_trt.builds) == 3
    assert main(["engines", "build", "--config", str(config), "--model", "nope"]) == 1
    assert "nope" in capsys.readouterr().err
    assert main(["engines", "list", "--config", str(config), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["backends"]["tensorrt"] == "TensorRT 10.99.0-fake on Fake H100 (sm90)"
    assert info["auto_order"][0] == "tensorrt/cuda"
    tiny3d = next(m for m in info["models"] if m["name"] == "tiny3d")
    assert tiny3d["backends"][0] == "tensorrt" and tiny3d["engines"][0]["current"]
