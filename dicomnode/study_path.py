"""One complete study's path, the same for `serve` (node.py) and `process` (process.py):
route -> analyse -> write the result objects durably -> summary.json entry with its `outputs`.

The caller decides only where result files go (`name_result`) and what happens next (the node queues the written
objects for sending; `process` writes summary.json).
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Callable, Protocol

from pydicom.dataset import Dataset

from dicomnode.cmr.study import CMRStudy
from dicomnode.config import Config, RouteConfig
from dicomnode.observe import patient_values
from dicomnode.results.objects import REANALYSIS_SERIES_STEP, SR_SERIES
from dicomnode.results.provenance import in_source_offset
from dicomnode.results.rejection import DISPLAY_COPY_CLASSES, build_rejection_note, listed_series_range
from dicomnode.routing import select_route
from dicomnode.spool import write_durably
from dicomnode.types import Declined, OutboxItem, ResultObject, StudyOutcome
from dicomnode.uids import check_uid, short_hash

log = logging.getLogger("dicomnode.study_path")

NO_ROUTE = "no routing rule matches"


class StudyAnalyser(Protocol):
    """What the path needs of an analyser (dicomnode.analysis.run.Analyser, or a stand-in in tests)."""

    def analyse(self, study: CMRStudy, pipelines: list[str], started_at: dt.datetime | None = None,
                supersedes: list[dict] | None = None) -> StudyOutcome: ...


@dataclass
class StudyRun:
    """One study through the path: its summary.json entry (with `outputs`), the route taken (None: not analysed),
    the result objects written, seconds per pipeline, and the node's own failures (StudyOutcome.errors)."""

    summary: dict
    route: RouteConfig | None = None
    written: list[ResultObject] = field(default_factory=list)
    durations: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    #: why the study was refused before any analysis for the input's sake (its instances carry several patients'
    #: identities): `serve` fails the study with it, `process` lists it in the study's `declined`
    refused: str | None = None
    #: where its results go back to the sender (return_address, from run_study's `senders`); None where the route
    #: does not send back or no senders were given (`process`)
    sender: ReturnAddress | None = None


def dataset_bytes(dataset: Dataset) -> bytes:
    """A result object encoded as a DICOM Part 10 file (PS3.10 7.1: preamble, DICM, File Meta Information)."""
    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def declined_entry(study: CMRStudy, reason: str) -> dict:
    """The summary.json entry of a study that was not analysed, `reason` saying why (design.md contract)."""
    return {"study_instance_uid": study.study_instance_uid or None, "series": study.summary_series(), "outputs": [],
            "declined": [d.summary() for d in study.declined] + [Declined(None, reason).summary()]}


