"""Volume building: one analysis series -> sorted slices x phases, rescaled pixels, LPS affine and the frame map back."""
from __future__ import annotations

import logging
import re
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
import pydicom

from dicomnode.cmr.frames import (MAX_RR_IN_SECONDS, MIN_TRIGGER_IN_MICROSECONDS, SEPARATE_BREATH_HOLDS_S, FrameInfo,
                                  acquired_last, are_repeats, declared_rescale_slope, negative_trigger_note,
                                  not_perpendicular_deg, frame_name, frames_of, functional_groups, header_value,
                                  hms, images_per_slice, interleaved_passes, kept_pass, latest_first,
                                  merge_replanned_slices, one_examination, one_pass_of_more_phases,
                                  PARALLEL_TOLERANCE_DEG, within_usual_cycle, TILTED_SLICES_ONE_IN, TiltedSlices,
                                  orientation_groups, parallel_stacks, pass_time, passes_group_reason, passes_reason,
                                  plane_name,
                                  plane_normal, repeat_reason, repeated_passes, slice_centre, slice_groups,
                                  same_range, slice_distance, slice_passes, stack_fills, stack_normal, stack_plane,
                                  stack_positions, measured_stack,
                                  stacks_of, superseded_stacks, fill_mismatch, SEPARATE_BREATH_HOLDS_S as _HOLD_S,
                                  temporal_index_name, tilted_slice_text, tilted_slices, tm_seconds,
                                  typical_pass_size)
from dicomnode.cmr.grouping import excluded_entry
from dicomnode.cmr.source_encoding import high_bit_pixels, high_bits_note, lossy_compression, lossy_note
from dicomnode.cmr.types import AnalysisSeries, StudyError, Volume
from dicomnode.net.integrity import pixel_problem
from dicomnode.observe import transfer_syntax_name

log = logging.getLogger("dicomnode.cmr")


def _temporal_sort_key(frame: FrameInfo) -> tuple:
    return (
        frame.temporal_index if frame.temporal_index is not None else -1,
        frame.trigger_time if frame.trigger_time is not None else -1.0,
        frame.acquisition_time if frame.acquisition_time is not None else -1.0,
        frame.instance_number if frame.instance_number is not None else -1,
        frame.frame_index,
    )


#: significant digits a TriggerTime is compared to: phases 0.1 % of the value apart stay apart in any unit (s, ms, us)
TRIGGER_SIGNIFICANT_DIGITS = 4


def _temporal_identity(frame: FrameInfo) -> tuple:
    """What makes two frames at one slice position the same image (a duplicate): TemporalPositionIdentifier,
    TriggerTime to TRIGGER_SIGNIFICANT_DIGITS (relative, so no unit is assumed: a fixed 0.1 grid merged phases sent
    in seconds), AcquisitionTime to 10 ms, and InstanceNumber where neither a temporal index nor a non-zero
    TriggerTime tells the phases apart (a slice's phases often share one AcquisitionTime)."""
    trigger = frame.trigger_time
    untimed = frame.temporal_index is None and not trigger
    return (
        frame.temporal_index,
        None if trigger is None else float(f"{trigger:.{TRIGGER_SIGNIFICANT_DIGITS}g}"),
        None if frame.acquisition_time is None else round(frame.acquisition_time, 2),
        frame.instance_number if untimed else None,
    )


def _trigger_step(frames: list[FrameInfo]) -> float | None:
    """The typical TriggerTime step between the phases of one slice: the earliest trigger of each temporal index, in
    index order, median positive difference (None when fewer than two timed indices)."""
    earliest: dict[int, float] = {}
    for frame in frames:
        if frame.temporal_index is not None and frame.trigger_time is not None:
            earliest[frame.temporal_index] = min(earliest.get(frame.temporal_index, frame.trigger_time),
                                                 frame.trigger_time)
    steps = np.diff([earliest[k] for k in sorted(earliest)])
    steps = np.abs(steps[steps != 0])
    return float(np.median(steps)) if steps.size else None


def reconcile_temporal_indices(series_key: str, frames: list[FrameInfo], warnings: list[str]) -> None:
    """A temporal index that restarts from one instance to the next (TemporalPositionIndex of Enhanced MR is defined
    within its multi-frame instance, PS3.3 C.7.6.17; a classic export in batches restarts TemporalPositionIdentifier)
    is not a cardiac order across instances: ordering by it interleaves the instances' phases (A1, B1, A2, B2 ...).
    Where one slice position holds the same index on frames of different instances whose TriggerTimes differ by more
    than half a phase (a repeat of the same phase keeps its trigger time), the index is dropped for the whole series
    (in place) and phases go by TriggerTime, which every frame must carry and which must rise with the index within
    each instance; otherwise the stack is refused (StudyError) naming why."""
    by_position: dict[tuple, list[FrameInfo]] = defaultdict(list)
    for frame in frames:
        if frame.position is not None:
            by_position[tuple(np.round(frame.position, 1))].append(frame)
    restarted = None
    for members in by_position.values():
        step = _trigger_step(members)
        by_index: dict[int, list[FrameInfo]] = defaultdict(list)
        for frame in members:
            if frame.temporal_index is not None:
                by_index[frame.temporal_index].append(frame)
        for index, same in by_index.items():
            if len({f.ref.sop_instance_uid for f in same}) < 2:
                continue
            triggers = [f.trigger_time for f in same]
            if any(t is None for t in triggers):
                restarted = restarted or (index, same, None)
                continue
            if step and max(triggers) - min(triggers) > 0.5 * step:
                restarted = restarted or (index, same, max(triggers) - min(triggers))
        if restarted:
            break
    if restarted is None:
        return
    index, same, spread = restarted
    instances = sorted({f.ref.sop_instance_uid for f in same})
    what = (f"temporal index {index} (TemporalPositionIndex / TemporalPositionIdentifier) is used by "
            f"{len(instances)} instances at one slice ({', '.join(instances[:3])})")
    if spread is None or any(f.trigger_time is None for f in frames):
        raise StudyError(f"series {series_key}: {what}, and not every frame carries a TriggerTime / "
                         "NominalCardiacTriggerDelayTime to order the phases across instances; phase order is "
                         "ambiguous, stack refused")
    per_instance: dict[tuple, list[FrameInfo]] = defaultdict(list)
    for frame in frames:
        per_instance[(frame.ref.sop_instance_uid, tuple(np.round(frame.position, 1)))].append(frame)
    for (uid, _), members in per_instance.items():
        ordered = sorted((f for f in members if f.temporal_index is not None), key=lambda f: f.temporal_index)
        triggers = [f.trigger_time for f in ordered]
        if any(b < a for a, b in zip(triggers, triggers[1:])):
            raise StudyError(f"series {series_key}: {what} {spread:.0f} ms apart, and within instance {uid} the "
                             "trigger times do not rise with the temporal index; phase order is ambiguous, stack "
                             "refused")
    for frame in frames:
        frame.temporal_index = None
    warnings.append(f"{what} at trigger times {spread:.0f} ms apart: the index restarts in each instance, so the "
                    "cardiac phases are ordered by trigger time across instances")


def check_geometry(series: AnalysisSeries, frames: list[FrameInfo]) -> None:
    """Refuse frames without IPP / IOP / PixelSpacing, naming the first offending instance."""
    for frame in frames:
        missing = []
        if frame.position is None:
            missing.append("ImagePositionPatient")
        if frame.orientation is None:
            missing.append("ImageOrientationPatient")
        if frame.pixel_spacing is None:
            missing.append("PixelSpacing")
        if missing:
            where = f"frame {frame.ref.frame_number} of " if frame.ref.frame_number else ""
            raise StudyError(f"series {series.key}: {where}instance {frame.ref.sop_instance_uid} has no "
                             f"{', '.join(missing)}; a volume needs the geometry of every frame")


def pixel_grid(frame: FrameInfo) -> tuple[int, int, float, float]:
    """(Rows, Columns, spacing between rows, spacing between columns) of a frame's pixel grid, the PixelSpacing in
    mm rounded to 4 decimals (as the former equality check did)."""
    return (frame.rows, frame.cols, *(round(float(v), 4) for v in frame.pixel_spacing))


def _position_text(frame: FrameInfo) -> tuple[float, float, float]:
    """A frame's ImagePositionPatient in mm to 0.1 mm (how a left-out or refused slice is named)."""
    return tuple(round(float(v), 1) for v in frame.position)


def grid_text(grid: tuple[int, int, float, float]) -> str:
    """'256 x 256 at 1.25 x 1.25 mm' for a pixel_grid."""
    return f"{grid[0]} x {grid[1]} at {grid[2]:g} x {grid[3]:g} mm"


def _later_repeat_at(odd: FrameInfo, kept: list[FrameInfo], normal: np.ndarray, tolerance_mm: float
                     ) -> tuple[float, FrameInfo] | None:
    """For an image left out for its pixel grid: (its slice position along `normal`, the OLDER on-grid image kept
    there within `tolerance_mm`) where the left-out one was acquired later (`latest_first`: AcquisitionDate +
    AcquisitionTime, then InstanceNumber), else None."""
    at = slice_distance(odd, normal)
    same = [f for f in kept if abs(slice_distance(f, normal) - at) <= tolerance_mm]
    if not same or min(same + [odd], key=latest_first) is not odd:
        return None
    return at, min(same, key=latest_first)


def _later_repeat_note(found: list[tuple[float, FrameInfo]]) -> str:
    """'; ...' saying ONCE that the images left out for their grid are the LATER acquisitions of the slices at the
    positions of `found` ([(mm, older kept image)], `_later_repeat_at`) and that the images kept there are the older
    ones (no resampling is done, so a later re-acquisition on another grid cannot replace them); '' for none."""
    if not found:
        return ""
    found = sorted(found, key=lambda item: item[0])
    kept = [frame_name(f) for _, f in found]
    return (f"; {'it is the LATER acquisition' if len(found) == 1 else 'they are the LATER acquisitions'} of the "
            f"slice(s) at {_mm(sorted({round(at, 2) for at, _ in found}))} mm: the image(s) kept there "
            f"({', '.join(kept[:3])}{', ...' if len(kept) > 3 else ''}) are the OLDER acquisition(s), on the stack's "
            "grid (a volume needs one pixel grid and images are not resampled)")


def later_pass_grid(frames: list[FrameInfo]) -> tuple[int, int, float, float] | None:
    """The pixel grid of a later pass of the whole stack re-planned with another field of view / matrix / pixel
    spacing (frames without StackID, told apart by time: `latest_stacks` serves StackID passes), or None: exactly two
    grids, the images on one acquired (`frames.pass_time`) after every image on the other, at two or more slice
    positions covering (nearly) the other's whole range (`frames.same_range`: a repeat of the stack, one slice or so
    shorter). One slice re-acquired on another grid is no pass (`majority_grid` keeps the stack's grid)."""
    grids = sorted({pixel_grid(f) for f in frames})
    if len(grids) != 2 or any(pass_time(f) is None for f in frames):
        return None
    normal = stack_normal(frames)
    for grid, other in (grids, grids[::-1]):
        mine = [f for f in frames if pixel_grid(f) == grid]
        theirs = [f for f in frames if pixel_grid(f) == other]
        positions = stack_positions(mine, normal)
        if (len(positions) >= 2 and min(pass_time(f) for f in mine) > max(pass_time(f) for f in theirs)
                and same_range(positions, stack_positions(theirs, normal))):
            return grid
    return None


def later_pass_on_another_grid(frames: list[FrameInfo], grid: tuple[int, int, float, float], warnings: list[str]
                               ) -> tuple[list[FrameInfo], list[tuple[FrameInfo, str]]]:
    """`majority_grid` for a stack re-acquired later in its series on another pixel grid (`later_pass_grid`): the
    rule of StackID passes on another geometry (`latest_stacks` rule (b)), whatever the slice counts: the later pass
    is measured, the earlier pass left out, said once (an end slice only the earlier pass acquired is then named by
    `end_slice_note`, the volumes lower bounds)."""
    kept = [f for f in frames if pixel_grid(f) == grid]
    earlier = [f for f in frames if pixel_grid(f) != grid]
    normal = stack_normal(frames)
    reason = (f"the stack was acquired again later in this series on another pixel grid ({grid_text(grid)}, "
              f"{len(stack_positions(kept, normal))} slice(s) from {hms(min(pass_time(f) for f in kept))}; the earlier "
              f"pass {grid_text(pixel_grid(earlier[0]))}, {len(stack_positions(earlier, normal))} slice(s) by "
              f"{hms(max(pass_time(f) for f in earlier))}): a repeat of the stack re-planned with another field of "
              "view / matrix, and slices of two pixel grids are not mixed in one volume; the later pass is measured, "
              "the earlier left out")
    warnings.append(reason)
    return kept, [(f, reason) for f in earlier]


