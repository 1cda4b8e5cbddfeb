"""ONNX export of the LGE U-Net: torch parity on fresh random inputs, dynamic axes, and the shipped model + card."""
from __future__ import annotations

import json

import numpy as np
import pytest

from engines import models_dir

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

pytestmark = pytest.mark.torch

SHIPPED = models_dir() / "lge_unet.onnx"
CARD = models_dir() / "lge_unet.json"


def _randomised_model(seed: int):
    from engines.lge.model import LGEUNet

    torch.manual_seed(seed)
    model = LGEUNet(base_channels=8)
    with torch.no_grad():  # norm parameters away from their 1/0 defaults so every weight is exercised
        for name, parameter in model.named_parameters():
            if "weight" in name and parameter.ndim == 1:
                parameter.uniform_(0.5, 1.5)
            elif parameter.ndim == 1:
                parameter.uniform_(-0.2, 0.2)
    return model.eval()


def test_export_parity_on_fresh_random_inputs(tmp_path):
    from engines.lge.export import export_onnx, parity

    torch.set_num_threads(1)
    model = _randomised_model(seed=7)
    path = tmp_path / "lge.onnx"
    export_onnx(model, path)
    # odd and even depths, batch 1 and 2, crop and localisation sizes
    worst = parity(model, path, shapes=((1, 1, 5, 96, 96), (2, 1, 8, 96, 96), (1, 1, 11, 160, 160)), seed=123)
    assert worst <= 1e-4


def test_shipped_model_signature_card_and_parity():
    from engines.lge.export import parity, torch_model_from_onnx

    torch.set_num_threads(1)
    assert SHIPPED.stat().st_size < 20e6
    graph = onnx.load(str(SHIPPED))
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
    dims = [d.dim_param or d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 1, "depth", "rows", "cols"]
    card = json.loads(CARD.read_text())
    for key in ("name", "algorithm_name", "version", "manufacturer", "description", "input", "output", "training",
                "licence", "metrics", "intended_use"):
        assert key in card, key
    assert card["manufacturer"] == "dicomnode project" and "CC BY-NC-SA 4.0" in card["licence"]
    assert card["output"]["class_names"] == ["background", "lv_blood_pool", "healthy_myocardium", "scar", "mvo"]
    assert card["input"]["crop_size"] % card["input"]["spatial_multiple"] == 0
    model = torch_model_from_onnx(SHIPPED, card["architecture"])
    assert parity(model, SHIPPED, shapes=((1, 1, 7, 96, 96), (2, 1, 6, 96, 96)), seed=99) <= 1e-4


def test_shipped_model_segments_a_real_case_plausibly(datasets):
    from PIL import Image

    from dicomnode.analysis.lge import LGEInputSpec, segment_stack

    session = ort.InferenceSession(str(SHIPPED), providers=["CPUExecutionProvider"])
    files = sorted((datasets / "emidec-lge-png" / "val").glob("Case_N006_slice*.png"))
    image = np.stack([np.asarray(Image.open(f), dtype=np.float32) for f in files])
    truth = np.stack([np.asarray(Image.open(str(f).replace("/val/", "/valannot/"))) for f in files])
    spec = LGEInputSpec.from_card(json.loads(CARD.read_text()))
    labels = segment_stack(image, (1.5, 1.5), lambda x: session.run(None, {"image": x})[0], spec).labels
    predicted_myo, true_myo = np.isin(labels, [2, 3, 4]), np.isin(truth, [2, 3, 4])
    assert 2 * (predicted_myo & true_myo).sum() / (predicted_myo.sum() + true_myo.sum()) > 0.7
