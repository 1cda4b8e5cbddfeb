"""State on both backends: migration of a v1 SQLite spool, exactly-once claims, leases, heartbeats, schema checks."""
from __future__ import annotations

import sqlite3
import time

import pytest

from dicomnode.config import Config
from dicomnode.roles import DatabaseCompletion, nodes_report, parse_roles
from dicomnode.state import (
    ANALYSING, COMPLETE, DONE, RECEIVED, SCHEMA_VERSION, InstanceRow, StateDB, StateSchemaError, upgrade_schema,
)
from tests.state_backends import pg_server, state_location  # noqa: F401 (fixtures)

V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid TEXT PRIMARY KEY,
    study_key TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    transfer_syntax TEXT,
    modality TEXT,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    calling_ae TEXT,
    received_at REAL NOT NULL,
    series_number INTEGER,
    slice_key TEXT,
    cardiac_images INTEGER,
    frames INTEGER,
    images_in_acquisition INTEGER
);
CREATE INDEX IF NOT EXISTS instances_study ON instances(study_key);
CREATE TABLE IF NOT EXISTS studies (
    study_key TEXT PRIMARY KEY,
    study_instance_uid TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    calling_ae TEXT,
    calling_host TEXT,
    first_received REAL NOT NULL,
    last_received REAL NOT NULL,
    updated_at REAL NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0,
    route TEXT,
    summary_json TEXT
);
CREATE TABLE IF NOT EXISTS analyses (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    study_key TEXT NOT NULL,
    generation INTEGER NOT NULL,
    state TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    reason TEXT,
    summary_json TEXT
);
CREATE TABLE IF NOT EXISTS results (
    sop_instance_uid TEXT PRIMARY KEY,
    analysis_id INTEGER NOT NULL,
    study_key TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    path TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    analysis_id INTEGER NOT NULL,
    study_key TEXT NOT NULL,
    destination TEXT NOT NULL,
    ae_title TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    path TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    sent_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_attempt_at);
