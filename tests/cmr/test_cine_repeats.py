"""Repeats inside one cine series (break37 D3, D4): a slice re-acquired in a later breath-hold and appended to the
series keeps its latest pass (or the stack is refused naming the slice where passes cannot be told apart); a whole
stack re-planned and acquired again in the series (StackID 1 and 2, or interleaved without StackID) measures the
later stack, while complementary slabs stay one volume. Real headers: Sunnybrook SCD0000101, 12 slices x 20 phases."""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicomnode.cmr.frames import (FrameInfo, clock_seconds, interleaved_passes, latest_first, partial_repeat, same_range,
                                  slice_passes, tm_seconds, typical_pass_size)
from dicomnode.cmr.types import FrameRef, InstanceHeader, StudyError
from dicomnode.cmr.volume import keep_latest_passes
from cmr_helpers import quiet_invalid_uid_warnings  # noqa: F401 (fixture)
from test_cmr_cine_phases import _cine_volume, _slice_and_phase, scd101  # noqa: F401 (fixture)


def _tm(seconds: float) -> str:
    return f"{int(seconds // 3600):02d}{int(seconds % 3600 // 60):02d}{seconds % 60:09.6f}"


def _seconds(tm: str) -> float:
    return int(tm[:2]) * 3600 + int(tm[2:4]) * 60 + float(tm[4:])


def _again(header, later_s: float, number_offset: int, **changes):
    """A copy of an image acquired `later_s` seconds later in the same series under a new SOPInstanceUID."""
    clone = copy.copy(header)
    clone.dataset = copy.deepcopy(header.dataset)
    clone.sop_instance_uid = clone.dataset.SOPInstanceUID = generate_uid()
    clone.dataset.AcquisitionTime = _tm(_seconds(str(header.dataset.AcquisitionTime)) + later_s)
    clone.dataset.InstanceNumber = int(header.dataset.InstanceNumber) + number_offset
    for keyword, value in changes.items():
        setattr(clone.dataset, keyword, value)
    return clone


def _slice_again(headers, slice_index: int, rr: float | None):
    """Slice `slice_index` re-acquired 10 min later, appended to the series (at RR `rr`: TriggerTimes scaled to it)."""
    where = _slice_and_phase(headers)
    again = []
    for header in (h for h in headers if where[id(h)][0] == slice_index):
        changes = {}
        if rr is not None:
            scale = rr / float(header.dataset.NominalInterval)
            changes = {"TriggerTime": round(float(header.dataset.TriggerTime) * scale, 3), "NominalInterval": rr,
                       "NominalCardiacTriggerDelayTime": round(float(header.dataset.TriggerTime) * scale, 3)}
        again.append(_again(header, 600.0, 1000, **changes))
    return again


def _used(volume) -> set[str]:
    return {ref.sop_instance_uid for phase in volume.frames for ref in phase}


@pytest.mark.parametrize("rr", [700.0, None], ids=["other_rr", "same_trigger_times"])
def test_a_slice_reacquired_inside_the_cine_series_keeps_its_latest_pass(scd101, rr):
    again = _slice_again(scd101, 6, rr)
    series, volume = _cine_volume(scd101 + again)
    assert series.phases == 20
    assert volume.pixels.shape[:2] == (20, 12)
    assert {h.sop_instance_uid for h in again} <= _used(volume)
    where = _slice_and_phase(scd101)
    assert not {h.sop_instance_uid for h in scd101 if where[id(h)][0] == 6} & _used(volume)
    assert not [w for w in volume.warnings if "matches no cardiac phase" in w]
    (warning,) = volume.warnings
    assert "acquired 2 times in this series" in warning and "the earlier pass(es) left out" in warning
    assert sum("acquired 2 times" in e["reason"] for e in volume.excluded) == 20


def test_a_slice_acquired_twice_without_times_to_tell_the_passes_apart_is_refused(scd101):
    again = _slice_again(scd101, 6, 700.0)
    for header in scd101 + again:
        for keyword in ("AcquisitionTime", "ContentTime"):
            if keyword in header.dataset:
                delattr(header.dataset, keyword)
    with pytest.raises(StudyError, match=r"holds 40 images, 2 times the 20 phases of the other slices: that slice "
                                         r"was acquired 2 times"):
        _cine_volume(scd101 + again)


def _restack(headers, shift_mm: float, stack_ids: bool):
    """The whole stack acquired again 15 min later, shifted `shift_mm` along the normal (StackID 1 and 2 when
    `stack_ids`)."""
    again = []
    for header in headers:
        orientation = np.array([float(v) for v in header.dataset.ImageOrientationPatient])
        normal = np.cross(orientation[:3], orientation[3:])
        position = np.array([float(v) for v in header.dataset.ImagePositionPatient]) + shift_mm * normal
        clone = _again(header, 900.0, 240, ImagePositionPatient=[f"{v:.4f}" for v in position],
                       SliceLocation=f"{float(header.dataset.SliceLocation) + shift_mm:.4f}")
        if stack_ids:
            header.dataset.StackID, clone.dataset.StackID = "1", "2"
        again.append(clone)
    return again


