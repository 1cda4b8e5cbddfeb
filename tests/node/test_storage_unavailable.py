"""The spool's share gone (its spool.id missing), a full disk, and sends recorded as they are acknowledged (break34).

- F1: a C-STORE while storage_dir no longer holds the spool (a share unmounted over a mount point that has a
  `spool/` folder) is refused with 0xA700 and nothing is written; /healthz says so.
- F2: dispatch pauses while the spool is not there; a result file missing while it is there is retried with the
  back-off before it becomes a dead letter.
- F3: every instance the destination acknowledges is recorded at once, not after the whole association.
- F4: /healthz is 503 while free space is under node.min_free_space_mb (C-STORE refuses then).
"""
from __future__ import annotations

import logging
import shutil
import threading
import time

import pytest
import sqlalchemy.exc
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
from pynetdicom import AE, evt

import dicomnode.dispatch as dispatch_module
import dicomnode.spool as spool_module
from dicomnode.config import DispatchConfig
from dicomnode.dispatch import MISSING_FILE_ATTEMPTS, Dispatcher
from dicomnode.net.scu import SendResult
from dicomnode.node import Node, status_report
from dicomnode.spool import SPOOL_ID_FILE, StorageUnavailable, write_durably
from dicomnode.state import COMPLETE, OUTBOX_SENT, InstanceRow, StateDB
from dicomnode.types import ResultObject
from tests.hardening.hardening_support import save, store_one, synthetic_mr
from tests.hardening.test_retention import incoming
from tests.node.test_stages import _result_object
from tests.node.test_storage_safety import NoAnalysis, node, node_config, queued_result, wait_for  # noqa: F401 (node: fixture)
from tests.peers import free_port
from tests.state_backends import pg_server, state_location  # noqa: F401 (fixtures)


def spooled_files(node: Node) -> list:
    return sorted(node.spool.spool_dir.rglob("*.dcm"))


# --- F1: the spool's marker gone: C-STORE refused, nothing written ---------------------------------------------------


def test_a_c_store_while_the_spool_marker_is_gone_is_refused_and_leaves_nothing(node, caplog):
    marker = node.storage_dir / SPOOL_ID_FILE
    saved = marker.read_text()
    assert store_one(node.scp.port, synthetic_mr()).Status == 0
    before = spooled_files(node)
    marker.unlink()  # the share came unmounted; the bare mount point has a spool/ folder (node.spool.spool_dir)
    assert node.spool.spool_dir.is_dir()
    lost = [synthetic_mr(), synthetic_mr()]
    with caplog.at_level(logging.INFO):
        for dataset in lost:
            status = store_one(node.scp.port, dataset)
            assert status.Status == 0xA700, status
            assert str(status.ErrorComment).startswith(f"storage unavailable: {SPOOL_ID_FILE} missing")
        ready, why = node.metrics.health()
        assert not ready and why.startswith("storage unavailable: ") and "is the shared spool unmounted?" in why
        assert spooled_files(node) == before  # nothing acknowledged, nothing left behind
        assert not any(node.db.has_instance(str(d.SOPInstanceUID)) for d in lost)
        marker.write_text(saved)  # mounted again
        assert store_one(node.scp.port, lost[0]).Status == 0
        assert node.metrics.health() == (True, "ready")
    gone = [r for r in caplog.records if r.levelno >= logging.ERROR and "no longer holds this spool" in r.getMessage()]
    assert len(gone) == 1 and "instances are refused (0xA700)" in gone[0].getMessage()  # once, not per instance
    assert len([r for r in caplog.records if "holds the spool again" in r.getMessage()]) == 1


def test_a_c_store_refuses_a_marker_of_another_spool(node):
    (node.storage_dir / SPOOL_ID_FILE).write_text("0123abcd\n")  # another share mounted there
    status = store_one(node.scp.port, synthetic_mr())
    assert status.Status == 0xA700 and f"{SPOOL_ID_FILE} of another spool" in str(status.ErrorComment)
    assert spooled_files(node) == []


