"""Comprehensive 3D SR (TID 1500) of the LGE and cine numbers, and a separate SR for report-text suggestions."""
from __future__ import annotations

import copy
import datetime as dt
import math
import re
import uuid
from typing import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import Comprehensive3DSRStorage, SegmentationStorage

from dicomnode.analysis import phase_text
from dicomnode.analysis.lge_metrics import INDETERMINATE, presence_text
from dicomnode.analysis.aha import (MIDLINE_CAVEAT, MIRRORED_CAVEAT, UNUSUAL_TURN_START, aha_segments,
                                    stack_geometry)
from dicomnode.analysis.cine_metrics import (BASE_UNCONFIRMED_START, COVERAGE_FLAG_START, MIN_PHASES_FOR_CURVE,
                                             NORMAL_VALUES, RV_ACCURACY_START, base_unconfirmed_only,
                                             body_surface_area_m2, is_range_flag, reading_caveats)
from dicomnode.analysis.lge import (CHILD_BURDEN_START, CHILD_LGE_NOTE_START, DARK_BLOOD_NOTE,
                                    NOT_LGE_CONTRAST_NOTE, SMALL_FIELD_NOTE_START, UNRELIABLE_SEG_NOTE,
                                    mvo_validation_text)
from dicomnode.analysis.pipeline import AlgorithmInfo, PipelineResult, SegmentationResult
from dicomnode.analysis.threshold_text import (agreement_r, burden_rule_source, is_chan_rule, method_name,
                                               threshold_caveat_lines, threshold_method_lines, unvalidated_caveat,
                                               withheld_not_validated)
from dicomnode.analysis.wall_thickness import WALL_THICKNESS_START
from dicomnode.cmr.age import patient_age
from dicomnode.labels import ENHANCED_LABELS, MYOCARDIUM_LABELS, Label
from dicomnode.results import codes
from dicomnode.results.headers import fit_character_set, own_header
from dicomnode.results.provenance import (NODE_MANUFACTURER, NODE_MODEL_NAME, apply_provenance, node_version,
                                          supersede_text)
from dicomnode.results.regions import (image_regions, non_square_aspect, non_square_note, outlines,
                                       slice_regions)
from dicomnode.results.seg import SEGMENT_KINDS, segment_plan
from dicomnode.rounding import stored_value
from dicomnode.uids import new_uid


def bsa_for(cine: PipelineResult, header: Dataset, default_formula: str) -> tuple[float, str] | None:
    """(BSA m², formula) from the cine result (bsa_m2, bsa_formula) or PatientSize/PatientWeight; None if unknown."""
    formula = str(cine.measurements.get("bsa_formula", default_formula)).lower()
    if cine.measurements.get("bsa_m2"):
        return float(cine.measurements["bsa_m2"]), formula
    try:
        return body_surface_area_m2(float(header.PatientSize), float(header.PatientWeight), formula), formula
    except (AttributeError, TypeError, ValueError):
        return None


def _number(block: dict, key: str) -> float | None:
    value = block.get(key) if isinstance(block, dict) else None
    if value is None or isinstance(value, bool):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


#: decimals of a NUM by its unit, as summary.json keeps the same kind of quantity (volumes, masses, percentages,
#: indexed values, thicknesses: 2; body surface area: 3)
UNIT_DECIMALS = {codes.UNIT_M2.value: 3}
#: the meaning of (121232, DCM) in TID 1411, "Source series for segmentation" (PS3.16), which highdicom writes
#: capitalised ("Source Series for Segmentation") and pixelmed's DicomSRValidator then warns of
SOURCE_SERIES_MEANING = "Source series for segmentation"
DEFAULT_DECIMALS = 2


#: NUM concepts whose values are whole numbers (an ordinal phase number, a count of phases): their Numeric Value
#: (DS, PS3.5 6.2: an integer is a valid decimal string) is written as an integer ("20", not "20.0")
INTEGER_CONCEPTS = {(code.value, code.scheme_designator) for code in (
    codes.PHASE_NUMBER, codes.PARTIAL_CYCLE, codes.AHA_MIRRORED, codes.AHA_MIDLINE, codes.AHA_UNUSUAL_TURN,
    codes.SUPERSEDES_SR, codes.SUPERSEDES_COUNT, codes.NOT_ANALYSED, codes.RV_EDV_OTHER_PHASE,
    codes.RV_ESV_OTHER_PHASE, codes.AHA_NO_SCAR)}


def _decimals(unit: Code) -> int:
    return UNIT_DECIMALS.get(unit.value, DEFAULT_DECIMALS)


def _measurement(name: Code, value: float | None, unit: Code, **kwargs) -> list[hd.sr.Measurement]:
    """A TID 300 measurement, or nothing when the value is absent; rounded as summary.json rounds the same kind of
    quantity (_decimals; rounding.stored_value: more decimals where those would read otherwise than the value, as
    summary.json), derived values (non-enhanced myocardium, scar without MVO, volume from mass) included. A concept
    of INTEGER_CONCEPTS with a whole value is written as an integer. Raises ValueError for a fractional value of
    such a concept (a phase number of 2.5 is a caller's error)."""
    if value is None:
        return []
    if (name.value, name.scheme_designator) in INTEGER_CONCEPTS:
        if not float(value).is_integer():
            raise ValueError(f"{name.meaning} must be a whole number, got {value}")
        measurement = hd.sr.Measurement(name=name, value=float(value), unit=unit, **kwargs)
        measurement[0].MeasuredValueSequence[0].NumericValue = str(int(value))
        return [measurement]
    digits = _decimals(unit)
    return [hd.sr.Measurement(name=name, value=stored_value(value, digits, digits - 1), unit=unit, **kwargs)]


def _algorithm_id(algorithm: AlgorithmInfo, parameters: Sequence[str] | None = None) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(name=algorithm.name[:64], version=algorithm.version[:64],
                                         parameters=list(parameters) if parameters else None)


class _SegmentIndex:
    """The SEG objects written for one SegmentationResult (one per part, see seg.seg_parts), looked up by segment kind
    and phase; outlines of its label map for the image regions OHIF draws.

    Which region a group names (PS3.16 TID 1411):
    - the measured region lies in one SEG: the group references that SEG's segment (row 7, 121191 "Referenced
      Segment", value multiplicity 1: one segment of one SEG instance) and is followed by an outline group with the
      same tracking UID (OHIF lists a measurement only where it finds image coordinates);
    - the region spans several SEG instances (a stack sent as one series per slice gets one SEG per slice series):
      no one segment is the measured region, and row 7 cannot name several, so the group's region is given by image
      regions instead (row 5, the outlines on every slice, each SELECTED FROM its own source image and so naming
      every source series); a reference to one part's segment would attach a stack-wide volume to one slice;
    - the region is empty (no scar, no MVO): no SEG segment or outline shows it, and a TID 1411 group needs a region,
      so the group's region is the region searched (the LV myocardium), its finding type is that region's, and the
      finding is coded as absent (qualitative evaluation <finding> = (272519000, SCT, "Absent"), CID 241); a
      viewer then draws no scar- or MVO-labelled contour around myocardium that is not enhanced.

    Where the groups are drawn (OHIF v3 draws one outline per tracking UID, the first SCOORD, with the group's
    numbers beside it): each group's drawn slice is where its region is largest, unless outlines of earlier groups
    of this result are already drawn there and another slice holds at least SPREAD_MIN_AREA of that area with fewer
    (pick_slice), so that the labels of groups sharing a region (LV blood pool ED, LV function) do not overlap. The
    further outlines of that slice (the endocardial contour of the myocardial ring, a second part) get groups of
    their own (contour_groups), as OHIF would not draw them.
    """

    #: a slice holding at least this share of the region's largest area may be drawn instead of the largest
    SPREAD_MIN_AREA = 0.5
    #: at most this many further outlines of the drawn slice get a display group of their own (contour_groups)
    MAX_CONTOUR_GROUPS = 4

    def __init__(self, result: SegmentationResult, segs):
        self.result = result
        self.segs = [(None, segs)] if isinstance(segs, Dataset) else list(segs)
        self.labelmap = np.asarray(result.labelmap)
        # (SOP Instance UID, frame number: None for a single-frame image) -> groups whose first outline is drawn on
        # it: the frames of a multi-frame instance are slices of their own
        self.drawn: dict[tuple[str, int | None], int] = {}

    def mask(self, labels: Sequence[int], phase_position: int = 0) -> np.ndarray:
        return np.isin(self.labelmap[phase_position], [int(v) for v in labels])

    def frames(self, phase_position: int = 0):
        return self.result.volume.frames[self.result.phases[phase_position]]

    def position(self, phase_index: int | None) -> int:
        """The position in result.phases of a phase index of the volume (0 for a single-phase result)."""
        if phase_index is None:
            return 0
        if int(phase_index) not in [int(p) for p in self.result.phases]:
            raise KeyError(f"phase index {phase_index} (0-based) not segmented by {self.result.pipeline}")
        return [int(p) for p in self.result.phases].index(int(phase_index))

    def holders(self, mask: np.ndarray, phase_position: int) -> list[tuple[object, Dataset]]:
        """The SEGs (with their parts) holding some slice of a non-empty mask of that phase."""
        slices = {int(k) for k in np.flatnonzero(mask.reshape(len(mask), -1).any(axis=1))}
        return [(part, seg) for part, seg in self.segs
                if part is None or (phase_position in part.phase_positions and slices & set(part.slices))]

    def segment_in(self, seg: Dataset, part, key: str, phase_position: int) -> tuple[int, str] | None:
        """(segment number, tracking UID) of kind `key` and that phase in one SEG, found by its Segment Label; None
        when that SEG does not declare it."""
        positions = part.phase_positions if part is not None else None
        labels = [s.label for s in segment_plan(self.result, positions)
                  if s.kind.key == key and s.phase_position == phase_position]
        for item in seg.SegmentSequence:
            if labels and str(item.SegmentLabel) == labels[0]:
                return int(item.SegmentNumber), str(item.get("TrackingUID", "")) or new_uid()
        return None

    def groups(self, key: str, phase_index: int | None, name: str, tracking_uid: str | None = None,
               absent_measurements=None, code_absent: bool = True, qualifier: str = "",
               absent_text: str = " (none found)", absent_phase_index: int | None = None, **kwargs) -> list:
        """The TID 1411 group(s) of one segment kind (and phase), the region named as the class docstring says:
        segment group + outline group, one group outlined on every slice, or the absent-finding group on the LV
        myocardium (with `absent_measurements` when given: concepts that name the missing finding; the finding coded
        absent unless `code_absent` is false: a finding whose absence the node may not state; `absent_text` after
        its name, " (none segmented)" for such a finding, as the PDF says it is not stated; `absent_phase_index`: the
        phase whose LV myocardium is that region where not `phase_index`'s, e.g. an RV of its own phase, whose map
        holds the RV alone). Raises KeyError for a phase the result did not segment. `qualifier`: said after the
        name of the group holding the measurements (tracking_text), e.g. " (lower bound: apex cut off)"."""
        position = self.position(phase_index)
        kind = SEGMENT_KINDS[key]
        mask = self.mask(kind.labels, position)
        finding_type, finding_sites = kwargs.get("finding_type"), kwargs.get("finding_sites")
        if not mask.any():
            qualitative = list(kwargs.get("qualitative_evaluations") or [])
            if finding_type is not None and code_absent:
                qualitative.insert(0, hd.sr.QualitativeEvaluation(finding_type, codes.ABSENT))
            return self.outline_group(
                MYOCARDIUM_LABELS, position if absent_phase_index is None else self.position(absent_phase_index),
                f"{name}{absent_text}", tracking_uid or new_uid(), suffix=qualifier,
                finding_type=codes.LV_MYOCARDIUM,
                finding_sites=finding_sites or [hd.sr.FindingSite(codes.LV_MYOCARDIUM)],
                measurements=absent_measurements if absent_measurements is not None else kwargs.get("measurements"),
                qualitative=qualitative, all_slices=True)
        holders = self.holders(mask, position)
        found = self.segment_in(holders[0][1], holders[0][0], key, position) if len(holders) == 1 else None
        if found is None:  # several SEG instances (or none declaring it): the outlines on every slice are the region
            return self.outline_group(
                mask, position, name, tracking_uid or new_uid(), finding_type=finding_type, suffix=qualifier,
                finding_sites=finding_sites, measurements=kwargs.get("measurements"),
                qualitative=kwargs.get("qualitative_evaluations"), all_slices=True)
        (_, seg), (number, segment_uid) = holders[0], found
        uid = tracking_uid or segment_uid
        series_uid = str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID)  # the images the SEG was made on
        source_series = hd.sr.SourceSeriesForSegmentation(series_uid)
        # TID 1411's concept name meaning, as pixelmed's DicomSRValidator compares it (break46a #9)
        source_series.ConceptNameCodeSequence[0].CodeMeaning = SOURCE_SERIES_MEANING
        reference = hd.sr.ReferencedSegment(
            sop_class_uid=SegmentationStorage, sop_instance_uid=str(seg.SOPInstanceUID), segment_number=number,
            source_series=source_series)
        groups = [hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=uid, identifier=tracking_text(name, qualifier)),
            referenced_segment=reference, algorithm_id=_algorithm_id(self.result.algorithm), **kwargs)]
        # OHIF merges groups by tracking UID and lists a measurement only where it finds image coordinates (TID 1411
        # allows a segment reference or image regions in one group, not both)
        return groups + self.outline_group(mask, position, name, uid, finding_type, finding_sites,
                                           suffix=" (outline)")

    def pick_slice(self, mask: np.ndarray, phase_position: int) -> int | None:
        """The slice whose outline a viewer drawing one region per group shows (the first SCOORD), counted as drawn:
        the largest area, or the slice with the fewest outlines of earlier groups drawn among those holding at least
        SPREAD_MIN_AREA of the largest area (ties: the larger area). None for an empty mask."""
        areas = np.asarray(mask, dtype=bool).reshape(len(mask), -1).sum(axis=1)
        if not areas.any():
            return None
        frames = self.frames(phase_position)
        candidates = [k for k in range(len(areas)) if areas[k] >= self.SPREAD_MIN_AREA * areas.max()]
        chosen = min(candidates, key=lambda k: (self.drawn.get(_image_of(frames[k]), 0), -int(areas[k]), k))
        self.drawn[_image_of(frames[chosen])] = self.drawn.get(_image_of(frames[chosen]), 0) + 1
        return chosen

    def outline_group(self, labels: Sequence[int] | np.ndarray, phase_position: int, name: str, uid: str,
                      finding_type=None, finding_sites=None, measurements=None, qualitative=None,
                      all_slices: bool = False, suffix: str = "") -> list:
        """A TID 1411 group whose region is given by image regions (outlines) of a mask, the drawn slice (pick_slice)
        first, followed by the display groups of that slice's further outlines (contour_groups); [] for an empty
        mask. Its tracking identifier is `name` with `suffix` (" (outline)", a lower-bound qualifier) said whole
        (tracking_text); the display groups' are `name` with their own suffix."""
        mask = labels if isinstance(labels, np.ndarray) and labels.dtype == bool else self.mask(labels, phase_position)
        first = self.pick_slice(mask, phase_position)
        if first is None:
            return []
        frames = self.frames(phase_position)
        regions = image_regions(mask, frames, all_slices=all_slices, first=first)
        group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=uid, identifier=tracking_text(name, suffix)),
            referenced_regions=regions, finding_type=finding_type, finding_sites=finding_sites,
            measurements=measurements or None, qualitative_evaluations=qualitative or None,
            algorithm_id=_algorithm_id(self.result.algorithm),
        )
        return [group] + self.contour_groups(mask[first], frames[first], name, finding_type)

    def contour_groups(self, mask: np.ndarray, ref, name: str, finding_type=None) -> list:
        """One group per further outline of the drawn slice (after the longest, at most MAX_CONTOUR_GROUPS): OHIF v3
        draws only the first SCOORD of a tracking UID, so a ring (the myocardium) would show as its epicardial
        contour alone, a region as if it were filled, and a region in several parts as one part. Each group has a new
        tracking UID, that one outline as its region and no measurement; its tracking identifier is "<name> (inner
        contour)" for an outline inside the longest, "<name> (another part)" else (tracking_text). The outline stays
        in the region of the group it belongs to. No finding site (TID 1411 row 2, optional): OHIF would label the
        bare contour "363698007: <site>", one more text at the group's anchor (break43d: four such labels stacked
        on a 2-slice study)."""
        lines = outlines(mask)
        if len(lines) < 2:
            return []
        regions = slice_regions(mask, ref)
        groups = []
        for line, region in list(zip(lines, regions))[1:1 + self.MAX_CONTOUR_GROUPS]:
            suffix = " (inner contour)" if _inside(line[0], lines[0]) else " (another part)"
            groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=new_uid(), identifier=tracking_text(name, suffix)),
                referenced_regions=[region], finding_type=finding_type,
                algorithm_id=_algorithm_id(self.result.algorithm)))
        return groups


