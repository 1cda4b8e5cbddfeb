"""What a start says in the journal (opsbreak finding 10): the studies it resumes count those with sends pending, and
a schema upgrade of an older state (and the spool it records) is logged with both versions."""
from __future__ import annotations

import logging
import sqlite3

from dicomnode.config import Config
from dicomnode.node import Node
from dicomnode.state import OUTBOX_PENDING, SCHEMA_VERSION, SENDING, StateDB
from tests.node.test_retention_safety import KEY, Store


def test_the_start_line_counts_a_study_with_sends_pending(tmp_path, caplog):
    config = Config.model_validate({"node": {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 0},
                                    "studies": {"quiet_seconds": 3600}, "dispatch": {"initial_backoff_seconds": 3600}})
    node = Node(config, analyser=object())
    store = Store(node.storage_dir, node.db)
    store.instance(1)
    store.analyse()  # two results queued for a PACS that is not there
    assert node.db.study(KEY)["state"] == SENDING
    pending = [row for row in node.db.outbox_for(KEY) if row["state"] == OUTBOX_PENDING]
    assert len(pending) == 2
    with caplog.at_level(logging.INFO, logger="dicomnode.node"):
        node.start(warm_up=False)
        node.stop()
    (line,) = [r.getMessage() for r in caplog.records if "listening as" in r.getMessage()]
    assert "resumed 1 unfinished study: 0 receiving, 0 to analyse, 1 with 2 result send(s) pending" in line, line


def test_a_schema_upgrade_is_logged_with_both_versions(tmp_path, caplog):
    path = tmp_path / "state.sqlite3"
    with caplog.at_level(logging.INFO, logger="dicomnode.state"):
        StateDB(path, upgrade=True).close()  # a new state: created, not upgraded
    assert "upgraded" not in caplog.text
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
    with caplog.at_level(logging.INFO, logger="dicomnode.state"):
        db = StateDB(path)  # SQLite upgrades on open
    try:
        assert f"upgraded the state database sqlite:///{path} from schema version 2 to {SCHEMA_VERSION}" in caplog.text
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="dicomnode.state"):
            db.record_spool_identity("abc123", tmp_path)
            db.record_spool_identity("other", tmp_path)  # another process was first: nothing recorded, nothing said
        assert caplog.text.count("recorded spool") == 1 and "recorded spool abc123" in caplog.text
    finally:
        db.close()
