"""DICOM TLS (BCP 195): DCMTK storescu and the node's own SCU over TLS with client certificates; plain, TLS 1.1,
anonymous and foreign-CA clients refused."""
from __future__ import annotations

import socket
import ssl
import subprocess

import pytest

from dicomnode.config import DestinationConfig, TLSConfig
from dicomnode.net.scu import AssociationFailed, send_files
from dicomnode.net.tls import BCP195_CIPHERS, TLSConfigurationError, client_context, server_context
from tests.conftest import require_peer
from tests.hardening.hardening_support import echo_status, make_pki, save, synthetic_mr
from tests.node.nodeproc import ENV, NodeProcess
from tests.peers import free_port


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    require_peer("openssl")
    folder = tmp_path_factory.mktemp("tls")
    return make_pki(folder), make_pki(folder, "foreign")


@pytest.fixture(scope="module")
def tls_node(pki, tmp_path_factory):
    ours, _ = pki
    workdir = tmp_path_factory.mktemp("tlsnode")
    port = free_port()
    extra = (f'[node.tls]\nenabled = true\ncertificate = "{ours["server.crt"]}"\nprivate_key = "{ours["server.key"]}"\n'
             f'ca_certificates = "{ours["ca.crt"]}"\nrequire_client_certificate = true\n')
    node = NodeProcess(workdir, port, pipelines=(), quiet_seconds=3600, extra=extra).start()
    yield node
    assert node.stop() == 0


def destination(pki_files, with_client_certificate=True, ca=None) -> DestinationConfig:
    return DestinationConfig(
        name="node", ae_title="DICOMNODE", host="127.0.0.1", port=1, tls=True,
        tls_ca_certificates=ca or pki_files["ca.crt"],
        tls_certificate=pki_files["client.crt"] if with_client_certificate else None,
        tls_private_key=pki_files["client.key"] if with_client_certificate else None,
    )


def test_server_context_follows_bcp195(pki):
    ours, _ = pki
    context = server_context(TLSConfig(enabled=True, certificate=ours["server.crt"], private_key=ours["server.key"],
                                       ca_certificates=ours["ca.crt"], require_client_certificate=True))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED
    tls12 = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12 and tls12 <= set(BCP195_CIPHERS.split(":"))
    assert all("GCM" in name and "DHE" in name for name in tls12)  # forward secrecy + AEAD only
    strict = server_context(TLSConfig(enabled=True, certificate=ours["server.crt"], private_key=ours["server.key"],
                                      minimum_version="1.3"))
    assert strict.minimum_version == ssl.TLSVersion.TLSv1_3
    with pytest.raises(TLSConfigurationError, match="does not exist"):
        server_context(TLSConfig(enabled=True, certificate=ours["server.crt"], private_key=ours["server.crt"].with_name("nope.key")))
    client = client_context(destination(ours))
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname
    assert client_context(DestinationConfig(name="plain", ae_title="X", host="h", port=1)) is None


def test_storescu_with_client_certificate_stores_over_tls(pki, tls_node, tmp_path):
    require_peer("storescu")
    ours, foreign = pki
    files = [save(synthetic_mr(instance=i), tmp_path / f"{i}.dcm") for i in range(3)]
    result = subprocess.run(
        [require_peer("storescu"), "-aet", "SCANNER1", "-aec", "DICOMNODE", "+tls", str(ours["client.key"]), str(ours["client.crt"]),
         "+cf", str(ours["ca.crt"]), "127.0.0.1", str(tls_node.port), *map(str, files)],
        env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout
    stored = {r["sop_instance_uid"] for r in tls_node.db_rows("SELECT sop_instance_uid FROM instances")}
    assert {str(synthetic_mr_uid(f)) for f in files} <= stored

    plain = subprocess.run([require_peer("storescu"), "-aet", "SCANNER1", "-aec", "DICOMNODE", "127.0.0.1", str(tls_node.port),
                            str(files[0])], env=ENV, capture_output=True, text=True, timeout=120)
    assert plain.returncode != 0, "a plain TCP association must not reach a TLS-only node"

    anonymous = subprocess.run([require_peer("storescu"), "-aet", "SCANNER1", "-aec", "DICOMNODE", "+tla", "+cf", str(ours["ca.crt"]),
                                "127.0.0.1", str(tls_node.port), str(files[0])],
                               env=ENV, capture_output=True, text=True, timeout=120)
    assert anonymous.returncode != 0, "a client without certificate must be refused (require_client_certificate)"

    wrong_ca = subprocess.run(
        [require_peer("storescu"), "-aet", "SCANNER1", "-aec", "DICOMNODE", "+tls", str(foreign["client.key"]),
         str(foreign["client.crt"]), "+cf", str(ours["ca.crt"]), "127.0.0.1", str(tls_node.port), str(files[0])],
        env=ENV, capture_output=True, text=True, timeout=120)
    assert wrong_ca.returncode != 0, "a client certificate from another CA must be refused"


def synthetic_mr_uid(path):
    import pydicom

    return pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID


def test_own_scu_sends_over_tls_and_verifies_the_server(pki, tls_node, tmp_path):
    ours, foreign = pki
    files = [save(synthetic_mr(instance=i), tmp_path / f"own{i}.dcm") for i in range(2)]
    results = send_files(files, "DICOMNODE", "127.0.0.1", tls_node.port, calling_ae_title="SCANNER1",
                         ssl_context=client_context(destination(ours)))
    assert [r.ok for r in results] == [True, True], [r.error for r in results]
    assert echo_status(tls_node.port, ssl_context=client_context(destination(ours))) == 0x0000
    # a server certificate from a CA the destination does not trust: nothing is sent
    with pytest.raises(AssociationFailed):
        send_files(files[:1], "DICOMNODE", "127.0.0.1", tls_node.port, calling_ae_title="SCANNER1",
                   ssl_context=client_context(destination(ours, ca=foreign["ca.crt"])))
    # our own SCU without a client certificate is refused too
    with pytest.raises(AssociationFailed):
        send_files(files[:1], "DICOMNODE", "127.0.0.1", tls_node.port, calling_ae_title="SCANNER1",
                   ssl_context=client_context(destination(ours, with_client_certificate=False)))


def _handshake(port: int, pki_files, version: ssl.TLSVersion) -> str:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(pki_files["ca.crt"]))
    context.load_cert_chain(pki_files["client.crt"], pki_files["client.key"])
    context.set_ciphers("ALL:@SECLEVEL=0")
    context.minimum_version = context.maximum_version = version
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.version()


