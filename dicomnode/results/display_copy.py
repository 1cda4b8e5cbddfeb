"""Copies of an analysed stack in a series of its own, for a SEG whose source series also holds other images.

OHIF v3 checks a SEG against the first image of the series it references and refuses it ("Segmentations oblique to
the acquisition plane ... not yet supported") when that image has another orientation - as when a localizer shares
the cine's Series Instance UID (real Sunnybrook data). The standard allows the SEG to reference any images of the
same Frame of Reference, so the node writes a copy of the analysed frames of that SEG (one phase, one stack) as a
new series and lets the SEG reference the copy:
- same IOD as the source (MR Image), pixel data and geometry unchanged, new SOP Instance and Series UIDs;
- Image Type DERIVED\\SECONDARY, Derivation Description saying it is an unchanged copy, Source Image Sequence
  pointing at the original (PS3.3 C.7.6.1.1.4, purpose 121322 DCM);
- Instance Number 1..N in stack order within the copy series (C.7.6.1: it identifies the image in its series; the
  source's numbers, e.g. 19, 39, ... of a 200-image cine, mean nothing there);
- the General Equipment module stays the scanner's (it acquired the pixel data, and viewers read Manufacturer and
  model as the scanner's), and the node that made the copy is named in the Contributing Equipment Sequence
  (C.7.5.1, purpose (109102, DCM, "Processing Equipment"), CID 7005), as the SEG, SR and PDF name it;
- patient/study attributes made valid as for every result object (results.headers.derivable_header).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pydicom
import pydicom.multival
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from dicomnode.analysis.pipeline import SegmentationResult
from dicomnode.cmr.types import FrameRef, InstanceHeader
from dicomnode.results.headers import derivable_header, repair_value
from dicomnode.results.provenance import NODE_MANUFACTURER, NODE_MODEL_NAME, node_version
from dicomnode.results.seg import PHASE_ABBREVIATIONS, SOURCE_IMAGE_PURPOSE, SegPart
from dicomnode.uids import new_uid

DERIVATION = "Unchanged copy of the source image in a series of its own, for the display of the AI segmentation"
#: CID 7005 Contributing Equipment Purpose of Reference: equipment that processed composite instances to create new ones
PROCESSING_EQUIPMENT = Code("109102", "DCM", "Processing Equipment")


def shares_its_series(study, segmentation: SegmentationResult) -> bool:
    """True when a source series of the segmentation also holds images the analysis did not use as this stack (e.g.
    a localizer, or another stack grouped apart from it)."""
    own = set(segmentation.series.series_instance_uids)
    used = {i.sop_instance_uid for i in segmentation.series.instances}
    for other in getattr(study, "series", []):
        if other is segmentation.series or not own & set(other.series_instance_uids):
            continue
        if any(i.sop_instance_uid not in used for i in other.instances):
            return True
    return False


def drop_unsatisfied_conditionals(dataset: Dataset) -> None:
    """Remove MR Image attributes a source carries although their condition is not met (PS3.3 C.8.3.1: Inversion
    Time only with an inversion-recovery Scanning Sequence), so the copy does not repeat the source's error."""
    if "InversionTime" in dataset and "IR" not in list(dataset.get("ScanningSequence") or []):
        del dataset.InversionTime


def repair_dates_and_times(dataset: Dataset) -> None:
    """Top-level DA/TM/DT values made valid (headers.repair_value) or emptied, e.g. Sunnybrook's "20120000": the
    copy must not carry a value a validator or PACS refuses (patient/study ones are done by derivable_header)."""
    for element in list(dataset):
        if element.VR not in ("DA", "TM", "DT") or element.value in (None, ""):
            continue
        values = element.value if isinstance(element.value, (list, pydicom.multival.MultiValue)) else [element.value]
        repaired = [repair_value(element.VR, str(v), element.keyword) for v in values]
        element.value = "" if any(v is None for v in repaired) else (repaired[0] if len(repaired) == 1 else repaired)


def node_equipment_item(made_at: str) -> Dataset:
    """The Contributing Equipment Sequence item (PS3.3 C.7.5.1) naming the node as the equipment that made the copy;
    `made_at`: its Contribution DateTime (DT)."""
    purpose = Dataset()
    purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning = (
        PROCESSING_EQUIPMENT.value, PROCESSING_EQUIPMENT.scheme_designator, PROCESSING_EQUIPMENT.meaning)
    item = Dataset()
    item.PurposeOfReferenceCodeSequence = [purpose]
    item.Manufacturer = NODE_MANUFACTURER
    item.ManufacturerModelName = NODE_MODEL_NAME
    item.SoftwareVersions = node_version()
    item.ContributionDateTime = made_at
    item.ContributionDescription = DERIVATION
    return item


