"""Spooled files and result files that the state database and the spool disagree on (break51b findings 3, 5, 6, 8):
a state restored from a backup older than the spool indexes the studies received since again (and says so); a
dead letter whose result file is gone is not re-queued to fail again; an acknowledged instance deleted by hand
before its analysis is named in the log, the status and summary.json; `retry --reanalyse` of a study none of whose
files is spooled is refused, and a single node fails such a study at once without speaking of another worker."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from dicomnode.cli import main
from dicomnode.cmr.study import CMRStudy
from dicomnode.config import Config
from dicomnode.node import Node, _declare_missing
from dicomnode.state import (COMPLETE, DONE, FAILED, MISSING_INSTANCE_REASON, MISSING_NOTE_PREFIX, InstanceRow,
                             StateDB, missing_note, prepare_storage_dir, results_reason)
from dicomnode.types import Declined
from dicomnode.uids import short_hash
from tests.hardening.hardening_support import save, synthetic_mr
from tests.node.test_retry_all import dead_letters
from tests.node.test_storage_safety import CountingAnalyser
from tests.node.test_unreadable_spool import _complete_two_series_study

STUDY = "1.2.826.0.1.3680043.8.498.51003"
SERIES = "1.2.826.0.1.3680043.8.498.51003.1"
MR = "1.2.840.10008.5.1.4.1.1.4"


def node_config(storage: Path) -> Config:
    return Config.model_validate({"node": {"port": 0, "storage_dir": str(storage), "min_free_space_mb": 0},
                                  "studies": {"quiet_seconds": 3600}})


def sqlite_state(tmp_path: Path) -> tuple[StateDB, Path, Path]:
    """(state, storage_dir, config file): a SQLite state in its storage folder, one destination "pacs"."""
    store = prepare_storage_dir(tmp_path / "store")
    db = StateDB(store / "state.sqlite3", upgrade=True)
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\nstorage_dir = "{store}"\n[[destinations]]\nname = "pacs"\nae_title = "PACS1"\n'
                      f'host = "127.0.0.1"\nport = 12200\n')
    return db, store, config


def test_studies_spooled_after_the_backup_are_indexed_again_and_their_results_not_called_unfinished(tmp_path, caplog):
    """break51b #3: after a restore of an older state, the study received since stayed in spool/ with no row (never
    listed, never purged) and its delivered results were removed as "analyses that never finished"."""
    node = Node(node_config(tmp_path / "store"), analyser=object())
    folder = node.storage_dir / "spool" / short_hash(STUDY, 16) / short_hash(SERIES, 16)
    for number in (1, 2):
        ds = synthetic_mr(STUDY, SERIES, size=8, instance=number, position=float(number))
        save(ds, folder / f"{ds.SOPInstanceUID}.dcm")
    junk = node.storage_dir / "spool" / short_hash("1.2.9", 16) / short_hash("1.2.9.1", 16) / "1.2.9.1.1.dcm"
    junk.parent.mkdir(parents=True)
    junk.write_bytes(b"not DICOM")  # cannot be indexed: stays, counted
    result = node.storage_dir / "results" / short_hash(STUDY, 16) / "3" / "2.25.1.dcm"
    result.parent.mkdir(parents=True)
    result.write_bytes(b"delivered")
    node.analyse_study = lambda *args: None  # the queued analysis does not run: the state after the start is read
    with caplog.at_level(logging.INFO, logger="dicomnode.node"):
        node.start(warm_up=False)
        try:
            study = node.db.study(STUDY)
            instances = node.db.study_instances(STUDY)
        finally:
            node.stop()
    assert ("3 instances of 2 studies on disk are not in the state database: restored from an older backup? "
            "2 instance(s) of 1 stud(ies) indexed again") in caplog.text, caplog.text
    assert f"1 file(s) could not be indexed (unreadable, or filed under another study key; first: {junk}" \
        in caplog.text and junk.exists()
    assert "may have been delivered" in caplog.text
    assert study is not None and len(instances) == 2  # listed, analysed and purged by retention like any other
    assert study["state"] == COMPLETE and "indexed again from the spool" in study["reason"]
    assert "transfer interrupted" not in caplog.text
    assert {row["series_instance_uid"] for row in instances} == {SERIES}
    assert "never finished" not in caplog.text
    assert "removed 1 result file(s) of 1 stud(ies) made by analyses the state database does not know" in caplog.text


def test_retry_does_not_requeue_dead_letters_whose_result_file_is_missing(tmp_path, capsys):
    """break51b #5: `retry STUDY` re-queued them; they failed again. It names them and gives --reanalyse."""
    db, store, config = sqlite_state(tmp_path)
    try:
        dead_letters(db, "1.2.5", [("pacs", "result file x is missing"), ("pacs", "refused with 0xA700")])
        rows = db.outbox_for("1.2.5")
        kept = store / rows[1]["path"]
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_bytes(b"result")  # the first one's file is gone
        assert main(["retry", "1.2.5", "--config", str(config)]) == 0
        out = capsys.readouterr()
        assert "not re-queued: 1 dead letter(s) of 1.2.5 whose result file is missing" in out.err
        assert "`dicomnode retry 1.2.5 --reanalyse`" in out.err
        assert "re-queued 1 dead letter(s) of 1.2.5" in out.out
        states = {row["path"]: row["state"] for row in db.outbox_for("1.2.5")}
        assert states == {rows[0]["path"]: "dead", rows[1]["path"]: "pending"}
        kept.unlink()  # none left to re-queue: refused
        db.mark_failed_send(db.outbox_for("1.2.5")[1]["id"], "result file y is missing", time.time(), dead=True)
        assert main(["retry", "1.2.5", "--config", str(config)]) == 1
        assert "not re-queued: 2 dead letter(s)" in capsys.readouterr().err
        assert {row["state"] for row in db.outbox_for("1.2.5")} == {"dead"}
        assert main(["status", "--config", str(config)]) == 0
        status = capsys.readouterr().out
        assert "result file y is missing (sending again cannot help: `dicomnode retry 1.2.5 --reanalyse`" in status
    finally:
        db.close()


