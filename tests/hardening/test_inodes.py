"""A file system out of inodes with megabytes to spare (break51b #1, #2): every new file fails with "No space left on
device", so the receiver refuses up front naming the inodes, `dicomnode status` says RECEIVING REFUSED (not "there is
room again ... nothing to free"), the emergency purge counts inodes too, and analyses postponed for want of inodes run
again as soon as inodes are back (not after 8 MB more or 10 minutes), the line saying what came back."""
from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import dicomnode.study_path
from dicomnode.cli import _print_receiving
from dicomnode.config import Config, RetentionConfig
from dicomnode.node import NO_SPACE_RETRY_MB, Node
from dicomnode.retention import EMERGENCY_FREE_INODES, Retention, emergency_purge
from dicomnode.roles import receiving_report
from dicomnode.spool import MIN_FREE_INODES, OutOfSpace, Spool, free_space
from dicomnode.state import COMPLETE, DONE, StateDB
from tests.hardening.hardening_support import store_one, synthetic_mr
from tests.hardening.stub_serve import StubAnalyser
from tests.hardening.test_retention import add_study, incoming
from tests.node.test_results_no_space import FullDisk, received_complete, result_files, wait_for
from tests.node.test_storage_safety import NoAnalysis, node_config


class Inodes:
    """os.statvfs with `free` inodes free (f_ffree, f_favail) on any path under `root`; None: as they are."""

    def __init__(self, monkeypatch, root: Path, free: int | None, files: int = 100_000):
        self.free = free
        self.files = files
        real = os.statvfs
        root = str(Path(root).absolute())

        def statvfs(path):
            result = real(path)
            if self.free is None or not str(Path(os.fsdecode(path)).absolute()).startswith(root):
                return result
            fields = list(result)
            fields[5:8] = [self.files, self.free, self.free]  # f_files, f_ffree, f_favail
            return os.statvfs_result(fields)

        monkeypatch.setattr(os, "statvfs", statvfs)


@pytest.fixture
def started_node(tmp_path):
    """A started node on node_config(tmp_path) (node.min_free_space_mb 0) that analyses nothing."""
    node = Node(node_config(tmp_path), analyser=NoAnalysis())
    node.start(warm_up=False)
    yield node
    node.stop()


def test_free_space_counts_the_free_inodes_and_none_where_the_file_system_does_not(tmp_path, monkeypatch):
    fake = Inodes(monkeypatch, tmp_path, 7)
    room = free_space(tmp_path)
    assert room.inodes == 7 and room.inodes_short() and room.mb > 0
    fake.files = 0  # btrfs, many network file systems: no fixed number of inodes
    room = free_space(tmp_path)
    assert room.inodes is None and not room.inodes_short()
    fake.free = None
    assert free_space(tmp_path).inodes == os.statvfs(tmp_path).f_favail


def test_a_c_store_is_refused_up_front_naming_the_inodes(started_node, monkeypatch, caplog):
    node = started_node
    fake = Inodes(monkeypatch, node.storage_dir, MIN_FREE_INODES - 1)
    dataset = synthetic_mr()
    with caplog.at_level(logging.INFO):
        status = store_one(node.scp.port, dataset)
    assert status.Status == 0xA700, status
    assert "inodes" in str(status.ErrorComment), status.ErrorComment
    assert not list(node.spool.spool_dir.rglob("*.dcm")) and not node.db.has_instance(str(dataset.SOPInstanceUID))
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert any(f"only {MIN_FREE_INODES - 1} inode(s) free" in line and "df -i" in line for line in refused), refused
    ready, why = node.metrics.health()
    assert not ready and why.startswith("storage out of inodes: "), why
    fake.free = None  # inodes freed
    assert store_one(node.scp.port, dataset).Status == 0
    assert node.metrics.health() == (True, "ready")


def refused_process(reason: str) -> dict:
    """A live receiving process whose latest C-STORE was refused for `reason` (a heartbeat, nodes_report's form)."""
    return {"alive": True, "detail": {"last_refused_at": 1000.0, "last_refusal": reason, "last_stored_at": 900.0,
                                      "min_free_space_mb": 20}}


