"""The state tests run against both backends: `state_location` is a SQLite file, then a fresh PostgreSQL database.

Import the fixtures into a test module (`from tests.state_backends import pg_server, state_location  # noqa: F401`).
PostgreSQL is started once per session (tests/pgserver.py); without its binaries the PostgreSQL variant skips, or
fails when DICOMNODE_REQUIRE_PEERS=1 (CI installs the Debian `postgresql` package).
"""
from __future__ import annotations

import pytest

from tests.conftest import REQUIRE_PEERS
from tests.pgserver import PostgresServer, missing_reason


def require_postgres() -> None:
    reason = missing_reason()
    if reason is not None:
        if REQUIRE_PEERS:
            pytest.fail(reason + " but DICOMNODE_REQUIRE_PEERS=1")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_server():
    require_postgres()
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def state_location(request, tmp_path):
    """Where a test's StateDB lives: a SQLite path, or the URL of a new database on the session's PostgreSQL."""
    if request.param == "sqlite":
        return tmp_path / "state.sqlite3"
    return request.getfixturevalue("pg_server").create_database()
