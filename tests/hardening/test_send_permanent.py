"""Permanent refusals are dead letters at once, transient ones keep the back-off (break3 M2), and a dead letter names
the object's kind and series (break3 L3), against in-process pynetdicom peers on loopback: C-STORE statuses 0xA9xx
"Data Set Does Not Match SOP Class" and 0xCxxx "Cannot Understand" (PS3.4 Annex B) are not retried max_attempts
times; 0xA7xx "Out of Resources" and an A-ASSOCIATE-RJ (PS3.8), "rejected-transient" or "rejected-permanent" (the AE
titles are at fault, which an admin fixes or a PACS reloading answers for a while: break46b #2), are."""
from __future__ import annotations

import logging
import time

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import MRImageStorage

from dicomnode.cli import main
from dicomnode.config import DispatchConfig
from dicomnode.dispatch import Dispatcher
from dicomnode.net.scu import AssociationFailed, permanent_status, send_files
from tests.hardening import test_send_diagnostics as diagnostics
from tests.hardening.test_send_diagnostics import mr_file, queue_results
from tests.peers import free_port

peers, store = diagnostics.peers, diagnostics.store  # fixtures: peers on loopback, a state in tmp_path


@pytest.mark.parametrize("status, permanent", [(0xA900, True), (0xA9FF, True), (0xC000, True), (0xC123, True),
                                               (0x0122, True), (0xA700, False), (0xA7FF, False), (0x0110, False),
                                               (0x0000, False), (None, False)])
def test_which_c_store_statuses_are_permanent(status, permanent):
    assert permanent_status(status) is permanent


@pytest.mark.parametrize("status", [0xA900, 0xC000])
def test_a_permanent_failure_status_is_a_permanent_refusal(tmp_path, peers, status):
    peer = peers("status", status=status)
    (result,) = send_files([mr_file(tmp_path, "a")], "PACS", "127.0.0.1", peer.port, timeout=10)
    assert not result.ok and result.status == status and result.permanent, result


@pytest.mark.parametrize("status", [0xA900, 0xC000])
def test_a_permanent_status_is_a_dead_letter_at_once_naming_the_status_and_the_object(tmp_path, peers, store,
                                                                                      status, caplog, capsys):
    root, db = store
    peer = peers("status", status=status)
    queue_results(db, root, "1.5", [("rejecter", peer.port, mr_file(root / "results", "mr"))])
    dispatcher = Dispatcher(db, root, DispatchConfig(max_attempts=8, initial_backoff_seconds=60), "DICOMNODE")
    with caplog.at_level(logging.ERROR, logger="dicomnode.dispatch"):
        assert dispatcher.run_once() == 0
    (row,) = db.outbox_for("1.5")
    assert row["state"] == "dead" and row["attempts"] == 1, dict(row)  # not 8 attempts over minutes
    assert row["last_error"].startswith(f"refused: status 0x{status:04X}") and "not retried" in row["last_error"]
    assert db.study("1.5")["state"] == "failed"
    dead_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dead letter:")]
    assert dead_lines and dead_lines[0].startswith(f"dead letter: MR series 7 {row['sop_instance_uid']} to rejecter"), \
        dead_lines
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\nstorage_dir = "{root}"\n')
    capsys.readouterr()
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert f"-> rejecter: MR series 7 {row['sop_instance_uid']} after 1 attempt(s): refused: status 0x{status:04X}" \
        in out, out


def test_out_of_resources_is_still_retried_with_the_back_off(tmp_path, peers, store):
    root, db = store
    peer = peers("status", status=0xA700)
    queue_results(db, root, "1.4", [("full", peer.port, mr_file(root / "results", "mr"))])
    dispatcher = Dispatcher(db, root, DispatchConfig(max_attempts=8, initial_backoff_seconds=60), "DICOMNODE")
    assert dispatcher.run_once() == 0
    (row,) = db.outbox_for("1.4")
    assert row["state"] == "pending" and row["attempts"] == 1 and row["next_attempt_at"] > time.time() + 50


