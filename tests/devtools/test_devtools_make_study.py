"""make_study: headers a real site would send, ground truth beside the DICOM, licence notes, and the CLI."""
from __future__ import annotations

import argparse
import json
import subprocess
import warnings

import numpy as np
import pydicom
import pytest

from dicomnode.cmr import load_studies
from dicomnode.devtools.cli import add_devtools_parser
from dicomnode.devtools.make_study import make_study
from dicomnode.devtools.sources import datasets_dir
from dicomnode.labels import Label
from tests.conftest import require_peer


@pytest.fixture(scope="module")
def lge_siemens(datasets, tmp_path_factory):
    return make_study("emidec:Case_P043", tmp_path_factory.mktemp("lge") / "study", "siemens", datasets=datasets)


def test_an_emidec_study_is_written_base_first_and_the_node_finds_the_base_there(lge_siemens):
    """EMIDEC numbers slices from the apex; the generator writes base to apex, so the node's geometry (apex towards
    patient left-anterior-inferior) must find the base where the LV cavity is largest."""
    from dicomnode.analysis.aha import basal_end_from_geometry

    cavity = (lge_siemens.labelmap[0] == Label.LV_BLOOD_POOL).sum(axis=(1, 2))
    assert cavity[0] > cavity[-1]
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in lge_siemens.paths]
    psir = sorted((ds for ds in headers if "PSIR" in ds.ImageType), key=lambda ds: int(ds.InstanceNumber))
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in psir])  # generator order
    assert basal_end_from_geometry(positions[-1] - positions[0]) == "first"


def test_lge_headers_state_assumptions_and_look_like_lge(lge_siemens):
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in lge_siemens.paths]
    psir = [ds for ds in headers if "PSIR" in ds.ImageType]
    magnitude = [ds for ds in headers if "M" in ds.ImageType]
    assert len(psir) == len(magnitude) == 5
    assert len({ds.SeriesNumber for ds in headers}) == 10  # one series per slice and kind
    for ds in headers:
        assert ds.ImageType[0] == "DERIVED"
        assert list(ds.ScanningSequence) == ["GR", "IR"] and float(ds.InversionTime) == 300
        # Case_P043's PNG pixels are ~1.22x taller than wide (the conversion's resize): stated, not hidden
        assert "ASSUMED pixel spacing 1.5484 x 1.2658 mm (rows x columns" in ds.ImageComments
        assert "slice spacing 10.0 mm" in ds.ImageComments
        assert "ASSUMED pixel spacing 1.5484 x 1.2658 mm" in ds.DerivationDescription
        assert [float(v) for v in ds.PixelSpacing] == [1.5484, 1.2658]
    assert all(float(ds.RescaleIntercept) == -2048 for ds in psir)
    licence = (lge_siemens.out_dir / "LICENSE.txt").read_text()
    assert "CC BY-NC-SA 4.0" in licence and "Lalande" in licence


def test_ground_truth_file_matches_the_study(lge_siemens):
    truth = np.load(lge_siemens.ground_truth_path)
    assert truth["labelmap"].shape == (1, 5, 256, 256)
    assert set(np.unique(truth["labelmap"])) <= {int(v) for v in Label}
    assert (truth["labelmap"] == Label.MVO).any() and (truth["labelmap"] == Label.SCAR).any()
    uids = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in lge_siemens.paths}
    assert set(truth["sop_instance_uids"].ravel()) | set(truth["magnitude_sop_instance_uids"].ravel()) == uids
    assert np.array_equal(truth["image"], lge_siemens.image)
    assert str(truth["primary_role"]) == "psir"


def test_acdc_labels_are_mapped_to_node_labels(datasets, tmp_path):
    study = make_study("acdc:patient001", tmp_path / "acdc", "ge", datasets=datasets)
    assert study.labelmap.shape == (2, 10, 256, 216)
    values = set(np.unique(study.labelmap[study.labelled]))
    assert values == {Label.BACKGROUND, Label.LV_BLOOD_POOL, Label.LV_MYOCARDIUM, Label.RV_BLOOD_POOL}
    ds = pydicom.dcmread(study.paths[0], stop_before_pixels=True)
    assert [float(v) for v in ds.PixelSpacing] == pytest.approx([1.5625, 1.5625])
    assert int(ds.CardiacNumberOfImages) == 30 and "only ED frame 1 and ES frame 12" in ds.ImageComments
    assert float(ds.PatientSize) == pytest.approx(1.84) and float(ds.PatientWeight) == pytest.approx(95)


