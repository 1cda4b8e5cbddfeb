"""A lossless original re-sent after a lossy copy under the same SOP UIDs (an archive that aged the study to lossy
keeps the UIDs) replaces the lossy copy and re-opens the study as a late image does; a lossy copy after the lossless
one keeps the lossless one (break45c #1). A copy whose only change is the patient's height, weight or age (entered
after the scan, the study sent again under its UIDs) replaces the stored one too (break45a #6, break46)."""
from __future__ import annotations

import copy
import io
import logging

import pydicom
import pytest

from dicomnode.analysis.cine_metrics import HEIGHT_RANGE_M, WEIGHT_RANGE_KG
from dicomnode.spool import CORRECTABLE_RANGES, content_differences
from dicomnode.state import COMPLETE, DONE, RECEIVED
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


def test_a_corrected_height_and_weight_replace_the_stored_copies_and_reopen_the_study(node, caplog):
    """break45a #6: PatientSize / PatientWeight entered after the scan and the study sent again under the same SOP
    Instance UIDs were logged and dropped; the results kept saying "no indexed values: PatientSize and PatientWeight
    absent", and `retry --reanalyse` re-used the first copies. Now the corrected copies replace the stored ones and
    the study is analysed again (generation + 1), so the new results (with the indexed values) supersede the old."""
    study_uid = "1.2.826.0.1.3680043.8.498.46001"
    originals = [synthetic_mr(study_uid=study_uid, series_uid=study_uid + ".1", instance=n, position=8.0 * n)
                 for n in range(1, 4)]
    for dataset in originals:
        assert store_one(node.scp.port, dataset).Status == 0
    node.db.set_study_state(study_uid, DONE)
    generation = node.db.study(study_uid)["generation"]
    with caplog.at_level(logging.INFO):
        for dataset in originals:
            corrected = copy.deepcopy(dataset)
            corrected.PatientWeight, corrected.PatientSize, corrected.PatientAge = 80, 1.75, "063Y"
            assert store_one(node.scp.port, corrected).Status == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    lines = [r.getMessage() for r in caplog.records if "the corrected copy replaces it" in r.getMessage()]
    assert len(lines) == 3 and "height, weight or age corrected" in lines[0]
    rows = node.db.study_instances(study_uid)
    assert len(rows) == 3
    for row in rows:
        stored = pydicom.dcmread(node.spool.path_of(row["path"]))
        assert (float(stored.PatientWeight), float(stored.PatientSize), stored.PatientAge) == (80.0, 1.75, "063Y")
    study = node.db.study(study_uid)
    assert study["state"] == RECEIVED and study["generation"] == generation + 1  # analysed again, as a late image
    assert node.scp.different_resends.recent() == []


def test_a_correction_that_also_changes_the_identity_is_not_applied(node, caplog):
    """Only the body measurements are applied: a re-send that changes the patient's name (or a PACS rewriting the
    PatientID on forwarding) with them keeps the first copy, as before, WARNING and status note."""
    original = synthetic_mr()
    key = str(original.StudyInstanceUID)
    assert store_one(node.scp.port, original).Status == 0
    node.db.set_study_state(key, DONE)
    resent = copy.deepcopy(original)
    resent.PatientWeight, resent.PatientName = 80, "OTHER^NAME"
    with caplog.at_level(logging.INFO):
        assert store_one(node.scp.port, resent).Status == 0
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "the first copy is kept" in warning
    row, stored = _stored(node, original)
    assert "PatientWeight" not in stored and str(stored.PatientName) == str(original.PatientName)
    assert node.db.study(key)["state"] == DONE
    (item,) = node.scp.different_resends.recent()
    assert item["differing"] == ["PatientName", "PatientWeight"]


