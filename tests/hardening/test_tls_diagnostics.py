"""TLS problems said in an admin's words: unusable CA files named by key path (config check, serve), refused
handshakes on the receive port logged with the peer's address and reason (rate-limited), failed sends and echoes
saying why (down to the outbox's last error), certificates that expired or expire soon, TLS files where TLS is off."""
from __future__ import annotations

import datetime as dt
import logging
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from dicomnode.cli import main
from dicomnode.config import Config, DestinationConfig, DispatchConfig, TLSConfig, config_warnings, parse_config
from dicomnode.dispatch import Dispatcher
from dicomnode.net import reactor
from dicomnode.net.reactor import HandshakeFailureLog
from dicomnode.net.scp import StorageSCP
from dicomnode.net.scu import AssociationFailed, echo, send_files
from dicomnode.net.tls import (client_context, client_tls_problems, expiry_warnings, server_context,
                               server_tls_problems)
from dicomnode.spool import Spool
from dicomnode.state import COMPLETE, InstanceRow, StateDB
from dicomnode.types import ResultObject
from tests.conftest import require_peer, wait_until
from tests.hardening.hardening_support import make_pki, openssl

TLS_LOG = "dicomnode.net.tls"

CA_CONFIG = """[ ca ]
default_ca = ca_default
[ ca_default ]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = policy_any
copy_extensions = copy
unique_subject = no
[ policy_any ]
commonName = supplied
"""


