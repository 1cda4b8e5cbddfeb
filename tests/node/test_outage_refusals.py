"""Instances refused (0xA700) while the state database is unreachable hold their study like a refusal for space
(break41c finding 1): kept in memory and under <storage_dir>/refusals/, written to the state when it is back,
before completion may complete the study; a restart keeps them; `status` names them with a remedy that follows the
cause (finding 5: a read-only spool is not 'lack of space')."""
from __future__ import annotations

import logging
import os
import time

import pytest

from dicomnode.cli import _print_receiving
from dicomnode.config import Config
from dicomnode.net.scp import STATE_UNREACHABLE_COMMENT
from dicomnode.node import Node
from dicomnode.roles import DatabaseCompletion, RoleRunner
from dicomnode.state import COMPLETE, RECEIVED, StateDB
import dicomnode.studies
from dicomnode.studies import PENDING_REFUSALS_DIR, CompletionTracker, PendingRefusals, record_refusal, waiting_for_resend
from tests.hardening.hardening_support import store_one, synthetic_mr
from tests.node.test_stages import FakeScheduler
from tests.node.test_state_outage import Switch
from tests.node.test_storage_safety import NoAnalysis, node_config, row, wait_for
from tests.scaleout.test_state_outage_pg import postgres  # noqa: F401 (fixture: a PostgreSQL to stop and start)


def pending_files(storage) -> list:
    folder = storage / PENDING_REFUSALS_DIR
    return [p for p in folder.iterdir() if p.suffix == ".json"] if folder.is_dir() else []


def test_an_instance_refused_during_an_outage_holds_its_study_once_the_database_is_back(tmp_path, monkeypatch,
                                                                                       caplog):
    node = Node(node_config(tmp_path, quiet_seconds=0.5), analyser=NoAnalysis())
    completed = []
    node.completion.on_complete = lambda key, generation: completed.append((key, generation))
    node.start(warm_up=False)
    try:
        first = synthetic_mr()
        key = str(first.StudyInstanceUID)
        assert store_one(node.scp.port, first).Status == 0
        switch = Switch(monkeypatch, node.db, "add_instance", "study", "studies", "set_study_state")
        second = synthetic_mr(study_uid=key, series_uid=str(first.SeriesInstanceUID), instance=2)
        with caplog.at_level(logging.INFO):
            assert store_one(node.scp.port, second).Status == 0xA700
            assert len(pending_files(tmp_path / "store")) == 1  # on disk too: a restart keeps it
            (refused,) = node.scp.refusals.recent()  # status: refused_recently
            assert refused["study_instance_uid"] == key and "state database unreachable" in refused["reason"]
            time.sleep(1.0)
            switch.down = False  # the database is back
            time.sleep(2.5)  # several quiet periods after the outage: the study must wait for its sender
        study = node.db.study(key)
        assert completed == [] and study["state"] == RECEIVED and waiting_for_resend(study)
        assert study["reason"].startswith("incomplete: 1 instance(s) refused as out of resources (0xA700: the state "
                                          "database unreachable)")
        assert pending_files(tmp_path / "store") == []
        assert "not completed on the quiet timer until its sender sends again" in caplog.text

        assert store_one(node.scp.port, second).Status == 0  # the sender sends it again
        assert wait_for(lambda: completed == [(key, 0)], 10)
        assert node.db.study(key)["state"] == COMPLETE
    finally:
        node.stop()


def test_a_refusal_kept_on_disk_holds_the_study_after_a_restart(tmp_path):
    node = Node(node_config(tmp_path), analyser=NoAnalysis())  # quiet for an hour: still receiving at its stop
    node.start(warm_up=False)
    try:
        first = synthetic_mr()
        key = str(first.StudyInstanceUID)
        assert store_one(node.scp.port, first).Status == 0
    finally:
        node.stop()
    # refused while the database was down, and the node stopped before it was back
    PendingRefusals(tmp_path / "store").add(key, key, "1.2.3.4.5", "SCANNER1")
    restarted = Node(node_config(tmp_path, quiet_seconds=0.3), analyser=NoAnalysis())
    completed = []
    restarted.completion.on_complete = lambda key, generation: completed.append(key)
    restarted.start(warm_up=False)
    try:
        time.sleep(1.2)
        study = restarted.db.study(key)
        assert completed == [] and study["state"] == RECEIVED
        assert "(0xA700: the state database unreachable)" in study["reason"]  # not "transfer interrupted"
        assert pending_files(tmp_path / "store") == []
    finally:
        restarted.stop()