def _encoded(dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("received, corrects", [
    ({}, False),  # stripped by an anonymising or older route: a removal, not a correction
    ({"PatientWeight": "0", "PatientSize": "1.80", "PatientAge": "045Y"}, False),  # zeroed
    ({"PatientWeight": "", "PatientSize": "1.80", "PatientAge": "045Y"}, False),  # emptied
    ({"PatientWeight": "80", "PatientSize": "180", "PatientAge": "045Y"}, False),  # centimetres
    ({"PatientWeight": "80000", "PatientSize": "1.80", "PatientAge": "045Y"}, False),  # grams
    ({"PatientWeight": "80", "PatientSize": "1.80", "PatientAge": "000Y"}, False),
    ({"PatientWeight": "80", "PatientSize": "1.80"}, False),  # the age removed, the rest the same
    ({"PatientWeight": "82.5", "PatientSize": "1.80", "PatientAge": "045Y"}, True),  # a changed weight
    ({"PatientWeight": "80", "PatientSize": "1.80", "PatientAge": "046Y", "PatientSex": "M"}, False),  # sex too
])
def test_only_added_or_changed_valid_measurements_correct_the_stored_copy(received, corrects):
    """review46 #4: a re-send that removes, empties or zeroes PatientWeight / PatientSize / PatientAge (or writes
    them in the wrong unit) is no correction: the stored copy (80 kg, 1.80 m, 45 years) is kept."""
    original = synthetic_mr()
    stored = copy.deepcopy(original)
    stored.PatientWeight, stored.PatientSize, stored.PatientAge = "80", "1.80", "045Y"
    copy_received = copy.deepcopy(original)
    for keyword, value in received.items():
        setattr(copy_received, keyword, value)
    assert content_differences(_encoded(copy_received), _encoded(stored)).corrects_measurements() is corrects


def test_added_measurements_on_a_copy_without_them_correct_it():
    original = synthetic_mr()
    corrected = copy.deepcopy(original)
    corrected.PatientWeight, corrected.PatientSize, corrected.PatientAge = "80", "1.80", "6M"
    assert content_differences(_encoded(corrected), _encoded(original)).corrects_measurements()


def test_the_correction_ranges_are_those_bsa_takes_as_plausible():
    assert CORRECTABLE_RANGES == {"PatientWeight": WEIGHT_RANGE_KG, "PatientSize": HEIGHT_RANGE_M}


def test_a_resend_without_the_measurements_keeps_the_stored_copy(node, caplog):
    """review46 #4, end to end: a double-routed study, the second route forwarding it without height and weight. The
    stored copy with them is kept (WARNING, counted as a re-send with different content), and the study is not
    analysed again (the re-analysis would lose the indexed values and retire the correct results)."""
    original = synthetic_mr()
    original.PatientWeight, original.PatientSize = 80, 1.75
    key = str(original.StudyInstanceUID)
    assert store_one(node.scp.port, original).Status == 0
    node.db.set_study_state(key, DONE)
    stripped = copy.deepcopy(original)
    del stripped.PatientWeight, stripped.PatientSize
    with caplog.at_level(logging.INFO):
        assert store_one(node.scp.port, stripped).Status == 0
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "the first copy is kept" in warning
    row, stored = _stored(node, original)
    assert (float(stored.PatientWeight), float(stored.PatientSize)) == (80.0, 1.75)
    assert node.db.study(key)["state"] == DONE
    (item,) = node.scp.different_resends.recent()
    assert item["differing"] == ["PatientSize", "PatientWeight"]


def test_a_weight_corrected_on_part_of_the_study_is_the_one_analysed(node):
    """break47b #1: the corrected weight re-sent for only some of the study's instances (here the first one, whose
    header the BSA was read from) was ignored. The node reads the study's instances oldest received first (a replaced
    copy is received now), so the weight received last is the one used, and the disagreement is said."""
    from dicomnode.cmr.study import load_studies

    study_uid = "1.2.826.0.1.3680043.8.498.47202"
    originals = [synthetic_mr(study_uid=study_uid, series_uid=study_uid + ".1", instance=n, position=8.0 * n)
                 for n in range(1, 4)]
    for dataset in originals:
        dataset.PatientWeight, dataset.PatientSize = 95, 1.84
        assert store_one(node.scp.port, dataset).Status == 0
    first = node.db.study_instances(study_uid)
    # before any analysis (the first transmission) nothing is a re-send, whatever came last
    assert node._resent_paths(study_uid, None, first, [node.spool.path_of(r["path"]) for r in first]) == set()
    node.db.set_study_state(study_uid, COMPLETE)
    earlier = node.db.start_analysis(study_uid, node.db.study(study_uid)["generation"])  # the first analysis
    node.db.fail_analysis(earlier, study_uid, node.db.study(study_uid)["generation"], "read its instances")
    node.db.set_study_state(study_uid, DONE)
    corrected = copy.deepcopy(originals[0])
    corrected.PatientWeight = 60
    assert store_one(node.scp.port, corrected).Status == 0
    rows = node.db.study_instances(study_uid)
    paths = [node.spool.path_of(row["path"]) for row in rows]  # as the node reads them
    resent = node._resent_paths(study_uid, None, rows, paths)
    assert resent == {paths[-1]}  # received after the earlier analysis: a re-send
    (study,) = load_studies(paths, in_receive_order=True, resent=resent)
    assert study.patient.weight_kg == 60.0
    (line,) = study.patient.disagreements
    assert "PatientWeight (95 kg on 2 instance(s), 60 kg on 1 instance(s)): 60 kg is used" in line


@pytest.mark.parametrize("recorded", [True, False], ids=["series_read recorded", "older analysis: its start"])
def test_a_series_first_received_after_an_analysis_counts_with_the_majority(node, recorded):
    """review48b #3: a scanner sending series by series is analysed between them; the series that come later are not
    sent again, so the value most instances hold decides (320 cine instances at 1.78 m / 82 kg, then 16 LGE at 1.62 m
    / 61 kg gave BSA 1.66 instead of 2.01 m²). An instance that replaces one the analysis read (a corrected re-send,
    same SOP Instance UID) is sent again, and its correction wins."""
    from dicomnode.cmr.study import load_studies

    study_uid = "1.2.826.0.1.3680043.8.498.48303" + ("1" if recorded else "2")
    cine = [synthetic_mr(study_uid=study_uid, series_uid=study_uid + ".1", instance=n, position=8.0 * n)
            for n in range(1, 4)]
    for dataset in cine:
        dataset.PatientWeight, dataset.PatientSize = 82, 1.78
        assert store_one(node.scp.port, dataset).Status == 0
    node.db.set_study_state(study_uid, COMPLETE)
    generation = node.db.study(study_uid)["generation"]
    first = node.db.start_analysis(study_uid, generation)  # the first analysis reads the cine series
    if recorded:
        read = node.db.study_instances(study_uid)
        assert node.db.finish_analysis(first, study_uid, generation, {
            "instances_analysed": len(read), "instances_received_until": max(r["received_at"] for r in read),
            "series_read": [study_uid + ".1"]}, [], [])
    else:
        node.db.fail_analysis(first, study_uid, generation, "read its instances")
    node.db.set_study_state(study_uid, DONE)
    lge = [synthetic_mr(study_uid=study_uid, series_uid=study_uid + ".2", instance=n, position=8.0 * n)
           for n in range(1, 3)]
    for dataset in lge:  # a new series, sent after the analysis: not a re-send
        dataset.PatientWeight, dataset.PatientSize = 61, 1.62
        assert store_one(node.scp.port, dataset).Status == 0
    rows = node.db.study_instances(study_uid)
    paths = [node.spool.path_of(row["path"]) for row in rows]
    assert node._resent_paths(study_uid, None, rows, paths) == set()
    (study,) = load_studies(paths, in_receive_order=True, resent=set())
    assert study.patient.weight_kg == 82.0 and study.patient.height_m == 1.78
    weight = next(line for line in study.patient.disagreements if "PatientWeight" in line)
    assert "82 kg is used" in weight and "the value most instances hold" in weight
    # a corrected re-send of a cine instance the analysis read: the correction wins
    corrected = copy.deepcopy(cine[0])
    corrected.PatientWeight = 70
    assert store_one(node.scp.port, corrected).Status == 0
    rows = node.db.study_instances(study_uid)
    paths = [node.spool.path_of(row["path"]) for row in rows]
    resent = node._resent_paths(study_uid, None, rows, paths)
    assert resent == {paths[[r["sop_instance_uid"] for r in rows].index(str(cine[0].SOPInstanceUID))]}
    (study,) = load_studies(paths, in_receive_order=True, resent=resent)
    assert study.patient.weight_kg == 70.0
    assert any("70 kg is used" in line and "sent again" in line for line in study.patient.disagreements)
