"""break47b #7: `dicomnode status` after an upgrade: a process of an older build known to have stopped (ENDED, GONE)
is named as not running and draws no "stop all but one build" WARNING; a GONE row says that this listing removed
it, not that it is no longer listed."""
from __future__ import annotations

import subprocess
import sys
import time

from dicomnode import __version__, build_id
from dicomnode.cli import main
from dicomnode.state import SCHEMA_VERSION, StateDB
from tests import state_backends
from tests.node import test_status_retry
from tests.node.test_storage_safety import set_columns

# the fixtures of both state backends, as the other status tests use them
node_state, pg_server, state_location = (test_status_retry.node_state, state_backends.pg_server,
                                         state_backends.state_location)

OLD_BUILD = {"version": __version__, "build": "77e56deb3f10", "schema": SCHEMA_VERSION - 1}
THIS_BUILD = {"version": __version__, "build": build_id(), "schema": SCHEMA_VERSION}
WARNING = "stop all but one build"


def _process(db: StateDB, name: str, detail: dict, pid: int | None = None) -> None:
    other = StateDB(db.url, process_id=name, heartbeat_seconds=20)
    other.heartbeat(["receive", "dispatch"], time.time(), detail)
    other.close()
    if pid is not None:
        set_columns(db, "UPDATE nodes SET pid=:pid WHERE node_id=:id", pid=pid, id=name)


def _ended_pid() -> int:
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()  # kill -9: a pid of this machine that no longer runs
    return ended.pid


def test_a_stopped_process_of_an_older_build_draws_no_warning_to_stop_it(node_state, capsys):
    db, config = node_state
    pid = _ended_pid()
    _process(db, f"vm:{pid}", OLD_BUILD, pid)
    _process(db, "vm:new", THIS_BUILD)  # this test's own pid: running
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert f"NOT this command's build: vm:{pid} (ENDED, not running)" in out
    assert WARNING not in out
    _process(db, "vm:old-live", OLD_BUILD)  # a live process of the older build: the warning stands
    assert main(["status", "--config", str(config)]) == 0
    assert WARNING in capsys.readouterr().out


def test_a_gone_process_is_said_to_be_removed_by_this_listing(node_state, capsys):
    db, config = node_state
    _process(db, "otherhost:4242", OLD_BUILD)
    set_columns(db, "UPDATE nodes SET host='otherhost', pid=4242, last_seen=:t", t=time.time() - 1000)
    _process(db, "vm:new", THIS_BUILD)
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("otherhost:4242"))
    assert line.split()[-2] == "GONE"
    assert "listed this once: this status removed its heartbeat row" in out and "no longer listed" not in out
    assert "otherhost:4242 (GONE, not running)" in out and WARNING not in out
    assert main(["status", "--config", str(config)]) == 0
    assert "otherhost:4242" not in capsys.readouterr().out
