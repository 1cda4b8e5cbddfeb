"""What the node refuses on receive, and how it says so (break50a #3, #4, #7, #8): a Deflated data set counts against
node.max_instance_mb by its inflated size (refused 0xA700 with bounded memory, the received bytes quarantined, and
the analysis's header read bounded too), a data set whose SOP UIDs differ from the C-STORE request's is refused
0xA900 with a log line naming both and a `dicomnode status` entry, services the node does not offer (Modality
Worklist, Storage Commitment) are refused at negotiation with one line, and a PDU over the limit is one line
without a traceback."""
from __future__ import annotations

import json
import logging
import struct
import tracemalloc
import zlib
from io import BytesIO
from pathlib import Path

import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import (MRImageStorage, ModalityWorklistInformationFind, StorageCommitmentPushModel,
                                  Verification)

from dicomnode.cli import main
from dicomnode.cmr.grouping import read_header
from dicomnode.cmr.study import load_studies
from dicomnode.config import Config
from dicomnode.inflate import file_inflates_over, inflates_over
from tests.node.scp_support import scp_maker
from dicomnode.types import Declined
from tests.conftest import wait_until
from tests.hardening.hardening_support import store_one, synthetic_mr
from tests.node.test_association_limits import _associate

MB = 1024 * 1024
#: the zero Pixel Data the test bomb inflates to: well over the 1 MB limit, small enough to deflate in a second
BOMB_PIXEL_BYTES = 256 * MB


def deflate_bomb(path, pixel_bytes: int = BOMB_PIXEL_BYTES):
    """A Deflated Explicit VR Little Endian MR file whose 1x1 image carries `pixel_bytes` zero bytes of Pixel Data
    (deflated about 1000:1), written without ever holding the inflated data set; returns (its data set's header,
    the deflated bytes after the File Meta)."""
    header = synthetic_mr(size=1)
    del header.PixelData
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, header)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    pieces = [deflater.compress(body.getvalue()),
              deflater.compress(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, pixel_bytes))]
    zeros = b"\0" * (16 * MB)
    for start in range(0, pixel_bytes, len(zeros)):
        pieces.append(deflater.compress(zeros[:min(len(zeros), pixel_bytes - start)]))
    pieces.append(deflater.flush())
    deflated = b"".join(pieces)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = header.SOPInstanceUID
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    encoded = DicomBytesIO()
    encoded.is_little_endian, encoded.is_implicit_VR = True, False
    write_file_meta_info(encoded, meta, enforce_standard=True)
    path.write_bytes(b"\0" * 128 + b"DICM" + encoded.getvalue() + deflated)
    return header, deflated


@pytest.fixture
def make_scp(tmp_path):
    """make(**node settings): a started StorageSCP on tmp_path/store."""
    yield from scp_maker(tmp_path)


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    path = tmp_path_factory.mktemp("bomb") / "deflate_bomb.dcm"
    header, deflated = deflate_bomb(path)
    return path, header, deflated


