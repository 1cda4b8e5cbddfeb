"""A study whose instances carry two patients' identities is never analysed (break3 H1): `serve` fails it with the
identities and their instance counts, a WARNING, nothing sent and nothing deleted; `process` declines it in
summary.json. Both through the one check (cmr.identity, applied by study_path.run_study)."""
from __future__ import annotations

import json
import logging

import pytest

from pydicom.uid import generate_uid

from dicomnode.config import Config
from dicomnode.node import Node
from dicomnode.process import process_folder
from dicomnode.state import COMPLETE, FAILED
from dicomnode.types import StudyOutcome
from tests.hardening.hardening_support import store_one, synthetic_mr


class RecordingAnalyser:
    """Counts the studies it is asked to analyse; declines them all."""

    def __init__(self):
        self.calls = 0

    def warm_up(self, names):
        return {}

    def analyse(self, study, pipelines, started_at=None, supersedes=None):
        self.calls += 1
        return StudyOutcome(summary={"study_instance_uid": study.study_instance_uid,
                                     "declined": [{"series_instance_uid": None, "reason": "no LGE stack"}]})


def _two_patients(count=5):
    """One series of one study whose odd instances are another patient's (the tester's 'twopat' study)."""
    study, series = generate_uid(), generate_uid()
    datasets = []
    for index in range(1, count + 1):
        other = index % 2 == 1
        datasets.append(synthetic_mr(study_uid=study, series_uid=series, instance=index, position=8.0 * index,
                                     patient_id="OTHER-PATIENT-999" if other else "HT000001",
                                     patient_name="Other^Patient" if other else "HARDENING^TEST"))
    return datasets


def _config(tmp_path, **studies) -> Config:
    return Config.model_validate({
        "node": {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 0,
                 "allowed_calling_aes": ["*"]},
        "studies": {"quiet_seconds": 3600, **studies},
        "destinations": [{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 1}],
        "routes": [{"name": "all", "pipelines": ["lge", "cine"], "destinations": ["pacs"]}]})


def test_serve_fails_a_study_of_two_patients_and_sends_nothing(tmp_path, caplog):
    analyser = RecordingAnalyser()
    node = Node(_config(tmp_path), analyser=analyser)
    node.start(warm_up=False)
    try:
        datasets = _two_patients()
        for dataset in datasets:
            assert store_one(node.scp.port, dataset).Status == 0
        key = str(datasets[0].StudyInstanceUID)
        node.scheduler.remove_job(f"quiet:{key}")
        node.completion.forget(key)
        node.db.set_study_state(key, COMPLETE)
        with caplog.at_level(logging.WARNING):
            node.analyse_study(key, 0)
        study = node.db.study(key)
        assert analyser.calls == 0  # never measured
        assert study["state"] == FAILED
        assert study["reason"].startswith("instances of 2 patients under one Study Instance UID: ")
        assert "PatientID 'OTHER-PATIENT-999', PatientName 'Other^Patient', PatientBirthDate 19610423 (3 instances)" \
            in study["reason"]
        assert "PatientID 'HT000001', PatientName 'HARDENING^TEST', PatientBirthDate 19610423 (2 instances)" \
            in study["reason"]
        assert "series 7 hold instances of more than one" in study["reason"]
        assert node.db.outbox_for(key) == [] and node.db.result_count() == 0  # nothing sent
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("not analysed: instances of 2 patients" in line for line in warnings), warnings
        rows = node.db.study_instances(key)  # nothing received is deleted
        assert len(rows) == 5 and all(node.spool.path_of(row["path"]).exists() for row in rows)
        assert node.status()["studies"][0]["reason"] == study["reason"]
    finally:
        node.stop()


def test_serve_analyses_a_study_of_one_patient_written_differently(tmp_path):
    """Case, padding and an empty birth date are no second patient: the study is analysed as usual."""
    analyser = RecordingAnalyser()
    node = Node(_config(tmp_path), analyser=analyser)
    node.start(warm_up=False)
    try:
        study, series = generate_uid(), generate_uid()
        for index, name in enumerate(["HARDENING^TEST", "hardening^test^^", " Hardening ^ Test "], start=1):
            dataset = synthetic_mr(study_uid=study, series_uid=series, instance=index, position=8.0 * index,
                                   patient_name=name, patient_id="ht000001 " if index == 2 else "HT000001")
            if index == 3:
                dataset.PatientBirthDate = ""
            assert store_one(node.scp.port, dataset).Status == 0
        node.scheduler.remove_job(f"quiet:{study}")
        node.completion.forget(study)
        node.db.set_study_state(study, COMPLETE)
        node.analyse_study(study, 0)
        assert analyser.calls == 1 and node.db.study(study)["state"] != FAILED
    finally:
        node.stop()


