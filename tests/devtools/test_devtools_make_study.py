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


# --- MyoPS 2020 (break4 finding 12) and --seed for Sunnybrook (break3 L7) ---------------------------------------

@pytest.fixture(scope="module")
def myops_3002(datasets, tmp_path_factory):
    if not (datasets / "myops2020-lge" / "Case3002").is_dir():
        pytest.skip("myops2020-lge/Case3002 not in the shared datasets")
    return make_study("myops:Case3002", tmp_path_factory.mktemp("myops") / "study", "ge", datasets=datasets)


def test_a_myops_study_is_the_real_12_bit_lge_in_real_geometry(myops_3002, datasets):
    import nibabel

    headers = [pydicom.dcmread(p) for p in myops_3002.paths]
    assert len(headers) == 3 and len({ds.SeriesInstanceUID for ds in headers}) == 1
    for ds in headers:  # magnitude only: MyoPS has no phase-sensitive image, and none is invented
        assert "M" in ds.ImageType and "PSIR" not in ds.ImageType
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx([0.7421875, 0.7421875])
        assert float(ds.SpacingBetweenSlices) == pytest.approx(23.0, abs=1e-3)
        assert "MyoPS 2020 Case3002" in ds.ImageComments and "magnitude only" in ds.DerivationDescription
    assert myops_3002.primary_role == "magnitude" and myops_3002.secondary == {}
    # the stored pixels are the NIfTI's scanner intensities (12-bit range), slices base first
    source = np.asarray(nibabel.load(datasets / "myops2020-lge" / "Case3002" / "Case3002_LGE.nii.gz").dataobj)
    by_uid = {str(ds.SOPInstanceUID): ds for ds in headers}
    first = by_uid[myops_3002.frames[0][0].sop_instance_uid]
    assert np.array_equal(first.pixel_array, source[:, :, -1].T) and first.pixel_array.max() > 255
    licence = (myops_3002.out_dir / "LICENSE.txt").read_text()
    assert "MyoPS 2020" in licence and "research / non-commercial use only" in licence


def test_a_myops_study_is_a_normal_heart_in_the_scanners_geometry(myops_3002, datasets):
    """break46a #1: MyoPS studies were stamped with the synthetic SAX orientation, which made every heart a mirror
    image (RV on the patient's left): the node said dextrocardia and assigned no AHA segment. They now carry the
    scanner's orientation and slice positions from the NIfTI qform: RV on the patient's right, apex to the left."""
    import nibabel

    from dicomnode.analysis.aha import aha_summary_for_volume, basal_end_for_volume, rv_side, rv_side_offset_mm

    affine = nibabel.load(datasets / "myops2020-lge" / "Case3002" / "Case3002_LGE.nii.gz").affine
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in myops_3002.paths]
    lps = np.diag([-1.0, -1.0, 1.0])
    row_dir, col_dir = lps @ affine[:3, 0], lps @ affine[:3, 1]
    expected = np.concatenate([row_dir / np.linalg.norm(row_dir), col_dir / np.linalg.norm(col_dir)])
    for ds in headers:
        assert [float(v) for v in ds.ImageOrientationPatient] == pytest.approx(expected, abs=1e-5)
    truth = np.load(myops_3002.ground_truth_path)["labelmap"][0]
    offset = rv_side_offset_mm(truth, (0.7421875, 0.7421875), expected)
    assert rv_side(offset) == "right" and offset < -20  # -33 mm: the RV to the right of the LV
    (cmr,) = load_studies([myops_3002.out_dir / "dicom"])
    volume = cmr.load_volume(cmr.preferred("lge"))
    labels = np.stack([truth[[r.sop_instance_uid for r in myops_3002.frames[0]].index(ref.sop_instance_uid)]
                       for ref in volume.frames[0]])
    assert basal_end_for_volume(labels, volume) in ("first", "last")  # the geometry tells the basal end
    summary = aha_summary_for_volume(labels, volume)
    assert summary.get("segments") and not any("dextrocardia" in str(w) or "clockwise" in str(w)
                                               for w in summary.get("warnings", [])), summary


def test_myops_ground_truth_is_the_expert_labels_as_node_labels(myops_3002, datasets):
    from dicomnode.analysis.aha import basal_end_from_geometry

    truth = np.load(myops_3002.ground_truth_path)
    labels = truth["labelmap"]
    assert labels.shape == (1, 3, 511, 511) and truth["labelled"].all() and str(truth["primary_role"]) == "magnitude"
    assert set(np.unique(labels)) == {Label.BACKGROUND, Label.LV_BLOOD_POOL, Label.LV_MYOCARDIUM, Label.SCAR,
                                      Label.RV_BLOOD_POOL}  # edema is myocardium; MVO is not labelled apart
    scar_percent = 100 * (labels == Label.SCAR).sum() / np.isin(labels, (Label.LV_MYOCARDIUM, Label.SCAR)).sum()
    reference = {row.split(",")[0]: row.split(",") for row in
                 (datasets / "myops2020-lge" / "reference_values.csv").read_text().splitlines()}
    assert scar_percent == pytest.approx(float(reference["Case3002"][10]), abs=0.05)  # 19.8 %
    cavity = (labels[0] == Label.LV_BLOOD_POOL).sum(axis=(1, 2))
    assert cavity[0] > cavity[-1]  # MyoPS stores the apex first: written base first
    positions = np.array([[float(v) for v in pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient]
                          for p in sorted(myops_3002.paths)])
    assert basal_end_from_geometry(positions[-1] - positions[0]) == "first"
    # the node reads it as one LGE stack of the ground truth's frames (its own order is along the plane normal)
    (cmr,) = load_studies([myops_3002.out_dir / "dicom"])
    volume = cmr.load_volume(cmr.preferred("lge"))
    assert {r.sop_instance_uid for row in volume.frames for r in row} == \
        {r.sop_instance_uid for row in myops_3002.frames for r in row}


