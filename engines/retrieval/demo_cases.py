"""Per-case facts (measurements, descriptors, metadata) of every labelled case in shared/datasets, from ground truth."""
from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from dicomnode.analysis.suggestions import lge_descriptors, study_features, wall_thickness_from_areas

MYOCARDIAL_DENSITY = 1.05
LARGE_BURDEN_PERCENT = 15.0
# ACDC label values -> node labels (1 LV pool, 2 myocardium, 5 RV pool)
ACDC_TO_NODE = {1: 5, 2: 2, 3: 1}

#: Sunnybrook patients of sunnybrook-scd-extra: values from that folder's README table (disc summation of the
#: expert contours, derived by the dataset curator); SCD0000501's epicardial contours are misaligned (no mass).
SCD_EXTRA = {
    "SCD0000401": {"original_id": "SC-HF-I-5", "lv_edv_ml": 206.3, "lv_esv_ml": 138.7, "lv_ef_percent": 32.8, "epi_ml": 317.1},
    "SCD0000501": {"original_id": "SC-HF-I-6", "lv_edv_ml": 221.2, "lv_esv_ml": 164.8, "lv_ef_percent": 25.5, "epi_ml": None},
}


@dataclass
class Case:
    """One subject: what the report writer states and what the study encoder sees."""

    case_id: str
    dataset: str  # emidec | acdc | sunnybrook
    licence: str
    group: str  # dataset's own diagnosis group
    summary: dict  # {"lge": {...}} and/or {"cine": {...}} in the summary.json contract's units
    lge_extra: dict = field(default_factory=dict)
    cine_extra: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)  # height/weight/BSA/sex/age/slices...

    def features(self) -> dict:
        return study_features(self.summary, self.lge_extra, self.cine_extra)


def _read_csv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def emidec_cases(root: Path) -> list[Case]:
    folder = root / "emidec-lge-png"
    cases = []
    for row in _read_csv(folder / "reference_values_pixel_counts.csv"):
        name, split = row["case"], row["split"]
        image_dir, label_dir = folder / split, folder / f"{split}annot"
        label_files = sorted(label_dir.glob(f"{name}_slice*.png"))
        if not label_files:
            raise FileNotFoundError(f"no label PNGs for {name} in {label_dir}")
        labels = np.stack([np.array(Image.open(p)) for p in label_files])  # EMIDEC labels == node labels 0..4
        pixels = np.stack([np.array(Image.open(image_dir / p.name)) for p in label_files]).astype(np.float32)
        lge_percent = float(row["mi_pct_of_myocardium_incl_mvo"])
        mvo_percent = float(row["mvo_pct_of_myocardium"])
        summary = {"lge": {"method": "ground truth", "lge_percent": lge_percent, "mvo_percent": mvo_percent,
                           "large_scar_burden": lge_percent >= LARGE_BURDEN_PERCENT}}
        extra = lge_descriptors(labels, pixels)
        cases.append(Case(case_id=f"emidec-{name}", dataset="emidec", licence="CC BY-NC-SA 4.0",
                          group="MI" if row["pathological"] == "1" else "normal", summary=summary, lge_extra=extra,
                          meta={"slices": int(row["n_slices"])}))
    return cases


def _acdc_measure(per_slice: list[dict]) -> tuple[dict, dict]:
    """Cine block + thickness from per-slice rows with phase, px_rv, px_myo, px_lv, spacing columns."""
    volumes: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    ed_pool, ed_myo = [], []
    for s in per_slice:
        area = s["row_mm"] * s["col_mm"]
        voxel_ml = area * s["slice_mm"] / 1000.0
        for key in ("rv", "myo", "lv"):
            volumes[s["phase"]][key] += s[key] * voxel_ml
        if s["phase"] == "ED":
            ed_pool.append(s["lv"] * area)
            ed_myo.append(s["myo"] * area)
    ed, es = volumes["ED"], volumes["ES"]
    cine = {
        "lv_edv_ml": ed["lv"], "lv_esv_ml": es["lv"], "lv_sv_ml": ed["lv"] - es["lv"],
        "lv_ef_percent": 100.0 * (ed["lv"] - es["lv"]) / ed["lv"],
        "lv_mass_g": ed["myo"] * MYOCARDIAL_DENSITY,
        "rv_edv_ml": ed["rv"], "rv_esv_ml": es["rv"], "rv_sv_ml": ed["rv"] - es["rv"],
        "rv_ef_percent": 100.0 * (ed["rv"] - es["rv"]) / ed["rv"],
    }
    return cine, {"max_wall_thickness_mm": wall_thickness_from_areas(np.array(ed_pool), np.array(ed_myo))}


