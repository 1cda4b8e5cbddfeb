"""Roles of a node process: receive, complete, analyse, dispatch; together (one machine) or apart (scale-out).

`dicomnode serve --roles receive,complete,analyse,dispatch` (default: all). Two modes:

- **single node** (all roles, SQLite state): exactly today's node, :meth:`Node.start`/:meth:`Node.stop`, plus a
  heartbeat row so `dicomnode status` lists the process.
- **scale-out** (a subset of roles, or PostgreSQL state): every hand-over goes through the state database, so any
  number of processes on any machines can share one state database and one spool folder:

  - ``receive``: the C-STORE SCP; it only indexes instances (any receiver takes any instance of any study);
  - ``complete``: the one process holding the ``complete`` lease polls the studies still receiving and completes
    them by the same rules as :mod:`dicomnode.studies` (quiet time after the last instance, whichever receiver
    stored it; expected counts; max wait); it also runs retention;
  - ``analyse``: worker threads claim complete studies (:meth:`StateDB.claim_next_study`, SKIP LOCKED on
    PostgreSQL); a worker that dies stops renewing its lease and its study goes to another worker;
  - ``dispatch``: the outbox dispatcher, claiming items before sending them.

Every process renews its heartbeat (and with it the leases of what it holds) every ``[state] heartbeat_seconds``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

from dicomnode import __version__, build_id
from dicomnode.config import load_config
from dicomnode.observe import study_context
from dicomnode.state import (
    ANALYSING, CLOCK_SKEW_WARN_SECONDS, COMPLETE, FAILED, RECEIVED, SCHEMA_VERSION, MixedVersionsError, RoundFailures, StateDB, StateSchemaError,
    OLDER_VERSIONS_AFTER_UPGRADE, describe_url, is_outage, open_state, outage_reason, schema_version,
    sqlite_open_elsewhere, state_url, upgrade_schema,
)
from dicomnode.state import keep_copy_before_upgrade, older_schema
from dicomnode.net.scp import different_resend_text
from dicomnode.spool import MIN_FREE_INODES, free_space
from dicomnode.studies import (ASSOCIATION_ABORTED, EXPECTED_COUNT_GRACE_SECONDS, PendingRefusals, completion_note,
                               end_wait_for_resend, expected_counts_met, interrupted, max_wait_failed_reason,
                               record_interruption, record_refusal, refused_count, waiting_for_resend)
from dicomnode.uids import short_hash

log = logging.getLogger("dicomnode.roles")

ROLES = ("receive", "complete", "analyse", "dispatch")

#: the named lease of the one process acting as completion scheduler (and retention)
COMPLETE_LEASE = "complete"

#: spool temporaries older than this are leftovers of a crashed receiver (others may be writing younger ones)
STALE_TEMPORARY_SECONDS = 3600.0
#: an association released: the heartbeat stops listing its studies this long after (s), unless the sender's next
#: association sends them again by then (RoleRunner._publish_soon)
RELEASED_PUBLISH_SECONDS = 0.5
# how long a failed start waits for the threads it spawned to end (a worker ends within one poll round)
ABANDON_JOIN_SECONDS = 10.0
#: the cause of a transfer interrupted by a stop before an upgrade (studies.interrupted_reason)
OLDER_RELEASE_STOPPED = "an older dicomnode release, which kept no record of the transfers under way, stopped"


def parse_roles(text: str | None) -> tuple[str, ...]:
    """"receive,analyse" -> ("receive", "analyse") in canonical order; None/"all" -> every role.

    Raises ValueError naming an unknown role.
    """
    if text is None or text.strip() in ("", "all"):
        return ROLES
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in ROLES]
    if unknown:
        raise ValueError(f"unknown role(s) {unknown}; roles are {', '.join(ROLES)} (or all)")
    return tuple(role for role in ROLES if role in names)


def is_scale_out(config, roles: Sequence[str]) -> bool:
    """Whether a process with these roles hands over through the state database (RoleRunner.scale_out): a subset
    of the roles, a state that is not SQLite, or several receiving processes; it shares the storage lock then."""
    url = config.state.url
    return (set(roles) != set(ROLES) or (url is not None and not state_url(url).startswith("sqlite"))
            or config.node.receive_processes > 1)


def _process_started_at(pid: int) -> float | None:
    """When process `pid` of this machine started (epoch s, from /proc: its start in clock ticks after boot, PS
    starttime, plus the boot time), or None where /proc cannot tell."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _pid_gone(host: str, pid: int, last_seen: float | None = None) -> bool:
    """True only where `pid` on `host` is certainly not the process that wrote a heartbeat: host is this machine and
    no such process exists, or (with the heartbeat's `last_seen`, epoch s) the process now holding that pid started
    after that heartbeat (the pid was reused: a restart in a container often gets the same one)."""
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # e.g. another user's process
        pass
    if last_seen is not None:
        started = _process_started_at(pid)
        return started is not None and started > last_seen + 1.0
    return False


def clock_skew_text(offset_s: float) -> str:
    """What a clock `offset_s` seconds off the state database server's (StateDB.clock_offset: + ahead) means."""
    return (f"clock {abs(offset_s):.1f} s {'ahead of' if offset_s > 0 else 'behind'} the state database server's "
            f"(more than {CLOCK_SKEW_WARN_SECONDS:g} s): the processes sharing the state compare times each machine "
            "wrote (a study's quiet timer, [state] lease_seconds, heartbeats), so a study may complete early or late "
            "and a live process's claim may look expired; synchronise the machines' clocks (NTP: chrony or "
            "systemd-timesyncd)")


class ClockWatch:
    """This machine's clock against the state database server's, measured at every heartbeat where several machines
    share the state (PostgreSQL): a WARNING when it drifts beyond CLOCK_SKEW_WARN_SECONDS (clock_skew_text), an INFO
    when it is back; the offset goes into the heartbeat (`status --json`: detail.clock_offset_s)."""

    def __init__(self, db: StateDB):
        self.db = db
        self.skewed = False

    def measure(self) -> float | None:
        """The offset (s, + ahead), None without a server clock (SQLite). Raises the database's errors."""
        offset = self.db.clock_offset()
        if offset is None:
            return None
        skewed = abs(offset) > CLOCK_SKEW_WARN_SECONDS
        if skewed and not self.skewed:
            log.warning("this machine's %s", clock_skew_text(offset))
        elif self.skewed and not skewed:
            log.info("this machine's clock is back within %g s of the state database server's (%+.1f s)",
                     CLOCK_SKEW_WARN_SECONDS, offset)
        self.skewed = skewed
        return offset


def live_processes(db: StateDB, now: float | None = None) -> list[dict]:
    """Other processes that may still work on this state: a heartbeat newer than db.gone_after_seconds (what
    `dicomnode status` shows as alive or STALE, not GONE), leaving out this process and a process of this machine
    whose pid no longer exists. Each: node_id, host, pid, roles, heartbeat_age_s, version, schema and build (None
    for an older dicomnode that records none; see dicomnode.build_id). Read on any schema version, before an upgrade
    too."""
    now = time.time() if now is None else now
    found = []
    for row in db.heartbeat_rows():
        if row["node_id"] == db.process_id or now - row["last_seen"] > db.gone_after_seconds:
            continue
        if _pid_gone(row["host"], row["pid"], row["last_seen"]):
            continue
        try:
            detail = json.loads(row["detail_json"] or "{}")
        except ValueError:
            detail = {}
        found.append({"node_id": row["node_id"], "host": row["host"], "pid": row["pid"], "roles": row["roles"],
                      "heartbeat_age_s": round(now - row["last_seen"], 1), "version": detail.get("version"),
                      "schema": detail.get("schema"), "build": detail.get("build")})
    return found