def test_status_says_receiving_refused_naming_the_inodes_not_room_again(tmp_path, monkeypatch, capsys):
    fake = Inodes(monkeypatch, tmp_path, 0)
    nodes = [refused_process("cannot write spool: No space left on device")]
    receiving = receiving_report(tmp_path, 20, nodes, now=1027.0)
    assert receiving["refusing"] and receiving["inodes_short"] and not receiving["space_back"], receiving
    assert receiving["free_inodes"] == 0 and receiving["min_free_inodes"] == MIN_FREE_INODES
    _print_receiving({"receiving": receiving, "refused_recently": []})
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith("RECEIVING REFUSED") and "OUT OF INODES: only 0 inode(s) free" in first, out
    assert "free inodes on the file system of node.storage_dir" in out and "df -i" in out
    assert "nothing to free" not in out and "room again" not in out

    fake.free = None  # inodes freed: the refusal's cause is gone
    receiving = receiving_report(tmp_path, 20, nodes, now=1027.0)
    assert receiving["space_back"] and not receiving["refusing"] and not receiving["inodes_short"], receiving


def sqlite_spool(tmp_path) -> Spool:
    (tmp_path / "store").mkdir()
    return Spool(tmp_path / "store", StateDB(tmp_path / "store" / "state.sqlite3", upgrade=True))


def test_the_emergency_purge_purges_while_inodes_are_short(tmp_path):
    spool = sqlite_spool(tmp_path)
    try:
        oldest = add_study(spool, DONE, finished_days_ago=3)
        newest = add_study(spool, DONE, finished_days_ago=1)

        def free_inodes():  # each purged study frees 10 inodes on this simulated file system
            return EMERGENCY_FREE_INODES - 5 + 10 * (2 - spool.db.count_studies((DONE,)))

        plenty = lambda: 10_000.0  # noqa: E731 - megabytes are not short
        assert emergency_purge(spool.db, spool.root, 0, plenty, free_inodes=free_inodes).studies == []  # purge off
        report = emergency_purge(spool.db, spool.root, 500, plenty, free_inodes=free_inodes)
        assert report.studies == [oldest]
        assert [row["study_key"] for row in spool.db.studies()] == [newest]

        retention = Retention(spool.db, spool.root, RetentionConfig(days=30, emergency_free_space_mb=500), plenty,
                              free_inodes=lambda: 3)
        retention.check_free_space_safely()  # the scheduled check passes the inodes on
        assert spool.db.studies() == []
    finally:
        spool.db.close()


def test_the_emergency_purge_says_inodes_are_still_short(tmp_path, caplog):
    spool = sqlite_spool(tmp_path)
    try:
        with caplog.at_level(logging.WARNING, logger="dicomnode.retention"):
            emergency_purge(spool.db, spool.root, 500, lambda: 10_000.0, free_inodes=lambda: 12)
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and errors[0].startswith("only 12 inode(s) are free") and "df -i" in errors[0], errors
        assert "free space" not in errors[0]  # megabytes are not what is short
    finally:
        spool.db.close()


def config_of(tmp_path) -> Config:
    return Config.model_validate({
        "node": {"port": 0, "storage_dir": str(tmp_path / "store"), "min_free_space_mb": 20,
                 "allowed_calling_aes": ["*"]},
        "studies": {"quiet_seconds": 3600},
        "routes": [{"name": "mr", "match": {"modality": "MR"}, "pipelines": ["lge"]}]})


