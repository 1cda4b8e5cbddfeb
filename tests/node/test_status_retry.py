"""`dicomnode retry` finds every study of a grouped study key; `dicomnode status` measures heartbeats by the configured
interval and lists a killed process once as GONE, then no more. Both state backends (tests/state_backends.py)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from dicomnode.cli import main
from dicomnode.roles import nodes_report
from dicomnode.state import InstanceRow, StateDB, prepare_storage_dir
from dicomnode.uids import short_hash
from tests.state_backends import pg_server, state_location  # noqa: F401 (fixtures)

FIRST = "1.2.826.0.1.3680043.8.498.60860741832885610722240196153674283561"
SECOND = "1.2.826.0.1.3680043.8.498.63632672470088156791947963985903839213"
GROUP_KEY = "pd-55e1861de49c0a0b0c0d0e0f"  # studies.grouping_key = "PatientID+StudyDate": both studies under one key


@pytest.fixture
def node_state(tmp_path, state_location):
    """(StateDB, config file) for one state: SQLite in node.storage_dir, or the PostgreSQL database as [state] url;
    heartbeat every 20 s, lease 60 s (so STALE after 60 s, GONE after 200 s)."""
    state = '[state]\nheartbeat_seconds = 20\nlease_seconds = 60\n'
    if isinstance(state_location, Path):
        store = prepare_storage_dir(tmp_path / "store")
        db = StateDB(store / "state.sqlite3", upgrade=True, heartbeat_seconds=20)
        body = f'[node]\nstorage_dir = "{store}"\n' + state
    else:
        db = StateDB(state_location, upgrade=True, heartbeat_seconds=20)
        body = state.replace("[state]\n", f'[state]\nurl = "{state_location}"\n')
    config = tmp_path / "node.toml"
    # the destinations the tests' dead letters name: `retry` re-queues only to configured ones
    config.write_text(body + "".join(f'[[destinations]]\nname = "{name}"\nae_title = "PACS1"\nhost = "127.0.0.1"\n'
                                     f'port = 12200\n' for name in ("pacs", "archive")))
    yield db, config
    db.close()


def add_grouped_studies(db: StateDB) -> None:
    for number, study_uid in enumerate((FIRST, SECOND)):
        db.add_instance(InstanceRow(f"1.2.9.{number}", GROUP_KEY, study_uid, f"{study_uid}.1", "1.2.840.10008.5.1.4.1.1.4",
                                    "1.2.840.10008.1.2.1", "MR", f"spool/{number}.dcm", 1, "SCANNER1", time.time()))


def test_a_grouped_study_is_found_by_each_of_its_study_uids_and_log_ids(node_state):
    db, _ = node_state
    add_grouped_studies(db)
    assert db.study(GROUP_KEY)["study_instance_uid"] == FIRST  # the key's row names the first study only
    for text in (GROUP_KEY, GROUP_KEY[:10], FIRST, SECOND, short_hash(FIRST), short_hash(SECOND),
                 short_hash(SECOND)[:8]):
        assert [row["study_key"] for row in db.find_studies(text)] == [GROUP_KEY], text
    assert db.find_studies("1.2.826.0.1.3680043.8.498.1") == []
    assert db.find_studies(short_hash("1.2.3")) == []


def test_retry_takes_the_uid_and_log_id_of_the_second_study_of_a_group(node_state, capsys):
    """breaktest2 finding 3: `retry <second UID>` and `retry <its log id>` said "matches 0 studies"."""
    db, config = node_state
    add_grouped_studies(db)
    for text in (SECOND, short_hash(SECOND)):
        assert main(["retry", text, "--config", str(config)]) == 0, capsys.readouterr().err
        assert f"nothing to retry for {GROUP_KEY}" in capsys.readouterr().out


def beat_at(db: StateDB, monkeypatch, when: float, roles=("analyse",)) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(time, "time", lambda: when)
        db.heartbeat(list(roles), when)


def test_staleness_follows_the_configured_heartbeat_interval(node_state, monkeypatch):
    db, _ = node_state
    now = time.time()
    beat_at(db, monkeypatch, now - 45)  # two intervals of 20 s: on time for this site, STALE under a fixed 30 s
    report = nodes_report(db, now=now)
    assert report[0]["alive"] and not report[0]["gone"]
    report = nodes_report(db, now=now + 20)  # 65 s: three intervals missed
    assert not report[0]["alive"] and not report[0]["gone"]
    report = nodes_report(db, now=now + 160)  # 205 s: over 10 intervals (200 s) and the 60 s lease
    assert report[0]["gone"]


def test_status_lists_a_killed_process_once_as_gone_then_no_more(node_state, monkeypatch, capsys):
    """breaktest2 finding 6: a process killed -9 stayed in `dicomnode status` as STALE forever."""
    db, config = node_state
    killed, stuck, live = (StateDB(db.url, process_id=f"vm:{pid}") for pid in (19600, 19700, 19800))
    try:
        now = time.time()
        beat_at(killed, monkeypatch, now - 975, ("receive", "complete", "analyse", "dispatch"))
        beat_at(stuck, monkeypatch, now - 90)
        live.heartbeat(["analyse"], now)
        assert main(["status", "--config", str(config)]) == 0
        out = capsys.readouterr().out
        lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("vm:")}
        assert lines["vm:19600"].split()[-2] == "GONE" and " 97" in lines["vm:19600"]  # 975 s ago
        assert lines["vm:19700"].split()[-2] == "STALE"
        assert "STALE" not in lines["vm:19800"] and "GONE" not in lines["vm:19800"]
        assert "no heartbeat for 60 s or more" in out and "no heartbeat for over 200 s" in out
        assert main(["status", "--config", str(config), "--json"]) == 0
        nodes = {node["node_id"]: node for node in json.loads(capsys.readouterr().out)["nodes"]}
        assert set(nodes) == {"vm:19700", "vm:19800"}  # the gone one was removed through the state API
        assert not nodes["vm:19700"]["alive"] and not nodes["vm:19700"]["gone"] and nodes["vm:19800"]["alive"]
    finally:
        for db in (killed, stuck, live):
            db.close()


def test_a_process_that_beats_again_keeps_its_row(node_state, monkeypatch):
    db, _ = node_state
    now = time.time()
    beat_at(db, monkeypatch, now - 500)
    db.heartbeat(["analyse"], now)  # it came back between `status` reading and removing
    assert db.forget_nodes([db.process_id], seen_before=now - db.gone_after_seconds) == []
    assert [row["node_id"] for row in db.nodes()] == [db.process_id]
    beat_at(db, monkeypatch, now - 500)
    assert db.forget_nodes([db.process_id], seen_before=now - db.gone_after_seconds) == [db.process_id]
    assert db.nodes() == []
