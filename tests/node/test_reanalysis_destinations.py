"""break47b #2-#4: what a re-analysis and a resend tell each destination. `retry --resend` re-queues the results,
not the IOCM rejection notes (they name earlier results the PACS that lost the study no longer holds); a destination
renamed in the config (same AE title, host and port) still gets the note retiring what it received under its former
name; the new report names the series it supersedes only where every destination received them (the sender only
where the new results go back to it: review47 #4)."""
from __future__ import annotations

import json
import logging
import time

import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, KeyObjectSelectionDocumentStorage

from dicomnode.cli import main
from dicomnode.config import Config
from dicomnode.dispatch import transient_dead_letter
from dicomnode.node import Node
from dicomnode.results.provenance import supersede_text
from dicomnode.retention import purge_expired
from dicomnode.state import DONE, OUTBOX_DEAD, OUTBOX_PENDING, OUTBOX_SENT, SENDING, StateDB, prepare_storage_dir
from dicomnode.study_path import not_received_everywhere, outbox_items, renamed_destinations, run_study
from tests.node.test_retention_safety import KEY, SEG, SR, Store
from tests.node.test_stages import _Analyser, _Study

KO = KeyObjectSelectionDocumentStorage
PDF = "1.2.840.10008.5.1.4.1.1.104.1"


def _node(tmp_path, destinations: list[dict]) -> Node:
    config = Config.model_validate({"node": {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 0},
                                    "studies": {"quiet_seconds": 3600}, "destinations": destinations})
    return Node(config, analyser=object())


def _pacs(name: str, port: int = 104) -> dict:
    return {"name": name, "ae_title": "PACS", "host": "127.0.0.1", "port": port}


# --- #2: retry --resend ---------------------------------------------------------------------------------------------

def test_resend_requeues_the_results_but_not_the_rejection_note_and_says_so(tmp_path, capsys):
    root = prepare_storage_dir(tmp_path / "store")
    db = StateDB(root / "state.sqlite3", upgrade=True)
    try:
        store = Store(root, db)
        store.instance(1)
        db.mark_sent(store.analyse(classes=(SEG, SR)))
        store.instance(2)  # a late image: the re-analysis sends new results and a note retiring the first ones
        db.mark_sent(store.analyse(classes=(SEG, SR, PDF, KO)))
        assert db.study(KEY)["state"] == DONE
        config = tmp_path / "node.toml"
        config.write_text(f'[node]\nstorage_dir = "{root}"\n[[destinations]]\nname = "pacs"\nae_title = "PACS"\n'
                          f'host = "127.0.0.1"\nport = 104\n')
        capsys.readouterr()
        assert main(["retry", KEY, "--resend", "--config", str(config)]) == 0
        out = capsys.readouterr().out
        assert f"re-queued 3 result object(s) of {KEY} to pacs" in out
        assert "1 IOCM rejection note(s) of this analysis not re-sent" in out and "delete them there by hand" in out
        latest = max(a["id"] for a in db.analyses_of(KEY))
        classes = {r["sop_instance_uid"]: r["sop_class_uid"] for r in db._rows(
            "SELECT * FROM results WHERE analysis_id=:a", {"a": latest})}
        states = {classes[row["sop_instance_uid"]]: row["state"] for row in db.outbox_for(KEY)
                  if row["analysis_id"] == latest}
        assert states == {SEG: OUTBOX_PENDING, SR: OUTBOX_PENDING, PDF: OUTBOX_PENDING, KO: OUTBOX_SENT}
        assert db.study(KEY)["state"] == SENDING
    finally:
        db.close()


# --- #3: a destination renamed ----------------------------------------------------------------------------------------

def test_renamed_destinations_match_by_ae_title_host_and_port():
    config = Config.model_validate({"destinations": [_pacs("pacs_main"), _pacs("other", 105), _pacs("twin", 106),
                                                     _pacs("twin2", 106)]})
    addresses = {"pacs": ("PACS", "127.0.0.1", 104), "pacs_main": ("PACS", "127.0.0.1", 104),
                 "gone": ("PACS", "127.0.0.1", 999), "sender": ("PACS", "127.0.0.1", 105),
                 "old_twin": ("PACS", "127.0.0.1", 106)}
    # kept names stay; another address, the sender, or an address two destinations share: not renamed
    assert renamed_destinations(config, addresses) == {"pacs": "pacs_main"}


