"""Upgrading a PostgreSQL state in place (break44a F4, F7; break47b #8): `state upgrade` says, before it migrates,
that it keeps no copy (pg_dump first) and migrates only with --yes; `status` shows the state before it is upgraded,
read-only."""
from __future__ import annotations

import json

from dicomnode.cli import main
from dicomnode.state import SCHEMA_VERSION, StateDB, schema_version
from tests.node.test_retry_all import REFUSED, dead_letters
from tests.scaleout.test_state_backends import _pg_config
from tests.state_backends import pg_server  # noqa: F401 (fixture)

OLDER = SCHEMA_VERSION - 1


def _older_pg_state(url: str) -> None:
    db = StateDB(url, upgrade=True)
    dead_letters(db, "1.2.3", [("pacs", REFUSED)])
    with db.engine.begin() as connection:
        connection.exec_driver_sql(f"UPDATE meta SET value='{OLDER}' WHERE key='schema_version'")
    db.close()


def _schema(url: str) -> int | None:
    db = StateDB(url, upgrade=False, check=False)
    try:
        return schema_version(db.engine)
    finally:
        db.close()


def test_status_shows_a_postgresql_state_not_yet_upgraded(pg_server, tmp_path, capsys):
    url = pg_server.create_database()
    _older_pg_state(url)
    config = str(_pg_config(tmp_path, url))
    assert main(["status", "--config", config]) == 0
    out = capsys.readouterr().out
    assert f"has schema version {OLDER}, NOT YET UPGRADED" in out and "1.2.3 " in out and REFUSED in out
    assert main(["status", "--json", "--config", config]) == 0
    assert json.loads(capsys.readouterr().out)["state_schema"] == {"version": OLDER, "needs_upgrade": True}
    assert _schema(url) == OLDER


def test_state_upgrade_of_postgresql_says_to_pg_dump_first(pg_server, tmp_path, capsys):
    url = pg_server.create_database()
    _older_pg_state(url)
    config = str(_pg_config(tmp_path, url))
    # break47b #8: said before the point of no return, and nothing migrated until the admin confirms with --yes
    assert main(["serve", "--config", config]) == 1
    err = capsys.readouterr().err
    assert "`pg_dump` it first, then `dicomnode state upgrade --yes`" in err and "nothing was changed" in err
    assert main(["state", "upgrade", "--config", config]) == 1
    captured = capsys.readouterr()
    assert "keeps no copy of it" in captured.err and "pg_dump -Fc" in captured.err and "--yes" in captured.err
    assert "Nothing was changed" in captured.err and "->" not in captured.out
    assert _schema(url) == OLDER
    assert main(["state", "upgrade", "--yes", "--config", config]) == 0
    captured = capsys.readouterr()
    assert "no copy of it is kept" in captured.err and "`pg_dump` of it taken before this" in captured.err
    assert f"schema version {OLDER} -> {SCHEMA_VERSION}" in captured.out and "kept at" not in captured.out
    assert _schema(url) == SCHEMA_VERSION
    assert main(["state", "upgrade", "--config", config]) == 0  # nothing to migrate: nothing to say
    assert "pg_dump" not in capsys.readouterr().err
