"""An understood CMR study: headers -> analysis series with sequence, view and preferred repeat; volumes on demand."""
from __future__ import annotations

import copy
import logging
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection, Iterable, Sequence

import numpy as np
import pydicom

from dicomnode.types import Declined
from dicomnode.cmr.age import PatientAge, age_reading
from dicomnode.cmr.frames import (_float, dated_seconds, parallel_stacks, slice_centre, slice_groups, slice_thickness,
                                  stack_normal, tm_seconds)
from dicomnode.cmr.grouping import (NODE_MANUFACTURER, Candidate, UnreadableFile, _clock, group_instances,
                                    read_header)
from dicomnode.cmr.identity import IdentityConflict, identity_conflict
from dicomnode.cmr.recognize import (W, E, RecognizerRegistry, SeriesEvidence, StudyContext,
                                     NATIVE_PHASE_WORDS, build_evidence, default_registry, lge_kind, mapping_kind,
                                     lge_identity, mark_exam_protocols, weak_lge_evidence)
from dicomnode.cmr.types import AnalysisSeries, InstanceHeader, Recognition, StudyError, Volume, series_number_range
from dicomnode.cmr.volume import build_volume
from dicomnode.spool import CORRECTABLE_ATTRIBUTES, CORRECTABLE_RANGES, MAX_CORRECTED_AGE_YEARS, valid_measurement
from dicomnode.uids import MR_STORAGE_CLASSES, InvalidUID, check_uid

log = logging.getLogger("dicomnode.cmr")

PREFERENCE_RULE = ("preferred repeat = complete acquisition first (the same phase count on every slice, and the most "
                   "of the heart sampled, within half a slice spacing of the best repeat: one slice thickness plus, "
                   "between neighbouring slices, their spacing up to max(1.5 x SliceThickness, SliceThickness + 4 "
                   "mm), so that a missing slice or a gap wider than that counts less; of repeats sampling about as "
                   "much, one with such wide gaps is not complete beside one with more slice positions over the "
                   "extent they share (4 slices 20 mm apart lose to 6 contiguous 12 mm slices over the same heart); "
                   "a localizer needs 3 planes), then for LGE the strength of the recognition (an LGE recognised "
                   "on weak evidence, which a T1 map keeping its source header also gives, after one recognised at "
                   "a lower confidence band, after a strong one: confidence >= 0.8, after a strong one also named an "
                   "LGE in its SeriesDescription or phase-sensitive), then PSIR over "
                   "magnitude for LGE (then signed over unsigned values), then the latest (SeriesDate + "
                   "SeriesTime, AcquisitionDate + AcquisitionTime, ContentDate + ContentTime or AcquisitionDateTime: "
                   "00:05 is later than 23:55 the day before; the time of day alone where a repeat has no date; then "
                   "SeriesNumber); the repeats left aside are named in the preferred stack's "
                   "warnings. An image whose pixel data cannot be read or decoded counts as missing: the repeats "
                   "are ranked again without it once decoding finds it. A series received twice (the same images, "
                   "pixel data and times under new UIDs: a re-route) is counted once, never a repeat")


@dataclass
class PatientInfo:
    """Patient facts used for indexing (BSA); None when absent or not a number in the header.

    PatientSize (0010,1020, m) and PatientWeight (0010,1030, kg) are kept as written even when implausible (a height
    of 175, a weight of 75000 or of 0): body_surface_area_m2 refuses them with the reason (centimetres, grams), which the
    measurement reports as a flag instead of silently leaving the indexed values out."""

    sex: str | None = None  # "M" | "F" | "O"
    age_years: float | None = None
    height_m: float | None = None
    weight_kg: float | None = None
    age: PatientAge | None = None  # cmr.age: from PatientAge, else PatientBirthDate and the study's date
    #: one line per attribute the study's instances disagree on (study_patient): its values, the one used and why;
    #: said beside the numbers it enters (the cine's stack_warnings) and in the log
    disagreements: list[str] = field(default_factory=list)
    #: keyword -> the value used (as received) of each attribute the instances disagree on, for the result objects'
    #: Patient Study module to state the values the numbers were computed with
    values_used: dict[str, object] = field(default_factory=dict)
    #: where the instances disagree on PatientSize or PatientWeight: each distinct (height m, weight kg) pair the MR
    #: images hold (None where an image has none or not a number), in the order received, for the BSA the other
    #: images' values would give (cine_metrics.other_bsa_m2)
    size_weight_held: list[tuple[float | None, float | None]] = field(default_factory=list)
    #: PatientSize / PatientWeight present but not a number: keyword -> the text as written ("66 kg"), so that the
    #: no-BSA flag says "not a number", not "absent"
    not_numbers: dict[str, str] = field(default_factory=dict)
    #: what a reader must know of the age data (cmr.age.AgeReading.note: unusable, or PatientAge and the birth date
    #: disagree); None where nothing
    age_note: str | None = None

    @classmethod
    def from_dataset(cls, ds) -> "PatientInfo":
        sex = str(getattr(ds, "PatientSex", "") or "").strip().upper() or None
        reading = age_reading(ds)
        age = reading.age

        def number(keyword):  # 0 or a negative value kept: body_surface_area_m2 says it is not plausible
            try:
                value = float(getattr(ds, keyword))
            except (AttributeError, TypeError, ValueError):
                return None
            return value if math.isfinite(value) else None

        def written(keyword) -> str:  # the text as received, also where pydicom cannot convert it
            try:
                return str(getattr(ds, keyword, "") or "").strip()
            except (TypeError, ValueError):
                raw = getattr(ds.get_item(keyword), "value", b"") if hasattr(ds, "get_item") else b""
                return (raw.decode("latin-1", "replace") if isinstance(raw, bytes) else str(raw)).strip()

        not_numbers = {keyword: written(keyword) for keyword in ("PatientSize", "PatientWeight")
                       if number(keyword) is None and written(keyword)}
        return cls(sex=sex if sex in ("M", "F", "O") else None, age_years=None if age is None else age.years, age=age,
                   height_m=number("PatientSize"), weight_kg=number("PatientWeight"), not_numbers=not_numbers,
                   age_note=reading.note)


#: the patient attributes PatientInfo reads, what each is used for (said where the study's instances disagree on it)
PATIENT_ATTRIBUTES = {"PatientSize": "BSA and the indexed values", "PatientWeight": "BSA and the indexed values",
                      "PatientAge": "the age that decides adult or child reference ranges",
                      "PatientBirthDate": "the age that decides adult or child reference ranges",
                      "PatientSex": "the sex-specific reference ranges"}
_PATIENT_UNITS = {"PatientSize": " m", "PatientWeight": " kg"}


def _patient_value(ds, keyword: str) -> str | None:
    """The value of a PATIENT_ATTRIBUTES `keyword` as compared between instances ("95" and "95.0" are one weight);
    None where absent or empty."""
    text = str(ds.get(keyword, "") or "").strip()
    if not text:
        return None
    if keyword in _PATIENT_UNITS:
        try:
            return f"{float(text):g}"
        except ValueError:
            return text
    return text.upper()