def test_retry_reanalyse_refuses_a_study_none_of_whose_files_is_spooled(tmp_path, capsys):
    """break51b #8: accepted, then failed four times "released for another worker" in a single node."""
    db, store, config = sqlite_state(tmp_path)
    try:
        (store / "spool").mkdir(exist_ok=True)
        dead_letters(db, "1.2.6", [("pacs", "refused with 0xA700")])  # its instance file spool/1.2.6.dcm is absent
        assert main(["retry", "1.2.6", "--reanalyse", "--config", str(config)]) == 1
        err = capsys.readouterr().err
        assert "not re-analysed: none of the 1 instance file(s) of 1.2.6 is in the spool" in err
        assert db.study("1.2.6")["reason"] != "re-analysis requested"
        (store / "spool" / "1.2.6.dcm").write_bytes(b"instance")  # back: accepted (the study is failed: dead letter)
        assert main(["retry", "1.2.6", "--reanalyse", "--config", str(config)]) == 0, capsys.readouterr().err
    finally:
        db.close()


def test_a_single_node_holds_back_only_a_study_without_spooled_files_naming_no_other_worker(tmp_path, caplog):
    """break51b #8: a single node tried four times "released for another worker", claiming no study for 30 s each."""
    node = Node(node_config(tmp_path / "store"), analyser=object())
    try:
        node.lock_storage(exclusive=True)
        node.verify_spool()
        node.db.add_instance(InstanceRow(f"{STUDY}.1", STUDY, STUDY, SERIES, MR, "1.2.840.10008.1.2.1", "MR",
                                         "spool/gone/gone/1.dcm", 8, "SCANNER1", time.time()))
        assert node.db.set_study_state(STUDY, COMPLETE)
        generation = node.db.study(STUDY)["generation"]
        with caplog.at_level(logging.INFO, logger="dicomnode.node"):
            node.analyse_study(STUDY, generation)
        study = node.db.study(STUDY)
        assert study["state"] == COMPLETE and study["reason"].startswith("analysis waits (try 1 of 4, next in 30 s)")
        assert "deleted or moved by hand" in study["reason"] and "shared spool" not in study["reason"]
        assert node.claims_blocked() is None  # other studies are not held back: this one alone waits
        assert node.paused_studies() == {(STUDY, generation)}
        for _ in range(3):
            node._study_paused.clear()
            with caplog.at_level(logging.INFO, logger="dicomnode.node"):
                node.analyse_study(STUDY, generation)
        study = node.db.study(STUDY)
        assert study["state"] == FAILED and study["reason"].startswith("analysis failed (try 4 of 4)"), dict(study)
        assert "another worker" not in caplog.text and "no worker" not in caplog.text
    finally:
        node.db.close()
        node.storage_lock.release()


