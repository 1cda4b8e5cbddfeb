"""A short-axis stack acquired in several passes in one series (a fresh tester's findings 3 to 5 on the
one-slice-shorter rule): per slice position the LATEST acquisition that covers it on the same plan is measured, with
three passes too (an end position never takes the oldest pass where a later one covers it); one plain-words summary
says which positions came from which pass, for StackID passes and passes told apart by time alone; a later cine pass
with fewer phases is never filled from an earlier pass of other phases (the end slice is named, the volumes lower
bounds) instead of the whole cine being refused with a false 'slice acquired 2 times' reason; a later pass on another
pixel spacing wins like a later pass shifted through-plane (one rule across kinds of re-planning), said once."""
from __future__ import annotations

import pytest

from dicomnode.cmr import understand_study
from dicomnode.cmr.grouping import read_header
from dicomnode.cmr.volume import build_volume
from test_stack_assembly_field import SPACING_MM, Scan, _lge
from test_cine_repeats import _restack, _used
from test_cmr_cine_phases import _cine_volume, _slice_and_phase, scd101  # noqa: F401 (fixture)

TIMES = ("090000", "090500", "090900")


def _passes(tmp_path, passes: list[list[float]], stack_ids: bool = True, spacing: dict[int, float] | None = None,
            inversion: dict[int, float] | None = None):
    """One LGE series acquired in len(passes) passes (pass n at TIMES[n], its slices at the positions given in slice
    steps, half steps too; StackID n + 1 where `stack_ids`; PixelSpacing `spacing[n]` mm and InversionTime
    `inversion[n]` ms for pass n where given). Returns (study, {sop uid: (pass number from 1, position mm)})."""
    scan = Scan(tmp_path)
    made = {}
    for n, positions in enumerate(passes):
        for k in positions:
            scan.image(10, 0, time=TIMES[n], instance=100 * (n + 1) + int(k), shift_mm=SPACING_MM * k,
                       inversion=(inversion or {}).get(n, 300.0))
            made[scan.paths[-1]] = (n + 1, SPACING_MM * k)
    headers = [read_header(p) for p in scan.paths]
    where = {}
    for header in headers:
        number, position = made[header.path]
        if stack_ids:
            header.dataset.StackID = str(number)
        if spacing and number - 1 in spacing:
            header.dataset.PixelSpacing = [spacing[number - 1]] * 2
        where[header.sop_instance_uid] = (number, position)
    return understand_study(headers), where


def _volume(study):
    (series,) = _lge(study)
    return series, build_volume(series)


def _sources(volume, where) -> dict[float, int]:
    return {where[ref.sop_instance_uid][1]: where[ref.sop_instance_uid][0] for ref in volume.frames[0]}


def _summary(volume) -> str:
    (summary,) = [w for w in volume.warnings if "per slice position the latest acquisition is measured" in w]
    return summary


# --- finding 4: three passes, an end position covered by the middle pass ----------------------------------------------
@pytest.mark.parametrize("stack_ids", [True, False], ids=["StackID", "time_only"])
def test_three_passes_each_position_takes_the_latest_pass_that_covers_it(tmp_path, stack_ids):
    """Pass 1: 6 slices (09:00), pass 2: 5 slices without the last (09:05), pass 3: 4 slices without either end
    (09:09): the first position comes from pass 2, never from pass 1; the last only pass 1 covers."""
    study, where = _passes(tmp_path, [list(range(6)), list(range(5)), list(range(1, 5))], stack_ids)
    series, volume = _volume(study)
    assert series.slices == 6
    assert volume.pixels.shape[:2] == (1, 6)
    assert _sources(volume, where) == {0.0: 2, 10.0: 3, 20.0: 3, 30.0: 3, 40.0: 3, 50.0: 1}
    summary = _summary(volume)
    name = "StackID {}" if stack_ids else "pass {}"
    assert "3 passes" in summary and all(name.format(n) in summary for n in (1, 2, 3))
    assert "0.00 mm" in summary and "50.00 mm" in summary and "09:05:00" in summary and "09:00:00" in summary
    assert not [w for w in volume.warnings if "repeat of one slice" in w or "acquired 2 times" in w
                or "acquired 3 times" in w]
    assert not [w for w in volume.warnings if "lower bounds" in w or "irregular slice spacing" in w]
    assert len(volume.excluded) == 15 - 6


