"""Event-driven association reactors for the Storage SCP: pynetdicom's, without its polling sleeps.

pynetdicom (3.0) runs each association on two threads that poll: the DUL reactor sleeps 1 ms whenever a loop
found nothing to do (`DULServiceProvider._run_loop_delay`, marked "TODO: try and make this event based" upstream)
and the association reactor sleeps 1 ms at the top of every loop. On a C-STORE stream the peer waits for each
response before sending the next instance, so both sleeps land on every instance's critical path (about 1-2 ms of
a 4-7 ms instance on the receive benchmark).

These subclasses keep pynetdicom's state machine, PDU and DIMSE code, its events and its timers; they change only
how the two threads wait:

- the DUL thread blocks in ``select()`` on the peer's socket and a wake-up pipe, which ``send_pdu`` (a primitive
  queued by the association thread: a C-STORE response) and ``kill_dul`` write to;
- the association thread blocks on an ``Event`` that the DUL thread sets after every state-machine action (a
  decoded DIMSE message, an A-RELEASE or A-ABORT for the user) and when it stops.

Both waits have a ceiling (`IDLE_WAIT`) so that the timers pynetdicom checks in its loops (ARTIM, network idle
timeout) fire as before. The loops' bodies are pynetdicom 3.0's: with any other version the SCP falls back to
pynetdicom's own server loops (`EVENT_DRIVEN`). The tests run real associations (DCMTK storescu, pynetdicom SCU, TLS)
through them.

Every server class here also moves the TLS handshake off the accepting thread and logs a refused one
(`TLSHandshakeInThread`).
"""
from __future__ import annotations

import ipaddress
import logging
import os
import queue
import select
import socket
import ssl
import threading
import time
from collections import deque
from copy import deepcopy
from io import BytesIO
from datetime import datetime
from typing import Any

import pynetdicom
from pynetdicom import evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from dicomnode.net.tls import describe_server_handshake_error

LOGGER = logging.getLogger("pynetdicom.dul")  # the messages are pynetdicom's: keep them under its logger
log = logging.getLogger("dicomnode.net.tls")

EVENT_DRIVEN = pynetdicom.__version__.startswith("3.0.")
"""The loops below are pynetdicom 3.0's; with another version the SCP uses pynetdicom's own server."""

#: DIMSE status "Unrecognized Operation" (PS3.7 Annex C): a request of a service the node does not offer
UNRECOGNIZED_OPERATION = 0x0211

#: how much longer than node.max_instance_mb a PDU may be (a P-DATA PDU's own header and its command set)
PDU_SLACK_BYTES = 1024 * 1024

IDLE_WAIT = 0.05
"""Longest wait (s) of either thread without an event: the resolution of ARTIM and the network idle timeout."""


class _PDUOverLimit(Exception):
    """EventDrivenDUL._read_pdu_data: the PDU being read is longer than an instance may be (not an OSError, which
    pynetdicom would log with a traceback)."""


class PDUNotReceived(Exception):
    """No byte of a PDU being read arrived for node.network_timeout (not an OSError: pynetdicom's read must not catch
    it)."""


#: the slowest a PDU may arrive on average (bytes/s) once it has taken node.network_timeout: a peer trickling a byte
#: now and then never stalls for a whole timeout yet would hold its slot for days; a real link, even a 1 Mbit/s VPN to
#: a remote scanner (~125 000 bytes/s), is two orders of magnitude faster
MIN_PDU_BYTES_PER_SECOND = 1024


class PDURead:
    """One PDU's reads from the connection's socket `raw`: the loop of pynetdicom's `AssociationSocket.recv`, each
    wait for more bytes at most `idle` s (None: no limit). Raises PDUNotReceived when nothing arrives for that long,
    or when, after `idle` s, the PDU has arrived at under MIN_PDU_BYTES_PER_SECOND on average (`too_slow`: a peer
    trickling bytes). Progress, not the length the peer declared, decides: a link whose bytes keep coming at any real
    network's speed is never cut, and a peer that declares a huge PDU and goes quiet is closed after `idle` s."""

    def __init__(self, raw, idle: float | None):
        self.raw = raw
        self.idle = idle
        self.received = 0
        self.declared: int | None = None
        self.too_slow = False
        self.total = 0  # header and body
        self.started = time.monotonic()
        self._timeout = raw.gettimeout()

    def rate(self) -> float:
        """Bytes per second of this PDU so far (header and body)."""
        return self.total / max(time.monotonic() - self.started, 1e-6)

    def recv(self, nr_bytes: int) -> bytearray:
        data = bytearray()
        while len(data) < nr_bytes:
            if self.idle is not None:
                if time.monotonic() - self.started > self.idle and self.rate() < MIN_PDU_BYTES_PER_SECOND:
                    self.too_slow = True
                    raise PDUNotReceived()
                self.raw.settimeout(self.idle)
            try:
                chunk = self.raw.recv(min(nr_bytes - len(data), 65536))
            except TimeoutError as exc:  # socket.timeout; ssl's "The read operation timed out"
                raise PDUNotReceived() from exc
            except OSError:
                if _closed(self.raw):  # closed by this node (an abort, a stop): as the peer's close
                    return data
                raise
            if not chunk:  # the peer closed: pynetdicom says the PDU is short
                return data
            data.extend(chunk)
            self.received += len(chunk)
            self.total += len(chunk)
        return data

    def restore(self) -> None:
        try:
            self.raw.settimeout(self._timeout)
        except (OSError, ValueError):  # closed meanwhile
            pass