def test_a_renamed_destination_gets_the_note_for_what_it_received_under_its_former_name(tmp_path, caplog):
    node = _node(tmp_path, [_pacs("pacs_main")])  # "pacs" renamed: same AE title, host and port
    try:
        store = Store(node.storage_dir, node.db)
        store.instance(1)
        node.db.mark_sent(store.analyse(classes=(SEG, SR)))
        delivered = {row["sop_instance_uid"] for row in node.db.outbox_for(KEY)}
        with caplog.at_level(logging.INFO, logger="dicomnode.node"):
            rejected = node._rejected(KEY, KEY)
        assert {d: {e["sop_instance_uid"] for e in entries} for d, entries in rejected.items()} == {
            "pacs_main": delivered}
        assert "destination pacs_main of the config is the former pacs (same AE title, host and port)" in caplog.text
    finally:
        node.db.close()
    moved = _node(tmp_path, [_pacs("pacs_main", 11112)])  # another address: not the same archive
    try:
        assert set(moved._rejected(KEY, KEY)) == {"pacs"}
    finally:
        moved.db.close()


def test_a_renamed_destination_gets_the_note_for_a_purged_study_it_received(tmp_path, caplog):
    """A tombstone names its destinations only (its outbox rows went with the purge): the former name's address is
    found among the other studies' deliveries; the node says at start which destination it takes as renamed."""
    node = _node(tmp_path, [_pacs("pacs_main")])
    try:
        store = Store(node.storage_dir, node.db)
        store.instance(1)
        node.db.mark_sent(store.analyse(classes=(SEG, SR)))
        delivered = {row["sop_instance_uid"] for row in node.db.outbox_for(KEY)}
        store.age()
        assert purge_expired(node.db, node.storage_dir, days=30).studies == [KEY]
        store.instance(1, key="1.2.4")  # another study, delivered to "pacs" before the rename
        node.db.mark_sent(store.analyse(key="1.2.4", classes=(SEG,)))
        store.instance(1)  # the purged study sent again
        assert {d: {e["sop_instance_uid"] for e in entries} for d, entries in node._rejected(KEY, KEY).items()} == {
            "pacs_main": delivered}
        assert node._superseded(KEY, KEY)[-1]["delivered_to"] == ["pacs_main"]
        with caplog.at_level(logging.INFO, logger="dicomnode.node"):
            node._say_renamed_destinations()
        assert "destination pacs_main has the AE title, host and port of pacs, which results were delivered to" \
            in caplog.text
    finally:
        node.db.close()


# --- #4: what the new report says it supersedes --------------------------------------------------------------------

def test_the_report_names_the_superseded_series_only_where_every_destination_received_them(tmp_path):
    node = _node(tmp_path, [_pacs("pacs")])
    try:
        store = Store(node.storage_dir, node.db)
        store.instance(1)
        node.db.mark_sent(store.analyse(classes=(SEG, SR)))
        assert node._superseded(KEY, KEY)[-1]["delivered_to"] == ["pacs"]
        store.instance(2)
        store.analyse(classes=(SEG, SR))  # pending: its PACS is down
        latest = node._superseded(KEY, KEY)
        assert latest[-1]["delivered_to"] == [] and "delivered_to" not in latest[0]
    finally:
        node.db.close()
    earlier = [{"series_number": 9100, "pdf_series_number": 9200, "report_time": "2026-12-07 10:30"},
               {"series_number": 11100, "pdf_series_number": 11200, "report_time": "2026-12-07 10:39",
                "reason": "re-analysis requested (dicomnode retry --reanalyse)", "delivered_to": ["pacs1"]}]
    everywhere = not_received_everywhere(earlier, ["pacs1"])
    assert supersede_text(everywhere).startswith("Supersedes the report of 2026-12-07 10:39 (PDF series 11200, SR "
                                                 "series 11100) and 1 earlier one(s)")
    partial = not_received_everywhere(earlier, ["pacs1", "pacs2"])
    text = supersede_text(partial)
    assert "11200" not in text and "11100" not in text and "series" not in text
    assert text == ("Supersedes every earlier AI report of this study (2, the latest of 2026-12-07 10:39; not every "
                    "destination received each one); analysed again: re-analysis requested (dicomnode retry "
                    "--reanalyse): their numbers are replaced by these")
    assert "partial" not in earlier[-1]  # the node's list is left as it is
    assert not_received_everywhere(earlier[:1], ["pacs2"]) == earlier[:1]  # not known: worded as before


