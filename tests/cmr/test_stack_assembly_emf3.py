"""Stack assembly, Enhanced MR third round (break37c_emf findings 1, 3, 4): a frame without its own
FrameAcquisitionDateTime takes its instance's AcquisitionDateTime and is never split off as a pass by a time of
another kind; a re-sent Enhanced instance is one warning and one excluded instance; messages name the attribute read."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from dicomnode.cmr.frames import FrameInfo, frames_of, pass_source, slice_passes, temporal_index_name
from dicomnode.cmr.types import FrameRef, InstanceHeader
from dicomnode.cmr.volume import duplicate_reasons, whole_instances_left_out

SAX = np.array([1.0, 0, 0, 0, 1.0, 0])
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"


def _header(uid: str, ds: Dataset | None = None) -> InstanceHeader:
    ds = ds if ds is not None else Dataset()
    ds.SOPInstanceUID = uid
    return InstanceHeader(Path("/dev/null"), uid, ENHANCED_MR, "1.2.3", ds)


def _frame(header: InstanceHeader, number: int, *, trigger: float, acquired: float | None,
           instance_time: bool = False, z: float = 0.0) -> FrameInfo:
    return FrameInfo(header=header, ref=FrameRef(header.sop_instance_uid, ENHANCED_MR, "1.2.3", number),
                     position=np.array([0.0, 0.0, z]), orientation=SAX, pixel_spacing=(1.0, 1.0), rows=8, cols=8,
                     trigger_time=trigger, temporal_index=number, acquisition_time=acquired, instance_number=1,
                     inversion_time=None, rescale=(1.0, 0.0), frame_index=number - 1, instance_time=instance_time)


def _enhanced(frame_times: list[str | None]) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = ENHANCED_MR
    ds.NumberOfFrames = len(frame_times)
    ds.AcquisitionDateTime = "20240102084000"
    ds.ContentDate, ds.ContentTime = "20240102", "091500"
    items = []
    for k, when in enumerate(frame_times):
        content = Dataset()
        content.TemporalPositionIndex = k + 1
        if when is not None:
            content.FrameAcquisitionDateTime = when
        item = Dataset()
        item.FrameContentSequence = [content]
        items.append(item)
    ds.PerFrameFunctionalGroupsSequence = items
    ds.SharedFunctionalGroupsSequence = [Dataset()]
    return ds


def test_a_frame_without_its_own_time_takes_the_instances_acquisition_datetime():
    frames = frames_of(_header("E", _enhanced(["20240102084512.5", None])))
    assert frames[0].acquisition_time == 8 * 3600 + 45 * 60 + 12.5 and not frames[0].instance_time
    assert frames[1].acquisition_time == 8 * 3600 + 40 * 60 and frames[1].instance_time
    assert frames[1].acquired_at is not None and frames[1].acquired_at > 86400  # dated, not ContentTime
    assert [pass_source(f) for f in frames] == ["frame acquisition", "instance acquisition"]


def _one_slice(stand_in: str) -> list[FrameInfo]:
    """10 phases of one slice timed by their own acquisition times (one breath-hold, 30 000 s); phases 3 and 7 timed
    by a stand-in far from them: the instance's acquisition time, or ContentTime (no acquisition time at all)."""
    own = _header("E")
    content = Dataset()
    content.ContentTime = "091500"
    untimed = _header("E", content) if stand_in == "content" else own
    frames = []
    for k in range(1, 11):
        if k in (3, 7):
            frames.append(_frame(untimed, k, trigger=80.0 * k, acquired=None if stand_in == "content" else 100.0,
                                 instance_time=stand_in == "instance"))
        else:
            frames.append(_frame(own, k, trigger=80.0 * k, acquired=30000.0 + k * 0.08))
    return frames


def test_frames_timed_by_their_instance_are_not_split_off_as_a_pass():
    frames = _one_slice("instance")
    assert slice_passes(frames) == [frames]


def test_frames_timed_by_content_time_are_not_split_off_as_a_pass():
    frames = _one_slice("content")
    assert pass_source(frames[2]) == "content"
    assert slice_passes(frames) == [frames]


def test_two_passes_of_own_times_are_still_told_apart_and_a_stand_in_joins_its_free_phase():
    header = _header("E")
    first = [_frame(header, k, trigger=80.0 * k, acquired=30000.0 + k * 0.08) for k in range(1, 6)]
    second = [_frame(header, 5 + k, trigger=80.0 * k, acquired=30100.0 + k * 0.08) for k in range(1, 5)]
    stand_in = _frame(header, 10, trigger=400.0, acquired=100.0, instance_time=True)  # phase 5 of the second pass
    for frame in first + second + [stand_in]:
        frame.temporal_index = None  # phases by trigger time
    passes = slice_passes(first + second + [stand_in])
    assert len(passes) == 2 and passes[0] == first and passes[1] == second + [stand_in]


def test_a_resent_instance_is_one_warning_and_one_excluded_instance():
    old, new = _header("OLD", _enhanced([None] * 4)), _header("NEW", _enhanced([None] * 4))
    old.dataset.ContentTime, new.dataset.ContentTime = "084600", "101500"
    pairs = [(_frame(old, k, trigger=0.0, acquired=1.0, z=z), _frame(new, k, trigger=0.0, acquired=1.0, z=z), z)
             for k, z in zip(range(1, 5), (0.0, 0.0, 8.0, 8.0))]
    reasons = duplicate_reasons(pairs)
    assert len(reasons) == 1
    reason, dropped = reasons[0]
    assert "instance OLD (ContentTime 08:46:00): 4 frame(s) at 2 slice(s)" in reason and "kept instance NEW" in reason
    assert len(dropped) == 4
    entries = whole_instances_left_out([(f, reason) for f in dropped])
    assert [e["sop_instance_uid"] for e in entries] == ["OLD"] and entries[0]["reason"].startswith("all 4 frames")
    assert whole_instances_left_out([(f, reason) for f in dropped[:3]]) == []  # some frames used: not excluded


def test_temporal_index_name_names_the_enhanced_attribute():
    enhanced = frames_of(_header("E", _enhanced([None, None])))
    assert temporal_index_name(enhanced) == "TemporalPositionIndex (0020,9128)"
    classic = _frame(_header("C"), 1, trigger=0.0, acquired=None)
    classic.ref = FrameRef("C", ENHANCED_MR, "1.2.3", None)
    assert temporal_index_name([classic]) == "TemporalPositionIdentifier (0020,0100)"
