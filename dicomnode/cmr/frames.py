"""Per-frame geometry, timing and rescale read from headers, for classic single-frame and Enhanced MR multi-frame."""
from __future__ import annotations

from collections import Counter
import datetime
from dataclasses import dataclass

import numpy as np

from dicomnode.cmr.types import FrameRef, InstanceHeader
from dicomnode.uids import ENHANCED_MR_STORAGE_CLASSES


@dataclass(eq=False)
class FrameInfo:
    """One source frame with what grouping, recognition and volume building need (None = not in the header)."""

    header: InstanceHeader
    ref: FrameRef
    position: np.ndarray | None  # (3,) ImagePositionPatient
    orientation: np.ndarray | None  # (6,) ImageOrientationPatient
    pixel_spacing: tuple[float, float] | None  # (between rows, between columns)
    rows: int | None
    cols: int | None
    trigger_time: float | None  # ms
    temporal_index: int | None  # TemporalPositionIdentifier / TemporalPositionIndex
    acquisition_time: float | None  # seconds since midnight
    instance_number: int | None
    inversion_time: float | None
    rescale: tuple[float, float]  # slope, intercept
    frame_index: int  # 0-based index into the instance's pixel array
    image_type: tuple[str, ...] = ()  # ImageType (or per-frame FrameType) values + ComplexImageComponent, upper case
    #: where `inversion_time` was read when InversionTime (0018,0082) is absent: InversionTimes (0018,9079)
    #: (standard_inversion_times) or a vendor's private element (PRIVATE_INVERSION_TIME); None when it came from
    #: InversionTime or there is none
    inversion_source: str | None = None
    #: StackID (0020,9056): the Frame Content functional group of an Enhanced MR frame, else the classic attribute;
    #: None when absent (PS3.3 C.7.6.16.2.2: frames of one stack share it, a re-planned stack gets another)
    stack_id: str | None = None
    #: when the frame was acquired on a clock that runs across midnight (`clock_seconds`: days x 86400 + seconds since
    #: midnight) when the date is known (AcquisitionDateTime (0008,002A), AcquisitionDate (0008,0022) with
    #: AcquisitionTime, Enhanced MR FrameAcquisitionDateTime (0018,9074)), else `acquisition_time`; None when untimed
    acquired_at: float | None = None
    #: True when `acquisition_time` / `acquired_at` are not the frame's own but its multi-frame instance's
    #: (AcquisitionDateTime (0008,002A), else AcquisitionDate (0008,0022) + AcquisitionTime (0008,0032) at the top
    #: level) standing in for a missing FrameAcquisitionDateTime (0018,9074): a weaker time (`pass_source`)
    instance_time: bool = False

    def __post_init__(self):
        # undated (seconds since midnight, < one day): always the acquisition_time, also after dataclasses.replace
        if self.acquired_at is None or self.acquired_at < 86400.0:
            object.__setattr__(self, "acquired_at", self.acquisition_time)

    @property
    def kind(self) -> str:
        """The third ImageType/FrameType value (M, P, PSIR, CARDIAC ...): keeps e.g. PSIR and magnitude apart."""
        return self.image_type[2] if len(self.image_type) > 2 and self.image_type[2] else "-"

    @property
    def signed(self) -> bool:
        """True when the stored values stand for negative numbers: RescaleIntercept (0028,1052) below 0 (Siemens PSIR
        -4096, Philips real images), or a signed PixelRepresentation (0028,0103 = 1) whose SmallestImagePixelValue
        (0028,0106), rescaled, is below 0. A phase-sensitive (PSIR / real) reconstruction keeps the sign of the
        magnetisation; a magnitude image cannot be negative (PS3.3 C.7.6.3 Image Pixel, C.11.1 Modality LUT)."""
        slope, intercept = self.rescale
        if intercept < 0:
            return True
        ds = self.header.dataset
        if int(_int(ds.get("PixelRepresentation")) or 0) != 1:
            return False
        smallest = _float(ds.get("SmallestImagePixelValue"))
        return smallest is not None and smallest * slope + intercept < 0

    @property
    def reconstruction(self) -> tuple:
        """What tells one reconstruction of an acquisition from another (magnitude and PSIR of one inversion-recovery
        acquisition share position, TriggerTime, InversionTime and AcquisitionTime): the ImageType / FrameType values
        from the third on (PS3.3 C.7.6.1.1.2 and C.8.13.3.1.1: the vendor's image description, beyond the third value
        too: GE 'OTHER\\MAG' / 'OTHER\\PSIR', Siemens 'M' / 'PSIR', Philips 'M_IR\\M' / 'R_IR\\R', and
        ComplexImageComponent) and the sign of the values (`signed`). ORIGINAL/DERIVED and PRIMARY/SECONDARY (values 1
        and 2) say how an image was made, not which reconstruction it is, and are left out."""
        return self.image_type[2:], self.signed

    @property
    def has_geometry(self) -> bool:
        return self.position is not None and self.orientation is not None and self.pixel_spacing is not None

    @property
    def normal(self) -> np.ndarray:
        return plane_normal(self.orientation)


def plane_normal(orientation: np.ndarray) -> np.ndarray:
    """Unit normal row_dir x col_dir of an ImageOrientationPatient."""
    normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
    length = np.linalg.norm(normal)
    return normal / length if length > 0 else normal


def _floats(value, count: int) -> np.ndarray | None:
    try:
        values = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    if len(values) != count or not all(np.isfinite(values)):
        return None
    return np.asarray(values, float)


def _float(value) -> float | None:
    if value is None or value == "":
        return None
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if np.isfinite(result) else None


def trigger_delay(value) -> float | None:
    """A TriggerTime (0018,1060) or cardiac trigger delay (ms after the R wave), None where absent, not a number or
    negative (no image is taken before its R wave: a negative value is invalid and says nothing of the cardiac
    phase; `negative_trigger_note` says so beside the series)."""
    delay = _float(value)
    return None if delay is None or delay < 0 else delay


def negative_trigger_note(frames) -> str | None:
    """The note on images whose TriggerTime (0018,1060) is negative (read as absent by trigger_delay), or None."""
    found = []
    for frame in frames:
        index = frame.frame_index if frame.ref.frame_number is not None else None
        value = _float(header_value(frame.header.dataset, "TriggerTime", index))
        if value is not None and value < 0:
            found.append(value)
    if not found:
        return None
    return (f"TriggerTime negative ({min(found):g} to {max(found):g} ms) in {len(found)} image(s): invalid (the delay "
            "after the R wave), taken as absent; phases timed by NominalCardiacTriggerDelayTime where given, else "
            "ordered by TemporalPositionIdentifier / InstanceNumber")


def _int(value) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _text(value) -> str | None:
    """A stripped string value; None when absent or empty."""
    text = str(value).strip() if value is not None else ""
    return text or None


def _is_dt(text: str) -> bool:
    """Whether `text` (colons removed) is a DICOM DT: 8 or more digits before any fraction or UTC offset."""
    whole = text.split(".")[0].split("+")[0].split("-")[0]
    return len(whole) >= 8 and whole[:8].isdigit()


def tm_seconds(value) -> float | None:
    """DICOM TM (HHMMSS.frac, or the HH:MM:SS.frac form that PS3.5 6.2 asks readers to accept from earlier
    editions) or DT (YYYYMMDDHHMMSS.frac) -> seconds since midnight; None when absent or invalid."""
    text = str(value or "").strip().replace(":", "")
    if _is_dt(text):  # a TM has at most 6 digits before its fraction; a DT's time may stop at the hour
        text = text[8:]
    text = text.split("+")[0].split("-")[0]
    if not text or not text[:2].isdigit():
        return None
    try:
        whole, _, fraction = text.partition(".")
        hours = int(whole[0:2])
        minutes = int(whole[2:4]) if len(whole) >= 4 else 0
        seconds = int(whole[4:6]) if len(whole) >= 6 else 0
        return hours * 3600 + minutes * 60 + seconds + (float("0." + fraction) if fraction.isdigit() else 0.0)
    except ValueError:
        return None


def dated_seconds(time_value, date_value=None) -> float | None:
    """When something happened, in seconds on a clock that runs across midnight: a DICOM DT (YYYYMMDDHHMMSS.frac) or a
    TM (HHMMSS.frac) with a DA (YYYYMMDD) -> days since 0001-01-01 x 86400 + seconds since midnight, so that 00:08 on
    the next day is later than 23:58; None when the time or its date is absent or invalid."""
    seconds = tm_seconds(time_value)
    if seconds is None:
        return None
    text = str(time_value or "").strip()
    date = text[:8] if _is_dt(text) else str(date_value or "").strip()[:8]
    try:
        return datetime.date(int(date[:4]), int(date[4:6]), int(date[6:8])).toordinal() * 86400.0 + seconds
    except ValueError:
        return None


#: `dated_seconds` of the year 2 onwards; a time of day alone (`tm_seconds`) stays below it
DATED_CLOCK_FROM_S = 366 * 86400.0


def is_dated(clock: float | None) -> bool:
    """Whether a `clock_seconds` value carries its date (`dated_seconds`), not a time of day alone."""
    return clock is not None and clock >= DATED_CLOCK_FROM_S


def clock_seconds(time_value, date_value=None) -> float | None:
    """`dated_seconds` where the time has a valid date; a TM without one -> seconds since midnight (`tm_seconds`);
    None when the time is absent or invalid. Compare only values of one kind (all dated or all undated)."""
    dated = dated_seconds(time_value, date_value)
    return dated if dated is not None else tm_seconds(time_value)


def _item(container, keyword: str):
    if container is None or keyword not in container:
        return None
    sequence = container[keyword].value
    return sequence[0] if sequence else None


def _functional_group(frame_item, shared_item, keyword: str):
    found = _item(frame_item, keyword)
    return found if found is not None else _item(shared_item, keyword)


#: where Legacy Converted Enhanced MR keeps classic attributes without a functional group (PS3.3 C.7.6.16.2.x)
CONVERTED_SHARED = "UnassignedSharedConvertedAttributesSequence"
CONVERTED_PER_FRAME = "UnassignedPerFrameConvertedAttributesSequence"


#: private elements in which a vendor writes an image's inversion time (ms), read only where InversionTime (0018,0082)
#: is absent or empty: (group, private creator, element offset in the creator's block, vendor, the element's name in
#: pydicom's private dictionary (pydicom.datadict.get_private_entry; DCMTK's private.dic lists the Philips ones too)).
#: The element is looked up in the block its creator reserves in that instance (PS3.5 7.8.1: (gggg,00xx) names the
#: creator of (gggg,xx00-xxFF)), never at a fixed element number. GE has none: neither dictionary lists an
#: inversion time under 'GEMS_ACQU_01' (or another GE creator), and GE's MR conformance statements say InversionTime
#: (0018,0082) is always sent (empty where the sequence has none).
PRIVATE_INVERSION_TIME = (
    (0x2001, "Philips Imaging DD 001", 0x84, "Philips", "Inversion Time"),
    (0x0019, "PHILIPS MR/PART", 0x6B, "Philips", "Inversion Delay"),  # older Philips (Gyroscan) headers
    (0x0021, "SIEMENS CT VA0  ORMR", 0x82, "Siemens", "Inversion Time"),  # Magnetom VA-era (SPI) headers
)


