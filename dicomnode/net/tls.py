"""DICOM TLS (PS3.15 Annex B.9, BCP 195 profile): SSL contexts for the SCP and for each destination's SCU, and
the words for what goes wrong with them (unusable files, refused handshakes, certificates near their end)."""
from __future__ import annotations

import datetime as dt
import os
import re
import ssl
import tempfile
from pathlib import Path
from typing import NamedTuple

from dicomnode.config import DestinationConfig, TLSConfig

#: BCP 195 (RFC 7525 section 4.2) recommended suites for TLS 1.2: forward secrecy and AEAD only.
#: TLS 1.3 suites (all AEAD with forward secrecy) are configured by OpenSSL separately and all allowed.
BCP195_CIPHERS = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "DHE-RSA-AES128-GCM-SHA256",
    "DHE-RSA-AES256-GCM-SHA384",
])

#: a private key's passphrase comes from this environment variable (or a file named by KEY_PASSWORD_FILE_ENV);
#: never from the config file and never logged
KEY_PASSWORD_ENV = "DICOMNODE_TLS_KEY_PASSWORD"
KEY_PASSWORD_FILE_ENV = "DICOMNODE_TLS_KEY_PASSWORD_FILE"

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class TLSConfigurationError(ValueError):
    """A certificate, key or CA file that cannot be used; the message names the file and why, `key` the config key
    path it came from (None: the section as a whole, e.g. a certificate and key that do not match), named first
    in the message; `detail` is the message without it."""

    def __init__(self, detail: str, key: str | None = None):
        super().__init__(f"{key}: {detail}" if key else detail)
        self.detail = detail
        self.key = key


def _key_password() -> str | None:
    file = os.environ.get(KEY_PASSWORD_FILE_ENV)
    if file:
        return Path(file).read_text(encoding="utf-8").rstrip("\r\n")
    return os.environ.get(KEY_PASSWORD_ENV) or None


