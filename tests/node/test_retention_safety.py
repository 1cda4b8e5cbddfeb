"""Retention never loses what exists nowhere else, and superseded results are never sent (break32_safety F1, F2,
F4, F6, F8), on both state backends: pending results of a failed re-analysis, failed studies, superseded dead
letters, a purge interrupted by a crash, a study re-sent after its purge."""
from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from dicomnode import retention
from dicomnode.config import Config, RetentionConfig
from dicomnode.node import Node, status_report
from dicomnode.retention import (Retention, emergency_purge, finish_interrupted_purges, purge_expired, purge_failed,
                                 purge_study)
from dicomnode.state import (
    COMPLETE, DONE, FAILED, OUTBOX_DEAD, OUTBOX_PENDING, OUTBOX_SENT, OUTBOX_SUPERSEDED, PURGING, RECEIVED, SENDING,
    SCHEMA_VERSION, InstanceRow, StateDB, StudyPurging, upgrade_schema,
)
from tests.state_backends import pg_server, state_location  # noqa: F401 (fixtures)

DAY = 86400.0
MR = "1.2.840.10008.5.1.4.1.1.4"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"
SR = "1.2.840.10008.5.1.4.1.1.88.34"
KEY = "1.2.3"


class Store:
    """A state database and a storage folder holding one study's files, written as the node writes them."""

    def __init__(self, root: Path, db: StateDB):
        self.root = root
        self.db = db
        self.analyses = 0

    def instance(self, number: int, key: str = KEY) -> str:
        """Store and index one MR instance; returns its SOP Instance UID."""
        sop = f"{key}.{number}"
        relative = f"spool/{key}/series/{sop}.dcm"
        (self.root / relative).parent.mkdir(parents=True, exist_ok=True)
        (self.root / relative).write_bytes(b"instance")
        os.utime(self.root / relative, (time.time() - 3600, time.time() - 3600))  # received an hour ago
        self.db.add_instance(InstanceRow(sop, key, key, key + ".9", MR, "1.2.840.10008.1.2.1", "MR", relative, 8,
                                         "SCANNER1", time.time()))
        return sop

    def analyse(self, key: str = KEY, classes=(SEG, SR)) -> list[int]:
        """Complete and analyse the study's current generation: one result per class, each queued for the PACS;
        returns the outbox ids."""
        study = self.db.study(key)
        assert self.db.set_study_state(key, COMPLETE, expect=(RECEIVED,))
        analysis_id = self.db.start_analysis(key, study["generation"])
        self.analyses += 1
        results, outbox = [], []
        for index, sop_class in enumerate(classes):
            sop = f"2.25.{self.analyses}{index}{abs(hash(key)) % 1000}"
            relative = f"results/{key}/{analysis_id}/{sop}.dcm"
            (self.root / relative).parent.mkdir(parents=True, exist_ok=True)
            (self.root / relative).write_bytes(b"result")
            results.append((sop, f"2.25.9{self.analyses}{index}", sop_class, relative))
            outbox.append({"destination": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 104,
                           "sop_instance_uid": sop, "path": relative})
        assert self.db.finish_analysis(analysis_id, key, study["generation"], {"outputs": []}, results, outbox)
        return [row["id"] for row in self.db.outbox_for(key) if row["analysis_id"] == analysis_id]

    def fail(self, key: str = KEY, reason: str = "analysis failed: boom") -> None:
        study = self.db.study(key)
        if study["state"] == RECEIVED:
            assert self.db.set_study_state(key, COMPLETE, expect=(RECEIVED,))
        analysis_id = self.db.start_analysis(key, study["generation"])
        self.db.fail_analysis(analysis_id, key, study["generation"], reason)

    def dead(self, ids: list[int]) -> None:
        for outbox_id in ids:
            self.db.mark_failed_send(outbox_id, "peer refused", time.time(), dead=True)

    def age(self, key: str = KEY, days: float = 90) -> None:
        """Make the study's last change `days` old, in its current state."""
        with self.db._write() as connection:
            connection.execute(text("UPDATE studies SET updated_at=:t WHERE study_key=:k"),
                               {"t": time.time() - days * DAY, "k": key})

    def files(self, key: str = KEY) -> list[Path]:
        return [self.root / p for p in self.db.study_files(key)]


