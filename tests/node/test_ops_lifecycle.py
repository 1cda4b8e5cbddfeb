"""An administrator's lifecycle (break42c): commands that only read never migrate the state (F2), a migration refuses
while another process has the state open, destinations removed by a reload get nothing more (F3), `retry` of a purged
study says so (F6), the log file is not world-readable (F9)."""
from __future__ import annotations

import logging
import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dicomnode.cli import main
from dicomnode.config import DestinationConfig, DispatchConfig, LoggingConfig, load_config
from dicomnode.dispatch import Dispatcher, removed_destination_error, transient_dead_letter
from dicomnode.node import Node
from dicomnode.observe import configure_logging
from dicomnode.roles import ROLES
from dicomnode.state import (DONE, SCHEMA_VERSION, InstanceRow, MixedVersionsError, StateDB, prepare_storage_dir,
                             sqlite_open_elsewhere)
from dicomnode.uids import short_hash
from tests.node.test_log_outputs import restore_logging  # noqa: F401 (fixture)
from tests.node.test_retry_all import REFUSED, dead_letters, states
from tests.peers import free_port

SR = "1.2.840.10008.5.1.4.1.1.88.34"
OLDER = SCHEMA_VERSION - 1


def _older_state(tmp_path: Path, destinations: str = "") -> tuple[Path, Path]:
    """A SQLite state of schema OLDER holding one study, and its config (port free): (state file, config file)."""
    store = prepare_storage_dir(tmp_path / "store")
    db = StateDB(store / "state.sqlite3", upgrade=True)
    db.add_instance(InstanceRow("1.2.3.1", "1.2.3", "1.2.3", "1.2.3.9", "1.2.840.10008.5.1.4.1.1.4",
                                "1.2.840.10008.1.2.1", "MR", "spool/1.dcm", 1, "SCANNER1", time.time()))
    with db.engine.begin() as connection:
        connection.exec_driver_sql(f"UPDATE meta SET value='{OLDER}' WHERE key='schema_version'")
    db.close()
    config = tmp_path / "node.toml"
    config.write_text(f'[logging]\nlevel = "WARNING"\n[node]\nstorage_dir = "{store}"\nport = {free_port()}\n'
                      + destinations)
    return store / "state.sqlite3", config


def _schema(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        return int(connection.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])


