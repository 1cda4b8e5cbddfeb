"""A real PostgreSQL outage under a scale-out process (scale-break findings 1-3): the server is stopped and started
again under a `receive,complete,dispatch` process. Its loops live through it, a C-STORE meanwhile is refused with a
retryable status and leaves no file, the outage is logged once and its end once, and results queued afterwards are
sent. Skips without PostgreSQL's server binaries (fails with DICOMNODE_REQUIRE_PEERS=1), as tests/state_backends.py.
"""
from __future__ import annotations

import logging

import pytest

import dicomnode.dispatch as dispatch_module
from dicomnode.config import Config
from dicomnode.net.scp import STATE_UNREACHABLE_COMMENT
from dicomnode.node import Node
from dicomnode.roles import RoleRunner
from dicomnode.state import OUTBOX_SENT, StateDB
from tests.hardening.hardening_support import save, store_one, synthetic_mr
from tests.node.test_state_outage import ok_sends
from tests.node.test_storage_safety import NoAnalysis, queued_result, wait_for
from tests.pgserver import PostgresServer
from tests.state_backends import require_postgres


class RestartablePostgres(PostgresServer):
    """The throw-away server, with a stop that keeps its data and a start again on the same socket."""

    options = ""

    def start(self, fsync: bool = False, max_connections: int = 50) -> "RestartablePostgres":
        super().start(fsync=fsync, max_connections=max_connections)
        self.options = f"-c listen_addresses='' -k {self.root} -c max_connections={max_connections} -c fsync=off"
        return self

    def halt(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-o", self.options, "-l", str(self.root / "server.log"), "-w",
                  "-t", "60", "start")


@pytest.fixture
def postgres():
    require_postgres()
    server = RestartablePostgres().start()
    yield server
    server.stop()


def test_a_postgresql_restart_is_ridden_out_said_once_and_sends_afterwards(tmp_path, postgres, monkeypatch, caplog):
    url = postgres.create_database()
    storage = tmp_path / "store"
    setup = StateDB(url, upgrade=True)
    config = Config.model_validate({
        "node": {"port": 0, "host": "127.0.0.1", "storage_dir": str(storage), "allowed_calling_aes": ["*"],
                 "min_free_space_mb": 0},
        "studies": {"quiet_seconds": 3600},
        "destinations": [{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 9}],
        "state": {"url": url, "heartbeat_seconds": 0.2, "lease_seconds": 2, "poll_seconds": 0.1}})
    node = Node(config, analyser=NoAnalysis())
    sent: list = []
    monkeypatch.setattr(dispatch_module, "send_files", ok_sends(sent))
    runner = RoleRunner(node, ("receive", "complete", "dispatch"))
    runner.start(warm_up=False)
    try:
        with caplog.at_level(logging.INFO):
            postgres.halt()
            assert wait_for(lambda: node.db.outage.failures >= 10, 60)
            status = store_one(node.scp.port, synthetic_mr())
            assert status.Status == 0xA700 and status.ErrorComment == STATE_UNREACHABLE_COMMENT
            assert not [p for p in (storage / "spool").rglob("*") if p.is_file()]
            postgres.resume()
            assert wait_for(lambda: [r for r in caplog.records if "reachable again" in r.getMessage()], 60)
            item = queued_result(setup)  # an analysis finished after the outage (another process)
            save(synthetic_mr(), storage / item["path"])
            assert wait_for(lambda: setup.outbox_for("1.2.3")[0]["state"] == OUTBOX_SENT, 60)
            threads = list(runner._threads) + [node.dispatcher._thread]
            assert all(thread.is_alive() for thread in threads) and runner.dead_threads() == []
    finally:
        runner.stop()
        setup.close()
    assert len(sent) == 1
    outage_lines = [r for r in caplog.records if r.name == "dicomnode.state" and r.levelno >= logging.ERROR]
    assert len(outage_lines) == 1 and outage_lines[0].getMessage().startswith("state database unreachable: ")
    assert len([r for r in caplog.records if "reachable again" in r.getMessage()]) == 1
    assert not [r for r in caplog.records if r.exc_info and r.name.startswith("dicomnode")]  # no traceback