@pytest.fixture
def store(tmp_path, state_location):
    root = tmp_path / "store"
    root.mkdir()
    db = StateDB(state_location, upgrade=True)
    yield Store(root, db)
    db.close()


def everything_purgeable(store: Store) -> None:
    """Every way retention purges, with a disk that is always short of space."""
    Retention(store.db, store.root, RetentionConfig(days=30, emergency_free_space_mb=10**9), lambda: 1.0).run_once()
    purge_expired(store.db, store.root, days=30, now=time.time() + 365 * DAY)
    emergency_purge(store.db, store.root, 10**9, lambda: 1.0)


# --- F1: nothing undelivered is purged, whatever the study's state ----------------------------------------------


def test_pending_results_of_a_failed_reanalysis_are_never_purged(store):
    store.instance(1)
    store.analyse()  # the PACS is down: both results pending
    store.instance(2)  # a late image re-opens the study
    store.fail()  # ... and its re-analysis fails
    study = store.db.study(KEY)
    assert study["state"] == FAILED
    assert "2 result object(s) not yet delivered are kept" in study["reason"]
    files = store.files()
    store.age()
    everything_purgeable(store)
    assert store.db.study(KEY) is not None and all(path.is_file() for path in files)
    assert [row["state"] for row in store.db.outbox_for(KEY)] == [OUTBOX_PENDING] * 2
    assert purge_failed(store.db, store.root, days=1).studies == []  # not even on request: undelivered
    # the earlier results still go out; the study stays failed (its current analysis did), retry re-runs it
    store.db.mark_sent([row["id"] for row in store.db.outbox_for(KEY)])
    assert store.db.study(KEY)["state"] == FAILED
    assert store.db.retry_dead(KEY) == 0 and store.db.reanalyse(KEY)


def test_a_done_study_with_a_pending_item_is_not_purged(store):
    store.instance(1)
    store.analyse()
    store.db.set_study_state(KEY, DONE)  # whatever moved it there: a pending item still keeps it
    store.age()
    everything_purgeable(store)
    assert purge_study(store.db, store.root, KEY) is False
    assert store.db.study(KEY)["state"] == DONE and all(path.is_file() for path in store.files())


# --- F2: failed studies are kept for retry ------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["analysis", "max_wait"])
def test_failed_studies_are_kept_for_retry_and_named(store, caplog, how):
    store.instance(1)
    if how == "analysis":
        store.fail()
    else:
        store.db.set_study_state(KEY, FAILED, "not complete after max_wait_seconds=8.0", expect=(RECEIVED,))
    store.age()
    files = store.files()
    with caplog.at_level("WARNING", logger="dicomnode.retention"):
        everything_purgeable(store)
    assert store.db.study(KEY)["state"] == FAILED and all(path.is_file() for path in files)
    assert "kept 1 failed study for retry" in caplog.text
    assert "1 failed (kept for retry)" in caplog.text  # the emergency purge says so too
    # retry re-runs it on the kept instances
    assert store.db.reanalyse(KEY) and store.db.study(KEY)["state"] == COMPLETE
    store.db.set_study_state(KEY, FAILED, "again")
    store.age()
    # an explicit request purges it
    assert purge_failed(store.db, store.root, days=30).studies == [KEY]
    assert store.db.study(KEY) is None and not any(path.exists() for path in files)


def test_done_studies_still_age_out_and_leave_a_tombstone(store):
    store.instance(1)
    store.db.mark_sent(store.analyse())
    assert store.db.study(KEY)["state"] == DONE
    files = store.files()
    store.age()
    report = purge_expired(store.db, store.root, days=30)
    assert report.studies == [KEY] and report.files == 3
    assert store.db.row_count(KEY) == 0 and not any(path.exists() for path in files)
    assert [row["sop_class_uid"] for row in store.db.purged_reports(KEY)] == sorted([SEG, SR])


