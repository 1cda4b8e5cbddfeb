"""Cine phases across slices: per-slice RR drift, lost images, slices sent with fewer phases, TriggerTime in seconds
or 0 on every image (Sunnybrook SCD0000101: 12 slices x 20 phases, RR 779-800 ms from one breath-hold to the next)."""
from __future__ import annotations

import copy
import warnings

import numpy as np
import pydicom
import pytest

from dicomnode.cmr import understand_study
from dicomnode.cmr.frames import FrameInfo
from dicomnode.cmr.grouping import read_header
from dicomnode.cmr.types import FrameRef, InstanceHeader, StudyError
from dicomnode.cmr.volume import _temporal_identity, common_phases, phases_present_note
from cmr_helpers import quiet_invalid_uid_warnings, sunnybrook_paths  # noqa: F401 (fixture)

_HEADERS: dict[str, list] = {}


@pytest.fixture()
def scd101(datasets):
    """Headers of the SCD0000101 cine (series 300), read once; each test gets its own copies to change."""
    return scd101_headers(datasets)


def scd101_headers(datasets):
    """Copies of the SCD0000101 cine's headers (series 300), read once (the `scd101` fixture)."""
    if "scd101" not in _HEADERS:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Invalid value for VR UI")
            folder = sunnybrook_paths(datasets, "SCD0000101")[0]
            headers = [read_header(p) for p in sorted(folder.rglob("*")) if p.is_file()]
        _HEADERS["scd101"] = [h for h in headers if isinstance(h, InstanceHeader) and int(h.dataset.get("SeriesNumber") or 0) == 300]
    clones = []
    for header in _HEADERS["scd101"]:
        clone = copy.copy(header)
        clone.dataset = copy.deepcopy(header.dataset)
        clones.append(clone)
    return clones


def _slice_and_phase(headers):
    """{id(header): (slice index, phase index)} from SliceLocation and TriggerTime order."""
    locations = sorted({round(float(h.dataset.SliceLocation), 2) for h in headers})
    by_slice: dict[int, list] = {}
    for h in headers:
        by_slice.setdefault(locations.index(round(float(h.dataset.SliceLocation), 2)), []).append(h)
    return {id(h): (s, p) for s, members in by_slice.items()
            for p, h in enumerate(sorted(members, key=lambda h: int(h.dataset.InstanceNumber)))}


def _cine_volume(headers):
    study = understand_study(headers)
    series = study.preferred("cine", "sax")
    assert series is not None, [(s.sequence.value, s.sequence.evidence) for s in study.series]
    return series, study.load_volume(series)


def test_images_missing_at_two_slices_drop_only_those_phases(scd101):
    # phase 20 of slice 4 and phase 8 of slice 9 lost; the last phase's TriggerTime differs by 29 ms between slices
    # (RR 779 vs 800 ms), which matching by absolute TriggerTime refused as "matches no phase one-to-one"
    where = _slice_and_phase(scd101)
    kept = [h for h in scd101 if where[id(h)] not in ((3, 19), (8, 7))]
    _, volume = _cine_volume(kept)
    assert volume.pixels.shape[:2] == (18, 12)
    lost = [w for w in volume.warnings if "is missing at slice(s)" in w]
    assert len(lost) == 2 and lost[0].startswith("cardiac phase 8 of 20") and lost[1].startswith("cardiac phase 20 of 20")
    assert sum("is missing at slice(s)" in e["reason"] for e in volume.excluded) == 2 * 11


def test_slices_sent_with_every_other_phase_keep_the_phases_all_slices_have(scd101):
    where = _slice_and_phase(scd101)
    kept = [h for h in scd101 if where[id(h)][0] < 6 or where[id(h)][1] % 2 == 0]
    _, volume = _cine_volume(kept)
    assert volume.pixels.shape[:2] == (10, 12)
    assert len([w for w in volume.warnings if "is missing at slice(s)" in w]) == 10
    phase_of = {h.sop_instance_uid: where[id(h)][1] for h in kept}
    assert [{phase_of[f.sop_instance_uid] for f in phase} for phase in volume.frames] == [{p} for p in range(0, 20, 2)]


