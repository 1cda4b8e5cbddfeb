"""DICOM Segmentation (highdicom) of a SegmentationResult: mutually exclusive segments, one SEG per phase and source
series, referencing every source frame exactly.

The form is chosen for OHIF v3 without leaving the standard (PS3.3 A.51 Segmentation IOD, C.8.20):
- segments never overlap (LV blood pool, non-enhanced myocardium, scar, MVO, RV blood pool): OHIF draws only the first
  of overlapping segments; unions (whole myocardium, scar incl. MVO) are measured in the SR;
- a SEG declares only the segments its frames carry (C.8.20.2), numbered 1..n in that SEG: no scar segment without
  scar, no MVO segment in a per-slice SEG whose slice has none (segment_plan, part_segment_plan);
- only the functional groups of the Segmentation IOD (A.51: pixel measures, plane position and orientation,
  derivation image, frame content, segmentation): no Frame Anatomy, which would make the SEG a Standard
  Extended SOP Class; Laterality (C.7.3.1, Type 2C) is not required of the unpaired heart, and no Body Part Examined
  is written (pixelmed asks for Laterality anyway, as it leaves out the "paired structure" condition: a known false
  positive, tests/results/validators.py);
- one SEG per source series and per cardiac phase: OHIF attaches a SEG to one series, and it matches SEG frames to the
  images of that series, so a stack sent as one series per slice (Siemens) gets one SEG per slice, and a cine stack
  gets an ED and an ES SEG, and an RV ED / RV ES SEG of the RV blood pool alone where RV EDV / ESV were read at
  another phase than the LV's (analysis.cine.segmented_phases), its segment labelled "RV blood pool; RV at ES
  (phase 8)": the RV outline a reader sees is the one its volume was measured on;
- BINARY frames are bit-packed back to back (C.8.20.2.1); when Rows x Columns is not a multiple of 8 the frames do not
  start on byte boundaries and an odd total length is padded, which OHIF's reader rejects ("calculated length ...
  does not match the actual length ..."): such SEGs are written FRACTIONAL (one byte per pixel, values 0 and
  Maximum Fractional Value only), which OHIF reads as binary.
"""
from __future__ import annotations

import copy
import datetime as dt
from dataclasses import dataclass
from typing import Iterable, Sequence

import highdicom as hd
import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.valuerep import DSfloat
from pydicom.sr.coding import Code

from dicomnode.analysis import phase_text
from dicomnode.analysis.pipeline import SegmentationResult
from dicomnode.cmr.frames import ORIENTATION_NOISE
from dicomnode.cmr.source_encoding import lossy_compression
from dicomnode.cmr.types import FrameRef
from dicomnode.labels import MYOCARDIUM_LABELS, Label
from dicomnode.results import codes
from dicomnode.results.headers import derivable_header
from dicomnode.results.provenance import (NODE_MANUFACTURER, NODE_MODEL_NAME, ai_series_description, apply_provenance,
                                         node_version)
from dicomnode.uids import ENHANCED_MR_STORAGE_CLASSES, new_uid

SOURCE_IMAGE_PURPOSE = Code("121322", "DCM", "Source image for image processing operation")


@dataclass(frozen=True)
class SegmentKind:
    """One coded segment of the node's label map: which node labels it unites and how it is coded."""

    key: str
    labels: tuple[int, ...]
    label: str
    category: Code
    property_type: Code
    description: str
    rgb: tuple[int, int, int]


SEGMENT_KINDS = {
    "lv_blood_pool": SegmentKind(
        "lv_blood_pool", (Label.LV_BLOOD_POOL,), "LV blood pool", codes.ANATOMICAL_STRUCTURE, codes.LEFT_VENTRICLE,
        "LV cavity (node label 1)", (220, 40, 40)),
    "lv_myocardium": SegmentKind(
        "lv_myocardium", tuple(MYOCARDIUM_LABELS), "LV myocardium", codes.ANATOMICAL_STRUCTURE, codes.LV_MYOCARDIUM,
        "Whole LV myocardium", (40, 180, 60)),
    "lv_myocardium_nonenhanced": SegmentKind(
        "lv_myocardium_nonenhanced", (Label.LV_MYOCARDIUM,), "LV myocardium, non-enhanced", codes.ANATOMICAL_STRUCTURE,
        codes.LV_MYOCARDIUM, "Myocardium without LGE (label 2)", (40, 180, 60)),
    "scar": SegmentKind(
        "scar", (Label.SCAR,), "Scar (LGE) without MVO", codes.TISSUE, codes.SCAR_TISSUE,
        "LGE scar without MVO (label 3)", (250, 210, 0)),
    "mvo": SegmentKind(
        "mvo", (Label.MVO,), "MVO", codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE, codes.MVO,
        "Microvascular obstruction (label 4)", (150, 60, 220)),
    "rv_blood_pool": SegmentKind(
        "rv_blood_pool", (Label.RV_BLOOD_POOL,), "RV blood pool", codes.ANATOMICAL_STRUCTURE, codes.RIGHT_VENTRICLE,
        "RV cavity (node label 5)", (40, 110, 230)),
}