def _info_cfg(path: Path) -> dict:
    info = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            info[key.strip()] = value.strip()
    return info


def acdc_cases(root: Path) -> list[Case]:
    import nibabel

    rows_by_patient: dict[str, list[dict]] = defaultdict(list)
    for row in _read_csv(root / "acdc-train-png" / "slices.csv"):
        rows_by_patient[row["patient"]].append({
            "phase": row["phase"], "row_mm": float(row["pixel_spacing_row_mm"]), "col_mm": float(row["pixel_spacing_col_mm"]),
            "slice_mm": float(row["slice_spacing_mm"]), "rv": int(row["px_rv"]), "myo": int(row["px_myo"]), "lv": int(row["px_lv"])})
    meta = {row["patient"]: {"group": row["group"], "height_cm": float(row["height_cm"]), "weight_kg": float(row["weight_kg"])}
            for row in _read_csv(root / "acdc-train-png" / "patients.csv")}
    for folder in sorted((root / "acdc-sample").glob("patient*")) + sorted((root / "acdc-4d-sample").glob("patient*")):
        info = _info_cfg(folder / "Info.cfg")
        patient = folder.name
        meta[patient] = {"group": info["Group"], "height_cm": float(info["Height"]), "weight_kg": float(info["Weight"])}
        for phase, frame in (("ED", int(info["ED"])), ("ES", int(info["ES"]))):
            image = nibabel.load(folder / f"{patient}_frame{frame:02d}_gt.nii.gz")
            labels = np.asarray(image.dataobj).astype(np.uint8)
            zooms = image.header.get_zooms()
            for z in range(labels.shape[2]):
                plane = labels[:, :, z]
                rows_by_patient[patient].append({
                    "phase": phase, "row_mm": float(zooms[1]), "col_mm": float(zooms[0]), "slice_mm": float(zooms[2]),
                    "rv": int((plane == 1).sum()), "myo": int((plane == 2).sum()), "lv": int((plane == 3).sum())})
    cases = []
    for patient in sorted(rows_by_patient):
        cine, extra = _acdc_measure(rows_by_patient[patient])
        info = meta[patient]
        bsa = float(np.sqrt(info["height_cm"] * info["weight_kg"] / 3600.0))  # Mosteller
        cases.append(Case(case_id=f"acdc-{patient}", dataset="acdc", licence="CC BY-NC-SA 4.0", group=info["group"],
                          summary={"cine": cine}, cine_extra=extra, meta={**info, "bsa_m2": bsa}))
    return cases


def sunnybrook_cases(root: Path) -> list[Case]:
    people = {row["PatientID"]: row for row in _read_csv(root / "sunnybrook-scd-localizers" / "scd_patientdata.csv")}
    found = {}
    for row in _read_csv(root / "sunnybrook-scd" / "reference_values_from_contours.csv"):
        found[row["patient_id"]] = {"lv_edv_ml": float(row["lv_edv_ml"]), "lv_esv_ml": float(row["lv_esv_ml"]),
                                    "lv_ef_percent": float(row["lv_ef_pct"]),
                                    "myo_ml": float(row["lv_epi_vol_ed_ml"]) - float(row["lv_edv_ml"])}
    for patient, values in SCD_EXTRA.items():
        found[patient] = {**{k: values[k] for k in ("lv_edv_ml", "lv_esv_ml", "lv_ef_percent")},
                          "myo_ml": (values["epi_ml"] - values["lv_edv_ml"]) if values["epi_ml"] else None}
    cases = []
    for patient, values in sorted(found.items()):
        cine = {k: values[k] for k in ("lv_edv_ml", "lv_esv_ml", "lv_ef_percent")}
        cine["lv_sv_ml"] = values["lv_edv_ml"] - values["lv_esv_ml"]
        if values["myo_ml"] is not None:
            cine["lv_mass_g"] = values["myo_ml"] * MYOCARDIAL_DENSITY
        person = people.get(patient, {})
        cases.append(Case(case_id=f"sunnybrook-{patient}", dataset="sunnybrook", licence="CC0 1.0",
                          group="HF-I", summary={"cine": cine},
                          meta={"sex": person.get("Gender", ""), "age": person.get("Age", ""),
                                "pathology": person.get("Pathology", "")}))
    return cases


def all_cases(root: Path) -> list[Case]:
    return emidec_cases(root) + acdc_cases(root) + sunnybrook_cases(root)