def test_trigger_time_in_seconds_keeps_every_phase(scd101):
    # a fixed 0.1 grid merged 0.019 / 0.056 / 0.094 s into one "duplicate" and refused "8 phase(s) in 7 slice(s)"
    for header in scd101:
        header.dataset.TriggerTime = round(float(header.dataset.TriggerTime) / 1000.0, 6)
        header.dataset.NominalCardiacTriggerDelayTime = header.dataset.TriggerTime
    series, volume = _cine_volume(scd101)
    assert volume.pixels.shape[:2] == (20, 12) and not volume.warnings
    assert any("read as seconds" in e for e in series.sequence.evidence)


def test_trigger_time_in_microseconds_with_an_image_lost_is_still_a_cine(scd101):
    # break37b: TriggerTime written in us (not DICOM's ms) made the series 'other' with no word why
    where = _slice_and_phase(scd101)
    kept = [h for h in scd101 if where[id(h)] != (4, 19)]
    for header in kept:
        header.dataset.TriggerTime = round(float(header.dataset.TriggerTime) * 1000.0, 1)
        header.dataset.NominalCardiacTriggerDelayTime = header.dataset.TriggerTime
    series, volume = _cine_volume(kept)
    assert series.sequence.value == "cine", series.sequence.evidence
    assert any("read as microseconds" in e for e in series.sequence.evidence)
    assert volume.pixels.shape[:2] == (19, 12)


def test_trigger_time_in_seconds_is_compared_with_the_header_rr_in_ms(scd101):
    # break37b: with an image lost, TriggerTime in s against a correct NominalInterval in ms set the RR aside as
    # "differs from the slice's own cycle 1"; the units are now reconciled and the header RR is used
    where = _slice_and_phase(scd101)
    kept = [h for h in scd101 if where[id(h)] != (4, 19)]
    for header in kept:
        header.dataset.TriggerTime = round(float(header.dataset.TriggerTime) / 1000.0, 6)
        header.dataset.NominalCardiacTriggerDelayTime = header.dataset.TriggerTime
    _, volume = _cine_volume(kept)
    assert volume.pixels.shape[:2] == (19, 12)
    assert not [w for w in volume.warnings if "header RR" in w]
    assert any("matched by TriggerTime / the slice's RR interval" in w for w in volume.warnings)


def test_a_cine_whose_phases_cannot_be_lined_up_is_refused_in_plain_words_first(scd101):
    from dicomnode.cmr.types import StudyError

    where = _slice_and_phase(scd101)
    kept = [h for h in scd101 if where[id(h)] != (4, 19)]
    for header in kept:
        if where[id(header)][0] == 4:  # one slice's frames in reverse time order: no axis can match them
            header.dataset.TriggerTime = 800.0 - float(header.dataset.TriggerTime)
        for keyword in ("NominalCardiacTriggerDelayTime", "TemporalPositionIdentifier",
                        "NominalPercentageOfCardiacPhase"):
            if keyword in header.dataset:
                delattr(header.dataset, keyword)
    with pytest.raises(StudyError) as refused:
        _cine_volume(kept)
    message = str(refused.value)
    assert "cannot be lined up" in message and "re-send the series" in message
    assert message.index("re-send") < message.index("Detail:")


def test_trigger_time_zero_on_every_image_is_no_timing_not_perfusion(scd101):
    # TriggerTime 0 everywhere and no other timing: the 20-phase SSFP stack was classed perfusion and skipped
    for header in scd101:
        header.dataset.TriggerTime = 0
        del header.dataset.NominalCardiacTriggerDelayTime
    series, volume = _cine_volume(scd101)
    assert series.sequence.value == "cine", series.sequence.evidence
    assert any("carries no timing" in e for e in series.sequence.evidence)
    assert volume.pixels.shape[:2] == (20, 12)
    where = _slice_and_phase(scd101)
    phase_of = {h.sop_instance_uid: where[id(h)][1] for h in scd101}
    assert [{phase_of[f.sop_instance_uid] for f in phase} for phase in volume.frames] == [{p} for p in range(20)]


