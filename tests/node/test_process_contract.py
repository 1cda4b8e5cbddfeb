"""`dicomnode process` on the bundled real-data studies: exit 0, .dcm outputs, summary.json per the design contract."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from dicomnode.demo_data import extract_demo

pytestmark = pytest.mark.slow

SERIES_KEYS = {"series_instance_uid", "series_number", "sequence", "view", "slices", "phases"}
LGE_KEYS = {"method", "myocardium_volume_ml", "lv_mass_g", "scar_volume_ml", "mvo_volume_ml", "lge_percent",
            "large_scar_burden", "nsd", "fwhm"}
CINE_KEYS = {"lv_edv_ml", "lv_esv_ml", "lv_sv_ml", "lv_ef_percent", "lv_mass_g", "rv_edv_ml", "rv_esv_ml", "rv_sv_ml",
             "rv_ef_percent", "ed_phase", "es_phase"}
SEQUENCES = {"cine", "lge", "t1map", "t2map", "t2w", "perfusion", "localizer", "other"}
VIEWS = {"sax", "2ch", "3ch", "4ch", "lvot", "other"}


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    root = tmp_path_factory.mktemp("process")
    folders = extract_demo(root / "input")
    inputs = root / "studies"
    inputs.mkdir()
    for folder in folders:  # only the DICOM folders: licence notes stay beside, not inside, the input
        (inputs / folder.parent.name).symlink_to(folder, target_is_directory=True)
    out = root / "out"
    result = subprocess.run([sys.executable, "-m", "dicomnode.cli", "process", str(inputs), "--out", str(out)],
                            capture_output=True, text=True, timeout=900)
    return result, out


def test_process_exits_zero_and_writes_summary(processed):
    result, out = processed
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"studies", "unreadable_files"} and summary["unreadable_files"] == []
    assert len(summary["studies"]) == 2


def test_summary_follows_the_contract(processed):
    _, out = processed
    summary = json.loads((out / "summary.json").read_text())
    by_kind = {}
    for study in summary["studies"]:
        assert study["study_instance_uid"].replace(".", "").isdigit()
        for series in study["series"]:
            assert SERIES_KEYS <= set(series)
            assert isinstance(series["series_description"], str)  # as the viewer lists it, beside the number
            assert series["sequence"] in SEQUENCES and series["view"] in VIEWS
        for item in study["declined"]:
            assert set(item) >= {"series_instance_uid", "reason"} and item["reason"]
        for relative in study["outputs"]:
            path = out / relative
            assert path.is_file() and path.suffix == ".dcm"
            assert pydicom.dcmread(path).StudyInstanceUID == study["study_instance_uid"]
        by_kind["lge" if "lge" in study else "cine"] = study

    lge_study = by_kind["lge"]
    lge = lge_study["lge"]
    assert LGE_KEYS <= set(lge)
    assert lge["method"] == "dl"
    assert lge["nsd"]["n"] in (2, 3, 5, 6) and "lge_percent" in lge["nsd"] and "lge_percent" in lge["fwhm"]
    assert abs(lge["lv_mass_g"] - 1.05 * lge["myocardium_volume_ml"]) < 0.2
    assert lge["myocardium_volume_ml"] > 0
    expected_percent = 100 * lge["scar_volume_ml"] / lge["myocardium_volume_ml"]  # scar includes MVO
    assert abs(lge["lge_percent"] - expected_percent) < 0.2
    assert isinstance(lge["large_scar_burden"], bool)
    assert "cine" not in lge_study  # absent analysis -> key absent, said in not_analysed, not as a decline
    assert [item["analysis"] for item in lge_study["not_analysed"]] == ["cine"]
    assert lge_study["not_analysed"][0]["reason"].startswith("no cine short-axis series in the study")
    assert all(d["series_instance_uid"] for d in lge_study["declined"])

    cine_study = by_kind["cine"]
    cine = cine_study["cine"]
    assert CINE_KEYS <= set(cine)
    assert abs(cine["lv_sv_ml"] - (cine["lv_edv_ml"] - cine["lv_esv_ml"])) < 0.2
    assert abs(cine["lv_ef_percent"] - 100 * cine["lv_sv_ml"] / cine["lv_edv_ml"]) < 0.2
    assert 0 <= cine["ed_phase"] < 20 and 0 <= cine["es_phase"] < 20 and cine["ed_phase"] != cine["es_phase"]
    assert "lge" not in cine_study
    assert [item["analysis"] for item in cine_study["not_analysed"]] == ["lge"]
    assert cine_study["not_analysed"][0]["reason"].startswith("no LGE short-axis stack in the study")
    cine_series = [s for s in cine_study["series"] if s["sequence"] == "cine"]
    assert cine_series and cine_series[0]["slices"] == 10 and cine_series[0]["phases"] == 20

    for study in (lge_study, cine_study):
        for suggestion in study.get("suggestions", []):
            assert set(suggestion) >= {"text", "score", "report_id"} and -1 <= suggestion["score"] <= 1
        classes = {pydicom.dcmread(out / r, stop_before_pixels=True).SOPClassUID for r in study["outputs"]}
        assert "1.2.840.10008.5.1.4.1.1.66.4" in classes  # SEG
        assert "1.2.840.10008.5.1.4.1.1.88.34" in classes  # Comprehensive 3D SR