def _with_caveats(groups: list, caveats: Sequence) -> list:
    """The groups with the caveat NUMs (measurements whose concept states the caveat, their value the quantity behind
    it) put, each group its own copy, before the first NUM of each group that has one: OHIF v3 shows only a group's
    NUMs (its first five, then the first finding site) beside its outline, so the reader learns the caveat beside
    the numbers it qualifies. The same groups."""
    items_to_add = [item for measurement in caveats for item in measurement]
    if not items_to_add:
        return groups
    for group in groups:
        container = group[0]
        items = list(container.ContentSequence)
        at = next((k for k, item in enumerate(items) if item.ValueType == "NUM"), None)
        if at is None:
            continue
        if _concept_key(items[at]) == (codes.LGE_NOT_DETERMINED.value, codes.LGE_NOT_DETERMINED.scheme_designator):
            at += 1  # "numbers not determined" stays first: the other caveats qualify numbers not given
        items[at:at] = [copy.deepcopy(item) for item in items_to_add]
        container.ContentSequence = hd.sr.ContentSequence(items)
    return groups


def _with_aspect_caveat(groups: list, aspect: float) -> list:
    """The groups with the NUM (codes.NON_SQUARE_PIXELS, the pixel aspect ratio) put first (_with_caveats): OHIF v3
    draws outlines on non-square pixels misplaced (regions.NON_SQUARE_NOTE), so the reader learns it beside the
    outline. The same groups."""
    return _with_caveats(groups, [hd.sr.Measurement(name=codes.NON_SQUARE_PIXELS, value=aspect,
                                                    unit=codes.UNIT_NONE)])


#: the caveats that change how a number is read (reading_caveat_measurements), in the order CAVEAT_PRIORITY keeps them:
#: the stroke volume mismatch first, as in the LV / RV function groups it is the one said nowhere else in the SR's
#: groups (an ES to confirm and an RV volume jump stay in the LV ES / RV ED / ES groups, which have room)
READING_CAVEAT_PRIORITY = (codes.SV_MISMATCH, codes.RV_EDV_UNCERTAIN, codes.RV_ESV_UNCERTAIN, codes.ES_UNCERTAIN)
#: each reading caveat's kind (analysis.cine_metrics.READING_CAVEAT_KINDS) -> its NUM concept and unit
READING_CAVEAT_CONCEPTS = {"rv_edv_uncertain": (codes.RV_EDV_UNCERTAIN, codes.UNIT_NONE),
                           "rv_esv_uncertain": (codes.RV_ESV_UNCERTAIN, codes.UNIT_NONE),
                           "es_uncertain": (codes.ES_UNCERTAIN, codes.UNIT_PERCENT),
                           "sv_mismatch": (codes.SV_MISMATCH, codes.UNIT_ML)}
#: how many NUMs of a group OHIF v3 shows beside its outline (then only the first finding site)
OHIF_SHOWN_NUMS = 5
#: caveat NUMs (their concept states the caveat) in the order they are kept where a group's shown lines are too few
#: for all of them (_capped_caveats): first those that say the numbers may be invalid or misnamed, then those that
#: qualify the group's numbers (lower bounds, base not confirmed, partial stack, partial cycle, the BSA the indexed
#: values rest on), then the report-level notices of the first group (these numbers replace an earlier report's;
#: series left unread: said in the report's comments too, and about no number of the group: review48b #4), last those
#: that only say how far to trust them; the burden verdict's own NUM (LARGE_LGE_BURDEN_CUTOFF_UNDETERMINED) is no
#: caveat
CAVEAT_PRIORITY = tuple((code.value, code.scheme_designator) for code in (
    codes.NOT_LGE_CONTRAST, codes.DARK_BLOOD_LGE, codes.AHA_MIRRORED, codes.AHA_MIDLINE, codes.AHA_UNUSUAL_TURN,
    codes.LOWER_BOUNDS_LV_EXTENT, codes.PARTIAL_STACK_LV_EXTENT, codes.PARTIAL_STACK_ESV_LOWER,
    codes.BASE_UNCONFIRMED_LV_EXTENT, codes.SMALL_FIELD, codes.PARTIAL_CYCLE, codes.CHILD_AGE, codes.CHILD_BSA, codes.CHILD_HEIGHT, codes.CHILD_WEIGHT,
    codes.BSA_DISAGREEMENT, *READING_CAVEAT_PRIORITY, codes.SUPERSEDES_SR, codes.SUPERSEDES_COUNT, codes.NOT_ANALYSED, codes.CHILD_LGE,
    codes.RV_LESS_RELIABLE, codes.MVO_NOT_VALIDATED_AGREEMENT, codes.MVO_NOT_VALIDATED_VOLUME,
    codes.NON_SQUARE_PIXELS))


def _concept_key(item) -> tuple[str, str] | None:
    """(CodeValue, CodingSchemeDesignator) of a content item's concept name, None without one."""
    names = getattr(item, "ConceptNameCodeSequence", None)
    return (str(names[0].CodeValue), str(names[0].CodingSchemeDesignator)) if names else None


def _capped_caveats(groups: list) -> list:
    """The groups with at most as many caveat NUMs (CAVEAT_PRIORITY) as leave OHIF's OHIF_SHOWN_NUMS lines room for
    three of the group's own measurements (all of them where it has fewer): where more caveats apply, those latest
    in CAVEAT_PRIORITY are left out of the group (each stays a comment of the report: _stack_comments and the
    notes). A caveat filling every shown line would hide the numbers it qualifies (review44 item 8). The same
    groups."""
    for group in groups:
        container = group[0]
        items = list(container.ContentSequence)
        nums = [item for item in items if item.ValueType == "NUM"]
        caveats = [item for item in nums if _concept_key(item) in CAVEAT_PRIORITY]
        room = len(caveats) + _caveat_room(group)
        if len(caveats) <= room:
            continue
        kept = sorted(caveats, key=lambda item: CAVEAT_PRIORITY.index(_concept_key(item)))[:room]
        dropped = {id(item) for item in caveats if not any(item is k for k in kept)}
        container.ContentSequence = hd.sr.ContentSequence([item for item in items if id(item) not in dropped])
    return groups


def _image_of(ref) -> tuple[str, int | None]:
    """The image a viewer shows a frame reference as: (SOP Instance UID, frame number; None for a single frame)."""
    number = getattr(ref, "frame_number", None)
    return str(ref.sop_instance_uid), None if number is None else int(number)


#: the length of a Tracking Identifier (TEXT (112039, DCM) of TID 4108, written as LO in highdicom: PS3.5 6.2)
TRACKING_IDENTIFIER_LENGTH = 64


def tracking_text(name: str, suffix: str = "") -> str:
    """A tracking identifier: `name`, then `suffix` whole, in TRACKING_IDENTIFIER_LENGTH characters. A name too long
    is shortened at word boundaries, never inside a word or number: a closing parenthetical holding a number loses
    its leading words first ("(HCM rule >=15 %)" -> "(>=15 %)"), a caveat ("(not validated)", CAVEAT) is kept whole
    and the words before it shortened instead (a reviewer found "(lower bound: …)" pushing "(not validated)" out of
    the MVO group), any other goes whole; then a last "; " clause goes whole (a verdict is said with its answer or
    not at all), then the last words; TRACKING_ABBREVIATIONS first where the name is too long."""
    limit = TRACKING_IDENTIFIER_LENGTH - len(suffix)
    text, kept = name, ""
    if len(text) > limit:
        for long, short in TRACKING_ABBREVIATIONS:
            text = text.replace(long, short)
    while len(text) + len(kept) > max(limit, 0):
        closing = re.search(r"\s*\(([^()]*)\)$", text)
        if closing is not None and CAVEAT.search(closing.group(1)) and text[:closing.start()].strip():
            kept = text[closing.start():] + kept  # a caveat is never shortened away: the words before it are
            text = text[:closing.start()]
            continue
        if closing is not None:
            words = closing.group(1).split()
            if len(words) > 1 and not re.search(r"\d", words[0]) and re.search(r"\d", " ".join(words[1:])):
                text = f"{text[:closing.start()]} ({' '.join(words[1:])})".lstrip()
            else:
                text = text[:closing.start()]
        elif "; " in text:
            text = text.rsplit("; ", 1)[0]
        elif " " in text:
            text = text.rsplit(" ", 1)[0]
        else:
            text = text[:max(limit, 0)]
        text = text.rstrip(" ;,:")
    return (text + kept + suffix)[:TRACKING_IDENTIFIER_LENGTH]


