"""TensorRT: profiles and engine-cache keys (everywhere), and a real build + run + cache reuse where TensorRT and a GPU exist."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

from dicomnode.config import InferenceConfig
from dicomnode.inference import Runtime, probe
from dicomnode.inference.parity import compare, judge
from dicomnode.inference.shapes import InputSpec, Profile, max_batch, precision_for, profile_for
from dicomnode.inference.tensorrt_build import EngineKey, TensorRTUnavailable, TextProgress, cached_engines, require_tensorrt

LGE_SPEC = InputSpec("image", (None, 1, None, 128, 128))
LGE_CARD = {"tensorrt": {"profile": {"min": [1, 1, 4, 128, 128], "opt": [1, 1, 12, 128, 128], "max": [2, 1, 24, 128, 128]}}}


def test_card_profile_is_used_and_checked_against_the_onnx_input():
    profile = profile_for(LGE_CARD, LGE_SPEC)
    assert profile == Profile("image", (1, 1, 4, 128, 128), (1, 1, 12, 128, 128), (2, 1, 24, 128, 128))
    assert profile.accepts((2, 1, 24, 128, 128)) and not profile.accepts((1, 1, 25, 128, 128))
    assert not profile.accepts((1, 1, 12, 128))
    with pytest.raises(ValueError, match="axis 3 must be 128"):
        profile_for({"tensorrt": {"profile": {"min": [1, 1, 4, 96, 128], "opt": [1, 1, 12, 128, 128],
                                              "max": [2, 1, 24, 128, 128]}}}, LGE_SPEC)
    with pytest.raises(ValueError, match="rank"):
        profile_for({"tensorrt": {"profile": {"min": [1, 1], "opt": [1, 1], "max": [1, 1]}}}, LGE_SPEC)
    with pytest.raises(ValueError, match="min <= opt <= max"):
        Profile("image", (1, 1, 30, 128, 128), (1, 1, 12, 128, 128), (2, 1, 24, 128, 128))
    with pytest.raises(ValueError, match="min, opt and max"):
        profile_for({"tensorrt": {"profile": {"min": [1, 1, 4, 128, 128]}}}, LGE_SPEC)


def test_profile_is_derived_from_dynamic_dims_without_a_card_profile():
    derived = profile_for({"max_batch": 64}, InputSpec("frames", (None, 1, 192, 192)))
    assert derived == Profile("frames", (1, 1, 192, 192), (32, 1, 192, 192), (64, 1, 192, 192))
    stack = profile_for({}, InputSpec("image", (1, 1, None, None, None)))
    assert stack.min == (1, 1, 1, 32, 32) and stack.max == (1, 1, 32, 512, 512)
    with pytest.raises(ValueError, match="axis 1 is dynamic"):
        profile_for({}, InputSpec("x", (None, None, 8, 8)))


def test_max_batch_and_precision_from_the_card():
    assert max_batch({}) == 32
    assert max_batch(LGE_CARD) == 2
    assert max_batch({"max_batch": 60, **LGE_CARD}) == 60
    with pytest.raises(ValueError, match="max_batch"):
        max_batch({"max_batch": 0})
    assert precision_for({}, "fp16") == "fp16"
    assert precision_for({"tensorrt": {"precision": "fp32"}}, "fp16") == "fp32"
    with pytest.raises(ValueError, match="fp16 or fp32"):
        precision_for({}, "int8")


def test_engine_key_changes_with_model_tensorrt_gpu_precision_and_profile():
    profile = profile_for(LGE_CARD, LGE_SPEC)
    base = EngineKey("lge_unet", "ab" * 32, "10.7.0", "sm90", "fp16", profile)
    assert base.filename.startswith("lge_unet-abababababab-trt10.7.0-sm90-fp16-p") and base.filename.endswith(".engine")
    variants = [
        EngineKey("lge_unet", "cd" * 32, "10.7.0", "sm90", "fp16", profile),
        EngineKey("lge_unet", "ab" * 32, "10.8.0", "sm90", "fp16", profile),
        EngineKey("lge_unet", "ab" * 32, "10.7.0", "sm89", "fp16", profile),
        EngineKey("lge_unet", "ab" * 32, "10.7.0", "sm90", "fp32", profile),
        EngineKey("lge_unet", "ab" * 32, "10.7.0", "sm90", "fp16", Profile("image", profile.min, profile.opt,
                                                                             (2, 1, 32, 128, 128))),
    ]
    assert len({base.filename, *(v.filename for v in variants)}) == 6
    assert base.timing_cache_name() == "timing-trt10.7.0-sm90.cache"


def test_cached_engines_lists_complete_entries_only(tmp_path):
    (tmp_path / "a.engine").write_bytes(b"x")
    (tmp_path / "a.engine.json").write_text(json.dumps({"model_name": "lge_unet", "built_at": "2026-01-01T00:00:00Z"}))
    (tmp_path / "b.engine.json").write_text(json.dumps({"model_name": "lge_unet"}))  # engine file missing
    (tmp_path / "c.engine").write_bytes(b"x")
    (tmp_path / "c.engine.json").write_text(json.dumps({"model_name": "cine_unet", "built_at": "2026-01-02T00:00:00Z"}))
    assert [m["model_name"] for m in cached_engines(tmp_path)] == ["cine_unet", "lge_unet"]
    assert [m["path"] for m in cached_engines(tmp_path, "lge_unet")] == [str(tmp_path / "a.engine")]
    assert cached_engines(tmp_path / "absent") == []


def test_text_progress_reports_phases():
    stream = io.StringIO()
    progress = TextProgress(stream, label="[1/2] lge_unet ")
    progress.phase_start("Building engine", None, 4)
    progress.phase_start("Tactic selection", "Building engine", 10)
    for step in range(10):
        assert progress.step_complete("Tactic selection", step)
    progress.phase_finish("Tactic selection")
    progress.phase_finish("Building engine")
    progress.message("built")
    text = stream.getvalue()
    assert "[1/2] lge_unet [........................] 0/4 Building engine" in text
    assert "  [" in text and "0/10 Tactic selection" in text
    assert "[########################] 4/4 Building engine" in text and text.endswith("built\n")


def test_require_tensorrt_names_what_is_missing(monkeypatch):
    monkeypatch.setattr(probe, "tensorrt_version", lambda: None)
    with pytest.raises(TensorRTUnavailable, match="TensorRT is not installed.*dicomnode\\[tensorrt\\]"):
        require_tensorrt(0)
    monkeypatch.setattr(probe, "tensorrt_version", lambda: "10.7.0")
    monkeypatch.setattr(probe, "gpus", lambda: ())
    with pytest.raises(TensorRTUnavailable, match="no CUDA device 0"):
        require_tensorrt(0)


def _needs_tensorrt():
    pytest.importorskip("tensorrt", reason="TensorRT is not installed")
    if not probe.tensorrt_usable(0):
        pytest.skip("TensorRT imports but cuda-python or a CUDA GPU is missing")


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision, fp16_tolerance", [("fp32", None), ("fp16", 1e-2)])
def test_tensorrt_engine_builds_runs_and_matches_onnxruntime(models_dir, tmp_path, precision, fp16_tolerance):
    _needs_tensorrt()
    config = dict(models_dir=models_dir, engine_cache_dir=tmp_path / "engines", precision=precision)
    trt_model = Runtime(InferenceConfig(backend="tensorrt", **config)).model("tiny3d")
    ort_model = Runtime(InferenceConfig(backend="onnxruntime", **config)).model("tiny3d")
    assert trt_model.backend == "tensorrt" and trt_model.device == "cuda:0"
    rng = np.random.default_rng(5)
    for shape in [(1, 1, 4, 32, 32), (3, 1, 12, 64, 64), (2, 1, 24, 128, 128)]:  # 3 > max_batch 2: chunked
        x = rng.normal(size=shape).astype(np.float32)
        verdict = judge(compare(ort_model.run(x), trt_model.run(x)), precision, fp16_max_abs=fp16_tolerance or 0)
        assert verdict.passed, verdict.failures
    outside = rng.normal(size=(1, 1, 30, 32, 32)).astype(np.float32)  # depth 30 > profile max 24: ORT fallback
    assert judge(compare(ort_model.run(outside), trt_model.run(outside)), "fp32").passed
    engines = cached_engines(tmp_path / "engines", "tiny3d")
    assert len(engines) == 1 and engines[0]["profile"]["max"] == [2, 1, 24, 128, 128]
    assert (tmp_path / "engines" / f"timing-trt{probe.tensorrt_version()}-{probe.gpu(0).sm}.cache").is_file()


@pytest.mark.tensorrt
def test_tensorrt_engine_cache_is_reused_and_rebuilt_when_damaged(models_dir, tmp_path):
    _needs_tensorrt()
    from dicomnode.inference.tensorrt_build import ensure_engine

    runtime = Runtime(InferenceConfig(backend="tensorrt", models_dir=models_dir, engine_cache_dir=tmp_path))
    card = runtime.card("tiny2d")
    gpu = probe.gpu(0)
    key = EngineKey("tiny2d", card.sha256, probe.tensorrt_version(), gpu.sm, "fp16", card.profile())
    path, _, built = ensure_engine(card.path, key, tmp_path)
    assert built
    assert ensure_engine(card.path, key, tmp_path)[2] is False
    path.write_bytes(b"not an engine")
    model = runtime.model("tiny2d")  # deserialisation fails -> rebuilt, then runs
    x = np.ones((1, 1, 64, 64), np.float32)
    assert model.run(x).shape == (1, 3, 64, 64)