def test_the_marker_gone_while_the_file_is_written_removes_it_unindexed(node, monkeypatch):
    marker = node.storage_dir / SPOOL_ID_FILE
    saved = marker.read_text()

    def write_then_unmount(path, data, mode=0o600, root=None):
        write_durably(path, data, mode, root=root)
        marker.unlink()

    monkeypatch.setattr(spool_module, "write_durably", write_then_unmount)
    dataset = synthetic_mr()
    status = store_one(node.scp.port, dataset)
    assert status.Status == 0xA700 and str(status.ErrorComment).startswith("storage unavailable")
    assert spooled_files(node) == [] and list(node.spool.spool_dir.iterdir()) == []  # its folders went too
    assert not node.db.has_instance(str(dataset.SOPInstanceUID))
    marker.write_text(saved)


def test_the_spool_never_makes_its_own_root_folder(tmp_path):
    root = tmp_path / "mnt" / "spool"
    with pytest.raises(FileNotFoundError):
        write_durably(root / "study" / "series" / "a.dcm", b"x", root=root)
    assert not (tmp_path / "mnt").exists()
    db = StateDB(tmp_path / "state.sqlite3", upgrade=True)
    try:
        spool = spool_module.Spool(tmp_path / "store", db)
        shutil.rmtree(spool.spool_dir)  # the share went; nothing verified its marker (spool_id None)
        spool.no_room = lambda size: None  # free space is not what stops it
        with pytest.raises(FileNotFoundError):
            spool.store(incoming(synthetic_mr()))
        assert not spool.spool_dir.exists()
    finally:
        db.close()


def test_a_spool_marker_that_is_gone_raises_storage_unavailable_from_store(tmp_path):
    db = StateDB(tmp_path / "state.sqlite3", upgrade=True)
    try:
        spool = spool_module.Spool(tmp_path / "store", db)
        spool.spool_id = "feedbeef"  # verified once; the folder holds no marker now
        with pytest.raises(StorageUnavailable, match="no longer holds this spool's spool.id"):
            spool.store(incoming(synthetic_mr()))
        assert list(spool.spool_dir.iterdir()) == []
    finally:
        db.close()


# --- F4: /healthz on a full disk -----------------------------------------------------------------------------------


@pytest.mark.parametrize("floor, free", [(0, 0.02), (500, 300.0)])
def test_healthz_is_503_while_free_space_is_under_the_floor(tmp_path, floor, free):
    node = Node(node_config(tmp_path), analyser=NoAnalysis())
    node.start(warm_up=False)
    try:
        node.spool.min_free_space_mb = floor
        node.spool.free_space_mb = lambda: free
        ready, why = node.metrics.health()
        assert not ready and why.startswith(f"storage full: {free:.1f} MB free, under node.min_free_space_mb="
                                            f"{floor}"), why
        node.spool.free_space_mb = lambda: floor + 50.0
        assert node.metrics.health() == (True, "ready")
    finally:
        node.stop()


# --- F2: dispatch and a spool that is not there, or a result file that is not --------------------------------------


def fast_config(**changes) -> DispatchConfig:
    return DispatchConfig(**{"max_attempts": 8, "initial_backoff_seconds": 0.01, "max_backoff_seconds": 0.01,
                             **changes})


def ok_sends(sent: list):
    def send_files(paths, *args, on_result=None, **kwargs):
        results = []
        for path in paths:
            sent.append(path)
            results.append(SendResult(path, True, 0))
            if on_result is not None:
                on_result(len(results) - 1, results[-1])
        return results
    return send_files


