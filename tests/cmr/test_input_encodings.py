"""How the input images were encoded, on real studies (make-study + pydicom / dcmtk, as a PACS or a converter writes
them): lossy compression and values above BitsStored become stack warnings, a cine reduced to ED/ES without
TriggerTime is declined naming what is missing, and data sets without File Meta are read (break40a F2-F5)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000, ImplicitVRLittleEndian

from dicomnode.analysis.phase_text import other_views_text
from dicomnode.cmr import load_studies
from dicomnode.cmr.source_encoding import high_bit_pixels, lossy_compression
from dicomnode.devtools.make_study import make_study
from dicomnode.net.filemeta import NotBareDataset, read_bare_dataset
from dicomnode.process import part10_copies

LOSSY = "measured on lossy-compressed images"
ABOVE = "stored values above BitsStored"


@pytest.fixture(scope="module")
def lge(datasets, tmp_path_factory):
    """The MyoPS LGE study (3 slices, real 12-bit magnitude values), Explicit VR Little Endian."""
    return make_study("myops:Case3002", tmp_path_factory.mktemp("lge"), "ge", datasets=datasets)


@pytest.fixture(scope="module")
def cine(datasets, tmp_path_factory):
    """The ACDC ED/ES cine (10 slices x 2 phases, CardiacNumberOfImages 30, ImageType ...\\CINE)."""
    return make_study("acdc:patient001", tmp_path_factory.mktemp("cine"), "ge", datasets=datasets)


def _rewrite(study, out: Path, change) -> Path:
    """A copy of the study's files with `change(dataset)` applied to each."""
    out.mkdir(parents=True)
    for path in study.paths:
        dataset = pydicom.dcmread(path)
        change(dataset)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset.save_as(out / Path(path).name)
    return out


def _warnings(folder: Path, sequence: str = "lge") -> list[str]:
    (study,) = load_studies([folder])
    return study.load_volume(study.preferred(sequence, "sax")).warnings


def _j2k_lossy(dataset):
    dataset.compress(JPEG2000, j2k_cr=[20], use_mct=False)
    dataset.LossyImageCompression = "01"
    dataset.LossyImageCompressionRatio = 20
    dataset.LossyImageCompressionMethod = "ISO_15444_1"


def test_lossy_jpeg2000_input_is_a_stack_warning_with_ratio_and_method(lge, tmp_path):
    folder = _rewrite(lge, tmp_path / "j2k20", _j2k_lossy)
    notes = [w for w in _warnings(folder) if w.startswith(LOSSY)]
    assert len(notes) == 1
    assert "ratio 20:1" in notes[0] and "method ISO_15444_1" in notes[0] and "3 of 3 instance(s)" in notes[0]
    assert _warnings(lge.out_dir / "dicom") == []  # the lossless original says nothing


def test_decompressed_lossy_images_keep_the_flag(lge, tmp_path):
    """LossyImageCompression 01 stays once an image was lossy-compressed (PS3.3 C.7.6.1.1.5), uncompressed since."""
    def flag(dataset):
        dataset.LossyImageCompression = "01"
        dataset.LossyImageCompressionRatio = [10, 2.5]
        dataset.LossyImageCompressionMethod = ["ISO_10918_1", "ISO_15444_1"]
    note = next(w for w in _warnings(_rewrite(lge, tmp_path / "flagged", flag)) if w.startswith(LOSSY))
    assert "ratio 10:1 then 2.5:1" in note and "ISO_10918_1 then ISO_15444_1" in note


def test_lossy_transfer_syntax_without_the_flag_is_lossy_and_lossless_j2k_is_not(lge, tmp_path, datasets):
    baseline = pydicom.dcmread(lge.paths[0])
    baseline.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.51"  # JPEG Extended (12-bit): lossy by definition
    assert lossy_compression(baseline) is not None
    lossless = make_study("myops:Case3002", tmp_path / "j2k", "ge", "j2k", datasets=datasets)
    assert lossy_compression(pydicom.dcmread(lossless.paths[0])) is None
    assert not [w for w in _warnings(lossless.out_dir / "dicom") if w.startswith(LOSSY)]


