"""One frame of an Enhanced MR (or Legacy Converted Enhanced MR) instance as a classic single-frame MR Image dataset,
for the display copies of a tilted multi-frame stack (results/display_copy.py).

A display copy exists for OHIF v3, which shows a SEG only on one plain stack of exactly its images; a classic
single-frame MR Image per frame is the form every viewer opens as such a stack (and the form the single-frame path
already writes), so a frame of a multi-frame source is copied as one (PS3.3 A.4 MR Image IOD). `single_frame_image`
moves what the Enhanced MR IOD keeps per frame (PS3.3 C.7.6.16 Shared / Per-frame Functional Groups, the frame's
own item first) to the classic attributes of the same meaning (C.8.3.1 MR Image, C.7.6.2 Image Plane, C.7.6.3 Image
Pixel); attributes only the Enhanced MR IOD defines (Multi-frame Functional Groups and Dimension modules, Enhanced
MR Image, MR Pulse Sequence, Cardiac and Respiratory Synchronization techniques) are left out, their meaning
carried by the classic ones where there is one:
- Pixel Measures -> Pixel Spacing, Slice Thickness, Spacing Between Slices; Plane Position / Orientation -> Image
  Position / Orientation (Patient); Frame Content -> Acquisition Date/Time/DateTime, Acquisition Number, Temporal
  Position Identifier, Image Comments; Cardiac Synchronization -> Trigger Time, Nominal Interval; Pixel Value
  Transformation -> Rescale Slope / Intercept / Type (kept although the MR Image IOD has no Modality LUT: a PSIR's
  sign lives in them, GROUP_ATTRIBUTES); Frame VOI LUT -> Window Center / Width (both or neither); Frame Anatomy -> Image
  Laterality, Anatomic Region Sequence; MR Image Frame Type -> Image Type; MR Timing -> Repetition Time, Flip Angle, Echo Train Length; MR Echo -> Echo Time (the effective
  one); MR Modifier -> Inversion Time (the first Inversion Times value, the frame's own item first, then the
  shared one; present and empty where the frame is inversion recovery and no time is given, Type 2C); MR FOV/Geometry, MR Averages, MR Imaging
  Modifier, receive and transmit coil -> their classic attributes; the Unassigned Shared / Per-frame Converted
  Attributes of a Legacy Converted instance (which are classic attributes) as they are;
- Scanning Sequence and Sequence Variant (Type 1) from the MR Pulse Sequence and MR Modifier attributes (C.8.13.4,
  C.8.13.5.6); a source that states neither (an Enhanced MR image of Image Type DERIVED carries no MR Pulse
  Sequence module) gets its inversion recovery where the MR Modifier says so, else RM (Research Mode: the source
  does not say), and Sequence Variant NONE; Scan Options CG where the source was cardiac-gated;
- Pixel Data: the bytes of that frame exactly, in the source's transfer syntax (a frame of an encapsulated source is
  its own compressed bitstream, re-encapsulated as the only frame).
"""
from __future__ import annotations

from copy import deepcopy

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, get_frame
from pydicom.multival import MultiValue
from pydicom.uid import MRImageStorage
from pydicom.valuerep import IS, DSfloat