def majority_grid(series_key: str, frames: list[FrameInfo], warnings: list[str]
                  ) -> tuple[list[FrameInfo], list[tuple[FrameInfo, str]]]:
    """(frames on the series' majority pixel grid, [(frame, reason)] for those on another grid) where the frames'
    matrix (Rows x Columns) or PixelSpacing differ: a slice re-acquired with another FOV or matrix is left out (its
    gap is then warned and interpolated like a missing slice, the nominal step coming from all acquired positions:
    `nominal_step_mm`), one warning per other grid appended to `warnings`. Where the left-out image is a later
    re-acquisition of a slice kept on the majority grid, the warning says that the kept image is the older one.
    The majority is over half the frames. Raises StudyError naming each slice position's grid where no grid holds
    that majority."""
    grids = Counter(pixel_grid(f) for f in frames)
    if len(grids) == 1:
        return frames, []
    later = later_pass_grid(frames)
    if later is not None:
        return later_pass_on_another_grid(frames, later, warnings)
    grid, count = grids.most_common(1)[0]
    if 2 * count <= len(frames):
        at = {}
        for f in frames:
            at.setdefault(_position_text(f), set()).add(grid_text(pixel_grid(f)))
        raise StudyError(f"series {series_key}: inconsistent pixel grid (matrix / PixelSpacing) and no grid holds "
                         "over half the images: " + "; ".join(f"slice at ImagePositionPatient {list(p)}: "
                                                             f"{', '.join(sorted(g))}" for p, g in at.items()))
    kept = [f for f in frames if pixel_grid(f) == grid]
    normal = stack_normal(frames)
    left_out = []
    for other in (g for g in grids if g != grid):
        odd = [f for f in frames if pixel_grid(f) == other]
        reason = (f"pixel grid {grid_text(other)}, not the stack's {grid_text(grid)} ({count} of {len(frames)} "
                  "images): a slice re-acquired with another matrix / FOV, left out")
        positions = sorted({_position_text(f) for f in odd})
        later = [_later_repeat_at(f, kept, normal, SAME_POSITION_MM) for f in odd]
        warnings.append(f"{len(odd)} image(s) at ImagePositionPatient {', '.join(str(list(p)) for p in positions)} "
                        f"({', '.join(frame_name(f) for f in odd[:3])}{', ...' if len(odd) > 3 else ''}): {reason}"
                        + _later_repeat_note([item for item in later if item is not None]))
        left_out += [(f, reason + _later_repeat_note([item] if item else [])) for f, item in zip(odd, later)]
    return kept, left_out


#: two slice positions along the normal closer than this (mm) are one acquired position (a slice left out and a kept
#: slice at the same place, a re-acquisition on another grid)
SAME_POSITION_MM = 1.0


def leave_out_tilted(series_key: str, frames: list[FrameInfo], warnings: list[str]
                     ) -> tuple[list[FrameInfo], list[tuple[FrameInfo, str]]]:
    """(frames of the stack's dominant plane, [(frame, reason)] for the slices tilted out of it) where a few slices
    of the series are tilted out of the plane the others share (`frames.tilted_slices`: at most one slice position in
    TILTED_SLICES_ONE_IN, the rest within PARALLEL_TOLERANCE_DEG of their mean plane, the tilted ones less than
    NEAR_PARALLEL_DEG from it): the stack is measured without them, as without a slice re-acquired on another pixel
    grid (`majority_grid`), one warning per tilted slice position naming its images, ImagePositionPatient, its angle
    to the stack's mean plane, where it lies along the stack (mm) and, where a slice of the stack's plane is kept at
    its position, whether the tilted image is the later acquisition. Their positions count as acquired (`nominal_step_mm`, `end_slice_note`): a tilted middle
    slice is a gap, a tilted end slice makes the volumes lower bounds. Raises StudyError, as ever, for frames of
    several orientations with no such dominant plane (declined as not parallel)."""
    groups = orientation_groups(frames)
    if len(groups) < 2:
        return frames, []
    found = tilted_slices(frames)
    if found is None or len(parallel_stacks(frames)) != 1:
        planes = ", ".join(f"{plane_name(g[0].orientation)} ({len(g)} frames)" for g in groups)
        raise StudyError(f"series {series_key}: mixed orientations, {len(groups)} different ImageOrientationPatient "
                         f"values ({planes}); a volume needs one orientation")
    return found.kept, _tilted_reasons(found, warnings)


def _tilted_reasons(found: TiltedSlices, warnings: list[str]) -> list[tuple[FrameInfo, str]]:
    """[(frame, reason)] for the tilted frames of `found`, one warning per tilted slice position appended."""
    normal = np.cross(found.orientation[:3], found.orientation[3:])
    kept_at = sorted(slice_distance(f, normal) for f in found.kept)
    by_slice: dict[tuple, list[FrameInfo]] = {}
    for frame in found.tilted:
        by_slice.setdefault((tuple(np.round(frame.orientation, 4)), tuple(np.round(frame.position, 1))),
                            []).append(frame)
    left_out = []
    for members in by_slice.values():
        first = members[0]
        at = slice_distance(first, normal)
        same = [f for f in found.kept if abs(slice_distance(f, normal) - at) <= SAME_POSITION_MM]
        beyond = at < kept_at[0] - SAME_POSITION_MM or at > kept_at[-1] + SAME_POSITION_MM
        where = "beyond an end of the stack" if beyond else "inside the stack"
        later = ""
        if same:
            later = (f"; a slice of the stack's plane is kept at that position ({frame_name(same[0])})"
                     + (", the tilted image being the LATER acquisition: the older, untilted one is measured"
                        if min(same + [first], key=latest_first) is first else ""))
        reason = (f"tilted {found.angle_deg(first):.1f} deg out of the plane of the stack's other slices (their mean "
                  f"plane; planes within {PARALLEL_TOLERANCE_DEG:g} deg of it make one stack, and at most one slice "
                  f"position in {TILTED_SLICES_ONE_IN} tilted out of it is left out): left out, the stack measured on "
                  f"the other {found.positions - found.tilted_positions} of {found.positions} slice positions")
        warnings.append(f"tilted slice left out: {tilted_slice_text(first)}"
                        + (f" ({len(members)} images: {', '.join(frame_name(f) for f in members[:2])}"
                           f"{', ...' if len(members) > 2 else ''})" if len(members) > 1 else "")
                        + f", {at:.2f} mm along the stack normal ({where}), {reason}{later}")
        left_out += [(frame, f"{reason}{later}") for frame in members]
    return left_out


def nominal_step_mm(kept: list[float], left_out: list[float]) -> float | None:
    """The stack's nominal slice step (mm): the median step between all acquired slice positions along the normal,
    the kept slices' (`kept`) and those of slices left out for their pixel grid or unusable pixel data (`left_out`,
    same normal), positions within SAME_POSITION_MM counted once. A slice left out therefore never changes the step
    that gaps and end discs are measured with (break37b: slices 2 and 5 of 6 left out made the kept median 24 mm
    for a 12 mm stack). None with fewer than 2 positions."""
    merged: list[float] = []
    for position in sorted([*kept, *left_out]):
        if not merged or position - merged[-1] > SAME_POSITION_MM:
            merged.append(position)
    return float(np.median(np.diff(merged))) if len(merged) > 1 else None


def _left_out_positions(series: AnalysisSeries, exclude: frozenset[str], off_grid: list[tuple[FrameInfo, str]],
                        normal: np.ndarray) -> list[float]:
    """Positions (mm along `normal`) of the slices left out for their pixel grid or their tilt (`off_grid`) or their
    unusable pixel data (instances in `exclude` whose header still has the geometry)."""
    frames = [f for f, _ in off_grid] + [f for h in series.instances if h.sop_instance_uid in exclude
                                         for f in frames_of(h) if f.position is not None and f.orientation is not None]
    return [slice_distance(f, normal) for f in frames]


def end_slices_beyond(distances: np.ndarray, left_out: list[float], step: float | None) -> list[float]:
    """The positions (mm, rounded to 0.01, ascending) of `left_out` lying beyond the kept stack's ends (`distances`,
    ascending) by more than SAME_POSITION_MM; [] without a step or kept slices."""
    if not len(distances) or step is None:
        return []
    return sorted({round(d, 2) for d in left_out
                   if d < distances[0] - SAME_POSITION_MM or d > distances[-1] + SAME_POSITION_MM})


def end_slice_note(distances: np.ndarray, left_out: list[float], step: float | None) -> str | None:
    """The warning where a slice left out (`left_out`, mm along the normal) lies beyond the kept stack's ends
    (`distances`, mm, ascending) by more than SAME_POSITION_MM: the stack lost an apical or basal end slice, so the
    volumes and mass are lower bounds (as the cine coverage check says of a cut-off apex or base); None otherwise."""
    beyond = end_slices_beyond(distances, left_out, step)
    if not beyond:
        return None
    return (f"end slice left out: the slice(s) at {', '.join(f'{d:.2f}' for d in beyond)} mm lay beyond the kept "
            f"stack ({distances[0]:.2f} to {distances[-1]:.2f} mm, step {step:.2f} mm), at its apical or basal end: "
            "part of the LV may lie outside the stack, so myocardial (and scar) volumes and mass are lower bounds")


def arrange_frames(series: AnalysisSeries, require_stack: bool = True, exclude: frozenset[str] = frozenset()
                   ) -> tuple[list[list[FrameInfo]], np.ndarray, list[str], list[tuple[FrameInfo, str]], float | None,
                              list[float], list[int], int, int | None]:
    """Frames as [phase][slice] sorted along the stack normal, their slice distances (mm), warnings, the frames left
    out with the reason (see common_phases), the nominal slice step (mm, `nominal_step_mm`: over all acquired
    positions, the slices left out for their grid or pixel data included; None for one slice), the positions (mm)
    of acquired slices beyond the stack's ends left unused (`end_slices_beyond`, `latest_stacks` rule (b)), the
    acquisition phase number (1-based, in the series' temporal order over all phases acquired) of each phase kept,
    and the number of phases acquired (a phase left out at every slice for an image missing at one still counts:
    common_phases); where the images declare more phases (CardiacNumberOfImages) and acquisition_grid_numbers places
    the phases kept on that cycle, their numbers there and the declared count (the "N of M cardiac phases present"
    warning keeps the phases sent), and the phases of the cycle the images declare (CardiacNumberOfImages, the
    largest; a slice acquired with more phases than the others, `finer_sampled_slices`, not counted), None where none
    does; refusals raise StudyError.

    `exclude`: SOP Instance UIDs left out (instances whose pixel data cannot be used).
    """
    frames = [frame for header in series.instances if header.sop_instance_uid not in exclude
              for frame in frames_of(header)
              if header.sop_instance_uid not in series.frames_included
              or frame.ref.frame_number in series.frames_included[header.sop_instance_uid]]
    if not frames:
        raise StudyError(f"series {series.key} has no frames")
    check_geometry(series, frames)
    warnings: list[str] = []
    # images of another examination or Frame of Reference (a prior exam merged into the series) first: their
    # positions are not in this stack's coordinate system, so no later step may read them as slices of it
    foreign: list[tuple[FrameInfo, str]] = []
    examinations = one_examination(frames)
    if examinations is not None:
        frames = examinations.kept
        for members, reason in examinations.left_out:
            warnings.append(examinations.warning(members, reason))
            foreign += [(frame, reason) for frame in members]
    # a few slices tilted out of the plane of the others are left out (or the series refused as not one orientation)
    frames, tilted = leave_out_tilted(series.key, frames, warnings)
    acquired = frames
    # passes of the stack (StackID) first, then the pixel grid: a later pass re-planned with another field of view or
    # pixel spacing is a pass like one shifted through-plane (`latest_stacks`), never outvoted by a majority-grid count
    left_out: list[tuple[FrameInfo, str]] = foreign + list(tilted)
    ends: list[float] = []
    fill_notes: list[str] = []
    frames = latest_stacks(series.key, frames, warnings, left_out, ends, fill_notes)
    frames, off_grid = majority_grid(series.key, frames, warnings)
    left_out += off_grid
    reconcile_temporal_indices(series.key, frames, warnings)
    slices = latest_interleaved_pass(merge_replanned_slices(slice_groups(frames)), warnings, left_out)
    if require_stack and len(slices) < 2:
        raise StudyError(f"series {series.key}: single slice ({len(frames)} frame(s) at one position) where a stack "
                         "of parallel slices is required")
    shift = in_plane_shift_mm([m[0] for _, m in slices])
    if shift > 0.5:
        warnings.append(f"slice positions are shifted in-plane by up to {shift:.1f} mm; the affine uses the first slice")
    per_slice: list[list[FrameInfo]] = []
    duplicates: list[tuple[FrameInfo, FrameInfo, float]] = []
    for distance, members in slices:
        unique: dict[tuple, FrameInfo] = {}
        for frame in sorted(members, key=_temporal_sort_key):
            identity = _temporal_identity(frame)
            if identity in unique and unique[identity].reconstruction != frame.reconstruction:
                raise StudyError(_mixed_reconstructions(series.key, distance, unique[identity], frame))
            if identity in unique:
                duplicates.append((unique[identity], frame, distance))
            unique[identity] = frame
        per_slice.append(sorted(unique.values(), key=_temporal_sort_key))
    for reason, dropped in duplicate_reasons(duplicates):
        warnings.append(reason)
        left_out += [(frame, reason) for frame in dropped]
    repeat_lines: list[str] = []
    incomplete_lines: list[str] = []
    per_slice = keep_latest_passes(series.key, per_slice, [d for d, _ in slices], repeat_lines, left_out,
                                   incomplete_lines)
    per_slice, resampled = finer_sampled_slices(series.key, per_slice, [d for d, _ in slices], warnings, left_out)
    counts = [len(s) for s in per_slice]
    passes = repeated_passes(per_slice)
    if passes:
        repeat_lines.append(f"the whole stack was acquired {counts[0]} times in this series (the same slice positions "
                            "and timing, later AcquisitionTimes): a repeat of the stack, not cardiac phases; the latest "
                            "pass is measured")
    if passes or images_per_slice(per_slice) != counts:
        per_slice = keep_latest_repeats(per_slice, [d for d, _ in slices], repeat_lines, left_out)
        counts = [len(s) for s in per_slice]
    summary = pass_summary(acquired, per_slice)
    if summary is None:
        warnings += fill_notes + repeat_lines
    else:
        # one plain-words summary of which position came from which pass instead of a line per slice; a slice that
        # kept an earlier pass because the later one is incomplete keeps its own line
        warnings.append(summary)
        warnings += incomplete_lines
    phase_numbers, acquired = list(range(1, counts[0] + 1)), counts[0]
    if len(set(counts)) > 1:
        acquisition: dict = {}
        per_slice, phases_left_out = common_phases(series.key, per_slice, [d for d, _ in slices], warnings,
                                                   acquisition)
        left_out += phases_left_out
        counts = [len(s) for s in per_slice]
        phase_numbers, acquired = acquisition["phase_numbers"], acquisition["acquired"]
    # the phases sent (a phase left out at every slice for an image missing at one included) name the "N of M present"
    # note; where the images declare more, the kept phases are numbered on the declared grid where their timing or
    # temporal index tells (an export that dropped phase 8 at every slice keeps phase 9 as 9), else positionally
    sent = acquired
    declared = max(declared_phase_counts(f for s in per_slice for f in s if id(f) not in resampled), default=None)
    if declared is not None and declared > acquired:
        placed = acquisition_grid_numbers(per_slice, declared)
        if placed is not None:
            phase_numbers, acquired = placed[0], declared
            missing = [n for n in range(1, max(placed[0]) + 1) if n not in placed[0]]
            if missing:
                warnings.append(f"cardiac phase(s) {', '.join(map(str, missing))} of {declared} (CardiacNumberOfImages) "
                                f"not among those kept: the phases kept keep their acquisition numbers, placed by "
                                f"{placed[1]}")
    distances = np.array([d for d, _ in slices])
    gaps = np.diff(distances)
    others = _left_out_positions(series, exclude, off_grid + tilted, stack_normal([m[0] for _, m in slices]))
    step = nominal_step_mm(list(distances), others)
    if len(gaps):
        irregular = [f"{g:.2f}" for g in gaps if abs(g - step) > 0.1 * step]
        if irregular:
            warnings.append(f"irregular slice spacing: median {step:.2f} mm, also {', '.join(irregular)} mm"
                            + (" (gap: missing slice?)" if any(g > 1.5 * step for g in gaps) else "")
                            + (" (median over all acquired positions, the slices left out included)" if others
                               else ""))
    end_note = end_slice_note(distances, others, step)
    if end_note:
        warnings.append(end_note)
    ends = sorted(set(ends) | set(end_slices_beyond(distances, others, step)))
    note = phases_present_note(sent, [f for s in per_slice for f in s if id(f) not in resampled])
    if note:
        warnings.append(note)
    phases = [[per_slice[s][p] for s in range(len(per_slice))] for p in range(counts[0])]
    return phases, distances, warnings, left_out, step, ends, phase_numbers, acquired, declared