@pytest.mark.skipif(shutil.which("dcmcjpeg") is None, reason="dcmtk dcmcjpeg not installed")
def test_dcmtk_lossy_jpeg_is_flagged(lge, tmp_path):
    twelve = _rewrite(lge, tmp_path / "bits12", _times(1, 12))  # the MyoPS values fit 12 bits
    out = tmp_path / "jpeg"
    out.mkdir()
    for path in twelve.iterdir():  # JPEG Extended (lossy, 12 bit): dcmcjpeg writes LossyImageCompression 01
        subprocess.run(["dcmcjpeg", "+ee", str(path), str(out / path.name)], check=True, capture_output=True)
    assert pydicom.dcmread(next(out.iterdir())).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.51"
    note = next(w for w in _warnings(out) if w.startswith(LOSSY))
    assert "ISO_10918_1" in note and "JPEG Extended" in note


def _times(k: int, bits: int):
    def change(dataset):
        values = dataset.pixel_array.astype(np.uint16) * k
        dataset.PixelData = values.tobytes()
        dataset.BitsStored, dataset.HighBit = bits, bits - 1
    return change


def test_values_above_bits_stored_are_a_stack_warning(lge, tmp_path):
    folder = _rewrite(lge, tmp_path / "x4", _times(4, 12))
    values = (pydicom.dcmread(lge.paths[0]).pixel_array.astype(np.int64) * 4)
    expected = int(np.count_nonzero(values > 4095))
    assert expected > 0
    assert high_bit_pixels(pydicom.dcmread(folder / Path(lge.paths[0]).name)) == expected
    note = next(w for w in _warnings(folder) if w.startswith(ABOVE))
    assert "BitsStored 12" in note and "3 instance(s)" in note and "HighBit 11" in note
    assert not [w for w in _warnings(_rewrite(lge, tmp_path / "x2_16", _times(2, 16))) if w.startswith(ABOVE)]


def test_overlay_plane_and_sign_extension_are_not_values_above_bits_stored(lge, tmp_path):
    def overlay(dataset):
        values = dataset.pixel_array.astype(np.uint16)
        values[:40] |= 1 << 12  # a retired overlay plane in bit 12 (old GE / Siemens)
        dataset.PixelData = values.tobytes()
        dataset.BitsStored, dataset.HighBit = 12, 11
        dataset.add_new((0x6000, 0x0100), "US", 16)
        dataset.add_new((0x6000, 0x0102), "US", 12)

    def signed(dataset):
        values = dataset.pixel_array.astype(np.int16) - 2048  # sign-extended 12-bit values in 16
        dataset.PixelData = values.tobytes()
        dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 12, 11, 1
        dataset.RescaleIntercept, dataset.RescaleSlope = 2048, 1
    for name, change in (("overlay", overlay), ("signed", signed)):
        assert not [w for w in _warnings(_rewrite(lge, tmp_path / name, change)) if w.startswith(ABOVE)], name


def test_ed_es_cine_without_trigger_time_is_declined_naming_it(cine, tmp_path):
    def untimed(dataset):
        for keyword in ("TriggerTime", "NominalCardiacTriggerDelayTime"):
            if keyword in dataset:
                delattr(dataset, keyword)
    (study,) = load_studies([_rewrite(cine, tmp_path / "untimed", untimed)])
    assert study.preferred("cine", "sax") is None
    text = other_views_text(study.series, "cine")
    series = study.series[0]
    assert f"series {series.series_number}" in text and "TriggerTime (0018,1060)" in text
    assert "ImageType CINE" in text and "CardiacNumberOfImages=30" in text
    (timed,) = load_studies([cine.out_dir / "dicom"])
    assert timed.preferred("cine", "sax") is not None and other_views_text(timed.series, "cine") == ""