"""


def instance(sop: str, study: str = "1.2.3", **extra) -> InstanceRow:
    return InstanceRow(sop_instance_uid=sop, study_key=study, study_instance_uid=study, series_instance_uid=study + ".1",
                       sop_class_uid="1.2.840.10008.5.1.4.1.1.4", transfer_syntax="1.2.840.10008.1.2.1", modality="MR",
                       path=f"spool/{sop}.dcm", size=10, calling_ae="SCANNER1", received_at=time.time(), **extra)


def complete_study(db: StateDB, study: str = "1.2.3") -> None:
    db.add_instance(instance(study + ".9", study))
    assert db.set_study_state(study, COMPLETE, expect=(RECEIVED,))


@pytest.fixture
def two_workers(state_location):
    """Two handles on one database, as two processes would have (distinct process ids, short leases)."""
    first = StateDB(state_location, upgrade=True, process_id="host-a:1", lease_seconds=0.5)
    second = StateDB(state_location, process_id="host-b:2", lease_seconds=0.5)
    yield first, second
    first.close()
    second.close()


def test_a_v1_sqlite_spool_is_migrated_and_keeps_its_studies(tmp_path):
    path = tmp_path / "state.sqlite3"
    with sqlite3.connect(path) as connection:
        connection.executescript(V1_SCHEMA)
        connection.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        connection.execute("INSERT INTO studies(study_key, study_instance_uid, state, first_received, last_received,"
                           " updated_at, generation) VALUES ('1.2.3', '1.2.3', 'complete', 1, 2, 3, 0)")
        connection.execute("INSERT INTO outbox(analysis_id, study_key, destination, ae_title, host, port,"
                           " sop_instance_uid, path, state, next_attempt_at) VALUES (1, '1.2.3', 'pacs', 'P', 'h', 1,"
                           " '9.1', 'r/9.1.dcm', 'pending', 0)")
    db = StateDB(path)  # SQLite: migrated on open, as a node start does
    assert db.study("1.2.3")["state"] == COMPLETE
    assert db.claim_next_study() == ("1.2.3", 0)
    assert [row["sop_instance_uid"] for row in db.claim_sends()] == ["9.1"]
    db.heartbeat(["receive"], time.time())
    assert upgrade_schema(db.engine) == (SCHEMA_VERSION, SCHEMA_VERSION)  # idempotent
    db.close()


def test_postgresql_without_schema_names_the_upgrade_command(pg_server):
    url = pg_server.create_database()
    with pytest.raises(StateSchemaError, match="dicomnode state upgrade"):
        StateDB(url)
    StateDB(url, upgrade=True).close()
    StateDB(url).close()


def test_a_study_is_claimed_by_exactly_one_worker(two_workers):
    first, second = two_workers
    complete_study(first)
    assert first.claim_next_study() == ("1.2.3", 0)
    assert second.claim_next_study() is None
    assert second.start_analysis("1.2.3", 0) is None  # held by the other worker
    analysis = first.start_analysis("1.2.3", 0)
    assert analysis is not None
    first.heartbeat(["analyse"], time.time())  # renews the lease
    assert second.claim_next_study() is None
    assert first.finish_analysis(analysis, "1.2.3", 0, {}, [("9.1", "9", "1.2", "r/9.1.dcm")], [])
    assert first.study("1.2.3")["state"] == DONE and first.study("1.2.3")["claimed_by"] is None


def test_a_dead_workers_study_goes_to_another_and_the_dead_one_cannot_record(two_workers):
    first, second = two_workers
    complete_study(first)
    analysis = first.start_analysis("1.2.3", 0)
    time.sleep(0.7)  # no heartbeat: the lease lapses
    assert second.claim_next_study() == ("1.2.3", 0)
    second_analysis = second.start_analysis("1.2.3", 0)
    assert not first.finish_analysis(analysis, "1.2.3", 0, {}, [("9.1", "9", "1.2", "r/9.1.dcm")],
                                     [{"destination": "pacs", "ae_title": "P", "host": "h", "port": 1,
                                       "sop_instance_uid": "9.1", "path": "r/9.1.dcm"}])
    assert first.result_count() == 0 and first.outbox_for("1.2.3") == []
    assert second.finish_analysis(second_analysis, "1.2.3", 0, {}, [("9.2", "9", "1.2", "r/9.2.dcm")], [])
    assert second.result_count() == 1


def test_a_late_release_gives_back_only_its_own_claim_never_the_next_workers(two_workers):
    """break42a finding 2: a worker whose analysis ended unrecorded during an outage longer than the lease released
    the claim another worker held by then; the release must act on the releasing worker's claim only."""
    first, second = two_workers
    complete_study(first)
    analysis = first.start_analysis("1.2.3", 0)
    time.sleep(0.7)  # the outage outlasts the lease
    assert second.claim_next_study() == ("1.2.3", 0)
    second_analysis = second.start_analysis("1.2.3", 0)
    assert not first.release_claim("1.2.3", 0, COMPLETE, "analysed again: unreachable", analysis)
    assert not first.release_claim("1.2.3", 0, COMPLETE, "analysed again: unreachable")  # claim failed before start
    study = first.study("1.2.3")
    assert study["state"] == ANALYSING and study["claimed_by"] == "host-b:2"
    assert second.finish_analysis(second_analysis, "1.2.3", 0, {}, [("9.2", "9", "1.2", "r/9.2.dcm")], [])


def test_a_claim_taken_again_by_the_same_process_is_not_the_old_analysis_s(two_workers):
    """Two threads of one process: the first's lease lapsed and the second claimed the study again; the first
    neither records nor releases (the claim epoch is the analysis), the second does."""
    first, _ = two_workers
    complete_study(first)
    old = first.start_analysis("1.2.3", 0)
    time.sleep(0.7)
    assert first.claim_next_study() == ("1.2.3", 0)
    new = first.start_analysis("1.2.3", 0)
    assert not first.finish_analysis(old, "1.2.3", 0, {}, [("9.1", "9", "1.2", "r/9.1.dcm")], [])
    assert not first.release_claim("1.2.3", 0, COMPLETE, "analysed again", old)
    assert first.study("1.2.3")["state"] == ANALYSING
    assert first.release_claim("1.2.3", 0, COMPLETE, "analysed again", new)
    assert first.study("1.2.3")["state"] == COMPLETE and first.study("1.2.3")["claimed_by"] is None


def test_concurrent_claims_never_hand_one_study_to_two_workers(state_location):
    import threading

    handles = [StateDB(state_location, upgrade=True, process_id=f"w{i}") for i in range(4)]
    for index in range(12):
        complete_study(handles[0], f"1.2.{index}")
    claimed: list[tuple[str, str]] = []
    lock = threading.Lock()

    def work(db: StateDB) -> None:
        while (claim := db.claim_next_study()) is not None:
            with lock:
                claimed.append((db.process_id, claim[0]))

    threads = [threading.Thread(target=work, args=(db,)) for db in handles]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    keys = [key for _, key in claimed]
    assert sorted(keys) == sorted(f"1.2.{i}" for i in range(12))  # each once
    assert all(row["state"] == ANALYSING for row in handles[0].studies())
    for db in handles:
        db.close()


