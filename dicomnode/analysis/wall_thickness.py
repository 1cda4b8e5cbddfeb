"""Maximal end-diastolic LV wall thickness on a short-axis label map, and the HCM wall-thickness flag.

Method (closest-point, "nearest neighbour" thickness): in each short-axis slice the endocardial border is every pixel
edge between LV blood pool and LV myocardium, the epicardial border every pixel edge between LV myocardium and
anything that is neither (RV blood pool, background), both as edge midpoints in millimetres (row and column spacing
apart, so anisotropic pixels are measured as they are). The wall thickness at an endocardial point is its distance to
the nearest epicardial point: the thickness perpendicular to the wall, as the SCMR post-processing recommendation asks
for short-axis wall thickness at end-diastole (Schulz-Menger J et al., J Cardiovasc Magn Reson 2020;22:19), and the
measure of the UK Biobank wall-thickness pipeline (Bai W et al., Nat Med 2020;26:1654-1662, endocardial to nearest
epicardial point). A band of n pixels measures n x the spacing across it exactly.

Artefacts a single point would pick up, and what is done about them:
- RV insertion points: the LV myocardium label widens outward where the RV wall joins it; a closest-point distance
  from the endocardium runs perpendicular to the wall and does not follow that wedge.
- A trabecula touching the wall, and the pixel staircase, make single points thick: each point's thickness is the
  median over the endocardial points within LOCAL_MEDIAN_RADIUS_MM of it (about 1 cm of endocardium), so a bump a
  few millimetres across does not set the maximum, while hypertrophy of HCM (centimetres) does; a crest narrower
  than about 1 cm reads up to about 1 mm low.
- Basal slices: the node's basal-slice rule (cine_metrics.BASAL_RULE) decides: a slice whose LV blood pool is less
  than half surrounded by myocardium at ED (LV outflow tract, atrium) is not measured; the apical cap (myocardium
  without cavity) has no endocardium and is not measured. Where the stack's basal end is known, its most basal slice
  that the 50 % rule keeps is not measured either when its LV blood pool is less than BASAL_END_POOL_FRACTION of
  the next kept slice's (BASAL_END_RULE): from apex to base the LV cavity widens up to the mitral annulus, so a
  basal end slice with a much smaller cavity cuts the valve plane, the atrioventricular groove or the atrium
  obliquely, and a ring the segmentation draws there passes the 50 % rule (ACDC patient001, a dilated heart:
  15.4 mm on the atrial slice above the experts' first LV slice, 11.0 mm on theirs; break49b #1). An atrial or
  LVOT slice above it that the 50 % rule leaves out does not stand in for it (review49 #3). A basal septum
  hypertrophied into the cavity narrows it too: where the other slices measured already reach HCM_THRESHOLD_MM,
  the basal end slice is measured (the criterion is met either way, the maximum stays the heart's); below that
  the labels alone cannot tell the two apart and the slice is left out.
What it cannot correct: a papillary muscle (5 mm or more across) or RV trabeculation / septal band that the
segmentation labelled as LV myocardium, and through-plane obliquity near the apex (all make the wall thicker); a
thickening with steep sides that bulges outward reads as the distance to its sides (the closest point).

HCM criterion: maximal LV wall thickness >= 15 mm in any segment, in an adult, not explained by loading conditions
(HCM_SOURCE). Pure functions: numpy in, numbers out; labels are node labels (dicomnode.labels).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy.spatial import cKDTree

from dicomnode.analysis.aha import SEGMENT_NAMES, aha_segments_for_volume
from dicomnode.analysis.cine_metrics import BASAL_SURROUND_FRACTION, myocardial_surround
from dicomnode.labels import MYOCARDIUM_LABELS, Label
from dicomnode.rounding import number_text

METHOD = ("closest-point distance from each endocardial to the nearest epicardial border point in each short-axis "
          "slice at ED (perpendicular to the wall; Schulz-Menger 2020, Bai 2020), median over about 1 cm of "
          "endocardium; slices the basal rule leaves out, the apical cap and a basal end slice cutting the valve "
          "plane (BASAL_END_RULE) not measured")
#: a basal end slice whose LV blood pool is under this share of the next slice's is not measured (BASAL_END_RULE)
BASAL_END_POOL_FRACTION = 0.5
BASAL_END_RULE = ("the most basal slice the basal rule keeps at ED is not measured where the stack's basal end is "
                  "known, its LV blood pool is less than half the next slice's and the other slices stay under 15 mm: "
                  "a cut through the valve plane, the AV groove or the atrium (measured on 100 held-out ACDC patients "
                  "of 5 cross-validation folds, "
                  "engines/checkpoints/cine_basal_rules: non-HCM hearts at >= 15 mm 13 -> 12 of 80, HCM 18 of 20 "
                  "unchanged, the experts' own maxima unchanged in all 100)")
#: radius (mm) of the endocardial neighbourhood whose median thickness a point gets (see the module docstring)
LOCAL_MEDIAN_RADIUS_MM = 5.0
#: HCM wall-thickness criterion (mm), adults
HCM_THRESHOLD_MM = 15.0
HCM_SOURCE = ("ESC 2014 HCM guideline (Elliott PM et al., Eur Heart J 2014;35:2733-2779) and AHA/ACC 2020 HCM "
              "guideline (Ommen SR et al., Circulation 2020;142:e558-e631): maximal LV wall thickness >= 15 mm in any "
              "segment in an adult, not explained by loading conditions")
#: start of the flag text (wall_thickness_flag), for the outputs that list the cine's checks
WALL_THICKNESS_START = "maximal LV wall thickness"
#: the shipped cine model's maximal ED wall thickness (engines/models/cine_unet, its epicardial offset, the node's
#: segmentation path and this module) against the same measure on the ACDC experts' myocardium, on the 20 ACDC
#: patients the model did not train on, all five groups (engines/checkpoints/cine_basal_rules, 2026-12-07). The earlier
#: 0.92 mm MAE quoted here (engines/cine/wall_thickness.json: 20 HCM + 20 normal, 32 of the 40 in the model's training
#: data; 0.66 mm re-measured the same day) did not describe a hospital heart: a dilated or infarcted heart was never
#: measured there (break49b #1). The experts'
#: own contours reach 15 mm on 6 of 80 non-HCM ACDC hearts (infarcted), the model's on 12 of 80 in 5-fold CV of a
#: sibling recipe (cine_basal3, no epicardial offset).
MODEL_VALIDATION = {"n": 20, "bias_mm": 0.53, "sd_mm": 1.8, "mae_mm": 1.3, "same_side_of_cutoff": 19,
                    "data": "20 ACDC hearts the model did not train on (4 HCM, 16 dilated, infarcted, abnormal-RV or "
                            "normal), its myocardium against the experts'",
                    "non_hcm_n": 16, "non_hcm_at_or_above": 3, "non_hcm_expert_at_or_above": 2}
#: model card metrics giving the LV mass agreement with expert readers, cross-validated first
CARD_LV_MASS = ("acdc_cv_lv_mass_g", "acdc_lv_mass_g")


@dataclass(frozen=True)
class MaxWallThickness:
    """The maximal ED wall thickness of one stack; `max_mm` None (with `reason`) where no slice could be measured."""

    max_mm: float | None
    slice_index: int | None = None  # volume order (ascending along the stack normal), as summary.json's slices
    segment: int | None = None  # AHA segment of the myocardium at the maximum (None: AHA segments not assigned)
    per_slice_max_mm: dict[int, float] = field(default_factory=dict)
    basal_slices_excluded: tuple[int, ...] = ()
    reason: str | None = None
    basal_end_slice: int | None = None  # the basal end slice left out by BASAL_END_RULE; None: none


    def summary(self) -> dict:
        """The summary.json `cine.max_wall_thickness` block."""
        return {"max_mm": None if self.max_mm is None else round(float(self.max_mm), 2),
                "slice_index": self.slice_index, "segment": self.segment,
                "segment_name": SEGMENT_NAMES.get(self.segment) if self.segment else None,
                "per_slice_max_mm": {str(k): round(float(v), 2) for k, v in sorted(self.per_slice_max_mm.items())},
                "basal_slices_excluded": list(self.basal_slices_excluded),
                "basal_end_slice_not_measured": self.basal_end_slice, "basal_end_rule": BASAL_END_RULE,
                "method": METHOD,
                "threshold_mm": HCM_THRESHOLD_MM, "threshold_source": HCM_SOURCE, "reason": self.reason}


def _edge_midpoints(inner: np.ndarray, outer: np.ndarray, spacing_rc) -> tuple[np.ndarray, np.ndarray]:
    """(midpoints (n, 2) in mm of the 4-neighbour pixel edges with an `inner` pixel on one side and an `outer` pixel
    on the other, (n, 2) row/column index of the inner pixel of each)."""
    points, owners = [], []
    rows, cols = inner.shape
    for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        shifted = np.zeros_like(outer)  # shifted[r, c] = outer[r + dr, c + dc], False beyond the image
        shifted[max(-dr, 0):rows - max(dr, 0), max(-dc, 0):cols - max(dc, 0)] = \
            outer[max(dr, 0):rows - max(-dr, 0), max(dc, 0):cols - max(-dc, 0)]
        r, c = np.nonzero(inner & shifted)
        points.append(np.stack([(r + dr / 2.0) * spacing_rc[0], (c + dc / 2.0) * spacing_rc[1]], axis=1))
        owners.append(np.stack([r, c], axis=1))
    return np.concatenate(points), np.concatenate(owners)


def slice_wall_thickness_mm(labels2d: np.ndarray, pixel_spacing_rc: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Wall thickness (mm) at each endocardial border point of one short-axis slice (node labels), after the local
    median (LOCAL_MEDIAN_RADIUS_MM), and the (n, 2) row/column of the myocardium pixel at each point; empty arrays
    where the slice has no LV blood pool bordering myocardium. The image edge counts as outside the heart."""
    labels2d = np.asarray(labels2d)
    spacing = tuple(float(v) for v in pixel_spacing_rc)
    if labels2d.ndim != 2 or len(spacing) != 2 or not all(math.isfinite(v) and v > 0 for v in spacing):
        raise ValueError(f"need a 2-D label map and two positive pixel spacings, got {labels2d.shape}, {pixel_spacing_rc}")
    myocardium = np.isin(labels2d, [int(v) for v in MYOCARDIUM_LABELS])
    cavity = labels2d == int(Label.LV_BLOOD_POOL)
    padded = np.pad(myocardium, 1)
    endo, owners = _edge_midpoints(padded, np.pad(cavity, 1), spacing)
    epi, _ = _edge_midpoints(padded, ~np.pad(myocardium | cavity, 1), spacing)
    if not len(endo) or not len(epi):
        return np.zeros(0), np.zeros((0, 2), dtype=int)
    raw, _ = cKDTree(epi).query(endo)
    neighbours = cKDTree(endo).query_ball_point(endo, LOCAL_MEDIAN_RADIUS_MM)
    local = np.array([np.median(raw[near]) for near in neighbours])
    return local, owners - 1


