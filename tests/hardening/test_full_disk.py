"""A storage disk filled to the last block by another writer (break42c findings 1, 4, 5, 7): the emergency purge
frees it by itself (the space reserve gives its `purging` mark room), or says at ERROR why it cannot and what to do;
an outage that comes and goes is said once, not at every flap; a log file that cannot be written is said once, not a
traceback per line; `dicomnode status` does not call a live process killed because it cannot write its heartbeat,
and says so when space is back.

The tests marked `small_disk` mount a real tmpfs (root only; skipped elsewhere): the failures of a full disk come
from SQLite and the kernel, not from a stand-in."""
from __future__ import annotations

import errno
import json
import logging
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy
import sqlalchemy.exc

import dicomnode.state
from dicomnode.cli import _print_status
from dicomnode.config import RetentionConfig
from dicomnode.observe import LogFileHandler
from dicomnode.retention import RESERVE_NAME, Retention, SpaceReserve
from dicomnode.roles import receiving_report
from dicomnode.spool import Spool
from dicomnode.state import DONE, OutageMonitor, StateDB, is_disk_full
from tests.hardening.test_retention import add_study, files_of


def disk_full_error() -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError("UPDATE studies", {}, sqlite3.OperationalError("database or disk is full"))


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MB tmpfs mounted at tmp_path/disk (root only: skipped otherwise), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(folder: Path) -> Path:
    """Fill the file system of `folder` to its last block (as another writer would); returns the filler file."""
    filler = folder / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1 << 20, 1 << 16, 4096, 512, 1):
            block = b"\0" * chunk
            while True:
                try:
                    os.write(descriptor, block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(descriptor)
    return filler


def spool_on(folder: Path) -> Spool:
    store = folder / "store"
    store.mkdir()
    return Spool(store, StateDB(store / "state.sqlite3", upgrade=True), min_free_space_mb=0)


def make_full(spool: Spool, reopened: bool = False) -> Path:
    """Fill the disk; the state's WAL emptied first, so that every write needs a new block (as on the tester's).
    `reopened`: every connection closed first (a node started on the full disk: SQLite cannot even make its
    shared-memory file, and says 'disk I/O error')."""
    if reopened:
        spool.db.engine.dispose()
    connection = sqlite3.connect(spool.db.path, isolation_level=None)
    try:
        assert connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0  # 0: not busy
    finally:
        connection.close()
    filler = fill(spool.root.parent)
    with pytest.raises(sqlalchemy.exc.OperationalError) as raised:
        spool.db.heartbeat(["receive"], time.time())
    # the precondition: the state cannot be written
    assert ("disk I/O error" in str(raised.value)) if reopened else is_disk_full(raised.value), raised.value
    return filler


# --- finding 1: the emergency purge on a 100 % full disk ------------------------------------------------------------


@pytest.mark.parametrize("reopened", [False, True], ids=["running", "restarted"])
def test_the_emergency_purge_frees_a_full_disk_by_itself_through_its_space_reserve(small_disk, caplog, reopened):
    spool = spool_on(small_disk)
    study = add_study(spool, DONE, finished_days_ago=1, instances=4)
    files = files_of(spool.db, study)
    retention = Retention(spool.db, spool.root, RetentionConfig(days=30, emergency_free_space_mb=4),
                          spool.free_space_mb, reserve=SpaceReserve(spool.root, size_mb=2))
    retention.check_free_space_safely()  # plenty of room: nothing purged, the reserve is made
    reserve = spool.root / RESERVE_NAME
    assert reserve.stat().st_size == 2 * 1024 * 1024 and spool.db.study(study) is not None
    filler = make_full(spool, reopened)

    with caplog.at_level(logging.INFO):
        retention.check_free_space_safely()
    assert spool.db.study(study) is None and not any((spool.root / p).exists() for p in files)
    assert not reserve.exists()
    assert "deleted the space reserve" in caplog.text
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    # the filler stays: what is left under the floor is said, as on any disk with nothing more to purge
    assert len(errors) == 1 and errors[0].startswith("free space 2 MB is still under"), errors
    assert spool.db.purged_reports(study)  # the purge's bookkeeping is whole: its tombstone is there

    filler.unlink()  # space is back: the reserve is made again
    caplog.clear()
    with caplog.at_level(logging.INFO):
        retention.check_free_space_safely()
    assert reserve.stat().st_size == 2 * 1024 * 1024 and "made again" in caplog.text
    spool.db.close()


def test_a_purge_that_cannot_record_its_steps_says_why_and_what_to_do_once(small_disk, caplog):
    spool = spool_on(small_disk)
    study = add_study(spool, DONE, finished_days_ago=1)
    retention = Retention(spool.db, spool.root, RetentionConfig(days=30, emergency_free_space_mb=4),
                          spool.free_space_mb, reserve=SpaceReserve(spool.root, size_mb=2))
    filler = make_full(spool)  # no reserve was ever made (as a node started on a short disk)
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            retention.check_free_space_safely()
            retention.run_safely()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("dicomnode")]
    assert len(errors) == 1 and not errors[0].exc_info, caplog.text
    message = errors[0].getMessage()
    assert "the emergency purge (and the age purge) cannot run" in message and "database or disk is full" in message
    assert "no space reserve is left to delete" in message and "by hand" in message
    assert spool.db.study(study)["state"] == DONE  # nothing half done

    filler.unlink()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        retention.check_free_space_safely()
    assert "works again after" in caplog.text and (spool.root / RESERVE_NAME).is_file()
    spool.db.close()


