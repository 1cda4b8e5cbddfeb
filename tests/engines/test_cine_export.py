"""Cine U-Net ONNX export: opset, dynamic batch, parity with torch (fresh export and the shipped model), model card."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from engines import models_dir  # noqa: E402
from engines.cine.export import OPSET, export_onnx, onnx_parity  # noqa: E402
from engines.cine.model import CineUNet, build_model  # noqa: E402

torch.set_num_threads(1)


def run_onnx(path, inputs):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: inputs})[0]


@pytest.mark.parametrize("in_channels", [1, 2])  # 2: slice + first-phase context
def test_fresh_export_has_opset_dynamic_batch_and_parity(tmp_path, in_channels):
    torch.manual_seed(0)
    model = CineUNet(in_channels, 4, (4, 8, 16))
    for module in model.modules():  # non-trivial batch-norm statistics, as after training
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    path = export_onnx(model, tmp_path / "cine.onnx", crop_size=64, in_channels=in_channels)
    graph = onnx.load(str(path))
    assert OPSET >= 17
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch axis
    assert graph.graph.input[0].type.tensor_type.shape.dim[1].dim_value == in_channels
    assert onnx_parity(model, path, 64, batch=3, seed=11, in_channels=in_channels) <= 1e-4
    for batch in (1, 5):
        inputs = np.random.default_rng(batch).standard_normal((batch, in_channels, 64, 64)).astype(np.float32)
        with torch.no_grad():
            expected = model.eval()(torch.from_numpy(inputs)).numpy()
        got = run_onnx(path, inputs)
        assert got.shape == (batch, 4, 64, 64)
        assert np.abs(got - expected).max() <= 1e-4


def test_shipped_model_matches_its_torch_weights_and_card():
    card = json.loads((models_dir() / "cine_unet.json").read_text())
    onnx_path = models_dir() / "cine_unet.onnx"
    assert onnx_path.stat().st_size < 20e6
    for key in ("name", "algorithm_name", "version", "manufacturer", "description", "input", "output", "training",
                "licence", "intended_use", "metrics"):
        assert key in card, key
    assert card["manufacturer"] == "dicomnode project"
    assert [c["node_label"] for c in card["output"]["channels"]] == [0, 1, 2, 5]
    assert "CC BY-NC-SA 4.0" in card["licence"] and "CC0" in card["licence"]
    crop = card["input"]["crop_size"]
    entry = card["torch"]
    model = build_model(**entry["kwargs"])
    model.load_state_dict(torch.load(models_dir() / entry["weights"], map_location="cpu", weights_only=True))
    model.eval()
    inputs = np.random.default_rng(2026).standard_normal((4, card["input"]["shape"][1], crop, crop)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(inputs)).numpy()
    assert np.abs(run_onnx(onnx_path, inputs) - expected).max() <= 1e-4


def test_card_logit_offsets_come_from_the_calibration_without_the_models_own_fold():
    from dicomnode.analysis.cine import CineModelSpec
    from engines.cine.export import model_card

    model = CineUNet(1, 4, (4, 8, 16))
    checkpoint = {"channel_labels": [0, 1, 2, 5], "crop_size": 64, "target_spacing_mm": 1.5, "widths": [4, 8, 16],
                  "state_dict": model.state_dict(), "train_subjects": ["patient001"], "test_subjects": ["patient002"],
                  "seed": 1, "iterations": 10, "batch": 2, "elapsed_s": 1.0, "device": "cpu",
                  "n_training_slices": 10}
    calibration = {"channel_labels": [0, 2, 5], "objective": "LVEF MAE / 3 + RVEF MAE / 6 + |LV mass bias| / 5 g",
                   "per_fold": {"fold1": {"offsets": [0.75, -0.25, 0.0]}}, "shipped": [1.0, -0.25, -0.25]}
    own_fold = CineModelSpec.from_card(model_card(checkpoint, 0.0, calibration=calibration, fold="fold1"))
    assert own_fold.logit_offsets == (0.75, 0.0, -0.25, 0.0)
    elsewhere = CineModelSpec.from_card(model_card(checkpoint, 0.0, calibration=calibration, fold="cine"))
    assert elsewhere.logit_offsets == (1.0, 0.0, -0.25, -0.25)
    assert CineModelSpec.from_card(model_card(checkpoint, 0.0)).logit_offsets == ()
    # the wider model the node runs at ED and ES only: its own name, algorithm and weights file, the same contract
    refine = model_card(checkpoint, 0.0, name="cine_unet_refine")
    assert refine["name"] == "cine_unet_refine" and refine["algorithm_name"] == "dicomnode-cine-unet-refine"
    assert refine["torch"]["weights"] == "cine_unet_refine.pt" and "ED and ES phases" in refine["description"]
    assert CineModelSpec.from_card(refine) == CineModelSpec.from_card(model_card(checkpoint, 0.0))
