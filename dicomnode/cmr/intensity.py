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


def magnitude_floor_shift(pixels: np.ndarray) -> float:
    """The offset (intensity units of the source) to add to every value of a magnitude series so that its minimum
    is 0: minus the minimum where the series holds values below 0, 0.0 where every value is >= 0 (such a series is
    left exactly as it is, so the inputs the models were validated on are unchanged).

    A magnitude image holds no negative values; below 0 the modality LUT (a negative RescaleIntercept (0028,1052))
    or an export has shifted the whole series, and normalise_slices, which clips at 0, would flatten everything under
    the shift (break44b: RescaleIntercept -300 read LV EDV 59 instead of 185 mL). One shift for the whole series
    (every slice and phase) keeps the relation between its images. Not for signed images (PSIR, phase contrast),
    whose zero means something. Non-finite values are ignored; an empty or all-non-finite series gives 0.0."""
    values = np.asarray(pixels, dtype=np.float32)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0
    low = float(finite.min())
    return -low if low < 0 else 0.0


#: a lossy-compressed magnitude series whose minimum lies within this fraction of its maximum below 0 is the codec's
#: undershoot around 0 (ringing of JPEG 2000 / JPEG near black), not an offset of the whole series
UNDERSHOOT_FRACTION = 0.1


def magnitude_floor_note(shift: float, what: str, intercepts=(), lossy: bool = False, peak: float | None = None) -> str:
    """The stack warning for a magnitude series shifted by `shift` (magnitude_floor_shift, > 0), naming `what`
    ("cine", "LGE") and the RescaleIntercept values of its images (`intercepts`; none given: not named). A series
    that is `lossy`-compressed, whose values dip at most UNDERSHOOT_FRACTION of its maximum `peak` below 0 and whose
    images state no negative RescaleIntercept, is said to show compression undershoot, not a rescale error."""
    named = sorted({float(v) for v in intercepts})
    negative_intercept = bool(named) and min(named) < 0
    if lossy and not negative_intercept and peak is not None and 0 < shift <= UNDERSHOOT_FRACTION * peak:
        return (f"negative values in a lossy-compressed magnitude {what}: the values go down to {-shift:g} "
                f"({100 * shift / peak:.1f} % of the maximum {peak:g}), the undershoot of the lossy codec around 0, "
                f"not a rescale error; the whole series was shifted by +{shift:g} before analysis (an intensity "
                f"offset changes no anatomy)")
    source = f" (RescaleIntercept {', '.join(f'{v:g}' for v in named)})" if negative_intercept else ""
    return (f"negative values in a magnitude {what}: the values go down to {-shift:g}{source}, which a magnitude "
            f"image cannot hold, so the whole series was shifted by +{shift:g} before analysis (an intensity offset "
            f"changes no anatomy); check the series' rescale (0028,1052/1053) if the numbers look wrong")