@pytest.mark.parametrize("stack_ids", [True, False], ids=["StackID", "time_only"])
def test_later_pass_two_slices_shorter_mixes_per_position_and_says_so_once(tmp_path, stack_ids):
    study, where = _passes(tmp_path, [list(range(6)), list(range(4))], stack_ids)
    _, volume = _volume(study)
    assert _sources(volume, where) == {0.0: 2, 10.0: 2, 20.0: 2, 30.0: 2, 40.0: 1, 50.0: 1}
    summary = _summary(volume)
    assert "40.00, 50.00 mm" in summary and "09:00:00" in summary and "only the earlier" in summary
    assert not [w for w in volume.warnings if "repeat of one slice" in w or "acquired 2 times" in w]


def test_one_slice_reacquired_keeps_its_own_line_and_no_pass_summary(tmp_path):
    study, where = _passes(tmp_path, [list(range(6)), [3]], stack_ids=False)
    _, volume = _volume(study)
    assert _sources(volume, where)[30.0] == 2
    assert not [w for w in volume.warnings if "per slice position" in w]
    assert [w for w in volume.warnings if "acquired 2 times" in w or "repeat of one slice" in w]


# --- finding 5: a later pass on another pixel spacing ---------------------------------------------------------------
def test_later_pass_on_another_pixel_spacing_wins_like_a_shifted_pass(tmp_path):
    """Pass 2: 5 slices at PixelSpacing x 1.03: the later pass is measured (not the 6 of the earlier by a
    majority-grid count), the earlier end slice named once as not used, the volumes lower bounds."""
    study, where = _passes(tmp_path, [list(range(6)), list(range(5))], spacing={1: 5.15})
    series, volume = _volume(study)
    assert series.slices == 5
    assert set(_sources(volume, where).values()) == {2}
    (note,) = [w for w in volume.warnings if "not used" in w]
    assert "50.00 mm" in note and "another pixel grid" in note and "lower bounds" in note
    assert volume.ends_left_out_mm == [50.0]
    assert not [w for w in volume.warnings if "matrix / FOV" in w]


def test_later_pass_on_another_pixel_spacing_without_stack_id_wins_too(tmp_path):
    """The same told apart by time alone: the later pass is measured, the earlier left out in one line, the end slice
    only the earlier pass acquired named, the volumes lower bounds."""
    study, where = _passes(tmp_path, [list(range(6)), list(range(5))], stack_ids=False, spacing={1: 5.15})
    _, volume = _volume(study)
    assert set(_sources(volume, where).values()) == {2} and len(_sources(volume, where)) == 5
    (line,) = [w for w in volume.warnings if "acquired again later in this series on another pixel grid" in w]
    assert "the later pass is measured" in line
    assert [w for w in volume.warnings if w.startswith("end slice left out") and "lower bounds" in w]
    assert volume.ends_left_out_mm == [50.0]
    assert not [w for w in volume.warnings if "matrix / FOV, left out" in w]


def test_a_slice_reacquired_on_another_grid_is_named_once(tmp_path):
    """Without StackID, 3 slices re-acquired later on another FOV: one sentence names the later acquisitions and
    their positions, not one copy of it per image."""
    study, _ = _passes(tmp_path, [list(range(6)), [1, 2, 3]], stack_ids=False, spacing={1: 5.15})
    _, volume = _volume(study)
    (grid,) = [w for w in volume.warnings if "matrix / FOV" in w]
    assert grid.count("LATER acquisition") == 1 and "10.00, 20.00, 30.00 mm" in grid
    assert len(grid) < 1200


