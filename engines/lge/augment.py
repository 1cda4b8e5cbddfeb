"""Training patches of LGE slices: one affine resampling from the source grid to the model grid (spacing, zoom,
any in-plane rotation, flips and the crop in a single interpolation, so a 512-pixel MyoPS slice costs no more
than a 256-pixel EMIDEC one), then intensity augmentation imitating other scanners, windows and bit depths.

The preprocessing itself (stack normalisation, model spacing) is the node's: dicomnode.analysis.lge, so training
and inference cannot drift apart.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

FOREGROUND_FRACTION = 0.67  # nnU-Net: a third of the patches are centred anywhere, the rest on labelled structures


def sample_patch(image: np.ndarray, labels: np.ndarray, spacing_rc: tuple[float, float], model_spacing_mm: float,
                 patch: int, rng: np.random.Generator, augment: bool = True,
                 zoom_probability: float = 1.0,
                 intensity_probability: float = 1.0, rv_direction_deg: float | None = None,
                 pose_window_deg: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One (patch, patch) float32 image and uint8 label patch from a normalised (H, W) slice and its labels; a
    (K, H, W) image (a slice and its context, e.g. the neighbouring slices of a 2.5-D model) gives a (K, patch, patch)
    patch, every channel under the same spatial transform and intensity augmentation.

    The centre is a random labelled pixel (probability FOREGROUND_FRACTION) or any pixel; with `augment` the
    grid is zoomed (0.7-1.4; with probability `zoom_probability`, else kept at the model spacing the node uses),
    rotated (any angle) and flipped. nnU-Net zooms a fifth of its patches (Isensee et al., Nat Methods 2021); at
    1.0 no extra random number is drawn, so runs of the earlier recipe draw the same patches. The intensity
    augmentation (`intensity_augment`) is applied to a patch with probability `intensity_probability` (1.0: every
    patch, again without an extra draw).

    With `pose_window_deg` (low, high) and the slice's stack `rv_direction_deg` (engines.lge.pose: LV-to-RV
    direction on the source grid, degrees as dicomnode.cmr.orientation.rv_direction_deg) the rotation is drawn
    uniformly among the angles that put that direction, after the flips, inside the window: the poses the node's
    anatomical turn hands the network (RV_DIRECTION_WINDOW_DEG widened by a margin), instead of any angle.
    """
    channels = image[None] if image.ndim == 2 else image
    height, width = channels.shape[1:]
    foreground = np.argwhere(labels > 0)
    if foreground.size and (not augment or rng.random() < FOREGROUND_FRACTION):
        centre = foreground[rng.integers(len(foreground))].astype(float)
        if not augment:
            centre = foreground.mean(axis=0)
    else:
        centre = np.array([rng.uniform(0, height - 1), rng.uniform(0, width - 1)])
    zoom, angle, flips = 1.0, 0.0, np.ones(2)
    if augment:
        zoom = float(np.exp(rng.uniform(np.log(0.7), np.log(1.4))))
        if zoom_probability < 1.0 and rng.random() >= zoom_probability:
            zoom = 1.0
        if pose_window_deg is None or rv_direction_deg is None:
            angle = float(rng.uniform(0, 2 * math.pi))
            flips = np.where(rng.random(2) < 0.5, -1.0, 1.0)
    scale = np.array([model_spacing_mm / spacing_rc[0], model_spacing_mm / spacing_rc[1]]) * zoom
    if augment and pose_window_deg is not None and rv_direction_deg is not None:
        flips = np.where(rng.random(2) < 0.5, -1.0, 1.0)
        angle = _angle_in_window(rv_direction_deg, spacing_rc, scale * flips, pose_window_deg, rng)
    cos, sin = math.cos(angle), math.sin(angle)
    rotation = np.array([[cos, -sin], [sin, cos]])
    matrix = rotation @ np.diag(scale * flips)
    offset = centre - matrix @ np.full(2, (patch - 1) / 2.0)
    out = np.stack([ndimage.affine_transform(channel, matrix, offset=offset, output_shape=(patch, patch), order=1,
                                             mode="constant", cval=float(channel.min()), prefilter=False)
                    for channel in channels])
    out_labels = ndimage.affine_transform(labels, matrix, offset=offset, output_shape=(patch, patch), order=0,
                                          mode="constant", cval=0, prefilter=False)
    if augment and (intensity_probability >= 1.0 or rng.random() < intensity_probability):
        # channels side by side: one draw of every augmentation for all of them
        out = np.stack(np.split(intensity_augment(np.concatenate(list(out), axis=1), rng), len(out), axis=1))
    out = out[0] if image.ndim == 2 else out
    return out.astype(np.float32), out_labels.astype(np.uint8)


