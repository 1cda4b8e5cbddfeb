"""ED / ES phases: whether the phases of a cine that is not a whole cycle can be ED and ES (break40b F1), the ED rule
and the words that state it (F4), and the phase numbering of summary.json (F12)."""
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from dicomnode.analysis.cine import CinePipeline
from dicomnode.analysis.cine_metrics import REPORTED_ES_START, TIMING_METHOD, find_cardiac_phases
from dicomnode.analysis.ed_es_check import SMALL_EJECTION_START, ed_es_objections, rr_interval_ms, small_ejection_note
from dicomnode.analysis.phase_text import declared_cycle_phases
from dicomnode.config import Config

from test_cine_pipeline import FakeRuntime, FakeSeries, FakeStudy, FakeVolume, context, disc


# ------------------------------------------------------------------ the rule, on volumes and trigger times
def test_the_break40b_pair_two_mid_cycle_phases_is_not_ed_and_es():
    # Sunnybrook SCD0000101 phases 4 and 13 of 20: 160.8 mL at 133 ms, 166.5 mL at 475 ms, RR 750 ms
    objections = ed_es_objections(1, 0, [160.8, 166.5], [133.0, 475.0], rr_ms=750.0)
    assert len(objections) == 2
    assert objections[0].startswith("the larger LV volume (phase 2, TriggerTime 475 ms) lies 475 ms after the R wave "
                                    "and 275 ms before the next (RR 750 ms): mid-cycle, not end diastole")
    assert "differ by 5.7 mL (3.4 % of 166.5 mL)" in objections[1]


@pytest.mark.parametrize("curve, times, rr", [
    ([150.0, 70.0], [0.0, 350.0], 900.0),     # ED at the R wave, ES a third of the cycle later
    ([70.0, 150.0], [310.0, 0.0], None),       # ES sent first (ACDC exports): the order of the phases does not matter
    ([186.4, 141.5], [720.0, 280.0], 760.0),   # late-diastolic ED just before the next R wave (retrospective gating)
    ([150.0, 70.0], [0.0, 690.0], None),       # no RR: a late ES (ACDC patient018, frame 10 of 13) is not refused
    ([150.0, 70.0], [None, None], None),       # no TriggerTime: the volumes alone
    ([150.0, 70.0], [0.0, 0.0], 800.0),        # one TriggerTime on every image (an export's 0): no timing either
    ([150.0, 70.0], [0.0, 0.35], 800.0),       # TriggerTime in seconds
    ([150.0, 70.0], [0.0, 350000.0], 800.0),   # TriggerTime in microseconds
])
def test_ed_at_the_r_wave_and_es_in_systole_pass(curve, times, rr):
    ed, es = int(np.argmax(curve)), int(np.argmin(curve))
    assert ed_es_objections(ed, es, curve, times, rr) == []


def test_ed_far_from_the_r_wave_is_refused_with_or_without_the_rr_interval():
    with_rr = ed_es_objections(0, 1, [150.0, 80.0], [300.0, 600.0], rr_ms=1000.0)
    assert len(with_rr) == 1 and "mid-cycle, not end diastole" in with_rr[0]
    assert "ED lies within 15 % of the cycle (150 ms) of the R wave" in with_rr[0]
    # without RR a late ED cannot be placed: it is not shown to be ED, and the text says why
    without = ed_es_objections(0, 1, [150.0, 80.0], [720.0, 280.0])
    assert any("not shown to be end diastole" in o and "no NominalInterval or HeartRate" in o for o in without)


def test_es_at_the_r_wave_or_before_ed_is_refused():
    near_r = ed_es_objections(0, 1, [150.0, 110.0], [0.0, 40.0], rr_ms=800.0)
    assert near_r == ["the smaller LV volume (phase 2, TriggerTime 40 ms) lies within 120 ms of the R wave: not end "
                      "systole, which follows end diastole by the ejection"]
    before = ed_es_objections(0, 1, [150.0, 80.0], [100.0, 20.0])
    assert len(before) == 1 and "lies before the larger volume's" in before[0]
    too_soon = ed_es_objections(0, 1, [150.0, 80.0], [0.0, 60.0])
    assert len(too_soon) == 1 and "only 60 ms after the larger volume's" in too_soon[0]
    in_seconds = ed_es_objections(1, 0, [160.8, 166.5], [0.133, 0.475], rr_ms=750.0)
    assert "TriggerTime 475 ms" in in_seconds[0] and "mid-cycle" in in_seconds[0]