def test_outbox_items_are_claimed_once_and_released_by_the_outcome(two_workers):
    first, second = two_workers
    complete_study(first)
    analysis = first.start_analysis("1.2.3", 0)
    items = [{"destination": "pacs", "ae_title": "P", "host": "h", "port": 1, "sop_instance_uid": s, "path": f"r/{s}"}
             for s in ("9.1", "9.2")]
    first.finish_analysis(analysis, "1.2.3", 0, {}, [], items)
    claimed = first.claim_sends()
    assert [r["sop_instance_uid"] for r in claimed] == ["9.1", "9.2"]
    assert second.claim_sends() == [] and second.next_send_time() is None
    first.mark_sent([claimed[0]["id"]])
    first.mark_failed_send(claimed[1]["id"], "refused", 0.0, dead=False)  # released for the next round, any dispatcher
    assert [r["sop_instance_uid"] for r in second.claim_sends()] == ["9.2"]
    time.sleep(0.7)  # second died while sending: the item is free again
    assert [r["sop_instance_uid"] for r in first.claim_sends()] == ["9.2"]
    first.mark_sent([claimed[1]["id"]])
    assert first.study("1.2.3")["state"] == DONE


def test_release_claims_hands_a_stopping_workers_study_back(two_workers):
    first, second = two_workers
    complete_study(first)
    first.start_analysis("1.2.3", 0)
    assert first.release_claims() == 1
    assert first.study("1.2.3")["state"] == COMPLETE
    assert second.claim_next_study() == ("1.2.3", 0)


def test_one_completion_scheduler_acts_at_a_time(two_workers):
    first, second = two_workers
    config = Config.model_validate({"studies": {"quiet_seconds": 0.2, "use_expected_counts": False}})
    scheduler_a = DatabaseCompletion(first, config, lease_seconds=0.5)
    scheduler_b = DatabaseCompletion(second, config, lease_seconds=0.5)
    first.add_instance(instance("1.1"))
    second.add_instance(instance("1.2"))  # another receiver, same study
    assert scheduler_a.poll() == [] and scheduler_a.holding
    assert scheduler_b.poll() == [] and not scheduler_b.holding
    time.sleep(0.3)
    assert scheduler_b.poll() == [] and not scheduler_b.holding
    assert scheduler_a.poll() == ["1.2.3"]
    assert first.study("1.2.3")["state"] == COMPLETE
    time.sleep(0.6)  # a stops renewing: b takes over
    second.add_instance(instance("2.1", "2.2.2"))
    assert scheduler_b.poll(now=time.time() + 1) == ["2.2.2"] and scheduler_b.holding


def test_max_wait_completes_a_study_that_keeps_receiving(two_workers):
    first, _ = two_workers
    config = Config.model_validate({"studies": {"quiet_seconds": 60, "max_wait_seconds": 1}})
    scheduler = DatabaseCompletion(first, config, 5)
    first.add_instance(instance("1.1"))
    assert scheduler.poll(now=time.time() + 2) == ["1.2.3"]


def test_a_restart_gives_a_study_received_before_it_a_whole_quiet_period(two_workers):
    """No sender could deliver while the node was down: a transfer cut by the stop is not completed the moment
    the completion scheduler starts again, but one quiet period later."""
    first, _ = two_workers
    config = Config.model_validate({"studies": {"quiet_seconds": 30, "max_wait_seconds": 60,
                                                "use_expected_counts": False}})
    first.add_instance(instance("1.1"))
    long_after = time.time() + 120  # the node was down longer than quiet_seconds and max_wait_seconds
    restarted = DatabaseCompletion(first, config, 5)
    restarted._started = long_after
    assert restarted.poll(now=long_after + 1) == []
    assert restarted.poll(now=long_after + 31) == ["1.2.3"]


def test_late_instance_during_analysis_supersedes_it_across_processes(two_workers):
    first, second = two_workers
    complete_study(first)
    analysis = first.start_analysis("1.2.3", 0)
    outcome = second.add_instance(instance("1.5"))  # another receiver
    assert outcome.generation == 1 and second.study("1.2.3")["claimed_by"] is None
    assert not first.finish_analysis(analysis, "1.2.3", 0, {}, [], [])
    assert first.study("1.2.3")["state"] == RECEIVED