def test_run_study_hands_the_analysis_the_wording_for_the_routes_destinations(tmp_path):
    seen = []

    class Recording(_Analyser):
        def analyse(self, study, pipelines, started_at=None, supersedes=None):
            seen.append(supersedes)
            return super().analyse(study, pipelines, started_at, supersedes)

    config = Config.model_validate({
        "destinations": [_pacs("pacs1"), _pacs("pacs2", 105)],
        "routes": [{"name": "mr", "match": {"modality": "MR"}, "pipelines": ["cine"],
                    "destinations": ["pacs1", "pacs2"]}]})
    earlier = [{"series_number": 9100, "report_time": "2026-12-07 10:39", "delivered_to": ["pacs1"]}]
    run_study(_Study(), config, Recording(), None, tmp_path, lambda d: f"{d.SOPInstanceUID}.dcm", supersedes=earlier)
    assert seen[-1][-1]["partial"] is True  # pacs2 never received SR series 9100
    earlier[-1]["delivered_to"] = ["pacs1", "pacs2"]
    run_study(_Study(), config, Recording(), None, tmp_path, lambda d: f"{d.SOPInstanceUID}.dcm", supersedes=earlier)
    assert seen[-1][-1]["partial"] is False


# --- review47 #4: the sender counts only where the new results go back to it --------------------------------------

def test_the_sender_counts_for_the_wording_only_where_the_new_results_go_back_to_it(tmp_path):
    """The MR images came from two peers: nothing goes back to either, so the earlier report, which the one
    destination received, is named; from one peer the results go back to it, which never received that report."""
    seen = []

    class Recording(_Analyser):
        def analyse(self, study, pipelines, started_at=None, supersedes=None):
            seen.append(supersedes)
            return super().analyse(study, pipelines, started_at, supersedes)

    config = Config.model_validate({
        "destinations": [_pacs("pacs")],
        "routes": [{"name": "mr", "match": {"modality": "MR"}, "pipelines": ["cine"], "destinations": ["pacs"],
                    "send_to_sender": True, "sender_port": 11112}]})
    earlier = [{"series_number": 9100, "report_time": "2026-12-07 10:39", "delivered_to": ["pacs"]}]
    two_peers = [("SCANNER1", "10.0.0.9"), ("SCANNER2", "10.0.0.66")]
    run = run_study(_Study(), config, Recording(), None, tmp_path, lambda d: f"{d.SOPInstanceUID}.dcm",
                    supersedes=earlier, senders=two_peers)
    assert run.sender.target is None and seen[-1][-1]["partial"] is False
    assert "SR series 9100" in supersede_text(seen[-1])
    assert {item.destination for item in outbox_items(config, run.route, run.written, run.sender)} == {"pacs"}
    run = run_study(_Study(), config, Recording(), None, tmp_path, lambda d: f"{d.SOPInstanceUID}.dcm",
                    supersedes=earlier, senders=[("SCANNER1", "10.0.0.9")])
    assert run.sender.target == ("SCANNER1", "10.0.0.9", 11112) and seen[-1][-1]["partial"] is True
    assert {item.destination for item in outbox_items(config, run.route, run.written, run.sender)} == {
        "pacs", "sender"}


# --- review47 #2: a destination that keeps its name but points at another archive ----------------------------------

def test_a_name_repointed_at_another_address_is_not_credited_with_what_the_former_address_received(tmp_path, caplog):
    node = _node(tmp_path, [_pacs("pacs")])
    try:
        store = Store(node.storage_dir, node.db)
        store.instance(1)
        node.db.mark_sent(store.analyse(classes=(SEG, SR)))
    finally:
        node.db.close()
    moved = _node(tmp_path, [{"name": "pacs", "ae_title": "NEWPACS", "host": "10.0.0.9", "port": 11112}])
    try:
        with caplog.at_level(logging.INFO, logger="dicomnode.node"):
            assert moved._rejected(KEY, KEY) == {}  # the new archive never received them: no note lists them
            superseded = moved._superseded(KEY, KEY)
            moved._say_renamed_destinations()
        assert superseded[-1]["delivered_to"] == []
        assert not_received_everywhere(superseded, ["pacs"])[-1]["partial"] is True
        assert "destination pacs is now NEWPACS@10.0.0.9:11112, not PACS@127.0.0.1:104" in caplog.text
    finally:
        moved.db.close()
    back = _node(tmp_path, [_pacs("pacs")])  # the same address again: credited as before
    try:
        assert set(back._rejected(KEY, KEY)) == {"pacs"}
        assert back._superseded(KEY, KEY)[-1]["delivered_to"] == ["pacs"]
    finally:
        back.db.close()


