"""The Storage SCU: one association per destination batch, every instance's C-STORE status checked."""
from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pydicom import dcmread
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.sop_class import Verification
from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS

from dicomnode.net.scp import set_tcp_nodelay
from dicomnode.net.tls import describe_client_handshake_error
from dicomnode.observe import class_uid, class_uids, sop_class_name, transfer_syntax_name

log = logging.getLogger("dicomnode.net.scu")


@dataclass
class SendResult:
    path: Path
    ok: bool
    status: int | None  # the destination's C-STORE status; None when it gave none (timeout, abort, not sent)
    error: str = ""
    #: the destination will never take it as it is (it accepts no presentation context for its SOP class or
    #: transfer syntax, or answered a permanent failure status: permanent_status): sending it again cannot help
    #: until the destination's configuration (or the object) changes
    permanent: bool = False
    #: False: never put on the wire (the association ended before its turn): the destination did not refuse it,
    #: so it is no failed attempt of its own
    transmitted: bool = True
    #: the file could not be read as a DICOM object to send (read_for_sending): never put on the wire, the
    #: destination not asked; `permanent` when its content is at fault, not the reading (an OSError)
    unreadable: bool = False
    #: stored, but the destination answered a warning status (warning_status), in words (warning_text); '' otherwise
    warning: str = ""
    #: no response within the send timeout (the destination is slow or hung): it may have stored the instance
    timed_out: bool = False
    #: on the wire when this node aborted the association (SendCancel.abort: a stop that could wait no longer):
    #: neither acknowledged nor refused, the destination may hold it
    abandoned: bool = False


#: why the instances after the C-STORE in flight were not sent when SendCancel.stop ended the association
STOPPING = "this node is stopping"

#: the error of the instance whose C-STORE was in flight when SendCancel.abort ended the association
ABANDONED = ("not answered: this node stopped and aborted the association while the destination had not answered "
             "the C-STORE; it may have stored the instance")


class SendCancel:
    """Ends a send_files association early, from another thread (a stopping dispatcher). After `stop()` no further
    C-STORE is sent: the one in flight is answered first, then the association is released and the instances not
    sent are reported not transmitted (their error names STOPPING). `abort()` ends it at once with an A-ABORT: the
    C-STORE in flight is reported `abandoned` (the destination may hold it), what was acknowledged before stays
    acknowledged."""

    def __init__(self):
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._assoc = None
        self.aborted = False

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()

    def abort(self) -> bool:
        """A-ABORT the association in use, if one is (the stop is set too). Returns whether one was aborted."""
        self._stop.set()
        with self._lock:
            self.aborted = True
            assoc = self._assoc
        if assoc is None or not assoc.is_established:
            return False
        assoc.abort()
        # the C-STORE waiting for its response would wait out the DIMSE timeout: an empty message wakes it
        assoc.dimse.msg_queue.put((None, None))
        return True

    def attach(self, assoc) -> None:
        """send_files: the association is established (aborted at once where abort() came first)."""
        with self._lock:
            self._assoc = assoc
            aborted = self.aborted
        if aborted and assoc.is_established:
            assoc.abort()

    def detach(self) -> None:
        with self._lock:
            self._assoc = None


class AssociationFailed(ConnectionError):
    """The destination refused or could not be reached; nothing was sent.

    `permanent`: the destination rejected the association as "rejected-permanent" (A-ASSOCIATE-RJ result 1, PS3.8
    7.1.1.7): it will refuse it again until its configuration changes, so sending again later cannot help (a
    "rejected-transient" answer, a refused connection or a timeout are worth retrying)."""

    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


#: A-ASSOCIATE-RJ result "rejected-permanent" (PS3.8 7.1.1.7; 2 is "rejected-transient")
REJECTED_PERMANENT = 0x01


def rejected_permanently(assoc) -> bool:
    """Whether the peer rejected the association request as rejected-permanent (not transient, not unreachable)."""
    if not assoc.is_rejected:
        return False
    try:
        return int(assoc.acceptor.primitive.result) == REJECTED_PERMANENT
    except (AttributeError, TypeError, ValueError):
        return False


