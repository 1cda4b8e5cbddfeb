"""Arithmetic and memory cost of an ONNX model at one input shape (Conv FLOPs, weight and activation bytes), and its floor.

Needs the `onnx` package (engines extra), imported only when called; benchmarks use it, the running node does not.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Dense peak throughput (FLOP/s) by precision and memory bandwidth (B/s) of GPUs we can name; no sparsity.
GPU_PEAKS = {
    "H100 SXM": {"fp16": 989e12, "fp32": 67e12, "tf32": 495e12, "bandwidth": 3.35e12},
    "H100 NVL": {"fp16": 835e12, "fp32": 60e12, "tf32": 418e12, "bandwidth": 3.9e12},
    "H100 PCIe": {"fp16": 756e12, "fp32": 51e12, "tf32": 378e12, "bandwidth": 2.0e12},
    "H200": {"fp16": 989e12, "fp32": 67e12, "tf32": 495e12, "bandwidth": 4.8e12},
    "A100": {"fp16": 312e12, "fp32": 19.5e12, "tf32": 156e12, "bandwidth": 2.0e12},
    "L40S": {"fp16": 362e12, "fp32": 91.6e12, "tf32": 183e12, "bandwidth": 0.864e12},
}


def gpu_peaks(gpu_name: str) -> dict | None:
    """Peaks for a CUDA device name such as 'NVIDIA H100 80GB HBM3' (SXM) or 'NVIDIA H100 PCIe'; None if unknown."""
    name = gpu_name.upper()
    if "H200" in name:
        return GPU_PEAKS["H200"]
    if "H100" in name:
        if "PCIE" in name:
            return GPU_PEAKS["H100 PCIe"]
        return GPU_PEAKS["H100 NVL"] if "NVL" in name else GPU_PEAKS["H100 SXM"]
    if "A100" in name:
        return GPU_PEAKS["A100"]
    if "L40S" in name:
        return GPU_PEAKS["L40S"]
    return None


@dataclass(frozen=True)
class ModelCost:
    """Work of one forward pass at `input_shape`."""

    input_shape: tuple[int, ...]
    conv_flops: float  # 2 x multiply-accumulates of every Conv / ConvTranspose node
    conv_nodes: int
    conv_nodes_unsized: int  # Conv nodes whose shapes inference could not resolve (not counted)
    weight_bytes: int
    io_bytes: int  # input + outputs
    activation_bytes: int  # every intermediate tensor once

    @property
    def min_bytes(self) -> int:
        """Least traffic possible: weights, input and outputs each moved once (perfect fusion)."""
        return self.weight_bytes + self.io_bytes

    @property
    def unfused_bytes(self) -> int:
        """Traffic without fusion: every intermediate written once and read once."""
        return self.min_bytes + 2 * self.activation_bytes

    def floor_seconds(self, peaks: dict, precision: str) -> float:
        """max(compute time at peak, minimum traffic at peak bandwidth); element size follows the precision."""
        flops_peak = peaks["fp16"] if precision == "fp16" else peaks["tf32"]
        scale = 0.5 if precision == "fp16" else 1.0
        return max(self.conv_flops / flops_peak, self.min_bytes * scale / peaks["bandwidth"])


def _shapes_by_running(model, input_name: str, shape: tuple[int, ...]) -> dict[str, list[int]]:
    """Shape of every tensor the graph computes, from one ONNX Runtime run on zeros with every node output exposed."""
    import onnx
    import onnxruntime  # lazy: heavy (~0.5 s), and only a session needs it

    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {o.name for o in exposed.graph.output}
    for node in exposed.graph.node:
        for name in node.output:
            if name and name not in present:
                exposed.graph.output.append(onnx.ValueInfoProto(name=name))
                present.add(name)
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnxruntime.InferenceSession(exposed.SerializeToString(), options, providers=["CPUExecutionProvider"])
    results = session.run(None, {input_name: np.zeros(shape, np.float32)})
    shapes = {output.name: list(result.shape) for output, result in zip(session.get_outputs(), results)}
    shapes[input_name] = list(shape)
    return shapes


def model_cost(onnx_path: Path, input_shape: tuple[int, ...]) -> ModelCost:
    """Cost of one forward pass at `input_shape`.

    Shapes come from running the model once at batch 1 (first axis) on ONNX Runtime CPU with every intermediate
    exposed; FLOPs and activation bytes are then scaled by the batch, which holds for per-sample models.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    first = next(v for v in graph.input if v.name not in initializers)
    if len(first.type.tensor_type.shape.dim) != len(input_shape):
        raise ValueError(f"input {first.name!r} has rank {len(first.type.tensor_type.shape.dim)}, shape {input_shape} given")
    batch = int(input_shape[0])
    shapes = _shapes_by_running(model, first.name, (1, *input_shape[1:]))
    weight_shapes = {name: list(init.dims) for name, init in initializers.items()}
    weight_bytes = sum(numpy_helper.to_array(init).nbytes for init in initializers.values())

    flops, counted, unsized = 0.0, 0, 0
    for node in graph.node:
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        weight = weight_shapes.get(node.input[1]) or shapes.get(node.input[1])
        measured = shapes.get(node.output[0] if node.op_type == "Conv" else node.input[0])
        if not measured or not weight:
            unsized += 1
            continue
        # Conv: every output element is a dot product over (Cin/group) x kernel; ConvTranspose: every input element
        # scatters into (Cout/group) x kernel outputs. Both read weight[1:] as that per-element fan.
        flops += 2.0 * np.prod(measured, dtype=np.float64) * np.prod(weight[1:], dtype=np.float64)
        counted += 1

    def nbytes(name: str) -> int:
        dims = shapes.get(name)
        return int(np.prod(dims, dtype=np.int64)) * 4 if dims else 0

    outputs = {o.name for o in graph.output}
    io = batch * (nbytes(first.name) + sum(nbytes(name) for name in outputs))
    intermediate = {name for node in graph.node for name in node.output if name and name not in outputs}
    activations = batch * sum(nbytes(name) for name in intermediate)
    return ModelCost(tuple(int(s) for s in input_shape), flops * batch, counted, unsized, int(weight_bytes), io, activations)