def test_a_tombstone_of_a_name_delivered_at_two_addresses_is_credited_to_neither(tmp_path):
    node = _node(tmp_path, [_pacs("pacs")])
    try:
        store = Store(node.storage_dir, node.db)
        store.instance(1)
        node.db.mark_sent(store.analyse(classes=(SEG, SR)))
        store.age()
        assert purge_expired(node.db, node.storage_dir, days=30).studies == [KEY]
    finally:
        node.db.close()
    moved = _node(tmp_path, [{"name": "pacs", "ae_title": "NEWPACS", "host": "10.0.0.9", "port": 11112}])
    try:
        store = Store(moved.storage_dir, moved.db)
        store.instance(1, key="1.2.4")  # another study, delivered to "pacs" at its new address
        moved.db.mark_sent(store.analyse(key="1.2.4", classes=(SEG,)))
        store.instance(1)  # the purged study sent again
        assert moved._rejected(KEY, KEY) == {}
        assert moved._superseded(KEY, KEY)[-1]["delivered_to"] == []
    finally:
        moved.db.close()


def test_a_reload_that_repoints_a_destination_says_so(tmp_path, caplog):
    settings = {"node": {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 0},
                "studies": {"quiet_seconds": 3600}, "destinations": [_pacs("pacs")]}
    node = Node(Config.model_validate(settings), analyser=object())
    node.start(warm_up=False)
    try:
        store = Store(node.storage_dir, node.db)
        store.instance(1)
        node.db.mark_sent(store.analyse(classes=(SEG, SR)))  # delivered to PACS@127.0.0.1:104
        settings["destinations"] = [{"name": "pacs", "ae_title": "NEWPACS", "host": "10.0.0.9", "port": 11112}]
        with caplog.at_level(logging.INFO, logger="dicomnode.node"):
            node.reload(Config.model_validate(settings))
        assert "reload: destination pacs is now NEWPACS@10.0.0.9:11112, not PACS@127.0.0.1:104" in caplog.text
        assert "delete the superseded results there by hand" in caplog.text
    finally:
        node.stop()


def test_a_reload_that_fixes_the_port_of_a_destination_that_received_nothing_says_no_delivery(tmp_path, caplog):
    """break48a #9: results that only became dead letters (or are still pending) at a wrong port were never
    delivered there: no "results were delivered under that name", no advice to delete results there."""
    settings = {"node": {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 0},
                "studies": {"quiet_seconds": 3600}, "destinations": [_pacs("pacs", port=12850)]}
    node = Node(Config.model_validate(settings), analyser=object())
    node.start(warm_up=False)
    try:
        node.dispatcher.stop()  # nothing is sent to the (unreachable) ports meanwhile
        store = Store(node.storage_dir, node.db)
        store.instance(1)
        dead, pending = store.analyse(classes=(SEG, SR))
        node.db.mark_failed_send(dead, "connection refused", time.time(), dead=True)  # a dead letter at :12850
        node.db.mark_failed_send(pending, "connection refused", time.time() + 60, dead=False)  # retried later
        settings["destinations"] = [_pacs("pacs", port=12842)]
        with caplog.at_level(logging.INFO, logger="dicomnode.node"):
            node.reload(Config.model_validate(settings))
            node._say_renamed_destinations()  # what the next start says
        assert "where results were delivered under that name" not in caplog.text
        assert "by hand" not in caplog.text
        assert ("reload: destination pacs is now PACS@127.0.0.1:12842 (was PACS@127.0.0.1:12850, where no result "
                "object was delivered under that name)") in caplog.text
    finally:
        node.stop()