@pytest.mark.parametrize("stack_ids", [True, False], ids=["StackID", "interleaved_by_time"])
def test_a_whole_stack_replanned_in_the_series_measures_the_later_stack(scd101, stack_ids):
    again = _restack(scd101, 2.0, stack_ids)
    series, volume = _cine_volume(scd101 + again)
    if stack_ids:
        assert series.slices == 12  # StackID 1 counted once: the series is not one stack of 24 slices
    assert volume.pixels.shape[:2] == (20, 12)
    assert volume.slice_spacing == pytest.approx(10.0, abs=0.01)
    assert _used(volume) == {h.sop_instance_uid for h in again}
    assert not [w for w in volume.warnings if "irregular slice spacing" in w]
    (warning,) = volume.warnings
    assert ("a repeat of the stack" if stack_ids else "two passes, not missing slices") in warning


def test_complementary_slabs_with_two_stack_ids_stay_one_volume(scd101):
    where = _slice_and_phase(scd101)
    for header in scd101:
        apex = where[id(header)][0] >= 6
        header.dataset.StackID = "2" if apex else "1"
        if apex:
            header.dataset.AcquisitionTime = _tm(_seconds(str(header.dataset.AcquisitionTime)) + 900.0)
    _, volume = _cine_volume(scd101)
    assert volume.pixels.shape[:2] == (20, 12) and not volume.warnings


# ---------------------------------------------------------------- pure functions on synthetic frames
def _frame(number: int, acquired: float | None, trigger: float = 0.0) -> FrameInfo:
    uid = f"1.2.3.{number}"
    header = InstanceHeader(path=f"/x/{number}.dcm", dataset=Dataset(), sop_instance_uid=uid, sop_class_uid="1.2",
                            series_instance_uid="1.2.3")
    return FrameInfo(header=header, ref=FrameRef(uid, "1.2", "1.2.3", None), position=None, orientation=None,
                     pixel_spacing=None, rows=4, cols=4, trigger_time=trigger, temporal_index=None,
                     acquisition_time=acquired, instance_number=number, inversion_time=None, rescale=(1.0, 0.0),
                     frame_index=0)


def test_slice_passes_split_at_separate_breath_holds_only():
    one_hold = [_frame(k, 100.0 + 0.5 * k, 40.0 * k) for k in range(5)]
    later = [_frame(10 + k, 400.0 + 0.5 * k, 40.0 * k) for k in range(5)]
    assert slice_passes(one_hold) == [one_hold]
    assert slice_passes(later + one_hold) == [one_hold, later]
    untimed = [_frame(k, None) for k in range(4)]
    assert slice_passes(untimed) == [untimed]
    assert typical_pass_size([one_hold + later, one_hold, one_hold]) == 5
    assert typical_pass_size([[_frame(1, 10.0)], [_frame(2, 20.0), _frame(3, 80.0)]]) == 1  # LGE: one image a pass


def test_same_range_tells_a_repeat_from_complementary_slabs():
    assert same_range([0, 10, 20, 30], [2, 12, 22, 32])
    assert not same_range([0, 10, 20, 30], [30, 40, 50, 60])  # base and apex slabs sharing one position
    assert same_range([5.0], [5.0]) and not same_range([5.0], [15.0])


def test_interleaved_passes_need_alternating_steps_and_separate_time_blocks():
    distances = [0, 2, 10, 12, 20, 22, 30, 32]
    first, second = [100.0 + k for k in range(4)], [900.0 + k for k in range(4)]
    times = [t for pair in zip(first, second) for t in pair]
    assert interleaved_passes(distances, times) == ([0, 2, 4, 6], [1, 3, 5, 7])
    assert interleaved_passes([0, 5, 10, 15, 20, 25, 30, 35], times) is None  # gap filling: even 5 mm steps
    assert interleaved_passes(distances, sorted(times)) is None  # slices acquired in position order
    assert interleaved_passes(distances, times[:-1] + [None]) is None


