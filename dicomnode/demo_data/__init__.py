"""The bundled demo studies for `dicomnode demo`: zip paths and extraction to folders (no network)."""
from __future__ import annotations

import zipfile
from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent
#: order matters: the cine study first, then the LGE study
DEMO_ZIPS = ("sunnybrook_SCD0000301.zip", "emidec_Case_P009_lge.zip")


def demo_studies() -> list[Path]:
    """Paths of the bundled demo zips (Sunnybrook cine + localizer, CC0; EMIDEC-derived LGE, CC BY-NC-SA 4.0)."""
    paths = [DEMO_DIR / name for name in DEMO_ZIPS]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"demo data missing from the installed package: {missing} (expected in {DEMO_DIR})")
    return paths


def extract_demo(dest: Path) -> list[Path]:
    """Extract every demo zip under dest; returns each study's DICOM folder (dest/<study>/dicom).

    Only DICOM files lie under the returned folders; LICENSE.txt (and the LGE study's ground_truth.npz) lie one
    level up, in dest/<study>/.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    folders = []
    for archive_path in demo_studies():
        with zipfile.ZipFile(archive_path) as archive:
            names = archive.namelist()
            top = {name.split("/", 1)[0] for name in names}
            if len(top) != 1 or any(name.startswith("/") or ".." in Path(name).parts for name in names):
                raise ValueError(f"{archive_path.name}: expected one top-level folder and safe member names")
            archive.extractall(dest)
        folders.append(dest / top.pop() / "dicom")
    return folders