def _signed(folder: Path, name: str, extensions: str, start: str | None = None, end: str | None = None) -> None:
    """`name`.key/.crt signed by folder's ca.crt, with an explicit validity period when start/end are given."""
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}", cwd=folder)
    (folder / f"{name}.ext").write_text(extensions)
    if start is None:
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=folder)
        return
    (folder / "ca.cnf").write_text(CA_CONFIG)
    (folder / "index.txt").write_text("")
    (folder / "serial").write_text("1000\n")
    openssl("ca", "-batch", "-config", "ca.cnf", "-cert", "ca.crt", "-keyfile", "ca.key", "-in", f"{name}.csr",
            "-out", f"{name}.crt", "-startdate", start, "-enddate", end, "-extfile", f"{name}.ext", "-notext",
            cwd=folder)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Our CA (server.crt for 127.0.0.1, client.crt, an expired certificate valid in 2020 for both roles, a server
    certificate for another host name, a self-signed one valid for 400 days) and a foreign CA."""
    require_peer("openssl")
    folder = tmp_path_factory.mktemp("tlsdiag")
    ours, foreign = make_pki(folder), make_pki(folder, "foreign")
    home = ours["ca.crt"].parent
    _signed(home, "expired", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
            start="20200101000000Z", end="20210101000000Z")
    _signed(home, "otherhost", "subjectAltName=DNS:pacs.example.org\nextendedKeyUsage=serverAuth\n")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "lasting.key", "-out", "lasting.crt",
            "-days", "400", "-subj", "/CN=lasting", cwd=home)
    ours.update({name: home / name for name in ("expired.crt", "expired.key", "otherhost.crt", "otherhost.key",
                                                "lasting.crt", "lasting.key")})
    return ours, foreign


def _config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(f'[node]\nstorage_dir = "{tmp_path / "store"}"\nport = 0\n' + body)
    return path


# --- finding 5: a CA file that is not PEM ------------------------------------------------------------------------

def test_a_corrupt_or_non_pem_ca_file_is_named_by_key_path_with_the_other_problems(pki, tmp_path, capsys):
    ours, _ = pki
    corrupt = tmp_path / "corrupt_ca.crt"
    corrupt.write_bytes(ours["ca.crt"].read_bytes()[:300])  # a certificate cut short
    junk = tmp_path / "junk.crt"
    junk.write_text("hello\n")
    config = _config(tmp_path, f'[node.tls]\nenabled = true\ncertificate = "{ours["server.crt"]}"\n'
                               f'private_key = "{ours["client.key"]}"\nca_certificates = "{corrupt}"\n'
                               f'[[destinations]]\nname = "pacs"\nae_title = "PACS"\nhost = "127.0.0.1"\nport = 4242\n'
                               f'tls = true\ntls_ca_certificates = "{junk}"\n')
    for command in (["config", "check", str(config)], ["serve", "--config", str(config)]):
        assert main(command) == 1
        err = capsys.readouterr().err
        assert "Traceback" not in err and "SSLError" not in err
        assert f"node.tls.ca_certificates: {corrupt}: not a readable PEM certificate file" in err and "PEM lib" in err
        assert "node.tls: " in err and "KEY_VALUES_MISMATCH" in err  # listed in the same run
        assert f"destinations[pacs].tls_ca_certificates: {junk}: no PEM certificate found" in err
    assert not (tmp_path / "store").exists()


def test_the_context_builders_raise_the_key_path_and_list_every_problem(pki, tmp_path):
    ours, _ = pki
    junk = tmp_path / "junk.crt"
    junk.write_text("hello\n")
    tls = TLSConfig(enabled=True, certificate=ours["server.crt"], private_key=ours["server.key"], ca_certificates=junk)
    assert server_tls_problems(tls) == [("node.tls.ca_certificates", server_tls_problems(tls)[0][1])]
    with pytest.raises(ValueError, match=r"^node\.tls\.ca_certificates: .*junk\.crt: no PEM certificate found"):
        server_context(tls)
    destination = DestinationConfig(name="p", ae_title="P", host="h", port=1, tls=True, tls_ca_certificates=junk,
                                    tls_certificate=ours["client.crt"], tls_private_key=ours["server.key"])
    assert [key for key, _ in client_tls_problems(destination)] == ["destinations[p].tls_ca_certificates",
                                                                    "destinations[p]"]
    assert client_tls_problems(destination.model_copy(update={"tls": False})) == []


# --- finding 6: refused handshakes on the receive port -----------------------------------------------------------

@pytest.fixture
def tls_scp(pki, tmp_path, monkeypatch):
    ours, _ = pki
    monkeypatch.setattr(reactor.TLSHandshakeInThread, "handshake_failures", HandshakeFailureLog())
    config = Config.model_validate({"node": {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 0,
                                             "allowed_calling_aes": ["*"], "acse_timeout": 2.0}})
    db = StateDB(tmp_path / "store" / "state.sqlite3")
    context = server_context(TLSConfig(enabled=True, certificate=ours["server.crt"], private_key=ours["server.key"],
                                       ca_certificates=ours["ca.crt"], require_client_certificate=True))
    server = StorageSCP(config, Spool(tmp_path / "store", db, min_free_space_mb=0), ssl_context=context)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        db.close()


def _client(port: int, ca: Path, certificate: tuple[Path, Path] | None) -> None:
    """A TLS client's handshake (and the server's verdict on its certificate), whatever comes of it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(ca))
    if certificate:
        context.load_cert_chain(*certificate)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.recv(1)  # TLS 1.3: the server's alert about our certificate comes after our handshake
        except (OSError, ssl.SSLError):
            pass


def _echo(port: int, context) -> int:
    ae = AE(ae_title="SCANNER1")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMNODE", tls_args=(context, "127.0.0.1") if context else None)
    if not assoc.is_established:
        return -1
    try:
        return int(assoc.send_c_echo().Status)
    finally:
        assoc.release()


def _tls_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == TLS_LOG]


