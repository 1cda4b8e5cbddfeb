"""Per-slice intensity normalisation of cine (bSSFP) crops: the plan the cine and view models were trained with."""
from __future__ import annotations

import numpy as np

#: upper clip of the per-slice normalisation, as a percentile of the slice's values
CLIP_PERCENTILE = 99.5


def normalise_slices(crops: np.ndarray) -> np.ndarray:
    """Per-slice normalisation of (..., H, W) crops: clip to [0, p99.5], then zero mean / unit SD.

    Returns float32 of the same shape. Used by the cine pipeline, the learned view classifier and training (whose
    torch twin is engines/cine/augment.py), so the three share one definition.
    """
    crops = np.asarray(crops, dtype=np.float32)
    flat = crops.reshape(-1, crops.shape[-2] * crops.shape[-1])
    high = np.percentile(flat, CLIP_PERCENTILE, axis=1, keepdims=True).astype(np.float32)
    clipped = np.clip(flat, 0.0, np.maximum(high, 1e-6))
    mean = clipped.mean(axis=1, keepdims=True)
    std = clipped.std(axis=1, keepdims=True)
    return ((clipped - mean) / np.maximum(std, 1e-6)).reshape(crops.shape).astype(np.float32)
