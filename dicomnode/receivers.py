"""The node's extra receiving processes: `[node] receive_processes` > 1.

One Python process receives on about one core (the interpreter lock), so concurrent associations from several
scanners or a PACS pushing on parallel associations do not use a multi-core machine. With `receive_processes = N`
`dicomnode serve` starts N - 1 helper processes (`serve --roles receive --receive-helper`, same config) that listen
on the same port with SO_REUSEPORT; Linux hands each new association to one of the listening processes. Every
process writes the same spool and state database, exactly as separate receivers of a scale-out node do (see
:mod:`dicomnode.roles`), so completion, analysis and delivery see their instances like their own.

The serving process watches its helpers: one that exits while the node runs is logged and started again (after
a pause that grows to `MAX_RESTART_DELAY` if it keeps failing); SIGHUP is passed on; on stop the helpers get
SIGTERM, finish the stores in flight (each helper's own stop does) and are waited for. A helper whose serving
process is gone stops by itself (`parent_alive`).
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger("dicomnode.receivers")

MAX_RESTART_DELAY = 30.0
STOP_TIMEOUT = 40.0
#: a helper that ran this long before it exited is restarted at once, as after its first failure
HEALTHY_SECONDS = 60.0


def helper_command(config_path: str | os.PathLike | None) -> list[str]:
    """The command line of one helper: a receive-only `serve` of the same config."""
    command = [sys.executable, "-m", "dicomnode", "serve", "--roles", "receive", "--receive-helper"]
    if config_path:
        command += ["--config", str(Path(config_path).resolve())]
    return command


class ReceiveHelpers:
    """Starts, watches, signals and stops `count` helper receiving processes."""

    def __init__(self, count: int, config_path: str | os.PathLike | None, command: list[str] | None = None):
        self.count = count
        self.command = command or helper_command(config_path)
        self._processes: list[subprocess.Popen | None] = [None] * count
        self._started_at = [0.0] * count
        self._failures = [0] * count
        self._next_start = [0.0] * count
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self.restarts = 0

    def start(self) -> None:
        for index in range(self.count):
            self._start(index)
        self._watcher = threading.Thread(target=self._watch, name="receive-helpers", daemon=True)
        self._watcher.start()

    def _start(self, index: int) -> None:
        # systemd's watchdog and readiness are the serving process's (NotifyAccess=main): helpers do not notify
        environment = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, env=environment)
        self._processes[index] = process
        self._started_at[index] = time.monotonic()
        log.info("receiving helper %d started (pid %d)", index + 1, process.pid)

    def pids(self) -> list[int]:
        with self._lock:
            return [p.pid for p in self._processes if p is not None and p.poll() is None]

    def _watch(self) -> None:
        while not self._stopping.wait(1.0):
            with self._lock:
                if self._stopping.is_set():
                    return
                for index, process in enumerate(self._processes):
                    if process is None or process.poll() is None:
                        continue
                    now = time.monotonic()
                    if self._next_start[index] == 0.0:
                        if now - self._started_at[index] >= HEALTHY_SECONDS:
                            self._failures[index] = 0  # it had been running fine: no back-off from old failures
                        self._failures[index] += 1
                        delay = min(MAX_RESTART_DELAY, 2.0 ** (self._failures[index] - 1))
                        self._next_start[index] = now + delay
                        log.warning("receiving helper %d (pid %d) exited with status %s; starting it again in %.0f s",
                                    index + 1, process.pid, process.returncode, delay)
                    if now >= self._next_start[index]:
                        self._next_start[index] = 0.0
                        self.restarts += 1
                        self._start(index)

    def reload(self) -> None:
        """Pass SIGHUP on (each helper reloads the same config file itself)."""
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGHUP)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        self._stopping.set()
        with self._lock:
            processes = [p for p in self._processes if p is not None]
        for process in processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + timeout
        for process in processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("receiving helper pid %d did not stop in %.0f s; killing it", process.pid, timeout)
                process.kill()
                process.wait()
        if self._watcher is not None:
            self._watcher.join(timeout=5)


def parent_alive(parent_pid: int) -> bool:
    """A helper's check that the serving process that started it still runs (else it is re-parented)."""
    return os.getppid() == parent_pid
