"""A short-axis stack re-acquired in its series (StackID (0020,9056) 1 then 2, later AcquisitionTime) where the later
pass is one slice shorter, longer, or on another slice grid: nothing acquired is silently thrown away. On the same
slice grid and orientation the latest acquisition wins per position and the end slice only the earlier pass covers
is taken from it, named with its position and time; on another grid the passes are not mixed, and an end slice of
the earlier pass beyond the later one is named as not used, the volumes as lower bounds. LGE (synthetic classic
images, the Scan writer of test_stack_assembly_field) and cine (real Sunnybrook SCD0000101 headers) alike."""
from __future__ import annotations

import numpy as np
import pytest

from dicomnode.analysis.cine_metrics import stack_coverage
from dicomnode.cmr import understand_study
from dicomnode.cmr.frames import same_range
from dicomnode.cmr.grouping import read_header
from dicomnode.cmr.volume import build_volume
from dicomnode.labels import Label
from test_stack_assembly_field import SPACING_MM, Scan, _lge
from test_cine_repeats import _restack, _used
from test_cmr_cine_phases import _cine_volume, _slice_and_phase, scd101  # noqa: F401 (fixture)

EARLIER, LATER = "090000", "091500"


def _two_passes(tmp_path, earlier: list[float], later: list[float]):
    """One LGE series: StackID 1 at `earlier` slice positions (in slice steps) acquired at 09:00, StackID 2 at
    `later` at 09:15. Returns (study, {sop uid: (stack id, position mm)})."""
    scan = Scan(tmp_path)
    passes = {}
    for stack, (positions, time) in enumerate(((earlier, EARLIER), (later, LATER)), start=1):
        for k in positions:
            scan.image(10, 0, time=time, instance=100 * stack + int(2 * k), shift_mm=SPACING_MM * k)
            passes[scan.paths[-1]] = (str(stack), SPACING_MM * k)
    headers = [read_header(p) for p in scan.paths]
    where = {}
    for header in headers:
        header.dataset.StackID, position = passes[header.path]
        where[header.sop_instance_uid] = (header.dataset.StackID, position)
    return understand_study(headers), where


def _volume(study):
    (series,) = _lge(study)
    return series, build_volume(series)


def _sources(volume, where) -> list[tuple[str, float]]:
    return [where[ref.sop_instance_uid] for ref in volume.frames[0]]


@pytest.mark.parametrize("missing", ["apical_end", "basal_end"])
def test_lge_later_pass_one_slice_shorter_keeps_the_end_slice_from_the_earlier_pass(tmp_path, missing):
    later = list(range(9)) if missing == "apical_end" else list(range(1, 10))
    study, where = _two_passes(tmp_path, list(range(10)), later)
    series, volume = _volume(study)
    assert series.slices == 10
    assert volume.pixels.shape[:2] == (1, 10)
    end = 90.0 if missing == "apical_end" else 0.0
    sources = _sources(volume, where)
    assert [p for _, p in sources] == [10.0 * k for k in range(10)]
    assert [s for s, p in sources if p != end] == ["2"] * 9 and dict((p, s) for s, p in sources)[end] == "1"
    (fill,) = [w for w in volume.warnings if "only the earlier" in w]
    assert f"{end:.2f} mm" in fill and "09:00:00" in fill and "StackID 1" in fill and "StackID 2" in fill
    assert not [w for w in volume.warnings if "lower bounds" in w or "irregular slice spacing" in w]
    assert volume.nominal_step_mm == pytest.approx(10.0) and volume.ends_left_out_mm == []
    # the other 9 images of the earlier pass are left out and named
    assert sum("StackID 1" in e["reason"] for e in volume.excluded) == 9


def test_lge_later_pass_one_slice_longer_wins_and_nothing_is_lost(tmp_path):
    study, where = _two_passes(tmp_path, list(range(9)), list(range(10)))
    _, volume = _volume(study)
    assert _sources(volume, where) == [("2", 10.0 * k) for k in range(10)]
    assert not [w for w in volume.warnings if "only the earlier" in w or "lower bounds" in w]
    assert sum("StackID 1" in e["reason"] for e in volume.excluded) == 9


