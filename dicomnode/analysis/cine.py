"""Cine short-axis pipeline: segment every phase of the preferred SAX stack, then measure LV/RV function."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from dicomnode.analysis.aha import aha_summary_for_volume
from dicomnode.analysis.cine_metrics import (BASAL_RULE, BSA_FORMULA_CODES, PAPILLARY_MASS_CODE, PAPILLARY_MUSCLES,
                                             measure_cine, trigger_phase)
from dicomnode.analysis.pipeline import AnalysisContext, Declined, PipelineResult, SegmentationResult
from dicomnode.cmr.intensity import normalise_slices
from dicomnode.cmr.resample import InplaneResampler
from dicomnode.cmr.structures import keep_largest_structures
from dicomnode.cmr.types import StudyError
from dicomnode.inference.runtime import BackendUnavailable, RuntimeErrorNoModel
from dicomnode.labels import Label

if TYPE_CHECKING:  # pragma: no cover
    from dicomnode.cmr.study import CMRStudy
    from dicomnode.config import Config
    from dicomnode.inference import Runtime

#: preprocessing defaults; the model card's "input" block overrides them (training wrote it)
DEFAULT_TARGET_SPACING_MM = 1.5
DEFAULT_CROP_SIZE = 128
#: model output channel -> node label (dicomnode.labels.Label)
DEFAULT_CHANNEL_LABELS = (0, 1, 2, 5)
#: what a model sees beside the slice it segments: nothing ("none", input (N, 1, crop, crop)), or the same slice at
#: the cine's first phase ("first_phase": ED by the R-wave trigger, input (N, 2, crop, crop) [slice, first phase])
CONTEXTS = ("none", "first_phase")


def labels_from_probabilities(probabilities: np.ndarray, resampler: InplaneResampler,
                              channel_labels=DEFAULT_CHANNEL_LABELS, outside_channel: int = 0) -> np.ndarray:
    """(..., C, out, out) class probabilities on the model grid -> (..., rows, cols) node labels on the source grid.

    Equal to the arg-max of the linearly interpolated probabilities (InplaneResampler.inverse_probabilities; source
    pixels outside the model grid are background). Only the source box around the non-background crop pixels is
    interpolated: a convex combination of probability vectors whose arg-max is background keeps background as
    arg-max, so nothing outside that box can differ. The box is a sub-grid of the source with the same spacing,
    so it has its own InplaneResampler whose centre is shifted by the box origin.
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
    labels[(Ellipsis,) + tuple(box)] = lookup[np.argmax(scores, axis=-3)]
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

    def __post_init__(self):
        if self.context not in CONTEXTS:
            raise ValueError(f"cine model input context {self.context!r} is not one of {CONTEXTS}")
        if self.logit_offsets and len(self.logit_offsets) != len(self.channel_labels):
            raise ValueError(f"{len(self.logit_offsets)} logit offsets for {len(self.channel_labels)} channels")
        if not all(np.isfinite(v) and abs(v) <= 10 for v in self.logit_offsets):
            raise ValueError(f"logit offsets must be finite and within ±10, got {self.logit_offsets}")

    @property
    def input_channels(self) -> int:
        return 1 if self.context == "none" else 2

    @classmethod
    def from_card(cls, card: dict) -> "CineModelSpec":
        """Raises ValueError when the card lacks input.spacing_mm / input.crop_size / output.channels or names an
        unknown input.context (absent: "none")."""
        try:
            spec = card["input"]
            channels = sorted(card["output"]["channels"], key=lambda c: c["channel"])
            offsets = tuple(float(c.get("logit_offset", 0.0)) for c in channels)
            return cls(float(spec["spacing_mm"]), int(spec["crop_size"]), tuple(int(c["node_label"]) for c in channels),
                       str(spec.get("context", "none")), offsets if any(offsets) else ())
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"cine model card lacks input.spacing_mm / input.crop_size / output.channels: {error}") from error


