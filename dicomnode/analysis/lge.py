"""LGE pipeline: segment the preferred LGE short-axis stack with the lge_unet model and quantify scar."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage

from dicomnode.analysis.lge_metrics import (ThresholdResult, fwhm_enhancement, lge_volumes, nsd_enhancement,
                                            remote_myocardium)
from dicomnode.analysis.pipeline import AnalysisContext, Declined, PipelineResult, SegmentationResult
from dicomnode.cmr.resample import InplaneResampler
from dicomnode.cmr.types import StudyError

log = logging.getLogger("dicomnode.analysis.lge")

MODEL_NAME = "lge_unet"
#: model output channel c is node label c (dicomnode.labels.Label 0..4)
CLASSES = 5
#: detail copied into the summary.json blocks of the threshold methods (the full detail is in measurements)
NSD_SUMMARY_EXTRAS = ("threshold", "remote_mean", "remote_sd", "remote_voxels")
FWHM_SUMMARY_EXTRAS = ("threshold", "maximum", "baseline")


def normalise_percentile(stack: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Map the `low` and `high` percentiles of a stack to 0 and 1 (float32); a flat stack becomes zeros."""
    values = np.asarray(stack, dtype=np.float32)
    lo, hi = np.percentile(values, [low, high])
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        return np.zeros_like(values, dtype=np.float32)
    return ((values - lo) / (hi - lo)).astype(np.float32)


@dataclass(frozen=True)
class LGEInputSpec:
    """How the model wants its input (the card's "input" block): a square in-plane crop at a fixed spacing."""

    crop_size: int = 96
    pixel_spacing_mm: float = 2.25
    low_percentile: float = 1.0
    high_percentile: float = 99.0
    spatial_multiple: int = 8
    localisation_size: int = 128  # first, coarse pass over a wider field (288 mm) to find the heart

    def __post_init__(self):
        for name in ("crop_size", "localisation_size"):
            value = getattr(self, name)
            if value < self.spatial_multiple or value % self.spatial_multiple:
                raise ValueError(f"{name} must be a positive multiple of {self.spatial_multiple}, got {value}")
        if self.pixel_spacing_mm <= 0:
            raise ValueError(f"pixel_spacing_mm must be positive, got {self.pixel_spacing_mm}")
        if not 0 <= self.low_percentile < self.high_percentile <= 100:
            raise ValueError(f"need 0 <= low_percentile < high_percentile <= 100, got {self.low_percentile}, "
                             f"{self.high_percentile}")

    @classmethod
    def from_card(cls, card: dict) -> "LGEInputSpec":
        block = card.get("input", {})
        normalisation = block.get("normalisation", {})
        return cls(
            crop_size=int(block.get("crop_size", cls.crop_size)),
            pixel_spacing_mm=float(block.get("pixel_spacing_mm", cls.pixel_spacing_mm)),
            low_percentile=float(normalisation.get("low_percentile", cls.low_percentile)),
            high_percentile=float(normalisation.get("high_percentile", cls.high_percentile)),
            spatial_multiple=int(block.get("spatial_multiple", cls.spatial_multiple)),
            localisation_size=int(block.get("localisation_size", cls.localisation_size)),
        )


@dataclass
class SegmentedStack:
    labels: np.ndarray  # (slices, rows, cols) uint8 on the source grid, node labels 0..4
    centre_rc: tuple[float, float]  # source pixel coordinate the final crop was centred on
    localised: bool  # True when the first pass found the heart (else the image centre was used)


def _softmax(logits: np.ndarray, axis: int) -> np.ndarray:
    shifted = logits - logits.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=axis, keepdims=True)


