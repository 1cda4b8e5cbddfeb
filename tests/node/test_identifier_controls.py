"""Identifiers an archive matches by (PatientID, IssuerOfPatientID, AccessionNumber, StudyID) holding control
characters are copied as received into every result object (review46 #10): the objects are then invalid (LO / SH
allow none, PS3.5 6.2) and a validating archive may refuse them, so the node says so: a WARNING naming the study,
the attribute and the characters (escaped), summary.json `identifier_warnings`, the `process` printout, the study's
reason in `dicomnode status`, and a dead letter's error naming them as the likely cause of a permanent refusal."""
from __future__ import annotations

import json
import logging
import time

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.sop_class import MRImageStorage

from dicomnode.cli import main
from dicomnode.config import Config, DispatchConfig
from dicomnode.dispatch import Dispatcher
from dicomnode.results.headers import derivable_header, identifier_control_characters
from dicomnode.state import COMPLETE, DONE, IDENTIFIER_NOTE_PREFIX, InstanceRow
from dicomnode.types import ResultObject
from dicomnode.uids import short_hash
from tests.hardening import test_send_diagnostics as diagnostics
from tests.hardening.test_send_diagnostics import mr_file, queue_results

peers, store = diagnostics.peers, diagnostics.store  # fixtures: pynetdicom peers on loopback, a state in tmp_path

PATIENT_ID = "HT0001\r\n"  # a CR LF a registration system appended
ACCESSION = "ACC\t42"


def _raw(dataset: Dataset, keyword: str) -> str:
    """The value as its bytes spell it (pydicom strips trailing spaces only)."""
    return dataset[keyword].value


def test_a_copied_identifier_with_control_characters_is_warned_about_with_the_study_and_the_characters(caplog):
    header = Dataset()
    header.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.4747"
    header.PatientID, header.AccessionNumber, header.StudyID = PATIENT_ID, ACCESSION, "7\x85"
    header.PatientName = "Doe^John"
    with caplog.at_level(logging.WARNING, logger="dicomnode.results"):
        derived = derivable_header(header)
        derivable_header(header)  # every object of the study derives its header: said once per study and attribute
    assert (derived.PatientID, derived.AccessionNumber, derived.StudyID) == (PATIENT_ID, ACCESSION, "7\x85")
    warned = [r.getMessage() for r in caplog.records if "copied as received into every result object" in
              r.getMessage()]
    study = short_hash(header.StudyInstanceUID)
    assert len(warned) == 3, warned
    for message, start in zip(warned, (
            f"study {study}: source PatientID holds control characters (\\r\\n), which VR LO does not allow: ",
            f"study {study}: source AccessionNumber holds control characters (\\t), which VR SH does not allow: ",
            f"study {study}: source StudyID holds control characters (\\x85), which VR SH does not allow: ")):
        assert message.startswith(start), (message, start)
    assert all("\r" not in m and "\n" not in m and "\t" not in m for m in warned)  # escaped, never the characters
    assert "not valid DICOM (dciodvfy)" in warned[0] and "HT0001" not in warned[0]  # never the value itself
    assert [(e["attribute"], e["characters"]) for e in identifier_control_characters(derived)] == [
        ("PatientID", "\\r\\n"), ("AccessionNumber", "\\t"), ("StudyID", "\\x85")]


