"""Reusable CUDA buffers (device and pinned host) and one stream, through cuda-python's runtime bindings."""
from __future__ import annotations

import ctypes

import numpy as np

from dicomnode.inference.probe import cudart


class CudaError(RuntimeError):
    """A CUDA runtime call failed."""


def _check(result, what: str):
    rt = cudart()
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    if err != rt.cudaError_t.cudaSuccess:
        _, name = rt.cudaGetErrorName(err)
        raise CudaError(f"{what} failed: {name.decode() if isinstance(name, bytes) else name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def set_device(device_id: int) -> None:
    """Make `device_id` current for this thread (TensorRT builds and runs on the current device)."""
    _check(cudart().cudaSetDevice(device_id), f"cudaSetDevice({device_id})")


class DeviceBuffer:
    """Device memory that only grows: reserve(n) reallocates when n exceeds what it holds, else reuses it."""

    def __init__(self):
        self.pointer = 0
        self.capacity = 0

    def reserve(self, nbytes: int) -> int:
        if nbytes > self.capacity:
            self.free()
            self.pointer = int(_check(cudart().cudaMalloc(nbytes), f"cudaMalloc({nbytes})"))
            self.capacity = nbytes
        return self.pointer

    def free(self) -> None:
        if self.pointer:
            _check(cudart().cudaFree(self.pointer), "cudaFree")
        self.pointer, self.capacity = 0, 0


class PinnedBuffer:
    """Page-locked host memory that only grows, viewed as numpy arrays for fast asynchronous copies."""

    def __init__(self):
        self.pointer = 0
        self.capacity = 0

    def view(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        if nbytes > self.capacity:
            self.free()
            self.pointer = int(_check(cudart().cudaMallocHost(nbytes), f"cudaMallocHost({nbytes})"))
            self.capacity = nbytes
        raw = (ctypes.c_uint8 * nbytes).from_address(self.pointer)
        return np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape))).reshape(shape)

    def free(self) -> None:
        if self.pointer:
            _check(cudart().cudaFreeHost(self.pointer), "cudaFreeHost")
        self.pointer, self.capacity = 0, 0


class CudaStream:
    """One CUDA stream on one device, with the host<->device copies the TensorRT backend needs."""

    def __init__(self, device_id: int):
        rt = cudart()
        _check(rt.cudaSetDevice(device_id), f"cudaSetDevice({device_id})")
        self.device_id = device_id
        self.stream = _check(rt.cudaStreamCreate(), "cudaStreamCreate")

    @property
    def handle(self) -> int:
        return int(self.stream)

    def to_device(self, pointer: int, host: np.ndarray) -> None:
        rt = cudart()
        _check(rt.cudaMemcpyAsync(pointer, host.ctypes.data, host.nbytes,
                                  rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream), "cudaMemcpyAsync H2D")

    def to_host(self, host: np.ndarray, pointer: int) -> None:
        rt = cudart()
        _check(rt.cudaMemcpyAsync(host.ctypes.data, pointer, host.nbytes,
                                  rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream), "cudaMemcpyAsync D2H")

    def synchronize(self) -> None:
        _check(cudart().cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def close(self) -> None:
        if self.stream is not None:
            _check(cudart().cudaStreamDestroy(self.stream), "cudaStreamDestroy")
            self.stream = None


def device_memory_used(device_id: int) -> int | None:
    """Bytes in use on the device (total - free), or None without cuda-python."""
    try:
        rt = cudart()
    except ImportError:
        return None
    _check(rt.cudaSetDevice(device_id), "cudaSetDevice")
    free, total = _check(rt.cudaMemGetInfo(), "cudaMemGetInfo")
    return int(total) - int(free)