def test_trigger_time_zero_beside_a_nominal_delay_takes_the_nominal_delay(scd101):
    for header in scd101:
        header.dataset.TriggerTime = 0
    _, volume = _cine_volume(scd101)
    assert volume.pixels.shape[:2] == (20, 12)
    assert volume.trigger_times[0] == pytest.approx(18.987, abs=0.01) and volume.trigger_times[-1] > 700


# ---------------------------------------------------------------- common_phases on synthetic frames
def _frame(trigger: float | None, number: int, rr: float | None = None, temporal: int | None = None) -> FrameInfo:
    ds = pydicom.Dataset()
    if rr is not None:
        ds.NominalInterval = rr
    uid = f"1.2.3.{number}"
    header = InstanceHeader(path=f"/x/{number}.dcm", dataset=ds, sop_instance_uid=uid, sop_class_uid="1.2",
                            series_instance_uid="1.2.3")
    return FrameInfo(header=header, ref=FrameRef(uid, "1.2", "1.2.3", None), position=None, orientation=None,
                     pixel_spacing=None, rows=4, cols=4, trigger_time=trigger, temporal_index=temporal,
                     acquisition_time=None, instance_number=number, inversion_time=None, rescale=(1.0, 0.0),
                     frame_index=0)


def _slice(rr: float, phases: int, keep=None, with_rr: bool = True, scale: float = 1.0, start: int = 0):
    keep = range(phases) if keep is None else keep
    return [_frame(scale * (p + 0.5) * rr / phases, start + p, rr if with_rr else None) for p in keep]


@pytest.mark.parametrize("with_rr", [True, False])
def test_common_phases_follows_each_slice_s_own_cycle(with_rr):
    # RR 800 / 700 / 900 ms: absolute TriggerTimes of the last phases lie 2 phase intervals apart across slices
    per_slice = [_slice(800, 20, with_rr=with_rr), _slice(700, 20, range(19), with_rr=with_rr, start=100),
                 _slice(900, 20, [p for p in range(20) if p != 7], with_rr=with_rr, start=200)]
    warnings: list[str] = []
    kept, left_out = common_phases("s", per_slice, [0.0, 10.0, 20.0], warnings)
    assert [len(s) for s in kept] == [18, 18, 18]
    assert [f.instance_number % 100 for f in kept[1]] == [p for p in range(19) if p != 7]
    assert all(f.instance_number % 100 == g.instance_number % 100 for f, g in zip(kept[0], kept[2]))
    assert len(left_out) == 2 + 2 and [w.split(" (")[0] for w in warnings] == ["cardiac phase 8 of 20",
                                                                               "cardiac phase 20 of 20"]


def test_common_phases_matches_in_any_unit_and_subsampled_slices():
    per_slice = [_slice(0.8, 20, with_rr=False, scale=1.0), _slice(0.78, 20, range(0, 20, 2), with_rr=False, start=100)]
    kept, _ = common_phases("s", per_slice, [0.0, 10.0], [])
    assert [f.instance_number for f in kept[0]] == list(range(0, 20, 2))


def test_common_phases_refuses_without_timing_or_with_too_few_phases():
    untimed = [[_frame(None, p) for p in range(5)], [_frame(None, 10 + p) for p in range(4)]]
    with pytest.raises(StudyError, match=r"inconsistent phase counts across slices \(4 phase\(s\) in 1 slice\(s\), "
                                         r"5 phase\(s\) in 1 slice\(s\)\); without TriggerTime"):
        common_phases("s", untimed, [0.0, 10.0], [])
    with pytest.raises(StudyError, match=r"only 1 of 2 phases are present at every slice"):
        common_phases("s", [_slice(800, 2), _slice(800, 2, [0], start=10)], [0.0, 10.0], [])


