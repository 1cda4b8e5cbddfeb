"""Sequence and view recognition: rule recognizers behind a `Recognizer` protocol and registry (a learned model can join)."""
from __future__ import annotations

import logging
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from dicomnode.cmr.frames import (MAX_RR_IN_SECONDS, MIN_TRIGGER_IN_MICROSECONDS, NEAR_PARALLEL_DEG, NOT_PARALLEL,
                                  FrameInfo, header_value, images_per_slice, not_parallel_note, orientation_angle_deg,
                                  mean_orientation, parallel_stacks, plane_name, plane_spread_deg,
                                  slice_location_conflict, slice_groups, tilted_slice_text, timing_trigger_times,
                                  negative_trigger_note)
from dicomnode.cmr.types import Recognition
from dicomnode.uids import PARAMETRIC_MAP_STORAGE

log = logging.getLogger("dicomnode.cmr")

#: typical direction of the LV long axis (base -> apex) in patient LPS: to the left, anterior, inferior
CANONICAL_LONG_AXIS = np.array([0.61, -0.51, -0.61]) / np.linalg.norm([0.61, -0.51, -0.61])

SSFP_NAME_HINTS = ("tfi", "trufi", "fiesta", "b-tfe", "btfe", "bssfp", "ssfp", "balanced")
#: ImageType (0008,0008) values 3+ (vendor defined, PS3.3 C.7.6.1.1.2) and ComplexImageComponent (0008,9208, appended
#: by frames._image_type) that mark a phase-sensitive reconstruction: Siemens 'PSIR', Philips 'R' / 'R_IR' (real
#: part of an IR image), 'REAL' / 'PHASE' (ComplexImageComponent), 'P' (phase)
PSIR_TOKENS = {"PSIR", "PHASE SENSITIVE", "PHASE_SENSITIVE", "REAL", "R", "R_IR", "PHASE", "P"}
#: ... and a magnitude one: Siemens 'M', GE 'MAG' (value 4), 'MAGNITUDE' (ComplexImageComponent), Philips 'M_IR' /
#: 'M_FFE' / 'M_SE' (any 'M_' prefix: the magnitude of that acquisition type)
MAGNITUDE_TOKENS = {"M", "MAG", "MAGNITUDE"}
#: ImageType values saying the image is inversion-recovery prepared (Philips: 'M_IR' / 'R_IR' value 3, 'IR' value 5)
IR_IMAGE_TYPE_TOKENS = {"IR", "M_IR", "R_IR", "P_IR", "I_IR"}
#: an RR interval longer than this (30 beats/min) does not occur: TriggerTimes spanning more at one slice position
#: are not the phases of one heartbeat (MOLLI / Look-Locker source images are spread over several beats)
MAX_RR_MS = 2000.0

#: start / end of a word in a normalised description: only a letter continues a word, so underscores, hyphens,
#: digits, dots and spaces all separate ('LGE_SAX', 'sa_lge_psir', 'DE2', 'late-gd'); a regex \b would not
#: (the underscore is a word character)
W, E = r"(?<![a-z])", r"(?![a-z])"


#: Cyrillic (and Greek) letters drawn like Latin ones, as a Russian keyboard types 'Т1' for 'T1' (casefolded forms)
LATIN_LOOKALIKES = str.maketrans({"а": "a", "в": "b", "е": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p",
                                  "с": "c", "т": "t", "у": "y", "х": "x", "і": "i", "ј": "j", "ѕ": "s",
                                  "τ": "t", "ο": "o", "α": "a", "ε": "e", "κ": "k", "ρ": "p", "ν": "v"})
#: whole words spelt in look-alikes only that are read as the Latin word ('МАР' -> 'map'); Russian words made of
#: look-alike letters ('карта', 'тема') are left as they are
LOOKALIKE_WORDS = {"map", "maps", "moco", "ave", "ecv", "t1map", "t2map"}
_LOOKALIKE_RUN = re.compile(r"[авекмнорстухіјѕτοαεκρν]+")


def _latin_lookalikes(text: str) -> str:
    """Cyrillic / Greek look-alike letters written as Latin where they touch a Latin letter or a digit ('Т1' with a
    Cyrillic Т -> 't1', 'Tрufi' -> 'tpufi') or spell a LOOKALIKE_WORDS word alone ('МАР'); a Russian word
    ('карта') is left as it is."""
    def fold(match: re.Match) -> str:
        before = text[match.start() - 1] if match.start() else ""
        after = text[match.end()] if match.end() < len(text) else ""
        touches = any(c.isdigit() or ("a" <= c <= "z") for c in (before, after))
        latin = match.group(0).translate(LATIN_LOOKALIKES)
        word = not (before.isalpha() or after.isalpha()) and latin in LOOKALIKE_WORDS
        return latin if touches or word else match.group(0)
    return _LOOKALIKE_RUN.sub(fold, text)


def normalise_text(text: str) -> str:
    """Case-folded without accents ('Spätanreicherung' -> 'spatanreicherung', 'réhaussement' -> 'rehaussement',
    'tardío' -> 'tardio'; NFKD decomposition, which also folds full-width and other compatibility forms ('Ｔ１' ->
    't1'), combining marks dropped; 'ß' -> 'ss'), and Cyrillic / Greek look-alikes beside Latin letters or digits
    written as Latin ('Т1' typed on a Russian keyboard -> 't1'), for matching descriptions."""
    decomposed = unicodedata.normalize("NFKD", str(text).replace("ß", "ss").replace("ẞ", "ss"))
    folded = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return _latin_lookalikes(folded)


def _upper_tokens(value) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [part.strip().upper() for part in value.split("\\") if part.strip()]
    return [str(part).strip().upper() for part in value if str(part).strip()]


@dataclass
class SliceVariation:
    """How one attribute varies among the images of ONE slice position: the most varied position of the series.

    Cine phases and mapping source images differ WITHIN a slice position; a stack of one image per slice may differ
    between slices (each slice its own breath-hold: TriggerTime follows the heart rate, InversionTime is raised as
    gadolinium washes out), which says nothing about the sequence."""

    count: int = 0  # distinct values (within the tolerance) at that slice position
    low: float | None = None
    high: float | None = None

    @property
    def span(self) -> float:
        return (self.high - self.low) if self.low is not None and self.high is not None else 0.0


@dataclass
class SeriesEvidence:
    """What the recognizers may look at for one candidate series (headers only, no pixels)."""

    key: str
    frames: list[FrameInfo]
    description: str
    protocol: str
    scanning_sequence: list[str]
    sequence_variant: list[str]
    sequence_name: str
    image_type: list[str]
    echo_time: float | None
    inversion_times: list[float]
    cardiac_number_of_images: int | None
    orientations: list[np.ndarray]  # one per distinct plane orientation
    planes: list[str]
    slices: int
    phases: int  # frames per slice position (max)
    phase_counts: list[int]  # per slice
    trigger_times: list[float]  # distinct, sorted, ms; [] when absent or all equal (frames.timing_trigger_times)
    acquisition_span_s: float | None
    slice_acquisition_span_s: float | None = None  # the largest AcquisitionTime span at one slice position
    timing_notes: list[str] = field(default_factory=list)  # how TriggerTime was read, where it needed care
    scan_options: list[str] = field(default_factory=list)  # ScanOptions (0018,0022): GE 'IR_GEMS' = inversion recovery
    #: within one slice position: "inversion" InversionTime (0018,0082), "trigger" TriggerTime (0018,1060, ms),
    #: "echo" EchoTime (0018,0081), "comment_inversion" / "t2_prep" the TI / T2-preparation time a vendor writes
    #: only in ImageComments (0020,4000) (Siemens MOCO / T2-mapping source images: 'TI 100', 'T2 prep = 25 ms')
    within_slice: dict[str, SliceVariation] = field(default_factory=dict)
    #: the elements inversion_times were read from where InversionTime (0018,0082) is absent: InversionTimes
    #: (0018,9079) or a vendor's private element (frames.PRIVATE_INVERSION_TIME); [] when every TI is (0018,0082)'s
    inversion_sources: list[str] = field(default_factory=list)
    #: why the frames make no stack whatever their pixels (`frames.not_parallel_note`, `frames.slice_location_conflict`)
    geometry_notes: list[str] = field(default_factory=list)
    #: the slices tilted out of the stack's dominant plane, left out of its slice count and of the volume
    #: (`frames.tilted_slices`), one note each; no reason to decline
    tilted_notes: list[str] = field(default_factory=list)
    #: why the ProtocolName is the exam's rather than this series' (mark_exam_protocols: the same ProtocolName on
    #: another series of the study that is a cine or an LGE by its header or description); '' when not known so
    exam_protocol: str = ""

    @property
    def inversion_note(self) -> str:
        """What evidence naming an InversionTime adds when it was read from a private element: '' for (0018,0082)."""
        if not self.inversion_sources:
            return ""
        return (f"; read from {' and '.join(self.inversion_sources)}, InversionTime (0018,0082) being absent"
                + ("" if all(f.inversion_source for f in self.frames if f.inversion_time is not None)
                   else " on some images"))

    def varies(self, name: str) -> SliceVariation:
        return self.within_slice.get(name) or SliceVariation()

    @property
    def single_orientation(self) -> bool:
        return len(self.orientations) == 1

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.orientations[0][:3], self.orientations[0][3:])

    @property
    def centre(self) -> np.ndarray:
        """Patient-space centre of the imaged planes (mean of the frames' image centres)."""
        centres = []
        for frame in self.frames:
            row_dir, col_dir = frame.orientation[:3], frame.orientation[3:]
            centres.append(frame.position + row_dir * frame.pixel_spacing[1] * (frame.cols - 1) / 2
                           + col_dir * frame.pixel_spacing[0] * (frame.rows - 1) / 2)
        return np.mean(centres, axis=0)

    def text_hints(self) -> str:
        """SeriesDescription (0008,103E), ProtocolName (0018,1030) and SequenceName, lower case, accents removed."""
        return normalise_text(f"{self.description} | {self.protocol} | {self.sequence_name}")  # no hint spans two

    def series_hints(self) -> str:
        """SeriesDescription (0008,103E) and SequenceName only, normalised: what names THIS series. ProtocolName
        (0018,1030) is left out: GE and others write the exam protocol ('CARDIAC T1 MAPPING', 'CMR LGE + T1 map +
        ECV') into every series of the exam, so it is exam-level evidence (protocol_map_hint)."""
        return normalise_text(f"{self.description} | {self.sequence_name}")


def _dataset_text(ds, keyword: str) -> str:
    value = header_value(ds, keyword)
    return "" if value is None else str(value)