def _harden(context: ssl.SSLContext, minimum_version: str) -> ssl.SSLContext:
    if minimum_version not in _VERSIONS:
        raise TLSConfigurationError(f"minimum TLS version {minimum_version!r} is not one of {sorted(_VERSIONS)}")
    context.minimum_version = _VERSIONS[minimum_version]
    context.set_ciphers(BCP195_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    return context


def _load_chain(context: ssl.SSLContext, certificate: Path | None, private_key: Path | None, what: str,
                keys: tuple[str, str], problems: list[TLSConfigurationError] | None) -> None:
    """Load the certificate and its key; a missing file is named by its config key (`keys`: certificate's, key's):
    both, where both are missing and `problems` collects them, else the first raised."""
    missing = [TLSConfigurationError("not configured" if path is None else f"{path} does not exist or is not a file",
                                     key)
               for path, key in zip((certificate, private_key), keys) if path is None or not Path(path).is_file()]
    if missing and problems is None:
        raise missing[0]
    if missing:
        problems.extend(missing)
        return
    try:
        context.load_cert_chain(certificate, private_key, password=_key_password())
    except ssl.SSLError as exc:  # the message never contains the password
        raise TLSConfigurationError(f"{what} certificate {certificate} / key {private_key}: {exc.reason or exc}") from None


#: the config keys of node.tls's certificate and private key
_SERVER_KEYS = ("node.tls.certificate", "node.tls.private_key")


def _openssl_words(exc: ssl.SSLError) -> str:
    """OpenSSL's own short reason ("PEM lib", "NO_CERTIFICATE_OR_CRL_FOUND"), without Python's source location."""
    if exc.reason:
        return exc.reason
    text = re.sub(r"\s*\(_ssl\.c:\d+\)\s*$", "", str(exc.args[1] if len(exc.args) > 1 else exc))
    return re.sub(r"^\[[^\]]*\]\s*", "", text) or type(exc).__name__


def _load_ca(context: ssl.SSLContext, path: Path | None, key: str) -> None:
    """The CA certificates (PEM) that verify the peer; a file OpenSSL cannot read as such is named with its key."""
    if path is None or not Path(path).is_file():
        raise TLSConfigurationError(f"{path} does not exist or is not a file", key)
    ca = Path(path)
    try:
        context.load_verify_locations(cafile=str(ca))
    except ssl.SSLError as exc:
        words = _openssl_words(exc)
        if exc.reason == "NO_CERTIFICATE_OR_CRL_FOUND":
            why = "no PEM certificate found in it (a CA file holds '-----BEGIN CERTIFICATE-----' blocks)"
        else:
            why = "not a readable PEM certificate file (damaged or cut short?)"
        raise TLSConfigurationError(f"{ca}: {why} ({words})", key) from None
    except (OSError, ValueError) as exc:  # unreadable (permissions), or a path OpenSSL cannot take
        raise TLSConfigurationError(f"{ca}: cannot be read ({getattr(exc, 'strerror', None) or exc})", key) from None


def _steps(steps, problems: list[TLSConfigurationError] | None) -> None:
    """Run each step; the first TLSConfigurationError is raised, or with `problems` every one is collected."""
    for step in steps:
        try:
            step()
        except TLSConfigurationError as exc:
            if problems is None:
                raise
            problems.append(exc)


def _server_context(tls: TLSConfig, problems: list[TLSConfigurationError] | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)

    def verification() -> None:
        if tls.ca_certificates is not None:
            _load_ca(context, tls.ca_certificates, "node.tls.ca_certificates")
            context.verify_mode = ssl.CERT_REQUIRED if tls.require_client_certificate else ssl.CERT_OPTIONAL
        else:
            context.verify_mode = ssl.CERT_NONE

    _steps([lambda: _harden(context, tls.minimum_version),
            lambda: _load_chain(context, tls.certificate, tls.private_key, "node.tls", _SERVER_KEYS, problems),
            verification], problems)
    return context


def server_context(tls: TLSConfig) -> ssl.SSLContext:
    """The SCP's context: its certificate, TLS >= minimum_version, BCP 195 suites, client certificates when required."""
    return _server_context(tls, None)


def _client_context(destination: DestinationConfig, minimum_version: str,
                    problems: list[TLSConfigurationError] | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname by default
    prefix = f"destinations[{destination.name}]"

    def trust() -> None:
        if destination.tls_ca_certificates is not None:
            _load_ca(context, destination.tls_ca_certificates, f"{prefix}.tls_ca_certificates")
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)

    def own_certificate() -> None:
        if destination.tls_certificate is not None or destination.tls_private_key is not None:
            _load_chain(context, destination.tls_certificate, destination.tls_private_key, f"{prefix}.tls",
                        (f"{prefix}.tls_certificate", f"{prefix}.tls_private_key"), problems)

    _steps([lambda: _harden(context, minimum_version), trust, own_certificate], problems)
    return context


def client_context(destination: DestinationConfig, minimum_version: str = "1.2") -> ssl.SSLContext | None:
    """The SCU's context for one destination (None when it does not use TLS): the server is always verified."""
    if not destination.tls:
        return None
    return _client_context(destination, minimum_version, None)


def sender_client_context(tls: TLSConfig) -> ssl.SSLContext | None:
    """The SCU's context for results sent back to the sender (a route's send_to_sender), where they go over TLS
    (TLSConfig.sender_over_tls: node.tls.sender_tls "same" = when the node receives over TLS, "always"; None for
    "never" and for "same" on a node that receives plain DICOM): TLS >= minimum_version, the node's own certificate
    (node.tls.certificate / private_key, where set) for a sender that asks for a client certificate, and the
    sender's storage SCP verified against node.tls.sender_ca_certificates, else ca_certificates (the CA of the
    senders' client certificates), else the system's CAs. Its host name is not checked: the return address is the
    IP address the sender called from, which certificates seldom name. Raises TLSConfigurationError for a file that
    cannot be used."""
    if not tls.sender_over_tls:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED

    def trust() -> None:
        if tls.sender_ca_certificates is not None:
            _load_ca(context, tls.sender_ca_certificates, "node.tls.sender_ca_certificates")
        elif tls.ca_certificates is not None:
            _load_ca(context, tls.ca_certificates, "node.tls.ca_certificates")
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)

    def own_certificate() -> None:
        if tls.certificate is not None or tls.private_key is not None:
            _load_chain(context, tls.certificate, tls.private_key, "node.tls", _SERVER_KEYS, None)

    _steps([lambda: _harden(context, tls.minimum_version), trust, own_certificate], None)
    return context