#: segments each pipeline may write, mutually exclusive: only labels that pipeline produces; a SEG declares those
#: with at least one voxel in the phases and slices it covers (segment_plan)
PIPELINE_SEGMENTS = {
    "cine": ("lv_blood_pool", "lv_myocardium", "rv_blood_pool"),
    "lge": ("lv_blood_pool", "lv_myocardium_nonenhanced", "scar", "mvo", "rv_blood_pool"),
}

PHASE_ABBREVIATIONS = {"end diastole": "ED", "end systole": "ES", "rv end diastole": "RV ED", "rv end systole": "RV ES"}
#: the phase names of the RV's own ED / ES (analysis.cine.RV_PHASE_NAMES: RV EDV / ESV read at another phase than the
#: LV's), whose segments say so with the phase: "RV blood pool; RV at ES (phase 8)"
RV_OWN_PHASES = {"rv end diastole": "ED", "rv end systole": "ES"}
#: after the Segment Label and the Segment Description of a segment whose labels the model card does not validate
#: (LGE MVO: summary lge.mvo_validation), so that a viewer listing segments shows it beside the region
UNVALIDATED_LABEL = " (not validated)"
#: after every segment label of a label map written for review only (SegmentationResult.unreliable: the LGE numbers
#: withheld), and first in its series description (OHIF's series list shows about 22 characters)
UNRELIABLE_LABEL = " (unreliable)"
REVIEW_ONLY = "REVIEW ONLY"
UNVALIDATED_DESCRIPTION = ", not validated"


def _phase_numbers(volume) -> list[int] | None:
    """The acquisition phase number of each phase of a Volume; None for a volume without them."""
    numbers = getattr(volume, "acquisition_phase_numbers", None)
    return list(numbers()) if callable(numbers) else None


def segment_phase_text(phase_name: str, phase_index: int, numbers=None) -> str:
    """The phase part of a SegmentDescription, 1-based as a viewer counts phases (the SR's index is 0-based):
    "; ES, phase 7 (1-based)", "; RV at ES, phase 8 (1-based)" for the RV's own phase (RV_OWN_PHASES); `numbers`: the
    acquisition phase number of each volume phase (cmr.types.Volume.acquisition_phase_numbers)."""
    name = phase_name.strip().lower()
    what = f"RV at {RV_OWN_PHASES[name]}" if name in RV_OWN_PHASES else PHASE_ABBREVIATIONS.get(name, phase_name)
    return f"; {what}, {phase_text.phase_name(phase_index, numbers)} (1-based)"


def segment_label_phase(phase_name: str, phase_index: int, numbers=None) -> str:
    """What follows a cine segment's label to name its phase: " ED", " ES", or for the RV's own phase (RV_OWN_PHASES)
    "; RV at ES (phase 8)" (1-based, as a viewer counts; `numbers` as segment_phase_text); "" for a phase of no
    such name (LGE)."""
    name = phase_name.strip().lower()
    if name in RV_OWN_PHASES:
        return f"; RV at {RV_OWN_PHASES[name]} ({phase_text.phase_name(phase_index, numbers)})"
    return f" {PHASE_ABBREVIATIONS[name]}" if name in PHASE_ABBREVIATIONS else ""


def rv_own_phases(result: SegmentationResult) -> dict[str, int]:
    """The RV's own ED / ES a cine segmentation carries (RV_OWN_PHASES: RV EDV / ESV read at another phase than the
    LV's), as {"ED": phase index, "ES": phase index} (0-based); {} where the RV is read at the LV's phases."""
    return {RV_OWN_PHASES[name.strip().lower()]: int(index) for name, index in zip(result.phase_names, result.phases)
            if name.strip().lower() in RV_OWN_PHASES}


def rv_at_lv_phase_label(phase_name: str, phase_index: int, rv_phase_index: int, numbers=None) -> str:
    """The label of the RV segment at the LV's ED / ES (`phase_name`) where RV EDV / ESV were read at the RV's own
    phase `rv_phase_index` (RV_OWN_PHASES, whose own SEG holds that RV): "RV blood pool at LV ED (phase 20); RV EDV
    read at phase 1", so that OHIF, which shows the Segment Label alone, does not show two outlines both reading as
    the RV at ED (break51c #2). 1-based phases (`numbers` as segment_phase_text)."""
    abbreviation = PHASE_ABBREVIATIONS[phase_name.strip().lower()]
    return (f"RV blood pool at LV {abbreviation} ({phase_text.phase_name(phase_index, numbers)}); "
            f"RV {abbreviation}V read at {phase_text.phase_name(rv_phase_index, numbers)}")