def declared_phase_counts(frames) -> set[int]:
    """The CardiacNumberOfImages (0018,1090) values the frames declare (slices of a prospective cine may declare
    different counts); empty where none does."""
    declared = set()
    for frame in frames:
        try:
            declared.add(int(getattr(frame.header.dataset, "CardiacNumberOfImages", None)))
        except (TypeError, ValueError):
            continue
    return {count for count in declared if count > 0}


def phases_present_note(kept: int, frames: list[FrameInfo]) -> str | None:
    """'N of M cardiac phases present' when fewer phases were acquired (`kept`: the phases of the acquisition, a phase
    left out at every slice for an image missing at one included, as common_phases names it apart) than the frames
    declare (CardiacNumberOfImages (0018,1090), the largest over all frames: slices of a prospective cine may declare
    different counts, named as a range); None when all declared phases are there, a single phase, or nothing is
    declared."""
    declared = declared_phase_counts(frames)
    if kept < 2 or not declared or max(declared) <= kept:
        return None
    values = f"{min(declared)} to {max(declared)} by slice" if len(declared) > 1 else f"{max(declared)}"
    return f"{kept} of {max(declared)} cardiac phases present (CardiacNumberOfImages {values})"


def in_plane_shift_mm(slice_frames: list[FrameInfo]) -> float:
    """The largest in-plane distance (mm) between the centre of the first slice and the centre of another
    (`frames.slice_centre`), measured in the slices' mean plane (`frames.stack_normal`); slice_frames: one frame per
    slice position."""
    normal = stack_normal(slice_frames)
    offsets = np.array([slice_centre(f) for f in slice_frames]) - slice_centre(slice_frames[0])
    return float(np.max(np.linalg.norm(offsets - np.outer(offsets @ normal, normal), axis=1)))


def _mixed_reconstructions(series_key: str, distance: float, first: FrameInfo, second: FrameInfo) -> str:
    """Why a series holding two reconstructions at one slice position and time is refused as a volume: they are
    neither phases nor duplicates, and keeping one by instance order would choose the reconstruction by chance."""
    def name(frame: FrameInfo) -> str:
        values, signed = frame.reconstruction
        return "ImageType " + ("\\".join(v for v in values if v) or "-") + (", signed values" if signed else "")
    return (f"series {series_key}: two reconstructions at slice {distance:.2f} mm with the same timing ({name(first)}, "
            f"instance {first.ref.sop_instance_uid}; {name(second)}, instance {second.ref.sop_instance_uid}); a "
            "volume holds one reconstruction (ImageType values from the third on, PS3.3 C.7.6.1.1.2, and the sign of "
            "the values): study grouping splits such a series into one stack per reconstruction")


def keep_latest_repeats(per_slice: list[list[FrameInfo]], distances: list[float], warnings: list[str],
                        left_out: list[tuple[FrameInfo, str]]) -> list[list[FrameInfo]]:
    """In a stack of one image per slice, a slice holding several repeats of its image (`frames.are_repeats` with
    `one_per_slice`: a slice re-sent with a new SOPInstanceUID, re-reconstructed, or re-acquired in later
    breath-holds of the series, at another InversionTime too) keeps its most recent acquisition (AcquisitionTime, then
    InstanceNumber); the others are appended to `left_out` and named in `warnings` (`frames.repeat_reason`). Slices
    whose frames are distinct phases or inversion times of one breath-hold are returned unchanged.

    per_slice: [slice][frame] frames; distances: each slice's position along the normal (mm).
    """
    kept = []
    for distance, frames in zip(distances, per_slice):
        if not are_repeats(frames, one_per_slice=True):
            kept.append(frames)
            continue
        latest, *older = sorted(frames, key=latest_first)
        reason = repeat_reason(distance, frames, latest)
        warnings.append(reason + f"; left out {', '.join(frame_name(f) for f in older)}")
        left_out += [(frame, reason) for frame in older]
        kept.append([latest])
    return kept


def keep_latest_passes(series_key: str, per_slice: list[list[FrameInfo]], distances: list[float],
                       warnings: list[str], left_out: list[tuple[FrameInfo, str]],
                       incomplete: list[str] | None = None) -> list[list[FrameInfo]]:
    """In a stack of several images per breath-hold (cine phases), a slice acquired again in a later breath-hold of
    the same series (its phases appended to the series: `frames.slice_passes`, passes told apart by AcquisitionTime
    (0008,0032) / ContentTime (0008,0033) at least SEPARATE_BREATH_HOLDS_S apart) keeps its latest complete pass
    (`frames.kept_pass`: as many images as one pass holds at most slices, `frames.typical_pass_size`); the other
    passes are appended to `left_out` and named in `warnings` (`frames.passes_reason`). A whole stack acquired again
    is the same at every slice. Stacks of one image per breath-hold (LGE) are returned unchanged
    (`keep_latest_repeats` serves them).

    per_slice: [slice][frame] frames in temporal order; distances: each slice's position along the normal (mm).
    incomplete: where given, the lines of slices that kept an earlier pass because the latest one is incomplete are
    appended there too (they stay in `warnings`).
    Returns [slice][frame], each slice's frames in their given order. Raises StudyError (`_untimed_passes`) for a
    slice holding a whole multiple of the phases of the other slices with no time to tell its passes apart, unless
    those are one pass at a finer temporal sampling (`frames.one_pass_of_more_phases`: `finer_sampled_slices`).
    """
    expected = typical_pass_size(per_slice)
    if expected < 2:
        return per_slice
    kept = []
    alike: dict[tuple, list[tuple[float, list[list[FrameInfo]], int]]] = defaultdict(list)
    for distance, frames in zip(distances, per_slice):
        passes = slice_passes(frames)
        if len(passes) < 2:
            _untimed_passes(series_key, distance, frames, per_slice, expected)
            kept.append(frames)
            continue
        chosen = kept_pass(passes, expected)
        index = next(k for k, p in enumerate(passes) if p is chosen)
        reason = passes_reason(distance, passes, chosen)
        alike[(tuple(len(p) for p in passes), index)].append((distance, passes, index))
        left_out += [(frame, reason) for p in passes if p is not chosen for frame in p]
        kept.append(chosen)
    # slices re-acquired alike (a whole stack acquired again, one slice shorter, with fewer phases) in one line
    for (_, index), group in alike.items():
        lines = [passes_group_reason([d for d, _, _ in group], [p for _, p, _ in group], [k for _, _, k in group])] \
            if len(group) > 1 else [passes_reason(d, p, p[k]) for d, p, k in group]
        warnings += lines
        if incomplete is not None and index != len(group[0][1]) - 1:
            incomplete += lines
    return kept


def _untimed_passes(series_key: str, distance: float, frames: list[FrameInfo], per_slice: list[list[FrameInfo]],
                    expected: int) -> None:
    """Raise StudyError when one slice holds 2, 3 ... times the `expected` phases that most slices of the stack hold
    and some of its frames carry no AcquisitionTime / ContentTime (`frames.pass_time`), so that its passes cannot be
    told apart (`frames.slice_passes`): the slice was acquired that many times in the series, and which pass is the
    latest (or which frames belong together) is unknown. The same holds when all its frames share ONE time (scanners
    writing the series start time) and its TriggerTimes (0018,1060) span no more of the cycle than the other slices'
    (the passes repeat the same phases). A slice whose frames are one pass of finer temporal sampling
    (`frames.one_pass_of_more_phases`: distinct, evenly stepped TriggerTimes over the same cycle, distinct temporal
    indices) is no repeat and is left to `finer_sampled_slices`, as a timed slice in one breath-hold holding more
    phases is left to `common_phases`."""
    times, remainder = divmod(len(frames), expected)
    usual = sum(len(s) == expected for s in per_slice)
    if times < 2 or remainder or 2 * usual <= len(per_slice):
        return
    if one_pass_of_more_phases(frames, per_slice, expected):
        return  # finer temporal sampling in one pass, not a repeat: `finer_sampled_slices` serves it
    stamps = {pass_time(f) for f in frames}
    if None not in stamps and not (len(stamps) == 1 and within_usual_cycle(frames, per_slice, expected)):
        return
    raise StudyError(f"series {series_key}: the slice at {distance:.2f} mm holds {len(frames)} images, {times} times "
                     f"the {expected} phases of the other slices: that slice was acquired {times} times in the series "
                     f"and the passes cannot be told apart (no AcquisitionTime / ContentTime "
                     f"{SEPARATE_BREATH_HOLDS_S:g} s or more apart tells which pass is which); re-send that slice's "
                     "latest pass only, or re-acquire it; stack refused")


def _trigger_span(frames: list[FrameInfo]) -> str:
    """'TriggerTime 0-958 in 41.7 steps' (the TriggerTime's own unit, ms in DICOM) of one slice's frames."""
    triggers = sorted(f.trigger_time for f in frames)
    return (f"TriggerTime {triggers[0]:.4g}-{triggers[-1]:.4g} ms in {float(np.median(np.diff(triggers))):.3g} ms "
            "steps")


#: a phase kept from a slice of finer temporal sampling lies within this fraction of a phase interval of the other
#: slices' phase (as a fraction of each slice's cycle): the same moment of the cycle, trigger jitter allowed
FINER_PHASE_TOLERANCE = 0.15