def test_an_analysis_postponed_for_lack_of_inodes_runs_once_inodes_are_back(tmp_path, monkeypatch, caplog):
    node = Node(config_of(tmp_path), analyser=StubAnalyser(config_of(tmp_path)))
    node.start(warm_up=False)
    try:
        key = received_complete(node)
        monkeypatch.setattr(node.spool, "free_space_mb", lambda: 93.9)  # megabytes to spare, before and after
        inodes = Inodes(monkeypatch, node.storage_dir, None)
        real = dicomnode.study_path.write_durably
        writes = []

        def write_durably(path, data, mode=0o600, root=None):  # the inodes run out while the results are written
            writes.append(path)
            if len(writes) > 1:
                inodes.free = 2
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            real(path, data, mode=mode, root=root)

        monkeypatch.setattr(dicomnode.study_path, "write_durably", write_durably)
        with caplog.at_level(logging.INFO):
            node.analyse_study(key, 0)
        study = node.db.study(key)
        assert study["state"] == COMPLETE and study["reason"].startswith("analysis postponed: no space"), dict(study)
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "runs again by itself once inodes are freed (only 2 are free" in errors[0], errors
        problem = node.results_space_problem()
        assert problem is not None and "only 2 inode(s) free" in problem, problem

        caplog.clear()
        inodes.free = None  # the admin deletes the files that took the inodes; no megabyte more is free
        monkeypatch.setattr(dicomnode.study_path, "write_durably", real)
        with caplog.at_level(logging.INFO):
            assert node.results_space_problem() is None
            node._enqueue_complete_studies_once()
            wait_for(node, key, DONE)
        resumed = [r.getMessage() for r in caplog.records if "postponed analyses are queued" in r.getMessage()]
        assert len(resumed) == 1 and "inodes are free again" in resumed[0], resumed
        assert "min_free_space_mb" not in resumed[0]  # free space was never under the floor
        assert result_files(tmp_path)
    finally:
        node.stop()


def test_a_real_file_system_out_of_inodes_refuses_up_front(tmp_path):
    """The same on a real ext4 file system with 64 inodes (root only: a loop mount)."""
    mkfs = shutil.which("mkfs.ext4") or shutil.which("mkfs.ext4", path="/sbin:/usr/sbin")
    if os.geteuid() != 0 or mkfs is None or shutil.which("mount") is None:
        pytest.skip("needs root, mkfs.ext4 and mount (a loop-mounted ext4 image)")
    image, mount_point = tmp_path / "disk.img", tmp_path / "mnt"
    mount_point.mkdir()
    with open(image, "wb") as handle:
        handle.truncate(8 * 1024 * 1024)
    subprocess.run([mkfs, "-q", "-F", "-N", "64", str(image)], check=True, capture_output=True, timeout=60)
    mounted = subprocess.run(["mount", "-o", "loop", str(image), str(mount_point)], capture_output=True, timeout=60)
    if mounted.returncode != 0:
        pytest.skip(f"no loop mount here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        spool = Spool(mount_point / "store", StateDB(tmp_path / "state.sqlite3", upgrade=True))
        try:
            filler = mount_point / "filler"
            filler.mkdir()
            for index in range(10_000):  # until the file system has no inode left
                try:
                    (filler / str(index)).touch()
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
            room = free_space(spool.spool_dir)
            assert room.inodes == 0 and room.mb > 1, room
            with pytest.raises(OutOfSpace, match="inode") as refused:
                spool.store(incoming(synthetic_mr()))
            assert refused.value.inodes
        finally:
            spool.db.close()
    finally:
        subprocess.run(["umount", str(mount_point)], capture_output=True, timeout=60)


def test_an_analysis_postponed_for_lack_of_space_says_what_came_back(tmp_path, monkeypatch, caplog):
    """The same for megabytes (inodes to spare): the line names the space freed since the failure, not a floor that
    free space was never under."""
    config = config_of(tmp_path)
    node = Node(config, analyser=StubAnalyser(config))
    node.start(warm_up=False)
    try:
        key = received_complete(node)
        disk = FullDisk(monkeypatch, node)
        disk.free_mb = 30.0  # above node.min_free_space_mb = 20: another writer filled the rest
        node.analyse_study(key, 0)
        assert node.db.study(key)["state"] == COMPLETE
        assert "no space left on device for the result objects" in node.results_space_problem()
        disk.full, disk.free_mb = False, 30.0 + NO_SPACE_RETRY_MB + 1
        with caplog.at_level(logging.INFO):
            node._enqueue_complete_studies_once()
            wait_for(node, key, DONE)
        resumed = [r.getMessage() for r in caplog.records if "postponed analyses are queued" in r.getMessage()]
        assert resumed == [f"free space is {30.0 + NO_SPACE_RETRY_MB + 1:.1f} MB, {NO_SPACE_RETRY_MB + 1:.1f} MB more "
                           f"than when the result objects did not fit: postponed analyses are queued"], resumed
    finally:
        node.stop()
