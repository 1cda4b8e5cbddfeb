"""A real node on loopback: a transfer cut by a stop of the node or an aborted association is said, and waits for
a re-send or the full max wait instead of the quiet timer (break3 L4); a C-STORE request without an Affected SOP
Instance UID is answered at once with 0xC000 and logged (break3 L6)."""
from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE

from dicomnode.config import Config
from dicomnode.net.scp import StorageSCP
from dicomnode.node import Node, summary_of
from dicomnode.roles import RELEASED_PUBLISH_SECONDS, RoleRunner
from dicomnode.state import RECEIVED
from dicomnode.types import StudyOutcome
from tests.hardening.hardening_support import store_one, synthetic_mr


class NoAnalysis:
    def warm_up(self, names):
        return {}

    def analyse(self, study, pipelines, started_at=None, supersedes=None):
        """Declines, with the study's own declined reasons first (as analysis.run.Analyser does)."""
        return StudyOutcome(summary={"study_instance_uid": study.study_instance_uid,
                                     "declined": [d.summary() for d in study.declined]
                                     + [{"series_instance_uid": None, "reason": "not analysed here"}]})


def _config(tmp_path, node=None, **studies) -> Config:
    return Config.model_validate({"node": {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 0,
                                           "allowed_calling_aes": ["*"], **(node or {})},
                                  "studies": {"quiet_seconds": 1, "max_wait_seconds": 3600, **studies}})


def _association(port: int, dataset, calling: str = "SCANNER1"):
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(str(dataset.SOPClassUID), str(dataset.file_meta.TransferSyntaxUID))
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMNODE")
    assert assoc.is_established
    return assoc


