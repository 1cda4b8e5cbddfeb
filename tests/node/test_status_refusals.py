"""What a PACS administrator needs from `dicomnode status` and `dicomnode retry` (break3 M1, L5): a node refusing
C-STORE for lack of space says so at the top of status (text and JSON) with the free space and the floor, and lists
the studies it refused recently (even one none of whose instances was stored, so it has no study row), with the
calling AE and the count; a finished study's results can be sent again (`retry --resend`) or the study analysed
again (`retry --reanalyse`), refused clearly where that is not possible."""
from __future__ import annotations

import json
import os
import time

import pytest

from dicomnode.cli import main
from dicomnode.config import DispatchConfig
from dicomnode.dispatch import Dispatcher
from dicomnode.node import Node
from dicomnode.roles import RoleRunner
from dicomnode.state import COMPLETE, DONE, RECEIVED, SENDING
from tests.hardening.hardening_support import store_one, synthetic_mr
from tests.hardening import test_send_diagnostics as diagnostics
from tests.hardening.test_send_diagnostics import mr_file, queue_results
from tests.node.test_storage_safety import NoAnalysis, node_config

peers, store = diagnostics.peers, diagnostics.store  # fixtures: peers on loopback, a state in tmp_path


def write_config(tmp_path, storage, min_free_space_mb: int = 0):
    path = tmp_path / "node.toml"
    path.write_text(f'[node]\nstorage_dir = "{storage}"\nmin_free_space_mb = {min_free_space_mb}\n')
    return str(path)


@pytest.fixture
def runner(tmp_path):
    """A single-node process (all roles, heartbeat) on node_config(tmp_path) that analyses nothing."""
    runner = RoleRunner(Node(node_config(tmp_path), analyser=NoAnalysis()))
    runner.start(warm_up=False)
    yield runner
    runner.stop()