def _bare_copies(study, out: Path) -> Path:
    """The study's files as data sets without File Meta (dcmconv -F +ti, as older PACS exports write them)."""
    out.mkdir(parents=True)
    for path in study.paths:
        target = out / Path(path).name
        if shutil.which("dcmconv"):
            subprocess.run(["dcmconv", "-F", "+ti", str(path), str(target)], check=True, capture_output=True)
        else:
            dataset = pydicom.dcmread(path)
            dataset.file_meta = pydicom.dataset.FileMetaDataset()
            dataset.save_as(target, implicit_vr=True, little_endian=True, enforce_file_format=False)
    return out


def test_data_sets_without_file_meta_are_read_as_part10_copies(lge, tmp_path):
    bare = _bare_copies(lge, tmp_path / "bare")
    (tmp_path / "bare" / "notes.txt").write_text("exported from the old PACS\n")
    (tmp_path / "bare" / "zeros.dcm").write_bytes(b"\x08\x00" + bytes(400))  # a group 0008 start, no data set
    files = sorted(bare.iterdir())
    assert all(open(f, "rb").read(132)[128:] != b"DICM" for f in files)
    staging = tmp_path / "staging"
    staging.mkdir()
    copies = part10_copies(files, staging)
    staged = [c for c in copies if c.parent == staging]
    assert len(staged) == len(lge.paths)
    for copy in staged:
        assert open(copy, "rb").read(132)[128:] == b"DICM"
        assert pydicom.dcmread(copy).file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    unreadable: list[dict] = []
    (study,) = load_studies(copies, unreadable_files=unreadable)
    assert sorted(Path(e["path"]).name for e in unreadable) == ["notes.txt", "zeros.dcm"]
    assert all(e["reason"].startswith("not a DICOM file") for e in unreadable)
    (original,) = load_studies([lge.out_dir / "dicom"])
    assert np.array_equal(study.load_volume(study.preferred("lge", "sax")).pixels,
                          original.load_volume(original.preferred("lge", "sax")).pixels)


def test_a_file_that_is_no_data_set_is_refused_with_the_reason(tmp_path):
    text = tmp_path / "readme.txt"
    text.write_text("hello")
    with pytest.raises(NotBareDataset, match="no group 0002 or 0008 tag"):
        read_bare_dataset(text)


def _texts(item) -> list[str]:
    found = [str(item.TextValue)] if "TextValue" in item else []
    for child in item.get("ContentSequence") or []:
        found += _texts(child)
    return found


@pytest.mark.slow
def test_process_of_a_lossy_study_says_so_in_summary_sr_and_derived_images(lge, tmp_path):
    folder = _rewrite(lge, tmp_path / "in" / "j2k20", _j2k_lossy)
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "dicomnode.cli", "process", str(folder.parent), "--out", str(out)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    (study,) = json.loads((out / "summary.json").read_text())["studies"]
    assert any(w.startswith(LOSSY) and "ratio 20:1" in w for w in study["lge"]["stack_warnings"])
    assert LOSSY in result.stdout  # the console's stack warnings
    objects = [pydicom.dcmread(out / p) for p in study["outputs"]]
    by_class = {str(ds.SOPClassUID.name): ds for ds in objects}
    assert by_class["Segmentation Storage"].LossyImageCompression == "01"
    images = [ds for ds in objects if "Image" in ds.SOPClassUID.name]
    assert all(ds.get("LossyImageCompression") == "01" for ds in images)
    measured = [ds for ds in objects if "SR" in ds.SOPClassUID.name
                and any(t.startswith("LGE measured on") for t in _texts(ds))]  # not the text-suggestion SR
    assert measured and all(any(t.startswith(f"LGE input stack: {LOSSY}") for t in _texts(ds)) for ds in measured)
