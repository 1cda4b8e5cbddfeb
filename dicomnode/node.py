"""The running node: wires SCP, spool, completion, analysis workers and dispatch; resumes after any crash."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import queue
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import pydicom
import pydicom.errors
from apscheduler.schedulers.background import BackgroundScheduler
from pydicom.uid import Comprehensive3DSRStorage, EncapsulatedPDFStorage, KeyObjectSelectionDocumentStorage

from dicomnode.analysis.run import Analyser
from dicomnode.cmr.age import age_from_age_string
from dicomnode.cmr.grouping import UnreadableFile, refused_by_os, unreadable_file
from dicomnode.cmr.study import PatientInfo, load_studies
from dicomnode.config import Config, needs_restart, reloaded_config
from dicomnode.dispatch import SENDER, Dispatcher
from dicomnode.metrics import NodeMetrics
from dicomnode.net.scp import StorageSCP, instance_of_file, max_instance_bytes
from dicomnode.net.tls import client_context, sender_client_context, server_context
from dicomnode.observe import study_context
from dicomnode.results.provenance import report_time
from dicomnode.results.rejection import DISPLAY_COPY_CLASSES, REJECTED_SOP_CLASSES
from dicomnode.retention import FREE_SPACE_CHECK_SECONDS, Retention
from dicomnode.roles import (claims_report, copied_state_warning, is_scale_out, nodes_report, refuse_migration_in_use,
                             refuse_other_versions)
from dicomnode.spool import (CORRECTABLE_ATTRIBUTES, MIN_FREE_INODES, IncomingInstance, OutOfSpace, Spool,
                             StorageLock, read_spool_id, verify_spool_identity)
from dicomnode.state import (ANALYSING, COMPLETE, DONE, FAILED, IN_FLIGHT_PREFIX, OUTBOX_DEAD, OUTBOX_PENDING,
                             OUTBOX_SENT, MISSING_INSTANCE_REASON, REANALYSIS_REQUESTED, RECEIVED, RESULTS_READY,
                             SENDING, RoundFailures, StateDB, StoreOutcome, is_disk_full, is_outage, open_state,
                             outage_reason, prepare_storage_dir, tombstone_destinations, upgrade_schema, user_name)
from dicomnode.studies import NODE_STOPPED, CompletionTracker, PendingRefusals, interrupted_note
from dicomnode.study_path import (ReturnAddress, StudyRun, credited_destination, declined_entry, late_rejection_note,
                                  moved_destinations, outbox_items, renamed_destinations, run_study, write_results)
from dicomnode.types import Declined
from dicomnode.uids import MR_STORAGE_CLASSES, short_hash

log = logging.getLogger("dicomnode.node")

#: how often complete studies that no one queued (a failed analysis retried from the CLI) are picked up
REQUEUE_SECONDS = 5

#: a study whose analysis ends without a recorded outcome is released (analysed again) this often, then failed
MAX_UNRECORDED_RELEASES = 3

#: after result objects could not be written for lack of space (ENOSPC, EDQUOT: node.min_free_space_mb 0 or low, or
#: another writer on the file system): analyses wait until this much more is free than right after the failure
#: (its partial results removed), then run again by themselves; at the latest after NO_SPACE_RETRY_SECONDS (a quota,
#: EDQUOT, is not the file system's free space)
NO_SPACE_RETRY_MB = 8.0
NO_SPACE_RETRY_SECONDS = 600.0
#: ... this many times for the same study generation; the next lack of space fails it (`dicomnode retry` runs it again)
MAX_NO_SPACE_POSTPONEMENTS = 6
_POSTPONED = re.compile(r"^analysis postponed: .*\(postponement (\d+) of \d+\)")

#: after a study whose spooled files this process could not find was released for another worker: how long this
#: process claims nothing (the other workers, which may see the files, take it meanwhile); a single node, which has
#: no other worker, holds back that study alone for this long (Node._missing_alone)
MISSING_FILES_PAUSE_SECONDS = 30.0

#: a study whose spooled files this process may not read (SpooledFilesUnreadable: a permission, an NFS / storage
#: error) is released for another worker and not claimed again by this process for UNREADABLE_PAUSE_SECONDS, doubled
#: at each further try of the same study up to UNREADABLE_PAUSE_MAX_SECONDS (the other studies go on; where the
#: storage itself cannot be read, Node._storage_unreadable, this process claims no study meanwhile); once its files
#: stayed unreadable here for UNREADABLE_RETRY_SECONDS (a storage failover rides through), the next unreadable try
#: fails it
UNREADABLE_PAUSE_SECONDS = 15.0
UNREADABLE_PAUSE_MAX_SECONDS = 120.0
UNREADABLE_RETRY_SECONDS = 600.0

#: what a stop waits for, at most: stores in flight (scp.stop), running analyses (all workers together), the
#: dispatcher's association; systemd's TimeoutStopSec (systemd/*.service) covers their sum with a margin
SCP_STOP_SECONDS = 30.0
WORKERS_STOP_SECONDS = 60.0
DISPATCH_STOP_SECONDS = 30.0


@dataclasses.dataclass(frozen=True)
class _Release:
    """A claim to give back (Node._release_later): the study's next state and reason, and whether it counts towards
    MAX_UNRECORDED_RELEASES."""

    state: str
    why: str
    counted: bool = True
    analysis_id: int | None = None  # the analysis that ran under the claim (None: it failed before one began)
    said: bool = False  # the caller logged why already: no "released after an unrecorded failure" line


#: the reason of a study indexed again from the spool at start (Node.reindex_spool) while it waits for its analysis
REINDEXED_REASON = ("indexed again from the spool at start (the state database did not know it: restored from an "
                    "older backup?); its results may have been delivered before")


class SpooledFilesMissing(Exception):
    """Not one of a claimed study's spooled files is under this process's node.storage_dir. `alone`: this process is
    the only worker (a single node, which verified its spool): the files were removed, not put where another worker
    sees them."""

    def __init__(self, storage_dir: Path, paths: list[Path], alone: bool = False):
        why = ("deleted or moved by hand? have the scanner or PACS send the study again (that puts its files back), "
               "then `dicomnode retry STUDY --reanalyse`" if alone
               else "is storage_dir the shared spool (or an unmounted share)?")
        super().__init__(f"spooled files missing under {storage_dir}: none of the study's {len(paths)} instance "
                         f"file(s) is there (e.g. {paths[0]}): {why}")


class SpooledFilesUnreadable(Exception):
    """Instances of a claimed study, stored and acknowledged, that this process cannot read (cmr.grouping.
    UnreadableFile: a permission on the file or on its series folder, an I/O error): analysing the rest would report
    their images as missing."""

    def __init__(self, storage_dir: Path, unreadable: list, total: int):
        first = Path(unreadable[0].reason.split(": unreadable (", 1)[0])
        if first.is_relative_to(storage_dir):
            first = first.relative_to(storage_dir)
        # node.storage_dir named by its key and `first` relative to it: the reason a study keeps is 500 characters
        super().__init__(
            f"{len(unreadable)} of the study's {total} stored instance file(s) cannot be read by this process, user "
            f"{user_name(os.geteuid())}: {unreadable[0].error}; stored and acknowledged: not analysed without them; "
            f"{_unreadable_advice(unreadable[0].error)}, then `dicomnode retry STUDY`; first: {first}")


def _unreadable_advice(error: str) -> str:
    """What an admin does about a spooled file the operating system refused (`error`: UnreadableFile.error, "<the
    OSError's class>: <strerror>"): a permission is given to the node's user; a folder in a file's place (or a file
    in a folder's) is no permission problem and moves away; anything else (EIO, ESTALE) is the storage's."""
    if error.startswith("PermissionError"):
        return "let that user read the files under node.storage_dir (chown -R)"
    if error.startswith(("IsADirectoryError", "NotADirectoryError")):
        return ("a folder stands where the file should be, or a file where its series folder should be: move it "
                "out of node.storage_dir (no permission change helps)")
    return "check the storage under node.storage_dir (its mount, the disk: the operating system refused the read)"


def _present(path: Path) -> bool:
    """Whether a spooled file is there: True also where the operating system refuses to say (its folder may not be
    searched, an I/O error): a file that is there and unreadable, not a missing one (SpooledFilesUnreadable)."""
    try:
        path.stat()
    except OSError as error:
        return refused_by_os(error) and not isinstance(error, NotADirectoryError)
    return True


def _declare_missing(loaded: list, missing: dict[str, Any]) -> None:
    """Replace, in the `declined` of the loaded studies (cmr.study.CMRStudy), what reading said of each spooled file
    that is gone (`missing`: its path, as a string, to its `instances` row) by an entry that names the acknowledged
    instance and its series (state.MISSING_INSTANCE_REASON), put on the study of its Study Instance UID (else the
    first one that has a UID or series)."""
    for study in loaded:
        study.declined = [d for d in study.declined if d.reason.split(": ", 1)[0] not in missing]
    named = [s for s in loaded if s.study_instance_uid or s.series] or loaded
    for path, row in missing.items():
        home = next((s for s in named if s.study_instance_uid == row["study_instance_uid"]), named[0])
        home.declined.append(Declined(row["series_instance_uid"], (
            f"{MISSING_INSTANCE_REASON}SOP Instance UID {row['sop_instance_uid']} of series "
            f"{row['series_instance_uid']} at {path}: received and acknowledged, then deleted or moved by hand; its "
            f"series was analysed without it")))


def _refused_files(paths: list[Path]) -> list[UnreadableFile]:
    """The UnreadableFile of each of `paths` whose stat the operating system refuses (cmr.grouping.refused_by_os)."""
    refused = []
    for path in paths:
        try:
            path.stat()
        except OSError as error:
            if refused_by_os(error) and not isinstance(error, NotADirectoryError):
                refused.append(unreadable_file(path, error))
    return refused


class Node:
    """`roles`: the roles `dicomnode serve` runs (roles.ROLES); given, the process first makes sure it can run
    (see _open_state_to_serve) before it opens the state for writing. None (tests, the demo): the state is opened
    (SQLite: upgraded) at once and the storage lock is taken at start."""

    def __init__(self, config: Config, analyser=None, *, roles: Sequence[str] | None = None):
        self.config = config
        if roles is not None and not Path(config.node.storage_dir).exists():
            # no node can hold a storage that is not there yet (nothing to name in a lock refusal): a busy port
            # refuses before the folder is made, so that a refused start leaves nothing behind (break48a #12)
            check_listen_ports(config, roles)
        self.storage_dir = prepare_storage_dir(config.node.storage_dir)
        self.storage_lock = StorageLock(self.storage_dir)
        self.db = open_state(config) if roles is None else self._open_state_to_serve(roles)
        self.spool = Spool(self.storage_dir, self.db, config.node.min_free_space_mb)
        self.scheduler = BackgroundScheduler(timezone=dt.datetime.now().astimezone().tzinfo)
        self.db.outage.retry_seconds = config.state.poll_seconds
        self.completion = CompletionTracker(self.db, config.studies, self._enqueue_analysis, self.scheduler,
                                            retry_seconds=max(1.0, config.state.poll_seconds))
        #: refusals made while the state database was unreachable, held for completion (studies.PendingRefusals)
        self.pending_refusals = PendingRefusals(self.storage_dir)
        self.completion.pending_refusals = self.pending_refusals
        self.dispatcher = Dispatcher(self.db, self.storage_dir, config.dispatch, config.node.ae_title,
                                     ssl_context_for=self.ssl_context_for,
                                     destinations=lambda: self.config.destinations,
                                     storage_problem=self.spool.identity_problem)
        self.scp = StorageSCP(config, self.spool, on_stored=self._instance_stored,
                              ssl_context=server_context(config.node.tls) if config.node.tls.enabled else None,
                              on_refused=self._instance_refused, on_duplicate=self._instance_resent,
                              on_aborted=self._transfer_aborted, on_refused_unrecorded=self._refusal_unrecorded)
        self.retention = Retention(self.db, self.storage_dir, config.retention, self.spool.free_space_mb,
                                   free_inodes=self.spool.free_inodes, storage_problem=self.spool.identity_problem)
        self.metrics = NodeMetrics(self)
        self.ready = False  # models warm and the SCP listening: what /healthz reports
        self.unavailable_pipelines: dict[str, str] = {}
        # names of worker threads that ended while not stopping (roles.RoleRunner.dead_threads); /healthz fails then
        self.dead_threads: Callable[[], list[str]] = lambda: []
        self._analyser = analyser
        self._analysis_queue: queue.Queue = queue.Queue()
        self._queued: set[tuple[str, int]] = set()  # what the queue holds, so the requeue job adds nothing twice
        self._queued_lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self._stopping = threading.Event()
        self.analyses_done = 0
        #: (study_key, generation) -> the release to make: analyses whose outcome could not be recorded (a full
        #: disk, an outage) or whose spooled files this process cannot see; their claim is given back by the requeue
        #: job (scale-out: the analysis workers) once the state database takes writes again
        self._unreleased: dict[tuple[str, int], _Release] = {}
        self._release_warned: set[tuple[str, int]] = set()  # said that its release must wait (once each)
        self._released: dict[tuple[str, int], int] = {}  # how often each was released: a repeat fault fails it
        self._unreleased_lock = threading.Lock()
        self._waiting_for_space = False  # analyses postponed for lack of space or inodes (logged once)
        #: what the postponed analyses wait for (results_space_problem), said when it is back: "floor" (free space
        #: under node.min_free_space_mb), "inodes" (under MIN_FREE_INODES), "bytes" (_no_space_free_mb); None: nothing
        self._space_short: str | None = None
        #: free space (MB) right after result objects could not be written (ENOSPC / EDQUOT) with inodes to spare,
        #: or None: analyses wait until NO_SPACE_RETRY_MB more is free (results_space_problem)
        self._no_space_free_mb: float | None = None
        self._no_space_at = 0.0  # time.monotonic() of that failure
        self.spool_id: str | None = None  # the spool's identity, verified at start (spool.verify_spool_identity)
        self._claims_paused_until = 0.0  # time.monotonic(): no claims before (after a study's files were missing)
        self._claims_paused_why = ""  # ... and why (claims_blocked)
        #: (study_key, generation) -> (time.monotonic() of its first unreadable try here, tries): UNREADABLE_*
        self._unreadable_tries: dict[tuple[str, int], tuple[float, int]] = {}
        #: (study_key, generation) -> time.monotonic() before which this process does not claim it again: its files
        #: were unreadable here a moment ago (_unreadable), the other studies go on meanwhile
        self._study_paused: dict[tuple[str, int], float] = {}
        self._requeue_failures = RoundFailures(self.db, log, "queueing complete studies failed", REQUEUE_SECONDS)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def analysis_queue_depth(self) -> int:
        return self._analysis_queue.qsize()

    def ssl_context_for(self, destination_name: str):
        """The TLS client context for a configured destination (None: plain TCP), from the current config; for
        "sender" (send_to_sender) as node.tls.sender_tls says: by default TLS when the node receives over TLS
        (tls.sender_client_context)."""
        if destination_name == SENDER:  # results back to the calling host
            return sender_client_context(self.config.node.tls)
        try:
            destination = self.config.destination(destination_name)
        except KeyError:
            return None
        return client_context(destination, self.config.node.tls.minimum_version)

    # --- lifecycle -------------------------------------------------------------------------------------------

    @property
    def analyser(self):
        if self._analyser is None:
            self._analyser = Analyser(self.config)
        return self._analyser

    def _open_state_to_serve(self, roles: Sequence[str]) -> StateDB:
        """Nothing in the state or the storage changes before this process knows it can run: it takes the storage
        lock (spool.StorageInUse), probes the ports it will listen on (ListenError: another process, maybe an older
        dicomnode that takes no lock, listens there), opens the state without upgrading it and refuses live
        processes of another version on it (state.MixedVersionsError) and, where SQLite needs a migration, any other
        process that has the file open (roles.refuse_migration_in_use); only then is the schema upgraded (SQLite) or
        checked (StateSchemaError). Returns the open state; on a refusal everything taken is released."""
        self.lock_storage(exclusive=not is_scale_out(self.config, roles))
        try:
            check_listen_ports(self.config, roles)
            db = open_state(self.config, upgrade=False, check=False)
            try:
                refuse_other_versions(db)
                copied = None if is_scale_out(self.config, roles) else copied_state_warning(db)
                if copied:
                    log.warning("%s", copied)
                if db.is_sqlite:
                    refuse_migration_in_use(db)
                    upgrade_schema(db.engine)
                else:
                    db.check_schema()
            except BaseException:
                db.close()
                raise
        except BaseException:
            self.storage_lock.release()
            raise
        return db

    def lock_storage(self, exclusive: bool = True) -> None:
        """Take node.storage_dir's lock before touching anything there (spool.StorageLock): exclusive for the
        single-node process, shared among scale-out role processes; the single-node one writes its node.port there
        (`config check` knows the port is its own). Raises spool.StorageInUse naming the holder."""
        if exclusive:
            self.storage_lock.acquire(True, "dicomnode serve (single node)", port=self.config.node.port)
        else:
            self.storage_lock.acquire(False, "dicomnode serve --roles")

    def verify_spool(self) -> str:
        """After the storage lock, before anything else touches the spool: node.storage_dir must be the spool the
        state indexes (spool.verify_spool_identity: raises SpoolMismatch naming both); returns the spool id."""
        if self.spool_id is None:
            self.spool_id = verify_spool_identity(self.db, self.storage_dir)
        self.spool.spool_id = self.spool_id  # from now on nothing is stored, analysed or sent without it
        return self.spool_id

    def start(self, warm_up: bool = True) -> None:
        self.lock_storage(exclusive=True)  # first: a second node on this storage changes nothing before it refuses
        self.verify_spool()
        removed = self.spool.remove_temporaries()
        if removed:
            log.info("removed %d unacknowledged partial file(s) from before a crash", removed)
        unknown = self.reindex_spool()
        orphans, delivered = self._remove_unrecorded_results(unknown)
        if orphans:
            log.info("removed %d result file(s) of analyses that never finished (crash or superseded)", orphans)
        if delivered:
            log.warning("removed %d result file(s) of %d stud(ies) made by analyses the state database does not know "
                        "(restored from an older backup?): they may have been delivered; the studies whose instances "
                        "are spooled are analysed again", sum(delivered.values()), len(delivered))
        if warm_up:
            needed = {name for route in self.config.routes for name in route.pipelines}
            unavailable = self.analyser.warm_up([n for n in ("lge", "cine", "suggestions") if n in needed])
            for name, reason in unavailable.items():
                log.warning("%s", reason)
            self.unavailable_pipelines = unavailable
        self.scheduler.start()
        self._schedule_bank_refresh()
        retention = self.config.retention
        self.scheduler.add_job(self.retention.run_safely, "interval", minutes=retention.purge_interval_minutes,
                               id="retention", next_run_time=dt.datetime.now().astimezone(), coalesce=True,
                               max_instances=1, misfire_grace_time=None)
        self.scheduler.add_job(self.retention.check_free_space_safely, "interval", seconds=FREE_SPACE_CHECK_SECONDS,
                               id="free-space", coalesce=True, max_instances=1, misfire_grace_time=None)
        resumed = self._resume()
        self._say_renamed_destinations()
        self._queue_missing_rejection_notes({d.name for d in self.config.destinations})
        self.scheduler.add_job(self._enqueue_complete_studies, "interval", seconds=REQUEUE_SECONDS, id="requeue",
                               coalesce=True, max_instances=1, misfire_grace_time=None)
        for index in range(self.config.analysis.workers):
            worker = threading.Thread(target=self._analysis_worker, name=f"analysis-{index}", daemon=True)
            worker.start()
            self._workers.append(worker)
        if self.config.observability.metrics_enabled:  # before the SCP: a busy metrics port refuses the start
            self.metrics.serve(self.config.observability.metrics_host, self.config.observability.metrics_port)
        self.dispatcher.start()
        self.scp.start()
        self.ready = True
        log.info("listening as %s on %s:%d (storage %s); resumed %d unfinished stud%s: %d receiving, %d to analyse, "
                 "%d with %d result send(s) pending", self.config.node.ae_title, self.config.node.host, self.scp.port,
                 self.storage_dir, sum(resumed[:3]), "y" if sum(resumed[:3]) == 1 else "ies", *resumed)

    def _schedule_bank_refresh(self) -> None:
        """The report bank is re-indexed when its folder changes, on a timer, never blocking analysis."""
        settings = self.config.analysis.suggestions
        if not settings.enabled or not any("suggestions" in r.pipelines for r in self.config.routes):
            return
        lookup = getattr(self.analyser, "pipeline", None)
        pipeline = lookup("suggestions") if lookup else None
        if pipeline is not None and hasattr(pipeline, "refresh"):
            self.scheduler.add_job(pipeline.refresh, "interval", minutes=settings.refresh_minutes,
                                   id="report-bank-refresh", replace_existing=True, max_instances=1, coalesce=True)

    def reindex_spool(self) -> set[str]:
        """Before any worker runs: the spool's study folders that no study of the state database names (a state
        restored from a backup older than the spool: README "Backup and restore") are indexed again, each instance
        as received at its file's time, so that they are analysed, listed and purged by retention like any other
        (their results may have been delivered before: said in one WARNING). A file that cannot be read or whose
        study key files it elsewhere (studies.grouping_key changed) stays as it is, counted in the WARNING. Returns
        the folders' names (spool/<study hash>, the same hash as results/<study hash>)."""
        folders = self.spool.unindexed_study_folders(row["study_key"] for row in self.db.studies())
        if not folders:
            return set()
        indexed = left = 0
        first = ""
        studies: set[str] = set()
        grouping = self.config.studies.grouping_key
        for name, files in folders.items():
            for path in files:
                try:
                    instance = instance_of_file(path, self.scp.study_keys, grouping)
                    if short_hash(instance.study_key, 16) != name or path.parent.name != short_hash(
                            instance.series_instance_uid, 16):
                        raise ValueError(f"its study key {instance.study_key} files it elsewhere")
                    outcome = self.spool.reindex(instance, path)
                except Exception as exc:  # noqa: BLE001 - one file's fault: the others are indexed
                    first = first or f"{path}: {type(exc).__name__}: {exc}"
                    left += 1
                    continue
                if outcome.stored:
                    indexed += 1
                    studies.add(instance.study_key)
                else:
                    first = first or f"{path}: its SOP Instance UID is indexed under another file"
                    left += 1
        for key in studies:  # their transfers ended long ago: analysed now, not held as cut at the last stop
            self.db.set_study_state(key, COMPLETE, REINDEXED_REASON, expect=(RECEIVED,))
        total = sum(len(files) for files in folders.values())
        log.warning("%d instances of %d studies on disk are not in the state database: restored from an older backup? "
                    "%d instance(s) of %d stud(ies) indexed again as received now: they are analysed again and their "
                    "results sent, although results of them may have been delivered before (a destination may then "
                    "hold two result sets of a study)%s", total, len(folders), indexed, len(studies),
                    f"; {left} file(s) could not be indexed (unreadable, or filed under another study key; first: "
                    f"{first[:300]}) and stay in {self.spool.spool_dir}: remove them by hand once not needed"
                    if left else "")
        return set(folders)

    def _remove_unrecorded_results(self, unknown: set[str] = frozenset()) -> tuple[int, dict[str, int]]:
        """Before any worker runs: result files without a `results` row were never queued for sending; remove them.
        Returns how many of analyses the state database records, then {results/<study hash>: how many} of analyses
        it does not know (no such analysis, no study row, or a study indexed again just now: `unknown`,
        reindex_spool): those may have been delivered before the state was restored from an older backup."""
        root = self.storage_dir / "results"
        if not root.is_dir():
            return 0, {}
        recorded = self.db.result_paths()
        known = {short_hash(row["study_key"], 16) for row in self.db.studies()} - set(unknown)
        analyses = {str(number) for number in self.db.analysis_states()}
        removed = 0
        delivered: dict[str, int] = {}
        for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if path.is_file() and str(path.relative_to(self.storage_dir)) not in recorded:
                path.unlink(missing_ok=True)
                parts = path.relative_to(root).parts
                if parts[0] in known and len(parts) > 2 and parts[1] in analyses:
                    removed += 1
                else:
                    delivered[parts[0]] = delivered.get(parts[0], 0) + 1
            elif path.is_dir():
                try:
                    path.rmdir()  # only when empty
                except OSError:
                    pass
        return removed, delivered

    def stop(self, before_closing: Callable[[], None] | None = None) -> None:
        """SIGTERM: stop accepting, let stores in flight become durable, stop the rest (it resumes on start). The
        transfers the stop cut (StorageSCP.studies_cut) are marked interrupted, as a scale-out receiver's stop marks
        them; once they are, the stop is recorded as clean (StateDB.record_receiver_stopped), so that the next start
        leaves every other study receiving on its quiet timer (CompletionTracker.rebuild). `before_closing()`: once
        every part has stopped (the dispatcher's associations ended), before the state is closed and the storage lock
        released (roles.RoleRunner.stop ends the heartbeat there)."""
        self._stopping.set()
        self.ready = False
        if self.scheduler.running:  # no quiet timer fires while the receiver drains: its open studies are not quiet
            self.scheduler.pause()
        if self.scp.listening:
            self._mark_cut(self.scp.stop(SCP_STOP_SECONDS))
        self.scheduler.shutdown(wait=False)
        for _ in self._workers:
            self._analysis_queue.put(None)
        join_all(self._workers, WORKERS_STOP_SECONDS)
        self.dispatcher.stop(DISPATCH_STOP_SECONDS)
        self.metrics.stop()
        if before_closing is not None:
            before_closing()
        self.db.close()
        self.storage_lock.release()
        log.info("stopped")

    def _mark_cut(self, study_keys: list[str]) -> None:
        """The receiver stopped: mark the studies whose transfer it cut, then record the clean stop. Where either
        fails (the state database unreachable) nothing is recorded, and the next start marks every study still
        receiving, as after a crash."""
        try:
            for key in study_keys:
                self.completion.transfer_interrupted(key, NODE_STOPPED)
            self.db.record_receiver_stopped()
        except Exception as exc:  # noqa: BLE001 - the safe side: the restart takes it for a crash
            log.warning("could not mark the %d stud(ies) this stop cut as interrupted (%s); the next start marks "
                        "every study still receiving", len(study_keys), outage_reason(exc) if is_outage(exc) else exc)

    def _resume(self) -> tuple[int, int, int, int]:
        """Rebuild what was in flight from the durable state; returns (studies receiving, re-queued for analysis,
        sending: with result sends pending, which the dispatcher resumes from the outbox), and pending sends."""
        timers = self.completion.rebuild()
        requeued = 0
        for study in self.db.studies((COMPLETE, ANALYSING, RESULTS_READY)):
            if study["state"] != COMPLETE:
                self.db.set_study_state(study["study_key"], COMPLETE, "resumed after restart")
            self._enqueue_analysis(study["study_key"], study["generation"])
            requeued += 1
        sending = self.db.count_studies((SENDING,))
        self.dispatcher.wake()
        return timers, requeued, sending, self.db.outbox_counts().get(OUTBOX_PENDING, 0)

    def reload(self, config: Config) -> list[str]:
        """SIGHUP: routing rules, destinations, completion, dispatch, retention and the association policy change
        without dropping associations (config.RELOADABLE); returns the changed keys that only a restart applies
        (logged as a warning: the running node keeps their old values)."""
        pending = needs_restart(self.config, config)
        config = reloaded_config(self.config, config)
        removed = [d for d in self.config.destinations if d.name not in {n.name for n in config.destinations}]
        before = {d.name: (d.ae_title, d.host, d.port) for d in self.config.destinations}
        self.config = config
        self.scp.update_config(config)
        self.completion.reload(config)
        self.dispatcher.config = config.dispatch
        if config.retention.purge_interval_minutes != self.retention.config.purge_interval_minutes \
                and self.scheduler.get_job("retention") is not None:
            self.scheduler.reschedule_job("retention", trigger="interval",
                                          minutes=config.retention.purge_interval_minutes)
        self.retention.config = config.retention
        self.spool.min_free_space_mb = config.node.min_free_space_mb
        self.dispatcher.destinations_changed()  # resolved by name when sending: queued items follow the new config
        log.info("configuration reloaded")
        self._warn_removed_destinations(removed)
        self._say_moved_on_reload(before)
        self._queue_missing_rejection_notes({d.name for d in config.destinations
                                             if before.get(d.name) not in (None, (d.ae_title, d.host, d.port))})
        if pending:
            log.warning("these changed settings take effect only after a restart (systemctl restart dicomnode); "
                        "until then the old values stay in use: %s", ", ".join(pending))
        return pending

    def _say_moved_on_reload(self, before: dict[str, tuple[str, str, int]]) -> None:
        """An INFO per destination a reload gave another AE title, host or port (`before`: name -> the former
        address): where results were delivered under its name to another address (state `sent`, the address each
        went to: dead letters and pending sends are not delivered), that the new address is taken as another
        archive (_moved_text); where none was, only that the address changed (a wrong port fixed)."""
        changed = [d for d in self.config.destinations
                   if before.get(d.name) not in (None, (d.ae_title, d.host, d.port))]
        if not changed:
            return
        try:
            delivered = self.db.delivered_address_sets()
        except Exception as exc:  # noqa: BLE001 - a notice only; the start and each re-analysis look again
            log.debug("deliveries to the changed destinations not looked up: %s", exc)
            delivered = None  # not known: the former address may hold results
        for destination in changed:
            now = (destination.ae_title, destination.host, destination.port)
            elsewhere = ([before[destination.name]] if delivered is None else
                         sorted(a for a in delivered.get(destination.name, ()) if a != now))
            if elsewhere:
                log.info("reload: %s", _moved_text(destination, elsewhere))
            else:
                ae, host, port = before[destination.name]
                log.info("reload: destination %s is now %s@%s:%d (was %s@%s:%d, where no result object was "
                         "delivered under that name)", destination.name, *now, ae, host, port)

    def _queue_missing_rejection_notes(self, names: set[str]) -> None:
        """Queue the IOCM rejection note a study's latest analysis owes destination `names` (configured destinations
        whose address a reload changed, or every one at start) at their address now: where the analysis's results
        for it are still undelivered (pending, or dead letters) and the destination's address holds earlier results of
        the study under that name that neither a note delivered there nor the analysis's own note to it lists. That
        is what an analysis queued while the name pointed at another address (a mistyped AE title, host or port:
        _rejected took it for another archive) leaves unrejected once the address is fixed (break51a #2). The note
        (late_rejection_note) is recorded as one more result of that analysis, due with its pending results, or a
        dead letter beside its dead ones (`dicomnode retry` re-queues them together); an INFO names the study.
        A newer analysis (running or finished) decides its own notes: none is added then. Nothing where
        analysis.rejection_note is false. A failure is logged (WARNING naming the study) and leaves the rest."""
        if not names or not self.config.analysis.rejection_note:
            return
        try:
            undelivered = [row for state in (OUTBOX_PENDING, OUTBOX_DEAD) for row in self.db.outbox_for(state=state)
                           if row["destination"] in names]
        except Exception as exc:  # noqa: BLE001 - the next reload or start looks again
            log.warning("rejection notes owed to %s not looked up: %s", ", ".join(sorted(names)), exc)
            return
        groups: dict[tuple[str, int, str], list] = {}
        for row in undelivered:
            groups.setdefault((row["study_key"], row["analysis_id"], row["destination"]), []).append(row)
        for (study_key, analysis_id, name), rows in sorted(groups.items()):
            try:
                self._queue_missing_rejection_note(study_key, analysis_id, self.config.destination(name), rows)
            except Exception as exc:  # noqa: BLE001 - one study's note never stops the others'
                log.warning("study %s: the rejection note owed to %s was not queued: %s: %s; its earlier results "
                            "there may stay current beside the new ones (`dicomnode retry --reanalyse` writes it)",
                            short_hash(study_key), name, type(exc).__name__, exc)

    def _queue_missing_rejection_note(self, study_key: str, analysis_id: int, destination, rows: list) -> None:
        """_queue_missing_rejection_notes for one analysis and destination, `rows` its undelivered outbox rows."""
        analyses = self.db.analyses_of(study_key)
        if not analyses or analyses[-1]["id"] != analysis_id or analyses[-1]["state"] != "done":
            return
        address = (destination.ae_title, destination.host, destination.port)
        if not self.db.purged_reports(study_key) and not any(
                row["analysis_id"] != analysis_id and row["state"] == OUTBOX_SENT and _address(row) == address
                for row in self.db.outbox_for(study_key)):
            return  # nothing earlier delivered at this address (the usual case: no file read)
        results = self.db.results_of(analysis_id)
        classes = {row["sop_instance_uid"]: row["sop_class_uid"] for row in results}
        listed: set[str] = set()  # what the analysis's own notes to the destination list
        for row in self.db.outbox_for(study_key):
            if row["analysis_id"] == analysis_id and row["destination"] == destination.name \
                    and classes.get(row["sop_instance_uid"]) == KeyObjectSelectionDocumentStorage:
                note = pydicom.dcmread(self.storage_dir / row["path"], stop_before_pixels=True)
                listed |= {str(item.ReferencedSOPInstanceUID) for study in
                           note.get("CurrentRequestedProcedureEvidenceSequence", [])
                           for series in study.ReferencedSeriesSequence for item in series.ReferencedSOPSequence}
        copies = any(sop_class in DISPLAY_COPY_CLASSES for sop_class in classes.values())
        reports = [row for row in results if row["sop_class_uid"] == Comprehensive3DSRStorage]
        for report_row in reports:
            report = pydicom.dcmread(self.storage_dir / report_row["path"], stop_before_pixels=True)
            study_instance_uid = str(report.StudyInstanceUID)
            entries = [entry for entry in self._rejected(study_key, study_instance_uid, say=False).get(
                           destination.name, [])
                       if entry["analysis_id"] != analysis_id and entry["sop_instance_uid"] not in listed
                       and (copies or not entry["display_copy"])]
            if not entries:
                continue
            started_at = dt.datetime.fromtimestamp(analyses[-1]["started_at"]).astimezone()
            note = late_rejection_note(report, entries, started_at)
            folder = Path("results") / short_hash(study_key, 16) / str(analysis_id)
            written = write_results([note], self.storage_dir, lambda dataset: self._result_path(folder, dataset))[0]
            summary = json.loads(analyses[-1]["summary_json"] or "{}")
            _note_late_rejection(summary, study_instance_uid, destination.name, written, entries)
            pending = [row["next_attempt_at"] for row in rows if row["state"] == OUTBOX_PENDING]
            # a dead note carries its results' last error first: dispatch.resume_dead_letters classes it by that
            # error and re-queues it with them (review51 #2)
            companion = next((row["last_error"] for row in rows if row["state"] != OUTBOX_PENDING
                              and row["last_error"]), "")
            dead = None if pending else ((f"{companion}; " if companion else "")
                                         + f"not sent: queued when this analysis's results to {destination.name} "
                                         "were all dead letters, to go with them: `dicomnode retry` re-queues them "
                                         "together")
            item = {"destination": destination.name, "ae_title": destination.ae_title, "host": destination.host,
                    "port": destination.port, "sop_instance_uid": written.sop_instance_uid, "path": written.path}
            if not self.db.add_late_result(analysis_id, study_key, tuple(written)[:4], item, summary,
                                           dead_error=dead, next_attempt_at=max(pending) if pending else None,
                                           expected=len(results)):
                (self.storage_dir / written.path).unlink(missing_ok=True)
                return
            log.info("study %s: destination %s is at %s@%s:%d again, where %d earlier result object(s) of study %s "
                     "were delivered under that name that the latest analysis took for another archive's: IOCM "
                     "rejection note %s queued to it%s", short_hash(study_instance_uid), destination.name,
                     destination.ae_title, destination.host, destination.port, len(entries), study_instance_uid,
                     written.sop_instance_uid, "" if pending else " (a dead letter beside the results it goes with)")
            self.dispatcher.wake()
            results = self.db.results_of(analysis_id)
            analyses = self.db.analyses_of(study_key)

    def _warn_removed_destinations(self, removed: list) -> None:
        """A WARNING per destination a reload removed (or renamed) that still has result objects queued for it:
        they are not sent to its former address (dispatch makes the pending ones dead letters); an INFO per one
        renamed (a new name with the same AE title, host and port), saying that rejection notes follow it."""
        if not removed:
            return
        try:
            undelivered = self.db.outbox_for(state="pending") + self.db.outbox_for(state="dead")
        except Exception as exc:  # noqa: BLE001 - the dispatcher still retires them; only the count is missing
            log.warning("reload: destination(s) %s removed from the config; their queued sends could not be counted "
                        "(%s): none is sent to a removed destination", ", ".join(d.name for d in removed), exc)
            return
        renamed = renamed_destinations(self.config, {d.name: (d.ae_title, d.host, d.port) for d in removed})
        for former, name in renamed.items():
            log.info("reload: destination %s is the former %s (same AE title, host and port): a re-analysis retires "
                     "the results delivered to %s with its rejection note to %s", name, former, former, name)
        for destination in removed:
            pending = sum(row["destination"] == destination.name and row["state"] == "pending" for row in undelivered)
            dead = sum(row["destination"] == destination.name and row["state"] == "dead" for row in undelivered)
            if pending or dead:
                log.warning("reload: destination %s (%s@%s:%d) removed from the config: its %d pending send(s) are not "
                            "sent there any more and become dead letters (\"destination %s removed from the config\"), "
                            "%d earlier dead letter(s) stay; to send them, add it back and reload, then `dicomnode "
                            "retry --all --destination %s`", destination.name, destination.ae_title, destination.host,
                            destination.port, pending, destination.name, dead, destination.name)

    # --- receive -> completion -------------------------------------------------------------------------------

    def _instance_refused(self, instance: IncomingInstance) -> None:
        """After the SCP answered 0xA700 for an instance: its study is incomplete, not quiet (studies.REFUSED_PREFIX);
        a refusal the state cannot record now (an outage: the state database on the full disk) is kept pending."""
        try:
            self.completion.instance_refused(instance.study_key)
        except Exception as exc:
            if not is_outage(exc):
                raise
            self.db.outage.failed(exc)
            self._refusal_unrecorded(instance)

    def _refusal_unrecorded(self, instance: IncomingInstance) -> None:
        """After the SCP answered 0xA700 for an instance while the state database is unreachable: the refusal is
        kept (memory and spool) and written to the state before any completion (studies.PendingRefusals)."""
        self.pending_refusals.add(instance.study_key, instance.study_instance_uid, instance.sop_instance_uid,
                                  instance.calling_ae)

    def _instance_resent(self, outcome: StoreOutcome, instance: IncomingInstance) -> None:
        """An instance already held was sent again: a study waiting for the re-send of an interrupted transfer is
        being re-sent (studies.CompletionTracker.instance_resent)."""
        if outcome.study_state_before == RECEIVED:
            self.completion.instance_resent(outcome.study_key)

    def _transfer_aborted(self, study_key: str) -> None:
        """An association that sent instances of the study ended by A-ABORT or a lost connection, not a release."""
        self.completion.transfer_interrupted(study_key)

    def _instance_stored(self, outcome: StoreOutcome, instance: IncomingInstance) -> None:
        """After an instance is durable: re-arm the study's completion timers, or, for an instance after the
        study's results went out (or it failed) with studies.reanalyse_late_instances = false, keep it stored
        and put the study back where it was."""
        before = outcome.study_state_before
        if before is None:
            log.info("study %s: new study, first instance from %s", short_hash(instance.study_instance_uid),
                     instance.calling_ae)
        if not outcome.reopened:
            log.info("study %s: %s instance stored after completion; not an image the analysis reads, so no re-analysis",
                     short_hash(instance.study_instance_uid), instance.modality or "non-MR")
            return
        if before in (SENDING, DONE, FAILED) and not self.config.studies.reanalyse_late_instances:
            analysed = outcome.generation - 1  # add_instance re-opened it as a new generation: none is analysed
            reason = self._late_instances_reason(outcome.study_key, analysed)
            self.db.set_study_state(outcome.study_key, before, reason, expect=(RECEIVED,),
                                    generation=outcome.generation, set_generation=analysed)
            log.info("study %s: %s", short_hash(instance.study_instance_uid), reason)
            return
        if before not in (None, RECEIVED):
            log.info("study %s: instance after completion; re-analysis as generation %d",
                     short_hash(instance.study_instance_uid), outcome.generation)
        row = {"series_instance_uid": instance.series_instance_uid, "series_number": instance.series_number,
               "slice_key": instance.slice_key, "cardiac_images": instance.cardiac_images, "frames": instance.frames,
               "images_in_acquisition": instance.images_in_acquisition, "series_continues": instance.series_continues,
               "modality": instance.modality}
        self.completion.instance_stored(outcome.study_key, new_study=outcome.study_state_before is None, row=row)

    def _late_instances_reason(self, study_key: str, analysed: int) -> str:
        """The reason of a finished study that keeps instances stored after its analysis (generation `analysed`)
        without analysing them (studies.reanalyse_late_instances = false): how many, what that analysis read and
        sent, and how to analyse them, so that `dicomnode status` says why its results (if any) leave them out."""
        started = [row["started_at"] for row in self.db.analyses_of(study_key) if row["generation"] == analysed]
        instances = [row for row in self.db.study_instances(study_key) if row["sop_class_uid"] in MR_STORAGE_CLASSES]
        late = sum(1 for row in instances if started and row["received_at"] > max(started))
        sent = len(self.db.outbox_for(study_key, OUTBOX_SENT))
        results = f"{sent} result object(s) sent" if sent else "nothing sent"
        stored = f"{late} of {len(instances)} MR image(s)" if started else f"MR image(s) (now {len(instances)} held)"
        read = f"the analysis (generation {analysed}) read {len(instances) - late}" if started else \
            f"no analysis of generation {analysed} recorded"
        return (f"{stored} stored after completion, not analysed (studies.reanalyse_late_instances = false): {read}, "
                f"{results}; `dicomnode retry --reanalyse` analyses them all")

    # --- analysis --------------------------------------------------------------------------------------------

    def _enqueue_analysis(self, study_key: str, generation: int) -> None:
        with self._queued_lock:
            self._queued.add((study_key, generation))
        self._analysis_queue.put((study_key, generation))

    def _enqueue_complete_studies(self) -> None:
        """Queue complete studies that no one queued: `dicomnode retry` of a failed analysis (another process), an
        analysis postponed for lack of space once there is room again, a claim released after a full disk. A job of
        the scheduler every REQUEUE_SECONDS: a failed round (an outage) is said once and tried again."""
        try:
            self._enqueue_complete_studies_once()
        except Exception as exc:  # noqa: BLE001 - the next round tries again
            self._requeue_failures.failed(exc)
        else:
            self._requeue_failures.succeeded()

    def _enqueue_complete_studies_once(self) -> None:
        self.release_unrecorded()
        self.forget_unreadable_elsewhere()
        if self.claims_blocked() is not None:  # first: the free space of a spool that is not there cannot be measured
            return  # the spool is not there now, or this process just missed a study's files: said once
        if self.results_space_problem() is not None:
            return  # postponed analyses stay complete; logged once by analyse_study
        paused = self.paused_studies()
        for study in self.db.studies((COMPLETE,)):
            item = (study["study_key"], study["generation"])
            if item in paused:
                continue  # its files were unreadable here a moment ago: queued again after its pause
            with self._queued_lock:
                if item in self._queued:
                    continue
            log.info("study %s: queued for analysis (%s)", short_hash(study["study_instance_uid"]),
                     study["reason"] or "complete")
            self._enqueue_analysis(*item)

    def results_space_problem(self) -> str | None:
        """Why result objects may not be written now, or None: free space under node.min_free_space_mb, fewer than
        MIN_FREE_INODES inodes free, or, after the file system refused result objects with inodes to spare (ENOSPC /
        EDQUOT: _postpone_no_space), not yet NO_SPACE_RETRY_MB more free than right after that failure (nor
        NO_SPACE_RETRY_SECONDS past it). Once the cause that held the postponed analyses is gone, one line says what
        came back. Raises OSError where the spool folder cannot be measured (check spool_problem first)."""
        floor = self.config.node.min_free_space_mb
        free = self.spool.free_space_mb()
        if floor > 0 and free < floor:
            self._space_short = "floor"
            return f"free space {free:.1f} MB is under node.min_free_space_mb = {floor} MB"
        inodes = self.spool.free_inodes()
        if inodes is not None and inodes < MIN_FREE_INODES:
            self._space_short = "inodes"
            return (f"only {inodes} inode(s) free on the file system of node.storage_dir ({free:.1f} MB free), under "
                    f"the floor of {MIN_FREE_INODES}: files, not space, run out (`df -i`)")
        refused_at = self._no_space_free_mb
        waited = time.monotonic() - self._no_space_at
        if refused_at is not None and free < refused_at + NO_SPACE_RETRY_MB and waited < NO_SPACE_RETRY_SECONDS:
            self._space_short = "bytes"
            return (f"no space left on device for the result objects ({free:.1f} MB free; they run again once "
                    f"{refused_at + NO_SPACE_RETRY_MB:.1f} MB are, or in {NO_SPACE_RETRY_SECONDS / 60:.0f} min)")
        self._no_space_free_mb = None
        short, self._space_short = self._space_short, None
        if self._waiting_for_space:
            self._waiting_for_space = False
            if short == "inodes":
                back = (f"{inodes} inodes are free again on the file system of node.storage_dir (floor "
                        f"{MIN_FREE_INODES})")
            elif short == "bytes" and refused_at is not None and free < refused_at + NO_SPACE_RETRY_MB:
                back = (f"{waited / 60:.0f} min have passed since the result objects did not fit (free space "
                        f"{free:.1f} MB; a quota the free space does not show may have been raised)")
            elif short == "bytes" and refused_at is not None:
                back = (f"free space is {free:.1f} MB, {free - refused_at:.1f} MB more than when the result objects "
                        f"did not fit")
            else:
                back = f"free space is {free:.1f} MB" + (f", above node.min_free_space_mb = {floor} MB" if floor > 0
                                                          else "")
            log.info("%s: postponed analyses are queued", back)
        return None

    def _release_later(self, study_key: str, generation: int, reason: str, *, again: str | None = None,
                       failed: str | None = None, counted: bool = True, analysis_id: int | None = None,
                       said: bool = False, fail: bool = False) -> None:
        """An analysis ended without its outcome recorded (the state database refused the write, e.g. a full disk):
        give the claim back (study `complete` again, analysed anew) now, or from the requeue job once it can.

        `again` / `failed`: the study's reason when released / when failed (defaults: an unrecorded outcome). A
        release is `counted`: the MAX_UNRECORDED_RELEASES + 1st of the same study by this process fails it
        instead (a fault that repeats must not loop every few seconds), as does `fail`; an outage of the state
        database is not counted (the study did nothing wrong). Only this claim is given back (StateDB.release_claim,
        `analysis_id`: the analysis that ran under it): one that lapsed meanwhile and another worker holds stays
        theirs."""
        times = self._released.get((study_key, generation), 0)
        if fail or (counted and times >= MAX_UNRECORDED_RELEASES):
            release = _Release(FAILED, failed or f"analysis failed {times + 1} times without a recorded outcome: "
                                                  f"{reason}", counted, analysis_id, said)
        else:
            release = _Release(COMPLETE, again or f"analysed again: the previous analysis ended unrecorded ({reason})",
                               counted, analysis_id, said)
        with self._unreleased_lock:
            self._unreleased[(study_key, generation)] = release
        self.release_unrecorded()

    def release_claim_later(self, study_key: str, generation: int, exc: BaseException,
                            analysis_id: int | None = None) -> None:
        """A claimed study whose analysis did not start or end (the error `exc`; `analysis_id`: the analysis that
        ran, if one began): release its claim, now or once the state database takes writes; counted unless the
        error is an outage of the state database."""
        outage = is_outage(exc)
        self._release_later(study_key, generation, f"{type(exc).__name__}: {exc}"[:300], counted=not outage,
                            again=f"analysed again: the state database was unreachable ({outage_reason(exc)})"
                            if outage else None, analysis_id=analysis_id)

    def release_unrecorded(self) -> None:
        """Retry giving back the claims of analyses whose outcome could not be recorded (`_release_later`)."""
        with self._unreleased_lock:
            pending = dict(self._unreleased)
        for item, release in pending.items():
            study_key, generation = item
            try:
                released = self.db.release_claim(study_key, generation, release.state, release.why[:500],
                                                 release.analysis_id)
                lost = None if released else self.claim_lost_reason(study_key, generation)
            except Exception as exc:  # noqa: BLE001 - still no room: the next requeue round tries again
                if is_outage(exc):
                    self.db.outage.failed(exc, REQUEUE_SECONDS)
                if item not in self._release_warned:  # once per study, not every round
                    self._release_warned.add(item)
                    log.warning("study %s: could not release the claim yet (%s); retried every %d s",
                                short_hash(study_key), outage_reason(exc) if is_outage(exc) else exc,
                                REQUEUE_SECONDS)
                continue
            with self._unreleased_lock:
                self._unreleased.pop(item, None)
                self._release_warned.discard(item)
                if release.counted:
                    self._released[item] = self._released.get(item, 0) + 1
            if released and not release.said:
                log.warning("study %s: claim released after an unrecorded failure: %s", short_hash(study_key),
                            release.why)
            elif lost is not None:
                log.warning("study %s: %s; the analysis that ended unrecorded here is dropped and that worker's claim "
                            "left alone", short_hash(study_key), lost)

    def claim_lost_reason(self, study_key: str, generation: int) -> str | None:
        """Why this process no longer holds its claim of the study's `generation` (what a worker whose claim is gone
        says instead of recording anything), or None where nothing says it lost it (the study moved on: done,
        failed, purged). Raises the state database's errors."""
        study = self.db.study(study_key)
        if study is None:
            return None
        if study["generation"] != generation:
            return "analysis superseded by newer instances"
        holder = study["claimed_by"]
        if study["state"] == ANALYSING and holder not in (None, self.db.process_id):
            during = (" during a state database outage" if self.db.outage.last_failure
                      and time.time() - self.db.outage.last_failure < 3 * self.config.state.lease_seconds else "")
            return f"claim lost: the lease expired{during} and another worker (process {holder}) took the study"
        if study["state"] == ANALYSING and holder == self.db.process_id:
            return "claim lost: the lease expired and another analysis of this process took the study"
        return None

    def spool_problem(self) -> str | None:
        """Why the spool is not there now (its marker, SPOOL_ID_FILE, gone or another: a share that came unmounted
        after the start), or None; said once when it goes and once when it is back (Spool.identity_problem)."""
        return self.spool.identity_problem()

    def claims_blocked(self) -> str | None:
        """Why this process must not claim a study now: the spool is not there, or it just released a study whose
        spooled files it could not see (MISSING_FILES_PAUSE_SECONDS: for a worker that can), or could not read while
        node.storage_dir itself could not be read (UNREADABLE_PAUSE_SECONDS; a study whose files alone are unreadable
        pauses only itself, paused_studies); else None."""
        problem = self.spool_problem()
        if problem is not None:
            return problem
        if time.monotonic() < self._claims_paused_until:
            return self._claims_paused_why
        return None

    def paused_studies(self) -> set[tuple[str, int]]:
        """The (study_key, generation) this process does not claim now (their files were unreadable here a moment
        ago: _unreadable); the others it claims as usual."""
        now = time.monotonic()
        for item, until in list(self._study_paused.items()):
            if until <= now:
                self._study_paused.pop(item, None)
        return set(self._study_paused)

    def forget_unreadable_elsewhere(self) -> None:
        """Drop the unreadable-try records (_unreadable_tries, _study_paused) of studies that moved on without this
        process: another worker analysed them, a new generation came, or they were purged."""
        for item in set(self._unreadable_tries) | set(self._study_paused):
            study_key, generation = item
            row = self.db.study(study_key)
            if row is None or row["generation"] != generation or row["state"] not in (COMPLETE, ANALYSING):
                self._unreadable_tries.pop(item, None)
                self._study_paused.pop(item, None)

    def _storage_unreadable(self) -> bool:
        """Whether node.storage_dir itself cannot be read here (the folder may not be listed, or its spool marker
        read: an NFS outage, a lost mount), rather than one study's files."""
        if not os.access(self.storage_dir, os.R_OK | os.X_OK):
            return True
        try:
            read_spool_id(self.storage_dir)
        except OSError:
            return True
        return False

    def _pause_claims(self, seconds: float, why: str) -> None:
        until = time.monotonic() + seconds
        if until > self._claims_paused_until:
            self._claims_paused_until, self._claims_paused_why = until, why

    def _analysis_worker(self) -> None:
        while True:
            item = self._analysis_queue.get()
            if item is None or self._stopping.is_set():
                return
            with self._queued_lock:
                self._queued.discard(item)
            study_key, generation = item
            try:
                study_row = self.db.study(study_key)
                with study_context(short_hash(study_row["study_instance_uid"]) if study_row else short_hash(study_key)):
                    self.analyse_study(study_key, generation)
            except Exception as exc:  # noqa: BLE001 - the study stays complete (or claimed: released): requeued
                if is_outage(exc):  # said once for the process; the requeue job queues the study again
                    self.db.outage.failed(exc, REQUEUE_SECONDS)
                else:
                    log.exception("analysis of %s crashed", short_hash(study_key))

    def analyse_study(self, study_key: str, generation: int) -> None:
        """Analyse the study's current generation through the study path; record results + outbox atomically.

        Under node.min_free_space_mb the analysis is postponed (the study stays `complete`, queued again once there
        is room); a result object that would not fit fails the analysis (`dicomnode retry`). When even the failure
        cannot be recorded (a full disk), the claim is released as soon as the state database takes writes."""
        gone = self.spool_problem()  # logged once by spool_problem; the requeue job queues it once the spool is back
        if gone is not None:
            self.db.set_study_state(study_key, COMPLETE, self._postponed_reason(study_key, gone),
                                    expect=(COMPLETE, ANALYSING), generation=generation)
            return
        space = self.results_space_problem()
        if space is not None:
            self._postpone(study_key, generation, space)
            return
        if (study_key, generation) in self.paused_studies():
            return  # its files were unreadable here a moment ago: the requeue job queues it after its pause
        analysis_id = self.db.start_analysis(study_key, generation)
        if analysis_id is None:
            return  # a newer generation or another worker has it
        try:
            self._analyse_claimed(study_key, generation, analysis_id)
            self._unreadable_tries.pop((study_key, generation), None)
            self._study_paused.pop((study_key, generation), None)
        except SpooledFilesMissing as exc:
            if self.storage_lock.exclusive:
                self._missing_alone(study_key, generation, analysis_id, exc)
                return
            # not the study's fault, maybe not the spool's: this process's storage_dir may not be the shared spool.
            # The claim goes back (counted: a study whose files no worker finds fails after a few rounds, saying
            # why) and this process claims nothing for a while, so that a worker that sees the files takes it
            self._pause_claims(MISSING_FILES_PAUSE_SECONDS, "a study's spooled files were missing here a moment ago")
            times = self._released.get((study_key, generation), 0)
            log.error("study %s: %s; %s, and this process claims no study for %.0f s", short_hash(study_key), exc,
                      "its claim is released for another worker" if times < MAX_UNRECORDED_RELEASES else
                      f"failed: released {times} times, no worker found the files", MISSING_FILES_PAUSE_SECONDS)
            self._release_later(study_key, generation, str(exc),
                                again=f"released for another worker: {exc}",
                                failed=f"{exc} (released {times} times; no worker found the files)",
                                analysis_id=analysis_id)
        except SpooledFilesUnreadable as exc:
            self._unreadable(study_key, generation, analysis_id, exc)
        except Exception as exc:  # noqa: BLE001 - whatever happened, the study must not stay claimed
            if is_outage(exc):  # the one ERROR line is the outage monitor's
                self.db.outage.failed(exc, REQUEUE_SECONDS)
                log.warning("study %s: analysis ended without a recorded outcome: state database unreachable (%s); "
                            "the claim is released once it is back (unless another worker took it meanwhile)",
                            short_hash(study_key), outage_reason(exc))
                self.release_claim_later(study_key, generation, exc, analysis_id)
                return
            log.exception("study %s: analysis ended without a recorded outcome", short_hash(study_key))
            self._release_later(study_key, generation, f"{type(exc).__name__}: {exc}", analysis_id=analysis_id)

    def _missing_alone(self, study_key: str, generation: int, analysis_id: int, exc: SpooledFilesMissing) -> None:
        """A single node (no other worker may see the files; its spool is verified) found none of the study's files:
        the claim goes back and only this study waits MISSING_FILES_PAUSE_SECONDS (a re-send by the scanner or PACS
        puts the files back), the others are analysed meanwhile; the MAX_UNRECORDED_RELEASES + 1st try fails it."""
        times = self._released.get((study_key, generation), 0)
        tries = f"try {times + 1} of {MAX_UNRECORDED_RELEASES + 1}"
        if times < MAX_UNRECORDED_RELEASES:
            self._study_paused[(study_key, generation)] = time.monotonic() + MISSING_FILES_PAUSE_SECONDS
        log.error("study %s: %s; %s", short_hash(study_key), exc,
                  f"analysis tried again in {MISSING_FILES_PAUSE_SECONDS:.0f} s ({tries})"
                  if times < MAX_UNRECORDED_RELEASES else f"analysis failed ({tries})")
        self._release_later(study_key, generation, str(exc),
                            again=f"analysis waits ({tries}, next in {MISSING_FILES_PAUSE_SECONDS:.0f} s): {exc}",
                            failed=f"analysis failed ({tries}): {exc}", analysis_id=analysis_id, said=True)

    def _unreadable(self, study_key: str, generation: int, analysis_id: int, exc: SpooledFilesUnreadable) -> None:
        """Not the study's fault: the claim goes back (uncounted) for another worker, which may read the files, and
        this process does not claim the study again for a while (UNREADABLE_PAUSE_SECONDS, doubling), so that a
        passing I/O error (an NFS failover) rides through; the other studies go on meanwhile, unless node.storage_dir
        itself cannot be read here (_storage_unreadable: then this process claims no study for that while). The first
        unreadable try past UNREADABLE_RETRY_SECONDS fails the study saying why (`dicomnode retry` runs it once the
        files can be read)."""
        now = time.monotonic()
        item = (study_key, generation)
        first, tries = self._unreadable_tries.get(item, (now, 0))
        tries += 1
        waited = now - first
        shared = self.config.state.url is not None  # other workers may read the files where this one may not
        if waited >= UNREADABLE_RETRY_SECONDS:
            self._unreadable_tries.pop(item, None)
            self._study_paused.pop(item, None)
            why = f"unreadable here for {waited / 60:.0f} min, {tries} tries" + (
                "; released for the other workers between tries" if shared else "")
            log.error("study %s: %s; failed: %s (node.storage_dir %s)", short_hash(study_key), exc, why,
                      self.storage_dir)
            self._release_later(study_key, generation, str(exc), failed=f"analysis failed ({why}): {exc}",
                                fail=True, analysis_id=analysis_id, said=True)
            return
        self._unreadable_tries[item] = (first, tries)
        pause = min(UNREADABLE_PAUSE_MAX_SECONDS, UNREADABLE_PAUSE_SECONDS * 2 ** (tries - 1))
        self._study_paused[item] = now + pause
        if self._storage_unreadable():
            self._pause_claims(pause, f"node.storage_dir {self.storage_dir} could not be read a moment ago")
            meanwhile = "node.storage_dir cannot be read: this process claims no study meanwhile"
        else:
            meanwhile = "the other studies go on"
        plan = (f"try {tries}, {'released for another worker, ' if shared else ''}next in {pause:.0f} s, fails after "
                f"{UNREADABLE_RETRY_SECONDS / 60:.0f} min unreadable")
        log.error("study %s: %s; %s; %s (node.storage_dir %s)",
                  short_hash(study_key), exc, plan, meanwhile, self.storage_dir)
        self._release_later(study_key, generation, str(exc), again=f"analysis waits ({plan}): {exc}",
                            counted=False, analysis_id=analysis_id, said=True)

    def note_postponed(self, why: str) -> None:
        """Say once (until space returns) that analyses wait for free space (or inodes)."""
        if not self._waiting_for_space:
            self._waiting_for_space = True
            log.warning("analyses postponed: %s; they run once %s freed", why,
                        "inodes are" if self._space_short == "inodes" else "space is")

    def _postpone(self, study_key: str, generation: int, why: str) -> None:
        """Leave a complete study unclaimed until there is room for its results (the requeue job queues it)."""
        self.note_postponed(why)
        self.db.set_study_state(study_key, COMPLETE, self._postponed_reason(study_key, why),
                                expect=(COMPLETE, ANALYSING), generation=generation)

    def _postponed_reason(self, study_key: str, why: str) -> str:
        """"analysis postponed: `why`", keeping the count of the lack-of-space postponements the study's reason
        holds (_postpone_no_space counts them there)."""
        study = self.db.study(study_key)
        done = _POSTPONED.match((study["reason"] if study else None) or "")
        kept = f" (postponement {done.group(1)} of {MAX_NO_SPACE_POSTPONEMENTS})" if done is not None else ""
        return f"analysis postponed: {why[:400]}{kept}"

    def _result_path(self, folder: Path, dataset) -> Path:
        """Where a result object goes; refuses (OutOfSpace) under node.min_free_space_mb, as the SCP does."""
        space = self.results_space_problem()
        if space is not None:
            raise OutOfSpace(f"results not written: {space}")
        return folder / f"{dataset.SOPInstanceUID}.dcm"

    def _discard_partial(self, folder: Path) -> None:
        """Result files of an analysis that failed were never recorded: remove them (they hold space)."""
        try:
            shutil.rmtree(self.storage_dir / folder)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not remove the partial results in %s: %s (removed at the next start)", folder, exc)

    def _no_space_failure(self, exc: BaseException, previous_reason: str | None) -> str | None:
        """Why a lack of space while analysing fails the study instead of postponing it, or None: the file the file
        system refused lies outside node.storage_dir (a full /tmp, a model cache, a quota free_space_mb cannot see:
        more room for the results would not help), or the study generation was postponed MAX_NO_SPACE_POSTPONEMENTS
        times already (counted in its reason, so across restarts and processes)."""
        filename = getattr(exc, "filename", None)
        if not isinstance(exc, OutOfSpace) and filename:
            try:
                Path(filename).resolve().relative_to(Path(self.storage_dir).resolve())
            except (ValueError, OSError, TypeError):
                return (f"analysis failed: no space left writing {filename}, outside node.storage_dir "
                        f"({getattr(exc, 'strerror', None) or exc}): free space there (or raise the quota), then "
                        "`dicomnode retry`")
        done = _POSTPONED.match(previous_reason or "")
        if done is not None and int(done.group(1)) >= MAX_NO_SPACE_POSTPONEMENTS:
            return (f"analysis failed: no space for the result objects after {MAX_NO_SPACE_POSTPONEMENTS} "
                    f"postponements ({exc}): free space in node.storage_dir, then `dicomnode retry`")
        return None

    def _postpone_no_space(self, study_key: str, generation: int, analysis_id: int, tag: str,
                           exc: BaseException, previous_reason: str | None = None) -> None:
        """Result objects did not fit (OutOfSpace under node.min_free_space_mb, or the file system's ENOSPC /
        EDQUOT, from any writer of the analysis: SEG, SR, PDF, display copies): their partial files are gone
        (_discard_partial); the study goes back to `complete`, reason "analysis postponed: no space for the result
        objects (postponement n of MAX_NO_SPACE_POSTPONEMENTS): …", and runs again by itself once there is room
        (results_space_problem), or at the next start; its analysis is recorded abandoned. One ERROR line. Fails
        the study instead where _no_space_failure says why (previous_reason: the study's reason when claimed)."""
        failure = self._no_space_failure(exc, previous_reason)
        if failure is not None:
            log.error("study %s: %s", tag, failure)
            self._record_failure(analysis_id, study_key, generation, failure[:500])
            return
        done = _POSTPONED.match(previous_reason or "")
        count = (int(done.group(1)) if done is not None else 0) + 1
        freed = "space is freed"
        if not isinstance(exc, OutOfSpace):
            try:
                inodes = self.spool.free_inodes()
                free = self.spool.free_space_mb()
            except OSError:
                inodes, free = None, 0.0
            if inodes is not None and inodes < MIN_FREE_INODES:
                # the file system ran out of files: results_space_problem holds the analyses until inodes are back
                self._space_short, freed = "inodes", f"inodes are freed (only {inodes} are free: `df -i`)"
            else:
                self._space_short = "bytes"
                self._no_space_free_mb = free
                self._no_space_at = time.monotonic()
        elif self._space_short == "inodes":  # results_space_problem refused them for lack of inodes
            freed = "inodes are freed"
        cause = str(exc) if isinstance(exc, OutOfSpace) else (
            f"{getattr(exc, 'strerror', None) or exc} writing {getattr(exc, 'filename', None) or 'a result object'}")
        why = f"no space for the result objects (postponement {count} of {MAX_NO_SPACE_POSTPONEMENTS}): {cause}"
        log.error("study %s: analysis postponed: %s; its partial results were removed, and it runs again by itself "
                  "once %s (or at the next start)", tag, why, freed)
        self._waiting_for_space = True  # said just now: the WARNING of note_postponed would repeat it
        reason = f"analysis postponed: {why}"[:500]
        try:
            if self.db.release_claim(study_key, generation, COMPLETE, reason, analysis_id):
                return
        except Exception:  # noqa: BLE001 - the state database is on the full disk too: released once it can be
            pass
        self._release_later(study_key, generation, why, counted=False, again=reason, analysis_id=analysis_id)

    def _record_failure(self, analysis_id: int, study_key: str, generation: int, reason: str) -> None:
        try:
            self.db.fail_analysis(analysis_id, study_key, generation, reason)
        except Exception as exc:  # noqa: BLE001 - e.g. "database or disk is full"
            if is_outage(exc):  # said once by the outage monitor
                self.db.outage.failed(exc, REQUEUE_SECONDS)
            log.log(logging.WARNING if is_outage(exc) else logging.ERROR,
                    "study %s: could not record the failed analysis (%s): the claim is released once the state "
                    "database takes writes again", short_hash(study_key), outage_reason(exc) if is_outage(exc) else exc)
            self._release_later(study_key, generation, reason, analysis_id=analysis_id)

    def _analyse_claimed(self, study_key: str, generation: int, analysis_id: int) -> None:
        started_at = dt.datetime.now().astimezone()
        study_row = self.db.study(study_key)
        listed = self.db.study_instances(study_key)
        paths = [self.spool.path_of(row["path"]) for row in listed]
        if paths and not any(_present(path) for path in paths):  # stops at the first file there: the usual case
            raise SpooledFilesMissing(self.storage_dir, paths, alone=self.storage_lock.exclusive)
        tag = short_hash(study_row["study_instance_uid"])
        missing = {str(path): row for row, path in zip(listed, paths) if not _present(path)}
        if missing:
            log.error("study %s: %d acknowledged instance(s) missing from the spool (deleted or moved by hand?): %s; "
                      "the study is analysed without them (status and summary.json declined say so)", tag,
                      len(missing), "; ".join(f"SOP Instance UID {row['sop_instance_uid']} of series "
                                              f"{row['series_instance_uid']} at {path}"
                                              for path, row in list(missing.items())[:5])
                      + (" …" if len(missing) > 5 else ""))
        folder = Path("results") / short_hash(study_key, 16) / str(analysis_id)
        try:
            try:  # study_instances: oldest received first; a re-send is what came after the study's first analysis
                loaded = load_studies(paths, in_receive_order=True,
                                      resent=self._resent_paths(study_key, analysis_id, listed, paths),
                                      max_inflated_bytes=max_instance_bytes(self.config.node.max_instance_mb))
            except OSError as error:  # a series folder this process may not search (stat of its files refused)
                if not refused_by_os(error):
                    raise
                refused = _refused_files(paths) or [unreadable_file(error.filename or paths[0], error)]
                raise SpooledFilesUnreadable(self.storage_dir, refused, len(paths)) from error
            if missing:
                _declare_missing(loaded, missing)
            unreadable = [d for s in loaded for d in s.declined if isinstance(d, UnreadableFile)]
            if unreadable:
                raise SpooledFilesUnreadable(self.storage_dir, unreadable, len(paths))
            studies = [s for s in loaded if s.study_instance_uid or s.series]
            if not studies:  # say why each file was unreadable, not only that none was
                reasons = "; ".join(sorted({d.reason for s in loaded for d in s.declined}))
                raise ValueError("no readable DICOM instance in the study" + (f": {reasons[:500]}" if reasons else ""))
            # grouping by AccessionNumber or PatientID+StudyDate can put several studies under one key: each is
            # analysed on its own, its results go into its own study
            note = interrupted_note(study_row["reason"])  # a cut transfer not sent again: said beside the numbers
            requested = study_row["reason"] == REANALYSIS_REQUESTED
            runs = []
            for study in studies:
                if note is not None:
                    study.declined.append(Declined(None, note))
                try:
                    run = run_study(study, self.config, self.analyser, study_row["calling_ae"], self.storage_dir,
                                    lambda dataset: self._result_path(folder, dataset), started_at=started_at,
                                    supersedes=self._superseded(study_key, study.study_instance_uid, requested,
                                                                study.patient),
                                    rejects=self._rejected(study_key, study.study_instance_uid),
                                    senders=self.db.study_senders(study_key, study.study_instance_uid or None,
                                                                  MR_STORAGE_CLASSES))
                except Exception as exc:  # noqa: BLE001 - one study's failure never takes the others of the key
                    if len(studies) == 1 or isinstance(exc, (OutOfSpace, OSError)) or is_outage(exc):
                        raise  # the node's fault: not one study's, nothing half-sent
                    log.exception("study %s: analysis failed", short_hash(study.study_instance_uid))
                    run = StudyRun(declined_entry(study, f"analysis failed: {type(exc).__name__}: {exc}"),
                                   errors=[f"analysis failed: {type(exc).__name__}: {exc}"])
                self.metrics.analysis_finished(run.durations)
                runs.append(run)
            summary = runs[0].summary if len(runs) == 1 else {
                "study_key": study_key, "studies": [r.summary for r in runs],
                "outputs": [o for r in runs for o in r.summary["outputs"]]}
            # what a later re-analysis tells instances added from instances sent again (replaced) by: how many it
            # read, and the latest receive time among them (not the claim's time: an instance that does not re-open
            # the study can be indexed between the claim and the listing, and is read; review47 #6)
            summary["instances_analysed"] = len(paths)
            if listed:
                summary["instances_received_until"] = max(row["received_at"] for row in listed)
                # the series read: a later instance of one of them is sent again, of another one added (_resent_paths)
                summary["series_read"] = sorted({str(row["series_instance_uid"]) for row in listed})
            written = [w for r in runs for w in r.written]
            outbox = [item for r in runs if r.route is not None
                      for item in outbox_items(self.config, r.route, r.written, self._return_address(study_key, r))]
        except Exception as exc:
            self._discard_partial(folder)
            if is_outage(exc) or isinstance(exc, SpooledFilesUnreadable):  # not the study's fault: analyse_study
                raise  # releases it
            if isinstance(exc, OutOfSpace) or is_disk_full(exc):  # the node's disk, not the study: wait for space
                self._postpone_no_space(study_key, generation, analysis_id, tag, exc, study_row["reason"])
                return
            log.exception("study %s: analysis failed", tag)
            self._record_failure(analysis_id, study_key, generation, f"analysis failed: {exc}"[:500])
            return
        refused = [r.refused for r in runs if r.refused]
        if refused and not written:
            # the input's fault, said with a WARNING by the study path: failed (kept whatever retention says, nothing
            # sent); `dicomnode retry` analyses it again once the sender or PACS corrected the study and re-sent it
            self._record_failure(analysis_id, study_key, generation, "; ".join(refused)[:500])
            return
        errors = list(dict.fromkeys(e for r in runs for e in r.errors))
        if errors and not written:
            # the node's fault (a model that did not load, a pipeline that raised), not the input's: failed, so that
            # `dicomnode status` shows it and `dicomnode retry` runs the analysis again once it is fixed
            log.error("study %s: no results, the analysis failed: %s", tag, "; ".join(errors))
            self._record_failure(analysis_id, study_key, generation, ("analysis failed: " + "; ".join(errors))[:500])
            return
        if self.db.finish_analysis(analysis_id, study_key, generation, summary, written,
                                   [dataclasses.asdict(item) for item in outbox]):
            self.analyses_done += 1
            log.info("study %s: %d result object(s), %d send(s) queued", tag, len(written), len(outbox))
            self.dispatcher.wake()
        else:
            lost = self.claim_lost_reason(study_key, generation) or "the study moved on during the analysis"
            log.log(logging.WARNING if lost.startswith("claim lost") else logging.INFO,
                    "study %s: %s; nothing of this analysis is recorded or sent", tag, lost)

    def _return_address(self, study_key: str, run: StudyRun) -> ReturnAddress | None:
        """Where send_to_sender returns `run`'s results: the one peer that sent the MR images of its study (the
        images the analysis reads; an object of another class, or another study grouped under the key, does not
        count), as run_study found it before the analysis worded its report (StudyRun.sender); None where the route
        does not send back. Several peers: none of them, a WARNING naming them, and the reason kept in the summary
        (`send_to_sender`)."""
        address = run.sender
        if run.route is None or not run.route.send_to_sender or not run.written or address is None:
            return None
        study_uid = run.summary.get("study_instance_uid")
        if address.target is None:
            log.warning("study %s: results not sent back to the sender (send_to_sender): %s",
                        short_hash(study_uid or study_key), address.problem)
            run.summary["send_to_sender"] = {"sent": False, "reason": address.problem}
        else:
            ae, host, port = address.target
            run.summary["send_to_sender"] = {"sent": True, "ae_title": ae, "host": host, "port": port}
        return address

    def _superseded(self, study_key: str, study_instance_uid: str, requested: bool = False,
                    patient: PatientInfo | None = None) -> list[dict]:
        """Earlier SRs of this study (under its key) that a re-analysis supersedes, oldest first, each with what the
        new report says of the one it replaces (results.provenance.supersede_text): the earlier SR's `series_number`
        and `report_time` (its ContentDate / ContentTime), the `pdf_series_number` of the PDF of the same analysis,
        and on the latest the `reason` the study is analysed again (`requested`: `dicomnode retry --reanalyse`;
        `patient`: what the new analysis reads of the patient, which a correction may have changed) and
        `delivered_to`, the outbox destinations that received that SR (sorted names, a renamed destination by its
        configured name, a configured one only where it was delivered to its configured address, _credit; absent for
        a tombstone that records none), so that study_path.run_study words the text
        for a destination that never received it (break47b #4)."""
        superseded = []
        latest_header = None
        single = self._single_study(study_key, study_instance_uid)
        for row in self.db.earlier_reports(study_key, Comprehensive3DSRStorage):
            if "analysis_id" not in row.keys() and ((row["study_instance_uid"] != study_instance_uid)
                                                    if row["study_instance_uid"] is not None else not single):
                continue  # a purged SR of another study grouped under the key (review46 #2)
            entry = {"sop_instance_uid": row["sop_instance_uid"], "series_instance_uid": row["series_instance_uid"],
                     "study_instance_uid": study_instance_uid, "sop_class_uid": row["sop_class_uid"]}
            try:
                earlier = pydicom.dcmread(self.storage_dir / row["path"], stop_before_pixels=True,
                                          specific_tags=["StudyInstanceUID", "SeriesNumber", "ContentDate",
                                                         "ContentTime", *CORRECTABLE_ATTRIBUTES])
                if str(earlier.StudyInstanceUID) != study_instance_uid:
                    continue  # another study grouped under the same key
                entry.update(_report_identity(earlier))
            except (OSError, AttributeError, pydicom.errors.InvalidDicomError):
                earlier = None  # purged or unreadable: still named as superseded
            latest_header = earlier
            if "analysis_id" in row.keys():
                entry["analysis_id"] = row["analysis_id"]
            elif (destinations := tombstone_destinations(row)) is not None:
                entry["delivered_to"] = destinations
            superseded.append(entry)
        if superseded:
            latest = superseded[-1]
            corrected = patient_corrections(latest_header, patient) if latest_header is not None else []
            latest["reason"] = self._reanalysis_reason(study_key, latest.get("analysis_id"), requested, corrected)
            latest.update(self._pdf_series_number(study_key, latest.get("analysis_id")))
            rows = self.db.outbox_for(study_key)
            credit = self._credit(study_key)
            if "analysis_id" in latest:
                latest["delivered_to"] = sorted({credit(row["destination"], _address(row)) for row in rows
                                                 if row["state"] == OUTBOX_SENT
                                                 and row["sop_instance_uid"] == latest["sop_instance_uid"]} - {None})
            elif "delivered_to" in latest:
                latest["delivered_to"] = sorted({credit(name) for name in latest["delivered_to"]} - {None})
        for earlier in superseded[:-1]:
            earlier.pop("delivered_to", None)
        return superseded

    def _rejected(self, study_key: str, study_instance_uid: str, say: bool = True) -> dict[str, list[dict]]:
        """The earlier result objects of this study that a re-analysis supersedes and retires with IHE IOCM
        Rejection Notes, per outbox destination (a [[destinations]] name, or "sender"): {destination: the objects
        that destination received, oldest first, as dicts with sop_instance_uid, series_instance_uid, sop_class_uid,
        study_instance_uid, `display_copy` (True for a display copy, results.rejection.DISPLAY_COPY_CLASSES,
        listed only where the new analysis writes its own: study_path.with_rejection_note), `analysis_id` (None for
        a purged one) and `series_number` (None where its file is gone), from which the note's description names
        the series it lists (results.rejection.listed_series_range)}. The classes are
        REJECTED_SOP_CLASSES (SEG, SR, PDF, SC) and the display copies.

        A destination gets only what its outbox rows delivered (`sent`) to its configured address (an AE title, host
        and port: a name repointed at another archive is not credited with what its former address received, the
        same archive renamed is, _credit; review47 #2), and a purged object (a tombstone) only
        where the tombstone records the destination (schema 6; an older tombstone names none, so no note lists it):
        an IOCM archive such as dcm4chee-arc refuses a whole note naming an instance it does not hold, and hides
        nothing then (review46 #3). A pending send is not counted: this analysis's own finish retires it unsent.
        Left out for a destination: what an earlier note delivered to that destination already lists (a note
        never delivered there, superseded or dead, retires nothing: review46 #1), and objects of another study
        grouped under the key (a tombstone of unknown study only where the key holds this one study alone,
        review46 #2). {} where there is none. `say`: log which destination is taken as renamed, and (WARNING)
        which as another archive, whose former address keeps the earlier results unrejected unless the address
        goes back to it (_queue_missing_rejection_notes then queues the note this analysis could not write)."""
        rows = self.db.outbox_for(study_key)
        renamed = self._renamed(study_key, rows)
        credit = self._credit(study_key)
        delivered: dict[str, set[str]] = {}
        moved: dict[str, set[tuple[str, str, int]]] = {}
        for item in rows:
            if item["state"] == OUTBOX_SENT:
                destination = credit(item["destination"], _address(item))
                if destination is None:
                    moved.setdefault(item["destination"], set()).add(_address(item))
                    continue
                delivered.setdefault(item["sop_instance_uid"], set()).add(destination)
        single = self._single_study(study_key, study_instance_uid)
        already: dict[str, set[str]] = {}
        for row in self.db.earlier_reports(study_key, KeyObjectSelectionDocumentStorage):
            holders = self._holders(row, delivered, study_instance_uid, single, credit)
            if not holders:
                continue  # never delivered: it retired nothing
            try:
                note = pydicom.dcmread(self.storage_dir / row["path"], stop_before_pixels=True)
                listed = {str(item.ReferencedSOPInstanceUID) for study in
                          note.get("CurrentRequestedProcedureEvidenceSequence", [])
                          for series in study.ReferencedSeriesSequence for item in series.ReferencedSOPSequence}
            except (OSError, AttributeError, pydicom.errors.InvalidDicomError):
                continue  # purged: what it listed may be listed again, which an IOCM archive takes as it is
            for destination in holders:
                already.setdefault(destination, set()).update(listed)
        rejected: dict[str, list[dict]] = {}
        numbers: dict[str, int | None] = {}  # Series Instance UID -> its Series Number (one file read per series)
        for sop_class in sorted(REJECTED_SOP_CLASSES | DISPLAY_COPY_CLASSES):
            for row in self.db.earlier_reports(study_key, sop_class):
                uid = row["sop_instance_uid"]
                holders = [d for d in sorted(self._holders(row, delivered, study_instance_uid, single, credit))
                           if uid not in already.get(d, ())]
                if not holders or ("analysis_id" in row.keys() and not self._of_study(row, study_instance_uid)):
                    continue
                entry = {"sop_instance_uid": uid, "series_instance_uid": row["series_instance_uid"],
                         "sop_class_uid": row["sop_class_uid"], "study_instance_uid": study_instance_uid,
                         "display_copy": sop_class in DISPLAY_COPY_CLASSES,
                         "analysis_id": row["analysis_id"] if "analysis_id" in row.keys() else None}
                if row["series_instance_uid"] not in numbers:
                    numbers[row["series_instance_uid"]] = self._series_number(row["path"])
                entry["series_number"] = numbers[row["series_instance_uid"]]
                for destination in holders:
                    rejected.setdefault(destination, []).append(entry)
        if not say:
            return rejected
        for former, name in renamed.items():
            if name in rejected:
                log.info("study %s: destination %s of the config is the former %s (same AE title, host and port): "
                         "the earlier results delivered to %s are retired by the rejection note to %s",
                         short_hash(study_instance_uid), name, former, former, name)
        for destination in self.config.destinations:
            if destination.name in moved:
                log.warning("study %s: %s; no rejection note to it lists them, so the earlier results of study %s "
                            "stay current, unrejected, at %s; if that address is a mistake, fix "
                            "destinations[%s] (reload or restart) before these results are delivered: the node then "
                            "queues the note to it", short_hash(study_instance_uid),
                            _moved_text(destination, sorted(moved[destination.name])), study_instance_uid,
                            ", ".join(f"{ae}@{host}:{port}" for ae, host, port in sorted(moved[destination.name])),
                            destination.name)
        return rejected

    def _renamed(self, study_key: str, rows) -> dict[str, str]:
        """{a destination name the study's outbox `rows` or tombstones hold that the config no longer has: the
        configured destination with the same AE title, host and port} (study_path.renamed_destinations). A tombstone
        names its destinations only and its outbox rows went with the purge: their addresses are then looked up
        among every study's deliveries."""
        addresses = self.db.delivered_addresses() if self.db.purged_reports(study_key) else {}
        addresses.update({row["destination"]: (row["ae_title"], row["host"], row["port"]) for row in rows})
        return renamed_destinations(self.config, addresses)

    def _credit(self, study_key: str) -> Callable[..., str | None]:
        """credit(name, address=None): the configured destination a delivery to outbox destination `name` queued
        with `address` ((ae_title, host, port)) counts for (study_path.credited_destination; None: none). A
        tombstone names its destinations only (its outbox rows went with the purge): a name is then looked up among
        every study's deliveries, and counts only where each address it was delivered to is counted alike (a name
        that moved cannot tell which address a purged object went to); a name never delivered since counts as
        itself."""
        addresses = self.db.delivered_address_sets() if self.db.purged_reports(study_key) else {}
        configured = {d.name for d in self.config.destinations}

        def credit(name: str, address: tuple[str, str, int] | None = None) -> str | None:
            if address is not None:
                return credited_destination(self.config, name, address)
            credited = {credited_destination(self.config, name, known) for known in addresses.get(name, ())}
            if not credited:
                return name
            if len(credited) == 1:
                return credited.pop()
            return None if name in configured else name
        return credit

    def _say_renamed_destinations(self) -> None:
        """At start: an INFO per configured destination that has the AE title, host and port of a former name that
        results were delivered to (renamed in the config while the node was stopped), saying that re-analyses
        retire what it received under that name with their rejection notes to it; and an INFO per configured
        destination whose name results were delivered to at another address (moved_destinations)."""
        try:
            renamed = renamed_destinations(self.config, self.db.delivered_addresses())
            moved = moved_destinations(self.config, self.db.delivered_address_sets())
        except Exception as exc:  # noqa: BLE001 - a notice only; the re-analysis looks again
            log.debug("renamed destinations not looked up: %s", exc)
            return
        for destination in self.config.destinations:
            if destination.name in moved:
                log.info("%s", _moved_text(destination, moved[destination.name]))
        for former, name in renamed.items():
            log.info("destination %s has the AE title, host and port of %s, which results were delivered to: it is "
                     "taken as the same archive, renamed, and a re-analysis retires what %s received with its "
                     "rejection note to %s", name, former, former, name)

    def _single_study(self, study_key: str, study_instance_uid: str) -> bool:
        """Whether every instance the key holds now is of `study_instance_uid` (the key's one study)."""
        return {row["study_instance_uid"] for row in self.db.study_instances(study_key)} <= {study_instance_uid}

    @staticmethod
    def _holders(row, delivered: dict[str, set[str]], study_instance_uid: str, single: bool,
                 credit: Callable[[str], str | None]) -> set[str]:
        """The destinations holding an earlier result object: its delivered outbox rows, or for a tombstone the
        destinations it records, provided its recorded study is `study_instance_uid` (unknown: `single`), each as
        `credit` (Node._credit) counts it: by its configured name where renamed since, left out where its name now
        points at another address."""
        if "analysis_id" in row.keys():
            return delivered.get(row["sop_instance_uid"], set())
        study = row["study_instance_uid"]
        if (study != study_instance_uid) if study is not None else not single:
            return set()
        return {credit(name) for name in tombstone_destinations(row) or ()} - {None}

    def _of_study(self, row, study_instance_uid: str) -> bool:
        """Whether a kept earlier result object is of `study_instance_uid` (its file says; unreadable: taken to be,
        the key's other studies' objects being readable as long as they are kept)."""
        try:
            earlier = pydicom.dcmread(self.storage_dir / row["path"], stop_before_pixels=True,
                                      specific_tags=["StudyInstanceUID"])
            return str(earlier.StudyInstanceUID) == study_instance_uid
        except (OSError, AttributeError, pydicom.errors.InvalidDicomError):
            return True

    def _resent_paths(self, study_key: str, analysis_id: int, listed: Sequence, paths: Sequence[Path]) -> set[Path]:
        """The paths (of `paths`, one per row of `listed`: study_instances) of the instances sent again: received
        after an earlier analysis of the study read its instances (its `instances_received_until`; one recorded
        before it: its start) and of a series that analysis read (its `series_read`; one recorded before it: the
        series of the instances received by then). Those replace a copy it read (Spool.replace: same SOP Instance
        UID, received when replaced) or add to a series it read: a real re-send, whose patient size, weight, age or
        sex corrects the earlier (cmr.study.study_patient). A series first received after an analysis (a scanner
        sending series by series, analysed between them) is not sent again: it counts with the majority, as in one
        transmission. Before any analysis: none. Any earlier analysis counts, the first included, so that a later
        `retry --reanalyse` still sees a correction as one (review48b #3)."""
        reads: list[tuple[float, set[str]]] = []
        for earlier in self.db.analyses_of(study_key):
            if earlier["id"] == analysis_id:
                continue
            try:
                read = json.loads(earlier["summary_json"] or "{}")
            except ValueError:
                read = {}
            read = read if isinstance(read, dict) else {}
            until = read.get("instances_received_until")
            cutoff = until if isinstance(until, (int, float)) and not isinstance(until, bool) else earlier["started_at"]
            if not isinstance(cutoff, (int, float)):
                continue
            series = read.get("series_read")
            reads.append((cutoff, {str(uid) for uid in series} if isinstance(series, list) else
                          {str(row["series_instance_uid"]) for row in listed if row["received_at"] <= cutoff}))
        return {path for row, path in zip(listed, paths)
                if any(row["received_at"] > cutoff and str(row["series_instance_uid"]) in series
                       for cutoff, series in reads)}

    def _reanalysis_reason(self, study_key: str, analysis_id: int | None, requested: bool,
                           corrected: Sequence[str] = ()) -> str:
        """Why the study is analysed again after the analysis `analysis_id` made its latest report: asked for, the
        images received again after a purge (no analysis left: a tombstone), or instances received since: those
        added ("2 instance(s) received after that report") told from those sent again in place of the copies that
        report was made from (a corrected re-send, Spool.replace) by what that analysis recorded of the instances
        it read: added are those beyond their count (`instances_analysed`), sent again those others received after
        the latest of their receive times (`instances_received_until`; an analysis recorded before it: after its
        start; one recorded before `instances_analysed`: all said received), and `corrected` (patient_corrections:
        "PatientWeight 95 kg corrected to 60 kg") said with them."""
        if requested:
            return "re-analysis requested (dicomnode retry --reanalyse)"
        earlier = next((a for a in self.db.analyses_of(study_key) if a["id"] == analysis_id), None)
        if earlier is None:
            return "the study was received again after its results were purged"
        instances = self.db.study_instances(study_key)
        try:
            read = json.loads(earlier["summary_json"] or "{}")
        except ValueError:
            read = {}
        read = read if isinstance(read, dict) else {}
        analysed, until = read.get("instances_analysed"), read.get("instances_received_until")
        since = until if isinstance(until, (int, float)) and not isinstance(until, bool) else earlier["started_at"]
        late = sum(1 for row in instances if row["received_at"] > since)
        changes = " and ".join(corrected)
        if not isinstance(analysed, int):
            if not late:
                return "the study's images changed after that report" + (f" ({changes})" if changes else "")
            return f"{late} instance(s) received after that report" + (f", with {changes}" if changes else "")
        added = max(0, len(instances) - analysed)
        if not late and not added:
            return "the study's images changed after that report" + (f" ({changes})" if changes else "")
        parts = []
        if late > added:
            parts.append(f"{late - added} instance(s) sent again" + (f" with {changes}" if changes else "")
                         + ", replacing the copies that report was made from")
        if added:
            parts.append(f"{added} instance(s) received after that report")
        return " and ".join(parts)

    def _series_number(self, path: str) -> int | None:
        """The Series Number of the earlier result object at `path` (under storage_dir); None where it is gone
        (purged) or has none."""
        try:
            return int(pydicom.dcmread(self.storage_dir / path, stop_before_pixels=True,
                                       specific_tags=["SeriesNumber"]).SeriesNumber)
        except (OSError, AttributeError, TypeError, ValueError, pydicom.errors.InvalidDicomError):
            return None

    def _pdf_series_number(self, study_key: str, analysis_id: int | None) -> dict:
        """{"pdf_series_number": n} of the PDF the analysis `analysis_id` made, {} where it made none or it is gone."""
        for row in self.db.earlier_reports(study_key, EncapsulatedPDFStorage):
            if analysis_id is None or "analysis_id" not in row.keys() or row["analysis_id"] != analysis_id:
                continue
            try:
                earlier = pydicom.dcmread(self.storage_dir / row["path"], stop_before_pixels=True,
                                          specific_tags=["SeriesNumber"])
                return {"pdf_series_number": int(earlier.SeriesNumber)}
            except (OSError, AttributeError, TypeError, ValueError, pydicom.errors.InvalidDicomError):
                return {}
        return {}

    # --- status ----------------------------------------------------------------------------------------------

    def status(self) -> dict:
        return status_report(self.db)


