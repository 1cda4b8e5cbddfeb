"""How the input images were encoded, where it bears on the numbers: lossy compression (PS3.3 C.7.6.1.1.5) and stored
values that use bits above HighBit (PS3.5 8.1.1). Each check gives a stack warning (summary `stack_warnings`, SR,
PDF, console), never a refusal.

Bits above HighBit: PS3.5 8.1.1 says a receiver "may not assume anything about the contents of unused bits", so the
values are read masked to BitsStored (pydicom does so since 3.0, pydicom PR #2066; vtk-dicom, dcmtk alike). Real data
puts two things there: retired overlay planes (60xx,0102 OverlayBitPosition above HighBit, old GE / Siemens) and sign
extension of signed values, both expected and not warned about; anything else is a converter that rescaled the values
and kept the scanner's BitsStored, so the brightest pixels were cut to their low bits (dcm2niix warns alike).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.uid import UID

#: transfer syntaxes whose codec always discards information (JPEG Baseline / Extended, MPEG / HEVC video)
LOSSY_ONLY = frozenset({
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.101",
    "1.2.840.10008.1.2.4.102", "1.2.840.10008.1.2.4.103", "1.2.840.10008.1.2.4.104", "1.2.840.10008.1.2.4.105",
    "1.2.840.10008.1.2.4.106", "1.2.840.10008.1.2.4.107", "1.2.840.10008.1.2.4.108"})
#: transfer syntaxes whose codec may be lossy or lossless (JPEG-LS near-lossless, JPEG 2000 / Part 2, HTJ2K): lossy
#: unless LossyImageCompression says "00"
LOSSY_CAPABLE = frozenset({"1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.93",
                           "1.2.840.10008.1.2.4.203"})
#: JPEG 2000 and HTJ2K transfer syntaxes (lossless-only ones included): their codestream's COD marker says whether
#: the irreversible 9/7 wavelet (always lossy) was used, whatever LossyImageCompression says
JPEG2000_FAMILY = frozenset({"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.92",
                             "1.2.840.10008.1.2.4.93", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",
                             "1.2.840.10008.1.2.4.203"})
#: ISO/IEC 15444-1 A.6.1: the transformation byte of the COD marker's SPcod, 0 = 9-7 irreversible filter
IRREVERSIBLE_9_7 = 0
#: how far into Pixel Data the first codestream's main header is looked for (item tags and offset table before it)
CODESTREAM_SEARCH_BYTES = 1 << 16
#: uncompressed transfer syntaxes, whose Pixel Data holds the stored values as the scanner wrote them
NATIVE = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"})


@dataclass(frozen=True)
class Lossy:
    """One instance's lossy compression: LossyImageCompressionRatio / Method (as given, '' where absent) and the
    transfer syntax's name."""

    ratio: str
    method: str
    syntax: str


def transfer_syntax(dataset) -> str:
    meta = getattr(dataset, "file_meta", None)
    return str(meta.get("TransferSyntaxUID", "") if meta is not None else "")


def _values(dataset, keyword: str) -> list[str]:
    value = dataset.get(keyword)
    if value is None or value == "":
        return []
    items = value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
    return [str(v).strip() for v in items if str(v).strip()]


def lossy_compression(dataset) -> Lossy | None:
    """The instance's lossy compression, or None: LossyImageCompression "01" (it stays "01" once an image was ever
    lossy-compressed, decompressed since or not, PS3.3 C.7.6.1.1.5), a lossy-only transfer syntax, or a lossy-capable
    one (JPEG 2000, JPEG-LS near-lossless) without LossyImageCompression "00"; and a JPEG 2000 / HTJ2K codestream
    that uses the irreversible 9/7 wavelet (j2k_irreversible) whatever the flag says (break45c #4: a stale "00"
    written before a converter compressed the images had them measured as lossless, without a warning)."""
    flag = str(dataset.get("LossyImageCompression") or "").strip()
    syntax = transfer_syntax(dataset)
    irreversible = False
    if flag != "01" and syntax not in LOSSY_ONLY and not (syntax in LOSSY_CAPABLE and flag != "00"):
        irreversible = syntax in JPEG2000_FAMILY and j2k_irreversible(dataset)
        if not irreversible:
            return None
    ratios = [f"{float(r):g}:1" if _number(r) else r for r in _values(dataset, "LossyImageCompressionRatio")]
    name = UID(syntax).name if syntax else ""
    method = " then ".join(_values(dataset, "LossyImageCompressionMethod"))
    if irreversible:  # a stale "00" (a converter compressed after the header was written): the codestream says it
        method = (f"{method + ', ' if method else ''}irreversible 9/7 wavelet in the JPEG 2000 codestream "
                  f"(LossyImageCompression {flag or 'absent'})")
    return Lossy(" then ".join(ratios), method, name if syntax in LOSSY_ONLY | LOSSY_CAPABLE | JPEG2000_FAMILY else "")


