"""Series grouping: split by UID, SeriesNumber, image type and reconstruction; leave out unusable images and frames;
merge one-slice series into stacks (one reconstruction each, later re-acquisitions replacing) and one-phase stacks
into cines."""
from __future__ import annotations

import datetime
import hashlib
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from dicomnode import charsets
from dicomnode.inflate import file_inflates_over
from dicomnode.types import Declined
from dicomnode.cmr.frames import (NEAR_PARALLEL_DEG, FrameInfo, _float, _int, are_repeats, dated_seconds, frames_of,
                                  header_value, is_dated,
                                  latest_first, mean_orientation, merge_replanned_slices, one_examination,
                                  orientation_angle_deg,
                                  orientation_groups, parallel_stacks, plane_name, reacquired, repeat_reason,
                                  same_image_timing, slice_centre, slice_distance, slice_groups,
                                  fill_mismatch, images_per_position, stack_fills, stack_normal, stack_positions,
                                  superseded_stacks, tilted_slices, tm_seconds)
from dicomnode.cmr.types import InstanceHeader
from dicomnode.net.integrity import file_problem
from dicomnode.uids import MR_STORAGE_CLASSES, PARAMETRIC_MAP_STORAGE, InvalidUID, check_uid

log = logging.getLogger("dicomnode.cmr")

#: the end of an UnreadableFile's reason (what summary.json's `unreadable_files` says of such a file)
UNREADABLE_NOTE = "the file is there, this process may not read it"


@dataclass
class UnreadableFile(Declined):
    """A file the operating system would not let this process read (PermissionError, EIO, a folder in its place ...):
    not a fault of its content, and not a missing image: fixing the permission or the disk makes it readable.
    `error`: the OS error, e.g. "PermissionError: Permission denied"."""

    error: str = ""


def unreadable_file(path, error: OSError) -> UnreadableFile:
    """The UnreadableFile of `path` for the operating system's `error` (one that carries an errno)."""
    said = f"{type(error).__name__}: {error.strerror or error}"
    return UnreadableFile(None, f"{path}: unreadable ({said}): {UNREADABLE_NOTE}", said)


def refused_by_os(error: BaseException) -> bool:
    """Whether `error` is the operating system refusing a read (PermissionError, EIO, ESTALE, a folder in a file's
    place ...): an OSError with an errno, FileNotFoundError excepted (a file that is gone). pydicom raises errno-less
    OSErrors of its own for damaged content (e.g. "No tag to read at file position" for a file that ends inside a
    sequence): those are the file's fault, not the machine's."""
    return isinstance(error, OSError) and error.errno is not None and not isinstance(error, FileNotFoundError)


def read_header(path, max_inflated_bytes: int = 0) -> InstanceHeader | Declined:
    """Header of one file (no pixel data); a Declined with the reason when it is not a readable DICOM instance (an
    UnreadableFile where the operating system refused the read, refused_by_os: not a file that is gone, nor one
    whose content pydicom could not parse).

    `max_inflated_bytes` (node.max_instance_mb in bytes; 0: no bound): a Deflated Explicit VR Little Endian file
    whose data set inflates past it is declined without being parsed (pydicom inflates the whole data set at once,
    even for the header: a deflate bomb of a few MB would take gigabytes); inflate.file_inflates_over finds that
    with bounded memory."""
    if max_inflated_bytes:
        try:
            inflated = file_inflates_over(path, max_inflated_bytes)
        except OSError:  # said by the read below, classified as every unreadable file is
            inflated = None
        if inflated is not None:
            reason = (f"a Deflated data set inflating to over {max_inflated_bytes / (1024 * 1024):g} MB "
                      f"(node.max_instance_mb; inflating stopped at {inflated // (1024 * 1024)} MB): not read")
            log.warning("%s: %s", path, reason)
            return Declined(None, f"{path}: {reason}")
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:  # pydicom's text suggests force=True, which means nothing to an admin
        return Declined(None, f"{path}: not a DICOM file (no DICOM File Meta Information: no 'DICM' prefix after "
                              "the 128-byte preamble, PS3.10 7.1)")
    except OSError as error:
        if refused_by_os(error):
            return unreadable_file(path, error)
        return Declined(None, f"{path}: unreadable ({type(error).__name__}: {error})")
    except Exception as error:  # noqa: BLE001 - any unreadable file is declined, never raised
        return Declined(None, f"{path}: unreadable ({type(error).__name__}: {error})")
    charsets.normalise_dataset(ds)  # aliases and mistakes -> defined terms, before any text is decoded
    missing = [k for k in ("SOPInstanceUID", "SOPClassUID", "SeriesInstanceUID", "StudyInstanceUID") if not getattr(ds, k, "")]
    if missing:
        return Declined(str(getattr(ds, "SeriesInstanceUID", "") or "") or None,
                        f"{path}: missing {', '.join(missing)}")
    return InstanceHeader(path=path, sop_instance_uid=str(ds.SOPInstanceUID), sop_class_uid=str(ds.SOPClassUID),
                          series_instance_uid=str(ds.SeriesInstanceUID), dataset=ds)


#: the decline of a Parametric Map Storage instance (1.2.840.10008.5.1.4.1.1.30): a calculated map, recognised and
#: not measured by this version (no T1 / T2 / ECV values are reported), never taken for an LGE
PARAMETRIC_MAP_DECLINE = ("a calculated parametric map (Parametric Map Storage, a T1 / T2 / ECV map): recognised but "
                          "not measured by this version; never analysed as LGE or cine")
#: the Manufacturer the node writes in the Contributing Equipment Sequence (C.7.5.1) of every object it makes: its
#: display copies (results.display_copy) and its SEG / SR / PDF (results.provenance); results.provenance.
#: NODE_MANUFACTURER, repeated here because cmr sits below results (tests/cmr/test_cmr_refusals.py ties the two)
NODE_MANUFACTURER = "dicomnode project"


def own_output(header: InstanceHeader, series_of: dict[str, int | None]) -> str | None:
    """Why an instance is this node's own result sent back to it (a PACS routing every new series to the node), or
    None: its Contributing Equipment Sequence names the node (NODE_MANUFACTURER). A display copy (an MR image whose
    Source Image Sequence names its original) is said with its source series (`series_of`: SOPInstanceUID ->
    SeriesNumber of the instances received); a SEG / SR / PDF by its SOP class. Never analysed: a display copy
    holds an analysed series' pixels again and would be a second candidate of its sequence."""
    ds = header.dataset
    if not any(str(item.get("Manufacturer") or "").strip() == NODE_MANUFACTURER
               for item in ds.get("ContributingEquipmentSequence") or []):
        return None
    if header.sop_class_uid in MR_STORAGE_CLASSES:
        sources = [str(item.get("ReferencedSOPInstanceUID") or "") for item in ds.get("SourceImageSequence") or []]
        numbers = sorted({series_of[uid] for uid in sources if uid in series_of and series_of[uid] is not None})
        of = f"of series {', '.join(str(n) for n in numbers)}" if numbers else "of a series not received with them"
        return f"this node's own display copies {of} (its result of an earlier run, sent back): never analysed"
    sop_name = getattr(pydicom.uid.UID(header.sop_class_uid), "name", header.sop_class_uid)
    return f"this node's own result ({sop_name}, from an earlier run, sent back): not an input, never analysed"


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


def _series_words(dataset) -> str:
    """"series 11 'LGE_PSIR_SAX'" as a viewer lists it; "series (no SeriesNumber)" and no description where absent."""
    number = _series_number(dataset)
    description = str(dataset.get("SeriesDescription", "") or "")
    return (f"series {number}" if number is not None else "series (no SeriesNumber)") + (
        f" '{description}'" if description else "")


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
    #: how the stack was assembled where it matters to the numbers (a slice replaced by a later re-acquisition, a
    #: repeat not used): `CMRStudy.load_volume` adds them to `Volume.warnings` (summary `stack_warnings`, SR, PDF)
    warnings: list[str] = field(default_factory=list)
    #: the reconstruction this candidate holds when it was split out of a series holding several
    #: (`split_reconstructions`, e.g. 'ImageType OTHER\\PSIR, signed values'); None otherwise
    reconstruction: str | None = None

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
        """SeriesDescription (0008,103E) of the candidate; of a stack merged from several series, all of theirs in
        one (`merged_description`), so that it does not read as its first slice alone."""
        names: dict[str, str] = {}
        for header in self.headers:
            names.setdefault(header.series_instance_uid, str(getattr(header.dataset, "SeriesDescription", "") or ""))
        return merged_description(list(names.values()))


#: the most distinct descriptions merged_description lists before '…'
MERGED_DESCRIPTIONS_LISTED = 3


def merged_description(descriptions: list[str]) -> str:
    """One SeriesDescription for the series of a merged stack, in their order: the one they share; where they differ
    only in their numbers ('Cine SA Schicht 1' ... 'Cine SA Schicht 12', an export numbering its one-slice series),
    the shared text with each number that varies written as its range ('Cine SA Schicht 1-12'); otherwise the
    distinct ones joined by ' / ' (MERGED_DESCRIPTIONS_LISTED at most, then '…'). '' for none."""
    distinct = list(dict.fromkeys(descriptions))
    if len(distinct) <= 1:
        return distinct[0] if distinct else ""
    texts = [re.split(r"(\d+)", d) for d in distinct]
    if len({tuple(t[0::2]) for t in texts}) == 1:
        parts = list(texts[0])
        for k in range(1, len(parts), 2):
            values = sorted({int(t[k]) for t in texts})
            parts[k] = str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"
        return "".join(parts)
    listed = " / ".join(distinct[:MERGED_DESCRIPTIONS_LISTED])
    return listed + (" / …" if len(distinct) > MERGED_DESCRIPTIONS_LISTED else "")


