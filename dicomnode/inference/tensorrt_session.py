"""TensorRT backend: a deserialised engine, one execution context and stream, buffers kept at the largest shape seen.

Written against the TensorRT 10 Python API (set_input_shape / set_tensor_address / execute_async_v3) and
cuda-python for memory. Every call must come from the device's worker thread (see worker.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dicomnode.inference.cuda_memory import CudaStream, DeviceBuffer, PinnedBuffer
from dicomnode.inference.shapes import Profile


class EngineLoadError(RuntimeError):
    """The cached engine does not deserialise here (another TensorRT, GPU or a damaged file)."""


class TensorRTSession:
    """Runs one TensorRT engine; `accepts(shape)` says whether an input shape lies inside its profile."""

    backend = "tensorrt"

    def __init__(self, engine_path: Path, profile: Profile, device_id: int = 0, precision: str = "fp16"):
        import tensorrt as trt  # optional backend, absent on CPU-only hosts

        self._trt = trt
        self.profile = profile
        self.precision = precision
        self.device = f"cuda:{device_id}"
        self._stream = CudaStream(device_id)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self._engine is None:
            self._stream.close()
            raise EngineLoadError(f"{engine_path.name} does not deserialise with TensorRT {trt.__version__}")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if self._inputs != [profile.input_name] or not self._outputs:
            raise EngineLoadError(f"{engine_path.name}: inputs {self._inputs}, outputs {self._outputs}; "
                                  f"expected one input {profile.input_name!r} and at least one output")
        self._dtypes = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in names}
        self._context = self._engine.create_execution_context()
        self._device_buffers = {n: DeviceBuffer() for n in names}
        self._host_in = PinnedBuffer()
        self._host_out = PinnedBuffer()

    @property
    def description(self) -> str:
        return f"tensorrt[{self.device},{self.precision}]"

    def accepts(self, shape: tuple[int, ...]) -> bool:
        return self.profile.accepts(tuple(shape))

    def run(self, inputs: np.ndarray) -> np.ndarray:
        if not self.accepts(inputs.shape):
            raise ValueError(f"input shape {inputs.shape} is outside the engine's profile "
                             f"{list(self.profile.min)}..{list(self.profile.max)}")
        name = self._inputs[0]
        if not self._context.set_input_shape(name, tuple(int(s) for s in inputs.shape)):
            raise ValueError(f"TensorRT refused input shape {inputs.shape}")
        host_in = self._host_in.view(inputs.shape, self._dtypes[name])
        host_in[...] = inputs
        self._stream.to_device(self._device_buffers[name].reserve(host_in.nbytes), host_in)
        self._context.set_tensor_address(name, self._device_buffers[name].pointer)
        shapes = {}
        for output in self._outputs:
            shape = tuple(int(s) for s in self._context.get_tensor_shape(output))
            if any(s < 0 for s in shape):
                raise RuntimeError(f"TensorRT could not infer the shape of output {output!r}: {shape}")
            shapes[output] = shape
            nbytes = int(np.prod(shape)) * self._dtypes[output].itemsize
            self._context.set_tensor_address(output, self._device_buffers[output].reserve(max(nbytes, 1)))
        if not self._context.execute_async_v3(self._stream.handle):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        first = self._outputs[0]
        host_out = self._host_out.view(shapes[first], self._dtypes[first])
        self._stream.to_host(host_out, self._device_buffers[first].pointer)
        self._stream.synchronize()
        return np.array(host_out, dtype=np.float32, copy=True)

    def close(self) -> None:
        for buffer in self._device_buffers.values():
            buffer.free()
        self._host_in.free()
        self._host_out.free()
        self._context = None
        self._engine = None
        self._stream.close()
