"""Cine function measurements from label maps: volume curves, ED/ES, EDV/ESV/SV/EF, LV mass, BSA, indexing, flags.

Conventions (stated once, applied everywhere):
- Summation of discs: a ventricle's volume = its voxel count over the whole stack x voxel volume.
- Papillary muscles and trabeculations belong to the blood pool (cavity), ACDC convention; LV mass is the
  myocardium label only (papillary muscles excluded from mass, DICOM (122620, DCM, "Papillary Muscle Excluded")).
- Basal slices: every slice is counted at ED and at ES exactly as segmented; no manual basal exclusion.
- ED = phase of maximal LV volume, ES = phase of minimal LV volume (first one on ties).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from dicomnode.labels import MYOCARDIUM_LABELS, Label

BsaFormula = Literal["mosteller", "dubois"]
Sex = Literal["M", "F"]
DEFAULT_DENSITY_G_PER_ML = 1.05
PAPILLARY_MUSCLES = "cavity"
PAPILLARY_MASS_CODE = ("122620", "DCM", "Papillary Muscle Excluded")
BSA_FORMULA_CODES = {"mosteller": ("122244", "DCM", "BSA = Mosteller"), "dubois": ("122241", "DCM", "BSA = DuBois")}

#: normal SSFP values, mean and SD, men / women (cmr-reference.md: 2015 SCMR review, tabulated secondarily)
NORMAL_VALUES = {
    "lv_edv_ml": {"M": (160.0, 27.0), "F": (132.0, 23.0), "name": "LV EDV", "unit": "mL"},
    "lv_edvi_ml_m2": {"M": (81.0, 12.0), "F": (76.0, 10.0), "name": "LV EDVi", "unit": "mL/m²"},
    "lv_esv_ml": {"M": (54.0, 14.0), "F": (44.0, 11.0), "name": "LV ESV", "unit": "mL"},
    "lv_ef_percent": {"M": (67.0, 5.0), "F": (67.0, 5.0), "name": "LVEF", "unit": "%"},
    "lv_mass_index_g_m2": {"M": (67.0, 9.0), "F": (61.0, 10.0), "name": "LV mass index", "unit": "g/m²"},
}
NORMAL_RANGE_SD = 2.0  # normal range = mean ± 2 SD


def volume_curve_ml(labelmaps: np.ndarray, labels, voxel_volume_ml: float) -> np.ndarray:
    """Volume per phase of the voxels carrying any of `labels`; labelmaps (phases, slices, rows, cols)."""
    if voxel_volume_ml <= 0:
        raise ValueError(f"voxel_volume_ml must be positive, got {voxel_volume_ml}")
    labelmaps = np.asarray(labelmaps)
    if labelmaps.ndim != 4:
        raise ValueError(f"labelmaps must be (phases, slices, rows, cols), got shape {labelmaps.shape}")
    wanted = np.isin(labelmaps, np.atleast_1d(np.asarray(labels)))
    return wanted.reshape(labelmaps.shape[0], -1).sum(axis=1) * float(voxel_volume_ml)


def find_ed_es(lv_curve_ml) -> tuple[int, int]:
    """(ED, ES) phase indices: maximal and minimal LV volume."""
    curve = np.asarray(lv_curve_ml, dtype=np.float64)
    if curve.ndim != 1 or curve.size == 0:
        raise ValueError(f"the LV volume curve must be a non-empty 1-D sequence, got shape {curve.shape}")
    return int(np.argmax(curve)), int(np.argmin(curve))


def ejection_fraction_percent(edv_ml: float, esv_ml: float) -> float | None:
    """EF = (EDV - ESV) / EDV x 100; None when EDV is zero."""
    if edv_ml < 0 or esv_ml < 0:
        raise ValueError(f"volumes must be non-negative, got EDV {edv_ml}, ESV {esv_ml}")
    if edv_ml == 0:
        return None
    return (edv_ml - esv_ml) / edv_ml * 100.0


def myocardial_mass_g(labelmap: np.ndarray, voxel_volume_ml: float, density_g_per_ml: float = DEFAULT_DENSITY_G_PER_ML) -> float:
    """LV mass = whole LV myocardium volume (healthy + scar + MVO labels) x density."""
    if density_g_per_ml <= 0:
        raise ValueError(f"myocardial density must be positive, got {density_g_per_ml}")
    if voxel_volume_ml <= 0:
        raise ValueError(f"voxel_volume_ml must be positive, got {voxel_volume_ml}")
    voxels = int(np.isin(np.asarray(labelmap), [int(v) for v in MYOCARDIUM_LABELS]).sum())
    return voxels * float(voxel_volume_ml) * density_g_per_ml


def body_surface_area_m2(height_m: float, weight_kg: float, formula: BsaFormula = "mosteller") -> float:
    """BSA in m² from height (m) and weight (kg): Mosteller sqrt(H[cm] W / 3600) or DuBois 0.007184 W^0.425 H[cm]^0.725."""
    if not (height_m > 0 and weight_kg > 0):
        raise ValueError(f"height and weight must be positive, got {height_m} m, {weight_kg} kg")
    if height_m > 3.0:
        raise ValueError(f"height {height_m} looks like centimetres; PatientSize is in metres")
    height_cm = height_m * 100.0
    if formula == "mosteller":
        return math.sqrt(height_cm * weight_kg / 3600.0)
    if formula == "dubois":
        return 0.007184 * weight_kg ** 0.425 * height_cm ** 0.725
    raise ValueError(f"unknown BSA formula {formula!r} (mosteller | dubois)")


def normal_range(key: str, sex: Sex) -> tuple[float, float]:
    mean, sd = NORMAL_VALUES[key][sex]
    return mean - NORMAL_RANGE_SD * sd, mean + NORMAL_RANGE_SD * sd


def normal_range_flags(values: dict[str, float | None], sex: str | None) -> list[str]:
    """Flags for values outside the normal range: by sex when known ("M"/"F"), else against both ranges."""
    flags = []
    sexes: tuple[Sex, ...] = (sex,) if sex in ("M", "F") else ("M", "F")  # type: ignore[assignment]
    for key, spec in NORMAL_VALUES.items():
        value = values.get(key)
        if value is None or not math.isfinite(value):
            continue
        outcomes = {}
        for each in sexes:
            low, high = normal_range(key, each)
            outcomes[each] = "below" if value < low else "above" if value > high else "within"
        ranges = ", ".join(f"{'men' if s == 'M' else 'women'} {normal_range(key, s)[0]:g}–{normal_range(key, s)[1]:g} {spec['unit']}"
                           for s in sexes)
        verdicts = set(outcomes.values())
        if verdicts == {"within"}:
            continue
        if len(verdicts) == 1:
            flags.append(f"{spec['name']} {verdicts.pop()} normal range ({value:.1f} {spec['unit']}; {ranges})")
        else:
            parts = "; ".join(f"{outcomes[s]} for {'men' if s == 'M' else 'women'}" for s in sexes)
            flags.append(f"{spec['name']} outside the normal range for one sex ({value:.1f} {spec['unit']}: {parts}; {ranges})")
    return flags


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

    def summary(self) -> dict:
        """The `cine` block of summary.json (design.md contract)."""
        return {
            "lv_edv_ml": _round(self.lv_edv_ml), "lv_esv_ml": _round(self.lv_esv_ml), "lv_sv_ml": _round(self.lv_sv_ml),
            "lv_ef_percent": _round(self.lv_ef_percent), "lv_mass_g": _round(self.lv_mass_g),
            "rv_edv_ml": _round(self.rv_edv_ml), "rv_esv_ml": _round(self.rv_esv_ml), "rv_sv_ml": _round(self.rv_sv_ml),
            "rv_ef_percent": _round(self.rv_ef_percent), "ed_phase": self.ed_phase, "es_phase": self.es_phase,
        }


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(float(value), digits)


def measure_cine(labelmaps: np.ndarray, voxel_volume_ml: float, *, height_m: float | None = None,
                 weight_kg: float | None = None, sex: str | None = None, bsa_formula: BsaFormula = "mosteller",
                 density_g_per_ml: float = DEFAULT_DENSITY_G_PER_ML) -> CineMeasurements:
    """All cine measurements from node label maps of every phase (phases, slices, rows, cols).

    ED/ES come from the LV curve; RV volumes are read at the same ED and ES phases (one cardiac timing).
    """
    lv_curve = volume_curve_ml(labelmaps, [int(Label.LV_BLOOD_POOL)], voxel_volume_ml)
    rv_curve = volume_curve_ml(labelmaps, [int(Label.RV_BLOOD_POOL)], voxel_volume_ml)
    ed, es = find_ed_es(lv_curve)
    lv_edv, lv_esv = float(lv_curve[ed]), float(lv_curve[es])
    rv_edv, rv_esv = float(rv_curve[ed]), float(rv_curve[es])
    result = CineMeasurements(
        lv_curve_ml=[float(v) for v in lv_curve], rv_curve_ml=[float(v) for v in rv_curve], ed_phase=ed, es_phase=es,
        lv_edv_ml=lv_edv, lv_esv_ml=lv_esv, lv_sv_ml=lv_edv - lv_esv, lv_ef_percent=ejection_fraction_percent(lv_edv, lv_esv),
        lv_mass_g=myocardial_mass_g(labelmaps[ed], voxel_volume_ml, density_g_per_ml),
        rv_edv_ml=rv_edv, rv_esv_ml=rv_esv, rv_sv_ml=rv_edv - rv_esv, rv_ef_percent=ejection_fraction_percent(rv_edv, rv_esv),
    )
    if height_m and weight_kg:
        bsa = body_surface_area_m2(height_m, weight_kg, bsa_formula)
        result.bsa_m2, result.bsa_formula = bsa, bsa_formula
        result.indexed = {
            "lv_edvi_ml_m2": lv_edv / bsa, "lv_esvi_ml_m2": lv_esv / bsa, "lv_svi_ml_m2": (lv_edv - lv_esv) / bsa,
            "lv_mass_index_g_m2": result.lv_mass_g / bsa, "rv_edvi_ml_m2": rv_edv / bsa, "rv_esvi_ml_m2": rv_esv / bsa,
            "rv_svi_ml_m2": (rv_edv - rv_esv) / bsa,
        }
    values = {"lv_edv_ml": lv_edv, "lv_esv_ml": lv_esv, "lv_ef_percent": result.lv_ef_percent, **result.indexed}
    result.flags = normal_range_flags(values, sex)
    return result