def study_patient(datasets: list, in_receive_order: bool,
                  resent: Sequence[bool] | None = None) -> tuple[object, dict[str, str]]:
    """(the dataset PatientInfo is read from, {keyword: line} of each PATIENT_ATTRIBUTES attribute the instances
    disagree on).

    `datasets`: the study's instance headers, oldest received first where `in_receive_order` (the node's spool
    index, StateDB.study_instances: a corrected re-send updates an instance's receive time). Only the MR images that
    are not this node's own results sent back (patient_sources) are read: a SEG / SR / PDF / display copy of an
    earlier run restates the values that run used and corrects nothing. Where every such instance that has a value
    has the same one, the first is returned as it is. Where they hold different values of an attribute, the value of
    the instances sent again is used (`resent`: (datasets,) bools, True for an instance of a series an earlier
    analysis of the study read, received after it read them, node.Node._resent_paths: a correction is newer than
    what it corrects; a series first received after an analysis is not sent again), of those the one received last; where none sent again holds one, the value most instances hold (of
    as many, the one received later, or later in file order without the receive order): within one transmission
    the order a sender sends its series in decides nothing (break48b #4). A weight,
    height or age outside what a correction may set (spool.valid_measurement: CORRECTABLE_RANGES, kg and m; 175 given
    as a height is centimetres) is never the one used; where no value is plausible, the first instance's is kept.
    The line says each value with its count, the value used and why, and each implausible value as ignored."""
    flags = list(resent) if resent is not None else [False] * len(datasets)
    if len(flags) != len(datasets):
        raise ValueError(f"resent: {len(flags)} flags for {len(datasets)} datasets")
    sources = {id(ds) for ds in patient_sources(datasets)}
    flags = [flag for ds, flag in zip(datasets, flags) if id(ds) in sources]
    datasets = [ds for ds in datasets if id(ds) in sources]
    first = datasets[0]
    chosen = None
    lines: dict[str, str] = {}
    for keyword, use in PATIENT_ATTRIBUTES.items():
        values = [_patient_value(ds, keyword) for ds in datasets]
        counts: dict[str, int] = {}
        for value in values:
            if value is not None:
                counts[value] = counts.get(value, 0) + 1
        if len(counts) < 2:
            continue
        last = {value: at for at, value in enumerate(values) if value is not None}
        ignored = [value for value in counts if keyword in CORRECTABLE_ATTRIBUTES
                   and not valid_measurement(keyword, datasets[last[value]].get(keyword))]
        plausible = {value: count for value, count in counts.items() if value not in ignored}
        if not plausible:
            used = next(value for value in values if value is not None)
            why = "none of them being plausible, the value of the first instance, as read before"
        elif any(flag and value in plausible for flag, value in zip(flags, values)):
            used = max((value for flag, value in zip(flags, values) if flag and value in plausible),
                       key=lambda value: last[value])
            why = ("the value of the instances sent again after the earlier analysis (a corrected re-send is newer "
                   "than what it corrects)")
        elif in_receive_order:
            used = max(plausible, key=lambda value: (plausible[value], last[value]))
            tied = sum(1 for count in plausible.values() if count == plausible[used]) > 1
            why = ("as many instances hold another: the value of the instances received later" if tied else
                   "the value most instances hold") + (", none having been sent again after an earlier analysis (the "
                                                      "order one transmission sends its series in decides nothing)")
        else:
            used = max(plausible, key=lambda value: (plausible[value], last[value]))
            tied = sum(1 for count in plausible.values() if count == plausible[used]) > 1
            why = (("as many instances hold another: the value of the file read last (path order)" if tied else
                    "the value most instances hold") + ", the order they were received in not being known (files "
                   "read from a folder)")
        unit = _PATIENT_UNITS.get(keyword, "")
        held = ", ".join(f"{value}{unit} on {count} instance(s)" for value, count in counts.items())
        lines[keyword] = f"the study's instances disagree on {keyword} ({held}): {used}{unit} is used for {use}, {why}"
        if ignored:
            lines[keyword] += (f"; {', '.join(f'{value}{unit}' for value in ignored)} ignored: "
                               f"{_PLAUSIBLE[keyword]} (another unit, or a value entered in error)")
        if _patient_value(first, keyword) != used:
            chosen = chosen if chosen is not None else copy.deepcopy(first)  # a header: no pixel data
            chosen[keyword] = copy.deepcopy(datasets[last[used]][keyword])
    return (first if chosen is None else chosen), lines


#: what a plausible value of each CORRECTABLE_ATTRIBUTES keyword is (spool.valid_measurement), said of one ignored
_PLAUSIBLE = {"PatientWeight": "not a weight in kg between {:g} and {:g}".format(*CORRECTABLE_RANGES["PatientWeight"]),
              "PatientSize": "not a height in m between {:g} and {:g}".format(*CORRECTABLE_RANGES["PatientSize"]),
              "PatientAge": f"not an Age String of more than 0 and at most {MAX_CORRECTED_AGE_YEARS:g} years"}


def _float_or_none(ds, keyword: str) -> float | None:
    try:
        value = float(ds.get(keyword))
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def patient_sources(datasets: list) -> list:
    """The datasets the patient's size, weight, age and sex are read from (study_patient): the MR images (an MR
    Storage SOP Class, Modality MR) that are not this node's own results sent back to it (a Contributing Equipment
    Sequence naming NODE_MANUFACTURER, cmr.grouping.own_output), in their order; all of `datasets` where none is."""
    images = [ds for ds in datasets if str(ds.get("SOPClassUID", "")) in MR_STORAGE_CLASSES
              and str(ds.get("Modality", "") or "") == "MR"
              and not any(str(item.get("Manufacturer") or "").strip() == NODE_MANUFACTURER
                          for item in ds.get("ContributingEquipmentSequence") or [])]
    return images or list(datasets)


