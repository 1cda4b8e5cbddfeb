"""Spool and state: durable before acknowledged, stored once, bad UIDs refused, out of space writes nothing."""
import stat

import pytest

from dicomnode.spool import IncomingInstance, OutOfSpace, Spool
from dicomnode.state import COMPLETE, DONE, FAILED, RECEIVED, SENDING, StateDB
from dicomnode.uids import InvalidUID, check_uid
from tests.state_backends import pg_server, state_location  # noqa: F401 (fixtures)


def incoming(sop="1.2.3.4.1", study="1.2.3", series="1.2.3.4", payload=b"DICM-bytes"):
    return IncomingInstance(encoded=payload, sop_instance_uid=sop, sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
                            study_instance_uid=study, series_instance_uid=series, transfer_syntax="1.2.840.10008.1.2.1",
                            modality="MR", study_key=study, calling_ae="SCANNER1")


@pytest.fixture
def spool(tmp_path, state_location):
    db = StateDB(state_location, upgrade=True)
    yield Spool(tmp_path, db)
    db.close()


def test_store_writes_bytes_as_received_and_indexes_them(spool, tmp_path):
    outcome = spool.store(incoming(payload=b"exact bytes"))
    assert outcome.stored and outcome.study_state_before is None
    row = spool.db.study_instances("1.2.3")[0]
    path = tmp_path / row["path"]
    assert path.read_bytes() == b"exact bytes"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    if spool.db.is_sqlite:
        assert stat.S_IMODE((tmp_path / "state.sqlite3").stat().st_mode) == 0o600
    assert not list(tmp_path.rglob("*.tmp"))


def test_duplicate_sop_instance_is_stored_once(spool, tmp_path):
    assert spool.store(incoming()).stored
    assert not spool.store(incoming(payload=b"other")).stored
    rows = spool.db.study_instances("1.2.3")
    assert len(rows) == 1
    assert (tmp_path / rows[0]["path"]).read_bytes() == b"DICM-bytes", "the first copy is kept, not overwritten"


def test_a_sop_instance_resent_under_another_study_or_series_leaves_no_unindexed_file(spool, tmp_path):
    assert spool.store(incoming()).stored
    for other in (incoming(study="1.2.9", payload=b"other study"), incoming(series="1.2.3.9", payload=b"other series")):
        outcome = spool.store(other)
        assert not outcome.stored
    files = sorted(p for p in (tmp_path / "spool").rglob("*") if p.is_file())
    assert [p.read_bytes() for p in files] == [b"DICM-bytes"]
    assert spool.db.instance_path("1.2.3.4.1") == str(files[0].relative_to(tmp_path))
    assert spool.db.instance_path("9.9.9") is None


@pytest.mark.parametrize("field, value", [
    ("sop_instance_uid", "../../etc/passwd"), ("sop_instance_uid", "1.2.3/4"), ("study_instance_uid", "1." + "2" * 70),
    ("series_instance_uid", ""), ("sop_class_uid", "1.2.abc"),
])
def test_invalid_uids_are_refused_before_anything_is_written(spool, tmp_path, field, value):
    instance = incoming()
    setattr(instance, field, value)
    with pytest.raises(InvalidUID):
        spool.store(instance)
    assert not list((tmp_path / "spool").rglob("*.dcm"))


def test_uid_rules():
    assert check_uid("1.2.840.10008.1.2") == "1.2.840.10008.1.2"
    assert check_uid("1.3.12.2.1107.5.2.0032.1\x00") == "1.3.12.2.1107.5.2.0032.1"  # padding, leading zeros tolerated
    with pytest.raises(InvalidUID, match="not digits and dots"):
        check_uid("1.2.3a")
    with pytest.raises(InvalidUID, match="at most 64"):
        check_uid("1." * 40 + "1")


def test_out_of_space_refuses_and_writes_nothing(tmp_path, state_location):
    db = StateDB(state_location, upgrade=True)
    spool = Spool(tmp_path, db, min_free_space_mb=10**12)
    with pytest.raises(OutOfSpace, match="under the floor"):
        spool.store(incoming())
    assert not list((tmp_path / "spool").rglob("*"))
    assert db.study_instances("1.2.3") == []


