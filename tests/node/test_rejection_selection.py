"""break46a #2: which earlier result objects a re-analysis retires with its IOCM Rejection Note (Node._rejected):
the SEG, SR, PDF and SC of earlier analyses that a destination holds or may hold, not display copies, not those an
earlier note already lists, not those whose sends were all retired undelivered, purged ones (tombstones) included."""
from __future__ import annotations

import datetime as dt

from pydicom.dataset import Dataset
from pydicom.uid import KeyObjectSelectionDocumentStorage

from dicomnode.config import Config
from dicomnode.node import Node
from dicomnode.results.rejection import build_rejection_note
from dicomnode.retention import purge_expired
from tests.node.test_retention_safety import KEY, MR, SEG, SR, Store

PDF = "1.2.840.10008.5.1.4.1.1.104.1"


def _node(tmp_path) -> Node:
    config = Config.model_validate({"node": {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 0},
                                    "studies": {"quiet_seconds": 3600}})
    return Node(config, analyser=object())


def _results(store: Store, analysis: int) -> dict[str, str]:
    """{SOP Instance UID: SOP class} of the results of the `analysis`-th analysis (1-based) of the study."""
    ids = [a["id"] for a in store.db.analyses_of(KEY)]
    return {r["sop_instance_uid"]: r["sop_class_uid"] for r in store.db._rows(
        "SELECT * FROM results WHERE analysis_id=:a", {"a": ids[analysis - 1]})}


def _uids(node: Node) -> set[str]:
    return {entry["sop_instance_uid"] for entry in node._rejected(KEY, KEY)}


def test_the_results_sent_or_queued_are_rejected_and_retired_ones_and_copies_are_not(tmp_path):
    node = _node(tmp_path)
    try:
        store = Store(node.storage_dir, node.db)
        store.instance(1)
        assert node._rejected(KEY, KEY) == []  # a first analysis retires nothing
        store.db.mark_sent(store.analyse(classes=(SEG, SR, PDF, MR)))
        first = _results(store, 1)
        sent = {uid for uid, cls in first.items() if cls != MR}
        assert _uids(node) == sent and len(sent) == 3
        assert all(entry["study_instance_uid"] == KEY and entry["sop_class_uid"] == first[entry["sop_instance_uid"]]
                   for entry in node._rejected(KEY, KEY))
        store.instance(2)
        store.analyse(classes=(SEG, SR))  # queued, not sent yet: may reach the PACS before the next analysis ends
        queued = set(_results(store, 2))
        assert _uids(node) == sent | queued
        store.instance(3)
        store.analyse(classes=(SEG, SR))  # supersedes analysis 2 whose sends are retired, never sent
        third = set(_results(store, 3))
        assert _uids(node) == sent | third
    finally:
        node.db.close()


def test_what_an_earlier_rejection_note_lists_is_not_rejected_again_and_purged_results_are(tmp_path):
    node = _node(tmp_path)
    try:
        store = Store(node.storage_dir, node.db)
        store.instance(1)
        store.db.mark_sent(store.analyse(classes=(SEG, SR)))
        first = node._rejected(KEY, KEY)
        store.instance(2)
        store.db.mark_sent(store.analyse(classes=(SEG, SR, KeyObjectSelectionDocumentStorage)))
        [note_uid] = [u for u, cls in _results(store, 2).items() if cls == KeyObjectSelectionDocumentStorage]
        row = next(r for r in store.db.earlier_reports(KEY, KeyObjectSelectionDocumentStorage))
        header = Dataset()
        header.StudyInstanceUID, header.PatientID, header.PatientName = KEY, "P1", "Test^Patient"
        for keyword in ("PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "StudyDate", "StudyTime",
                        "ReferringPhysicianName"):
            setattr(header, keyword, "")
        build_rejection_note(header, first, dt.datetime.now().astimezone(), 10102).save_as(
            node.storage_dir / row["path"], enforce_file_format=True)
        second = {u for u, cls in _results(store, 2).items() if cls != KeyObjectSelectionDocumentStorage}
        assert _uids(node) == second  # the first analysis's SEG and SR are already rejected
        assert note_uid not in _uids(node)  # a rejection note is never itself rejected
        store.age()
        assert purge_expired(node.db, node.storage_dir, days=30).studies == [KEY]
        store.instance(1)  # the study sent again after its purge: the tombstones are what the PACS holds
        assert _uids(node) >= second and {e["sop_instance_uid"] for e in first} <= _uids(node)
    finally:
        node.db.close()