def test_nearly_equal_untimed_volumes_are_not_shown_to_be_ed_and_es():
    assert len(ed_es_objections(0, 1, [100.0, 96.0], None)) == 1                # 4 mL < 5 % of 100 mL
    assert len(ed_es_objections(0, 1, [100.0, 96.0], [0.0, 0.0], 900.0)) == 1   # one TriggerTime on both: untimed
    assert len(ed_es_objections(0, 1, [40.0, 37.5], None)) == 1                  # 2.5 mL < 3 mL
    assert small_ejection_note(0, 1, [100.0, 96.0], None) is None
    assert ed_es_objections(0, 1, [100.0, 90.0], None) == []                     # an EF of 10 % is measured
    reversed_volumes = ed_es_objections(0, 1, [90.0, 95.0], None)
    assert reversed_volumes == ["over all slices the phase taken as ED holds less LV volume than the one taken as ES "
                                "(90.0 against 95.0 mL)"]
    with pytest.raises(ValueError, match="not two distinct phases"):
        ed_es_objections(1, 1, [90.0, 95.0], None)


def test_a_timed_ed_es_pair_with_a_very_low_ef_is_measured_with_a_note():
    """Review F11: an ED + ES export of a failing ventricle (LVEF <= 5 %), timed at the R wave and in systole, was
    declined with "no ejection between them", a clinical statement two phases cannot support."""
    assert ed_es_objections(0, 1, [220.0, 210.0], [0.0, 350.0], 800.0) == []
    assert ed_es_objections(0, 1, [100.0, 96.0], [0.0, 350.0], 900.0) == []
    note = small_ejection_note(0, 1, [220.0, 210.0], [0.0, 350.0], 800.0)
    assert note.startswith(SMALL_EJECTION_START) and "differ by 10.0 mL (4.5 % of 220.0 mL)" in note
    assert "TriggerTime 0 ms" in note and "TriggerTime 350 ms" in note and "confirm by reading" in note
    assert "not end systole" in note
    # a reviewer: only a smaller phase in the systolic part of a known RR is shown to be ES; diastasis (800 of
    # 1000 ms), or any time without the RR interval, keeps the volume rule; the same volume twice is never ED and ES
    assert len(ed_es_objections(0, 1, [250.0, 240.0], [0.0, 800.0], 1000.0)) == 1
    assert len(ed_es_objections(0, 1, [220.0, 210.0], [0.0, 350.0], None)) == 1
    assert small_ejection_note(0, 1, [220.0, 210.0], [0.0, 350.0], None) is None
    same = ed_es_objections(0, 1, [220.0, 219.0], [0.0, 350.0], 800.0)
    assert len(same) == 1 and "the same volume within 1 mL or 1 %" in same[0]
    # the systolic window widens in share of the cycle as the heart rate rises (Bazett)
    from dicomnode.analysis.ed_es_check import latest_end_systole_ms
    assert latest_end_systole_ms(1000.0) == 500.0 and round(latest_end_systole_ms(400.0)) == 316
    # a clear ejection, or a pair the timing speaks against, gets no such note
    assert small_ejection_note(0, 1, [150.0, 70.0], [0.0, 350.0], 900.0) is None
    assert small_ejection_note(1, 0, [160.8, 166.5], [133.0, 475.0], 750.0) is None


def test_pipeline_measures_a_timed_very_low_ef_export_with_its_note():
    runtime = FakeRuntime()
    export = _two_phase_cine((34.0, 33.4), (0.0, 350.0), ["2 of 20 cardiac phases present (CardiacNumberOfImages 20)"])
    result = CinePipeline(Config(), runtime).run(TimedStudy(export, 800), context(runtime))
    assert not result.declined and result.summary["lv_ef_percent"] < 5.0
    assert any(flag.startswith(SMALL_EJECTION_START) for flag in result.summary["flags"])