def test_a_purged_study_keeps_when_it_was_last_received_for_a_day(store):
    """break48c #2: status tells a refused study that was sent again and then purged from one never sent again by
    the purged study's last receipt, kept in the state (meta) for RESENDS_KEPT_SECONDS after the purge."""
    from dicomnode.state import RESENDS_KEPT_SECONDS

    store.instance(1)
    store.db.mark_sent(store.analyse())
    last_received = store.db.study(KEY)["last_received"]
    store.age()
    assert purge_expired(store.db, store.root, days=30).studies == [KEY]
    assert store.db.purged_last_received() == {KEY: last_received}
    assert store.db.purged_last_received(now=time.time() + RESENDS_KEPT_SECONDS + 60) == {}
    with store.db._write() as connection:  # the next purge removes the entries older than that (purged at 1.0)
        connection.execute(text("UPDATE meta SET key='purged_received:000000000001:' || substr(key, 30), value=:v"
                                " WHERE key LIKE 'purged_received:%'"),
                           {"v": '{"study_key": "1.2.3", "study_instance_uids": ["1.2.3"], "last_received": 1.0,'
                                 ' "purged_at": 1.0}'})
    other = "1.2.4"
    store.instance(1, key=other)
    store.db.mark_sent(store.analyse(other))
    store.age(other)
    assert purge_expired(store.db, store.root, days=30).studies == [other]
    assert list(store.db.purged_last_received()) == [other]
    with store.db._write() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM meta WHERE key LIKE 'purged_received:%'")).scalar() == 1


def test_a_sweep_purging_many_studies_reads_no_earlier_purge_inside_its_writes(store, monkeypatch):
    """review48 #6: each purge pruned the expired `purged_received` entries by reading and parsing every one of them
    inside its write transaction, a square of the studies a sweep purges (10k: 50M parses under SQLite's write
    lock); the keys carry the purge time now, and the expired ones go by a range of the primary key."""
    from dicomnode import state as state_module

    keys = [f"1.2.5.{n}" for n in range(12)]
    for key in keys:
        store.instance(1, key=key)
        store.db.mark_sent(store.analyse(key))
        store.age(key)
    parsed = []
    real = state_module._purged_received
    monkeypatch.setattr(state_module, "_purged_received", lambda *args: parsed.append(args) or real(*args))
    assert sorted(purge_expired(store.db, store.root, days=30).studies) == sorted(keys)
    assert parsed == []
    assert sorted(store.db.purged_last_received()) == sorted(keys)  # every one kept, read when asked


# --- F4: a superseded analysis's undelivered items are retired --------------------------------------------------


def test_superseded_dead_letters_are_retired_never_retried_and_do_not_fail_the_study(store):
    store.instance(1)
    first = store.analyse()
    store.dead(first)
    assert store.db.study(KEY)["state"] == FAILED
    store.instance(2)  # late image: generation 1 supersedes generation 0
    second = store.analyse()
    states = {row["id"]: row["state"] for row in store.db.outbox_for(KEY)}
    assert [states[i] for i in first] == [OUTBOX_SUPERSEDED] * 2
    assert [states[i] for i in second] == [OUTBOX_PENDING] * 2
    assert {row["id"] for row in store.db.claim_sends()} == set(second)
    store.db.mark_sent(second)
    assert store.db.study(KEY)["state"] == DONE
    assert store.db.retry_dead(KEY) == 0 and store.db.reanalyse(KEY) is False
    assert store.db.claim_sends() == []
    report = next(s for s in status_report(store.db)["studies"] if s["study_key"] == KEY)
    assert (report["state"], report["sent"], report["pending"], report["dead"]) == (DONE, 2, 0, [])


def test_a_pending_item_superseded_while_being_sent_is_not_retried(store):
    store.instance(1)
    first = store.analyse()
    claimed = store.db.claim_sends()  # the dispatcher holds them, sending ...
    store.instance(2)
    store.analyse()  # ... when a newer analysis finishes
    store.db.mark_failed_send(claimed[0]["id"], "timeout", time.time(), dead=False)
    store.db.mark_failed_send(claimed[1]["id"], "timeout", time.time(), dead=True)
    assert [row["state"] for row in store.db.outbox_for(KEY) if row["id"] in first] == [OUTBOX_SUPERSEDED] * 2
    assert all(row["analysis_id"] != claimed[0]["analysis_id"] for row in store.db.claim_sends())