#: top-level attributes of the Enhanced MR IOD that the classic MR Image IOD does not have (PS3.3 A.36.2 against A.4)
ENHANCED_ONLY = frozenset((
    # Multi-frame Functional Groups, Multi-frame Dimension, concatenation, extended offsets
    "NumberOfFrames", "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence",
    "DimensionOrganizationSequence", "DimensionIndexSequence", "DimensionOrganizationType", "FrameIncrementPointer",
    "ConcatenationUID", "SOPInstanceUIDOfConcatenationSource", "InConcatenationNumber", "InConcatenationTotalNumber",
    "ConcatenationFrameOffsetNumber", "RepresentativeFrameNumber", "StereoPairsPresent", "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    # Common Instance Reference (a Legacy Converted instance names its classic sources there; the copy names its
    # own source in the Source Image Sequence)
    "ReferencedSeriesSequence", "StudiesContainingOtherReferencedInstancesSequence",
    # Enhanced MR Image, MR Image and Spectroscopy Instance
    "AcquisitionContrast", "PixelPresentation", "VolumetricProperties", "VolumeBasedCalculationTechnique",
    "ComplexImageComponent", "ContentQualification", "ResonantNucleus", "KSpaceFiltering",
    "ApplicableSafetyStandardAgency", "ApplicableSafetyStandardDescription", "ImageProcessingApplied",
    "PresentationLUTShape", "AcquisitionContextSequence", "AcquisitionDuration", "IsocenterPosition",
    "B1rms",
    # MR Pulse Sequence (C.8.13.4)
    "PulseSequenceName", "EchoPulseSequence", "MultipleSpinEcho", "MultiPlanarExcitation", "PhaseContrast",
    "VelocityEncodingAcquisitionSequence", "TimeOfFlightContrast", "ArterialSpinLabelingContrast",
    "SteadyStatePulseSequence", "EchoPlanarPulseSequence", "SaturationRecovery", "SpectrallySelectedSuppression",
    "OversamplingPhase", "GeometryOfKSpaceTraversal", "RectilinearPhaseEncodeReordering",
    "SegmentedKSpaceTraversal", "CoverageOfKSpace", "NumberOfKSpaceTrajectories",
    # Cardiac / Respiratory Synchronization techniques of the enhanced IODs (C.7.6.18)
    "CardiacSynchronizationTechnique", "CardiacSignalSource", "CardiacRRIntervalSpecified",
    "CardiacBeatRejectionTechnique", "RespiratoryMotionCompensationTechnique", "RespiratorySignalSource",
    "RespiratoryTriggerDelayThreshold", "RespiratoryTriggerType", "BulkMotionCompensationTechnique",
    "BulkMotionSignalSource",
    # the pixel data is the frame's (single_frame_image)
    "PixelData",
))

#: (functional group sequence, attribute in its item, classic attribute)
GROUP_ATTRIBUTES = (
    ("PixelMeasuresSequence", "PixelSpacing", "PixelSpacing"),
    ("PixelMeasuresSequence", "SliceThickness", "SliceThickness"),
    ("PixelMeasuresSequence", "SpacingBetweenSlices", "SpacingBetweenSlices"),
    ("PlanePositionSequence", "ImagePositionPatient", "ImagePositionPatient"),
    ("PlaneOrientationSequence", "ImageOrientationPatient", "ImageOrientationPatient"),
    ("FrameContentSequence", "FrameAcquisitionNumber", "AcquisitionNumber"),
    ("FrameContentSequence", "TemporalPositionIndex", "TemporalPositionIdentifier"),
    ("FrameContentSequence", "FrameComments", "ImageComments"),
    ("CardiacSynchronizationSequence", "NominalCardiacTriggerDelayTime", "TriggerTime"),
    ("CardiacSynchronizationSequence", "RRIntervalTimeNominal", "NominalInterval"),
    # Rescale Slope / Intercept / Type are not attributes of the MR Image IOD (dciodvfy warns "not expected to be
    # present in standard MR IOD"), but kept: a PSIR frame's stored values are offset (e.g. intercept -2048, -4096),
    # and without the rescale a viewer (and the node, re-reading the copy) would take the stored values for the
    # signal and lose the sign that makes it phase-sensitive; every vendor's classic PSIR carries them the same way
    ("PixelValueTransformationSequence", "RescaleIntercept", "RescaleIntercept"),
    ("PixelValueTransformationSequence", "RescaleSlope", "RescaleSlope"),
    ("PixelValueTransformationSequence", "RescaleType", "RescaleType"),
    ("FrameVOILUTSequence", "WindowCenter", "WindowCenter"),
    ("FrameVOILUTSequence", "WindowWidth", "WindowWidth"),
    ("FrameVOILUTSequence", "WindowCenterWidthExplanation", "WindowCenterWidthExplanation"),
    ("FrameVOILUTSequence", "VOILUTFunction", "VOILUTFunction"),
    ("MRTimingAndRelatedParametersSequence", "RepetitionTime", "RepetitionTime"),
    ("MRTimingAndRelatedParametersSequence", "FlipAngle", "FlipAngle"),
    ("MRTimingAndRelatedParametersSequence", "EchoTrainLength", "EchoTrainLength"),
    ("MREchoSequence", "EffectiveEchoTime", "EchoTime"),
    ("MRFOVGeometrySequence", "PercentSampling", "PercentSampling"),
    ("MRFOVGeometrySequence", "PercentPhaseFieldOfView", "PercentPhaseFieldOfView"),
    ("MRAveragesSequence", "NumberOfAverages", "NumberOfAverages"),
    ("MRImagingModifierSequence", "PixelBandwidth", "PixelBandwidth"),
    ("MRImagingModifierSequence", "TransmitterFrequency", "ImagingFrequency"),
    ("MRReceiveCoilSequence", "ReceiveCoilName", "ReceiveCoilName"),
    ("MRTransmitCoilSequence", "TransmitCoilName", "TransmitCoilName"),
)