class RejectingPeer:
    """An SCP that answers every association request with A-ASSOCIATE-RJ of `result` (1 rejected-permanent,
    2 rejected-transient), as DCMTK's `storescp --refuse` does (permanent) or a busy PACS (transient)."""

    def __init__(self, result: int):
        self.result = result
        ae = AE(ae_title="PACS")
        ae.add_supported_context(MRImageStorage, [ExplicitVRLittleEndian])
        self.port = free_port()
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_REQUESTED, self._requested)])

    def _requested(self, event):
        assoc = event.assoc
        # reason 1 "no reason given" (service user); 2 transient: source 3 provider presentation, "temporary congestion"
        assoc.acse.send_reject(self.result, 0x01 if self.result == 1 else 0x03, 0x01)
        evt.trigger(assoc, evt.EVT_REJECTED, {})
        assoc.is_rejected = True
        assoc.kill()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def rejecting():
    made: list[RejectingPeer] = []

    def make(result: int) -> RejectingPeer:
        made.append(RejectingPeer(result))
        return made[-1]

    yield make
    for peer in made:
        peer.close()


def test_an_association_rejected_permanently_is_retried_with_the_back_off(tmp_path, rejecting, store, caplog):
    """break46b #2: "Called AE title not recognised" (rejected-permanent) is what a mistyped destination AE title,
    a PACS that has not registered the node yet, or one reloading its configuration answers: retried with the
    back-off, not a dead letter at the first attempt, and the WARNING names the keys to check."""
    root, db = store
    peer = rejecting(1)
    with pytest.raises(AssociationFailed) as raised:
        send_files([mr_file(tmp_path, "x")], "PACS", "127.0.0.1", peer.port, timeout=10)
    assert raised.value.permanent and "Rejected Permanent" in str(raised.value)
    queue_results(db, root, "1.3", [("refuser", peer.port, mr_file(root / "results", "a")),
                                    ("refuser", peer.port, mr_file(root / "results", "b"))])
    dispatcher = Dispatcher(db, root, DispatchConfig(max_attempts=8, initial_backoff_seconds=60), "DICOMNODE")
    with caplog.at_level(logging.WARNING, logger="dicomnode.dispatch"):
        assert dispatcher.run_once() == 0
    rows = db.outbox_for("1.3")
    assert [(row["state"], row["attempts"]) for row in rows] == [("pending", 1), ("pending", 1)]
    assert all(row["next_attempt_at"] > time.time() + 50 for row in rows)
    assert "Rejected Permanent" in rows[0]["last_error"] and "not retried" not in rows[0]["last_error"]
    assert "check destinations[refuser].ae_title" in caplog.text


def test_an_association_rejected_transiently_is_retried_with_the_back_off(tmp_path, rejecting, store):
    root, db = store
    peer = rejecting(2)
    with pytest.raises(AssociationFailed) as raised:
        send_files([mr_file(tmp_path, "x")], "PACS", "127.0.0.1", peer.port, timeout=10)
    assert not raised.value.permanent and "Rejected Transient" in str(raised.value)
    queue_results(db, root, "1.2", [("busy", peer.port, mr_file(root / "results", "a"))])
    dispatcher = Dispatcher(db, root, DispatchConfig(max_attempts=8, initial_backoff_seconds=60), "DICOMNODE")
    assert dispatcher.run_once() == 0
    (row,) = db.outbox_for("1.2")
    assert row["state"] == "pending" and row["attempts"] == 1 and row["next_attempt_at"] > time.time() + 50


def test_connection_refused_is_retried_with_the_back_off(store):
    root, db = store
    queue_results(db, root, "1.1", [("down", free_port(), mr_file(root / "results", "a"))])
    dispatcher = Dispatcher(db, root, DispatchConfig(max_attempts=8, initial_backoff_seconds=60), "DICOMNODE")
    assert dispatcher.run_once() == 0
    (row,) = db.outbox_for("1.1")
    assert row["state"] == "pending" and row["attempts"] == 1 and "not retried" not in row["last_error"]