def test_a_sent_item_records_the_address_it_was_delivered_to(tmp_path):
    """A dead letter queued for a wrong port and delivered, once re-queued, to the fixed one: the state names the
    archive that holds it (the dispatcher records the address with each attempt: StateDB.mark_in_flight), so no
    later start or re-analysis says results were delivered to the wrong port (break48a #9)."""
    root = prepare_storage_dir(tmp_path / "store")
    db = StateDB(root / "state.sqlite3", upgrade=True)
    try:
        store = Store(root, db)
        store.instance(1)
        first, second = store.analyse(classes=(SEG, SR))
        db.mark_in_flight(first, address=("PACS", "127.0.0.1", 12842))
        db.mark_in_flight(second)  # no address given: the queued one stays
        db.mark_sent([first, second])
        assert db.delivered_address_sets() == {"pacs": {("PACS", "127.0.0.1", 12842), ("PACS", "127.0.0.1", 104)}}
    finally:
        db.close()


# --- review48b #7: each note's description names the series that note lists -------------------------------------

def test_each_rejection_note_names_the_series_and_time_of_what_it_lists(tmp_path):
    """The KO's Series Description was built from the latest superseded analysis (supersedes[-1]) for every
    destination: one that missed run 2 got a note listing run 1's 9001-9201 labelled "series 10001-10200 of <run 2's
    time>", and the SC / display copies a note lists were left out of the range."""
    import pydicom

    from pydicom.uid import SecondaryCaptureImageStorage as SC

    config = Config.model_validate({
        "destinations": [_pacs("pacs1"), _pacs("pacs2", 105)],
        "routes": [{"name": "mr", "match": {"modality": "MR"}, "pipelines": ["cine"],
                    "destinations": ["pacs1", "pacs2"]}]})

    def entry(number: int, sop_class: str, analysis_id: int | None) -> dict:
        return {"sop_instance_uid": f"1.2.8.{number}", "series_instance_uid": f"1.2.8.{number}.0",
                "sop_class_uid": sop_class, "study_instance_uid": "1.2.8", "display_copy": False,
                "analysis_id": analysis_id, "series_number": number if analysis_id else None}

    run1 = [entry(9001, SEG, 1), entry(9100, SR, 1), entry(9200, PDF, 1), entry(9201, SC, 1)]
    run2 = [entry(10001, SEG, 2), entry(10100, SR, 2), entry(10200, PDF, 2)]
    supersedes = [{"analysis_id": 1, "series_number": 9100, "pdf_series_number": 9200,
                   "report_time": "2026-12-07 09:00:00", "delivered_to": ["pacs1", "pacs2"]},
                  {"analysis_id": 2, "series_number": 10100, "pdf_series_number": 10200,
                   "report_time": "2026-12-07 10:00:00", "delivered_to": ["pacs1"]}]
    rejects = {"pacs1": run2, "pacs2": run1}

    class Identified(_Analyser):  # result objects with the patient and study identity a note copies
        def analyse(self, study, pipelines, started_at=None, supersedes=None):
            outcome = super().analyse(study, pipelines, started_at, supersedes)
            for dataset in outcome.datasets:
                dataset.PatientID, dataset.PatientName, dataset.PatientBirthDate, dataset.PatientSex = "P1", "A^B", "", ""
                dataset.StudyDate, dataset.StudyTime, dataset.AccessionNumber, dataset.StudyID = "20261207", "", "", ""
                dataset.ReferringPhysicianName = ""
            return outcome

    run = run_study(_Study(), config, Identified(), None, tmp_path, lambda d: f"{d.SOPInstanceUID}.dcm",
                    supersedes=supersedes, rejects=rejects)
    notes = {w.destination: str(pydicom.dcmread(tmp_path / w.path).SeriesDescription)
             for w in run.written if w.destination}
    assert notes == {"pacs1": "Superseded: series 10001-10200 of 2026-12-07 10:00:00",  # "by AI run 3": over 64
                     "pacs2": "Superseded by AI run 3: series 9001-9201 of 2026-12-07 09:00:00"}, notes
    # objects of two analyses, or a purged one (no number known): no range and no time that would misname them
    run = run_study(_Study(), config, Identified(), None, tmp_path, lambda d: f"{d.SOPInstanceUID}.dcm",
                    supersedes=supersedes, rejects={"pacs1": run1 + run2, "pacs2": [entry(9100, SR, None)]})
    notes = {w.destination: str(pydicom.dcmread(tmp_path / w.path).SeriesDescription)
             for w in run.written if w.destination}
    assert notes == {"pacs1": "Superseded by AI run 3: AI results", "pacs2": "Superseded by AI run 3: AI results"}


