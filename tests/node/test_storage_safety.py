"""Storage safety: a study with instances refused for lack of space is incomplete, not quiet; results respect the
storage floor; a failure that cannot be recorded does not leave a study `analysing` for ever; one node per storage;
a re-sent instance with other content is named; the log lines an admin follows a study by."""
from __future__ import annotations

import copy
import errno
import json
import logging
import re
import time
import warnings
from pathlib import Path

import pytest
import sqlalchemy.exc
from pydicom.uid import ImplicitVRLittleEndian, RLELossless

from dicomnode import spool as spool_module
from dicomnode.cli import _print_status, main
from dicomnode.config import Config
from dicomnode.dispatch import Dispatcher
from dicomnode.node import (DISPATCH_STOP_SECONDS, SCP_STOP_SECONDS, WORKERS_STOP_SECONDS, Node, status_report)
from dicomnode.observe import RepeatedWarningFilter, StudyContextFilter, configure_logging, study_context
from dicomnode.receivers import STOP_TIMEOUT
from dicomnode.roles import DatabaseCompletion, RoleRunner, attach_different_resends
from dicomnode.spool import OutOfSpace, Spool, StorageInUse, StorageLock, write_durably
from dicomnode.state import ANALYSING, COMPLETE, DONE, FAILED, PURGING, RECEIVED, InstanceRow, StateDB
from dicomnode.studies import REFUSED_PREFIX, record_refusal, waiting_for_resend
from dicomnode.types import StudyOutcome
from dicomnode.uids import short_hash
from tests.hardening.hardening_support import save, store_one, synthetic_mr
from tests.node.test_status_retry import node_state  # noqa: F401 (fixture: a state and its config file)
from tests.state_backends import pg_server, state_location  # noqa: F401 (fixtures)

REPO = Path(__file__).resolve().parents[2]
SR = "1.2.840.10008.5.1.4.1.1.88.34"


class NoAnalysis:
    def warm_up(self, names):
        return {}


class CountingAnalyser(NoAnalysis):
    """Declines every study cleanly (no result objects), counting the calls."""

    def __init__(self, error: Exception | None = None):
        self.calls = 0
        self.error = error

    def analyse(self, study, pipelines, started_at=None, supersedes=None):
        self.calls += 1
        if self.error is not None:
            raise self.error
        return StudyOutcome(summary={"study_instance_uid": study.study_instance_uid,
                                     "declined": [{"series_instance_uid": None, "reason": "no LGE stack"}]})


def node_config(tmp_path, **studies) -> Config:
    return Config.model_validate({
        "node": {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 0,
                 "allowed_calling_aes": ["*"]},
        "studies": {"quiet_seconds": 3600, **studies}})


@pytest.fixture
def node(tmp_path):
    """A started node on node_config(tmp_path) that analyses nothing."""
    node = Node(node_config(tmp_path), analyser=NoAnalysis())
    node.start(warm_up=False)
    yield node
    node.stop()


def complete_study(node: Node) -> str:
    """One MR instance received by the node's SCP, its study made complete by hand (no completion timer runs);
    returns the study key."""
    first = synthetic_mr()
    key = str(first.StudyInstanceUID)
    assert store_one(node.scp.port, first).Status == 0
    node.completion.forget(key)
    node.scheduler.remove_job(f"quiet:{key}")
    node.db.set_study_state(key, COMPLETE)
    return key


def refused_after_one(node: Node, *instances: int) -> str:
    """One MR instance stored by the node's SCP, then the disk at the storage floor: the study's instances numbered
    `instances` are refused (0xA700); returns the study key."""
    first = synthetic_mr()
    key = str(first.StudyInstanceUID)
    assert store_one(node.scp.port, first).Status == 0
    node.spool.min_free_space_mb = 10**12
    for instance in instances:
        assert store_one(node.scp.port, synthetic_mr(study_uid=key, instance=instance)).Status == 0xA700
    return key