def describe_process(process: dict) -> str:
    """"host pid 123 (roles ..., dicomnode 0.1.0 build 1a2b3c4d5e6f schema 4, heartbeat 4 s ago)", for messages."""
    if process["version"] is None:
        version = "an older dicomnode that records no version"
    elif process.get("build") is None:
        version = (f"an older build of dicomnode {process['version']} schema {process['schema']} that records no "
                   f"build id")
    else:
        version = f"dicomnode {process['version']} build {process['build']} schema {process['schema']}"
    return (f"{process['host']} pid {process['pid']} (roles {process['roles']}, {version}, heartbeat "
            f"{process['heartbeat_age_s']:.0f} s ago)")


def refuse_other_versions(db: StateDB) -> None:
    """Before a starting process changes anything: raises MixedVersionsError naming the live processes (see
    live_processes) that run another dicomnode build (dicomnode.build_id: any change of the code, whatever
    __version__ says) or schema on this state. Versions differ in how a re-analysis supersedes results and how they
    are sent: a mix sent a study's results twice."""
    this = (__version__, SCHEMA_VERSION, build_id())
    others = [p for p in live_processes(db) if (p["version"], p["schema"], p["build"]) != this]
    if others:
        raise MixedVersionsError(
            f"state {describe_url(db.url)} is in use by process(es) of another dicomnode version: "
            f"{'; '.join(describe_process(p) for p in others)}. This is dicomnode {__version__} build {build_id()} "
            f"(schema {SCHEMA_VERSION}); versions must not run side by side (they supersede and send results "
            f"differently). "
            f"Stop those processes first (systemctl stop dicomnode on each machine), then start this version; a "
            f"process killed without stopping counts as gone {db.gone_after_seconds:.0f} s after its last heartbeat. "
            f"Nothing was changed")


def copied_state_warning(db: StateDB) -> str | None:
    """For the single-node `serve`, which holds node.storage_dir's exclusive lock: a live process of this machine
    that the state names cannot be serving this folder (it would hold the lock), so the folder is most likely a copy
    of the one that process serves (a backup restored or a folder copied beside the original). Says what follows
    (both send the pending results), or None."""
    here = [p for p in live_processes(db) if p["host"] == socket.gethostname()]
    if not here:
        return None
    return (f"the state names {'; '.join(describe_process(p) for p in here)}, alive on this machine but not holding "
            f"this storage's lock: node.storage_dir is probably a copy of the folder that process serves (a backup "
            f"restored beside the original?). Both send the results pending in it to the same destinations, and a "
            f"destination may receive them twice: stop one of them (README: Backup and restore)")


def migration_blockers(db: StateDB) -> list[str]:
    """Who else uses a state whose schema a migration would change (empty where none does, or where the schema needs
    no migration): the live processes with a heartbeat (live_processes), and for SQLite any other process that has
    the file open (sqlite_open_elsewhere: a dicomnode of schema 1 writes no heartbeat). They would go on with the
    old semantics on the new schema."""
    version = schema_version(db.engine)
    if version is not None and version >= SCHEMA_VERSION:
        return []
    blockers = [describe_process(p) for p in live_processes(db)]
    if db.is_sqlite and sqlite_open_elsewhere(db.path):
        blockers.append(f"another process has {db.path} open (an older dicomnode records no heartbeat; `fuser "
                        f"{db.path}` names it)")
    return blockers


def refuse_migration_in_use(db: StateDB) -> None:
    """Before `serve` migrates a SQLite state: raises MixedVersionsError naming the processes that use it
    (migration_blockers); nothing is changed then."""
    blockers = migration_blockers(db)
    if blockers:
        raise MixedVersionsError(
            f"state {describe_url(db.url)} has schema version {schema_version(db.engine) or 'none'}, which this "
            f"dicomnode {__version__} would migrate to {SCHEMA_VERSION}, and it is in use: {'; '.join(blockers)}. "
            f"Stop those processes first (systemctl stop dicomnode), then start this version; "
            f"`dicomnode state upgrade --force` migrates it anyway. Nothing was changed")


