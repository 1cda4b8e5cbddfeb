"""break42a finding 1: scale-out, a receiving process that stops (SIGTERM) or dies (kill -9) mid-transfer. The
transfer it cut is not taken for a quiet one: a clean stop marks the studies of its open associations interrupted
before it exits; for one that dies, the process holding the `complete` lease marks the studies its heartbeat listed
(detail.receiving) once it is gone, and completes none of them on the quiet timer before it knows."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from pydicom.uid import generate_uid

from dicomnode.config import Config
from dicomnode.node import Node
from dicomnode.roles import DatabaseCompletion, RoleRunner
from dicomnode.state import COMPLETE, RECEIVED, StateDB
from dicomnode.studies import interrupted
from tests.hardening.hardening_support import synthetic_mr
from tests.node.test_interrupted_transfers import NoAnalysis, _association, _wait
from tests.node.test_storage_safety import set_columns
from tests.scaleout.test_state_backends import instance
from tests.state_backends import pg_server, state_location  # noqa: F401 (fixtures)

QUIET = 5.0


def receiving_of(db: StateDB, node_id: str) -> list[str] | None:
    for row in db.nodes():
        if row["node_id"] == node_id:
            return json.loads(row["detail_json"] or "{}").get("receiving")
    return None


def test_a_receiver_stopping_cleanly_marks_the_studies_of_its_open_associations(tmp_path):
    config = Config.model_validate({
        "node": {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 0,
                 "allowed_calling_aes": ["*"]},
        "studies": {"quiet_seconds": 1, "max_wait_seconds": 3600},
        "state": {"heartbeat_seconds": 30, "lease_seconds": 60, "poll_seconds": 0.05}})
    node = Node(config, analyser=NoAnalysis())
    runner = RoleRunner(node, ("receive",))
    runner.start(warm_up=False)
    me = node.db.process_id
    study, series = generate_uid(), generate_uid()
    datasets = [synthetic_mr(study_uid=study, series_uid=series, instance=i, position=8.0 * i) for i in range(3)]
    stopped = False
    try:
        released = _association(node.scp.port, datasets[2])
        assert released.send_c_store(datasets[2]).Status == 0
        assert receiving_of(node.db, me) == [study]  # published before it was stored (no heartbeat was due)
        released.release()
        time.sleep(0.3)
        assert receiving_of(node.db, me) == [study]  # its sender may open its next association (break46b #1)
        # a transfer that ended in order is not listed once a quiet period has passed (written then, not at the
        # next heartbeat, 30 s on)
        assert _wait(lambda: receiving_of(node.db, me) == [], 3)
        assoc = _association(node.scp.port, datasets[0])
        for dataset in datasets[:2]:
            assert assoc.send_c_store(dataset).Status == 0
        assert receiving_of(node.db, me) == [study]
        runner.stop()  # systemctl stop with the association open
        stopped = True
    finally:
        if not stopped:
            runner.stop()
    db = StateDB(tmp_path / "store" / "state.sqlite3", process_id="complete-1")
    try:
        row = db.study(study)
        assert interrupted(row)
        assert (f"transfer interrupted (3 instance(s) received when the receiving process {socket.gethostname()} pid "
                f"{os.getpid()} stopped)") in row["reason"]
        completion = DatabaseCompletion(db, config, lease_seconds=30)
        completion._started = 0.0
        assert completion.poll(now=time.time() + 10) == []  # quiet, but cut: waits for a re-send or max wait
        assert db.study(study)["state"] == RECEIVED
    finally:
        db.close()


def test_a_receiver_stopping_cleanly_does_not_mark_a_study_its_idle_open_association_had_finished(tmp_path):
    """review42 #3: a PACS that keeps its association open after the last C-STORE. Once the association has sent
    nothing of the study for studies.quiet_seconds, the transfer had ended before the stop (by the node's own
    completion rule): a `systemctl restart` of the receiver does not mark it, and it completes on the quiet timer."""
    config = Config.model_validate({
        "node": {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 0,
                 "allowed_calling_aes": ["*"]},
        "studies": {"quiet_seconds": 1, "max_wait_seconds": 3600},
        "state": {"heartbeat_seconds": 30, "lease_seconds": 60, "poll_seconds": 0.05}})
    node = Node(config, analyser=NoAnalysis())
    runner = RoleRunner(node, ("receive",))
    runner.start(warm_up=False)
    study, series = generate_uid(), generate_uid()
    datasets = [synthetic_mr(study_uid=study, series_uid=series, instance=i, position=8.0 * i) for i in range(2)]
    assoc = _association(node.scp.port, datasets[0])
    try:
        for dataset in datasets:
            assert assoc.send_c_store(dataset).Status == 0
        time.sleep(1.3)  # idle past the quiet time, the association still open
        assert receiving_of(node.db, node.db.process_id) == [study]  # listed: what a crash would cut
    finally:
        runner.stop()
        assoc.abort()
    db = StateDB(tmp_path / "store" / "state.sqlite3", process_id="complete-1")
    try:
        assert db.study(study)["reason"] is None
        completion = DatabaseCompletion(db, config, lease_seconds=30)
        completion._started = 0.0
        assert completion.poll(now=time.time() + 10) == [study]
        assert db.study(study)["state"] == COMPLETE
    finally:
        db.close()


def test_a_receiver_stopping_cleanly_does_not_mark_a_study_sent_on_an_association_released_before(tmp_path):
    """review46 #8: a graceful stop (systemctl restart) within studies.quiet_seconds of a transfer whose association
    was released in order marks nothing interrupted, and withdraws the study from its heartbeat at once, so that the
    process completing studies completes it on its quiet timer (not after max_wait_seconds, with no "interrupted"
    note). A kill -9 keeps it listed (test_a_receiver_killed_between_two_associations_of_its_sender_...)."""
    config = Config.model_validate({
        "node": {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 0,
                 "allowed_calling_aes": ["*"]},
        "studies": {"quiet_seconds": 30, "max_wait_seconds": 3600},
        "state": {"heartbeat_seconds": 30, "lease_seconds": 60, "poll_seconds": 0.05}})
    node = Node(config, analyser=NoAnalysis())
    runner = RoleRunner(node, ("receive",))
    runner.start(warm_up=False)
    me = node.db.process_id
    study, series = generate_uid(), generate_uid()
    datasets = [synthetic_mr(study_uid=study, series_uid=series, instance=i, position=8.0 * i) for i in range(2)]
    listed_while_stopping = []
    stop_dispatcher = node.dispatcher.stop

    def dispatcher_stop(*args, **kwargs):  # after the receiver is drained, before the heartbeat row goes
        listed_while_stopping.append(receiving_of(node.db, me))
        return stop_dispatcher(*args, **kwargs)

    node.dispatcher.stop = dispatcher_stop
    try:
        assoc = _association(node.scp.port, datasets[0])
        for dataset in datasets:
            assert assoc.send_c_store(dataset).Status == 0
        assoc.release()
        time.sleep(0.3)
        assert receiving_of(node.db, me) == [study]  # listed: a crash now may cut a per-instance sender
    finally:
        runner.stop()
    assert listed_while_stopping == [[]]
    db = StateDB(tmp_path / "store" / "state.sqlite3", process_id="complete-1")
    try:
        assert db.study(study)["reason"] is None
        completion = DatabaseCompletion(db, config, lease_seconds=30)
        completion._started = 0.0
        assert completion.poll(now=time.time() + 31) == [study]
        assert db.study(study)["state"] == COMPLETE
    finally:
        db.close()


def receiving_study(location, heartbeat_seconds: float = 5.0):
    """(complete process's state, receiver's state, completion): study 1.2.3, 2 instances, its last one 10 s ago (a
    quiet period of 5 s has passed), listed as being received by process recv-1 of this machine."""
    db = StateDB(location, upgrade=True, process_id="complete-1", heartbeat_seconds=heartbeat_seconds)
    receiver = StateDB(location, process_id="recv-1", heartbeat_seconds=heartbeat_seconds)
    for sop in ("1.2.3.1", "1.2.3.2"):
        db.add_instance(instance(sop))
    ago = time.time() - 10
    set_columns(db, "UPDATE studies SET first_received=:t, last_received=:t, updated_at=:t", t=ago)
    receiver.heartbeat(["receive"], ago, {"receiving": ["1.2.3"]})
    # its pid: one running since boot (init), so that the row's writer is alive by its pid whatever the test does
    # with last_seen (a pid whose process started after the row's last heartbeat was reused: roles._pid_gone)
    set_columns(db, "UPDATE nodes SET pid=1")
    config = Config.model_validate({"studies": {"quiet_seconds": QUIET, "max_wait_seconds": 3600}})
    completion = DatabaseCompletion(db, config, lease_seconds=30)
    completion._started = 0.0
    return db, receiver, completion


def test_a_quiet_study_a_receiver_lists_waits_for_its_heartbeat_and_is_marked_when_it_stopped(state_location):
    db, receiver, completion = receiving_study(state_location)
    try:
        # its last heartbeat (8 s ago) is from before the study went quiet: alive then, maybe dead now
        set_columns(db, "UPDATE nodes SET last_seen=:t", t=time.time() - 8)
        assert completion.poll() == []
        assert db.study("1.2.3")["state"] == RECEIVED and db.study("1.2.3")["reason"] is None
        # no heartbeat for 3 intervals (15 s): it stopped mid-transfer
        set_columns(db, "UPDATE nodes SET last_seen=:t", t=time.time() - 20)
        assert completion.poll() == []
        study = db.study("1.2.3")
        assert study["state"] == RECEIVED and interrupted(study)
        assert (f"transfer interrupted (2 instance(s) received when the receiving process {socket.gethostname()} pid "
                f"1 stopped answering: no heartbeat for 20 s)") in study["reason"]
        assert completion.poll() == [] and db.study("1.2.3")["state"] == RECEIVED  # never on the quiet timer
    finally:
        receiver.close()
        db.close()


def test_a_receiver_whose_pid_is_gone_has_its_studies_marked_at_once(state_location):
    db, receiver, completion = receiving_study(state_location)
    try:
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()  # kill -9: a pid of this machine that no longer runs
        set_columns(db, "UPDATE nodes SET pid=:pid, last_seen=:t", pid=gone.pid, t=time.time() - 1)
        assert completion.poll() == []
        study = db.study("1.2.3")
        assert interrupted(study)
        assert f"received when the receiving process {socket.gethostname()} pid {gone.pid} died)" in study["reason"]
    finally:
        receiver.close()
        db.close()


def test_a_live_receiver_holding_its_association_open_lets_the_quiet_study_complete(state_location):
    db, receiver, completion = receiving_study(state_location)
    try:
        receiver.heartbeat(["receive"], time.time(), {"receiving": ["1.2.3"]})  # beats after the study went quiet
        assert completion.poll() == ["1.2.3"]
        assert db.study("1.2.3")["state"] == COMPLETE and db.study("1.2.3")["reason"] is None
    finally:
        receiver.close()
        db.close()


def test_a_dead_receiver_does_not_hold_a_study_it_did_not_list(state_location):
    db, receiver, completion = receiving_study(state_location)
    try:
        receiver.heartbeat(["receive"], time.time(), {"receiving": ["9.9.9"]})
        set_columns(db, "UPDATE nodes SET last_seen=:t", t=time.time() - 20)
        assert completion.poll() == ["1.2.3"]
        assert db.study("1.2.3")["reason"] is None
    finally:
        receiver.close()
        db.close()


@pytest.mark.parametrize("how, cause", [("kill -9", "died"), ("SIGTERM", "stopped")])
def test_a_receiver_killed_or_stopped_mid_transfer_leaves_its_study_marked_not_completed(tmp_path, pg_server, how,
                                                                                        cause):
    """The finding as reported: `serve --roles receive` killed (-9) or stopped (SIGTERM: systemctl stop/restart) with
    an association open, `serve --roles complete` beside it on one PostgreSQL state and spool: the study is marked
    interrupted naming the receiver, never completed on the quiet timer."""
    from tests.peers import free_port
    from tests.scaleout.cluster import RoleProcess, cluster_config, state_upgrade, wait_for_heartbeats

    url = pg_server.create_database()
    port = free_port()

    def config(port_: int) -> str:
        return cluster_config(tmp_path / "spool", url, port_, {"PACS": ("127.0.0.1", 1)}, quiet_seconds=1,
                              lease_seconds=4, heartbeat_seconds=0.5, poll_seconds=0.2)

    (tmp_path / "upgrade.toml").write_text(config(0))
    assert state_upgrade(tmp_path / "upgrade.toml").returncode == 0
    db = StateDB(url)
    receiver = RoleProcess(tmp_path, "receiver", "receive", config(port), port).start()
    completer = RoleProcess(tmp_path, "complete", "complete", config(0)).start()
    try:
        wait_for_heartbeats(db, [receiver, completer], timeout=120)
        study, series = generate_uid(), generate_uid()
        datasets = [synthetic_mr(study_uid=study, series_uid=series, instance=i, position=8.0 * i) for i in range(2)]
        assoc = _association(port, datasets[0])
        for dataset in datasets:
            assert assoc.send_c_store(dataset).Status == 0
        pid = receiver.pid
        if how == "kill -9":
            receiver.kill9()
        else:
            assert receiver.stop(60) == 0
        assert _wait(lambda: interrupted(db.study(study)), 30), completer.log()[-3000:] + receiver.log()[-3000:]
        assert (f"2 instance(s) received when the receiving process {socket.gethostname()} pid {pid} {cause}"
                in db.study(study)["reason"])
        time.sleep(2)  # twice the quiet time
        assert db.study(study)["state"] == RECEIVED
        assert "complete (quiet)" not in completer.log()
    finally:
        for process in (receiver, completer):
            process.stop() if process.alive() else None
        db.close()


def test_a_receiver_lists_a_study_until_a_quiet_period_after_its_last_instance_whatever_the_associations(tmp_path):
    """break46b #1 (and break44c #2), scale-out: a study whose association was released stays listed while it has had
    a C-STORE within studies.quiet_seconds (a sender opening one association per instance is between two of them most
    of the time: a crash then may cut its transfer), and leaves the list by a heartbeat written when that period
    ends, not at the next heartbeat, so that a crash after it does not leave the completely sent study marked
    interrupted and a live receiver does not hold its completion a heartbeat longer."""
    from tests.hardening.hardening_support import store_one
    from dicomnode.roles import RELEASED_PUBLISH_SECONDS
    quiet = 1.5
    config = Config.model_validate({
        "node": {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 0,
                 "allowed_calling_aes": ["*"]},
        "studies": {"quiet_seconds": quiet, "max_wait_seconds": 7200},
        "state": {"heartbeat_seconds": 30, "lease_seconds": 60, "poll_seconds": 0.05}})
    node = Node(config, analyser=NoAnalysis())
    runner = RoleRunner(node, ("receive",))
    runner.start(warm_up=False)
    study = generate_uid()
    assoc = _association(node.scp.port, synthetic_mr())
    try:
        assert assoc.send_c_store(synthetic_mr(study_uid=study)).Status == 0
        assert receiving_of(node.db, node.db.process_id) == [study]
        assoc.release()
        time.sleep(RELEASED_PUBLISH_SECONDS + 0.3)
        assert receiving_of(node.db, node.db.process_id) == [study]  # between two associations of its sender
        # a sender opening one association per instance: still listed, then gone a quiet period after the last
        assert store_one(node.scp.port, synthetic_mr(study_uid=study, instance=2, position=8.0)).Status == 0
        sent = time.monotonic()
        assert receiving_of(node.db, node.db.process_id) == [study]
        assert _wait(lambda: receiving_of(node.db, node.db.process_id) == [], quiet + RELEASED_PUBLISH_SECONDS + 2)
        assert time.monotonic() - sent >= quiet - 0.1
    finally:
        runner.stop()


def test_a_receiver_killed_between_two_associations_of_its_sender_leaves_the_study_marked(tmp_path, pg_server):
    """break46b #1 as reported: two processes on one PostgreSQL state, the sender opening one association per
    instance. The receiver is killed (-9) after the first association was released, before the next one: the other
    process marks the study interrupted naming the dead receiver and never completes the part received on the
    quiet timer (it had analysed one instance of ten and sent the report to the PACS)."""
    from tests.hardening.hardening_support import store_one
    from tests.peers import free_port
    from tests.scaleout.cluster import RoleProcess, cluster_config, state_upgrade, wait_for_heartbeats

    url = pg_server.create_database()
    port = free_port()

    def config(port_: int) -> str:
        return cluster_config(tmp_path / "spool", url, port_, {"PACS": ("127.0.0.1", 1)}, quiet_seconds=3,
                              lease_seconds=4, heartbeat_seconds=0.5, poll_seconds=0.2)

    (tmp_path / "upgrade.toml").write_text(config(0))
    assert state_upgrade(tmp_path / "upgrade.toml").returncode == 0
    db = StateDB(url)
    receiver = RoleProcess(tmp_path, "receiver", "receive", config(port), port).start()
    completer = RoleProcess(tmp_path, "complete", "complete", config(0)).start()
    try:
        wait_for_heartbeats(db, [receiver, completer], timeout=120)
        study = generate_uid()
        assert store_one(port, synthetic_mr(study_uid=study)).Status == 0  # its association released at once
        time.sleep(1.5)  # the heartbeat (0.5 s) has been written again since, the next association not yet open
        pid = receiver.pid
        receiver.kill9()
        assert _wait(lambda: interrupted(db.study(study)), 30), completer.log()[-3000:] + receiver.log()[-3000:]
        assert (f"1 instance(s) received when the receiving process {socket.gethostname()} pid {pid} died"
                in db.study(study)["reason"])
        time.sleep(4)  # past the quiet time
        assert db.study(study)["state"] == RECEIVED
        assert "complete (quiet)" not in completer.log()
    finally:
        for process in (receiver, completer):
            process.stop() if process.alive() else None
        db.close()


def test_a_lost_receiver_of_a_release_that_listed_nothing_leaves_its_studies_marked(state_location):
    """break44a #1: a receiving process whose heartbeat has no detail.receiving (a release before it was recorded,
    killed) gives no evidence of what it was sending: a study received while it lived is marked interrupted once
    it is lost, not completed on the quiet timer."""
    db, receiver, completion = receiving_study(state_location)
    try:
        receiver.heartbeat(["receive", "complete"], time.time() - 100, {"version": "0.1.0", "schema": 3})
        set_columns(db, "UPDATE nodes SET pid=1, last_seen=:t", t=time.time() - 20)
        assert completion.poll() == []
        study = db.study("1.2.3")
        assert study["state"] == RECEIVED and interrupted(study)
        assert "no heartbeat for 20 s, which did not record whether its associations were still sending" \
            in study["reason"]
        assert completion.poll() == [] and db.study("1.2.3")["state"] == RECEIVED
    finally:
        receiver.close()
        db.close()


def test_the_first_start_after_an_upgrade_marks_every_study_an_older_release_left_receiving(tmp_path):
    """break44a #1: an older release (schema 2 or 3, PostgreSQL or SQLite) stopped by SIGTERM or kill -9 before the
    upgrade recorded nothing of the transfers under way: the first process of this release to start marks every
    study still receiving interrupted; a later start does not mark again."""
    config = Config.model_validate({
        "node": {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 0},
        "studies": {"quiet_seconds": 1, "max_wait_seconds": 3600},
        "state": {"heartbeat_seconds": 30, "lease_seconds": 60, "poll_seconds": 0.05}})
    (tmp_path / "store").mkdir()
    old = StateDB(tmp_path / "store" / "state.sqlite3", upgrade=True, process_id="old-release")
    for sop in ("1.2.3.1", "1.2.3.2"):
        old.add_instance(instance(sop))
    old.close()
    node = Node(config, analyser=NoAnalysis())
    runner = RoleRunner(node, ("complete",))
    runner.start(warm_up=False)
    try:
        study = node.db.study("1.2.3")
        assert study["reason"].startswith(
            "incomplete: transfer interrupted (2 instance(s) received when an older dicomnode release, which kept no "
            "record of the transfers under way, stopped)")
        time.sleep(1.5)  # quiet
        assert node.db.study("1.2.3")["state"] == RECEIVED
        set_columns(node.db, "UPDATE studies SET reason=NULL")
    finally:
        runner.stop()
    again = Node(config, analyser=NoAnalysis())
    runner = RoleRunner(again, ("complete",))
    runner.start(warm_up=False)
    try:
        assert again.db.study("1.2.3")["reason"] is None
    finally:
        runner.stop()


def test_receivers_recorded_is_noted_once(state_location):
    db = StateDB(state_location, upgrade=True, process_id="a")
    other = StateDB(state_location, process_id="b")
    try:
        assert db.note_receivers_recorded() is True
        assert other.note_receivers_recorded() is False and db.note_receivers_recorded() is False
    finally:
        other.close()
        db.close()


def test_a_stopping_process_does_not_complete_a_study_its_own_receiver_is_still_draining(tmp_path, monkeypatch):
    """break44a #2: `serve` (scale-out, receive and complete in one process) stopped while a C-STORE is stuck for
    longer than studies.quiet_seconds: its completion loop stops first, so the study the association is still
    sending is not completed on the quiet timer meanwhile; the stop marks it interrupted."""
    import threading
    config = Config.model_validate({
        "node": {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 0,
                 "allowed_calling_aes": ["*"]},
        "studies": {"quiet_seconds": 1, "max_wait_seconds": 3600},
        "state": {"heartbeat_seconds": 30, "lease_seconds": 60, "poll_seconds": 0.05}})
    node = Node(config, analyser=NoAnalysis())
    runner = RoleRunner(node, ("receive", "complete"))
    runner.start(warm_up=False)
    study, series = generate_uid(), generate_uid()
    datasets = [synthetic_mr(study_uid=study, series_uid=series, instance=i, position=8.0 * i) for i in range(2)]
    stuck, store = threading.Event(), node.scp._store_durably

    def slow_store(*args, **kwargs):
        stuck.set()
        time.sleep(2.5)  # longer than the quiet time: a stuck disk or handler
        return store(*args, **kwargs)

    assoc = _association(node.scp.port, datasets[0])
    try:
        assert assoc.send_c_store(datasets[0]).Status == 0
        monkeypatch.setattr(node.scp, "_store_durably", slow_store)
        sender = threading.Thread(target=assoc.send_c_store, args=(datasets[1],), daemon=True)
        sender.start()
        assert stuck.wait(5)
        runner.stop()
    finally:
        assoc.abort()
    db = StateDB(tmp_path / "store" / "state.sqlite3", process_id="check")
    try:
        row = db.study(study)
        assert row["state"] == RECEIVED and row["generation"] == 0  # never completed (and re-opened by the 2nd)
        assert interrupted(row)
    finally:
        db.close()


def test_a_stopping_process_renews_its_leases_until_its_receiver_is_drained(tmp_path, monkeypatch):
    """review44 #4: the heartbeat (which renews the leases of the studies and outbox items a process holds) goes on
    while the stop drains a stuck C-STORE, and ends only before the process removes its heartbeat row."""
    import threading
    config = Config.model_validate({
        "node": {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 0,
                 "allowed_calling_aes": ["*"]},
        "studies": {"quiet_seconds": 1, "max_wait_seconds": 3600},
        "state": {"heartbeat_seconds": 0.2, "lease_seconds": 60, "poll_seconds": 0.05}})
    node = Node(config, analyser=NoAnalysis())
    runner = RoleRunner(node, ("receive", "complete"))
    runner.start(warm_up=False)
    me = node.db.process_id
    stuck, store, beats = threading.Event(), node.scp._store_durably, []
    real_heartbeat, real_stop = node.db.heartbeat, node.scp.stop

    def slow_store(*args, **kwargs):
        stuck.set()
        time.sleep(1.5)
        return store(*args, **kwargs)

    def counted(*args, **kwargs):
        beats.append(time.monotonic())
        return real_heartbeat(*args, **kwargs)
    draining = []

    def timed_stop(*args, **kwargs):
        began = time.monotonic()
        try:
            return real_stop(*args, **kwargs)
        finally:
            draining.append((began, time.monotonic()))
    assoc = _association(node.scp.port, synthetic_mr())
    try:
        monkeypatch.setattr(node.scp, "_store_durably", slow_store)
        monkeypatch.setattr(node.db, "heartbeat", counted)
        monkeypatch.setattr(node.scp, "stop", timed_stop)
        threading.Thread(target=assoc.send_c_store, args=(synthetic_mr(),), daemon=True).start()
        assert stuck.wait(5)
        runner.stop()
    finally:
        assoc.abort()
    (began, ended), = draining
    assert ended - began > 1.0
    assert len([at for at in beats if began <= at <= ended]) >= 3  # every 0.2 s through the drain
    db = StateDB(tmp_path / "store" / "state.sqlite3", process_id="check")
    try:
        assert receiving_of(db, me) is None  # the row is gone: no heartbeat after the goodbye
    finally:
        db.close()
