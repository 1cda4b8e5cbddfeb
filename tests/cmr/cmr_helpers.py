"""Shared fixtures and helpers of the cmr tests (no conftest.py here: tests/results imports the top conftest by name).

The fixtures are imported into each test module; the expensive results are cached per session in this module.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from dicomnode.cmr import load_studies
from dicomnode.devtools.make_study import make_study

VARIANTS = ["ge", "siemens", "philips-enhanced"]
TRANSFER_SYNTAXES = [None, "jpeg-ls", "j2k", "rle", "deflate"]
GENERATED_SOURCES = {"lge": "emidec:Case_P043", "cine": "acdc:patient041"}
_CACHE: dict[str, object] = {}


def sunnybrook_paths(datasets: Path, patient: str) -> list[Path]:
    """The patient's cine folder and its localizer folder (those that exist)."""
    paths = [datasets / "sunnybrook-scd" / "dicoms" / patient, datasets / "sunnybrook-scd-localizers" / "dicoms" / patient]
    return [p for p in paths if p.is_dir()]


@pytest.fixture(autouse=True)
def quiet_invalid_uid_warnings():
    """Sunnybrook UIDs have leading-zero components; pydicom warns on every read."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Invalid value for VR UI")
        yield


@pytest.fixture(scope="session")
def sunnybrook_studies(datasets):
    if "sunnybrook" not in _CACHE:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Invalid value for VR UI")
            _CACHE["sunnybrook"] = {patient: load_studies(sunnybrook_paths(datasets, patient))
                                    for patient in ("SCD0000101", "SCD0000201", "SCD0000301", "SCD0003501")}
    return _CACHE["sunnybrook"]


@pytest.fixture(scope="session")
def generated(datasets, tmp_path_factory):
    """(kind, variant, transfer_syntax) -> GeneratedStudy for every variant and encoding of both cases (once a session).

    Tests must not modify the files; understood studies they change are their own copies.
    """
    if "generated" not in _CACHE:
        root = tmp_path_factory.mktemp("generated")
        studies = {}
        for kind, source in GENERATED_SOURCES.items():
            for variant in VARIANTS:
                for syntax in TRANSFER_SYNTAXES:
                    out = root / f"{kind}-{variant}-{syntax}"
                    studies[(kind, variant, syntax)] = make_study(source, out, variant, syntax, datasets=datasets)
        _CACHE["generated"] = studies
    return _CACHE["generated"]
