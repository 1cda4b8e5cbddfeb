"""A connection must finish its association request within node.acse_timeout (a peer that sends part of one and
then nothing, or nothing at all, holds no association slot for longer), node.max_associations_per_host and
node.allowed_networks / peers_only refuse by address and AE title, a refusal for a full node names the real cause,
/healthz says degraded while every slot is taken, and an instance over node.max_instance_mb is refused with a status
without being held in memory."""
from __future__ import annotations

import logging
import socket
import time

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage, Verification

from dicomnode.net.reactor import HOST_LIMIT_LOG, CappedDataSet
from tests.node.scp_support import scp_maker
from tests.conftest import wait_until
from tests.hardening.hardening_support import synthetic_mr


@pytest.fixture
def make_scp(tmp_path):
    yield from scp_maker(tmp_path, acse_timeout=1.0)


def _associate(port: int, calling: str = "SCANNER1"):
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.add_requested_context(MRImageStorage)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    return ae.associate("127.0.0.1", port, ae_title="DICOMNODE")


def _half_open(port: int, count: int, first_bytes: bytes) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        if first_bytes:
            sock.sendall(first_bytes)
        sockets.append(sock)
    return sockets


def _closed_by_peer(sock: socket.socket) -> bool:
    sock.settimeout(0.05)
    try:
        return sock.recv(1) == b""
    except socket.timeout:
        return False
    except OSError:
        return True


@pytest.mark.parametrize("first_bytes", [b"\x01\x00", b""], ids=["two-bytes-of-a-request", "nothing"])
def test_connections_that_never_finish_an_association_request_are_closed_after_the_acse_timeout(make_scp, caplog,
                                                                                                first_bytes,
                                                                                                monkeypatch):
    caplog.set_level(logging.WARNING, logger="dicomnode")
    monkeypatch.setattr(HOST_LIMIT_LOG, "_last", {})  # said once a minute per address: the other case said it
    scp = make_scp(max_associations=4, acse_timeout=1.0)
    flood = _half_open(scp.port, 4, first_bytes)
    try:
        assert wait_until(lambda: len(scp.associations()) == 4, timeout=5)
        # held unassociated for over half node.acse_timeout: a fault, not load
        assert wait_until(lambda: scp.slots_problem() is not None, timeout=2)
        assert "127.0.0.1: 4 (4 not associated yet)" in scp.slots_problem()
        # a new association closes the one that has gone longest without an association and takes its slot
        let_in = _associate(scp.port, "SCANNER2")
        assert let_in.is_established and let_in.send_c_echo().Status == 0x0000
        let_in.release()
        assert "without an association while every node.max_associations slot (4) was taken: connection closed " \
               "to let a new one in" in caplog.text
        assert "allowed_calling_aes" not in caplog.text  # the real cause, not the AE-title list
        assert wait_until(lambda: all(_closed_by_peer(sock) for sock in flood), timeout=6), \
            "half-open connections were not closed after node.acse_timeout"
        assert wait_until(lambda: not scp.associations(), timeout=5)
        assert scp.slots_problem() is None
        accepted = _associate(scp.port)
        assert accepted.is_established and accepted.send_c_echo().Status == 0x0000
        accepted.release()
    finally:
        for sock in flood:
            sock.close()


def test_associations_per_host_are_capped(make_scp, caplog):
    caplog.set_level(logging.WARNING, logger="dicomnode")
    scp = make_scp(max_associations=8, max_associations_per_host=2, acse_timeout=5.0)
    first, second = _associate(scp.port), _associate(scp.port)
    try:
        assert first.is_established and second.is_established
        third = _associate(scp.port)
        assert not third.is_established
        assert "node.max_associations_per_host 2 reached: 127.0.0.1 holds 2 association(s)" in caplog.text
    finally:
        first.release()
        second.release()
    assert wait_until(lambda: not scp.associations(), timeout=5)
    again = _associate(scp.port)
    assert again.is_established
    again.release()


def test_allowed_networks_and_peers_only_refuse_unlisted_hosts_and_ae_titles(make_scp, caplog):
    caplog.set_level(logging.WARNING, logger="dicomnode")
    outside = make_scp(allowed_networks=["10.20.0.0/16"])
    assoc = _associate(outside.port)
    assert not assoc.is_established
    assert "outside node.allowed_networks ['10.20.0.0/16']" in caplog.text
    outside.stop()

    peers_only = make_scp(peers_only=True, peers=[{"ae_title": "SCANNER1", "networks": ["127.0.0.0/8"]}])
    listed = _associate(peers_only.port, "SCANNER1")
    assert listed.is_established
    listed.release()
    unlisted = _associate(peers_only.port, "ANYBODY")  # allowed_calling_aes ["*"]: refused only by peers_only
    assert not unlisted.is_established
    assert "calling AE 'ANYBODY' called from 127.0.0.1, which has no [[node.peers]] entry" in caplog.text