def patient_corrections(earlier, patient: PatientInfo | None) -> list[str]:
    """What changed of the patient's height, weight or age (CORRECTABLE_ATTRIBUTES) between an earlier result
    object's header `earlier` (the values its numbers were computed with) and `patient` (the new analysis's):
    ["PatientWeight 95 kg corrected to 60 kg"]; [] where nothing did or either is unknown."""
    if patient is None:
        return []
    changes = []
    for keyword, now, unit in (("PatientSize", patient.height_m, "m"), ("PatientWeight", patient.weight_kg, "kg")):
        try:
            before = float(earlier.get(keyword))
        except (TypeError, ValueError):
            continue
        if now is not None and abs(before - now) > 1e-6:
            changes.append(f"{keyword} {before:g} {unit} corrected to {now:g} {unit}")
    before_age = age_from_age_string(earlier.get("PatientAge"))
    if (before_age is not None and patient.age is not None and patient.age.source == "PatientAge"
            and before_age.text != patient.age.text):
        changes.append(f"PatientAge {before_age.text} corrected to {patient.age.text}")
    return changes


def _address(row) -> tuple[str, str, int]:
    """An outbox row's (ae_title, host, port): the address it was queued with."""
    return row["ae_title"], row["host"], int(row["port"])


def _moved_text(destination, former: Sequence[tuple[str, str, int]]) -> str:
    """That configured `destination` now has another address than `former` ((ae_title, host, port) results were
    delivered to under its name): what went there is not counted as held by the new address."""
    addresses = ", ".join(f"{ae}@{host}:{port}" for ae, host, port in former)
    return (f"destination {destination.name} is now {destination.ae_title}@{destination.host}:{destination.port}, "
            f"not {addresses} where results were delivered under that name: taken as another archive (identity is "
            f"the AE title, host and port), what the former address received is not counted for it; if it is the "
            f"same archive renumbered, delete the superseded results there by hand after a re-analysis")