def test_crash_leftovers_are_removed(spool, tmp_path):
    leftover = tmp_path / "spool" / "ab" / ".x.dcm.1.tmp"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"partial")
    assert spool.remove_temporaries() == 1
    assert not leftover.exists()


def test_late_instance_reopens_a_finished_study_with_a_new_generation(spool):
    spool.store(incoming(sop="1.1"))
    db = spool.db
    assert db.set_study_state("1.2.3", COMPLETE, expect=(RECEIVED,))
    analysis = db.start_analysis("1.2.3", 0)
    assert db.finish_analysis(analysis, "1.2.3", 0, {"x": 1}, [("9.1", "9", "1.2", "r/9.1.dcm")], [])
    assert db.study("1.2.3")["state"] == DONE
    outcome = spool.store(incoming(sop="1.2"))
    assert outcome.study_state_before == DONE and outcome.generation == 1
    assert db.study("1.2.3")["state"] == RECEIVED


@pytest.mark.parametrize("sop_class", ["1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.88.34",
                                       "1.2.840.10008.5.1.4.1.1.104.1", "1.2.840.10008.5.1.4.1.1.88.59"])
def test_a_late_object_no_analysis_reads_is_kept_without_reopening(spool, sop_class):
    # SEG, Comprehensive 3D SR, Encapsulated PDF (the node's own results routed back by the PACS), Key Object
    spool.store(incoming(sop="1.1"))
    db = spool.db
    db.set_study_state("1.2.3", COMPLETE, expect=(RECEIVED,))
    analysis = db.start_analysis("1.2.3", 0)
    late = incoming(sop="1.2")
    late.sop_class_uid = sop_class
    outcome = spool.store(late)  # arrives during the analysis: it must not supersede it
    assert outcome.stored and not outcome.reopened and outcome.generation == 0
    assert db.finish_analysis(analysis, "1.2.3", 0, {"x": 1}, [("9.1", "9", "1.2", "r/9.1.dcm")], [])
    late = incoming(sop="1.3")
    late.sop_class_uid = sop_class
    outcome = spool.store(late)  # and after the results went out
    assert outcome.study_state_before == DONE and not outcome.reopened
    assert db.study("1.2.3")["state"] == DONE and db.study("1.2.3")["generation"] == 0
    assert len(db.study_instances("1.2.3")) == 3  # kept in the spool all the same


def test_stale_analysis_is_superseded_not_recorded(spool):
    spool.store(incoming(sop="1.1"))
    db = spool.db
    db.set_study_state("1.2.3", COMPLETE)
    analysis = db.start_analysis("1.2.3", 0)
    spool.store(incoming(sop="1.2"))  # arrives during the analysis
    assert not db.finish_analysis(analysis, "1.2.3", 0, {}, [("9.1", "9", "1.2", "r/9.1.dcm")], [])
    assert db.result_count() == 0


def test_outbox_settles_study_done_or_failed_and_retry_requeues(spool):
    spool.store(incoming(sop="1.1"))
    db = spool.db
    db.set_study_state("1.2.3", COMPLETE)
    analysis = db.start_analysis("1.2.3", 0)
    items = [{"destination": "pacs", "ae_title": "P", "host": "127.0.0.1", "port": 1, "sop_instance_uid": s,
              "path": f"r/{s}.dcm"} for s in ("9.1", "9.2")]
    db.finish_analysis(analysis, "1.2.3", 0, {}, [], items)
    assert db.study("1.2.3")["state"] == SENDING
    first, second = db.due_sends()
    db.mark_sent([first["id"]])
    assert db.study("1.2.3")["state"] == SENDING
    db.mark_failed_send(second["id"], "refused", 0.0, dead=True)
    assert db.study("1.2.3")["state"] == FAILED
    assert "dead letter" in db.study("1.2.3")["reason"]
    assert db.retry_dead("1.2.3") == 1
    assert db.study("1.2.3")["state"] == SENDING
    db.mark_sent([second["id"]])
    assert db.study("1.2.3")["state"] == DONE


