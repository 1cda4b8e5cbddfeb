"""The DICOM File Format's header for a received instance: preamble, "DICM" and the File Meta Information.

PS3.10 section 7.1: a 128-byte preamble, the prefix "DICM", then group 0002 in Explicit VR Little Endian, led by
its group length. The receive path writes each instance as this header followed by the dataset bytes exactly as
received, so the header is built once per instance; pydicom's general writer (through pynetdicom's
`Event.encoded_dataset(include_meta=True)`) took about as long as the instance's fsync, so the seven elements are
encoded here directly. The content is pynetdicom's (`pynetdicom.dsutils.create_file_meta`): the tests check the
bytes are identical to pydicom's encoding.

A file holding a data set without that header (`read_bare_dataset`: older PACS exports, `dcmconv -F`) is read with the
transfer syntax inferred and given File Meta, so that `dicomnode process` reads it as a Part 10 copy.
"""
from __future__ import annotations

import struct

import pydicom
from pydicom.dataset import FileMetaDataset
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

from dicomnode.uids import check_uid

PREAMBLE_AND_PREFIX = b"\x00" * 128 + b"DICM"


def _short(group_element: int, vr: bytes, value: bytes) -> bytes:
    """One Explicit VR Little Endian element with a 2-byte length (PS3.5 7.1.2, e.g. UL, UI, SH)."""
    return struct.pack("<HH", 0x0002, group_element) + vr + struct.pack("<H", len(value)) + value


def _uid(value: str) -> bytes:
    """A UI value, padded to an even length with one NUL (PS3.5 6.2, 9.1)."""
    raw = str(value).encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _text(value: str) -> bytes:
    """An SH / AE value, padded to an even length with one space (PS3.5 6.2)."""
    raw = str(value).encode("ascii")
    return raw + b" " if len(raw) % 2 else raw


_VERSION = struct.pack("<HH", 0x0002, 0x0001) + b"OB\x00\x00" + struct.pack("<I", 2) + b"\x00\x01"
_IMPLEMENTATION = (_short(0x0012, b"UI", _uid(PYNETDICOM_IMPLEMENTATION_UID))
                   + _short(0x0013, b"SH", _text(PYNETDICOM_IMPLEMENTATION_VERSION)))


def file_header(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str) -> bytes:
    """Preamble, prefix and File Meta Information (PS3.10 7.1) for a dataset received by C-STORE.

    Media Storage SOP Class / Instance UID come from the request's Affected SOP Class / Instance UID, the Transfer
    Syntax UID from the presentation context the dataset was sent with (PS3.10 7.1, as pynetdicom's
    `Event.file_meta`). Raises UnicodeEncodeError on a UID that is not ASCII (the receive path checks UIDs first).
    """
    body = (_VERSION
            + _short(0x0002, b"UI", _uid(sop_class_uid))
            + _short(0x0003, b"UI", _uid(sop_instance_uid))
            + _short(0x0010, b"UI", _uid(transfer_syntax_uid))
            + _IMPLEMENTATION)
    group_length = struct.pack("<HH", 0x0002, 0x0000) + b"UL" + struct.pack("<HI", 4, len(body))
    return PREAMBLE_AND_PREFIX + group_length + body


#: the transfer syntax of a data set stored without File Meta, from how pydicom read it (is implicit VR, is little
#: endian); Implicit VR Big Endian does not exist (PS3.5 A.1)
BARE_SYNTAXES = {(True, True): "1.2.840.10008.1.2", (False, True): "1.2.840.10008.1.2.1",
                 (False, False): "1.2.840.10008.1.2.2"}
#: the groups a bare data set may begin with: File Meta written without preamble (0002), Identifying (0008)
BARE_FIRST_GROUPS = (0x0002, 0x0008)


class NotBareDataset(ValueError):
    """A file that is neither Part 10 nor a readable data set without File Meta; the message says why."""


def read_bare_dataset(path) -> pydicom.Dataset:
    """A data set stored without File Meta Information (no preamble / 'DICM', PS3.10 7.1: older PACS exports,
    `dcmconv -F`), with its File Meta filled in so that it can be written as a Part 10 file. The transfer syntax is
    inferred as pydicom (and dcmtk) infer it from the first element: Implicit VR Little Endian, Explicit VR Little
    or Big Endian; a TransferSyntaxUID of group 0002 written without the preamble is kept.

    Raises NotBareDataset (the reason) when the file does not begin with a group 0002 / 0008 element, pydicom cannot
    read it, it lacks a valid SOPClassUID / SOPInstanceUID, or its Pixel Data is encapsulated (compressed) without a
    stated transfer syntax; OSError when it cannot be read.
    """
    with open(path, "rb") as file:
        head = file.read(2)
    if len(head) < 2 or not ({struct.unpack("<H", head)[0], struct.unpack(">H", head)[0]} & set(BARE_FIRST_GROUPS)):
        raise NotBareDataset("no DICOM File Meta Information (no 'DICM' prefix after the 128-byte preamble, PS3.10 "
                             "7.1) and no data set without it (its first element is no group 0002 or 0008 tag)")
    try:
        dataset = pydicom.dcmread(path, force=True)
        sop_class, sop_instance = dataset.get("SOPClassUID"), dataset.get("SOPInstanceUID")
        check_uid(sop_class, "SOP Class UID")
        check_uid(sop_instance, "SOP Instance UID")
    except Exception as error:  # noqa: BLE001 - anything unreadable (InvalidUID included) is no data set
        raise NotBareDataset(f"no DICOM File Meta Information (no 'DICM' prefix after the 128-byte preamble, PS3.10 "
                             f"7.1), and as a data set without it: {error}") from error
    meta = dataset.file_meta if getattr(dataset, "file_meta", None) is not None else FileMetaDataset()
    syntax = str(meta.get("TransferSyntaxUID") or "") or BARE_SYNTAXES.get(tuple(dataset.original_encoding))
    if not syntax:
        raise NotBareDataset("a data set without File Meta in Implicit VR Big Endian, which DICOM does not define")
    if "PixelData" in dataset and dataset["PixelData"].is_undefined_length and syntax in BARE_SYNTAXES.values():
        raise NotBareDataset("a data set without File Meta whose Pixel Data is encapsulated (compressed): its "
                             "transfer syntax cannot be known; export it with File Meta (Part 10)")
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = PYNETDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = PYNETDICOM_IMPLEMENTATION_VERSION
    dataset.file_meta = meta
    return dataset
