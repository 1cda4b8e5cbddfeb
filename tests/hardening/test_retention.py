"""Retention: age-based and emergency purges delete done studies' files then rows; unfinished and failed ones stay."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from dicomnode.config import Config, RetentionConfig
from dicomnode.node import Node
from dicomnode.retention import Retention, emergency_purge, purge_expired, purge_study
from dicomnode.spool import IncomingInstance, Spool, write_durably
from dicomnode.state import DONE, FAILED, RECEIVED, SENDING, StateDB
from tests.hardening.hardening_support import synthetic_mr
from tests.state_backends import pg_server, state_location  # noqa: F401 (fixtures)

DAY = 86400.0


def incoming(dataset) -> IncomingInstance:
    from io import BytesIO

    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return IncomingInstance(
        encoded=buffer.getvalue(), sop_instance_uid=dataset.SOPInstanceUID, sop_class_uid=dataset.SOPClassUID,
        study_instance_uid=dataset.StudyInstanceUID, series_instance_uid=dataset.SeriesInstanceUID,
        transfer_syntax=str(dataset.file_meta.TransferSyntaxUID), modality="MR", study_key=dataset.StudyInstanceUID,
        calling_ae="SCANNER1",
    )


def add_study(spool: Spool, state: str, finished_days_ago: float, instances: int = 2, with_results: bool = True,
              result_path: str | None = None) -> str:
    """A study with spool files, one analysis with a result file and an outbox row, in `state`; a done study's
    result was delivered (`result_path`: the path recorded for the result instead of the written one)."""
    study_uid = synthetic_mr().StudyInstanceUID
    for index in range(instances):
        spool.store(incoming(synthetic_mr(study_uid=study_uid, instance=index, size=16)))
    db = spool.db
    for relative in db.study_files(study_uid):  # received a while ago (a file written as a purge begins is kept)
        os.utime(spool.root / relative, (time.time() - 3600, time.time() - 3600))
    if with_results:
        analysis_id = db.start_analysis(study_uid, 0) if db.set_study_state(study_uid, "complete") else None
        result_uid = synthetic_mr().SOPInstanceUID
        relative = f"results/{study_uid[-8:]}/{analysis_id}/{result_uid}.dcm"
        write_durably(spool.root / relative, b"result bytes")
        relative = result_path or relative
        db.finish_analysis(analysis_id, study_uid, 0, {"outputs": [relative]},
                           [(result_uid, "1.2.3", "1.2.840.10008.5.1.4.1.1.88.34", relative)],
                           [{"destination": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 104,
                             "sop_instance_uid": result_uid, "path": relative}])
        if state == DONE:
            db.mark_sent([row["id"] for row in db.outbox_for(study_uid)])
    db.set_study_state(study_uid, state, updated_at=time.time() - finished_days_ago * DAY)
    return study_uid


def files_of(db: StateDB, study_key: str) -> list[str]:
    return db.study_files(study_key)


def rows_of(db: StateDB, study_key: str) -> int:
    return db.row_count(study_key)


@pytest.fixture
def make_spool(state_location):
    """Spools on the test's backend: the first on `state_location`, later ones (other folders) on SQLite files."""
    locations = [state_location]

    def make(tmp_path: Path) -> Spool:
        location = locations.pop() if locations else tmp_path / "store" / "state.sqlite3"
        (tmp_path / "store").mkdir(parents=True, exist_ok=True)
        return Spool(tmp_path / "store", StateDB(location, upgrade=True))
    return make