def test_refused_tls_handshakes_are_logged_with_the_address_and_why(pki, tls_scp, caplog):
    caplog.set_level(logging.WARNING, logger=TLS_LOG)
    ours, foreign = pki
    port = tls_scp.port
    good = client_context(DestinationConfig(name="n", ae_title="DICOMNODE", host="127.0.0.1", port=port, tls=True,
                                            tls_ca_certificates=ours["ca.crt"], tls_certificate=ours["client.crt"],
                                            tls_private_key=ours["client.key"]))
    expected = [
        (lambda: _client(port, ours["ca.crt"], (foreign["client.crt"], foreign["client.key"])),
         "its client certificate was not accepted: unable to get local issuer certificate"),
        (lambda: _client(port, ours["ca.crt"], (ours["expired.crt"], ours["expired.key"])),
         "its client certificate was not accepted: certificate has expired"),
        (lambda: _client(port, ours["ca.crt"], None), "no client certificate sent"),
        (lambda: _echo(port, None), "not TLS (plain DICOM"),
        (lambda: _client(port, foreign["ca.crt"], (ours["client.crt"], ours["client.key"])),
         "the client refused this node's certificate (TLS alert: unknown ca)"),
    ]
    for attempt, words in expected:
        attempt()
        assert wait_until(lambda: any(words in line for line in _tls_lines(caplog)), timeout=10), \
            (words, _tls_lines(caplog))
    lines = _tls_lines(caplog)
    assert len(lines) == len(expected)
    assert all(line.startswith("TLS handshake from 127.0.0.1 failed: ") for line in lines)
    _echo(port, None)  # the same refusal again within the minute: counted, not logged again
    assert wait_until(lambda: tls_scp._server.handshake_failures.refusals == len(expected) + 1, timeout=10)
    assert len(_tls_lines(caplog)) == len(expected)
    assert _echo(port, good) == 0x0000  # and a good client is served


def test_a_client_that_sends_nothing_holds_up_no_other_and_is_logged_after_acse_timeout(pki, tls_scp, caplog):
    """The handshake runs on the connection's own thread (pynetdicom ran it on the accepting thread, no timeout)."""
    caplog.set_level(logging.WARNING, logger=TLS_LOG)
    ours, _ = pki
    good = client_context(DestinationConfig(name="n", ae_title="DICOMNODE", host="127.0.0.1", port=tls_scp.port,
                                            tls=True, tls_ca_certificates=ours["ca.crt"],
                                            tls_certificate=ours["client.crt"], tls_private_key=ours["client.key"]))
    with socket.create_connection(("127.0.0.1", tls_scp.port), timeout=10):
        started = time.monotonic()
        assert _echo(tls_scp.port, good) == 0x0000
        assert time.monotonic() - started < 2.0  # before the silent client's handshake timed out
        assert wait_until(lambda: any("no TLS handshake within node.acse_timeout" in line
                                      for line in _tls_lines(caplog)), timeout=10)


def test_the_handshake_failure_log_is_rate_limited_per_address_and_reason(caplog):
    caplog.set_level(logging.WARNING, logger=TLS_LOG)
    now = [0.0]
    failures = HandshakeFailureLog(interval=60, budget=3, max_addresses=4, clock=lambda: now[0])
    assert failures.refused("10.0.0.1", "not TLS")
    assert not failures.refused("10.0.0.1", "not TLS")
    assert not failures.refused("10.0.0.1", "not TLS")
    assert failures.refused("10.0.0.1", "certificate has expired")  # another reason from the same address
    assert failures.refused("10.0.0.2", "not TLS")
    assert not failures.refused("10.0.0.3", "not TLS")  # over the budget of 3 lines a minute
    now[0] = 61.0
    assert failures.refused("10.0.0.1", "not TLS")
    assert "(2 more like it from this address since the last such line, not logged)" in _tls_lines(caplog)[-1]
    assert failures.refusals == 7
    for number in range(10):  # a scan from many addresses: only the most recent ones are remembered
        failures.refused(f"10.0.1.{number}", "not TLS")
    assert len(failures._last) == 4


# --- finding 7: failed TLS sends and echoes say why ---------------------------------------------------------------

