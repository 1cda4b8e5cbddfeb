"""Training-time crop and augmentation of one LGE stack, imitating other scanners, positions and resolutions."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from dicomnode.analysis.lge import normalise_percentile

#: in-plane rotation range: SAX stacks are planned alike on every scanner (RV to the image left), so moderate
MAX_ROTATION = math.radians(30)


def crop_and_augment(
    image: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    crop_size: int,
    source_to_model_scale: float,
    augment: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A (1, D, crop, crop) normalised image and (D, crop, crop) int64 labels from one (D, H, W) uint8 case.

    The crop is centred on the label centroid with jitter; `source_to_model_scale` = model spacing / source
    spacing (1.5: 1.5 mm source pixels sampled at 2.25 mm).
    """
    depth, height, width = image.shape
    stack = torch.from_numpy(image.astype(np.float32) / 255.0)[:, None]  # (D, 1, H, W)
    label_stack = torch.from_numpy(labels.astype(np.float32))[:, None]
    ys, xs = np.nonzero(labels.max(axis=0))
    centre = np.array([ys.mean(), xs.mean()]) if ys.size else np.array([(height - 1) / 2, (width - 1) / 2])

    zoom, angle, shift, flip_x, flip_y = 1.0, 0.0, np.zeros(2), 1.0, 1.0
    slice_jitter = np.zeros((depth, 2))
    if augment:
        zoom = float(np.exp(rng.uniform(np.log(0.85), np.log(1.2))))
        angle = float(rng.uniform(-MAX_ROTATION, MAX_ROTATION))
        shift = rng.uniform(-14, 14, size=2)
        flip_x = -1.0 if rng.random() < 0.2 else 1.0
        flip_y = -1.0 if rng.random() < 0.2 else 1.0
        if rng.random() < 0.3:
            slice_jitter = rng.normal(0, 1.5, size=(depth, 2))  # breath-hold misregistration, source pixels
    half_extent = crop_size / 2 * source_to_model_scale * zoom  # source pixels covered by half the crop
    cos, sin = math.cos(angle), math.sin(angle)
    thetas = []
    for index in range(depth):
        cy, cx = centre + shift + slice_jitter[index]
        # normalised source coordinates (align_corners=False): (p + 0.5) / size * 2 - 1
        ty = (cy + 0.5) / height * 2 - 1
        tx = (cx + 0.5) / width * 2 - 1
        sx = half_extent / (width / 2)
        sy = half_extent / (height / 2)
        thetas.append([[cos * sx * flip_x, -sin * sx * flip_y, tx], [sin * sy * flip_x, cos * sy * flip_y, ty]])
    theta = torch.tensor(thetas, dtype=torch.float32)
    grid = F.affine_grid(theta, (depth, 1, crop_size, crop_size), align_corners=False)
    out = F.grid_sample(stack, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]
    out_labels = F.grid_sample(label_stack, grid, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0]

    if augment:
        out = _intensity_augment(out, rng)
        if rng.random() < 0.3:
            out, out_labels = out.flip(0), out_labels.flip(0)
    normalised = normalise_percentile(out.numpy())
    return torch.from_numpy(normalised)[None], out_labels.long()


def _intensity_augment(stack: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Gamma, smooth multiplicative bias field, blur (lower resolution), noise and contrast on (D, H, W) in [0, 1]."""
    depth, height, width = stack.shape
    stack = stack.clamp(min=0)
    if rng.random() < 0.4:
        stack = stack ** float(np.exp(rng.uniform(np.log(0.6), np.log(1.6))))
    if rng.random() < 0.3:
        coarse = torch.from_numpy(rng.normal(0, 0.25, size=(1, 1, 4, 4)).astype(np.float32))
        field = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True)[0, 0]
        stack = stack * torch.exp(field)[None]
    if rng.random() < 0.2:
        factor = float(rng.uniform(1.3, 2.2))
        low = F.interpolate(stack[:, None], scale_factor=1 / factor, mode="bilinear", align_corners=False, antialias=True)
        stack = F.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    if rng.random() < 0.3:
        sigma = float(rng.uniform(0.0, 0.06)) * float(stack.max().clamp(min=1e-3))
        noise_real = torch.from_numpy(rng.normal(0, sigma, size=stack.shape).astype(np.float32))
        if rng.random() < 0.5:  # Rician, as in magnitude images
            noise_imag = torch.from_numpy(rng.normal(0, sigma, size=stack.shape).astype(np.float32))
            stack = torch.sqrt((stack + noise_real) ** 2 + noise_imag**2)
        else:
            stack = stack + noise_real
    if rng.random() < 0.3:
        stack = stack * float(rng.uniform(0.7, 1.3)) + float(rng.uniform(-0.1, 0.1))
    return stack