def test_sunnybrook_copy_with_contour_ground_truth(datasets, tmp_path):
    study = make_study("sunnybrook:SCD0000301", tmp_path / "scd", datasets=datasets)
    assert len(study.paths) == 215 and "CC0" in study.licence_path.read_text()
    assert study.labelmap.shape == (20, 10, 256, 256)
    assert study.labelled.sum() == 10 and study.endocardium_only.sum() == 10  # 10 ED (i+o), 10 ES (i only)
    ed_phases = set(np.nonzero(study.labelled)[0])
    es_phases = set(np.nonzero(study.endocardium_only)[0])
    assert ed_phases <= {17, 18, 19} and es_phases <= {5, 6, 7, 8}  # README: ED 18/19, ES 6/7 of 0..19
    ed = study.labelmap[study.labelled]
    assert (ed == Label.LV_MYOCARDIUM).any() and (ed == Label.LV_BLOOD_POOL).any()
    es = study.labelmap[study.endocardium_only]
    assert set(np.unique(es)) == {Label.BACKGROUND, Label.LV_BLOOD_POOL}
    assert (es == Label.LV_BLOOD_POOL).sum() < (study.labelmap[study.labelled] == Label.LV_BLOOD_POOL).sum()
    source = datasets / "sunnybrook-scd" / "dicoms" / "SCD0000301" / "1.dcm"
    assert (tmp_path / "scd" / "dicom" / "cine_1.dcm").read_bytes() == source.read_bytes()
    # the ground truth's (phase, slice) order is the order the node's volume uses
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Invalid value for VR UI")
        (cmr,) = load_studies([study.out_dir / "dicom"])
        volume = cmr.load_volume(cmr.preferred("cine"))
    assert [[r.sop_instance_uid for r in row] for row in volume.frames] == \
        [[r.sop_instance_uid for r in row] for row in study.frames]


def test_bad_arguments_are_refused(datasets, tmp_path):
    with pytest.raises(ValueError, match="variant 'canon' not one of"):
        make_study("emidec:Case_P043", tmp_path, "canon", datasets=datasets)
    with pytest.raises(ValueError, match="transfer_syntax 'zip'"):
        make_study("emidec:Case_P043", tmp_path, "ge", "zip", datasets=datasets)
    with pytest.raises(ValueError, match="EMIDEC case 'Case_X999' not found"):
        make_study("emidec:Case_X999", tmp_path, datasets=datasets)
    with pytest.raises(ValueError, match="unknown options"):
        make_study("emidec:Case_P043", tmp_path, colour=True, datasets=datasets)


def test_datasets_dir_from_environment(datasets, monkeypatch, tmp_path):
    monkeypatch.setenv("DICOMNODE_SHARED_DATASETS", str(datasets))
    assert datasets_dir() == datasets
    assert datasets_dir(tmp_path) == tmp_path


def test_cli_make_study(datasets, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="dicomnode")
    add_devtools_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["devtools", "make-study", "emidec:Case_P043", "--out", str(tmp_path / "cli"),
                              "--variant", "philips-enhanced", "--transfer-syntax", "jpeg-ls",
                              "--datasets", str(datasets), "--no-description"])
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["files"] == 2 and report["transfer_syntax"] == "jpeg-ls"
    ds = pydicom.dcmread(sorted((tmp_path / "cli" / "dicom").glob("*.dcm"))[0])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4.1" and int(ds.NumberOfFrames) == 5
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.80" and ds.SeriesDescription == ""
    assert ds.pixel_array.shape == (5, 256, 256)


@pytest.mark.peers
@pytest.mark.parametrize("variant", ["ge", "philips-enhanced"])
def test_generated_files_pass_dciodvfy(datasets, tmp_path, variant):
    dciodvfy = require_peer("dciodvfy")
    study = make_study("emidec:Case_P043", tmp_path / variant, variant, datasets=datasets)
    for path in study.paths[:1] + study.paths[-1:]:
        result = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True)
        errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], errors


@pytest.mark.slow
def test_sunnybrook_reencoded_keeps_pixels(datasets, tmp_path):
    study = make_study("sunnybrook:SCD0000301", tmp_path / "rle", transfer_syntax="rle", datasets=datasets,
                       with_localizers=False)
    assert len(study.paths) == 200
    assert pydicom.dcmread(study.paths[0], stop_before_pixels=True).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Invalid value for VR UI")
        (cmr,) = load_studies([study.out_dir / "dicom"])
        volume = cmr.load_volume(cmr.preferred("cine"))
        instance = volume.frames[7][4].sop_instance_uid
        source = next(p for p in (datasets / "sunnybrook-scd" / "dicoms" / "SCD0000301").glob("*.dcm")
                      if pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID == instance)
        assert np.array_equal(volume.pixels[7, 4], pydicom.dcmread(source).pixel_array.astype(np.float32))