def test_dispatch_pauses_while_the_spool_is_not_there_and_dead_letters_nothing(tmp_path, monkeypatch, caplog,
                                                                              state_location):
    db = StateDB(state_location, upgrade=True)
    item = queued_result(db)  # its file results/r.dcm is not there while the share is away
    sent: list = []
    monkeypatch.setattr(dispatch_module, "send_files", ok_sends(sent))
    problem = ["node.storage_dir /x no longer holds this spool's spool.id: is the shared spool unmounted?"]
    dispatcher = Dispatcher(db, tmp_path, fast_config(), "DICOMNODE", storage_problem=lambda: problem[0])
    try:
        with caplog.at_level(logging.INFO, logger="dicomnode.dispatch"):
            for _ in range(3):
                assert dispatcher.run_once() == 0
                time.sleep(0.02)
            (row,) = db.outbox_for("1.2.3")
            assert row["state"] == "pending" and row["attempts"] == 0 and row["claimed_by"] is None
            assert db.study("1.2.3")["state"] != "failed" and dispatcher.paused
            paused = [r for r in caplog.records if "dispatch paused" in r.getMessage()]
            assert len(paused) == 1 and paused[0].levelno == logging.WARNING
            # the spool goes between the claim and the send: the claim is given back, no attempt counted
            calls = iter([None, problem[0]])
            dispatcher.storage_problem = lambda: next(calls)
            assert dispatcher.run_once() == 0
            (row,) = db.outbox_for("1.2.3")
            assert row["attempts"] == 0 and row["claimed_by"] is None and sent == []
            save(synthetic_mr(), tmp_path / item["path"])  # the share is back
            dispatcher.storage_problem = lambda: None
            assert dispatcher.run_once() == 1
        assert db.outbox_for("1.2.3")[0]["state"] == OUTBOX_SENT and len(sent) == 1
        assert [r for r in caplog.records if "dispatch resumes" in r.getMessage()]
    finally:
        db.close()


def test_a_missing_result_file_is_retried_with_back_off_then_a_dead_letter_naming_it(tmp_path, monkeypatch,
                                                                                     state_location):
    db = StateDB(state_location, upgrade=True)
    queued_result(db)
    sent: list = []
    monkeypatch.setattr(dispatch_module, "send_files", ok_sends(sent))
    dispatcher = Dispatcher(db, tmp_path, fast_config(), "DICOMNODE", storage_problem=lambda: None)
    try:
        assert dispatcher.run_once() == 0
        (row,) = db.outbox_for("1.2.3")
        assert row["state"] == "pending" and row["attempts"] == 1 and row["next_attempt_at"] > time.time() - 1
        for _ in range(MISSING_FILE_ATTEMPTS * 20):
            if db.outbox_for("1.2.3")[0]["state"] != "pending":
                break
            time.sleep(0.02)
            dispatcher.run_once()
        (row,) = db.outbox_for("1.2.3")
        assert row["state"] == "dead" and row["attempts"] == MISSING_FILE_ATTEMPTS
        assert f"result file {tmp_path / 'results' / 'r.dcm'} is missing" in row["last_error"]
        assert db.study("1.2.3")["state"] == "failed" and sent == []
    finally:
        db.close()


def test_a_result_file_that_shows_up_after_a_failed_attempt_is_sent(tmp_path, monkeypatch):
    db = StateDB(tmp_path / "state.sqlite3", upgrade=True)
    item = queued_result(db)
    sent: list = []
    monkeypatch.setattr(dispatch_module, "send_files", ok_sends(sent))
    dispatcher = Dispatcher(db, tmp_path, fast_config(), "DICOMNODE", storage_problem=lambda: None)
    try:
        dispatcher.run_once()
        assert db.outbox_for("1.2.3")[0]["attempts"] == 1
        save(synthetic_mr(), tmp_path / item["path"])
        assert wait_for(lambda: dispatcher.run_once() == 1, 5)
        assert db.outbox_for("1.2.3")[0]["state"] == OUTBOX_SENT and db.study("1.2.3")["state"] == "done"
    finally:
        db.close()


# --- F3: sends recorded as they are acknowledged ------------------------------------------------------------------