def _frame_count(header: InstanceHeader) -> int:
    try:
        return int(getattr(header.dataset, "NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return 1


def _stored(frame: FrameInfo, keyword: str):
    """The value of `keyword` in the frame's header (top level, else its functional groups), None where it has none:
    where it is present the attribute is malformed, not missing."""
    ds = frame.header.dataset
    if ds.get(keyword) not in (None, ""):
        return ds.get(keyword)
    shared = list(ds.get("SharedFunctionalGroupsSequence") or [])[:1]
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence") or [])[frame.frame_index:frame.frame_index + 1]
    for item in shared + per_frame:
        for group in item:
            if group.VR == "SQ" and group.value and group.value[0].get(keyword) not in (None, ""):
                return group.value[0].get(keyword)
    return None


#: the longest stored value a geometry problem quotes
MAX_QUOTED_VALUE = 80


def _geometry_problem(frame: FrameInfo, keyword: str) -> str:
    """'missing X', or 'malformed X' quoting the value as stored ("malformed PixelSpacing '1,5484\\1,2658' (not a
    decimal string (DS): a decimal comma?)"): a DS written with a decimal comma, as converters on such locales do,
    is not read as a point (PS3.5 6.2: DS takes '0'-'9', '+', '-', 'E', 'e', '.' only)."""
    value = _stored(frame, keyword)
    if value is None:
        return f"missing {keyword}"
    values = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    text = "\\".join(str(v) for v in values)
    quoted = "'" + (text if len(text) <= MAX_QUOTED_VALUE else text[:MAX_QUOTED_VALUE] + "…") + "'"
    counts = {"ImagePositionPatient": 3, "ImageOrientationPatient": 6, "PixelSpacing": 2}
    numbers = [_decimal(v) for v in values]
    if any(n is None for n in numbers):
        comma = any("," in str(v) for v in values)
        why = "not a decimal string (DS)" + (": a decimal comma?" if comma else "")
    elif len(numbers) != counts.get(keyword, len(numbers)):
        why = f"{len(numbers)} value(s), {counts[keyword]} expected"
    elif keyword == "PixelSpacing":
        why = "a spacing must be above 0 mm"
    elif keyword == "ImageOrientationPatient":
        why = "the row and column direction cosines are not two independent directions"
    else:
        why = "not usable"
    return f"malformed {keyword} {quoted} ({why})"


def _decimal(value) -> float | None:
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return number if np.isfinite(number) else None


def geometry_problems(frame: FrameInfo) -> list[str]:
    """What keeps a frame out of a volume: 'missing X' when absent, 'malformed X' when present but unusable."""
    bad = []
    if frame.position is None:
        bad.append("ImagePositionPatient")
    if frame.orientation is None or np.linalg.norm(np.cross(frame.orientation[:3], frame.orientation[3:])) < 0.5:
        bad.append("ImageOrientationPatient")
    if frame.pixel_spacing is None or min(frame.pixel_spacing) <= 0:
        bad.append("PixelSpacing")
    problems = [_geometry_problem(frame, keyword) for keyword in bad]
    if not frame.rows or not frame.cols:
        problems.append("missing Rows/Columns")
    elif "PixelSpacing" not in bad:
        field = (frame.rows * frame.pixel_spacing[0], frame.cols * frame.pixel_spacing[1])
        if max(field) > MAX_FIELD_OF_VIEW_MM:
            problems.append(f"implausible PixelSpacing {frame.pixel_spacing[0]:g}\\{frame.pixel_spacing[1]:g} mm "
                            f"(a field of view of {field[0]:.0f} × {field[1]:.0f} mm for Rows {frame.rows} × "
                            f"Columns {frame.cols}; no MR scanner images more than {MAX_FIELD_OF_VIEW_MM:.0f} mm: "
                            "PixelSpacing in the wrong unit?)")
    return problems


#: the largest field of view (mm) of an MR image (bores are 60-70 cm wide; body coils image at most ~50 cm)
MAX_FIELD_OF_VIEW_MM = 600.0


def excluded_entry(header: InstanceHeader, reason: str, frame_number: int | None = None) -> dict:
    """An `excluded_instances` entry of summary.json: which image was left out of its series and why.

    `frame_number` (1-based, PS3.3 C.7.6.16): the one frame of a multi-frame instance left out, its other frames used;
    the entry then carries it as "frame_number"."""
    ds = header.dataset
    entry = {"series_instance_uid": header.series_instance_uid, "sop_instance_uid": header.sop_instance_uid,
             "series_number": _series_number(ds), "series_description": str(ds.get("SeriesDescription", "") or ""),
             "instance_number": _int(ds.get("InstanceNumber")), "reason": reason}
    if frame_number is not None:
        entry["frame_number"] = frame_number
    return entry


#: the functional group macro that holds each geometry attribute in an Enhanced MR frame (PS3.3 C.7.6.16.2.2-3)
FUNCTIONAL_GROUPS = {"ImagePositionPatient": "Plane Position Sequence (0020,9113)",
                     "ImageOrientationPatient": "Plane Orientation Sequence (0020,9116)",
                     "PixelSpacing": "Pixel Measures Sequence (0028,9110)"}


def _frame_problems(problems: list[str]) -> str:
    """Geometry problems of one frame of a multi-frame instance, each naming the functional group it lives in."""
    named = []
    for problem in problems:
        keyword = problem.split(" ", 1)[-1]
        named.append(f"{problem} ({FUNCTIONAL_GROUPS[keyword]})" if keyword in FUNCTIONAL_GROUPS else problem)
    return ", ".join(named)


def group_instances(headers: list[InstanceHeader]) -> tuple[list[Candidate], list[Declined], list[dict]]:
    """Candidates of one study, the declined instances (one Declined per series and reason) and the MR images left
    out of their series (malformed UID, unusable geometry, a second image under a SOPInstanceUID already taken) as
    `excluded_entry` dicts.

    Geometry is judged per frame: a frame of a multi-frame instance without it is left out (named with its frame
    number) and the instance's other frames are used. Of several copies of one SOPInstanceUID one is used
    (`_one_copy_each`): identical copies are counted in a note of the series, a damaged copy is declined, and a
    different image under the same UID is declined and excluded, saying so. A series holding two reconstructions of
    the same slices (magnitude and PSIR) is split into one candidate each (`split_reconstructions`). One-slice series
    are merged into stacks (`merge_single_slice_series`), one-phase stacks into cines (`merge_single_phase_stacks`),
    series holding complementary parts of one stack (two breath-hold blocks) into one (`merge_complementary_stacks`),
    and a slice re-acquired later in its own series replaces its position's image (`replace_reacquired_slices`).
    """
    declined_counts: dict[tuple[str | None, str], int] = defaultdict(int)
    excluded: list[dict] = []
    notes: dict[str, list[str]] = defaultdict(list)  # SOPInstanceUID -> notes for the candidate that holds it
    frame_warnings: dict[str, list[str]] = defaultdict(list)  # SOPInstanceUID -> its frames left out (stack warnings)
    identical: dict[str, int] = defaultdict(int)  # SOPInstanceUID -> identical copies left out
    buckets: dict[tuple[str, int | None, str], list[tuple[InstanceHeader, list[FrameInfo]]]] = defaultdict(list)
    mixed_kinds: set[str] = set()
    #: SOPInstanceUID kept -> the copies of its image that arrived in another series (a PACS re-route), each
    #: (SeriesInstanceUID, SeriesNumber, the same SOPInstanceUID): counted once, one note per candidate
    resent: dict[str, list[tuple[str, int | None, bool]]] = defaultdict(list)
    kept, copies = _one_copy_each(headers)
    for copy in copies:
        left_out, chosen = copy.header, copy.kept
        if copy.verdict == "identical":
            identical[chosen.sop_instance_uid] += 1
            log.info("SOPInstanceUID %s received twice with the same content: %s left out, %s used",
                     chosen.sop_instance_uid, left_out.path, chosen.path)
        elif copy.verdict == "rerouted":
            resent[chosen.sop_instance_uid].append(
                (left_out.series_instance_uid, _series_number(left_out.dataset), True))
            log.info("SOPInstanceUID %s received again under SeriesInstanceUID %s with the same image (a re-route): "
                     "%s left out, %s used", chosen.sop_instance_uid, left_out.series_instance_uid, left_out.path,
                     chosen.path)
        elif copy.verdict == "damaged":
            declined_counts[(left_out.series_instance_uid, f"duplicate SOPInstanceUID (same instance received twice, "
                             f"this copy {copy.detail}): {left_out.path} left out, {chosen.path} kept")] += 1
        else:
            reason = (f"two different images share SOPInstanceUID {chosen.sop_instance_uid} ({copy.detail}): the "
                      f"second, {left_out.path}, was left out and {chosen.path} used; the sender reuses UIDs")
            log.warning("%s", reason)
            declined_counts[(left_out.series_instance_uid, reason)] += 1
            excluded.append(excluded_entry(left_out, reason))
            notes[chosen.sop_instance_uid].append(reason)
    series_of = {h.sop_instance_uid: _series_number(h.dataset) for h in kept.values()}
    for header in kept.values():
        ds = header.dataset
        modality = str(getattr(ds, "Modality", "") or "")
        own = own_output(header, series_of)
        if own:
            declined_counts[(header.series_instance_uid, own)] += 1
            continue
        if header.sop_class_uid == PARAMETRIC_MAP_STORAGE:
            # a calculated T1 / T2 / ECV map (Parametric Map IOD, PS3.3 A.75) whatever its name: said as a map, so
            # that nobody reads the decline as a stray object, and never a candidate for LGE or cine
            declined_counts[(header.series_instance_uid, PARAMETRIC_MAP_DECLINE)] += 1
            continue
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
        judged = [(frame, geometry_problems(frame)) for frame in frames]
        usable = [frame for frame, problems in judged if not problems]
        if not usable:
            reason = f"no geometry: {', '.join(sorted({p for _, problems in judged for p in problems}))}"
            # the decline names the series: summary.json's declined entries and the console carry no other name of it
            declined_counts[(header.series_instance_uid, reason.replace(
                "no geometry: ", f"no geometry in {_series_words(ds)}: ", 1))] += 1
            excluded.append(excluded_entry(header, reason))
            continue
        described = len(ds.get("PerFrameFunctionalGroupsSequence") or [])
        for frame, problems in judged:
            if problems:
                beyond = (f" (NumberOfFrames {len(frames)}, but the Per-frame Functional Groups describe {described})"
                          if described and frame.frame_index >= described else "")
                reason = (f"frame {frame.ref.frame_number} of {len(frames)} of instance {header.sop_instance_uid}: no "
                          f"geometry{beyond}: {_frame_problems(problems)}; left out, the other {len(usable)} frame(s) "
                          "used where their pixel data can be read")
                excluded.append(excluded_entry(header, reason, frame_number=frame.ref.frame_number))
                notes[header.sop_instance_uid].append(reason)
                # beside the numbers too: an end slice left out escapes the gap and coverage checks
                frame_warnings[header.sop_instance_uid].append(
                    f"frame {frame.ref.frame_number} of {len(frames)} of instance {header.sop_instance_uid} left out "
                    f"(no geometry: {_frame_problems(problems)}); the stack is measured without it: where it held "
                    "a slice the volumes (and mass) are lower bounds, where it held a cardiac phase that phase is "
                    "not measured")
        by_kind: dict[str, list[FrameInfo]] = defaultdict(list)
        for frame in usable:
            by_kind[frame.kind].append(frame)
        if len(by_kind) > 1:
            mixed_kinds.add(header.sop_instance_uid)
        for kind, kind_frames in by_kind.items():
            buckets[(header.series_instance_uid, _series_number(ds), kind)].append((header, kind_frames))

    candidates = []
    stacked = []  # a series holding stacks of several orientations: one bucket per stack (split_stacks)
    for (uid, number, kind), whole in buckets.items():
        stacks, stack_note = split_stacks(whole, number if number is not None else uid)
        stacked += [((uid, number, kind), label, stack_note, bucket) for label, bucket in stacks.items()]
    for (uid, number, kind), stack_label, stack_note, bucket in stacked:
        split = split_reconstructions(bucket)
        for reconstruction, members in split.items():
            members.sort(key=lambda pair: (pair[1][0].instance_number or 0, pair[0].sop_instance_uid))
            label = f"#{_reconstruction_key(reconstruction)}" if len(split) > 1 else ""
            candidates.append(Candidate(
                key=f"{uid}#{number if number is not None else '-'}#{kind}{label}{stack_label}",
                series_instance_uids=[uid], series_number=number, kind=kind,
                headers=[h for h, _ in members], frames=[f for _, fs in members for f in fs]))
            if stack_note:
                candidates[-1].notes.append(stack_note + f"; this one {stack_label.lstrip('#')}")
            if len(split) > 1:
                candidates[-1].reconstruction = reconstruction_label(reconstruction)
                candidates[-1].notes.append(
                    f"series {number if number is not None else uid} holds {len(split)} reconstructions at the same "
                    f"slice positions and timing ({'; '.join(reconstruction_label(r) for r in split)}): split into "
                    f"one stack each, this one {reconstruction_label(reconstruction)}")
            if any(h.sop_instance_uid in mixed_kinds for h, _ in members):
                candidates[-1].notes.append(f"frames of kind {kind} taken from multi-frame instance(s) that also hold "
                                            "other kinds")
    candidates = fold_resent_series(candidates, resent)
    candidates = replace_reacquired_cine_slices(replace_reacquired_slices(
        merge_complementary_stacks(merge_single_phase_stacks(merge_single_slice_series(candidates)))))
    for candidate in candidates:
        held = [h.sop_instance_uid for h in candidate.headers]
        candidate.notes += list(dict.fromkeys(note for sop in held for note in notes.get(sop, [])))
        candidate.warnings += [w for sop in held for w in frame_warnings.get(sop, []) if w not in candidate.warnings]
        received_twice = sum(identical.get(sop, 0) for sop in held)
        if received_twice:
            candidate.notes.append(f"{received_twice} instance(s) received more than once with the same SOPInstanceUID "
                                   "and the same content: one copy of each used")
        candidate.notes += _resent_notes([entry for sop in held for entry in resent.get(sop, [])])
        _count_one_examination(candidate)
        _count_resent_images_once(candidate)
        _count_reacquired_slices_once(candidate)
        _count_repeated_stacks_once(candidate)
    candidates.sort(key=lambda c: (c.series_number if c.series_number is not None else 1 << 30, c.key))
    declined = [Declined(uid, f"{count} instance(s): {reason}") for (uid, reason), count in declined_counts.items()]
    return candidates, declined, excluded


def reconstruction_label(reconstruction: tuple) -> str:
    """A FrameInfo.reconstruction as text: its ImageType values from the third on, and 'signed values' where the
    values can be negative, e.g. 'OTHER\\PSIR, signed values'."""
    values, signed = reconstruction
    text = "ImageType " + ("\\".join(v for v in values if v) or "(no third value)")
    return text + (", signed values" if signed else "")


def _reconstruction_key(reconstruction: tuple) -> str:
    """A FrameInfo.reconstruction for a candidate key, e.g. 'OTHER/PSIR/signed'."""
    values, signed = reconstruction
    return "/".join([v for v in values if v] + (["signed"] if signed else [])) or "-"


def _same_timing(first: FrameInfo, second: FrameInfo, trigger_tolerance_ms: float = 25.0,
                 inversion_tolerance_ms: float = 5.0) -> bool:
    """True when two frames at one slice position were taken at the same moment of the same acquisition: one
    TemporalPositionIdentifier (0020,0100), TriggerTime (0018,1060) within `trigger_tolerance_ms` and InversionTime
    (0018,0082) within `inversion_tolerance_ms` (or absent on both)."""
    if first.temporal_index != second.temporal_index:
        return False
    for a, b, tolerance in ((first.trigger_time, second.trigger_time, trigger_tolerance_ms),
                            (first.inversion_time, second.inversion_time, inversion_tolerance_ms)):
        if (a is None) != (b is None) or (a is not None and abs(a - b) > tolerance):
            return False
    return True


#: an orientation group with at least this many slice positions is a stack of its own (a tri-plane localizer holds
#: fewer per plane and stays one series)
STACK_MIN_POSITIONS = 4
#: series names of a localizer (recognize.LocalizerRule's hints): never split by orientation
_LOCALIZER_NAME = re.compile(r"scout|locali[sz]|survey|tri-?pilot|3-?plane|pilot|(?<![a-z])loc(?![a-z])", re.I)


def split_stacks(bucket: list[tuple[InstanceHeader, list[FrameInfo]]], series: object
                 ) -> tuple[dict[str, list[tuple[InstanceHeader, list[FrameInfo]]]], str | None]:
    """One series holding stacks of different orientations (a Philips multi-stack scan: a short-axis stack and a
    long-axis stack, told apart by StackID (0020,9056) in an Enhanced MR object, by orientation only in the classic
    form) split into one bucket per orientation, so that each stack is recognised on its own (the SAX stack analysed,
    the others named) instead of the whole series taken for a localizer. Only where some orientation holds a stack of
    STACK_MIN_POSITIONS slice positions or more, and not a 3-plane localizer by name (`_LOCALIZER_NAME`) or by its
    planes (`_body_plane_localizer`); otherwise ({"": bucket}, None). Stacks of one orientation (two
    overlapping slabs, StackID 1 and 2) stay together: they are one volume, and so do the few slices tilted out of
    a stack's dominant plane (`frames.parallel_stacks`, `frames.tilted_slices`): they stay with their stack, which
    volume building measures without them, naming them. Planes less than NEAR_PARALLEL_DEG apart are one view and
    never split apart (`_views`): too many slices tilted, or no dominant plane, and the series is declined as not
    parallel (`frames.not_parallel_note`) rather than measured on part of its slices unnamed. Returns label
    ("#stack1" ..., largest first) -> bucket, and the note saying so."""
    frames = [f for _, fs in bucket for f in fs]
    if any(f.orientation is None or f.position is None for f in frames):
        return {"": bucket}, None
    ds = bucket[0][0].dataset
    named = f"{getattr(ds, 'SeriesDescription', '') or ''} {getattr(ds, 'ProtocolName', '') or ''}"
    if _LOCALIZER_NAME.search(named):  # a multi-plane localizer is one series of several planes by design
        return {"": bucket}, None
    groups = _views([kept + tilted for kept, tilted in parallel_stacks(frames)])
    if len(groups) < 2 or _body_plane_localizer(groups):
        return {"": bucket}, None
    positions = [len(slice_groups(g)) for g in groups]
    if max(positions) < STACK_MIN_POSITIONS:
        return {"": bucket}, None
    order = sorted(range(len(groups)), key=lambda k: (-positions[k], -len(groups[k])))
    member_of = {id(f): rank for rank, k in enumerate(order) for f in groups[k]}
    result: dict[str, list[tuple[InstanceHeader, list[FrameInfo]]]] = {}
    for rank in range(len(order)):
        label = f"#stack{rank + 1}"
        result[label] = [(h, [f for f in fs if member_of[id(f)] == rank]) for h, fs in bucket]
        result[label] = [(h, fs) for h, fs in result[label] if fs]
    described = "; ".join(f"stack{rank + 1}: {plane_name(groups[k][0].orientation)}, {positions[k]} slice position(s),"
                          f" {len(groups[k])} image(s)" for rank, k in enumerate(order))
    return result, (f"series {series} holds {len(groups)} stacks of different orientations ({described}): split into "
                    "one stack each")


#: the most slice positions one plane of a 3-plane localizer may hold over another's (GE: 5 per plane)
LOCALIZER_POSITION_RATIO = 3


def _body_plane_localizer(views: list[list[FrameInfo]]) -> bool:
    """True where the views are those of a 3-plane localizer, whatever the series is named: three views, one in each
    body plane (`frames.plane_name`: axial, sagittal, coronal, within 10 deg: mutually orthogonal), one image per
    slice position (no cardiac phases) and position counts within LOCALIZER_POSITION_RATIO of one another (GE's
    3-plane localizer: 5 axial, 5 sagittal, 5 coronal). Cardiac stacks are oblique to the body axes, so a
    short-axis stack beside its long-axis views is never one."""
    if len(views) != 3 or {plane_name(view[0].orientation) for view in views} != {"axial", "sagittal", "coronal"}:
        return False
    positions = [slice_groups(view) for view in views]
    if any(len(members) > 1 for view in positions for _, members in view):
        return False
    counts = [len(view) for view in positions]
    return max(counts) <= LOCALIZER_POSITION_RATIO * min(counts)


def _views(groups: list[list[FrameInfo]]) -> list[list[FrameInfo]]:
    """Orientation groups joined into views: each group, the largest (most frames) first, joins the first view whose
    largest group's mean plane lies less than NEAR_PARALLEL_DEG from its own (`frames.orientation_angle_deg` of the
    `frames.mean_orientation`s: planes meant as one stack), else starts a view. Views keep the frames' order within
    each group and come in the order of their first group."""
    if len(groups) < 2:
        return groups
    planes = [mean_orientation([f.orientation for f in group]) for group in groups]
    views: list[list[int]] = []
    for k in sorted(range(len(groups)), key=lambda k: (-len(groups[k]), k)):
        for view in views:
            if orientation_angle_deg(planes[view[0]], planes[k]) < NEAR_PARALLEL_DEG:
                view.append(k)
                break
        else:
            views.append([k])
    return [[f for k in sorted(view) for f in groups[k]] for view in sorted(views, key=min)]


def split_reconstructions(members: list[tuple[InstanceHeader, list[FrameInfo]]]
                          ) -> dict[tuple | None, list[tuple[InstanceHeader, list[FrameInfo]]]]:
    """The images of one series bucket by reconstruction (`FrameInfo.reconstruction`) when the series holds two
    reconstructions of one acquisition: two images of different reconstruction at one slice position with the same
    timing (`_same_timing`), e.g. GE magnitude and PSIR of every slice in ONE series, ImageType ORIGINAL\\PRIMARY\\
    OTHER\\MAG and ...\\OTHER\\PSIR (PS3.3 C.7.6.1.1.2). Such images are not two cardiac phases and not duplicates:
    each reconstruction becomes its own stack and the study-level preference chooses between them. Otherwise (one
    reconstruction, or ImageType values that differ between positions only) {None: members} unchanged."""
    frames = [f for _, fs in members for f in fs]
    if len({f.reconstruction for f in frames}) < 2 or not _co_located_reconstructions(frames):
        return {None: members}
    split: dict[tuple | None, list[tuple[InstanceHeader, list[FrameInfo]]]] = defaultdict(list)
    for header, header_frames in members:
        by_reconstruction: dict[tuple, list[FrameInfo]] = defaultdict(list)
        for frame in header_frames:
            by_reconstruction[frame.reconstruction].append(frame)
        for reconstruction, taken in by_reconstruction.items():
            split[reconstruction].append((header, taken))
    return dict(sorted(split.items(), key=lambda item: (item[0][1], item[0][0])))


def _co_located_reconstructions(frames: list[FrameInfo]) -> bool:
    """True when two frames of different reconstructions share a slice position and their timing (`_same_timing`)."""
    for group in orientation_groups(frames):
        for _, members in slice_groups(group):
            for i, first in enumerate(members):
                if any(second.reconstruction != first.reconstruction and _same_timing(first, second)
                       for second in members[i + 1:]):
                    return True
    return False


@dataclass
class Copy:
    """A further copy of a SOPInstanceUID, left out for `kept`. verdict: "identical" (same header and pixel data: a
    re-send), "rerouted" (the same image under another SeriesInstanceUID of the same SeriesNumber: a PACS re-route,
    `_beyond_series`), "damaged" (this file is not whole: `net.integrity.file_problem`) or "different" (another image
    under the same UID); `detail` says what is damaged or what differs."""

    header: InstanceHeader
    kept: InstanceHeader
    verdict: str
    detail: str = ""


def _one_copy_each(headers: list[InstanceHeader]) -> tuple[dict[str, InstanceHeader], list[Copy]]:
    """One header per SOPInstanceUID (in first-seen order) and the other copies, each judged against the one kept.
    Of several copies the first whole file is kept (`net.integrity.file_problem`: a truncated copy must not
    displace the intact one), else the first. Files are only read, never removed."""
    copies: dict[str, list[InstanceHeader]] = defaultdict(list)
    first_seen: dict[str, int] = {}  # SeriesInstanceUID -> order of first appearance
    for header in headers:
        copies[header.sop_instance_uid].append(header)
        first_seen.setdefault(header.series_instance_uid, len(first_seen))
    kept: dict[str, InstanceHeader] = {}
    others: list[Copy] = []
    for sop_instance_uid, group in copies.items():
        chosen = group[0]
        if len(group) > 1:
            # of copies in several series (a re-route), the one of the series seen first, so that a series re-sent
            # whole stays whole in one series whatever the order its files are read in
            group = sorted(group, key=lambda h: first_seen[h.series_instance_uid])
            problems = {id(h): file_problem(h.path) for h in group}
            chosen = next((h for h in group if problems[id(h)] is None), group[0])
            for header in group:
                if header is chosen:
                    continue
                if problems[id(header)] is not None:
                    others.append(Copy(header, chosen, "damaged", problems[id(header)]))
                    continue
                difference = image_difference(chosen, header)
                beyond = _beyond_series(chosen, header) if difference else None
                if difference and beyond is None:
                    others.append(Copy(header, chosen, "rerouted", difference))
                    continue
                if beyond:
                    difference += "; " + beyond
                others.append(Copy(header, chosen, "different" if difference else "identical", difference or ""))
        kept[sop_instance_uid] = chosen
    return kept, others


def _beyond_series(first: InstanceHeader, second: InstanceHeader) -> str | None:
    """How two copies of one SOPInstanceUID in two series of one SeriesNumber differ beyond the SeriesInstanceUID
    (`image_difference` without the series): None for the same header facts and Pixel Data, i.e. a PACS re-route that
    gave the series a new SeriesInstanceUID and kept the SOP Instance UIDs, not a sender reusing UIDs for other
    images; "" when they are not such a pair (one series, or two SeriesNumbers)."""
    if (first.series_instance_uid == second.series_instance_uid
            or _series_number(first.dataset) != _series_number(second.dataset)):
        return ""
    return image_difference(first, second, series=False)


def _frame_facts(frame: FrameInfo) -> dict[str, str]:
    """What tells one frame from another image, as text: ImagePositionPatient (mm), ImageOrientationPatient,
    TriggerTime (ms), TemporalPositionIdentifier, InversionTime (ms), AcquisitionTime (HH:MM:SS), image type."""
    def text(value, unit=""):
        if value is None:
            return "absent"
        if isinstance(value, np.ndarray):
            return "(" + ", ".join(f"{v:.2f}" for v in value) + ")" + unit
        return f"{value:g}{unit}" if isinstance(value, float) else f"{value}{unit}"
    return {"ImagePositionPatient": text(frame.position, " mm"), "ImageOrientationPatient": text(frame.orientation),
            "TriggerTime": text(frame.trigger_time, " ms"), "TemporalPositionIdentifier": text(frame.temporal_index),
            "InversionTime": text(frame.inversion_time, " ms"), "AcquisitionTime": _clock(frame.acquisition_time),
            "ImageType": "\\".join(frame.image_type) or "absent"}


def _clock(seconds: float | None) -> str:
    """Seconds since midnight as HH:MM:SS.fff, a dated clock value (frames.dated_seconds) as YYYY-MM-DD HH:MM:SS.fff,
    "absent" for None."""
    if seconds is None:
        return "absent"
    if is_dated(seconds):
        return f"{datetime.date.fromordinal(int(seconds // 86400)).isoformat()} {_clock(seconds % 86400)}"
    minutes, rest = divmod(seconds, 60.0)
    return f"{int(minutes // 60):02d}:{int(minutes % 60):02d}:{rest:06.3f}"


def image_difference(first: InstanceHeader, second: InstanceHeader, series: bool = True) -> str | None:
    """None when two copies of one SOPInstanceUID hold the same image (the same series, InstanceNumber, per-frame
    position, orientation, timing and image type, and the same Pixel Data), else what differs, e.g.
    "ImagePositionPatient (1.00, 2.00, 3.00) mm and (1.00, 2.00, 13.00) mm". `series=False` leaves the series
    (SeriesInstanceUID) out of the comparison."""
    differences = []
    if series and first.series_instance_uid != second.series_instance_uid:
        numbers = [_series_number(h.dataset) for h in (first, second)]
        by_number = None not in numbers and numbers[0] != numbers[1]
        differences.append(f"SeriesNumber {numbers[0]} and {numbers[1]}" if by_number
                           else f"SeriesInstanceUID {first.series_instance_uid} and {second.series_instance_uid}")
    numbers = [_int(h.dataset.get("InstanceNumber")) for h in (first, second)]
    if numbers[0] != numbers[1]:
        differences.append(f"InstanceNumber {numbers[0]} and {numbers[1]}")
    frames = [frames_of(first), frames_of(second)]
    if len(frames[0]) != len(frames[1]):
        differences.append(f"{len(frames[0])} and {len(frames[1])} frames")
    else:
        for a, b in zip(*frames):
            facts = [_frame_facts(a), _frame_facts(b)]
            where = f" of frame {a.ref.frame_number}" if a.ref.frame_number is not None else ""
            differences += [f"{keyword}{where} {facts[0][keyword]} and {facts[1][keyword]}" for keyword in facts[0]
                            if facts[0][keyword] != facts[1][keyword]]
            if differences:
                break
    if not differences:
        pixels = _pixel_difference(first.path, second.path)
        if pixels:
            differences.append(pixels)
    return "; ".join(differences) or None


def _pixel_difference(first_path, second_path) -> str | None:
    """None when two files hold the same Pixel Data (7FE0,0010), compared encoded when both use one transfer syntax,
    else decoded; else what differs."""
    try:
        first, second = pydicom.dcmread(first_path), pydicom.dcmread(second_path)
        if first.get("PixelData") == second.get("PixelData"):
            return None
        if first.file_meta.get("TransferSyntaxUID") == second.file_meta.get("TransferSyntaxUID"):
            return "pixel data differ"
        return None if np.array_equal(first.pixel_array, second.pixel_array) else "pixel data differ"
    except Exception as error:  # noqa: BLE001 - a copy that cannot be compared is not taken as the same image
        return f"pixel data cannot be compared ({type(error).__name__}: {error})"


def _count_one_examination(candidate: Candidate) -> None:
    """Leave out of `candidate.frames` (what recognition counts slices and phases from) the images of another
    examination or Frame of Reference than the stack's (`frames.one_examination`: a prior exam's images merged into
    the series), whole instances only, so that two exams are not counted as one stack of twice the slices. They stay
    in the series: volume building leaves them out with a stack warning (`volume.arrange_frames`) and lists them in
    `excluded_instances`. Notes each group with the same text."""
    examinations = one_examination(candidate.frames)
    if examinations is None:
        return
    kept_instances = {f.ref.sop_instance_uid for f in examinations.kept}
    dropped = {id(f) for members, _ in examinations.left_out for f in members
               if f.ref.sop_instance_uid not in kept_instances}
    candidate.frames = [f for f in candidate.frames if id(f) not in dropped]
    for members, reason in examinations.left_out:
        text = examinations.warning(members, reason)
        candidate.notes.append(text)
        log.info("series %s: %s", candidate.key, text)


def _count_resent_images_once(candidate: Candidate) -> None:
    """Leave out of `candidate.frames` (what recognition counts phases from) each single-frame image that repeats
    another's slice position, image type and timing exactly (TriggerTime, TemporalPositionIdentifier,
    AcquisitionTime, InversionTime): the same image re-sent under a new SOPInstanceUID. Only at slice positions
    whose images differ in timing (a cine slice); a slice of one repeated image is `frames.are_repeats`' case.
    The instances stay in the series: volume building chooses which copy it reads. Notes how many were left out."""
    if not candidate.frames:
        return
    dropped: set[int] = set()
    for group in orientation_groups(candidate.frames):
        for _, members in slice_groups(group):
            single = [f for f in members if f.ref.frame_number is None]
            identities = [(f.reconstruction, f.trigger_time, f.temporal_index, f.acquisition_time, f.inversion_time)
                          for f in single]
            if len(set(identities)) < 2:
                continue
            seen: set[tuple] = set()
            for frame, identity in zip(single, identities):
                if identity in seen:
                    dropped.add(id(frame))
                seen.add(identity)
    if dropped:
        candidate.frames = [f for f in candidate.frames if id(f) not in dropped]
        candidate.notes.append(f"{len(dropped)} image(s) repeat the slice position, image type and timing of another "
                               "image of the series (re-sent under a new SOPInstanceUID): each counted once")


def _count_reacquired_slices_once(candidate: Candidate) -> None:
    """Leave out of `candidate.frames` (what recognition counts phases and within-slice InversionTimes from) the
    earlier images of a slice acquired again in later breath-holds of the same series (`frames.reacquired`: a merged
    export holding the slice at its first TI and again at a raised one, at its position or re-planned a little beside
    it, `frames.merge_replanned_slices`), in a stack of one image per slice elsewhere: the slice counts once, so the
    stack stays one image per slice and is neither taken for mapping source images nor refused for inconsistent
    phase counts. Only single-frame images, which stay in the series: volume building keeps the latest
    (`volume.keep_latest_repeats`) and warns with the same text (`frames.repeat_reason`). Notes each slice."""
    dropped: set[int] = set()
    texts: list[str] = []
    for group in orientation_groups(candidate.frames):
        slices = merge_replanned_slices(slice_groups(group))
        counts = [len(members) for _, members in slices]
        if len(set(counts)) < 2 or min(counts) != 1:
            continue
        for distance, members in slices:
            if (len(members) < 2 or any(f.ref.frame_number is not None for f in members)
                    or same_image_timing(members) or not reacquired(members)):
                continue
            latest, *older = sorted(members, key=latest_first)
            dropped.update(id(f) for f in older)
            texts.append(repeat_reason(distance, members, latest))
    if dropped:
        candidate.frames = [f for f in candidate.frames if id(f) not in dropped]
        candidate.notes += texts
        for text in texts:
            log.info("series %s: %s", candidate.key, text)


def _count_repeated_stacks_once(candidate: Candidate) -> None:
    """Leave out of `candidate.frames` (what recognition counts slice positions from) the single-frame images of a
    stack that a later stack of the series covers again over the same range (`frames.superseded_stacks`: StackID
    (0020,9056) 1 and 2, the stack re-planned and acquired again), or of a later stack re-acquiring part of the range
    at other positions (`frames.partial_repeat`), so that the series is not counted as one stack of
    twice the slices; they stay in the series and volume building measures the later stack
    (`volume.latest_stacks`) and warns. The slices of a superseded stack that the volume still takes, where the later
    stack on the same slice grid does not cover their position (`frames.stack_fills`: one slice shorter), stay
    counted. Notes each stack left out of the count."""
    if len(parallel_stacks(candidate.frames)) != 1:
        return
    pairs = superseded_stacks(candidate.frames)
    dropped = {sid for sid, _, _ in pairs}
    if not dropped:
        return
    fills = stack_fills(candidate.frames, pairs)
    filled = {id(f) for members in fills.values() for f in members}
    candidate.frames = [f for f in candidate.frames if f.ref.frame_number is not None or f.stack_id not in dropped
                        or id(f) in filled]
    candidate.notes += [f"StackID {sid} is covered again by the later StackID {other} (a repeat of the stack): "
                        "counted once" + (", but for the slice position(s) only it covers" if sid in fills else "")
                        if whole else
                        f"StackID {sid} re-acquires part of StackID {other} at other positions: not counted"
                        for sid, other, whole in pairs]


def _content_key(frame: FrameInfo) -> tuple:
    """What one image of an acquisition is, whatever UIDs it is sent under: position, orientation, pixel spacing,
    matrix, TriggerTime, TemporalPositionIdentifier, InversionTime, AcquisitionTime, ImageType and sign."""
    return (tuple(np.round(frame.position, 2)), tuple(np.round(frame.orientation, 4)),
            tuple(np.round(frame.pixel_spacing, 4)), frame.rows, frame.cols, frame.trigger_time, frame.temporal_index,
            frame.inversion_time, None if frame.acquisition_time is None else round(frame.acquisition_time, 3),
            frame.image_type, frame.signed)


def _pixel_digest(frame: FrameInfo, cache: dict) -> str | None:
    """A digest of the frame's decoded pixel values (None when they cannot be read); files are read once."""
    path = str(frame.header.path)
    if path not in cache:
        try:
            array = np.asarray(pydicom.dcmread(path).pixel_array)
        except Exception:  # noqa: BLE001 - an image that cannot be compared is never taken for a copy
            array = None
        cache[path] = array
    array = cache[path]
    if array is None:
        return None
    if frame.ref.frame_number is not None and array.ndim >= 3 and array.shape[0] > frame.frame_index:
        array = array[frame.frame_index]
    values = np.ascontiguousarray(array, dtype=np.int64)
    return hashlib.sha1(str(values.shape).encode() + values.tobytes()).hexdigest()


def _copies_in(copy: Candidate, base: Candidate, cache: dict) -> dict[int, FrameInfo] | None:
    """Which of `copy`'s frames repeat one of `base`'s images exactly (`_content_key` and the same pixel values), as
    {id(frame of copy): frame of base}; None when none does, or when one has the key of a base image but other pixel
    values (a re-reconstruction or another image, not a re-send)."""
    index: dict[tuple, list[FrameInfo]] = defaultdict(list)
    for frame in base.frames:
        index[_content_key(frame)].append(frame)
    matched: dict[int, FrameInfo] = {}
    taken: set[int] = set()
    for frame in copy.frames:
        same_key = [f for f in index.get(_content_key(frame), []) if id(f) not in taken]
        if not same_key:
            continue
        digest = _pixel_digest(frame, cache)
        twin = next((f for f in same_key if digest is not None and _pixel_digest(f, cache) == digest), None)
        if twin is None:
            return None
        matched[id(frame)] = twin
        taken.add(id(twin))
    return matched or None


def fold_resent_series(candidates: list[Candidate], resent: dict[str, list[tuple[str, int | None, bool]]]
                       ) -> list[Candidate]:
    """A series received twice under different SeriesInstanceUIDs (a PACS re-route giving the copy new Series and
    SOP Instance UIDs) is counted once: of two candidates of one SeriesNumber and kind, the smaller, every image of
    which repeats one of the larger (`_copies_in`: the same position, timing, ImageType and pixel values), is dropped
    whole; where it holds images the larger lacks as well, they join the larger (single-frame images of the same
    SeriesDescription only: a series re-sent in part twice). The larger (the first received when equal) is kept;
    `resent` gets, per SOPInstanceUID kept, the copy's (SeriesInstanceUID, SeriesNumber, False) for the note
    (`_resent_notes`). Series of other acquisition times or pixel values are repeats, judged by the study's
    preference, and pass unchanged."""
    groups: dict[tuple, list[Candidate]] = defaultdict(list)
    for candidate in candidates:
        groups[(candidate.series_number, candidate.kind)].append(candidate)
    dropped: set[int] = set()
    cache: dict = {}
    for members in groups.values():
        if len({c.series_instance_uids[0] for c in members}) < 2:
            continue
        kept: list[Candidate] = []
        for candidate in sorted(members, key=lambda c: -len(c.frames)):
            for base in kept:
                if base.series_instance_uids[0] == candidate.series_instance_uids[0]:
                    continue
                matched = _copies_in(candidate, base, cache)
                if matched is None:
                    continue
                extra = [f for f in candidate.frames if id(f) not in matched]
                if extra and (any(f.ref.frame_number is not None for f in candidate.frames)
                              or _description(candidate.headers[0].dataset) != _description(base.headers[0].dataset)):
                    continue
                by_sop = {f.ref.sop_instance_uid: twin for f in candidate.frames
                          for twin in [matched.get(id(f))] if twin is not None}
                for sop, twin in by_sop.items():
                    resent[twin.ref.sop_instance_uid].append(
                        (candidate.series_instance_uids[0], candidate.series_number, False))
                if extra:
                    held = {f.ref.sop_instance_uid for f in extra}
                    base.headers += [h for h in candidate.headers if h.sop_instance_uid in held]
                    base.frames += extra
                    base.series_instance_uids.append(candidate.series_instance_uids[0])
                    base.notes.append(f"{len(held)} image(s) only the re-sent copy (SeriesInstanceUID "
                                      f"{candidate.series_instance_uids[0]}) holds joined this series")
                log.info("series %s (%s) received again as %s: %d image(s) repeat it exactly, counted once",
                         base.series_number, base.series_instance_uids[0], candidate.series_instance_uids[0],
                         len(by_sop))
                dropped.add(id(candidate))
                break
            else:
                kept.append(candidate)
    return [c for c in candidates if id(c) not in dropped]


def _series_numbers_text(numbers: list[int | None]) -> str:
    known = sorted({n for n in numbers if n is not None})
    if not known:
        return "(no SeriesNumber)"
    return ", ".join(str(n) for n in known) if len(known) <= 4 else f"{known[0]}-{known[-1]} ({len(known)} series)"


def _resent_notes(entries: list[tuple[str, int | None, bool]]) -> list[str]:
    """The notes of a series whose images were received again in another series (`fold_resent_series`,
    `_beyond_series`): one per kind of re-send, naming the SeriesNumber(s) and the copies' SeriesInstanceUID(s)."""
    notes = []
    for same_sop in (False, True):
        chosen = [e for e in entries if e[2] == same_sop]
        if not chosen:
            continue
        uids = list(dict.fromkeys(e[0] for e in chosen))
        where = f"SeriesInstanceUID {uids[0]}" if len(uids) == 1 else f"{len(uids)} other SeriesInstanceUIDs"
        how = ("a re-send under a new SeriesInstanceUID with the same SOP Instance UIDs" if same_sop
               else "a re-send under new UIDs")
        notes.append(f"series {_series_numbers_text([e[1] for e in chosen])} received twice ({how}: {len(chosen)} "
                     f"image(s) in {where} hold the same pixel data, position and acquisition time as this series' "
                     f"own): counted once")
    return notes


def _single_slice(candidate: Candidate) -> bool:
    groups = orientation_groups(candidate.frames)
    return len(groups) == 1 and len(slice_groups(groups[0])) == 1


def _description(dataset) -> str:
    """SeriesDescription (0008,103E) as a merge key: lower case, blanks collapsed, each run of digits as '#' (an
    export numbering its one-slice series, 'LGE SA 3', still merges), so 'MDE PSIR' and 'MDE MAG' stay apart."""
    text = " ".join(str(dataset.get("SeriesDescription", "") or "").lower().split())
    return re.sub(r"\d+", "#", text)


def _merge_signature(candidate: Candidate, frame_count: int | None = None, description: bool = True) -> tuple:
    """What one-slice (or one-phase) series must share to be merged into one stack: the study, matrix, pixel spacing,
    orientation, frame count, ScanningSequence (0018,0020), SequenceVariant (0018,0021), SequenceName (0018,0024),
    the ImageType values from the third on (beyond the third too: GE 'OTHER\\MAG' / 'OTHER\\PSIR') and, with
    `description`, the SeriesDescription (`_description`). Two reconstructions of one acquisition exported one
    series per slice (GE / Philips: PSIR and magnitude, the same ImageType value 3) differ in at least one of these
    or in the sign of their values (`_split_by_sign`) and are never merged into one mixed stack."""
    frame = candidate.frames[0]
    ds = candidate.headers[0].dataset
    return (
        str(getattr(ds, "StudyInstanceUID", "")), candidate.kind, frame.rows, frame.cols,
        tuple(np.round(frame.pixel_spacing, 3)), tuple(np.round(frame.orientation, 3)),
        len(candidate.frames) if frame_count is None else frame_count,
        str(getattr(ds, "ScanningSequence", "")), str(getattr(ds, "SequenceVariant", "")),
        str(header_value(ds, "SequenceName") or "").strip(),
        tuple(sorted({f.image_type[2:] for f in candidate.frames})),
        _description(ds) if description else None,
    )


def _split_by_sign(members: list[Candidate]) -> list[list[Candidate]]:
    """One-slice series of one merge signature split by the sign of their values (`FrameInfo.signed`: PSIR / real
    reconstructions are signed, magnitude is not) where two of them image the same slice position: two
    reconstructions with the same description and ImageType. The sign alone does not split series at distinct
    positions (an image stored without its RescaleIntercept stays in its stack and is judged by volume building)."""
    signs = [sum(f.signed for f in c.frames) * 2 > len(c.frames) for c in members]
    if len(set(signs)) < 2:
        return [members]
    shared = any(_along_normal(a.frames[0], b.frames[0]) <= _position_tolerance(a.frames[0])
                 for i, a in enumerate(members) for b in members[i + 1:])
    if not shared:
        return [members]
    return [[c for c, sign in zip(members, signs) if sign == value] for value in (False, True)]


#: a one-slice series acquired at least this much later (s) than the stack's image at its position is a
#: re-acquisition of that slice; two reconstructions of one acquisition share their AcquisitionTime
REACQUIRED_AFTER_S = 1.0


def _position_tolerance(frame: FrameInfo) -> float:
    """Distance along the normal (mm) within which two one-slice series image the same slice position: a quarter of
    SliceThickness (0018,0050) (a re-acquired slice re-planned by a millimetre is the same position), at least
    0.05 mm."""
    thickness = _float(frame.header.dataset.get("SliceThickness"))
    return max(0.05, 0.25 * thickness) if thickness and thickness > 0 else 0.05


def _along_normal(frame: FrameInfo, other: FrameInfo) -> float:
    """Distance (mm) between two slices' centres (`frames.slice_centre`) along the first one's normal."""
    return abs(float(np.dot(slice_centre(other) - slice_centre(frame), frame.normal)))


def _acquired(frames: list[FrameInfo], keyword: str) -> tuple[float | None, float | None]:
    """When images were acquired: their latest AcquisitionTime (0008,0032) (keyword 'AcquisitionTime') or SeriesTime
    (0008,0031) (keyword 'SeriesTime'), seconds since midnight, and the same on the dated clock of
    frames.dated_seconds (with AcquisitionDate / SeriesDate) where every such frame has a date, else None; (None, None)
    when absent."""
    if keyword == "AcquisitionTime":
        pairs = [(f.acquisition_time, f.acquired_at if is_dated(f.acquired_at) else None) for f in frames]
    else:
        pairs = [(tm_seconds(ds.get("SeriesTime")), dated_seconds(ds.get("SeriesTime"), ds.get("SeriesDate")))
                 for ds in (f.header.dataset for f in frames)]
    pairs = [(of_day, dated) for of_day, dated in pairs if of_day is not None]
    if not pairs:
        return None, None
    dated = [when for _, when in pairs]
    return max(of_day for of_day, _ in pairs), (None if None in dated else max(dated))


def _later(new: Candidate | list[FrameInfo], old: Candidate | list[FrameInfo]) -> tuple[bool, str]:
    """Whether `new` was acquired at least REACQUIRED_AFTER_S after `old` (candidates or their frames), by
    AcquisitionTime where both have one, else by SeriesTime, with their dates where both have one (00:05 is later than
    23:55 the day before); and the times compared as text."""
    new = new.frames if isinstance(new, Candidate) else new
    old = old.frames if isinstance(old, Candidate) else old
    for keyword in ("AcquisitionTime", "SeriesTime"):
        (new_time, new_dated), (old_time, old_dated) = _acquired(new, keyword), _acquired(old, keyword)
        if new_time is None or old_time is None:
            continue
        if new_dated is not None and old_dated is not None:
            new_time, old_time = new_dated, old_dated
            if int(new_time // 86400) == int(old_time // 86400):  # on one day the date says nothing
                new_time, old_time = new_time % 86400, old_time % 86400
        text = f"{keyword} {_clock(new_time)} against {_clock(old_time)}"
        return new_time - old_time >= REACQUIRED_AFTER_S, text
    return False, "no AcquisitionTime or SeriesTime to compare"


def _numbers(stack: list[Candidate]) -> str:
    numbers = [str(c.series_number) for c in stack if c.series_number is not None]
    return ", ".join(numbers) or "without SeriesNumber"


def _replace_reacquired(stacks: list[list[Candidate]], in_plane_tolerance_mm: float
                        ) -> tuple[list[tuple[list[Candidate], list[str]]], list[Candidate]]:
    """Slices re-acquired in later one-slice series replace the stack's image at their position.

    A smaller group of one-slice series (one that could not join the stack because its positions were taken) whose
    every image lies at a slice position of a larger stack and was acquired later (`_later`: a repeat after motion or
    a missed breath-hold) replaces those images: the later acquisition wins, and the stack's warnings say which
    series replaced which. The replaced one-slice series are returned on their own, with a note. A smaller group at
    the stack's positions but not acquired later stays apart and the stack's warnings name it as not used.
    Returns (stack, warnings) pairs and the replaced series.
    """
    order = sorted(range(len(stacks)), key=lambda i: -len(stacks[i]))
    warnings: dict[int, list[str]] = defaultdict(list)
    absorbed: set[int] = set()
    replaced: list[Candidate] = []
    for i in order:
        base = stacks[i]
        if i in absorbed or len(base) < 2:
            continue
        for j in order:
            group = stacks[j]
            if j == i or j in absorbed or len(group) >= len(base):
                continue
            pairs = []
            for new in group:
                frame = new.frames[0]
                old = next((m for m in base if _along_normal(m.frames[0], frame) <= _position_tolerance(m.frames[0])
                            and _in_plane(m.frames[0], frame) <= in_plane_tolerance_mm), None)
                pairs.append((new, old))
            if any(old is None for _, old in pairs):
                continue
            verdicts = [_later(new, old) for new, old in pairs]
            if not all(later for later, _ in verdicts):
                where = ", ".join(f"{slice_distance(old.frames[0], old.frames[0].normal):.2f}" for _, old in pairs)
                warnings[i].append(f"series {_numbers(group)} repeat(s) the slice position(s) at {where} mm of this "
                                   f"stack but was not acquired later ({'; '.join(text for _, text in verdicts)}): "
                                   "not used")
                continue
            for (new, old), (_, text) in zip(pairs, verdicts):
                distance = slice_distance(old.frames[0], old.frames[0].normal)
                base[base.index(old)] = new
                warnings[i].append(f"slice at {distance:.2f} mm re-acquired: series {_numbers([new])} used in place "
                                   f"of series {_numbers([old])} ({text}); the later acquisition wins")
                old.notes.append(f"image at slice {distance:.2f} mm replaced in its stack by the later re-acquisition "
                                 f"in series {_numbers([new])} ({text}); not used")
                replaced.append(old)
            absorbed.add(j)
    return [(stack, warnings[k]) for k, stack in enumerate(stacks) if k not in absorbed], replaced


def _in_plane(first: FrameInfo, frame: FrameInfo) -> float:
    """In-plane distance (mm) between two parallel slices' centres (`frames.slice_centre`)."""
    offset = slice_centre(frame) - slice_centre(first)
    normal = first.normal
    return float(np.linalg.norm(offset - normal * np.dot(offset, normal)))


def merge_single_slice_series(candidates: list[Candidate], in_plane_tolerance_mm: float = 2.0) -> list[Candidate]:
    """Merge one-slice series whose planes are parallel, with the same matrix, spacing, sequence, reconstruction and
    description (`_merge_signature`, `_split_by_sign`), into stacks.

    Candidates are taken in SeriesNumber order; a series whose slice position is already in a stack (a repeat, within
    `_position_tolerance`) or that is shifted in-plane starts another stack. Only groups of two or more are merged.
    A smaller group at the positions of a larger stack and acquired later replaces the stack's images there
    (`_replace_reacquired`: a slice re-acquired after motion), saying so in the stack's warnings. A one-slice series
    holding several repeats of its image (`frames.are_repeats`, or the slice acquired again in later breath-holds,
    `frames.reacquired`) joins one-image series like the others; the volume keeps its most recent image
    (`volume.keep_latest_repeats`).
    """
    singles: dict[tuple, list[Candidate]] = defaultdict(list)
    repeated: list[Candidate] = []
    result = []
    for candidate in candidates:
        if not _single_slice(candidate):
            result.append(candidate)
        elif ((are_repeats(candidate.frames) or reacquired(candidate.frames))
              and all(f.ref.frame_number is None for f in candidate.frames)):
            repeated.append(candidate)
        else:
            singles[_merge_signature(candidate)].append(candidate)
    for candidate in repeated:
        siblings = singles.get(_merge_signature(candidate, frame_count=1))
        (siblings if siblings else singles[_merge_signature(candidate)]).append(candidate)
    for members in (part for group in singles.values() for part in _split_by_sign(group)):
        members.sort(key=lambda c: (c.series_number if c.series_number is not None else 1 << 30, c.key))
        stacks: list[list[Candidate]] = []
        for candidate in members:
            frame = candidate.frames[0]
            for stack in stacks:
                in_plane = _in_plane(stack[0].frames[0], frame)
                taken = any(_along_normal(member.frames[0], frame) <= _position_tolerance(member.frames[0])
                            for member in stack)
                if not taken and in_plane <= in_plane_tolerance_mm:
                    stack.append(candidate)
                    break
            else:
                stacks.append([candidate])
        assembled, replaced = _replace_reacquired(stacks, in_plane_tolerance_mm)
        result += replaced
        for stack, warnings in assembled:
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
                       "into one stack: parallel planes, same matrix, spacing, sequence, reconstruction and "
                       "description"]
                + warnings + list(dict.fromkeys(note for c in stack for note in c.notes)),
                warnings=list(warnings),
            )
            log.info("%s", merged.notes[0])
            for warning in warnings:
                log.warning("stack %s: %s", merged.key, warning)
            result.append(merged)
    return _join_tilted_slices(result, in_plane_tolerance_mm)


def _join_tilted_slices(candidates: list[Candidate], in_plane_tolerance_mm: float) -> list[Candidate]:
    """One-slice series left apart from a stack merged from one-slice series (`merge_single_slice_series`) only for
    their orientation join that stack where they are the slices tilted out of the stack's plane
    (`frames.tilted_slices`, taken together: the stack's own frames the dominant plane, these slices the at most one
    position in four tilted out of it), with the stack's merge signature but for the orientation and in-plane within
    `in_plane_tolerance_mm` of its first slice: volume building then leaves them out with the stack's warnings naming
    them, and their positions count as acquired (a gap, or an end slice making the volumes lower bounds), as for a
    stack sent as one series. Where they are too many (or no dominant plane) nothing joins and they stay apart as
    before. Notes each slice joined."""
    merged = [c for c in candidates if c.key.endswith("#merged")]
    if not merged:
        return candidates

    def signature(candidate: Candidate) -> tuple:
        values = list(_merge_signature(candidate, frame_count=1))
        values[5] = None  # the orientation
        return tuple(values)

    stacks = {id(stack) for stack in merged}
    offered: dict[int, list[Candidate]] = defaultdict(list)
    for candidate in candidates:
        if id(candidate) in stacks or not _single_slice(candidate):
            continue
        for stack in merged:
            if (signature(stack) == signature(candidate)
                    and _in_plane(stack.frames[0], candidate.frames[0]) <= in_plane_tolerance_mm
                    and len(orientation_groups(stack.frames + candidate.frames)) > 1):
                offered[id(stack)].append(candidate)
                break
    joined: set[int] = set()
    for stack in merged:
        singles = offered.get(id(stack), [])
        tilted = [f for c in singles for f in c.frames]
        found = tilted_slices(stack.frames + tilted) if singles else None
        if (found is None or {id(f) for f in found.tilted} != {id(f) for f in tilted}
                or len(found.kept) != len(stack.frames)):
            continue
        for candidate in singles:
            stack.headers += candidate.headers
            stack.frames += candidate.frames
            stack.series_instance_uids += candidate.series_instance_uids
            stack.notes.append(f"series {candidate.series_number} (one slice, its plane tilted "
                               f"{found.angle_deg(candidate.frames[0]):.1f} deg out of the stack's) joined the stack: "
                               "volume building leaves that slice out, naming it")
            joined.add(id(candidate))
    return [c for c in candidates if id(c) not in joined]


def _one_image_per_slice(candidate: Candidate) -> bool:
    """True for a stack of two or more parallel slice positions holding one image each (an LGE stack)."""
    groups = orientation_groups(candidate.frames)
    if len(groups) != 1:
        return False
    slices = slice_groups(groups[0])
    return len(slices) >= 2 and all(len(members) == 1 for _, members in slices)


def replace_reacquired_slices(candidates: list[Candidate], in_plane_tolerance_mm: float = 2.0) -> list[Candidate]:
    """A slice re-acquired later and sent as its own one-image series replaces the image at its position in a stack
    of one image per slice (one multi-slice series, or one merged from one-slice series) of the same merge signature
    (`_merge_signature`: sequence, reconstruction, description, matrix, spacing, orientation; and the sign of the
    values, `FrameInfo.signed`): the later acquisition
    wins (`_later`, at least REACQUIRED_AFTER_S after the image it replaces; the same AcquisitionTime is a re-send or
    another reconstruction and replaces nothing). The stack notes and warns which series replaced which image; a
    replaced single-frame instance becomes a candidate of its own with a note (a replaced frame of a multi-frame
    instance is left out through `frames_included`)."""
    stacks = [c for c in candidates if _one_image_per_slice(c)]
    result = []
    for single in candidates:
        if not (_single_slice(single) and len(single.frames) == 1 and single.frames[0].ref.frame_number is None):
            result.append(single)
            continue
        frame = single.frames[0]
        signature = _merge_signature(single, frame_count=1)
        target = old = None
        for stack in stacks:
            if stack is single or _merge_signature(stack, frame_count=1) != signature:
                continue
            old = next((f for f in stack.frames if _along_normal(f, frame) <= _position_tolerance(f)
                        and _in_plane(f, frame) <= in_plane_tolerance_mm and f.signed == frame.signed), None)
            if old is not None and _later([frame], [old])[0]:
                target = stack
                break
        if target is None:
            result.append(single)
            continue
        _, text = _later([frame], [old])
        distance = slice_distance(old, old.normal)
        target.frames[target.frames.index(old)] = frame
        target.headers.append(single.headers[0])
        target.series_instance_uids.append(single.series_instance_uids[0])
        old_number = _series_number(old.header.dataset)
        warning = (f"slice at {distance:.2f} mm re-acquired: series {single.series_number} used in place of "
                   f"series {old_number} instance {old.ref.sop_instance_uid}"
                   + (f" frame {old.ref.frame_number}" if old.ref.frame_number is not None else "")
                   + f" ({text}); the later acquisition wins")
        target.warnings.append(warning)
        target.notes.append(warning)
        log.warning("stack %s: %s", target.key, warning)
        if old.ref.frame_number is None:
            target.headers.remove(old.header)
            result.append(Candidate(
                key=f"{old.header.series_instance_uid}#{old_number if old_number is not None else '-'}#{old.kind}"
                    f"#replaced-{old.ref.sop_instance_uid}",
                series_instance_uids=[old.header.series_instance_uid], series_number=old_number, kind=old.kind,
                headers=[old.header], frames=[old],
                notes=[f"image at slice {distance:.2f} mm replaced in its stack ({target.key}) by the later "
                       f"re-acquisition in series {single.series_number} ({text}); not used"]))
    return result


def _cine_slices(candidate: Candidate) -> list[tuple[float, list[FrameInfo]]] | None:
    """The slice positions of a cine stack (two or more parallel positions, each holding at least 2 single-frame
    images; the counts may differ, as where an image is missing at one slice): (position in mm, frames) ascending
    (`frames.slice_groups`); None for any other candidate (one slice, several orientations, one image per slice,
    multi-frame instances)."""
    groups = orientation_groups(candidate.frames)
    if len(groups) != 1 or any(f.ref.frame_number is not None for f in candidate.frames):
        return None
    slices = slice_groups(groups[0])
    return slices if len(slices) >= 2 and min(len(members) for _, members in slices) >= 2 else None


def _series_text(number: int | None, description: str) -> str:
    """'series 301 "cine sax repeat"' as a viewer lists a series (SeriesNumber, SeriesDescription)."""
    return " ".join((["series " + str(number)] if number is not None else ["a series without SeriesNumber"])
                    + ([f'"{description}"'] if description.strip() else []))


def replace_reacquired_cine_slices(candidates: list[Candidate], in_plane_tolerance_mm: float = 2.0
                                   ) -> list[Candidate]:
    """A cine slice acquired again later and sent as its own one-slice series (a technologist repeating a slice whose
    first acquisition was bad) replaces that slice's images in a cine stack (`_cine_slices`: one multi-slice series,
    or one merged from one-slice series) imaging the same position (within `_position_tolerance` along the normal and
    `in_plane_tolerance_mm` in-plane) with the same matrix, pixel spacing, orientation, sequence and reconstruction
    (`_merge_signature` without SeriesDescription and frame count: a repeat is often named apart, 'cine sax repeat').

    The later acquisition wins (`_later`: at least REACQUIRED_AFTER_S after the images it replaces) where it holds as
    many images (cardiac phases) as the stack holds at that position or at its fullest slice (a stack with an image
    missing at one slice still takes a repeat of another slice, or a whole repeat of the short one); the stack's warnings (Volume.warnings, summary
    `stack_warnings`) name both series and the position, and the images replaced become a candidate of their own
    with a note. A one-slice series at a stack's position that is not acquired later, or that holds another number of
    phases, replaces nothing: the stack's warnings say which series was measured at that position and that the other
    was not used, and that series gets the same note. Single-frame images only (a multi-frame cine is left as it is)."""
    stacks = [(c, slices) for c in candidates for slices in [_cine_slices(c)] if slices is not None]
    result = []
    for single in candidates:
        if not (_single_slice(single) and len(single.frames) >= 2
                and all(f.ref.frame_number is None for f in single.frames)) or any(single is c for c, _ in stacks):
            result.append(single)
            continue
        frame = single.frames[0]
        signature = _merge_signature(single, frame_count=1, description=False)
        found = None
        for stack, slices in stacks:
            if _merge_signature(stack, frame_count=1, description=False) != signature:
                continue
            at = next(((d, members) for d, members in slices
                       if _along_normal(members[0], frame) <= _position_tolerance(members[0])
                       and _in_plane(members[0], frame) <= in_plane_tolerance_mm), None)
            if at is not None:
                found = (stack, slices, at)
                break
        if found is None:
            result.append(single)
            continue
        stack, slices, (_, old) = found
        distance = slice_distance(old[0], old[0].normal)
        old_number = _series_number(old[0].header.dataset)
        new_name = _series_text(single.series_number, single.description)
        old_name = _series_text(old_number, str(old[0].header.dataset.get("SeriesDescription", "") or ""))
        later, text = _later(single.frames, old)
        fullest = max(len(members) for _, members in slices)
        if not later or len(single.frames) not in (len(old), fullest):
            where = ("at each slice of the stack" if fullest == len(old)
                     else f"at that slice of the stack and {fullest} at its fullest slice")
            why = (f"it holds {len(single.frames)} images against {len(old)} (cardiac phases) {where}" if later
                   else f"it was not acquired later ({text})")
            warning = (f"slice at {distance:.2f} mm acquired again in {new_name}: not used, as {why}; {old_name} is "
                       "measured at that position")
            stack.warnings.append(warning)
            stack.notes.append(warning)
            single.notes.append(warning)
            log.warning("stack %s: %s", stack.key, warning)
            result.append(single)
            continue
        replaced = {id(f) for f in old}
        stack.frames = [f for f in stack.frames if id(f) not in replaced] + list(single.frames)
        old_headers = list(dict.fromkeys(id(f.header) for f in old))
        kept_headers = [h for h in stack.headers if id(h) not in old_headers]
        stack.headers = kept_headers + list(single.headers)
        stack.series_instance_uids.append(single.series_instance_uids[0])
        slices[:] = _cine_slices(stack) or slices
        warning = (f"slice at {distance:.2f} mm re-acquired: {new_name} ({len(single.frames)} images) used in place "
                   f"of the {len(old)} images of {old_name} at that position ({text}); the later acquisition wins")
        stack.warnings.append(warning)
        stack.notes.append(warning)
        log.warning("stack %s: %s", stack.key, warning)
        old_uid = old[0].header.series_instance_uid
        result.append(Candidate(
            key=f"{old_uid}#{old_number if old_number is not None else '-'}#{old[0].kind}#replaced-{distance:.2f}",
            series_instance_uids=[old_uid], series_number=old_number, kind=old[0].kind,
            headers=[h for i, h in enumerate(f.header for f in old)
                     if all(h is not f.header for f in old[:i])], frames=list(old),
            notes=[f"images at slice {distance:.2f} mm replaced in their stack ({stack.key}) by the later "
                   f"re-acquisition in {new_name} ({text}); not used"]))
    return result


#: longest time (s) between the acquisitions of one slice's phases: one breath-hold
BREATH_HOLD_S = 30.0


def _one_phase_slices(candidate: Candidate) -> list[FrameInfo] | None:
    """The frames of a stack of two or more parallel slices holding one image each, all with TriggerTime
    (0018,1060), sorted along the plane normal; None for any other candidate."""
    groups = orientation_groups(candidate.frames)
    if len(groups) != 1:
        return None
    slices = slice_groups(groups[0])
    if len(slices) < 2 or any(len(members) != 1 for _, members in slices):
        return None
    frames = [members[0] for _, members in slices]
    return frames if all(f.trigger_time is not None for f in frames) else None


def _same_planes(first: list[FrameInfo], second: list[FrameInfo], tolerance_mm: float = 0.1) -> bool:
    return all(np.linalg.norm(a.position - b.position) <= tolerance_mm for a, b in zip(first, second))


def _phases_of_one_cine(stacks: list[tuple[Candidate, list[FrameInfo]]]) -> bool:
    """True when one-phase stacks of the same planes are the cardiac phases of one acquisition: at every slice the
    TriggerTimes (0018,1060) differ by at least 1 ms, InversionTime (0018,0082) is the same (within 5 ms) or absent,
    and AcquisitionTime (0008,0032) spans at most one breath-hold (`BREATH_HOLD_S`) where present; and there are at
    least 3 stacks, or 2 sharing a non-empty SeriesDescription or ProtocolName."""
    if len(stacks) < 2:
        return False
    if len(stacks) == 2:
        texts = [tuple(str(c.headers[0].dataset.get(keyword, "") or "").strip()
                       for keyword in ("SeriesDescription", "ProtocolName")) for c, _ in stacks]
        if not any(a and a == b for a, b in zip(*texts)):
            return False
    for at_slice in zip(*(frames for _, frames in stacks)):
        triggers = sorted(f.trigger_time for f in at_slice)
        if min(np.diff(triggers)) < 1.0:
            return False
        inversions = [f.inversion_time for f in at_slice]
        if any(v is not None for v in inversions) and (None in inversions or max(inversions) - min(inversions) > 5.0):
            return False
        times = [f.acquisition_time for f in at_slice]
        if None not in times and max(times) - min(times) > BREATH_HOLD_S:
            return False
    return True


#: the steps between the slice positions of stacks merged from complementary series (`merge_complementary_stacks`)
#: lie within this fraction of their median step: one regular stack, no gap and no overlap
REGULAR_STEP_FRACTION = 0.2


def _stack_part(candidate: Candidate) -> tuple[np.ndarray, list[float], int] | None:
    """(normal, slice positions in mm along it, images per position) of a candidate holding one orientation at two or
    more slice positions with the same number of images at each (one LGE image, or every cardiac phase of a cine);
    None for any other candidate (a one-slice series: `merge_single_slice_series`)."""
    groups = orientation_groups(candidate.frames)
    if len(groups) != 1 or candidate.reconstruction is not None:
        return None
    normal = stack_normal(candidate.frames)
    positions = stack_positions(candidate.frames, normal)
    per_position = images_per_position(candidate.frames, normal)
    if len(positions) < 2 or len(candidate.frames) != per_position * len(positions):
        return None
    return normal, positions, per_position


def _regular(positions: list[float]) -> bool:
    """True where ascending slice positions (mm) are evenly spaced: every step within REGULAR_STEP_FRACTION of the
    median step (no gap, no two slices at one position)."""
    steps = np.diff(np.sort(np.asarray(positions, dtype=float)))
    median = float(np.median(steps)) if steps.size else 0.0
    return median > 0 and bool(np.all(np.abs(steps - median) <= REGULAR_STEP_FRACTION * median))


def merge_complementary_stacks(candidates: list[Candidate]) -> list[Candidate]:
    """Merge series that each hold part of one stack into one candidate: a stack acquired in breath-hold blocks, each
    block exported as a series of its own (its own SeriesInstanceUID, the same SeriesNumber or the next).

    Series of two or more slice positions (`_stack_part`) merge where they share the merge signature
    (`_merge_signature`: study, matrix, pixel spacing, orientation, sequence, reconstruction and description; the
    frame count taken per slice position, so a cine merges only with as many cardiac phases at each slice), one slice
    grid, plan and in-plane placement (`frames.fill_mismatch` both ways), no slice position in common, and where their
    positions together are one regular stack (`_regular`: evenly spaced, no gap). Series overlapping another or
    leaving a gap between them stay apart: they are alternatives, and the study's preference rule chooses. Taken in
    SeriesNumber order, each joins the first group it completes that way. The merged candidate notes the series it
    came from; others pass unchanged."""
    parts = {id(c): _stack_part(c) for c in candidates}
    groups: dict[tuple, list[Candidate]] = defaultdict(list)
    result = []
    for candidate in candidates:
        part = parts[id(candidate)]
        if part is None:
            result.append(candidate)
        else:
            groups[_merge_signature(candidate, frame_count=part[2])].append(candidate)
    for members in groups.values():
        members.sort(key=lambda c: (c.series_number if c.series_number is not None else 1 << 30, c.key))
        stacks: list[list[Candidate]] = []
        for candidate in members:
            normal, positions, _ = parts[id(candidate)]
            for stack in stacks:
                frames = [f for member in stack for f in member.frames]
                held = stack_positions(frames, normal)
                if (fill_mismatch(candidate.frames, frames, normal) is None
                        and fill_mismatch(frames, candidate.frames, normal) is None
                        and len(stack_positions(frames + candidate.frames, normal)) == len(held) + len(positions)
                        and _regular(held + positions)):
                    stack.append(candidate)
                    break
            else:
                stacks.append([candidate])
        for stack in stacks:
            if len(stack) == 1:
                result.append(stack[0])
                continue
            numbers = sorted({c.series_number for c in stack if c.series_number is not None})
            first = stack[0]
            normal = parts[id(first)][0]
            counts = [len(parts[id(c)][1]) for c in stack]
            frames = [f for c in stack for f in c.frames]
            note = (f"merged {len(stack)} series (SeriesNumber {', '.join(str(n) for n in numbers) or 'none'}, "
                    f"SeriesInstanceUID {', '.join(c.series_instance_uids[0] for c in stack)}; "
                    f"{' + '.join(str(n) for n in counts)} slice positions, none in common) into one stack of "
                    f"{len(stack_positions(frames, normal))} evenly spaced positions: parts of one stack acquired in "
                    "separate breath-hold blocks (the same matrix, spacing, orientation, slice grid, in-plane "
                    f"placement, sequence, reconstruction, description and {parts[id(first)][2]} image(s) per slice "
                    "position)")
            merged = _merged_candidate(stack, "blocks-merged", note)
            log.info("%s", note)
            result.append(merged)
    return result


def _merged_candidate(stack: list[Candidate], how: str, note: str, keep_warnings: bool = True) -> Candidate:
    """One candidate of the series of `stack` (in order; the first names it), its frames and headers theirs, `note`
    first among their notes and, with `keep_warnings`, their warnings; keyed `<first UID>#<SeriesNumber span>#<kind>
    #<how>`."""
    numbers = [c.series_number for c in stack if c.series_number is not None]
    first = stack[0]
    span = f"{min(numbers)}-{max(numbers)}" if numbers else "-"
    return Candidate(
        key=f"{first.series_instance_uids[0]}#{span}#{first.kind}#{how}",
        series_instance_uids=[uid for c in stack for uid in c.series_instance_uids],
        series_number=min(numbers) if numbers else None,
        kind=first.kind,
        headers=[h for c in stack for h in c.headers],
        frames=[f for c in stack for f in c.frames],
        notes=[note] + list(dict.fromkeys(n for c in stack for n in c.notes)),
        warnings=list(dict.fromkeys(w for c in stack for w in c.warnings)) if keep_warnings else [],
    )


def merge_single_phase_stacks(candidates: list[Candidate]) -> list[Candidate]:
    """Merge stacks of one image per slice that are the cardiac phases of one cine exported one series per phase
    into one candidate: the same matrix, spacing, orientation, sequence and slice positions (within 0.1 mm), and
    `_phases_of_one_cine`. The merged candidate notes the SeriesNumbers it came from; others pass unchanged."""
    groups: dict[tuple, list[tuple[Candidate, list[FrameInfo]]]] = defaultdict(list)
    result = []
    for candidate in candidates:
        frames = _one_phase_slices(candidate)
        if frames is None:
            result.append(candidate)
        else:
            groups[_merge_signature(candidate, description=False)].append((candidate, frames))
    for members in groups.values():
        clusters: list[list[tuple[Candidate, list[FrameInfo]]]] = []
        for member in members:
            cluster = next((c for c in clusters if _same_planes(c[0][1], member[1])), None)
            if cluster is None:
                clusters.append([member])
            else:
                cluster.append(member)
        for cluster in clusters:
            if not _phases_of_one_cine(cluster):
                result += [candidate for candidate, _ in cluster]
                continue
            cluster.sort(key=lambda m: float(np.median([f.trigger_time for f in m[1]])))
            stack = [candidate for candidate, _ in cluster]
            numbers = [c.series_number for c in stack if c.series_number is not None]
            triggers = [f.trigger_time for _, frames in cluster for f in frames]
            note = (f"merged from {len(stack)} single-phase series (SeriesNumber {', '.join(str(n) for n in numbers)}) "
                    f"into one cine: the same {len(cluster[0][1])} slice positions and orientation, matrix, spacing "
                    f"and sequence, TriggerTime {min(triggers):g}-{max(triggers):g} ms")
            merged = _merged_candidate(stack, "phases-merged", note, keep_warnings=False)
            log.info("%s", note)
            result.append(merged)
    return result
