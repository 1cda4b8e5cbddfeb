"""Starting on a disk the state database cannot be written to (break44c #4): serve degraded until it can.

A node killed (kill -9, a crash, a power loss) while its disk was full cannot start again before some space is back:
the state database (SQLite on node.storage_dir, by default) takes no write, often not even its shared-memory file
('disk I/O error'). Exiting would make systemd restart it in a loop, with scanners meeting "connection refused"
instead of 0xA700 and /healthz gone. Instead `dicomnode serve` (start_when_writable) says once at ERROR what keeps it
from starting and:

- deletes the emergency purge's space reserve (retention.SpaceReserve) where that gives the state room (a SQLite
  state on node.storage_dir's file system, the emergency purge on), and starts at once: the emergency purge then
  frees the disk by itself and the reserve is made again;
- otherwise serves degraded (DegradedService): every C-STORE answered 0xA700 Out of Resources with an Error Comment
  saying why (as the running node refuses on a full disk), C-ECHO answered, /healthz and /metrics 503 with the
  reason; and tries to start again whenever free space grew (NEW_SPACE_MB) and at least every RETRY_SECONDS. Pending
  result sends go out once it has started: a send whose attempt the state cannot record is not made (dispatch).
"""
from __future__ import annotations

import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from dicomnode.config import Config
from dicomnode.net.tls import server_context
from dicomnode.retention import SpaceReserve
from dicomnode.spool import free_space_mb
from dicomnode.state import is_disk_full

log = logging.getLogger("dicomnode.serve")

T = TypeVar("T")

#: a start that failed is tried again once this much more space (MB) is free on node.storage_dir ...
NEW_SPACE_MB = 1.0
#: ... and at least this often (s) (a read-only file system remounted read-write frees no space)
RETRY_SECONDS = 60.0
#: how often (s) free space is looked at while serving degraded
POLL_SECONDS = 2.0

#: the C-STORE status while degraded: Refused, Out of Resources (PS3.4 B.2.3), as for a full spool when running
OUT_OF_RESOURCES = 0xA700


def state_unwritable(exc: BaseException, storage_dir: Path) -> str | None:
    """Why the state database cannot be written when `exc` says so, else None (any other error stops the start as
    before): a full disk (ENOSPC / EDQUOT, SQLite's 'database or disk is full', PostgreSQL's 'could not extend
    file'), SQLite's 'disk I/O error' (what it says where it cannot make its shared-memory file) while node.storage_dir
    has under 1 MB free, a read-only file system or database file."""
    if is_disk_full(exc):
        return "the disk is full"
    text = str(getattr(exc, "orig", None) or exc).lower()
    if "read-only file system" in text or "readonly database" in text:
        return "the state database is read-only (a read-only file system or database file)"
    if "disk i/o error" in text:
        try:
            if free_space_mb(storage_dir) < 1.0:
                return "the disk is full (SQLite cannot make its shared-memory file: disk I/O error)"
        except OSError:
            return None
    return None


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