class EventDrivenDUL(DULServiceProvider):
    """PS3.8 DUL service provider whose reactor waits on the socket and a wake-up pipe instead of sleeping."""

    def __init__(self, assoc: Association):
        super().__init__(assoc)
        #: time.monotonic() when the PDU being read began (None between PDUs)
        self.dicomnode_reading_since: float | None = None
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)

    def _poke(self) -> None:
        try:
            os.write(self._wake_write, b"\0")
        except (BlockingIOError, OSError):  # a full pipe already wakes the reactor; a closed one: it has stopped
            pass

    def send_pdu(self, primitive) -> None:
        super().send_pdu(primitive)
        self._poke()

    def kill_dul(self) -> None:
        super().kill_dul()
        self._poke()

    def receive_pdu(self, wait: bool = False, timeout: float | None = None):
        """pynetdicom's `receive_pdu`, returning None as soon as this DUL's thread has ended with nothing queued
        for the user instead of waiting out `timeout`: nothing can arrive any more. pynetdicom's acceptor waits
        node.acse_timeout for the A-ASSOCIATE-RQ this way, and a peer that connects and closes before sending a PDU
        (a load balancer's TCP health check, a port scanner) ends the DUL at once (PS3.8 AA-5, Sta2 + Evt17)
        while the waiting association thread, counted by node.max_associations, held its slot until the timeout."""
        if not wait:
            return super().receive_pdu(wait=False)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = IDLE_WAIT if deadline is None else min(IDLE_WAIT, deadline - time.monotonic())
            if step <= 0:
                return super().receive_pdu(wait=False)
            primitive = super().receive_pdu(wait=True, timeout=step)
            if primitive is not None:
                return primitive
            if self.ident is not None and not self.is_alive():  # started and ended: one last look
                return super().receive_pdu(wait=False)

    def _wait_for_work(self) -> None:
        """Block until the peer sent data, the user queued a primitive, or `IDLE_WAIT` passed."""
        if not self.to_provider_queue.empty():
            return
        sock = getattr(self.socket, "socket", None)
        watched: list[Any] = [self._wake_read]
        if sock is not None:
            if isinstance(sock, ssl.SSLSocket) and sock.pending():
                return  # decrypted bytes already buffered: select() cannot see them
            watched.append(sock)
        try:
            readable, _, _ = select.select(watched, [], [], IDLE_WAIT)
        except (OSError, ValueError):  # the socket was closed under us: the next loop notices
            return
        if self._wake_read in readable:
            try:
                while os.read(self._wake_read, 4096):
                    pass
            except (BlockingIOError, OSError):
                pass

    def _read_pdu_data(self) -> None:
        """pynetdicom's PDU read, with a progress timeout and a size limit.

        - Progress: each wait for more of the PDU lasts at most the association's network_timeout
          (node.network_timeout). pynetdicom reads a PDU with blocking recv() calls until all its
          declared bytes are there, so a peer that sends part of a PDU and then nothing held this thread, and the
          association's slot, for as long as it kept the connection open: the idle timer could only mark the
          association aborted. When nothing arrives for that long the connection is closed (A-ABORT, then Evt17) and said
          ("closed: PDU body not received within node.network_timeout"); the association records why
          (`dicomnode_closed_by_node`) for the association's end line.
        - Size: a PDU longer than an instance may be (PDU_SLACK_BYTES over the AE's `dicomnode_max_instance_bytes`)
          is refused before its body is read: pynetdicom would hold all of it in memory (a sender told
          node.max_pdu_size = 0, "unlimited", sends a whole data set as one PDU). The connection is closed."""
        sock = self.socket
        raw = getattr(sock, "socket", None)
        if sock is None or raw is None:
            super()._read_pdu_data()
            return
        limit = getattr(self.assoc.ae, "dicomnode_max_instance_bytes", 0) or 0
        timeout = self.assoc.network_timeout
        started = time.monotonic()
        read = PDURead(raw, timeout)
        calls = [0]

        def bounded(nr_bytes: int):
            calls[0] += 1
            if calls[0] == 2:  # the body, after the 6-byte header
                read.declared, read.received = nr_bytes, 0
                if limit and nr_bytes > limit + PDU_SLACK_BYTES:
                    address = getattr(self.assoc.requestor, "address", "?")
                    logging.getLogger("dicomnode.net.scp").error(
                        "connection from %s closed: a PDU of %d MB, over node.max_instance_mb (%g MB); nothing of "
                        "it was read or stored", address, nr_bytes // (1024 * 1024), limit / (1024 * 1024))
                    raise _PDUOverLimit()
            return read.recv(nr_bytes)

        sock.recv = bounded
        self.dicomnode_reading_since = started
        try:
            super()._read_pdu_data()
        except _PDUOverLimit:  # said above in one line (pynetdicom's OSError path adds an ERROR with a traceback)
            self.event_queue.put("Evt17")  # transport connection closed, as pynetdicom's read failure
        except PDUNotReceived:
            self._close_stalled(read, timeout, time.monotonic() - started)
        finally:
            if self._idle_timer is not None:  # before the mark goes: a PDU that took long is not then seen as idle
                self._idle_timer.restart()
            self.dicomnode_reading_since = None
            del sock.recv
            read.restore()

    def _close_stalled(self, read: "PDURead", timeout: float, waited: float) -> None:
        """Nothing of the PDU being read arrived for node.network_timeout, or it trickles in (PDURead.too_slow): say
        so, send the peer an A-ABORT (best effort), close."""
        assoc = self.assoc
        if read.too_slow:
            reason = (f"PDU arriving at {read.rate():.0f} byte(s)/s, under {MIN_PDU_BYTES_PER_SECOND} byte(s)/s after "
                      f"node.network_timeout ({timeout:g} s)")
            what = "the peer trickles its PDU too slowly for any real link"
        else:
            reason = f"PDU body not received within node.network_timeout ({timeout:g} s)"
            what = "the peer stalled mid-PDU"
        assoc.dicomnode_closed_by_node = reason
        calling = getattr(getattr(assoc.requestor, "primitive", None), "calling_ae_title", None)
        who = f"calling AE {calling.strip()!r} at " if calling else ""
        logging.getLogger("dicomnode.net.scp").warning(
            "connection from %s%s closed: %s: %d of %s byte(s) of a PDU body arrived in %.1f s; %s, its association "
            "slot is freed", who, getattr(assoc.requestor, "address", "?"), reason,
            read.received, read.declared if read.declared is not None else "?", waited, what)
        abort_pdu = A_ABORT_RQ()
        abort_pdu.source = 0x02
        abort_pdu.reason_diagnostic = 0x00
        try:
            read.raw.settimeout(1.0)
            read.raw.sendall(abort_pdu.encode())
        except (OSError, ValueError):
            pass
        self.event_queue.put("Evt17")  # transport closed: AA-4/AA-5 shut the socket and end the association

    def run_reactor(self) -> None:
        """pynetdicom 3.0's DUL loop, waiting in `_wait_for_work` where it slept `_run_loop_delay`."""
        try:
            self._reactor()
        finally:
            wake = getattr(self.assoc, "_dicomnode_wake", None)
            if wake is not None:
                wake.set()
            for fd in (self._wake_read, self._wake_write):
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _reactor(self) -> None:
        self._idle_timer.start()
        idle = False
        wake: threading.Event | None = getattr(self.assoc, "_dicomnode_wake", None)
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
                idle = True
            if idle:
                self._wait_for_work()
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception as exc:
                LOGGER.error("Exception in DUL.run(), aborting association")
                LOGGER.exception(exc)
                abort_pdu = A_ABORT_RQ()
                abort_pdu.source = 0x02
                abort_pdu.reason_diagnostic = 0x00
                self.socket.send(abort_pdu.encode())
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                self.assoc._kill = True
                self._kill_thread = True
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                idle = True
                continue
            self.state_machine.do_action(event)
            if wake is not None:
                wake.set()
            idle = False


class CappedDataSet(BytesIO):
    """The buffer a C-STORE request's data set is received into, holding at most `limit` bytes (0: no limit): past
    it the rest of the data set is counted, not kept (`received`, `over`), so that an instance too large for the
    node costs no more memory than the limit while its sender is still answered with a status (StorageSCP)."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit
        self.received = 0
        self.over = False

    def write(self, data) -> int:
        self.received += len(data)
        if self.over:
            return len(data)
        if self.limit and self.received > self.limit:
            self.over = True
            self.seek(0)
            self.truncate()
            return len(data)
        return super().write(data)


class CappedDIMSEServiceProvider(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider receiving each message's data set into a CappedDataSet of the association's
    `dicomnode_max_instance_bytes` (from its AE; 0 or unset: no limit)."""

    def receive_primitive(self, primitive) -> None:
        if self.message is None:
            self.message = DIMSEMessage()
            self.message.data_set = CappedDataSet(getattr(self.assoc.ae, "dicomnode_max_instance_bytes", 0) or 0)
        super().receive_primitive(primitive)


class EventDrivenAssociation(Association):
    """An acceptor `Association` whose reactor waits for the DUL's events instead of sleeping 1 ms per loop."""

    def __init__(self, ae, mode: str):
        super().__init__(ae, mode)
        self._dicomnode_wake = threading.Event()
        self.dul = EventDrivenDUL(self)
        # Association.__init__ gave its timeouts to the DUL it made: the new DUL's timers start at pynetdicom's
        # placeholders (ARTIM 30 s, idle 60 s) until they are given again
        self.acse_timeout = self.acse_timeout
        self.network_timeout = self.network_timeout
        self.dimse = CappedDIMSEServiceProvider(self)

    def kill(self) -> None:
        self._dicomnode_wake.set()
        super().kill()

    def _serve_request(self, msg, context_id: int) -> None:
        """pynetdicom's, except for a request the node does not serve arriving on a context it accepted (a C-FIND,
        C-MOVE, C-GET or N-* request under a private or storage SOP class): answered with status 0x0211
        "Unrecognized Operation" (PS3.7 Annex C) and one WARNING for the association's first, the association kept.
        pynetdicom found no service class for it, logged an ERROR asking the developer for register_uid() and
        aborted the association, whatever instances the sender had still to send on it."""
        if (isinstance(msg, (C_STORE, C_ECHO)) or not msg.is_valid_request or self._sent_release
                or context_id not in self._accepted_cx):
            super()._serve_request(msg, context_id)
            return
        rsp = type(msg)()
        rsp.MessageIDBeingRespondedTo = msg.MessageID
        class_uid = getattr(msg, "AffectedSOPClassUID", None) or getattr(msg, "RequestedSOPClassUID", None)
        instance_uid = getattr(msg, "AffectedSOPInstanceUID", None) or getattr(msg, "RequestedSOPInstanceUID", None)
        if class_uid:
            rsp.AffectedSOPClassUID = class_uid
        if instance_uid and hasattr(rsp, "AffectedSOPInstanceUID"):
            rsp.AffectedSOPInstanceUID = instance_uid
        rsp.Status = UNRECOGNIZED_OPERATION
        self.dicomnode_unrecognized = getattr(self, "dicomnode_unrecognized", 0) + 1
        if self.dicomnode_unrecognized == 1:
            calling = getattr(getattr(self.requestor, "primitive", None), "calling_ae_title", None)
            who = f"calling AE {calling.strip()!r} at " if calling else ""
            name = getattr(class_uid, "name", "") if class_uid else ""
            logging.getLogger("dicomnode.net.scp").warning(
                "association from %s%s: %s request (SOP class %s) answered 0x0211 Unrecognized Operation: this node "
                "only stores instances (C-STORE) and answers C-ECHO; the association goes on (later such requests on "
                "it are answered alike without a line)", who, getattr(self.requestor, "address", "?"), msg.msg_type,
                f"{name} ({class_uid})" if name and name != str(class_uid) else class_uid or "?")
        self.dimse.send_msg(rsp, context_id)

    def run_reactor(self) -> None:
        """pynetdicom's, then the connection's node.acse_timeout deadline is dropped however it ended (a peer that
        closed it before any PDU ends it without an association event)."""
        try:
            super().run_reactor()
        finally:
            settle = getattr(self._server, "association_settled", None)
            if settle is not None:
                settle(self)

    def _run_reactor(self) -> None:
        """pynetdicom 3.0's acceptor loop; an idle loop waits for the DUL's wake-up instead of `sleep(0.001)`."""
        self._is_paused = False
        wake = self._dicomnode_wake
        served = False
        while not self._kill:
            if not served:
                wake.wait(IDLE_WAIT)
            wake.clear()  # before looking: a wake-up set after this is seen by the next wait
            served = False

            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False

            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                self._serve_request(msg, context_id)
                served = True

            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                logging.getLogger("pynetdicom.assoc").info("Association Released")
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return

            if self.acse.is_aborted():
                log_msg = "Association Aborted"
                if self.acse.is_aborted("a-p-abort"):
                    log_msg += " (A-P-ABORT)"
                logging.getLogger("pynetdicom.assoc").info(log_msg)
                self.dul.receive_pdu(wait=False)
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return

            if not self.dul.is_alive():
                self.kill()
                return

            # a PDU being read has its own deadline (EventDrivenDUL._read_pdu_data), which closes the connection
            if self.dul.idle_timer_expired() and getattr(self.dul, "dicomnode_reading_since", None) is None:
                logging.getLogger("pynetdicom.assoc").error("Network timeout reached")
                self.dicomnode_idle_closed = True  # StorageSCP._handle_aborted: the node's close, not the peer's
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
                return


class EventDrivenRequestHandler(RequestHandler):
    """pynetdicom 3.0's request handler, creating `EventDrivenAssociation` acceptors."""

    def _create_association(self) -> Association:
        assoc = EventDrivenAssociation(self.ae, MODE_ACCEPTOR)
        assoc._server = self.server
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
        assoc.set_socket(AssociationSocket(assoc, client_socket=self.request))
        assoc.dicomnode_request = self.request
        assoc.acceptor.maximum_length = self.ae.maximum_pdu_size
        assoc.acceptor.ae_title = self.server.ae_title
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = self.ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = self.ae.implementation_version_name
        assoc.acceptor.supported_contexts = deepcopy(self.server.contexts)
        assoc.requestor.address_info = self.remote
        for event, handlers in self.server._handlers.items():
            if event.is_intervention and handlers:
                assoc.bind(event, *handlers)
            elif isinstance(event, evt.NotificationEvent):
                for handler, args in handlers:
                    assoc.bind(event, handler, args)
        return assoc


class HandshakeFailureLog:
    """One WARNING per refused TLS handshake naming the peer's address and why, at most one per address and reason
    per `interval` seconds and `budget` lines per `interval` in all: a port scanner, or a modality retrying every
    second with a certificate the node refuses, does not flood the journal, while a second device behind the same
    address failing for another reason is still said. The next line of an address and reason says how many were not
    logged; beyond `max_addresses` recent (address, reason) pairs the oldest are forgotten."""

    def __init__(self, interval: float = 60.0, budget: int = 100, max_addresses: int = 4096, clock=time.monotonic,
                 message: str = "TLS handshake from %s failed: %s%s", logger: logging.Logger = log):
        self.message = message
        self.logger = logger
        self.interval = interval
        self.budget = budget
        self.max_addresses = max_addresses
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], tuple[float, int]] = {}  # (address, reason) -> (last logged, not logged since)
        self._window = (float("-inf"), 0)  # (start of the current budget window, lines logged in it)
        self.refusals = 0

    def refused(self, address: str, reason: str, kind: str | None = None) -> bool:
        """Count one refused handshake from `address`; True when it was logged. `kind`: what makes two reasons
        the same for the rate limit (default: the reason itself)."""
        now = self._clock()
        with self._lock:
            self.refusals += 1
            key = (address, kind or reason)
            logged_at, unlogged = self._last.get(key, (float("-inf"), 0))
            start, lines = self._window
            if now - start >= self.interval:
                start, lines = now, 0
            if now - logged_at < self.interval or lines >= self.budget:
                self._last[key] = (logged_at, unlogged + 1)
                self._trim()
                return False
            self._window = (start, lines + 1)
            self._last.pop(key, None)  # re-inserted last: the dict's order is the order of the last lines
            self._last[key] = (now, 0)
            self._trim()
        more = f" ({unlogged} more like it from this address since the last such line, not logged)" if unlogged else ""
        self.logger.warning(self.message, address, reason, more)
        return True

    def _trim(self) -> None:
        while len(self._last) > self.max_addresses:
            self._last.pop(next(iter(self._last)))