def test_retry_of_a_failed_reanalysis_reruns_it_instead_of_sending_superseded_results(store):
    store.instance(1)
    store.dead(store.analyse())
    store.instance(2)
    store.fail()  # generation 1 failed; generation 0's dead letters are its latest results
    assert store.db.retry_dead(KEY) == 0
    assert store.db.reanalyse(KEY)
    study = store.db.study(KEY)
    analysis_id = store.db.start_analysis(KEY, study["generation"])
    assert store.db.finish_analysis(analysis_id, KEY, study["generation"], {}, [], [])
    assert {row["state"] for row in store.db.outbox_for(KEY)} == {OUTBOX_SUPERSEDED}
    assert store.db.study(KEY)["state"] == DONE


def test_upgrade_to_v3_retires_superseded_dead_letters_and_settles_the_study(store):
    store.instance(1)
    first = store.analyse()
    store.instance(2)
    second = store.analyse()
    store.db.mark_sent(second)
    with store.db._write() as connection:  # what version 2 left: generation 0's dead letters failed the study
        connection.execute(text("UPDATE outbox SET state='dead' WHERE id IN (:a, :b)"), {"a": first[0], "b": first[1]})
        connection.execute(text("UPDATE studies SET state='failed', reason='2 result object(s) could not be "
                                "delivered (dead letter)'"))
        connection.execute(text("DROP TABLE purged_reports"))
        connection.execute(text("UPDATE meta SET value='2' WHERE key='schema_version'"))
    assert upgrade_schema(store.db.engine) == (2, SCHEMA_VERSION)
    assert {row["id"]: row["state"] for row in store.db.outbox_for(KEY)} == {
        first[0]: OUTBOX_SUPERSEDED, first[1]: OUTBOX_SUPERSEDED, second[0]: OUTBOX_SENT, second[1]: OUTBOX_SENT}
    assert store.db.study(KEY)["state"] == DONE and store.db.purged_reports(KEY) == []


def test_upgrade_to_v6_keeps_the_tombstones_with_their_study_and_destinations_unknown(store):
    """review46 #2/#3: schema 6 records each tombstone's Study Instance UID and the destinations that received it;
    a schema 5 tombstone keeps NULL for both (unknown)."""
    store.instance(1)
    store.db.mark_sent(store.analyse())
    store.age()
    assert purge_expired(store.db, store.root, days=30).studies == [KEY]
    assert {(row["study_instance_uid"], row["destinations"]) for row in store.db.purged_reports(KEY)} == {
        (KEY, '["pacs"]')}
    with store.db._write() as connection:  # what version 5 had
        connection.execute(text("ALTER TABLE purged_reports DROP COLUMN study_instance_uid"))
        connection.execute(text("ALTER TABLE purged_reports DROP COLUMN destinations"))
        connection.execute(text("UPDATE meta SET value='5' WHERE key='schema_version'"))
    assert upgrade_schema(store.db.engine) == (5, SCHEMA_VERSION)
    rows = store.db.purged_reports(KEY)
    assert len(rows) == 2 and {(row["study_instance_uid"], row["destinations"]) for row in rows} == {(None, None)}


# --- F6: an interrupted purge -----------------------------------------------------------------------------------


class Crash(BaseException):
    """kill -9 in the middle of the purge's file loop (nothing after it runs)."""


def crash_after(monkeypatch, unlinks: int) -> None:
    original = Path.unlink
    count = [0]

    def unlink(self, *args, **kwargs):
        original(self, *args, **kwargs)
        count[0] += 1
        if count[0] == unlinks:
            raise Crash()
    monkeypatch.setattr(Path, "unlink", unlink)