def _header(**values):
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def test_rr_interval_from_nominal_interval_heart_rate_or_the_enhanced_functional_group():
    assert rr_interval_ms([_header(NominalInterval=750), _header(NominalInterval=759), _header(NominalInterval=760)]) \
        == (759.0, "NominalInterval")
    assert rr_interval_ms([_header(HeartRate=80)]) == (750.0, "HeartRate")
    cardiac = _header(RRIntervalTimeNominal=920.0)
    shared = _header(CardiacSynchronizationSequence=pydicom.Sequence([cardiac]))
    assert rr_interval_ms([_header(SharedFunctionalGroupsSequence=pydicom.Sequence([shared]))]) \
        == (920.0, "RRIntervalTimeNominal")
    # implausible or absent values: no RR (a 0 written by an export, a heart rate of 1000)
    assert rr_interval_ms([_header(NominalInterval=0), _header(HeartRate=1000)]) == (None, None)
    assert rr_interval_ms([None, _header()]) == (None, None)


def test_declared_cycle_phases_reads_the_stack_warning():
    assert declared_cycle_phases(["2 of 20 cardiac phases present (CardiacNumberOfImages 20)"]) == 20
    assert declared_cycle_phases(["something else"]) is None and declared_cycle_phases(None) is None


# ------------------------------------------------------------------ the pipeline declines such a pair
class TimedSeries(FakeSeries):
    def __init__(self, nominal_interval):
        super().__init__()
        self.instances = [type("Header", (), {"dataset": _header(NominalInterval=nominal_interval)})()]


class TimedStudy(FakeStudy):
    def __init__(self, volume, nominal_interval):
        super().__init__(volume)
        self.nominal_interval = nominal_interval

    def preferred(self, sequence, view="sax"):
        return TimedSeries(self.nominal_interval)


def _two_phase_cine(radii, trigger_times, warnings=()):
    """A FakeVolume of concentric discs; its CardiacNumberOfImages (declared_phases) as a warning 'N of M cardiac
    phases present' among `warnings` says, as cmr.volume.build_volume sets both."""
    shape, spacing = (160, 160), (1.5, 1.5)
    pixels = np.full((len(radii), 3, *shape), 100.0, np.float32)
    for phase, radius in enumerate(radii):
        pixels[phase, :, disc(shape, (79.5, 79.5), radius, spacing)] = 400.0
    return FakeVolume(pixels, spacing, 8.0, trigger_times=list(trigger_times), warnings=list(warnings),
                      declared_phases=declared_cycle_phases(warnings))


def test_the_partial_cycle_check_reads_the_declared_phases_not_the_warning_text():
    """A reviewer: whether a cine was measured hung on the wording of a stack warning; the decision reads
    Volume.declared_phases (CardiacNumberOfImages), whatever the warnings say."""
    runtime = FakeRuntime()
    mid = _two_phase_cine((33.0, 34.0), (133.0, 475.0))
    mid.declared_phases = 20
    result = CinePipeline(Config(), runtime).run(TimedStudy(mid, 750), context(runtime))
    assert result.summary is None and "the 2 phases sent of the 20 of the cycle" in result.declined[0].reason
    partial = _two_phase_cine([24.0, 22.0, 20.0, 23.0, 27.0, 31.0], [240.0 + 40.0 * p for p in range(6)],
                              ["6 of 20 cardiac phases present (CardiacNumberOfImages 20)"])
    partial.declared_phases = None
    result = CinePipeline(Config(), runtime).run(TimedStudy(partial, 800), context(runtime))
    assert not result.declined, "6 phases with no declared cycle are a cine timed by its curve"


def test_pipeline_declines_two_mid_cycle_phases_and_measures_an_ed_es_export():
    runtime = FakeRuntime()
    warning = "2 of 20 cardiac phases present (CardiacNumberOfImages 20)"
    mid = _two_phase_cine((33.0, 34.0), (133.0, 475.0), [warning])
    result = CinePipeline(Config(), runtime).run(TimedStudy(mid, 750), context(runtime))
    assert result.summary is None and not result.segmentations
    (declined,) = result.declined
    assert declined.reason.startswith("cine LV/RV function not measured: the 2 phases sent of the 20 of the cycle at "
                                      "TriggerTime 133 ms, 475 ms, RR 750 ms are not shown to be end diastole and end "
                                      "systole: the larger LV volume (phase 2, TriggerTime 475 ms)")
    assert "EF" in declined.reason and "send the whole cine, or its ED and ES phases" in declined.reason
    # the same images timed as ED (R wave) and ES are an ED + ES export, measured as before
    export = _two_phase_cine((20.0, 34.0), (310.0, 0.0), [warning])
    result = CinePipeline(Config(), runtime).run(TimedStudy(export, 750), context(runtime))
    assert not result.declined and (result.summary["ed_phase"], result.summary["es_phase"]) == (1, 0)


