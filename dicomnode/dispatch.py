"""The outbox: due result objects sent per destination, exponential back-off, dead letters after max attempts.

Items are claimed before they are sent (StateDB.claim_sends), so several dispatchers sharing one state database
never send the same item at once; a configured destination is resolved by name when sending (as mercure does),
so a reload or `dicomnode retry` after the PACS moved needs no rewrite of queued items.

Destinations are sent to concurrently (KeyedLanes: at most MAX_PARALLEL_DESTINATIONS associations at once, never
two to one destination): a destination that accepts the association and then stops answering holds up only its own
items, for its `send_timeout_seconds` per C-STORE, never another destination's or the next study's. Only the item in
flight is charged an attempt when an association ends early: the items behind it, never transmitted, go back to the
queue unchanged (no attempt charged) and are sent on the next association. A C-STORE that got no response within
the destination's send_timeout_seconds backs off the whole destination: the items behind it come due with it, after
its back-off, not at once on a new association (a destination slower than the timeout would otherwise store the same
object again every round, break51a #4), and the association that re-sends the timed-out object waits longer for it
(RESEND_TIMEOUT_FACTOR_MAX); each such re-send is said at WARNING (the destination may then hold it twice), with the
hint to raise destinations[].send_timeout_seconds.

A stop (Dispatcher.stop) ends every association after the C-STORE in flight, the items not sent yet given back
unattempted; one whose destination has not answered by the stop's timeout is aborted (break51a #1).

Permanent refusals become dead letters at once, with the destination's reason (no max_attempts retries: the
destination's configuration, not time, changes them), while the other objects of the batch are sent; `dicomnode retry
STUDY` re-queues them once the destination accepts them. Permanent are: no presentation context accepted for the
object (its SOP class, or its transfer syntax); a C-STORE status 0xA9xx (Data Set Does Not Match SOP Class), 0xCxxx
(Cannot Understand), 0x0122 (SOP Class Not Supported) or 0x0124 (Not Authorized) (PS3.4 Annex B); where the object
refused with 0xA9xx or 0xCxxx carries an identifier copied with control characters (results.headers), the dead
letter's error names that as the likely cause (refusal_error). Transient, retried
with the back-off up to max_attempts: 0xA7xx (Out of Resources) and any other failure status, an association rejected
(A-ASSOCIATE-RJ, PS3.8), "rejected-transient" or "rejected-permanent", a refused or lost connection, a timeout. An
association rejected-permanent is about the AE titles on either side ("Called AE title not recognised": a mistyped
destinations[].ae_title, a PACS that has not registered the node yet, or one reloading its configuration), which an
admin changes, not about the objects: it is retried like a transient failure (a dead letter after max_attempts says
the peer's reason), and `dicomnode retry --all` re-queues its dead letters once the configuration is fixed
(break46b #2).

An item whose destination is no longer configured (a reload or restart removed or renamed it) is never sent to the
address it was queued with: it becomes a dead letter at once, "destination NAME removed from the config", said at
ERROR once per destination and round; `dicomnode retry` re-queues it once the destination is configured again. Only
results back to the calling host (destination "sender") go to the address they were queued with.

A result file that cannot be read fails alone (the batch's other objects are sent): content that is no DICOM object
to send (cut short, not DICOM) is a dead letter at once, a read that fails (an OSError) is retried like a missing
file; neither is re-queued by `retry --all` (`dicomnode retry STUDY --reanalyse` makes new result files).
"""
from __future__ import annotations

import logging
import re
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from pydicom import dcmread

from dicomnode.config import DestinationConfig, DispatchConfig
from dicomnode.lanes import KeyedLanes
from dicomnode.net.scu import NO_RESPONSE, AssociationFailed, SendCancel, describe_object, echo, send_files
from dicomnode.net.tls import TLSConfigurationError, client_context
from dicomnode.observe import study_context
from dicomnode.results.headers import MATCHED_IDENTIFIERS, identifier_control_characters
from dicomnode.state import IN_FLIGHT_PREFIX, RoundFailures, StateDB, is_outage, outage_reason
from dicomnode.uids import short_hash

log = logging.getLogger("dicomnode.dispatch")

#: a result file not there while the spool is (its marker present) is tried again with the normal back-off, and
#: becomes a dead letter after this many attempts (or max_attempts, if fewer): a file on a share may show up late
MISSING_FILE_ATTEMPTS = 4

#: how many destinations one dispatcher sends to at the same time (one association, one thread each)
MAX_PARALLEL_DESTINATIONS = 4

#: how long a destination may take to answer (association request, each C-STORE, network silence) before the send
#: is given up as "no response within N s" and retried with the back-off: a configured destination's
#: send_timeout_seconds (default this), this for an item whose destination is not configured
SEND_TIMEOUT_SECONDS = 30.0

#: appended to the error of a permanent refusal, which `dicomnode status` shows as the dead letter's last error
PERMANENT_NOTE = "; a permanent refusal, not retried: `dicomnode retry STUDY` once the destination accepts it"


#: says, in a permanent refusal's error (refusal_error), what in the refused object is the likely cause
LIKELY_CAUSE = "; likely cause: "


def refusal_error(result) -> str:
    """The error recorded for a C-STORE the destination refused (a transmitted SendResult): the destination's
    words, and for a permanent refusal of the object's content (0xA9xx Data Set Does Not Match SOP Class, 0xCxxx
    Cannot Understand: PS3.4 B.2.3) whose PatientID, IssuerOfPatientID, AccessionNumber or StudyID holds control
    characters (copied as received from the source images, results.headers), that likely cause named with the
    characters escaped; then PERMANENT_NOTE where permanent. Reads the object's file for it (a file that cannot be
    read names no cause)."""
    error = result.error
    content = result.status is not None and ((result.status & 0xFF00) == 0xA900 or (result.status & 0xF000) == 0xC000)
    if result.permanent and content:
        try:
            header = dcmread(result.path, stop_before_pixels=True, specific_tags=list(MATCHED_IDENTIFIERS))
        except Exception:  # noqa: BLE001 - a cause is not worth a failed round: the destination's words stay
            header = None
        found = identifier_control_characters(header) if header is not None else []
        if found:
            named = ", ".join(f"{item['attribute']} holds control characters ({item['characters']}), which VR "
                              f"{item['vr']} does not allow" for item in found)
            error += (f"{LIKELY_CAUSE}{named}: copied as received from the source images, by which the archive "
                      f"files results with their images (docs/conformance.md section 6)")
    return error + (PERMANENT_NOTE if result.permanent else "")