def private_value(dataset, group: int, creator: str, offset: int):
    """(tag, value) of element `offset` in the block that `creator` reserves in `group` of the dataset (PS3.5 7.8.1),
    the creator compared without case or padding (Philips writes 'Philips Imaging DD 001' and 'PHILIPS IMAGING DD
    001'); None when the creator is not there or the element is absent or empty."""
    wanted = creator.strip().upper()
    for element in dataset[(group, 0x0010):(group, 0x0100)]:
        name = element.value.decode("latin-1") if isinstance(element.value, bytes) else str(element.value or "")
        if name.strip().upper() != wanted:
            continue
        tag = (group, (element.tag.element << 8) | offset)
        found = dataset.get(tag)
        if found is not None and found.value not in (None, "", b""):
            return tag, found.value
    return None


#: the longest inversion time read from InversionTimes (0018,9079): a Philips classic export was seen writing
#: '0\\1.797e308' there (dcm2niix issue 385), which is no inversion time
MAX_INVERSION_TIMES_MS = 10000.0


def standard_inversion_times(dataset) -> tuple[float | None, str | None]:
    """(the first InversionTimes (0018,9079) value in ms, where it was read) for an instance without InversionTime
    (0018,0082): the standard attribute of the MR Timing and Related Parameters / MR Modifier macros, which some
    classic exports write instead (dcm2niix reads it as the same fall-back, issue 380); only a value above 0 and below
    MAX_INVERSION_TIMES_MS counts; (None, None) otherwise."""
    value = header_value(dataset, "InversionTimes")
    if value is None:
        return None, None
    first = _float(value if isinstance(value, (int, float, str)) else (value[0] if len(value) else None))
    if first is None or not 0.0 < first < MAX_INVERSION_TIMES_MS:
        return None, None
    return first, "InversionTimes (0018,9079)"


def private_inversion_time(dataset) -> tuple[float | None, str | None]:
    """(inversion time in ms, where it was read) from the first of PRIVATE_INVERSION_TIME the instance carries (an
    element still undecoded, VR UN, is read as its text); (None, None) where none does. Only meant for an instance
    without InversionTime (0018,0082)."""
    for group, creator, offset, vendor, name in PRIVATE_INVERSION_TIME:
        found = private_value(dataset, group, creator, offset)
        if found is None:
            continue
        tag, value = found
        if isinstance(value, bytes):
            value = value.decode("latin-1").strip("\x00 ").split("\\")[0]
        elif not isinstance(value, (str, int, float)):
            value = value[0] if len(value) else None  # a multi-valued DS: the first
        inversion = _float(value)
        if inversion is not None:
            return inversion, f"{vendor} private ({tag[0]:04X},{tag[1]:04X}) {name!r} (creator {creator!r})"
    return None, None


def header_value(dataset, keyword: str, frame_index: int | None = None):
    """A classic attribute wherever the instance keeps it: top level; else, in a (Legacy Converted) Enhanced MR
    instance, the frame's Unassigned Per-Frame Converted Attributes item, then the Unassigned Shared Converted
    Attributes item; None when absent. `frame_index` 0-based; None looks at the first frame."""
    value = dataset.get(keyword)
    if value not in (None, ""):
        return value
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence") or []
    index = frame_index or 0
    frame_item = per_frame[index] if index < len(per_frame) else None
    for container in (frame_item, _item(dataset, "SharedFunctionalGroupsSequence")):
        converted = _item(container, CONVERTED_PER_FRAME if container is frame_item else CONVERTED_SHARED)
        if converted is not None and converted.get(keyword) not in (None, ""):
            return converted.get(keyword)
    return None


def is_multiframe_enhanced(dataset) -> bool:
    if str(getattr(dataset, "SOPClassUID", "")) in ENHANCED_MR_STORAGE_CLASSES:
        return True
    shared = getattr(dataset, "SharedFunctionalGroupsSequence", None)
    return _int(getattr(dataset, "NumberOfFrames", None)) is not None and bool(shared)


def _tokens(value) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [part.strip().upper() for part in value.split("\\")]
    return [str(part).strip().upper() for part in value]


def _image_type(image_type, complex_component) -> tuple[str, ...]:
    tokens = _tokens(image_type)
    component = str(complex_component or "").strip().upper()
    if component and component not in tokens:
        tokens = tokens + [component] if len(tokens) >= 3 else tokens + [""] * (3 - len(tokens)) + [component]
    return tuple(tokens)


def frames_of(header: InstanceHeader) -> list[FrameInfo]:
    """Every frame of one instance with its geometry (functional groups first, top-level attributes as fallback)."""
    ds = header.dataset
    rows, cols = _int(getattr(ds, "Rows", None)), _int(getattr(ds, "Columns", None))
    instance_number = _int(getattr(ds, "InstanceNumber", None))
    # an Enhanced MR instance carries AcquisitionDateTime (0008,002A) at the top level, not AcquisitionTime
    acquisition_time = (tm_seconds(getattr(ds, "AcquisitionTime", None))
                        if tm_seconds(getattr(ds, "AcquisitionTime", None)) is not None
                        else tm_seconds(getattr(ds, "AcquisitionDateTime", None)))
    acquisition_date = getattr(ds, "AcquisitionDate", None)
    acquired_at = (clock_seconds(getattr(ds, "AcquisitionDateTime", None))
                   or clock_seconds(getattr(ds, "AcquisitionTime", None), acquisition_date))
    top_position = _floats(getattr(ds, "ImagePositionPatient", None), 3)
    top_orientation = _floats(getattr(ds, "ImageOrientationPatient", None), 6)
    top_spacing = _floats(getattr(ds, "PixelSpacing", None), 2)
    top_trigger = trigger_delay(header_value(ds, "TriggerTime"))
    nominal_delay = _float(getattr(ds, "NominalCardiacTriggerDelayTime", None))
    if top_trigger is None or (top_trigger == 0 and nominal_delay):
        # 0 beside a non-zero nominal delay is a placeholder (some exports write 0 on every image), not the R-wave
        top_trigger = nominal_delay
    top_temporal = _int(header_value(ds, "TemporalPositionIdentifier"))
    top_inversion = _float(header_value(ds, "InversionTime"))
    top_inversion_source = None
    if top_inversion is None:
        top_inversion, top_inversion_source = standard_inversion_times(ds)
    if top_inversion is None:
        top_inversion, top_inversion_source = private_inversion_time(ds)
    top_rescale = (_float(getattr(ds, "RescaleSlope", None)) or 1.0, _float(getattr(ds, "RescaleIntercept", None)) or 0.0)

    top_image_type = _image_type(getattr(ds, "ImageType", None), getattr(ds, "ComplexImageComponent", None))
    top_stack = _text(header_value(ds, "StackID"))

    def make(frame_index, frame_number, position, orientation, spacing, trigger, temporal, acq, inversion, rescale,
             image_type=top_image_type, inversion_source=top_inversion_source, stack_id=top_stack, at=acquired_at,
             instance_time=False):
        return FrameInfo(
            header=header,
            ref=FrameRef(header.sop_instance_uid, header.sop_class_uid, header.series_instance_uid, frame_number),
            position=position,
            orientation=orientation,
            pixel_spacing=tuple(float(v) for v in spacing) if spacing is not None else None,
            rows=rows,
            cols=cols,
            trigger_time=trigger,
            temporal_index=temporal,
            acquisition_time=acq,
            instance_number=instance_number,
            inversion_time=inversion,
            rescale=rescale,
            frame_index=frame_index,
            image_type=image_type,
            inversion_source=inversion_source,
            stack_id=stack_id,
            acquired_at=at if acq is not None else None,
            instance_time=instance_time and acq is not None,
        )

    if not is_multiframe_enhanced(ds):
        return [make(0, None, top_position, top_orientation, top_spacing, top_trigger, top_temporal,
                     acquisition_time, top_inversion, top_rescale)]

    shared = _item(ds, "SharedFunctionalGroupsSequence")
    per_frame = list(getattr(ds, "PerFrameFunctionalGroupsSequence", []) or [])
    count = _int(getattr(ds, "NumberOfFrames", None)) or len(per_frame) or 1
    frames = []
    for index in range(count):
        item = per_frame[index] if index < len(per_frame) else None
        plane_position = _functional_group(item, shared, "PlanePositionSequence")
        plane_orientation = _functional_group(item, shared, "PlaneOrientationSequence")
        measures = _functional_group(item, shared, "PixelMeasuresSequence")
        cardiac = _functional_group(item, shared, "CardiacSynchronizationSequence")
        content = _functional_group(item, shared, "FrameContentSequence")
        transform = _functional_group(item, shared, "PixelValueTransformationSequence")
        modifier = _functional_group(item, shared, "MRModifierSequence")
        position = _floats(getattr(plane_position, "ImagePositionPatient", None), 3) if plane_position else None
        orientation = (_floats(getattr(plane_orientation, "ImageOrientationPatient", None), 6)
                       if plane_orientation else None)
        spacing = _floats(getattr(measures, "PixelSpacing", None), 2) if measures else None
        trigger = None
        if cardiac is not None:
            trigger = trigger_delay(getattr(cardiac, "NominalCardiacTriggerDelayTime", None))
            if trigger is None:
                trigger = trigger_delay(getattr(cardiac, "ActualCardiacTriggerDelayTime", None))
        temporal = _int(getattr(content, "TemporalPositionIndex", None)) if content else None
        frame_datetime = getattr(content, "FrameAcquisitionDateTime", None) if content else None
        acq, at = tm_seconds(frame_datetime), clock_seconds(frame_datetime)
        frame_type = _functional_group(item, shared, "MRImageFrameTypeSequence")
        image_type = top_image_type
        if frame_type is not None and getattr(frame_type, "FrameType", None):
            image_type = _image_type(frame_type.FrameType, getattr(frame_type, "ComplexImageComponent", None))
        rescale = top_rescale
        if transform is not None:
            rescale = (_float(getattr(transform, "RescaleSlope", None)) or 1.0,
                       _float(getattr(transform, "RescaleIntercept", None)) or 0.0)
        inversion = None
        if modifier is not None and getattr(modifier, "InversionTimes", None):
            times = modifier.InversionTimes
            inversion = _float(times if isinstance(times, (int, float)) else times[0])
        if trigger is None:  # Legacy Converted: the classic per-frame attributes
            trigger = trigger_delay(header_value(ds, "TriggerTime", index))
        if inversion is None:
            inversion = _float(header_value(ds, "InversionTime", index))
        converted = _item(item, CONVERTED_PER_FRAME)
        own_time = acq is not None or (converted is not None and converted.get("AcquisitionTime") not in (None, ""))
        if acq is None:
            acq = tm_seconds(header_value(ds, "AcquisitionTime", index))
            at = clock_seconds(header_value(ds, "AcquisitionTime", index), acquisition_date)
        frames.append(make(
            index, index + 1,
            position if position is not None else top_position,
            orientation if orientation is not None else top_orientation,
            spacing if spacing is not None else top_spacing,
            trigger if trigger is not None else top_trigger,
            temporal if temporal is not None else top_temporal,
            acq if acq is not None else acquisition_time,
            inversion if inversion is not None else top_inversion,
            rescale,
            image_type,
            None if inversion is not None else top_inversion_source,
            (_text(getattr(content, "StackID", None)) if content else None) or top_stack,
            at if acq is not None else acquired_at,
            not own_time,
        ))
    return frames