def _wait(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def test_an_aborted_association_leaves_its_study_waiting_for_a_resend(tmp_path, caplog):
    node = Node(_config(tmp_path, quiet_seconds=3), analyser=NoAnalysis())
    node.start(warm_up=False)
    try:
        study, series = generate_uid(), generate_uid()
        datasets = [synthetic_mr(study_uid=study, series_uid=series, instance=i, position=8.0 * i) for i in range(3)]
        assoc = _association(node.scp.port, datasets[0])
        for dataset in datasets[:2]:
            assert assoc.send_c_store(dataset).Status == 0
        with caplog.at_level(logging.WARNING):
            assoc.abort()
            assert _wait(lambda: (node.db.study(study)["reason"] or "").startswith("incomplete: transfer"))
        reason = node.db.study(study)["reason"]
        assert reason == ("incomplete: transfer interrupted (2 instance(s) received when the association was aborted); "
                          "the study may be incomplete: waiting the full max wait (studies.max_wait_seconds=3600) "
                          "for a re-send")
        assert any("transfer interrupted (2 instance(s) received" in r.getMessage() for r in caplog.records)
        time.sleep(3.5)  # the quiet time (3 s) passes: still receiving
        assert node.db.study(study)["state"] == RECEIVED
        assert store_one(node.scp.port, datasets[2]).Status == 0  # the re-send, released
        assert node.db.study(study)["reason"] is None
        assert _wait(lambda: node.db.study(study)["state"] != RECEIVED)
    finally:
        node.stop()


def test_an_abort_after_a_series_its_headers_call_whole_does_not_hold_the_study(tmp_path):
    """A sender that ends every association by A-ABORT after a whole transfer (the headers' ImagesInAcquisition all
    received: ExpectedCounts met) is not held for max wait: the study completes as usual."""
    node = Node(_config(tmp_path, quiet_seconds=2), analyser=NoAnalysis())
    node.start(warm_up=False)
    try:
        study, series = generate_uid(), generate_uid()
        datasets = [synthetic_mr(study_uid=study, series_uid=series, instance=i, position=8.0 * i) for i in range(3)]
        for dataset in datasets:
            dataset.ImagesInAcquisition = 3
        assoc = _association(node.scp.port, datasets[0])
        for dataset in datasets:
            assert assoc.send_c_store(dataset).Status == 0
        assoc.abort()
        assert _wait(lambda: node.db.study(study)["state"] != RECEIVED, timeout=15)
        assert "transfer interrupted" not in (node.db.study(study)["reason"] or "")
    finally:
        node.stop()


@pytest.mark.parametrize("idle, partial, marked", [(False, False, True), (True, False, False), (True, True, True)])
def test_only_an_abort_that_may_cut_a_transfer_marks_its_studies(tmp_path, idle, partial, marked):
    """A peer's A-ABORT (or a lost connection) marks the association's studies; the node ending a silent association
    at node.network_timeout between two messages (every instance answered: a sender keeping it open) does not,
    unless a message was half received."""
    aborted = []
    scp = StorageSCP(_config(tmp_path), spool=None, on_aborted=aborted.append)
    assoc = SimpleNamespace(requestor=SimpleNamespace(ae_title="SCANNER1 ", address="127.0.0.1"), dicomnode_stored=2,
                            dicomnode_studies={"1.2.3": None},
                            dul=SimpleNamespace(idle_timer_expired=lambda: idle),
                            dimse=SimpleNamespace(message=object() if partial else None))
    scp._handle_aborted(SimpleNamespace(assoc=assoc))
    assert aborted == (["1.2.3"] if marked else [])


def _stopped_mid_transfer(tmp_path, datasets, quiet_seconds: float = 3600) -> None:
    """A node that receives `datasets` on one association and is stopped (SIGTERM) with that association open."""
    node = Node(_config(tmp_path, quiet_seconds=quiet_seconds), analyser=NoAnalysis())
    node.start(warm_up=False)
    assoc = None
    try:
        assoc = _association(node.scp.port, datasets[0])
        for dataset in datasets:
            assert assoc.send_c_store(dataset).Status == 0
    finally:
        node.stop()
        if assoc is not None:
            assoc.abort()


def _crashed(node: Node) -> None:
    """What kill -9 leaves of a node: its associations gone, nothing marked and no clean stop recorded."""
    node.scp.on_aborted = None  # nothing runs any more: no abort is seen either
    node.scp._server.shutdown()
    for assoc in list(node.scp._server.active_associations):
        assoc.abort()
    node.scp._server = None
    node.scheduler.shutdown(wait=False)
    node.dispatcher.stop()
    node.db.close()
    node.storage_lock.release()


def test_a_study_whose_transfer_the_stop_cut_waits_for_a_resend_after_the_restart(tmp_path):
    study = generate_uid()
    _stopped_mid_transfer(tmp_path, [synthetic_mr(study_uid=study, instance=i, position=8.0 * i) for i in range(2)])
    restarted = Node(_config(tmp_path, quiet_seconds=1), analyser=NoAnalysis())
    restarted.start(warm_up=False)
    try:
        row = restarted.db.study(study)
        assert row["state"] == RECEIVED
        assert row["reason"].startswith("incomplete: transfer interrupted (2 instance(s) received when the node "
                                        "stopped); the study may be incomplete")
        job = restarted.scheduler.get_job(f"maxwait:{study}")
        assert job is not None and job.next_run_time.timestamp() > time.time() + 3500  # the full max wait, from now
        assert restarted.scheduler.get_job(f"quiet:{study}") is None
        assert restarted.status()["studies"][0]["reason"] == row["reason"]
        time.sleep(1.5)  # the new quiet time passes: the study still waits for its sender
        assert restarted.db.study(study)["state"] == RECEIVED
    finally:
        restarted.stop()


def test_a_stop_does_not_mark_a_study_sent_on_released_associations(tmp_path):
    """review42 #3: a clean stop marks only the transfers it cut, on one machine as in scale-out; a study whose
    associations were released before the stop goes on with its quiet timer, counted from the restart."""
    node = Node(_config(tmp_path, quiet_seconds=3600), analyser=NoAnalysis())
    node.start(warm_up=False)
    study = generate_uid()
    try:
        for index in range(2):
            assert store_one(node.scp.port, synthetic_mr(study_uid=study, instance=index, position=8.0 * index)) \
                .Status == 0
    finally:
        node.stop()
    restarted = Node(_config(tmp_path, quiet_seconds=1), analyser=NoAnalysis())
    began = time.time()
    restarted.start(warm_up=False)
    try:
        row = restarted.db.study(study)
        assert row["state"] == RECEIVED and row["reason"] is None
        job = restarted.scheduler.get_job(f"quiet:{study}")
        assert job is not None and job.next_run_time.timestamp() >= began + 1 - 0.01  # the downtime is no quiet
        assert _wait(lambda: restarted.db.study(study)["state"] != RECEIVED)
        assert "transfer interrupted" not in (restarted.db.study(study)["reason"] or "")
    finally:
        restarted.stop()


def _runner_crashed(runner: RoleRunner) -> None:
    """What kill -9 leaves of `serve`: its heartbeat row as last written, nothing marked, no clean stop recorded."""
    runner._stop.set()
    runner._beats_stop.set()
    runner._join()
    _crashed(runner.node)


def test_after_a_crash_only_the_studies_of_associations_open_at_the_crash_are_marked(tmp_path):
    """break44c #2: a study its sender sent completely (association released) before a kill -9 goes on with its
    quiet timer after the restart; only the study an association still open at the crash was sending is marked
    interrupted (the crashed run's heartbeat listed it: detail.receiving)."""
    released, open_, before = generate_uid(), generate_uid(), generate_uid()
    first = Node(_config(tmp_path, quiet_seconds=3600), analyser=NoAnalysis())
    first_runner = RoleRunner(first)
    first_runner.start(warm_up=False)
    try:
        assert store_one(first.scp.port, synthetic_mr(study_uid=before)).Status == 0
    finally:
        first_runner.stop()  # clean: recorded, and the study stays on its quiet timer
    node = Node(_config(tmp_path, quiet_seconds=3600), analyser=NoAnalysis())
    runner = RoleRunner(node)
    runner.start(warm_up=False)
    assoc = None
    try:
        assert node.db.study(before)["reason"] is None
        assoc = _association(node.scp.port, synthetic_mr())
        assert assoc.send_c_store(synthetic_mr(study_uid=open_)).Status == 0
        assert store_one(node.scp.port, synthetic_mr(study_uid=released)).Status == 0  # its association released
        time.sleep(RELEASED_PUBLISH_SECONDS + 0.5)
    finally:
        _runner_crashed(runner)
        if assoc is not None:
            assoc.abort()
    assert all(node.db.study(key)["reason"] is None for key in (before, released, open_))  # nothing marked yet
    restarted = Node(_config(tmp_path, quiet_seconds=1), analyser=NoAnalysis())
    restarted.start(warm_up=False)
    try:
        row = restarted.db.study(open_)
        assert row["state"] == RECEIVED and row["reason"].startswith(
            "incomplete: transfer interrupted (1 instance(s) received when the node stopped)")
        assert restarted.scheduler.get_job(f"quiet:{open_}") is None
        for key in (before, released):
            assert restarted.db.study(key)["reason"] is None, key
            assert restarted.scheduler.get_job(f"quiet:{key}") is not None
        assert _wait(lambda: all(restarted.db.study(key)["state"] != RECEIVED for key in (before, released)))
        assert all("transfer interrupted" not in (restarted.db.study(key)["reason"] or "") for key in (before, released))
        assert restarted.db.study(open_)["state"] == RECEIVED
    finally:
        restarted.stop()


def test_after_a_crash_without_a_record_of_its_open_associations_every_study_receiving_is_marked(tmp_path):
    """kill -9 (or a stop that could not mark what it cut) leaves no record of a clean stop; where no heartbeat
    row says what the open associations were sending (a release that kept none, a row removed, a node run without
    one), the next start marks every study still receiving, whether its association was open or released (break44a
    #1: the safe side); a clean stop's record is used once."""
    released, open_, before = generate_uid(), generate_uid(), generate_uid()
    first = Node(_config(tmp_path, quiet_seconds=3600), analyser=NoAnalysis())
    first.start(warm_up=False)
    try:
        assert store_one(first.scp.port, synthetic_mr(study_uid=before)).Status == 0
    finally:
        first.stop()  # clean: recorded, and the study stays on its quiet timer
    node = Node(_config(tmp_path, quiet_seconds=3600), analyser=NoAnalysis())
    node.start(warm_up=False)
    assoc = None
    try:
        assert node.db.study(before)["reason"] is None
        assert store_one(node.scp.port, synthetic_mr(study_uid=released)).Status == 0
        assoc = _association(node.scp.port, synthetic_mr())
        assert assoc.send_c_store(synthetic_mr(study_uid=open_)).Status == 0
    finally:
        _crashed(node)
        if assoc is not None:
            assoc.abort()
    assert all(node.db.study(key)["reason"] is None for key in (before, released, open_))  # nothing marked yet
    restarted = Node(_config(tmp_path, quiet_seconds=1), analyser=NoAnalysis())
    restarted.start(warm_up=False)
    try:
        for key in (before, released, open_):
            row = restarted.db.study(key)
            assert row["state"] == RECEIVED and row["reason"].startswith(
                "incomplete: transfer interrupted (1 instance(s) received when the node stopped)"), key
            assert restarted.scheduler.get_job(f"quiet:{key}") is None
    finally:
        restarted.stop()


def test_a_failed_mark_at_stop_leaves_the_restart_to_mark_every_study_receiving(tmp_path, monkeypatch):
    node = Node(_config(tmp_path, quiet_seconds=3600), analyser=NoAnalysis())
    node.start(warm_up=False)
    study = generate_uid()
    try:
        assert store_one(node.scp.port, synthetic_mr(study_uid=study)).Status == 0
    finally:
        def unreachable():
            raise OSError("state database unreachable")
        monkeypatch.setattr(node.db, "record_receiver_stopped", unreachable)
        node.stop()
    restarted = Node(_config(tmp_path, quiet_seconds=1), analyser=NoAnalysis())
    restarted.start(warm_up=False)
    try:
        assert restarted.db.study(study)["reason"].startswith("incomplete: transfer interrupted")
    finally:
        restarted.stop()


@pytest.mark.parametrize("stored_ago, in_flight, cut", [
    ((0.5, 100.0), False, ["A"]),            # stored within the quiet time: maybe paused, so cut
    ((100.0, 100.0), False, []),             # idle for longer than the quiet time: finished before the stop
    ((100.0, 100.0), True, ["B"]),           # a message in flight: the study sent last is cut
    ((100.0, 0.2), True, ["B"]),
])
def test_a_stop_cuts_only_studies_sent_within_the_quiet_time_or_in_flight(tmp_path, stored_ago, in_flight, cut):
    scp = StorageSCP(_config(tmp_path, quiet_seconds=30), spool=None)
    now = time.monotonic()
    assoc = SimpleNamespace(dicomnode_studies={"A": now - stored_ago[0], "B": now - stored_ago[1]},
                            dicomnode_last_study="B", dicomnode_storing=0,
                            dimse=SimpleNamespace(message=object() if in_flight else None))
    ended = SimpleNamespace(dicomnode_studies={"C": now}, dicomnode_ended=True)
    scp._server = SimpleNamespace(active_associations=[assoc, ended])
    assert scp.studies_cut() == cut
    assert scp.open_studies() == ["A", "B"]  # what a crash would cut: every study of the open associations


def test_a_resent_duplicate_ends_the_wait(tmp_path):
    first = synthetic_mr()
    study = str(first.StudyInstanceUID)
    _stopped_mid_transfer(tmp_path, [first])
    restarted = Node(_config(tmp_path, quiet_seconds=1), analyser=NoAnalysis())
    restarted.start(warm_up=False)
    try:
        assert restarted.db.study(study)["reason"].startswith("incomplete: transfer interrupted")
        assert store_one(restarted.scp.port, first).Status == 0  # the same instance again
        assert restarted.db.study(study)["reason"] is None
        assert _wait(lambda: restarted.db.study(study)["state"] != RECEIVED)
    finally:
        restarted.stop()


def test_a_c_store_without_affected_sop_instance_uid_is_answered_at_once(tmp_path, caplog):
    node = Node(_config(tmp_path), analyser=NoAnalysis())
    node.start(warm_up=False)
    try:
        dataset = synthetic_mr()
        dataset.SOPInstanceUID = ""
        assoc = _association(node.scp.port, dataset, calling="BREAK3")
        began = time.monotonic()
        with caplog.at_level(logging.WARNING):
            status = assoc.send_c_store(dataset)
        assert time.monotonic() - began < 10  # not the sender's DIMSE timeout
        assert status.Status == 0xC000
        assert "no Affected SOP Instance UID" in status.ErrorComment
        lines = [r.getMessage() for r in caplog.records if r.name == "dicomnode.net.scp" and r.levelno == logging.WARNING]
        assert any("C-STORE refused from calling AE 'BREAK3'" in line and "no Affected SOP Instance UID (0000,1000)"
                   in line for line in lines), lines
        # the association goes on: a valid instance after it is stored
        assert assoc.send_c_store(synthetic_mr()).Status == 0
        assoc.release()
    finally:
        node.stop()


def test_an_interrupted_study_not_sent_again_is_analysed_with_the_note_in_its_declined_reasons(tmp_path):
    first = synthetic_mr()
    study = str(first.StudyInstanceUID)
    _stopped_mid_transfer(tmp_path, [first])
    restarted = Node(_config(tmp_path, quiet_seconds=3600), analyser=NoAnalysis())
    restarted.start(warm_up=False)
    try:
        restarted.completion._max_wait_elapsed(study)  # the max-wait job, run now
        assert _wait(lambda: restarted.db.study(study)["state"] == "done")
        note = ("transfer interrupted (1 instance(s) received when the node stopped); the study may be incomplete: "
                "nothing was sent again within max wait")
        assert note in [d["reason"] for d in summary_of(restarted.db, study)["declined"]]
        assert restarted.db.study(study)["reason"] == f"no result objects: {note}; not analysed here"
    finally:
        restarted.stop()


def test_a_study_whose_first_instance_arrives_while_the_stop_releases_is_marked_cut(tmp_path, monkeypatch):
    """review44 #2: a C-STORE answered between the stop's look at its associations and their release (the first
    instance of the next study a PACS pushes on its open association) cut that study's transfer: the restart marks
    it instead of putting it on the quiet timer."""
    node = Node(_config(tmp_path, quiet_seconds=3600), analyser=NoAnalysis())
    node.start(warm_up=False)
    finished, arriving = generate_uid(), generate_uid()
    assoc = _association(node.scp.port, synthetic_mr())
    try:
        assert assoc.send_c_store(synthetic_mr(study_uid=finished)).Status == 0
        node.scp.config.studies.quiet_seconds = 0  # `finished` is past its quiet time: sent completely
        looked = node.scp.studies_cut

        def then_a_store_arrives():
            cut = looked()
            assert assoc.send_c_store(synthetic_mr(study_uid=arriving)).Status == 0
            return cut
        monkeypatch.setattr(node.scp, "studies_cut", then_a_store_arrives)
    finally:
        node.stop()
        assoc.abort()
    restarted = Node(_config(tmp_path, quiet_seconds=1), analyser=NoAnalysis())
    restarted.start(warm_up=False)
    try:
        assert restarted.db.study(arriving)["reason"].startswith("incomplete: transfer interrupted")
        assert restarted.db.study(finished)["reason"] is None
    finally:
        restarted.stop()


def test_an_older_crash_heartbeat_row_does_not_decide_what_an_unrecorded_stop_cut(tmp_path, monkeypatch):
    """review44 #3: a crashed run's heartbeat row (listing nothing received) stays in the state; a later run stops
    while a study arrives on an open association and can record neither the cut nor its clean stop. The next start
    marks every study receiving (as after a crash), not what the older crash's row listed."""
    from sqlalchemy import text
    first = Node(_config(tmp_path, quiet_seconds=3600), analyser=NoAnalysis())
    runner = RoleRunner(first)
    runner.start(warm_up=False)
    _runner_crashed(runner)
    with first.db.engine.begin() as connection:  # a run of another pid, long gone
        connection.execute(text("UPDATE nodes SET node_id='otherhost:99999', pid=99999, host='otherhost'"))
    second = Node(_config(tmp_path, quiet_seconds=3600), analyser=NoAnalysis())
    runner = RoleRunner(second)
    runner.start(warm_up=False)
    study = generate_uid()
    assoc = _association(second.scp.port, synthetic_mr())
    try:
        assert assoc.send_c_store(synthetic_mr(study_uid=study)).Status == 0
    finally:
        def unreachable(*args, **kwargs):
            raise OSError("state database unreachable")
        monkeypatch.setattr(second.db, "record_receiver_stopped", unreachable)
        monkeypatch.setattr(second.completion, "transfer_interrupted", unreachable)
        runner.stop()
        assoc.abort()
    restarted = Node(_config(tmp_path, quiet_seconds=1), analyser=NoAnalysis())
    restarted.start(warm_up=False)
    try:
        assert (restarted.db.study(study)["reason"] or "").startswith("incomplete: transfer interrupted")
    finally:
        restarted.stop()