def private_key_exposure(path: Path | None) -> str | None:
    """Why a TLS private key file is readable by other local users (group or other permission bits), or None."""
    if path is None:
        return None
    try:
        mode = Path(path).stat().st_mode
    except OSError:
        return None  # missing or unreadable: an error said by the TLS checks
    if mode & 0o077:
        return (f"{path} is readable by {'other users' if mode & 0o007 else 'its group'} (mode {mode & 0o777:04o}): "
                f"anyone who can read it can impersonate the node; make it owner-only (chmod 600 {path})")
    return None


def server_tls_problems(tls: TLSConfig) -> list[tuple[str, str]]:
    """(config key path, what is wrong) for every file of node.tls that cannot be used, all in one go."""
    problems: list[TLSConfigurationError] = []
    _server_context(tls, problems)
    return [(problem.key or "node.tls", problem.detail) for problem in problems]


def client_tls_problems(destination: DestinationConfig, minimum_version: str = "1.2") -> list[tuple[str, str]]:
    """(config key path, what is wrong) for every TLS file of a destination that uses TLS, all in one go."""
    if not destination.tls:
        return []
    problems: list[TLSConfigurationError] = []
    _client_context(destination, minimum_version, problems)
    return [(problem.key or f"destinations[{destination.name}]", problem.detail) for problem in problems]


# --------------------------------------------------------------------------------------------------------------
# Handshake failures in an admin's words
# --------------------------------------------------------------------------------------------------------------

#: OpenSSL reasons (ssl.SSLError.reason) that mean the bytes on the other end are not TLS at all
NOT_TLS_REASONS = frozenset({"WRONG_VERSION_NUMBER", "UNEXPECTED_EOF_WHILE_READING", "HTTP_REQUEST",
                             "HTTPS_PROXY_REQUEST", "UNKNOWN_PROTOCOL", "RECORD_LAYER_FAILURE",
                             "PACKET_LENGTH_TOO_LONG", "RECORD_LENGTH_MISMATCH"})


def _alert(reason: str) -> str | None:
    """The TLS alert the peer sent, in OpenSSL's words ("unknown ca"), from a reason like TLSV1_ALERT_UNKNOWN_CA."""
    match = re.match(r"^(?:SSLV3|TLSV1|TLSV13)_ALERT_(.+)$", reason)
    return match.group(1).replace("_", " ").lower() if match else None


def describe_server_handshake_error(exc: BaseException) -> str:
    """Why a client's TLS handshake with this node's SCP failed, for the log line naming the peer."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"its client certificate was not accepted: {exc.verify_message or exc.reason} (checked against "
                f"node.tls.ca_certificates)")
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
            return "no client certificate sent (node.tls.require_client_certificate = true)"
        if reason == "UNEXPECTED_EOF_WHILE_READING" or isinstance(exc, ssl.SSLEOFError):
            return ("the connection was closed before the TLS handshake finished (a port probe, or a client that gave "
                    "up: it may not trust this node's certificate)")
        if reason == "HTTP_REQUEST":
            return "not TLS: an HTTP request on the DICOM TLS port"
        if reason in NOT_TLS_REASONS:
            return f"not TLS (plain DICOM, or another protocol, on the TLS port; {reason})"
        alert = _alert(reason)
        if alert is not None:
            if alert in ("unknown ca", "bad certificate", "certificate unknown", "certificate expired",
                         "unsupported certificate", "certificate revoked"):
                return f"the client refused this node's certificate (TLS alert: {alert})"
            return f"the client ended the handshake (TLS alert: {alert})"
        if reason in ("NO_SHARED_CIPHER", "UNSUPPORTED_PROTOCOL", "NO_PROTOCOLS_AVAILABLE", "VERSION_TOO_LOW",
                      "TLSV1_ALERT_PROTOCOL_VERSION"):
            return f"no TLS version or cipher suite in common (node.tls.minimum_version, BCP 195 suites; {reason})"
        return _openssl_words(exc)
    if isinstance(exc, TimeoutError):
        return "no TLS handshake within node.acse_timeout"
    if isinstance(exc, ConnectionResetError):
        return "the connection was reset during the TLS handshake"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__


def describe_client_handshake_error(exc: BaseException) -> str:
    """Why this node's TLS handshake with a destination failed: the certificate check OpenSSL made (expired,
    unknown issuer, host name mismatch), a peer that does not speak TLS, or the peer refusing our certificate."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        message = exc.verify_message or exc.reason or "verification failed"
        return (f"the destination's certificate was not accepted: {message} (CERTIFICATE_VERIFY_FAILED; checked "
                "against tls_ca_certificates and the destination's host)")
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        if reason in NOT_TLS_REASONS or isinstance(exc, ssl.SSLEOFError):
            return f"peer does not speak TLS on that port ({reason or 'connection closed during the handshake'})"
        alert = _alert(reason)
        if alert is not None:
            if alert in ("unknown ca", "bad certificate", "certificate unknown", "certificate expired",
                         "certificate required", "unsupported certificate", "certificate revoked", "access denied",
                         "handshake failure"):
                return (f"the destination refused this node's client certificate (TLS alert: {alert}; "
                        "tls_certificate / tls_private_key)")
            if alert == "protocol version":
                return "no TLS version in common (TLS alert: protocol version)"
            return f"the destination ended the handshake (TLS alert: {alert})"
        return _openssl_words(exc)
    if isinstance(exc, ConnectionResetError):
        return "peer does not speak TLS on that port (connection reset during the handshake)"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__