def _note_late_rejection(summary: dict, study_instance_uid: str, destination: str, written,
                         entries: list[dict]) -> None:
    """Record in an analysis's `summary` (in place) the rejection note `written` (a ResultObject) queued later to
    `destination` listing `entries`: its `outputs`, and its study's `rejection_note` (with_rejection_note's shape,
    `queued_later` true on the destination's entry)."""
    studies = summary.get("studies") if isinstance(summary.get("studies"), list) else [summary]
    study = next((s for s in studies if isinstance(s, dict) and s.get("study_instance_uid") == study_instance_uid),
                 summary)
    listed = [entry["sop_instance_uid"] for entry in entries]
    for holder in ([study] if study is summary else [study, summary]):
        if isinstance(holder.get("outputs"), list):
            holder["outputs"].append(written.path)
    note = study.setdefault("rejection_note", {"rejected": [], "destinations": {}})
    note["rejected"] = list(dict.fromkeys([*note.get("rejected", []), *listed]))
    note.setdefault("destinations", {})[destination] = {"sop_instance_uid": written.sop_instance_uid,
                                                        "rejected": listed, "queued_later": True}


def _report_identity(report) -> dict:
    """{"series_number", "report_time"} of an earlier result object's header, those it gives."""
    found = {}
    try:
        found["series_number"] = int(report.SeriesNumber)
    except (AttributeError, TypeError, ValueError):
        pass
    when = report_time(report.get("ContentDate"), report.get("ContentTime"))
    return {**found, **({"report_time": when} if when else {})}