#: the receiving process's refused-handshake log, shared by its servers
HANDSHAKE_FAILURES = HandshakeFailureLog()


#: the receiving process's log of connections closed before an association (host limit, ACSE deadline)
HOST_LIMIT_LOG = HandshakeFailureLog(message="connection from %s refused: %s%s",
                                    logger=logging.getLogger("dicomnode.net.scp"))


def _closed(sock) -> bool:
    try:
        return sock.fileno() < 0
    except Exception:  # noqa: BLE001 - a socket object torn down
        return True


def peer_address(assoc) -> str | None:
    try:
        return assoc.requestor.address
    except Exception:  # noqa: BLE001 - an association not set up far enough to know its peer
        return None


#: a connection that has not completed its association after this long holds its slot as a half-open one would
#: (a real A-ASSOCIATE-RQ is negotiated in milliseconds): /healthz is 503 only when every slot is taken and one of
#: them is held so
HALF_OPEN_AFTER_S = 1.0


def setting_up(assoc) -> bool:
    """Whether `assoc`'s connection has not completed its association yet (and has not ended either)."""
    return not any(getattr(assoc, flag, False) for flag in ("is_established", "is_aborted", "is_released",
                                                             "is_rejected", "dicomnode_ended"))


#: how much longer than node.acse_timeout a TLS connection's first deadline is: its handshake's own timeout, which
#: starts with the connection's thread, ends it first and says why
TLS_HANDSHAKE_SLACK_S = 1.0

