"""What an admin installing from the docs alone met (break48a #3, #4, #12): a relative node.storage_dir named with
the folder it resolved against, node.port 0 refused by `config check`, and `retry` saying when no node is running
to act on what it re-queued."""
from __future__ import annotations

import time
from pathlib import Path

from dicomnode.cli import main
from dicomnode.state import StateDB, prepare_storage_dir
from tests.node.test_retention_safety import Store


def _write(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


# --- #4: node.port = 0 ----------------------------------------------------------------------------------------------

def test_config_check_refuses_port_0_for_a_receiving_node(tmp_path, capsys):
    config = _write(tmp_path / "node.toml", f'[node]\nstorage_dir = "{tmp_path / "store"}"\nport = 0\n')
    assert main(["config", "check", str(config), "--roles", "receive,complete,dispatch"]) == 1
    err = capsys.readouterr().err
    assert "node.port: 0 lets the operating system pick a different port at every start" in err
    assert "set the port they are configured to send to" in err
    # a process that does not receive listens on no DICOM port
    assert main(["config", "check", str(config), "--roles", "complete,dispatch"]) == 0
    config.write_text(f'[node]\nstorage_dir = "{tmp_path / "store"}"\nport = 11112\n')
    assert main(["config", "check", str(config), "--roles", "receive,complete,dispatch"]) == 0
    assert "node.port" not in capsys.readouterr().err.replace("node.port: 11112 on", "")


# --- #3: a relative node.storage_dir --------------------------------------------------------------------------------

def test_config_check_prints_the_absolute_storage_and_warns_about_a_relative_one(tmp_path, monkeypatch, capsys):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    config = _write(tmp_path / "rel.toml", '[node]\nstorage_dir = "spoolrel"\nport = 11112\n')
    assert main(["config", "check", str(config), "--roles", "complete,dispatch"]) == 0
    out, err = capsys.readouterr()
    assert f"storage: {here / 'spoolrel'} (state {here / 'spoolrel' / 'state.sqlite3'})" in out
    assert (f"warning: node.storage_dir 'spoolrel', relative, resolved against the working directory {here} to "
            f"{here / 'spoolrel'}") in err and "give an absolute path" in err
    config.write_text(f'[node]\nstorage_dir = "{tmp_path / "abs"}"\nport = 11112\n')
    assert main(["config", "check", str(config), "--roles", "complete,dispatch"]) == 0
    out, err = capsys.readouterr()
    assert f"storage: {tmp_path / 'abs'}" in out and "relative" not in err


def test_status_and_retry_without_a_state_name_the_absolute_path_and_the_config(tmp_path, monkeypatch, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = _write(tmp_path / "rel.toml", '[node]\nstorage_dir = "spoolrel"\nport = 11112\n')
    for command in (["status", "--config", str(config)], ["retry", "--all", "--config", str(config)]):
        assert main(command) == 1
        err = capsys.readouterr().err
        assert (f"no node state at {elsewhere / 'spoolrel' / 'state.sqlite3'} (node.storage_dir 'spoolrel', "
                f"relative, resolved against the working directory {elsewhere})") in err
        assert f"is {config} the config the node runs with, and this the folder it runs in?" in err
        assert "nothing was received" not in err
    for command in (["status"], ["retry", "--all"]):
        assert main(command) == 1
        err = capsys.readouterr().err
        assert (f"no node state at {elsewhere / 'var' / 'dicomnode' / 'state.sqlite3'} (the embedded defaults' "
                f"node.storage_dir 'var/dicomnode', relative, resolved against the working directory {elsewhere}: "
                f"no --config given)") in err and "pass --config" in err
    assert not (elsewhere / "spoolrel").exists() and not (elsewhere / "var").exists()


def test_state_upgrade_names_the_absolute_state(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["state", "upgrade"]) == 0
    out, err = capsys.readouterr()
    assert f"state sqlite:///{tmp_path / 'var' / 'dicomnode' / 'state.sqlite3'}: was empty" in out
    assert f"the embedded defaults' state under the current folder ({tmp_path / 'var' / 'dicomnode'})" in err
    config = _write(tmp_path / "rel.toml", '[node]\nstorage_dir = "spoolrel"\n')
    assert main(["state", "upgrade", "--config", str(config)]) == 0
    out, err = capsys.readouterr()
    assert f"state sqlite:///{tmp_path / 'spoolrel' / 'state.sqlite3'}: was empty" in out
    assert f"node.storage_dir 'spoolrel', relative, resolved against the working directory {tmp_path}" in err


# --- #12: retry with no node running ----------------------------------------------------------------------------------

def test_retry_says_whether_a_node_is_running_to_send_what_it_requeued(tmp_path, capsys):
    root = prepare_storage_dir(tmp_path / "store")
    db = StateDB(root / "state.sqlite3", upgrade=True)
    try:
        store = Store(root, db)
        store.instance(1)
        for outbox_id in store.analyse():
            db.mark_failed_send(outbox_id, "association with PACS@127.0.0.1:104 failed: connection refused", time.time(),
                                dead=True)
    finally:
        db.close()
    config = _write(tmp_path / "node.toml", f'[node]\nstorage_dir = "{root}"\n[[destinations]]\nname = "pacs"\n'
                                            'ae_title = "PACS"\nhost = "127.0.0.1"\nport = 104\n')
    assert main(["retry", "--all", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "re-queued 2 dead letter(s) of 1 stud(ies); no node process with the dispatch role is running" in out
    assert "nothing happens until one starts" in out and "within seconds" not in out
    db = StateDB(root / "state.sqlite3", process_id="elsewhere:1")
    try:
        for row in db.outbox_for("1.2.3"):
            db.mark_failed_send(row["id"], "association with PACS@127.0.0.1:104 failed: connection refused", time.time(),
                                dead=True)
        db.heartbeat(["receive", "complete", "analyse", "dispatch"], time.time())  # a node serving now
    finally:
        db.close()
    assert main(["retry", "--all", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "re-queued 2 dead letter(s) of 1 stud(ies); a running node sends them within seconds" in out