@pytest.fixture(scope="module")
def peers(pki):
    """TLS storage SCPs that our SCU must refuse or that refuse it, and a plain one, by name -> port."""
    ours, foreign = pki

    def start(context):
        ae = AE(ae_title="TLSPACS")
        ae.add_supported_context(Verification)
        ae.add_supported_context(SecondaryCaptureImageStorage)
        return ae.start_server(("127.0.0.1", 0), block=False, ssl_context=context,
                               evt_handlers=[(evt.EVT_C_STORE, lambda event: 0x0000)])

    def tls(certificate: str, ca: Path, home=ours):
        return server_context(TLSConfig(enabled=True, certificate=home[f"{certificate}.crt"],
                                        private_key=home[f"{certificate}.key"], ca_certificates=ca,
                                        require_client_certificate=True))

    servers = {
        "good": start(tls("server", ours["ca.crt"])),
        "foreign": start(tls("server", ours["ca.crt"], home=foreign)),
        "otherhost": start(tls("otherhost", ours["ca.crt"])),
        "expired": start(tls("expired", ours["ca.crt"])),
        "plain": start(None),
        "distrusts us": start(tls("server", foreign["ca.crt"])),
    }
    yield {name: server.server_address[1] for name, server in servers.items()}
    for server in servers.values():
        server.shutdown()


def _destination(pki_files, port: int) -> DestinationConfig:
    return DestinationConfig(name="tlspacs", ae_title="TLSPACS", host="127.0.0.1", port=port, tls=True,
                             tls_ca_certificates=pki_files["ca.crt"], tls_certificate=pki_files["client.crt"],
                             tls_private_key=pki_files["client.key"])


@pytest.mark.parametrize("peer, words", [
    ("foreign", "the destination's certificate was not accepted: unable to get local issuer certificate"),
    ("otherhost", "the destination's certificate was not accepted: IP address mismatch, certificate is not valid "
                  "for '127.0.0.1'"),
    ("expired", "the destination's certificate was not accepted: certificate has expired"),
    ("plain", "peer does not speak TLS on that port"),
    ("distrusts us", "the destination refused this node's client certificate (TLS alert: unknown ca"),
])
def test_a_failed_tls_echo_says_why(pki, peers, peer, words):
    ours, _ = pki
    context = client_context(_destination(ours, peers[peer]))
    with pytest.raises(AssociationFailed) as failed:
        echo("TLSPACS", "127.0.0.1", peers[peer], calling_ae_title="DICOMNODE", ssl_context=context)
    assert "TLS handshake failed: " in str(failed.value) and words in str(failed.value), str(failed.value)
    assert echo("TLSPACS", "127.0.0.1", peers["good"], calling_ae_title="DICOMNODE",
                ssl_context=client_context(_destination(ours, peers["good"]))) == 0x0000


def _result_object(sop: str) -> Dataset:
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SOPClassUID, dataset.SOPInstanceUID = SecondaryCaptureImageStorage, sop
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.Modality = "1.2.8", "1.2.8.9", "OT"
    return dataset