# --- finding 3: a cine pass one slice shorter AND with fewer phases --------------------------------------------------
def test_cine_later_pass_shorter_with_fewer_phases_measures_it_and_names_the_end_slice(scd101):
    """StackID 1: 12 slices x 20 phases; StackID 2, 15 min later: 11 slices x 10 phases. The later pass is measured
    (10 phases), the end slice only StackID 1 holds is not filled from 20 other phases: named as not used, the
    volumes lower bounds. Never the false 'slice acquired 2 times ... cannot be told apart' refusal."""
    where = _slice_and_phase(scd101)
    again = _restack(scd101, 0.0, stack_ids=True)
    again_where = _slice_and_phase(again)
    last = max(s for s, _ in where.values())
    again = [h for h in again if again_where[id(h)][0] != last and again_where[id(h)][1] % 2 == 0]
    series, volume = _cine_volume(scd101 + again)
    assert volume.pixels.shape[:2] == (10, 11)
    assert _used(volume) == {h.sop_instance_uid for h in again}
    (note,) = [w for w in volume.warnings if "not used" in w]
    assert "lower bounds" in note and "StackID 1" in note and "10 images" in note and "20" in note
    assert len(volume.ends_left_out_mm) == 1
    assert not [w for w in volume.warnings if "only the earlier" in w]


@pytest.mark.parametrize("stack_ids", [True, False], ids=["StackID", "time_only"])
def test_cine_three_passes_take_the_latest_per_position(scd101, stack_ids):
    """SCD0000101 acquired three times (pass 2 without the last slice, pass 3 without either end): the first slice
    from pass 2, the last from pass 1, the others from pass 3, said once."""
    where = _slice_and_phase(scd101)
    last = max(s for s, _ in where.values())
    second = _restack(scd101, 0.0, stack_ids=stack_ids)
    third = _restack(second, 0.0, stack_ids=stack_ids)
    if stack_ids:
        for header in scd101:
            header.dataset.StackID = "1"
        for header in second:
            header.dataset.StackID = "2"
        for header in third:
            header.dataset.StackID = "3"
    second = [h for h in second if _slice_and_phase(second)[id(h)][0] != last]
    third_where = _slice_and_phase(third)
    third = [h for h in third if third_where[id(h)][0] not in (0, last)]
    series, volume = _cine_volume(scd101 + second + third)
    assert volume.pixels.shape[:2] == (20, 12)
    first_slice = {h.sop_instance_uid for h in second if _slice_and_phase(second)[id(h)][0] == 0}
    last_slice = {h.sop_instance_uid for h in scd101 if where[id(h)][0] == last}
    assert _used(volume) == {h.sop_instance_uid for h in third} | first_slice | last_slice
    summary = _summary(volume)
    assert "3 passes" in summary
    assert not [w for w in volume.warnings if "acquired 2 times" in w or "acquired 3 times" in w]


# --- review finding 1: three passes, the latest re-planned half a slice off ------------------------------------------
def test_three_passes_latest_on_another_grid_never_mixes_two_geometries(tmp_path):
    """A (oldest): 0..110 mm; B, same plan: 0..100 mm; C (latest): 5..95 mm, half a slice off. B repeats A and C
    repeats B, but C does not repeat A: A's slices must not fill C (they lie on B's grid, not on C's), so C alone is
    measured, A's end slice at 110 mm named as not used, the volumes lower bounds."""
    study, where = _passes(tmp_path, [list(range(12)), list(range(11)), [k + 0.5 for k in range(10)]])
    _, volume = _volume(study)
    assert volume.pixels.shape[:2] == (1, 10)
    assert set(_sources(volume, where).values()) == {3}
    assert sorted(_sources(volume, where)) == [5.0 + 10.0 * k for k in range(10)]
    assert volume.ends_left_out_mm == [110.0]
    assert [w for w in volume.warnings if "110.00 mm" in w and "not used" in w and "lower bounds" in w]
    assert not [w for w in volume.warnings if "only the earlier" in w or "per slice position" in w]