def test_clean_identifiers_give_no_warning(caplog):
    header = Dataset()
    header.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.4748"
    header.PatientID, header.AccessionNumber, header.PatientName = "HT0001", "ACC42", "Line\r\nBreak^Name"
    with caplog.at_level(logging.WARNING, logger="dicomnode.results"):
        derived = derivable_header(header)
    assert identifier_control_characters(derived) == []  # the name's CR LF became a space (not an identifier)
    assert not any("copied as received into every result object" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_process_lists_the_identifiers_in_summary_json_and_the_printout(tmp_path, capsys):
    """End to end through `process` with the real pipelines: every result object keeps the bytes, summary.json's
    study entry lists the attributes with their characters escaped, and the printout says it."""
    from dicomnode.analysis.run import Analyser
    from dicomnode.process import process_folder
    from dicomnode.summary_view import print_summary_table
    from tests.data.field_inputs import lge_variant

    def controls(ds, _index):
        ds.PatientID, ds.AccessionNumber = PATIENT_ID, ACCESSION

    lge_variant(tmp_path / "in" / "controls", controls, indices=range(8, 16))
    config = Config.model_validate({"routes": [{"name": "lge", "pipelines": ["lge"]}]})
    summary = process_folder(tmp_path / "in", tmp_path / "out", config, analyser=Analyser(config))
    (study,) = summary["studies"]
    assert study["outputs"] and "lge" in study, study.get("declined")
    for relative in study["outputs"]:
        written = pydicom.dcmread(tmp_path / "out" / relative)
        assert (_raw(written, "PatientID"), _raw(written, "AccessionNumber")) == (PATIENT_ID, ACCESSION), relative
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())["studies"][0]
    assert [(e["attribute"], e["vr"], e["characters"]) for e in on_disk["identifier_warnings"]] == [
        ("PatientID", "LO", "\\r\\n"), ("AccessionNumber", "SH", "\\t")]
    assert on_disk["identifier_warnings"][0]["text"].startswith(
        "PatientID holds control characters (\\r\\n), which VR LO does not allow: copied as received")
    capsys.readouterr()
    print_summary_table({"studies": [on_disk]})
    out = capsys.readouterr().out
    assert "  identifier: PatientID holds control characters (\\r\\n), which VR LO does not allow" in out, out
    assert "  identifier: AccessionNumber holds control characters (\\t)" in out, out


def _finished(db, root, study: str, summary: dict, port: int, path) -> None:
    """A finished analysis of `study` with `summary` and one result object queued to destination 'pacs'."""
    db.add_instance(InstanceRow(f"{study}.1", study, study, f"{study}.0", MRImageStorage, ExplicitVRLittleEndian,
                                "MR", f"spool/{study}.dcm", 1, "SCANNER1", time.time()))
    db.set_study_state(study, COMPLETE)
    analysis = db.start_analysis(study, 0)
    relative = str(path.relative_to(root))
    result = ResultObject(f"{study}.9.9", f"{study}.8", MRImageStorage, relative)
    assert db.finish_analysis(analysis, study, 0, summary, [result], [
        {"destination": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": port,
         "sop_instance_uid": result.sop_instance_uid, "path": relative}])


def test_status_shows_the_identifiers_beside_the_study_also_once_it_is_delivered(tmp_path, peers, store, capsys):
    root, db = store
    peer = peers()
    dataset = Dataset()
    dataset.PatientID = PATIENT_ID
    summary = {"study_instance_uid": "1.6", "identifier_warnings": identifier_control_characters(dataset)}
    _finished(db, root, "1.6", summary, peer.port, mr_file(root / "results", "mr"))
    reason = db.study("1.6")["reason"]
    assert reason.startswith(IDENTIFIER_NOTE_PREFIX + "PatientID (\\r\\n): the result objects are not valid DICOM"), \
        reason
    dispatcher = Dispatcher(db, root, DispatchConfig(max_attempts=8, initial_backoff_seconds=60), "DICOMNODE")
    assert dispatcher.run_once() == 1
    study = db.study("1.6")
    assert study["state"] == DONE and study["reason"] == reason  # kept once delivered, as the sender note is
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\nstorage_dir = "{root}"\n')
    capsys.readouterr()
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "identifiers copied with control characters: PatientID (\\r\\n)" in out, out


def _mr_with(folder, name: str, patient_id: str):
    path = mr_file(folder, name)
    dataset = pydicom.dcmread(path)
    dataset.PatientID = patient_id
    dataset.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("status", [0xA900, 0xC000])