def max_wall_thickness(labels: np.ndarray, pixel_spacing_rc: Sequence[float],
                       segment_map: np.ndarray | None = None, basal_end: str | None = None) -> MaxWallThickness:
    """The maximal wall thickness (mm) of an end-diastolic short-axis label map (slices, rows, cols), node labels,
    with its slice and (given the AHA `segment_map` of the same shape, aha.AHAResult.segment_map) its AHA segment.

    Slices the basal-slice rule leaves out (LV blood pool < BASAL_SURROUND_FRACTION surrounded by myocardium, as
    cine_metrics.lv_slice_volumes_ml) are not measured. `basal_end`: "first" or "last", the end of the stack that is
    basal (the node: cine.apex_first of the volume): the most basal slice the basal rule keeps is not measured
    either where its LV blood pool is less than BASAL_END_POOL_FRACTION of the next kept slice's and the other
    slices' maximum is under HCM_THRESHOLD_MM (BASAL_END_RULE); None (the end unknown): every slice the basal rule
    keeps is.
    Raises ValueError for a label map that is not 3-D integer, a bad spacing or another basal_end; a map without any
    measurable slice gives max_mm None with the reason."""
    labels = np.asarray(labels)
    if labels.ndim != 3 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an integer (slices, rows, cols) array, got {labels.dtype} {labels.shape}")
    if segment_map is not None and np.shape(segment_map) != labels.shape:
        raise ValueError(f"segment_map shape {np.shape(segment_map)} differs from the labels' {labels.shape}")
    surround = myocardial_surround(labels[None])[0]
    has_pool = (labels == int(Label.LV_BLOOD_POOL)).any(axis=(1, 2))
    if basal_end not in (None, "first", "last"):
        raise ValueError(f"basal_end must be 'first', 'last' or None, got {basal_end!r}")
    excluded = tuple(int(k) for k in np.flatnonzero(has_pool & (surround < BASAL_SURROUND_FRACTION)))
    pool = (labels == int(Label.LV_BLOOD_POOL)).sum(axis=(1, 2))
    # the basal end is the most basal slice the basal rule keeps: an atrial or LVOT slice above it, already left out,
    # must not stand in for it (review49 #3)
    counted = np.array([k for k in np.flatnonzero(pool) if k not in excluded], dtype=int)
    counted = counted if basal_end == "first" else counted[::-1]
    basal_slice = (int(counted[0]) if basal_end is not None and counted.size > 1
                   and pool[counted[0]] < BASAL_END_POOL_FRACTION * pool[counted[1]] else None)
    found: dict[int, tuple[float, tuple[int, int]]] = {}
    for k in range(labels.shape[0]):
        if k in excluded:
            continue
        thickness, owners = slice_wall_thickness_mm(labels[k], pixel_spacing_rc)
        if thickness.size:
            at = int(np.argmax(thickness))
            found[k] = (float(thickness[at]), (int(owners[at, 0]), int(owners[at, 1])))
    if basal_slice is not None and max((v for k, (v, _) in found.items() if k != basal_slice),
                                       default=0.0) >= HCM_THRESHOLD_MM:
        basal_slice = None  # the other slices meet the HCM criterion: a hypertrophied basal septum keeps its maximum
    per_slice = {k: value for k, (value, _) in found.items() if k != basal_slice}
    best: tuple[float, int, tuple[int, int]] | None = None
    for k, (value, owner) in found.items():
        if k != basal_slice and (best is None or value > best[0]):
            best = (value, k, owner)
    if best is None:
        return MaxWallThickness(None, per_slice_max_mm=per_slice, basal_slices_excluded=excluded,
                                reason="no slice with LV blood pool inside LV myocardium at ED"
                                       + (" below the most basal one" if basal_slice is not None else ""),
                                basal_end_slice=basal_slice)
    value, k, (r, c) = best
    segment = int(segment_map[k, r, c]) if segment_map is not None else 0
    return MaxWallThickness(value, k, segment or None, per_slice, excluded, basal_end_slice=basal_slice)


