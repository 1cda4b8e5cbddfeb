"""DICOM TLS (PS3.15 Annex B.9, BCP 195 profile): SSL contexts for the SCP and for each destination's SCU."""
from __future__ import annotations

import os
import ssl
from pathlib import Path

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
    """A certificate, key or CA file that cannot be used; the message names the file and why."""


def _key_password() -> str | None:
    file = os.environ.get(KEY_PASSWORD_FILE_ENV)
    if file:
        return Path(file).read_text(encoding="utf-8").rstrip("\r\n")
    return os.environ.get(KEY_PASSWORD_ENV) or None


def _require_file(path: Path | None, what: str) -> Path:
    if path is None:
        raise TLSConfigurationError(f"{what} is not configured")
    path = Path(path)
    if not path.is_file():
        raise TLSConfigurationError(f"{what} {path} does not exist or is not a file")
    return path


def _harden(context: ssl.SSLContext, minimum_version: str) -> ssl.SSLContext:
    if minimum_version not in _VERSIONS:
        raise TLSConfigurationError(f"minimum TLS version {minimum_version!r} is not one of {sorted(_VERSIONS)}")
    context.minimum_version = _VERSIONS[minimum_version]
    context.set_ciphers(BCP195_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    return context


def _load_chain(context: ssl.SSLContext, certificate: Path | None, private_key: Path | None, what: str) -> None:
    certificate = _require_file(certificate, f"{what} certificate")
    private_key = _require_file(private_key, f"{what} private key")
    try:
        context.load_cert_chain(certificate, private_key, password=_key_password())
    except ssl.SSLError as exc:  # the message never contains the password
        raise TLSConfigurationError(f"{what} certificate {certificate} / key {private_key}: {exc.reason or exc}") from None


def server_context(tls: TLSConfig) -> ssl.SSLContext:
    """The SCP's context: its certificate, TLS >= minimum_version, BCP 195 suites, client certificates when required."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(context, tls.minimum_version)
    _load_chain(context, tls.certificate, tls.private_key, "node.tls")
    if tls.ca_certificates is not None:
        ca = _require_file(tls.ca_certificates, "node.tls.ca_certificates")
        context.load_verify_locations(cafile=str(ca))
        context.verify_mode = ssl.CERT_REQUIRED if tls.require_client_certificate else ssl.CERT_OPTIONAL
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def client_context(destination: DestinationConfig, minimum_version: str = "1.2") -> ssl.SSLContext | None:
    """The SCU's context for one destination (None when it does not use TLS): the server is always verified."""
    if not destination.tls:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname by default
    _harden(context, minimum_version)
    if destination.tls_ca_certificates is not None:
        ca = _require_file(destination.tls_ca_certificates, f"destinations[{destination.name}].tls_ca_certificates")
        context.load_verify_locations(cafile=str(ca))
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if destination.tls_certificate is not None or destination.tls_private_key is not None:
        _load_chain(context, destination.tls_certificate, destination.tls_private_key,
                    f"destinations[{destination.name}].tls")
    return context
