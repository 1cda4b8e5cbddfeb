"""A destination that is down, or refuses every object, or stores with a warning (break51a #3, #5): a failed
batch comes due again as a whole, so each back-off round is one association per destination, not one per object;
one WARNING per association and status, not one per object; a warning status (0xB000 coercion, any 0xBxxx,
0x0001) is stored, and said."""
from __future__ import annotations

import logging
import time

import pytest

import dicomnode.dispatch as dispatch
from dicomnode.config import DispatchConfig
from dicomnode.dispatch import Dispatcher
from dicomnode.net.scu import send_files
from tests.hardening import test_send_diagnostics as diagnostics
from tests.hardening.test_send_diagnostics import mr_file, queue_results
from tests.peers import free_port

STUDY = "1.2.826.0.1.3680043.8.498.51"

store, peers = diagnostics.store, diagnostics.peers  # fixtures: a storage folder and its state; storage SCPs


def associations(monkeypatch) -> list[int]:
    """Counts the dispatcher's associations: one entry (its object count) per send_files call."""
    made: list[int] = []

    def counted(paths, *args, **kwargs):
        made.append(len(paths))
        return send_files(paths, *args, **kwargs)

    monkeypatch.setattr(dispatch, "send_files", counted)
    return made


def run_until_dead(dispatcher: Dispatcher, db, count: int, seconds: float = 60.0) -> None:
    dispatcher.start()
    try:
        deadline = time.monotonic() + seconds
        while sum(row["state"] == "dead" for row in db.outbox_for(STUDY)) < count:
            assert time.monotonic() < deadline, [(row["state"], row["attempts"]) for row in db.outbox_for(STUDY)]
            time.sleep(0.05)
    finally:
        dispatcher.stop(5)


def test_a_destination_that_refuses_connections_gets_one_association_per_back_off_round(store, monkeypatch, caplog):
    """Each failed round used to give each object its own due time (after its own database write), so the next
    rounds claimed one or two objects each: ~130 connection attempts for one study's objects where 4 do."""
    root, db = store
    closed = free_port()
    queue_results(db, root, STUDY, [("pacs", closed, mr_file(root / "results", f"r{n}")) for n in range(60)])
    made = associations(monkeypatch)
    config = DispatchConfig(max_attempts=4, initial_backoff_seconds=0.3, backoff_factor=1, max_backoff_seconds=0.3)
    caplog.set_level(logging.INFO, logger="dicomnode.dispatch")
    run_until_dead(Dispatcher(db, root, config, "DICOMNODE"), db, 60)
    assert made == [60] * 4
    assert {row["attempts"] for row in db.outbox_for(STUDY)} == {4}
    failed = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "cannot connect" in
              r.getMessage()]
    assert len(failed) == 4, failed


def test_a_refusal_of_every_object_is_one_association_and_one_warning_per_round(store, peers, monkeypatch, caplog):
    """0xA700 for every C-STORE: one association per round carrying the whole batch, one WARNING per association
    naming the count and the status (the objects at DEBUG), not one per object."""
    root, db = store
    peer = peers(mode="status", status=0xA700)
    queue_results(db, root, STUDY, [("pacs", peer.port, mr_file(root / "results", f"r{n}")) for n in range(12)])
    made = associations(monkeypatch)
    config = DispatchConfig(max_attempts=3, initial_backoff_seconds=0.3, backoff_factor=1, max_backoff_seconds=0.3)
    caplog.set_level(logging.DEBUG, logger="dicomnode.dispatch")
    run_until_dead(Dispatcher(db, root, config, "DICOMNODE"), db, 12)
    assert made == [12] * 3 and len(peer.received) == 36
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("dicomnode")]
    assert len(warnings) == 3, warnings
    assert all("12 result object(s) of study" in line and "not delivered: refused: status 0xA700 (Refused: Out of "
               "Resources)" in line for line in warnings), warnings
    listed = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG and "those 12" in r.getMessage()]
    assert len(listed) == 3 and all(line.count("1.2.826.0.1.3680043.8.498.51.9.") == 12 for line in listed)


@pytest.mark.parametrize("status, meaning", [
    (0xB000, "Warning: Coercion of Data Elements"), (0xB006, "Warning: Element Discarded"),
    (0xB007, "Warning: Data Set Does Not Match SOP Class"),
    (0xB123, "Warning: not defined for C-STORE (PS3.4 B.2.3), stored"),
    (0x0001, "Warning: not defined for C-STORE (PS3.4 B.2.3), stored")])
def test_a_warning_status_is_stored_and_said_once_per_association(store, peers, caplog, status, meaning):
    """A warning status means stored (PS3.4 B.2.3): sent, not retried, and one WARNING names the status, its
    meaning and the objects (the destination may hold them changed, e.g. a coerced Patient ID)."""
    root, db = store
    peer = peers(mode="status", status=status)
    queue_results(db, root, STUDY, [("pacs", peer.port, mr_file(root / "results", f"r{n}")) for n in range(3)])
    caplog.set_level(logging.INFO, logger="dicomnode.dispatch")
    assert Dispatcher(db, root, DispatchConfig(), "DICOMNODE").run_once() == 3
    assert {row["state"] for row in db.outbox_for(STUDY)} == {"sent"} and len(peer.received) == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("dicomnode")]
    assert len(warnings) == 1, warnings
    assert ("3 result object(s) of study" in warnings[0]
            and f"stored, but with a warning: status 0x{status:04X} ({meaning})" in warnings[0]), warnings
    assert all(f"MR series 7 {STUDY}.9.{n}" in warnings[0] for n in range(3)), warnings[0]


def test_send_files_says_which_warning_a_stored_instance_got(tmp_path, peers):
    peer = peers(mode="status", status=0xB000)
    [result] = send_files([mr_file(tmp_path, "one")], "PACS", "127.0.0.1", peer.port, timeout=10)
    assert result.ok and result.status == 0xB000
    assert result.warning == "status 0xB000 (Warning: Coercion of Data Elements)"