def test_purge_expired_removes_old_done_studies_only(tmp_path, make_spool):
    spool = make_spool(tmp_path)
    old_done = add_study(spool, DONE, finished_days_ago=40)
    old_failed = add_study(spool, FAILED, finished_days_ago=31)
    recent_done = add_study(spool, DONE, finished_days_ago=5)
    old_sending = add_study(spool, SENDING, finished_days_ago=90)
    old_received = add_study(spool, RECEIVED, finished_days_ago=90, with_results=False)
    kept_files = {key: files_of(spool.db, key) for key in (recent_done, old_sending, old_received, old_failed)}
    purged_files = files_of(spool.db, old_done)
    assert len(purged_files) == 3 and all((spool.root / p).is_file() for p in purged_files)

    report = purge_expired(spool.db, spool.root, days=30)

    assert report.studies == [old_done]  # a failed study is kept for `dicomnode retry`
    assert report.files == 3
    assert not any((spool.root / p).exists() for p in purged_files)
    assert rows_of(spool.db, old_done) == 0
    for key, paths in kept_files.items():
        assert rows_of(spool.db, key) > 0
        assert all((spool.root / p).is_file() for p in paths), key
    # empty study folders went with the files
    assert len(list((spool.root / "spool").iterdir())) == 4
    # nothing to do the second time
    assert purge_expired(spool.db, spool.root, days=30).studies == []


def test_purge_study_refuses_an_unfinished_study(tmp_path, make_spool):
    spool = make_spool(tmp_path)
    key = add_study(spool, SENDING, finished_days_ago=100)
    assert purge_study(spool.db, spool.root, key) is False
    assert all((spool.root / p).is_file() for p in files_of(spool.db, key))


def test_purge_never_deletes_outside_the_storage_folder(tmp_path, make_spool):
    spool = make_spool(tmp_path)
    key = add_study(spool, DONE, finished_days_ago=40, result_path="../precious.txt")
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    purge_study(spool.db, spool.root, key)
    assert outside.read_text() == "keep me"
    assert rows_of(spool.db, key) == 0


def test_emergency_purge_frees_space_oldest_first_and_keeps_unfinished(tmp_path, make_spool):
    spool = make_spool(tmp_path)
    oldest = add_study(spool, DONE, finished_days_ago=3)
    middle = add_study(spool, FAILED, finished_days_ago=2)
    newest = add_study(spool, DONE, finished_days_ago=1)
    unfinished = add_study(spool, RECEIVED, finished_days_ago=10, with_results=False)
    free = {"mb": 100.0}

    def free_space_mb():
        # each purged study frees 50 MB in this simulated disk
        remaining = spool.db.count_studies((DONE, FAILED))
        return free["mb"] + 50.0 * (3 - remaining)

    report = emergency_purge(spool.db, spool.root, 500, free_space_mb)
    # still short after every done study is gone: the unfinished and the failed one stay anyway
    assert report.studies == [oldest, newest]
    assert [r["study_key"] for r in spool.db.studies()] == [middle, unfinished]
    assert all((spool.root / p).is_file() for p in files_of(spool.db, unfinished) + files_of(spool.db, middle))
    free["mb"] = 100.0
    spool2 = make_spool(tmp_path / "second")
    first = add_study(spool2, DONE, finished_days_ago=3)
    second = add_study(spool2, DONE, finished_days_ago=2)
    third = add_study(spool2, DONE, finished_days_ago=1)
    purged = []

    def free_after_two():
        purged[:] = [k for k in (first, second, third) if spool2.db.study(k) is None]
        return 100.0 + 200.0 * len(purged)

    report = emergency_purge(spool2.db, spool2.root, 450, free_after_two)
    assert report.studies == [first, second]
    assert spool2.db.study(third) is not None
    assert emergency_purge(spool2.db, spool2.root, 450, free_after_two).studies == []  # enough space now


def test_node_runs_the_scheduled_purge(tmp_path):
    config = Config.model_validate({
        "node": {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 0},
        "studies": {"quiet_seconds": 3600},
        "retention": {"days": 1, "purge_interval_minutes": 0.02, "emergency_free_space_mb": 0},
    })

    class NoAnalysis:
        def warm_up(self, names):
            return {}

    node = Node(config, analyser=NoAnalysis())
    old = add_study(node.spool, DONE, finished_days_ago=2)
    fresh = add_study(node.spool, DONE, finished_days_ago=0.5)
    node.start(warm_up=False)
    try:
        deadline = time.monotonic() + 10
        while node.db.study(old) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert node.db.study(old) is None
        assert node.db.study(fresh) is not None
        # a monkeypatched clock three days on: the next scheduled run takes the fresh one too
        node.retention.clock = lambda: time.time() + 3 * DAY
        deadline = time.monotonic() + 10
        while node.db.study(fresh) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert node.db.study(fresh) is None
    finally:
        node.stop()


