"""The node over the network with what sites send (issue 14): a stack sent one single-image series per slice, a few
seconds apart, gives ONE analysis at the PACS; a whole routed study (SR, SC, PR, KO, PDF, a private class) is
accepted by storescu and by an Orthanc route job, its MR images analysed."""
from __future__ import annotations

import json
import time

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE

from tests.conftest import require_peer
from tests.data.field_inputs import NON_MR_CLASSES, lge_variant, non_mr_objects
from tests.node.nodeproc import NodeProcess, storescu
from tests.peers import OrthancServer, free_port, require_private_netns

pytestmark = [pytest.mark.peers, pytest.mark.slow]

SR = "1.2.840.10008.5.1.4.1.1.88.34"


@pytest.fixture(scope="module")
def isolated():
    require_peer("storescu")
    require_peer("orthanc")
    require_private_netns()


def _psir_slices(paths):
    return [p for p in paths if "PSIR" in pydicom.dcmread(p, stop_before_pixels=True).ImageType]


def test_per_slice_series_sent_slowly_reach_the_pacs_as_one_analysis(isolated, tmp_path):
    """One single-image series per slice, 2.5 s apart (beyond the old 2 s expected-count grace, within the quiet
    time): before the fix every slice closed the study and each partial analysis was sent."""
    slices = _psir_slices(lge_variant(tmp_path / "in"))
    study_uid = str(pydicom.dcmread(slices[0], stop_before_pixels=True).StudyInstanceUID)
    node_port = free_port()
    with OrthancServer(tmp_path, aet="ORTHANC", modalities={"DICOMNODE": ("127.0.0.1", node_port)}) as orthanc:
        node = NodeProcess(tmp_path / "node", node_port, destinations={"ORTHANC": ("127.0.0.1", orthanc.dicom_port)},
                           quiet_seconds=6, pipelines=("lge",)).start()
        try:
            for path in slices:
                sent = storescu(node_port, [path])
                assert sent.returncode == 0, sent.stderr
                time.sleep(2.5)
            node.wait_states(states=("done",), timeout=300)
            analyses = node.db_rows("SELECT state FROM analyses")
            assert [a["state"] for a in analyses] == ["done"], analyses
            summary = node.summary(study_uid)
            assert summary["lge"] and {s["slices"] for s in summary["series"] if s["sequence"] == "lge"} == {8}
            results = orthanc.wait_for_instances(len(summary["outputs"]), study_uid, timeout=60)
            results = [r for r in results if r["Modality"] != "MR"]
            assert sum(r["Modality"] == "SR" for r in results) == 1
        finally:
            node.stop()


@pytest.fixture
def routed_study(tmp_path):
    """(MR images, non-MR objects of NON_MR_CLASSES, Study Instance UID) of one study, as a PACS holds it."""
    images = _psir_slices(lge_variant(tmp_path / "in" / "mr"))
    template = pydicom.dcmread(images[0], stop_before_pixels=True)
    return images, non_mr_objects(template, tmp_path / "in" / "other"), str(template.StudyInstanceUID)


def test_a_whole_routed_study_with_non_mr_objects_is_accepted_and_its_mr_analysed(isolated, tmp_path, routed_study):
    images, others, study_uid = routed_study
    node_port = free_port()
    node = NodeProcess(tmp_path / "node", node_port, quiet_seconds=3, pipelines=("lge",), allowed=("*",)).start()
    try:
        # storescu as a PACS forwarding a study: the non-MR objects come first; -R proposes each file's own class.
        # storescu refuses to send a class it does not know: the private one goes through pynetdicom.
        private = [p for p in others if pydicom.dcmread(p).SOPClassUID == NON_MR_CLASSES[-1][0]]
        sent = storescu(node_port, [p for p in others if p not in private] + images, extra=("-R",))
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert _send_with_pynetdicom(node_port, private[0]) == 0x0000
        node.wait_states(states=("done",), timeout=300)
        stored = node.db_rows("SELECT sop_class_uid FROM instances")
        assert {c for c, _ in NON_MR_CLASSES} <= {row["sop_class_uid"] for row in stored}
        summary = node.summary(study_uid)
        assert summary["lge"], summary["declined"]
        assert any("not an MR image" in d["reason"] for d in summary["declined"])
    finally:
        node.stop()


def _send_with_pynetdicom(port: int, path) -> int:
    dataset = pydicom.dcmread(path)
    ae = AE(ae_title="SCANNER1")
    ae.add_requested_context(dataset.SOPClassUID, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMNODE")
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(dataset).Status)
    finally:
        assoc.release()


def test_orthanc_routes_a_whole_study_to_the_node(isolated, tmp_path, routed_study):
    images, others, _ = routed_study
    node_port = free_port()
    with OrthancServer(tmp_path, aet="ORTHANC", modalities={"DICOMNODE": ("127.0.0.1", node_port)}) as orthanc:
        node = NodeProcess(tmp_path / "node", node_port, quiet_seconds=3600, pipelines=(), allowed=("ORTHANC",))
        node.start()
        try:
            ids = {orthanc.upload(path.read_bytes())["ParentStudy"] for path in others + images}
            assert len(ids) == 1
            job = orthanc.post_json("/modalities/dicomnode/store", {"Resources": list(ids), "Synchronous": True})
            assert job is not None
            stored = node.db_rows("SELECT sop_class_uid FROM instances")
            assert len(stored) == len(others) + len(images)
        finally:
            node.stop()


def test_grouping_by_accession_analyses_every_study_under_the_key(isolated, tmp_path):
    """Review defect 3: two Study Instance UIDs under one AccessionNumber are each analysed, none dropped."""
    def same_order(ds, _index):
        ds.AccessionNumber = "ACC-14"

    studies = [_psir_slices(lge_variant(tmp_path / "in" / name, same_order)) for name in ("a", "b")]
    uids = {str(pydicom.dcmread(s[0], stop_before_pixels=True).StudyInstanceUID) for s in studies}
    node_port = free_port()
    node = NodeProcess(tmp_path / "node", node_port, quiet_seconds=3, pipelines=("lge",))
    node.config_path.write_text(node.config_text.replace("[studies]\n", '[studies]\ngrouping_key = "AccessionNumber"\n'))
    node.start()
    try:
        sent = storescu(node_port, studies[0] + studies[1])
        assert sent.returncode == 0, sent.stderr
        rows = node.wait_states(states=("done",), timeout=300)
        assert len(rows) == 1  # one key
        summary = json.loads(rows[0]["summary_json"])
        assert {s["study_instance_uid"] for s in summary["studies"]} == uids
        assert all("lge" in s and s["outputs"] for s in summary["studies"]), summary
        results = node.db_rows("SELECT path FROM results")
        written = {str(pydicom.dcmread(node.storage / r["path"], stop_before_pixels=True).StudyInstanceUID)
                   for r in results}
        assert written == uids  # each study's results go into that study
    finally:
        node.stop()
