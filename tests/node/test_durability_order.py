"""The node's central promise: C-STORE success (0x0000) only once the instance is durable.

Durable means, in this order: the file's bytes fsynced, the file renamed into place, its folder fsynced (and the
folder's own entry, for a folder made for it), the index entry committed; only then the handler returns 0x0000.
The test records every os.fsync / os.replace, the index commit (StateDB.add_instance returning) and the status
the C-STORE handler returns, through a real association to a real node. The last tests remove one step at a time
and show that the check then fails.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import dicomnode.spool
from dicomnode.config import Config
from dicomnode.net.scp import StorageSCP
from dicomnode.node import Node
from dicomnode.state import StateDB, StoreOutcome
from tests.hardening.hardening_support import store_one, synthetic_mr


class NoAnalysis:
    def warm_up(self, names):
        return {}


def _target(fd: int) -> str:
    return os.path.realpath(os.readlink(f"/proc/self/fd/{fd}"))


@pytest.fixture
def recorded(tmp_path, monkeypatch):
    """A started node whose fsyncs, renames, index commits and C-STORE statuses land in one list, in order."""
    events: list[tuple] = []
    real_fsync, real_replace = os.fsync, os.replace
    real_add, real_store = StateDB.add_instance, StorageSCP._handle_store

    def fsync(fd):
        real_fsync(fd)
        events.append(("fsync", _target(fd)))

    def replace(source, target, **kwargs):
        real_replace(source, target, **kwargs)
        events.append(("replace", os.path.realpath(source), os.path.realpath(target)))

    def add_instance(self, row, calling_host=None, **options):
        outcome = real_add(self, row, calling_host, **options)
        events.append(("indexed", row.sop_instance_uid, os.path.realpath(self.path.parent / row.path)))
        return outcome

    def handle_store(self, event):
        status = real_store(self, event)
        code = status if isinstance(status, int) else int(status.Status)
        events.append(("status", str(event.request.AffectedSOPInstanceUID), code))
        return status

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(StateDB, "add_instance", add_instance)
    monkeypatch.setattr(StorageSCP, "_handle_store", handle_store)
    config = Config.model_validate({"node": {"port": 0, "storage_dir": str(tmp_path / "store"),
                                             "min_free_space_mb": 0, "allowed_calling_aes": ["*"]},
                                    "studies": {"quiet_seconds": 3600}})
    node = Node(config, analyser=NoAnalysis())
    node.start(warm_up=False)
    try:
        yield node, events
    finally:
        node.stop()


def check_durable_before_success(events: list[tuple], sop_instance_uid: str, created: list[Path]) -> None:
    """Raises AssertionError unless, before the 0x0000 of `sop_instance_uid`: its file was fsynced then renamed
    into place, its folder fsynced after the rename, each folder in `created` had its parent fsynced after it
    was made, and the index entry was committed after all of that."""
    position = {event: index for index, event in enumerate(events)}
    status = next(i for i, e in enumerate(events) if e[0] == "status" and e[1] == sop_instance_uid)
    assert events[status][2] == 0x0000, events[status]
    indexed = next((i for i, e in enumerate(events) if e[0] == "indexed" and e[1] == sop_instance_uid), None)
    assert indexed is not None and indexed < status, "0x0000 before the index entry was committed"
    final = events[indexed][2]
    renamed = next((i for i, e in enumerate(events) if e[0] == "replace" and e[2] == final), None)
    assert renamed is not None and renamed < indexed, "indexed before the file was in place"
    temporary = events[renamed][1]
    assert ("fsync", temporary) in position and position[("fsync", temporary)] < renamed, \
        "the file was renamed into place before its bytes were fsynced"
    folder_synced = [i for i, e in enumerate(events) if e == ("fsync", os.path.dirname(final))]
    assert any(renamed < i < indexed for i in folder_synced), \
        "the folder was not fsynced between the rename and the index commit"
    for folder in created:
        parent_synced = [i for i, e in enumerate(events) if e == ("fsync", os.path.realpath(folder.parent))]
        assert any(i < indexed for i in parent_synced), f"the new folder {folder} was never made durable in its parent"


def _store(node, events):
    dataset = synthetic_mr()
    spool_before = {p for p in node.spool.spool_dir.rglob("*") if p.is_dir()}
    response = store_one(node.scp.port, dataset)
    assert response is not None and response.Status == 0x0000
    created = sorted({p for p in node.spool.spool_dir.rglob("*") if p.is_dir()} - spool_before)
    return str(dataset.SOPInstanceUID), created


def test_success_is_sent_only_after_file_folder_and_index_are_durable(recorded):
    node, events = recorded
    sop, created = _store(node, events)
    assert len(created) == 2  # the study's and the series' folder
    check_durable_before_success(events, sop, created)
    second, _ = _store(node, events)  # and again, into folders that now exist
    check_durable_before_success(events, second, [])


@pytest.mark.parametrize("mutation", ["no file fsync", "no folder fsync", "no new-folder fsync", "ack first"])
def test_the_check_fails_when_a_step_is_left_out(recorded, monkeypatch, mutation):
    """The order check is not vacuous: with one step of the spool removed, it fails."""
    node, events = recorded
    real_fsync, real_fsync_directory = os.fsync, dicomnode.spool.fsync_directory
    if mutation == "no file fsync":  # fsync only directories
        monkeypatch.setattr(os, "fsync", lambda fd: os.path.isdir(_target(fd)) and real_fsync(fd))
    elif mutation == "no folder fsync":
        monkeypatch.setattr(dicomnode.spool, "fsync_directory", lambda path: None)
    elif mutation == "no new-folder fsync":
        monkeypatch.setattr(dicomnode.spool, "fsync_directory",
                            lambda path: None if path == node.spool.spool_dir else real_fsync_directory(path))
    else:  # acknowledged before storing: the spool write happens after the handler returned
        real_store = node.spool.store
        pending = []
        monkeypatch.setattr(node.spool, "store", lambda instance, calling_host=None: pending.append(instance)
                            or StoreOutcome(False, instance.study_key, None, 0))
    sop, created = _store(node, events)
    if mutation == "ack first":
        real_store(pending.pop())
    with pytest.raises(AssertionError):
        check_durable_before_success(events, sop, created)
