"""Net2WiderNet widening of trained LGE U-Nets (engines.lge.widen): the wider network computes what the trained
one did, its copied channels are free to diverge, and a widened fold continues training like any finished fold."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

pytestmark = pytest.mark.torch

FILTERS = (4, 8, 16, 32)
WIDER = (6, 12, 20, 40)


def _trained_like():
    """A small U-Net with non-trivial weights (random, as a trained one would have)."""
    from engines.lge.model import LGESliceUNet

    torch.manual_seed(0)
    model = LGESliceUNet(FILTERS)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return model


def test_widening_without_noise_computes_the_same_logits_and_deep_supervision_heads():
    from engines.lge.widen import widen

    torch.set_num_threads(1)
    model = _trained_like().eval()
    images = torch.randn(3, 1, 32, 32)
    wider = widen(model, WIDER, seed=1, noise=0.0)
    assert wider.config["filters"] == list(WIDER)
    assert wider.net.input_block.conv1.conv.out_channels == WIDER[0]
    with torch.no_grad():
        assert torch.allclose(model.forward_slices(images), wider.forward_slices(images), atol=1e-4)
        model.train()
        wider_train = widen(model, WIDER, seed=1, noise=0.0).train()
        heads, wider_heads = model.forward_slices(images), wider_train.forward_slices(images)
    assert heads.shape == wider_heads.shape and heads.dim() == 5  # main head + 2 deep-supervision heads
    assert torch.allclose(heads, wider_heads, atol=1e-4)


def test_noise_breaks_the_symmetry_of_copied_channels_but_keeps_the_function_close():
    from engines.lge.widen import widen

    torch.set_num_threads(1)
    model = _trained_like().eval()
    images = torch.randn(2, 1, 32, 32)
    exact = widen(model, WIDER, seed=1, noise=0.0)
    noisy = widen(model, WIDER, seed=1, noise=0.01)
    # the copied output rows of the first convolution differ from the noiseless copy; the originals do not
    exact_w = exact.net.input_block.conv1.conv.weight
    noisy_w = noisy.net.input_block.conv1.conv.weight
    assert torch.equal(exact_w[:FILTERS[0]], noisy_w[:FILTERS[0]])
    assert not torch.equal(exact_w[FILTERS[0]:], noisy_w[FILTERS[0]:])
    with torch.no_grad():
        reference = torch.softmax(model.forward_slices(images), 1)
        assert (torch.softmax(noisy.forward_slices(images), 1) - reference).abs().max() < 0.2


@pytest.mark.parametrize("filters", [(4, 8, 16), (4, 6, 16, 32)])
def test_widening_refuses_other_depths_and_narrower_levels(filters):
    from engines.lge.widen import widen

    with pytest.raises(ValueError, match="can only widen"):
        widen(_trained_like(), filters)


def test_a_widened_fold_keeps_its_history_and_continues_training(tmp_path):
    from engines.lge.train import train_run
    from engines.lge.widen import widen_run
    from tests.engines.test_lge_train import _cases

    torch.set_num_threads(1)
    source = tmp_path / "narrow"
    common = dict(seed=3, device=torch.device("cpu"), log=lambda _: None, checkpoint_every=1, patch_size=32,
                  batch_size=2)
    train_run(_cases(), source / "fold0", 2, filters=FILTERS, metadata={"fold": 0, "filters": list(FILTERS)},
              **common)
    (source / "folds.json").write_text('{"folds": [["case0"]]}')
    written = widen_run(source, tmp_path / "wide", WIDER, folds=[0], seed=5)
    assert written == [tmp_path / "wide" / "fold0" / "model.pt"]
    assert (tmp_path / "wide" / "folds.json").is_file()
    widened = torch.load(written[0], weights_only=True)
    assert widened["config"]["filters"] == list(WIDER) and widened["metadata"]["filters"] == list(WIDER)
    assert widened["metadata"]["steps"] == 2
    assert "widened at step 2" in widened["metadata"]["history"]
    messages: list[str] = []
    common["log"] = messages.append
    train_run(_cases(), tmp_path / "wide" / "fold0", 3, filters=WIDER, metadata={"fold": 0}, **common)
    assert any("continued from model.pt at step 2/3" in m for m in messages)
    continued = torch.load(written[0], weights_only=True)
    assert continued["metadata"]["steps"] == 3 and "widened at step 2" in continued["metadata"]["history"]
    name = "net.input_block.conv1.conv.weight"
    assert not torch.equal(widened["state_dict"][name], continued["state_dict"][name])


def test_widening_a_fold_without_a_model_is_refused(tmp_path, capsys):
    from engines.lge.widen import main

    (tmp_path / "fold0").mkdir()
    with pytest.raises(SystemExit):
        main(["--source", str(tmp_path), "--out", str(tmp_path / "out"), "--filters", "8,16,32,64"])
    assert "model.pt" in capsys.readouterr().err
