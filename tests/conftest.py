"""Shared test fixtures: where the real data lives, and real peers that skip (or fail under CI) when missing."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.peers import find_program

REPO = Path(__file__).resolve().parents[1]
REQUIRE_PEERS = os.environ.get("DICOMNODE_REQUIRE_PEERS") == "1"

PEER_COMMANDS = {
    "storescu": "storescu",
    "storescp": "storescp",
    "echoscu": "echoscu",
    "orthanc": "Orthanc",
    "dciodvfy": "dciodvfy",
    "pixelmed": "java",
    "unshare": "unshare",
}


def shared_datasets_dir() -> Path | None:
    """../shared/datasets beside the checkout, or $DICOMNODE_SHARED_DATASETS."""
    candidates = [os.environ.get("DICOMNODE_SHARED_DATASETS"), REPO.parent / "shared" / "datasets"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def datasets() -> Path:
    found = shared_datasets_dir()
    if found is None:
        if REQUIRE_PEERS:
            pytest.fail("../shared/datasets is missing (CI must run with shared/ beside the checkout)")
        pytest.skip("../shared/datasets not found; set DICOMNODE_SHARED_DATASETS")
    return found


def require_peer(name: str) -> str:
    """Path of a real peer program; skip when missing, or fail when DICOMNODE_REQUIRE_PEERS=1."""
    command = PEER_COMMANDS.get(name, name)
    found = find_program(command)
    if name == "pixelmed" and found:
        jar = Path("/usr/share/java/pixelmed.jar")
        found = str(jar) if jar.is_file() else None
    if found is None:
        message = f"real peer {name!r} ({command}) is not installed (Debian: orthanc dcmtk dicom3tools pixelmed-apps)"
        if REQUIRE_PEERS:
            pytest.fail(message + " but DICOMNODE_REQUIRE_PEERS=1")
        pytest.skip(message)
    return found


def require_postgres() -> None:
    """Skip (fail under DICOMNODE_REQUIRE_PEERS=1) where PostgreSQL's server binaries are missing."""
    from tests.pgserver import missing_reason

    reason = missing_reason()
    if reason is not None:
        if REQUIRE_PEERS:
            pytest.fail(reason + " but DICOMNODE_REQUIRE_PEERS=1")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_session_server():
    """One throw-away PostgreSQL for the whole session (tests/state_backends.py hands it out as `pg_server`)."""
    from tests.pgserver import PostgresServer

    require_postgres()
    # the connections every module's tests leave to the garbage collector share this one server now
    server = PostgresServer().start(max_connections=600)
    yield server
    server.stop()


def can_unshare_network() -> bool:
    if shutil.which("unshare") is None:
        return False
    result = subprocess.run(["unshare", "--net", "--map-root-user", "true"], capture_output=True)
    if result.returncode == 0:
        return True
    return subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.05):
    """Poll `predicate` until it returns something truthy (returned) or `timeout` seconds pass (its last value)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


@pytest.fixture(autouse=True)
def _root_logging_restored():
    """Each test leaves the root logger as it found it: `dicomnode.observe.configure_logging` (CLI tests run in this
    process) replaces the root handlers, and their redaction filters rewrite every record that passes them (UIDs to
    log ids), also for the later tests' caplog, which reads the same record after them."""
    import logging

    def ours(handler) -> bool:  # pytest's own capture handlers come and go with each phase: left to pytest
        return not type(handler).__module__.startswith("_pytest")

    root = logging.getLogger()
    handlers, level = [handler for handler in root.handlers if ours(handler)], root.level
    yield
    for handler in [handler for handler in root.handlers if ours(handler) and handler not in handlers]:
        root.removeHandler(handler)
        try:
            handler.close()
        except Exception:  # noqa: BLE001 - a handler of a test that is over
            pass
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


#: the libraries whose logger levels commands run in-process set (cli._quiet_library_logs, observe.configure_logging)
LIBRARY_LOGGERS = ("pydicom", "pydicom.pixels.decoders.base", "pynetdicom", "highdicom", "apscheduler")


@pytest.fixture(autouse=True)
def _library_log_levels_restored():
    """A command run in-process (cli.main) leaves e.g. the pydicom logger at CRITICAL for the rest of the process:
    restored after each test, so that a later test in the same (xdist worker) process sees the library's lines."""
    import logging

    levels = {name: logging.getLogger(name).level for name in LIBRARY_LOGGERS}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