def functional_groups(frame: FrameInfo) -> list:
    """The frame's Per-frame Functional Groups item, then the Shared one (Enhanced MR, PS3.3 C.7.6.16); [] for a
    classic image."""
    ds = frame.header.dataset
    containers = []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if frame.ref.frame_number is not None and frame.frame_index < len(per_frame):
        containers.append(per_frame[frame.frame_index])
    return containers + list(ds.get("SharedFunctionalGroupsSequence") or [])[:1]


def declared_rescale_slope(frame: FrameInfo) -> float | None:
    """The RescaleSlope (0028,1053) the header declares for the frame: its Pixel Value Transformation functional
    group (Enhanced MR), else the top-level attribute; None when absent or not a number. FrameInfo.rescale reads an
    absent or 0 slope as 1 (a slope of 0 would make every pixel RescaleIntercept)."""
    for container in functional_groups(frame):
        transform = _item(container, "PixelValueTransformationSequence")
        if transform is not None and "RescaleSlope" in transform:
            return _float(transform.RescaleSlope)
    return _float(getattr(frame.header.dataset, "RescaleSlope", None))


#: |row · column| of ImageOrientationPatient above this (0.6° off 90°, beyond the rounding of written cosines) is a
#: header whose rows and columns are not perpendicular (PS3.3 C.7.6.2.1.1: they must be)
ORTHOGONALITY_TOLERANCE = 0.01


def not_perpendicular_deg(orientation: np.ndarray | None) -> float | None:
    """The angle (degrees) between the row and column cosines of ImageOrientationPatient where they are not
    perpendicular (beyond ORTHOGONALITY_TOLERANCE), else None."""
    if orientation is None:
        return None
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    norms = np.linalg.norm(row) * np.linalg.norm(col)
    if not norms:
        return None
    cosine = float(np.dot(row, col) / norms)
    if abs(cosine) <= ORTHOGONALITY_TOLERANCE:
        return None
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def slice_thickness(frame: FrameInfo) -> float | None:
    """SliceThickness (0018,0050) of the frame in mm: the frame's Pixel Measures functional group (Enhanced MR,
    per-frame then shared) or the classic attribute; None when absent or not positive."""
    ds = frame.header.dataset
    containers = functional_groups(frame)
    values = [_float(_item(item, "PixelMeasuresSequence").get("SliceThickness")) for item in containers
              if _item(item, "PixelMeasuresSequence") is not None]
    values.append(_float(header_value(ds, "SliceThickness", frame.frame_index if frame.ref.frame_number else None)))
    return next((v for v in values if v is not None and v > 0), None)


def _within(first: np.ndarray, second: np.ndarray, limit: float) -> bool:
    """True when the row directions and the column directions of two ImageOrientationPatient (6,) lie within the
    angle whose cosine is `limit`."""
    return bool(np.dot(first[:3], second[:3]) >= limit and np.dot(first[3:], second[3:]) >= limit)


def orientation_angle_deg(first: np.ndarray, second: np.ndarray) -> float:
    """The larger of the angles (degrees) between the row directions and between the column directions of two
    ImageOrientationPatient (6,) values (PS3.3 C.7.6.2.1.1)."""
    cosines = [np.dot(first[:3], second[:3]) / (np.linalg.norm(first[:3]) * np.linalg.norm(second[:3])),
               np.dot(first[3:], second[3:]) / (np.linalg.norm(first[3:]) * np.linalg.norm(second[3:]))]
    return float(np.degrees(np.arccos(np.clip(min(cosines), -1.0, 1.0))))


#: direction-cosine difference (about 0.006 degrees) below which two ImageOrientationPatient values are one plane
#: written with different rounding (scanners compute IOP per slice; 0.589666 against 0.589667)
ORIENTATION_NOISE = 1e-4


def same_plane_orientation(first: np.ndarray, second: np.ndarray) -> bool:
    """True when two ImageOrientationPatient (6,) values differ by no more than ORIENTATION_NOISE in every
    component."""
    return bool(np.max(np.abs(np.asarray(first, float) - np.asarray(second, float))) <= ORIENTATION_NOISE)


def mean_orientation(orientations: list[np.ndarray]) -> np.ndarray:
    """(6,) the mean plane of near-parallel ImageOrientationPatient values: the mean row and column directions,
    made orthonormal again symmetrically (each turned by half their deviation from 90 degrees). The first value
    itself, unchanged to the last bit, when all are within rounding noise of it (`same_plane_orientation`: the usual
    stack), so that parallel slices keep their header's geometry."""
    first = np.asarray(orientations[0], float)
    if all(same_plane_orientation(o, first) for o in orientations[1:]):
        return first
    row = np.mean([np.asarray(o[:3], float) for o in orientations], axis=0)
    col = np.mean([np.asarray(o[3:], float) for o in orientations], axis=0)
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    bisector_sum, bisector_diff = row + col, row - col
    bisector_sum /= np.linalg.norm(bisector_sum)
    bisector_diff /= np.linalg.norm(bisector_diff)
    return np.concatenate([(bisector_sum + bisector_diff) / np.sqrt(2.0), (bisector_sum - bisector_diff) / np.sqrt(2.0)])


def stack_normal(frames: list[FrameInfo]) -> np.ndarray:
    """(3,) unit normal of the mean plane of the frames' orientations (`mean_orientation`)."""
    return plane_normal(mean_orientation([frame.orientation for frame in frames]))


def half_extent(frame: FrameInfo, orientation: np.ndarray | None = None) -> np.ndarray:
    """(3,) mm from the centre of the first transmitted pixel (ImagePositionPatient) to the centre of the image:
    row direction x column spacing x (Columns - 1) / 2 + column direction x row spacing x (Rows - 1) / 2 (PS3.3
    C.7.6.2.1.1), with the frame's own directions or those of `orientation` (6,); zeros when Rows, Columns,
    PixelSpacing or the orientation is absent."""
    orientation = frame.orientation if orientation is None else orientation
    if orientation is None or frame.pixel_spacing is None or not frame.rows or not frame.cols:
        return np.zeros(3)
    orientation = np.asarray(orientation, float)
    spacing_rows, spacing_cols = frame.pixel_spacing
    return (orientation[:3] * spacing_cols * (frame.cols - 1) / 2.0
            + orientation[3:] * spacing_rows * (frame.rows - 1) / 2.0)


def slice_centre(frame: FrameInfo) -> np.ndarray:
    """(3,) patient coordinates (mm, LPS) of the centre of the frame's image: ImagePositionPatient + `half_extent`.
    A slice tilted about its centre keeps its centre, while its corner moves along the normal by the tilt times the
    distance from the centre (2.2 mm per 0.5 degree at 250 mm)."""
    return np.asarray(frame.position, float) + half_extent(frame)


def slice_distance(frame: FrameInfo, normal: np.ndarray) -> float:
    """Position (mm) of the frame along the unit `normal` (3,), measured at the centre of its image (`slice_centre`);
    a frame whose own normal is `normal` up to rounding noise (ORIENTATION_NOISE) is measured at its
    ImagePositionPatient, the same point of its plane, so that parallel slices keep their header's distances to the
    last bit."""
    if np.max(np.abs(frame.normal - np.asarray(normal, float))) <= ORIENTATION_NOISE:
        return float(np.dot(frame.position, normal))
    return float(np.dot(slice_centre(frame), normal))


def stack_plane(frames: list[FrameInfo]) -> tuple[np.ndarray, np.ndarray]:
    """(orientation (6,), positions (len(frames), 3)) of a stack of near-parallel slices expressed in their mean
    plane (`mean_orientation`): each frame's ImagePositionPatient moved so that an image of the mean orientation
    and the frame's size has the frame's centre. Slices of one orientation get their header values back exactly.
    A volume, its affine and a SEG then share one orientation while each slice stays centred where it was
    acquired (PS3.3 C.7.6.2 Image Plane: IPP, IOP). A slice whose orientation is the mean's up to rounding noise
    (`same_plane_orientation`) keeps its ImagePositionPatient."""
    orientation = mean_orientation([frame.orientation for frame in frames])
    positions = []
    for frame in frames:
        position = np.asarray(frame.position, float)
        if not same_plane_orientation(frame.orientation, orientation):
            position = position + half_extent(frame) - half_extent(frame, orientation)
        positions.append(position)
    return orientation, np.asarray(positions, float).reshape(-1, 3)


def orientation_groups(frames: list[FrameInfo], tolerance_deg: float = 2.0) -> list[list[FrameInfo]]:
    """Frames grouped by parallel image planes (ImageOrientationPatient, PS3.3 C.7.6.2): planes within
    `tolerance_deg` (degrees) of their group's mean plane make one stack.

    The rule: the row direction and the column direction of every member lie within `tolerance_deg` of those of the
    group's mean plane (`mean_orientation` of its frames' orientations, each frame counted once: the plane the stack
    is analysed and segmented in, `stack_plane`). Distinct orientations (equal to 4 decimals: rounding noise) are
    taken in the order of their first frame; each joins the first group that, with it, still keeps every member
    within the tolerance of the new mean, else starts a group. So slices jittering +-1 degree, and two breath-hold
    clusters at +1.2 and -1.2 degrees, make one stack, while a slowly turning series (1.5 degrees a slice) is split
    where its members would leave the tolerance. Groups keep the frames' order and come in the order of their first
    frame."""
    limit = np.cos(np.radians(tolerance_deg))
    distinct: list[np.ndarray] = []
    counts: list[int] = []
    index_of: list[int] = []
    known: dict[tuple, int] = {}  # orientations equal to 4 decimals share one entry (rounding noise)
    for frame in frames:
        orientation = np.asarray(frame.orientation, float)
        key = tuple(np.round(orientation, 4))
        if key not in known:
            known[key] = len(distinct)
            distinct.append(orientation)
            counts.append(0)
        counts[known[key]] += 1
        index_of.append(known[key])
    members: list[list[int]] = []
    label = [0] * len(distinct)
    for k in range(len(distinct)):
        for number, group in enumerate(members):
            candidate = group + [k]
            mean = mean_orientation([distinct[m] for m in candidate for _ in range(counts[m])])
            if all(_within(mean, distinct[m], limit) for m in candidate):
                group.append(k)
                label[k] = number
                break
        else:
            label[k] = len(members)
            members.append([k])
    groups: dict[int, list[FrameInfo]] = {}
    for frame, k in zip(frames, index_of):
        groups.setdefault(label[k], []).append(frame)
    return list(groups.values())


def plane_spread_deg(orientations: list[np.ndarray]) -> float:
    """The largest `orientation_angle_deg` between any two of the ImageOrientationPatient values (degrees); 0 for
    fewer than two."""
    return max((orientation_angle_deg(a, b) for k, a in enumerate(orientations) for b in orientations[k + 1:]),
               default=0.0)


