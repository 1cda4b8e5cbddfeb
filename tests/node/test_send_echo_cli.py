"""`dicomnode send`, `echo` and `status` as a new user meets them: a host name that does not resolve, truncated
files, pynetdicom's own log lines, a reader that closes the pipe; against a real pynetdicom peer on loopback."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, RLELossless
from pynetdicom import AE, evt
from pynetdicom.sop_class import BasicTextSRStorage, MRImageStorage, Verification

from dicomnode.cli import main
from dicomnode.config import DispatchConfig
from dicomnode.dispatch import Dispatcher
from dicomnode.state import COMPLETE, InstanceRow, StateDB, prepare_storage_dir
from dicomnode.types import ResultObject
from tests.hardening.hardening_support import save, synthetic_mr
from tests.node.nodeproc import ENV, REPO
from tests.peers import free_port

UNRESOLVABLE = "pacs.invalid"  # RFC 6761: never resolves


@pytest.fixture
def pacs():
    """A storage + verification SCP on loopback; `.received` maps SOP Instance UID to its Pixel Data length."""
    ae = AE(ae_title="PACS")
    ae.add_supported_context(Verification)
    for sop_class in (MRImageStorage, BasicTextSRStorage):
        ae.add_supported_context(sop_class, [RLELossless, ExplicitVRLittleEndian])
    received: dict[str, int | None] = {}

    def on_store(event):
        dataset = event.dataset
        received[dataset.SOPInstanceUID] = len(dataset.PixelData) if "PixelData" in dataset else None
        return 0x0000

    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    server.port, server.received = port, received
    try:
        yield server
    finally:
        server.shutdown()


def _config(tmp_path: Path, *destinations: tuple[str, str, int]) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(f'[node]\nstorage_dir = "{tmp_path / "store"}"\n' + "".join(
        f'[[destinations]]\nname = "{name}"\nae_title = "PACS"\nhost = "{host}"\nport = {port}\n'
        for name, host, port in destinations))
    return path


def _cli(*args: str, stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dicomnode", *args], cwd=REPO, env=ENV, stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=120)


# --- a host name that does not resolve ---------------------------------------------------------------------------

def test_echo_names_a_host_that_does_not_resolve_and_echoes_the_rest(tmp_path, capsys, pacs):
    config = _config(tmp_path, ("pacs", UNRESOLVABLE, 104), ("b", "127.0.0.1", pacs.port))
    assert main(["echo", "--config", str(config), "--timeout", "5"]) == 1
    captured = capsys.readouterr()
    assert (f"pacs (PACS@{UNRESOLVABLE}:104): FAILED: association with PACS@{UNRESOLVABLE}:104 failed: "
            f"host {UNRESOLVABLE} does not resolve") in captured.err
    assert f"b (PACS@127.0.0.1:{pacs.port}): C-ECHO OK" in captured.out
    assert "Traceback" not in captured.err


def test_send_to_a_host_that_does_not_resolve_is_one_line_and_exit_1(tmp_path, capsys):
    path = save(synthetic_mr(), tmp_path / "one.dcm")
    config = _config(tmp_path, ("pacs", UNRESOLVABLE, 104))
    assert main(["send", str(path), "--to", "pacs", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"association with PACS@{UNRESOLVABLE}:104 failed: host {UNRESOLVABLE} does not resolve (")
    assert len(err.strip().splitlines()) == 1


def test_the_dispatcher_retries_a_host_that_does_not_resolve_then_dead_letters_it(tmp_path):
    db = StateDB(tmp_path / "state.sqlite3")
    db.add_instance(InstanceRow("1.5.1", "1.5", "1.5", "1.5.0", MRImageStorage, ExplicitVRLittleEndian, "MR",
                                "spool/x.dcm", 1, "SCANNER1", time.time()))
    db.set_study_state("1.5", COMPLETE)
    analysis = db.start_analysis("1.5", 0)
    save(synthetic_mr(), tmp_path / "results" / "1.5.9.dcm")
    written = ResultObject("1.5.9", "1.5.8", MRImageStorage, "results/1.5.9.dcm")
    item = {"destination": "pacs", "ae_title": "PACS", "host": UNRESOLVABLE, "port": 104,
            "sop_instance_uid": written.sop_instance_uid, "path": written.path}
    db.finish_analysis(analysis, "1.5", 0, {}, [written], [item])
    dispatcher = Dispatcher(db, tmp_path, DispatchConfig(max_attempts=2, initial_backoff_seconds=0.01,
                                                         max_backoff_seconds=0.01), "DICOMNODE")
    assert dispatcher.run_once() == 0
    (row,) = db.outbox_for("1.5")
    assert row["state"] == "pending" and row["attempts"] == 1  # retryable: DNS may come back
    assert f"host {UNRESOLVABLE} does not resolve" in row["last_error"]
    time.sleep(0.02)
    dispatcher.run_once()
    (row,) = db.outbox_for("1.5")
    assert row["state"] == "dead" and row["attempts"] == 2
    db.close()


# --- truncated files ---------------------------------------------------------------------------------------------

def _rle(dataset):
    dataset.compress(RLELossless, encoding_plugin="pydicom")
    return dataset


def _short_native(dataset):
    dataset.PixelData = dataset.PixelData[:1000]  # a whole file whose Pixel Data is shorter than Rows x Columns
    return dataset


def _bad_fragment_length(dataset):
    _rle(dataset)
    fragment = bytes(dataset.PixelData[16:])  # after the empty Basic Offset Table item and the fragment item header
    dataset.PixelData = encapsulate([fragment])[:-10]  # the item says longer than the data it holds
    return dataset


@pytest.mark.parametrize("name, make, cut, reason", [
    ("head3000", None, 3000, "the file ends inside PixelData ("),
    ("in_header", None, "in_patient_name", "the file ends inside PatientName (4 of 14 bytes)"),
    ("header_only", None, "before_pixels", "no Pixel Data, which MR Image Storage needs (file cut short?)"),
    ("short_native", _short_native, None, "PixelData is shorter than its Image Pixel module says (1000 of 8192 bytes)"),
    ("rle_cut", _rle, -40, "its data set is missing or cut short"),
    ("rle_bad_item", _bad_fragment_length, None, "encapsulated Pixel Data ends inside its last fragment"),
])
def test_send_skips_and_names_a_truncated_file_and_sends_the_whole_ones(tmp_path, capsys, pacs, name, make, cut,
                                                                         reason):
    good = synthetic_mr(size=64)
    bad_source = synthetic_mr(size=64)
    if make is not None:
        bad_source = make(bad_source)
    folder = tmp_path / "in"
    save(good, folder / "good.dcm")
    report = synthetic_mr()  # an object without pixel data is whole without them
    report.SOPClassUID = report.file_meta.MediaStorageSOPClassUID = BasicTextSRStorage
    for keyword in ("Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated", "BitsStored",
                    "HighBit", "PixelRepresentation", "PixelData"):
        delattr(report, keyword)
    save(report, folder / "report.dcm")
    bad = save(bad_source, tmp_path / "whole_bad.dcm")
    data = bad.read_bytes()
    if cut == "in_patient_name":
        data = data[:data.index(b"HARDENING") + 4]
    elif cut == "before_pixels":
        data = data[:data.index(b"\xe0\x7f\x10\x00")]  # (7FE0,0010) little endian: an element boundary
    elif cut is not None:
        data = data[:cut]
    (folder / f"{name}.dcm").write_bytes(data)
    config = _config(tmp_path, ("pacs", "127.0.0.1", pacs.port))
    assert main(["send", str(folder), "--to", "pacs", "--config", str(config)]) == 1
    captured = capsys.readouterr()
    assert f"skipped {folder / f'{name}.dcm'}: {reason}" in captured.err
    assert "sent 2 of 2 to pacs (1 file(s) skipped)" in captured.out
    assert pacs.received == {good.SOPInstanceUID: 64 * 64 * 2, report.SOPInstanceUID: None}


def test_send_of_whole_compressed_files_skips_nothing(tmp_path, capsys, pacs):
    dataset = _rle(synthetic_mr())
    path = save(dataset, tmp_path / "rle.dcm")
    config = _config(tmp_path, ("pacs", "127.0.0.1", pacs.port))
    assert main(["send", str(path), "--to", "pacs", "--config", str(config)]) == 0
    assert "sent 1 of 1" in capsys.readouterr().out and list(pacs.received) == [dataset.SOPInstanceUID]


# --- what the user sees on the terminal --------------------------------------------------------------------------

def test_echo_and_send_print_their_own_lines_without_pynetdicom_log_lines(tmp_path):
    closed = free_port()
    config = _config(tmp_path, ("pacs", "127.0.0.1", closed))
    done = _cli("echo", "--config", str(config), "--timeout", "3")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"pacs (PACS@127.0.0.1:{closed}): FAILED: association with "
                                        f"PACS@127.0.0.1:{closed} failed: cannot connect: Connection refused"]
    path = save(synthetic_mr(), tmp_path / "one.dcm")
    done = _cli("send", str(path), "--to", "pacs", "--config", str(config))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"association with PACS@127.0.0.1:{closed} failed: cannot connect: "
                                        f"Connection refused"]


def test_status_into_a_pipe_the_reader_closed_ends_quietly(tmp_path):
    store = tmp_path / "store"
    prepare_storage_dir(store)
    db = StateDB(store / "state.sqlite3", upgrade=True)
    for n in range(3):
        study = f"1.2.826.0.1.3680043.8.498.{n + 1}"
        db.add_instance(InstanceRow(f"{study}.1", study, study, f"{study}.0", MRImageStorage, ExplicitVRLittleEndian,
                                    "MR", f"spool/{n}.dcm", 1, "SCANNER1", 0.0))
    db.close()
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\nstorage_dir = "{store}"\n')
    for extra in (["--json"], []):
        read_end, write_end = os.pipe()
        os.close(read_end)  # `| head -n 1` that has already gone
        try:
            done = _cli("status", "--config", str(config), *extra, stdout=write_end)
        finally:
            os.close(write_end)
        assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
        assert done.returncode == 1