#: the start of the error of a result file that was missing, or could not be read, when it was to be sent
#: (Dispatcher._send_batch): "result file PATH is missing", "result file PATH cannot be read: WHY"
MISSING_FILE_ERROR = "result file "

#: appended to the error of a result file that cannot be read
UNREADABLE_NOTE = "; `dicomnode retry STUDY --reanalyse` makes new result files"

#: the destination name of results sent back to the calling host (a route's send_to_sender): sent to the address
#: queued with it, never looked up in the config
SENDER = "sender"

#: the error of a dead letter whose destination is not in the config (removed_destination_error)
REMOVED_DESTINATION = " removed from the config"


def removed_destination_error(name: str) -> str:
    """The dead letter's error for an item whose destination `name` is no longer configured."""
    return (f"destination {name}{REMOVED_DESTINATION}: not sent (add it back to [[destinations]] and reload, then "
            f"`dicomnode retry --all --destination {name}`)")


#: the start of the error of a connection that failed while the association ran (ConnectionError, TimeoutError)
CONNECTION_ERROR = "connection failed: "

#: the errors a later attempt may not meet (transient_dead_letter), as send_files, AssociationFailed and
#: Dispatcher._send_batch word them: an association not opened (connection refused or timed out, no route, a host
#: that does not resolve, rejected-transient, aborted, a TLS handshake), a failure status (a permanent one carries
#: PERMANENT_NOTE), an A-ABORT, a lost connection or no response within the send timeout
_TRANSIENT_ERROR = re.compile(
    r"association with \S+ failed: |refused\b[^;]*\b0x[0-9A-Fa-f]{4}\b|the destination aborted the association|"
    r"the connection was lost|no response within |(the )?association ended before|" + re.escape(CONNECTION_ERROR)
    + "|^destination \\S+" + re.escape(REMOVED_DESTINATION) + ":")

#: the timeout a C-STORE's error names (_PeerWatch.no_response: "no response within 5 s")
_NO_RESPONSE_WITHIN = re.compile(re.escape(NO_RESPONSE) + r"\S+ s")

#: the error of an association the destination rejected (A-ASSOCIATE-RJ), transient or permanent (net.scu wording)
_ASSOCIATION_REJECTED = re.compile(r"association with \S+ failed: rejected by the peer\b")


def transient_dead_letter(error: str | None) -> bool:
    """Whether a dead letter's last error was transient (a refused or lost connection, a timeout, an association
    rejected-transient or aborted, 0xA7xx Out of Resources or another failure status retried with the back-off):
    sending it again may now work. Told by what the error says (_TRANSIENT_ERROR), so that a permanent refusal
    (PERMANENT_NOTE: no presentation context, 0xA9xx, 0xCxxx ...), a result file missing or unreadable, and any
    other local error (a data set that cannot be encoded ...) are not re-queued to fail again."""
    text = error or ""
    if _ASSOCIATION_REJECTED.match(text):  # rejected-permanent included (recorded with PERMANENT_NOTE before 46)
        return True
    return PERMANENT_NOTE not in text and _TRANSIENT_ERROR.match(text) is not None


#: how long the C-ECHO of a destination may take when serve starts or reloads (check_destinations), in seconds
ECHO_CHECK_TIMEOUT_SECONDS = 10.0


def echo_problem(destination: DestinationConfig, node_ae_title: str, tls_minimum_version: str = "1.2",
                 timeout: float = ECHO_CHECK_TIMEOUT_SECONDS, ssl_context_for=None) -> str | None:
    """Why `destination` does not answer a C-ECHO with success (its host does not resolve, nothing listens, the
    association is rejected, a TLS setting is wrong, no response or a failure status), or None when it does.
    `ssl_context_for(name)`: the TLS context to use (Node.ssl_context_for), else made from the destination."""
    try:
        ssl_context = (ssl_context_for(destination.name) if ssl_context_for is not None
                       else client_context(destination, tls_minimum_version))
        status = echo(destination.ae_title, destination.host, destination.port,
                      calling_ae_title=destination.calling_ae_title or node_ae_title, timeout=timeout,
                      ssl_context=ssl_context)
    except (AssociationFailed, TLSConfigurationError) as exc:
        return str(exc)
    if status == 0x0000:
        return None
    return "no C-ECHO response" if status is None else f"C-ECHO status 0x{status:04X}"


def check_destinations(destinations: Sequence[DestinationConfig], node_ae_title: str,
                       tls_minimum_version: str = "1.2",
                       timeout: float = ECHO_CHECK_TIMEOUT_SECONDS) -> dict[str, str | None]:
    """C-ECHO each destination once (serve's start, a reload): a WARNING naming each one that does not answer,
    so that a wrong host or port shows before the first study's retries. Returns name -> echo_problem."""
    found = {}
    for destination in destinations:
        try:
            problem = echo_problem(destination, node_ae_title, tls_minimum_version, timeout)
        except Exception as exc:  # noqa: BLE001 - a check: it must not end serve
            problem = f"{type(exc).__name__}: {exc}"
        found[destination.name] = problem
        peer = f"{destination.name} ({destination.ae_title}@{destination.host}:{destination.port})"
        if problem is None:
            log.info("destination %s answers C-ECHO", peer)
        else:
            log.warning("destination %s does not answer C-ECHO: %s; results for it are queued and retried "
                        "(`dicomnode echo` checks it again)", peer, problem)
    return found