def permanent_status(status: int | None) -> bool:
    """Whether a C-STORE failure status says the destination will never take the object as it is (PS3.4 Annex B
    B.2.3, PS3.7 Annex C): 0xA9xx "Data Set Does Not Match SOP Class", 0xCxxx "Cannot Understand", 0x0122 "SOP Class
    Not Supported", 0x0124 "Not Authorized". 0xA7xx "Out of Resources" and every other failure are transient."""
    if status is None:
        return False
    return (status & 0xFF00) == 0xA900 or (status & 0xF000) == 0xC000 or status in (0x0122, 0x0124)


def why_not_established(assoc, host: str, port: int, timeout: float = 5.0, ssl_context=None) -> str:
    """Why an association was not established, in an admin's terms: the peer's A-ASSOCIATE-RJ reason (PS3.8
    9.3.4), or the operating system's answer to a plain TCP connection (refused, timed out, no route), or, with
    `ssl_context`, why the TLS handshake fails (`tls_handshake_problem`), or an abort after the connection was
    accepted."""
    if assoc.is_rejected:
        primitive = assoc.acceptor.primitive
        try:
            return f"rejected by the peer: {primitive.reason_str} ({primitive.result_str}, {primitive.source_str})"
        except (AttributeError, KeyError, ValueError):
            return "rejected by the peer"
    try:
        with socket.create_connection((host, port), timeout=min(timeout, 5.0)):
            pass
    except OSError as exc:
        return f"cannot connect: {exc.strerror or exc}"
    if ssl_context is not None:
        problem = tls_handshake_problem(ssl_context, host, port, timeout)
        if problem is not None:
            return f"TLS handshake failed: {problem}"
        return ("aborted after the TLS handshake succeeded (the peer dropped the association request: its DICOM "
                "side refused it, or it is not a DICOM peer)")
    return ("aborted after the TCP connection was accepted (not a DICOM peer on that port, a TLS mismatch, or the "
            "peer dropped the association request)")


def _syntax_label(uid: str) -> str:
    """A transfer syntax in a list: its name ('JPEG-LS Lossless Image Compression'), or 'transfer syntax 1.2.3...'
    where pydicom knows no name (kept readable in the logs: observe.class_uid)."""
    text = class_uid(uid)
    name = UID(text).name
    return name if name and name != text else f"transfer syntax {text}"


#: how an object's Modality is named to an admin where the modality alone is unclear (DOC: an encapsulated PDF)
_KIND_BY_MODALITY = {"DOC": "PDF"}


def describe_object(path: Path) -> str:
    """What a result object is, for an admin reading a dead letter or a pending send: its kind (Modality, and the
    SOP class in short) and series number, e.g. 'SEG (Segmentation) series 9001', 'PDF (Encapsulated PDF) series
    9200'; '' where the file cannot be read (purged, or not DICOM)."""
    try:
        header = dcmread(path, stop_before_pixels=True, specific_tags=["Modality", "SeriesNumber", "SOPClassUID"])
    except Exception:  # noqa: BLE001 - a description is not worth an error: the SOP Instance UID still names it
        return ""
    modality = str(header.get("Modality", "") or "").strip()
    sop_class = str(header.get("SOPClassUID", "") or "")
    name = UID(sop_class).name if sop_class else ""
    short = name.replace(" Storage", "").replace(" Image", "").strip() if name and name != sop_class else ""
    kind = _KIND_BY_MODALITY.get(modality, modality) or short or "object"
    if short and short != kind:
        kind += f" ({short})"
    number = header.get("SeriesNumber", None)
    return f"{kind} series {number}" if number not in (None, "") else kind


def status_meaning(status: int) -> str:
    """A C-STORE status in PS3.4 B.2.3 / PS3.7 C terms ('Refused: Out of Resources'), or 'unknown status'."""
    return STORAGE_SERVICE_CLASS_STATUS.get(status, ("", "unknown status"))[1]


def warning_status(status: int | None) -> bool:
    """Whether a C-STORE status is a warning (PS3.7 C.1: 0x0001 and 0xBxxx; PS3.4 B.2.3 names 0xB000 Coercion of
    Data Elements, 0xB006 Elements Discarded, 0xB007 Data Set Does Not Match SOP Class): the instance was stored,
    perhaps not as sent."""
    return status is not None and (status == 0x0001 or (status & 0xF000) == 0xB000)


