"""Association policy (IP binding, per-peer operations), patient data kept out of logs, owner-only files,
hostile AE titles and UIDs never reaching paths or SQL."""
from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from dicomnode.config import Config
from dicomnode.node import Node
from dicomnode.study_path import write_results
from tests.conftest import require_peer
from tests.hardening.hardening_support import echo_status, store_one, synthetic_mr
from tests.node.nodeproc import ENV, NodeProcess
from tests.peers import free_port

PATIENT_NAME = "ZEBRAFINCH^QUILLON"
PATIENT_ID = "PIDX93417"
BIRTH_DATE = "19610423"


def echoscu(port: int, calling: str) -> subprocess.CompletedProcess:
    return subprocess.run([require_peer("echoscu"), "-aet", calling, "-aec", "DICOMNODE", "127.0.0.1", str(port)],
                          env=ENV, capture_output=True, text=True, timeout=60)


def test_peer_bound_to_another_network_is_refused_and_echo_only_peer_cannot_store(tmp_path):
    require_peer("echoscu")
    port = free_port()
    extra = ('[[node.peers]]\nae_title = "SCANNER1"\nnetworks = ["10.20.0.0/16"]\n'
             '[[node.peers]]\nae_title = "ECHOONLY"\noperations = ["echo"]\n'
             '[[node.peers]]\nae_title = "LOOPBACK"\nnetworks = ["127.0.0.0/8"]\noperations = ["store"]\n')
    node = NodeProcess(tmp_path, port, pipelines=(), quiet_seconds=3600, allowed=("SCANNER1", "ECHOONLY", "LOOPBACK"),
                       extra=extra).start()
    try:
        refused = echoscu(port, "SCANNER1")  # allowed AE, but only from 10.20/16: we call from 127.0.0.1
        assert refused.returncode != 0
        assert "Calling AE Title Not Recognized" in refused.stdout + refused.stderr
        assert "calling AE 'SCANNER1' called from 127.0.0.1, outside its node.peers networks ['10.20.0.0/16']" in node.log()
        assert "allowed_calling_aes" not in node.log()  # one line saying the real cause, not a second misleading one

        assert echoscu(port, "ECHOONLY").returncode == 0
        status = store_one(port, synthetic_mr(), calling="ECHOONLY")
        assert status.Status == 0x0124, hex(status.Status)  # Refused: Not Authorized
        assert "ECHOONLY from 127.0.0.1 may not store" in str(status.ErrorComment)
        assert "C-STORE refused: calling AE 'ECHOONLY'" in node.log()

        assert store_one(port, synthetic_mr(), calling="LOOPBACK").Status == 0x0000  # bound network matches
        assert echo_status(port, calling="LOOPBACK") == 0x0124  # ...but it may only store
        assert len(node.db_rows("SELECT * FROM instances")) == 1
    finally:
        assert node.stop() == 0


@pytest.mark.parametrize("show_patient_data", [False, True])
def test_node_log_carries_no_patient_data_by_default(tmp_path, show_patient_data):
    port = free_port()
    extra = "show_patient_data = true\n" if show_patient_data else ""
    node = NodeProcess(tmp_path, port, pipelines=(), quiet_seconds=1, extra=extra).start()
    try:
        study = synthetic_mr().StudyInstanceUID
        kwargs = dict(study_uid=study, patient_name=PATIENT_NAME, patient_id=PATIENT_ID)
        for index in range(3):
            assert store_one(port, synthetic_mr(instance=index, position=8.0 * index, **kwargs)).Status == 0
        # a sender that put the patient ID where the Study UID belongs: the refusal message quotes the value
        leaky = synthetic_mr(**kwargs)
        leaky.StudyInstanceUID = PATIENT_ID
        status = store_one(port, leaky)
        assert status.Status == 0xC000
        node.wait_states(states=("done", "failed"), timeout=120)
    finally:
        assert node.stop() == 0
    log = node.log()
    assert "Study Instance UID not digits and dots" in log
    leaked = [value for value in (PATIENT_NAME, PATIENT_ID, BIRTH_DATE, "ZEBRAFINCH", "QUILLON") if value in log]
    if show_patient_data:
        assert "show_patient_data is ON" in log
        assert PATIENT_ID in leaked  # the switch really lets them through (so the default check can fail)
    else:
        assert leaked == [], f"patient data in the node log: {leaked}"
        assert "[redacted]" in log
        assert study not in log  # the study UID only ever appears hashed


def test_storage_dir_database_spool_and_results_are_owner_only(tmp_path):
    config = Config.model_validate({"node": {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 0},
                                    "studies": {"quiet_seconds": 3600}})

    class NoAnalysis:
        def warm_up(self, names):
            return {}

    old_umask = os.umask(0o022)  # what a careless service manager would leave
    try:
        node = Node(config, analyser=NoAnalysis())
        node.start(warm_up=False)
        try:
            assert store_one(node.scp.port, synthetic_mr()).Status == 0
            result = synthetic_mr()
            write_results([result], node.storage_dir, lambda d: Path("results", "k", "1", f"{d.SOPInstanceUID}.dcm"))
        finally:
            node.stop()
    finally:
        os.umask(old_umask)
    store = tmp_path / "store"

    def mode(path):
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(store) == 0o700
    assert mode(store / "state.sqlite3") == 0o600
    spool_files = [p for p in (store / "spool").rglob("*") if p.is_file()]
    result_files = [p for p in (store / "results").rglob("*") if p.is_file()]
    assert spool_files and result_files
    for path in spool_files + result_files:
        assert mode(path) == 0o600, (path, oct(mode(path)))
    # (folders below the 0700 storage dir are unreachable for others whatever their own mode)


def test_a_pre_existing_world_readable_storage_dir_is_made_owner_only(tmp_path):
    store = tmp_path / "store"
    store.mkdir(mode=0o755)
    store.chmod(0o755)
    config = Config.model_validate({"node": {"port": 0, "storage_dir": str(store)}})
    Node(config, analyser=object()).db.close()
    assert stat.S_IMODE(store.stat().st_mode) == 0o700


def test_hostile_ae_titles_and_uids_never_reach_paths_or_sql(tmp_path):
    port = free_port()
    node = NodeProcess(tmp_path, port, pipelines=(), quiet_seconds=3600, allowed=("*",)).start()
    hostile_ae = "X'); DROP TABLE"
    try:
        dataset = synthetic_mr()
        assert store_one(port, dataset, calling=hostile_ae).Status == 0
        rows = node.db_rows("SELECT calling_ae, path FROM instances")
        assert rows == [{"calling_ae": hostile_ae, "path": rows[0]["path"]}]
        assert "'" not in rows[0]["path"] and ".." not in rows[0]["path"]
        for uid_field, value in (("SOPInstanceUID", "1.2.3/../../../../tmp/owned"), ("SeriesInstanceUID", "1.2;rm -rf"),
                                 ("StudyInstanceUID", "1.2.3' OR '1'='1")):
            bad = synthetic_mr()
            setattr(bad, uid_field, value)
            if uid_field == "SOPInstanceUID":
                bad.file_meta.MediaStorageSOPInstanceUID = value
            status = store_one(port, bad, calling=hostile_ae)
            assert status.Status == 0xC000, (uid_field, hex(status.Status))
        assert len(node.db_rows("SELECT * FROM instances")) == 1
        assert len(node.db_rows("SELECT * FROM studies")) == 1
        names = [p.name for p in (tmp_path / "store").rglob("*")]
        assert not [n for n in names if "owned" in n or "'" in n or ";" in n]
        assert not (tmp_path.parent / "owned").exists()
    finally:
        assert node.stop() == 0
