"""Slices of one stack whose planes differ a little (float noise in ImageOrientationPatient, each slice tilted about
its own centre by a fraction of a degree), and one position shared by distinct slices: positions are measured at the
slice centres on the stack's mean normal, +-1 degree of jitter stays one stack, and a refused stack says why
(break37 findings 1, 2 and 5); a few slices tilted out of a dominant plane (at most one position in four) are left
out of the stack and named, not the whole stack refused (break1, s08 e8; `frames.tilted_slices`)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import MRImageStorage, generate_uid
from scipy.spatial.transform import Rotation

from dicomnode.analysis.phase_text import other_views_text
from dicomnode.cmr.frames import (frames_of, mean_orientation, orientation_groups, parallel_stacks, slice_centre,
                                  slice_groups, stack_plane, tilted_slices)
from dicomnode.cmr.recognize import StackViewRule, build_evidence
from dicomnode.cmr.types import InstanceHeader, Recognition
from dicomnode.cmr.volume import in_plane_shift_mm

ROW = np.array([0.70710678, 0.70710678, 0.0])
COL = np.array([-0.40824829, 0.40824829, -0.81649658])
NORMAL = np.cross(ROW, COL)
ROWS, COLS, SPACING, STEP = 240, 256, 1.25, 12.0
SERIES = generate_uid()


def header(centre, row=ROW, col=COL, slice_location=None, trigger=400.0) -> InstanceHeader:
    """A classic LGE-like MR header (no pixels) whose image is centred at `centre` (3,) mm."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.SeriesInstanceUID = MRImageStorage, generate_uid(), SERIES
    ds.Rows, ds.Columns, ds.PixelSpacing = ROWS, COLS, [SPACING, SPACING]
    ds.ImageOrientationPatient = [float(v) for v in np.concatenate([row, col])]
    corner = np.asarray(centre) - row * SPACING * (COLS - 1) / 2 - col * SPACING * (ROWS - 1) / 2
    ds.ImagePositionPatient = [float(v) for v in corner]
    ds.TriggerTime, ds.InversionTime = trigger, 300.0
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NORM"]
    if slice_location is not None:
        ds.SliceLocation = slice_location
    return InstanceHeader(Path("/dev/null"), ds.SOPInstanceUID, ds.SOPClassUID, SERIES, ds)


def tilted_stack(degrees: float, slices: int = 6):
    """Frames of a stack whose slice centres lie STEP mm apart on NORMAL, each slice turned about its own centre by
    +-degrees, alternately about the row and the column direction (break37 build2.py `tilt`)."""
    frames = []
    for k in range(slices):
        rotation = Rotation.from_rotvec(np.radians(degrees * (1 if k % 3 else -1)) * (ROW if k % 2 else COL))
        frames += frames_of(header(NORMAL * STEP * k, rotation.apply(ROW), rotation.apply(COL)))
    return frames


@pytest.mark.parametrize("degrees", [0.5, 1.0, 1.5])
def test_slices_tilted_about_their_centres_are_one_stack_at_their_true_spacing(degrees):
    frames = tilted_stack(degrees)
    groups = orientation_groups(frames)
    assert len(groups) == 1  # the first slice's orientation as reference split +-1 degree at 2 degrees apart
    distances = [d for d, _ in slice_groups(groups[0])]
    np.testing.assert_allclose(np.diff(distances), STEP, atol=1e-3)  # corner positions gave 15.05 / 8.95 mm at 0.5
    # under the 0.5 mm of the shift warning (the mean plane leans a little against the line of centres)
    assert in_plane_shift_mm([members[0] for _, members in slice_groups(groups[0])]) < 0.5


def test_slices_three_degrees_apart_are_split_and_the_view_says_they_are_not_parallel():
    frames = tilted_stack(3.0)
    assert len(orientation_groups(frames)) > 1
    recognition = StackViewRule().recognize(build_evidence("k", frames), None)
    assert recognition.value == "other"
    assert any(note.startswith("slices not parallel: up to 6.0 deg apart") for note in recognition.evidence)
    series = SimpleNamespace(sequence=Recognition("lge", 0.9), view=Recognition("other", 0.9, [
        f"[stack-view-rule] {note}" for note in recognition.evidence]), series_number=1001,
        description="tfl_LGE_SAX")
    text = other_views_text([series], "lge")
    assert "slices not parallel: up to 6.0 deg apart" in text and "only in other views" not in text


