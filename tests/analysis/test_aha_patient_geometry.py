"""AHA segments named from the patient geometry (ImageOrientationPatient), not from the image's handedness: a
mirrored heart (situs inversus / mirror-image dextrocardia) keeps its anatomical segments and gets a caveat, and a
plane whose geometry cannot tell anterior from inferior is declined with a reason that says so."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from dicomnode.analysis.aha import (MIDLINE_CAVEAT, MIRRORED_CAVEAT, UNUSUAL_TURN_ANTERIOR_POSTERIOR,
                                    UNUSUAL_TURN_APEX_RIGHT, UNUSUAL_TURN_RV_AND_APEX_LEFT, UNUSUAL_TURN_START,
                                    aha_segments, aha_summary_for_volume, basal_end_for_volume,
                                    basal_end_from_geometry, geometry_warnings, heart_handedness, rv_side_offset_mm,
                                    unusual_turn_caveat)
from dicomnode.labels import Label
from tests.analysis.test_aha import add_scar, stack

SPACING = (1.5, 1.5)
STEP_MM = 8.0
MIRROR = np.diag([-1.0, 1.0, 1.0])  # across the patient's sagittal plane (x -> -x)


def short_axis_geometry(apex_lps):
    """(row direction, column direction, normal) of the usual short-axis display of a heart whose apex points along
    `apex_lps`: seen from the apex (normal = apex -> base), anterior up (column direction ~ posterior), the
    patient's left on the viewer's right."""
    apex = np.asarray(apex_lps, dtype=float) / np.linalg.norm(apex_lps)
    normal = -apex
    col = np.array([0.0, 1.0, 0.0]) - normal[1] * normal
    col /= np.linalg.norm(col)
    row = np.cross(col, normal)
    return row, col, normal


def normal_heart(apex_lps=(1.0, -1.0, -1.0)):
    """A normally placed heart: the test rings seen from the apex (RV arc 90..210 degrees: upper left on screen =
    anterior and to the patient's right), slices ascending along the normal (apex first), and its Volume."""
    labels = stack(from_apex=True)[::-1].copy()
    row, col, normal = short_axis_geometry(apex_lps)
    positions = np.array([k * STEP_MM * normal for k in range(labels.shape[0])])
    volume = SimpleNamespace(orientation=[*row, *col], positions=positions, pixel_spacing=SPACING)
    return labels, volume


def mirrored(labels, volume):
    """The same pixels with the geometry mirrored across the sagittal plane (the heart of situs inversus), the
    slices re-sorted so that they still ascend along the new normal (row x column), as the loader sorts them."""
    orientation = np.asarray(volume.orientation, dtype=float)
    row, col = MIRROR @ orientation[:3], MIRROR @ orientation[3:]
    positions = volume.positions @ MIRROR.T
    order = np.argsort(positions @ np.cross(row, col))
    return labels[order].copy(), SimpleNamespace(orientation=[*row, *col], positions=positions[order],
                                                 pixel_spacing=SPACING), order


def test_a_normal_heart_runs_counter_clockwise_from_the_apex_with_no_caveat():
    labels, volume = normal_heart()
    assert rv_side_offset_mm(labels, SPACING, volume.orientation) < -10  # RV to the patient's right
    block = aha_summary_for_volume(labels, volume)
    assert block["applicable"] and block["basal_end"] == "last"
    assert "caveat" not in block
    assert block["rv_insertion"]["segments_run"] == "counter-clockwise seen from the apex"
    assert block["rv_insertion"]["rv_side"] == "right"


@pytest.mark.parametrize("apex_lps", [(1.0, -1.0, -1.0), (1.0, -0.5, -0.5), (0.6, -1.0, -0.3)])
def test_a_mirrored_heart_keeps_its_anatomical_segments_and_gets_the_dextrocardia_caveat(apex_lps):
    labels, volume = normal_heart(apex_lps)
    for k in range(labels.shape[0]):
        if (labels[k] == Label.LV_BLOOD_POOL).any():  # inferior and inferoseptal scar: RCA territory
            add_scar(labels, k, 180.0, 260.0, from_apex=True)
    normal = aha_summary_for_volume(labels, volume)
    flipped_labels, flipped_volume, order = mirrored(labels, volume)
    assert rv_side_offset_mm(flipped_labels, SPACING, flipped_volume.orientation) > 10  # RV to the patient's left
    mirror = aha_summary_for_volume(flipped_labels, flipped_volume)
    assert normal["applicable"] and mirror["applicable"], mirror.get("reason")
    assert mirror["caveat"] == MIRRORED_CAVEAT and "caveat" not in normal
    assert mirror["rv_insertion"]["segments_run"] == "clockwise seen from the apex"
    # the same anatomy: the same segments hold the scar, and every voxel has the same segment
    scarred = {s["segment"] for s in normal["segments"] if (s["scar_extent_percent"] or 0) > 20}
    assert scarred and scarred <= {3, 4, 9, 10, 15}
    assert {s["segment"]: s["scar_extent_percent"] for s in mirror["segments"]} == \
        {s["segment"]: s["scar_extent_percent"] for s in normal["segments"]}
    thirds = {level: sorted(int(order[k]) for k in slices) for level, slices in mirror["thirds"].items()}
    assert thirds == {level: sorted(slices) for level, slices in normal["thirds"].items()}


def test_the_anterior_insertion_point_follows_the_patient_not_the_screen():
    # the normal heart given basal end and geometry directly: the same map with the image stored mirrored left-right
    # (columns reversed: row direction reversed), whatever the screen handedness
    labels, volume = normal_heart()
    positions = volume.positions @ np.cross(volume.orientation[:3], volume.orientation[3:])
    first = aha_segments(labels, SPACING, positions, "last", orientation=volume.orientation)
    row, col = -np.asarray(volume.orientation[:3]), np.asarray(volume.orientation[3:])
    stored = labels[::-1, :, ::-1]  # reversed columns flip the normal: the slices re-sorted along it
    second = aha_segments(stored, SPACING, -positions[::-1], "first", orientation=[*row, *col])
    assert first.applicable and second.applicable and first.caveat is None and second.caveat is None
    np.testing.assert_array_equal(second.segment_map[::-1, :, ::-1], first.segment_map)


def test_a_plane_without_an_anterior_direction_names_the_segments_from_the_anatomy():
    """break46c finding 5: the RV insertion points come from the heart's anatomy (counter-clockwise seen from the apex),
    so a plane whose geometry holds no anterior direction (a coronal plane: rows to the patient's left, columns
    inferior) no longer declines them: the same segments as in the short-axis geometry."""
    labels, volume = normal_heart()
    positions = volume.positions @ np.cross(volume.orientation[:3], volume.orientation[3:])
    short_axis = aha_segments(labels, SPACING, positions, "last", orientation=volume.orientation)
    result = aha_segments(labels, SPACING, np.arange(labels.shape[0]) * STEP_MM, "last",
                          orientation=[1.0, 0.0, 0.0, 0.0, 0.0, -1.0])
    assert result.applicable and result.rv_insertion["segments_run"] == "counter-clockwise seen from the apex"
    np.testing.assert_array_equal(result.segment_map, short_axis.segment_map)


def test_basal_end_follows_the_side_of_the_apex():
    mirrored_axis = MIRROR @ np.array([1.0, -0.5, -0.5])  # nearly orthogonal to a levocardic long axis
    with pytest.raises(ValueError, match="orthogonal"):
        basal_end_from_geometry(mirrored_axis)
    assert basal_end_from_geometry(mirrored_axis, apex_side="right") == "first"
    with pytest.raises(ValueError, match="dextrocardia"):
        basal_end_from_geometry([0.0, 0.7, -0.7], apex_side="right")
    labels, volume = normal_heart((1.0, -0.5, -0.5))
    assert basal_end_for_volume(labels, volume) == "last"
    flipped_labels, flipped_volume, _ = mirrored(labels, volume)
    assert basal_end_for_volume(flipped_labels, flipped_volume) == "first"  # re-sorted: apex last


@pytest.mark.parametrize("degrees", [90.0, -90.0])
def test_an_rv_straight_in_front_of_or_behind_the_lv_gets_the_midline_caveat(degrees):
    """break42b: a heart whose RV lies neither right nor left of the LV (mesocardia) got no caveat."""
    from scipy import ndimage
    labels, volume = normal_heart()
    turned = np.stack([ndimage.rotate(image, degrees, reshape=False, order=0) for image in labels])
    assert abs(rv_side_offset_mm(turned, SPACING, volume.orientation)) < 5.0
    block = aha_summary_for_volume(turned, volume)
    assert block["applicable"] and block["caveat"] == MIDLINE_CAVEAT
    assert block["rv_insertion"]["rv_side"] is None
    assert geometry_warnings(block) == [f"AHA segments: {MIDLINE_CAVEAT}"]
    assert geometry_warnings(aha_summary_for_volume(labels, volume)) == []


def _rotated_in_plane(volume, degrees: float):
    """The volume's geometry turned about its normal by `degrees` (the same pixels, the heart turned in the body)."""
    orientation = np.asarray(volume.orientation, dtype=float)
    row, col = orientation[:3], orientation[3:]
    theta = np.radians(degrees)
    return SimpleNamespace(orientation=[*(np.cos(theta) * row + np.sin(theta) * col),
                                        *(-np.sin(theta) * row + np.cos(theta) * col)],
                           positions=volume.positions, pixel_spacing=SPACING)


def test_an_rv_straight_to_the_right_of_the_lv_keeps_a_normal_hearts_segments():
    """break46a #1: on real MyoPS geometry (Case3002) the RV lies straight to the patient's right of the LV, so its
    insertion points lie about equally far anterior, and the node declined the AHA segments ("dextrocardia / situs
    inversus?"). The heart's own handedness now names them (break46c #5): every turn of the heart in the body gives
    the same segments, never the mirrored-heart caveat."""
    labels, volume = normal_heart()
    positions = np.asarray(volume.positions) @ np.cross(volume.orientation[:3], volume.orientation[3:])
    reference = aha_segments(labels, SPACING, positions, "last", orientation=volume.orientation)
    for degrees in np.arange(-90.0, 90.5, 2.5):  # turns of the heart in the body, the pixels as they are
        candidate = _rotated_in_plane(volume, degrees)
        result = aha_segments(labels, SPACING, positions, "last", orientation=candidate.orientation)
        assert result.applicable, (degrees, result.reason)
        assert MIRRORED_CAVEAT not in (result.caveat or ""), degrees
        assert result.rv_insertion["segments_run"] == "counter-clockwise seen from the apex"
        np.testing.assert_array_equal(result.segment_map, reference.segment_map)


@pytest.mark.parametrize("side, apex, separation, named", [
    ("left", "left", 0.0, [UNUSUAL_TURN_RV_AND_APEX_LEFT]),
    ("right", "right", 0.0, [UNUSUAL_TURN_APEX_RIGHT]),
    ("right", "left", 0.5, [UNUSUAL_TURN_ANTERIOR_POSTERIOR]),
    ("right", "right", 0.5, [UNUSUAL_TURN_APEX_RIGHT, UNUSUAL_TURN_ANTERIOR_POSTERIOR]),
])
def test_the_unusual_turn_caveat_names_the_disagreement_found_not_every_possible_one(side, apex, separation, named):
    """break49b #7: the caveat listed all three possible disagreements on ACDC hearts where only the anterior insertion
    point lying posterior applied (rv_side right): a reader could not tell which was seen."""
    direction, caveat = heart_handedness(side, apex, separation)
    others = {UNUSUAL_TURN_RV_AND_APEX_LEFT, UNUSUAL_TURN_APEX_RIGHT, UNUSUAL_TURN_ANTERIOR_POSTERIOR} - set(named)
    assert direction == 1 and caveat == unusual_turn_caveat(named) and caveat.startswith(UNUSUAL_TURN_START)
    assert all(text in caveat for text in named) and not any(text in caveat for text in others)
    # every output lists it whole, beside the other caveats of the block
    block = {"caveat": f"{caveat}; {MIDLINE_CAVEAT}"}
    assert geometry_warnings(block) == [f"AHA segments: {caveat}", f"AHA segments: {MIDLINE_CAVEAT}"]
    assert heart_handedness("right", "left", 0.0) == (1, None)
