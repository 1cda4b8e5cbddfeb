"""Labelled cine SAX data for training/evaluation, as node labels: ACDC PNG + NIfTI, Sunnybrook DICOM + contours, and
the bSSFP (`C0`) volumes of MyoPS 2020 with their LV / myocardium / RV labels."""
from __future__ import annotations

import csv
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dicomnode.cmr.orientation import rv_direction_deg
from dicomnode.cmr.resample import InplaneResampler
from dicomnode.labels import ACDC_TO_NODE, Label

#: model output channels, in order, as node labels
CHANNEL_LABELS = (int(Label.BACKGROUND), int(Label.LV_BLOOD_POOL), int(Label.LV_MYOCARDIUM), int(Label.RV_BLOOD_POOL))
N_CLASSES = len(CHANNEL_LABELS)
BIT = {label: 1 << channel for channel, label in enumerate(CHANNEL_LABELS)}
ALL_BITS = sum(BIT.values())
#: canvas the training cache stores (the augmenter samples the model crop from it)
CANVAS_SIZE = 192
SPLIT_SEED = 2026
ACDC_GROUPS = ("DCM", "HCM", "MINF", "NOR", "RV")
ACDC_TEST_PER_GROUP = 4
#: Sunnybrook subjects with whole 20-phase stacks: held out for the EF comparison
SUNNYBROOK_HELD_OUT = ("SCD0000101", "SCD0000201", "SCD0000301")


@dataclass
class LabelledSlice:
    """One 2-D slice with its allowed-class bitmask (bit c set = output channel c possible at that pixel)."""

    subject: str
    source: str  # "acdc" | "sunnybrook" | "myops"
    phase: str  # "ED" | "ES" | "C0" (MyoPS: one bSSFP phase of unstated timing)
    z: int
    image: np.ndarray  # (rows, cols) float32 raw intensities
    allowed: np.ndarray  # (rows, cols) uint8 bitmask
    spacing_rc: tuple[float, float]
    slice_spacing: float
    #: the same slice at the cine's first phase (ED, R-wave triggered), same grid; None where no such image exists
    #: (the slice is then its own context, as at ED)
    first_phase: np.ndarray | None = None
    #: the previous and the next slice of the stack at the same phase, same grid (the slice itself at either end of
    #: the stack, and where the source has no whole stack); None until a loader sets them
    neighbours: tuple[np.ndarray, np.ndarray] | None = None


def stack_neighbours(stack: np.ndarray, z: int) -> tuple[np.ndarray, np.ndarray]:
    """(previous, next) slice of `stack` (slices, rows, cols) around slice z; the slice itself at either end, as
    dicomnode.analysis.cine.preprocess_cine gives a "neighbours" model."""
    return stack[max(z - 1, 0)], stack[min(z + 1, len(stack) - 1)]


def pair_first_phase(slices: list[LabelledSlice]) -> list[LabelledSlice]:
    """Give every ES slice the ED image of the same subject and slice position as its first-phase context.

    ACDC's ED frame is its first frame (R-wave trigger) for all 93 PNG patients and all but one NIfTI patient (ED
    frame 4), so ED stands in for the first phase the node pairs each phase with
    (dicomnode.analysis.cine.CineModelSpec.context).
    """
    ed = {(s.subject, s.source, s.z): s.image for s in slices if s.phase == "ED"}
    for item in slices:
        if item.phase == "ES":
            image = ed.get((item.subject, item.source, item.z))
            if image is not None and image.shape == item.image.shape:
                item.first_phase = image
    return slices


def acdc_to_allowed(acdc_labels: np.ndarray) -> np.ndarray:
    """ACDC label map (0 bg, 1 RV, 2 MYO, 3 LV) -> bitmask with exactly one allowed channel per pixel."""
    allowed = np.zeros(acdc_labels.shape, dtype=np.uint8)
    for acdc_value, node_label in ACDC_TO_NODE.items():
        allowed[acdc_labels == acdc_value] = BIT[int(node_label)]
    return allowed