#: the start of a recognition note saying why a series is no stack (`cmr.recognize.StackViewRule`); the decline text
#: (`analysis.phase_text.other_views_text`) repeats such notes
NOT_PARALLEL = "slices not parallel"
BROKEN_GEOMETRY = "broken geometry header"
GEOMETRY_NOTES = (NOT_PARALLEL, BROKEN_GEOMETRY)


def not_parallel_note(orientations: list[np.ndarray], tolerance_deg: float = 2.0) -> str:
    """'slices not parallel: up to 6.0 deg apart (...)' for the distinct orientations (6,) of one series, stating
    the rule `orientation_groups` applies with `tolerance_deg` (degrees), how far (degrees) the planes lie from
    their mean plane (`mean_orientation` of the distinct values) and that no dominant plane lets the tilted slices be
    left out (`tilted_slices`)."""
    mean = mean_orientation(orientations)
    off = max(orientation_angle_deg(mean, o) for o in orientations)
    return (f"{NOT_PARALLEL}: up to {plane_spread_deg(orientations):.1f} deg apart ({len(orientations)} "
            f"orientations, up to {off:.1f} deg from their mean plane; planes within {tolerance_deg:g} deg of "
            "their group's mean plane make one stack, and no one plane holds all but at most one slice position in "
            f"{TILTED_SLICES_ONE_IN} so that the tilted slices could be left out)")


#: the angle (degrees) within which planes make one stack: each within it of their group's mean plane
#: (`orientation_groups`)
PARALLEL_TOLERANCE_DEG = 2.0
#: planes of one series less than this far apart (degrees) were meant as one stack (one view): their split is named
#: (`not_parallel_note`), and a slice tilted out of the stack by less is one of its slices (`tilted_slices`)
NEAR_PARALLEL_DEG = 15.0
#: at most one slice position in this many may be tilted out of a stack's dominant plane and left out
#: (`tilted_slices`): 1 of 4 to 7, 2 of 8 to 11 ...; more and the stack is declined as not parallel
TILTED_SLICES_ONE_IN = 4


@dataclass(eq=False)
class TiltedSlices:
    """The slices of one view (planes less than NEAR_PARALLEL_DEG from its dominant plane) that `tilted_slices`
    leaves out of the stack: `kept` (the frames of the dominant orientation, one stack by the `orientation_groups`
    rule), `tilted` (the frames of the other slice positions of that view, left out), `orientation` (6,) the mean
    plane of the kept frames (`mean_orientation`) and the slice positions of the view (`positions`, kept and tilted)
    and of the tilted frames (`tilted_positions`)."""

    kept: list[FrameInfo]
    tilted: list[FrameInfo]
    orientation: np.ndarray
    positions: int
    tilted_positions: int

    def angle_deg(self, frame: FrameInfo) -> float:
        """How far (degrees, `orientation_angle_deg`) the frame's plane lies from the kept stack's mean plane."""
        return orientation_angle_deg(self.orientation, frame.orientation)


def _slice_key(frame: FrameInfo) -> tuple:
    """One acquired slice: its orientation to 4 decimals (rounding noise) and ImagePositionPatient to 0.1 mm (the
    phases of one cine slice share both)."""
    return tuple(np.round(np.asarray(frame.orientation, float), 4)), tuple(np.round(np.asarray(frame.position, float), 1))


def _dominant_plane(frames: list[FrameInfo], tolerance_deg: float
                    ) -> tuple[list[FrameInfo], list[FrameInfo], list[FrameInfo], np.ndarray, bool]:
    """(kept, near, others, mean plane (6,) of kept, ambiguous) for `tilted_slices`: kept are the frames of the
    largest set of orientations within `tolerance_deg` of their mean plane (each frame counted once, as
    `orientation_groups` counts; largest by slice positions, then frames), found from each distinct orientation in
    turn: the orientations within the tolerance of it, then of their mean plane, until the set holds still; near are
    the other frames less than NEAR_PARALLEL_DEG from the kept mean plane, others the rest (other views); ambiguous
    is True when another set, with other members, is as large."""
    limit = np.cos(np.radians(tolerance_deg))
    keys: dict[tuple, int] = {}
    distinct: list[np.ndarray] = []
    counts: list[int] = []
    slices: list[set] = []
    index_of: list[int] = []
    for frame in frames:
        key, position = _slice_key(frame)
        if key not in keys:
            keys[key] = len(distinct)
            distinct.append(np.asarray(frame.orientation, float))
            counts.append(0)
            slices.append(set())
        k = keys[key]
        counts[k] += 1
        slices[k].add(position)
        index_of.append(k)

    def mean_of(members: frozenset) -> np.ndarray:
        return mean_orientation([distinct[m] for m in sorted(members) for _ in range(counts[m])])

    found: dict[frozenset, tuple[int, int]] = {}
    for seed in range(len(distinct)):
        members = frozenset(m for m in range(len(distinct)) if _within(distinct[seed], distinct[m], limit))
        for _ in range(10):
            mean = mean_of(members)
            settled = frozenset(m for m in range(len(distinct)) if _within(mean, distinct[m], limit))
            if settled == members or not settled:
                break
            members = settled
        mean = mean_of(members)
        if members and all(_within(mean, distinct[m], limit) for m in members):
            found[members] = (sum(len(slices[m]) for m in members), sum(counts[m] for m in members))
    best = max(found, key=lambda m: (found[m], -min(m)))
    ambiguous = sum(1 for size in found.values() if size == found[best]) > 1
    mean = mean_of(best)
    kept, near, others = [], [], []
    for frame, k in zip(frames, index_of):
        if k in best:
            kept.append(frame)
        elif orientation_angle_deg(mean, distinct[k]) < NEAR_PARALLEL_DEG:
            near.append(frame)
        else:
            others.append(frame)
    return kept, near, others, mean, ambiguous


def tilted_slices(frames: list[FrameInfo], tolerance_deg: float = PARALLEL_TOLERANCE_DEG) -> TiltedSlices | None:
    """The slices of a stack tilted out of its plane that are left out so that the rest is measured, or None.

    The rule (one for LGE and cine, classic and Enhanced MR): of the frames' planes, the dominant orientation is the
    largest set of orientations within `tolerance_deg` of their own mean plane (the `orientation_groups` rule of one
    stack; largest by slice positions, a slice being one orientation and ImagePositionPatient, all its cine phases
    included). The other frames less than NEAR_PARALLEL_DEG from that mean plane were meant as slices of the same
    stack (one view; farther planes are other views, which `parallel_stacks` keeps as stacks of their own). They are
    left out, the dominant frames measured, where
    - they are a minority of at most one slice position in TILTED_SLICES_ONE_IN of the view's positions (1 of 4 to
      7, 2 of 8 to 11: never a majority, never a stack half one plane, half another), and
    - the dominant set is unique (no other set of orientations, with other members, holds as many positions and
      frames: two equal clusters have no dominant plane).
    None otherwise (one orientation group, nothing tilted, too many tilted or no dominant plane): the series is
    then grouped by `orientation_groups` as ever and a near-parallel split is declined as not parallel
    (`not_parallel_note`). Only the largest view is looked at; `parallel_stacks` serves each view."""
    if len(frames) < 2 or len(orientation_groups(frames, tolerance_deg)) < 2:
        return None
    kept, near, _, mean, ambiguous = _dominant_plane(frames, tolerance_deg)
    if not near or ambiguous:
        return None
    tilted_positions = len({_slice_key(f) for f in near})
    positions = tilted_positions + len({_slice_key(f) for f in kept})
    if tilted_positions * TILTED_SLICES_ONE_IN > positions:
        return None
    return TiltedSlices(kept, near, mean, positions, tilted_positions)


def parallel_stacks(frames: list[FrameInfo], tolerance_deg: float = PARALLEL_TOLERANCE_DEG
                    ) -> list[tuple[list[FrameInfo], list[FrameInfo]]]:
    """The stacks of a series as [(frames of the stack, frames tilted out of it and left out)]: `orientation_groups`
    where each view (planes less than NEAR_PARALLEL_DEG from its dominant plane, the largest view first) holding
    a few slices tilted out of its dominant plane (`tilted_slices`) is one stack of its dominant frames, the tilted
    frames beside it. The other frames are grouped by `orientation_groups`, and with no tilted slice anywhere the
    result is `orientation_groups` itself, each with no tilted frame. Stacks come in the order of their first
    frame."""
    groups = orientation_groups(frames, tolerance_deg)
    if len(groups) < 2:
        return [(group, []) for group in groups]
    stacks: list[tuple[list[FrameInfo], list[FrameInfo]]] = []
    rest: set[int] = set()
    remaining = list(frames)
    while remaining:
        kept, near, others, _, _ = _dominant_plane(remaining, tolerance_deg)
        found = tilted_slices(kept + near, tolerance_deg)
        if found is not None:
            stacks.append((found.kept, found.tilted))
        else:
            rest.update(id(f) for f in kept + near)
        remaining = others
    if not stacks:
        return [(group, []) for group in groups]
    if rest:
        stacks += [(group, []) for group in orientation_groups([f for f in frames if id(f) in rest], tolerance_deg)]
    order = {id(f): k for k, f in enumerate(frames)}
    for stack in stacks:
        stack[0].sort(key=lambda f: order[id(f)])
        stack[1].sort(key=lambda f: order[id(f)])
    return sorted(stacks, key=lambda stack: min(order[id(f)] for f in stack[0] + stack[1]))


def tilted_slice_text(frame: FrameInfo) -> str:
    """How a slice left out for its tilt is named: its frame / instance (`frame_name`), InstanceNumber of a
    single-frame image and ImagePositionPatient to 0.1 mm."""
    number = f", InstanceNumber {frame.instance_number}" if frame.ref.frame_number is None and \
        frame.instance_number is not None else ""
    position = [round(float(v), 1) for v in frame.position]
    return f"{frame_name(frame)}{number} at ImagePositionPatient {position}"


def slice_location_conflict(frames: list[FrameInfo], tolerance_mm: float = 0.5) -> str | None:
    """A note when several images at one slice position (one ImagePositionPatient) are the same kind of image (one
    reconstruction, the same TriggerTime and InversionTime: `same_image_timing`) but carry SliceLocation (0020,1041)
    values more than `tolerance_mm` apart: distinct slices written with one position by an anonymiser or converter,
    which no stack can be built from (PS3.3 C.7.6.2); None otherwise (SliceLocation absent on any frame included)."""
    locations = [_float(header_value(f.header.dataset, "SliceLocation")) for f in frames]
    if (len(frames) < 2 or any(v is None for v in locations) or len({f.reconstruction for f in frames}) > 1
            or not same_image_timing(frames) or max(locations) - min(locations) <= tolerance_mm):
        return None
    return (f"{BROKEN_GEOMETRY}: {len(frames)} images of the same timing share one ImagePositionPatient while "
            f"SliceLocation differs ({min(locations):g} to {max(locations):g} mm); no stack built")


