"""The node with real peers: DCMTK storescu/echoscu as the scanner, Orthanc as the PACS, kill -9 and outages."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage

from tests.conftest import require_peer
from tests.node.nodeproc import ENV, NodeProcess, storescu
from tests.peers import OrthancServer, free_port, require_private_netns

pytestmark = [pytest.mark.peers, pytest.mark.slow]

SEG = "1.2.840.10008.5.1.4.1.1.66.4"
SR = "1.2.840.10008.5.1.4.1.1.88.34"


@pytest.fixture(scope="module")
def isolated():
    require_peer("storescu")
    require_peer("echoscu")
    require_private_netns()


@pytest.fixture
def sunnybrook(datasets) -> list[Path]:
    """A real multi-series study: Sunnybrook SCD0000301 cine SAX (200 images) + its 3-plane localizer (15)."""
    files = sorted((datasets / "sunnybrook-scd" / "dicoms" / "SCD0000301").glob("*.dcm"))
    files += sorted((datasets / "sunnybrook-scd-localizers" / "dicoms" / "SCD0000301").glob("*.dcm"))
    assert len(files) == 215
    return files


def study_uid_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)


def result_classes(instances: list[dict], orthanc: OrthancServer) -> list[str]:
    classes = []
    for instance in instances:
        tags = orthanc.get_json(f"/instances/{instance['ID']}/simplified-tags")
        classes.append(tags.get("SOPClassUID"))
    return classes


def send_dataset(port: int, dataset, calling="SCANNER1"):
    ae = AE(ae_title=calling)
    ae.add_requested_context(MRImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMNODE")
    assert assoc.is_established
    try:
        return assoc.send_c_store(dataset)
    finally:
        assoc.release()


def test_echo_and_association_policy(isolated, tmp_path):
    port = free_port()
    node = NodeProcess(tmp_path, port, pipelines=()).start()
    try:
        ok = subprocess.run([require_peer("echoscu"), "-aet", "SCANNER1", "-aec", "DICOMNODE", "127.0.0.1", str(port)],
                            env=ENV, capture_output=True, text=True)
        assert ok.returncode == 0, ok.stderr
        unknown = subprocess.run([require_peer("echoscu"), "-aet", "INTRUDER", "-aec", "DICOMNODE", "127.0.0.1", str(port)],
                                 env=ENV, capture_output=True, text=True)
        assert unknown.returncode != 0
        assert "Calling AE Title Not Recognized" in unknown.stderr + unknown.stdout
        wrong_called = subprocess.run([require_peer("echoscu"), "-aet", "SCANNER1", "-aec", "SOMEONE", "127.0.0.1", str(port)],
                                      env=ENV, capture_output=True, text=True)
        assert wrong_called.returncode != 0
        assert "Called AE Title Not Recognized" in wrong_called.stderr + wrong_called.stdout
        assert "association refused" in node.log()
    finally:
        assert node.stop() == 0


def test_bad_uid_and_duplicate_and_mismatch(isolated, tmp_path, sunnybrook):
    port = free_port()
    node = NodeProcess(tmp_path, port, pipelines=(), quiet_seconds=3600).start()
    try:
        good = pydicom.dcmread(sunnybrook[0])
        bad = pydicom.dcmread(sunnybrook[1])
        bad.SOPInstanceUID = "1.2.3/../../etc"
        status = send_dataset(port, bad)
        assert status.Status == 0xC000
        assert "not digits and dots" in str(status.get("ErrorComment", ""))
        assert send_dataset(port, good).Status == 0x0000
        assert send_dataset(port, good).Status == 0x0000  # re-sent: acknowledged, stored once
        rows = node.db_rows("SELECT * FROM instances")
        assert len(rows) == 1 and rows[0]["sop_instance_uid"] == good.SOPInstanceUID
        assert not list((tmp_path / "store").rglob("*etc*"))
        # the node keeps serving after refusals
        result = storescu(port, sunnybrook[2:4])
        assert result.returncode == 0, result.stderr
        assert len(node.db_rows("SELECT * FROM instances")) == 3
    finally:
        assert node.stop() == 0


def test_garbage_dataset_bytes_get_a_clear_status_and_node_keeps_serving(isolated, tmp_path, sunnybrook):
    port = free_port()
    node = NodeProcess(tmp_path, port, pipelines=(), quiet_seconds=3600).start()
    try:
        garbage = tmp_path / "garbage.dcm"
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.preamble = b"\0" * 128
        ds.save_as(garbage, enforce_file_format=True)
        with open(garbage, "ab") as handle:  # a dataset of bytes that are no DICOM elements at all
            handle.write(b"\xff\xfe\x00\x01 this is not a DICOM data set, just a byte stream \x00\x13" * 5)
        from pynetdicom import _config

        ae = AE(ae_title="SCANNER1")
        ae.add_requested_context(MRImageStorage, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", port, ae_title="DICOMNODE")
        _config.STORE_SEND_CHUNKED_DATASET = True  # send the file's bytes as they are, undecoded
        try:
            status = assoc.send_c_store(garbage)
        finally:
            _config.STORE_SEND_CHUNKED_DATASET = False
            assoc.release()
        assert status.Status == 0xC000, hex(status.Status)
        comment = str(status.get("ErrorComment", ""))
        assert "Study Instance UID is missing" in comment or "cannot decode" in comment, comment
        assert not node.db_rows("SELECT * FROM instances")
        result = storescu(port, sunnybrook[:2])
        assert result.returncode == 0
        assert len(node.db_rows("SELECT * FROM instances")) == 2
    finally:
        node.stop()


def test_storescu_study_to_orthanc_then_kill9_and_outage(isolated, tmp_path, sunnybrook):
    """Sunnybrook cine + localizer sent by storescu; the node is killed -9 mid-receive and mid-analysis; the
    PACS is down while results are due. Every acknowledged instance is analysed; results reach Orthanc once."""
    require_peer("orthanc")
    node_port = free_port()
    with OrthancServer(tmp_path, aet="ORTHANC", modalities={"DICOMNODE": ("127.0.0.1", node_port)}) as orthanc:
        node = NodeProcess(tmp_path / "node", node_port, destinations={"ORTHANC": ("127.0.0.1", orthanc.dicom_port)},
                           quiet_seconds=3, pipelines=("cine",)).start()
        try:
            _receive_crash_and_deliver(node, node_port, orthanc, sunnybrook)
        finally:
            node.kill9()


def _receive_crash_and_deliver(node, node_port, orthanc, sunnybrook):
    """Half received, kill -9, PACS down, rest received, kill -9 mid-analysis, PACS back: delivered once."""
    study_uid = study_uid_of(sunnybrook[0])
    # receive half, kill -9, restart, receive the rest (storescu re-sends what it had not finished)
    first = storescu(node_port, sunnybrook[:100])
    assert first.returncode == 0, first.stderr
    acknowledged = len(node.db_rows("SELECT * FROM instances"))
    assert acknowledged == 100
    node.kill9()
    orthanc.stop()  # the PACS goes down before results are due
    node.start()
    assert len(node.db_rows("SELECT * FROM instances")) == 100
    rest = storescu(node_port, sunnybrook[100:])
    assert rest.returncode == 0, rest.stderr
    # kill -9 during analysis
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(s["state"] == "analysing" for s in node.studies()):
        time.sleep(0.05)
    node.kill9()
    node.start()
    studies = node.wait_states(states=("sending", "done", "failed"), timeout=300)
    assert len(node.db_rows("SELECT * FROM instances")) == 215
    # sends fail while Orthanc is down and are retried with back-off
    time.sleep(2)
    pending = node.db_rows("SELECT * FROM outbox WHERE state='pending'")
    assert pending and max(row["attempts"] for row in pending) >= 1
    orthanc.start()
    node.wait_states(states=("done",), timeout=120)
    summary = node.summary(study_uid)
    results = [i for i in orthanc.study_instances(study_uid)]
    outputs = summary["outputs"]
    assert len(results) == len(outputs) >= 2
    classes = result_classes(results, orthanc)
    # cine: one SEG at ED, one at ES (OHIF shows each), and one of the RV's own ED / ES where RV EDV / ESV were read at
    # another phase than the LV's (f49b)
    cine = summary["cine"]
    own_rv = {cine["timing"]["rv_ed_phase"], cine["timing"]["rv_es_phase"]} - {cine["ed_phase"], cine["es_phase"]}
    assert classes.count(SR) == 1 and classes.count(SEG) == 2 + len(own_rv)
    sop_uids = [r["SOPInstanceUID"] for r in results]
    assert len(set(sop_uids)) == len(sop_uids)
    # the analysis that was cut short left nothing behind; exactly one finished analysis was delivered
    analyses = node.db_rows("SELECT state FROM analyses")
    assert [a["state"] for a in analyses].count("done") == 1
    series = {s["sequence"]: s for s in summary["series"]}
    assert series["cine"]["slices"] == 10 and series["cine"]["phases"] == 20
    assert series["localizer"]["view"] == "other"
    assert 10 < summary["cine"]["lv_edv_ml"] < 400
    assert studies[0]["study_instance_uid"] == study_uid
    assert node.stop() == 0


def test_echo_says_which_destinations_answer_and_why_the_others_do_not(isolated, tmp_path, capsys):
    """`dicomnode echo`: Orthanc as the PACS answers; a port nobody listens on is named as refused; exit 1 then."""
    from dicomnode.cli import main

    require_peer("orthanc")
    down = free_port()
    with OrthancServer(tmp_path, aet="ORTHANC") as orthanc:
        config = tmp_path / "node.toml"
        config.write_text(f'[node]\nstorage_dir = "{tmp_path / "store"}"\n'
                          f'[[destinations]]\nname = "pacs"\nae_title = "ORTHANC"\nhost = "127.0.0.1"\n'
                          f'port = {orthanc.dicom_port}\n'
                          f'[[destinations]]\nname = "archive"\nae_title = "ARCHIVE"\nhost = "127.0.0.1"\nport = {down}\n')
        assert main(["echo", "--config", str(config), "--to", "pacs"]) == 0
        out = capsys.readouterr().out
        assert f"pacs (ORTHANC@127.0.0.1:{orthanc.dicom_port}): C-ECHO OK" in out
        assert main(["echo", "--config", str(config), "--timeout", "5"]) == 1  # every destination
        captured = capsys.readouterr()
        assert "pacs (ORTHANC" in captured.out and "C-ECHO OK" in captured.out
        assert f"archive (ARCHIVE@127.0.0.1:{down}): FAILED: association with ARCHIVE@127.0.0.1:{down} failed: " \
               f"cannot connect: Connection refused" in captured.err
        assert main(["echo", "--config", str(config), "--to", "nowhere"]) == 2
        assert "nowhere" in capsys.readouterr().err
