"""break46a #2, review46 #1-#3, #9: which earlier result objects a re-analysis retires with its IOCM Rejection Notes
(Node._rejected), per destination: the SEG, SR, PDF and SC (and display copies, flagged) of earlier analyses that
the destination received, not those an earlier note delivered there already lists (a note never delivered retires
nothing), not those never delivered, purged ones (tombstones) of the same study included."""
from __future__ import annotations

import datetime as dt

from pydicom.dataset import Dataset
from pydicom.uid import KeyObjectSelectionDocumentStorage
from sqlalchemy import text

from dicomnode.config import Config
from dicomnode.node import Node
from dicomnode.results.rejection import build_rejection_note
from dicomnode.retention import purge_expired
from dicomnode.state import OUTBOX_SUPERSEDED, InstanceRow
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


def _uids(node: Node, destination: str = "pacs", study: str = KEY) -> set[str]:
    return {entry["sop_instance_uid"] for entry in node._rejected(KEY, study).get(destination, [])}


def _header(study: str = KEY) -> Dataset:
    header = Dataset()
    header.StudyInstanceUID, header.PatientID, header.PatientName = study, "P1", "Test^Patient"
    for keyword in ("PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "StudyDate", "StudyTime",
                    "ReferringPhysicianName"):
        setattr(header, keyword, "")
    return header


