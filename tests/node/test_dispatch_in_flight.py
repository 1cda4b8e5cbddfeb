"""A dispatcher killed (kill -9, a crash) after the destination stored an object and before its response was
recorded (break44c #1): the object is sent again when dispatch resumes, and that re-send is no longer silent. The
attempt is recorded before each C-STORE (the outbox item's last_error says it is in flight), so the resumed
dispatcher (single node or the scale-out dispatch role: the same Dispatcher) logs a WARNING naming the objects it
sends again ("the destination may already hold them under the same SOP Instance UID"), and `dicomnode status` lists
them, before and after the re-send."""
from __future__ import annotations

import logging
import sqlite3

import pydicom
import pytest
import sqlalchemy

from dicomnode.cli import _print_status
from dicomnode.config import DispatchConfig
from dicomnode.dispatch import Dispatcher
from dicomnode.node import STOPPED_IN_FLIGHT, status_report
from dicomnode.state import OUTBOX_IN_FLIGHT, OUTBOX_RESENT, StateDB, prepare_storage_dir
from tests.hardening.test_send_diagnostics import mr_file, queue_results, store  # noqa: F401 (store: fixture)
from tests.node.test_dispatch_slow_destination import SlowPeer, destination
from tests.state_backends import pg_server, state_location  # noqa: F401 (fixtures)


class Killed(BaseException):
    """The process dies here (kill -9): nothing after it runs, nothing is cleaned up."""


@pytest.fixture
def peer():
    peer = SlowPeer(delay=0.0)
    yield peer
    peer.close()


def killed_after_the_destination_stored(db: StateDB, root, peer, study: str, killed_at: int) -> list:
    """Send the study's queued items on one association and die once the destination has answered item number
    `killed_at`, before that answer is recorded. Returns the outbox rows as claimed."""
    rows = db.claim_sends()
    dispatcher = Dispatcher(db, root, DispatchConfig(max_attempts=3, initial_backoff_seconds=60), "DICOMNODE",
                            destinations=lambda: [destination(peer.port, 10.0)])
    real_mark_sent = db.mark_sent

    def mark_sent(ids):
        if rows[killed_at]["id"] in ids:
            raise Killed()
        real_mark_sent(ids)

    db.mark_sent = mark_sent
    with pytest.raises(Killed):
        dispatcher._send_batch("pacs", "PACS", "127.0.0.1", peer.port, rows, "DICOMNODE")
    with db._write() as connection:  # its claims lapse (no heartbeat renews them any more)
        connection.execute(sqlalchemy.text("UPDATE outbox SET lease_until=0 WHERE claimed_by IS NOT NULL"))
    db.close()
    return rows


def test_an_object_in_flight_at_a_kill_is_sent_again_with_a_warning_and_counted_in_status(state_location, tmp_path,
                                                                                          peer, caplog, capsys):
    root = prepare_storage_dir(tmp_path / "store")
    db = StateDB(state_location, process_id="vm:1001", upgrade=True)
    files = [mr_file(root / "results", name) for name in ("seg", "sr", "pdf")]
    queue_results(db, root, "1.8", [("pacs", peer.port, path) for path in files])
    rows = killed_after_the_destination_stored(db, root, peer, "1.8", killed_at=1)
    uids = [str(pydicom.dcmread(path).SOPInstanceUID) for path in files]
    assert peer.received == uids[:2]  # the SEG recorded sent, the SR stored by the destination, the PDF never sent

    restarted = StateDB(state_location, process_id="vm:1002")
    try:
        by_id = {row["id"]: row for row in restarted.outbox_for("1.8")}
        assert by_id[rows[1]["id"]]["last_error"] == OUTBOX_IN_FLIGHT
        assert by_id[rows[2]["id"]]["last_error"] is None  # never on the wire: nothing says it was
        (study,) = status_report(restarted)["studies"]
        retrying = study["retrying"]  # before the re-send, status says what happened to it
        assert [r["sop_instance_uid"] for r in retrying] == ["1.8.9.1"] and retrying[0]["error"] == STOPPED_IN_FLIGHT

        dispatcher = Dispatcher(restarted, root, DispatchConfig(max_attempts=3, initial_backoff_seconds=60),
                                "DICOMNODE", destinations=lambda: [destination(peer.port, 10.0)])
        with caplog.at_level(logging.INFO):
            assert dispatcher.run_once() == 2
        assert peer.received == uids[:2] + uids[1:]  # the SR twice: the destination may hold it twice
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, warnings
        assert "re-sending 1 result object(s)" in warnings[0] and "1.8.9.1" in warnings[0]
        assert "the destination may already hold them under the same SOP Instance UID" in warnings[0]
        assert "1.8.9.0" not in warnings[0] and "1.8.9.2" not in warnings[0]

        by_id = {row["id"]: row for row in restarted.outbox_for("1.8")}
        assert all(row["state"] == "sent" for row in by_id.values())
        assert by_id[rows[1]["id"]]["last_error"] == OUTBOX_RESENT
        assert by_id[rows[0]["id"]]["last_error"] is None and by_id[rows[2]["id"]]["last_error"] is None
        report = status_report(restarted)
        (study,) = report["studies"]
        assert study["retrying"] == [] and study["state"] == "done"
        assert study["resent"] == [{"destination": "pacs", "sop_instance_uid": "1.8.9.1", "state": "sent"}]
        _print_status(report, False, 30, 90)
        out = capsys.readouterr().out
        assert "result objects sent again after a dispatcher stopped with their C-STORE in flight" in out
        assert "1.8 -> pacs: 1.8.9.1" in out
    finally:
        restarted.close()


