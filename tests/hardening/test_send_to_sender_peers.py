"""send_to_sender returns the results to the peer that sent the analysed MR images, never to a host that merely
sent the study's first object, and to no one when the analysed images came from several peers (break43a #1)."""
from __future__ import annotations

import json
import threading
import time

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import SecondaryCaptureImageStorage

from tests.hardening.hardening_support import StubNodeProcess, synthetic_mr
from tests.peers import free_port


def _store_from(port: int, dataset, calling: str, source: str) -> int:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(str(dataset.SOPClassUID), str(dataset.file_meta.TransferSyntaxUID))
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMNODE", bind_address=(source, 0))
    assert assoc.is_established
    try:
        return assoc.send_c_store(dataset).Status
    finally:
        assoc.release()


def _secondary_capture(study_uid: str):
    ds = synthetic_mr(study_uid=study_uid, size=8)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.Modality = "OT"
    return ds


def test_results_go_back_only_to_the_one_peer_that_sent_the_analysed_images(tmp_path):
    received, lock = [], threading.Lock()

    def on_store(event):
        with lock:
            received.append(event.assoc.requestor.address)
        return 0x0000

    scanner = AE(ae_title="ANY")
    for context in AllStoragePresentationContexts:
        scanner.add_supported_context(context.abstract_syntax)
    sender_port = free_port()
    server = scanner.start_server(("0.0.0.0", sender_port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    port = free_port()
    node = StubNodeProcess(tmp_path, port, quiet_seconds=1, analysis_seconds=0.1, allowed=("SCANNER1", "SCANNER2"))
    node.config_text = node.config_text.replace(
        "destinations = []\n", f"destinations = []\nsend_to_sender = true\nsender_port = {sender_port}\n")
    node.config_path.write_text(node.config_text)
    node.start()
    try:
        preseeded = synthetic_mr().StudyInstanceUID  # a host that knows the study's UID sends one object first
        assert _store_from(port, _secondary_capture(preseeded), "SCANNER2", "127.0.0.2") == 0x0000
        assert _store_from(port, synthetic_mr(study_uid=preseeded), "SCANNER1", "127.0.0.1") == 0x0000
        node.wait_states(states=("done",), count=1, timeout=120)
        sent = node.db_rows("SELECT DISTINCT host, port, ae_title, state FROM outbox WHERE destination='sender'")
        assert sent == [{"host": "127.0.0.1", "port": sender_port, "ae_title": "SCANNER1", "state": "sent"}], sent
        line = f"destination sender (SCANNER1@127.0.0.1:{sender_port}): sent"
        deadline = time.monotonic() + 10  # the dispatcher logs the send just after recording it
        while line not in node.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert line in node.log()

        mixed = synthetic_mr().StudyInstanceUID  # MR images of one study from two peers: sent back to neither
        assert _store_from(port, synthetic_mr(study_uid=mixed), "SCANNER1", "127.0.0.1") == 0x0000
        assert _store_from(port, synthetic_mr(study_uid=mixed, instance=2, position=5.0), "SCANNER2",
                           "127.0.0.2") == 0x0000
        node.wait_states(states=("done",), count=2, timeout=120)
        rows = node.db_rows("SELECT s.summary_json, s.reason FROM studies s WHERE s.study_instance_uid=?", (mixed,))
        summary = json.loads(rows[0]["summary_json"])
        assert rows[0]["reason"].startswith("results not sent back to the sender: the analysed images came from 2 "
                                            "peers (SCANNER1@127.0.0.1, SCANNER2@127.0.0.2)")  # `dicomnode status`
        assert summary["send_to_sender"]["sent"] is False
        assert "SCANNER1@127.0.0.1, SCANNER2@127.0.0.2" in summary["send_to_sender"]["reason"]
        assert node.db_rows("SELECT * FROM outbox o JOIN studies s ON s.study_key=o.study_key "
                            "WHERE s.study_instance_uid=? AND o.destination='sender'", (mixed,)) == []
        assert "results not sent back to the sender (send_to_sender): the analysed images came from 2 peers" \
            in node.log()
        assert set(received) == {"127.0.0.1"}
    finally:
        assert node.stop() == 0
        server.shutdown()