def test_retention_run_once_combines_both(tmp_path, make_spool):
    spool = make_spool(tmp_path)
    aged = add_study(spool, DONE, finished_days_ago=10)
    young = add_study(spool, DONE, finished_days_ago=1)
    low = {"free": 10.0}
    retention = Retention(spool.db, spool.root, RetentionConfig(days=7, emergency_free_space_mb=50),
                          free_space_mb=lambda: low["free"])
    report = retention.run_once()
    assert report.studies == [aged, young]  # aged by age, young because the disk was short


def test_start_removes_result_files_no_analysis_recorded(tmp_path):
    config = Config.model_validate({"node": {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 0},
                                    "studies": {"quiet_seconds": 3600}})

    class NoAnalysis:
        def warm_up(self, names):
            return {}

    node = Node(config, analyser=NoAnalysis())
    kept = add_study(node.spool, DONE, finished_days_ago=1)
    recorded = [spool_path for spool_path in files_of(node.db, kept) if spool_path.startswith("results/")]
    orphan = node.storage_dir / "results" / "abc" / "99" / "1.2.3.dcm"  # an analysis killed before it finished
    partial = node.storage_dir / "results" / "abc" / "98" / ".1.2.4.dcm.1234.tmp"  # killed mid-write
    for path in (orphan, partial):
        write_durably(path, b"never sent")
    node.start(warm_up=False)
    try:
        assert not orphan.exists() and not partial.exists() and not (node.storage_dir / "results" / "abc").exists()
        assert recorded and all((node.storage_dir / p).is_file() for p in recorded)
    finally:
        node.stop()


def _make_dead_letter(db: StateDB, study_key: str) -> None:
    (row,) = db.outbox_for(study_key)
    db.mark_failed_send(row["id"], "peer refused", time.time(), dead=True)
    assert db.study(study_key)["state"] == FAILED


def test_studies_with_undelivered_results_outlive_retention_and_the_emergency_purge(tmp_path, make_spool, caplog):
    """Dead letters are results that exist nowhere else: neither age nor a full disk purges them."""
    spool = make_spool(tmp_path)
    undelivered = add_study(spool, SENDING, finished_days_ago=0)
    _make_dead_letter(spool.db, undelivered)
    spool.db.set_study_state(undelivered, FAILED, updated_at=time.time() - 90 * DAY)
    analysis_failed = add_study(spool, FAILED, finished_days_ago=90, with_results=False)
    files = files_of(spool.db, undelivered)

    with caplog.at_level("WARNING", logger="dicomnode.retention"):
        report = purge_expired(spool.db, spool.root, days=30)
    assert report.studies == []  # the failed analysis is kept for retry too
    assert spool.db.study(analysis_failed)["state"] == FAILED and "kept 1 failed study for retry" in caplog.text
    assert all((spool.root / p).is_file() for p in files) and rows_of(spool.db, undelivered) > 0
    assert "never delivered" in caplog.text

    caplog.clear()
    with caplog.at_level("ERROR", logger="dicomnode.retention"):
        assert emergency_purge(spool.db, spool.root, 1000, lambda: 10.0).studies == []
    assert "1 with undelivered results and 1 failed (kept for retry) are kept" in caplog.text
    assert purge_study(spool.db, spool.root, undelivered) is False
    # once retried and delivered the study is an ordinary finished one again
    assert spool.db.retry_dead(undelivered) == 1
    (row,) = spool.db.outbox_for(undelivered)
    spool.db.mark_sent([row["id"]])
    assert spool.db.study(undelivered)["state"] == DONE
    spool.db.set_study_state(undelivered, DONE, updated_at=time.time() - 90 * DAY)
    assert purge_expired(spool.db, spool.root, days=30).studies == [undelivered]