def test_a_send_answered_and_recorded_leaves_no_in_flight_mark(store, peer, caplog):
    root, db = store
    queue_results(db, root, "1.9", [("pacs", peer.port, mr_file(root / "results", name)) for name in ("a", "b")])
    dispatcher = Dispatcher(db, root, DispatchConfig(max_attempts=3, initial_backoff_seconds=60), "DICOMNODE",
                            destinations=lambda: [destination(peer.port, 10.0)])
    with caplog.at_level(logging.WARNING):
        assert dispatcher.run_once() == 2
    assert caplog.records == []
    assert [(row["state"], row["last_error"], row["attempts"]) for row in db.outbox_for("1.9")] == [
        ("sent", None, 0), ("sent", None, 0)]
    assert status_report(db)["studies"][0]["resent"] == []


def test_an_attempt_that_cannot_be_recorded_is_not_sent(store, peer, caplog):
    """No C-STORE goes out whose attempt the state database would not take (a full disk, an outage): afterwards a
    crash could not tell it was in flight."""
    root, db = store
    queue_results(db, root, "1.10", [("pacs", peer.port, mr_file(root / "results", name)) for name in ("a", "b")])
    dispatcher = Dispatcher(db, root, DispatchConfig(max_attempts=3, initial_backoff_seconds=60), "DICOMNODE",
                            destinations=lambda: [destination(peer.port, 10.0)])
    real = db.mark_in_flight
    calls = []

    def mark_in_flight(outbox_id, again=False, address=None):
        calls.append(outbox_id)
        if len(calls) == 2:
            raise sqlite3.OperationalError("database or disk is full")
        real(outbox_id, again, address)

    db.mark_in_flight = mark_in_flight
    with pytest.raises(sqlite3.OperationalError):
        dispatcher.run_once()
    assert len(peer.received) == 1  # the second object was not put on the wire
    assert "database or disk is full" in caplog.text
    del db.mark_in_flight
    assert dispatcher.run_once() == 1  # the state takes writes again: the rest goes
    assert [row["state"] for row in db.outbox_for("1.10")] == ["sent", "sent"] and len(peer.received) == 2


def test_a_re_sent_object_stays_listed_after_its_re_send_failed_and_a_later_attempt_succeeded(store):
    """review44 #5: an object re-sent after a kill keeps its `resent` mark through a failed re-send and an ordinary
    attempt that then succeeds: the destination may hold it twice whatever came after."""
    root, db = store
    queue_results(db, root, "1.11", [("pacs", 104, mr_file(root / "results", "a"))])
    (item,) = db.outbox_for("1.11")
    db.mark_in_flight(item["id"])  # the dispatcher is killed here
    db.mark_in_flight(item["id"], again=True)  # re-sent after the restart ...
    db.mark_failed_send(item["id"], "C-STORE status 0xA700: out of resources", 0.0, dead=False)  # ... refused
    (row,) = db.outbox_for("1.11")
    assert row["last_error"].startswith("re-sent") and "0xA700" in row["last_error"]
    assert [r["id"] for r in db.outbox_resent()] == [item["id"]]
    db.mark_in_flight(item["id"])  # the next attempt
    db.mark_sent([item["id"]])
    (row,) = db.outbox_for("1.11")
    assert row["state"] == "sent" and row["last_error"] == OUTBOX_RESENT
    assert status_report(db)["studies"][0]["resent"] == [
        {"destination": "pacs", "sop_instance_uid": row["sop_instance_uid"], "state": "sent"}]


class RefusingPeer(SlowPeer):
    """Answers 0xA700 (out of resources) to the C-STORE of the instances in `refuse`."""

    def __init__(self):
        self.refuse: set[str] = set()
        super().__init__(delay=0.0)

    def _store(self, event):
        uid = str(event.request.AffectedSOPInstanceUID)
        if uid in self.refuse:
            self.received.append(uid)
            return 0xA700
        return super()._store(event)


def test_a_refusal_answered_while_the_next_attempt_cannot_be_recorded_is_recorded_as_a_failed_attempt(store, caplog):
    """review44 #6: the destination refused the first object, then the state database would not take the second's
    attempt: once it takes writes again, the refusal is a failed attempt (charged, not 'in flight'), not an object a
    stopped dispatcher had in flight (re-sent with a WARNING, uncharged)."""
    root, db = store
    peer = RefusingPeer()
    try:
        files = [mr_file(root / "results", name) for name in ("a", "b")]
        peer.refuse.add(str(pydicom.dcmread(files[0]).SOPInstanceUID))
        queue_results(db, root, "1.12", [("pacs", peer.port, path) for path in files])
        dispatcher = Dispatcher(db, root, DispatchConfig(max_attempts=3, initial_backoff_seconds=60), "DICOMNODE",
                                destinations=lambda: [destination(peer.port, 10.0)])
        real, calls = db.mark_in_flight, []

        def mark_in_flight(outbox_id, again=False, address=None):
            calls.append(outbox_id)
            if len(calls) == 2:
                raise sqlite3.OperationalError("database or disk is full")
            real(outbox_id, again, address)
        db.mark_in_flight = mark_in_flight
        with pytest.raises(sqlite3.OperationalError):
            dispatcher.run_once()
        del db.mark_in_flight
        with caplog.at_level(logging.WARNING):
            assert dispatcher.run_once() == 1  # the second object; the refused one waits for its back-off
        refused, sent = db.outbox_for("1.12")
        assert sent["state"] == "sent"
        assert refused["state"] == "pending" and refused["attempts"] == 1, dict(refused)
        assert not refused["last_error"].startswith("in flight") and "A700" in refused["last_error"].upper()
        assert "re-sending" not in caplog.text
    finally:
        peer.close()