#: a parenthetical that qualifies a finding ("(not validated)", "(not measured)"): tracking_text keeps it whole
CAVEAT = re.compile(r"\bnot\b")
#: the field's short forms tracking_text uses before shortening a name further
TRACKING_ABBREVIATIONS = (("microvascular obstruction", "MVO"), ("myocardium", "myoc."))


def _inside(point: np.ndarray, polygon: np.ndarray) -> bool:
    """True when `point` (x, y) lies inside the closed `polygon` (N, 2) (even-odd rule)."""
    x, y = float(point[0]), float(point[1])
    xs, ys = polygon[:, 0], polygon[:, 1]
    x2, y2 = np.roll(xs, -1), np.roll(ys, -1)
    crossing = (ys > y) != (y2 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        at = xs + (y - ys) * (x2 - xs) / (y2 - ys)
    return bool(np.count_nonzero(crossing & (x < at)) % 2)


def _method_block(value) -> dict:
    """A threshold method's summary as a dict: a bare number is its %LGE; {"applicable": false, "reason": ...} or a
    block with an error has no %LGE (the method is then left out of the SR; the PDF says why)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"lge_percent": float(value)}
    if not isinstance(value, dict) or value.get("applicable") is False:
        return {}
    return value


def _segment_volume_ml(index: _SegmentIndex, labels: Sequence[int], phase_position: int = 0) -> float:
    return float(index.mask(labels, phase_position).sum()) * index.result.volume.voxel_volume_ml


#: after the MVO group's tracking identifier where the model card does not validate the MVO (summary mvo_validation)
MVO_NOT_VALIDATED = " (not validated)"


def mvo_comments(result: PipelineResult) -> list[str]:
    """The comment beside every LGE number, as the %LGE error's (_stack_comments), where the model card does not
    validate the MVO (summary `mvo_validation`): "LGE MVO not validated: 'MVO present' from this volume agreed with
    the expert in 69 % of EMIDEC cases ..." (mvo_validation_text); [] where it does, for the cine, and where no MVO
    volume is given (the numbers withheld)."""
    summary = result.summary or {}
    if result.name != "lge" or summary.get("determined") is False or summary.get("mvo_volume_ml") is None:
        return []
    text = mvo_validation_text(summary.get("mvo_validation"))
    return [f"LGE MVO {text}"] if text else []


def lge_groups(lge: PipelineResult, index: _SegmentIndex | None, config) -> list:
    """LGE groups (PS3.16 TID 1411). Unions are measured on their outlines (image regions on every slice): whole
    myocardium (volume, mass) and scar incl. MVO (`scar_volume_ml`, %LGE by DL, n-SD and FWHM, burden flag); the
    exclusive parts name their SEG segments where one SEG holds them: non-enhanced myocardium, scar without MVO, MVO
    (`mvo_volume_ml`). A finding with no voxel (no scar, no MVO) keeps its 0 mL, measured on the LV myocardium with
    the finding coded as absent (see _SegmentIndex)."""
    block = lge.summary or {}
    if index is None:
        return []
    if block.get("determined") is False:
        # numbers withheld (summary `reason`: the heart not found, or an implausibly small myocardium): no NUM and
        # no coded finding (a "Large LGE burden: No" from a failed localisation is a false negative); the region
        # segmented, for review, with the reason as a comment (the LGE comments of build_sr)
        # OHIF v3 shows a group's NUMs only: the first says the numbers are not determined and the SEG unreliable
        return index.outline_group(MYOCARDIUM_LABELS, 0, "LGE LV myocardium (unreliable; numbers not determined)",
                                   new_uid(), finding_type=codes.LV_MYOCARDIUM, all_slices=True,
                                   measurements=not_determined_measurement(index))
    algorithm = index.result.algorithm
    dl = dict(method=codes.METHOD_DEEP_LEARNING, algorithm_id=_algorithm_id(algorithm))
    # 'MVO present / absent' is coded only where the model card validates the MVO (summary mvo_validation); else
    # the MVO volume stays, its group named "not validated" and its reason a comment (_stack_comments)
    mvo_stated = (block.get("mvo_validation") or {}).get("presence_stated") is True
    lv_site = [hd.sr.FindingSite(codes.LV_MYOCARDIUM)]
    bound = coverage_qualifier(block)  # volumes, mass and scar of a stack missing part of the LV: lower bounds

    def bound_if(value: float | None) -> str:  # a lower bound of 0 says nothing: "0 mL" is what was found
        return bound if value else ""

    def bound_num(value: float | None) -> list:
        return coverage_measurement(block) if value else []

    groups = index.outline_group(
        MYOCARDIUM_LABELS, 0, "LGE LV myocardium, whole", new_uid(), finding_type=codes.LV_MYOCARDIUM,
        suffix=bound_if(_number(block, "myocardium_volume_ml")),
        measurements=bound_num(_number(block, "myocardium_volume_ml"))
        + _measurement(codes.VOLUME, _number(block, "myocardium_volume_ml"), codes.UNIT_ML, **dl)
        + _measurement(codes.LV_MASS, _number(block, "lv_mass_g"), codes.UNIT_G, **dl), all_slices=True)

    scar_volume = _number(block, "scar_volume_ml")
    scar_measurements = _measurement(codes.LGE_PERCENT, _number(block, "lge_percent"), codes.UNIT_PERCENT, **dl)
    n = _method_block(block.get("nsd")).get("n", config.analysis.lge.nsd_n)
    not_applicable: list[hd.sr.QualitativeEvaluation] = []
    # each method's %LGE under a concept of its own (a viewer listing concept names and values only, OHIF v3, would
    # show three identical rows), the method also as the TID 300 method modifier, its name ("3-SD") as the PDF's
    for key, method, concept, unvalidated, parameter in (
            ("nsd", codes.METHOD_NSD, codes.lge_percent_nsd(n), codes.NSD_NOT_VALIDATED, f"n={n}"),
            ("fwhm", codes.METHOD_FWHM, codes.LGE_PERCENT_FWHM, codes.FWHM_NOT_VALIDATED,
             "threshold=50% of max enhanced signal")):
        raw = block.get(key)
        if isinstance(raw, dict) and raw.get("applicable") is False:
            # said, not left out: "<method>: Not applicable", or "Not reported: not validated" where the model card
            # does not validate it (a withheld method is not one the input rules out), as a coded evaluation (a NUM
            # without a value, PS3.3 C.18.1, is what the standard offers, but highdicom 0.28 cannot read one back);
            # the reason is a comment (lge_comments), as in the PDF and summary.json
            answer = codes.NOT_VALIDATED_WITHHELD if withheld_not_validated(raw) else codes.NOT_APPLICABLE
            not_applicable.append(hd.sr.QualitativeEvaluation(method, answer))
            continue
        value = _number(_method_block(raw), "lge_percent")
        if value is not None:
            # computed though not validated (threshold_methods = 'always'): its agreement r with expert %LGE right
            # before it, the caveat the PDF and the console give beside the value (OHIF shows NUMs only); not a
            # CAVEAT_PRIORITY caveat, which _capped_caveats may drop: this one goes with its value or not at all
            caveat = unvalidated_caveat(_method_block(raw))
            r = agreement_r(caveat) if caveat else None
            scar_measurements += (_measurement(unvalidated, r, codes.UNIT_NONE) if caveat and r is not None else []) \
                + _measurement(concept, value, codes.UNIT_PERCENT, method=method,
                               algorithm_id=hd.sr.AlgorithmIdentification(
                                   name=f"dicomnode {method_name(key, n)} threshold", version=node_version(),
                                   parameters=[parameter]))
    qualitative = list(not_applicable)
    verdict = None
    if isinstance(block.get("large_scar_burden"), bool):
        large = block["large_scar_burden"]
        qualitative.append(hd.sr.QualitativeEvaluation(codes.LARGE_LGE_BURDEN, codes.YES if large else codes.NO))
        # the rule behind the Yes/No: the cut-off, under a concept that names it first and says the verdict and that
        # it is an HCM rule (a viewer listing only NUM concepts showed "Large LGE burden cut-off: 15.00 %" like a
        # measured value), and its comparator (analysis.lge.large_burden_*)
        cutoff = lge.measurements.get("large_burden_cutoff_percent", config.analysis.lge.large_burden_percent)
        comparator = lge.measurements.get("large_burden_comparator", config.analysis.lge.large_burden_comparator)
        # after %LGE by DL, before the other methods' where the lower-bound NUM comes first: OHIF shows five NUMs
        at = int(_number(block, "lge_percent") is not None) if bound_num(scar_volume) else len(scar_measurements)
        # Chan 2014's rule (>= 15 %) is an HCM rule; a site-configured cut-off is named as such (burden_rule_source)
        chan = is_chan_rule(cutoff, comparator)
        met, not_met = (codes.LARGE_LGE_BURDEN_CUTOFF_MET, codes.LARGE_LGE_BURDEN_CUTOFF_NOT_MET) if chan else \
            (codes.LARGE_LGE_BURDEN_SITE_CUTOFF_MET, codes.LARGE_LGE_BURDEN_SITE_CUTOFF_NOT_MET)
        scar_measurements[at:at] = _measurement(
            met if large else not_met, cutoff,
            codes.UNIT_PERCENT, algorithm_id=hd.sr.AlgorithmIdentification(
                name="dicomnode large LGE burden rule", version=node_version(),
                parameters=[f"large burden if %LGE {comparator} {cutoff:g} % "
                            f"({burden_rule_source(cutoff, comparator)})"]))
        verdict = (large, f"{comparator}{cutoff:g} %", chan)
    elif str(block.get("large_scar_burden_reason") or "").startswith(INDETERMINATE):
        # neither Yes nor No where %LGE lies within the model's known error of the cut-off: a system reading the
        # coded answer without the comment must not take a coin toss for a finding; OHIF, which shows NUMs only,
        # reads it from the cut-off's concept, where the verdict NUM would be
        qualitative.append(hd.sr.QualitativeEvaluation(codes.LARGE_LGE_BURDEN, codes.UNDETERMINED))
        cutoff = lge.measurements.get("large_burden_cutoff_percent", config.analysis.lge.large_burden_percent)
        at = int(_number(block, "lge_percent") is not None) if bound_num(scar_volume) else len(scar_measurements)
        scar_measurements[at:at] = _measurement(codes.LARGE_LGE_BURDEN_CUTOFF_UNDETERMINED, cutoff,
                                                codes.UNIT_PERCENT)
    elif str(block.get("large_scar_burden_reason") or "").startswith(CHILD_BURDEN_START):
        # a child: the adult cut-off is not applied (lge.child_burden_reason); said where the verdict NUM would be, as
        # the reason is otherwise a report comment only, which OHIF does not show (break51c #6)
        cutoff = lge.measurements.get("large_burden_cutoff_percent", config.analysis.lge.large_burden_percent)
        at = int(_number(block, "lge_percent") is not None) if bound_num(scar_volume) else len(scar_measurements)
        scar_measurements[at:at] = _measurement(codes.LARGE_LGE_BURDEN_WITHHELD_CHILD, cutoff, codes.UNIT_PERCENT)
    scar = index.outline_group(ENHANCED_LABELS, 0, burden_name("LGE scar incl. MVO", verdict), new_uid(),
                               finding_type=codes.LATE_CONTRAST_ENHANCEMENT, finding_sites=lv_site,
                               suffix=bound_if(scar_volume),
                               measurements=bound_num(scar_volume)
                               + _measurement(codes.VOLUME, scar_volume, codes.UNIT_ML, **dl)
                               + scar_measurements, qualitative=qualitative, all_slices=True)
    if not scar:  # no enhanced voxel: the absent finding, measured on the LV myocardium (see _SegmentIndex)
        absent = [hd.sr.QualitativeEvaluation(codes.LATE_CONTRAST_ENHANCEMENT, codes.ABSENT)] + \
            ([hd.sr.QualitativeEvaluation(codes.MVO, codes.ABSENT)] if mvo_stated else [])
        scar = index.outline_group(
            MYOCARDIUM_LABELS, 0, burden_name("LGE scar incl. MVO (none found)", verdict), new_uid(),
            finding_type=codes.LV_MYOCARDIUM, finding_sites=lv_site,
            measurements=_measurement(codes.ENHANCED_VOLUME, scar_volume, codes.UNIT_ML, **dl) + scar_measurements,
            qualitative=absent + qualitative, all_slices=True)
    groups += scar

    parts = (("lv_myocardium_nonenhanced", "LGE non-enhanced myocardium", codes.LV_MYOCARDIUM,
              _segment_volume_ml(index, (Label.LV_MYOCARDIUM,)), codes.NONENHANCED_VOLUME),
             ("scar", "LGE scar without MVO", codes.LATE_CONTRAST_ENHANCEMENT,
              _segment_volume_ml(index, (Label.SCAR,)), codes.SCAR_VOLUME),
             ("mvo", "LGE microvascular obstruction" + ("" if mvo_stated else MVO_NOT_VALIDATED), codes.MVO,
              _number(block, "mvo_volume_ml"), codes.MVO_VOLUME))
    for key, name, finding, volume, absent_concept in parts:
        caveat = mvo_caveat_measurement(block) if key == "mvo" else []  # beside MVO volume "found" or "none found"
        groups += index.groups(key, None, name, finding_type=finding, finding_sites=lv_site,
                               measurements=bound_num(volume) + caveat
                               + _measurement(codes.VOLUME, volume, codes.UNIT_ML, **dl),
                               absent_measurements=caveat + _measurement(absent_concept, volume, codes.UNIT_ML, **dl),
                               code_absent=key != "mvo" or mvo_stated, qualifier=bound_if(volume),
                               # an MVO whose presence the card does not validate: none segmented, not none found
                               absent_text=" (none segmented)" if key == "mvo" and not mvo_stated else " (none found)")
    groups += aha_groups(block.get("aha_segments"), index, scar=True, presence=block.get("lge_presence"))
    return groups


def not_determined_measurement(index: _SegmentIndex) -> list:
    """The NUM (codes.LGE_NOT_DETERMINED, mm²) first in each group of an LGE stack whose numbers are withheld: the
    largest LV myocardium section segmented on one slice (the area lge.not_determined_reason judges), so that OHIF v3,
    which shows NUMs only, says beside the outline that the LGE numbers are not determined and the segmentation
    unreliable; [] without a segmented myocardium (no outline is drawn then)."""
    areas = index.mask(MYOCARDIUM_LABELS).reshape(len(index.labelmap[0]), -1).sum(axis=1)
    if not areas.any():
        return []
    row_mm, column_mm = (float(v) for v in index.result.volume.pixel_spacing)
    return _measurement(codes.LGE_NOT_DETERMINED, float(areas.max()) * row_mm * column_mm, codes.UNIT_MM2)


#: what a coverage reason (cine_metrics.stack_coverage) says in a tracking identifier when its own last words are long
COVERAGE_SHORT = "LV partly outside"
#: ... and a base not confirmed covered (cine_metrics.BASE_UNCONFIRMED_START)
BASE_UNCONFIRMED_SHORT = "base not confirmed"


def coverage_qualifier(summary: dict | None, what: str = "lower bound") -> str:
    """" (lower bound: apex cut off)" for a group whose numbers a stack missing part of the LV makes lower bounds
    (summary `coverage.complete` false; `what` "partial stack" for EF and SV, which are neither), "" on a whole
    stack: for viewers that show a group's tracking identifier (OHIF v3 shows its NUMs only: coverage_measurement).
    Each reason is said by its last words ("apex cut off", "slices missing"), or as COVERAGE_SHORT."""
    coverage = (summary or {}).get("coverage") or {}
    if not isinstance(coverage, dict) or coverage.get("complete") is not False:
        return ""
    said = []
    for reason in coverage.get("reasons") or []:
        if str(reason).startswith(BASE_UNCONFIRMED_START):  # the LV may be whole: no missing part asserted
            said.append(BASE_UNCONFIRMED_SHORT)
            continue
        last = str(reason).rsplit(": ", 1)[-1].split(",")[0].strip()
        said.append(last if ": " in str(reason) and len(last) <= len(COVERAGE_SHORT) else COVERAGE_SHORT)
    said = list(dict.fromkeys(said)) or [COVERAGE_SHORT]
    return f" ({what}: {said[0] if len(said) == 1 else COVERAGE_SHORT})"


def coverage_measurement(summary: dict | None, concept: Code = codes.LOWER_BOUNDS_LV_EXTENT) -> list:
    """The NUM that says, where a viewer lists only NUM concepts (OHIF v3), that the group's numbers come from a
    stack missing part of the LV (coverage_qualifier): `concept` (LOWER_BOUNDS_LV_EXTENT, or PARTIAL_STACK_LV_EXTENT
    for EF and SV, PARTIAL_STACK_ESV_LOWER where EDV and ESV, lower bounds, are repeated beside them) with the LV length the stack holds (summary `coverage.lv_extent_mm`), to be put first in the
    group (OHIF shows five NUMs of a group); [] on a whole stack or without the length."""
    if not coverage_qualifier(summary):
        return []
    if base_unconfirmed_only(summary.get("coverage")):  # break48b #3: the base may be cut off, or not
        concept = codes.BASE_UNCONFIRMED_LV_EXTENT
    return _measurement(concept, _number(summary["coverage"], "lv_extent_mm"), codes.UNIT_MM)


def partial_cycle_measurement(cine_summary: dict | None) -> list:
    """The NUM (codes.PARTIAL_CYCLE, the phases sent) that says, where OHIF v3 shows only NUM concepts, that ED and
    ES were chosen among phases that are not a whole cardiac cycle (report.partial_cycle: fewer phases sent than the
    images declare, or fewer than MIN_PHASES_FOR_CURVE); [] over a whole cycle."""
    sent, cycle = phase_text.cycle_phases(cine_summary or {})
    if sent <= 0 or (cycle is None and sent >= MIN_PHASES_FOR_CURVE):
        return []
    return _measurement(codes.PARTIAL_CYCLE, float(sent), codes.UNIT_NONE)


def partial_cycle_comment(cine_summary: dict | None) -> list[str]:
    """The caveat of partial_cycle_measurement in full, for the report's comments (its NUM concept is kept short for
    OHIF's label): "cine: ED and ES chosen among the 2 phases sent, not a whole cardiac cycle (30 declared): they
    may not be the true end-diastole and end-systole"; [] where partial_cycle_measurement gives nothing."""
    if not partial_cycle_measurement(cine_summary):
        return []
    sent, cycle = phase_text.cycle_phases(cine_summary or {})
    declared = f" ({cycle} declared)" if cycle else ""
    return [f"cine: ED and ES chosen among the {sent} phases sent, not a whole cardiac cycle{declared}: they may not "
            "be the true end-diastole and end-systole"]


def supersede_measurements(supersedes: Sequence[dict] | None) -> list:
    """The NUM a re-analysis puts first in the first group with numbers of each analysis (first_group_notices), where
    OHIF shows it, as OHIF shows neither the Predecessor Documents Sequence nor the report's comments (break48b #8):
    codes.SUPERSEDES_SR valued with the replaced measurement SR's Series Number ("Re-analysis, replaces the AI report
    of SR series: 9100"), or where that number is not to be named (provenance.supersede_text's `partial`) or not
    known codes.SUPERSEDES_COUNT valued with the number of earlier reports; [] where nothing is superseded."""
    if not supersedes:
        return []
    latest = supersedes[-1]
    if not latest.get("partial") and latest.get("series_number") is not None:
        return _measurement(codes.SUPERSEDES_SR, float(int(latest["series_number"])), codes.UNIT_NONE)
    return _measurement(codes.SUPERSEDES_COUNT, float(len(supersedes)), codes.UNIT_NONE)


def not_analysed_measurement(not_measured: Sequence[str]) -> list:
    """The NUM codes.NOT_ANALYSED valued with the number of series recognised but not measured (`not_measured`: their
    reasons, phase_text.maps_not_measured), first in the first group with numbers (first_group_notices), so that a
    reader of OHIF learns that the maps and perfusion were seen and left for them (break48b #5); [] without any."""
    return _measurement(codes.NOT_ANALYSED, float(len(not_measured)), codes.UNIT_NONE) if not_measured else []


def first_group_notices(groups: list, notices: Sequence) -> list:
    """The groups with the notice NUMs (supersede_measurements, not_analysed_measurement: they concern the whole
    report, not one group's numbers) put before the first NUM of the first group that has one, the group OHIF's SR
    viewport opens on, where OHIF's lines leave them room beside that group's own caveats (_capped_caveats, whose
    CAVEAT_PRIORITY ranks the caveats that qualify the group's numbers before them: review48b #4); else in the first
    later group with numbers that does, else in the first (where _capped_caveats keeps the qualifying caveats); the
    other groups unchanged. The same groups."""
    count = sum(1 for measurement in notices for item in measurement if item.ValueType == "NUM")
    if not count:
        return groups
    with_numbers = [at for at, group in enumerate(groups)
                    if any(item.ValueType == "NUM" for item in group[0].ContentSequence)]
    if not with_numbers:
        return groups
    at = next((at for at in with_numbers if count <= _caveat_room(groups[at])), with_numbers[0])
    _with_caveats(groups[at:at + 1], notices)
    return groups


def _caveat_room(group: list) -> int:
    """How many more caveat NUMs (CAVEAT_PRIORITY) `group` takes before _capped_caveats leaves one out."""
    nums = [item for item in group[0].ContentSequence if item.ValueType == "NUM"]
    caveats = sum(1 for item in nums if _concept_key(item) in CAVEAT_PRIORITY)
    return max(1, OHIF_SHOWN_NUMS - min(3, len(nums) - caveats)) - caveats


#: the NUM concept of each AHA geometry caveat (aha.py), said beside the segment names it qualifies
AHA_CAVEAT_CONCEPTS = ((MIRRORED_CAVEAT, codes.AHA_MIRRORED), (MIDLINE_CAVEAT, codes.AHA_MIDLINE),
                       (UNUSUAL_TURN_START, codes.AHA_UNUSUAL_TURN))


def aha_caveat_measurements(block: dict | None, segment: int) -> list:
    """The NUMs that say, where OHIF v3 shows a segment group's NUMs and then its finding site only, that the AHA
    segment names are to be confirmed (the `aha_segments` block's `caveat`: aha.MIRRORED_CAVEAT, MIDLINE_CAVEAT,
    aha.unusual_turn_caveat, which begins with UNUSUAL_TURN_START): each caveat's concept (AHA_CAVEAT_CONCEPTS) with
    the segment's number (1-17, as its finding site codes it, CID 3717), so the segment is named beside the caveat
    even where OHIF's five lines end before the finding site; [] without a caveat."""
    caveat = str(block.get("caveat") or "") if isinstance(block, dict) else ""
    return [m for text, concept in AHA_CAVEAT_CONCEPTS if text in caveat
            for m in _measurement(concept, float(segment), codes.UNIT_NONE)]


def child_measurements(cine: PipelineResult, header: Dataset, config) -> list:
    """The NUM that says, first in each cine group with numbers, that the adult reference ranges are not applied
    (summary `reference_ranges.adult_ranges_applied` false, reference_age.adult_ranges_note): codes.CHILD_AGE with
    the patient's age in years (`patient_age_years`); for a patient of unknown age with a child's body size, that
    size: CHILD_BSA (m², bsa_for), else CHILD_HEIGHT (PatientSize, m), else CHILD_WEIGHT (PatientWeight, kg). []
    where the adult ranges apply, or where no such number is known (the note stays a comment)."""
    ranges = (cine.summary or {}).get("reference_ranges")
    if not isinstance(ranges, dict) or ranges.get("adult_ranges_applied") is not False:
        return []
    age = _number(ranges, "patient_age_years")
    if age is not None:
        return _measurement(codes.CHILD_AGE, age, codes.UNIT_YEAR)
    bsa = bsa_for(cine, header, config.analysis.cine.bsa_formula)
    if bsa is not None:
        return _measurement(codes.CHILD_BSA, bsa[0], codes.UNIT_M2)
    for keyword, concept, unit in (("PatientSize", codes.CHILD_HEIGHT, codes.UNIT_M),
                                   ("PatientWeight", codes.CHILD_WEIGHT, codes.UNIT_KG)):
        try:
            value = float(header.get(keyword))
        except (TypeError, ValueError):
            continue
        if math.isfinite(value) and value > 0:
            return _measurement(concept, value, unit)
    return []


#: the concepts of a cine group that hold a BSA-indexed value or the BSA itself (bsa_disagreement_caveat)
BSA_DEPENDENT = frozenset((code.value, code.scheme_designator) for code in (
    codes.LV_EDV_INDEX, codes.LV_ESV_INDEX, codes.LV_SV_INDEX, codes.RV_EDV_INDEX, codes.RV_ESV_INDEX,
    codes.RV_SV_INDEX, codes.LV_MASS_INDEX, codes.BODY_SURFACE_AREA))


def bsa_disagreement_caveat(groups: list, cine_summary: dict | None) -> list:
    """The groups, each that holds a BSA-indexed value or the BSA (BSA_DEPENDENT) with the NUM codes.BSA_DISAGREEMENT
    (m², the BSA the other images' height / weight give: summary `bsa_other_m2`) put before its first NUM, where the
    study's images disagree on PatientSize / PatientWeight (break48b #4: OHIF showed the BSA and the indexed values
    bare, the disagreement only a comment); the groups unchanged otherwise."""
    caveat = _measurement(codes.BSA_DISAGREEMENT, _number(cine_summary or {}, "bsa_other_m2"), codes.UNIT_M2)
    if not caveat:
        return groups
    dependent = [g for g in groups if any(_concept_key(item) in BSA_DEPENDENT
                                          for item in g[0].ContentSequence if item.ValueType == "NUM")]
    _with_caveats(dependent, caveat)
    return groups


def rv_phase_measurement(cine_summary: dict | None, phase_key: str) -> list:
    """The NUM that says, first in each group stating RV EDV (`phase_key` "ed") or RV ESV ("es"), that the RV volume
    was read at another phase than the LV's ED / ES (summary `timing.rv_ed_phase` / `rv_es_phase`,
    cine_metrics.rv_cardiac_phases) and that the RV is outlined at that phase too (its own SEG segment, "RV blood
    pool; RV at ES (phase 8)", and the RV blood pool ED / ES group drawn there: rv_drawn_phase):
    codes.RV_EDV_OTHER_PHASE / RV_ESV_OTHER_PHASE with the RV's phase number (1-based, as the PDF and the SEG count);
    [] where the RV's phase is the LV's or either is unknown."""
    block = cine_summary if isinstance(cine_summary, dict) else {}
    timing = block.get("timing") if isinstance(block.get("timing"), dict) else {}
    lv_phase, rv_phase = block.get(f"{phase_key}_phase"), timing.get(f"rv_{phase_key}_phase")
    if lv_phase is None or rv_phase is None or int(lv_phase) == int(rv_phase):
        return []
    number = phase_text.phase_number(int(rv_phase), phase_text.summary_phase_numbers(block))
    concept = codes.RV_EDV_OTHER_PHASE if phase_key == "ed" else codes.RV_ESV_OTHER_PHASE
    return _measurement(concept, float(number), codes.UNIT_NONE)


def reading_caveat_measurements(cine_summary: dict | None, kinds: Sequence[str]) -> list:
    """The NUMs (READING_CAVEAT_CONCEPTS) of the cine flags among `kinds` that change how a group's numbers are read
    (analysis.cine_metrics.reading_caveats: an RV volume jump at the phase RV EDV / ESV is read at, an ES to confirm,
    LV and RV stroke volumes disagreeing), to go first in the group stating the number each concerns: OHIF v3 shows a
    group's NUMs and not the report's comments (break51c #3). [] where none applies."""
    found = []
    for caveat in reading_caveats(cine_summary):
        if caveat.kind in kinds:
            concept, unit = READING_CAVEAT_CONCEPTS[caveat.kind]
            found += _measurement(concept, caveat.value, unit)
    return found


def rv_drawn_phase(segmentation: SegmentationResult, read_at: int, phase_key: str) -> int:
    """`read_at` (0-based phase index RV EDV, `phase_key` "ed", or RV ESV, "es", was read at), checked to be a phase
    the cine segmentation carries (analysis.cine.segmented_phases adds the RV's own phases), so that the RV group's
    outline is the one its volume was measured on. Raises ValueError where it is not: the summary and the
    segmentation disagree, and an outline at the LV's phase would show another volume than the one stated."""
    if int(read_at) not in [int(p) for p in segmentation.phases]:
        raise ValueError(f"RV {phase_key.upper()}V was read at phase index {read_at}, which the cine segmentation "
                         f"(phases {list(segmentation.phases)}) does not carry: no outline of the volume stated")
    return int(read_at)


def rv_accuracy_measurement(cine_summary: dict | None) -> list:
    """The NUM that says, first in each RV group (after its LVPARTLB / LVPARTFN and CYCLEPART NUMs), that the RV
    numbers are less reliable than the LV's (a cine flag starting cine_metrics.RV_ACCURACY_START):
    codes.RV_LESS_RELIABLE with the model's validated RVEF error (summary `flag_validation.rv_ef_percent.mae`, EF
    points); [] without that flag or without the figure (the flag then says the card gives none, and stays a
    comment)."""
    summary = cine_summary if isinstance(cine_summary, dict) else {}
    if not any(isinstance(flag, str) and flag.startswith(RV_ACCURACY_START) for flag in summary.get("flags") or []):
        return []
    validation = (summary.get("flag_validation") or {}).get("rv_ef_percent")
    return _measurement(codes.RV_LESS_RELIABLE, _number(validation, "mae"), codes.UNIT_PERCENT)


def lge_input_measurements(lge_summary: dict | None, header: Dataset) -> list:
    """The NUMs that say, first in each LGE group with numbers, what the LGE stack warnings say of the input itself
    (analysis/lge.py), each valued with the number behind it: NOT_LGE_CONTRAST_NOTE and DARK_BLOOD_NOTE with the
    blood / healthy myocardium median ratio (summary `input_checks.blood_myocardium_ratio`), SMALL_FIELD_NOTE_START
    with the field of view (`input_checks.field_of_view_mm`), CHILD_LGE_NOTE_START with the patient's age (years,
    PatientAge or the birth and study dates: cmr.age.patient_age). A warning whose number is unknown (a signed PSIR
    has no ratio, a child of unknown age no age) stays a comment only."""
    summary = lge_summary if isinstance(lge_summary, dict) else {}
    if summary.get("determined") is False:
        return []
    warnings = [str(w) for w in summary.get("stack_warnings") or []]
    checks = summary.get("input_checks") if isinstance(summary.get("input_checks"), dict) else {}
    age = patient_age(header)
    found = []
    for start, concept, value, unit in (
            (NOT_LGE_CONTRAST_NOTE, codes.NOT_LGE_CONTRAST, _number(checks, "blood_myocardium_ratio"), codes.UNIT_NONE),
            (f"{DARK_BLOOD_NOTE}:", codes.DARK_BLOOD_LGE, _number(checks, "blood_myocardium_ratio"), codes.UNIT_NONE),
            (SMALL_FIELD_NOTE_START, codes.SMALL_FIELD, _number(checks, "field_of_view_mm"), codes.UNIT_MM),
            (CHILD_LGE_NOTE_START, codes.CHILD_LGE, None if age is None else age.years, codes.UNIT_YEAR)):
        if any(warning.startswith(start) for warning in warnings):
            found += _measurement(concept, value, unit)
    return found


def mvo_caveat_measurement(block: dict | None) -> list:
    """The NUM that says, first in the MVO group (after its lower-bound NUM), that the model card does not validate
    the MVO (summary `mvo_validation`, mvo_validation_text): codes.MVO_NOT_VALIDATED_AGREEMENT with how often 'MVO
    present' agreed with the expert (`presence_accuracy`, in %), or without such figures MVO_NOT_VALIDATED_VOLUME
    with the MVO volume (cm³); [] where the MVO is validated or its volume not given."""
    block = block if isinstance(block, dict) else {}
    if block.get("determined") is False or block.get("mvo_volume_ml") is None:
        return []
    validation = block.get("mvo_validation")
    if not mvo_validation_text(validation):
        return []
    accuracy = _number(validation, "presence_accuracy") if isinstance(validation, dict) else None
    if accuracy is not None:
        return _measurement(codes.MVO_NOT_VALIDATED_AGREEMENT, 100.0 * accuracy, codes.UNIT_PERCENT)
    return _measurement(codes.MVO_NOT_VALIDATED_VOLUME, _number(block, "mvo_volume_ml"), codes.UNIT_ML)


def burden_name(name: str, verdict: tuple | None) -> str:
    """The tracking identifier of the scar group, with the large-burden verdict (large, rule, whether the rule is
    Chan 2014's HCM rule; without the third, it is) where there is one: "LGE scar incl. MVO; large burden YES (HCM
    rule >=15 %)", "(site rule >20 %)" for a site-configured cut-off, shortened to fit 64 characters (LO)."""
    if verdict is None:
        return name
    large, rule, *chan = verdict
    answer = "YES" if large else "no"
    kind = "HCM rule" if not chan or chan[0] else "site rule"
    for text in (f"{name}; large burden {answer} ({kind} {rule})", f"{name}; large burden {answer} ({rule})",
                 f"{name}; large burden {answer}"):
        if len(text) <= 64:
            return text
    return tracking_text(f"{name}; large burden {answer}")


def aha_groups(block: dict | None, index: _SegmentIndex, scar: bool, phase_position: int = 0,
               presence: dict | None = None) -> list:
    """One TID 1411 group per AHA segment (finding type LV myocardium, finding site: CID 3717 code), region = the
    segment's myocardium outlined on its slices; LGE: scar extent and transmurality (max, mean); cine at ED: wall
    thickness; first the geometry caveat of the segment names where there is one (aha_caveat_measurements). A segment
    holding scar voxels in a study where the node states no significant LGE by its automatic count (`presence`: the
    LGE summary's `lge_presence`, significant false: no AHA segment holds a focal scar) begins with codes.LGE_NOT_SIGNIFICANT valued with its %LGE limit. A
    scar-free segment (extent and transmurality 0 %) begins with the segment's number under codes.AHA_NO_SCAR ("No
    scar (extent and transmurality 0 %)") and codes its enhancement Absent: OHIF v3 draws the 0 % values after it
    blank."""
    if not isinstance(block, dict) or not block.get("applicable"):
        return []
    segment_map = _aha_map(block, index, phase_position)
    if segment_map is None:
        return []
    groups = []
    for values in block.get("segments", []):
        number = int(values["segment"])
        measurements, qualitative = [], []
        scar_values = [_number(values, key) for key in
                       ("scar_extent_percent", "transmurality_max_percent", "transmurality_mean_percent")]
        voxels = values.get("scar_voxels")  # decided on the count, not the stored (rounded) percentages
        if scar and (voxels == 0 if voxels is not None else scar_values[0] == 0 and not any(scar_values[1:])):
            # no scar in the segment: OHIF v3 draws a NUM of value 0 without its number ("Scar extent ...: %"), read
            # as not measured; first the segment's number under a concept saying "no scar, 0 %", the finding coded
            # Absent; the 0 % values stay under their own concepts for machine readers
            measurements += _measurement(codes.AHA_NO_SCAR, float(number), codes.UNIT_NONE)
            qualitative.append(hd.sr.QualitativeEvaluation(codes.LATE_CONTRAST_ENHANCEMENT, codes.ABSENT))
        if scar:
            for concept, value in zip((codes.AHA_SCAR_EXTENT, codes.TRANSMURALITY_MAX, codes.TRANSMURALITY_MEAN),
                                      scar_values):
                measurements += _measurement(concept, value, codes.UNIT_PERCENT)
        else:
            measurements += _measurement(codes.WALL_THICKNESS, _number(values, "wall_thickness_mm"), codes.UNIT_MM)
        if not measurements:
            continue
        if scar and voxels and isinstance(presence, dict) and presence.get("significant") is False:
            measurements = _measurement(codes.LGE_NOT_SIGNIFICANT, float(presence["band_percent"][0]),
                                        codes.UNIT_PERCENT) + measurements
        measurements = aha_caveat_measurements(block, number) + measurements
        what = "LGE" if scar else "ED wall thickness"
        groups += index.outline_group(
            segment_map == number, phase_position, f"AHA {number} {values.get('name', '')} ({what})", new_uid(),
            # the region is the segment's myocardium, enhanced or not: its finding type is the myocardium (a
            # "Late Contrast Enhancement" outline would draw non-enhanced myocardium as scar)
            finding_type=codes.LV_MYOCARDIUM,
            finding_sites=[hd.sr.FindingSite(codes.AHA_SEGMENTS[number])], measurements=measurements,
            qualitative=qualitative, all_slices=True)
    return groups


def _aha_map(block: dict, index: _SegmentIndex, phase_position: int) -> np.ndarray | None:
    """The AHA segment map of the result's label map, recomputed with the summary's own parameters."""
    basal_end = block.get("basal_end")
    if basal_end not in ("first", "last"):
        return None
    volume = index.result.volume
    positions, _ = stack_geometry(volume.orientation, volume.positions)
    found = aha_segments(index.labelmap[phase_position], volume.pixel_spacing, positions, basal_end,
                         scar=False, wall_thickness=False, orientation=volume.orientation)
    return found.segment_map if found.applicable else None


def cine_groups(cine: PipelineResult, index: _SegmentIndex | None, header: Dataset, config) -> list:
    """TID 1411 groups per ventricle and phase (ED/ES segments, each with its outline group) and EF/SV groups."""
    block = cine.summary or {}
    groups: list = []
    bsa = bsa_for(cine, header, config.analysis.cine.bsa_formula)
    # papillary muscles counted in the cavity: included in the blood-pool volumes, excluded from the mass
    in_cavity = cine.measurements.get("papillary_muscles", "cavity") == "cavity"
    papillary = codes.PAPILLARY_MUSCLE_INCLUDED if in_cavity else codes.PAPILLARY_MUSCLE_EXCLUDED
    papillary_mass = codes.PAPILLARY_MUSCLE_EXCLUDED if in_cavity else codes.PAPILLARY_MUSCLE_INCLUDED

    # the pipeline's own indexed values (value / unrounded BSA), as summary.json has them: dividing the rounded
    # numbers by the rounded BSA would differ in the second decimal (measurements: unrounded; summary: 2 decimals)
    given = cine.measurements.get("indexed") if isinstance(cine.measurements.get("indexed"), dict) \
        else block.get("indexed") if isinstance(block.get("indexed"), dict) else None

    def indexed(name: Code, key: str, value: float | None, unit: Code) -> list:
        if given is not None:
            return _measurement(name, _number(given, key), unit)
        if value is None or bsa is None:
            return []
        return _measurement(name, value / bsa[0], unit)

    # volumes and mass of a stack missing part of the LV are lower bounds, EF and SV partial (coverage_qualifier)
    bound, partial = coverage_qualifier(block), coverage_qualifier(block, "partial stack")
    ed, es = block.get("ed_phase"), block.get("es_phase")
    phase_codes = {"ed": codes.END_DIASTOLE, "es": codes.END_SYSTOLE}
    if index is not None:
        algorithm = index.result.algorithm
        for phase_key, phase_index in (("ed", ed), ("es", es)):
            if phase_index is None:
                continue
            # "ED (phase 3 of 12)": which phase of the series ED is, in the text a viewer shows as the group's name
            # (the PHASENUM NUM says it too, but OHIF shows it as "3.00 1")
            volume = index.result.volume
            numbers = phase_text.summary_phase_numbers(block)
            phases = max(getattr(volume, "acquired_phases", None) or 0, len(volume.frames))
            phase_label = f"{phase_key.upper()} ({phase_text.phase_name(phase_index, numbers)} of {phases})"
            phase_eval = [hd.sr.QualitativeEvaluation(codes.CARDIAC_CYCLE_PHASE, phase_codes[phase_key])]
            # 1-based, as the PDF and the SEG count phases (summary.json keeps the 0-based index)
            phase_number = _measurement(codes.PHASE_NUMBER, float(phase_text.phase_number(phase_index, numbers)),
                                        codes.UNIT_NONE)
            for ventricle, site in (("lv", codes.LEFT_VENTRICLE), ("rv", codes.RIGHT_VENTRICLE)):
                concept = {("lv", "ed"): codes.LV_EDV, ("lv", "es"): codes.LV_ESV,
                           ("rv", "ed"): codes.RV_EDV, ("rv", "es"): codes.RV_ESV}[(ventricle, phase_key)]
                concept_index = {("lv", "ed"): codes.LV_EDV_INDEX, ("lv", "es"): codes.LV_ESV_INDEX,
                                 ("rv", "ed"): codes.RV_EDV_INDEX, ("rv", "es"): codes.RV_ESV_INDEX}[
                    (ventricle, phase_key)]
                value = _number(block, f"{ventricle}_{phase_key}v_ml")
                # RV EDV / ESV may be read at a neighbouring phase (cine_metrics.rv_cardiac_phases): the group's
                # region is the RV segment of that phase (the cine SEG carries it, analysis.cine.segmented_phases),
                # its phase NUM that phase, and its first NUM says it is not the LV's
                other_phase = rv_phase_measurement(block, phase_key) if ventricle == "rv" else []
                read_at = (block.get("timing") or {}).get(f"rv_{phase_key}_phase") if other_phase else None
                group_phase = phase_number if read_at is None else _measurement(
                    codes.PHASE_NUMBER, float(phase_text.phase_number(int(read_at), numbers)), codes.UNIT_NONE)
                drawn_at = int(phase_index) if read_at is None else rv_drawn_phase(index.result, int(read_at),
                                                                                    phase_key)
                # a flag that changes how this number reads (an RV volume jump at its phase, an ES to confirm)
                caveat_kinds = {("rv", "ed"): ("rv_edv_uncertain",), ("rv", "es"): ("rv_esv_uncertain",),
                                ("lv", "es"): ("es_uncertain",)}.get((ventricle, phase_key), ())
                measurements = (reading_caveat_measurements(block, caveat_kinds) if value is not None else []) \
                    + (other_phase if value is not None else []) \
                    + (coverage_measurement(block) if value else []) \
                    + (partial_cycle_measurement(block) if value is not None else []) \
                    + (rv_accuracy_measurement(block) if ventricle == "rv" and value is not None else []) \
                    + _measurement(concept, value, codes.UNIT_ML, method=papillary,
                                   algorithm_id=_algorithm_id(algorithm))
                measurements += indexed(concept_index, f"{ventricle}_{phase_key}vi_ml_m2", value,
                                        codes.UNIT_ML_PER_M2) + group_phase
                # the group's name gives the phase it is drawn at, and the LV's beside it: "RV blood pool ES (phase 8
                # of 20, not LV's 7)" (a parenthetical saying "not" is never shortened away, tracking_text)
                name = f"{ventricle.upper()} blood pool {phase_label}"
                if read_at is not None:
                    name = (f"RV blood pool {phase_key.upper()} ({phase_text.phase_name(int(read_at), numbers)} of "
                            f"{phases}, not LV's {phase_text.phase_number(int(phase_index), numbers)})")
                try:
                    # no RV segmented at its own phase (0 mL): that phase's map holds nothing else, so the absent
                    # finding's region (the LV myocardium searched) is the LV's phase's
                    groups += index.groups(f"{ventricle}_blood_pool", drawn_at, name, finding_type=site,
                                           absent_phase_index=int(phase_index),
                                           measurements=measurements, qualitative_evaluations=phase_eval,
                                           qualifier=bound if value else "")
                except KeyError:
                    continue
            mass = _number(block, "lv_mass_g")
            if phase_key == "ed" and mass is not None:
                volume = mass / config.analysis.cine.myocardial_density_g_per_ml
                measurements = (coverage_measurement(block) if mass else []) + partial_cycle_measurement(block) \
                    + _measurement(codes.VOLUME, volume, codes.UNIT_ML)
                measurements += _measurement(codes.LV_MASS, mass, codes.UNIT_G, method=papillary_mass,
                                             algorithm_id=_algorithm_id(algorithm))
                measurements += indexed(codes.LV_MASS_INDEX, "lv_mass_index_g_m2", mass, codes.UNIT_G_PER_M2) \
                    + phase_number
                try:
                    groups += index.groups("lv_myocardium", int(phase_index), f"LV myocardium {phase_label}",
                                           finding_type=codes.LV_MYOCARDIUM, measurements=measurements,
                                           qualitative_evaluations=phase_eval, qualifier=bound if mass else "")
                except KeyError:
                    pass

    # EF and SV come from the ED and ES blood-pool segments: TID 1411 groups on the ED segment (pixelmed 2022
    # validates every group of a report as TID 1411 once one group references a segment, so no TID 1501 here)
    bsa_measurement = []
    if bsa is not None:
        bsa_measurement = _measurement(codes.BODY_SURFACE_AREA, bsa[0], codes.UNIT_M2,
                                       method=codes.BSA_FORMULAS.get(bsa[1]))
    for ventricle, site, ef_code in (("lv", codes.LEFT_VENTRICLE, codes.LV_EF_MR),
                                     ("rv", codes.RIGHT_VENTRICLE, codes.RV_EF_MR)):
        sv = _number(block, f"{ventricle}_sv_ml")
        measurements = _measurement(ef_code, _number(block, f"{ventricle}_ef_percent"), codes.UNIT_PERCENT)
        # the RV's own ED / ES phases, where RVEF comes from volumes read at other phases than the LV's
        other_phases = rv_phase_measurement(block, "ed") + rv_phase_measurement(block, "es") \
            if ventricle == "rv" else []
        # the ESV again, on the ED display copy: OHIF v3's SR viewport steps only through the groups drawn on the
        # series of its first group (the ED copy), so the ES groups (on the ES copy) are not reached there; on a
        # partial stack the coverage NUM then says the volumes are lower bounds, as in their ED and ES groups
        esv = _number(block, f"{ventricle}_esv_ml")
        coverage = codes.PARTIAL_STACK_ESV_LOWER if esv is not None else codes.PARTIAL_STACK_LV_EXTENT
        measurements = (coverage_measurement(block, coverage) if measurements else []) \
            + (partial_cycle_measurement(block) if measurements else []) \
            + (rv_accuracy_measurement(block) if ventricle == "rv" and measurements else []) \
            + (other_phases if measurements else []) + measurements
        # the flags that change how EF / SV read: an ES to confirm (LVEF), an RV volume jump at RV ED / ES (RVEF), LV
        # and RV stroke volumes disagreeing, first in the group (break51c #3)
        caveat_kinds = ("sv_mismatch", "es_uncertain") if ventricle == "lv" else \
            ("sv_mismatch", "rv_edv_uncertain", "rv_esv_uncertain")
        measurements = (reading_caveat_measurements(block, caveat_kinds) if measurements else []) + measurements
        measurements += _measurement(codes.LV_ESV if ventricle == "lv" else codes.RV_ESV, esv, codes.UNIT_ML,
                                     method=papillary)
        # and the EDV, so that the group holds both volumes its EF and SV come from (break49b #8: OHIF showed EF, ESV
        # and SV without it); after the ESV, which OHIF shows nowhere else, as EDV is in LV / RV blood pool ED
        measurements += _measurement(codes.LV_EDV if ventricle == "lv" else codes.RV_EDV,
                                     _number(block, f"{ventricle}_edv_ml"), codes.UNIT_ML, method=papillary)
        measurements += _measurement(codes.STROKE_VOLUME, sv, codes.UNIT_ML,
                                     finding_sites=[hd.sr.FindingSite(site)])
        sv_index = codes.LV_SV_INDEX if ventricle == "lv" else codes.RV_SV_INDEX
        measurements += indexed(sv_index, f"{ventricle}_svi_ml_m2", sv, codes.UNIT_ML_PER_M2)
        if ventricle == "lv":
            measurements += bsa_measurement
        if not measurements:
            continue
        name = f"{ventricle.upper()} function (ED and ES)"
        try:
            # RVEF's EDV read at the RV's own ED (rv_phase_measurement): the group is that phase's RV segment, on
            # its RV ED SEG and display copy, not the RV at the LV's ED, another volume (break51c #2)
            rv_ed = (block.get("timing") or {}).get("rv_ed_phase") \
                if ventricle == "rv" and rv_phase_measurement(block, "ed") else None
            drawn_at = None if index is None or ed is None else \
                int(ed) if rv_ed is None else rv_drawn_phase(index.result, int(rv_ed), "ed")
            found = index.groups(f"{ventricle}_blood_pool", drawn_at, name, tracking_uid=new_uid(), finding_type=site,
                                 finding_sites=[hd.sr.FindingSite(site)], measurements=measurements,
                                 qualifier=partial, absent_phase_index=int(ed)) \
                if drawn_at is not None else None
        except KeyError:
            found = None
        if found:
            groups += found
        else:
            groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=new_uid(), identifier=tracking_text(name, partial)),
                finding_type=site, finding_sites=[hd.sr.FindingSite(site)], measurements=measurements))
    if index is not None and ed is not None:
        groups += max_wall_thickness_groups(block, index)
        groups += aha_groups(block.get("aha_segments"), index, scar=False, phase_position=0)
    return groups


