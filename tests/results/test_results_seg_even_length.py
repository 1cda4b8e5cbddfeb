"""break46a #4: a FRACTIONAL SEG whose Rows x Columns x frames is odd had its Pixel Data padded by one byte (PS3.5
8.1.1), and OHIF's whole-instance read rejected it ("Invalid frame length: 1305606 for 5 frames"). Where the SEG
has a declared segment without a frame on one of its positions, an empty frame of it makes the length even."""
from __future__ import annotations

import highdicom as hd
import numpy as np
import pytest

from dicomnode.results.objects import build_result_objects
from synthetic import make_study, write
from validators import dciodvfy


@pytest.fixture(scope="module")
def odd_segs():
    """The SEGs of a study of 47 x 39 images (odd: FRACTIONAL), 4 LGE slices: the LGE SEG holds 11 non-empty frames."""
    study, results, context = make_study(slices=4, cine_phases=4, rows=47, cols=39)
    return [d for d in build_result_objects(study, results, context) if d.Modality == "SEG"]


def test_an_odd_fractional_seg_gets_one_empty_frame_and_an_even_length(odd_segs, tmp_path):
    lge = odd_segs[0]
    assert lge.SegmentationType == "FRACTIONAL" and (lge.Rows * lge.Columns) % 2 == 1
    frames = int(lge.NumberOfFrames)
    assert frames == 12 and len(lge.PixelData) == lge.Rows * lge.Columns * frames  # even: no pad byte
    pixels = np.frombuffer(lge.PixelData, np.uint8).reshape(frames, lge.Rows, lge.Columns)
    empty = [n for n in range(frames) if not pixels[n].any()]
    assert len(empty) == 1
    added = lge.PerFrameFunctionalGroupsSequence[empty[0]]
    pairs = [(int(f.SegmentIdentificationSequence[0].ReferencedSegmentNumber),
              tuple(f.PlanePositionSequence[0].ImagePositionPatient)) for f in lge.PerFrameFunctionalGroupsSequence]
    assert len(set(pairs)) == frames  # no segment twice on one position
    assert int(added.SegmentIdentificationSequence[0].ReferencedSegmentNumber) in {
        int(s.SegmentNumber) for s in lge.SegmentSequence}
    source = added.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
    same_place = [f for f in lge.PerFrameFunctionalGroupsSequence if f is not added and tuple(
        f.PlanePositionSequence[0].ImagePositionPatient) == tuple(added.PlanePositionSequence[0].ImagePositionPatient)]
    assert same_place and all(f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID == source
                              for f in same_place)
    path = write(lge, tmp_path / "seg.dcm")
    assert path.stat().st_size % 2 == 0
    read = hd.seg.Segmentation.from_dataset(lge)  # highdicom reads it back, frames unambiguous
    assert read.number_of_frames == frames
    findings = dciodvfy(path)
    assert not findings.errors, findings


def test_a_seg_with_every_segment_on_every_position_keeps_its_frames(odd_segs):
    """No empty frame is possible where each declared segment has a frame on each position: the SEG is left as it
    is (OHIF then reads it frame by frame), never a second frame for a segment and position."""
    for seg in odd_segs[1:]:
        pairs = {(int(f.SegmentIdentificationSequence[0].ReferencedSegmentNumber),
                  tuple(f.PlanePositionSequence[0].ImagePositionPatient)) for f in seg.PerFrameFunctionalGroupsSequence}
        assert len(pairs) == int(seg.NumberOfFrames)
        pixels = np.frombuffer(seg.PixelData[:seg.Rows * seg.Columns * int(seg.NumberOfFrames)], np.uint8)
        assert all(frame.any() for frame in pixels.reshape(int(seg.NumberOfFrames), -1))
