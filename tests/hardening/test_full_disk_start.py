"""A node killed (kill -9) on a full disk starts again degraded, not in a restart loop (break44c #4).

Before: `serve` exited 1 ("the node's state database cannot be written: database or disk is full"), so under
systemd scanners met "connection refused" instead of 0xA700, /healthz was gone and nothing came back by itself.
Now the process stays up: C-STORE refused with 0xA700, C-ECHO answered, /healthz 503 saying why, one ERROR line;
once space is back it starts by itself (the receiver stores again, /healthz ready), and with the emergency purge on
it deletes its space reserve to start at once. Real tmpfs (root only), real `dicomnode serve` processes."""
from __future__ import annotations

import socket
import sqlite3
import time
from pathlib import Path

import pytest

from dicomnode.retention import RESERVE_NAME
from tests.hardening.hardening_support import echo_status, http_get, store_one, synthetic_mr
from tests.hardening.test_full_disk import fill, small_disk  # noqa: F401 (small_disk: fixture)
from tests.node.nodeproc import NodeProcess, wait_port
from tests.peers import free_port


def node_on(disk, tmp_path, emergency_mb: int) -> tuple[NodeProcess, int]:
    metrics = free_port()
    node = NodeProcess(disk, free_port(), pipelines=(), quiet_seconds=3600,
                       extra=f"[observability]\nmetrics_enabled = true\nmetrics_port = {metrics}\n"
                             f"[retention]\nemergency_free_space_mb = {emergency_mb}\n")
    node.config_path.write_text(node.config_text.replace("min_free_space_mb = 10", "min_free_space_mb = 0"))
    node.log_path = tmp_path / "node.log"  # the log is not on the full disk
    return node, metrics


def killed_on_a_full_disk(node: NodeProcess) -> Path:
    """One instance stored, the WAL checkpointed (every later write needs a new block), kill -9; returns where the
    space reserve is (the caller fills the disk)."""
    node.start()
    assert store_one(node.port, synthetic_mr()).Status == 0
    with sqlite3.connect(node.storage / "state.sqlite3", isolation_level=None) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    node.kill9()
    reserve = node.storage / RESERVE_NAME
    return reserve


def healthz(port: int) -> tuple[int, str]:
    try:
        return http_get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    except OSError as exc:  # an HTTPError (503) carries its code: http_get returns it; anything else is no answer
        return 0, str(exc)


def wait_until(check, seconds: float = 60.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("not reached in time")


def test_a_node_killed_on_a_full_disk_serves_degraded_and_starts_once_space_is_back(small_disk, tmp_path):
    node, metrics = node_on(small_disk, tmp_path, emergency_mb=0)
    killed_on_a_full_disk(node)
    filler = fill(small_disk)
    node.start()  # listening: the degraded receiver
    try:
        time.sleep(1.0)
        assert node.process.poll() is None, node.log()[-3000:]
        assert echo_status(node.port) == 0
        refused = store_one(node.port, synthetic_mr())
        assert refused.Status == 0xA700 and "state database cannot be written" in refused.ErrorComment
        code, text = healthz(metrics)
        assert code == 503 and "not started: the state database cannot be written" in text, (code, text)
        log = node.log()
        assert log.count("cannot start: the state database cannot be written") == 1, log[-3000:]
        assert "Serving degraded until it can" in log and "Traceback" not in log

        filler.unlink()  # space is back: it starts by itself
        wait_until(lambda: "started after serving degraded" in node.log(), 30)
        wait_port(node.port, 30, node.process)
        assert wait_until(lambda: store_one(node.port, synthetic_mr()).Status == 0, 30)
        code, text = wait_until(lambda: (lambda r: r if r[0] == 200 else None)(healthz(metrics)), 30)
        assert text.startswith("ready")
        assert len(node.studies()) == 2  # the study stored before the kill, and the one after
    finally:
        assert node.stop() == 0, node.log()[-3000:]


def test_with_the_emergency_purge_on_its_space_reserve_lets_the_node_start_at_once(small_disk, tmp_path):
    node, metrics = node_on(small_disk, tmp_path, emergency_mb=1)
    reserve = killed_on_a_full_disk(node)
    assert reserve.is_file()  # made by the first run's retention job
    fill(small_disk)
    node.start()
    try:
        wait_until(lambda: "listening as" in node.log(), 30)
        log = node.log()
        assert "deleted the space reserve" in log and "Serving degraded" not in log, log[-3000:]
        assert echo_status(node.port) == 0
    finally:
        assert node.stop() == 0, node.log()[-3000:]


def test_a_busy_port_still_stops_the_start(tmp_path):
    """Only a state that cannot be written is waited out: any other refusal exits as before."""
    node = NodeProcess(tmp_path, free_port(), pipelines=(), quiet_seconds=3600)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", node.port))
        busy.listen()
        try:
            node.start(timeout=5)
        except (RuntimeError, TimeoutError):
            pass
        assert node.process.wait(60) == 1
    assert "Serving degraded" not in node.log()


class _NoAnalysis:
    def warm_up(self, names):
        return {}


def _scale_out_start_failing(tmp_path, monkeypatch, fail: str) -> list[str]:
    """review44 #1: an `analyse,complete` process whose start fails (`fail`: its first state write, or the step after
    its worker threads were spawned); returns the threads of that start still alive after cli._start_roles raised."""
    import threading

    import sqlalchemy.exc

    from dicomnode import cli
    from dicomnode.config import Config
    from dicomnode.node import Node
    from dicomnode.roles import RoleRunner
    from dicomnode.state import StateDB
    config = Config.model_validate({"node": {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 0,
                                             "allowed_calling_aes": ["*"]}, "state": {"poll_seconds": 0.2}})
    Node(config).db.close()  # the schema

    def full(*args, **kwargs):
        raise sqlalchemy.exc.OperationalError("INSERT", {}, Exception("database or disk is full"))
    if fail == "heartbeat":
        monkeypatch.setattr(StateDB, "heartbeat", full)
    else:
        monkeypatch.setattr(RoleRunner, "beat", full)
    monkeypatch.setattr(Node, "__init__", lambda self, c, analyser=None, roles=None, _i=Node.__init__:
                        _i(self, c, _NoAnalysis(), roles=roles))
    before = set(threading.enumerate())  # other tests' nodes may still be ending theirs
    with pytest.raises(sqlalchemy.exc.OperationalError):
        cli._start_roles(config, ("analyse", "complete"))
    time.sleep(0.5)
    return [t.name for t in set(threading.enumerate()) - before
            if t.name.startswith("analysis-") or t.name == "completion"]


@pytest.mark.parametrize("fail", ["heartbeat", "after the threads"])
def test_a_failed_scale_out_start_leaves_no_worker_thread_running(tmp_path, monkeypatch, fail):
    assert _scale_out_start_failing(tmp_path, monkeypatch, fail) == []