@dataclass
class CMRStudy:
    """One study as analysis sees it. Series are ordered by SeriesNumber; `declined` lists what cannot be used."""

    study_instance_uid: str
    series: list[AnalysisSeries]
    declined: list[Declined] = field(default_factory=list)
    patient: PatientInfo = field(default_factory=PatientInfo)
    #: MR images left out of their series ({"series_instance_uid", "sop_instance_uid", "reason"}); volumes add
    #: the instances whose pixel data cannot be used as they are loaded
    excluded_instances: list[dict] = field(default_factory=list)
    #: series key -> how its stack was assembled and chosen (a slice replaced by a later re-acquisition, the repeats
    #: and reconstructions left aside and why, positions a sibling stack has and it lacks); load_volume puts them
    #: first in Volume.warnings, so they reach summary `stack_warnings`, the SR and the PDF beside the numbers
    stack_warnings: dict[str, list[str]] = field(default_factory=dict)
    #: series key -> one line per other reconstruction of the same slices left aside for it, routinely (no caution
    #: on the numbers, so not a stack warning): "series 11 'DE_SAX' (magnitude of the same slices) not measured: PSIR
    #: preferred", for the LGE block's declined / methods to say which series was not measured (break2 finding 6)
    left_aside: dict[str, list[str]] = field(default_factory=dict)
    #: the patients of the study's instances when they are more than one (cmr.identity): the study is not analysed
    identity_conflict: IdentityConflict | None = None
    #: one header (pydicom Dataset) per received series, usable or not: what routing matches on when no series of
    #: the study could be used (every image left out: no geometry, no pixel data), so that the study is said to have
    #: no usable image, not to match no route
    received_headers: list = field(default_factory=list)
    #: how the study was understood (understand_study's headers, registry, in_receive_order and resent), so that
    #: load_preferred can rank the repeats again without the instances lost while decoding; None: a study built
    #: otherwise, never ranked again
    understood_from: tuple | None = field(default=None, repr=False)
    #: {path: reason} of the instances whose pixel data could not be read or decoded, left out of a new ranking
    lost: dict[str, str] = field(default_factory=dict, repr=False)

    def preferred(self, sequence: str, view: str | None = "sax") -> AnalysisSeries | None:
        """The preferred series of that sequence (and view; None = any view), or None when there is none."""
        matching = [s for s in self.series if s.sequence.value == sequence and (view is None or s.view.value == view)]
        if not matching:
            return None
        candidates = [s for s in matching if s.preferred] or matching
        clocks = _series_clocks(candidates)
        return max(candidates, key=lambda s: _preference_rank(s, clocks))

    def load_volume(self, series: AnalysisSeries, require_stack: bool = True) -> Volume:
        """Pixels + geometry of the series (StudyError when it cannot be a volume; single slice refused by default).

        Instances the volume leaves out are added to `excluded_instances` (once each); the series' `stack_warnings`
        (how it was assembled and chosen among its repeats) come first in the volume's warnings.
        """
        try:
            volume = build_volume(series, require_stack=require_stack)
        except StudyError as error:
            self._exclude(error.excluded)
            raise
        if series.view.value == "sax":
            extent = sax_extent_problem(volume)
            if extent:
                raise StudyError(f"series {series.key}: {extent}")
        chosen = self.stack_warnings.get(series.key, [])
        volume.warnings = list(chosen) + [w for w in volume.warnings if w not in chosen]
        self._exclude(volume.excluded)
        return volume

    def load_preferred(self, series: AnalysisSeries, require_stack: bool = True
                       ) -> tuple[AnalysisSeries, Volume]:
        """load_volume of `series`, the preferred one of its sequence and view, and the series measured: where the
        volume loses instances whose pixel data cannot be read or decoded (Volume.unusable; or it cannot be built
        at all), the repeats are ranked again without them (PREFERENCE_RULE: a series missing slices ranks below a
        complete one), and when another series is then preferred it is loaded instead; each series chosen again is
        loaded the same way. The study takes the new ranking (series, stack_warnings, left_aside); the instances
        lost stay in `excluded_instances` and a stack warning of the series measured names them.

        Raises StudyError as load_volume, for the last series tried."""
        while True:
            try:
                volume, failure = self.load_volume(series, require_stack), None
                lost = volume.unusable
            except StudyError as error:
                volume, failure, lost = None, error, error.unusable
            rival = self._ranked_again(series, lost) if lost else None
            if rival is None:
                if failure is not None:
                    raise failure
                return series, volume
            series = rival

    def _ranked_again(self, series: AnalysisSeries, lost: dict[str, str]) -> AnalysisSeries | None:
        """The series preferred for `series`' sequence and view once the files `lost` ({path: reason}) are left out
        of the study, taking that ranking; None where it is `series` again (or the study cannot be ranked again)."""
        if self.understood_from is None or not set(lost) - set(self.lost):
            return None
        headers, registry, in_receive_order, resent = self.understood_from
        gone = {**self.lost, **lost}
        remaining = [h for h in headers if str(h.path) not in gone]
        try:
            again = understand_study(remaining, registry, in_receive_order, resent)
        except StudyError:  # nothing left to rank
            return None
        rival = again.preferred(series.sequence.value, series.view.value)
        if rival is None or rival.key == series.key:
            return None
        named = {str(h.path): h for h in series.instances}
        notes = [f"{_short_label(series)} instance {named[path].sop_instance_uid}"
                 + (f" (InstanceNumber {number})" if (number := named[path].dataset.get("InstanceNumber")) is not None
                    else "") + f": {reason}; that series was ranked again without it, as a series missing that "
                 f"image, and this one measured instead" for path, reason in lost.items() if path in named]
        for note in notes:
            log.warning("series %s: %s", rival.key, note)
        self.series, self.left_aside, self.lost = again.series, again.left_aside, gone
        self.stack_warnings = {**again.stack_warnings,
                               rival.key: notes + again.stack_warnings.get(rival.key, [])}
        self._exclude(again.excluded_instances)
        return rival

    def _exclude(self, entries: list[dict]) -> None:
        """Add the `excluded_instances` entries not listed yet (by SOP Instance UID and frame)."""
        known = {(e["sop_instance_uid"], e.get("frame_number")) for e in self.excluded_instances}
        self.excluded_instances.extend(e for e in entries if (e["sop_instance_uid"], e.get("frame_number")) not in known)

    def first_dataset(self, series: AnalysisSeries) -> pydicom.Dataset:
        """Header (no pixel data) of the series' first instance."""
        return series.instances[0].dataset

    def summary_series(self) -> list[dict]:
        return [s.summary() for s in self.series]


#: the longest short-axis stack (mm along its normal, first to last slice) taken for one heart: an adult LV is
#: 70-130 mm long, a dilated one under 160 mm; stacks with the atria and margins stay well under this
MAX_SAX_EXTENT_MM = 300.0


def sax_extent_problem(volume: Volume) -> str | None:
    """Why a short-axis stack cannot be one heart: its slices span more than MAX_SAX_EXTENT_MM along the stack normal
    (several stacks, examinations or a mislabelled whole-body series in one series: measured as one "ventricle" it
    gives an LV EDV of litres); None when it fits."""
    positions = np.asarray(volume.positions, dtype=np.float64)
    if positions.ndim != 2 or len(positions) < 2:
        return None
    normal = np.asarray(volume.affine[:3, 2], dtype=np.float64)
    length = float(np.linalg.norm(normal))
    if not length:
        return None
    along = positions @ (normal / length)
    extent = float(np.ptp(along))
    if extent <= MAX_SAX_EXTENT_MM:
        return None
    return (f"short-axis stack spans {extent:.0f} mm along its normal ({len(positions)} slices from {along.min():.1f} "
            f"to {along.max():.1f} mm): no heart is longer than about 160 mm and a short-axis stack of one stays under "
            f"{MAX_SAX_EXTENT_MM:.0f} mm; several stacks or examinations in one series? not measured as one ventricle")


