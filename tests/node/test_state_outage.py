"""An outage of the state database (scale-break findings 1-3): no loop of a process dies of it, a dead worker thread
stops the heartbeat, a C-STORE during it is a deliberate retryable refusal that leaves no file behind, and the outage
is logged once (and its end once), not as a traceback every poll.

The outage is simulated in-process by making StateDB methods raise SQLAlchemy's OperationalError;
tests/scaleout/test_state_outage_pg.py stops and starts a real PostgreSQL.
"""
from __future__ import annotations

import logging
import time

import pytest
import sqlalchemy.exc

import dicomnode.dispatch as dispatch_module
import dicomnode.studies
from dicomnode.config import Config, StudiesConfig
from dicomnode.dispatch import Dispatcher
from dicomnode.net.scp import STATE_UNREACHABLE_COMMENT
from dicomnode.net.scu import SendResult
from dicomnode.node import Node
from dicomnode.roles import RoleRunner, nodes_report
from dicomnode.state import (COMPLETE, OUTBOX_SENT, RECEIVED, InstanceRow, OutageMonitor, RoundFailures, StateDB,
                             is_outage)
from dicomnode.studies import CompletionTracker
from tests.hardening.hardening_support import save, store_one, synthetic_mr
from tests.node.test_stages import Clock, FakeScheduler
from tests.node.test_storage_safety import NoAnalysis, node, queued_result, wait_for  # noqa: F401 (node: fixture)


def outage_error(reason: str = "connection refused") -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception(reason))


class Switch:
    """Wraps StateDB methods so that they raise an outage while `down`; counts the calls."""

    def __init__(self, monkeypatch, db: StateDB, *names: str):
        self.down = True
        self.calls = 0
        for name in names:
            monkeypatch.setattr(db, name, self._wrap(getattr(db, name)))

    def _wrap(self, real):
        def method(*args, **kwargs):
            self.calls += 1
            if self.down:
                raise outage_error()
            return real(*args, **kwargs)
        return method


def ok_sends(sent: list):
    def send_files(paths, *args, **kwargs):
        sent.extend(paths)
        return [SendResult(path, True, 0) for path in paths]
    return send_files


def dispatch_config():
    return Config.model_validate({"dispatch": {"max_attempts": 5, "initial_backoff_seconds": 0.1,
                                               "max_backoff_seconds": 1}}).dispatch


def errors_of(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("dicomnode")]


# --- finding 1: the dispatch thread ---------------------------------------------------------------------------------


def test_the_dispatch_thread_survives_a_state_database_outage_and_sends_afterwards(tmp_path, monkeypatch, caplog):
    db = StateDB(tmp_path / "state.sqlite3", upgrade=True)
    queued_result(db)
    save(synthetic_mr(), tmp_path / "results" / "r.dcm")
    sent: list = []
    monkeypatch.setattr(dispatch_module, "send_files", ok_sends(sent))
    switch = Switch(monkeypatch, db, "claim_sends", "next_send_time")
    dispatcher = Dispatcher(db, tmp_path, dispatch_config(), "DICOMNODE")
    dispatcher.idle_seconds = 0.02
    try:
        with caplog.at_level(logging.INFO):
            dispatcher.start()
            assert wait_for(lambda: switch.calls >= 10, 20)  # many rounds failed ...
            assert dispatcher._thread.is_alive() and not dispatcher.failed  # ... and the thread lives
            switch.down = False
            assert wait_for(lambda: db.outbox_for("1.2.3")[0]["state"] == OUTBOX_SENT, 20)
    finally:
        dispatcher.stop()
        db.close()
    assert len(sent) == 1
    (error,) = errors_of(caplog)  # one line for the whole outage, no traceback
    assert error.getMessage().startswith("state database unreachable: connection refused; retrying every")
    assert error.exc_info is None
    assert [r for r in caplog.records if "reachable again" in r.getMessage()]


def test_a_send_acknowledged_during_an_outage_is_recorded_before_anything_is_claimed_again(tmp_path, monkeypatch):
    db = StateDB(tmp_path / "state.sqlite3", upgrade=True)
    item = queued_result(db)
    save(synthetic_mr(), tmp_path / "results" / "r.dcm")
    sent: list = []
    monkeypatch.setattr(dispatch_module, "send_files", ok_sends(sent))
    real_mark_sent = db.mark_sent
    switch = Switch(monkeypatch, db, "mark_sent")
    dispatcher = Dispatcher(db, tmp_path, dispatch_config(), "DICOMNODE")
    try:
        with pytest.raises(sqlalchemy.exc.OperationalError):
            dispatcher.run_once()  # the PACS acknowledged it, the state could not record it
        assert len(sent) == 1 and dispatcher._unrecorded_sent == [item["id"]]
        db.release_claims()  # its claim lapsed meanwhile: claimable again
        with pytest.raises(sqlalchemy.exc.OperationalError):
            dispatcher.run_once()  # still down: nothing claimed, nothing sent
        switch.down = False
        monkeypatch.setattr(db, "mark_sent", real_mark_sent)
        assert dispatcher.run_once() == 0
        assert len(sent) == 1 and db.outbox_for("1.2.3")[0]["state"] == OUTBOX_SENT and dispatcher.sent == 1
    finally:
        db.close()


