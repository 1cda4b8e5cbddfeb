"""The scheduled retention run and the free-space check, two scheduler threads, never run at once (break51b #4): an
ERROR "after purging 0 done studies" while the other thread purged, and a space reserve said not made just after it
was made (the two threads shared one temporary file name)."""
from __future__ import annotations

import logging
import os
import threading

import dicomnode.retention as retention_module
from dicomnode.config import RetentionConfig
from dicomnode.retention import Retention, SpaceReserve
from dicomnode.spool import Spool
from dicomnode.state import StateDB


def test_the_free_space_check_is_skipped_while_the_scheduled_run_runs(tmp_path, monkeypatch, caplog):
    (tmp_path / "store").mkdir()
    db = StateDB(tmp_path / "store" / "state.sqlite3", upgrade=True)
    try:
        spool = Spool(tmp_path / "store", db)
        entered, release = threading.Event(), threading.Event()
        real_expired, real_emergency = retention_module.purge_expired, retention_module.emergency_purge
        inside: list[str] = []

        def slow_purge_expired(*args, **kwargs):  # a long age purge
            entered.set()
            assert release.wait(10)
            return real_expired(*args, **kwargs)

        def emergency_purge(*args, **kwargs):
            inside.append(threading.current_thread().name)
            return real_emergency(*args, **kwargs)

        monkeypatch.setattr(retention_module, "purge_expired", slow_purge_expired)
        monkeypatch.setattr(retention_module, "emergency_purge", emergency_purge)
        retention = Retention(db, spool.root, RetentionConfig(days=30, emergency_free_space_mb=40), lambda: 10_000.0,
                              reserve=SpaceReserve(spool.root, size_mb=0))
        scheduled = threading.Thread(target=retention.run_safely, name="scheduled")
        with caplog.at_level(logging.INFO, logger="dicomnode.retention"):
            scheduled.start()
            assert entered.wait(10)
            retention.check_free_space_safely()  # the 60 s check fires in the same second: it does not run now
            assert inside == []
            release.set()
            scheduled.join(10)
            assert inside == ["scheduled"]
            retention.check_free_space_safely()  # once the run is over it runs as before
            assert inside == ["scheduled", threading.current_thread().name]
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    finally:
        db.close()


def test_two_threads_making_the_space_reserve_at_once_leave_it_whole_and_say_nothing(tmp_path, monkeypatch, caplog):
    reserve = SpaceReserve(tmp_path, size_mb=1)
    first_inside, second_done = threading.Event(), threading.Event()
    real = os.posix_fallocate

    def fallocate(descriptor, offset, length):
        if threading.current_thread().name == "first":  # the first thread is held between its open and its link
            first_inside.set()
            assert second_done.wait(10)
        return real(descriptor, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", fallocate)
    made: dict[str, bool] = {}
    first = threading.Thread(target=lambda: made.update(first=reserve.ensure(100.0, 10.0)), name="first")
    with caplog.at_level(logging.INFO, logger="dicomnode.retention"):
        first.start()
        assert first_inside.wait(10)
        made["second"] = reserve.ensure(100.0, 10.0)
        second_done.set()
        first.join(10)
    assert made == {"first": True, "second": True}
    assert reserve.path.stat().st_size == 1024 * 1024  # not truncated by the other thread's O_TRUNC
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.reserve"]  # no temporary file left