def test_a_failed_tls_send_says_why_down_to_the_outboxs_last_error(pki, peers, tmp_path):
    ours, _ = pki
    result = tmp_path / "results" / "1.5.9.9.dcm"
    result.parent.mkdir()
    _result_object("1.5.9.9").save_as(result, enforce_file_format=True)
    with pytest.raises(AssociationFailed, match="certificate has expired"):
        send_files([result], "TLSPACS", "127.0.0.1", peers["expired"], calling_ae_title="DICOMNODE",
                   ssl_context=client_context(_destination(ours, peers["expired"])))
    db = StateDB(tmp_path / "state.sqlite3")
    db.add_instance(InstanceRow("1.5.1", "1.5", "1.5", "1.5.0", "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.1.2.1",
                                "MR", "spool/x.dcm", 1, "SCANNER1", time.time()))
    db.set_study_state("1.5", COMPLETE)
    analysis = db.start_analysis("1.5", 0)
    written = ResultObject("1.5.9.9", "1.5.9.8", str(SecondaryCaptureImageStorage), "results/1.5.9.9.dcm")
    item = {"destination": "tlspacs", "ae_title": "TLSPACS", "host": "127.0.0.1", "port": peers["foreign"],
            "sop_instance_uid": written.sop_instance_uid, "path": written.path}
    assert db.finish_analysis(analysis, "1.5", 0, {"outputs": [written.path]}, [written], [item])
    destination = _destination(ours, peers["foreign"])
    dispatcher = Dispatcher(db, tmp_path, DispatchConfig(max_attempts=3), "DICOMNODE",
                            ssl_context_for=lambda name: client_context(destination))
    try:
        assert dispatcher.run_once() == 0
        (row,) = db.outbox_for("1.5")
        assert "TLS handshake failed: the destination's certificate was not accepted: unable to get local issuer " \
               "certificate" in row["last_error"]
    finally:
        db.close()


# --- findings 8 and 9: config check warnings ----------------------------------------------------------------------

def test_config_check_warns_about_expired_and_soon_expiring_certificates(pki, tmp_path, capsys):
    ours, _ = pki
    config = _config(tmp_path, f'[node.tls]\nenabled = true\ncertificate = "{ours["expired.crt"]}"\n'
                               f'private_key = "{ours["expired.key"]}"\n'
                               f'[[destinations]]\nname = "pacs"\nae_title = "PACS"\nhost = "127.0.0.1"\nport = 4242\n'
                               f'tls = true\ntls_ca_certificates = "{ours["lasting.crt"]}"\n'
                               f'tls_certificate = "{ours["client.crt"]}"\ntls_private_key = "{ours["client.key"]}"\n')
    config.write_text(config.read_text().replace("port = 0\n", "port = 11112\n", 1))  # config check refuses port 0
    assert main(["config", "check", str(config), "--roles", "receive,dispatch"]) == 0
    err = capsys.readouterr().err
    assert f"warning: node.tls.certificate: certificate 'expired' in {ours['expired.crt']} expired on 2021-01-01" in err
    soon = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)).strftime("%Y-%m-")
    assert f"warning: destinations[pacs].tls_certificate: certificate 'client pki' in {ours['client.crt']} expires " \
           f"on {soon}" in err
    assert "lasting" not in err  # 400 days left: nothing to say


def test_expiry_warnings_at_a_given_date(pki):
    ours, _ = pki
    lasting = ours["lasting.crt"]
    assert expiry_warnings("k", lasting) == []
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=380)
    [warning] = expiry_warnings("k", lasting, now=later)
    assert warning.startswith(f"k: certificate 'lasting' in {lasting} expires on ") and warning.endswith("renew it")
    [warning] = expiry_warnings("k", lasting, now=later + dt.timedelta(days=30))
    assert "expired on" in warning
    assert expiry_warnings("k", None) == [] and expiry_warnings("k", lasting.with_name("missing.crt")) == []


def test_tls_files_set_where_tls_is_off_are_warned_about(tmp_path):
    config = parse_config({
        "node": {"tls": {"enabled": False, "certificate": "/x/node.crt", "private_key": "/x/node.key"}},
        "destinations": [{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 4242,
                          "tls_ca_certificates": "/x/ca.crt", "tls_certificate": "/x/c.crt"},
                         {"name": "viewer", "ae_title": "V", "host": "127.0.0.1", "port": 4243}]})
    warnings = config_warnings(config)
    assert ("destinations[pacs]: tls_ca_certificates, tls_certificate set but tls = false: results go to it "
            "unencrypted and these files are not used (set tls = true, or remove them)") in warnings
    assert any(w.startswith("node.tls: certificate, private_key set but enabled = false") for w in warnings)
    assert not any("viewer" in w and "tls" in w for w in warnings)
    assert not any("tls" in w for w in config_warnings(parse_config({})))