def test_database_completion_writes_the_refusals_of_any_receiver_before_it_completes(tmp_path):
    """Scale-out: the process holding the `complete` lease reads the refusals every receiver sharing the spool kept
    on disk; a refusal older than the study's latest instance needs no hold (its sender sent again)."""
    db = StateDB(tmp_path / "state.sqlite3")
    config = Config.model_validate({"studies": {"quiet_seconds": 5, "max_wait_seconds": 1000}})
    try:
        db.add_instance(row("1.2.3.1", "1.2.3"))
        db.add_instance(row("1.2.4.1", "1.2.4"))
        received = db.study("1.2.3")["last_received"]
        (tmp_path / "store").mkdir()
        receiver_b = PendingRefusals(tmp_path / "store")  # another process, the same spool
        receiver_b.add("1.2.3", "1.2.3", "1.2.3.2", "SCANNER1", now=received + 1)
        receiver_b.add("1.2.4", "1.2.4", "1.2.4.2", "SCANNER1", now=db.study("1.2.4")["last_received"] - 1)
        completion = DatabaseCompletion(db, config, 30, pending_refusals=PendingRefusals(tmp_path / "store"))
        completion._started = 0.0
        done = completion.poll(now=received + 10)
        assert done == ["1.2.4"]
        held = db.study("1.2.3")
        assert held["state"] == RECEIVED and waiting_for_resend(held)
        assert held["reason"].startswith("incomplete: 1 instance(s) refused")
        assert pending_files(tmp_path / "store") == []
        assert completion.poll(now=received + 20) == []  # recorded once: the count stays 1
        assert db.study("1.2.3")["reason"].startswith("incomplete: 1 instance(s) refused")
    finally:
        db.close()


def test_the_refusals_wait_while_the_database_is_still_down(tmp_path, monkeypatch):
    db = StateDB(tmp_path / "state.sqlite3")
    config = Config.model_validate({}).studies
    try:
        db.add_instance(row("1.2.3.1", "1.2.3"))
        (tmp_path / "store").mkdir()
        pending = PendingRefusals(tmp_path / "store")
        pending.add("1.2.3", "1.2.3", "1.2.3.2", "SCANNER1")
        switch = Switch(monkeypatch, db, "study")
        try:
            pending.flush(db, config)
        except Exception as exc:  # noqa: BLE001 - the outage, raised to the caller's loop
            assert "connection refused" in str(exc)
        else:
            raise AssertionError("flush went through during the outage")
        assert len(pending_files(tmp_path / "store")) == 1 and len(pending.pending()) == 1
        switch.down = False
        assert pending.flush(db, config) == ["1.2.3"]
        assert pending.pending() == {}
    finally:
        db.close()


@pytest.mark.parametrize("resent", [True, False])
def test_the_refusal_of_an_instance_held_already_never_holds_its_study(tmp_path, monkeypatch, resent):
    """During the outage the SCP cannot tell a duplicate: the sender's re-send of an instance the node holds is
    refused and kept. Once the database is back the study (whole all along) completes on the quiet timer, whether
    the sender sends that instance again (a duplicate now) or not."""
    node = Node(node_config(tmp_path, quiet_seconds=0.5), analyser=NoAnalysis())
    completed = []
    node.completion.on_complete = lambda key, generation: completed.append((key, generation))
    node.start(warm_up=False)
    try:
        first = synthetic_mr()
        key, series = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
        instances = [first] + [synthetic_mr(study_uid=key, series_uid=series, instance=n) for n in (2, 3)]
        assert [store_one(node.scp.port, ds).Status for ds in instances] == [0, 0, 0]
        switch = Switch(monkeypatch, node.db, "add_instance", "has_instance", "study", "studies", "set_study_state")
        assert store_one(node.scp.port, instances[2]).Status == 0xA700  # sent again: refused, kept
        assert len(pending_files(tmp_path / "store")) == 1
        time.sleep(0.2)
        switch.down = False
        if resent:
            assert store_one(node.scp.port, instances[2]).Status == 0  # a duplicate now
        assert wait_for(lambda: completed == [(key, 0)], 10)
        study = node.db.study(key)
        assert study["state"] == COMPLETE and study["reason"] is None
        assert pending_files(tmp_path / "store") == []
    finally:
        node.stop()


