"""Fuzzing the receive path: random PDUs on raw TCP, random P-DATA inside an association, random dataset bytes
in a C-STORE; the node stays up and answers C-ECHO after every example (bounded: 50 examples each)."""
from __future__ import annotations

import re
import socket
import struct
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.uid import generate_uid
from pynetdicom import AE

from tests.data.bad_inputs import MR, _meta_only
from tests.hardening.hardening_support import MR_IMAGE_STORAGE, echo_status, store_one
from tests.node.nodeproc import NodeProcess
from tests.peers import free_port

FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
                derandomize=True)
SUCCESS_OR_REFUSAL = {0x0000, 0xA700, 0xA900, 0xC000, 0x0110}


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("fuzz")
    # short timeouts: a fuzzed peer that stops talking is dropped after 2 s
    extra_node = "acse_timeout = 2\ndimse_timeout = 2\nnetwork_timeout = 2\n"
    process = NodeProcess(workdir, free_port(), pipelines=(), quiet_seconds=3600)
    process.config_text = process.config_text.replace("min_free_space_mb = 10\n", "min_free_space_mb = 10\n" + extra_node)
    process.config_path.write_text(process.config_text)
    process.start()
    yield process
    assert process.stop() == 0
    # pynetdicom's per-association reactor thread can die on a P-DATA whose command set lacks CommandField
    # (pynetdicom's bug, the association is then dropped); no thread of the node itself may die
    died = re.findall(r"Exception in thread ([^\n]*)", process.log())
    assert all("run_reactor" in thread for thread in died), died


#: a connection that sent half a PDU holds its association slot until the node's timeouts (2 s here) drop it;
#: 50 such examples in a row can fill all max_associations slots for that long, so C-ECHO gets this much grace
RECOVERY_SECONDS = 8.0


def assert_alive(node) -> None:
    assert node.process.poll() is None, f"node died:\n{node.log()[-3000:]}"
    deadline = time.monotonic() + RECOVERY_SECONDS
    while echo_status(node.port, timeout=3) != 0x0000:
        assert node.process.poll() is None, f"node died:\n{node.log()[-3000:]}"
        assert time.monotonic() < deadline, f"no C-ECHO answer within {RECOVERY_SECONDS} s"
        time.sleep(0.2)


@FUZZ
@given(pdu_type=st.sampled_from([0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x00, 0xFF]),
       declared_length=st.one_of(st.integers(0, 64), st.just(0xFFFFFFFF), st.integers(0, 2 ** 32 - 1)),
       body=st.binary(max_size=512))
def test_random_pdus_on_a_fresh_connection(node, pdu_type, declared_length, body):
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as sock:
        try:
            sock.sendall(struct.pack(">BBI", pdu_type, 0, declared_length) + body)
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(3)
            sock.recv(4096)
        except OSError:
            pass
    assert_alive(node)


@FUZZ
@given(payload=st.binary(min_size=1, max_size=1024), context_id=st.integers(0, 255),
       control=st.integers(0, 3))
def test_random_p_data_inside_an_association(node, payload, context_id, control):
    ae = AE(ae_title="SCANNER1")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
    ae.add_requested_context(MR_IMAGE_STORAGE, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", node.port, ae_title="DICOMNODE")
    assert assoc.is_established
    pdv = struct.pack(">IB", len(payload) + 2, context_id) + bytes([control]) + payload
    pdu = struct.pack(">BBI", 0x04, 0, len(pdv)) + pdv
    try:
        assoc.dul.socket.socket.sendall(pdu)
    except OSError:
        pass
    assoc.abort()
    assert_alive(node)


@FUZZ
@given(dataset_bytes=st.binary(max_size=2048))
def test_random_dataset_bytes_in_a_c_store(node, dataset_bytes):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.dcm"
        path.write_bytes(_meta_only(MR, generate_uid()) + dataset_bytes)
        status = store_one(node.port, path, raw=True)
    assert status is not None
    if "Status" in status:
        assert int(status.Status) in SUCCESS_OR_REFUSAL, hex(int(status.Status))
    assert_alive(node)
