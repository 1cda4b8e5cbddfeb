"""break44c #5: `dicomnode status` says who claimed an analysis whose claim holder is gone (killed analyse
process), when the claim expires and that an analyse process takes it over (or that none runs); a process of this
machine whose pid no longer runs is shown ENDED at once, not as live for three heartbeats. Both state backends."""
from __future__ import annotations

import json
import subprocess
import sys
import time

from dicomnode.cli import main
from dicomnode.state import InstanceRow, StateDB
from tests.node.test_status_retry import node_state  # noqa: F401 (fixture)
from tests.node.test_storage_safety import set_columns
from tests.state_backends import pg_server, state_location  # noqa: F401 (fixtures)

STUDY = "1.2.826.0.1.3680043.8.498.11111111111111111111111111111111111111"


def _analysing_claimed_by_a_killed_process(db: StateDB) -> tuple[StateDB, int]:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # kill -9: a pid of this machine that no longer runs
    analyser = StateDB(db.url, process_id=f"vm:{gone.pid}", heartbeat_seconds=20, lease_seconds=60)
    analyser.add_instance(InstanceRow("1.2.9.1", STUDY, STUDY, f"{STUDY}.1", "1.2.840.10008.5.1.4.1.1.4",
                                      "1.2.840.10008.1.2.1", "MR", "spool/1.dcm", 1, "SCANNER1", time.time()))
    analyser.set_study_state(STUDY, "complete")
    assert analyser.start_analysis(STUDY, 0) is not None
    analyser.heartbeat(["analyse"], time.time())
    set_columns(db, "UPDATE nodes SET pid=:pid", pid=gone.pid)
    return analyser, gone.pid


def test_status_says_an_analysis_claimed_by_a_killed_process_is_not_running(node_state, capsys):
    db, config = node_state
    analyser, pid = _analysing_claimed_by_a_killed_process(db)
    try:
        assert main(["status", "--config", str(config)]) == 0
        out = capsys.readouterr().out
        line = next(line for line in out.splitlines() if line.startswith(f"vm:{pid}"))
        assert line.split()[-2] == "ENDED"  # its heartbeat is a second old, its pid is gone
        assert f"(ENDED: on this machine, pid {pid} no longer running: killed or crashed" in out
        study = next(line for line in out.splitlines() if STUDY in line)
        assert " analysing " in study
        assert (f"nobody is analysing it: claimed by vm:{pid}, which no longer runs (pid {pid} ended on this "
                f"machine); its claim expires in ") in study
        assert "then an analyse process takes it over; no analyse process is running: start one" in study
        assert main(["status", "--config", str(config), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        claim = next(s for s in report["studies"] if s["study_key"] == STUDY)["claim"]
        assert claim["claimed_by"] == f"vm:{pid}" and claim["holder"] == "ended" and 0 < claim["expires_in_s"] <= 60
        node = next(n for n in report["nodes"] if n["node_id"] == f"vm:{pid}")
        assert node["ended"] and not node["alive"]
        # its row removed (listed once as GONE), the claim expired, an analyse process running
        set_columns(db, "DELETE FROM nodes")
        set_columns(db, "UPDATE studies SET lease_until=:t", t=time.time() - 5)
        db.heartbeat(["analyse"], time.time())
        assert main(["status", "--config", str(config)]) == 0
        study = next(line for line in capsys.readouterr().out.splitlines() if STUDY in line)
        assert (f"nobody is analysing it: claimed by vm:{pid}, which is no longer listed (stopped or killed); its "
                "claim has expired: waiting for an analyse process to take it over") in study
        assert "start one" not in study
    finally:
        analyser.close()


def test_an_analysis_of_a_live_process_says_nothing_more(node_state, capsys):
    db, config = node_state
    db.add_instance(InstanceRow("1.2.9.1", STUDY, STUDY, f"{STUDY}.1", "1.2.840.10008.5.1.4.1.1.4",
                                "1.2.840.10008.1.2.1", "MR", "spool/1.dcm", 1, "SCANNER1", time.time()))
    db.set_study_state(STUDY, "complete")
    assert db.start_analysis(STUDY, 0) is not None
    db.heartbeat(["analyse"], time.time())
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    study = next(line for line in out.splitlines() if STUDY in line)
    assert "nobody is analysing" not in study and "ENDED" not in out