def test_a_purge_interrupted_by_a_crash_says_purging_refuses_instances_and_is_finished(store, monkeypatch):
    for number in range(4):
        store.instance(number)
    store.db.mark_sent(store.analyse())
    store.age()
    files = store.files()
    crash_after(monkeypatch, 3)
    with pytest.raises(Crash):
        purge_study(store.db, store.root, KEY)
    monkeypatch.undo()
    assert sum(path.exists() for path in files) == 3
    study = store.db.study(KEY)
    assert study["state"] == PURGING  # not `done`: status tells, and nothing re-analyses the survivors
    assert next(s for s in status_report(store.db)["studies"] if s["study_key"] == KEY)["state"] == PURGING
    # a late image is refused for the moment (the sender sends it again), nothing is recorded
    with pytest.raises(StudyPurging):
        store.instance(9)
    assert store.db.study(KEY)["generation"] == 0 and len(store.db.study_instances(KEY)) == 4
    # a re-send of a surviving instance is not "already stored"
    assert store.db.has_instance(f"{KEY}.3") is False
    with pytest.raises(StudyPurging):
        store.instance(3)
    assert store.db.claim_next_study() is None
    # the next retention run (every start runs one) finishes it
    report = Retention(store.db, store.root, RetentionConfig(days=30, emergency_free_space_mb=0), lambda: 1e9).run_once()
    assert report.studies == [KEY]
    assert store.db.row_count(KEY) == 0 and not any(path.exists() for path in files)
    assert len(store.db.purged_reports(KEY)) == 2
    # then the instance starts a new study
    store.instance(9)
    assert store.db.study(KEY)["state"] == RECEIVED and len(store.db.study_instances(KEY)) == 1


def test_a_file_sent_again_while_its_study_is_purged_is_not_deleted(store, monkeypatch):
    sop = store.instance(1)
    store.instance(2)
    store.db.mark_sent(store.analyse())
    store.age()
    assert store.db.begin_purge(KEY, (DONE,)) is not None  # step 1, then a crash
    began = store.db.study(KEY)["updated_at"]
    old = [path for path in store.files() if path.name != f"{sop}.dcm"]
    resent = store.root / f"spool/{KEY}/series/{sop}.dcm"
    for path in old:  # written long before the purge began
        os.utime(path, (began - DAY, began - DAY))
    resent.write_bytes(b"sent again")  # the spool rewrote it after the purge began
    os.utime(resent, (began + 1, began + 1))
    finish_interrupted_purges(store.db, store.root)
    assert resent.read_bytes() == b"sent again" and not any(path.exists() for path in old)
    # its rows stay while a file is kept: retention never leaves a file on disk that no row names (opsbreak #2)
    assert store.db.study(KEY)["state"] == PURGING
    assert str(resent.relative_to(store.root)) in store.db.study_files(KEY)
    # a receiver indexes or removes its file within seconds: one older than that is a leftover, and goes with the rows
    monkeypatch.setattr(retention, "_clock", lambda: time.time() + retention.RESEND_GRACE_SECONDS + 10)
    finish_interrupted_purges(store.db, store.root)
    assert not resent.exists() and store.db.study(KEY) is None


def test_concurrent_purges_of_one_study_finish_it_once(store):
    store.instance(1)
    store.db.mark_sent(store.analyse())
    assert store.db.begin_purge(KEY, (DONE,)) is not None
    assert store.db.begin_purge(KEY, (DONE,)) is None  # purging is not purgeable again
    assert store.db.finish_purge(KEY) is not None
    assert store.db.finish_purge(KEY) is None


# --- F8: a study re-sent after its purge supersedes the purged results --------------------------------------------


def test_the_analysis_of_a_study_resent_after_its_purge_supersedes_the_purged_report(store):
    store.instance(1)
    store.db.mark_sent(store.analyse())
    purged_sr = next(row["sop_instance_uid"] for row in store.db.earlier_reports(KEY, SR))
    store.age()
    assert purge_expired(store.db, store.root, days=30).studies == [KEY]
    assert store.db.study(KEY) is None
    store.instance(1)  # the PACS sends the study again
    assert store.db.study(KEY)["generation"] == 0
    assert [row["sop_instance_uid"] for row in store.db.earlier_reports(KEY, SR)] == [purged_sr]
    store.db.mark_sent(store.analyse())
    later_sr = [row["sop_instance_uid"] for row in store.db.earlier_reports(KEY, SR)]
    assert later_sr[0] == purged_sr and len(later_sr) == 2