def wait_for(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def row(sop: str, study: str = "1.2.3") -> InstanceRow:
    return InstanceRow(sop_instance_uid=sop, study_key=study, study_instance_uid=study, series_instance_uid=study + ".1",
                       sop_class_uid="1.2.840.10008.5.1.4.1.1.4", transfer_syntax="1.2.840.10008.1.2.1",
                       modality="MR", path=f"spool/{sop}.dcm", size=10, calling_ae="SCANNER1", received_at=time.time())


def queued_result(db: StateDB, path: str = "results/r.dcm") -> dict:
    """Study 1.2.3 received, analysed into one SR at `path`, queued for "pacs" at 127.0.0.1:9 (nobody listens);
    returns its outbox row."""
    db.add_instance(row("1.2.3.1"))
    db.set_study_state("1.2.3", COMPLETE)
    analysis = db.start_analysis("1.2.3", 0)
    db.finish_analysis(analysis, "1.2.3", 0, {"outputs": []}, [("9.9.1", "9.9", SR, path)],
                       [{"destination": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 9,
                         "sop_instance_uid": "9.9.1", "path": path}])
    (item,) = db.outbox_for("1.2.3")
    return item


# --- F3: refused for lack of space -> incomplete, not quiet -------------------------------------------------------


def test_a_study_with_refused_instances_is_not_completed_on_the_quiet_timer(tmp_path, caplog):
    node = Node(node_config(tmp_path, quiet_seconds=0.5), analyser=NoAnalysis())
    completed = []
    node.completion.on_complete = lambda key, generation: completed.append((key, generation))
    node.start(warm_up=False)
    try:
        first = synthetic_mr()
        key = str(first.StudyInstanceUID)
        assert store_one(node.scp.port, first).Status == 0
        node.spool.min_free_space_mb = 10**12  # the disk reaches the floor
        second = synthetic_mr(study_uid=key, series_uid=str(first.SeriesInstanceUID), instance=2)
        with caplog.at_level(logging.INFO):
            status = store_one(node.scp.port, second)
            assert status.Status == 0xA700
            time.sleep(1.5)  # three quiet periods: the study must still wait for its sender
        study = node.db.study(key)
        assert study["state"] == RECEIVED and completed == []
        assert study["reason"].startswith("incomplete: 1 instance(s) refused as out of resources")
        assert waiting_for_resend(study)
        assert "not completed on the quiet timer" in caplog.text

        node.spool.min_free_space_mb = 0  # space returns; the sender retries
        assert store_one(node.scp.port, second).Status == 0
        assert wait_for(lambda: completed == [(key, 0)], 10)
        assert node.db.study(key)["state"] == COMPLETE
    finally:
        node.stop()


def test_the_refusal_survives_a_restart(tmp_path):
    config = node_config(tmp_path, quiet_seconds=0.3)
    # the first run's own quiet timer must not complete the study before its refusal (a loaded machine took longer
    # than 0.3 s between the two C-STOREs); only the restarted node's short quiet period is under test
    node = Node(node_config(tmp_path, quiet_seconds=30), analyser=NoAnalysis())
    node.start(warm_up=False)
    try:
        key = refused_after_one(node, 2)
    finally:
        node.stop()
    restarted = Node(config, analyser=NoAnalysis())
    completed = []
    restarted.completion.on_complete = lambda key, generation: completed.append(key)
    restarted.start(warm_up=False)
    try:
        time.sleep(1.2)
        assert completed == [] and restarted.db.study(key)["state"] == RECEIVED
        assert restarted.scheduler.get_job(f"quiet:{key}") is None
        assert restarted.scheduler.get_job(f"maxwait:{key}") is not None
    finally:
        restarted.stop()


def test_max_wait_fails_a_refused_study_with_its_reason_in_status_and_log(tmp_path, caplog):
    node = Node(node_config(tmp_path, quiet_seconds=0.2, max_wait_seconds=60, force_complete_policy="fail"),
                analyser=NoAnalysis())
    node.start(warm_up=False)
    try:
        key = refused_after_one(node, 2, 3)
        assert node.db.study(key)["reason"].startswith("incomplete: 2 instance(s)")
        with caplog.at_level(logging.INFO):
            node.completion._max_wait_elapsed(key)  # the max-wait job, run now
        study = node.db.study(key)
        assert study["state"] == FAILED
        assert "max_wait_seconds=60" in study["reason"] and "2 instance(s) refused as out of resources" in study["reason"]
        assert f"study {short_hash(key)} failed: not complete after max_wait_seconds" in caplog.text
    finally:
        node.stop()


def test_database_completion_holds_a_refused_study_until_instances_arrive_again(state_location, caplog):
    db = StateDB(state_location, upgrade=True)
    config = Config.model_validate({"studies": {"quiet_seconds": 5, "max_wait_seconds": 1000,
                                                "force_complete_policy": "fail"}})
    try:
        completion = DatabaseCompletion(db, config, lease_seconds=30)
        completion._started = 0.0
        db.add_instance(row("1.2.3.1"))
        assert completion.instance_refused("1.2.3") == 1
        assert completion.instance_refused("1.2.3") == 2
        later = time.time() + 10  # quiet for twice quiet_seconds
        assert completion.poll(now=later) == []
        assert db.study("1.2.3")["state"] == RECEIVED
        db.add_instance(row("1.2.3.2"))  # the sender is back
        assert not waiting_for_resend(db.study("1.2.3"))
        assert completion.poll(now=time.time() + 10) == ["1.2.3"]
        assert db.study("1.2.3")["state"] == COMPLETE

        db.add_instance(row("1.2.4.1", "1.2.4"))
        completion.instance_refused("1.2.4")
        with caplog.at_level(logging.WARNING):
            assert completion.poll(now=time.time() + 2000) == ["1.2.4"]
        study = db.study("1.2.4")
        assert study["state"] == FAILED and "1 instance(s) refused as out of resources" in study["reason"]
        assert "failed: not complete after max_wait_seconds=1000" in caplog.text
    finally:
        db.close()


def test_an_instance_stored_again_clears_the_incomplete_reason(state_location):
    db = StateDB(state_location, upgrade=True)
    try:
        db.add_instance(row("1.2.3.1"))
        assert record_refusal(db, "1.2.3", Config.model_validate({}).studies) == 1
        assert db.study("1.2.3")["reason"].startswith(REFUSED_PREFIX)
        db.add_instance(row("1.2.3.2"))  # the sender sends again: status no longer says "incomplete ... refused"
        assert db.study("1.2.3")["reason"] is None
        (study,) = status_report(db)["studies"]
        assert study["reason"] is None and study["state"] == RECEIVED
        db.set_study_state("1.2.3", RECEIVED, "re-analysis requested")  # any other reason stays
        db.add_instance(row("1.2.3.3"))
        assert db.study("1.2.3")["reason"] == "re-analysis requested"
    finally:
        db.close()


# --- F6: an instance of a study being purged ------------------------------------------------------------------------


def test_an_instance_of_a_study_being_purged_is_refused_for_now_without_holding_completion(node, caplog):
    refused = []
    node.scp.on_refused = refused.append
    first = synthetic_mr()
    key = str(first.StudyInstanceUID)
    assert store_one(node.scp.port, first).Status == 0
    node.db.set_study_state(key, DONE)
    assert node.db.begin_purge(key, (DONE,)) is not None  # retention is deleting its files
    with caplog.at_level(logging.INFO):
        status = store_one(node.scp.port, synthetic_mr(study_uid=key, instance=2))
    assert status.Status == 0xA700 and status.ErrorComment == "study being purged, send again"
    (warning,) = [r for r in caplog.records if "being purged" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert "study being purged, the sender will send again" in warning.getMessage()
    assert "failed writing the spool" not in caplog.text
    assert refused == []  # not a refusal for space: nothing holds the (new) study's completion
    assert node.db.study(key)["state"] == PURGING and len(node.db.study_instances(key)) == 1


# --- F3: result objects respect node.min_free_space_mb ----------------------------------------------------------


def test_analyses_are_postponed_under_the_floor_and_run_when_space_returns(tmp_path):
    analyser = CountingAnalyser()
    node = Node(node_config(tmp_path), analyser=analyser)
    node.start(warm_up=False)
    try:
        key = complete_study(node)
        node.config.node.min_free_space_mb = 10**12
        node.spool.min_free_space_mb = 10**12
        node.analyse_study(key, 0)
        study = node.db.study(key)
        assert analyser.calls == 0 and study["state"] == COMPLETE
        assert "analysis postponed: free space" in study["reason"] and "node.min_free_space_mb" in study["reason"]
        node._enqueue_complete_studies()  # the requeue job queues nothing while under the floor
        assert node.analysis_queue_depth() == 0
        node.config.node.min_free_space_mb = 0
        node._enqueue_complete_studies()
        assert wait_for(lambda: node.db.study(key)["state"] not in (COMPLETE, ANALYSING))
        assert analyser.calls == 1
    finally:
        node.stop()


def test_result_objects_are_not_written_under_the_floor(tmp_path):
    node = Node(node_config(tmp_path), analyser=NoAnalysis())
    try:
        node.config.node.min_free_space_mb = 10**12
        node.spool.min_free_space_mb = 10**12
        with pytest.raises(OutOfSpace, match="results not written: free space .* under node.min_free_space_mb"):
            node._result_path(Path("results/x/1"), synthetic_mr())
        node.config.node.min_free_space_mb = 0
        assert node._result_path(Path("results/x/1"), synthetic_mr()).parent == Path("results/x/1")
    finally:
        node.db.close()


# --- F5: a failure that cannot be recorded ----------------------------------------------------------------------


def test_a_failure_that_cannot_be_recorded_releases_the_claim_once_the_database_takes_writes(tmp_path, monkeypatch):
    analyser = CountingAnalyser(error=OSError(errno.ENOSPC, "No space left on device"))
    node = Node(node_config(tmp_path), analyser=analyser)
    node.start(warm_up=False)
    try:
        key = complete_study(node)
        full = sqlalchemy.exc.OperationalError("UPDATE", {}, Exception("database or disk is full"))

        def disk_full(*args, **kwargs):
            raise full

        real_release = node.db.release_claim
        monkeypatch.setattr(node.db, "fail_analysis", disk_full)
        monkeypatch.setattr(node.db, "release_claim", disk_full)
        node.analyse_study(key, 0)  # must not raise
        assert node.db.study(key)["state"] == ANALYSING  # nothing could be written
        monkeypatch.setattr(node.db, "release_claim", real_release)  # space returns
        node.release_unrecorded()
        study = node.db.study(key)
        assert study["state"] == COMPLETE and study["claimed_by"] is None
        # a full disk postpones the analysis (break44c #3), whenever its claim can be given back
        assert study["reason"].startswith("analysis postponed: no space for the result objects"), study["reason"]
        assert node._unreleased == {}
    finally:
        node.stop()


@pytest.fixture
def claimed(node_state):
    """(state, config file, worker, its analysis id): study 1.2.3 claimed by the analysis worker of another process,
    "worker-a"."""
    db, config = node_state
    worker = StateDB(db.url, process_id="worker-a", heartbeat_seconds=20)
    db.add_instance(row("1.2.3.1"))
    db.set_study_state("1.2.3", COMPLETE)
    analysis = worker.start_analysis("1.2.3", 0)
    assert analysis is not None
    yield db, config, worker, analysis
    worker.close()


def set_columns(db: StateDB, sql: str, **params) -> None:
    with db._write() as connection:
        connection.execute(sqlalchemy.text(sql), params)


def test_retry_refuses_a_study_analysed_by_a_live_process(claimed, capsys):
    db, config, worker, _ = claimed
    worker.heartbeat(["analyse"], time.time())
    assert main(["retry", "1.2.3", "--config", str(config)]) == 1  # refused, as --reanalyse (break42a finding 5)
    err = capsys.readouterr().err
    assert "not re-queued: 1.2.3 is being analysed by worker-a, a live process (heartbeat 0 s ago)" in err
    study = db.study("1.2.3")
    assert study["state"] == ANALYSING and study["claimed_by"] == "worker-a"


@pytest.mark.parametrize("how", ["no heartbeat row", "stale heartbeat", "lease expired"])
def test_retry_requeues_a_study_stuck_analysing(claimed, capsys, how):
    db, config, worker, analysis = claimed
    if how != "no heartbeat row":
        worker.heartbeat(["analyse"], time.time())
    if how == "stale heartbeat":  # hung or killed: no beat for 3 intervals (60 s), its lease not yet run out
        set_columns(db, "UPDATE nodes SET last_seen=:t", t=time.time() - 61)
    if how == "lease expired":
        set_columns(db, "UPDATE studies SET lease_until=:t", t=time.time() - 1)
    assert main(["retry", "1.2.3", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "re-queued 1.2.3, stuck in state analysing" in out and "worker-a" in out
    study = db.study("1.2.3")
    assert study["state"] == COMPLETE and study["claimed_by"] is None
    assert study["reason"].startswith("re-analysis requested: stuck analysing")
    assert db.claim_next_study() == ("1.2.3", 0)  # the next worker analyses it again
    assert worker.finish_analysis(analysis, "1.2.3", 0, {}, [], []) is False  # the old holder records nothing


def test_write_durably_removes_its_temporary_when_the_write_fails(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    (tmp_path / "results").mkdir()
    monkeypatch.setattr(spool_module.os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        write_durably(tmp_path / "results" / "a.dcm", b"x" * 1000)
    monkeypatch.undo()
    assert list((tmp_path / "results").iterdir()) == []  # neither the file nor its temporary


# --- F9: one node per storage -------------------------------------------------------------------------------------


def test_a_second_serve_on_the_same_storage_refuses_before_touching_anything(tmp_path):
    config = node_config(tmp_path)
    running = Node(config, analyser=NoAnalysis())
    runner = RoleRunner(running)
    runner.start(warm_up=False)
    try:
        store = Path(config.node.storage_dir)
        in_flight = store / "spool" / "ab" / ".x.dcm.1.tmp"
        in_flight.parent.mkdir(parents=True)
        in_flight.write_bytes(b"a store in flight")
        unrecorded = store / "results" / "fake" / "99" / "inprogress.dcm"
        unrecorded.parent.mkdir(parents=True)
        unrecorded.write_bytes(b"an analysis in progress")
        second = Node(config, analyser=NoAnalysis())
        with pytest.raises(StorageInUse, match=r"in use by another node process \(pid \d+ .*single node"):
            RoleRunner(second).start(warm_up=False)
        second.db.close()
        assert in_flight.exists() and unrecorded.exists()
    finally:
        runner.stop()
    assert not StorageLock(Path(config.node.storage_dir)).held
    again = StorageLock(Path(config.node.storage_dir))
    again.acquire(exclusive=True)  # released by the stop
    again.release()


def test_scale_out_role_processes_share_the_storage_and_exclude_a_single_node(tmp_path):
    first, second, single = StorageLock(tmp_path), StorageLock(tmp_path), StorageLock(tmp_path)
    first.acquire(exclusive=False)
    second.acquire(exclusive=False)
    with pytest.raises(StorageInUse, match="scale-out role process"):
        single.acquire(exclusive=True)
    first.release()
    second.release()
    single.acquire(exclusive=True)
    with pytest.raises(StorageInUse, match="another node process"):
        first.acquire(exclusive=False)
    single.release()


# --- F12: same SOP Instance UID, other content --------------------------------------------------------------------


def test_an_instance_resent_with_other_content_is_named_in_a_warning(node, caplog):
    first = synthetic_mr()
    assert store_one(node.scp.port, first).Status == 0
    with caplog.at_level(logging.INFO):
        assert store_one(node.scp.port, first).Status == 0
    identical = [r for r in caplog.records if "duplicate SOP instance" in r.getMessage()]
    assert identical and identical[0].levelno == logging.INFO and "identical" in identical[0].getMessage()
    caplog.clear()
    corrected = first.copy()
    corrected.PatientName = "CORRECTED^NAME"
    with caplog.at_level(logging.INFO):
        assert store_one(node.scp.port, corrected).Status == 0
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert str(first.SOPInstanceUID) in warning.getMessage()
    assert "different content" in warning.getMessage() and "first copy is kept" in warning.getMessage()
    assert "stored once" not in caplog.text
    assert len(node.db.study_instances(str(first.StudyInstanceUID))) == 1



def test_a_corrected_study_resent_under_the_same_uids_is_one_warning_and_a_status_note(node, caplog, capsys):
    """break45a F6: a study sent again with the same SOP Instance UIDs and other header values: 255 WARNINGs, one per
    image, and nothing in `dicomnode status`. Now one WARNING per study, sender and kind of difference (every image
    at DEBUG), and status lists the study with the count, what differs and that the results are of the first copies,
    which are kept (nothing stored is lost or replaced). (A height / weight / age correction alone is applied:
    tests/node/test_lossless_replaces_lossy.py.)"""
    study_uid = "1.2.826.0.1.3680043.8.498.45006"
    originals = [synthetic_mr(study_uid=study_uid, series_uid=study_uid + ".1", instance=n, position=8.0 * n)
                 for n in range(1, 6)]
    for dataset in originals:
        assert store_one(node.scp.port, dataset).Status == 0
    stored = {row["path"]: (node.storage_dir / row["path"]).read_bytes() for row in node.db.study_instances(study_uid)}
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="dicomnode"):
        for dataset in originals:
            corrected = copy.deepcopy(dataset)
            corrected.StudyDescription, corrected.ReferringPhysicianName = "CMR corrected", "Other^Doctor"
            assert store_one(node.scp.port, corrected).Status == 0
    warnings_ = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings_) == 1 and "ReferringPhysicianName, StudyDescription" in warnings_[0], warnings_
    assert "logged at DEBUG only, counted in `dicomnode status`" in warnings_[0]
    assert len([r for r in caplog.records if r.levelno == logging.DEBUG and "different content" in r.getMessage()]) == 4
    # the first copies stay, unchanged, and are what is analysed
    assert {row["path"]: (node.storage_dir / row["path"]).read_bytes()
            for row in node.db.study_instances(study_uid)} == stored
    (item,) = node.scp.different_resends.recent()
    assert item["instances"] == 5 and item["differing"] == ["ReferringPhysicianName", "StudyDescription"]
    # another kind of difference of the same study is said again
    caplog.clear()
    renamed = copy.deepcopy(originals[0])
    renamed.PatientName = "CORRECTED^NAME"
    with caplog.at_level(logging.INFO):
        assert store_one(node.scp.port, renamed).Status == 0
    assert [r for r in caplog.records if r.levelno == logging.WARNING]
    # `dicomnode status`: the study's note, from the receiving process's heartbeat
    report = status_report(node.db)
    heartbeat = [{"node_id": "n1", "detail": {"different_resends": node.scp.different_resends.recent()}}]
    attach_different_resends(heartbeat, report["studies"])
    (study,) = [s for s in report["studies"] if s["study_key"] == study_uid]
    (note,) = study["different_resends"]
    assert note["instances"] == 6 and note["differing"] == ["PatientName", "ReferringPhysicianName", "StudyDescription"]
    assert note["text"].startswith("6 instance(s) sent again by ") and "the first copies are kept and analysed" \
        in note["text"] and "needs a new SOP Instance UID" in note["text"]
    report.update(nodes=[], receiving={}, refused_recently=[])
    _print_status(report, False, node.db.stale_after_seconds, node.db.gone_after_seconds)
    out = capsys.readouterr().out
    assert f"  {study_uid}: {note['text']}" in out.splitlines()
    assert "instances sent again with other content" in out


def test_the_re_sends_with_other_content_are_listed_after_the_receiver_restarts(node):
    """break45a F6 / break46: the count of instances sent again with other content lived in the receiving process's
    memory and heartbeat only: a restart (or a stop, which removes the heartbeat) lost it, and `dicomnode status`
    no longer said that the study's stored copies are not the corrected ones. The heartbeat now saves it in the
    state, read by status for processes that are gone, never counted twice for one that still beats, kept 24 h."""
    study_uid = "1.2.826.0.1.3680043.8.498.46002"
    originals = [synthetic_mr(study_uid=study_uid, series_uid=study_uid + ".1", instance=n, position=8.0 * n)
                 for n in range(1, 6)]
    for dataset in originals:
        assert store_one(node.scp.port, dataset).Status == 0
    for dataset in originals:
        corrected = copy.deepcopy(dataset)
        corrected.StudyDescription = "CMR corrected"
        assert store_one(node.scp.port, corrected).Status == 0
    RoleRunner(node).beat()  # what the heartbeat loop does every few seconds
    live = [{"node_id": node.db.process_id, "detail": {"different_resends": node.scp.different_resends.recent()}}]
    saved = node.db.saved_different_resends()
    assert [entry["process"] for entry in saved] == [node.db.process_id]
    report = status_report(node.db)
    attach_different_resends(live, report["studies"], saved)  # the live process: its heartbeat, not twice
    (study,) = [s for s in report["studies"] if s["study_key"] == study_uid]
    assert [note["instances"] for note in study["different_resends"]] == [5]
    # the receiver restarted: another process, its heartbeat gone, the counts of the first one still listed
    restarted = StateDB(node.db.url, process_id="restarted:1")
    try:
        report = status_report(restarted)
        attach_different_resends([], report["studies"], restarted.saved_different_resends())
        (study,) = [s for s in report["studies"] if s["study_key"] == study_uid]
        (note,) = study["different_resends"]
        assert note["instances"] == 5 and note["differing"] == ["StudyDescription"]
        assert note["text"].startswith("5 instance(s) sent again by ") and "were not stored" in note["text"]
        later = time.time() + 25 * 3600
        assert restarted.saved_different_resends(now=later) == []
        restarted.save_different_resends([], now=later)  # any process's beat removes what is older than 24 h
        assert restarted.saved_different_resends() == []
    finally:
        restarted.close()


def test_an_instance_rerouted_in_another_encoding_is_identical_and_other_pixel_values_are_different_content(node,
                                                                                                          caplog):
    """A PACS re-routing the study sends the same instance in another transfer syntax (here Implicit VR, and RLE
    Lossless): the same attributes and pixel values, other bytes. That is said as identical, at INFO; a changed pixel
    is different content, a WARNING that says the pixel values differ and no attribute does."""
    first = synthetic_mr()
    assert store_one(node.scp.port, first).Status == 0
    implicit = copy.deepcopy(first)
    implicit.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    rle = copy.deepcopy(first)
    rle.compress(RLELossless, generate_instance_uid=False)
    for resent in (implicit, rle):
        caplog.clear()
        with caplog.at_level(logging.INFO):
            assert store_one(node.scp.port, resent).Status == 0
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
        (line,) = [r.getMessage() for r in caplog.records if "duplicate SOP instance" in r.getMessage()]
        assert "identical content" in line and "stored once" in line
        assert f"sent in transfer syntax {resent.file_meta.TransferSyntaxUID}" in line
    changed = copy.deepcopy(first)
    pixels = changed.pixel_array.copy()
    pixels[0, 0] += 1
    changed.PixelData = pixels.astype("<u2").tobytes()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        status = store_one(node.scp.port, changed)
    # another image under a held SOP Instance UID is no re-send: refused (the sender is told), kept aside
    assert status.Status == 0x0111 and "SOP UID held by another instance" in status.ErrorComment
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "the pixel values differ (1 of 4096)" in warning and "refused (0x0111" in warning
    assert "stored once" not in caplog.text
    assert len(node.db.study_instances(str(first.StudyInstanceUID))) == 1
    assert len(list((node.storage_dir / "conflicts").rglob("*.dcm"))) == 1


def test_a_resend_with_a_rewritten_patient_id_or_lossy_pixels_is_a_resend_not_a_conflict(node, caplog):
    """Review 43 #3: a PACS forwarding across domains rewrites PatientID, or re-routes the study lossy-compressed:
    both were refused 0x0111 and kept under conflicts/ for ever. The same StudyInstanceUID and SeriesInstanceUID make
    them re-sends: success, the first copy kept, a WARNING naming what differs, nothing under conflicts/."""
    first = synthetic_mr()
    assert store_one(node.scp.port, first).Status == 0
    coerced = copy.deepcopy(first)
    coerced.PatientID = "MPI-" + str(first.PatientID)
    lossy = copy.deepcopy(first)
    pixels = lossy.pixel_array.copy()
    pixels[:8, :8] += 3  # what a lossy codec changes
    lossy.PixelData = pixels.astype("<u2").tobytes()
    lossy.LossyImageCompression = "01"
    for resent, named in ((coerced, "1 attribute(s) differ: PatientID"), (lossy, "the pixel values differ (64 of")):
        caplog.clear()
        with caplog.at_level(logging.INFO):
            assert store_one(node.scp.port, resent).Status == 0
        (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert named in warning and "the first copy is kept" in warning and "0x0111" not in warning
    assert not list((node.storage_dir / "conflicts").rglob("*.dcm"))
    assert len(node.db.study_instances(str(first.StudyInstanceUID))) == 1
    assert not node.scp.refusals.recent()


def test_copies_that_cannot_be_decoded_or_read_are_resends_unless_study_or_series_differ():
    """Review 43 #3: a re-send in a transfer syntax without a decoder here, or a pair pydicom cannot read, cannot be
    shown to be another image: a re-send. Another SeriesInstanceUID is a conflict whatever the pixels."""
    from io import BytesIO

    import pydicom
    from pydicom.encaps import encapsulate

    def encoded(dataset) -> bytes:
        buffer = BytesIO()
        pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
        return buffer.getvalue()

    first = synthetic_mr()
    undecodable = copy.deepcopy(first)
    undecodable.file_meta.TransferSyntaxUID = pydicom.uid.JPEG2000
    undecodable.PixelData = encapsulate([b"\xff\x4f\xff\x51 not a codestream"])
    undecodable["PixelData"].VR = "OB"
    found = spool_module.content_differences(encoded(undecodable), encoded(first))
    assert "could not be decoded" in found.text() and found.conflict() is None
    assert spool_module.content_differences(b"not DICOM at all", encoded(first)).conflict() is None
    other_series = copy.deepcopy(undecodable)
    other_series.SeriesInstanceUID = "2.25.99"
    assert spool_module.content_differences(encoded(other_series), encoded(first)).conflict() == (
        "SeriesInstanceUID differs from the stored copy")


def test_an_instance_of_another_study_under_a_held_sop_uid_is_refused_kept_and_listed(node, caplog, capsys):
    """break43b #1: a second study (another patient) re-using the SOP Instance UIDs of a stored one was acknowledged
    0x0000 and thrown away. Now each such instance is refused with 0x0111 and an Error Comment, kept under
    storage_dir/conflicts, logged naming both studies, and the study is listed by `dicomnode status`."""
    first = synthetic_mr()
    assert store_one(node.scp.port, first).Status == 0
    other = copy.deepcopy(first)
    other.StudyInstanceUID = "2.25.1234567"
    other.PatientID = "OTHER-PATIENT"
    caplog.clear()
    with caplog.at_level(logging.INFO):
        status = store_one(node.scp.port, other)
    assert status.Status == 0x0111 and status.ErrorComment == "SOP UID held by another study"
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "2.25.1234567" in warning and str(first.StudyInstanceUID) in warning
    assert "StudyInstanceUID differs from the stored copy" in warning and "OTHER-PATIENT" not in warning
    (kept,) = (node.storage_dir / "conflicts").rglob("*.dcm")
    assert kept.read_bytes().find(b"OTHER-PATIENT") >= 0
    assert store_one(node.scp.port, other).Status == 0x0111  # sent again: still refused, kept once
    assert len(list((node.storage_dir / "conflicts").rglob("*.dcm"))) == 1
    (listed,) = [item for item in node.scp.refusals.recent() if item["study_instance_uid"] == "2.25.1234567"]
    assert listed["refused"] == 2 and "already held by another instance" in listed["reason"]
    assert node.scp.refusals.last_refused_at is None  # not a refusal of receiving: status does not say so
    assert len(node.db.study_instances(str(first.StudyInstanceUID))) == 1

# --- F11: the log lines an admin follows a study by ---------------------------------------------------------------


def test_a_new_study_is_logged_once_with_its_calling_ae(node, caplog):
    first = synthetic_mr()
    with caplog.at_level(logging.INFO):
        for instance in (1, 2, 3):
            dataset = synthetic_mr(study_uid=str(first.StudyInstanceUID), instance=instance)
            assert store_one(node.scp.port, dataset, calling="SCANNER7").Status == 0
    lines = [r.getMessage() for r in caplog.records if "new study" in r.getMessage()]
    assert lines == [f"study {short_hash(str(first.StudyInstanceUID))}: new study, first instance from SCANNER7"]


def test_dispatch_lines_name_the_study(tmp_path, caplog):
    config = node_config(tmp_path)
    db = StateDB(tmp_path / "state.sqlite3", upgrade=True)
    try:
        queued_result(db)
        save(synthetic_mr(), tmp_path / "results" / "r.dcm")  # port 9: nobody listens
        dispatcher = Dispatcher(db, tmp_path, config.dispatch.model_copy(update={"max_attempts": 1}), "DICOMNODE")
        caplog.handler.addFilter(StudyContextFilter())
        with caplog.at_level(logging.INFO, logger="dicomnode.dispatch"):
            dispatcher.run_once()
        records = [r for r in caplog.records if r.name == "dicomnode.dispatch"]
        assert records and all(getattr(r, "study", None) == short_hash("1.2.3") for r in records)
        assert any("dead letter" in r.getMessage() for r in records)
        assert any(short_hash("1.2.3") in r.getMessage() for r in records if r.levelno == logging.WARNING)
    finally:
        db.close()


def test_a_library_warning_repeated_for_every_image_is_logged_once_per_study(caplog):
    logger = logging.getLogger("py.warnings")
    repeated = RepeatedWarningFilter()
    logger.addFilter(repeated)
    try:
        with caplog.at_level(logging.WARNING, logger="py.warnings"):
            for study in ("aaaa", "bbbb"):
                with study_context(study):
                    for image in range(50):
                        logger.warning("x.py:1: UserWarning: Invalid value for VR UI: '1.2.0%d'. Please see ...\n"
                                       "  warnings.warn(msg)", image)
        assert len(caplog.records) == 2
        assert "repeats of this warning for this study are not logged" in caplog.records[0].getMessage()
    finally:
        logger.removeFilter(repeated)


def test_the_node_routes_library_warnings_through_the_repeat_filter():
    with warnings.catch_warnings():
        logging_config = Config.model_validate({}).logging
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        try:
            configure_logging(logging_config)
            assert any(isinstance(f, RepeatedWarningFilter) for f in logging.getLogger("py.warnings").filters)
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)
            logging.captureWarnings(False)


# --- F13 ----------------------------------------------------------------------------------------------------------


def test_the_refusal_states_the_real_comparison(tmp_path):
    db = StateDB(tmp_path / "state.sqlite3", upgrade=True)
    try:
        spool = Spool(tmp_path, db, min_free_space_mb=0)
        free = spool.free_space_mb()
        refusal = spool.no_room(int((free + 5) * 1024 * 1024))
        assert isinstance(refusal, OutOfSpace)
        assert re.search(r"free space [\d.]+ MB minus the instance \([\d.]+ MB\) would be under the floor of 0 MB",
                         str(refusal))
        assert len(refusal.comment) <= 64 and "instance" in refusal.comment
        assert spool.no_room(1024) is None
    finally:
        db.close()


def test_systemd_waits_for_the_nodes_worst_case_stop():
    from dicomnode.dispatch import ABORT_GRACE_SECONDS

    # the dispatcher's stop may abort associations that outlast it and wait ABORT_GRACE_SECONDS more (review51 #6)
    worst = STOP_TIMEOUT + SCP_STOP_SECONDS + WORKERS_STOP_SECONDS + DISPATCH_STOP_SECONDS + ABORT_GRACE_SECONDS
    for unit in ("dicomnode.service", "dicomnode@.service"):
        text = (REPO / "systemd" / unit).read_text()
        (value,) = re.findall(r"^TimeoutStopSec=(\d+)$", text, re.MULTILINE)
        assert int(value) > worst, unit


# --- F10 ----------------------------------------------------------------------------------------------------------


def test_status_shows_why_and_when_a_pending_send_is_retried(state_location, capsys):
    db = StateDB(state_location, upgrade=True)
    try:
        item = queued_result(db)
        db.mark_failed_send(item["id"], "connection refused", time.time() + 30, dead=False)
        report = status_report(db)
        (study,) = report["studies"]
        (retrying,) = study["retrying"]
        assert retrying["error"] == "connection refused" and 25 < retrying["next_attempt_in_s"] <= 30
        _print_status(report, False, db.stale_after_seconds, db.gone_after_seconds)  # the text `dicomnode status`
        out = capsys.readouterr().out
        (line,) = [line for line in out.splitlines() if "9.9.1" in line]
        assert re.fullmatch(r"  1\.2\.3 -> pacs: 9\.9\.1 after 1 attempt\(s\): connection refused; next attempt in "
                            r"(2[5-9]|30) s", line), line
        assert out.index("pending sends being retried") > out.index("reason")
    finally:
        db.close()


def test_status_says_when_sends_being_retried_become_dead_letters(node_state, capsys):
    """review48 #7: dispatch.max_attempts went from 8 (~11 min) to 24 (~4 h): `dicomnode status` says, where sends
    are failing, after how many attempts and about how long of failures they become dead letters."""
    db, config = node_state
    item = queued_result(db)
    db.mark_failed_send(item["id"], "connection refused", time.time() + 30, dead=False)
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "pending sends being retried (back-off; dead letters after about 4.1 h of failures, dispatch.max_attempts " \
        "= 24 attempts;" in out
    (line,) = [line for line in out.splitlines() if "9.9.1" in line]
    assert " after 1 of 24 attempt(s): connection refused; next attempt in " in line
    config.write_text(config.read_text() + "[dispatch]\nmax_attempts = 8\n")
    assert main(["status", "--config", str(config), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dispatch"] == {"max_attempts": 8, "retry_window_s": 635}


@pytest.fixture
def parked(state_location):
    """A state whose one pending send was parked a day ahead: its failed attempt was made while the clock was a
    day fast (a bad NTP step), then the clock stepped back."""
    db = StateDB(state_location, upgrade=True)
    item = queued_result(db)
    db.mark_failed_send(item["id"], "connection refused", time.time() + 86400 + 5, dead=False)
    yield db
    db.close()


def test_a_send_parked_by_a_clock_stepped_back_is_due_within_max_backoff(parked):
    now = time.time()
    assert parked.claim_sends() == [] and parked.next_send_time() > now + 86000  # uncapped: parked for a day
    assert parked.next_send_time(max_delay=10) <= time.time()  # due now: no back-off is that long
    assert [r["sop_instance_uid"] for r in parked.claim_sends(max_delay=10)] == ["9.9.1"]
    parked.release_claims()
    # an ordinary back-off within the cap waits as before
    (item,) = parked.outbox_for("1.2.3")
    parked.mark_failed_send(item["id"], "connection refused", time.time() + 8, dead=False)
    assert parked.claim_sends(max_delay=10) == [] and parked.next_send_time(max_delay=10) > time.time() + 5


def test_the_dispatcher_caps_the_wait_at_max_backoff_seconds(parked, tmp_path):
    save(synthetic_mr(), tmp_path / "results" / "r.dcm")
    config = Config.model_validate({"dispatch": {"max_attempts": 5, "initial_backoff_seconds": 2,
                                                 "max_backoff_seconds": 10}}).dispatch
    dispatcher = Dispatcher(parked, tmp_path, config, "DICOMNODE")
    asked = []
    next_send_time = parked.next_send_time
    parked.next_send_time = lambda **kwargs: asked.append(kwargs) or next_send_time(**kwargs)
    dispatcher.run_once()  # attempted now (port 9: refused again), not in a day
    (item,) = parked.outbox_for("1.2.3")
    assert item["attempts"] == 2 and item["next_attempt_at"] <= time.time() + 10
    dispatcher.start()
    try:
        assert wait_for(lambda: asked, 10)
    finally:
        dispatcher.stop()
    assert asked[0]["max_delay"] == 10