def _copy(original: Dataset, series_uid: str, series_number: int, description: str,
          frame_of_reference_uid: str | None = None, instance_number: int = 1, made_at: str = "") -> Dataset:
    source_class, source_uid = str(original.SOPClassUID), str(original.SOPInstanceUID)
    copy = derivable_header(original)  # a shallow copy: read everything needed from the original first
    repair_dates_and_times(copy)
    if frame_of_reference_uid is not None:
        copy.FrameOfReferenceUID = frame_of_reference_uid
    copy.SOPInstanceUID = new_uid()
    copy.SeriesInstanceUID = series_uid
    copy.SeriesNumber = series_number
    copy.SeriesDescription = description[:64]
    copy.InstanceNumber = instance_number
    equipment = list(original.get("ContributingEquipmentSequence") or [])
    copy.ContributingEquipmentSequence = equipment + [node_equipment_item(made_at)]
    image_type = list(original.get("ImageType") or ["DERIVED", "SECONDARY"])
    copy.ImageType = ["DERIVED", "SECONDARY"] + image_type[2:]
    copy.DerivationDescription = DERIVATION
    drop_unsatisfied_conditionals(copy)
    source = Dataset()
    source.ReferencedSOPClassUID = source_class
    source.ReferencedSOPInstanceUID = source_uid
    purpose = Dataset()
    purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning = (
        SOURCE_IMAGE_PURPOSE.value, SOURCE_IMAGE_PURPOSE.scheme_designator, SOURCE_IMAGE_PURPOSE.meaning)
    source.PurposeOfReferenceCodeSequence = [purpose]
    copy.SourceImageSequence = [source]
    if hasattr(original, "file_meta"):
        copy.file_meta = Dataset()
        copy.file_meta.update(original.file_meta)
        copy.file_meta.MediaStorageSOPInstanceUID = copy.SOPInstanceUID
    return copy


def shared_frame_of_reference(segmentation: SegmentationResult) -> str | None:
    """None when the analysed images share one Frame of Reference; else a new UID for all their copies (Sunnybrook
    gives every image its own, so a SEG could match only one of the images it references)."""
    found = {str(i.dataset.get("FrameOfReferenceUID", "")) for i in segmentation.series.instances}
    return None if len(found) == 1 else new_uid()


def display_copies(segmentation: SegmentationResult, part: SegPart, series_number: int,
                   frame_of_reference_uid: str | None = None, started_at: dt.datetime | None = None,
                   ) -> tuple[list[Dataset], SegmentationResult]:
    """(the copies of the part's frames, the segmentation with those frames pointing at the copies).

    Reads each source file in full (pixel data included); only single-frame sources are copied, numbered 1..N in
    stack order. With `frame_of_reference_uid` (shared_frame_of_reference) every copy gets that Frame of Reference.
    `started_at` (the analysis start, as on the SEG; default now) is the node's Contribution DateTime.
    """
    made_at = (started_at or dt.datetime.now().astimezone()).strftime("%Y%m%d%H%M%S.%f%z")
    by_uid = {i.sop_instance_uid: i for i in segmentation.series.instances}
    series_uid = new_uid()
    names = [segmentation.phase_names[p] for p in part.phase_positions]
    phase = " ".join(PHASE_ABBREVIATIONS.get(n.strip().lower(), n) for n in names)
    first = by_uid[segmentation.volume.frames[segmentation.phases[part.phase_positions[0]]][part.slices[0]]
                   .sop_instance_uid].dataset
    description = f"{first.get('SeriesDescription') or segmentation.pipeline} {phase} copy for AI SEG"
    frames = [list(row) for row in segmentation.volume.frames]
    copies, headers = [], []
    for position in part.phase_positions:
        phase_index = segmentation.phases[position]
        for k in part.slices:
            ref = frames[phase_index][k]
            if ref.frame_number is not None:
                raise ValueError("display copies are made of single-frame sources only")
            instance = by_uid[ref.sop_instance_uid]
            copy = _copy(pydicom.dcmread(instance.path), series_uid, series_number, description,
                         frame_of_reference_uid, len(copies) + 1, made_at)
            copies.append(copy)
            headers.append(InstanceHeader(instance.path, str(copy.SOPInstanceUID), str(copy.SOPClassUID),
                                          series_uid, copy))
            frames[phase_index][k] = FrameRef(str(copy.SOPInstanceUID), str(copy.SOPClassUID), series_uid, None)
    series = replace(segmentation.series, series_instance_uids=[series_uid], instances=headers)
    volume = replace(segmentation.volume, frames=frames)
    return copies, replace(segmentation, series=series, volume=volume)