def _model_pass(pixels: np.ndarray, resampler: InplaneResampler, spec: LGEInputSpec,
                run_model: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Class probabilities (classes, slices, out, out) of one crop."""
    crop = resampler.forward(pixels.astype(np.float32))
    model_input = normalise_percentile(crop, spec.low_percentile, spec.high_percentile)[None, None]
    logits = np.asarray(run_model(model_input))
    expected = (1, CLASSES) + crop.shape
    if logits.shape != expected:
        raise ValueError(f"model returned shape {logits.shape}, expected {expected}")
    return _softmax(logits[0].astype(np.float32), axis=0)


def _heart_centre(probabilities: np.ndarray, resampler: InplaneResampler) -> tuple[float, float] | None:
    """Source-grid centre of the largest 3-D component of LV (blood pool + myocardium) in a coarse pass."""
    heart = probabilities.argmax(axis=0) > 0
    components, count = ndimage.label(heart)
    if count == 0:
        return None
    sizes = ndimage.sum(heart, components, index=range(1, count + 1))
    largest = components == (int(np.argmax(sizes)) + 1)
    _, rows, cols = np.nonzero(largest)
    row, col = rows.mean(), cols.mean()
    return (resampler.offset[0] + row * resampler.scale[0], resampler.offset[1] + col * resampler.scale[1])


def segment_stack(pixels: np.ndarray, spacing_rc: tuple[float, float], run_model: Callable[[np.ndarray], np.ndarray],
                  spec: LGEInputSpec = LGEInputSpec()) -> SegmentedStack:
    """Labels (slices, rows, cols) of one LGE stack on its own grid.

    Pass 1 runs the model over a wide field (`localisation_size` pixels at the model spacing) centred on the
    image to find the heart; pass 2 runs it on a `crop_size` crop centred on the heart found (the image centre
    when none). Probabilities are mapped back to the source grid with linear interpolation, then argmax.
    """
    pixels = np.asarray(pixels)
    if pixels.ndim != 3 or min(pixels.shape) < 1:
        raise ValueError(f"pixels must be a (slices, rows, cols) stack, got shape {pixels.shape}")
    if not np.isfinite(pixels).all():
        raise ValueError("pixels contain NaN or infinite values")
    shape_rc = pixels.shape[1:]
    target = spec.pixel_spacing_mm
    wide = InplaneResampler(shape_rc, spacing_rc, target, (spec.localisation_size,) * 2)
    centre = _heart_centre(_model_pass(pixels, wide, spec, run_model), wide)
    localised = centre is not None
    crop = InplaneResampler(shape_rc, spacing_rc, target, (spec.crop_size,) * 2, centre_rc=centre)
    probabilities = _model_pass(pixels, crop, spec, run_model)
    source = crop.inverse_probabilities(np.moveaxis(probabilities, 0, 1))  # (slices, classes, rows, cols)
    labels = source.argmax(axis=1).astype(np.uint8)
    return SegmentedStack(labels=labels, centre_rc=tuple(float(v) for v in crop.centre_rc), localised=localised)


def _round(value: float, digits: int = 3) -> float:
    return round(float(value), digits)


class LGEPipeline:
    """Scar quantification on the preferred LGE short-axis stack (PSIR preferred by the study's own ranking)."""

    name = "lge"

    def __init__(self, config, runtime):
        from dicomnode.config import Config

        if not isinstance(config, Config):
            raise TypeError(f"config must be a dicomnode.config.Config, got {type(config).__name__}")
        if runtime is None or not hasattr(runtime, "model"):
            raise TypeError("runtime must be a dicomnode.inference.Runtime (something with .model(name))")
        self.config = config
        self.settings = config.analysis.lge
        self.runtime = runtime
        model = runtime.model(MODEL_NAME)  # load once, warm; a missing model makes the pipeline unavailable
        self.spec = LGEInputSpec.from_card(model.card.data)

    def _declined(self, series_uid: str | None, reason: str) -> PipelineResult:
        log.info("lge declined: %s", reason)
        return PipelineResult(name=self.name, summary=None, declined=[Declined(series_uid, reason)])

    def run(self, study, context: AnalysisContext) -> PipelineResult:
        series = study.preferred("lge", "sax")
        if series is None:
            return self._declined(None, "no LGE short-axis stack in the study")
        try:
            volume = study.load_volume(series)
        except StudyError as exc:
            return self._declined(series.series_instance_uid, f"LGE stack refused: {exc}")
        if volume.pixels.shape[1] < 2:
            return self._declined(series.series_instance_uid, "LGE stack has fewer than 2 slices")
        runtime = context.runtime if context.runtime is not None else self.runtime
        model = runtime.model(MODEL_NAME)
        image = volume.pixels[0]
        segmented = segment_stack(image, volume.pixel_spacing, model.run, self.spec)
        labels = segmented.labels
        settings = self.settings
        volumes = lge_volumes(labels, volume.voxel_volume_ml, settings.myocardial_density_g_per_ml,
                              settings.large_burden_percent, settings.large_burden_comparator)
        if volumes.myocardium_volume_ml == 0:
            return self._declined(series.series_instance_uid, "no LV myocardium found in the LGE stack")
        nsd_full, fwhm_full = self._threshold_methods(image, labels, volume.voxel_volume_ml, series.lge_kind == "psir")
        per_slice = [{key: (_round(v) if isinstance(v, float) else v) for key, v in s.items()}
                     for s in volumes.per_slice_dicts()]
        summary = {
            "method": "dl",
            "myocardium_volume_ml": _round(volumes.myocardium_volume_ml, 2),
            "lv_mass_g": _round(volumes.lv_mass_g, 2),
            "scar_volume_ml": _round(volumes.scar_volume_ml, 2),
            "mvo_volume_ml": _round(volumes.mvo_volume_ml, 2),
            "lge_percent": _round(volumes.lge_percent, 2),
            "large_scar_burden": volumes.large_scar_burden,
            "nsd": {"n": settings.nsd_n, "lge_percent": nsd_full.get("lge_percent"),
                    **{k: nsd_full[k] for k in NSD_SUMMARY_EXTRAS if k in nsd_full}},
            "fwhm": {"lge_percent": fwhm_full.get("lge_percent"),
                     **{k: fwhm_full[k] for k in FWHM_SUMMARY_EXTRAS if k in fwhm_full}},
            "per_slice": per_slice,
            "series_instance_uid": series.series_instance_uid,
        }
        if segmented.localised is False:
            log.warning("lge: heart not found in the first pass; crop centred on the image")
        segmentation = SegmentationResult(series=series, volume=volume, labelmap=labels[None], phases=[0],
                                          phase_names=["late enhancement"], algorithm=model.algorithm, pipeline="lge")
        measurements = {
            "per_slice": per_slice,
            "nsd": nsd_full,
            "fwhm": fwhm_full,
            "large_burden_cutoff_percent": settings.large_burden_percent,
            "large_burden_comparator": settings.large_burden_comparator,
            "myocardial_density_g_per_ml": settings.myocardial_density_g_per_ml,
            "voxel_volume_ml": volume.voxel_volume_ml,
            "crop_centre_rc": list(segmented.centre_rc),
            "heart_localised": segmented.localised,
            "lge_kind": series.lge_kind,
        }
        return PipelineResult(name=self.name, summary=summary, segmentations=[segmentation],
                              measurements=measurements, algorithms=[model.algorithm])

    def _threshold_methods(self, image: np.ndarray, labels: np.ndarray, voxel_volume_ml: float,
                           psir: bool) -> tuple[dict, dict]:
        """n-SD and FWHM inside the DL myocardium; a method that cannot run reports why instead of numbers.

        FWHM on PSIR measures half maximum above the remote (nulled) myocardium, as PSIR's stored zero is arbitrary.
        """
        def fwhm() -> ThresholdResult:
            baseline = remote_myocardium(image, labels).mean if psir else 0.0
            return fwhm_enhancement(image, labels, voxel_volume_ml, baseline=baseline)

        results = []
        for method in (lambda: nsd_enhancement(image, labels, self.settings.nsd_n, voxel_volume_ml), fwhm):
            try:
                found = method().summary()
                results.append({k: (_round(v, 4) if isinstance(v, float) else v) for k, v in found.items()})
            except ValueError as exc:
                results.append({"lge_percent": None, "error": str(exc)})
        nsd, fwhm_result = results
        nsd.setdefault("n", self.settings.nsd_n)
        fwhm_result["baseline_source"] = "remote myocardium mean (PSIR)" if psir else "zero (magnitude)"
        return nsd, fwhm_result