def run_study(study: CMRStudy, config: Config, analyser: StudyAnalyser, calling_ae: str | None,
              write_root: Path, name_result: Callable[[Dataset], Path], *, file_mode: int = 0o600,
              started_at: dt.datetime | None = None, supersedes: list[dict] | None = None,
              rejects: dict[str, list[dict]] | None = None,
              senders: list[tuple[str, str]] | None = None) -> StudyRun:
    """Route `study`, analyse it with the route's pipelines, write every result object durably to
    `write_root / name_result(dataset)` and return the summary with `outputs` (paths relative to `write_root`).

    `calling_ae`: the sender's AE title for the routes' calling-AE rules (None: not checked, as in `process`).
    `supersedes`: earlier SRs this analysis replaces (the SR names them, PS3.3 C.17.2.3 Predecessor Documents).
    `rejects`: per outbox destination, the earlier result objects it received that this analysis supersedes (SEG,
    SR, PDF, SC: results.rejection.REJECTED_SOP_CLASSES; display copies, `display_copy` True), dicts with
    sop_instance_uid, series_instance_uid, sop_class_uid, study_instance_uid (Node._rejected): where the analysis
    writes new results, each destination of the route gets an IHE IOCM Rejection Note of its own listing them
    (analysis.rejection_note; with_rejection_note; the note's ResultObject.destination names it), and the
    summary's `rejection_note` says so either way.
    `senders`: the (calling AE title, calling host) pairs that sent the study's MR images (StateDB.study_senders;
    None: nothing goes back to the sender, as in `process`). Where the route sends back, their return address
    (return_address) is StudyRun.sender, and "sender" counts among the destinations of the supersede wording and the
    rejection notes only where that address has a target: results never go back to several peers (review47 #4).
    Raises whatever analysis or writing raises; a pipeline's own failure is already a `declined` entry.

    A study whose instances carry more than one patient's identity (CMRStudy.identity_conflict, cmr.identity) is
    not routed nor analysed: its entry declines it naming the patients, and StudyRun.refused says why.
    """
    conflict = getattr(study, "identity_conflict", None)  # a stand-in study (tests) may lack it
    if conflict is not None:
        reason = conflict.reason
        for patient in conflict.patients:  # every identity named is redacted from the log, as received ones are
            patient_values.remember(_identity_dataset(patient, study.study_instance_uid))
        log.warning("study %s not analysed: %s", short_hash(study.study_instance_uid or "-"), reason)
        return StudyRun(summary=declined_entry(study, reason), refused=reason)
    headers = [series.instances[0].dataset for series in study.series if series.instances]
    unusable = not headers and bool(getattr(study, "received_headers", None))
    route = select_route(config, calling_ae, headers or getattr(study, "received_headers", []))
    if route is None:
        log.info("study %s: %s; stored, not analysed", short_hash(study.study_instance_uid or "-"), NO_ROUTE)
        return StudyRun(summary=declined_entry(study, NO_ROUTE))
    if unusable:
        reason = no_usable_image_reason(study)
        log.warning("study %s: route %r matches, but %s; stored, not analysed",
                    short_hash(study.study_instance_uid or "-"), route.name, reason)
        summary = declined_entry(study, reason)
        summary["route"] = route.name
        return StudyRun(summary=summary)
    log.info("study %s: route %r: pipelines %s", short_hash(study.study_instance_uid or "-"), route.name,
             ", ".join(route.pipelines) or "none")
    sender = return_address(config, route, senders) if route.send_to_sender and senders is not None else None
    destinations = route_destinations(route, sender)
    supersedes = not_received_everywhere(supersedes, destinations)
    started_at = in_source_offset(started_at or dt.datetime.now().astimezone(), (
        header.dataset for series in study.series for header in getattr(series, "instances", ())))
    outcome = analyser.analyse(study, route.pipelines, started_at=started_at, supersedes=supersedes)
    notes: dict[str, str] = {}
    if rejects and outcome.datasets:
        notes = with_rejection_note(outcome, rejects, config, started_at, supersedes or [], destinations, sender)
    written = [result._replace(destination=notes.get(result.sop_instance_uid))
               for result in write_results(outcome.datasets, write_root, name_result, file_mode)]
    outcome.summary["route"] = route.name  # the [[routes]] name that decided the pipelines and destinations
    outcome.summary["outputs"] = [result.path for result in written]
    return StudyRun(summary=outcome.summary, route=route, written=written, durations=dict(outcome.durations),
                    errors=list(outcome.errors), sender=sender)


def not_received_everywhere(supersedes: list[dict] | None, destinations: list[str]) -> list[dict] | None:
    """`supersedes` (node._superseded) with `partial` True on the latest where one of `destinations` (those the new
    results are queued to, route_destinations) did not receive the report it names (its `delivered_to`): the one
    PDF and SR go to every destination alike, so their text must not point such a destination at series it never
    received (provenance.supersede_text words it for every destination then; break47b #4). Unchanged where
    `delivered_to` is not known."""
    if not supersedes or "delivered_to" not in supersedes[-1]:
        return supersedes
    latest = supersedes[-1]
    partial = not set(destinations) <= set(latest["delivered_to"])
    return supersedes[:-1] + [{**latest, "partial": partial}]


def route_destinations(route: RouteConfig, sender: ReturnAddress | None) -> list[str]:
    """The outbox destination names a study's results go to (as outbox_items queues them): the route's
    destinations, then SENDER where the route sends back and `sender` (the study's return_address) has a target."""
    back = route.send_to_sender and route.sender_port and sender is not None and sender.target is not None
    return list(route.destinations) + ([SENDER] if back else [])


def renamed_destinations(config: Config, addresses: dict[str, tuple[str, str, int]]) -> dict[str, str]:
    """{an outbox destination name the config no longer has: the configured destination with the same AE title,
    host and port}, from `addresses` ({outbox destination name: (ae_title, host, port) it was queued with}): a
    destination renamed in the config is the same archive, so what it received under its former name is retired
    under its new one (break47b #3). A name matching no configured address, "sender", or one matching several
    configured destinations is left out (not the same archive, or not knowable which)."""
    configured = {d.name for d in config.destinations}
    by_address: dict[tuple[str, str, int], list[str]] = {}
    for destination in config.destinations:
        by_address.setdefault((destination.ae_title, destination.host, destination.port), []).append(destination.name)
    renamed = {}
    for name, address in addresses.items():
        names = by_address.get(address, [])
        if name not in configured and name != SENDER and len(names) == 1:
            renamed[name] = names[0]
    return renamed


