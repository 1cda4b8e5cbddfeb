"""LGE model: ONNX export parity of the fold-model ensemble, the marginal loss, and the shipped model + card."""
from __future__ import annotations

import json

import numpy as np
import pytest

from engines import models_dir

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("monai")

pytestmark = pytest.mark.torch

SHIPPED = models_dir() / "lge_unet.onnx"
CARD = models_dir() / "lge_unet.json"
CLASS_NAMES = ["background", "lv_blood_pool", "healthy_myocardium", "scar", "mvo", "rv_blood_pool"]


def _randomised_member(seed: int, context: int = 0):
    from engines.lge.model import LGESliceUNet

    torch.manual_seed(seed)
    model = LGESliceUNet(filters=(8, 16, 32, 64), context=context)
    with torch.no_grad():  # norm parameters away from their 1/0 defaults so every weight is exercised
        for name, parameter in model.named_parameters():
            if "weight" in name and parameter.ndim == 1:
                parameter.uniform_(0.5, 1.5)
            elif parameter.ndim == 1:
                parameter.uniform_(-0.2, 0.2)
    return model.eval()


def test_ensemble_export_parity_on_fresh_random_inputs(tmp_path):
    from engines.lge.export import export_onnx, parity
    from engines.lge.model import LGEEnsemble

    torch.set_num_threads(1)
    ensemble = LGEEnsemble.from_members([_randomised_member(7), _randomised_member(8)], flip_tta=True)
    path = tmp_path / "lge.onnx"
    export_onnx(ensemble, path, example_size=64)
    worst = parity(ensemble, path, shapes=((1, 1, 5, 64, 64), (2, 1, 2, 96, 96), (1, 1, 1, 128, 128)), seed=123)
    assert worst <= 1e-4
    # log of the mean of probabilities: its softmax sums to one and equals the members' averaged softmax
    x = torch.randn(1, 1, 3, 64, 64)
    with torch.no_grad():
        mean = torch.exp(ensemble(x))
        members = [torch.softmax(m(v), 1) for m in ensemble.members for v in (x,)]
    assert torch.allclose(mean.sum(1), torch.ones(1, 3, 64, 64), atol=1e-4)
    flipped = [torch.flip(torch.softmax(m(torch.flip(x, [4])), 1), [4]) for m in ensemble.members]
    assert torch.allclose(mean, torch.stack(members + flipped).mean(0), atol=1e-5)


def test_a_2p5d_ensemble_exports_with_its_neighbours_built_in_the_graph(tmp_path):
    """The stack signature stays (N,1,D,H,W) at any depth; ONNX Runtime builds each slice's neighbours as torch
    does, including a stack of one slice (its own neighbour) and the flipped view."""
    from engines.lge.export import export_onnx, model_card, parity
    from engines.lge.model import LGEEnsemble

    torch.set_num_threads(1)
    ensemble = LGEEnsemble.from_members([_randomised_member(7, context=1), _randomised_member(8, context=1)],
                                        flip_tta=True)
    path = tmp_path / "lge.onnx"
    export_onnx(ensemble, path, example_size=64)
    assert parity(ensemble, path, shapes=((1, 1, 5, 64, 64), (1, 1, 1, 64, 64), (2, 1, 2, 96, 96)), seed=4) <= 1e-4
    card = model_card(ensemble, [{"held_out": []}, {"held_out": []}], None, "test")
    assert card["input"]["slice_context"] == 1 and card["architecture"]["context"] == 1


def test_marginal_loss_merges_the_classes_a_centre_does_not_label():
    from dicomnode.labels import Label
    from engines.lge.losses import marginal_dice_ce, merge_matrix

    everything = frozenset(range(6))
    emidec = merge_matrix(everything - {int(Label.RV_BLOOD_POOL)}, 6)
    myops = merge_matrix(everything - {int(Label.MVO)}, 6)
    assert emidec[5, 0] == 1 and emidec[5, 5] == 0 and myops[4, 3] == 1 and myops[4, 4] == 0
    # a network predicting RV where EMIDEC says background is not penalised; where MyoPS says background it is
    logits = torch.full((1, 6, 4, 4), -10.0)
    logits[:, 5] = 10.0
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    available_emidec = torch.tensor([[True, True, True, True, True, False]])
    available_myops = torch.tensor([[True, True, True, True, False, True]])
    loss_emidec = marginal_dice_ce(logits, labels, emidec[None], available_emidec)
    loss_myops = marginal_dice_ce(logits, labels, myops[None], available_myops)
    assert loss_emidec < 0.1 < loss_myops


def test_the_dice_weight_scales_only_the_dice_term():
    from engines.lge.losses import deep_supervision_loss, marginal_dice_ce, merge_matrix

    torch.manual_seed(0)
    logits = torch.randn(2, 6, 8, 8)
    labels = torch.randint(0, 6, (2, 8, 8))
    merges = torch.stack([merge_matrix(frozenset(range(6)), 6)] * 2)
    available = torch.ones(2, 6, dtype=torch.bool)
    cross_entropy = torch.nn.functional.cross_entropy(logits, labels)
    assert torch.allclose(marginal_dice_ce(logits, labels, merges, available, dice_weight=0.0), cross_entropy,
                          atol=1e-5)
    full = marginal_dice_ce(logits, labels, merges, available)
    half = marginal_dice_ce(logits, labels, merges, available, dice_weight=0.5)
    assert torch.allclose(half, (full + cross_entropy) / 2, atol=1e-5) and full > half > cross_entropy
    heads = logits[:, None].expand(2, 3, 6, 8, 8)
    assert torch.allclose(deep_supervision_loss(heads, labels, merges, available, 0.0), cross_entropy, atol=1e-5)


