"""The serving process's supervision of its receiving helpers (dicomnode.receivers), with stand-in commands."""
from __future__ import annotations

import sys
import time

from dicomnode import receivers
from dicomnode.receivers import ReceiveHelpers, helper_command
from tests.conftest import wait_until


def test_helper_command_is_a_receive_only_serve_of_the_same_config(tmp_path):
    config = tmp_path / "node.toml"
    command = helper_command(config)
    assert command[:4] == [sys.executable, "-m", "dicomnode", "serve"]
    assert command[command.index("--roles") + 1] == "receive" and "--receive-helper" in command
    assert command[command.index("--config") + 1] == str(config.resolve())
    assert "--config" not in helper_command(None)  # the embedded defaults, as the serving process


def test_a_helper_that_keeps_failing_is_restarted_with_growing_pauses(caplog):
    helpers = ReceiveHelpers(1, None, command=[sys.executable, "-c", "raise SystemExit(3)"])
    helpers.start()
    try:
        assert wait_until(lambda: helpers.restarts >= 2, timeout=15), "not restarted"
        pauses = [r.getMessage() for r in caplog.records if "starting it again" in r.getMessage()]
        assert "exited with status 3" in pauses[0]
        assert "again in 1 s" in pauses[0] and "again in 2 s" in pauses[1]  # 1, 2, 4 ... up to MAX_RESTART_DELAY
    finally:
        helpers.stop(timeout=5)


def test_a_helper_that_ran_long_restarts_without_the_old_back_off(monkeypatch, caplog):
    monkeypatch.setattr(receivers, "HEALTHY_SECONDS", 0.3)
    helpers = ReceiveHelpers(1, None, command=[sys.executable, "-c", "import time; time.sleep(0.6)"])
    helpers._failures[0] = 5  # earlier failures, long ago
    helpers.start()
    try:
        assert wait_until(lambda: helpers.restarts >= 1)
        assert "again in 1 s" in next(r.getMessage() for r in caplog.records if "starting it again" in r.getMessage())
    finally:
        helpers.stop(timeout=5)


def test_stop_terminates_running_helpers_and_kills_those_that_ignore_it():
    stubborn = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"]
    helpers = ReceiveHelpers(2, None, command=stubborn)
    helpers.start()
    assert wait_until(lambda: len(helpers.pids()) == 2)
    processes = list(helpers._processes)
    time.sleep(0.3)  # the interpreter has installed its SIGTERM handler
    helpers.stop(timeout=1)
    assert all(p.poll() is not None for p in processes)  # SIGTERM ignored: killed after the timeout
    assert helpers.restarts == 0  # stopping is not a failure to restart from
