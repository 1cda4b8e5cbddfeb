"""A peer that stalls mid-PDU, or goes silent, holds no association slot past node.network_timeout and does not hold
up a stop; the node's own closes are logged as the node's; one host's silent connections cannot take every slot,
and `status` says who holds them (break50a #1, #2, #5, #6)."""
from __future__ import annotations

import logging
import socket
import struct
import time

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from dicomnode.config import Config, config_warnings
from tests.node.scp_support import scp_maker
from tests.conftest import wait_until


@pytest.fixture
def make_scp(tmp_path):
    yield from scp_maker(tmp_path, stop_timeout=1.0)


def _associate(port: int):
    ae = AE(ae_title="SCANNER1")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMNODE")
    assert assoc.is_established
    return assoc


def _stall_mid_pdu(assoc, declared: int = 100_000) -> socket.socket:
    """Send the header of a P-DATA-TF PDU declaring `declared` bytes and 10 of them, then nothing."""
    raw = assoc.dul.socket.socket
    raw.sendall(struct.pack(">BBI", 4, 0, declared) + b"\0" * 10)
    return raw


def _closed_by_node(raw: socket.socket) -> bool:
    try:
        raw.settimeout(0.05)
        while True:
            if not raw.recv(4096):
                return True
    except (socket.timeout, BlockingIOError):
        return False
    except OSError:
        return True


def test_a_peer_stalled_mid_pdu_is_closed_after_the_network_timeout_and_its_slot_freed(make_scp, caplog):
    caplog.set_level(logging.INFO, logger="dicomnode")
    scp = make_scp(max_associations=2, network_timeout=1.0, acse_timeout=5.0)
    stalled = [_associate(scp.port), _associate(scp.port)]
    # the second declares 1 GB (under node.max_instance_mb): its length must not buy it time
    raws = [_stall_mid_pdu(stalled[0]), _stall_mid_pdu(stalled[1], 1_000_000_000)]
    try:
        assert wait_until(lambda: all(_closed_by_node(raw) for raw in raws), timeout=6), \
            "a peer stalled mid-PDU kept its connection past node.network_timeout"
        assert wait_until(lambda: not scp.associations(), timeout=3)
        assert "closed: PDU body not received within node.network_timeout (1 s): 10 of 100000 byte(s)" in caplog.text
        assert "closed by this node: PDU body not received within node.network_timeout (1 s)" in caplog.text
        assert "A-ABORT or connection lost" not in caplog.text
        assert "not associated yet" not in caplog.text
        again = _associate(scp.port)
        assert again.send_c_echo().Status == 0x0000
        again.release()
    finally:
        for assoc in stalled:
            assoc.abort()


def test_a_peer_trickling_its_pdu_is_closed_once_it_falls_under_the_rate_floor(make_scp, caplog):
    """A byte every 0.3 s never stalls for the whole network_timeout (1 s), but at ~3 bytes/s a 100 kB PDU would hold
    the slot for 9 h: once the PDU has taken node.network_timeout, under MIN_PDU_BYTES_PER_SECOND it is closed
    (break50a Left: a trickling peer kept its slot)."""
    from dicomnode.net.reactor import MIN_PDU_BYTES_PER_SECOND

    caplog.set_level(logging.INFO, logger="dicomnode")
    scp = make_scp(max_associations=1, network_timeout=1.0, acse_timeout=5.0)
    assoc = _associate(scp.port)
    raw = _stall_mid_pdu(assoc)
    started = time.monotonic()
    try:
        closed = False
        while time.monotonic() - started < 8 and not closed:
            try:
                raw.sendall(b"\0")
            except OSError:
                closed = True
                break
            time.sleep(0.3)
            closed = _closed_by_node(raw)
        assert closed, "a peer trickling a byte every 0.3 s kept its slot for 8 s"
        assert time.monotonic() - started < 4
        assert wait_until(lambda: not scp.associations(), timeout=3)
        assert f"byte(s)/s, under {MIN_PDU_BYTES_PER_SECOND} byte(s)/s after node.network_timeout (1 s)" in caplog.text
        assert "the peer trickles its PDU too slowly for any real link, its association slot is freed" in caplog.text
        again = _associate(scp.port)
        assert again.send_c_echo().Status == 0x0000
        again.release()
    finally:
        assoc.abort()


def test_a_pdu_arriving_slowly_but_above_the_floor_is_received(make_scp):
    """A C-ECHO's P-DATA PDU sent in 4-byte pieces over ~2 s, longer than network_timeout (1 s), is read whole while
    it arrives above the floor (lowered here to 10 bytes/s: the test sends ~40): only a PDU under the floor is cut."""
    from dicomnode.net import reactor

    scp = make_scp(max_associations=1, network_timeout=1.0, acse_timeout=5.0)
    assoc = _associate(scp.port)
    try:
        original = reactor.MIN_PDU_BYTES_PER_SECOND
        reactor.MIN_PDU_BYTES_PER_SECOND = 10
        raw = assoc.dul.socket.socket
        sent = []

        def slow_send(bytestream):  # the requestor's AssociationSocket.send, in 4-byte pieces
            sent.append(len(bytestream))
            for start in range(0, len(bytestream), 4):
                raw.sendall(bytestream[start:start + 4])
                time.sleep(0.1)

        assoc.dul.socket.send = slow_send
        try:
            assert assoc.send_c_echo().Status == 0x0000
        finally:
            reactor.MIN_PDU_BYTES_PER_SECOND = original
        assert sum(sent) >= 60
        assoc.release()
    finally:
        if assoc.is_established:
            assoc.abort()


