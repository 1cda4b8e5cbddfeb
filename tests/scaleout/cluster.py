"""Several `dicomnode serve --roles …` processes sharing one spool folder and one state database (tests, bench)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from dicomnode.state import StateDB
from tests.node.nodeproc import ENV, NodeProcess


def cluster_config(storage: Path, state_url: str | None, port: int, destinations: dict[str, tuple[str, int]],
                   pipelines=("cine",), quiet_seconds: float = 3.0, lease_seconds: float = 4.0,
                   heartbeat_seconds: float = 1.0, poll_seconds: float = 0.3, workers: int = 1,
                   max_associations: int = 64) -> str:
    """The TOML of one process: every process names the same storage folder and state URL."""
    destination_toml = "".join(
        f'[[destinations]]\nname = "{name.lower()}"\nae_title = "{name}"\nhost = "{host}"\nport = {port_}\n'
        for name, (host, port_) in destinations.items())
    state = f'url = "{state_url}"\n' if state_url else ""
    return (
        f'[node]\nae_title = "DICOMNODE"\nhost = "127.0.0.1"\nport = {port}\nstorage_dir = "{storage}"\n'
        f'allowed_calling_aes = ["SCANNER1"]\nmin_free_space_mb = 10\nmax_associations = {max_associations}\n'
        f'[studies]\nquiet_seconds = {quiet_seconds}\n'
        f'{destination_toml}'
        f'[[routes]]\nname = "all"\npipelines = {json.dumps(list(pipelines))}\n'
        f'destinations = {json.dumps([n.lower() for n in destinations])}\n'
        f'[dispatch]\ninitial_backoff_seconds = 0.5\nmax_backoff_seconds = 2\nmax_attempts = 50\n'
        f'[analysis]\nworkers = {workers}\n'
        f'[state]\n{state}lease_seconds = {lease_seconds}\nheartbeat_seconds = {heartbeat_seconds}\n'
        f'poll_seconds = {poll_seconds}\n'
        f'[logging]\nlevel = "INFO"\n'
    )


class RoleProcess(NodeProcess):
    """One `dicomnode serve --roles ROLES` child with its own config and log (stop, kill9, log: as NodeProcess)."""

    def __init__(self, workdir: Path, name: str, roles: str, config_text: str, port: int | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.roles = roles
        self.port = port
        self.config_path = self.workdir / f"{name}.toml"
        self.config_path.write_text(config_text)
        self.log_path = self.workdir / f"{name}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> "RoleProcess":
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "dicomnode.cli", "serve", "--config", str(self.config_path),
                 *(["--roles", self.roles] if self.roles else [])],
                stdout=log, stderr=subprocess.STDOUT, env=ENV, cwd=self.workdir)
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def state_upgrade(config_path: Path) -> subprocess.CompletedProcess:
    """`dicomnode state upgrade --config FILE`: the schema is created once, by the command, for every process."""
    return subprocess.run([sys.executable, "-m", "dicomnode.cli", "state", "upgrade", "--config", str(config_path)],
                          capture_output=True, text=True, env=ENV, timeout=120)


def start_cluster(workdir: Path, config: Callable[[int], str], receiver_ports: list[int], workers: int,
                  receiver_roles: str = "receive,complete,dispatch") -> tuple[list[RoleProcess], list[RoleProcess]]:
    """Start one process per receiver port (`receiver_roles`) and `workers` `analyse` processes;
    `config(port)` gives each its TOML. Returns (receivers, workers), started, not yet awaited."""
    receivers = [RoleProcess(workdir, f"receiver{i}", receiver_roles, config(port), port)
                 for i, port in enumerate(receiver_ports)]
    analysers = [RoleProcess(workdir, f"worker{i}", "analyse", config(0)) for i in range(workers)]
    for process in receivers + analysers:
        process.start()
    return receivers, analysers


def wait_for_heartbeats(db: StateDB, processes: list[RoleProcess], timeout: float = 300.0) -> None:
    """Until every process has a heartbeat row (after its models are warm); RuntimeError if one exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = {row["pid"] for row in db.nodes()}
        if all(p.pid in pids for p in processes):
            return
        for process in processes:
            if not process.alive():
                raise RuntimeError(f"{process.name} exited with {process.process.returncode}:\n{process.log()[-3000:]}")
        time.sleep(0.2)
    raise TimeoutError(f"no heartbeat from {[p.name for p in processes if p.pid not in pids]} after {timeout} s")


def wait_states(db: StateDB, states: tuple[str, ...], count: int, timeout: float,
                processes: list[RoleProcess] = ()) -> list:
    deadline = time.monotonic() + timeout
    studies = []
    while time.monotonic() < deadline:
        studies = db.studies()
        if len(studies) >= count and all(s["state"] in states for s in studies):
            return studies
        time.sleep(0.2)
    logs = "\n".join(f"--- {p.name}\n{p.log()[-2500:]}" for p in processes)
    raise TimeoutError(f"studies not {states} after {timeout} s: {[(s['state'], s['reason']) for s in studies]}\n{logs}")