def max_wall_thickness_groups(block: dict, index: _SegmentIndex) -> list:
    """The TID 1411 group of the maximal ED wall thickness (summary `max_wall_thickness`): (122445, DCM, "Wall
    Thickness") derived as Maximum, finding site the LV myocardium and its AHA segment (CID 3717), region the ED
    myocardium outlined on the slice of the maximum; [] without a value."""
    wall = block.get("max_wall_thickness")
    value = _number(wall, "max_mm") if isinstance(wall, dict) else None
    k = wall.get("slice_index") if isinstance(wall, dict) else None
    if value is None or not isinstance(k, int):
        return []
    mask = index.mask(MYOCARDIUM_LABELS, 0)
    if not 0 <= k < len(mask):
        return []
    on_slice = np.zeros_like(mask, dtype=bool)
    on_slice[k] = mask[k]
    sites = [hd.sr.FindingSite(codes.LV_MYOCARDIUM)]
    if wall.get("segment") in codes.AHA_SEGMENTS:
        sites.append(hd.sr.FindingSite(codes.AHA_SEGMENTS[wall["segment"]]))
    measurements = _measurement(codes.WALL_THICKNESS_STANDARD, value, codes.UNIT_MM, derivation=codes.MAXIMUM,
                                finding_sites=sites, algorithm_id=_algorithm_id(index.result.algorithm))
    # where it lies: the finding sites and the region (a longer name is cut at 64 characters with the outline suffix)
    return index.outline_group(on_slice, 0, "LV maximal ED wall thickness", new_uid(), finding_type=codes.LV_MYOCARDIUM,
                               finding_sites=[hd.sr.FindingSite(codes.LV_MYOCARDIUM)], measurements=measurements)


