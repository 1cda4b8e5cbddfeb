"""`dicomnode serve` as a real child process for tests: config written, port awaited, kill -9 and restart."""
from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from tests.conftest import require_peer

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, TCP_NODELAY="1", PYTHONUNBUFFERED="1")


def wait_port(port: int, timeout: float = 120.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


class NodeProcess:
    def __init__(self, workdir: Path, port: int, destinations: dict[str, tuple[str, int]] | None = None,
                 quiet_seconds: float = 2.0, allowed=("SCANNER1",), extra: str = "", pipelines=("lge", "cine"),
                 backoff: float = 0.5, max_attempts: int = 50):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.storage = self.workdir / "store"
        self.config_path = self.workdir / "node.toml"
        self.log_path = self.workdir / "node.log"
        self.process: subprocess.Popen | None = None
        destination_toml = "".join(
            f'[[destinations]]\nname = "{name.lower()}"\nae_title = "{name}"\nhost = "{host}"\nport = {port_}\n'
            for name, (host, port_) in (destinations or {}).items()
        )
        names = json.dumps([name.lower() for name in (destinations or {})])
        self.config_text = (
            f'[node]\nae_title = "DICOMNODE"\nhost = "127.0.0.1"\nport = {port}\nstorage_dir = "{self.storage}"\n'
            f'allowed_calling_aes = {json.dumps(list(allowed))}\nmin_free_space_mb = 10\n'
            f'[studies]\nquiet_seconds = {quiet_seconds}\n'
            f'{destination_toml}'
            f'[[routes]]\nname = "all"\npipelines = {json.dumps(list(pipelines))}\ndestinations = {names}\n'
            f'[dispatch]\ninitial_backoff_seconds = {backoff}\nmax_backoff_seconds = 2\nmax_attempts = {max_attempts}\n'
            f'[logging]\nlevel = "INFO"\n{extra}'
        )
        self.config_path.write_text(self.config_text)

    def start(self, timeout: float = 180.0) -> "NodeProcess":
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dicomnode.cli", "serve", "--config", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, env=ENV, cwd=self.workdir,
        )
        log.close()
        wait_port(self.port, timeout, self.process)
        return self

    def kill9(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def stop(self, timeout: float = 90.0) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def db_rows(self, sql: str, params: tuple = ()) -> list[dict]:
        path = self.storage / "state.sqlite3"
        if not path.exists():
            return []
        with sqlite3.connect(path, timeout=30) as connection:
            connection.row_factory = sqlite3.Row
            return [dict(row) for row in connection.execute(sql, params)]

    def studies(self) -> list[dict]:
        return self.db_rows("SELECT * FROM studies ORDER BY first_received")

    def wait_states(self, states=("done",), count: int = 1, timeout: float = 300.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            studies = self.studies()
            if len(studies) >= count and all(s["state"] in states for s in studies):
                return studies
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"node exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"studies not {states} after {timeout} s: {[(s['state'], s['reason']) for s in self.studies()]}"
                           f"\n{self.log()[-3000:]}")

    def summary(self, study_uid: str) -> dict:
        rows = self.db_rows("SELECT summary_json FROM studies WHERE study_instance_uid=?", (study_uid,))
        return json.loads(rows[0]["summary_json"]) if rows and rows[0]["summary_json"] else {}


def storescu(port: int, files, calling="SCANNER1", called="DICOMNODE", extra=()) -> subprocess.CompletedProcess:
    return subprocess.run([require_peer("storescu"), "-aet", calling, "-aec", called, *extra, "127.0.0.1", str(port),
                           *map(str, files)], env=ENV, capture_output=True, text=True, timeout=600)
