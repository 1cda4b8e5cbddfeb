"""Cine timing on cycles that are not 12-30 distinct phases of one regular rhythm (break42b F2, F3, F5): a cycle cut
short at every slice, phases repeated or interpolated by the reconstruction, and an RR interval that differs between
slices."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from dicomnode.analysis.cine import CinePipeline, cycle_length
from dicomnode.analysis.cine_metrics import (PARTIAL_CYCLE_EDGE_START, RR_VARIATION_START, CycleNeighbours,
                                             find_cardiac_phases, measure_cine, rr_variation_note, rv_timing_notes,
                                             temporal_jumps, temporal_resolution_note)
from dicomnode.analysis.derived_phases import DERIVED_NOTE_START, derived_phases
from dicomnode.config import Config
from test_cine_metrics import synthetic_cine
from test_cine_pipeline import FakeRuntime, FakeStudy, FakeVolume, context, disc

#: the timing-slice LV volumes (mL) of acdc4d patient090's 12 phases as the node measured them (break42b out_a4d):
#: phase 2 (92.4 mL over all slices) and phase 11 (38.3 mL) jump from their neighbours
PATIENT090 = [82.78, 92.38, 81.44, 71.87, 64.67, 59.02, 50.8, 43.59, 44.61, 45.15, 38.3, 45.66]


def _slices(curve) -> np.ndarray:
    return np.stack([np.asarray(curve, dtype=float) * w for w in (0.3, 0.4, 0.3)], axis=1)


# --- F3: a cycle cut short at every slice ---------------------------------------------------------------------------

def test_a_monotone_fall_to_the_edge_of_a_partial_cycle_is_not_a_jump_and_es_there_is_caveated():
    """break42b F3: phases 9-12 of 12 left out at every slice. Phase 8, the smallest volume sent, has one neighbour;
    the median of two values is their mean, so it was flagged as a jump, ES moved to phase 7 and EF fell 44.6 -> 37.6 %."""
    kept = _slices(PATIENT090[:8])
    times = [83.3 * p for p in range(8)]
    timing = find_cardiac_phases(kept, times, phase_numbers=list(range(1, 9)), cycle_phases=12)
    assert 7 not in timing.flagged_phases and 0 not in timing.flagged_phases
    assert timing.flagged_phases == [1]  # phase 2 jumps as in the whole cycle
    assert timing.es == 7
    edge = [n for n in timing.notes if n.startswith(PARTIAL_CYCLE_EDGE_START)]
    assert any("end-systole taken at phase 8, next to cardiac phases 9-12 of the 12 of the cycle" in n
               and "the true end-systole may lie among them" in n for n in edge), timing.notes
    # the whole cycle: no phase lies at an edge, and the jumps found are the same as before
    whole = find_cardiac_phases(_slices(PATIENT090), [83.3 * p for p in range(12)], phase_numbers=list(range(1, 13)),
                                cycle_phases=12)
    assert whole.flagged_phases == [1, 10] and whole.ed == 2 and whole.es not in whole.flagged_phases
    assert not any(n.startswith(PARTIAL_CYCLE_EDGE_START) for n in whole.notes)


def test_a_phase_with_one_neighbour_is_never_judged_a_jump():
    cycle = CycleNeighbours.of(6, [1, 2, 3, 4, 5, 6], cycle_phases=10)
    assert cycle.judged().tolist() == [False, True, True, True, True, False]
    assert cycle.missing_beyond(5) == [7, 8, 9, 10] and cycle.missing_beyond(0) == [7, 8, 9, 10]
    assert cycle.missing_beyond(2) == []
    volumes = _slices([100.0, 90.0, 80.0, 70.0, 60.0, 20.0])  # the edge drops far more than any tolerance
    consistent, flagged = temporal_jumps(volumes, [1, 2, 3, 4, 5, 6], 10)
    assert flagged == [] and consistent[5] == pytest.approx(20.0)
    # the same drop inside a whole cycle is a jump
    assert 5 in temporal_jumps(_slices([100.0, 90.0, 80.0, 70.0, 60.0, 20.0, 60.0, 70.0]))[1]
    # the RV check follows the same rule
    assert rv_timing_notes(volumes, 0, 5, [1, 2, 3, 4, 5, 6], 10)[0] == []


def test_an_ed_next_to_phases_not_sent_is_caveated_too():
    # phases 1-3 of 12 not sent: the R-wave phase sent first is phase 4, with the late-diastolic phases 1-3 missing
    curve = [70.0, 60.0, 52.0, 46.0, 44.0, 47.0, 55.0, 66.0, 78.0]
    timing = find_cardiac_phases(_slices(curve), [83.3 * p for p in range(3, 12)], phase_numbers=list(range(4, 13)),
                                 cycle_phases=12)
    assert any(n.startswith(PARTIAL_CYCLE_EDGE_START) and "end-diastole" in n and "phases 1-3 of the 12" in n
               for n in timing.notes), timing.notes


def test_declared_phases_beyond_those_sent_make_the_cycle_partial():
    @dataclass
    class Declared:
        pixels: np.ndarray
        declared_phases: int | None = None
        acquired_phases: int | None = None

    assert cycle_length(Declared(np.zeros((8, 2, 4, 4)), declared_phases=12, acquired_phases=8)) == 12
    assert cycle_length(Declared(np.zeros((8, 2, 4, 4)), acquired_phases=8)) == 8
    assert cycle_length(Declared(np.zeros((8, 2, 4, 4)))) == 8


# --- F2: phases repeated or interpolated by the reconstruction ------------------------------------------------------

def _acquired_pixels(phases: int = 12, slices: int = 3, seed: int = 0) -> np.ndarray:
    """A cine of `phases` acquisitions: a disc whose radius follows a cycle, with noise independent per frame."""
    rng = np.random.default_rng(seed)
    pixels = rng.normal(100.0, 12.0, (phases, slices, 48, 48))
    for p in range(phases):
        radius = 10.0 + 5.0 * np.cos(2 * np.pi * p / phases)
        pixels[p][:, disc((48, 48), (23.5, 23.5), radius, (1.0, 1.0))] += 300.0
    return np.round(pixels).astype(np.float32)


def _interpolated(pixels: np.ndarray, k: int) -> np.ndarray:
    """k reconstructed phases per acquired one, blended linearly into the next (cyclic) and rounded, as
    break42b scripts/cine_interp.py."""
    n = len(pixels)
    out = [(1 - j / k) * pixels[p] + j / k * pixels[(p + 1) % n] for p in range(n) for j in range(k)]
    return np.round(np.asarray(out)).astype(np.float32)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_repeated_and_interpolated_phases_are_found_and_acquired_ones_are_not(k):
    acquired = _acquired_pixels()
    assert not derived_phases(acquired).any
    assert not derived_phases(_acquired_pixels(phases=30)).any  # a fine real cine: independent noise in each frame
    repeated = derived_phases(np.repeat(acquired, k, axis=0))
    assert len(repeated.repeated) == 12 * (k - 1)
    assert repeated.distinct == list(range(0, 12 * k, k)) and repeated.interpolated == []
    blended = derived_phases(_interpolated(acquired, k))
    assert blended.distinct == list(range(0, 12 * k, k)) and blended.repeated == []
    assert blended.note().startswith(DERIVED_NOTE_START + f"{12 * (k - 1)} of the {12 * k} phases sent: ")
    assert "among the 12 distinct phases" in blended.note()


def test_interpolation_that_does_not_blend_across_the_cycle_s_end_is_found_too():
    acquired = _acquired_pixels()
    blended = _interpolated(acquired, 3)[:34]  # 12 -> 34 phases: nothing after the last acquired phase
    found = derived_phases(blended)
    assert found.distinct == list(range(0, 34, 3)) and len(found.interpolated) == 22


def test_a_single_near_blend_in_an_acquired_cine_is_not_taken_for_interpolation():
    acquired = _acquired_pixels()
    acquired[5] = np.round((acquired[4] + acquired[6]) / 2)  # one frame only: no regular reconstruction
    assert derived_phases(acquired).interpolated == []


def test_repeated_or_interpolated_phases_give_the_ed_es_of_the_acquired_cycle():
    """break42b F2: the 12 phases of patient090 sent as 48 repeated phases: a 3-phase median saw no jump, and ED/ES
    landed on the two frames the 12-phase run rejects (EF 58.5 % for 44.6 %)."""
    twelve = find_cardiac_phases(_slices(PATIENT090), [83.3 * p for p in range(12)])
    many = np.repeat(_slices(PATIENT090), 4, axis=0)
    times = [1000.0 * q / 48 for q in range(48)]
    blind = find_cardiac_phases(many, times)
    assert blind.flagged_phases == [] and (blind.ed, blind.es) != (4 * twelve.ed, 4 * twelve.es)
    timed = find_cardiac_phases(many, times, distinct_phases=list(range(0, 48, 4)))
    assert (timed.ed, timed.es) == (4 * twelve.ed, 4 * twelve.es)
    assert timed.flagged_phases == [4 * p for p in twelve.flagged_phases]
    assert len(timed.smoothed_curve_ml) == 48 and timed.smoothed_curve_ml[5] == timed.smoothed_curve_ml[4]
    note = temporal_resolution_note(times, 48, list(range(0, 48, 4)))
    assert note.startswith("coarse temporal resolution: 12 distinct phases of the 48 sent, 83 ms per phase")
    assert temporal_resolution_note(times, 48) is None  # 21 ms per reconstructed phase


def test_measure_cine_times_repeated_phases_on_the_distinct_ones_with_a_note():
    lv = [200, 240, 190, 160, 130, 110, 100, 105, 120, 150, 170, 185]
    maps = synthetic_cine(lv, [v + 20 for v in lv])
    once = measure_cine(maps, 1.0, trigger_times=[83.3 * p for p in range(12)])
    repeated = np.repeat(maps, 3, axis=0)
    derived = derived_phases(np.repeat(np.arange(12, dtype=np.float32)[:, None, None, None] * np.ones((1, 2, 2, 2)),
                                       3, axis=0))
    result = measure_cine(repeated, 1.0, trigger_times=[1000.0 * q / 36 for q in range(36)],
                          distinct_phases=derived.distinct, derived_note=derived.note())
    assert (result.ed_phase, result.es_phase) == (3 * once.ed_phase, 3 * once.es_phase)
    assert result.lv_ef_percent == pytest.approx(once.lv_ef_percent)
    assert any(f.startswith(DERIVED_NOTE_START) for f in result.flags)


@dataclass
class RepeatedVolume(FakeVolume):
    slice_rr_ms: list = field(default_factory=list)


def _pipeline_cine(repeat: int = 1, rr=None) -> RepeatedVolume:
    """12 acquired phases of a cosine cycle on 3 slices, the pool at phase 2 drawn 6 mm too wide (a segmentation
    jump), each phase sent `repeat` times."""
    shape, spacing = (160, 160), (1.5, 1.5)
    radii = [20.0 + 14.0 * (1 + np.cos(2 * np.pi * p / 12)) / 2 for p in range(12)]
    radii[1] += 6.0
    pixels = np.full((12, 3, *shape), 100.0, np.float32)
    for p, radius in enumerate(radii):
        pixels[p, :, disc(shape, (79.5, 79.5), radius, spacing)] = 400.0
    pixels = np.repeat(pixels, repeat, axis=0)
    n = 12 * repeat
    return RepeatedVolume(pixels, spacing, 8.0, trigger_times=[1000.0 * q / n for q in range(n)],
                          declared_phases=n, slice_rr_ms=list(rr or []))


def test_pipeline_measures_the_same_cycle_sent_once_or_with_each_phase_repeated():
    runtime = FakeRuntime()
    once = CinePipeline(Config(), runtime).run(FakeStudy(_pipeline_cine()), context(runtime)).summary
    four = CinePipeline(Config(), runtime).run(FakeStudy(_pipeline_cine(4)), context(runtime)).summary
    assert once["timing"]["flagged_phases"] == [1] and once["timing"]["derived_phases"] is None
    assert (four["ed_phase"], four["es_phase"]) == (4 * once["ed_phase"], 4 * once["es_phase"])
    assert four["lv_ef_percent"] == pytest.approx(once["lv_ef_percent"])
    assert four["timing"]["derived_phases"]["distinct"] == list(range(0, 48, 4))
    assert any(f.startswith(DERIVED_NOTE_START + "36 of the 48 phases sent: 36 repeat") for f in four["flags"]), \
        four["flags"]


# --- F5: the RR interval differs between slices ----------------------------------------------------------------------

def test_rr_varying_between_slices_beyond_10_percent_is_caveated_naming_the_range():
    note = rr_variation_note([700.0, 1200.0, 800.0, 1100.0, 900.0, 1000.0, 750.0])
    assert note.startswith(RR_VARIATION_START + "700-1200 ms (heart rate 50-86/min) over 7 slices")
    assert "flagged above 10 %" in note
    assert rr_variation_note([950.0, 1000.0, 980.0]) is None  # 5 %: a regular rhythm between breath-holds
    assert rr_variation_note([900.0, None]) is None and rr_variation_note([]) is None and rr_variation_note(None) is None
    assert rr_variation_note([900.0, 5000.0]) is None  # an implausible header value is not a rhythm


def test_the_rr_caveat_reaches_the_cine_flags_beside_the_temporal_resolution():
    runtime = FakeRuntime()
    irregular = CinePipeline(Config(), runtime).run(
        FakeStudy(_pipeline_cine(rr=[700.0, 1200.0, 900.0])), context(runtime)).summary
    regular = CinePipeline(Config(), runtime).run(
        FakeStudy(_pipeline_cine(rr=[1000.0, 1000.0, 1000.0])), context(runtime)).summary
    assert any(f.startswith(RR_VARIATION_START + "700-1200 ms") for f in irregular["flags"]), irregular["flags"]
    assert not any(f.startswith(RR_VARIATION_START) for f in regular["flags"])