def test_stop_closes_an_association_stalled_mid_pdu_and_says_who_held_it(make_scp, caplog):
    caplog.set_level(logging.WARNING, logger="dicomnode")
    scp = make_scp(network_timeout=60.0, acse_timeout=60.0)  # neither would end it during the test
    assoc = _associate(scp.port)
    raw = _stall_mid_pdu(assoc)
    try:
        time.sleep(0.3)
        began = time.monotonic()
        scp.stop(1.0)
        took = time.monotonic() - began
        assert took < 8, f"stop took {took:.1f} s with a stalled peer"
        assert "stop: the association from calling AE 'SCANNER1' at 127.0.0.1 had not ended" in caplog.text
        assert "a PDU of it half received" in caplog.text
        assert _closed_by_node(raw)
    finally:
        assoc.abort()


def test_the_nodes_idle_timeout_is_logged_as_the_nodes_close(make_scp, caplog):
    caplog.set_level(logging.INFO, logger="dicomnode")
    scp = make_scp(network_timeout=1.0, acse_timeout=5.0)
    assoc = _associate(scp.port)
    try:
        assert wait_until(lambda: not scp.associations(), timeout=5)
        idle = [r for r in caplog.records if "closed by this node after node.network_timeout (1 s) idle" in r.message]
        assert idle and idle[0].levelno == logging.INFO, caplog.text
        assert "A-ABORT or connection lost" not in caplog.text
    finally:
        assoc.abort()


def test_one_host_holds_at_most_max_unassociated_per_host_silent_connections(make_scp, caplog):
    caplog.set_level(logging.WARNING, logger="dicomnode")
    scp = make_scp(max_associations=4, max_unassociated_per_host=2, acse_timeout=5.0, network_timeout=5.0)
    flood = ("127.0.0.2", 0)  # another source address than the scanner's
    burst = [socket.create_connection(("127.0.0.1", scp.port), source_address=flood) for _ in range(5)]
    try:
        assert wait_until(lambda: sum(_closed_by_node(sock) for sock in burst) == 3, timeout=3), \
            "a burst of silent connections from one address passed node.max_unassociated_per_host"
        assert wait_until(lambda: len(scp.associations()) == 2, timeout=3)
        assert "node.max_unassociated_per_host 2 reached: 127.0.0.2 holds 2 connection(s)" in caplog.text
        legit = _associate(scp.port)  # the slots the flood could not take
        assert legit.send_c_echo().Status == 0x0000
        summary = scp.slot_summary()
        assert summary["held"] == 3 and summary["unassociated"] == 2 and summary["refused_last_hour"] == 3
        legit.release()
    finally:
        for sock in burst:
            sock.close()


def test_status_says_who_holds_the_slots_when_they_are_full(make_scp, monkeypatch):
    from dicomnode.cli import association_slots_line
    from dicomnode.net import reactor
    # the silent two keep their slots (no eviction for 30 s) however slow the machine
    monkeypatch.setattr(reactor, "HALF_OPEN_AFTER_S", 30.0)
    scp = make_scp(max_associations=2, max_unassociated_per_host=0, acse_timeout=60.0)
    silent = [socket.create_connection(("127.0.0.1", scp.port)) for _ in range(2)]
    try:
        assert wait_until(lambda: len(scp.associations()) == 2, timeout=3)
        refused = AE(ae_title="SCANNER1")
        refused.add_requested_context(Verification)
        assert not refused.associate("127.0.0.1", scp.port, ae_title="DICOMNODE").is_established
        assert wait_until(lambda: len(scp.associations()) == 2, timeout=3)  # the refused one's thread has ended
        line = association_slots_line(scp.slot_summary())
        assert line.startswith("ASSOCIATION SLOTS FULL, new associations are refused: 2/2 held"), line
        assert "2 of them not associated yet: 127.0.0.1: 2 (2 not associated yet)" in line
        assert "1 connection(s) or association(s) refused for want of a slot in the last hour" in line
    finally:
        for sock in silent:
            sock.close()
    assert wait_until(lambda: not scp.associations(), timeout=3)
    assert association_slots_line({**scp.slot_summary(), "refused_last_hour": 0}) is None


def test_config_check_warns_about_a_network_node_without_a_per_host_limit():
    def warnings(**node):
        return [w for w in config_warnings(Config.model_validate({"node": node}))
                if "node.max_associations_per_host = 0" in w]
    assert warnings(host="0.0.0.0") and "one source address may hold every association slot" in warnings(
        host="0.0.0.0")[0]
    assert not warnings(host="0.0.0.0", max_associations_per_host=4)
    assert not warnings(host="127.0.0.1")  # loopback: only this machine's processes reach it