def finer_sampled_slices(series_key: str, per_slice: list[list[FrameInfo]], distances: list[float],
                         warnings: list[str], left_out: list[tuple[FrameInfo, str]]) -> tuple[list[list[FrameInfo]],
                                                                                            set[int]]:
    """A slice acquired in one pass with k times the phases of the other slices (`one_pass_of_more_phases`: finer
    temporal sampling, e.g. 24 phases beside 12) keeps the `expected` (`frames.typical_pass_size`) phases that lie
    at the other slices' points of the cycle: every k-th frame in TriggerTime order, from the offset whose frames each
    lie within FINER_PHASE_TOLERANCE of a phase interval of the matching phase of the other slices (TriggerTime as a
    fraction of each slice's own cycle: its phases x its median TriggerTime step, so a slice at another RR still
    matches). The frames in between are appended to `left_out` and the slice named once in `warnings`. No pixel is
    interpolated: the kept images are acquired images.

    per_slice: [slice][frame] in temporal order; distances: each slice's position along the normal (mm). Returns the
    new [slice][frame] and the ids of the slices' frames kept so (their CardiacNumberOfImages is not the stack's).
    Raises StudyError naming the slice, its phases and the others' where its phases do not fall on the other slices'
    points of the cycle (another temporal resolution that cannot be lined up without resampling)."""
    expected = typical_pass_size(per_slice)
    resampled: set[int] = set()
    if expected < 2:
        return per_slice, resampled
    usual = [s for s in per_slice if len(s) == expected and all(f.trigger_time is not None for f in s)
             and (_median_step([f.trigger_time for f in s]) or 0) > 0]
    kept_slices = []
    for distance, frames in zip(distances, per_slice):
        if len(frames) == expected or not usual or not one_pass_of_more_phases(frames, per_slice, expected):
            kept_slices.append(frames)
            continue
        factor = len(frames) // expected

        def fractions(members: list[FrameInfo]) -> np.ndarray:
            triggers = np.sort([f.trigger_time for f in members])
            return triggers / (len(members) * float(np.median(np.diff(triggers))))

        reference = np.median(np.array([fractions(s) for s in usual]), axis=0)
        ordered = sorted(frames, key=lambda f: f.trigger_time)
        own = fractions(ordered)
        offset = min(range(factor), key=lambda o: float(np.max(np.abs(own[o::factor] - reference))))
        error = float(np.max(np.abs(own[offset::factor] - reference)))
        usual_steps = f"{float(np.median([np.median(np.diff(sorted(f.trigger_time for f in s))) for s in usual])):.3g}"
        said = (f"the slice at {distance:.2f} mm holds {len(frames)} cardiac phases in one pass "
                f"({_trigger_span(frames)}"
                + (f", {temporal_index_name(frames)} all distinct"
                   if all(f.temporal_index is not None for f in frames) else "") + f"), {factor} times the {expected} phases of the other slices (in {usual_steps} ms "
                "steps): that slice was acquired once, with a finer temporal resolution, not acquired "
                f"{factor} times")
        if error > FINER_PHASE_TOLERANCE / expected:
            raise StudyError(f"series {series_key}: {said}; its phases do not fall on the other slices' points of "
                             "the cardiac cycle, so they cannot be lined up with them without resampling in time; "
                             f"re-acquire that slice with the stack's {expected} phases; stack refused")
        chosen = ordered[offset::factor]
        taken = {id(f) for f in chosen}
        reason = (f"{said}; the {expected} of its phases at the other slices' points of the cycle (one in "
                  f"{factor}, from TriggerTime {chosen[0].trigger_time:.4g} ms) are "
                  f"measured, the {len(frames) - expected} in between left out")
        warnings.append(reason)
        left_out += [(f, reason) for f in frames if id(f) not in taken]
        resampled |= taken
        kept_slices.append([f for f in frames if id(f) in taken])
    return kept_slices, resampled


def latest_stacks(series_key: str, frames: list[FrameInfo], warnings: list[str],
                  left_out: list[tuple[FrameInfo, str]], ends_left_out: list[float] | None = None,
                  fill_notes: list[str] | None = None) -> list[FrameInfo]:
    """The frames of a series holding several stacks (StackID (0020,9056) on every frame) with each stack that a later
    one covers again over the same range (`frames.superseded_stacks`: the stack re-planned and acquired again) left
    out, named in `warnings` and appended to `left_out`: the latest stack (`frames.acquired_last`: AcquisitionDate +
    AcquisitionTime / ContentDate + ContentTime, then InstanceNumber) is measured. A later stack re-acquiring part of
    the range at other positions is left out and the full stack measured (`frames.partial_repeat`); one at the same
    positions stays, and `keep_latest_passes` keeps its later pass at each slice it repeats. Complementary stacks
    (slabs over different ranges, e.g. base and apex) stay together as one volume. Frames without StackID, or of one
    stack, are returned unchanged. Raises StudyError when two stacks over the same range cannot be told apart in time.

    Nothing acquired is thrown away silently where the later stack is SHORTER than the one it repeats (a technologist
    re-acquiring the stack and cutting one slice, missing the apical or basal end):
    (a) on the same slice grid and plan, as many images per position (`frames.fill_mismatch` None: the same positions,
        orientation, pixel grid and in-plane placement, and as many cine phases) the latest acquisition wins per
        position (of three passes, the latest that covers it), and a position only the earlier stack holds is
        filled from it (`frames.stack_fills`), named with its position (mm) and the earlier stack's acquisition time:
        scanners and reading software combine such passes too, and dropping the slice would shrink the volumes while
        the coverage still read as complete. Its other slices stay left out, as does any end slice a longer later
        stack covers again (nothing is lost then).
    (b) on another geometry (a pass shifted along the normal, e.g. by half a slice; tilted; another field of view or
        pixel spacing) or with other cine phases (10 where the earlier pass has 20) the passes are not mixed, as
        slices of two geometries (or of other phases) do not make one volume: the later stack alone is measured,
        and an end slice of the earlier stack lying beyond the later one by more than half its step (further than
        its end disc reaches) is named as not used, the volumes and mass as lower bounds, and its position (mm) is
        appended to `ends_left_out` (Volume.ends_left_out_mm: a cine's coverage is then not complete).
    `fill_notes`: where given, the two lines of rule (a) go there instead of `warnings` (`arrange_frames` says once,
    in `pass_summary`, which position came from which pass, and uses them only where that says nothing)."""
    pairs = superseded_stacks(frames)
    if not pairs:
        return frames
    stacks = stacks_of(frames)
    normal = stack_normal(frames)
    fills = stack_fills(frames, pairs)
    filled = {id(f) for members in fills.values() for f in members}

    def described(sid: str) -> str:
        distances = [slice_distance(f, normal) for f in stacks[sid]]
        return (f"StackID {sid} ({len(stacks[sid])} images, {min(distances):.1f} to {max(distances):.1f} mm, acquired "
                f"by {hms(acquired_last(stacks[sid])[0])})")

    for sid, other, whole in pairs:
        if not whole:
            reason = (f"{described(sid)} re-acquires part of {described(other)} at other slice positions: its slices "
                      f"do not replace StackID {other}'s one for one, and measuring both would count those levels "
                      f"twice; the full StackID {other} is measured, StackID {sid} left out. If the repeated slices "
                      "were needed (motion, mis-triggering), re-acquire the whole stack")
        elif acquired_last(stacks[other]) == acquired_last(stacks[sid]):
            raise StudyError(f"series {series_key}: StackID {sid} and StackID {other} cover the same slice range and "
                             "neither AcquisitionTime / ContentTime nor InstanceNumber tells which was acquired later; "
                             "two stacks of the same heart, stack refused")
        else:
            # the stack measured in its place: the pair partner, or where that is itself covered again (three
            # passes) the latest stack down the chain; fills and lost end slices are judged against it
            measured = measured_stack(pairs, sid) or other
            kept_positions = stack_positions(fills.get(sid, []), normal)
            reason = (f"{described(sid)} is covered again by the later {described(other)}: a repeat of the stack, "
                      f"not further slices; "
                      + ("the later stack is measured" if measured == other else
                         f"StackID {other} is itself covered again by the later StackID {measured}, which is "
                         "measured")
                      + f", StackID {sid} left out"
                      + (f" but for its slice(s) at {_mm(kept_positions)} mm, which only "
                         "it covers" if kept_positions else ""))
            if sid in fills:
                note = _earlier_fill_note(sid, measured, fills[sid], stacks[measured], normal)
                if fill_notes is not None:
                    # said once for all passes by `pass_summary`; these two lines stand in where it says nothing
                    fill_notes += [note, reason]
                    left_out += [(frame, reason) for frame in stacks[sid] if id(frame) not in filled]
                    continue
                warnings.append(note)
            else:
                lost, positions = _earlier_ends_not_used(sid, measured, stacks, [f for f in frames if f.stack_id not in
                                                                              {s for s, _, _ in pairs}], normal)
                if lost:
                    reason += "; " + lost
                    if ends_left_out is not None:
                        ends_left_out += positions
        warnings.append(reason)
        left_out += [(frame, reason) for frame in stacks[sid] if id(frame) not in filled]
    dropped = {sid for sid, _, _ in pairs}
    return [frame for frame in frames if frame.stack_id not in dropped or id(frame) in filled]


def _position_index(frames: list[FrameInfo], normal: np.ndarray) -> dict[int, int]:
    """{id(frame): the index of its slice position} over `frames.stack_positions` (the nearest)."""
    positions = np.array(stack_positions(frames, normal))
    return {id(f): int(np.argmin(np.abs(positions - slice_distance(f, normal)))) for f in frames}


def acquisition_passes(frames: list[FrameInfo]) -> tuple[dict[int, str], list[str]] | None:
    """({id(frame): its pass}, the passes earliest first) for the frames of one stack acquired in passes in its
    series: by StackID (0020,9056) where every frame has one ('StackID 2'), else by time ('pass 2'): each slice
    position's acquisitions (its frames in `frames.pass_time` order, a new one SEPARATE_BREATH_HOLDS_S or more after
    the one before) taken in time order, a new pass starting where a position comes again that the current pass has
    already acquired (one pass acquires each position once). None where a frame has neither StackID nor a time."""
    stacks = stacks_of(frames)
    if stacks:
        order = sorted(stacks, key=lambda sid: acquired_last(stacks[sid]))
        return {id(f): f"StackID {sid}" for sid in order for f in stacks[sid]}, [f"StackID {sid}" for sid in order]
    if any(pass_time(f) is None for f in frames):
        return None
    normal = stack_normal(frames)
    index = _position_index(frames, normal)
    units: list[tuple[float, int, list[FrameInfo]]] = []
    for k in sorted(set(index.values())):
        for frame in sorted((f for f in frames if index[id(f)] == k), key=pass_time):
            if not units or units[-1][1] != k or pass_time(frame) - pass_time(units[-1][2][-1]) >= _HOLD_S:
                units.append((pass_time(frame), k, []))
            units[-1][2].append(frame)
    number, current, labels = 1, set(), {}
    for _, k, members in sorted(units, key=lambda u: (u[0], u[1])):
        if k in current:
            number, current = number + 1, set()
        current.add(k)
        labels.update((id(f), f"pass {number}") for f in members)
    return labels, [f"pass {n}" for n in range(1, number + 1)]


def pass_summary(acquired: list[FrameInfo], per_slice: list[list[FrameInfo]]) -> str | None:
    """The one warning saying which slice positions of the measured stack (`per_slice`, [slice][frame], ascending
    along the normal) came from which pass of a stack acquired in several passes in its series (`acquired`: every
    frame of the series, `acquisition_passes`), where the measured slices mix passes (per position the latest
    acquisition that covers it: a later pass shorter than an earlier one, three passes) and two or more positions
    were acquired more than once, each pass covering more than half of the stack's positions (a pass of the stack,
    not a few slices re-acquired, whose own lines stay); None otherwise. Where the passes carry different
    InversionTimes (an LGE re-acquired at another TI), each pass's InversionTime is named. StackID passes and
    passes told apart by time alone are said alike."""
    found = acquisition_passes(acquired)
    if found is None:
        return None
    labels, order = found
    measured = [Counter(labels.get(id(f)) for f in frames).most_common(1)[0][0] for frames in per_slice]
    if None in measured or len(set(measured)) < 2:
        return None
    normal = stack_normal(acquired)
    index = _position_index(acquired, normal)
    at: dict[int, set[str]] = defaultdict(set)
    for frame in acquired:
        at[index[id(frame)]].add(labels[id(frame)])
    if sum(len(v) > 1 for v in at.values()) < 2:
        return None
    members = {name: [f for f in acquired if labels[id(f)] == name] for name in order}
    # a repeat of the stack: every pass spoken of covers most of the stack's positions; a few slices re-acquired
    # keep their own lines (which name each acquisition)
    if any(2 * len({index[id(f)] for f in members[name]}) <= len(at) for name in order):
        return None
    inversion = {name: _inversion_text(members[name]) for name in order}
    name_ti = len({v for v in inversion.values() if v}) > 1

    def described(name: str) -> str:
        times = sorted(t for t in (pass_time(f) for f in members[name]) if t is not None)
        when = ("" if not times else f", acquired {hms(times[0])}" if hms(times[0]) == hms(times[-1])
                else f", acquired {hms(times[0])} to {hms(times[-1])}")
        ti = f", InversionTime {inversion[name]} ms" if name_ti and inversion[name] else ""
        return f"{name}: {len(stack_positions(members[name], normal))} slice(s){when}{ti}"

    distances = [float(np.median([slice_distance(f, normal) for f in frames])) for frames in per_slice]
    used = [name for name in order if name in measured]
    latest = used[-1]
    parts = [f"{measured.count(latest)} slice(s) ({_mm([d for d, m in zip(distances, measured) if m == latest])} mm) "
             f"from the latest, {latest}"]
    for name in reversed(used[:-1]):
        mine = [(d, frames) for d, m, frames in zip(distances, measured, per_slice) if m == name]
        times = sorted({hms(pass_time(f)) for _, frames in mine for f in frames if pass_time(f) is not None})
        parts.append(f"the slice(s) at {_mm([d for d, _ in mine])} mm from the earlier {name}"
                     + (f" (acquired {', '.join(times[:1] + times[-1:] if len(times) > 2 else times)})" if times
                        else ""))
    return (f"the stack was acquired in {len(order)} passes in this series ({'; '.join(described(n) for n in order)}): "
            "repeats of the stack at the same slice positions, not further slices; per slice position the latest "
            f"acquisition is measured: {', '.join(parts[:-1]) + ' and ' + parts[-1] if len(parts) > 1 else parts[0]}, "
            "where only the earlier pass(es) cover those positions; the other images of the earlier passes are left "
            "out. A position a later pass did not re-acquire keeps the earlier acquisition (check its quality: the "
            "stack was re-acquired for a reason)"
            + ("; the passes measured differ in InversionTime, so the measured slices mix inversion times (check "
               "the myocardial nulling of each)" if len({inversion[n] for n in used if inversion[n]}) > 1 else ""))