#: where Legacy Converted Enhanced MR keeps classic attributes without a functional group (PS3.3 C.7.6.16.2.x)
CONVERTED_GROUPS = ("UnassignedSharedConvertedAttributesSequence", "UnassignedPerFrameConvertedAttributesSequence")


def _item(container: Dataset | None, keyword: str) -> Dataset | None:
    sequence = container.get(keyword) if container is not None else None
    return sequence[0] if sequence else None


def frame_groups(source: Dataset, frame_number: int) -> list[Dataset]:
    """The functional group items that hold the frame's values, the one read first first: its Per-frame item, then
    the Shared one (PS3.3 C.7.6.16); raises ValueError for a frame number the instance does not have."""
    per_frame = list(source.get("PerFrameFunctionalGroupsSequence") or [])
    count = int(source.get("NumberOfFrames", len(per_frame)) or len(per_frame))
    if not 1 <= frame_number <= count:
        raise ValueError(f"frame {frame_number} of instance {source.get('SOPInstanceUID')} out of 1..{count}")
    found = [per_frame[frame_number - 1]] if frame_number <= len(per_frame) else []
    shared = _item(source, "SharedFunctionalGroupsSequence")
    return found + ([shared] if shared is not None else [])


def group_value(groups: list[Dataset], sequence: str, keyword: str):
    """`keyword` of the first of `groups` whose `sequence` item holds it (non-empty); None when none does."""
    for group in groups:
        item = _item(group, sequence)
        if item is not None and item.get(keyword) not in (None, ""):
            return item[keyword]
    return None


def _text(value) -> str:
    return str(value.value if isinstance(value, DataElement) else value or "").strip().upper()


def scanning_sequence(source: Dataset, groups: list[Dataset]) -> list[str]:
    """Scanning Sequence (0018,0020) terms (C.8.3.1.1.1: SE, IR, GR, EP, RM) of the frame: Echo Pulse Sequence
    SPIN / GRADIENT / BOTH, Echo Planar Pulse Sequence YES, the frame's MR Modifier Inversion Recovery YES; RM where
    the source says none of these."""
    terms = {"SPIN": ["SE"], "GRADIENT": ["GR"], "BOTH": ["SE", "GR"]}.get(_text(source.get("EchoPulseSequence")), [])
    if _text(group_value(groups, "MRModifierSequence", "InversionRecovery")) == "YES":
        terms.append("IR")
    if _text(source.get("EchoPlanarPulseSequence")) == "YES":
        terms.append("EP")
    return terms or ["RM"]


def sequence_variant(source: Dataset, groups: list[Dataset]) -> list[str]:
    """Sequence Variant (0018,0021) terms (C.8.3.1.1.1: SK, MTC, SS, TRSS, SP, MP, OSP, NONE) of the frame, from the
    MR Pulse Sequence (Segmented k-Space Traversal, Steady State Pulse Sequence, Spoiling, Oversampling Phase) and
    MR Modifier / Imaging Modifier attributes (a preparation: inversion recovery, T2 preparation, saturation
    recovery; Magnetization Transfer); NONE where none applies."""
    terms = []
    if _text(source.get("SegmentedKSpaceTraversal")) not in ("", "SINGLE"):
        terms.append("SK")
    if _text(group_value(groups, "MRImagingModifierSequence", "MagnetizationTransfer")) not in ("", "NONE"):
        terms.append("MTC")
    steady = _text(source.get("SteadyStatePulseSequence"))
    if steady not in ("", "NONE"):
        terms.append("TRSS" if steady == "TIME_REVERSED" else "SS")
    if _text(group_value(groups, "MRModifierSequence", "Spoiling") or source.get("Spoiling")) not in ("", "NONE"):
        terms.append("SP")
    prepared = [_text(group_value(groups, "MRModifierSequence", k)) for k in ("InversionRecovery", "T2Preparation")]
    if "YES" in prepared or _text(source.get("SaturationRecovery")) == "YES":
        terms.append("MP")
    if _text(source.get("OversamplingPhase")) not in ("", "NONE"):
        terms.append("OSP")
    return terms or ["NONE"]