def queue_results(db: StateDB, storage_dir, count: int, port: int) -> list[str]:
    """Study 1.2.7 analysed into `count` result files queued for a PACS on 127.0.0.1:`port`; returns their UIDs."""
    db.add_instance(InstanceRow("1.2.7.1", "1.2.7", "1.2.7", "1.2.7.0", "1.2.840.10008.5.1.4.1.1.4",
                                "1.2.840.10008.1.2.1", "MR", "spool/x.dcm", 1, "SCANNER1", time.time()))
    db.set_study_state("1.2.7", COMPLETE)
    analysis = db.start_analysis("1.2.7", 0)
    written, items = [], []
    for _ in range(count):
        uid = generate_uid()
        path = f"results/{uid}.dcm"
        save(_result_object(uid, "1.2.7"), storage_dir / path)
        written.append(ResultObject(uid, "1.2.7.9", SecondaryCaptureImageStorage, path))
        items.append({"destination": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": port,
                      "sop_instance_uid": uid, "path": path})
    assert db.finish_analysis(analysis, "1.2.7", 0, {"outputs": []}, written, items)
    return [w.sop_instance_uid for w in written]


def test_each_acknowledged_instance_is_recorded_before_the_association_ends(tmp_path, state_location):
    """A PACS acknowledges 3 of 6 and then hangs (as the dispatcher is killed -9 there): the 3 are recorded as sent
    and status counts them, so a dispatcher that takes over sends only the others."""
    received: list[str] = []
    hanging, go_on = threading.Event(), threading.Event()

    def on_store(event):
        if len(received) == 3:
            hanging.set()
            go_on.wait(30)
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    pacs = AE(ae_title="PACS")
    pacs.add_supported_context(SecondaryCaptureImageStorage, ExplicitVRLittleEndian)
    port = free_port()
    server = pacs.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    db = StateDB(state_location, upgrade=True)
    try:
        uids = queue_results(db, tmp_path, 6, port)
        dispatcher = Dispatcher(db, tmp_path, DispatchConfig(max_attempts=2), "DICOMNODE")
        outcome: list = []
        sender = threading.Thread(target=lambda: outcome.append(dispatcher.run_once()))
        sender.start()
        try:
            assert hanging.wait(30)
            states = {row["sop_instance_uid"]: row["state"] for row in db.outbox_for("1.2.7")}
            assert [uid for uid in uids if states[uid] == OUTBOX_SENT] == received == uids[:3]
            (study,) = status_report(db)["studies"]
            assert study["sent"] == 3 and study["pending"] == 3 and dispatcher.sent == 3
        finally:
            go_on.set()
            sender.join(60)
        assert outcome == [6] and received == uids and dispatcher.sent == 6
        assert {row["state"] for row in db.outbox_for("1.2.7")} == {OUTBOX_SENT}
        assert db.study("1.2.7")["state"] == "done"
    finally:
        server.shutdown()
        db.close()


def test_an_outage_mid_association_keeps_the_acknowledged_sends_for_recording_first(tmp_path, monkeypatch):
    db = StateDB(tmp_path / "state.sqlite3", upgrade=True)
    try:
        queue_results(db, tmp_path, 3, 9)
        sent: list = []
        monkeypatch.setattr(dispatch_module, "send_files", ok_sends(sent))
        real_mark_sent = db.mark_sent
        calls = []

        def mark_sent(ids):
            calls.append(list(ids))
            if len(calls) > 1:  # the state database goes away after the first acknowledged instance
                raise sqlalchemy.exc.OperationalError("UPDATE", {}, Exception("connection refused"))
            real_mark_sent(ids)

        monkeypatch.setattr(db, "mark_sent", mark_sent)
        dispatcher = Dispatcher(db, tmp_path, fast_config(), "DICOMNODE")
        with pytest.raises(sqlalchemy.exc.OperationalError):
            dispatcher.run_once()
        rows = db.outbox_for("1.2.7")
        assert [row["state"] for row in rows] == [OUTBOX_SENT, "pending", "pending"] and len(sent) == 3
        assert dispatcher._unrecorded_sent == [rows[1]["id"], rows[2]["id"]] and len(calls) == 2  # asked once
        monkeypatch.setattr(db, "mark_sent", real_mark_sent)
        assert dispatcher.run_once() == 0  # recorded first; nothing sent twice
        assert {row["state"] for row in db.outbox_for("1.2.7")} == {OUTBOX_SENT} and len(sent) == 3
    finally:
        db.close()