def test_pipeline_checks_a_partial_cycle_of_five_or_more_phases_too():
    runtime = FakeRuntime()
    # phases 6-11 of a 20-phase cycle (RR 800 ms): mid-cycle, however the curve runs
    radii = (24.0, 22.0, 20.0, 23.0, 27.0, 31.0)
    volume = _two_phase_cine(radii, [240.0 + 40.0 * p for p in range(6)],
                             ["6 of 20 cardiac phases present (CardiacNumberOfImages 20)"])
    result = CinePipeline(Config(), runtime).run(TimedStudy(volume, 800), context(runtime))
    assert result.declined and "mid-cycle, not end diastole" in result.declined[0].reason


def test_a_cine_missing_a_few_of_its_phases_is_timed_by_its_curve_not_declined():
    """A reviewer: 24 of 25 phases with ED (the atrial kick) at the last phase sent, 920 ms of a 1000 ms RR or with
    no RR in the header, was declined as 'mid-cycle, not end diastole', while the same images without the phase-count
    warning were measured."""
    runtime = FakeRuntime()
    radii = [30.0 - 8.0 * np.sin(np.pi * p / 18) if p <= 18 else 30.0 + 0.4 * (p - 18) for p in range(24)]
    for rr in (1000, None):
        volume = _two_phase_cine(radii, [40.0 * p for p in range(24)],
                                 ["24 of 25 cardiac phases present (CardiacNumberOfImages 25)"])
        result = CinePipeline(Config(), runtime).run(TimedStudy(volume, rr), context(runtime))
        assert not result.declined and result.summary["lv_ef_percent"] > 0


# ------------------------------------------------------------------ F4: the ED rule and its words; F12: numbering
def test_a_reported_curve_larger_near_the_r_wave_than_at_ed_is_explained():
    # timing curve (mid-ventricular slices): flat from the R wave to phase 3, its smoothed maximum at phase 2 (the
    # wrap to the last phase pulls phase 1 down); the all-slice curve reported holds more at phase 1, the R-wave
    # phase, as on ACDC patient090 (break40b F4)
    timing = np.array([59.0, 59.3, 59.6, 57.5, 52.2, 47.7, 40.2, 34.3, 36.5, 34.9, 32.5, 34.1])
    reported = [83.4, 82.0, 81.4, 71.9, 64.7, 59.0, 50.8, 43.6, 44.6, 45.2, 42.0, 45.7]
    phases = find_cardiac_phases(timing[:, None], [83.3 * p for p in range(12)], reported_curve_ml=reported)
    assert phases.ed == 1 and phases.trigger_phase == 0
    (note,) = [n for n in phases.notes if n.startswith("ED at phase 2")]
    assert "(the R-wave phase is phase 1)" in note and "reported is larger at phase 1 (83.4 against 82.0 mL)" in note
    assert "EDV is read at phase 2" in note
    # where the reported curve is largest at ED too, no note
    agreeing = find_cardiac_phases(timing[:, None], [83.3 * p for p in range(12)],
                                   reported_curve_ml=[80.0] + reported[1:])
    assert agreeing.ed == 1 and not any(n.startswith("ED at") for n in agreeing.notes)
    # nor where it is larger by less than the eye tells on the plot (REPORTED_CURVE_NOTE_ML)
    alike = find_cardiac_phases(timing[:, None], [83.3 * p for p in range(12)],
                                reported_curve_ml=[82.5] + reported[1:])
    assert alike.ed == 1 and not any(n.startswith("ED at") for n in alike.notes)


#: ACDC patient090's whole cine as the shipped model segments it (break49b #6): the timing set's five
#: mid-ventricular slices per phase (mL) and the all-slice LV curve reported (basal rule per phase)
PATIENT090_TIMING_SLICES = [
    [15.3, 14.7, 12.2, 9.6, 7.1], [15.4, 14.9, 12.2, 9.9, 17.3], [15.0, 14.7, 12.5, 10.4, 7.0],
    [13.6, 14.1, 12.5, 10.9, 6.8], [12.3, 13.5, 11.9, 10.0, 4.2], [10.7, 13.3, 10.8, 8.3, 4.6],
    [8.5, 11.3, 9.4, 6.4, 4.6], [6.7, 8.6, 8.0, 6.4, 3.7], [6.6, 8.2, 7.9, 5.9, 9.5], [6.8, 7.9, 7.4, 4.9, 7.9],
    [6.5, 6.9, 6.4, 5.1, 3.8], [7.4, 7.5, 7.4, 6.1, 5.7]]
