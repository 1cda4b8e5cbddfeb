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


def test_a_study_receiving_when_the_node_stopped_waits_for_a_resend_after_the_restart(tmp_path):
    config = _config(tmp_path, quiet_seconds=3600)
    node = Node(config, analyser=NoAnalysis())
    node.start(warm_up=False)
    study = generate_uid()
    try:
        for index in range(2):
            assert store_one(node.scp.port, synthetic_mr(study_uid=study, instance=index, position=8.0 * index)) \
                .Status == 0
    finally:
        node.stop()
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


def test_a_resent_duplicate_ends_the_wait(tmp_path):
    node = Node(_config(tmp_path, quiet_seconds=3600), analyser=NoAnalysis())
    node.start(warm_up=False)
    first = synthetic_mr()
    study = str(first.StudyInstanceUID)
    try:
        assert store_one(node.scp.port, first).Status == 0
    finally:
        node.stop()
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
    node = Node(_config(tmp_path, quiet_seconds=3600), analyser=NoAnalysis())
    node.start(warm_up=False)
    first = synthetic_mr()
    study = str(first.StudyInstanceUID)
    try:
        assert store_one(node.scp.port, first).Status == 0
    finally:
        node.stop()
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
