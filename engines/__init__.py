"""Model zoo: torch definitions, training, ONNX export, TensorRT build, and the shipped ONNX models + cards.

Importing this package (or engines.models_dir) never imports torch; the training modules do.
"""
from pathlib import Path


def models_dir() -> Path:
    """Folder of the shipped ONNX models and their cards."""
    return Path(__file__).resolve().parent / "models"
