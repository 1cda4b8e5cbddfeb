"""Retention and file times (opsbreak finding 2): a file set ahead of the clock (a clock stepped back, a restore, a
file server ahead) is deleted with its study, never kept as "sent again" while its rows go; a file that may really be
an instance sent again during the purge keeps its study `purging`, rows and all, until a later run deletes it. After
any purge, no spool file is left that no row names."""
from __future__ import annotations

import logging
import os
import time

from dicomnode import retention
from dicomnode.config import RetentionConfig
from dicomnode.retention import Retention, purge_expired, purge_study
from dicomnode.state import DONE, PURGING
from tests.hardening.test_retention import DAY, add_study, make_spool  # noqa: F401, F811 (fixture)
from tests.state_backends import pg_server, state_location  # noqa: F401 (fixtures)


def _spool_files_on_disk(spool) -> set[str]:
    return {str(p.relative_to(spool.root)) for p in (spool.root / "spool").rglob("*") if p.is_file()}


def _indexed(spool) -> set[str]:
    return {path for study in spool.db.studies() for path in spool.db.study_files(study["study_key"])}


def test_files_set_ahead_of_the_clock_are_deleted_with_their_study(tmp_path, make_spool, caplog):
    spool = make_spool(tmp_path)
    study = add_study(spool, DONE, finished_days_ago=40, instances=3)
    files = [spool.root / relative for relative in spool.db.study_files(study)]
    ahead = time.time() + 600  # `touch -d '+10 minutes'`: what a clock stepped back leaves
    for path in files:
        os.utime(path, (ahead, ahead))
    with caplog.at_level(logging.INFO, logger="dicomnode.retention"):
        report = purge_expired(spool.db, spool.root, days=30)
    assert report.studies == [study]
    assert not any(path.exists() for path in files), "patient data left on disk that no row names"
    assert spool.db.row_count(study) == 0 and _spool_files_on_disk(spool) == set()
    assert "sent again meanwhile" not in caplog.text
    assert "deleted 3 file(s) whose modification time is up to" in caplog.text and "in the future" in caplog.text


def test_a_file_maybe_sent_again_keeps_its_study_and_rows_until_a_later_run_deletes_it(tmp_path, make_spool, caplog,
                                                                                     monkeypatch):
    spool = make_spool(tmp_path)
    study = add_study(spool, DONE, finished_days_ago=40, instances=3)
    relatives = spool.db.study_files(study)
    resent = next(spool.root / r for r in relatives if r.startswith("spool/"))
    real_delete = retention._delete_files

    def resent_meanwhile(storage_dir, paths, began, report, tag):  # the spool writes it again as the purge runs
        resent.write_bytes(b"sent again")
        return real_delete(storage_dir, paths, began, report, tag)

    monkeypatch.setattr(retention, "_delete_files", resent_meanwhile)
    with caplog.at_level(logging.INFO, logger="dicomnode.retention"):
        assert purge_study(spool.db, spool.root, study) is False
    monkeypatch.setattr(retention, "_delete_files", real_delete)
    assert resent.read_bytes() == b"sent again"
    row = spool.db.study(study)
    assert row["state"] == PURGING and row["reason"].startswith("retention purge waiting for 1 file(s)")
    assert str(resent.relative_to(spool.root)) in spool.db.study_files(study)  # not forgotten
    assert _spool_files_on_disk(spool) <= _indexed(spool)
    assert "stays `purging`, its rows kept: 1 of its file(s)" in caplog.text

    # the next free-space check (every minute), once the file is older than any receive takes: file and rows go
    checks = Retention(spool.db, spool.root, RetentionConfig(days=30, emergency_free_space_mb=0), lambda: 1e9)
    checks.check_free_space_safely()
    assert resent.exists() and spool.db.study(study)["state"] == PURGING  # still recent: a receiver may index it
    monkeypatch.setattr(retention, "_clock", lambda: time.time() + retention.RESEND_GRACE_SECONDS + 10)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dicomnode.retention"):
        checks.check_free_space_safely()
    assert not resent.exists() and spool.db.row_count(study) == 0 and _spool_files_on_disk(spool) == set()
    assert "(it waited for files written since it began)" in caplog.text and "crash" not in caplog.text


def test_after_any_purge_every_spool_file_left_is_indexed(tmp_path, make_spool):
    """Mixed file times (past, just written, far ahead) over several studies: whatever is kept is named by a row."""
    spool = make_spool(tmp_path)
    studies = [add_study(spool, DONE, finished_days_ago=40, instances=2) for _ in range(3)]
    now = time.time()
    for study, mtime in zip(studies, (now - DAY, now + 3600, now + 365 * DAY)):
        for relative in spool.db.study_files(study):
            os.utime(spool.root / relative, (mtime, mtime))
    purge_expired(spool.db, spool.root, days=30)
    assert _spool_files_on_disk(spool) <= _indexed(spool)
    assert _spool_files_on_disk(spool) == set() and all(spool.db.row_count(s) == 0 for s in studies)