def credited_destination(config: Config, name: str, address: tuple[str, str, int]) -> str | None:
    """The destination an outbox delivery counts for: `name` (its outbox destination name) queued with `address`
    ((ae_title, host, port)). Identity is the address: the configured destination of that name where its AE title,
    host and port are still `address`; else the one configured destination with `address` (renamed, break47b #3);
    None for a configured name that now points at another address no configured destination had (another archive,
    or the same one renumbered: which cannot be known, so nothing it received is taken as held by the new address,
    review47 #2); `name` unchanged for a name the config no longer has ("sender" always, whose address is each
    study's return address)."""
    if name == SENDER:
        return SENDER
    configured = {d.name: (d.ae_title, d.host, d.port) for d in config.destinations}
    if configured.get(name) == address:
        return name
    matches = [other for other, other_address in configured.items() if other_address == address]
    if len(matches) == 1:
        return matches[0]
    return None if name in configured else name


def moved_destinations(config: Config, addresses: dict[str, set[tuple[str, str, int]]]
                       ) -> dict[str, list[tuple[str, str, int]]]:
    """{a configured destination name: the addresses ((ae_title, host, port), sorted) results were delivered to
    under that name that are not its configured one}, from `addresses` ({outbox destination name: every address a
    delivery to it was queued with}, StateDB.delivered_address_sets): what it received there is not counted for it
    (credited_destination). Names without such an address are left out."""
    moved = {}
    for destination in config.destinations:
        former = sorted(addresses.get(destination.name, set()) - {(destination.ae_title, destination.host,
                                                                   destination.port)})
        if former:
            moved[destination.name] = former
    return moved


def with_rejection_note(outcome: StudyOutcome, rejects: dict[str, list[dict]], config: Config,
                        started_at: dt.datetime, supersedes: list[dict], destinations: list[str],
                        sender: ReturnAddress | None = None) -> dict[str, str]:
    """Add to `outcome` one IHE IOCM Rejection Note (results.rejection) per destination in `destinations` (those the
    new results are queued to, route_destinations; `sender`: the study's return address, return_address) listing
    what `rejects` says that destination received of the earlier results the new ones supersede (an IOCM archive
    refuses a whole note naming an instance it does not hold), none for a destination that received nothing, nor
    for "sender" where nothing goes back to it this time, unless analysis.rejection_note is false. Earlier display
    copies are listed only where the new results hold display copies of their own
    (results.rejection.DISPLAY_COPY_CLASSES).

    Records it in the summary (`rejection_note`: `rejected`, every SOP Instance UID listed or that would be, and
    `destinations`, {destination: {"sop_instance_uid": the note's or null, "rejected", and "reason" where none is
    sent}}, a destination outside the route included) and logs it, so that status and summary.json say which
    earlier objects stand retired where, and which stay visible beside the new ones. Returns {the note's SOP
    Instance UID: its destination}."""
    copies = any(str(d.SOPClassUID) in DISPLAY_COPY_CLASSES for d in outcome.datasets)
    lists = {name: [e for e in entries if copies or not e.get("display_copy")] for name, entries in rejects.items()}
    lists = {name: entries for name, entries in lists.items() if entries}
    if not lists:
        return {}
    header = next((d for d in outcome.datasets if d.Modality == "SR"), outcome.datasets[0])
    tag = short_hash(str(header.StudyInstanceUID))
    uids = list(dict.fromkeys(e["sop_instance_uid"] for entries in lists.values() for e in entries))
    entry: dict = {"rejected": uids, "destinations": {}}
    notes: dict[str, str] = {}
    series_number = SR_SERIES + 2 + REANALYSIS_SERIES_STEP * len(supersedes)
    for name, entries in lists.items():
        listed = [e["sop_instance_uid"] for e in entries]
        if not config.analysis.rejection_note:
            entry["destinations"][name] = {"sop_instance_uid": None, "rejected": listed,
                                           "reason": "analysis.rejection_note = false"}
        elif name == SENDER and sender is not None and sender.target is None:
            entry["destinations"][name] = {"sop_instance_uid": None, "rejected": listed,
                                           "reason": f"nothing is sent back to the sender: {sender.problem}"}
            log.warning("study %s: %d earlier result object(s) delivered to the sender stay visible there, as "
                        "nothing is sent back to it (%s): delete them there by hand", tag, len(listed),
                        sender.problem)
        elif name not in destinations:
            entry["destinations"][name] = {"sop_instance_uid": None, "rejected": listed,
                                           "reason": "not a destination of this study's route"}
            gone = "" if name == SENDER or any(d.name == name for d in config.destinations) else (
                " (the config has no destination of that name, nor one with the AE title, host and port it was "
                "sent to)")
            log.warning("study %s: %d earlier result object(s) delivered to %s, no longer a destination of the "
                        "study's route%s, stay visible there: delete them there by hand", tag, len(listed), name, gone)
        else:
            note = build_rejection_note(header, entries, started_at, series_number, _listed_report_time(entries,
                                        supersedes), analysis=len(supersedes) + 1,
                                        series_range=listed_series_range(entries))
            outcome.datasets.append(note)
            notes[str(note.SOPInstanceUID)] = name
            entry["destinations"][name] = {"sop_instance_uid": str(note.SOPInstanceUID), "rejected": listed}
            log.info("study %s: IOCM rejection note (113001, DCM, \"Rejected for Quality Reasons\") to %s lists the "
                     "%d earlier result object(s) it received that these results supersede", tag, name, len(listed))
    if not config.analysis.rejection_note:
        entry["reason"] = "analysis.rejection_note = false"
        log.warning("study %s: %d earlier result object(s) superseded and left as they are in the destinations "
                    "(analysis.rejection_note = false): delete them there by hand", tag, len(uids))
    outcome.summary["rejection_note"] = entry
    return notes


