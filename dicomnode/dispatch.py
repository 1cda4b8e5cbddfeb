"""The outbox: due result objects sent per destination, exponential back-off, dead letters after max attempts.

Items are claimed before they are sent (StateDB.claim_sends), so several dispatchers sharing one state database
never send the same item at once; a configured destination is resolved by name when sending (as mercure does),
so a reload or `dicomnode retry` after the PACS moved needs no rewrite of queued items.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, Sequence

from dicomnode.config import DestinationConfig, DispatchConfig
from dicomnode.net.scu import AssociationFailed, send_files
from dicomnode.observe import study_context
from dicomnode.state import RoundFailures, StateDB, is_outage, outage_reason
from dicomnode.uids import short_hash

log = logging.getLogger("dicomnode.dispatch")

#: a result file not there while the spool is (its marker present) is tried again with the normal back-off, and
#: becomes a dead letter after this many attempts (or max_attempts, if fewer): a file on a share may show up late
MISSING_FILE_ATTEMPTS = 4


def backoff_seconds(attempts: int, config: DispatchConfig) -> float:
    """Delay before attempt number `attempts + 1` (attempts already made >= 1)."""
    delay = config.initial_backoff_seconds * config.backoff_factor ** max(0, attempts - 1)
    return min(delay, config.max_backoff_seconds)


class Dispatcher:
    """A thread that drains the outbox; `wake()` after new items, otherwise it sleeps until the next due time."""

    def __init__(self, db: StateDB, storage_dir: Path, config: DispatchConfig, calling_ae_title: str,
                 ssl_context_for=None, destinations: Callable[[], Sequence[DestinationConfig]] | None = None,
                 storage_problem: Callable[[], str | None] | None = None):
        """`destinations`: the configured destinations now (after any reload); an item names its destination.
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
        self.storage_problem = storage_problem
        self.paused: str | None = None  # why dispatch pauses now (the spool is not there), said once

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dispatch", daemon=True)
        self._thread.start()

    @property
    def failed(self) -> bool:
        """Whether the dispatch thread ended while it was not asked to stop (what the heartbeat must not hide)."""
        return self._thread is not None and not self._thread.is_alive() and not self._stop.is_set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout)

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
                self.run_once()
                next_due = None if self.paused else self.db.next_send_time(max_delay=self.config.max_backoff_seconds)
                if next_due is not None:
                    wait = min(self.idle_seconds, max(0.05, next_due - time.time()))
            except Exception as exc:  # noqa: BLE001 - the loop outlives any round
                failures.failed(exc)
            else:
                failures.succeeded()
            self._wake.wait(wait)
            self._wake.clear()

    def address_of(self, row) -> tuple[str, str, int, str]:
        """(called AE title, host, port, calling AE title) of an item's destination: the configured one by name
        (its `calling_ae_title`, else the node's), else as queued ("sender", called by the node's AE title)."""
        for destination in (self.destinations() if self.destinations else ()):
            if destination.name == row["destination"]:
                return (destination.ae_title, destination.host, destination.port,
                        destination.calling_ae_title or self.calling_ae_title)
        return row["ae_title"], row["host"], row["port"], self.calling_ae_title

    def run_once(self) -> int:
        """Claim and send every due item, one association per destination; returns how many were sent."""
        self._record_unrecorded_sent()  # raises while the state database is still unreachable: nothing claimed
        if self._storage_unavailable():
            return 0
        # no back-off is longer than max_backoff_seconds: an item due later was parked by a clock stepped back
        due = self.db.claim_sends(max_delay=self.config.max_backoff_seconds)
        batches: dict[tuple, list] = defaultdict(list)
        for row in due:
            batches[(row["destination"], *self.address_of(row))].append(row)
        sent = 0
        for (name, ae_title, host, port, calling_ae_title), rows in batches.items():
            if self._stop.is_set():
                break  # the claims lapse after their lease; another dispatcher (or this one on restart) sends them
            if self.paused:  # the spool went during this round: the rest waits for it, unattempted
                self.db.release_sends([row["id"] for row in rows])
                continue
            sent += self._send_batch(name, ae_title, host, port, rows, calling_ae_title)
        return sent

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

    def _send_batch(self, name: str, ae_title: str, host: str, port: int, rows: list, calling_ae_title: str) -> int:
        """Send one destination's due items on one association; every log line names the study of its items."""
        ids = {key: self.study_log_id(key) for key in dict.fromkeys(row["study_key"] for row in rows)}
        paths = [self.storage_dir / row["path"] for row in rows]
        missing = [row for row, path in zip(rows, paths) if not path.is_file()]
        if missing and self._storage_unavailable():  # not the files' fault: the spool is not there (unmounted)
            self.db.release_sends([row["id"] for row in rows])
            return 0
        for row in missing:
            with study_context(ids[row["study_key"]]):
                self._failed(row, f"result file {self.storage_dir / row['path']} is missing",
                             max_attempts=MISSING_FILE_ATTEMPTS)
        rows = [row for row, path in zip(rows, paths) if path.is_file()]
        if not rows:
            return 0
        ssl_context = self.ssl_context_for(name) if self.ssl_context_for else None
        studies = ", ".join(ids[key] for key in dict.fromkeys(row["study_key"] for row in rows))
        recorder = _SentRecorder(self.db, [row["id"] for row in rows], self._count_sent)
        try:
            results = send_files([self.storage_dir / row["path"] for row in rows], ae_title, host, port,
                                 calling_ae_title=calling_ae_title, ssl_context=ssl_context, on_result=recorder.add)
        except AssociationFailed as exc:
            with study_context(studies):
                log.warning("destination %s: %s (%d result object(s) of study %s)", name, exc, len(rows), studies)
            for row in rows:
                with study_context(ids[row["study_key"]]):
                    self._failed(row, str(exc))
            return 0
        except Exception as exc:
            with study_context(studies):
                log.exception("destination %s: send failed (study %s)", name, studies)
            self._record_sent(recorder, name, studies)  # what was acknowledged before it failed is sent
            for row in rows:
                if row["id"] not in recorder.acknowledged:
                    with study_context(ids[row["study_key"]]):
                        self._failed(row, f"{type(exc).__name__}: {exc}")
            return 0
        for row, result in zip(rows, results):
            if result.ok and row["id"] not in recorder.acknowledged:  # a send_files that reported no result
                recorder.acknowledged.add(row["id"])
                recorder.unrecorded.append(row["id"])
        ok_ids = [row["id"] for row, result in zip(rows, results) if result.ok]
        self._record_sent(recorder, name, studies)
        for row, result in zip(rows, results):
            if not result.ok:
                with study_context(ids[row["study_key"]]):
                    log.warning("destination %s refused %s: %s", name, row["sop_instance_uid"], result.error)
                    self._failed(row, result.error)
        for key, log_id in ids.items():
            mine = [result.ok for row, result in zip(rows, results) if row["study_key"] == key]
            if mine:
                with study_context(log_id):
                    log.info("destination %s: sent %d of %d result object(s) of study %s", name, sum(mine), len(mine),
                             log_id)
        return len(ok_ids)

    def _record_sent(self, recorder: _SentRecorder, name: str, studies: str) -> None:
        """After an association: record what the recorder could not yet; what the state database would not take
        (an outage) is recorded before anything is claimed again (_unrecorded_sent), and the error raised."""
        recorder.flush()
        if recorder.error is None:
            return
        self._unrecorded_sent.extend(recorder.unrecorded)
        self._unreleased.extend(i for i in recorder.outbox_ids if i not in recorder.acknowledged)
        exc = recorder.error
        if is_outage(exc):
            log.error("destination %s: %d result object(s) of study %s sent, but the state database is unreachable "
                      "(%s): recorded as sent once it is back, not sent again by this process", name,
                      len(recorder.unrecorded), studies, outage_reason(exc))
        else:
            log.error("destination %s: %d result object(s) of study %s sent, but recording them failed (%s: %s): "
                      "recorded before anything is claimed again, not sent again by this process", name,
                      len(recorder.unrecorded), studies, type(exc).__name__, exc)
        raise exc

    def _count_sent(self, count: int) -> None:
        self.sent += count

    def _record_unrecorded_sent(self) -> None:
        """Record the sends the PACS acknowledged while the state database was unreachable (see _unrecorded_sent),
        and give back the claims of that association's other items (_unreleased)."""
        if self._unrecorded_sent:
            ids = list(self._unrecorded_sent)
            self.db.mark_sent(ids)
            del self._unrecorded_sent[:len(ids)]
            self.sent += len(ids)
            log.info("recorded %d result object(s) sent while the state database was unreachable", len(ids))
        if self._unreleased:
            ids = list(self._unreleased)
            self.db.release_sends(ids)
            del self._unreleased[:len(ids)]

    def _failed(self, row, error: str, dead: bool = False, max_attempts: int | None = None) -> None:
        """One failed attempt: due again after the back-off, or a dead letter after `max_attempts` (at most the
        configured dispatch.max_attempts)."""
        attempts = row["attempts"] + 1
        self.failed_attempts += 1
        limit = self.config.max_attempts if max_attempts is None else min(max_attempts, self.config.max_attempts)
        dead = dead or attempts >= limit
        next_attempt = time.time() + backoff_seconds(attempts, self.config)
        self.db.mark_failed_send(row["id"], error, next_attempt, dead)
        if dead:
            log.error("dead letter: %s to %s after %d attempt(s): %s", row["sop_instance_uid"], row["destination"],
                      attempts, error)


class _SentRecorder:
    """Records each instance the destination acknowledged as sent as soon as its response arrives (send_files'
    on_result), so that a dispatcher killed mid-association resends at most the instance in flight, and
    `dicomnode status` counts what the destination holds. Once the state database refuses a write (an outage), the
    rest of the association is only collected (`unrecorded`) and `error` kept, never raised into send_files."""

    def __init__(self, db: StateDB, outbox_ids: list[int], recorded: Callable[[int], None]):
        """`outbox_ids`: the items in the order they are sent; `recorded(n)`: after n more were recorded as sent."""
        self.db = db
        self.outbox_ids = outbox_ids
        self.recorded = recorded
        self.acknowledged: set[int] = set()
        self.unrecorded: list[int] = []  # acknowledged, not recorded yet
        self.error: Exception | None = None

    def add(self, index: int, result) -> None:
        if not result.ok:
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
