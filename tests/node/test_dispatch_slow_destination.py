"""A slow destination (break41c finding 2): the per-C-STORE limit is the destination's send_timeout_seconds, and
when one object times out only that object is charged an attempt: the objects queued behind it in the same
association, never transmitted, go back to the queue and are sent on the next association. A result file that
cannot be read fails alone, the batch's other objects are sent (review41b F2)."""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import MRImageStorage

from dicomnode.config import Config, DestinationConfig, DispatchConfig
from dicomnode.dispatch import Dispatcher, transient_dead_letter
from dicomnode.net import scu
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


def test_a_timed_out_c_store_backs_off_the_whole_destination_and_charges_only_that_object(store, slow_peer):
    """break51a #4: the objects behind a timed-out one are not charged an attempt, but come due with it after the
    destination's back-off, not at once on a new association (a destination slower than the timeout stored the
    same object again every 0.5-2 s); an item claimed for it meanwhile waits that back-off too, unattempted."""
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
    seg = rows["results/seg.dcm"]
    assert seg["attempts"] == 1 and seg["last_error"].startswith("no response within 1 s")
    assert seg["next_attempt_at"] > time.time() + 55
    for path in ("results/sr.dcm", "results/pdf.dcm"):  # never transmitted: no attempt, no error, due with the SEG
        assert rows[path]["state"] == "pending" and rows[path]["attempts"] == 0 and not rows[path]["last_error"]
        assert rows[path]["next_attempt_at"] == pytest.approx(seg["next_attempt_at"], abs=0.01)
        assert rows[path]["claimed_by"] is None
    later = mr_file(root / "results", "later")
    queue_results(db, root, "1.10", [("pacs", slow_peer.port, later)])
    assert dispatcher.run_once() == 0  # claimed for the destination during its back-off: given back, not sent
    (row,) = db.outbox_for("1.10")
    assert row["state"] == "pending" and row["attempts"] == 0 and row["claimed_by"] is None
    assert row["next_attempt_at"] == pytest.approx(seg["next_attempt_at"], abs=0.01)
    assert set(slow_peer.received) <= {str(pydicom.dcmread(big).SOPInstanceUID)}  # only the SEG was on the wire


def test_an_object_re_sent_after_a_timeout_is_named_at_warning_and_waited_for_longer(store, caplog):
    """A destination a little slower than its timeout (1.5 s for 1 s): the re-send is named at WARNING with the
    setting to raise, and its association waits twice the timeout, so the object is stored twice, not every round."""
    root, db = store
    peer = SlowPeer(delay=1.5)
    try:
        big, small = mr_file(root / "results", "seg"), mr_file(root / "results", "sr")
        queue_results(db, root, "1.11", [("pacs", peer.port, big), ("pacs", peer.port, small)])
        uid = str(pydicom.dcmread(big).SOPInstanceUID)
        peer.slow.add(uid)
        dispatcher = Dispatcher(db, root, DispatchConfig(max_attempts=3, initial_backoff_seconds=1.5), "DICOMNODE",
                                destinations=lambda: [destination(peer.port, 1.0)])
        assert dispatcher.run_once() == 0
        assert dispatcher.run_once() == 0  # the whole destination backs off: nothing due yet
        time.sleep(1.6)
        with caplog.at_level(logging.WARNING, logger="dicomnode.dispatch"):
            assert dispatcher.run_once() == 2
        (warning,) = [r.getMessage() for r in caplog.records if "re-sending" in r.getMessage()]
        assert "MR series 7 1.11.9.0 after" in warning and "(no response within 1 s)" in warning
        assert "may now hold it twice" in warning and "this association waits up to 2 s" in warning
        assert "destinations[pacs].send_timeout_seconds (now 1 s)" in warning
        assert [row["state"] for row in db.outbox_for("1.11")] == ["sent", "sent"]
        assert peer.received.count(uid) == 2  # stored late the first time, and once more: what the warning says
    finally:
        peer.close()


def test_one_object_a_destination_never_answers_does_not_hold_back_the_others(store):
    """review51 #1: after a timeout the re-send of the timed-out object goes last on the next association, so the
    objects queued behind it are delivered after one back-off, not only once it is a dead letter hours later."""
    root, db = store
    peer = SlowPeer(delay=30.0)
    try:
        hung, first, second = (mr_file(root / "results", name) for name in ("seg", "sr", "pdf"))
        queue_results(db, root, "1.12", [("pacs", peer.port, path) for path in (hung, first, second)])
        peer.slow.add(str(pydicom.dcmread(hung).SOPInstanceUID))
        dispatcher = Dispatcher(db, root, DispatchConfig(max_attempts=5, initial_backoff_seconds=0.5), "DICOMNODE",
                                destinations=lambda: [destination(peer.port, 1.0)])
        assert dispatcher.run_once() == 0  # the SEG times out first; the others wait the destination's back-off
        time.sleep(0.6)
        assert dispatcher.run_once() == 2  # then they go first; the SEG, last, times out again
        rows = {row["path"]: row for row in db.outbox_for("1.12")}
        assert rows["results/sr.dcm"]["state"] == rows["results/pdf.dcm"]["state"] == "sent"
        assert rows["results/seg.dcm"]["state"] == "pending" and rows["results/seg.dcm"]["attempts"] == 2
    finally:
        peer.close()


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


