"""Cine function measurements from label maps: volume curves, ED/ES, EDV/ESV/SV/EF, LV mass, BSA, indexing, flags.

Conventions (stated once, applied everywhere):
- Summation of discs: a ventricle's volume = its voxel count over the whole stack x voxel volume.
- Papillary muscles and trabeculations belong to the blood pool (cavity), ACDC convention; LV mass is the
  myocardium label only (papillary muscles excluded from mass, DICOM (122620, DCM, "Papillary Muscle Excluded")).
- Basal slices (LV), one rule at every phase: a slice's LV blood pool counts when at least half of its outline
  borders LV myocardium (SCMR post-processing recommendation, Schulz-Menger et al., JCMR 2020;22:19, "the basal
  slice is included if at least 50 % of the blood pool is surrounded by myocardium"); otherwise that slice is
  atrium or outflow tract at that phase. On a cycle the share is read over each phase and its two neighbours
  (basal_surround, a median), so a decision that flips at one phase only does not add or remove a slice there;
  where EDV or ESV still depends on a borderline slice a note says by how much (basal_borderline_notes). The RV
  and the myocardium (mass) count every slice as segmented: rules per phase on the label maps alone (the RV
  above the LV's basal slice at ES, the RV's ED basal slice at ES, a basal slice not shrinking in systole, one with
  under half the next slice's pool; for the LV the ED basal slice at ES, the same taper) cut the experts' own ACDC
  contours or left the cross-validated errors unchanged (engines/checkpoints/cine_basal_rules, 2026-12-07).
- Timing (find_cardiac_phases): ED is the largest LV volume of the smoothed timing curve within +-15 % of the cycle
  around the R-wave-triggered phase (smallest TriggerTime, DICOM PS3.3 C.7.6.16.2.7; phase 0 when the header has
  none): that phase or a neighbour, not necessarily the R-wave phase itself. ES is the smallest volume of the smoothed
  curve; where neighbouring phases lie within its noise (ES_TIE_ML, ES_TIE_FRACTION), the weighted middle of that
  plateau, with a note giving the ESV and LVEF range over it (_end_systole). The curve that
  times the cycle counts one fixed set of slices at every phase (timing_slice_volumes_ml: a slice whose basal-rule
  decision flips between phases would add or remove a whole slice's volume and move ED/ES; with 5 or more slices its
  most basal and most apical slices are left out, as their volume moves with the valve plane and apex); the volumes reported
  at ED and ES follow the basal rule at those phases. Per-slice volumes are checked for temporal consistency
  first; a phase whose volume jumps is flagged and not chosen as ED or ES (a phase with one neighbour, at an edge of
  a partial cycle, cannot be judged; an ED or ES there is caveated). Phases that repeat or interpolate others' pixel
  data (dicomnode/analysis/derived_phases.py) are left out of the timing, which runs on the distinct phases.
  RV EDV / ESV are the RV's own largest / smallest volume within one phase of that ED / ES (rv_cardiac_phases).
  With fewer than 5 phases (e.g. an ED + ES export) there is no curve to smooth: ED = larger, ES = smaller volume;
  whether those can be ED and ES (timing, volume difference) is checked by dicomnode/analysis/ed_es_check.py.
- Flags and notes name phases counted from 1 (phase_text); the indices in the results stay 0-based.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
from scipy import ndimage

from dicomnode.rounding import display_round, number_text, stored_value
from dicomnode.analysis.model_error import beyond_known_error, systematic_bias
from dicomnode.analysis.phase_text import phase_name, phase_number, summary_phase_numbers
from dicomnode.labels import MYOCARDIUM_LABELS, Label

BsaFormula = Literal["mosteller", "dubois"]
Sex = Literal["M", "F"]
DEFAULT_DENSITY_G_PER_ML = 1.05
PAPILLARY_MUSCLES = "cavity"
PAPILLARY_MASS_CODE = ("122620", "DCM", "Papillary Muscle Excluded")
BSA_FORMULA_CODES = {"mosteller": ("122244", "DCM", "BSA = Mosteller"), "dubois": ("122241", "DCM", "BSA = DuBois")}

#: RV reference sources: shared/cmr-reference.md gives no RV reference value (its only RV figure is the CineMA RVEF MAE
#: anchor), so these were checked against the sources' abstracts (2026-12-06: Alfakih, PubMed 12594722, SSFP RV EDV/BSA
#: men 86.2 ± 14.1, women 75.2 ± 13.8 mL/m²; Gulati, PubMed 23965488, RVSD defined by RVEF <= 45 %), and agree; the LV
#: values below are cmr-reference.md's. Adult SSFP short-axis studies, RV volumes by summation of
#: discs with trabeculations and papillary muscles in the cavity, as the node (and ACDC) counts them. Only the indexed
#: RV EDV and RVEF are judged: two sources for the absolute and indexed volumes gave one patient different verdicts,
#: and an unindexed RV volume range says little across body sizes.
RV_SOURCE_ALFAKIH = ("Alfakih K et al., J Magn Reson Imaging 2003;17:323-329 (SSFP, 30 men / 30 women, 20-65 y): "
                     "RV EDV/BSA 86.2 ± 14.1 / 75.2 ± 13.8 mL/m²")
RV_SOURCE_GULATI = ("Gulati A et al., Circulation 2013;128:1623-1633: RV systolic dysfunction = CMR RVEF <= 45 % "
                    "(independent predictor of death or transplantation in dilated cardiomyopathy)")

#: normal SSFP values, mean and SD, men / women (LV: cmr-reference.md, 2015 SCMR review, tabulated secondarily; RV:
#: the RV_SOURCE_* above). An entry with "limits" gives its (low, high) bounds per sex instead of mean ± 2 SD (RVEF:
#: a lower limit only, high = inf, named by "cut_off" in its flag: it is a dysfunction cut-off, not a normal range).
#: "sex_unknown": "both" judges a value of a patient of unknown sex only where it lies outside both sexes' ranges (the
#: RV's ranges differ by sex more than the LV's: either-sex judging flagged half of ACDC's expert-contoured normals).
NORMAL_VALUES = {
    "lv_edv_ml": {"M": (160.0, 27.0), "F": (132.0, 23.0), "name": "LV EDV", "unit": "mL"},
    "lv_edvi_ml_m2": {"M": (81.0, 12.0), "F": (76.0, 10.0), "name": "LV EDVi", "unit": "mL/m²"},
    "lv_esv_ml": {"M": (54.0, 14.0), "F": (44.0, 11.0), "name": "LV ESV", "unit": "mL"},
    "lv_ef_percent": {"M": (67.0, 5.0), "F": (67.0, 5.0), "name": "LVEF", "unit": "%"},
    "lv_mass_index_g_m2": {"M": (67.0, 9.0), "F": (61.0, 10.0), "name": "LV mass index", "unit": "g/m²"},
    "rv_edvi_ml_m2": {"M": (86.2, 14.1), "F": (75.2, 13.8), "name": "RV EDVi", "unit": "mL/m²",
                      "source": RV_SOURCE_ALFAKIH, "sex_unknown": "both"},
    "rv_ef_percent": {"limits": {"M": (45.0, math.inf), "F": (45.0, math.inf)}, "name": "RVEF", "unit": "%",
                      "source": RV_SOURCE_GULATI, "cut_off": ("the RV systolic dysfunction cut-off", "Gulati 2013")},
}
NORMAL_RANGE_SD = 2.0  # normal range = mean ± 2 SD


def volume_curve_ml(labelmaps: np.ndarray, labels, voxel_volume_ml: float) -> np.ndarray:
    """Volume per phase (mL) of the voxels carrying any of `labels`; labelmaps (phases, slices, rows, cols)."""
    return slice_volumes_ml(labelmaps, labels, voxel_volume_ml).sum(axis=1)


def slice_volumes_ml(labelmaps: np.ndarray, labels, voxel_volume_ml) -> np.ndarray:
    """(phases, slices) volume in mL of the voxels carrying any of `labels`; labelmaps (phases, slices, rows, cols).

    voxel_volume_ml: one voxel volume (mL), or one per slice (slices,) where the discs differ in thickness
    (disc_thickness_mm)."""
    voxel = _voxel_volumes(voxel_volume_ml)
    labelmaps = np.asarray(labelmaps)
    if labelmaps.ndim != 4:
        raise ValueError(f"labelmaps must be (phases, slices, rows, cols), got shape {labelmaps.shape}")
    labels = np.atleast_1d(np.asarray(labels))
    wanted = labelmaps == labels[0] if labels.size == 1 else np.isin(labelmaps, labels)
    return np.count_nonzero(wanted.reshape(labelmaps.shape[:2] + (-1,)), axis=2) * voxel


def _voxel_volumes(voxel_volume_ml):
    """A positive voxel volume in mL as a float, or per slice as a float array; ValueError otherwise."""
    voxel = np.asarray(voxel_volume_ml, dtype=np.float64)
    if voxel.ndim > 1 or voxel.size == 0 or not np.all(voxel > 0):
        raise ValueError(f"voxel_volume_ml must be positive (one value or one per slice), got {voxel_volume_ml}")
    return float(voxel) if voxel.ndim == 0 else voxel


#: basal-slice rule: share of the LV blood-pool outline that must border myocardium (SCMR 2020)
BASAL_SURROUND_FRACTION = 0.5
BASAL_RULE = ("LV blood pool counted in a slice when >= 50 % of its outline borders LV myocardium (SCMR 2020, "
              "Schulz-Menger et al.), the same rule at every phase, the share read as the median over the phase and "
              "its two neighbours on the cycle (a decision flipping at one phase only is segmentation noise), and "
              "drawn in the SEG only where counted; RV and myocardium: every slice as segmented (a right atrium the "
              "model draws as RV above the tricuspid valve at end-systole counts: no rule on the label maps alone told "
              "it from a basal RV on 100 cross-validated ACDC patients, engines/checkpoints/cine_basal_rules)")


#: the timing set drops its two end slices when it holds at least this many (timing_slice_volumes_ml)
TIMING_TRIM_MIN_SLICES = 5


def myocardial_surround(labelmaps: np.ndarray) -> np.ndarray:
    """(phases, slices) share of each slice's LV blood-pool outline that touches LV myocardium (8-neighbourhood).

    1.0 where a slice holds no LV blood pool. Labelmaps (phases, slices, rows, cols) in node labels.
    """
    labelmaps = np.asarray(labelmaps)
    if labelmaps.ndim != 4:
        raise ValueError(f"labelmaps must be (phases, slices, rows, cols), got shape {labelmaps.shape}")
    blood = labelmaps == int(Label.LV_BLOOD_POOL)
    rows, cols = np.flatnonzero(blood.any(axis=(0, 1, 3))), np.flatnonzero(blood.any(axis=(0, 1, 2)))
    if rows.size == 0:
        return np.ones(labelmaps.shape[:2])
    # only the box around the blood pool (+ 2 pixels for the outline's neighbours) can matter
    box = (slice(None), slice(None), slice(max(rows[0] - 2, 0), rows[-1] + 3), slice(max(cols[0] - 2, 0), cols[-1] + 3))
    labelmaps, blood = labelmaps[box], blood[box]
    myocardium = np.isin(labelmaps, [int(v) for v in MYOCARDIUM_LABELS])
    in_plane = np.zeros((1, 1, 3, 3), bool)
    in_plane[0, 0, 1, 1] = in_plane[0, 0, 0, 1] = in_plane[0, 0, 2, 1] = in_plane[0, 0, 1, 0] = in_plane[0, 0, 1, 2] = True
    outline = blood & ~ndimage.binary_erosion(blood, in_plane)
    near_myocardium = ndimage.binary_dilation(myocardium, np.ones((1, 1, 3, 3), bool))
    outline_px = outline.sum(axis=(2, 3))
    touching = (outline & near_myocardium).sum(axis=(2, 3))
    return np.where(outline_px > 0, touching / np.maximum(outline_px, 1), 1.0)


def basal_surround(labelmaps: np.ndarray, phase_numbers=None, cycle_phases: int | None = None) -> np.ndarray:
    """(phases, slices) share of each slice's LV blood-pool outline bordering LV myocardium (myocardial_surround) as
    the basal-slice rule reads it: on a cycle of at least MIN_PHASES_FOR_CURVE phases, each slice's share at a phase
    with both neighbours on the cycle (CycleNeighbours; phase_numbers / cycle_phases place the phases) is the median
    of its share there and at those neighbours that hold LV blood pool in that slice.

    The valve plane moves through a basal slice over several phases of systole, so a real change of the rule's
    decision lasts; a decision that holds at one phase only, between two phases that decide the other way, is the
    segmentation's noise (Sunnybrook SCD0000101: a slice holding 6-14 mL left out at phase 11 only, 43 % bordered
    there against 60 % and 71 % at its neighbours, made a 7 mL saw-tooth in the reported LV curve, break 44b). The
    SCMR post-processing recommendation (Schulz-Menger et al., JCMR 2020;22:19) applies the 50 % rule at ED and at ES
    separately, as the base descends in systole: the rule stays per phase, read on the slice's share over its
    neighbouring phases. ED + ES exports (fewer phases) keep each phase's own share."""
    surround = myocardial_surround(labelmaps)
    n = surround.shape[0]
    if n < MIN_PHASES_FOR_CURVE:
        return surround
    holds = slice_volumes_ml(labelmaps, [int(Label.LV_BLOOD_POOL)], 1.0) > 0
    cycle = CycleNeighbours.of(n, phase_numbers, cycle_phases)
    with np.errstate(all="ignore"):
        stacked = cycle._stack(np.where(holds, surround, np.nan))
        present = np.isfinite(stacked).any(axis=0)
        median = np.nanmedian(np.where(present[None], stacked, 0.0), axis=0)
    return np.where(cycle.judged()[:, None] & holds, median, surround)


