"""Tiny ONNX models for the inference tests: a pointwise Conv built with onnx.helper, and a tiny torch net exported on the fly."""
from __future__ import annotations

import json
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

TINY_TORCH_SOURCE = textwrap.dedent('''
    """A tiny 2-D segmentation-shaped net for backend parity tests."""
    import torch
    from torch import nn


    class TinyNet(nn.Module):
        def __init__(self, classes=3, width=6):
            super().__init__()
            self.encode = nn.Conv2d(1, width, 3, padding=1)
            self.down = nn.Conv2d(width, width, 3, stride=2, padding=1)
            self.up = nn.ConvTranspose2d(width, width, 2, stride=2)
            self.head = nn.Conv2d(2 * width, classes, 1)

        def forward(self, x):
            skip = torch.relu(self.encode(x))
            deep = self.up(torch.relu(self.down(skip)))
            return self.head(torch.cat([skip, deep], dim=1))


    def build_model(classes=3, width=6):
        return TinyNet(classes, width)
''')


def pointwise_weights(classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(classes, 1)).astype(np.float32), rng.normal(size=classes).astype(np.float32)


def pointwise_reference(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """What the pointwise model computes: relu(w * x + b) per class, x of shape (N, 1, ...)."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return np.maximum(weight.reshape(shape) * x + bias.reshape(shape), 0).astype(np.float32)


def write_pointwise_model(folder: Path, name: str, spatial_rank: int = 2, classes: int = 3, seed: int = 0,
                          card: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A 1x1(x1) Conv + Relu ONNX model (input 'image' (N,1,*spatial) dynamic) and its card; returns (weight, bias)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weight, bias = pointwise_weights(classes, seed)
    kernel = weight.reshape((classes, 1) + (1,) * spatial_rank)
    spatial = ["D", "H", "W"][-spatial_rank:]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w", "b"], ["pre"], kernel_shape=[1] * spatial_rank),
         helper.make_node("Relu", ["pre"], ["logits"])],
        name,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, *spatial])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes, *spatial])],
        [numpy_helper.from_array(kernel, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.onnx").write_bytes(model.SerializeToString())
    default_card = {"algorithm_name": f"test-{name}", "version": "1", "description": "pointwise test model"}
    (folder / f"{name}.json").write_text(json.dumps(card if card is not None else default_card))
    return weight, bias


def export_tiny_torch_model(folder: Path, name: str = "tinytorch", seed: int = 0) -> Path:
    """Write the tiny torch net's module, its state_dict and its ONNX export + a card with a torch entry."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    folder.mkdir(parents=True, exist_ok=True)
    module_dir = folder / "src"
    module_dir.mkdir(exist_ok=True)
    (module_dir / "tiny_parity_net.py").write_text(TINY_TORCH_SOURCE)
    sys.path.insert(0, str(module_dir))
    sys.modules.pop("tiny_parity_net", None)
    import tiny_parity_net

    torch.manual_seed(seed)
    model = tiny_parity_net.build_model().eval()
    torch.save(model.state_dict(), folder / f"{name}.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(2, 1, 32, 32),), str(folder / f"{name}.onnx"), dynamo=False,
                          input_names=["image"], output_names=["logits"], opset_version=17,
                          dynamic_axes={"image": {0: "N", 2: "H", 3: "W"}, "logits": {0: "N", 2: "H", 3: "W"}})
    card = {"algorithm_name": f"test-{name}", "version": "1",
            "torch": {"module": "tiny_parity_net", "factory": "build_model", "kwargs": {"classes": 3, "width": 6},
                      "weights": f"{name}.pt"}}
    (folder / f"{name}.json").write_text(json.dumps(card))
    return module_dir