def max_wall_thickness_for_volume(labels_ed: np.ndarray, volume, name_segment: bool = True,
                                  apex_first: bool | None = None) -> MaxWallThickness:
    """`max_wall_thickness` on a dicomnode Volume's grid, the AHA segment from its geometry
    (aha.aha_segments_for_volume); without geometry or RV insertion points, or with `name_segment` False (the
    stack's AHA segments withheld: aha.aha_summary_for_stack), the segment is None. apex_first: whether the first
    slice is the apical end (cine.apex_first; None: unknown), which names the basal end max_wall_thickness leaves
    out."""
    labels_ed = np.asarray(labels_ed)
    segment_map = None
    try:
        found = aha_segments_for_volume(labels_ed, volume, scar=False) if name_segment else None
        segment_map = found.segment_map if found is not None and found.applicable else None
    except (AttributeError, TypeError, ValueError):
        pass  # no geometry, or a stack the AHA model cannot orient: the thickness stands without its segment
    basal_end = None if apex_first is None else ("last" if apex_first else "first")
    return max_wall_thickness(labels_ed, volume.pixel_spacing, segment_map, basal_end)


def lv_mass_bias_from_card(card: dict | None) -> float | None:
    """The LV mass bias (g, model minus expert readers) a cine model card states (CARD_LV_MASS), or None."""
    metrics = (card or {}).get("metrics") if isinstance(card, dict) else None
    for key in CARD_LV_MASS:
        block = metrics.get(key) if isinstance(metrics, dict) else None
        if isinstance(block, dict) and isinstance(block.get("mean_error"), (int, float)):
            return float(block["mean_error"])
    return None