def test_heartbeats_list_every_process_with_roles_and_claims(two_workers):
    first, second = two_workers
    complete_study(first)
    first.start_analysis("1.2.3", 0)
    started = time.time()
    first.heartbeat(["analyse"], started, {"analyses_done": 3})
    second.heartbeat(["receive", "complete"], started)
    report = {n["node_id"]: n for n in nodes_report(first, stale_after_seconds=30)}
    assert report["host-a:1"]["roles"] == ["analyse"] and report["host-a:1"]["analysing"] == ["1.2.3"]
    assert report["host-b:2"]["roles"] == ["receive", "complete"] and report["host-b:2"]["alive"]
    assert report["host-a:1"]["detail"] == {"analyses_done": 3}
    assert not nodes_report(first, now=time.time() + 60)[0]["alive"]
    second.forget_node()
    assert [n["node_id"] for n in nodes_report(first)] == ["host-a:1"]


def test_roles_parse_in_canonical_order_and_refuse_unknown_ones():
    assert parse_roles(None) == parse_roles("all") == ("receive", "complete", "analyse", "dispatch")
    assert parse_roles("dispatch, receive") == ("receive", "dispatch")
    with pytest.raises(ValueError, match="unknown role"):
        parse_roles("receive,analyze")


def test_dispatch_resolves_a_destination_by_name_when_sending(tmp_path):
    from dicomnode.config import DispatchConfig, DestinationConfig
    from dicomnode.dispatch import Dispatcher

    db = StateDB(tmp_path / "state.sqlite3")
    destinations = [DestinationConfig(name="pacs", ae_title="NEWPACS", host="10.0.0.2", port=11112)]
    dispatcher = Dispatcher(db, tmp_path, DispatchConfig(), "NODE", destinations=lambda: destinations)
    queued = {"destination": "pacs", "ae_title": "OLDPACS", "host": "10.0.0.1", "port": 104}
    assert dispatcher.address_of(queued) == ("NEWPACS", "10.0.0.2", 11112, "NODE")
    assert dispatcher.address_of({**queued, "destination": "sender"}) == ("OLDPACS", "10.0.0.1", 104, "NODE")
    # a destination's own calling AE title is what the node's deliveries use (as `dicomnode send` does)
    destinations[0] = destinations[0].model_copy(update={"calling_ae_title": "RESULTS_SCU"})
    assert dispatcher.address_of(queued) == ("NEWPACS", "10.0.0.2", 11112, "RESULTS_SCU")
    db.close()


# --- upgrades: versions side by side, schema newer than the code, config check ---------------------------------


def _set_schema(url, version: int) -> None:
    db = StateDB(url, upgrade=True)
    with db.engine.begin() as connection:
        connection.exec_driver_sql(f"UPDATE meta SET value='{version}' WHERE key='schema_version'")
    db.close()


def _pg_config(tmp_path, url) -> "Path":
    path = tmp_path / "node.toml"
    path.write_text(f'[node]\nstorage_dir = "{tmp_path / "store"}"\nport = 0\n[state]\nurl = "{url}"\n'
                    '[logging]\nlevel = "WARNING"\n')
    return path


