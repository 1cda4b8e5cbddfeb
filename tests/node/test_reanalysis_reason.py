"""What a re-analysis says of why it was made when instances were sent again in place of the copies its predecessor
was made from (a corrected weight re-sent for part of the study, break47b #5): "sent again ... replacing", with the
correction, not "received after that report", which reads as images added; and an instance the analysis read,
though indexed after its claim, is neither (review47 #6)."""
from __future__ import annotations

import time

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import text

from dicomnode.cmr.age import PatientAge
from dicomnode.cmr.study import PatientInfo
from dicomnode.config import Config
from dicomnode.node import Node, patient_corrections
from dicomnode.results.provenance import supersede_text
from dicomnode.state import COMPLETE, DONE, RECEIVED, InstanceRow
from dicomnode.types import StudyOutcome
from tests.hardening.hardening_support import synthetic_mr
from tests.node.test_retention_safety import KEY, MR, SR, Store

SC = "1.2.840.10008.5.1.4.1.1.7"


def _report(path, weight: str) -> None:
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID, dataset.file_meta.MediaStorageSOPInstanceUID = SR, "2.25.1"
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SOPClassUID, dataset.StudyInstanceUID, dataset.SeriesNumber = SR, KEY, 9100
    dataset.ContentDate, dataset.ContentTime = "20261207", "105701"
    dataset.PatientSize, dataset.PatientWeight, dataset.PatientAge = "1.84", weight, "045Y"
    dataset.save_as(path, enforce_file_format=True)


def _node(tmp_path, analyser=None) -> Node:
    config = Config.model_validate({"node": {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 0},
                                    "studies": {"quiet_seconds": 3600}})
    return Node(config, analyser=analyser or object())


def _analysed(store: Store, node: Node, instances: int, until: float | None = None) -> None:
    """Analyse the study as the node records it: the analysis's summary holds the instances it read (and, `until`,
    the latest of their receive times)."""
    store.db.mark_sent(store.analyse(classes=(SR,)))
    read = f', "instances_received_until": {until!r}' if until is not None else ""
    with node.db._write() as db:
        db.execute(text("UPDATE analyses SET summary_json=:s"), {"s": f'{{"instances_analysed": {instances}{read}}}'})
    [row] = store.db.earlier_reports(KEY, SR)
    _report(node.storage_dir / row["path"], "95")


def _replace(store: Store, number: int) -> None:
    """Spool.replace's index step: the instance's copy replaced by one sent again (its receive time now)."""
    sop = f"{KEY}.{number}"
    store.db.replace_instance(InstanceRow(sop, KEY, KEY, KEY + ".9", MR, "1.2.840.10008.1.2.1", "MR",
                                          f"spool/{KEY}/series/{sop}.dcm", 8, "SCANNER1", time.time()))


def test_instances_sent_again_with_a_corrected_weight_are_said_replaced_with_the_correction(tmp_path):
    node = _node(tmp_path)
    try:
        store = Store(node.storage_dir, node.db)
        for number in (1, 2, 3):
            store.instance(number)
        _analysed(store, node, 3)
        _replace(store, 2)
        _replace(store, 3)  # 2 of 3 re-sent with the weight corrected
        patient = PatientInfo(weight_kg=60.0, height_m=1.84, age_years=45.0,
                              age=PatientAge(45.0, "45 years", "PatientAge"))
        [entry] = node._superseded(KEY, KEY, patient=patient)
        assert entry["reason"] == ("2 instance(s) sent again with PatientWeight 95 kg corrected to 60 kg, replacing "
                                   "the copies that report was made from")
        assert "received after" not in supersede_text([entry])
        store.instance(4)  # and one image added
        [entry] = node._superseded(KEY, KEY, patient=patient)
        assert entry["reason"] == ("2 instance(s) sent again with PatientWeight 95 kg corrected to 60 kg, replacing "
                                   "the copies that report was made from and 1 instance(s) received after that report")
    finally:
        node.db.close()