class DatabaseCompletion:
    """Completion by polling the state database (stands in for the node's in-memory CompletionTracker).

    Due times come from the database columns every receiver updates: `last_received + quiet_seconds`,
    `last_received + EXPECTED_COUNT_GRACE_SECONDS` once the expected counts are met, `first_received +
    max_wait_seconds`. Only the holder of the `complete` lease acts, so one scheduler acts at a time.

    A transfer that was cut is not taken for a quiet one here either: every receiving process publishes the studies
    its open associations are sending, and those it received a C-STORE of within studies.quiet_seconds on any
    association (its heartbeat's detail.receiving, updated before an association's first instance of a study is
    stored and when a study leaves it: RoleRunner._receiving; a sender opening one association per instance is
    between two of them most of the time, break46b #1). A study a receiver lists is not completed on the
    quiet timer until that receiver has beaten since the study's quiet period ended (it was alive when the study
    went quiet); a receiver that died instead (its pid gone on this machine, or no heartbeat for
    db.stale_after_seconds) leaves the studies it listed marked interrupted (studies.record_interruption, the cause
    naming it), waiting for a re-send or max wait, as a single node marks what its own crash cut. A lost receiver
    whose heartbeat has no such list (an older release) leaves every study received while it lived marked the same
    way: nothing tells which of them it was still receiving.
    """

    def __init__(self, db: StateDB, config, lease_seconds: float, on_complete=None, retention=None,
                 pending_refusals: PendingRefusals | None = None):
        self.db = db
        self.pending_refusals = pending_refusals
        self.config = config.studies
        self.retention_config = config.retention
        self.lease_seconds = lease_seconds
        self.on_complete = on_complete
        self.retention = retention
        self.holding = False
        self._counts_checked: dict[str, float] = {}  # study key -> last_received whose instances were counted
        self._last_retention = 0.0
        self._last_free_space = 0.0
        self._lease_renewed = 0.0  # time.monotonic() of the last renewal of the `complete` lease
        self._started = time.time()  # the downtime before it was no quiet: no sender could deliver
        self._cut_marked: set[tuple[str, str]] = set()  # (receiver, study key) marked interrupted by this process
        self._held_told: set[str] = set()  # studies said to wait for their receiver's heartbeat

    def instance_stored(self, study_key: str, new_study: bool, first_received: float | None = None,
                        row: dict | None = None) -> None:
        """The receiver's hook: nothing to keep in memory, the due times are in the database."""

    def flush_refusals(self) -> list[str]:
        """Write the pending refusals (studies.PendingRefusals: this process's, and the files of any process
        sharing the spool) to the state; returns the studies now held as incomplete. Raises the state database's
        errors."""
        if self.pending_refusals is None:
            return []
        return self.pending_refusals.flush(self.db, self.config)

    def instance_refused(self, study_key: str) -> int:
        """The receiver's hook after a 0xA700 (out of resources): the study is marked incomplete in the database
        (`studies.waiting_for_resend`), which the process holding the `complete` lease reads."""
        return record_refusal(self.db, study_key, self.config)

    def transfer_interrupted(self, study_key: str, cause: str = ASSOCIATION_ABORTED) -> bool:
        """The receiver's hook after an association sending the study was aborted: marked in the database
        (`studies.record_interruption`), so that no process completes it on the quiet timer."""
        return record_interruption(self.db, study_key, cause, self.config) is not None

    def instance_resent(self, study_key: str) -> None:
        """The receiver's hook after a duplicate: a study waiting for a re-send (an interrupted transfer, refused
        instances) is being re-sent (studies.end_wait_for_resend)."""
        end_wait_for_resend(self.db, study_key, time.time())

    def rebuild(self) -> int:
        return 0

    def mark_cut(self, study_keys, cause: str) -> list[str]:
        """Mark these studies interrupted (`cause`: what cut their transfer) unless they already are, no longer
        receive, or are whole by their expected counts (studies.record_interruption); returns those marked. Raises
        the state database's errors."""
        marked = []
        for key in study_keys:
            study = self.db.study(key)
            if study is None or interrupted(study):
                continue
            if record_interruption(self.db, key, cause, self.config) is not None:
                marked.append(key)
        return marked

    def _receivers(self, now: float) -> tuple[dict[str, list[tuple[dict, str | None]]], list[tuple[dict, str]]]:
        """(study key -> (heartbeat row, why it is lost or None) of each other receiving process whose latest
        heartbeat lists an open association sending the study (detail.receiving); (heartbeat row, why it is lost)
        of each lost receiving process whose heartbeat has no such list: a release that did not record one)."""
        found: dict[str, list[tuple[dict, str | None]]] = {}
        unlisted: list[tuple[dict, str]] = []
        for row in self.db.nodes():
            if row["node_id"] == self.db.process_id:
                continue
            try:
                receiving = json.loads(row["detail_json"] or "{}").get("receiving")
            except (ValueError, AttributeError):
                receiving = None
            if not receiving and (receiving is not None or "receive" not in (row["roles"] or "").split(",")):
                continue
            age = now - row["last_seen"]
            lost = None
            if _pid_gone(row["host"], row["pid"], row["last_seen"]):
                lost = f"the receiving process {row['host']} pid {row['pid']} died"
            elif age >= self.db.stale_after_seconds:
                lost = (f"the receiving process {row['host']} pid {row['pid']} stopped answering: no heartbeat for "
                        f"{age:.0f} s")
            if receiving is None:
                if lost is not None:
                    unlisted.append((dict(row), lost))
                continue
            for key in receiving:
                found.setdefault(key, []).append((dict(row), lost))
        return found, unlisted

    def _unrecorded_cut(self, study, unlisted: list[tuple[dict, str]]) -> bool:
        """Mark the study interrupted where it was received while a lost receiving process lived whose heartbeat
        does not list what its associations were sending (`unlisted`: a release that kept no such list), so that
        nothing tells whether its transfer was cut: the safe side, as a single node's start takes every study
        receiving for cut where that record is missing. Returns whether it marked."""
        key = study["study_key"]
        for row, lost in unlisted:
            if not row["started_at"] - 1.0 <= study["last_received"] <= row["last_seen"] + self.db.stale_after_seconds:
                continue
            if (row["node_id"], key) in self._cut_marked:
                return False
            cause = f"{lost}, which did not record whether its associations were still sending"
            marked = record_interruption(self.db, key, cause, self.config)  # raises: tried again next round
            self._cut_marked.add((row["node_id"], key))
            return marked is not None
        return False

    def _waits_for_receiver(self, study, receivers: list[tuple[dict, str | None]], why: str | None) -> bool:
        """Whether the study is not completed now (`why`: what made it due) because of the receiving processes that
        list it: a dead one cut its transfer (marked interrupted now), or, due for being quiet, a live one has not
        beaten since the study went quiet."""
        key = study["study_key"]
        for row, lost in receivers:
            # a receiver stores until it dies: at most a stale limit after its last heartbeat (later instances came
            # through another receiver, e.g. the sender's re-send)
            if lost is None or (row["node_id"], key) in self._cut_marked or interrupted(study) \
                    or study["last_received"] > row["last_seen"] + self.db.stale_after_seconds:
                continue
            marked = record_interruption(self.db, key, lost, self.config)  # raises: tried again next round
            self._cut_marked.add((row["node_id"], key))
            if marked is not None:
                return True
        if why != "quiet":
            return False
        quiet_at = study["last_received"] + self.config.quiet_seconds - 0.05
        late = [row for row, lost in receivers if lost is None and row["last_seen"] < quiet_at]
        if late and not interrupted(study):
            if key not in self._held_told:
                self._held_told.add(key)
                log.info("study %s quiet, but receiving process %s pid %s has an association sending it and has not "
                         "sent a heartbeat since: not completed until it does (a receiver that died leaves it marked "
                         "interrupted after %.0f s)", short_hash(study["study_instance_uid"]), late[0]["host"],
                         late[0]["pid"], self.db.stale_after_seconds)
            return True
        return False

    def reload(self, config) -> None:
        """SIGHUP: the new [studies] and [retention] settings apply from the next round."""
        self.config = config.studies
        self.retention_config = config.retention

    def forget(self, study_key: str) -> None:
        self._counts_checked.pop(study_key, None)
        self._held_told.discard(study_key)

    def poll(self, now: float | None = None) -> list[str]:
        """One round: take/renew the lease; if held, complete (or fail) every study that is due. Returns keys."""
        self.holding = self.db.acquire_lease(COMPLETE_LEASE, self.lease_seconds)
        self._lease_renewed = time.monotonic()
        if not self.holding:
            return []
        now = time.time() if now is None else now
        done = []
        self.flush_refusals()  # a refusal made during an outage holds its study before anything is completed
        receivers, unlisted = self._receivers(now)
        for study in self.db.studies((RECEIVED,)):
            key = study["study_key"]
            if unlisted and not interrupted(study) and self._unrecorded_cut(study, unlisted):
                continue
            why = self._due(study, now)
            if key in receivers and why != "max wait reached" and self._waits_for_receiver(study, receivers[key], why):
                continue
            if why is None:
                continue
            if why == "max wait reached" and self.config.force_complete_policy == "fail":
                reason = max_wait_failed_reason(self.config, study)
                if self.db.set_study_state(key, FAILED, reason, expect=(RECEIVED,), generation=study["generation"]):
                    self.forget(key)
                    with study_context(short_hash(study["study_instance_uid"])):
                        log.warning("study %s failed: %s (force_complete_policy = \"fail\")",
                                    short_hash(study["study_instance_uid"]), reason)
                    done.append(key)
                continue
            if why == "max wait reached" and refused_count(study):
                with study_context(short_hash(study["study_instance_uid"])):
                    log.warning("study %s: max_wait_seconds=%s reached with %d instance(s) refused for lack of space "
                                "never sent again; analysed as received (force_complete_policy = \"analyse\")",
                                short_hash(study["study_instance_uid"]), self.config.max_wait_seconds,
                                refused_count(study))
            if self.db.set_study_state(key, COMPLETE, completion_note(study, why), expect=(RECEIVED,),
                                       generation=study["generation"]):
                self.forget(key)
                log.info("study %s complete (%s), generation %d", short_hash(study["study_instance_uid"]), why,
                         study["generation"])
                done.append(key)
                if self.on_complete:
                    self.on_complete(key, study["generation"])
        self._run_retention(now)
        return done

    def _due(self, study, now: float) -> str | None:
        # the downtime before this process started, and an outage of the state database (no sender could deliver:
        # the receivers refused with 0xA700), are no quiet: a study received before gets a whole quiet period after
        not_quiet_before = max(self._started, self.db.outage.last_failure)
        if study["last_received"] < not_quiet_before and now < not_quiet_before + self.config.quiet_seconds - 0.05:
            return None
        if now >= study["first_received"] + self.config.max_wait_seconds:
            return "max wait reached"
        if waiting_for_resend(study):
            return None  # instances refused for lack of space: incomplete until its sender sends again
        if now >= study["last_received"] + self.config.quiet_seconds - 0.05:
            return "quiet"
        if (self.config.use_expected_counts and now >= study["last_received"] + EXPECTED_COUNT_GRACE_SECONDS
                and self._counts_checked.get(study["study_key"]) != study["last_received"]):
            self._counts_checked[study["study_key"]] = study["last_received"]
            if expected_counts_met(self.db.study_instances(study["study_key"])):
                return "expected counts met"
        return None

    def _run_retention(self, now: float) -> None:
        if self.retention is None:
            return
        if now - self._last_retention >= self.retention_config.purge_interval_minutes * 60:
            self._last_retention = now
            self.retention.run_safely(self._keep_lease)
        elif now - self._last_free_space >= 60:
            self._last_free_space = now
            self.retention.check_free_space_safely(self._keep_lease)

    def _keep_lease(self) -> bool:
        """Between two studies of a retention purge (a long one outlasts lease_seconds): renew the `complete` lease,
        at most every third of lease_seconds; False once another process holds it, and the purge stops there, so
        that the fail-over process never takes a study this one is still purging for an interrupted purge."""
        if time.monotonic() - self._lease_renewed < self.lease_seconds / 3:
            return self.holding
        self.holding = self.db.acquire_lease(COMPLETE_LEASE, self.lease_seconds)
        self._lease_renewed = time.monotonic()
        return self.holding


