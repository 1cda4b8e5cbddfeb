"""IHE AI Results provenance on every result object: contributing algorithms, content date/time, AI series text."""
from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from typing import Iterable, Sequence

from pydicom.dataset import Dataset

from dicomnode.analysis.pipeline import AlgorithmInfo
from dicomnode.results import codes

#: manufacturer of the node itself (General Equipment module of every result object)
NODE_MANUFACTURER = "dicomnode project"
NODE_MODEL_NAME = "dicomnode"
#: the words that begin the Series Description of every result object of the node ("AI unverified LGE S:25 SEG
#: (dicomnode)"): OHIF v3 cuts a description after about 22 characters in its series list, so the mark that the
#: content is AI-made and unverified comes first, then what it is, the node's name last (break48b #7)
UNVERIFIED_MARK = "AI unverified"
#: the end of every such description
NODE_MARK = " (dicomnode)"


def node_version() -> str:
    try:
        from importlib.metadata import version

        return version("dicomnode")
    except Exception:  # not installed as a distribution (e.g. run from a checkout)
        return "0.1.0"


def node_algorithm() -> AlgorithmInfo:
    """The node's own software as the contributing algorithm (IHE AIR) of a report that no model contributed to: a
    study whose recognised series were all declined gets a report saying why (results.objects); its Device UID is
    derived from the node version, so it changes with every release."""
    import hashlib
    import uuid

    version = node_version()
    digest = hashlib.sha256(f"{NODE_MODEL_NAME} {version}".encode()).hexdigest()
    return AlgorithmInfo(name=NODE_MODEL_NAME, version=version, manufacturer=NODE_MANUFACTURER,
                         device_uid="2.25." + str(uuid.UUID(digest[:32]).int),
                         description="series recognition and the checks that declined the analysis")


def ai_series_description(what: str, flag: str = "") -> str:
    """SeriesDescription that says the series is AI-generated and unverified, those words first where a viewer cuts
    the text: "AI unverified LGE S:25 SEG (dicomnode)"; `flag` (e.g. "REVIEW ONLY" for a SEG whose numbers were
    withheld) goes before them: "REVIEW ONLY AI unverified LGE S:25 SEG (dicomnode)". Raises ValueError for an empty
    `what` or a text over the 64 characters of LO."""
    if not what.strip():
        raise ValueError("ai_series_description needs a non-empty description of the content")
    text = f"{flag.strip() + ' ' if flag.strip() else ''}{UNVERIFIED_MARK} {what.strip()}{NODE_MARK}"
    if len(text) > 64:
        raise ValueError(f"series description {text!r} is longer than 64 characters")
    return text


def processing_algorithm_item(algorithm: AlgorithmInfo, started_at: dt.datetime) -> Dataset:
    """One Contributing Equipment Sequence item per IHE AIR: purpose (Newcode1, 99IHE, Processing Algorithm)."""
    for field in ("name", "version", "manufacturer", "device_uid"):
        if not getattr(algorithm, field):
            raise ValueError(f"AlgorithmInfo.{field} is empty; IHE AIR provenance needs it")
    purpose = Dataset()
    purpose.CodeValue = codes.PROCESSING_ALGORITHM.value
    purpose.CodingSchemeDesignator = codes.PROCESSING_ALGORITHM.scheme_designator
    purpose.CodeMeaning = codes.PROCESSING_ALGORITHM.meaning
    item = Dataset()
    item.PurposeOfReferenceCodeSequence = [purpose]
    item.Manufacturer = algorithm.manufacturer[:64]
    item.ManufacturerModelName = algorithm.name[:64]
    item.SoftwareVersions = algorithm.version[:64]
    item.DeviceUID = algorithm.device_uid
    item.ContributionDateTime = started_at.strftime("%Y%m%d%H%M%S.%f%z")
    if algorithm.description:
        item.ContributionDescription = algorithm.description[:1024]
    return item


def unique_algorithms(algorithms: Iterable[AlgorithmInfo]) -> list[AlgorithmInfo]:
    seen: dict[str, AlgorithmInfo] = {}
    for algorithm in algorithms:
        seen.setdefault(algorithm.device_uid, algorithm)
    return list(seen.values())


def utc_offset(value) -> dt.timezone | None:
    """A TimezoneOffsetFromUTC (0008,0201) value ("+0100", "-0500": PS3.3 C.12.1.1.8, &ZZXX from -1200 to +1400) as
    that offset; None when absent or not of that form."""
    found = re.fullmatch(r"([+-])(\d{2})(\d{2})", str(value or "").strip())
    if found is None or int(found[3]) >= 60:
        return None
    offset = dt.timedelta(hours=int(found[2]), minutes=int(found[3])) * (-1 if found[1] == "-" else 1)
    return dt.timezone(offset) if dt.timedelta(hours=-12) <= offset <= dt.timedelta(hours=14) else None


def in_source_offset(started_at: dt.datetime, datasets: Iterable[Dataset]) -> dt.datetime:
    """The analysis start as every result object writes it: in the UTC offset the study's instances declare (their
    most common valid TimezoneOffsetFromUTC), so that the one offset a result object declares holds for all its dates
    and times, the StudyDate/StudyTime copied from the source and the node's own Series/Content times alike (PS3.3
    C.12.1.1.8: the offset applies to every DA, TM and DT of the instance); unchanged, in the node's own offset, where
    no instance declares one, or where `started_at` is naive (it then declares none)."""
    offsets = Counter(offset for offset in (utc_offset(d.get("TimezoneOffsetFromUTC")) for d in datasets)
                      if offset is not None)
    if not offsets or started_at.utcoffset() is None:
        return started_at
    return started_at.astimezone(offsets.most_common(1)[0][0])