def test_keep_latest_passes_refuses_an_untimed_double_slice_but_not_one_breath_hold_with_more_phases():
    def stack(acquired):
        return [[_frame(100 * z + p, acquired, 40.0 * p) for p in range(n)] for z, n in enumerate((20, 20, 40, 20))]
    timed = stack(500.0)  # the 40 images of the third slice in one breath-hold: phases, not a repeat
    assert keep_latest_passes("s", timed, [0.0, 10.0, 20.0, 30.0], [], []) == timed
    with pytest.raises(StudyError, match=r"slice at 20.00 mm holds 40 images, 2 times the 20 phases"):
        keep_latest_passes("s", stack(None), [0.0, 10.0, 20.0, 30.0], [], [])
    one_per_slice = [[_frame(1, 10.0)], [_frame(2, 20.0), _frame(3, 80.0)]]  # LGE: keep_latest_repeats serves it
    assert keep_latest_passes("s", one_per_slice, [0.0, 10.0], [], []) == one_per_slice


def test_partial_later_stack_does_not_supersede_the_full_stack():
    """Break37b #1: 4 slices re-acquired (StackID 2) inside a 12-slice StackID 1 do not replace it; a later stack
    over (nearly) the whole range still does; a re-planned partial stack is the one left out."""
    full = [-148.9 + 10.0 * k for k in range(12)]
    part = [-106.9 + 10.0 * k for k in range(4)]
    assert not same_range(part, full)
    assert same_range([d + 2.0 for d in full], full) and same_range(full[1:], full)
    assert partial_repeat(part, full) and not partial_repeat(full[4:8], full)  # same positions merge per slice


def test_phase_halves_split_by_a_time_gap_are_one_pass():
    """Break37b #2: a reconstruction stall between phases 10 and 11 (disjoint TriggerTimes) is one pass."""
    first = [_frame(k, 100.0, 37.0 * k) for k in range(10)]
    second = [_frame(10 + k, 115.0, 37.0 * (10 + k)) for k in range(10)]
    assert slice_passes(first + second) == [first + second]


def test_clock_runs_across_midnight():
    """Break37b #3: 00:08 on the next day is later than 23:58 (AcquisitionDate + AcquisitionTime, or a DT)."""
    assert clock_seconds("000800", "20120102") > clock_seconds("235800", "20120101")
    assert clock_seconds("20120102000800.5") > clock_seconds("20120101235800")
    assert clock_seconds("235800") == tm_seconds("235800") and clock_seconds(None, "20120101") is None
    # break50b #2: the TM form of earlier editions, "HH:MM:SS.frac", which PS3.5 6.2 asks readers to accept
    assert tm_seconds("10:30:00") == tm_seconds("103000") == 37800.0 and tm_seconds("10:30:00.5") == 37800.5
    assert clock_seconds("00:08:00", "20120102") == clock_seconds("000800", "20120102")
    # review50 #11: a DT whose time stops at the minute or the hour is still a DT (PS3.5 6.2), not the TM "20:24:01"
    assert tm_seconds("202401012330") == tm_seconds("20240101233000") == 23.5 * 3600
    assert tm_seconds("2024010123+0100") == 23 * 3600 and tm_seconds("20240101") is None
    assert clock_seconds("202401012330") == clock_seconds("233000", "20240101")
    before = dataclasses.replace(_frame(1, 86280.0), acquired_at=clock_seconds("235800", "20120101"))
    after = dataclasses.replace(_frame(2, 480.0), acquired_at=clock_seconds("000800", "20120102"))
    assert sorted([before, after], key=latest_first)[0] is after
    assert slice_passes([after, before]) == [[before], [after]]


def test_slice_acquired_twice_under_one_time_is_named():
    """Break37b #6: 2 x 20 phases under ONE shared AcquisitionTime at one slice: refused naming that slice."""
    per_slice = [[_frame(100 * z + k, 500.0, 37.5 * k) for k in range(20)] for z in range(5)]
    per_slice[2] = ([_frame(200 + k, 500.0, 37.5 * k) for k in range(20)]
                    + [_frame(300 + k, 500.0, 35.0 * k) for k in range(20)])
    with pytest.raises(StudyError, match=r"slice at 20\.00 mm holds 40 images.* acquired 2 times .* cannot be told apart"):
        keep_latest_passes("s", per_slice, [10.0 * z for z in range(5)], [], [])


def test_slices_reacquired_alike_are_said_in_one_line(scd101):
    """The stack acquired again without StackID, one slice shorter and with every other phase only: the complete
    earlier pass is measured at each slice, and the 11 re-acquired slices are said in one line, not eleven."""
    where = _slice_and_phase(scd101)
    again = [_again(h, 600.0, 1000) for h in scd101 if where[id(h)][0] != 0 and where[id(h)][1] % 2 == 0]
    series, volume = _cine_volume(scd101 + again)
    assert volume.pixels.shape[:2] == (20, 12)
    assert not {h.sop_instance_uid for h in again} & _used(volume)
    (line,) = [w for w in volume.warnings if "times in this series" in w]
    assert line.startswith("11 slices (at ") and "each acquired 2 times in this series (20 image(s) per slice" in line
    assert "10 image(s) per slice" in line and "the latest complete pass (the later one is incomplete)" in line
