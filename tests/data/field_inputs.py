"""Field-like variants of the bundled LGE demo study (issue 14): each a KIND of input real sites send.

`lge_variant(dest, change)` copies the demo LGE stack with `change(dataset, index)` applied to every instance
(index = position in the stack, 0-based) and writes them as files; new Study/Series/SOP UIDs unless kept.
"""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import pydicom
from pydicom.uid import generate_uid

from dicomnode.demo_data import extract_demo

BUGCASES = Path(__file__).resolve().parents[2].parent / "shared" / "bugcases"


@functools.lru_cache(maxsize=1)
def demo_lge_files() -> tuple[Path, ...]:
    """The demo LGE study's files, extracted once per test session (sorted by InstanceNumber)."""
    root = Path(tempfile.mkdtemp(prefix="dicomnode-field-"))
    folder = [f for f in extract_demo(root) if "lge" in f.parent.name.lower()][0]
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return tuple(sorted(files, key=lambda p: int(pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber)))


def lge_variant(dest: Path, change: Callable[[pydicom.Dataset, int], None] | None = None, new_uids: bool = True,
                name: str = "IM{:04d}.dcm") -> list[Path]:
    """Write the demo LGE stack under dest with `change` applied; returns the file paths in stack order."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    study_uid, frame_uid = generate_uid(), generate_uid()
    series_uids: dict[str, str] = {}
    paths = []
    for index, source in enumerate(demo_lge_files()):
        ds = pydicom.dcmread(source)
        if new_uids:
            series_uid = series_uids.setdefault(ds.SeriesInstanceUID, generate_uid())
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if change is not None:
            change(ds, index)
        path = dest / name.format(index)
        ds.save_as(path, enforce_file_format=False)
        paths.append(path)
    return paths


def as_monochrome1(ds: pydicom.Dataset, _index: int) -> None:
    """Store the image inverted as MONOCHROME1 (same meaning: high stored values are dark)."""
    pixels = ds.pixel_array.astype(np.int64)
    bits = int(ds.BitsStored)
    maximum = (1 << bits) - 1 if not int(ds.PixelRepresentation) else (1 << (bits - 1)) - 1
    ds.PixelData = (maximum - pixels).astype(ds.pixel_array.dtype).tobytes()
    ds.PhotometricInterpretation = "MONOCHROME1"
    for keyword in ("WindowCenter", "WindowWidth"):
        if keyword in ds:
            del ds[keyword]
