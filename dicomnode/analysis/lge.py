"""LGE pipeline: segment the preferred LGE short-axis stack with the lge_unet model and quantify scar."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import ndimage

from dicomnode.analysis.aha import aha_summary_for_stack, geometry_warnings, short_stack_text
from dicomnode.analysis.cine import (apex_first, assumed_spacing_attributes, lossy_series, rescale_intercepts,
                                     slice_images, slice_positions_mm)
from dicomnode.analysis.cine_metrics import (BASE_CUT_OFF, BASE_MISSING_MM, BASE_UNCONFIRMED_START, GAP_FACTOR,
                                             LARGE_GAP_FACTOR, MIN_LV_EXTENT_MM, disc_voxel_volumes_ml,
                                             stack_coverage)
from dicomnode.analysis.lge_metrics import (INDETERMINATE, eight_bit_reason, fwhm_enhancement, lge_presence,
                                            lge_volumes, nsd_enhancement, threshold_applicability)
from dicomnode.analysis.model_error import beyond_known_error, systematic_bias
from dicomnode.analysis.phase_text import merged_numbers, not_lge_text, other_views_text
from dicomnode.analysis.reference_age import (ADULT_RANGES_NOT_APPLIED, adult_ranges_note, age_note,
                                              lv_extent_rule_withheld, patient_child_size)
from dicomnode.analysis.pipeline import AnalysisContext, Declined, PipelineResult, SegmentationResult
from dicomnode.cmr.intensity import magnitude_floor_note, magnitude_floor_shift
from dicomnode.cmr.orientation import anatomical_turn, canonical_inplane, rv_direction_deg
from dicomnode.cmr.recognize import dark_blood_name
from dicomnode.cmr.resample import InplaneResampler
from dicomnode.cmr.structures import LV_LABELS, keep_largest_structures
from dicomnode.cmr.types import StudyError
from dicomnode.config import Config
from dicomnode.labels import MYOCARDIUM_LABELS, Label
from dicomnode.rounding import number_text, stored_value

log = logging.getLogger("dicomnode.analysis.lge")

MODEL_NAME = "lge_unet"
#: model output channel c is node label c (dicomnode.labels.Label 0..5: RV blood pool included)
CLASSES = 6
#: detail copied into the summary.json blocks of the threshold methods (the full detail is in measurements)
#: card metrics block holding each threshold method's agreement with expert %LGE on the model's own myocardium
THRESHOLD_VALIDATION_KEY = "threshold_methods_on_model_myocardium_myops"
THRESHOLD_MIN_R = 0.8
NSD_SUMMARY_EXTRAS = ("applicable", "reason", "validated", "caveat", "threshold", "remote_mean", "remote_sd",
                      "remote_voxels")
FWHM_SUMMARY_EXTRAS = ("applicable", "reason", "validated", "caveat", "threshold", "maximum", "baseline")


def summary_block(method: dict, extras: tuple[str, ...]) -> dict:
    """The summary.json block of a threshold method from its full result (measurements): n (n-SD), lge_percent and
    the `extras` present, e.g. the caveat of a method computed though not validated."""
    return {**({"n": method["n"]} if "n" in method else {}), "lge_percent": method.get("lge_percent"),
            **{key: method[key] for key in extras if key in method}}


def normalise_percentile(stack: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Map the `low` and `high` percentiles of a stack to 0 and 1 (float32); a flat stack becomes zeros."""
    values = np.asarray(stack, dtype=np.float32)
    lo, hi = np.percentile(values, [low, high])
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        return np.zeros_like(values, dtype=np.float32)
    return ((values - lo) / (hi - lo)).astype(np.float32)


def padding_bounds(stack: np.ndarray) -> tuple[int, int, int, int]:
    """(first row, end row, first col, end col) of a (slices, rows, cols) stack without its padding: the outer
    rows and columns that hold one constant value on every slice (a matrix zero-filled to a larger size by the
    scanner or an export). At least one row and one column always remain."""
    values = np.asarray(stack)

    def constant(line: np.ndarray) -> bool:
        return bool((line == line.flat[0]).all())

    r0, r1, c0, c1 = 0, values.shape[1], 0, values.shape[2]
    while r1 - r0 > 1 and constant(values[:, r0, c0:c1]):
        r0 += 1
    while r1 - r0 > 1 and constant(values[:, r1 - 1, c0:c1]):
        r1 -= 1
    while c1 - c0 > 1 and constant(values[:, r0:r1, c0]):
        c0 += 1
    while c1 - c0 > 1 and constant(values[:, r0:r1, c1 - 1]):
        c1 -= 1
    return r0, r1, c0, c1


