"""A slow destination (break41c finding 2): the per-C-STORE limit is the destination's send_timeout_seconds, and
when one object times out only that object is charged an attempt: the objects queued behind it in the same
association, never transmitted, go back to the queue and are sent on the next association."""
from __future__ import annotations

import threading
import time

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import MRImageStorage

from dicomnode.config import Config, DestinationConfig, DispatchConfig
from dicomnode.dispatch import Dispatcher
from tests.hardening.test_send_diagnostics import mr_file, queue_results, store  # noqa: F401 (store: fixture)
from tests.peers import free_port


class SlowPeer:
    """A storage SCP on loopback that takes `delay` seconds to answer the C-STORE of the instances in `slow`."""

    def __init__(self, delay: float):
        from pynetdicom import _config
        _config.UNRESTRICTED_STORAGE_SERVICE = False
        self.delay = delay
        self.slow: set[str] = set()
        self.received: list[str] = []
        self._stop = threading.Event()
        ae = AE(ae_title="PACS")
        ae.add_supported_context(MRImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        self.port = free_port()
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._store)])

    def _store(self, event):
        uid = str(event.request.AffectedSOPInstanceUID)
        if uid in self.slow:
            self._stop.wait(self.delay)
        self.received.append(uid)
        return 0x0000

    def close(self):
        self._stop.set()
        self.server.shutdown()


@pytest.fixture
def slow_peer():
    peer = SlowPeer(delay=4.0)
    yield peer
    peer.close()


def destination(port: int, timeout: float) -> DestinationConfig:
    return DestinationConfig(name="pacs", ae_title="PACS", host="127.0.0.1", port=port, send_timeout_seconds=timeout)


def test_send_timeout_seconds_is_a_destination_setting_with_the_30_s_default():
    config = Config.model_validate({"destinations": [{"name": "pacs", "ae_title": "PACS", "host": "h", "port": 104}]})
    assert config.destinations[0].send_timeout_seconds == 30.0
    with pytest.raises(ValueError, match="send_timeout_seconds"):
        Config.model_validate({"destinations": [{"name": "pacs", "ae_title": "PACS", "host": "h", "port": 104,
                                                 "send_timeout_seconds": 0}]})


def test_objects_behind_a_timed_out_one_are_not_charged_and_go_out_on_the_next_association(store, slow_peer):
    root, db = store
    big, small1, small2 = (mr_file(root / "results", name) for name in ("seg", "sr", "pdf"))
    queue_results(db, root, "1.8", [("pacs", slow_peer.port, path) for path in (big, small1, small2)])
    slow_peer.slow.add(str(pydicom.dcmread(big).SOPInstanceUID))
    dispatcher = Dispatcher(db, root, DispatchConfig(max_attempts=3, initial_backoff_seconds=60), "DICOMNODE",
                            destinations=lambda: [destination(slow_peer.port, 1.0)])
    started = time.monotonic()
    assert dispatcher.run_once() == 0
    assert time.monotonic() - started < 3.5  # the destination's 1 s, not the 30 s default
    rows = {row["path"]: row for row in db.outbox_for("1.8")}
    assert rows["results/seg.dcm"]["attempts"] == 1
    assert rows["results/seg.dcm"]["last_error"].startswith("no response within 1 s")
    for path in ("results/sr.dcm", "results/pdf.dcm"):  # never transmitted: no attempt, no error, due now
        assert rows[path]["state"] == "pending" and rows[path]["attempts"] == 0 and not rows[path]["last_error"]
        assert rows[path]["next_attempt_at"] <= time.time()
    assert dispatcher.run_once() == 2  # the next association: the two small objects, the SEG in its back-off
    rows = {row["path"]: row for row in db.outbox_for("1.8")}
    assert rows["results/sr.dcm"]["state"] == rows["results/pdf.dcm"]["state"] == "sent"
    assert rows["results/seg.dcm"]["state"] == "pending" and rows["results/seg.dcm"]["attempts"] == 1


def test_a_longer_send_timeout_lets_a_slow_object_through(store, slow_peer):
    root, db = store
    big = mr_file(root / "results", "seg")
    queue_results(db, root, "1.9", [("pacs", slow_peer.port, big)])
    slow_peer.slow.add(str(pydicom.dcmread(big).SOPInstanceUID))
    dispatcher = Dispatcher(db, root, DispatchConfig(max_attempts=3, initial_backoff_seconds=60), "DICOMNODE",
                            destinations=lambda: [destination(slow_peer.port, 10.0)])
    assert dispatcher.run_once() == 1
    (row,) = db.outbox_for("1.9")
    assert row["state"] == "sent" and row["attempts"] == 0
