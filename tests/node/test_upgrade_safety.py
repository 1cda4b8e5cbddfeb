"""Upgrading in place (break44a): every build has an identity that changes with its code, shown by `--version`, the
heartbeat and `status`, and a process refuses to start beside another build (F3); a SQLite state of an older schema
is copied before it is migrated (F4); `status` shows a state not yet upgraded, read-only (F7)."""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dicomnode
from dicomnode import __version__, build_id
from dicomnode.cli import main
from dicomnode.config import load_config
from dicomnode.node import Node
from dicomnode.roles import ROLES, RoleRunner, nodes_report
from dicomnode.state import (SCHEMA_VERSION, InstanceRow, MixedVersionsError, StateDB, StateSchemaError, older_schema,
                             prepare_storage_dir)
from tests.node.test_ops_lifecycle import OLDER, _older_state, _schema
from tests.node.test_retry_all import REFUSED, dead_letters
from tests.peers import free_port
from tests.state_backends import pg_server, state_location  # noqa: F401 (fixtures)

PACKAGE = Path(dicomnode.__file__).resolve().parent


def _config(tmp_path: Path, store: Path) -> Path:
    config = tmp_path / "node.toml"
    config.write_text(f'[logging]\nlevel = "WARNING"\n[node]\nstorage_dir = "{store}"\nport = {free_port()}\n')
    return config


def _build_of(package_parent: Path) -> str:
    """build_id() as a fresh process computes it from the package under `package_parent`."""
    found = subprocess.run([sys.executable, "-c", "import dicomnode; print(dicomnode.__file__, dicomnode.build_id())"],
                           env={**os.environ, "PYTHONPATH": str(package_parent)}, cwd=package_parent,
                           capture_output=True, text=True,
                           timeout=120, check=True).stdout.split()
    assert Path(found[0]).resolve().is_relative_to(package_parent.resolve())
    return found[1]


# --- F3: a build identity that changes with the code -------------------------------------------------------------


def test_every_process_of_the_same_files_has_the_same_build_and_a_changed_file_another(tmp_path):
    assert len(build_id()) == dicomnode.BUILD_ID_DIGITS and int(build_id(), 16) >= 0
    assert _build_of(PACKAGE.parent) == build_id()  # another process of this checkout
    for name in ("copy", "changed"):  # an install elsewhere (a wheel, another clone) of the same files
        shutil.copytree(PACKAGE, tmp_path / name / "dicomnode", ignore=shutil.ignore_patterns("__pycache__"))
    assert _build_of(tmp_path / "copy") == build_id()
    with open(tmp_path / "changed" / "dicomnode" / "dispatch.py", "a") as changed:
        changed.write("\n# a later commit\n")
    assert _build_of(tmp_path / "changed") != build_id()