def test_a_permanent_refusal_names_the_control_characters_as_the_likely_cause(tmp_path, peers, store, status,
                                                                               capsys):
    root, db = store
    peer = peers("status", status=status)
    queue_results(db, root, "1.5", [("strict", peer.port, _mr_with(root / "results", "controls", PATIENT_ID)),
                                    ("strict", peer.port, _mr_with(root / "results", "clean", "HT0001"))])
    dispatcher = Dispatcher(db, root, DispatchConfig(max_attempts=8, initial_backoff_seconds=60), "DICOMNODE")
    assert dispatcher.run_once() == 0
    rows = {row["path"]: row for row in db.outbox_for("1.5")}
    controls, clean = rows["results/controls.dcm"], rows["results/clean.dcm"]
    assert controls["state"] == clean["state"] == "dead"
    assert controls["last_error"].startswith(f"refused: status 0x{status:04X}")
    assert ("; likely cause: PatientID holds control characters (\\r\\n), which VR LO does not allow: copied as "
            "received from the source images") in controls["last_error"], controls["last_error"]
    assert controls["last_error"].endswith("`dicomnode retry STUDY` once the destination accepts it")
    assert "likely cause" not in clean["last_error"]  # another refusal of the same kind names no cause
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\nstorage_dir = "{root}"\n')
    capsys.readouterr()
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "likely cause: PatientID holds control characters (\\r\\n)" in out, out


def test_a_transient_refusal_names_no_cause(peers, store):
    """0xA700 Out of Resources is about the destination, not the object: retried, no cause named."""
    root, db = store
    peer = peers("status", status=0xA700)
    queue_results(db, root, "1.4", [("full", peer.port, _mr_with(root / "results", "controls", PATIENT_ID))])
    dispatcher = Dispatcher(db, root, DispatchConfig(max_attempts=8, initial_backoff_seconds=60), "DICOMNODE")
    assert dispatcher.run_once() == 0
    (row,) = db.outbox_for("1.4")
    assert row["state"] == "pending" and "likely cause" not in row["last_error"], dict(row)


# --- review47 #5: the note survives `retry --resend`, a dead letter and `retry` of the dead letter --------------------

def _controls_summary(study: str) -> dict:
    dataset = Dataset()
    dataset.PatientID = PATIENT_ID
    return {"study_instance_uid": study, "identifier_warnings": identifier_control_characters(dataset)}


def test_the_identifier_note_stays_after_a_resend(tmp_path, peers, store):
    root, db = store
    peer = peers()
    _finished(db, root, "1.7", _controls_summary("1.7"), peer.port, mr_file(root / "results", "mr"))
    reason = db.study("1.7")["reason"]
    dispatcher = Dispatcher(db, root, DispatchConfig(max_attempts=8, initial_backoff_seconds=60), "DICOMNODE")
    assert dispatcher.run_once() == 1 and db.study("1.7")["state"] == DONE
    assert db.resend("1.7") == (1, 0)
    assert db.study("1.7")["reason"] == reason  # the re-sent objects carry the same identifiers
    assert dispatcher.run_once() == 1
    study = db.study("1.7")
    assert study["state"] == DONE and study["reason"] == reason


def test_a_dead_letter_keeps_the_identifier_note_beside_its_own_reason(tmp_path, peers, store):
    root, db = store
    peer = peers("status", status=0xC000)
    _finished(db, root, "1.8", _controls_summary("1.8"), peer.port, mr_file(root / "results", "mr"))
    note = db.study("1.8")["reason"]
    dispatcher = Dispatcher(db, root, DispatchConfig(max_attempts=8, initial_backoff_seconds=60), "DICOMNODE")
    assert dispatcher.run_once() == 0
    study = db.study("1.8")
    assert study["state"] == "failed"
    assert study["reason"] == "1 result object(s) could not be delivered (dead letter); " + note
    assert db.retry_dead("1.8") == 1
    assert db.study("1.8")["reason"] == note  # queued again: the dead letter's part goes, the note stays
