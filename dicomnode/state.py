"""The node's durable state: instance index, per-study state machine, analyses, results, outbox, leases, heartbeats.

One implementation over two databases, chosen by ``[state] url``:

- SQLite (default, ``<storage_dir>/state.sqlite3``): one machine, WAL mode with ``synchronous=FULL`` so a committed
  transaction survives power loss; every write transaction is ``BEGIN IMMEDIATE``, which serialises writers across
  threads *and* processes on that machine (the "atomic claim" below).
- PostgreSQL (``postgresql://user@host/db``): several machines; row locks (``SELECT … FOR UPDATE``) and
  ``FOR UPDATE SKIP LOCKED`` claims, so concurrent workers never take the same study or outbox item.

Why SQLAlchemy Core (with psycopg 3 as the PostgreSQL driver) rather than psycopg alone: the same SQL text and the
same transaction code run on SQLite and PostgreSQL (named bind parameters, expanding ``IN`` lists, ``RETURNING``,
``ON CONFLICT``), the schema is declared once as :data:`METADATA` and created by ``create_all`` on either engine,
and connection pooling and the per-dialect quirks (SQLite's deferred BEGIN, psycopg's server-side types) are the
library's problem. The ORM is not used: the queries are few, hand-written and visible here. Alembic is not used
either: the schema has a version number in ``meta`` and :func:`upgrade` applies the small additive steps in order.

This module is the only code that knows the schema: the rest of the node calls the methods of :class:`StateDB`.

Exactly once across processes (PostgreSQL, or several processes on one SQLite file):

- a study is analysed by the worker holding its claim (``studies.claimed_by`` + ``lease_until``); a worker renews
  its leases with every heartbeat; a study whose lease expired (the worker died) is claimable again; results and
  outbox items are recorded only while the claim is still held by the worker that ran the analysis;
- outbox items are claimed the same way before they are sent;
- named leases (table ``leases``) let exactly one process act as the completion scheduler at a time;
- every process writes a heartbeat row (table ``nodes``) that ``dicomnode status`` lists.

Nothing undelivered is ever purged, and nothing superseded is ever sent:

- an analysis that finishes retires the earlier analyses' outbox items not yet sent (state ``superseded``): the
  study's delivery state is that of its current results only, and `dicomnode retry` never re-queues a superseded one;
- a purge is three steps: the study is marked ``purging`` in its own transaction, its files are deleted, then its
  rows go (leaving a tombstone of its result objects in ``purged_reports``, which the next analysis of a re-sent
  study names as superseded). A crash between the steps leaves a study that says ``purging``, which retention
  finishes; an instance of a purging study is refused for the moment (:class:`StudyPurging`), the sender retries.
"""
from __future__ import annotations

import errno
import fcntl
import functools
import json
import logging
import os
import pwd
import re
import socket
import sqlite3
import struct
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Iterable, Iterator, Sequence

from pydicom.uid import KeyObjectSelectionDocumentStorage
from sqlalchemy import (
    Column, Double, Index, Integer, MetaData, String, Table, Text, bindparam, create_engine, event, inspect, text,
)
from sqlalchemy.engine import Connection, Engine, RowMapping
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.sql.elements import TextClause

from dicomnode import strict_json
from dicomnode.uids import short_hash

log = logging.getLogger("dicomnode.state")

SCHEMA_VERSION = 7

# Study state machine. A late instance moves any state after RECEIVED back to RECEIVED with a new generation.
RECEIVED = "received"
COMPLETE = "complete"
ANALYSING = "analysing"
RESULTS_READY = "results_ready"
SENDING = "sending"
DONE = "done"
FAILED = "failed"
#: v3: retention is deleting the study's files (committed before the first file goes; its rows go last)
PURGING = "purging"
STUDY_STATES = (RECEIVED, COMPLETE, ANALYSING, RESULTS_READY, SENDING, DONE, FAILED, PURGING)
UNFINISHED_STATES = (RECEIVED, COMPLETE, ANALYSING, RESULTS_READY, SENDING)
#: the reason of a receiving study some of whose instances were refused (0xA700; studies.refused_reason): the next
#: instance stored clears it
INCOMPLETE_PREFIX = "incomplete: "

OUTBOX_PENDING = "pending"
OUTBOX_SENT = "sent"
OUTBOX_DEAD = "dead"
#: the reason of a study `dicomnode retry` sent back to complete for a new analysis (reanalyse_finished, reanalyse):
#: the new report says so of the one it supersedes
REANALYSIS_REQUESTED = "re-analysis requested"
#: v3: an item of an analysis that a later analysis of the study superseded before it was sent: never sent
OUTBOX_SUPERSEDED = "superseded"

#: result objects not delivered (yet): a study holding one is never purged
OUTBOX_UNDELIVERED = (OUTBOX_PENDING, OUTBOX_DEAD)

#: an outbox item's last_error from just before its C-STORE goes on the wire (StateDB.mark_in_flight) until its
#: response is recorded (mark_sent, mark_failed_send). Found on an item no live dispatcher holds, it says that a
#: dispatcher stopped (kill -9, a crash) with that C-STORE in flight: the destination may already hold the object.
#: Both texts start with IN_FLIGHT_PREFIX
IN_FLIGHT_PREFIX = "in flight"
OUTBOX_IN_FLIGHT = "in flight: C-STORE sent, its response not recorded yet"
OUTBOX_RESEND_IN_FLIGHT = ("in flight again: re-sent after a dispatcher stopped with its C-STORE in flight, its "
                           "response not recorded yet")
#: the last_error a sent item keeps when it was sent again after a dispatcher stopped with its C-STORE in flight
#: (`dicomnode status` counts them: `resent`)
OUTBOX_RESENT = ("re-sent: a dispatcher stopped with its C-STORE in flight; the destination may already hold it under "
                 "the same SOP Instance UID")

#: the last_error of an item re-sent after such a stop whose later attempt failed: the error follows it, and the
#: item stays re-sent (`resent`) whatever its next attempts do (mark_in_flight, mark_sent keep it)
OUTBOX_RESENT_FAILED = "re-sent (the destination may already hold it), then failed: "
_RESENT_LIKE = "re-sent%"

#: claim_sends/next_send_time without a cap on how far ahead a pending item may be due (no clock-step guard)
NO_SEND_DELAY_CAP = float("inf")
#: the due test of a pending send (both backends): due now, or due further ahead than any back-off (`:max_delay`)
#: can make it, which only a clock stepped back after the failed attempt does: due now rather than parked
_SEND_DUE = "(next_attempt_at <= :now OR next_attempt_at > :now + :max_delay)"

#: default lease of a claimed study or outbox item; renewed by every heartbeat of the process holding it
DEFAULT_LEASE_SECONDS = 60.0
#: default interval of every process's heartbeat (`[state] heartbeat_seconds`)
DEFAULT_HEARTBEAT_SECONDS = 10.0
#: a process whose clock differs from the PostgreSQL server's by more than this (s) is warned about (roles.ClockWatch,
#: `dicomnode status`): leases, heartbeats and the studies' quiet timers compare times written by different machines
CLOCK_SKEW_WARN_SECONDS = 2.0
#: a process whose heartbeat is this many intervals old is STALE in `dicomnode status`
STALE_AFTER_HEARTBEATS = 3
#: ... and this many (at least its lease) gone: killed, or its machine is down
GONE_AFTER_HEARTBEATS = 10

