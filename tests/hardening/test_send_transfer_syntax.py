"""An object stored in a transfer syntax the destination accepts no presentation context for - compressed or the
retired Explicit VR Big Endian, sent to a PACS that takes only the uncompressed little endian syntaxes (DCMTK's
storescp by default) - is a permanent refusal naming the SOP class, the transfer syntax and what to configure: a
dead letter at once, not pynetdicom's raw error retried as transient (break40a F1). Implicit VR and Deflated
objects are converted by pynetdicom and delivered."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydicom.uid import (DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian,
                         JPEGLSLossless, RLELossless)

from dicomnode.config import DispatchConfig
from dicomnode.dispatch import Dispatcher
from dicomnode.net.scu import carries, send_files
from tests.conftest import require_peer
from tests.hardening import test_send_diagnostics as diagnostics
from tests.hardening.hardening_support import save, synthetic_mr
from tests.hardening.test_send_diagnostics import queue_results
from tests.peers import StoreSCP, require_private_netns

store = diagnostics.store  # fixture: a state in tmp_path

#: transfer syntax -> DCMTK command converting IN to OUT
CONVERSIONS = {ExplicitVRBigEndian: ["dcmconv", "+tb"], JPEGLSLossless: ["dcmcjpls", "+el"],
               RLELossless: ["dcmcrle"], ImplicitVRLittleEndian: ["dcmconv", "+ti"],
               DeflatedExplicitVRLittleEndian: ["dcmconv", "+td"]}


def mr_in(syntax: str, folder: Path, name: str) -> Path:
    plain = save(synthetic_mr(), folder / f"{name}.le.dcm")
    out = folder / f"{name}.dcm"
    command = CONVERSIONS[syntax]
    subprocess.run([require_peer(command[0]), *command[1:], str(plain), str(out)], check=True, capture_output=True)
    plain.unlink()
    return out


@pytest.fixture
def storescp(tmp_path):
    for program in ("storescp", "echoscu"):
        require_peer(program)
    require_private_netns()
    with StoreSCP(tmp_path / "pacs") as peer:
        yield peer


@pytest.mark.parametrize("accepted, syntax, ok", [
    ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2", True), ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1.99", True),
    ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", False), ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.80", False),
    ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.80", True), ("1.2.840.10008.1.2.2", "1.2.840.10008.1.2.2", True)])
def test_which_accepted_context_carries_which_transfer_syntax(accepted, syntax, ok):
    assert carries(accepted, syntax) is ok


@pytest.mark.peers
@pytest.mark.parametrize("syntax", [ExplicitVRBigEndian, JPEGLSLossless, RLELossless], ids=lambda s: s.name)
def test_an_object_in_a_syntax_the_destination_refuses_is_a_permanent_refusal_naming_it(tmp_path, storescp, syntax):
    name = syntax.name  # e.g. "Explicit VR Big Endian", "JPEG-LS Lossless Image Compression"
    refused = mr_in(syntax, tmp_path / "out", "refused")
    fine = save(synthetic_mr(), tmp_path / "out" / "fine.dcm")
    first, second = send_files([refused, fine], "PACS", "127.0.0.1", storescp.port, timeout=20)
    assert not first.ok and first.permanent and first.status is None, first
    assert first.error.startswith("the destination accepts MR Image Storage (1.2.840.10008.5.1.4.1.1.4) only as "
                                  "Explicit VR Little Endian"), first.error
    assert f"not as {name} ({syntax})" in first.error and f"configure it to accept {name}" in first.error
    assert second.ok and len(storescp.stored()) == 1  # the rest of the batch is sent


@pytest.mark.peers
@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian], ids=lambda s: s.name)
def test_uncompressed_little_endian_objects_are_delivered(tmp_path, storescp, syntax):
    (result,) = send_files([mr_in(syntax, tmp_path / "out", "mr")], "PACS", "127.0.0.1", storescp.port, timeout=20)
    assert result.ok, result.error


@pytest.mark.peers
def test_a_big_endian_object_is_a_dead_letter_at_once_not_retried(tmp_path, storescp, store):
    """The README (dispatch): an object whose transfer syntax the destination accepts no presentation context for is
    a dead letter at once naming what to configure; before, Big Endian failed with pynetdicom's raw text and was
    retried as transient up to dispatch.max_attempts."""
    root, db = store
    queue_results(db, root, "1.7", [("pacs", storescp.port, mr_in(ExplicitVRBigEndian, root / "results", "be")),
                                    ("pacs", storescp.port, save(synthetic_mr(), root / "results" / "le.dcm"))])
    dispatcher = Dispatcher(db, root, DispatchConfig(max_attempts=8, initial_backoff_seconds=60), "DICOMNODE")
    dispatcher.run_once()
    dead, sent = db.outbox_for("1.7")
    assert dead["state"] == "dead" and dead["attempts"] == 1, dict(dead)
    assert "not as Explicit VR Big Endian" in dead["last_error"] and "configure it to accept" in dead["last_error"]
    assert sent["state"] == "sent", dict(sent)