class RoleRunner:
    """Starts and stops the given roles of a :class:`dicomnode.node.Node` (which wires the parts)."""

    def __init__(self, node, roles: Sequence[str] = ROLES):
        self.node = node
        self.roles = tuple(roles)
        self.config = node.config
        self.db: StateDB = node.db
        state = node.config.state
        # several receiving processes (node.receive_processes) hand over through the database like a scale-out
        self.scale_out = is_scale_out(node.config, self.roles)
        self.heartbeat_seconds = state.heartbeat_seconds
        self.poll_seconds = state.poll_seconds
        self.started_at = time.time()
        self._stop = threading.Event()  # no completion round, no claim, no new work
        self._beats_stop = threading.Event()  # the heartbeat (and with it every lease renewal): set last by stop
        self._wake_workers = threading.Event()
        self._threads: list[threading.Thread] = []
        self._scp_started = False
        self._keep_heartbeat_row = False  # a stop that could not mark the transfers it cut leaves them listed
        self._recent_withdrawn = False  # a graceful stop: only open associations are listed (_withdraw_recent)
        self._cut_unmarked: set[str] = set()  # ... in every heartbeat written after it, too
        self.completion: DatabaseCompletion | None = None
        self.failed_threads: list[str] = []  # worker threads that ended unexpectedly (the heartbeat stops for them)
        self.clock = ClockWatch(self.db)
        self._beat_lock = threading.Lock()
        self._published: set[str] = set()  # the studies the latest heartbeat lists as being received
        self._publish_timer: threading.Timer | None = None  # _publish_soon's
        # the latest heartbeat's detail (publish_receiving writes it again between beats, with the open studies)
        self._detail: dict = {"ae_title": node.config.node.ae_title, "version": __version__, "schema": SCHEMA_VERSION,
                              "build": build_id()}
        self._saved_resends: list[dict] | None = None  # what the latest beat saved (StateDB.save_different_resends)
        node.dead_threads = self.dead_threads  # /healthz reports them too

    # --- lifecycle -------------------------------------------------------------------------------------------

    def start(self, warm_up: bool = True) -> None:
        # before anything touches the storage or the state: a second single-node `serve` on the same config (or a
        # single-node one beside scale-out role processes) refuses here, naming the holder (spool.StorageLock)
        self.node.lock_storage(exclusive=not self.scale_out)
        # ... and a storage_dir that is not the spool the (shared) state indexes refuses too (spool.SpoolMismatch)
        self.node.verify_spool()
        if self.db.note_receivers_recorded():
            self._mark_left_by_older_release()
        if "receive" in self.roles:
            self.node.scp.on_receiving = self.publish_receiving  # a crash cuts only what the heartbeat lists
        try:
            if not self.scale_out:
                self.db.release_claims(all_processes=True)  # the only process: whatever a crashed run held is ours
                self.node.start(warm_up=warm_up)
                self._forget_older_runs()
            else:
                # one state write before any thread or model: a state that cannot be written (a full disk) fails
                # the start here, with nothing started (degraded.start_when_writable retries it)
                with self._beat_lock:
                    self._heartbeat()
                self._start_scale_out(warm_up)
            self.beat()
            self._spawn(self._heartbeat_loop, "heartbeat")
        except BaseException:
            self._abandon()
            raise
        log.info("roles %s (%s mode), state %s, process %s", ",".join(self.roles),
                 "scale-out" if self.scale_out else "single-node", describe_url(self.db.url), self.db.process_id)

    def _abandon(self) -> None:
        """A start that failed: end the threads it had spawned (they see the stop within a round) and the pending
        publication, so that a retry does not add another set beside them; the node's parts are the caller's
        (cli._abandon_start)."""
        self._stop.set()
        self._beats_stop.set()
        self._wake_workers.set()
        if self._publish_timer is not None:
            self._publish_timer.cancel()
        deadline = time.monotonic() + ABANDON_JOIN_SECONDS
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        alive = [thread.name for thread in self._threads if thread.is_alive()]
        if alive:
            log.warning("thread(s) %s of the failed start still finishing a round; they end after it", ", ".join(alive))

    def _forget_older_runs(self) -> None:
        """A single node, once it has rebuilt its timers (the storage lock is exclusive: every other heartbeat row is
        of a run that is gone): remove those rows, so that a later start that finds no record of a clean stop does
        not take an older crash's row for what the last run was receiving (studies.receiving_at_crash)."""
        self.db.forget_other_nodes()

    def _mark_left_by_older_release(self) -> None:
        """The first start of this release on the state (StateDB.note_receivers_recorded): an older release kept
        no record of which studies its associations were still sending when it stopped (SIGTERM or kill -9 before
        the upgrade), so every study still receiving may have been cut: marked interrupted, waiting for a re-send
        or max wait, never completed on the quiet timer (break44a #1)."""
        marked = [study["study_key"] for study in self.db.studies((RECEIVED,))
                  if not interrupted(study) and record_interruption(
                      self.db, study["study_key"], OLDER_RELEASE_STOPPED, self.config.studies) is not None]
        if marked:
            log.warning("%d stud(ies) still receiving when an older dicomnode release stopped marked transfer "
                        "interrupted (that release kept no record of the transfers under way): each waits for its "
                        "sender to send it again, or studies.max_wait_seconds", len(marked))

    def _start_scale_out(self, warm_up: bool) -> None:
        node = self.node
        node.completion = DatabaseCompletion(self.db, node.config, self.config.state.lease_seconds,
                                             on_complete=lambda *_: self._wake_workers.set(),
                                             retention=node.retention, pending_refusals=node.pending_refusals)
        self.completion = node.completion
        if "analyse" in self.roles or "complete" in self.roles:
            # files of analyses killed mid-write (not those running elsewhere); the `complete` lease holder's
            # retention runs remove those abandoned later (Retention.remove_abandoned_results)
            node.retention.remove_abandoned_results()
        if "analyse" in self.roles:
            if warm_up:
                needed = {name for route in node.config.routes for name in route.pipelines}
                node.unavailable_pipelines = node.analyser.warm_up(
                    [n for n in ("lge", "cine", "suggestions") if n in needed])
                for reason in node.unavailable_pipelines.values():
                    log.warning("%s", reason)
            node.scheduler.start()
            node._schedule_bank_refresh()
            for index in range(node.config.analysis.workers):
                self._spawn(self._analysis_worker, f"analysis-{index}")
        if "complete" in self.roles:
            self._spawn(self._completion_loop, "completion")
        if "dispatch" in self.roles:
            node.dispatcher.idle_seconds = self.poll_seconds
            node.dispatcher.start()
        if node.config.observability.metrics_enabled:  # before the SCP: a busy metrics port refuses the start
            node.metrics.serve(node.config.observability.metrics_host, node.config.observability.metrics_port)
        if "receive" in self.roles:
            removed = self._remove_stale_temporaries()
            if removed:
                log.info("removed %d partial file(s) older than %.0f s from a crashed receiver", removed,
                         STALE_TEMPORARY_SECONDS)
            node.scp.start()
            self._scp_started = True
        node.ready = True

    def stop(self) -> None:
        """SIGTERM. The heartbeat (renewing this process's claims), its row and the storage lock stay until every
        part has stopped, the dispatcher's associations included (break51a #1: a stop that dropped them while a lane
        still sent let a new process send the same objects again); only then is "stopped" logged."""
        if not self.scale_out:  # the node's own stop lets running analyses finish; a restart frees the rest
            self._stop.set()
            self.node.stop(before_closing=self._end_heartbeat)
            return
        node = self.node
        node._stopping.set()
        node.ready = False
        # no completion, no claim while the receiver drains: a study its associations still send is not quiet
        # (break44a #2: completed and analysed from part of its instances while a stuck C-STORE held the stop)
        # the heartbeat goes on (renewing the leases of the studies and items this process still works on, and
        # listing what its associations send) until the receiver is drained, the analyses ended and the dispatcher
        # stopped
        self._stop.set()
        self._wake_workers.set()
        self._join(("completion",))
        if self._scp_started:
            # a graceful stop knows what it cut: the studies of the associations still open or in flight. A study
            # whose association was released in order is no longer claimed (_withdraw_recent): the other processes
            # complete it on its quiet timer, and a sender that was between two associations delivers the rest to
            # them (a late instance opens a new analysis). A kill -9 leaves the recent studies listed (_receiving).
            cut = node.scp.stop()
            self._withdraw_recent()
            self._mark_cut(sorted(cut))
        if node.scheduler.running:
            node.scheduler.shutdown(wait=False)
        self._join([thread.name for thread in self._threads if thread.name != "heartbeat"])
        node.dispatcher.stop()
        node.metrics.stop()
        self._beats_stop.set()
        self._join(("heartbeat",))
        self._goodbye()
        self.db.close()
        node.storage_lock.release()
        log.info("stopped")

    def _end_heartbeat(self) -> None:
        """A single node's stop, every part stopped: the heartbeat ends and its row goes, before the state closes."""
        self._beats_stop.set()
        self._join()
        try:
            self.db.forget_node()
        except Exception:
            log.exception("could not remove the heartbeat row")

    def _withdraw_recent(self) -> None:
        """A graceful stop, its receiver drained: the studies listed only for a recent C-STORE on an association
        released since (_receiving, break46b #1) are withdrawn from the heartbeat at once, so that the process
        completing studies does not wait for this one's heartbeats (DatabaseCompletion._waits_for_receiver) while
        its analyses and dispatcher wind down; what the stop could not mark stays listed (_cut_unmarked)."""
        self._recent_withdrawn = True
        if "receive" not in self.roles:
            return
        try:
            with self._beat_lock:
                self._heartbeat()
        except Exception as exc:  # noqa: BLE001 - its heartbeat row goes at the end of the stop all the same
            log.warning("could not withdraw the recently received studies from the heartbeat (%s)",
                        outage_reason(exc) if is_outage(exc) else exc)

    def _mark_cut(self, study_keys: list[str]) -> None:
        """A receiver stopping gracefully: the studies whose transfer the stop cut (StorageSCP.stop: sent on an
        association still open within studies.quiet_seconds, or with a message in flight, or stored while the stop
        drained it) are marked interrupted before it goes (its heartbeat row goes too, so no other process could
        tell), as a single node's stop marks them (Node.stop). Those it received on an association released before
        the stop are not (review46 #8: a rolling restart would hold every finished transfer for max_wait_seconds
        with a false "interrupted" note); a kill -9 leaves them listed in its heartbeat, marked by the process
        completing studies."""
        if not study_keys:
            return
        cause = f"the receiving process {socket.gethostname()} pid {os.getpid()} stopped"
        try:
            self.node.completion.mark_cut(study_keys, cause)
        except Exception as exc:  # noqa: BLE001 - the heartbeat row stays: the complete role marks them (stale)
            self._keep_heartbeat_row = True
            self._cut_unmarked.update(study_keys)
            log.warning("could not mark the %d stud(ies) this stop cut as interrupted (%s); the process completing "
                        "studies marks them once this process's heartbeat is stale", len(study_keys),
                        outage_reason(exc) if is_outage(exc) else exc)

    def _goodbye(self) -> None:
        try:
            released = self.db.release_claims()
            if self.completion is not None and self.completion.holding:
                self.db.release_lease(COMPLETE_LEASE)
            if not self._keep_heartbeat_row:
                self.db.forget_node()
            if released:
                log.info("released %d claimed stud(ies)/item(s) for other workers", released)
        except Exception:
            log.exception("could not release claims; they lapse after [state] lease_seconds")

    def _spawn(self, target, name: str) -> None:
        thread = threading.Thread(target=self._guarded, args=(target, name), name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    @staticmethod
    def _guarded(target, name: str) -> None:
        """A worker thread's body: its loop catches every error of a round; should anything still end it, say so
        (the heartbeat loop notices the thread is gone and stops the heartbeat, see dead_threads)."""
        try:
            target()
        except BaseException:
            log.critical("thread %s ended by an unexpected error", name, exc_info=True)
            raise

    def dead_threads(self) -> list[str]:
        """Names of this process's worker threads (analysis, completion, dispatch, the scheduler; single node: the
        node's analysis workers too) that ended while the process was not stopping."""
        if self._stop.is_set() or self.node.stopping:
            return []
        threads = [t for t in self._threads if t is not threading.current_thread()]
        if not self.scale_out:
            threads += self.node._workers
        dead = [thread.name for thread in threads if not thread.is_alive()]
        if self.node.dispatcher.failed:
            dead.append("dispatch")
        if (not self.scale_out or "analyse" in self.roles) and not self.node.scheduler.running:
            dead.append("scheduler")
        return dead

    def _join(self, names: Sequence[str] | None = None) -> None:
        """Every loop (or those `names`) within one minute together (systemd's TimeoutStopSec covers it, see
        node.WORKERS_STOP_SECONDS)."""
        deadline = time.monotonic() + 60.0
        for thread in self._threads:
            if names is not None and thread.name not in names:
                continue
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    # --- loops -----------------------------------------------------------------------------------------------

    def beat(self) -> None:
        node = self.node
        detail = {"ae_title": node.config.node.ae_title, "analyses_done": node.analyses_done,
                  "sent": node.dispatcher.sent, "version": __version__, "schema": SCHEMA_VERSION, "build": build_id()}
        if self.failed_threads:
            detail["failed_threads"] = self.failed_threads
        offset = self.clock.measure()
        if offset is not None:
            detail["clock_offset_s"] = round(offset, 2)
        if "receive" in self.roles or not self.scale_out:
            detail.update(port=node.scp.port, received=node.scp.received, last_stored_at=node.scp.last_stored_at,
                          min_free_space_mb=node.spool.min_free_space_mb,
                          last_refused_at=node.scp.refusals.last_refused_at,
                          last_refusal=node.scp.refusals.last_reason, refused=node.scp.refusals.recent(),
                          different_resends=node.scp.different_resends.recent(),
                          association_slots=node.scp.slot_summary())
        if self.completion is not None:
            detail["completion_lease"] = self.completion.holding
        with self._beat_lock:
            self._detail = detail
            self._heartbeat()
        resends = detail.get("different_resends")
        if resends is not None and resends != self._saved_resends:  # kept past this process's end (status lists them)
            self.db.save_different_resends(resends)
            self._saved_resends = resends
        if "receive" in self.roles:  # this process's refusals made during an outage, even where none completes
            node.completion.flush_refusals()

    def _heartbeat(self) -> None:
        """Write the heartbeat (under _beat_lock) with the studies of the open associations (scale-out receivers:
        detail.receiving, what DatabaseCompletion marks interrupted should this process die)."""
        detail = dict(self._detail)
        receiving = None
        if "receive" in self.roles:
            receiving = detail["receiving"] = sorted(self._receiving() | self._cut_unmarked)
        self.db.heartbeat(self.roles, self.started_at, detail)
        if receiving is not None:
            self._published = set(receiving)
            self._publish_when_lapsed()

    def _receiving(self) -> set[str]:
        """The studies a crash of this process may cut: those of its open associations, and in scale-out those it
        received a C-STORE of within studies.quiet_seconds on any association (StorageSCP.studies_stored_within: a
        sender opening one association per instance is between two of them most of the time, and the other
        processes go on completing while its next association fails against the dead one, break46b #1). A single
        node lists the open associations only: no sender can deliver while it is down, and its restart counts the
        quiet time from then (CompletionTracker.rebuild)."""
        receiving = set(self.node.scp.open_studies())
        if self.scale_out and not self._recent_withdrawn:
            receiving.update(self.node.scp.studies_stored_within(self.node.config.studies.quiet_seconds))
        return receiving

    def _publish_when_lapsed(self) -> None:
        """Scale-out: write the heartbeat again when the first study listed for a recent C-STORE only has had none
        for studies.quiet_seconds, so that the completing process, which waits for a heartbeat after a listed study
        went quiet (DatabaseCompletion._waits_for_receiver), completes it then rather than a heartbeat later."""
        if not self.scale_out:
            return
        quiet = self.node.config.studies.quiet_seconds
        recent = self.node.scp.studies_stored_within(quiet)
        if recent:
            self._publish_soon(quiet - max(recent.values()) + RELEASED_PUBLISH_SECONDS)

    def publish_receiving(self) -> None:
        """The SCP's hook (StorageSCP.on_receiving): the studies of the open associations changed. A study not in
        the heartbeat yet (_receiving) is written now, before the instance that added it is stored; one no longer
        to list is written soon (_publish_soon; scale-out: a quiet period after its last C-STORE,
        _publish_when_lapsed), so that a sender opening one association per instance costs no write per instance
        (a receiver that dies meanwhile leaves it marked interrupted, the safe side); nothing once the process is stopping (its stop marks what it cut, then removes its heartbeat row).
        Raises the state database's errors."""
        if self.node.stopping or self._stop.is_set():
            return
        with self._beat_lock:
            receiving = self._receiving()
            if receiving < self._published:  # an association ended: said soon, once the senders' next one is open
                self._publish_soon()
            if receiving <= self._published:
                return
            self._heartbeat()

    def _publish_soon(self, delay: float = RELEASED_PUBLISH_SECONDS) -> None:
        """Write the heartbeat `delay` seconds from now where the studies to list (_receiving) are fewer than it
        lists then: a study whose association was released is no longer taken for cut by a crash soon after
        (CompletionTracker.rebuild, DatabaseCompletion), while a sender opening one association per instance, whose
        next association lists the study again within that time, costs no write."""
        if self._publish_timer is not None and self._publish_timer.is_alive():
            return
        self._publish_timer = threading.Timer(max(delay, 0.05), self._publish_released)
        self._publish_timer.daemon = True
        self._publish_timer.start()

    def _publish_released(self) -> None:
        if self.node.stopping or self._stop.is_set():
            return
        try:
            with self._beat_lock:
                self._publish_timer = None  # this one has fired: _publish_when_lapsed may arm the next
                if self._receiving() | self._cut_unmarked != self._published:
                    self._heartbeat()
                else:
                    self._publish_when_lapsed()
        except Exception as exc:  # noqa: BLE001 - the next heartbeat publishes them
            log.debug("could not publish the studies being received now: %s", exc)

    def _heartbeat_loop(self) -> None:
        """Beat every heartbeat_seconds while every worker thread of the process lives. When one has ended (it
        should never: their loops catch every error), the process no longer does all its roles: it says so at
        CRITICAL, beats once more naming the threads (`status --json`: detail.failed_threads) and stops beating, so
        that `dicomnode status` shows it STALE, then GONE, and its claims go to other processes."""
        failures = RoundFailures(self.db, log, "heartbeat failed", self.heartbeat_seconds)
        while not self._beats_stop.wait(self.heartbeat_seconds):
            dead = self.dead_threads()
            if dead:
                self.failed_threads = dead
                log.critical("thread(s) %s of this process (roles %s) ended unexpectedly: its heartbeat stops, so "
                             "that `dicomnode status` shows it STALE and what it holds goes to other processes after "
                             "[state] lease_seconds; restart it (systemctl restart ...)", ", ".join(dead),
                             ",".join(self.roles))
                try:
                    self.beat()
                except Exception:  # noqa: BLE001 - the heartbeat stops either way
                    pass
                return
            try:
                self.beat()
            except Exception as exc:  # noqa: BLE001 - retried at the next beat
                failures.failed(exc)
            else:
                failures.succeeded()

    def _completion_loop(self) -> None:
        failures = RoundFailures(self.db, log, "completion round failed", self.poll_seconds)
        while not self._stop.wait(self.poll_seconds):
            try:
                self.completion.poll()
            except Exception as exc:  # noqa: BLE001 - the loop outlives any round
                failures.failed(exc)
            else:
                failures.succeeded()

    def _analysis_worker(self) -> None:
        """Claim and analyse studies until stopped; no error of a round ends the thread."""
        failures = RoundFailures(self.db, log, "analysis worker round failed", self.poll_seconds)
        while not self._stop.is_set():
            try:
                wait = self._analysis_round()
            except Exception as exc:  # noqa: BLE001 - the loop outlives any round
                failures.failed(exc)
                wait = self.poll_seconds
            else:
                failures.succeeded()
            if wait:
                self._wake_workers.wait(wait)
                self._wake_workers.clear()

    def _analysis_round(self) -> float:
        """One claim and its analysis; returns how long to wait before the next (0: claim again at once)."""
        node = self.node
        node.release_unrecorded()
        if node.claims_blocked() is not None:  # the spool is not there (an unmounted share), or missing files
            return max(self.poll_seconds, 5.0)
        space = node.results_space_problem()
        if space is not None:  # no claim while results could not be written: the study stays complete
            node.note_postponed(space)
            return max(self.poll_seconds, 5.0)
        node.forget_unreadable_elsewhere()
        claim = self.db.claim_next_study(skip=node.paused_studies())
        if claim is None:
            return self.poll_seconds
        study_key, generation = claim
        try:
            study_row = self.db.study(study_key)
            with study_context(short_hash(study_row["study_instance_uid"]) if study_row else short_hash(study_key)):
                log.info("claimed study %s generation %d", short_hash(study_key), generation)
                node.analyse_study(study_key, generation)
        except Exception as exc:
            # claimed, and neither analysed nor released (the state database went away between the claim and the
            # analysis): give the claim back once it can be written, or the study stays claimed by this live process
            node.release_claim_later(study_key, generation, exc)
            if not is_outage(exc):
                log.exception("analysis of %s crashed", short_hash(study_key))
            else:
                self.db.outage.failed(exc, self.poll_seconds)
        return 0.0

    def _remove_stale_temporaries(self) -> int:
        removed = 0
        cutoff = time.time() - STALE_TEMPORARY_SECONDS
        for temporary in self.node.spool.spool_dir.rglob(".*.tmp"):
            try:
                if temporary.stat().st_mtime < cutoff:
                    temporary.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        return removed


def nodes_report(db: StateDB, stale_after_seconds: float | None = None, now: float | None = None) -> list[dict]:
    """Every process with a heartbeat row: id, host, pid, roles, heartbeat age (s), studies it is analysing,
    `alive` (heartbeat younger than `stale_after_seconds`, default db.stale_after_seconds: 3 heartbeat intervals)
    and `gone` (heartbeat older than db.gone_after_seconds); `failed_threads`: worker threads that ended
    unexpectedly (the process stopped its heartbeat; it is not alive); `ended`: a process of this machine whose pid
    no longer runs (killed, crashed: not alive, whatever the age of its heartbeat)."""
    now = time.time() if now is None else now
    stale_after_seconds = db.stale_after_seconds if stale_after_seconds is None else stale_after_seconds
    claims: dict[str, list[str]] = {}
    for claim in db.claims():
        if claim["claimed_by"]:
            claims.setdefault(claim["claimed_by"], []).append(claim["study_key"])
    report = []
    for row in db.nodes():
        detail = json.loads(row["detail_json"] or "{}")
        failed = list(detail.get("failed_threads") or [])
        ended = _pid_gone(row["host"], row["pid"])
        # a process whose worker thread ended stopped its heartbeat after saying so: not alive from that beat on
        report.append({"node_id": row["node_id"], "host": row["host"], "pid": row["pid"],
                       "roles": row["roles"].split(","), "started_at": row["started_at"], "last_seen": row["last_seen"],
                       "heartbeat_age_s": round(now - row["last_seen"], 1),
                       "alive": now - row["last_seen"] < stale_after_seconds and not failed and not ended,
                       "gone": now - row["last_seen"] > db.gone_after_seconds, "ended": ended,
                       "failed_threads": failed,
                       "analysing": claims.get(row["node_id"], []), "detail": detail})
    return report


def claims_report(db: StateDB, studies: list[dict], nodes: list[dict], now: float | None = None) -> None:
    """Add to each `analysing` study of a status report (node.status_report) its `claim`: `claimed_by`, `holder`
    (alive, stale, ended: its pid no longer runs on this machine, gone, or unlisted: no heartbeat row),
    `lease_until` / `expires_in_s` (epoch s / s, negative once expired), `analyse_processes` (live processes with
    the analyse role) and, where the holder is not alive, a `note` saying that nobody analyses the study now and
    what takes it over (break44c #5: a killed analyse process's study showed plain `analysing` for good)."""
    now = time.time() if now is None else now
    by_id = {node["node_id"]: node for node in nodes}
    analysers = sum(1 for node in nodes if node["alive"] and "analyse" in node["roles"])
    claims = {claim["study_key"]: claim for claim in db.claims()}
    for study in studies:
        claim = claims.get(study["study_key"]) if study["state"] == ANALYSING else None
        if claim is None or not claim["claimed_by"]:
            continue
        node = by_id.get(claim["claimed_by"])
        if node is None:
            holder, said = "unlisted", "which is no longer listed (stopped or killed)"
        elif node["alive"]:
            holder, said = "alive", ""
        elif node.get("ended"):
            holder, said = "ended", f"which no longer runs (pid {node['pid']} ended on this machine)"
        elif node["gone"]:
            holder, said = "gone", f"which is gone (no heartbeat for {node['heartbeat_age_s']:.0f} s)"
        else:
            holder, said = "stale", f"which has sent no heartbeat for {node['heartbeat_age_s']:.0f} s (hung or killed)"
        lease_until = claim["lease_until"]
        expires_in = None if lease_until is None else round(lease_until - now, 1)
        report = {"claimed_by": claim["claimed_by"], "holder": holder, "lease_until": lease_until,
                  "expires_in_s": expires_in, "analyse_processes": analysers}
        if holder != "alive":
            if expires_in is not None and expires_in > 0:
                when = time.strftime("%H:%M:%S", time.localtime(lease_until))
                then = f"its claim expires in {expires_in:.0f} s (at {when}), then an analyse process takes it over"
            else:
                then = "its claim has expired: waiting for an analyse process to take it over"
            report["note"] = (f"nobody is analysing it: claimed by {claim['claimed_by']}, {said}; {then}"
                              + ("" if analysers else "; no analyse process is running: start one"))
        study["claim"] = report


#: `dicomnode status` says receiving is nearly full (refused for larger instances) where an instance of this size (MB)
#: would not fit above node.min_free_space_mb: the rule /healthz applies (metrics.HEALTH_INSTANCE_BYTES)
STATUS_INSTANCE_MB = 1.0


def space_refusal(reason: str) -> bool:
    """Whether a refusal's reason (the SCP's text, heartbeat detail `last_refusal`) is a lack of space: the
    free-space floor, or a write that found the disk full or a quota used up."""
    text_ = reason.lower()
    return any(needle in text_ for needle in ("under the floor", "no space left", "quota", "disk is full", "inodes"))


def receiving_report(storage_dir: str | os.PathLike, min_free_space_mb: float, nodes: list[dict],
                     now: float | None = None) -> dict:
    """Whether C-STORE is refused for lack of space now, for `dicomnode status`: `refusing` when the free space of
    `storage_dir` (measured here) is under node.min_free_space_mb, or a live receiving process's latest C-STORE was
    refused (0xA700, none stored since) for a cause still there; `nearly_full` (with `largest_instance_mb`, in MB)
    where a 1 MB instance (STATUS_INSTANCE_MB, the rule /healthz applies) would not fit above the floor but smaller
    ones do and no live process's latest C-STORE was refused (break46b #3). Fewer than spool.MIN_FREE_INODES free
    inodes (`inodes_short`, with `free_inodes` and `min_free_inodes`) is `refusing` too: the receiver refuses every
    instance then, however many MB are free (break51b #1). A refusal for lack of space (space_refusal) is over once
    such an instance fits above that process's own floor (its heartbeat's `min_free_space_mb`; this config's where it
    publishes none) and the inodes are not short, and the report then says `space_back` instead; with the free space,
    the floor and the last refusal's reason and time (nodes: nodes_report, whose heartbeats publish them)."""
    now = time.time() if now is None else now
    try:
        room = free_space(Path(storage_dir))
        free, inodes = round(room.mb, 1), room.inodes
    except OSError:
        free = inodes = None
    inodes_short = inodes is not None and inodes < MIN_FREE_INODES
    last_refused_at, last_refusal = None, ""
    refusing_process = space_back = False
    for node in nodes:
        detail = node.get("detail") or {}
        refused_at = detail.get("last_refused_at")
        if not refused_at:
            continue
        if last_refused_at is None or refused_at > last_refused_at:
            last_refused_at, last_refusal = refused_at, detail.get("last_refusal") or ""
        if node["alive"] and refused_at > (detail.get("last_stored_at") or 0):
            floor = detail.get("min_free_space_mb", min_free_space_mb)
            if (space_refusal(detail.get("last_refusal") or "") and free is not None
                    and free - STATUS_INSTANCE_MB >= floor):
                space_back = True  # the cause is gone: the process's next C-STORE is stored
            else:
                refusing_process = True
    under_floor = free is not None and free - STATUS_INSTANCE_MB < min_free_space_mb
    # room left above the floor, but not for a 1 MB instance, and no live process's latest C-STORE was refused:
    # smaller instances are stored (break46b #3: "REFUSED" while 0.1 MB instances were being accepted)
    nearly_full = under_floor and not refusing_process and not inodes_short and free >= min_free_space_mb
    refusing = (under_floor and not nearly_full) or refusing_process or inodes_short
    return {"refusing": refusing, "space_back": space_back and not refusing and not nearly_full,
            "nearly_full": nearly_full,
            "largest_instance_mb": round(free - min_free_space_mb, 1) if nearly_full else None, "free_mb": free,
            "min_free_space_mb": min_free_space_mb, "free_inodes": inodes, "min_free_inodes": MIN_FREE_INODES,
            "inodes_short": inodes_short, "last_refused_at": last_refused_at, "last_refusal": last_refusal,
            "last_refused_s_ago": None if last_refused_at is None else round(now - last_refused_at, 1)}


def pid_running(host: str, pid: int) -> bool | None:
    """Whether process `pid` runs, where `host` is this machine (None: another machine's, not known here)."""
    if host != socket.gethostname():
        return None
    return not _pid_gone(host, pid)


def refused_studies(nodes: list[dict], studies: list[dict], purged: dict[str, float] | None = None) -> list[dict]:
    """The studies receiving processes refused instances of for lack of space recently (their heartbeats), newest
    first, one per study and calling AE, with `stored`: how many of its instances the state holds (0: the study is
    not listed among the studies at all), and `stored_since`: whether an instance of it was stored after its last
    refusal (its sender sends it again), also where retention purged it since (`purged`: Study Instance UID -> its
    last receipt, epoch s, StateDB.purged_last_received; then `purged_since` too); the others are what the admin asks
    their senders to send again."""
    instances = {study["study"]: study["instances"] for study in studies}
    merged: dict[tuple[str, str], dict] = {}
    for node in nodes:
        for item in (node.get("detail") or {}).get("refused") or ():
            key = (item["study_instance_uid"], item["calling_ae"])
            if key in merged:
                merged[key]["refused"] += item["refused"]
                merged[key]["first_refused_at"] = min(merged[key]["first_refused_at"], item["first_refused_at"])
                merged[key]["last_refused_at"] = max(merged[key]["last_refused_at"], item["last_refused_at"])
            else:
                merged[key] = dict(item)
    received = {study["study"]: study.get("last_received") for study in studies}
    for item in merged.values():
        item["stored"] = instances.get(item["study"], 0)
        # an instance of it stored after its last refusal: its sender is sending it again, nothing to ask for
        purged_received = (purged or {}).get(item["study_instance_uid"]) or 0
        item["stored_since"] = max(received.get(item["study"]) or 0, purged_received) > item["last_refused_at"]
        # stored after its refusal and purged by retention since: no row left to count
        item["purged_since"] = not item["stored"] and purged_received > item["last_refused_at"]
    return sorted(merged.values(), key=lambda item: item["last_refused_at"], reverse=True)


def attach_different_resends(nodes: list[dict], studies: list[dict], saved: Sequence[dict] = ()) -> None:
    """Give each study of `studies` (status_report) `different_resends`: the instances receiving processes were sent
    again with other content and did not store (net.scp.DifferentResends, from their heartbeats and, for processes
    stopped or restarted since, as they saved them: `saved`, StateDB.saved_different_resends), one entry per
    calling AE, merged over the processes, each with its `text` (scp.different_resend_text); [] where none."""
    merged: dict[tuple[str, str], dict] = {}
    by_process = {entry["process"]: entry["items"] for entry in saved}
    beating = {node.get("node_id"): (node.get("detail") or {}).get("different_resends") for node in nodes}
    # a process with a heartbeat: what it holds now (what it saved, or newer); any other: what it saved
    lists = [items or by_process.get(process) or () for process, items in beating.items()]
    lists += [items for process, items in by_process.items() if process not in beating]
    for items in lists:
        for item in items:
            key = (item["study"], item["calling_ae"])
            if key in merged:
                found = merged[key]
                found["instances"] += item["instances"]
                found["differing"] = sorted(set(found["differing"]) | set(item.get("differing") or ()))
                found["first_at"] = min(found["first_at"], item["first_at"])
                found["last_at"] = max(found["last_at"], item["last_at"])
            else:
                merged[key] = {**item, "differing": list(item.get("differing") or ())}
    for study in studies:
        study["different_resends"] = [{**item, "text": different_resend_text(item)} for (short, _), item
                                      in sorted(merged.items()) if short == study["study"]]


# --- `dicomnode state ...` -----------------------------------------------------------------------------------------


def cmd_state_upgrade(args) -> int:
    config = load_config(args.config)
    db = open_state(config, upgrade=False, check=False)
    try:
        version = schema_version(db.engine)
        blockers = migration_blockers(db)
        if blockers and not args.force:  # they would go on with the old semantics on the new schema
            print(f"error: state {describe_url(db.url)} has schema version {version or 'none'} and is in use: "
                  f"{'; '.join(blockers)}. Stop them first (systemctl stop dicomnode on each machine), then run "
                  f"`dicomnode state upgrade` again and start the new version; a process killed without stopping "
                  f"counts as gone {db.gone_after_seconds:.0f} s after its last heartbeat (`--force` migrates "
                  f"anyway). Nothing was changed", file=sys.stderr)
            return 1
        if blockers:
            print(f"warning: --force: migrating although the state is in use: {'; '.join(blockers)}",
                  file=sys.stderr)
        older = older_schema(db.engine)
        if older is not None and not db.is_sqlite and not args.yes:  # the way back is the admin's dump, taken now
            print(f"error: {describe_url(db.url)} has schema version {older}: `state upgrade` migrates it to "
                  f"{SCHEMA_VERSION} in place and keeps no copy of it, so the only way back to the older dicomnode "
                  f"is a dump taken before the migration. Take it first (`pg_dump -Fc -f "
                  f"dicomnode-before-upgrade.dump DBNAME`, as a user that may read the database), then run `dicomnode "
                  f"state upgrade --yes` (README: Upgrading). Nothing was changed", file=sys.stderr)
            return 1
        copy = None if args.no_backup else keep_copy_before_upgrade(db.engine)
        if older is not None and not db.is_sqlite:
            print(f"note: --yes: {describe_url(db.url)} is migrated from schema {older} in place and no copy of it is "
                  f"kept: the way back to the older dicomnode is the `pg_dump` of it taken before this (README: "
                  f"Upgrading)", file=sys.stderr)
        before, after = upgrade_schema(db.engine, keep_copy=False)
    except StateSchemaError as exc:
        print(f"error: {exc}")
        return 1
    finally:
        db.close()
    # a state with tables but no recorded version is schema 1 (older_schema), migrated like any other
    was = before if before is not None else older
    if was is None:
        print(f"state {describe_url(db.url)}: was empty, dicomnode schema version {after} created")
    else:
        print(f"state {describe_url(db.url)}: schema version {was}{' (none recorded)' if before is None else ''} "
              f"-> {after}")
    if was is not None and was < after:
        print(f"  {OLDER_VERSIONS_AFTER_UPGRADE}")
    if copy is not None:
        print(f"  the schema {was} state before this migration is kept at {copy} (to go back: stop the node, "
              f"install the older dicomnode, remove {Path(db.path).name}-wal and -shm and put this copy in place of "
              f"{Path(db.path).name}; README: Upgrading)")
    elif args.no_backup and was is not None and was < after:
        print("  --no-backup: no copy of the state before this migration was kept")
    if args.config is None and was is None:
        print(f"  note: no --config given, so this is the embedded defaults' state under the current folder "
              f"({config.node.storage_dir}); pass the running node's --config to upgrade its state", file=sys.stderr)
    elif was is None and config.state.url is None and config._relative_storage_dir is not None:
        print(f"  note: {config.storage_dir_origin()}: run from another folder, this command and the node would "
              f"use another state; give node.storage_dir as an absolute path", file=sys.stderr)
    return 0


def add_state_parser(sub: argparse._SubParsersAction) -> None:
    """`dicomnode state upgrade`: create or migrate the state database's schema (run once per version)."""
    parser = sub.add_parser("state", help="state database tools")
    state_sub = parser.add_subparsers(dest="state_command", required=True, metavar="ACTION")
    upgrade = state_sub.add_parser("upgrade", help="create or migrate the schema of [state] url (or the SQLite "
                                                   "default); safe to run again; refuses a migration while "
                                                   "processes run on the state")
    upgrade.add_argument("--config", help="TOML config whose [state] url (or storage_dir) names the database "
                                          "(default: embedded defaults)")
    upgrade.add_argument("--force", action="store_true",
                         help="migrate even while processes use the state (they go on with their old semantics)")
    upgrade.add_argument("--no-backup", action="store_true",
                         help="keep no copy of an embedded SQLite state before migrating it (default: a copy "
                              "state.sqlite3.schema<N>-<date> beside it; a PostgreSQL state is never copied: pg_dump "
                              "it first)")
    upgrade.add_argument("--yes", action="store_true",
                         help="migrate a PostgreSQL state of an older schema, which is done in place with no copy "
                              "kept: take a pg_dump of it first (without --yes the command says so and changes "
                              "nothing)")
    upgrade.set_defaults(func=cmd_state_upgrade)


def state_location(config) -> str:
    """What `[state] url` resolves to, for messages (its secrets masked: describe_url)."""
    if config.state.url:
        return describe_url(state_url(config.state.url))
    return str(Path(config.node.storage_dir) / "state.sqlite3")