# --- break51a #2: a mistyped address at the re-analysis, fixed before its results were delivered --------------------

def _report_file(node: Node, analysis_outbox: list[int], series_number: int) -> None:
    """Make the SR the Store wrote for an analysis (of `analysis_outbox`) a readable report of study KEY (the Store
    writes placeholder bytes; a late rejection note takes its patient and study identity from the report)."""
    row = next(r for r in node.db.outbox_for(KEY) if r["id"] in analysis_outbox and r["path"].endswith(".dcm")
               and node.db._rows("SELECT sop_class_uid FROM results WHERE sop_instance_uid=:s",
                                 {"s": r["sop_instance_uid"]})[0]["sop_class_uid"] == SR)
    report = pydicom.Dataset()
    report.file_meta = FileMetaDataset()
    report.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    report.file_meta.MediaStorageSOPClassUID = SR
    report.file_meta.MediaStorageSOPInstanceUID = row["sop_instance_uid"]
    report.SOPClassUID, report.SOPInstanceUID, report.Modality = SR, row["sop_instance_uid"], "SR"
    report.StudyInstanceUID, report.SeriesInstanceUID, report.SeriesNumber = KEY, "2.25.77", series_number
    report.PatientID, report.PatientName, report.StudyDate, report.StudyTime = "P1", "Doe^J", "20261207", "101500"
    report.AccessionNumber, report.StudyID, report.ReferringPhysicianName = "A1", "1", ""
    report.PatientBirthDate, report.PatientSex = "19600101", "F"
    report.save_as(node.storage_dir / row["path"], enforce_file_format=True)


def _started(tmp_path, destination: dict) -> tuple[Node, dict]:
    settings = {"node": {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 0},
                "studies": {"quiet_seconds": 3600}, "destinations": [destination]}
    node = Node(Config.model_validate(settings), analyser=object())
    node.start(warm_up=False)
    node.dispatcher.stop()  # nothing is sent meanwhile: the test decides what was delivered
    return node, settings


def _notes(node: Node, analysis_id: int) -> list:
    return node.db._rows("SELECT * FROM results WHERE analysis_id=:a AND sop_class_uid=:ko",
                         {"a": analysis_id, "ko": KO})


def test_a_mistyped_ae_title_fixed_before_the_reanalysis_is_delivered_queues_the_missing_rejection_note(
        tmp_path, caplog):
    node, settings = _started(tmp_path, _pacs("pacs"))
    try:
        store = Store(node.storage_dir, node.db)
        store.instance(1)
        first = store.analyse(classes=(SEG, SR))
        node.db.mark_sent(first)  # run 1 delivered to PACS@127.0.0.1:104
        delivered = {row["sop_instance_uid"] for row in node.db.outbox_for(KEY)}
        settings["destinations"] = [{**_pacs("pacs"), "ae_title": "PACSX"}]  # a typo
        node.reload(Config.model_validate(settings))
        store.instance(2)
        with caplog.at_level(logging.INFO, logger="dicomnode.node"):
            assert node._rejected(KEY, KEY) == {}  # what the re-analysis decides: PACSX is not known to hold run 1
        assert f"the earlier results of study {KEY} stay current, unrejected, at PACS@127.0.0.1:104" in caplog.text
        second = store.analyse(classes=(SEG, SR))  # no note: every association to PACSX is rejected, nothing sent
        _report_file(node, second, 9100 + 1000)
        latest = max(a["id"] for a in node.db.analyses_of(KEY))
        assert _notes(node, latest) == []
        settings["destinations"] = [_pacs("pacs")]  # fixed
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="dicomnode.node"):
            node.reload(Config.model_validate(settings))
        notes = _notes(node, latest)
        assert len(notes) == 1
        note = pydicom.dcmread(node.storage_dir / notes[0]["path"])
        listed = {str(item.ReferencedSOPInstanceUID) for study in note.CurrentRequestedProcedureEvidenceSequence
                  for series in study.ReferencedSeriesSequence for item in series.ReferencedSOPSequence}
        assert listed == delivered  # what PACS@127.0.0.1:104 holds, nothing of run 2
        assert note.SeriesNumber == 9100 + 2 + 1000 and note.StudyInstanceUID == KEY and note.PatientID == "P1"
        queued = [r for r in node.db.outbox_for(KEY) if r["sop_instance_uid"] == notes[0]["sop_instance_uid"]]
        assert [(r["destination"], r["state"], r["ae_title"]) for r in queued] == [("pacs", OUTBOX_PENDING, "PACS")]
        recorded = json.loads(node.db.study(KEY)["summary_json"])
        assert recorded["rejection_note"]["destinations"]["pacs"]["sop_instance_uid"] == notes[0]["sop_instance_uid"]
        assert notes[0]["path"] in recorded["outputs"]
        assert f"IOCM rejection note {notes[0]['sop_instance_uid']} queued to it" in caplog.text
        node.reload(Config.model_validate(settings))  # nothing changed: no second note
        node._queue_missing_rejection_notes({"pacs"})  # what a start looks at: already queued
        assert len(_notes(node, latest)) == 1
    finally:
        node.stop()