def test_a_slowly_turning_series_is_not_chained_into_one_stack():
    # 1.5 degrees between neighbours, 12 degrees end to end: each neighbour is within the tolerance, the stack is not
    frames = []
    for k in range(9):
        rotation = Rotation.from_rotvec(np.radians(1.5 * k) * COL)
        frames += frames_of(header(NORMAL * STEP * k, rotation.apply(ROW), rotation.apply(COL)))
    assert len(orientation_groups(frames)) > 1


def test_parallel_slices_keep_their_header_geometry_exactly():
    frames = [frame for k in range(4) for frame in frames_of(header(NORMAL * STEP * k + [0.3, -0.2, 0.1]))]
    orientation, positions = stack_plane(frames)
    assert np.array_equal(orientation, frames[0].orientation)
    assert np.array_equal(positions, [f.position for f in frames])
    distances = [d for d, _ in slice_groups(frames)]
    np.testing.assert_allclose(distances, [float(np.dot(f.position, frames[0].normal)) for f in frames], atol=1e-9)


def test_stack_plane_centres_each_tilted_slice_in_the_mean_plane():
    frames = tilted_stack(1.0)
    orientation, positions = stack_plane(frames)
    np.testing.assert_allclose(np.linalg.norm(orientation[:3]), 1.0)
    np.testing.assert_allclose(np.dot(orientation[:3], orientation[3:]), 0.0, atol=1e-12)
    assert orientation == pytest.approx(mean_orientation([f.orientation for f in frames]))
    half = orientation[:3] * SPACING * (COLS - 1) / 2 + orientation[3:] * SPACING * (ROWS - 1) / 2
    np.testing.assert_allclose(positions + half, [slice_centre(f) for f in frames], atol=1e-9)


def test_orientations_differing_in_the_sixth_decimal_are_one_stack():
    frames = [frame for k in range(6) for frame in frames_of(header(
        NORMAL * STEP * k, ROW + (1e-6 if k % 2 else 0.0), COL - (1e-6 if k % 2 else 0.0)))]
    assert len(orientation_groups(frames)) == 1
    np.testing.assert_allclose(np.diff([d for d, _ in slice_groups(frames)]), STEP, atol=1e-3)


def test_distinct_slices_written_at_one_position_are_named_broken_geometry():
    frames = [frame for k in range(6) for frame in frames_of(header(np.zeros(3), slice_location=-30.0 + 12.0 * k))]
    recognition = StackViewRule().recognize(build_evidence("k", frames), None)
    assert recognition.value == "other"
    assert any("broken geometry header: 6 images" in note and "SliceLocation differs (-30 to 30 mm)" in note
               for note in recognition.evidence)


def test_phases_of_one_position_are_not_broken_geometry():
    # a cine slice: one position and SliceLocation, TriggerTimes differ
    frames = [frame for p in range(5) for frame in frames_of(header(np.zeros(3), slice_location=4.0,
                                                                    trigger=40.0 * p))]
    assert not build_evidence("k", frames).geometry_notes


