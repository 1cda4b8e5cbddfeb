"""A CPU stand-in for the slice of the TensorRT 10 and cuda-python APIs the backend uses, to run its code paths here.

It "builds" only the pointwise test model (Conv 1x1 + Relu), keeps "device" memory in host ctypes buffers, and
executes with numpy. It checks call order the way TensorRT does (shapes set before execution, addresses bound),
so the backend's logic is exercised; it says nothing about real TensorRT numerics or speed.
"""
from __future__ import annotations

import ctypes
import enum
import json
import types

import numpy as np

__version__ = "10.99.0-fake"
builds: list[dict] = []  # every build_serialized_network call: {"fp16": bool, "profile": ...}
fail_fp16 = False  # make FP16 builds fail, to test the FP32 fallback


class Logger:
    WARNING = 2

    def __init__(self, severity=2):
        self.severity = severity


class NetworkDefinitionCreationFlag(enum.IntEnum):
    EXPLICIT_BATCH = 0


class MemoryPoolType(enum.Enum):
    WORKSPACE = 0


class BuilderFlag(enum.Enum):
    FP16 = 0
    TF32 = 1


class TensorIOMode(enum.Enum):
    INPUT = 1
    OUTPUT = 2


class DataType(enum.Enum):
    FLOAT = 0


def nptype(dtype):
    assert dtype is DataType.FLOAT
    return np.float32


class IProgressMonitor:
    def __init__(self):
        self._initialised = True


class _Tensor:
    def __init__(self, name):
        self.name = name


class _Network:
    def __init__(self):
        self.inputs: list[_Tensor] = []
        self.weights = None

    @property
    def num_inputs(self):
        return len(self.inputs)

    def get_input(self, index):
        return self.inputs[index]


class OnnxParser:
    def __init__(self, network, logger):
        self.network = network
        self.errors = []

    @property
    def num_errors(self):
        return len(self.errors)

    def get_error(self, index):
        return self.errors[index]

    def parse_from_file(self, path):
        import onnx
        from onnx import numpy_helper

        model = onnx.load(path)
        ops = [node.op_type for node in model.graph.node]
        if ops != ["Conv", "Relu"]:
            self.errors.append(f"fake TensorRT parses only Conv+Relu, got {ops}")
            return False
        arrays = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
        conv = model.graph.node[0]
        self.network.inputs = [_Tensor(model.graph.input[0].name)]
        self.network.output_name = model.graph.output[0].name
        self.network.weights = (arrays[conv.input[1]].reshape(-1).tolist(), arrays[conv.input[2]].tolist())
        return True


class _Profile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, low, opt, high):
        self.shapes[name] = [list(low), list(opt), list(high)]


class _HostMemory(bytes):
    pass


class _TimingCache:
    def __init__(self, data: bytes):
        self.entries = int(data.decode() or 0)

    def serialize(self):
        return _HostMemory(str(self.entries + 1).encode())


class _Config:
    def __init__(self):
        self.flags = {BuilderFlag.TF32}  # TensorRT enables TF32 by default
        self.profiles = []
        self.timing_cache = None
        self.progress_monitor = None
        self.pool = {}

    def set_memory_pool_limit(self, pool, size):
        self.pool[pool] = size

    def set_flag(self, flag):
        self.flags.add(flag)

    def clear_flag(self, flag):
        self.flags.discard(flag)

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, data):
        return _TimingCache(bytes(data))

    def set_timing_cache(self, cache, ignore_mismatch):
        self.timing_cache = cache
        return True

    def get_timing_cache(self):
        return self.timing_cache


class Builder:
    platform_has_fast_fp16 = True

    def __init__(self, logger):
        self.logger = logger

    def create_network(self, flags=0):
        return _Network()

    def create_builder_config(self):
        return _Config()

    def create_optimization_profile(self):
        return _Profile()

    def build_serialized_network(self, network, config):
        fp16 = BuilderFlag.FP16 in config.flags
        assert config.timing_cache is not None, "a timing cache must be set before building"
        assert len(config.profiles) == 1
        builds.append({"fp16": fp16, "tf32": BuilderFlag.TF32 in config.flags, "profile": config.profiles[0].shapes})
        monitor = config.progress_monitor
        if monitor is not None:
            assert getattr(monitor, "_initialised", False), "IProgressMonitor.__init__ was not called"
            monitor.phase_start("Building engine", None, 2)
            monitor.phase_start("Tactic selection", "Building engine", 3)
            for step in range(3):
                monitor.step_complete("Tactic selection", step)
            monitor.phase_finish("Tactic selection")
            monitor.step_complete("Building engine", 0)
            monitor.phase_finish("Building engine")
        if fp16 and fail_fp16:
            return None
        name = network.inputs[0].name
        plan = {"magic": "fake-trt", "version": __version__, "input": name, "output": network.output_name,
                "weights": network.weights, "fp16": fp16, "profile": config.profiles[0].shapes[name]}
        return _HostMemory(json.dumps(plan).encode())


