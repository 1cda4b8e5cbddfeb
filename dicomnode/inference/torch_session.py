"""PyTorch backend: the model's own torch definition (named in its card) with the shipped state_dict.

Card key: card["torch"] = {"module": "engines.lge.model", "factory": "build_model", "kwargs": {...}, "weights": "lge_unet.pt"}
`factory(**kwargs)` returns an nn.Module whose forward(x) gives the ONNX model's first output; `weights` is a
`torch.save(model.state_dict())` file beside the card. torch is imported here only, when this backend is chosen.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from dicomnode.config import InferenceConfig


class TorchUnavailable(RuntimeError):
    """The model cannot run under torch here (torch missing, no card["torch"] entry, or no weights file)."""


def torch_entry(card: dict, card_dir: Path) -> tuple[str, str, dict, Path]:
    """(module, factory, kwargs, weights path) from card["torch"], refusing an incomplete entry with a clear message."""
    entry = card.get("torch")
    if entry is None:
        raise TorchUnavailable("the model card has no 'torch' entry (module, factory, weights), so torch cannot run it")
    missing = [key for key in ("module", "factory", "weights") if not entry.get(key)]
    if missing:
        raise TorchUnavailable(f"card torch entry lacks {missing}")
    kwargs = entry.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise TorchUnavailable("card torch.kwargs must be an object")
    weights = Path(entry["weights"])
    if not weights.is_absolute():
        weights = card_dir / weights
    return entry["module"], entry["factory"], kwargs, weights


def build_torch_module(card: dict, card_dir: Path):
    """The card's torch model in eval mode on the CPU, with its weights loaded strictly."""
    module_name, factory_name, kwargs, weights = torch_entry(card, card_dir)
    if not weights.is_file():
        raise TorchUnavailable(f"torch weights {weights} are missing")
    try:
        import torch  # optional backend: the running node never imports torch
    except ImportError as exc:
        raise TorchUnavailable("torch is not installed (pip install 'dicomnode[engines]')") from exc
    factory = getattr(importlib.import_module(module_name), factory_name)
    model = factory(**kwargs)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


class TorchSession:
    """Runs the torch definition eagerly; on CUDA it keeps pinned-host and device input buffers at the largest shape seen."""

    backend = "torch"

    def __init__(self, card: dict, card_dir: Path, config: InferenceConfig, device: str = "cpu"):
        import torch  # optional backend: the running node never imports torch

        self._torch = torch
        if config.intra_op_threads:
            torch.set_num_threads(config.intra_op_threads)
        if device == "cuda":
            if not torch.cuda.is_available():
                raise TorchUnavailable("torch has no CUDA device here")
            self.device = f"cuda:{config.device_id}"
            strict_fp32 = config.precision == "fp32"
            torch.backends.cudnn.allow_tf32 = not strict_fp32
            torch.backends.cuda.matmul.allow_tf32 = not strict_fp32
        else:
            self.device = "cpu"
        self._model = build_torch_module(card, card_dir).to(self.device)
        self._half = self.device != "cpu" and config.precision == "fp16"
        self._host: "torch.Tensor | None" = None
        self._dev: "torch.Tensor | None" = None

    @property
    def description(self) -> str:
        return f"torch[{self.device}{',fp16-autocast' if self._half else ''}]"

    def _staged(self, inputs: np.ndarray):
        torch = self._torch
        count = inputs.size
        if self._host is None or self._host.numel() < count:
            self._host = torch.empty(count, dtype=torch.float32, pin_memory=True)
            self._dev = torch.empty(count, dtype=torch.float32, device=self.device)
        host = self._host[:count].view(inputs.shape)
        host.numpy()[...] = inputs
        dev = self._dev[:count].view(inputs.shape)
        dev.copy_(host, non_blocking=True)
        return dev

    def run(self, inputs: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            if self.device == "cpu":
                output = self._model(torch.from_numpy(inputs))
            else:
                tensor = self._staged(inputs)
                with torch.autocast("cuda", dtype=torch.float16, enabled=self._half):
                    output = self._model(tensor)
            if isinstance(output, (tuple, list)):
                output = output[0]
            return output.float().cpu().numpy()

    def close(self) -> None:
        self._model = None
        self._host = self._dev = None