def _mm(distances: list[float]) -> str:
    """'80.00, 90.00' for positions in mm (no '-0.00')."""
    return ", ".join(f"{round(d, 2) + 0.0:.2f}" for d in distances)


def _inversion_text(frames: list[FrameInfo]) -> str:
    values = sorted({round(f.inversion_time, 1) for f in frames if f.inversion_time is not None})
    return ", ".join(f"{v:g}" for v in values)


def _earlier_fill_note(sid: str, other: str, fill: list[FrameInfo], later: list[FrameInfo], normal: np.ndarray) -> str:
    """The warning for the slice(s) of an earlier stack measured where the later repeat of the stack, on the same slice
    grid and plan, does not cover them (`latest_stacks` rule (a)): their positions (mm), the earlier acquisition time,
    and the InversionTime where it differs from the later stack's (an LGE re-acquired at another TI)."""
    positions = stack_positions(fill, normal)
    times = sorted({hms(pass_time(f)) for f in fill})
    later_positions = stack_positions(later, normal)
    note = (f"slice(s) at {_mm(positions)} mm taken from the earlier StackID {sid} "
            f"(acquired {', '.join(times)}): only the earlier pass covers {'it' if len(positions) == 1 else 'them'}; "
            f"the later StackID {other} ({len(later_positions)} slices, {_mm(later_positions[:1])} to "
            f"{_mm(later_positions[-1:])} mm, acquired by {hms(acquired_last(later)[0])}) re-acquired the stack on the "
            "same slice grid and orientation without that position. Per position the latest acquisition is measured, "
            "so the stack keeps every acquired slice instead of silently losing an end slice")
    earlier_ti, later_ti = _inversion_text(fill), _inversion_text(later)
    if earlier_ti and later_ti and earlier_ti != later_ti:
        note += f" (InversionTime {earlier_ti} ms there, {later_ti} ms in the later pass)"
    return note


def _earlier_ends_not_used(sid: str, other: str, stacks: dict[str, list[FrameInfo]], kept: list[FrameInfo],
                           normal: np.ndarray) -> tuple[str | None, list[float]]:
    """`latest_stacks` rule (b): where an earlier stack covered again by a later one on another geometry or with other
    phases (`frames.fill_mismatch`) reaches beyond every kept slice by more than half the later stack's step plus
    SAME_POSITION_MM (beyond the end disc of the measured stack), the text naming those end slices as not used and the
    volumes as lower bounds, and their positions (mm); (None, []) otherwise."""
    problem = fill_mismatch(stacks[sid], stacks[other], normal)
    positions = stack_positions(kept, normal)
    if problem is None or len(positions) < 2:
        return None, []
    reach = 0.5 * float(np.median(np.diff(positions))) + SAME_POSITION_MM
    beyond = [f for f in stacks[sid] if slice_distance(f, normal) < positions[0] - reach
              or slice_distance(f, normal) > positions[-1] + reach]
    if not beyond:
        return None, []
    ends = stack_positions(beyond, normal)
    times = sorted({hms(pass_time(f)) for f in beyond})
    return (f"end slice(s) of the earlier StackID {sid} at {_mm(ends)} mm (acquired "
            f"{', '.join(times)}) not used: the later StackID {other} re-acquired the stack {problem} and does not "
            f"reach them (measured stack {_mm(positions[:1])} to {_mm(positions[-1:])} mm), and slices of "
            f"{'two geometries' if problem.startswith('on ') else 'other phases'} are not mixed in one volume; part of the LV may lie outside the measured stack, so myocardial (and scar) "
            "volumes and mass are lower bounds"), [round(d, 2) + 0.0 for d in ends]


def latest_interleaved_pass(slices: list[tuple[float, list[FrameInfo]]], warnings: list[str],
                            left_out: list[tuple[FrameInfo, str]]) -> list[tuple[float, list[FrameInfo]]]:
    """`slice_groups` of a stack without StackID that is two passes of the stack interleaved along the normal (the
    whole stack re-planned, shifted by a few mm, and acquired again later in the series: steps alternating e.g.
    2 / 8 mm, each pass in a time block of its own, `frames.interleaved_passes`) with the earlier pass left out
    (named in `warnings`, appended to `left_out`): the later pass is measured, never a stack with "missing" slices.
    Any other stack is returned unchanged. Slice times: the median `frames.pass_time` of each slice's frames."""
    times = []
    for _, members in slices:
        values = [pass_time(f) for f in members]
        times.append(None if any(v is None for v in values) else float(np.median(values)))
    found = interleaved_passes([d for d, _ in slices], times)
    if found is None:
        return slices
    earlier, later = found
    steps = sorted({round(abs(slices[1][0] - slices[0][0]), 1), round(abs(slices[2][0] - slices[1][0]), 1)})
    reason = (f"the stack was acquired twice in this series, re-planned {steps[0]:g} mm along the normal (slice "
              f"steps alternating {steps[0]:g} / {steps[1]:g} mm, {len(earlier)} slices acquired by "
              f"{hms(max(times[k] for k in earlier))}, {len(later)} from {hms(min(times[k] for k in later))}): two "
              "passes, not missing slices; the later pass is measured, the earlier left out")
    warnings.append(reason)
    left_out += [(frame, reason) for k in earlier for frame in slices[k][1]]
    return [slices[k] for k in later]


#: cardiac-cycle fields whose per-frame value may sit in the Cardiac Synchronization functional group
_CARDIAC_SYNC = "CardiacSynchronizationSequence"


def _cardiac_value(frame: FrameInfo, keyword: str) -> float | None:
    """A positive number from the frame's Cardiac Synchronization functional group (Enhanced MR, per-frame then
    shared) or the classic attribute (header_value); None when absent or not positive."""
    ds = frame.header.dataset
    containers = functional_groups(frame)
    candidates = [item[_CARDIAC_SYNC].value[0].get(keyword) for item in containers
                  if _CARDIAC_SYNC in item and item[_CARDIAC_SYNC].value]
    candidates.append(header_value(ds, keyword, frame.frame_index if frame.ref.frame_number is not None else None))
    for value in candidates:
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if np.isfinite(number) and number > 0:
            return number
    return None


def _header_rr_ms(frame: FrameInfo) -> float | None:
    """The frame's RR interval in ms from its header: NominalInterval (0018,1062), RRIntervalTimeNominal
    (0020,9251), else 60000 / HeartRate (0018,1088)."""
    for keyword in ("NominalInterval", "RRIntervalTimeNominal"):
        value = _cardiac_value(frame, keyword)
        if value is not None:
            return value
    rate = _cardiac_value(frame, "HeartRate")
    return 60000.0 / rate if rate is not None else None


def _median_step(times: list[float]) -> float | None:
    steps = np.diff(sorted(times))
    steps = steps[steps > 0]
    return float(np.median(steps)) if steps.size else None


@dataclass(frozen=True)
class PhaseAxis:
    """One way to place frames of different slices on a common cardiac timing axis.

    values: [slice][frame] each frame's position; reference: (phases,) each cardiac phase's position on the same
    axis; tolerance: how far (same unit) a frame may lie from its phase (half a phase); method: how the axis was
    found, for messages; labels: (phases,) where each phase lies, for messages; note: a warning that goes with
    using this axis (a header RR passed over for it), or None.
    """
    values: list[list[float]]
    reference: np.ndarray
    tolerance: float
    method: str
    labels: list[str]
    note: str | None = None


#: a TriggerTime grid shared by all slices: every frame lies within this fraction of a phase interval of its phase's
#: median trigger time over the slices (prospective triggering with a fixed frame interval repeats the same delays;
#: each image's measured delay may jitter by a few ms, about 8 % of a 37.5 ms interval at +-3 ms)
GRID_TOLERANCE = 0.25
#: a header RR is each slice's own only when it equals the slice's cycle from its TriggerTimes (phase interval x
#: phases) to within this fraction of a phase interval; further off, late phases drift by a phase across slices
HEADER_RR_TOLERANCE = 0.25


def _fraction_axis(fractions: list[list[float]], method: str, note: str | None = None) -> PhaseAxis:
    """A PhaseAxis of fractions of the cycle (0..1): the phases are the median fractions of the fullest slices."""
    longest = max(len(s) for s in fractions)
    reference = np.median(np.array([f for f in fractions if len(f) == longest]), axis=0)
    return PhaseAxis(fractions, reference, 0.5 / longest, method, [f"at {100 * r:.0f} % of the cycle" for r in reference],
                     note)


def _reference_step(per_slice: list[list[FrameInfo]]) -> float | None:
    """The phase interval of the fullest slices (median TriggerTime step, any unit); None without one."""
    longest = max(len(s) for s in per_slice)
    steps = [_median_step([f.trigger_time for f in s]) for s in per_slice if len(s) == longest]
    steps = [s for s in steps if s is not None]
    return float(np.median(steps)) if steps else None


def trigger_grid(per_slice: list[list[FrameInfo]]) -> PhaseAxis | None:
    """Phases by absolute TriggerTime when every slice's trigger times lie on one shared grid (each trigger time
    within GRID_TOLERANCE of a phase interval of its group's median, groups more than half an interval apart): prospective
    triggering with a fixed frame interval (the phase count then varies with each slice's RR, but frames with the
    same TriggerTime are the same phase), or slices acquired at one RR. None otherwise (retrospective cines whose
    trigger times stretch with each slice's RR) or without TriggerTime on every frame."""
    step = _reference_step(per_slice)
    if not step:
        return None
    times = np.sort([f.trigger_time for s in per_slice for f in s])
    groups = np.split(times, np.nonzero(np.diff(times) > 0.5 * step)[0] + 1)
    if any(np.max(np.abs(g - np.median(g))) > GRID_TOLERANCE * step for g in groups):
        return None
    reference = np.array([float(np.median(g)) for g in groups])
    return PhaseAxis([[f.trigger_time for f in s] for s in per_slice], reference, 0.5 * step,
                     "the same TriggerTime at every slice (a fixed trigger delay per phase)",
                     [f"at TriggerTime {r:.4g}" for r in reference])


def own_cycles(per_slice: list[list[FrameInfo]]) -> list[float] | None:
    """Each slice's cardiac cycle from its own TriggerTimes: phases of the fullest slice x the slice's phase interval
    (median step), the interval scaled by the whole number m of reference intervals it spans only where the slice
    holds every m-th phase (its frame count x m is the fullest count to within m frames; a slice at a slower heart
    rate holding the full count keeps its own step). Same unit as TriggerTime (0018,1060): s, ms and us alike. None
    where a slice has no step."""
    longest = max(len(s) for s in per_slice)
    reference = _reference_step(per_slice)
    steps = [_median_step([f.trigger_time for f in s]) for s in per_slice]
    if not reference or any(st is None for st in steps):
        return None

    def spanned(step: float, count: int) -> int:
        multiple = max(1, round(step / reference))
        return multiple if abs(count * multiple - longest) <= multiple else 1

    return [longest * st / spanned(st, len(s)) for st, s in zip(steps, per_slice)]


def trigger_ms_factor(per_slice: list[list[FrameInfo]]) -> float:
    """The factor that turns these frames' TriggerTimes into ms: 1000 where all lie under MAX_RR_IN_SECONDS
    (seconds), 0.001 where one reaches MIN_TRIGGER_IN_MICROSECONDS (microseconds), else 1 (DICOM's ms, TriggerTime
    (0018,1060)), as recognition reads them. The header RR (_header_rr_ms) is always ms."""
    times = [f.trigger_time for s in per_slice for f in s if f.trigger_time is not None]
    if times and max(times) < MAX_RR_IN_SECONDS:
        return 1000.0
    if times and max(times) >= MIN_TRIGGER_IN_MICROSECONDS:
        return 0.001
    return 1.0