def test_the_reserve_is_released_only_for_a_full_disk_and_said_when_spent(tmp_path, monkeypatch, caplog):
    """Unit level: begin_purge fails for lack of space while the reserve is there (its blocks are what the write
    needs); once it is deleted the purge goes on; with it spent, the next full disk is a PurgeBlocked ERROR."""
    store = tmp_path / "store"
    store.mkdir()
    spool = Spool(store, StateDB(store / "state.sqlite3", upgrade=True), min_free_space_mb=0)
    first, second = (add_study(spool, DONE, finished_days_ago=days) for days in (2, 1))
    reserve = SpaceReserve(store, size_mb=1)
    assert reserve.ensure(free_mb=100, floor_mb=10) and reserve.present
    free = {"mb": 5.0}
    retention = Retention(spool.db, store, RetentionConfig(days=30, emergency_free_space_mb=10), lambda: free["mb"],
                          reserve=reserve)
    real_begin = spool.db.begin_purge

    def begin_purge(study_key, states):
        if reserve.present:
            raise disk_full_error()
        free["mb"] = 100.0 if study_key == first else free["mb"]  # the oldest study's files free enough
        return real_begin(study_key, states)

    monkeypatch.setattr(spool.db, "begin_purge", begin_purge)
    with caplog.at_level(logging.INFO):
        retention.check_free_space_safely()
    assert spool.db.study(first) is None and spool.db.study(second)["state"] == DONE
    assert "deleted the space reserve" in caplog.text and reserve.present  # made again: 100 MB free

    def always_full(study_key, states):
        raise disk_full_error()

    monkeypatch.setattr(spool.db, "begin_purge", always_full)
    free["mb"] = 5.0
    caplog.clear()
    with caplog.at_level(logging.INFO):
        retention.check_free_space_safely()
    assert not reserve.present and spool.db.study(second)["state"] == DONE
    (error,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "was not enough" in error.getMessage() and "by hand" in error.getMessage()

    monkeypatch.setattr(spool.db, "begin_purge", real_begin)
    other = RuntimeError("not a full disk")

    def broken(study_key, states):
        raise other

    monkeypatch.setattr(spool.db, "begin_purge", broken)
    assert reserve.ensure(free_mb=100, floor_mb=10)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        retention.check_free_space_safely()
    assert reserve.present  # another error never spends the reserve
    spool.db.close()


def test_the_reserve_is_not_made_where_it_would_take_the_disk_under_the_floor_and_goes_with_the_purge_off(tmp_path):
    reserve = SpaceReserve(tmp_path, size_mb=2)
    assert not reserve.ensure(free_mb=11, floor_mb=10) and not reserve.present
    assert reserve.ensure(free_mb=12, floor_mb=10) and (tmp_path / RESERVE_NAME).stat().st_mode & 0o777 == 0o600
    assert not reserve.ensure(free_mb=100, floor_mb=0) and not reserve.present
    assert not list(tmp_path.iterdir())  # no temporary left


# --- finding 4: a flapping outage and a log file on the full disk ---------------------------------------------------


def test_an_outage_that_comes_and_goes_is_said_once_more_then_its_end_once_it_stays_away(monkeypatch, caplog):
    clock = {"now": 1000.0}
    monkeypatch.setattr(dicomnode.state.time, "time", lambda: clock["now"])
    monitor = OutageMonitor(retry_seconds=10)
    with caplog.at_level(logging.INFO, logger="dicomnode.state"):
        for _ in range(48):  # the tester's 8 minutes: a heartbeat fails, a small write works 3 s later
            monitor.failed(disk_full_error())
            assert monitor.active
            clock["now"] += 3
            monitor.succeeded()
            assert not monitor.active
            clock["now"] += 7
        levels = [r.levelname for r in caplog.records]
        assert levels[:3] == ["ERROR", "WARNING", "ERROR"] and "comes and goes" in caplog.records[2].getMessage()
        assert levels.count("WARNING") == 1 and levels.count("ERROR") <= 4, levels  # reminders every 300 s only
        before = len(caplog.records)
        for _ in range(8):  # then it stays reachable: its end is said once, after RECOVERY_HOLD_SECONDS
            clock["now"] += 10
            monitor.succeeded()
    after = [r for r in caplog.records[before:]]
    assert [r.levelname for r in after] == ["WARNING"] and "failing at times" in after[0].getMessage()


def test_a_log_file_that_cannot_be_written_is_said_once_not_a_traceback_per_line(small_disk, capsys):
    path = small_disk / "dicomnode.log"
    handler = LogFileHandler(str(path))
    logger = logging.getLogger("dicomnode.test_full_disk")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("before")
        filler = fill(small_disk)
        for index in range(25):
            logger.error("line %d %s", index, "x" * 200)
        err = capsys.readouterr().err
        assert "Logging error" not in err and "Traceback" not in err
        assert err.count("cannot write the log file") == 1 and "No space left on device" in err
        filler.unlink()
        logger.warning("after")
        text = path.read_text()
        assert "before" in text and "after" in text and "missing here" in text
        assert "written again" in capsys.readouterr().err
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.propagate = True


# --- findings 5 and 7: status on a full disk and after it ---------------------------------------------------------


def node_row(age: float, pid: int, alive: bool, detail: dict | None = None) -> dict:
    return {"node_id": f"vm:{pid}", "host": os.uname().nodename, "pid": pid, "roles": ["receive", "complete"],
            "heartbeat_age_s": age, "alive": alive, "gone": age > 100, "analysing": [], "detail": detail or {}}


def test_status_on_a_full_disk_says_heartbeats_cannot_be_written_not_that_a_live_process_is_gone(capsys):
    report = {"studies": [], "nodes": [dict(node_row(156, os.getpid(), False), pid_running=True)],
              "receiving": {"refusing": True, "free_mb": 0.0, "min_free_space_mb": 10, "last_refused_at": time.time(),
                            "last_refused_s_ago": 40.0, "last_refusal": "free space 0.0 MB minus the instance (0.1 "
                                                                        "MB) would be under the floor of 10 MB"},
              "refused_recently": [], "heartbeats_blocked": "the disk holding the state is full"}
    _print_status(report, False, 30, 100)
    out = capsys.readouterr().out
    assert "GONE" not in out and "killed or its machine is down" not in out and "STALE" not in out
    assert "156 s ago NOT WRITTEN" in out and "the disk holding the state is full" in out
    assert f"pid {os.getpid()} still running" in out
    assert "studies below" not in out and "cannot be listed here" in out  # no dangling reference


def test_status_says_receiving_again_once_space_is_back(tmp_path, capsys):
    refused_at = time.time() - 113
    reason = "free space 0.0 MB minus the instance (0.1 MB) would be under the floor of 10 MB (node.min_free_space_mb)"
    node = node_row(5, 1, True, {"last_refused_at": refused_at, "last_stored_at": refused_at - 60,
                                 "last_refusal": reason, "min_free_space_mb": 10})
    receiving = receiving_report(tmp_path, 10, [node])  # tmp_path has far more than 11 MB free
    assert receiving["refusing"] is False and receiving["space_back"] is True
    _print_status({"studies": [], "nodes": [node], "receiving": receiving, "refused_recently": []}, False, 30, 100)
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("receiving again: storage ") and "RECEIVING REFUSED" not in first
    # the process's own floor counts, not this config's: a process refusing under its floor of 10**9 MB refuses still
    node["detail"]["min_free_space_mb"] = 10**9
    assert receiving_report(tmp_path, 10, [node])["refusing"] is True
    # a refusal for another cause than space is not over because there is space
    node["detail"].update(min_free_space_mb=10, last_refusal="cannot write spool: Read-only file system")
    assert receiving_report(tmp_path, 10, [node])["refusing"] is True
    json.dumps(receiving)


def test_status_of_a_node_on_a_full_small_disk(small_disk, capsys):
    """The tester's run end to end: a state on a full tmpfs, a live process whose heartbeat is minutes old."""
    from dicomnode.cli import main

    spool = spool_on(small_disk)
    spool.db.heartbeat(["receive", "complete", "analyse", "dispatch"], time.time())
    with spool.db.engine.begin() as connection:  # its last beat 156 s ago, this very process
        connection.exec_driver_sql(f"UPDATE nodes SET last_seen = {time.time() - 156}, pid = {os.getpid()}")
    make_full(spool)
    config = small_disk.parent / "node.toml"
    config.write_text(f'[node]\nstorage_dir = "{spool.root}"\nmin_free_space_mb = 10\n')
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "NOT WRITTEN" in out and "GONE" not in out and f"pid {os.getpid()} still running" in out
    assert spool.db.nodes()  # the row is kept
    spool.db.close()


def test_a_full_disk_is_told_from_other_database_errors():
    assert is_disk_full(disk_full_error())
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_disk_full(sqlalchemy.exc.OperationalError("x", {}, sqlite3.OperationalError("database is locked")))
    assert not is_disk_full(OSError(errno.EIO, "Input/output error"))