def test_per_sample_dice_weighs_a_small_structure_as_much_as_a_large_one():
    """Batch Dice pools pixels, so a patch with a small myocardium barely moves it; per-sample Dice averages the
    patches, and a class a patch does not hold (scar here) is left to the cross-entropy there."""
    from engines.lge.losses import marginal_dice_ce, merge_matrix

    labels = torch.zeros(2, 32, 32, dtype=torch.long)
    labels[0, 2:30, 2:30] = 2  # a large myocardium, predicted right
    labels[1, 10:12, 10:12] = 2  # a small one, missed
    logits = torch.full((2, 6, 32, 32), -20.0)
    logits[:, 0] = 20.0
    logits[0, 2][labels[0] == 2] = 40.0
    merges = torch.stack([merge_matrix(frozenset(range(6)), 6)] * 2)
    available = torch.zeros(2, 6, dtype=torch.bool)
    available[:, :3] = True
    cross_entropy = marginal_dice_ce(logits, labels, merges, available, dice_weight=0.0)
    batch = marginal_dice_ce(logits, labels, merges, available) - cross_entropy
    sample = marginal_dice_ce(logits, labels, merges, available, per_sample=True) - cross_entropy
    assert batch < 0.01 and abs(sample - 0.5) < 0.01  # one patch of two is wholly wrong
    single = marginal_dice_ce(logits[:1], labels[:1], merges[:1], available[:1], per_sample=True)
    assert torch.allclose(single, marginal_dice_ce(logits[:1], labels[:1], merges[:1], available[:1], dice_weight=0.0),
                          atol=1e-4)  # its one class is right; the absent LV pool adds no Dice term


def test_shipped_model_signature_card_and_parity():
    from dicomnode.inference.parity import FP32_MAX_ABS, MIN_ARGMAX_AGREEMENT, compare
    from engines.lge.model import LGEEnsemble

    torch.set_num_threads(1)
    assert SHIPPED.stat().st_size < 50e6
    graph = onnx.load(str(SHIPPED))
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
    dims = [d.dim_param or d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 1, "depth", "rows", "cols"]
    card = json.loads(CARD.read_text())
    for key in ("name", "algorithm_name", "version", "manufacturer", "description", "input", "output", "training",
                "licence", "metrics", "intended_use", "torch"):
        assert key in card, key
    assert card["manufacturer"] == "dicomnode project" and "CC BY-NC-SA 4.0" in card["licence"]
    assert "MyoPS" in card["licence"] and "MyoPS" in card["training"]["data"]
    assert card["output"]["class_names"] == CLASS_NAMES
    assert card["input"]["crop_size"] % card["input"]["spatial_multiple"] == 0
    assert card["input"]["normalisation"]["method"] == "zscore"
    model = LGEEnsemble(**card["torch"]["kwargs"]).eval()
    model.load_state_dict(torch.load(models_dir() / card["torch"]["weights"], weights_only=True))
    # the runtime's FP32 rule (docs/inference.md): error relative to the output's scale; these outputs are log
    # probabilities, down to about -14 on random input, where float32 alone leaves ~1e-4
    x = np.random.default_rng(99).normal(0.0, 1.0, (1, 1, 3, 128, 128)).astype(np.float32)
    with torch.no_grad():
        reference = model.double()(torch.from_numpy(x).double()).numpy()
    candidate = ort.InferenceSession(str(SHIPPED), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    report = compare(reference, candidate)
    assert report.max_rel_error <= FP32_MAX_ABS and report.argmax_agreement >= MIN_ARGMAX_AGREEMENT, report


def test_shipped_model_segments_real_cases_of_both_centres(datasets):
    from PIL import Image

    from dicomnode.analysis.lge import LGEInputSpec, segment_stack
    from engines.lge.data import load_myops

    session = ort.InferenceSession(str(SHIPPED), providers=["CPUExecutionProvider"])
    spec = LGEInputSpec.from_card(json.loads(CARD.read_text()))
    run = lambda x: session.run(None, {"image": x})[0]  # noqa: E731
    files = sorted((datasets / "emidec-lge-png" / "val").glob("Case_N006_slice*.png"))
    image = np.stack([np.asarray(Image.open(f), dtype=np.float32) for f in files])
    truth = np.stack([np.asarray(Image.open(str(f).replace("/val/", "/valannot/"))) for f in files])
    myops = load_myops(datasets / "myops2020-lge")[0]
    for pixels, spacing, expected in ((image, (1.5, 1.5), truth), (myops.image, myops.spacing_rc, myops.labels)):
        labels = segment_stack(pixels, spacing, run, spec).labels
        assert labels.shape == pixels.shape and labels.max() <= 5
        predicted_myo, true_myo = np.isin(labels, [2, 3, 4]), np.isin(expected, [2, 3, 4])
        assert 2 * (predicted_myo & true_myo).sum() / (predicted_myo.sum() + true_myo.sum()) > 0.7
