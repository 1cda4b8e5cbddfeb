"""How large a Deflated Explicit VR Little Endian data set (PS3.5 A.5) is once inflated, found with bounded memory.

pynetdicom (`event.dataset`) and pydicom (`dcmread`) inflate such a data set with one `zlib.decompress` of the whole
stream: a few MB received can inflate to gigabytes (a deflate bomb: one 32-bit Pixel Data length of zero bytes
deflates about 1000:1). The receive path (net.scp.StorageSCP) and the analysis's header read (cmr.grouping
.read_header) ask `inflates_over` / `file_inflates_over` first and refuse the instance without parsing it when it
inflates past node.max_instance_mb.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
#: most bytes inflated (and read from a file) at a time
CHUNK_BYTES = 1024 * 1024
#: explicit VRs whose length is 4 bytes after 2 reserved bytes (PS3.5 7.1.2)
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


def inflates_over(deflated, limit: int) -> int | None:
    """Whether the raw deflate stream `deflated` (bytes, bytearray or memoryview: a Deflated data set as received,
    without File Meta) inflates to more than `limit` bytes (> 0).

    Returns None when it inflates to at most `limit` bytes, or stops being a valid deflate stream before that (the
    parser that inflates it next says why, having inflated no more than `limit`); else the number of bytes
    inflated when the count passed `limit` (just over it: the rest is not inflated). Holds at most CHUNK_BYTES of
    inflated data at a time."""
    view = memoryview(deflated).cast("B")
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    for start in range(0, len(view), CHUNK_BYTES):
        total = _inflate_piece(inflater, view[start:start + CHUNK_BYTES], total, limit)
        if total is None:
            return None
        if total > limit:
            return total
        if inflater.eof:
            break
    return None


def file_inflates_over(path: Path | str, limit: int) -> int | None:
    """inflates_over for a DICOM file (PS3.10: preamble, 'DICM', File Meta; or the File Meta alone) whose
    TransferSyntaxUID (0002,0010) is
    Deflated Explicit VR Little Endian: the data set after the File Meta is inflated in CHUNK_BYTES pieces read
    from the file. None for any other file (another transfer syntax, no File Meta, File Meta this reader cannot
    follow: pydicom reads those as they are) and where it inflates to at most `limit` bytes. Raises OSError when
    the file cannot be read."""
    with open(path, "rb") as file:
        if _deflated_data_set_offset(file) is None:
            return None
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        total = 0
        while not inflater.eof:
            piece = file.read(CHUNK_BYTES)
            if not piece:
                return None
            total = _inflate_piece(inflater, piece, total, limit)
            if total is None:
                return None
            if total > limit:
                return total
    return None


def _inflate_piece(inflater, data, total: int, limit: int) -> int | None:
    """Feed `data` to `inflater`, CHUNK_BYTES of output at a time; the new total, past `limit` at the latest
    chunk that crossed it, or None when the stream is not valid deflate data."""
    try:
        while True:
            out = inflater.decompress(data, CHUNK_BYTES)
            total += len(out)
            if total > limit:
                return total
            data = inflater.unconsumed_tail
            if not data and len(out) < CHUNK_BYTES:
                return total
    except zlib.error:
        return None


def _deflated_data_set_offset(file) -> int | None:
    """Leave `file` at the start of its data set and return that offset when its File Meta names the Deflated
    transfer syntax; None otherwise. File Meta without the preamble and 'DICM' (pydicom reads it so with force=True)
    counts too."""
    if file.read(132)[128:] != b"DICM":
        file.seek(0)
    syntax = None
    while True:
        head = file.read(8)
        if len(head) < 8 or struct.unpack("<H", head[:2])[0] != 0x0002:
            break
        element, vr = struct.unpack("<H", head[2:4])[0], head[4:6]
        if vr in _LONG_VRS:
            extra = file.read(4)
            if len(extra) < 4:
                return None
            length = struct.unpack("<I", extra)[0]
        else:
            length = struct.unpack("<H", head[6:8])[0]
        value = file.read(length)
        if len(value) < length:
            return None
        if element == 0x0010:
            syntax = value.decode("ascii", "replace").strip(" \0")
    file.seek(-len(head), 1)
    return file.tell() if syntax == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN else None


def inflated_prefix(deflated, size: int) -> bytes:
    """The first `size` bytes (at most) the raw deflate stream `deflated` inflates to, the rest not inflated; as far
    as it goes where the stream is not valid deflate data."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        return inflater.decompress(memoryview(deflated).cast("B"), size)
    except zlib.error:
        return b""