def test_a_flush_drops_refusals_of_stored_instances_whatever_the_clocks_say(tmp_path):
    """A refusal recorded on a host whose clock is ahead (PostgreSQL shared by several hosts) of an instance stored
    since on another host: the instance is held, so nothing is missing; a refusal of an instance not held still
    holds."""
    db = StateDB(tmp_path / "state.sqlite3")
    config = Config.model_validate({}).studies
    try:
        db.add_instance(row("1.2.3.1", "1.2.3"))
        db.add_instance(row("1.2.4.1", "1.2.4"))
        (tmp_path / "store").mkdir()
        pending = PendingRefusals(tmp_path / "store")
        ahead = time.time() + 60
        pending.add("1.2.3", "1.2.3", "1.2.3.2", "SCANNER1", now=ahead)
        pending.add("1.2.4", "1.2.4", "1.2.4.2", "SCANNER1", now=ahead)
        db.add_instance(row("1.2.3.2", "1.2.3"))  # re-sent and stored by another host
        assert pending.flush(db, config) == ["1.2.4"]
        assert db.study("1.2.3")["reason"] is None and not waiting_for_resend(db.study("1.2.3"))
        assert db.study("1.2.4")["reason"].startswith("incomplete: 1 instance(s) refused")
    finally:
        db.close()


def test_a_duplicate_ends_the_hold_of_refused_instances_for_database_completion(tmp_path):
    """A study held by a refusal whose sender sends again what the node holds (a whole-study retry): the sender is
    sending again, so the study completes on the quiet timer; a refusal made again holds it again."""
    db = StateDB(tmp_path / "state.sqlite3")
    config = Config.model_validate({"studies": {"quiet_seconds": 5, "max_wait_seconds": 1000}})
    try:
        db.add_instance(row("1.2.3.1", "1.2.3"))
        assert record_refusal(db, "1.2.3", config.studies) == 1
        completion = DatabaseCompletion(db, config, 30)
        completion._started = 0.0
        assert completion.poll(now=time.time() + 10) == []  # held
        assert db.add_instance(row("1.2.3.1", "1.2.3")).stored is False  # the sender sends it again
        completion.instance_resent("1.2.3")
        study = db.study("1.2.3")
        assert study["reason"] is None and not waiting_for_resend(study)
        assert record_refusal(db, "1.2.3", config.studies) == 1  # refused again: counted from one
        completion.instance_resent("1.2.3")
        assert completion.poll(now=time.time() + 10) == ["1.2.3"]
    finally:
        db.close()


def test_a_duplicate_ends_the_hold_of_refused_instances_for_the_completion_tracker(tmp_path, monkeypatch):
    db = StateDB(tmp_path / "state.sqlite3")
    config = Config.model_validate({"studies": {"quiet_seconds": 5, "max_wait_seconds": 1000}}).studies
    scheduler = FakeScheduler()
    completed = []
    tracker = CompletionTracker(db, config, lambda key, generation: completed.append(key), scheduler)
    try:
        db.add_instance(row("1.2.3.1", "1.2.3"))
        tracker.instance_stored("1.2.3", new_study=True)
        assert tracker.instance_refused("1.2.3") == 1
        later = time.time() + 10
        monkeypatch.setattr(dicomnode.studies.time, "time", lambda: later)
        scheduler.fire("quiet:1.2.3")
        assert completed == [] and waiting_for_resend(db.study("1.2.3"))  # held: re-armed by the sender only
        tracker.instance_resent("1.2.3")  # a duplicate of the study
        assert scheduler.jobs["quiet:1.2.3"][1] == pytest.approx(later + 5)
        monkeypatch.setattr(dicomnode.studies.time, "time", lambda: later + 5)
        scheduler.fire("quiet:1.2.3")
        assert completed == ["1.2.3"]
    finally:
        db.close()