def test_an_acknowledged_instance_missing_at_analysis_is_declined_with_its_series_and_noted(tmp_path):
    """break51b #6: summary.json's declined said only "unreadable (FileNotFoundError)" with no series, and no ERROR
    or status note named the acknowledged instance."""
    gone = tmp_path / "spool" / "a" / "b" / "1.2.3.4.dcm"
    study = CMRStudy(study_instance_uid=STUDY, series=[], declined=[
        Declined(None, f"{gone}: unreadable (FileNotFoundError: No such file or directory)")])
    row = {"study_instance_uid": STUDY, "series_instance_uid": SERIES, "sop_instance_uid": "1.2.3.4"}
    _declare_missing([study], {str(gone): row})
    (entry,) = study.declined
    assert entry.series_instance_uid == SERIES
    assert "SOP Instance UID 1.2.3.4" in entry.reason and "FileNotFoundError" not in entry.reason
    summary = {"declined": [entry.summary()], "outputs": []}
    note = missing_note(summary)
    assert note is not None and note.startswith(MISSING_NOTE_PREFIX) and "1 instance(s)" in note
    assert results_reason(summary).startswith(MISSING_NOTE_PREFIX)


def test_the_missing_instance_note_stays_on_a_study_once_its_results_are_delivered(tmp_path):
    db, store, _ = sqlite_state(tmp_path)
    try:
        key = "1.2.7"
        db.add_instance(InstanceRow(f"{key}.1", key, key, f"{key}.0", MR, "1.2.840.10008.1.2.1", "MR",
                                    f"spool/{key}.dcm", 1, "SCANNER1", time.time()))
        db.set_study_state(key, COMPLETE)
        analysis = db.start_analysis(key, 0)
        summary = {"outputs": [], "declined": [{"series_instance_uid": f"{key}.0", "reason":
                                                 "acknowledged instance missing from the spool: SOP Instance UID "
                                                 f"{key}.2 of series {key}.0 at x: gone"}]}
        db.finish_analysis(analysis, key, 0, summary, [(f"{key}.9", f"{key}.8", MR, f"results/{key}.dcm")],
                           [{"destination": "pacs", "ae_title": "PACS1", "host": "127.0.0.1", "port": 12200,
                             "sop_instance_uid": f"{key}.9", "path": f"results/{key}.dcm"}])
        assert db.study(key)["reason"].startswith(MISSING_NOTE_PREFIX)
        (row,) = db.outbox_for(key)
        db.mark_sent([row["id"]])
        study = db.study(key)
        assert study["state"] == DONE and study["reason"].startswith(MISSING_NOTE_PREFIX)
    finally:
        db.close()


class DecliningAnalyser(CountingAnalyser):
    """Declines every study, its summary's `declined` starting with the study's own, as analysis.run writes it."""

    def analyse(self, study, pipelines, started_at=None, supersedes=None):
        outcome = super().analyse(study, pipelines, started_at, supersedes)
        outcome.summary["declined"] = [d.summary() for d in study.declined] + outcome.summary["declined"]
        return outcome


def test_analysing_without_an_acknowledged_instance_deleted_by_hand_is_an_error_naming_it(tmp_path, caplog):
    """break51b #6 as the node meets it: one file of a complete study removed before its analysis."""
    node = Node(node_config(tmp_path / "store"), analyser=DecliningAnalyser())
    node.config.node.allowed_calling_aes = ["*"]
    node.start(warm_up=False)
    try:
        key, generation, paths = _complete_two_series_study(node)
        rows = {str(node.spool.path_of(row["path"])): row for row in node.db.study_instances(key)}
        paths[1].unlink()
        gone = rows[str(paths[1])]
        with caplog.at_level(logging.WARNING):
            node.analyse_study(key, generation)
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert any("1 acknowledged instance(s) missing from the spool" in e and gone["sop_instance_uid"] in e
                   for e in errors), errors
        study = node.db.study(key)
        assert study["state"] in (DONE, FAILED) and MISSING_INSTANCE_REASON in study["reason"], dict(study)
        declined = [d for d in json.loads(study["summary_json"])["declined"]
                    if d["reason"].startswith(MISSING_INSTANCE_REASON)]
        assert [d["series_instance_uid"] for d in declined] == [gone["series_instance_uid"]]
    finally:
        node.stop()