class DegradedService:
    """What a node that cannot start yet still serves: with `receive`, a C-STORE SCP on node.host:node.port that
    answers every C-STORE 0xA700 (Error Comment `comment`) and C-ECHO 0x0000; with metrics enabled, /healthz and
    /metrics answering 503 with `reason()`."""

    def __init__(self, config: Config, roles: Sequence[str], reason: Callable[[], str], listen: bool = True):
        self.config = config
        self.roles = tuple(roles)
        self.reason = reason
        self.listen = listen
        self.refused = 0
        self._scp = None
        self._http: ThreadingHTTPServer | None = None
        self._said: set[tuple[str, str]] = set()  # (calling AE, peer host) told about at WARNING

    @property
    def comment(self) -> str:
        return "node not started: state database cannot be written"[:64]

    def start(self) -> None:
        """Listen; a port that cannot be listened on now is skipped (said at WARNING), tried at the next start."""
        node = self.config.node
        if self.listen and "receive" in self.roles and self._scp is None:
            ae = AE(ae_title=node.ae_title)
            ae.supported_contexts = AllStoragePresentationContexts
            ae.add_supported_context(Verification)
            ssl_context = server_context(node.tls) if node.tls.enabled else None
            try:
                self._scp = ae.start_server((node.host, node.port), block=False, ssl_context=ssl_context,
                                            evt_handlers=[(evt.EVT_C_STORE, self._refuse)])
            except OSError as exc:
                log.warning("degraded: cannot listen on %s:%d for refusals (%s)", node.host, node.port, exc)
        observability = self.config.observability
        if self.listen and observability.metrics_enabled and self._http is None:
            service = self

            class Handler(BaseHTTPRequestHandler):
                def do_GET(self):  # noqa: N802 (http.server's naming)
                    path = self.path.split("?", 1)[0]
                    code, text = (503, f"not started: {service.reason()}") if path in ("/healthz", "/metrics") \
                        else (404, "not found: /metrics or /healthz")
                    body = (text + "\n").encode()
                    self.send_response(code)
                    self.send_header("Content-Type", "text/plain; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

                def log_message(self, *args):
                    pass

            try:
                self._http = ThreadingHTTPServer((observability.metrics_host, observability.metrics_port), Handler)
            except OSError as exc:
                log.warning("degraded: cannot serve /healthz on %s:%d (%s)", observability.metrics_host,
                            observability.metrics_port, exc)
            else:
                self._http.daemon_threads = True
                threading.Thread(target=self._http.serve_forever, name="degraded-http", daemon=True).start()

    @property
    def scp_port(self) -> int | None:
        return self._scp.server_address[1] if self._scp is not None else None

    @property
    def http_port(self) -> int | None:
        return self._http.server_address[1] if self._http is not None else None

    def stop(self) -> None:
        """Stop listening (the ports are free for the node's own start)."""
        if self._scp is not None:
            self._scp.shutdown()
            self._scp = None
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def _refuse(self, event) -> Dataset:
        self.refused += 1
        requestor = event.assoc.requestor
        who = (str(requestor.ae_title).strip(), str(requestor.address))
        if who not in self._said:  # once per peer, not per instance
            self._said.add(who)
            log.error("C-STORE from %s@%s refused with 0xA700 (and every further one until the node has started): "
                      "%s", who[0], who[1], self.reason())
        status = Dataset()
        status.Status = OUT_OF_RESOURCES
        status.ErrorComment = self.comment
        return status


def _reserve_helps(config: Config) -> bool:
    """Whether deleting node.storage_dir's space reserve gives the state database room: its default SQLite file in
    node.storage_dir (a configured [state] url may be elsewhere: left alone)."""
    return config.state.url is None and config.retention.emergency_free_space_mb > 0


def _fed_watchdog(start: Callable[[], T], notify: Callable[[str], None], every: float) -> T:
    """`start()` with systemd's watchdog fed meanwhile: after the degraded service said READY, a start that loads
    the models takes longer than WatchdogSec."""
    done = threading.Event()

    def feed() -> None:
        while not done.wait(every):
            notify("WATCHDOG=1")

    threading.Thread(target=feed, name="degraded-watchdog", daemon=True).start()
    try:
        return start()
    finally:
        done.set()


def start_when_writable(start: Callable[[], T], config: Config, roles: Sequence[str], stop: threading.Event,
                        listen: bool = True, poll_seconds: float = POLL_SECONDS,
                        notify: Callable[[str], None] = lambda message: None) -> T | None:
    """`start()` (the node's whole start); where it fails because the state database cannot be written
    (state_unwritable), serve degraded and try again until it starts (see the module docstring). Returns what
    `start()` returned, or None where `stop` was set first. Any other error of `start()` is raised as before.
    `start()` must leave nothing running or locked when it raises. `notify`: sd_notify (systemd Type=notify, with a
    watchdog): the degraded service is "ready" with a STATUS saying why, and pings the watchdog while it waits, so
    that systemd neither times the start out nor restarts it in a loop."""
    storage = Path(config.node.storage_dir)
    service: DegradedService | None = None
    problem = ""
    last_try = time.monotonic()
    last_free = 0.0
    reserve = SpaceReserve(storage)
    while True:
        try:
            started = start() if service is None else _fed_watchdog(start, notify, poll_seconds)
        except Exception as exc:
            why = state_unwritable(exc, storage)
            if why is None:
                if service is not None:
                    service.stop()
                raise
            first = service is None
            problem = f"the state database cannot be written: {_first_line(exc)} ({why})"
            if why.startswith("the disk is full") and _reserve_helps(config) and reserve.release():
                log.warning("cannot start: %s; deleted the space reserve %s (%d MB) to give it room, starting again "
                            "(the emergency purge then frees space; the reserve is made again once there is room)",
                            problem, reserve.path, reserve.size_mb)
                continue
            try:
                last_free = free_space_mb(storage)
            except OSError:
                last_free = 0.0
            last_try = time.monotonic()
            if first:
                service = DegradedService(config, roles, lambda: problem, listen=listen)
                log.error("cannot start: %s (free space on node.storage_dir %s: %.1f MB). Serving degraded until it "
                          "can: C-STORE is refused with 0xA700, /healthz answers 503, nothing is analysed or sent; "
                          "the start is tried again whenever space is freed (and every %.0f s). Free space on the "
                          "file system of node.storage_dir (or of the [state] database)", problem, storage, last_free,
                          RETRY_SECONDS)
            service.start()
            notify(f"STATUS=degraded: {problem}"[:200])
            notify("READY=1")
        else:
            if service is not None:
                log.warning("started after serving degraded (%d C-STORE(s) refused meanwhile): the state database "
                            "takes writes again", service.refused)
                notify("STATUS=serving")
            return started
        while True:
            notify("WATCHDOG=1")
            if stop.wait(poll_seconds):
                service.stop()
                log.info("stopped while waiting to start")
                return None
            try:
                free = free_space_mb(storage)
            except OSError:
                free = last_free
            if free >= last_free + NEW_SPACE_MB or time.monotonic() - last_try >= RETRY_SECONDS:
                break
        service.stop()  # the node's own start listens on these ports
        log.info("trying to start again (%.1f MB free on node.storage_dir)", free)

