"""Delivery with a real Orthanc: PACS unreachable -> dead letters visible in `dicomnode status`; PACS back on
another port by SIGHUP reload + `dicomnode retry` -> delivered once, in order; a later outage on the same port
while a re-analysis is due -> delivered after recovery, one SR per finished analysis generation."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest

from tests.conftest import require_peer
from tests.hardening.hardening_support import StubNodeProcess
from tests.node.nodeproc import ENV, NodeProcess, storescu
from tests.peers import OrthancServer, free_port, require_private_netns

pytestmark = [pytest.mark.peers, pytest.mark.slow]

SR = "1.2.840.10008.5.1.4.1.1.88.34"


def cli(node: NodeProcess, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dicomnode.cli", *args, "--config", str(node.config_path)],
                          env=ENV, capture_output=True, text=True, timeout=120, cwd=node.workdir)


def reload(node: NodeProcess, text: str) -> None:
    before = node.log().count("configuration reloaded")
    node.config_path.write_text(text)
    node.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while node.log().count("configuration reloaded") == before:
        assert time.monotonic() < deadline, "SIGHUP reload not logged"
        time.sleep(0.05)


def wait_outbox(node: NodeProcess, predicate, what: str, timeout: float = 120) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        rows = node.db_rows("SELECT * FROM outbox ORDER BY id")
        if rows and predicate(rows):
            return rows
        assert time.monotonic() < deadline, f"{what}: {[(r['state'], r['attempts']) for r in rows]}\n{node.log()[-2000:]}"
        time.sleep(0.1)


def sr_series(orthanc: OrthancServer, study_uid: str) -> dict[str, list[str]]:
    """SR series UID -> SOP Instance UIDs stored in Orthanc for the study."""
    found: dict[str, list[str]] = {}
    for instance in orthanc.study_instances(study_uid):
        if instance["Modality"] == "SR":
            found.setdefault(instance["SeriesInstanceUID"], []).append(instance["SOPInstanceUID"])
    return found


def test_outage_dead_letters_reload_retry_and_recovery(tmp_path, datasets):
    require_peer("storescu")
    require_peer("orthanc")
    require_private_netns()
    files = sorted((datasets / "sunnybrook-scd" / "dicoms" / "SCD0000301").glob("*.dcm"))
    assert len(files) == 200
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    node_port, dead_port, new_port = free_port(), free_port(), free_port()
    # the stand-in analyser: delivery must be testable whether or not the shipped models are installed
    node = StubNodeProcess(tmp_path / "node", node_port, destinations={"ORTHANC": ("127.0.0.1", dead_port)},
                       quiet_seconds=2, pipelines=("cine",), backoff=0.2, max_attempts=3).start()
    orthanc = OrthancServer(tmp_path, aet="ORTHANC", dicom_port=new_port,
                            modalities={"DICOMNODE": ("127.0.0.1", node_port)})
    try:
        # 1. the PACS is unreachable: every send fails, after max_attempts they are dead letters
        late = files[-1]
        assert storescu(node_port, files[:-1]).returncode == 0
        node.wait_states(states=("failed",), timeout=240)
        dead = node.db_rows("SELECT * FROM outbox WHERE state='dead' ORDER BY id")
        assert dead and all(row["attempts"] == 3 for row in dead)
        assert all(f"ORTHANC@127.0.0.1:{dead_port} failed" in (row["last_error"] or "") for row in dead), dead[0]["last_error"]
        status = cli(node, "status")
        assert status.returncode == 0, status.stderr
        assert "dead letters" in status.stdout and f"{len(dead)}" in status.stdout
        for row in dead:
            assert row["sop_instance_uid"] in status.stdout
        report = json.loads(cli(node, "status", "--json").stdout)
        assert len(report["studies"][0]["dead"]) == len(dead)

        # 2. the PACS comes back on another port: reload the config, retry the dead letters
        orthanc.start()
        moved = node.config_text.replace(f"port = {dead_port}\n", f"port = {new_port}\n").replace(
            "max_attempts = 3", "max_attempts = 200")
        reload(node, moved)
        retry = cli(node, "retry", study_uid)
        assert retry.returncode == 0 and f"re-queued {len(dead)}" in retry.stdout, retry.stdout + retry.stderr
        node.wait_states(states=("done",), timeout=60)
        sent = node.db_rows("SELECT * FROM outbox ORDER BY id")
        # the dispatcher resolves "orthanc" by name when sending, and records the address each went to (new_port):
        # nothing was ever delivered at dead_port, and no line says so (break48a #9)
        assert all(row["state"] == "sent" and row["port"] == new_port for row in sent)
        assert f"not ORTHANC@127.0.0.1:{dead_port} where results were delivered" not in node.log()
        assert f"(was ORTHANC@127.0.0.1:{dead_port}, where no result object was delivered under that name)" in \
            node.log()
        assert [row["sent_at"] for row in sent] == sorted(row["sent_at"] for row in sent)  # in queue order
        stored = orthanc.wait_for_instances(len(sent), study_uid, timeout=30)
        results = [i for i in stored if i["Modality"] != "MR"]
        assert sorted(i["SOPInstanceUID"] for i in results) == sorted(row["sop_instance_uid"] for row in sent)
        assert len(sr_series(orthanc, study_uid)) == 1

        # 3. an outage on the same port while a re-analysis (late instance -> generation 1) is due
        orthanc.stop()
        assert storescu(node_port, [late]).returncode == 0
        wait_outbox(node, lambda rows: any(r["state"] == "pending" and r["attempts"] >= 2 for r in rows),
                    "re-analysis results retried while the PACS is down", timeout=240)
        orthanc.start()
        node.wait_states(states=("done",), timeout=120)
        rows = node.db_rows("SELECT * FROM outbox ORDER BY id")
        assert all(row["state"] == "sent" for row in rows)
        done_analyses = node.db_rows("SELECT id FROM analyses WHERE state='done'")
        assert len(done_analyses) == 2
        series = sr_series(orthanc, study_uid)
        assert len(series) == len(done_analyses), series  # one SR per finished analysis generation
        sent_sops = [row["sop_instance_uid"] for row in rows]
        assert len(sent_sops) == len(set(sent_sops))
        orthanc_results = [i["SOPInstanceUID"] for i in orthanc.study_instances(study_uid) if i["Modality"] != "MR"]
        assert sorted(orthanc_results) == sorted(sent_sops)
    finally:
        orthanc.stop(graceful=False)
        assert node.stop() == 0
    assert Path(node.storage).is_dir()
