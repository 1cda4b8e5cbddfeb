"""In-plane resampling for models: to a target spacing and a fixed crop around a centre, with the exact inverse."""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def _pair(value, name: str, kind=float) -> tuple:
    values = tuple(kind(v) for v in (value if np.ndim(value) else (value, value)))
    if len(values) != 2 or any(v <= 0 for v in values):
        raise ValueError(f"{name} must be one positive number or a (rows, cols) pair, got {value!r}")
    return values


#: sampling more than this many times coarser than the source pixels smooths the image first (InplaneResampler.
#: anti_alias_sigma). Up to it images are sampled as they are, as the shipped models were trained and validated: the
#: usual 1.2-1.8 mm CMR images, and MyoPS's 0.73 mm LGE (2.05 x to the LGE model's 1.5 mm grid), whose validated
#: numbers (engines/lge/EVALUATION.md) a smoothing the model never saw could change
ANTI_ALIAS_FROM_SCALE = 2.5
#: ... and from this scale on with the full sigma (scale - 1) / 2; between the two the sigma ramps up linearly, so
#: that nearly identical spacings (0.59 and 0.61 mm LGE to 1.5 mm) give nearly identical model inputs (no step)
ANTI_ALIAS_FULL_SCALE = 3.5


class InplaneResampler:
    """Maps 2-D images between a source grid and a model grid of fixed size and spacing.

    Contract:
    - Source grid: `shape_rc` = (rows, cols) pixels with `spacing_rc` = (between rows, between columns) mm.
    - Model grid: `out_size` = (rows, cols) pixels with `target_spacing` mm, centred on source pixel coordinate
      `centre_rc` (row, col; default the image centre). Model pixel (u, v) samples source coordinate
      (offset_r + u * scale_r, offset_c + v * scale_c) with scale = target / source spacing.
    - When a target spacing equals the source spacing the offset is rounded to whole pixels, so forward is a pure
      crop/pad and the inverse of a label map is the exact identity on the part that was inside the model grid.
    - `forward` works on (..., rows, cols) arrays (any leading axes) with linear interpolation by default;
      outside the source, `fill` (0) is used. `inverse_labels` maps a (..., out_rows, out_cols) label map back
      with nearest neighbour, `inverse_probabilities` with linear interpolation; both return the source shape and
      set source pixels that fall outside the model grid to `fill` (0 = background).
    """

    def __init__(self, shape_rc, spacing_rc, target_spacing, out_size, centre_rc=None):
        self.shape_rc = _pair(shape_rc, "shape_rc", int)
        self.spacing_rc = _pair(spacing_rc, "spacing_rc")
        self.target_spacing = _pair(target_spacing, "target_spacing")
        self.out_size = _pair(out_size, "out_size", int)
        if centre_rc is None:
            centre_rc = ((self.shape_rc[0] - 1) / 2.0, (self.shape_rc[1] - 1) / 2.0)
        if len(centre_rc) != 2 or not all(np.isfinite(centre_rc)):
            raise ValueError(f"centre_rc must be a finite (row, col) pair, got {centre_rc!r}")
        self.centre_rc = (float(centre_rc[0]), float(centre_rc[1]))
        self.scale = tuple(t / s for t, s in zip(self.target_spacing, self.spacing_rc))
        offsets = []
        for axis in range(2):
            offset = self.centre_rc[axis] - (self.out_size[axis] - 1) / 2.0 * self.scale[axis]
            if abs(self.scale[axis] - 1.0) < 1e-9:
                offset = float(np.floor(offset + 0.5))
            offsets.append(offset)
        self.offset = tuple(offsets)

    def _apply(self, array: np.ndarray, matrix, offset, shape, order: int, fill: float) -> np.ndarray:
        array = np.asarray(array)
        if array.ndim < 2:
            raise ValueError(f"expected an array of shape (..., rows, cols), got {array.shape}")
        leading = array.shape[:-2]
        flat = array.reshape((-1,) + array.shape[-2:])
        dtype = array.dtype if order == 0 else np.result_type(array.dtype, np.float32)
        out = np.empty((flat.shape[0],) + tuple(shape), dtype=dtype)
        for index, image in enumerate(flat):
            out[index] = ndimage.affine_transform(image.astype(dtype, copy=False), matrix, offset=offset,
                                                  output_shape=tuple(shape), order=order, mode="constant", cval=fill,
                                                  prefilter=False)
        return out.reshape(leading + tuple(shape))

    def anti_alias_sigma(self) -> tuple[float, float]:
        """Gaussian sigma (source pixels, per axis) smoothing an image before it is sampled `scale` times coarser:
        (scale - 1) / 2, as scikit-image's rescale, times a weight rising linearly from 0 at ANTI_ALIAS_FROM_SCALE
        to 1 at ANTI_ALIAS_FULL_SCALE; 0 at or below ANTI_ALIAS_FROM_SCALE. Continuous in the scale."""
        ramp = ANTI_ALIAS_FULL_SCALE - ANTI_ALIAS_FROM_SCALE
        return tuple(float((s - 1.0) / 2.0 * np.clip((s - ANTI_ALIAS_FROM_SCALE) / ramp, 0.0, 1.0))
                     for s in self.scale)

    def forward(self, image, order: int = 1, fill: float = 0.0) -> np.ndarray:
        """Source (..., rows, cols) -> model grid (..., out_rows, out_cols). An image sampled much coarser than its
        pixels (a 0.34 mm image to a 1.5 mm model grid) is smoothed first (anti_alias_sigma; order > 0 only): linear
        interpolation alone would read one pixel in four or five and drop the rest, so the model saw noise and edges
        that depend on where the grid falls."""
        image = np.asarray(image)
        if image.shape[-2:] != self.shape_rc:
            raise ValueError(f"forward expects (..., {self.shape_rc[0]}, {self.shape_rc[1]}), got {image.shape}")
        sigma = self.anti_alias_sigma()
        if order > 0 and any(sigma):
            image = ndimage.gaussian_filter(image.astype(np.result_type(image.dtype, np.float32), copy=False),
                                            sigma=(0.0,) * (image.ndim - 2) + sigma, mode="nearest")
        return self._apply(image, self.scale, self.offset, self.out_size, order, fill)

    def _inverse(self, array, order: int, fill: float) -> np.ndarray:
        array = np.asarray(array)
        if array.shape[-2:] != self.out_size:
            raise ValueError(f"inverse expects (..., {self.out_size[0]}, {self.out_size[1]}), got {array.shape}")
        matrix = tuple(1.0 / s for s in self.scale)
        # only source pixels within one model pixel of the model grid can differ from `fill`: interpolate that box
        box = []
        for axis in range(2):
            first = int(np.ceil(self.offset[axis] - self.scale[axis]))
            last = int(np.floor(self.offset[axis] + self.out_size[axis] * self.scale[axis]))
            box.append((max(first, 0), min(last + 1, self.shape_rc[axis])))
        if any(stop <= start for start, stop in box):
            dtype = array.dtype if order == 0 else np.result_type(array.dtype, np.float32)
            return np.full(array.shape[:-2] + self.shape_rc, fill, dtype=dtype)
        offset = tuple((start - o) / s for (start, _), o, s in zip(box, self.offset, self.scale))
        inside = self._apply(array, matrix, offset, tuple(stop - start for start, stop in box), order, fill)
        out = np.full(array.shape[:-2] + self.shape_rc, fill, dtype=inside.dtype)
        out[..., box[0][0]:box[0][1], box[1][0]:box[1][1]] = inside
        return out

    def inverse_labels(self, labels, fill: int = 0) -> np.ndarray:
        """Model-grid label map (..., out_rows, out_cols) -> source grid, nearest neighbour, same dtype."""
        return self._inverse(labels, 0, fill)

    def inverse_probabilities(self, probabilities, fill: float = 0.0) -> np.ndarray:
        """Model-grid probabilities (..., out_rows, out_cols), e.g. (classes, rows, cols) -> source grid, linear."""
        return self._inverse(probabilities, 1, fill)