def header_rr_problem(per_slice: list[list[FrameInfo]], distances: list[float], cycles: list[float] | None
                      ) -> str | None:
    """Why the header RR (_header_rr_ms) is not each slice's own RR, or None when it is: a trigger time at or past
    it, or (cycles: own_cycles, in the TriggerTime's unit) a slice whose own cycle differs from it by more than
    HEADER_RR_TOLERANCE of a phase interval (a study-level or pre-scan NominalInterval / HeartRate beside
    per-breath-hold RRs, or prospective triggering whose frames stop short of the RR). Times compared and named in
    ms (trigger_ms_factor)."""
    longest = max(len(s) for s in per_slice)
    to_ms = trigger_ms_factor(per_slice)
    for index, (frames, distance) in enumerate(zip(per_slice, distances)):
        rr = [_header_rr_ms(f) for f in frames]
        last = max(f.trigger_time for f in frames) * to_ms
        if last >= min(rr):
            return f"at slice {distance:.1f} mm the last TriggerTime, {last:.0f} ms, reaches the header RR {min(rr):.0f} ms"
        cycle = cycles[index] * to_ms if cycles else None
        if cycle and any(abs(cycle - r) > HEADER_RR_TOLERANCE * cycle / longest for r in rr):
            return (f"at slice {distance:.1f} mm the header RR, {max(rr, key=lambda r: abs(cycle - r)):.0f} ms, is not "
                    f"the {cycle:.0f} ms that slice's {longest} phases span at its TriggerTime step")
    return None


def phase_axes(per_slice: list[list[FrameInfo]], distances: list[float]) -> list[PhaseAxis]:
    """The timing axes to match phases across slices by, in order of preference, each offered only when every
    frame has what it needs; the axes after a header RR left out (header_rr_problem) carry a note naming why:
    1. trigger_grid: the same TriggerTime at every slice is the same phase (prospective, fixed frame interval);
    2. NominalPercentageOfCardiacPhase (0020,9241) / 100;
    3. TriggerTime (0018,1060) / the slice's RR from the header (_header_rr_ms), only where that RR is the slice's
       own (header_rr_problem);
    4. TriggerTime / the slice's own cycle (own_cycles): trigger times differ from slice to slice as each slice is
       its own breath-hold with its own RR;
    5. (TemporalPositionIdentifier - 1) / the phases of the fullest slice.
    """
    frames = [f for s in per_slice for f in s]
    axes: list[PhaseAxis] = []
    note = None
    timed = all(f.trigger_time is not None for f in frames)
    grid = trigger_grid(per_slice) if timed else None
    if grid is not None:
        axes.append(grid)
    percentages = [[_cardiac_value(f, "NominalPercentageOfCardiacPhase") for f in s] for s in per_slice]
    if all(p is not None for s in percentages for p in s):
        axes.append(_fraction_axis([[p / 100.0 for p in s] for s in percentages], "NominalPercentageOfCardiacPhase"))
    if timed:
        cycles = own_cycles(per_slice)
        if all(_header_rr_ms(f) is not None for f in frames):
            problem = header_rr_problem(per_slice, distances, cycles)
            to_ms = trigger_ms_factor(per_slice)
            if problem is None:
                axes.append(_fraction_axis([[f.trigger_time * to_ms / _header_rr_ms(f) for f in s] for s in per_slice],
                                           "TriggerTime / the slice's RR interval (NominalInterval or HeartRate)"))
            else:
                note = (f"header RR interval (NominalInterval / HeartRate) not used to match cardiac phases, each "
                        f"slice's own TriggerTimes are (a header RR written once for the study, an irregular rhythm "
                        f"or prospective triggering do this; not an error in itself): {problem}")
        if cycles is not None:
            axes.append(_fraction_axis([[f.trigger_time / c for f in s] for s, c in zip(per_slice, cycles)],
                                       "TriggerTime / the slice's own cycle (phase interval x phases of the fullest "
                                       "slice)", note))
    if all(f.temporal_index is not None for f in frames):
        longest = max(len(s) for s in per_slice)
        axes.append(_fraction_axis([[(f.temporal_index - 1) / longest for f in s] for s in per_slice],
                                   temporal_index_name(frames), note))
    return axes


#: a kept phase lies on the acquisition grid when its TriggerTime is within this fraction of a phase interval of a
#: whole number of intervals from the first kept phase (prospective delays jitter by a few ms, about 0.1 interval)
ACQUISITION_GRID_TOLERANCE = 0.3


def _grid_numbers(times: list[float], step: float, declared: int) -> list[int] | None:
    """1-based phase numbers of one slice's kept phases (`times`: TriggerTime in temporal order) on a grid of
    `declared` phases `step` apart (same unit): each time lies a whole number (>= 1) of steps after the one before,
    within ACQUISITION_GRID_TOLERANCE of a step, the first phase's number is how many whole steps its time lies after
    the R wave (a first trigger delay under 1 - tolerance of a step, as acquisitions start right after the R wave) and
    the last number is at most `declared`; None where the times do not lie on that grid."""
    first = int(np.floor(times[0] / step + ACQUISITION_GRID_TOLERANCE))
    numbers = [first + 1]
    for earlier, later in zip(times, times[1:]):
        steps = (later - earlier) / step
        if round(steps) < 1 or abs(steps - round(steps)) > ACQUISITION_GRID_TOLERANCE:
            return None
        numbers.append(numbers[-1] + int(round(steps)))
    return numbers if first >= 0 and numbers[-1] <= declared else None


def acquisition_grid_numbers(per_slice: list[list[FrameInfo]], declared: int | None
                             ) -> tuple[list[int], str] | None:
    """The acquisition phase number (1-based) of each kept phase where the images declare more phases than were kept
    (CardiacNumberOfImages (0018,1090) `declared` > phases of `per_slice`: an export that dropped a phase at every
    slice, an ED + ES export), and how it was found; None where nothing tells (the numbering then stays positional).

    per_slice: [slice][phase] the kept frames, matched across slices. In order of preference:
    1. TemporalPositionIdentifier (0020,0100) / TemporalPositionIndex (0020,9128), where every frame has one, each
       phase the same at every slice, rising, within 1..declared and not merely 1..kept (a renumbered export);
    2. TriggerTime (0018,1060) on a grid of `declared` phases: the phase interval is the median TriggerTime step of
       the phases kept where fewer phases are missing than half the steps between them (so the median is one step),
       else the slice's RR (NominalInterval (0018,1062) / RRIntervalTimeNominal / 60000 / HeartRate (0018,1088), ms)
       / declared; every slice must give each phase the same number (_grid_numbers).
    """
    kept = min(len(s) for s in per_slice) if per_slice else 0
    if not declared or kept < 1 or declared <= kept or any(len(s) != kept for s in per_slice):
        return None
    frames = [f for s in per_slice for f in s]
    if all(f.temporal_index is not None for f in frames):
        indices = {tuple(f.temporal_index for f in s) for s in per_slice}
        if len(indices) == 1:
            numbers = list(next(iter(indices)))
            if (all(b > a for a, b in zip(numbers, numbers[1:])) and numbers[0] >= 1 and numbers[-1] <= declared
                    and numbers != list(range(1, kept + 1))):
                return numbers, temporal_index_name(frames)
    if not all(f.trigger_time is not None for f in frames):
        return None
    to_ms = trigger_ms_factor(per_slice)
    steps = [_median_step([f.trigger_time for f in s]) for s in per_slice] if kept > 1 else []
    candidates = []
    if kept > 1 and declared - kept < (kept - 1) / 2 and all(st is not None for st in steps):
        candidates.append(([float(st) for st in steps],
                           "TriggerTime on the phase interval of the phases present (median TriggerTime step) x "
                           "CardiacNumberOfImages"))
    rr = [[_header_rr_ms(f) for f in s] for s in per_slice]
    if all(r is not None for s in rr for r in s):
        candidates.append(([float(np.median(s)) / to_ms / declared for s in rr],
                           "TriggerTime on the RR interval (NominalInterval / HeartRate) / CardiacNumberOfImages"))
    for slice_steps, method in candidates:
        found = [_grid_numbers([f.trigger_time for f in s], st, declared) for s, st in zip(per_slice, slice_steps)]
        if all(n is not None for n in found) and len({tuple(n) for n in found}) == 1:
            return found[0], method
    return None


def whole_instances_left_out(left_out: list[tuple[FrameInfo, str]]) -> list[dict]:
    """`excluded_instances` entries for the multi-frame instances every frame of which (NumberOfFrames (0028,0008))
    is in `left_out` (frame, reason), with the reason(s) given for their frames; a multi-frame instance with some
    frames used is not listed (its frames left out are named in the warnings)."""
    by_instance: dict[str, list[tuple[FrameInfo, str]]] = {}
    for frame, reason in left_out:
        if frame.ref.frame_number is not None:
            by_instance.setdefault(frame.ref.sop_instance_uid, []).append((frame, reason))
    entries = []
    for items in by_instance.values():
        header = items[0][0].header
        count = int(header.dataset.get("NumberOfFrames", 0) or 0)
        if count and len({frame.ref.frame_number for frame, _ in items}) >= count:
            entries.append(excluded_entry(header, f"all {count} frames left out: "
                                          + "; ".join(dict.fromkeys(reason for _, reason in items))))
    return entries


#: which of two images at one slice position and time (`_temporal_identity`) is kept: the later in
#: `_temporal_sort_key` order (between copies of one image: the higher InstanceNumber)
DUPLICATE_RULE = "kept: the later by TriggerTime and AcquisitionTime, then the higher InstanceNumber"


def duplicate_reasons(duplicates: list[tuple[FrameInfo, FrameInfo, float]]) -> list[tuple[str, list[FrameInfo]]]:
    """One (reason, frames left out) per slice position holding single-frame duplicates and per multi-frame instance
    whose frames duplicate another instance's (`duplicates`: (frame left out, frame kept, slice position in mm along
    the normal)), in first-seen order. Single-frame images are named by slice position: one duplicate with both
    instances, several (a cine slice sent twice: one per cardiac phase) with their count and the first pair, and the
    rule that chose (DUPLICATE_RULE); a multi-frame instance (a re-sent Enhanced MR instance under a new SOP Instance
    UID) is named once, with how many of its frames, at how many slices, were left out, its ContentTime (0008,0033)
    and the instance kept."""
    grouped: dict[tuple, list[tuple[FrameInfo, FrameInfo, float]]] = {}
    for dropped, kept, distance in duplicates:
        key = (("slice", round(distance, 2)) if dropped.ref.frame_number is None
               else (dropped.ref.sop_instance_uid, kept.ref.sop_instance_uid))
        grouped.setdefault(key, []).append((dropped, kept, distance))
    reasons = []
    for items in grouped.values():
        frames = [dropped for dropped, _, _ in items]
        dropped_uid, kept_uid = frames[0].ref.sop_instance_uid, items[0][1].ref.sop_instance_uid
        if frames[0].ref.frame_number is None and len(items) == 1:
            reason = (f"duplicate frame at slice {items[0][2]:.2f} mm: kept instance {kept_uid} over {dropped_uid} "
                      f"({DUPLICATE_RULE})")
        elif frames[0].ref.frame_number is None:
            reason = (f"duplicate frames at slice {items[0][2]:.2f} mm: {len(items)} images repeat another image of "
                      f"that slice at the same time (cardiac phase), one left out each ({DUPLICATE_RULE}): the first "
                      f"kept instance {kept_uid} over {dropped_uid}")
        else:
            content = hms(tm_seconds(frames[0].header.dataset.get("ContentTime")))
            kept_content = hms(tm_seconds(items[0][1].header.dataset.get("ContentTime")))
            reason = (f"instance {dropped_uid} (ContentTime {content}): {len(frames)} frame(s) at "
                      f"{len({round(d, 2) for _, _, d in items})} slice(s) duplicate those of instance {kept_uid} "
                      f"(ContentTime {kept_content}), a re-send; kept instance {kept_uid}")
        reasons.append((reason, frames))
    return reasons


def match_phases(axis: PhaseAxis, per_slice: list[list[FrameInfo]], distances: list[float]
                 ) -> tuple[list[dict[int, FrameInfo]], str | None]:
    """Each slice's frames matched to the nearest phase of `axis`, and what makes the match inconsistent (None when
    consistent): a frame further than the tolerance (half a phase) from every phase, or a slice whose frames, in their
    own temporal order, do not fall on strictly increasing phases (two frames of one slice on one phase, or the
    slice's frame order reversed). Returns [slice] {phase index: frame}."""
    matched: list[dict[int, FrameInfo]] = []
    for distance, frames, values in zip(distances, per_slice, axis.values):
        errors = np.abs(axis.reference[None, :] - np.asarray(values, dtype=float)[:, None])
        nearest = errors.argmin(axis=1)
        far = [(f, e) for f, e in zip(frames, errors.min(axis=1)) if e > axis.tolerance]
        if far:
            frame, error = far[0]
            return matched, (f"{frame_name(frame)} at slice {distance:.1f} mm is "
                             f"{error / (2 * axis.tolerance):.1f} phase interval(s) from every phase"
                             + (f" ({len(far)} such frames at that slice)" if len(far) > 1 else ""))
        clash = next((k for k in range(1, len(frames)) if nearest[k] <= nearest[k - 1]), None)
        if clash is not None:
            return matched, (f"at slice {distance:.1f} mm {frame_name(frames[clash - 1])} and "
                             f"{frame_name(frames[clash])} (consecutive frames) fall on phases "
                             f"{nearest[clash - 1] + 1} and {nearest[clash] + 1}: not one phase each in the slice's order")
        matched.append({int(p): f for p, f in zip(nearest, frames)})
    return matched, None