def frame_pixel_data(source: Dataset, frame_number: int) -> DataElement:
    """The Pixel Data element of one frame (1-based) of a multi-frame source, its bytes exactly the frame's: a slice of
    native pixel data, or the frame's bitstream of encapsulated pixel data (PS3.5 A.4) encapsulated alone (with a
    Basic Offset Table), in the source's transfer syntax either way."""
    element = source["PixelData"]
    count = int(source.get("NumberOfFrames", 1) or 1)
    if element.is_undefined_length:
        offsets = None
        if "ExtendedOffsetTable" in source and "ExtendedOffsetTableLengths" in source:
            offsets = (source.ExtendedOffsetTable, source.ExtendedOffsetTableLengths)
        frame = get_frame(element.value, frame_number - 1, extended_offsets=offsets, number_of_frames=count)
        return DataElement(0x7FE00010, "OB", encapsulate([frame]), is_undefined_length=True)
    bits = int(source.BitsAllocated)
    if bits % 8:
        raise ValueError(f"Bits Allocated {bits}: frames of {source.get('SOPInstanceUID')} are not byte-aligned")
    size = int(source.Rows) * int(source.Columns) * int(source.get("SamplesPerPixel", 1) or 1) * bits // 8
    value = bytes(element.value[(frame_number - 1) * size:frame_number * size])
    if len(value) != size:
        raise ValueError(f"instance {source.get('SOPInstanceUID')} holds no frame {frame_number} of {size} bytes "
                         f"(Pixel Data {len(element.value)} bytes)")
    return DataElement(0x7FE00010, element.VR, value + (b"\0" if size % 2 else b""))


