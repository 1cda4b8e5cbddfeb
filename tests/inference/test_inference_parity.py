"""Parity harness (pure numpy) and ONNX Runtime CPU vs the torch backend on a tiny net exported on the fly."""
from __future__ import annotations

import numpy as np
import pytest

from dicomnode.config import InferenceConfig
from dicomnode.inference import Runtime
from dicomnode.inference.parity import (FP32_MAX_ABS, class_volumes_ml, compare, derived_differences, judge,
                                        label_volumes_ml)


def test_compare_measures_error_and_argmax_agreement():
    reference = np.zeros((1, 3, 10, 10), np.float32)
    reference[:, 1] = 5.0
    candidate = reference.copy()
    candidate[0, 2, 0, 0] = 6.0  # flips the argmax of exactly one of 100 positions
    report = compare(reference, candidate)
    assert report.max_abs_error == pytest.approx(6.0)
    assert report.reference_scale == pytest.approx(5.0)
    assert report.max_rel_error == pytest.approx(6.0 / 5.0)
    assert report.argmax_agreement == pytest.approx(0.99)
    assert report.mean_abs_error == pytest.approx(6.0 / 300)


def test_compare_refuses_mismatched_or_broken_outputs():
    with pytest.raises(ValueError, match="shapes differ"):
        compare(np.zeros((1, 2)), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="NaN"):
        compare(np.zeros((1, 2)), np.array([[0.0, np.nan]]))


def test_judge_applies_the_documented_tolerances():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(2, 4, 8, 8)).astype(np.float32)
    close = compare(reference, reference + 5e-5)
    assert judge(close, "fp32").passed
    far = compare(reference, reference + 5e-3)
    verdict = judge(far, "fp32")
    assert not verdict.passed and "max error" in verdict.failures[0]
    assert judge(far, "fp16").passed
    flipped = reference.copy()
    flipped[:, 0] = flipped.max(axis=1) + 1  # every argmax becomes class 0
    assert "argmax agreement" in " ".join(judge(compare(reference, flipped), "fp16", fp16_max_abs=1e9).failures)
    derived = {"scar_ml": 0.2, "lge_percent": 0.05}
    assert judge(close, "fp32", derived=derived).failures == ["scar_ml differs by 0.2 > 0.1"]
    with pytest.raises(ValueError, match="precision"):
        judge(close, "int8")


def test_derived_numbers_follow_the_node_conventions():
    labels = np.zeros((2, 10, 10), np.uint8)
    labels[0, :5, :] = 2  # 50 healthy myocardium voxels
    labels[1, :2, :5] = 3  # 10 scar
    labels[1, 5, :5] = 4  # 5 MVO
    volumes = label_volumes_ml(labels, voxel_volume_ml=0.02)
    assert volumes["myocardium_ml"] == pytest.approx(65 * 0.02)
    assert volumes["lge_percent"] == pytest.approx(100 * 15 / 65)
    assert volumes["scar_ml"] == pytest.approx(0.2)
    changed = labels.copy()
    changed[0, 9, 9] = 3
    differences = derived_differences(labels, changed, 0.02)
    assert differences["scar_ml"] == pytest.approx(0.02) and differences["lv_myocardium_ml"] == pytest.approx(0)
    assert differences["lge_percent"] == pytest.approx(100 * 16 / 66 - 100 * 15 / 65)
    assert class_volumes_ml(labels, 1.0, 5) == {"class1_ml": 0, "class2_ml": 50, "class3_ml": 10, "class4_ml": 5}
    with pytest.raises(ValueError, match="voxel_volume_ml"):
        label_volumes_ml(labels, 0)


@pytest.mark.torch
def test_onnxruntime_cpu_matches_torch_on_a_tiny_exported_net(torch_models_dir):
    pytest.importorskip("torch")
    ort_model = Runtime(InferenceConfig(backend="onnxruntime", models_dir=torch_models_dir)).model("tinytorch")
    torch_model = Runtime(InferenceConfig(backend="torch", models_dir=torch_models_dir)).model("tinytorch")
    assert torch_model.backend == "torch" and torch_model.description == "torch[cpu]"
    assert ort_model.algorithm == torch_model.algorithm
    rng = np.random.default_rng(3)
    for shape in [(1, 1, 32, 32), (5, 1, 48, 64)]:
        x = rng.normal(size=shape).astype(np.float32)
        report = compare(torch_model.run(x), ort_model.run(x))
        verdict = judge(report, "fp32")
        assert verdict.passed, verdict.failures
        assert report.max_rel_error <= FP32_MAX_ABS and report.argmax_agreement >= 0.999


@pytest.mark.torch
def test_a_wrong_torch_weight_file_is_caught_by_the_harness(torch_models_dir):
    torch = pytest.importorskip("torch")
    state = torch.load(torch_models_dir / "tinytorch.pt", weights_only=True)
    state["head.bias"] = state["head.bias"] + 0.01
    torch.save(state, torch_models_dir / "tinytorch.pt")
    x = np.random.default_rng(4).normal(size=(2, 1, 32, 32)).astype(np.float32)
    ort_out = Runtime(InferenceConfig(backend="onnxruntime", models_dir=torch_models_dir)).model("tinytorch").run(x)
    torch_out = Runtime(InferenceConfig(backend="torch", models_dir=torch_models_dir)).model("tinytorch").run(x)
    assert not judge(compare(torch_out, ort_out), "fp32").passed