def test_an_instance_refused_because_its_study_is_being_purged_leaves_no_file(tmp_path, make_spool):
    from dicomnode.state import StudyPurging
    spool = make_spool(tmp_path)
    study_uid = add_study(spool, DONE, finished_days_ago=40)
    assert spool.db.begin_purge(study_uid, (DONE,)) is not None  # step 1 of a purge, files not yet deleted
    late = incoming(synthetic_mr(study_uid=study_uid, instance=7, size=16))
    with pytest.raises(StudyPurging):
        spool.store(late)
    assert not (spool.root / spool.relative_path(late)).exists()  # the sender sends it again after the purge


def test_a_failing_free_space_check_logs_one_traceback_not_one_a_minute(tmp_path, make_spool, caplog):
    spool = make_spool(tmp_path)

    def broken_statvfs():
        raise OSError(5, "Input/output error")

    retention = Retention(spool.db, spool.root, RetentionConfig(days=30, emergency_free_space_mb=50), broken_statvfs)
    with caplog.at_level("INFO", logger="dicomnode.retention"):
        for _ in range(5):
            retention.check_free_space_safely()
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].exc_info and "free-space check" in errors[0].getMessage(), errors
    caplog.clear()
    retention.free_space_mb = lambda: 10_000.0
    with caplog.at_level("INFO", logger="dicomnode.retention"):
        retention.check_free_space_safely()
    assert any("works again after 5 failed rounds" in r.getMessage() for r in caplog.records), caplog.text


def test_a_long_purge_renews_the_complete_lease_and_stops_once_another_process_holds_it(tmp_path, make_spool,
                                                                                         monkeypatch, caplog):
    """break34 F5: the scale-out completion process purges inline; a purge that outlasts [state] lease_seconds renews
    the `complete` lease between studies (the fail-over process must not take the lease and "finish" a purge that is
    still running), and stops between two studies once the lease went to another process."""
    import dicomnode.retention as retention_module
    from dicomnode.roles import COMPLETE_LEASE, DatabaseCompletion

    spool = make_spool(tmp_path)
    db = spool.db
    keys = [add_study(spool, DONE, finished_days_ago=40 + index) for index in range(4)]
    config = Config.model_validate({"retention": {"days": 30, "emergency_free_space_mb": 0}})
    retention = Retention(db, spool.root, config.retention, lambda: 10**9)
    completion = DatabaseCompletion(db, config, lease_seconds=1.0, retention=retention)
    other = StateDB(db.url, process_id="failover:1", lease_seconds=1.0)  # the second `complete` process
    taken: list[bool] = []
    real_purge = retention_module.purge_study

    def slow_purge(*args, **kwargs):  # each study takes 0.4 s (NFS): the four outlast the 1 s lease
        purged = real_purge(*args, **kwargs)
        time.sleep(0.4)
        taken.append(other.acquire_lease(COMPLETE_LEASE, 1.0))
        return purged

    monkeypatch.setattr(retention_module, "purge_study", slow_purge)
    try:
        completion.poll()
        assert taken == [False] * 4 and completion.holding  # renewed between studies: never free for the other
        assert all(db.study(key) is None for key in keys)

        more = [add_study(spool, DONE, finished_days_ago=40 + index) for index in range(3)]
        taken.clear()

        def lose_the_lease(*args, **kwargs):  # after the first study the lease lapses and the other takes it
            purged = real_purge(*args, **kwargs)
            if not taken:
                db.release_lease(COMPLETE_LEASE)
                taken.append(other.acquire_lease(COMPLETE_LEASE, 30.0))
            time.sleep(0.4)
            return purged

        monkeypatch.setattr(retention_module, "purge_study", lose_the_lease)
        completion._last_retention = 0.0
        with caplog.at_level("INFO", logger="dicomnode.retention"):
            completion._run_retention(time.time())
        assert taken == [True] and not completion.holding
        remaining = [key for key in more if db.study(key) is not None]
        assert len(remaining) == 2 and all(db.study(key)["state"] == DONE for key in remaining)
        assert all((spool.root / path).exists() for key in remaining for path in db.study_files(key))
        assert "no longer holds the `complete` lease" in caplog.text
    finally:
        other.close()