def _region_sources(content: Dataset, results: Sequence[PipelineResult], known: set[str],
                    shown: Sequence[SegmentationResult] = ()) -> list[Dataset]:
    """Headers of the source images the image regions (SCOORD) select from, for the evidence sequence: analysed
    images, or the display copies of `shown` segmentations."""
    referenced: set[str] = set()
    stack = [content]
    while stack:
        item = stack.pop()
        if item.get("ValueType") == "IMAGE" and item.get("ReferencedSOPSequence"):
            referenced.add(str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID))
        stack.extend(item.get("ContentSequence", []))
    found: dict[str, Dataset] = {}
    for segmentation in [s for result in results for s in result.segmentations] + list(shown):
        for instance in segmentation.series.instances:
            uid = str(instance.sop_instance_uid)
            if uid in referenced and uid not in known:
                found.setdefault(uid, instance.dataset)
    return list(found.values())


def separate_containers(dataset: Dataset) -> Dataset:
    """Every CONTAINER of an SR content tree marked Continuity of Content SEPARATE (highdicom writes CONTINUOUS):
    its items are separate statements - measurements, comments, suggestions - not one running text, and a viewer
    that renders CONTINUOUS children inline (OHIF v3) ran them together into one paragraph."""
    stack = [dataset]
    while stack:
        item = stack.pop()
        if item.get("ValueType") == "CONTAINER":
            item.ContinuityOfContent = "SEPARATE"
        stack.extend(item.get("ContentSequence", []))
    return dataset