def where_text(block: dict, slices: Sequence[dict] | None = None, short: bool = False) -> str:
    """Where the maximum lies, in a reader's words: "AHA segment 3 basal inferoseptal, image S:300 I:45 (slice 7 of
    10 in series order)": the ED source image as a viewer's overlay names it (SeriesNumber, InstanceNumber, as the
    PDF's image captions; "instance 45" where the series number is unknown), then its place among the stack's ED
    images in SeriesNumber / InstanceNumber order, counted from 1: the order of the source series in a viewer and the
    InstanceNumber of the ED display copy the SR's outline is drawn on (results.display_copy numbers its copies so).
    `slices`: summary.json's cine `slices` entries (slice_index, ed.series_number, ed.instance_number). Where the
    images give no such order (an instance number missing or shared by two slices: frames of one multi-frame
    instance) no count is given beside the image; without any instance number, "slice 4 of 10" in volume order
    (ascending along the stack normal, summary `slice_index` + 1). `short`: "AHA 3, S:300 I:45" (the PDF's
    key-number cell). A tester could not find "slice 9 of 12, instance 80" in OHIF, whose copy series count the
    slices the other way than the volume order: the count beside an image is never the volume order."""
    parts = []
    if block.get("segment"):
        parts.append(f"AHA {block['segment']}" if short else
                     f"AHA segment {block['segment']} {block.get('segment_name') or ''}".strip())
    k = block.get("slice_index")
    if isinstance(k, int):
        entry = next((e for e in slices or () if isinstance(e, dict) and e.get("slice_index") == k), None)
        image = (entry or {}).get("ed") or {}
        instance, series = image.get("instance_number"), image.get("series_number")
        place = _series_order_place(k, slices)
        counted = f"slice {place} of {len(slices)} in series order" if place else None
        if instance is not None and series is not None:
            named = f"S:{series} I:{instance}"
            parts.append(named if short else _named_image(f"image {named}", counted))
        elif instance is not None:
            parts.append(counted or f"instance {instance}" if short else _named_image(f"instance {instance}", counted))
        else:
            parts.append(f"slice {k + 1}" + (f" of {len(slices)}" if slices else ""))
    return ", ".join(parts)