def warning_text(status: int, comment: str = "") -> str:
    """A warning status the destination returned: 'status 0xB000 (Warning: Coercion of Data Elements): comment';
    one PS3.4 B.2.3 does not define for C-STORE is named a warning all the same."""
    meaning = status_meaning(status)
    if meaning == "unknown status":
        meaning = "Warning: not defined for C-STORE (PS3.4 B.2.3), stored"
    elif not meaning.startswith("Warning"):
        meaning = f"Warning: {meaning}"
    return f"status 0x{status:04X} ({meaning})" + (f": {comment}" if comment else "")


def refusal_text(status: int, comment: str = "") -> str:
    """A failure status the destination returned: 'refused: status 0xA700 (Refused: Out of Resources): comment'."""
    return f"refused: status 0x{status:04X} ({status_meaning(status)})" + (f": {comment}" if comment else "")


def carries(accepted_syntax: str, transfer_syntax: str) -> bool:
    """Whether a presentation context accepted with `accepted_syntax` can carry an object encoded in
    `transfer_syntax`, as pynetdicom decides when it sends: the same syntax, or two uncompressed syntaxes of the same
    byte order (it converts Implicit <-> Explicit VR and Deflated <-> inflated Little Endian; nothing converts to or
    from Big Endian or a compressed syntax)."""
    accepted, syntax = UID(accepted_syntax), UID(transfer_syntax)
    if accepted == syntax:
        return True
    if not (accepted.is_transfer_syntax and syntax.is_transfer_syntax):  # a private syntax: only itself carries it
        return False
    return not (accepted.is_compressed or syntax.is_compressed) and accepted.is_little_endian == syntax.is_little_endian


def context_refusal(assoc, sop_class: str, transfer_syntax: str | None = None) -> str | None:
    """Why the negotiated association has no presentation context for `sop_class` (in `transfer_syntax`), as a
    permanent refusal an admin can act on, naming the SOP class, the transfer syntax and what to configure; None when
    it has one (or none was proposed). An object whose transfer syntax no accepted context carries (`carries`: a
    compressed or Big Endian object the destination takes only uncompressed little endian) is refused here, before
    pynetdicom would fail to send it."""
    accepted = [cx for cx in assoc.accepted_contexts if cx.abstract_syntax == sop_class]
    if not accepted:
        rejected = [cx for cx in assoc.rejected_contexts if cx.abstract_syntax == sop_class]
        if not rejected:
            return None
        if all(cx.result == 0x04 for cx in rejected):
            offered = ", ".join(dict.fromkeys(_syntax_label(t) for cx in rejected for t in cx.transfer_syntax))
            return (f"the destination accepts {sop_class_name(sop_class)} in none of the transfer syntaxes offered "
                    f"({offered}): configure it to accept one of them or stop sending it")
        return (f"the destination accepts no presentation context for {sop_class_name(sop_class)}: configure it to "
                f"accept that SOP class or stop sending it")
    if transfer_syntax and not any(carries(cx.transfer_syntax[0], transfer_syntax) for cx in accepted):
        taken = ", ".join(dict.fromkeys(_syntax_label(t) for cx in accepted for t in cx.transfer_syntax))
        return (f"the destination accepts {sop_class_name(sop_class)} only as {taken}, not as "
                f"{transfer_syntax_name(transfer_syntax)} in which this object is stored (the node does not transcode "
                f"when it sends; the objects it creates are Explicit VR Little Endian): configure it to accept "
                f"{_syntax_label(transfer_syntax)} or stop sending it")
    return None


def _none_accepted(assoc) -> bool:
    """The destination accepted the association request but none of its presentation contexts (pynetdicom then
    aborts the association itself): not a network or TLS problem."""
    return (not assoc.is_established and not assoc.is_rejected and bool(assoc.rejected_contexts)
            and not assoc.accepted_contexts)


#: the start of the error of a C-STORE that got no response within the send timeout (_PeerWatch.no_response)
NO_RESPONSE = "no response within "


