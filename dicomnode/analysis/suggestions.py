"""Report suggestions: embed a study's measurements in the report-text space and retrieve similar prior reports."""
from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dicomnode.analysis.lge import CHILD_BURDEN_START, CHILD_LGE_NOTE_START
from dicomnode.analysis.lge_metrics import LGE_PRESENCE_BAND_PERCENT, lge_presence
from dicomnode.analysis.pipeline import AlgorithmInfo, Declined, PipelineResult
from dicomnode.analysis.report_bank import ReportBank, top_k_cosine
from dicomnode.analysis.report_text import (BLANK, CONTRADICTION_POINTS, UNCHECKED, blank_measurements,
                                            contradicted, fitting_text, node_facts, report_claims)
from dicomnode.analysis.text_encoder import TextEncoder
from dicomnode.cmr.intensity import magnitude_floor_shift

if TYPE_CHECKING:  # pragma: no cover
    from dicomnode.config import Config
    from dicomnode.inference import Runtime

log = logging.getLogger(__name__)

TITLE = "Report text suggestions from OTHER patients' reports (unverified; not findings of this study)"
#: what every rendering says of a suggestion (summary.json `suggestions_source`, SR, PDF, console)
SOURCE_NOTE = ("text of OTHER patients' reports in the report bank, retrieved by similarity: not a finding or prior "
               "report of this patient; its numbers are blanked (___) and are not this study's; statements "
               "contradicting this study's measurements are never offered, statements the node does not measure "
               "or state (MVO presence, walls without AHA segments) are removed, walls its AHA segments hold no "
               "scar in and 'transmural' where none is over 50 % transmural are blanked")
PROJECTION_FILE = "retrieval_projection.npz"
TEXT_ENCODER_DIR = "text_encoder"
REPORT_BANK_DIR = "report_bank"
INITIAL_INDEX_WAIT_SECONDS = 120.0  # a study arriving while the bank is first indexed waits this long at most

# Node labels (dicomnode.labels): 1 LV blood pool, 2 healthy myocardium, 3 scar, 4 MVO, 5 RV blood pool.
LV_POOL, MYO_HEALTHY, SCAR, MVO, RV_POOL = 1, 2, 3, 4, 5

#: Angular sectors in IMAGE coordinates around the LV cavity centre, named as on a conventionally displayed
#: short-axis image (anterior up, septum left). Only approximate: the true orientation is not checked.
SECTORS = ("anterior", "septal", "inferior", "lateral")
ANGLE_BINS = 36


# ----------------------------------------------------------------------------------------------------------------
# Study descriptors from label maps (numpy in, numbers out)
# ----------------------------------------------------------------------------------------------------------------

def _angles_deg(rows: np.ndarray, cols: np.ndarray, centre_rc: tuple[float, float]) -> np.ndarray:
    """Angle of each pixel around the centre, 0 = image right, 90 = image up (rows grow downwards)."""
    return np.degrees(np.arctan2(-(rows - centre_rc[0]), cols - centre_rc[1])) % 360.0


