"""An understood CMR study: headers -> analysis series with sequence, view and preferred repeat; volumes on demand."""
from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pydicom

from dicomnode.types import Declined
from dicomnode.cmr.frames import tm_seconds
from dicomnode.cmr.grouping import Candidate, group_instances, read_header
from dicomnode.cmr.recognize import (RecognizerRegistry, SeriesEvidence, StudyContext, build_evidence,
                                     default_registry, lge_kind)
from dicomnode.cmr.types import AnalysisSeries, InstanceHeader, Recognition, StudyError, Volume
from dicomnode.cmr.volume import build_volume
from dicomnode.uids import InvalidUID, check_uid

log = logging.getLogger("dicomnode.cmr")

PREFERENCE_RULE = ("preferred repeat = complete acquisition (same phase count on every slice and at least 80 % of the "
                   "largest repeat's slices; a localizer needs 3 planes) first, then PSIR over magnitude for LGE, "
                   "then the latest (SeriesTime/AcquisitionTime, then SeriesNumber)")


@dataclass
class PatientInfo:
    """Patient facts used for indexing (BSA); None when absent or invalid in the header."""

    sex: str | None = None  # "M" | "F" | "O"
    age_years: float | None = None
    height_m: float | None = None
    weight_kg: float | None = None

    @classmethod
    def from_dataset(cls, ds) -> "PatientInfo":
        sex = str(getattr(ds, "PatientSex", "") or "").strip().upper() or None
        age = None
        match = re.fullmatch(r"(\d{1,3})([DWMY])", str(getattr(ds, "PatientAge", "") or "").strip().upper())
        if match:
            age = int(match.group(1)) / {"D": 365.25, "W": 52.18, "M": 12.0, "Y": 1.0}[match.group(2)]

        def positive(keyword, upper):
            try:
                value = float(getattr(ds, keyword))
            except (AttributeError, TypeError, ValueError):
                return None
            return value if 0 < value < upper else None

        return cls(sex=sex if sex in ("M", "F", "O") else None, age_years=age,
                   height_m=positive("PatientSize", 3.0), weight_kg=positive("PatientWeight", 500.0))


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

    def preferred(self, sequence: str, view: str | None = "sax") -> AnalysisSeries | None:
        """The preferred series of that sequence (and view; None = any view), or None when there is none."""
        matching = [s for s in self.series if s.sequence.value == sequence and (view is None or s.view.value == view)]
        if not matching:
            return None
        flagged = [s for s in matching if s.preferred]
        return max(flagged or matching, key=_preference_rank)

    def load_volume(self, series: AnalysisSeries, require_stack: bool = True) -> Volume:
        """Pixels + geometry of the series (StudyError when it cannot be a volume; single slice refused by default).

        Instances the volume leaves out are added to `excluded_instances` (once each).
        """
        volume = build_volume(series, require_stack=require_stack)
        known = {(e["sop_instance_uid"], e.get("frame_number")) for e in self.excluded_instances}
        self.excluded_instances.extend(e for e in volume.excluded
                                       if (e["sop_instance_uid"], e.get("frame_number")) not in known)
        return volume

    def first_dataset(self, series: AnalysisSeries) -> pydicom.Dataset:
        """Header (no pixel data) of the series' first instance."""
        return series.instances[0].dataset

    def summary_series(self) -> list[dict]:
        return [s.summary() for s in self.series]


def _series_time(candidate_or_series) -> float:
    instances = getattr(candidate_or_series, "instances", None) or getattr(candidate_or_series, "headers")
    times = []
    for header in instances:
        for keyword in ("SeriesTime", "AcquisitionTime", "ContentTime"):
            value = tm_seconds(getattr(header.dataset, keyword, None))
            if value is not None:
                times.append(value)
                break
    return min(times) if times else -1.0


def _complete(series: AnalysisSeries, evidence: SeriesEvidence, largest: int) -> bool:
    if series.sequence.value == "localizer":
        return len(evidence.orientations) >= 3
    return len(set(evidence.phase_counts)) == 1 and series.slices >= 0.8 * largest


def _preference_rank(series: AnalysisSeries) -> tuple:
    return (series.preferred, series.lge_kind == "psir", _series_time(series), series.series_number or 0)


