"""`[node] receive_processes = 2`: two processes accept associations on one port (SO_REUSEPORT), one study.

A real `dicomnode serve` with DCMTK storescu as 16 concurrent scanners' associations: every instance is indexed
once whichever process took it, both processes took some, the study completes once through the database; a
helper killed -9 is started again and the port keeps answering; stopping the node stops its helpers.
"""
from __future__ import annotations

import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import wait_until
from tests.hardening.hardening_support import save, synthetic_mr
from tests.node.nodeproc import NodeProcess, storescu
from tests.peers import free_port


def _processes(node: NodeProcess) -> list[dict]:
    return [dict(row, detail=json.loads(row["detail_json"] or "{}"))
            for row in node.db_rows("SELECT * FROM nodes ORDER BY started_at")]

def _wait(predicate, timeout: float = 60.0):
    return wait_until(predicate, timeout, interval=0.2)

def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) is not alive
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False

@pytest.fixture
def node(tmp_path):
    node = NodeProcess(tmp_path / "node", free_port(), quiet_seconds=3, pipelines=(),
                       extra="[state]\nheartbeat_seconds = 0.5\npoll_seconds = 0.5\n")
    node.config_path.write_text(node.config_text.replace("min_free_space_mb = 10\n",
                                                         "min_free_space_mb = 10\nreceive_processes = 2\n"))
    node.start()
    yield node
    node.stop()

def test_two_processes_share_the_port_and_the_study(node, tmp_path):
    study = "1.2.826.0.1.3680043.8.498.4242"
    files = [save(synthetic_mr(study_uid=study, series_uid=study + ".1", size=32), tmp_path / "in" / f"{i}.dcm")
             for i in range(64)]
    assert _wait(lambda: len(_processes(node)) == 2), node.log()[-2000:]
    with ThreadPoolExecutor(16) as pool:  # 16 associations at once: each process takes some (2^-15 chance not)
        done = list(pool.map(lambda k: storescu(node.port, files[k::16]), range(16)))
    assert all(d.returncode == 0 for d in done), [d.stderr for d in done if d.returncode]
    indexed = node.db_rows("SELECT sop_instance_uid FROM instances")
    assert len(indexed) == 64 and len({r["sop_instance_uid"] for r in indexed}) == 64

    def received():
        counts = [p["detail"].get("received", 0) for p in _processes(node)]
        return counts if sum(counts) == 64 else None
    counts = _wait(received)
    assert counts and len(counts) == 2 and min(counts) > 0, counts
    roles = sorted(p["roles"] for p in _processes(node))
    assert roles == ["receive", "receive,complete,analyse,dispatch"]
    studies = node.wait_states(("done", "failed"), timeout=120)
    assert len(studies) == 1 and studies[0]["generation"] == 0

def test_a_killed_helper_is_started_again_and_stopping_stops_it(node, tmp_path):
    helpers = _wait(lambda: [p for p in _processes(node) if p["roles"] == "receive"])
    assert helpers, node.log()[-2000:]
    first = helpers[0]["pid"]
    os.kill(first, signal.SIGKILL)
    replaced = _wait(lambda: [p for p in _processes(node) if p["roles"] == "receive" and p["pid"] != first
                              and _alive(p["pid"])], timeout=60)
    assert replaced, node.log()[-3000:]
    assert "exited with status -9; starting it again" in node.log()
    files = [save(synthetic_mr(size=32), tmp_path / "in" / f"{i}.dcm") for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        assert all(d.returncode == 0 for d in pool.map(lambda f: storescu(node.port, [f]), files))
    second = replaced[0]["pid"]
    assert node.stop() == 0
    assert _wait(lambda: not _alive(second), timeout=30), "the helper outlived the node"