#: where a series' instances say when they were acquired, in the order read: (date keyword, time keyword); a DT
#: carries its own date
SERIES_TIME_SOURCES = (("SeriesDate", "SeriesTime"), ("AcquisitionDate", "AcquisitionTime"),
                       ("ContentDate", "ContentTime"), (None, "AcquisitionDateTime"))


@dataclass(frozen=True)
class SeriesClock:
    """When a series was acquired (its earliest instance, SERIES_TIME_SOURCES): `dated` on the clock of
    frames.dated_seconds (seconds, running across midnight), None where an instance has no valid date; `of_day`
    seconds since midnight; both None when no instance has a valid time."""
    dated: float | None
    of_day: float | None


def _series_time(candidate_or_series) -> SeriesClock:
    instances = getattr(candidate_or_series, "instances", None) or getattr(candidate_or_series, "headers")
    dated, of_day = [], []
    for header in instances:
        found = [(dated_seconds(time, date), tm_seconds(time)) for time, date in (
            (getattr(header.dataset, time_keyword, None), getattr(header.dataset, date_keyword, None) if date_keyword
             else None) for date_keyword, time_keyword in SERIES_TIME_SOURCES)]
        times = [time for _, time in found if time is not None]
        if times:
            of_day.append(times[0])
            dated.append(next((when for when, _ in found if when is not None), None))
    return SeriesClock(None if not dated or None in dated else min(dated), min(of_day) if of_day else None)


def _series_clocks(members: Iterable[AnalysisSeries]) -> dict[str, tuple[float, bool]]:
    """Per series key, when it was acquired on one clock for all `members`, so that they compare: (dated seconds,
    True) where every member with a time has a date (a repeat at 00:05 is later than one at 23:55 the day before),
    else (seconds since midnight, False); (-1.0, False) for a series without a time."""
    clocks = {s.key: _series_time(s) for s in members}
    dated = all(c.dated is not None for c in clocks.values() if c.of_day is not None)
    return {key: ((c.dated if dated else c.of_day), dated) if c.of_day is not None else (-1.0, False)
            for key, c in clocks.items()}


def _when(clock: tuple[float, bool], dated: bool = False) -> str:
    """A `_series_clocks` value as text: the time of day, with its date where `dated`."""
    seconds, has_date = clock
    return _clock(seconds if dated and has_date else seconds % 86400)


#: header positions are written to a few decimals: gaps and positions compared within this (mm)
POSITION_SLACK_MM = 0.5


def normal_spacing_mm(thickness: float) -> float:
    """The largest slice spacing (mm) whose gap still counts as sampled heart: 1.5 x the slice thickness, or the
    thickness + 4 mm where that is more (6-8 mm slices with 2-4 mm gaps, as SCMR protocols prescribe)."""
    return max(1.5 * thickness, thickness + 4.0)


@dataclass
class Coverage:
    """Where a series' slices lie: one representative ImagePositionPatient per slice position of its largest
    orientation group, the plane normal, the median slice spacing (mm, from positions; None for one slice), each
    position along the normal, and the slice thickness (median SliceThickness, else SpacingBetweenSlices; None when
    the headers give neither, `reference` then stands in: the preference sets it from the series it compares)."""

    points: list[np.ndarray]  # (3,) centre of each slice's image (frames.slice_centre), mm
    normal: np.ndarray | None
    spacing: float | None
    distances: list[float] = field(default_factory=list)
    thickness: float | None = None
    reference: float | None = None

    @classmethod
    def of(cls, frames) -> "Coverage":
        if not frames:
            return cls([], None, None)
        group = max((kept for kept, _ in parallel_stacks(frames)), key=len)  # a tilted slice left out
        slices = slice_groups(group)
        distances = [d for d, _ in slices]
        spacing = float(np.median(np.diff(distances))) if len(distances) > 1 else None
        thicknesses = [t for t in (slice_thickness(members[0]) for _, members in slices) if t is not None]
        if not thicknesses:
            thicknesses = [t for t in (_float(members[0].header.dataset.get("SpacingBetweenSlices"))
                                       for _, members in slices) if t is not None and t > 0]
        return cls([slice_centre(members[0]) for _, members in slices], stack_normal(group), spacing, distances,
                   float(np.median(thicknesses)) if thicknesses else None)

    @property
    def slab_mm(self) -> float | None:
        """The thickness one slice samples: SliceThickness, else the `reference`, else the slice spacing."""
        return self.thickness or self.reference or self.spacing

    @property
    def limit_mm(self) -> float | None:
        """The widest spacing between neighbouring slices that counts whole (`normal_spacing_mm`)."""
        return normal_spacing_mm(self.slab_mm) if self.slab_mm else None

    @property
    def length_mm(self) -> float:
        """How much of the heart the stack samples along its normal: one slice thickness (half at each end) plus,
        between neighbouring slices, their spacing up to `limit_mm` (a wider gap, a missing slice or sparse
        sampling, counts only that much); 0 for a single slice."""
        if len(self.distances) < 2 or not self.slab_mm:
            return 0.0
        gaps = np.diff(sorted(self.distances))
        return self.slab_mm + float(np.minimum(gaps, self.limit_mm).sum())

    @property
    def wide_gaps(self) -> list[float]:
        """Spacings between neighbouring slices wider than `limit_mm` (beyond the slack of header rounding)."""
        if len(self.distances) < 2 or not self.slab_mm:
            return []
        return [float(g) for g in np.diff(sorted(self.distances)) if g > self.limit_mm + POSITION_SLACK_MM]

    def positions_within(self, low: float, high: float) -> int:
        return sum(low - POSITION_SLACK_MM <= d <= high + POSITION_SLACK_MM for d in self.distances)

    def sparser_than(self, other: "Coverage") -> tuple[int, int, float] | None:
        """(my positions, theirs, the extent in mm) when this stack, with gaps wider than `limit_mm`, has fewer slice
        positions than `other` over the extent both cover (parallel planes only); else None."""
        if (not self.wide_gaps or self.normal is None or other.normal is None
                or abs(float(np.dot(self.normal, other.normal))) < 0.999 or len(other.distances) < 2):
            return None
        sign = 1.0 if float(np.dot(self.normal, other.normal)) > 0 else -1.0
        theirs = Coverage(other.points, other.normal, other.spacing, sorted(sign * d for d in other.distances))
        low = max(min(self.distances), min(theirs.distances))
        high = min(max(self.distances), max(theirs.distances))
        if high <= low:
            return None
        counts = self.positions_within(low, high), theirs.positions_within(low, high)
        return (counts[0], counts[1], high - low) if counts[0] < counts[1] else None

    def sparse_text(self) -> str:
        """'; its neighbouring slices lie up to 20 mm apart ...' when a gap is wider than `limit_mm`, else ''."""
        wide = self.wide_gaps
        if not wide:
            return ""
        return (f"; {len(wide)} of its gaps between neighbouring slices ({max(wide):.0f} mm at most) exceed the "
                f"{self.limit_mm:.0f} mm that {self.slab_mm:g} mm slices leave (each counts {self.limit_mm:.0f} mm)")

    def lacks(self, other: "Coverage") -> list[float]:
        """Positions (mm along this stack's normal) of `other`'s slices that this stack has no slice at: parallel
        planes only; a position within half a slice of one of this stack's slices (half of the smaller of its slice
        thickness and spacing, plus POSITION_SLACK_MM) is sampled by it."""
        if self.normal is None or other.normal is None or abs(float(np.dot(self.normal, other.normal))) < 0.999:
            return []
        sizes = [v for v in (self.thickness or self.reference, self.spacing) if v] or [
            v for v in (other.thickness or other.reference, other.spacing) if v]
        tolerance = POSITION_SLACK_MM + (0.5 * min(sizes) if sizes else 0.0)
        mine = [float(np.dot(p, self.normal)) for p in self.points]
        theirs = [float(np.dot(p, self.normal)) for p in other.points]
        return [d for d in theirs if not mine or min(abs(d - m) for m in mine) > tolerance]


