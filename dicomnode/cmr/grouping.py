"""Series grouping: split by UID + SeriesNumber + image type, decline unusable instances, merge one-slice series into stacks."""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from dicomnode import charsets
from dicomnode.types import Declined
from dicomnode.cmr.frames import FrameInfo, _int, are_repeats, frames_of, orientation_groups, slice_groups
from dicomnode.cmr.types import InstanceHeader
from dicomnode.net.integrity import file_problem
from dicomnode.uids import MR_STORAGE_CLASSES, InvalidUID, check_uid

log = logging.getLogger("dicomnode.cmr")

def read_header(path) -> InstanceHeader | Declined:
    """Header of one file (no pixel data); a Declined with the reason when it is not a readable DICOM instance."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:  # pydicom's text suggests force=True, which means nothing to an admin
        return Declined(None, f"{path}: not a DICOM file (no DICOM File Meta Information: no 'DICM' prefix after "
                              "the 128-byte preamble, PS3.10 7.1)")
    except Exception as error:  # noqa: BLE001 - any unreadable file is declined, never raised
        return Declined(None, f"{path}: unreadable ({type(error).__name__}: {error})")
    charsets.normalise_dataset(ds)  # aliases and mistakes -> defined terms, before any text is decoded
    missing = [k for k in ("SOPInstanceUID", "SOPClassUID", "SeriesInstanceUID", "StudyInstanceUID") if not getattr(ds, k, "")]
    if missing:
        return Declined(str(getattr(ds, "SeriesInstanceUID", "") or "") or None,
                        f"{path}: missing {', '.join(missing)}")
    return InstanceHeader(path=path, sop_instance_uid=str(ds.SOPInstanceUID), sop_class_uid=str(ds.SOPClassUID),
                          series_instance_uid=str(ds.SeriesInstanceUID), dataset=ds)


#: UIDs a result object copies or references: a malformed one would make every result invalid (PS3.5 9.1)
REFERENCED_UIDS = (("SOPInstanceUID", "SOP Instance UID"), ("SeriesInstanceUID", "Series Instance UID"),
                   ("SOPClassUID", "SOP Class UID"), ("FrameOfReferenceUID", "Frame of Reference UID"))


def malformed_uid(dataset) -> str | None:
    """Why one of the instance's referenced UIDs is malformed (too long, not digits and dots), or None."""
    for keyword, name in REFERENCED_UIDS:
        value = dataset.get(keyword)
        if value is None and keyword == "FrameOfReferenceUID":
            continue
        try:
            check_uid(value, name)
        except InvalidUID as error:
            return f"malformed {error}"
    return None


def _series_number(dataset) -> int | None:
    try:
        return int(getattr(dataset, "SeriesNumber", None))
    except (TypeError, ValueError):
        return None


@dataclass
class Candidate:
    """Instances that analysis treats as one series, before recognition."""

    key: str
    series_instance_uids: list[str]
    series_number: int | None
    kind: str
    headers: list[InstanceHeader]
    frames: list[FrameInfo]
    notes: list[str] = field(default_factory=list)

    @property
    def frames_included(self) -> dict[str, list[int]]:
        """Frame numbers per multi-frame instance when only part of its frames belong to this candidate."""
        taken: dict[str, list[int]] = defaultdict(list)
        for frame in self.frames:
            if frame.ref.frame_number is not None:
                taken[frame.ref.sop_instance_uid].append(frame.ref.frame_number)
        total = {h.sop_instance_uid: _frame_count(h) for h in self.headers}
        return {sop: sorted(numbers) for sop, numbers in taken.items() if len(numbers) < total[sop]}

    @property
    def description(self) -> str:
        return str(getattr(self.headers[0].dataset, "SeriesDescription", "") or "")


