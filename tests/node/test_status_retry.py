"""`dicomnode retry` finds every study of a grouped study key; `dicomnode status` measures heartbeats by the configured
interval and lists a killed process once as GONE, then no more. Both state backends (tests/state_backends.py)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from dicomnode.cli import main
from dicomnode.node import status_report
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


def add_studies_with_results(db: StateDB, count: int) -> list[str]:
    """`count` studies of one instance each, received a second apart (the last most recently), analysed into one SR
    queued for "pacs"; every third study's send a dead letter. Returns the study keys, oldest first."""
    from dicomnode.state import COMPLETE
    keys = []
    start = time.time() - count
    for number in range(count):
        key = f"1.2.826.0.1.3680043.8.498.7{number:04d}"
        db.add_instance(InstanceRow(f"{key}.1.1", key, key, f"{key}.1", "1.2.840.10008.5.1.4.1.1.4",
                                    "1.2.840.10008.1.2.1", "MR", f"spool/{number}.dcm", 1, "SCANNER1",
                                    start + number))
        db.set_study_state(key, COMPLETE)
        analysis = db.start_analysis(key, 0)
        db.finish_analysis(analysis, key, 0, {"outputs": []}, [(f"{key}.9", f"{key}.8", "1.2.840.10008.5.1.4.1.1.88.34",
                                                                f"results/{number}.dcm")],
                           [{"destination": "pacs", "ae_title": "PACS1", "host": "127.0.0.1", "port": 9,
                             "sop_instance_uid": f"{key}.9", "path": f"results/{number}.dcm"}])
        if number % 3 == 0:
            (item,) = db.outbox_for(key)
            db.mark_failed_send(item["id"], "association rejected", time.time() + 60, dead=True)
        keys.append(key)
    return keys


def test_status_report_makes_the_same_few_queries_for_many_studies(node_state):
    """break42c: `dicomnode status` made two queries per study (5 s for 5000 studies)."""
    import sqlalchemy
    db, _ = node_state
    statements = []

    def count(*args):
        statements.append(args[2])
    sqlalchemy.event.listen(db.engine, "before_cursor_execute", count)
    add_studies_with_results(db, 3)
    statements.clear()
    few = status_report(db)
    queries_for_3 = len(statements)
    for number in range(30):
        db.add_instance(InstanceRow(f"1.2.9.9.{number}", f"9.9.{number}", f"9.9.{number}", f"9.9.{number}.1",
                                    "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.1.2.1", "MR", f"spool/x{number}.dcm", 1,
                                    "SCANNER1", time.time()))
    statements.clear()
    many = status_report(db)
    assert len(statements) == queries_for_3
    assert len(many["studies"]) == 33 and len(few["studies"]) == 3
    by_key = {study["study_key"]: study for study in many["studies"]}
    dead = [study for study in few["studies"] if study["dead"]]
    assert len(dead) == 1 and dead[0]["dead"][0]["error"] == "association rejected"
    assert dead[0]["sent"] == 0 and dead[0]["pending"] == 0 and dead[0]["instances"] == 1
    assert all(by_key[f"9.9.{n}"]["instances"] == 1 and by_key[f"9.9.{n}"]["pending"] == 0 for n in range(30))
    pending = [study for study in few["studies"] if not study["dead"]]
    assert [study["pending"] for study in pending] == [1, 1] and all(not s["retrying"] for s in pending)


def test_status_lists_only_the_studies_asked_for(node_state, capsys):
    db, config = node_state
    keys = add_studies_with_results(db, 6)  # a dead letter fails its study (0 and 3), a pending send is sending
    db.set_study_state(keys[1], "failed", "analysis failed: test")
    assert main(["status", "--config", str(config), "--state", "failed"]) == 0
    out = capsys.readouterr().out
    listed = {key for key in keys if key in out}
    assert listed == {keys[0], keys[1], keys[3]}, listed
    assert "showing 3 of 6: --state failed" in out and "studies: 3 failed, 3 sending" in out

    assert main(["status", "--config", str(config), "--last", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [study["study_key"] for study in report["studies"]] == keys[-2:]
    assert report["filter"]["shown"] == 2 and report["filter"]["of"] == 6 and sum(report["by_state"].values()) == 6

    assert main(["status", "--config", str(config), "--study", short_hash(keys[3]), "--state", "failed,sending"]) == 0
    out = capsys.readouterr().out
    assert keys[3] in out and "failed sends" in out and "association rejected" in out  # keys[3]: a dead letter
    assert not any(key in out for key in keys if key != keys[3])

    assert main(["status", "--config", str(config), "--state", "finished"]) == 2
    err = capsys.readouterr().err
    assert "unknown state finished" in err and "done" in err
    with pytest.raises(SystemExit):
        main(["status", "--config", str(config), "--last", "-1"])
    assert "must be 0 or more" in capsys.readouterr().err