def test_three_passes_oldest_on_the_latest_grid_still_fills_its_end(tmp_path):
    """A and C on one plan, B (middle) half a slice off: A's end slice only it covers is checked against C (measured),
    not against B, and fills C's end."""
    study, where = _passes(tmp_path, [list(range(6)), [k + 0.5 for k in range(5)], list(range(1, 5))])
    _, volume = _volume(study)
    sources = _sources(volume, where)
    assert set(sources.values()) <= {1, 3} and sources[10.0] == 3 and sources[40.0] == 3
    assert all(d % 10.0 == 0 for d in sources)


def test_cine_three_passes_latest_on_another_grid_is_measured_alone(scd101):
    """The cine variant: StackID 1 (12 slices), StackID 2 (same plan, 11 slices), StackID 3 (half a slice off, 10
    slices): only StackID 3 is measured, never slices of StackID 1 among them."""
    where = _slice_and_phase(scd101)
    last = max(s for s, _ in where.values())
    locations = sorted({float(h.dataset.SliceLocation) for h in scd101})
    step = locations[1] - locations[0]
    second = _restack(scd101, 0.0, stack_ids=True)
    second = [h for h in second if _slice_and_phase(second)[id(h)][0] != last]
    third = _restack(second, 0.5 * step, stack_ids=True)
    third = [h for h in third if _slice_and_phase(third)[id(h)][0] != last - 1]
    for headers, sid in ((scd101, "1"), (second, "2"), (third, "3")):
        for header in headers:
            header.dataset.StackID = sid
    _, volume = _cine_volume(scd101 + second + third)
    assert volume.pixels.shape[:2] == (20, 10)
    assert _used(volume) == {h.sop_instance_uid for h in third}
    # StackID 1's last slice (and StackID 2's, a little over half a step beyond StackID 3's end) named as not used
    assert volume.ends_left_out_mm and [w for w in volume.warnings if "StackID 1" in w and "not used" in w]


# --- review finding 6: the pass summary names InversionTimes, and needs passes of the stack ---------------------------
@pytest.mark.parametrize("stack_ids", [True, False], ids=["StackID", "time_only"])
def test_pass_summary_names_each_pass_inversion_time(tmp_path, stack_ids):
    study, where = _passes(tmp_path, [list(range(6)), list(range(4))], stack_ids, inversion={0: 250.0, 1: 300.0})
    _, volume = _volume(study)
    assert _sources(volume, where) == {0.0: 2, 10.0: 2, 20.0: 2, 30.0: 2, 40.0: 1, 50.0: 1}
    summary = _summary(volume)
    assert "InversionTime 250 ms" in summary and "InversionTime 300 ms" in summary
    assert "mix inversion times" in summary


def test_pass_summary_without_differing_inversion_times_names_none(tmp_path):
    study, _ = _passes(tmp_path, [list(range(6)), list(range(4))])
    _, volume = _volume(study)
    assert "InversionTime" not in _summary(volume)


def test_two_slices_reacquired_keep_their_own_lines_not_a_stack_repeat(tmp_path):
    study, where = _passes(tmp_path, [list(range(6)), [2, 3]], stack_ids=False, inversion={1: 250.0})
    _, volume = _volume(study)
    assert _sources(volume, where)[20.0] == 2 and _sources(volume, where)[30.0] == 2
    assert not [w for w in volume.warnings if "per slice position" in w or "repeat of the stack" in w]
    lines = [w for w in volume.warnings if "20.00 mm" in w or "30.00 mm" in w]
    assert len(lines) >= 2 and all("250" in w for w in lines)