@dataclass(frozen=True)
class PlannedSegment:
    """A segment of the SEG: its number, kind and (for multi-phase results) the phase it belongs to."""

    number: int
    kind: SegmentKind
    phase_position: int  # index into result.phases / result.phase_names
    phase_index: int  # index into the volume's phase axis
    phase_name: str
    label: str
    validated: bool = True  # False: the model card does not validate it (SegmentationResult.unvalidated_labels)


@dataclass(frozen=True)
class SegPart:
    """What one SEG object covers: phases (positions into result.phases) and slices, all from one source series."""

    phase_positions: tuple[int, ...]
    slices: tuple[int, ...]
    series_instance_uid: str | None = None


def seg_parts(result: SegmentationResult) -> list[SegPart]:
    """One part per cardiac phase and per source series of that phase's frames (see the module docstring); a part
    with no segmented voxel is left out (its SEG would declare no segment, and PS3.3 C.8.20.2 requires one)."""
    parts = []
    for position, phase_index in enumerate(result.phases):
        by_series: dict[str, list[int]] = {}
        for k, ref in enumerate(result.volume.frames[phase_index]):
            by_series.setdefault(ref.series_instance_uid, []).append(k)
        parts += [SegPart((position,), tuple(slices), uid) for uid, slices in by_series.items()
                  if segment_plan(result, (position,), slices)]
    return parts


def _labelmap(result: SegmentationResult) -> np.ndarray:
    """The result's label map, checked to be (phases, slices, rows, cols) of its volume."""
    labelmap = np.asarray(result.labelmap)
    expected = (len(result.phases),) + tuple(result.volume.pixels.shape[1:])
    if labelmap.shape != expected:
        raise ValueError(f"labelmap shape {labelmap.shape} does not match (phases, slices, rows, cols) = {expected}")
    return labelmap


def segment_plan(result: SegmentationResult, phase_positions: Sequence[int] | None = None,
                 slices: Sequence[int] | None = None) -> list[PlannedSegment]:
    """Segments of the SEG written for a result, or for the given phases and slices of it (one SEG part, see
    seg_parts and part_segment_plan), numbered from 1 in that SEG.

    Only segments with at least one voxel in those phases and slices are declared: a segment is the subject of
    frames (PS3.3 C.8.20.2; empty frames are omitted, so an empty segment would have none) and its Segment Number
    starts at 1 and increases by 1 (C.8.20.2), so the numbers are those of one SEG - a no-scar study has
    no scar segment, a per-slice SEG none of the kinds absent from its slice. Cine segments carry their phase in the
    label ("LV blood pool ED"; at the RV's own phase "RV blood pool; RV at ES (phase 8)", segment_label_phase; the
    RV at the LV's phase, where the RV has its own, "RV blood pool at LV ES (phase 7); RV ESV read at phase 8",
    rv_at_lv_phase_label); when
    one SEG holds several phases, each phase has its own segments whose frames reference that phase's source frames
    (highdicom refuses duplicate plane positions in one segment, and the ED and ES frames of a slice share their
    position).
    """
    if result.pipeline not in PIPELINE_SEGMENTS:
        raise ValueError(f"no SEG segments defined for pipeline {result.pipeline!r} "
                         f"(known: {sorted(PIPELINE_SEGMENTS)})")
    if len(result.phases) != len(result.phase_names) or not result.phases:
        raise ValueError(f"phases {result.phases} and phase_names {result.phase_names} must be non-empty and match")
    positions = range(len(result.phases)) if phase_positions is None else phase_positions
    labelmap = _labelmap(result)
    covered = slice(None) if slices is None else list(slices)
    planned = []
    rv_own = rv_own_phases(result)
    for position in positions:
        phase_index, phase_name = result.phases[position], result.phase_names[position]
        suffix = segment_label_phase(phase_name, phase_index, _phase_numbers(result.volume))
        # the RV at the LV's phase, where RV EDV / ESV were read at the RV's own (a SEG of its own holds that RV)
        rv_elsewhere = rv_own.get(PHASE_ABBREVIATIONS.get(phase_name.strip().lower(), ""))
        present = set(np.unique(labelmap[position][covered]).tolist())
        unvalidated = {int(v) for v in getattr(result, "unvalidated_labels", ()) or ()}
        for key in PIPELINE_SEGMENTS[result.pipeline]:
            kind = SEGMENT_KINDS[key]
            if present.isdisjoint(kind.labels):
                continue
            validated = not {int(v) for v in kind.labels} <= unvalidated
            label = kind.label + ("" if validated else UNVALIDATED_LABEL) + suffix
            if key == "rv_blood_pool" and rv_elsewhere is not None:
                label = rv_at_lv_phase_label(phase_name, phase_index, rv_elsewhere, _phase_numbers(result.volume))
            planned.append(PlannedSegment(len(planned) + 1, kind, position, phase_index, phase_name,
                                          label + (UNRELIABLE_LABEL if getattr(result, "unreliable", False) else ""),
                                          validated))
    return planned