def contours_to_allowed(endo: np.ndarray, epi: np.ndarray | None) -> np.ndarray:
    """Partial LV labels -> bitmask: endo = LV blood pool; epi-endo = myocardium; the rest may be several classes."""
    if epi is None:
        allowed = np.full(endo.shape, BIT[Label.BACKGROUND] | BIT[Label.LV_MYOCARDIUM] | BIT[Label.RV_BLOOD_POOL], np.uint8)
    else:
        allowed = np.full(endo.shape, BIT[Label.BACKGROUND] | BIT[Label.RV_BLOOD_POOL], np.uint8)
        allowed[epi] = BIT[Label.LV_MYOCARDIUM]
    allowed[endo] = BIT[Label.LV_BLOOD_POOL]
    return allowed


def bitmask_to_labels(allowed: np.ndarray) -> np.ndarray:
    """Fully labelled bitmask -> node labels (pixels with several allowed classes get 255)."""
    labels = np.full(allowed.shape, 255, dtype=np.uint8)
    for label, bit in BIT.items():
        labels[allowed == bit] = label
    return labels


def polygon_mask(points_xy: np.ndarray, shape_rc: tuple[int, int]) -> np.ndarray:
    """Closed polygon in pixel coordinates (x = column, y = row) -> boolean mask of pixel centres inside."""
    from matplotlib.path import Path as PolygonPath

    rows, cols = shape_rc
    rr, cc = np.mgrid[0:rows, 0:cols]
    inside = PolygonPath(points_xy).contains_points(np.stack([cc.ravel(), rr.ravel()], axis=1))
    return inside.reshape(shape_rc)


# ---------------------------------------------------------------- ACDC
def acdc_subject_split(datasets: Path, seed: int = SPLIT_SEED) -> tuple[list[str], list[str]]:
    """All 100 ACDC training patients split by subject: ACDC_TEST_PER_GROUP per group held out (patient090 always)."""
    groups = acdc_groups()
    rng = random.Random(seed)
    test: list[str] = []
    for group, patients in groups.items():
        candidates = [p for p in patients if p != "patient090"]
        rng.shuffle(candidates)
        chosen = ["patient090"] if group == "RV" else []
        chosen += candidates[: ACDC_TEST_PER_GROUP - len(chosen)]
        test += chosen
    train = [p for g in groups.values() for p in g if p not in test]
    return sorted(train), sorted(test)


