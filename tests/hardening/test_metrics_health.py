"""Prometheus metrics and /healthz: scraped over HTTP from an in-process node and from `dicomnode serve`."""
from __future__ import annotations

import threading
import time

import pytest

from dicomnode.config import Config
from dicomnode.node import Node
from dicomnode.roles import RoleRunner
from tests.hardening.hardening_support import echo_status, http_get, metric_value, store_one, synthetic_mr
from tests.node.nodeproc import NodeProcess
from tests.peers import free_port


class NoAnalysis:
    """Stands in for the Analyser: nothing to warm up (the tests never complete a study)."""

    def warm_up(self, names):
        return {}


def make_node(tmp_path, **node_overrides) -> Node:
    config = Config.model_validate({
        "node": {"port": 0, "storage_dir": str(tmp_path / "store"), "allowed_calling_aes": ["SCANNER1"],
                 "min_free_space_mb": 0, **node_overrides},
        "studies": {"quiet_seconds": 3600},
        "observability": {"metrics_enabled": True, "metrics_port": 0},
    })
    return Node(config, analyser=NoAnalysis())


def test_healthz_is_503_until_started_and_when_the_spool_is_not_writable(tmp_path):
    node = make_node(tmp_path)
    port = node.metrics.serve("127.0.0.1", 0)  # served before start: not ready yet
    try:
        code, body = http_get(f"http://127.0.0.1:{port}/healthz")
        assert (code, body.strip()) == (503, "starting: models not loaded yet")
        node.metrics.stop()
        node.start(warm_up=False)
        port = node.metrics.port
        code, body = http_get(f"http://127.0.0.1:{port}/healthz")
        assert (code, body.strip()) == (200, "ready")
        real_spool = node.spool.spool_dir
        node.spool.spool_dir = tmp_path / "gone" / "spool"  # e.g. the volume was unmounted
        code, body = http_get(f"http://127.0.0.1:{port}/healthz")
        assert code == 503 and body.startswith("spool not writable"), body
        node.spool.spool_dir = real_spool
        assert http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        assert http_get(f"http://127.0.0.1:{port}/nothing")[0] == 404
    finally:
        node.stop()
    assert node.metrics.port is None


def test_healthz_is_503_while_a_worker_thread_is_dead_or_the_state_database_is_unreachable(tmp_path):
    node = make_node(tmp_path)
    runner = RoleRunner(node)
    runner.start(warm_up=False)
    try:
        url = f"http://127.0.0.1:{node.metrics.port}/healthz"
        assert http_get(url)[0] == 200
        live = node.dispatcher._thread
        ended = threading.Thread(target=lambda: None, name="dispatch")
        ended.start()
        ended.join()
        node.dispatcher._thread = ended  # the dispatch loop ended by an error it did not catch
        code, body = http_get(url)
        assert code == 503 and body.startswith("worker thread(s) ended: dispatch"), body
        node.dispatcher._thread = live
        assert http_get(url)[0] == 200
        node.db.outage.failed(OSError("connection refused"))
        code, body = http_get(url)
        assert code == 503 and "state database unreachable" in body and "connection refused" in body, body
        node.db.outage.succeeded()
        assert http_get(url)[0] == 200
    finally:
        runner.stop()