# --- finding 1: every loop of a role process, and an honest heartbeat -----------------------------------------------


def role_node(tmp_path, **state) -> Node:
    config = Config.model_validate({
        "node": {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 0,
                 "allowed_calling_aes": ["*"]},
        "studies": {"quiet_seconds": 3600},
        "state": {"heartbeat_seconds": 0.1, "lease_seconds": 1, "poll_seconds": 0.02, **state}})
    return Node(config, analyser=NoAnalysis())


def test_every_loop_of_a_role_process_outlives_an_outage_said_once(tmp_path, monkeypatch, caplog):
    node = role_node(tmp_path)
    runner = RoleRunner(node, ("complete", "analyse", "dispatch"))
    runner.start(warm_up=False)
    try:
        with caplog.at_level(logging.INFO):
            switch = Switch(monkeypatch, node.db, "_rows", "_write")  # every statement of the process fails
            assert wait_for(lambda: switch.calls >= 60, 30)
            threads = list(runner._threads) + [node.dispatcher._thread]
            assert all(thread.is_alive() for thread in threads) and runner.dead_threads() == []
            errors = errors_of(caplog)
            assert len(errors) == 1 and "state database unreachable: connection refused" in errors[0].getMessage()
            assert not [r for r in caplog.records if r.exc_info]  # no traceback for an outage
            switch.down = False
            assert wait_for(lambda: [r for r in caplog.records if "reachable again" in r.getMessage()], 20)
            assert wait_for(lambda: nodes_report(node.db)[0]["heartbeat_age_s"] < 1, 20)
        assert len([r for r in caplog.records if "reachable again" in r.getMessage()]) == 1
    finally:
        runner.stop()


def test_an_error_outside_a_round_never_ends_the_analysis_worker_and_its_traceback_is_said_once(tmp_path, monkeypatch,
                                                                                                 caplog):
    node = role_node(tmp_path)
    calls = []

    def broken():  # e.g. the storage under node.min_free_space_mb's check went away (a stale NFS handle)
        calls.append(1)
        raise OSError(116, "Stale file handle")

    monkeypatch.setattr(node, "results_space_problem", broken)
    runner = RoleRunner(node, ("analyse",))
    with caplog.at_level(logging.INFO):
        runner.start(warm_up=False)
        try:
            assert wait_for(lambda: len(calls) >= 20, 30)
            assert all(thread.is_alive() for thread in runner._threads) and runner.dead_threads() == []
        finally:
            runner.stop()
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == node.config.analysis.workers  # once per worker, not once per round
    assert "analysis worker round failed" in tracebacks[0].getMessage()


def test_a_worker_thread_that_ends_stops_the_heartbeat_and_says_so(tmp_path, monkeypatch, caplog):
    node = role_node(tmp_path)
    monkeypatch.setattr(node.dispatcher, "_loop", lambda: None)  # the dispatch thread ends at once
    runner = RoleRunner(node, ("complete", "dispatch"))
    with caplog.at_level(logging.INFO):
        runner.start(warm_up=False)
        try:
            assert wait_for(lambda: [r for r in caplog.records if r.levelno == logging.CRITICAL], 20)
            (critical,) = [r for r in caplog.records if r.levelno == logging.CRITICAL]
            assert "dispatch" in critical.getMessage() and "heartbeat stops" in critical.getMessage()
            assert wait_for(lambda: nodes_report(node.db)[0]["failed_threads"], 20)  # its last beat says why
            (report,) = nodes_report(node.db)
            assert report["failed_threads"] == ["dispatch"] and not report["alive"]
            last_seen = report["last_seen"]
            time.sleep(0.6)  # six heartbeat intervals
            assert nodes_report(node.db)[0]["last_seen"] == last_seen
        finally:
            runner.stop()


# --- finding 1: the single node's completion timers -----------------------------------------------------------------


