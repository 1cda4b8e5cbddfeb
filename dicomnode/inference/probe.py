"""What this machine offers for inference (GPUs, TensorRT, ONNX Runtime providers, torch) without importing torch."""
from __future__ import annotations

import functools
import importlib.util
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

BACKENDS = ("tensorrt", "onnxruntime", "torch")


@dataclass(frozen=True)
class GPU:
    """One CUDA device as the driver reports it."""

    index: int
    name: str
    compute_capability: str  # "9.0"

    @property
    def sm(self) -> str:
        """Compute capability as TensorRT and nvcc spell it: "sm90"."""
        return "sm" + self.compute_capability.replace(".", "")


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def cudart():
    """The CUDA runtime bindings of cuda-python (new `cuda.bindings.runtime`, else the older `cuda.cudart`)."""
    try:
        from cuda.bindings import runtime as module  # optional: CUDA Python is absent on CPU-only hosts
    except ImportError:
        try:
            from cuda import cudart as module  # optional: the older cuda-python layout
        except ImportError as exc:
            raise ImportError(
                "cuda-python is not installed; the TensorRT backend needs it for device memory "
                "(pip install 'dicomnode[tensorrt]')"
            ) from exc
    return module


def _decode(value) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).split(b"\0", 1)[0].decode("utf-8", "replace")
    return str(value)


def _gpus_from_cudart() -> list[GPU] | None:
    try:
        rt = cudart()
    except ImportError:
        return None
    err, count = rt.cudaGetDeviceCount()
    if err != rt.cudaError_t.cudaSuccess:
        return []
    found = []
    for index in range(count):
        err, props = rt.cudaGetDeviceProperties(index)
        if err != rt.cudaError_t.cudaSuccess:
            continue
        found.append(GPU(index, _decode(props.name), f"{props.major}.{props.minor}"))
    return found


def _gpus_from_nvidia_smi() -> list[GPU] | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index,name,compute_cap", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    found = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[0].isdigit():
            found.append(GPU(int(parts[0]), parts[1], parts[2]))
    return found


@functools.lru_cache(maxsize=1)
def gpus() -> tuple[GPU, ...]:
    """CUDA devices, via cuda-python when installed, else nvidia-smi; empty on a machine without an NVIDIA GPU."""
    for source in (_gpus_from_cudart, _gpus_from_nvidia_smi):
        found = source()
        if found is not None:
            return tuple(found)
    if Path("/proc/driver/nvidia/gpus").is_dir() and any(Path("/proc/driver/nvidia/gpus").iterdir()):
        # a driver without cuda-python or nvidia-smi: a GPU exists but its capability is unknown
        return (GPU(0, "NVIDIA GPU (unidentified)", "0.0"),)
    return ()


def gpu(device_id: int) -> GPU | None:
    for device in gpus():
        if device.index == device_id:
            return device
    return None


def tensorrt_version() -> str | None:
    """TensorRT's version when `tensorrt` imports, else None."""
    if not _module_exists("tensorrt"):
        return None
    try:
        import tensorrt  # optional: TensorRT is absent on CPU-only hosts
    except Exception:  # the PyPI stub raises when the real wheel is missing
        return None
    return getattr(tensorrt, "__version__", None)


def cuda_python_installed() -> bool:
    try:
        cudart()
    except ImportError:
        return False
    return True


def onnxruntime_providers() -> list[str]:
    import onnxruntime  # lazy: heavy (~0.5 s), and only a session needs it

    return list(onnxruntime.get_available_providers())


def torch_installed() -> bool:
    return _module_exists("torch")


def torch_cuda_build() -> bool:
    """Whether the installed torch is a CUDA build, read from torch/version.py so that torch is not imported."""
    spec = importlib.util.find_spec("torch") if torch_installed() else None
    if spec is None or not spec.submodule_search_locations:
        return False
    version_file = Path(list(spec.submodule_search_locations)[0]) / "version.py"
    try:
        text = version_file.read_text(encoding="utf-8")
    except OSError:
        return False
    match = re.search(r"^cuda\s*(?::[^=]*)?=\s*(.+)$", text, re.MULTILINE)
    return bool(match) and match.group(1).strip() not in ("None", "''", '""')


def tensorrt_usable(device_id: int = 0) -> bool:
    return tensorrt_version() is not None and cuda_python_installed() and gpu(device_id) is not None


def auto_order(device_id: int = 0) -> list[tuple[str, str]]:
    """Backends `auto` tries, best first, as (backend, device): TensorRT, ORT CUDA, torch CUDA, ORT CPU.

    Torch is only a candidate on a GPU with a CUDA build of torch, so that `auto` never imports torch on CPU machines.
    """
    order: list[tuple[str, str]] = []
    has_gpu = gpu(device_id) is not None
    if has_gpu and tensorrt_usable(device_id):
        order.append(("tensorrt", "cuda"))
    providers = onnxruntime_providers()
    if has_gpu and "CUDAExecutionProvider" in providers:
        order.append(("onnxruntime", "cuda"))
    if has_gpu and torch_cuda_build():
        order.append(("torch", "cuda"))
    order.append(("onnxruntime", "cpu"))
    return order


def available_backends(device_id: int = 0) -> dict[str, str]:
    """backend -> a one-line description of what it would run on here (absent when it cannot run at all)."""
    found: dict[str, str] = {}
    device = gpu(device_id)
    version = tensorrt_version()
    if version and device is not None:
        if cuda_python_installed():
            found["tensorrt"] = f"TensorRT {version} on {device.name} ({device.sm})"
    providers = onnxruntime_providers()
    usable = [p for p in providers if p in ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")]
    if device is None:
        usable = ["CPUExecutionProvider"]
    found["onnxruntime"] = "ONNX Runtime " + ", ".join(usable)
    if torch_installed():
        found["torch"] = "PyTorch " + ("CUDA" if device is not None and torch_cuda_build() else "CPU")
    return found