class _PeerWatch:
    """What happened on the connection while a C-STORE waited (pynetdicom returns an empty response for a DIMSE
    timeout, an A-ABORT from the peer and a dropped connection alike)."""

    def __init__(self):
        self.abort: A_ABORT_RQ | None = None  # the peer's A-ABORT
        self.closed_at: float | None = None  # time.monotonic() when the connection closed

    def handlers(self) -> list:
        return [(evt.EVT_PDU_RECV, self._pdu), (evt.EVT_CONN_CLOSE, self._closed)]

    def _pdu(self, event) -> None:
        if isinstance(event.pdu, A_ABORT_RQ) and self.abort is None:
            self.abort = event.pdu

    def _closed(self, event) -> None:
        if self.closed_at is None:
            self.closed_at = time.monotonic()

    def no_response(self, started: float, timeout: float) -> tuple[str, str]:
        """Why the C-STORE sent at `started` (time.monotonic()) got no response, in full and in short (for the
        instances not sent after it); never a status code. The full text of a timeout starts with NO_RESPONSE."""
        if self.abort is not None:
            try:
                why = f"{self.abort.source_str}: {self.abort.reason_str}"
            except (AttributeError, KeyError, ValueError):
                why = "no reason given"
            return (f"the destination aborted the association (A-ABORT, {why}) instead of answering the C-STORE",
                    "the destination aborted it")
        if self.closed_at is not None and self.closed_at - started < timeout * 0.9:
            return ("the connection was lost before the destination answered the C-STORE (closed by the destination "
                    "or dropped by the network)", "the connection was lost")
        if time.monotonic() - started >= timeout * 0.9:
            return (f"{NO_RESPONSE}{timeout:g} s: the destination accepted the association but did not answer "
                    f"the C-STORE (hung?); it may have stored the instance",
                    f"no response within {timeout:g} s to the previous instance")
        return "the association ended before the destination answered the C-STORE", ""


#: how long the TLS probe waits, after a handshake that looked fine, for the peer to refuse our certificate
#: (TLS 1.3: a server checks the client's certificate after the client finished its side of the handshake)
CLIENT_CERTIFICATE_VERDICT_SECONDS = 2.0


def tls_handshake_problem(ssl_context: ssl.SSLContext, host: str, port: int, timeout: float = 5.0) -> str | None:
    """Why a TLS handshake with host:port fails with `ssl_context`, in OpenSSL's words (pynetdicom logs the
    ssl.SSLError of a failed association at most, and the association only says "aborted"): one more connection,
    made only after an association failed. None when the handshake succeeds and the peer does not refuse this
    node's certificate within CLIENT_CERTIFICATE_VERDICT_SECONDS."""
    try:
        raw = socket.create_connection((host, port), timeout=min(timeout, 5.0))
    except OSError as exc:
        return f"cannot connect: {exc.strerror or exc}"
    with raw:
        try:
            with ssl_context.wrap_socket(raw, server_hostname=host) as tls:
                tls.settimeout(min(timeout, CLIENT_CERTIFICATE_VERDICT_SECONDS))
                try:
                    data = tls.recv(1)  # a DICOM SCP sends nothing before the A-ASSOCIATE-RQ: only an alert comes
                except (TimeoutError, BlockingIOError):
                    return None
                if not data:
                    return "the destination closed the connection right after the TLS handshake"
                return None
        except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
            return describe_client_handshake_error(exc)
        except OSError as exc:
            return exc.strerror or str(exc)


def _associate(ae: AE, host: str, port: int, ae_title: str, **kwargs):
    """ae.associate, with a host name that does not resolve raised as AssociationFailed (pynetdicom resolves it
    before it tries to connect, and lets socket.gaierror through)."""
    try:
        return ae.associate(host, port, ae_title=ae_title, **kwargs)
    except (socket.gaierror, UnicodeError) as exc:  # UnicodeError: not a valid host name (e.g. an empty label)
        reason = exc.strerror if isinstance(exc, socket.gaierror) else "not a valid host name"
        raise AssociationFailed(f"association with {ae_title}@{host}:{port} failed: "
                                f"host {host} does not resolve ({reason})") from None