def _positions_text(distances: list[float]) -> str:
    return ", ".join(f"{d:.2f}" for d in sorted(distances)) + " mm"


def _signed(evidence: SeriesEvidence) -> bool:
    """True when most of the series' images hold signed values (frames.FrameInfo.signed: a phase-sensitive
    reconstruction)."""
    return sum(f.signed for f in evidence.frames) * 2 > len(evidence.frames)


def _label(series: AnalysisSeries) -> str:
    """e.g. "series 12 'LGE_SAX' (6 slice(s), psir)"; a stack merged from one-slice series names its SeriesNumber
    range ("series 100-110 ...")."""
    number = series_number_range(series.series_numbers()) or "(no number)"
    kind = f", {series.lge_kind}" if series.lge_kind else ""
    return f"series {number} '{series.description}' ({series.slices} slice(s){kind})"


def _short_label(series: AnalysisSeries) -> str:
    """e.g. "series 11 'DE_SAX'" (the SeriesNumber range of a stack merged from one-slice series)."""
    return _label(series).rsplit(" (", 1)[0]


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


#: the recognition confidence from which an LGE is strongly recognised (an IR preparation, an LGE inversion time and a
#: gradient echo give 0.85; a map keeping its source images' IR header and named 'T1 ... post' 0.65)
STRONG_LGE_CONFIDENCE = 0.8


def _lge_strength(series: AnalysisSeries, evidence: SeriesEvidence) -> int:
    """3 for an LGE recognised at STRONG_LGE_CONFIDENCE or more without weak evidence (weak_lge_evidence) that is
    also named an LGE in its SeriesDescription or phase-sensitive (lge_identity), 2 for one strong on its
    inversion-recovery header alone, 1 for one recognised lower, 0 for one on weak evidence: weighed before the
    reconstruction and the time of the repeats, so that a series read as a map as much as an LGE never displaces a
    real LGE (rebreak-maps finding 2), and an unnamed later series whose IR header a T1 map keeping its source
    header also carries never displaces a named or phase-sensitive LGE of the same slices (break1 finding 2: an
    unnamed native T1 map 20 min after 'LGE_SAX' was measured as the LGE, 0.4 % scar)."""
    if weak_lge_evidence(evidence):
        return 0
    if series.sequence.confidence < STRONG_LGE_CONFIDENCE:
        return 1
    return 3 if lge_identity(evidence) else 2


def _preference_rank(series: AnalysisSeries, clocks: dict[str, tuple[float, bool]]) -> tuple:
    return (series.preferred, series.lge_kind == "psir", clocks[series.key][0], series.series_number or 0)


#: description forms of a post-contrast acquisition ('SAX_T1_post', 'MOLLI_..._POST_T1 MAP', 'T1 map 15 min', Siemens
#: MyoMaps' post-contrast MOLLI scheme 4(1)3(1)2) and of a native one ('T1 native', 'pre_T1', 'precontrast', the
#: native scheme 5(3)3)
POST_CONTRAST_WORDS = (W + "post(?!er)", r"\d+[ _-]?min" + E, r"4\(1\)3\(1\)2", r"\+[ _-]?(?:c|gd)" + E,
                       W + "gd" + E, r"(?:after|with)[ _-]?(?:contrast|gd|gado)", W + "ce" + E)
NATIVE_WORDS = NATIVE_PHASE_WORDS + (r"5\(3\)3",)  # English, German, French, Spanish, Japanese, Chinese, ...


def contrast_phase(series: AnalysisSeries, evidence: SeriesEvidence, lge_start: float | None) -> tuple[str, str]:
    """("post" | "native" | "", why) for a map: a native and a post-contrast map of the same slices are two
    measurements (ECV needs both), never repeats. In this order: the description (a native word before a post one:
    'SAX_T1_post', 'MOLLI_5(3)3_SAX_T1 MAP'); ContrastBolusStartTime (0018,1042) against the AcquisitionTime;
    ContrastBolusAgent (0018,0010) written; acquired after the study's LGE (which is itself post-contrast); else
    "" (nothing says: counted with the native ones, as a post-contrast map is usually named)."""
    text = evidence.text_hints()
    for phase, words in (("native", NATIVE_WORDS), ("post", POST_CONTRAST_WORDS)):
        found = re.search("|".join(f"(?:{w})" for w in words), text)
        if found:
            return phase, f"description {found.group(0)!r}"
    acquired = _acquisition_times(evidence)
    for header in series.instances:
        ds = header.dataset
        bolus_start = tm_seconds(ds.get("ContrastBolusStartTime"))
        if bolus_start is not None and acquired:
            if acquired[0] >= bolus_start:
                return "post", f"acquired after the ContrastBolusStartTime {_clock(bolus_start)}"
            return "native", f"acquired before the ContrastBolusStartTime {_clock(bolus_start)}"
        agent = str(ds.get("ContrastBolusAgent") or "").strip()
        if agent:
            return "post", f"ContrastBolusAgent {agent!r}"
    if lge_start is not None and acquired and acquired[0] > lge_start:
        return "post", f"acquired after the LGE ({_clock(acquired[0])} against {_clock(lge_start)})"
    return "", ""


MAP_NAMES = {"t1": "T1 map", "t2": "T2 map", "t2star": "T2* map", "ecv": "ECV map", "map": "map"}


def _measurements(series_list: list[AnalysisSeries], evidence: dict[str, SeriesEvidence]) -> dict[str, str]:
    """Per map series key, what it measures beyond its sequence ('t1', 't1 post-contrast', 't2star', 't1-source',
    'ecv'): maps of different measurements are never repeats of one another (a note on the series says which it is);
    '' for other sequences."""
    lge = [t for s in series_list if s.sequence.value == "lge" for t in _acquisition_times(evidence[s.key])]
    lge_start = min(lge) if lge else None
    found: dict[str, str] = {}
    for series in series_list:
        if series.sequence.value not in ("t1map", "t2map"):
            found[series.key] = ""
            continue
        kind = mapping_kind(evidence[series.key]) or ""
        phase, why = contrast_phase(series, evidence[series.key], lge_start)
        found[series.key] = kind + (" post-contrast" if phase == "post" else "")
        if phase:
            base = kind.removesuffix("-source")
            name = MAP_NAMES.get(base, "map") + (" source images" if kind.endswith("-source") else "")
            series.notes.append(f"{'post-contrast' if phase == 'post' else 'native (pre-contrast)'} {name} ({why}): "
                                "a measurement of its own, kept beside any "
                                + ("native" if phase == "post" else "post-contrast") + " one (ECV needs both)")
    return found