def normalise_zscore(stack: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """The model's input normalisation of a whole (slices, rows, cols) stack on its source grid: clip to the
    `low`..`high` percentiles, then subtract the mean and divide by the SD of the clipped values (nnU-Net's MR
    scheme with robust clipping), float32. Invariant to linear rescaling, so 8-bit exports and 12-bit scanner
    values of one image give the same input. A flat stack becomes zeros.

    The percentiles, mean and SD are taken over the stack without its padding (`padding_bounds`): zero-filling a
    matrix to a larger size changed them, and with them the scar the network finds (MyoPS Case3018 padded by 160
    pixels on each side: %LGE 16.5 -> 15.0, the 15 % burden cut-off nearly crossed; Case3004 10.2 -> 9.8).
    Without the padding the padded and unpadded stacks give the same input and the same result, and the
    cross-validation is unchanged (fold 0, 27 held-out patients: EMIDEC myocardium Dice 0.821 / 0.820 per slice,
    %LGE MAE 4.29 / 4.36; MyoPS 0.851 / 0.851, 7.74 / 7.76, 2026-12-06): 47 of the 100 EMIDEC and 19 of the 33
    MyoPS training stacks carry such borders; the shipped weights were trained with the padding included, and the
    fold-0 check above shows that costs nothing; engines.lge.train normalises with this function from now on."""
    values = np.asarray(stack, dtype=np.float32)
    r0, r1, c0, c1 = padding_bounds(values)
    inner = values[:, r0:r1, c0:c1]
    lo, hi = np.percentile(inner, [low, high])
    clipped_inner = np.clip(inner, lo, hi)
    sd = float(clipped_inner.std())
    if not np.isfinite(sd) or sd <= 0:
        return np.zeros_like(values, dtype=np.float32)
    return ((np.clip(values, lo, hi) - float(clipped_inner.mean())) / sd).astype(np.float32)


#: the smallest field of view (mm, the shorter side without padding) among the LGE model's training stacks:
#: EMIDEC Case_P002 229 mm (EMIDEC 229-360 mm, MyoPS 2020 350-380 mm). On smaller fields the normalisation sees
#: less body around the heart and the network less context: MyoPS Case3004 (expert 11.6 %) cut to 187 mm around
#: the heart read 9.4 % instead of 10.7 %, to 146 mm 4.8 %; with the heart near the edge of a 187 mm field 3.5 %
#: (break round, 2026-12-06)
MIN_TRAINED_FIELD_MM = 229.0


#: how the small-field warning begins; the large-burden flag withheld for it says "withheld: " and this
SMALL_FIELD_START = SMALL_FIELD_NOTE_START = "small field of view"


def field_of_view_mm(stack: np.ndarray, spacing_rc: tuple[float, float]) -> tuple[float, float]:
    """(rows, columns) extent in mm of a (slices, rows, cols) stack without its padding (`padding_bounds`)."""
    r0, r1, c0, c1 = padding_bounds(stack)
    return (r1 - r0) * float(spacing_rc[0]), (c1 - c0) * float(spacing_rc[1])


def _field_mm_text(value_mm: float) -> str:
    """A field side in mm as the small-field warning shows it: whole mm, or one decimal (rounded down) where whole mm
    would read as large as MIN_TRAINED_FIELD_MM (228.6 mm is not "229 mm, smaller than the 229 mm")."""
    if round(value_mm) < MIN_TRAINED_FIELD_MM:
        return f"{value_mm:.0f}"
    return f"{math.floor(value_mm * 10) / 10:.1f}"


def small_field_reason(stack: np.ndarray, spacing_rc: tuple[float, float]) -> str | None:
    """Why the LGE numbers of a stack whose field of view (padding excluded, `padding_bounds`) is smaller than any
    the model was trained on (MIN_TRAINED_FIELD_MM) are uncertain, or None for a field as large as those: the network
    sees less context and the normalisation less body around the heart, so the scar is under-read (by up to half on
    the fields measured) and the myocardium as well (MyoPS Case3004 cut to 140 x 157 mm around the heart: myocardium
    and LV mass 27 % lower, %LGE 11.6 -> 4.4; break 44b). The large-burden flag is withheld for it ("withheld: " and
    this reason), as a Yes or No read on such a field may be the under-reading's."""
    rows_mm, cols_mm = field_of_view_mm(stack, spacing_rc)
    if min(rows_mm, cols_mm) >= MIN_TRAINED_FIELD_MM:
        return None
    return (f"{SMALL_FIELD_START} ({_field_mm_text(rows_mm)} x {_field_mm_text(cols_mm)} mm, smaller than the "
            f"{MIN_TRAINED_FIELD_MM:.0f} mm of any stack the model was trained on): scar volume, %LGE, myocardial "
            "volume and LV mass may be under-read (a 146-187 mm field read 12-55 % less scar, a 140 x 157 mm field "
            "27 % less myocardium and LV mass on a tested case); check the contours")


def small_field_notes(stack: np.ndarray, spacing_rc: tuple[float, float]) -> list[str]:
    """The stack warning of small_field_reason, as a list ([] for a field as large as the model's training stacks)."""
    reason = small_field_reason(stack, spacing_rc)
    return [reason] if reason else []


@dataclass(frozen=True)
class LGEInputSpec:
    """How the model wants its input: the model card's "input" block (the training plan, engines/lge/train.py).

    The stack is normalised on its source grid (`normalise_zscore`), resampled in-plane to `pixel_spacing_mm`,
    first over the whole field of view (at most `localisation_size` pixels) to find the heart, then over a
    `crop_size` square centred on it. Sizes are multiples of `spatial_multiple`. A 2.5-D model (`slice_context` 1,
    card key input.slice_context) is always run with each slice's neighbours in its input.
    """

    crop_size: int = 128
    pixel_spacing_mm: float = 1.5
    low_percentile: float = 0.5
    high_percentile: float = 99.5
    spatial_multiple: int = 16
    localisation_size: int = 256
    normalisation: str = "zscore"
    #: slices on either side that the model sees with each slice (0: slices are independent; 1: a 2.5-D model)
    slice_context: int = 0

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
        if self.normalisation not in ("zscore", "percentile"):
            raise ValueError(f"normalisation must be 'zscore' or 'percentile', got {self.normalisation!r}")
        if self.slice_context not in (0, 1):
            raise ValueError(f"slice_context must be 0 or 1, got {self.slice_context}")

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
            normalisation=str(normalisation.get("method", cls.normalisation)),
            slice_context=int(block.get("slice_context", cls.slice_context)),
        )

    def normalise(self, stack: np.ndarray) -> np.ndarray:
        if self.normalisation == "zscore":
            return normalise_zscore(stack, self.low_percentile, self.high_percentile)
        return normalise_percentile(stack, self.low_percentile, self.high_percentile)

    def crop_shape(self, shape_rc: tuple[int, int], spacing_rc: tuple[float, float]) -> tuple[int, int]:
        """(rows, cols) of the pass-2 crop: `crop_size`, or on an axis whose field of view is shorter, that field
        rounded down to the spatial multiple (the network never saw padding in training: a 170 mm field padded
        to the 192 mm crop moved %LGE by 7 points and the myocardium by 9 %)."""
        multiple = self.spatial_multiple
        return tuple(int(min(self.crop_size, max(multiple, int(n * s / self.pixel_spacing_mm) // multiple * multiple)))
                     for n, s in zip(shape_rc, spacing_rc))

    def field_size(self, shape_rc: tuple[int, int], spacing_rc: tuple[float, float]) -> int:
        """Side of the localisation field: the whole field of view at the model spacing, rounded up to the
        spatial multiple, capped at `localisation_size`."""
        extent = max(n * s for n, s in zip(shape_rc, spacing_rc)) / self.pixel_spacing_mm
        multiple = self.spatial_multiple
        return int(min(self.localisation_size, max(multiple, int(np.ceil(extent / multiple)) * multiple)))


#: how the stored values relate to the scanner's signal: the scar decision is calibrated per kind (LGEDecision)
INPUT_KINDS = ("native", "windowed_8bit")


def input_kind(image: np.ndarray, bits_stored: int | None) -> str:
    """"windowed_8bit" for an 8-bit export of the scanner's signal (lge_metrics.eight_bit_reason), else "native"."""
    return "windowed_8bit" if eight_bit_reason(image, bits_stored) else "native"


@dataclass(frozen=True)
class LGEDecision:
    """The model card's "decision" block: a log-probability offset added to the scar and MVO classes before the
    arg-max, per input kind (INPUT_KINDS; 0 where the card names none). Chosen by engines/lge/calibrate.py,
    cross-fitted on the cross-validation folds; a negative offset calls scar only where the network is surer.
    Raises ValueError for an unknown kind or a non-finite offset."""

    scar_log_offset: dict = field(default_factory=dict)

    def __post_init__(self):
        for kind, value in self.scar_log_offset.items():
            if kind not in INPUT_KINDS:
                raise ValueError(f"decision.scar_log_offset: unknown input kind {kind!r}; known: {INPUT_KINDS}")
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"decision.scar_log_offset[{kind!r}] must be a finite number, got {value!r}")

    @classmethod
    def from_card(cls, card: dict) -> "LGEDecision":
        return cls(dict(card.get("decision", {}).get("scar_log_offset", {})))

    def offset(self, kind: str) -> float:
        if kind not in INPUT_KINDS:
            raise ValueError(f"unknown input kind {kind!r}; known: {INPUT_KINDS}")
        return float(self.scar_log_offset.get(kind, 0.0))


def decide_labels(probabilities: np.ndarray, scar_log_offset: float = 0.0) -> np.ndarray:
    """Node labels (slices, rows, cols) uint8 from class probabilities (slices, classes, rows, cols): scar and MVO
    weighted by exp(`scar_log_offset`), arg-max, then the LV and the RV each keep their largest component."""
    weighted = np.asarray(probabilities)
    if scar_log_offset:
        weighted = weighted.copy()
        weighted[:, [int(Label.SCAR), int(Label.MVO)]] *= math.exp(scar_log_offset)
    return keep_largest_structures(weighted.argmax(axis=1).astype(np.uint8))


@dataclass
class SegmentedStack:
    """labels: (slices, rows, cols) uint8 node labels 0..5 on the source grid; probabilities: the same grid's
    class probabilities (slices, classes, rows, cols) float32; centre_rc: source pixel the crop was centred on;
    localised: False when no candidate crop showed a plausible left ventricle (largest LV component under
    MIN_LV_AREA_MM2 over all slices together)."""

    labels: np.ndarray
    probabilities: np.ndarray
    centre_rc: tuple[float, float]
    localised: bool


def _softmax(logits: np.ndarray, axis: int) -> np.ndarray:
    shifted = logits - logits.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=axis, keepdims=True)


def _model_pass(normalised: np.ndarray, resampler: InplaneResampler,
                run_model: Callable[[np.ndarray], np.ndarray], keep: slice = slice(None)) -> np.ndarray:
    """Class probabilities (classes, slices, out, out) of one resampled field of a normalised stack, of the `keep`
    slices only (the others ran as the context of a 2.5-D model, see `_with_context`)."""
    field = resampler.forward(normalised, fill=float(normalised.min()))
    logits = np.asarray(run_model(np.ascontiguousarray(field[None, None], dtype=np.float32)))
    if logits.ndim != 5 or logits.shape[0] != 1 or logits.shape[2:] != field.shape or logits.shape[1] < 5:
        raise ValueError(f"model returned shape {logits.shape}, expected (1, classes, {', '.join(map(str, field.shape))})")
    return _softmax(logits[0, :, keep].astype(np.float32), axis=0)


def _with_context(wanted: slice, slices: int, context: int) -> tuple[slice, slice]:
    """The slices to run so that each of `wanted` is seen with its `context` neighbours on either side (as it is in
    a whole-stack pass), and where the wanted ones lie among them."""
    start, stop = max(0, wanted.start - context), min(slices, wanted.stop + context)
    return slice(start, stop), slice(wanted.start - start, wanted.stop - start)


#: pass 2 is repeated once, centred on the LV it found, when that centre is farther than this from the crop's
RECENTRE_MM = 15.0
#: a plausible LV cross-section (blood pool + myocardium) is at least this large; smaller finds are noise
MIN_LV_AREA_MM2 = 400.0
#: short-axis stacks are planned with the heart near the centre of the field: an LV found farther out than this
#: fraction of the field (centroid to image centre) is another structure
MAX_LV_OFFSET = 0.35
#: candidate crops are compared on this many middle slices (0: the whole stack)
PROBE_SLICES = 1
#: average the whole-stack probabilities of every crop that saw the same ventricle (else the best crop's only).
#: Off: on the full 5-fold CV (133 cases, engines/lge/EVALUATION.md) averaging changed %LGE by 0.08 points on
#: average (MyoPS %LGE MAE 5.96 with, 5.99 without; scar Dice 3D 0.648 / 0.651) and ran the ensemble a second time
#: over the whole stack on 480² stacks
AVERAGE_CROPS = False


def _heart_centre(probabilities: np.ndarray, resampler: InplaneResampler,
                  prior: bool = True) -> tuple[float, float] | None:
    """Source-grid centre of the LV (blood pool + myocardium incl. scar and MVO) found in a wide pass: of the 3-D
    components at least MIN_LV_AREA_MM2 large on some slice and within MAX_LV_OFFSET of the field's centre, the
    largest after weighting by a Gaussian prior on the distance to the centre (`prior`; without it the largest
    anywhere). None when there is no such one."""
    lv = np.isin(probabilities.argmax(axis=0), LV_LABELS)
    components, count = ndimage.label(lv)
    if count == 0:
        return None
    size = np.array(lv.shape[1:], dtype=float)
    middle = (size - 1) / 2.0
    pixel_mm2 = resampler.target_spacing[0] * resampler.target_spacing[1]
    best, best_score = None, 0.0
    for index, found in enumerate(ndimage.find_objects(components), start=1):
        member = components[found] == index
        largest_slice_mm2 = float(member.sum(axis=(1, 2)).max()) * pixel_mm2
        _, rows, cols = np.nonzero(member)
        centroid = np.array([rows.mean() + found[1].start, cols.mean() + found[2].start])
        offset = float(np.max(np.abs(centroid - middle) / size))
        if largest_slice_mm2 < MIN_LV_AREA_MM2 or (prior and offset > MAX_LV_OFFSET):
            continue
        score = float(member.sum()) * (float(np.exp(-0.5 * (offset / 0.25) ** 2)) if prior else 1.0)
        if score > best_score:
            best, best_score = centroid, score
    if best is None:
        return None
    return (resampler.offset[0] + best[0] * resampler.scale[0], resampler.offset[1] + best[1] * resampler.scale[1])


def _rv_direction(probabilities: np.ndarray, resampler: InplaneResampler) -> float | None:
    """Direction (degrees on the source grid's display, dicomnode.cmr.orientation.rv_direction_deg) from the LV to
    the RV (each its largest connected component) of a wide pass's probabilities (classes, slices, out, out); None
    where no RV is found. The resampler's grid is square in mm and keeps the source's row and column directions."""
    labels = keep_largest_structures(probabilities.argmax(axis=0).astype(np.uint8))
    return rv_direction_deg(np.isin(labels, LV_LABELS), labels == Label.RV_BLOOD_POOL, resampler.target_spacing)


def _distance_mm(a_rc, b_rc, spacing_rc) -> float:
    return float(np.hypot((a_rc[0] - b_rc[0]) * spacing_rc[0], (a_rc[1] - b_rc[1]) * spacing_rc[1]))


def _lv_evidence(probabilities: np.ndarray, resampler: InplaneResampler) -> float:
    """Volume (mm² × slices) of the largest 3-D LV component (labels 1-4) of a crop pass: how much of a left
    ventricle the network sees there, used to choose between candidate crop centres."""
    lv = np.isin(probabilities.argmax(axis=0), LV_LABELS)
    components, count = ndimage.label(lv)
    if count == 0:
        return 0.0
    largest = float(np.bincount(components.ravel())[1:].max())
    return largest * resampler.target_spacing[0] * resampler.target_spacing[1]


def _inside_field(centre_rc, size_rc, shape_rc, spacing_rc, target_spacing: float) -> tuple[float, float]:
    """The crop centre moved, per axis, just as far as needed for a crop of `size_rc` model pixels to stay inside
    the field of view (an axis the crop does not fit in keeps its centre)."""
    moved = []
    for axis in range(2):
        half = (size_rc[axis] - 1) / 2.0 * target_spacing / spacing_rc[axis]  # source pixels from centre to edge
        low, high = half - 0.5, shape_rc[axis] - 0.5 - half
        moved.append(float(min(max(centre_rc[axis], low), high)) if low <= high else float(centre_rc[axis]))
    return moved[0], moved[1]


def _crop_pass(normalised: np.ndarray, shape_rc, spacing_rc, spec: LGEInputSpec, centre_rc,
               run_model: Callable[[np.ndarray], np.ndarray],
               keep: slice = slice(None)) -> tuple[InplaneResampler, np.ndarray, float]:
    """Pass 2 at one candidate centre: the crop resampler, its class probabilities (classes, slices, out, out) and
    the LV evidence. The crop is re-centred once on the LV it found when that lies more than RECENTRE_MM away (the
    network is most accurate with the heart in the middle of its crop), and the re-centred pass is kept only when
    it sees more LV. Only the `keep` slices of `normalised` are segmented (the rest are their context)."""
    size = spec.crop_shape(shape_rc, spacing_rc)
    crop = InplaneResampler(shape_rc, spacing_rc, spec.pixel_spacing_mm, size,
                            centre_rc=_inside_field(centre_rc, size, shape_rc, spacing_rc, spec.pixel_spacing_mm))
    probabilities = _model_pass(normalised, crop, run_model, keep)
    evidence = _lv_evidence(probabilities, crop)
    refined = _heart_centre(probabilities, crop, prior=False)
    if refined is not None:
        refined = _inside_field(refined, size, shape_rc, spacing_rc, spec.pixel_spacing_mm)
    if refined is not None and _distance_mm(refined, crop.centre_rc, spacing_rc) > RECENTRE_MM:
        moved = InplaneResampler(shape_rc, spacing_rc, spec.pixel_spacing_mm, size, centre_rc=refined)
        moved_probabilities = _model_pass(normalised, moved, run_model, keep)
        moved_evidence = _lv_evidence(moved_probabilities, moved)
        if moved_evidence > evidence:
            return moved, moved_probabilities, moved_evidence
    return crop, probabilities, evidence


def _probe_slices(slices: int) -> slice:
    """The middle PROBE_SLICES slices of a stack (all of a short one): where candidate crops are compared."""
    if PROBE_SLICES <= 0 or slices <= PROBE_SLICES:
        return slice(0, slices)
    first = (slices - PROBE_SLICES + 1) // 2  # the wide pass's middle slice is among them
    return slice(first, first + PROBE_SLICES)


def _rest_of_stack(normalised: np.ndarray, probe_range: slice, probe_probabilities: np.ndarray,
                   resampler: InplaneResampler, run_model: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Probabilities (classes, slices, out, out) of the whole stack at one crop, given those of its probe slices:
    only the other slices are run (slices are segmented independently, so the probe's are reused as they are)."""
    slices = normalised.shape[0]
    if probe_range.stop - probe_range.start >= slices:
        return probe_probabilities
    rest = np.r_[0:probe_range.start, probe_range.stop:slices]
    rest_probabilities = _model_pass(normalised[rest], resampler, run_model)
    out = np.empty((probe_probabilities.shape[0], slices) + probe_probabilities.shape[2:], dtype=np.float32)
    out[:, probe_range] = probe_probabilities
    out[:, rest] = rest_probabilities
    return out


def segment_stack(pixels: np.ndarray, spacing_rc: tuple[float, float], run_model: Callable[[np.ndarray], np.ndarray],
                  spec: LGEInputSpec = LGEInputSpec(), scar_log_offset: float = 0.0,
                  locate_model: Callable[[np.ndarray], np.ndarray] | None = None,
                  anatomical_pose: bool = True) -> SegmentedStack:
    """Labels (slices, rows, cols) of one LGE short-axis stack on its own grid.

    pixels: (slices, rows, cols) stored values (MONOCHROME2 sense) of parallel slices, any field of view and
    matrix; spacing_rc: (row, col) pixel spacing in mm; run_model: (1, 1, D, H, W) float32 -> logits
    (1, C, D, H, W). Pass 1 runs the model over the whole field of view of the middle slice (every slice when
    that finds no LV) at the model spacing to find the heart; pass 2 over a `crop_size` square centred on it and,
    when that lies more than RECENTRE_MM from the field's centre, also on the field's centre (short-axis stacks are
    planned on the heart); the candidate whose crop shows the larger left ventricle on the middle PROBE_SLICES
    slices wins (see `_crop_pass`). The rest of the stack is then run at the winning crop (the probe slices'
    probabilities are reused), and with AVERAGE_CROPS also at every crop that saw the same ventricle, their
    probabilities averaged. Comparing candidates on the middle slice
    only halves the time on 480² stacks (1.7 → 0.8-1.0 s) with the same cross-validated accuracy
    (engines/lge/EVALUATION.md). Probabilities are mapped back to the source grid with linear interpolation, then
    `decide_labels` (scar and MVO weighted by exp(scar_log_offset), argmax; the LV and the RV each keep their largest
    connected component). locate_model (same signature as run_model), when given, runs pass 1 and the candidate
    comparison instead of run_model, and run_model then segments every slice at the chosen crop(s): the shipped
    ensemble finds the heart with one member (as each cross-validation fold model does on its own) and spends all
    its members on the segmentation that is reported. With `spec.slice_context` (a 2.5-D model) every partial pass
    includes the neighbours of the slices it segments, and the whole stack is run at the chosen crop, so each
    slice's result is that of a whole-stack pass. With `anatomical_pose` the stack is then turned by quarter turns
    so that the RV found in pass 1 lies in one direction from the LV (dicomnode.cmr.orientation.anatomical_turn) and
    segmented in that pose from pass 1 on, the result turned back: the same heart gives the same labels however the
    patient lay in the scanner (a turn of the grid changed the scar by up to 24 %, break46c). Raises ValueError on a
    malformed stack.
    """
    pixels = np.asarray(pixels)
    if pixels.ndim != 3 or min(pixels.shape) < 1:
        raise ValueError(f"pixels must be a (slices, rows, cols) stack, got shape {pixels.shape}")
    if not np.isfinite(pixels).all():
        raise ValueError("pixels contain NaN or infinite values")
    shape_rc = pixels.shape[1:]
    normalised = spec.normalise(pixels)
    target = spec.pixel_spacing_mm
    field = spec.field_size(shape_rc, spacing_rc)
    wide = InplaneResampler(shape_rc, spacing_rc, target, (field, field))
    middle = pixels.shape[0] // 2
    locate = locate_model if locate_model is not None else run_model
    context = spec.slice_context
    around, keep = _with_context(slice(middle, middle + 1), pixels.shape[0], context)
    wide_probabilities = _model_pass(normalised[around], wide, locate, keep)
    centre = _heart_centre(wide_probabilities, wide)
    if centre is None and pixels.shape[0] > 1:  # no LV on the middle slice: look at every slice
        wide_probabilities = _model_pass(normalised, wide, locate)
        centre = _heart_centre(wide_probabilities, wide)
    turn = anatomical_turn(_rv_direction(wide_probabilities, wide)) if anatomical_pose else None
    if turn is not None and not turn.is_identity:
        turned = segment_stack(turn.apply(pixels), turn.spacing(spacing_rc), run_model, spec, scar_log_offset,
                               locate_model=locate_model, anatomical_pose=False)
        return SegmentedStack(labels=turn.invert(turned.labels), probabilities=turn.invert(turned.probabilities),
                              centre_rc=turn.source_point(turned.centre_rc, shape_rc), localised=turned.localised)
    image_centre = ((shape_rc[0] - 1) / 2.0, (shape_rc[1] - 1) / 2.0)
    candidates = [centre if centre is not None else image_centre]
    if centre is not None and _distance_mm(centre, image_centre, spacing_rc) > RECENTRE_MM:
        candidates.append(image_centre)  # a short-axis stack is planned on the heart: the field's centre competes
    # candidates (and their re-centring) are compared on the middle slices only; the whole stack is then run at
    # the chosen crops
    probe_range = _probe_slices(normalised.shape[0])
    around, keep = _with_context(probe_range, normalised.shape[0], context)
    passes = [_crop_pass(normalised[around], shape_rc, spacing_rc, spec, candidate, locate, keep)
              for candidate in candidates]
    crop, _, evidence = max(passes, key=lambda found: found[2])
    # crops that see the same ventricle (as large, centres close) are averaged: the network's output moves with the
    # crop by a few %LGE points, and averaging damps that (a shift test-time augmentation)
    same = [found[0] for found in passes if found[2] >= 0.8 * evidence
            and _distance_mm(found[0].centre_rc, crop.centre_rc, spacing_rc) <= 2 * RECENTRE_MM]
    same = [crop] + ([resampler for resampler in same if resampler is not crop] if AVERAGE_CROPS else [])
    if locate_model is None and not context:  # the probe slices' probabilities are the segmenting model's: reused
        whole = [(resampler, _rest_of_stack(normalised, probe_range, next(found[1] for found in passes
                                                                           if found[0] is resampler), resampler,
                                            run_model))
                 for resampler in same]
    else:
        whole = [(resampler, _model_pass(normalised, resampler, run_model)) for resampler in same]
    localised = _lv_evidence(whole[0][1], whole[0][0]) >= MIN_LV_AREA_MM2
    source = whole[0][0].inverse_probabilities(np.moveaxis(whole[0][1], 0, 1))
    for resampler, probabilities in whole[1:]:
        source += resampler.inverse_probabilities(np.moveaxis(probabilities, 0, 1))
    source /= len(whole)
    source[:, 0] += 1.0 - source.sum(axis=1)  # outside the crop: background
    labels = decide_labels(source, scar_log_offset)
    return SegmentedStack(labels=labels, probabilities=source.astype(np.float32),
                          centre_rc=tuple(float(v) for v in crop.centre_rc), localised=localised)


def _round(value: float, digits: int = 3) -> float:
    return round(float(value), digits)


#: a stack warning where the localiser found no plausible LV: the contours and every number may be off the heart
NOT_LOCALISED = ("the heart was not found with confidence (no candidate crop showed a plausible left ventricle): "
                 "the contours and every number of this stack may be wrong; check the segmentation before use")


#: the largest LV myocardial section (mm², healthy + scar + MVO on one slice) under which the segmented myocardium
#: is not a left ventricle: real LGE with expert labels (engines/lge/data.py load_cases, 133 cases) reach at least
#: 1439 mm² on their largest section (EMIDEC Case_P036, in-plane spacing assumed; MyoPS, real geometry: 1892 mm²,
#: Case3018; medians 2289 / 2415 mm²); a small adult LV with a thinned wall (end-diastolic cavity 38 mm across, wall
#: 5 mm) is a ring of about 680 mm² and a child's LV (cavity 30 mm, wall 4 mm) about 430 mm². 300 mm² stays under
#: both; a localisation that failed (break2 finding 2: MyoPS Case3004 cropped to 117 mm) segments 0.1-1.9 mL over
#: six 12-mm slices, at most ~160 mm² on any slice
MIN_MYOCARDIUM_SECTION_MM2 = 300.0
#: the start of the summary's `reason` (and of the PDF's values) where the LGE numbers of a stack are withheld
NOT_DETERMINED = "not determined"
#: the stack warning where the numbers are withheld: the SEG is still written, for review only
UNRELIABLE_SEG_NOTE = ("the LGE numbers of this stack are withheld (not determined); its segmentation (SEG) is written "
                       "for review only and is unreliable")
#: what a stack that misses part of the LV does to the LGE numbers (lge.coverage.caveat, the SR comment, the PDF)
LGE_COVERAGE_CAVEAT = ("LV myocardial volume, mass and scar volume are lower bounds, and %LGE and the large-burden flag "
                       "cover only the slices present: part of the LV lies outside the stack")
#: LGE_COVERAGE_CAVEAT where the only reason is that the base is not confirmed covered (cine_metrics
#: BASE_UNCONFIRMED_START): the LV may be whole, or its base cut off (break48b #3)
LGE_COVERAGE_CAVEAT_UNCONFIRMED = ("LV myocardial volume, mass and scar volume may be lower bounds, and %LGE and the "
                                   "large-burden flag may cover only the slices present: the LV base may lie outside "
                                   "the stack")


def not_determined_reason(localised: bool | None, labels: np.ndarray, spacing_rc) -> str | None:
    """Why the LGE numbers of a segmented stack are not determined (to be withheld), or None where they are: the
    localiser found no plausible LV (`localised` False: every number may be off the heart), or the segmented LV
    myocardium is implausibly small for a left ventricle (its largest section on one slice under
    MIN_MYOCARDIUM_SECTION_MM2). `labels`: (slices, rows, cols) node labels; `spacing_rc`: in-plane spacing, mm.
    The text starts with NOT_DETERMINED."""
    if localised is False:
        return (f"{NOT_DETERMINED}: the heart was not found with confidence (no candidate crop showed a plausible left "
                "ventricle), so the myocardium and scar segmented are not a measurement")
    myocardium = np.isin(np.asarray(labels), [int(v) for v in MYOCARDIUM_LABELS])
    area_mm2 = float(myocardium.reshape(myocardium.shape[0], -1).sum(axis=1).max(initial=0)) \
        * float(spacing_rc[0]) * float(spacing_rc[1])
    if area_mm2 < MIN_MYOCARDIUM_SECTION_MM2:
        return (f"{NOT_DETERMINED}: the LV myocardium segmented is at most {area_mm2:.0f} mm² on any slice, smaller "
                f"than the {MIN_MYOCARDIUM_SECTION_MM2:.0f} mm² of a child's LV section (adult LGE: 1439 mm² or more "
                "in 133 expert-labelled studies), so it is not a measurement of this heart")
    return None


def lge_coverage(labels: np.ndarray, slice_positions, first_is_apical: bool | None,
                 ends_left_out_mm=None, extent_rule_withheld: str | None = None) -> dict:
    """Whether the LGE stack holds the whole LV: the cine's check (cine_metrics.stack_coverage: the apical end slice
    and its neighbour still hold >= half the largest LV section, an LV extent under MIN_LV_EXTENT_MM, a gap of
    slices missing, an acquired end left out) on the LGE label map (slices, rows, cols), as its summary block with
    the LGE's own caveat (LGE_COVERAGE_CAVEAT); its `lv_shorter_than_whole` is True where the LV found spans
    under MIN_LV_EXTENT_MM of stack, shorter than any whole adult LV (the stack clearly covers less than the LV:
    the large-burden flag and the AHA thirds are withheld). `extent_rule_withheld`: why that adult length is not
    required of this patient (a child, reference_age.lv_extent_rule_withheld): neither rule then applies, and the
    block's `notes` say so where it would have."""
    found = stack_coverage(labels, slice_positions, first_is_apical, ends_left_out_mm, extent_rule_withheld)
    block = found.summary()
    block["caveat"] = None if found.complete else (
        LGE_COVERAGE_CAVEAT_UNCONFIRMED if found.base_unconfirmed_only else LGE_COVERAGE_CAVEAT)
    block["reasons"] = [reason.replace(" at ED", "") for reason in block["reasons"]]  # one phase: no ED to name
    return block


#: how child_lge_note begins
CHILD_LGE_NOTE_START = "a child's heart"


def input_checks(image: np.ndarray, labels: np.ndarray, spacing_rc: tuple[float, float]) -> dict:
    """The numbers behind the LGE input warnings (summary `input_checks`; the SR states each warning beside the
    numbers with its number): `blood_myocardium_ratio` (blood_myocardium_ratio: the LV blood-pool median over the
    healthy myocardium median; contrast_notes and dark_blood_notes judge it), `field_of_view_mm` (the smaller side of
    the field without padding, field_of_view_mm; small_field_notes), each rounded to 3 decimals, None where unknown.
    `image`, `labels`: (slices, rows, cols) in the source's intensity units and dicomnode labels."""
    ratio = blood_myocardium_ratio(image, labels)
    return {"blood_myocardium_ratio": None if ratio is None else round(ratio, 3),
            "field_of_view_mm": round(min(field_of_view_mm(image, spacing_rc)), 3)}


def child_lge_note(reason: str) -> str:
    """The LGE stack warning for a child (`reason`: reference_age.lv_extent_rule_withheld): the adult LV length rule
    not applied, and the model's training and validation on adults only (engines/lge/EVALUATION.md)."""
    return (f"{CHILD_LGE_NOTE_START}: {reason}; the adult coverage rule 'a whole LV is at least "
            f"{MIN_LV_EXTENT_MM:.0f} mm long' is not applied, and the LGE model was trained and validated on adult "
            "post-infarction studies only (EMIDEC, MyoPS 2020): its myocardium, scar and %LGE are not validated at a "
            "child's heart size")


#: the start of summary `large_scar_burden_reason` where the flag is withheld for a child (child_burden_reason)
CHILD_BURDEN_START = f"withheld: {ADULT_RANGES_NOT_APPLIED}"


def child_burden_reason(adult_note: str | None) -> str | None:
    """Why the large-burden flag is withheld for a child ("withheld: adult reference ranges not applied: patient 8
    years ..."; `adult_note`: reference_age.adult_ranges_note, None for an adult): its cut-off (Chan 2014, LGE >= 15 %
    of the LV mass) is an adult HCM sudden-death risk marker, as adult as the cine's normal ranges; None for an
    adult."""
    if not adult_note:
        return None
    return (f"withheld: {adult_note.split('; the normal-range flags')[0]}; the large-burden cut-off (Chan 2014) is an "
            "adult HCM risk marker, not validated in children")


def missing_base_burden_reason(coverage: dict | None, labels: np.ndarray, pixel_area_mm2: float,
                               myocardium_ml: float, scar_ml: float, cutoff_percent: float,
                               comparator: str = ">=") -> str | None:
    """Why the large-burden flag is withheld on a stack whose base is cut off (the coverage block's reasons: the
    widening rule, cine_metrics.BASE_CUT_OFF) or not confirmed covered (cine_metrics.BASE_UNCONFIRMED_START), where
    the verdict could turn on the missing base; None where the base is not in question or the verdict holds either
    way (it is then stated, qualified as covering the slices present). The same bound for both, so that a base that
    may be missing never withholds where a base that is missing does not. The missing base is
    cine_metrics.BASE_MISSING_MM of LV, each mm holding the largest myocardium section of the stack (mL = its
    pixels x `pixel_area_mm2` / 1000), scar-free or as enhanced as the most enhanced slice present (scar incl. MVO
    over myocardium): the whole-LV %LGE lies between scar / (myocardium + missing) and (scar + fraction x missing) /
    (myocardium + missing), from `myocardium_ml` and `scar_ml` (mL), which always holds the measured %LGE. The flag
    could go either way where the cut-off (`cutoff_percent`, %) splits that interval for the `comparator` (">=":
    low < cut-off <= high; ">": low <= cut-off < high), both ends rounded to 2 decimals as the verdict's %LGE is. A
    stack without enhancement (`scar_ml` 0) has a whole-LV %LGE of 0 by this bound: its "no" is stated, and no
    upper %LGE is ever said of it. `labels`: (slices, rows, cols) node labels."""
    reasons = [str(r) for r in (coverage or {}).get("reasons") or []]
    unconfirmed = any(r.startswith(BASE_UNCONFIRMED_START) for r in reasons)
    cut = any(r.endswith(BASE_CUT_OFF) for r in reasons)
    if not (unconfirmed or cut) or myocardium_ml <= 0 or scar_ml <= 0:
        return None
    labels = np.asarray(labels)
    myocardium = np.isin(labels, [int(v) for v in MYOCARDIUM_LABELS]).reshape(labels.shape[0], -1).sum(axis=1)
    scar = np.isin(labels, [int(Label.SCAR), int(Label.MVO)]).reshape(labels.shape[0], -1).sum(axis=1)
    present = myocardium > 0
    if not present.any():
        return None
    fraction = float((scar[present] / myocardium[present]).max())
    missing_ml = BASE_MISSING_MM * float(myocardium.max()) * pixel_area_mm2 / 1000.0
    low = round(100.0 * scar_ml / (myocardium_ml + missing_ml), 2)
    high = round(100.0 * (scar_ml + fraction * missing_ml) / (myocardium_ml + missing_ml), 2)
    turns = low <= cutoff_percent < high if comparator == ">" else low < cutoff_percent <= high
    if not turns:
        return None
    where = (f"the LV base may lie outside the stack ({BASE_UNCONFIRMED_START})" if unconfirmed and not cut
             else "the LV base lies outside the stack (base cut off)")
    return (f"withheld: {where}: with up to {BASE_MISSING_MM:.0f} mm ({missing_ml:.0f} mL) of basal myocardium "
            f"missing, scar-free or as enhanced as the most enhanced slice present ({100 * fraction:.0f} %), the "
            f"whole LV's %LGE could lie between {low:.1f} and {high:.1f} %, either side of the {cutoff_percent:g} % "
            "cut-off")


def short_stack_reason(coverage: dict) -> str | None:
    """Why the large-burden flag (and the AHA thirds: aha.aha_summary_for_stack) are withheld on a stack that clearly
    covers less than the LV (lge_coverage `lv_shorter_than_whole`, aha.short_stack_text), or None."""
    short = short_stack_text(coverage)
    return f"{short}, so %LGE is that of the slices present, not of the LV" if short else None


def gap_notes(slice_positions_mm, nominal_step_mm: float | None = None) -> list[str]:
    """What a gap between slice positions (mm along the normal) does to the LGE volumes (the geometry's own warning
    names the gap): one slice missing is interpolated by the summation of discs; more than one leaves the volumes
    lower bounds. A gap is measured against `nominal_step_mm` (mm, Volume.nominal_step_mm: the median over all
    acquired positions, slices left out included) where given, else the median step of the positions given (which
    two left-out slices can double)."""
    if slice_positions_mm is None or len(slice_positions_mm) < 2:
        return []
    steps = np.diff(np.sort(np.asarray(slice_positions_mm, dtype=np.float64)))
    median = float(nominal_step_mm) if nominal_step_mm else float(np.median(steps))
    if median <= 0 or (len(steps) < 2 and not nominal_step_mm):
        return []
    if np.any(steps > LARGE_GAP_FACTOR * median):
        step = "nominal step" if nominal_step_mm else "median step"
        return [f"a gap of over {LARGE_GAP_FACTOR:g} x the {step} {median:.1f} mm (slices missing): myocardial "
                "and scar volumes and mass are lower bounds; %LGE covers the slices present"]
    if np.any(steps > GAP_FACTOR * median):
        return ["myocardial and scar volumes interpolate across the gap (each neighbouring slice's disc reaches the "
                "middle of the gap)"]
    return []


#: voxels of each of LV myocardium and LV blood pool that contrast_notes needs before it compares them
CONTRAST_MIN_VOXELS = 20
#: the healthy-myocardium median over the LV-blood median (both from the segmentation) from which an LGE is flagged:
#: an LGE nulls the remote myocardium and leaves the blood bright (magnitude and PSIR alike), a post-contrast T1 map
#: in ms has myocardium above blood (~450 against ~300 ms: 1.5), and where the model draws its ring on such a map it
#: finds no contrast at all (the node's own segmentation of the rebreak-maps post-contrast maps: 295 / 300, 296 /
#: 300, 300 / 301, ratio 0.98-1.00). Measured with the expert labels as the segmentation (rebreak-maps finding 3):
#: MyoPS 2020 LGE, 33 cases, ratio median 0.36, max 0.64; EMIDEC LGE (PNG), 100 cases, median 0.91, max 0.967 (its
#: images are windowed so that fat dominates the range, which is why the former measure, the difference over the
#: whole image's 1st-99th percentile range, fired on 76 of 100). At 0.975 the warning fires on 0 of 133 real LGE with
#: expert labels (false-alarm rate 0 %) and on each of the forced post-contrast maps; the margin on EMIDEC is narrow
#: (0.967). With the node's own segmentation (shipped lge_unet through segment_stack; in-sample) the same 133: MyoPS
#: max 0.61, EMIDEC max 0.967, 0 fired (t1map round). A native T1 map (myocardium ~1000 below blood ~1600 ms: 0.64
#: on the node's segmentation) reads like an LGE here and is left to the recognition (recognize.declared_map,
#: recognize.mapping_recognition). A warning, not a refusal: contrast_notes says why
MAX_MYOCARDIUM_BLOOD_RATIO = 0.975
#: the start of the contrast warning (contrast_notes): the first stack warning of the LGE block, so that the summary,
#: the SR comment and the PDF's caution row all begin with it
NOT_LGE_CONTRAST_NOTE = "CHECK THE SERIES FIRST: this may be a T1 map, not an LGE"


def contrast_notes(image: np.ndarray, labels: np.ndarray) -> list[str]:
    """The stack warning for an LGE whose segmented healthy LV myocardium is not clearly darker than its LV blood
    pool (medians: myocardium / blood at or over MAX_MYOCARDIUM_BLOOD_RATIO; where the blood median is not positive, a
    myocardium at or above it): LGE nulls the remote myocardium and leaves the blood bright, while a post-contrast
    T1 map in ms has myocardium above blood (~450 against ~300 ms); [] otherwise, or where either region is too
    small to say. It begins with NOT_LGE_CONTRAST_NOTE and is the FIRST stack warning of the LGE block.

    Why a warning and not a refusal of the LGE numbers: the rule is safe on bright-blood LGE but not on every real
    LGE. False alarms on real LGE at 0.975: 0 of 133 with the expert labels (MyoPS 33: max 0.64; EMIDEC 100: max
    0.967, Case_N014) and 0 of 133 with the node's own segmentation (shipped lge_unet through segment_stack, the
    t1map round: MyoPS max 0.61, EMIDEC max 0.967, 4 EMIDEC cases at 0.956-0.967; in-sample, the model was trained
    on these cases): a margin of 0.008. A dark-blood LGE (a real technique: the blood pool nulled like the
    myocardium, the scar alone bright) has myocardium about as bright as its blood by design: the 33 MyoPS cases
    darkened as break37 build2.dark_blood (LV pool at 1.1 x the slice's healthy-myocardium median, smoothed edge)
    reach or pass 0.975 on 10 of 33 with the expert labels (up to 1.40, Case3034) and on 1 of 33 with the node's
    segmentation (0.982, Case3029; median 0.80), and an LGE read at an inversion time far from the myocardial null
    reads the same. A refusal would withhold real scar from those patients, and a native T1 map (myocardium
    ~1000 below blood ~1600 ms: 0.64) passes the check anyway. Maps are kept out of the LGE analysis by their header
    (recognize.declared_map: ImageType, Real World Value Mapping / RescaleType units, ImageComments, the Parametric
    Map SOP class; recognize.calculated_map for a map keeping its source header); this warning is what is left for
    a map that declares nothing."""
    myocardium = image[labels == Label.LV_MYOCARDIUM]
    blood = image[labels == Label.LV_BLOOD_POOL]
    if myocardium.size < CONTRAST_MIN_VOXELS or blood.size < CONTRAST_MIN_VOXELS:
        return []
    myo, pool = float(np.median(myocardium)), float(np.median(blood))
    log.info("lge: healthy myocardium median %.1f, LV blood median %.1f (ratio %s)", myo, pool,
             f"{myo / pool:.3f}" if pool > 0 else "n/a")
    if pool > 0:
        if myo < MAX_MYOCARDIUM_BLOOD_RATIO * pool:
            return []
        said = f"{myo / pool:.2f} x the blood"
    elif myo < pool:
        return []
    else:
        said = "not below the blood"
    return [f"{NOT_LGE_CONTRAST_NOTE}: the healthy LV myocardium is not clearly darker than the LV blood pool "
            f"(median {myo:.0f} against "
            f"{pool:.0f}: {said}; an LGE nulls the myocardium, real LGE reads at most ~0.64 x (MyoPS) to ~0.97 x (EMIDEC)): not "
            "the contrast of an LGE but that of a post-contrast T1 map, of a dark-blood technique or of an inversion "
            "time far from the myocardial null; the scar figures are unreliable: check the series"]


#: the percentile of the LV wall (healthy myocardium, scar and MVO of the segmentation) taken as its bright end
WALL_BRIGHT_PERCENTILE = 95
#: blood_position below which an LGE is read as dark-blood (blood suppressed: the pool as dark as the nulled
#: myocardium, the scar alone bright). Real bright-blood LGE (engines/lge/data.py load_cases, 133 cases), with the
#: expert labels: EMIDEC 100, min 0.18 (Case_P073; next 0.33), median 0.77; MyoPS 33, min 0.33, median 0.67; with
#: the node's own segmentation (segment_stack, the shipped model; in-sample, it was trained on them): EMIDEC min 0.22
#: (Case_P073; next 0.31), median 0.81; MyoPS min 0.35, median 0.69. Dark-blood LGE, simulated as break37
#: build2.dark_blood (LV pool set to 1.1 x the slice's healthy-myocardium median, smoothed edge; no real dark-blood
#: data were available): the break37 dark_blood stack (MyoPS Case3004) on the node's run 0.011 (the myocardium /
#: blood check read 0.952, under its 0.975 cut-off; %LGE 10.7 -> 24.9 %); the 33 MyoPS cases so darkened, on the
#: node's segmentation: median 0.08, 27 of 33 under 0.15 (the 6 others 0.21-0.40, inside the real range: not
#: separable by this feature; their %LGE rose by 10-33 points), on their expert labels median 0.02, 32 of 33 under
#: 0.15. At 0.15: 0 of 133 false alarms on real LGE (expert labels and the node's segmentation alike). A
#: dark-blood name in the header (recognize.dark_blood_name) is the other evidence
MIN_BLOOD_POSITION = 0.15


def blood_position(image: np.ndarray, labels: np.ndarray) -> float | None:
    """Where the LV blood-pool median lies between the healthy LV myocardium median (0) and the bright end of the
    LV wall (1: WALL_BRIGHT_PERCENTILE of myocardium, scar and MVO together), from `image` (any shape, intensity
    units of the source) and `labels` (same shape, dicomnode.labels.Label). A bright-blood LGE puts the blood near
    the scar (about 0.4-1.5), a dark-blood one near the nulled myocardium (about 0). None where the myocardium or
    blood has fewer than CONTRAST_MIN_VOXELS voxels or the wall has no bright end (percentile <= median)."""
    myocardium = image[labels == Label.LV_MYOCARDIUM]
    blood = image[labels == Label.LV_BLOOD_POOL]
    if myocardium.size < CONTRAST_MIN_VOXELS or blood.size < CONTRAST_MIN_VOXELS:
        return None
    wall = image[np.isin(labels, (Label.LV_MYOCARDIUM, Label.SCAR, Label.MVO))]
    myo, bright = float(np.median(myocardium)), float(np.percentile(wall, WALL_BRIGHT_PERCENTILE))
    if bright <= myo:
        return None
    return (float(np.median(blood)) - myo) / (bright - myo)


#: blood / healthy-myocardium median ratio (blood_myocardium_ratio) at or under which the pixels can say dark blood:
#: dark blood means blood about as dark as the nulled myocardium, and blood_position alone, which divides by the
#: wall's bright end, read 0.107 for a bright-blood LGE with the blood 2.04 x the myocardium and a scar x 3
#: (break37b grey_blood2). Measured on the node's segmentation (segment_stack, shipped model; lgemisc_work
#: dl_feats.py): the 33 MyoPS cases darkened as break37 build2.dark_blood, ratio median 1.25, 1.00-1.90, and the
#: 27 of them under MIN_BLOOD_POSITION 1.00-1.59 but for Case3039 (1.90); the 133 real bright-blood LGE 1.03-5.80
#: (median 1.13: EMIDEC's windowing puts blood near myocardium, so the ratio alone cannot separate; with the
#: position as well, 0 of 133 false alarms as before). With the expert labels (2026-12-06): EMIDEC 100, ratio
#: 1.03-1.25 (median 1.10), MyoPS 33, 1.56-5.73 (median 2.81), 0 of 133 fired; the 33 darkened MyoPS 0.71-1.34,
#: 32 of 33 fired (as with the position alone). 1.75 keeps 26 of the 27 node-segmented dark-blood stacks and
#: clears grey_blood2 (2.04) and grey_blood_bright_scar (2.24); the break37 dark_blood stack reads 1.05
MAX_DARK_BLOOD_RATIO = 1.75
#: blood_position under which the pixels support a weak dark-blood name token (recognize.WEAK_DARK_BLOOD_LGE_HINTS):
#: twice MIN_BLOOD_POSITION; the darkened MyoPS cases read 0.00-0.40 (5 of 33 between 0.15 and 0.30), real
#: bright-blood LGE 0.22 (EMIDEC Case_P073), then 0.31 and up, median 0.69-0.81
WEAK_NAME_MAX_POSITION = 0.30
#: blood_position from which the pixels clearly look bright-blood, whatever the name says: above every darkened
#: MyoPS case (max 0.40); the break37b name_* variants (Case3004's own pixels) read 0.64
CLEAR_BRIGHT_POSITION = 0.5


def blood_myocardium_ratio(image: np.ndarray, labels: np.ndarray) -> float | None:
    """The LV blood-pool median over the healthy LV myocardium median (`image` any shape, intensity units of the
    source; `labels` same shape, dicomnode.labels.Label): about 1 on a dark-blood LGE, 1.03-5.8 on real bright-blood
    LGE. None where either region has fewer than CONTRAST_MIN_VOXELS voxels or the myocardium median is not positive
    (a signed PSIR: the ratio says nothing there)."""
    myocardium = image[labels == Label.LV_MYOCARDIUM]
    blood = image[labels == Label.LV_BLOOD_POOL]
    if myocardium.size < CONTRAST_MIN_VOXELS or blood.size < CONTRAST_MIN_VOXELS:
        return None
    myo = float(np.median(myocardium))
    return float(np.median(blood)) / myo if myo > 0 else None


#: the start of the dark-blood stack warning (summary, SR and PDF carry it as a stack warning); the caller withholds
#: the large-scar-burden flag where a stack warning starts with it
DARK_BLOOD_NOTE = "dark-blood LGE"
#: the start of the note where the name says dark blood but the pixels look bright-blood (the flag is kept)
NAME_NOT_PIXELS_NOTE = "dark-blood name, bright-blood pixels"


def dark_blood_notes(image: np.ndarray, labels: np.ndarray, *names: str) -> list[str]:
    """The stack warning for a dark-blood (blood-suppressed) LGE (starting DARK_BLOOD_NOTE), or the note that the name
    says dark blood while the pixels look bright-blood (NAME_NOT_PIXELS_NOTE), or []. Evidence, from `names`
    (SeriesDescription, ProtocolName) and `image` / `labels` (as blood_position):
    - pixels: blood_position under MIN_BLOOD_POSITION with the blood at most MAX_DARK_BLOOD_RATIO x the healthy
      myocardium (blood_myocardium_ratio; None, a signed PSIR, does not veto);
    - an unambiguous name (recognize.dark_blood_name), unless the pixels clearly look bright-blood (blood_position at
      or over CLEAR_BRIGHT_POSITION);
    - a weak name token ('DB', 'BB', 'T2prep': dark_blood_name(weak=True)) only with pixel support (blood_position
      under WEAK_NAME_MAX_POSITION, the ratio as above).
    The model was trained on bright-blood LGE only: on a dark pool it draws the myocardium thin and calls the
    blood-wall border scar (break37: %LGE 10.7 -> 24.9 %; 33 simulated MyoPS cases: +11 points median). The series
    is warned, not declined: the pixel evidence rests on simulated dark-blood data and a name alone may be a site's
    habit, so %LGE is kept with this warning for a reader to check, and the caller withholds the large-burden flag
    (None) that it would inflate. A name not borne out by the pixels is named in a note and the flag is kept."""
    strong, weak = dark_blood_name(*names), dark_blood_name(*names, weak=True)
    position, ratio = blood_position(image, labels), blood_myocardium_ratio(image, labels)
    log.info("lge: LV blood at %s of the way from healthy myocardium to the bright wall, %s x the myocardium",
             "n/a" if position is None else f"{position:.3f}", "n/a" if ratio is None else f"{ratio:.2f}")
    near_myocardium = ratio is None or ratio <= MAX_DARK_BLOOD_RATIO
    pixels = (f"{position:.2f} of the way to the bright wall" if position is not None else "") + (
        f", blood {ratio:.2f} x the healthy myocardium" if ratio is not None else "")
    evidence = []
    if strong and not (position is not None and position >= CLEAR_BRIGHT_POSITION):
        evidence.append(f"the name says so ({strong!r})")
    if weak and not strong and position is not None and position < WEAK_NAME_MAX_POSITION and near_myocardium:
        evidence.append(f"the name token {weak!r} with the pixels' support ({pixels}; under "
                        f"{WEAK_NAME_MAX_POSITION:g})")
    if position is not None and position < MIN_BLOOD_POSITION and near_myocardium:
        evidence.append(f"the LV blood pool is barely brighter than the healthy myocardium ({pixels}; real "
                        "bright-blood LGE reads 0.22-3.0 of the way on the node's segmentation of 133 cases, and "
                        f"dark blood means blood at most {MAX_DARK_BLOOD_RATIO:g} x the myocardium)")
    if evidence:
        return [f"{DARK_BLOOD_NOTE}: {'; '.join(evidence)}. The model was trained on bright-blood LGE only: the "
                "myocardium may be drawn thin and its border with the blood read as scar, so %LGE may be "
                "overestimated (doubled in a simulated case); the large-scar-burden flag is withheld: check the series"]
    if strong or weak:
        return [f"{NAME_NOT_PIXELS_NOTE}: the name suggests dark blood ({strong or weak!r}) but the LV blood pool "
                f"looks bright-blood ({pixels or 'no usable regions'}); read as a bright-blood LGE and the "
                "large-scar-burden flag is kept: check the series if it was blood-suppressed"]
    return []


class LGEPipeline:
    """Scar quantification on the preferred LGE short-axis stack (PSIR preferred by the study's own ranking)."""

    name = "lge"

    def __init__(self, config, runtime):
        if not isinstance(config, Config):
            raise TypeError(f"config must be a dicomnode.config.Config, got {type(config).__name__}")
        if runtime is None or not hasattr(runtime, "model"):
            raise TypeError("runtime must be a dicomnode.inference.Runtime (something with .model(name))")
        self.config = config
        self.settings = config.analysis.lge
        self.runtime = runtime
        model = runtime.model(MODEL_NAME)  # load once, warm; a missing model makes the pipeline unavailable
        self.spec = LGEInputSpec.from_card(model.card.data)
        self.decision = LGEDecision.from_card(model.card.data)
        self.card_metrics = model.card.data.get("metrics", {})
        self.localiser = self._localiser(runtime, model.card.data)

    @staticmethod
    def _localiser(runtime, card: dict) -> str | None:
        """The model the card names to find the heart (one ensemble member: `segment_stack`'s locate_model), or
        None when it names none or it cannot be loaded (then the ensemble finds the heart itself, slower)."""
        name = (card.get("localiser") or {}).get("model")
        if not name:
            return None
        try:
            runtime.model(name)
        except RuntimeError as exc:  # not installed beside the ensemble, or no backend could load it
            log.warning("lge: the card's localiser %s is unavailable (%s); the ensemble finds the heart itself",
                        name, exc)
            return None
        return name

    def _declined(self, series_uid: str | None, reason: str, algorithms=()) -> PipelineResult:
        """A declined LGE; `algorithms`: the models whose segmentation the decline rests on (credited on the report
        that says what was not measured)."""
        log.info("lge declined: %s", reason)
        return PipelineResult(name=self.name, summary=None, declined=[Declined(series_uid, reason)],
                              algorithms=list(algorithms))

    def run(self, study, context: AnalysisContext) -> PipelineResult:
        series = study.preferred("lge", "sax")
        if series is None:
            return self._declined(None, "no LGE short-axis stack in the study"
                                  + other_views_text(getattr(study, "series", ()), "lge")
                                  + not_lge_text(getattr(study, "series", ())))
        try:
            # a repeat that loses slices while decoding ranks again (CMRStudy.load_preferred): `series` is the one measured
            series, volume = study.load_preferred(series)
        except StudyError as exc:
            return self._declined(series.series_instance_uid, f"LGE stack refused: {exc}")
        if volume.pixels.shape[1] < 2:
            return self._declined(series.series_instance_uid, "LGE stack has fewer than 2 slices")
        runtime = context.runtime if context.runtime is not None else self.runtime
        model = runtime.model(MODEL_NAME)
        image = volume.pixels[0]
        # a magnitude LGE below 0 carries an offset (intensity.magnitude_floor_shift): the signal thresholds and the
        # contrast checks read the values, so the whole stack is shifted back; a PSIR keeps its sign
        shift = 0.0 if series.lge_kind == "psir" else magnitude_floor_shift(image)
        shift_notes = [magnitude_floor_note(shift, "LGE", rescale_intercepts(series), lossy_series(series),
                                            float(np.nanmax(image)))] if shift else []
        if shift:
            image = image + np.float32(shift)
        # the network sees the plane in one patient-based orientation, however the scanner stored the grid
        canonical = canonical_inplane(volume.orientation)
        kind = input_kind(image, _bits_stored(series))
        scar_log_offset = self.decision.offset(kind)
        locate = runtime.model(self.localiser).run if self.localiser else None
        # every model that decided the result is credited (IHE AIR Contributing Equipment): the localiser chose
        # the crop the ensemble segmented, so a failed localisation withholds the numbers
        algorithms = [model.algorithm] + ([runtime.model(self.localiser).algorithm] if self.localiser else [])
        segmented = segment_stack(canonical.apply(image), canonical.spacing(volume.pixel_spacing), model.run, self.spec,
                                  scar_log_offset, locate_model=locate)
        labels = canonical.invert(segmented.labels)
        crop_centre_rc = canonical.source_point(segmented.centre_rc, image.shape[-2:])
        settings = self.settings
        # summation of discs, as the cine: a slice missing is interpolated, not left out of the volumes
        positions = slice_positions_mm(volume)
        step = getattr(volume, "nominal_step_mm", None)
        voxel_ml = disc_voxel_volumes_ml(volume.voxel_volume_ml, positions, step)
        volumes = lge_volumes(labels, voxel_ml, settings.myocardial_density_g_per_ml,
                              settings.large_burden_percent, settings.large_burden_comparator)
        if volumes.myocardium_volume_ml == 0:
            return self._declined(series.series_instance_uid, "no LV myocardium found in the LGE stack",
                                  algorithms)
        withheld = not_determined_reason(segmented.localised, labels, volume.pixel_spacing)
        # a child (reference_age): the adult LV length rule of the coverage check is not applied, and a warning says
        # that the model knows adult hearts only
        patient = getattr(study, "patient", None)
        formula = self.config.analysis.cine.bsa_formula  # the one BSA formula of the report: the cine's
        child = lv_extent_rule_withheld(getattr(patient, "age", None), patient_child_size(patient, formula))
        # the large-burden cut-off is an adult one: withheld for a child as the cine's adult range flags, before and
        # whatever the coverage, whose relaxed length rule for a child must not make the flag likelier than an adult's
        child_burden = child_burden_reason(adult_ranges_note(getattr(patient, "age", None),
                                                             patient_child_size(patient, formula)))
        note_on_age = age_note(patient, formula)
        if withheld:  # no number from a segmentation that is not of the heart (break2 finding 2)
            nsd_full = {"lge_percent": None, "applicable": False, "reason": withheld, "n": settings.nsd_n}
            fwhm_full = {"lge_percent": None, "applicable": False, "reason": withheld}
            coverage = None
        else:
            nsd_full, fwhm_full = self._threshold_methods(image, labels, voxel_ml, volume.pixel_spacing, series)
            coverage = lge_coverage(labels, positions, _apex_first(volume), getattr(volume, "ends_left_out_mm", None),
                                    child)
        short = short_stack_reason(coverage)
        dark_blood = dark_blood_notes(image, labels, getattr(series, "description", None) or "",
                                      _protocol_name(series))
        per_slice = [{key: (stored_value(v) if isinstance(v, float) else v) for key, v in s.items()}
                     for s in volumes.per_slice_dicts()]
        if withheld:
            per_slice = [{key: (v if key == "slice_index" else None) for key, v in s.items()} for s in per_slice]
        # each slice's image: position along the stack normal, source SOP Instance UID / frame (cine.slice_images)
        per_slice = [{**values, **source} for values, source in zip(per_slice, slice_images(volume, 0, series))]
        # the large-burden flag is withheld (None) where the numbers are, on a stack that covers clearly less than
        # the LV (short_stack_reason), on a dark-blood LGE, whose %LGE the model may overestimate (dark_blood_notes),
        # and on a field smaller than the model was trained on, where scar is under-read (small_field_reason)
        small_field = small_field_reason(image, volume.pixel_spacing)
        coverage_reason = (f"withheld: {short}" if short else None) or missing_base_burden_reason(
            coverage, labels, float(volume.pixel_spacing[0]) * float(volume.pixel_spacing[1]),
            volumes.myocardium_volume_ml, volumes.scar_volume_ml, settings.large_burden_percent,
            settings.large_burden_comparator)
        # input whose %LGE the node does not read as it was validated: an absence is not stated on it (lge_presence)
        input_reason = next((n.split('. ')[0] for n in dark_blood if n.startswith(DARK_BLOOD_NOTE)), None) or (
            small_field.split(': ')[0] if small_field else None)
        burden_reason = withheld or child_burden or coverage_reason or (
            f"withheld: {input_reason}" if input_reason else None)

        def number(value: float):
            return None if withheld else stored_value(value)

        validation = None if withheld else lge_percent_validation(
            self.card_metrics, kind, volumes.lge_percent, None if burden_reason else volumes.large_scar_burden,
            settings.large_burden_percent)
        burden_reason = burden_reason or indeterminate_burden_reason(validation, volumes.lge_percent,
                                                                     settings.large_burden_percent)
        mvo_block = None if withheld else mvo_validation(self.card_metrics, kind)
        aha = aha_summary_for_stack(labels, volume, coverage, withheld, scar=True)

        summary = {
            "method": "dl",
            # False where the numbers are withheld (`reason`: why): the heart was not found, or the myocardium
            # segmented is implausibly small for an LV; the numbers below are then null
            "determined": not withheld,
            "reason": withheld,
            "myocardium_volume_ml": number(volumes.myocardium_volume_ml),
            "lv_mass_g": number(volumes.lv_mass_g),
            "scar_volume_ml": number(volumes.scar_volume_ml),
            "mvo_volume_ml": number(volumes.mvo_volume_ml),
            "lge_percent": number(volumes.lge_percent),
            "large_scar_burden": None if burden_reason else volumes.large_scar_burden,
            "large_scar_burden_reason": burden_reason,
            # the model's known %LGE error against expert readers on input like this (card cross-validation), and
            # whether %LGE lies within it of the large-burden cut-off
            "lge_percent_validation": validation,
            # the model's known MVO agreement with expert readers (card cross-validation): whether MVO is validated,
            # whether 'MVO present / absent' may be stated, and the sentence every output shows beside the MVO volume
            "mvo_validation": mvo_block,
            # LGE present / absent / uncertain from the stored %LGE (lge_metrics.lge_presence: the band where the
            # cross-validation reads scar-free hearts and small infarcts alike, and no focal scar in an AHA segment);
            # the one decision the suggestions, SR, PDF and console read
            "lge_presence": None if withheld else lge_presence(
                stored_value(volumes.lge_percent), absence_stated=not coverage_reason, aha=aha,
                not_stated_reason=input_reason),
            "nsd": summary_block(nsd_full, NSD_SUMMARY_EXTRAS),
            "fwhm": summary_block(fwhm_full, FWHM_SUMMARY_EXTRAS),
            "per_slice": per_slice,
            # whether the stack holds the whole LV (the cine's stack_coverage): volumes lower bounds where not
            "coverage": coverage,
            # AHA 17 segments: scar extent and transmurality per segment, RV insertion points from the RV label
            "aha_segments": aha,
            "series_instance_uid": series.series_instance_uid,
            "series_number": getattr(series, "series_number", None),
            "series_description": getattr(series, "description", None),
            # every SeriesNumber of a stack merged from one-slice series: the outputs name it by their range
            **merged_numbers(series),
            # other LGE series of the same slices not measured, and why (CMRStudy.left_aside: e.g. the magnitude
            # images beside the PSIR measured)
            "series_left_aside": list((getattr(study, "left_aside", None) or {}).get(series.key, [])),
            # what the stack's geometry showed: instances left out, a gap (missing slice?), duplicates
            # the contrast check first: it questions what the series is, the rest only what its geometry showed
            "stack_warnings": contrast_notes(image, labels) + shift_notes + list(volume.warnings)
            + gap_notes(positions, step)
            # withheld (always so where the heart was not found): the reason alone, NOT_LOCALISED would repeat it
            + ([withheld, UNRELIABLE_SEG_NOTE] if withheld else
               [NOT_LOCALISED] if segmented.localised is False else []) + dark_blood
            + ([small_field] if small_field else []) + geometry_warnings(aha) + assumed_geometry_notes(series)
            + ([child_lge_note(child)] if child else [])
            # unusable or disagreeing age data (reference_age.age_note): said on an LGE-only study too
            + ([note_on_age] if note_on_age else []),
            "input_checks": input_checks(image, labels, volume.pixel_spacing),
        }
        if segmented.localised is False:
            log.warning("lge: %s", NOT_LOCALISED)
        segmentation = SegmentationResult(series=series, volume=volume, labelmap=labels[None], phases=[0],
                                          phase_names=["late enhancement"], algorithm=model.algorithm, pipeline="lge",
                                          contributing=tuple(algorithms[1:]), unreliable=bool(withheld),
                                          unvalidated_labels=() if (mvo_block or {}).get("validated") else
                                          (int(Label.MVO),))
        measurements = {
            "per_slice": per_slice,
            "nsd": nsd_full,
            "fwhm": fwhm_full,
            "large_burden_cutoff_percent": settings.large_burden_percent,
            "large_burden_comparator": settings.large_burden_comparator,
            "myocardial_density_g_per_ml": settings.myocardial_density_g_per_ml,
            "voxel_volume_ml": volume.voxel_volume_ml,
            "crop_centre_rc": list(crop_centre_rc),
            "heart_localised": segmented.localised,
            "determined": not withheld,
            "lge_kind": series.lge_kind,
            # the model card's calibrated scar decision for this kind of input (engines/lge/calibrate.py)
            "scar_decision": {"input_kind": kind, "scar_log_offset": scar_log_offset},
        }
        return PipelineResult(name=self.name, summary=summary, segmentations=[segmentation],
                              measurements=measurements, algorithms=algorithms)

    def _threshold_methods(self, image: np.ndarray, labels: np.ndarray, voxel_volume_ml: float,
                           spacing_rc: tuple[float, float], series) -> tuple[dict, dict]:
        """n-SD and FWHM inside the DL myocardium, or "not applicable" with the reason where a method cannot be
        sound on this input (lge_metrics.threshold_applicability) or refuses it; never a number without basis."""
        reasons = threshold_applicability(image, labels, _bits_stored(series), series.lge_kind)
        n = self.settings.nsd_n
        if self.settings.threshold_methods == "validated":
            for name, key in (("nsd", f"nsd{n}"), ("fwhm", "fwhm")):
                reasons[name] = reasons[name] or self._unvalidated(key)
        methods = {"nsd": lambda: nsd_enhancement(image, labels, n, voxel_volume_ml, spacing_rc),
                   "fwhm": lambda: fwhm_enhancement(image, labels, voxel_volume_ml, spacing_rc)}
        results = {}
        for name, method in methods.items():
            if reasons[name]:
                results[name] = {"lge_percent": None, "applicable": False, "reason": reasons[name]}
                continue
            try:
                measured = method()
                if measured.not_applicable:  # nothing to measure (FWHM without an enhanced region): not a 0 %
                    results[name] = {"lge_percent": None, "applicable": False, "reason": measured.not_applicable}
                    continue
                found = measured.summary()
                # %LGE and volumes stored as the DL numbers (rounding.stored_value, as the SR NUMs); thresholds keep 4
                results[name] = {"applicable": True,
                                 **{k: ((stored_value(v) if k == "lge_percent" or k.endswith("_ml") else _round(v, 4))
                                        if isinstance(v, float) else v) for k, v in found.items()}}
                caveat = self._unvalidated(f"nsd{n}" if name == "nsd" else "fwhm")
                if caveat:  # threshold_methods = 'always': the number is computed, its caveat goes with it
                    results[name]["validated"] = False
                    results[name]["caveat"] = caveat.split("; analysis.lge")[0]
            except ValueError as exc:
                results[name] = {"lge_percent": None, "applicable": False, "reason": str(exc)}
        results["nsd"].setdefault("n", n)
        return results["nsd"], results["fwhm"]


    def _unvalidated(self, method: str) -> str | None:
        """Why a threshold method is not reported with this model (None when the card validates it): its agreement
        with expert %LGE on the model's own myocardium, from the card's cross-validation metrics."""
        validation = self.card_metrics.get(THRESHOLD_VALIDATION_KEY, {}).get(method) or {}
        r = validation.get("r")
        if r is not None and r >= THRESHOLD_MIN_R:
            return None
        measured = f"r = {r:.2f}" if r is not None else "no validation on record"
        return (f"not validated on the automatic myocardium: agreement with expert %LGE {measured} in the model's "
                f"cross-validation on real 12-bit scans (needs r >= {THRESHOLD_MIN_R}); "
                f"analysis.lge.threshold_methods = 'always' computes it for research")


#: the model card's cross-validated %LGE agreement (metrics block) that describes each input kind (INPUT_KINDS): a
#: scanner's own 12-bit data as MyoPS 2020's, an 8-bit windowed export as EMIDEC's
VALIDATION_BY_KIND = {"native": ("myops_lge_percent", "MyoPS 2020: a second centre's 12-bit LGE in real geometry"),
                      "windowed_8bit": ("emidec_lge_percent", "EMIDEC: 8-bit windowed LGE exports")}


def lge_percent_validation(card_metrics: dict, kind: str, lge_percent: float | None, large: bool | None,
                           cutoff_percent: float) -> dict | None:
    """How far the model's %LGE is known to lie from expert readers' on input like this one, from the model card's
    patient-level cross-validation (engines/lge/EVALUATION.md; `card_metrics`: the card's "metrics" block): the
    summary's `lge_percent_validation` block {"data", "patients", "mae", "bias", "sd", "flag_accuracy", "source",
    "near_cutoff"}, %LGE points; None where the card records no agreement for this input kind. `near_cutoff` is true
    where a large-burden flag was given (`large` not None) and %LGE lies within the mean absolute error of the
    cut-off: the flag could go either way within the model's typical error (the flag accuracy reported beside it;
    model_error.beyond_known_error with the bias where it is systematic, model_error.systematic_bias, as the cine
    flags use it: the cards' %LGE biases are chance, so the window is |%LGE - cut-off| <= MAE)."""
    key, data = VALIDATION_BY_KIND.get(kind, (None, None))
    agreement = card_metrics.get(key) if key else None
    if not isinstance(agreement, dict) or agreement.get("mae") is None:
        return None
    mae = float(agreement["mae"])
    near = None if large is None or lge_percent is None else not beyond_known_error(
        float(lge_percent), cutoff_percent, "above" if large else "below", mae,
        systematic_bias(agreement.get("bias"), agreement.get("sd"), agreement.get("n")))
    return {"data": data, "patients": agreement.get("n"), "mae": _round(mae, 2),
            "bias": None if agreement.get("bias") is None else _round(agreement["bias"], 2),
            "sd": None if agreement.get("sd") is None else _round(agreement["sd"], 2),
            "flag_accuracy": None if agreement.get("flag_accuracy") is None else _round(agreement["flag_accuracy"], 3),
            "source": str(card_metrics.get("source") or "the model card's cross-validation"), "near_cutoff": near}


def indeterminate_burden_reason(validation: dict | None, lge_percent: float | None,
                                cutoff_percent: float) -> str | None:
    """Why the large-burden flag is indeterminate, or None: where `validation` (`lge_percent_validation`) says
    %LGE lies within the model's mean absolute error of the cut-off (`near_cutoff`), a Yes or No would go either way
    within the model's typical error, so neither is stated (summary `large_scar_burden` null with this reason; the SR
    codes the flag Undetermined, SCT 373068000). A tester's two near-cut-off MyoPS calls were both wrong: Case3002
    14.3 % "No" against the expert's 19.8 %, Case3005 20.0 % "Yes" against 8.8 %."""
    if not isinstance(validation, dict) or validation.get("near_cutoff") is not True or lge_percent is None:
        return None
    return (f"{INDETERMINATE}: %LGE {number_text(lge_percent)} % lies within the model's mean absolute error "
            f"({validation['mae']:g} points) of the {cutoff_percent:g} % cut-off")


#: the model card's cross-validated MVO agreement (metrics block, engines.lge.evaluate.mvo_agreement), the cases it
#: comes from and the input kind (INPUT_KINDS) those are: only EMIDEC's experts label MVO apart from scar
MVO_VALIDATION = ("emidec_mvo", "EMIDEC: 8-bit windowed LGE exports", "windowed_8bit")
#: what a model's MVO must reach on input like this one before the node states 'MVO present / absent' as a finding:
#: per-slice Dice against the experts (the project's MVO goal, engines/lge/evaluate.py GOALS) and 'MVO present' from
#: the MVO volume right in this share of cases (the share the large-burden flag is held to, the same GOALS)
MVO_MIN_DICE_PER_SLICE = 0.5
MVO_MIN_PRESENCE_ACCURACY = 0.95
#: the centres whose experts label no MVO of its own: where the card's MVO figures cannot come from
MVO_UNLABELLED_CENTRES = "MyoPS 2020 (the second centre) labels no MVO apart from scar"


def mvo_validation(card_metrics: dict, kind: str) -> dict:
    """How far the model's MVO is known to agree with expert readers, from the model card's patient-level
    cross-validation (`card_metrics`: the card's "metrics" block; its MVO_VALIDATION entry, written by
    engines.lge.evaluate.mvo_agreement): the summary's `mvo_validation` block.

    Keys: `validated` (the card's figures are of input like this one, kind `kind`, and reach MVO_MIN_DICE_PER_SLICE
    and MVO_MIN_PRESENCE_ACCURACY), `presence_stated` (whether a report may state 'MVO present / absent': only where
    validated), `data` (the cases the figures come from; None without any), `same_kind` (those cases are input like
    this one), `patients`, `dice_per_slice`, `volume_mae_ml`, `presence_accuracy` ('MVO present' = MVO volume above 0
    against any expert MVO, as the node reads it; fraction 0-1), `presence_accuracy_range` ([lowest, highest] over
    the volume floors the card scores, `floors_ml` [first, last]: whether dropping small specks would help),
    `without_mvo` / `without_mvo_with_mvo` (hearts without expert MVO, and those the model gives some MVO),
    `unlabelled` (where MVO is not validated at all), `source`, and `note`: the sentence a reader is shown
    (mvo_validation_text). Never None: a card without MVO figures gives `validated` false and says so."""
    key, data, figures_kind = MVO_VALIDATION
    figures = card_metrics.get(key)
    same_kind = kind == figures_kind
    figures = figures if isinstance(figures, dict) and figures.get("n") else {}
    presence = [p for p in figures.get("presence") or [] if isinstance(p, dict) and p.get("accuracy") is not None]
    at_zero = next((float(p["accuracy"]) for p in presence if float(p.get("floor_ml", -1)) == 0.0), None)
    accuracies = [float(p["accuracy"]) for p in presence]
    dice = figures.get("dice_per_slice")
    validated = bool(same_kind and dice is not None and dice >= MVO_MIN_DICE_PER_SLICE and at_zero is not None
                     and at_zero >= MVO_MIN_PRESENCE_ACCURACY)
    block = {
        "validated": validated, "presence_stated": validated, "data": data if figures else None,
        "same_kind": bool(figures) and same_kind, "patients": figures.get("n"),
        "dice_per_slice": None if dice is None else _round(dice, 2),
        "volume_mae_ml": None if figures.get("volume_mae_ml") is None else _round(figures["volume_mae_ml"], 2),
        "presence_accuracy": None if at_zero is None else _round(at_zero, 2),
        "presence_accuracy_range": [_round(min(accuracies), 2), _round(max(accuracies), 2)] if accuracies else None,
        "floors_ml": [float(presence[0]["floor_ml"]), float(presence[-1]["floor_ml"])] if presence else None,
        "without_mvo": figures.get("without_mvo"), "without_mvo_with_mvo": figures.get("without_mvo_with_predicted"),
        "unlabelled": MVO_UNLABELLED_CENTRES,
        "source": str(card_metrics.get("source") or "the model card's cross-validation"),
    }
    block["note"] = mvo_validation_text(block)
    return block


def _percent(fraction: float) -> str:
    return f"{100 * float(fraction):.0f}"


def mvo_validation_text(block: dict | None, short: bool = False) -> str:
    """What a reader of the MVO volume is told (summary `mvo_validation`, from mvo_validation): "" where the block
    says the MVO is validated. Full: "not validated: 'MVO present' from this volume agreed with the expert in 69 % of
    EMIDEC cases (69-78 % with any volume floor 0-1.5 mL); 29 of 60 hearts without MVO were given MVO; per-slice
    Dice 0.38; MyoPS 2020 (the second centre) labels no MVO apart from scar", with "those are 8-bit windowed LGE
    exports, not input like this one" where the figures are of another input kind; `short`: "not validated:
    presence right in 69-78 % of cases" (the console)."""
    if isinstance(block, dict) and block.get("validated") is True:
        return ""
    block = block if isinstance(block, dict) else {}
    accuracy, spread = block.get("presence_accuracy"), block.get("presence_accuracy_range")
    if accuracy is None:
        return "not validated: no cross-validated MVO figures on record"
    low, high = spread if spread else (accuracy, accuracy)
    if short:
        return (f"not validated: presence right in {_percent(low)}-{_percent(high)} % of cases" if high != low
                else f"not validated: presence right in {_percent(low)} % of cases")
    data = str(block.get("data") or "").split(":")[0] or "validation"
    floors = block.get("floors_ml") or []
    spread_text = (f" ({_percent(low)}-{_percent(high)} % with any volume floor {floors[0]:g}-{floors[-1]:g} mL)"
                   if spread and high != low and len(floors) == 2 else "")
    parts = [f"not validated: 'MVO present' from this volume agreed with the expert in {_percent(accuracy)} % of "
             f"{data} cases{spread_text}"]
    if not block.get("same_kind"):
        parts.append(f"those are {str(block.get('data')).split(': ')[-1]}, not input like this one")
    if block.get("without_mvo"):
        parts.append(f"{block.get('without_mvo_with_mvo')} of {block['without_mvo']} hearts without MVO were given "
                     "MVO")
    if block.get("dice_per_slice") is not None:
        parts.append(f"per-slice Dice {float(block['dice_per_slice']):.2f}")
    if block.get("unlabelled"):
        parts.append(str(block["unlabelled"]))
    return "; ".join(parts)


def _apex_first(volume) -> bool | None:
    """Whether the volume's first slice is its apical end (cine.apex_first), None without a usable orientation."""
    try:
        return apex_first(volume)
    except (AttributeError, TypeError, ValueError):
        return None


def _protocol_name(series) -> str:
    """ProtocolName of the series' first instance ('' when absent or unreadable)."""
    try:
        return str(getattr(series.instances[0].dataset, "ProtocolName", "") or "")
    except (AttributeError, IndexError):
        return ""


#: the stack warning of a series whose own header says its pixel or slice spacing was assumed (break45a finding 12:
#: the EMIDEC-derived demo study, whose PNG source lost its geometry, said so only on the demo's console)
ASSUMED_GEOMETRY_NOTE = ("the images state an ASSUMED pixel or slice spacing ({where}): the mL and g are nominal "
                         "(the %LGE is not affected)")
def assumed_geometry_notes(series) -> list[str]:
    """[ASSUMED_GEOMETRY_NOTE] where the series' first instance says in DerivationDescription (0008,2111) or
    ImageComments (0020,4000) that its pixel or slice spacing was assumed (cine.assumed_spacing_attributes), naming
    the attribute; [] else, or where the header cannot be read."""
    found = assumed_spacing_attributes(series)
    return [ASSUMED_GEOMETRY_NOTE.format(where=" / ".join(found))] if found else []


def _bits_stored(series) -> int | None:
    """BitsStored of the series' first instance (None when absent or unreadable)."""
    try:
        return int(series.instances[0].dataset.BitsStored)
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
