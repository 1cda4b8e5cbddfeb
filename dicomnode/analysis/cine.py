"""Cine short-axis pipeline: segment every phase of the preferred SAX stack, then measure LV/RV function."""
from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from dicomnode.analysis.aha import aha_summary_for_stack, geometry_warnings
from dicomnode.analysis.cine_metrics import (BASAL_RULE, BSA_FORMULA_CODES, ERROR_QUANTITY, MIN_PHASES_FOR_CURVE,
                                             PAPILLARY_MASS_CODE, PAPILLARY_MUSCLES, SV_DIFFERENCE, measure_cine,
                                             other_bsa_m2, trigger_phase)
from dicomnode.analysis.derived_phases import derived_phases
from dicomnode.analysis.ed_es_check import ed_es_objections, not_ed_es_reason, rr_interval_ms, small_ejection_note
from dicomnode.analysis.phase_text import COUNTED_FROM, merged_numbers, other_views_text, phase_number
from dicomnode.analysis.plausibility import implausible_size_notes
from dicomnode.analysis.reference_age import (age_adjusted_flags, age_note, lv_extent_rule_withheld,
                                              patient_child_size, reference_ranges_summary)
from dicomnode.analysis.wall_thickness import (MODEL_VALIDATION, lv_mass_bias_from_card, max_wall_thickness_for_volume,
                                               wall_thickness_flag)
from dicomnode.analysis.pipeline import AnalysisContext, Declined, PipelineResult, SegmentationResult
from dicomnode.cmr.intensity import magnitude_floor_note, magnitude_floor_shift, normalise_slices
from dicomnode.cmr.orientation import anatomical_turn, canonical_inplane, rv_direction_deg
from dicomnode.cmr.recognize import CANONICAL_LONG_AXIS
from dicomnode.cmr.resample import InplaneResampler
from dicomnode.cmr.source_encoding import lossy_compression
from dicomnode.cmr.structures import keep_largest_structures
from dicomnode.cmr.types import StudyError
from dicomnode.labels import Label
from dicomnode.rounding import stored_value

if TYPE_CHECKING:  # pragma: no cover
    from dicomnode.analysis.cine_metrics import CineMeasurements
    from dicomnode.cmr.study import CMRStudy
    from dicomnode.config import Config
    from dicomnode.inference import Runtime

log = logging.getLogger("dicomnode.analysis.cine")

#: preprocessing defaults; the model card's "input" block overrides them (training wrote it)
DEFAULT_TARGET_SPACING_MM = 1.5
DEFAULT_CROP_SIZE = 128
#: model output channel -> node label (dicomnode.labels.Label)
DEFAULT_CHANNEL_LABELS = (0, 1, 2, 5)
#: what a model sees beside the slice it segments: nothing ("none", input (N, 1, crop, crop)), the same slice at
#: the cine's first phase ("first_phase": ED by the R-wave trigger, input (N, 2, crop, crop) [slice, first phase]),
#: or its two neighbours in the stack at the same phase ("neighbours", 2.5-D: input (N, 3, crop, crop) [slice,
#: previous slice, next slice] in the stack's order; at either end of the stack the missing neighbour is the slice
#: itself; trained with the two neighbours swapped at random, so the stack's direction does not matter)
CONTEXTS = ("none", "first_phase", "neighbours")
#: input channels per context
CONTEXT_CHANNELS = {"none": 1, "first_phase": 2, "neighbours": 3}


def labels_from_probabilities(probabilities: np.ndarray, resampler: InplaneResampler,
                              channel_labels=DEFAULT_CHANNEL_LABELS, outside_channel: int = 0,
                              epicardial_offset: float = 0.0) -> np.ndarray:
    """(..., C, out, out) class probabilities on the model grid -> (..., rows, cols) node labels on the source grid.

    Equal to the arg-max of the linearly interpolated probabilities (InplaneResampler.inverse_probabilities; source
    pixels outside the model grid are background). Only the source box around the non-background crop pixels is
    interpolated: a convex combination of probability vectors whose arg-max is background keeps background as
    arg-max, so nothing outside that box can differ. The box is a sub-grid of the source with the same spacing,
    so it has its own InplaneResampler whose centre is shifted by the box origin.

    `epicardial_offset` (logit units, >= 0): a source pixel decided LV myocardium becomes background where the
    background score times exp(offset) reaches the myocardium score, unless it touches the LV or the RV blood pool
    (8-neighbour). Only the outer wall facing background moves: every blood-pool pixel and the myocardium the pools'
    outlines touch stay as decided, so the basal-slice rule (cine_metrics.myocardial_surround), the RV insertion points
    (aha), LV and RV volumes and ejection fractions do not change (engines.cine.calibrate_epicardium: the network draws
    the wall thicker than ACDC's readers).
    """
    probabilities = np.asarray(probabilities, dtype=np.float32)
    lookup = np.asarray(channel_labels, dtype=np.uint8)
    labels = np.full(probabilities.shape[:-3] + resampler.shape_rc, lookup[outside_channel], dtype=np.uint8)
    foreground = (np.argmax(probabilities, axis=-3) != outside_channel).reshape((-1,) + probabilities.shape[-2:]).any(axis=0)
    if not foreground.any():
        return labels
    box = []
    for axis, hits in enumerate((np.flatnonzero(foreground.any(axis=1)), np.flatnonzero(foreground.any(axis=0)))):
        # model pixel u sits at source coordinate offset + u * scale; one model pixel of margin for the stencil
        low = resampler.offset[axis] + (hits[0] - 1) * resampler.scale[axis]
        high = resampler.offset[axis] + (hits[-1] + 1) * resampler.scale[axis]
        start, stop = max(int(np.floor(low)), 0), min(int(np.ceil(high)) + 1, resampler.shape_rc[axis])
        if stop <= start:
            return labels
        box.append(slice(start, stop))
    sub = InplaneResampler((box[0].stop - box[0].start, box[1].stop - box[1].start), resampler.spacing_rc,
                           resampler.target_spacing, resampler.out_size,
                           centre_rc=(resampler.centre_rc[0] - box[0].start, resampler.centre_rc[1] - box[1].start))
    scores = sub.inverse_probabilities(probabilities)
    scores[..., outside_channel, :, :] += (scores.sum(axis=-3) == 0)  # outside the model grid: background
    decided = lookup[np.argmax(scores, axis=-3)]
    if epicardial_offset > 0 and int(Label.LV_MYOCARDIUM) in lookup.tolist():
        myocardium = lookup.tolist().index(int(Label.LV_MYOCARDIUM))
        in_plane = np.ones((1,) * (decided.ndim - 2) + (3, 3), bool)
        beside_pool = ndimage.binary_dilation((decided == Label.LV_BLOOD_POOL) | (decided == Label.RV_BLOOD_POOL),
                                              in_plane)
        outer = (decided == Label.LV_MYOCARDIUM) & ~beside_pool & (
            scores[..., outside_channel, :, :] * np.float32(np.exp(epicardial_offset)) >= scores[..., myocardium, :, :])
        decided[outer] = lookup[outside_channel]
    labels[(Ellipsis,) + tuple(box)] = decided
    return labels