METADATA = MetaData()
Table("meta", METADATA, Column("key", String(64), primary_key=True), Column("value", Text, nullable=False))
Table(
    "instances", METADATA,
    Column("sop_instance_uid", Text, primary_key=True),
    Column("study_key", Text, nullable=False),
    Column("study_instance_uid", Text, nullable=False),
    Column("series_instance_uid", Text, nullable=False),
    Column("sop_class_uid", Text, nullable=False),
    Column("transfer_syntax", Text),
    Column("modality", Text),
    Column("path", Text, nullable=False),
    Column("size", Integer, nullable=False),
    Column("calling_ae", Text),
    Column("received_at", Double, nullable=False),
    Column("series_number", Integer),
    Column("slice_key", Text),
    Column("cardiac_images", Integer),
    Column("frames", Integer),
    Column("images_in_acquisition", Integer),
    Column("calling_host", Text),  # v4: the address the instance came from (send_to_sender's return address)
    Column("series_continues", Text),  # v7: why its own header says its series goes on in other instances
    Index("instances_study", "study_key"),
    Index("instances_study_uid", "study_instance_uid"),  # State.study_key_of_uid, on every new study's first instance
)
Table(
    "studies", METADATA,
    Column("study_key", Text, primary_key=True),
    Column("study_instance_uid", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("reason", Text),
    Column("calling_ae", Text),
    Column("calling_host", Text),
    Column("first_received", Double, nullable=False),
    Column("last_received", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("generation", Integer, nullable=False, server_default="0"),
    Column("route", Text),
    Column("summary_json", Text),
    Column("claimed_by", Text),  # v2: the process analysing it
    Column("lease_until", Double),  # v2: the claim is void after this time
    Index("studies_state", "state"),
)
Table(
    "analyses", METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_key", Text, nullable=False),
    Column("generation", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("started_at", Double, nullable=False),
    Column("finished_at", Double),
    Column("reason", Text),
    Column("summary_json", Text),
    Column("worker", Text),  # v2
    sqlite_autoincrement=True,
)
Table(
    "results", METADATA,
    Column("sop_instance_uid", Text, primary_key=True),
    Column("analysis_id", Integer, nullable=False),
    Column("study_key", Text, nullable=False),
    Column("series_instance_uid", Text, nullable=False),
    Column("sop_class_uid", Text, nullable=False),
    Column("path", Text, nullable=False),
)
Table(
    "outbox", METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("analysis_id", Integer, nullable=False),
    Column("study_key", Text, nullable=False),
    Column("destination", Text, nullable=False),
    # the address when queued: used only for "sender" (results back to the calling host); a configured destination
    # is resolved by name when sending, so a reload or a moved PACS needs no rewrite of queued rows
    Column("ae_title", Text, nullable=False),
    Column("host", Text, nullable=False),
    Column("port", Integer, nullable=False),
    Column("sop_instance_uid", Text, nullable=False),
    Column("path", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", Double, nullable=False),
    Column("last_error", Text),
    Column("sent_at", Double),
    Column("claimed_by", Text),  # v2
    Column("lease_until", Double),  # v2
    Index("outbox_due", "state", "next_attempt_at"),
    sqlite_autoincrement=True,
)
Table(  # v2: named leases (e.g. "complete": the one process acting as completion scheduler)
    "leases", METADATA,
    Column("name", String(64), primary_key=True),
    Column("holder", Text, nullable=False),
    Column("lease_until", Double, nullable=False),
)
Table(  # v3: tombstones: the result objects of purged studies, what a re-analysis of a re-sent study supersedes
    "purged_reports", METADATA,
    Column("sop_instance_uid", Text, primary_key=True),
    Column("study_key", Text, nullable=False),
    Column("series_instance_uid", Text, nullable=False),
    Column("sop_class_uid", Text, nullable=False),
    Column("path", Text, nullable=False),  # where the file was (gone)
    Column("purged_at", Double, nullable=False),
    # v6: the object's Study Instance UID (NULL: purged before v6, unknown) and the JSON list of the outbox
    # destinations that received it (NULL: unknown): a re-analysis's rejection note names it only to those
    Column("study_instance_uid", Text),
    Column("destinations", Text),
    Index("purged_reports_study", "study_key"),
)
Table(  # v2: one row per running process
    "nodes", METADATA,
    Column("node_id", Text, primary_key=True),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("roles", Text, nullable=False),
    Column("started_at", Double, nullable=False),
    Column("last_seen", Double, nullable=False),
    Column("detail_json", Text),
)

#: additive steps from version N-1 to N: (table, column, SQL type) added to a database created by an older version
_MIGRATIONS: dict[int, list[tuple[str, str, str]]] = {
    2: [("studies", "claimed_by", "TEXT"), ("studies", "lease_until", "DOUBLE PRECISION"),
        ("analyses", "worker", "TEXT"), ("outbox", "claimed_by", "TEXT"), ("outbox", "lease_until", "DOUBLE PRECISION")],
    3: [],  # table purged_reports (create_all) and the data step _retire_superseded_outbox
    4: [("instances", "calling_host", "TEXT")],
    5: [],  # index instances_study_uid (created with every table's indexes)
    6: [("purged_reports", "study_instance_uid", "TEXT"), ("purged_reports", "destinations", "TEXT")],
    7: [("instances", "series_continues", "TEXT")],
}


class StorageDirError(RuntimeError):
    """node.storage_dir cannot hold the node's data (not a folder, cannot be made, not writable); says which."""


def prepare_storage_dir(path: str | os.PathLike) -> Path:
    """Create node.storage_dir owner-only (mode 0700, patient data) or check the existing one; returns it.

    Raises StorageDirError naming the key, the path and the reason instead of a bare OSError.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise StorageDirError(f"node.storage_dir {str(folder)!r} is not a folder (a file is there)")
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder.chmod(0o700)  # spool, results and state are patient data: owner only, even if it pre-existed
    except OSError as exc:
        raise StorageDirError(f"node.storage_dir {str(folder)!r} cannot be used: {exc.strerror or exc}") from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StorageDirError(f"node.storage_dir {str(folder)!r} is not writable by this user")
    return folder


def user_name(uid: int) -> str:
    """"dicomnode (uid 999)", or "uid 999" for a uid without a passwd entry."""
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def foreign_owner_warning(path: str | os.PathLike) -> str | None:
    """What `serve` logs at start when its user is not the owner of node.storage_dir (root debugging on the service
    user's spool): every file it writes there (instances, results, the state's journal) is its user's, mode 0600,
    which the node cannot read once it runs as the owner again (an instance acknowledged, then unreadable). None
    where the folder does not exist yet (created by this user) or is this user's."""
    try:
        owner = Path(path).stat().st_uid
    except OSError:
        return None
    if owner == os.geteuid():
        return None
    me, them = user_name(os.geteuid()), user_name(owner)
    return (f"this process runs as {me}, but node.storage_dir {path} belongs to {them}: the files it writes there "
            f"are {me}'s, owner-only, and a node running as {them} cannot read them (an instance received now would "
            f"be left out of its study's analysis); run `serve` as that user (sudo -u, or systemctl start dicomnode)")


def default_state_path(config) -> Path:
    """Where the embedded SQLite state lives when `[state] url` is not set: <node.storage_dir>/state.sqlite3."""
    return Path(config.node.storage_dir) / "state.sqlite3"


class StateSchemaError(RuntimeError):
    """The database has no schema, or one of another version: `dicomnode state upgrade` fixes the first."""


class MixedVersionsError(StateSchemaError):
    """Live processes of another dicomnode version work on the state (roles.refuse_other_versions)."""


def schema_mismatch(what: str, version: int | None) -> str:
    """Why `what` (the state database, described) with schema `version` cannot be used by this code, and what to do:
    an older schema is upgraded, and a missing one (an empty database) created, by `dicomnode state upgrade`; a newer one was written by a newer
    dicomnode, which this older code cannot use."""
    if version is not None and version > SCHEMA_VERSION:
        return (f"{what} has schema version {version}, newer than this dicomnode's {SCHEMA_VERSION}: it was upgraded "
                f"by a newer dicomnode, which this older version cannot use; install (run) the newer dicomnode, or "
                f"restore the state from a backup taken before the upgrade")
    if version is None:  # no `meta` table: a new database no dicomnode has used yet
        return (f"{what} is empty (no dicomnode schema yet): run `dicomnode state upgrade` once to create it (schema "
                f"version {SCHEMA_VERSION}; an embedded SQLite state is created when `dicomnode serve` starts); "
                f"nothing was changed")
    return (f"{what} has schema version {version}, this dicomnode needs {SCHEMA_VERSION}: run `dicomnode "
            f"state upgrade` after stopping every process of the older version and backing the state up (a "
            f"PostgreSQL state is migrated in place with no copy kept: `pg_dump` it first, then `dicomnode state "
            f"upgrade --yes`; an embedded SQLite state is copied beside itself, and also migrated when `dicomnode "
            f"serve` of this version starts; README: Upgrading); nothing was changed")


#: what an older dicomnode does with a state migrated to this schema, said where a migration is logged or asked for:
#: releases with schema 2 or later check the version and refuse to start; the first releases (schema 1, no
#: heartbeat, no storage lock) check nothing and would run on it with their old semantics
OLDER_VERSIONS_AFTER_UPGRADE = (
    "a dicomnode of schema 2 or later refuses to start on it; a release of schema 1 (before 1 December 2026, without "
    "`dicomnode state upgrade`) does not check and would run on it with its old semantics, so never start one on it "
    "again: to go back, restore the state from a backup taken before the upgrade")


def sqlite_open_elsewhere(path: str | os.PathLike) -> bool:
    """Whether another process has the SQLite database at `path` open now (any version or tool: a dicomnode of
    schema 1 records no heartbeat and takes no storage lock). In WAL mode every open connection holds a shared
    POSIX lock on the "dead man switch" byte of `<path>-shm` (SQLite's os_unix.c, UNIX_SHM_DMS, offset 128);
    F_GETLK reports another process's lock there and takes none. This process's own locks are not reported.

    The probe's descriptor stays open for the life of the process: closing any descriptor of a file drops every
    POSIX lock this process holds on it, including SQLite's own."""
    shm = Path(f"{path}-shm")
    if not shm.exists():  # the last connection to close removes it (or the database is not in WAL mode)
        return False
    key = str(shm.resolve())
    fd = _SHM_PROBES.get(key)
    if fd is None:
        try:
            fd = os.open(key, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        _SHM_PROBES[key] = fd
    probe = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 128, 1, 0)
    try:
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, probe)
    except OSError:
        return False
    return struct.unpack("hhqqi4x", answer)[0] != fcntl.F_UNLCK


_SHM_PROBES: dict[str, int] = {}


class StudyPurging(OSError):
    """An instance of a study that retention is purging right now: not stored; the sender should send it again
    (the C-STORE SCP answers 0xA700, a transient refusal), and then it starts a new study."""

    def __init__(self, study_key: str):
        super().__init__(errno.EBUSY, "its study is being purged by retention, send it again in a moment")
        self.study_key = study_key


# --- outages of the state database ---------------------------------------------------------------------------------

#: how often a process says again that the state database is still unreachable, or that a loop still fails with the
#: same error (one line, no traceback); the first time is always said, and so is the end
REPEAT_REMINDER_SECONDS = 300.0

#: an outage that comes back within this long (s) of its end is the same outage, intermittent (OutageMonitor)
FLAPPING_SECONDS = 300.0

#: an intermittent outage is said to be over once statements have worked for this long (s) without a failure
RECOVERY_HOLD_SECONDS = 60.0

#: OperationalError texts that are a statement's fault (SQLite reports these as OperationalError too), not an outage
_STATEMENT_FAULTS = ("no such table", "no such column", "has no column", "syntax error", "already exists")


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` says the state database cannot be reached or used right now: a transient fault that the node
    rides out by retrying, not a bug to trace. SQLAlchemy's OperationalError (connection refused or lost, the server
    shutting down or starting, SQLite's 'database is locked', 'disk I/O error', a full disk), InterfaceError, a
    connection invalidated, a pool timeout, and the drivers' own OperationalError / InterfaceError; not a
    statement's fault that SQLite files under OperationalError too ('no such table', 'syntax error')."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        return isinstance(exc, (OperationalError, InterfaceError)) and not _statement_fault(exc.orig or exc)
    if isinstance(exc, (DisconnectionError, PoolTimeoutError)):
        return True
    if isinstance(exc, (sqlite3.OperationalError, sqlite3.InterfaceError)):
        return not _statement_fault(exc)
    # psycopg's own classes (not imported here: SQLite-only installs need no driver), by name and module
    return any(cls.__module__.split(".")[0] == "psycopg" and cls.__name__ in ("OperationalError", "InterfaceError")
               for cls in type(exc).__mro__)


#: what a full disk (or an exhausted quota) says: SQLite, the OS, PostgreSQL
_DISK_FULL_TEXTS = ("database or disk is full", "no space left on device", "disk quota exceeded",
                    "could not extend file")


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` (or what it wraps: SQLAlchemy's `orig`, a chained cause) says the disk holding the data is
    full: OSError ENOSPC or EDQUOT, SQLite's SQLITE_FULL ('database or disk is full'), PostgreSQL's 'could not
    extend file'."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(needle in str(current).lower() for needle in _DISK_FULL_TEXTS):
            return True
        current = getattr(current, "orig", None) or current.__cause__
    return False


def _statement_fault(exc: BaseException) -> bool:
    text_ = str(exc).lower()
    return any(fault in text_ for fault in _STATEMENT_FAULTS)


def outage_reason(exc: BaseException, limit: int = 200) -> str:
    """The driver's first line of an outage error (`connection refused`, `the database system is shutting down`,
    `database is locked` ...), without SQLAlchemy's statement dump."""
    cause = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(cause).strip().splitlines() if line.strip()]
    return (lines[0] if lines else type(cause).__name__)[:limit]


class OutageMonitor:
    """One process's account of state-database outages, so that an outage is said once, not by every loop every
    poll: `failed(exc)` by whoever met the outage (the first says one ERROR line naming the cause and the retry
    interval, then one reminder every REPEAT_REMINDER_SECONDS, no traceback), `succeeded()` after any statement
    that went through (StateDB calls it: the end of the outage is said once, with how long it lasted).

    An outage that comes back within FLAPPING_SECONDS of its end (a full disk: a write that fits in pages the
    database holds works, the next that needs a new one fails) is one intermittent outage: said once more at ERROR,
    then quiet (reminders aside) until statements have worked for RECOVERY_HOLD_SECONDS without a failure; only then
    is its end said. `active` is whether the latest statement failed (what /healthz reports)."""

    def __init__(self, retry_seconds: float = 1.0, logger: logging.Logger | None = None):
        self.retry_seconds = retry_seconds
        self.log = logger or log
        self.since: float | None = None  # when the current outage was first met (epoch s); None: no outage
        self.failures = 0
        self.reason = ""
        self.last_failure = 0.0  # epoch s of the latest failure met (what the completion rules treat as not quiet)
        self._told = 0.0
        self._ended = 0.0  # epoch s when the latest outage was said to be over
        self._intermittent = False  # the current outage came back soon after its end: its end waits for a calm
        self._working_since: float | None = None  # intermittent: the first statement that worked since the failure
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return self.since is not None and self._working_since is None

    def failed(self, exc: BaseException, retry_seconds: float | None = None) -> None:
        now = time.time()
        reason = outage_reason(exc)
        with self._lock:
            self.failures += 1
            self.reason = reason
            self.last_failure = now
            self._working_since = None
            if self.since is None:
                self._intermittent = self._ended > 0 and now - self._ended < FLAPPING_SECONDS
                self.since, self.failures, self._told = now, 1, now
                told = "again" if self._intermittent else "first"
            elif now - self._told >= REPEAT_REMINDER_SECONDS:
                self._told = now
                told = "reminder"
            else:
                return
            since, failures = self.since, self.failures
        if told == "first":
            self.log.error("state database unreachable: %s; retrying every %g s (repeats are not logged; a line "
                           "follows when it is back)", reason, retry_seconds or self.retry_seconds)
        elif told == "again":
            self.log.error("state database unreachable again %.0f s after it was back: %s; it comes and goes (a "
                           "full disk fails only the writes that need new space), so its end is said once it has "
                           "worked for %.0f s without a failure (reminders every %.0f s)", now - self._ended, reason,
                           RECOVERY_HOLD_SECONDS, REPEAT_REMINDER_SECONDS)
        else:
            self.log.error("state database still unreachable after %.0f s (%d failed attempts%s): %s", now - since,
                           failures, ", working in between" if self._intermittent else "", reason)

    def succeeded(self, started: float | None = None) -> None:
        """A statement went through; `started` (epoch s): when it began. One that began before the latest failure
        proves nothing (it may have run just before the outage, while another loop already met it)."""
        if self.since is None:  # the usual case, without taking the lock
            return
        now = time.time()
        with self._lock:
            if self.since is None or (started is not None and started < self.last_failure):
                return
            if self._intermittent:
                if self._working_since is None:
                    self._working_since = now
                if now - self._working_since < RECOVERY_HOLD_SECONDS:
                    return
            since, failures, intermittent = self.since, self.failures, self._intermittent
            self.since, self.failures, self._ended = None, 0, now
            self._intermittent, self._working_since = False, None
        if intermittent:
            self.log.warning("state database reachable again, and it has worked for %.0f s without a failure, after "
                             "%.0f s of failing at times (%d failed attempts)", RECOVERY_HOLD_SECONDS, now - since,
                             failures)
        else:
            self.log.warning("state database reachable again after %.0f s unreachable (%d failed attempts)",
                             now - since, failures)


class RoundFailures:
    """What a loop that retries says when one of its rounds fails, so that no fault floods the log: an outage of the
    state database goes to the process's OutageMonitor (one line for all loops); any other error is logged with its
    traceback the first time, then only counted, with a one-line reminder every REPEAT_REMINDER_SECONDS while it
    stays the same error, and one line when a round works again."""

    def __init__(self, db: "StateDB", logger: logging.Logger, what: str, retry_seconds: float,
                 traceback: bool = True):
        self.db = db
        self.log = logger
        self.what = what
        self.retry_seconds = retry_seconds
        self.traceback = traceback  # False: the errors say all there is to say (their text is logged instead)
        self._key: tuple[str, str] | None = None
        self._count = 0
        self._told = 0.0

    def failed(self, exc: BaseException) -> None:
        if is_outage(exc):
            self.db.outage.failed(exc, self.retry_seconds)
            return
        now = time.time()
        key = (type(exc).__name__, str(exc))
        if key != self._key:
            self._key, self._count, self._told = key, 1, now
            if self.traceback:
                self.log.error("%s; retrying every %g s", self.what, self.retry_seconds, exc_info=exc)
            else:
                self.log.error("%s: %s; retrying every %g s", self.what, exc, self.retry_seconds)
            return
        self._count += 1
        if now - self._told >= REPEAT_REMINDER_SECONDS:
            self._told = now
            self.log.error("%s again (%d times in a row): %s: %s", self.what, self._count, key[0], key[1][:300])

    def succeeded(self) -> None:
        if self._key is None:
            return
        if self._count > 1:
            self.log.info("%s: works again after %d failed rounds", self.what, self._count)
        self._key, self._count = None, 0


@dataclass
class InstanceRow:
    sop_instance_uid: str
    study_key: str
    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    transfer_syntax: str
    modality: str
    path: str
    size: int
    calling_ae: str
    received_at: float
    series_number: int | None = None
    slice_key: str | None = None
    cardiac_images: int | None = None
    frames: int | None = None
    images_in_acquisition: int | None = None
    series_continues: str | None = None


@dataclass
class StoreOutcome:
    stored: bool  # False: a duplicate SOP Instance UID, already stored
    study_key: str
    study_state_before: str | None  # None: a new study
    generation: int
    #: False: stored into a study past receiving without re-opening it (an instance no analysis reads)
    reopened: bool = True


def no_results_reason(summary: dict, limit: int = 500) -> str:
    """The study's reason when its analysis made no result object: the declined reasons of its summary, then why
    each routed analysis had nothing to analyse (`not_analysed`)."""
    entries = list(summary.get("declined") or []) + list(summary.get("not_analysed") or [])
    reasons = list(dict.fromkeys(str(d.get("reason", "")) for d in entries if d.get("reason")))
    return ("no result objects: " + "; ".join(reasons) if reasons else "no result objects")[:limit]


#: the start of the reason of a study whose results went to its destinations but not back to its sender
#: (send_to_sender: the analysed images came from several peers); kept once the study is done
SENDER_NOT_SENT_PREFIX = "results not sent back to the sender: "


def sender_note(summary: dict, limit: int = 500) -> str | None:
    """The study's reason when a route's send_to_sender sent its results back to no one (the summary's
    `send_to_sender` says why, node.Node._return_address), else None; `dicomnode status` shows it."""
    entries = [summary] + list(summary.get("studies") or [])
    reasons = [str(e["send_to_sender"].get("reason")) for e in entries
               if isinstance(e.get("send_to_sender"), dict) and e["send_to_sender"].get("sent") is False]
    return (SENDER_NOT_SENT_PREFIX + "; ".join(dict.fromkeys(reasons)))[:limit] if reasons else None


#: the start of a finished study's reason where its result objects carry an identifier copied with control
#: characters (identifier_note); kept once the study is done
IDENTIFIER_NOTE_PREFIX = "identifiers copied with control characters: "


def identifier_note(summary: dict, limit: int = 500) -> str | None:
    """The study's reason when its result objects carry a PatientID, IssuerOfPatientID, AccessionNumber or StudyID
    copied as received with control characters (the summary's `identifier_warnings`, results.headers), e.g.
    'identifiers copied with control characters: PatientID (\\r\\n): the result objects are not valid DICOM
    (VR LO: no control characters) and an archive that validates may refuse them'; else None. `dicomnode status`
    shows it."""
    entries = [summary] + list(summary.get("studies") or [])
    found = [item for entry in entries for item in entry.get("identifier_warnings") or () if isinstance(item, dict)]
    if not found:
        return None
    named = ", ".join(dict.fromkeys(f"{item.get('attribute')} ({item.get('characters')})" for item in found))
    vrs = ", ".join(sorted({str(item.get("vr")) for item in found}))
    return (f"{IDENTIFIER_NOTE_PREFIX}{named}: the result objects are not valid DICOM (VR {vrs}: no control "
            f"characters) and an archive that validates may refuse them")[:limit]


#: the start of the declined reason (summary.json) of an instance the node acknowledged and indexed whose spooled file
#: was gone when the study was analysed (node.Node._analyse_claimed): deleted or moved by hand
MISSING_INSTANCE_REASON = "acknowledged instance missing from the spool: "
#: the start of a finished study's reason where acknowledged instances were missing when it was analysed
#: (missing_note); kept once the study is done
MISSING_NOTE_PREFIX = "analysed without acknowledged instances missing from the spool: "


def missing_note(summary: dict, limit: int = 500) -> str | None:
    """The study's reason when acknowledged instances were missing from the spool at its analysis (the summary's
    `declined` entries that start with MISSING_INSTANCE_REASON), e.g. 'analysed without acknowledged instances
    missing from the spool: 1 instance (SOP Instance UID 1.2.3 of series 1.2.4); see summary.json declined'; else
    None. `dicomnode status` shows it."""
    entries = [summary] + list(summary.get("studies") or [])
    found = [str(d.get("reason")) for entry in entries for d in entry.get("declined") or ()
             if isinstance(d, dict) and str(d.get("reason", "")).startswith(MISSING_INSTANCE_REASON)]
    if not found:
        return None
    first = found[0].removeprefix(MISSING_INSTANCE_REASON).split(" at ", 1)[0]
    return (f"{MISSING_NOTE_PREFIX}{len(found)} instance(s) ({first}{', …' if len(found) > 1 else ''}): deleted or "
            f"moved by hand? the results were computed without them; see summary.json declined")[:limit]


#: what results.objects writes in a declined reason for a result object that could not be built
NOT_WRITTEN = " not written: "
#: the start of a finished study's reason where some of its result objects could not be built (study_reason)
NOT_BUILT = "result object(s) not built: "


def study_reason(summary: dict, has_results: bool, limit: int = 500) -> str | None:
    """The reason a finished study shows (`dicomnode status`): no_results_reason where its analysis made no result
    object; where it made some but could not build others (a measurement SR that raised: the node's failure, the
    PACS misses that object), which were not built and why; else None."""
    if not has_results:
        return no_results_reason(summary, limit)
    failed = list(dict.fromkeys(str(d.get("reason", "")) for d in summary.get("declined") or []
                                if NOT_WRITTEN in str(d.get("reason", ""))))
    return (NOT_BUILT + "; ".join(failed))[:limit] if failed else None


def results_reason(summary: dict) -> str | None:
    """The reason of a study whose analysis made result objects (StateDB.finish_analysis), from its summary: which
    could not be built (study_reason), results not sent back to the sender (sender_note) and identifiers copied
    with control characters (identifier_note), joined by "; "; None where none applies. The same again when its
    results are queued anew (StateDB.resend, retry_dead), so that the notes stay on the study while the results
    that carry them are delivered once more (review47 #5)."""
    return "; ".join(r for r in (missing_note(summary), study_reason(summary, True), sender_note(summary),
                                 identifier_note(summary)) if r) or None


#: meta keys of the saved DifferentResends items, one per process (StateDB.save_different_resends)
RESENDS_KEY_PREFIX = "different_resends:"
#: how long saved re-send items are listed (net.scp.RECENT_REFUSALS_SECONDS, which the receiver keeps them for)
RESENDS_KEPT_SECONDS = 24 * 3600.0


#: meta keys of purged studies' last receipt, one per purge: the prefix, the purge's epoch second (12 digits, so that
#: keys sort by it and the expired ones go by a range of the primary key) and the study key's hash (StateDB.
#: finish_purge, purged_last_received)
PURGED_RECEIVED_KEY_PREFIX = "purged_received:"
#: where a key's purge second ends (1-based, as SQL's substr counts): the ':' there tells these keys from those
#: written before the purge second was in the key (`purged_received:<key hash>`)
_PURGED_RECEIVED_SECOND_END = len(PURGED_RECEIVED_KEY_PREFIX) + 13


def _purged_received_key(purged_at: float, study_key: str = "") -> str:
    """The meta key of a study purged at `purged_at` (epoch s); without `study_key`, the bound before which every
    key was purged earlier than that second."""
    second = f"{PURGED_RECEIVED_KEY_PREFIX}{max(0, int(purged_at)):012d}:"
    return second + short_hash(study_key, 24) if study_key else second


def _recent_resends(value: str, now: float) -> dict | None:
    """A saved {"process", "items"} value with only its items of the last RESENDS_KEPT_SECONDS; None when none is
    left or the value cannot be read."""
    try:
        saved = json.loads(value)
        items = [item for item in saved["items"] if now - float(item["last_at"]) <= RESENDS_KEPT_SECONDS]
    except (ValueError, KeyError, TypeError):
        return None
    return {"process": str(saved.get("process", "")), "items": items} if items else None


def _purged_received(value: str, now: float) -> dict | None:
    """A saved purged_received value purged within RESENDS_KEPT_SECONDS; None when older or unreadable."""
    try:
        saved = json.loads(value)
        if now - float(saved["purged_at"]) > RESENDS_KEPT_SECONDS:
            return None
        return {"study_instance_uids": [str(uid) for uid in saved["study_instance_uids"]],
                "last_received": float(saved["last_received"])}
    except (ValueError, KeyError, TypeError):
        return None


def default_process_id() -> str:
    """host:pid, unique per running process (what claims and heartbeats are recorded under)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def state_url(value: str | os.PathLike) -> str:
    """A SQLAlchemy URL from a config value: a path means a SQLite file; postgresql:// uses psycopg 3."""
    value = str(value)
    if "://" not in value:
        return f"sqlite:///{Path(value)}"
    if value.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + value.split("://", 1)[1]
    return value


#: query parameters of a database URL that hold a secret (libpq's `password`, `sslpassword` ...): masked wherever the
#: URL is shown
_SECRET_QUERY_KEY = re.compile(r"pass|secret|token", re.IGNORECASE)
_SECRET_QUERY_VALUE = re.compile(r"([?&][^=&#]*(?:pass|secret|token)[^=&#]*=)[^&#]*", re.IGNORECASE)


def url_secrets(url: str) -> list[str]:
    """The secret values a database URL carries: its password, and the values of query parameters such as
    `?password=` or `?sslpassword=` (libpq takes both forms)."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy reads: nothing known to mask
        return []
    found = [str(parsed.password)] if parsed.password else []
    for key, value in parsed.query.items():
        if _SECRET_QUERY_KEY.search(key):
            found += [value] if isinstance(value, str) else list(value)
    return [value for value in found if value]


def describe_url(url: str) -> str:
    """The URL without its secrets (the password, and `?password=`-style query parameters: ***), for logs and
    errors."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - shown as a bare scheme: it may hold anything
        return str(url).split("://", 1)[0] + "://***"
    return _SECRET_QUERY_VALUE.sub(r"\1***", parsed.render_as_string(hide_password=True))


def mask_url_secrets(text: str, url: str) -> str:
    """`text` (a driver's error message ...) with every secret of `url` replaced by ***."""
    for secret in sorted(url_secrets(url), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _sqlite_engine(url: str) -> Engine:
    database = url.split(":///", 1)[1]
    path = Path(database)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():  # patient data: owner only (the WAL and shm files inherit this mode)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 60, "isolation_level": None})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection):
        # writers take the write lock up front (no deadlock on upgrade from reader to writer, across processes)
        connection.exec_driver_sql("BEGIN " + connection.get_execution_options().get("sqlite_begin", "IMMEDIATE"))

    return engine


def _sqlite_reader(path: Path) -> Engine:
    """A read-only engine on an existing SQLite state (`dicomnode status` on a full or read-only disk): it writes
    nothing, not even the WAL index, where the folder cannot take it (then it reads the file as it is on disk)."""

    def connect() -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False,
                                         timeout=60, isolation_level=None)
            connection.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            return connection
        except sqlite3.OperationalError:  # no -shm/-wal and none can be made (read-only file system)
            return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True,
                                   check_same_thread=False, timeout=60, isolation_level=None)

    return create_engine("sqlite://", creator=connect)


@functools.lru_cache(maxsize=512)
def _statement(sql: str, expanding: tuple[str, ...] = ()) -> TextClause:
    """The parsed statement for `sql`, made once (parsing bind parameters costs more than a receive's SQL runs)."""
    statement = text(sql)
    if expanding:
        statement = statement.bindparams(*(bindparam(name, expanding=True) for name in expanding))
    return statement


class StateDB:
    """The state database. `location`: a SQLite file path or a database URL (see :func:`state_url`).

    `upgrade`: create or migrate the schema on open (default: yes for SQLite, which keeps the single-machine node
    working without a step; no for PostgreSQL, where `dicomnode state upgrade` does it once for all processes).
    `check`: refuse a schema of another version (off only for `dicomnode state upgrade` itself).
    `process_id`: the name claims and heartbeats are recorded under (default host:pid).
    `heartbeat_seconds`: how often the processes beat (`[state] heartbeat_seconds`), what a stale one is measured by.
    `readonly`: only read (SQLite: the file opened read-only, nothing created, no upgrade): what `dicomnode status`
    falls back to on a full or read-only disk; a write raises.
    Raises StateSchemaError when the schema is missing or of another version.
    """

    def __init__(self, location: str | os.PathLike, *, upgrade: bool | None = None, check: bool = True,
                 process_id: str | None = None, lease_seconds: float = DEFAULT_LEASE_SECONDS,
                 heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS, readonly: bool = False,
                 connect_timeout: float | None = None):
        self.url = state_url(location)
        #: outages met by this process's loops, said once (see OutageMonitor); every statement that works ends one
        self.outage = OutageMonitor()
        self.is_sqlite = self.url.startswith("sqlite")
        self.path = Path(self.url.split(":///", 1)[1]) if self.is_sqlite else None
        self.process_id = process_id or default_process_id()
        self.writable = not readonly
        self.lease_seconds = lease_seconds
        self.heartbeat_seconds = heartbeat_seconds
        if self.is_sqlite and readonly:
            if not self.path.is_file():
                raise FileNotFoundError(f"no node state at {self.path}")
            self.engine = _sqlite_reader(self.path)
            upgrade = False
        elif self.is_sqlite:
            self.engine = _sqlite_engine(self.url)
        else:
            # connect_timeout: a check that must not hang on an unreachable host (`config check`); libpq's default
            # waits for the operating system's TCP timeout
            connect_args = {} if connect_timeout is None else {"connect_timeout": max(1, round(connect_timeout))}
            self.engine = create_engine(self.url, pool_pre_ping=True, pool_size=8, max_overflow=8,
                                        connect_args=connect_args)
        self._for_update = "" if self.is_sqlite else " FOR UPDATE"
        self._skip_locked = "" if self.is_sqlite else " FOR UPDATE SKIP LOCKED"
        self._bytewise = "" if self.is_sqlite else ' COLLATE "C"'  # SQLite's BINARY is bytewise already
        # SQLite: this process's writers queue on _write_lock, and the processes sharing the file on an flock of
        # <state>.writelock: both wake the next writer when the lock is freed, where SQLite's own busy handler
        # sleeps 1-100 ms between tries (two receiving processes halved the receive rate on it)
        self._write_lock = threading.RLock() if self.is_sqlite else nullcontext()
        self._write_depth = 0
        self._process_lock_fd: int | None = None
        if self.is_sqlite and not readonly:
            self._process_lock_fd = os.open(f"{self.path}.writelock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if upgrade if upgrade is not None else self.is_sqlite:
            upgrade_schema(self.engine)
        elif check:
            try:
                self.check_schema()
            except StateSchemaError:
                self.engine.dispose()
                raise

    def check_schema(self) -> None:
        """Raises StateSchemaError unless the schema is this code's SCHEMA_VERSION, saying what to do (see
        schema_mismatch)."""
        version = schema_version(self.engine)
        if version != SCHEMA_VERSION:
            raise StateSchemaError(schema_mismatch(f"state database {describe_url(self.url)}", version))

    def heartbeat_rows(self) -> list[RowMapping]:
        """Every heartbeat row (node_id, host, pid, roles, last_seen, detail_json), read on any schema version
        (before an upgrade too); none where the database has no `nodes` table yet."""
        with self.engine.connect() as connection:
            if not inspect(connection).has_table("nodes"):
                return []
            return list(connection.execute(text(
                "SELECT node_id, host, pid, roles, last_seen, detail_json FROM nodes")).mappings())

    def close(self) -> None:
        self.engine.dispose()
        if self._process_lock_fd is not None:
            os.close(self._process_lock_fd)
            self._process_lock_fd = None

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        started = time.time()
        with self._write_lock, self._process_lock(), self.engine.begin() as connection:
            yield connection
        self.outage.succeeded(started)  # committed: an outage this process met is over (said once)

    @contextmanager
    def _process_lock(self) -> Iterator[None]:
        """SQLite: hold the file's writer lock among processes (counted, as _write_lock is re-entrant)."""
        if self._process_lock_fd is None:
            yield
            return
        if self._write_depth == 0:
            fcntl.flock(self._process_lock_fd, fcntl.LOCK_EX)
        self._write_depth += 1
        try:
            yield
        finally:
            self._write_depth -= 1
            if self._write_depth == 0:
                fcntl.flock(self._process_lock_fd, fcntl.LOCK_UN)

    def _rows(self, sql: str, params: dict | None = None, *, expanding: Sequence[str] = ()) -> list[RowMapping]:
        started = time.time()
        with self.engine.connect().execution_options(sqlite_begin="DEFERRED") as connection:
            rows = list(connection.execute(_statement(sql, tuple(expanding)), params or {}).mappings().all())
        self.outage.succeeded(started)
        return rows

    @staticmethod
    def _run(connection: Connection, sql: str, params: dict | None = None, *, expanding: Sequence[str] = ()):
        return connection.execute(_statement(sql, tuple(expanding)), params or {})

    # --- the spool this state belongs to ----------------------------------------------------------------------

    def spool_identity(self) -> dict | None:
        """The spool this state indexes (meta key `spool`): {"id", "storage_dir", "host", "recorded_at"} as the
        first process that served recorded it (spool.verify_spool_identity), or None (none recorded yet)."""
        rows = self._rows("SELECT value FROM meta WHERE key='spool'")
        return json.loads(rows[0]["value"]) if rows else None

    def record_spool_identity(self, spool_id: str, storage_dir: str | os.PathLike) -> dict:
        """Record `spool_id` as the state's spool unless one is recorded already; returns the recorded one (another
        process's, when it was first)."""
        value = json.dumps({"id": spool_id, "storage_dir": str(storage_dir), "host": socket.gethostname(),
                            "recorded_at": time.strftime("%Y-%m-%d %H:%M:%S")})
        with self._write() as db:
            self._run(db, "INSERT INTO meta(key, value) VALUES ('spool', :v) ON CONFLICT (key) DO NOTHING",
                      {"v": value})
            recorded = self._run(db, "SELECT value FROM meta WHERE key='spool'").scalar_one()
        if recorded == value:
            log.info("recorded spool %s (%s, its spool.id) as the spool the state %s indexes", spool_id, storage_dir,
                     describe_url(self.url))
        return json.loads(recorded)

    # --- how the single node's receiver last stopped -----------------------------------------------------------

    def record_receiver_stopped(self) -> None:
        """A single node's receiver stopped cleanly (meta key `receiver_stopped`): its associations were ended and
        the transfers that stop cut were marked interrupted (studies.record_interruption); the next start need not
        take every study still receiving for a cut one (take_receiver_stopped)."""
        value = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "at": time.time()})
        with self._write() as db:
            self._run(db, "DELETE FROM meta WHERE key='receiver_stopped'")
            self._run(db, "INSERT INTO meta(key, value) VALUES ('receiver_stopped', :v)", {"v": value})

    def take_receiver_stopped(self) -> dict | None:
        """At a single node's start: the record of its receiver's clean stop ({"host", "pid", "at"}), removed so that
        a crash of this run is not taken for a clean stop; None after a crash, kill -9 or a stop that could not mark
        what it cut."""
        with self._write() as db:
            rows = self._run(db, "SELECT value FROM meta WHERE key='receiver_stopped'").mappings().all()
            self._run(db, "DELETE FROM meta WHERE key='receiver_stopped'")
        return json.loads(rows[0]["value"]) if rows else None

    # --- instances sent again with other content and not stored (net.scp.DifferentResends) ---------------------

    def save_different_resends(self, items: list[dict], now: float | None = None) -> None:
        """Keep this process's DifferentResends items (net.scp.DifferentResends.recent: one per study and sender,
        with the count, what differs and when) in the state, so that `dicomnode status` still lists them after this
        process stops or restarts (they were in its heartbeat only, lost with it): meta key
        `different_resends:<process hash>`, JSON {"process", "items"}; none: the key removed. Rows of any process
        whose newest item is older than RESENDS_KEPT_SECONDS are removed on the way."""
        now = time.time() if now is None else now
        key = RESENDS_KEY_PREFIX + short_hash(self.process_id, 24)
        with self._write() as db:
            if items:
                self._run(db, "INSERT INTO meta(key, value) VALUES (:k, :v) ON CONFLICT (key) DO UPDATE SET "
                              "value=excluded.value",
                          {"k": key, "v": json.dumps({"process": self.process_id, "items": items})})
            else:
                self._run(db, "DELETE FROM meta WHERE key=:k", {"k": key})
            for row in self._run(db, "SELECT key, value FROM meta WHERE key LIKE :p",
                                 {"p": RESENDS_KEY_PREFIX + "%"}).mappings().all():
                if not _recent_resends(row["value"], now):
                    self._run(db, "DELETE FROM meta WHERE key=:k", {"k": row["key"]})

    def saved_different_resends(self, now: float | None = None) -> list[dict]:
        """Every process's saved DifferentResends items (save_different_resends) of the last RESENDS_KEPT_SECONDS:
        [{"process", "items"}], items newest first; [] where none (or a row cannot be read)."""
        now = time.time() if now is None else now
        found = []
        for row in self._rows("SELECT value FROM meta WHERE key LIKE :p", {"p": RESENDS_KEY_PREFIX + "%"}):
            saved = _recent_resends(row["value"], now)
            if saved:
                found.append(saved)
        return found

    # --- whether this state's receivers record the studies their open associations send -----------------------

    def note_receivers_recorded(self) -> bool:
        """A process of this release starts (meta key `receiving_recorded`, set once): from now on every receiving
        process lists in its heartbeat the studies its open associations send (detail.receiving), so that what a
        crash cut can be told. True the first time: the studies still receiving were received by an older release,
        which kept no such record (roles.RoleRunner marks them interrupted)."""
        if self._rows("SELECT value FROM meta WHERE key='receiving_recorded'"):
            return False  # read first: a start on a full disk writes nothing here
        with self._write() as db:
            added = self._run(db, "INSERT INTO meta(key, value) VALUES ('receiving_recorded', :v)"
                                  " ON CONFLICT (key) DO NOTHING", {"v": repr(time.time())}).rowcount
        return bool(added)

    def newest_instance_paths(self, limit: int) -> tuple[int, list[str]]:
        """(how many instances are indexed, the spool-relative paths of the newest `limit` of them)."""
        count = int(self._rows("SELECT COUNT(*) AS n FROM instances")[0]["n"])
        paths = [r["path"] for r in self._rows("SELECT path FROM instances ORDER BY received_at DESC LIMIT :n",
                                               {"n": limit})] if count else []
        return count, paths

    # --- instances -------------------------------------------------------------------------------------------

    def instance_path(self, sop_instance_uid: str) -> str | None:
        """The spool-relative path the instance is indexed under, or None when it is not indexed."""
        rows = self._rows("SELECT path FROM instances WHERE sop_instance_uid=:sop", {"sop": sop_instance_uid})
        return rows[0]["path"] if rows else None

    def study_key_of_uid(self, study_instance_uid: str) -> str | None:
        """The study key the first indexed instance of this Study Instance UID has (of a study not being purged), or
        None when none is indexed (net.scp.StudyKeys: every later instance of the UID joins that key)."""
        rows = self._rows("SELECT i.study_key FROM instances i JOIN studies s ON s.study_key=i.study_key"
                          " WHERE i.study_instance_uid=:uid AND s.state<>:purging ORDER BY i.received_at LIMIT 1",
                          {"uid": study_instance_uid, "purging": PURGING})
        return rows[0]["study_key"] if rows else None

    def has_instance(self, sop_instance_uid: str) -> bool:
        """Whether the instance is stored (one of a study being purged is not: its file is about to go)."""
        return bool(self._rows("SELECT 1 FROM instances i JOIN studies s ON s.study_key=i.study_key"
                               " WHERE i.sop_instance_uid=:sop AND s.state<>:purging",
                               {"sop": sop_instance_uid, "purging": PURGING}))

    def held_instances(self, sop_instance_uids: Sequence[str]) -> set[str]:
        """Which of these SOP Instance UIDs are stored (has_instance for many: one query per 500)."""
        uids = list(sop_instance_uids)
        held: set[str] = set()
        for start in range(0, len(uids), 500):  # under every backend's limit of bound parameters
            rows = self._rows("SELECT i.sop_instance_uid FROM instances i JOIN studies s ON s.study_key=i.study_key"
                              " WHERE i.sop_instance_uid IN :sops AND s.state<>:purging",
                              {"sops": uids[start:start + 500], "purging": PURGING}, expanding=("sops",))
            held.update(row["sop_instance_uid"] for row in rows)
        return held

    def add_instance(self, row: InstanceRow, calling_host: str | None = None, *, reopens: bool = True) -> StoreOutcome:
        """Index one durable instance and advance its study; a late instance re-opens a finished study when
        `reopens` (an image the analysis reads), otherwise it is indexed and the study stays as it is (e.g. the
        node's own SEG / SR / PDF routed back by the PACS, or a radiologist's key object: no re-analysis loop).

        Safe with several receivers: the instance row and the study row are inserted with ON CONFLICT, and an
        existing study is locked before its generation is read. Raises StudyPurging (nothing recorded) for an
        instance of a study that retention is purging: its files are going; sent again after the purge, it starts
        a new study.
        """
        now = time.time()
        with self._write() as db:
            inserted = self._run(db, (
                "INSERT INTO instances(sop_instance_uid, study_key, study_instance_uid, series_instance_uid,"
                " sop_class_uid, transfer_syntax, modality, path, size, calling_ae, received_at, series_number,"
                " slice_key, cardiac_images, frames, images_in_acquisition, series_continues, calling_host)"
                " VALUES (:sop_instance_uid, :study_key, :study_instance_uid, :series_instance_uid,"
                " :sop_class_uid, :transfer_syntax, :modality, :path, :size, :calling_ae, :received_at, :series_number,"
                " :slice_key, :cardiac_images, :frames, :images_in_acquisition, :series_continues, :calling_host)"
                " ON CONFLICT (sop_instance_uid) DO NOTHING RETURNING sop_instance_uid"),
                {**row.__dict__, "calling_host": calling_host}).first()
            if inserted is None:
                study = self._run(db, "SELECT state, generation FROM studies WHERE study_key=:k",
                                  {"k": row.study_key}).mappings().first()
                if self._run(db, "SELECT 1 FROM instances i JOIN studies s ON s.study_key=i.study_key"
                                 " WHERE i.sop_instance_uid=:sop AND s.state=:purging",
                             {"sop": row.sop_instance_uid, "purging": PURGING}).first() is not None:
                    raise StudyPurging(row.study_key)
                return StoreOutcome(False, row.study_key, study["state"] if study else None,
                                    study["generation"] if study else 0)
            return self._advance_study(db, row, calling_host, reopens, now)

    def replace_instance(self, row: InstanceRow, calling_host: str | None = None) -> StoreOutcome:
        """Index `row` in place of the instance already indexed under its SOP Instance UID (its file was replaced:
        Spool.replace, a lossless copy for a lossy one) and advance the study as for a late image (add_instance):
        a finished study re-opens as a new generation. Raises StudyPurging (nothing recorded) while retention purges
        the study, KeyError when the SOP Instance UID is not indexed."""
        now = time.time()
        with self._write() as db:
            if self._run(db, "SELECT 1 FROM instances i JOIN studies s ON s.study_key=i.study_key"
                             " WHERE i.sop_instance_uid=:sop AND s.state=:purging",
                         {"sop": row.sop_instance_uid, "purging": PURGING}).first() is not None:
                raise StudyPurging(row.study_key)
            updated = self._run(db, (
                "UPDATE instances SET transfer_syntax=:transfer_syntax, path=:path, size=:size, calling_ae=:calling_ae,"
                " received_at=:received_at, calling_host=:calling_host WHERE sop_instance_uid=:sop_instance_uid"
                " RETURNING sop_instance_uid"), {"transfer_syntax": row.transfer_syntax, "path": row.path,
                                                 "size": row.size, "calling_ae": row.calling_ae,
                                                 "received_at": row.received_at, "calling_host": calling_host,
                                                 "sop_instance_uid": row.sop_instance_uid}).first()
            if updated is None:
                raise KeyError(row.sop_instance_uid)
            return self._advance_study(db, row, calling_host, True, now)

    def _advance_study(self, db, row: InstanceRow, calling_host: str | None, reopens: bool, now: float) -> StoreOutcome:
        """add_instance's study step, in its transaction `db`, after the instance row was written."""
        # the usual case, a study still receiving: one statement (its generation and state do not change); an
        # instance stored again ends a refusal's "incomplete: ..." reason (the sender is sending again)
        receiving = self._run(db, (
            "UPDATE studies SET last_received=:now, updated_at=:now, reason=CASE WHEN"
            " substr(reason, 1, :n)=:incomplete THEN NULL ELSE reason END WHERE study_key=:k AND state=:state"
            " RETURNING generation"), {"now": now, "k": row.study_key, "state": RECEIVED,
                                       "incomplete": INCOMPLETE_PREFIX, "n": len(INCOMPLETE_PREFIX)}).first()
        if receiving is not None:
            return StoreOutcome(True, row.study_key, RECEIVED, receiving[0])
        created = self._run(db, (
            "INSERT INTO studies(study_key, study_instance_uid, state, calling_ae, calling_host, first_received,"
            " last_received, updated_at, generation) VALUES (:k, :uid, :state, :ae, :host, :now, :now, :now, 0)"
            " ON CONFLICT (study_key) DO NOTHING RETURNING study_key"),
            {"k": row.study_key, "uid": row.study_instance_uid, "state": RECEIVED, "ae": row.calling_ae,
             "host": calling_host, "now": now}).first()
        if created is not None:
            return StoreOutcome(True, row.study_key, None, 0)
        study = self._run(db, "SELECT state, generation FROM studies WHERE study_key=:k" + self._for_update,
                          {"k": row.study_key}).mappings().one()
        if study["state"] == PURGING:  # raising rolls the instance row back
            raise StudyPurging(row.study_key)
        if not reopens:
            return StoreOutcome(True, row.study_key, study["state"], study["generation"], reopened=False)
        generation = study["generation"] + (study["state"] != RECEIVED)
        self._run(db, (
            "UPDATE studies SET state=:state, reason=NULL, last_received=:now, updated_at=:now, generation=:g,"
            " claimed_by=NULL, lease_until=NULL WHERE study_key=:k"),
            {"state": RECEIVED, "now": now, "g": generation, "k": row.study_key})
        return StoreOutcome(True, row.study_key, study["state"], generation)

    def study_instances(self, study_key: str) -> list[RowMapping]:
        return self._rows("SELECT * FROM instances WHERE study_key=:k ORDER BY received_at", {"k": study_key})

    def study_senders(self, study_key: str, study_instance_uid: str | None = None,
                      sop_classes: Sequence[str] | None = None) -> list[tuple[str, str]]:
        """The distinct (calling AE title, calling host) pairs that sent the study's instances (of
        `study_instance_uid` within the key, of `sop_classes` only, when given), in the order they first arrived.
        Instances indexed before schema v4 recorded no host: for those the study's first sender is given, as then."""
        rows = self._rows("SELECT i.calling_ae, i.calling_host, i.sop_class_uid, i.study_instance_uid, s.calling_host"
                          " AS study_host FROM instances i JOIN studies s ON s.study_key=i.study_key"
                          " WHERE i.study_key=:k ORDER BY i.received_at", {"k": study_key})
        senders: dict[tuple[str, str], None] = {}
        for row in rows:
            if study_instance_uid is not None and row["study_instance_uid"] != study_instance_uid:
                continue
            if sop_classes is not None and row["sop_class_uid"] not in sop_classes:
                continue
            host = row["calling_host"] or row["study_host"]
            if host:
                senders[(row["calling_ae"] or "", host)] = None
        return list(senders)

    def instance_counts(self) -> dict[str, int]:
        """{study_key: number of indexed instances} over every study, in one query."""
        return {r["study_key"]: int(r["n"]) for r in self._rows(
            "SELECT study_key, COUNT(*) AS n FROM instances GROUP BY study_key")}

    def stored_bytes(self) -> int:
        """Sum of the sizes of every indexed instance (bytes)."""
        rows = self._rows("SELECT COALESCE(SUM(size), 0) AS n FROM instances")
        return int(rows[0]["n"])

    # --- studies ---------------------------------------------------------------------------------------------

    def study(self, study_key: str) -> RowMapping | None:
        rows = self._rows("SELECT * FROM studies WHERE study_key=:k", {"k": study_key})
        return rows[0] if rows else None

    def find_studies(self, text_: str) -> list[RowMapping]:
        """Studies whose key or Study Instance UID equals `text_` or whose key starts with it, else those whose log
        id (uids.short_hash of a Study Instance UID: what the logs and `dicomnode status` print) starts with `text_`.

        A key that groups several studies (`studies.grouping_key`) is found by the Study Instance UID of any of them
        and by any of their log ids, as its instances record them.
        """
        found = self._rows(
            "SELECT * FROM studies WHERE study_key=:t OR study_instance_uid=:t OR study_key LIKE :prefix"
            " ORDER BY first_received", {"t": text_, "prefix": text_.replace("%", "") + "%"})
        if found:
            return found
        if not re.fullmatch(r"[0-9a-f]{6,64}", text_):
            return self._rows("SELECT * FROM studies WHERE study_key IN (SELECT study_key FROM instances"
                              " WHERE study_instance_uid=:t) ORDER BY first_received", {"t": text_})
        members = self._rows("SELECT DISTINCT study_key, study_instance_uid FROM instances")
        keys = {m["study_key"] for m in members
                if m["study_instance_uid"] == text_ or short_hash(m["study_instance_uid"], 64).startswith(text_)}
        return [row for row in self.studies()
                if row["study_key"] in keys or short_hash(row["study_instance_uid"] or "", 64).startswith(text_)]

    def studies(self, states: tuple[str, ...] | None = None) -> list[RowMapping]:
        if states is None:
            return self._rows("SELECT * FROM studies ORDER BY first_received")
        return self._rows("SELECT * FROM studies WHERE state IN :states ORDER BY first_received",
                          {"states": list(states)}, expanding=["states"])

    def studies_updated_before(self, states: tuple[str, ...], cutoff: float | None = None,
                               undelivered: bool | None = None) -> list[str]:
        """Keys of studies in `states` oldest change first; only those changed before `cutoff` (epoch s) if given;
        `undelivered` True / False: only studies with / without a result object not delivered, pending or dead
        (None: either); superseded items (never to be sent) do not count."""
        sql = "SELECT study_key FROM studies WHERE state IN :states"
        params: dict = {"states": list(states)}
        expanding = ["states"]
        if cutoff is not None:
            sql += " AND updated_at < :cutoff"
            params["cutoff"] = cutoff
        if undelivered is not None:
            sql += (" AND " + ("" if undelivered else "NOT ") + "EXISTS (SELECT 1 FROM outbox"
                    " WHERE outbox.study_key=studies.study_key AND outbox.state IN :undelivered)")
            params["undelivered"] = list(OUTBOX_UNDELIVERED)
            expanding.append("undelivered")
        return [r["study_key"] for r in self._rows(sql + " ORDER BY updated_at", params, expanding=expanding)]

    def count_studies(self, states: tuple[str, ...]) -> int:
        return int(self._rows("SELECT COUNT(*) AS n FROM studies WHERE state IN :states", {"states": list(states)},
                              expanding=["states"])[0]["n"])

    def set_study_state(
        self, study_key: str, state: str, reason: str | None = None, *, expect: tuple[str, ...] | None = None,
        generation: int | None = None, set_generation: int | None = None, **columns,
    ) -> bool:
        """Move a study to `state`; with `expect`/`generation`, only from those states / that generation.

        `set_generation`: the generation it then has (unchanged when None). `columns`: other columns of the studies
        table to set (e.g. updated_at). Leaving ANALYSING drops the claim.
        """
        assert state in STUDY_STATES
        unknown = set(columns) - set(METADATA.tables["studies"].columns.keys())
        if unknown:
            raise ValueError(f"set_study_state: unknown column(s) {sorted(unknown)}")
        values = {"state": state, "reason": reason, "updated_at": time.time()}
        if state != ANALYSING:
            values.update(claimed_by=None, lease_until=None)
        values.update(columns)
        if set_generation is not None:
            values["generation"] = set_generation
        sets = ", ".join(f"{name}=:set_{name}" for name in values)
        params = {f"set_{name}": value for name, value in values.items()}
        params["k"] = study_key
        where = "study_key=:k"
        expanding = []
        if expect:
            where += " AND state IN :expect"
            params["expect"] = list(expect)
            expanding.append("expect")
        if generation is not None:
            where += " AND generation=:g"
            params["g"] = generation
        with self._write() as db:
            return self._run(db, f"UPDATE studies SET {sets} WHERE {where}", params, expanding=expanding).rowcount == 1

    def counts_by_state(self) -> dict[str, int]:
        return {r["state"]: r["n"] for r in self._rows("SELECT state, COUNT(*) AS n FROM studies GROUP BY state")}

    def begin_purge(self, study_key: str, purgeable: tuple[str, ...]) -> RowMapping | None:
        """Step 1 of a purge, committed on its own before any file goes: a study in `purgeable` states with no
        result object undelivered (pending or dead, whatever its state) becomes PURGING (its `updated_at`: when the
        purge began); returns the study row as it was before, or None (nothing done) when it is not purgeable."""
        now = time.time()
        with self._write() as db:
            study = self._run(db, "SELECT * FROM studies WHERE study_key=:k" + self._for_update,
                              {"k": study_key}).mappings().first()
            if study is None or study["state"] not in purgeable or self._undelivered(db, study_key):
                return None
            self._run(db, "UPDATE studies SET state=:purging, reason=:r, updated_at=:now, claimed_by=NULL,"
                          " lease_until=NULL WHERE study_key=:k",
                      {"purging": PURGING, "r": f"retention purge of a {study['state']} study", "now": now,
                       "k": study_key})
            return study

    def finish_purge(self, study_key: str) -> RowMapping | None:
        """Step 3 of a purge, after its files are gone: a PURGING study's rows are deleted, leaving the tombstone
        of its finished analyses' result objects (`purged_reports`), each with its Study Instance UID (the analysis
        summary's study that lists it in `outputs`, else the key's one study; NULL where the key held several and
        the summary does not say) and the destinations its outbox rows delivered it to (`sent`); returns the study
        row, or None when the study is not PURGING (another process finished it)."""
        now = time.time()
        with self._write() as db:
            study = self._run(db, "SELECT * FROM studies WHERE study_key=:k" + self._for_update,
                              {"k": study_key}).mappings().first()
            if study is None or study["state"] != PURGING:
                return None
            studies = {row[0] for row in self._run(db, "SELECT DISTINCT study_instance_uid FROM instances"
                                                       " WHERE study_key=:k", {"k": study_key})}
            only = next(iter(studies)) if len(studies) == 1 else None
            delivered: dict[str, set[str]] = {}
            for sop, destination in self._run(db, "SELECT sop_instance_uid, destination FROM outbox WHERE"
                                                  " study_key=:k AND state=:sent", {"k": study_key, "sent": OUTBOX_SENT}):
                delivered.setdefault(sop, set()).add(destination)
            results = self._run(db, (
                "SELECT r.sop_instance_uid, r.series_instance_uid, r.sop_class_uid, r.path, a.summary_json"
                " FROM results r JOIN analyses a ON a.id=r.analysis_id WHERE r.study_key=:k AND a.state='done'"),
                {"k": study_key}).mappings().all()
            summaries: dict[str | None, dict[str, str]] = {}
            for row in results:
                if row["summary_json"] not in summaries:
                    summaries[row["summary_json"]] = _output_studies(row["summary_json"])
                self._run(db, (
                    "INSERT INTO purged_reports(sop_instance_uid, study_key, series_instance_uid, sop_class_uid, path,"
                    " purged_at, study_instance_uid, destinations) VALUES (:sop, :k, :series, :cls, :path, :now,"
                    " :study, :destinations) ON CONFLICT (sop_instance_uid) DO NOTHING"),
                    {"sop": row["sop_instance_uid"], "k": study_key, "series": row["series_instance_uid"],
                     "cls": row["sop_class_uid"], "path": row["path"], "now": now,
                     "study": summaries[row["summary_json"]].get(row["path"]) or only,
                     "destinations": json.dumps(sorted(delivered.get(row["sop_instance_uid"], ())))})
            for table in ("outbox", "results", "analyses", "instances", "studies"):
                self._run(db, f"DELETE FROM {table} WHERE study_key=:k", {"k": study_key})
            self._note_purged_received(db, study_key, sorted(studies) or [study["study_instance_uid"]],
                                       study["last_received"], now)
            return study

    def _note_purged_received(self, db: Connection, study_key: str, study_instance_uids: list[str],
                              last_received: float, now: float) -> None:
        """Keep when a purged study's last instance was received (meta key `purged_received:<purge epoch s>:<key
        hash>`, _purged_received_key, JSON {"study_key", "study_instance_uids", "last_received", "purged_at"}, epoch
        s) for RESENDS_KEPT_SECONDS: a study refused (0xA700), then sent again and purged, is not asked for again
        (roles.refused_studies). Older keys are removed on the way, by a range of the primary key: no row is read,
        so that a sweep purging thousands of studies does not hold the write lock for a square of them. The prefix
        is matched by substr (LIKE's '_' is a wildcard) and the purge second compared bytewise (COLLATE "C" on
        PostgreSQL, whose database collation, e.g. en_US.UTF-8, orders punctuation apart from the bytes). Keys of the
        earlier form (`purged_received:<key hash>`, no purge second) are read and pruned once expired: no new ones
        are written."""
        self._run(db, "INSERT INTO meta(key, value) VALUES (:k, :v) ON CONFLICT (key) DO UPDATE SET "
                      "value=excluded.value",
                  {"k": _purged_received_key(now, study_key),
                   "v": json.dumps({"study_key": study_key, "study_instance_uids": study_instance_uids,
                                    "last_received": last_received, "purged_at": now})})
        self._run(db, f"DELETE FROM meta WHERE substr(key, 1, :n) = :prefix AND substr(key, :end, 1) = ':' AND "
                      f"key{self._bytewise} < :expired",
                  {"n": len(PURGED_RECEIVED_KEY_PREFIX), "prefix": PURGED_RECEIVED_KEY_PREFIX,
                   "end": _PURGED_RECEIVED_SECOND_END, "expired": _purged_received_key(now - RESENDS_KEPT_SECONDS)})
        for row in self._run(db, "SELECT key, value FROM meta WHERE substr(key, 1, :n) = :prefix AND "
                                 "substr(key, :end, 1) <> ':'",
                             {"n": len(PURGED_RECEIVED_KEY_PREFIX), "prefix": PURGED_RECEIVED_KEY_PREFIX,
                              "end": _PURGED_RECEIVED_SECOND_END}).mappings().all():
            if _purged_received(row["value"], now) is None:
                self._run(db, "DELETE FROM meta WHERE key=:k", {"k": row["key"]})

    def purged_last_received(self, now: float | None = None) -> dict[str, float]:
        """Study Instance UID -> when the last instance of a study purged within RESENDS_KEPT_SECONDS was received
        (epoch s; the latest where it was purged more than once): what the studies table no longer says. {} where
        none."""
        now = time.time() if now is None else now
        found: dict[str, float] = {}
        for row in self._rows("SELECT value FROM meta WHERE substr(key, 1, :n) = :prefix",
                              {"n": len(PURGED_RECEIVED_KEY_PREFIX), "prefix": PURGED_RECEIVED_KEY_PREFIX}):
            saved = _purged_received(row["value"], now)
            for uid in (saved or {}).get("study_instance_uids", ()):
                found[uid] = max(found.get(uid, 0.0), saved["last_received"])
        return found

    def note_purge(self, study_key: str, reason: str) -> None:
        """A PURGING study's purge cannot finish yet (retention keeps files written since it began): its rows stay,
        `reason` says why (status shows it); its `updated_at`, when the purge began, is kept."""
        with self._write() as db:
            self._run(db, "UPDATE studies SET reason=:r WHERE study_key=:k AND state=:purging",
                      {"r": reason, "k": study_key, "purging": PURGING})

    def _undelivered(self, db: Connection, study_key: str) -> int:
        """How many of the study's result objects are not delivered: pending or dead (superseded ones never go)."""
        return int(self._run(db, "SELECT COUNT(*) FROM outbox WHERE study_key=:k AND state IN :undelivered",
                             {"k": study_key, "undelivered": list(OUTBOX_UNDELIVERED)},
                             expanding=["undelivered"]).scalar_one())

    def purged_reports(self, study_key: str) -> list[RowMapping]:
        """The tombstones of a study's earlier purges: result objects that were delivered, then purged."""
        return self._rows("SELECT * FROM purged_reports WHERE study_key=:k ORDER BY purged_at, sop_instance_uid",
                          {"k": study_key})

    def purged_studies(self, text_: str) -> list[RowMapping]:
        """Purged studies (only their tombstone left, purged_reports) whose key or Study Instance UID equals `text_`,
        or whose key or log id starts with it (as find_studies): study_key and purged_at (epoch s, the latest purge)."""
        found = self._rows(
            "SELECT study_key, MAX(purged_at) AS purged_at FROM purged_reports WHERE study_key=:t OR study_key LIKE"
            " :prefix GROUP BY study_key ORDER BY study_key", {"t": text_, "prefix": text_.replace("%", "") + "%"})
        if found or not re.fullmatch(r"[0-9a-f]{6,64}", text_):
            return found
        return [row for row in self._rows("SELECT study_key, MAX(purged_at) AS purged_at FROM purged_reports"
                                          " GROUP BY study_key ORDER BY study_key")
                if short_hash(row["study_key"], 64).startswith(text_)]

    def study_files(self, study_key: str) -> list[str]:
        """Relative paths of a study's instances and result objects."""
        return [r["path"] for r in self._rows("SELECT path FROM instances WHERE study_key=:k UNION ALL "
                                              "SELECT path FROM results WHERE study_key=:k", {"k": study_key})]

    def row_count(self, study_key: str) -> int:
        """Rows of a study over every table but its tombstones (0 after a purge)."""
        return sum(int(self._rows(f"SELECT COUNT(*) AS n FROM {table} WHERE study_key=:k", {"k": study_key})[0]["n"])
                   for table in ("studies", "instances", "analyses", "results", "outbox"))

    # --- analyses: claims ------------------------------------------------------------------------------------

    def _claim_study(self, db: Connection, study_key: str, generation: int, now: float) -> bool:
        """The atomic claim: COMPLETE, or ANALYSING by us, unclaimed, or with an expired lease."""
        return self._run(db, (
            "UPDATE studies SET state=:analysing, updated_at=:now, claimed_by=:me, lease_until=:until"
            " WHERE study_key=:k AND generation=:g AND (state=:complete OR (state=:analysing AND"
            " (claimed_by IS NULL OR claimed_by=:me OR lease_until < :now)))"),
            {"analysing": ANALYSING, "complete": COMPLETE, "now": now, "me": self.process_id,
             "until": now + self.lease_seconds, "k": study_key, "g": generation}).rowcount == 1

    def claim_next_study(self, skip: Collection[tuple[str, int]] = ()) -> tuple[str, int] | None:
        """Claim the oldest complete study (or one whose worker's lease expired); (study_key, generation) or None.
        `skip`: (study_key, generation) this process is not to claim now (Node.paused_studies).

        PostgreSQL: FOR UPDATE SKIP LOCKED, so concurrent workers skip each other's candidates; SQLite: the
        BEGIN IMMEDIATE transaction makes the select-then-update atomic across processes.
        """
        now = time.time()
        with self._write() as db:
            candidates = self._run(db, (
                "SELECT study_key, generation FROM studies WHERE state=:complete OR (state=:analysing AND"
                " (claimed_by IS NULL OR lease_until < :now)) ORDER BY updated_at LIMIT :n" + self._skip_locked),
                {"complete": COMPLETE, "analysing": ANALYSING, "now": now, "n": 4 + len(skip)}).mappings().all()
            for row in candidates:
                if (row["study_key"], row["generation"]) in skip:
                    continue
                if self._claim_study(db, row["study_key"], row["generation"], now):
                    return row["study_key"], row["generation"]
        return None

    def start_analysis(self, study_key: str, generation: int) -> int | None:
        """Claim the study for this process and open an analysis row; None if it moved on or another holds it."""
        now = time.time()
        with self._write() as db:
            if not self._claim_study(db, study_key, generation, now):
                return None
            self._run(db, "UPDATE analyses SET state='abandoned', finished_at=:now WHERE study_key=:k AND state='running'",
                      {"now": now, "k": study_key})
            row = self._run(db, (
                "INSERT INTO analyses(study_key, generation, state, started_at, worker)"
                " VALUES (:k, :g, 'running', :now, :me) RETURNING id"),
                {"k": study_key, "g": generation, "now": now, "me": self.process_id}).one()
            return int(row[0])

    def _still_ours(self, db: Connection, study_key: str, generation: int, analysis_id: int) -> bool:
        """Whether the claim under which analysis `analysis_id` runs is still this process's: the study is
        ANALYSING that generation, claimed by this process, and the analysis still running (a later claim of the
        study, even by another thread of this process, abandoned it: start_analysis)."""
        study = self._run(db, "SELECT generation, state, claimed_by FROM studies WHERE study_key=:k" + self._for_update,
                          {"k": study_key}).mappings().first()
        if (study is None or study["generation"] != generation or study["state"] != ANALYSING
                or study["claimed_by"] not in (None, self.process_id)):
            return False
        running = self._run(db, "SELECT state FROM analyses WHERE id=:id", {"id": analysis_id}).scalar()
        return running == "running"

    def release_claim(self, study_key: str, generation: int, state: str, reason: str,
                      analysis_id: int | None = None) -> bool:
        """Give back this process's claim of a study whose analysis ended unrecorded: ANALYSING -> `state`
        (COMPLETE: analysed anew; FAILED), only while the claim is still the one that analysis ran under: claimed
        by this process, that generation, and no analysis of it started by this process since (`analysis_id`, or
        none running when the claim failed before an analysis began). False, nothing changed, when the claim was
        lost (its lease expired and another worker, or another thread of this one, took the study) or the study
        moved on. Raises the database's errors."""
        now = time.time()
        with self._write() as db:
            released = self._run(db, (
                "UPDATE studies SET state=:state, reason=:r, updated_at=:now, claimed_by=NULL, lease_until=NULL"
                " WHERE study_key=:k AND generation=:g AND state=:analysing AND claimed_by=:me AND NOT EXISTS"
                " (SELECT 1 FROM analyses WHERE study_key=:k AND worker=:me AND state='running' AND id>:aid)"),
                {"state": state, "r": reason, "now": now, "k": study_key, "g": generation, "analysing": ANALYSING,
                 "me": self.process_id, "aid": analysis_id or 0}).rowcount == 1
            if released and analysis_id:  # it ended unrecorded: its files are no one's (remove_abandoned_results)
                self._run(db, "UPDATE analyses SET state='abandoned', finished_at=:now WHERE id=:aid AND"
                              " state='running'", {"now": now, "aid": analysis_id})
            return released

    def finish_analysis(
        self, analysis_id: int, study_key: str, generation: int, summary: dict,
        results: list[tuple[str, ...]], outbox: list[dict],
    ) -> bool:
        """Atomically record results + outbox and move the study on; False if superseded or the claim was lost.

        results: (sop_instance_uid, series_instance_uid, sop_class_uid, relative path)
        outbox: dicts with destination, ae_title, host, port, sop_instance_uid, path
        """
        now = time.time()
        summary_json = strict_json.dumps(summary, "the analysis summary")
        with self._write() as db:
            if not self._still_ours(db, study_key, generation, analysis_id):
                self._run(db, "UPDATE analyses SET state='superseded', finished_at=:now WHERE id=:id AND"
                              " state='running'", {"now": now, "id": analysis_id})
                return False
            for sop, series, sop_class, path, *_ in results:
                self._run(db, "INSERT INTO results VALUES (:sop, :aid, :k, :series, :cls, :path)",
                          {"sop": sop, "aid": analysis_id, "k": study_key, "series": series, "cls": sop_class,
                           "path": path})
            for item in outbox:
                self._run(db, (
                    "INSERT INTO outbox(analysis_id, study_key, destination, ae_title, host, port, sop_instance_uid,"
                    " path, state, attempts, next_attempt_at) VALUES (:aid, :k, :destination, :ae_title, :host, :port,"
                    " :sop_instance_uid, :path, :pending, 0, :now)"),
                    {"aid": analysis_id, "k": study_key, "pending": OUTBOX_PENDING, "now": now, **item})
            # what earlier analyses queued and never delivered is superseded by these results: never sent
            self._run(db, "UPDATE outbox SET state=:superseded, claimed_by=NULL, lease_until=NULL WHERE study_key=:k"
                          " AND analysis_id<>:aid AND state IN :undelivered",
                      {"superseded": OUTBOX_SUPERSEDED, "k": study_key, "aid": analysis_id,
                       "undelivered": list(OUTBOX_UNDELIVERED)}, expanding=["undelivered"])
            self._run(db, "UPDATE analyses SET state='done', finished_at=:now, summary_json=:s WHERE id=:id",
                      {"now": now, "s": summary_json, "id": analysis_id})
            self._run(db, (
                "UPDATE studies SET state=:state, reason=:r, updated_at=:now, summary_json=:s, claimed_by=NULL,"
                " lease_until=NULL WHERE study_key=:k"),
                {"state": SENDING if outbox else DONE,
                 "r": results_reason(summary) if results else no_results_reason(summary),
                 "now": now, "s": summary_json, "k": study_key})
            return True

    def results_of(self, analysis_id: int) -> list[RowMapping]:
        """The result objects one analysis recorded (sop_instance_uid, series_instance_uid, sop_class_uid, path)."""
        return self._rows("SELECT * FROM results WHERE analysis_id=:a ORDER BY sop_instance_uid", {"a": analysis_id})

    def add_late_result(self, analysis_id: int, study_key: str, result: tuple[str, str, str, str], item: dict,
                        summary: dict, *, dead_error: str | None = None, next_attempt_at: float | None = None,
                        expected: int = 0) -> bool:
        """Record one more result object of a finished analysis and queue it (a rejection note owed to a destination
        whose address went back to the archive that holds what it lists, Node._queue_missing_rejection_notes):
        `result` as finish_analysis's, `item` (destination, ae_title, host, port, sop_instance_uid, path) pending,
        due at `next_attempt_at` (None: now), or a dead letter beside the dead results it goes with (`dead_error`:
        its last_error, so that `dicomnode retry` re-queues them together); `summary`: the analysis's summary with
        it, kept for the analysis and the study. False, nothing recorded, where the analysis is no longer the
        study's latest finished one (a newer one runs or finished: it decides its own notes) or the analysis already
        holds other than `expected` result objects (another process added the note first)."""
        now = time.time()
        summary_json = strict_json.dumps(summary, "the analysis summary")
        with self._write() as db:
            self._run(db, "SELECT study_key FROM studies WHERE study_key=:k" + self._for_update, {"k": study_key})
            latest = self._run(db, "SELECT id, state FROM analyses WHERE study_key=:k ORDER BY id DESC LIMIT 1",
                               {"k": study_key}).mappings().first()
            held = self._run(db, "SELECT COUNT(*) FROM results WHERE analysis_id=:a", {"a": analysis_id}).scalar()
            if latest is None or latest["id"] != analysis_id or latest["state"] != "done" or held != expected:
                return False
            sop, series, sop_class, path = result
            self._run(db, "INSERT INTO results VALUES (:sop, :aid, :k, :series, :cls, :path)",
                      {"sop": sop, "aid": analysis_id, "k": study_key, "series": series, "cls": sop_class,
                       "path": path})
            self._run(db, (
                "INSERT INTO outbox(analysis_id, study_key, destination, ae_title, host, port, sop_instance_uid,"
                " path, state, attempts, next_attempt_at, last_error) VALUES (:aid, :k, :destination, :ae_title,"
                " :host, :port, :sop_instance_uid, :path, :state, 0, :due, :error)"),
                {"aid": analysis_id, "k": study_key, "state": OUTBOX_PENDING if dead_error is None else OUTBOX_DEAD,
                 "due": now if next_attempt_at is None else next_attempt_at, "error": dead_error, **item})
            self._run(db, "UPDATE analyses SET summary_json=:s WHERE id=:id", {"s": summary_json, "id": analysis_id})
            self._run(db, "UPDATE studies SET summary_json=:s WHERE study_key=:k", {"s": summary_json, "k": study_key})
            if dead_error is None:
                self._run(db, "UPDATE studies SET state=:sending, reason=:r, updated_at=:now WHERE study_key=:k"
                              " AND state=:done",
                          {"sending": SENDING, "now": now, "k": study_key, "done": DONE,
                           "r": results_reason(summary)})
            return True

    def fail_analysis(self, analysis_id: int, study_key: str, generation: int, reason: str) -> None:
        """The analysis failed: the study is FAILED (`dicomnode retry` runs it again). Earlier results not yet
        delivered stay queued (they are still the study's latest results, and retention keeps the study while any
        is undelivered); the reason says how many."""
        now = time.time()
        with self._write() as db:
            ours = self._still_ours(db, study_key, generation, analysis_id)
            self._run(db, "UPDATE analyses SET state='failed', finished_at=:now, reason=:r WHERE id=:id",
                      {"now": now, "r": reason, "id": analysis_id})
            if ours:
                earlier = self._undelivered(db, study_key)
                if earlier:
                    reason = (f"{reason[:400]} (the earlier analysis's {earlier} result object(s) not yet delivered"
                              " are kept)")
                self._run(db, (
                    "UPDATE studies SET state=:failed, reason=:r, updated_at=:now, claimed_by=NULL, lease_until=NULL"
                    " WHERE study_key=:k"), {"failed": FAILED, "r": reason, "now": now, "k": study_key})

    def earlier_reports(self, study_key: str, sop_class_uid: str) -> list[RowMapping]:
        """Result objects of one SOP class from earlier analyses of the study (what a re-analysis supersedes),
        oldest first: the tombstones of the study's earlier purges (their files are gone; with study_instance_uid
        and destinations, tombstone_destinations), then the kept ones (with analysis_id)."""
        purged = self._rows(
            "SELECT sop_instance_uid, study_key, series_instance_uid, sop_class_uid, path, study_instance_uid,"
            " destinations FROM purged_reports"
            " WHERE study_key=:k AND sop_class_uid=:cls ORDER BY purged_at, sop_instance_uid",
            {"k": study_key, "cls": sop_class_uid})
        return purged + self._rows(
            "SELECT r.* FROM results r JOIN analyses a ON a.id=r.analysis_id"
            " WHERE r.study_key=:k AND r.sop_class_uid=:cls AND a.state='done' ORDER BY a.id",
            {"k": study_key, "cls": sop_class_uid})

    def analyses_of(self, study_key: str) -> list[RowMapping]:
        """Every analysis of a study, oldest first (state running/done/failed/superseded/abandoned, worker)."""
        return self._rows("SELECT * FROM analyses WHERE study_key=:k ORDER BY id", {"k": study_key})

    def result_paths(self) -> set[str]:
        """Relative paths of every recorded result object."""
        return {r["path"] for r in self._rows("SELECT path FROM results")}

    def analysis_states(self) -> dict[int, str]:
        """analysis id -> its state (running/done/failed/superseded/abandoned), of every analysis recorded."""
        return {int(r["id"]): r["state"] for r in self._rows("SELECT id, state FROM analyses")}

    def result_count(self) -> int:
        return int(self._rows("SELECT COUNT(*) AS n FROM results")[0]["n"])

    def release_claims(self, all_processes: bool = False) -> int:
        """Give back what this process (or every process) holds: claimed studies become COMPLETE for another
        worker, claimed outbox items are free for another dispatcher. Returns how many rows were released."""
        who = "" if all_processes else " AND claimed_by=:me"
        params = {"complete": COMPLETE, "analysing": ANALYSING, "now": time.time(), "me": self.process_id}
        with self._write() as db:
            studies = self._run(db, "UPDATE studies SET state=:complete, claimed_by=NULL, lease_until=NULL,"
                                    " updated_at=:now WHERE state=:analysing AND claimed_by IS NOT NULL" + who,
                                params).rowcount
            items = self._run(db, "UPDATE outbox SET claimed_by=NULL, lease_until=NULL WHERE claimed_by IS NOT NULL"
                                  + who, params).rowcount
            return studies + items

    # --- outbox ----------------------------------------------------------------------------------------------

    def due_sends(self, now: float | None = None, limit: int = 500,
                  max_delay: float = NO_SEND_DELAY_CAP) -> list[RowMapping]:
        """Pending items due now and not claimed by a live dispatcher (read only; see claim_sends)."""
        now = time.time() if now is None else now
        return self._rows(
            "SELECT * FROM outbox WHERE state=:pending AND " + _SEND_DUE +
            " AND (claimed_by IS NULL OR lease_until < :now) ORDER BY id LIMIT :limit",
            {"pending": OUTBOX_PENDING, "now": now, "limit": limit, "max_delay": max_delay})

    def claim_sends(self, limit: int = 500, max_delay: float = NO_SEND_DELAY_CAP,
                    exclude: Iterable[int] = ()) -> list[RowMapping]:
        """Claim the due pending items for this process (SKIP LOCKED on PostgreSQL); sent or failed releases them.

        `max_delay` (s, the dispatcher's max_backoff_seconds): no back-off is longer, so an item due further ahead
        than that was parked by a clock that stepped back (its due time was computed ahead): it is due now.
        `exclude`: outbox ids never claimed now (the dispatcher's items still in one of its associations: one whose
        failure was recorded mid-batch is due again before that association ends, and a claim taken on it then and
        not handed to a lane would be renewed by every heartbeat, the item never sent)."""
        now = time.time()
        exclude = sorted(set(exclude))
        not_held = " AND id NOT IN :held" if exclude else ""
        with self._write() as db:
            ids = [r[0] for r in self._run(db, (
                "SELECT id FROM outbox WHERE state=:pending AND " + _SEND_DUE +
                " AND (claimed_by IS NULL OR lease_until < :now)" + not_held + " ORDER BY id LIMIT :limit" +
                self._skip_locked),
                {"pending": OUTBOX_PENDING, "now": now, "limit": limit, "max_delay": max_delay,
                 **({"held": exclude} if exclude else {})}, expanding=["held"] if exclude else [])]
            if not ids:
                return []
            self._run(db, "UPDATE outbox SET claimed_by=:me, lease_until=:until WHERE id IN :ids",
                      {"me": self.process_id, "until": now + self.lease_seconds, "ids": ids}, expanding=["ids"])
            return list(self._run(db, "SELECT * FROM outbox WHERE id IN :ids ORDER BY id", {"ids": ids},
                                  expanding=["ids"]).mappings().all())

    def next_send_time(self, max_delay: float = NO_SEND_DELAY_CAP, exclude: Iterable[int] = ()) -> float | None:
        """The earliest due time of a pending item no live dispatcher holds (epoch s), or None; an item due further
        ahead than `max_delay` (s) counts as due now (see claim_sends); the outbox ids in `exclude` do not count
        (claim_sends would not claim them)."""
        now = time.time()
        exclude = sorted(set(exclude))
        not_held = " AND id NOT IN :held" if exclude else ""
        rows = self._rows("SELECT MIN(CASE WHEN " + _SEND_DUE + " THEN :now ELSE next_attempt_at END) AS t FROM outbox"
                          " WHERE state=:pending AND (claimed_by IS NULL OR lease_until < :now)" + not_held,
                          {"pending": OUTBOX_PENDING, "now": now, "max_delay": max_delay,
                           **({"held": exclude} if exclude else {})}, expanding=["held"] if exclude else [])
        return rows[0]["t"] if rows and rows[0]["t"] is not None else None

    def mark_sent(self, outbox_ids: list[int]) -> None:
        if not outbox_ids:
            return
        with self._write() as db:
            self._run(db, (
                "UPDATE outbox SET state=:sent, sent_at=:now, claimed_by=NULL, lease_until=NULL,"
                " last_error=CASE WHEN last_error = :again OR last_error LIKE :resent_like THEN :resent ELSE NULL END"
                " WHERE id IN :ids"), {"sent": OUTBOX_SENT, "now": time.time(), "ids": list(outbox_ids),
                                       "again": OUTBOX_RESEND_IN_FLIGHT, "resent": OUTBOX_RESENT,
                                       "resent_like": _RESENT_LIKE},
                expanding=["ids"])
            self._settle_studies(db, outbox_ids)

    def mark_in_flight(self, outbox_id: int, again: bool = False,
                       address: tuple[str, str, int] | None = None) -> None:
        """Just before the item's C-STORE goes on the wire: its last_error says it is in flight (OUTBOX_IN_FLIGHT;
        `again`: OUTBOX_RESEND_IN_FLIGHT, a re-send of an item a stopped dispatcher had in flight) until its response
        is recorded (`attempts` counts failed attempts: mark_failed_send); an item re-sent before stays a re-send.
        `address` ((ae_title, host, port)): where it goes now (a destination is resolved by name when sent), recorded
        as the item's address, so that a `sent` item names the archive that holds it, not the one it was queued for
        (a dead letter to a wrong port, re-queued once the port was fixed: break48a #9). Raises the database's
        errors (then it is not sent)."""
        moved = "" if address is None else ", ae_title=:ae_title, host=:host, port=:port"
        where = {} if address is None else {"ae_title": address[0], "host": address[1], "port": int(address[2])}
        with self._write() as db:
            self._run(db, "UPDATE outbox SET last_error=CASE WHEN :again OR last_error = :again_text OR last_error"
                          " LIKE :resent_like THEN :again_text ELSE :in_flight END" + moved + " WHERE id=:id",
                      {"again": bool(again), "again_text": OUTBOX_RESEND_IN_FLIGHT, "resent_like": _RESENT_LIKE,
                       "in_flight": OUTBOX_IN_FLIGHT, "id": outbox_id, **where})

    def outbox_resent(self) -> list[RowMapping]:
        """Items sent again (or being sent again) after a dispatcher stopped with their C-STORE in flight, oldest
        first (`dicomnode status`)."""
        return self._rows("SELECT * FROM outbox WHERE last_error = :again OR last_error LIKE :resent_like ORDER BY id",
                          {"again": OUTBOX_RESEND_IN_FLIGHT, "resent_like": _RESENT_LIKE})

    def release_sends(self, outbox_ids: list[int], not_before: float | None = None) -> None:
        """Give back this process's claims of these outbox items, not attempted (no attempt counted): they stay due
        for any dispatcher, or with `not_before` (epoch s) due no earlier than then (their destination backs off)."""
        if not outbox_ids:
            return
        later = "" if not_before is None else (", next_attempt_at=CASE WHEN next_attempt_at < :not_before THEN"
                                               " :not_before ELSE next_attempt_at END")
        with self._write() as db:
            self._run(db, "UPDATE outbox SET claimed_by=NULL, lease_until=NULL" + later
                      + " WHERE id IN :ids AND claimed_by=:me",
                      {"ids": list(outbox_ids), "me": self.process_id,
                       **({} if not_before is None else {"not_before": not_before})}, expanding=["ids"])

    def mark_failed_send(self, outbox_id: int, error: str, next_attempt_at: float, dead: bool,
                         unless_taken: bool = False) -> bool:
        """Record a failed send of one outbox item (dead: a dead letter, else pending again at next_attempt_at).
        `unless_taken`: only while the item is still pending and held by no other live process (this process's
        claim, none, or an expired lease): a dispatcher that decides without sending (a destination removed from
        its config) never overwrites what another process has just sent or is sending. Returns whether it was
        recorded."""
        condition = ""
        params = {"e": error[:500], "t": next_attempt_at, "state": OUTBOX_DEAD if dead else OUTBOX_PENDING,
                  "superseded": OUTBOX_SUPERSEDED, "id": outbox_id, "again": OUTBOX_RESEND_IN_FLIGHT,
                  "resent_like": _RESENT_LIKE, "resent_failed": OUTBOX_RESENT_FAILED}
        if unless_taken:
            condition = (" AND state=:pending AND (claimed_by IS NULL OR claimed_by=:me OR lease_until IS NULL OR"
                         " lease_until < :now)")
            params.update(pending=OUTBOX_PENDING, me=self.process_id, now=time.time())
        with self._write() as db:
            # an item superseded while it was being sent stays superseded (never retried)
            recorded = self._run(db, (
                "UPDATE outbox SET attempts=attempts+1, last_error=CASE WHEN last_error = :again OR last_error LIKE"
                " :resent_like THEN :resent_failed || :e ELSE :e END, next_attempt_at=:t,"
                " state=CASE WHEN state=:superseded THEN state ELSE :state END,"
                " claimed_by=NULL, lease_until=NULL WHERE id=:id" + condition), params).rowcount == 1
            if recorded:
                self._settle_studies(db, [outbox_id])
            return recorded

    def _settle_studies(self, db: Connection, outbox_ids: list[int]) -> None:
        """A sending study whose outbox has nothing pending becomes done, or failed when any send is dead; items
        of superseded analyses (state superseded) do not count."""
        keys = {r[0] for r in self._run(db, "SELECT study_key FROM outbox WHERE id IN :ids", {"ids": list(outbox_ids)},
                                        expanding=["ids"])}
        now = time.time()
        for key in sorted(keys):
            self._run(db, "SELECT study_key FROM studies WHERE study_key=:k" + self._for_update, {"k": key})
            counts = {r[0]: r[1] for r in self._run(
                db, "SELECT state, COUNT(*) FROM outbox WHERE study_key=:k GROUP BY state", {"k": key})}
            if counts.get(OUTBOX_PENDING):
                continue
            if counts.get(OUTBOX_DEAD):
                # the dead letters carry the identifiers as they were copied: that note stays beside them
                note = identifier_note(self._study_summary(db, key))
                self._run(db, "UPDATE studies SET state=:failed, reason=:r, updated_at=:now WHERE study_key=:k AND"
                              " state=:sending",
                          {"failed": FAILED, "now": now, "k": key, "sending": SENDING,
                           "r": "; ".join(r for r in (f"{counts[OUTBOX_DEAD]} result object(s) could not be delivered"
                                                      " (dead letter)", note) if r)})
            else:
                # kept once the others are delivered: a result object that could not be built (study_reason), results
                # not sent back to the sender (sender_note), identifiers copied with control characters
                # (identifier_note)
                self._run(db, "UPDATE studies SET state=:done, reason=CASE WHEN reason LIKE :kept OR reason LIKE :note"
                              " OR reason LIKE :identifiers OR reason LIKE :missing THEN reason END, updated_at=:now"
                              " WHERE study_key=:k AND state=:sending",
                          {"done": DONE, "now": now, "k": key, "sending": SENDING, "kept": NOT_BUILT + "%",
                           "note": SENDER_NOT_SENT_PREFIX + "%", "identifiers": IDENTIFIER_NOTE_PREFIX + "%",
                           "missing": MISSING_NOTE_PREFIX + "%"})

    def _study_summary(self, db: Connection, study_key: str, analysis_id: int | None = None) -> dict:
        """The summary of the analysis `analysis_id`, or (None) the one the study holds (its latest finished
        analysis's, finish_analysis); {} where none is recorded or it cannot be read."""
        if analysis_id is None:
            text = self._run(db, "SELECT summary_json FROM studies WHERE study_key=:k", {"k": study_key}).scalar()
        else:
            text = self._run(db, "SELECT summary_json FROM analyses WHERE id=:a", {"a": analysis_id}).scalar()
        try:
            summary = json.loads(text or "{}")
        except ValueError:
            return {}
        return summary if isinstance(summary, dict) else {}

    def outbox_for(self, study_key: str | None = None, state: str | None = None) -> list[RowMapping]:
        sql, params = "SELECT * FROM outbox WHERE 1=1", {}
        if study_key:
            sql += " AND study_key=:k"
            params["k"] = study_key
        if state:
            sql += " AND state=:state"
            params["state"] = state
        return self._rows(sql + " ORDER BY id", params)

    def delivered_addresses(self) -> dict[str, tuple[str, str, int]]:
        """{outbox destination name: (ae_title, host, port) a result object delivered to it (state sent) was queued
        with}, over every study (one address per name where it moved); what names a destination renamed since
        (study_path.renamed_destinations) where a study's own outbox rows are gone (purged)."""
        return {r["destination"]: (r["ae_title"], r["host"], int(r["port"])) for r in self._rows(
            "SELECT DISTINCT destination, ae_title, host, port FROM outbox WHERE state=:sent ORDER BY destination",
            {"sent": OUTBOX_SENT})}

    def delivered_address_sets(self) -> dict[str, set[tuple[str, str, int]]]:
        """{outbox destination name: every (ae_title, host, port) a result object delivered to it (state sent) was
        queued with}, over every study: where a name moved to another address (study_path.moved_destinations), and
        what a tombstone's destination names stood for (study_path.credited_destination)."""
        addresses: dict[str, set[tuple[str, str, int]]] = {}
        for r in self._rows("SELECT DISTINCT destination, ae_title, host, port FROM outbox WHERE state=:sent",
                            {"sent": OUTBOX_SENT}):
            addresses.setdefault(r["destination"], set()).add((r["ae_title"], r["host"], int(r["port"])))
        return addresses

    def outbox_counts_by_study(self) -> dict[tuple[str, str], int]:
        """{(study_key, outbox state): number of items} over every study, in one query (`dicomnode status`)."""
        return {(r["study_key"], r["state"]): int(r["n"]) for r in self._rows(
            "SELECT study_key, state, COUNT(*) AS n FROM outbox GROUP BY study_key, state")}

    def outbox_needing_attention(self) -> list[RowMapping]:
        """Every dead letter and every pending item that failed at least once (being retried) or whose C-STORE is
        or was in flight (mark_in_flight), oldest first."""
        return self._rows("SELECT * FROM outbox WHERE state=:dead OR (state=:pending AND (attempts > 0 OR last_error"
                          " LIKE :in_flight)) ORDER BY id",
                          {"dead": OUTBOX_DEAD, "pending": OUTBOX_PENDING, "in_flight": IN_FLIGHT_PREFIX + "%"})

    def outbox_counts(self) -> dict[str, int]:
        return {r["state"]: r["n"] for r in self._rows("SELECT state, COUNT(*) AS n FROM outbox GROUP BY state")}

    def retry_dead(self, study_key: str, outbox_ids: list[int] | None = None) -> int:
        """Re-queue a study's dead letters (never a superseded item), only those of `outbox_ids` when given; returns
        how many. 0 for a failed study whose latest analysis failed: `reanalyse` runs it again, and its results
        supersede the earlier dead letters."""
        if outbox_ids is not None and not outbox_ids:
            return 0
        now = time.time()
        with self._write() as db:
            study = self._run(db, "SELECT state FROM studies WHERE study_key=:k" + self._for_update,
                              {"k": study_key}).mappings().first()
            if study is None or (study["state"] == FAILED and self._latest_analysis_failed(db, study_key)):
                return 0
            only = "" if outbox_ids is None else " AND id IN :ids"
            count = self._run(db, (
                "UPDATE outbox SET state=:pending, attempts=0, next_attempt_at=:now, claimed_by=NULL, lease_until=NULL"
                " WHERE study_key=:k AND state=:dead" + only),
                {"pending": OUTBOX_PENDING, "now": now, "k": study_key, "dead": OUTBOX_DEAD,
                 **({} if outbox_ids is None else {"ids": list(outbox_ids)})},
                expanding=[] if outbox_ids is None else ["ids"]).rowcount
            if count:
                self._run(db, "UPDATE studies SET state=:sending, reason=:r, updated_at=:now WHERE study_key=:k"
                              " AND state IN (:failed, :done)",
                          {"sending": SENDING, "now": now, "k": study_key, "failed": FAILED, "done": DONE,
                           "r": results_reason(self._study_summary(db, study_key))})
            return count

    def resend(self, study_key: str) -> tuple[int, int]:
        """`dicomnode retry STUDY --resend`: queue the result objects of a finished study's latest analysis again, to
        the destinations they were queued for (resolved by name when sent), as new pending sends; the study goes
        back to `sending`, its reason the notes of that analysis's summary (results_reason). Its IHE IOCM Rejection Notes (Key Object Selection, results.rejection) stay as they are,
        sent or dead: a resend follows a destination's loss of data, and a note listing earlier results that
        destination may no longer hold makes an IOCM archive refuse the whole note (README: Re-analysis).
        Returns (result objects re-queued, rejection notes left out); (0, 0) when the study is not done (or failed
        only by dead letters of that analysis) or its latest analysis queued nothing."""
        now = time.time()
        with self._write() as db:
            study = self._run(db, "SELECT state FROM studies WHERE study_key=:k" + self._for_update,
                              {"k": study_key}).mappings().first()
            if study is None or study["state"] not in (DONE, FAILED) or self._latest_analysis_failed(db, study_key):
                return 0, 0
            latest = self._run(db, "SELECT MAX(id) FROM analyses WHERE study_key=:k AND state='done'",
                               {"k": study_key}).scalar()
            if latest is None:
                return 0, 0
            params = {"pending": OUTBOX_PENDING, "now": now, "k": study_key, "a": latest, "sent": OUTBOX_SENT,
                      "dead": OUTBOX_DEAD, "ko": KeyObjectSelectionDocumentStorage}
            notes = ("SELECT sop_instance_uid FROM results WHERE analysis_id=:a AND study_key=:k"
                     " AND sop_class_uid=:ko")
            held_back = self._run(db, "SELECT COUNT(*) FROM outbox WHERE study_key=:k AND analysis_id=:a AND state IN"
                                      f" (:sent, :dead) AND sop_instance_uid IN ({notes})", params).scalar() or 0
            count = self._run(db, (
                "UPDATE outbox SET state=:pending, attempts=0, next_attempt_at=:now, last_error=NULL, sent_at=NULL,"
                " claimed_by=NULL, lease_until=NULL WHERE study_key=:k AND analysis_id=:a AND state IN (:sent, :dead)"
                f" AND sop_instance_uid NOT IN ({notes})"), params).rowcount
            if count:
                self._run(db, "UPDATE studies SET state=:sending, reason=:r, updated_at=:now WHERE study_key=:k",
                          {"sending": SENDING, "now": now, "k": study_key,
                           "r": results_reason(self._study_summary(db, study_key, latest))})
            return count, int(held_back)

    def reanalyse_finished(self, study_key: str) -> bool:
        """`dicomnode retry STUDY --reanalyse`: send a finished study (done, or failed) back to `complete`, so that the
        next worker analyses it again as a new generation (as a late instance makes one, so that `dicomnode status`
        shows that the study was analysed again); its results supersede the earlier ones not sent yet. False in any
        other state (receiving, being analysed or sent: nothing to force)."""
        now = time.time()
        with self._write() as db:
            return self._run(db, (
                "UPDATE studies SET state=:complete, reason=:r, updated_at=:now, claimed_by=NULL, lease_until=NULL,"
                " generation=generation+1 WHERE study_key=:k AND state IN (:done, :failed)"),
                {"complete": COMPLETE, "r": REANALYSIS_REQUESTED, "now": now, "k": study_key, "done": DONE,
                 "failed": FAILED}).rowcount == 1

    def reanalyse(self, study_key: str) -> bool:
        """Send a failed study back to `complete` as a new generation, so that the next worker analyses it again: one
        whose analysis failed (its latest analysis failed, whatever earlier results are still queued) or that has no
        dead letters; False when the study is in any other state."""
        now = time.time()
        with self._write() as db:
            study = self._run(db, "SELECT state FROM studies WHERE study_key=:k" + self._for_update,
                              {"k": study_key}).mappings().first()
            if study is None or study["state"] != FAILED:
                return False
            if not self._latest_analysis_failed(db, study_key) and self._run(
                    db, "SELECT 1 FROM outbox WHERE study_key=:k AND state=:dead",
                    {"k": study_key, "dead": OUTBOX_DEAD}).first() is not None:
                return False  # dead letters of its current results: retry_dead's case
            return self._run(db, (
                "UPDATE studies SET state=:complete, reason=:r, updated_at=:now, claimed_by=NULL, lease_until=NULL,"
                " generation=generation+1 WHERE study_key=:k AND state=:failed"),
                {"complete": COMPLETE, "r": REANALYSIS_REQUESTED, "now": now, "k": study_key,
                 "failed": FAILED}).rowcount == 1

    def requeue_stuck(self, study_key: str) -> tuple[bool, str]:
        """`dicomnode retry` of a study in ANALYSING: send it back to `complete` (the next worker analyses it again)
        when no live process holds it: its claim's lease expired, or its claiming process has no heartbeat row
        younger than stale_after_seconds (killed, or hung). Returns (re-queued, why); not re-queued while a live
        process analyses it, or when the study is not analysing (why says which)."""
        now = time.time()
        with self._write() as db:
            study = self._run(db, "SELECT state, generation, claimed_by, lease_until FROM studies WHERE study_key=:k"
                              + self._for_update, {"k": study_key}).mappings().first()
            if study is None or study["state"] != ANALYSING:
                return False, f"state {study['state'] if study else 'unknown'}, not analysing"
            holder = study["claimed_by"]
            beat = None if holder is None else self._run(
                db, "SELECT last_seen FROM nodes WHERE node_id=:id", {"id": holder}).scalar()
            if holder is None:
                why = "no process holds its claim"
            elif study["lease_until"] is None or study["lease_until"] < now:
                why = f"the lease of {holder}'s claim expired"
            elif beat is None:
                why = f"{holder}, which claimed it, has no heartbeat row (stopped or killed)"
            elif now - beat >= self.stale_after_seconds:
                why = f"{holder}, which claimed it, sent no heartbeat for {now - beat:.0f} s"
            else:
                return False, (f"being analysed by {holder}, a live process (heartbeat {max(0.0, now - beat):.0f} s "
                               f"ago)")
            # the row is locked (FOR UPDATE / the SQLite write lock): no claim changes between the check and this
            requeued = self._run(db, (
                "UPDATE studies SET state=:complete, reason=:r, updated_at=:now, claimed_by=NULL, lease_until=NULL"
                " WHERE study_key=:k AND state=:analysing AND generation=:g"),
                {"complete": COMPLETE, "r": f"re-analysis requested: stuck analysing ({why})"[:500], "now": now,
                 "k": study_key, "analysing": ANALYSING, "g": study["generation"]}).rowcount == 1
            return requeued, why

    def _latest_analysis_failed(self, db: Connection, study_key: str) -> bool:
        """Whether the study's latest analysis that ended (done or failed) failed: its current results are missing."""
        row = self._run(db, "SELECT state FROM analyses WHERE study_key=:k AND state IN ('done', 'failed')"
                            " ORDER BY id DESC LIMIT 1", {"k": study_key}).first()
        return row is not None and row[0] == "failed"

    # --- leases and heartbeats -------------------------------------------------------------------------------

    def acquire_lease(self, name: str, seconds: float) -> bool:
        """Take or renew the named lease for this process; False while another live process holds it."""
        now = time.time()
        with self._write() as db:
            self._run(db, "INSERT INTO leases(name, holder, lease_until) VALUES (:n, :me, :until)"
                          " ON CONFLICT (name) DO NOTHING",
                      {"n": name, "me": self.process_id, "until": now + seconds})
            return self._run(db, "UPDATE leases SET holder=:me, lease_until=:until WHERE name=:n AND"
                                 " (holder=:me OR lease_until < :now)",
                             {"n": name, "me": self.process_id, "until": now + seconds, "now": now}).rowcount == 1

    def release_lease(self, name: str) -> None:
        with self._write() as db:
            self._run(db, "DELETE FROM leases WHERE name=:n AND holder=:me", {"n": name, "me": self.process_id})

    def lease_holder(self, name: str) -> str | None:
        rows = self._rows("SELECT holder FROM leases WHERE name=:n AND lease_until >= :now",
                          {"n": name, "now": time.time()})
        return rows[0]["holder"] if rows else None

    def heartbeat(self, roles: Sequence[str], started_at: float, detail: dict | None = None) -> None:
        """Record that this process is alive and renew the leases of everything it holds."""
        now = time.time()
        host, pid = socket.gethostname(), os.getpid()
        params = {"id": self.process_id, "host": host, "pid": pid, "roles": ",".join(roles), "started": started_at,
                  "now": now, "detail": json.dumps(detail or {}), "until": now + self.lease_seconds}
        with self._write() as db:
            self._run(db, (
                "INSERT INTO nodes(node_id, host, pid, roles, started_at, last_seen, detail_json)"
                " VALUES (:id, :host, :pid, :roles, :started, :now, :detail) ON CONFLICT (node_id) DO UPDATE SET"
                " roles=excluded.roles, last_seen=excluded.last_seen, detail_json=excluded.detail_json"), params)
            self._run(db, "UPDATE studies SET lease_until=:until WHERE claimed_by=:id AND state=:analysing",
                      {**params, "analysing": ANALYSING})
            self._run(db, "UPDATE outbox SET lease_until=:until WHERE claimed_by=:id AND state=:pending",
                      {**params, "pending": OUTBOX_PENDING})

    def clock_offset(self) -> float | None:
        """This machine's clock minus the state database server's (s), measured now (the round trip halved), where
        the state is shared by several machines (PostgreSQL); None for SQLite (one machine, one clock). Raises the
        database's errors."""
        if self.engine.dialect.name != "postgresql":
            return None
        with self.engine.connect() as connection:
            before = time.time()
            server = float(connection.execute(text("SELECT extract(epoch FROM clock_timestamp())")).scalar_one())
            after = time.time()
        return (before + after) / 2.0 - server

    def forget_node(self) -> None:
        """A clean stop: remove this process's heartbeat row."""
        with self._write() as db:
            self._run(db, "DELETE FROM nodes WHERE node_id=:id", {"id": self.process_id})

    def forget_other_nodes(self) -> int:
        """A single node's start (its storage lock is exclusive, so every other process that wrote a heartbeat row
        on this state is gone): remove those rows; returns how many."""
        with self._write() as db:
            return self._run(db, "DELETE FROM nodes WHERE node_id <> :id", {"id": self.process_id}).rowcount

    def nodes(self) -> list[RowMapping]:
        """Every process that sent a heartbeat, newest first."""
        return self._rows("SELECT * FROM nodes ORDER BY last_seen DESC")

    @property
    def stale_after_seconds(self) -> float:
        """A heartbeat this old (s) is overdue: the process is STALE."""
        return STALE_AFTER_HEARTBEATS * self.heartbeat_seconds

    @property
    def gone_after_seconds(self) -> float:
        """A heartbeat this old (s) is from a process that is gone: whatever it held was freed by its lease."""
        return max(GONE_AFTER_HEARTBEATS * self.heartbeat_seconds, self.lease_seconds)

    def forget_nodes(self, node_ids: Sequence[str], seen_before: float) -> list[str]:
        """Remove the heartbeat rows of these processes where their last heartbeat is older than `seen_before`
        (epoch s; one that beat since keeps its row); returns the ids removed."""
        if not node_ids:
            return []
        with self._write() as db:
            return [r[0] for r in self._run(db, "DELETE FROM nodes WHERE node_id IN :ids AND last_seen < :before"
                                                " RETURNING node_id", {"ids": list(node_ids), "before": seen_before},
                                            expanding=["ids"])]

    def claims(self) -> list[RowMapping]:
        """Studies being analysed, with their worker and lease (epoch s)."""
        return self._rows("SELECT study_key, generation, claimed_by, lease_until FROM studies WHERE state=:a",
                          {"a": ANALYSING})


# --- schema ------------------------------------------------------------------------------------------------------


def _output_studies(summary_json: str | None) -> dict[str, str]:
    """{result path (the summary's `outputs`): the Study Instance UID of the study entry that lists it} of an
    analysis summary (one study, or a key's several under `studies`); {} where the summary does not say."""
    try:
        summary = json.loads(summary_json or "{}")
    except ValueError:
        return {}
    entries = summary.get("studies") if isinstance(summary.get("studies"), list) else [summary]
    return {path: entry["study_instance_uid"] for entry in entries if isinstance(entry, dict)
            and entry.get("study_instance_uid") for path in entry.get("outputs") or [] if isinstance(path, str)}


def tombstone_destinations(row) -> set[str] | None:
    """The outbox destinations a purged result object (a purged_reports row) was delivered to; None where not
    recorded (purged before schema 6)."""
    if row["destinations"] is None:
        return None
    try:
        return set(json.loads(row["destinations"]))
    except ValueError:
        return None


def schema_version(engine: Engine) -> int | None:
    """The version recorded in `meta`, or None for an empty database."""
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table("meta"):
                return None
            row = connection.execute(text("SELECT value FROM meta WHERE key='schema_version'")).first()
    except OperationalError as exc:
        raise StateSchemaError(f"cannot open the state database: {exc.orig}") from exc
    return int(row[0]) if row else None


def _retire_superseded_outbox(connection: Connection) -> None:
    """v3 data step: undelivered outbox items of analyses that a later finished analysis superseded are retired
    (what finish_analysis does from v3 on), and a study failed only by such dead letters is settled again from its
    current results: sending while any is pending, else done."""
    connection.execute(text(
        "UPDATE outbox SET state='superseded', claimed_by=NULL, lease_until=NULL WHERE state IN ('pending', 'dead')"
        " AND analysis_id < (SELECT MAX(a.id) FROM analyses a WHERE a.study_key=outbox.study_key AND a.state='done')"))
    connection.execute(text(
        "UPDATE studies SET reason=NULL, state=CASE WHEN EXISTS (SELECT 1 FROM outbox o"
        " WHERE o.study_key=studies.study_key AND o.state='pending') THEN 'sending' ELSE 'done' END"
        " WHERE state='failed' AND reason LIKE '%(dead letter)' AND NOT EXISTS (SELECT 1 FROM outbox o"
        " WHERE o.study_key=studies.study_key AND o.state='dead')"))


#: data steps run once, when a database of an older version is upgraded to this one
_DATA_STEPS = {3: _retire_superseded_outbox}


def older_schema(engine: Engine) -> int | None:
    """The schema version of a state that holds data of an older schema than this code's (1 where the first releases
    recorded none), or None: no data yet (a migration only creates the schema), this version, or a newer one."""
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table("studies"):
                return None
    except OperationalError as exc:
        raise StateSchemaError(f"cannot open the state database: {exc.orig}") from exc
    version = schema_version(engine) or 1
    return version if version < SCHEMA_VERSION else None


def keep_copy_before_upgrade(engine: Engine, now: float | None = None) -> Path | None:
    """Before a migration changes a SQLite state of an older schema: a copy of it (SQLite's online backup, a
    consistent snapshot even with its -wal), owner-only, beside it as `state.sqlite3.schema<N>-<UTC YYYYmmdd-HHMMSS>`:
    the way back to the older dicomnode (README "Upgrading"), said in the log. Returns the copy's path; None where
    nothing will be migrated (older_schema) or the state is not SQLite (PostgreSQL: `pg_dump` before `dicomnode state
    upgrade`). Raises StateSchemaError, nothing changed, where the copy cannot be written (a full disk)."""
    if engine.dialect.name != "sqlite" or not engine.url.database:
        return None
    before = older_schema(engine)
    if before is None:
        return None
    source = Path(engine.url.database)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    target = source.with_name(f"{source.name}.schema{before}-{stamp}")
    suffix = 1
    while target.exists():
        target = source.with_name(f"{source.name}.schema{before}-{stamp}-{suffix}")
        suffix += 1
    try:
        _copy_sqlite(source, target)
    except (OSError, sqlite3.Error) as exc:
        target.unlink(missing_ok=True)
        raise StateSchemaError(
            f"state database {source} has schema version {before}; before migrating it to {SCHEMA_VERSION} this "
            f"dicomnode keeps a copy of it ({source.stat().st_size / 1e6:.1f} MB) at {target}, which could not be "
            f"written: {exc}. Make room there and start again, or take a copy yourself (README: Backup and restore) "
            f"and run `dicomnode state upgrade --no-backup`; nothing was changed") from exc
    log.info("kept a copy of the schema %d state database before migrating it to %d: %s (to go back to the older "
             "dicomnode, put it in place of %s with the node stopped; README: Upgrading)", before, SCHEMA_VERSION,
             target, source.name)
    return target


def _copy_sqlite(source: Path, target: Path) -> None:
    """`target`: a new owner-only, self-contained (rollback-journal mode, no -wal) copy of the SQLite file `source`."""
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # patient data: owner only
    reader = sqlite3.connect(source, timeout=60)
    try:
        writer = sqlite3.connect(target)
        try:
            reader.backup(writer)
            writer.execute("PRAGMA journal_mode=DELETE")
        finally:
            writer.close()
    finally:
        reader.close()
    with open(target, "rb") as copied:
        os.fsync(copied.fileno())


def upgrade_schema(engine: Engine, keep_copy: bool = True) -> tuple[int | None, int]:
    """Create a missing schema or migrate an older one to SCHEMA_VERSION; returns (version before, after).

    Idempotent (additive steps, and data steps that only retire outbox items never to be sent); refuses a database
    newer than this code. Processes of the older version must be stopped first: they go on with the old semantics on
    the new schema (`dicomnode state upgrade` refuses while any is live, roles.cmd_state_upgrade). `keep_copy`: a
    SQLite state of an older schema is copied first (keep_copy_before_upgrade; StateSchemaError where it cannot be).
    """
    if keep_copy:
        keep_copy_before_upgrade(engine)
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":  # one upgrader at a time
            connection.execute(text("SELECT pg_advisory_xact_lock(4711018)"))
        inspector = inspect(connection)
        before = None
        if inspector.has_table("meta"):
            row = connection.execute(text("SELECT value FROM meta WHERE key='schema_version'")).first()
            before = int(row[0]) if row else None
        if before is not None and before > SCHEMA_VERSION:
            raise StateSchemaError(schema_mismatch("state database", before))
        had_tables = inspector.has_table("studies")
        if had_tables:
            for version in range((before or 1) + 1, SCHEMA_VERSION + 1):
                for table, column, sql_type in _MIGRATIONS.get(version, []):
                    if not inspector.has_table(table):
                        continue  # a table of a later step (purged_reports, v3): created whole below
                    existing = {c["name"] for c in inspector.get_columns(table)}
                    if column not in existing:
                        connection.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}"))
                if version in _DATA_STEPS:
                    _DATA_STEPS[version](connection)
        METADATA.create_all(connection, checkfirst=True)
        for table in METADATA.tables.values():  # indexes added since a table was created
            for index in table.indexes:
                index.create(connection, checkfirst=True)
        connection.execute(text("DELETE FROM meta WHERE key='schema_version'"))
        connection.execute(text("INSERT INTO meta(key, value) VALUES ('schema_version', :v)"),
                           {"v": str(SCHEMA_VERSION)})
    if had_tables and (before or 1) < SCHEMA_VERSION:  # said once, in the journal an admin reads after an upgrade
        log.info("upgraded the state database %s from schema version %s to %d (%s)",
                 describe_url(engine.url.render_as_string(hide_password=False)), before or "1 (none recorded)",
                 SCHEMA_VERSION,
                 OLDER_VERSIONS_AFTER_UPGRADE)
    return before, SCHEMA_VERSION