def test_myops_variants_and_refusals(datasets, tmp_path):
    if not (datasets / "myops2020-lge" / "Case3004").is_dir():
        pytest.skip("myops2020-lge/Case3004 not in the shared datasets")
    siemens = make_study("myops:Case3004", tmp_path / "siemens", "siemens", datasets=datasets)
    assert len(siemens.paths) == 6
    assert len({pydicom.dcmread(p, stop_before_pixels=True).SeriesNumber for p in siemens.paths}) == 6
    enhanced = make_study("myops:Case3004", tmp_path / "enh", "philips-enhanced", "rle", datasets=datasets)
    ds = pydicom.dcmread(enhanced.paths[0])
    assert len(enhanced.paths) == 1 and int(ds.NumberOfFrames) == 6 and ds.ComplexImageComponent == "MAGNITUDE"
    with pytest.raises(ValueError, match="mixed_frames needs PSIR and magnitude"):
        make_study("myops:Case3004", tmp_path / "mixed", "philips-enhanced", datasets=datasets, mixed_frames=True)
    with pytest.raises(ValueError, match="MyoPS case 'Case9999' not found"):
        make_study("myops:Case9999", tmp_path / "none", datasets=datasets)


def test_cli_make_study_myops(datasets, tmp_path, capsys):
    if not (datasets / "myops2020-lge" / "Case3007").is_dir():
        pytest.skip("myops2020-lge/Case3007 not in the shared datasets")
    parser = argparse.ArgumentParser(prog="dicomnode")
    add_devtools_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["devtools", "make-study", "myops:Case3007", "--out", str(tmp_path / "cli"),
                              "--datasets", str(datasets)])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["files"] == 3


def _uids(paths) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}

    def visit(dataset, element):
        if element.VR == "UI" and element.value and not str(element.value).startswith("1.2.840.10008."):
            found.setdefault(element.keyword, set()).add(str(element.value))

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Invalid value for VR UI")
        for path in paths:
            pydicom.dcmread(path, stop_before_pixels=True).walk(visit)
    return found


def test_a_seed_gives_a_sunnybrook_copy_new_uids_consistently(datasets, tmp_path):
    original = make_study("sunnybrook:SCD0000301", tmp_path / "orig", datasets=datasets, with_localizers=True)
    seeded = make_study("sunnybrook:SCD0000301", tmp_path / "seed7", datasets=datasets, with_localizers=True, seed=7)
    before, after = _uids(original.paths), _uids(seeded.paths)
    assert seeded.study_instance_uid != original.study_instance_uid
    assert after["StudyInstanceUID"] == {seeded.study_instance_uid}
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
        assert len(after[keyword]) == len(before[keyword]) and not after[keyword] & before[keyword], keyword
    # nothing of the original's left anywhere (references included), and the new UIDs are valid
    assert not set().union(*after.values()) & set().union(*before.values())
    assert all(pydicom.uid.UID(uid).is_valid for uid in set().union(*after.values()))
    for path in seeded.paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    # the ground truth names the new instances, and the pixels are the original's
    truth = np.load(seeded.ground_truth_path)
    assert set(truth["sop_instance_uids"].ravel()) <= after["SOPInstanceUID"]
    assert np.array_equal(seeded.labelmap, original.labelmap)
    assert np.array_equal(pydicom.dcmread(seeded.paths[0]).pixel_array, pydicom.dcmread(original.paths[0]).pixel_array)
    # the same seed gives the same study again; another seed another
    again = make_study("sunnybrook:SCD0000301", tmp_path / "again", datasets=datasets, with_localizers=False, seed=7)
    other = make_study("sunnybrook:SCD0000301", tmp_path / "seed8", datasets=datasets, with_localizers=False, seed=8)
    assert again.study_instance_uid == seeded.study_instance_uid != other.study_instance_uid


def test_cli_seed_default_and_help(datasets, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="dicomnode")
    add_devtools_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["devtools", "make-study", "emidec:Case_P043", "--out", str(tmp_path / "x")])
    assert args.seed is None
    make = parser.parse_args(["devtools", "make-study", "x:y", "--out", "o", "--seed", "3"])
    assert make.seed == 3
    with pytest.raises(SystemExit):
        parser.parse_args(["devtools", "make-study", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "myops:Case3002" in text and "sunnybrook: its original UIDs" in text
    # seeds 0 and None give an EMIDEC study the same UIDs (a seed of 0 was the default before)
    assert make_study("emidec:Case_P043", tmp_path / "a", datasets=datasets).study_instance_uid == \
        make_study("emidec:Case_P043", tmp_path / "b", datasets=datasets, seed=0).study_instance_uid
