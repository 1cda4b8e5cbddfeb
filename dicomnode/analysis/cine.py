"""Cine short-axis pipeline: segment every phase of the preferred SAX stack, then measure LV/RV function."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from dicomnode.analysis.aha import aha_summary_for_volume
from dicomnode.analysis.cine_metrics import BSA_FORMULA_CODES, PAPILLARY_MASS_CODE, PAPILLARY_MUSCLES, measure_cine
from dicomnode.analysis.pipeline import AnalysisContext, Declined, PipelineResult, SegmentationResult
from dicomnode.cmr.types import StudyError
from dicomnode.inference.runtime import BackendUnavailable, RuntimeErrorNoModel

if TYPE_CHECKING:  # pragma: no cover
    from dicomnode.cmr.study import CMRStudy
    from dicomnode.config import Config
    from dicomnode.inference import Runtime

#: preprocessing defaults; the model card's "input" block overrides them (training wrote it)
DEFAULT_TARGET_SPACING_MM = 1.5
DEFAULT_CROP_SIZE = 128
#: model output channel -> node label (dicomnode.labels.Label)
DEFAULT_CHANNEL_LABELS = (0, 1, 2, 5)
CLIP_PERCENTILE = 99.5


def axis_interpolation(n_out: int, n_src: int, out_to_src_scale: float, centre_src: float):
    """Indices and weights of 1-D linear interpolation from a source axis onto an output axis.

    Output sample k lies at source coordinate centre_src + (k - (n_out - 1) / 2) * out_to_src_scale.
    Returns (i0, i1, w1, inside): samples outside [0, n_src - 1] are flagged not inside.
    """
    coords = centre_src + (np.arange(n_out, dtype=np.float64) - (n_out - 1) / 2.0) * out_to_src_scale
    inside = (coords >= -0.5) & (coords <= n_src - 0.5)
    clamped = np.clip(coords, 0.0, n_src - 1.0)
    i0 = np.floor(clamped).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_src - 1)
    w1 = (clamped - i0).astype(np.float32)
    return i0, i1, w1, inside


def _interpolate_axis(array: np.ndarray, axis: int, i0, i1, w1) -> np.ndarray:
    lower = np.take(array, i0, axis=axis)
    upper = np.take(array, i1, axis=axis)
    shape = [1] * array.ndim
    shape[axis] = len(w1)
    weight = w1.reshape(shape)
    return lower * (1.0 - weight) + upper * weight


@dataclass(frozen=True)
class SliceResampler:
    """Exact, separable bilinear mapping between a source slice grid and a square crop at a fixed spacing.

    The crop is centred on `centre_rc` (default: the image centre) and axis-aligned with the source grid,
    so the forward map is (scale + shift) per axis and the inverse is the same map read the other way.
    """

    shape_rc: tuple[int, int]
    spacing_rc: tuple[float, float]
    target_spacing: float = DEFAULT_TARGET_SPACING_MM
    out_size: int = DEFAULT_CROP_SIZE
    centre_rc: tuple[float, float] | None = None

    def __post_init__(self):
        rows, cols = self.shape_rc
        if rows < 2 or cols < 2:
            raise ValueError(f"slice shape must be at least 2x2, got {self.shape_rc}")
        if min(self.spacing_rc) <= 0 or self.target_spacing <= 0:
            raise ValueError(f"spacings must be positive, got {self.spacing_rc} -> {self.target_spacing}")
        if self.out_size < 8:
            raise ValueError(f"out_size must be >= 8, got {self.out_size}")

    @property
    def centre(self) -> tuple[float, float]:
        if self.centre_rc is not None:
            return self.centre_rc
        return ((self.shape_rc[0] - 1) / 2.0, (self.shape_rc[1] - 1) / 2.0)

    def forward(self, images: np.ndarray) -> np.ndarray:
        """(..., rows, cols) source slices -> (..., out, out) crop; outside the source is 0."""
        images = np.asarray(images, dtype=np.float32)
        if images.shape[-2:] != tuple(self.shape_rc):
            raise ValueError(f"images end in {images.shape[-2:]}, resampler expects {self.shape_rc}")
        rows, cols = self.shape_rc
        r0, r1, rw, r_in = axis_interpolation(self.out_size, rows, self.target_spacing / self.spacing_rc[0], self.centre[0])
        c0, c1, cw, c_in = axis_interpolation(self.out_size, cols, self.target_spacing / self.spacing_rc[1], self.centre[1])
        out = _interpolate_axis(images, images.ndim - 1, c0, c1, cw)
        out = _interpolate_axis(out, images.ndim - 2, r0, r1, rw)
        return (out * (r_in[:, None] & c_in[None, :])).astype(np.float32)

    def _inverse_axes(self):
        rows, cols = self.shape_rc
        centre_out = (self.out_size - 1) / 2.0
        # source pixel p sits at crop coordinate centre_out + (p - centre_src) * spacing / target
        axes = []
        for n_src, spacing, centre in ((rows, self.spacing_rc[0], self.centre[0]), (cols, self.spacing_rc[1], self.centre[1])):
            scale = spacing / self.target_spacing
            axes.append(axis_interpolation(n_src, self.out_size, scale, centre_out + ((n_src - 1) / 2.0 - centre) * scale))
        return axes

    def _inverse_inside(self, scores: np.ndarray, crop_box: tuple[slice, slice] | None = None):
        """Interpolated scores on the source pixels whose interpolation stencil lies inside `crop_box` of the crop.

        Returns (scores on the source box, source box); the box is None when no source pixel qualifies.
        """
        scores = np.asarray(scores, dtype=np.float32)
        if scores.shape[-2:] != (self.out_size, self.out_size):
            raise ValueError(f"scores end in {scores.shape[-2:]}, expected ({self.out_size}, {self.out_size})")
        crop_box = crop_box or (slice(0, self.out_size), slice(0, self.out_size))
        chosen = []
        for (i0, i1, w1, inside), limits in zip(self._inverse_axes(), crop_box):
            usable = np.flatnonzero(inside & (i0 >= limits.start) & (i1 <= limits.stop - 1))
            if usable.size == 0:
                return None, None
            chosen.append((slice(usable[0], usable[-1] + 1), i0, i1, w1))
        (row_box, r0, r1, rw), (col_box, c0, c1, cw) = chosen
        out = _interpolate_axis(scores, scores.ndim - 1, c0[col_box], c1[col_box], cw[col_box])
        out = _interpolate_axis(out, scores.ndim - 2, r0[row_box], r1[row_box], rw[row_box])
        return out, (row_box, col_box)

    def inverse_scores(self, scores: np.ndarray, outside_channel: int = 0) -> np.ndarray:
        """(..., C, out, out) per-class scores on the crop -> (..., C, rows, cols) on the source grid.

        Source pixels outside the crop get probability 1 for `outside_channel` (background).
        """
        scores = np.asarray(scores, dtype=np.float32)
        out = np.zeros(scores.shape[:-2] + tuple(self.shape_rc), dtype=np.float32)
        out[..., outside_channel, :, :] = 1.0
        inside, box = self._inverse_inside(scores)
        if box is not None:
            out[(Ellipsis,) + box] = inside
        return out

    def inverse_labels(self, scores: np.ndarray, channel_labels=DEFAULT_CHANNEL_LABELS, outside_channel: int = 0) -> np.ndarray:
        """(..., C, out, out) probabilities -> (..., rows, cols) node labels on the source grid.

        Equal to argmax of `inverse_scores`, computed only where it can differ from background: a convex
        combination of probability vectors whose arg-max is background keeps background as arg-max, so only
        source pixels whose stencil touches a non-background crop pixel are interpolated.
        """
        scores = np.asarray(scores, dtype=np.float32)
        lookup = np.asarray(channel_labels, dtype=np.uint8)
        labels = np.full(scores.shape[:-3] + tuple(self.shape_rc), lookup[outside_channel], dtype=np.uint8)
        foreground = (np.argmax(scores, axis=-3) != outside_channel).reshape((-1,) + scores.shape[-2:]).any(axis=0)
        if not foreground.any():
            return labels
        rows, cols = np.flatnonzero(foreground.any(axis=1)), np.flatnonzero(foreground.any(axis=0))
        crop_box = (slice(max(rows[0] - 1, 0), rows[-1] + 2), slice(max(cols[0] - 1, 0), cols[-1] + 2))
        inside, box = self._inverse_inside(scores, crop_box)
        if box is not None:
            labels[(Ellipsis,) + box] = lookup[np.argmax(inside, axis=-3)]
        return labels


def normalise_slices(crops: np.ndarray) -> np.ndarray:
    """Per-slice intensity normalisation of (..., H, W) crops: clip to [0, p99.5], then zero mean / unit SD."""
    crops = np.asarray(crops, dtype=np.float32)
    flat = crops.reshape(-1, crops.shape[-2] * crops.shape[-1])
    high = np.percentile(flat, CLIP_PERCENTILE, axis=1, keepdims=True).astype(np.float32)
    clipped = np.clip(flat, 0.0, np.maximum(high, 1e-6))
    mean = clipped.mean(axis=1, keepdims=True)
    std = clipped.std(axis=1, keepdims=True)
    return ((clipped - mean) / np.maximum(std, 1e-6)).reshape(crops.shape).astype(np.float32)


@dataclass(frozen=True)
class CineModelSpec:
    """Preprocessing the model was trained with, read from its card (engines/models/cine_unet.json)."""

    target_spacing: float = DEFAULT_TARGET_SPACING_MM
    crop_size: int = DEFAULT_CROP_SIZE
    channel_labels: tuple[int, ...] = DEFAULT_CHANNEL_LABELS

    @classmethod
    def from_card(cls, card: dict) -> "CineModelSpec":
        try:
            spec = card["input"]
            channels = sorted(card["output"]["channels"], key=lambda c: c["channel"])
            return cls(float(spec["spacing_mm"]), int(spec["crop_size"]), tuple(int(c["node_label"]) for c in channels))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"cine model card lacks input.spacing_mm / input.crop_size / output.channels: {error}") from error


def softmax(logits: np.ndarray, axis: int) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def preprocess_cine(pixels: np.ndarray, spacing_rc: tuple[float, float], spec: CineModelSpec) -> tuple[np.ndarray, SliceResampler]:
    """(phases, slices, rows, cols) -> model input (phases*slices, 1, crop, crop) and the resampler to map back."""
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.ndim != 4:
        raise ValueError(f"cine pixels must be (phases, slices, rows, cols), got shape {pixels.shape}")
    resampler = SliceResampler(pixels.shape[-2:], tuple(spacing_rc), spec.target_spacing, spec.crop_size)
    crops = normalise_slices(resampler.forward(pixels.reshape((-1,) + pixels.shape[-2:])))
    return crops[:, None], resampler


def segment_cine(pixels: np.ndarray, spacing_rc: tuple[float, float], run_model, spec: CineModelSpec = CineModelSpec(),
                 phases_per_chunk: int = 4) -> np.ndarray:
    """Node label maps (phases, slices, rows, cols) for every phase: one batched model run over phases x slices.

    `run_model` takes float32 (N, 1, crop, crop) and returns logits (N, C, crop, crop). Class scores go back to the
    source grid by bilinear interpolation of the softmax (outside the crop: background) and are then arg-maxed.
    """
    phases, slices = pixels.shape[:2]
    inputs, resampler = preprocess_cine(pixels, spacing_rc, spec)
    logits = np.asarray(run_model(inputs), dtype=np.float32)
    expected = (phases * slices, len(spec.channel_labels), spec.crop_size, spec.crop_size)
    if logits.shape != expected:
        raise ValueError(f"model returned logits of shape {logits.shape}, expected {expected}")
    logits = logits.reshape((phases, slices) + logits.shape[1:])
    labels = np.empty(pixels.shape, dtype=np.uint8)
    for start in range(0, phases, phases_per_chunk):
        chunk = slice(start, start + phases_per_chunk)
        labels[chunk] = resampler.inverse_labels(softmax(logits[chunk], axis=2), spec.channel_labels)
    return labels


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

        labelmaps = segment_cine(volume.pixels, volume.pixel_spacing, model.run, spec)
        patient = getattr(study, "patient", None)
        cine_config = self.config.analysis.cine
        measured = measure_cine(
            labelmaps, volume.voxel_volume_ml, height_m=getattr(patient, "height_m", None),
            weight_kg=getattr(patient, "weight_kg", None), sex=getattr(patient, "sex", None),
            bsa_formula=cine_config.bsa_formula, density_g_per_ml=cine_config.myocardial_density_g_per_ml)
        if measured.lv_edv_ml <= 0:
            return self._declined(series.series_instance_uid, "no LV blood pool found in any phase of the cine stack")

        ed, es = measured.ed_phase, measured.es_phase
        summary = measured.summary()
        summary.update({"bsa_m2": _maybe_round(measured.bsa_m2), "bsa_formula": measured.bsa_formula,
                        "indexed": {k: round(v, 2) for k, v in measured.indexed.items()}, "flags": list(measured.flags),
                        "series_instance_uid": series.series_instance_uid,
                        # AHA 17 segments at ED: mean wall thickness per segment (dicomnode/analysis/aha.py)
                        "aha_segments": aha_summary_for_volume(labelmaps[ed], volume, scar=False, wall_thickness=True)})
        segmentation = SegmentationResult(
            series=series, volume=volume, labelmap=labelmaps[[ed, es]], phases=[ed, es], phase_names=list(PHASE_NAMES),
            algorithm=model.algorithm, pipeline=self.name)
        measurements = {
            "lv_volume_curve_ml": [round(v, 2) for v in measured.lv_curve_ml],
            "rv_volume_curve_ml": [round(v, 2) for v in measured.rv_curve_ml],
            "bsa_m2": _maybe_round(measured.bsa_m2), "bsa_formula": measured.bsa_formula,
            "bsa_formula_code": BSA_FORMULA_CODES.get(measured.bsa_formula) if measured.bsa_formula else None,
            "indexed": dict(measured.indexed), "papillary_muscles": PAPILLARY_MUSCLES,
            "papillary_muscles_mass_code": PAPILLARY_MASS_CODE,
            "basal_slices": "all slices counted at ED and ES as segmented (no manual basal exclusion)",
            "myocardial_density_g_per_ml": cine_config.myocardial_density_g_per_ml,
            "flags": list(measured.flags), "trigger_times": list(volume.trigger_times),
            "ed_phase": ed, "es_phase": es, "voxel_volume_ml": volume.voxel_volume_ml,
            "values": {k: v for k, v in measured.summary().items()},
        }
        return PipelineResult(name=self.name, summary=summary, segmentations=[segmentation], measurements=measurements,
                              algorithms=[model.algorithm])


def _maybe_round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)
