"""The Storage SCU: one association per destination batch, every instance's C-STORE status checked."""
from __future__ import annotations

import logging
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from dicomnode.net.scp import set_tcp_nodelay
from dicomnode.net.tls import describe_client_handshake_error

log = logging.getLogger("dicomnode.net.scu")


@dataclass
class SendResult:
    path: Path
    ok: bool
    status: int | None
    error: str = ""


class AssociationFailed(ConnectionError):
    """The destination refused or could not be reached; nothing was sent."""


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


def _successful(status: int | None) -> bool:
    # 0x0000 success; 0xB000, 0xB007, 0xB006 warnings: the instance was stored (PS3.4 B.2.3)
    return status is not None and (status == 0x0000 or status in (0xB000, 0xB006, 0xB007))


def send_files(
    paths: list[Path],
    ae_title: str,
    host: str,
    port: int,
    calling_ae_title: str = "DICOMNODE",
    timeout: float = 30.0,
    ssl_context=None,
    on_result: Callable[[int, SendResult], None] | None = None,
) -> list[SendResult]:
    """C-STORE every file over one association; raises AssociationFailed when none can be opened (the peer
    refused, cannot be reached, or its host name does not resolve).

    `on_result(index, result)`: after each response (or failure) of the file `paths[index]`, before the next is
    sent, so that the caller can record an acknowledged instance at once (a crash mid-association then resends
    only what was not recorded)."""
    headers = []
    for path in paths:
        dataset = dcmread(path, stop_before_pixels=False)
        headers.append((path, dataset))
    ae = AE(ae_title=calling_ae_title)
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    contexts = set()
    for _, dataset in headers:
        transfer_syntax = dataset.file_meta.TransferSyntaxUID
        contexts.add((dataset.SOPClassUID, transfer_syntax))
    for sop_class, transfer_syntax in sorted(contexts):
        syntaxes = [transfer_syntax] + [t for t in (ExplicitVRLittleEndian, ImplicitVRLittleEndian) if t != transfer_syntax]
        ae.add_requested_context(sop_class, syntaxes)
    if len(ae.requested_contexts) > 128:
        raise ValueError("more than 128 presentation contexts in one batch; split it")
    tls_args = (ssl_context, host) if ssl_context is not None else None
    assoc = _associate(ae, host, port, ae_title, evt_handlers=[(evt.EVT_CONN_OPEN, set_tcp_nodelay)],
                       tls_args=tls_args)
    if not assoc.is_established:
        raise AssociationFailed(f"association with {ae_title}@{host}:{port} failed: "
                                f"{why_not_established(assoc, host, port, timeout, ssl_context)}")
    results: list[SendResult] = []
    try:
        for path, dataset in headers:
            try:
                response = assoc.send_c_store(dataset)
            except Exception as exc:  # e.g. no accepted context for this SOP class
                results.append(SendResult(path, False, None, str(exc)))
                if on_result is not None:
                    on_result(len(results) - 1, results[-1])
                continue
            status = int(response.Status) if response and "Status" in response else None
            comment = str(response.get("ErrorComment", "")) if response else "no response (association lost)"
            ok = _successful(status)
            results.append(SendResult(path, ok, status, "" if ok else f"status 0x{status or 0:04X} {comment}".strip()))
            if on_result is not None:
                on_result(len(results) - 1, results[-1])
            if not assoc.is_established:
                break
    finally:
        if assoc.is_established:
            assoc.release()
    for path, _ in headers[len(results):]:
        results.append(SendResult(path, False, None, "association ended before this instance was sent"))
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