def test_inflates_over_counts_the_inflated_size_with_bounded_memory(bomb):
    path, _, deflated = bomb
    assert len(deflated) < 2 * MB
    tracemalloc.start()
    try:
        over = inflates_over(deflated, 1 * MB)
        whole = inflates_over(deflated, 300 * MB)
        from_file = file_inflates_over(path, 1 * MB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert over is not None and 1 * MB < over <= 2 * MB
    assert whole is None  # at most the limit: nothing to refuse
    assert from_file is not None and from_file > 1 * MB
    assert peak < 16 * MB, peak  # never the 256 MB it inflates to
    assert inflates_over(b"not a deflate stream", 10) is None  # the parser says what is wrong with it


def test_a_deflate_bomb_is_refused_by_its_inflated_size_and_its_bytes_quarantined(make_scp, bomb, caplog):
    path, header, deflated = bomb
    caplog.set_level(logging.WARNING, logger="dicomnode")
    scp = make_scp(max_instance_mb=1, acse_timeout=5.0)
    tracemalloc.start()
    try:
        status = store_one(scp.port, path, raw=True, context=(MRImageStorage, DeflatedExplicitVRLittleEndian))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status.Status == 0xA700, hex(status.Status)
    assert status.ErrorComment == "inflated data set over node.max_instance_mb 1 MB"
    assert peak < 64 * MB, peak  # pynetdicom's event.dataset inflated all 256 MB
    (line,) = [r.getMessage() for r in caplog.records if "inflates to over" in r.getMessage()]
    assert (f"refused (0xA700): its Deflated data set of {len(deflated) / MB:.1f} MB received inflates to over 1 MB, "
            "node.max_instance_mb (inflating stopped at 2 MB); not parsed nor stored") in line, line
    (kept,) = (scp.spool.root / "conflicts").rglob("*.dcm")
    assert kept.read_bytes().endswith(deflated) and f"kept in conflicts/{kept.parent.name}/" in line
    assert scp.received == 0 and not list((scp.spool.root / "spool").rglob("*.dcm"))
    (listed,) = scp.refusals.recent()
    assert listed["study_instance_uid"] == str(header.StudyInstanceUID)
    assert "inflating to over node.max_instance_mb (1 MB" in listed["reason"]
    assert store_one(scp.port, synthetic_mr()).Status == 0  # an instance within the limit is stored as before


def test_the_analysis_declines_a_stored_deflate_bomb_without_inflating_it(bomb, tmp_path):
    path, _, _ = bomb
    tracemalloc.start()
    try:
        declined = read_header(path, max_inflated_bytes=1 * MB)
        unreadable: list[dict] = []
        studies = load_studies([path], unreadable_files=unreadable, max_inflated_bytes=1 * MB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(declined, Declined)
    assert "a Deflated data set inflating to over 1 MB (node.max_instance_mb" in declined.reason
    assert studies == [] and "inflating to over 1 MB" in unreadable[0]["reason"]
    assert peak < 16 * MB, peak
    small = tmp_path / "small.dcm"
    deflate_bomb(small, pixel_bytes=1024)
    assert not isinstance(read_header(small, max_inflated_bytes=1 * MB), Declined)  # within it: read as before


def _mismatched(tmp_path, keyword: str):
    """An MR file whose File Meta (and so the C-STORE request) names another SOP Class / Instance UID than its data
    set; returns (path, the data set's UID, the request's UID)."""
    dataset = synthetic_mr()
    if keyword == "SOPInstanceUID":
        dataset.file_meta.MediaStorageSOPInstanceUID = requested = generate_uid()
    else:
        dataset.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"  # Enhanced MR in the data set, MR Image requested
        requested = str(MRImageStorage)
    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=False)
    path = tmp_path / f"{keyword}.dcm"
    path.write_bytes(buffer.getvalue())
    return path, str(dataset.get(keyword)), requested, str(dataset.StudyInstanceUID)


@pytest.mark.parametrize("keyword, what", [("SOPInstanceUID", "SOP Instance UID"), ("SOPClassUID", "SOP Class UID")])
def test_a_data_set_whose_sop_uid_differs_from_the_request_is_refused_logged_and_listed(make_scp, tmp_path, caplog,
                                                                                        keyword, what):
    caplog.set_level(logging.WARNING, logger="dicomnode")
    scp = make_scp(acse_timeout=5.0)
    path, in_data_set, requested, study = _mismatched(tmp_path, keyword)
    status = store_one(scp.port, path, raw=True, context=(MRImageStorage, ExplicitVRLittleEndian))
    (line,) = [r.getMessage() for r in caplog.records if "differs" in r.getMessage()]
    assert status.Status == 0xA900 and status.ErrorComment == f"{what} in data set differs from request"
    assert line.startswith("C-STORE refused from SCANNER1 at 127.0.0.1: ")
    assert f"{what} {in_data_set} in the data set differs from {requested} in the request (0xA900" in line
    (listed,) = scp.refusals.recent()
    assert listed["study_instance_uid"] == study and listed["calling_ae"] == "SCANNER1"
    assert f"{what} {in_data_set} in the data set differs from {requested}" in listed["reason"]
    assert scp.refusals.last_refused_at is None  # that instance's fault: `status` does not say receiving is refused


def test_services_the_node_does_not_offer_are_refused_at_negotiation_with_one_line(make_scp, caplog):
    caplog.set_level(logging.INFO)
    scp = make_scp(acse_timeout=5.0)
    ae = AE(ae_title="SCANNER1")
    for context in (ModalityWorklistInformationFind, Verification, MRImageStorage):
        ae.add_requested_context(context)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="DICOMNODE")
    try:
        assert assoc.is_established
        assert [str(cx.abstract_syntax) for cx in assoc.rejected_contexts] == [str(ModalityWorklistInformationFind)]
        assert {str(cx.abstract_syntax) for cx in assoc.accepted_contexts} == {str(Verification), str(MRImageStorage)}
        assert assoc.send_c_echo().Status == 0
    finally:
        assoc.release()
    commitment = AE(ae_title="SCANNER1")
    commitment.add_requested_context(StorageCommitmentPushModel)
    refused = commitment.associate("127.0.0.1", scp.port, ae_title="DICOMNODE")
    assert not refused.is_established  # every context refused: pynetdicom's requestor aborts
    assert wait_until(lambda: not scp.associations(), timeout=5)
    lines = [r.getMessage() for r in caplog.records if "offers only Verification" in r.getMessage()]
    assert len(lines) == 2, lines
    assert "Modality Worklist Information Model - FIND (1.2.840.10008.5.1.4.31) refused" in lines[0]
    assert "Storage Commitment Push Model SOP Class (1.2.840.10008.1.20.1) refused" in lines[1]
    assert "no context was accepted" in lines[1] and "no context was accepted" not in lines[0]
    assert "Exception in handler" not in caplog.text


