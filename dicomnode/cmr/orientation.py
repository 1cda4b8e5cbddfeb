"""One in-plane orientation for the models, whatever way the scanner stored the plane.

The same short-axis plane can be stored in eight ways: the pixel grid transposed, its rows reversed, its columns
reversed, or any combination (ImageOrientationPatient changes with it, PS3.3 C.7.6.2.1.1, and the anatomy stays
where it is). A 2-D network is not exactly invariant to those eight, even when trained with rotations and flips:
the same cine stored rotated by 90 degrees moved the LVEF by up to 13 points. The pipelines therefore hand the
network the plane in one patient-based orientation and map its labels back.

The canonical orientation: columns run as nearly as possible towards the patient's left (+x of the LPS patient
coordinate system) and rows as nearly as possible towards posterior (+y), i.e. the usual short-axis display with
anterior up and the patient's left on the viewer's right.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

#: LPS patient axes (PS3.3 C.7.6.2.1.1): +x towards the patient's left, +y towards posterior
PATIENT_LEFT = np.array([1.0, 0.0, 0.0])
PATIENT_POSTERIOR = np.array([0.0, 1.0, 0.0])


@dataclass(frozen=True)
class InplaneTransform:
    """One of the eight ways to re-store a pixel grid: transpose first, then reverse rows, then reverse columns.

    Works on arrays (..., rows, cols). `apply` maps the source grid to the transformed one, `invert` back;
    `invert(apply(a))` is `a` for every array.
    """

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False

    @property
    def is_identity(self) -> bool:
        return not (self.transpose or self.flip_rows or self.flip_cols)

    def apply(self, array: np.ndarray) -> np.ndarray:
        out = np.swapaxes(array, -1, -2) if self.transpose else array
        if self.flip_rows:
            out = out[..., ::-1, :]
        if self.flip_cols:
            out = out[..., :, ::-1]
        return np.ascontiguousarray(out)

    def invert(self, array: np.ndarray) -> np.ndarray:
        out = array[..., :, ::-1] if self.flip_cols else array
        if self.flip_rows:
            out = out[..., ::-1, :]
        if self.transpose:
            out = np.swapaxes(out, -1, -2)
        return np.ascontiguousarray(out)

    def spacing(self, spacing_rc: tuple[float, float]) -> tuple[float, float]:
        """PixelSpacing (between rows, between columns) of the transformed grid."""
        return (spacing_rc[1], spacing_rc[0]) if self.transpose else (spacing_rc[0], spacing_rc[1])

    def directions(self, row_dir, col_dir) -> tuple[np.ndarray, np.ndarray]:
        """ImageOrientationPatient's two vectors for the transformed grid: the direction of increasing column index
        (the first vector, along a row) and of increasing row index (the second, down a column)."""
        along_row, down_col = np.asarray(row_dir, float), np.asarray(col_dir, float)
        if self.transpose:
            along_row, down_col = down_col, along_row
        if self.flip_rows:
            down_col = -down_col
        if self.flip_cols:
            along_row = -along_row
        return along_row, down_col

    def source_point(self, point_rc: tuple[float, float], source_shape_rc: tuple[int, int]) -> tuple[float, float]:
        """A (row, col) position on the transformed grid -> the same position on the source grid."""
        shape = tuple(source_shape_rc[::-1]) if self.transpose else tuple(source_shape_rc)
        row, col = float(point_rc[0]), float(point_rc[1])
        if self.flip_cols:
            col = shape[1] - 1 - col
        if self.flip_rows:
            row = shape[0] - 1 - row
        return (col, row) if self.transpose else (row, col)


ALL_TRANSFORMS = tuple(InplaneTransform(*flags) for flags in itertools.product((False, True), repeat=3))


def canonical_inplane(orientation) -> InplaneTransform:
    """The transform that stores a plane of ImageOrientationPatient `orientation` (6 values) in the canonical
    orientation (module docstring): the one of the eight whose column direction points most towards the patient's
    left plus whose row direction points most towards posterior. Ties go to the first of ALL_TRANSFORMS (the
    identity first). Raises ValueError for an orientation that is not two unit vectors.
    """
    values = np.asarray(orientation, float).reshape(-1)
    if values.shape != (6,) or not np.all(np.isfinite(values)):
        raise ValueError(f"ImageOrientationPatient must be 6 finite numbers, got {orientation!r}")
    row_dir, col_dir = values[:3], values[3:]
    if not (abs(np.linalg.norm(row_dir) - 1) < 0.01 and abs(np.linalg.norm(col_dir) - 1) < 0.01):
        raise ValueError(f"ImageOrientationPatient {orientation!r} is not two unit vectors")

    def score(transform: InplaneTransform) -> float:
        along_row, down_col = transform.directions(row_dir, col_dir)
        return round(float(along_row @ PATIENT_LEFT + down_col @ PATIENT_POSTERIOR), 9)

    return max(ALL_TRANSFORMS, key=score)
