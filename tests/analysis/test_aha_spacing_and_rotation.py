"""AHA segments are a property of the heart, not of its encoding (break46c findings 4 and 5): angles in millimetres
(PixelSpacing), so non-square pixels do not move segments; the RV side from the image anatomy and the basal end
from geometry a rigid rotation of the whole patient frame does not change, so a rotated frame never reads as a
mirrored heart."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from dicomnode.analysis.aha import MIRRORED_CAVEAT, aha_summary_for_volume
from dicomnode.labels import Label
from tests.analysis.test_aha import add_scar
from tests.analysis.test_aha_patient_geometry import SPACING, mirrored, normal_heart


def _scarred_heart():
    labels, volume = normal_heart()
    for k in range(labels.shape[0]):
        if (labels[k] == Label.LV_BLOOD_POOL).any():  # septal and inferior scar
            add_scar(labels, k, 160.0, 250.0, from_apex=True)
    return labels, volume


def _extents(block):
    return {s["segment"]: s["scar_extent_percent"] for s in block["segments"]}


@pytest.mark.parametrize("axis", [1, 2])
def test_non_square_pixels_give_the_same_segments(axis):
    """The same heart with its rows (or columns) stored at twice the resolution: PixelSpacing halved along that axis,
    each pixel repeated; the insertion points and every segment's scar extent stay put."""
    labels, volume = _scarred_heart()
    base = aha_summary_for_volume(labels, volume, wall_thickness=True)
    fine = np.repeat(labels, 2, axis=axis)
    spacing = list(SPACING)
    spacing[axis - 1] /= 2.0
    upsampled = aha_summary_for_volume(fine, SimpleNamespace(orientation=volume.orientation,
                                                             positions=volume.positions, pixel_spacing=tuple(spacing)),
                                       wall_thickness=True)
    assert base["applicable"] and upsampled["applicable"], upsampled.get("reason")
    for key in ("anterior_deg", "inferior_deg"):
        assert abs((base["rv_insertion"][key] - upsampled["rv_insertion"][key] + 180) % 360 - 180) < 2.0
    before, after = _extents(base), _extents(upsampled)
    assert max(abs(before[s] - after[s]) for s in before if before[s] is not None) < 3.0, (before, after)
    walls = [(a.get("wall_thickness_mm"), b.get("wall_thickness_mm")) for a, b in zip(base["segments"],
                                                                                     upsampled["segments"])]
    assert all(abs(a - b) < 0.5 for a, b in walls if a is not None), walls  # the ring wall: 10 pixels of 1.5 mm


def _rotation(axis, degrees):
    a = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    k = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
    t = np.radians(degrees)
    return np.eye(3) + np.sin(t) * k + (1.0 - np.cos(t)) * k @ k


def _rotated(volume, rotation):
    """The same pixels in a rigidly rotated patient frame: both ImageOrientationPatient vectors and every
    ImagePositionPatient multiplied by one rotation (a proper rotation: det +1), slice order unchanged (the normal
    rotates with the frame, so the slices still ascend along it)."""
    orientation = np.asarray(volume.orientation, dtype=float)
    return SimpleNamespace(orientation=[*(rotation @ orientation[:3]), *(rotation @ orientation[3:])],
                           positions=volume.positions @ rotation.T, pixel_spacing=volume.pixel_spacing)


@pytest.mark.parametrize("axis, degrees", [("normal", 30), ("normal", 60), ("normal", 120), ("normal", 180),
                                           ("normal", 270), ("z", 20), ("z", -20), ("z", 45), ("z", -45)])
def test_a_rigid_rotation_of_the_frame_keeps_every_segment_and_never_reads_as_a_mirrored_heart(axis, degrees):
    """break46c finding 5: rotations about the stack normal and about the head-foot axis of a normal heart: the same
    basal end, the same segment for every voxel, the same scar per segment, never the dextrocardia caveat (a
    rotation cannot mirror a heart) and never a refusal."""
    labels, volume = _scarred_heart()
    base = aha_summary_for_volume(labels, volume)
    normal = np.cross(volume.orientation[:3], volume.orientation[3:])
    rotation = _rotation(normal if axis == "normal" else [0.0, 0.0, 1.0], degrees)
    turned = aha_summary_for_volume(labels, _rotated(volume, rotation))
    assert turned["applicable"], turned.get("reason")
    assert turned["basal_end"] == base["basal_end"]
    assert MIRRORED_CAVEAT not in (turned.get("caveat") or "")
    assert turned["rv_insertion"]["segments_run"] == "counter-clockwise seen from the apex"
    assert _extents(turned) == _extents(base)
    assert [s["slices"] for s in turned["segments"]] == [s["slices"] for s in base["segments"]]


def test_a_true_mirror_image_is_still_recognised():
    """The mirror image of the same heart (the frame reflected across the sagittal plane: det -1, no rotation does
    this) keeps the dextrocardia caveat and its anatomical segments; any rotation of it keeps them too."""
    labels, volume = _scarred_heart()
    base = aha_summary_for_volume(labels, volume)
    mirrored_labels, mirrored_volume, _ = mirrored(labels, volume)
    for rotation in (np.eye(3), _rotation([0.0, 0.0, 1.0], 20.0)):
        block = aha_summary_for_volume(mirrored_labels, _rotated(mirrored_volume, rotation))
        assert block["applicable"] and block["caveat"] == MIRRORED_CAVEAT, block.get("reason")
        assert _extents(block) == _extents(base)