def slice_groups(frames: list[FrameInfo], tolerance_mm: float = 0.05) -> list[tuple[float, list[FrameInfo]]]:
    """Frames of one orientation grouped by position along the stack normal, ascending: (position in mm, frames).

    The position is the centre of each image (`slice_centre`) on the normal of the frames' mean plane
    (`stack_normal`), not the corner (ImagePositionPatient) on the first frame's normal, so slices tilted a little
    about their centres keep their true spacing (PS3.3 C.7.6.2.1.1)."""
    normal = stack_normal(frames)
    distances = sorted(((slice_distance(frame, normal), frame) for frame in frames), key=lambda pair: pair[0])
    groups: list[tuple[float, list[FrameInfo]]] = []
    for distance, frame in distances:
        if groups and distance - groups[-1][0] <= tolerance_mm:
            groups[-1][1].append(frame)
        else:
            groups.append((distance, [frame]))
    return groups


def merge_replanned_slices(slices: list[tuple[float, list[FrameInfo]]], in_plane_tolerance_mm: float = 2.0
                           ) -> list[tuple[float, list[FrameInfo]]]:
    """`slice_groups` of a stack of one image per slice position, with a slice re-acquired after re-planning put back
    at its position: two neighbouring positions closer than a quarter of the slice thickness (and of the median
    spacing), shifted in-plane by at most `in_plane_tolerance_mm`, whose images were acquired in breath-holds of
    their own (`reacquired`) are one slice acquired again; they become one group at the latest image's position,
    the latest image first. Any other stack is returned unchanged."""
    if len(slices) < 3 or min(len(members) for _, members in slices) != 1:
        return slices
    spacing = float(np.median(np.diff([d for d, _ in slices])))
    normal = stack_normal([members[0] for _, members in slices])
    result = [slices[0]]
    for distance, members in slices[1:]:
        previous_distance, previous = result[-1]
        frame = members[0]
        sizes = [v for v in (slice_thickness(frame), spacing) if v and v > 0]
        tolerance = 0.25 * min(sizes) if sizes else 0.0
        offset = slice_centre(frame) - slice_centre(previous[0])
        in_plane = float(np.linalg.norm(offset - normal * np.dot(offset, normal)))
        merged = previous + members
        if distance - previous_distance <= tolerance and in_plane <= in_plane_tolerance_mm and reacquired(merged):
            merged.sort(key=latest_first)
            result[-1] = (slice_distance(merged[0], normal), merged)
        else:
            result.append((distance, members))
    return result


def plane_name(orientation: np.ndarray, tolerance_deg: float = 10.0) -> str:
    """axial / sagittal / coronal when the plane normal lies within the tolerance of a body axis, else oblique."""
    normal = np.abs(plane_normal(orientation))
    axis = int(np.argmax(normal))
    if normal[axis] < np.cos(np.radians(tolerance_deg)):
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def _spread(values: list[float | None]) -> float | None:
    """max − min of the values; 0 when all are absent; None when only some are present."""
    present = [v for v in values if v is not None]
    if not present:
        return 0.0
    return None if len(present) < len(values) else max(present) - min(present)


#: shortest time (s) between two images of one slice position acquired in separate breath-holds: one slice's LGE
#: breath-hold (a few heartbeats) plus the breaths before the next; the images a mapping (MOLLI, ShMOLLI, SASHA,
#: T2-prepared, multi-echo) or cine acquisition takes at one position lie a heartbeat or a few apart in ONE breath-hold
SEPARATE_BREATH_HOLDS_S = 10.0
#: TriggerTimes all below this (an RR interval under 5 ms is impossible) are seconds, not ms
MAX_RR_IN_SECONDS = 5.0
#: TriggerTimes reaching this (100 s: no trigger delay in ms does, T1-mapping sources span ~10 s) are microseconds
MIN_TRIGGER_IN_MICROSECONDS = 100_000.0


def are_repeats(frames: list[FrameInfo], trigger_tolerance_ms: float = 25.0, inversion_tolerance_ms: float = 5.0,
                one_per_slice: bool = False) -> bool:
    """True when frames at one slice position are repeats of one image (re-sent, re-reconstructed or re-acquired)
    rather than distinct cardiac phases, inversion times or reconstructions: the same reconstruction
    (`FrameInfo.reconstruction`: ImageType values from the third on, sign of the values), one
    TemporalPositionIdentifier, TriggerTime (0018,1060) within `trigger_tolerance_ms` and InversionTime (0018,0082)
    within `inversion_tolerance_ms` (each absent on all frames or present on all). A single frame is not a repeat.

    `one_per_slice`: the frames' stack holds one image at its other positions (an LGE stack); there the slice
    acquired again in later breath-holds of the same series (`reacquired`: a merged export, the operator having
    raised the TI or the heart rate having changed) is a repeat too, whatever its InversionTime and TriggerTime."""
    if (len(frames) < 2 or len({f.reconstruction for f in frames}) > 1
            or len({f.temporal_index for f in frames}) > 1):
        return False
    if same_image_timing(frames, trigger_tolerance_ms, inversion_tolerance_ms):
        return True
    return one_per_slice and reacquired(frames)


def same_image_timing(frames: list[FrameInfo], trigger_tolerance_ms: float = 25.0,
                      inversion_tolerance_ms: float = 5.0) -> bool:
    """True when the frames share TriggerTime and InversionTime within the tolerances (each absent on all or present
    on all)."""
    trigger = _spread([f.trigger_time for f in frames])
    inversion = _spread([f.inversion_time for f in frames])
    return (trigger is not None and trigger <= trigger_tolerance_ms
            and inversion is not None and inversion <= inversion_tolerance_ms)


def reacquired(frames: list[FrameInfo]) -> bool:
    """True when the frames at one slice position are that slice acquired again, each in a breath-hold of its own:
    one reconstruction and TemporalPositionIdentifier, an AcquisitionTime (0008,0032) on every frame and each at least
    SEPARATE_BREATH_HOLDS_S after the one before. InversionTime and TriggerTime may differ. The images of one
    position that a T1/T2-mapping or cine acquisition takes lie within one breath-hold, a heartbeat or a few apart,
    and are never this. Only meaningful in a stack of one image per slice (`are_repeats(one_per_slice=True)`)."""
    if (len(frames) < 2 or len({f.reconstruction for f in frames}) > 1
            or len({f.temporal_index for f in frames}) > 1):
        return False
    times = sorted(f.acquired_at for f in frames if f.acquired_at is not None)
    return len(times) == len(frames) and all(b - a >= SEPARATE_BREATH_HOLDS_S for a, b in zip(times, times[1:]))


def hms(seconds: float | None) -> str:
    """Seconds since midnight, or on the dated clock of `clock_seconds`, as HH:MM:SS (the time of day); "absent" for
    None."""
    if seconds is None:
        return "absent"
    whole = int(round(seconds)) % 86400
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def repeat_reason(distance: float, frames: list[FrameInfo], latest: FrameInfo) -> str:
    """Why the frames at one slice position count once and `latest` is the one kept (volume.keep_latest_repeats,
    grouping's count of re-acquired slices): a repeat with the same TriggerTime and InversionTime, or a slice
    acquired again in later breath-holds of the series (`reacquired`), with its InversionTimes and times."""
    if same_image_timing(frames):
        return (f"{len(frames)} images at slice {distance:.2f} mm with the same TriggerTime and InversionTime "
                f"(a repeat of one slice): kept the most recent, {frame_name(latest)}")
    ordered = sorted(frames, key=lambda f: (f.acquired_at if f.acquired_at is not None else -1.0))
    tis = ", ".join("absent" if f.inversion_time is None else f"{f.inversion_time:g}" for f in ordered)
    times = ", ".join(hms(f.acquisition_time) for f in ordered)
    return (f"slice at {distance:.2f} mm acquired {len(frames)} times in this series, each in a breath-hold of its own "
            f"(InversionTime {tis} ms; AcquisitionTime {times}): a re-acquisition of that slice, not another cardiac "
            f"phase or mapping source images; kept the latest, {frame_name(latest)}"
            + (f" (InversionTime {latest.inversion_time:g} ms)" if latest.inversion_time is not None else ""))


def latest_first(frame: FrameInfo) -> tuple:
    """Sort key putting the most recent acquisition first (`FrameInfo.acquired_at`: AcquisitionDate + AcquisitionTime,
    so a repeat after midnight counts as later; then InstanceNumber, then SOP UID)."""
    return (-(frame.acquired_at if frame.acquired_at is not None else -1.0),
            -(frame.instance_number if frame.instance_number is not None else -1), frame.ref.sop_instance_uid)


def timing_trigger_times(frames: list[FrameInfo]) -> list[float]:
    """The distinct TriggerTimes (0018,1060) of a series that carry timing, sorted; [] when they carry none.

    Values are compared to 4 significant digits (no unit is assumed). When several images share a slice position
    and every frame has one and the same TriggerTime (0 written on every image by some exports, or a constant delay),
    the value says nothing about when each image was taken: it is treated as absent, as a missing TriggerTime is
    (phases then go by TemporalPositionIdentifier / InstanceNumber order, AcquisitionTime tells dynamics apart).
    """
    values = [f.trigger_time for f in frames if f.trigger_time is not None]
    distinct = sorted({float(f"{v:.4g}") for v in values})
    if len(distinct) == 1 and len(values) == len(frames):
        groups = [members for group in orientation_groups(frames) for _, members in slice_groups(group)]
        if any(len(members) > 1 for members in groups):
            return []
    return distinct


def repeated_passes(per_slice: list[list[FrameInfo]]) -> bool:
    """True when the whole stack was acquired more than once in the series: every slice holds the same number (2 or
    more) of frames, and at every slice those are repeats of one image (`are_repeats(one_per_slice=True)`: one
    reconstruction and temporal index, the same timing or separate breath-holds) with distinct AcquisitionTimes. Such
    passes are not cardiac phases: `volume.keep_latest_repeats` keeps the latest at each slice."""
    counts = {len(frames) for frames in per_slice}
    if len(counts) != 1 or counts.pop() < 2:
        return False
    for frames in per_slice:
        times = [f.acquisition_time for f in frames]
        if any(t is None for t in times) or len({round(t, 2) for t in times}) < len(frames):
            return False
        if not are_repeats(frames, one_per_slice=True):
            return False
    return True


def frame_name(frame: FrameInfo) -> str:
    """'instance <uid>' for a single-frame image, 'frame <n> of instance <uid>' for a frame of a multi-frame one (two
    frames of one instance are then told apart)."""
    if frame.ref.frame_number is not None:
        return f"frame {frame.ref.frame_number} of instance {frame.ref.sop_instance_uid}"
    return f"instance {frame.ref.sop_instance_uid}"


def temporal_index_name(frames: list[FrameInfo]) -> str:
    """The attribute `FrameInfo.temporal_index` was read from for these frames: 'TemporalPositionIndex (0020,9128)'
    for frames of Enhanced MR instances (Frame Content functional group), 'TemporalPositionIdentifier (0020,0100)'
    for classic images (and Legacy Converted frames without a Frame Content index), both joined with '/' when the
    frames mix them."""
    names = []
    for frame in frames:
        content = next((_item(group, "FrameContentSequence") for group in functional_groups(frame)
                        if _item(group, "FrameContentSequence") is not None), None)
        enhanced = content is not None and _int(content.get("TemporalPositionIndex")) is not None
        names.append("TemporalPositionIndex (0020,9128)" if enhanced else "TemporalPositionIdentifier (0020,0100)")
    return " / ".join(dict.fromkeys(names)) or "TemporalPositionIdentifier (0020,0100)"