PATIENT090_REPORTED = [82.78, 92.38, 81.44, 71.87, 64.67, 59.02, 50.8, 43.59, 44.61, 45.15, 38.3, 45.66]


def test_an_es_that_is_not_the_reported_curves_minimum_is_explained():
    """break49b #6: ES at phase 10 while the plotted curve is lower at phase 8 (the timing curve is not) and at
    phase 11 (left out as a jump): a note names both, why, and the ESV / LVEF each would give."""
    for times in ([83.3 * p for p in range(12)], None):
        phases = find_cardiac_phases(np.array(PATIENT090_TIMING_SLICES), times, reported_curve_ml=PATIENT090_REPORTED)
        assert (phases.ed, phases.es, phases.flagged_phases) == (2, 9, [1, 10])  # the choice rule is unchanged
        (note,) = [n for n in phases.notes if n.startswith(REPORTED_ES_START)]
        assert note.startswith("ES at phase 10: the smallest LV volume on the curve that times the cycle")
        assert "smaller at phase 8 (43.6 against 45.2 mL at ES; the curve that times the cycle holds 36.4 mL there)" \
            in note
        assert "at phase 11 (38.3 mL), left out as a jump from its temporal neighbours" in note
        assert "ESV is read at phase 10 (45.2 mL, LVEF 44.6 %)" in note
        assert "at phase 8: ESV 43.6 mL, LVEF 46.5 %; at phase 11: ESV 38.3 mL, LVEF 53.0 %" in note
    # the reported curve smallest at ES, or lower elsewhere by less than the eye tells on the plot: no note
    for others in (46.0, 44.5):
        reported = PATIENT090_REPORTED[:7] + [others, others, 45.15, others, others]
        quiet = find_cardiac_phases(np.array(PATIENT090_TIMING_SLICES), None, reported_curve_ml=reported)
        assert quiet.es == 9 and not any(n.startswith(REPORTED_ES_START) for n in quiet.notes)


def test_the_methods_state_the_ed_rule_that_runs():
    from dicomnode.results.report import _methods_lines

    cine = type("Result", (), {"name": "cine", "summary": {"timing": {"flagged_phases": []},
                                                           "lv_volume_curve_ml": [1.0] * 12}})()
    text = " ".join(_methods_lines([cine]))
    assert TIMING_METHOD in text and "cross-checked" not in text
    assert "largest LV volume within +/-15 % of the cycle around the R-wave phase" in text
    assert "not the all-slice curve plotted" in text


def test_summary_gives_phase_numbers_counted_from_1_beside_the_0_based_indices():
    runtime = FakeRuntime()
    radii = np.sqrt([20.0 ** 2 + (34.0 ** 2 - 20.0 ** 2) * (1 + np.cos(np.pi * (p / 4 if p <= 4 else (12 - p) / 8))) / 2
                     for p in range(12)])
    volume = _two_phase_cine(radii, [40.0 * p for p in range(12)])
    summary = CinePipeline(Config(), runtime).run(FakeStudy(volume), context(runtime)).summary
    assert (summary["ed_phase"], summary["es_phase"]) == (0, 4)
    assert (summary["ed_phase_number"], summary["es_phase_number"]) == (1, 5)
    assert summary["phase_numbering"].startswith("ed_phase, es_phase and every phase index in this block")
    assert summary["phases_not_measured"] == []  # no gap: ed_phase + 1 is ED's phase number here