def test_an_instance_over_max_instance_mb_is_refused_with_a_status_and_not_held(make_scp, caplog):
    caplog.set_level(logging.ERROR, logger="dicomnode")
    scp = make_scp(max_instance_mb=0.05, acse_timeout=5.0)  # 52 kB
    assoc = _associate(scp.port)
    try:
        status = assoc.send_c_store(synthetic_mr(size=256))  # 128 kB of pixels
        assert status.Status == 0xA700, hex(status.Status)
        assert "over node.max_instance_mb 0.05" in str(status.ErrorComment)
        assert "over node.max_instance_mb" in caplog.text
        assert assoc.send_c_store(synthetic_mr(size=64)).Status == 0x0000  # the association goes on
    finally:
        assoc.release()
    assert scp.received == 1


def test_the_capped_data_set_keeps_no_bytes_past_its_limit():
    buffer = CappedDataSet(10)
    buffer.write(b"x" * 8)
    assert not buffer.over and buffer.getvalue() == b"x" * 8
    buffer.write(b"y" * 1000)
    buffer.write(b"z" * 1000)
    assert buffer.over and buffer.received == 2008 and buffer.getvalue() == b""
    unlimited = CappedDataSet(0)
    unlimited.write(b"a" * 100)
    assert not unlimited.over and len(unlimited.getvalue()) == 100


def test_the_event_driven_acceptor_uses_the_configured_acse_timeout(make_scp):
    scp = make_scp(acse_timeout=1.0)
    sock = socket.create_connection(("127.0.0.1", scp.port))
    try:
        started = time.monotonic()
        assert wait_until(lambda: _closed_by_peer(sock), timeout=10)
        assert time.monotonic() - started < 5  # pynetdicom's placeholder ARTIM timer was 30 s
    finally:
        sock.close()


def test_a_pdu_longer_than_an_instance_may_be_closes_the_connection_unread(make_scp, caplog):
    import struct

    caplog.set_level(logging.ERROR, logger="dicomnode")
    scp = make_scp(max_instance_mb=1, acse_timeout=5.0)
    assoc = _associate(scp.port)
    assert assoc.is_established
    sock = assoc.dul.socket.socket
    sock.sendall(struct.pack(">BBL", 0x04, 0, 512 * 1024 * 1024) + b"\0" * 64)  # a P-DATA PDU announcing 512 MB
    assert wait_until(lambda: "a PDU of 512 MB, over node.max_instance_mb (1 MB)" in caplog.text, timeout=5)
    assert wait_until(lambda: not scp.associations(), timeout=10)


def test_a_connection_from_outside_allowed_networks_is_closed_before_tls_or_a_slot(make_scp, caplog, monkeypatch):
    from dicomnode.net import reactor

    caplog.set_level(logging.WARNING, logger="dicomnode")
    monkeypatch.setattr(reactor, "HOST_LIMIT_LOG", reactor.HandshakeFailureLog(
        message="connection from %s refused: %s%s", logger=logging.getLogger("dicomnode.net.scp")))
    scp = make_scp(allowed_networks=["10.20.0.0/16"], max_associations=2, acse_timeout=30.0)
    flood = _half_open(scp.port, 5, b"")  # more than the slots, sending nothing: closed at once, not after 30 s
    try:
        assert wait_until(lambda: all(_closed_by_peer(sock) for sock in flood), timeout=3)
        assert not scp.associations() and scp._server.pending_deadlines() == 0
        lines = [r.getMessage() for r in caplog.records if "outside node.allowed_networks" in r.getMessage()]
        assert lines == ["connection from 127.0.0.1 refused: outside node.allowed_networks ['10.20.0.0/16']: "
                         "connection closed unread"], lines  # rate-limited: one line for five connections
    finally:
        for sock in flood:
            sock.close()