@dataclass(frozen=True)
class CineModelSpec:
    """Preprocessing the model was trained with, read from its card (engines/models/cine_unet.json)."""

    target_spacing: float = DEFAULT_TARGET_SPACING_MM
    crop_size: int = DEFAULT_CROP_SIZE
    channel_labels: tuple[int, ...] = DEFAULT_CHANNEL_LABELS
    context: str = "none"
    #: added to each channel's logit before the softmax (card output.channels[].logit_offset; empty: none): a decision
    #: threshold calibrated on cross-validation (engines.cine.calibrate), e.g. against a boundary drawn systematically
    #: thicker than the reference convention
    logit_offsets: tuple[float, ...] = ()
    #: the myocardium / background decision alone moved by this many logits (card output.epicardial_logit_offset;
    #: labels_from_probabilities): the outer wall drawn thinner without touching any blood pool
    epicardial_offset: float = 0.0

    def __post_init__(self):
        if self.context not in CONTEXTS:
            raise ValueError(f"cine model input context {self.context!r} is not one of {CONTEXTS}")
        if self.logit_offsets and len(self.logit_offsets) != len(self.channel_labels):
            raise ValueError(f"{len(self.logit_offsets)} logit offsets for {len(self.channel_labels)} channels")
        if not all(np.isfinite(v) and abs(v) <= 10 for v in self.logit_offsets):
            raise ValueError(f"logit offsets must be finite and within ±10, got {self.logit_offsets}")
        if not (np.isfinite(self.epicardial_offset) and 0 <= self.epicardial_offset <= 10):
            raise ValueError(f"the epicardial logit offset must be finite and within 0-10, got {self.epicardial_offset}")

    @property
    def input_channels(self) -> int:
        return CONTEXT_CHANNELS[self.context]

    @classmethod
    def from_card(cls, card: dict) -> "CineModelSpec":
        """Raises ValueError when the card lacks input.spacing_mm / input.crop_size / output.channels or names an
        unknown input.context (absent: "none")."""
        try:
            spec = card["input"]
            channels = sorted(card["output"]["channels"], key=lambda c: c["channel"])
            offsets = tuple(float(c.get("logit_offset", 0.0)) for c in channels)
            return cls(float(spec["spacing_mm"]), int(spec["crop_size"]), tuple(int(c["node_label"]) for c in channels),
                       str(spec.get("context", "none")), offsets if any(offsets) else (),
                       float(card["output"].get("epicardial_logit_offset", 0.0)))
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"cine model card lacks input.spacing_mm / input.crop_size / output.channels: {error}") from error


def softmax(logits: np.ndarray, axis: int) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def preprocess_cine(pixels: np.ndarray, spacing_rc: tuple[float, float], spec: CineModelSpec,
                    first_phase: int = 0, centre_rc: tuple[float, float] | None = None) -> tuple[np.ndarray, InplaneResampler]:
    """(phases, slices, rows, cols) -> model input (phases*slices, K, crop, crop) and the resampler to map back.

    The crop is centred on source pixel `centre_rc` (row, col; default the image centre, see locate_heart).
    K = 1; 2 with context "first_phase": channel 1 is the same slice at phase `first_phase` (the R-wave phase,
    cine_metrics.trigger_phase), so at that phase both channels are equal; 3 with context "neighbours": channels 1
    and 2 are the previous and the next slice of the stack at the same phase (the slice itself at either end of the
    stack). Every channel is normalised on its own.
    Raises ValueError for pixels that are not 4-D or a first phase outside them.
    """
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.ndim != 4:
        raise ValueError(f"cine pixels must be (phases, slices, rows, cols), got shape {pixels.shape}")
    phases, slices = pixels.shape[:2]
    resampler = InplaneResampler(pixels.shape[-2:], tuple(spacing_rc), spec.target_spacing, spec.crop_size,
                                 centre_rc=centre_rc)
    crops = normalise_slices(resampler.forward(pixels.reshape((-1,) + pixels.shape[-2:])))
    if spec.context == "none":
        return crops[:, None], resampler
    if spec.context == "neighbours":
        crops = crops.reshape((phases, slices) + crops.shape[-2:])
        previous = crops[:, [max(z - 1, 0) for z in range(slices)]]
        following = crops[:, [min(z + 1, slices - 1) for z in range(slices)]]
        return np.stack([crops, previous, following], axis=2).reshape((phases * slices, 3) + crops.shape[-2:]), resampler
    if not 0 <= first_phase < phases:
        raise ValueError(f"first phase {first_phase} is outside the cine's {phases} phases")
    crops = crops.reshape((phases, slices) + crops.shape[-2:])
    first = np.broadcast_to(crops[first_phase:first_phase + 1], crops.shape)
    return np.stack([crops, first], axis=2).reshape((phases * slices, 2) + crops.shape[-2:]), resampler


#: the crop is re-centred on the heart it shows until it moves less than RECENTRE_MM, at most LOCALISE_ROUNDS times
RECENTRE_MM = 4.0
LOCALISE_ROUNDS = 3
#: LV (blood pool + myocardium) area on the probe slices below which no heart is taken as found in a crop (mm²)
MIN_LV_AREA_MM2 = 200.0
#: a heart whose box stays this far inside the image-centred crop keeps that crop (mm): the network was trained on
#: crops centred on the image (± 30 mm), and re-centring hearts it already saw whole changed no mean but moved single
#: patients both ways (ACDC CV LVEF error SD 5.6 -> 6.7 points)
EDGE_MARGIN_MM = 10.0
#: RV pixels farther than this from the LV's centre do not move the crop (mm)
MAX_RV_DISTANCE_MM = 90.0
#: probe slices for localisation: at most this many around the middle of the stack, at the first phase
PROBE_SLICES = 3


def _probe_labels(probe: np.ndarray, spacing_rc, run_model, spec: CineModelSpec, centre_rc):
    """Node labels (slices, crop, crop) of the probe slices (1, slices, rows, cols) on the model's crop centred on
    `centre_rc` (None: the image centre), the LV and the RV each their largest connected component, and the crop's
    resampler."""
    inputs, resampler = preprocess_cine(probe, spacing_rc, spec, 0, centre_rc)
    logits = np.asarray(run_model(inputs), dtype=np.float32)
    if spec.logit_offsets:
        logits = logits + np.asarray(spec.logit_offsets, dtype=np.float32)[:, None, None]
    labels = np.asarray(spec.channel_labels, np.uint8)[np.argmax(logits, axis=1)]
    return keep_largest_structures(labels), resampler