def test_no_late_rejection_note_where_the_results_went_to_the_other_address_or_it_is_still_elsewhere(tmp_path):
    node, settings = _started(tmp_path, _pacs("pacs"))
    try:
        store = Store(node.storage_dir, node.db)
        store.instance(1)
        node.db.mark_sent(store.analyse(classes=(SEG, SR)))
        settings["destinations"] = [_pacs("pacs", 11112)]  # another archive
        node.reload(Config.model_validate(settings))
        store.instance(2)
        second = store.analyse(classes=(SEG, SR))
        _report_file(node, second, 9100 + 1000)
        latest = max(a["id"] for a in node.db.analyses_of(KEY))
        settings["destinations"] = [_pacs("pacs", 11113)]  # yet another address: holds nothing of run 1
        node.reload(Config.model_validate(settings))
        assert _notes(node, latest) == []
        node.db.mark_sent(second)  # run 2 delivered there; then the address goes back to run 1's archive
        settings["destinations"] = [_pacs("pacs")]
        node.reload(Config.model_validate(settings))
        assert _notes(node, latest) == []  # run 2 never goes there: nothing supersedes run 1 at that archive
    finally:
        node.stop()


def test_a_late_rejection_note_beside_dead_results_is_a_dead_letter_retried_with_them_queued_at_start(tmp_path):
    node, settings = _started(tmp_path, _pacs("pacs"))
    try:
        store = Store(node.storage_dir, node.db)
        store.instance(1)
        node.db.mark_sent(store.analyse(classes=(SEG, SR)))
        settings["destinations"] = [{**_pacs("pacs"), "ae_title": "PACSX"}]
        node.reload(Config.model_validate(settings))
        store.instance(2)
        second = store.analyse(classes=(SEG, SR))
        _report_file(node, second, 9100 + 1000)
        store.dead(second)  # every attempt at PACSX rejected
        for outbox_id in second:
            node.db.mark_failed_send(outbox_id, "association with PACSX@127.0.0.1:104 failed: rejected by the peer "
                                     "(rejected-permanent; called AE title not recognised)", time.time(), dead=True)
        latest = max(a["id"] for a in node.db.analyses_of(KEY))
    finally:
        node.stop()
    settings["destinations"] = [_pacs("pacs")]  # fixed while the node was stopped: the start queues the note
    node = Node(Config.model_validate(settings), analyser=object())
    node.start(warm_up=False)
    try:
        node.dispatcher.stop()
        notes = _notes(node, latest)
        assert len(notes) == 1
        states = {r["sop_instance_uid"]: r["state"] for r in node.db.outbox_for(KEY) if r["analysis_id"] == latest}
        assert states[notes[0]["sop_instance_uid"]] == OUTBOX_DEAD
        # dispatch.resume_dead_letters classes the note as its results (review51 #2): re-queued with them
        errors = {r["sop_instance_uid"]: r["last_error"] for r in node.db.outbox_for(KEY) if r["analysis_id"] == latest}
        assert all(transient_dead_letter(error) for error in errors.values()), errors
        assert node.db.retry_dead(KEY) == 3  # `dicomnode retry` re-queues the note with the results
    finally:
        node.stop()
