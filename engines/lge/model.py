"""Anisotropic 3D U-Net for LGE short-axis stacks: in-plane convolutions early, 3D deeper, in-plane pooling only."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CLASS_NAMES = ("background", "lv_blood_pool", "healthy_myocardium", "scar", "mvo")


class AnisotropicConv(nn.Module):
    """A (1,3,3) or (3,3,3) convolution on (N, C, D, H, W), computed with Conv2d on slices.

    A (3,3,3) kernel is the exact equivalent of nn.Conv3d with depth zero padding: the three neighbouring
    slices are stacked along channels and convolved in-plane. Conv2d is ~7x faster than Conv3d on CPU.
    """

    def __init__(self, in_channels: int, out_channels: int, depth_kernel: int):
        super().__init__()
        if depth_kernel not in (1, 3):
            raise ValueError(f"depth_kernel must be 1 or 3, got {depth_kernel}")
        self.depth_kernel = depth_kernel
        self.conv = nn.Conv2d(in_channels * depth_kernel, out_channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.depth_kernel == 3:
            padded = F.pad(x, (0, 0, 0, 0, 1, 1))
            x = torch.cat([padded[:, :, :-2], padded[:, :, 1:-1], padded[:, :, 2:]], dim=1)
        n, c, d, h, w = x.shape
        slices = x.transpose(1, 2).reshape(n * d, c, h, w)
        out = self.conv(slices)
        return out.reshape(n, d, out.shape[1], h, w).transpose(1, 2)


class ConvBlock(nn.Sequential):
    """Two convolutions, each followed by instance norm (over the whole stack) and leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, in_plane_only: bool):
        depth_kernel = 1 if in_plane_only else 3
        layers: list[nn.Module] = []
        for index in range(2):
            layers += [
                AnisotropicConv(in_channels if index == 0 else out_channels, out_channels, depth_kernel),
                nn.InstanceNorm3d(out_channels, affine=True),
                nn.LeakyReLU(0.01, inplace=True),
            ]
        super().__init__(*layers)


class LGEUNet(nn.Module):
    """Input (N, 1, D, H, W) float32 with H and W divisible by 2**(levels-1); output logits (N, classes, D, H, W).

    Depth is never pooled, so any depth >= 1 works; levels < `in_plane_levels` use (1,3,3) kernels, deeper
    levels (3,3,3).
    """

    def __init__(self, base_channels: int = 12, levels: int = 4, in_plane_levels: int = 2, classes: int = 5):
        super().__init__()
        if base_channels < 1 or levels < 2 or classes < 2 or not 0 <= in_plane_levels <= levels:
            raise ValueError(
                f"need base_channels >= 1, levels >= 2, classes >= 2, 0 <= in_plane_levels <= levels; "
                f"got {base_channels}, {levels}, {classes}, {in_plane_levels}"
            )
        self.levels = levels
        self.config = {"base_channels": base_channels, "levels": levels, "in_plane_levels": in_plane_levels, "classes": classes}
        widths = [base_channels * 2**level for level in range(levels)]
        self.encoders = nn.ModuleList()
        in_channels = 1
        for level, width in enumerate(widths):
            self.encoders.append(ConvBlock(in_channels, width, in_plane_only=level < in_plane_levels))
            in_channels = width
        self.pool = nn.MaxPool3d((1, 2, 2))
        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in reversed(range(levels - 1)):
            self.upsamplers.append(nn.ConvTranspose3d(widths[level + 1], widths[level], (1, 2, 2), stride=(1, 2, 2)))
            self.decoders.append(ConvBlock(2 * widths[level], widths[level], in_plane_only=level < in_plane_levels))
        self.head = nn.Conv3d(widths[0], classes, 1)

    @property
    def spatial_multiple(self) -> int:
        return 2 ** (self.levels - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, encoder in enumerate(self.encoders):
            x = encoder(x)
            if level < self.levels - 1:
                skips.append(x)
                x = self.pool(x)
        for upsampler, decoder in zip(self.upsamplers, self.decoders):
            x = upsampler(x)
            x = decoder(torch.cat([x, skips.pop()], dim=1))
        return self.head(x)