def part_segment_plan(result: SegmentationResult, part: SegPart | None) -> list[PlannedSegment]:
    """The segments, with their numbers, of the SEG that build_seg writes for `part` of a result (None: the SEG of
    the whole result): what a reference to a segment of that SEG (SR TID 1411, 121191) must use."""
    if part is None:
        return segment_plan(result)
    return segment_plan(result, part.phase_positions, part.slices)


def segment_masks(result: SegmentationResult, plan: Sequence[PlannedSegment]) -> np.ndarray:
    """(slices, rows, cols, segments) uint8 stacked-segment masks of the result's label map."""
    labelmap = _labelmap(result)
    masks = np.zeros(labelmap.shape[1:] + (len(plan),), dtype=np.uint8)
    for i, segment in enumerate(plan):
        masks[..., i] = np.isin(labelmap[segment.phase_position], segment.kind.labels)
    return masks


class SegNotExpressible(ValueError):
    """The analysed frames cannot be written as a SEG referencing its sources (the reason names the input); the
    analysis itself stands and its measurements still go into the SR."""


def _is_multiframe(ds: Dataset) -> bool:
    return int(ds.get("NumberOfFrames", 1) or 1) > 1 or "PerFrameFunctionalGroupsSequence" in ds


def frames_without_geometry(source: Dataset) -> list[int]:
    """1-based numbers of the frames of a multi-frame source that have no Per-Frame Functional Groups item, or whose
    item and the Shared one hold no Plane Position (0020,9113) (PS3.3 C.7.6.16: NumberOfFrames items, one per frame).
    highdicom reads the position of every source frame, so such a source cannot be referenced by a SEG as it is."""
    if int(source.get("NumberOfFrames", 1) or 1) <= 1 and str(source.get("SOPClassUID", "")) \
            not in ENHANCED_MR_STORAGE_CLASSES:
        return []  # a single-frame image (some carry a stray functional groups sequence: not read for it)
    per_frame = list(source.get("PerFrameFunctionalGroupsSequence") or [])
    count = int(source.get("NumberOfFrames", len(per_frame)) or len(per_frame))
    shared = _group_item(source, "SharedFunctionalGroupsSequence")
    if shared is not None and "PlanePositionSequence" in shared:
        return list(range(len(per_frame) + 1, count + 1))
    return [k + 1 for k in range(count)
            if k >= len(per_frame) or _group_item(per_frame[k], "PlanePositionSequence") is None]


def _index_sources(source_datasets: Iterable[Dataset]) -> dict[str, Dataset]:
    return {str(ds.SOPInstanceUID): ds for ds in source_datasets}


def _source_item(ref: FrameRef, preserved: bool = True) -> Dataset:
    """A Source Image Sequence item naming `ref`; SpatialLocationsPreserved (0028,135A) YES, or NO for a source
    whose plane the SEG frame does not share (a slice tilted against the stack's mean plane, `stack_plane`)."""
    item = Dataset()
    item.ReferencedSOPClassUID = ref.sop_class_uid
    item.ReferencedSOPInstanceUID = ref.sop_instance_uid
    if ref.frame_number is not None:
        item.ReferencedFrameNumber = ref.frame_number
    purpose = Dataset()
    purpose.CodeValue = SOURCE_IMAGE_PURPOSE.value
    purpose.CodingSchemeDesignator = SOURCE_IMAGE_PURPOSE.scheme_designator
    purpose.CodeMeaning = SOURCE_IMAGE_PURPOSE.meaning
    item.PurposeOfReferenceCodeSequence = [purpose]
    item.SpatialLocationsPreserved = "YES" if preserved else "NO"
    return item