def _code_item(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code.value, code.scheme_designator, code.meaning
    return item


def _predecessors(supersedes: Sequence[dict] | None) -> list[Dataset] | None:
    """Minimal datasets for the Predecessor Documents Sequence from {sop_instance_uid, series_..., study_...}."""
    if not supersedes:
        return None
    items = []
    for entry in supersedes:
        missing = [k for k in ("sop_instance_uid", "series_instance_uid", "study_instance_uid") if not entry.get(k)]
        if missing:
            raise ValueError(f"supersedes entry {entry} lacks {missing}")
        item = Dataset()
        item.SOPClassUID = entry.get("sop_class_uid", Comprehensive3DSRStorage)
        item.SOPInstanceUID = entry["sop_instance_uid"]
        item.SeriesInstanceUID = entry["series_instance_uid"]
        item.StudyInstanceUID = entry["study_instance_uid"]
        items.append(item)
    return items


#: namespace of the node's own Device Observer UID (a 2.25 UUID-derived UID per node version)
NODE_DEVICE_NAMESPACE = uuid.UUID("6f1d7c52-0b8e-4d0c-9a53-2f4b8c1e7d90")


def node_device_uid() -> str:
    """The node's Device Observer UID (TID 1004 row 1): stable for one dicomnode version."""
    return "2.25." + str(uuid.uuid5(NODE_DEVICE_NAMESPACE, f"{NODE_MODEL_NAME} {node_version()}").int)


def _observer(algorithm: AlgorithmInfo | None) -> hd.sr.ObserverContext:
    """TID 1002 device observer (TID 1004 identifying attributes) of a model, or of the node itself for None."""
    if algorithm is None:
        attributes = hd.sr.DeviceObserverIdentifyingAttributes(
            uid=node_device_uid(), name=NODE_MODEL_NAME, manufacturer_name=NODE_MANUFACTURER,
            model_name=NODE_MODEL_NAME)
    else:
        attributes = hd.sr.DeviceObserverIdentifyingAttributes(
            uid=algorithm.device_uid, name=algorithm.name[:64], manufacturer_name=algorithm.manufacturer[:64],
            model_name=algorithm.name[:64])
    return hd.sr.ObserverContext(observer_type=hd.sr.CodedConcept("121007", "DCM", "Device"),
                                 observer_identifying_attributes=attributes)


def _observation_context(algorithms: Sequence[AlgorithmInfo | None]) -> hd.sr.ObservationContext:
    """TID 1001 at the root: the device observer of the one model that made the observations, or the node itself
    (None) when several models did (each group then names its own, see _annotate)."""
    return hd.sr.ObservationContext(observer_device_context=_observer(algorithms[0]))


def _stack_comments(result: PipelineResult) -> list[str]:
    """The stack warnings of a pipeline's input series (summary `stack_warnings`: a gap or missing slice, N of M
    phases present, a single slice, left-out duplicates, shifted positions), one text each."""
    warnings = (result.summary or {}).get("stack_warnings") or []
    what = "LGE" if result.name == "lge" else result.name
    coverage = (result.summary or {}).get("coverage") or {}
    # a stack that misses part of the LV (cine_metrics.stack_coverage): its volumes are lower bounds
    incomplete = [f"{what} input stack: incomplete LV coverage: {reason}; {coverage.get('caveat')}"
                  for reason in coverage.get("reasons") or [] if coverage.get("complete") is False]
    source = phase_text.source_series_name(result.summary)
    summary = result.summary or {}
    reason = summary.get("reason") if summary.get("determined") is False else None
    # LGE numbers withheld (not determined) or its large-burden flag withheld: said first, where no number says it
    withheld = [f"{what} numbers not given (no volume, mass, %LGE or burden finding): {reason}; the segmentation is "
                "unreliable"] if reason else []
    burden = summary.get("large_scar_burden_reason") if not reason else None
    withheld += [f"{what} large scar burden not given: {burden}"] if burden else []
    # the cine's flags, as the PDF and the console give them (values outside the reference range, LV and RV stroke
    # volumes that disagree, the RV's validated error, timing and BSA notes), but the coverage said just above
    validation = summary.get("lge_percent_validation") if result.name == "lge" and not reason else None
    checks = [f"{what} %LGE error vs expert readers: mean absolute error {validation['mae']:g} points (bias "
              f"{validation.get('bias')}, SD {validation.get('sd')}) on {validation.get('data')}, "
              f"{validation.get('patients')} patients, cross-validated"
              + ("; %LGE lies within it of the large-burden cut-off" if validation.get("near_cutoff") else "")] \
        if isinstance(validation, dict) and validation.get("mae") is not None else []
    checks += [f"{what}: {flag}" for flag in summary.get("flags") or [] if result.name == "cine" and isinstance(flag, str)
              and not (incomplete and flag.startswith(COVERAGE_FLAG_START))]
    return ([f"{what} measured on {source}"] if source else []) + withheld + incomplete + checks + \
        [f"{what} input stack: {warning}" for warning in warnings
         if str(warning).strip() and warning != reason and not (reason and warning == UNRELIABLE_SEG_NOTE)] + \
        (lge_comments(summary) if result.name == "lge" else [])


def lge_comments(summary: dict | None) -> list[str]:
    """What the PDF and the console say of an LGE result beyond its numbers, as SR comments (break45a finding 8):
    each threshold method's caveat where computed though not validated and the full reason of each not reported
    (threshold_text, as PDF page 2), why the AHA segments were not assigned (`aha_segments.reader_reason`, the sentence for the reader; else `reason`), LGE
    presence where the node does not state it present (`lge_presence`: no significant LGE, or uncertain), and the LGE
    series of the same slices left aside (`series_left_aside`); the methods and AHA only where the numbers are given
    (withheld numbers: the comments of _stack_comments say why)."""
    summary = summary if isinstance(summary, dict) else {}
    comments = []
    if summary.get("determined") is not False:
        nsd, fwhm = summary.get("nsd"), summary.get("fwhm")
        comments += [f"LGE {line}" for line in threshold_caveat_lines(nsd or {}, fwhm or {})]
        if isinstance(nsd, dict) or isinstance(fwhm, dict):
            comments += [f"LGE {line[0].lower()}{line[1:]}" for line in threshold_method_lines(nsd or {}, fwhm or {})]
        aha = summary.get("aha_segments")
        if isinstance(aha, dict) and not aha.get("applicable") and (aha.get("reader_reason") or aha.get("reason")):
            comments.append(f"LGE AHA segments not assigned: {aha.get('reader_reason') or aha['reason']}")
        presence = presence_text(summary.get("lge_presence"))
        if presence:
            comments.append(f"LGE presence: {presence}")
    return comments + [f"LGE left aside: {text}" for text in summary.get("series_left_aside") or []]


#: the NUM concept a cine range flag (cine_metrics.normal_range_flags, by its NORMAL_VALUES key) is about
RANGE_FLAG_CONCEPTS = {"lv_edv_ml": codes.LV_EDV, "lv_edvi_ml_m2": codes.LV_EDV_INDEX, "lv_esv_ml": codes.LV_ESV,
                       "lv_ef_percent": codes.LV_EF_MR, "lv_mass_index_g_m2": codes.LV_MASS_INDEX,
                       "rv_edv_ml": codes.RV_EDV, "rv_esv_ml": codes.RV_ESV, "rv_edvi_ml_m2": codes.RV_EDV_INDEX,
                       "rv_ef_percent": codes.RV_EF_MR}
#: TID 1500 row 12: the report-level "Qualitative Evaluations" container (TEXT / CODE), for what applies to a whole
#: pipeline's numbers rather than one measurement group
QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")


def _flag_concept(comment: str, what: str) -> Code | None:
    """The NUM concept of the quantity a "<what>: <range flag>" comment judges (RANGE_FLAG_CONCEPTS; the maximal wall
    thickness flag: its Wall Thickness NUM); None for any other comment."""
    flag = comment.removeprefix(f"{what}: ")
    if flag != comment and flag.startswith(WALL_THICKNESS_START):  # the HCM criterion, beside the maximum it judges
        return codes.WALL_THICKNESS_STANDARD
    if flag == comment or not is_range_flag(flag):
        return None
    names = sorted(((spec["name"], key) for key, spec in NORMAL_VALUES.items()), key=lambda n: -len(n[0]))
    key = next((key for name, key in names if flag.startswith(f"{name} ")), None)
    return RANGE_FLAG_CONCEPTS.get(key)


def _holds(group, concept_code: Code) -> bool:
    return any(item.ValueType == "NUM" and item.ConceptNameCodeSequence[0].CodeValue == concept_code.value
               and item.ConceptNameCodeSequence[0].CodingSchemeDesignator == concept_code.scheme_designator
               for item in group[0].ContentSequence)


def _annotate(groups: list, comments: Sequence[str], observer: AlgorithmInfo | None, what: str,
              always: bool = False) -> tuple[list, list[str]]:
    """Add to the groups of one pipeline (TID 1411 / 1501 measurement groups, both extensible) its model as device
    observer (HAS OBS CONTEXT, TID 1002/1004; PS3.3 C.17.5: a content item's observation context is its parent's
    unless it has HAS OBS CONTEXT children), where the report holds several pipelines, and place its comments (TEXT
    (121106, DCM, "Comment"), CONTAINS), each once, at the level it applies to:
    - a value outside its reference range (_flag_concept) in the first group holding that value's NUM;
    - with `always` (the LGE numbers withheld: no NUM, the comments say why), all in the first group;
    - the rest (stack, coverage and accuracy notes, which qualify every number of the pipeline) returned, for the
      report-level Qualitative Evaluations container (build_sr).
    Returns (groups, the comments left for the report level)."""
    placed: dict[int, list[str]] = {}
    report_level: list[str] = []
    for text in comments:
        concept_code = None if always else _flag_concept(text, what)
        at = 0 if always else next((k for k, group in enumerate(groups) if concept_code is not None
                                    and _holds(group, concept_code)), None)
        if at is None or not groups:
            report_level.append(text)
        else:
            placed.setdefault(at, []).append(text)
    for position, group in enumerate(groups):
        container = group[0]
        items = list(container.ContentSequence)
        if observer is not None:
            at = max((k + 1 for k, item in enumerate(items) if item.RelationshipType == "HAS OBS CONTEXT"), default=0)
            items[at:at] = list(_observer(observer))
        items += [hd.sr.TextContentItem(name=codes.COMMENT, value=text, relationship_type="CONTAINS")
                  for text in placed.get(position, [])]
        container.ContentSequence = hd.sr.ContentSequence(items)
    return groups, report_level


def _report_comments(texts: Sequence[str]) -> hd.sr.ContainerContentItem | None:
    """TID 1500 row 12 "Qualitative Evaluations" (CONTAINS, under the root) holding one TEXT Comment per text."""
    if not texts:
        return None
    container = hd.sr.ContainerContentItem(name=QUALITATIVE_EVALUATIONS, relationship_type="CONTAINS",
                                           is_content_continuous=False)
    container.ContentSequence = hd.sr.ContentSequence(
        [hd.sr.TextContentItem(name=codes.COMMENT, value=text, relationship_type="CONTAINS") for text in texts])
    return container


def build_sr(
    header: Dataset,
    results: Sequence[PipelineResult],
    segs: dict[str, list],
    context,
    series_number: int,
    supersedes: Sequence[dict] | None = None,
    shown: dict[str, SegmentationResult] | None = None,
    seg_missing: dict[str, str] | None = None,
    not_measured: Sequence[str] = (),
) -> Dataset | None:
    """The TID 1500 Measurement Report of the LGE and cine results; None when there is no LGE or cine result.

    `header`: a source dataset of the study (patient/study attributes); `segs`: SegmentationResult.key -> its SEG,
    or the list of (SegPart, SEG) written for it (seg.seg_parts); `shown`: SegmentationResult.key -> the same
    segmentation on the images its SEGs reference, where those are display copies (results/display_copy.py): the
    outlines are then drawn on the copies, so SR and SEG sit on one series, and the copies are in the evidence.
    `seg_missing`: SegmentationResult.key -> why its SEG was not written; its pipeline's measurements stay in the
    report, their regions given as outlines on the analysed source images (TID 1411 allows image regions in place of
    a segment reference), each group saying in a comment that the SEG was not written.
    `not_measured`: why each series recognised but not measured by this version was left (T1 / T2 maps, perfusion:
    analysis.phase_text.maps_not_measured, each naming its series), report-level comments after the analyses not
    performed.
    """
    seg_missing = dict(seg_missing or {})
    shown = dict(shown or {})
    config = context.config
    per_pipeline: list[tuple[list, list[str], AlgorithmInfo, bool]] = []
    names: list[str] = []  # each pipeline's name as its comments begin ("LGE", "cine")
    algorithms: list[AlgorithmInfo] = []
    for result in results:
        if result.name not in ("lge", "cine") or not result.summary:
            continue
        seg_result = result.segmentations[0] if result.segmentations else None
        index = None
        missing_note = []
        if seg_result is not None and seg_result.key in segs:
            index = _SegmentIndex(shown.get(seg_result.key, seg_result), segs[seg_result.key])
        elif seg_result is not None:
            # no SEG: the regions are outlines on the analysed images themselves, so the numbers still reach the SR
            index = _SegmentIndex(seg_result, [])
            what = "LGE" if result.name == "lge" else result.name
            reason = seg_missing.get(seg_result.key, "it could not be built")
            missing_note = [f"{what} segmentation (SEG) not written: {reason}; the regions of these measurements "
                            "are outlines on the analysed images"]
        contributing = list(result.algorithms) or ([seg_result.algorithm] if seg_result else [])
        algorithms += contributing
        found = lge_groups(result, index, config) if result.name == "lge" else \
            cine_groups(result, index, header, config)
        if result.name == "cine":  # a child's numbers: every cine group with numbers says the adult ranges are off
            found = _with_caveats(found, child_measurements(result, header, config))
            found = bsa_disagreement_caveat(found, result.summary)
        else:  # an input the LGE model may misread: every LGE group with numbers says so
            found = _with_caveats(found, lge_input_measurements(result.summary, header))
        spacing = index.result.volume.pixel_spacing if index is not None else None
        aspect = non_square_aspect(spacing)
        if found and aspect is not None:
            found = _with_aspect_caveat(found, aspect)
            missing_note += [f"{'LGE' if result.name == 'lge' else result.name}: {non_square_note(spacing)}"]
        found = _capped_caveats(first_group_notices(
            found, supersede_measurements(supersedes) + not_analysed_measurement(not_measured)))
        if found:
            model = seg_result.algorithm if seg_result is not None else contributing[0]
            withheld = result.name == "lge" and (result.summary or {}).get("determined") is False
            cycle_note = partial_cycle_comment(result.summary) if result.name == "cine" else []
            per_pipeline.append((found, missing_note + _stack_comments(result) + cycle_note + mvo_comments(result),
                                 model, withheld))
            names.append("LGE" if result.name == "lge" else result.name)
    if not per_pipeline or not algorithms:
        return None
    # one model: it is the document's device observer (IHE AIR); several: the node is, and each pipeline's groups
    # name their own model (a single root observer would claim every observation for one model)
    several = len({model.device_uid for _, _, model, _ in per_pipeline}) > 1
    groups: list = []
    # a re-analysis says first which report it replaces, when and why (OHIF shows no Predecessor Documents Sequence)
    report_level: list[str] = [notice] if (notice := supersede_text(supersedes)) else []
    for (found, comments, model, withheld), what in zip(per_pipeline, names):
        annotated, left = _annotate(found, comments, model if several else None, what, always=withheld)
        groups += annotated
        report_level += left
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context([None] if several else [per_pipeline[0][2]]),
        procedure_reported=codes.MRI_UNSPECIFIED_BODY_REGION,  # TID 1500 row 4: a member of CID 100
        imaging_measurements=groups,
        title=codes.IMAGING_MEASUREMENT_REPORT,
    )
    # the analysis not performed (a cine-only study's LGE, an LGE-only study's cine), so the report does not read as
    # if it had been run and found nothing (break43d)
    report_level += [f"{'LGE' if r.name == 'lge' else r.name} analysis not performed: {d.reason}" for r in results
                     if r.name in ("lge", "cine") and not r.summary for d in r.declined]
    report_level += [str(reason) for reason in not_measured]
    comments = _report_comments(list(dict.fromkeys(report_level)))  # each said once
    if comments is not None:  # TID 1500 row 12, after the Imaging Measurements (row 8)
        report[0].ContentSequence.append(comments)
    # the report-text suggestions are not measurements: they go into their own text-only SR (build_suggestions_sr),
    # which viewers show as text (OHIF lists a TID 1500 report as measurements only); see docs/conformance.md
    started_at: dt.datetime = context.started_at
    header = own_header(header)  # highdicom copies its elements into the SR as they are: the SR's own, not shared
    evidence = [header] + [seg for entry in segs.values()
                           for seg in ([entry] if isinstance(entry, Dataset) else [s for _, s in entry])]
    evidence += _region_sources(report[0], results, {str(ds.SOPInstanceUID) for ds in evidence},
                                list(shown.values()))
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=separate_containers(report[0]),
        series_instance_uid=new_uid(),
        series_number=series_number,
        sop_instance_uid=new_uid(),
        instance_number=1,
        manufacturer=NODE_MANUFACTURER,
        manufacturer_model_name=NODE_MODEL_NAME,
        software_versions=node_version(),
        is_complete=True,
        is_final=False,
        is_verified=False,
        previous_versions=_predecessors(supersedes),
        coding_schemes=codes.coding_schemes(),
        series_date=started_at.date(),
        series_time=started_at.time(),
        content_date=started_at.date(),
        content_time=started_at.time(),
    )
    # the specific procedure goes into the study-level Procedure Code Sequence (General Study, C.7.2.1); a study that
    # already states its procedure keeps it, as study attributes must agree across the study's instances
    sr.ProcedureCodeSequence = list(header.get("ProcedureCodeSequence") or []) or [_code_item(codes.MR_OF_HEART)]
    series_what = " + ".join(r.name.upper() if r.name == "lge" else r.name for r in results
                             if r.name in ("lge", "cine") and r.summary) + " measurements"
    return fit_character_set(apply_provenance(sr, algorithms, started_at, series_what))


