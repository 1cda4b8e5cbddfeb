"""break44c #6: result files of analyses that never finished (a scale-out analyse process killed mid-write, an
abandoned or failed analysis) are removed by the scale-out role processes as by a single node's start, never those of
an analysis still running; a purge leaves nothing of the study's results folder behind."""
from __future__ import annotations

import os
import time

from dicomnode.config import Config
from dicomnode.node import Node
from dicomnode.retention import purge_expired, remove_abandoned_results
from dicomnode.roles import RoleRunner
from dicomnode.spool import write_durably
from dicomnode.state import DONE
from dicomnode.uids import short_hash
from tests.hardening.hardening_support import synthetic_mr
from tests.hardening.test_retention import add_study, incoming, make_spool  # noqa: F401 (fixture)
from tests.node.test_storage_safety import set_columns
from tests.state_backends import pg_server, state_location  # noqa: F401 (fixtures)


def _aged(path, seconds: float = 3600.0) -> None:
    os.utime(path, (time.time() - seconds, time.time() - seconds))


def test_a_purge_removes_the_result_files_no_row_records(tmp_path, make_spool):
    spool = make_spool(tmp_path)
    study = add_study(spool, DONE, finished_days_ago=40)
    folder = spool.root / "results" / short_hash(study, 16)
    orphans = [folder / "97" / "1.2.9.dcm", folder / "98" / ".1.2.8.dcm.1234.tmp"]  # killed analyses' files
    for path in orphans:
        write_durably(path, b"SEG with the patient's name")
    report = purge_expired(spool.db, spool.root, days=30)
    assert report.studies == [study]
    assert not any(path.exists() for path in orphans) and not folder.exists()


def _claimed_analysis(spool, study: str) -> int:
    spool.db.set_study_state(study, "complete")
    return spool.db.start_analysis(study, 0)


def test_only_the_files_of_analyses_that_are_over_are_removed(tmp_path, make_spool):
    spool = make_spool(tmp_path)
    db = spool.db
    study = synthetic_mr().StudyInstanceUID
    spool.store(incoming(synthetic_mr(study_uid=study, size=16)))
    running = _claimed_analysis(spool, study)
    folder = spool.root / "results" / short_hash(study, 16)
    writing = folder / str(running) / "1.2.1.dcm"
    write_durably(writing, b"being written")
    _aged(writing)
    assert remove_abandoned_results(db, spool.root, grace_seconds=60) == 0  # a live worker may be writing it
    assert writing.exists()
    set_columns(db, "UPDATE analyses SET state='abandoned' WHERE id=:i", i=running)  # its claim went elsewhere
    fresh = folder / str(running) / "1.2.2.dcm"
    write_durably(fresh, b"written a moment ago")
    gone_row = folder / "9999" / "1.2.3.dcm"  # no analysis row any more
    write_durably(gone_row, b"old")
    _aged(gone_row)
    assert remove_abandoned_results(db, spool.root, grace_seconds=60) == 2
    assert not writing.exists() and not gone_row.exists() and fresh.exists()  # within the grace: maybe a zombie's
    set_columns(db, "UPDATE analyses SET state='failed' WHERE id=:i", i=running)
    assert remove_abandoned_results(db, spool.root, grace_seconds=60) == 1  # its worker finished it: at once
    assert not folder.exists()


def test_a_scale_out_process_removes_a_killed_analysis_files_at_start(tmp_path):
    config = Config.model_validate({
        "node": {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 0},
        "studies": {"quiet_seconds": 3600},
        "state": {"heartbeat_seconds": 30, "lease_seconds": 60, "poll_seconds": 0.05}})

    class NoAnalysis:
        def warm_up(self, names):
            return {}

    node = Node(config, analyser=NoAnalysis())
    kept = add_study(node.spool, DONE, finished_days_ago=1)
    recorded = [path for path in node.db.study_files(kept) if path.startswith("results/")]
    study = synthetic_mr().StudyInstanceUID
    node.spool.store(incoming(synthetic_mr(study_uid=study, size=16)))
    killed = _claimed_analysis(node.spool, study)
    set_columns(node.db, "UPDATE analyses SET state='abandoned' WHERE id=:i", i=killed)
    orphan = node.storage_dir / "results" / short_hash(study, 16) / str(killed) / "1.2.4.dcm"
    write_durably(orphan, b"SEG of a killed analysis")
    _aged(orphan)
    runner = RoleRunner(node, ("complete",))
    runner.start(warm_up=False)
    try:
        assert not orphan.exists()
        assert recorded and all((node.storage_dir / path).is_file() for path in recorded)
    finally:
        runner.stop()