def test_association_deadlines_take_one_thread_and_are_dropped_once_associated(make_scp):
    import threading

    scp = make_scp(max_associations=4, acse_timeout=30.0)
    for _ in range(12):
        assoc = _associate(scp.port)
        assert assoc.is_established
        # dropped at EVT_ACCEPTED (triggered just after the A-ASSOCIATE-AC is sent), not kept for 30 s
        assert wait_until(lambda: scp._server.pending_deadlines() == 0, timeout=5)
        assoc.release()
    timers = [t for t in threading.enumerate() if isinstance(t, threading.Timer)]
    assert timers == []
    idle = _half_open(scp.port, 3, b"")
    try:
        assert wait_until(lambda: scp._server.pending_deadlines() == 3, timeout=3)
        watchdogs = [t for t in threading.enumerate() if t.name == f"dicomnode-acse-deadline-{scp.port}"]
        assert len(watchdogs) == 1
    finally:
        for sock in idle:
            sock.close()


def test_every_slot_in_use_by_associations_is_busy_not_degraded(make_scp):
    scp = make_scp(max_associations=2, acse_timeout=1.0)
    first, second = _associate(scp.port), _associate(scp.port)
    try:
        assert first.is_established and second.is_established
        time.sleep(1.5)  # past HALF_OPEN_AFTER_S and node.acse_timeout: the associations keep their slots
        assert scp.slots_problem() is None
        assert scp.slots_busy().startswith("busy: all 2 association slots in use"), scp.slots_busy()
    finally:
        first.release()
        second.release()
    assert wait_until(lambda: not scp.associations(), timeout=5)
    assert scp.slots_busy() is None


def test_a_wrong_called_ae_title_is_named_as_the_wrong_one(make_scp, caplog):
    """break48a #12: a sender calling another AE title than node.ae_title is told apart from a calling AE title
    that is not allowed."""
    caplog.set_level(logging.WARNING, logger="dicomnode")
    scp = make_scp(allowed_calling_aes=["SCANNER1"])
    ae = AE(ae_title="SCANNER1")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    assert not ae.associate("127.0.0.1", scp.port, ae_title="NOTNODE").is_established
    wait_until(lambda: "association refused" in caplog.text)
    assert ("association refused: called AE 'NOTNODE' is not this node's AE title 'DICOMNODE' (node.ae_title): the "
            "sender (calling AE 'SCANNER1' from 127.0.0.1) must be configured to call 'DICOMNODE'") in caplog.text
    caplog.clear()
    assert not _associate(scp.port, "OTHER").is_established  # the right called AE, a calling AE not allowed
    wait_until(lambda: "association refused" in caplog.text)
    assert "calling AE 'OTHER', called AE 'DICOMNODE' from 127.0.0.1" in caplog.text
    assert "allowed_calling_aes ['SCANNER1']" in caplog.text


def test_connections_closed_by_their_peer_before_any_pdu_free_their_slot_at_once(make_scp):
    """A load balancer's TCP health check (connect, close) or a port scan: the peer's FIN ends the connection in
    PS3.8 Sta2, and its slot is free long before node.acse_timeout (30 s here); an open, silent connection still
    holds its slot."""
    scp = make_scp(max_associations=4, acse_timeout=30.0)
    for _ in range(3):  # bursts of more health checks than there are slots
        for sock in _half_open(scp.port, 8, b""):
            sock.close()
        assert wait_until(lambda: not scp.associations(), timeout=10), \
            [getattr(a, "is_established", None) for a in scp.associations()]
    # (opened after the bursts: a connection that finds every slot taken closes the one that has gone longest
    # without an association, TLSHandshakeInThread._make_room)
    silent = _half_open(scp.port, 1, b"")
    try:
        assert wait_until(lambda: len(scp.associations()) == 1, timeout=5)
        assert wait_until(lambda: scp._server.pending_deadlines() == 1, timeout=10)
        from dicomnode.net.scp import describe_holders
        assert describe_holders(scp.associations()) == "127.0.0.1: 1 (1 not associated yet)"
        assert scp.slots_problem() is None
        echoes = [_associate(scp.port) for _ in range(3)]  # with the silent one: every slot taken, none refused
        try:
            assert all(assoc.is_established for assoc in echoes)
            assert all(assoc.send_c_echo().Status == 0x0000 for assoc in echoes)
        finally:
            for assoc in echoes:
                assoc.release()
        assert not _closed_by_peer(silent[0])  # still open: only node.acse_timeout closes it
    finally:
        for sock in silent:
            sock.close()
    assert wait_until(lambda: not scp.associations(), timeout=10)