def test_state_upgrade_refuses_while_processes_of_the_old_version_live(pg_server, tmp_path, capsys):
    from dicomnode.cli import main
    from dicomnode.state import schema_version

    url = pg_server.create_database()
    _set_schema(url, SCHEMA_VERSION - 1)
    old = StateDB(url, check=False, process_id="otherhost:4242")
    old.heartbeat(["analyse", "dispatch"], time.time(), {"ae_title": "OLD"})  # an older dicomnode: no version
    with old.engine.begin() as connection:  # on another machine
        connection.exec_driver_sql("UPDATE nodes SET host='otherhost', pid=4242")
    config = _pg_config(tmp_path, url)
    assert main(["state", "upgrade", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "otherhost pid 4242" in err and "analyse,dispatch" in err and "no version" in err and "Stop them first" in err
    assert schema_version(old.engine) == SCHEMA_VERSION - 1
    old.forget_node()  # stopped
    old.close()
    assert main(["state", "upgrade", "--yes", "--config", str(config)]) == 0
    db = StateDB(url)
    assert schema_version(db.engine) == SCHEMA_VERSION
    db.close()


def test_a_process_refuses_to_start_beside_live_processes_of_another_version(pg_server, tmp_path):
    from dicomnode import __version__
    from dicomnode.config import load_config
    from dicomnode.node import Node
    from dicomnode.roles import RoleRunner
    from dicomnode.state import MixedVersionsError

    url = pg_server.create_database()
    StateDB(url, upgrade=True).close()
    config = load_config(str(_pg_config(tmp_path, url)))
    first = Node(config, roles=("dispatch",))
    RoleRunner(first, ("dispatch",)).beat()  # records its version in the heartbeat
    [row] = nodes_report(first.db)
    assert row["detail"]["version"] == __version__ and row["detail"]["schema"] == SCHEMA_VERSION
    first.storage_lock.release()
    second = Node(config, roles=("analyse",))  # the same version beside it: fine
    second.db.close()
    second.storage_lock.release()
    with first.db.engine.begin() as connection:  # now it is an older dicomnode's row (it records no version)
        connection.exec_driver_sql("UPDATE nodes SET detail_json='{}', host='otherhost', node_id='otherhost:4242'")
    with pytest.raises(MixedVersionsError, match=r"otherhost pid \d+ \(roles dispatch, an older dicomnode"):
        Node(config, roles=("analyse",))
    first.db.close()


def test_a_schema_newer_than_the_code_says_to_run_the_newer_version(state_location):
    from dicomnode.state import upgrade_schema as upgrade

    _set_schema(state_location, SCHEMA_VERSION + 1)
    for attempt in (lambda: StateDB(state_location), lambda: StateDB(state_location, upgrade=False),
                    lambda: upgrade(StateDB(state_location, upgrade=False, check=False).engine)):
        with pytest.raises(StateSchemaError, match="upgraded by a newer dicomnode") as raised:
            attempt()
        assert "state upgrade" not in str(raised.value)


def test_an_older_schema_still_names_the_upgrade_command(pg_server):
    url = pg_server.create_database()
    _set_schema(url, SCHEMA_VERSION - 1)
    with pytest.raises(StateSchemaError, match=rf"schema version {SCHEMA_VERSION - 1}, this dicomnode needs "
                                               rf"{SCHEMA_VERSION}: run `dicomnode state upgrade`"):
        StateDB(url)


def test_config_check_reports_a_postgresql_schema_serve_would_refuse(pg_server, tmp_path, capsys):
    from dicomnode.cli import main
    from dicomnode.state import schema_version

    url = pg_server.create_database()
    _set_schema(url, SCHEMA_VERSION - 1)
    config = _pg_config(tmp_path, url)
    config.write_text(config.read_text().replace("port = 0\n", "port = 11112\n", 1))  # config check refuses port 0
    assert main(["config", "check", str(config), "--roles", "receive"]) == 1
    err = capsys.readouterr().err
    assert "state.url" in err and "dicomnode state upgrade" in err
    db = StateDB(url, upgrade=False, check=False)
    assert schema_version(db.engine) == SCHEMA_VERSION - 1  # not changed
    db.close()
    StateDB(url, upgrade=True).close()
    assert main(["config", "check", str(config), "--roles", "receive"]) == 0


def test_a_machine_whose_clock_is_off_the_servers_is_warned_about(two_workers, monkeypatch, caplog, capsys):
    """Several machines on one PostgreSQL compare times each wrote (quiet timers, leases, heartbeats): a clock off
    the server's by more than CLOCK_SKEW_WARN_SECONDS is logged once and shown by `status`; SQLite (one machine)
    has no server clock to compare with."""
    import logging

    from dicomnode import roles
    from dicomnode.cli import _print_status
    from dicomnode.node import status_report
    first, _ = two_workers
    watch = roles.ClockWatch(first)
    if first.engine.dialect.name != "postgresql":
        assert first.clock_offset() is None and watch.measure() is None
        return
    assert abs(first.clock_offset()) < 1.0  # one machine: the server's clock is this one's
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 45.0)  # this machine 45 s ahead
    with caplog.at_level(logging.INFO, logger="dicomnode.roles"):
        assert watch.measure() == pytest.approx(45.0, abs=1.0)
        watch.measure()
        monkeypatch.setattr(time, "time", real)
        assert abs(watch.measure()) < 1.0
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "ahead of the state database server's" in m]) == 1
    assert [m for m in messages if "clock is back within 2 s" in m]
    first.heartbeat(["analyse"], real(), {"clock_offset_s": -30.0})
    _print_status(status_report(first), False, 30, 100)
    assert "host-a:1: clock 30.0 s behind the state database server's" in capsys.readouterr().out