def _point_frames_at_sources(seg: Dataset, result: SegmentationResult, plan: Sequence[PlannedSegment],
                             slices: Sequence[int], relocated: frozenset[str] = frozenset()) -> None:
    """Make every frame's Derivation Image Sequence reference exactly its own source frame (phase and slice).

    highdicom matches frames to sources by position, which cannot tell the ED from the ES frame of one slice.
    `relocated`: the sources whose own plane the SEG frame does not share (SpatialLocationsPreserved NO): SOP
    Instance UIDs of classic images, (SOP Instance UID, frame number) of multi-frame frames (`relocated_sources`).
    """
    by_number = {segment.number: segment for segment in plan}
    positions = np.asarray(result.volume.positions, dtype=float)[list(slices)]
    for frame in seg.PerFrameFunctionalGroupsSequence:
        number = int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        position = np.asarray(frame.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        distances = np.linalg.norm(positions - position, axis=1)
        nearest = int(np.argmin(distances))
        if distances[nearest] > 1e-2:
            raise ValueError(f"SEG frame at {position.tolist()} matches no slice of the source volume")
        ref = result.volume.frames[by_number[number].phase_index][slices[nearest]]
        derivations = frame.get("DerivationImageSequence")
        if derivations:
            derivation = derivations[0]
        else:
            derivation = Dataset()
            code = Dataset()
            code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = (
                "113076", "DCM", "Segmentation image derivation")
            derivation.DerivationCodeSequence = [code]
            frame.DerivationImageSequence = [derivation]
        moved = ref.sop_instance_uid in relocated or (ref.sop_instance_uid, ref.frame_number) in relocated
        derivation.SourceImageSequence = [_source_item(ref, not moved)]


def _segment_identification_per_frame(seg: Dataset) -> None:
    """Move a Segment Identification Sequence (0062,000A) that highdicom (0.28) put into the Shared Functional Groups
    - it does so where every frame references one segment: an RV SEG of the RV's own phase declares the RV blood
    pool alone - into each frame's Per-Frame Functional Groups item, where the SEGs of several segments carry it and
    the node's own frame handling (_even_pixel_data, _point_frames_at_sources) reads it. Both places are valid (PS3.3
    C.7.6.16); the per-frame one is the form every SEG reader handles. Nothing changes where it is per-frame."""
    shared = _group_item(seg, "SharedFunctionalGroupsSequence")
    if shared is None or "SegmentIdentificationSequence" not in shared:
        return
    identification = shared.SegmentIdentificationSequence
    del shared.SegmentIdentificationSequence
    for frame in seg.PerFrameFunctionalGroupsSequence:
        frame.SegmentIdentificationSequence = copy.deepcopy(identification)


def _even_pixel_data(seg: Dataset) -> None:
    """Give a FRACTIONAL SEG an even number of Pixel Data bytes where Rows x Columns x frames is odd, so that it
    needs no pad byte: PS3.5 8.1.1 pads an odd OB value with one trailing byte, and OHIF's whole-instance read
    divides the Pixel Data length by Number of Frames and rejects the SEG ("Invalid frame length: 1305606 for 5
    frames", break46a #4). The frame added is an empty frame of a declared segment on a plane position the SEG
    already holds where that segment has none (omitted by highdicom as empty): a frame the standard allows and
    that labels nothing. Where every declared segment has a frame on every position (one slice holding every
    segment) there is no such frame: the SEG keeps its odd length (a frame for a segment and position already
    there would make frames ambiguous) and OHIF falls back to reading it frame by frame."""
    frames = list(seg.PerFrameFunctionalGroupsSequence)
    frame_bytes = int(seg.Rows) * int(seg.Columns)
    if (frame_bytes * len(frames)) % 2 == 0:
        return
    by_position = {}
    for frame in frames:
        position_index = int(frame.FrameContentSequence[0].DimensionIndexValues[1])
        by_position.setdefault(position_index, frame)
    present = {(int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber),
                int(frame.FrameContentSequence[0].DimensionIndexValues[1])) for frame in frames}
    for segment in (int(item.SegmentNumber) for item in seg.SegmentSequence):
        for position_index in sorted(by_position):
            if (segment, position_index) in present:
                continue
            empty = copy.deepcopy(by_position[position_index])
            empty.SegmentIdentificationSequence[0].ReferencedSegmentNumber = segment
            empty.FrameContentSequence[0].DimensionIndexValues = [segment, position_index]
            seg.PerFrameFunctionalGroupsSequence.append(empty)
            seg.NumberOfFrames = len(frames) + 1
            seg.PixelData = bytes(seg.PixelData[:frame_bytes * len(frames)]) + bytes(frame_bytes)
            return


def _group_item(container: Dataset | None, keyword: str) -> Dataset | None:
    sequence = container.get(keyword) if container is not None else None
    return sequence[0] if sequence else None


def source_slice_thickness(source: Dataset, frame_number: int | None) -> float | None:
    """Slice Thickness of a source image in mm: the classic attribute, else (Enhanced MR) the Pixel Measures
    functional group of the referenced frame, per-frame or shared (PS3.3 C.7.6.16.2.1: either holds it); None when
    absent."""
    if source.get("SliceThickness") not in (None, ""):
        return float(source.SliceThickness)
    per_frame = source.get("PerFrameFunctionalGroupsSequence") or []
    frame_item = per_frame[frame_number - 1] if frame_number and frame_number <= len(per_frame) else None
    for container in (frame_item, _group_item(source, "SharedFunctionalGroupsSequence")):
        measures = _group_item(container, "PixelMeasuresSequence")
        if measures is not None and measures.get("SliceThickness") not in (None, ""):
            return float(measures.SliceThickness)
    return None


