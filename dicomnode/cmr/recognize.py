"""Sequence and view recognition: rule recognizers behind a `Recognizer` protocol and registry (a learned model can join)."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from dicomnode.cmr.frames import (FrameInfo, header_value, images_per_slice, orientation_groups, plane_name,
                                  slice_groups, timing_trigger_times)
from dicomnode.cmr.types import Recognition

log = logging.getLogger("dicomnode.cmr")

#: typical direction of the LV long axis (base -> apex) in patient LPS: to the left, anterior, inferior
CANONICAL_LONG_AXIS = np.array([0.61, -0.51, -0.61]) / np.linalg.norm([0.61, -0.51, -0.61])

SSFP_NAME_HINTS = ("tfi", "trufi", "fiesta", "b-tfe", "btfe", "bssfp", "ssfp", "balanced")
PSIR_TOKENS = {"PSIR", "PHASE SENSITIVE", "REAL", "R"}
MAGNITUDE_TOKENS = {"M", "MAG", "MAGNITUDE"}


def _upper_tokens(value) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [part.strip().upper() for part in value.split("\\") if part.strip()]
    return [str(part).strip().upper() for part in value if str(part).strip()]


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
        return f"{self.description} {self.protocol} {self.sequence_name}".lower()


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


#: TriggerTimes all below this (an RR interval under 5 ms is impossible) are seconds, not ms
MAX_RR_IN_SECONDS = 5.0
#: one breath-hold: a cine slice's phases are acquired within it; perfusion dynamics of one slice span the first pass
BREATH_HOLD_S = 20.0


def build_evidence(key: str, frames: list[FrameInfo]) -> SeriesEvidence:
    """Collect the evidence of one candidate series; frames must all have geometry."""
    ds = frames[0].header.dataset
    groups = orientation_groups(frames)
    orientations = [group[0].orientation for group in groups]
    phase_counts: list[int] = []
    for group in groups:
        phase_counts += images_per_slice([members for _, members in slice_groups(group)])
    trigger_times = timing_trigger_times(frames)
    timing_notes = []
    if not trigger_times and any(f.trigger_time is not None for f in frames):
        timing_notes.append(f"TriggerTime {frames[0].trigger_time:g} on every image carries no timing: taken as absent")
    elif len(trigger_times) >= 2 and max(trigger_times) < MAX_RR_IN_SECONDS:
        timing_notes.append(f"TriggerTime spans {min(trigger_times):g}-{max(trigger_times):g}: read as seconds")
        trigger_times = [t * 1000.0 for t in trigger_times]
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
    )


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


class RecognizerRegistry:
    """Recognizers per aspect; the answer with the highest confidence wins, ties to the earlier registered."""

    def __init__(self) -> None:
        self._recognizers: list[Recognizer] = []

    def register(self, recognizer: Recognizer) -> None:
        if recognizer.aspect not in ("sequence", "view"):
            raise ValueError(f"recognizer {recognizer.name!r} has aspect {recognizer.aspect!r}; expected sequence or view")
        self._recognizers.append(recognizer)

    def recognizers(self, aspect: str) -> list[Recognizer]:
        return [r for r in self._recognizers if r.aspect == aspect]

    def recognize(self, aspect: str, evidence: SeriesEvidence, context: StudyContext) -> Recognition:
        best: Recognition | None = None
        for recognizer in self.recognizers(aspect):
            answer = recognizer.recognize(evidence, context)
            if answer is None:
                continue
            answer.evidence = [f"[{recognizer.name}] {e}" for e in answer.evidence]
            if best is None or answer.confidence > best.confidence:
                best = answer
        if best is None:
            best = Recognition("other", 0.0, [f"no {aspect} rule matched ({_describe(evidence)})"])
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


def _has_hint(text: str, patterns: tuple[str, ...]) -> str | None:
    for pattern in patterns:
        if re.search(pattern, text):
            return pattern
    return None


# ---------------------------------------------------------------- sequence rules
class LocalizerRule:
    name, aspect = "localizer-rule", "sequence"
    HINTS = (r"scout", r"locali[sz]", r"\bloc\b", r"survey", r"tri-?pilot", r"3-?plane", r"pilot")

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
            return Recognition("localizer", min(confidence, 0.99), evidence)
        if hint and e.phases <= 1 and e.slices <= 5:
            return Recognition("localizer", 0.5, [f"SeriesDescription/protocol hint {hint!r}",
                                                  f"{e.slices} slice(s), single phase"])
        return None


class MappingRule:
    name, aspect = "mapping-rule", "sequence"

    def recognize(self, e: SeriesEvidence, context: StudyContext) -> Recognition | None:
        tokens = " ".join(e.image_type)
        text = e.text_hints()
        for value, markers, hints in (
            ("t1map", ("T1 MAP", "T1MAP", "T1_MAP"), (r"molli", r"shmolli", r"t1[ _-]?map", r"sasha")),
            ("t2map", ("T2 MAP", "T2MAP", "T2_MAP"), (r"t2[ _-]?map",)),
        ):
            marker = next((m for m in markers if m in tokens), None)
            hint = _has_hint(text, hints)
            if marker:
                evidence = [f"ImageType contains {marker!r}"] + ([f"description hint {hint!r}"] if hint else [])
                return Recognition(value, 0.9 if hint else 0.85, evidence)
            if hint and ("MAP" in e.image_type or "DERIVED" in e.image_type) and e.phases <= 1:
                return Recognition(value, 0.6, [f"description hint {hint!r}", "derived single-phase images"])
            if hint:
                return Recognition(value, 0.4, [f"description hint {hint!r} only"])
        return None


def lge_kind(e: SeriesEvidence) -> Recognition:
    """psir or magnitude for an LGE series, from ImageType tokens (PSIR/REAL markers) and the description."""
    marker = next((t for t in e.image_type if t in PSIR_TOKENS), None)
    if marker:
        return Recognition("psir", 0.9, [f"ImageType contains {marker!r}"])
    if "psir" in e.text_hints():
        return Recognition("psir", 0.6, ["description contains 'psir'"])
    marker = next((t for t in e.image_type if t in MAGNITUDE_TOKENS), None)
    if marker:
        return Recognition("magnitude", 0.9, [f"ImageType contains {marker!r}"])
    return Recognition("magnitude", 0.6, ["no phase-sensitive marker in ImageType"])


class LGERule:
    name, aspect = "lge-rule", "sequence"
    HINTS = (r"\blge\b", r"\bde\b", r"delayed", r"late", r"psir", r"viab", r"\bmde\b", r"\bpsir\b")

    def recognize(self, e: SeriesEvidence, context: StudyContext) -> Recognition | None:
        inversion = [t for t in e.inversion_times if t > 0]
        ir = "IR" in e.scanning_sequence
        in_range = bool(inversion) and 120 <= float(np.median(inversion)) <= 600
        constant_ti = bool(inversion) and (max(inversion) - min(inversion)) <= 60
        cine_like = len(e.trigger_times) >= 5
        hint = _has_hint(e.text_hints(), self.HINTS)
        if cine_like or (inversion and not constant_ti) or any("MAP" in t for t in e.image_type):
            return None
        evidence = []
        confidence = 0.0
        if ir:
            evidence.append("ScanningSequence contains IR")
            confidence += 0.45
        if in_range:
            evidence.append(f"InversionTime {np.median(inversion):.0f} ms (nulling range 120-600)")
            confidence += 0.35
        if "GR" in e.scanning_sequence and confidence > 0:
            evidence.append("gradient echo readout")
            confidence += 0.05
        if any(t in PSIR_TOKENS for t in e.image_type):
            evidence.append("phase-sensitive (PSIR) ImageType")
            confidence += 0.1
        if hint:
            evidence.append(f"description hint {hint!r}")
            confidence += 0.1 if confidence > 0 else 0.4
        if confidence < 0.4:
            return None
        evidence.append(f"{e.phases} image(s) per slice position")
        return Recognition("lge", min(confidence, 0.98), evidence)


class PerfusionRule:
    name, aspect = "perfusion-rule", "sequence"

    def recognize(self, e: SeriesEvidence, context: StudyContext) -> Recognition | None:
        hint = _has_hint(e.text_hints(), (r"perf", r"first[ _-]?pass"))
        spread = (max(e.trigger_times) - min(e.trigger_times)) if e.trigger_times else 0.0
        # each slice's dynamics follow the contrast over many heartbeats; a cine slice is one breath-hold
        span = e.slice_acquisition_span_s if e.slice_acquisition_span_s is not None else e.acquisition_span_s
        dynamic = e.phases >= 20 and spread < 60 and (span or 0) > BREATH_HOLD_S
        if dynamic:
            evidence = [f"{e.phases} dynamics per slice at near-constant trigger delay (spread {spread:.0f} ms)",
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
            return None
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
        return Recognition("cine", min(confidence, 0.97), evidence)


class T2WeightedRule:
    name, aspect = "t2w-rule", "sequence"

    def recognize(self, e: SeriesEvidence, context: StudyContext) -> Recognition | None:
        hint = _has_hint(e.text_hints(), (r"t2w", r"\bt2\b", r"stir", r"tirm", r"haste", r"\btse\b", r"black[ _-]?blood"))
        spin_echo = "SE" in e.scanning_sequence and "GR" not in e.scanning_sequence
        long_te = e.echo_time is not None and e.echo_time >= 40
        if spin_echo and long_te and e.phases <= 1:
            evidence = ["spin echo readout", f"EchoTime {e.echo_time:.0f} ms (T2 weighting)"]
            if hint:
                evidence.append(f"description hint {hint!r}")
            return Recognition("t2w", 0.8 if hint else 0.7, evidence)
        if hint and long_te and e.phases <= 1:
            return Recognition("t2w", 0.5, [f"description hint {hint!r}", f"EchoTime {e.echo_time:.0f} ms"])
        return None


# ---------------------------------------------------------------- view rules
VIEW_HINTS = {
    "2ch": (r"2[ _-]?ch", r"2[ _-]?cv", r"\bvla\b", r"two[ _-]?chamber"),
    "3ch": (r"3[ _-]?ch", r"3[ _-]?cv", r"three[ _-]?chamber"),
    "4ch": (r"4[ _-]?ch", r"4[ _-]?cv", r"\bhla\b", r"four[ _-]?chamber"),
    "lvot": (r"lvot",),
    "sax": (r"\bsax\b", r"short[ _-]?axis", r"\bsa\b", r"\bsa[ _-]", r"_sa\b"),
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
            return Recognition("other", 0.9, [f"{len(e.orientations)} orientations ({', '.join(e.planes)}): not one view"])
        if e.slices < 2:
            return None
        oblique = _oblique_degrees(e.normal)
        long_axis = _long_axis_angle(e.normal)
        evidence = [f"stack of {e.slices} parallel slices", f"normal {oblique:.0f} deg from the nearest body axis",
                    f"normal {long_axis:.0f} deg from the typical LV long axis"]
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
                view, confidence = hint[0], 0.5
        return Recognition(view, min(confidence, 0.95), evidence)


def default_registry() -> RecognizerRegistry:
    """The rule recognizers shipped with the node; register a learned recognizer on top to outvote them."""
    registry = RecognizerRegistry()
    for recognizer in (LocalizerRule(), MappingRule(), LGERule(), PerfusionRule(), CineRule(), T2WeightedRule(),
                       StackViewRule(), LongAxisViewRule()):
        registry.register(recognizer)
    return registry
