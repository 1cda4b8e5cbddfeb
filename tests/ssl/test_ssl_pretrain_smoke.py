"""Two-step pretraining smoke test on a synthetic cache, resume from its checkpoint, backbone into a CineUNet."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engines.ssl import pretrain  # noqa: E402
from engines.ssl.model import segmentation_model  # noqa: E402

pytestmark = pytest.mark.torch
torch.set_num_threads(1)


def synthetic_cache(path, count=6, size=112):
    rng = np.random.default_rng(0)
    lines = np.zeros((count, size, size), np.uint8)
    lines[:, size // 2] = 255
    np.savez(path, images=rng.normal(size=(count, size, size)).astype(np.float16), lines=lines,
             has_lines=np.array([True, False] * (count // 2)),
             position=np.array([0.0, np.nan, 0.5, 1.0, np.nan, 0.25], np.float32)[:count],
             sequence=np.array(["cine"] * count), subject=np.array([f"s{i}" for i in range(count)]))


def test_two_steps_then_resume_and_transfer(tmp_path):
    cache = tmp_path / "cache.npz"
    synthetic_cache(cache)
    out = tmp_path / "run"
    common = ["--cache", str(cache), "--out", str(out), "--batch", "2", "--widths", "4,8,16", "--keep-held-out"]
    first = pretrain.main(common + ["--steps", "2"])
    assert first["steps"] == 2 and first["weights"] == {"mim": 1.0, "lines": 1.0, "position": 1.0}
    second = pretrain.main(common + ["--steps", "3"])
    assert second["steps"] == 3
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    model = segmentation_model((4, 8, 16), state["backbone"])
    assert torch.equal(model.encoders[0][0].weight, state["backbone"]["encoders.0.0.weight"])
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 4, 32, 32)
    assert json.loads((out / "pretrain_summary.json").read_text())["steps"] == 3
    with pytest.raises(SystemExit):  # other multitask weights cannot resume this checkpoint
        pretrain.main(common + ["--steps", "4", "--w-lines", "0"])


def test_mask_hides_the_requested_share_of_patches():
    generator = torch.Generator().manual_seed(0)
    mask = pretrain.random_patch_mask(3, 96, generator)
    assert mask.shape == (3, 1, 96, 96)
    assert torch.allclose(mask.mean(dim=(1, 2, 3)), torch.full((3,), round(0.6 * 144) / 144))
