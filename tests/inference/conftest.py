"""Fixtures for the inference tests: folders of tiny models with their cards."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference_models import export_tiny_torch_model, write_pointwise_model  # noqa: E402


@pytest.fixture
def models_dir(tmp_path) -> Path:
    folder = tmp_path / "models"
    write_pointwise_model(folder, "tiny2d", spatial_rank=2)
    write_pointwise_model(folder, "tiny3d", spatial_rank=3, seed=1,
                          card={"version": "2", "max_batch": 2,
                                "tensorrt": {"profile": {"min": [1, 1, 4, 32, 32], "opt": [1, 1, 12, 64, 64],
                                                         "max": [2, 1, 24, 128, 128]}}})
    return folder


@pytest.fixture
def torch_models_dir(tmp_path):
    folder = tmp_path / "torch_models"
    module_dir = export_tiny_torch_model(folder)
    yield folder
    if str(module_dir) in sys.path:
        sys.path.remove(str(module_dir))
    sys.modules.pop("tiny_parity_net", None)