def late_rejection_note(report: Dataset, entries: list[dict], started_at: dt.datetime) -> Dataset:
    """The IHE IOCM Rejection Note an analysis owes one destination after it was queued: the destination's address
    went back to the archive that holds `entries` (Node._rejected's list for it: the earlier results delivered there
    under its name) after the analysis, finding the name at another address, listed none of them for it (a mistyped
    AE title, host or port fixed; break51a #2). `report`: the analysis's SR (its patient and study identity; its
    Series Number gives the analysis's number and the note's Series Number, as with_rejection_note numbers them);
    `started_at`: the analysis's start. Raises ValueError as results.rejection.build_rejection_note, and
    AttributeError for a report without SeriesNumber."""
    analysis = (int(report.SeriesNumber) - SR_SERIES) // REANALYSIS_SERIES_STEP + 1
    return build_rejection_note(report, entries, started_at, SR_SERIES + 2 + REANALYSIS_SERIES_STEP * (analysis - 1),
                                analysis=analysis, series_range=listed_series_range(entries))


def _listed_report_time(entries: list[dict], supersedes: list[dict]) -> str | None:
    """When the results one destination's note lists were made (`report_time` of the superseded SR of their
    analysis, node._superseded), where they all come from one earlier analysis; else None: a destination that
    missed the latest analysis (`partial`) holds an older one, which the latest's time would misname."""
    analyses = {entry.get("analysis_id") for entry in entries}
    if len(analyses) != 1 or None in analyses:
        return None
    return next((item.get("report_time") for item in supersedes if item.get("analysis_id") in analyses), None)


def no_usable_image_reason(study: CMRStudy) -> str:
    """Why a routed study has no series to analyse: its images were all left out (the study's `declined` entries
    before this one say why each was), or none of its instances is an MR image analysis reads."""
    left_out = len({entry["sop_instance_uid"] for entry in study.excluded_instances})
    if left_out:
        return (f"the route matches but there is no usable MR image: every image received ({left_out} instance(s)) "
                "was left out for the reasons named")
    return "the route matches but there is no usable MR image: no instance is an MR image the analyses read"


def _identity_dataset(patient, study_instance_uid: str) -> dict:
    """One patient's identity as observe.patient_values.remember reads a header (by keyword, with .get)."""
    return {"StudyInstanceUID": study_instance_uid, "PatientID": patient.patient_id, "PatientName": patient.name,
            "PatientBirthDate": patient.birth_date}


