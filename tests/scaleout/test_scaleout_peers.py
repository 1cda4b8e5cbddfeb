"""Scale-out with the real engines: PostgreSQL state, two receivers and two analysis workers as separate processes
sharing one spool folder, one study split across both receivers by storescu, the worker that claimed it killed -9
mid-analysis; Orthanc receives exactly one SEG set and one SR."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pydicom
import pytest

from dicomnode.state import ANALYSING, SCHEMA_VERSION, StateDB
from tests.conftest import require_peer
from tests.node.nodeproc import storescu
from tests.node.test_node_peers import sunnybrook  # noqa: F401 (fixture: Sunnybrook cine SAX + localizer, 215 files)
from tests.peers import OrthancServer, free_port, require_private_netns
from tests.scaleout.cluster import (
    ENV, cluster_config, start_cluster, state_upgrade, wait_for_heartbeats, wait_states,
)
from tests.state_backends import pg_server  # noqa: F401 (fixture)

pytestmark = [pytest.mark.peers, pytest.mark.slow]

SEG = "1.2.840.10008.5.1.4.1.1.66.4"
SR = "1.2.840.10008.5.1.4.1.1.88.34"


def test_two_receivers_two_workers_worker_killed_mid_analysis_delivers_once(tmp_path, pg_server, sunnybrook):
    require_peer("storescu")
    require_peer("orthanc")
    require_private_netns()
    url = pg_server.create_database()
    storage = tmp_path / "shared-spool"
    receiver_ports = [free_port(), free_port()]
    modalities = {"DICOMNODE": ("127.0.0.1", receiver_ports[0])}
    with OrthancServer(tmp_path, aet="ORTHANC", modalities=modalities) as orthanc:
        pacs = {"ORTHANC": ("127.0.0.1", orthanc.dicom_port)}

        def config(port: int) -> str:
            return cluster_config(storage, url, port, pacs, pipelines=("cine",), quiet_seconds=3, lease_seconds=4,
                                  heartbeat_seconds=1, poll_seconds=0.3)

        upgrade_config = tmp_path / "upgrade.toml"
        upgrade_config.write_text(config(0))
        upgrade = state_upgrade(upgrade_config)
        assert upgrade.returncode == 0 and f"schema version {SCHEMA_VERSION} created" in upgrade.stdout, \
            upgrade.stdout + upgrade.stderr
        db = StateDB(url)
        receivers, workers = start_cluster(tmp_path, config, receiver_ports, workers=2)
        processes = receivers + workers
        try:
            wait_for_heartbeats(db, processes)

            # one study, split file by file across both receivers, sent concurrently
            halves = [sunnybrook[0::2], sunnybrook[1::2]]
            results: list = [None, None]

            def send(index: int) -> None:
                results[index] = storescu(receiver_ports[index], halves[index])

            senders = [threading.Thread(target=send, args=(i,)) for i in range(2)]
            for sender in senders:
                sender.start()
            for sender in senders:
                sender.join(600)
            assert all(r.returncode == 0 for r in results), [r.stderr[-500:] for r in results]
            assert len(db.study_instances(db.studies()[0]["study_key"])) == 215
            assert len(db.studies()) == 1  # both receivers indexed into one study

            # kill -9 the worker that claimed it, mid-analysis
            deadline = time.monotonic() + 120
            claim = None
            while time.monotonic() < deadline and claim is None:
                claim = next((c for c in db.claims() if c["claimed_by"]), None)
                time.sleep(0.05)
            assert claim is not None, [p.log()[-1500:] for p in processes]
            victim = next(w for w in workers if claim["claimed_by"].endswith(f":{w.pid}"))
            time.sleep(1.0)  # well inside the analysis (it takes several seconds here)
            assert db.study(claim["study_key"])["state"] == ANALYSING
            victim.kill9()
            survivor = next(w for w in workers if w is not victim)

            wait_states(db, ("done",), 1, timeout=600, processes=processes)
            study_row = db.studies()[0]
            done = [a for a in db.analyses_of(study_row["study_key"]) if a["state"] == "done"]
            assert len(done) == 1 and done[0]["worker"].endswith(f":{survivor.pid}")

            study_uid = str(pydicom.dcmread(sunnybrook[0], stop_before_pixels=True).StudyInstanceUID)
            summary = json.loads(study_row["summary_json"])
            delivered = orthanc.study_instances(study_uid)
            results_in_pacs = [i for i in delivered if i["Modality"] in ("SEG", "SR")]
            classes = [orthanc.get_json(f"/instances/{i['ID']}/simplified-tags").get("SOPClassUID")
                       for i in results_in_pacs]
            # cine: one SR, a SEG at ED and at ES, and one of the RV's own ED / ES where RV EDV / ESV were read at
            # another phase than the LV's (Sunnybrook SCD0000301: RV ES one phase after the LV's)
            cine = summary["cine"]
            own_rv = {cine["timing"]["rv_ed_phase"], cine["timing"]["rv_es_phase"]} - {cine["ed_phase"],
                                                                                    cine["es_phase"]}
            assert classes.count(SR) == 1 and classes.count(SEG) == 2 + len(own_rv)
            assert len(delivered) == len(summary["outputs"])  # the PACS holds the results only (the node got the scans)
            assert len({i["SOPInstanceUID"] for i in delivered}) == len(delivered)
            sent = db.outbox_for(study_row["study_key"], "sent")
            assert len(sent) == len(summary["outputs"])  # each result sent once, by one dispatcher

            status = subprocess.run([sys.executable, "-m", "dicomnode.cli", "status", "--json", "--config",
                                     str(workers[0].config_path)], capture_output=True, text=True, env=ENV,
                                    timeout=120)
            assert status.returncode == 0, status.stderr
            nodes = {n["pid"]: n for n in json.loads(status.stdout)["nodes"]}
            assert nodes[survivor.pid]["roles"] == ["analyse"] and nodes[survivor.pid]["alive"]
            assert all(nodes[r.pid]["roles"] == ["receive", "complete", "dispatch"] for r in receivers)
            assert nodes[victim.pid]["heartbeat_age_s"] > nodes[survivor.pid]["heartbeat_age_s"] + 2  # silent since -9
        finally:
            for process in processes:
                process.stop()
            db.close()

