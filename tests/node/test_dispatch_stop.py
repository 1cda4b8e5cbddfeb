"""A stop while a lane sends to a slow destination (break51a #1): every association ends after the C-STORE in flight,
the items not sent yet go back to the queue unclaimed and uncharged, nothing is sent once the stop has returned; a
C-STORE still unanswered at the stop's timeout is aborted, the item left marked in flight (its next send says the
destination may hold it); and the process keeps its heartbeat and storage lock until its dispatcher has ended."""
from __future__ import annotations

import logging
import time

import pydicom
import pytest

from dicomnode.config import DispatchConfig
from dicomnode.dispatch import Dispatcher
from dicomnode.roles import RoleRunner
from dicomnode.state import IN_FLIGHT_PREFIX, StateDB, prepare_storage_dir
from tests.hardening.test_send_diagnostics import mr_file, queue_results
from tests.node.test_dispatch_slow_destination import SlowPeer, destination
from tests.node.test_state_outage import role_node
from tests.node.test_storage_safety import wait_for


@pytest.fixture
def store(tmp_path):
    root = prepare_storage_dir(tmp_path / "store")
    db = StateDB(root / "state.sqlite3", upgrade=True)
    yield root, db
    db.close()


@pytest.fixture
def peer():
    peer = SlowPeer(delay=1.0)
    yield peer
    peer.close()


def queued(root, db, peer, study: str, count: int) -> list[str]:
    """`count` results of `study` queued for "pacs"; returns the SOP Instance UIDs of their files, in order."""
    paths = [mr_file(root / "results", f"{study}-{index}") for index in range(count)]
    queue_results(db, root, study, [("pacs", peer.port, path) for path in paths])
    return [str(pydicom.dcmread(path).SOPInstanceUID) for path in paths]


def states(db, study: str) -> list[str]:
    return [row["state"] for row in db.outbox_for(study)]


def test_a_stop_ends_the_association_after_the_c_store_in_flight_and_gives_the_rest_back(store, peer):
    root, db = store
    uids = queued(root, db, peer, "2.1", 8)
    peer.slow.update(uids)  # 1 s per C-STORE: a slow PACS, not a hung one (send timeout 10 s)
    dispatcher = Dispatcher(db, root, DispatchConfig(max_attempts=5), "DICOMNODE",
                            destinations=lambda: [destination(peer.port, 10.0)])
    dispatcher.idle_seconds = 0.05
    dispatcher.start()
    assert wait_for(lambda: states(db, "2.1").count("sent") >= 2, 20)
    started = time.monotonic()
    assert dispatcher.stop(timeout=5.0) is True
    assert time.monotonic() - started < 3.5  # the C-STORE in flight (1 s), not the batch (8 s) nor the timeout
    received = list(peer.received)
    time.sleep(2.5)
    assert peer.received == received  # nothing sent once the stop returned
    rows = db.outbox_for("2.1")
    sent = [row for row in rows if row["state"] == "sent"]
    assert len(sent) == len(received) and 2 <= len(sent) < 8
    for row in rows:
        if row["state"] != "sent":  # back in the queue for the next process: unclaimed, no attempt, due now
            assert row["state"] == "pending" and row["claimed_by"] is None and row["attempts"] == 0
            assert not row["last_error"] and row["next_attempt_at"] <= time.time()


def test_a_c_store_unanswered_at_the_stop_timeout_is_aborted_and_left_in_flight(store, peer, caplog):
    root, db = store
    uids = queued(root, db, peer, "2.2", 4)
    peer.delay = 30.0
    peer.slow.add(uids[1])  # the second C-STORE is not answered for 30 s (send timeout 60 s)
    dispatcher = Dispatcher(db, root, DispatchConfig(max_attempts=5), "DICOMNODE",
                            destinations=lambda: [destination(peer.port, 60.0)])
    dispatcher.idle_seconds = 0.05
    dispatcher.start()
    assert wait_for(lambda: (db.outbox_for("2.2")[1]["last_error"] or "").startswith(IN_FLIGHT_PREFIX), 20)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="dicomnode.dispatch"):
        assert dispatcher.stop(timeout=1.5) is True
    assert time.monotonic() - started < 4.0
    (line,) = [r.getMessage() for r in caplog.records if "association aborted" in r.getMessage()]
    assert line.startswith("stop: destination pacs had not answered the C-STORE in flight after 1.5 s")
    assert "1 of its 4 result object(s) acknowledged are recorded as sent" in line
    first, in_flight, *rest = db.outbox_for("2.2")
    assert first["state"] == "sent"
    assert in_flight["state"] == "pending" and in_flight["claimed_by"] is None and in_flight["attempts"] == 0
    assert in_flight["last_error"].startswith(IN_FLIGHT_PREFIX)  # the destination may hold it: said when re-sent
    for row in rest:
        assert row["state"] == "pending" and row["claimed_by"] is None and row["attempts"] == 0
        assert not row["last_error"]
    peer.slow.clear()
    caplog.clear()
    again = Dispatcher(db, root, DispatchConfig(max_attempts=5), "DICOMNODE",
                       destinations=lambda: [destination(peer.port, 60.0)])
    with caplog.at_level(logging.WARNING, logger="dicomnode.dispatch"):
        assert again.run_once() == 3
    assert states(db, "2.2") == ["sent"] * 4
    assert [r for r in caplog.records if "re-sending 1 result object(s)" in r.getMessage()
            and in_flight["sop_instance_uid"] in r.getMessage()]
    assert uids[2] in peer.received and uids[3] in peer.received


def test_a_single_node_keeps_its_heartbeat_and_storage_lock_until_its_dispatcher_has_stopped(tmp_path, monkeypatch):
    node = role_node(tmp_path)
    runner = RoleRunner(node)
    assert not runner.scale_out
    runner.start(warm_up=False)
    seen = {}
    real_stop = node.dispatcher.stop

    def stop(timeout: float = 30.0) -> bool:
        seen["heartbeat rows"] = [row["node_id"] for row in node.db.nodes()]
        seen["lock held"] = node.storage_lock.held
        ended = real_stop(timeout)
        time.sleep(0.3)  # three heartbeat intervals: the heartbeat still beats while the dispatcher ends
        seen["beat after"] = [row["last_seen"] for row in node.db.nodes()]
        return ended

    monkeypatch.setattr(node.dispatcher, "stop", stop)
    before = time.time()
    runner.stop()
    assert seen["heartbeat rows"] == [node.db.process_id] and seen["lock held"]
    assert seen["beat after"] and seen["beat after"][0] > before
    assert not node.storage_lock.held