def test_tls_below_1_2_is_refused(pki, tls_node):
    ours, _ = pki
    assert _handshake(tls_node.port, ours, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    for old in (ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1):
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            _handshake(tls_node.port, ours, old)
    assert echo_status(tls_node.port, ssl_context=client_context(destination(ours))) == 0x0000


def test_dispatch_delivers_results_over_tls_with_a_client_certificate(pki, tmp_path):
    """The node's outbox sends to a destination that requires TLS + a client certificate (BCP 195)."""
    import threading

    from pynetdicom import AE, AllStoragePresentationContexts, evt

    from tests.hardening.hardening_support import StubNodeProcess, store_one

    ours, _ = pki
    received, arrived = [], threading.Event()

    def on_store(event):
        received.append((str(event.request.AffectedSOPInstanceUID), event.assoc.requestor.ae_title.strip()))
        if len(received) >= 2:
            arrived.set()
        return 0x0000

    pacs = AE(ae_title="TLSPACS")
    for context in AllStoragePresentationContexts:
        pacs.add_supported_context(context.abstract_syntax)
    pacs_context = server_context(TLSConfig(enabled=True, certificate=ours["server.crt"], private_key=ours["server.key"],
                                            ca_certificates=ours["ca.crt"], require_client_certificate=True))
    server = pacs.start_server(("127.0.0.1", 0), block=False, ssl_context=pacs_context,
                               evt_handlers=[(evt.EVT_C_STORE, on_store)])
    pacs_port = server.server_address[1]
    node_port = free_port()
    node = StubNodeProcess(tmp_path, node_port, destinations={"TLSPACS": ("127.0.0.1", pacs_port)}, quiet_seconds=1,
                           analysis_seconds=0.1, max_attempts=5)
    node.config_text = node.config_text.replace(
        f"port = {pacs_port}\n",
        f'port = {pacs_port}\ntls = true\ntls_ca_certificates = "{ours["ca.crt"]}"\n'
        f'tls_certificate = "{ours["client.crt"]}"\ntls_private_key = "{ours["client.key"]}"\n')
    node.config_path.write_text(node.config_text)
    node.start()
    try:
        study = synthetic_mr().StudyInstanceUID
        assert store_one(node_port, synthetic_mr(study_uid=study)).Status == 0
        node.wait_states(states=("done",), timeout=120)
        assert arrived.wait(10)
        sent = {r["sop_instance_uid"] for r in node.db_rows("SELECT * FROM outbox WHERE state='sent'")}
        assert {sop for sop, _ in received} == sent and len(sent) == 2
        assert {ae for _, ae in received} == {"DICOMNODE"}
    finally:
        assert node.stop() == 0
        server.shutdown()


def test_key_password_comes_from_the_environment_or_a_file_and_is_never_shown(pki, tmp_path, monkeypatch):
    from tests.hardening.hardening_support import openssl

    ours, _ = pki
    secret = "s3cret-Passphrase-42"
    encrypted = tmp_path / "server-encrypted.key"
    openssl("pkey", "-in", str(ours["server.key"]), "-aes256", "-passout", f"pass:{secret}", "-out", str(encrypted),
            cwd=tmp_path)
    tls = TLSConfig(enabled=True, certificate=ours["server.crt"], private_key=encrypted)
    monkeypatch.setenv("DICOMNODE_TLS_KEY_PASSWORD", secret)
    assert server_context(tls).verify_mode == ssl.CERT_NONE
    password_file = tmp_path / "key-password"
    password_file.write_text(secret + "\n")
    monkeypatch.delenv("DICOMNODE_TLS_KEY_PASSWORD")
    monkeypatch.setenv("DICOMNODE_TLS_KEY_PASSWORD_FILE", str(password_file))
    assert server_context(tls) is not None
    password_file.write_text("wrong-" + secret)
    with pytest.raises(TLSConfigurationError) as caught:
        server_context(tls)
    assert secret not in str(caught.value) and "wrong-" not in str(caught.value)