def suggestion_text(suggestion: dict) -> str:
    """The visible text of one suggestion: said to be unverified text of ANOTHER patient's report (not a prior
    report of this patient), with its report bank id and the similarity score, before the sentence itself - a
    viewer that shows only item values (OHIF v3 renders no children of a TEXT item) shows it whole, and nobody takes
    another patient's findings or numbers for this study's."""
    return (f"Unverified suggestion from ANOTHER patient's report (report bank id {suggestion['report_id']}, "
            f"similarity {float(suggestion['score']):.2f}; not a finding of this study, its numbers are not this "
            f"study's): {suggestion['text']}")


def suggestions_container(suggestions: PipelineResult | None) -> hd.sr.ContainerContentItem | None:
    """CONTAINER "Text suggestions from other patients' reports (unverified)", SEPARATE: device observer, one TEXT per
    suggestion (suggestion_text: the sentence with its prior report id and score said before it) with its retrieval
    score (NUM) and report bank id (TEXT) as properties; None when there is nothing to suggest."""
    if suggestions is None or not suggestions.algorithms:
        return None
    items = suggestions.summary if isinstance(suggestions.summary, list) else []
    if not items:
        return None
    container = hd.sr.ContainerContentItem(name=codes.REPORT_TEXT_SUGGESTIONS, relationship_type="CONTAINS",
                                           is_content_continuous=False)
    children = list(_observation_context(suggestions.algorithms))
    for suggestion in items:
        text = hd.sr.TextContentItem(name=codes.SUGGESTED_REPORT_TEXT, value=suggestion_text(suggestion)[:65535],
                                     relationship_type="CONTAINS")
        text.ContentSequence = hd.sr.ContentSequence([
            hd.sr.NumContentItem(name=codes.RETRIEVAL_SCORE, value=round(float(suggestion["score"]), 4),
                                 unit=codes.UNIT_NONE, relationship_type="HAS PROPERTIES"),
            hd.sr.TextContentItem(name=codes.PRIOR_REPORT_ID, value=str(suggestion["report_id"])[:1024],
                                  relationship_type="HAS PROPERTIES"),
        ])
        children.append(text)
    container.ContentSequence = hd.sr.ContentSequence(children)
    return container


