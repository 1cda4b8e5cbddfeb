"""Backend parity checks in plain numpy: output error, argmax (mask) agreement, and derived clinical numbers.

Tolerances (docs/inference.md): FP32 backends max |error| <= 1e-4 x max(1, max|reference|); FP16 per model
(card["parity"]["fp16_max_abs"], default 5e-2 x max(1, max|reference|)) and, for every precision, argmax masks
agreeing on >= 99.9 % of voxels and derived volumes within 0.1 mL, %LGE within 0.1 percentage point.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dicomnode.labels import ENHANCED_LABELS, MYOCARDIUM_LABELS, Label

FP32_MAX_ABS = 1e-4
FP16_MAX_ABS_DEFAULT = 5e-2
MIN_ARGMAX_AGREEMENT = 0.999
MAX_VOLUME_DIFFERENCE_ML = 0.1
MAX_PERCENT_DIFFERENCE = 0.1


@dataclass(frozen=True)
class ParityReport:
    """How far a candidate backend's output is from the reference's."""

    max_abs_error: float
    mean_abs_error: float
    max_rel_error: float  # max |error| / max(1, max |reference|)
    argmax_agreement: float | None  # fraction of positions whose argmax over the class axis agrees
    reference_scale: float
    shape: tuple[int, ...]

    def as_dict(self) -> dict:
        return {"max_abs_error": self.max_abs_error, "mean_abs_error": self.mean_abs_error,
                "max_rel_error": self.max_rel_error, "argmax_agreement": self.argmax_agreement,
                "reference_scale": self.reference_scale, "shape": list(self.shape)}


def compare(reference: np.ndarray, candidate: np.ndarray, class_axis: int | None = 1) -> ParityReport:
    """Error statistics of `candidate` against `reference` (same shape); argmax over `class_axis` when given."""
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape:
        raise ValueError(f"shapes differ: reference {reference.shape}, candidate {candidate.shape}")
    if reference.size == 0:
        raise ValueError("cannot compare empty outputs")
    if not np.isfinite(candidate).all():
        raise ValueError("candidate output contains NaN or infinity")
    error = np.abs(candidate - reference)
    scale = max(1.0, float(np.abs(reference).max()))
    agreement = None
    if class_axis is not None and reference.ndim > class_axis and reference.shape[class_axis] > 1:
        agreement = float(np.mean(np.argmax(reference, axis=class_axis) == np.argmax(candidate, axis=class_axis)))
    return ParityReport(
        max_abs_error=float(error.max()), mean_abs_error=float(error.mean()),
        max_rel_error=float(error.max()) / scale, argmax_agreement=agreement,
        reference_scale=scale, shape=tuple(reference.shape),
    )


def label_volumes_ml(labelmap: np.ndarray, voxel_volume_ml: float) -> dict[str, float]:
    """Volume in mL of every node label, plus whole LV myocardium and %LGE (scar incl. MVO / myocardium x 100)."""
    if voxel_volume_ml <= 0:
        raise ValueError(f"voxel_volume_ml must be > 0, got {voxel_volume_ml}")
    counts = {label: int(np.count_nonzero(labelmap == label)) for label in Label if label != Label.BACKGROUND}
    volumes = {label.name.lower() + "_ml": counts[label] * voxel_volume_ml for label in counts}
    myocardium = sum(counts[label] for label in MYOCARDIUM_LABELS)
    enhanced = sum(counts[label] for label in ENHANCED_LABELS)
    volumes["myocardium_ml"] = myocardium * voxel_volume_ml
    volumes["lge_percent"] = 100.0 * enhanced / myocardium if myocardium else 0.0
    return volumes


def class_volumes_ml(labelmap: np.ndarray, voxel_volume_ml: float, classes: int) -> dict[str, float]:
    """Volume in mL of every class index 1..classes-1 of a model's argmax mask (whatever the classes mean)."""
    if voxel_volume_ml <= 0:
        raise ValueError(f"voxel_volume_ml must be > 0, got {voxel_volume_ml}")
    return {f"class{index}_ml": int(np.count_nonzero(labelmap == index)) * voxel_volume_ml for index in range(1, classes)}


def derived_differences(reference_labels: np.ndarray, candidate_labels: np.ndarray, voxel_volume_ml: float,
                        classes: int | None = None) -> dict[str, float]:
    """|candidate - reference| of every derived number: node-label volumes and %LGE (classes None, the masks hold
    node labels), or per-class volumes of a model whose `classes` are its own."""
    if reference_labels.shape != candidate_labels.shape:
        raise ValueError(f"label maps differ in shape: {reference_labels.shape} vs {candidate_labels.shape}")
    if classes is None:
        ref = label_volumes_ml(reference_labels, voxel_volume_ml)
        cand = label_volumes_ml(candidate_labels, voxel_volume_ml)
    else:
        ref = class_volumes_ml(reference_labels, voxel_volume_ml, classes)
        cand = class_volumes_ml(candidate_labels, voxel_volume_ml, classes)
    return {key: abs(cand[key] - ref[key]) for key in ref}


@dataclass
class ParityVerdict:
    """Whether a report meets its tolerances, with every failed check spelled out."""

    passed: bool
    failures: list[str] = field(default_factory=list)


def judge(report: ParityReport, precision: str, fp16_max_abs: float = FP16_MAX_ABS_DEFAULT,
          min_argmax_agreement: float = MIN_ARGMAX_AGREEMENT, derived: dict[str, float] | None = None) -> ParityVerdict:
    """Check `report` (and optional derived differences) against the documented tolerances for `precision`."""
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"precision must be fp32 or fp16, got {precision!r}")
    limit = FP32_MAX_ABS if precision == "fp32" else fp16_max_abs
    failures = []
    if report.max_rel_error > limit:
        failures.append(f"max error {report.max_abs_error:.3g} > {limit:g} x scale {report.reference_scale:.3g}")
    if report.argmax_agreement is not None and report.argmax_agreement < min_argmax_agreement:
        failures.append(f"argmax agreement {report.argmax_agreement:.5f} < {min_argmax_agreement}")
    for key, difference in (derived or {}).items():
        limit_derived = MAX_PERCENT_DIFFERENCE if key.endswith("_percent") else MAX_VOLUME_DIFFERENCE_ML
        if difference > limit_derived:
            failures.append(f"{key} differs by {difference:.3g} > {limit_derived}")
    return ParityVerdict(not failures, failures)
