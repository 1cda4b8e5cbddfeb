"""The DICOM File Format's header for a received instance: preamble, "DICM" and the File Meta Information.

PS3.10 section 7.1: a 128-byte preamble, the prefix "DICM", then group 0002 in Explicit VR Little Endian, led by
its group length. The receive path writes each instance as this header followed by the dataset bytes exactly as
received, so the header is built once per instance; pydicom's general writer (through pynetdicom's
`Event.encoded_dataset(include_meta=True)`) took about as long as the instance's fsync, so the seven elements are
encoded here directly. The content is pynetdicom's (`pynetdicom.dsutils.create_file_meta`): the tests check the
bytes are identical to pydicom's encoding.
"""
from __future__ import annotations

import struct

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

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
