"""A corpus of hostile and broken DICOM inputs, generated on demand into a folder (nothing binary is committed).

`generate(folder)` writes every case and returns `BadInput`s saying how to send each one and what the node must
answer: a DIMSE status (`refused`), no accepted presentation context (`context`), or acceptance followed by a
`declined: reason` in the study's record (`declined`, with a word the reason must contain, or None for any).
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)

MR = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
MPEG2 = "1.2.840.10008.1.2.4.100"

STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_DOES_NOT_MATCH = 0xA900


@dataclass
class BadInput:
    name: str
    files: list[Path]
    expect: str  # "refused" | "context" | "declined"
    status: int | None = None  # for "refused": the C-STORE status
    reason: str | None = None  # for "declined": a word in the reason (case-insensitive); None = any reason
    study_uid: str | None = None  # the study the case belongs to, where it has a valid one
    context: tuple[str, str] | None = None  # (SOP class, transfer syntax) to request; default: from the file meta
    note: str = ""
    statuses: list = field(default_factory=list)  # filled by the sender


def mr_dataset(study_uid: str, series_uid: str | None = None, size: int = 32, instance: int = 1,
               position=(0.0, 0.0, 0.0), orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0), fill: int | None = None,
               transfer_syntax: str = ExplicitVRLittleEndian) -> Dataset:
    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = MR
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Modality = "MR"
    ds.PatientName = "CORPUS^CASE"
    ds.PatientID = "CORPUS01"
    ds.SeriesNumber = 3
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = list(position)
    ds.ImageOrientationPatient = list(orientation)
    ds.PixelSpacing = [1.5, 1.5]
    ds.SliceThickness = 8
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    pixels = np.full((size, size), fill, np.uint16) if fill is not None else \
        ((np.arange(size * size).reshape(size, size) * 13 + instance) % 4000).astype(np.uint16)
    ds.PixelData = pixels.astype("<u2").tobytes()
    return ds


def encode(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def encode_as_is(ds: Dataset) -> bytes:
    """Encode without pydicom making the file meta agree with the dataset (to send mismatches)."""
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=False)
    return buffer.getvalue()


def _meta_only(sop_class: str, sop_instance: str, transfer_syntax: str = ExplicitVRLittleEndian) -> bytes:
    """Preamble + DICM + File Meta Information only: a dataset of any bytes can follow."""
    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    return encode(ds)


def _explicit_element(group: int, element: int, vr: str, value: bytes, length: int | None = None) -> bytes:
    length = len(value) if length is None else length
    if vr in ("OB", "OW", "OF", "SQ", "UT", "UN"):
        return struct.pack("<HH2sHI", group, element, vr.encode(), 0, length) + value
    return struct.pack("<HH2sH", group, element, vr.encode(), length) + value


def replace_element(data: bytes, group: int, element: int, vr: str, value: bytes) -> bytes:
    """Swap one explicit-VR-LE element (short-length VR) of an encoded file for `vr` + `value`, bytes as given."""
    tag = struct.pack("<HH", group, element)
    start = data.index(tag, 132 + 12)  # past the preamble and the meta group length
    old_length = struct.unpack("<H", data[start + 6:start + 8])[0]
    return data[:start] + _explicit_element(group, element, vr, value) + data[start + 8 + old_length:]


def generate(folder: Path) -> list[BadInput]:
    """Write every case under `folder` (one sub-folder per case); ≥ 30 cases."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cases: list[BadInput] = []

    def write(name: str, data_or_ds, index: int = 0) -> Path:
        path = folder / name / f"{index:05d}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data_or_ds if isinstance(data_or_ds, (bytes, bytearray)) else encode(data_or_ds))
        return path

    def add(name, datasets_or_bytes, expect, study_uid=None, **kwargs):
        items = datasets_or_bytes if isinstance(datasets_or_bytes, list) else [datasets_or_bytes]
        files = [write(name, item, index) for index, item in enumerate(items)]
        cases.append(BadInput(name=name, files=files, expect=expect, study_uid=study_uid, **kwargs))

    # --- broken bytes --------------------------------------------------------------------------------------
    study = generate_uid()
    whole = encode(mr_dataset(study))
    cut = whole.index(struct.pack("<HH", 0x0010, 0x0010), 132 + 12) + 11  # inside PatientName's value
    add("truncated_in_header", whole[:cut], "refused", study, status=STATUS_CANNOT_UNDERSTAND,
        note="the file ends inside PatientName, before the Study/Series UIDs")
    study = generate_uid()
    whole = encode(mr_dataset(study, size=64))
    add("truncated_in_pixel_data", whole[:-3000], "declined", study, reason=None,
        note="PixelData declares 8192 bytes, 5192 arrive")
    sop = generate_uid()
    add("garbage_after_preamble", _meta_only(MR, sop) + b"\xff\xfe\x00\x01 not a dataset at all \x00\x13" * 7,
        "refused", status=STATUS_CANNOT_UNDERSTAND)
    sop = generate_uid()
    rng = np.random.default_rng(20240501)
    add("random_dataset_bytes", _meta_only(MR, sop) + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes(),
        "refused", status=STATUS_CANNOT_UNDERSTAND)
    add("meta_only_empty_dataset", _meta_only(MR, generate_uid()), "refused", status=STATUS_CANNOT_UNDERSTAND)
    study = generate_uid()
    huge_length = encode(mr_dataset(study))[:-(32 * 32 * 2 + 12)]  # drop PixelData
    huge_length += _explicit_element(0x7FE0, 0x0010, "OW", b"\0" * 64, length=0xFFFFFFF0)
    add("element_length_beyond_the_end", huge_length, "declined", study, reason=None,
        note="PixelData announces ~4 GiB; the file has 64 bytes of it")
    study = generate_uid()
    ds = mr_dataset(study)
    body = encode(ds)
    add("deflate_stream_corrupt", _meta_only(MR, ds.SOPInstanceUID, DeflatedExplicitVRLittleEndian)
        + zlib.compress(body[200:600])[:40] + b"\x00garbage", "refused", status=STATUS_CANNOT_UNDERSTAND)

    # --- wrong VRs / values --------------------------------------------------------------------------------
    study = generate_uid()
    add("rows_with_wrong_vr_ds", replace_element(encode(mr_dataset(study)), 0x0028, 0x0010, "DS", b"abc "),
        "declined", study, reason=None, note="Rows (US) sent as DS 'abc'")
    study = generate_uid()
    add("position_not_numbers", replace_element(encode(mr_dataset(study)), 0x0020, 0x0032, "DS", b"x\\y\\z "),
        "declined", study, reason="geometry")
    study = generate_uid()
    add("pixel_spacing_wrong_vr", replace_element(encode(mr_dataset(study)), 0x0028, 0x0030, "US", b"\x03\x00"),
        "declined", study, reason=None, note="PixelSpacing (DS) sent as US 3")
    study = generate_uid()
    add("odd_length_us_value", replace_element(encode(mr_dataset(study)), 0x0028, 0x0011, "US", b"\x20\x00\x00"),
        "declined", study, reason=None, note="Columns (US) with a 3-byte value")
    study = generate_uid()
    ds = mr_dataset(study)
    ds.Rows, ds.Columns = 65535, 65535
    add("huge_dimensions", ds, "declined", study, reason=None, note="65535x65535 declared, 32x32 pixels present")
    study = generate_uid()
    ds = mr_dataset(study)
    ds.Rows = 0
    add("zero_rows", ds, "declined", study, reason=None)
    study = generate_uid()
    ds = mr_dataset(study)
    ds.NumberOfFrames = "-3"
    add("negative_number_of_frames", ds, "declined", study, reason=None)
    study = generate_uid()
    ds = mr_dataset(study)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]
    add("pixel_data_shorter_than_declared_size", ds, "declined", study, reason=None)
    study = generate_uid()
    ds = mr_dataset(study)
    ds.BitsAllocated = 12
    add("bits_allocated_12", ds, "declined", study, reason=None)
    study = generate_uid()
    ds = mr_dataset(study, transfer_syntax=JPEGBaseline8Bit)
    ds.PixelData = encapsulate([b"\xff\xd8 not a jpeg stream \xff\xd9"])
    ds["PixelData"].VR = "OB"
    add("jpeg_pixel_data_not_jpeg", ds, "declined", study, reason=None)

    # --- protocol level ------------------------------------------------------------------------------------
    study = generate_uid()
    ds = mr_dataset(study, transfer_syntax=MPEG2)
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3 not really mpeg"])
    ds["PixelData"].VR = "OB"
    # an MR image in a transfer syntax the node cannot decode is refused at negotiation, so the sender transcodes it
    # (break45c: acknowledged, then the study declined, a routing PACS never sent a decodable copy); other storage
    # classes are still accepted in any syntax (node.non_mr_objects)
    add("unsupported_transfer_syntax_mpeg2", ds, "context", study)
    study = generate_uid()
    ds = mr_dataset(study)
    ds.SOPClassUID = CT
    add("dataset_sop_class_differs_from_request", encode_as_is(ds), "refused", study, status=STATUS_DOES_NOT_MATCH)
    study = generate_uid()
    ds = mr_dataset(study)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CT
    add("ct_sop_class_not_supported", ds, "declined", study, reason=None)
    study = generate_uid()
    ds = mr_dataset(study)
    ds.SOPInstanceUID = generate_uid()  # differs from the request's (file meta) SOP Instance UID
    add("dataset_sop_instance_differs_from_request", encode_as_is(ds), "refused", study, status=STATUS_DOES_NOT_MATCH)

    # --- identifiers ---------------------------------------------------------------------------------------
    ds = mr_dataset(generate_uid())
    del ds.StudyInstanceUID
    add("missing_study_uid", ds, "refused", status=STATUS_CANNOT_UNDERSTAND)
    study = generate_uid()
    ds = mr_dataset(study)
    del ds.SeriesInstanceUID
    add("missing_series_uid", ds, "refused", study, status=STATUS_CANNOT_UNDERSTAND)
    study = generate_uid()
    ds = mr_dataset(study)
    del ds.SOPInstanceUID
    add("missing_sop_instance_uid_in_dataset", ds, "declined", study, reason="missing SOPInstanceUID",
        note="the request (file meta) names one; the dataset lacks it: stored, then declined")
    ds = mr_dataset(generate_uid())
    ds.StudyInstanceUID = "../../../../etc/passwd"
    add("study_uid_path_traversal", ds, "refused", status=STATUS_CANNOT_UNDERSTAND)
    study = generate_uid()
    ds = mr_dataset(study)
    ds.SeriesInstanceUID = "1.2.3/../../x"
    add("series_uid_with_slashes", ds, "refused", study, status=STATUS_CANNOT_UNDERSTAND)
    study = generate_uid()
    ds = mr_dataset(study)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "/etc/passwd"
    add("sop_uid_absolute_path", ds, "refused", study, status=STATUS_CANNOT_UNDERSTAND)
    study = generate_uid()
    ds = mr_dataset(study)
    ds.StudyInstanceUID = "1." + "2" * 70
    add("study_uid_longer_than_64", ds, "refused", study, status=STATUS_CANNOT_UNDERSTAND)

    # --- content that is valid DICOM but no usable cardiac MR ----------------------------------------------
    study = generate_uid()
    ds = mr_dataset(study)
    ds.Modality = "CT"
    add("mr_class_with_ct_modality", ds, "declined", study, reason="not an MR image")
    study = generate_uid()
    datasets = [mr_dataset(study, instance=i) for i in range(2)]
    for item in datasets:
        del item.ImagePositionPatient
        del item.ImageOrientationPatient
    add("mr_without_geometry", datasets, "declined", study, reason="no geometry")
    study, series = generate_uid(), generate_uid()
    add("mixed_orientations_in_one_series",
        [mr_dataset(study, series, instance=1, position=(0, 0, 0)),
         mr_dataset(study, series, instance=2, position=(0, 0, 8), orientation=(0, 1, 0, 0, 0, -1)),
         mr_dataset(study, series, instance=3, position=(0, 0, 16), orientation=(1, 0, 0, 0, 0, -1))],
        "declined", study, reason=None)
    study, series = generate_uid(), generate_uid()
    add("duplicate_positions", [mr_dataset(study, series, instance=i, position=(0, 0, 0)) for i in range(1, 4)],
        "declined", study, reason=None)
    study = generate_uid()
    add("single_slice", mr_dataset(study), "declined", study, reason=None)
    study, series = generate_uid(), generate_uid()
    add("zero_filled_images", [mr_dataset(study, series, instance=i, position=(0, 0, 8 * i), fill=0) for i in range(1, 4)],
        "declined", study, reason=None)
    study = generate_uid()
    add("enhanced_mr_inconsistent_functional_groups", _enhanced(study, frames=3, per_frame_items=2), "declined",
        study, reason=None)
    study = generate_uid()
    add("ten_thousand_frames_8x8", _enhanced(study, frames=10_000, per_frame_items=0, size=8), "declined", study,
        reason=None, note="one Enhanced MR instance of 10 000 frames of 8x8 pixels (1.3 MB)")
    study = generate_uid()
    ds = mr_dataset(study)
    ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    ds[0x00100010] = DataElement(0x00100010, "PN", "Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B".encode("latin-1"))
    add("iso2022_ir87_japanese_name", ds, "declined", study, reason=None)
    study = generate_uid()
    ds = mr_dataset(study)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Müller^Jürgen=王^小明"
    ds.SeriesDescription = "cine ✓ κ"
    add("utf8_iso_ir_192_names", ds, "declined", study, reason=None)
    study = generate_uid()
    ds = mr_dataset(study)
    ds.SpecificCharacterSet = "ISO_IR 999"
    ds[0x00100010] = DataElement(0x00100010, "PN", b"\xe9\xff\xfe^name")
    add("unknown_character_set", ds, "declined", study, reason=None)
    return cases


def _enhanced(study_uid: str, frames: int, per_frame_items: int, size: int = 16) -> Dataset:
    """Enhanced MR with `frames` frames and `per_frame_items` per-frame functional group items."""
    ds = mr_dataset(study_uid, size=size)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = ENHANCED_MR
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness"):
        delattr(ds, keyword)
    ds.NumberOfFrames = frames
    shared = Dataset()
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PlaneOrientationSequence = Sequence([orientation])
    measures = Dataset()
    measures.PixelSpacing = [1.5, 1.5]
    measures.SliceThickness = 8
    shared.PixelMeasuresSequence = Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    items = []
    for index in range(per_frame_items):
        item = Dataset()
        position = Dataset()
        position.ImagePositionPatient = [0, 0, 8 * index]
        item.PlanePositionSequence = Sequence([position])
        items.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(items)
    ds.PixelData = (np.arange(frames * size * size) % 1000).astype("<u2").tobytes()
    return ds


if __name__ == "__main__":
    import sys
    import tempfile

    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="bad-inputs-"))
    for case in generate(target):
        print(f"{case.name:<45} {case.expect:<8} {len(case.files)} file(s)  {case.note}")
    print(f"written to {target}")