def check_listen_ports(config: Config, roles: Sequence[str]) -> None:
    """Raises ListenError where a port this process will listen on cannot be listened on now: node.port with the
    receive role, the metrics port where enabled (port 0, any free port, is not probed)."""
    if "receive" in roles:
        StorageSCP.check_port(config)
    observability = config.observability
    if observability.metrics_enabled:
        NodeMetrics.check_port(observability.metrics_host, observability.metrics_port)


#: what `dicomnode status` says of a pending send whose C-STORE was in flight when its dispatcher stopped
STOPPED_IN_FLIGHT = ("its C-STORE was in flight when its dispatcher stopped (kill -9, a crash, a stop that aborted the "
                     "unanswered association) before the response was recorded: sent again next, and the destination "
                     "may already hold it under the same SOP Instance UID")


def status_report(db: StateDB, now: float | None = None) -> dict:
    """Every study with its outbox counts, dead letters, the pending sends that failed at least once (`retrying`:
    last error and next attempt, so an outage says why and when; one whose C-STORE was in flight when its
    dispatcher stopped says so) and the result objects sent again after such a stop (`resent`: the destination may
    hold them twice under one SOP Instance UID), plus the counts by state and the processes.

    A fixed number of queries whatever the number of studies (counts grouped by study, then only the outbox items
    needing attention), so `dicomnode status` stays quick on a state of many thousand studies."""
    now = time.time() if now is None else now
    instances = db.instance_counts()
    outbox = db.outbox_counts_by_study()
    attention: dict[str, list] = {}
    for item in db.outbox_needing_attention():
        if (item["last_error"] or "").startswith(IN_FLIGHT_PREFIX):
            if item["claimed_by"] is not None and (item["lease_until"] or 0) >= now:
                continue  # being sent now by a live dispatcher, not retrying
            item = {**item, "last_error": STOPPED_IN_FLIGHT}
        attention.setdefault(item["study_key"], []).append(item)
    resent: dict[str, list] = {}
    for item in db.outbox_resent():
        resent.setdefault(item["study_key"], []).append(item)
    studies = []
    for row in db.studies():
        key = row["study_key"]
        items = attention.get(key, ())
        studies.append({
            "study_key": key,
            "study": short_hash(row["study_instance_uid"]),
            "state": row["state"],
            "reason": row["reason"],
            "generation": row["generation"],
            "instances": instances.get(key, 0),
            "sent": outbox.get((key, OUTBOX_SENT), 0),
            "pending": outbox.get((key, OUTBOX_PENDING), 0),
            "dead": [{"destination": o["destination"], "sop_instance_uid": o["sop_instance_uid"],
                      "attempts": o["attempts"], "error": o["last_error"]} for o in items if o["state"] == OUTBOX_DEAD],
            "retrying": [{"destination": o["destination"], "sop_instance_uid": o["sop_instance_uid"],
                          "attempts": o["attempts"], "error": o["last_error"], "next_attempt_at": o["next_attempt_at"],
                          "next_attempt_in_s": round(max(0.0, o["next_attempt_at"] - now), 1)}
                         for o in items if o["state"] == OUTBOX_PENDING],
            "resent": [{"destination": o["destination"], "sop_instance_uid": o["sop_instance_uid"],
                        "state": o["state"]} for o in resent.get(key, ())],
            "last_received": row["last_received"],
        })
    nodes = nodes_report(db, now=now)
    claims_report(db, studies, nodes, now)  # an analysis whose claim holder is gone says so
    return {"studies": studies, "by_state": db.counts_by_state(), "nodes": nodes}


def summary_of(db: StateDB, study_key: str) -> dict | None:
    row = db.study(study_key)
    return json.loads(row["summary_json"]) if row and row["summary_json"] else None


def join_all(threads, timeout: float) -> None:
    """Join every thread within one overall `timeout` (they stop together; the stop must not take N x timeout)."""
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