def backoff_seconds(attempts: int, config: DispatchConfig) -> float:
    """Delay before attempt number `attempts + 1` (attempts already made >= 1)."""
    delay = config.initial_backoff_seconds * config.backoff_factor ** max(0, attempts - 1)
    return min(delay, config.max_backoff_seconds)


#: the most a destination's send_timeout_seconds is stretched for an association that re-sends an object whose
#: C-STORE timed out (doubled per such attempt: 2x, then 4x), so that a PACS a little slower than its timeout stores
#: it twice, not at every round (break51a #4)
RESEND_TIMEOUT_FACTOR_MAX = 4


#: how long a stop waits, after aborting the associations its timeout cut, for their lanes to record what happened (s)
ABORT_GRACE_SECONDS = 5.0


@dataclass
class _Association:
    """One lane's association in progress (Dispatcher._send_lane): what a stop ends (`cancel`) and names."""
    destination: str
    items: int
    cancel: SendCancel = field(default_factory=SendCancel)
    recorder: _SentRecorder | None = None  # what the destination acknowledged


#: the most outbox ids a round leaves out of its claim by id (Dispatcher._held_to_exclude): well under SQLite's (32 766)
#: and PostgreSQL's (65 535) bound on a statement's parameters
HELD_EXCLUDE_MAX = 2000