def images_per_slice(per_slice: list[list[FrameInfo]]) -> list[int]:
    """Distinct images at each slice position: in a stack of one image per slice, a slice whose frames are repeats
    (`are_repeats(one_per_slice=True)`: re-sent, or re-acquired in later breath-holds at another InversionTime)
    counts once, as `volume.keep_latest_repeats` keeps one of them; in a stack of several images (cardiac phases)
    per breath-hold, a slice acquired in several passes counts the pass `volume.keep_latest_passes` keeps
    (`kept_pass`); otherwise the frame counts."""
    counts = [len(frames) for frames in per_slice]
    if len(set(counts)) > 1 and min(counts) == 1:
        return [1 if are_repeats(frames, one_per_slice=True) else len(frames) for frames in per_slice]
    expected = typical_pass_size(per_slice)
    if expected < 2:
        return counts
    # a slice of more phases in one pass (finer temporal sampling) is measured on the others' `expected` phases
    return [expected if one_pass_of_more_phases(frames, per_slice, expected)
            else len(kept_pass(slice_passes(frames), expected)) for frames in per_slice]


#: the sources `pass_time` reads, best first: the frame's own acquisition time, its multi-frame instance's acquisition
#: time standing in for it (`FrameInfo.instance_time`), ContentDate/ContentTime (when the image was made)
PASS_SOURCES = ("frame acquisition", "instance acquisition", "content")


def pass_source(frame: FrameInfo) -> str | None:
    """Which of PASS_SOURCES `pass_time` reads for the frame; None when it has no time."""
    if frame.acquired_at is not None:
        return PASS_SOURCES[1] if frame.instance_time else PASS_SOURCES[0]
    return PASS_SOURCES[2] if pass_time(frame) is not None else None


def pass_time(frame: FrameInfo) -> float | None:
    """When the frame was acquired, in seconds on the clock of `clock_seconds` (running across midnight where the date
    is known): `FrameInfo.acquired_at` (AcquisitionDateTime (0008,002A), AcquisitionDate (0008,0022) + AcquisitionTime
    (0008,0032), Enhanced MR FrameAcquisitionDateTime (0018,9074), for a frame without one its instance's
    AcquisitionDateTime), else ContentDate (0008,0023) + ContentTime (0008,0033), a weaker stand-in (when the image was
    made); None when the header has neither time. `pass_source` says which."""
    if frame.acquired_at is not None:
        return frame.acquired_at
    index = frame.frame_index if frame.ref.frame_number is not None else None
    ds = frame.header.dataset
    return clock_seconds(header_value(ds, "ContentTime", index), header_value(ds, "ContentDate", index))


def _latest_key(frame: FrameInfo) -> tuple:
    """Sort key, earliest first: `pass_time` (absent first), then InstanceNumber (0020,0013)."""
    time = pass_time(frame)
    return (time if time is not None else -1.0, frame.instance_number if frame.instance_number is not None else -1)


def slice_passes(frames: list[FrameInfo]) -> list[list[FrameInfo]]:
    """The frames at one slice position split into passes (breath-holds), earliest first: in `pass_time` order, a new
    pass starts where the time steps by SEPARATE_BREATH_HOLDS_S or more (the phases of one cine slice lie within one
    breath-hold) AND the new pass repeats the cardiac phases of the pass before (`_repeats_cycle`: their TriggerTime
    (0018,1060) ranges, else TemporalPositionIdentifier ranges, overlap). A time gap between disjoint phases (a
    reconstruction queue stalled between phases 10 and 11, seen in ContentTime) is one pass. One pass, the frames as
    given, when a frame has no time: passes are then not told apart.

    Passes compare like with like: where the frames of the slice are timed by different sources (`pass_source`: some
    by their own acquisition time, others by their instance's acquisition time or ContentTime standing in for a
    missing FrameAcquisitionDateTime / AcquisitionTime), only the frames of the best source present are split into
    passes, and each other frame joins a pass (`_join_pass`) instead of being split off by a time of another kind.

    Each pass keeps the frames in their given order."""
    if len(frames) < 2 or any(pass_time(f) is None for f in frames):
        return [list(frames)]
    sources = {pass_source(f) for f in frames}
    if len(sources) > 1:
        best = min(sources, key=PASS_SOURCES.index)
        passes = slice_passes([f for f in frames if pass_source(f) == best])
        if len(passes) == 1:
            return [list(frames)]
        for frame in frames:
            if pass_source(frame) != best:
                _join_pass(passes, frame).append(frame)
        pass_of = {id(f): k for k, members in enumerate(passes) for f in members}
        return [[f for f in frames if pass_of[id(f)] == k] for k in range(len(passes))]
    ordered = sorted(frames, key=_latest_key)
    groups = [[ordered[0]]]
    for previous, frame in zip(ordered, ordered[1:]):
        if pass_time(frame) - pass_time(previous) >= SEPARATE_BREATH_HOLDS_S:
            groups.append([])
        groups[-1].append(frame)
    passes = [groups[0]]
    for group in groups[1:]:
        if _repeats_cycle(passes[-1], group):
            passes.append(group)
        else:
            passes[-1] = passes[-1] + group
    if len(passes) == 1:
        return [list(frames)]
    pass_of = {id(f): k for k, members in enumerate(passes) for f in members}
    return [[f for f in frames if pass_of[id(f)] == k] for k in range(len(passes))]


def _join_pass(passes: list[list[FrameInfo]], frame: FrameInfo) -> list[FrameInfo]:
    """The pass (of `slice_passes`) a frame timed by a weaker source joins: preferably one holding frames of its own
    instance and StackID (0020,9056), then one that has no frame at its cardiac phase (TemporalPositionIndex /
    TemporalPositionIdentifier, else TriggerTime (0018,1060)), then the latest."""
    def phase(f: FrameInfo):
        return f.temporal_index if f.temporal_index is not None else f.trigger_time

    def score(k: int) -> tuple:
        members = passes[k]
        same = any(f.ref.sop_instance_uid == frame.ref.sop_instance_uid and f.stack_id == frame.stack_id
                   for f in members)
        free = phase(frame) is None or all(phase(f) != phase(frame) for f in members)
        return same, free, k
    return passes[max(range(len(passes)), key=score)]


def _repeats_cycle(earlier: list[FrameInfo], later: list[FrameInfo]) -> bool:
    """True when `later` re-covers cardiac phases of `earlier` (two passes of one slice): their TriggerTime (0018,1060)
    ranges overlap, else (TriggerTime not on every frame) their TemporalPositionIdentifier ranges; True when neither
    is on every frame (the time gap alone, `slice_passes`, then tells the passes apart)."""
    for values in ([f.trigger_time for f in earlier + later], [f.temporal_index for f in earlier + later]):
        if all(v is not None for v in values):
            first, second = values[:len(earlier)], values[len(earlier):]
            return min(second) <= max(first) and min(first) <= max(second)
    return True


def typical_pass_size(per_slice: list[list[FrameInfo]]) -> int:
    """The most common number of frames in one pass (`slice_passes`) over the slice positions of a stack, the larger
    on a tie: the cardiac phases (or images) one breath-hold acquires at a slice. 0 for an empty stack."""
    sizes = Counter(len(p) for frames in per_slice for p in slice_passes(frames))
    return max(sizes, key=lambda n: (sizes[n], n)) if sizes else 0


def kept_pass(passes: list[list[FrameInfo]], expected: int) -> list[FrameInfo]:
    """Of the passes of one slice (`slice_passes`, earliest first) the latest complete one (`expected` frames or
    more); where none is complete, the fullest, the latest of equals."""
    best = max(range(len(passes)), key=lambda k: (min(len(passes[k]), expected), k))
    return passes[best]


def passes_reason(distance: float, passes: list[list[FrameInfo]], kept: list[FrameInfo]) -> str:
    """Why the earlier passes of a slice acquired several times in its series are left out (`volume.
    keep_latest_passes`), naming the slice, each pass (images, AcquisitionTime) and the one kept."""
    described = ", ".join(f"{len(p)} image(s) at {hms(pass_time(max(p, key=_latest_key)))}" for p in passes)
    latest = "the latest pass" if kept is passes[-1] else "the latest complete pass (the later one is incomplete)"
    return (f"slice at {distance:.2f} mm acquired {len(passes)} times in this series ({described}): a re-acquisition "
            f"of that slice in a breath-hold of its own, not further cardiac phases; measured {latest} "
            f"({len(kept)} image(s)), the {'earlier' if kept is passes[-1] else 'other'} pass(es) left out")


def passes_group_reason(distances: list[float], passes: list[list[list[FrameInfo]]], kept: list[int]) -> str:
    """One line for several slices re-acquired alike (`volume.keep_latest_passes`): the same number of passes, of the
    same sizes, the same pass kept at each (`kept`: its index per slice). Names the positions (mm), each pass's
    images per slice and AcquisitionTimes (first to last over the slices), and the pass kept, where a line per slice
    (`passes_reason`) would say the same a dozen times."""
    count = len(passes[0])

    def when(k: int) -> str:
        times = sorted(pass_time(max(p[k], key=_latest_key)) for p in passes
                       if pass_time(max(p[k], key=_latest_key)) is not None)
        return "" if not times else f" at {hms(times[0])}" if hms(times[0]) == hms(times[-1]) \
            else f" at {hms(times[0])} to {hms(times[-1])}"
    described = ", ".join(f"{len(passes[0][k])} image(s) per slice{when(k)}" for k in range(count))
    latest = kept[0] == count - 1
    what = "the latest pass" if latest else "the latest complete pass (the later one is incomplete)"
    return (f"{len(distances)} slices (at {', '.join(f'{d:.2f}' for d in distances)} mm) each acquired {count} times "
            f"in this series ({described}): re-acquisitions of those slices in breath-holds of their own, not further "
            f"cardiac phases; measured {what} at each ({len(passes[0][kept[0]])} image(s)), the "
            f"{'earlier' if latest else 'other'} pass(es) left out")


def acquired_last(frames: list[FrameInfo]) -> tuple:
    """When the last of the frames was acquired, as a sort key: the latest `pass_time` (absent: -1), then the
    highest InstanceNumber (0020,0013)."""
    return max(_latest_key(f) for f in frames)


def _slice_step(positions: list[float]) -> float:
    """The median step (mm) between a stack's distinct slice positions; 0 for a single position."""
    distinct = np.unique(np.round(positions, 2))
    return float(np.median(np.diff(distinct))) if len(distinct) > 1 else 0.0


#: how much of an earlier stack's range (in its slice steps) a later stack may leave uncovered and still repeat it:
#: one slice shorter, and re-planned by up to half a slice as well (9 slices half a step off 10 leave 1.5 steps)
REPEAT_UNCOVERED_STEPS = 1.5


