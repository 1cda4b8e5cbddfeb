"""break45c #4: a JPEG 2000 image compressed with the irreversible 9/7 wavelet whose LossyImageCompression still says
"00" (a converter compressed it after the header was written) was measured as lossless, with no warning. The
codestream's COD marker says which wavelet was used; the lossy note names it."""
from __future__ import annotations

import copy

import numpy as np
import pytest
from pydicom.uid import JPEG2000, JPEG2000Lossless

from dicomnode.cmr.source_encoding import j2k_irreversible, lossy_compression, lossy_note
from tests.hardening.hardening_support import synthetic_mr


def _compressed(syntax, **options):
    dataset = synthetic_mr()
    pixels = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 7 % 4000).astype(np.uint16)
    dataset.compress(syntax, pixels, generate_instance_uid=False, **options)
    dataset.LossyImageCompression = "00"  # stale: written before the compression
    return dataset


def test_an_irreversible_codestream_is_lossy_whatever_the_flag_says():
    lossy = _compressed(JPEG2000, j2k_cr=[20])
    assert j2k_irreversible(lossy)
    found = lossy_compression(lossy)
    assert found is not None and "irreversible 9/7 wavelet" in found.method and "00" in found.method
    assert found.syntax == "JPEG 2000 Image Compression"
    note = lossy_note([found], 1)
    assert note.startswith("measured on lossy-compressed images") and "irreversible 9/7" in note


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, JPEG2000])
def test_a_reversible_codestream_with_its_00_flag_is_lossless(syntax):
    lossless = _compressed(JPEG2000Lossless)  # the reversible 5/3 wavelet, every value kept
    lossless.file_meta.TransferSyntaxUID = syntax  # a reversible stream is valid under .91 too
    assert not j2k_irreversible(lossless)
    assert lossy_compression(lossless) is None


def test_without_pixel_data_or_codestream_nothing_is_claimed():
    header = copy.deepcopy(_compressed(JPEG2000, j2k_cr=[20]))
    del header.PixelData
    assert not j2k_irreversible(header)
    broken = _compressed(JPEG2000, j2k_cr=[20])
    broken.PixelData = b"\x00" * 64
    assert not j2k_irreversible(broken)


def test_a_header_read_without_pixel_data_is_judged_from_its_file(tmp_path):
    """review46 #7: grouping reads headers with stop_before_pixels, and the SEG's LossyImageCompression and the
    notes judged from those headers missed a stale "00" that only the codestream contradicts."""
    import pydicom

    lossy = _compressed(JPEG2000, j2k_cr=[20])
    lossless = _compressed(JPEG2000Lossless)
    for name, dataset in (("lossy.dcm", lossy), ("lossless.dcm", lossless)):
        dataset.save_as(tmp_path / name, enforce_file_format=True)
    header = pydicom.dcmread(tmp_path / "lossy.dcm", stop_before_pixels=True)
    assert "PixelData" not in header
    found = lossy_compression(header)
    assert found is not None and "irreversible 9/7 wavelet" in found.method
    assert lossy_compression(pydicom.dcmread(tmp_path / "lossless.dcm", stop_before_pixels=True)) is None