def test_version_names_the_build(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert f"dicomnode {__version__} build {build_id()}" in capsys.readouterr().out


def test_the_heartbeat_and_status_name_the_build(tmp_path, capsys):
    config = _config(tmp_path, prepare_storage_dir(tmp_path / "store"))
    node = Node(load_config(str(config)), roles=ROLES)
    try:
        RoleRunner(node, ROLES).beat()
        [row] = nodes_report(node.db)
        assert row["detail"]["build"] == build_id() and row["detail"]["version"] == __version__
        assert main(["status", "--config", str(config)]) == 0
        out = capsys.readouterr().out
        assert f"dicomnode {__version__} build {build_id()} schema {SCHEMA_VERSION}, the same as this command's" in out
        assert main(["status", "--json", "--config", str(config)]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["dicomnode"] == {"version": __version__, "build": build_id(), "schema": SCHEMA_VERSION}
        assert report["nodes"][0]["detail"]["build"] == build_id()
    finally:
        node.db.close()
        node.storage_lock.release()


def _live_process(store: Path, detail: dict) -> None:
    """A live heartbeat of a process on another machine, with `detail` (version, schema, build)."""
    db = StateDB(store / "state.sqlite3", upgrade=True, process_id="otherhost:4242")
    db.heartbeat(("analyse", "dispatch"), time.time(), detail)
    with db.engine.begin() as connection:
        connection.exec_driver_sql("UPDATE nodes SET host='otherhost', pid=4242")
    db.close()


@pytest.mark.parametrize("build, named", [("000000000000", "dicomnode 0.1.0 build 000000000000 schema"),
                                          (None, "an older build of dicomnode 0.1.0 schema")])
def test_a_process_refuses_to_start_beside_another_build_of_the_same_version(tmp_path, build, named):
    store = prepare_storage_dir(tmp_path / "store")
    detail = {"version": __version__, "schema": SCHEMA_VERSION}  # what every release said: 0.1.0
    if build is not None:
        detail["build"] = build
    _live_process(store, detail)
    with pytest.raises(MixedVersionsError) as refused:
        Node(load_config(str(_config(tmp_path, store))), roles=ROLES)
    message = str(refused.value)
    assert f"otherhost pid 4242 (roles analyse,dispatch, {named}" in message
    assert f"This is dicomnode {__version__} build {build_id()}" in message and "Nothing was changed" in message


def test_a_process_of_the_same_build_starts_beside_it(tmp_path):
    store = prepare_storage_dir(tmp_path / "store")
    _live_process(store, {"version": __version__, "schema": SCHEMA_VERSION, "build": build_id()})
    node = Node(load_config(str(_config(tmp_path, store))), roles=ROLES)
    node.db.close()
    node.storage_lock.release()


# --- F4: a copy of a SQLite state before its migration -------------------------------------------------------------


def _copies(path: Path, schema: int) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.schema{schema}-*"))


def test_serve_keeps_a_copy_of_an_older_sqlite_state_before_migrating_it(tmp_path, caplog):
    path, config = _older_state(tmp_path)
    with caplog.at_level(logging.INFO, logger="dicomnode.state"):
        node = Node(load_config(str(config)), roles=ROLES)  # nothing else has it open: serve migrates
    node.db.close()
    node.storage_lock.release()
    assert _schema(path) == SCHEMA_VERSION
    [copy] = _copies(path, OLDER)
    assert _schema(copy) == OLDER
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600  # patient data
    with sqlite3.connect(copy) as connection:
        assert connection.execute("SELECT study_key FROM studies").fetchall() == [("1.2.3",)]
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # one file, no -wal needed
    assert f"kept a copy of the schema {OLDER} state database" in caplog.text and str(copy) in caplog.text


def test_state_upgrade_keeps_a_copy_and_says_where_once(tmp_path, capsys):
    path, config = _older_state(tmp_path)
    assert main(["state", "upgrade", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    [copy] = _copies(path, OLDER)
    assert f"the schema {OLDER} state before this migration is kept at {copy}" in out and "README: Upgrading" in out
    assert _schema(copy) == OLDER and _schema(path) == SCHEMA_VERSION
    assert main(["state", "upgrade", "--config", str(config)]) == 0  # nothing to migrate: no second copy
    assert "kept at" not in capsys.readouterr().out
    assert len(list(path.parent.glob("state.sqlite3.schema*"))) == 1


def test_state_upgrade_no_backup_keeps_none(tmp_path, capsys):
    path, config = _older_state(tmp_path)
    assert main(["state", "upgrade", "--no-backup", "--config", str(config)]) == 0
    assert "--no-backup: no copy" in capsys.readouterr().out
    assert _schema(path) == SCHEMA_VERSION and not _copies(path, OLDER)


def test_a_copy_that_cannot_be_written_leaves_the_state_as_it_was(tmp_path, capsys, monkeypatch):
    path, config = _older_state(tmp_path)

    def disk_full(source, target):
        target.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("dicomnode.state._copy_sqlite", disk_full)
    assert main(["state", "upgrade", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "could not be written: [Errno 28] No space left on device" in out and "--no-backup" in out
    assert "nothing was changed" in out
    with pytest.raises(StateSchemaError, match="could not be written"):
        Node(load_config(str(config)), roles=ROLES)
    assert _schema(path) == OLDER and not _copies(path, OLDER)


# --- F7: status of a state not yet upgraded --------------------------------------------------------------------------


def _schema2_state(tmp_path: Path) -> tuple[Path, Path]:
    """A SQLite state as a schema-2 release left it (no purged_reports table, no instances.calling_host column):
    study 1.2.3 with a dead letter, study 1.2.4 received. (state file, config file)."""
    store = prepare_storage_dir(tmp_path / "store")
    db = StateDB(store / "state.sqlite3", upgrade=True)
    dead_letters(db, "1.2.3", [("pacs", REFUSED)])
    dead_letters(db, "1.2.4", [])
    with db.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE purged_reports")
        connection.exec_driver_sql("ALTER TABLE instances DROP COLUMN calling_host")
        connection.exec_driver_sql("UPDATE meta SET value='2' WHERE key='schema_version'")
    db.close()
    return store / "state.sqlite3", _config(tmp_path, store)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_status_shows_a_state_not_yet_upgraded_read_only(tmp_path, capsys):
    path, config = _schema2_state(tmp_path)
    before = _digest(path)
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("state ") and "has schema version 2, NOT YET UPGRADED" in out
    assert "nothing changed" in out and "dicomnode state upgrade" in out
    assert "1.2.3 " in out and "1.2.4 " in out and "failed sends" in out and REFUSED in out
    assert main(["status", "--json", "--state", "failed", "--config", str(config)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["state_schema"] == {"version": 2, "needs_upgrade": True}
    assert [study["study_key"] for study in report["studies"]] == ["1.2.3"]
    assert _schema(path) == 2 and _digest(path) == before and not list(path.parent.glob("state.sqlite3.schema*"))


def test_status_of_a_current_state_says_it_needs_no_upgrade(tmp_path, capsys):
    store = prepare_storage_dir(tmp_path / "store")
    StateDB(store / "state.sqlite3", upgrade=True).close()
    assert main(["status", "--json", "--config", str(_config(tmp_path, store))]) == 0
    assert json.loads(capsys.readouterr().out)["state_schema"] == {"version": SCHEMA_VERSION, "needs_upgrade": False}


def test_status_of_a_schema_1_state_says_so_and_changes_nothing(tmp_path, capsys):
    from tests.scaleout.test_state_backends import V1_SCHEMA

    store = prepare_storage_dir(tmp_path / "store")
    path = store / "state.sqlite3"
    with sqlite3.connect(path) as connection:
        connection.executescript(V1_SCHEMA)
        connection.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    assert main(["status", "--config", str(_config(tmp_path, store))]) == 1
    err = capsys.readouterr().err
    assert "has schema version 1, NOT YET UPGRADED" in err and "cannot be listed by this version" in err
    assert _schema(path) == 1 and not list(store.glob("state.sqlite3.schema*"))
    with sqlite3.connect(path) as connection:
        assert "claimed_by" not in {row[1] for row in connection.execute("PRAGMA table_info(studies)")}


def test_a_state_newer_than_the_code_is_still_refused(tmp_path, capsys):
    store = prepare_storage_dir(tmp_path / "store")
    db = StateDB(store / "state.sqlite3", upgrade=True)
    with db.engine.begin() as connection:
        connection.exec_driver_sql(f"UPDATE meta SET value='{SCHEMA_VERSION + 1}' WHERE key='schema_version'")
    assert older_schema(db.engine) is None
    db.close()
    assert main(["status", "--config", str(_config(tmp_path, store))]) == 1
    assert "upgraded by a newer dicomnode" in capsys.readouterr().err


def test_schema_7_adds_the_index_column_of_instances_whose_series_goes_on(tmp_path):
    """break47a #4: the index keeps net.scp.series_continues per instance (schema 7); a schema-6 state gains the
    column on upgrade, its rows read None (no evidence: the expected counts as before)."""
    store = prepare_storage_dir(tmp_path / "store")
    db = StateDB(store / "state.sqlite3", upgrade=True)
    db.add_instance(InstanceRow("1.2.3.1", "1.2.3", "1.2.3", "1.2.3.9", "1.2.840.10008.5.1.4.1.1.4",
                                "1.2.840.10008.1.2.1", "MR", "spool/1.dcm", 1, "SCANNER1", time.time()))
    with db.engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE instances DROP COLUMN series_continues")
        connection.exec_driver_sql("UPDATE meta SET value='6' WHERE key='schema_version'")
    db.close()
    db = StateDB(store / "state.sqlite3", upgrade=True)
    try:
        assert _schema(store / "state.sqlite3") == SCHEMA_VERSION == 7
        [row] = db.study_instances("1.2.3")
        assert row["series_continues"] is None
        db.add_instance(InstanceRow("1.2.3.2", "1.2.3", "1.2.3", "1.2.3.9", "1.2.840.10008.5.1.4.1.1.4.1",
                                    "1.2.840.10008.1.2.1", "MR", "spool/2.dcm", 1, "SCANNER1", time.time(), frames=12,
                                    series_continues="its frames start at TemporalPositionIndex 2"))
        assert [r["series_continues"] for r in db.study_instances("1.2.3")][-1].endswith("TemporalPositionIndex 2")
    finally:
        db.close()


# --- break48c #3, #4: a schema-1 state with no recorded version, on either backend ---------------------------------


def _schema_1_state(tmp_path: Path, state_location) -> Path:
    """The first release's schema (tests.scaleout.test_state_backends.V1_SCHEMA, its SQLite DDL; on PostgreSQL with
    PostgreSQL's types) holding one study, its `meta` table without a schema_version row: the config naming it."""
    from sqlalchemy import create_engine, text

    from dicomnode.state import state_url
    from tests.scaleout.test_state_backends import V1_SCHEMA

    store = prepare_storage_dir(tmp_path / "store")
    sqlite = isinstance(state_location, Path)
    location = store / "state.sqlite3" if sqlite else state_location
    ddl = V1_SCHEMA if sqlite else V1_SCHEMA.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "SERIAL PRIMARY KEY") \
        .replace(" REAL", " DOUBLE PRECISION")
    engine = create_engine(state_url(location))
    with engine.begin() as connection:
        for statement in filter(str.strip, ddl.split(";")):
            connection.execute(text(statement))
        connection.execute(text("INSERT INTO studies(study_key, study_instance_uid, state, first_received,"
                                " last_received, updated_at, generation) VALUES ('1.2.3', '1.2.3', 'done', 1, 2, 3, 0)"))
    engine.dispose()
    config = tmp_path / "node.toml"
    config.write_text(f'[logging]\nlevel = "WARNING"\n[node]\nstorage_dir = "{store}"\nport = {free_port()}\n'
                      + ("" if sqlite else f'[state]\nurl = "{location}"\n'))
    return config


def test_state_upgrade_of_a_schema_1_state_with_no_recorded_version_says_so_and_warns(tmp_path, capsys,
                                                                                      state_location):  # noqa: F811
    config = _schema_1_state(tmp_path, state_location)
    assert main(["state", "upgrade", "--yes", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert f"schema version 1 (none recorded) -> {SCHEMA_VERSION}" in out, out
    assert "was empty" not in out and "never start one on it again" in out
    if isinstance(state_location, Path):
        [copy] = list((tmp_path / "store").glob("state.sqlite3.schema1-*"))
        assert f"the schema 1 state before this migration is kept at {copy}" in out
    db = StateDB(state_location if not isinstance(state_location, Path) else tmp_path / "store" / "state.sqlite3")
    assert db.study("1.2.3")["state"] == "done"
    db.close()


def test_status_of_a_schema_1_postgresql_state_gives_the_reason_in_one_line(tmp_path, capsys, pg_server):  # noqa: F811
    config = _schema_1_state(tmp_path, pg_server.create_database())
    assert main(["status", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "has schema version 1, NOT YET UPGRADED" in err and "cannot be listed by this version (column " in err
    assert "does not exist): upgrade it first" in err
    assert len(err.strip().splitlines()) == 1 and "LINE 1" not in err and "^" not in err, err