def same_range(later: list[float], earlier: list[float]) -> bool:
    """True when a later stack's slice positions along the normal (mm) cover (nearly) the whole range of an earlier
    stack, a repeat of that stack: the earlier range less their overlap is at most REPEAT_UNCOVERED_STEPS slice steps
    of the earlier stack (a re-planned stack one slice shorter still repeats it, also when shifted by half a slice:
    taken for a complementary slab it was mixed with the earlier stack into one volume of half steps) and the overlap
    is more than half the earlier range (at one position, when the earlier stack is a single slice). A later stack over
    part of the earlier range (`partial_repeat`) or a complementary slab (base and apex, overlapping by a slice or two)
    is not. What the earlier stack alone covers is not thrown away silently: `earlier_only` / `grid_mismatch`."""
    overlap = min(max(later), max(earlier)) - max(min(later), min(earlier))
    extent = max(earlier) - min(earlier)
    if extent == 0:
        return overlap >= 0
    return overlap > 0.5 * extent and extent - overlap <= REPEAT_UNCOVERED_STEPS * _slice_step(earlier) + 0.05


def partial_repeat(later: list[float], earlier: list[float], tolerance_mm: float = 0.05) -> bool:
    """True when a later stack lies inside an earlier stack's range (mm along the normal) without covering it
    (`same_range` False), at slice positions the earlier stack does not have (re-planned): some slices of the earlier
    stack acquired again a few mm off. Its slices cannot replace the earlier ones one for one, and measuring both would
    count those levels twice. A later stack at the earlier stack's own positions is not this: its slices merge with
    the earlier ones and `slice_passes` keeps the latest pass of each."""
    if same_range(later, earlier) or min(later) < min(earlier) - tolerance_mm or max(later) > max(earlier) + tolerance_mm:
        return False
    return any(min(abs(d - e) for e in earlier) > tolerance_mm for d in later)


def stacks_of(frames: list[FrameInfo]) -> dict[str, list[FrameInfo]]:
    """The frames by StackID (0020,9056) (`FrameInfo.stack_id`), in first-seen order; {} unless every frame has one."""
    stacks: dict[str, list[FrameInfo]] = {}
    for frame in frames:
        if frame.stack_id is None:
            return {}
        stacks.setdefault(frame.stack_id, []).append(frame)
    return stacks


def superseded_stacks(frames: list[FrameInfo]) -> list[tuple[str, str, bool]]:
    """(StackID left out, StackID kept, whole) for each stack of one orientation that is left out because of another:
    whole=True where a stack acquired later (`acquired_last`) covers (nearly) its whole range along the normal
    (`same_range`: the stack re-planned and acquired again in the series), a kept stack preferred, else a later stack
    that is itself covered again (passes 1, 2, 3 each shorter: pass 1 repeats in pass 2 though pass 3 alone leaves
    two of its slices uncovered); whole=False where it is a later stack lying
    inside the kept stack's range at other positions (`partial_repeat`: some slices re-acquired off the earlier
    positions; the full stack is measured). [] without StackID on every frame, with one stack only, or with
    complementary stacks (slabs over different ranges, one volume), or a later stack at the earlier positions (its
    slices replace the earlier ones slice by slice, `slice_passes`). Stacks that are not told apart in time are paired
    too (the caller decides)."""
    stacks = stacks_of(frames)
    if len(stacks) < 2 or any(f.position is None or f.orientation is None for f in frames):
        return []
    normal = frames[0].normal
    ranges = {sid: [float(np.dot(f.position, normal)) for f in members] for sid, members in stacks.items()}
    kept: list[str] = []
    pairs: list[tuple[str, str, bool]] = []
    seen: list[str] = []
    for sid in sorted(stacks, key=lambda sid: acquired_last(stacks[sid]), reverse=True):
        # a kept later stack first; else a later stack itself covered again (three passes: the middle pass repeats
        # the first, however short the latest is), so that a position it covers never falls back to the oldest pass
        later = next((k for k in kept + [k for k in seen if k not in kept] if same_range(ranges[k], ranges[sid])),
                     None)
        seen.append(sid)
        if later is not None:
            pairs.append((sid, later, True))
            continue
        kept.append(sid)
    for sid in list(kept):
        earlier = next((k for k in kept if k != sid and acquired_last(stacks[k]) < acquired_last(stacks[sid])
                        and partial_repeat(ranges[sid], ranges[k])), None)
        if earlier is not None:
            pairs.append((sid, earlier, False))
    return pairs


#: two slice positions along the normal closer than this (mm) are one position of one slice grid (the repeat of a stack
#: from the same planning writes the same positions, up to rounding)
SAME_GRID_MM = 1.0
#: the largest angle (degrees, `orientation_angle_deg`) between the planes of two passes of a stack whose slices are
#: put together in one volume (the same planning repeats ImageOrientationPatient up to rounding)
SAME_PLAN_DEG = 0.5
#: the largest in-plane distance (mm) between the centres of a slice of one pass and the nearest slice of the other
#: for the two to be put together (a moved field of view is another plan)
SAME_PLAN_IN_PLANE_MM = 2.0


def stack_positions(frames: list[FrameInfo], normal: np.ndarray) -> list[float]:
    """The distinct slice positions (mm along `normal`, `slice_distance`) of the frames, ascending, positions within
    SAME_GRID_MM counted once."""
    merged: list[float] = []
    for position in sorted(slice_distance(f, normal) for f in frames):
        if not merged or position - merged[-1] > SAME_GRID_MM:
            merged.append(position)
    return merged


def earlier_only(earlier: list[FrameInfo], covered: list[float], normal: np.ndarray) -> list[FrameInfo]:
    """The frames of an earlier pass at slice positions (mm along `normal`) further than SAME_GRID_MM from every
    position in `covered` (those of the stacks measured): what only the earlier pass acquired."""
    return [f for f in earlier if all(abs(slice_distance(f, normal) - c) > SAME_GRID_MM for c in covered)]


def grid_mismatch(earlier: list[FrameInfo], later: list[FrameInfo], normal: np.ndarray) -> str | None:
    """Why the slices of an earlier pass of a stack cannot complete a later pass of it in one volume, or None where
    they can: both on one slice grid (every earlier position within SAME_GRID_MM of the later stack's positions
    continued by its step), in one orientation (SAME_PLAN_DEG), with one pixel grid (Rows, Columns, PixelSpacing) and
    the same in-plane placement (SAME_PLAN_IN_PLANE_MM): the technologist repeated the same planning. A pass shifted
    along the normal (half a slice, say), tilted or with another field of view is another geometry, and slices of two
    geometries are not mixed in one volume."""
    positions = stack_positions(later, normal)
    step = float(np.median(np.diff(positions))) if len(positions) > 1 else 0.0
    if step <= 0:
        return "a single slice position (no slice grid to continue)"
    offsets = [abs(r - round(r)) * step for r in ((slice_distance(f, normal) - positions[0]) / step for f in earlier)]
    if max(offsets) > SAME_GRID_MM:
        return (f"another slice grid (the earlier positions lie up to {max(offsets):.2f} mm off the later stack's "
                f"{step:.2f} mm grid)")
    angle = orientation_angle_deg(mean_orientation([f.orientation for f in earlier]),
                                  mean_orientation([f.orientation for f in later]))
    if angle > SAME_PLAN_DEG:
        return f"another orientation ({angle:.2f} degrees from the later stack's plane)"
    grids = {(f.rows, f.cols, *(round(float(v), 4) for v in f.pixel_spacing)) for f in later}
    if any((f.rows, f.cols, *(round(float(v), 4) for v in f.pixel_spacing)) not in grids for f in earlier):
        return "another pixel grid (Rows, Columns or PixelSpacing)"
    centres = [(slice_distance(g, normal), slice_centre(g)) for g in later]
    shift = 0.0
    for frame in earlier:
        at = slice_distance(frame, normal)
        nearest = min(centres, key=lambda c: abs(c[0] - at))[1]
        offset = slice_centre(frame) - nearest
        shift = max(shift, float(np.linalg.norm(offset - np.dot(offset, normal) * normal)))
    if shift > SAME_PLAN_IN_PLANE_MM:
        return f"another in-plane placement (slice centres {shift:.1f} mm apart in the plane)"
    return None


def images_per_position(frames: list[FrameInfo], normal: np.ndarray) -> int:
    """The most common number of frames at one slice position (`stack_positions`) of a pass of a stack, the larger on
    a tie: 1 for an LGE, the cardiac phases for a cine. 0 for no frames."""
    positions = stack_positions(frames, normal)
    counts = Counter(min(range(len(positions)), key=lambda k: abs(positions[k] - slice_distance(f, normal)))
                     for f in frames)
    sizes = Counter(counts.values())
    return max(sizes, key=lambda n: (sizes[n], n)) if sizes else 0


def fill_mismatch(earlier: list[FrameInfo], later: list[FrameInfo], normal: np.ndarray) -> str | None:
    """Why the slices of an earlier pass of a stack cannot complete a later pass of it in one volume, worded to follow
    'the later pass re-acquired the stack ...', or None where they can: another geometry (`grid_mismatch`, 'on
    another slice grid ...'), or another number of images per slice position (`images_per_position`: a cine re-
    acquired with 10 phases where the earlier pass has 20; one slice of other phases would be matched to the others'
    phases or refused as a slice acquired twice)."""
    problem = grid_mismatch(earlier, later, normal)
    if problem is not None:
        return "on " + problem
    n_earlier, n_later = images_per_position(earlier, normal), images_per_position(later, normal)
    if n_earlier != n_later:
        return (f"with {n_later} images per slice position where the earlier pass has {n_earlier} (other cardiac "
                "phases or images)")
    return None


def measured_stack(pairs: list[tuple[str, str, bool]], sid: str) -> str | None:
    """The StackID actually measured in place of a stack `superseded_stacks` left out as covered again (whole=True):
    its pair partner, or where that partner is itself covered again (three passes: the middle pass repeats the first
    and is repeated by the latest), the first stack down that chain that is not left out. None where the chain ends
    in a stack left out otherwise (`partial_repeat`) or loops."""
    later = {left: kept for left, kept, whole in pairs if whole}
    dropped = {left for left, _, _ in pairs}
    seen = {sid}
    current = later.get(sid)
    while current is not None and current in later:
        if current in seen:
            return None
        seen.add(current)
        current = later[current]
    return None if current is None or current in dropped else current


def stack_fills(frames: list[FrameInfo], pairs: list[tuple[str, str, bool]]) -> dict[str, list[FrameInfo]]:
    """{StackID left out: its frames that still go into the volume} for the stacks `superseded_stacks` left out as
    covered again by a later stack (whole=True): per slice position the latest acquisition wins, so a position that
    only the earlier stack holds (`earlier_only`: the later pass one slice shorter, missing the apical or basal end)
    is filled from it where the two share one slice grid and plan and hold as many images per position
    (`fill_mismatch` None: not one slice of 20 cine phases among slices of 10); where several earlier stacks hold it,
    the latest (three passes: a position the middle pass covers never comes from the first). Positions measured by a
    stack that is kept (complementary slabs included) are never filled. The check is made against the frames actually
    measured, never against a pair partner that is itself left out: the stack measured in its place
    (`measured_stack`) plus the fills already taken for it, so that every fill lies on the measured stack's slice grid
    and plan (three passes whose latest is re-planned half a slice off: the oldest pass, on the middle pass's grid,
    fills nothing). {} where nothing is filled."""
    stacks = stacks_of(frames)
    dropped = {sid for sid, _, _ in pairs}
    if not dropped:
        return {}
    normal = stack_normal(frames)
    covered = stack_positions([f for f in frames if f.stack_id not in dropped], normal)
    fills: dict[str, list[FrameInfo]] = {}
    taken: dict[str, list[FrameInfo]] = {}
    for sid, _, whole in sorted(pairs, key=lambda p: acquired_last(stacks[p[0]]), reverse=True):
        measured = measured_stack(pairs, sid) if whole else None
        if measured is None:
            continue
        if fill_mismatch(stacks[sid], stacks[measured] + taken.get(measured, []), normal) is not None:
            continue
        fill = earlier_only(stacks[sid], covered, normal)
        if fill:
            fills[sid] = fill
            taken[measured] = taken.get(measured, []) + fill
            covered = sorted(covered + stack_positions(fill, normal))
    return fills