def test_status_says_receiving_is_refused_and_lists_a_study_none_of_whose_instances_was_stored(tmp_path, runner,
                                                                                                capsys):
    node = runner.node
    stored = synthetic_mr()  # a study with one instance stored, then refusals
    assert store_one(node.scp.port, stored).Status == 0
    node.spool.min_free_space_mb = 10**12  # the disk reaches the floor
    refused = synthetic_mr()  # a study every instance of which is refused: no study row
    for instance in (1, 2, 3):
        status = store_one(node.scp.port, synthetic_mr(study_uid=str(refused.StudyInstanceUID), instance=instance),
                           calling="MODALITY7")
        assert status.Status == 0xA700
    assert store_one(node.scp.port, synthetic_mr(study_uid=str(stored.StudyInstanceUID), instance=2)).Status == 0xA700
    runner.beat()
    config = write_config(tmp_path, tmp_path / "store")  # the floor this config names is not reached: the process's
    capsys.readouterr()                                    # own last C-STORE being a refusal says it
    assert main(["status", "--config", config]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith("RECEIVING REFUSED (C-STORE answered 0xA700 Out of Resources): storage ") and \
        "MB free, node.min_free_space_mb = 0; last refusal" in first, out
    assert (f"  {refused.StudyInstanceUID} (log id " in out and
            "from MODALITY7: 3 instance(s) refused, 0 stored, last refused " in out), out
    assert f"  {stored.StudyInstanceUID} (log id " in out and "from SCANNER1: 1 instance(s) refused, 1 stored" in out
    assert main(["status", "--json", "--config", config]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["receiving"]["refusing"] is True and report["receiving"]["min_free_space_mb"] == 0
    assert report["receiving"]["free_mb"] > 0 and "under the floor" in report["receiving"]["last_refusal"]
    newest = report["refused_recently"][0]
    assert newest["study_instance_uid"] == str(stored.StudyInstanceUID) and newest["stored"] == 1
    item = report["refused_recently"][1]
    assert (item["study_instance_uid"], item["calling_ae"], item["refused"], item["stored"]) == \
        (str(refused.StudyInstanceUID), "MODALITY7", 3, 0)
    assert item["last_refused_at"] <= time.time() and item["first_refused_at"] <= item["last_refused_at"]

    node.spool.min_free_space_mb = 0  # space returns, a sender sends again: no longer refusing, the list stays
    assert store_one(node.scp.port, synthetic_mr(study_uid=str(refused.StudyInstanceUID), instance=1),
                     calling="MODALITY7").Status == 0
    runner.beat()
    assert main(["status", "--json", "--config", config]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["receiving"]["refusing"] is False and len(report["refused_recently"]) == 2
    # a config whose floor is above the free space: refusing, whatever the processes say
    assert main(["status", "--config", write_config(tmp_path, tmp_path / "store", 10**9)]) == 0
    assert capsys.readouterr().out.startswith("RECEIVING REFUSED")


def test_status_says_nothing_about_refusals_when_there_were_none(tmp_path, runner, capsys):
    assert store_one(runner.node.scp.port, synthetic_mr()).Status == 0
    runner.beat()
    config = write_config(tmp_path, tmp_path / "store")
    assert main(["status", "--config", config]) == 0
    out = capsys.readouterr().out
    assert "RECEIVING REFUSED" not in out and "refused for lack of space" not in out
    assert main(["status", "--json", "--config", config]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["receiving"]["refusing"] is False and report["refused_recently"] == []


# --- retry --resend / --reanalyse ---------------------------------------------------------------------------------

def test_retry_resend_queues_a_done_studys_results_again_and_they_are_sent(tmp_path, peers, store, capsys):
    root, db = store
    peer = peers()
    queue_results(db, root, "1.6", [("pacs", peer.port, mr_file(root / "results", "a")),
                                    ("pacs", peer.port, mr_file(root / "results", "b"))])
    dispatcher = Dispatcher(db, root, DispatchConfig(max_attempts=3, initial_backoff_seconds=60), "DICOMNODE")
    assert dispatcher.run_once() == 2 and db.study("1.6")["state"] == DONE and len(peer.received) == 2
    config = write_config(tmp_path, root)
    capsys.readouterr()
    assert main(["retry", "1.6", "--config", config]) == 0  # without --resend: nothing to retry, as before
    assert "nothing to retry for 1.6: state done" in capsys.readouterr().out
    assert main(["retry", "1.6", "--resend", "--config", config]) == 0
    # no node process runs on this state (the test's dispatcher writes no heartbeat): said so (break48a #12)
    assert ("re-queued 2 result object(s) of 1.6 to pacs; no node process with the dispatch role is running"
            in capsys.readouterr().out)
    assert db.study("1.6")["state"] == SENDING
    assert [(row["state"], row["attempts"]) for row in db.outbox_for("1.6")] == [("pending", 0), ("pending", 0)]
    assert main(["retry", "1.6", "--resend", "--config", config]) == 1  # being sent: refused, saying why
    assert "not re-sent: 1.6 is in state sending" in capsys.readouterr().err
    assert dispatcher.run_once() == 2
    assert db.study("1.6")["state"] == DONE and len(peer.received) == 4


def test_retry_resend_refuses_when_the_result_files_are_gone(tmp_path, peers, store, capsys):
    root, db = store
    peer = peers()
    path = mr_file(root / "results", "gone")
    queue_results(db, root, "1.7", [("pacs", peer.port, path)])
    assert Dispatcher(db, root, DispatchConfig(), "DICOMNODE").run_once() == 1
    path.unlink()
    assert main(["retry", "1.7", "--resend", "--config", write_config(tmp_path, root)]) == 1
    err = capsys.readouterr().err
    assert "not re-sent: 1 result file(s) of 1.7 are gone (purged?): results/gone.dcm" in err and "--reanalyse" in err
    assert db.study("1.7")["state"] == DONE


def test_retry_reanalyse_sends_a_done_study_back_to_complete_and_refuses_a_receiving_one(tmp_path, peers, store,
                                                                                         capsys):
    root, db = store
    peer = peers()
    queue_results(db, root, "1.8", [("pacs", peer.port, mr_file(root / "results", "r"))])
    assert Dispatcher(db, root, DispatchConfig(), "DICOMNODE").run_once() == 1
    config = write_config(tmp_path, root)
    capsys.readouterr()
    generation = db.study("1.8")["generation"]
    assert main(["retry", "1.8", "--reanalyse", "--config", config]) == 0
    out = capsys.readouterr().out
    assert "re-queued 1.8 for a new analysis" in out
    # break47b #9: "they supersede the earlier ones not sent yet" read as if the delivered ones were not superseded
    assert ("which supersede the earlier ones: those not sent yet are withdrawn, those delivered are retired by the "
            "IHE IOCM rejection note sent with the new results") in out
    study = db.study("1.8")
    assert study["state"] == COMPLETE and study["reason"] == "re-analysis requested"
    # break45a F5: status shows the re-analysis as a new generation, as a late instance's re-analysis does
    assert study["generation"] == generation + 1
    assert main(["status", "--json", "--config", config]) == 0
    listed = {s["study_key"]: s for s in json.loads(capsys.readouterr().out)["studies"]}
    assert listed["1.8"]["generation"] == generation + 1
    db.set_study_state("1.8", RECEIVED)  # a late instance arrived: it is analysed once complete
    assert main(["retry", "1.8", "--reanalyse", "--config", config]) == 1
    assert "not re-analysed: 1.8 is in state received" in capsys.readouterr().err
    # break47b #9: a study whose sends wait for a destination that is down says how to analyse it again anyway
    db.set_study_state("1.8", SENDING)
    assert main(["retry", "1.8", "--reanalyse", "--config", config]) == 1
    err = capsys.readouterr().err
    assert "not re-analysed: 1.8 is in state sending" in err and "become dead letters" in err
    assert "send its corrected instances (or one it lacks): that re-opens it at once" in err


def test_retry_help_documents_resend_and_reanalyse(capsys):
    with pytest.raises(SystemExit):
        main(["retry", "--help"])
    out = capsys.readouterr().out
    assert "--resend" in out and "--reanalyse" in out and "done (or failed) study" in out


def test_status_after_a_full_disk_is_over_says_nearly_full_and_does_not_ask_for_a_study_sent_again(tmp_path,
                                                                                                  capsys):
    """break46b #3: the floor is within 1 MB of the free space (a 1 MB instance would be refused) but 0.1 MB instances
    are stored again and the refused study was sent again since its last refusal: status says NEARLY FULL with the
    largest instance that fits, not RECEIVING REFUSED, and does not ask for that study to be sent again."""
    from dicomnode.cli import _print_receiving
    from dicomnode.roles import receiving_report, refused_studies
    from dicomnode.spool import free_space_mb
    now = time.time()
    floor = free_space_mb(tmp_path) - 0.5  # free space 0.5 MB above it (give or take what others write meanwhile)
    refused_item = {"study_instance_uid": "1.2.826.477", "study": "cb2233f3fd7e", "calling_ae": "SCANNER1",
                    "refused": 9, "first_refused_at": now - 60, "last_refused_at": now - 42,
                    "reason": "free space 52 MB minus the instance (0.1 MB) would be under the floor"}
    other_item = dict(refused_item, study_instance_uid="1.2.826.478", study="aa11bb22cc33", last_refused_at=now - 41)
    node = {"alive": True, "detail": {"last_refused_at": now - 41, "last_refusal": refused_item["reason"],
                                      "last_stored_at": now - 5, "min_free_space_mb": floor,
                                      "refused": [refused_item, other_item]}}
    studies = [{"study": "cb2233f3fd7e", "instances": 10, "last_received": now - 5},
               {"study": "aa11bb22cc33", "instances": 1, "last_received": now - 50}]
    receiving = receiving_report(tmp_path, floor, [node], now=now)
    assert receiving["refusing"] is False and receiving["nearly_full"] is True
    assert 0 <= receiving["largest_instance_mb"] < 1
    listed = refused_studies([node], studies)
    assert {item["study"]: item["stored_since"] for item in listed} == {"cb2233f3fd7e": True, "aa11bb22cc33": False}
    _print_receiving({"receiving": receiving, "refused_recently": listed})
    out = capsys.readouterr().out
    assert "RECEIVING REFUSED" not in out and out.startswith("RECEIVING NEARLY FULL: ")
    assert f"instances over {receiving['largest_instance_mb']:.1f} MB are refused (0xA700), smaller ones are stored" \
        in out
    asked, _, resent = out.partition("being sent again")
    assert "aa11bb22cc33" in asked and "cb2233f3fd7e" not in asked
    assert "1.2.826.477 (log id cb2233f3fd7e) from SCANNER1: 9 instance(s) refused until " in resent
    # the free space under the floor itself: nothing fits, refused
    receiving = receiving_report(tmp_path, floor + 2, [node], now=now)
    assert receiving["refusing"] is True and receiving["nearly_full"] is False


def test_status_does_not_ask_again_for_a_refused_study_sent_again_and_purged_since(tmp_path, runner, capsys):
    """break48c #2: a study refused (0xA700), sent again, stored (and analysed and delivered), then purged by
    retention has no study row left: it is still listed as sent again, not asked for; a refused study that was
    purged without being sent again after its refusal is still asked for."""
    from dicomnode.retention import purge_study
    from dicomnode.uids import short_hash

    node = runner.node
    resent, cut = synthetic_mr(), synthetic_mr()
    for study in (resent, cut):
        assert store_one(node.scp.port, synthetic_mr(study_uid=str(study.StudyInstanceUID), instance=1)).Status == 0
    node.spool.min_free_space_mb = 10**12
    for study in (resent, cut):
        assert store_one(node.scp.port, synthetic_mr(study_uid=str(study.StudyInstanceUID), instance=2)).Status \
            == 0xA700
    node.spool.min_free_space_mb = 0
    time.sleep(0.01)  # the re-send's receipt time after the refusal's
    assert store_one(node.scp.port, synthetic_mr(study_uid=str(resent.StudyInstanceUID), instance=2)).Status == 0
    runner.beat()
    for study in (resent, cut):  # analysed and delivered (nothing undelivered), then purged by retention
        key = str(study.StudyInstanceUID)
        assert node.db.set_study_state(key, DONE)
        for path in node.db.study_files(key):  # written an hour ago: retention deletes no file younger than 120 s
            os.utime(tmp_path / "store" / path, (time.time() - 3600, time.time() - 3600))
        assert purge_study(node.db, tmp_path / "store", key)
        assert node.db.study(key) is None
    config = write_config(tmp_path, tmp_path / "store")
    capsys.readouterr()
    assert main(["status", "--json", "--config", config]) == 0
    report = json.loads(capsys.readouterr().out)
    listed = {item["study_instance_uid"]: item for item in report["refused_recently"]}
    assert listed[str(resent.StudyInstanceUID)]["stored_since"] is True
    assert listed[str(resent.StudyInstanceUID)]["purged_since"] is True
    assert listed[str(cut.StudyInstanceUID)]["stored_since"] is False
    assert listed[str(cut.StudyInstanceUID)]["purged_since"] is False
    assert main(["status", "--config", config]) == 0
    asked, _, being_resent = capsys.readouterr().out.partition("being sent again")
    assert short_hash(str(resent.StudyInstanceUID)) in being_resent and \
        short_hash(str(resent.StudyInstanceUID)) not in asked
    assert "instance(s) refused until " in being_resent and ", stored after it, then purged by retention" in \
        being_resent
    assert short_hash(str(cut.StudyInstanceUID)) in asked
