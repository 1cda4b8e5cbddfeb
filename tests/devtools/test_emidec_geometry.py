"""The assumed geometry of the EMIDEC PNGs: their pixels are not square, and the node's studies and training data
undo that from each case's own LV outline (dicomnode.devtools.sources.emidec_pixel_spacing)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from dicomnode.devtools.sources import EMIDEC_PIXEL_SPACING_MM, emidec_pixel_spacing


def _lv(rows: int = 256, cols: int = 256, radius: float = 30.0, tilt: float = 1.05) -> np.ndarray:
    """(rows, cols) node labels: a near-round LV (blood pool 1 inside myocardium 2), slightly oblique as real ones."""
    r, c = np.mgrid[:rows, :cols].astype(float)
    u, v = (r - rows / 2) * np.cos(0.6) + (c - cols / 2) * np.sin(0.6), -(r - rows / 2) * np.sin(0.6) + (c - cols / 2) * np.cos(0.6)
    distance = np.hypot(u / tilt, v)
    return np.where(distance < radius * 0.65, 1, np.where(distance < radius, 2, 0)).astype(np.uint8)


@pytest.mark.parametrize("squash", [0.45, 0.8, 1.0, 1.6, 2.2])
def test_a_resize_that_squashed_the_rows_is_undone_with_the_area_kept(squash):
    round_lv = _lv()
    squashed = ndimage.zoom(round_lv, (squash, 1.0), order=0)  # what a non-square resize to 256 x 256 did
    stack = np.stack([squashed, ndimage.zoom(_lv(radius=22.0), (squash, 1.0), order=0)])
    row_mm, col_mm = emidec_pixel_spacing(stack)
    assert row_mm / col_mm == pytest.approx(1 / squash, rel=0.08)
    assert np.sqrt(row_mm * col_mm) == pytest.approx(EMIDEC_PIXEL_SPACING_MM, rel=1e-3)


def test_slices_without_enough_lv_are_ignored_and_none_at_all_is_refused():
    stack = np.stack([np.zeros((64, 64), np.uint8), _lv(64, 64, radius=12.0)])
    stack[0, 5, 5] = 2  # a few stray pixels: not measured
    row_mm, col_mm = emidec_pixel_spacing(stack, mean_spacing_mm=2.0)
    assert row_mm == pytest.approx(col_mm, rel=0.08)
    with pytest.raises(ValueError, match="LV pixels"):
        emidec_pixel_spacing(np.zeros((3, 64, 64), np.uint8))
    rv_only = np.full((1, 64, 64), 5, np.uint8)  # RV blood pool is not LV
    with pytest.raises(ValueError, match="LV pixels"):
        emidec_pixel_spacing(rv_only)


def test_every_emidec_case_gets_a_round_lv_in_millimetres(datasets):
    """Measured on the 100 cases: the PNG LV's major/minor axis ratio is 1.34 (median) and up to 2.4; in real
    short-axis geometry (MyoPS) it is 1.06 (at most 1.15). With the assumed spacing it must look like the latter."""
    from engines.lge.data import load_emidec

    def axis_ratio(labels: np.ndarray, spacing_rc) -> float:
        ratios = []
        for slice_labels in labels:
            rows, cols = np.nonzero(np.isin(slice_labels, (1, 2, 3, 4)))
            if rows.size >= 50:
                eigen = np.linalg.eigvalsh(np.cov(np.stack([rows * spacing_rc[0], cols * spacing_rc[1]])))
                ratios.append(np.sqrt(eigen[1] / eigen[0]))
        return float(np.median(ratios))

    cases = load_emidec(datasets / "emidec-lge-png")
    assert len(cases) == 100
    as_pixels = np.array([axis_ratio(c.labels, (1.0, 1.0)) for c in cases])
    in_mm = np.array([axis_ratio(c.labels, c.spacing_rc) for c in cases])
    assert np.median(as_pixels) > 1.25 and as_pixels.max() > 2.0  # the distortion this undoes is real
    assert np.median(in_mm) < 1.12 and in_mm.max() < 1.3
    assert all(np.sqrt(c.spacing_rc[0] * c.spacing_rc[1]) == pytest.approx(EMIDEC_PIXEL_SPACING_MM, rel=1e-3)
               for c in cases)