def _shallow_copy(source: Dataset) -> Dataset:
    """A copy sharing the source's data elements (and file meta): replace an element in it, never set its value."""
    copy = Dataset()
    copy.update(source)
    if hasattr(source, "file_meta"):
        copy.file_meta = source.file_meta
    return copy


def with_shared_geometry(source: Dataset, pixel_measures: hd.PixelMeasuresSequence,
                         plane_orientation: hd.PlaneOrientationSequence) -> Dataset:
    """A shallow copy of a multi-frame source header whose Shared Functional Groups item holds Pixel Measures and
    Plane Orientation, for highdicom to read.

    PS3.3 C.7.6.16 lets an Enhanced MR image keep either functional group per frame (Philips does), but highdicom
    (0.28) reads a multi-frame source's Pixel Measures and Plane Orientation from its Shared Functional Groups
    only, even when the SEG's own are given ("Source images must have a shared orientation", AttributeError
    PixelMeasuresSequence). The copy's shared item gets those of the analysed stack, which the SEG declares: every
    frame of the stack has them (the volume is built from frames with one orientation and pixel spacing). Only
    highdicom sees the copy; the source itself is not changed.
    """
    shared = _group_item(source, "SharedFunctionalGroupsSequence")
    item = Dataset()
    if shared is not None:
        item.update(shared)  # the source's own groups stay as they are
    if "PixelMeasuresSequence" not in item:
        item.PixelMeasuresSequence = pixel_measures
    if "PlaneOrientationSequence" not in item:
        item.PlaneOrientationSequence = plane_orientation
    copy = _shallow_copy(source)
    if "SharedFunctionalGroupsSequence" in copy:
        del copy.SharedFunctionalGroupsSequence
    copy.SharedFunctionalGroupsSequence = [item]
    return copy


def with_orientation(source: Dataset, orientation: Sequence[float]) -> Dataset:
    """A shallow copy of a classic (single-frame) source header whose ImageOrientationPatient (0020,0037) is
    `orientation` (6,), for highdicom to read: highdicom (0.28) requires the source images of a SEG to carry
    exactly equal orientations ("Source images must have a shared orientation"), where slices of one stack may differ
    in the last digit or by a fraction of a degree (the node groups planes within `cmr.frames.orientation_groups`'s
    tolerance, and the SEG declares the stack's mean plane, `cmr.frames.stack_plane`). Only highdicom sees the
    copy; the source is not changed."""
    copy = _shallow_copy(source)
    copy["ImageOrientationPatient"] = DataElement(0x00200037, "DS", [DSfloat(v, auto_format=True) for v in orientation])
    return copy


def _source_planes(ds: Dataset):
    """(key, ImageOrientationPatient (6,), ImagePositionPatient (3,) mm) of each image of a source: key its SOP
    Instance UID for a classic image; (SOP Instance UID, frame number) for each frame of a multi-frame one, read from
    its Plane Orientation / Plane Position functional groups (per-frame, else shared; PS3.3 C.7.6.16.2.3-4). Images
    without both are skipped."""
    uid = str(ds.SOPInstanceUID)
    if not _is_multiframe(ds):
        yield uid, ds.get("ImageOrientationPatient") or (), ds.get("ImagePositionPatient") or ()
        return
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
    for index, item in enumerate(ds.get("PerFrameFunctionalGroupsSequence") or []):
        groups = [g for g in (item, shared) if g is not None]
        orientation = next((g.PlaneOrientationSequence[0].get("ImageOrientationPatient") for g in groups
                            if g.get("PlaneOrientationSequence")), ())
        position = next((g.PlanePositionSequence[0].get("ImagePositionPatient") for g in groups
                         if g.get("PlanePositionSequence")), ())
        yield (uid, index + 1), orientation or (), position or ()


def relocated_sources(sources: Sequence[Dataset], orientation: Sequence[float], positions: np.ndarray,
                      tolerance: float = ORIENTATION_NOISE) -> frozenset:
    """The source images whose ImageOrientationPatient differs from the SEG's `orientation` (6,) by more than
    `tolerance` (direction cosines), or whose ImagePositionPatient lies more than 0.01 mm from every SEG plane
    position in `positions` (n, 3) mm (PS3.3 C.7.6.2): their pixels are not at the SEG's locations. A classic image
    is named by its SOP Instance UID, a frame of a multi-frame source (Enhanced MR, per-frame Plane Orientation /
    Position) by (SOP Instance UID, frame number) (`_source_planes`)."""
    moved = set()
    for ds in sources:
        for key, own_orientation, own_position in _source_planes(ds):
            own_orientation = np.asarray([float(v) for v in own_orientation], float)
            own_position = np.asarray([float(v) for v in own_position], float)
            if own_orientation.shape != (6,) or own_position.shape != (3,):
                continue
            if (np.max(np.abs(own_orientation - np.asarray(orientation, float))) > tolerance
                    or np.min(np.linalg.norm(np.asarray(positions, float) - own_position, axis=1)) > 1e-2):
                moved.add(key)
    return frozenset(moved)


