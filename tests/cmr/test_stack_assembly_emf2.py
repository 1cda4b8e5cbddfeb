"""Stack assembly, Enhanced MR second round (rebreak-emf findings 1, 2, 4, 5, 6): a temporal index restarting in each
instance of a series is not a cardiac order across instances (phases go by trigger time, or the stack is refused); a
frame left out for want of geometry is a stack warning; a series holding a SAX and a long-axis stack is split by
orientation before recognition; a whole stack acquired twice keeps its latest pass; repeat warnings name frames."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset

from dicomnode.cmr.frames import FrameInfo, frame_name, repeated_passes
from dicomnode.cmr.grouping import split_stacks
from dicomnode.cmr.types import FrameRef, InstanceHeader, StudyError
from dicomnode.cmr.volume import _temporal_sort_key, keep_latest_repeats, reconcile_temporal_indices
from cmr_helpers import generated, quiet_invalid_uid_warnings  # noqa: F401 (fixtures)

SAX = np.array([1.0, 0, 0, 0, 1.0, 0])
LAX = np.array([1.0, 0, 0, 0, 0, 1.0])  # perpendicular to SAX


def _header(uid: str, description: str = "cine_sax") -> InstanceHeader:
    ds = Dataset()
    ds.SeriesDescription = description
    return InstanceHeader(Path("/dev/null"), uid, "1.2.840.10008.5.1.4.1.1.4.1", "1.2.3", ds)


def _frame(header: InstanceHeader, number: int | None, z: float, *, index: int | None = None,
           trigger: float | None = None, acquired: float | None = None, orientation=SAX) -> FrameInfo:
    normal = np.cross(orientation[:3], orientation[3:])
    return FrameInfo(header=header, ref=FrameRef(header.sop_instance_uid, header.sop_class_uid, "1.2.3", number),
                     position=normal * z, orientation=np.asarray(orientation, dtype=float), pixel_spacing=(1.0, 1.0),
                     rows=8, cols=8, trigger_time=trigger, temporal_index=index, acquisition_time=acquired,
                     instance_number=1, inversion_time=None, rescale=(1.0, 0.0), frame_index=(number or 1) - 1)


def _split_by_phase(local: bool, triggers: bool = True) -> list[FrameInfo]:
    """Two instances of one series: phases 1-3 and 4-6 of 2 slices, the second numbering its phases from 1 again
    (`local`) or from 4."""
    frames = []
    for part, uid in enumerate(("A", "B")):
        header, number = _header(uid), 0
        for z in (0.0, 10.0):
            for p in range(3):
                number += 1
                phase = 3 * part + p
                frames.append(_frame(header, number, z, index=p + 1 if local else phase + 1,
                                     trigger=40.0 * phase + 20 if triggers else None))
    return frames


def test_a_temporal_index_restarting_in_each_instance_orders_phases_by_trigger_time():
    frames, warnings = _split_by_phase(local=True), []
    reconcile_temporal_indices("s", frames, warnings)
    assert all(f.temporal_index is None for f in frames)
    assert len(warnings) == 1 and "restarts in each instance" in warnings[0] and "trigger time" in warnings[0]
    at_zero = sorted((f for f in frames if f.position[2] == 0.0), key=_temporal_sort_key)
    assert [f.trigger_time for f in at_zero] == [20, 60, 100, 140, 180, 220]  # not A1, B1, A2, B2 ...


def test_a_global_temporal_index_over_instances_is_kept():
    frames, warnings = _split_by_phase(local=False), []
    reconcile_temporal_indices("s", frames, warnings)
    assert [f.temporal_index for f in frames[:3]] == [1, 2, 3] and warnings == []


def test_a_restarting_index_without_trigger_times_is_refused():
    with pytest.raises(StudyError, match="phase order is ambiguous"):
        reconcile_temporal_indices("s", _split_by_phase(local=True, triggers=False), [])


def test_a_restarting_index_whose_trigger_times_disagree_with_it_is_refused():
    frames = _split_by_phase(local=True)
    frames[0].trigger_time, frames[2].trigger_time = frames[2].trigger_time, frames[0].trigger_time
    with pytest.raises(StudyError, match="do not rise with the temporal index"):
        reconcile_temporal_indices("s", frames, [])


def test_a_classic_temporal_position_identifier_restarting_is_the_same_case():
    frames = []
    for phase in range(6):
        for z in (0.0, 10.0):
            frames.append(_frame(_header(f"{phase}-{z}"), None, z, index=phase % 3 + 1, trigger=40.0 * phase))
    warnings = []
    reconcile_temporal_indices("s", frames, warnings)
    assert all(f.temporal_index is None for f in frames) and warnings


def test_a_repeat_of_one_phase_in_another_instance_is_not_a_restart():
    a, b = _header("A"), _header("B")
    frames = [_frame(a, 1, 0.0, index=1, trigger=20.0), _frame(a, 2, 0.0, index=2, trigger=60.0),
              _frame(b, 1, 0.0, index=1, trigger=22.0)]
    warnings = []
    reconcile_temporal_indices("s", frames, warnings)
    assert frames[0].temporal_index == 1 and warnings == []


def test_a_whole_stack_acquired_twice_keeps_the_latest_pass_with_a_note():
    header = _header("E")
    per_slice = [[_frame(header, k + 1, z, trigger=400.0, acquired=36000.0 + k),
                  _frame(header, k + 7, z, trigger=400.0, acquired=36180.0 + k)] for k, z in enumerate(range(0, 60, 10))]
    assert repeated_passes(per_slice)
    warnings, left_out = [], []
    kept = keep_latest_repeats(per_slice, [float(z) for z in range(0, 60, 10)], warnings, left_out)
    assert [s[0].ref.frame_number for s in kept] == [7, 8, 9, 10, 11, 12]
    assert len(left_out) == 6
    # frames of one instance are told apart by number (the kept and the left-out one share the instance UID)
    assert "kept the most recent, frame 7 of instance E" in warnings[0] and "left out frame 1 of instance E" in warnings[0]


def test_cine_phases_are_not_repeated_passes():
    header = _header("C")
    per_slice = [[_frame(header, None, z, index=p + 1, trigger=40.0 * p, acquired=36000.0 + 20 * k)
                  for p in range(2)] for k, z in enumerate((0.0, 10.0))]
    assert not repeated_passes(per_slice)


def test_frame_name_tells_frames_and_single_frame_images_apart():
    assert frame_name(_frame(_header("X"), 3, 0.0)) == "frame 3 of instance X"
    assert frame_name(_frame(_header("Y"), None, 0.0)) == "instance Y"


def _bucket(description: str, lax_images: int = 3):
    header = _header("M", description)
    frames = [_frame(header, k + 1, 10.0 * k) for k in range(6)]
    frames += [_frame(header, 7 + k, 5.0 * k, orientation=LAX) for k in range(lax_images)]
    return [(header, frames)]


def test_a_series_holding_a_sax_and_a_long_axis_stack_is_split_by_orientation():
    stacks, note = split_stacks(_bucket("tfl_LGE_SAX"), 1001)
    assert list(stacks) == ["#stack1", "#stack2"]
    assert [len(stacks[k][0][1]) for k in stacks] == [6, 3]
    assert "2 stacks of different orientations" in note


def test_a_localizer_and_a_single_orientation_series_are_not_split():
    assert split_stacks(_bucket("3-plane localizer"), 1)[0].keys() == {""}
    header = _header("S")
    assert split_stacks([(header, [_frame(header, k + 1, 10.0 * k) for k in range(6)])], 1)[0].keys() == {""}
    few = _header("F")  # no orientation holds a stack: a tri-plane scout whatever its name
    frames = [_frame(few, k + 1, 10.0 * k) for k in range(3)] + [_frame(few, 4, 0.0, orientation=LAX)]
    assert split_stacks([(few, frames)], 1)[0].keys() == {""}


def test_a_frame_left_out_for_want_of_geometry_is_a_stack_warning(generated, tmp_path):
    """An Enhanced MR LGE with one frame fewer per-frame items than NumberOfFrames: the frame is left out (in
    excluded_instances) and the volume's stack warnings say so, beside the numbers."""
    import shutil

    import pydicom

    from dicomnode.cmr import load_studies

    study = generated[("lge", "philips-enhanced", None)]
    out = tmp_path / "in"
    out.mkdir()
    damaged = None
    for k, path in enumerate(study.paths):
        target = out / f"{k}.dcm"
        ds = pydicom.dcmread(path)
        if damaged is None and int(ds.get("NumberOfFrames", 1) or 1) > 2:
            del ds.PerFrameFunctionalGroupsSequence[-1]
            damaged = str(ds.SOPInstanceUID)
            ds.save_as(target)
        else:
            shutil.copy(path, target)
    assert damaged is not None
    (cmr,) = load_studies([out])
    series = next(s for s in cmr.series if damaged in {i.sop_instance_uid for i in s.instances})
    volume = cmr.load_volume(series)
    assert any(w.startswith("frame ") and f"of instance {damaged} left out (no geometry" in w
               and "lower bounds" in w for w in volume.warnings), volume.warnings