@pytest.fixture
def held_open():
    """Opens a SQLite file in another process (as an older node that writes no heartbeat does) until the test ends."""
    processes = []

    def hold(path: Path) -> None:
        process = subprocess.Popen(
            [sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
             "c.execute('SELECT COUNT(*) FROM studies').fetchall(); print('open', flush=True); sys.stdin.read()",
             str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        processes.append(process)
        assert process.stdout.readline().strip() == "open"

    yield hold
    for process in processes:
        process.stdin.close()
        process.wait(10)


# --- F2: nothing that only reads migrates; a migration refuses while the state is in use -------------------------


@pytest.mark.parametrize("command", [["retry", "1.2.3"]])  # `status` shows it read-only: test_upgrade_safety
def test_commands_that_are_no_migration_leave_an_older_schema_alone(tmp_path, capsys, command):
    path, config = _older_state(tmp_path)
    assert main(command + ["--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"schema version {OLDER}, this dicomnode needs {SCHEMA_VERSION}" in err
    assert "dicomnode state upgrade" in err and "dicomnode serve" in err and "nothing was changed" in err
    assert _schema(path) == OLDER


def test_sqlite_open_elsewhere_sees_another_process_only(tmp_path, held_open):
    path, _ = _older_state(tmp_path)
    own = sqlite3.connect(path)
    own.execute("PRAGMA journal_mode=WAL")
    own.execute("SELECT 1").fetchall()
    assert not sqlite_open_elsewhere(path)  # this process's own connection does not count
    held_open(path)
    assert sqlite_open_elsewhere(path)
    own.close()


def test_state_upgrade_refuses_while_another_process_has_the_state_open(tmp_path, capsys, held_open):
    path, config = _older_state(tmp_path)
    held_open(path)
    assert main(["state", "upgrade", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "is in use" in err and "another process has" in err and "Nothing was changed" in err
    assert _schema(path) == OLDER
    assert main(["state", "upgrade", "--force", "--config", str(config)]) == 0
    captured = capsys.readouterr()
    assert "--force" in captured.err and f"schema version {OLDER} -> {SCHEMA_VERSION}" in captured.out
    assert "refuses it from now on" not in captured.out and "does not check" in captured.out
    assert _schema(path) == SCHEMA_VERSION


def test_serve_does_not_migrate_a_state_another_process_has_open(tmp_path, held_open):
    path, config = _older_state(tmp_path)
    held_open(path)
    with pytest.raises(MixedVersionsError, match="in use: another process has .*Nothing was changed"):
        Node(load_config(str(config)), roles=ROLES)
    assert _schema(path) == OLDER
    assert not (path.parent / "spool.id").exists()


def test_the_upgrade_log_says_what_an_older_version_does(tmp_path, caplog):
    path, config = _older_state(tmp_path)
    with caplog.at_level(logging.INFO, logger="dicomnode.state"):
        node = Node(load_config(str(config)), roles=ROLES)  # nothing else has it open: serve migrates
    node.db.close()
    node.storage_lock.release()
    assert _schema(path) == SCHEMA_VERSION
    assert "refuses it from now on" not in caplog.text
    assert "schema 2 or later refuses to start on it" in caplog.text and "does not check" in caplog.text


# --- F3: a destination removed from the config gets nothing more ------------------------------------------------


def _pending_to(db: StateDB, root: Path, study: str, names: list[str]) -> None:
    """Study `study` analysed, one pending result object per destination name (queued at 127.0.0.1:12200)."""
    dead_letters(db, study, [(name, REFUSED) for name in names])
    db.retry_dead(study)
    for row in db.outbox_for(study):
        (root / row["path"]).parent.mkdir(parents=True, exist_ok=True)
        (root / row["path"]).write_bytes(b"x")


def test_pending_sends_of_a_removed_destination_become_dead_letters_not_sends(tmp_path, monkeypatch, caplog):
    root = prepare_storage_dir(tmp_path / "store")
    db = StateDB(root / "state.sqlite3", upgrade=True)
    _pending_to(db, root, "1.1", ["pacs", "sender"])
    sent_to = []

    def send_files(paths, ae_title, host, port, **kwargs):
        sent_to.append((ae_title, host, port))
        raise AssertionError("no association expected in this test")

    monkeypatch.setattr("dicomnode.dispatch.send_files", send_files)
    archive = DestinationConfig(name="archive", ae_title="ARCHIVE", host="127.0.0.1", port=free_port())
    dispatcher = Dispatcher(db, root, DispatchConfig(max_attempts=10), "DICOMNODE", destinations=lambda: [archive])
    with caplog.at_level(logging.ERROR, logger="dicomnode.dispatch"):
        assert dispatcher.retire_removed_destinations() == 1  # "sender" goes back to the calling host as queued
    assert "destination pacs is not in the config" in caplog.text and "127.0.0.1:12200" in caplog.text
    rows = {row["destination"]: row for row in db.outbox_for("1.1")}
    assert rows["pacs"]["state"] == "dead" and rows["pacs"]["last_error"] == removed_destination_error("pacs")
    assert rows["sender"]["state"] == "pending"
    assert transient_dead_letter(rows["pacs"]["last_error"])  # `retry --all` re-queues it once pacs is back
    assert dispatcher.address_of(rows["pacs"]) is None
    db.close()


def test_a_due_send_to_a_removed_destination_is_never_attempted(tmp_path, monkeypatch):
    root = prepare_storage_dir(tmp_path / "store")
    db = StateDB(root / "state.sqlite3", upgrade=True)
    _pending_to(db, root, "1.1", ["pacs"])
    attempts = []
    monkeypatch.setattr("dicomnode.dispatch.send_files", lambda *a, **k: attempts.append(a))
    dispatcher = Dispatcher(db, root, DispatchConfig(), "DICOMNODE", destinations=lambda: [])
    assert dispatcher.run_once() == 0
    assert attempts == [] and states(db, "1.1") == {"1.1.9.0": "dead"}
    assert "removed from the config" in db.outbox_for("1.1")[0]["last_error"]
    db.close()


def test_a_reload_that_removes_a_destination_says_so_and_stops_its_sends(tmp_path, caplog):
    store = prepare_storage_dir(tmp_path / "store")
    pacs = f'[[destinations]]\nname = "pacs"\nae_title = "PACS1"\nhost = "127.0.0.1"\nport = {free_port()}\n'
    archive = pacs.replace('"pacs"', '"archive"')
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\nstorage_dir = "{store}"\nport = 0\n{pacs}')
    node = Node(load_config(str(config)))
    try:
        _pending_to(node.db, store, "1.1", ["pacs", "pacs"])
        config.write_text(f'[node]\nstorage_dir = "{store}"\nport = 0\n{archive}')
        with caplog.at_level(logging.WARNING):
            node.reload(load_config(str(config)))
            node.dispatcher.retire_removed_destinations()  # what the running dispatcher's next round does
        assert "destination pacs (PACS1@127.0.0.1" in caplog.text and "its 2 pending send(s)" in caplog.text
        assert states(node.db, "1.1") == {"1.1.9.0": "dead", "1.1.9.1": "dead"}
    finally:
        node.db.close()


def test_retry_refuses_a_destination_not_in_the_config(tmp_path, capsys):
    store = prepare_storage_dir(tmp_path / "store")
    db = StateDB(store / "state.sqlite3", upgrade=True)
    dead_letters(db, "1.1", [("pacs", removed_destination_error("pacs")), ("archive", REFUSED)])
    archive = '[[destinations]]\nname = "archive"\nae_title = "A"\nhost = "127.0.0.1"\nport = 12200\n'
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\nstorage_dir = "{store}"\n{archive}')
    assert main(["retry", "--all", "--destination", "pacs", "--config", str(config)]) == 2
    assert "unknown destination 'pacs'" in capsys.readouterr().err
    assert main(["retry", "--all", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "re-queued 1 dead letter(s)" in out and "not re-queued, 1 dead letter(s) to destination(s) not in the " \
        "config: pacs" in out
    assert states(db, "1.1") == {"1.1.9.0": "dead", "1.1.9.1": "pending"}
    # the admin adds it back: now the dead letters the removal made are re-queued
    config.write_text(f'[node]\nstorage_dir = "{store}"\n{archive}{archive.replace(chr(34) + "archive", chr(34) + "pacs")}')
    assert main(["retry", "--all", "--destination", "pacs", "--config", str(config)]) == 0
    assert states(db, "1.1") == {"1.1.9.0": "pending", "1.1.9.1": "pending"}
    db.close()


def test_retry_of_a_study_re_queues_only_to_configured_destinations(tmp_path, capsys):
    store = prepare_storage_dir(tmp_path / "store")
    db = StateDB(store / "state.sqlite3", upgrade=True)
    dead_letters(db, "1.1", [("pacs", removed_destination_error("pacs"))])
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\nstorage_dir = "{store}"\n')
    assert main(["retry", "1.1", "--config", str(config)]) == 1
    assert "to pacs, not in the config" in capsys.readouterr().err
    assert states(db, "1.1") == {"1.1.9.0": "dead"}
    db.close()


# --- F6: retry of a study retention purged ----------------------------------------------------------------------


def test_retry_of_a_purged_study_says_it_was_purged(tmp_path, capsys):
    store = prepare_storage_dir(tmp_path / "store")
    db = StateDB(store / "state.sqlite3", upgrade=True)
    study = "1.2.826.0.1.3680043.8.498.13047"
    dead_letters(db, study, [("pacs", REFUSED)])
    with db.engine.begin() as connection:  # delivered, then done: what retention purges
        connection.exec_driver_sql("UPDATE outbox SET state='sent'")
        connection.exec_driver_sql(f"UPDATE studies SET state='{DONE}'")
    assert db.begin_purge(study, (DONE,)) is not None and db.finish_purge(study) is not None
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\nstorage_dir = "{store}"\n')
    for name in (study, short_hash(study)):
        for option in ([], ["--resend"], ["--reanalyse"]):
            assert main(["retry", name, *option, "--config", str(config)]) == 1
            err = capsys.readouterr().err
            assert f"study {study} was purged by retention on {time.strftime('%Y-%m-%d', time.gmtime())}" in err
            assert "images and results are gone" in err and "send it again" in err
    assert main(["retry", "9.9.9", "--config", str(config)]) == 1
    assert "matches 0 studies" in capsys.readouterr().err
    db.close()


# --- F9: the log file ---------------------------------------------------------------------------------------------


def test_the_log_file_is_not_world_readable_whatever_the_umask(tmp_path, restore_logging):
    log_file = tmp_path / "node.log"
    old = os.umask(0o022)
    try:
        configure_logging(LoggingConfig(file=str(log_file)))
        logging.getLogger("dicomnode.test").warning("a line")
        assert stat.S_IMODE(log_file.stat().st_mode) == 0o640
        log_file.rename(tmp_path / "node.log.1")  # logrotate: the node makes the new file itself
        logging.getLogger("dicomnode.test").warning("another line")
        assert stat.S_IMODE(log_file.stat().st_mode) == 0o640
        shared = tmp_path / "old.log"
        shared.write_text("")
        shared.chmod(0o644)  # left by an older version
        configure_logging(LoggingConfig(file=str(shared)))
        assert stat.S_IMODE(shared.stat().st_mode) == 0o640
    finally:
        os.umask(old)


# --- F8: a copy of a running node's folder --------------------------------------------------------------------------


def test_serve_on_a_copy_of_a_running_nodes_folder_warns_that_both_send(tmp_path, caplog):
    from dicomnode import __version__, build_id

    store = prepare_storage_dir(tmp_path / "copy")
    original = StateDB(store / "state.sqlite3", upgrade=True, process_id="original:1")
    original.heartbeat(ROLES, time.time(), {"version": __version__, "schema": SCHEMA_VERSION,  # copied with it
                                            "build": build_id()})
    original.close()
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\nstorage_dir = "{store}"\nport = {free_port()}\n')
    with caplog.at_level(logging.WARNING, logger="dicomnode.node"):
        node = Node(load_config(str(config)), roles=ROLES)
    node.db.close()
    node.storage_lock.release()
    assert "probably a copy of the folder that process serves" in caplog.text and "Backup and restore" in caplog.text


def test_items_waiting_for_their_lane_when_the_destination_is_removed_are_not_sent(tmp_path, monkeypatch):
    root = prepare_storage_dir(tmp_path / "store")
    db = StateDB(root / "state.sqlite3", upgrade=True)
    _pending_to(db, root, "1.1", ["pacs"])
    attempts = []
    monkeypatch.setattr("dicomnode.dispatch.send_files", lambda *a, **k: attempts.append(a))
    configured = [DestinationConfig(name="pacs", ae_title="PACS1", host="127.0.0.1", port=12200)]
    dispatcher = Dispatcher(db, root, DispatchConfig(), "DICOMNODE", destinations=lambda: configured)
    rows = db.claim_sends()
    configured.clear()  # the reload lands between the claim and the lane's association
    dispatcher._send_lane(("pacs", "PACS1", "127.0.0.1", 12200, "DICOMNODE"), rows)
    assert attempts == [] and states(db, "1.1") == {"1.1.9.0": "dead"}
    db.close()