# --------------------------------------------------------------------------------------------------------------
# Certificate validity
# --------------------------------------------------------------------------------------------------------------

_PEM_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


class CertificateValidity(NamedTuple):
    subject: str
    not_after: dt.datetime  # UTC


def _decode_pem_certificate(block: str) -> dict | None:
    """The stdlib's decoding of one PEM certificate (ssl._ssl._test_decode_cert reads a file: written to a
    temporary one); None where this Python lacks it or the block is not a certificate."""
    decode = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
    if decode is None:  # pragma: no cover - every CPython 3 has it
        return None
    with tempfile.TemporaryDirectory(prefix="dicomnode-cert-") as folder:
        path = Path(folder) / "certificate.pem"
        path.write_text(block + "\n", encoding="ascii")
        try:
            return decode(str(path))
        except (ssl.SSLError, ValueError, OSError):
            return None


def _subject(decoded: dict) -> str:
    for rdn in decoded.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return value
    return "(no common name)"


def certificate_validity(path: Path) -> list[CertificateValidity]:
    """Subject and end of validity of each PEM certificate in a file (a certificate, a chain, a CA bundle);
    [] when the file cannot be read or holds none (the context builders say so)."""
    try:
        text = Path(path).read_text(encoding="ascii", errors="replace")
    except OSError:
        return []
    found = []
    for block in _PEM_CERTIFICATE.findall(text):
        decoded = _decode_pem_certificate(block)
        if not decoded or "notAfter" not in decoded:
            continue
        not_after = dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(decoded["notAfter"]), dt.timezone.utc)
        found.append(CertificateValidity(_subject(decoded), not_after))
    return found


#: a certificate ending within this many days is warned about
EXPIRY_WARNING_DAYS = 30


def expiry_warnings(key: str, path: Path | None, now: dt.datetime | None = None,
                    days: int = EXPIRY_WARNING_DAYS) -> list[str]:
    """Warnings for certificates in `path` (config key `key`) that have expired or expire within `days`."""
    if path is None:
        return []
    now = now or dt.datetime.now(dt.timezone.utc)
    warnings = []
    for certificate in certificate_validity(Path(path)):
        date = certificate.not_after.strftime("%Y-%m-%d")
        left = certificate.not_after - now
        if left.total_seconds() <= 0:
            warnings.append(f"{key}: certificate {certificate.subject!r} in {path} expired on {date}: TLS peers that "
                            "verify it refuse the connection")
        elif left <= dt.timedelta(days=days):
            warnings.append(f"{key}: certificate {certificate.subject!r} in {path} expires on {date} (in "
                            f"{left.days} day(s)): renew it")
    return warnings