def test_a_refusal_recorded_by_another_process_sharing_the_spool_is_counted_once(tmp_path):
    db = StateDB(tmp_path / "state.sqlite3")
    config = Config.model_validate({}).studies
    try:
        db.add_instance(row("1.2.3.1", "1.2.3"))
        (tmp_path / "store").mkdir()
        receiver = PendingRefusals(tmp_path / "store")  # refused the instance
        holder = PendingRefusals(tmp_path / "store")  # holds the `complete` lease: flushes first
        receiver.add("1.2.3", "1.2.3", "1.2.3.2", "SCANNER1", now=time.time() + 1)
        assert holder.flush(db, config) == ["1.2.3"]
        assert receiver.pending() == {}
        assert receiver.flush(db, config) == []
        assert db.study("1.2.3")["reason"].startswith("incomplete: 1 instance(s) refused")
    finally:
        db.close()


def test_a_refusal_kept_in_memory_only_stays_pending_until_written(tmp_path, monkeypatch):
    """Its file could not be written (the spool read-only too): no file gone means no other process recorded it."""
    db = StateDB(tmp_path / "state.sqlite3")
    config = Config.model_validate({}).studies
    try:
        db.add_instance(row("1.2.3.1", "1.2.3"))
        (tmp_path / "store" / PENDING_REFUSALS_DIR).mkdir(parents=True)
        receiver = PendingRefusals(tmp_path / "store")

        def read_only(*args, **kwargs):
            raise OSError(30, "Read-only file system")

        monkeypatch.setattr(dicomnode.studies, "write_durably", read_only)
        receiver.add("1.2.3", "1.2.3", "1.2.3.2", "SCANNER1", now=time.time() + 1)
        assert PendingRefusals(tmp_path / "store").flush(db, config) == []  # another process: nothing on disk
        assert len(receiver.pending()) == 1
        assert receiver.flush(db, config) == ["1.2.3"]
        assert receiver.pending() == {}
    finally:
        db.close()


def receiving(last_refusal: str) -> dict:
    return {"receiving": {"refusing": True, "free_mb": 39.3, "min_free_space_mb": 5, "last_refused_at": time.time(),
                          "last_refused_s_ago": 3.0, "last_refusal": last_refusal},
            "refused_recently": []}


def test_status_gives_the_remedy_of_the_refusal_s_cause(capsys):
    _print_receiving(receiving("cannot write spool: Read-only file system"))
    out = capsys.readouterr().out
    assert "make node.storage_dir writable again" in out and "free space" not in out
    _print_receiving(receiving("state database unreachable: connection refused"))
    out = capsys.readouterr().out
    assert "bring the state database back" in out and "free space" not in out
    _print_receiving(receiving("free space 3.0 MB minus the instance (1.0 MB) would be under the floor of 5 MB"))
    assert "free space on node.storage_dir (or lower node.min_free_space_mb)" in capsys.readouterr().out


def test_a_postgresql_outage_refusal_holds_the_study_of_a_scale_out_process(tmp_path, postgres, caplog):
    """The tester's db_outage_partial.sh: part of a study stored, PostgreSQL stopped, the rest refused, PostgreSQL
    back: the study is held as incomplete, not completed on the quiet timer; complete once the rest is sent."""
    url = postgres.create_database()
    StateDB(url, upgrade=True).close()
    config = Config.model_validate({
        "node": {"port": 0, "host": "127.0.0.1", "storage_dir": str(tmp_path / "store"), "allowed_calling_aes": ["*"],
                 "min_free_space_mb": 0},
        "studies": {"quiet_seconds": 1},
        "state": {"url": url, "heartbeat_seconds": 0.2, "lease_seconds": 2, "poll_seconds": 0.1}})
    node = Node(config, analyser=NoAnalysis())
    runner = RoleRunner(node, ("receive", "complete"))
    runner.start(warm_up=False)
    try:
        first = synthetic_mr()
        key = str(first.StudyInstanceUID)
        assert store_one(node.scp.port, first).Status == 0
        with caplog.at_level(logging.INFO):
            postgres.halt()
            second = synthetic_mr(study_uid=key, series_uid=str(first.SeriesInstanceUID), instance=2)
            status = store_one(node.scp.port, second)
            assert status.Status == 0xA700 and status.ErrorComment == STATE_UNREACHABLE_COMMENT
            postgres.resume()
            assert wait_for(lambda: [r for r in caplog.records if "reachable again" in r.getMessage()], 60)
            time.sleep(3.5)  # three quiet periods after the outage
        study = node.db.study(key)
        assert study["state"] == RECEIVED and "(0xA700: the state database unreachable)" in study["reason"]
        assert store_one(node.scp.port, second).Status == 0
        assert wait_for(lambda: node.db.study(key)["state"] != RECEIVED, 20)
    finally:
        runner.stop()