class Dispatcher:
    """A thread that drains the outbox; `wake()` after new items, otherwise it sleeps until the next due time."""

    def __init__(self, db: StateDB, storage_dir: Path, config: DispatchConfig, calling_ae_title: str,
                 ssl_context_for=None, destinations: Callable[[], Sequence[DestinationConfig]] | None = None,
                 storage_problem: Callable[[], str | None] | None = None):
        """`destinations`: the configured destinations now (after any reload); an item names its destination, and one
        not among them is a dead letter (retire_removed_destinations); None (tests): every item sent as queued.
        `storage_problem`: why storage_dir does not hold the spool now (Spool.identity_problem), or None; while it
        says why, dispatch pauses (nothing claimed, nothing attempted)."""
        self.db = db
        self.destinations = destinations
        self.storage_dir = Path(storage_dir)
        self.config = config
        self.calling_ae_title = calling_ae_title
        self.ssl_context_for = ssl_context_for
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.failed_attempts = 0
        self.idle_seconds = 5.0  # longest sleep between rounds (items queued by other processes wake no one)
        #: outbox ids sent (the PACS acknowledged them) whose `sent` could not be recorded yet (the state database
        #: was unreachable): recorded before anything is claimed again, so that this process never sends them twice
        self._unrecorded_sent: list[int] = []
        #: outbox ids of that association neither acknowledged nor failed: their claims are given back then too (the
        #: heartbeat would renew them for as long as this process lives)
        self._unreleased: list[int] = []
        # (row, error, permanent) of items the destination refused while the state database could not record it
        self._unrecorded_refused: list[tuple] = []
        self.storage_problem = storage_problem
        self.paused: str | None = None  # why dispatch pauses now (the spool is not there), said once
        self.send_timeout = SEND_TIMEOUT_SECONDS
        self._counts = threading.Lock()  # sent, failed_attempts and the lists above, written by the lane threads
        self._batch_sent = 0  # objects sent by _send_batch, all lanes together (run_once's return value)
        #: outbox ids handed to a lane and not finished: never handed over twice (a claim renewed meanwhile)
        self._held: set[int] = set()
        #: the last round claimed only items a lane still holds (given back at once): the next waits a second, not 50 ms
        self._spurious_claims = False
        #: claimed items per destination, sent by a bounded set of threads, never two at once to one destination
        self._lanes: KeyedLanes = KeyedLanes(MAX_PARALLEL_DESTINATIONS, self._send_lane, done=self.wake,
                                             name="dispatch-send")
        #: pending items of destinations not in the config are made dead letters at the next round (at start, and
        #: after each reload: destinations_changed), whether due or not
        self._check_removed = True
        #: the lanes' associations in progress (under _counts): a stop ends them
        self._associations: list[_Association] = []
        #: (destination name, ae_title, host, port) -> epoch s before which nothing is sent there (a C-STORE to it
        #: timed out: its back-off; by address too, since the results of "sender" go to each calling host's)
        self._backed_off: dict[tuple, float] = {}
        self._resume_checked = time.monotonic()  # the last resume_dead_letters round (none at start: just begun)
        self._resuming: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dispatch", daemon=True)
        self._thread.start()

    @property
    def failed(self) -> bool:
        """Whether the dispatch thread ended while it was not asked to stop (what the heartbeat must not hide)."""
        return self._thread is not None and not self._thread.is_alive() and not self._stop.is_set()

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop claiming and end every association after the C-STORE in flight: the items not sent yet go back to
        the queue, no attempt charged, for any dispatcher. An association whose destination has not answered its
        C-STORE when `timeout` (s, the whole stop) has passed is aborted (A-ABORT): what the destination acknowledged
        stays recorded as sent, the item in flight goes back still marked in flight (its next send says the
        destination may hold it), said in one WARNING line per association. Returns whether every lane has ended
        (False: one is still recording after ABORT_GRACE_SECONDS; it sends nothing more). The caller keeps its
        heartbeat, claims and storage lock until this returns (roles.RoleRunner.stop, node.Node.stop)."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        self._wake.set()
        with self._counts:
            associations = list(self._associations)
        for association in associations:  # a lane that registers later sees _stop itself (_send_lane)
            association.cancel.stop()
        if self._thread:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        left = self._lanes.close()
        ids = [row["id"] for rows in left.values() for row in rows]
        self._let_go([row for rows in left.values() for row in rows])
        if ids:
            try:
                self.db.release_sends(ids)
            except Exception as exc:  # noqa: BLE001 - the claims lapse after their lease instead
                log.warning("could not give back %d claimed send(s) at stop (%s): they are sent after their lease "
                            "lapses", len(ids), exc)
        if self._lanes.wait_idle(max(0.0, deadline - time.monotonic())):
            return True
        with self._counts:
            associations = list(self._associations)
        aborted = [association for association in associations if association.cancel.abort()]
        ended = self._lanes.wait_idle(ABORT_GRACE_SECONDS)
        for association in aborted:
            log.warning("stop: destination %s had not answered the C-STORE in flight after %g s: association "
                        "aborted; %d of its %d result object(s) acknowledged are recorded as sent, the one in flight "
                        "(the destination may hold it) and the rest go back to the queue for the next start",
                        association.destination, timeout,
                        len(association.recorder.acknowledged) if association.recorder is not None else 0,
                        association.items)
        if not ended:
            log.warning("stop: a send lane had not ended %g s after the stop's timeout (an association request or "
                        "the state database not answering yet); it sends nothing more, and what it holds is sent by "
                        "the next dispatcher once its claims lapse", ABORT_GRACE_SECONDS)
        return ended

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException:  # _loop catches every Exception of a round: only the unthinkable ends up here
            log.critical("the dispatch thread ended unexpectedly: no result is sent by this process any more",
                         exc_info=True)
            raise

    def _loop(self) -> None:
        """Rounds until stopped; no error of a round ends the thread (a state-database outage is said once, by
        RoundFailures, and the round is tried again after idle_seconds)."""
        failures = RoundFailures(self.db, log, "dispatch round failed", self.idle_seconds)
        while not self._stop.is_set():
            wait = self.idle_seconds
            try:
                if self._check_removed:
                    self.retire_removed_destinations()
                    self._check_removed = False
                self.run_once(wait=False)
                self.resume_dead_letters_when_due()
                next_due = None if self.paused else self.db.next_send_time(max_delay=self.config.max_backoff_seconds,
                                                                            exclude=self._held_to_exclude())
                if next_due is not None:
                    wait = min(self.idle_seconds, max(0.05, next_due - time.time()))
                if self._spurious_claims:  # the due items are held by a lane past HELD_EXCLUDE_MAX: its end wakes us
                    wait = max(wait, min(1.0, self.idle_seconds))
            except Exception as exc:  # noqa: BLE001 - the loop outlives any round
                failures.failed(exc)
            else:
                failures.succeeded()
            self._wake.wait(wait)
            self._wake.clear()

    def address_of(self, row) -> tuple[str, str, int, str] | None:
        """(called AE title, host, port, calling AE title) of an item's destination: the configured one by name
        (its `calling_ae_title`, else the node's); for "sender" (results back to the calling host) as queued, called
        by the node's AE title; None for a name no longer configured (never its old address)."""
        for destination in (self.destinations() if self.destinations else ()):
            if destination.name == row["destination"]:
                return (destination.ae_title, destination.host, destination.port,
                        destination.calling_ae_title or self.calling_ae_title)
        if row["destination"] == SENDER or self.destinations is None:  # None: no config told, every item as queued
            return row["ae_title"], row["host"], row["port"], self.calling_ae_title
        return None

    def destinations_changed(self) -> None:
        """After a reload: pending items of a destination removed from the config become dead letters at the next
        round (retire_removed_destinations), not only when they come due."""
        self._check_removed = True
        self.wake()

    def retire_removed_destinations(self, rows: list | None = None) -> int:
        """Make dead letters of pending items (`rows`, default every pending item no live dispatcher holds) whose
        destination is not configured, with removed_destination_error; one ERROR per destination names the count and
        the address they are not sent to. Returns how many."""
        if self.destinations is None:  # no config told: nothing is known to be removed
            return 0
        configured = {d.name for d in self.destinations()} | {SENDER}
        if rows is None:
            now = time.time()
            with self._counts:
                held = set(self._held)  # in a lane now: what its association does not send is failed there
            rows = [row for row in self.db.outbox_for(state="pending") if row["destination"] not in configured
                    and row["id"] not in held
                    and (row["claimed_by"] in (None, self.db.process_id) or (row["lease_until"] or 0) < now)]
        removed: dict[str, list] = defaultdict(list)
        for row in rows:
            if row["destination"] not in configured:
                removed[row["destination"]].append(row)
        for name in list(removed):
            removed[name] = [row for row in removed[name]
                             if self.db.mark_failed_send(row["id"], removed_destination_error(name), time.time(),
                                                         dead=True, unless_taken=True)]
            if not removed[name]:
                del removed[name]
        for name, items in sorted(removed.items()):
            first = items[0]
            log.error("destination %s is not in the config (removed or renamed): %d pending result object(s) of %d "
                      "stud(ies) are not sent to its former address %s@%s:%s; they are dead letters now: add it back "
                      "and reload, then `dicomnode retry --all --destination %s`", name, len(items),
                      len({row["study_key"] for row in items}), first["ae_title"], first["host"], first["port"], name)
        return sum(len(items) for items in removed.values())

    def timeout_of(self, name: str) -> float:
        """Seconds the destination `name` may take to answer (its send_timeout_seconds; send_timeout when it is
        not configured)."""
        for destination in (self.destinations() if self.destinations else ()):
            if destination.name == name:
                return destination.send_timeout_seconds
        return self.send_timeout

    def run_once(self, wait: bool = True) -> int:
        """Claim every due item and hand it to its destination's lane (one association per destination, several
        destinations at once); with `wait`, wait until every lane is done and return how many were sent, else
        return 0 at once (the dispatch thread: a slow destination holds up no round).

        An error a lane's batch raised (the state database would not record a send) is raised here: by this call
        with `wait`, else by the next round."""
        self._raise_lane_error()
        self._record_unrecorded_sent()  # raises while the state database is still unreachable: nothing claimed
        if self._storage_unavailable():
            return 0
        with self._counts:
            before = self._batch_sent
        # no back-off is longer than max_backoff_seconds: an item due later was parked by a clock stepped back
        due = self.db.claim_sends(max_delay=self.config.max_backoff_seconds, exclude=self._held_to_exclude())
        batches: dict[tuple, list] = defaultdict(list)
        with self._counts:
            spurious = [row["id"] for row in due if row["id"] in self._held]
            due = [row for row in due if row["id"] not in self._held]
            self._held.update(row["id"] for row in due)
        self._spurious_claims = bool(spurious) and not due
        if spurious:
            # claimable while a lane holds them: its batch is done with them (failed or given back) and has not ended;
            # the claim is given back, or every heartbeat would renew it and they would never be sent
            self.db.release_sends(spurious)
        unknown = [row for row in due if self.address_of(row) is None]
        if unknown:  # removed from the config: never sent to the address they were queued with
            try:
                self.retire_removed_destinations(unknown)
            finally:
                self._let_go(unknown)
        for row in due:
            address = self.address_of(row)
            if address is not None:
                batches[(row["destination"], *address)].append(row)
        for key, rows in batches.items():
            if self._stop.is_set() or not self._lanes.submit(key, rows):  # queued behind its destination's batch
                self._let_go(rows)
                if self._stop.is_set():  # stopped meanwhile: not attempted, for any dispatcher
                    self.db.release_sends([row["id"] for row in rows])
        if not wait:
            return 0
        self._lanes.wait_idle()
        self._raise_lane_error()
        with self._counts:
            return self._batch_sent - before

    def resume_dead_letters_when_due(self) -> None:
        """With dispatch.resume_dead_letters, every resume_check_seconds: resume_dead_letters, on a thread of its
        own (one at a time)."""
        if not self.config.resume_dead_letters or self.paused:
            return
        if time.monotonic() - self._resume_checked < self.config.resume_check_seconds:
            return
        if self._resuming is not None and self._resuming.is_alive():
            return
        self._resume_checked = time.monotonic()
        # its own thread: a C-ECHO that waits for a silent destination holds up no send
        self._resuming = threading.Thread(target=self._resume_safely, name="dispatch-resume", daemon=True)
        self._resuming.start()

    def _resume_safely(self) -> None:
        try:
            self.resume_dead_letters()
        except Exception as exc:  # noqa: BLE001 - tried again after resume_check_seconds
            if is_outage(exc):
                self.db.outage.failed(exc)
            else:
                log.exception("resuming dead letters failed; tried again in %g s", self.config.resume_check_seconds)

    def resume_dead_letters(self) -> int:
        """C-ECHO each configured destination holding dead letters whose last error was transient
        (transient_dead_letter) and re-queue them once it answers (StateDB.retry_dead); a destination that does not
        answer keeps them, said at DEBUG (its dead letters were said at ERROR). Returns how many were re-queued."""
        dead = [row for row in self.db.outbox_for(state="dead") if transient_dead_letter(row["last_error"])]
        configured = {d.name: d for d in (self.destinations() if self.destinations else ())}
        requeued = 0
        for name in sorted({row["destination"] for row in dead} & set(configured)):
            destination = configured[name]
            problem = echo_problem(destination, self.calling_ae_title,
                                   timeout=min(self.timeout_of(name), ECHO_CHECK_TIMEOUT_SECONDS),
                                   ssl_context_for=self.ssl_context_for or (lambda _: None))
            if problem is not None:
                log.debug("destination %s still does not answer C-ECHO (%s): its dead letters wait", name, problem)
                continue
            by_study: dict[str, list[int]] = defaultdict(list)
            for row in dead:
                if row["destination"] == name:
                    by_study[row["study_key"]].append(row["id"])
            count = sum(self.db.retry_dead(key, ids) for key, ids in by_study.items())
            requeued += count
            if count:
                log.warning("destination %s answers C-ECHO again: re-queued %d dead letter(s) of %d stud(ies) "
                            "(dispatch.resume_dead_letters)", name, count, len(by_study))
        if requeued:
            self.wake()
        return requeued

    def _raise_lane_error(self) -> None:
        errors = self._lanes.take_errors()
        for extra in errors[1:]:
            log.error("dispatch: another send failed as well: %s: %s", type(extra).__name__, extra)
        if errors:
            raise errors[0]

    def _send_lane(self, key: tuple, rows: list) -> None:
        """One destination's claimed items, on a lane thread (KeyedLanes)."""
        name, ae_title, host, port, calling_ae_title = key
        association = _Association(name, len(rows))
        with self._counts:  # before the stop test: a stop that does not see it has set _stop already
            self._associations.append(association)
            backed_off = self._backed_off.get((name, ae_title, host, port), 0.0)
        try:
            if self._stop.is_set() or self.paused:  # stopping, or the spool went: the items wait, unattempted
                self.db.release_sends([row["id"] for row in rows])
                return
            if backed_off > time.time():  # a C-STORE to it timed out: its items wait out that back-off, unattempted
                self.db.release_sends([row["id"] for row in rows], not_before=backed_off)
                return
            if self.address_of(rows[0]) is None:  # removed by a reload while the items waited for their lane
                self.retire_removed_destinations(rows)
                return
            sent = self._send_batch(name, ae_title, host, port, rows, calling_ae_title, association)
            with self._counts:
                self._batch_sent += sent
        finally:
            with self._counts:
                self._associations.remove(association)
            self._let_go(rows)

    def _held_to_exclude(self) -> set[int]:
        """The outbox ids claim_sends / next_send_time leave out: those a lane holds (an item failed early in its
        batch is due again before that batch ends), up to HELD_EXCLUDE_MAX of them (a bound on the query's
        parameters; past it such items are claimed and their claims given back, run_once). Only the dispatch thread
        adds to _held, so a snapshot holds every id held when its claim is made."""
        with self._counts:
            return set(self._held) if len(self._held) <= HELD_EXCLUDE_MAX else set()

    def _let_go(self, rows: list) -> None:
        with self._counts:
            self._held.difference_update(row["id"] for row in rows)

    def _storage_unavailable(self) -> bool:
        """Whether storage_dir does not hold the spool now (storage_problem): dispatch pauses, said once when it
        pauses and once when it resumes (the spool says why itself)."""
        problem = self.storage_problem() if self.storage_problem is not None else None
        if problem is not None and self.paused is None:
            log.warning("dispatch paused, nothing is claimed or sent until the spool is back: %s", problem)
        elif problem is None and self.paused is not None:
            log.info("the spool is back: dispatch resumes")
        self.paused = problem
        return problem is not None

    def study_log_id(self, study_key: str) -> str:
        """The study's log id (`[study=...]`: the short hash of its Study Instance UID, as the rest of the node)."""
        try:
            study = self.db.study(study_key)
        except Exception:  # noqa: BLE001 - a log id is not worth a failed round
            study = None
        return short_hash(study["study_instance_uid"] if study is not None else study_key)

    def _send_batch(self, name: str, ae_title: str, host: str, port: int, rows: list, calling_ae_title: str,
                    association: _Association | None = None) -> int:
        """Send one destination's due items on one association; every log line names the study of its items.
        `association`: what a stop ends (its cancel) and reads (what the destination acknowledged)."""
        ids = {key: self.study_log_id(key) for key in dict.fromkeys(row["study_key"] for row in rows)}
        paths = [self.storage_dir / row["path"] for row in rows]
        missing = [row for row, path in zip(rows, paths) if not path.is_file()]
        if missing and self._storage_unavailable():  # not the files' fault: the spool is not there (unmounted)
            self.db.release_sends([row["id"] for row in rows])
            return 0
        for row in missing:
            with study_context(ids[row["study_key"]]):
                self._failed(row, f"{MISSING_FILE_ERROR}{self.storage_dir / row['path']} is missing",
                             max_attempts=MISSING_FILE_ATTEMPTS)
        rows = [row for row, path in zip(rows, paths) if path.is_file()]
        if not rows:
            return 0
        # re-sends after a timeout go last: one object a destination never answers must not hold back, round after
        # round until it is a dead letter, the objects queued behind it (review51 #1)
        rows.sort(key=lambda row: _NO_RESPONSE_WITHIN.search(row["last_error"] or "") is not None)
        ssl_context = self.ssl_context_for(name) if self.ssl_context_for else None
        # the return address is the study's, not the config's: named in the log
        label = f"{name} ({ae_title}@{host}:{port}{', TLS' if ssl_context else ''})" if name == SENDER else name
        studies = ", ".join(ids[key] for key in dict.fromkeys(row["study_key"] for row in rows))
        again = self._in_flight_before(name, rows, ids)
        recorder = _SentRecorder(self.db, [row["id"] for row in rows], self._count_sent, again,
                                 address=(ae_title, host, port))
        if association is not None:
            association.recorder = recorder
        configured = timeout = self.timeout_of(name)
        # items whose last C-STORE timed out: the destination may have stored them then (said when re-sent); the
        # association that re-sends them waits longer, for a destination slower than its timeout rather than hung
        after_timeout = {index: (row, found.group(0)) for index, row in enumerate(rows)
                         if (found := _NO_RESPONSE_WITHIN.search(row["last_error"] or "")) is not None}
        if after_timeout:
            timeout *= min(RESEND_TIMEOUT_FACTOR_MAX, 2 ** max(row["attempts"] for row, _ in after_timeout.values()))

        def started(index: int) -> None:
            recorder.started(index)
            if index in after_timeout:
                row, timed_out = after_timeout[index]
                with study_context(ids[row["study_key"]]):
                    log.warning("destination %s: re-sending %s after its previous C-STORE got no response in time "
                                "(%s): the destination may have stored it then, and may now hold it twice; this "
                                "association waits up to %g s; if the destination is slow rather than hung, raise "
                                "destinations[%s].send_timeout_seconds (now %g s)", name, self.object_name(row),
                                timed_out, timeout, name, configured)

        try:
            results = send_files([self.storage_dir / row["path"] for row in rows], ae_title, host, port,
                                 calling_ae_title=calling_ae_title, timeout=timeout, ssl_context=ssl_context,
                                 on_result=recorder.add, on_send=started,
                                 cancel=association.cancel if association is not None else None)
        except _AttemptNotRecorded:
            # raises the state database's error, said at ERROR
            self._record_sent(recorder, name, studies, {row["id"]: row for row in rows})
            raise
        except AssociationFailed as exc:
            with study_context(studies):
                log.warning("destination %s: %s (%d result object(s) of study %s)%s", name, exc, len(rows), studies,
                            ": rejected permanently; retried with the back-off: check destinations[%s].ae_title "
                            "and calling_ae_title against the destination's configuration (it must know this node)"
                            % name if exc.permanent else "")
            due = self._batch_due(rows)
            for row in rows:
                with study_context(ids[row["study_key"]]):
                    self._failed(row, str(exc), due=due)
            return 0
        except Exception as exc:
            with study_context(studies):
                log.exception("destination %s: send failed (study %s)", name, studies)
            self._record_sent(recorder, name, studies)  # what was acknowledged before it failed is sent
            error = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, (ConnectionError, TimeoutError)):
                error = CONNECTION_ERROR + error
            failed = [row for row in rows if row["id"] not in recorder.acknowledged]
            due = self._batch_due(failed)
            for row in failed:
                with study_context(ids[row["study_key"]]):
                    self._failed(row, error, due=due)
            return 0
        for row, result in zip(rows, results):
            if result.ok and row["id"] not in recorder.acknowledged:  # a send_files that reported no result
                recorder.acknowledged.add(row["id"])
                recorder.unrecorded.append(row["id"])
        ok_ids = [row["id"] for row, result in zip(rows, results) if result.ok]
        self._record_sent(recorder, name, studies)
        for row, result in zip(rows, results):
            if result.unreadable:  # the file's fault, not the destination's: it fails alone
                with study_context(ids[row["study_key"]]):
                    error = f"{MISSING_FILE_ERROR}{self.storage_dir / row['path']} {result.error}{UNREADABLE_NOTE}"
                    if not result.permanent:  # a dead letter is said by _failed
                        log.warning("destination %s: %s not sent: %s", name, row["sop_instance_uid"], error)
                    self._failed(row, error, dead=result.permanent, max_attempts=MISSING_FILE_ATTEMPTS)
        abandoned = [row["id"] for row, result in zip(rows, results) if result.abandoned]
        if abandoned:  # on the wire when a stop aborted the association: still marked in flight, not charged
            self.db.release_sends(abandoned)
        refused = [(row, result) for row, result in zip(rows, results)
                   if not result.ok and result.transmitted and not result.abandoned]
        self._say_per_study(name, ids, refused, "not delivered: %s", lambda result: result.error)
        due = self._batch_due([row for row, _ in refused])
        backed_off_until = None
        for row, result in refused:
            with study_context(ids[row["study_key"]]):
                self._failed(row, refusal_error(result), dead=result.permanent, due=due)
            if result.timed_out:
                backed_off_until = due
        if backed_off_until is not None:  # a destination too slow for its timeout: all of it waits, not the object
            with self._counts:
                self._backed_off[(name, ae_title, host, port)] = backed_off_until
        untouched = [(row, result) for row, result in zip(rows, results)
                     if not result.ok and not result.transmitted and not result.unreadable]
        if untouched:
            # the destination never saw them: no attempt charged; due again at once on a new association, or with
            # the timed-out object after the destination's back-off (a stop: at once, for whichever process runs)
            later = backed_off_until if backed_off_until is not None and not self._stop.is_set() else None
            self.db.release_sends([row["id"] for row, _ in untouched], not_before=later)
            with study_context(studies):
                log.info("destination %s: %d result object(s) not transmitted (%s): back in the queue, no attempt "
                         "charged%s", name, len(untouched), untouched[0][1].error,
                         "" if later is None else f", due after the destination's back-off of "
                         f"{max(0.0, later - time.time()):.1f} s with the object that timed out")
        stored_with_warning = [(row, result) for row, result in zip(rows, results) if result.ok and result.warning]
        self._say_per_study(name, ids, stored_with_warning, "stored, but with a warning: %s: the destination may "
                            "have changed what it stored (PS3.4 B.2.3)", lambda result: result.warning, listed=True)
        for key, log_id in ids.items():
            mine = [result.ok for row, result in zip(rows, results) if row["study_key"] == key]
            if mine:
                with study_context(log_id):
                    log.info("destination %s: sent %d of %d result object(s) of study %s", label, sum(mine), len(mine),
                             log_id)
        return len(ok_ids)

    def _say_per_study(self, name: str, ids: dict[str, str], items: list, what: str, text,
                       listed: bool = False) -> None:
        """One WARNING per study and status (or error, where there is no status) for `items` ((row, SendResult) of
        one association): `what` % text(result) of the first, naming the object where it is alone, else the count,
        with the objects at DEBUG (a refusal of every object of a batch is one line, not one per object), or in the
        same line with `listed`."""
        groups: dict[tuple, list] = defaultdict(list)
        for row, result in items:
            groups[(row["study_key"], result.status if result.status is not None else text(result))].append(
                (row, result))
        for (key, _), group in groups.items():
            with study_context(ids[key]):
                said = what % text(group[0][1])
                if len(group) == 1:
                    log.warning("destination %s: %s %s", name, self.object_name(group[0][0]), said)
                    continue
                objects = ("; ".join(self.object_name(row) for row, _ in group)
                           if listed or log.isEnabledFor(logging.DEBUG) else "")
                if listed:
                    log.warning("destination %s: %d result object(s) of study %s %s: %s", name, len(group), ids[key],
                                said, objects)
                    continue
                log.warning("destination %s: %d result object(s) of study %s %s", name, len(group), ids[key], said)
                log.debug("destination %s: those %d result object(s): %s", name, len(group), objects)

    def _batch_due(self, rows: list) -> float:
        """When the items of one association that failed come due again, all at once (one association then, not
        one per item: break51a #3): now plus the back-off of the item tried most often (epoch s)."""
        attempts = max((row["attempts"] for row in rows), default=0) + 1
        return time.time() + backoff_seconds(attempts, self.config)

    def _in_flight_before(self, name: str, rows: list, ids: dict[str, str]) -> set[int]:
        """The items whose last C-STORE was in flight when a dispatcher stopped without recording its response
        (kill -9, a crash: their last_error still says in flight, StateDB.mark_in_flight): the destination may hold
        them already. Said at WARNING per study, naming each object; returns their outbox ids."""
        again = [row for row in rows if (row["last_error"] or "").startswith(IN_FLIGHT_PREFIX)]
        by_study: dict[str, list] = defaultdict(list)
        for row in again:
            by_study[row["study_key"]].append(row)
        for key, items in by_study.items():
            with study_context(ids[key]):
                log.warning("destination %s: re-sending %d result object(s) of study %s that were in flight when a "
                            "dispatcher stopped before their response was recorded (%s): the destination may already "
                            "hold them under the same SOP Instance UID", name, len(items), ids[key],
                            "; ".join(self.object_name(row) for row in items))
        return {row["id"] for row in again}

    def _record_sent(self, recorder: _SentRecorder, name: str, studies: str, rows: dict | None = None) -> None:
        """After an association: record what the recorder could not yet; what the state database would not take
        (an outage) is recorded before anything is claimed again (_unrecorded_sent; the items of `rows`, outbox id ->
        row, the destination refused: _unrecorded_refused), and the error raised."""
        rows = rows or {}
        recorder.flush()
        if recorder.error is None:
            return
        with self._counts:
            self._unrecorded_sent.extend(recorder.unrecorded)
            self._unrecorded_refused.extend((rows[i], *recorder.refused[i]) for i in recorder.outbox_ids
                                            if i in recorder.refused and i in rows)
            self._unreleased.extend(i for i in recorder.outbox_ids
                                    if i not in recorder.acknowledged and not (i in recorder.refused and i in rows))
        exc = recorder.error
        if not recorder.unrecorded:  # nothing sent unrecorded: the next C-STORE's attempt could not be recorded
            log.error("destination %s: sending of study %s paused: the state database cannot record the next "
                      "attempt (%s), and a C-STORE is never made unrecorded; the rest is sent once it can",
                      name, studies, outage_reason(exc) if is_outage(exc) else f"{type(exc).__name__}: {exc}")
        elif is_outage(exc):
            log.error("destination %s: %d result object(s) of study %s sent, but the state database is unreachable "
                      "(%s): recorded as sent once it is back, not sent again by this process", name,
                      len(recorder.unrecorded), studies, outage_reason(exc))
        else:
            log.error("destination %s: %d result object(s) of study %s sent, but recording them failed (%s: %s): "
                      "recorded before anything is claimed again, not sent again by this process", name,
                      len(recorder.unrecorded), studies, type(exc).__name__, exc)
        raise exc

    def _count_sent(self, count: int) -> None:
        with self._counts:
            self.sent += count

    def _record_unrecorded_sent(self) -> None:
        """Record the sends the PACS acknowledged while the state database was unreachable (see _unrecorded_sent),
        and give back the claims of that association's other items (_unreleased)."""
        with self._counts:
            ids = list(self._unrecorded_sent)
        if ids:
            self.db.mark_sent(ids)
            with self._counts:
                del self._unrecorded_sent[:len(ids)]
                self.sent += len(ids)
            log.info("recorded %d result object(s) sent while the state database was unreachable", len(ids))
        with self._counts:
            refused = list(self._unrecorded_refused)
        for row, error, permanent in refused:  # a failed attempt each, no longer in flight
            self._failed(row, error, dead=permanent)
            with self._counts:
                self._unrecorded_refused.remove((row, error, permanent))
        with self._counts:
            ids = list(self._unreleased)
        if ids:
            self.db.release_sends(ids)
            with self._counts:
                del self._unreleased[:len(ids)]

    def _failed(self, row, error: str, dead: bool = False, max_attempts: int | None = None,
                due: float | None = None) -> float:
        """One failed attempt: due again after the back-off (at `due`, epoch s, where given: the time its
        association's failed items share, _batch_due), or a dead letter after `max_attempts` (at most the configured
        dispatch.max_attempts). Returns when it is due again (epoch s)."""
        attempts = row["attempts"] + 1
        with self._counts:
            self.failed_attempts += 1
        limit = self.config.max_attempts if max_attempts is None else min(max_attempts, self.config.max_attempts)
        dead = dead or attempts >= limit
        next_attempt = time.time() + backoff_seconds(attempts, self.config) if due is None else due
        self.db.mark_failed_send(row["id"], error, next_attempt, dead)
        if dead:
            log.error("dead letter: %s to %s after %d attempt(s): %s", self.object_name(row), row["destination"],
                      attempts, error)
        return next_attempt

    def object_name(self, row) -> str:
        """An outbox item as an admin reads it: 'SEG (Segmentation) series 9001 2.25.…' (describe_object), or the
        bare SOP Instance UID where its file cannot be read."""
        kind = describe_object(self.storage_dir / row["path"])
        return f"{kind} {row['sop_instance_uid']}" if kind else row["sop_instance_uid"]