def declare_offset(dataset: Dataset, started_at: dt.datetime) -> Dataset:
    """Declare `started_at`'s UTC offset as the result object's TimezoneOffsetFromUTC and write its
    InstanceCreationDate/Time (which highdicom stamps from the node's local clock) in that offset, so that no date or
    time of the object contradicts it (PS3.3 C.12.1.1.8); nothing changes where `started_at` is naive. Returns the
    same dataset."""
    if started_at.utcoffset() is None:
        return dataset
    dataset.TimezoneOffsetFromUTC = started_at.strftime("%z")
    try:
        created = dt.datetime.strptime(f"{dataset.InstanceCreationDate}{str(dataset.InstanceCreationTime)[:6]}",
                                       "%Y%m%d%H%M%S")
    except (AttributeError, ValueError):  # none stamped, or not in the form highdicom writes
        return dataset
    created = created.astimezone().astimezone(started_at.tzinfo)
    dataset.InstanceCreationDate, dataset.InstanceCreationTime = created.strftime("%Y%m%d"), created.strftime("%H%M%S")
    return dataset


def apply_provenance(
    dataset: Dataset, algorithms: Iterable[AlgorithmInfo], started_at: dt.datetime, series_what: str, flag: str = ""
) -> Dataset:
    """Add the AIR contributing-equipment items, set Content Date/Time to the analysis start and the AI series text
    (ai_series_description of `series_what`, `flag` first). TimezoneOffsetFromUTC is `started_at`'s offset: pass the
    start in the source study's offset (in_source_offset) so that it holds for the copied study date and time too."""
    items = [processing_algorithm_item(a, started_at) for a in unique_algorithms(algorithms)]
    if not items:
        raise ValueError("a result object needs at least one contributing algorithm (IHE AIR)")
    existing = list(dataset.get("ContributingEquipmentSequence", []))
    dataset.ContributingEquipmentSequence = existing + items
    dataset.ContentDate = started_at.strftime("%Y%m%d")
    dataset.ContentTime = started_at.strftime("%H%M%S.%f")
    declare_offset(dataset, started_at)
    dataset.SeriesDescription = ai_series_description(series_what, flag)
    return dataset


def report_time(content_date, content_time) -> str | None:
    """"2026-12-07 04:11:01" from a result object's ContentDate (0008,0023) "20261207" and ContentTime (0008,0033)
    "041101.123" (to the second: two analyses of one study, a quick correction re-sent, can fall in one minute;
    "04:11" where the time gives no seconds); None where the date is not a DICOM DA."""
    date, time = str(content_date or "").strip(), str(content_time or "").strip()
    if len(date) != 8 or not date.isdigit():
        return None
    text = f"{date[:4]}-{date[4:6]}-{date[6:]}"
    if len(time) >= 6 and time[:6].isdigit():
        return f"{text} {time[:2]}:{time[2:4]}:{time[4:6]}"
    return text + (f" {time[:2]}:{time[2:4]}" if len(time) >= 4 and time[:4].isdigit() else "")


def supersede_text(supersedes: Sequence[dict] | None) -> str | None:
    """What a re-analysis's PDF pages, report image and SR say of the report they replace (OHIF shows no Predecessor
    Documents Sequence): "Supersedes the report of 2026-12-07 04:11:01 (PDF series 9200, SR series 9100), made before
    20 instance(s) received after it: its numbers are replaced by these". `supersedes`: the earlier SRs, oldest
    first (node._superseded), each a dict that may hold `report_time` (report_time), `series_number` (the SR's),
    `pdf_series_number` and `reason` (why the study was analysed again); the latest is named, the older ones
    counted. Where the latest holds `partial` True (a destination of the new results never received it:
    study_path.not_received_everywhere) no series number is named: "Supersedes every earlier AI report of this study
    (3, the latest of 2026-12-07 10:39; not every destination received each one); analysed again: …". None where
    nothing is superseded."""
    if not supersedes:
        return None
    latest = supersedes[-1]
    reason = latest.get("reason")
    if latest.get("partial"):  # not every destination received it: no series to look for, the same for all
        when = latest.get("report_time")
        count = f"{len(supersedes)}, " if len(supersedes) > 1 else ""
        text = (f"Supersedes every earlier AI report of this study ({count}the latest"
                + (f" of {when}" if when else "") + "; not every destination received each one)")
        return text + (f"; analysed again: {reason}" if reason else "") + ": their numbers are replaced by these"
    series = [f"{kind} series {latest[key]}" for kind, key in (("PDF", "pdf_series_number"), ("SR", "series_number"))
              if latest.get(key) is not None]
    when = latest.get("report_time")
    text = "Supersedes the report" + (f" of {when}" if when else "") + (f" ({', '.join(series)})" if series else "")
    if len(supersedes) > 1:
        text += f" and {len(supersedes) - 1} earlier one(s)"
    return text + (f"; analysed again: {reason}" if reason else "") + ": its numbers are replaced by these"