def state_schema_problem(location: str, timeout: float = 5.0) -> str | None:
    """What `serve` would refuse about a `[state] url` that is not SQLite, read without changing it: a database it
    cannot connect to within `timeout` s (a host name that does not resolve, no server listening, a user refused,
    no driver), and a schema other than this code's (schema_mismatch: none yet or older, `dicomnode state upgrade`;
    newer, a newer dicomnode's). None where it matches, and for SQLite (created and migrated on start)."""
    url = state_url(location)
    if url.startswith("sqlite"):
        return None
    try:
        db = StateDB(url, upgrade=False, check=False, connect_timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - a missing driver or a malformed URL: serve fails on it too
        return _unreachable(url, exc)
    try:
        db.check_schema()
    except StateSchemaError as exc:
        return _unreachable(url, exc.__cause__) if isinstance(exc.__cause__, OperationalError) else str(exc)
    except Exception as exc:  # noqa: BLE001 - any other failure to connect: serve cannot open it either
        return _unreachable(url, exc)
    finally:
        db.close()
    return None


def _unreachable(url: str, exc: BaseException) -> str:
    """The problem of a state database that cannot be opened, in one line, without the URL's password."""
    reason = mask_url_secrets(" ".join(str(getattr(exc, "orig", None) or exc).split()) or type(exc).__name__, url)
    return (f"cannot open the state database {describe_url(url)}: {reason} (`serve` refuses to start until it can: "
            "check the host name, that PostgreSQL runs and accepts connections there, and the user's access)")


def open_state(config, *, upgrade: bool | None = None, check: bool = True, process_id: str | None = None,
               readonly: bool = False) -> StateDB:
    """The state database a config names: `[state] url`, default the spool's `state.sqlite3`; `readonly`: only
    read it, touching nothing on disk (see StateDB)."""
    if config.state.url is None and not readonly:
        prepare_storage_dir(config.node.storage_dir)
    url = config.state.url or default_state_path(config)
    return StateDB(url, upgrade=upgrade, check=check, process_id=process_id, lease_seconds=config.state.lease_seconds,
                   heartbeat_seconds=config.state.heartbeat_seconds, readonly=readonly)