def heart_direction(pixels: np.ndarray, spacing_rc: tuple[float, float], run_model, spec: CineModelSpec,
                    first_phase: int, centre_rc) -> float | None:
    """Direction (degrees, dicomnode.cmr.orientation.rv_direction_deg) from the LV to the RV the model finds on the
    PROBE_SLICES middle slices at `first_phase`, in the crop centred on `centre_rc`; None where it finds no RV.
    pixels: (phases, slices, rows, cols)."""
    slices = pixels.shape[1]
    low = max(0, (slices - PROBE_SLICES) // 2)
    probe = np.asarray(pixels[first_phase:first_phase + 1, low:low + min(PROBE_SLICES, slices)], dtype=np.float32)
    labels, _ = _probe_labels(probe, spacing_rc, run_model, spec, centre_rc)
    lv = (labels == Label.LV_BLOOD_POOL) | (labels == Label.LV_MYOCARDIUM)
    return rv_direction_deg(lv, labels == Label.RV_BLOOD_POOL, (spec.target_spacing, spec.target_spacing))


def _probe_heart(probe: np.ndarray, spacing_rc, run_model, spec: CineModelSpec,
                 centre_rc) -> tuple[float, tuple[float, float] | None, float]:
    """LV area (mm², summed over the probe slices) the model finds in the crop centred on `centre_rc`, the source
    (row, col) centre of the box around that LV and the RV (their largest connected components), and the distance
    from that box to the crop's nearest edge (mm)."""
    labels, resampler = _probe_labels(probe, spacing_rc, run_model, spec, centre_rc)
    lv = (labels == Label.LV_BLOOD_POOL) | (labels == Label.LV_MYOCARDIUM)
    area = float(lv.sum()) * spec.target_spacing ** 2
    if area < MIN_LV_AREA_MM2:
        return area, None, 0.0
    lv_rc = np.argwhere(lv.any(axis=0))
    rv_rc = np.argwhere((labels == Label.RV_BLOOD_POOL).any(axis=0))
    # an RV is beside its LV: farther than MAX_RV_DISTANCE_MM from the LV's centre it is another structure
    rv_rc = rv_rc[np.hypot(*(rv_rc - lv_rc.mean(axis=0)).T) * spec.target_spacing <= MAX_RV_DISTANCE_MM]
    heart = np.concatenate([lv_rc, rv_rc])
    middle = (heart.min(axis=0) + heart.max(axis=0)) / 2.0
    margin = float(min(heart.min(), spec.crop_size - 1 - heart.max())) * spec.target_spacing
    return area, tuple(float(resampler.offset[axis] + middle[axis] * resampler.scale[axis]) for axis in range(2)), margin


def locate_heart(pixels: np.ndarray, spacing_rc: tuple[float, float], run_model, spec: CineModelSpec = CineModelSpec(),
                 first_phase: int = 0) -> tuple[float, float] | None:
    """Source (row, col) pixel to centre the model's crop on: the middle of the box around the LV and the RV.

    The crop (spec.crop_size pixels at spec.target_spacing, 192 mm for the shipped model) does not cover a whole
    field of view, and a heart planned off-centre loses its RV, even part of the LV, to a crop centred on the image
    (ACDC: the heart lies up to 92 mm from the image centre; with expert labels, a centred crop lost up to 121 mL of
    RV, a heart-centred one at most 2 mL). The model runs on up to PROBE_SLICES middle slices at `first_phase`,
    first at the image centre: a heart found there at least EDGE_MARGIN_MM inside the crop keeps the image centre;
    one nearer the edge is re-centred on (at most LOCALISE_ROUNDS times, until it moves less than RECENTRE_MM).
    When the centred crop shows no LV, crops tiling the field at half a crop's spacing are tried and the one
    showing the most LV is followed. None when no crop shows an LV (the caller keeps the image centre).
    pixels: (phases, slices, rows, cols).
    """
    pixels = np.asarray(pixels, dtype=np.float32)
    slices, shape_rc = pixels.shape[1], pixels.shape[-2:]
    low = max(0, (slices - PROBE_SLICES) // 2)
    probe = pixels[first_phase:first_phase + 1, low:low + min(PROBE_SLICES, slices)]
    image_centre = ((shape_rc[0] - 1) / 2.0, (shape_rc[1] - 1) / 2.0)
    probed = image_centre
    area, found, margin = _probe_heart(probe, spacing_rc, run_model, spec, probed)
    if found is not None and margin >= EDGE_MARGIN_MM:
        return image_centre  # the whole heart is well inside the image-centred crop, as in most training images
    if found is None:
        half_crop = [spec.crop_size * spec.target_spacing / 2.0 / spacing for spacing in spacing_rc]
        steps = [int(image_centre[axis] // half_crop[axis]) for axis in range(2)]
        tiles = [(image_centre[0] + i * half_crop[0], image_centre[1] + j * half_crop[1])
                 for i in range(-steps[0], steps[0] + 1) for j in range(-steps[1], steps[1] + 1) if (i, j) != (0, 0)]
        tried = [(tile,) + _probe_heart(probe, spacing_rc, run_model, spec, tile)[:2] for tile in tiles]
        tried = [t for t in tried if t[2] is not None]
        if not tried:
            return None
        probed, area, found = max(tried, key=lambda t: t[1])
    for _ in range(LOCALISE_ROUNDS - 1):
        shift_mm = float(np.hypot((found[0] - probed[0]) * spacing_rc[0], (found[1] - probed[1]) * spacing_rc[1]))
        if shift_mm < RECENTRE_MM:
            break
        _, moved, _ = _probe_heart(probe, spacing_rc, run_model, spec, found)
        if moved is None:  # the heart left the re-centred crop: keep the crop that showed it
            return probed
        probed, found = found, moved
    return found


def segment_cine(pixels: np.ndarray, spacing_rc: tuple[float, float], run_model, spec: CineModelSpec = CineModelSpec(),
                 phases_per_chunk: int = 4, first_phase: int = 0, localise: bool = True,
                 centre_rc: tuple[float, float] | None = None) -> np.ndarray:
    """Node label maps (phases, slices, rows, cols) for every phase: one batched model run over phases x slices,
    with the crop centred on `centre_rc` (source row, col) when given, else on the heart (locate_heart;
    `localise=False`: on the image centre).

    `run_model` takes float32 (N, K, crop, crop) (K = spec.input_channels) and returns logits (N, C, crop, crop), to
    which spec.logit_offsets are added. Class scores go back to the source grid by bilinear interpolation of the softmax (outside the crop: background) and are then arg-maxed; at
    every phase the LV and the RV then keep their largest connected component (dicomnode.cmr.structures; on the ACDC
    5-fold CV this took RV ESV bias from +10.3 to +7.4 mL and LV mass bias from +10.5 to +9.9 g). `first_phase`: the
    R-wave phase, the context of a "first_phase" model (see preprocess_cine).
    """
    phases, slices = pixels.shape[:2]
    centre = centre_rc
    if centre is None and localise:
        centre = locate_heart(pixels, spacing_rc, run_model, spec, first_phase)
    inputs, resampler = preprocess_cine(pixels, spacing_rc, spec, first_phase, centre)
    logits = np.asarray(run_model(inputs), dtype=np.float32)
    expected = (phases * slices, len(spec.channel_labels), spec.crop_size, spec.crop_size)
    if logits.shape != expected:
        raise ValueError(f"model returned logits of shape {logits.shape}, expected {expected}")
    logits = logits.reshape((phases, slices) + logits.shape[1:])
    if spec.logit_offsets:
        logits = logits + np.asarray(spec.logit_offsets, dtype=np.float32)[:, None, None]
    labels = np.empty(pixels.shape, dtype=np.uint8)
    for start in range(0, phases, phases_per_chunk):
        chunk = slice(start, start + phases_per_chunk)
        labels[chunk] = labels_from_probabilities(softmax(logits[chunk], axis=2), resampler, spec.channel_labels,
                                                  epicardial_offset=spec.epicardial_offset)
    return keep_largest_structures(labels)


def segment_and_measure(pixels: np.ndarray, spacing_rc: tuple[float, float], run_model, spec: CineModelSpec, measure,
                        first_phase: int = 0, refine=None,
                        anatomical_pose: bool = True) -> tuple[np.ndarray, "CineMeasurements", dict | None]:
    """Segment every phase of a cine stack, measure it, and optionally re-segment ED and ES with a second model.

    pixels: (phases, slices, rows, cols) as the network sees the plane (canonical orientation). `measure(labelmaps,
    timing=None)` returns CineMeasurements (cine_metrics.measure_cine with the stack's geometry bound; a given
    timing keeps its ED/ES). The heart is located once (locate_heart) and every model's crop is centred there.
    refine: (run_model, CineModelSpec) of a model run only at the ED and ES phases the first found (and the RV's ED / ES
    where they are other phases, timing.rv_ed / rv_es), context "none" or "neighbours": its label maps replace those
    phases, and the measurements are taken again at the same phases (the choice of phases and every other phase of
    the volume curves stay the first model's).
    Returns the label maps (canonical orientation, the refined ED/ES in place), the measurements, and None or
    {"phases": [ed, es, then the RV's ED / ES where other phases], "all_phase_values": the first model's
    measurements} when refined. A refinement that finds
    no LV blood pool at ED is not used (logged).
    With `anatomical_pose` the stack is turned by quarter turns so that the RV found around the located centre lies
    in one direction from the LV (dicomnode.cmr.orientation.anatomical_turn), located and segmented again in that
    pose, and the label maps are turned back before they are measured: the same heart gives the same values however
    the patient lay in the scanner (a quarter turn of the network's input moved the LVEF by 7 points, break46c).
    """
    centre = locate_heart(pixels, spacing_rc, run_model, spec, first_phase)
    if anatomical_pose:
        turn = anatomical_turn(heart_direction(pixels, spacing_rc, run_model, spec, first_phase, centre))
        if not turn.is_identity:
            def measure_turned(maps, timing=None):
                return measure(turn.invert(maps), timing=timing)

            maps, measured, refinement = segment_and_measure(turn.apply(pixels), turn.spacing(spacing_rc), run_model,
                                                             spec, measure_turned, first_phase, refine,
                                                             anatomical_pose=False)
            return turn.invert(maps), measured, refinement
    labelmaps = segment_cine(pixels, spacing_rc, run_model, spec, first_phase=first_phase, localise=False,
                             centre_rc=centre)
    measured = measure(labelmaps)
    if refine is None or measured.lv_edv_ml <= 0:
        return labelmaps, measured, None
    refine_run, refine_spec = refine
    # the RV's ED / ES may be a neighbour of the LV's (cine_metrics.rv_cardiac_phases): refined with them
    chosen = list(dict.fromkeys([measured.ed_phase, measured.es_phase, measured.timing.rv_ed, measured.timing.rv_es]))
    refined_maps = labelmaps.copy()
    refined_maps[chosen] = segment_cine(pixels[chosen], spacing_rc, refine_run, refine_spec, localise=False,
                                        centre_rc=centre)
    refined = measure(refined_maps, timing=measured.timing)
    if refined.lv_edv_ml <= 0:
        log.warning("the refining cine model found no LV blood pool at ED; the all-phase model's values are kept")
        return labelmaps, measured, None
    return refined_maps, refined, {"phases": chosen, "all_phase_values": _rounded(measured.summary())}


MODEL_NAME = "cine_unet"
#: the model card's `metrics` blocks (engines/cine/evaluate.py --update-card) with the RVEF agreement on ACDC:
#: cross-validation over all patients, and the shipped model on its held-out patients
CARD_RV_VALIDATION = {"cv": "acdc_cv_rv_ef_percent", "held_out": "acdc_rv_ef_percent"}


def rv_validation_from_card(card: dict | None) -> dict:
    """{"cv": ..., "held_out": ...} the RVEF agreement blocks ({"n", "mae", "mean_error", "sd_error", ...}) of a cine
    model card's `metrics` (CARD_RV_VALIDATION), each None where the card has none; read at run time so that the
    report's RV accuracy flag (cine_metrics.rv_accuracy_note) says what the card of the model in use says."""
    metrics = (card or {}).get("metrics") if isinstance(card, dict) else None
    metrics = metrics if isinstance(metrics, dict) else {}
    found = {}
    for what, key in CARD_RV_VALIDATION.items():
        block = metrics.get(key)
        found[what] = block if isinstance(block, dict) and isinstance(block.get("mae"), (int, float)) else None
    return found


#: the quantities whose agreement with expert readers gives the known error of a cine flag (cine_metrics.known_errors)
FLAG_ERROR_QUANTITIES = tuple(dict.fromkeys([*ERROR_QUANTITY.values(), SV_DIFFERENCE]))


def function_validation_from_card(card: dict | None) -> dict:
    """{quantity: {"n", "mae", "mean_error", "sd_error", "card_metric", "data", "source"}} for each of
    FLAG_ERROR_QUANTITIES (mL, g, EF points; prediction - expert) the model card's `metrics` give: the ACDC
    cross-validation block "acdc_cv_<quantity>" (engines/cine/evaluate.py --update-card) where present, else the
    held-out split's "acdc_<quantity>"; a quantity with neither is left out (its flags are judged without a known
    error). Read at run time, so the flags quote the card of the model in use (cine_metrics.range_judgements)."""
    metrics = (card or {}).get("metrics") if isinstance(card, dict) else None
    metrics = metrics if isinstance(metrics, dict) else {}
    source = str(metrics.get("evaluation") or "the model card's metrics")
    found = {}
    for quantity in FLAG_ERROR_QUANTITIES:
        for key, data in ((f"acdc_cv_{quantity}", "ACDC cross-validation"), (f"acdc_{quantity}", "ACDC held-out")):
            block = metrics.get(key)
            if isinstance(block, dict) and isinstance(block.get("mae"), (int, float)):
                found[quantity] = {**{k: block.get(k) for k in ("n", "mae", "mean_error", "sd_error")},
                                   "card_metric": key, "data": data, "source": source}
                break
    return found


def validation_with_fallback(primary: dict, fallback: dict, fallback_model: str) -> dict:
    """`primary` (function_validation_from_card of the model whose label maps give the values: the refining model)
    with each quantity it lacks taken from `fallback` (the all-phase model's, named `fallback_model`), its
    `card_metric` then reading "<fallback_model> card: <metric>" and its bias dropped (the other model's systematic
    error says nothing of this one's), so no flag loses its known error because a refining model's card holds fewer
    agreement blocks (a refine card has no cross-validation: review F10)."""
    merged = dict(primary)
    for quantity, block in (fallback or {}).items():
        if quantity not in merged:
            # the other model's typical error size stands in; its bias is that model's, unknown for this one
            merged[quantity] = {**block, "mean_error": None,
                                "card_metric": f"{fallback_model} card: {block.get('card_metric')}"}
    return merged


#: a wider network run only at the ED and ES phases the all-phase model found (CinePipeline): EDV, ESV, SV, EF and
#: mass come from it; optional (the pipeline runs without it, analysis.cine.refine_ed_es turns it off)
REFINE_MODEL_NAME = "cine_unet_refine"
PHASE_NAMES = ["end diastole", "end systole"]
#: the phase names of the RV's own ED / ES in the cine segmentation, where RV EDV / ESV were read at another phase
#: than the LV's (cine_metrics.rv_cardiac_phases; results.seg.PHASE_ABBREVIATIONS names them "RV ED" / "RV ES")
RV_PHASE_NAMES = ["RV end diastole", "RV end systole"]


class CinePipeline:
    """Segments all phases of the preferred cine SAX stack in one batched run and measures LV/RV function."""

    name = "cine"

    def __init__(self, config: "Config", runtime: "Runtime"):
        self.config = config
        self.runtime = runtime
        model = runtime.model(MODEL_NAME)  # load once, warm; a missing or corrupt model makes the pipeline unavailable
        self.spec = CineModelSpec.from_card(model.card.data)
        self.rv_validation = rv_validation_from_card(model.card.data)
        self.function_validation = function_validation_from_card(model.card.data)
        self.refine_spec: CineModelSpec | None = None
        self.refine_rv_validation: dict | None = None
        self.refine_function_validation: dict | None = None
        if config.analysis.cine.refine_ed_es and runtime.available(REFINE_MODEL_NAME):
            # installed but unloadable or of the wrong kind: the pipeline is unavailable rather than silently coarser
            refine = runtime.model(REFINE_MODEL_NAME)
            self.refine_spec = CineModelSpec.from_card(refine.card.data)
            self.refine_rv_validation = rv_validation_from_card(refine.card.data)
            self.refine_function_validation = validation_with_fallback(
                function_validation_from_card(refine.card.data), self.function_validation, MODEL_NAME)
            if self.refine_spec.context == "first_phase":
                raise ValueError(f"{REFINE_MODEL_NAME}: a refining model sees the ED and ES phases only, so it cannot "
                                 "take the 'first_phase' input context")

    def _declined(self, series_uid: str | None, reason: str, algorithms=()) -> PipelineResult:
        """A declined cine; `algorithms`: the models whose segmentation the decline rests on (credited on the report
        that says what was not measured)."""
        log.info("cine declined: %s", reason)
        return PipelineResult(name=self.name, summary=None, declined=[Declined(series_uid, reason)],
                              algorithms=list(algorithms))

    def run(self, study: "CMRStudy", context: AnalysisContext) -> PipelineResult:
        series = study.preferred("cine", "sax")
        if series is None:
            return self._declined(None, "no cine short-axis series in the study"
                                  + other_views_text(getattr(study, "series", ()), "cine"))
        try:
            # a repeat that loses slices while decoding ranks again (CMRStudy.load_preferred): `series` is the one measured
            series, volume = study.load_preferred(series)
        except StudyError as error:
            return self._declined(series.series_instance_uid, f"cine short-axis series is not a usable stack: {error}")
        phases, slices = volume.pixels.shape[:2]
        if phases < 2:
            return self._declined(series.series_instance_uid, f"cine short-axis series has {phases} phase; need >= 2 for ED/ES")
        if slices < 2 or not volume.slice_spacing > 0:
            return self._declined(series.series_instance_uid, f"cine short-axis series has {slices} slice(s); need a stack")
        model, spec = self.runtime.model(MODEL_NAME), self.spec

        first_phase, _ = trigger_phase(volume.trigger_times, phases)
        # the network sees the plane in one patient-based orientation, however the scanner stored the grid
        canonical = canonical_inplane(volume.orientation)
        pixels, spacing = canonical.apply(volume.pixels), canonical.spacing(volume.pixel_spacing)
        # a cine is a magnitude image: values below 0 are an offset, which the models' normalisation would clip away
        shift = magnitude_floor_shift(pixels)
        shift_notes = [magnitude_floor_note(shift, "cine", rescale_intercepts(series), lossy_series(series),
                                            float(np.nanmax(pixels)))] if shift else []
        if shift:
            pixels = pixels + np.float32(shift)
        patient = getattr(study, "patient", None)
        cine_config = self.config.analysis.cine
        # a child (known age under 18, or unknown age and a child's body size): no adult ranges or adult LV length
        age, child_size = getattr(patient, "age", None), patient_child_size(patient, cine_config.bsa_formula)
        numbers, cycle = acquisition_numbers(volume), cycle_length(volume)
        # phases that repeat or interpolate others' pixel data carry no acquisition: the timing runs without them
        derived = derived_phases(volume.pixels, whole_cycle=numbers == list(range(1, cycle + 1)))
        measure = functools.partial(
            measure_cine, voxel_volume_ml=volume.voxel_volume_ml, trigger_times=volume.trigger_times,
            height_m=getattr(patient, "height_m", None), weight_kg=getattr(patient, "weight_kg", None),
            not_numbers=getattr(patient, "not_numbers", None),
            sex=getattr(patient, "sex", None), bsa_formula=cine_config.bsa_formula,
            density_g_per_ml=cine_config.myocardial_density_g_per_ml, slice_positions_mm=slice_positions_mm(volume),
            apex_first=apex_first(volume), nominal_step_mm=getattr(volume, "nominal_step_mm", None),
            ends_left_out_mm=getattr(volume, "ends_left_out_mm", None), phase_numbers=numbers, cycle_phases=cycle,
            distinct_phases=derived.distinct if derived.any else None, derived_note=derived.note(),
            slice_rr_ms=getattr(volume, "slice_rr_ms", None),
            extent_rule_withheld=lv_extent_rule_withheld(age, child_size),
            trigger_order_note=getattr(volume, "trigger_order_note", None))
        refine = self.runtime.model(REFINE_MODEL_NAME) if self.refine_spec is not None else None
        # the RV accuracy flag and the flags' known errors quote the card of the model whose label maps give the ED /
        # ES volumes: the all-phase model's, or the refining model's where a given timing marks the refined
        # measurement (segment_and_measure)
        def measure_maps(maps, timing=None):
            refined = timing is not None and self.refine_rv_validation is not None
            return measure(canonical.invert(maps), timing=timing,
                           rv_validation=self.refine_rv_validation if refined else self.rv_validation,
                           function_validation=self.refine_function_validation if refined else self.function_validation)

        labelmaps, measured, refinement = segment_and_measure(
            pixels, spacing, model.run, spec, measure_maps, first_phase,
            refine=None if refine is None else (refine.run, self.refine_spec))
        labelmaps = canonical.invert(labelmaps)
        if measured.lv_edv_ml <= 0:
            return self._declined(series.series_instance_uid, "no LV blood pool found in any phase of the cine stack"
                                  + "".join(f" ({note})" for note in shift_notes), [model.algorithm])
        not_ed_es = phases_not_ed_es(measured, volume, series)
        if not_ed_es is not None:
            return self._declined(series.series_instance_uid, not_ed_es, [model.algorithm])
        algorithms = [model.algorithm]
        if refinement is not None:
            refinement = {"model": refine.algorithm.name, "version": refine.algorithm.version, **refinement}
            algorithms.append(refine.algorithm)

        ed, es = measured.ed_phase, measured.es_phase
        phases, phase_names = segmented_phases(ed, es, measured.timing.rv_ed, measured.timing.rv_es)
        timing = {**measured.timing.summary(), "rv_flagged_phases": list(measured.rv_flagged_phases),
                  "derived_phases": derived.summary() if derived.any else None}
        summary = measured.summary()
        acquired = max([getattr(volume, "acquired_phases", None) or 0, *numbers])
        summary.update({"ed_phase_number": phase_number(ed, numbers), "es_phase_number": phase_number(es, numbers),
                        "phase_numbering": PHASE_NUMBERING,
                        # the acquisition phase number of each position of the volume curves, and the phases acquired
                        # (a phase left out at every slice for an image missing at one leaves a gap in phase_numbers)
                        "phase_numbers": list(numbers),
                        "phases_acquired": acquired,
                        # the acquisition phase numbers with no position in the curves (ed_phase + 1 is ED's number
                        # only where this is empty)
                        "phases_not_measured": sorted(set(range(1, acquired + 1)) - set(numbers)),
                        "bsa_m2": stored_value(measured.bsa_m2, 3, 2), "bsa_formula": measured.bsa_formula,
                        # the images disagree on height / weight: the BSA the other images' values give (the SR's
                        # BSADISAGR NUM beside every indexed value), null where they agree
                        "bsa_other_m2": stored_value(other_bsa_m2(getattr(patient, "size_weight_held", None),
                                                                  measured.bsa_m2, measured.bsa_formula or "mosteller"),
                                                     3, 2),
                        "indexed": {k: stored_value(v) for k, v in measured.indexed.items()}, "flags": list(measured.flags),
                        # the model's known error (card cross-validation) of each judged value, and whether its flag
                        # lies within it of the limit ("confirm by reading"), as lge.lge_percent_validation
                        "flag_validation": measured.flag_validation,
                        "series_instance_uid": series.series_instance_uid,
                        "series_number": getattr(series, "series_number", None),
                        "series_description": getattr(series, "description", None),
                        # every SeriesNumber of a stack merged from one-slice series: the outputs name it by their range
                        **merged_numbers(series),
                        "stack_warnings": shift_notes + list(volume.warnings) + assumed_geometry_notes(series),
                        "lv_volume_curve_ml": [round(v, 2) for v in measured.lv_curve_ml],
                        "rv_volume_curve_ml": [round(v, 2) for v in measured.rv_curve_ml],
                        "timing": timing, "basal_slice_rule": BASAL_RULE,
                        "coverage": measured.coverage.summary(),
                        "basal_slices_excluded": [list(pz) for pz in measured.basal_excluded],
                        # per slice index (volume order, ascending along the stack normal): position and the ED / ES
                        # source images (slice_images), so slice indices here and in aha_segments name an image
                        "slices": [{"slice_index": k, "position_mm": at_ed["position_mm"],
                                    "ed": {key: at_ed[key] for key in IMAGE_KEYS},
                                    "es": {key: at_es[key] for key in IMAGE_KEYS}}
                                   for k, (at_ed, at_es) in enumerate(zip(slice_images(volume, ed, series),
                                                                          slice_images(volume, es, series)))],
                        # AHA 17 segments at ED: mean wall thickness per segment (dicomnode/analysis/aha.py)
                        # (the LGE's rule: none on a stack covering clearly less than the LV, aha_summary_for_stack)
                        "aha_segments": aha_summary_for_stack(labelmaps[ed], volume, measured.coverage.summary(),
                                                              scar=False, wall_thickness=True),
                        # the ED/ES label maps (hence EDV/ESV/SV/EF/mass and the SEG) are the refining model's; every
                        # other phase of the curves, and the choice of ED/ES, the all-phase model's (None: not refined)
                        "ed_es_refinement": refinement})
        # the RV's own ED / ES images where the SEG carries them (segmented_phases): "rv_ed" / "rv_es" beside "ed", "es"
        for phase, name in zip(phases[2:], phase_names[2:]):
            key = "rv_ed" if name == RV_PHASE_NAMES[0] else "rv_es"
            for entry, image in zip(summary["slices"], slice_images(volume, phase, series)):
                entry[key] = {field: image[field] for field in IMAGE_KEYS}
        summary["stack_warnings"] += geometry_warnings(summary["aha_segments"])  # a mirrored heart (aha.py)
        # instances disagreeing on the patient's size, weight, age or sex (cmr.study.study_patient): the value used for
        # BSA, the indexed values and the reference ranges, said beside them
        summary["stack_warnings"] += list(getattr(patient, "disagreements", None) or [])
        # maximal ED wall thickness with its HCM flag (wall_thickness.py); adult range flags withheld for a patient under
        # 18 (reference_age.py)
        wall = max_wall_thickness_for_volume(labelmaps[ed], volume,
                                             name_segment=bool(summary["aha_segments"].get("applicable")),
                                             apex_first=apex_first(volume)).summary()
        wall_flag = wall_thickness_flag(wall, summary["slices"], lv_mass_bias_from_card(model.card.data),
                                        MODEL_VALIDATION)
        flags = age_adjusted_flags(list(measured.flags) + partial_cycle_notes(measured, volume, series)
                                   + ([wall_flag] if wall_flag else [])
                                   + implausible_size_notes(measured.lv_edv_ml, measured.rv_edv_ml), age, child_size,
                                   age_note(patient, cine_config.bsa_formula))
        summary.update({"flags": flags, "max_wall_thickness": wall,
                        "reference_ranges": reference_ranges_summary(age, child_size,
                                                                     age_note(patient, cine_config.bsa_formula))})
        segmentation = SegmentationResult(
            series=series, volume=volume,
            labelmap=counted_labelmaps(labelmaps, phases, measured.basal_excluded, rv_only=range(2, len(phases))),
            phases=phases, phase_names=phase_names, algorithm=algorithms[-1], pipeline=self.name)
        measurements = {
            "lv_volume_curve_ml": [round(v, 2) for v in measured.lv_curve_ml],
            "rv_volume_curve_ml": [round(v, 2) for v in measured.rv_curve_ml],
            "bsa_m2": stored_value(measured.bsa_m2, 3, 2), "bsa_formula": measured.bsa_formula,
            "bsa_formula_code": BSA_FORMULA_CODES.get(measured.bsa_formula) if measured.bsa_formula else None,
            "indexed": dict(measured.indexed), "papillary_muscles": PAPILLARY_MUSCLES,
            "papillary_muscles_mass_code": PAPILLARY_MASS_CODE,
            "basal_slices": BASAL_RULE, "timing": timing,
            "myocardial_density_g_per_ml": cine_config.myocardial_density_g_per_ml,
            "flags": list(flags), "trigger_times": list(volume.trigger_times),
            "ed_phase": ed, "es_phase": es, "voxel_volume_ml": volume.voxel_volume_ml,
            "values": {k: v for k, v in measured.summary().items()},
        }
        return PipelineResult(name=self.name, summary=summary, segmentations=[segmentation], measurements=measurements,
                              algorithms=algorithms)


#: summary.json `cine.phase_numbering`: which base each phase key of the cine block counts from (design.md keeps
#: `ed_phase` / `es_phase` as indices; the PDF, SR, SEG and console name phases as viewers do)
PHASE_NUMBERING = ("ed_phase, es_phase and every phase index in this block (timing, basal_slices_excluded, the volume "
                   "curves' positions) count from 0 over the phases measured: ed_phase is the position of ED in "
                   "lv_volume_curve_ml, rv_volume_curve_ml and phase_numbers, not a phase number (ed_phase + 1 is "
                   "the phase number only where phases_not_measured is empty); phase_numbers gives the acquisition "
                   "phase number of each position (a phase left out at every slice for an image missing at one leaves "
                   "a gap, listed in phases_not_measured); ed_phase_number, es_phase_number and the phases named in "
                   f"flags and notes are these acquisition numbers, {COUNTED_FROM}, as the PDF, SR, console and a "
                   "viewer")


def rescale_intercepts(series) -> list[float]:
    """The RescaleIntercept (0028,1052) values written on the instances of `series` (none where absent or
    unreadable, as on an Enhanced MR image, which keeps them per frame)."""
    found = []
    for instance in getattr(series, "instances", None) or []:
        try:
            found.append(float(getattr(getattr(instance, "dataset", None), "RescaleIntercept", None)))
        except (TypeError, ValueError):
            pass
    return found


#: the stack warning of a cine whose own header says its pixel or slice spacing was assumed (review45 #8; as
#: lge.ASSUMED_GEOMETRY_NOTE): volumes, mass and wall thickness scale with it, the EF (a ratio of volumes) does not
ASSUMED_GEOMETRY_NOTE = ("the images state an ASSUMED pixel or slice spacing ({where}): the mL, g and mm are nominal "
                         "(the EF is not affected)")
#: "ASSUMED pixel spacing", "slice spacing assumed": a header text that says the spacing is not the scanner's, in
#: either word order
ASSUMED_SPACING = re.compile(r"\bassumed\b[^;.]{0,40}\bspacing\b|\bspacing\b[^;.]{0,40}\bassumed\b", re.IGNORECASE)


def assumed_spacing_attributes(series) -> list[str]:
    """The keywords of the attributes, of DerivationDescription (0008,2111) and ImageComments (0020,4000), in which
    the series' first instance says its pixel or slice spacing was assumed (ASSUMED_SPACING); [] where none does or
    the header cannot be read."""
    try:
        dataset = series.instances[0].dataset
    except (AttributeError, IndexError, TypeError):
        return []
    return [keyword for keyword in ("DerivationDescription", "ImageComments")
            if ASSUMED_SPACING.search(str(getattr(dataset, keyword, None) or ""))]


def assumed_geometry_notes(series) -> list[str]:
    """[ASSUMED_GEOMETRY_NOTE] naming the attributes of assumed_spacing_attributes; [] where there are none."""
    found = assumed_spacing_attributes(series)
    return [ASSUMED_GEOMETRY_NOTE.format(where=" / ".join(found))] if found else []


def lossy_series(series) -> bool:
    """Whether any instance of `series` was lossy-compressed (source_encoding.lossy_compression)."""
    return any(lossy_compression(getattr(instance, "dataset", None)) is not None
               for instance in getattr(series, "instances", None) or [] if getattr(instance, "dataset", None) is not None)


def acquisition_numbers(volume) -> list[int]:
    """The acquisition phase number (1-based) of each phase of `volume` (cmr.types.Volume.acquisition_phase_numbers;
    1..phases for a volume without them)."""
    numbers = getattr(volume, "acquisition_phase_numbers", None)
    if callable(numbers):
        return list(numbers())
    return list(range(1, int(np.shape(volume.pixels)[0]) + 1))


def cycle_length(volume) -> int:
    """The phases of the cardiac cycle the volume's phase numbers count over: Volume.acquired_phases, or the
    CardiacNumberOfImages its images declare (Volume.declared_phases) where that is more (the phases kept could not
    be placed on the declared cycle, so the cycle is not whole: its last phase sent does not neighbour the first),
    at least the phases of the volume and its highest phase number."""
    numbers = acquisition_numbers(volume)
    counts = [getattr(volume, "acquired_phases", None), getattr(volume, "declared_phases", None)]
    return max([len(numbers), max(numbers, default=0)] + [c for c in counts if isinstance(c, int)])


def phases_not_ed_es(measured: "CineMeasurements", volume, series=None) -> str | None:
    """Why the ED and ES phases chosen on a cine that is not a whole cycle (fewer than MIN_PHASES_FOR_CURVE phases,
    or under half the phases its CardiacNumberOfImages declares: a reviewer's 24 of 25 phases without RR in the header
    were declined) cannot be end diastole and end systole (ed_es_check), as a
    decline reason; None for a whole cycle (its volume curve times ED and ES) or where nothing speaks against them.
    The RR interval comes from the series' image headers (rr_interval_ms)."""
    checked = _partial_cycle(measured, volume, series)
    if checked is None:
        return None
    rr_ms, declared = checked
    trigger_times = getattr(volume, "trigger_times", None)
    objections = ed_es_objections(measured.ed_phase, measured.es_phase, measured.lv_curve_ml, trigger_times, rr_ms,
                                  acquisition_numbers(volume))
    if not objections:
        return None
    return not_ed_es_reason(measured.ed_phase, measured.es_phase, measured.lv_curve_ml, trigger_times, rr_ms, declared,
                            objections)


def partial_cycle_notes(measured: "CineMeasurements", volume, series=None) -> list[str]:
    """The notes on a cine that is not a whole cycle (as phases_not_ed_es) whose phases are timed as ED and ES but
    hold nearly equal LV volumes (ed_es_check.small_ejection_note); [] otherwise."""
    checked = _partial_cycle(measured, volume, series)
    if checked is None:
        return []
    note = small_ejection_note(measured.ed_phase, measured.es_phase, measured.lv_curve_ml,
                               getattr(volume, "trigger_times", None), checked[0], acquisition_numbers(volume))
    return [note] if note else []


def _partial_cycle(measured: "CineMeasurements", volume, series) -> tuple[float | None, int | None] | None:
    """(RR interval ms or None, the declared phases of the cycle where more than were sent, else None) for a cine
    whose ED and ES are checked by ed_es_check; None for a cine timed by its volume curve."""
    phases = len(measured.lv_curve_ml)
    declared = getattr(volume, "declared_phases", None)
    declared = declared if isinstance(declared, int) and declared > phases else None
    # a cine missing a few of its declared phases is timed by its volume curve (find_cardiac_phases); the check
    # (its +-15 % window counted in ms of an RR that may be unknown) is for exports that keep less than half a cycle
    if phases >= MIN_PHASES_FOR_CURVE and (declared is None or 2 * phases >= declared):
        return None
    datasets = [getattr(instance, "dataset", None) for instance in getattr(series, "instances", None) or ()]
    return rr_interval_ms(datasets)[0], declared


def slice_positions_mm(volume) -> np.ndarray | None:
    """(slices,) each slice's position (mm) along the stack normal, from ImagePositionPatient and the orientation;
    None for a volume without positions."""
    positions = getattr(volume, "positions", None)
    if positions is None:
        return None
    orientation = np.asarray(volume.orientation, dtype=np.float64)
    normal = np.cross(orientation[:3], orientation[3:])
    return np.asarray(positions, dtype=np.float64) @ (normal / np.linalg.norm(normal))


#: what slice_images says of a slice's image besides its position
IMAGE_KEYS = ("sop_instance_uid", "frame_number", "instance_number", "series_number")


def slice_images(volume, phase: int = 0, series=None) -> list[dict]:
    """Per slice of the volume, in its order (slices ascend along the stack normal, as the SEG's frames and every
    summary.json slice index do): the image that slice was measured on at `phase` (an index into volume.frames) -
    `position_mm` along the stack normal (slice_positions_mm, 2 decimals), the source's `sop_instance_uid`, its
    `frame_number` (1-based, a frame of a multi-frame instance; None for a single-frame image) and
    `instance_number` and `series_number` (InstanceNumber and SeriesNumber of that instance in `series`, None where
    unknown: with them a reader finds the image in a viewer as "S:300 I:80"). A tilted stack's display copies name
    the same source image and frame in their Source Image Sequence."""
    positions = slice_positions_mm(volume)
    frames = list(getattr(volume, "frames", None) or [])
    row = list(frames[phase]) if 0 <= phase < len(frames) else []
    numbers, series_numbers = {}, {}
    for instance in getattr(series, "instances", None) or []:
        dataset = getattr(instance, "dataset", None)
        for found, keyword in ((numbers, "InstanceNumber"), (series_numbers, "SeriesNumber")):
            try:
                found[str(instance.sop_instance_uid)] = int(getattr(dataset, keyword, None))
            except (TypeError, ValueError):
                pass
    pixels = getattr(volume, "pixels", None)
    count = len(positions) if positions is not None else len(row) if row else \
        (int(np.shape(pixels)[-3]) if pixels is not None and np.ndim(pixels) >= 3 else 0)
    found = []
    for k in range(count):
        ref = row[k] if k < len(row) else None
        uid = str(ref.sop_instance_uid) if ref is not None else None
        frame = getattr(ref, "frame_number", None)
        found.append({"position_mm": None if positions is None else round(float(positions[k]), 2),
                      "sop_instance_uid": uid, "frame_number": None if frame is None else int(frame),
                      "instance_number": numbers.get(uid) if uid is not None else None,
                      "series_number": series_numbers.get(uid) if uid is not None else None})
    return found


def apex_first(volume) -> bool | None:
    """Whether the first slice of the volume (slices ascend along the plane normal) is its apical end: the normal
    points from apex to base when it opposes the typical LV long axis (base -> apex, cmr.recognize); None where the
    normal is within 30 degrees of perpendicular to that axis (no telling)."""
    orientation = np.asarray(volume.orientation, dtype=np.float64)
    normal = np.cross(orientation[:3], orientation[3:])
    cosine = float(normal @ CANONICAL_LONG_AXIS / np.linalg.norm(normal))
    return None if abs(cosine) < 0.5 else cosine < 0


def segmented_phases(ed: int, es: int, rv_ed: int | None = None, rv_es: int | None = None
                     ) -> tuple[list[int], list[str]]:
    """(phase indices, phase names) the cine SEG and its display copies carry: the LV's ED and ES (PHASE_NAMES),
    then the RV's own ED and ES (RV_PHASE_NAMES) where RV EDV / ESV were read at another phase
    (cine_metrics.rv_cardiac_phases, summary `timing.rv_ed_phase` / `rv_es_phase`), so that the RV outline a reader
    sees is the one its volume was measured on. A phase already carried is not added again (an RV phase that is the
    LV's other phase: its label map holds that RV already); None: the LV's phase."""
    phases, names = [int(ed), int(es)], list(PHASE_NAMES)
    for phase, name in ((rv_ed, RV_PHASE_NAMES[0]), (rv_es, RV_PHASE_NAMES[1])):
        if phase is not None and int(phase) not in phases:
            phases.append(int(phase))
            names.append(name)
    return phases, names


def counted_labelmaps(labelmaps: np.ndarray, phases: list[int], basal_excluded: list[tuple[int, int]],
                      rv_only=()) -> np.ndarray:
    """(len(phases), slices, rows, cols) label maps of `phases` as the volumes counted them: the LV blood pool of a
    (phase, slice) the basal-slice rule left out is not drawn, so the SEG re-measures to the reported EDV/ESV.
    `rv_only`: positions in `phases` (the RV's own ED / ES, segmented_phases) whose map keeps the RV blood pool alone:
    only the RV volume was read there, and an LV outline at that phase would show a volume nothing reports."""
    shown = labelmaps[phases].copy()
    for index in rv_only:
        shown[index][shown[index] != Label.RV_BLOOD_POOL] = Label.BACKGROUND
    for index, phase in enumerate(phases):
        for excluded_phase, z in basal_excluded:
            if excluded_phase == phase:
                plane = shown[index, z]
                plane[plane == Label.LV_BLOOD_POOL] = Label.BACKGROUND
    return shown


def _rounded(values: dict) -> dict:
    return {key: _maybe_round(value, 2) if isinstance(value, (int, float)) else value for key, value in values.items()}


def _maybe_round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)