def acdc_groups() -> dict[str, list[str]]:
    """ACDC training set: patients 1-20 DCM, 21-40 HCM, 41-60 MINF, 61-80 NOR, 81-100 RV (Bernard et al. 2018)."""
    groups: dict[str, list[str]] = {g: [] for g in ACDC_GROUPS}
    for number in range(1, 101):
        groups[ACDC_GROUPS[(number - 1) // 20]].append(f"patient{number:03d}")
    return groups


def acdc_folds(n_folds: int = 5, seed: int = SPLIT_SEED) -> list[list[str]]:
    """Subject-level K-fold split of the 100 ACDC patients, stratified by group: fold k holds 20/K of each group."""
    if n_folds < 2 or 20 % n_folds:
        raise ValueError(f"n_folds must divide the 20 patients of each ACDC group, got {n_folds}")
    rng = random.Random(seed)
    folds: list[list[str]] = [[] for _ in range(n_folds)]
    for patients in acdc_groups().values():
        shuffled = list(patients)
        rng.shuffle(shuffled)
        for index, patient in enumerate(shuffled):
            folds[index % n_folds].append(patient)
    return [sorted(fold) for fold in folds]


def load_acdc_png(datasets: Path, patients: set[str] | None = None) -> list[LabelledSlice]:
    from PIL import Image

    root = datasets / "acdc-train-png"
    out = []
    with open(root / "slices.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if patients is not None and row["patient"] not in patients:
                continue
            image = np.asarray(Image.open(root / "images" / row["file"]), dtype=np.float32)
            labels = np.asarray(Image.open(root / "labels" / row["file"]), dtype=np.uint8)
            out.append(LabelledSlice(
                subject=row["patient"], source="acdc", phase=row["phase"], z=int(row["z"]), image=image,
                allowed=acdc_to_allowed(labels),
                spacing_rc=(float(row["pixel_spacing_row_mm"]), float(row["pixel_spacing_col_mm"])),
                slice_spacing=float(row["slice_spacing_mm"])))
    by_position = {(s.subject, s.phase, s.z): s.image for s in out}
    for item in out:
        own = item.image
        before = by_position.get((item.subject, item.phase, item.z - 1), own)
        after = by_position.get((item.subject, item.phase, item.z + 1), own)
        item.neighbours = (before if before.shape == own.shape else own, after if after.shape == own.shape else own)
    return pair_first_phase(out)


def read_info_cfg(path: Path) -> dict[str, str]:
    info = {}
    for line in path.read_text().splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            info[key.strip()] = value.strip()
    return info


def acdc_nifti_dirs(datasets: Path) -> list[Path]:
    return sorted((datasets / "acdc-sample").glob("patient*")) + sorted((datasets / "acdc-4d-sample").glob("patient*"))


def load_acdc_nifti_volume(path: Path) -> tuple[np.ndarray, tuple[float, float], float]:
    """NIfTI (x, y, z[, t]) -> array (..., z, rows, cols) in the PNG convention (png = nifti[:, :, z].T)."""
    import nibabel

    image = nibabel.load(str(path))
    data = np.asarray(image.dataobj, dtype=np.float32)
    zooms = image.header.get_zooms()
    if data.ndim == 4:
        data = np.transpose(data, (3, 2, 1, 0))  # t, z, rows(j), cols(i)
    else:
        data = np.transpose(data, (2, 1, 0))
    return data, (float(zooms[1]), float(zooms[0])), float(zooms[2])


def load_acdc_nifti(datasets: Path, patients: set[str] | None = None) -> list[LabelledSlice]:
    out = []
    for folder in acdc_nifti_dirs(datasets):
        if patients is not None and folder.name not in patients:
            continue
        info = read_info_cfg(folder / "Info.cfg")
        for phase, key in (("ED", "ED"), ("ES", "ES")):
            frame = int(info[key])
            image, spacing, dz = load_acdc_nifti_volume(folder / f"{folder.name}_frame{frame:02d}.nii.gz")
            labels, _, _ = load_acdc_nifti_volume(folder / f"{folder.name}_frame{frame:02d}_gt.nii.gz")
            for z in range(image.shape[0]):
                out.append(LabelledSlice(folder.name, "acdc", phase, z, image[z], acdc_to_allowed(labels[z].astype(np.uint8)),
                                         spacing, dz, neighbours=stack_neighbours(image, z)))
    return pair_first_phase(out)


# ---------------------------------------------------------------- Sunnybrook
def read_contour(path: Path) -> np.ndarray:
    return np.loadtxt(path, dtype=np.float64).reshape(-1, 2)


def sunnybrook_roots(datasets: Path) -> list[Path]:
    return [datasets / "sunnybrook-scd", datasets / "sunnybrook-scd-extra"]


def sunnybrook_link(datasets: Path) -> dict[str, tuple[Path, str]]:
    """PatientID -> (dataset folder, original SCD contour folder name) for every patient present."""
    found = {}
    for root in sunnybrook_roots(datasets):
        with open(root / "link.csv", newline="") as handle:
            for row in csv.DictReader(handle):
                if (root / "dicoms" / row["patient_id"]).is_dir():
                    found[row["patient_id"]] = (root, row["original_id"])
    return found


def sunnybrook_contoured(datasets: Path, patient: str) -> dict[int, dict[str, np.ndarray]]:
    """InstanceNumber -> {"i": polygon, "o": polygon?} for every contoured image of a Sunnybrook patient."""
    root, original = sunnybrook_link(datasets)[patient]
    contours: dict[int, dict[str, np.ndarray]] = {}
    for kind in ("i", "o"):
        for path in sorted((root / "contourfiles" / original / f"{kind}-contours").glob("*.txt")):
            instance = int(re.search(r"IM-\d+-(\d+)-", path.name).group(1))
            contours.setdefault(instance, {})[kind] = read_contour(path)
    return contours


def read_dicom_image(path: Path):
    import pydicom

    dataset = pydicom.dcmread(str(path))
    pixels = dataset.pixel_array.astype(np.float32)
    slope = float(getattr(dataset, "RescaleSlope", 1) or 1)
    intercept = float(getattr(dataset, "RescaleIntercept", 0) or 0)
    return dataset, pixels * slope + intercept


def load_sunnybrook(datasets: Path, patients: set[str] | None = None) -> list[LabelledSlice]:
    """Every contoured Sunnybrook image as a partially labelled slice (SCD0000501 epicardium dropped: misaligned)."""
    out = []
    for patient, (root, _) in sorted(sunnybrook_link(datasets).items()):
        if patients is not None and patient not in patients:
            continue
        contours = sunnybrook_contoured(datasets, patient)
        stack = sunnybrook_stack_positions(datasets, patient)
        for instance, polygons in sorted(contours.items()):
            dataset, image = read_dicom_image(root / "dicoms" / patient / f"{instance}.dcm")
            endo = polygon_mask(polygons["i"], image.shape)
            epi = None
            if "o" in polygons and patient != "SCD0000501":
                epi = polygon_mask(polygons["o"], image.shape) | endo
            phase = "ED" if "o" in polygons else "ES"
            spacing = tuple(float(v) for v in dataset.PixelSpacing)
            neighbours = (image, image)
            if stack is not None and instance in stack[1]:
                cine, where = stack[0], stack[1][instance]
                neighbours = stack_neighbours(cine[where[0]], where[1])
            out.append(LabelledSlice(patient, "sunnybrook", phase, instance, image, contours_to_allowed(endo, epi),
                                     spacing, float(getattr(dataset, "SpacingBetweenSlices", 0) or 0),
                                     neighbours=neighbours))
    return out


def sunnybrook_stack_positions(datasets: Path, patient: str):
    """(pixels (phases, slices, rows, cols), InstanceNumber -> (phase, slice)) of a Sunnybrook cine, or None where its
    series is not one whole stack (load_sunnybrook_cine refuses it): its contoured slices are then their own
    neighbours."""
    try:
        pixels, _, _, instances, _ = load_sunnybrook_cine(datasets, patient)
    except ValueError:
        return None
    where = {int(instances[p, z]): (p, z) for p in range(instances.shape[0]) for z in range(instances.shape[1])}
    return pixels, where


def load_sunnybrook_cine(datasets: Path, patient: str):
    """Whole Sunnybrook cine read straight from DICOM: slices sorted along the normal, phases by InstanceNumber.

    Returns (pixels (phases, slices, rows, cols), spacing_rc, slice_spacing, instance_numbers (phases, slices),
    trigger_times (phases,) in ms: the median TriggerTime of each phase over the slices, None where absent).
    """
    import pydicom

    root, _ = sunnybrook_link(datasets)[patient]
    by_position: dict[tuple, list] = {}
    normal = None
    for path in sorted((root / "dicoms" / patient).glob("*.dcm")):
        dataset = pydicom.dcmread(str(path))
        orientation = np.asarray(dataset.ImageOrientationPatient, dtype=np.float64)
        if normal is None:
            normal = np.cross(orientation[:3], orientation[3:])
        key = tuple(np.round(np.asarray(dataset.ImagePositionPatient, dtype=np.float64), 2))
        by_position.setdefault(key, []).append(dataset)
    positions = sorted(by_position, key=lambda p: float(np.dot(normal, p)))
    counts = {len(by_position[p]) for p in positions}
    if len(counts) != 1:
        raise ValueError(f"{patient}: slices have different phase counts {sorted(counts)}")
    stack, instances, triggers = [], [], []
    for position in positions:
        frames = sorted(by_position[position], key=lambda d: int(d.InstanceNumber))
        triggers.append([float(f.TriggerTime) if "TriggerTime" in f else np.nan for f in frames])
        stack.append([f.pixel_array.astype(np.float32) * float(getattr(f, "RescaleSlope", 1) or 1)
                      + float(getattr(f, "RescaleIntercept", 0) or 0) for f in frames])
        instances.append([int(f.InstanceNumber) for f in frames])
    pixels = np.transpose(np.asarray(stack, dtype=np.float32), (1, 0, 2, 3))
    along = [float(np.dot(normal, p)) for p in positions]
    slice_spacing = float(np.median(np.diff(along))) if len(along) > 1 else 0.0
    first = by_position[positions[0]][0]
    spacing = tuple(float(v) for v in first.PixelSpacing)
    per_phase = np.nanmedian(np.asarray(triggers, dtype=np.float64), axis=0) if np.isfinite(triggers).any() else None
    trigger_times = None if per_phase is None else [None if np.isnan(t) else float(t) for t in per_phase]
    return pixels, spacing, abs(slice_spacing), np.asarray(instances).T, trigger_times


# ---------------------------------------------------------------- MyoPS 2020 bSSFP
#: MyoPS label value -> node label; edema and scar are myocardium on a cine image
MYOPS_TO_NODE = {0: Label.BACKGROUND, 500: Label.LV_BLOOD_POOL, 200: Label.LV_MYOCARDIUM, 1220: Label.LV_MYOCARDIUM,
                 2221: Label.LV_MYOCARDIUM, 600: Label.RV_BLOOD_POOL}


def myops_cases(datasets: Path) -> list[str]:
    return sorted(p.name for p in (datasets / "myops2020-lge").glob("Case*") if (p / f"{p.name}_C0.nii.gz").is_file())


def soften_wall_borders(allowed: np.ndarray, width_px: int) -> np.ndarray:
    """A fully labelled bitmask whose LV myocardium borders become partial labels: within `width_px` pixels of the
    border between myocardium and blood pool a pixel may be either, and within `width_px` of the border between
    myocardium and what lies outside it (background, RV) a pixel may be myocardium or that outside class.

    Why: MyoPS's labels are drawn in the LGE space with T2 and bSSFP read together; on its bSSFP image the cine model
    draws their blood pool 23 mL larger and their myocardium 32 mL smaller per volume even on cases it trained on
    (engines/models/cine_unet.md), a wall-thickness convention apart from ACDC's. The band keeps what those labels say
    about where the heart is without teaching their wall thickness. `width_px` <= 0 returns `allowed` unchanged.
    """
    if width_px <= 0:
        return allowed
    from scipy import ndimage

    labels = bitmask_to_labels(allowed)
    myocardium = labels == Label.LV_MYOCARDIUM
    pool = labels == Label.LV_BLOOD_POOL
    outside = np.isin(labels, (Label.BACKGROUND, Label.RV_BLOOD_POOL))

    def near(mask: np.ndarray) -> np.ndarray:
        return ndimage.binary_dilation(mask, iterations=width_px)

    out = allowed.copy()
    outer = near(outside) & myocardium
    out[outer] = BIT[Label.LV_MYOCARDIUM] | BIT[Label.BACKGROUND] | BIT[Label.RV_BLOOD_POOL]
    out[outside & near(myocardium)] |= BIT[Label.LV_MYOCARDIUM]
    inner = (myocardium & near(pool)) | (pool & near(myocardium))
    out[inner] |= BIT[Label.LV_MYOCARDIUM] | BIT[Label.LV_BLOOD_POOL]
    return out


def load_myops_c0(datasets: Path, cases: set[str] | None = None, border_px: int = 0) -> list[LabelledSlice]:
    """Every labelled slice of the MyoPS bSSFP (`C0`) volumes, fully labelled (LV, myocardium incl. scar/edema, RV);
    with `border_px` > 0 the myocardium's borders are partial labels that wide (`soften_wall_borders`).

    Raises ValueError on a label value outside the MyoPS convention (README of the data set).
    """
    out = []
    for case in myops_cases(datasets):
        if cases is not None and case not in cases:
            continue
        folder = datasets / "myops2020-lge" / case
        image, spacing, dz = load_acdc_nifti_volume(folder / f"{case}_C0.nii.gz")
        labels, _, _ = load_acdc_nifti_volume(folder / f"{case}_gd.nii.gz")
        labels = np.rint(labels).astype(np.int32)
        unknown = set(np.unique(labels).tolist()) - set(MYOPS_TO_NODE)
        if unknown:
            raise ValueError(f"{case}: label values {sorted(unknown)} are not MyoPS labels {sorted(MYOPS_TO_NODE)}")
        for z in range(image.shape[0]):
            allowed = np.zeros(labels[z].shape, np.uint8)
            for value, node_label in MYOPS_TO_NODE.items():
                allowed[labels[z] == value] = BIT[int(node_label)]
            if (labels[z] > 0).any():
                out.append(LabelledSlice(case, "myops", "C0", z, image[z], soften_wall_borders(allowed, border_px),
                                         spacing, dz, neighbours=stack_neighbours(image, z)))
    return out


def basal_slices(slices: list[LabelledSlice], count: int = 2) -> np.ndarray:
    """(N,) bool: the `count` slices nearest the base of each ACDC (subject, phase) stack among those whose labels
    hold LV blood pool or myocardium (ACDC stores its stacks base first: z = 0 is the most basal slice).

    Near the base the valve plane moves through the slice over the cycle, and the reader's decision whether a slice is
    LV or atrium there carries most of the LVEF error (on the shipped recipe's 5-fold CV the 12 patients whose basal
    ES slice is segmented with an LV Dice under 0.8 have an LVEF MAE of 8.5 points, the other 88 of 2.8).
    Other sources (Sunnybrook's partial contours, MyoPS's unstated slice order) are never flagged.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    lv = (BIT[int(Label.LV_BLOOD_POOL)], BIT[int(Label.LV_MYOCARDIUM)])
    holding: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for index, item in enumerate(slices):
        if item.source == "acdc" and np.isin(item.allowed, lv).any():
            holding.setdefault((item.subject, item.phase), []).append((item.z, index))
    flags = np.zeros(len(slices), bool)
    for positions in holding.values():
        for _, index in sorted(positions)[:count]:
            flags[index] = True
    return flags


def canvas_rv_directions(allowed: np.ndarray, spacing_mm: float) -> np.ndarray:
    """(N,) float: each canvas slice's LV-to-RV direction in degrees (dicomnode.cmr.orientation.rv_direction_deg on
    the pixels labelled exactly LV blood pool or myocardium, and exactly RV), NaN where the slice has no usable RV
    (Sunnybrook's LV-only contours, apical slices). `allowed`: (N, S, S) bitmasks on an isotropic canvas of
    `spacing_mm`; the canvas keeps the source's row and column directions (build_canvas), so the direction is the
    slice's own. engines.cine.augment restricts training rotations to the node's anatomical poses with it."""
    lv_bits = (BIT[Label.LV_BLOOD_POOL], BIT[Label.LV_MYOCARDIUM])
    out = np.full(len(allowed), np.nan)
    for index, bits in enumerate(allowed):
        direction = rv_direction_deg(np.isin(bits, lv_bits), bits == BIT[Label.RV_BLOOD_POOL],
                                     (spacing_mm, spacing_mm))
        if direction is not None:
            out[index] = direction
    return out


# ---------------------------------------------------------------- training cache
def build_canvas(slices: list[LabelledSlice], target_spacing: float, canvas: int = CANVAS_SIZE,
                 first_phase: bool = False, neighbours: bool = False):
    """Resample every slice onto a canvas x canvas grid at the target spacing, centred on the image centre.

    Images: linear (dicomnode.cmr.InplaneResampler, the node's geometry); bitmasks: nearest neighbour, and
    outside the source only background is allowed. Returns (images (N, S, S) float32, allowed (N, S, S) uint8), and
    with `first_phase` also each slice's first-phase context on the same grid (N, S, S) (the slice itself where
    it has none), or with `neighbours` each slice's (previous, next) slice on the same grid (N, 2, S, S) (the slice
    itself where a loader set none).
    """
    if first_phase and neighbours:
        raise ValueError("build_canvas gives one context: first_phase or neighbours, not both")
    images = np.zeros((len(slices), canvas, canvas), np.float32)
    allowed = np.zeros((len(slices), canvas, canvas), np.uint8)
    context = np.zeros((len(slices), canvas, canvas), np.float32) if first_phase else None
    around = np.zeros((len(slices), 2, canvas, canvas), np.float32) if neighbours else None
    for index, item in enumerate(slices):
        resampler = InplaneResampler(item.image.shape, item.spacing_rc, target_spacing, canvas)
        images[index] = resampler.forward(item.image)
        allowed[index] = resampler.forward(item.allowed, order=0, fill=BIT[Label.BACKGROUND])
        if context is not None:
            context[index] = images[index] if item.first_phase is None else resampler.forward(item.first_phase)
        if around is not None:
            for side in range(2):
                around[index, side] = (images[index] if item.neighbours is None
                                       else resampler.forward(item.neighbours[side]))
    if around is not None:
        return images, allowed, around
    return (images, allowed) if context is None else (images, allowed, context)


def training_slices(datasets: Path, train_subjects: set[str], myops: bool = True,
                    myops_border_px: int = 0) -> list[LabelledSlice]:
    """Every labelled slice of the training subjects (ACDC subjects given, non-held-out Sunnybrook, MyoPS C0, whose
    myocardium borders are partial labels `myops_border_px` wide when > 0)."""
    slices = load_acdc_png(datasets, train_subjects) + load_acdc_nifti(datasets, train_subjects)
    sunnybrook_train = {p for p in sunnybrook_link(datasets) if p not in SUNNYBROOK_HELD_OUT}
    slices += load_sunnybrook(datasets, sunnybrook_train)
    if myops and (datasets / "myops2020-lge").is_dir():
        slices += load_myops_c0(datasets, border_px=myops_border_px)
    return slices
