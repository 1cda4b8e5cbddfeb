"""The canonical in-plane orientation: the eight ways to store a plane, and the one the models see."""
import numpy as np
import pytest

from dicomnode.cmr.orientation import ALL_TRANSFORMS, InplaneTransform, canonical_inplane


def test_the_eight_transforms_are_distinct_and_invert():
    array = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    seen = set()
    for transform in ALL_TRANSFORMS:
        stored = transform.apply(array)
        assert np.array_equal(transform.invert(stored), array)
        seen.add(stored.tobytes() + bytes(stored.shape))
    assert len(seen) == 8 and ALL_TRANSFORMS[0].is_identity


@pytest.mark.parametrize("transform", ALL_TRANSFORMS)
def test_directions_spacing_and_points_follow_the_pixels(transform):
    # a pixel's patient position must not change when the grid is re-stored with the transform's geometry
    shape, spacing = (5, 7), (1.2, 0.8)
    row_dir, col_dir = np.array([0.8, 0.6, 0.0]), np.array([-0.36, 0.48, 0.8])
    origin = np.array([10.0, -20.0, 30.0])

    def position(r, c, rd, cd, sp, first):
        return first + c * sp[1] * rd + r * sp[0] * cd

    new_row, new_col = transform.directions(row_dir, col_dir)
    new_spacing = transform.spacing(spacing)
    index = np.arange(np.prod(shape)).reshape(shape)
    stored = transform.apply(index)
    # the stored grid's first pixel is a source pixel: its position is the new origin
    r0, c0 = np.argwhere(index == stored[0, 0])[0]
    new_origin = position(r0, c0, row_dir, col_dir, spacing, origin)
    for r in range(stored.shape[0]):
        for c in range(stored.shape[1]):
            sr, sc = np.argwhere(index == stored[r, c])[0]
            assert np.allclose(position(r, c, new_row, new_col, new_spacing, new_origin),
                               position(sr, sc, row_dir, col_dir, spacing, origin))
            assert transform.source_point((r, c), shape) == (sr, sc)


def test_canonical_orientation_puts_the_patients_left_right_and_posterior_down():
    # an axial plane stored with rows reversed and transposed: the canonical transform brings back columns -> left
    axial = np.array([1.0, 0, 0, 0, 1, 0])
    assert canonical_inplane(axial).is_identity
    for stored in ALL_TRANSFORMS:
        row_dir, col_dir = stored.directions(axial[:3], axial[3:])
        canonical = canonical_inplane(np.concatenate([row_dir, col_dir]))
        along_row, down_col = canonical.directions(row_dir, col_dir)
        assert np.allclose(along_row, [1, 0, 0]) and np.allclose(down_col, [0, 1, 0])
    # an oblique short-axis plane: whichever way it is stored, the same canonical grid comes out
    pixels = np.random.default_rng(0).random((6, 9))
    iop = np.array([0.62, 0.74, -0.26, -0.39, 0.6, 0.7])
    iop[3:] -= iop[:3] * (iop[:3] @ iop[3:]) / (iop[:3] @ iop[:3])
    iop[:3] /= np.linalg.norm(iop[:3])
    iop[3:] /= np.linalg.norm(iop[3:])
    canonical_grids = set()
    for stored in ALL_TRANSFORMS:
        row_dir, col_dir = stored.directions(iop[:3], iop[3:])
        canonical = canonical_inplane(np.concatenate([row_dir, col_dir]))
        canonical_grids.add(canonical.apply(stored.apply(pixels)).tobytes())
    assert len(canonical_grids) == 1


def test_invalid_orientation_is_refused():
    with pytest.raises(ValueError, match="6 finite numbers"):
        canonical_inplane([1, 0, 0, 0, 1])
    with pytest.raises(ValueError, match="not two unit vectors"):
        canonical_inplane([2, 0, 0, 0, 1, 0])
    assert InplaneTransform(transpose=True).spacing((1.0, 2.0)) == (2.0, 1.0)


def test_quarter_turns_are_numpy_rot90_and_compose_is_the_group_product():
    from dicomnode.cmr.orientation import ALL_TRANSFORMS, compose, quarter_turns
    a = np.arange(12).reshape(3, 4)
    for count in range(-1, 6):
        np.testing.assert_array_equal(quarter_turns(count).apply(a), np.rot90(a, count))
    for first in ALL_TRANSFORMS:
        for then in ALL_TRANSFORMS:
            np.testing.assert_array_equal(compose(first, then).apply(a), then.apply(first.apply(a)))


def test_rv_direction_in_mm_and_its_anatomical_turn():
    from dicomnode.cmr.orientation import (RV_DIRECTION_WINDOW_DEG, anatomical_turn, quarter_turns,
                                           rv_direction_deg)
    lv = np.zeros((2, 60, 60), bool)
    rv = lv.copy()
    lv[:, 25:35, 30:40] = True
    rv[:, 20:30, 5:20] = True  # left of the LV and a little up (anterior in the canonical display)
    direction = rv_direction_deg(lv, rv, (1.0, 1.0))
    assert direction == pytest.approx(180 - np.degrees(np.arctan2(5, 22.5)), abs=0.01)
    # millimetres, not pixel indices: rows twice as far apart steepen the direction
    assert rv_direction_deg(lv, rv, (2.0, 1.0)) == pytest.approx(180 - np.degrees(np.arctan2(10, 22.5)), abs=0.01)
    low, high = RV_DIRECTION_WINDOW_DEG
    for count in range(4):
        turned = quarter_turns(count)
        found = rv_direction_deg(turned.apply(lv), turned.apply(rv), (1.0, 1.0))
        pose = anatomical_turn(found)
        final = rv_direction_deg(pose.apply(turned.apply(lv)), pose.apply(turned.apply(rv)), (1.0, 1.0))
        assert low <= final < high
        # every start ends in the same pose: the same heart, the same input to the network
        np.testing.assert_array_equal(pose.apply(turned.apply(lv)), anatomical_turn(direction).apply(lv))
    # no RV, a speck of RV, an RV on the LV's centre: no direction, the patient-based orientation stays
    assert rv_direction_deg(lv, np.zeros_like(rv), (1.0, 1.0)) is None
    assert rv_direction_deg(lv, rv & (np.arange(60) < 7), (1.0, 1.0)) is None
    assert rv_direction_deg(lv, lv, (1.0, 1.0)) is None
    assert anatomical_turn(None).is_identity
