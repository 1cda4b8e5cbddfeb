"""A throw-away PostgreSQL for tests and benchmarks: initdb in a temporary folder, Unix socket only, no TCP.

PostgreSQL refuses to run as root, so as root the server runs as `nobody` (runuser); otherwise as the current user.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

PG_BIN_CANDIDATES = [Path(p) for p in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)]


def pg_bin() -> Path | None:
    """The folder holding initdb/pg_ctl (Debian's /usr/lib/postgresql/<version>/bin, or on PATH); None: missing."""
    for folder in PG_BIN_CANDIDATES:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def missing_reason() -> str | None:
    if pg_bin() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser (util-linux): PostgreSQL cannot run as root"
    return None


class PostgresServer:
    """`start()` → `url(database)`; `create_database()` gives each test its own database; `stop()` removes all."""

    def __init__(self):
        self.bin = pg_bin()
        if self.bin is None:
            raise RuntimeError(missing_reason())
        # short path: a Unix socket path must stay under 108 bytes
        self.root = Path(tempfile.mkdtemp(prefix="dnpg.", dir="/tmp"))
        self.data = self.root / "data"
        self.user = "dicomnode"
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.root, "nobody")
        os.chmod(self.root, 0o755 if self.as_root else 0o700)

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bin / argv[0]), *argv[1:]]
        if self.as_root:
            command = ["runuser", "-u", "nobody", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check, timeout=120)

    def start(self, fsync: bool = False, max_connections: int = 200) -> "PostgresServer":
        """initdb + start; fsync off for tests (durability of the test database is not under test)."""
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", self.user, "-E", "UTF8", "--no-sync")
        options = (f"-c listen_addresses='' -k {self.root} -c max_connections={max_connections}"
                   f" -c fsync={'on' if fsync else 'off'} -c synchronous_commit={'on' if fsync else 'off'}")
        result = self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "server.log"), "-w",
                           "-t", "60", "start", check=False)
        if result.returncode != 0:
            log = (self.root / "server.log").read_text(errors="replace") if (self.root / "server.log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {result.stderr}\n{log[-2000:]}")
        return self

    def url(self, database: str = "postgres") -> str:
        """A `[state] url` for the database, over the Unix socket."""
        return f"postgresql://{self.user}@/{database}?host={self.root}"

    def create_database(self, name: str | None = None) -> str:
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(host=str(self.root), user=self.user, dbname="postgres", autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)