def test_the_results_sent_or_queued_are_rejected_and_retired_ones_and_copies_are_not(tmp_path):
    node = _node(tmp_path)
    try:
        store = Store(node.storage_dir, node.db)
        store.instance(1)
        assert node._rejected(KEY, KEY) == {}  # a first analysis retires nothing
        store.db.mark_sent(store.analyse(classes=(SEG, SR, PDF, MR)))
        first = _results(store, 1)
        sent = set(first)
        assert _uids(node) == sent and len(sent) == 4
        assert all(entry["study_instance_uid"] == KEY and entry["sop_class_uid"] == first[entry["sop_instance_uid"]]
                   and entry["display_copy"] == (entry["sop_class_uid"] == MR)
                   for entry in node._rejected(KEY, KEY)["pacs"])
        store.instance(2)
        store.analyse(classes=(SEG, SR))  # queued, not sent: the next analysis's finish retires it unsent
        assert _uids(node) == sent
        store.instance(3)
        third = store.analyse(classes=(SEG, SR))
        store.db.mark_sent(third)
        assert _uids(node) == sent | set(_results(store, 3))
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
        first = first["pacs"]
        build_rejection_note(_header(), first, dt.datetime.now().astimezone(), 10102).save_as(
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


def test_a_note_never_delivered_retires_nothing_and_the_next_note_lists_what_it_listed(tmp_path):
    """review46 #1: analysis 1 delivered; analysis 2 queued (PACS down) with a note listing analysis 1's results; a
    late image's analysis 3 retires analysis 2's sends, the note included. Analysis 3's note still lists analysis
    1's SEG and SR: the undelivered note hid nothing."""
    node = _node(tmp_path)
    try:
        store = Store(node.storage_dir, node.db)
        store.instance(1)
        store.db.mark_sent(store.analyse(classes=(SEG, SR)))
        first = node._rejected(KEY, KEY)["pacs"]
        store.instance(2)
        store.analyse(classes=(SEG, SR, KeyObjectSelectionDocumentStorage))
        row = next(r for r in store.db.earlier_reports(KEY, KeyObjectSelectionDocumentStorage))
        build_rejection_note(_header(), first, dt.datetime.now().astimezone(), 10102).save_as(
            node.storage_dir / row["path"], enforce_file_format=True)
        assert _uids(node) >= {e["sop_instance_uid"] for e in first}  # the note is only pending
        store.instance(3)
        store.analyse(classes=(SEG, SR))
        states = {i["sop_instance_uid"]: i["state"] for i in store.db.outbox_for(KEY)}
        assert states[row["sop_instance_uid"]] == OUTBOX_SUPERSEDED  # analysis 2's note never left the node
        missing = {e["sop_instance_uid"] for e in first} - _uids(node)
        assert not missing, f"delivered results of analysis 1 never retired: {missing}"
    finally:
        node.db.close()


def test_a_dead_note_retires_nothing_either(tmp_path):
    node = _node(tmp_path)
    try:
        store = Store(node.storage_dir, node.db)
        store.instance(1)
        store.db.mark_sent(store.analyse(classes=(SEG, SR)))
        first = node._rejected(KEY, KEY)["pacs"]
        store.instance(2)
        ids = store.analyse(classes=(SEG, SR, KeyObjectSelectionDocumentStorage))
        row = next(r for r in store.db.earlier_reports(KEY, KeyObjectSelectionDocumentStorage))
        build_rejection_note(_header(), first, dt.datetime.now().astimezone(), 10102).save_as(
            node.storage_dir / row["path"], enforce_file_format=True)
        store.db.mark_sent(ids[:2])
        store.dead(ids[2:])  # the PACS refused the note (0xCxxx): a dead letter
        assert _uids(node) == {e["sop_instance_uid"] for e in first} | set(list(_results(store, 2))[:2])
    finally:
        node.db.close()


def test_each_destination_gets_only_what_it_received(tmp_path):
    """review46 #3: an IOCM archive (dcm4chee-arc) refuses a whole note naming an instance it does not hold. The
    results went to "pacs" and "archive"; "archive" refused the SR (dead letter), and "backup" got nothing:
    "archive"'s list has the SEG only, "backup" has none."""
    node = _node(tmp_path)
    try:
        store = Store(node.storage_dir, node.db)
        store.instance(1)
        store.db.mark_sent(store.analyse(classes=(SEG, SR)))
        seg, sr = _results(store, 1)
        analysis_id = store.db.analyses_of(KEY)[0]["id"]
        with store.db._write() as connection:
            for destination, state in (("archive", "sent"), ("archive", "dead"), ("backup", "superseded")):
                sop = seg if state == "sent" else sr
                connection.execute(text(
                    "INSERT INTO outbox(analysis_id, study_key, destination, ae_title, host, port, sop_instance_uid,"
                    " path, state, attempts, next_attempt_at) VALUES (:a, :k, :d, 'X', 'h', 104, :s, 'p', :st, 1, 0)"),
                    {"a": analysis_id, "k": KEY, "d": destination, "s": sop, "st": state})
        rejected = node._rejected(KEY, KEY)
        assert {d: {e["sop_instance_uid"] for e in entries} for d, entries in rejected.items()} == {
            "pacs": {seg, sr}, "archive": {seg}}
    finally:
        node.db.close()


def test_purged_results_are_listed_only_for_their_own_study_and_their_destinations(tmp_path):
    """review46 #2: a grouping key (AccessionNumber, PatientID+StudyDate) holding several studies; its purged
    results (tombstones) are listed only in a note of their own study, and only to the destinations that received
    them; the SR's Predecessor Documents name only their own study's purged SR."""
    node = _node(tmp_path)
    try:
        store = Store(node.storage_dir, node.db)
        store.instance(1)
        store.db.mark_sent(store.analyse(classes=(SEG, SR)))
        delivered = set(_results(store, 1))
        store.instance(2)
        store.analyse(classes=(SEG, SR))  # superseded by the re-send's analysis below, never delivered
        undelivered = set(_results(store, 2))
        store.instance(3)
        store.db.mark_sent(store.analyse(classes=(SEG, SR)))
        delivered |= set(_results(store, 3))
        store.age()
        assert purge_expired(node.db, node.storage_dir, days=30).studies == [KEY]
        tombstones = {row["sop_instance_uid"]: row for row in node.db.purged_reports(KEY)}
        assert set(tombstones) == delivered | undelivered
        assert {row["study_instance_uid"] for row in tombstones.values()} == {KEY}
        other_study = "1.2.826.0.1.3680043.99.1"  # another study filed under the same key
        assert node._rejected(KEY, other_study) == {}
        assert node._superseded(KEY, other_study) == []
        store.instance(1)  # KEY's own images sent again after the purge
        assert _uids(node) == delivered  # never the ones superseded undelivered
        assert set(node._rejected(KEY, KEY)) == {"pacs"}
        assert len(node._superseded(KEY, KEY)) == 3
    finally:
        node.db.close()


def test_a_tombstone_of_unknown_study_is_listed_only_where_the_key_holds_one_study(tmp_path):
    """Tombstones written before schema 6 record no study and no destination: no note lists them (a note naming
    an instance a destination does not hold is refused whole); the SR's Predecessor Documents name them only where
    the key holds the study alone."""
    node = _node(tmp_path)
    try:
        store = Store(node.storage_dir, node.db)
        store.instance(1)
        store.db.mark_sent(store.analyse(classes=(SEG, SR)))
        store.age()
        assert purge_expired(node.db, node.storage_dir, days=30).studies == [KEY]
        with store.db._write() as connection:
            connection.execute(text("UPDATE purged_reports SET study_instance_uid=NULL, destinations=NULL"))
        store.instance(1)
        assert node._rejected(KEY, KEY) == {}
        assert len(node._superseded(KEY, KEY)) == 1
        store.db.add_instance(InstanceRow("1.2.826.0.1.3680043.99.1.1", KEY, "1.2.826.0.1.3680043.99.1",
                                          "1.2.826.0.1.3680043.99.1.9", MR, "1.2.840.10008.1.2.1", "MR", "spool/x",
                                          8, "SCANNER1", 0.0))
        assert node._superseded(KEY, KEY) == [] and node._superseded(KEY, "1.2.826.0.1.3680043.99.1") == []
    finally:
        node.db.close()