def _mark_preferred(series_list: list[AnalysisSeries], evidence: dict[str, SeriesEvidence]) -> None:
    groups: dict[tuple[str, str], list[AnalysisSeries]] = defaultdict(list)
    for series in series_list:
        groups[(series.sequence.value, series.view.value)].append(series)
    for (sequence, view), members in groups.items():
        largest = max(s.slices for s in members)
        ranked = sorted(members, key=lambda s: (_complete(s, evidence[s.key], largest), s.lge_kind == "psir",
                                                _series_time(s), s.series_number or 0), reverse=True)
        chosen = ranked[0]
        chosen.preferred = True
        complete = _complete(chosen, evidence[chosen.key], largest)
        reasons = [f"{len(members)} series of {sequence}/{view}"]
        if not complete:
            reasons.append("no complete repeat; took the best incomplete one")
        if sequence == "lge" and chosen.lge_kind == "psir" and any(s.lge_kind == "magnitude" for s in members):
            reasons.append("PSIR preferred over magnitude")
        if len(members) > 1:
            reasons.append(f"latest complete acquisition (SeriesNumber {chosen.series_number})")
        chosen.preferred_reason = "; ".join(reasons) + f". Rule: {PREFERENCE_RULE}"
        for other in ranked[1:]:
            other.notes.append(f"repeat of {sequence}/{view}; not preferred (preferred: {chosen.key})")
        if len(members) > 1:
            log.info("preferred %s/%s series %s of %d: %s", sequence, view, chosen.key, len(members), chosen.preferred_reason)


def understand_study(headers: list[InstanceHeader], registry: RecognizerRegistry | None = None) -> CMRStudy:
    """Group one study's headers into analysis series, recognise sequence and view, mark preferred repeats."""
    if not headers:
        raise StudyError("no instances to understand")
    registry = registry or default_registry()
    study_uids = {str(getattr(h.dataset, "StudyInstanceUID", "")) for h in headers}
    if len(study_uids) > 1:
        raise StudyError(f"understand_study got {len(study_uids)} studies; use load_studies to split them")
    candidates, declined, excluded = group_instances(headers)
    evidences = {c.key: build_evidence(c.key, c.frames) for c in candidates}
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
    _mark_preferred(series_list, evidences)
    return CMRStudy(study_instance_uid=study_uids.pop(), series=series_list, declined=declined,
                    patient=PatientInfo.from_dataset(headers[0].dataset), excluded_instances=excluded)


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


def _understood(study_instance_uid: str, headers: list[InstanceHeader], registry) -> CMRStudy:
    """understand_study, or a study whose only content is the reason it could not be understood (never raises)."""
    try:
        return understand_study(headers, registry)
    except Exception as error:  # noqa: BLE001 - one study's odd input never takes the other studies down
        log.exception("study could not be understood")
        return CMRStudy(study_instance_uid=study_instance_uid, series=[], declined=[Declined(
            None, f"the study could not be understood: {type(error).__name__}: {error}")])


def load_studies(paths: Iterable[Path], registry: RecognizerRegistry | None = None,
                 unreadable_files: list[dict] | None = None) -> list[CMRStudy]:
    """Read headers of files (folders are searched recursively), split by StudyInstanceUID, understand each study.

    Studies come sorted by StudyInstanceUID. Files that are not readable DICOM cannot be tied to a study: given
    `unreadable_files`, each is appended there as {"path", "reason"} (summary.json's top-level `unreadable_files`);
    without it, with exactly one study they are added to its `declined`, otherwise they become the `declined`
    entries of an extra, last CMRStudy with study_instance_uid "" and no series (only when there are such files).
    """
    by_study: dict[str, list[InstanceHeader]] = defaultdict(list)
    unreadable: list[Declined] = []
    for path in _expand(paths):
        result = read_header(path)
        if isinstance(result, Declined):
            if unreadable_files is None:
                unreadable.append(result)
            else:
                unreadable_files.append({"path": str(path), "reason": result.reason.removeprefix(f"{path}: ")})
            continue
        by_study[str(result.dataset.StudyInstanceUID)].append(result)
    studies = [_malformed_study(uid) or _understood(uid, headers, registry) for uid, headers in sorted(by_study.items())]
    if unreadable and len(studies) == 1:
        studies[0].declined.extend(unreadable)
    elif unreadable:
        studies.append(CMRStudy(study_instance_uid="", series=[], declined=unreadable))
    return studies
