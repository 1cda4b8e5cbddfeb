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
def _demo_folders() -> tuple[Path, ...]:
    return tuple(extract_demo(Path(tempfile.mkdtemp(prefix="dicomnode-field-"))))


def _files(kind: str) -> tuple[Path, ...]:
    folder = [f for f in _demo_folders() if kind in f.parent.name.lower()][0]
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return tuple(sorted(files, key=lambda p: int(pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber)))


def demo_lge_files() -> tuple[Path, ...]:
    """The demo LGE study's files (EMIDEC-derived; one series per slice, magnitude then PSIR), extracted once."""
    return _files("lge")


def demo_cine_files() -> tuple[Path, ...]:
    """The demo Sunnybrook study's files (cine short axis + localizer), extracted once."""
    return _files("sunnybrook")


def lge_variant(dest: Path, change: Callable[[pydicom.Dataset, int], None] | None = None, new_uids: bool = True,
                name: str = "IM{:04d}.dcm", indices=None) -> list[Path]:
    """Write the demo LGE stack under dest with `change` applied; returns the file paths in stack order.

    `indices`: only these files of the stack (0-7 magnitude, 8-15 PSIR, base to apex); default all.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    study_uid, frame_uid = generate_uid(), generate_uid()
    series_uids: dict[str, str] = {}
    paths = []
    for index, source in enumerate(demo_lge_files()):
        if indices is not None and index not in indices:
            continue
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


#: what a PACS routes along with the images of a study (SOP class, modality); the last one is a private class
NON_MR_CLASSES = (
    ("1.2.840.10008.5.1.4.1.1.88.33", "SR"),  # Comprehensive SR
    ("1.2.840.10008.5.1.4.1.1.7", "OT"),  # Secondary Capture
    ("1.2.840.10008.5.1.4.1.1.11.1", "PR"),  # Grayscale Softcopy Presentation State
    ("1.2.840.10008.5.1.4.1.1.88.59", "KO"),  # Key Object Selection
    ("1.2.840.10008.5.1.4.1.1.104.1", "DOC"),  # Encapsulated PDF
    ("1.3.12.2.1107.5.9.1", "MR"),  # Siemens CSA Non-Image (private storage class)
)


def non_mr_objects(template: pydicom.Dataset, dest: Path) -> list[Path]:
    """One small instance of each NON_MR_CLASSES class in the template's study (patient/study copied)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, (sop_class, modality) in enumerate(NON_MR_CLASSES, start=900):
        ds = Dataset()
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
                        "StudyDate", "StudyTime", "AccessionNumber", "StudyID", "ReferringPhysicianName",
                        "SpecificCharacterSet"):
            if keyword in template:
                setattr(ds, keyword, template.get(keyword))
        ds.SOPClassUID, ds.SOPInstanceUID, ds.SeriesInstanceUID = sop_class, generate_uid(), generate_uid()
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, number, 1
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = sop_class, ds.SOPInstanceUID
        path = dest / f"{modality}{number}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def legacy_converted(dest: Path, indices=range(8, 16)) -> Path:
    """The demo PSIR stack as ONE Legacy Converted Enhanced MR instance (highdicom's converter, as PACS tools make
    them): the sequence evidence then sits in the Unassigned Shared/Per-Frame Converted Attributes sequences."""
    import highdicom as hd

    datasets = [pydicom.dcmread(p) for p in lge_variant(dest / "classic", indices=indices)]
    for ds in datasets:  # one series, as the converter requires
        ds.SeriesInstanceUID, ds.SeriesNumber = datasets[0].SeriesInstanceUID, datasets[0].SeriesNumber
    converted = hd.legacy.LegacyConvertedEnhancedMRImage(
        legacy_datasets=datasets, series_instance_uid=generate_uid(), series_number=int(datasets[0].SeriesNumber),
        sop_instance_uid=generate_uid(), instance_number=1)
    path = dest / "LEGACY.dcm"
    converted.save_as(path, enforce_file_format=True)
    for classic in (dest / "classic").iterdir():
        classic.unlink()
    (dest / "classic").rmdir()
    return path