def segmentation_type_for(rows: int, columns: int) -> hd.seg.SegmentationTypeValues:
    """BINARY when every bit-packed frame starts on a byte boundary (Rows x Columns a multiple of 8), else FRACTIONAL
    (see the module docstring: OHIF rejects the padded odd-length data of unaligned BINARY frames)."""
    if rows * columns % 8 == 0:
        return hd.seg.SegmentationTypeValues.BINARY
    return hd.seg.SegmentationTypeValues.FRACTIONAL


def build_seg(
    result: SegmentationResult,
    source_datasets: Iterable[Dataset],
    context,
    series_number: int,
    part: SegPart | None = None,
) -> Dataset:
    """A highdicom Segmentation of `result` (or of `part` of it, see seg_parts), in the source study, new series,
    IHE AIR provenance.

    `source_datasets` are the header datasets (no pixel data needed) of at least every frame the result covers.
    """
    started_at: dt.datetime = context.started_at
    volume = result.volume
    if part is None:
        part = SegPart(tuple(range(len(result.phases))), tuple(range(volume.pixels.shape[1])))
    slices = list(part.slices)
    plan = part_segment_plan(result, part)
    if not plan:
        raise ValueError(f"no segmented voxel in the phases {list(part.phase_positions)} and slices {slices} of the "
                         f"{result.pipeline} result: a SEG needs at least one segment (PS3.3 C.8.20.2)")
    masks = segment_masks(result, plan)[slices]
    sources = _index_sources(source_datasets)

    refs = [volume.frames[result.phases[p]][k] for p in part.phase_positions for k in slices]
    missing = sorted({r.sop_instance_uid for r in refs} - set(sources))
    if missing:
        raise ValueError(f"{len(missing)} source instance(s) of the result are not among source_datasets: "
                         f"{missing[:3]}")
    ordered_uids = list(dict.fromkeys(r.sop_instance_uid for r in refs))
    for uid in ordered_uids:
        lacking = frames_without_geometry(sources[uid])
        if lacking:
            raise SegNotExpressible(
                f"source instance {uid} has {len(lacking)} frame(s) without their per-frame functional groups or "
                f"plane position (frame {', '.join(str(k) for k in lacking[:5])} of "
                f"{sources[uid].get('NumberOfFrames', '?')}); the analysis left them out, but a SEG referencing "
                "this instance needs the position of every frame")
    first = sources[refs[0].sop_instance_uid]
    primary_series = str(first.SeriesInstanceUID)
    # highdicom takes either single-frame images of one series or exactly one multi-frame image as its sources; the
    # other images of a series mixing both forms are further sources (each SEG frame names its own source anyway)
    primary = [derivable_header(sources[uid]) for uid in ordered_uids
               if str(sources[uid].SeriesInstanceUID) == primary_series and not _is_multiframe(sources[uid])]
    if _is_multiframe(first):
        primary = [derivable_header(first)]
    primary_uids = {str(ds.SOPInstanceUID) for ds in primary}
    further = [derivable_header(sources[uid]) for uid in ordered_uids if uid not in primary_uids]

    orientation = [float(v) for v in np.asarray(volume.orientation, dtype=float)]
    thickness = source_slice_thickness(first, refs[0].frame_number)
    pixel_measures = hd.PixelMeasuresSequence(
        pixel_spacing=[float(volume.pixel_spacing[0]), float(volume.pixel_spacing[1])],
        slice_thickness=float(thickness) if thickness else float(volume.slice_spacing),
        spacing_between_slices=float(volume.slice_spacing) if len(slices) > 1 else None,
    )
    plane_orientation = hd.PlaneOrientationSequence(hd.CoordinateSystemNames.PATIENT, orientation)
    positions = np.asarray(volume.positions, dtype=float)[slices]
    relocated = relocated_sources([sources[uid] for uid in ordered_uids], orientation, positions)
    if len(primary) == 1 and "PerFrameFunctionalGroupsSequence" in primary[0]:
        primary = [with_shared_geometry(primary[0], pixel_measures, plane_orientation)]
    elif len({tuple(float(v) for v in ds.get("ImageOrientationPatient") or ()) for ds in primary}) > 1:
        primary = [with_orientation(ds, orientation) for ds in primary]
    plane_positions = [
        hd.PlanePositionSequence(hd.CoordinateSystemNames.PATIENT, [float(v) for v in position])
        for position in positions
    ]
    algorithm = result.algorithm
    descriptions = []
    for segment in plan:
        description = hd.seg.SegmentDescription(
            segment_number=segment.number,
            segment_label=segment.label[:64],
            segmented_property_category=segment.kind.category,
            segmented_property_type=segment.kind.property_type,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name=algorithm.name[:64], family=codes.ARTIFICIAL_INTELLIGENCE, version=algorithm.version[:64],
                source=algorithm.manufacturer[:64],
            ),
            tracking_uid=new_uid(),
            tracking_id=f"{segment.label} #{segment.number}"[:64],
            display_color=hd.color.CIELabColor.from_rgb(*segment.kind.rgb),
        )
        phase_text = segment_phase_text(segment.phase_name, segment.phase_index, _phase_numbers(result.volume)) \
            if len(result.phases) > 1 else ""
        qualifier = "" if segment.validated else UNVALIDATED_DESCRIPTION
        description.SegmentDescription = segment.kind.description + qualifier + phase_text  # <= 64 (LO)
        descriptions.append(description)

    pipeline_name = "LGE" if result.pipeline == "lge" else "cine"
    phase_names = [result.phase_names[p] for p in part.phase_positions]
    rows, columns = masks.shape[1:3]
    segmentation_type = segmentation_type_for(rows, columns)
    fractional = segmentation_type == hd.seg.SegmentationTypeValues.FRACTIONAL
    seg = hd.seg.Segmentation(
        source_images=primary,
        further_source_images=further or None,
        pixel_array=masks.astype(np.float32) if fractional else masks,
        segmentation_type=segmentation_type,
        fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY if fractional else None,
        max_fractional_value=1 if fractional else 255,
        segment_descriptions=descriptions,
        series_instance_uid=new_uid(),
        series_number=series_number,
        sop_instance_uid=new_uid(),
        instance_number=1,
        manufacturer=NODE_MANUFACTURER,
        manufacturer_model_name=NODE_MODEL_NAME,
        software_versions=node_version(),
        device_serial_number=algorithm.device_uid[-16:],
        content_label=f"{pipeline_name.upper()}_SEG",
        content_description=(f"{REVIEW_ONLY}: AI {pipeline_name} SEG unreliable, numbers not determined"
                             if getattr(result, "unreliable", False) else
                             f"AI {pipeline_name} segmentation ({', '.join(phase_names)}), unverified")[:64],
        content_creator_name=None,
        pixel_measures=pixel_measures,
        plane_orientation=plane_orientation,
        plane_positions=plane_positions,
        omit_empty_frames=True,
        coding_schemes=codes.coding_schemes(),
        series_date=started_at.date(),
        series_time=started_at.time(),
        content_date=started_at.date(),
        content_time=started_at.time(),
    )
    _segment_identification_per_frame(seg)
    if fractional:
        _even_pixel_data(seg)
    _point_frames_at_sources(seg, result, plan, slices, relocated)
    if any(lossy_compression(sources[uid]) for uid in ordered_uids):
        seg.LossyImageCompression = "01"  # PS3.3 C.7.6.1.1.5, also where only the transfer syntax says lossy
    # the phase first: OHIF's series list cuts a description after about 24 characters, so "AI cine segmentation
    # ED" and "... ES" read the same there (break43d)
    phase = ""
    if len(phase_names) == 1 and phase_names[0].strip().lower() in PHASE_ABBREVIATIONS:
        phase = f"{PHASE_ABBREVIATIONS[phase_names[0].strip().lower()]} "
    what = f"{phase}{pipeline_name} segmentation"
    # read first, before the AI marker and what it segments (apply_provenance's flag)
    flag = REVIEW_ONLY if getattr(result, "unreliable", False) else ""
    if first.get("SeriesNumber") is not None:
        # which series it segments, within the ~22 characters OHIF's series list shows after "AI unverified": a
        # stack sent one series per slice gets one SEG per series (OHIF attaches a SEG to one series), and "AI LGE
        # segmentation, series 25" and "..., series 26" read the same there (break46a #6): "AI unverified LGE S:25
        # SEG", "AI unverified ED cine S:5 SEG" (OHIF shows the modality beside it)
        named = f"{phase}{pipeline_name} S:{first.SeriesNumber} SEG"
        try:
            ai_series_description(named, flag)
            what = named
        except ValueError:  # over the 64 characters of LO: the series number is not said
            pass
    apply_provenance(seg, [algorithm, *result.contributing], started_at, what, flag)
    return seg
