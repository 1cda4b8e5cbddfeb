"""Cine measurements on synthetic label maps whose volumes, ED/ES, EF, mass and BSA are known by construction."""
import math

import numpy as np
import pytest

from dicomnode.analysis.cine_metrics import (COVERAGE_CAVEAT, ES_PLATEAU_START, PAPILLARY_MUSCLES, REPORTED_ES_START,
                                             NOT_JUDGED_START,
                                             body_surface_area_m2,
                                             disc_thickness_mm, ejection_fraction_percent, stack_coverage,
                                             find_cardiac_phases, lv_slice_volumes_ml, measure_cine,
                                             myocardial_mass_g, myocardial_surround, normal_range_flags,
                                             phase_interval_ms, rv_timing_notes, temporal_resolution_note,
                                             timing_slice_volumes_ml, volume_curve_ml)
from dicomnode.labels import Label


def heart_slice(rows: int, cols: int, lv_voxels: int, rv_voxels: int, myo_voxels: int) -> np.ndarray:
    """One slice with exactly `lv_voxels` LV blood pool in a block walled by myocardium (first `myo_voxels` of a
    2-pixel frame around it, the rest of the frame background), and `rv_voxels` RV blood pool in the last rows."""
    out = np.zeros((rows, cols), np.uint8)
    if lv_voxels:
        width = 10
        height = -(-lv_voxels // width)
        block = np.zeros((height, width), np.uint8).reshape(-1)
        block[:lv_voxels] = Label.LV_BLOOD_POOL
        frame = np.zeros((height + 4, width + 4), np.uint8)
        ring = np.ones(frame.shape, bool)
        ring[2:-2, 2:-2] = False
        frame.reshape(-1)[np.flatnonzero(ring.reshape(-1))[:myo_voxels]] = Label.LV_MYOCARDIUM
        frame[2:-2, 2:-2] = block.reshape(height, width)
        out[1:1 + frame.shape[0], 1:1 + frame.shape[1]] = frame
    elif myo_voxels:
        out.reshape(-1)[:myo_voxels] = Label.LV_MYOCARDIUM
    rv = out[-8:].reshape(-1)
    rv[:rv_voxels] = Label.RV_BLOOD_POOL
    return out


def synthetic_cine(lv_voxels_per_phase, rv_voxels_per_phase, myo_voxels=50, shape=(3, 40, 40)):
    """Label maps (phases, slices, rows, cols) with exact voxel counts per label and phase (all in the first slice)."""
    maps = np.zeros((len(lv_voxels_per_phase),) + shape, dtype=np.uint8)
    for phase, (lv, rv) in enumerate(zip(lv_voxels_per_phase, rv_voxels_per_phase)):
        maps[phase, 0] = heart_slice(shape[1], shape[2], lv, rv, myo_voxels)
    return maps


def cine_curve(n_phases: int, edv: float, esv: float, es_phase: int, ed_phase: int = 0) -> np.ndarray:
    """Smooth periodic LV volume curve: EDV at `ed_phase`, ESV at `es_phase` (cosine halves between them)."""
    curve = np.empty(n_phases)
    for p in range(n_phases):
        t = (p - ed_phase) % n_phases
        systole = (es_phase - ed_phase) % n_phases
        if t <= systole:
            curve[p] = esv + (edv - esv) * (1 + np.cos(np.pi * t / systole)) / 2
        else:
            curve[p] = esv + (edv - esv) * (1 - np.cos(np.pi * (t - systole) / (n_phases - systole))) / 2
    return curve


def test_volume_curve_counts_voxels_times_voxel_volume():
    maps = synthetic_cine([100, 60, 80], [120, 70, 90])
    assert volume_curve_ml(maps, [Label.LV_BLOOD_POOL], 0.5).tolist() == [50.0, 30.0, 40.0]
    assert volume_curve_ml(maps, [Label.RV_BLOOD_POOL], 0.5).tolist() == [60.0, 35.0, 45.0]


def test_volume_curve_refuses_wrong_shape_and_voxel_volume():
    with pytest.raises(ValueError, match="phases, slices"):
        volume_curve_ml(np.zeros((3, 4, 4)), [1], 1.0)
    with pytest.raises(ValueError, match="voxel_volume_ml"):
        volume_curve_ml(np.zeros((1, 1, 4, 4)), [1], 0.0)


def test_ed_at_the_r_wave_and_es_at_the_smoothed_minimum_on_a_whole_cine():
    curve = cine_curve(20, 150.0, 60.0, es_phase=7)
    slices = np.stack([curve * w for w in (0.2, 0.3, 0.3, 0.2)], axis=1)
    phases = find_cardiac_phases(slices, trigger_times=[i * 40.0 for i in range(20)])
    assert (phases.ed, phases.es, phases.trigger_phase) == (0, 7, 0)
    assert phases.flagged_phases == [] and phases.notes == []
    # the acquisition starts mid-cycle: TriggerTime tells which phase is the R wave
    rolled = np.roll(slices, 5, axis=0)
    phases = find_cardiac_phases(rolled, trigger_times=np.roll(np.arange(20) * 40.0, 5).tolist())
    assert (phases.ed, phases.es, phases.trigger_phase) == (5, 12, 5)


def test_a_phase_whose_volume_jumps_is_flagged_and_not_chosen():
    curve = cine_curve(20, 150.0, 60.0, es_phase=8)
    slices = np.stack([curve * w for w in (0.2, 0.3, 0.3, 0.2)], axis=1)
    slices[6, 0] = 0.0  # a basal slice lost in one phase: a 12 mL dip that would pass for ES
    phases = find_cardiac_phases(slices)
    assert phases.flagged_phases == [6]
    assert phases.es == 8 and phases.ed == 0
    assert any(note.startswith("phase 7: LV volume") and "jumps" in note for note in phases.notes)  # counted from 1
    assert any("TriggerTime" in note for note in phases.notes)  # none given: phase 0 assumed, and said so


def test_without_trigger_time_ed_is_the_largest_volume_wherever_the_cine_starts():
    """A tester's export without TriggerTime whose first image is mid-diastole (InstanceNumber renumbered from phase
    9): the first phase was taken as the R wave and ED chosen near it, early diastole, LVEF 9.2 % for 23.7 %."""
    curve = cine_curve(20, 150.0, 60.0, es_phase=7)
    slices = np.stack([curve * w for w in (0.2, 0.3, 0.3, 0.2)], axis=1)
    for start in (0, 5, 9, 14):
        phases = find_cardiac_phases(np.roll(slices, -start, axis=0))
        assert (phases.ed, phases.es) == ((0 - start) % 20, (7 - start) % 20), start
        assert any(n.startswith("no usable TriggerTime: ED is the phase of the largest LV volume") for n in phases.notes)
    # with TriggerTime the R-wave window still decides, as before
    timed = find_cardiac_phases(np.roll(slices, -9, axis=0), trigger_times=[40.0 * p for p in range(20)])
    assert timed.ed != 11


def test_ed_cross_check_reports_a_larger_volume_far_from_the_r_wave():
    curve = cine_curve(20, 150.0, 60.0, es_phase=7, ed_phase=10)  # largest volume mid-cycle: implausible for ED
    phases = find_cardiac_phases(curve[:, None], trigger_times=list(range(20)))
    assert phases.ed in (17, 18, 19, 0, 1, 2, 3)
    assert any("outside the end-diastolic window" in note for note in phases.notes)


def test_two_phase_export_takes_larger_as_ed():
    phases = find_cardiac_phases(np.array([[40.0, 20.0], [90.0, 60.0]]))
    assert (phases.ed, phases.es) == (1, 0)
    with pytest.raises(ValueError, match="phases, slices"):
        find_cardiac_phases(np.zeros((0, 3)))


def test_basal_slice_rule_is_the_same_at_every_phase():
    open_pool = np.zeros((2, 2, 30, 30), np.uint8)
    for phase in range(2):
        open_pool[phase, 0] = heart_slice(30, 30, 60, 0, 200)  # walled: counted
        open_pool[phase, 1, 5:15, 5:15] = Label.LV_BLOOD_POOL  # no myocardium around (atrium): left out
        open_pool[phase, 1, 4, 5:15] = Label.LV_MYOCARDIUM  # one side of four: 10 of 36 outline pixels
    surround = myocardial_surround(open_pool)
    assert np.allclose(surround[:, 0], 1.0) and (surround[:, 1] < 0.5).all()
    volumes, excluded = lv_slice_volumes_ml(open_pool, 1.0)
    assert volumes.tolist() == [[60.0, 0.0], [60.0, 0.0]]
    assert excluded.tolist() == [[False, True], [False, True]]


def basal_flip_cine(open_phases=(8, 9)) -> np.ndarray:
    """20 phases, ES at 7: a mid slice following a smooth curve (150 -> 60 voxels) and a 30-voxel basal slice walled
    by myocardium except at `open_phases`, where the rule reads it as atrium (the valve plane moving through it)."""
    curve = np.rint(cine_curve(20, 150.0, 60.0, es_phase=7)).astype(int)
    maps = np.zeros((20, 2, 40, 40), np.uint8)
    for phase in range(20):
        maps[phase, 0] = heart_slice(40, 40, int(curve[phase]), 0, 200)
        maps[phase, 1] = heart_slice(40, 40, 30, 0, 10 if phase in open_phases else 200)
    return maps


def test_the_timing_curve_counts_one_fixed_set_of_slices():
    maps = basal_flip_cine()
    per_phase, excluded = lv_slice_volumes_ml(maps, 1.0)
    assert excluded[:, 1].tolist() == [p in (8, 9) for p in range(20)]
    # per phase, the basal rule drops the slice at phases 8-9: that dip (≈ 60 + 0) would pass for ES
    assert int(np.argmin(per_phase.sum(axis=1))) == 8
    timing, in_set = timing_slice_volumes_ml(maps, 1.0)
    assert in_set.tolist() == [True, True]  # counted by the rule at 18 of 20 phases
    assert timing[:, 1].tolist() == [30.0] * 20
    # a slice the rule leaves out at most phases stays out of the timing curve at every phase
    mostly_open = basal_flip_cine(open_phases=tuple(range(3, 20)))
    timing, in_set = timing_slice_volumes_ml(mostly_open, 1.0)
    assert in_set.tolist() == [True, False] and not timing[:, 1].any()
    # a slice with no LV blood pool at any phase is not in the set
    assert timing_slice_volumes_ml(np.zeros((3, 2, 10, 10), np.uint8), 1.0)[1].tolist() == [False, False]


def test_the_end_slices_of_the_stack_do_not_time_the_cycle():
    """Five slices: three mid slices with ES at phase 7; the basal slice empties late (the valve plane descending
    through it, smallest at phase 11) and is large enough to pull the whole-stack minimum away from phase 7."""
    mid = np.rint(cine_curve(20, 150.0, 60.0, es_phase=7)).astype(int)
    basal = np.rint(cine_curve(20, 150.0, 10.0, es_phase=11)).astype(int)
    apical = np.rint(cine_curve(20, 30.0, 20.0, es_phase=7)).astype(int)
    maps = np.zeros((20, 5, 40, 40), np.uint8)
    for phase in range(20):
        for z, voxels in enumerate((basal, mid, mid, mid, apical)):
            maps[phase, z] = heart_slice(40, 40, int(voxels[phase]), 0, 200)
    whole_stack = lv_slice_volumes_ml(maps, 1.0)[0].sum(axis=1)
    assert find_cardiac_phases(whole_stack[:, None], trigger_times=[i * 40.0 for i in range(20)]).es != 7
    timing, in_set = timing_slice_volumes_ml(maps, 1.0)
    assert in_set.tolist() == [False, True, True, True, False]
    assert not timing[:, [0, 4]].any()
    measured = measure_cine(maps, 1.0, trigger_times=[i * 40.0 for i in range(20)])
    assert (measured.ed_phase, measured.es_phase) == (0, 7)
    # the volumes at ED and ES still count every slice the basal rule keeps
    assert measured.lv_edv_ml == float(basal[0] + 3 * mid[0] + apical[0])
    assert measured.lv_esv_ml == float(basal[7] + 3 * mid[7] + apical[7])
    # four slices or fewer: every slice of the set times the cycle
    assert timing_slice_volumes_ml(maps[:, :4], 1.0)[1].tolist() == [True] * 4


def test_measure_cine_times_on_the_fixed_set_and_reports_volumes_by_the_basal_rule():
    measured = measure_cine(basal_flip_cine(), 1.0, trigger_times=[i * 40.0 for i in range(20)])
    assert (measured.ed_phase, measured.es_phase) == (0, 7)
    assert measured.lv_edv_ml == 150.0 + 30.0 and measured.lv_esv_ml == 60.0 + 30.0
    assert measured.basal_excluded == [(8, 1), (9, 1)]  # still left out of those phases' own volumes
    assert measured.lv_curve_ml[7] - measured.lv_curve_ml[8] > 20.0


def test_a_flagged_phase_is_named_from_1_with_the_volume_of_the_reported_curve():
    """The jump is found on the mid-ventricular timing slices, but the note quotes the LV curve the results report
    (every slice the basal rule keeps), and names the phase as the report does, counted from 1."""
    mid = np.rint(cine_curve(20, 150.0, 60.0, es_phase=7)).astype(int)
    basal = np.rint(cine_curve(20, 150.0, 10.0, es_phase=11)).astype(int)
    maps = np.zeros((20, 5, 40, 40), np.uint8)
    for phase in range(20):
        for z, voxels in enumerate((basal, mid, mid, mid, mid // 4)):
            lost = 60 if (phase, z) == (12, 2) else 0  # one mid slice loses part of its pool at index 12
            maps[phase, z] = heart_slice(40, 40, int(voxels[phase]) - lost, 0, 200)
    measured = measure_cine(maps, 1.0, trigger_times=[i * 40.0 for i in range(20)])
    assert measured.timing.flagged_phases == [12] and (measured.ed_phase, measured.es_phase) == (0, 7)
    timing_volume = measured.timing.curve_ml[12]
    [note] = [flag for flag in measured.flags if "jumps" in flag]
    assert note.startswith(f"phase 13: LV volume {measured.lv_curve_ml[12]:.1f} mL jumps from its temporal neighbours")
    assert f"slices that time the cycle: {timing_volume:.1f} mL" in note
    assert abs(measured.lv_curve_ml[12] - timing_volume) > 20  # two curves: the note says which is which
    # the other timing notes: ES on a flat bottom of the timing curve (the basal slice empties late), and the reported
    # curve, with that basal slice, smaller after it at phase 10 and at the flagged phase 13 (break49b #6)
    assert [n for n in measured.timing.notes if not n.startswith((ES_PLATEAU_START, REPORTED_ES_START))] == [note]
    [es_note] = [n for n in measured.timing.notes if n.startswith(REPORTED_ES_START)]
    assert es_note.startswith("ES at phase 8: ") and "smaller at phase 10 (232.0 against 246.0 mL at ES" in es_note
    assert "at phase 13 (243.0 mL), left out as a jump from its temporal neighbours (its note). " in es_note


def test_every_phase_in_a_note_is_counted_from_1():
    curve = cine_curve(20, 150.0, 60.0, es_phase=7, ed_phase=10)
    phases = find_cardiac_phases(curve[:, None], trigger_times=list(range(20)))
    [note] = [n for n in phases.notes if "end-diastolic window" in n]
    assert f"R-wave phase {phases.trigger_phase + 1};" in note and f"ED kept at phase {phases.ed + 1} " in note
    rv = np.stack([cine_curve(20, 160.0, 80.0, es_phase=7)] * 2, axis=1)
    rv[0, 0] += 30.0
    flagged, notes = rv_timing_notes(rv, 0, 7)
    assert flagged == [0] and notes[0].startswith("RV volume jumps from its temporal neighbours at the end-diastolic "
                                                  "phase 1:")


def test_ejection_fraction():
    assert ejection_fraction_percent(150.0, 50.0) == pytest.approx(200 / 3)
    assert ejection_fraction_percent(0.0, 0.0) is None
    with pytest.raises(ValueError):
        ejection_fraction_percent(-1.0, 0.0)


def test_mass_counts_every_myocardium_label_with_density():
    labelmap = np.array([[Label.LV_MYOCARDIUM, Label.SCAR, Label.MVO, Label.LV_BLOOD_POOL, Label.RV_BLOOD_POOL]])
    assert myocardial_mass_g(labelmap, 2.0) == pytest.approx(3 * 2.0 * 1.05)
    assert myocardial_mass_g(labelmap, 2.0, density_g_per_ml=1.0) == pytest.approx(6.0)
    with pytest.raises(ValueError, match="density"):
        myocardial_mass_g(labelmap, 2.0, density_g_per_ml=0)


def test_bsa_formulas_match_hand_computation():
    assert body_surface_area_m2(1.80, 80.0, "mosteller") == pytest.approx(math.sqrt(180 * 80 / 3600))  # 2.0
    assert body_surface_area_m2(1.80, 80.0, "dubois") == pytest.approx(0.007184 * 80 ** 0.425 * 180 ** 0.725)
    with pytest.raises(ValueError, match="centimetres"):
        body_surface_area_m2(180.0, 80.0)
    with pytest.raises(ValueError, match="implausible"):
        body_surface_area_m2(2.9, 80.0)
    with pytest.raises(ValueError, match="implausible"):
        body_surface_area_m2(1.7, 0.5)
    with pytest.raises(ValueError, match="unknown BSA"):
        body_surface_area_m2(1.8, 80.0, "haycock")  # type: ignore[arg-type]


def test_measure_cine_end_to_end_known_answers():
    # voxel 1 mL; LV 150 -> 50 voxels (EF 66.7 %), RV 160 at ED phase 1, 80 at ES phase 2; myo 100 voxels
    maps = synthetic_cine([120, 150, 50, 90], [130, 160, 80, 110], myo_voxels=100, shape=(4, 30, 30))
    result = measure_cine(maps, 1.0, height_m=1.80, weight_kg=80.0, sex="M")
    assert (result.ed_phase, result.es_phase) == (1, 2)
    assert (result.lv_edv_ml, result.lv_esv_ml, result.lv_sv_ml) == (150.0, 50.0, 100.0)
    assert result.lv_ef_percent == pytest.approx(200 / 3)
    assert (result.rv_edv_ml, result.rv_esv_ml, result.rv_sv_ml) == (160.0, 80.0, 80.0)
    assert result.rv_ef_percent == pytest.approx(50.0)
    assert result.lv_mass_g == pytest.approx(105.0)
    assert result.bsa_m2 == pytest.approx(2.0) and result.bsa_formula == "mosteller"
    assert result.indexed["lv_edvi_ml_m2"] == pytest.approx(75.0)
    assert result.indexed["lv_mass_index_g_m2"] == pytest.approx(52.5)
    summary = result.summary()
    assert set(summary) == {"lv_edv_ml", "lv_esv_ml", "lv_sv_ml", "lv_ef_percent", "lv_mass_g", "rv_edv_ml",
                            "rv_esv_ml", "rv_sv_ml", "rv_ef_percent", "ed_phase", "es_phase"}
    assert result.flags[0].startswith("coarse temporal resolution: 4 phases without TriggerTime, 188 ms per phase")
    assert result.flags[1:] == ["no usable TriggerTime: ED is the phase of the largest LV volume, phase 2 (the R-wave "
                                "phase cannot be told from the images)",
                                "4 phases: ED = largest, ES = smallest LV volume (no curve to smooth)"]
    assert result.basal_excluded == []
    assert PAPILLARY_MUSCLES == "cavity"


def test_no_bsa_without_height_or_weight():
    maps = synthetic_cine([100, 50], [100, 50])
    result = measure_cine(maps, 1.0, height_m=None, weight_kg=70.0)
    assert result.bsa_m2 is None and result.indexed == {}
    # an implausible header value: measured anyway, not indexed, and the reason is a flag
    result = measure_cine(maps, 1.0, height_m=0.2, weight_kg=70.0)
    assert result.bsa_m2 is None and result.indexed == {} and result.lv_edv_ml == 100.0
    assert any(flag.startswith("no indexed values: implausible height 0.2 m") for flag in result.flags)
    for height, weight, unit in ((175.0, 75.0, "centimetres"), (1.75, 75000.0, "grams"), (175.0, 75000.0, "centimetres")):
        result = measure_cine(maps, 1.0, height_m=height, weight_kg=weight)
        assert result.bsa_m2 is None and result.indexed == {}
        assert any(flag.startswith("no indexed values") and unit in flag for flag in result.flags), result.flags


def test_flags_by_sex_and_against_both_when_unknown():
    low_ef = normal_range_flags({"lv_ef_percent": 35.0}, "F")
    assert len(low_ef) == 1 and low_ef[0].startswith("LVEF below normal range")
    assert normal_range_flags({"lv_ef_percent": 67.0}, "M") == []
    # EDV 200 mL: above the women's range (86-178), inside the men's (106-214)
    assert normal_range_flags({"lv_edv_ml": 200.0}, "M") == []
    assert normal_range_flags({"lv_edv_ml": 200.0}, "F")[0].startswith("LV EDV above normal range")
    unknown = normal_range_flags({"lv_edv_ml": 200.0}, None)
    assert len(unknown) == 1 and "one sex" in unknown[0] and "above for women" in unknown[0]
    both = normal_range_flags({"lv_edv_ml": 260.0}, "")
    assert both[0].startswith("LV EDV above normal range") and "men" in both[0] and "women" in both[0]


def test_an_rv_jump_at_the_phase_the_rv_is_read_at_is_named_and_elsewhere_only_listed():
    rv = np.stack([cine_curve(16, 160.0, 80.0, es_phase=6) * w for w in (0.5, 0.5)], axis=1)
    assert rv_timing_notes(rv, 0, 6) == ([], [])
    rv[6, 0] = 0.0  # half the RV lost at ES: 40 mL, RVEF read as 75 % instead of 50 %
    rv[11, 1] *= 0.5  # a smaller jump away from ED and ES
    flagged, notes = rv_timing_notes(rv, 0, 6)
    assert flagged == [6, 11]
    assert len(notes) == 1 and "end-systolic phase 7:" in notes[0] and "RV ESV and RVEF uncertain" in notes[0]
    assert rv_timing_notes(rv[:4], 0, 2) == ([], [])  # an ED + ES export has no curve to judge
    assert rv_timing_notes(np.zeros((16, 2)), 0, 6) == ([], [])  # no RV segmented


def test_measure_cine_says_when_the_rv_volume_it_reports_is_a_jump():
    lv = np.rint(cine_curve(12, 150.0, 60.0, es_phase=5)).astype(int)
    rv = np.rint(cine_curve(12, 160.0, 80.0, es_phase=5)).astype(int)
    clean = measure_cine(synthetic_cine(lv, rv, shape=(2, 40, 40)), 1.0, trigger_times=[40.0 * p for p in range(12)])
    assert clean.rv_flagged_phases == [] and not any("RV" in flag for flag in clean.flags
                                                     if not flag.startswith(NOT_JUDGED_START))  # no BSA given
    rv[5] = 20  # the RV all but lost at the LV's ES phase
    result = measure_cine(synthetic_cine(lv, rv, shape=(2, 40, 40)), 1.0, trigger_times=[40.0 * p for p in range(12)])
    assert (result.ed_phase, result.es_phase) == (0, 5) and result.rv_esv_ml == 20.0
    assert result.rv_flagged_phases == [5]
    assert any(flag.startswith("RV volume jumps from its temporal neighbours at the end-systolic phase 6:")
               and "(20.0 mL against" in flag for flag in result.flags)


# ---------------------------------------------------------------- stack coverage and per-slice discs
def tapered_ventricle(sections_px, phases: int = 6, shape=(40, 40)) -> np.ndarray:
    """(phases, slices, rows, cols) label maps of an LV whose blood pool covers `sections_px[z]` pixels on slice z
    (a block walled by myocardium, heart_slice), the same at every phase."""
    maps = np.zeros((phases, len(sections_px)) + shape, np.uint8)
    for z, pixels in enumerate(sections_px):
        maps[:, z] = heart_slice(shape[0], shape[1], pixels, 0, shape[0] * shape[1] if pixels else 0)
    return maps


#: an LV from apex (first slice) to base: whole stack, apical end section ~10 % of the largest
WHOLE_LV = [20, 120, 200, 240, 250, 250, 240, 220]


def test_disc_thickness_follows_the_real_slice_positions():
    assert disc_thickness_mm([0, 10, 20, 30]).tolist() == [10, 10, 10, 10]
    assert disc_thickness_mm([0, 10, 30, 40]).tolist() == [10, 15, 15, 10]  # a slice missing: interpolated
    assert disc_thickness_mm([30, 0, 14, 22]).tolist() == [8, 14, 11, 8]  # any order, uneven steps
    with pytest.raises(ValueError):
        disc_thickness_mm([5.0])


def test_uneven_spacing_and_gaps_count_each_slice_s_own_disc():
    # before: every slice got the median step, so a missing slice's volume was silently absent
    maps = tapered_ventricle([100] * 5)
    even = measure_cine(maps, 1.0, slice_positions_mm=[0, 10, 20, 30, 40], apex_first=True)
    gap = measure_cine(maps[:, [0, 1, 3, 4]], 1.0, slice_positions_mm=[0, 10, 30, 40], apex_first=True)
    assert gap.lv_edv_ml == pytest.approx(even.lv_edv_ml) == pytest.approx(500.0)
    assert gap.lv_mass_g == pytest.approx(even.lv_mass_g)
    assert any(f.startswith("gap of 20.0 mm between the slices at 10.0 and 30.0 mm") for f in gap.flags)
    uneven = measure_cine(maps[:, :3], 1.0, slice_positions_mm=[0, 10, 24], apex_first=True)
    assert uneven.lv_edv_ml == pytest.approx(100 * (10 + 12 + 14) / 12)


def test_a_whole_stack_is_complete_and_a_cut_one_is_flagged_and_caveated():
    positions = np.arange(len(WHOLE_LV)) * 10.0
    whole = measure_cine(tapered_ventricle(WHOLE_LV), 1.0, slice_positions_mm=positions, apex_first=True)
    assert whole.coverage.complete and not any("coverage" in f for f in whole.flags)
    apex_cut = measure_cine(tapered_ventricle(WHOLE_LV[2:]), 1.0, slice_positions_mm=positions[2:], apex_first=True)
    assert not apex_cut.coverage.complete
    assert apex_cut.flags[0].startswith("incomplete LV coverage: the LV still covers 83 % of its largest section on "
                                        "the apical (first) slice")
    assert "lower bounds" in apex_cut.flags[0]
    assert apex_cut.coverage.summary()["caveat"] == COVERAGE_CAVEAT
    # the base end of a whole stack may be a full ring: only the apical end decides
    assert measure_cine(tapered_ventricle(WHOLE_LV[:-2]), 1.0, slice_positions_mm=positions[:-2],
                        apex_first=True).coverage.complete
    three = measure_cine(tapered_ventricle(WHOLE_LV[3:6]), 1.0, slice_positions_mm=positions[3:6], apex_first=True)
    assert [r.split(" (")[0].split(" at ED")[0] for r in three.coverage.reasons] == [
        "the LV still covers 97 % of its largest section on the apical", "the LV spans only 30 mm of stack"]
    assert three.coverage.summary()["lv_extent_mm"] == 30.0
    gapped = np.delete(positions, [3, 4]), [z for z in range(len(WHOLE_LV)) if z not in (3, 4)]
    assert "slices missing" in stack_coverage(tapered_ventricle(WHOLE_LV)[0, gapped[1]], gapped[0], True).reasons[0]


def test_a_large_apical_end_slice_alone_is_a_mislabelled_apex_not_a_cut_one():
    # patient090's pattern: RV apex labelled LV on the apical slice only, the slice next to it smaller
    positions = np.arange(len(WHOLE_LV)) * 10.0
    labels = tapered_ventricle([20, 60] + WHOLE_LV[2:])[0]
    largest = int(np.isin(labels, [int(Label.LV_BLOOD_POOL), int(Label.LV_MYOCARDIUM)]).reshape(len(labels), -1)
                  .sum(axis=1).max())
    apical = labels[0]
    apical[:] = 0
    apical.reshape(-1)[: int(0.6 * largest)] = int(Label.LV_BLOOD_POOL)  # 60 % of the largest section
    coverage = stack_coverage(labels, positions, apex_first=True)
    assert coverage.end_fractions[0] >= 0.5 and coverage.complete, coverage.reasons
    cut = stack_coverage(tapered_ventricle(WHOLE_LV)[0, 2:], positions[2:], apex_first=True)
    assert not cut.complete and "on the slice next to it" in cut.reasons[0]


def _acdc_ed_labels(datasets, patient):
    """ED ground truth of an ACDC patient as (slices, rows, cols) node labels, base first, and the slice spacing."""
    nib = pytest.importorskip("nibabel")
    folder = datasets / "acdc-sample" / patient
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    path = sorted(folder.glob("*_frame01_gt.nii*"))[0]
    image = nib.load(str(path))
    acdc = np.transpose(np.asarray(image.dataobj).astype(np.uint8), (2, 0, 1))
    node = np.zeros_like(acdc)
    node[acdc == 3], node[acdc == 2], node[acdc == 1] = Label.LV_BLOOD_POOL, Label.LV_MYOCARDIUM, Label.RV_BLOOD_POOL
    return node, float(image.header.get_zooms()[2])


@pytest.mark.parametrize("patient", ["patient001", "patient021", "patient041", "patient042", "patient061", "patient081"])
def test_coverage_rule_on_acdc_ground_truth(datasets, patient):
    # ACDC stacks run base (z0) -> apex; whole stacks must pass, stacks without their 3 apical slices must not
    labels, spacing = _acdc_ed_labels(datasets, patient)
    positions = np.arange(len(labels)) * spacing
    assert stack_coverage(labels, positions, apex_first=False).complete
    lv = np.isin(labels, [1, 2]).any(axis=(1, 2))
    apex = np.flatnonzero(lv)[-1]
    assert not stack_coverage(labels[:apex - 2], positions[:apex - 2], apex_first=False).complete
    mid = int(np.flatnonzero(lv).mean())
    assert not stack_coverage(labels[mid - 1:mid + 2], positions[mid - 1:mid + 2], apex_first=False).complete


# ---------------------------------------------------------------- temporal resolution (break37 D5)
def test_measure_cine_flags_coarse_temporal_resolution_naming_ms_per_phase():
    # 8 phases over a ~760 ms cycle, 95 ms apart: over the SCMR <= 45 ms, ES may fall between two phases
    lv = np.rint(cine_curve(8, 150.0, 60.0, es_phase=3)).astype(int)
    rv = np.rint(cine_curve(8, 160.0, 80.0, es_phase=3)).astype(int)
    coarse = measure_cine(synthetic_cine(lv, rv, shape=(2, 40, 40)), 1.0, trigger_times=[19.0 + 95.0 * p for p in range(8)])
    notes = [f for f in coarse.flags if f.startswith("coarse temporal resolution")]
    assert len(notes) == 1 and "8 phases, 95 ms per phase" in notes[0] and "<= 45 ms" in notes[0]
    assert "ESV may be over- and EF under-estimated" in notes[0]


@pytest.mark.parametrize("times", [[19.0 + 38.0 * p for p in range(20)],  # Sunnybrook SCD: 20 phases, 37-40 ms
                                   [0.019 + 0.038 * p for p in range(20)],  # the same in seconds
                                   [19000.0 + 38000.0 * p for p in range(20)],  # and in microseconds
                                   None,  # untimed, 20 phases: <= 45 ms at 67/min or faster, 38 ms at 80/min
                                   [None] * 20])
def test_temporal_resolution_note_silent_for_fine_or_untimed_cines(times):
    assert temporal_resolution_note(times, 20) is None


def test_temporal_resolution_note_reads_units_and_skips_ed_es_exports():
    assert phase_interval_ms([0.019 + 0.095 * p for p in range(8)]) == pytest.approx(95.0)
    assert phase_interval_ms([19.0, 57.0, 133.0, 171.0, 209.0]) == pytest.approx(38.0)  # one phase left out
    assert phase_interval_ms([0.0, 114.0, 190.0, 304.0, 380.0]) == pytest.approx(95.0)  # every 2.5th of 38 ms phases
    assert "12 phases, 83 ms per phase" in temporal_resolution_note([p * 1000.0 / 12 for p in range(12)], 12)
    assert temporal_resolution_note([0.0, 300.0], 2) is None  # ED + ES only: chosen at acquisition, no curve
    assert "4 phases, 200 ms per phase" in temporal_resolution_note([0.0, 200.0, 400.0, 600.0], 4)


@pytest.mark.parametrize("times", [None, [None] * 12])
def test_an_untimed_cine_of_few_phases_is_coarse_at_any_usual_heart_rate(times):
    """12 frames over one cycle without TriggerTime (ACDC-like NIfTI exports, TemporalPositionIdentifier only): 62 ms
    per phase at 80/min, more at slower rates (break37b)."""
    note = temporal_resolution_note(times, 12)
    assert note.startswith("coarse temporal resolution: 12 phases without TriggerTime, 62 ms per phase at a heart "
                           "rate of 80/min")
    assert temporal_resolution_note(times, 17) is None


def test_slices_left_out_do_not_widen_the_cine_end_discs():
    """break37b: with slices 2 and 5 of 6 left out (another grid), the kept steps are 24 mm; the nominal 12 mm step
    over all acquired positions keeps the end discs 12 mm thick (LGE and cine alike)."""
    lv = np.rint(cine_curve(20, 150.0, 60.0, es_phase=7)).astype(int)
    rv = np.rint(cine_curve(20, 160.0, 80.0, es_phase=7)).astype(int)
    maps = synthetic_cine(lv, rv, shape=(4, 40, 40))
    positions = [0.0, 24.0, 36.0, 60.0]  # kept slices of 0, 12, 24, 36, 48, 60 mm
    voxel = 0.024  # pixel area x the kept median step (24 mm)
    wide = measure_cine(maps, voxel, slice_positions_mm=positions)
    nominal = measure_cine(maps, voxel, slice_positions_mm=positions, nominal_step_mm=12.0)
    assert nominal.lv_mass_g < wide.lv_mass_g
    thickness = disc_thickness_mm(positions, 12.0)
    assert list(thickness) == [18.0, 18.0, 18.0, 18.0]
    assert list(disc_thickness_mm(positions)) == [24.0, 18.0, 18.0, 24.0]


# ---------------------------------------------------------------- RV reference ranges, LV/RV stroke volumes, RV accuracy
def test_rv_values_are_judged_against_their_reference_ranges_and_shown_as_range_flags():
    from dicomnode.analysis.cine_metrics import is_range_flag

    # ACDC patient001 as the node measured it (sex unknown): RVEF 35.1 % against the >45 % lower limit for both sexes
    [rvef] = normal_range_flags({"rv_ef_percent": 35.1}, None)
    assert rvef == "RVEF below the RV systolic dysfunction cut-off (35.1 %; dysfunction at ≤ 45 %, Gulati 2013)"
    assert is_range_flag(rvef)  # so the PDF lists it under "Outside the reference range", beside the LV's
    assert normal_range_flags({"rv_ef_percent": 45.0}, "M")[0].startswith("RVEF below")  # Gulati: <= 45 % abnormal
    assert normal_range_flags({"rv_ef_percent": 46.0}, "F") == []
    # unindexed RV volumes are not judged (review F12: two sources gave one patient different verdicts)
    assert normal_range_flags({"rv_esv_ml": 130.0, "rv_edv_ml": 300.0}, None) == []
    # indexed EDV by sex (Alfakih SSFP: men 58-114.4, women 47.6-102.8 mL/m²)
    assert normal_range_flags({"rv_edvi_ml_m2": 110.0}, "M") == []
    assert normal_range_flags({"rv_edvi_ml_m2": 110.0}, "F")[0].startswith("RV EDVi above normal range")
    # sex unknown: only outside both sexes' ranges (review F5: either-sex judging flagged half of ACDC's normals)
    assert normal_range_flags({"rv_edvi_ml_m2": 110.0}, None) == []
    assert normal_range_flags({"rv_edvi_ml_m2": 120.0}, None)[0].startswith("RV EDVi above normal range")


def test_stroke_volume_mismatch_is_flagged_above_30_ml_and_30_percent_of_the_larger():
    from dicomnode.analysis.cine_metrics import stroke_volume_mismatch_note

    assert stroke_volume_mismatch_note(100.0, 70.0) is None  # 30 mL: not more than the threshold
    assert stroke_volume_mismatch_note(77.7, 48.7) is None  # ACDC patient001 as measured: 29 mL (37 %)
    assert stroke_volume_mismatch_note(150.0, 115.0) is None  # 35 mL but 23 % of the larger
    note = stroke_volume_mismatch_note(80.25, 40.15)  # 2-decimal summary values, rounded as every output
    assert note.startswith("LV and RV stroke volumes disagree: LV SV 80.3 mL, RV SV 40.2 mL, 40.1 mL apart (50 %")
    assert "Check the RV (and LV) contours at ED and ES" in note and "valve regurgitation or a shunt" in note
    assert "lower bound" not in note
    assert "LV SV is a lower bound" in stroke_volume_mismatch_note(26.3, 61.0, lv_coverage_complete=False)
    assert stroke_volume_mismatch_note(None, 50.0) is None


def test_measure_cine_flags_rv_ranges_the_stroke_volume_mismatch_and_the_rv_accuracy():
    # LV 150 -> 50 mL (SV 100), RV 160 -> 130 mL (SV 30, RVEF 18.8 %): an RV ESV too large, as on ACDC patient001
    maps = synthetic_cine([120, 150, 50, 90], [150, 160, 130, 140], myo_voxels=100, shape=(4, 30, 30))
    validation = {"cv": {"n": 100, "mae": 9.323, "mean_error": -4.989, "sd_error": 11.247}, "held_out": None}
    result = measure_cine(maps, 1.0, height_m=1.80, weight_kg=80.0, sex="M", rv_validation=validation)
    assert (result.rv_edv_ml, result.rv_esv_ml, result.rv_sv_ml) == (160.0, 130.0, 30.0)
    assert any(f.startswith("RVEF below the RV systolic dysfunction cut-off (18.8 %") for f in result.flags), result.flags
    [mismatch] = [f for f in result.flags if f.startswith("LV and RV stroke volumes disagree")]
    assert "LV SV 100.0 mL, RV SV 30.0 mL" in mismatch
    [accuracy] = [f for f in result.flags if f.startswith("RV volumes and RVEF are less reliable")]
    assert "9.3 points MAE in cross-validation over 100 ACDC patients (bias -5.0 ± 11.2 points)" in accuracy
    # without a model's validation (label maps of no particular model) no accuracy flag; no RV segmented: no RV flags
    assert not any(f.startswith("RV volumes and RVEF") for f in measure_cine(maps, 1.0, sex="M").flags)
    no_rv = measure_cine(synthetic_cine([120, 150, 50, 90], [0, 0, 0, 0], myo_voxels=100, shape=(4, 30, 30)), 1.0,
                         sex="M", rv_validation=validation)
    assert not any(f.startswith(("RV", "LV and RV")) for f in no_rv.flags), no_rv.flags


def test_the_rv_accuracy_flag_quotes_the_shipped_card_which_matches_the_evaluation():
    import json
    from pathlib import Path

    from dicomnode.analysis.cine import rv_validation_from_card
    from dicomnode.analysis.cine_metrics import rv_accuracy_note

    root = Path(__file__).resolve().parents[2]
    card = json.loads((root / "engines/models/cine_unet.json").read_text())
    evaluation = json.loads((root / "engines/cine/evaluation.json").read_text())
    validation = rv_validation_from_card(card)
    # the card's numbers are the evaluation's (engines/cine/evaluate.py --update-card writes both)
    for what, source in (("cv", evaluation["cv"]["agreement"]["rv_ef_percent"]),
                         ("held_out", evaluation["shipped"]["agreement"]["rv_ef_percent"])):
        assert validation[what]["n"] == source["n"]
        for key in ("mae", "mean_error", "sd_error"):
            assert validation[what][key] == pytest.approx(source[key], abs=5e-4), (what, key)
    note = rv_accuracy_note(validation)
    cv, held_out = validation["cv"], validation["held_out"]
    assert f"{cv['mae']:.1f} points MAE in cross-validation over {cv['n']} ACDC patients" in note
    assert f"{held_out['mae']:.1f} points MAE on its {held_out['n']} held-out ACDC patients" in note
    # a card without RV metrics: said, not left out
    assert "gives no validated RV accuracy" in rv_accuracy_note(rv_validation_from_card({"metrics": {}}))
    assert rv_validation_from_card(None) == {"cv": None, "held_out": None}


def test_range_flags_round_the_stored_value_as_every_output_does():
    """223.05 mL (summary.json, 2 decimals) reads 223.1 in the flag as on the PDF's key numbers (break4 finding 4)."""
    from dicomnode.analysis.cine_metrics import normal_range_flags
    (flag,) = normal_range_flags({"lv_esv_ml": 223.0500001}, "M")
    assert "(223.1 mL;" in flag