#: how long a new connection waits for the association of the half-open one it had closed to end (_make_room)
EVICT_WAIT_S = 0.5

#: how long slot refusals are counted (StorageSCP.slot_summary: "refused in the last hour")
SLOT_REFUSALS_KEPT_S = 3600.0


def socket_of(assoc):
    """The accepted socket of `assoc`'s connection (kept by EventDrivenRequestHandler: pynetdicom forgets it once
    the connection is closed)."""
    request = getattr(assoc, "dicomnode_request", None)
    if request is not None:
        return request
    return getattr(getattr(getattr(assoc, "dul", None), "socket", None), "socket", None)


class TLSHandshakeInThread:
    """Server mixin: the TLS handshake runs on the new connection's own thread, and a refused one is logged.

    pynetdicom's `AssociationServer.get_request` wraps an accepted socket with the server's SSLContext, so the
    handshake ran on the one thread that accepts connections (`serve_forever`): a client that connected and sent
    nothing held every later connection up (the accepted socket has no timeout), and a failed handshake raised an
    ssl.SSLError that socketserver drops without a word (an OSError from get_request). Here `get_request` only
    wraps the socket; `process_request_thread` does the handshake within node.acse_timeout and, when it fails,
    logs the peer's address and OpenSSL's reason (`HandshakeFailureLog`) and closes the connection. Without TLS
    nothing changes but one isinstance check per connection.

    Before any of that, on the accepting thread, a connection from outside node.allowed_networks, or one over
    node.max_unassociated_per_host, is closed unread (`verify_request`): no thread, no TLS handshake, no association
    slot. A connection that has not completed its association within node.acse_timeout of its accept (of its TLS
    handshake, over TLS) is closed by one watchdog thread per server (`_watch_deadlines`); the deadline is dropped as
    soon as the association is accepted, rejected or aborted (`association_settled`). Where every node.max_associations
    slot is taken, a new connection first closes those that have gone longest without an association (`_make_room`).
    """

    handshake_failures: HandshakeFailureLog = HANDSHAKE_FAILURES
    #: most associations one source address may hold at once (node.max_associations_per_host; 0: no limit but
    #: node.max_associations); a connection over it is closed before it is read
    max_associations_per_host: int = 0
    #: most connections one source address may hold without a completed association (node.max_unassociated_per_host;
    #: 0: no limit); a connection over it is closed before it is read
    max_unassociated_per_host: int = 0
    #: node.allowed_networks as ip_network objects (empty: every address); a connection from outside them is
    #: closed as soon as it is accepted
    allowed_networks: tuple = ()

    def __init__(self, *args, **kwargs):
        #: connections whose association is not set up yet: socket -> (deadline, address, accepted), monotonic s
        self._deadlines: dict = {}
        self._deadline_lock = threading.Condition()
        #: time.monotonic() of each refusal for want of a slot within SLOT_REFUSALS_KEPT_S (note_slot_refusal)
        self._slot_refusals: deque = deque()
        self._watchdog: threading.Thread | None = None
        super().__init__(*args, **kwargs)

    def get_request(self):
        client_socket, address = self.socket.accept()
        # pynetdicom gives the listening socket AE.network_timeout so that a recv() on a connection does not block
        # forever, but accept() does not pass a socket's timeout on (the accepted one blocks): given here
        client_socket.settimeout(self.ae.network_timeout)
        if self.ssl_context:
            client_socket = self.ssl_context.wrap_socket(client_socket, server_side=True,
                                                         do_handshake_on_connect=False)
        return client_socket, address

    def verify_request(self, request, client_address) -> bool:
        """On the accepting thread, before the connection gets a thread: False (socketserver closes it) for an
        address outside node.allowed_networks, or one that already holds node.max_unassociated_per_host connections
        without a completed association, said at most once a minute per address and reason (`HOST_LIMIT_LOG`).
        Else the connection's node.acse_timeout deadline starts now (`_watch`): counted here, on the one accepting
        thread, a burst of connections cannot pass the limit before their threads have started."""
        address = client_address[0] if isinstance(client_address, tuple) else str(client_address)
        if self.allowed_networks:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                ip = None
            if ip is None or not any(ip in network for network in self.allowed_networks):
                HOST_LIMIT_LOG.refused(address, f"outside node.allowed_networks "
                                                f"{[str(n) for n in self.allowed_networks]}: connection closed unread",
                                       kind="allowed_networks")
                return False
        if self._over_unassociated_limit(address):
            return False
        # pynetdicom reads a PDU's header and body with blocking recv() calls once the socket is readable: a peer
        # that sends part of an A-ASSOCIATE-RQ and then nothing would hold the association slot for as long as the
        # connection stays open (its ARTIM timer is checked only between reads). The deadline closes it. A TLS
        # handshake has node.acse_timeout of its own (_tls_handshake, which says why it failed): the deadline starts
        # again after it.
        self._watch(request, address, slack=TLS_HANDSHAKE_SLACK_S if isinstance(request, ssl.SSLSocket) else 0.0)
        return True

    def process_request_thread(self, request, client_address) -> None:
        address = client_address[0] if isinstance(client_address, tuple) else str(client_address)
        if self._over_host_limit(address):
            self.shutdown_request(request)
            return
        self._make_room(request, address)
        if isinstance(request, ssl.SSLSocket):
            if not self._tls_handshake(request, client_address):
                self.shutdown_request(request)
                return
            self._watch(request, address)
        super().process_request_thread(request, client_address)

    def _make_room(self, request, address: str) -> None:
        """Where every node.max_associations slot is taken, close the connections that have gone without an
        association for over HALF_OPEN_AFTER_S (or half node.acse_timeout) since they could send their A-ASSOCIATE-RQ
        (accept, or the end of the TLS handshake; a sender sets its association up in milliseconds), so that `request` gets a slot: a flood of silent connections, which would otherwise hold every
        slot until node.acse_timeout and be opened again, cannot lock senders out. Waits up to EVICT_WAIT_S for
        their associations to end (pynetdicom counts them until then)."""
        limit = self.ae.maximum_associations
        if len(self.active_associations) < limit:
            return
        grace = min(HALF_OPEN_AFTER_S, self.ae.acse_timeout / 2)
        now = time.monotonic()
        holding = {socket_of(assoc) for assoc in self.active_associations}
        with self._deadline_lock:
            # only connections that hold a slot (a TLS one in its handshake holds none), aged from the start of their
            # association's wait (after the handshake over TLS: its deadline minus node.acse_timeout)
            stale = [(other, held_by, accepted) for other, (deadline, held_by, accepted) in self._deadlines.items()
                     if other is not request and other in holding and not _closed(other)
                     and now - (deadline - self.ae.acse_timeout) > grace]
            for other, _, _ in stale:
                del self._deadlines[other]
        closed = []
        for victim, victim_address, accepted in stale:
            try:
                victim.shutdown(socket.SHUT_RDWR)  # a recv() blocked on it returns: pynetdicom ends the association
            except OSError:
                continue
            closed.append(victim)
            self.note_slot_refusal()
            HOST_LIMIT_LOG.refused(victim_address, f"held {now - accepted:.1f} s without an association while every "
                                                   f"node.max_associations slot ({limit}) was taken: connection "
                                                   f"closed to let a new one in", kind="evicted")
        end = time.monotonic() + EVICT_WAIT_S
        while closed and time.monotonic() < end and any(socket_of(assoc) in closed
                                                        for assoc in self.active_associations):
            time.sleep(0.01)

    def _watch(self, request, address: str, slack: float = 0.0) -> None:
        """Close `request` unless its association is set up within node.acse_timeout (+ `slack`) from now; a
        connection watched again keeps the time it was accepted."""
        now = time.monotonic()
        with self._deadline_lock:
            accepted = self._deadlines.get(request, (None, None, now))[2]
            self._deadlines[request] = (now + self.ae.acse_timeout + slack, address, accepted)
            if self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch_deadlines, daemon=True,
                                                  name=f"dicomnode-acse-deadline-{self.server_address[1]}")
                self._watchdog.start()
            self._deadline_lock.notify()

    def association_settled(self, assoc) -> None:
        """The association on this connection was accepted, rejected or aborted: its deadline is dropped."""
        request = socket_of(assoc)
        if request is None:
            return
        with self._deadline_lock:
            self._deadlines.pop(request, None)

    def pending_deadlines(self) -> int:
        """How many connections are still watched for node.acse_timeout (the ones without an association yet)."""
        with self._deadline_lock:
            return len(self._deadlines)

    def unassociated_for(self, assoc) -> float | None:
        """Seconds since `assoc`'s connection was accepted while its association is not set up; None once it is
        (or when it ended). A connection past its deadline that is still held counts as node.acse_timeout."""
        if getattr(assoc, "is_established", False) or getattr(assoc, "is_released", False):
            return None
        request = socket_of(assoc)
        with self._deadline_lock:
            entry = self._deadlines.get(request)
        if entry is None:
            return float(self.ae.acse_timeout)
        return time.monotonic() - entry[2]

    def _watch_deadlines(self) -> None:
        """The one watchdog thread: closes each connection whose deadline passed (`_association_overdue`) and
        forgets closed ones; it ends when nothing is watched and is started again with the next connection."""
        while True:
            with self._deadline_lock:
                while True:
                    for request in [r for r in self._deadlines if _closed(r)]:
                        del self._deadlines[request]
                    if not self._deadlines:
                        self._watchdog = None
                        return
                    now = time.monotonic()
                    due = [(request, address) for request, (deadline, address, _) in self._deadlines.items()
                           if deadline <= now]
                    if due:
                        for request, _ in due:
                            del self._deadlines[request]
                        break
                    self._deadline_lock.wait(min(d for d, _, _ in self._deadlines.values()) - now)
            for request, address in due:
                try:
                    self._association_overdue(request, address)
                except Exception:  # noqa: BLE001 - one connection's trouble must not end the watchdog
                    logging.getLogger("dicomnode.net.scp").exception("closing overdue connection from %s", address)

    def _over_host_limit(self, address: str) -> bool:
        """Whether `address` already holds max_associations_per_host associations (said, at most once a minute per
        address, by `HOST_LIMIT_LOG`; counted in `slot_refusals`)."""
        limit = self.max_associations_per_host
        if not limit:
            return False
        held = [assoc for assoc in self.active_associations if peer_address(assoc) == address]
        if len(held) < limit:
            return False
        self.note_slot_refusal()
        pending = sum(1 for assoc in held if setting_up(assoc))
        HOST_LIMIT_LOG.refused(address, f"node.max_associations_per_host {limit} reached: {address} holds "
                                        f"{len(held)} association(s), {pending} of them not associated yet; "
                                        f"connection closed", kind="host limit")
        return True

    def _over_unassociated_limit(self, address: str) -> bool:
        """Whether `address` already holds max_unassociated_per_host connections whose association is not set up
        (the ones watched for node.acse_timeout), said and counted as `_over_host_limit` does."""
        limit = self.max_unassociated_per_host
        if not limit:
            return False
        with self._deadline_lock:
            pending = sum(1 for request, (_, held_by, _) in self._deadlines.items()
                          if held_by == address and not _closed(request))
        if pending < limit:
            return False
        self.note_slot_refusal()
        HOST_LIMIT_LOG.refused(address, f"node.max_unassociated_per_host {limit} reached: {address} holds {pending} "
                                        f"connection(s) without a completed association (each is closed after "
                                        f"node.acse_timeout); connection closed", kind="unassociated limit")
        return True

    def note_slot_refusal(self, now: float | None = None) -> None:
        """Count one connection or association refused for want of a slot (a limit above or node.max_associations),
        for `slot_refusals_within`."""
        with self._deadline_lock:
            self._slot_refusals.append(time.monotonic() if now is None else now)

    def slot_refusals_within(self, window: float, now: float | None = None) -> int:
        """How many connections or associations were refused for want of a slot in the last `window` seconds."""
        now = time.monotonic() if now is None else now
        with self._deadline_lock:
            while self._slot_refusals and now - self._slot_refusals[0] > SLOT_REFUSALS_KEPT_S:
                self._slot_refusals.popleft()
            return sum(1 for at in self._slot_refusals if now - at <= window)

    def _association_overdue(self, request, address: str) -> None:
        """node.acse_timeout after the connection: close it unless its association was set up (or has ended)."""
        for assoc in self.active_associations:
            if socket_of(assoc) is request:
                if assoc.is_established or assoc.is_rejected or assoc.is_aborted or assoc.is_released:
                    return
                break
        try:
            if request.fileno() < 0:  # closed already: the association ended
                return
            request.shutdown(socket.SHUT_RDWR)  # a recv() blocked on it returns: pynetdicom ends the association
        except OSError:
            return
        HOST_LIMIT_LOG.refused(address, f"no complete A-ASSOCIATE-RQ within node.acse_timeout "
                                        f"({self.ae.acse_timeout:g} s): connection closed", kind="acse timeout")

    def _tls_handshake(self, request: ssl.SSLSocket, client_address) -> bool:
        try:
            request.settimeout(self.ae.acse_timeout)
            request.do_handshake()
            request.settimeout(self.ae.network_timeout)  # as accepted (get_request)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError; ValueError: the socket was closed
            address = client_address[0] if isinstance(client_address, tuple) else str(client_address)
            self.handshake_failures.refused(address, describe_server_handshake_error(exc))
            return False
        return True


class PollingServer(TLSHandshakeInThread, ThreadedAssociationServer):
    """pynetdicom's own threaded association server (where `EVENT_DRIVEN` is off), the TLS handshake per thread."""


class EventDrivenServer(TLSHandshakeInThread, ThreadedAssociationServer):
    """pynetdicom's threaded association server with event-driven acceptors (`AE.make_server(server_class=…)`)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("request_handler", EventDrivenRequestHandler)
        super().__init__(*args, **kwargs)


class _ReusePort:
    """Binds the listening socket with SO_REUSEPORT: several processes of the same user listen on one port and
    Linux spreads new connections over them (pynetdicom's `server_bind` sets only SO_REUSEADDR)."""

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


class SharedPortServer(_ReusePort, EventDrivenServer):
    """`EventDrivenServer` on a port shared with the node's other receiving processes."""


class SharedPortPollingServer(_ReusePort, PollingServer):
    """pynetdicom's own server on a shared port (where `EVENT_DRIVEN` is off)."""
