"""The node's durable state in SQLite: instance index, per-study state machine, analyses, results and outbox."""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

SCHEMA_VERSION = 1

# Study state machine. A late instance moves any state after RECEIVED back to RECEIVED with a new generation.
RECEIVED = "received"
COMPLETE = "complete"
ANALYSING = "analysing"
RESULTS_READY = "results_ready"
SENDING = "sending"
DONE = "done"
FAILED = "failed"
STUDY_STATES = (RECEIVED, COMPLETE, ANALYSING, RESULTS_READY, SENDING, DONE, FAILED)
UNFINISHED_STATES = (RECEIVED, COMPLETE, ANALYSING, RESULTS_READY, SENDING)

OUTBOX_PENDING = "pending"
OUTBOX_SENT = "sent"
OUTBOX_DEAD = "dead"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid TEXT PRIMARY KEY,
    study_key TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    transfer_syntax TEXT,
    modality TEXT,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    calling_ae TEXT,
    received_at REAL NOT NULL,
    series_number INTEGER,
    slice_key TEXT,
    cardiac_images INTEGER,
    frames INTEGER,
    images_in_acquisition INTEGER
);
CREATE INDEX IF NOT EXISTS instances_study ON instances(study_key);
CREATE TABLE IF NOT EXISTS studies (
    study_key TEXT PRIMARY KEY,
    study_instance_uid TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    calling_ae TEXT,
    calling_host TEXT,
    first_received REAL NOT NULL,
    last_received REAL NOT NULL,
    updated_at REAL NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0,
    route TEXT,
    summary_json TEXT
);
CREATE TABLE IF NOT EXISTS analyses (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    study_key TEXT NOT NULL,
    generation INTEGER NOT NULL,
    state TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    reason TEXT,
    summary_json TEXT
);
CREATE TABLE IF NOT EXISTS results (
    sop_instance_uid TEXT PRIMARY KEY,
    analysis_id INTEGER NOT NULL,
    study_key TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    path TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    analysis_id INTEGER NOT NULL,
    study_key TEXT NOT NULL,
    destination TEXT NOT NULL,
    ae_title TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    path TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    sent_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_attempt_at);
