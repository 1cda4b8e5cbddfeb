"""Compact 2-D U-Net for short-axis cine: one normalised 1.5 mm slice in, 4-class logits out."""
from __future__ import annotations

import torch
from torch import nn


class ConvBlock(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
        )


class CineUNet(nn.Module):
    """U-Net with `len(widths) - 1` poolings; input (N, in_channels, H, W) with H, W divisible by 2**(len-1)."""

    def __init__(self, in_channels: int = 1, n_classes: int = 4, widths: tuple[int, ...] = (16, 32, 64, 128)):
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"widths needs at least two levels, got {widths}")
        self.widths = tuple(widths)
        self.encoders = nn.ModuleList()
        previous = in_channels
        for width in widths:
            self.encoders.append(ConvBlock(previous, width))
            previous = width
        self.pool = nn.MaxPool2d(2)
        self.upsamples = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for deeper, width in zip(widths[::-1][:-1], widths[::-1][1:]):
            self.upsamples.append(nn.ConvTranspose2d(deeper, width, 2, stride=2))
            self.decoders.append(ConvBlock(2 * width, width))
        self.head = nn.Conv2d(widths[0], n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for index, encoder in enumerate(self.encoders):
            x = encoder(x)
            if index < len(self.encoders) - 1:
                skips.append(x)
                x = self.pool(x)
        for upsample, decoder, skip in zip(self.upsamples, self.decoders, reversed(skips)):
            x = decoder(torch.cat([upsample(x), skip], dim=1))
        return self.head(x)


def build_model(in_channels: int = 1, n_classes: int = 4, widths=(12, 24, 48, 96, 192)) -> CineUNet:
    """Factory named in the model card's torch entry (dicomnode's torch backend calls it)."""
    return CineUNet(in_channels, n_classes, tuple(widths))
