"""The receive path's File Format header (dicomnode.net.filemeta) against pydicom's encoder, byte for byte."""
from __future__ import annotations

from io import BytesIO

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless, MRImageStorage
from pynetdicom.dsutils import create_file_meta, encode, encode_file_meta

from dicomnode.net.filemeta import PREAMBLE_AND_PREFIX, file_header
from tests.hardening.hardening_support import synthetic_mr


@pytest.mark.parametrize("sop_instance", ["1.2.3", "1.2.34", "2.25.123456789012345678901234567890123456",
                                          "1.2.826.0.1.3680043.8.498.12345678901234567890123456789012345678901"])
@pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless])
def test_header_is_pydicoms_encoding(sop_instance, transfer_syntax):
    expected = PREAMBLE_AND_PREFIX + encode_file_meta(create_file_meta(
        sop_class_uid=MRImageStorage, sop_instance_uid=sop_instance, transfer_syntax=transfer_syntax))
    assert file_header(MRImageStorage, sop_instance, transfer_syntax) == expected


def test_header_and_received_bytes_read_back_as_the_instance():
    dataset = synthetic_mr(size=16)
    stream = encode(dataset, is_implicit_vr=False, is_little_endian=True)  # a C-STORE's dataset bytes
    read = dcmread(BytesIO(file_header(dataset.SOPClassUID, dataset.SOPInstanceUID, ExplicitVRLittleEndian) + stream))
    assert read.file_meta.MediaStorageSOPInstanceUID == dataset.SOPInstanceUID
    assert read.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert read.SOPInstanceUID == dataset.SOPInstanceUID
    assert read.pixel_array.shape == (16, 16)