def j2k_irreversible(dataset) -> bool:
    """Whether the first JPEG 2000 / HTJ2K codestream in the dataset's Pixel Data uses the irreversible 9/7 wavelet
    (COD marker, ISO/IEC 15444-1 A.6.1), which never keeps every value. A header read without its pixel data
    (`stop_before_pixels`, as grouping reads every instance) has the Pixel Data read from its file (`filename`), so
    the SEG and the notes built from headers judge the instance as its decode does (review46 #7). False where there
    is no pixel data to read, no codestream main header within CODESTREAM_SEARCH_BYTES, or no COD before the first
    tile (a malformed stream: the decoder says so)."""
    try:
        data = dataset.get("PixelData") if "PixelData" in dataset else _stored_pixel_data(dataset)
    except Exception:  # noqa: BLE001 - an unreadable element: nothing to read the codestream from
        return False
    if not isinstance(data, (bytes, bytearray)):
        return False
    start = bytes(data[:CODESTREAM_SEARCH_BYTES]).find(b"\xff\x4f\xff\x51")  # SOC, then SIZ
    if start < 0:
        return False
    at = start + 2
    while at + 4 <= len(data):
        marker, length = int.from_bytes(data[at:at + 2], "big"), int.from_bytes(data[at + 2:at + 4], "big")
        if marker == 0xFF52:  # COD: Lcod, Scod, SGcod (4 bytes), SPcod: levels, xcb, ycb, style, transformation
            return at + 13 < len(data) and data[at + 13] == IRREVERSIBLE_9_7
        if marker in (0xFF90, 0xFFD9) or marker < 0xFF00 or length < 2:  # first tile, end, or not a marker
            return False
        at += 2 + length
    return False


def _stored_pixel_data(dataset):
    """Pixel Data of the file a header dataset was read from (its `filename`), or None when it has none."""
    path = getattr(dataset, "filename", None)
    if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
        return None
    return pydicom.dcmread(path, specific_tags=["PixelData"]).get("PixelData")


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def lossy_note(found: list[Lossy], instances: int) -> str | None:
    """The stack warning for the lossy-compressed instances (`found`, one per such instance) of the `instances`
    measured, or None when there is none."""
    if not found:
        return None
    methods = sorted({f.method for f in found if f.method})
    syntaxes = sorted({f.syntax for f in found if f.syntax})
    detail = [f"ratio {ratio_summary([f.ratio for f in found])}"]
    detail.append(f"method {', '.join(methods)}" if methods else "method not stated")
    if syntaxes:
        detail.append(f"transfer syntax {', '.join(syntaxes)}")
    return (f"measured on lossy-compressed images ({'; '.join(detail)}; LossyImageCompression 01 in {len(found)} of "
            f"{instances} instance(s)): the measurements are validated on lossless images only, compression "
            "artefacts may move the contours and the numbers; ask for the lossless originals")


#: at most this many distinct ratios are named one by one; more (dcmtk writes each image's own) as their range
RATIOS_NAMED = 3