def test_lge_later_pass_on_a_half_slice_grid_is_not_mixed_with_the_earlier(tmp_path):
    """9 slices shifted by half a step inside the earlier 10: the later pass alone, its end discs reach the earlier
    ends (half a step), so no slice is named as lost."""
    study, where = _two_passes(tmp_path, list(range(10)), [k + 0.5 for k in range(9)])
    _, volume = _volume(study)
    assert _sources(volume, where) == [("2", 10.0 * k + 5.0) for k in range(9)]
    assert not [w for w in volume.warnings if "only the earlier" in w or "irregular slice spacing" in w]
    assert [w for w in volume.warnings if "is covered again by the later StackID 2" in w]


@pytest.mark.parametrize("shift", [-0.5, 0.5])
def test_lge_later_pass_one_shorter_and_half_a_slice_off_names_the_end_slice_not_used(tmp_path, shift):
    """9 slices shifted by half a step past one end of the earlier 10: not mixed into one stack of 5 mm steps (the
    two passes were taken for complementary slabs); the later pass is measured and the earlier end slice that lies
    beyond it is named as not used, the volumes as lower bounds."""
    later = [k + shift for k in range(9)] if shift < 0 else [k + shift for k in range(1, 10)]
    study, where = _two_passes(tmp_path, list(range(10)), later)
    series, volume = _volume(study)
    assert series.slices == 9
    assert _sources(volume, where) == [("2", 10.0 * k) for k in later]
    assert not [w for w in volume.warnings if "only the earlier" in w]
    lost = 90.0 if shift < 0 else 0.0
    (note,) = [w for w in volume.warnings if "not used" in w]
    assert f"{lost:.2f} mm" in note and "09:00:00" in note and "lower bounds" in note and "another slice grid" in note
    assert volume.ends_left_out_mm == [lost]


def test_lge_partial_inner_repeat_at_other_positions_still_does_not_supersede(tmp_path):
    """The 'partial stack does not supersede' rule holds: 4 slices re-acquired 3 mm off inside the earlier 10 are
    left out, the full earlier stack measured, nothing filled or named as lost."""
    study, where = _two_passes(tmp_path, list(range(10)), [k + 0.3 for k in range(3, 7)])
    _, volume = _volume(study)
    assert _sources(volume, where) == [("1", 10.0 * k) for k in range(10)]
    assert [w for w in volume.warnings if "re-acquires part of" in w]
    assert not [w for w in volume.warnings if "only the earlier" in w or "not used" in w]
    assert volume.ends_left_out_mm == []


def test_cine_coverage_is_not_complete_where_an_acquired_end_slice_is_not_used():
    labels = np.zeros((4, 8, 8), np.int64)
    labels[:, 2:6, 2:6] = int(Label.LV_BLOOD_POOL)
    labels[0] = 0
    labels[0, 3:5, 3:5] = int(Label.LV_BLOOD_POOL)
    labels[-1, 2:6, 5] = 0  # the base narrower than the largest section: a 40-mm stack ending on it is not confirmed
    positions = [0.0, 10.0, 20.0, 30.0]
    assert stack_coverage(labels, positions, apex_first=True).complete
    coverage = stack_coverage(labels, positions, apex_first=True, ends_left_out_mm=[40.0])
    assert not coverage.complete and "40.00 mm" in coverage.reasons[0] and coverage.summary()["caveat"]