def _frame_count(header: InstanceHeader) -> int:
    try:
        return int(getattr(header.dataset, "NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return 1


def _written(frame: FrameInfo, keyword: str) -> bool:
    """True when the header holds `keyword` with a value (top level or a functional group): then it is malformed,
    not missing."""
    ds = frame.header.dataset
    if ds.get(keyword) not in (None, ""):
        return True
    shared = list(ds.get("SharedFunctionalGroupsSequence") or [])[:1]
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence") or [])[frame.frame_index:frame.frame_index + 1]
    return any(group.VR == "SQ" and group.value and group.value[0].get(keyword) not in (None, "")
               for item in shared + per_frame for group in item)


def geometry_problems(frame: FrameInfo) -> list[str]:
    """What keeps a frame out of a volume: 'missing X' when absent, 'malformed X' when present but unusable."""
    bad = []
    if frame.position is None:
        bad.append("ImagePositionPatient")
    if frame.orientation is None or np.linalg.norm(np.cross(frame.orientation[:3], frame.orientation[3:])) < 0.5:
        bad.append("ImageOrientationPatient")
    if frame.pixel_spacing is None or min(frame.pixel_spacing) <= 0:
        bad.append("PixelSpacing")
    problems = [f"{'malformed' if _written(frame, keyword) else 'missing'} {keyword}" for keyword in bad]
    if not frame.rows or not frame.cols:
        problems.append("missing Rows/Columns")
    return problems


def excluded_entry(header: InstanceHeader, reason: str) -> dict:
    """An `excluded_instances` entry of summary.json: which image was left out of its series and why."""
    ds = header.dataset
    return {"series_instance_uid": header.series_instance_uid, "sop_instance_uid": header.sop_instance_uid,
            "series_number": _series_number(ds), "series_description": str(ds.get("SeriesDescription", "") or ""),
            "instance_number": _int(ds.get("InstanceNumber")), "reason": reason}


def group_instances(headers: list[InstanceHeader]) -> tuple[list[Candidate], list[Declined], list[dict]]:
    """Candidates of one study, the declined instances (one Declined per series and reason) and the MR images left
    out of their series (malformed UID, unusable geometry) as {"series_instance_uid", "sop_instance_uid", "reason"}.
    """
    declined_counts: dict[tuple[str | None, str], int] = defaultdict(int)
    excluded: list[dict] = []
    buckets: dict[tuple[str, int | None, str], list[tuple[InstanceHeader, list[FrameInfo]]]] = defaultdict(list)
    kept, duplicates = _one_copy_each(headers)
    for header in duplicates:
        declined_counts[(header.series_instance_uid, f"duplicate SOPInstanceUID (same instance received twice): "
                         f"{header.path} left out, {kept[header.sop_instance_uid].path} kept")] += 1
    for header in kept.values():
        ds = header.dataset
        modality = str(getattr(ds, "Modality", "") or "")
        if modality != "MR" or header.sop_class_uid not in MR_STORAGE_CLASSES:
            sop_name = getattr(pydicom.uid.UID(header.sop_class_uid), "name", header.sop_class_uid)
            declined_counts[(header.series_instance_uid, f"not an MR image (Modality {modality or 'empty'}, {sop_name})")] += 1
            continue
        bad_uid = malformed_uid(ds)
        if bad_uid:
            declined_counts[(header.series_instance_uid, bad_uid)] += 1
            excluded.append(excluded_entry(header, bad_uid))
            continue
        frames = frames_of(header)
        problems = sorted({problem for frame in frames for problem in geometry_problems(frame)})
        if problems:
            reason = f"no geometry: {', '.join(problems)}"
            declined_counts[(header.series_instance_uid, reason)] += 1
            excluded.append(excluded_entry(header, reason))
            continue
        by_kind: dict[str, list[FrameInfo]] = defaultdict(list)
        for frame in frames:
            by_kind[frame.kind].append(frame)
        for kind, kind_frames in by_kind.items():
            buckets[(header.series_instance_uid, _series_number(ds), kind)].append((header, kind_frames))

    candidates = []
    for (uid, number, kind), members in buckets.items():
        members.sort(key=lambda pair: (pair[1][0].instance_number or 0, pair[0].sop_instance_uid))
        candidates.append(Candidate(
            key=f"{uid}#{number if number is not None else '-'}#{kind}",
            series_instance_uids=[uid], series_number=number, kind=kind,
            headers=[h for h, _ in members], frames=[f for _, fs in members for f in fs]))
        if candidates[-1].frames_included:
            candidates[-1].notes.append(f"frames of kind {kind} taken from multi-frame instance(s) that also hold "
                                        "other kinds")
    candidates = merge_single_slice_series(candidates)
    candidates.sort(key=lambda c: (c.series_number if c.series_number is not None else 1 << 30, c.key))
    declined = [Declined(uid, f"{count} instance(s): {reason}") for (uid, reason), count in declined_counts.items()]
    return candidates, declined, excluded


def _one_copy_each(headers: list[InstanceHeader]) -> tuple[dict[str, InstanceHeader], list[InstanceHeader]]:
    """One header per SOPInstanceUID (in first-seen order) and the other copies. Of several copies the first whole
    file is kept (`net.integrity.file_problem`: a truncated copy must not displace the intact one), else the first."""
    copies: dict[str, list[InstanceHeader]] = defaultdict(list)
    for header in headers:
        copies[header.sop_instance_uid].append(header)
    kept: dict[str, InstanceHeader] = {}
    duplicates: list[InstanceHeader] = []
    for sop_instance_uid, group in copies.items():
        chosen = group[0]
        if len(group) > 1:
            chosen = next((h for h in group if file_problem(h.path) is None), group[0])
        kept[sop_instance_uid] = chosen
        duplicates += [h for h in group if h is not chosen]
    return kept, duplicates


def _single_slice(candidate: Candidate) -> bool:
    groups = orientation_groups(candidate.frames)
    return len(groups) == 1 and len(slice_groups(groups[0])) == 1


def _merge_signature(candidate: Candidate, frame_count: int | None = None) -> tuple:
    frame = candidate.frames[0]
    ds = candidate.headers[0].dataset
    return (
        str(getattr(ds, "StudyInstanceUID", "")), candidate.kind, frame.rows, frame.cols,
        tuple(np.round(frame.pixel_spacing, 3)), tuple(np.round(frame.orientation, 3)),
        len(candidate.frames) if frame_count is None else frame_count,
        str(getattr(ds, "ScanningSequence", "")), str(getattr(ds, "SequenceVariant", "")),
    )


def merge_single_slice_series(candidates: list[Candidate], in_plane_tolerance_mm: float = 2.0) -> list[Candidate]:
    """Merge one-slice series whose planes are parallel, with the same matrix, spacing and sequence, into stacks.

    Candidates are taken in SeriesNumber order; a series whose slice position is already in a stack (a repeat)
    or that is shifted in-plane starts another stack. Only groups of two or more are merged. A one-slice series
    holding several repeats of its image (`frames.are_repeats`) joins one-image series like the others; the
    volume keeps its most recent image (`volume.keep_latest_repeats`).
    """
    singles: dict[tuple, list[Candidate]] = defaultdict(list)
    repeated: list[Candidate] = []
    result = []
    for candidate in candidates:
        if not _single_slice(candidate):
            result.append(candidate)
        elif are_repeats(candidate.frames) and all(f.ref.frame_number is None for f in candidate.frames):
            repeated.append(candidate)
        else:
            singles[_merge_signature(candidate)].append(candidate)
    for candidate in repeated:
        siblings = singles.get(_merge_signature(candidate, frame_count=1))
        (siblings if siblings else singles[_merge_signature(candidate)]).append(candidate)
    for members in singles.values():
        members.sort(key=lambda c: (c.series_number if c.series_number is not None else 1 << 30, c.key))
        stacks: list[list[Candidate]] = []
        for candidate in members:
            frame = candidate.frames[0]
            normal = frame.normal
            for stack in stacks:
                first = stack[0].frames[0]
                offset = frame.position - first.position
                in_plane = np.linalg.norm(offset - normal * np.dot(offset, normal))
                taken = any(abs(np.dot(member.frames[0].position - frame.position, normal)) < 0.05 for member in stack)
                if not taken and in_plane <= in_plane_tolerance_mm:
                    stack.append(candidate)
                    break
            else:
                stacks.append([candidate])
        for stack in stacks:
            if len(stack) == 1:
                result.append(stack[0])
                continue
            numbers = [c.series_number for c in stack if c.series_number is not None]
            first = stack[0]
            merged = Candidate(
                key=f"{first.series_instance_uids[0]}#{min(numbers) if numbers else '-'}-{max(numbers) if numbers else '-'}#{first.kind}#merged",
                series_instance_uids=[c.series_instance_uids[0] for c in stack],
                series_number=min(numbers) if numbers else None,
                kind=first.kind,
                headers=[h for c in stack for h in c.headers],
                frames=[f for c in stack for f in c.frames],
                notes=[f"merged {len(stack)} single-slice series (SeriesNumber {', '.join(str(n) for n in numbers)}) "
                       "into one stack: parallel planes, same matrix, spacing and sequence"],
            )
            log.info("%s", merged.notes[0])
            result.append(merged)
    return result
