"""Loaders of the labelled real datasets (EMIDEC PNG, ACDC NIfTI) into arrays with spacing, labels and licence."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dicomnode.labels import ACDC_TO_NODE, EMIDEC_TO_NODE, MYOPS_TO_NODE

EMIDEC_LICENCE = (
    "Derived from the EMIDEC database (University Hospital of Dijon), licensed CC BY-NC-SA 4.0 "
    "(https://creativecommons.org/licenses/by-nc-sa/4.0/): non-commercial use only, give credit, share derived data "
    "under the same licence. Cite: A. Lalande et al., \"Emidec: A Database Usable for the Automatic Evaluation of "
    "Myocardial Infarction from Delayed-Enhancement Cardiac MRI\", Data 2020, 5(4):89.")
ACDC_LICENCE = (
    "Derived from the ACDC database (Creatis, Universite de Lyon), licensed CC BY-NC-SA 4.0 "
    "(https://creativecommons.org/licenses/by-nc-sa/4.0/): strictly non-commercial scientific research, share alike. "
    "Mandatory citation: O. Bernard, A. Lalande, C. Zotti, F. Cervenansky, et al., \"Deep Learning Techniques for "
    "Automatic MRI Cardiac Multi-structures Segmentation and Diagnosis: Is the Problem Solved?\", IEEE TMI "
    "37(11):2514-2525, 2018, doi:10.1109/TMI.2018.2837502.")
MYOPS_LICENCE = (
    "Derived from the MyoPS 2020 challenge data (Myocardial Pathology Segmentation combining multi-sequence CMR, "
    "MICCAI 2020), as redistributed in github.com/Tengjia-Kang/MyoPS; released for research use with citation, "
    "redistribution terms not verified: research / non-commercial use only, do not redistribute, keep out of any "
    "repository. Cite: X. Zhuang et al.; L. Li et al., \"MyoPS: A benchmark of myocardial pathology segmentation "
    "combining three-sequence cardiac magnetic resonance images\", Medical Image Analysis 2023.")
SUNNYBROOK_LICENCE = (
    "Sunnybrook Cardiac Data, Public Domain (CC0 1.0 Universal). Requested citation: Radau P, Lu Y, Connelly K, "
    "Paul G, Dick AJ, Wright GA. \"Evaluation Framework for Algorithms Segmenting Short Axis Cardiac MRI.\" The MIDAS "
    "Journal - Cardiac MR Left Ventricle Segmentation Challenge, http://hdl.handle.net/10380/3070")

#: assumed geometry of EMIDEC PNG cases (the PNG conversion lost it; EMIDEC originals ~1.25-2 mm, 8-13 mm).
#: The mean in-plane spacing is chosen so that the median largest LV epicardial equivalent diameter of the 67
#: infarct cases (52.8 px once made round, see `emidec_pixel_spacing`) equals that of the 33 post-MI MyoPS 2020
#: patients in real geometry (72.9 mm): 1.38 mm, rounded to 1.4.
EMIDEC_PIXEL_SPACING_MM = 1.4
EMIDEC_SLICE_SPACING_MM = 10.0
#: LV structures (node labels) whose outline is near-circular in a true short-axis plane
_LV_LABELS = (1, 2, 3, 4)
_MIN_LV_PIXELS = 50


def emidec_pixel_spacing(labels: np.ndarray, mean_spacing_mm: float = EMIDEC_PIXEL_SPACING_MM
                         ) -> tuple[float, float]:
    """The (row, column) pixel spacing in mm of one EMIDEC PNG case, from its own LV outline.

    The PNG conversion resized every slice to 256 x 256 whatever the original matrix, so the pixels of a case are
    not square: the LV appears as an axis-aligned ellipse whose axes differ by up to 2.4x (median 1.34x over the
    100 cases), whereas in real short-axis geometry it is near-circular (MyoPS 2020, real spacing: major/minor axis
    ratio median 1.06, at most 1.15). The ratio of the LV mask's row and column standard deviations (median over
    slices with >= 50 LV pixels) is taken as the distortion and undone with area kept:
    row spacing = s / sqrt(ratio), column spacing = s * sqrt(ratio), s = `mean_spacing_mm`.

    labels: (slices, rows, cols) node labels of the case (1-4 = LV blood pool, myocardium, scar, MVO).
    Raises ValueError if no slice has enough LV pixels to measure.
    """
    ratios = []
    for slice_labels in np.asarray(labels):
        rows, cols = np.nonzero(np.isin(slice_labels, _LV_LABELS))
        if rows.size >= _MIN_LV_PIXELS and rows.std() > 0 and cols.std() > 0:
            ratios.append(rows.std() / cols.std())
    if not ratios:
        raise ValueError(f"no slice with >= {_MIN_LV_PIXELS} LV pixels to estimate the pixel aspect from")
    ratio = float(np.median(ratios))
    return (round(float(mean_spacing_mm / np.sqrt(ratio)), 4), round(float(mean_spacing_mm * np.sqrt(ratio)), 4))


def datasets_dir(explicit: str | Path | None = None) -> Path:
    """Shared datasets folder: the argument, else $DICOMNODE_SHARED_DATASETS, else <repo>/../shared/datasets."""
    candidates = [explicit, os.environ.get("DICOMNODE_SHARED_DATASETS"),
                  Path(__file__).resolve().parents[2].parent / "shared" / "datasets"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    raise FileNotFoundError("shared datasets not found: pass datasets=..., or set DICOMNODE_SHARED_DATASETS "
                            f"(tried {[str(c) for c in candidates if c]})")


@dataclass
class SourceCase:
    """A labelled case as arrays: series role -> (phases, slices, rows, cols) integer-valued pixels."""

    name: str
    kind: str  # "lge" | "cine"
    images: dict[str, np.ndarray]  # "psir"/"magnitude" for lge, "cine" for cine
    labelmap: np.ndarray  # (phases, slices, rows, cols) node labels
    labelled: np.ndarray  # (phases, slices) bool: ground truth exists for that frame
    pixel_spacing: tuple[float, float]
    slice_spacing: float
    trigger_times: list[float]
    cardiac_number_of_images: int
    licence: str
    derivation: str
    height_m: float | None = None
    weight_kg: float | None = None
    phase_names: dict[int, str] = field(default_factory=dict)
    #: the scanner's ImageOrientationPatient (row direction, column direction; LPS) where the source keeps it (MyoPS's
    #: NIfTI qform), with the ImagePositionPatient (mm, LPS) of each slice in generator order; None: make_study
    #: stamps its synthetic SAX orientation
    orientation: np.ndarray | None = None
    positions: np.ndarray | None = None


def _map_labels(labels: np.ndarray, mapping: dict) -> np.ndarray:
    table = np.zeros(256, np.uint8)
    for source, node in mapping.items():
        table[source] = int(node)
    return table[labels.astype(np.uint8)]


def load_emidec(case: str, root: Path) -> SourceCase:
    from PIL import Image

    base = root / "emidec-lge-png"
    for images_dir, labels_dir in (("train", "trainannot"), ("val", "valannot")):
        files = sorted((base / images_dir).glob(f"{case}_slice*.png"))
        if files:
            break
    else:
        raise ValueError(f"EMIDEC case {case!r} not found under {base}")
    # EMIDEC numbers its slices from the apex (slice 000 has the smallest LV cavity on all 100 cases): reversed into
    # the generator's base-to-apex order, so that the synthetic geometry puts the base where the heart has it
    files = files[::-1]
    images = np.stack([np.array(Image.open(f)) for f in files]).astype(np.float32)
    labels = np.stack([np.array(Image.open(base / labels_dir / f.name)) for f in files])
    labelmap = _map_labels(labels, EMIDEC_TO_NODE)
    pixel_spacing = emidec_pixel_spacing(labelmap)
    magnitude = images[None]
    # synthetic phase-sensitive image: a monotone transform of the magnitude (not a real PSIR reconstruction)
    psir = magnitude * 8.0 - 512.0
    return SourceCase(
        name=f"emidec:{case}", kind="lge", images={"psir": psir, "magnitude": magnitude},
        labelmap=labelmap[None], labelled=np.ones((1, len(files)), bool),
        pixel_spacing=pixel_spacing, slice_spacing=EMIDEC_SLICE_SPACING_MM,
        trigger_times=[400.0], cardiac_number_of_images=1, licence=EMIDEC_LICENCE,
        derivation=(f"EMIDEC {case} 8-bit PNG slices; ASSUMED pixel spacing {pixel_spacing[0]} x {pixel_spacing[1]} "
                    f"mm (rows x columns: the conversion's non-square resize undone from the LV outline) and slice "
                    f"spacing {EMIDEC_SLICE_SPACING_MM} mm (lost in the PNG conversion); synthetic SAX orientation; "
                    "PSIR = 8 x magnitude - 512 (synthetic, not phase-sensitive)"),
        phase_names={0: "late enhancement"},
    )


def _read_info(path: Path) -> dict[str, str]:
    info = {}
    for line in path.read_text().splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            info[key.strip()] = value.strip()
    return info


def _nifti_to_rows_cols(volume: np.ndarray) -> np.ndarray:
    """NIfTI (i, j, k[, t]) -> (t, k, rows=j, cols=i), the convention of acdc-train-png."""
    if volume.ndim == 3:
        volume = volume[..., None]
    return np.transpose(volume, (3, 2, 1, 0))


def load_acdc(patient: str, root: Path, four_d: bool) -> SourceCase:
    import nibabel

    folder = (root / "acdc-4d-sample" / patient) if four_d else (root / "acdc-sample" / patient)
    if not folder.is_dir():
        raise ValueError(f"ACDC patient {patient!r} not found at {folder}")
    info = _read_info(folder / "Info.cfg")
    ed, es, frames_total = int(info["ED"]), int(info["ES"]), int(info["NbFrame"])
    ed_image = nibabel.load(folder / f"{patient}_frame{ed:02d}.nii.gz")
    zooms = ed_image.header.get_zooms()
    ed_labels = _nifti_to_rows_cols(np.asarray(nibabel.load(folder / f"{patient}_frame{ed:02d}_gt.nii.gz").dataobj))[0]
    es_labels = _nifti_to_rows_cols(np.asarray(nibabel.load(folder / f"{patient}_frame{es:02d}_gt.nii.gz").dataobj))[0]
    if four_d:
        cine = _nifti_to_rows_cols(np.asarray(nibabel.load(folder / f"{patient}_4d.nii.gz").dataobj))
        phase_frames = list(range(1, cine.shape[0] + 1))
    else:
        es_image = np.asarray(nibabel.load(folder / f"{patient}_frame{es:02d}.nii.gz").dataobj)
        cine = np.concatenate([_nifti_to_rows_cols(np.asarray(ed_image.dataobj)), _nifti_to_rows_cols(es_image)])
        phase_frames = [ed, es]
    cine = np.asarray(cine, np.float32)
    if not np.array_equal(cine, np.round(cine)) or cine.min() < 0:
        raise ValueError(f"ACDC {patient}: expected non-negative integer-valued voxels")
    labelmap = np.zeros(cine.shape, np.uint8)
    labelled = np.zeros(cine.shape[:2], bool)
    for frame, labels in ((ed, ed_labels), (es, es_labels)):
        index = phase_frames.index(frame)
        labelmap[index] = _map_labels(labels, ACDC_TO_NODE)
        labelled[index] = True
    rr_ms = 1000.0
    return SourceCase(
        name=f"{'acdc4d' if four_d else 'acdc'}:{patient}", kind="cine", images={"cine": cine},
        labelmap=labelmap, labelled=labelled, pixel_spacing=(float(zooms[1]), float(zooms[0])),
        slice_spacing=float(zooms[2]), trigger_times=[round((f - 1) * rr_ms / frames_total, 2) for f in phase_frames],
        cardiac_number_of_images=frames_total, licence=ACDC_LICENCE,
        derivation=(f"ACDC {patient} NIfTI ({'all ' + str(len(phase_frames)) + ' frames of the 4D cine' if four_d else f'only ED frame {ed} and ES frame {es} of the {frames_total}-frame cine'}); "
                    f"spacing from the NIfTI header ({zooms[1]:.4g} x {zooms[0]:.4g} mm, slices {zooms[2]:.4g} mm); "
                    "synthetic SAX orientation (ACDC affines are diagonal); trigger times assume RR 1000 ms"),
        height_m=float(info["Height"]) / 100 if "Height" in info else None,
        weight_kg=float(info["Weight"]) if "Weight" in info else None,
        phase_names={phase_frames.index(ed): "end diastole", phase_frames.index(es): "end systole"},
    )


def load_myops(case: str, root: Path) -> SourceCase:
    """A MyoPS 2020 case: the real 12-bit LGE (magnitude inversion recovery; no phase-sensitive image exists, so no
    PSIR series is made) with its real spacing, and the expert labels as node labels (edema 1220 is myocardium,
    scar 2221 is scar with any MVO inside it: MVO is not labelled separately, so ground truth has no MVO label)."""
    import nibabel

    folder = root / "myops2020-lge" / case
    image_path, labels_path = folder / f"{case}_LGE.nii.gz", folder / f"{case}_gd.nii.gz"
    if not image_path.is_file() or not labels_path.is_file():
        raise ValueError(f"MyoPS case {case!r} not found at {folder} (expected {image_path.name} and {labels_path.name})")
    lge = nibabel.load(image_path)
    raw_image = np.asarray(lge.dataobj)
    raw_labels = np.asarray(nibabel.load(labels_path).dataobj)
    if raw_image.shape != raw_labels.shape:
        raise ValueError(f"MyoPS {case}: LGE {raw_image.shape} and labels {raw_labels.shape} differ")
    unknown = set(np.unique(raw_labels).tolist()) - set(MYOPS_TO_NODE)
    if unknown:
        raise ValueError(f"MyoPS {case}: label values {sorted(unknown)} outside the MyoPS convention")
    if raw_image.min() < 0:
        raise ValueError(f"MyoPS {case}: expected non-negative LGE intensities")
    labels = np.zeros(raw_labels.shape, np.uint8)
    for source, node in MYOPS_TO_NODE.items():
        labels[raw_labels == source] = int(node)
    # MyoPS stores its slices apex first (the LV cavity grows with the slice index on all 33 cases): reversed into
    # the generator's base-to-apex order, as for EMIDEC
    image = _nifti_to_rows_cols(raw_image.astype(np.float32))[:, ::-1]
    labelmap = _nifti_to_rows_cols(labels)[:, ::-1]
    zooms = lge.header.get_zooms()
    orientation, positions = _nifti_patient_geometry(lge.affine, raw_image.shape[2])
    return SourceCase(
        name=f"myops:{case}", kind="lge", images={"magnitude": np.ascontiguousarray(image)},
        labelmap=np.ascontiguousarray(labelmap), labelled=np.ones(labelmap.shape[:2], bool),
        pixel_spacing=(float(zooms[1]), float(zooms[0])), slice_spacing=float(zooms[2]),
        trigger_times=[400.0], cardiac_number_of_images=1, licence=MYOPS_LICENCE,
        derivation=(f"MyoPS 2020 {case} LGE NIfTI (12-bit scanner intensities, magnitude only: no PSIR series); "
                    f"spacing from the NIfTI header ({zooms[1]:.4g} x {zooms[0]:.4g} mm, slices {zooms[2]:.4g} mm); "
                    "slices reversed to base-to-apex; orientation and slice positions from the NIfTI qform (the "
                    "scanner's); labels: edema counted as myocardium, MVO inside scar"),
        phase_names={0: "late enhancement"},
        orientation=orientation, positions=positions,
    )


def _nifti_patient_geometry(affine: np.ndarray, slices: int) -> tuple[np.ndarray, np.ndarray]:
    """(ImageOrientationPatient, ImagePositionPatient of each slice in generator order) of a NIfTI stack read by
    _nifti_to_rows_cols (rows = j, columns = i) and reversed (generator slice s = NIfTI k = slices - 1 - s), from its
    affine (voxel index -> RAS mm; DICOM's LPS negates x and y). A DICOM row runs along i, a column along j.

    MyoPS keeps the scanner's geometry in its qform; the synthetic SAX orientation make_study stamps on other
    sources made every MyoPS heart a mirror image (RV on the patient's left: break46a #1), while the qform gives the
    RV on the patient's right and an apex to the left, anterior and inferior on all 33 cases."""
    affine = np.asarray(affine, dtype=float)
    to_lps = np.diag([-1.0, -1.0, 1.0])
    row_dir, col_dir = to_lps @ affine[:3, 0], to_lps @ affine[:3, 1]
    orientation = np.concatenate([row_dir / np.linalg.norm(row_dir), col_dir / np.linalg.norm(col_dir)])
    positions = np.array([to_lps @ (affine @ np.array([0.0, 0.0, slices - 1 - s, 1.0]))[:3] for s in range(slices)])
    return orientation, positions
