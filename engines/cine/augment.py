"""Batch augmentation on the training canvas: random affine (+light elastic) crop, intensity, noise; torch, any device."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dicomnode.cmr.intensity import CLIP_PERCENTILE


def normalise_batch(crops: torch.Tensor) -> torch.Tensor:
    """Torch twin of dicomnode.cmr.intensity.normalise_slices for (B, K, H, W): every channel on its own."""
    flat = crops.flatten(2)
    high = torch.quantile(flat, CLIP_PERCENTILE / 100.0, dim=2, keepdim=True).clamp_min(1e-6)
    clipped = torch.minimum(flat.clamp_min(0.0), high)
    mean = clipped.mean(dim=2, keepdim=True)
    std = clipped.std(dim=2, unbiased=False, keepdim=True).clamp_min(1e-6)
    return ((clipped - mean) / std).view_as(crops)


def bits_to_channels(allowed: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(B, H, W) uint8 bitmask -> (B, C, H, W) float 0/1."""
    shifts = torch.arange(n_classes, device=allowed.device).view(1, -1, 1, 1)
    return ((allowed.long().unsqueeze(1) >> shifts) & 1).float()


def sample_grid(batch: int, crop: int, canvas: int, generator: torch.Generator, device, strong: bool = True,
                directions: torch.Tensor | None = None,
                window_deg: tuple[float, float] | None = None) -> torch.Tensor:
    """Sampling grid (B, crop, crop, 2) in the canvas' normalised coordinates: rotation, scale, flip, shift, elastic.

    With `window_deg` (low, high) a sample whose `directions` entry (B,) is finite (its LV-to-RV direction on the
    canvas, degrees as dicomnode.cmr.orientation.rv_direction_deg; NaN: none) is rotated so that its RV appears at a
    uniformly drawn direction inside the window, after its flip: the poses the node's anatomical turn hands the
    network (RV_DIRECTION_WINDOW_DEG widened by a margin) instead of any angle. The canvas is isotropic, so the
    rotation that does it is exact."""
    def uniform(low, high, *shape):
        return torch.rand(*shape, generator=generator) * (high - low) + low

    angle = uniform(0, 2 * math.pi, batch) if strong else torch.zeros(batch)
    scale = torch.exp(uniform(math.log(0.8), math.log(1.25), batch)) if strong else torch.ones(batch)
    flip = torch.where(torch.rand(batch, generator=generator) < 0.5, -1.0, 1.0) if strong else torch.ones(batch)
    shift = uniform(-20, 20, batch, 2) * 2.0 / canvas if strong else torch.zeros(batch, 2)
    if strong and window_deg is not None and directions is not None:
        wanted = torch.deg2rad(uniform(window_deg[0], window_deg[1], batch))
        source = torch.deg2rad(directions.float().cpu())
        # (x, y) with y down: the canvas direction (cos, -sin); the output shows R(-angle) of it, then the flip
        source_angle = torch.atan2(-torch.sin(source), torch.cos(source))
        shown_angle = torch.atan2(-torch.sin(wanted), torch.cos(wanted) * flip)
        planned = torch.isfinite(source)
        angle = torch.where(planned, source_angle - shown_angle, angle)
    extent = crop / canvas  # the crop covers this fraction of the canvas at scale 1
    cos, sin = torch.cos(angle) * extent * scale, torch.sin(angle) * extent * scale
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * flip, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin * flip, cos
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, (batch, 1, crop, crop), align_corners=False)
    if strong:
        coarse = torch.randn(batch, 2, 5, 5, generator=generator) * (2.0 / canvas) * 2.5  # ~2.5 px
        coarse *= (torch.rand(batch, 1, 1, 1, generator=generator) < 0.4)
        grid = grid + F.interpolate(coarse, size=(crop, crop), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    return grid.to(device)


def augment_batch(images: torch.Tensor, allowed: torch.Tensor, crop: int, n_classes: int, generator: torch.Generator,
                  strong: bool = True, directions: torch.Tensor | None = None,
                  window_deg: tuple[float, float] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Canvas images (B, S, S) or (B, K, S, S) raw + bitmasks (B, S, S) -> normalised crops (B, K, crop, crop) (K = 1
    for 3-D images), allowed (B, C, crop, crop).

    The K channels of a sample (a slice and its first-phase context) get the same spatial transform, gamma, bias
    field and noise level, then each channel is normalised on its own, as the node does. `directions` and
    `window_deg` restrict the rotation to the node's anatomical poses (sample_grid).
    """
    batch, canvas = images.shape[0], images.shape[-1]
    device = images.device
    grid = sample_grid(batch, crop, canvas, generator, device, strong, directions, window_deg)
    stacked = images.unsqueeze(1) if images.dim() == 3 else images
    crops = F.grid_sample(stacked, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    channels = F.grid_sample(bits_to_channels(allowed, n_classes), grid, mode="nearest", padding_mode="zeros",
                             align_corners=False)
    outside = channels.sum(dim=1, keepdim=True) == 0
    channels[:, :1][outside] = 1.0
    if strong:
        crops = crops.clamp_min(0.0)
        top = torch.quantile(crops.flatten(2), 0.995, dim=2).clamp_min(1e-6).view(batch, -1, 1, 1)
        unit = (crops / top).clamp(0, 1.5)
        gamma = torch.exp((torch.rand(batch, 1, 1, 1, generator=generator) * 2 - 1) * math.log(1.6)).to(device)
        unit = unit.clamp_min(1e-6) ** gamma
        bias = F.interpolate(torch.randn(batch, 1, 3, 3, generator=generator) * 0.15, size=(crop, crop), mode="bicubic",
                             align_corners=True).to(device)
        use_bias = (torch.rand(batch, 1, 1, 1, generator=generator) < 0.4).to(device)
        unit = unit * torch.exp(bias * use_bias)
        noise_sd = (torch.rand(batch, 1, 1, 1, generator=generator) * 0.06).to(device)
        unit = unit + torch.randn(unit.shape, generator=generator).to(device) * noise_sd
        crops = unit.clamp_min(0.0) * top
    return normalise_batch(crops), channels