def build_suggestions_sr(
    header: Dataset,
    suggestions: PipelineResult,
    context,
    series_number: int,
) -> Dataset | None:
    """A text-only Comprehensive SR of the report-text suggestions, titled as unverified, beside the TID 1500 report:
    viewers show it as text, while they list a TID 1500 report as measurements only. The root is SEPARATE (each
    suggestion a labelled item of its own; CONTINUOUS ran them into one paragraph in OHIF v3)."""
    container = suggestions_container(suggestions)
    if container is None:
        return None
    root = hd.sr.ContainerContentItem(name=codes.REPORT_TEXT_SUGGESTIONS, is_content_continuous=False)
    root.ContentSequence = container.ContentSequence
    started_at: dt.datetime = context.started_at
    sr = hd.sr.ComprehensiveSR(
        evidence=[own_header(header)],  # its own patient/study elements (build_sr)
        content=root,
        series_instance_uid=new_uid(),
        series_number=series_number,
        sop_instance_uid=new_uid(),
        instance_number=1,
        manufacturer=NODE_MANUFACTURER,
        manufacturer_model_name=NODE_MODEL_NAME,
        software_versions=node_version(),
        is_complete=True,
        is_final=False,
        is_verified=False,
        coding_schemes=codes.coding_schemes(),
        series_date=started_at.date(),
        series_time=started_at.time(),
        content_date=started_at.date(),
        content_time=started_at.time(),
    )
    return fit_character_set(apply_provenance(sr, suggestions.algorithms, started_at, "report text suggestions"))