def _sector_of(angles: np.ndarray) -> np.ndarray:
    """Index into SECTORS of each angle (90-degree quadrants centred on each sector's direction)."""
    return (((angles + 45.0) % 360.0) // 90.0).astype(int).choose([3, 0, 1, 2])


def lge_descriptors(labelmap: np.ndarray, pixels: np.ndarray | None = None) -> dict:
    """Where and how deep the scar lies in an LGE short-axis label map (slices, rows, cols), node labels.

    Returns scar fractions per image-coordinate sector, mean transmural extent (scar share of the myocardium
    along each 10-degree ray that holds scar), the fraction of myocardial slices with scar, and (with
    pixels) the scar-to-remote-myocardium signal ratio. Values are None where they do not exist (no scar).
    """
    labelmap = np.asarray(labelmap)
    if labelmap.ndim != 3:
        raise ValueError(f"labelmap must be (slices, rows, cols), got shape {labelmap.shape}")
    scar_mask = (labelmap == SCAR) | (labelmap == MVO)
    myo_mask = scar_mask | (labelmap == MYO_HEALTHY)
    sector_counts = np.zeros(len(SECTORS))
    transmural = []
    myo_slices = scar_slices = 0
    for index in range(labelmap.shape[0]):
        myo = myo_mask[index]
        if not myo.any():
            continue
        myo_slices += 1
        scar = scar_mask[index]
        if not scar.any():
            continue
        scar_slices += 1
        pool = labelmap[index] == LV_POOL
        centre_source = pool if pool.any() else myo
        rows_c, cols_c = np.nonzero(centre_source)
        centre = (rows_c.mean(), cols_c.mean())
        rows_s, cols_s = np.nonzero(scar)
        sector_counts += np.bincount(_sector_of(_angles_deg(rows_s, cols_s, centre)), minlength=len(SECTORS))
        rows_m, cols_m = np.nonzero(myo)
        bins_myo = (_angles_deg(rows_m, cols_m, centre) // (360.0 / ANGLE_BINS)).astype(int)
        bins_scar = (_angles_deg(rows_s, cols_s, centre) // (360.0 / ANGLE_BINS)).astype(int)
        myo_per_bin = np.bincount(bins_myo, minlength=ANGLE_BINS)
        scar_per_bin = np.bincount(bins_scar, minlength=ANGLE_BINS)
        with_scar = scar_per_bin > 0
        transmural.extend((scar_per_bin[with_scar] / np.maximum(myo_per_bin[with_scar], 1)).tolist())
    result: dict = {"scar_slice_fraction": (scar_slices / myo_slices) if myo_slices else None}
    total = sector_counts.sum()
    for name, count in zip(SECTORS, sector_counts):
        result[f"scar_{name}_fraction"] = float(count / total) if total else None
    result["transmural_extent"] = float(np.mean(transmural)) if transmural else None
    result["scar_to_remote_signal"] = None
    if pixels is not None and total:
        pixels = np.asarray(pixels, dtype=np.float64)
        if pixels.shape != labelmap.shape:
            raise ValueError(f"pixels {pixels.shape} and labelmap {labelmap.shape} differ in shape")
        remote = pixels[labelmap == MYO_HEALTHY]
        if remote.size and remote.mean() > 0:
            result["scar_to_remote_signal"] = float(pixels[labelmap == SCAR].mean() / remote.mean()) \
                if (labelmap == SCAR).any() else None
    return result


def wall_thickness_from_areas(pool_area_mm2: np.ndarray, myo_area_mm2: np.ndarray) -> float | None:
    """Largest mean wall thickness over slices, modelling each slice's LV as two concentric circles (mm)."""
    pool = np.asarray(pool_area_mm2, dtype=np.float64)
    myo = np.asarray(myo_area_mm2, dtype=np.float64)
    valid = (myo > 0) & (pool > 0)
    if not valid.any():
        return None
    thickness = np.sqrt((pool[valid] + myo[valid]) / np.pi) - np.sqrt(pool[valid] / np.pi)
    return float(thickness.max())


def cine_descriptors(ed_labelmap: np.ndarray, pixel_spacing: tuple[float, float]) -> dict:
    """Shape descriptors of the end-diastolic label map (slices, rows, cols): the maximal mean wall thickness."""
    ed_labelmap = np.asarray(ed_labelmap)
    if ed_labelmap.ndim != 3:
        raise ValueError(f"ed_labelmap must be (slices, rows, cols), got shape {ed_labelmap.shape}")
    if min(pixel_spacing) <= 0:
        raise ValueError(f"pixel_spacing must be positive, got {pixel_spacing}")
    pixel_area = float(pixel_spacing[0] * pixel_spacing[1])
    pool = (ed_labelmap == LV_POOL).sum(axis=(1, 2)) * pixel_area
    myo = np.isin(ed_labelmap, (MYO_HEALTHY, SCAR, MVO)).sum(axis=(1, 2)) * pixel_area
    return {"max_wall_thickness_mm": wall_thickness_from_areas(pool, myo)}


# ----------------------------------------------------------------------------------------------------------------
# The study feature vector
# ----------------------------------------------------------------------------------------------------------------

#: name -> divisor bringing the value to about unit range. Each feature also gets a "present" indicator.
FEATURE_SCALES: dict[str, float] = {
    "lge_percent": 100.0,
    "mvo_percent": 100.0,
    "large_scar_burden": 1.0,
    "scar_slice_fraction": 1.0,
    "scar_anterior_fraction": 1.0,
    "scar_septal_fraction": 1.0,
    "scar_inferior_fraction": 1.0,
    "scar_lateral_fraction": 1.0,
    "transmural_extent": 1.0,
    "scar_to_remote_signal": 2.0,
    "lv_edv_ml": 100.0,
    "lv_esv_ml": 100.0,
    "lv_ef_percent": 100.0,
    "lv_mass_g": 100.0,
    "rv_edv_ml": 100.0,
    "rv_esv_ml": 100.0,
    "rv_ef_percent": 100.0,
    "max_wall_thickness_mm": 10.0,
}
FEATURE_NAMES = tuple(FEATURE_SCALES)
LGE_FEATURES = ("lge_percent", "mvo_percent", "large_scar_burden", "scar_slice_fraction", "scar_anterior_fraction",
                "scar_septal_fraction", "scar_inferior_fraction", "scar_lateral_fraction", "transmural_extent",
                "scar_to_remote_signal")
CINE_FEATURES = tuple(name for name in FEATURE_NAMES if name not in LGE_FEATURES)
#: a projection whose training pairs had both LGE and cine this often can embed such a study in one query
COMBINED_TRAINING_MIN_FRACTION = 0.1
#: features that need the label maps (earlier_results); a study known only by its summary numbers lacks them
DESCRIPTOR_FEATURES = ("scar_slice_fraction", "scar_anterior_fraction", "scar_septal_fraction", "scar_inferior_fraction",
                       "scar_lateral_fraction", "transmural_extent", "scar_to_remote_signal", "max_wall_thickness_mm")
MAX_SIGNAL_RATIO = 5.0
GROUP_FLAGS = ("has_lge", "has_cine")
FEATURE_DIM = 2 * len(FEATURE_NAMES) + len(GROUP_FLAGS)


def _number(value) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def study_features(summary: dict, lge_extra: dict | None = None, cine_extra: dict | None = None) -> dict:
    """Flat named features of a study from its summary blocks ("lge", "cine") and optional label-map descriptors.

    `summary` is a study block of summary.json (or just {"lge": {...}, "cine": {...}}); absent values are None.
    """
    lge = summary.get("lge") or {}
    cine = summary.get("cine") or {}
    features: dict = {name: None for name in FEATURE_NAMES}
    if lge:
        features["lge_percent"] = _number(lge.get("lge_percent"))
        myo_ml, mvo_ml = _number(lge.get("myocardium_volume_ml")), _number(lge.get("mvo_volume_ml"))
        if lge.get("mvo_percent") is not None:
            features["mvo_percent"] = _number(lge.get("mvo_percent"))
        elif myo_ml and mvo_ml is not None:
            features["mvo_percent"] = 100.0 * mvo_ml / myo_ml
        if lge.get("large_scar_burden") is not None:
            features["large_scar_burden"] = 1.0 if lge.get("large_scar_burden") else 0.0
    for name in ("lv_edv_ml", "lv_esv_ml", "lv_ef_percent", "lv_mass_g", "rv_edv_ml", "rv_esv_ml", "rv_ef_percent"):
        features[name] = _number(cine.get(name))
    for extra in (lge_extra or {}, cine_extra or {}):
        for name, value in extra.items():
            if name in features:
                features[name] = _number(value)
    if features["scar_to_remote_signal"] is not None:  # PSIR or odd scaling can make the ratio explode
        features["scar_to_remote_signal"] = float(np.clip(features["scar_to_remote_signal"], 0.0, MAX_SIGNAL_RATIO))
    features["has_lge"] = 1.0 if features["lge_percent"] is not None else 0.0
    features["has_cine"] = 1.0 if any(features[n] is not None for n in ("lv_edv_ml", "lv_ef_percent")) else 0.0
    return features


def has_measurements(features: dict) -> bool:
    return any(features.get(name) is not None for name in FEATURE_NAMES)


def only_block(features: dict, block: str) -> dict:
    """The features of one summary block ("lge" or "cine"), the other block's features marked absent."""
    if block not in ("lge", "cine"):
        raise ValueError(f"block must be 'lge' or 'cine', got {block!r}")
    dropped = CINE_FEATURES if block == "lge" else LGE_FEATURES
    kept = {name: (None if name in dropped else value) for name, value in features.items()}
    kept["has_cine" if block == "lge" else "has_lge"] = 0.0
    return kept


def feature_vector(features: dict) -> np.ndarray:
    """Fixed-order float32 vector: scaled values (0 where absent), then presence flags, then group flags."""
    values = np.zeros(len(FEATURE_NAMES), dtype=np.float32)
    present = np.zeros(len(FEATURE_NAMES), dtype=np.float32)
    for index, name in enumerate(FEATURE_NAMES):
        value = _number(features.get(name))
        if value is not None:
            values[index] = value / FEATURE_SCALES[name]
            present[index] = 1.0
    groups = np.array([float(features.get(flag) or 0.0) for flag in GROUP_FLAGS], dtype=np.float32)
    return np.concatenate([values, present, groups])


# ----------------------------------------------------------------------------------------------------------------
# Measurements as a sentence (the text-only baseline, and the query when no projection is installed)
# ----------------------------------------------------------------------------------------------------------------

def measurement_sentence(features: dict) -> str:
    """One templated sentence stating the measured numbers, for the text encoder."""
    parts = []
    f = {name: _number(features.get(name)) for name in FEATURE_NAMES}
    if f["lv_edv_ml"] is not None:
        parts.append(f"LV end-diastolic volume {f['lv_edv_ml']:.0f} mL")
    if f["lv_esv_ml"] is not None:
        parts.append(f"LV end-systolic volume {f['lv_esv_ml']:.0f} mL")
    if f["lv_ef_percent"] is not None:
        parts.append(f"LV ejection fraction {f['lv_ef_percent']:.0f}%")
    if f["lv_mass_g"] is not None:
        parts.append(f"LV mass {f['lv_mass_g']:.0f} g")
    if f["max_wall_thickness_mm"] is not None:
        parts.append(f"maximal wall thickness {f['max_wall_thickness_mm']:.0f} mm")
    if f["rv_edv_ml"] is not None:
        parts.append(f"RV end-diastolic volume {f['rv_edv_ml']:.0f} mL")
    if f["rv_ef_percent"] is not None:
        parts.append(f"RV ejection fraction {f['rv_ef_percent']:.0f}%")
    if f["lge_percent"] is not None:
        parts.append(f"late gadolinium enhancement {f['lge_percent']:.0f}% of the LV myocardium")
        if f["mvo_percent"] is not None:
            parts.append(f"microvascular obstruction {f['mvo_percent']:.0f}% of the myocardium")
        sectors = [(f[f"scar_{name}_fraction"] or 0.0, name) for name in SECTORS]
        main = [name for share, name in sorted(sectors, reverse=True) if share >= 0.25]
        if main:
            parts.append("enhancement mainly " + " and ".join(main))
    return ("Cardiac MRI: " + ", ".join(parts) + ".") if parts else ""


# ----------------------------------------------------------------------------------------------------------------
# Projection of the feature vector into the text space (weights from engines.retrieval.train)
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StudyProjection:
    """Standardise -> Linear -> GELU(tanh) -> Linear -> L2 norm, applied in numpy (no torch in the node)."""

    feature_mean: np.ndarray
    feature_std: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    feature_names: tuple[str, ...]
    combined_fraction: float = 0.0  # share of training studies that had both LGE and cine
    sha256: str = ""

    def __post_init__(self):
        if self.feature_mean.shape != (FEATURE_DIM,) or self.w1.shape[0] != FEATURE_DIM:
            raise ValueError(f"projection expects {self.w1.shape[0]} features, this node builds {FEATURE_DIM}")
        if self.w1.shape[1] != self.b1.shape[0] or self.w2.shape[0] != self.w1.shape[1] or self.w2.shape[1] != self.b2.shape[0]:
            raise ValueError("projection weight shapes do not chain: "
                             f"w1 {self.w1.shape}, b1 {self.b1.shape}, w2 {self.w2.shape}, b2 {self.b2.shape}")
        if tuple(self.feature_names) != FEATURE_NAMES:
            raise ValueError("projection was trained on other feature names than this node builds")

    @property
    def dim(self) -> int:
        return int(self.w2.shape[1])

    @classmethod
    def load(cls, path: str | Path) -> "StudyProjection":
        import hashlib

        path = Path(path)
        raw = path.read_bytes()
        with np.load(path, allow_pickle=False) as data:
            return cls(feature_mean=data["feature_mean"].astype(np.float32), feature_std=data["feature_std"].astype(np.float32),
                       w1=data["w1"].astype(np.float32), b1=data["b1"].astype(np.float32),
                       w2=data["w2"].astype(np.float32), b2=data["b2"].astype(np.float32),
                       feature_names=tuple(str(n) for n in data["feature_names"]),
                       combined_fraction=float(data["combined_fraction"]) if "combined_fraction" in data else 0.0,
                       sha256=hashlib.sha256(raw).hexdigest())

    def save(self, path: str | Path) -> None:
        np.savez(path, feature_mean=self.feature_mean, feature_std=self.feature_std, w1=self.w1, b1=self.b1,
                 w2=self.w2, b2=self.b2, feature_names=np.array(self.feature_names),
                 combined_fraction=np.float32(self.combined_fraction))

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        """(n, FEATURE_DIM) feature vectors -> (n, dim) unit vectors in the text space."""
        x = (np.atleast_2d(vectors).astype(np.float32) - self.feature_mean) / self.feature_std
        hidden = x @ self.w1 + self.b1
        hidden = 0.5 * hidden * (1.0 + np.tanh(0.7978845608 * (hidden + 0.044715 * hidden ** 3)))
        out = hidden @ self.w2 + self.b2
        return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# A prior report's numbers are another patient's: blanked before its text is offered
# ----------------------------------------------------------------------------------------------------------------

# blank_measurements and BLANK live in dicomnode.analysis.report_text (imported above): every numeral but reference
# limits, cut-offs and AHA segment numbers is blanked


# ----------------------------------------------------------------------------------------------------------------
# A suggestion must not contradict what the node measured (break4 finding 1)
# ----------------------------------------------------------------------------------------------------------------

#: %LGE under which a prior report's stored (expert) %LGE without MVO counts as "no significant LGE"; the node's own
#: %LGE is judged against the wider band lge_metrics.LGE_PRESENCE_BAND_PERCENT (node_lge_findings). Rationale: on EMIDEC studies that the
#: experts label normal (0 % infarct) the node's DL segmentation measures 0.6-1.2 % LGE (break4: Case_N037 0.6 %,
#: N040 1.2 %, N042 0.8 %), its %LGE agrees with the experts' on EMIDEC to bias -0.3 +/- 6.0 points (README,
#: "What was measured"), %LGE differs up to 2x between methods (shared/cmr-reference.md), and the smallest infarct in
#: the EMIDEC ground truth (the shipped bank's 67 infarct reports) is 4.0 % of the myocardium: a measurement under 2 %
#: with no MVO lies within the method's false-positive level on normal hearts, not an infarct a report may be built
#: on. In a prior report's stored findings MVO lies only inside an infarct (and is counted in %LGE), so any MVO
#: stored makes its LGE significant; the node's own MVO is not used for it (node_lge_findings).
NO_SIGNIFICANT_LGE_PERCENT = 2.0


@dataclass(frozen=True)
class LgeFindings:
    """The clinically decisive LGE points of a study or of a prior report's stored `study_features`; None = not
    known (not measured, withheld, or the coverage does not allow the absence to be stated)."""

    significant_lge: bool | None  # infarct/scar present (node: lge_metrics.lge_presence; stored: %LGE at or above
    # NO_SIGNIFICANT_LGE_PERCENT, or any MVO)
    mvo: bool | None  # microvascular obstruction present
    large_burden: bool | None  # the large-scar-burden flag
    presence_uncertain: bool = False  # lge_presence kind "uncertain" (in the band, or a focal scar under it)
    # the flag withheld (None) for a child, but %LGE lies under its cut-off by more than the model's error
    # (burden_under_cutoff): a report stating a large burden contradicts the measurement, not the withheld verdict
    large_excluded: bool = False

    def as_dict(self) -> dict:
        found = {"significant_lge": self.significant_lge, "mvo": self.mvo, "large_scar_burden": self.large_burden}
        if self.large_excluded:
            found["large_burden_excluded_by_lge_percent"] = True
        if self.presence_uncertain:
            found["lge_presence_uncertain_band_percent"] = list(LGE_PRESENCE_BAND_PERCENT)
        return found


def _significant(lge_percent: float | None, mvo: bool | None) -> bool | None:
    """Infarct/scar present: any MVO, or %LGE at or above the floor; absent: under the floor with no MVO (or 0 %,
    MVO being counted in %LGE); else unknown."""
    if mvo or (lge_percent is not None and lge_percent >= NO_SIGNIFICANT_LGE_PERCENT):
        return True
    if lge_percent is not None and (mvo is False or lge_percent == 0):
        return False
    return None


def burden_under_cutoff(lge: dict | None, cutoff_percent: float) -> bool:
    """Whether a large burden is ruled out by the measured %LGE where the flag itself is withheld for a child
    (`large_scar_burden_reason` "withheld: adult reference ranges not applied ...", lge.child_burden_reason): %LGE
    under `cutoff_percent` (analysis.lge.large_burden_percent) by more than the model's mean absolute error
    (`lge_percent_validation.mae`), on a stack that covers the LV (`coverage.complete`) and with no stack warning
    but the child's (a small field or a dark-blood LGE, whose %LGE the flag is otherwise withheld on). The child's
    reason hides any other: hence the coverage and the warnings are read here. False where any of it is unknown."""
    if not isinstance(lge, dict) or lge.get("large_scar_burden") is not None:
        return False
    reason = str(lge.get("large_scar_burden_reason") or "")
    percent = _number(lge.get("lge_percent"))
    mae = _number((lge.get("lge_percent_validation") or {}).get("mae")) \
        if isinstance(lge.get("lge_percent_validation"), dict) else None
    warnings = lge.get("stack_warnings") if isinstance(lge.get("stack_warnings"), list) else None
    return (reason.startswith(CHILD_BURDEN_START) and percent is not None and mae is not None
            and percent < cutoff_percent - mae and (lge.get("coverage") or {}).get("complete") is True
            and warnings is not None and all(str(w).startswith(CHILD_LGE_NOTE_START) for w in warnings))


def node_lge_findings(lge: dict | None, cutoff_percent: float = 15.0) -> LgeFindings | None:
    """The node's own LGE findings from the study's summary `lge` block; None where it determined no LGE numbers
    (no block, `determined` false, %LGE null): suggestions are then not checked against LGE findings.

    Presence is the LGE block's own decision (`lge_presence`, lge_metrics.lge_presence on the stored %LGE: what the
    SR, PDF and console say), read, not recomputed; only a summary written before that block has it recomputed from
    its stored %LGE and AHA segments (absence then only where the large-burden flag is stated). `significant` True
    at or above the band, False where the node states no significant LGE, None otherwise; `presence_uncertain` where
    its kind is "uncertain" (in the band, or under it with a focal scar in an AHA segment): neither scar nor no-scar
    texts are offered. Where significant is None for another reason (the slices present only, a dark-blood LGE, a
    small field, no AHA segments) no-scar texts are not offered (report_text.contradiction). The large-burden flag is unknown where %LGE lies within the model's typical error of the cut-off.
    MVO is a point the node holds reports to only where its summary may state 'MVO present / absent'
    (`mvo_validation.presence_stated`, from the model card's cross-validation: dicomnode.analysis.lge.mvo_validation);
    else (`mvo` None) it would hold the node's errors against correct reports: its MVO is its least reliable output
    (the figures are in `mvo_validation`). A flag withheld for a child stays unknown; `large_excluded` where the
    %LGE rules a large burden out all the same (burden_under_cutoff, `cutoff_percent`:
    analysis.lge.large_burden_percent).
    """
    if not isinstance(lge, dict) or lge.get("determined") is False:
        return None
    percent = _number(lge.get("lge_percent"))
    if percent is None:
        return None
    flag = lge.get("large_scar_burden")
    presence = lge.get("lge_presence")
    if not isinstance(presence, dict) or "kind" not in presence:
        # a summary written before the block: the same decision from its stored %LGE (absence only where the flag is
        # stated: the stack covers the LV well enough)
        presence = lge_presence(percent, absence_stated=flag is not None, aha=lge.get("aha_segments"))
    significant = presence["significant"]
    uncertain = presence.get("uncertain") is True
    # a flag whose %LGE lies within the model's typical error of the cut-off could go either way
    # (lge_percent_validation.near_cutoff): no report is held against it
    near = (lge.get("lge_percent_validation") or {}).get("near_cutoff") is True
    mvo_ml = _number(lge.get("mvo_volume_ml"))
    stated = (lge.get("mvo_validation") or {}).get("presence_stated") is True
    return LgeFindings(significant_lge=significant, mvo=mvo_ml > 0 if stated and mvo_ml is not None else None,
                       large_burden=None if flag is None or near else bool(flag), presence_uncertain=uncertain,
                       large_excluded=burden_under_cutoff(lge, cutoff_percent))


def stored_lge_findings(features: dict | None) -> LgeFindings:
    """What a prior report's stored `metadata.study_features` say on the same points (study_features' own names:
    lge_percent, mvo_percent, large_scar_burden); all None where absent."""
    features = features if isinstance(features, dict) else {}
    percent, mvo_percent = _number(features.get("lge_percent")), _number(features.get("mvo_percent"))
    mvo = None if mvo_percent is None else mvo_percent > 0
    flag = _number(features.get("large_scar_burden"))
    return LgeFindings(significant_lge=_significant(percent, mvo), mvo=mvo,
                       large_burden=None if flag is None else flag >= 0.5)


def contradicted_points(node: LgeFindings, stored: LgeFindings) -> tuple[str, ...]:
    """The decisive points on which a prior report's findings contradict the node's (both known and different); a
    large burden the node's %LGE rules out (`large_excluded`) counts as the flag's No."""
    points = []
    large = False if node.large_burden is None and node.large_excluded else node.large_burden
    for name, mine, theirs in (("LGE", node.significant_lge, stored.significant_lge), ("MVO", node.mvo, stored.mvo),
                               ("large burden", large, stored.large_burden)):
        if mine is not None and theirs is not None and mine != theirs:
            points.append(name)
    return tuple(points)


def describe_findings(findings: LgeFindings) -> str:
    """"no significant LGE (under 1.5 %)", "LGE presence uncertain (%LGE in 1.5-4 %)", "LGE present, MVO present,
    large burden no" ... for a note (the node's findings)."""
    low, high = LGE_PRESENCE_BAND_PERCENT
    if findings.significant_lge is False:
        return f"no significant LGE by the automatic count (under {low:g} %)"
    words = []
    if findings.presence_uncertain:
        words.append(f"LGE presence uncertain (%LGE in {low:g}-{high:g} %, where scar-free hearts and small infarcts "
                     f"both read, or under {low:g} % with a focal scar in an AHA segment)")
    if findings.significant_lge:
        words.append("LGE present")
    if findings.mvo is not None:
        words.append("MVO " + ("present" if findings.mvo else "none"))
    if findings.large_burden is not None:
        words.append("large burden " + ("yes" if findings.large_burden else "no"))
    return ", ".join(words) or "LGE findings not determined"


def presence_uncertain_note() -> str:
    """Why, where the node's LGE presence is uncertain (lge_metrics.lge_presence kind "uncertain": %LGE in
    LGE_PRESENCE_BAND_PERCENT, or under it with a focal scar in an AHA segment), no report stating scar or no scar is
    offered."""
    low, high = LGE_PRESENCE_BAND_PERCENT
    return (f"LGE presence uncertain (%LGE in {low:g}-{high:g} %, where scar-free hearts and small infarcts both read "
            f"in the model's cross-validation, or under {low:g} % with a focal scar in an AHA segment): reports "
            "stating scar or no scar are not offered")


#: what lge_descriptors gives a label map without scar: the lesion descriptors of a study without significant LGE
NO_LESION_DESCRIPTORS = {"scar_slice_fraction": 0.0, "scar_anterior_fraction": None, "scar_septal_fraction": None,
                         "scar_inferior_fraction": None, "scar_lateral_fraction": None, "transmural_extent": None,
                         "scar_to_remote_signal": None}


def query_features(features: dict, findings: LgeFindings | None) -> dict:
    """The features a study is embedded with: as measured, except that where the node finds no significant LGE the
    lesion descriptors of its sub-threshold specks (where they lie, how deep, how bright) are those of a scar-free
    map: the specks are no finding, and their descriptors would place the query among infarct reports (break4:
    EMIDEC normals at 0.6-1.2 % LGE ranked every normal report under min_similarity). %LGE itself stays."""
    if findings is None or findings.significant_lge is not False or features.get("scar_slice_fraction") is None:
        return features
    return {**features, **NO_LESION_DESCRIPTORS}


def inconsistent_reports(stored: list[tuple[str, LgeFindings]], node: LgeFindings | None) -> dict[str, tuple[str, ...]]:
    """report id -> the points its stored findings contradict, for the reports (id, stored findings) that do."""
    if node is None or (node.significant_lge is None and node.mvo is None and node.large_burden is None
                        and not node.large_excluded):
        return {}
    found = {}
    for report_id, findings in stored:
        points = contradicted_points(node, findings)
        if points:
            found[report_id] = points
    return found


# ----------------------------------------------------------------------------------------------------------------
# The pipeline
# ----------------------------------------------------------------------------------------------------------------

def study_identity(study) -> tuple[str | None, str | None]:
    """(PatientID, AccessionNumber) of a study from its first series' header; None where absent."""
    for series in getattr(study, "series", None) or []:
        instances = getattr(series, "instances", None) or []
        dataset = getattr(instances[0], "dataset", None) if instances else None
        if dataset is None:
            continue
        patient = str(dataset.get("PatientID", "") or "").strip()
        accession = str(dataset.get("AccessionNumber", "") or "").strip()
        return patient or None, accession or None
    return None, None


def own_report_ids(reports, study_uid: str | None, patient_id: str | None, accession: str | None) -> list[str]:
    """Ids of the bank's reports of this very study or patient, which are no priors and never suggested: written
    for its Study Instance UID (`metadata.study_instance_uid`), for its accession number (`metadata.accession_number`:
    a re-sent or re-UID'd study keeps it) or for its patient (`metadata.patient_id`: the suggestions are other
    patients' phrasing; an earlier report of the same patient is a comparison, not a suggestion)."""
    own = []
    for report in reports:
        if ((study_uid and study_uid in report.study_instance_uids)
                or (accession and accession in report.accession_numbers)
                or (patient_id and patient_id in report.patient_ids)):
            own.append(report.id)
    return sorted(own)


def descriptors_from_results(earlier_results: list[PipelineResult]) -> tuple[dict, dict]:
    """Label-map descriptors (lge, cine) from the segmentations earlier pipelines produced for this study; a
    result whose numbers were withheld (summary `determined` False) contributes none."""
    lge_extra: dict = {}
    cine_extra: dict = {}
    for result in earlier_results:
        if isinstance(result.summary, dict) and result.summary.get("determined") is False:
            continue  # a segmentation the node itself calls no measurement (heart not found) describes nothing
        for segmentation in result.segmentations:
            labelmap = np.asarray(segmentation.labelmap)
            if segmentation.pipeline == "lge" and not lge_extra and labelmap.ndim == 4:
                pixels = np.asarray(segmentation.volume.pixels)[segmentation.phases[0]]
                # the scar / remote signal ratio of a magnitude LGE below 0 is read as the pipeline read it
                psir = getattr(segmentation.series, "lge_kind", None) == "psir"
                shift = 0.0 if psir else magnitude_floor_shift(pixels)
                if shift:
                    pixels = pixels + np.float32(shift)
                lge_extra = lge_descriptors(labelmap[0], pixels if pixels.shape == labelmap[0].shape else None)
            elif segmentation.pipeline == "cine" and not cine_extra and labelmap.ndim == 4:
                names = [name.lower() for name in segmentation.phase_names]
                if "end diastole" in names:
                    cine_extra = cine_descriptors(labelmap[names.index("end diastole")], segmentation.volume.pixel_spacing)
    return lge_extra, cine_extra


def _interleave(ranked_lists: list[list], k: int, key) -> list:
    """Merge ranked lists round-robin (each list's best first), dropping repeats, up to k items."""
    merged, seen = [], set()
    for rank in range(max((len(items) for items in ranked_lists), default=0)):
        for items in ranked_lists:
            if rank < len(items) and key(items[rank]) not in seen:
                seen.add(key(items[rank]))
                merged.append(items[rank])
    return merged[:k]


def _algorithm(name: str, version: str, sha256: str, description: str) -> AlgorithmInfo:
    import uuid

    return AlgorithmInfo(name=name, version=version, manufacturer="dicomnode project",
                         device_uid="2.25." + str(uuid.UUID(sha256[:32]).int), description=description)


class SuggestionsPipeline:
    """Suggests report text: the study's measurements -> joint-space vector -> nearest prior reports in the bank."""

    name = "suggestions"

    def __init__(self, config: "Config", runtime: "Runtime"):
        self.config = config
        self.settings = config.analysis.suggestions
        models_dir = Path(runtime.models_dir)
        self.unavailable_reason: str | None = None
        self.encoder = None
        self.bank: ReportBank | None = None
        self.projection: StudyProjection | None = None
        self._study_cache: tuple[int, list[int], np.ndarray] | None = None
        self._findings_cache: tuple[int, list[tuple[str, LgeFindings]]] | None = None
        self._claims_cache: tuple[int, list[tuple[str, frozenset]]] | None = None
        self._study_lock = threading.Lock()
        self._indexed = threading.Event()
        if self.settings.bank_dir is not None and not Path(self.settings.bank_dir).is_dir():
            raise FileNotFoundError(f"analysis.suggestions.bank_dir: folder {self.settings.bank_dir} does not exist")
        encoder_dir = models_dir / TEXT_ENCODER_DIR
        if not (encoder_dir / "model.onnx").is_file():
            self.unavailable_reason = f"text encoder not installed ({encoder_dir}/model.onnx missing)"
            self._indexed.set()
            return
        self.encoder = TextEncoder(encoder_dir, intra_op_threads=config.inference.intra_op_threads)
        bank_dir = Path(self.settings.bank_dir) if self.settings.bank_dir is not None else models_dir / REPORT_BANK_DIR
        if not bank_dir.is_dir():
            self.unavailable_reason = f"no report bank at {bank_dir}"
            self._indexed.set()
            return
        self.bank = ReportBank(bank_dir, self.encoder, cache_dir=Path(config.node.storage_dir) / "suggestions-index")
        projection_path = models_dir / PROJECTION_FILE
        if projection_path.is_file():
            self.projection = StudyProjection.load(projection_path)
        threading.Thread(target=self._initial_refresh, name="report-bank-index", daemon=True).start()

    def _initial_refresh(self) -> None:
        try:
            self.refresh()
        except Exception:  # the node keeps running; run() declines while the bank has no index
            log.exception("report bank %s could not be indexed", self.bank.bank_dir if self.bank else None)
        finally:
            self._indexed.set()

    def wait_until_indexed(self, timeout: float | None = None) -> bool:
        """True once the first index of the bank is complete (or failed); a site bank may take minutes."""
        return self._indexed.wait(timeout)

    def refresh(self):
        """Re-index the bank (new/changed reports only); the node's scheduler calls this every refresh_minutes."""
        if self.bank is None:
            return None
        stats = self.bank.refresh()
        if stats.changed:
            log.info("report bank %s: %d reports (%d embedded, %d removed)", self.bank.bank_dir, stats.reports,
                     stats.embedded, stats.removed)
        return stats

    def algorithms(self) -> list[AlgorithmInfo]:
        found = []
        if self.encoder is not None:
            found.append(_algorithm("dicomnode-report-text-encoder", "all-MiniLM-L6-v2", self.encoder.model_sha256,
                                    "sentence embedding of report texts (ONNX, int8 weights)"))
        if self.projection is not None:
            found.append(_algorithm("dicomnode-retrieval-projection", "1", self.projection.sha256,
                                    "projection of study measurements into the report-text space"))
        return found

    def study_queries(self, features: dict) -> list[tuple[str, np.ndarray]]:
        """Query vectors for a study, each named by how it was made.

        "joint": the projection of all features; "joint:lge" + "joint:cine": one query per summary block, used for
        a study with both blocks when the projection never saw such studies in training (the shipped demo one:
        its data sets are LGE-only or cine-only); "text": the measurement sentence, when no projection is installed.
        """
        if self.projection is None:
            return [("text", self.encoder.encode([measurement_sentence(features)])[0])]
        both = bool(features.get("has_lge")) and bool(features.get("has_cine"))
        if both and self.projection.combined_fraction < COMBINED_TRAINING_MIN_FRACTION:
            blocks = [only_block(features, "lge"), only_block(features, "cine")]
            vectors = self.projection(np.stack([feature_vector(block) for block in blocks]))
            return [("joint:lge", vectors[0]), ("joint:cine", vectors[1])]
        return [("joint", self.projection(feature_vector(features)[None, :])[0])]

    def similar_studies(self, query: np.ndarray, k: int, exclude_study: str | None = None,
                        exclude_ids: frozenset[str] | set[str] = frozenset()) -> list[dict]:
        """Image -> image: prior studies in the bank whose stored features project close to this study (reports
        written for `exclude_study`, this study, and those in `exclude_ids` left out)."""
        if self.projection is None or self.bank is None:
            return []
        with self._study_lock:
            version = self.bank.version
            if self._study_cache is None or self._study_cache[0] != version:
                rows, vectors = [], []
                for index, report in enumerate(self.bank.reports):
                    stored = report.metadata.get("study_features")
                    if isinstance(stored, dict) and has_measurements(stored):
                        rows.append(index)
                        vectors.append(feature_vector(stored))
                matrix = self.projection(np.stack(vectors)) if vectors else np.zeros((0, self.projection.dim), np.float32)
                self._study_cache = (version, rows, matrix)
            _, rows, matrix = self._study_cache
        reports = self.bank.reports

        def excluded(report) -> bool:
            return bool(exclude_study and exclude_study in report.study_instance_uids) or report.id in exclude_ids

        own = sum(1 for i in rows if excluded(reports[i]))
        indices, scores = top_k_cosine(matrix, query, k + own)
        found = [{"report_id": reports[rows[i]].id, "score": round(float(s), 4)} for i, s in zip(indices, scores)
                 if not excluded(reports[rows[i]])]
        return found[:k]

    def stored_findings(self) -> list[tuple[str, LgeFindings]]:
        """(report id, stored LGE findings) of the bank's reports whose `metadata.study_features` state any, read
        once per bank version."""
        if self.bank is None:
            return []
        with self._study_lock:
            version = self.bank.version
            if self._findings_cache is None or self._findings_cache[0] != version:
                found = []
                for report in self.bank.reports:
                    findings = stored_lge_findings(report.metadata.get("study_features"))
                    if findings != LgeFindings(None, None, None):
                        found.append((report.id, findings))
                self._findings_cache = (version, found)
            return self._findings_cache[1]

    def text_claims(self) -> list[tuple[str, frozenset]]:
        """(report id, what its texts claim: report_text.report_claims over its text, findings and impression) of
        every report in the bank, read once per bank version: the check against the node's measurements needs no
        stored fields."""
        if self.bank is None:
            return []
        with self._study_lock:
            version = self.bank.version
            if self._claims_cache is None or self._claims_cache[0] != version:
                self._claims_cache = (version, [(report.id, frozenset().union(*map(report_claims, report.offered_texts)))
                                                for report in self.bank.reports])
            return self._claims_cache[1]

    def run(self, study, context) -> PipelineResult:
        if not self.settings.enabled:
            return self._decline("report suggestions are disabled (analysis.suggestions.enabled = false)")
        if self.unavailable_reason is not None:
            return self._decline(self.unavailable_reason)
        if not self.wait_until_indexed(INITIAL_INDEX_WAIT_SECONDS):
            return self._decline(f"the report bank {self.bank.bank_dir} is still being indexed")
        lge_extra, cine_extra = descriptors_from_results(context.earlier_results or [])
        features = study_features(context.study_summary_so_far or {}, lge_extra, cine_extra)
        if not has_measurements(features):
            return self._decline("no LGE or cine measurements in this study to build a study embedding from")
        if len(self.bank) == 0:
            return self._decline(f"the report bank {self.bank.bank_dir} holds no reports{self._skipped_words()}")
        lge_findings = node_lge_findings((context.study_summary_so_far or {}).get("lge"),
                                         self.config.analysis.lge.large_burden_percent)
        queries = self.study_queries(query_features(features, lge_findings))
        k = self.settings.top_k
        this_study = getattr(study, "study_instance_uid", None) or None
        patient_id, accession = study_identity(study)
        own_reports = own_report_ids(self.bank.reports, this_study, patient_id, accession)
        summary_so_far = context.study_summary_so_far or {}
        facts = node_facts(summary_so_far, *((lge_findings.significant_lge, lge_findings.large_burden, lge_findings.mvo,
                                              lge_findings.presence_uncertain, lge_findings.large_excluded)
                                             if lge_findings is not None else ()))
        # a report whose stored findings (LGE present or not, MVO, large burden) or whose text (LGE, extent, MVO, LV /
        # RV function and size, hypertrophy, a normal study) contradict the node's own measurements is no suggestion
        # for this study: left out before the top k are taken
        contradicting = {report_id: points for report_id, points in
                         inconsistent_reports(self.stored_findings(), lge_findings).items() if report_id not in own_reports}
        unchecked = set()  # reports whose text states nothing the check can read: what they claim is not established
        for report_id, claims in self.text_claims():
            if report_id in own_reports:
                continue
            if not claims - {UNCHECKED}:
                unchecked.add(report_id)
            points = contradicted(claims, facts)
            if points:
                contradicting[report_id] = tuple(dict.fromkeys((*contradicting.get(report_id, ()), *points)))
        exclude = frozenset(own_reports) | frozenset(contradicting) | frozenset(unchecked)
        hits = _interleave([self.bank.search(vector, k=k, min_similarity=self.settings.min_similarity,
                                             exclude_study=this_study, exclude_ids=exclude)
                            for _, vector in queries], k, key=lambda hit: hit.report.id)
        similar = _interleave([self.similar_studies(vector, k, exclude_study=this_study, exclude_ids=exclude)
                               for _, vector in queries], k, key=lambda item: item["report_id"])
        suggestions, removed, impressions, numbers_blanked = [], {}, {}, 0
        for hit in hits:
            text, taken_out = fitting_text(hit.report.text, facts)
            text, count = blank_measurements(text, keep_segments=facts.segments_assigned)  # another patient's numbers
            if not text.strip() or not re.search(r"\w", re.sub(r"(?i)\b(?:findings|impression)\b|" + BLANK, "", text)):
                removed[hit.report.id] = [*taken_out, "nothing left"]
                continue
            numbers_blanked += count
            suggestions.append({"text": text, "score": round(hit.score, 4), "report_id": hit.report.id})
            if taken_out:
                removed[hit.report.id] = taken_out
            if isinstance(hit.report.impression, str) and hit.report.impression:
                impression = blank_measurements(fitting_text(hit.report.impression, facts)[0],
                                                keep_segments=facts.segments_assigned)[0]
                if impression.strip():
                    impressions[hit.report.id] = impression
        measurements = {
            "title": TITLE,
            "suggestions": suggestions,
            "query_method": "+".join(name for name, _ in queries),
            "bank_size": len(self.bank),
            "min_similarity": self.settings.min_similarity,
            "similar_studies": similar,
            "impressions": impressions,
            "features": {k: v for k, v in features.items() if v is not None},
            "numbers_blanked": numbers_blanked,
            "source": SOURCE_NOTE,
        }
        if unchecked:
            measurements["unchecked_reports_excluded"] = len(unchecked)
        if removed:  # report id -> what was taken out of its text as not measured or not stated for this study
            measurements["statements_removed"] = removed
        if own_reports:  # the bank holds a report of this very study or patient: not a prior, never suggested
            measurements["own_reports_excluded"] = own_reports
        if lge_findings is not None:
            measurements["lge_findings"] = lge_findings.as_dict()
            if query_features(features, lge_findings) is not features:
                measurements["query_lesion_descriptors"] = "dropped: no significant LGE"
        if contradicting:  # how many reports contradicted the node's findings, by point
            measurements["contradicting_reports_excluded"] = {
                point: sum(point in points for points in contradicting.values())
                for point in CONTRADICTION_POINTS if any(point in points for points in contradicting.values())}
        extra = {}
        if suggestions:
            extra["suggestions_source"] = SOURCE_NOTE
        if lge_findings is not None and lge_findings.presence_uncertain:
            # why no report stating scar or no scar is among them (summary.json, console and PDF say it)
            extra["suggestions_lge_presence"] = measurements["lge_presence_note"] = presence_uncertain_note()
        if not suggestions:
            extra["suggestions_note"] = measurements["note"] = self._empty_note(
                len(own_reports), len(contradicting), lge_findings,
                emptied=sum("nothing left" in taken for taken in removed.values()) + len(unchecked))
        return PipelineResult(name=self.name, summary=suggestions, measurements=measurements,
                              algorithms=self.algorithms(), summary_extra=extra)

    def _skipped_words(self) -> str:
        """" (N file(s) and M line(s) of it could not be read ...)" when the last refresh skipped any, else ""."""
        stats = self.bank.last_refresh if self.bank is not None else None
        if stats is None or not (stats.skipped_files or stats.skipped_lines):
            return ""
        return (f" ({stats.skipped_files} file(s) and {stats.skipped_lines} line(s) of it could not be read: see the "
                "log or `dicomnode config check`)")

    def _empty_note(self, excluded: int, contradicting: int = 0, findings: LgeFindings | None = None,
                    emptied: int = 0) -> str:
        """Why a study got no suggestion although the bank holds reports (summary.json `suggestions_note`)."""
        count = len(self.bank)
        consistent = (f" consistent with this study's LGE findings ({describe_findings(findings)})"
                      if contradicting and findings is not None else "")
        note = (f"no prior report{consistent} above min_similarity {self.settings.min_similarity:g} among {count} "
                f"report{'s' if count != 1 else ''} in the bank")
        left_out = []
        if excluded:
            left_out.append(f"{excluded} report(s) of this study or patient")
        if contradicting:
            left_out.append(f"{contradicting} report(s) whose findings or text contradict this study's measurements")
        if emptied:
            left_out.append(f"{emptied} report(s) stating nothing this study measured (or nothing the check can read)")
        if left_out:
            note += f" ({' and '.join(left_out)} left out)"
        return note + self._skipped_words()

    def _decline(self, reason: str) -> PipelineResult:
        return PipelineResult(name=self.name, summary=None, declined=[Declined(series_instance_uid=None, reason=reason)])