def lv_slice_volumes_ml(labelmaps: np.ndarray, voxel_volume_ml, phase_numbers=None,
                        cycle_phases: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """LV blood-pool (phases, slices) volumes in mL under the basal-slice rule (BASAL_SURROUND_FRACTION of the share
    basal_surround gives: on a whole or partial cycle, read over each phase and its neighbours), and the (phases,
    slices) mask of the slices the rule left out. The same rule for a model's label maps and an expert's (the
    evaluation, engines/cine/evaluate.py)."""
    volumes = slice_volumes_ml(labelmaps, [int(Label.LV_BLOOD_POOL)], voxel_volume_ml)
    excluded = (basal_surround(labelmaps, phase_numbers, cycle_phases) < BASAL_SURROUND_FRACTION) & (volumes > 0)
    return np.where(excluded, 0.0, volumes), excluded


#: a slice's LV blood pool at ED or ES is borderline for the basal rule where its share (basal_surround) lies within
#: this of BASAL_SURROUND_FRACTION, or where the rule decides it the other way at a neighbouring phase (per phase)
BASAL_BORDERLINE_BAND = 0.1
#: how the note on a volume that depends on a borderline basal slice begins (basal_borderline_notes)
BASAL_BORDERLINE_START = "borderline slice for the basal rule: "


def basal_borderline_notes(labelmaps: np.ndarray, voxel_volume_ml, ed: int, es: int, phase_numbers=None,
                           cycle_phases: int | None = None) -> list[str]:
    """The notes where EDV or ESV depends on the basal-slice rule's decision at a borderline slice: a slice holding
    LV blood pool at ED or ES whose share bordering myocardium (basal_surround) lies within BASAL_BORDERLINE_BAND of
    BASAL_SURROUND_FRACTION there, or whose per-phase share (myocardial_surround) falls on the other side of it at a
    neighbouring phase of the cycle. Each note gives the volume and LVEF with that one slice decided the other way
    (Sunnybrook SCD0000101 moved by 11 mm: ESV 128.9 mL leaves out a 5.5 mL slice counted at the next phase; break
    44b); [] where no such slice changes a volume by REPORTED_CURVE_NOTE_ML or more. Slices are numbered from 1 in
    stack order; phase_numbers name the phases (phase_text)."""
    volumes = slice_volumes_ml(labelmaps, [int(Label.LV_BLOOD_POOL)], voxel_volume_ml)
    share = basal_surround(labelmaps, phase_numbers, cycle_phases)
    raw = myocardial_surround(labelmaps)
    counted = ~((share < BASAL_SURROUND_FRACTION) & (volumes > 0))
    curve = np.where(counted, volumes, 0.0).sum(axis=1)
    cycle = CycleNeighbours.of(volumes.shape[0], phase_numbers, cycle_phases)
    notes = []
    for quantity, phase in (("EDV", ed), ("ESV", es)):
        for z in np.flatnonzero(volumes[phase] > 0):
            neighbours = [int(q) for q in (cycle.previous[phase], cycle.following[phase])
                          if q >= 0 and volumes[q, z] > 0]
            flips = [q for q in neighbours
                     if (raw[q, z] >= BASAL_SURROUND_FRACTION) != (raw[phase, z] >= BASAL_SURROUND_FRACTION)]
            near = abs(float(share[phase, z]) - BASAL_SURROUND_FRACTION) < BASAL_BORDERLINE_BAND
            if not (flips or near) or volumes[phase, z] < REPORTED_CURVE_NOTE_ML:
                continue
            other = curve.copy()
            other[phase] += -volumes[phase, z] if counted[phase, z] else volumes[phase, z]
            ef = ejection_fraction_percent(curve[ed], curve[es])
            other_ef = ejection_fraction_percent(other[ed], other[es])
            why = (f"{100 * share[phase, z]:.0f} % of its outline borders myocardium"
                   + (f", decided the other way at {phase_name(flips[0], phase_numbers)}" if flips else ""))
            notes.append(
                f"{BASAL_BORDERLINE_START}{quantity} {curve[phase]:.1f} mL "
                f"{'counts' if counted[phase, z] else 'leaves out'} slice {z + 1} at {phase_name(phase, phase_numbers)} "
                f"({volumes[phase, z]:.1f} mL of LV blood pool, "
                f"{why}; the basal rule counts >= {100 * BASAL_SURROUND_FRACTION:.0f} %): with it "
                f"{'left out' if counted[phase, z] else 'counted'} {quantity} would be {other[phase]:.1f} mL"
                + ("" if ef is None or other_ef is None else f" and LVEF {other_ef:.1f} % (reported {ef:.1f} %)"))
    return notes


def timing_slice_volumes_ml(labelmaps: np.ndarray, voxel_volume_ml: float) -> tuple[np.ndarray, np.ndarray]:
    """LV blood-pool (phases, slices) volumes in mL over one fixed set of slices, for timing the cycle, and the
    (slices,) mask of that set.

    A slice is in the set when the basal-slice rule (BASAL_SURROUND_FRACTION) counts it in at least half of the
    phases where it holds LV blood pool; it then counts at every phase, as segmented. Near the base the rule's
    per-phase decision can flip from one phase to the next as the valve plane moves through the slice (measured:
    Sunnybrook SCD0000201, a 12-16 mL basal slice left out at phases 8-9 only, which made phase 8 the curve's
    minimum two phases from the expert's ES), so the curve that chooses ED and ES does not follow it per phase.

    With at least TIMING_TRIM_MIN_SLICES slices in the set, its two end slices (most basal and most apical) are
    left out as well: the base descends toward the apex in systole and the apex moves through its slice, so their
    volume change is partly through-plane motion and a partial LV, not ejection; the mid-ventricular slices time
    the cycle (Contijoch et al., J Magn Reson Imaging 2016;43:585-593: the mid-ventricular maximum approximates the
    global ED). Measured on the four whole cines of the shared data with eight models (32 pairs): ES within one
    phase of the reader's in 31 (26 with the end slices counted), ED unchanged (25).
    """
    volumes = slice_volumes_ml(labelmaps, [int(Label.LV_BLOOD_POOL)], voxel_volume_ml)
    counted = (myocardial_surround(labelmaps) >= BASAL_SURROUND_FRACTION) & (volumes > 0)
    present = (volumes > 0).sum(axis=0)
    in_set = (present > 0) & (2 * counted.sum(axis=0) >= present)
    ends = np.flatnonzero(in_set)
    if ends.size >= TIMING_TRIM_MIN_SLICES:
        in_set[[ends[0], ends[-1]]] = False
    return volumes * in_set[None, :], in_set


#: temporal consistency: a phase is flagged when its LV volume differs from the per-slice running median by more
#: than max(JUMP_ML, JUMP_FRACTION x the largest volume, what a cosine-shaped cycle loses to that median)
JUMP_ML = 3.0
JUMP_FRACTION = 0.05
#: ED window around the R-wave phase, as a share of the cycle on each side
ED_WINDOW_FRACTION = 0.15
#: the curve's largest volume outside that window is reported when it exceeds the window's by this share
ED_DISAGREEMENT_FRACTION = 0.05
MIN_PHASES_FOR_CURVE = 5
#: the timing curve's minimum is flat where neighbouring phases lie within max(ES_TIE_ML, ES_TIE_FRACTION x the
#: minimum) of it: below that the smoothed mid-ventricular curve cannot tell them apart (Sunnybrook SCD0000101:
#: 124.69 / 124.71 mL at phases 8 / 9; its pixels resampled to 1.0 mm moved ES to phase 9, break 44b)
ES_TIE_ML = 1.0
ES_TIE_FRACTION = 0.01
#: how find_cardiac_phases chooses ED and ES, in the words of the report's Methods (a whole cycle)
TIMING_METHOD = (f"ED = largest LV volume within +/-{100 * ED_WINDOW_FRACTION:.0f} % of the cycle around the R-wave phase "
                 "(smallest TriggerTime; that phase or a neighbour), ES = smallest volume (on a minimum flat within "
                 f"max({ES_TIE_ML:.0f} mL, {100 * ES_TIE_FRACTION:.0f} %), the plateau's weighted middle), both on the "
                 "curve that times the cycle: one fixed set of mid-ventricular slices, per-slice median over 3 phases, "
                 "smoothed over neighbouring phases (summary.json cine.timing.smoothed_lv_curve_ml), not the all-slice "
                 "curve plotted")
#: how find_cardiac_phases begins its note where no TriggerTime times the phases (ED is then the largest volume)
UNTRIGGERED_START = "no usable TriggerTime: ED is the phase of the largest LV volume"
#: TIMING_METHOD where no TriggerTime gives the R-wave phase
TIMING_METHOD_UNTRIGGERED = ("ED = largest LV volume of the cycle (no TriggerTime gives the R-wave phase), ES = smallest "
                             f"volume (on a minimum flat within max({ES_TIE_ML:.0f} mL, {100 * ES_TIE_FRACTION:.0f} %), "
                             "the plateau's weighted middle), both on the curve that times the cycle: one fixed set of "
                             "mid-ventricular slices, per-slice median over 3 phases, smoothed over neighbouring phases "
                             "(summary.json cine.timing.smoothed_lv_curve_ml), not the all-slice curve plotted")


#: Longest interval between cine phases (ms) the LV function is measured without a caveat: SCMR standardized protocols
#: (Kramer CM et al., J Cardiovasc Magn Reson 2020;22:17, LV structure and function: "temporal resolution <= 45 ms
#: between phases"). Sunnybrook SCD (20 phases, 37-40 ms) stays under it; ACDC patient090's whole cine (12 frames,
#: no timing in the NIfTI; the node's DICOM of it assumes RR 1000 ms, 83 ms per phase, and 12 frames are >= 60 ms per
#: phase at any heart rate under 83 bpm) is over it, deliberately: its ES may fall between two frames.
MAX_PHASE_INTERVAL_MS = 45.0
#: an untimed cine (no TriggerTime) spans one cycle; at a heart rate of 80/min or slower (RR >= 750 ms, most CMR
#: patients at rest) fewer than this many phases are more than MAX_PHASE_INTERVAL_MS apart (750 / 16 = 47 ms)
UNTIMED_MIN_PHASES = 17
#: the RR interval (ms) that bound rests on, named in the caveat
UNTIMED_ASSUMED_RR_MS = 750.0
#: fewer phases than this are an ED + ES export (ED/ES chosen at acquisition), not a cine sampled too coarsely
MIN_PHASES_FOR_TEMPORAL_CHECK = 3


def phase_interval_ms(trigger_times) -> float | None:
    """Interval (ms) between consecutive phases, from one TriggerTime (0018,1060) per phase (None entries and
    repeats ignored), or None with fewer than two distinct times: the smaller of the median interval (a phase left
    out widens one interval only) and the mean interval (span / intervals: an uneven sampling is averaged), so the
    interval is never overstated. The unit is inferred from the cycle, as no RR lasts 5 s: trigger times all under 5
    are seconds, a time over 5000 is microseconds, otherwise milliseconds. Reconstructed (interpolated) phases count
    as phases: the acquired temporal resolution is not in the header."""
    if trigger_times is None:
        return None
    times = np.unique([float(t) for t in trigger_times if t is not None and np.isfinite(float(t))])
    if times.size < 2:
        return None
    scale = 1000.0 if times.max() < 5.0 else (0.001 if times.max() > 5000.0 else 1.0)
    steps = np.diff(times)
    return float(min(np.median(steps), steps.mean())) * scale


def temporal_resolution_note(trigger_times, n_phases: int, distinct_phases=None) -> str | None:
    """A caveat when the cine's phases lie more than MAX_PHASE_INTERVAL_MS apart (phase_interval_ms): true
    end-systole may fall between two phases, so ESV may be over- and EF under-estimated. Without trigger times the
    n_phases over one cycle are judged at UNTIMED_ASSUMED_RR_MS (under UNTIMED_MIN_PHASES: coarse at 80/min or
    slower). None for a fine enough cine and under MIN_PHASES_FOR_TEMPORAL_CHECK phases (an ED + ES export).
    distinct_phases (indices): where the other phases repeat or interpolate these (derived_phases), the resolution is
    that of the distinct phases (their TriggerTimes), and the note says how many of the phases sent they are."""
    if n_phases < MIN_PHASES_FOR_TEMPORAL_CHECK:
        return None
    sent = n_phases
    distinct = _distinct_indices(distinct_phases, n_phases) if n_phases >= MIN_PHASES_FOR_CURVE else None
    if distinct is not None:
        n_phases = len(distinct)
        if trigger_times is not None and len(trigger_times) == sent:
            trigger_times = [trigger_times[p] for p in distinct]
    phases = f"{n_phases} phases" if distinct is None else f"{n_phases} distinct phases of the {sent} sent"
    interval = phase_interval_ms(trigger_times)
    if interval is None:
        if n_phases >= UNTIMED_MIN_PHASES:
            return None
        measured = (f"{phases} without TriggerTime, {UNTIMED_ASSUMED_RR_MS / n_phases:.0f} ms per phase at a "
                    f"heart rate of {60000 / UNTIMED_ASSUMED_RR_MS:.0f}/min, more at slower rates")
    elif interval <= MAX_PHASE_INTERVAL_MS:
        return None
    else:
        measured = f"{phases}, {interval:.0f} ms per phase"
    return (f"coarse temporal resolution: {measured} (SCMR recommends <= {MAX_PHASE_INTERVAL_MS:.0f} ms): "
            "end-systole may be missed, so ESV may be over- and EF under-estimated")


#: RR spread between the slices of a cine (largest - smallest per-slice RR, as a share of the median) above which its
#: function is caveated as measured over beats of different length (rr_variation_note). Each slice of a breath-hold
#: cine is its own acquisition over its own beats, and its phases divide its own RR interval (TriggerTime / RR), while
#: systole keeps nearly the same length in ms (the QT interval changes with the square root of RR, Bazett HC, Heart
#: 1920;7:353-370, as ed_es_check's end of systole), so phase n is a later point of systole at a slice of short RR than
#: at one of long RR, and the volumes summed over slices at ED and ES mix points of the cycle. The node's own choice,
#: not a guideline figure: at 10 % (e.g. 900 against 1000 ms, 60 against 67 beats per minute) end-systole, about 35 %
#: of the cycle, moves by 2-4 % of the cycle between slices (Bazett / fixed ms), half a phase to one phase of a
#: 25-30 phase cine, the node's temporal-consistency step; the rest heart rate between breath-holds of a regular
#: rhythm mostly stays within it. Beyond it the rhythm is irregular (atrial fibrillation, ectopy) or the rate changed
#: during the scan, where SCMR's standardized protocols (Kramer CM et al., JCMR 2020;22:17) turn to arrhythmia
#: rejection or real-time cine.
RR_VARIATION_FRACTION = 0.10
#: how rr_variation_note begins
RR_VARIATION_START = "RR interval varies between slices: "


def rr_variation_note(slice_rr_ms) -> str | None:
    """A caveat where the RR interval of the cine's slices (`slice_rr_ms`: one per slice, ms, None where unknown:
    Volume.slice_rr_ms from NominalInterval (0018,1062), RRIntervalTimeNominal (0020,9251) or HeartRate (0018,1088))
    spreads by more than RR_VARIATION_FRACTION of its median, naming the range in ms and beats per minute; None with
    fewer than 2 slices of known RR (in 200-3000 ms, ed_es_check.RR_RANGE_MS) or a smaller spread."""
    known = [float(v) for v in (slice_rr_ms or ()) if v is not None and np.isfinite(float(v))
             and RR_PLAUSIBLE_MS[0] <= float(v) <= RR_PLAUSIBLE_MS[1]]
    if len(known) < 2:
        return None
    low, high, median = min(known), max(known), float(np.median(known))
    if high - low <= RR_VARIATION_FRACTION * median:
        return None
    return (f"{RR_VARIATION_START}{low:.0f}-{high:.0f} ms (heart rate {60000 / high:.0f}-{60000 / low:.0f}/min) over "
            f"{len(known)} slices, {100 * (high - low) / median:.0f} % of the median {median:.0f} ms (flagged above "
            f"{100 * RR_VARIATION_FRACTION:.0f} %): the slices were acquired over beats of different length, so a phase "
            "is not the same point of the cycle at every slice and EDV, ESV and EF sum slices at different points of "
            "systole and diastole; an irregular rhythm (arrhythmia, ectopic beats) or a changing heart rate, confirm "
            "by reading")


#: RR intervals (ms) taken from a header (heart rates 20-300 per minute), as ed_es_check.RR_RANGE_MS
RR_PLAUSIBLE_MS = (200.0, 3000.0)


@dataclass
class CardiacPhases:
    """ED/ES choice on a cine and the evidence for it (find_cardiac_phases)."""

    ed: int
    es: int
    trigger_phase: int
    curve_ml: list[float]  # LV volume per phase over the slices given (measure_cine: the fixed timing set)
    consistent_curve_ml: list[float]  # per-slice temporal median, summed
    smoothed_curve_ml: list[float]  # [1, 2, 1] / 4 smoothing of the consistent curve over the cycle (CycleNeighbours)
    flagged_phases: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: the phases RV EDV and RV ESV are read at (rv_cardiac_phases); None: not chosen yet (measure_cine chooses them)
    rv_ed: int | None = None
    rv_es: int | None = None

    def summary(self) -> dict:
        return {"ed_phase": self.ed, "es_phase": self.es, "trigger_phase": self.trigger_phase,
                "flagged_phases": list(self.flagged_phases),
                "smoothed_lv_curve_ml": [round(v, 2) for v in self.smoothed_curve_ml], "notes": list(self.notes),
                "rv_ed_phase": self.ed if self.rv_ed is None else self.rv_ed,
                "rv_es_phase": self.es if self.rv_es is None else self.rv_es}


def trigger_phase(trigger_times, n_phases: int, phase_numbers=None) -> tuple[int, str | None]:
    """Index of the R-wave phase: the smallest TriggerTime (0018,1060); phase 0 with a note when none is usable
    (phase_numbers: the acquisition phase number of each index, for the note, phase_text.phase_name)."""
    if trigger_times is not None and len(trigger_times) == n_phases:
        values = np.array([np.nan if t is None else float(t) for t in trigger_times])
        if np.isfinite(values).any():
            return int(np.nanargmin(values)), None
    return 0, f"no usable TriggerTime: {phase_name(0, phase_numbers)}, the first, taken as the R-wave (end-diastolic) phase"


@dataclass(frozen=True)
class CycleNeighbours:
    """Where the phases given lie on the cardiac cycle: `position` (phases,) 0-based place of each on a cycle of
    `cycle` phases, `previous` / `following` (phases,) the index of the phase one step before / after it on the
    cycle, -1 where that phase was not given (left out at every slice, or not acquired: the last phase given
    neighbours the first only where they are the cycle's last and first)."""

    position: np.ndarray
    cycle: int
    previous: np.ndarray
    following: np.ndarray

    @classmethod
    def of(cls, n_phases: int, phase_numbers=None, cycle_phases: int | None = None) -> "CycleNeighbours":
        """From the acquisition phase number (1-based) of each phase (cmr.types.Volume.acquisition_phase_numbers:
        a gap where a phase was left out) and the cycle's phases (Volume.acquired_phases); rising numbers are
        required, else (and for None) the phases are 1..n_phases of a whole cycle."""
        numbers = None if phase_numbers is None else [int(v) for v in phase_numbers]
        if (numbers is None or len(numbers) != n_phases or numbers[0] < 1
                or any(b <= a for a, b in zip(numbers, numbers[1:]))):
            numbers = list(range(1, n_phases + 1))
        position = np.asarray(numbers, dtype=np.int64) - 1
        cycle = max(int(cycle_phases or 0), int(position[-1]) + 1 if n_phases else 0)
        index = {int(p): i for i, p in enumerate(position)}
        previous = np.array([index.get(int((p - 1) % cycle), -1) for p in position], dtype=np.int64)
        following = np.array([index.get(int((p + 1) % cycle), -1) for p in position], dtype=np.int64)
        if n_phases < 3:  # with two phases each would be both neighbours of the other
            previous[:] = following[:] = -1
        return cls(position, cycle, previous, following)

    def judged(self) -> np.ndarray:
        """(phases,) whether each phase has both neighbours on the cycle, so that a jump from them can be told."""
        return (self.previous >= 0) & (self.following >= 0)

    def missing_beyond(self, phase: int) -> list[int]:
        """The 1-based cycle phases not given that lie next to `phase` (index) on either side, up to the nearest phase
        given: [] where both its neighbours were given."""
        given = {int(p) for p in self.position}
        missing = []
        for step in (-1, 1):
            at = int(self.position[phase])
            for _ in range(self.cycle - 1):
                at = (at + step) % self.cycle
                if at in given:
                    break
                missing.append(at + 1)
        return sorted(missing)

    def distance(self, a: int, b: int) -> int:
        """Steps between phases a and b (indices) on the cycle, either way round."""
        d = int(self.position[a] - self.position[b]) % self.cycle
        return min(d, self.cycle - d)

    def _stack(self, values: np.ndarray) -> np.ndarray:
        """(3, phases, ...) the values at the previous phase, the phase, the following phase; NaN where none."""
        def at(index: np.ndarray) -> np.ndarray:
            taken = values[np.maximum(index, 0)].astype(np.float64)
            taken[index < 0] = np.nan
            return taken
        return np.stack([at(self.previous), values.astype(np.float64), at(self.following)])

    def median3(self, values) -> np.ndarray:
        """Median over each phase and its neighbours on the cycle (those given), along axis 0 of `values`."""
        return np.nanmedian(self._stack(np.asarray(values, dtype=np.float64)), axis=0)

    def smooth121(self, values) -> np.ndarray:
        """[1, 2, 1] / 4 over each phase and its neighbours on the cycle, the weights of a neighbour not given left
        out (the sum renormalised)."""
        stacked = self._stack(np.asarray(values, dtype=np.float64))
        weights = np.array([1.0, 2.0, 1.0]).reshape((3,) + (1,) * (stacked.ndim - 1))
        weights = np.where(np.isnan(stacked), 0.0, weights)
        return np.nansum(stacked * weights, axis=0) / weights.sum(axis=0)


def temporal_jumps(slice_volumes_ml, phase_numbers=None, cycle_phases: int | None = None
                   ) -> tuple[np.ndarray, list[int]]:
    """(phases,) temporally consistent curve and the phases whose summed volume jumps from it, from volumes per
    (phase, slice) in mL of a cycle with at least MIN_PHASES_FOR_CURVE phases.

    Each slice's volume over the cycle is median-filtered over 3 neighbouring phases of the cycle and summed; a
    phase is a jump where its sum differs from that by more than max(JUMP_ML, JUMP_FRACTION x the largest consistent
    volume, what a clean cosine-shaped cycle loses to the median at its extremes). phase_numbers / cycle_phases:
    where the phases lie on the cycle (CycleNeighbours.of): a phase left out is no one's neighbour, and the last
    phase neighbours the first only where the cycle is whole; None: 1..phases of a whole cycle.
    """
    volumes = np.asarray(slice_volumes_ml, dtype=np.float64)
    cycle = CycleNeighbours.of(volumes.shape[0], phase_numbers, cycle_phases)
    judged = cycle.judged()
    # a phase with one neighbour (at an edge of a partial cycle) keeps its own volumes: a median of two values is
    # their mean, which a monotone systolic fall leaves behind as if the phase jumped
    consistent = np.where(judged[:, None], cycle.median3(volumes), volumes).sum(axis=1)
    # a clean cosine-shaped cycle loses (max - min) / 2 x (1 - cos(2 pi / n)) at its extremes under a 3-phase median
    shaving = (consistent.max() - consistent.min()) / 2.0 * (1.0 - np.cos(2.0 * np.pi / cycle.cycle))
    tolerance = max(JUMP_ML, JUMP_FRACTION * float(consistent.max()), float(shaving))
    jumps = (np.abs(volumes.sum(axis=1) - consistent) > tolerance) & judged
    return consistent, [int(p) for p in np.flatnonzero(jumps)]


#: RV EDV / ESV are read at the RV's own largest / smallest volume within this many phases of the LV's ED / ES
RV_PHASE_WINDOW = 1
#: how the note begins where the RV volume at the LV's ED or ES phase differs from the one reported (rv_phase_notes)
RV_PHASE_START = "RV volume at the LV's "
#: how measure_cine reads the RV volumes, in the words of the report's Methods (a cycle of MIN_PHASES_FOR_CURVE phases)
RV_TIMING_METHOD = (f"RV EDV / ESV = the RV's largest / smallest volume within {RV_PHASE_WINDOW} phase of the LV's ED / "
                    "ES (summary.json cine.timing.rv_ed_phase / rv_es_phase), so that a dip of the RV segmentation at "
                    "one phase does not decide them")


def rv_cardiac_phases(rv_curve_ml, ed: int, es: int, phase_numbers=None, cycle_phases: int | None = None,
                      distinct_phases=None) -> tuple[int, int]:
    """(RV ED, RV ES) phase indices: the phase of the RV's largest volume among the LV's ED phase and its neighbours
    within RV_PHASE_WINDOW phases on the cycle, and of its smallest among the LV's ES phase and its neighbours.

    Convention: ED is the phase of maximal ventricular volume and ES of minimal (shared/cmr-reference.md, "Cine SSFP"),
    applied to each ventricle's own curve; the window keeps both ventricles at one point of the cycle (the cycle is
    timed on the LV's mid-ventricular curve, find_cardiac_phases, sturdier than the RV's). The RV segmentation is
    less stable than the LV's, and a phase whose RV volume dips would otherwise set RV EDV alone: Sunnybrook
    SCD0000101 (break47a) read 74.2 / 87.2 / 92.3 mL at the LV's ED phase 20 for the same cine sent at 256², at 512²
    with each pixel copied and at 512² interpolated, RVEF 57 / 63 / 65 %; the RV's largest volume within one phase
    (phase 1, the R-wave phase) was 95.3 / 92.4 / 96.6 mL and the RVEF 68.0 / 67.5 / 67.8 %. A per-slice median or a
    smoothed RV curve read at ED did not help there (71.9 / 84.1 / 86.7 mL and 73.6 / 84.9 / 88.6 mL): the dip lasts
    two phases, and smoothing also shaves the true maximum. A single-phase spike could raise the maximum instead; the
    RV jump check (rv_timing_notes) names a phase read here whose volume jumps from its neighbours.
    rv_curve_ml (phases,): RV volume per phase, mL. phase_numbers / cycle_phases place the phases on the cycle
    (CycleNeighbours.of: a phase not given is no one's neighbour); distinct_phases: as find_cardiac_phases (the window
    steps over the distinct phases; a derived phase is not read). Under MIN_PHASES_FOR_CURVE phases (an ED + ES
    export, no cycle) the LV's phases are returned. Ties keep the LV's phase. Raises ValueError where ed or es lies
    outside the curve."""
    curve = np.asarray(rv_curve_ml, dtype=np.float64)
    n = curve.shape[0]
    if not (0 <= ed < n and 0 <= es < n):
        raise ValueError(f"ED/ES phases {ed}/{es} are outside the {n} phases of the RV curve")
    if n < MIN_PHASES_FOR_CURVE:
        return ed, es
    full = CycleNeighbours.of(n, phase_numbers, cycle_phases)
    distinct = _distinct_indices(distinct_phases, n)
    if distinct is None:
        phases, cycle = list(range(n)), full
    else:
        phases, cycle = distinct, CycleNeighbours.of(len(distinct), *_distinct_placement(distinct, full))

    def window(phase: int) -> list[int]:
        if phase not in phases:
            return [phase]
        at, found = phases.index(phase), [phase]
        for step in (cycle.previous, cycle.following):
            k = at
            for _ in range(RV_PHASE_WINDOW):
                k = int(step[k])
                if k < 0:
                    break
                found.append(phases[k])
        return found

    rv_ed = max(window(ed), key=lambda p: (curve[p], p == ed))
    rv_es = min(window(es), key=lambda p: (curve[p], p != es))
    return int(rv_ed), int(rv_es)


def rv_phase_notes(rv_curve_ml, ed: int, es: int, rv_ed: int, rv_es: int, phase_numbers=None) -> list[str]:
    """A note for each of RV EDV / ESV read at another phase than the LV's (rv_cardiac_phases) whose volume there
    differs from the RV volume at the LV's phase by more than max(JUMP_ML, JUMP_FRACTION x the RV's largest volume),
    the jump check's step: the RV segmentation changes steeply there, and the reader is told the volume at the LV's
    phase. [] otherwise. phase_numbers name the phases (phase_text.phase_name)."""
    curve = np.asarray(rv_curve_ml, dtype=np.float64)
    if curve.size == 0:
        return []
    tolerance = max(JUMP_ML, JUMP_FRACTION * float(curve.max()))
    notes = []
    for name, quantity, lv_phase, rv_phase, extreme in (("end-diastolic", "EDV", ed, rv_ed, "largest"),
                                                         ("end-systolic", "ESV", es, rv_es, "smallest")):
        difference = abs(float(curve[rv_phase] - curve[lv_phase]))
        if rv_phase == lv_phase or difference <= tolerance:
            continue
        notes.append(f"{RV_PHASE_START}{name} {phase_name(lv_phase, phase_numbers)} ({curve[lv_phase]:.1f} mL) differs "
                     f"by {difference:.1f} mL from RV {quantity} {curve[rv_phase]:.1f} mL, the RV's {extreme} volume "
                     f"within {RV_PHASE_WINDOW} phase, at {phase_name(rv_phase, phase_numbers)}: the RV segmentation "
                     f"changes steeply around {quantity[:2]}, review the RV contours at both phases")
    return notes


#: how the note on an RV volume jump at the phase RV EDV / ESV is read at begins (rv_timing_notes), followed by
#: "end-diastolic" / "end-systolic"
RV_JUMP_START = "RV volume jumps from its temporal neighbours at the "


def rv_timing_notes(rv_slice_volumes_ml, ed: int, es: int, phase_numbers=None,
                    cycle_phases: int | None = None, distinct_phases=None) -> tuple[list[int], list[str]]:
    """RV phases whose volume jumps from its temporal neighbours (temporal_jumps), and a note for each that is
    the ED or ES phase the RV volumes are read at (`ed` / `es`: rv_cardiac_phases, near the LV's; a jump in the RV
    segmentation there would otherwise go into RV EDV / ESV / EF unsaid). No check under MIN_PHASES_FOR_CURVE
    phases. phase_numbers: the acquisition phase number of each index, for the notes (phase_text.phase_name) and,
    with cycle_phases, the phases' places on the cycle (temporal_jumps). distinct_phases: as find_cardiac_phases
    (the phases that repeat or interpolate others are left out of the check)."""
    volumes = np.asarray(rv_slice_volumes_ml, dtype=np.float64)
    if volumes.ndim != 2 or volumes.shape[0] < MIN_PHASES_FOR_CURVE or not volumes.any():
        return [], []
    distinct = _distinct_indices(distinct_phases, volumes.shape[0])
    if distinct is None:
        consistent, flagged = temporal_jumps(volumes, phase_numbers, cycle_phases)
    else:
        placement = _distinct_placement(distinct, CycleNeighbours.of(volumes.shape[0], phase_numbers, cycle_phases))
        found, inner = temporal_jumps(volumes[distinct], *placement)
        consistent = np.full(volumes.shape[0], np.nan)
        consistent[distinct] = found
        flagged = [distinct[p] for p in inner]
    curve = volumes.sum(axis=1)
    notes = [f"{RV_JUMP_START}{name} {phase_name(phase, phase_numbers)}: RV {quantity} and RVEF "
             f"uncertain, review the RV contours ({curve[phase]:.1f} mL against {consistent[phase]:.1f} mL, the "
             f"per-slice median)"
             for name, quantity, phase in (("end-diastolic", "EDV", ed), ("end-systolic", "ESV", es)) if phase in flagged]
    return flagged, notes


def find_cardiac_phases(lv_slice_volumes_ml, trigger_times=None, reported_curve_ml=None,
                        phase_numbers=None, cycle_phases: int | None = None,
                        distinct_phases=None) -> CardiacPhases:
    """ED and ES phases from LV volumes per (phase, slice), in mL.

    1. Temporal consistency: each slice's volume over the cycle is median-filtered over 3 neighbouring phases
       of the cycle; a phase whose summed volume differs from the filtered sum by more than
       max(JUMP_ML, JUMP_FRACTION x largest volume, the cosine-cycle shaving) is flagged (a segmentation jump)
       and is not chosen.
    2. The filtered curve is smoothed over the cycle with [1, 2, 1] / 4.
    3. ED: without a usable TriggerTime, the largest smoothed volume among the unflagged phases (the first phase
       sent need not be the R-wave phase); else the largest among those within ED_WINDOW_FRACTION of the cycle around the
       R-wave phase (smallest TriggerTime, the DICOM/ECG end-diastole): the R-wave phase itself or a neighbour, e.g.
       the late-diastolic phase just before the next R wave; a larger volume outside the window is reported, and so
       is a window phase that holds more volume than ED on the reported curve (`reported_curve_ml`).
    4. ES: the smallest smoothed volume among the unflagged phases; where the reported curve is smaller at another
       phase (one the timing curve puts higher, or a flagged one), a note names it with the ESV and LVEF read there
       (_reported_es_note), as the plotted curve's minimum is then not ES.
    With fewer than MIN_PHASES_FOR_CURVE phases: ED = largest, ES = smallest measured volume.
    `reported_curve_ml` (phases,): the LV curve the results report (measure_cine: the basal rule over every slice),
    quoted by the notes on flagged phases beside the volumes of the slices given, which the jump was found on; it
    does not change the choice. `phase_numbers` (phases,): the acquisition phase number of each index
    (cmr.types.Volume.acquisition_phase_numbers), so the notes name phases as a viewer does; None: index + 1.
    With `cycle_phases` (Volume.acquired_phases) they also place the phases on the cycle (CycleNeighbours): the
    median, the smoothing and the ED window count steps of the cycle, so a phase left out is no one's neighbour and
    the last phase neighbours the first only where the cycle is whole. A phase with a neighbour on one side only (at
    an edge of a partial cycle) cannot be judged for a jump and is not flagged (temporal_jumps); where ED or ES lies
    at such an edge, next to phases of the cycle not sent, a note says that the true ED or ES may lie among them
    (PARTIAL_CYCLE_EDGE_START).
    `distinct_phases` (indices, rising): the phases that hold an acquisition of their own where the others repeat or
    interpolate their pixel data (derived_phases.DerivedPhases.distinct, e.g. 48 phases of which 12 distinct): steps
    1-4 run over the distinct phases alone, as over a cine of those phases, and the results are given over all
    phases (a derived phase carrying the timing curves' value of the distinct phase it follows); None: every phase.
    Raises ValueError for an empty or non-2-D input.
    """
    volumes = np.asarray(lv_slice_volumes_ml, dtype=np.float64)
    if volumes.ndim != 2 or volumes.shape[0] == 0 or volumes.shape[1] == 0:
        raise ValueError(f"LV volumes must be (phases, slices), got shape {volumes.shape}")
    n = volumes.shape[0]
    full = CycleNeighbours.of(n, phase_numbers, cycle_phases)
    distinct = _distinct_indices(distinct_phases, n)
    if distinct is None:
        found = _find_cardiac_phases(volumes, trigger_times, reported_curve_ml, phase_numbers,
                                     (phase_numbers, cycle_phases))
        groups = {p: [p] for p in range(n)}
    else:
        names = [phase_number(p, phase_numbers) for p in distinct]
        times = None if trigger_times is None or len(trigger_times) != n else [trigger_times[p] for p in distinct]
        reported = None if reported_curve_ml is None else np.asarray(reported_curve_ml, dtype=np.float64)[distinct]
        inner = _find_cardiac_phases(volumes[distinct], times, reported, names, _distinct_placement(distinct, full))
        groups = _distinct_groups(distinct, n)
        owner = np.empty(n, dtype=np.int64)
        for k, p in enumerate(distinct):
            owner[groups[p]] = k
        found = CardiacPhases(distinct[inner.ed], distinct[inner.es], distinct[inner.trigger_phase],
                              volumes.sum(axis=1).tolist(), np.asarray(inner.consistent_curve_ml)[owner].tolist(),
                              np.asarray(inner.smoothed_curve_ml)[owner].tolist(),
                              [distinct[p] for p in inner.flagged_phases], list(inner.notes))
    if n >= MIN_PHASES_FOR_CURVE:  # fewer phases are an export of chosen phases (ed_es_check), not a cycle cut short
        found.notes += partial_cycle_edge_notes(found.ed, found.es, full, groups, phase_numbers)
    return found


def _distinct_indices(distinct_phases, n: int) -> list[int] | None:
    """The distinct phases as rising indices where they are a proper subset of the n phases that still makes a curve
    (MIN_PHASES_FOR_CURVE), else None (every phase counts)."""
    if distinct_phases is None:
        return None
    distinct = sorted({int(p) for p in distinct_phases if 0 <= int(p) < n})
    return distinct if MIN_PHASES_FOR_CURVE <= len(distinct) < n else None


def _distinct_groups(distinct: list[int], n: int) -> dict[int, list[int]]:
    """Each distinct phase with the derived phases that follow it up to the next distinct one (those before the first
    distinct phase follow the last, as the cycle wraps)."""
    groups = {p: list(range(p, q)) for p, q in zip(distinct, distinct[1:] + [n])}
    groups[distinct[-1]] += list(range(0, distinct[0]))
    return groups


def _distinct_placement(distinct: list[int], full: CycleNeighbours) -> tuple[list[int], int]:
    """(phase numbers, cycle phases) placing the distinct phases on a cycle of their own (CycleNeighbours.of): two
    consecutive distinct phases are neighbours where every phase between them was given (`full`: all phases on the
    acquisition's cycle), and the last neighbours the first only where the phases after it wrap round to the first."""
    n = len(full.position)

    def connected(start: int, stop: int) -> bool:  # every index from start to stop (exclusive) followed by the next
        return all(full.following[i] == (i + 1) % n for i in range(start, stop))

    numbers = [1]
    for a, b in zip(distinct, distinct[1:]):
        numbers.append(numbers[-1] + (1 if connected(a, b) else 2))
    wraps = connected(distinct[-1], n) and connected(0, distinct[0])
    return numbers, numbers[-1] if wraps else numbers[-1] + 1


#: how the note on an ED or ES next to phases of the cycle that were not sent begins (partial_cycle_edge_notes)
PARTIAL_CYCLE_EDGE_START = "partial cardiac cycle: "


def partial_cycle_edge_notes(ed: int, es: int, cycle: CycleNeighbours, groups=None, numbers=None) -> list[str]:
    """The notes where ED or ES (indices) lies next to phases of the cycle that were not sent (CycleNeighbours:
    phases left out at every slice, or not in the export, where CardiacNumberOfImages declares more): the volume
    curve may go on rising (ED) or falling (ES) into them, so the true ED or ES may lie there, and the phase at the
    edge could not be checked for a segmentation jump (one neighbour). `groups`: each phase with the phases that repeat
    or interpolate it (_distinct_groups; None: each alone), whose missing neighbours count as its own; `numbers`:
    the acquisition phase number of each index (phase_text.phase_name)."""
    notes = []
    for what, phase, quantity in (("end-diastole", ed, "EDV"), ("end-systole", es, "ESV")):
        members = (groups or {}).get(phase, [phase])
        missing = sorted({m for member in members for m in cycle.missing_beyond(member)})
        if not missing:
            continue
        notes.append(f"{PARTIAL_CYCLE_EDGE_START}{what} taken at {phase_name(phase, numbers)}, next to cardiac "
                     f"{_numbers_text(missing)} of the {cycle.cycle} of the cycle, which were not sent: "
                     f"the true {what} may lie among them, so {quantity}, SV and EF are uncertain ({phase_name(phase, numbers)} "
                     "has a neighbour on one side only and could not be checked for a segmentation jump)")
    return notes


def _numbers_text(numbers: list[int]) -> str:
    """"phase 9", "phases 9-12", "phases 1, 11 and 12" for 1-based phase numbers."""
    if len(numbers) == 1:
        return f"phase {numbers[0]}"
    if numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"phases {numbers[0]}-{numbers[-1]}"
    return f"phases {', '.join(map(str, numbers[:-1]))} and {numbers[-1]}"


def _find_cardiac_phases(volumes: np.ndarray, trigger_times, reported_curve_ml, numbers,
                         placement: tuple) -> CardiacPhases:
    """find_cardiac_phases steps 1-4 on (phases, slices) LV volumes; `numbers`: the phase numbers the notes name,
    `placement`: (phase numbers, cycle phases) placing the phases on the cycle (CycleNeighbours.of)."""
    n = volumes.shape[0]
    curve = volumes.sum(axis=1)
    trigger, note = trigger_phase(trigger_times, n, numbers)
    notes = [note] if note else []
    if n < MIN_PHASES_FOR_CURVE:
        ed = int(np.argmax(curve))
        es = int(np.argmin(curve))
        if n > 1 and ed == es:
            es = (ed + 1) % n
        notes = [_untriggered_note(ed, numbers)] if note else []
        return CardiacPhases(ed, es, trigger, curve.tolist(), curve.tolist(), curve.tolist(), [],
                             notes + [f"{n} phases: ED = largest, ES = smallest LV volume (no curve to smooth)"])
    consistent, flagged = temporal_jumps(volumes, *placement)
    cycle = CycleNeighbours.of(n, *placement)
    smoothed = cycle.smooth121(consistent)
    notes += [_flagged_note(phase, curve, consistent, reported_curve_ml, numbers) for phase in flagged]
    usable = [p for p in range(n) if p not in flagged] or list(range(n))
    half_window = max(1, int(round(ED_WINDOW_FRACTION * cycle.cycle)))
    if note:
        # no TriggerTime: the first phase is a guess at the R wave (an export may start anywhere in the cycle), so
        # ED is the phase of the largest LV volume (shared/cmr-reference.md), not the largest near the guess
        ed = max(usable, key=lambda p: smoothed[p])
        notes[notes.index(note)] = _untriggered_note(ed, numbers)
        candidates = [p for p in usable if p != ed] or [p for p in range(n) if p != ed]
        es, es_notes = _end_systole(candidates, smoothed, cycle, reported_curve_ml, numbers, ed)
        es_notes += _reported_es_note(es, ed, candidates, flagged, smoothed, cycle, reported_curve_ml, numbers,
                                      bool(es_notes))
        return CardiacPhases(int(ed), int(es), trigger, curve.tolist(), consistent.tolist(), smoothed.tolist(), flagged,
                             notes + es_notes)
    window = [p for p in usable if cycle.distance(p, trigger) <= half_window]
    if not window:
        window = [p for p in range(n) if cycle.distance(p, trigger) <= half_window]
        notes.append("every phase near the R-wave is flagged; ED chosen among them anyway")
    ed = max(window, key=lambda p: smoothed[p])
    largest = max(usable, key=lambda p: smoothed[p])
    if smoothed[largest] > smoothed[ed] * (1 + ED_DISAGREEMENT_FRACTION):
        notes.append(f"largest LV volume at {phase_name(largest, numbers)} lies outside the end-diastolic window "
                     f"around the R-wave {phase_name(trigger, numbers)}; ED kept at {phase_name(ed, numbers)} (smoothed curve of the timing slices: "
                     f"{smoothed[largest]:.1f} mL against {smoothed[ed]:.1f} mL)")
    if reported_curve_ml is not None:
        notes += _reported_curve_note(ed, trigger, window, smoothed, reported_curve_ml, numbers)
    candidates = [p for p in usable if p != ed] or [p for p in range(n) if p != ed]
    es, es_notes = _end_systole(candidates, smoothed, cycle, reported_curve_ml, numbers, ed)
    es_notes += _reported_es_note(es, ed, candidates, flagged, smoothed, cycle, reported_curve_ml, numbers,
                                  bool(es_notes))
    return CardiacPhases(int(ed), int(es), trigger, curve.tolist(), consistent.tolist(), smoothed.tolist(), flagged,
                         notes + es_notes)


#: the LVEF range (points) over an end-systolic plateau from which _end_systole notes it
ES_PLATEAU_NOTE_EF = 1.0
#: how the note on an ES chosen among phases the timing curve cannot tell apart begins (_end_systole)
ES_PLATEAU_START = "end-systolic plateau: "


def end_systolic_plateau(candidates, smoothed, cycle: CycleNeighbours) -> list[int]:
    """The phases (indices, in cycle order) of the run around the timing curve's smallest value among `candidates`
    whose smoothed volume lies within max(ES_TIE_ML, ES_TIE_FRACTION x that minimum) of it, consecutive on the cycle
    (CycleNeighbours); one phase where the minimum is clear."""
    allowed = set(int(p) for p in candidates)
    lowest = min(allowed, key=lambda p: (smoothed[p], p))
    tolerance = max(ES_TIE_ML, ES_TIE_FRACTION * float(smoothed[lowest]))

    def tied(p: int) -> bool:
        return p >= 0 and p in allowed and smoothed[p] - smoothed[lowest] <= tolerance

    before, after = [], []
    p = int(cycle.previous[lowest])
    while tied(p) and p != lowest and p not in before:
        before.append(p)
        p = int(cycle.previous[p])
    p = int(cycle.following[lowest])
    while tied(p) and p != lowest and p not in before and p not in after:
        after.append(p)
        p = int(cycle.following[p])
    return before[::-1] + [lowest] + after


def _end_systole(candidates, smoothed, cycle: CycleNeighbours, reported_curve_ml=None, numbers=None,
                 ed: int | None = None) -> tuple[int, list[str]]:
    """ES (find_cardiac_phases step 4) and its note: the smallest smoothed timing volume among `candidates`; where
    phases next to it lie within the curve's noise of it (end_systolic_plateau), the phase of that plateau nearest
    its centre, each phase weighted by the square of how far it lies below the tolerance: a sub-phase estimate of the
    minimum (ES = the phase of minimal LV volume, shared/cmr-reference.md) that moves with the plateau's shape, not
    with which of two phases is a fraction of a mL lower (Sunnybrook SCD0000101, timing curve 125.79 / 124.69 /
    124.71 mL at phases 7-9: phase 8 either way round). Weighted linearly, the centre moved SCD0000301's ES (a
    1.0 mL-flat bottom over five phases) one phase past the expert's; squared, the four whole cines of the evaluation
    keep their ES. A note gives the plateau, the LV volume the reported curve holds over it and the LVEF range with
    ED's (ed) reported volume, where that spans ES_PLATEAU_NOTE_EF points or more."""
    plateau = end_systolic_plateau(candidates, smoothed, cycle)
    if len(plateau) == 1:
        return plateau[0], []
    lowest = min(smoothed[p] for p in plateau)
    weight = [(max(ES_TIE_ML, ES_TIE_FRACTION * lowest) - (smoothed[p] - lowest)) ** 2 for p in plateau]
    centre = sum(k * w for k, w in enumerate(weight)) / sum(weight)
    es = plateau[min(range(len(plateau)), key=lambda k: (abs(k - centre), smoothed[plateau[k]]))]
    if reported_curve_ml is None:
        return es, []
    reported = [float(reported_curve_ml[p]) for p in plateau]
    edv = float(reported_curve_ml[ed]) if ed is not None else 0.0
    if edv <= max(reported) or 100.0 * (max(reported) - min(reported)) / edv < ES_PLATEAU_NOTE_EF:
        return es, []
    spread = max(smoothed[p] for p in plateau) - lowest
    efs = [ejection_fraction_percent(edv, v) for v in (max(reported), min(reported))]
    return es, [f"{ES_PLATEAU_START}the curve that times the cycle is flat from {phase_name(plateau[0], numbers)} to "
                f"{phase_number(plateau[-1], numbers)} (within {spread:.1f} mL), ES taken at {phase_name(es, numbers)}, "
                f"its weighted middle; the LV volume reported over these phases is {min(reported):.1f}-"
                f"{max(reported):.1f} mL (ESV {float(reported_curve_ml[es]):.1f} mL at ES), LVEF {efs[0]:.1f}-"
                f"{efs[1]:.1f} % with the EDV: ESV and EF depend on the phase chosen among them"]


def _untriggered_note(ed: int, numbers=None) -> str:
    return f"{UNTRIGGERED_START}, {phase_name(ed, numbers)} (the R-wave phase cannot be told from the images)"


#: the least difference (mL) between the reported LV curve at another phase of the ED window and at ED for which
#: _reported_curve_note explains it: below it the plotted points are alike to the eye (Sunnybrook SCD0000301: 0.5 mL)
REPORTED_CURVE_NOTE_ML = 1.0


def _reported_curve_note(ed: int, trigger: int, window, smoothed, reported_curve_ml, numbers=None) -> list[str]:
    """The note where the LV curve the results report (every slice, basal rule per phase) holds more volume at another
    phase of the ED window than at the ED chosen on the timing curve (find_cardiac_phases step 3), so that a reader
    of the plotted curve sees why its largest point near the R wave is not ED; [] where it does not, or by less than
    REPORTED_CURVE_NOTE_ML."""
    reported = np.asarray(reported_curve_ml, dtype=np.float64)
    others = [p for p in window if p != ed]
    if not others:
        return []
    larger = max(others, key=lambda p: reported[p])
    if reported[larger] - reported[ed] < REPORTED_CURVE_NOTE_ML:
        return []
    r_wave = "the R-wave phase" if ed == trigger else f"the R-wave phase is {phase_name(trigger, numbers)}"
    return [f"ED at {phase_name(ed, numbers)} ({r_wave}): the largest LV volume near the R wave on the curve that "
            f"times the cycle (mid-ventricular slices, smoothed; {smoothed[ed]:.1f} mL against "
            f"{smoothed[larger]:.1f} mL at {phase_name(larger, numbers)}), while the all-slice LV curve reported is "
            f"larger at {phase_name(larger, numbers)} ({reported[larger]:.1f} against {reported[ed]:.1f} mL): EDV is "
            f"read at {phase_name(ed, numbers)}"]


#: how the note on an ES that is not the smallest volume of the reported LV curve begins and ends (_reported_es_note)
REPORTED_ES_START = "ES at "
CONFIRM_ES_END = "confirm ES on the images"


def _reported_es_note(es: int, ed: int, candidates, flagged, smoothed, cycle: CycleNeighbours, reported_curve_ml,
                      numbers=None, plateau_noted: bool = False) -> list[str]:
    """The note where the LV curve the results report (every slice, basal rule per phase: the curve plotted) holds
    less volume at another phase than at the ES chosen on the timing curve (find_cardiac_phases step 4), by
    REPORTED_CURVE_NOTE_ML or more, so that a reader of the plotted curve sees why its smallest point is not ES: a
    phase the timing may choose (`candidates`) whose timing volume is larger than ES's, or a phase left out as a jump
    (`flagged`, with its own note), each with the ESV and LVEF (with ED's reported volume) that reading ES there would
    give. Phases of an end-systolic plateau already noted (`plateau_noted`: _end_systole's note) are left to that
    note. [] where the reported curve is smallest at ES, or without it (None)."""
    if reported_curve_ml is None:
        return []
    reported = np.asarray(reported_curve_ml, dtype=np.float64)
    noted = set(end_systolic_plateau(candidates, smoothed, cycle)) if plateau_noted else set()
    lower = [p for p in range(len(reported)) if p not in (es, ed) and p not in noted
             and reported[es] - reported[p] >= REPORTED_CURVE_NOTE_ML]
    if not lower:
        return []
    jumps = sorted((p for p in lower if p in flagged), key=lambda p: reported[p])
    timed = sorted((p for p in lower if p not in flagged), key=lambda p: reported[p])
    edv = float(reported[ed])

    def reading(p: int) -> str:
        ef = ejection_fraction_percent(edv, float(reported[p])) if edv > reported[p] else None
        return f"{number_text(reported[p])} mL" + ("" if ef is None else f", LVEF {number_text(ef)} %")

    parts = [f"at {phase_name(p, numbers)} ({number_text(reported[p])} against {number_text(reported[es])} mL at "
             f"ES; the curve that times the cycle holds {number_text(smoothed[p])} mL there)" for p in timed[:1]]
    # next to ES, a phase whose volume drops alone may be the true end-systole, sampled once at a coarse resolution
    parts += [f"at {phase_name(p, numbers)} ({number_text(reported[p])} mL), left out as a jump from its temporal "
              "neighbours (its note)" + (": a segmentation fault or a short end-systolic minimum that one phase samples"
                                         if cycle.distance(p, es) <= 1 else "") for p in jumps]
    readings = "; ".join(f"at {phase_name(p, numbers)}: ESV {reading(p)}" for p in timed[:1] + jumps)
    return [f"{REPORTED_ES_START}{phase_name(es, numbers)}: the smallest LV volume on the curve that times the cycle "
            f"(mid-ventricular slices, per-slice median over 3 phases, smoothed: {number_text(smoothed[es])} mL) "
            "among the phases not left out as a jump; the all-slice LV curve reported is smaller " + " and ".join(parts)
            + f". ESV is read at {phase_name(es, numbers)} ({reading(es)}); read {readings}: {CONFIRM_ES_END}"]


def _flagged_note(phase: int, curve, consistent, reported_curve_ml=None, numbers=None) -> str:
    """The note on a phase whose LV volume jumps, quoting the reported curve (the one the report plots) where given,
    and the volumes of the slices the jump was found on."""
    if reported_curve_ml is None:
        return (f"{phase_name(phase, numbers)}: LV volume {curve[phase]:.1f} mL jumps from its temporal neighbours "
                f"(per-slice median {consistent[phase]:.1f} mL); not used as ED or ES")
    return (f"{phase_name(phase, numbers)}: LV volume {float(reported_curve_ml[phase]):.1f} mL jumps from its temporal "
            f"neighbours (found on the slices that time the cycle: {curve[phase]:.1f} mL there against their per-slice "
            f"median {consistent[phase]:.1f} mL); not used as ED or ES")


def ejection_fraction_percent(edv_ml: float, esv_ml: float) -> float | None:
    """EF = (EDV - ESV) / EDV x 100; None when EDV is zero."""
    if edv_ml < 0 or esv_ml < 0:
        raise ValueError(f"volumes must be non-negative, got EDV {edv_ml}, ESV {esv_ml}")
    if edv_ml == 0:
        return None
    return (edv_ml - esv_ml) / edv_ml * 100.0


def myocardial_mass_g(labelmap: np.ndarray, voxel_volume_ml, density_g_per_ml: float = DEFAULT_DENSITY_G_PER_ML) -> float:
    """LV mass = whole LV myocardium volume (healthy + scar + MVO labels) x density; labelmap (slices, rows, cols),
    voxel_volume_ml one value or one per slice (mL)."""
    if density_g_per_ml <= 0:
        raise ValueError(f"myocardial density must be positive, got {density_g_per_ml}")
    voxel = _voxel_volumes(voxel_volume_ml)
    labelmap = np.asarray(labelmap)
    myocardium = np.isin(labelmap, [int(v) for v in MYOCARDIUM_LABELS])
    if np.ndim(voxel) == 0:
        return int(myocardium.sum()) * voxel * density_g_per_ml
    return float((myocardium.reshape(labelmap.shape[0], -1).sum(axis=1) * voxel).sum()) * density_g_per_ml


#: plausible ranges for BSA inputs; outside them the header value is wrong (e.g. PatientSize in cm), not the patient
HEIGHT_RANGE_M = (0.3, 2.8)
WEIGHT_RANGE_KG = (1.0, 500.0)


#: the units a height or weight entered in the wrong unit is recognised in, by magnitude: (unit, its words, the
#: factor to m / kg); a value in none of them (e.g. a height of 290) is named implausible without a unit
HEIGHT_UNITS = (("cm", "centimetres", 0.01), ("mm", "millimetres", 0.001))
WEIGHT_UNITS = (("g", "grams", 0.001),)


def recognised_unit(keyword: str, value) -> tuple[float, str] | None:
    """A PatientSize (`keyword`) or PatientWeight outside its plausible range in m / kg (HEIGHT_RANGE_M,
    WEIGHT_RANGE_KG) read in the unit its magnitude says it was entered in (HEIGHT_UNITS, WEIGHT_UNITS: 130 ->
    (1.30, "centimetres"), 1750 -> (1.75, "millimetres"), 25000 -> (25.0, "grams")); None for a plausible value,
    one in no such unit, or not a number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    low, high = HEIGHT_RANGE_M if keyword == "PatientSize" else WEIGHT_RANGE_KG
    if not math.isfinite(number) or low < number < high:
        return None
    for _, words, factor in (HEIGHT_UNITS if keyword == "PatientSize" else WEIGHT_UNITS):
        if low < number * factor < high:
            return number * factor, words
    return None


def size_weight_problem(keyword: str, value: float) -> tuple[str, str] | None:
    """(what, why) where a PatientSize (m) or PatientWeight (kg) `value` cannot enter a BSA: ("height 130 m", "it
    looks like centimetres; PatientSize is in metres") for a value in another unit (recognised_unit), else ("weight
    0 kg", "PatientWeight 0 kg is not between 1 and 500 kg (both excluded)"); None for a plausible value."""
    height = keyword == "PatientSize"
    low, high = HEIGHT_RANGE_M if height else WEIGHT_RANGE_KG
    unit = " m" if height else " kg"
    if low < value < high:
        return None
    what = f"{'height' if height else 'weight'} {value:g}{unit}"
    other = recognised_unit(keyword, value)
    if other is not None:
        return what, f"it looks like {other[1]}; {keyword} is in {'metres' if height else 'kilograms'}"
    return what, f"{keyword} {value:g}{unit} is not between {low:g} and {high:g}{unit} (both excluded)"


def body_surface_area_m2(height_m: float, weight_kg: float, formula: BsaFormula = "mosteller") -> float:
    """Body surface area in m² from height (m, DICOM PatientSize (0010,1020)) and weight (kg, PatientWeight).

    Mosteller: sqrt(H[cm] x W[kg] / 3600) (Mosteller RD, N Engl J Med 1987;317:1098).
    DuBois: 0.007184 x W^0.425 x H[cm]^0.725 (DuBois D, DuBois EF, Arch Intern Med 1916;17:863).
    Raises ValueError for a height or weight outside HEIGHT_RANGE_M / WEIGHT_RANGE_KG (size_weight_problem: naming a
    height that looks like centimetres or millimetres and a weight that looks like grams) and for an unknown formula.
    The one BSA implementation of the node (SR and report use it).
    """
    implausible = [problem for problem in (size_weight_problem("PatientSize", height_m),
                                           size_weight_problem("PatientWeight", weight_kg)) if problem]
    if implausible:
        raise ValueError(f"implausible {' / '.join(w for w, _ in implausible)} for BSA: "
                         f"{'; '.join(why for _, why in implausible)}")
    height_cm = height_m * 100.0
    if formula == "mosteller":
        return math.sqrt(height_cm * weight_kg / 3600.0)
    if formula == "dubois":
        return 0.007184 * weight_kg ** 0.425 * height_cm ** 0.725
    raise ValueError(f"unknown BSA formula {formula!r} (mosteller | dubois)")


def other_bsa_m2(size_weight_held, used_bsa_m2: float | None, formula: BsaFormula = "mosteller") -> float | None:
    """Where the study's images disagree on PatientSize / PatientWeight (cmr PatientInfo.size_weight_held: the
    distinct (height m, weight kg) pairs its images hold): the BSA (m², body_surface_area_m2 with `formula`) of the
    pair farthest from `used_bsa_m2`, the BSA the indexed values were computed with; None where no other pair gives
    a plausible BSA that differs from it, or without a BSA used (break48b #4)."""
    if used_bsa_m2 is None:
        return None
    others = []
    for height, weight in size_weight_held or []:
        try:
            others.append(body_surface_area_m2(float(height), float(weight), formula))
        except (TypeError, ValueError):
            continue
    farthest = max(others, key=lambda bsa: abs(bsa - used_bsa_m2), default=None)
    return None if farthest is None or round(farthest, 3) == round(used_bsa_m2, 3) else farthest


def normal_range(key: str, sex: Sex) -> tuple[float, float]:
    """(low, high) of NORMAL_VALUES[key] for one sex: its "limits" where given (high may be inf), else mean ± 2 SD."""
    spec = NORMAL_VALUES[key]
    if "limits" in spec:
        return spec["limits"][sex]
    mean, sd = spec[sex]
    return mean - NORMAL_RANGE_SD * sd, mean + NORMAL_RANGE_SD * sd


def range_text(key: str, sex: Sex) -> str:
    """One sex's normal range of NORMAL_VALUES[key] in words, with the unit: "106–214 mL", or "> 45 %" for a lower
    limit only (the limit itself is abnormal, normal_range_flags)."""
    low, high = normal_range(key, sex)
    unit = NORMAL_VALUES[key]["unit"]
    return f"> {low:g} {unit}" if math.isinf(high) else f"{low:g}–{high:g} {unit}"


#: the card quantity whose cross-validated agreement with expert readers gives each judged quantity's known error
#: (known_errors; read by dicomnode.analysis.cine.function_validation_from_card): an indexed value (per m² BSA) has
#: the error of its unindexed volume or mass divided by the patient's BSA, as BSA comes from the header, not the model
ERROR_QUANTITY = {"lv_edv_ml": "lv_edv_ml", "lv_edvi_ml_m2": "lv_edv_ml", "lv_esv_ml": "lv_esv_ml",
                  "lv_ef_percent": "lv_ef_percent", "lv_mass_index_g_m2": "lv_mass_g", "rv_edvi_ml_m2": "rv_edv_ml",
                  "rv_ef_percent": "rv_ef_percent"}
#: the quantity the stroke-volume check compares (LV SV - RV SV, mL), and the key of its known error
SV_DIFFERENCE = "lv_rv_sv_difference_ml"
#: how a flag within the model's known error of its limit reads, after the quantity and the limit
NEAR_TEXT = "within the model's known error: confirm by reading"


def known_errors(validation: dict | None, bsa_m2: float | None = None) -> dict[str, dict]:
    """Each judged quantity's known error, in its own unit, from the model card's agreement with expert readers:
    `validation` {card quantity (ERROR_QUANTITY's values, SV_DIFFERENCE): {"n", "mae", "mean_error", "sd_error",
    "card_metric", "data", "source"}} (dicomnode.analysis.cine.function_validation_from_card; None: no model, no errors).
    Returns {NORMAL_VALUES key or SV_DIFFERENCE: {"data", "patients", "card_metric", "source", "unit", "mae", "bias",
    "sd"}, and
    "per_bsa_m2" for an indexed one: the card's mL or g error divided by `bsa_m2`}; a quantity without a card block
    (or an indexed one without a BSA) is left out: its flag is judged without it."""
    errors = {}
    wanted = {**ERROR_QUANTITY, SV_DIFFERENCE: SV_DIFFERENCE}
    for key, quantity in wanted.items():
        block = (validation or {}).get(quantity)
        if not isinstance(block, dict) or not isinstance(block.get("mae"), (int, float)):
            continue
        indexed = key != quantity
        if indexed and not (bsa_m2 and bsa_m2 > 0):
            continue
        scale = 1.0 / bsa_m2 if indexed else 1.0
        errors[key] = {"data": block.get("data"), "patients": block.get("n"), "card_metric": block.get("card_metric"),
                       "source": block.get("source"),
                       "unit": NORMAL_VALUES[key]["unit"] if key in NORMAL_VALUES else "mL",
                       "mae": float(block["mae"]) * scale, "bias": float(block.get("mean_error") or 0.0) * scale,
                       "sd": None if block.get("sd_error") is None else float(block["sd_error"]) * scale,
                       **({"per_bsa_m2": bsa_m2} if indexed else {})}
    return errors


def _systematic(error: dict) -> float:
    """The known error's bias that the flag rule subtracts (model_error.systematic_bias)."""
    return systematic_bias(error.get("bias"), error.get("sd"), error.get("patients"))


def error_text(error: dict, name: str) -> str:
    """The model's known error of one quantity in words, for a flag: "this model's RVEF vs expert readers: bias -5.0,
    mean abs. error 9.3 points (ACDC cross-validation, 100 patients)"; "the cine_unet model's" where the block is
    another model's (cine.validation_with_fallback), and "(chance: not applied)" after a bias the rule does not
    subtract (model_error.systematic_bias)."""
    unit = "points" if error["unit"] == "%" else error["unit"]
    per_bsa = f" at BSA {error['per_bsa_m2']:.2f} m²" if error.get("per_bsa_m2") else ""
    data = ", ".join(str(part) for part in (error.get("data"), f"{error['patients']} patients"
                                            if error.get("patients") else None) if part)
    other = str(error.get("card_metric") or "").split(" card: ")
    if len(other) > 1:  # another model's error size stands in (its bias is not this model's)
        return (f"the {other[0]} model's {name} vs expert readers: mean abs. error {error['mae']:.1f} {unit}{per_bsa}"
                + (f" ({data})" if data else ""))
    applied = "" if _systematic(error) or not error["bias"] else " (chance: not applied)"
    return (f"this model's {name} vs expert readers: bias {error['bias']:+.1f}{applied}, mean abs. error "
            f"{error['mae']:.1f} {unit}{per_bsa}" + (f" ({data})" if data else ""))


def normal_range_flags(values: dict[str, float | None], sex: str | None,
                       errors: dict[str, dict] | None = None) -> list[str]:
    """Flags for values outside the normal range: by sex when known ("M"/"F"), else against both ranges. `values` by
    NORMAL_VALUES key (LV and RV; a key absent or None is not judged, e.g. the indexed ones without a BSA).
    `errors`: the model's known error per key (known_errors); a flag whose value lies within it of a limit it crosses
    (model_error.beyond_known_error) says so instead of asserting (range_judgements)."""
    return [text for _, text, _ in range_judgements(values, sex, errors)]


#: the judged quantities that are lower bounds where the stack misses part of the ventricles (stack_coverage's
#: COVERAGE_CAVEAT): a value below the lower limit of normal then proves nothing ("≥ 81 mL" may be a normal EDV), a
#: value above the upper limit still does
LOWER_BOUND_KEYS = frozenset({"lv_edv_ml", "lv_edvi_ml_m2", "lv_esv_ml", "lv_mass_index_g_m2", "rv_edvi_ml_m2"})


def lower_bound_note(values: dict[str, float | None], sex: str | None, lower_bounds=LOWER_BOUND_KEYS) -> str | None:
    """The flag saying which values below their lower limit of normal were not judged because they are lower bounds:
    those range_judgements flags as a whole-stack value but not with `lower_bounds` (a value no limit would have
    flagged, e.g. an RV EDVi within the women's range where the sex is unknown, is not listed): "lower limits of normal not applied to lower bounds (incomplete LV
    coverage): LV EDV 81.4 mL, LV EDVi 49.1 mL/m²"; None where there is none."""
    below = [f"{NORMAL_VALUES[key]['name']} {number_text(round(value, 2), 1)} {NORMAL_VALUES[key]['unit']}"
             for key, value in values.items() if key in lower_bounds and key in NORMAL_VALUES and value is not None
             and math.isfinite(value) and range_judgements({key: value}, sex)
             and not range_judgements({key: value}, sex, lower_bounds=frozenset({key}))]
    return (LOWER_BOUND_NOTE_START + ", ".join(below)) if below else None


#: how lower_bound_note begins: a note about adult lower limits (reference_age.age_adjusted_flags withholds it with them)
LOWER_BOUND_NOTE_START = "lower limits of normal not applied to lower bounds (incomplete LV coverage): "


def range_judgements(values: dict[str, float | None], sex: str | None,
                     errors: dict[str, dict] | None = None,
                     lower_bounds: frozenset[str] = frozenset()) -> list[tuple[str, str, bool | None]]:
    """(NORMAL_VALUES key, flag text, near) for each value outside its normal range (normal_range_flags). A key in
    `lower_bounds` (LOWER_BOUND_KEYS on a stack with incomplete coverage) is judged against its upper limit only: a
    lower bound below the lower limit is no finding (lower_bound_note says so; break40b F3). `near` is
    None without a known error for the key, True where the flag is within the model's known error, False where the
    value lies beyond every limit it is flagged against by more than that error after the model's systematic bias
    (model_error.beyond_known_error: the source and the reasoning): only then is the flag asserted ("RVEF below the
    RV systolic dysfunction cut-off (...)"); otherwise it reads "RVEF below the RV systolic dysfunction cut-off, within
    the model's known error: confirm by reading (value; limit; the model's bias and MAE)"."""
    judgements = []
    sexes: tuple[Sex, ...] = (sex,) if sex in ("M", "F") else ("M", "F")  # type: ignore[assignment]
    for key, spec in NORMAL_VALUES.items():
        value = values.get(key)
        if value is None or not math.isfinite(value):
            continue
        outcomes, crossed = {}, []
        for each in sexes:
            low, high = normal_range(key, each)
            # a lower limit only (high = inf, RVEF) is a cut-off whose value is itself abnormal (Gulati 2013: <= 45 %)
            below = value <= low if math.isinf(high) else value < low
            if below and key in lower_bounds:
                below = False
                outcomes[each] = "above" if value > high else "within"
            else:
                outcomes[each] = "below" if below else "above" if value > high else "within"
            if outcomes[each] != "within":
                crossed.append((low, "below") if below else (high, "above"))
        ranges = ", ".join(f"{'men' if s == 'M' else 'women'} {range_text(key, s)}" for s in sexes)
        verdicts = set(outcomes.values())
        if verdicts == {"within"} or (len(verdicts) > 1 and spec.get("sex_unknown") == "both"):
            continue
        error = (errors or {}).get(key)
        near = None if error is None else not all(
            beyond_known_error(value, limit, side, error["mae"], _systematic(error)) for limit, side in crossed)
        shown = number_text(value, 1)  # rounded once, as every output shows the stored value (rounding.stored_value)
        known = f"; {error_text(error, spec['name'])}" if near else ""
        if spec.get("cut_off"):
            what, source = spec["cut_off"]
            low = normal_range(key, sexes[0])[0]
            verdict = f"{verdicts.pop()} {what}" + (f", {NEAR_TEXT}" if near else "")
            text = (f"{spec['name']} {verdict} ({shown} {spec['unit']}; dysfunction at ≤ {low:g} {spec['unit']}, "
                    f"{source}{known})")
        elif near:
            side, limit = ("below", "lower") if crossed[0][1] == "below" else ("above", "upper")
            text = (f"{spec['name']} {side} the {limit} limit of normal, {NEAR_TEXT} ({shown} {spec['unit']}; "
                    f"{ranges}{known})")
        elif len(verdicts) == 1:
            text = f"{spec['name']} {verdicts.pop()} normal range ({shown} {spec['unit']}; {ranges})"
        else:
            parts = "; ".join(f"{outcomes[s]} for {'men' if s == 'M' else 'women'}" for s in sexes)
            text = (f"{spec['name']} outside the normal range for one sex ({shown} {spec['unit']}: {parts}; "
                    f"{ranges})")
        judgements.append((key, text, near))
    return judgements


RANGE_VERDICTS = ("below", "above", "outside", "near")  # "near": flags of summaries written before 2026-12-06


def is_range_flag(flag: str) -> bool:
    """Whether a cine flag is a value outside its normal range (normal_range_flags), not a timing or data note; also
    one within the model's known error of the limit it crosses (is_near_flag)."""
    return any(str(flag).startswith(f"{spec['name']} {verdict} ") for spec in NORMAL_VALUES.values()
               for verdict in RANGE_VERDICTS)


def is_near_flag(flag: str) -> bool:
    """Whether a cine range flag is worded as within the model's known error of its limit (range_judgements): a
    prompt to confirm by reading, not an assertion of abnormality."""
    return is_range_flag(flag) and f", {NEAR_TEXT} " in str(flag)


#: LV / RV stroke-volume consistency (stroke_volume_mismatch_note). Without significant valve regurgitation or an
#: intracardiac shunt both ventricles eject the same volume per beat, so CMR readers compare LV SV with RV SV as an
#: internal check of the contours. Short-axis volumetry alone (no through-plane correction of the basal slices) does
#: not make them equal even in normal hearts: on ACDC's 20 normal subjects the experts' own contours differ by more
#: than 20 mL and 20 % in 5 (more than 25 mL and 25 % in 2). A difference is therefore flagged only above both
#: SV_MISMATCH_ML and SV_MISMATCH_FRACTION of the larger SV: on the 100 patients of the cine model's cross-validation
#: (engines/cine/evaluation.json, 2026-12-06) that fires on 2 of 20 normals from the experts' contours and 2 of 20 from
#: the model's, and on 23 / 19 of all 100 (dilated, infarcted and abnormal-RV hearts, where regurgitation is common).
#: A prompt to look at the contours, not a diagnosis.
SV_MISMATCH_ML = 30.0
SV_MISMATCH_FRACTION = 0.30
SV_MISMATCH_START = "LV and RV stroke volumes disagree"


def stroke_volume_mismatch_note(lv_sv_ml: float | None, rv_sv_ml: float | None,
                                lv_coverage_complete: bool = True, error: dict | None = None) -> str | None:
    """A flag where LV SV and RV SV differ by more than SV_MISMATCH_ML and SV_MISMATCH_FRACTION of the larger (see
    there), naming both; None where they agree or either is missing (no RV segmented: RV SV None or both volumes 0).
    With the LV coverage incomplete the LV SV is a lower bound, which the flag says. `error`: the model's known error
    of LV SV - RV SV (known_errors()[SV_DIFFERENCE]); see stroke_volume_mismatch."""
    return stroke_volume_mismatch(lv_sv_ml, rv_sv_ml, lv_coverage_complete, error)[0]


def stroke_volume_mismatch(lv_sv_ml: float | None, rv_sv_ml: float | None, lv_coverage_complete: bool = True,
                           error: dict | None = None) -> tuple[str | None, bool | None]:
    """(stroke_volume_mismatch_note's flag, near): `near` is None without a flag or without `error`, True where the
    difference, less the model's mean error of LV SV - RV SV, exceeds SV_MISMATCH_ML by no more than that error's
    MAE (model_error.beyond_known_error; the fraction criterion stays on the values measured): the flag then reads
    "LV and RV stroke volumes disagree only within the model's known error of the mismatch threshold: confirm by
    reading (...)" and quotes the error."""
    if lv_sv_ml is None or rv_sv_ml is None or not (math.isfinite(lv_sv_ml) and math.isfinite(rv_sv_ml)):
        return None, None
    difference = abs(float(lv_sv_ml) - float(rv_sv_ml))
    larger = max(abs(float(lv_sv_ml)), abs(float(rv_sv_ml)))
    if larger <= 0 or difference <= SV_MISMATCH_ML or difference <= SV_MISMATCH_FRACTION * larger:
        return None, None
    near = None if error is None else not beyond_known_error(
        abs(float(lv_sv_ml) - float(rv_sv_ml) - _systematic(error)), SV_MISMATCH_ML, "above", error["mae"])
    lv_shown, rv_shown = number_text(lv_sv_ml, 1), number_text(rv_sv_ml, 1)
    difference = abs(float(display_round(lv_sv_ml, 1)) - float(display_round(rv_sv_ml, 1)))
    opening = (f"{SV_MISMATCH_START} only within the model's known error of the mismatch threshold: confirm by "
               f"reading (" if near else f"{SV_MISMATCH_START}: ")
    detail = (f"LV SV {lv_shown} mL, RV SV {rv_shown} mL, {difference:.1f} mL apart "
              f"({100 * difference / larger:.0f} % of the larger; flagged above {SV_MISMATCH_ML:g} mL and "
              f"{100 * SV_MISMATCH_FRACTION:g} %; without significant valve regurgitation or a shunt they are equal)")
    if near:
        return (opening + detail.replace(" (", "; ", 1).removesuffix(")") + "; "
                + error_text(error, "LV SV - RV SV") + ")"
                + ("; the LV coverage is incomplete, so LV SV is a lower bound" if not lv_coverage_complete else ""),
                True)
    return (opening + detail + ". Check the RV (and LV) contours at ED and ES; if the segmentation is right, consider "
            "valve regurgitation or a shunt"
            + ("; the LV coverage is incomplete, so LV SV is a lower bound" if not lv_coverage_complete else ""), near)


RV_ACCURACY_START = "RV volumes and RVEF are less reliable than the LV's"


def rv_accuracy_note(validation: dict | None) -> str:
    """The validated RVEF error of the model that segmented the RV, for a flag beside every RV number. `validation`
    (dicomnode.analysis.cine.rv_validation_from_card, read from the model card's `metrics` at run time, so the text
    follows the card): {"cv": {"n", "mae", "mean_error", "sd_error"} or None (cross-validation over ACDC),
    "held_out": the same or None (the shipped model on its held-out ACDC patients)}; None or neither: says that
    the card has no RV validation."""
    cv = (validation or {}).get("cv")
    held_out = (validation or {}).get("held_out")
    parts = []
    for block, what in ((cv, "in cross-validation over {n} ACDC patients"),
                        (held_out, "on its {n} held-out ACDC patients")):
        if isinstance(block, dict) and block.get("mae") is not None:
            text = f"{float(block['mae']):.1f} points MAE " + what.format(n=block.get("n", "?"))
            if block.get("mean_error") is not None and block.get("sd_error") is not None:
                text += f" (bias {float(block['mean_error']):+.1f} ± {float(block['sd_error']):.1f} points)"
            parts.append(text)
    if not parts:
        return (f"{RV_ACCURACY_START}: the model card gives no validated RV accuracy; review the RV contours before "
                "using RV EDV, ESV, SV or RVEF")
    return (f"{RV_ACCURACY_START}: this model's RVEF error is " + ", ".join(parts)
            + "; review the RV contours at ED and ES before using RV EDV, ESV, SV or RVEF")


#: coverage (stack_coverage): the LV section on the apical end slice at ED, as a share of the largest, from which
#: the apex is taken as cut off. Whole stacks: 93 ACDC training ground truths (acdc-train-png/slices.csv, the smaller
#: end) 0-43 % (median 14 %); Sunnybrook SCD0000101 / 201 / 301 (model labels) 1 / 0 / 25 %. With the 2 most apical
#: slices removed: ACDC >= 50 % in 72 % of patients (3 removed: 91 %; 3 mid slices only: 98 %), SCD 44 / 18 / 59 %;
#: 3 removed: SCD 63 / 34 / 71 % (201 has two slices without LV beyond its apex)
#: The slice next to the apical end must reach it too: on ACDC patient090 (held out, dilated RV) the
#: model labels part of the RV apex as LV on the apical slice only (0.54, ground truth 0.29; the next slice 0.46),
#: the one false positive among the model's ED labels of 100 ACDC and 5 Sunnybrook whole stacks; requiring both
#: removes it and detects the same cut stacks (2 apical slices removed: 72 %, 3: 92 %; checked 2026-12-05 with the
#: shipped model through the node's path)
APEX_END_FRACTION = 0.5
#: the shortest LV extent (mm, ED, sum of the discs holding LV) a whole adult stack can have: ACDC 50-110 mm,
#: Sunnybrook 100-120 mm; a 3-slice x 10 mm stack is 30 mm
MIN_LV_EXTENT_MM = 40.0
#: a step between slice positions this many times the median is a gap (a slice missing)
GAP_FACTOR = 1.5
#: ... and this many times the median leaves more than one slice missing: too much to interpolate
LARGE_GAP_FACTOR = 2.5
#: base cut off (basal_end_widening): the LV section (blood pool + myocardium) on the basal end slice of the stack is
#: at least BASE_WIDENING_RATIO times the section on the slice next to it, which holds at least
#: BASE_NEIGHBOUR_FRACTION of the largest section. Measured on expert labels through stack_coverage (2026-12-06; the
#: basal end the base (ACDC z0) or the larger end (EMIDEC, MyoPS); stacks of >= 4 slices): whole stacks fire ACDC ED
#: 3 / 100, EMIDEC 3 / 100, MyoPS 0 / 15; with the 1 / 2 / 3 most basal slices removed ACDC ED 5 / 17 / 28 %, EMIDEC
#: 16 / 23 / 30 %, MyoPS 4 / 12 and 1 / 3 stacks (ACDC at ES: whole 1 %, cut 3 / 9 / 17 %). The node's own labels
#: (`dicomnode process` on make-study ACDC patient001/021/041/042/061/081 and 4D 090): whole 0 / 7, 1 / 2 / 3 basal
#: slices removed 0 / 7, 2 / 7, 0 / 7 (041 and 090 without 3 flagged as too short); LGE (EMIDEC P043, N037, MyoPS
#: 3002) whole 0 / 3, cut 0 / 4 (basal end ratio up to 1.22 on whole MyoPS 3002: the neighbour rule holds it). No
#: threshold on these masks (end and next sections near the largest, ES section on the basal end slice, ring
#: closure) detects half the bases cut by one slice without firing on >= 20 % of whole stacks: most whole ACDC /
#: EMIDEC stacks start on a complete ring near the largest section (their first slice the basal slice of SCMR 2020,
#: none beyond it), so a base missing by a slice mostly cannot be told from them.
BASE_WIDENING_RATIO = 1.10
BASE_NEIGHBOUR_FRACTION = 0.85
#: base coverage not confirmed (stack_coverage, break48b #3): the basal end slice holds at least
#: BASE_UNCONFIRMED_END_FRACTION of the largest LV section (the stack ends at the LV's widest, where a whole stack
#: ends on the basal ring or in the atrium) and the LV spans under BASE_UNCONFIRMED_EXTENT_MM (at least
#: MIN_LV_EXTENT_MM: shorter is "too short"), shorter than most whole adult LVs. Measured on expert labels through
#: stack_coverage (2026-12-07, `python -m engines.lge.base_coverage_rates`: 100 EMIDEC + 33 MyoPS LGE, the basal end
#: the larger one, and 93 ACDC ED cine, z0 the base): whole stacks fire EMIDEC 11 / 100, MyoPS 1 / 33, ACDC 0 / 93
#: (false alarms 12 / 133 LGE = 9.0 %, 0 % cine); with it a base rule fires on stacks with their 1 / 2 / 3 most basal
#: slices removed in EMIDEC 36 / 58 / 66 % (the widening rule alone 16 / 23 / 30 %), ACDC 9 / 29 / 51 % (5 / 17 /
#: 28 %). At 50 mm instead of 55 (a 10-mm stack of 5 LV slices not flagged) whole stacks fire about 1 / 226, but
#: the tester's EMIDEC Case_P009 with 3 of its 8 basal slices cut (5 x 10 mm) is missed. A caution, not a finding
BASE_UNCONFIRMED_END_FRACTION = 0.95
BASE_UNCONFIRMED_EXTENT_MM = 55.0
#: how a base-not-confirmed reason begins (StackCoverage.reasons), and the caveat where it is the only reason
BASE_UNCONFIRMED_START = "base coverage not confirmed"
#: beside a number of a stack whose only coverage reason is BASE_UNCONFIRMED_START, on the PDF and the console: the
#: number may be a lower bound (or cover the slices present only), which neither "≥" nor "partial stack" may assert
BASE_UNCONFIRMED_QUALIFIER = "base not confirmed"
#: the basal LV length (mm) the LGE large-burden bound (lge.missing_base_burden_reason) assumes missing from a stack
#: whose base is cut off or not confirmed: 3 slices of the 10-mm LGE step, the largest cut the base rules were
#: measured on (the 1 / 2 / 3 most basal slices removed, engines.lge.base_coverage_rates). Longer is not realistic
#: here: the rules apply from MIN_LV_EXTENT_MM (40 mm) of LV on, and a median whole LV spans 70 mm (226 whole expert-
#: labelled stacks, 90th percentile 100 mm), so a median LV missing more than 30 mm falls under the too-short rule,
#: which withholds the flag whatever the bound
BASE_MISSING_MM = 30.0
#: how the widening rule's reason ends (basal_end_widening: the base certainly cut off)
BASE_CUT_OFF = "base cut off, the most basal LV slices were not acquired"
#: how a coverage flag begins (StackCoverage.flags), its reason and COVERAGE_CAVEAT following
COVERAGE_FLAG_START = "incomplete LV coverage: "
COVERAGE_CAVEAT = ("LV EDV, ESV, SV and mass and the RV volumes are lower bounds and the EFs are not whole-ventricle "
                   "EFs: part of the LV lies outside the stack, and the RV with it")
#: COVERAGE_CAVEAT where the only reason is that the base is not confirmed covered (BASE_UNCONFIRMED_START)
COVERAGE_CAVEAT_UNCONFIRMED = ("LV EDV, ESV, SV and mass and the RV volumes may be lower bounds and the EFs may not be "
                               "whole-ventricle EFs: the LV base, and the RV with it, may lie outside the stack")


def disc_thickness_mm(slice_positions_mm, nominal_step_mm: float | None = None) -> np.ndarray:
    """(slices,) thickness (mm) of the disc each slice stands for in the summation of discs: from the middle of the
    step to the previous slice to the middle of the step to the next, from the slice positions along the stack normal
    (any order, any spacing). An end slice reaches outwards half the stack's nominal step (`nominal_step_mm`, mm:
    Volume.nominal_step_mm, over all acquired positions) where given, else half its one step, so a slice left out
    next to an end does not widen the end disc. Equal to the spacing in an even stack; across a gap (a slice missing)
    each neighbour's disc reaches the middle of the gap, so the missing volume is interpolated rather than left out.
    Fewer than 2 positions, or two at one position: ValueError."""
    positions = np.asarray(slice_positions_mm, dtype=np.float64)
    if positions.ndim != 1 or positions.size < 2:
        raise ValueError(f"need the positions of at least 2 slices, got {positions.shape}")
    order = np.argsort(positions)
    steps = np.diff(positions[order])
    if not np.all(steps > 0):
        raise ValueError("two slices share one position")
    outer = (steps[0], steps[-1]) if not nominal_step_mm or nominal_step_mm <= 0 else (nominal_step_mm,) * 2
    before = np.concatenate([[outer[0]], steps])
    after = np.concatenate([steps, [outer[1]]])
    thickness = np.empty_like(positions)
    thickness[order] = (before + after) / 2.0
    return thickness


def disc_voxel_volumes_ml(voxel_volume_ml: float, slice_positions_mm, nominal_step_mm: float | None = None
                          ) -> np.ndarray | float:
    """(slices,) mL per voxel of each slice in the summation of discs: `voxel_volume_ml` (pixel area x the median
    step of the positions given) scaled by each slice's disc_thickness_mm (with `nominal_step_mm`, mm, for the end
    discs) / that median step, so a gap (a slice missing) or uneven spacing is not given the median step. Without
    usable positions (None, fewer than 2, two slices at one position) the scalar `voxel_volume_ml` unchanged."""
    if slice_positions_mm is None or len(slice_positions_mm) < 2:
        return voxel_volume_ml
    try:
        thickness = disc_thickness_mm(slice_positions_mm, nominal_step_mm)
    except ValueError:
        return voxel_volume_ml
    return voxel_volume_ml * thickness / float(np.median(np.diff(np.sort(np.asarray(slice_positions_mm, float)))))


@dataclass
class StackCoverage:
    """Whether a cine stack holds the whole LV at ED (stack_coverage); `reasons` say why not, `notes` what else
    qualifies the volumes (a gap interpolated)."""

    complete: bool
    end_fractions: tuple[float, float]  # LV (blood pool + myocardium) section on the first / last slice / largest
    apex_first: bool | None = None  # the first slice is the apical end (None: unknown)
    lv_extent_mm: float | None = None  # sum of the discs holding LV at ED (None without slice positions)
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    basal_end_ratio: float | None = None  # LV section on the basal end slice / on the next (basal_end_widening)
    #: the LV spans under MIN_LV_EXTENT_MM and the adult rule applies: the stack covers clearly less than the LV (the
    #: AHA thirds are withheld, aha.aha_summary_for_stack; the LGE withholds its large-burden flag too)
    shorter_than_whole: bool = False

    @property
    def base_unconfirmed_only(self) -> bool:
        """The only reasons are that the base is not confirmed covered (BASE_UNCONFIRMED_START): the LV may be whole."""
        return bool(self.reasons) and all(r.startswith(BASE_UNCONFIRMED_START) for r in self.reasons)

    def caveat(self) -> str | None:
        """COVERAGE_CAVEAT (COVERAGE_CAVEAT_UNCONFIRMED where the base is only not confirmed), None on a whole stack."""
        if self.complete:
            return None
        return COVERAGE_CAVEAT_UNCONFIRMED if self.base_unconfirmed_only else COVERAGE_CAVEAT

    def summary(self) -> dict:
        return {"complete": self.complete, "reasons": list(self.reasons), "notes": list(self.notes),
                "basal_end_lv_ratio": None if self.basal_end_ratio is None else round(float(self.basal_end_ratio), 3),
                "caveat": self.caveat(),
                "end_slice_lv_fraction": [round(float(v), 3) for v in self.end_fractions],
                "apical_end": None if self.apex_first is None else ("first" if self.apex_first else "last"),
                "lv_extent_mm": None if self.lv_extent_mm is None else round(float(self.lv_extent_mm), 1),
                "lv_shorter_than_whole": self.shorter_than_whole}

    def flags(self) -> list[str]:
        """The measure_cine flags: each reason with the caveat, then the notes."""
        return [f"{COVERAGE_FLAG_START}{reason}; {self.caveat()}" for reason in self.reasons] + list(self.notes)


def base_unconfirmed_only(coverage: dict | None) -> bool:
    """Whether a coverage block (StackCoverage.summary, lge.lge_coverage) is incomplete only because the base is
    not confirmed covered (every reason begins with BASE_UNCONFIRMED_START): the LV may be whole, so the outputs
    say "may" where a missing part is otherwise asserted."""
    reasons = (coverage or {}).get("reasons") if isinstance(coverage, dict) else None
    return (coverage or {}).get("complete") is False and bool(reasons) \
        and all(str(r).startswith(BASE_UNCONFIRMED_START) for r in reasons)


def stack_coverage(labelmap_ed: np.ndarray, slice_positions_mm=None, apex_first: bool | None = None,
                   ends_left_out_mm=None, extent_rule_withheld: str | None = None) -> StackCoverage:
    """Does the stack hold the whole LV? From the ED label map (slices, rows, cols) in stack order, node labels.

    - Apex cut off: a whole stack ends at the apex with a small LV section (or none), so where the LV (blood pool +
      myocardium) covers >= APEX_END_FRACTION of its largest section on the apical end slice (`apex_first`: the
      first slice is apical, from the geometry; None: unknown, then the smaller of the two ends is taken), the LV
      goes on beyond the stack.
    - Base cut off (basal_end_widening): the LV section still widens by >= BASE_WIDENING_RATIO onto the basal end
      slice. Only that: whole stacks often start on a full basal ring near the largest section (ACDC, EMIDEC) or in
      the atrium (Sunnybrook), so a base missing by one slice is mostly not detected (rates at BASE_WIDENING_RATIO).
    - Base not confirmed (BASE_UNCONFIRMED_START, break48b #3): no other rule fired on the base, the basal end slice
      holds >= BASE_UNCONFIRMED_END_FRACTION of the largest LV section and the LV spans at least MIN_LV_EXTENT_MM but
      under BASE_UNCONFIRMED_EXTENT_MM: the stack ends at the LV's widest and is shorter than most whole adult LVs,
      so the base may be cut off (false alarms on whole stacks: 9.0 % of 133 LGE, 0 of 93 ACDC cine; caveat
      COVERAGE_CAVEAT_UNCONFIRMED). Left out with the adult length (`extent_rule_withheld`).
    - Too short: an LV extent (the discs holding LV, disc_thickness_mm) under MIN_LV_EXTENT_MM, an adult length:
      `extent_rule_withheld` (why, e.g. reference_age.lv_extent_rule_withheld: a child) leaves it out, with a note
      where it would have applied.
    - A gap of more than LARGE_GAP_FACTOR x the median step (slices missing); a smaller gap (> GAP_FACTOR, one slice
      missing) is interpolated by the disc thicknesses and noted.
    - An acquired end slice beyond the stack that the volume does not use (`ends_left_out_mm`, mm along the normal,
      Volume.ends_left_out_mm: on another pixel grid, unusable, or the end of an earlier pass on another geometry),
      where the measured end slice on its side still holds LV myocardium or blood pool (the LV may reach into it);
      beyond an end slice without LV (an atrial slice dropped) it is a note only. Without slice positions the side
      is unknown and it always counts.
    slice_positions_mm: (slices,) positions along the stack normal; without them only the end-slice rule applies.
    """
    labelmap_ed = np.asarray(labelmap_ed)
    lv = np.isin(labelmap_ed, [int(Label.LV_BLOOD_POOL)] + [int(v) for v in MYOCARDIUM_LABELS])
    areas = lv.reshape(lv.shape[0], -1).sum(axis=1).astype(np.float64)
    largest = float(areas.max()) if areas.size else 0.0
    if largest == 0:
        return StackCoverage(True, (0.0, 0.0), apex_first)
    ends = (areas[0] / largest, areas[-1] / largest)
    reasons, notes = [], []
    if ends_left_out_mm:
        reach, clear = _ends_left_out_reach(ends_left_out_mm, areas, slice_positions_mm)
        if reach:
            reasons.append(f"acquired end slice(s) at {', '.join(f'{float(d):.2f}' for d in reach)} mm lie "
                           "beyond the measured stack and are not used (see the stack warnings), and the measured end "
                           "slice on that side still holds LV: the LV may reach into them")
        if clear:
            notes.append(f"acquired end slice(s) at {', '.join(f'{float(d):.2f}' for d in clear)} mm beyond the "
                         "measured stack are not used (see the stack warnings); the measured end slice on that side "
                         "holds no LV myocardium or blood pool, so the LV does not reach them")
    first_is_apical = (ends[0] <= ends[1]) if apex_first is None else apex_first
    apical = ends[0 if first_is_apical else 1]
    inward = areas[1 if first_is_apical else -2] / largest
    if apical >= APEX_END_FRACTION and inward >= APEX_END_FRACTION:
        which = ("the smaller end" if apex_first is None else
                 f"the apical ({'first' if apex_first else 'last'}) slice of the stack")
        reasons.append(f"the LV still covers {100 * apical:.0f} % of its largest section on {which} at ED and "
                       f"{100 * inward:.0f} % on the slice next to it (a whole stack ends at the apex with under "
                       f"{100 * APEX_END_FRACTION:.0f} %): apex cut off")
    widening = basal_end_widening(areas, first_is_apical)
    if widening is not None:
        which = ("the larger end" if apex_first is None else
                 f"the basal ({'last' if apex_first else 'first'}) slice of the stack")
        reasons.append(f"the LV section still widens onto {which} at ED ({100 * widening:.0f} % of the section on the "
                       f"slice next to it, which holds >= {100 * BASE_NEIGHBOUR_FRACTION:.0f} % of the largest; a "
                       f"stack that reaches the base stops widening there): {BASE_CUT_OFF}")
    extent = None
    if slice_positions_mm is not None and len(slice_positions_mm) == len(areas) and len(areas) >= 2:
        positions = np.asarray(slice_positions_mm, dtype=np.float64)
        thickness = disc_thickness_mm(positions)
        extent = float(thickness[areas > 0].sum())
        if extent < MIN_LV_EXTENT_MM and extent_rule_withheld:
            notes.append(f"the LV spans {extent:.0f} mm of stack ({int((areas > 0).sum())} slice(s)); the adult rule "
                         f"'a whole LV is at least {MIN_LV_EXTENT_MM:.0f} mm long' is not applied: "
                         f"{extent_rule_withheld}")
        elif extent < MIN_LV_EXTENT_MM:
            reasons.append(f"the LV spans only {extent:.0f} mm of stack ({int((areas > 0).sum())} slice(s)) at ED; a "
                           f"whole LV is at least {MIN_LV_EXTENT_MM:.0f} mm long")
        elif widening is None and not extent_rule_withheld and extent < BASE_UNCONFIRMED_EXTENT_MM \
                and ends[1 if first_is_apical else 0] >= BASE_UNCONFIRMED_END_FRACTION:
            which = ("the larger end" if apex_first is None else
                     f"the basal ({'last' if apex_first else 'first'}) slice of the stack")
            reasons.append(f"{BASE_UNCONFIRMED_START}: the LV section on {which} is "
                           f"{100 * ends[1 if first_is_apical else 0]:.0f} % of the largest at ED (the stack ends "
                           f"where the LV is widest) and the LV spans {extent:.0f} mm of stack, under the "
                           f"{BASE_UNCONFIRMED_EXTENT_MM:.0f} mm most whole adult LVs reach: the most basal LV slices "
                           "may not have been acquired")
        order = np.argsort(positions)
        ordered = positions[order]
        lv_index = np.flatnonzero(areas[order] > 0)
        steps = np.diff(ordered)
        median = float(np.median(steps))
        for k, step in enumerate(steps):
            where = f"{step:.1f} mm between the slices at {ordered[k]:.1f} and {ordered[k + 1]:.1f} mm"
            # beyond a slice without LV that lies past the last LV slice on that side: the LV ends before the gap
            beyond_lv = lv_index.size and (k + 1 < lv_index[0] or k > lv_index[-1])
            if step > LARGE_GAP_FACTOR * median and beyond_lv:
                notes.append(f"a gap of {where} (median step {median:.1f} mm) lies beyond a slice without LV past the "
                             "end of the LV: the LV does not reach into it")
            elif step > LARGE_GAP_FACTOR * median:
                reasons.append(f"a gap of {where} (median step {median:.1f} mm): slices missing")
            elif step > GAP_FACTOR * median:
                notes.append(f"gap of {where} (median step {median:.1f} mm, a slice missing?): volumes interpolate "
                             "across it (each neighbouring slice's disc reaches the middle of the gap)")
    return StackCoverage(not reasons, ends, apex_first, extent, reasons, notes,
                         _basal_end_ratio(areas, first_is_apical),
                         bool(not extent_rule_withheld and extent is not None and extent < MIN_LV_EXTENT_MM))


def basal_end_widening(lv_sections, first_is_apical: bool) -> float | None:
    """Whether the stack cuts off the LV base: the ratio of the LV section on the basal end slice to that on the slice
    next to it where the rule fires, else None.

    `lv_sections`: (slices,) LV section (blood pool + myocardium; pixels or mm², any unit) per slice in stack order;
    `first_is_apical`: the first slice is the apical end, so the last is the basal one. The rule: the basal end
    slice holds at least BASE_WIDENING_RATIO x the section of the slice next to it, and that slice at least
    BASE_NEIGHBOUR_FRACTION of the largest section: the LV is near its widest and still widening where the stack
    ends. Going from apex to base the LV section grows up to the basal ring and stops at the mitral annulus, where
    the ring opens into the outflow tract and atrium (the basal slice of the SCMR post-processing recommendations,
    Schulz-Menger et al., JCMR 2020;22:19: blood pool at least half surrounded by myocardium); a stack that still
    widens onto its last basal slice has not reached it (SCMR acquisition, Kramer et al., JCMR 2020;22:17: the
    short-axis stack runs from the mitral valve plane through the apex). Measured rates at BASE_WIDENING_RATIO: the
    rule seldom fires on whole stacks and detects only a minority of bases cut by 1-3 slices. Fewer than 3 slices,
    or no LV on the two basal slices: None."""
    sections = np.asarray(lv_sections, dtype=np.float64)
    ratio = _basal_end_ratio(sections, first_is_apical)
    if ratio is None:
        return None
    neighbour = sections[-2] if first_is_apical else sections[1]
    if ratio >= BASE_WIDENING_RATIO and neighbour >= BASE_NEIGHBOUR_FRACTION * sections.max():
        return ratio
    return None


def _basal_end_ratio(sections: np.ndarray, first_is_apical: bool) -> float | None:
    """LV section on the basal end slice / on the slice next to it (None: under 3 slices or no LV on either)."""
    if sections.ndim != 1 or sections.size < 3:
        return None
    end, neighbour = (sections[-1], sections[-2]) if first_is_apical else (sections[0], sections[1])
    if end <= 0 or neighbour <= 0:
        return None
    return float(end / neighbour)


def _ends_left_out_reach(ends_left_out_mm, areas: np.ndarray, slice_positions_mm) -> tuple[list[float], list[float]]:
    """`stack_coverage`: the acquired end slices left unused split into (those the LV may reach: the measured end slice
    on their side holds LV, or the side is unknown, [those beyond an end slice without LV]). The side of each: below
    the lowest or above the highest measured position along the normal; one between them (not an end) counts."""
    ends = [float(d) for d in ends_left_out_mm]
    if slice_positions_mm is None or len(slice_positions_mm) != len(areas) or not len(areas):
        return ends, []
    positions = np.asarray(slice_positions_mm, dtype=np.float64)
    low, high = int(np.argmin(positions)), int(np.argmax(positions))
    reach, clear = [], []
    for d in ends:
        side = low if d < positions[low] else high if d > positions[high] else None
        (clear if side is not None and areas[side] == 0 else reach).append(d)
    return reach, clear


@dataclass
class CineMeasurements:
    """Everything measured on one segmented cine."""

    lv_curve_ml: list[float]
    rv_curve_ml: list[float]
    ed_phase: int
    es_phase: int
    lv_edv_ml: float
    lv_esv_ml: float
    lv_sv_ml: float
    lv_ef_percent: float | None
    lv_mass_g: float
    rv_edv_ml: float
    rv_esv_ml: float
    rv_sv_ml: float
    rv_ef_percent: float | None
    bsa_m2: float | None = None
    bsa_formula: str | None = None
    indexed: dict[str, float] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    timing: CardiacPhases | None = None
    basal_excluded: list[tuple[int, int]] = field(default_factory=list)  # (phase, slice) left out by the basal rule
    rv_flagged_phases: list[int] = field(default_factory=list)  # RV volume jumps (rv_timing_notes)
    coverage: StackCoverage | None = None  # whether the stack holds the whole LV (stack_coverage)
    #: the model's known error of each judged quantity and whether its flag lies within it (flag_validation_block)
    flag_validation: dict[str, dict] = field(default_factory=dict)

    def summary(self) -> dict:
        """The `cine` block of summary.json (design.md contract)."""
        return {
            "lv_edv_ml": _round(self.lv_edv_ml), "lv_esv_ml": _round(self.lv_esv_ml), "lv_sv_ml": _round(self.lv_sv_ml),
            "lv_ef_percent": _round(self.lv_ef_percent), "lv_mass_g": _round(self.lv_mass_g),
            "rv_edv_ml": _round(self.rv_edv_ml), "rv_esv_ml": _round(self.rv_esv_ml), "rv_sv_ml": _round(self.rv_sv_ml),
            "rv_ef_percent": _round(self.rv_ef_percent), "ed_phase": self.ed_phase, "es_phase": self.es_phase,
        }


def _round(value: float | None, digits: int = 2) -> float | None:
    return stored_value(value, digits)


#: how the flag saying why there are no indexed values begins (_bsa_or_note)
NO_INDEX_START = "no indexed values: "


def flag_validation_block(error: dict, near: bool | None) -> dict:
    """One entry of the summary's `cine.flag_validation`, as lge.lge_percent_validation: the model's known error of
    the quantity against expert readers (known_errors: "data", "patients", "card_metric" and "source" of the numbers,
    "unit", "mae", "bias" (prediction - expert), "sd", in the quantity's unit; "per_bsa_m2" for an indexed one) and
    "near_cutoff": null where no flag was given, true where the flag lies within the error of its limit (worded
    "confirm by reading"), false where it is asserted."""
    return {**{key: error.get(key) for key in ("data", "patients", "card_metric", "source", "unit")},
            **{key: _round(error[key]) for key in ("mae", "bias", "sd")},
            **({"per_bsa_m2": _round(error["per_bsa_m2"], 3)} if error.get("per_bsa_m2") else {}),
            "near_cutoff": near}


#: how the flag naming the range checks not made without a BSA begins (not_judged_note)
NOT_JUDGED_START = "not judged without a BSA: "


def not_judged_note(rv_found: bool) -> str:
    """The flag that names the range checks not made where there is no BSA: the indexed ones without an unindexed
    range (RV EDVi where an RV was segmented, LV mass index), so that no RV-size or mass flag is not read as normal."""
    return (f"{NOT_JUDGED_START}{'RV EDVi and ' if rv_found else ''}LV mass index (no unindexed reference range); LV "
            "EDV and ESV are judged unindexed")


def _bsa_or_note(height_m, weight_kg, formula, not_numbers=None) -> tuple[float | None, list[str]]:
    """BSA when height and weight are known and plausible; else None and why ("no indexed values: ..."): which of
    PatientSize / PatientWeight is absent or not a number (`not_numbers`: keyword -> the text as written, cmr
    PatientInfo.not_numbers), and which value present is implausible (size_weight_problem)."""
    not_numbers = dict(not_numbers or {})
    values = (("PatientSize", height_m), ("PatientWeight", weight_kg))
    missing = [keyword for keyword, value in values if value is None]
    if missing:
        said = [f"{keyword} {not_numbers[keyword]!r} is not a number" for keyword in missing if keyword in not_numbers]
        absent = [keyword for keyword in missing if keyword not in not_numbers]
        said += [f"{' and '.join(absent)} absent from the header"] if absent else []
        said += [f"{what} implausible: {why}" for what, why in (size_weight_problem(keyword, value) or (None, None)
                                                     for keyword, value in values if value is not None) if what]
        return None, [f"{NO_INDEX_START}{'; '.join(said)} (BSA needs PatientSize and PatientWeight)"]
    try:
        return body_surface_area_m2(height_m, weight_kg, formula), []
    except ValueError as error:  # a wrong header value must not cost the whole measurement
        return None, [f"{NO_INDEX_START}{error}"]


def measure_cine(labelmaps: np.ndarray, voxel_volume_ml: float, *, trigger_times=None, height_m: float | None = None,
                 weight_kg: float | None = None, sex: str | None = None, bsa_formula: BsaFormula = "mosteller",
                 density_g_per_ml: float = DEFAULT_DENSITY_G_PER_ML, slice_positions_mm=None,
                 apex_first: bool | None = None, timing: CardiacPhases | None = None,
                 nominal_step_mm: float | None = None, ends_left_out_mm=None,
                 rv_validation: dict | None = None, function_validation: dict | None = None,
                 phase_numbers=None, cycle_phases: int | None = None, distinct_phases=None,
                 derived_note: str | None = None, slice_rr_ms=None,
                 extent_rule_withheld: str | None = None, not_numbers=None,
                 trigger_order_note: str | None = None) -> CineMeasurements:
    """All cine measurements from node label maps of every phase (phases, slices, rows, cols).

    LV volumes follow the basal-slice rule (BASAL_RULE); ED/ES come from find_cardiac_phases (trigger_times: one
    TriggerTime in ms, or None, per phase) on the fixed-slice-set curve of timing_slice_volumes_ml; RV EDV / ESV are
    read at the RV's largest / smallest volume within RV_PHASE_WINDOW phase of that ED / ES (rv_cardiac_phases,
    kept in `timing.rv_ed` / `timing.rv_es`), with a note where the RV volume at the LV's phase differs from it by
    more than the jump step (rv_phase_notes) and where the RV volume jumps at the phase read (rv_timing_notes). Timing notes (flagged phases, ED cross-check, RV jumps at ED/ES) are appended to `flags`.
    trigger_order_note: where the headers' TriggerTime order contradicts the phase order (Volume.trigger_order_note),
    the first timing note; ED/ES are found as without it.
    slice_positions_mm: (slices,) positions along the stack normal; each slice then counts with its own disc
    (voxel_volume_ml x disc_thickness_mm / the median step: a gap or uneven spacing is not given the median). The
    stack's coverage of the LV at ED (stack_coverage; apex_first: the first slice is the apical end, None: unknown)
    goes to `coverage`, and where incomplete, into `flags`. nominal_step_mm: the stack's step over all acquired
    positions (mm, Volume.nominal_step_mm), so slices left out do not widen the end discs (disc_thickness_mm).
    ends_left_out_mm: acquired end slices beyond the stack that it does not use (Volume.ends_left_out_mm): the
    coverage is then not complete (stack_coverage). extent_rule_withheld: why the adult LV length rule of
    stack_coverage is not applied (a child: reference_age.lv_extent_rule_withheld); None: it applies.
    A cine whose phases lie more than MAX_PHASE_INTERVAL_MS apart is flagged (temporal_resolution_note).
    RV EDV, ESV, EDVi and RVEF are judged against their reference ranges like the LV's (NORMAL_VALUES); LV and RV stroke
    volumes that disagree are flagged (stroke_volume_mismatch_note); and where an RV was segmented, a flag gives the
    model's validated RVEF error (rv_accuracy_note; rv_validation: what the model card says, CinePipeline passes it
    always; None: no such flag, for a caller that measures label maps of no particular model).
    function_validation: the model card's agreement with expert readers per quantity
    (dicomnode.analysis.cine.function_validation_from_card; None: no model, flags as without one): a range flag or
    the stroke-volume flag whose value lies within the model's known error of its limit, after the model's bias, is
    worded so ("... within the model's known error: confirm by reading", range_judgements / stroke_volume_mismatch)
    rather than asserted, and `flag_validation` gives the numbers used (flag_validation_block).
    timing: ED and ES already chosen (a CardiacPhases of an earlier measure_cine over the same cine, e.g. before the
    ED and ES label maps were replaced by a refining model's, CinePipeline), with its RV phases where it has them
    (else chosen here); None: found here.
    phase_numbers: the acquisition phase number of each phase given (cmr.types.Volume.acquisition_phase_numbers: a
    phase left out at every slice leaves a gap), so the notes in `flags` name phases as a viewer does; None: index + 1.
    cycle_phases: the phases of the cycle those numbers count over (Volume.acquired_phases): with phase_numbers,
    where the phases lie on the cycle for the timing (find_cardiac_phases, rv_timing_notes).
    distinct_phases: the phases holding an acquisition of their own where others repeat or interpolate them
    (derived_phases.DerivedPhases.distinct; None: every phase): ED/ES are timed and the RV checked among them, and
    the temporal resolution is theirs; derived_note (DerivedPhases.note) then goes into `flags`.
    slice_rr_ms: (slices,) each slice's RR interval in ms from its headers (Volume.slice_rr_ms, None where unknown):
    a spread between slices beyond RR_VARIATION_FRACTION is flagged (rr_variation_note).
    not_numbers: PatientSize / PatientWeight present but not a number (keyword -> text, cmr PatientInfo.not_numbers),
    named as such in the no-BSA flag rather than absent. Without a BSA, a flag names the checks not made
    (not_judged_note).
    Raises ValueError for two slices at one position or a given timing whose phases are outside the label maps.
    """
    if timing is not None and not (0 <= timing.ed < len(labelmaps) and 0 <= timing.es < len(labelmaps)):
        raise ValueError(f"ED/ES phases {timing.ed}/{timing.es} are outside the {len(labelmaps)} phases given")
    if slice_positions_mm is not None and len(slice_positions_mm) >= 2:
        disc_thickness_mm(slice_positions_mm)  # two slices at one position: ValueError, as documented
        voxel_volume_ml = disc_voxel_volumes_ml(voxel_volume_ml, slice_positions_mm, nominal_step_mm)
    lv_slices, excluded = lv_slice_volumes_ml(labelmaps, voxel_volume_ml, phase_numbers, cycle_phases)
    lv_curve = lv_slices.sum(axis=1)
    rv_slices = slice_volumes_ml(labelmaps, [int(Label.RV_BLOOD_POOL)], voxel_volume_ml)
    rv_curve = rv_slices.sum(axis=1)
    if timing is None:
        timing = find_cardiac_phases(timing_slice_volumes_ml(labelmaps, voxel_volume_ml)[0], trigger_times,
                                     reported_curve_ml=lv_curve, phase_numbers=phase_numbers,
                                     cycle_phases=cycle_phases, distinct_phases=distinct_phases)
    if trigger_order_note and trigger_order_note not in timing.notes:
        timing = replace(timing, notes=[trigger_order_note, *timing.notes])
    ed, es = timing.ed, timing.es
    if timing.rv_ed is None or timing.rv_es is None:
        timing = replace(timing, **dict(zip(("rv_ed", "rv_es"), rv_cardiac_phases(
            rv_curve, ed, es, phase_numbers, cycle_phases, distinct_phases))))
    elif not (0 <= timing.rv_ed < len(labelmaps) and 0 <= timing.rv_es < len(labelmaps)):
        raise ValueError(f"RV ED/ES phases {timing.rv_ed}/{timing.rv_es} are outside the {len(labelmaps)} phases given")
    rv_ed, rv_es = timing.rv_ed, timing.rv_es
    rv_flagged, rv_notes = rv_timing_notes(rv_slices, rv_ed, rv_es, phase_numbers, cycle_phases, distinct_phases)
    rv_notes = rv_phase_notes(rv_curve, ed, es, rv_ed, rv_es, phase_numbers) + rv_notes
    borderline = basal_borderline_notes(labelmaps, voxel_volume_ml, ed, es, phase_numbers, cycle_phases)
    lv_edv, lv_esv = float(lv_curve[ed]), float(lv_curve[es])
    rv_edv, rv_esv = float(rv_curve[rv_ed]), float(rv_curve[rv_es])
    result = CineMeasurements(
        lv_curve_ml=[float(v) for v in lv_curve], rv_curve_ml=[float(v) for v in rv_curve], ed_phase=ed, es_phase=es,
        lv_edv_ml=lv_edv, lv_esv_ml=lv_esv, lv_sv_ml=lv_edv - lv_esv, lv_ef_percent=ejection_fraction_percent(lv_edv, lv_esv),
        lv_mass_g=myocardial_mass_g(labelmaps[ed], voxel_volume_ml, density_g_per_ml),
        rv_edv_ml=rv_edv, rv_esv_ml=rv_esv, rv_sv_ml=rv_edv - rv_esv, rv_ef_percent=ejection_fraction_percent(rv_edv, rv_esv),
        timing=timing, basal_excluded=[(int(p), int(z)) for p, z in zip(*np.nonzero(excluded))],
        rv_flagged_phases=rv_flagged,
    )
    bsa, bsa_note = _bsa_or_note(height_m, weight_kg, bsa_formula, not_numbers)
    if bsa is not None:
        result.bsa_m2, result.bsa_formula = bsa, bsa_formula
        result.indexed = {
            "lv_edvi_ml_m2": lv_edv / bsa, "lv_esvi_ml_m2": lv_esv / bsa, "lv_svi_ml_m2": (lv_edv - lv_esv) / bsa,
            "lv_mass_index_g_m2": result.lv_mass_g / bsa, "rv_edvi_ml_m2": rv_edv / bsa, "rv_esvi_ml_m2": rv_esv / bsa,
            "rv_svi_ml_m2": (rv_edv - rv_esv) / bsa,
        }
    rv_found = rv_edv > 0
    values = {"lv_edv_ml": lv_edv, "lv_esv_ml": lv_esv, "lv_ef_percent": result.lv_ef_percent, **result.indexed}
    if rv_found:
        values.update({"rv_edv_ml": rv_edv, "rv_esv_ml": rv_esv, "rv_ef_percent": result.rv_ef_percent})
    else:  # no RV segmented: its zeros are not a finding
        values = {key: value for key, value in values.items() if not key.startswith("rv_")}
    result.coverage = stack_coverage(labelmaps[ed], slice_positions_mm, apex_first, ends_left_out_mm,
                                     extent_rule_withheld)
    coarse = temporal_resolution_note(trigger_times, len(labelmaps), distinct_phases)
    distinct_used = _distinct_indices(distinct_phases, len(labelmaps)) is not None
    timing_caveats = [text for text in (derived_note if distinct_used else None, coarse,
                                        rr_variation_note(slice_rr_ms)) if text]
    errors = known_errors(function_validation, bsa)
    lower_bounds = frozenset() if result.coverage.complete else LOWER_BOUND_KEYS
    judgements = range_judgements(values, sex, errors, lower_bounds)
    unjudged = lower_bound_note(values, sex, lower_bounds)
    mismatch, mismatch_near = stroke_volume_mismatch(result.lv_sv_ml, result.rv_sv_ml, result.coverage.complete,
                                                     errors.get(SV_DIFFERENCE)) if rv_found and lv_edv > 0 else (None, None)
    near = {key: flag_near for key, _, flag_near in judgements}  # None: judged without a known error
    if mismatch:
        near[SV_DIFFERENCE] = mismatch_near
    judged = [key for key in values if key in errors]
    if rv_found and lv_edv > 0 and SV_DIFFERENCE in errors:
        judged.append(SV_DIFFERENCE)
    result.flag_validation = {key: flag_validation_block(errors[key], near.get(key)) for key in judged}
    rv_accuracy = [rv_accuracy_note(rv_validation)] if rv_found and rv_validation is not None else []
    result.flags = (result.coverage.flags() + [text for _, text, _ in judgements] + ([unjudged] if unjudged else [])
                    + ([mismatch] if mismatch else [])
                    + ([not_judged_note(rv_found)] if bsa is None else [])
                    + rv_accuracy + timing_caveats + list(timing.notes) + borderline + rv_notes + bsa_note)
    return result


@dataclass(frozen=True)
class ReadingCaveat:
    """A cine flag that changes how one number is read (reading_caveats): `kind` one of READING_CAVEAT_KINDS,
    `value` the quantity behind it (unit by kind: the 1-based phase of the RV volume jump; the LVEF, %, that ES at
    the smallest LV volume of the reported curve gives; the LV - RV stroke volume difference, mL), `text` the caveat
    in a few words, for the row of the number it concerns (PDF page 1)."""

    kind: str
    value: float
    text: str


#: rv_edv_uncertain / rv_esv_uncertain: RV EDV / ESV read at a phase whose RV volume jumps (rv_timing_notes: RV EDV or
#: ESV and RVEF uncertain); es_uncertain: another ES reading changes LVEF (_reported_es_note: confirm ES);
#: sv_mismatch: LV and RV stroke volumes disagree (stroke_volume_mismatch)
READING_CAVEAT_KINDS = ("rv_edv_uncertain", "rv_esv_uncertain", "es_uncertain", "sv_mismatch")


def reading_caveats(cine_summary: dict | None) -> list[ReadingCaveat]:
    """The caveats among a cine summary's `flags` that change how one number is read (break51c #3: they were
    report-level text only), each with its quantity from the summary: the RV volume jump at the phase RV EDV / ESV is
    read at (`timing.rv_ed_phase` / `rv_es_phase`, else the LV's `ed_phase` / `es_phase`), the LVEF that the smallest
    volume of `lv_volume_curve_ml` under ES's, not at a phase left out as a jump (`timing.flagged_phases`; one only
    where no other is smaller), would give as ESV where ES is to be confirmed, |`lv_sv_ml` -
    `rv_sv_ml`| where the stroke volumes disagree. A caveat whose quantity the summary lacks is left out. [] for no
    summary."""
    summary = cine_summary if isinstance(cine_summary, dict) else {}
    flags = [str(flag) for flag in summary.get("flags") or []]
    timing = summary.get("timing") if isinstance(summary.get("timing"), dict) else {}
    numbers = summary_phase_numbers(summary)
    caveats = []
    for kind, name, quantity, key in (("rv_edv_uncertain", "end-diastolic", "EDV", "ed"),
                                      ("rv_esv_uncertain", "end-systolic", "ESV", "es")):
        phase = timing.get(f"rv_{key}_phase", summary.get(f"{key}_phase"))
        if phase is not None and any(flag.startswith(f"{RV_JUMP_START}{name} ") for flag in flags):
            number = phase_number(int(phase), numbers)
            caveats.append(ReadingCaveat(kind, float(number),
                                         f"RV {quantity} and RVEF uncertain (RV volume jumps at phase {number})"))
    curve, ed = summary.get("lv_volume_curve_ml"), summary.get("ed_phase")
    if curve and ed is not None and any(flag.startswith(REPORTED_ES_START) and flag.endswith(CONFIRM_ES_END)
                                        for flag in flags):
        # the flag's own first reading: the smallest phase not left out as a jump (timing.flagged_phases), a jump
        # only where no other phase is smaller than ES (review51 #3: a jump is likely the curve's minimum)
        es = summary.get("es_phase")
        flagged = {int(p) for p in timing.get("flagged_phases") or []}
        others = [p for p in range(len(curve)) if p not in (int(ed), es) and curve[p] is not None
                  and (es is None or curve[int(es)] is None or float(curve[p]) < float(curve[int(es)]))]
        pool = [p for p in others if p not in flagged] or others
        smallest = min(pool, key=lambda p: float(curve[p]), default=None)
        ef = None if smallest is None or float(curve[int(ed)]) <= float(curve[smallest]) else \
            ejection_fraction_percent(float(curve[int(ed)]), float(curve[smallest]))
        if ef is not None:
            caveats.append(ReadingCaveat("es_uncertain", float(ef),
                                         f"confirm ES: LVEF {number_text(ef)} % if ES at "
                                         f"{phase_name(smallest, numbers)}"
                                         + (" (left out as a jump)" if smallest in flagged else "")))
    lv_sv, rv_sv = summary.get("lv_sv_ml"), summary.get("rv_sv_ml")
    if lv_sv is not None and rv_sv is not None and any(flag.startswith(SV_MISMATCH_START) for flag in flags):
        difference = abs(float(lv_sv) - float(rv_sv))
        caveats.append(ReadingCaveat("sv_mismatch", difference,
                                     f"LV and RV SV disagree by {number_text(difference)} mL: check contours"))
    return caveats