def test_temporal_identity_does_not_merge_phases_sent_in_seconds_or_without_timing():
    seconds = {_temporal_identity(_frame(t, k)) for k, t in enumerate([0.019, 0.056, 0.094, 0.131])}
    assert len(seconds) == 4
    untimed = {_temporal_identity(_frame(0.0, k)) for k in range(3)}
    assert len(untimed) == 3
    resent = _frame(56.962, 7), _frame(56.962, 7)
    assert _temporal_identity(resent[0]) == _temporal_identity(resent[1])


# ---------------------------------------------------------------- header RR not the slice's own, prospective (break37)
def _set(per_slice, **values):
    """Every frame's header given these attribute values (None: attribute removed); returns per_slice."""
    for frames in per_slice:
        for frame in frames:
            for keyword, value in values.items():
                if value is not None:
                    setattr(frame.header.dataset, keyword, value)
                elif keyword in frame.header.dataset:
                    delattr(frame.header.dataset, keyword)
    return per_slice


def _phase_numbers(kept):
    """[phase] the set of (instance number % 100) put in each kept phase: one each for a coherent assembly."""
    return [{s[p].instance_number % 100 for s in kept} for p in range(len(kept[0]))]


@pytest.mark.parametrize("header", [{"NominalInterval": 750, "HeartRate": 80},  # study-level pre-scan value
                                    {"NominalInterval": None, "HeartRate": 60}])  # heart rate only, and wrong
def test_header_rr_that_is_not_each_slice_s_own_does_not_mix_phases(header):
    # real RRs 800 / 731 / 760 ms, one image lost (last phase of the 731 slice): TriggerTime / 750 reached 1.04 on the
    # 800 slice and put frames of up to 3 cardiac phases into one phase (break37 D1)
    per_slice = _set([_slice(800, 20), _slice(731, 20, range(19), start=100), _slice(760, 20, start=200)], **header)
    warnings: list[str] = []
    kept, left_out = common_phases("s", per_slice, [0.0, 10.0, 20.0], warnings)
    assert [len(s) for s in kept] == [19, 19, 19]
    assert _phase_numbers(kept) == [{p} for p in range(19)]
    assert warnings[0].startswith("header RR interval (NominalInterval / HeartRate) not used to match cardiac phases")
    assert warnings[1].startswith("cardiac phase 20 of 20") and len(left_out) == 2


def test_prospective_fixed_frame_interval_matches_the_same_trigger_time():
    # prospective gating, 37.5 ms per frame: 20 / 19 / 18 phases by each slice's RR (800 / 760 / 731 ms, in the header
    # and right), the same TriggerTimes on every slice; matching by TriggerTime / RR kept 14 mixed phases (break37 D2)
    per_slice = [[_frame(37.5 * (p + 0.5), start + p, rr) for p in range(n)]
                 for rr, n, start in ((800, 20, 0), (760, 19, 100), (731, 18, 200))]
    warnings: list[str] = []
    kept, _ = common_phases("s", per_slice, [0.0, 10.0, 20.0], warnings)
    assert _phase_numbers(kept) == [{p} for p in range(18)]
    assert [w.split(" (")[0] for w in warnings] == ["cardiac phase 19 of 20", "cardiac phase 20 of 20"]
    assert "matched by the same TriggerTime at every slice" in warnings[0]


def test_phases_that_cannot_be_matched_in_each_slice_s_order_are_refused():
    # one frame of the 19-phase slice lies 0.95 phase late, next to the following phase: the old match kept one of
    # the two and dropped the other as "matches no cardiac phase"; no timing matches them one phase each
    odd = _slice(800, 20, range(19), start=100)
    odd[5].trigger_time += 0.95 * 40.0
    with pytest.raises(StudyError, match=r"inconsistent phase counts across slices \(19 phase\(s\) in 1 slice\(s\), 20 "
                                         r"phase\(s\) in 1 slice\(s\)\); the slices' cardiac phases cannot be lined up .*"
                                             r"the phases cannot be matched one-to-one .*"
                                         r"fall on phases 7 and 7.*not put together"):
        common_phases("s", [_slice(800, 20), odd], [0.0, 10.0], [])


