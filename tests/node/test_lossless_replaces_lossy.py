"""A lossless original re-sent after a lossy copy under the same SOP UIDs (an archive that aged the study to lossy
keeps the UIDs) replaces the lossy copy and re-opens the study as a late image does; a lossy copy after the lossless
one keeps the lossless one (break45c #1)."""
from __future__ import annotations

import copy
import logging

import pydicom

from dicomnode.state import DONE, RECEIVED
from tests.hardening.hardening_support import store_one, synthetic_mr
from tests.node.test_storage_safety import node  # noqa: F401 - the fixture: a started node that analyses nothing


def _lossy_copy(original):
    lossy = copy.deepcopy(original)
    pixels = lossy.pixel_array.copy()
    pixels[:8, :8] += 3  # what a lossy codec changes
    lossy.PixelData = pixels.astype("<u2").tobytes()
    lossy.LossyImageCompression = "01"
    lossy.LossyImageCompressionRatio = 20
    return lossy


def _stored(node, original):
    (row,) = node.db.study_instances(str(original.StudyInstanceUID))
    return row, pydicom.dcmread(node.spool.path_of(row["path"]))


def test_a_lossless_original_replaces_the_stored_lossy_copy_and_reopens_the_study(node, caplog):
    original = synthetic_mr()
    key = str(original.StudyInstanceUID)
    assert store_one(node.scp.port, _lossy_copy(original)).Status == 0
    node.db.set_study_state(key, DONE)
    generation = node.db.study(key)["generation"]
    with caplog.at_level(logging.INFO):
        assert store_one(node.scp.port, original).Status == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    (line,) = [r.getMessage() for r in caplog.records if "lossless copy replaces it" in r.getMessage()]
    assert "as a lossless copy of the stored lossy one" in line and "new SOP Instance UID" not in line
    row, stored = _stored(node, original)
    assert "LossyImageCompression" not in stored and (stored.pixel_array == original.pixel_array).all()
    study = node.db.study(key)
    assert study["state"] == RECEIVED and study["generation"] == generation + 1  # analysed again, as a late image
    assert not list((node.storage_dir / "conflicts").rglob("*.dcm"))


def test_a_lossy_copy_after_the_lossless_original_keeps_the_original(node, caplog):
    original = synthetic_mr()
    key = str(original.StudyInstanceUID)
    assert store_one(node.scp.port, original).Status == 0
    node.db.set_study_state(key, DONE)
    with caplog.at_level(logging.INFO):
        assert store_one(node.scp.port, _lossy_copy(original)).Status == 0
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "as a lossy copy" in warning and "the first copy is kept" in warning
    row, stored = _stored(node, original)
    assert "LossyImageCompression" not in stored
    assert node.db.study(key)["state"] == DONE
