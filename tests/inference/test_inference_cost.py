"""Conv FLOP and byte counting from an ONNX graph, and the GPU floor it implies."""
from __future__ import annotations

import pytest
from inference_models import write_pointwise_model

from dicomnode.inference.cost import GPU_PEAKS, gpu_peaks, model_cost


def test_pointwise_conv_cost_is_counted_exactly(tmp_path):
    pytest.importorskip("onnx")
    write_pointwise_model(tmp_path, "tiny2d", classes=3)
    cost = model_cost(tmp_path / "tiny2d.onnx", (4, 1, 8, 10))
    assert cost.conv_nodes == 1 and cost.conv_nodes_unsized == 0
    assert cost.conv_flops == 2 * 4 * 3 * 8 * 10 * 1  # 2 x N x Cout x H x W x (Cin x 1 x 1)
    assert cost.weight_bytes == (3 + 3) * 4
    assert cost.io_bytes == 4 * (1 + 3) * 8 * 10 * 4
    assert cost.activation_bytes == 4 * 3 * 8 * 10 * 4  # the Conv output before Relu
    assert cost.unfused_bytes == cost.min_bytes + 2 * cost.activation_bytes
    with pytest.raises(ValueError, match="rank"):
        model_cost(tmp_path / "tiny2d.onnx", (1, 8, 10))


@pytest.mark.torch
def test_conv_transpose_and_strided_conv_are_counted(tmp_path):
    from inference_models import export_tiny_torch_model

    export_tiny_torch_model(tmp_path)
    n, h, w, width, classes = 2, 16, 24, 6, 3
    cost = model_cost(tmp_path / "tinytorch.onnx", (n, 1, h, w))
    expected = (2 * n * width * h * w * 9  # encode 3x3
                + 2 * n * width * (h // 2) * (w // 2) * width * 9  # stride-2 3x3
                + 2 * n * width * (h // 2) * (w // 2) * width * 4  # ConvTranspose 2x2, per input element
                + 2 * n * classes * h * w * 2 * width)  # 1x1 head over the concatenation
    assert cost.conv_nodes == 4 and cost.conv_flops == expected


def test_gpu_peaks_by_device_name():
    assert gpu_peaks("NVIDIA H100 80GB HBM3") is GPU_PEAKS["H100 SXM"]
    assert gpu_peaks("NVIDIA H100 PCIe") is GPU_PEAKS["H100 PCIe"]
    assert gpu_peaks("NVIDIA H200") is GPU_PEAKS["H200"]
    assert gpu_peaks("Tesla T4") is None