def test_a_quiet_timer_that_meets_an_outage_is_armed_again_and_counts_no_quiet_during_it(tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(dicomnode.studies.time, "time", clock)  # the time module: every caller's clock
    db = StateDB(tmp_path / "state.sqlite3")
    scheduler = FakeScheduler()
    scheduler.running = True
    completed = []
    tracker = CompletionTracker(db, StudiesConfig(quiet_seconds=30, max_wait_seconds=600),
                                lambda key, generation: completed.append(key), scheduler, retry_seconds=5)
    try:
        db.add_instance(InstanceRow("1.2.3.1", "1.2.3", "1.2.3", "1.2.3.9", "1.2.840.10008.5.1.4.1.1.4",
                                    "1.2.840.10008.1.2.1", "MR", "spool/1.dcm", 1, "SCANNER1", clock.now))
        tracker.instance_stored("1.2.3", new_study=True, first_received=clock.now)
        real_study = db.study
        switch = Switch(monkeypatch, db, "study")
        clock.now += 30
        scheduler.fire("quiet:1.2.3")  # the check meets the outage: no exception, armed again
        assert scheduler.jobs["quiet:1.2.3"][1] == clock.now + 5
        scheduler.fire("maxwait:1.2.3")
        assert "maxwait:1.2.3" in scheduler.jobs
        switch.down = False
        monkeypatch.setattr(db, "study", real_study)
        clock.now += 5
        scheduler.fire("quiet:1.2.3")  # back: a whole quiet period from the outage before it completes
        assert completed == [] and db.study("1.2.3")["state"] == RECEIVED
        clock.now = scheduler.jobs["quiet:1.2.3"][1]
        scheduler.fire("quiet:1.2.3")
        assert completed == ["1.2.3"] and db.study("1.2.3")["state"] == COMPLETE
    finally:
        db.close()


# --- finding 2: a C-STORE during an outage ---------------------------------------------------------------------------


def test_a_c_store_during_an_outage_is_refused_for_now_and_leaves_no_file(node, monkeypatch, caplog):
    real_add = node.db.add_instance
    Switch(monkeypatch, node.db, "add_instance")
    dataset = synthetic_mr()
    with caplog.at_level(logging.INFO):
        status = store_one(node.scp.port, dataset)
    assert status.Status == 0xA700 and status.ErrorComment == STATE_UNREACHABLE_COMMENT
    assert not [p for p in node.spool.spool_dir.rglob("*") if p.is_file()]  # the file written went again
    refusals = [r for r in caplog.records if "refused (0xA700" in r.getMessage()]
    assert len(refusals) == 1 and "state database unreachable: connection refused" in refusals[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info]
    monkeypatch.setattr(node.db, "add_instance", real_add)  # back: the sender sends it again
    assert store_one(node.scp.port, dataset).Status == 0
    assert len(node.db.study_instances(str(dataset.StudyInstanceUID))) == 1


# --- finding 3: telling an outage from a bug ------------------------------------------------------------------------


def test_outages_are_told_from_statement_faults():
    import sqlite3

    assert is_outage(outage_error("server closed the connection unexpectedly"))
    assert is_outage(sqlite3.OperationalError("database is locked"))
    assert is_outage(sqlalchemy.exc.OperationalError("x", {}, sqlite3.OperationalError("disk I/O error")))
    assert not is_outage(sqlalchemy.exc.OperationalError("x", {}, sqlite3.OperationalError("no such table: x")))
    assert not is_outage(sqlalchemy.exc.IntegrityError("x", {}, Exception("UNIQUE constraint failed")))
    assert not is_outage(ValueError("x"))


def test_an_outage_is_said_once_with_a_reminder_and_its_end_once(monkeypatch, caplog):
    clock = Clock()
    monkeypatch.setattr(dicomnode.studies.time, "time", clock)
    monitor = OutageMonitor(retry_seconds=1)
    with caplog.at_level(logging.INFO, logger="dicomnode.state"):
        for _ in range(100):
            monitor.failed(outage_error())
            clock.now += 1  # 100 s of outage, retried every second
        assert [r.levelname for r in caplog.records] == ["ERROR"]
        clock.now += 300
        monitor.failed(outage_error("the database system is starting up"))
        assert "still unreachable after 400 s (101 failed attempts): the database system is starting up" in \
            caplog.records[-1].getMessage()
        monitor.succeeded()
        monitor.succeeded()
    assert [r.levelname for r in caplog.records] == ["ERROR", "ERROR", "WARNING"]
    assert "reachable again after 400 s" in caplog.records[-1].getMessage()


def test_a_repeated_error_that_is_no_outage_keeps_one_traceback(tmp_path, caplog):
    db = StateDB(tmp_path / "state.sqlite3")
    failures = RoundFailures(db, logging.getLogger("dicomnode.test"), "round failed", 1)
    try:
        with caplog.at_level(logging.INFO):
            for _ in range(50):
                failures.failed(KeyError("x"))
            failures.succeeded()
    finally:
        db.close()
    assert [bool(r.exc_info) for r in caplog.records] == [True, False]
    assert "works again after 50 failed rounds" in caplog.records[-1].getMessage()