def test_node_names_the_purged_report_as_superseded(tmp_path):
    config = Config.model_validate({"node": {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 0},
                                    "studies": {"quiet_seconds": 3600}})
    node = Node(config, analyser=object())
    try:
        store = Store(node.storage_dir, node.db)
        store.instance(1)
        store.db.mark_sent(store.analyse())
        purged_sr = next(row for row in store.db.earlier_reports(KEY, SR))
        store.age()
        assert purge_expired(node.db, node.storage_dir, days=30).studies == [KEY]
        store.instance(1)
        assert node._superseded(KEY, KEY) == [{
            "sop_instance_uid": purged_sr["sop_instance_uid"], "series_instance_uid": purged_sr["series_instance_uid"],
            "study_instance_uid": KEY, "sop_class_uid": SR,
            # break45a F5: what the new report says of the one it replaces: why the study is analysed again
            "reason": "the study was received again after its results were purged",
            # break47b #4: the destinations that received it, as its tombstone records them
            "delivered_to": ["pacs"]}]
    finally:
        node.db.close()


def test_a_v2_sqlite_file_gets_the_tombstone_table(tmp_path):
    path = tmp_path / "state.sqlite3"
    StateDB(path, upgrade=True).close()
    with sqlite3.connect(path) as connection:
        connection.execute("DROP TABLE purged_reports")
        connection.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
    db = StateDB(path)  # SQLite upgrades on open
    try:
        assert db.purged_reports(KEY) == []
    finally:
        db.close()


def test_sending_studies_are_not_touched(store):
    store.instance(1)
    store.analyse()
    assert store.db.study(KEY)["state"] == SENDING
    store.age()
    everything_purgeable(store)
    assert store.db.study(KEY)["state"] == SENDING and all(path.is_file() for path in store.files())
    assert OUTBOX_DEAD not in {row["state"] for row in store.db.outbox_for(KEY)}


# --- review 43 #3: the conflicts/ folder (instances refused 0x0111, Spool.quarantine) is bounded ------------------


def _conflict_copy(store: Store, name: str, days_old: float) -> Path:
    path = store.root / "conflicts" / "abcd" / f"{name}.0123.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"refused instance")
    os.utime(path, (time.time() - days_old * DAY, time.time() - days_old * DAY))
    return path


def test_conflict_copies_age_out_with_retention_days_and_are_counted(store, caplog):
    old, recent = _conflict_copy(store, "1.1", 40), _conflict_copy(store, "1.2", 2)
    with caplog.at_level("WARNING"):
        report = purge_expired(store.db, store.root, days=30)
    assert not old.exists() and recent.exists()
    assert report.conflicts == 1 and report.files == 1 and report.bytes == len(b"refused instance")
    assert "deleted 1 conflict cop(ies)" in caplog.text and "older than retention.days" in caplog.text
    report = Retention(store.db, store.root, RetentionConfig(days=30, emergency_free_space_mb=0),
                       lambda: 10**6, clock=lambda: time.time() + 30 * DAY).run_once()
    assert not recent.exists() and report.conflicts == 1 and not (store.root / "conflicts" / "abcd").exists()


def test_the_emergency_purge_takes_conflict_copies_oldest_first_before_any_study(store):
    store.instance(1)
    store.db.mark_sent(store.analyse())
    copies = [_conflict_copy(store, f"1.{n}", days) for n, days in enumerate((3, 1, 2))]

    def free_mb() -> float:  # each conflict copy left takes 10 MB of a 100 MB disk
        return 100.0 - 10 * sum(path.exists() for path in copies)

    report = emergency_purge(store.db, store.root, 85, free_mb)
    assert [path.exists() for path in copies] == [False, True, False]  # the 3- and 2-day-old ones went
    assert report.conflicts == 2 and report.studies == [] and store.db.study(KEY)["state"] == DONE