def write_results(datasets: list[Dataset], write_root: Path, name_result: Callable[[Dataset], Path],
                  file_mode: int = 0o600) -> list[ResultObject]:
    """Write each result object durably (spool.write_durably) to `write_root / name_result(dataset)`; the paths
    in the returned records are relative to `write_root`. Raises InvalidUID for a malformed SOP Instance UID."""
    written = []
    for dataset in datasets:
        check_uid(dataset.SOPInstanceUID, "result SOP Instance UID")
        relative = name_result(dataset)
        write_durably(write_root / relative, dataset_bytes(dataset), mode=file_mode)
        written.append(ResultObject(str(dataset.SOPInstanceUID), str(dataset.SeriesInstanceUID),
                                    str(dataset.SOPClassUID), str(relative)))
    return written


#: the outbox destination name of results sent back to the sender (dispatch.SENDER)
SENDER = "sender"


@dataclass(frozen=True)
class ReturnAddress:
    """Where send_to_sender sends a study's results: `target` (called AE title, host, port), or None with `problem`
    saying why nothing is sent back (no sender known, or the analysed images came from several peers)."""

    target: tuple[str, str, int] | None
    problem: str | None = None


def return_address(config: Config, route: RouteConfig, senders: list[tuple[str, str]]) -> ReturnAddress:
    """The return address of a study whose analysed images came from `senders` ((calling AE title, calling host)
    pairs, StateDB.study_senders): the one peer they all came from, at the host it called from and the route's
    sender_port; a calling AE with a [[node.peers]] entry that gives `host` (and `port`) is sent to that configured
    address instead. Images from more than one peer give no address: the node cannot tell which one is the study's
    legitimate sender (a host that sent one image with the study's identifiers would otherwise get its results).
    The problem then names the peers and the remedy that works for them: a fixed [[destinations]] entry in the
    route's destinations for peers with different AE titles (each AE title is its own peer, whatever
    [[node.peers]] says), and [[node.peers]] with `host` for one AE title that called from several addresses.

    Instances stored before schema v4 recorded no calling host; StateDB.study_senders gives the study's first
    sender's host for them. A study received across that upgrade can therefore count a pre-upgrade image of another
    host as the first host's; that is accepted (a one-off at the upgrade, and only ever under the same AE title)."""
    addresses: dict[tuple[str, str, int], None] = {}
    for calling_ae, host in senders:
        peer = config.peer(calling_ae)
        if peer is not None and peer.host:
            addresses[(calling_ae, peer.host, peer.port or route.sender_port)] = None
        else:
            addresses[(calling_ae, host, route.sender_port)] = None
    if not addresses:
        return ReturnAddress(None, "the sender's address is not known")
    if len(addresses) > 1:
        peers = list(dict.fromkeys(senders))
        named = ", ".join(f"{ae or '?'}@{host}" for ae, host in peers)
        titles = list(dict.fromkeys(ae or "?" for ae, _ in peers))
        if len(titles) > 1:
            remedy = (f"to return results to one of them, add it as a [[destinations]] entry and list it in "
                      f"routes[{route.name}].destinations (AE titles {', '.join(titles)} are different peers; "
                      f"[[node.peers]] cannot join them)")
        else:
            remedy = (f"if these are one device calling from several addresses, give {titles[0]}'s [[node.peers]] "
                      f"entry host (and port) to return to that address; else add a [[destinations]] entry to "
                      f"routes[{route.name}].destinations")
        return ReturnAddress(None, f"the analysed images came from {len(peers)} peers ({named}): "
                                   f"the node cannot tell which one sent the study, so results go to none of them; "
                                   f"{remedy}")
    return ReturnAddress(next(iter(addresses)))


def outbox_items(config: Config, route: RouteConfig, written: list[ResultObject],
                 sender: ReturnAddress | None = None) -> list[OutboxItem]:
    """Every written object to every destination of the route, plus back to the sender (`sender`: return_address)
    when the route says so and the return address is sound; an object for one destination only (a rejection note:
    ResultObject.destination) to that one alone. Raises KeyError for a destination name the config
    lacks."""
    targets = [(d.name, d.ae_title, d.host, d.port) for d in map(config.destination, route.destinations)]
    if route.send_to_sender and route.sender_port and sender is not None and sender.target is not None:
        targets.append((SENDER,) + sender.target)
    return [OutboxItem(name, ae, host, port, result.sop_instance_uid, result.path)
            for name, ae, host, port in targets for result in written
            if getattr(result, "destination", None) in (None, name)]
