"""What a re-analysis says of why it was made when instances were sent again in place of the copies its predecessor
was made from (a corrected weight re-sent for part of the study, break47b #5): "sent again ... replacing", with the
correction, not "received after that report", which reads as images added."""
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
from dicomnode.state import InstanceRow
from tests.node.test_retention_safety import KEY, MR, SR, Store


def _report(path, weight: str) -> None:
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID, dataset.file_meta.MediaStorageSOPInstanceUID = SR, "2.25.1"
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SOPClassUID, dataset.StudyInstanceUID, dataset.SeriesNumber = SR, KEY, 9100
    dataset.ContentDate, dataset.ContentTime = "20261207", "105701"
    dataset.PatientSize, dataset.PatientWeight, dataset.PatientAge = "1.84", weight, "045Y"
    dataset.save_as(path, enforce_file_format=True)


def _node(tmp_path) -> Node:
    config = Config.model_validate({"node": {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 0},
                                    "studies": {"quiet_seconds": 3600}})
    return Node(config, analyser=object())


def _analysed(store: Store, node: Node, instances: int) -> None:
    """Analyse the study as the node records it: the analysis's summary holds the instances it read."""
    store.db.mark_sent(store.analyse(classes=(SR,)))
    with node.db._write() as db:
        db.execute(text("UPDATE analyses SET summary_json=:s"), {"s": f'{{"instances_analysed": {instances}}}'})
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


def test_patient_corrections_name_each_changed_value():
    earlier = Dataset()
    earlier.PatientSize, earlier.PatientWeight, earlier.PatientAge = "1.84", "95", "045Y"
    now = PatientInfo(height_m=1.80, weight_kg=95.0, age_years=46.0, age=PatientAge(46.0, "46 years", "PatientAge"))
    assert patient_corrections(earlier, now) == ["PatientSize 1.84 m corrected to 1.8 m",
                                                 "PatientAge 45 years corrected to 46 years"]
    assert patient_corrections(Dataset(), now) == [] and patient_corrections(earlier, None) == []
