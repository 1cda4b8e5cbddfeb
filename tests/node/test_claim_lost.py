"""break42a finding 2: a state-database outage longer than the lease during an analysis. The worker whose analysis
met the outage must not give back (or take again) the claim another worker holds by then, must say truthfully that
it lost the claim, and the outage is said with one ERROR line, no traceback."""
from __future__ import annotations

import logging
import time

from dicomnode.node import Node
from dicomnode.state import ANALYSING, StateDB
from tests.node.test_state_outage import Switch, errors_of
from tests.node.test_storage_safety import CountingAnalyser, complete_study, node_config, set_columns


def test_an_outage_longer_than_the_lease_leaves_the_study_to_the_worker_that_took_it(tmp_path, monkeypatch, caplog):
    node = Node(node_config(tmp_path), analyser=CountingAnalyser())
    node.start(warm_up=False)
    other = StateDB(node.db.url, process_id="worker-b")
    try:
        key = complete_study(node)
        caplog.set_level(logging.INFO)
        outage = Switch(monkeypatch, node.db, "earlier_reports", "release_claim", "fail_analysis")
        node.analyse_study(key, 0)  # the database goes away mid-analysis: nothing recorded, nothing released
        assert node.db.study(key)["state"] == ANALYSING
        assert len(errors_of(caplog)) == 1 and not [r for r in caplog.records if r.exc_info]

        set_columns(node.db, "UPDATE studies SET lease_until=:t", t=time.time() - 1)  # the outage outlasts the lease
        assert other.claim_next_study() == (key, 0)
        analysis = other.start_analysis(key, 0)
        outage.down = False
        caplog.clear()
        node.release_unrecorded()  # back: the late release finds the claim is no longer this process's
        study = node.db.study(key)
        assert study["state"] == ANALYSING and study["claimed_by"] == "worker-b"
        assert node._unreleased == {}
        assert ("claim lost: the lease expired during a state database outage and another worker (process worker-b) "
                "took the study") in caplog.text
        assert "superseded by newer instances" not in caplog.text and "claim released" not in caplog.text
        assert other.finish_analysis(analysis, key, 0, {}, [], [])  # the other worker's analysis stands
    finally:
        other.close()
        node.stop()


def test_a_worker_whose_claim_was_taken_says_so_instead_of_superseded(tmp_path, caplog):
    node = Node(node_config(tmp_path), analyser=CountingAnalyser())
    node.start(warm_up=False)
    other = StateDB(node.db.url, process_id="worker-b")
    try:
        key = complete_study(node)
        caplog.set_level(logging.INFO)
        real = node.analyser.analyse

        def slow(*args, **kwargs):  # the lease runs out and another worker takes the study during the analysis
            set_columns(node.db, "UPDATE studies SET lease_until=:t", t=time.time() - 1)
            assert other.claim_next_study() == (key, 0)
            return real(*args, **kwargs)

        node.analyser.analyse = slow
        node.analyse_study(key, 0)
        assert "claim lost: the lease expired and another worker (process worker-b) took the study" in caplog.text
        assert "superseded by newer instances" not in caplog.text
        assert node.db.study(key)["claimed_by"] == "worker-b"
    finally:
        other.close()
        node.stop()
