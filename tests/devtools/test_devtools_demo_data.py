"""The bundled demo studies: present, small, licensed, and understood as cine SAX + localizer and PSIR/magnitude LGE."""
from __future__ import annotations

import warnings

import numpy as np

from dicomnode.cmr import load_studies
from dicomnode.demo_data import DEMO_DIR, demo_studies, extract_demo
from dicomnode.labels import Label


def test_demo_zips_are_small_and_documented():
    paths = demo_studies()
    assert [p.name for p in paths] == ["sunnybrook_SCD0000301.zip", "emidec_Case_P009_lge.zip"]
    assert sum(p.stat().st_size for p in paths) < 15.5e6
    readme = (DEMO_DIR / "README.md").read_text()
    assert "CC0" in readme and "CC BY-NC-SA 4.0" in readme and "Lalande" in readme


def test_demo_studies_extract_and_are_understood(tmp_path):
    cine_folder, lge_folder = extract_demo(tmp_path)
    assert len(list((cine_folder / "cine").glob("*.dcm"))) == 200
    assert len(list((cine_folder / "localizer").glob("*.dcm"))) == 15
    assert "CC0" in (cine_folder.parent / "LICENSE.txt").read_text()
    assert "CC BY-NC-SA 4.0" in (lge_folder.parent / "LICENSE.txt").read_text()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Invalid value for VR UI")
        (cine_study,) = load_studies([cine_folder])
    assert cine_study.preferred("cine").slices == 10 and cine_study.preferred("localizer", None) is not None
    (lge_study,) = load_studies([lge_folder])
    preferred = lge_study.preferred("lge")
    assert preferred.lge_kind == "psir" and preferred.slices == 8
    truth = np.load(lge_folder.parent / "ground_truth.npz")
    assert (truth["labelmap"] == Label.MVO).any() and (truth["labelmap"] == Label.SCAR).any()
