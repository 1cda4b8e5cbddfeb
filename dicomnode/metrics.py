"""Prometheus metrics and the /healthz readiness probe, served by a small HTTP thread on a loopback port."""
from __future__ import annotations

import logging
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from dicomnode.net.scp import ListenError, listen_problem, probe_listen
from dicomnode.state import STUDY_STATES

log = logging.getLogger("dicomnode.metrics")

ANALYSIS_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)

#: /healthz is not ready when an instance of this size (bytes; an MR image is 0.1-1 MB) would not fit above
#: node.min_free_space_mb: the receiver refuses it (0xA700), so a load balancer should send scanners elsewhere
HEALTH_INSTANCE_BYTES = 1024 * 1024


class _NodeCollector:
    """Reads the node's own counters and its durable state at scrape time (nothing to keep in sync)."""

    def __init__(self, node):
        self.node = node

    def collect(self):
        node = self.node
        scp, dispatcher = node.scp, node.dispatcher
        yield CounterMetricFamily("dicomnode_instances_received", "C-STORE requests answered 0x0000 (incl. duplicates)",
                                  value=scp.received)
        yield CounterMetricFamily("dicomnode_received_bytes", "bytes of newly stored instances",
                                  value=getattr(scp, "received_bytes", 0))
        associations = CounterMetricFamily("dicomnode_associations", "association requests by outcome",
                                           labels=["outcome"])
        associations.add_metric(["accepted"], getattr(scp, "associations_accepted", 0))
        associations.add_metric(["rejected"], getattr(scp, "associations_rejected", 0))
        yield associations
        counts = node.db.counts_by_state()
        studies = GaugeMetricFamily("dicomnode_studies", "studies in the index by state", labels=["state"])
        for state in STUDY_STATES:
            studies.add_metric([state], counts.get(state, 0))
        yield studies
        yield CounterMetricFamily("dicomnode_send_attempts", "C-STORE attempts of result objects",
                                  value=dispatcher.sent + dispatcher.failed_attempts)
        yield CounterMetricFamily("dicomnode_send_failures", "failed C-STORE attempts of result objects",
                                  value=dispatcher.failed_attempts)
        outbox = node.db.outbox_counts()
        queue = GaugeMetricFamily("dicomnode_queue_depth", "work waiting", labels=["queue"])
        queue.add_metric(["outbox_pending"], outbox.get("pending", 0))
        queue.add_metric(["outbox_dead"], outbox.get("dead", 0))
        queue.add_metric(["analysis"], node.analysis_queue_depth())
        yield queue
        yield GaugeMetricFamily("dicomnode_disk_free_bytes", "free space where the spool lives",
                                value=node.spool.free_space_mb() * 1024 * 1024)


class NodeMetrics:
    """One registry per node (tests run several nodes in one process); `serve()` starts the HTTP thread."""

    def __init__(self, node):
        self.node = node
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_NodeCollector(node))
        self.analysis_seconds = Histogram("dicomnode_analysis_duration_seconds", "time one pipeline took on one study",
                                          ["pipeline"], buckets=ANALYSIS_BUCKETS, registry=self.registry)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def analysis_finished(self, durations: dict[str, float]) -> None:
        for pipeline, seconds in durations.items():
            self.analysis_seconds.labels(pipeline=pipeline).observe(seconds)

    def health(self) -> tuple[bool, str]:
        """(ready, why): ready when the models are loaded, every worker thread lives, the state database answers,
        storage_dir holds the spool (its spool.id), there is room above node.min_free_space_mb for an instance
        (HEALTH_INSTANCE_BYTES: C-STORE is refused under it) and spool.MIN_FREE_INODES inodes are free, the spool
        accepts a write, and not every node.max_associations slot is taken with one of them held by a connection that
        has not completed its association (idle or half-open connections: "degraded", StorageSCP.slots_problem).
        Every slot in use by set-up associations is normal heavy load, not a fault: ready, and the line says "busy:
        all N association slots in use ..." (a liveness probe must not restart a node for receiving)."""
        if not self.node.ready:
            return False, "starting: models not loaded yet"
        if self.node.stopping:
            return False, "stopping"
        dead = self.node.dead_threads()
        if dead:
            return False, f"worker thread(s) ended: {', '.join(dead)}; restart the process"
        outage = self.node.db.outage
        if outage.active:
            return False, f"state database unreachable for {time.time() - outage.since:.0f} s: {outage.reason}"
        if self.node.unavailable_pipelines:
            return False, "; ".join(sorted(self.node.unavailable_pipelines.values()))
        slots = self.node.scp.slots_problem() if getattr(self.node, "scp", None) is not None else None
        if slots is not None:
            return False, slots
        gone = self.node.spool_problem()
        if gone is not None:
            return False, f"storage unavailable: {gone}"
        spool = self.node.spool
        try:
            full = spool.no_room(HEALTH_INSTANCE_BYTES)
        except OSError:
            full = None  # the probe below says what is wrong with the folder
        if full is not None and full.inodes:
            return False, f"storage out of inodes: {full}: C-STORE is refused"
        if full is not None:
            return False, (f"storage full: {spool.free_space_mb():.1f} MB free, under node.min_free_space_mb="
                           f"{spool.min_free_space_mb} (+{HEALTH_INSTANCE_BYTES // (1024 * 1024)} MB for an instance): "
                           f"C-STORE is refused")
        probe = spool.spool_dir / f".healthz.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            with open(probe, "wb") as handle:
                handle.write(b"ok")
            probe.unlink()
        except OSError as exc:
            return False, f"spool not writable: {exc.strerror or exc}"
        busy = self.node.scp.slots_busy() if getattr(self.node, "scp", None) is not None else None
        return True, "ready" if busy is None else f"ready; {busy}"

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, host: str, port: int) -> int:
        """Start the HTTP thread on host:port (0 = any free port); returns the bound port."""
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    try:
                        body, code, kind = metrics.exposition(), 200, CONTENT_TYPE_LATEST
                    except Exception as exc:  # a closed database during shutdown
                        body, code, kind = f"metrics unavailable: {exc}\n".encode(), 503, "text/plain"
                elif path == "/healthz":
                    ready, why = metrics.health()
                    body, code, kind = (why + "\n").encode(), 200 if ready else 503, "text/plain; charset=utf-8"
                else:
                    body, code, kind = b"not found: /metrics or /healthz\n", 404, "text/plain"
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # scrapes every few seconds would flood the log
                pass

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise ListenError(_cannot_serve(host, port, exc)) from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)
        self._thread.start()
        bound = self._server.server_address[1]
        log.info("metrics on http://%s:%d/metrics, readiness on /healthz", host, bound)
        return bound

    @staticmethod
    def check_port(host: str, port: int) -> None:
        """Before the process changes anything: raises ListenError (as serve would) where host:port cannot be
        listened on now (probe_listen)."""
        try:
            probe_listen(host, port)
        except OSError as exc:
            raise ListenError(_cannot_serve(host, port, exc) + "; nothing was changed") from None

    @property
    def port(self) -> int | None:
        return self._server.server_address[1] if self._server else None

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _cannot_serve(host: str, port: int, exc: OSError) -> str:
    return (f"cannot serve metrics on {host}:{port} (observability.metrics_host/metrics_port): "
            f"{listen_problem(exc)}")