def ratio_summary(ratios: list[str]) -> str:
    """The instances' LossyImageCompressionRatio values (Lossy.ratio: '20:1', '10:1 then 2.5:1' or '' where not stated)
    in a few words: up to RATIOS_NAMED distinct ones named, in numeric order; more as the range of every value stated
    ('5.04-6.25:1, 187 distinct values'); 'not stated' where none is."""
    distinct = {r for r in ratios if r}
    if not distinct:
        return "not stated"
    numbers = [float(part.split(":")[0]) for r in distinct for part in r.split(" then ")
               if _number(part.split(":")[0])]
    if len(distinct) <= RATIOS_NAMED or not numbers:
        named = sorted(distinct, key=lambda r: (not _number(r.split(":")[0]), _first_number(r), r))
        return ", ".join(named[:RATIOS_NAMED]) + (f" and {len(named) - RATIOS_NAMED} more" if len(named) > RATIOS_NAMED
                                                  else "")
    return f"{min(numbers):.3g}-{max(numbers):.3g}:1, {len(distinct)} distinct values"


def _first_number(ratio: str) -> float:
    head = ratio.split(":")[0]
    return float(head) if _number(head) else 0.0


def _overlay_bits(dataset) -> int:
    """The mask of the bits that hold overlay planes inside Pixel Data (retired: 60xx,0102 OverlayBitPosition and no
    60xx,3000 OverlayData; OverlayBitsAllocated should then equal BitsAllocated, old files also say 1), 0 when there
    is none."""
    mask = 0
    for group in range(0x6000, 0x6020, 2):
        position = dataset.get((group, 0x0102))
        if position is None or (group, 0x3000) in dataset:
            continue
        try:
            mask |= 1 << int(position.value)
        except (TypeError, ValueError):
            continue
    return mask


def high_bit_pixels(dataset) -> int:
    """How many stored values of an uncompressed image use bits above HighBit (PS3.5 8.1.1) that are neither an
    overlay plane in Pixel Data nor the sign extension of a signed value (all zero or all copies of the sign bit);
    0 for compressed data (its codec holds
    BitsStored bits only), BitsStored equal to BitsAllocated, or no Pixel Data."""
    allocated = int(dataset.get("BitsAllocated") or 0)
    stored = int(dataset.get("BitsStored") or allocated)
    high_bit = int(dataset.get("HighBit") if dataset.get("HighBit") is not None else stored - 1)
    if allocated not in (8, 16, 32) or stored >= allocated or transfer_syntax(dataset) not in NATIVE \
            or "PixelData" not in dataset or high_bit + 1 != stored:
        return 0
    big = transfer_syntax(dataset) == "1.2.840.10008.1.2.2"
    native = np.dtype(f"u{allocated // 8}")
    data = dataset.PixelData
    raw = np.frombuffer(data, dtype=native.newbyteorder(">" if big else "<"), count=len(data) // native.itemsize)
    overlay = native.type(_overlay_bits(dataset) & ((1 << allocated) - 1))
    # the bits above HighBit, overlay planes cleared, as a number from 0 to 2 ** (BitsAllocated - BitsStored) - 1
    above = (raw.astype(native) & ~overlay) >> native.type(stored)
    if int(dataset.get("PixelRepresentation") or 0):
        negative = ((raw >> native.type(stored - 1)) & native.type(1)).astype(bool)
        filled = native.type((1 << (allocated - stored)) - 1)
        return int(np.count_nonzero((above != 0) & ~(negative & (above == filled))))
    return int(np.count_nonzero(above))


def high_bits_note(found: dict[str, int], bits_stored: list[int]) -> str | None:
    """The stack warning for instances ({SOPInstanceUID: pixels} of `high_bit_pixels` > 0) whose stored values use
    bits above HighBit; `bits_stored` their BitsStored values. None when `found` is empty."""
    if not found:
        return None
    stored = min(bits_stored)
    named = ", ".join(list(found)[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
    return (f"stored values above BitsStored {stored}: {sum(found.values())} pixel(s) in {len(found)} instance(s) "
            f"({named}) set bits above HighBit {stored - 1} (no overlay plane, no sign extension); read masked to "
            f"{stored} bits as PS3.5 8.1.1 prescribes, so those pixels (the brightest ones) lost their high bits: "
            "if the scanner or a converter meant the full values, BitsStored / HighBit are wrong, fix them at the "
            "source and send the series again")