def interleaved_passes(distances: list[float], times: list[float | None], tolerance: float = 0.1
                       ) -> tuple[list[int], list[int]] | None:
    """The slice indices of two passes of one stack interleaved along the normal (the stack acquired again later
    after re-planning, shifted by less than a third of its spacing, without StackID), earlier pass first; None when
    the slices are not that. Two passes are recognised only when every condition holds: an even number of 6 or more
    slices; steps alternating between two sizes, each regular within `tolerance`, the smaller at most half the
    larger (a stack shifted by half its spacing to fill the gaps has even steps and stays one stack); every slice
    timed; and the alternate slices acquired in two separate time blocks (every slice of one pass before every slice
    of the other).

    distances: each slice's position along the normal (mm), ascending; times: each slice's acquisition time (s)."""
    if len(distances) < 6 or len(distances) % 2 or any(t is None for t in times):
        return None
    steps = np.diff(distances)
    sizes = [float(np.median(steps[0::2])), float(np.median(steps[1::2]))]
    if min(sizes) <= 0 or min(sizes) > 0.5 * max(sizes):
        return None
    if any(abs(step - sizes[k % 2]) > tolerance * sizes[k % 2] for k, step in enumerate(steps)):
        return None
    even, odd = list(range(0, len(distances), 2)), list(range(1, len(distances), 2))
    if max(times[k] for k in even) < min(times[k] for k in odd):
        return even, odd
    if max(times[k] for k in odd) < min(times[k] for k in even):
        return odd, even
    return None


#: images of one stack acquired on different days and this far apart (s) or more come from different examinations (a
#: prior exam's images merged into the series by a PACS, a re-used SeriesInstanceUID): one CMR examination, its
#: pauses included, lasts well under this, so one running past midnight stays one (the clock is dated:
#: `clock_seconds`)
SEPARATE_EXAMINATIONS_S = 4 * 3600.0


#: more Frames of Reference than this in one stack are no patient coordinate systems but UIDs made per image or per
#: slice (an anonymiser, a re-send tool): not used to split the stack (`one_examination`)
MAX_FRAMES_OF_REFERENCE = 3


def frame_of_reference(frame: FrameInfo) -> str | None:
    """The frame's FrameOfReferenceUID (0020,0052), None when absent or empty."""
    return str(frame.header.dataset.get("FrameOfReferenceUID", "") or "").strip() or None


def _dated(frame: FrameInfo) -> float | None:
    """`FrameInfo.acquired_at` where it is dated (AcquisitionDate / AcquisitionDateTime known), else None."""
    at = frame.acquired_at
    return at if at is not None and at >= 86400.0 else None


def _day(seconds: float) -> str:
    return datetime.date.fromordinal(int(seconds // 86400)).isoformat()


def _days(frames: list[FrameInfo]) -> str:
    """'2023-01-31' or '2023-01-31 to 2023-02-01': the AcquisitionDates of dated frames; '' without one."""
    days = sorted({_day(t) for t in map(_dated, frames) if t is not None})
    return "" if not days else days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"


@dataclass
class Examinations:
    """The frames of one stack that belong together (`kept`: one examination, one Frame of Reference) and those that
    do not, grouped, each with why (`left_out`: [(frames, reason)]); `one_examination` finds them."""

    kept: list[FrameInfo]
    left_out: list[tuple[list[FrameInfo], str]]

    def warning(self, frames: list[FrameInfo], reason: str) -> str:
        """The stack warning of one left-out group: how many images, at which slice positions, which instances."""
        positions = {tuple(np.round(f.position, 1)) for f in frames if f.position is not None}
        series = sorted({str(f.header.dataset.get("SeriesNumber", "") or "") for f in frames} - {""})
        return (f"{len(frames)} image(s) at {len(positions)} slice position(s)"
                + (f" of series {', '.join(series)}" if series else "")
                + f" ({', '.join(frame_name(f) for f in frames[:2])}{', ...' if len(frames) > 2 else ''}) left out: "
                + f"{reason}; the stack is measured on the other {len(self.kept)} image(s)")


def one_examination(frames: list[FrameInfo]) -> Examinations | None:
    """Which frames of one stack come from one examination and one Frame of Reference, where they do not all:

    1. acquisitions on different days and SEPARATE_EXAMINATIONS_S or more apart on the dated clock (AcquisitionDate
       + AcquisitionTime, AcquisitionDateTime: `FrameInfo.acquired_at`; an examination running past midnight stays
       one) are different examinations (a prior exam's images merged into the series, a re-used
       SeriesInstanceUID): the latest examination is kept;
    2. of the rest, frames of different FrameOfReferenceUID (0020,0052) hold positions in different patient
       coordinate systems (PS3.3 C.7.4.1: a series has one Frame of Reference; a new one follows a patient moved or
       re-landmarked), which cannot be measured as one stack: the Frame of Reference holding the most slice positions
       is kept (the latest acquisition on a tie). Only where a few (up to MAX_FRAMES_OF_REFERENCE) Frames of
       Reference each hold a stack of their own (2 or more slice positions): a UID new on every image or every slice
       (an anonymiser's, one-slice series of a vendor writing one per series) says nothing of the geometry and is
       not used.

    Frames without a dated time or a FrameOfReferenceUID stay with the kept ones (nothing says they differ). Returns
    None when every frame belongs together, else the `Examinations` (the left-out groups with the reason, naming the
    UIDs and dates)."""
    dated = sorted({t for t in map(_dated, frames) if t is not None})
    starts = dated[:1] + [b for a, b in zip(dated, dated[1:])
                          if b - a >= SEPARATE_EXAMINATIONS_S and _day(a) != _day(b)]

    def session(frame: FrameInfo) -> int | None:
        at = _dated(frame)
        return None if at is None else sum(start <= at for start in starts) - 1

    latest = len(starts) - 1
    same_session = [f for f in frames if session(f) in (None, latest)]
    by_reference: dict[str, list[FrameInfo]] = {}
    for frame in same_session:
        uid = frame_of_reference(frame)
        if uid is not None:
            by_reference.setdefault(uid, []).append(frame)

    def positions(members: list[FrameInfo]) -> int:
        return len({tuple(np.round(f.position, 1)) for f in members if f.position is not None})

    kept_reference = None
    if 1 < len(by_reference) <= MAX_FRAMES_OF_REFERENCE and all(positions(m) >= 2 for m in by_reference.values()):
        kept_reference = max(by_reference, key=lambda uid: (
            positions(by_reference[uid]), max((f.acquired_at or -1.0) for f in by_reference[uid]),
            len(by_reference[uid])))
    groups: dict[tuple, list[FrameInfo]] = {}
    for frame in frames:
        other_session = session(frame) not in (None, latest)
        uid = frame_of_reference(frame)
        other_reference = kept_reference is not None and uid is not None and uid != kept_reference
        if other_session or other_reference:
            groups.setdefault((session(frame) if other_session else None, uid if other_reference else None),
                              []).append(frame)
    if not groups:
        return None
    left = {id(f) for members in groups.values() for f in members}
    kept = [f for f in frames if id(f) not in left]
    kept_days = _days(kept)
    kept_uids = {frame_of_reference(f) for f in kept} - {None}
    left_out = []
    for (other_session, other_uid), members in groups.items():
        parts = []
        if other_session is not None:
            their_uids = {frame_of_reference(f) for f in members} - {None}
            other_frame = (len(kept_uids) == 1 and len(their_uids) == 1 and their_uids != kept_uids)
            parts.append(f"acquired on {_days(members)} (AcquisitionDate / AcquisitionTime), "
                         f"another day, {SEPARATE_EXAMINATIONS_S / 3600:g} h or more apart from the stack's images kept"
                         + (f" (acquired on {kept_days})" if kept_days else "") + ": another examination"
                         + (f", in another Frame of Reference (FrameOfReferenceUID {next(iter(their_uids))}, not "
                            f"{next(iter(kept_uids))})" if other_frame else ""))
        if other_uid is not None:
            parts.append(f"FrameOfReferenceUID {other_uid}, not the {kept_reference} of the images kept: positions "
                         "in another patient coordinate system (PS3.3 C.7.4.1: the patient moved or another "
                         "examination)")
        left_out.append((members, "; ".join(parts) + "; images of two examinations or frames of reference are not "
                         "one stack (a prior exam merged into the series, a re-used series?), the "
                         + ("latest examination" if other_session is not None else
                            "frame of reference holding the most slice positions") + " is measured"))
    return Examinations(kept, left_out)


#: one pass of more phases (`one_pass_of_more_phases`): every TriggerTime step within this fraction of the median step
EVEN_STEP_TOLERANCE = 0.25


def one_pass_of_more_phases(frames: list[FrameInfo], per_slice: list[list[FrameInfo]], expected: int) -> bool:
    """True when one slice's frames are ONE pass over the cardiac cycle at a finer temporal sampling than the
    `expected` phases of the other slices (a slice acquired with another temporal resolution, e.g. 24 phases beside
    12), not the slice acquired several times: a whole multiple (2 or more) of `expected` frames whose TriggerTimes
    (0018,1060) are all distinct and evenly stepped (every step within EVEN_STEP_TOLERANCE of their median step: two
    passes over one cycle repeat or interleave their trigger times unevenly), whose TemporalPositionIdentifiers, where
    present, are all distinct, and that span no more of the cycle than the other slices (`within_usual_cycle`).
    False without TriggerTime on every frame."""
    times, remainder = divmod(len(frames), expected)
    triggers = [f.trigger_time for f in frames]
    if times < 2 or remainder or None in triggers:
        return False
    indices = [f.temporal_index for f in frames]
    if None not in indices and len(set(indices)) < len(indices):
        return False
    steps = np.diff(sorted(triggers))
    step = float(np.median(steps))
    if step <= 0 or np.any(np.abs(steps - step) > EVEN_STEP_TOLERANCE * step):
        return False
    return within_usual_cycle(frames, per_slice, expected)


def within_usual_cycle(frames: list[FrameInfo], per_slice: list[list[FrameInfo]], expected: int) -> bool:
    """True when the frames' TriggerTimes (0018,1060, any unit) reach no further than 1.25 x the median last
    TriggerTime of the slices holding `expected` phases: several passes over one cycle, not one longer cine. False
    without TriggerTime on every frame."""
    lasts = [max(f.trigger_time for f in s) for s in per_slice
             if len(s) == expected and all(f.trigger_time is not None for f in s)]
    if not lasts or any(f.trigger_time is None for f in frames):
        return False
    return max(f.trigger_time for f in frames) <= 1.25 * float(np.median(lasts))