def patch_direction_deg(direction_deg: float, spacing_rc: tuple[float, float], matrix: np.ndarray) -> float:
    """A direction on the source grid (degrees, mm; 0 towards increasing column, 90 up) as it appears on a patch
    sampled with `matrix` (patch pixel -> source pixel, as sample_patch's affine)."""
    theta = math.radians(direction_deg)
    source_px = np.array([-math.sin(theta) / spacing_rc[0], math.cos(theta) / spacing_rc[1]])
    down, right = np.linalg.solve(matrix, source_px)
    return math.degrees(math.atan2(-down, right)) % 360.0


def _angle_in_window(direction_deg: float, spacing_rc, scale_flips: np.ndarray, window_deg: tuple[float, float],
                     rng: np.random.Generator, tries: int = 200) -> float:
    """A uniform random rotation angle (radians, sample_patch's convention) whose patch shows `direction_deg`
    inside `window_deg` (by rejection; the window is at least a quarter of the circle in use, so a few draws)."""
    low, high = window_deg
    for _ in range(tries):
        angle = float(rng.uniform(0, 2 * math.pi))
        cos, sin = math.cos(angle), math.sin(angle)
        matrix = np.array([[cos, -sin], [sin, cos]]) @ np.diag(scale_flips)
        if (patch_direction_deg(direction_deg, spacing_rc, matrix) - low) % 360.0 <= high - low:
            return angle
    raise ValueError(f"no rotation puts direction {direction_deg:.1f} inside {window_deg} in {tries} draws")


def intensity_augment(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """nnU-Net-style intensity augmentation of one normalised patch (mean ~0, SD ~1): gamma, contrast and
    brightness, a smooth bias field, lower resolution, blur, Rician/Gaussian noise, and saturation plus 8-bit
    quantisation (what a windowed 8-bit export such as EMIDEC's PNGs does to 12-bit data)."""
    out = patch.astype(np.float32)
    height, width = out.shape
    if rng.random() < 0.3:  # gamma on the patch's own range, as nnU-Net (sometimes on the inverted image)
        low, high = float(out.min()), float(out.max())
        if high > low:
            unit = (out - low) / (high - low)
            gamma = float(np.exp(rng.uniform(np.log(0.7), np.log(1.5))))
            unit = 1 - (1 - unit) ** gamma if rng.random() < 0.15 else unit ** gamma
            out = unit * (high - low) + low
    if rng.random() < 0.15:
        mean = float(out.mean())
        out = (out - mean) * float(rng.uniform(0.65, 1.5)) + mean
    if rng.random() < 0.15:
        out = out * float(rng.uniform(0.7, 1.3))
    if rng.random() < 0.2:
        coarse = rng.normal(0, 0.2, size=(4, 4))
        field = ndimage.zoom(coarse, (height / 4, width / 4), order=3)[:height, :width]
        out = (out - out.min()) * np.exp(field) + out.min()
    if rng.random() < 0.15:
        factor = float(rng.uniform(1.0, 2.0))
        small = ndimage.zoom(out, 1 / factor, order=1)
        out = ndimage.zoom(small, (height / small.shape[0], width / small.shape[1]), order=1)[:height, :width]
    elif rng.random() < 0.15:
        out = ndimage.gaussian_filter(out, float(rng.uniform(0.5, 1.0)))
    if rng.random() < 0.15:
        sigma = float(rng.uniform(0.0, 0.15))
        out = out + rng.normal(0, sigma, size=out.shape).astype(np.float32)
    if rng.random() < 0.2:
        low = float(np.percentile(out, rng.uniform(0, 5)))
        high = float(np.percentile(out, rng.uniform(90, 100)))
        if high > low:
            levels = np.round((np.clip(out, low, high) - low) / (high - low) * 255.0)
            out = levels / 255.0 * (high - low) + low
    return out.astype(np.float32)