def test_two_processes_flushing_at_once_count_a_refusal_once(tmp_path):
    """Two processes sharing the spool flush the same refusal file at the same moment (the reviewer of stop 57):
    the one that renames it to its claim first records it; the other skips it, so the study's count stays 1."""
    db = StateDB(tmp_path / "state.sqlite3")
    config = Config.model_validate({}).studies
    try:
        db.add_instance(row("1.2.3.1", "1.2.3"))
        (tmp_path / "store").mkdir()
        PendingRefusals(tmp_path / "store").add("1.2.3", "1.2.3", "1.2.3.2", "SCANNER1", now=time.time() + 1)
        first, second = PendingRefusals(tmp_path / "store"), PendingRefusals(tmp_path / "store")
        seen_by_first = first.pending()
        assert len(seen_by_first) == 1 and len(second.pending()) == 1  # both read it before either records
        claimed = first._claim(seen_by_first)
        assert list(claimed) == list(seen_by_first)
        assert [p.name for p in (tmp_path / "store" / PENDING_REFUSALS_DIR).iterdir()] == \
            [dicomnode.studies.CLAIMED_PREFIX + next(iter(claimed))]
        assert second.flush(db, config) == []  # claimed by the first: not this process's to count
        assert first._record(db, config, claimed) == ["1.2.3"]
        assert db.study("1.2.3")["reason"].startswith("incomplete: 1 instance(s) refused")
        assert pending_files(tmp_path / "store") == []
        assert first.flush(db, config) == [] and second.flush(db, config) == []
        assert db.study("1.2.3")["reason"].startswith("incomplete: 1 instance(s) refused")
    finally:
        db.close()


def test_a_failed_flush_gives_its_claims_back_and_a_stale_claim_is_pending_again(tmp_path, monkeypatch):
    db = StateDB(tmp_path / "state.sqlite3")
    config = Config.model_validate({}).studies
    folder = tmp_path / "store" / PENDING_REFUSALS_DIR
    try:
        db.add_instance(row("1.2.3.1", "1.2.3"))
        (tmp_path / "store").mkdir()
        pending = PendingRefusals(tmp_path / "store")
        pending.add("1.2.3", "1.2.3", "1.2.3.2", "SCANNER1", now=time.time() + 1)
        (name,) = [p.name for p in folder.iterdir()]
        switch = Switch(monkeypatch, db, "study")
        with pytest.raises(Exception, match="connection refused"):
            pending.flush(db, config)
        assert [p.name for p in folder.iterdir()] == [name]  # the claim given back: any process may record it
        switch.down = False

        stopped = PendingRefusals(tmp_path / "store")  # a process that claimed it and stopped before recording
        stopped._claim(stopped.pending())
        other = PendingRefusals(tmp_path / "store")
        assert other.pending() == {}  # a fresh claim is another process's
        claim = folder / (dicomnode.studies.CLAIMED_PREFIX + name)
        old = time.time() - dicomnode.studies.CLAIM_STALE_SECONDS - 5
        os.utime(claim, (old, old))
        assert list(other.pending()) == [name]  # stale: pending again
        assert other.flush(db, config) == ["1.2.3"]
        assert list(folder.iterdir()) == []
    finally:
        db.close()
