"""node.storage_dir unmounted (break51b #7): `dicomnode status` says "storage_dir missing or not mounted (empty mount
point?)", not "no node has run on this storage; is node.toml the config ...", and the running node's retention and
queueing jobs say one line each while it is gone, not a FileNotFoundError traceback every round."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from dicomnode.cli import main
from dicomnode.node import Node
from dicomnode.spool import SPOOL_ID_FILE
from tests.node.test_storage_safety import NoAnalysis, node_config

NOT_MOUNTED = "storage_dir missing or not mounted (empty mount point?)"


@pytest.fixture
def started_node(tmp_path):
    """A started node on node_config(tmp_path) (node.min_free_space_mb 0) that analyses nothing."""
    node = Node(node_config(tmp_path), analyser=NoAnalysis())
    node.start(warm_up=False)
    yield node
    node.stop()


def config_file(tmp_path: Path, storage: Path) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(f'[node]\nstorage_dir = "{storage}"\nport = 11112\n')
    return path


def test_status_and_retry_on_a_storage_that_is_not_mounted_say_so(tmp_path, capsys):
    mount_point = tmp_path / "small"
    mount_point.mkdir()  # the disk that holds node.storage_dir (small/store) is not mounted: an empty folder
    config = config_file(tmp_path, mount_point / "store")
    for command in (["status"], ["retry", "--all"]):
        assert main([*command, "--config", str(config)]) == 1
        err = capsys.readouterr().err
        assert NOT_MOUNTED in err and f"{mount_point / 'store'} does not exist" in err, err
        assert f"{mount_point}, the nearest folder above it, is empty" in err
        assert f"if no node has run on this storage yet, is {config} the config the node runs with?" in err
    (mount_point / "store").mkdir()  # node.storage_dir is the mount point itself
    assert main(["status", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"{NOT_MOUNTED}: {mount_point / 'store'} is an empty folder" in err, err
    assert not list((mount_point / "store").iterdir())  # nothing created there

    (mount_point / "store" / "notes.txt").write_text("a folder with files: not a bare mount point")
    assert main(["status", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert NOT_MOUNTED not in err and "no node has run on this storage" in err, err


def test_status_says_the_storage_is_not_there_where_the_state_is_but_its_spool_id_is_not(started_node, tmp_path,
                                                                                          capsys):
    node = started_node
    config = config_file(tmp_path, node.storage_dir)
    assert main(["status", "--config", str(config)]) == 0
    assert "STORAGE NOT THERE" not in capsys.readouterr().out
    (node.storage_dir / SPOOL_ID_FILE).rename(tmp_path / "spool.id.away")
    try:
        assert main(["status", "--config", str(config)]) == 0
        out = capsys.readouterr().out
        first = out.splitlines()[0]
        assert first.startswith("STORAGE NOT THERE (on this machine): " + NOT_MOUNTED), out
        assert f"no {SPOOL_ID_FILE} in {node.storage_dir}" in first and "mount it again" in first
        assert main(["status", "--config", str(config), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["storage_problem"].startswith(NOT_MOUNTED)
    finally:
        (tmp_path / "spool.id.away").rename(node.storage_dir / SPOOL_ID_FILE)


def test_retention_and_queueing_say_one_line_while_the_spool_is_not_there(started_node, tmp_path, caplog):
    node = started_node
    spool_dir = node.spool.spool_dir
    node.config.node.min_free_space_mb = 20  # the requeue job measures the free space then (break51b's node.toml)
    moved = [(node.storage_dir / SPOOL_ID_FILE, tmp_path / "spool.id.away"), (spool_dir, tmp_path / "spool.away")]
    with caplog.at_level(logging.INFO):
        for here, away in moved:  # unmounted: storage_dir/spool is gone (statvfs: FileNotFoundError)
            here.rename(away)
        try:
            for _ in range(3):
                node.retention.run_safely()
                node.retention.check_free_space_safely()
                node._enqueue_complete_studies_once()
        finally:
            for here, away in moved:
                away.rename(here)
        node.retention.check_free_space_safely()
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]
    assert "Traceback" not in caplog.text
    paused = [r.getMessage() for r in caplog.records if r.getMessage().startswith("retention paused")]
    assert len(paused) == 1 and "does not hold the spool" in paused[0], paused
    assert len([r for r in caplog.records if r.getMessage().startswith("retention resumes")]) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r.name == "dicomnode.retention"]


def test_a_spool_unmounted_during_a_retention_run_is_the_pause_line_not_a_traceback(started_node, caplog, monkeypatch):
    """The scheduled run checked the spool, then it went (a full-suite run caught the scheduler's own job in that
    window): the run's FileNotFoundError is said as retention paused, without a traceback."""
    retention = started_node.retention
    gone = []
    monkeypatch.setattr(retention, "storage_problem", lambda: "node.storage_dir is not mounted" if gone else None)

    def run_once(keep_going=None):
        gone.append(True)
        raise FileNotFoundError(2, "No such file or directory", str(started_node.spool.spool_dir))

    monkeypatch.setattr(retention, "run_once", run_once)
    with caplog.at_level(logging.INFO):
        retention.run_safely()
    assert not [r for r in caplog.records if r.exc_info]
    assert any("retention paused" in r.getMessage() for r in caplog.records)