def softmax(logits: np.ndarray, axis: int) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def preprocess_cine(pixels: np.ndarray, spacing_rc: tuple[float, float], spec: CineModelSpec,
                    first_phase: int = 0) -> tuple[np.ndarray, InplaneResampler]:
    """(phases, slices, rows, cols) -> model input (phases*slices, K, crop, crop) and the resampler to map back.

    K = 1, or 2 with context "first_phase": channel 1 is the same slice at phase `first_phase` (the R-wave phase,
    cine_metrics.trigger_phase), each channel normalised on its own, so at that phase both channels are equal.
    Raises ValueError for pixels that are not 4-D or a first phase outside them.
    """
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.ndim != 4:
        raise ValueError(f"cine pixels must be (phases, slices, rows, cols), got shape {pixels.shape}")
    phases, slices = pixels.shape[:2]
    resampler = InplaneResampler(pixels.shape[-2:], tuple(spacing_rc), spec.target_spacing, spec.crop_size)
    crops = normalise_slices(resampler.forward(pixels.reshape((-1,) + pixels.shape[-2:])))
    if spec.context == "none":
        return crops[:, None], resampler
    if not 0 <= first_phase < phases:
        raise ValueError(f"first phase {first_phase} is outside the cine's {phases} phases")
    crops = crops.reshape((phases, slices) + crops.shape[-2:])
    first = np.broadcast_to(crops[first_phase:first_phase + 1], crops.shape)
    return np.stack([crops, first], axis=2).reshape((phases * slices, 2) + crops.shape[-2:]), resampler


def segment_cine(pixels: np.ndarray, spacing_rc: tuple[float, float], run_model, spec: CineModelSpec = CineModelSpec(),
                 phases_per_chunk: int = 4, first_phase: int = 0) -> np.ndarray:
    """Node label maps (phases, slices, rows, cols) for every phase: one batched model run over phases x slices.

    `run_model` takes float32 (N, K, crop, crop) (K = spec.input_channels) and returns logits (N, C, crop, crop), to
    which spec.logit_offsets are added. Class scores go back to the source grid by bilinear interpolation of the softmax (outside the crop: background) and are then arg-maxed; at
    every phase the LV and the RV then keep their largest connected component (dicomnode.cmr.structures; on the ACDC
    5-fold CV this took RV ESV bias from +10.3 to +7.4 mL and LV mass bias from +10.5 to +9.9 g). `first_phase`: the
    R-wave phase, the context of a "first_phase" model (see preprocess_cine).
    """
    phases, slices = pixels.shape[:2]
    inputs, resampler = preprocess_cine(pixels, spacing_rc, spec, first_phase)
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
        labels[chunk] = labels_from_probabilities(softmax(logits[chunk], axis=2), resampler, spec.channel_labels)
    return keep_largest_structures(labels)


MODEL_NAME = "cine_unet"
PHASE_NAMES = ["end diastole", "end systole"]