def _two_clusters(first_deg: float, second_deg: float, slices: int = 6):
    """Frames of a stack whose first half is turned by first_deg and second half by second_deg about COL (two
    breath-hold groups, break37b `clusters_pm1.2deg`)."""
    frames = []
    for k in range(slices):
        rotation = Rotation.from_rotvec(np.radians(first_deg if k < slices // 2 else second_deg) * COL)
        frames += frames_of(header(NORMAL * STEP * k, rotation.apply(ROW), rotation.apply(COL)))
    return frames


@pytest.mark.parametrize("first_deg, second_deg", [(1.2, -1.2), (0.0, 2.5)])
def test_planes_within_the_tolerance_of_their_mean_are_one_stack(first_deg, second_deg):
    """The stated rule (break37b finding 5): planes within 2 degrees of their group's mean make one stack, even
    when two of them are more than 2 degrees apart (+-1.2 degrees: 2.4 apart, 1.2 from the mean)."""
    assert len(orientation_groups(_two_clusters(first_deg, second_deg))) == 1


def test_planes_farther_than_the_tolerance_from_their_mean_are_split_and_the_note_says_why():
    frames = _two_clusters(0.0, 5.0)
    assert len(orientation_groups(frames)) == 2
    recognition = StackViewRule().recognize(build_evidence("k", frames), None)
    (note,) = [n for n in recognition.evidence if n.startswith("slices not parallel")]
    assert "up to 5.0 deg apart" in note and "up to 2.5 deg from their mean plane" in note
    assert "planes within 2 deg of their group's mean plane make one stack" in note


# --- one slice tilted out of the stack (break1 s08 e8): left out, the rest measured (frames.tilted_slices) ----------

def _stack(degrees: list[float], axis=COL) -> list:
    """Frames of a stack, slice k turned by degrees[k] about `axis` (its own centre), STEP mm apart on NORMAL."""
    frames = []
    for k, angle in enumerate(degrees):
        rotation = Rotation.from_rotvec(np.radians(angle) * axis)
        frames += frames_of(header(NORMAL * STEP * k, rotation.apply(ROW), rotation.apply(COL)))
    return frames


def test_one_frame_tilted_three_degrees_in_a_jittered_stack_is_left_out():
    """break1 e8: +-0.8 degrees of jitter is one stack; one slice at 3 degrees is left out, the rest one stack."""
    frames = _stack([3.0, -0.8, 0.8, -0.8, 0.8])
    assert len(orientation_groups(frames)) > 1
    found = tilted_slices(frames)
    assert found is not None and found.tilted == frames[:1] and found.kept == frames[1:]
    assert (found.positions, found.tilted_positions) == (5, 1)
    assert found.angle_deg(frames[0]) == pytest.approx(3.0, abs=0.05)
    assert parallel_stacks(frames) == [(frames[1:], frames[:1])]
    evidence = build_evidence("k", frames)
    assert evidence.single_orientation and evidence.slices == 4 and not evidence.geometry_notes
    (note,) = evidence.tilted_notes
    assert note.startswith(f"tilted slice: instance {frames[0].ref.sop_instance_uid}") and "3.0 deg" in note


@pytest.mark.parametrize("degrees, tilted", [
    ([0, 0, 0, 4.0], 1),  # 1 of 4
    ([0, 0, 0, 0, 0, 0, 0, 3.0], 1),
    ([0, 3.0, 0, 0, 0, 0, 0, -3.0], 2),  # 2 of 8
])
def test_at_most_one_slice_position_in_four_is_left_out(degrees, tilted):
    found = tilted_slices(_stack(degrees))
    assert found is not None and found.tilted_positions == tilted


@pytest.mark.parametrize("degrees", [
    [0, 0, 4.0],  # 1 of 3
    [0, 3.0, 0, 0, 0, -3.0],  # 2 of 6
    [0, 0, 0, 5.0, 5.0, 5.0],  # half and half: no dominant plane
    [0, 2.5, 5.0, 0, 2.5, 5.0],  # three equal clusters: no dominant plane
])
def test_too_many_tilted_slices_or_no_dominant_plane_is_not_parallel(degrees):
    frames = _stack(degrees)
    assert tilted_slices(frames) is None
    assert [tilted for _, tilted in parallel_stacks(frames)] == [[]] * len(orientation_groups(frames))
    recognition = StackViewRule().recognize(build_evidence("k", frames), None)
    assert recognition.value == "other"
    assert any(n.startswith("slices not parallel") and "at most one slice position in 4" in n
               for n in recognition.evidence)


def test_a_cine_slice_counts_once_whatever_its_phases():
    """A tilted cine slice of 10 phases is one slice position of 5, not 10 images against 40."""
    frames = []
    for k, angle in enumerate([0, 0, 3.0, 0, 0]):
        rotation = Rotation.from_rotvec(np.radians(angle) * COL)
        frames += [f for p in range(10) for f in frames_of(header(NORMAL * STEP * k, rotation.apply(ROW),
                                                                  rotation.apply(COL), trigger=40.0 * p))]
    found = tilted_slices(frames)
    assert found is not None and (found.positions, found.tilted_positions) == (5, 1) and len(found.tilted) == 10
    evidence = build_evidence("k", frames)
    assert (evidence.slices, evidence.phases) == (4, 10) and "(10 images)" in evidence.tilted_notes[0]


def test_another_view_in_the_series_stays_a_stack_of_its_own():
    """break1 e7: a perpendicular (4-chamber-like) frame in a SAX series is another view, not a tilted slice; with a
    3-degree slice in the SAX stack too, that slice is left out of the SAX stack and the other view kept apart."""
    sax = _stack([0, 0, 3.0, 0, 0])
    lax = frames_of(header(NORMAL * STEP * 2, NORMAL, COL))
    stacks = parallel_stacks(sax + lax)
    assert stacks == [(sax[:2] + sax[3:], sax[2:3]), (lax, [])]
    assert tilted_slices(_stack([0, 0, 0, 0]) + lax) is None  # nothing tilted in the SAX view
