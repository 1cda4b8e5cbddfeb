"""A study whose analysis failed through the node's own fault (a model that did not load, a pipeline that raised) is
`failed`, not `done` with nothing: `dicomnode status` shows it and `dicomnode retry` runs the analysis again."""
from __future__ import annotations

import time

from dicomnode.cli import main
from dicomnode.config import Config
from dicomnode.node import Node
from dicomnode.state import COMPLETE, DONE, FAILED
from dicomnode.types import StudyOutcome
from tests.hardening.hardening_support import store_one, synthetic_mr


class BrokenThenFixedAnalyser:
    """Fails like an unavailable model until `fixed`, then declines the (synthetic) study cleanly."""

    def __init__(self):
        self.fixed = False
        self.calls = 0

    def warm_up(self, names):
        return {}

    def analyse(self, study, pipelines, started_at=None, supersedes=None):
        self.calls += 1
        reason = "pipeline lge is unavailable: no backend could load it"
        if self.fixed:
            return StudyOutcome(summary={"study_instance_uid": study.study_instance_uid,
                                         "declined": [{"series_instance_uid": None, "reason": "no LGE stack"}]})
        return StudyOutcome(summary={"study_instance_uid": study.study_instance_uid,
                                     "declined": [{"series_instance_uid": None, "reason": reason}]}, errors=[reason])


def test_a_failed_analysis_is_failed_and_retry_runs_it_again(tmp_path, capsys):
    store = tmp_path / "store"
    config = Config.model_validate({"node": {"port": 0, "storage_dir": str(store), "min_free_space_mb": 0,
                                             "allowed_calling_aes": ["*"]}, "studies": {"quiet_seconds": 3600}})
    analyser = BrokenThenFixedAnalyser()
    node = Node(config, analyser=analyser)
    node.start(warm_up=False)
    try:
        first = synthetic_mr()
        assert store_one(node.scp.port, first).Status == 0
        key = str(first.StudyInstanceUID)
        node.scheduler.remove_job(f"quiet:{key}")
        node.completion.forget(key)
        node.db.set_study_state(key, COMPLETE)
        node.analyse_study(key, 0)
        study = node.db.study(key)
        assert study["state"] == FAILED and "pipeline lge is unavailable" in study["reason"]

        analyser.fixed = True
        (tmp_path / "node.toml").write_text(f'[node]\nstorage_dir = "{store}"\n')
        assert main(["retry", key, "--config", str(tmp_path / "node.toml")]) == 0
        assert "re-queued the failed analysis" in capsys.readouterr().out
        assert node.db.study(key)["state"] == COMPLETE
        node._enqueue_complete_studies()  # the node's requeue job, run now instead of in REQUEUE_SECONDS
        deadline = time.time() + 30
        while node.db.study(key)["state"] != DONE and time.time() < deadline:
            time.sleep(0.05)
        assert node.db.study(key)["state"] == DONE and analyser.calls == 2
        # nothing left to retry: said so, nothing changed
        assert main(["retry", key, "--config", str(tmp_path / "node.toml")]) == 0
        assert "nothing to retry" in capsys.readouterr().out
        assert node.db.study(key)["state"] == DONE
    finally:
        node.stop()