def test_cine_coverage_stays_complete_where_the_unused_end_slice_lies_beyond_an_end_without_lv():
    """An atrial slice dropped between passes: the measured basal end slice holds no LV, so the unused slice beyond
    it is a note only; beyond an end slice that still holds LV it makes coverage incomplete."""
    labels = np.zeros((5, 8, 8), np.int64)
    labels[:4, 2:6, 2:6] = int(Label.LV_BLOOD_POOL)
    labels[0] = 0
    labels[0, 3:5, 3:5] = int(Label.LV_BLOOD_POOL)
    positions = [0.0, 10.0, 20.0, 30.0, 40.0]  # apex first; the last slice (atrium) holds no LV
    coverage = stack_coverage(labels, positions, apex_first=True, ends_left_out_mm=[50.0])
    assert coverage.complete and not coverage.reasons
    assert any("50.00 mm" in n and "no LV" in n for n in coverage.notes)
    labels[4, 3:5, 3:5] = int(Label.LV_MYOCARDIUM)
    coverage = stack_coverage(labels, positions, apex_first=True, ends_left_out_mm=[50.0])
    assert not coverage.complete and "50.00 mm" in coverage.reasons[0]
    # the side is unknown without positions: it counts
    labels[4] = 0
    assert not stack_coverage(labels, None, apex_first=True, ends_left_out_mm=[50.0]).complete


def test_latest_stacks_fills_per_position_on_one_grid_only():
    """The pure rule on frames: a one-shorter later stack on the same grid fills its missing end from the earlier
    one; the grid rule keeps same_range's notion of a repeat."""
    assert same_range([10.0 * k for k in range(9)], [10.0 * k for k in range(10)])
    assert same_range([10.0 * k - 5.0 for k in range(9)], [10.0 * k for k in range(10)])  # half a slice off, 1 short
    assert not same_range([10.0 * k for k in range(5)], [10.0 * k for k in range(10)])  # a slab


def test_cine_later_stack_one_slice_shorter_keeps_the_end_slice_from_the_earlier_stack(scd101):
    """The SCD0000101 cine (12 slices x 20 phases) acquired again 15 min later as StackID 2 without its last slice:
    12 slices measured, 11 from the later stack, the end slice from the earlier one, named."""
    where = _slice_and_phase(scd101)
    again = _restack(scd101, 0.0, stack_ids=True)
    again_where = _slice_and_phase(again)
    last = max(s for s, _ in where.values())
    again = [h for h in again if again_where[id(h)][0] != last]
    series, volume = _cine_volume(scd101 + again)
    assert series.slices == 12
    assert volume.pixels.shape[:2] == (20, 12)
    end_slice = {h.sop_instance_uid for h in scd101 if where[id(h)][0] == last}
    assert _used(volume) == {h.sop_instance_uid for h in again} | end_slice
    (fill,) = [w for w in volume.warnings if "only the earlier" in w]
    assert "StackID 1" in fill and "mm" in fill
    assert not [w for w in volume.warnings if "lower bounds" in w or "irregular slice spacing" in w]


def test_cine_later_stack_one_slice_longer_wins(scd101):
    where = _slice_and_phase(scd101)
    last = max(s for s, _ in where.values())
    earlier = [h for h in scd101 if where[id(h)][0] != last]
    again = _restack(scd101, 0.0, stack_ids=True)
    for header in earlier:
        header.dataset.StackID = "1"
    _, volume = _cine_volume(earlier + again)
    assert volume.pixels.shape[:2] == (20, 12)
    assert _used(volume) == {h.sop_instance_uid for h in again}
    assert not [w for w in volume.warnings if "only the earlier" in w or "lower bounds" in w]


def test_cine_later_stack_half_a_slice_off_and_one_shorter_is_not_mixed(scd101):
    """StackID 2 re-planned half a slice (5 mm) towards one end and one slice shorter: measured alone (11 slices at
    its own 10 mm steps, never 23 slices of mixed passes), the earlier end slice beyond it named as not used."""
    again = _restack(scd101, -5.0, stack_ids=True)
    again_where = _slice_and_phase(again)
    last = max(s for s, _ in again_where.values())
    again = [h for h in again if again_where[id(h)][0] != last]
    series, volume = _cine_volume(scd101 + again)
    assert series.slices == 11
    assert volume.pixels.shape[:2] == (20, 11)
    assert _used(volume) == {h.sop_instance_uid for h in again}
    (note,) = [w for w in volume.warnings if "not used" in w]
    assert "lower bounds" in note and "another slice grid" in note
    assert len(volume.ends_left_out_mm) == 1