# ------------------------------------------------------------------ F1 end to end: Sunnybrook, two mid-cycle phases
def _keep_phases(dicom_dir, keep):
    """Delete every cine image but the `keep` phases (0-based, by TriggerTime) of each slice position."""
    by_position = {}
    for path in sorted(dicom_dir.glob("cine_*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        by_position.setdefault(tuple(round(float(v), 1) for v in ds.ImagePositionPatient), []).append(
            (float(ds.TriggerTime), int(ds.InstanceNumber), path))
    for images in by_position.values():
        for index, (_, _, path) in enumerate(sorted(images)):
            if index not in keep:
                path.unlink()


@pytest.mark.parametrize("keep, measured", [((3, 12), False), ((7, 18), True)])
def test_sunnybrook_two_phases_of_the_cycle_end_to_end(datasets, tmp_path, keep, measured):
    from dicomnode.cmr.study import load_studies
    from dicomnode.devtools.make_study import make_study
    from dicomnode.inference import Runtime

    runtime = Runtime()
    if not runtime.available("cine_unet"):
        pytest.fail("engines/models/cine_unet.onnx + .json must ship with the repository")
    make_study("sunnybrook:SCD0000101", tmp_path, datasets=datasets)
    _keep_phases(tmp_path / "dicom", keep)
    (study,) = load_studies([tmp_path / "dicom"])
    result = CinePipeline(Config(), runtime).run(study, context(runtime))
    if measured:  # the reader's ES (phase 8) and ED (phase 19): an ED + ES export, late-diastolic ED
        assert not result.declined, result.declined
        assert 15.0 <= result.summary["lv_ef_percent"] <= 35.0  # whole cine 23.7 %, reference 26.2 %
        return
    # break40b F1: 133 ms and 475 ms of an RR of about 750 ms were reported as EF 3.4 % with abnormal flags
    assert result.summary is None and len(result.declined) == 1
    reason = result.declined[0].reason
    assert "the 2 phases sent of the 20 of the cycle" in reason and "mid-cycle, not end diastole" in reason
    assert "EDV, ESV, SV, EF and mass are not reported" in reason


def _steep_systole_cycle(dropped: int) -> tuple[np.ndarray, list[int]]:
    """A 20-phase cycle: a steep fall to end-systole at phase 8 and a slow refill; the phase `dropped` (1-based) is
    left out. Returns LV volumes (phases, 3 slices) in mL and the acquisition number of each phase kept."""
    t = np.arange(20, dtype=float)
    volume = np.where(t <= 7, 150 - 85 * np.clip(t, 0, 7) / 7, 65 + 70 * (np.clip(t - 7, 0, None) / 13) ** 1.5)
    numbers = [k + 1 for k in range(20) if k + 1 != dropped]
    kept = volume[[k - 1 for k in numbers]]
    return np.stack([kept / 3] * 3, axis=1), numbers


def test_a_phase_left_out_is_no_neighbour_in_the_timing_smoothing():
    """Phase 7 of 20 left out (an image missing at one slice): phases 6 and 8 are two steps apart, so the smoothing
    must not pull end-systole (phase 8, 65 mL) towards phase 6 (77 mL) as if it were its neighbour; it did, and ES
    went to phase 9 (66.5 mL)."""
    volumes, numbers = _steep_systole_cycle(dropped=7)
    trigger_times = [(n - 1) * 40.0 for n in numbers]
    timing = find_cardiac_phases(volumes, trigger_times, phase_numbers=numbers, cycle_phases=20)
    assert numbers[timing.es] == 8
    plain = find_cardiac_phases(volumes, trigger_times)  # positional: 1..19 of a whole cycle, as before
    assert numbers[plain.es] == 9


def test_cycle_neighbours_follow_the_acquisition_numbers():
    from dicomnode.analysis.cine_metrics import CycleNeighbours
    whole = CycleNeighbours.of(5, [1, 2, 4, 5, 6], cycle_phases=6)
    assert whole.previous.tolist() == [4, 0, -1, 2, 3] and whole.following.tolist() == [1, -1, 3, 4, 0]
    assert whole.distance(0, 4) == 1 and whole.distance(1, 2) == 2
    # phases 7 and 8 of the cycle not acquired (a prospectively triggered cine): the last is not the first's neighbour
    partial = CycleNeighbours.of(5, [1, 2, 4, 5, 6], cycle_phases=8)
    assert partial.previous[0] == -1 and partial.following[4] == -1
    assert partial.smooth121([4.0, 8.0, 1.0, 1.0, 1.0])[0] == pytest.approx((2 * 4 + 8) / 3)
    assert CycleNeighbours.of(4).median3([1.0, 5.0, 2.0, 9.0]).tolist() == [5.0, 2.0, 5.0, 2.0]  # whole: wraps
    assert CycleNeighbours.of(3, [3, 2, 1]).position.tolist() == [0, 1, 2]  # not rising: positional
