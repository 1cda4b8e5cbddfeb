"""Pretraining network: the cine U-Net's encoder (engines.cine.model.CineUNet) + light MIM/line decoder + position head."""
from __future__ import annotations

import torch
from torch import nn

from engines.cine.model import CineUNet, ConvBlock

#: backbone widths at CPU scale (the shipped cine model uses (12, 24, 48, 96, 192)); same class, same layer names
CPU_WIDTHS = (8, 16, 32, 64, 128)
DECODER_WIDTH = 16


class Backbone(nn.Module):
    """Exactly the encoder half of CineUNet: its `encoders` ModuleList and max pooling, returning every level."""

    def __init__(self, in_channels: int = 1, widths: tuple[int, ...] = CPU_WIDTHS):
        super().__init__()
        template = CineUNet(in_channels, 4, tuple(widths))
        self.widths = tuple(widths)
        self.encoders = template.encoders  # parameter names "encoders.N..." match CineUNet's
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for index, encoder in enumerate(self.encoders):
            x = encoder(x if index == 0 else self.pool(x))
            features.append(x)
        return features


class LightDecoder(nn.Module):
    """One 3x3 conv per level on (upsampled deeper + 1x1-projected skip), all at DECODER_WIDTH channels."""

    def __init__(self, widths: tuple[int, ...], width: int = DECODER_WIDTH, out_channels: int = 1):
        super().__init__()
        self.project = nn.ModuleList(nn.Conv2d(w, width, 1) for w in widths)
        self.mix = nn.ModuleList(nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
                                 for _ in widths[:-1])
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.head = nn.Conv2d(width, out_channels, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.project[-1](features[-1])
        for level in range(len(features) - 2, -1, -1):
            x = self.mix[level](self.up(x) + self.project[level](features[level]))
        return self.head(x)


class PretextNet(nn.Module):
    """Backbone + one light decoder with two outputs (MIM reconstruction, line-heatmap logits) + position head."""

    def __init__(self, widths: tuple[int, ...] = CPU_WIDTHS):
        super().__init__()
        self.backbone = Backbone(1, widths)
        self.decoder = LightDecoder(widths, out_channels=2)
        self.position = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(widths[-1], 32), nn.ReLU(inplace=True),
                                      nn.Linear(32, 1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x)
        dense = self.decoder(features)
        return {"reconstruction": dense[:, :1], "line_logits": dense[:, 1:],
                "position": torch.sigmoid(self.position(features[-1])).squeeze(1)}


def segmentation_model(widths: tuple[int, ...] = CPU_WIDTHS, backbone_state: dict | None = None) -> CineUNet:
    """A CineUNet (4 classes) with the pretrained encoder loaded when given (decoder starts from scratch)."""
    model = CineUNet(1, 4, tuple(widths))
    if backbone_state is not None:
        missing, unexpected = model.load_state_dict(backbone_state, strict=False)
        if unexpected or any(k.startswith("encoders.") for k in missing):
            raise ValueError(f"backbone does not fit CineUNet{tuple(widths)}: unexpected {unexpected[:3]}, "
                             f"missing encoder keys {[k for k in missing if k.startswith('encoders.')][:3]}")
    return model
