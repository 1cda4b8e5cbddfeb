"""Widen trained LGE U-Nets without starting over: Net2WiderNet (Chen, Goodfellow & Shlens, "Net2Net: accelerating
learning via knowledge transfer", ICLR 2016) for the DynUNet of `engines.lge.model`.

Every activation of the wider network holds the old channels first and then copies of randomly chosen old channels;
the convolution reading a copied channel divides that channel's weights by its number of copies, so the wider
network computes the same function (instance normalisation per channel and leaky ReLU commute with copying). A
little noise on the copies' incoming weights breaks their symmetry so training can make them differ.

    python -m engines.lge.widen --source engines/runs/lge6_cv --out engines/runs/lge7w_cv --filters 24,48,96,192,320
    python -m engines.lge.train --out engines/runs/lge7w_cv --filters 24,48,96,192,320 --patch-size 128 \\
        --only-folds 0 --steps 16000 --threads 1      # continues from the widened model.pt, fresh optimiser

The widened fold keeps its step count, held-out cases and history (plus a `widened at step N` entry), so the
training command continues it like any finished fold carried to a larger budget.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engines.lge.model import LGESliceUNet

NOISE = 0.01


class _Mapping:
    """Channel map of one activation: new channel j holds old channel `source[j]`, which has `copies[source[j]]`
    copies in all."""

    def __init__(self, old: int, new: int, rng: np.random.Generator | None):
        if new < old:
            raise ValueError(f"cannot narrow an activation from {old} to {new} channels")
        extra = rng.integers(0, old, new - old) if rng is not None else np.zeros(0, int)
        self.source = np.concatenate([np.arange(old), extra]).astype(np.int64)
        self.copies = np.bincount(self.source, minlength=old).astype(np.float64)
        self.old = old

    @classmethod
    def identity(cls, channels: int) -> "_Mapping":
        return cls(channels, channels, None)

    def concat(self, other: "_Mapping") -> "_Mapping":
        joined = _Mapping.identity(0)
        joined.source = np.concatenate([self.source, other.source + self.old])
        joined.copies = np.concatenate([self.copies, other.copies])
        joined.old = self.old + other.old
        return joined


def _widen_conv(old: nn.Module, new: nn.Module, inputs: _Mapping, outputs: _Mapping, rng: np.random.Generator,
                noise: float) -> None:
    """Copy `old` (Conv2d or ConvTranspose2d) into the wider `new`: rows (outputs) copied, columns (inputs) copied
    and divided by their copy counts; noise of `noise` x the weights' SD on the copied output rows."""
    weight = old.weight.detach().double()
    transposed = isinstance(old, nn.ConvTranspose2d)  # weight (in, out, kh, kw) instead of (out, in, kh, kw)
    if transposed:
        weight = weight.transpose(0, 1)
    weight = weight[torch.from_numpy(outputs.source)][:, torch.from_numpy(inputs.source)]
    weight = weight / torch.from_numpy(inputs.copies[inputs.source]).view(1, -1, 1, 1)
    copied = torch.from_numpy(np.arange(len(outputs.source)) >= outputs.old)
    if noise > 0 and copied.any():
        generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
        jitter = torch.randn(weight.shape, generator=generator, dtype=weight.dtype) * noise * weight.std()
        weight = weight + jitter * copied.view(-1, 1, 1, 1)
    if transposed:
        weight = weight.transpose(0, 1)
    if tuple(weight.shape) != tuple(new.weight.shape):
        raise ValueError(f"widened weight {tuple(weight.shape)} does not fit {tuple(new.weight.shape)}")
    with torch.no_grad():
        new.weight.copy_(weight.to(new.weight.dtype))
        if old.bias is not None:
            new.bias.copy_(old.bias.detach()[torch.from_numpy(outputs.source)])


def _block(old_block, new_block, inputs: _Mapping, rng, noise) -> _Mapping:
    """A UnetBasicBlock (conv1 -> norm -> act -> conv2 -> norm -> act); returns its output mapping."""
    middle = _Mapping(old_block.conv1.conv.out_channels, new_block.conv1.conv.out_channels, rng)
    _widen_conv(old_block.conv1.conv, new_block.conv1.conv, inputs, middle, rng, noise)
    out = _Mapping(old_block.conv2.conv.out_channels, new_block.conv2.conv.out_channels, rng)
    _widen_conv(old_block.conv2.conv, new_block.conv2.conv, middle, out, rng, noise)
    return out