def common_phases(series_key: str, per_slice: list[list[FrameInfo]], distances: list[float], warnings: list[str],
                  acquisition: dict | None = None) -> tuple[list[list[FrameInfo]], list[tuple[FrameInfo, str]]]:
    """Keep the cardiac phases every slice has, when slices hold different numbers of phases (an image lost or
    undecodable, slices exported with fewer phases, or prospective triggering whose phase count follows each
    slice's RR): the frames are matched to the phases of the first timing axis of phase_axes on which the match is
    consistent (match_phases: every frame within half a phase of one phase, one phase per frame, in each slice's own
    frame order), and a phase missing at any slice is left out of all slices (volumes stay whole-heart), each named
    in `warnings`; a header RR that is not the slices' own is named there too.

    per_slice: [slice][phase] frames in temporal order; distances: each slice's position along the normal (mm).
    `acquisition`: where given, receives "phase_numbers" (the acquisition phase number, 1-based on the matched timing
    axis, of each phase kept: a reader's "phase 9" stays phase 9 when phase 8 is left out) and "acquired" (the phases
    of that axis, those left out included). Returns the [slice][phase] frames kept and the frames left out with the reason. Raises StudyError (naming the
    counts) when the frames carry no timing to match them by, when no timing axis matches them consistently (naming
    what is wrong on each: phases from different cardiac phases are never put together), or when fewer than 2
    phases (or fewer than half) would remain.
    """
    counts = [len(s) for s in per_slice]
    tally = ", ".join(f"{n} phase(s) in {c} slice(s)" for n, c in sorted(Counter(counts).items()))
    refusal = f"series {series_key}: inconsistent phase counts across slices ({tally}); "
    axes = phase_axes(per_slice, distances)
    if not axes:
        raise StudyError(refusal + "without TriggerTime, NominalPercentageOfCardiacPhase or TemporalPositionIdentifier "
                         "the phases cannot be matched across slices")
    problems = []
    for axis in axes:
        matched, problem = match_phases(axis, per_slice, distances)
        if problem is None:
            break
        problems.append(f"by {axis.method}: {problem}")
    else:
        notes = sorted({a.note for a in axes if a.note})
        raise StudyError(refusal + "the slices' cardiac phases cannot be lined up with each other, so no volume "
                         "over the whole stack can be built (images lost in transfer, a slice acquired at a very "
                         "different heart rate or acquired twice do this: re-send the series, or check it on the "
                         "scanner). Detail: the phases cannot be matched one-to-one across slices in each slice's own "
                         "order (" + "; ".join(problems + notes) + "); phases from different cardiac phases are not "
                         "put together")
    if axis.note:
        warnings.append(axis.note)
    phases = len(axis.reference)
    kept = [p for p in range(phases) if all(p in m for m in matched)]
    if len(kept) < max(2, (phases + 1) // 2):
        raise StudyError(refusal + f"only {len(kept)} of {phases} phases are present at every slice (phases matched "
                         f"by {axis.method})")
    left_out: list[tuple[FrameInfo, str]] = []
    for p in range(phases):
        if p in kept:
            continue
        missing = [f"{d:.1f}" for d, m in zip(distances, matched) if p not in m]
        reason = (f"cardiac phase {p + 1} of {phases} ({axis.labels[p]}; matched by {axis.method}) is missing at "
                  f"slice(s) {', '.join(missing)} mm; left out at every slice so that each phase covers the whole stack")
        warnings.append(reason)
        left_out += [(m[p], reason) for m in matched if p in m]
    if acquisition is not None:
        acquisition.update({"phase_numbers": [p + 1 for p in kept], "acquired": phases})
    return [[m[p] for p in kept] for m in matched], left_out


def _fallback_slice_spacing(frame: FrameInfo, warnings: list[str]) -> float:
    ds = frame.header.dataset
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        try:
            value = float(getattr(ds, keyword))
        except (AttributeError, TypeError, ValueError):
            continue
        if value > 0:
            warnings.append(f"single slice: slice spacing taken from {keyword} ({value} mm)")
            return value
    warnings.append("single slice: no SpacingBetweenSlices/SliceThickness, slice spacing set to 1 mm")
    return 1.0


def stored_range(dataset) -> tuple[int, int]:
    """Smallest and largest stored value BitsStored and PixelRepresentation allow (PS3.3 C.7.6.3.1)."""
    bits = int(dataset.get("BitsStored") or dataset.get("BitsAllocated") or 16)
    if int(dataset.get("PixelRepresentation") or 0):
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def as_monochrome2(array: np.ndarray, dataset) -> np.ndarray:
    """Stored values as a MONOCHROME2 image would hold them (PS3.3 C.7.6.3.1.2).

    MONOCHROME1 shows the smallest value white: each stored value v becomes (low + high) - v over the range the
    header allows, and each image (frame) is then shifted so that its smallest value, the air background an MR
    magnitude image holds near 0, is 0: a viewer's inversion with a window on the image's own range. The inversion
    constant a converter used (the BitsStored range, the series' or each image's own maximum) then leaves no
    offset that differs between images. A VOI window is display-only and is not applied to what models see. Other
    interpretations pass unchanged.
    """
    if str(dataset.get("PhotometricInterpretation", "")).strip().upper() != "MONOCHROME1":
        return array
    low, high = stored_range(dataset)
    inverted = (np.int64(low + high) - array.astype(np.int64)).astype(np.float64)
    if inverted.size:
        axes = (-2, -1) if inverted.ndim >= 2 else None
        inverted -= inverted.min(axis=axes, keepdims=True)
    return inverted


def colour_problem(dataset) -> str | None:
    """Why an image is no grey-scale MR image (PS3.3 C.7.6.3.1.2: RGB, YBR_*, PALETTE COLOR, SamplesPerPixel > 1:
    a screen capture or a colour map relabelled as MR), else None; models read MR magnitude values only."""
    photometric = str(dataset.get("PhotometricInterpretation", "") or "").strip().upper()
    samples = int(dataset.get("SamplesPerPixel") or 1)
    if photometric in ("", "MONOCHROME1", "MONOCHROME2") and samples == 1:
        return None
    return (f"colour image (PhotometricInterpretation {photometric or 'not given'}, SamplesPerPixel {samples}): not "
            f"an MR magnitude image")


#: the largest |RescaleSlope| / |RescaleIntercept| an MR image plausibly carries (scanners write slopes of ~1e-3 to
#: ~1e2, intercepts of a few thousand): beyond, the modality LUT is a header error (a slope of 1e30 overflows)
MAX_RESCALE_SLOPE = 1e6
MAX_RESCALE_INTERCEPT = 1e9


def pixel_header_problem(dataset) -> str | None:
    """Why the Image Pixel module of an instance cannot describe an MR magnitude image, or does not fit its native
    Pixel Data, naming the attribute: BitsAllocated 1 (bit-packed: a mask or overlay), a non-finite or absurd
    RescaleSlope / RescaleIntercept, or Pixel Data shorter than Rows × Columns × SamplesPerPixel × BitsAllocated / 8
    × NumberOfFrames (PS3.5 8.1.1) or longer by at least one whole row (Columns × SamplesPerPixel × BitsAllocated / 8
    bytes): pydicom drops excess bytes, so the image read would be a crop of one whose Rows or Columns the header
    misstates. A smaller excess is trailing padding (to an even length, a word or a block, as exporters write it):
    pydicom removes it and warns, and the warning is logged once per series (LibraryWarningsOnce). Encapsulated
    (compressed) pixel data is left to the decoder. None when nothing is wrong."""
    bits = int(dataset.get("BitsAllocated") or 0)
    if bits == 1:
        return ("BitsAllocated 1 (bit-packed pixels: a binary mask or overlay, not an MR magnitude image; MR images "
                "have BitsAllocated 8, 16 or 32)")
    for keyword, limit in (("RescaleSlope", MAX_RESCALE_SLOPE), ("RescaleIntercept", MAX_RESCALE_INTERCEPT)):
        try:
            value = float(dataset.get(keyword)) if dataset.get(keyword) not in (None, "") else None
        except (TypeError, ValueError):
            return f"{keyword} {str(dataset.get(keyword))!r} is not a number"
        if value is not None and not (np.isfinite(value) and abs(value) <= limit):
            return (f"{keyword} {value:g} is implausible for an MR image (beyond ±{limit:g}): the stored values "
                    "would be scaled out of any meaningful range")
    if "PixelData" not in dataset or not dataset["PixelData"].value:
        return None
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and pydicom.uid.UID(str(syntax)).is_encapsulated:
        return None
    try:
        rows, cols = int(dataset.Rows), int(dataset.Columns)
        samples = int(dataset.get("SamplesPerPixel") or 1)
        frames = int(dataset.get("NumberOfFrames") or 1)
    except (AttributeError, TypeError, ValueError):
        return None  # said by the decoder
    if not (rows and cols and bits):
        return None
    frame_bytes = rows * cols * samples * bits // 8
    expected = frame_bytes * max(frames, 1)
    actual = len(dataset["PixelData"].value)
    header = (f"Rows {rows} × Columns {cols}" + (f" × SamplesPerPixel {samples}" if samples != 1 else "")
              + f" × BitsAllocated {bits} / 8" + (f" × NumberOfFrames {frames}" if frames > 1 else ""))
    row_bytes = cols * samples * bits // 8
    if actual - expected >= max(row_bytes, 2):
        if frames > 1 and actual % frame_bytes == 0:
            return (f"NumberOfFrames {frames} but Pixel Data holds {actual // frame_bytes} frame(s) ({actual} bytes, "
                    f"{header} = {expected})")
        return (f"Pixel Data is {actual} bytes, {actual - expected} more than {header} = {expected}: Rows or "
                "Columns (or BitsAllocated) does not describe the image stored; reading the first rows would "
                "measure a crop of it")
    if actual < expected:
        if frames > 1:
            return (f"NumberOfFrames {frames} but Pixel Data holds only {actual // frame_bytes} whole frame(s) "
                    f"({actual} of {expected} bytes = {header})")
        return f"Pixel Data is {actual} bytes, fewer than {header} = {expected}: Rows or Columns too large, or cut short"
    return None


def decode_instances(paths: list[str], encoding: dict[str, tuple] | None = None
                     ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Each file's pixel array as MONOCHROME2 stored values, and {path: reason} for files that cannot be used
    (no or empty Pixel Data, a colour image, pixel data that cannot be decoded).

    `encoding`, where given, receives {path: (SOPInstanceUID, Lossy or None, pixels using bits above HighBit,
    BitsStored)} of each file decoded (`source_encoding`), for `encoding_warnings`."""
    arrays: dict[str, np.ndarray] = {}
    unusable: dict[str, str] = {}
    with LibraryWarningsOnce():
        for path in paths:
            _decode_one(path, arrays, unusable, encoding)
    return arrays, unusable


#: pydicom's pixel decoding logger: it logs each plugin's failure at ERROR with a traceback (LOGGER.exception),
#: although the caller (decode_instances) handles the failure and says it in one line (decode_failure)
PYDICOM_DECODER_LOGGER = "pydicom.pixels.decoders.base"


class LibraryWarningsOnce(logging.Filter):
    """While decoding one series: pydicom's own log lines (its logger "pydicom": "The pixel data is N bytes long,
    which indicates it contains M bytes of excess padding", once per image) from this thread are held back and each
    distinct line is logged once at the end, with the number of images it was said of. Other threads' lines pass.
    The decoder's ERROR records (PYDICOM_DECODER_LOGGER) of a failure decode_instances handles are logged at DEBUG,
    one line, no traceback: the reason the instance is left out says it."""

    def __init__(self):
        super().__init__()
        self.thread = threading.get_ident()
        self.held: Counter = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread != self.thread or record.levelno < logging.WARNING:
            return True
        if record.name == PYDICOM_DECODER_LOGGER:
            log.debug("pydicom decoder: %s", " ".join(record.getMessage().split()))
            return False
        self.held[record.getMessage()] += 1
        return False

    def __enter__(self):
        for name in ("pydicom", PYDICOM_DECODER_LOGGER):  # a logger's filters see only the records logged on it
            logging.getLogger(name).addFilter(self)
        return self

    def __exit__(self, *exc):
        for name in ("pydicom", PYDICOM_DECODER_LOGGER):
            logging.getLogger(name).removeFilter(self)
        for message, count in self.held.items():
            log.warning("pydicom: %s (said of %d image(s) of this series, logged once)", message, count)
        return False


def _decode_one(path: str, arrays: dict, unusable: dict, encoding: dict | None) -> None:
    """decode_instances for one file: its array into `arrays`, or why it cannot be used into `unusable`."""
    dataset = None
    try:
        dataset = pydicom.dcmread(path)
        problem = pixel_problem(dataset) or colour_problem(dataset) or pixel_header_problem(dataset)
        if problem is None:
            if encoding is not None:
                encoding[path] = (str(dataset.get("SOPInstanceUID", "")), lossy_compression(dataset),
                                  high_bit_pixels(dataset), int(dataset.get("BitsStored") or 0))
            arrays[path] = as_monochrome2(dataset.pixel_array, dataset)
            return
    except Exception as error:  # noqa: BLE001 - decoding problems exclude this instance, with the reason
        problem = decode_failure(error, dataset)
    unusable[path] = problem


#: what pydicom's decoder messages carry that is no use to a reader: the address of a Python object
_OBJECT_ADDRESS = re.compile(r"\s*<[^<>]* object at 0x[0-9a-fA-F]+>")
#: the longest decoder message quoted in a reason (one line in the console and the PDF)
MAX_DECODER_MESSAGE = 300


def decode_failure(error: Exception, dataset=None) -> str:
    """One line saying why pixel data could not be read: "pixel data cannot be decoded (JPEG 2000 Image Compression
    (1.2.840.10008.1.2.4.91)): pylibjpeg: No matching JPEG 2000 format found; pillow: cannot identify image file".

    `dataset`: the instance, when it was read (its file meta TransferSyntaxUID is named); None when the file itself
    could not be read ("file cannot be read: ..."). The decoder's message (pydicom lists each plugin's on its own
    line) is joined into one line, Python object addresses (which change from run to run) dropped, and cut to
    MAX_DECODER_MESSAGE characters."""
    lines = [_OBJECT_ADDRESS.sub("", line).strip() for line in str(error).splitlines()]
    lines = [line for line in lines if line]
    if len(lines) > 1 and lines[0].startswith("Unable to decode as exceptions were raised by all available plugins"):
        lines = lines[1:]  # pydicom's preamble to the plugins' own messages
    message = "; ".join(lines) or type(error).__name__
    if len(message) > MAX_DECODER_MESSAGE:
        message = message[:MAX_DECODER_MESSAGE - 1].rstrip() + "…"
    if dataset is None:
        return f"file cannot be read: {message}"
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    where = f" ({transfer_syntax_name(str(syntax))})" if syntax else " (no TransferSyntaxUID in the file meta)"
    return f"pixel data cannot be decoded{where}: {message}"


def entry_place(entry: dict) -> str:
    """" (series 11 'LGE_PSIR_SAX', InstanceNumber 3)": where an `excluded_instances` entry's image is, as a viewer
    lists it; each part left out where the header has none, "" where it has neither."""
    parts = []
    if entry.get("series_number") is not None or entry.get("series_description"):
        number = f" {entry['series_number']}" if entry.get("series_number") is not None else ""
        description = f" '{entry['series_description']}'" if entry.get("series_description") else ""
        parts.append(f"series{number}{description}")
    if entry.get("instance_number") is not None:
        parts.append(f"InstanceNumber {entry['instance_number']}")
    return f" ({', '.join(parts)})" if parts else ""


def encoding_warnings(encoding: dict[str, tuple], paths: list[str]) -> list[str]:
    """The stack warnings on how the files at `paths` (those measured) were encoded (`decode_instances`'
    `encoding`): lossy compression, stored values above BitsStored."""
    used = [encoding[p] for p in paths if p in encoding]
    lossy = lossy_note([found for _, found, _, _ in used if found is not None], len(used))
    high = {uid: count for uid, _, count, _ in used if count}
    overflow = high_bits_note(high, sorted({bits for _, _, count, bits in used if count}))
    return [note for note in (lossy, overflow) if note]


def read_pixels(frames_by_phase: list[list[FrameInfo]], arrays: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Decoded, rescaled float32 pixels (phases, slices, rows, cols), MONOCHROME2; each file is read once.

    `arrays`: already decoded files (decode_instances); any other file is read here (StudyError when it cannot).
    """
    first = frames_by_phase[0][0]
    pixels = np.empty((len(frames_by_phase), len(frames_by_phase[0]), first.rows, first.cols), np.float32)
    wanted: dict[str, list[tuple[int, int, FrameInfo]]] = defaultdict(list)
    for p, row in enumerate(frames_by_phase):
        for s, frame in enumerate(row):
            wanted[str(frame.header.path)].append((p, s, frame))
    arrays = dict(arrays or {})
    missing = [path for path in wanted if path not in arrays]
    decoded, unusable = decode_instances(missing)
    if unusable:
        path, reason = next(iter(unusable.items()))
        raise StudyError(f"{path}: {reason}")
    arrays.update(decoded)
    for path, entries in wanted.items():
        array = arrays[path]
        multi = array.ndim == 3 and entries[0][2].ref.frame_number is not None
        for p, s, frame in entries:
            image = array[frame.frame_index] if multi else array
            if image.shape != (frame.rows, frame.cols):
                raise StudyError(f"{path}: pixel data shape {image.shape} differs from Rows x Columns "
                                 f"{(frame.rows, frame.cols)}")
            slope, intercept = frame.rescale
            if not (np.isfinite(slope) and np.isfinite(intercept) and abs(slope) <= MAX_RESCALE_SLOPE
                    and abs(intercept) <= MAX_RESCALE_INTERCEPT):
                raise StudyError(f"instance {frame.ref.sop_instance_uid}: RescaleSlope {slope:g} / RescaleIntercept "
                                 f"{intercept:g} implausible for an MR image (beyond ±{MAX_RESCALE_SLOPE:g} / "
                                 f"±{MAX_RESCALE_INTERCEPT:g})")
            pixels[p, s] = image.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    return pixels


