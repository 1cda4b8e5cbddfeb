"""LGE training cases from two centres: EMIDEC (8-bit PNG, assumed geometry) and MyoPS 2020 (12-bit NIfTI, real
geometry), mapped to node labels, with patient-level folds stratified by centre.

Label availability differs per centre and is carried on every case (`labelled`): EMIDEC labels no RV (RV pixels
are background there) and MyoPS labels no separate MVO (it is inside its scar label), so the loss merges the
classes a centre cannot tell apart (engines.lge.losses).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from dicomnode.devtools.sources import EMIDEC_SLICE_SPACING_MM, emidec_pixel_spacing
from dicomnode.labels import EMIDEC_TO_NODE, MYOPS_TO_NODE, Label

#: The PNGs carry no geometry, and their pixels are not square (every slice was resized to 256 x 256). The
#: project-wide assumption (dicomnode.devtools.sources.emidec_pixel_spacing, also used for the DICOM studies
#: derived from EMIDEC): per case, row and column spacing that make the LV round, 1.4 mm on (geometric) average,
#: 10 mm between slices.
ASSUMED_SLICE_SPACING_MM = EMIDEC_SLICE_SPACING_MM

DATASETS = Path(os.environ.get("DICOMNODE_SHARED_DATASETS")
                or Path(__file__).resolve().parents[2].parent / "shared" / "datasets")
EMIDEC_DIR = DATASETS / "emidec-lge-png"
MYOPS_DIR = DATASETS / "myops2020-lge"

_SLICE_NAME = re.compile(r"^(Case_[NP]\d{3})_slice(\d{3})\.png$")
ALL_LABELS = frozenset(int(v) for v in Label)


@dataclass
class Case:
    """One patient's LGE short-axis stack.

    image: (D, H, W) float32 in the source's own intensity units; labels: (D, H, W) uint8 node labels;
    spacing_rc: in-plane (row, col) spacing in mm; slice_spacing_mm: distance between slices;
    centre: "emidec" | "myops"; labelled: node labels this centre distinguishes (others are merged by the loss);
    real_geometry: False where the spacing is an assumption (EMIDEC PNG).
    """

    name: str
    image: np.ndarray
    labels: np.ndarray
    spacing_rc: tuple[float, float]
    slice_spacing_mm: float
    centre: str
    labelled: frozenset = field(default=ALL_LABELS)
    real_geometry: bool = True

    @property
    def pathological(self) -> bool:
        return self.centre == "myops" or self.name.startswith("Case_P")

    @property
    def voxel_volume_ml(self) -> float:
        return self.spacing_rc[0] * self.spacing_rc[1] * self.slice_spacing_mm / 1000.0


def load_emidec(root: Path = EMIDEC_DIR) -> list[Case]:
    """All EMIDEC cases of the train/ and val/ folders, sorted by name (labels: 0..4, no RV), each with the
    assumed non-square pixel spacing that undoes the PNG conversion's resize (`emidec_pixel_spacing`)."""
    root = Path(root)
    slices: dict[str, list[tuple[int, Path, Path]]] = {}
    for image_dir, label_dir in (("train", "trainannot"), ("val", "valannot")):
        for path in sorted((root / image_dir).glob("*.png")):
            match = _SLICE_NAME.match(path.name)
            if match is None:
                raise ValueError(f"unexpected file name {path}")
            label_path = root / label_dir / path.name
            if not label_path.is_file():
                raise ValueError(f"label missing for {path}")
            slices.setdefault(match.group(1), []).append((int(match.group(2)), path, label_path))
    if not slices:
        raise ValueError(f"no EMIDEC PNG slices under {root}")
    lookup = np.zeros(256, dtype=np.uint8)
    for source, node in EMIDEC_TO_NODE.items():
        lookup[source] = int(node)
    cases = []
    for name in sorted(slices):
        entries = sorted(slices[name])
        image = np.stack([np.asarray(Image.open(p).convert("L")) for _, p, _ in entries]).astype(np.float32)
        raw = np.stack([np.asarray(Image.open(q)) for _, _, q in entries])
        if raw.max() > 4:
            raise ValueError(f"{name}: label value {raw.max()} outside EMIDEC 0..4")
        labels = lookup[raw]
        cases.append(Case(name=name, image=image, labels=labels, spacing_rc=emidec_pixel_spacing(labels),
                          slice_spacing_mm=ASSUMED_SLICE_SPACING_MM, centre="emidec",
                          labelled=ALL_LABELS - {int(Label.RV_BLOOD_POOL)}, real_geometry=False))
    return cases


