"""Result objects that do not fit on the disk (break44c #3): the file system's ENOSPC (or EDQUOT) while an analysis
writes its SEG / SR / PDF / display copies is the node's disk, not the study's fault. The partial results go, the
study stays `complete` ("analysis postponed: no space …", one ERROR line, no traceback) and runs again by itself once
space is back, or at the next start; it is never `failed` for good (only `dicomnode retry` brought it back)."""
from __future__ import annotations

import errno
import logging
import time

import pytest

import dicomnode.study_path
from dicomnode.config import Config
from dicomnode.node import MAX_NO_SPACE_POSTPONEMENTS, NO_SPACE_RETRY_MB, Node
from dicomnode.roles import RoleRunner
from dicomnode.state import COMPLETE, DONE, FAILED
from tests.hardening.hardening_support import store_one, synthetic_mr
from tests.hardening.stub_serve import StubAnalyser


def config_of(tmp_path) -> Config:
    return Config.model_validate({
        "node": {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 0,
                 "allowed_calling_aes": ["*"]},
        "studies": {"quiet_seconds": 3600},
        "routes": [{"name": "mr", "match": {"modality": "MR"}, "pipelines": ["lge"]}]})


class StubNow(StubAnalyser):
    def __init__(self, config):
        super().__init__(config)
        self.seconds = 0.0
        self.calls = 0

    def analyse(self, study, pipelines, started_at=None, supersedes=None):
        self.calls += 1
        return super().analyse(study, pipelines, started_at, supersedes)


class FullDisk:
    """The result writer's file system: full (`full`), its free space `free_mb` as the node measures it."""

    def __init__(self, monkeypatch, node: Node, errno_code: int = errno.ENOSPC):
        self.full = True
        self.free_mb = 0.1
        self.writes = 0
        real = dicomnode.study_path.write_durably

        def write_durably(path, data, mode=0o600, root=None):
            self.writes += 1
            if self.full and self.writes > 1:  # the first object fits, the second does not
                raise OSError(errno_code, "No space left on device", str(path))
            real(path, data, mode=mode, root=root)

        monkeypatch.setattr(dicomnode.study_path, "write_durably", write_durably)
        monkeypatch.setattr(node.spool, "free_space_mb", lambda: self.free_mb)


def wait_for(node: Node, key: str, state: str, seconds: float = 30.0) -> None:
    deadline = time.time() + seconds
    while node.db.study(key)["state"] != state and time.time() < deadline:
        time.sleep(0.05)
    assert node.db.study(key)["state"] == state, dict(node.db.study(key))


def received_complete(node: Node) -> str:
    first = synthetic_mr()
    assert store_one(node.scp.port, first).Status == 0
    key = str(first.StudyInstanceUID)
    node.scheduler.remove_job(f"quiet:{key}")
    node.completion.forget(key)
    node.db.set_study_state(key, COMPLETE)
    return key


def result_files(tmp_path) -> list:
    root = tmp_path / "store" / "results"
    return [p for p in root.rglob("*") if p.is_file()] if root.is_dir() else []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT], ids=["ENOSPC", "EDQUOT"])
def test_results_that_do_not_fit_postpone_the_analysis_until_space_is_back(tmp_path, monkeypatch, caplog, code):
    config = config_of(tmp_path)
    analyser = StubNow(config)
    node = Node(config, analyser=analyser)
    node.start(warm_up=False)
    try:
        disk = FullDisk(monkeypatch, node, code)
        key = received_complete(node)
        with caplog.at_level(logging.INFO):
            node.analyse_study(key, 0)
        study = node.db.study(key)
        assert study["state"] == COMPLETE, dict(study)
        assert study["reason"].startswith("analysis postponed: no space for the result objects"), study["reason"]
        assert result_files(tmp_path) == []  # the object that fitted went with the rest
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and errors[0].exc_info is None, [r.getMessage() for r in errors]
        assert "analysis postponed" in errors[0].getMessage() and "runs again by itself" in errors[0].getMessage()
        assert "Traceback" not in caplog.text

        # still full: the requeue job leaves it alone (no ERROR every few seconds)
        caplog.clear()
        with caplog.at_level(logging.INFO):
            node._enqueue_complete_studies_once()
            time.sleep(0.3)
        assert analyser.calls == 1 and node.db.study(key)["state"] == COMPLETE
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

        disk.full = False
        disk.free_mb += NO_SPACE_RETRY_MB + 1  # space is back: it runs by itself, to done
        node._enqueue_complete_studies_once()
        wait_for(node, key, DONE)
        assert analyser.calls == 2 and len(result_files(tmp_path)) == 2
    finally:
        node.stop()


