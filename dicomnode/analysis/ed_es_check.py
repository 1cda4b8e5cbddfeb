"""Whether the phases of a cine that is not a whole cardiac cycle can be end diastole and end systole.

A cine sent whole is timed on its LV volume curve (cine_metrics.find_cardiac_phases). A cine of fewer phases (an
"ED + ES only" export, or some phases of a cycle) has no curve to show where ED and ES are: the node takes the larger
and the smaller LV volume of the phases sent, which are EDV and ESV only if those phases are ED and ES. Rule (ED per
the DICOM / ECG convention: the R-wave-triggered phase, TriggerTime (0018,1060) counted from the R wave, PS3.3
C.7.6.16.2.7; ED = maximal, ES = minimal LV volume, shared/cmr-reference.md and the SCMR post-processing
recommendations, Schulz-Menger et al., JCMR 2020;22:19):

- ED, the larger volume, lies at the R wave: within ED_WINDOW_FRACTION of the cycle (RR interval) of it, just after
  the trigger or just before the next one (late diastole, as retrospective gating stores it);
- ES, the smaller volume, lies in systole: at least that far from the R wave on either side;
- without the RR interval (no NominalInterval (0018,1062), HeartRate (0018,1088) or Enhanced MR RRIntervalTimeNominal
  (0020,9251)), ED must lie within ED_WINDOW_FRACTION x UNTIMED_ASSUMED_RR_MS of the trigger and ES at least that much
  later (a late-diastolic ED cannot be placed without the RR interval);
- the two volumes must differ by more than the segmentation noise the node's phase-to-phase consistency check allows
  (max(JUMP_ML, JUMP_FRACTION x the larger volume)), unless the timing shows the smaller to be end systole: ED at
  the R wave and ES within the systolic part of a known RR interval (latest_end_systole_ms). Such a pair of nearly
  equal volumes is a very low EF, a segmentation fault or a phase that is not end systole, which two phases cannot
  tell apart: it is measured with a note (small_ejection_note). Two volumes within IDENTICAL_ML / IDENTICAL_FRACTION
  are the same volume and never ED and ES.
 A pair that fails is not measured (CinePipeline
declines the function measurement with the objections as its reason): an EF from two phases that are not ED and ES
is no EF.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from dicomnode.analysis.cine_metrics import (ED_WINDOW_FRACTION, JUMP_FRACTION, JUMP_ML, RR_PLAUSIBLE_MS,
                                             UNTIMED_ASSUMED_RR_MS)
from dicomnode.analysis.phase_text import COUNTED_FROM, phase_name
from dicomnode.cmr.frames import MAX_RR_IN_SECONDS, MIN_TRIGGER_IN_MICROSECONDS

#: RR intervals (ms) outside this range are not taken from a header (heart rates 20-300 per minute)
RR_RANGE_MS = RR_PLAUSIBLE_MS


def _positive(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) and number > 0 else None


def _first_item(dataset, keyword: str):
    sequence = getattr(dataset, keyword, None) if dataset is not None else None
    return sequence[0] if sequence else None


def rr_interval_ms(datasets: Iterable) -> tuple[float | None, str | None]:
    """(RR interval in ms, the attribute it came from) of a cine's images: the median NominalInterval (0018,1062),
    else 60000 / the median HeartRate (0018,1088), else the median Enhanced MR RRIntervalTimeNominal (0020,9251) of the
    Cardiac Synchronization functional group (shared, else the first frame's); (None, None) where none lies within
    RR_RANGE_MS. datasets: the images' pydicom datasets (headers suffice)."""
    nominal, rate, enhanced = [], [], []
    for dataset in datasets:
        if dataset is None:
            continue
        nominal.append(_positive(dataset.get("NominalInterval")))
        rate.append(_positive(dataset.get("HeartRate")))
        for container in (_first_item(dataset, "SharedFunctionalGroupsSequence"),
                          _first_item(dataset, "PerFrameFunctionalGroupsSequence")):
            cardiac = _first_item(container, "CardiacSynchronizationSequence")
            if cardiac is not None and _positive(cardiac.get("RRIntervalTimeNominal")) is not None:
                enhanced.append(_positive(cardiac.get("RRIntervalTimeNominal")))
                break
    low, high = RR_RANGE_MS
    for values, source, convert in ((nominal, "NominalInterval", lambda v: v),
                                    (rate, "HeartRate", lambda v: 60000.0 / v),
                                    (enhanced, "RRIntervalTimeNominal", lambda v: v)):
        values = [v for v in values if v is not None]
        if values:
            rr = convert(float(np.median(values)))
            if low <= rr <= high:
                return rr, source
    return None, None


def trigger_times_ms(trigger_times: Sequence[float | None] | None, n: int) -> list[float | None]:
    """TriggerTime per phase in ms (None where unknown): the unit inferred as recognition does (all under
    MAX_RR_IN_SECONDS: seconds; one reaching MIN_TRIGGER_IN_MICROSECONDS: microseconds); all None where the phases do
    not number `n` or share one value (a constant written on every image says nothing about when each was taken)."""
    if trigger_times is None or len(trigger_times) != n:
        return [None] * n
    values = [None if t is None or not np.isfinite(float(t)) else float(t) for t in trigger_times]
    known = [t for t in values if t is not None]
    if len(set(known)) < 2:
        return [None] * n
    scale = 1000.0 if max(known) < MAX_RR_IN_SECONDS else 0.001 if max(known) >= MIN_TRIGGER_IN_MICROSECONDS else 1.0
    return [None if t is None else t * scale for t in values]


def _offset_from_r_wave(trigger_ms: float, rr_ms: float | None) -> float:
    """Signed ms from the nearest R wave: positive after the trigger, negative before the next one (RR known)."""
    if rr_ms is None:
        return trigger_ms
    within = trigger_ms % rr_ms
    return within if within <= rr_ms / 2.0 else within - rr_ms


def _ms(value: float) -> str:
    return f"{value:.0f} ms"


def ed_es_objections(ed: int, es: int, lv_curve_ml: Sequence[float], trigger_times: Sequence[float | None] | None,
                     rr_ms: float | None = None, phase_numbers: Sequence[int] | None = None) -> list[str]:
    """Why phases `ed` (the larger LV volume) and `es` (the smaller) of a cine that is not a whole cycle cannot be
    end diastole and end systole (module rule); [] where nothing speaks against them.

    lv_curve_ml: LV volume (mL) per phase; trigger_times: TriggerTime (ms after the R wave) per phase, None where
    unknown; rr_ms: the RR interval (rr_interval_ms) or None. Phases are named counted from 1, as the acquisition
    numbers them where `phase_numbers` (the acquisition phase number of each index) is given (phase_text.phase_name).
    Raises ValueError for phases outside the curve or ED equal to ES."""
    n = len(lv_curve_ml)
    if not (0 <= ed < n and 0 <= es < n) or ed == es:
        raise ValueError(f"ED/ES phases {ed}/{es} are not two distinct phases of the {n} given")
    edv, esv = float(lv_curve_ml[ed]), float(lv_curve_ml[es])
    objections = []
    times = trigger_times_ms(trigger_times, n)
    t_ed, t_es = times[ed], times[es]
    if t_ed is not None and t_es is not None:
        cycle = rr_ms if rr_ms is not None else UNTIMED_ASSUMED_RR_MS
        window = ED_WINDOW_FRACTION * cycle
        ed_offset, es_offset = _offset_from_r_wave(float(t_ed), rr_ms), _offset_from_r_wave(float(t_es), rr_ms)
        within = (f"ED lies within {100 * ED_WINDOW_FRACTION:.0f} % of the cycle ({_ms(window)}) of the R wave"
                  + ("" if rr_ms is not None else
                     f"; no NominalInterval or HeartRate, so {_ms(UNTIMED_ASSUMED_RR_MS)} is taken as the cycle and a "
                     "late-diastolic ED just before the next R wave cannot be placed"))
        if abs(ed_offset) > window:
            where = (f"{_ms(float(t_ed))} after the R wave" if rr_ms is None else
                     f"{_ms(float(t_ed) % rr_ms)} after the R wave and {_ms(rr_ms - float(t_ed) % rr_ms)} before the "
                     f"next (RR {_ms(rr_ms)})")
            objections.append(f"the larger LV volume ({phase_name(ed, phase_numbers)}, TriggerTime {_ms(float(t_ed))}) lies {where}: "
                              + ("mid-cycle, not end diastole" if rr_ms is not None else "not shown to be end diastole")
                              + f" ({within})")
        if rr_ms is not None:
            if not window <= float(t_es) % rr_ms <= rr_ms - window:
                objections.append(f"the smaller LV volume ({phase_name(es, phase_numbers)}, TriggerTime {_ms(float(t_es))}) lies "
                                  f"within {_ms(window)} of the R wave: not end systole, which follows end diastole "
                                  "by the ejection")
        elif es_offset - ed_offset < window:
            when = ("before the larger volume's" if es_offset < ed_offset
                    else f"only {_ms(es_offset - ed_offset)} after the larger volume's")
            objections.append(f"the smaller LV volume ({phase_name(es, phase_numbers)}, TriggerTime {_ms(float(t_es))}) lies {when}: "
                              f"not end systole, which follows end diastole by the ejection (at least {_ms(window)})")
    in_systole = (t_ed is not None and t_es is not None and rr_ms is not None and not objections
                  and float(t_es) % rr_ms <= latest_end_systole_ms(rr_ms))
    tolerance = max(JUMP_ML, JUMP_FRACTION * edv)
    if edv < esv:
        objections.append(f"over all slices the phase taken as ED holds less LV volume than the one taken as ES "
                          f"({edv:.1f} against {esv:.1f} mL)")
    elif edv - esv <= max(IDENTICAL_ML, IDENTICAL_FRACTION * edv):
        objections.append(f"the two LV volumes differ by {_difference(edv, esv)}: the same volume within "
                          f"{IDENTICAL_ML:g} mL or {100 * IDENTICAL_FRACTION:g} %, so not ED and ES (or the same "
                          "images twice)")
    elif edv - esv <= tolerance and not in_systole:
        objections.append(f"the two LV volumes differ by {_difference(edv, esv)}, within the segmentation noise the "
                          f"node allows between phases ({_noise()}), and their timing does not show the smaller to be "
                          "end systole (TriggerTime within the systolic part of a known RR interval)")
    return objections


#: a generous end of systole, ms at an RR of 1 s, scaled by the square root of the RR interval (Bazett: a QTc of
#: 500 ms; Bazett HC, Heart 1920;7:353-370): 500 ms at 60/min, 316 ms at 150/min
LATEST_END_SYSTOLE_QTC_MS = 500.0
#: two phases whose LV volumes differ by less than this are the same volume, whatever their timing
IDENTICAL_ML, IDENTICAL_FRACTION = 1.0, 0.01


def latest_end_systole_ms(rr_ms: float) -> float:
    """The latest TriggerTime (ms after the R wave) taken as end systole for an RR interval of `rr_ms` ms: the QT
    interval of a QTc of LATEST_END_SYSTOLE_QTC_MS (Bazett), the end of ventricular ejection at the latest."""
    return LATEST_END_SYSTOLE_QTC_MS * float(np.sqrt(rr_ms / 1000.0))


def _difference(edv: float, esv: float) -> str:
    share = 100.0 * (edv - esv) / edv if edv > 0 else 0.0
    return f"{edv - esv:.1f} mL ({share:.1f} % of {edv:.1f} mL)"


def _noise() -> str:
    return f"max({JUMP_ML:g} mL, {100 * JUMP_FRACTION:g} %)"


def small_ejection_note(ed: int, es: int, lv_curve_ml: Sequence[float], trigger_times: Sequence[float | None] | None,
                        rr_ms: float | None = None, phase_numbers: Sequence[int] | None = None) -> str | None:
    """The note for phases timed as ED and ES (ed_es_objections finds nothing against them, TriggerTimes known) whose
    LV volumes differ by no more than the segmentation noise between phases: a very low LVEF or a segmentation
    fault, which two phases cannot tell apart, so the measurement stands with this note for the reader; None
    otherwise. Arguments as ed_es_objections."""
    n = len(lv_curve_ml)
    times = trigger_times_ms(trigger_times, n)
    if times[ed] is None or times[es] is None or ed_es_objections(ed, es, lv_curve_ml, trigger_times, rr_ms,
                                                                  phase_numbers):
        return None
    edv, esv = float(lv_curve_ml[ed]), float(lv_curve_ml[es])
    if edv < esv or edv - esv > max(JUMP_ML, JUMP_FRACTION * edv):
        return None
    return (f"{SMALL_EJECTION_START}the LV volumes at ED ({phase_name(ed, phase_numbers)}, TriggerTime "
            f"{_ms(float(times[ed]))}) and ES ({phase_name(es, phase_numbers)}, TriggerTime {_ms(float(times[es]))}) "
            f"differ by {_difference(edv, esv)}, within the segmentation noise between phases ({_noise()}): a very low "
            f"LVEF, a segmentation fault or a second phase that is not end systole; confirm by reading (phases "
            f"{COUNTED_FROM})")


#: how small_ejection_note begins
SMALL_EJECTION_START = "little ejection between the phases sent: "


def not_ed_es_reason(ed: int, es: int, lv_curve_ml: Sequence[float], trigger_times: Sequence[float | None] | None,
                     rr_ms: float | None, cycle_phases: int | None, objections: Sequence[str]) -> str:
    """The decline reason for a cine whose phases are not shown to be ED and ES (ed_es_objections): which phases
    were sent, why they are not ED and ES, and what was not reported."""
    n = len(lv_curve_ml)
    known = [t for t in trigger_times_ms(trigger_times, n) if t is not None]
    timing = (f" at TriggerTime {', '.join(_ms(float(t)) for t in known)}" if len(known) == n else "")
    of_cycle = f" of the {cycle_phases} of the cycle" if cycle_phases and cycle_phases > n else ""
    rr = f", RR {_ms(rr_ms)}" if rr_ms is not None else ""
    return (f"cine LV/RV function not measured: the {n} phases sent{of_cycle}{timing}{rr} are not shown to be end "
            f"diastole and end systole: " + "; ".join(objections) + f" (phases {COUNTED_FROM})"
            + ". EDV, ESV, SV, EF and mass are not reported: an EF needs the ED (R-wave, largest LV volume) and ES "
            "(smallest LV volume) phases; send the whole cine, or its ED and ES phases")
