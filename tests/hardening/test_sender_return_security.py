"""Results back to the sender over TLS when the node receives over TLS, config check warnings for a node open to
any host, a sender TLS without a CA and a TLS private key others can read, database URL secrets masked, log UIDs
hashed, and `process` outputs owner-only."""
from __future__ import annotations

import logging
import os
import ssl
import stat
import threading

import pytest

from dicomnode.config import Config, TLSConfig, config_warnings
from dicomnode.net.scu import send_files
from dicomnode.net.tls import sender_client_context, server_context
from dicomnode.observe import UIDFilter, hash_uids
from dicomnode.preflight import preflight_warnings
from dicomnode.state import _unreachable, describe_url, state_url
from dicomnode.uids import short_hash
from tests.conftest import require_peer
from tests.hardening.hardening_support import make_pki, save, synthetic_mr


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    require_peer("openssl")
    return make_pki(tmp_path_factory.mktemp("sendertls"))


def test_results_go_back_to_a_tls_sender_over_tls_with_the_nodes_certificate(pki, tmp_path):
    from pynetdicom import AE, AllStoragePresentationContexts, evt

    node_tls = TLSConfig(enabled=True, certificate=pki["server.crt"], private_key=pki["server.key"],
                         ca_certificates=pki["ca.crt"], require_client_certificate=True)
    context = sender_client_context(node_tls)
    assert context.verify_mode == ssl.CERT_REQUIRED and not context.check_hostname
    assert sender_client_context(TLSConfig()) is None  # plain DICOM in, plain DICOM back

    received, arrived = [], threading.Event()

    def on_store(event):
        received.append(str(event.request.AffectedSOPInstanceUID))
        arrived.set()
        return 0x0000

    scanner = AE(ae_title="SCANNER1")  # the scanner's own storage SCP: TLS only, a certificate of the node's CA
    for presentation in AllStoragePresentationContexts:
        scanner.add_supported_context(presentation.abstract_syntax)
    scanner_context = server_context(TLSConfig(enabled=True, certificate=pki["server.crt"],
                                               private_key=pki["server.key"]))
    server = scanner.start_server(("127.0.0.1", 0), block=False, ssl_context=scanner_context,
                                  evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        path = save(synthetic_mr(), tmp_path / "result.dcm")
        results = send_files([path], "SCANNER1", "127.0.0.1", server.server_address[1], ssl_context=context,
                             timeout=10)
        assert [r.ok for r in results] == [True] and arrived.wait(5)
    finally:
        server.shutdown()


def test_node_uses_tls_for_the_sender_destination_when_it_receives_over_tls(pki, tmp_path):
    from dicomnode.node import Node

    config = Config.model_validate({
        "node": {"port": 0, "storage_dir": str(tmp_path / "store"),
                 "tls": {"enabled": True, "certificate": str(pki["server.crt"]), "private_key": str(pki["server.key"]),
                         "ca_certificates": str(pki["ca.crt"])}},
        "routes": [{"name": "r", "send_to_sender": True, "sender_port": 11112}]})
    node = Node(config, analyser=object())
    try:
        assert isinstance(node.ssl_context_for("sender"), ssl.SSLContext)
    finally:
        node.db.close()


def test_config_check_warns_about_a_node_open_to_any_host_and_peers_any_other_ae_title_bypasses():
    open_node = Config.model_validate({"node": {"host": "0.0.0.0", "allowed_calling_aes": ["*"]}})
    assert any("any host that reaches the port may store" in w for w in config_warnings(open_node))
    peers_and_star = Config.model_validate({"node": {"allowed_calling_aes": ["*"], "peers": [
        {"ae_title": "SCANNER2", "networks": ["127.0.0.1/32"], "operations": ["echo"]}]}})
    assert any("restrict only its own AE title" in w for w in config_warnings(peers_and_star))
    listed = Config.model_validate({"node": {"host": "0.0.0.0", "allowed_calling_aes": ["SCANNER1", "SCANNER2"],
                                             "peers": [{"ae_title": "SCANNER1", "networks": ["10.0.0.0/24"]}]}})
    assert any("['SCANNER2'] are not bound to any network" in w for w in config_warnings(listed))
    closed = Config.model_validate({"node": {"host": "0.0.0.0", "allowed_calling_aes": ["*"],
                                             "allowed_networks": ["10.0.0.0/24"], "max_associations_per_host": 4}})
    assert not [w for w in config_warnings(closed) if w.startswith("node")]


def test_config_check_warns_about_send_to_sender_over_tls_without_a_ca(pki):
    config = Config.model_validate({
        "node": {"tls": {"enabled": True, "certificate": str(pki["server.crt"]), "private_key": str(pki["server.key"])}},
        "routes": [{"name": "r", "send_to_sender": True, "sender_port": 11112}]})
    assert any("send_to_sender over TLS and no node.tls.sender_ca_certificates or ca_certificates" in w
               for w in config_warnings(config))


def _tls_node(pki, tmp_path, **tls):
    return Config.model_validate({
        "node": {"port": 0, "storage_dir": str(tmp_path / "store"),
                 "tls": {"enabled": True, "certificate": str(pki["server.crt"]), "private_key": str(pki["server.key"]),
                         "ca_certificates": str(pki["ca.crt"]), **tls}},
        "routes": [{"name": "r", "send_to_sender": True, "sender_port": 11112}]})


def test_sender_tls_chooses_how_results_go_back_and_config_check_says_what_the_default_does(pki, tmp_path):
    default = _tls_node(pki, tmp_path)
    assert isinstance(sender_client_context(default.node.tls), ssl.SSLContext)
    assert any('results go back over TLS (node.tls.sender_tls = "same"), so a sender whose storage SCP takes only '
               'plain DICOM gets nothing back' in w for w in config_warnings(default))  # a CA set: still said
    chosen = _tls_node(pki, tmp_path, sender_tls="same")
    assert not [w for w in config_warnings(chosen) if "sender_tls" in w]

    plain_back = _tls_node(pki, tmp_path, sender_tls="never")
    assert sender_client_context(plain_back.node.tls) is None
    assert any('node.tls.sender_tls = "never": the node receives over TLS but sends results back to the senders '
               'unencrypted' in w for w in config_warnings(plain_back))

    always = TLSConfig(sender_tls="always", sender_ca_certificates=pki["ca.crt"])  # receives plain, returns over TLS
    context = sender_client_context(always)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.get_ca_certs()
    with pytest.raises(Exception, match="sender_tls"):
        TLSConfig(sender_tls="sometimes")


def test_a_separate_ca_verifies_the_senders_storage_scp(pki, tmp_path):
    other = make_pki(tmp_path, "other")  # the senders' SCP certificates come from another CA
    tls = TLSConfig(enabled=True, certificate=pki["server.crt"], private_key=pki["server.key"],
                    ca_certificates=pki["ca.crt"], sender_ca_certificates=other["ca.crt"])
    trusted = [dict(item[0] for item in ca["subject"])["commonName"] for ca in sender_client_context(tls).get_ca_certs()]
    assert trusted == ["dicomnode test CA other"]


def test_the_node_sends_plain_to_the_sender_where_sender_tls_is_never(pki, tmp_path):
    from dicomnode.node import Node

    node = Node(_tls_node(pki, tmp_path, sender_tls="never"), analyser=object())
    try:
        assert node.ssl_context_for("sender") is None
    finally:
        node.db.close()


def test_config_check_warns_about_a_tls_private_key_others_can_read(pki, tmp_path):
    key = tmp_path / "node_open.key"
    key.write_bytes(pki["server.key"].read_bytes())
    key.chmod(0o644)
    config = Config.model_validate({"node": {"tls": {"enabled": True, "certificate": str(pki["server.crt"]),
                                                     "private_key": str(key)}}})
    warnings = preflight_warnings(config, models=False, sections={"node", "destinations"})
    assert any(w.startswith("node.tls.private_key:") and "readable by other users (mode 0644)" in w
               for w in warnings), warnings
    key.chmod(0o600)
    assert not any("private_key" in w for w in preflight_warnings(config, models=False,
                                                                  sections={"node", "destinations"}))


def test_a_password_in_the_url_query_is_masked_wherever_the_url_is_shown():
    url = state_url("postgresql://dicomnode@127.0.0.1:11349/dicomnode?password=S3cretPW&sslmode=disable")
    shown = describe_url(url)
    assert "S3cretPW" not in shown and "password=***" in shown and "sslmode=disable" in shown
    assert "S3cretPW" not in describe_url(state_url("postgresql://u:S3cretPW@h/db?sslpassword=S3cretPW"))
    problem = _unreachable(url, RuntimeError("invalid option password=S3cretPW"))
    assert "S3cretPW" not in problem


def test_log_lines_give_series_and_sop_instance_uids_as_log_ids():
    sop, series = "1.2.826.0.1.3680043.8.498.62721111", "1.2.826.0.1.3680043.8.498.94302222"
    text = (f"duplicate SOP instance {sop} of series {series} (MR Image Storage 1.2.840.10008.5.1.4.1.1.4) "
            f"from 127.0.0.1 version 3.0.4")
    hashed = hash_uids(text)
    assert sop not in hashed and series not in hashed
    assert f"uid:{short_hash(sop)}" in hashed and f"uid:{short_hash(series)}" in hashed
    assert "1.2.840.10008.5.1.4.1.1.4" in hashed and "127.0.0.1" in hashed and "3.0.4" in hashed
    record = logging.LogRecord("dicomnode.net.scp", logging.INFO, __file__, 1, "stored %s", (sop,), None)
    assert UIDFilter().filter(record) and record.getMessage() == f"stored uid:{short_hash(sop)}"


def test_log_lines_hash_every_instance_uid_however_it_is_written():
    from dicomnode.uids import new_uid

    sop, study = "1.2.826.0.1.3680043.2.1125.1.123456", "1.2.840.0113619.2.55.3.604688119.971.1234"  # leading zero
    result = new_uid()  # the node's own SEG / SR / PDF UIDs: 2.25.<UUID integer>, three components
    assert result.startswith("2.25.")
    lines = {
        f"C-STORE of SOP instance {sop} of study {study} from 'SCANNER1' refused (0x0111 Duplicate SOP Instance): ... "
        f"kept in /srv/dicomnode/conflicts/3f9a0b12cd45/{sop}.9e1d0c2a4b6f.dcm. The stored copy is kept": (sop, study),
        f"stored /srv/dicomnode/spool/ab/cd/{sop}.dcm": (sop,),
        f"study {study}.": (study,),
        f"destination pacs: {result} not sent: association rejected": (result,),
        f"SEG (Segmentation) series 9001 {result}; SOP instance {sop}": (result, sop),
    }
    for line, uids in lines.items():
        hashed = hash_uids(line)
        for uid in uids:
            assert uid not in hashed, hashed
            assert f"uid:{short_hash(uid)}" in hashed, hashed
    assert hash_uids(f"spool/{sop}.dcm") == f"spool/uid:{short_hash(sop)}.dcm"
    assert hash_uids(f"study {study}.") == f"study uid:{short_hash(study)}."


def test_log_lines_keep_the_sop_classes_transfer_syntaxes_and_certificate_oids_an_admin_needs():
    kept = [
        "C-STORE of 1.3.12.2.1107.5.9.1 from 'SCANNER1' acknowledged and dropped (node.non_mr_objects = drop)",
        "SOP Class UID 1.2.840.113619.4.26 in the dataset differs from 1.2.840.10008.5.1.4.1.1.4 requested",
        "presentation context rejected: abstract syntax 1.2.392.200036.9116.7.8.1.1.1 not supported",
        "no decoder for transfer syntax 1.2.840.10008.1.2.4.201 (High-Throughput JPEG 2000)",
        "MediaStorageSOPClassUID=1.3.46.670589.11.0.0.12.4",
        "TLS handshake from 10.1.2.3 refused: certificate lacks extended key usage 1.3.6.1.5.5.7.3.2 (clientAuth)",
        "unsupported signature algorithm OID 1.2.840.113549.1.1.10 in the peer certificate",
        "connection from 127.0.0.1 refused: dicomnode 3.0.4, Python 3.11.7, 2026.12.06",
    ]
    for line in kept:
        assert hash_uids(line) == line, hash_uids(line)
    instance = "1.3.6.1.4.1.14519.5.2.1.7009.2403.1234567"  # an instance UID under a private-enterprise root
    assert hash_uids(f"SOP instance {instance} stored") == f"SOP instance uid:{short_hash(instance)} stored"


def test_process_writes_its_outputs_owner_only_whatever_the_umask(tmp_path):
    from dicomnode.process import OUTPUT_FILE_MODE, check_writable
    from dicomnode.spool import write_durably

    previous = os.umask(0o022)
    try:
        out = tmp_path / "out"
        check_writable(out)
        write_durably(out / "summary.json", b"{}", mode=OUTPUT_FILE_MODE)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert stat.S_IMODE((out / "summary.json").stat().st_mode) == 0o600
