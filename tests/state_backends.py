"""The state tests run against both backends: `state_location` is a SQLite file, then a fresh PostgreSQL database.

Import the fixtures into a test module (`from tests.state_backends import pg_server, state_location  # noqa: F401`).
PostgreSQL is started once per session (tests/pgserver.py, `pg_session_server` in tests/conftest.py): a session-scoped
fixture imported into a module is that module's own, so `pg_server` here only hands out the one server of the
session (each importing module used to start a PostgreSQL of its own and keep it until the session ended). Without
its binaries the PostgreSQL variant skips, or fails when DICOMNODE_REQUIRE_PEERS=1 (CI installs the Debian
`postgresql` package).
"""
from __future__ import annotations

import pytest

from tests.conftest import require_postgres

__all__ = ["pg_server", "require_postgres", "state_location"]


@pytest.fixture(scope="session")
def pg_server(pg_session_server):
    """The session's PostgreSQL (tests/pgserver.PostgresServer); give each test its own `create_database()`."""
    return pg_session_server


@pytest.fixture(params=["sqlite", "postgresql"])
def state_location(request, tmp_path):
    """Where a test's StateDB lives: a SQLite path, or the URL of a new database on the session's PostgreSQL."""
    if request.param == "sqlite":
        return tmp_path / "state.sqlite3"
    return request.getfixturevalue("pg_server").create_database()
