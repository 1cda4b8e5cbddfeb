"""EMIDEC LGE PNG cases: loading whole stacks, case-level folds, and the assumed geometry of the PNGs."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dicomnode.devtools.sources import EMIDEC_PIXEL_SPACING_MM, EMIDEC_SLICE_SPACING_MM
from dicomnode.labels import EMIDEC_TO_NODE

#: The PNGs carry no geometry. EMIDEC originals are ~1.25-2 mm in-plane and ~8-13 mm between slices; the
#: project-wide assumption (dicomnode.devtools.sources, also used for the DICOM studies derived from EMIDEC)
#: is 1.5 mm and 10 mm: the median largest LV epicardial equivalent diameter, 55 px, is then ~82 mm.
ASSUMED_PNG_SPACING_MM = (EMIDEC_PIXEL_SPACING_MM, EMIDEC_PIXEL_SPACING_MM)
ASSUMED_SLICE_SPACING_MM = EMIDEC_SLICE_SPACING_MM

_SLICE_NAME = re.compile(r"^(Case_[NP]\d{3})_slice(\d{3})\.png$")


@dataclass
class Case:
    """One EMIDEC case: image (D, H, W) uint8 and node labels (D, H, W) uint8, slices in source order."""

    name: str
    image: np.ndarray
    labels: np.ndarray

    @property
    def pathological(self) -> bool:
        return self.name.startswith("Case_P")


def load_cases(root: Path) -> list[Case]:
    """All cases of the train/ and val/ folders, sorted by name."""
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
        image = np.stack([np.asarray(Image.open(p).convert("L")) for _, p, _ in entries])
        raw = np.stack([np.asarray(Image.open(q)) for _, _, q in entries])
        if raw.max() > 4:
            raise ValueError(f"{name}: label value {raw.max()} outside EMIDEC 0..4")
        cases.append(Case(name=name, image=image, labels=lookup[raw]))
    return cases


def case_folds(cases: list[Case], folds: int, seed: int) -> list[list[str]]:
    """Case names split into `folds` groups, stratified by pathological/normal, reproducible for a seed."""
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    rng = np.random.default_rng(seed)
    groups: list[list[str]] = [[] for _ in range(folds)]
    offset = 0
    for pathological in (True, False):
        names = sorted(c.name for c in cases if c.pathological == pathological)
        rng.shuffle(names)
        for index, name in enumerate(names):
            groups[(index + offset) % folds].append(name)
        offset += len(names)
    return [sorted(g) for g in groups]