def _float_or_none(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _enhanced_pulse_sequence(ds) -> tuple[list[str], list[str]]:
    """ScanningSequence / SequenceVariant equivalents from Enhanced MR attributes (EchoPulseSequence etc.)."""
    scanning, variant = [], []
    echo = str(getattr(ds, "EchoPulseSequence", "") or "").upper()
    if echo in ("GRADIENT", "BOTH"):
        scanning.append("GR")
    if echo in ("SPIN", "BOTH"):
        scanning.append("SE")
    shared = getattr(ds, "SharedFunctionalGroupsSequence", None)
    modifier = None
    if shared and "MRModifierSequence" in shared[0] and shared[0].MRModifierSequence:
        modifier = shared[0].MRModifierSequence[0]
    if modifier is None and getattr(ds, "PerFrameFunctionalGroupsSequence", None):
        first = ds.PerFrameFunctionalGroupsSequence[0]
        if "MRModifierSequence" in first and first.MRModifierSequence:
            modifier = first.MRModifierSequence[0]
    if modifier is not None and str(getattr(modifier, "InversionRecovery", "")).upper() == "YES":
        scanning.append("IR")
    steady = str(getattr(ds, "SteadyStatePulseSequence", "") or "").upper()
    if steady and steady != "NONE":
        variant.append("SS")
    if str(getattr(ds, "SaturationRecovery", "") or "").upper() == "YES":
        variant.append("SP")
    return scanning, variant


#: ImageComments (0020,4000) forms of a mapping source image's inversion time (Siemens MOCO MOLLI: 'TI 100',
#: 'T1 MOLLI TI=100ms') and T2 preparation time (T2-prepared source images: 'T2 prep. duration = 25 ms', 'T2P = 55')
COMMENT_TI = re.compile(W + r"ti\s*[:=]?\s*(\d+(?:\.\d+)?)")
COMMENT_T2_PREP = re.compile(W + r"t2\s*[-_ .]*p(?:rep)?\.?(?:aration)?[^0-9]{0,20}?(\d+(?:\.\d+)?)")


def _comment_time(frame: FrameInfo, pattern: re.Pattern) -> float | None:
    """A time named in the frame's ImageComments (classic) or FrameComments (0020,9158, Enhanced MR Frame Content)."""
    ds = frame.header.dataset
    texts = [header_value(ds, "ImageComments", frame.frame_index)]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if frame.ref.frame_number is not None and frame.frame_index < len(per_frame):
        content = per_frame[frame.frame_index].get("FrameContentSequence")
        if content:
            texts.append(content[0].get("FrameComments"))
    for text in texts:
        if text:
            match = pattern.search(normalise_text(text))
            if match:
                return _float_or_none(match.group(1))
    return None


def _frame_echo_time(frame: FrameInfo) -> float | None:
    """EchoTime (0018,0081) of a classic image, or EffectiveEchoTime (0018,9082) of the frame's MR Echo item."""
    ds = frame.header.dataset
    if frame.ref.frame_number is not None:
        per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
        items = [per_frame[frame.frame_index]] if frame.frame_index < len(per_frame) else []
        items += list(ds.get("SharedFunctionalGroupsSequence") or [])[:1]
        for item in items:
            echo = item.get("MREchoSequence")
            if echo:
                value = _float_or_none(echo[0].get("EffectiveEchoTime"))
                if value is not None:
                    return value
    return _float_or_none(header_value(ds, "EchoTime", frame.frame_index))


def _variation(values: list[float | None], tolerance: float) -> SliceVariation:
    present = sorted(v for v in values if v is not None)
    if not present:
        return SliceVariation()
    count = 1 + sum(1 for a, b in zip(present, present[1:]) if b - a > tolerance)
    return SliceVariation(count, present[0], present[-1])


def _most_varied(per_slice: list[list[FrameInfo]], read, tolerance: float) -> SliceVariation:
    """The variation of `read(frame)` at the slice position where it varies most (most values, then widest span)."""
    variations = [_variation([read(f) for f in members], tolerance) for members in per_slice]
    return max(variations, key=lambda v: (v.count, v.span), default=SliceVariation())


#: one breath-hold: a cine slice's phases are acquired within it; perfusion dynamics of one slice span the first pass
BREATH_HOLD_S = 20.0


def build_evidence(key: str, frames: list[FrameInfo]) -> SeriesEvidence:
    """Collect the evidence of one candidate series; frames must all have geometry."""
    ds = frames[0].header.dataset
    # a few slices tilted out of a stack's dominant plane are left out of it (frames.tilted_slices): the stack is
    # recognised, counted and measured without them
    stacks = parallel_stacks(frames)
    groups = [kept for kept, _ in stacks]
    orientations = [group[0].orientation for group in groups]
    phase_counts: list[int] = []
    per_slice: list[list[FrameInfo]] = []
    for group in groups:
        members_by_slice = [members for _, members in slice_groups(group)]
        phase_counts += images_per_slice(members_by_slice)
        per_slice += members_by_slice
    trigger_times = timing_trigger_times(frames)
    timing_notes = [note for note in (negative_trigger_note(frames),) if note]
    trigger_scale = 1.0
    if not trigger_times and any(f.trigger_time is not None for f in frames):
        timing_notes.append(f"TriggerTime {frames[0].trigger_time:g} on every image carries no timing: taken as absent")
    elif len(trigger_times) >= 2 and max(trigger_times) < MAX_RR_IN_SECONDS:
        timing_notes.append(f"TriggerTime spans {min(trigger_times):g}-{max(trigger_times):g}: read as seconds")
        trigger_times = [t * 1000.0 for t in trigger_times]
        trigger_scale = 1000.0
    elif len(trigger_times) >= 2 and max(trigger_times) >= MIN_TRIGGER_IN_MICROSECONDS:
        timing_notes.append(f"TriggerTime spans {min(trigger_times):g}-{max(trigger_times):g}: read as microseconds "
                            "(DICOM gives TriggerTime (0018,1060) in ms)")
        trigger_times = [t / 1000.0 for t in trigger_times]
        trigger_scale = 0.001
    within_slice = {
        "inversion": _most_varied(per_slice, lambda f: f.inversion_time, 5.0),
        "trigger": _most_varied(per_slice, lambda f: None if f.trigger_time is None or not trigger_times
                                else f.trigger_time * trigger_scale, 1.0),
        "echo": _most_varied(per_slice, _frame_echo_time, 0.1),
        "comment_inversion": _most_varied(per_slice, lambda f: _comment_time(f, COMMENT_TI), 1.0),
        "t2_prep": _most_varied(per_slice, lambda f: _comment_time(f, COMMENT_T2_PREP), 1.0),
    }
    acquisition = [f.acquisition_time for f in frames if f.acquisition_time is not None]
    slice_spans = [max(t) - min(t) for group in groups for _, members in slice_groups(group)
                   for t in [[f.acquisition_time for f in members if f.acquisition_time is not None]] if t]
    inversions = sorted({round(f.inversion_time, 1) for f in frames if f.inversion_time is not None})
    image_types: list[str] = []
    for frame in frames:
        for token in frame.image_type:
            if token and token not in image_types:
                image_types.append(token)
    cardiac_images = header_value(ds, "CardiacNumberOfImages")
    try:
        cardiac_images = int(cardiac_images) if cardiac_images not in (None, "") else None
    except (TypeError, ValueError):
        cardiac_images = None
    echo = _float_or_none(header_value(ds, "EchoTime"))
    shared = getattr(ds, "SharedFunctionalGroupsSequence", None)
    if echo is None and shared and "MREchoSequence" in shared[0] and shared[0].MREchoSequence:
        echo = _float_or_none(getattr(shared[0].MREchoSequence[0], "EffectiveEchoTime", None))
    scanning = _upper_tokens(header_value(ds, "ScanningSequence"))
    variant = _upper_tokens(header_value(ds, "SequenceVariant"))
    if not scanning:
        scanning, enhanced_variant = _enhanced_pulse_sequence(ds)
        variant = variant or enhanced_variant
    return SeriesEvidence(
        key=key,
        frames=frames,
        description=_dataset_text(ds, "SeriesDescription"),
        protocol=_dataset_text(ds, "ProtocolName"),
        scanning_sequence=scanning,
        sequence_variant=variant,
        sequence_name=_dataset_text(ds, "SequenceName") or _dataset_text(ds, "PulseSequenceName"),
        image_type=image_types,
        echo_time=echo,
        inversion_times=inversions,
        cardiac_number_of_images=cardiac_images,
        orientations=orientations,
        planes=[plane_name(o) for o in orientations],
        slices=len(phase_counts),
        phases=max(phase_counts) if phase_counts else 0,
        phase_counts=phase_counts,
        trigger_times=trigger_times,
        acquisition_span_s=(max(acquisition) - min(acquisition)) if acquisition else None,
        slice_acquisition_span_s=max(slice_spans) if len(acquisition) == len(frames) and slice_spans else None,
        timing_notes=timing_notes,
        scan_options=_upper_tokens(header_value(ds, "ScanOptions")),
        within_slice=within_slice,
        inversion_sources=sorted({f.inversion_source for f in frames if f.inversion_source}),
        geometry_notes=_geometry_notes([f for group in groups for f in group], groups, per_slice),
        tilted_notes=_tilted_notes(stacks),
    )


def _tilted_notes(stacks: list[tuple[list[FrameInfo], list[FrameInfo]]]) -> list[str]:
    """One note per slice position tilted out of its stack (`frames.parallel_stacks`): which images, where, and how
    far (degrees) its plane lies from the stack's mean plane; [] when nothing is tilted."""
    notes = []
    for kept, tilted in stacks:
        if not tilted:
            continue
        mean = mean_orientation([f.orientation for f in kept])
        positions: dict[tuple, list[FrameInfo]] = {}
        for frame in tilted:
            positions.setdefault((tuple(np.round(frame.orientation, 4)), tuple(np.round(frame.position, 1))),
                                 []).append(frame)
        for members in positions.values():
            notes.append(f"tilted slice: {tilted_slice_text(members[0])}"
                         + (f" ({len(members)} images)" if len(members) > 1 else "")
                         + f" tilted {orientation_angle_deg(mean, members[0].orientation):.1f} deg out of the plane "
                         "of the other slices: left out, the stack measured without it")
    return notes


def _geometry_notes(frames: list[FrameInfo], groups: list[list[FrameInfo]], per_slice: list[list[FrameInfo]]
                    ) -> list[str]:
    """Broken geometry of a series: near-parallel planes the orientation grouping still splits (the largest angle
    apart under NEAR_PARALLEL_DEG: meant as one stack) and slice positions shared by distinct slices."""
    notes = []
    if len(groups) > 1:
        distinct = list({tuple(f.orientation): np.asarray(f.orientation, float) for f in frames}.values())
        if plane_spread_deg(distinct) < NEAR_PARALLEL_DEG:
            notes.append(not_parallel_note(distinct))
    notes += [note for members in per_slice for note in [slice_location_conflict(members)] if note][:1]
    return notes


@dataclass
class StudyContext:
    """Every candidate series of the study, so that a recognizer can relate one series to the others."""

    series: list[SeriesEvidence] = field(default_factory=list)
    sequences: dict[str, Recognition] = field(default_factory=dict)  # key -> sequence answer (views run after)

    def sax_stacks(self) -> list[SeriesEvidence]:
        return [s for s in self.series if s.single_orientation and s.slices >= 3 and _oblique_degrees(s.normal) >= 15
                and _long_axis_angle(s.normal) <= 45]


class Recognizer(Protocol):
    """One source of answers for one aspect ("sequence" or "view"); None when it has nothing to say."""

    name: str
    aspect: Literal["sequence", "view"]

    def recognize(self, evidence: SeriesEvidence, context: StudyContext) -> Recognition | None: ...


#: confidences closer than this are equal (float sums are not exact: 0.35 + 0.05 < 0.4)
CONFIDENCE_TOLERANCE = 0.005


def at_least(confidence: float, threshold: float) -> bool:
    """confidence >= threshold, within CONFIDENCE_TOLERANCE."""
    return confidence > threshold - CONFIDENCE_TOLERANCE


class RecognizerRegistry:
    """Recognizers per aspect; the answer with the highest confidence wins. Two different answers equally confident
    (within CONFIDENCE_TOLERANCE) are a tie that the registration order must not settle: the series is 'other',
    the evidence naming both, so that nothing is analysed on a coin flip."""

    def __init__(self) -> None:
        self._recognizers: list[Recognizer] = []

    def register(self, recognizer: Recognizer) -> None:
        if recognizer.aspect not in ("sequence", "view"):
            raise ValueError(f"recognizer {recognizer.name!r} has aspect {recognizer.aspect!r}; expected sequence or view")
        self._recognizers.append(recognizer)

    def recognizers(self, aspect: str) -> list[Recognizer]:
        return [r for r in self._recognizers if r.aspect == aspect]

    def recognize(self, aspect: str, evidence: SeriesEvidence, context: StudyContext) -> Recognition:
        answers: list[tuple[str, Recognition]] = []
        for recognizer in self.recognizers(aspect):
            answer = recognizer.recognize(evidence, context)
            if answer is None:
                continue
            answer.evidence = [f"[{recognizer.name}] {e}" for e in answer.evidence]
            answers.append((recognizer.name, answer))
        if not answers:
            best = Recognition("other", 0.0, [f"no {aspect} rule matched ({_describe(evidence)})"])
        else:
            top = max(answer.confidence for _, answer in answers)
            leading = [(name, answer) for name, answer in answers if at_least(answer.confidence, top)]
            best = max((answer for _, answer in leading), key=lambda a: a.confidence)
            rivals = [(name, answer) for name, answer in leading if answer.value != best.value]
            if rivals and best.value != "other":
                said = "; ".join(f"{answer.value} by {name} at {answer.confidence:.2f} ({answer.evidence[0]})"
                                 for name, answer in leading)
                best = Recognition("other", 0.0, [f"ambiguous {aspect}: {said}; the evidence decides neither, so "
                                                  "none is taken"] + [e for _, a in leading for e in a.evidence[1:]])
        log.info("recognised %s of series %s as %s (confidence %.2f): %s", aspect, evidence.key, best.value,
                 best.confidence, "; ".join(best.evidence))
        return best


def _describe(evidence: SeriesEvidence) -> str:
    return (f"ScanningSequence={'/'.join(evidence.scanning_sequence) or '-'}, "
            f"SequenceVariant={'/'.join(evidence.sequence_variant) or '-'}, ImageType={'/'.join(evidence.image_type) or '-'}, "
            f"{evidence.slices} slices x {evidence.phases} phases, {len(evidence.orientations)} orientation(s)")


def _oblique_degrees(normal: np.ndarray) -> float:
    """Angle between the plane normal and the nearest body axis."""
    normal = normal / np.linalg.norm(normal)
    return float(np.degrees(np.arccos(np.clip(np.max(np.abs(normal)), -1, 1))))


def _long_axis_angle(normal: np.ndarray) -> float:
    """Angle (0..90) between the plane normal and the typical LV long axis."""
    normal = normal / np.linalg.norm(normal)
    return float(np.degrees(np.arccos(np.clip(abs(np.dot(normal, CANONICAL_LONG_AXIS)), 0, 1))))


# ---------------------------------------------------------------- sequence rules
def _literal(*words: str) -> str:
    """A pattern for words as normalise_text leaves them (Hangul syllables decompose into jamo under NFKD), with
    an optional space, '_' or '-' between them ('지연 조영' and '지연조영')."""
    return r"[ _-]?".join(re.escape(normalise_text(word)) for word in words)


#: word edges for Cyrillic text (W / E know only Latin letters)
W_CYR, E_CYR = r"(?<![а-яё])", r"(?![а-яё])"

#: SeriesDescription / ProtocolName forms of LGE (normalised: lower case, no accents; W/E = word edges where '_',
#: '-', digits and spaces separate): English 'LGE', 'DE' / 'MDE' (GE: myocardial delayed enhancement), 'PSIR',
#: 'delayed enhancement', 'late Gd', 'viability', 'hyperenhancement'; German 'Spätanreicherung' / 'LE' (late
#: enhancement); French '(ré)haussement tardif' / 'retardé'; Spanish 'realce tardío'; Italian 'enhancement tardivo';
#: Dutch 'late aankleuring'; Japanese 遅延造影 / 遅延増強 / 遅延相 (delayed contrast / enhancement / phase); Chinese
#: 延迟强化 / 延迟增强 / 钆延迟 (simplified) and 延遲強化 / 延遲增強 (traditional); Korean 지연 조영 / 지연 강화 /
#: 지연 증강; Russian 'отсроченное контрастирование', 'позднее усиление / контрастирование / накопление', 'ЛГЭ'
LGE_HINTS = (W + "lge", W + "mde" + E, W + "de" + E, r"psir", r"viab", W + "hyper",
             W + "le" + E, r"sp(?:a|ae)t[ _-]?(?:anreicherung|enh|aufnahme|kontrast)", W + r"sp(?:a|ae)t" + E,
             r"(?<!fruh)(?<!frueh)anreicherung", r"rehauss", W + "retard", W + r"tardi(?:f|ve|o|a|vo|va)" + E,
             r"aankleuring",
             _literal("遅延", "造影"), _literal("遅延", "増強"), _literal("遅延", "強調"), _literal("延迟", "强化"),
             _literal("延迟", "增强"), _literal("延遲", "強化"), _literal("延遲", "增強"), _literal("钆", "延迟"),
             _literal("釓", "延遲"), _literal("지연", "조영"), _literal("지연", "강화"), _literal("지연", "증강"),
             r"отсроченн\w*[ _-]+(?:контраст|усилен|накоплен|гадолин)",
             r"поздн\w*[ _-]+(?:контраст|усилен|накоплен|гадолин)", W_CYR + "лгэ" + E_CYR)
#: words that only say 'late' / 'delayed' (English, Japanese 遅延 / 遅延相, Chinese 延迟 / 延遲, Korean 지연,
#: Russian 'отсроченн…'): LGE where nothing says the series belongs to another examination
GENERIC_LGE_HINTS = (W + "delay", W + r"late(?!ral)", _literal("遅延"), _literal("延迟"), _literal("延遲"),
                     _literal("지연"), W_CYR + r"отсроченн")
#: ... which it does in angiography ('DELAYED_TOF', time of flight) and in the late / delayed phases of liver,
#: kidney, abdominal and brain contrast studies ('late arterial', 'delayed portal venous'), in English, Japanese /
#: Chinese (肝 liver, 動脈 / 动脉 artery, 門脈 / 门脉 portal, 静脈 / 静脉 vein), Korean (동맥 artery) and Russian
NOT_LGE_CONTEXT = (W + "tof" + E, r"angio", W + "mra" + E, W + "cta" + E, r"arteri", W + "art" + E, r"portal",
                   r"venous", r"hepat", r"liver", r"abdom", r"pancrea", W + "renal", r"kidney", r"urogra",
                   r"nephro", W + "mrcp" + E, r"equilibrium", r"brain", _literal("肝"), _literal("動脈"),
                   _literal("动脉"), _literal("門脈"), _literal("门脉"), _literal("静脈"), _literal("静脉"),
                   _literal("동맥"), r"печен", r"артери", r"портал", r"венозн", r"брюшн")

#: the map word in other languages (normalised): German 'Karte' / 'Kartierung' ('T1-Karte'), French 'carte' /
#: 'cartographie', Dutch 'kaart'; Spanish / Portuguese / Italian 'mapa' / 'mapeo' / 'mappa' are read by 'map';
#: Japanese マップ / マッピング, Korean 맵 / 매핑, Chinese 映射 and, beside T1 / T2 ('T1图'), 图 / 圖 / 定量 (a word
#: too general alone); Russian 'карта' / 'карты' / 'картирование' (a Cyrillic 'Т1' reads as 't1': normalise_text)
FOREIGN_MAP_WORDS = (W + r"karte" + E, W + r"kartierung", W + r"carte" + E, W + r"cartograph", W + r"kaart" + E,
                     _literal("マップ"), _literal("マッピング"), _literal("맵"), _literal("매핑"), _literal("映射"),
                     r"t[12][ _-]?(?:" + "|".join(_literal(w) for w in ("图", "圖", "定量")) + ")",
                     "(?:" + "|".join(_literal(w) for w in ("图", "圖")) + r")[ _-]?t[12]" + E,
                     W_CYR + r"карт(?:а|ы|у|ой|ирован\w*)" + E_CYR)
#: a native (pre-contrast) phase, in the languages of the LGE names: with 'T1' in an inversion-prepared series it
#: names a native T1 map (LGE is post-contrast by definition: no native LGE exists). English 'pre' / 'native' /
#: 'precontrast' / 'non-contrast'; German 'nativ' / 'vor KM'; French 'natif' / 'sans contraste'; Spanish / Italian
#: 'nativo' / 'sin contraste' / 'senza'; Japanese 造影前 / 単純; Chinese 平扫 / 平掃 / 增强前 / 造影前; Korean 조영 전;
#: Russian 'нативн…' / 'без контраст…' / 'до контраст…'
NATIVE_PHASE_WORDS = (W + "pre" + E, r"pre[ _-]?(?:contrast|gd|kontrast|km|gado)", W + r"nati(?:ve|v|f|vo|va)" + E,
                      W + "nat" + E, r"non[ _-]?contrast",
                      r"(?:without|no|sans|sin|senza|ohne)[ _-]?(?:contrast|kontrast|km|gd)",
                      W + r"vor[ _-]?(?:km|kontrast)", _literal("造影", "前"), _literal("単純"), _literal("平扫"),
                      _literal("平掃"), _literal("增强", "前"), _literal("조영", "전"), W_CYR + r"нативн",
                      r"(?:без|до)[ _-]+контраст")
#: a motion-corrected ('MOCO') series named T1 / T2 (Siemens MyoMaps 'SAX T1 MOCO' maps and their source series)
MOCO_WORD = W + r"moco" + E


#: parametric maps by what they map, in the order a series is checked (ECV before T1: Siemens names the ECV map
#: 'MOLLI_..._ECV'; T2* before T2): sequence value reported (summary.json's list has t1map / t2map only), name
MAP_KINDS = {"ecv": ("t1map", "ECV map (from native and post-contrast T1)"), "t2star": ("t2map", "T2* map"),
             "t2": ("t2map", "T2 map"), "t1": ("t1map", "T1 map"), "map": (None, "parametric map")}
#: description forms of each kind: vendor protocol names (Siemens MyoMaps 'MOLLI_5(3)3_SAX_T1', 'SASHA', 'T2_map',
#: 'MOLLI_..._ECV'; Philips 'T1map', 'MOLLI'; GE 'T1 Map Post', 'SMART1Map'; Canon 'MAPIT', 'T1 mapping',
#: 'T1 relaxation'). The map word may be part of a compound ('myomaps', 'T1maps', 'mapT1'): 'maps?' at the end
#: of a word, 'map' at the start of one
MAP_DESCRIPTION_HINTS = (
    ("ecv", (W + "ecv" + E, r"extra[ _-]?[cz]ellul")),
    ("t2star", (r"t2[ _-]?\*", r"t2[ _-]?star", r"r2[ _-]?\*", r"r2[ _-]?star")),
    ("t2", (r"t2[ _-]?maps?", r"t2[ _-]?relax")),
    ("t1", (r"t1[ _-]?maps?", W + "molli", r"shmolli", r"sasha", r"mapit", r"smart1", r"t1[ _-]?relax")),
    ("map", (r"maps?" + E, W + r"map", W + "relax") + FOREIGN_MAP_WORDS),
)
#: what a map word leaves unnamed, named elsewhere in the description ('T2_TRUFI_MAP', 'MyoMaps_T1_post')
MAP_PARAMETERS = (("t2star", (r"t2[ _-]?\*", r"t2[ _-]?star")), ("t2", (W + "t2" + E,)), ("t1", (W + "t1" + E,)))
#: maps that are no tissue parameter (B0 / B1 / field / phase / flow maps, an angiographic road map, a bitmap):
#: not mapping in the sense here
NOT_TISSUE_MAPS = re.compile(r"(?:b0|b1|field|shim|phase|flow|velocity|venc|road|bit|heat)[ _-]?maps?")
#: names only source images carry (a T2-prepared series of several images per slice: T2-mapping source images)
SOURCE_HINTS = (("t2", (r"t2[ _-]?prep",)),)


def _has_hint(text: str, patterns: tuple[str, ...]) -> str | None:
    """The text the first matching pattern found (what the evidence quotes), or None."""
    for pattern in patterns:
        match = re.search(pattern, text)
        if match:
            return match.group(0)
    return None


def _map_token_kind(token: str, image_type: tuple[str, ...]) -> str | None:
    """The parametric-map kind an ImageType value 3+ names (PS3.3 C.7.6.1.1.2 leaves them to the vendor): Siemens
    'T1 MAP' / 'T2 MAP' / 'ECV' / 'T2* MAP' (MyoMaps: DERIVED\\PRIMARY\\T1 MAP\\MOCO\\T1\\DIS2D), Philips
    'T1 MAP' (ORIGINAL\\PRIMARY\\T1 MAP\\T1\\UNSPECIFIED) or 'T1' written twice, GE / Canon 'T1MAP' / 'MAP'.
    A bare 'T1' / 'T2' written once declares nothing: it may name a calculated image or only the weighting of an
    acquired one, and neither 'DERIVED' (Siemens writes it on LGE magnitude and PSIR images) nor 'MOCO' (cines and
    LGE are motion-corrected too) makes it a map (bare_parameter_token; calculated_map weighs it)."""
    squeezed = re.sub(r"[ _\-]", "", token.upper())
    if squeezed.startswith("ECV"):
        return "ecv"
    if squeezed.startswith(("T2*", "T2STAR", "R2*", "R2STAR")):
        return "t2star"
    calculated = image_type.count(token) >= 2
    if squeezed.startswith("T2MAP") or (squeezed == "T2" and calculated):
        return "t2"
    if squeezed.startswith("T1MAP") or (squeezed == "T1" and calculated) or any(
            name in squeezed for name in ("MOLLI", "SASHA", "MAPIT")):
        return "t1"
    if squeezed in ("MAP", "MAPS", "PARAMETRICMAP", "QMAP") or (
            squeezed.endswith("MAP") and len(squeezed) <= 8 and not NOT_TISSUE_MAPS.match(token.lower())):
        return "map"
    return None


def _image_type_map(e: SeriesEvidence) -> tuple[str, str] | None:
    """(kind, ImageType value) of the most specific map marker in the series' ImageType values 3+."""
    found: dict[str, str] = {}
    for image_type in dict.fromkeys(f.image_type for f in e.frames):
        for token in image_type[2:]:
            kind = _map_token_kind(token, image_type) if token else None
            if kind:
                found.setdefault(kind, token)
    kind = next((k for k in MAP_KINDS if k in found), None)
    return (kind, found[kind]) if kind else None


def _named_t1_map(e: SeriesEvidence, text: str) -> tuple[str, str] | None:
    """('t1', why) for a one-image-per-slice series named 'T1' beside a native-phase word ('SAX_T1_native', 'T1
    pre', 'T1マップ 造影前', 'T1 нативная') or beside 'MOCO' ('SAX T1 MOCO'), with no LGE / PSIR name and no PSIR
    reconstruction, where the series is inversion-prepared or derived or in ms: a native T1 map (there is no native
    LGE) or a MyoMaps motion-corrected map; None otherwise."""
    t1 = _has_hint(text, (W + "t1" + E,))
    if not t1 or e.phases > 1 or _has_hint(text, LGE_HINTS) or _reconstruction_markers(e)[0]:
        return None
    if not (_inversion_prepared(e) or any(t > 0 for t in e.inversion_times) or "DERIVED" in e.image_type
            or value_units_ms(e)):
        return None
    native = _has_hint(text, NATIVE_PHASE_WORDS)
    if native:
        return "t1", f"{t1} ... {native} (a native T1: LGE is post-contrast by definition)"
    moco = _has_hint(text, (MOCO_WORD,))
    if moco and "AVE" not in e.image_type:  # Siemens names its free-breathing MOCO-averaged LGE so too
        return "t1", f"{t1} ... {moco} (a motion-corrected T1 series: MyoMaps)"
    return None


def _map_description_hint(e: SeriesEvidence) -> tuple[str, str] | None:
    """(kind, the words) where the SeriesDescription / SequenceName name a map (or map source images); else where
    only the ProtocolName does and nothing outvotes it (protocol_map_hint); None otherwise."""
    return _map_hint_in(e, NOT_TISSUE_MAPS.sub(" ", e.series_hints())) or protocol_map_hint(e)


def _map_hint_in(e: SeriesEvidence, text: str) -> tuple[str, str] | None:
    for kind, patterns in MAP_DESCRIPTION_HINTS + (SOURCE_HINTS if e.phases >= 2 else ()):
        hint = _has_hint(text, patterns)
        if hint and kind == "map":  # the parameter may be named apart from the map word: 'T2_TRUFI_MAP'
            named = {parameter: found for parameter, forms in MAP_PARAMETERS
                     for found in [_has_hint(text, forms)] if found}
            if "t2star" in named:
                named.pop("t2", None)  # 'T2*' also reads as 'T2'
            if len(named) == 1:  # one parameter named; 'T1_T2_maps' names none in particular
                ((parameter, found),) = named.items()
                return parameter, f"{found} ... {hint}"
        if hint:
            return kind, hint
    return _named_t1_map(e, text)


#: names of other techniques (LGE, cine, perfusion) that make a ProtocolName naming a map as well an exam protocol
#: ('CMR LGE + T1 map + ECV'), or a SeriesDescription that names its series' technique outvote a map in the protocol
CINE_NAME_HINTS = (r"cine", r"ssfp", r"fiesta", r"trufi")
EXAM_TECHNIQUE_HINTS = LGE_HINTS + CINE_NAME_HINTS + (r"perf", r"first[ _-]?pass")


def acquisition_kind(e: SeriesEvidence) -> tuple[str, str] | None:
    """('cine' | 'lge', why) where the acquisition header alone reads as one: a cine, 5 or more images per slice
    position whose TriggerTimes spread 150 ms or more over ONE cardiac cycle with no InversionTime, EchoTime or
    preparation time varying at a position (no mapping source images); an LGE, inversion-recovery prepared with one
    InversionTime in the myocardial nulling range and one image per slice position (_lge_contrast). What a name
    (the protocol, free-text comments) only mentions never outvotes this; None where the header says neither."""
    spread = (max(e.trigger_times) - min(e.trigger_times)) if e.trigger_times else 0.0
    if (e.phases >= 5 and len(e.trigger_times) >= 5 and spread >= 150 and e.varies("trigger").span <= MAX_RR_MS
            and _source_images(e) is None and e.varies("inversion").count <= 1):
        return "cine", (f"{e.phases} images per slice position with TriggerTime spread over {spread:.0f} ms of one "
                        "cardiac cycle")
    contrast = _lge_contrast(e)
    if contrast and e.phases == 1:
        return "lge", f"{contrast}, one image per slice position"
    return None


def protocol_not_taken(e: SeriesEvidence) -> str | None:
    """Why a map named only in the ProtocolName (0018,1030) is not this series' kind, or None. The ProtocolName is
    weak, exam-level evidence: GE (and others) write the exam protocol into every series ('CARDIAC T1 MAPPING' on
    the cine and the LGE of the exam), so it never outvotes the series' own SeriesDescription nor its acquisition
    header, and it does not count where the study shows it is the exam's (mark_exam_protocols) or where it names
    several techniques."""
    protocol = normalise_text(e.protocol)
    if e.exam_protocol:
        return e.exam_protocol
    technique = _has_hint(protocol, EXAM_TECHNIQUE_HINTS)
    if technique:
        return f"the ProtocolName also names {technique!r}: an exam protocol naming several techniques"
    named = _has_hint(e.series_hints(), EXAM_TECHNIQUE_HINTS)
    if named:
        return f"the SeriesDescription names {named!r}"
    kind = acquisition_kind(e)
    if kind:
        return f"the acquisition header reads as {'a cine' if kind[0] == 'cine' else 'an LGE'} ({kind[1]})"
    return None


def protocol_map_hint(e: SeriesEvidence) -> tuple[str, str] | None:
    """(kind, why) where only the ProtocolName names a map and nothing outvotes it (protocol_not_taken): weak
    evidence, taken for a series that says nothing else (an unnamed derived series, an unnamed series without an
    LGE's or a cine's header); None otherwise."""
    if not e.protocol:
        return None
    found = _map_hint_in(e, NOT_TISSUE_MAPS.sub(" ", normalise_text(e.protocol)))
    if found is None or protocol_not_taken(e):
        return None
    return found[0], f"{found[1]} (ProtocolName only: exam-level, weak)"


def set_aside_map_names(e: SeriesEvidence) -> list[str]:
    """The evidence lines for map names the series carries that did not decide it: a map in the ProtocolName set
    aside (protocol_not_taken), ImageComments naming a map set aside (comment_not_taken)."""
    comment = comment_not_taken(e)
    return [note for note in (protocol_map_note(e), f"not a map: {comment}" if comment else None) if note]


def protocol_map_note(e: SeriesEvidence) -> str | None:
    """The evidence line for a map named in the ProtocolName that protocol_not_taken set aside, or None."""
    if not e.protocol or _map_hint_in(e, NOT_TISSUE_MAPS.sub(" ", e.series_hints())):
        return None
    found = _map_hint_in(e, NOT_TISSUE_MAPS.sub(" ", normalise_text(e.protocol)))
    why = protocol_not_taken(e) if found else None
    if not why:
        return None
    return f"ProtocolName {e.protocol.strip()!r} names a map ({found[1]!r}), not taken: {why}"


def mark_exam_protocols(series: list[SeriesEvidence]) -> None:
    """Set `exam_protocol` on every series whose ProtocolName another series of the study shares where that other
    series is a cine or an LGE by its acquisition header (acquisition_kind) or by its SeriesDescription: the same
    protocol on series of different kinds is the exam's, not a series' name (GE writes the exam protocol into every
    series). A MOLLI source series and its map sharing 'MOLLI_5(3)3_SAX' are neither, so theirs stays theirs."""
    by_protocol: dict[str, list[SeriesEvidence]] = {}
    for e in series:
        protocol = normalise_text(e.protocol).strip()
        if protocol:
            by_protocol.setdefault(protocol, []).append(e)
    for members in by_protocol.values():
        if len(members) < 2:
            continue
        kinds = {}
        for e in members:
            kind = acquisition_kind(e)
            named = _has_hint(e.series_hints(), EXAM_TECHNIQUE_HINTS)
            if kind:
                kinds[e.key] = f"{'a cine' if kind[0] == 'cine' else 'an LGE'} by its header"
            elif named:
                kinds[e.key] = f"named {named!r}"
        for e in members:
            other = next(((o, kinds[o.key]) for o in members if o is not e and o.key in kinds), None)
            if other:
                e.exam_protocol = (f"series {other[0].key} ({other[1]}) has the same ProtocolName: the exam's "
                                   "protocol, not this series' name")


#: ScanOptions (0018,0022) / SequenceVariant (0018,0021) values of an inversion-recovery preparation (GE writes
#: 'IR_GEMS' in ScanOptions and ScanningSequence GR only; 'IRP' / 'IRP_GEMS': IR-prepared)
IR_OPTION_TOKENS = {"IR", "IRP", "IR_GEMS", "IRP_GEMS"}


def _inversion_prepared(e: SeriesEvidence) -> str | None:
    r"""Why the images are inversion-recovery prepared: ScanningSequence (0018,0020) IR, an ImageType value saying
    so (Philips 'M_IR' / 'R_IR' / 'IR', where ScanningSequence is only GR), ScanOptions / SequenceVariant 'IR_GEMS' /
    'IRP' (GE), or SequenceVariant MP (magnetization prepared) with an InversionTime written (Philips TFE: GR \ MP
    and the TI: a preparation that has an inversion time is an inversion); None when nothing says so."""
    if "IR" in e.scanning_sequence:
        return "ScanningSequence contains IR"
    token = next((t for t in e.image_type if t in IR_IMAGE_TYPE_TOKENS), None)
    if token:
        return f"ImageType contains {token!r} (inversion recovery)"
    option = next((t for t in e.scan_options + e.sequence_variant if t in IR_OPTION_TOKENS), None)
    if option:
        where = "ScanOptions" if option in e.scan_options else "SequenceVariant"
        return f"{where} contains {option!r} (inversion recovery)"
    inversion = [t for t in e.inversion_times if t > 0]
    if "MP" in e.sequence_variant and inversion:
        return (f"SequenceVariant MP (magnetization prepared) with InversionTime {np.median(inversion):.0f} ms: an "
                "inversion preparation" + e.inversion_note)
    return None


def _source_images(e: SeriesEvidence) -> tuple[str, str] | None:
    """(kind, why) when the images of ONE slice position differ in what a mapping sequence varies: InversionTime
    (MOLLI / ShMOLLI / Look-Locker T1 source images), the TI or T2-preparation time named in ImageComments (Siemens
    MOCO / T2-prepared source images), EchoTime (multi-echo T2* / T2 source images), or a TriggerTime span no
    single heartbeat has beside an inversion (inversion-recovery images spread over several beats), unless every
    image carries one and the same InversionTime (one_inversion_time: repetitions, not a T1 fit)."""
    inversion = e.varies("inversion")
    if inversion.count >= 3:
        return "t1", (f"{inversion.count} InversionTimes ({inversion.low:g}-{inversion.high:g} ms) at one slice "
                      "position: T1-mapping source images (MOLLI / ShMOLLI / Look-Locker)" + e.inversion_note)
    comment = e.varies("comment_inversion")
    if comment.count >= 3:
        return "t1", (f"ImageComments name {comment.count} inversion times ({comment.low:g}-{comment.high:g} ms) at "
                      "one slice position: T1-mapping source images")
    prep = e.varies("t2_prep")
    if prep.count >= 3:
        return "t2", (f"ImageComments name {prep.count} T2-preparation times ({prep.low:g}-{prep.high:g} ms) at one "
                      "slice position: T2-mapping source images")
    echo = e.varies("echo")
    if echo.count >= 3:
        star = "SE" not in e.scanning_sequence and (echo.high or 0) <= 40
        return ("t2star" if star else "t2"), (
            f"{echo.count} EchoTimes ({echo.low:g}-{echo.high:g} ms) at one slice position: multi-echo "
            f"{'T2*' if star else 'T2'}-mapping source images")
    trigger = e.varies("trigger")
    prepared = _inversion_prepared(e) or any(t > 0 for t in e.inversion_times) or "MP" in e.sequence_variant
    if trigger.span > MAX_RR_MS and prepared and not one_inversion_time(e):
        return "t1", (f"magnetization-prepared images whose TriggerTime spans {trigger.span:.0f} ms at one slice "
                      f"position, longer than any RR interval ({MAX_RR_MS:.0f} ms): several heartbeats, "
                      "T1-mapping timing")
    return None


def one_inversion_time(e: SeriesEvidence) -> bool:
    """True where every image carries an InversionTime (0018,0082) above 0 and each slice position one value of
    it: images repeated at one TI over several heartbeats (the single-shot LGE repetitions a Siemens MOCO average
    is made of) fit no T1; several inversion times are what makes T1-mapping source images."""
    return (e.varies("inversion").count == 1
            and all(f.inversion_time is not None and f.inversion_time > 0 for f in e.frames))


def ti_rises_with_trigger(e: SeriesEvidence) -> bool:
    """True where the images at each slice position are read after ONE inversion at increasing delays, as a TI
    scout's are: one_inversion, three or more TriggerTimes (0018,1060) at one slice position, every image with an
    InversionTime and a TriggerTime, and the InversionTime never falling as the TriggerTime rises. MOLLI / ShMOLLI
    source images (TI beyond one RR interval, one TriggerTime) never are."""
    if not one_inversion(e) or e.varies("trigger").count < 3 or e.varies("inversion").count < 3:
        return False
    by_position: dict[tuple, list[FrameInfo]] = defaultdict(list)
    for frame in e.frames:
        if frame.inversion_time is None or frame.trigger_time is None:
            return False
        by_position[tuple(np.round(frame.position, 1))].append(frame)
    for frames in by_position.values():
        times = [f.inversion_time for f in sorted(frames, key=lambda f: f.trigger_time)]
        if any(later < earlier for earlier, later in zip(times, times[1:])):
            return False
    return True


def _image_type_values(e: SeriesEvidence, index: int) -> set[str]:
    return {f.image_type[index] for f in e.frames if len(f.image_type) > index and f.image_type[index]}


#: points a series needs, and needs over what speaks for an acquisition, to be a calculated map (calculated_map)
CALCULATED_MAP_POINTS = 30
#: InversionTimes an LGE is read at (1.5 T: 250-350 ms, 3 T: 300-450 ms, early after the contrast 200-250 ms);
#: the rest of the nulling range (120-600 ms) is less typical and so says less
TYPICAL_LGE_TI = (200.0, 450.0)
#: the myocardial nulling range of LGE (LGERule, _lge_contrast): an InversionTime outside it is no LGE's
LGE_TI_RANGE = (120.0, 600.0)
#: units of pixel values in ms (RescaleType (0028,1054), a Real World Value Mapping's MeasurementUnitsCodeSequence
#: (UCUM 'ms')): a T1 / T2 map stores its relaxation times, never an image's signal
MS_UNITS = {"MS", "MSEC", "MILLISECOND", "MILLISECONDS"}


def value_units_ms(e: SeriesEvidence) -> str | None:
    """Where the series says its pixel values are in ms: RescaleType (0028,1054) top level or in an Enhanced MR
    Pixel Value Transformation item, or a Real World Value Mapping item's MeasurementUnitsCodeSequence (UCUM 'ms',
    Philips / GE / Siemens maps); None otherwise."""
    ds = e.frames[0].header.dataset
    items = [ds]
    for container in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        groups = ds.get(container) or []
        if groups:
            items.append(groups[0])
            for name in ("PixelValueTransformationSequence", "RealWorldValueMappingSequence"):
                items += list(groups[0].get(name) or [])
    items += list(ds.get("RealWorldValueMappingSequence") or [])
    for item in items:
        rescale = str(item.get("RescaleType") or "").strip().upper()
        if rescale in MS_UNITS:
            return f"RescaleType {rescale!r}"
        for unit in item.get("MeasurementUnitsCodeSequence") or []:
            code, meaning = str(unit.get("CodeValue") or "").strip(), str(unit.get("CodeMeaning") or "").strip()
            if code.upper() in MS_UNITS or meaning.upper() in MS_UNITS:
                return f"Real World Value Mapping units {code or meaning!r}"
    return None


#: RescaleType (0028,1054) values naming a relaxation parameter or ECV: PS3.3 C.11.1.1.2 defines OD / HU / US /
#: MGML / Z_EFF / ED / EDW / HU_MOD / PCT and leaves other values to the writer; a map exported by a post-processing
#: workstation (or a Philips / GE inline map) may name what its values are: 'T1', 'T2', 'T2*', 'ECV'
RESCALE_MAP_TYPES = {"T1": "t1", "T2": "t2", "T2*": "t2star", "T2STAR": "t2star", "ECV": "ecv"}
#: Real World Value Mapping (0040,9096) LUTLabel (0040,9210) / LUTExplanation (0028,3003) forms of what a map's values
#: are (PS3.3 C.7.6.16.2.11: the label names the quantity, e.g. 'T1', 'T1 map', 'T2_MAP', 'ECV')
RWVM_LABEL_KINDS = (("ecv", re.compile(W + r"ecv" + E)), ("t2star", re.compile(r"t2[ _-]?(?:\*|star)")),
                    ("t2", re.compile(W + r"t2" + E)), ("t1", re.compile(W + r"t1" + E)))
#: ImageComments (0020,4000) / FrameComments (0020,9158) forms that name a calculated map of one kind (what the
#: description hints name, MAP_DESCRIPTION_HINTS, less the bare 'map' word, which free text uses for many things and
#: which counts only beside the one parameter it maps, MAP_PARAMETERS: 'T1-Karte', 'carte T2'):
#: a map whose description a site has renamed may still say its kind in the comments ('T1 Map', 'MOLLI T1 map',
#: 'ECV map'), which a workstation export keeps (forms assumed from the description hints, not from a vendor manual)
#: a weighting named in a Real World Value Mapping label ('T1-weighted signal', 'T2w', 'T1 weighting'): the contrast of
#: an image's signal, not a parameter its values are (break1 finding 7): taken out before RWVM_LABEL_KINDS is read
RWVM_WEIGHTED = re.compile(r"(?:t1|t2[ _-]?(?:\*|star)?|pd|proton[ _-]?density)[ _-]?(?:weight\w*|w" + E + ")")
#: Real World Value Mapping units (MeasurementUnitsCodeSequence CodeValue, UCUM) of a unitless value: '1' (UCUM's
#: unity) or an annotation ('{signal}', '{arbitrary}'), an image's signal where the label names T1 / T2 / T2*, whose
#: values are times (an ECV, a fraction, may be unitless: its label still counts)
UNITLESS_UNITS = re.compile(r"^(?:1|\{[^}]*\}|no units|arbitrary|a\.?u\.?)$", re.I)
COMMENT_MAP_HINTS = tuple((kind, patterns) for kind, patterns in MAP_DESCRIPTION_HINTS if kind != "map")


def _rwvm_items(ds) -> list:
    """The Real World Value Mapping items (0040,9096) of a data set: top level (Parametric Map, some MR Image
    exports) and in the first Enhanced MR frame's functional groups (shared, then per-frame)."""
    items = list(ds.get("RealWorldValueMappingSequence") or [])
    for container in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        groups = ds.get(container) or []
        if groups:
            items += list(groups[0].get("RealWorldValueMappingSequence") or [])
    return items


def value_parameter(e: SeriesEvidence) -> tuple[str, str] | None:
    """(kind, why) where the header names the parameter the pixel values are: RescaleType (0028,1054) 'T1' / 'T2' /
    'T2*' / 'ECV' (RESCALE_MAP_TYPES), or a Real World Value Mapping item's LUTLabel / LUTExplanation naming one
    (RWVM_LABEL_KINDS) as a quantity: not a weighting ('T1-weighted signal': RWVM_WEIGHTED), and for T1 / T2 / T2*
    not in unitless units ('1': UNITLESS_UNITS, an image's signal, where relaxation times are in ms); None otherwise."""
    ds = e.frames[0].header.dataset
    rescale = str(header_value(ds, "RescaleType") or "").strip().upper()
    if rescale in RESCALE_MAP_TYPES:
        return RESCALE_MAP_TYPES[rescale], f"RescaleType {rescale!r} (the pixel values are {rescale} values)"
    for item in _rwvm_items(ds):
        units = [str(u.get(k) or "").strip() for u in item.get("MeasurementUnitsCodeSequence") or []
                 for k in ("CodeValue", "CodeMeaning")]
        unitless = any(UNITLESS_UNITS.match(u) for u in units if u)
        for keyword in ("LUTLabel", "LUTExplanation"):
            text = RWVM_WEIGHTED.sub(" ", normalise_text(str(item.get(keyword) or "")))
            kind = next((k for k, pattern in RWVM_LABEL_KINDS if pattern.search(text)), None)
            if kind and not (unitless and kind != "ecv"):
                return kind, f"Real World Value Mapping {keyword} {str(item.get(keyword)).strip()!r}"
    return None


#: words that make a comment naming a map a MENTION of another series rather than a declaration of this one ('10 min
#: after MOLLI', 'T1 map not done (AF)', 'compare with T2 map', 'see T1 map', 'before ECV'); checked after the
#: native-phase words ('T1 map without contrast', 'no Gd') are taken out, which name a native map
COMMENT_MENTION = re.compile(W + r"(?:after|before|prior|since|following|previous|compare\w*|comparison|vs|versus|"
                             r"see|not|no|n/a|pending|planned|failed|skipped|abandoned|cancel\w*|done|then|next|"
                             r"repeat\w*|instead)" + E)


def _comment_map_words(e: SeriesEvidence) -> tuple[str, str, str] | None:
    """(kind, the comment's words, the mention word or '') where ImageComments (0020,4000) or an Enhanced MR frame's
    FrameComments name a map (COMMENT_MAP_HINTS); the first and last frames are read (a series' comments are the
    same on every image, or name each source image's TI); None otherwise. A mention word (COMMENT_MENTION) says the
    comment only refers to a map ('10 min after MOLLI')."""
    texts = []
    for frame in e.frames[:1] + e.frames[-1:]:
        ds = frame.header.dataset
        texts.append(header_value(ds, "ImageComments", frame.frame_index))
        per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
        if frame.frame_index < len(per_frame) and per_frame[frame.frame_index].get("FrameContentSequence"):
            texts.append(per_frame[frame.frame_index].FrameContentSequence[0].get("FrameComments"))
    for text in dict.fromkeys(str(t) for t in texts if t):
        folded = NOT_TISSUE_MAPS.sub(" ", normalise_text(text))
        mention = COMMENT_MENTION.search(re.sub("|".join(f"(?:{w})" for w in NATIVE_PHASE_WORDS), " ", folded))
        said = mention.group(0) if mention else ""
        for kind, patterns in COMMENT_MAP_HINTS:
            hint = _has_hint(folded, patterns)
            if hint:
                return kind, f"ImageComments {text.strip()!r}: a map named ({hint!r})", said
        # the bare map word ('map', 'T1-Karte', 'carte T2') only beside one parameter that it maps
        word = _has_hint(folded, dict(MAP_DESCRIPTION_HINTS)["map"])
        named = [(parameter, found) for parameter, forms in MAP_PARAMETERS for found in [_has_hint(folded, forms)]
                 if found]
        if word and len({p for p, _ in named} - ({"t2"} if any(p == "t2star" for p, _ in named) else set())) == 1:
            parameter, found = named[0]
            return parameter, f"ImageComments {text.strip()!r}: a map named ({found!r} ... {word!r})", said
    return None


def comment_not_taken(e: SeriesEvidence) -> str | None:
    """Why ImageComments naming a map do not make the series a map, or None where they do or name none.

    Free text is the weakest evidence a header carries: a technologist writes notes about the exam into it ('10 min
    after MOLLI', 'T1 map not done (AF)', 'compare with T2 map'), so a comment routes a series to mapping only where
    it declares a map (no mention word: COMMENT_MENTION) AND nothing else speaks: no LGE name (SeriesDescription or
    ProtocolName), no phase-sensitive ImageType, and an acquisition header that reads neither as an LGE (IR with
    one InversionTime in the nulling range, one image per position) nor as a cine (acquisition_kind). A renamed
    map that keeps its source's LGE-like header and says 'T1 map' only in its comments is thus read as an LGE with a
    weak-evidence warning naming the comment (weak_lge_evidence), never silently dropped either way."""
    found = _comment_map_words(e)
    if found is None:
        return None
    if found[2]:
        return f"{found[1]}, but {found[2]!r} makes it a mention of another series, not a declaration"
    hint = _lge_hint(e)
    if hint:
        return f"{found[1]}, but the series is named {hint!r}"
    psir = _reconstruction_markers(e)[0]
    if psir:
        return f"{found[1]}, but ImageType {psir!r} is a phase-sensitive reconstruction"
    kind = acquisition_kind(e)
    if kind:
        return (f"{found[1]}, but free text does not outvote the acquisition header, which reads as "
                f"{'a cine' if kind[0] == 'cine' else 'an LGE'} ({kind[1]})")
    return None


def _comment_map_hint(e: SeriesEvidence) -> tuple[str, str] | None:
    """(kind, the comment's words) where ImageComments / FrameComments declare a map and nothing outvotes them
    (comment_not_taken); None otherwise."""
    found = _comment_map_words(e)
    if found is None or comment_not_taken(e):
        return None
    return found[0], found[1]


def _named_parameter(e: SeriesEvidence) -> str | None:
    """The one parameter the description names as a word ('SAX_T2' -> 't2', 'T2*' -> 't2star'; MAP_PARAMETERS), for a
    map whose header says its values are in ms but not of what; None where none or several are named."""
    text = NOT_TISSUE_MAPS.sub(" ", e.text_hints())
    named = {parameter for parameter, forms in MAP_PARAMETERS if _has_hint(text, forms)}
    if "t2star" in named:
        named.discard("t2")  # 'T2*' also reads as 'T2'
    return named.pop() if len(named) == 1 else None


def declared_map(e: SeriesEvidence) -> tuple[str, str, float] | None:
    """(kind, why, confidence) where the header itself declares the series a calculated parametric map, whatever its
    name says (an unnamed 'SAX_3' or empty description): in order of strength,

    1. the SOP class is Parametric Map Storage (1.2.840.10008.5.1.4.1.1.30, PS3.3 A.75): a map by definition (0.95);
    2. ImageType (0008,0008) values 3+ naming a map (_image_type_map: Siemens 'T1 MAP' / 'T2 MAP' / 'ECV';
       Philips 'T1 MAP' or 'T1' / 'T2' twice, 'T1MAP'; GE / Canon 'T1MAP' / 'MAP'; not a bare 'T1' once; PS3.3
       C.7.6.1.1.2 leaves values 3+ to the vendor) (0.9);
    3. the pixel values are relaxation times: Real World Value Mapping (0040,9096) MeasurementUnitsCodeSequence ms
       (UCUM 'ms', PS3.16 CID 7181 / PS3.3 C.7.6.16.2.11) or RescaleType (0028,1054) 'MS' (value_units_ms), or a
       RescaleType / Real World Value Mapping label naming T1 / T2 / T2* / ECV (value_parameter). No LGE, magnitude
       or PSIR, has pixel values in ms (0.9);
    4. ImageComments (0020,4000) declaring a map ('T1 map', 'MOLLI', 'ECV map': _comment_map_hint), on a series
       with no LGE name, no PSIR reconstruction and no LGE or cine acquisition header, the comment no mention of
       another series ('after MOLLI', 'T1 map not done': comment_not_taken) (0.75).

    None where the header declares none of these (a map keeping its source images' header may still be read as one
    by calculated_map, and an LGE analysis of the rest is checked on its pixels: analysis.lge.contrast_notes)."""
    if any(f.header.sop_class_uid == PARAMETRIC_MAP_STORAGE for f in e.frames):
        found = value_parameter(e) or (None, "")
        return (found[0] or "map", "SOP class Parametric Map Storage (1.2.840.10008.5.1.4.1.1.30): a calculated "
                "map by definition" + (f"; {found[1]}" if found[0] else ""), 0.95)
    marker = _image_type_map(e)
    if marker:
        return marker[0], f"ImageType contains {marker[1]!r}", 0.9
    units, parameter = value_units_ms(e), value_parameter(e)
    if units or parameter:
        said = "; ".join(why for why in (f"pixel values in ms ({units})" if units else None,
                                         parameter[1] if parameter else None) if why)
        kind = parameter[0] if parameter else _named_parameter(e) or "map"
        return kind, f"{said}: a calculated map's values (relaxation times), never an LGE's signal", 0.9
    comment = _comment_map_hint(e)
    if comment:
        return comment[0], comment[1], 0.75
    return None


def _below_nulling_ti(e: SeriesEvidence) -> float | None:
    """The median InversionTime where it lies below the LGE nulling range in an inversion-prepared gradient-echo
    series (not a STIR: t2_weighting says nothing): the first TI of T1-mapping source images (MOLLI / ShMOLLI begin
    at 80-150 ms), which a map made from them keeps in its header; None otherwise."""
    inversion = [t for t in e.inversion_times if t > 0]
    if not inversion or not _inversion_prepared(e) or t2_weighting(e)[0]:
        return None
    median = float(np.median(inversion))
    return median if median < LGE_TI_RANGE[0] else None


def bare_parameter_token(e: SeriesEvidence) -> str | None:
    """A bare 'T1' / 'T2' among the series' ImageType values 3+ that declares no map (_map_token_kind: written once,
    no 'MAP' beside it): a calculated image as some exports write it, or only the weighting of an acquired image,
    so evidence to weigh (calculated_map) and to say beside an LGE (weak_lge_evidence), never a declaration."""
    for image_type in dict.fromkeys(f.image_type for f in e.frames):
        for token in image_type[2:]:
            if token in ("T1", "T2") and _map_token_kind(token, image_type) is None:
                return token
    return None


def calculated_map(e: SeriesEvidence) -> tuple[str, list[str]] | None:
    """(kind, evidence) when a series of one image per slice position, without a map name or a header declaring a
    map (declared_map: SOP class, ImageType map value, values in ms, ImageComments), is a calculated parametric map
    (a re-export from a post-processing workstation) rather than an inversion-prepared acquisition: what a
    calculation leaves in the header, weighed in integer points against what an LGE acquisition carries; None where
    the acquisition weighs as much, where nothing relates the series to an inversion (no preparation, no
    InversionTime, no values in ms), or where nothing but processing marks speaks for a map.

    Evidence of a map (one of these is needed): InversionTime 0 in an IR-prepared series (40: the map keeps the
    preparation, not a TI), pixel values in ms (45: value_units_ms), a bare 'T1' / 'T2' ImageType value (30:
    bare_parameter_token, a calculated image or only a weighting), an InversionTime below the nulling range in an
    inversion-prepared gradient echo (20: _below_nulling_ti, the first TI of the source images a map keeps), 't1' /
    't2' as a word of the description (10). Processing marks, which say the images were processed but not into
    what, add to that evidence and never stand for it: ImageType value 2 SECONDARY (40: a workstation re-saves an
    LGE so too), value 1 DERIVED (10: Siemens writes it on LGE magnitude and PSIR images), no InversionTime in a
    derived IR-prepared series (25: GE may leave InversionTime empty, a workstation may drop it). 'MOCO' counts for
    neither (motion correction is done to maps, their source images, LGE and cines alike). For an acquisition:
    ImageType ORIGINAL (20), a PSIR value (40), an LGE name (50), an InversionTime typical of LGE (200-450 ms) in an
    inversion-prepared series (45; 20 without the preparation, 5 elsewhere in 120-600 ms).
    So a named or phase-sensitive LGE stays LGE however derived, an unnamed DERIVED\\SECONDARY or MOCO series is
    judged on its inversion time and preparation, and a map that copied TI 0 or its first source TI stays a map:
    processing marks alone weigh for a map only in a SECONDARY copy whose TI lies outside TYPICAL_LGE_TI (a
    re-exported post-contrast MOLLI map keeps a first TI of 100-180 ms)."""
    if e.phases > 1:
        return None
    prepared = _inversion_prepared(e)  # MP alone may be a saturation or T2 preparation: not counted
    inversion = [t for t in e.inversion_times if t > 0]
    units = value_units_ms(e)
    if not (prepared or inversion or units):
        return None
    first, second = _image_type_values(e, 0), _image_type_values(e, 1)
    derived = bool(first & {"DERIVED"}) or "SECONDARY" in second
    calculation: list[tuple[int, str]] = []
    processing: list[tuple[int, str]] = []
    acquisition: list[tuple[int, str]] = []
    if "SECONDARY" in second:
        processing.append((40, "ImageType value 2 SECONDARY (made after the acquisition)"))
    if "DERIVED" in first:
        processing.append((10, "ImageType value 1 DERIVED"))
    elif "ORIGINAL" in first:
        acquisition.append((20, "ImageType value 1 ORIGINAL (an acquired image)"))
    if prepared and not inversion and 0.0 in e.inversion_times:
        calculation.append((40, "InversionTime 0 in an inversion-prepared series (a calculated image keeps the "
                                "preparation, not an inversion time)"))
    elif prepared and not inversion and derived:
        processing.append((25, "no InversionTime in a derived inversion-prepared series"))
    token = bare_parameter_token(e)
    if token:
        calculation.append((30, f"ImageType value {token!r} (a calculated {token} image, or only the weighting)"))
    if units:
        calculation.append((45, f"pixel values in ms ({units}): relaxation times, not an image's signal"))
    below = _below_nulling_ti(e)
    if below is not None:
        calculation.append((20, f"InversionTime {below:.0f} ms, below the LGE nulling range ({LGE_TI_RANGE[0]:.0f}-"
                                f"{LGE_TI_RANGE[1]:.0f} ms): the first inversion time of T1-mapping source images, "
                                "which a map made from them keeps"))
    psir, _ = _reconstruction_markers(e)
    lge_hint = _lge_hint(e)
    parameter = None
    if psir:
        acquisition.append((40, f"phase-sensitive ImageType {psir!r}"))
    if lge_hint:
        acquisition.append((50, f"LGE description hint {lge_hint!r}"))
    else:
        parameter = _has_hint(NOT_TISSUE_MAPS.sub(" ", e.text_hints()), (W + r"t[12]" + E,))
        if parameter:
            calculation.append((10, f"description names {parameter.upper()!r}"))
    if inversion:
        median = float(np.median(inversion))
        if TYPICAL_LGE_TI[0] <= median <= TYPICAL_LGE_TI[1]:
            acquisition.append((45 if prepared else 20, f"InversionTime {median:.0f} ms, typical of LGE"
                                + (" after an inversion preparation" if prepared else "") + e.inversion_note))
        elif LGE_TI_RANGE[0] <= median <= LGE_TI_RANGE[1]:
            acquisition.append((5, f"InversionTime {median:.0f} ms{e.inversion_note}"))
    atypical_ti = bool(inversion) and not TYPICAL_LGE_TI[0] <= float(np.median(inversion)) <= TYPICAL_LGE_TI[1]
    if not calculation and not (atypical_ti and "SECONDARY" in second):
        # processing marks alone: the series is judged as any other (an LGE re-saved by a workstation); but a
        # workstation copy whose TI is no LGE's (a map keeping its first source TI, 120-199 ms) stays weighed as a map
        return None
    calculation += processing
    map_points = sum(points for points, _ in calculation)
    lge_points = sum(points for points, _ in acquisition)
    if map_points < CALCULATED_MAP_POINTS or map_points <= lge_points:
        return None
    kind = {"T1": "t1", "T2": "t2"}.get(token or "") or (parameter.lower() if parameter else "map")
    evidence = [f"a calculated map, not an acquisition: {'; '.join(why for _, why in calculation)} ({map_points} "
                "points)" + (f" against {'; '.join(why for _, why in acquisition)} ({lge_points})" if acquisition
                            else ", nothing for an acquisition") + "; one image per slice position"]
    return kind, evidence


def _mapping_evidence(e: SeriesEvidence) -> tuple:
    """(header declaration of a map (declared_map: (kind, why, confidence)), description hint, source-image pattern,
    calculated-map evidence) of a series, each a (kind, why) or None. All None for a series whose only sign of
    mapping is its images' varying InversionTime after one inversion, named a TI scout (named_ti_scout; a
    Look-Locker name is not one) with one_inversion, or of any name but a Look-Locker one (the T1-mapping readout)
    with the TI rising with the TriggerTime inside one RR interval (ti_rises_with_trigger): a TI scout, read to choose the LGE TI (TIScoutRule). Several
    inversions (TI beyond one RR, constant TriggerTime) stay T1-mapping source images whatever the name."""
    marker = declared_map(e)
    hint = _map_description_hint(e)
    source = _source_images(e)
    look_locker = _has_hint(e.text_hints(), LOOK_LOCKER_HINTS)
    if source and not (marker or hint) and (named_ti_scout(e) and one_inversion(e)
                                            or not look_locker and ti_rises_with_trigger(e)):
        return None, None, None, None
    calculated = None if (marker or hint or source) else calculated_map(e)
    return marker, hint, source, calculated


def mapping_recognition(e: SeriesEvidence) -> Recognition | None:
    """t1map / t2map when the series is a parametric map (T1 native or post-contrast, T2, T2*, ECV) or the source
    images of one (MOLLI / ShMOLLI / SASHA / T2-prepared / multi-echo), whatever its IR / TI attributes say; None
    when nothing says mapping. The LGE, cine and T2-weighted rules step aside for such a series."""
    marker, hint, source, calculated = _mapping_evidence(e)
    if not (marker or hint or source or calculated):
        return None
    kinds = [found[0] for found in (marker, hint, source, calculated) if found and found[0] != "map"]
    kind = kinds[0] if kinds else "map"
    evidence = []
    if marker:
        evidence.append(marker[1])
        confidence = max(marker[2], 0.85 if source else 0.0)  # comments naming MOLLI on its source images
    elif source:
        confidence = 0.85
    elif calculated:
        confidence = 0.7
        evidence += calculated[1]
    else:
        confidence = 0.75 if hint[0] != "map" else 0.6
        if "DERIVED" in e.image_type or e.phases >= 2:
            confidence += 0.05
        if hint[1].endswith("(ProtocolName only: exam-level, weak)"):
            confidence -= 0.15  # the exam's protocol may name the map; nothing of the series says otherwise
    if hint:
        evidence.append(f"description hint {hint[1]!r}")
        if marker or source:
            confidence += 0.05
    if source:
        evidence.append(source[1])
    if "MOCO" in e.image_type:
        evidence.append("ImageType contains 'MOCO' (motion-corrected)")
    value, name = MAP_KINDS[kind]
    if value is None:  # a map that does not say what it maps
        prepared = _inversion_prepared(e) or any(t > 0 for t in e.inversion_times)
        spin_echo = "SE" in e.scanning_sequence and "GR" not in e.scanning_sequence
        value = "t2map" if spin_echo and not prepared else "t1map"
        name = (f"parametric map, parameter not named: {value[:2].upper()} taken from the "
                + ("inversion preparation" if prepared else "spin-echo readout" if spin_echo else "commonest CMR map"))
    raw = source is not None or e.phases >= 2
    evidence.append(f"{name} source images ({e.phases} per slice position): not a map, nothing is measured on them"
                    if raw else f"{name}: one image per slice position")
    if kind == "ecv" or kind == "t2star":
        evidence.append(f"reported as {value} (the series list has no separate {kind.upper()} entry)")
    return Recognition(value, min(confidence, 0.97), evidence)


def mapping_kind(e: SeriesEvidence) -> str | None:
    """What a mapping series maps ('ecv', 't2star', 't2', 't1' or 'map' unnamed), with '-source' for the source
    images of a map (several images per slice position): t1map / t2map series of different kinds are different
    measurements, never repeats of one another; None when nothing says mapping."""
    marker, hint, source, calculated = _mapping_evidence(e)
    kinds = [found[0] for found in (marker, hint, source, calculated) if found]
    if not kinds:
        return None
    kind = next((k for k in kinds if k != "map"), "map")
    return kind + ("-source" if source is not None or e.phases >= 2 else "")


def _lge_hint(e: SeriesEvidence) -> str | None:
    """The LGE name in the description; a word that says only 'late' / 'delayed' counts where nothing names another
    examination ('DELAYED_TOF', 'late arterial' are no LGE)."""
    text = e.text_hints()
    hint = _has_hint(text, LGE_HINTS)
    if hint is None and not _has_hint(text, NOT_LGE_CONTEXT):
        hint = _has_hint(text, GENERIC_LGE_HINTS)
    return hint


def _lge_contrast(e: SeriesEvidence) -> str | None:
    """'IR, TI x ms' when the images carry LGE contrast: inversion-recovery prepared with an InversionTime in the
    myocardial nulling range (120-600 ms) and one inversion time per slice position; else None."""
    prepared = _inversion_prepared(e)
    inversion = [t for t in e.inversion_times if t > 0]
    if prepared and inversion and 120 <= float(np.median(inversion)) <= 600 and e.varies("inversion").count <= 1:
        return f"{prepared}, InversionTime {np.median(inversion):.0f} ms{e.inversion_note}"
    return None


class LocalizerRule:
    name, aspect = "localizer-rule", "sequence"
    HINTS = (r"scout", r"locali[sz]", W + "loc" + E, r"survey", r"tri-?pilot", r"3-?plane", r"pilot")

    def recognize(self, e: SeriesEvidence, context: StudyContext) -> Recognition | None:
        hint = _has_hint(e.text_hints(), self.HINTS)
        if len(e.orientations) >= 2:
            normals = [np.cross(o[:3], o[3:]) for o in e.orientations]
            pairs = [abs(np.dot(a, b)) for i, a in enumerate(normals) for b in normals[i + 1:]]
            evidence = [f"{len(e.orientations)} plane orientations in one series ({', '.join(e.planes)})"]
            confidence = 0.85 if min(pairs) < np.cos(np.radians(30)) else 0.6
            if e.phases <= 1:
                evidence.append("one image per position (no cine phases)")
                confidence += 0.05
            if hint:
                evidence.append(f"SeriesDescription/protocol hint {hint!r}")
                confidence += 0.05
            else:
                # long-axis LGE (2/3/4-chamber) or maps sent as one series: what the images are outranks the planes
                mapping = mapping_recognition(e)
                lge_hint = _lge_hint(e)
                other = (f"{mapping.value} evidence ({mapping.evidence[0]})" if mapping
                         else f"LGE contrast ({_lge_contrast(e)})" if _lge_contrast(e)
                         else f"LGE description hint {lge_hint!r}" if lge_hint else None)
                if other:
                    evidence.append(f"but {other}: images of one sequence in several planes, not a localizer")
                    confidence = min(confidence, 0.35)
            return Recognition("localizer", min(confidence, 0.99), evidence)
        if hint and e.phases <= 1 and e.slices <= 5:
            return Recognition("localizer", 0.5, [f"SeriesDescription/protocol hint {hint!r}",
                                                  f"{e.slices} slice(s), single phase"])
        return None


class MappingRule:
    """Parametric maps and their source images (mapping_recognition)."""

    name, aspect = "mapping-rule", "sequence"

    def recognize(self, e: SeriesEvidence, context: StudyContext) -> Recognition | None:
        return mapping_recognition(e)


def _reconstruction_markers(e: SeriesEvidence) -> tuple[str | None, str | None]:
    """(phase-sensitive marker, magnitude marker) among the ImageType values 3+ (and ComplexImageComponent) of the
    series' frames: PSIR_TOKENS or a Philips 'R_' value; MAGNITUDE_TOKENS or a Philips 'M_' value."""
    psir = magnitude = None
    for image_type in dict.fromkeys(f.image_type for f in e.frames):
        for token in image_type[2:]:
            if psir is None and (token in PSIR_TOKENS or token.startswith("R_")):
                psir = token
            if magnitude is None and (token in MAGNITUDE_TOKENS or token.startswith("M_")):
                magnitude = token
    return psir, magnitude


def phase_sensitive_marker(e: SeriesEvidence) -> str | None:
    """The ImageType (0008,0008) value 3+ or ComplexImageComponent that marks the series as a signed reconstruction
    (phase-sensitive 'PSIR' / 'R_IR' / 'REAL', or phase 'PHASE' / 'P' of a phase-contrast series), None if none."""
    return _reconstruction_markers(e)[0]


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def signed_values(e: SeriesEvidence) -> str | None:
    """Why every image of the series holds signed values (a phase-sensitive reconstruction is signed, a magnitude
    is not), from the headers only: a negative RescaleIntercept (0028,1052) whose zero lies inside the stored values
    (SmallestImagePixelValue / LargestImagePixelValue (0028,0106/0107) where written, else the BitsStored range),
    or signed storage (PixelRepresentation 1) with a negative SmallestImagePixelValue; None otherwise."""
    reason = None
    for frame in {(id(f.header), f.rescale): f for f in e.frames}.values():  # one frame per instance and rescale
        ds = frame.header.dataset
        slope, intercept = frame.rescale
        signed_storage = _int_or_none(ds.get("PixelRepresentation")) == 1
        bits = _int_or_none(ds.get("BitsStored")) or _int_or_none(ds.get("BitsAllocated")) or 16
        smallest = _float_or_none(ds.get("SmallestImagePixelValue"))
        largest = _float_or_none(ds.get("LargestImagePixelValue"))
        low = smallest if smallest is not None else (-(2 ** (bits - 1)) if signed_storage else 0)
        high = largest if largest is not None else (2 ** (bits - 1) - 1 if signed_storage else 2 ** bits - 1)
        values = sorted((low * slope + intercept, high * slope + intercept))
        if intercept < 0 and values[0] < 0 < values[1]:
            source = "Smallest/LargestImagePixelValue" if smallest is not None else f"BitsStored {bits}"
            reason = reason or f"RescaleIntercept {intercept:g} with stored values spanning it ({source})"
        elif signed_storage and smallest is not None and smallest * slope + intercept < 0:
            reason = reason or f"signed storage with SmallestImagePixelValue {smallest:g}"
        else:
            return None
    return reason


def lge_kind(e: SeriesEvidence) -> Recognition:
    """psir or magnitude for an LGE series, in this order:
    1. ImageType (0008,0008) values 3+ / ComplexImageComponent: a phase-sensitive marker (Siemens 'PSIR', Philips
       'R' / 'R_IR', 'REAL' / 'PHASE' / 'P') or a magnitude one (Siemens 'M', GE 'MAG', Philips 'M_IR', 'MAGNITUDE');
    2. signed values (signed_values: negative RescaleIntercept with the stored values spanning it);
    3. SeriesDescription, then ProtocolName: 'mag' says magnitude before 'psir' says phase-sensitive, because
       Siemens / Philips name the protocol after the PSIR acquisition and both of its reconstructions carry that
       name ('de_PSIR_SAX_MAG', 'PSIR_TFE'); so the name only decides where the headers say nothing."""
    psir, magnitude = _reconstruction_markers(e)
    signed = signed_values(e)
    if psir:
        evidence = [f"ImageType contains {psir!r}"]
        if magnitude:
            evidence.append(f"and {magnitude!r}: both reconstructions in one series, phase-sensitive taken")
        if signed:
            evidence.append(f"signed values: {signed}")
        return Recognition("psir", 0.9, evidence)
    if magnitude:
        evidence = [f"ImageType contains {magnitude!r} (magnitude; outranks the description)"]
        if signed:
            evidence.append(f"although the values look signed ({signed})")
        return Recognition("magnitude", 0.9 if not signed else 0.7, evidence)
    if signed:
        return Recognition("psir", 0.75, [f"no reconstruction marker in ImageType; signed values: {signed}"])
    for label, text in (("SeriesDescription", e.description), ("ProtocolName", e.protocol)):
        text = normalise_text(text)
        if re.search(W + r"mag(?:nitude)?" + E, text):
            return Recognition("magnitude", 0.6, [f"{label} says magnitude ('mag') and ImageType has no marker"])
        if "psir" in text or re.search(r"phase[ _-]?sens", text):
            return Recognition("psir", 0.6, [f"{label} contains 'psir' and ImageType has no marker"])
    return Recognition("magnitude", 0.6, ["no phase-sensitive marker in ImageType, values not signed"])


#: ScanningSequence-free signs of a spin-echo readout in SequenceName: Siemens '*tse2d1_17' (turbo spin echo),
#: '*tir2d1_15' (turbo inversion recovery: TIRM / STIR), '*h2d1' (HASTE), '*se2d'; GE 'fse' / 'ssfse' / 'frfse'
SPIN_ECHO_SEQUENCE_NAME = re.compile(r"^\*?(?:tse|tir|h2d|haste|se[23]d|fse|ssfse|frfse)")
#: names of T2-weighted stacks: T2w, STIR / TIRM (short-TI inversion recovery), HASTE / TSE, black / dark blood,
#: double (or triple) inversion recovery ('DIR', 'BB'), oedema; 'T2' as a word ('BB_T2_TSE_SAX', '_T2_')
T2W_HINTS = (r"t2w", W + "t2" + E, r"stir", r"tirm", r"haste", W + "tse" + E, r"black[ _-]?blood",
             r"dark[ _-]?blood", W + "bb" + E, W + "dir" + E, r"(?:double|triple)[ _-]?(?:ir|inversion)",
             r"o?edema")
#: names of a blood-suppressed ("dark-blood") LGE that say so unambiguously: 'dark blood' / 'black blood', FIDDLE
#: (flow-independent dark-blood delayed enhancement), 'blood suppressed'; German 'dunkles Blut' / 'schwarzes Blut',
#: French 'sang noir', Spanish / Italian 'sangre negra' / 'sangue nero', Japanese ブラックブラッド
DARK_BLOOD_LGE_HINTS = (r"dark[ _-]?blood", r"black[ _-]?blood", r"fiddle", r"blood[ _-]?supp?ress",
                        r"(?:dunkl|schwarz)\w*[ _-]?blut", r"sang[ _-]?noir", r"sangre[ _-]?negra", r"sangue[ _-]?nero",
                        _literal("ブラックブラッド"))
#: name tokens that may mean dark blood but are also site codes or other preparations: 'DB' / 'BB' as a word
#: ('DB_PSIR', 'PSIR_BB'; W / E make digits and '_' word edges), a T2 preparation ('T2prep PSIR'). They count only
#: with pixel support (analysis.lge.dark_blood_notes; break37b: 'LGE_PSIR_DB_2', 'LGE SAX BB', ProtocolName 'DB
#: cardiac LGE' on a clearly bright-blood LGE withheld its flag)
WEAK_DARK_BLOOD_LGE_HINTS = (W + "db" + E, W + "bb" + E, r"t2[ _-]?prep")


def dark_blood_name(*texts: str, weak: bool = False) -> str | None:
    """The dark-blood LGE name in any of the texts (SeriesDescription, ProtocolName...; normalised here), or None:
    an unambiguous one (DARK_BLOOD_LGE_HINTS), or with `weak` a token that needs pixel support
    (WEAK_DARK_BLOOD_LGE_HINTS) only."""
    return _has_hint(normalise_text(" | ".join(t or "" for t in texts)),
                     WEAK_DARK_BLOOD_LGE_HINTS if weak else DARK_BLOOD_LGE_HINTS)


#: points for a T2-weighted stack (t2_weighting)
T2W_POINTS = 50


def t2_weighting(e: SeriesEvidence) -> tuple[int, list[str]]:
    """(points, evidence) for T2 weighting, integers: a spin-echo readout (30; ScanningSequence SE without GR, or a
    TSE / TIR / HASTE SequenceName), EchoTime >= 40 ms (40; an LGE gradient echo reads out at 1-5 ms), an
    inversion before a spin-echo or long-TE readout at 100-250 ms (20: fat nulling, STIR / TIRM) or 450-700 ms (10:
    blood nulling, double inversion black blood), a T2-weighted name (20). An inversion time inside the LGE nulling
    range thus counts for LGE only with a gradient-echo readout."""
    points, evidence = 0, []
    name = e.sequence_name.strip().lower()
    spin_echo = "GR" not in e.scanning_sequence and (
        "SE" in e.scanning_sequence or bool(SPIN_ECHO_SEQUENCE_NAME.match(name)))
    if spin_echo:
        points += 30
        evidence.append("spin-echo readout (" + ("ScanningSequence " + "\\".join(e.scanning_sequence)
                                                 if "SE" in e.scanning_sequence else f"SequenceName {name!r}") + ")")
    long_te = e.echo_time is not None and e.echo_time >= 40
    if long_te:
        points += 40
        evidence.append(f"EchoTime {e.echo_time:.0f} ms (T2 weighting; an LGE gradient echo reads out at a few ms)")
    inversion = [t for t in e.inversion_times if t > 0]
    if inversion and (spin_echo or long_te):
        median = float(np.median(inversion))
        if 100 <= median <= 250:
            points += 20
            evidence.append(f"InversionTime {median:.0f} ms before a spin-echo readout: fat nulling (STIR / TIRM), "
                            "not myocardial nulling" + e.inversion_note)
        elif 450 <= median <= 700:
            points += 10
            evidence.append(f"InversionTime {median:.0f} ms before a spin-echo readout: blood nulling (double "
                            "inversion, black blood)" + e.inversion_note)
    hint = _has_hint(e.text_hints(), T2W_HINTS)
    if hint:
        points += 20
        evidence.append(f"description hint {hint!r}")
    return points, evidence


#: TI scouts (Look-Locker images at increasing delays after one inversion, read to choose the LGE TI): Siemens
#: 'TI_Scout' / 'TI-Scout' / 'TIscout', 'PSIR scout', Philips 'LL_TI_scout', 'Look-Locker', 'TI finder' / 'TI
#: select', 'inversion scout' / 'inversion time scout'; German 'TI-Suche' / 'TI-Bestimmung', French / Spanish
#: 'TI repérage' / 'TI búsqueda', Italian 'ricerca TI', Japanese 'TIスカウト', Russian 'ТИ скаут' / 'TI скаут'
TI_SCOUT_HINTS = (W + r"ti[ _-]?(?:scout|finder|find|select|determination|suche|bestimmung|reperage|busqueda)",
                  r"psir[ _-]?scout",
                  r"inversion[ _-]?(?:time[ _-]?)?(?:scout|finder)", r"t1[ _-]?scout", r"ricerca[ _-]?ti" + E,
                  W + r"ti[ _-]?" + _literal("スカウト"), "(?:" + W + "ti|" + W_CYR + "ти)[ _-]?" + _literal("скаут"))
#: Look-Locker names ('Look-Locker', 'LL'): the readout of a TI scout and of MOLLI (modified Look-Locker) T1 mapping
#: alike, so they count for a TI scout against a cine (ti_scout) but never make T1-mapping source images a TI scout
#: (break37b: 'modified Look-Locker SAX', 'LL_T1_SAX' MOLLI source images were read as TI scouts)
LOOK_LOCKER_HINTS = (r"look[ _-]?locker", W + "ll" + E)
#: points for a TI scout (ti_scout)
TI_SCOUT_POINTS = 60


def named_ti_scout(e: SeriesEvidence) -> str | None:
    """The TI-scout name (TI_SCOUT_HINTS; not a Look-Locker name, LOOK_LOCKER_HINTS) in the series' description /
    protocol, or None. A series so named whose images differ in InversionTime at one slice position after one
    inversion (one_inversion) is a TI scout, not T1-mapping source images, unless a mapping name ('MOLLI',
    'T1 map') or a map ImageType value says otherwise (mapping_recognition)."""
    return _has_hint(e.text_hints(), TI_SCOUT_HINTS)


def one_inversion(e: SeriesEvidence) -> bool:
    """True where the series' InversionTimes (ms) at one slice position fit readouts after ONE inversion, as a TI
    scout's do: no TI beyond one RR-ish range (MAX_RR_MS) and not one constant TriggerTime over those images (a
    scout reads at increasing delays in one beat; an absent TriggerTime says nothing). MOLLI / ShMOLLI source images
    span several inversions over several beats (TI 100-5100 ms) at one fixed TriggerTime: False."""
    inversion = e.varies("inversion")
    return not ((inversion.high or 0) > MAX_RR_MS or e.varies("trigger").count == 1)


def ti_scout(e: SeriesEvidence) -> tuple[int, list[str]]:
    """(points, evidence) that a series of several images per slice position is a TI scout / Look-Locker series
    rather than a cine: a TI-scout name (40; 'scout' alone 20), an inversion preparation (40: IR, an IR ImageType
    or ScanOptions value, MP with a TI; SequenceVariant MP alone 20, 10 beside SS), an InversionTime written on
    every phase (20: a cine has none), many TriggerTimes at one slice position after it (20: the Look-Locker
    readouts). Nothing without a name or the varying TriggerTimes (a perfusion series is also prepared), nothing for
    single-shot LGE repetitions at one TI over several heartbeats (lge_repetitions)."""
    trigger = e.varies("trigger")
    name = named_ti_scout(e) or _has_hint(e.text_hints(), LOOK_LOCKER_HINTS)
    scout = name or _has_hint(e.text_hints(), (r"scout",))
    if e.phases < 2 or not (scout or trigger.count >= 5) or lge_repetitions(e):
        return 0, []
    points, evidence = 0, []
    if name:
        points += 40
        evidence.append(f"TI-scout name {name!r}")
    elif scout:
        points += 20
        evidence.append(f"description hint {scout!r}")
    prepared = _inversion_prepared(e)
    if prepared:
        points += 40
        evidence.append(prepared)
    elif "MP" in e.sequence_variant:
        points += 10 if "SS" in e.sequence_variant else 20
        evidence.append("SequenceVariant MP (magnetization prepared)")
    inversion = [t for t in e.inversion_times if t > 0]
    if inversion:
        points += 20
        evidence.append(f"InversionTime {min(inversion):g}" + (f"-{max(inversion):g}" if len(inversion) > 1 else "")
                        + " ms written on a series of several images per slice position (a cine has none)"
                        + e.inversion_note)
    if trigger.count >= 5:
        points += 20
        evidence.append(f"{trigger.count} TriggerTimes ({trigger.low:.0f}-{trigger.high:.0f} ms) at one slice "
                        "position: readouts at increasing delays")
    return points, evidence


class TIScoutRule:
    """A TI scout / Look-Locker series (ti_scout): 'other', never a cine, whether or not its TI is written per
    image. With the TI per image and no TI-scout name (named_ti_scout), or with a mapping name ('MOLLI') or a map
    ImageType value, it is T1-mapping source images instead (mapping_recognition)."""

    name, aspect = "ti-scout-rule", "sequence"

    def recognize(self, e: SeriesEvidence, context: StudyContext) -> Recognition | None:
        if mapping_recognition(e) is not None:
            return None
        points, evidence = ti_scout(e)
        if points < TI_SCOUT_POINTS:
            return None
        evidence.append(f"a TI scout ({points} points): images after an inversion at increasing delays, not "
                        "cardiac phases; nothing is measured on it")
        return Recognition("other", min(points, 95) / 100, evidence)


#: points (integers: no float sums at the threshold) an LGE candidate needs
LGE_POINTS = 40


def lge_repetitions(e: SeriesEvidence) -> str | None:
    """Why the series holds single-shot LGE repetitions (the images a Siemens MOCO average is made of: one image per
    heartbeat at one TI), or None: several images per slice position at one InversionTime (one_inversion_time) in
    the myocardial nulling range, after an inversion preparation, over a TriggerTime span longer than any RR
    interval (MAX_RR_MS). Neither cardiac phases nor T1-mapping source images nor a TI scout; nothing is measured
    on them (the average, where sent, is the LGE)."""
    trigger = e.varies("trigger")
    if e.phases < 2 or trigger.span <= MAX_RR_MS or not one_inversion_time(e) or not _inversion_prepared(e):
        return None
    inversion = float(np.median(e.inversion_times))
    if not LGE_TI_RANGE[0] <= inversion <= LGE_TI_RANGE[1]:
        return None
    return (f"{e.phases} images per slice position at one InversionTime ({inversion:.0f} ms{e.inversion_note}) over "
            f"{trigger.span:.0f} ms of TriggerTime, longer than any RR interval ({MAX_RR_MS:.0f} ms): single-shot LGE "
            "repetitions, one per heartbeat (what a motion-corrected average is made of), not cardiac phases, not "
            "T1-mapping source images (one TI fits no T1) and not a TI scout; nothing is measured on them")


class LGERule:
    """LGE: a gradient-echo (or SSFP) readout after an inversion with its TI in the myocardial nulling range, one
    image per slice position; in integer points: the inversion preparation 45, the TI 35, the gradient echo 5, a
    PSIR reconstruction 10, an LGE name 10 (40 alone), less the T2 weighting (t2_weighting: a spin-echo readout, a
    long TE, STIR / double-inversion TIs) and the evidence against LGE (evidence_against_lge). A SECONDARY image (a
    workstation copy) is judged on the rest of its header."""

    name, aspect = "lge-rule", "sequence"
    HINTS = LGE_HINTS

    def recognize(self, e: SeriesEvidence, context: StudyContext) -> Recognition | None:
        if mapping_recognition(e) is not None:
            return None  # a map or its source images: never an LGE candidate, whatever its IR / TI say
        repeated = lge_repetitions(e)
        if repeated:
            return Recognition("other", 0.8, [repeated])
        trigger = e.varies("trigger")
        if trigger.count >= 5 and trigger.span >= 150:
            return None  # cardiac phases at one slice position: a cine
        if ti_scout(e)[0] >= TI_SCOUT_POINTS:
            return None
        inversion = [t for t in e.inversion_times if t > 0]
        prepared = _inversion_prepared(e)
        in_range = bool(inversion) and 120 <= float(np.median(inversion)) <= 600
        hint = _lge_hint(e)
        evidence = []
        points = 0
        if prepared:
            evidence.append(prepared)
            points += 45
        if in_range:
            if max(inversion) - min(inversion) > 5:
                evidence.append(f"InversionTime {min(inversion):.0f}-{max(inversion):.0f} ms, one per slice position "
                                f"(adjusted between breath-holds; median {np.median(inversion):.0f}, nulling range "
                                "120-600)" + e.inversion_note)
            else:
                evidence.append(f"InversionTime {np.median(inversion):.0f} ms (nulling range 120-600)"
                                + e.inversion_note)
            points += 35
        if "GR" in e.scanning_sequence and points > 0:
            short_te = e.echo_time is not None and e.echo_time <= 5
            evidence.append("gradient echo readout" + (f", EchoTime {e.echo_time:g} ms" if short_te else ""))
            points += 5
        psir, _ = _reconstruction_markers(e)
        if psir:
            evidence.append(f"phase-sensitive (PSIR) ImageType {psir!r}")
            points += 10
        if hint:
            evidence.append(f"description hint {hint!r}")
            points += 10 if points > 0 else 40
        t2_points, t2_evidence = t2_weighting(e)
        if t2_points and points > 0:
            evidence.append(f"against LGE, T2 weighting ({t2_points} points): " + "; ".join(t2_evidence))
            points -= t2_points
        if "SECONDARY" in _image_type_values(e, 1) and points > 0:
            # a workstation re-saves an LGE and a map alike so: map evidence is weighed by calculated_map
            evidence.append("ImageType value 2 SECONDARY (a derived copy): neither for nor against LGE")
        against, against_evidence = evidence_against_lge(e, hint)
        if against and points > 0:
            evidence += against_evidence
            points -= against
        if points < LGE_POINTS:
            if against and (prepared or hint):
                return not_lge(e, evidence, points, against)
            return None
        if len(e.trigger_times) >= 2 and trigger.count <= 1:
            evidence.append(f"TriggerTime {min(e.trigger_times):.0f}-{max(e.trigger_times):.0f} ms differs between "
                            "slice positions only (heart rate per breath-hold), not within one")
        if len(e.orientations) >= 2:
            evidence.append(f"{len(e.orientations)} plane orientations in one series: "
                            + ("one view whose slices are not parallel (see the view)"
                               if any(n.startswith(NOT_PARALLEL) for n in e.geometry_notes) else
                               "LGE images of several views (long-axis 2/3/4-chamber slices sent together)")
                            + ", not a localizer")
        evidence.append(f"{e.phases} image(s) per slice position")
        evidence += set_aside_map_names(e)
        return Recognition("lge", min(points, 98) / 100, evidence)


#: a contrast phase named beside 'T1' ('SAX_T1_post', 'T1 native', 'pre_T1'): the name of a T1 map of that phase.
#: 'post' alone says nothing against LGE (every LGE is post-contrast: 'SAX post 15min' may be one)
CONTRAST_PHASE_WORDS = (W + "post", W + "pre" + E, W + r"nati(?:ve|v|f)" + E, W + "nat" + E)


def evidence_against_lge(e: SeriesEvidence, hint: str | None = None) -> tuple[int, list[str]]:
    """(points, evidence) against LGE for an inversion-recovery series of one image per slice position, integers:
    an InversionTime outside the myocardial nulling range (30: 120-600 ms; LGE is read at 200-450 ms, a map copying
    its MOLLI source header keeps the first TI, ~100 ms), and, where no LGE name is written, 'T1' as a word of the
    description (10; 20 beside a contrast phase word: 'SAX_T1_post', 'T1 native')."""
    points, evidence = 0, []
    inversion = [t for t in e.inversion_times if t > 0]
    if inversion:
        median = float(np.median(inversion))
        if not LGE_TI_RANGE[0] <= median <= LGE_TI_RANGE[1]:
            points += 30
            evidence.append(f"against LGE: InversionTime {median:.0f} ms, outside the myocardial nulling range "
                            f"({LGE_TI_RANGE[0]:.0f}-{LGE_TI_RANGE[1]:.0f} ms; an LGE is read at 200-450 ms)"
                            + (": the first inversion time of T1-mapping source images, which a map made from them "
                               "keeps" if median < LGE_TI_RANGE[0] else ""))
    if not hint:
        text = NOT_TISSUE_MAPS.sub(" ", e.text_hints())
        t1 = _has_hint(text, (W + "t1" + E,))
        if t1:
            phase = _has_hint(text, CONTRAST_PHASE_WORDS)
            points += 20 if phase else 10
            evidence.append(f"against LGE: the description names {t1.upper()!r}"
                            + (f" beside {phase!r} (a native / post-contrast T1 map's name)" if phase else "")
                            + " and no LGE")
    return points, evidence


def not_lge(e: SeriesEvidence, evidence: list[str], points: int, against: int) -> Recognition:
    """'other' for an inversion-recovery (or LGE-named) series that the evidence against LGE leaves under LGE_POINTS:
    said, so that the LGE decline can name it, and confident enough (at least LGE_POINTS) that a learned
    recognizer's weaker LGE answer does not take it for LGE either."""
    said = (f"not LGE: {points + against} points for LGE less {against} against leave {points}, under the "
            f"{LGE_POINTS} an LGE needs; an inversion-recovery series that is no LGE (a T1 map keeping its source "
            "images' header?): nothing is measured on it")
    return Recognition("other", min(max(against, LGE_POINTS), 90) / 100, [said] + evidence)


def weak_lge_evidence(e: SeriesEvidence) -> str | None:
    """The stack warning for an LGE series recognised on one kind of evidence alone (an inversion preparation, an
    InversionTime in the nulling range, a PSIR reconstruction, an LGE name; or none, where a learned recognizer
    decided): two of them make an LGE, one may be a map or another inversion-recovery series; two with evidence
    against LGE (evidence_against_lge) are weak too, except an inversion preparation with an InversionTime in the
    nulling range, which a 'T1' in the name does not weaken; an unnamed, non-PSIR LGE with a bare 'T1' / 'T2'
    ImageType value (bare_parameter_token) or ImageComments declaring a map is weak whatever its header; None
    otherwise."""
    inversion = [t for t in e.inversion_times if t > 0]
    psir, _ = _reconstruction_markers(e)
    hint = _lge_hint(e)
    kinds = {"inversion preparation": _inversion_prepared(e),
             "InversionTime in the nulling range": (f"InversionTime {np.median(inversion):.0f} ms" if inversion and
                                                    LGE_TI_RANGE[0] <= np.median(inversion) <= LGE_TI_RANGE[1]
                                                    else None),
             "phase-sensitive (PSIR) reconstruction": f"ImageType {psir!r}" if psir else None,
             "LGE name": f"description {hint!r}" if hint else None}
    found = [why for why in kinds.values() if why]
    comment = _comment_map_words(e)
    if comment and not comment[2] and not hint and not psir:
        # a comment declaring a map ('T1 Map') on an LGE-like header: the header decides (comment_not_taken), but a
        # renamed map keeping its source's header reads the same, so the reader is told to check
        return (f"weak LGE evidence: {comment[1]}, while the acquisition header reads as an LGE "
                f"({', '.join(found)}): free text does not outvote the header, but a renamed T1 map keeping its "
                "source images' header reads the same: check that this series is an LGE")
    token = bare_parameter_token(e)
    if token and not hint and not psir:
        # a bare 'T1' in ImageType: a calculated T1 image as some exports write it, or only the weighting; the
        # acquisition header outweighs it (calculated_map), but a map keeping its source's header reads the same
        return (f"weak LGE evidence: ImageType value {token!r} may mark a calculated {token} image, while the "
                f"acquisition header reads as an LGE ({', '.join(found) or 'no header evidence'}): the header "
                f"outweighs a bare {token!r}, but a {token} map keeping its source images' header reads the same: "
                "check that this series is an LGE")
    against, against_evidence = evidence_against_lge(e, hint)
    if len(found) >= 2 and not against:
        return None
    if kinds["inversion preparation"] and kinds["InversionTime in the nulling range"]:
        # an IR preparation and an LGE inversion time are two kinds of evidence; 'T1' in the name ('SAX_T1_IR',
        # 'T1_SAX_post_10min') is what an LGE's IR-prepared T1-weighted images are often called (rebreak-maps 5)
        return None
    missing = [name for name, why in kinds.items() if not why]
    if len(found) >= 2:
        said = f"recognised as LGE on {', '.join(found)}, although " + "; ".join(
            text.removeprefix("against LGE: ") for text in against_evidence)
    else:
        said = (f"recognised as LGE on {found[0] if found else 'no header evidence'} alone (no {', no '.join(missing)})"
                + ("; and " + "; ".join(text.removeprefix("against LGE: ") for text in against_evidence)
                   if against else ""))
    return (f"weak LGE evidence: {said}; a T1 map or another inversion-recovery series keeping its source header "
            "reads the same: check that this series is an LGE")


def lge_identity(e: SeriesEvidence) -> str | None:
    """What says an LGE series is an LGE beyond its inversion-recovery header, which a T1 map keeping its source
    images' header also carries: an LGE name in its own SeriesDescription / SequenceName (not the ProtocolName,
    which may be the exam's), a phase-sensitive reconstruction (ImageType or signed values: no map is one); None
    otherwise. The study prefers such an LGE over a later repeat without it (study._lge_strength)."""
    text = e.series_hints()
    hint = _has_hint(text, LGE_HINTS)
    if hint is None and not _has_hint(text, NOT_LGE_CONTEXT):
        hint = _has_hint(text, GENERIC_LGE_HINTS)
    if hint:
        return f"named {hint!r} in its SeriesDescription"
    psir = _reconstruction_markers(e)[0]
    if psir:
        return f"phase-sensitive ImageType {psir!r}"
    signed = signed_values(e)
    return f"signed (phase-sensitive) values: {signed}" if signed else None


class PerfusionRule:
    """First-pass perfusion: 20 or more dynamics per slice position at a TriggerTime (0018,1060) that stays within
    60 ms at each slice (the slices' own saturation delays may differ), acquired over more than a breath-hold; or a
    'perf' / 'first pass' name with 10 or more images per slice. Recognised, never measured (declined as such:
    analysis.phase_text.maps_not_measured)."""

    name, aspect = "perfusion-rule", "sequence"

    def recognize(self, e: SeriesEvidence, context: StudyContext) -> Recognition | None:
        hint = _has_hint(e.text_hints(), (r"perf", r"first[ _-]?pass"))
        # within one slice position: a multi-slice perfusion gives each slice its own saturation delay, one per
        # heartbeat, so TriggerTime differs between slices and stays put at each
        trigger = e.within_slice.get("trigger")
        spread = (trigger.span if trigger is not None and trigger.count
                  else (max(e.trigger_times) - min(e.trigger_times)) if e.trigger_times else 0.0)
        # each slice's dynamics follow the contrast over many heartbeats; a cine slice is one breath-hold
        span = e.slice_acquisition_span_s if e.slice_acquisition_span_s is not None else e.acquisition_span_s
        dynamic = e.phases >= 20 and spread < 60 and (span or 0) > BREATH_HOLD_S
        if dynamic:
            evidence = [f"{e.phases} dynamics per slice at a near-constant trigger delay at each slice (spread "
                        f"{spread:.0f} ms)",
                        f"acquisition spans {span:.0f} s" + (" at one slice position"
                                                              if e.slice_acquisition_span_s is not None else "")]
            if hint:
                evidence.append(f"description hint {hint!r}")
            return Recognition("perfusion", 0.9 if hint else 0.75, evidence)
        if hint and e.phases >= 10:
            return Recognition("perfusion", 0.5, [f"description hint {hint!r}", f"{e.phases} images per slice"])
        return None


def _ssfp(e: SeriesEvidence) -> bool:
    """A balanced SSFP readout: ScanningSequence GR with SequenceVariant SS, or an SSFP sequence name."""
    name = e.sequence_name.lower()
    return ("GR" in e.scanning_sequence and "SS" in e.sequence_variant) or any(h in name for h in SSFP_NAME_HINTS)


class CineRule:
    name, aspect = "cine-rule", "sequence"

    def recognize(self, e: SeriesEvidence, context: StudyContext) -> Recognition | None:
        if not e.single_orientation:
            return None
        if mapping_recognition(e) is not None:
            return None  # MOLLI / ShMOLLI / SASHA / T2-prepared source images are no cardiac phases
        if ti_scout(e)[0] >= TI_SCOUT_POINTS:
            return None  # images after an inversion at increasing delays (TIScoutRule), not cardiac phases
        if e.varies("trigger").span > MAX_RR_MS:
            return None  # the images of one slice position span more than any heartbeat: not one cardiac cycle
        spread = (max(e.trigger_times) - min(e.trigger_times)) if e.trigger_times else 0.0
        declared = e.cardiac_number_of_images or 0
        evidence = []
        if e.phases >= 5 and len(e.trigger_times) >= 5 and spread >= 150:
            confidence = 0.7
            evidence.append(f"{e.phases} phases per slice, TriggerTime spans {spread:.0f} ms")
        elif e.phases >= 2 and declared >= 5 and len(e.trigger_times) >= 2:
            confidence = 0.55
            evidence.append(f"{e.phases} of {declared} cardiac phases present (CardiacNumberOfImages)")
        elif e.phases == 2 and declared < 5 and len(e.trigger_times) == 2 and spread >= 150 \
                and not any(t > 0 for t in e.inversion_times):
            confidence = 0.5  # a cine reduced to its end-diastolic and end-systolic phases
            said = f"CardiacNumberOfImages={declared}" if declared else "no CardiacNumberOfImages"
            evidence.append(f"only 2 phases per slice ({said}), TriggerTime {e.trigger_times[0]:.0f} and "
                            f"{e.trigger_times[1]:.0f} ms: ED and ES phases only")
        elif e.phases >= 5 and not e.trigger_times and e.slice_acquisition_span_s is not None \
                and e.slice_acquisition_span_s <= BREATH_HOLD_S and not any(t > 0 for t in e.inversion_times) \
                and (declared >= 5 or _ssfp(e)):
            confidence = 0.5  # phases in InstanceNumber / TemporalPositionIdentifier order
            evidence.append(f"{e.phases} images per slice acquired within {e.slice_acquisition_span_s:.0f} s at each "
                            "slice (one breath-hold, not dynamics), no usable TriggerTime")
        else:
            return _untimed_cine(e)
        if declared > 1:
            evidence.append(f"CardiacNumberOfImages={declared}")
            confidence += 0.05
        evidence += e.timing_notes
        name = e.sequence_name.lower()
        ssfp_hint = next((h for h in SSFP_NAME_HINTS if h in name), None)
        if ("GR" in e.scanning_sequence and "SS" in e.sequence_variant) or ssfp_hint:
            evidence.append("SSFP: " + (f"SequenceName contains {ssfp_hint!r}" if ssfp_hint
                                        else "ScanningSequence GR with SequenceVariant SS"))
            confidence += 0.2
        if "IR" in e.scanning_sequence:
            evidence.append("ScanningSequence contains IR (unusual for cine)")
            confidence -= 0.2
        if _has_hint(e.text_hints(), (r"cine", r"sax", r"ssfp", r"fiesta", r"trufi")):
            evidence.append("description hint")
            confidence += 0.05
        evidence += set_aside_map_names(e)
        return Recognition("cine", min(confidence, 0.97), evidence)


#: the start of the evidence of a series that looks like a cine but cannot be one for want of timing
#: (`_untimed_cine`): the cine decline names it (analysis.phase_text.untimed_cine_text)
UNTIMED_CINE = "looks like a cine but has no cardiac timing"


def _untimed_cine(e: SeriesEvidence) -> Recognition | None:
    """'other' (confidence 0.05, below any rule's answer) with the reason, for a series that says it is a cine
    (ImageType CINE, CardiacNumberOfImages >= 5 or a cine description) of 2-4 images per slice without distinct
    TriggerTime / NominalCardiacTriggerDelayTime: ED and ES cannot be told apart in it; None for any other series."""
    if not 2 <= e.phases < 5 or e.trigger_times or any(t > 0 for t in e.inversion_times):
        return None
    said = []
    if any("CINE" == token.upper() for token in e.image_type):
        said.append("ImageType CINE")
    if (e.cardiac_number_of_images or 0) >= 5:
        said.append(f"CardiacNumberOfImages={e.cardiac_number_of_images}")
    hint = _has_hint(e.text_hints(), (r"cine", r"ssfp", r"fiesta", r"trufi", r"bffe"))
    if hint:
        said.append(f"description hint {hint!r}")
    if not said:
        return None
    return Recognition("other", 0.05, [
        f"{UNTIMED_CINE} ({', '.join(said)}): {e.phases} images per slice and no TriggerTime (0018,1060) or "
        "NominalCardiacTriggerDelayTime (0020,9153) that tell them apart, so which is end-diastole and which "
        "end-systole cannot be known; the node needs TriggerTime on each image (an ED/ES export with its trigger "
        "times, or the whole cine: 5 or more phases per slice are ordered without them)"])


class T2WeightedRule:
    """T2-weighted stacks (t2_weighting: spin-echo readout, long TE, STIR / double-inversion TIs, T2w names)."""

    name, aspect = "t2w-rule", "sequence"

    def recognize(self, e: SeriesEvidence, context: StudyContext) -> Recognition | None:
        if mapping_recognition(e) is not None or e.phases > 1:
            return None  # a T2 / T2* map is no T2-weighted image
        points, evidence = t2_weighting(e)
        if points < T2W_POINTS:
            return None
        return Recognition("t2w", min(points, 95) / 100, evidence)


# ---------------------------------------------------------------- view rules
#: description forms of each view (normalised; W/E word edges: 'LGE_SAX', 'sa_lge', 'SA1' match), with the German
#: (Kammer, Kurzachse), French (cavités, petit axe), Spanish / Italian (eje / asse corto), Dutch (korte as),
#: Japanese (2腔像 / 二腔像 ... 4腔像, 短軸) and Chinese (两腔心 / 二腔心 ... 四腔心, 短轴) names
VIEW_HINTS = {
    "2ch": (r"2[ _-]?ch", r"2[ _-]?cv", W + "vla" + E, r"two[ _-]?chamber", r"2[ _-]?kammer", r"2[ _-]?cav",
            r"(?:2|二|两|兩)[ _-]?腔"),
    "3ch": (r"3[ _-]?ch", r"3[ _-]?cv", r"three[ _-]?chamber", r"3[ _-]?kammer", r"3[ _-]?cav", r"(?:3|三)[ _-]?腔"),
    "4ch": (r"4[ _-]?ch", r"4[ _-]?cv", W + "hla" + E, r"four[ _-]?chamber", r"4[ _-]?kammer", r"4[ _-]?cav",
            r"(?:4|四)[ _-]?腔"),
    "lvot": (r"lvot",),
    "sax": (W + "sax" + E, r"short[ _-]?axis", W + "sa" + E, r"kurz[ _-]?achse", r"petit[ _-]?axe",
            r"(?:eje|asse)[ _-]?corto", r"korte[ _-]?as" + E, r"短[ _-]?(?:軸|轴)"),
}


def _view_hint(e: SeriesEvidence) -> tuple[str, str] | None:
    text = e.text_hints()
    for view, patterns in VIEW_HINTS.items():
        hint = _has_hint(text, patterns)
        if hint:
            return view, hint
    return None


class StackViewRule:
    """Short axis: a parallel stack whose normal is oblique to the body axes and close to the LV long axis."""

    name, aspect = "stack-view-rule", "view"

    def recognize(self, e: SeriesEvidence, context: StudyContext) -> Recognition | None:
        if not e.single_orientation:
            return Recognition("other", 0.9, [f"{len(e.orientations)} orientations ({', '.join(e.planes)}): not one view"]
                               + e.geometry_notes)
        if e.geometry_notes:
            return Recognition("other", 0.9, e.geometry_notes)
        if e.slices < 2:
            return None
        oblique = _oblique_degrees(e.normal)
        long_axis = _long_axis_angle(e.normal)
        evidence = [f"stack of {e.slices} parallel slices", f"normal {oblique:.0f} deg from the nearest body axis",
                    f"normal {long_axis:.0f} deg from the typical LV long axis"] + e.tilted_notes
        if e.slices == 2:
            evidence.append("only 2 slices: a short stack, confidence lowered")
        hint = _view_hint(e)
        if oblique < 15:
            evidence.append(f"plane is {e.planes[0]}, not a cardiac view")
            return Recognition("other", 0.6, evidence)
        if long_axis > 45:
            if hint and hint[0] == "sax":
                evidence.append(f"description hint {hint[1]!r}")
                return Recognition("sax", 0.45, evidence)
            return Recognition("other", 0.4, evidence)
        confidence = (0.75 if e.slices >= 3 else 0.6) + (0.1 if long_axis < 30 else 0.0) + (0.05 if e.slices >= 6 else 0.0)
        crossing = [s for s in context.series if s is not e and s.single_orientation and s.slices <= 3
                    and _angle_between(s.normal, e.normal) > 60
                    and _plane_distance(s, e.centre) < 30]
        if crossing:
            evidence.append(f"{len(crossing)} long-axis plane(s) cross the stack within 30 mm of its centre")
            confidence += 0.05
        if hint and hint[0] == "sax":
            evidence.append(f"description hint {hint[1]!r}")
            confidence += 0.03
        return Recognition("sax", min(confidence, 0.98), evidence)


def _angle_between(a: np.ndarray, b: np.ndarray) -> float:
    cos = abs(np.dot(a, b)) / (np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.degrees(np.arccos(np.clip(cos, 0, 1))))


def _plane_distance(plane: SeriesEvidence, point: np.ndarray) -> float:
    normal = plane.normal / np.linalg.norm(plane.normal)
    return float(abs(np.dot(point - plane.frames[0].position, normal)))


class LongAxisViewRule:
    """2ch / 3ch / 4ch from how a single plane cuts the short-axis stack (or the typical long axis when none)."""

    name, aspect = "long-axis-view-rule", "view"

    def recognize(self, e: SeriesEvidence, context: StudyContext) -> Recognition | None:
        if not e.single_orientation or e.slices > 3:
            return None
        stacks = context.sax_stacks()
        axis = stacks[0].normal / np.linalg.norm(stacks[0].normal) if stacks else CANONICAL_LONG_AXIS
        source = f"short-axis stack {stacks[0].key}" if stacks else "the typical LV long axis (no SAX stack)"
        normal = e.normal / np.linalg.norm(e.normal)
        tilt = 90 - _angle_between(normal, axis)
        hint = _view_hint(e)
        evidence = [f"plane contains {source} within {tilt:.0f} deg"]
        if tilt > 25:
            if hint and hint[0] != "sax":
                return Recognition(hint[0], 0.4, [f"description hint {hint[1]!r}", f"plane is {tilt:.0f} deg off the long axis"])
            return None
        # angle of the plane normal around the long axis, measured from the vertical long-axis (2ch) normal
        axial = np.array([axis[0], axis[1], 0.0])
        reference_2ch = np.cross([0.0, 0.0, 1.0], axial / (np.linalg.norm(axial) or 1.0))
        reference_2ch -= axis * np.dot(reference_2ch, axis)
        reference_2ch /= np.linalg.norm(reference_2ch) or 1.0
        in_plane = normal - axis * np.dot(normal, axis)
        in_plane /= np.linalg.norm(in_plane) or 1.0
        rotation = float(np.degrees(np.arccos(np.clip(abs(np.dot(in_plane, reference_2ch)), 0, 1))))
        evidence.append(f"plane rotated {rotation:.0f} deg about the long axis from the vertical long-axis plane")
        if rotation < 25:
            view, confidence = "2ch", 0.55
        elif rotation > 65:
            view, confidence = "4ch", 0.55
        else:
            view, confidence = "3ch", 0.4
        if stacks:
            distance = _plane_distance(e, stacks[0].centre)
            evidence.append(f"plane passes {distance:.0f} mm from the SAX stack centre")
            confidence += 0.1 if distance < 30 else -0.1
        if hint:
            evidence.append(f"description hint {hint[1]!r}")
            if hint[0] == view:
                confidence += 0.25
            elif hint[0] in ("2ch", "3ch", "4ch", "lvot"):
                evidence.append(f"the description says {hint[0]}, the plane's geometry {view}: the description is "
                                "taken (check the view)")
                view, confidence = hint[0], 0.5
        return Recognition(view, min(confidence, 0.95), evidence)


def default_registry() -> RecognizerRegistry:
    """The rule recognizers shipped with the node; register a learned recognizer on top to outvote them."""
    registry = RecognizerRegistry()
    for recognizer in (LocalizerRule(), MappingRule(), LGERule(), PerfusionRule(), CineRule(), T2WeightedRule(),
                       TIScoutRule(), StackViewRule(), LongAxisViewRule()):
        registry.register(recognizer)
    return registry
