"""Copies of an analysed stack in a series of its own, for a SEG whose labelled images are only part of their series.

OHIF v3 (3.13) shows a SEG only on a series it can display as one plain stack of exactly the SEG's images:
- it checks a SEG against the first image of the series it references and refuses it ("Segmentations oblique to
  the acquisition plane ... not yet supported") when that image has another orientation - as when a localizer shares
  the cine's Series Instance UID (real Sunnybrook data);
- it opens a series holding several images per slice position - every phase of a cine in one series, the usual GE
  and Philips export (N slices x M phases) - as a 4-D volume shown at time point 1, and the ED or ES labels, which
  sit on other time points, are never seen (docs/conformance.md 8.1.1).
The standard allows the SEG to reference any images of the same Frame of Reference, so wherever the images a SEG
labels are not the whole of their series (needs_display_copies), the node writes a copy of the analysed frames of
each labelled phase as a new series (one series per phase, all its slices, also those where its SEG has no frame)
and lets the SEG reference the copy:
- same IOD as the source (MR Image), pixel values and geometry unchanged, new SOP Instance and Series UIDs; Rescale
  Slope / Intercept / Type kept although the MR Image IOD has no Modality LUT (dciodvfy warns): a PSIR's stored
  values are offset and its sign is lost without them (single_frame.GROUP_ATTRIBUTES);
- Image Type DERIVED\\SECONDARY, Derivation Description saying it is an unchanged copy, Source Image Sequence
  pointing at the original (PS3.3 C.7.6.1.1.4, purpose 121322 DCM);
- Instance Number 1..N in the order of the source images' (Series Number, Instance Number), so a viewer (which
  orders a stack by Instance Number) opens the copy at the same end as the source; the frames of one multi-frame
  source in spatial order along the stack normal (the volume's, the SEG's order), not in frame order, which an
  Enhanced MR may store shuffled; the source's own numbers, e.g.
  19, 39, ... of a 200-image cine, mean nothing in the copy series (C.7.6.1: it identifies the image in its series);
- the copy is an object the node authors (break46a #5): its General Equipment module (C.7.5.1) names the node
  (Manufacturer, model, software version), and the scanner that acquired the pixel data moves, with its own
  Manufacturer, model, serial number, station and software, into a Contributing Equipment Sequence item of purpose
  (109101, DCM, "Acquisition Equipment") (CID 7005); the node is also named there as (109102, DCM, "Processing
  Equipment"), as the SEG, SR and PDF name it;
- what the source carries that its copy, a classic MR Image, must not: an empty Laterality (Type 2C, for a paired
  body part only; the heart is not one) and an empty or any Per-frame Functional Groups Sequence (not in the MR
  Image IOD), retired attributes (Study Status ID, Study Priority ID ...); Body Part Examined HEART where the source
  gives none, as on the report image, so that a validator knows the body part is unpaired;
- patient/study attributes made valid as for every result object (results.headers.derivable_header); Series
  Date/Time are set with the other result series (results.objects.order_for_viewers);
- written in Explicit VR Little Endian with native pixel data whatever transfer syntax the source came in (JPEG,
  JPEG-LS, JPEG 2000, RLE, Deflated, Big Endian: net.transcode.explicit_little_endian decodes or byte-swaps it), so
  a PACS that accepts only the uncompressed little endian syntaxes (DCMTK's storescp by default) takes every copy;
  the pixel values are the decoded source's, a lossy source's copy stays flagged Lossy Image Compression 01.
A multi-frame source is not copied for these reasons: it keeps its SEG on the original unless it is tilted (below).

A stack whose slices are tilted against each other (a fraction of a degree to the 2 degrees `cmr.frames.
orientation_groups` accepts; their ImageOrientationPatient differ by more than the rounding noise `cmr.frames.
ORIENTATION_NOISE`) is analysed in its mean plane (`cmr.frames.stack_plane`), and its SEG declares that plane. OHIF
(3.13, cornerstone adapters `checkOrientation`) compares the SEG's orientation with its source image's at 1e-3 per
component and refuses any other as "orthogonal to the acquisition plane" (stuck on "Loading SEG..."), so such a
stack also gets copies (`tilted_sources`), each placed in the mean plane: ImageOrientationPatient exactly the SEG's
and ImagePositionPatient its SEG frame's (centred where the slice was acquired), the pixels unchanged - as the
analysis read them - and the Source Image Sequence item saying SpatialLocationsPreserved NO (PS3.3 C.7.6.1.1.4,
C.8.20 Segmentation); the SEG then references copies of exactly its own geometry (SpatialLocationsPreserved YES).

A tilted multi-frame (Enhanced MR) stack - frames whose per-frame Plane Orientation differs from the mean plane by
more than that noise - gets copies by the same rules, one classic single-frame MR Image per analysed frame
(`results.single_frame.single_frame_image`): the form of the single-frame path's copies and the one every viewer
opens as one plain stack (OHIF matches a SEG frame to a classic image by its SOP Instance UID alone, and lists its
SR outlines on it), where one Enhanced MR copy would leave the SEG and the SR on frame references again. Each copy
holds exactly its frame's pixel values (placed, not resampled), names the source instance and frame in its Source
Image Sequence (Referenced Frame Number, SpatialLocationsPreserved NO) and says in its Derivation Description that
it is a frame of a multi-frame image (FRAME_PLACED_DERIVATION).
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from copy import deepcopy
from dataclasses import replace

import numpy as np

import pydicom
import pydicom.multival
from pydicom.datadict import dictionary_is_retired
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import MRImageStorage
from pydicom.valuerep import DSfloat
from pydicom.sr.coding import Code

from dicomnode.analysis.pipeline import SegmentationResult
from dicomnode.cmr.source_encoding import lossy_compression
from dicomnode.cmr.types import FrameRef, InstanceHeader
from dicomnode.net.transcode import explicit_little_endian, transfer_syntax_of
from dicomnode.results.headers import derivable_header, repair_value, without_control_characters
from dicomnode.results.provenance import NODE_MANUFACTURER, NODE_MODEL_NAME, node_version
from dicomnode.results.seg import PHASE_ABBREVIATIONS, SOURCE_IMAGE_PURPOSE, SegPart, relocated_sources, seg_parts
from dicomnode.results.single_frame import as_list, single_frame_image
from dicomnode.uids import new_uid

DERIVATION = "Unchanged copy of the source image in a series of its own, for the display of the AI segmentation"
#: the Derivation Description of a copy placed in the stack's mean plane (a tilted stack, module docstring)
PLACED_DERIVATION = ("Copy of the source image in a series of its own, for the display of the AI segmentation, "
                     "pixels unchanged, placed in the mean plane of its tilted stack (Image Orientation and Position "
                     "of the segmentation, centred where the slice was acquired)")
#: the Derivation Description of a copy of one frame of a multi-frame source, placed in its stack's mean plane
FRAME_PLACED_DERIVATION = ("Copy of one frame of the multi-frame source image as a single-frame image in a series of "
                           "its own, for the display of the AI segmentation, pixels unchanged, placed in the mean "
                           "plane of its tilted stack (Image Orientation and Position of the segmentation, centred "
                           "where the slice was acquired)")
#: CID 7005 Contributing Equipment Purpose of Reference: equipment that processed composite instances to create new ones
PROCESSING_EQUIPMENT = Code("109102", "DCM", "Processing Equipment")
#: CID 7005: the equipment that acquired the data (the scanner, named in the copy's Contributing Equipment Sequence)
ACQUISITION_EQUIPMENT = Code("109101", "DCM", "Acquisition Equipment")
#: the source's General Equipment attributes (C.7.5.1) that describe the scanner and move into its Contributing
#: Equipment item; Institution Name / Address / Department stay (the hospital, not the device) and so does Pixel
#: Padding Value (about the pixel data)
SCANNER_KEYWORDS = ("Manufacturer", "ManufacturerModelName", "DeviceSerialNumber", "DeviceUID", "SoftwareVersions",
                    "StationName", "SpatialResolution", "DateOfLastCalibration", "TimeOfLastCalibration")


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


def _images_by_series(study, segmentation: SegmentationResult) -> dict[str, set[str]]:
    """Series Instance UID -> the SOP Instance UIDs the study holds in it (every analysis series of the study, the
    segmentation's own included)."""
    found: dict[str, set[str]] = {}
    for series in [segmentation.series, *getattr(study, "series", [])]:
        for instance in series.instances:
            found.setdefault(str(instance.series_instance_uid), set()).add(str(instance.sop_instance_uid))
    return found


def _frame_key(ref: FrameRef) -> str | tuple[str, int]:
    """How `seg.relocated_sources` names the image of `ref`: its SOP Instance UID, or (SOP Instance UID, frame
    number) for a frame of a multi-frame source."""
    uid = str(ref.sop_instance_uid)
    return uid if ref.frame_number is None else (uid, int(ref.frame_number))


def tilted_sources(segmentation: SegmentationResult) -> frozenset:
    """The analysed source images whose ImageOrientationPatient (0020,0037) differs from the volume's (mean-plane)
    orientation by more than rounding noise (`cmr.frames.ORIENTATION_NOISE`, 1e-4 per direction cosine), or whose
    ImagePositionPatient lies more than 0.01 mm from every volume position (mm): `seg.relocated_sources`. A
    single-frame image is named by its SOP Instance UID, a frame of a multi-frame (Enhanced MR) source, read from its
    per-frame Plane Orientation / Position, by (SOP Instance UID, frame number); frames of that instance the analysis
    did not use are not named. Empty for a stack of one orientation up to rounding, which keeps its SEG on the
    originals (OHIF's own tolerance is 1e-3). Sources whose header the segmentation's series lacks are skipped."""
    by_uid = {str(i.sop_instance_uid): i.dataset for i in segmentation.series.instances}
    volume = segmentation.volume
    analysed = {_frame_key(ref) for row in volume.frames for ref in row if ref is not None}
    uids = dict.fromkeys(str(ref.sop_instance_uid) for row in volume.frames for ref in row if ref is not None)
    return relocated_sources([by_uid[uid] for uid in uids if uid in by_uid],
                             [float(v) for v in np.asarray(volume.orientation, float)],
                             np.asarray(volume.positions, float)) & analysed


def needs_display_copies(study, segmentation: SegmentationResult, parts: list[SegPart] | None = None) -> bool:
    """True when the images some SEG of the segmentation labels (one per part, seg.seg_parts) are only part of
    their source series: other phases of the stack share it (a whole-cycle cine in one series, which OHIF opens as
    a 4-D volume), or other images do (a localizer, another stack: shares_its_series). False for a multi-frame
    source that is not tilted (such images are copied only to place them in the mean plane) and where every SEG's
    images are the whole of their series (an LGE series holding only its stack, a stack sent as one series per
    slice), unless the stack is tilted (`tilted_sources`: its copies are placed in the SEG's mean plane, see the
    module docstring), single-frame and multi-frame sources alike."""
    frames = segmentation.volume.frames
    if tilted_sources(segmentation):
        return True
    if any(ref.frame_number is not None for row in frames for ref in row):
        return False
    if shares_its_series(study, segmentation):
        return True
    in_series = _images_by_series(study, segmentation)
    for part in seg_parts(segmentation) if parts is None else parts:
        refs = [frames[segmentation.phases[p]][k] for p in part.phase_positions for k in part.slices]
        labelled = {str(ref.sop_instance_uid) for ref in refs}
        if any(in_series.get(str(ref.series_instance_uid), set()) - labelled for ref in refs):
            return True
    return False


def drop_unsatisfied_conditionals(dataset: Dataset) -> None:
    """Make the MR Image conditionals (PS3.3 C.8.3.1) agree with their condition, so the copy does not repeat the
    source's error: Inversion Time (Type 2C) only with an inversion-recovery Scanning Sequence, and there always
    (empty where the source gives no time). A Scanning Sequence of one term is read as that term (as_list), not as
    its characters."""
    inversion_recovery = "IR" in [str(v).strip().upper() for v in as_list(dataset.get("ScanningSequence"))]
    if "InversionTime" in dataset and not inversion_recovery:
        del dataset.InversionTime
    elif inversion_recovery and "InversionTime" not in dataset:
        dataset.InversionTime = None


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


def acquisition_equipment_item(source: Dataset) -> Dataset | None:
    """The Contributing Equipment Sequence item (C.7.5.1, purpose ACQUISITION_EQUIPMENT) of the scanner that made
    `source`, holding its SCANNER_KEYWORDS that have a value; None where it names none of them. Manufacturer is
    Type 1 in the item: "unknown" where the source gives none."""
    values = {k: source.get(k) for k in SCANNER_KEYWORDS if source.get(k) not in (None, "", [])}
    if not values:
        return None
    purpose = Dataset()
    purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning = (
        ACQUISITION_EQUIPMENT.value, ACQUISITION_EQUIPMENT.scheme_designator, ACQUISITION_EQUIPMENT.meaning)
    item = Dataset()
    item.PurposeOfReferenceCodeSequence = [purpose]
    item.Manufacturer = values.pop("Manufacturer", "unknown")
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def authored_by_the_node(copy: Dataset, source: Dataset, made_at: str) -> None:
    """Make `copy` an object the node authors (module docstring): General Equipment the node's, the scanner in a
    Contributing Equipment item after the source's own items, then the node's processing item; an empty Laterality,
    any Per-frame Functional Groups Sequence and retired attributes dropped; Body Part Examined HEART where empty."""
    scanner = acquisition_equipment_item(source)
    for keyword in SCANNER_KEYWORDS:
        if keyword in copy:
            delattr(copy, keyword)
    copy.Manufacturer, copy.ManufacturerModelName = NODE_MANUFACTURER, NODE_MODEL_NAME
    copy.SoftwareVersions = node_version()
    equipment = list(source.get("ContributingEquipmentSequence") or [])
    copy.ContributingEquipmentSequence = equipment + ([scanner] if scanner is not None else []) + \
        [node_equipment_item(made_at)]
    if "Laterality" in copy and not str(copy.Laterality or "").strip():
        del copy.Laterality
    if "PerFrameFunctionalGroupsSequence" in copy and str(copy.SOPClassUID) == MRImageStorage:
        del copy.PerFrameFunctionalGroupsSequence
    for element in list(copy):
        if _retired(element.tag):
            del copy[element.tag]
    if not str(copy.get("BodyPartExamined") or "").strip():
        copy.BodyPartExamined = "HEART"


def _retired(tag) -> bool:
    """A retired public attribute of the data set's top level (PS3.6), overlay groups (drop_embedded_overlays decides
    those) and unknown tags left alone."""
    if tag.group % 2 or tag.group & 0xFF00 in (0x5000, 0x6000):
        return False
    try:
        return bool(dictionary_is_retired(tag))
    except KeyError:
        return False


def _copy(original: Dataset, series_uid: str, series_number: int, description: str,
          frame_of_reference_uid: str | None = None, instance_number: int = 1, made_at: str = "",
          placed: tuple[Sequence[float], Sequence[float]] | None = None, frame_number: int | None = None) -> Dataset:
    """The copy of `original` (module docstring); `placed`: (ImageOrientationPatient (6,), ImagePositionPatient (3,)
    mm) to declare instead of the original's - a slice of a tilted stack placed in its mean plane, pixels
    unchanged, Derivation Description PLACED_DERIVATION and SpatialLocationsPreserved NO on its source.
    `frame_number`: copy that frame (1-based) of a multi-frame `original` as a single-frame MR Image
    (single_frame_image), its Source Image Sequence item naming the frame (Referenced Frame Number) and its
    Derivation Description FRAME_PLACED_DERIVATION (only a tilted multi-frame stack is copied)."""
    source_class, source_uid = str(original.SOPClassUID), str(original.SOPInstanceUID)
    if frame_number is not None:
        original = single_frame_image(original, frame_number)
    copy = derivable_header(original)  # a shallow copy: read everything needed from the original first
    repair_dates_and_times(copy)
    if frame_of_reference_uid is not None:
        copy.FrameOfReferenceUID = frame_of_reference_uid
    copy.SOPInstanceUID = new_uid()
    copy.SeriesInstanceUID = series_uid
    copy.SeriesNumber = series_number
    copy.SeriesDescription = description[:64]
    copy.InstanceNumber = instance_number
    authored_by_the_node(copy, original, made_at)
    image_type = list(original.get("ImageType") or ["DERIVED", "SECONDARY"])
    copy.ImageType = ["DERIVED", "SECONDARY"] + image_type[2:]
    copy.DerivationDescription = DERIVATION if placed is None else \
        (PLACED_DERIVATION if frame_number is None else FRAME_PLACED_DERIVATION)
    if placed is not None:
        orientation, position = placed
        copy["ImageOrientationPatient"] = DataElement(0x00200037, "DS",
                                                      [DSfloat(float(v), auto_format=True) for v in orientation])
        copy["ImagePositionPatient"] = DataElement(0x00200032, "DS",
                                                   [DSfloat(float(v), auto_format=True) for v in position])
    drop_unsatisfied_conditionals(copy)
    if lossy_compression(original) is not None:  # PS3.3 C.7.6.1.1.5: kept whatever syntax the copy is written in
        copy.LossyImageCompression = "01"
    source = Dataset()
    source.ReferencedSOPClassUID = source_class
    source.ReferencedSOPInstanceUID = source_uid
    if frame_number is not None:
        source.ReferencedFrameNumber = frame_number
    purpose = Dataset()
    purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning = (
        SOURCE_IMAGE_PURPOSE.value, SOURCE_IMAGE_PURPOSE.scheme_designator, SOURCE_IMAGE_PURPOSE.meaning)
    source.PurposeOfReferenceCodeSequence = [purpose]
    source.SpatialLocationsPreserved = "YES" if placed is None else "NO"
    copy.SourceImageSequence = [source]
    copy.file_meta = FileMetaDataset()
    copy.file_meta.MediaStorageSOPClassUID = copy.SOPClassUID
    copy.file_meta.MediaStorageSOPInstanceUID = copy.SOPInstanceUID
    copy.file_meta.TransferSyntaxUID = transfer_syntax_of(original)
    copy = explicit_little_endian(copy)  # deliverable to every PACS, whatever syntax the scanner sent (module doc)
    drop_embedded_overlays(copy)
    return sixteen_bit(copy)


def drop_embedded_overlays(dataset: Dataset) -> None:
    """Remove, in place, every retired embedded overlay plane (60xx,0102 OverlayBitPosition without 60xx,3000
    OverlayData: its bits inside Pixel Data, PS3.5 8.1.1, retired since 2004): the Overlay Plane module of the MR Image
    IOD needs OverlayData and bit position 0 (dciodvfy refuses the copy otherwise), and a viewer would look for an
    overlay the copy's pixel values do not carry as one. Overlays with their own OverlayData are kept."""
    for group in range(0x6000, 0x6020, 2):
        if (group, 0x0102) in dataset and (group, 0x3000) not in dataset:
            for tag in [t for t in dataset.keys() if t.group == group]:
                del dataset[tag]


def sixteen_bit(dataset: Dataset) -> Dataset:
    """`dataset` (native pixel data, Explicit VR Little Endian) with 8-bit monochrome pixels of an MR Image stored in
    16 bits, in place: the MR Image module requires BitsAllocated 16 (PS3.3 C.8.3.1.1.4; a JPEG Baseline source is
    8-bit). The values are unchanged (BitsStored and HighBit kept, signed values sign-extended); other datasets are
    returned as they are. Elements are replaced, not changed (a shallow copy shares them with its source)."""
    if (str(dataset.get("SOPClassUID", "")) != MRImageStorage or int(dataset.get("BitsAllocated") or 0) != 8
            or int(dataset.get("SamplesPerPixel") or 1) != 1 or "PixelData" not in dataset):
        return dataset
    signed = int(dataset.get("PixelRepresentation") or 0) == 1
    count = int(dataset.Rows) * int(dataset.Columns) * int(dataset.get("NumberOfFrames") or 1)
    values = np.frombuffer(dataset.PixelData, dtype=np.int8 if signed else np.uint8)[:count]  # less the pad byte
    dataset["BitsAllocated"] = DataElement(0x00280100, "US", 16)
    dataset["PixelData"] = DataElement(0x7FE00010, "OW", values.astype("<i2" if signed else "<u2").tobytes())
    return dataset


def shared_frame_of_reference(segmentation: SegmentationResult) -> str | None:
    """None when the analysed images (those the volume uses: images of another examination or Frame of Reference left
    out of the stack do not count) share one Frame of Reference; else a new UID for all their copies (Sunnybrook
    gives every image its own, so a SEG could match only one of the images it references)."""
    used = {ref.sop_instance_uid for phase in getattr(segmentation.volume, "frames", None) or () for ref in phase}
    found = {str(i.dataset.get("FrameOfReferenceUID", "")) for i in segmentation.series.instances
             if not used or i.sop_instance_uid in used}
    return None if len(found) == 1 else new_uid()


def _with_pixels(instance: InstanceHeader) -> Dataset:
    """The source image with its pixel data: its file, or a copy of the dataset in memory where that holds them (the
    node reads headers without pixel data; _copy changes the dataset it is given)."""
    dataset = instance.dataset
    if isinstance(dataset, Dataset) and "PixelData" in dataset:
        return deepcopy(dataset)
    return pydicom.dcmread(instance.path)


def viewer_order(datasets: list[Dataset], frame_numbers: Sequence[int | None] | None = None,
                 spatial_order: Sequence[float] | None = None) -> list[int]:
    """Indices of `datasets` in the order a viewer shows them: by Series Number, then Instance Number (OHIF orders a
    stack by Instance Number), then (frames of one multi-frame instance) `spatial_order` where given (each frame's
    place along the stack normal, e.g. its slice index in the volume: an Enhanced MR may store its frames in any
    order, and copies numbered in frame order would show the stack shuffled), then `frame_numbers`, the given order
    breaking ties and standing in for a missing number."""
    frame_numbers = list(frame_numbers) if frame_numbers is not None else [None] * len(datasets)
    spatial = list(spatial_order) if spatial_order is not None else [0.0] * len(datasets)

    def number(dataset: Dataset, keyword: str) -> float:
        try:
            return float(dataset.get(keyword))
        except (TypeError, ValueError):
            return float("inf")

    return sorted(range(len(datasets)), key=lambda n: (number(datasets[n], "SeriesNumber"),
                                                      number(datasets[n], "InstanceNumber"),
                                                      spatial[n] if frame_numbers[n] is not None else 0.0,
                                                      frame_numbers[n] or 0, n))


def display_copies(segmentation: SegmentationResult, phase_position: int, series_number: int,
                   frame_of_reference_uid: str | None = None, started_at: dt.datetime | None = None,
                   ) -> tuple[list[Dataset], SegmentationResult]:
    """(the copies of one phase's frames, the segmentation with those frames pointing at the copies).

    One copy series per call: the frames of phase `phase_position` (an index into segmentation.phases) at every
    slice of the stack, whether or not the SEG labels anything there (its empty frames are omitted, PS3.3
    C.8.20.2): the copies of all phases then hold the same slice positions under the same Instance Numbers, so a
    reader scrolling the ED and ES copies side by side sees one level in both, the end slices where the model found
    no blood pool included. Reads each source file in full (pixel data included; _with_pixels), once per instance.
    A frame of a multi-frame source is copied as a single-frame MR Image (single_frame_image). The copies are
    numbered 1..N in the order of their sources' Series and Instance Numbers, frames of one multi-frame source in
    volume (spatial, the SEG's) order whatever their frame numbers (viewer_order). The
    returned segmentation's series holds its instances so far plus the copies (so a further call, and the SR's image
    references, find both). With `frame_of_reference_uid` (shared_frame_of_reference)
    every copy gets that Frame of Reference. `started_at` (the analysis start, as on the SEG; default now) is the
    node's Contribution DateTime. When any of the stack's sources is tilted against the volume's mean plane
    (`tilted_sources`), every copy is placed in that plane: ImageOrientationPatient the volume's orientation
    (exactly the SEG's) and ImagePositionPatient the volume's position of its slice (mm), pixels unchanged.
    Raises ValueError for a multi-frame source that is not tilted (such frames are copied only to be placed).
    """
    made_at = (started_at or dt.datetime.now().astimezone()).strftime("%Y%m%d%H%M%S.%f%z")
    by_uid = {i.sop_instance_uid: i for i in segmentation.series.instances}
    series_uid = new_uid()
    name = segmentation.phase_names[phase_position]
    phase = PHASE_ABBREVIATIONS.get(name.strip().lower(), name)
    phase_index = segmentation.phases[phase_position]
    frames = [list(row) for row in segmentation.volume.frames]
    slices = list(range(len(frames[phase_index])))
    refs = [frames[phase_index][k] for k in slices]
    tilted = bool(tilted_sources(segmentation))
    if any(ref.frame_number is not None for ref in refs) and not tilted:
        raise ValueError("display copies of a multi-frame source are made only where its stack is tilted")
    read: dict[str, Dataset] = {}  # a multi-frame source is read once for all its frames (_copy leaves it as it is)
    for ref in refs:
        if ref.sop_instance_uid not in read:
            read[ref.sop_instance_uid] = _with_pixels(by_uid[ref.sop_instance_uid])
    originals = [read[ref.sop_instance_uid] for ref in refs]
    # the phase first, where a viewer's series list (OHIF: about 24 characters) still shows it
    source_text = without_control_characters(str(originals[0].get('SeriesDescription') or segmentation.pipeline))
    said = f"{phase} copy of  for AI SEG"
    description = f"{phase} copy of {source_text[:max(64 - len(said), 0)].rstrip()} for AI SEG"
    copies: list[Dataset] = [None] * len(slices)  # type: ignore[list-item]
    headers: list[InstanceHeader] = [None] * len(slices)  # type: ignore[list-item]
    orientation = [float(v) for v in np.asarray(segmentation.volume.orientation, float)]
    positions = np.asarray(segmentation.volume.positions, float)
    for number, n in enumerate(viewer_order(originals, [ref.frame_number for ref in refs], slices), start=1):
        placed = (orientation, positions[slices[n]]) if tilted else None
        copy = _copy(originals[n], series_uid, series_number, description, frame_of_reference_uid, number, made_at,
                     placed, refs[n].frame_number)
        copies[n] = copy
        headers[n] = InstanceHeader(by_uid[refs[n].sop_instance_uid].path, str(copy.SOPInstanceUID),
                                    str(copy.SOPClassUID), series_uid, copy)
        frames[phase_index][slices[n]] = FrameRef(str(copy.SOPInstanceUID), str(copy.SOPClassUID), series_uid, None)
    series = replace(segmentation.series,
                     series_instance_uids=list(segmentation.series.series_instance_uids) + [series_uid],
                     instances=list(segmentation.series.instances) + headers)
    volume = replace(segmentation.volume, frames=frames)
    copies.sort(key=lambda copy: int(copy.InstanceNumber))
    return copies, replace(segmentation, series=series, volume=volume)
