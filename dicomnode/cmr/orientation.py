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
import math
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


#: a quarter turn of the displayed image, counter-clockwise (numpy.rot90 on the last two axes): transpose, then
#: reverse the rows
QUARTER_TURN = InplaneTransform(transpose=True, flip_rows=True)


def compose(first: InplaneTransform, then: InplaneTransform) -> InplaneTransform:
    """The one of ALL_TRANSFORMS that re-stores a grid as `first` followed by `then` (the eight form a group)."""
    probe = np.arange(6).reshape(2, 3)
    wanted = then.apply(first.apply(probe))
    return next(t for t in ALL_TRANSFORMS if t.apply(probe).shape == wanted.shape and np.array_equal(t.apply(probe), wanted))


def quarter_turns(count: int) -> InplaneTransform:
    """`count` counter-clockwise quarter turns (0-3, any integer taken modulo 4) as an InplaneTransform."""
    transform = InplaneTransform()
    for _ in range(count % 4):
        transform = compose(transform, QUARTER_TURN)
    return transform


#: the network sees every heart turned so that the direction from the LV's centre to the RV's lies in this window
#: (degrees on the displayed image: 0 towards increasing column, 90 towards decreasing row, i.e. up). Where the
#: window lies: on the 33 MyoPS 2020 patients (real ImageOrientationPatient, expert LV and RV labels) the direction
#: in the patient-based canonical orientation is 86-196 degrees; taken modulo 90 degrees the directions fill -6 to +39,
#: and the window's edges (62 and 152) lie in the middle of the widest empty stretch (39 to 84): after their quarter
#: turns all 33 lie at 70-129 degrees, and a heart like those needs its direction misjudged by more than 22 degrees
#: before its turn changes.
RV_DIRECTION_WINDOW_DEG = (62.0, 152.0)
#: an RV smaller than this (mm², over the slices given) or nearer the LV's centre than RV_MIN_DISTANCE_MM gives no
#: direction: the patient-based orientation is kept
RV_MIN_AREA_MM2 = 200.0
RV_MIN_DISTANCE_MM = 10.0


def rv_direction_deg(lv: np.ndarray, rv: np.ndarray, spacing_rc: tuple[float, float]) -> float | None:
    """Direction (degrees, as RV_DIRECTION_WINDOW_DEG) from the centroid of the `lv` mask to that of the `rv` mask,
    both (..., rows, cols) booleans on one grid of `spacing_rc` (mm between rows, between columns); None when the RV
    is too small or too near (RV_MIN_AREA_MM2, RV_MIN_DISTANCE_MM) or there is no LV."""
    lv, rv = np.asarray(lv, bool), np.asarray(rv, bool)
    pixel_mm2 = float(spacing_rc[0]) * float(spacing_rc[1])
    if not lv.any() or rv.sum() * pixel_mm2 < RV_MIN_AREA_MM2:
        return None
    lv_rc = np.argwhere(lv)[:, -2:].mean(axis=0)
    rv_rc = np.argwhere(rv)[:, -2:].mean(axis=0)
    down, right = (rv_rc - lv_rc) * np.asarray(spacing_rc, float)
    if math.hypot(down, right) < RV_MIN_DISTANCE_MM:
        return None
    return math.degrees(math.atan2(-down, right)) % 360.0


def anatomical_turn(direction_deg: float | None) -> InplaneTransform:
    """The quarter turns (counter-clockwise, each adds 90 degrees to the direction) that bring an LV-to-RV
    `direction_deg` into RV_DIRECTION_WINDOW_DEG; the identity for None.

    The patient-based canonical orientation depends on where the heart lies in the patient's axes: a double-oblique
    short axis has its grid near 45 degrees to them, so a small difference in the patient's position in the scanner
    turned the network's input by a quarter turn and moved the LVEF by up to 7 points (break46c). A turn chosen on
    the heart's own anatomy, the RV beside the LV, is the same for the same heart however the frame is rotated.
    """
    if direction_deg is None:
        return InplaneTransform()
    low, high = RV_DIRECTION_WINDOW_DEG
    for count in range(4):
        if (direction_deg + 90.0 * count - low) % 360.0 < high - low:
            return quarter_turns(count)
    return InplaneTransform()