def test_process_declines_a_study_of_two_patients_in_summary_json(tmp_path, caplog):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for index, dataset in enumerate(_two_patients(4)):
        dataset.save_as(inputs / f"{index}.dcm", enforce_file_format=True)
    analyser = RecordingAnalyser()
    with caplog.at_level(logging.WARNING):
        summary = process_folder(inputs, tmp_path / "out", _config(tmp_path), analyser=analyser)
    assert analyser.calls == 0
    [entry] = summary["studies"]
    assert entry["outputs"] == []
    [reason] = [d["reason"] for d in entry["declined"] if "patients" in d["reason"]]
    assert reason.startswith("instances of 2 patients under one Study Instance UID: ")
    assert "'OTHER-PATIENT-999'" in reason and "(2 instances)" in reason and "'HT000001'" in reason
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["studies"][0]["declined"] == entry["declined"]
    assert any("not analysed: instances of 2 patients" in r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING)


def _analysed(node, key):
    node.scheduler.remove_job(f"quiet:{key}")
    node.completion.forget(key)
    node.db.set_study_state(key, COMPLETE)
    node.analyse_study(key, 0)
    return node.db.study(key)


@pytest.mark.parametrize("grouping_key, misrouted_first", [
    ("PatientID+StudyDate", False), ("PatientID+StudyDate", True), ("AccessionNumber", False),
    ("AccessionNumber", True)])
def test_a_misrouted_slice_is_refused_under_every_grouping_key(tmp_path, grouping_key, misrouted_first):
    """break45b #3: under PatientID+StudyDate or AccessionNumber the key was computed per instance, so a slice of
    another patient (another PatientID and accession) under the same Study Instance UID became a study of its own
    and both patients got results in one Study Instance UID. The instances of one Study Instance UID now stay under
    the key its first instance got, and the identity check declines the study."""
    analyser = RecordingAnalyser()
    node = Node(_config(tmp_path, grouping_key=grouping_key), analyser=analyser)
    node.start(warm_up=False)
    try:
        study, series = generate_uid(), generate_uid()
        datasets = []
        for index in range(1, 6):
            misrouted = index == 3
            dataset = synthetic_mr(study_uid=study, series_uid=series, instance=index, position=8.0 * index,
                                   patient_id="67890" if misrouted else "12345",
                                   patient_name="Other^Otto" if misrouted else "Issuer^Ida")
            dataset.AccessionNumber = "ACC9" if misrouted else "ACC1"
            datasets.append(dataset)
        if misrouted_first:
            datasets.insert(0, datasets.pop(2))
        for dataset in datasets:
            assert store_one(node.scp.port, dataset).Status == 0
        [key] = {row["study_key"] for row in node.db.studies()}
        assert len(node.db.studies()) == 1 and len(node.db.study_instances(key)) == 5
        row = _analysed(node, key)
        assert analyser.calls == 0
        assert row["state"] == FAILED and row["reason"].startswith("instances of 2 patients under one Study")
        assert node.db.outbox_for(key) == []
    finally:
        node.stop()


def test_series_without_the_accession_stay_in_the_study_of_their_study_uid(tmp_path):
    """break45b #11: with grouping_key AccessionNumber, a series lacking the accession became a second study of the
    same Study Instance UID and the study was analysed twice; `status --study` found one of the two keys."""
    analyser = RecordingAnalyser()
    node = Node(_config(tmp_path, grouping_key="AccessionNumber"), analyser=analyser)
    node.start(warm_up=False)
    try:
        study = generate_uid()
        for series_number, accession in ((21, "ACC2"), (22, "")):
            series = generate_uid()
            for index in range(1, 4):
                dataset = synthetic_mr(study_uid=study, series_uid=series, instance=index, position=8.0 * index)
                dataset.SeriesNumber = series_number
                dataset.AccessionNumber = accession
                assert store_one(node.scp.port, dataset).Status == 0
        [row] = node.db.studies()
        assert row["study_key"].startswith("acc-") and len(node.db.study_instances(row["study_key"])) == 6
        assert [found["study_key"] for found in node.db.find_studies(study)] == [row["study_key"]]
        assert _analysed(node, row["study_key"])["state"] != FAILED and analyser.calls == 1
    finally:
        node.stop()


def test_the_first_key_of_a_study_uid_is_kept_after_a_restart(tmp_path):
    """The key a Study Instance UID got is read back from the state database: a later series sent after a restart
    (or to another receiver) with another accession joins the study instead of opening a second one."""
    first = Node(_config(tmp_path, grouping_key="AccessionNumber"), analyser=RecordingAnalyser())
    first.start(warm_up=False)
    study = generate_uid()
    try:
        dataset = synthetic_mr(study_uid=study, instance=1)
        dataset.AccessionNumber = "ACC1"
        assert store_one(first.scp.port, dataset).Status == 0
    finally:
        first.stop()
    again = Node(_config(tmp_path, grouping_key="AccessionNumber"), analyser=RecordingAnalyser())
    again.start(warm_up=False)
    try:
        dataset = synthetic_mr(study_uid=study, instance=2, position=8.0)
        dataset.AccessionNumber = "ACC9"
        assert store_one(again.scp.port, dataset).Status == 0
        [row] = again.db.studies()
        assert len(again.db.study_instances(row["study_key"])) == 2
    finally:
        again.stop()