def single_frame_image(source: Dataset, frame_number: int) -> Dataset:
    """Frame `frame_number` (1-based) of an Enhanced MR / Legacy Converted Enhanced MR `source` (with its pixel data)
    as a classic MR Image dataset (module docstring). SOP Class MR Image Storage; SOP Instance UID, Series and the
    rest as the source's, Pixel Data in the source's transfer syntax: the caller (display_copy._copy) makes it a
    derived image of its own, written in Explicit VR Little Endian. The source is not changed."""
    groups = frame_groups(source, frame_number)
    image = Dataset()
    for element in source:
        if element.keyword not in ENHANCED_ONLY:
            image.add(deepcopy(element))
    for keyword in CONVERTED_GROUPS:  # classic attributes already: shared first, the frame's own over them
        for group in reversed(groups):
            item = _item(group, keyword)
            if item is not None:
                image.update(deepcopy(item))
    for sequence, keyword, classic in GROUP_ATTRIBUTES:
        value = group_value(groups, sequence, keyword)
        if value is not None:
            image[classic] = _as(classic, value.value)
    direction = _text(group_value(groups, "MRFOVGeometrySequence", "InPlanePhaseEncodingDirection"))
    if direction:
        image.InPlanePhaseEncodingDirection = {"COLUMN": "COL", "MIXED": "OTHER"}.get(direction, direction)
    inversion = group_value(groups, "MRModifierSequence", "InversionTimes")  # the frame's own item first
    if inversion is not None and not str(image.get("InversionTime", "") or "").strip():
        values = [v for v in as_list(inversion.value) if str(v).strip() != ""]
        if values:
            image.InversionTime = _as("InversionTime", values[0]).value
    acquired = group_value(groups, "FrameContentSequence", "FrameAcquisitionDateTime")
    if acquired is not None and str(acquired.value).strip():
        text = str(acquired.value).strip()
        image.AcquisitionDateTime = text
        if len(text) >= 8:
            image.AcquisitionDate = text[:8]
        if len(text) > 8:
            image.AcquisitionTime = text[8:].split("+")[0].split("-")[0]
    laterality = group_value(groups, "FrameAnatomySequence", "FrameLaterality")
    if laterality is not None and "ImageLaterality" not in image:  # C.7.6.1: what Laterality (0020,0060) defers to
        image.ImageLaterality = laterality.value
    region = group_value(groups, "FrameAnatomySequence", "AnatomicRegionSequence")
    if region is not None and "AnatomicRegionSequence" not in image:
        image.AnatomicRegionSequence = deepcopy(region.value)
    frame_type = group_value(groups, "MRImageFrameTypeSequence", "FrameType")
    if frame_type is not None:
        image.ImageType = list(frame_type.value)
    if "ScanningSequence" not in image or not image.ScanningSequence:
        image.ScanningSequence = scanning_sequence(source, groups)
    if "SequenceVariant" not in image or not image.SequenceVariant:
        image.SequenceVariant = sequence_variant(source, groups)
    if "SequenceName" not in image and source.get("PulseSequenceName"):
        image.SequenceName = source.PulseSequenceName
    if "ImagedNucleus" not in image and source.get("ResonantNucleus"):
        image.ImagedNucleus = source.ResonantNucleus
    if "ScanOptions" not in image:
        gated = _text(source.get("CardiacSynchronizationTechnique")) not in ("", "NONE") or \
            group_value(groups, "CardiacSynchronizationSequence", "NominalCardiacTriggerDelayTime") is not None
        breathing = _text(source.get("RespiratoryMotionCompensationTechnique")) not in ("", "NONE")
        image.ScanOptions = [term for term, used in (("CG", gated), ("RG", breathing)) if used] or ""
    options = image.get("ScanOptions") or []
    if "CG" in ([options] if isinstance(options, str) else list(options)) and "TriggerTime" not in image:
        image.TriggerTime = None  # Type 2C for a cardiac-gated image (C.8.3.1): present, empty when unknown
    for keyword in ("MRAcquisitionType", "EchoTime", "EchoTrainLength", "SliceThickness"):
        if keyword not in image:  # Type 2 of the classic modules: present, empty when the source does not say
            image[keyword] = _as(keyword, None)
    if "RepetitionTime" not in image:
        image.RepetitionTime = None
    if "IR" in as_list(image.get("ScanningSequence")) and "InversionTime" not in image:
        image.InversionTime = None  # Type 2C for an inversion-recovery image (C.8.3.1): present, empty when unknown
    if ("WindowCenter" in image) != ("WindowWidth" in image):  # C.11.2 VOI LUT: Window Width 1C with the Center
        for keyword in ("WindowCenter", "WindowWidth", "WindowCenterWidthExplanation"):
            if keyword in image:
                delattr(image, keyword)
    image.SOPClassUID = MRImageStorage
    image["PixelData"] = frame_pixel_data(source, frame_number)
    if hasattr(source, "file_meta"):
        image.file_meta = FileMetaDataset()
        image.file_meta.update(source.file_meta)
        image.file_meta.MediaStorageSOPClassUID = MRImageStorage
    return image


def as_list(value) -> list:
    """The values of a (possibly multi-valued) attribute as a list: a single value as a list of one, not of its
    characters (a Scanning Sequence of one term reads as the string "IR"), None or "" as an empty list."""
    if isinstance(value, DataElement):
        value = value.value
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]


def _as(keyword: str, value) -> DataElement:
    """`value` as the element of `keyword`, in that attribute's VR: a number read from a functional group (FD, UL,
    US) becomes a DS of at most 16 characters or an IS (rounded), as the classic attribute is (PS3.5 6.2)."""
    tag = tag_for_keyword(keyword)
    vr = dictionary_VR(tag)
    if value is None or vr not in ("DS", "IS"):
        return DataElement(tag, vr, deepcopy(value))
    values = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    if vr == "DS":
        converted = [DSfloat(float(v), auto_format=True) for v in values if str(v).strip() != ""]
    else:
        converted = [IS(round(float(v))) for v in values if str(v).strip() != ""]
    return DataElement(tag, vr, converted[0] if len(converted) == 1 else converted)