def test_phases_present_names_every_slice_s_declared_phase_count():
    frames = [_frame(40.0 * p, p) for p in range(4)]
    for frame, declared in zip(frames, (19, 20, 18, 20)):
        frame.header.dataset.CardiacNumberOfImages = declared
    assert phases_present_note(18, frames) == "18 of 20 cardiac phases present (CardiacNumberOfImages 18 to 20 by slice)"
    assert phases_present_note(20, frames) is None and phases_present_note(18, frames[:1]) == (
        "18 of 19 cardiac phases present (CardiacNumberOfImages 19)")


def test_own_cycle_of_a_slow_slice_with_the_full_phase_count_is_not_halved():
    """Break37b #4: a slice at 1.6x the RR holding all 20 phases keeps its own step (cycle 1200, not 600)."""
    from dicomnode.cmr.volume import own_cycles
    from test_cine_repeats import _frame
    normal = [[_frame(k, None, 37.5 * k) for k in range(20)] for _ in range(3)]
    slow = [_frame(k, None, 60.0 * k) for k in range(20)]
    half = [_frame(k, None, 75.0 * k) for k in range(10)]
    cycles = own_cycles(normal + [slow, half])
    assert cycles[3] == pytest.approx(1200.0) and cycles[4] == pytest.approx(750.0)


def test_trigger_grid_accepts_per_image_jitter():
    """Break37b #5: +-3 ms per-image TriggerTime jitter on a 37.5 ms prospective grid is still one grid."""
    from dicomnode.cmr.volume import trigger_grid
    from test_cine_repeats import _frame
    jitter = [3.0, -3.0, 0.0, 2.5]
    per_slice = [[_frame(k, None, 37.5 * k + jitter[(k + z) % 4]) for k in range(18 + z % 3)] for z in range(6)]
    axis = trigger_grid(per_slice)
    assert axis is not None and len(axis.reference) == 20


@pytest.mark.parametrize("indexed", [False, True], ids=["ordered by TriggerTime", "TemporalPositionIdentifier"])
def test_trigger_times_against_the_phase_order_are_said_in_the_timing_notes(scd101, indexed):
    """break50b finding 14: the TriggerTimes of phases 2 and 3 swapped at every slice. Without a temporal index the
    phases are re-ordered by TriggerTime against their InstanceNumbers; with TemporalPositionIdentifier they stay in
    its order against their TriggerTime. Either way the volume carries the timing note the cine pipeline puts first
    in `timing.notes` and the flags (measure_cine); unswapped, no word."""
    where = _slice_and_phase(scd101)
    if indexed:
        for header in scd101:
            header.dataset.TemporalPositionIdentifier = where[id(header)][1] + 1
    _, volume = _cine_volume(copy.deepcopy(scd101))
    assert volume.trigger_order_note is None
    by_place = {where[id(h)]: h for h in scd101}
    for slice_index in range(12):
        second, third = by_place[(slice_index, 1)].dataset, by_place[(slice_index, 2)].dataset
        second.TriggerTime, third.TriggerTime = third.TriggerTime, second.TriggerTime
    _, volume = _cine_volume(scd101)
    note = volume.trigger_order_note
    assert note is not None and not [w for w in volume.warnings if "phase order" in w]
    if indexed:
        assert note.startswith("TriggerTime order contradicts TemporalPositionIdentifier at 12 of 12 slice(s)"), note
        assert "phases ordered by TemporalPositionIdentifier" in note
    else:
        assert note.startswith("phases ordered by TriggerTime against their InstanceNumber order at 12 of 12 "
                               "slice(s)"), note