def series_words(series: AnalysisSeries) -> str:
    """"series 5 'SA cine' (UID 1.2.3)" as a viewer lists it: SeriesNumber, SeriesDescription and the first
    SeriesInstanceUID of the series, each left out where absent."""
    number = f" {series.series_number}" if series.series_number is not None else ""
    description = f" '{series.description}'" if series.description else ""
    return f"series{number}{description} (UID {series.series_instance_uid})"


def build_volume(series: AnalysisSeries, require_stack: bool = True) -> Volume:
    """The Volume of a series (see types.Volume); raises StudyError with the reason when it cannot be built.

    An instance whose pixel data is empty or cannot be decoded is left out and listed in `Volume.excluded`
    (with the reason); the rest is used when it still forms a stack, else StudyError names the instances.
    """
    paths = list(dict.fromkeys(str(h.path) for h in series.instances))
    encoding: dict[str, tuple] = {}
    arrays, unusable = decode_instances(paths, encoding)
    excluded = [excluded_entry(h, unusable[str(h.path)]) for h in series.instances if str(h.path) in unusable]
    if excluded and len(excluded) == len(series.instances):
        raise StudyError(f"{series_words(series)}: no usable pixel data ({excluded[0]['reason']} in "
                         f"{len(excluded)} instance(s))", excluded, unusable)
    try:
        frames, distances, warnings, left_out, step, ends, phase_numbers, acquired, declared = arrange_frames(
            series, require_stack, frozenset(e["sop_instance_uid"] for e in excluded))
    except StudyError as error:
        if not excluded:
            raise
        raise StudyError(f"{error}; after leaving out {len(excluded)} instance(s): "
                         + "; ".join(f"{e['sop_instance_uid']}: {e['reason']}" for e in excluded),
                         unusable=unusable) from error
    warnings = [f"instance {e['sop_instance_uid']}{entry_place(e)} left out: {e['reason']}" for e in excluded] + warnings
    # single-frame images of a phase left out are listed as gaps too; a multi-frame instance keeps its other frames
    excluded += [excluded_entry(frame.header, reason) for frame, reason in left_out if frame.ref.frame_number is None]
    excluded += whole_instances_left_out(left_out)
    first_slice = frames[0][0]
    orientation, positions = stack_plane(frames[0])
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = plane_normal(orientation)
    spacing_rows, spacing_cols = first_slice.pixel_spacing
    slice_spacing = float(np.median(np.diff(distances))) if len(distances) > 1 else _fallback_slice_spacing(first_slice, warnings)
    affine = np.eye(4)
    affine[:3, 0] = row_dir * spacing_cols
    affine[:3, 1] = col_dir * spacing_rows
    affine[:3, 2] = normal * slice_spacing
    affine[:3, 3] = positions[0]
    trigger_times = []
    for row in frames:
        values = [f.trigger_time for f in row if f.trigger_time is not None]
        trigger_times.append(float(np.median(values)) if values else None)
    pixels = read_pixels(frames, arrays)
    warnings += header_warnings([f for row in frames for f in row])
    warnings += encoding_warnings(encoding, list(dict.fromkeys(str(f.header.path) for row in frames for f in row)))
    for warning in warnings:
        log.warning("series %s: %s", series.key, warning)
    return Volume(
        pixels=pixels,
        affine=affine,
        pixel_spacing=(float(spacing_rows), float(spacing_cols)),
        slice_spacing=slice_spacing,
        frames=[[f.ref for f in row] for row in frames],
        trigger_times=trigger_times,
        orientation=orientation,
        positions=positions,
        warnings=warnings,
        excluded=excluded,
        unusable=unusable,
        nominal_step_mm=step,
        ends_left_out_mm=ends,
        declared_phases=declared,
        phase_numbers=phase_numbers,
        acquired_phases=acquired,
        slice_rr_ms=slice_rr_ms(frames),
        trigger_order_note=trigger_order_note([list(column) for column in zip(*frames)], list(distances)),
    )


def header_warnings(frames: list[FrameInfo]) -> list[str]:
    """Stack warnings on header values the volume was built despite: negative TriggerTimes (taken as absent), a
    RescaleSlope of 0 (invalid; read as 1) and an
    ImageOrientationPatient whose row and column cosines are not perpendicular (the geometry derived from it, and
    the SEG that copies it, are approximate). One warning each, counting the images."""
    found = [note for note in (negative_trigger_note(frames),) if note]
    zero = {f.ref.sop_instance_uid for f in frames if declared_rescale_slope(f) == 0}
    if zero:
        found.append(f"RescaleSlope 0 in {len(zero)} image(s): invalid (every pixel would be RescaleIntercept); read "
                     "as 1, the stored values used as they are: check the scanner's export")
    skewed = {}
    for frame in frames:
        angle = not_perpendicular_deg(frame.orientation)
        if angle is not None:
            skewed[frame.ref.sop_instance_uid] = angle
    if skewed:
        angles = sorted(skewed.values())
        span = f"{angles[0]:.1f}°" if angles[-1] - angles[0] < 0.05 else f"{angles[0]:.1f}° to {angles[-1]:.1f}°"
        found.append(f"ImageOrientationPatient of {len(skewed)} image(s): row and column cosines at {span}, not 90° "
                     "(an invalid header): positions, spacing and the SEG geometry copied from it are approximate")
    return found


def trigger_order_note(per_slice: list[list[FrameInfo]], distances: list[float]) -> str | None:
    """The timing note where the TriggerTime (0018,1060) of the phases contradicts the order they were put in
    (per_slice: [slice][phase] frames in `_temporal_sort_key` order; distances: each slice's position, mm): ordered by
    TemporalPositionIdentifier / TemporalPositionIndex where every frame has one, a later phase with an earlier
    TriggerTime; else ordered by TriggerTime, phases whose InstanceNumber (and frame) order is another. None where
    they agree or say nothing (a TriggerTime or InstanceNumber missing). The phases stay as ordered: only said."""
    indexed = all(f.temporal_index is not None for s in per_slice for f in s)
    found = []
    for distance, frames in zip(distances, per_slice):
        if len(frames) < 2 or any(f.trigger_time is None for f in frames):
            continue
        if indexed:
            pair = next(((a, b) for a, b in zip(frames, frames[1:]) if b.trigger_time < a.trigger_time), None)
        elif all(f.instance_number is not None for f in frames):
            numbered = sorted(frames, key=lambda f: (f.instance_number, f.frame_index))
            pair = next(((a, b) for a, b in zip(numbered, numbered[1:]) if b.trigger_time < a.trigger_time), None)
        else:
            pair = None
        if pair is not None:
            found.append((distance, pair))
    if not found:
        return None
    distance, (first, second) = found[0]
    where = f"{len(found)} of {len(per_slice)} slice(s), e.g. at {distance:.2f} mm"
    if indexed:
        name = temporal_index_name([f for s in per_slice for f in s]).split(" (")[0]
        return (f"TriggerTime order contradicts {name} at {where} ({name} {first.temporal_index} at TriggerTime "
                f"{first.trigger_time:g}, {second.temporal_index} at {second.trigger_time:g}): phases ordered by "
                f"{name}; the headers disagree on the phase order, check the cine's timing")
    return (f"phases ordered by TriggerTime against their InstanceNumber order at {where} (InstanceNumber "
            f"{first.instance_number} at TriggerTime {first.trigger_time:g}, {second.instance_number} at "
            f"{second.trigger_time:g}): the headers disagree on the phase order, check the cine's timing")


def slice_rr_ms(frames: list[list[FrameInfo]]) -> list[float | None]:
    """Per slice of frames [phase][slice]: the median RR interval (ms) its frames' headers give (_header_rr_ms), None
    where none gives one."""
    found = []
    for k in range(len(frames[0]) if frames else 0):
        values = [rr for rr in (_header_rr_ms(row[k]) for row in frames) if rr is not None]
        found.append(float(np.median(values)) if values else None)
    return found