def read_for_sending(path: Path):
    """The data set of `path` with what a C-STORE needs (SOP Class and Instance UIDs, a transfer syntax in its
    file meta). Raises OSError when the file cannot be read, ValueError (naming what) when its content is no
    such object (not DICOM, cut short, those elements missing)."""
    try:
        dataset = dcmread(path, stop_before_pixels=False)
    except OSError:
        raise
    except Exception as exc:  # InvalidDicomError, or whatever a file cut short makes pydicom raise
        raise ValueError(f"{type(exc).__name__}: {exc}") from exc
    missing = [name for name, present in (
        ("SOPClassUID", "SOPClassUID" in dataset), ("SOPInstanceUID", "SOPInstanceUID" in dataset),
        ("TransferSyntaxUID", "TransferSyntaxUID" in getattr(dataset, "file_meta", {})))
        if not present]
    if missing:
        raise ValueError(f"no {', '.join(missing)} (not DICOM, or cut short)")
    return dataset


def unreadable_result(path: Path, exc: Exception) -> SendResult:
    """The failed SendResult of a file read_for_sending could not read: 'cannot be read: ...', nothing sent."""
    why = (exc.strerror or str(exc)) if isinstance(exc, OSError) else str(exc)
    return SendResult(path, False, None, f"cannot be read: {why}", permanent=not isinstance(exc, OSError),
                      transmitted=False, unreadable=True)


def _successful(status: int | None) -> bool:
    # 0x0000 success; a warning (0xB000, 0xB006, 0xB007, any 0xBxxx or 0x0001): the instance was stored (PS3.4 B.2.3)
    return status == 0x0000 or warning_status(status)