"""


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


@dataclass
class StoreOutcome:
    stored: bool  # False: a duplicate SOP Instance UID, already stored
    study_key: str
    study_state_before: str | None  # None: a new study
    generation: int


class StateDB:
    """SQLite in WAL mode with synchronous=FULL: a committed transaction survives power loss."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        old_umask = os.umask(0o077)
        try:
            self._connection = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        finally:
            os.umask(old_umask)
        if new:
            os.chmod(self.path, 0o600)
        self._connection.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        with self._lock:
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA synchronous=FULL")
            self._connection.execute("PRAGMA foreign_keys=ON")
            self._connection.executescript(_SCHEMA)
            self._connection.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                yield self._connection
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")

    def query(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._connection.execute(sql, params).fetchall()

    # --- instances -------------------------------------------------------------------------------------------

    def has_instance(self, sop_instance_uid: str) -> bool:
        return bool(self.query("SELECT 1 FROM instances WHERE sop_instance_uid=?", (sop_instance_uid,)))

    def add_instance(self, row: InstanceRow, calling_host: str | None = None) -> StoreOutcome:
        """Index one durable instance and advance its study; a late instance re-opens a finished study."""
        now = time.time()
        with self.transaction() as db:
            exists = db.execute("SELECT 1 FROM instances WHERE sop_instance_uid=?", (row.sop_instance_uid,)).fetchone()
            study = db.execute("SELECT state, generation FROM studies WHERE study_key=?", (row.study_key,)).fetchone()
            if exists:
                return StoreOutcome(False, row.study_key, study["state"] if study else None, study["generation"] if study else 0)
            db.execute(
                "INSERT INTO instances VALUES (:sop_instance_uid, :study_key, :study_instance_uid, :series_instance_uid,"
                " :sop_class_uid, :transfer_syntax, :modality, :path, :size, :calling_ae, :received_at, :series_number,"
                " :slice_key, :cardiac_images, :frames, :images_in_acquisition)",
                row.__dict__,
            )
            if study is None:
                db.execute(
                    "INSERT INTO studies(study_key, study_instance_uid, state, calling_ae, calling_host, first_received,"
                    " last_received, updated_at, generation) VALUES (?,?,?,?,?,?,?,?,0)",
                    (row.study_key, row.study_instance_uid, RECEIVED, row.calling_ae, calling_host, now, now, now),
                )
                return StoreOutcome(True, row.study_key, None, 0)
            generation = study["generation"]
            if study["state"] != RECEIVED:
                generation += 1
            db.execute(
                "UPDATE studies SET state=?, reason=NULL, last_received=?, updated_at=?, generation=? WHERE study_key=?",
                (RECEIVED, now, now, generation, row.study_key),
            )
            return StoreOutcome(True, row.study_key, study["state"], generation)

    def study_instances(self, study_key: str) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM instances WHERE study_key=? ORDER BY received_at", (study_key,))

    # --- studies ---------------------------------------------------------------------------------------------

    def study(self, study_key: str) -> sqlite3.Row | None:
        rows = self.query("SELECT * FROM studies WHERE study_key=?", (study_key,))
        return rows[0] if rows else None

    def find_studies(self, text: str) -> list[sqlite3.Row]:
        """Studies whose key or Study Instance UID equals `text` or starts with it."""
        return self.query(
            "SELECT * FROM studies WHERE study_key=? OR study_instance_uid=? OR study_key LIKE ? ORDER BY first_received",
            (text, text, text.replace("%", "") + "%"),
        )

    def studies(self, states: tuple[str, ...] | None = None) -> list[sqlite3.Row]:
        if states is None:
            return self.query("SELECT * FROM studies ORDER BY first_received")
        marks = ",".join("?" * len(states))
        return self.query(f"SELECT * FROM studies WHERE state IN ({marks}) ORDER BY first_received", states)

    def set_study_state(
        self, study_key: str, state: str, reason: str | None = None, *, expect: tuple[str, ...] | None = None,
        generation: int | None = None, **columns,
    ) -> bool:
        """Move a study to `state`; with `expect`/`generation`, only from those states / that generation."""
        assert state in STUDY_STATES
        sets = ["state=?", "reason=?", "updated_at=?"] + [f"{name}=?" for name in columns]
        params: list = [state, reason, time.time(), *columns.values()]
        where = ["study_key=?"]
        params.append(study_key)
        if expect:
            where.append(f"state IN ({','.join('?' * len(expect))})")
            params.extend(expect)
        if generation is not None:
            where.append("generation=?")
            params.append(generation)
        with self.transaction() as db:
            cursor = db.execute(f"UPDATE studies SET {', '.join(sets)} WHERE {' AND '.join(where)}", params)
            return cursor.rowcount == 1

    # --- analyses --------------------------------------------------------------------------------------------

    def start_analysis(self, study_key: str, generation: int) -> int | None:
        """Mark the study analysing and open an analysis row; None if the study moved on meanwhile."""
        now = time.time()
        with self.transaction() as db:
            cursor = db.execute(
                "UPDATE studies SET state=?, updated_at=? WHERE study_key=? AND generation=? AND state IN (?, ?)",
                (ANALYSING, now, study_key, generation, COMPLETE, ANALYSING),
            )
            if cursor.rowcount != 1:
                return None
            db.execute(
                "UPDATE analyses SET state='abandoned', finished_at=? WHERE study_key=? AND state='running'",
                (now, study_key),
            )
            cursor = db.execute(
                "INSERT INTO analyses(study_key, generation, state, started_at) VALUES (?,?, 'running', ?)",
                (study_key, generation, now),
            )
            return int(cursor.lastrowid)

    def finish_analysis(
        self, analysis_id: int, study_key: str, generation: int, summary: dict,
        results: list[tuple[str, str, str, str]], outbox: list[dict],
    ) -> bool:
        """Atomically record results + outbox and move the study on; False if a newer generation superseded it.

        results: (sop_instance_uid, series_instance_uid, sop_class_uid, relative path)
        outbox: dicts with destination, ae_title, host, port, sop_instance_uid, path
        """
        now = time.time()
        summary_json = json.dumps(summary)
        with self.transaction() as db:
            study = db.execute("SELECT generation, state FROM studies WHERE study_key=?", (study_key,)).fetchone()
            if study is None or study["generation"] != generation or study["state"] != ANALYSING:
                db.execute(
                    "UPDATE analyses SET state='superseded', finished_at=? WHERE id=?", (now, analysis_id)
                )
                return False
            for sop, series, sop_class, path in results:
                db.execute("INSERT INTO results VALUES (?,?,?,?,?,?)", (sop, analysis_id, study_key, series, sop_class, path))
            for item in outbox:
                db.execute(
                    "INSERT INTO outbox(analysis_id, study_key, destination, ae_title, host, port, sop_instance_uid,"
                    " path, state, attempts, next_attempt_at) VALUES (?,?,?,?,?,?,?,?,?,0,?)",
                    (analysis_id, study_key, item["destination"], item["ae_title"], item["host"], item["port"],
                     item["sop_instance_uid"], item["path"], OUTBOX_PENDING, now),
                )
            db.execute(
                "UPDATE analyses SET state='done', finished_at=?, summary_json=? WHERE id=?", (now, summary_json, analysis_id)
            )
            db.execute(
                "UPDATE studies SET state=?, updated_at=?, summary_json=? WHERE study_key=?",
                (SENDING if outbox else DONE, now, summary_json, study_key),
            )
            return True

    def fail_analysis(self, analysis_id: int, study_key: str, generation: int, reason: str) -> None:
        now = time.time()
        with self.transaction() as db:
            db.execute("UPDATE analyses SET state='failed', finished_at=?, reason=? WHERE id=?", (now, reason, analysis_id))
            db.execute(
                "UPDATE studies SET state=?, reason=?, updated_at=? WHERE study_key=? AND generation=? AND state=?",
                (FAILED, reason, now, study_key, generation, ANALYSING),
            )

    def earlier_reports(self, study_key: str, sop_class_uid: str) -> list[sqlite3.Row]:
        """Result objects of one SOP class from earlier analyses of the study (what a re-analysis supersedes)."""
        return self.query(
            "SELECT r.* FROM results r JOIN analyses a ON a.id=r.analysis_id"
            " WHERE r.study_key=? AND r.sop_class_uid=? AND a.state='done' ORDER BY a.id",
            (study_key, sop_class_uid),
        )

    # --- outbox ----------------------------------------------------------------------------------------------

    def due_sends(self, now: float | None = None, limit: int = 500) -> list[sqlite3.Row]:
        now = time.time() if now is None else now
        return self.query(
            "SELECT * FROM outbox WHERE state=? AND next_attempt_at<=? ORDER BY id LIMIT ?", (OUTBOX_PENDING, now, limit)
        )

    def next_send_time(self) -> float | None:
        rows = self.query("SELECT MIN(next_attempt_at) AS t FROM outbox WHERE state=?", (OUTBOX_PENDING,))
        return rows[0]["t"] if rows and rows[0]["t"] is not None else None

    def mark_sent(self, outbox_ids: list[int]) -> None:
        now = time.time()
        with self.transaction() as db:
            for outbox_id in outbox_ids:
                db.execute("UPDATE outbox SET state=?, sent_at=?, last_error=NULL WHERE id=?", (OUTBOX_SENT, now, outbox_id))
            self._settle_studies(db, outbox_ids)

    def mark_failed_send(self, outbox_id: int, error: str, next_attempt_at: float, dead: bool) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE outbox SET attempts=attempts+1, last_error=?, next_attempt_at=?, state=? WHERE id=?",
                (error[:500], next_attempt_at, OUTBOX_DEAD if dead else OUTBOX_PENDING, outbox_id),
            )
            self._settle_studies(db, [outbox_id])

    def _settle_studies(self, db: sqlite3.Connection, outbox_ids: list[int]) -> None:
        """A sending study whose outbox has nothing pending becomes done, or failed when any send is dead."""
        marks = ",".join("?" * len(outbox_ids))
        keys = {r["study_key"] for r in db.execute(f"SELECT study_key FROM outbox WHERE id IN ({marks})", outbox_ids)}
        now = time.time()
        for key in keys:
            counts = {
                r["state"]: r["n"]
                for r in db.execute("SELECT state, COUNT(*) AS n FROM outbox WHERE study_key=? GROUP BY state", (key,))
            }
            if counts.get(OUTBOX_PENDING):
                continue
            if counts.get(OUTBOX_DEAD):
                db.execute(
                    "UPDATE studies SET state=?, reason=?, updated_at=? WHERE study_key=? AND state=?",
                    (FAILED, f"{counts[OUTBOX_DEAD]} result object(s) could not be delivered (dead letter)", now, key, SENDING),
                )
            else:
                db.execute("UPDATE studies SET state=?, reason=NULL, updated_at=? WHERE study_key=? AND state=?",
                           (DONE, now, key, SENDING))

    def outbox_for(self, study_key: str | None = None, state: str | None = None) -> list[sqlite3.Row]:
        sql, params = "SELECT * FROM outbox WHERE 1=1", []
        if study_key:
            sql += " AND study_key=?"
            params.append(study_key)
        if state:
            sql += " AND state=?"
            params.append(state)
        return self.query(sql + " ORDER BY id", tuple(params))

    def retry_dead(self, study_key: str) -> int:
        """Re-queue a study's dead letters; returns how many."""
        now = time.time()
        with self.transaction() as db:
            cursor = db.execute(
                "UPDATE outbox SET state=?, attempts=0, next_attempt_at=? WHERE study_key=? AND state=?",
                (OUTBOX_PENDING, now, study_key, OUTBOX_DEAD),
            )
            if cursor.rowcount:
                db.execute("UPDATE studies SET state=?, reason=NULL, updated_at=? WHERE study_key=? AND state IN (?,?)",
                           (SENDING, now, study_key, FAILED, DONE))
            return cursor.rowcount

    def counts_by_state(self) -> dict[str, int]:
        return {r["state"]: r["n"] for r in self.query("SELECT state, COUNT(*) AS n FROM studies GROUP BY state")}
