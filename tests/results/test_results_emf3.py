"""SEG references to a tilted Enhanced MR source (break37c_emf finding 2): each frame whose own plane (per-frame
Plane Orientation Sequence) differs from the SEG's mean plane is named for SpatialLocationsPreserved NO."""
from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset

from dicomnode.results.seg import relocated_sources


def _tilted_enhanced(tilts: list[float]) -> Dataset:
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3.4"
    ds.NumberOfFrames = len(tilts)
    ds.SharedFunctionalGroupsSequence = [Dataset()]
    items = []
    for k, degrees in enumerate(tilts):
        angle = np.radians(degrees)
        orientation, position = Dataset(), Dataset()
        orientation.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, float(np.cos(angle)), float(np.sin(angle))]
        position.ImagePositionPatient = [0.0, 0.0, 10.0 * k]
        item = Dataset()
        item.PlaneOrientationSequence, item.PlanePositionSequence = [orientation], [position]
        items.append(item)
    ds.PerFrameFunctionalGroupsSequence = items
    return ds


def test_tilted_frames_of_a_multi_frame_source_are_relocated_by_frame():
    ds = _tilted_enhanced([1.0, 0.0, -1.0])
    moved = relocated_sources([ds], [1.0, 0, 0, 0, 1.0, 0], np.array([[0, 0, 0], [0, 0, 10.0], [0, 0, 20.0]]))
    assert moved == {("1.2.3.4", 1), ("1.2.3.4", 3)}


def test_an_untilted_multi_frame_source_keeps_its_locations():
    ds = _tilted_enhanced([0.0, 0.0])
    assert relocated_sources([ds], [1.0, 0, 0, 0, 1.0, 0], np.array([[0, 0, 0], [0, 0, 10.0]])) == frozenset()