class Runtime:
    def __init__(self, logger):
        self.logger = logger

    def deserialize_cuda_engine(self, data):
        try:
            plan = json.loads(bytes(data))
        except ValueError:
            return None
        if plan.get("magic") != "fake-trt" or plan["version"] != __version__:
            return None
        return _Engine(plan)


class _Engine:
    def __init__(self, plan):
        self.plan = plan
        self.names = [plan["input"], plan["output"]]

    @property
    def num_io_tensors(self):
        return 2

    def get_tensor_name(self, index):
        return self.names[index]

    def get_tensor_mode(self, name):
        return TensorIOMode.INPUT if name == self.plan["input"] else TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name):
        return DataType.FLOAT

    def create_execution_context(self):
        return _Context(self.plan)


def _view(address, shape):
    count = int(np.prod(shape))
    return np.frombuffer((ctypes.c_float * count).from_address(address), np.float32).reshape(shape)


class _Context:
    def __init__(self, plan):
        self.plan = plan
        self.shape = None
        self.addresses = {}

    def set_input_shape(self, name, shape):
        low, _, high = self.plan["profile"]
        if name != self.plan["input"] or not all(lo <= s <= hi for lo, s, hi in zip(low, shape, high)):
            return False
        self.shape = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        if name == self.plan["input"]:
            return self.shape
        classes = len(self.plan["weights"][1])
        return (self.shape[0], classes, *self.shape[2:]) if self.shape else (-1,)

    def set_tensor_address(self, name, address):
        self.addresses[name] = int(address)
        return True

    def execute_async_v3(self, stream_handle):
        assert isinstance(stream_handle, int) and self.shape is not None
        x = _view(self.addresses[self.plan["input"]], self.shape)
        weight, bias = (np.asarray(v, np.float32) for v in self.plan["weights"])
        spatial = (1, -1) + (1,) * (x.ndim - 2)
        y = np.maximum(weight.reshape(spatial) * x + bias.reshape(spatial), 0)
        if self.plan["fp16"]:
            y = y.astype(np.float16).astype(np.float32)
        _view(self.addresses[self.plan["output"]], self.get_tensor_shape(self.plan["output"]))[...] = y
        return True


def make_cudart():
    """A fake `cuda.bindings.runtime`: memory is host memory, copies are memmove, streams are counters."""
    rt = types.SimpleNamespace()
    buffers: dict[int, ctypes.Array] = {}
    rt.buffers = buffers

    class cudaError_t(enum.IntEnum):
        cudaSuccess = 0
        cudaErrorInvalidValue = 1

    class cudaMemcpyKind(enum.IntEnum):
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    class cudaStream_t:
        def __init__(self, value):
            self.value = value

        def __int__(self):
            return self.value

    ok = cudaError_t.cudaSuccess
    rt.cudaError_t, rt.cudaMemcpyKind = cudaError_t, cudaMemcpyKind

    def allocate(size):
        block = (ctypes.c_uint8 * size)()
        buffers[ctypes.addressof(block)] = block
        return ok, ctypes.addressof(block)

    def free(pointer):
        return (ok,) if buffers.pop(pointer, None) is not None else (cudaError_t.cudaErrorInvalidValue,)

    def memcpy(dst, src, count, kind, stream):
        assert isinstance(kind, cudaMemcpyKind) and isinstance(stream, cudaStream_t)
        ctypes.memmove(dst, src, count)
        return (ok,)

    rt.cudaMalloc = rt.cudaMallocHost = allocate
    rt.cudaFree = rt.cudaFreeHost = free
    rt.cudaMemcpyAsync = memcpy
    rt.cudaSetDevice = lambda device: (ok,)
    rt.cudaStreamCreate = lambda: (ok, cudaStream_t(7))
    rt.cudaStreamDestroy = lambda stream: (ok,)
    rt.cudaStreamSynchronize = lambda stream: (ok,)
    rt.cudaGetErrorName = lambda err: (ok, err.name.encode())
    rt.cudaMemGetInfo = lambda: (ok, 70 << 30, 80 << 30)
    rt.cudaGetDeviceCount = lambda: (ok, 1)
    rt.cudaGetDeviceProperties = lambda index: (ok, types.SimpleNamespace(name=b"Fake H100\0", major=9, minor=0))
    return rt