class CinePipeline:
    """Segments all phases of the preferred cine SAX stack in one batched run and measures LV/RV function."""

    name = "cine"

    def __init__(self, config: "Config", runtime: "Runtime"):
        self.config = config
        self.runtime = runtime

    def _declined(self, series_uid: str | None, reason: str) -> PipelineResult:
        return PipelineResult(name=self.name, summary=None, declined=[Declined(series_uid, reason)])

    def run(self, study: "CMRStudy", context: AnalysisContext) -> PipelineResult:
        series = study.preferred("cine", "sax")
        if series is None:
            return self._declined(None, "no cine short-axis series in the study")
        try:
            volume = study.load_volume(series)
        except StudyError as error:
            return self._declined(series.series_instance_uid, f"cine short-axis series is not a usable stack: {error}")
        phases, slices = volume.pixels.shape[:2]
        if phases < 2:
            return self._declined(series.series_instance_uid, f"cine short-axis series has {phases} phase; need >= 2 for ED/ES")
        if slices < 2 or not volume.slice_spacing > 0:
            return self._declined(series.series_instance_uid, f"cine short-axis series has {slices} slice(s); need a stack")
        try:
            model = self.runtime.model(MODEL_NAME)
            spec = CineModelSpec.from_card(model.card.data)
        except (RuntimeErrorNoModel, BackendUnavailable, ValueError) as error:
            return self._declined(series.series_instance_uid, f"cine model unavailable: {error}")

        first_phase, _ = trigger_phase(volume.trigger_times, phases)
        labelmaps = segment_cine(volume.pixels, volume.pixel_spacing, model.run, spec, first_phase=first_phase)
        patient = getattr(study, "patient", None)
        cine_config = self.config.analysis.cine
        measured = measure_cine(
            labelmaps, volume.voxel_volume_ml, trigger_times=volume.trigger_times, height_m=getattr(patient, "height_m", None),
            weight_kg=getattr(patient, "weight_kg", None), sex=getattr(patient, "sex", None),
            bsa_formula=cine_config.bsa_formula, density_g_per_ml=cine_config.myocardial_density_g_per_ml)
        if measured.lv_edv_ml <= 0:
            return self._declined(series.series_instance_uid, "no LV blood pool found in any phase of the cine stack")

        ed, es = measured.ed_phase, measured.es_phase
        summary = measured.summary()
        summary.update({"bsa_m2": _maybe_round(measured.bsa_m2), "bsa_formula": measured.bsa_formula,
                        "indexed": {k: round(v, 2) for k, v in measured.indexed.items()}, "flags": list(measured.flags),
                        "series_instance_uid": series.series_instance_uid,
                        "lv_volume_curve_ml": [round(v, 2) for v in measured.lv_curve_ml],
                        "rv_volume_curve_ml": [round(v, 2) for v in measured.rv_curve_ml],
                        "timing": measured.timing.summary(), "basal_slice_rule": BASAL_RULE,
                        "basal_slices_excluded": [list(pz) for pz in measured.basal_excluded],
                        # AHA 17 segments at ED: mean wall thickness per segment (dicomnode/analysis/aha.py)
                        "aha_segments": aha_summary_for_volume(labelmaps[ed], volume, scar=False, wall_thickness=True)})
        segmentation = SegmentationResult(
            series=series, volume=volume, labelmap=counted_labelmaps(labelmaps, [ed, es], measured.basal_excluded),
            phases=[ed, es], phase_names=list(PHASE_NAMES), algorithm=model.algorithm, pipeline=self.name)
        measurements = {
            "lv_volume_curve_ml": [round(v, 2) for v in measured.lv_curve_ml],
            "rv_volume_curve_ml": [round(v, 2) for v in measured.rv_curve_ml],
            "bsa_m2": _maybe_round(measured.bsa_m2), "bsa_formula": measured.bsa_formula,
            "bsa_formula_code": BSA_FORMULA_CODES.get(measured.bsa_formula) if measured.bsa_formula else None,
            "indexed": dict(measured.indexed), "papillary_muscles": PAPILLARY_MUSCLES,
            "papillary_muscles_mass_code": PAPILLARY_MASS_CODE,
            "basal_slices": BASAL_RULE, "timing": measured.timing.summary(),
            "myocardial_density_g_per_ml": cine_config.myocardial_density_g_per_ml,
            "flags": list(measured.flags), "trigger_times": list(volume.trigger_times),
            "ed_phase": ed, "es_phase": es, "voxel_volume_ml": volume.voxel_volume_ml,
            "values": {k: v for k, v in measured.summary().items()},
        }
        return PipelineResult(name=self.name, summary=summary, segmentations=[segmentation], measurements=measurements,
                              algorithms=[model.algorithm])


def counted_labelmaps(labelmaps: np.ndarray, phases: list[int], basal_excluded: list[tuple[int, int]]) -> np.ndarray:
    """(len(phases), slices, rows, cols) label maps of `phases` as the volumes counted them: the LV blood pool of a
    (phase, slice) the basal-slice rule left out is not drawn, so the SEG re-measures to the reported EDV/ESV."""
    shown = labelmaps[phases].copy()
    for index, phase in enumerate(phases):
        for excluded_phase, z in basal_excluded:
            if excluded_phase == phase:
                plane = shown[index, z]
                plane[plane == Label.LV_BLOOD_POOL] = Label.BACKGROUND
    return shown


def _maybe_round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)
