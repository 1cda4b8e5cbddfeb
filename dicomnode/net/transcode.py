"""Re-encoding a dataset in Explicit VR Little Endian with native (uncompressed) pixel data.

Every object the node creates is written in Explicit VR Little Endian (1.2.840.10008.1.2.1), the transfer syntax
every Storage SCP must accept (PS3.5 10.1, PS3.4 B.4.1 accepts Implicit VR Little Endian as the default; the node's
SCU offers both in one presentation context, and pynetdicom converts between them). A derived image copies a
received one, which may be in any syntax the node accepts (JPEG, JPEG-LS, JPEG 2000, RLE, Deflated, the retired
Explicit VR Big Endian): a PACS that accepts only the uncompressed little endian syntaxes (DCMTK's storescp by
default, many archives) would refuse such a copy for good. A derived image is a new object, so it may be encoded
in another transfer syntax than its source (PS3.5 8.2, 10): its pixel data is decoded here.

- Encapsulated pixel data (PS3.5 A.4) is decoded by pydicom's decoders (the same that read the images for the
  analysis): values as the decoder gives them, YBR colour converted to RGB (Photometric Interpretation updated).
  A source in a transfer syntax that is lossy only (JPEG Baseline / Extended, JPEG-LS Near-Lossless) makes the
  copy Lossy Image Compression 01 with its method (PS3.3 C.7.6.1.1.5: once lossy, always flagged) where the source
  header did not say so.
- Explicit VR Big Endian (retired; PS3.5 A.3) is never written: binary values (OW, OL, OF, OD, OV; Pixel Data by
  its Bits Allocated) are byte-swapped, the rest pydicom re-encodes from their values; UN elements, whose byte
  order cannot be known, are left out.
- Implicit VR Little Endian and Deflated Explicit VR Little Endian need only the new transfer syntax.
"""
from __future__ import annotations

from collections.abc import Iterable
from copy import deepcopy

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels.utils import decompress
from pydicom.uid import (UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                         JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLSNearLossless)

from dicomnode.observe import transfer_syntax_name

#: transfer syntaxes whose pixel data is always lossy -> Lossy Image Compression Method (PS3.3 C.7.6.1.1.5.1)
LOSSY_ONLY = {JPEGBaseline8Bit: "ISO_10918_1", JPEGExtended12Bit: "ISO_10918_1", JPEGLSNearLossless: "ISO_14495_1"}

#: bytes per swapped unit of a binary VR whose values have a byte order (PS3.5 7.3)
_SWAP_UNIT = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}

PIXEL_DATA = 0x7FE00010


class TranscodeError(ValueError):
    """The dataset cannot be re-encoded in Explicit VR Little Endian: no decoder for its pixel data, or data the
    decoder refuses. The message names the transfer syntax and why."""


def transfer_syntax_of(dataset: Dataset) -> UID:
    """The transfer syntax `dataset` is encoded in: its File Meta Transfer Syntax UID, else the encoding pydicom
    read it with (Explicit VR Little Endian for a dataset built in memory)."""
    meta = getattr(dataset, "file_meta", None)
    declared = str(meta.get("TransferSyntaxUID", "") or "") if meta is not None else ""
    if declared:
        return UID(declared)
    implicit, little = getattr(dataset, "original_encoding", (None, None))
    if little is False:
        return ExplicitVRBigEndian
    return ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian


def _swapped(value: bytes, unit: int) -> bytes:
    if unit <= 1 or not value:
        return value
    whole = len(value) - len(value) % unit
    words = np.frombuffer(value[:whole], dtype=f">u{unit}")
    return words.astype(f"<u{unit}").tobytes() + bytes(value[whole:])


def _little_endian_values(dataset: Dataset, bits_allocated: int | None) -> None:
    """Byte-swap the binary values of a dataset read as big endian, in place (new elements: the old ones may be shared
    with the source); nested sequence items too."""
    for element in list(dataset):
        if element.VR == "SQ":
            items = [deepcopy(item) for item in element.value or []]
            for item in items:
                _little_endian_values(item, None)
            dataset[element.tag] = DataElement(element.tag, "SQ", items)
            continue
        if element.VR == "UN":
            del dataset[element.tag]
            continue
        if element.tag == PIXEL_DATA:
            unit = (bits_allocated or 8) // 8 if bits_allocated and bits_allocated % 8 == 0 else 1
        else:
            unit = _SWAP_UNIT.get(element.VR, 1)
        if unit > 1 and isinstance(element.value, (bytes, bytearray)):
            dataset[element.tag] = DataElement(element.tag, element.VR, _swapped(bytes(element.value), unit))


def _flag_lossy(dataset: Dataset, syntax: UID) -> None:
    method = LOSSY_ONLY.get(syntax)
    if method is None or str(dataset.get("LossyImageCompression", "") or "").strip() == "01":
        return
    dataset.LossyImageCompression = "01"
    methods = [str(m) for m in _as_list(dataset.get("LossyImageCompressionMethod"))]
    dataset.LossyImageCompressionMethod = methods + [method] if method not in methods else methods


def _as_list(value) -> list:
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, Iterable) and not isinstance(value, (str, bytes)) else [value]


def explicit_little_endian(dataset: Dataset) -> Dataset:
    """`dataset` re-encoded in Explicit VR Little Endian with native pixel data, in place, and returned (module
    docstring): its file meta's Transfer Syntax UID becomes 1.2.840.10008.1.2.1 (a file meta is added where it has
    none). Elements are replaced, not changed, so a source sharing them (a shallow copy) is left as it was - except
    that pydicom's decoder sets the Image Pixel attributes it decodes to (Photometric Interpretation, Planar
    Configuration, Number of Frames). Raises TranscodeError naming the transfer syntax when its pixel data cannot be
    decoded."""
    syntax = transfer_syntax_of(dataset)
    meta = FileMetaDataset()  # a new one: the dataset may share its file meta with its source
    for element in getattr(dataset, "file_meta", None) or []:
        meta[element.tag] = DataElement(element.tag, element.VR, element.value)
    meta.TransferSyntaxUID = syntax
    dataset.file_meta = meta
    if syntax.is_encapsulated and PIXEL_DATA in dataset:
        for keyword in ("PhotometricInterpretation", "PlanarConfiguration", "NumberOfFrames"):
            if keyword in dataset:  # the decoder sets these: on elements of the copy's own
                element = dataset[keyword]
                dataset[keyword] = DataElement(element.tag, element.VR, element.value)
        element = dataset[PIXEL_DATA]
        dataset[PIXEL_DATA] = DataElement(PIXEL_DATA, element.VR, element.value, is_undefined_length=True)
        try:
            decompress(dataset, as_rgb=True, generate_instance_uid=False)
        except Exception as error:  # noqa: BLE001 - any decoder's failure, named with the syntax
            raise TranscodeError(f"cannot decode the {transfer_syntax_name(syntax)} pixel data of "
                                 f"{dataset.get('SOPInstanceUID', 'an instance')} to write it as Explicit VR Little "
                                 f"Endian: {type(error).__name__}: {error}") from None
        _flag_lossy(dataset, syntax)
    elif syntax.is_transfer_syntax and not syntax.is_little_endian:
        bits = dataset.get("BitsAllocated")
        _little_endian_values(dataset, int(bits) if bits not in (None, "") else None)
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return dataset