def widen(model: LGESliceUNet, filters: tuple[int, ...], seed: int = 0, noise: float = NOISE) -> LGESliceUNet:
    """A wider copy of `model` (same depth, classes and deep-supervision heads; every level at least as wide).

    With noise 0 it computes the same logits as `model` up to float rounding (tested); the default noise changes
    them slightly. Raises ValueError where a level would narrow or the depth differs.
    """
    config = model.config
    filters = tuple(int(f) for f in filters)
    if len(filters) != len(config["filters"]) or any(n < o for n, o in zip(filters, config["filters"])):
        raise ValueError(f"can only widen every level of {config['filters']}, got {list(filters)}")
    rng = np.random.default_rng(seed)
    wider = LGESliceUNet(filters, config["classes"], config["deep_supervision_heads"])
    old, new = model.net, wider.net
    mapping = _block(old.input_block, new.input_block, _Mapping.identity(1), rng, noise)
    skips = [mapping]
    for old_down, new_down in zip(old.downsamples, new.downsamples):
        mapping = _block(old_down, new_down, mapping, rng, noise)
        skips.append(mapping)
    mapping = _block(old.bottleneck, new.bottleneck, mapping, rng, noise)
    decoder_outputs = []
    for index, (old_up, new_up) in enumerate(zip(old.upsamples, new.upsamples)):
        up = _Mapping(old_up.transp_conv.conv.out_channels, new_up.transp_conv.conv.out_channels, rng)
        _widen_conv(old_up.transp_conv.conv, new_up.transp_conv.conv, mapping, up, rng, noise)
        # DynUNet's up block concatenates (up-sampled, skip) in that order
        mapping = _block(old_up.conv_block, new_up.conv_block, up.concat(skips[-1 - index]), rng, noise)
        decoder_outputs.append(mapping)
    classes = _Mapping.identity(config["classes"])
    _widen_conv(old.output_block.conv.conv, new.output_block.conv.conv, decoder_outputs[-1], classes, rng, 0.0)
    for head, (old_head, new_head) in enumerate(zip(old.deep_supervision_heads, new.deep_supervision_heads)):
        # head h reads the decoder output h + 1 levels above full resolution
        _widen_conv(old_head.conv.conv, new_head.conv.conv, decoder_outputs[-2 - head], classes, rng, 0.0)
    return wider.eval() if not model.training else wider


def widen_run(source: Path, out: Path, filters: tuple[int, ...], folds: list[int] | None, seed: int,
              noise: float = NOISE) -> list[Path]:
    """Widen source/fold*/model.pt into out/fold*/model.pt (metadata kept, history extended, filters replaced);
    copies folds.json. Returns the written paths. Raises FileNotFoundError where a fold has no model.pt."""
    out.mkdir(parents=True, exist_ok=True)
    if (source / "folds.json").is_file():
        shutil.copy2(source / "folds.json", out / "folds.json")
    written = []
    fold_dirs = sorted(source.glob("fold*")) if folds is None else [source / f"fold{f}" for f in folds]
    for fold_dir in fold_dirs:
        checkpoint = torch.load(fold_dir / "model.pt", map_location="cpu", weights_only=True)
        config = checkpoint["config"]
        model = LGESliceUNet(tuple(config["filters"]), config["classes"], config["deep_supervision_heads"])
        model.load_state_dict(checkpoint["state_dict"])
        wider = widen(model.eval(), filters, seed + int(fold_dir.name.removeprefix("fold") or 0), noise)
        metadata = dict(checkpoint["metadata"])
        step = int(metadata["steps"])
        history = dict(metadata.get("history", {}))
        history[f"steps 0-{step}"] = {k: metadata.get(k) for k in ("device", "bf16_autocast", "patch_size",
                                                                    "batch_size", "filters")}
        history[f"widened at step {step}"] = (f"{list(config['filters'])} -> {list(filters)} (Net2WiderNet, "
                                              f"noise {noise}, from {fold_dir})")
        metadata.update({"history": history, "filters": list(filters)})
        target = out / fold_dir.name
        target.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": wider.state_dict(), "config": wider.config, "metadata": metadata},
                   target / "model.pt")
        written.append(target / "model.pt")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, required=True, help="run folder with fold*/model.pt")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--filters", required=True, help="comma-separated widths, one per level")
    parser.add_argument("--folds", default="", help="comma-separated fold indices (default: every fold)")
    parser.add_argument("--seed", type=int, default=20261202)
    parser.add_argument("--noise", type=float, default=NOISE)
    args = parser.parse_args(argv)
    folds = [int(f) for f in args.folds.split(",") if f] or None
    filters = tuple(int(f) for f in args.filters.split(","))
    try:
        written = widen_run(args.source, args.out, filters, folds, args.seed, args.noise)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    print(json.dumps([str(p) for p in written], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