def test_an_analysis_without_result_objects_says_why_in_the_study_reason(spool):
    spool.store(incoming(sop="1.1"))
    db = spool.db
    db.set_study_state("1.2.3", COMPLETE)
    analysis = db.start_analysis("1.2.3", 0)
    summary = {"declined": [{"series_instance_uid": None, "reason": "pipeline lge is unavailable: model 'lge_unet' "
                                                                     "is not installed in /nope"},
                            ],
               "not_analysed": [{"analysis": "cine", "reason": "no cine short-axis series in the study"}]}
    assert db.finish_analysis(analysis, "1.2.3", 0, summary, [], [])
    study = db.study("1.2.3")
    assert study["state"] == DONE
    assert study["reason"] == ("no result objects: pipeline lge is unavailable: model 'lge_unet' is not installed in "
                               "/nope; no cine short-axis series in the study")


def test_a_result_object_that_could_not_be_built_stays_in_the_reason_of_a_done_study(spool):
    """break43b #4: a measurement SR that raised left the study `done` with no reason, its other objects sent."""
    spool.store(incoming(sop="1.1"))
    db = spool.db
    db.set_study_state("1.2.3", COMPLETE)
    analysis = db.start_analysis("1.2.3", 0)
    summary = {"declined": [{"series_instance_uid": "9", "reason": "measurement SR (TID 1500) not written: "
                                                                   "ValueError: could not convert string to float"}]}
    items = [{"destination": "pacs", "ae_title": "P", "host": "127.0.0.1", "port": 1, "sop_instance_uid": "9.1",
              "path": "r/9.1.dcm"}]
    assert db.finish_analysis(analysis, "1.2.3", 0, summary, [("9.1", "9", "1.2", "r/9.1.dcm")], items)
    expected = "result object(s) not built: measurement SR (TID 1500) not written: ValueError: could not convert"
    assert db.study("1.2.3")["reason"].startswith(expected)
    (send,) = db.due_sends()
    db.mark_sent([send["id"]])
    assert db.study("1.2.3")["state"] == DONE and db.study("1.2.3")["reason"].startswith(expected)


def test_sqlite_writers_of_several_processes_take_turns_on_the_write_lock(tmp_path):
    """Processes sharing one SQLite file (node.receive_processes, several --roles processes) queue on an flock of
    <state>.writelock, held for exactly the write transaction, owner-only."""
    import fcntl
    import os
    import subprocess
    import sys

    db = StateDB(tmp_path / "state.sqlite3")
    lock = tmp_path / "state.sqlite3.writelock"
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    probe = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR)\n"
             "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); print('free')\n"
             "except BlockingIOError:\n    print('held')\n")

    def seen_by_another_process() -> str:
        return subprocess.run([sys.executable, "-c", probe, str(lock)], capture_output=True, text=True).stdout.strip()

    assert seen_by_another_process() == "free"
    with db._write():
        assert seen_by_another_process() == "held"
    assert seen_by_another_process() == "free"
    fd = os.open(lock, os.O_RDWR)  # another holder: this process's next write waits for it, then succeeds
    fcntl.flock(fd, fcntl.LOCK_EX)
    import threading
    done = threading.Event()
    writer = threading.Thread(target=lambda: (db.add_instance(_row()), done.set()))
    writer.start()
    assert not done.wait(0.5), "wrote while another process held the write lock"
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    assert done.wait(10)
    writer.join()
    db.close()


def _row():
    import time

    from dicomnode.state import InstanceRow
    return InstanceRow(sop_instance_uid="1.2.3.9", study_key="1.2.3", study_instance_uid="1.2.3",
                       series_instance_uid="1.2.3.4", sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
                       transfer_syntax="1.2.840.10008.1.2.1", modality="MR", path="spool/a/b.dcm", size=1,
                       calling_ae="SCANNER1", received_at=time.time(), series_number=None, slice_key=None,
                       cardiac_images=None, frames=None, images_in_acquisition=None)
