"""The SCP's event-driven association reactors (dicomnode.net.reactor): same behaviour as pynetdicom's, no polling.

Real associations from a pynetdicom SCU and DCMTK's storescu go through the node's StorageSCP; the checks are on
what a peer sees (statuses, release, abort, the network timeout) and on the reactor waiting instead of spinning.
"""
from __future__ import annotations

import logging

import subprocess
import threading
import time

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage, Verification

from dicomnode.config import Config
from dicomnode.net import reactor
from dicomnode.net.reactor import EventDrivenAssociation, EventDrivenDUL
from dicomnode.net.scp import StorageSCP
from dicomnode.spool import Spool
from dicomnode.state import StateDB
from tests.hardening.hardening_support import save, synthetic_mr
from tests.conftest import require_peer, wait_until


@pytest.fixture
def scp(tmp_path):
    config = Config.model_validate({"node": {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 0,
                                             "allowed_calling_aes": ["*"], "network_timeout": 1.0}})
    db = StateDB(tmp_path / "store" / "state.sqlite3")
    server = StorageSCP(config, Spool(tmp_path / "store", db, min_free_space_mb=0))
    server.start()
    try:
        yield server
    finally:
        server.stop()
        db.close()


def _associate(port: int):
    ae = AE(ae_title="SCANNER1")
    ae.add_requested_context(Verification)
    ae.add_requested_context(MRImageStorage)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMNODE")
    assert assoc.is_established
    return assoc


def test_acceptors_are_event_driven(scp):
    assert reactor.EVENT_DRIVEN, "pynetdicom is not 3.0.x: the SCP fell back to pynetdicom's polling reactors"
    assoc = _associate(scp.port)
    try:
        assert assoc.send_c_echo().Status == 0x0000
        acceptors = list(scp._server.active_associations)
        assert acceptors and all(isinstance(a, EventDrivenAssociation) for a in acceptors)
        assert all(isinstance(a.dul, EventDrivenDUL) for a in acceptors)
    finally:
        assoc.release()


def test_many_stores_release_and_abort(scp):
    assoc = _associate(scp.port)
    datasets = [synthetic_mr(size=32) for _ in range(40)]
    statuses = [assoc.send_c_store(ds).Status for ds in datasets]
    assert statuses == [0x0000] * 40
    assoc.release()
    assert assoc.is_released
    assert wait_until(lambda: not scp._server.active_associations), "the acceptor did not end after A-RELEASE"
    assert scp.received == 40
    assert all(scp.spool.db.has_instance(str(ds.SOPInstanceUID)) for ds in datasets)

    aborted = _associate(scp.port)
    assert aborted.send_c_store(synthetic_mr(size=32)).Status == 0x0000
    aborted.abort()
    assert wait_until(lambda: not scp._server.active_associations), "the acceptor did not end after A-ABORT"


def test_an_aborted_association_is_logged_with_what_it_delivered(scp, caplog):
    caplog.set_level(logging.WARNING, logger="dicomnode")
    assoc = _associate(scp.port)
    assert [assoc.send_c_store(synthetic_mr(size=32)).Status for _ in range(2)] == [0x0000] * 2
    assoc.abort()
    assert wait_until(lambda: not scp._server.active_associations), "the acceptor did not end after A-ABORT"
    assert wait_until(lambda: "aborted (A-ABORT or connection lost) after 2 instance(s) acknowledged" in caplog.text)
    released = _associate(scp.port)
    released.send_c_echo()
    released.release()
    assert wait_until(lambda: not scp._server.active_associations)
    assert caplog.text.count("aborted (A-ABORT") == 1


def test_idle_association_is_ended_by_the_network_timeout(scp):
    """node.network_timeout (1 s here) still ends a silent association: the reactor's waits are bounded."""
    assoc = _associate(scp.port)
    assert wait_until(lambda: not scp._server.active_associations, timeout=15), "idle association never timed out"
    assert wait_until(lambda: not assoc.is_established, timeout=5)


def _idle_loops(scp, monkeypatch) -> int:
    """DUL reactor loops of one association during 0.5 s without traffic."""
    loops = []
    real = EventDrivenDUL._is_transport_event

    def counted(self):
        loops.append(time.monotonic())
        return real(self)

    monkeypatch.setattr(EventDrivenDUL, "_is_transport_event", counted)
    assoc = _associate(scp.port)
    try:
        loops.clear()
        time.sleep(0.5)
        idle_loops = len(loops)
        assert assoc.send_c_echo().Status == 0x0000  # and it still answers straight away
        assert len(loops) > idle_loops, "the counted reactor is not the one serving the association"
    finally:
        assoc.release()
    return idle_loops


def test_idle_reactors_wait_instead_of_polling(scp, monkeypatch):
    """An idle association's DUL thread must not loop every millisecond (pynetdicom's reactor does ~1000/s)."""
    idle_loops = _idle_loops(scp, monkeypatch)
    assert idle_loops <= 0.5 / reactor.IDLE_WAIT * 3, f"{idle_loops} DUL loops in 0.5 s of idleness: it polls"


def test_the_polling_check_is_not_vacuous(scp, monkeypatch):
    monkeypatch.setattr(reactor, "IDLE_WAIT", 0.001)  # what pynetdicom's own reactor does
    assert _idle_loops(scp, monkeypatch) > 0.5 / 0.05 * 3


def test_storescu_over_one_association(scp, tmp_path):
    """DCMTK's storescu, as a scanner: a series over one association, every instance acknowledged and indexed."""
    storescu = require_peer("storescu")
    series = [save(synthetic_mr(size=32), tmp_path / f"in{i}.dcm") for i in range(25)]
    done = subprocess.run([storescu, "-aet", "SCANNER1", "-aec", "DICOMNODE", "127.0.0.1", str(scp.port),
                           *map(str, series)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert wait_until(lambda: scp.received == 25)
    assert threading.active_count() < 50
