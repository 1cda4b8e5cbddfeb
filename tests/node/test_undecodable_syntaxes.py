"""MR images are accepted only in a transfer syntax the node can decode (break45c #2): a context proposing MR Image
Storage only in Encapsulated Uncompressed (1.2.840.10008.1.2.1.98) or JPEG XL is refused at negotiation (the sender
then transcodes), instead of 0x0000 for every instance and the study declined for its pixel data. Other storage
classes, private ones included, stay accepted in the syntax proposed first."""
from __future__ import annotations

import logging

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import BasicTextSRStorage, EnhancedMRImageStorage, MRImageStorage

from dicomnode.config import Config
from dicomnode.net.scp import StorageSCP, decodable_syntaxes
from dicomnode.spool import Spool
from dicomnode.state import StateDB

ENCAPSULATED_UNCOMPRESSED = "1.2.840.10008.1.2.1.98"
JPEG_XL = "1.2.840.10008.1.2.4.112"
PRIVATE_CLASS = "1.3.6.1.4.1.9590.100.1.2.999"


@pytest.fixture
def scp(tmp_path):
    config = Config.model_validate({"node": {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 0,
                                             "allowed_calling_aes": ["*"]}})
    db = StateDB(tmp_path / "store" / "state.sqlite3")
    server = StorageSCP(config, Spool(tmp_path / "store", db, min_free_space_mb=0))
    server.start()
    yield server
    server.stop()
    db.close()


def _negotiate(port: int, contexts: list[tuple[str, list[str]]]) -> dict[str, str | None]:
    ae = AE(ae_title="SCANNER1")
    for abstract, syntaxes in contexts:
        ae.add_requested_context(abstract, syntaxes)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMNODE")
    assert assoc.is_established
    try:
        results = {f"{cx.context_id}": cx.transfer_syntax[0] for cx in assoc.accepted_contexts}
        results.update({f"{cx.context_id}": None for cx in assoc.rejected_contexts})
        return results
    finally:
        assoc.release()


def test_mr_contexts_in_undecodable_syntaxes_are_refused(scp, caplog):
    caplog.set_level(logging.WARNING, logger="dicomnode.net.scp")
    results = _negotiate(scp.port, [
        (MRImageStorage, [ENCAPSULATED_UNCOMPRESSED]),  # context 1
        (EnhancedMRImageStorage, [JPEG_XL]),  # 3
        (MRImageStorage, [ENCAPSULATED_UNCOMPRESSED, "1.2.840.10008.1.2.1"]),  # 5: the decodable one is chosen
        (BasicTextSRStorage, [ENCAPSULATED_UNCOMPRESSED]),  # 7: not analysed: stored as proposed
        (PRIVATE_CLASS, ["1.2.840.10008.1.2.1"]),  # 9: a private class is still accepted
    ])
    assert results == {"1": None, "3": None, "5": "1.2.840.10008.1.2.1", "7": ENCAPSULATED_UNCOMPRESSED,
                       "9": "1.2.840.10008.1.2.1"}
    refused = [r.getMessage() for r in caplog.records if "cannot decode" in r.getMessage()]
    assert len(refused) == 2 and "Encapsulated Uncompressed" in refused[0] and "the sender should transcode" in refused[0]


def test_decodable_syntaxes_keep_every_syntax_decoded_today():
    decodable = decodable_syntaxes()
    for syntax in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2",
                   "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
                   "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81",
                   "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.5"):
        assert syntax in decodable
    assert ENCAPSULATED_UNCOMPRESSED not in decodable and JPEG_XL not in decodable