def _mark_preferred(series_list: list[AnalysisSeries], evidence: dict[str, SeriesEvidence],
                    split: frozenset[str] = frozenset(), left_aside: dict[str, list[str]] | None = None
                    ) -> dict[str, list[str]]:
    """Mark the preferred series of each sequence and view (PREFERENCE_RULE) and return, per preferred series key,
    the stack warnings that say which other series of the same sequence and view were left aside and why, and which
    slice positions another of them has that the preferred one lacks. The other reconstruction of the same slices
    in its own series (magnitude beside PSIR, as every Siemens LGE sends) is recorded in the notes, and in one line of
    `left_aside` (CMRStudy.left_aside: "series 11 'DE_SAX' (magnitude of the same slices) not measured: PSIR
    preferred"), no caution on the numbers; one split out
    of the same series (`split`: keys of grouping.split_reconstructions' stacks) is a warning. The series left aside
    get the reason in their notes."""
    warnings: dict[str, list[str]] = defaultdict(list)
    groups: dict[tuple[str, str, str], list[AnalysisSeries]] = defaultdict(list)
    measurement = _measurements(series_list, evidence)
    for series in series_list:
        groups[(series.sequence.value, series.view.value, measurement[series.key])].append(series)
    for (sequence, view, measured), members in groups.items():
        what = f"{sequence}/{view}" + (f" ({measured})" if measured else "")
        cover = {s.key: Coverage.of(evidence[s.key].frames) for s in members}
        clocks = _series_clocks(members)
        known = [c.thickness for c in cover.values() if c.thickness] or [c.spacing for c in cover.values() if c.spacing]
        for coverage in cover.values():
            coverage.reference = min(known) if known else None  # a series without SliceThickness: the finest known
        widest = max(members, key=lambda s: cover[s.key].length_mm)
        best, tolerance = cover[widest.key].length_mm, 0.5 * (cover[widest.key].spacing or 0.0)

        def uniform(s: AnalysisSeries) -> bool:
            return len(set(evidence[s.key].phase_counts)) == 1

        def near(s: AnalysisSeries) -> bool:
            return uniform(s) and cover[s.key].length_mm >= best - tolerance

        def sparser(s: AnalysisSeries) -> tuple[AnalysisSeries, tuple[int, int, float]] | None:
            """The repeat sampling about as much as `s` with more slice positions over the extent both cover, where
            `s` has gaps wider than a normal spacing."""
            for o in members:
                found = o is not s and near(o) and cover[s.key].sparser_than(cover[o.key])
                if found:
                    return o, found
            return None

        def complete(s: AnalysisSeries) -> bool:
            if sequence == "localizer":
                return len(evidence[s.key].orientations) >= 3
            return near(s) and sparser(s) is None

        def rank(s: AnalysisSeries) -> tuple:
            done = complete(s)
            return (done, uniform(s), 0.0 if done else cover[s.key].length_mm,
                    _lge_strength(s, evidence[s.key]) if sequence == "lge" else 0, s.lge_kind == "psir",
                    _signed(evidence[s.key]), clocks[s.key][0], s.series_number or 0)

        ranked = sorted(members, key=rank, reverse=True)
        chosen = ranked[0]
        chosen.preferred = True
        reasons = [f"{len(members)} series of {what}"]
        if not complete(chosen):
            reasons.append("no complete repeat; took the best incomplete one")
        if sequence == "lge" and any(_lge_strength(s, evidence[s.key]) < _lge_strength(chosen, evidence[chosen.key])
                                     for s in members if s is not chosen):
            reasons.append("recognised as LGE more strongly than a repeat with weaker LGE evidence")
        if sequence == "lge" and chosen.lge_kind == "psir" and any(s.lge_kind == "magnitude" for s in members):
            reasons.append("PSIR preferred over magnitude")
        if len(members) > 1 and complete(chosen):
            alone = not any(complete(s) for s in members if s is not chosen)
            reasons.append(f"{'the only' if alone else 'latest'} complete acquisition (SeriesNumber "
                           f"{chosen.series_number})")
        chosen.preferred_reason = "; ".join(reasons) + f". Rule: {PREFERENCE_RULE}"
        for other in ranked[1:]:
            reason, routine = _left_aside_because(other, chosen, sequence, evidence, cover, clocks, complete, uniform,
                                                  sparser if near(other) else (lambda s: None))
            names = _label(other), _label(chosen)
            split_apart = other.key in split and chosen.key in split
            if names[0] == names[1] or split_apart:
                # two reconstructions of one series (grouping.split_reconstructions): name them by ImageType; two
                # copies of one SeriesNumber of the same ImageType: by SeriesInstanceUID
                types = [chr(92).join(evidence[s.key].frames[0].image_type) for s in (other, chosen)]
                names = tuple(f"{name[:-1]}, ImageType {kind})" if split_apart or types[0] != types[1]
                              else f"{name[:-1]}, SeriesInstanceUID {s.series_instance_uid})"
                              for name, kind, s in zip(names, types, (other, chosen)))
            text = f"{sequence.upper()} {names[0]} left aside for this {names[1]}: {reason}"
            # named as a viewer lists it, never by the internal stack key (UID#number#kind)
            other.notes.append(f"repeat of {what}; not preferred ({names[1]} is preferred): {reason}")
            lacking = cover[chosen.key].lacks(cover[other.key])
            if "other" in (sequence, view):
                continue  # unrecognised series or single planes of no view are no repeats of a stack
            if routine and not split_apart and not lacking:
                chosen.notes.append(text)  # the other reconstruction of the same slices, in its own series: a note
                if left_aside is not None and sequence == "lge" and chosen.lge_kind == "psir" \
                        and other.lge_kind != "psir":
                    # ... and one line for the LGE block, so that nobody wonders which of the two was measured
                    left_aside.setdefault(chosen.key, []).append(
                        f"{_short_label(other)} ({other.lge_kind or 'magnitude'} of the same slices) not measured: "
                        "PSIR preferred")
                continue
            warnings[chosen.key].append(text)
            if lacking:
                warnings[chosen.key].append(f"this stack has no slice at {_positions_text(lacking)}, which "
                                            f"{_label(other)} has")
        for warning in warnings[chosen.key]:
            chosen.notes.append(warning)
            log.warning("preferred %s/%s series %s: %s", sequence, view, chosen.key, warning)
        if len(members) > 1:
            log.info("preferred %s/%s series %s of %d: %s", sequence, view, chosen.key, len(members), chosen.preferred_reason)
    return dict(warnings)


