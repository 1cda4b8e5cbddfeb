"""Guards a reviewer of stop 59's changes asked for (review42): a dispatcher retiring a removed destination never
overwrites a send another process holds or made; a failed interruption mark is tried again; a receiver writes its
open studies only when one is new; a pid reused by a later process is not the heartbeat's writer; the space
reserve is kept only where deleting it can give the state database room."""
from __future__ import annotations

import os
import socket
import threading
import time
from types import SimpleNamespace

import sqlalchemy

from dicomnode import roles
from dicomnode.config import Config, DestinationConfig, DispatchConfig, RetentionConfig
from dicomnode.dispatch import Dispatcher
from dicomnode.retention import Retention
from dicomnode.roles import DatabaseCompletion, RoleRunner, _pid_gone
from dicomnode.state import StateDB, prepare_storage_dir
from tests.node.test_ops_lifecycle import _pending_to


def test_retiring_a_removed_destination_never_overwrites_a_send_another_process_holds(tmp_path):
    root = prepare_storage_dir(tmp_path / "store")
    db = StateDB(root / "state.sqlite3", upgrade=True)
    _pending_to(db, root, "1.1", ["pacs"])
    (item,) = db.outbox_for("1.1")
    archive = DestinationConfig(name="archive", ae_title="ARCHIVE", host="127.0.0.1", port=9)
    old_config = Dispatcher(db, root, DispatchConfig(max_attempts=10), "DICOMNODE", destinations=lambda: [archive])
    with db._write() as connection:  # another dispatcher (whose config still has pacs) is sending it
        connection.execute(sqlalchemy.text("UPDATE outbox SET claimed_by='host-b:2', lease_until=:until WHERE id=:id"),
                           {"until": time.time() + 60, "id": item["id"]})
    assert old_config.retire_removed_destinations([db.outbox_for("1.1")[0]]) == 0
    assert db.outbox_for("1.1")[0]["state"] == "pending"
    with db._write() as connection:  # ... and has sent it
        connection.execute(sqlalchemy.text("UPDATE outbox SET state='sent', claimed_by=NULL WHERE id=:id"),
                           {"id": item["id"]})
    assert old_config.retire_removed_destinations([dict(item)]) == 0  # rows read before the send
    assert db.outbox_for("1.1")[0]["state"] == "sent"
    db.close()


def test_a_failed_interruption_mark_is_tried_again(tmp_path, monkeypatch):
    db = StateDB(tmp_path / "state.sqlite3")
    completion = DatabaseCompletion(db, Config.model_validate({}), 30)
    calls = []

    def record_interruption(db_, key, cause, config):
        calls.append(key)
        if len(calls) == 1:
            raise sqlalchemy.exc.OperationalError("UPDATE", {}, Exception("connection refused"))
        return 3

    monkeypatch.setattr(roles, "record_interruption", record_interruption)
    now = time.time()
    study = {"study_key": "1.2.3", "study_instance_uid": "1.2.3", "last_received": now - 1, "reason": None,
             "state": "received"}
    receiver = ({"node_id": "host-b:2", "host": "host-b", "pid": 2, "last_seen": now - 30}, "it died")
    try:
        completion._waits_for_receiver(study, [receiver], "quiet")
    except sqlalchemy.exc.OperationalError:
        pass
    else:
        raise AssertionError("the outage was not raised to the completion round")
    assert completion._waits_for_receiver(study, [receiver], "quiet") is True  # marked at the next round
    assert calls == ["1.2.3", "1.2.3"]
    db.close()


def test_a_receiver_writes_its_open_studies_only_when_one_is_new():
    beats, soon = [], []
    runner = SimpleNamespace(node=SimpleNamespace(stopping=False, scp=SimpleNamespace(open_studies=lambda: open_now)),
                             _beat_lock=threading.Lock(), _published=set(), _stop=threading.Event(),
                             _publish_soon=lambda: soon.append(list(open_now)),
                             _receiving=lambda: set(open_now))

    def heartbeat():
        beats.append(list(open_now))
        runner._published = set(open_now)

    runner._heartbeat = heartbeat
    open_now = ["1.2.3"]
    RoleRunner.publish_receiving(runner)  # a new study: written before its first instance is stored
    open_now = []
    RoleRunner.publish_receiving(runner)  # its association ended: written soon, unless listed again by then
    assert soon == [[]]
    open_now = ["1.2.3"]
    RoleRunner.publish_receiving(runner)  # the next association of the same study (one per instance)
    open_now = ["1.2.3", "1.2.4"]
    RoleRunner.publish_receiving(runner)
    assert beats == [["1.2.3"], ["1.2.3", "1.2.4"]]


def test_a_pid_reused_by_a_later_process_is_not_the_heartbeats_writer():
    here = socket.gethostname()
    assert not _pid_gone(here, os.getpid(), time.time())  # this process wrote a heartbeat just now
    assert _pid_gone(here, os.getpid(), time.time() - 3600)  # a heartbeat older than this process: another's
    assert not _pid_gone("another-host", os.getpid(), time.time() - 3600)  # another machine's: not known here


def test_the_space_reserve_is_kept_only_where_it_can_give_the_state_room(tmp_path):
    store = prepare_storage_dir(tmp_path / "store")
    db = StateDB(store / "state.sqlite3", upgrade=True)
    config = RetentionConfig(days=30, emergency_free_space_mb=4)
    sqlite = Retention(db, store, config, lambda: 1000.0)
    sqlite._keep_reserve()
    assert sqlite.reserve.present and sqlite.reserve.path.stat().st_size == sqlite.reserve.size_mb * 1024 * 1024
    shared = Retention(SimpleNamespace(is_sqlite=False, url="postgresql://dicomnode@db.example/dicomnode"), store,
                       config, lambda: 1000.0, reserve=sqlite.reserve)
    assert shared._reserve_missing_mb() == 0.0
    shared._keep_reserve()  # PostgreSQL: deleting it could never give the database room
    assert not sqlite.reserve.present
    db.close()
