"""studies.reanalyse_late_instances: an instance after the results went out re-opens the study, or (false) is
only stored."""
from __future__ import annotations

import pytest

from dicomnode.config import Config
from dicomnode.node import Node
from dicomnode.state import DONE, RECEIVED
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
            assert node.scheduler.get_job(f"quiet:{key}") is None
    finally:
        node.stop()