def test_added_instances_are_still_said_received_after_the_report(tmp_path):
    node = _node(tmp_path)
    try:
        store = Store(node.storage_dir, node.db)
        store.instance(1)
        _analysed(store, node, 1)
        store.instance(2)
        [entry] = node._superseded(KEY, KEY, patient=PatientInfo(weight_kg=95.0, height_m=1.84))
        assert entry["reason"] == "1 instance(s) received after that report"
    finally:
        node.db.close()


def test_an_added_instance_from_a_receiver_whose_clock_is_behind_is_still_said_received(tmp_path):
    """Scale-out: receive times come from each receiver's clock. An instance beyond the count the earlier analysis
    read is added, even where its receive time is before the latest of those it read."""
    node = _node(tmp_path)
    try:
        store = Store(node.storage_dir, node.db)
        store.instance(1)
        _analysed(store, node, 1, until=time.time() + 60)  # read on a receiver 60 s ahead
        store.instance(2)
        [entry] = node._superseded(KEY, KEY, patient=PatientInfo(weight_kg=95.0, height_m=1.84))
        assert entry["reason"] == "1 instance(s) received after that report"
    finally:
        node.db.close()


def test_patient_corrections_name_each_changed_value():
    earlier = Dataset()
    earlier.PatientSize, earlier.PatientWeight, earlier.PatientAge = "1.84", "95", "045Y"
    now = PatientInfo(height_m=1.80, weight_kg=95.0, age_years=46.0, age=PatientAge(46.0, "46 years", "PatientAge"))
    assert patient_corrections(earlier, now) == ["PatientSize 1.84 m corrected to 1.8 m",
                                                 "PatientAge 45 years corrected to 46 years"]
    assert patient_corrections(Dataset(), now) == [] and patient_corrections(earlier, None) == []


class _Reading:
    """Reads the study as analysis.run.Analyser is handed it, and makes no result objects."""

    def __init__(self):
        self.read = []

    def analyse(self, study, pipelines, started_at=None, supersedes=None):
        self.read.append(sum(len(series.instances) for series in study.series))
        return StudyOutcome(summary={"study_instance_uid": study.study_instance_uid, "declined": []}, datasets=[])


def _index(node: Node, number: int, sop_class: str = MR) -> None:
    """Spool.store's steps for one instance of study KEY: the file, then its index row (an MR image re-opens a
    finished study, another class does not, as Spool.store decides)."""
    dataset = synthetic_mr(study_uid=KEY, series_uid=KEY + ".9", size=8, instance=number, position=float(number))
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = f"{KEY}.{number}"
    if sop_class != MR:
        dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = sop_class
    relative = f"spool/{KEY}/series/{KEY}.{number}.dcm"
    (node.storage_dir / relative).parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(node.storage_dir / relative, enforce_file_format=True)
    node.db.add_instance(InstanceRow(f"{KEY}.{number}", KEY, KEY, KEY + ".9", sop_class, "1.2.840.10008.1.2.1",
                                     "MR", relative, 8, "SCANNER1", time.time()), reopens=sop_class == MR)


def test_an_instance_indexed_between_the_claim_and_the_listing_is_read_not_sent_again(tmp_path):
    """An object that does not re-open the study (here a Secondary Capture) indexed after the analysis's claim but
    before it lists the instances is read by it: a later re-analysis must not count it as sent again."""
    analyser = _Reading()
    node = _node(tmp_path, analyser)
    try:
        for number in (1, 2):
            _index(node, number)
        assert node.db.set_study_state(KEY, COMPLETE, expect=(RECEIVED,))
        generation = node.db.study(KEY)["generation"]
        analysis_id = node.db.start_analysis(KEY, generation)
        claimed_at = [a for a in node.db.analyses_of(KEY) if a["id"] == analysis_id][0]["started_at"]
        while time.time() <= claimed_at:
            time.sleep(0.001)
        _index(node, 3, SC)  # after the claim: the study stays claimed, and the analysis lists it
        node._analyse_claimed(KEY, generation, analysis_id)
        assert node.db.study(KEY)["state"] == DONE and analyser.read
        _index(node, 4)  # one image added since: the re-analysis's reason
        assert node._reanalysis_reason(KEY, analysis_id, False) == "1 instance(s) received after that report"
    finally:
        node.db.close()
