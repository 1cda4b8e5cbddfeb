"""What a failed send says, and what it holds up (opsbreak findings 3-5), against in-process pynetdicom peers:
a hung destination is a timeout (no fake status), an abort and a dropped connection are named, "refused" only with
the peer's failure status and its meaning; a SOP class the destination accepts no presentation context for is a
permanent refusal (dead letter at once, the rest of the batch sent, the reason in `dicomnode status`); a hung
destination holds up neither other destinations nor later studies."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import EncapsulatedPDFStorage, MRImageStorage

from dicomnode.cli import main
from dicomnode.config import DispatchConfig
from dicomnode.dispatch import Dispatcher
from dicomnode.net.scu import send_files
from dicomnode.state import COMPLETE, InstanceRow, StateDB, prepare_storage_dir
from dicomnode.types import ResultObject
from tests.hardening.hardening_support import save, synthetic_mr
from tests.peers import free_port

PDF_TEXT = ("the destination accepts no presentation context for Encapsulated PDF Storage "
            "(1.2.840.10008.5.1.4.1.1.104.1): configure it to accept that SOP class or stop sending it")


class Peer:
    """A storage SCP on loopback: `mode` good | hang (every C-STORE waits until released) | abort | close |
    status (answers `status`); `pdf=False`: it accepts no Encapsulated PDF Storage context."""

    def __init__(self, mode: str = "good", pdf: bool = True, status: int = 0x0000):
        self.mode, self.status = mode, status
        self.received: list[str] = []
        self.release = threading.Event()
        # an in-process node SCP (an earlier test) sets pynetdicom's process-wide UNRESTRICTED_STORAGE_SERVICE, with
        # which this peer would accept any storage class: a PACS that refuses PDF must refuse it
        from pynetdicom import _config
        _config.UNRESTRICTED_STORAGE_SERVICE = False
        ae = AE(ae_title="PACS")
        ae.maximum_associations = 10
        for sop_class in (MRImageStorage, EncapsulatedPDFStorage) if pdf else (MRImageStorage,):
            ae.add_supported_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        self.port = free_port()
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._store)])

    def _store(self, event):
        if self.mode == "hang":
            self.release.wait(60)
            return 0x0000
        if self.mode == "abort":
            event.assoc.abort()
            return 0x0000
        if self.mode == "close":
            event.assoc.dul.socket.socket.close()
            time.sleep(2)
            return 0x0000
        self.received.append(str(event.dataset.SOPInstanceUID))
        return self.status

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()


@pytest.fixture
def peers():
    made: list[Peer] = []

    def make(*args, **kwargs) -> Peer:
        made.append(Peer(*args, **kwargs))
        return made[-1]

    yield make
    for peer in made:
        peer.close()


def mr_file(folder: Path, name: str) -> Path:
    return save(synthetic_mr(), folder / f"{name}.dcm")


def pdf_file(folder: Path, name: str) -> Path:
    """An object of the Encapsulated PDF Storage SOP class (the peer stores what it accepts; content is not checked)."""
    dataset = synthetic_mr()
    dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = EncapsulatedPDFStorage
    return save(dataset, folder / f"{name}.dcm")


# --- send_files: what happened, in words ------------------------------------------------------------------------

def test_a_hung_destination_is_a_timeout_not_a_refusal_with_status_0x0000(tmp_path, peers):
    peer = peers("hang")
    paths = [mr_file(tmp_path, "a"), mr_file(tmp_path, "b")]
    results = send_files(paths, "PACS", "127.0.0.1", peer.port, timeout=1.5)
    first, second = results
    assert not first.ok and first.status is None and not first.permanent
    assert first.error.startswith("no response within 1.5 s: the destination accepted the association but did not "
                                  "answer the C-STORE (hung?)"), first.error
    assert "0x0000" not in first.error and "refused" not in first.error and "status" not in first.error
    assert not second.ok and second.status is None
    assert second.error.startswith("association ended before this instance was sent"), second.error
    assert "no response within 1.5 s" in second.error


@pytest.mark.parametrize("mode, expected", [
    ("abort", "the destination aborted the association (A-ABORT"),
    ("close", "the connection was lost before the destination answered the C-STORE"),
])
def test_an_abort_and_a_lost_connection_are_named_without_a_status(tmp_path, peers, mode, expected):
    peer = peers(mode)
    started = time.monotonic()
    (result,) = send_files([mr_file(tmp_path, "a")], "PACS", "127.0.0.1", peer.port, timeout=20)
    assert time.monotonic() - started < 15  # said when it happened, not after the timeout
    assert not result.ok and result.status is None and not result.permanent
    assert result.error.startswith(expected), result.error
    assert "0x" not in result.error and "refused" not in result.error and "no response within" not in result.error


def test_a_failure_status_is_a_refusal_with_the_status_and_its_meaning(tmp_path, peers):
    peer = peers("status", status=0xA700)
    (result,) = send_files([mr_file(tmp_path, "a")], "PACS", "127.0.0.1", peer.port, timeout=10)
    assert not result.ok and result.status == 0xA700 and not result.permanent
    assert result.error == "refused: status 0xA700 (Refused: Out of Resources)", result.error


def test_a_sop_class_the_destination_does_not_accept_is_a_permanent_refusal_and_the_rest_is_sent(tmp_path, peers):
    peer = peers(pdf=False)
    mr, pdf = mr_file(tmp_path, "mr"), pdf_file(tmp_path, "pdf")
    by_path = {r.path: r for r in send_files([pdf, mr], "PACS", "127.0.0.1", peer.port, timeout=10)}
    assert by_path[mr].ok and len(peer.received) == 1
    assert not by_path[pdf].ok and by_path[pdf].permanent and by_path[pdf].status is None
    assert by_path[pdf].error == PDF_TEXT


def test_a_batch_of_only_unaccepted_sop_classes_is_not_diagnosed_as_a_network_or_tls_problem(tmp_path, peers):
    """The finding's retries: only the PDF left, pynetdicom aborts ("No accepted presentation contexts") and the node
    said "aborted after the TCP connection was accepted (not a DICOM peer on that port, a TLS mismatch …)"."""
    peer = peers(pdf=False)
    (result,) = send_files([pdf_file(tmp_path, "pdf")], "PACS", "127.0.0.1", peer.port, timeout=10)
    assert not result.ok and result.permanent and result.error == PDF_TEXT
    assert "TLS" not in result.error and "TCP" not in result.error


# --- the dispatcher ---------------------------------------------------------------------------------------------

def queue_results(db: StateDB, root: Path, study: str, items: list[tuple[str, int, Path]]) -> None:
    """A finished analysis of `study` whose results (destination name, port, file under root) are queued."""
    db.add_instance(InstanceRow(f"{study}.1", study, study, f"{study}.0", MRImageStorage, ExplicitVRLittleEndian,
                                "MR", f"spool/{study}.dcm", 1, "SCANNER1", time.time()))
    db.set_study_state(study, COMPLETE)
    analysis = db.start_analysis(study, 0)
    written, queued = [], []
    for number, (destination, port, path) in enumerate(items):
        relative = str(path.relative_to(root))
        result = ResultObject(f"{study}.9.{number}", f"{study}.8", MRImageStorage, relative)
        written.append(result)
        queued.append({"destination": destination, "ae_title": "PACS", "host": "127.0.0.1", "port": port,
                       "sop_instance_uid": result.sop_instance_uid, "path": relative})
    db.finish_analysis(analysis, study, 0, {}, written, queued)


@pytest.fixture
def store(tmp_path):
    root = prepare_storage_dir(tmp_path / "store")
    db = StateDB(root / "state.sqlite3", upgrade=True)
    yield root, db
    db.close()


def test_an_unaccepted_sop_class_is_a_dead_letter_at_once_and_status_says_why(tmp_path, peers, store, capsys):
    root, db = store
    peer = peers(pdf=False)
    queue_results(db, root, "1.7", [("nopdf", peer.port, mr_file(root / "results", "mr")),
                                    ("nopdf", peer.port, pdf_file(root / "results", "pdf"))])
    dispatcher = Dispatcher(db, root, DispatchConfig(max_attempts=8, initial_backoff_seconds=0.01), "DICOMNODE")
    assert dispatcher.run_once() == 1
    rows = {row["path"]: row for row in db.outbox_for("1.7")}
    assert rows["results/mr.dcm"]["state"] == "sent" and len(peer.received) == 1
    dead = rows["results/pdf.dcm"]
    assert dead["state"] == "dead" and dead["attempts"] == 1  # not max_attempts (8) tries of a permanent refusal
    assert dead["last_error"].startswith(PDF_TEXT) and "not retried" in dead["last_error"]
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\nstorage_dir = "{root}"\n')
    assert main(["status", "--config", str(config)]) == 0
    assert PDF_TEXT in capsys.readouterr().out


def test_a_hung_destination_holds_up_neither_other_destinations_nor_later_studies(tmp_path, peers, store):
    root, db = store
    hung, good = peers("hang"), peers()
    queue_results(db, root, "1.8", [("hang", hung.port, mr_file(root / "results", "h1")),
                                    ("good", good.port, mr_file(root / "results", "g1"))])
    dispatcher = Dispatcher(db, root, DispatchConfig(max_attempts=3, initial_backoff_seconds=30), "DICOMNODE")
    dispatcher.send_timeout = 20.0
    dispatcher.start()
    try:
        def sent(study: str, path: str) -> bool:
            return any(row["path"] == path and row["state"] == "sent" for row in db.outbox_for(study))

        deadline = time.monotonic() + 10
        while not sent("1.8", "results/g1.dcm"):  # not after the hung destination's 20 s timeout
            assert time.monotonic() < deadline, db.outbox_for("1.8")
            time.sleep(0.05)
        # a later study's result for the good destination, while the hung one still waits for its answer
        queue_results(db, root, "1.9", [("good", good.port, mr_file(root / "results", "g2"))])
        dispatcher.wake()
        deadline = time.monotonic() + 10
        while not sent("1.9", "results/g2.dcm"):
            assert time.monotonic() < deadline, db.outbox_for("1.9")
            time.sleep(0.05)
        (hung_row,) = [row for row in db.outbox_for("1.8") if row["destination"] == "hang"]
        assert hung_row["state"] == "pending" and hung_row["attempts"] == 0  # still in flight
        assert len(good.received) == 2
    finally:
        hung.release.set()
        dispatcher.stop(10)
    (hung_row,) = [row for row in db.outbox_for("1.8") if row["destination"] == "hang"]
    assert hung_row["state"] == "sent"  # released: answered, recorded once
    assert dispatcher.sent == 3


def test_a_hung_destination_times_out_and_is_retried_with_the_back_off(tmp_path, peers, store):
    root, db = store
    hung = peers("hang")
    queue_results(db, root, "1.6", [("hang", hung.port, mr_file(root / "results", "h"))])
    dispatcher = Dispatcher(db, root, DispatchConfig(max_attempts=3, initial_backoff_seconds=60), "DICOMNODE")
    dispatcher.send_timeout = 1.5
    assert dispatcher.run_once() == 0
    (row,) = db.outbox_for("1.6")
    assert row["state"] == "pending" and row["attempts"] == 1 and row["next_attempt_at"] > time.time() + 50
    assert row["last_error"].startswith("no response within 1.5 s: the destination accepted the association but did "
                                        "not answer the C-STORE (hung?)"), row["last_error"]


def test_keyed_lanes_run_one_key_at_a_time_on_a_bounded_number_of_threads():
    from dicomnode.lanes import KeyedLanes

    lock = threading.Lock()
    running: dict[str, int] = {}
    most = {"threads": 0, "per_key": 0}
    done: list[tuple[str, list[int]]] = []
    gate = threading.Event()

    def run(key, items):
        with lock:
            running[key] = running.get(key, 0) + 1
            most["per_key"] = max(most["per_key"], running[key])
            most["threads"] = max(most["threads"], sum(running.values()))
        if key == "hung":
            gate.wait(10)
        time.sleep(0.05)
        with lock:
            running[key] -= 1
            done.append((key, items))

    lanes = KeyedLanes(2, run)
    lanes.submit("hung", [0])
    for number in range(1, 7):
        lanes.submit("a" if number % 2 else "b", [number])
    deadline = time.monotonic() + 10
    while sorted(n for key, items in done if key in "ab" for n in items) != [1, 2, 3, 4, 5, 6]:
        assert time.monotonic() < deadline, done  # "a" and "b" share the one thread "hung" leaves free
        time.sleep(0.01)
    assert lanes.busy("hung") and not lanes.busy("a")
    gate.set()
    assert lanes.wait_idle(10)
    assert most["per_key"] == 1 and most["threads"] <= 2
    assert [items for key, items in done if key == "a"] in ([[1, 3, 5]], [[1], [3, 5]], [[1], [3], [5]], [[1, 3], [5]])
    assert lanes.close() == {} and lanes.submit("a", [7]) is False