def _result_header(path: Path, sop_class: str, series_number: int) -> None:
    """A result file's header as the node wrote it (what a re-analysis reads of the report it replaces)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID, dataset.file_meta.MediaStorageSOPInstanceUID = sop_class, "2.25.1"
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SOPClassUID, dataset.StudyInstanceUID, dataset.SeriesNumber = sop_class, KEY, series_number
    dataset.ContentDate, dataset.ContentTime = "20261207", "041101.25"
    dataset.save_as(path, enforce_file_format=True)


def test_a_reanalysis_says_which_report_it_replaces_when_and_why(tmp_path):
    """break45a F5: the rerun PDF and SR said nothing of the report they replace. The node hands the results the
    earlier SR's and PDF's series numbers and time and why the study is analysed again (late instances, a request)."""
    from dicomnode.results.provenance import supersede_text

    pdf = "1.2.840.10008.5.1.4.1.1.104.1"
    config = Config.model_validate({"node": {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 0},
                                    "studies": {"quiet_seconds": 3600}})
    node = Node(config, analyser=object())
    try:
        store = Store(node.storage_dir, node.db)
        store.instance(1)
        store.db.mark_sent(store.analyse(classes=(SR, pdf)))
        for sop_class, number in ((SR, 9100), (pdf, 9200)):
            [row] = store.db.earlier_reports(KEY, sop_class)
            _result_header(node.storage_dir / row["path"], sop_class, number)
        store.instance(2)
        store.instance(3)  # two late instances
        [entry] = node._superseded(KEY, KEY)
        assert (entry["series_number"], entry["pdf_series_number"], entry["report_time"]) == (9100, 9200,
                                                                                             "2026-12-07 04:11:01")
        assert entry["reason"] == "2 instance(s) received after that report"
        assert supersede_text([entry]) == (
            "Supersedes the report of 2026-12-07 04:11:01 (PDF series 9200, SR series 9100); analysed again: 2 "
            "instance(s) received after that report: its numbers are replaced by these")
        asked = node._superseded(KEY, KEY, requested=True)[-1]["reason"]
        assert asked == "re-analysis requested (dicomnode retry --reanalyse)"
    finally:
        node.db.close()


def _collated_database(pg_server, collation: str) -> str:
    """A new database on the session's PostgreSQL with `collation` (LC_COLLATE), as a production cluster's default
    (en_US.UTF-8) has it; skips where the machine lacks that locale."""
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(host=str(pg_server.root), user=pg_server.user, dbname="postgres",
                         autocommit=True) as connection:
        try:
            connection.execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8' "
                               f"LC_COLLATE '{collation}' LC_CTYPE '{collation}'")
        except psycopg.Error as error:
            pytest.skip(f"no {collation} locale for PostgreSQL here: {error}")
    return pg_server.url(name)


def test_purge_records_are_read_and_pruned_under_a_non_bytewise_collation(pg_server, tmp_path):
    """review48b #2: `key >= 'purged_received:' AND key < 'purged_received;'` is empty under en_US.UTF-8 (';' sorts
    before 'purged_received:0017...'), so a purged study's last receipt was never found on PostgreSQL; keys of the
    earlier form (no purge second) were never pruned."""
    from dicomnode.state import RESENDS_KEPT_SECONDS

    url = _collated_database(pg_server, "en_US.UTF-8")
    root = tmp_path / "store"
    root.mkdir()
    db = StateDB(url, upgrade=True)
    try:
        with db._write() as connection:  # the collation under test orders the old range bound apart from bytes
            assert connection.execute(text("SELECT 'purged_received;' < 'purged_received:001765432100:ab'")).scalar()
        store = Store(root, db)
        store.instance(1)
        store.db.mark_sent(store.analyse())
        last_received = store.db.study(KEY)["last_received"]
        store.age()
        old = time.time() - RESENDS_KEPT_SECONDS - 60
        with db._write() as connection:  # written before the purge second was in the key: one expired, one not
            for key, purged_at, uid in (("purged_received:" + "a" * 24, old, "9.9.1"),
                                        ("purged_received:" + "b" * 24, time.time(), "9.9.2"),
                                        ("purged_received:000000000001:" + "c" * 24, 1.0, "9.9.3")):
                connection.execute(text("INSERT INTO meta(key, value) VALUES (:k, :v)"),
                                   {"k": key, "v": f'{{"study_key": "{uid}", "study_instance_uids": ["{uid}"], '
                                                   f'"last_received": 5.0, "purged_at": {purged_at}}}'})
        assert purge_expired(store.db, store.root, days=30).studies == [KEY]
        assert store.db.purged_last_received() == {KEY: last_received, "9.9.2": 5.0}
        with db._write() as connection:
            keys = sorted(connection.execute(text("SELECT key FROM meta WHERE key LIKE 'purged_received:%'")).scalars())
        assert len(keys) == 2 and "purged_received:" + "b" * 24 in keys, keys  # the expired ones pruned
    finally:
        db.close()