def test_metrics_count_instances_bytes_associations_states_and_disk(tmp_path):
    node = make_node(tmp_path)
    node.start(warm_up=False)
    try:
        url = f"http://127.0.0.1:{node.metrics.port}/metrics"
        before = http_get(url)[1]
        assert metric_value(before, "dicomnode_instances_received_total") == 0
        study = synthetic_mr().StudyInstanceUID
        datasets = [synthetic_mr(study_uid=study, instance=i) for i in range(3)]
        for dataset in datasets:
            assert store_one(node.scp.port, dataset).Status == 0
        assert echo_status(node.scp.port, calling="INTRUDER") is None  # refused association
        code, text = http_get(url)
        assert code == 200
        assert metric_value(text, "dicomnode_instances_received_total") == 3
        stored_bytes = node.db.stored_bytes()
        assert metric_value(text, "dicomnode_received_bytes_total") == stored_bytes > 3 * 64 * 64 * 2
        assert metric_value(text, "dicomnode_associations_total", 'outcome="accepted"') == 3
        assert metric_value(text, "dicomnode_associations_total", 'outcome="rejected"') == 1
        assert metric_value(text, "dicomnode_studies", 'state="received"') == 1
        assert metric_value(text, "dicomnode_studies", 'state="done"') == 0
        assert metric_value(text, "dicomnode_queue_depth", 'queue="outbox_pending"') == 0
        assert metric_value(text, "dicomnode_disk_free_bytes") > 0
        node.metrics.analysis_finished({"cine": 3.2, "lge": 0.4})
        text = http_get(url)[1]
        assert metric_value(text, "dicomnode_analysis_duration_seconds_count", 'pipeline="cine"') == 1
        assert metric_value(text, "dicomnode_analysis_duration_seconds_sum", 'pipeline="lge"') == pytest.approx(0.4)
        assert metric_value(text, "dicomnode_send_attempts_total") == 0
    finally:
        node.stop()


def test_serve_exposes_metrics_on_the_configured_loopback_port(tmp_path):
    node_port, metrics_port = free_port(), free_port()
    extra = f'[observability]\nmetrics_enabled = true\nmetrics_host = "127.0.0.1"\nmetrics_port = {metrics_port}\n'
    node = NodeProcess(tmp_path, node_port, pipelines=(), quiet_seconds=3600, extra=extra).start()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                code, body = http_get(f"http://127.0.0.1:{metrics_port}/healthz", timeout=2)
                if code == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "no /healthz 200 within 30 s"
            time.sleep(0.1)
        assert body.strip() == "ready"
        assert store_one(node_port, synthetic_mr()).Status == 0
        text = http_get(f"http://127.0.0.1:{metrics_port}/metrics")[1]
        assert metric_value(text, "dicomnode_instances_received_total") == 1
    finally:
        assert node.stop() == 0


def test_healthz_says_degraded_while_every_association_slot_is_taken(tmp_path):
    import socket

    node = make_node(tmp_path, max_associations=2, acse_timeout=3)
    node.start(warm_up=False)
    held = []
    try:
        port = node.metrics.port
        assert http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        held = [socket.create_connection(("127.0.0.1", node.scp.port)) for _ in range(2)]
        assert wait_for(lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 503)
        code, body = http_get(f"http://127.0.0.1:{port}/healthz")
        assert body.startswith("degraded: all 2 association slots taken (node.max_associations), 2 of them by "
                               "connection(s) without a completed association") and "127.0.0.1: 2" in body, body
        # the connections stay open: node.acse_timeout (3 s) closes them, the slots are free again
        assert wait_for(lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200)
    finally:
        for sock in held:
            sock.close()
        node.stop()


def test_healthz_stays_200_and_says_busy_while_every_slot_holds_an_association(tmp_path):
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    node = make_node(tmp_path, max_associations=2, acse_timeout=1)
    node.start(warm_up=False)
    held = []
    try:
        port = node.metrics.port
        ae = AE(ae_title="SCANNER1")
        ae.add_requested_context(Verification)
        held = [ae.associate("127.0.0.1", node.scp.port, ae_title="DICOMNODE") for _ in range(2)]
        assert all(assoc.is_established for assoc in held)
        time.sleep(1.5)  # past node.acse_timeout: set-up associations are load, not a fault
        code, body = http_get(f"http://127.0.0.1:{port}/healthz")
        assert code == 200 and body.startswith("ready; busy: all 2 association slots in use"), (code, body)
    finally:
        for assoc in held:
            assoc.release()
        node.stop()


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False