def send_files(
    paths: list[Path],
    ae_title: str,
    host: str,
    port: int,
    calling_ae_title: str = "DICOMNODE",
    timeout: float = 30.0,
    ssl_context=None,
    on_result: Callable[[int, SendResult], None] | None = None,
    on_send: Callable[[int], None] | None = None,
    cancel: SendCancel | None = None,
) -> list[SendResult]:
    """C-STORE every file over one association; raises AssociationFailed when none can be opened (the peer
    refused, cannot be reached, or its host name does not resolve). A file that cannot be read (read_for_sending)
    fails alone (SendResult.unreadable) while the others are sent; with none readable no association is opened.

    `on_result(index, result)`: after each response (or failure) of the file `paths[index]`, before the next is
    sent, so that the caller can record an acknowledged instance at once (a crash mid-association then resends
    only what was not recorded). `on_send(index)`: just before the C-STORE of `paths[index]` goes on the wire, so
    that the caller can record the attempt first (after a crash, an item whose response was never recorded is then
    known to have been in flight: the destination may hold it); an exception it raises ends the association, that
    file not sent. `cancel`: ends the association early from another thread (SendCancel: after the C-STORE in
    flight, or at once with an A-ABORT)."""
    headers: list[tuple[Path, object]] = []  # (path, data set, or the exception that kept it from being read)
    for path in paths:
        try:
            headers.append((path, read_for_sending(path)))
        except (OSError, ValueError) as exc:
            headers.append((path, exc))
    readable = [(path, dataset) for path, dataset in headers if not isinstance(dataset, Exception)]
    results: list[SendResult] = []

    def report(result: SendResult) -> None:
        results.append(result)
        if on_result is not None:
            on_result(len(results) - 1, result)

    def report_unreadable() -> None:
        """The unreadable files up to the next readable one, in their place among `paths`."""
        while len(results) < len(headers) and isinstance(headers[len(results)][1], Exception):
            path, exc = headers[len(results)]
            report(unreadable_result(path, exc))

    if not readable:
        report_unreadable()
        return results
    ae = AE(ae_title=calling_ae_title)
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    contexts = set()
    for _, dataset in readable:
        transfer_syntax = dataset.file_meta.TransferSyntaxUID
        contexts.add((dataset.SOPClassUID, transfer_syntax))
    for sop_class, transfer_syntax in sorted(contexts):
        syntaxes = [transfer_syntax] + [t for t in (ExplicitVRLittleEndian, ImplicitVRLittleEndian) if t != transfer_syntax]
        ae.add_requested_context(sop_class, syntaxes)
        class_uids.add(sop_class, *syntaxes)  # classes and syntaxes: readable in any line about them
    if len(ae.requested_contexts) > 128:
        raise ValueError("more than 128 presentation contexts in one batch; split it")
    tls_args = (ssl_context, host) if ssl_context is not None else None
    watch = _PeerWatch()
    assoc = _associate(ae, host, port, ae_title, evt_handlers=[(evt.EVT_CONN_OPEN, set_tcp_nodelay), *watch.handlers()],
                       tls_args=tls_args)
    if not assoc.is_established:
        if not _none_accepted(assoc):
            raise AssociationFailed(f"association with {ae_title}@{host}:{port} failed: "
                                    f"{why_not_established(assoc, host, port, timeout, ssl_context)}",
                                    permanent=rejected_permanently(assoc))
        for path, dataset in readable:  # a permanent refusal of each object, not a connection problem
            report_unreadable()
            why = context_refusal(assoc, dataset.SOPClassUID, dataset.file_meta.TransferSyntaxUID)
            report(SendResult(path, False, None, why or "the destination accepted no presentation context",
                              permanent=True))
        report_unreadable()
        return results
    ended = ""  # why the association ended before the rest was sent
    if cancel is not None:
        cancel.attach(assoc)
    try:
        for path, dataset in readable:
            if cancel is not None and cancel.stopping:
                ended = STOPPING
                break
            report_unreadable()
            refusal = context_refusal(assoc, dataset.SOPClassUID, dataset.file_meta.TransferSyntaxUID)
            if refusal is not None:  # refused for good; the batch's other objects are still sent
                report(SendResult(path, False, None, refusal, permanent=True))
                continue
            if on_send is not None:
                on_send(len(results))
            started = time.monotonic()
            try:
                response = assoc.send_c_store(dataset)
            except Exception as exc:  # e.g. a data set that cannot be encoded
                if cancel is not None and cancel.aborted:  # aborted between the stop check and the C-STORE
                    report(SendResult(path, False, None, ABANDONED, abandoned=True))
                    ended = STOPPING
                    break
                report(SendResult(path, False, None, str(exc)))
                continue
            if not response or "Status" not in response:  # a timeout, an abort or a lost connection: no status
                if cancel is not None and cancel.aborted:
                    report(SendResult(path, False, None, ABANDONED, abandoned=True))
                    ended = STOPPING
                    break
                why, ended = watch.no_response(started, timeout)
                report(SendResult(path, False, None, why, timed_out=why.startswith(NO_RESPONSE)))
                break
            status = int(response.Status)
            ok = _successful(status)
            comment = str(response.get("ErrorComment", "") or "").strip()
            report(SendResult(path, ok, status, "" if ok else refusal_text(status, comment),
                              permanent=not ok and permanent_status(status),
                              warning=warning_text(status, comment) if warning_status(status) else ""))
            if not assoc.is_established:
                ended = "the destination ended the association"
                break
        report_unreadable()
    finally:
        if assoc.is_established:
            assoc.release()
        if cancel is not None:
            cancel.detach()
    for path, dataset in headers[len(results):]:
        results.append(unreadable_result(path, dataset) if isinstance(dataset, Exception) else
                       SendResult(path, False, None, "association ended before this instance was sent"
                                  + (f" ({ended})" if ended else ""), transmitted=False))
    return results


def echo(ae_title: str, host: str, port: int, calling_ae_title: str = "DICOMNODE", timeout: float = 10.0,
         ssl_context=None) -> int | None:
    """C-ECHO (Verification SOP Class, PS3.7 9.1.5) over one association: the peer's status (0x0000 success), or
    None when the association was established but no response came back. Raises AssociationFailed, naming why, when
    no association could be opened (why_not_established, or a host name that does not resolve)."""
    ae = AE(ae_title=calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(Verification)
    assoc = _associate(ae, host, port, ae_title, tls_args=(ssl_context, host) if ssl_context else None)
    if not assoc.is_established:
        raise AssociationFailed(f"association with {ae_title}@{host}:{port} failed: "
                                f"{why_not_established(assoc, host, port, timeout, ssl_context)}")
    try:
        response = assoc.send_c_echo()
        return int(response.Status) if response and "Status" in response else None
    finally:
        if assoc.is_established:
            assoc.release()