class _AttemptNotRecorded(Exception):
    """The attempt of the next C-STORE could not be recorded (_SentRecorder.started): it is not sent."""


class _SentRecorder:
    """Records each attempt before its C-STORE goes out (send_files' on_send: StateDB.mark_in_flight), and each
    instance the destination acknowledged as sent as soon as its response arrives (on_result), so that a dispatcher
    killed mid-association resends at most the instance in flight, knowing it was (Dispatcher._in_flight_before),
    and `dicomnode status` counts what the destination holds. Once the state database refuses a write (an outage),
    `error` is kept and what was acknowledged is only collected (`unrecorded`; `add` never raises into send_files),
    and no further C-STORE is made: its attempt could not be recorded (`started` raises _AttemptNotRecorded)."""

    def __init__(self, db: StateDB, outbox_ids: list[int], recorded: Callable[[int], None],
                 again: set[int] | frozenset[int] = frozenset(), address: tuple[str, str, int] | None = None):
        """`outbox_ids`: the items in the order they are sent; `recorded(n)`: after n more were recorded as sent;
        `again`: the items a stopped dispatcher had in flight (their attempt is recorded as a re-send); `address`:
        the (ae_title, host, port) they go to, recorded with each attempt (StateDB.mark_in_flight)."""
        self.db = db
        self.address = address
        self.outbox_ids = outbox_ids
        self.recorded = recorded
        self.again = again
        self.acknowledged: set[int] = set()
        self.unrecorded: list[int] = []  # acknowledged, not recorded yet
        # transmitted and refused by the destination (outbox id -> (error, permanent)): recorded as failed attempts by
        # the dispatcher after the association, or, where the state database refused a write, once it takes them
        self.refused: dict[int, tuple[str, bool]] = {}
        self.error: Exception | None = None

    def started(self, index: int) -> None:
        outbox_id = self.outbox_ids[index]
        if self.error is None:
            try:
                self.db.mark_in_flight(outbox_id, again=outbox_id in self.again, address=self.address)
            except Exception as exc:  # noqa: BLE001 - said and raised after the association (Dispatcher._record_sent)
                self.error = exc
        if self.error is not None:
            raise _AttemptNotRecorded(str(self.error))

    def add(self, index: int, result) -> None:
        if not result.ok:
            if result.transmitted and not result.unreadable:
                self.refused[self.outbox_ids[index]] = (refusal_error(result), bool(result.permanent))
            return
        outbox_id = self.outbox_ids[index]
        self.acknowledged.add(outbox_id)
        self.unrecorded.append(outbox_id)
        self.flush()

    def flush(self) -> None:
        if not self.unrecorded or self.error is not None:
            return
        try:
            self.db.mark_sent(self.unrecorded)
        except Exception as exc:  # noqa: BLE001 - said and raised after the association (Dispatcher._record_sent)
            self.error = exc
            return
        self.recorded(len(self.unrecorded))
        self.unrecorded = []
