"""studies.reanalyse_late_instances: an MR image after the results went out re-opens the study, or (false) is
only stored; any other object (the node's own results routed back by the PACS) never re-opens it."""
from __future__ import annotations

import pytest
from pydicom.uid import Comprehensive3DSRStorage, SegmentationStorage

from dicomnode.config import Config
from dicomnode.node import Node
from dicomnode.state import COMPLETE, DONE, RECEIVED
from tests.hardening.hardening_support import store_one, synthetic_mr


class NoAnalysis:
    def warm_up(self, names):
        return {}


@pytest.mark.parametrize("reanalyse", [True, False])
def test_an_instance_after_the_results_went_out(tmp_path, reanalyse):
    config = Config.model_validate({"node": {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 0,
                                             "allowed_calling_aes": ["*"]},
                                    "studies": {"quiet_seconds": 3600, "reanalyse_late_instances": reanalyse}})
    node = Node(config, analyser=NoAnalysis())
    node.start(warm_up=False)
    try:
        first = synthetic_mr()
        assert store_one(node.scp.port, first).Status == 0
        key = str(first.StudyInstanceUID)
        node.db.set_study_state(key, DONE)  # as if analysed and sent
        node.scheduler.remove_job(f"quiet:{key}")
        node.completion.forget(key)
        assert store_one(node.scp.port, synthetic_mr(study_uid=key, instance=2)).Status == 0
        study = node.db.study(key)
        assert len(node.db.study_instances(key)) == 2  # stored either way
        if reanalyse:
            assert study["state"] == RECEIVED and study["generation"] == 1
            assert node.scheduler.get_job(f"quiet:{key}") is not None
        else:
            assert study["state"] == DONE and "reanalyse_late_instances" in study["reason"]
            # nothing re-analysed: the generation stays the analysed one, and the reason says what was (not) sent
            assert study["generation"] == 0
            assert "nothing sent" in study["reason"] and "dicomnode retry --reanalyse" in study["reason"]
            assert node.scheduler.get_job(f"quiet:{key}") is None
    finally:
        node.stop()


def test_the_nodes_own_results_routed_back_do_not_start_a_reanalysis(tmp_path):
    config = Config.model_validate({"node": {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 0,
                                             "allowed_calling_aes": ["*"]}, "studies": {"quiet_seconds": 3600}})
    node = Node(config, analyser=NoAnalysis())
    node.start(warm_up=False)
    try:
        first = synthetic_mr()
        assert store_one(node.scp.port, first).Status == 0
        key = str(first.StudyInstanceUID)
        node.db.set_study_state(key, DONE)
        node.scheduler.remove_job(f"quiet:{key}")
        node.completion.forget(key)
        for sop_class, modality in ((SegmentationStorage, "SEG"), (Comprehensive3DSRStorage, "SR")):
            echoed = synthetic_mr(study_uid=key, instance=2)
            echoed.SOPClassUID = echoed.file_meta.MediaStorageSOPClassUID = sop_class
            echoed.Modality = modality
            assert store_one(node.scp.port, echoed, calling="ORTHANC").Status == 0
        study = node.db.study(key)
        assert len(node.db.study_instances(key)) == 3  # kept (non_mr_objects = keep)
        assert study["state"] == DONE and study["generation"] == 0
        assert node.scheduler.get_job(f"quiet:{key}") is None
    finally:
        node.stop()


def test_late_instances_kept_unanalysed_are_counted_in_the_reason(tmp_path):
    """break47a #4: with reanalyse_late_instances = false a study whose analysis read one instance and sent nothing
    must not end with nothing sent and no reason: its reason counts the instances the analysis left out, says that
    nothing was sent and how to analyse them, and the study keeps the generation that was analysed."""
    config = Config.model_validate({"node": {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 0,
                                             "allowed_calling_aes": ["*"]},
                                    "studies": {"quiet_seconds": 3600, "reanalyse_late_instances": False}})
    node = Node(config, analyser=NoAnalysis())
    node.start(warm_up=False)
    try:
        first = synthetic_mr()
        assert store_one(node.scp.port, first).Status == 0
        key = str(first.StudyInstanceUID)
        node.scheduler.remove_job(f"quiet:{key}")
        node.completion.forget(key)
        node.db.set_study_state(key, COMPLETE)
        analysis = node.db.start_analysis(key, 0)
        assert analysis is not None and node.db.finish_analysis(analysis, key, 0, {}, [], [])
        for instance in (2, 3):
            assert store_one(node.scp.port, synthetic_mr(study_uid=key, instance=instance)).Status == 0
        study = node.db.study(key)
        assert study["state"] == DONE and study["generation"] == 0
        assert study["reason"].startswith("2 of 3 MR image(s) stored after completion, not analysed")
        assert "(generation 0) read 1, nothing sent" in study["reason"]
        assert node.scheduler.get_job(f"quiet:{key}") is None
    finally:
        node.stop()