def _named_image(named: str, counted: str | None) -> str:
    """"image S:5 I:139 (slice 7 of 10 in series order)", or the image alone without a count."""
    return f"{named} ({counted})" if counted else named


def _series_order_place(k: int, slices: Sequence[dict] | None) -> int | None:
    """The 1-based place of slice index `k`'s ED image among all slices' ED images sorted by (SeriesNumber,
    InstanceNumber) (as a viewer lists a stack merged from one-slice series and as the ED display copies are
    numbered); None where a slice lacks its InstanceNumber, two slices share one, or `k` is not listed."""
    keys = {}
    for entry in slices or ():
        entry = entry if isinstance(entry, dict) else {}
        image = entry.get("ed") or {}
        instance, index = image.get("instance_number"), entry.get("slice_index")
        if not isinstance(instance, int) or not isinstance(index, int):
            return None
        series = image.get("series_number")
        keys[index] = (series if isinstance(series, int) else 0, instance)
    if k not in keys or len(set(keys.values())) != len(keys):
        return None
    return sorted(keys.values()).index(keys[k]) + 1


def wall_thickness_text(block: dict | None, slices: Sequence[dict] | None = None, short: bool = False) -> str | None:
    """"21.3 mm (AHA segment 3 basal inferoseptal, image S:300 I:45 (slice 7 of 10 in series order))": the value and
    where (where_text, `short` as there); None without a value."""
    value = block.get("max_mm") if isinstance(block, dict) else None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    where = where_text(block, slices, short)
    return f"{number_text(value, 1)} mm" + (f" ({where})" if where else "")


def wall_thickness_flag(block: dict | None, slices: Sequence[dict] | None = None,
                        mass_bias_g: float | None = None, validation: dict | None = None) -> str | None:
    """The flag for a `MaxWallThickness.summary()` block at or above HCM_THRESHOLD_MM: the value, where (where_text),
    the criterion and its source, the measurement's validated error (`validation`, as MODEL_VALIDATION: the model's
    maximum against the experts' on hearts it did not train on, and how many of those without HCM reached the
    cut-off; None: not said) and that the automatic myocardium is drawn thick (mass_bias_g: the model card's LV mass bias vs expert
    readers, g), so that a value near the cut-off is measured on the images. None below the cut-off or without a
    value. An adult criterion: reference_age withholds it under 18."""
    value = block.get("max_mm") if isinstance(block, dict) else None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < HCM_THRESHOLD_MM:
        return None
    error = (f"; error vs expert readers {validation['mae_mm']:g} mm MAE (bias {validation['bias_mm']:+g} mm) on "
             f"{validation['data']}" if isinstance(validation, dict) and validation.get("mae_mm") is not None else "")
    if error and validation.get("non_hcm_n"):
        error += (f"; {validation['non_hcm_at_or_above']} of those {validation['non_hcm_n']} without HCM also measured "
                  f">= {HCM_THRESHOLD_MM:g} mm (on the experts' contours "
                  f"{validation.get('non_hcm_expert_at_or_above', 0)})")
    bias = (f"; the model's myocardium is over-segmented (LV mass bias {mass_bias_g:+.1f} g)"
            if mass_bias_g is not None and mass_bias_g > 0 else "")
    return (f"{WALL_THICKNESS_START} {number_text(value, 1)} mm at ED ({where_text(block, slices)}) >= "
            f"{HCM_THRESHOLD_MM:g} mm: meets the HCM wall-thickness criterion in adults without another cause of "
            f"hypertrophy (ESC 2014, AHA/ACC 2020){error}{bias}; near {HCM_THRESHOLD_MM:g} mm, measure on the images")
