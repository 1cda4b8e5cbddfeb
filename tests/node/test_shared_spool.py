"""A process whose node.storage_dir is not the spool its (shared) state indexes (scale-break finding 4): `serve` and
`config check` name both folders; an analysis that finds none of its study's spooled files releases the study for
another worker instead of failing it; a spool that goes away (an unmounted share) stops the claims."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from dicomnode.cli import main
from dicomnode.config import Config
from dicomnode.node import MAX_UNRECORDED_RELEASES, Node
from dicomnode.roles import RoleRunner
from dicomnode.spool import SPOOL_ID_FILE, SpoolMismatch, read_spool_id
from dicomnode.state import COMPLETE, FAILED, InstanceRow, StateDB
from tests.node.test_storage_safety import CountingAnalyser, NoAnalysis, complete_study, node_config
from tests.state_backends import pg_server, state_location  # noqa: F401 (fixtures)


def state_url(location) -> str:
    """A `[state] url` for a state_location: SQLite outside every storage_dir (shared by path), or PostgreSQL."""
    return f"sqlite:///{location}" if isinstance(location, Path) else location


def shared_config(storage: Path, url: str) -> Config:
    return Config.model_validate({"node": {"port": 0, "storage_dir": str(storage), "allowed_calling_aes": ["*"]},
                                  "state": {"url": url}})


@pytest.fixture
def shared_state(state_location):
    url = state_url(state_location)
    StateDB(url, upgrade=True).close()  # `dicomnode state upgrade`
    return url


def test_serve_refuses_a_storage_dir_that_is_not_the_spool_of_the_shared_state(tmp_path, shared_state):
    first = Node(shared_config(tmp_path / "spool", shared_state), analyser=NoAnalysis())
    try:
        spool_id = first.verify_spool()  # the first process to serve records the spool
        assert read_spool_id(tmp_path / "spool") == spool_id and first.db.spool_identity()["id"] == spool_id
    finally:
        first.db.close()
    other = Node(shared_config(tmp_path / "local", shared_state), analyser=NoAnalysis())
    try:
        with pytest.raises(SpoolMismatch) as refused:
            RoleRunner(other, ("analyse",)).start(warm_up=False)
        message = str(refused.value)
        assert f"node.storage_dir {tmp_path / 'local'} is not the spool the state database" in message
        assert f"spool {spool_id}, recorded from {(tmp_path / 'spool').resolve()}" in message
        assert f"has no {SPOOL_ID_FILE}" in message
        assert "Is storage_dir the shared spool (or an unmounted share)?" in message
        assert not (tmp_path / "local" / SPOOL_ID_FILE).exists()  # refused without marking anything
        (tmp_path / "local" / SPOOL_ID_FILE).write_text("0123abcd\n")
        other.spool_id = None
        with pytest.raises(SpoolMismatch, match=f"holds spool 0123abcd .* echo {spool_id} > "):
            other.verify_spool()
    finally:
        other.storage_lock.release()
        other.db.close()


def test_a_lost_marker_is_named_with_its_repair(tmp_path, shared_state):
    node = Node(shared_config(tmp_path / "spool", shared_state), analyser=NoAnalysis())
    try:
        spool_id = node.verify_spool()
        (tmp_path / "spool" / SPOOL_ID_FILE).unlink()
        node.spool_id = None
        with pytest.raises(SpoolMismatch, match=f"echo {spool_id} > {tmp_path / 'spool' / SPOOL_ID_FILE}"):
            node.verify_spool()
        (tmp_path / "spool" / SPOOL_ID_FILE).write_text(f"{spool_id}\n")  # the repair it names
        assert node.verify_spool() == spool_id
    finally:
        node.db.close()


def test_a_state_with_instances_records_only_a_spool_that_holds_them(tmp_path, shared_state):
    """A node upgraded to spool ids: the state indexes instances and records no spool yet; the first process to
    start may be the misconfigured one."""
    db = StateDB(shared_state)
    try:
        (tmp_path / "spool" / "spool").mkdir(parents=True)
        (tmp_path / "spool" / "spool" / "1.dcm").write_bytes(b"DICM")
        db.add_instance(InstanceRow("1.2.3.1", "1.2.3", "1.2.3", "1.2.3.9", "1.2.840.10008.5.1.4.1.1.4",
                                    "1.2.840.10008.1.2.1", "MR", "spool/1.dcm", 4, "SCANNER1", time.time()))
    finally:
        db.close()
    wrong = Node(shared_config(tmp_path / "local", shared_state), analyser=NoAnalysis())
    try:
        with pytest.raises(SpoolMismatch, match="indexes 1 instance.*none of the newest 1 is under it"):
            wrong.verify_spool()
        assert wrong.db.spool_identity() is None and not (tmp_path / "local" / SPOOL_ID_FILE).exists()
    finally:
        wrong.db.close()
    right = Node(shared_config(tmp_path / "spool", shared_state), analyser=NoAnalysis())
    try:
        assert right.verify_spool() == read_spool_id(tmp_path / "spool") == right.db.spool_identity()["id"]
    finally:
        right.db.close()


def test_config_check_names_a_storage_dir_that_is_not_the_states_spool(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    node = Node(shared_config(tmp_path / "spool", url), analyser=NoAnalysis())
    try:
        node.verify_spool()
    finally:
        node.db.close()
    for name, storage in (("right", tmp_path / "spool"), ("wrong", tmp_path / "spool_b")):
        (tmp_path / f"{name}.toml").write_text(f'[node]\nstorage_dir = "{storage}"\n[state]\nurl = "{url}"\n')
    assert main(["config", "check", str(tmp_path / "right.toml"), "--roles", "receive"]) == 0
    capsys.readouterr()
    assert main(["config", "check", str(tmp_path / "wrong.toml"), "--roles", "receive"]) == 1
    err = capsys.readouterr().err
    assert f"node.storage_dir: node.storage_dir {tmp_path / 'spool_b'} is not the spool the state database" in err
    assert "Is storage_dir the shared spool (or an unmounted share)?" in err


# --- an analysis that finds none of its study's files -------------------------------------------------------------


def test_an_analysis_whose_spooled_files_are_missing_is_released_not_failed(tmp_path, caplog):
    analyser = CountingAnalyser()
    node = Node(node_config(tmp_path), analyser=analyser)
    node.start(warm_up=False)
    node.storage_lock.exclusive = False  # as a scale-out worker holds it (shared): other workers may see the files
    try:
        key = complete_study(node)
        for row in node.db.study_instances(key):
            node.spool.path_of(row["path"]).unlink()
        with caplog.at_level(logging.INFO):
            node.analyse_study(key, 0)
        study = node.db.study(key)
        assert analyser.calls == 0 and study["state"] == COMPLETE and study["claimed_by"] is None
        assert study["reason"].startswith(f"released for another worker: spooled files missing under "
                                          f"{node.storage_dir}: none of the study's 1 instance file(s) is there")
        (error,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert "is storage_dir the shared spool (or an unmounted share)?" in error.getMessage()
        assert "claims no study for 30 s" in error.getMessage() and not error.exc_info
        assert node.claims_blocked() is not None  # a worker that sees the files takes it meanwhile
        for _ in range(MAX_UNRECORDED_RELEASES):  # no worker ever finds them: failed in the end, saying why
            node._claims_paused_until = 0.0
            node.analyse_study(key, 0)
        study = node.db.study(key)
        assert study["state"] == FAILED and "no worker found the files" in study["reason"]
        assert "spooled files missing under" in study["reason"] and analyser.calls == 0
    finally:
        node.stop()


def test_a_spool_that_goes_away_stops_the_claims_until_it_is_back(tmp_path, caplog):
    analyser = CountingAnalyser()
    node = Node(node_config(tmp_path), analyser=analyser)
    node.start(warm_up=False)
    try:
        key = complete_study(node)
        marker = node.storage_dir / SPOOL_ID_FILE
        saved = marker.read_text()
        marker.unlink()  # the share came unmounted
        with caplog.at_level(logging.INFO):
            node.analyse_study(key, 0)
            node.analyse_study(key, 0)
            study = node.db.study(key)
            assert analyser.calls == 0 and study["state"] == COMPLETE
            assert "analysis postponed" in study["reason"] and "is the shared spool unmounted?" in study["reason"]
            node._enqueue_complete_studies()
            assert node.analysis_queue_depth() == 0
            marker.write_text(saved)
            assert node.claims_blocked() is None
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "no study is claimed for analysis until it is back" in errors[0].getMessage()
        assert [r for r in caplog.records if "holds the spool again" in r.getMessage()]
    finally:
        node.stop()


def test_config_check_reads_the_record_before_the_marker_so_a_process_starting_beside_it_is_no_mismatch(tmp_path):
    """A second receiver's start-up check read the folder's spool.id (none yet), then the state's record, which the
    first receiver had made in between (marker written first, then the record): a false "not the spool the state
    indexes" that stopped it (tests/scaleout, under load)."""
    from dicomnode.spool import spool_identity_problem

    folder = tmp_path / "shared-spool"
    folder.mkdir()

    class StartingBeside:
        url = "postgresql+psycopg://dicomnode@/state"

        def spool_identity(self):  # the other process writes its marker, then its record, just now
            (folder / SPOOL_ID_FILE).write_text("b7a5583b4f6d40dcae747a7572c88e76\n")
            return {"id": "b7a5583b4f6d40dcae747a7572c88e76", "path": str(folder)}

    assert spool_identity_problem(StartingBeside(), folder) is None