def test_a_query_or_action_on_an_accepted_private_context_is_answered_unrecognized_and_the_association_goes_on(
        make_scp, caplog):
    """A private SOP class is accepted for storage; a C-FIND or N-ACTION sent on it was pynetdicom's ERROR asking for
    register_uid() and an A-ABORT (break50a Left). Now each is answered 0x0211, one WARNING names the first, and
    the association still takes a C-STORE."""
    caplog.set_level(logging.INFO)
    scp = make_scp(acse_timeout=5.0)
    private = "1.2.3.4.5.6"
    ae = AE(ae_title="SCANNER1")
    ae.add_requested_context(private)
    ae.add_requested_context(MRImageStorage)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="DICOMNODE")
    assert assoc.is_established
    try:
        query = Dataset()
        query.PatientName = "*"
        query.QueryRetrieveLevel = "STUDY"
        answers = list(assoc.send_c_find(query, private))
        assert [status.Status for status, _ in answers] == [0x0211]
        action = Dataset()
        action.TransactionUID = "1.2.3.4.7"
        status, _ = assoc.send_n_action(action, 1, private, "1.2.3.4")
        assert status.Status == 0x0211
        assert assoc.is_established
        assert assoc.send_c_store(synthetic_mr()).Status == 0x0000
    finally:
        assoc.release()
    lines = [r.getMessage() for r in caplog.records if "Unrecognized Operation" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "calling AE 'SCANNER1' at 127.0.0.1: C-FIND request (SOP class 1.2.3.4.5.6) answered 0x0211" in lines[0]
    assert "No supported service class" not in caplog.text and "Aborting Association" not in caplog.text


def test_a_pdu_over_the_limit_is_one_line_without_a_traceback(make_scp, caplog):
    caplog.set_level(logging.ERROR)
    scp = make_scp(max_instance_mb=1, acse_timeout=5.0)
    assoc = _associate(scp.port)
    assert assoc.is_established
    assoc.dul.socket.socket.sendall(struct.pack(">BBL", 0x04, 0, 512 * MB) + b"\0" * 64)
    assert wait_until(lambda: not scp.associations(), timeout=10)
    node_side = [r for r in caplog.records if not r.name.startswith("pynetdicom.assoc")
                 and r.threadName != "MainThread"]
    assert [r.getMessage() for r in node_side] == [
        "connection from 127.0.0.1 closed: a PDU of 512 MB, over node.max_instance_mb (1 MB); nothing of it was "
        "read or stored"], [(r.name, r.getMessage()) for r in node_side]
    assert not any(r.exc_info for r in caplog.records if r.name.startswith("pynetdicom.dul"))


def test_process_declines_a_deflate_bomb_with_or_without_its_preamble_by_node_max_instance_mb(tmp_path, capsys):
    """`dicomnode process` reads files it was never sent: the same bound applies to the header read and to the
    Part 10 copy of a data set given without preamble / 'DICM'."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    deflate_bomb(inputs / "bomb.dcm", pixel_bytes=64 * MB)
    deflate_bomb(tmp_path / "whole.dcm", pixel_bytes=64 * MB)
    (inputs / "bare_bomb").write_bytes((tmp_path / "whole.dcm").read_bytes()[132:])  # File Meta, no preamble
    synthetic_mr().save_as(inputs / "mr.dcm", enforce_file_format=True)
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\nstorage_dir = "{tmp_path / "store"}"\nmax_instance_mb = 1\n')
    main(["process", str(inputs), "--out", str(tmp_path / "out"), "--config", str(config)])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    reasons = {Path(item["path"]).name: item["reason"] for item in summary["unreadable_files"]}
    assert sorted(reasons) == ["bare_bomb", "bomb.dcm"], reasons
    assert all(reason.startswith("a Deflated data set inflating to over 1 MB (node.max_instance_mb")
               for reason in reasons.values()), reasons
    assert len(summary["studies"]) == 1  # the other file is analysed as before
    capsys.readouterr()


def test_the_node_analysis_bounds_a_deflated_instance_stored_before_the_bound(tmp_path):
    """An instance stored while node.max_instance_mb allowed it (0: no limit; or by a version that counted only the
    bytes received) is not inflated whole by the analysis once the bound is set: its header read declines it."""
    from dicomnode.node import Node
    from dicomnode.state import COMPLETE, FAILED
    from tests.node.test_failed_analysis import BrokenThenFixedAnalyser

    store = tmp_path / "store"
    config = Config.model_validate({"node": {"port": 0, "storage_dir": str(store), "min_free_space_mb": 0,
                                             "allowed_calling_aes": ["*"], "max_instance_mb": 0},
                                    "studies": {"quiet_seconds": 3600}})
    analyser = BrokenThenFixedAnalyser()
    analyser.fixed = True
    node = Node(config, analyser=analyser)
    node.start(warm_up=False)
    try:
        header, _ = deflate_bomb(tmp_path / "bomb.dcm", pixel_bytes=64 * MB)
        assert store_one(node.scp.port, tmp_path / "bomb.dcm", raw=True,
                         context=(MRImageStorage, DeflatedExplicitVRLittleEndian)).Status == 0  # no limit: stored
        key = str(header.StudyInstanceUID)
        node.scheduler.remove_job(f"quiet:{key}")
        node.completion.forget(key)
        node.db.set_study_state(key, COMPLETE)
        node.config = config.model_copy(update={"node": config.node.model_copy(update={"max_instance_mb": 1})})
        node.analyse_study(key, 0)
        study = node.db.study(key)
        assert study["state"] == FAILED and "a Deflated data set inflating to over 1 MB" in study["reason"], \
            dict(study)
        assert analyser.calls == 0
    finally:
        node.stop()