def test_an_analysis_postponed_for_lack_of_space_runs_at_the_next_start(tmp_path, monkeypatch):
    config = config_of(tmp_path)
    node = Node(config, analyser=StubNow(config))
    node.start(warm_up=False)
    try:
        FullDisk(monkeypatch, node)
        key = received_complete(node)
        node.analyse_study(key, 0)
        assert node.db.study(key)["state"] == COMPLETE
    finally:
        node.stop()
    monkeypatch.undo()
    restarted = Node(config, analyser=StubNow(config))
    restarted.start(warm_up=False)
    try:
        wait_for(restarted, key, DONE)
    finally:
        restarted.stop()


def test_the_scale_out_analyse_role_postpones_the_same_way(tmp_path, monkeypatch, caplog):
    config = Config.model_validate({
        "node": {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 0,
                 "allowed_calling_aes": ["*"]},
        "studies": {"quiet_seconds": 3600},
        "state": {"heartbeat_seconds": 0.2, "lease_seconds": 5, "poll_seconds": 0.05},
        "routes": [{"name": "mr", "match": {"modality": "MR"}, "pipelines": ["lge"]}]})
    analyser = StubNow(config)
    node = Node(config, analyser=analyser)
    runner = RoleRunner(node, ("receive", "analyse"))
    disk = FullDisk(monkeypatch, node)
    with caplog.at_level(logging.INFO):
        runner.start(warm_up=False)
        try:
            first = synthetic_mr()
            assert store_one(node.scp.port, first).Status == 0
            key = str(first.StudyInstanceUID)
            node.db.set_study_state(key, COMPLETE)  # what the complete role does
            deadline = time.time() + 30
            while analyser.calls < 1 and time.time() < deadline:
                time.sleep(0.05)
            wait_for(node, key, COMPLETE)
            time.sleep(1.0)  # the workers poll: none claims it while the space is not back
            assert analyser.calls == 1 and node.db.study(key)["reason"].startswith("analysis postponed: no space")
            assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
            disk.full = False
            disk.free_mb += NO_SPACE_RETRY_MB + 1
            wait_for(node, key, DONE, 60)
            assert analyser.calls == 2
        finally:
            runner.stop()


def test_postponements_end_failed_after_the_last_one_and_leave_no_analysis_running(tmp_path, monkeypatch):
    """review44 #7: a lack of space that does not go away (a quota free_space_mb cannot see) postpones the study
    MAX_NO_SPACE_POSTPONEMENTS times, each analysis recorded abandoned, then fails it with a reason saying what to do."""
    config = config_of(tmp_path)
    node = Node(config, analyser=StubNow(config))
    node.start(warm_up=False)
    try:
        FullDisk(monkeypatch, node)
        monkeypatch.setattr("dicomnode.node.NO_SPACE_RETRY_SECONDS", 0.0)  # each retry is due at once
        key = received_complete(node)
        node.analyse_study(key, 0)
        monkeypatch.setattr("dicomnode.node.NO_SPACE_RETRY_SECONDS", 600.0)
        node.analyse_study(key, 0)  # not due yet: no attempt, the count stays
        assert "(postponement 1 of" in node.db.study(key)["reason"]
        monkeypatch.setattr("dicomnode.node.NO_SPACE_RETRY_SECONDS", 0.0)
        for count in range(2, MAX_NO_SPACE_POSTPONEMENTS + 1):
            node.analyse_study(key, 0)
            study = node.db.study(key)
            assert study["state"] == COMPLETE and f"(postponement {count} of {MAX_NO_SPACE_POSTPONEMENTS})" in \
                study["reason"], dict(study)
            assert [a["state"] for a in node.db.analyses_of(key)] == ["abandoned"] * count
        node.analyse_study(key, 0)
        study = node.db.study(key)
        assert study["state"] == FAILED, dict(study)
        assert f"after {MAX_NO_SPACE_POSTPONEMENTS} postponements" in study["reason"]
        assert "dicomnode retry" in study["reason"]
        assert node.db.analyses_of(key)[-1]["state"] == "failed"
    finally:
        node.stop()


def test_no_space_outside_the_storage_dir_fails_the_analysis(tmp_path, monkeypatch):
    """review44 #7: ENOSPC writing a file outside node.storage_dir (a full /tmp or model cache) is not helped by room
    for the results: the study fails, naming the file, instead of being postponed forever."""
    config = config_of(tmp_path)
    node = Node(config, analyser=StubNow(config))
    node.start(warm_up=False)
    try:
        def full_tmp(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "tmp" / "cache.bin"))
        monkeypatch.setattr(dicomnode.study_path, "write_durably", full_tmp)
        key = received_complete(node)
        node.analyse_study(key, 0)
        study = node.db.study(key)
        assert study["state"] == FAILED, dict(study)
        assert "outside node.storage_dir" in study["reason"] and "cache.bin" in study["reason"]
    finally:
        node.stop()