def _left_aside_because(other: AnalysisSeries, chosen: AnalysisSeries, sequence: str,
                        evidence: dict[str, SeriesEvidence], cover: dict[str, Coverage],
                        clocks: dict[str, tuple[float, bool]], complete, uniform, sparser=lambda s: None
                        ) -> tuple[str, bool]:
    """Why `other` was not preferred over `chosen`, in the order PREFERENCE_RULE applies, and whether that is routine:
    the other reconstruction (magnitude beside PSIR) of the same slice positions, which the preferred series' notes
    record, while a repeat, a stack with other positions or a reconstruction split out of one series is a stack
    warning. `sparser(other)`: the repeat sampling about as much as `other` with more slice positions over the
    extent both cover, where `other` has gaps wider than a normal spacing (None where coverage alone decides).
    `clocks`: `_series_clocks` of the series compared."""
    mine, theirs = cover[chosen.key], cover[other.key]
    lacking = theirs.lacks(mine)
    missing = f"; it has no slice at {_positions_text(lacking)}" if lacking else ""
    routine = not lacking
    by_coverage = (complete(chosen) and not complete(other)) or (
        not complete(chosen) and (uniform(chosen) != uniform(other) or theirs.length_mm < mine.length_mm))
    if by_coverage:
        if sequence == "localizer":
            return f"{len(evidence[other.key].orientations)} plane orientation(s); a localizer needs 3", False
        if not uniform(other) and uniform(chosen):
            return (f"its slices hold different numbers of images {sorted(set(evidence[other.key].phase_counts))}"
                    + missing, False)
        denser = sparser(other)
        if denser is not None and uniform(other):
            rival, (few, many, extent) = denser
            against = "this series" if rival is chosen else _label(rival)
            return (f"it samples the heart more sparsely: {few} slice position(s) against {many} of {against} over "
                    f"the {extent:.0f} mm both cover{theirs.sparse_text()}; a sparser stack is not preferred, however "
                    f"late" + missing, False)
        return (f"it covers {len(theirs.points)} slice position(s) ({theirs.length_mm:.0f} mm of the heart sampled) "
                f"against {len(mine.points)} ({mine.length_mm:.0f} mm){theirs.sparse_text()}: a stack missing slices "
                f"or sampling the heart more sparsely is not preferred, however late" + missing, False)
    if sequence == "lge":
        strength = _lge_strength(other, evidence[other.key]), _lge_strength(chosen, evidence[chosen.key])
        if strength[0] < strength[1]:
            why = ("recognised as LGE on weak evidence only" if strength[0] == 0 else
                   f"recognised as LGE at confidence {other.sequence.confidence:.2f} only" if strength[0] == 1 else
                   "recognised as LGE on its inversion-recovery header only (no LGE name in its SeriesDescription, "
                   "no phase-sensitive reconstruction)")
            identity = lge_identity(evidence[chosen.key]) if strength[1] == 3 else None
            return (f"{why} (this series: {chosen.sequence.confidence:.2f}" + (f", {identity}" if identity else "")
                    + "): it may be no LGE at all (a T1 map keeping "
                    "its source images' inversion-recovery header reads the same), so a strongly recognised LGE is "
                    "preferred, whatever the times" + missing, False)
    if sequence == "lge" and chosen.lge_kind == "psir" and other.lge_kind != "psir":
        return f"PSIR preferred over its {other.lge_kind or 'magnitude'} reconstruction" + missing, routine
    if _signed(evidence[chosen.key]) and not _signed(evidence[other.key]) and chosen.lge_kind == other.lge_kind:
        return ("both recognised as " + (chosen.lge_kind or "the same kind") + "; signed values (a phase-sensitive "
                "reconstruction, RescaleIntercept < 0) preferred over its unsigned ones" + missing, routine)
    times = clocks[other.key], clocks[chosen.key]
    known = times[0][0] >= 0, times[1][0] >= 0
    # the date is shown where the two were acquired on different days
    dated = all(known) and times[0][1] and int(times[0][0] // 86400) != int(times[1][0] // 86400)
    shown = _when(times[0], dated), _when(times[1], dated)
    if all(known) and times[0][0] < times[1][0]:
        return f"acquired earlier ({shown[0]} against {shown[1]}); the latest is preferred" + missing, False
    timing = ("acquired at the same time" if all(known) and times[0][0] == times[1][0] else
              f"acquired at {shown[0]} against {shown[1]}" if all(known) else
              f"no acquisition time in it (this series: {shown[1]})" if known[1] else
              f"no acquisition time in this series (it: {shown[0]})" if known[0] else
              "no acquisition time in either")
    # "the same coverage" only where both hold the same slice positions; else the positions differ as `missing` says
    same = ("the same coverage" if not lacking and not mine.lacks(theirs) else
            f"coverage does not decide ({theirs.length_mm:.0f} mm at other slice positions against "
            f"{mine.length_mm:.0f} mm)")
    same = "the same coverage and time" if same == "the same coverage" and timing.endswith("same time") else (
        f"{same}; {timing}")
    if (other.series_number or 0) < (chosen.series_number or 0):
        return (f"{same}; lower SeriesNumber ({other.series_number} against "
                f"{chosen.series_number})" + missing, False)
    if other.series_number == chosen.series_number and not lacking and _acquisition_times(
            evidence[other.key]) == _acquisition_times(evidence[chosen.key]):
        return ("a second copy of the same acquisition (the same SeriesNumber, slice positions and AcquisitionTimes "
                "under another SeriesInstanceUID) whose pixel data or image headers differ from this copy's (a lossy "
                "re-encoding or another reconstruction), so it is not counted as a re-send: one copy analysed, taken "
                "in series order",
                False)
    return (("the same coverage, reconstruction and time" if same.startswith("the same coverage") else
             f"{same}; the same reconstruction") + "; taken in series order" + missing, False)


def _acquisition_times(evidence: SeriesEvidence) -> list[float]:
    return sorted(round(f.acquisition_time, 2) for f in evidence.frames if f.acquisition_time is not None)


def understand_study(headers: list[InstanceHeader], registry: RecognizerRegistry | None = None,
                     in_receive_order: bool = False, resent: Collection[Path] = ()) -> CMRStudy:
    """Group one study's headers into analysis series, recognise sequence and view, mark preferred repeats.

    `in_receive_order`: `headers` come oldest received first (the node); `resent`: the paths of the instances
    received after the study's earlier analysis (a re-send). Where the instances disagree on the patient's size,
    weight, age or sex the value of those sent again is used, else the most common one (study_patient)."""
    if not headers:
        raise StudyError("no instances to understand")
    registry = registry or default_registry()
    study_uids = {str(getattr(h.dataset, "StudyInstanceUID", "")) for h in headers}
    if len(study_uids) > 1:
        raise StudyError(f"understand_study got {len(study_uids)} studies; use load_studies to split them")
    candidates, declined, excluded = group_instances(headers)
    evidences = {c.key: build_evidence(c.key, c.frames) for c in candidates}
    mark_exam_protocols(list(evidences.values()))  # a ProtocolName on series of different kinds is the exam's
    context = StudyContext(series=list(evidences.values()))
    for candidate in candidates:
        context.sequences[candidate.key] = registry.recognize("sequence", evidences[candidate.key], context)
    series_list = []
    for candidate in candidates:
        evidence = evidences[candidate.key]
        sequence = context.sequences[candidate.key]
        view = registry.recognize("view", evidence, context)
        kind = None
        if sequence.value == "lge":
            kind_answer = lge_kind(evidence)
            kind = kind_answer.value
            sequence.evidence.append(f"lge_kind {kind}: " + "; ".join(kind_answer.evidence))
        series_list.append(_analysis_series(candidate, evidence, sequence, view, kind))
    left_aside: dict[str, list[str]] = {}
    choice = _mark_preferred(series_list, evidences, frozenset(c.key for c in candidates if c.reconstruction),
                             left_aside)
    for series in series_list:  # an LGE recognised on one kind of evidence says so beside its numbers
        weak = weak_lge_evidence(evidences[series.key]) if series.sequence.value == "lge" else None
        if weak:
            choice.setdefault(series.key, []).insert(0, weak)
    stack_warnings = {c.key: list(c.warnings) + choice.get(c.key, []) for c in candidates
                      if c.warnings or choice.get(c.key)}
    again = {Path(p) for p in resent}
    patient_dataset, disagreements = study_patient([h.dataset for h in headers], in_receive_order,
                                                   [Path(h.path) in again for h in headers])
    patient = PatientInfo.from_dataset(patient_dataset)
    patient.disagreements = list(disagreements.values())
    patient.values_used = {keyword: patient_dataset[keyword].value for keyword in disagreements}
    if {"PatientSize", "PatientWeight"} & set(disagreements):
        patient.size_weight_held = list(dict.fromkeys(
            (_float_or_none(ds, "PatientSize"), _float_or_none(ds, "PatientWeight"))
            for ds in patient_sources([h.dataset for h in headers])))
    for line in patient.disagreements:
        log.warning("%s", line)
    return CMRStudy(study_instance_uid=study_uids.pop(), series=series_list, declined=declined,
                    patient=patient, excluded_instances=excluded,
                    stack_warnings=stack_warnings, left_aside=left_aside,
                    identity_conflict=identity_conflict(h.dataset for h in headers),
                    received_headers=list({h.series_instance_uid: h.dataset for h in headers}.values()),
                    understood_from=(list(headers), registry, in_receive_order, tuple(resent)))


def _analysis_series(candidate: Candidate, evidence: SeriesEvidence, sequence: Recognition, view: Recognition,
                     kind: str | None) -> AnalysisSeries:
    notes = list(candidate.notes)
    if len(set(evidence.phase_counts)) > 1:
        notes.append(f"phase counts differ between slices: {sorted(set(evidence.phase_counts))}")
    if sequence.value == "cine" and evidence.phases == 2:
        notes.append("cine of only 2 phases (an ED/ES export, whatever CardiacNumberOfImages says): analysed as end "
                     "diastole and end systole; no volume curve")
    if view.value == "sax" and evidence.slices == 2:
        notes.append("short-axis stack of only 2 slices: volumes cover those 2 slices only")
    return AnalysisSeries(
        key=candidate.key,
        series_instance_uids=list(dict.fromkeys(candidate.series_instance_uids)),
        series_number=candidate.series_number,
        description=candidate.description,
        sequence=sequence,
        view=view,
        lge_kind=kind,
        instances=candidate.headers,
        slices=evidence.slices,
        phases=evidence.phases,
        notes=notes,
        planes=evidence.planes,
        frames_included=candidate.frames_included,
    )


def _expand(paths: Iterable[Path]) -> list[Path]:
    files = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        else:
            files.append(path)
    return files


def _malformed_study(study_instance_uid: str) -> CMRStudy | None:
    """A study with a malformed Study Instance UID, declined up front (its results could not reference it)."""
    try:
        check_uid(study_instance_uid, "Study Instance UID")
    except InvalidUID as error:
        return CMRStudy(study_instance_uid=study_instance_uid, series=[], declined=[Declined(
            None, f"malformed {error}: the study is not analysed (result objects must reference a valid UID)")])
    return None


def _understood(study_instance_uid: str, headers: list[InstanceHeader], registry,
                in_receive_order: bool = False, resent: Collection[Path] = ()) -> CMRStudy:
    """understand_study, or a study whose only content is the reason it could not be understood (never raises)."""
    try:
        return understand_study(headers, registry, in_receive_order, resent)
    except Exception as error:  # noqa: BLE001 - one study's odd input never takes the other studies down
        log.exception("study could not be understood")
        return CMRStudy(study_instance_uid=study_instance_uid, series=[], declined=[Declined(
            None, f"the study could not be understood: {type(error).__name__}: {error}")])


def load_studies(paths: Iterable[Path], registry: RecognizerRegistry | None = None,
                 unreadable_files: list[dict] | None = None, in_receive_order: bool = False,
                 resent: Collection[Path] = (), max_inflated_bytes: int = 0) -> list[CMRStudy]:
    """Read headers of files (folders are searched recursively), split by StudyInstanceUID, understand each study.

    Studies come sorted by StudyInstanceUID. Files that are not readable DICOM cannot be tied to a study: given
    `unreadable_files`, each is appended there as {"path", "reason"} (summary.json's top-level `unreadable_files`);
    without it, with exactly one study they are added to its `declined`, otherwise they become the `declined`
    entries of an extra, last CMRStudy with study_instance_uid "" and no series (only when there are such files).
    `in_receive_order`: `paths` (files) come oldest received first; `resent`: those of them received after the
    study's earlier analysis (understand_study). `max_inflated_bytes`: read_header's bound on a Deflated data set
    (node.max_instance_mb in bytes; 0: none).
    """
    by_study: dict[str, list[InstanceHeader]] = defaultdict(list)
    unreadable: list[Declined] = []
    for path in _expand(paths):
        result = read_header(path, max_inflated_bytes)
        if isinstance(result, UnreadableFile):  # a stored file this process cannot read: an admin must fix it
            log.warning("%s cannot be read by this process (%s): it is left out of the analysis", path, result.error)
        if isinstance(result, Declined):
            if unreadable_files is None:
                unreadable.append(result)
            else:
                unreadable_files.append({"path": str(path), "reason": result.reason.removeprefix(f"{path}: ")})
            continue
        by_study[str(result.dataset.StudyInstanceUID)].append(result)
    studies = [_malformed_study(uid) or _understood(uid, headers, registry, in_receive_order, resent)
               for uid, headers in sorted(by_study.items())]
    if unreadable and len(studies) == 1:
        studies[0].declined.extend(unreadable)
    elif unreadable:
        studies.append(CMRStudy(study_instance_uid="", series=[], declined=unreadable))
    return studies