def load_myops(root: Path = MYOPS_DIR) -> list[Case]:
    """All MyoPS 2020 cases (LGE + expert labels, real spacing from the NIfTI header), sorted by name.

    The NIfTI array is (x, y, slice); each slice is transposed to (rows, cols) = (y, x). In-plane orientation
    differs between cases (the affine's axis codes vary), which training augments over anyway.
    """
    import nibabel as nib

    root = Path(root)
    cases = []
    for folder in sorted(p for p in root.glob("Case*") if p.is_dir()):
        name = folder.name
        lge = nib.load(str(folder / f"{name}_LGE.nii.gz"))
        labels_raw = np.asarray(nib.load(str(folder / f"{name}_gd.nii.gz")).dataobj)
        image = np.asarray(lge.dataobj, dtype=np.float32)
        if image.shape != labels_raw.shape:
            raise ValueError(f"{name}: LGE {image.shape} and labels {labels_raw.shape} differ")
        unknown = set(np.unique(labels_raw).tolist()) - set(MYOPS_TO_NODE)
        if unknown:
            raise ValueError(f"{name}: label values {sorted(unknown)} outside the MyoPS convention")
        labels = np.zeros(labels_raw.shape, dtype=np.uint8)
        for source, node in MYOPS_TO_NODE.items():
            labels[labels_raw == source] = int(node)
        zooms = lge.header.get_zooms()
        cases.append(Case(name=name, image=np.ascontiguousarray(image.transpose(2, 1, 0)),
                          labels=np.ascontiguousarray(labels.transpose(2, 1, 0)),
                          spacing_rc=(float(zooms[1]), float(zooms[0])), slice_spacing_mm=float(zooms[2]),
                          centre="myops", labelled=ALL_LABELS - {int(Label.MVO)}, real_geometry=True))
    if not cases:
        raise ValueError(f"no MyoPS cases under {root}")
    return cases


#: node labels a cine (bSSFP) image shows: no scar or MVO, which the loss counts as myocardium there
CINE_LABELLED = frozenset({int(Label.BACKGROUND), int(Label.LV_BLOOD_POOL), int(Label.LV_MYOCARDIUM),
                           int(Label.RV_BLOOD_POOL)})


def load_acdc_cine(datasets: Path = DATASETS) -> list[Case]:
    """Auxiliary shape data: the 100 ACDC patients' ED and ES short-axis stacks (bSSFP cine, 1.5/3 T, Dijon;
    Bernard et al., IEEE TMI 2018), one `Case` per patient and phase with expert LV, myocardium and RV in real
    spacing, `centre` "acdc_cine" and `labelled` `CINE_LABELLED` (the loss counts scar and MVO as myocardium on
    them). Never held out or evaluated: no LGE patient is an ACDC patient.

    Raises ValueError where a stack's slices differ in size or nothing is found."""
    from engines.cine.data import bitmask_to_labels, load_acdc_png

    stacks: dict[tuple[str, str], list] = {}
    for item in load_acdc_png(Path(datasets)):
        stacks.setdefault((item.subject, item.phase), []).append(item)
    cases = []
    for (subject, phase), items in sorted(stacks.items()):
        items.sort(key=lambda item: item.z)
        if len({item.image.shape for item in items}) != 1:
            raise ValueError(f"ACDC {subject} {phase}: slices of different sizes")
        labels = np.stack([bitmask_to_labels(item.allowed) for item in items])
        if (labels == 255).any():
            raise ValueError(f"ACDC {subject} {phase}: a pixel with more than one label")
        cases.append(Case(name=f"{subject}_{phase}", image=np.stack([item.image for item in items]),
                          labels=labels, spacing_rc=items[0].spacing_rc, slice_spacing_mm=items[0].slice_spacing,
                          centre="acdc_cine", labelled=CINE_LABELLED, real_geometry=True))
    if not cases:
        raise ValueError(f"no ACDC slices under {datasets}")
    return cases


def load_cases(centres: tuple[str, ...] = ("emidec", "myops"), emidec_root: Path = EMIDEC_DIR,
               myops_root: Path = MYOPS_DIR) -> list[Case]:
    """The cases of the named centres (any of "emidec", "myops"), EMIDEC first."""
    loaders = {"emidec": lambda: load_emidec(emidec_root), "myops": lambda: load_myops(myops_root)}
    unknown = set(centres) - set(loaders)
    if unknown:
        raise ValueError(f"unknown centre(s) {sorted(unknown)}; known: {sorted(loaders)}")
    return [case for centre in ("emidec", "myops") if centre in centres for case in loaders[centre]()]


def case_folds(cases: list[Case], folds: int, seed: int) -> list[list[str]]:
    """Case names split into `folds` groups, stratified by centre and (EMIDEC) pathological/normal, reproducible."""
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    rng = np.random.default_rng(seed)
    groups: list[list[str]] = [[] for _ in range(folds)]
    offset = 0
    strata: dict[tuple[str, bool], list[str]] = {}
    for case in cases:
        strata.setdefault((case.centre, case.pathological), []).append(case.name)
    for key in sorted(strata):
        names = sorted(strata[key])
        rng.shuffle(names)
        for index, name in enumerate(names):
            groups[(index + offset) % folds].append(name)
        offset += len(names)
    return [sorted(g) for g in groups]