# --- a result file that cannot be read fails alone (review41b F2) ----------------------------------------------


@pytest.fixture
def peer():
    peer = SlowPeer(delay=0)
    yield peer
    peer.close()


def cut_short(path):
    path.write_bytes(path.read_bytes()[:200])  # a crash while it was written, disk trouble
    return path


def test_an_unreadable_result_file_fails_alone_and_the_batch_is_sent(store, peer):
    """Study 1.1's good object and study 1.2's cut-short one in one association: the good one is sent, the cut
    one is a dead letter at once naming the file, which `retry --all` does not re-queue."""
    root, db = store
    good = mr_file(root / "results", "good")
    bad = cut_short(mr_file(root / "results", "bad"))
    later = mr_file(root / "results", "later")
    queue_results(db, root, "1.1", [("pacs", peer.port, good)])
    queue_results(db, root, "1.2", [("pacs", peer.port, bad)])
    queue_results(db, root, "1.3", [("pacs", peer.port, later)])
    dispatcher = Dispatcher(db, root, DispatchConfig(max_attempts=5, initial_backoff_seconds=60), "DICOMNODE",
                            destinations=lambda: [destination(peer.port, 5.0)])
    assert dispatcher.run_once() == 2
    assert len(peer.received) == 2
    assert [row["state"] for study in ("1.1", "1.3") for row in db.outbox_for(study)] == ["sent", "sent"]
    (dead,) = db.outbox_for("1.2")
    assert dead["state"] == "dead" and dead["attempts"] == 1
    assert dead["last_error"].startswith(f"result file {bad} cannot be read: ")
    assert "--reanalyse" in dead["last_error"] and not transient_dead_letter(dead["last_error"])


def test_a_result_file_whose_read_fails_is_retried_alone(store, peer, monkeypatch):
    """An OSError (the storage, not the content) is retried with the back-off, as a missing file is."""
    root, db = store
    good = mr_file(root / "results", "good")
    bad = mr_file(root / "results", "bad")
    queue_results(db, root, "1.4", [("pacs", peer.port, bad), ("pacs", peer.port, good)])
    read = scu.dcmread

    def dcmread(path, *args, **kwargs):
        if Path(path) == bad:
            raise OSError(5, "Input/output error")
        return read(path, *args, **kwargs)

    monkeypatch.setattr(scu, "dcmread", dcmread)
    dispatcher = Dispatcher(db, root, DispatchConfig(max_attempts=5, initial_backoff_seconds=60), "DICOMNODE",
                            destinations=lambda: [destination(peer.port, 5.0)])
    assert dispatcher.run_once() == 1
    rows = {row["path"]: row for row in db.outbox_for("1.4")}
    assert rows["results/good.dcm"]["state"] == "sent"
    failed = rows["results/bad.dcm"]
    assert failed["state"] == "pending" and failed["attempts"] == 1
    assert failed["last_error"].startswith(f"result file {bad} cannot be read: Input/output error")


def test_send_files_reports_unreadable_files_in_their_place(tmp_path, peer):
    paths = [cut_short(mr_file(tmp_path, "a")), mr_file(tmp_path, "b"), tmp_path / "c.dcm", mr_file(tmp_path, "d")]
    paths[2].write_text("not DICOM")
    seen = []
    results = scu.send_files(paths, "PACS", "127.0.0.1", peer.port, on_result=lambda i, r: seen.append((i, r.path)))
    assert [(r.path, r.ok, r.unreadable) for r in results] == [
        (paths[0], False, True), (paths[1], True, False), (paths[2], False, True), (paths[3], True, False)]
    assert seen == [(i, path) for i, path in enumerate(paths)]
    assert all(r.permanent and not r.transmitted and r.error.startswith("cannot be read: ")
               for r in results if r.unreadable)
    assert len(peer.received) == 2


def test_send_files_opens_no_association_when_no_file_can_be_read(tmp_path):
    bad = cut_short(mr_file(tmp_path, "a"))
    (result,) = scu.send_files([bad], "PACS", "127.0.0.1", free_port())  # nobody listens: not AssociationFailed
    assert result.unreadable and not result.ok
