"""`dicomnode status` on a full or read-only disk (break32_safety F7): it reads the state without writing, and an
error names the disk, not a wrong URL or user."""
from __future__ import annotations

import sqlite3
import time

import pytest
import sqlalchemy.exc

from dicomnode import state as state_module
from dicomnode.cli import main
from dicomnode.state import InstanceRow, StateDB, prepare_storage_dir


def disk_full(*args, **kwargs):
    raise sqlalchemy.exc.OperationalError("DELETE FROM meta", {}, sqlite3.OperationalError("database or disk is full"))


@pytest.fixture
def node_state(tmp_path):
    store = prepare_storage_dir(tmp_path / "store")
    db = StateDB(store / "state.sqlite3", upgrade=True)
    db.add_instance(InstanceRow("1.2.3.1", "1.2.3", "1.2.3", "1.2.3.9", "1.2.840.10008.5.1.4.1.1.4",
                                "1.2.840.10008.1.2.1", "MR", "spool/1.dcm", 1, "SCANNER1", time.time()))
    db.close()
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\nstorage_dir = "{store}"\n')
    return store, config


def test_status_reads_the_state_when_the_disk_is_full(node_state, monkeypatch, capsys):
    store, config = node_state
    monkeypatch.setattr(state_module, "prepare_storage_dir", disk_full)  # the writable open fails
    assert main(["status", "--config", str(config)]) == 0
    out, err = capsys.readouterr()
    assert "1.2.3" in out and "received" in out
    assert "the disk is full" in err and "read-only view" in err


def test_a_read_only_open_writes_nothing(node_state):
    store, _ = node_state
    (store / "state.sqlite3.writelock").unlink()
    before = (store / "state.sqlite3").read_bytes()
    db = StateDB(store / "state.sqlite3", readonly=True)
    try:
        assert [row["study_key"] for row in db.studies()] == ["1.2.3"]
        with pytest.raises(sqlalchemy.exc.OperationalError):
            db.forget_node()
    finally:
        db.close()
    assert (store / "state.sqlite3").read_bytes() == before and not (store / "state.sqlite3.writelock").exists()


def test_a_full_disk_is_named_as_such_not_as_a_wrong_url(node_state, monkeypatch, capsys):
    _, config = node_state
    monkeypatch.setattr(state_module, "prepare_storage_dir", disk_full)
    assert main(["retry", "1.2.3", "--config", str(config)]) == 1  # a write: no read-only fallback
    err = capsys.readouterr().err
    assert "database or disk is full" in err and "the disk is full" in err
    assert "wrong [state] url" not in err
