"""A stored and acknowledged instance the node cannot read later (break48a #2): named at WARNING / ERROR with the
operating system's error, and the study not analysed without it (its images would be reported as missing, and with
an ED or ES image among them the volumes would change); `serve` started by a user that is not the owner of
node.storage_dir says so at start."""
from __future__ import annotations

import builtins
import errno
import io
import logging
import os
import pwd
import shutil
import time

from pydicom.uid import generate_uid


from dicomnode.cmr import grouping
from dicomnode.cmr.grouping import UnreadableFile, read_header
from dicomnode.cmr.study import load_studies
from dicomnode import node as node_module
from dicomnode.node import UNREADABLE_PAUSE_SECONDS, UNREADABLE_RETRY_SECONDS, Node
from dicomnode.state import COMPLETE, DONE, FAILED, foreign_owner_warning
from tests.hardening.hardening_support import store_one, synthetic_mr
from tests.node.test_storage_safety import CountingAnalyser, node_config


def test_a_file_the_os_will_not_read_is_unreadable_not_malformed(tmp_path, monkeypatch, caplog):
    path = tmp_path / "a.dcm"
    synthetic_mr().save_as(path, enforce_file_format=True)

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(grouping.pydicom, "dcmread", refused)
    result = read_header(path)
    assert isinstance(result, UnreadableFile)
    assert result.error == "PermissionError: Permission denied"
    assert "this process may not read it" in result.reason
    with caplog.at_level(logging.WARNING, logger="dicomnode.cmr"):
        (study,) = load_studies([path])
    assert [type(d) for d in study.declined] == [UnreadableFile]
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert str(path) in warning.getMessage() and "Permission denied" in warning.getMessage()
    monkeypatch.undo()
    path.write_bytes(b"not dicom")
    assert not isinstance(read_header(path), UnreadableFile)  # a malformed file stays a plain decline
    assert not isinstance(read_header(tmp_path / "gone.dcm"), UnreadableFile)  # and so does one that is gone


def test_a_study_with_a_stored_file_the_node_cannot_read_waits_then_fails_saying_unreadable(tmp_path, caplog,
                                                                                            monkeypatch):
    analyser = CountingAnalyser()
    node = Node(node_config(tmp_path), analyser=analyser)
    node.start(warm_up=False)
    try:
        first = synthetic_mr()
        key = str(first.StudyInstanceUID)
        assert store_one(node.scp.port, first).Status == 0
        assert store_one(node.scp.port, synthetic_mr(study_uid=key, instance=2, position=8.0)).Status == 0
        node.completion.forget(key)
        node.scheduler.remove_job(f"quiet:{key}")
        node.db.set_study_state(key, COMPLETE)
        generation = node.db.study(key)["generation"]
        rows = node.db.study_instances(key)
        assert len(rows) == 2
        blocked = node.spool.path_of(rows[1]["path"])
        real = grouping.pydicom.dcmread

        def dcmread(path, *args, **kwargs):  # root reads any mode: the refusal a service user gets, by hand
            if str(path) == str(blocked):
                raise PermissionError(13, "Permission denied", str(path))
            return real(path, *args, **kwargs)

        monkeypatch.setattr(grouping.pydicom, "dcmread", dcmread)
        with caplog.at_level(logging.WARNING):
            node.analyse_study(key, generation)
        study = node.db.study(key)
        assert analyser.calls == 0 and study["state"] == COMPLETE
        user = pwd.getpwuid(os.geteuid()).pw_name
        assert study["reason"].startswith("analysis waits (try 1, next in 15 s, fails after 10 min unreadable): 1 "
                                          "of the study's 2 stored instance file(s) cannot be read by this process, "
                                          f"user {user} (uid {os.geteuid()}): PermissionError: Permission denied; "
                                          "stored and acknowledged: not analysed without them; let that user read "
                                          "the files under node.storage_dir (chown -R)")
        assert study["reason"].endswith(f"first: {blocked.relative_to(node.storage_dir)}")
        assert "missing" not in study["reason"]
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and str(blocked.relative_to(node.storage_dir)) in errors[0]
        assert ": PermissionError: Permission denied;" in errors[0]
        assert "stored and acknowledged: not analysed without them" in errors[0]
        assert f"(node.storage_dir {node.storage_dir})" in errors[0]
        assert not any("unrecorded failure" in r.getMessage() for r in caplog.records)
        assert any(str(blocked) in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
        # review48b #6: one study's unreadable file pauses that study here, not every claim of the process
        assert node.claims_blocked() is None and node.paused_studies() == {(key, generation)}
        for _ in range(5):  # a short outage rides through: not failed after a few tries within the window
            node._study_paused.clear()  # its pause over
            node.analyse_study(key, generation)
        study = node.db.study(key)
        assert study["state"] == COMPLETE and study["reason"].startswith("analysis waits (try 6, next in 120 s,")
        first, tries = node._unreadable_tries[(key, generation)]  # the window over: the next unreadable try fails
        node._unreadable_tries[(key, generation)] = (first - UNREADABLE_RETRY_SECONDS, tries)
        node._study_paused.clear()
        node.analyse_study(key, generation)
        study = node.db.study(key)
        assert study["state"] == FAILED and analyser.calls == 0
        assert study["reason"].startswith("analysis failed (unreadable here for 10 min, 7 tries): 1 of the study's "
                                          "2 stored instance file(s) cannot be read")
        assert study["reason"].endswith(f"first: {blocked.relative_to(node.storage_dir)}")
        assert "`dicomnode retry STUDY`" in study["reason"]
        monkeypatch.undo()  # the permission fixed: `dicomnode retry` analyses the whole study
        node._released.clear()
        node.db.set_study_state(key, COMPLETE)
        node.analyse_study(key, generation)
        assert analyser.calls == 1
    finally:
        node.stop()


def test_serve_by_another_user_than_the_storage_owner_is_named(tmp_path, monkeypatch):
    folder = tmp_path / "spool"
    folder.mkdir()
    assert foreign_owner_warning(folder) is None
    assert foreign_owner_warning(tmp_path / "not-yet") is None  # created by this user
    owner = folder.stat().st_uid
    monkeypatch.setattr(os, "geteuid", lambda: owner + 4242)
    warning = foreign_owner_warning(folder)
    assert warning is not None
    assert f"runs as uid {owner + 4242}, but node.storage_dir {folder} belongs to " in warning
    assert f"(uid {owner}): the files it writes there are uid {owner + 4242}'s" in warning
    assert "cannot read them" in warning and "run `serve` as that user" in warning


def test_serve_logs_the_foreign_owner_at_start(tmp_path, monkeypatch, caplog):
    """`serve` says it at start (before anything is received), in the log an admin reads."""
    from dicomnode import cli

    config = tmp_path / "node.toml"
    (tmp_path / "spool").mkdir()
    config.write_text(f'[node]\nstorage_dir = "{tmp_path / "spool"}"\nport = 0\n[observability]\n'
                      'metrics_enabled = false\n')
    owner = (tmp_path / "spool").stat().st_uid
    monkeypatch.setattr(os, "geteuid", lambda: owner + 4242)

    class Stop(Exception):
        pass

    def no_start(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(cli, "start_when_writable", no_start)
    monkeypatch.setattr(cli, "preflight_problems", lambda *a, **k: [])
    monkeypatch.setattr(cli, "configure_logging", lambda *a, **k: None)
    with caplog.at_level(logging.WARNING, logger="dicomnode.cli"):
        try:
            cli.main(["serve", "--config", str(config)])
        except Stop:
            pass
    assert any("belongs to" in r.getMessage() and f"uid {owner + 4242}" in r.getMessage() for r in caplog.records)
    shutil.rmtree(tmp_path / "spool")


def test_process_counts_a_file_it_may_not_read_as_a_failure_not_a_clean_run(tmp_path, monkeypatch, caplog):
    """`dicomnode process`: the study is analysed without the file (the folder is the user's, not a spool), but the
    run exits 1 naming it, and summary.json's unreadable_files says the file is there and could not be read."""
    from dicomnode.config import Config
    from dicomnode.process import process_folder

    folder = tmp_path / "in"
    folder.mkdir()
    first = synthetic_mr()
    key = str(first.StudyInstanceUID)
    first.save_as(folder / "a.dcm", enforce_file_format=True)
    synthetic_mr(study_uid=key, instance=2, position=8.0).save_as(folder / "b.dcm", enforce_file_format=True)
    real = grouping.pydicom.dcmread

    def dcmread(path, *args, **kwargs):
        if str(path).endswith("b.dcm"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(grouping.pydicom, "dcmread", dcmread)
    failures: list[str] = []
    with caplog.at_level(logging.WARNING):
        summary = process_folder(folder, tmp_path / "out", Config(), analyser=CountingAnalyser(), failures=failures)
    (entry,) = summary["unreadable_files"]
    assert entry["path"].endswith("b.dcm")
    assert entry["reason"] == ("unreadable (PermissionError: Permission denied): the file is there, this process may "
                               "not read it")
    assert len(failures) == 1 and "b.dcm" in failures[0] and "its study was analysed without it" in failures[0]


def _truncated_in_a_sequence(path) -> None:
    """An MR file that ends inside an undefined-length sequence: pydicom raises its own errno-less OSError ("No tag
    to read at file position ...") for it, a damaged file, not a refused read."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = synthetic_mr()
    item = Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    ds.ReferencedImageSequence = Sequence([item])
    ds["ReferencedImageSequence"].is_undefined_length = True
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    start = data.index(b"\x08\x00\x40\x11")  # (0008,1140) ReferencedImageSequence
    end = data.index(b"\xfe\xff\xdd\xe0", start)  # its Sequence Delimitation Item
    path.write_bytes(data[:end])


def test_a_damaged_file_is_a_plain_decline_and_process_exits_clean(tmp_path):
    """pydicom's own OSError for a damaged file (no errno) is not "this process may not read it" (review48 #1)."""
    from dicomnode.config import Config
    from dicomnode.process import process_folder

    folder = tmp_path / "in"
    folder.mkdir()
    _truncated_in_a_sequence(folder / "b.dcm")
    try:
        grouping.pydicom.dcmread(folder / "b.dcm", stop_before_pixels=True)
    except OSError as error:  # the case in question: pydicom's errno-less OSError
        assert error.errno is None
    else:
        raise AssertionError("the truncated file was read")
    result = read_header(folder / "b.dcm")
    assert type(result) is grouping.Declined and "this process may not read it" not in result.reason
    first = synthetic_mr()
    first.save_as(folder / "a.dcm", enforce_file_format=True)
    failures: list[str] = []
    summary = process_folder(folder, tmp_path / "out", Config(), analyser=CountingAnalyser(), failures=failures)
    assert failures == []  # `dicomnode process` exits 0: the file is cleanly declined (design.md)
    (entry,) = summary["unreadable_files"]
    assert entry["path"].endswith("b.dcm") and "may not read" not in entry["reason"]


def _lock_folder(monkeypatch, folder) -> None:
    """stat and open of anything under `folder` refused with EACCES, as for the service user facing a series folder
    another user created mode 0700 (root reads any mode, so the refusal is made by hand)."""
    prefix = str(folder) + os.sep
    real_stat, real_open = os.stat, builtins.open

    def stat(path, *args, **kwargs):
        if str(path).startswith(prefix):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_stat(path, *args, **kwargs)

    def open_(path, *args, **kwargs):
        if isinstance(path, (str, os.PathLike)) and str(path).startswith(prefix):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(builtins, "open", open_)


def _complete_two_series_study(node):
    first = synthetic_mr()
    key = str(first.StudyInstanceUID)
    assert store_one(node.scp.port, first).Status == 0
    second = synthetic_mr(study_uid=key, series_uid=generate_uid(), instance=2, position=8.0)
    assert store_one(node.scp.port, second).Status == 0
    node.completion.forget(key)
    node.scheduler.remove_job(f"quiet:{key}")
    node.db.set_study_state(key, COMPLETE)
    rows = node.db.study_instances(key)
    assert len(rows) == 2
    return key, node.db.study(key)["generation"], [node.spool.path_of(row["path"]) for row in rows]


def test_an_unreadable_series_folder_waits_as_an_unreadable_file_does(tmp_path, monkeypatch, caplog):
    """A series folder the service user may not search (review48 #2): its files' stat raises PermissionError, in
    load_studies (Path.is_dir) and in the missing-files check; the study waits naming the files, not "analysis
    failed" at once, nor "missing"."""
    analyser = CountingAnalyser()
    node = Node(node_config(tmp_path), analyser=analyser)
    node.start(warm_up=False)
    try:
        key, generation, paths = _complete_two_series_study(node)
        assert paths[0].parent != paths[1].parent
        for locked in (paths[1], paths[0]):  # the second listed, then the first (the missing-files check)
            node._unreadable_tries.clear()
            node._study_paused.clear()
            _lock_folder(monkeypatch, locked.parent)
            with caplog.at_level(logging.WARNING):
                node.analyse_study(key, generation)
            monkeypatch.undo()
            study = node.db.study(key)
            assert analyser.calls == 0 and study["state"] == COMPLETE, study["reason"]
            assert study["reason"].startswith("analysis waits (try 1, next in 15 s,")
            assert "1 of the study's 2 stored instance file(s) cannot be read by this process" in study["reason"]
            assert ": PermissionError: Permission denied;" in study["reason"]
            assert study["reason"].endswith(f"first: {locked.relative_to(node.storage_dir)}")
            assert "missing" not in study["reason"] and "without a recorded outcome" not in study["reason"]
        node._study_paused.clear()
        node.analyse_study(key, generation)  # readable again: analysed
        assert analyser.calls == 1
    finally:
        node.stop()


def test_a_worker_that_cannot_read_pauses_the_study_with_backoff(tmp_path, monkeypatch):
    """Scale-out (review48 #3): the worker that cannot read releases the claim uncounted and does not claim that
    study again for a while, longer at each try, so that a worker that can read takes it; a short outage does not
    fail it. review48b #6: the other studies go on meanwhile (claims of the whole process pause only where
    node.storage_dir itself cannot be read), and the tries are forgotten once another worker finished the study."""
    analyser = CountingAnalyser()
    node = Node(node_config(tmp_path), analyser=analyser)
    node.start(warm_up=False)
    try:
        first = synthetic_mr()
        key = str(first.StudyInstanceUID)
        assert store_one(node.scp.port, first).Status == 0
        node.completion.forget(key)
        node.scheduler.remove_job(f"quiet:{key}")
        node.db.set_study_state(key, COMPLETE)
        generation = node.db.study(key)["generation"]
        (row,) = node.db.study_instances(key)
        _lock_folder(monkeypatch, node.spool.path_of(row["path"]).parent)
        pauses = []
        for _ in range(4):
            node._study_paused.clear()  # the previous pause over
            node.analyse_study(key, generation)
            pauses.append(round(node._study_paused[(key, generation)] - time.monotonic()))
            assert node.db.study(key)["state"] == COMPLETE
            assert node.claims_blocked() is None  # one study's files: the process claims the others
        assert pauses == [UNREADABLE_PAUSE_SECONDS, 2 * UNREADABLE_PAUSE_SECONDS, 4 * UNREADABLE_PAUSE_SECONDS,
                          8 * UNREADABLE_PAUSE_SECONDS]
        assert node._released.get((key, generation), 0) == 0  # uncounted: MAX_UNRECORDED_RELEASES does not fail it
        assert node_module.UNREADABLE_RETRY_SECONDS >= 300  # minutes, for an NFS / storage failover
        other = synthetic_mr()  # a healthy study completes meanwhile: claimed, the paused one skipped
        assert store_one(node.scp.port, other).Status == 0
        other_key = str(other.StudyInstanceUID)
        node.completion.forget(other_key)
        node.scheduler.remove_job(f"quiet:{other_key}")
        node.db.set_study_state(other_key, COMPLETE)
        assert node.db.claim_next_study(skip=node.paused_studies()) == (other_key, node.db.study(other_key)["generation"])
        node.db.set_study_state(other_key, DONE)  # (as if analysed: no worker of this node takes it meanwhile)
        # the storage itself unreadable here (an NFS outage): then the whole process pauses its claims
        monkeypatch.setattr(node, "_storage_unreadable", lambda: True)
        node._study_paused.clear()
        node.analyse_study(key, generation)
        assert "could not be read a moment ago" in (node.claims_blocked() or "")
        node._claims_paused_until = 0.0
        monkeypatch.undo()
        node._study_paused.clear()
        node.analyse_study(key, generation)
        assert analyser.calls == 1 and (key, generation) not in node._unreadable_tries
        # tries of a study another worker finished are forgotten
        node._unreadable_tries[(other_key, 1)] = (time.monotonic(), 1)
        node._study_paused[(other_key, 1)] = time.monotonic() + 60
        node.forget_unreadable_elsewhere()
        assert not node._unreadable_tries and not node._study_paused
    finally:
        node.stop()


def test_a_folder_in_a_files_place_is_not_called_a_permission_problem(tmp_path):
    """review48b note: refused_by_os counts IsADirectoryError (a folder where a spooled file should be) as
    unreadable, and the failure advised `chown -R`, which does not help there."""
    from dicomnode.cmr.grouping import unreadable_file
    from dicomnode.node import SpooledFilesUnreadable

    path = tmp_path / "series" / "a.dcm"
    folder = SpooledFilesUnreadable(tmp_path, [unreadable_file(path, IsADirectoryError(21, "Is a directory"))], 2)
    assert "IsADirectoryError: Is a directory" in str(folder) and "chown" not in str(folder)
    assert "a folder stands where the file should be" in str(folder) and "no permission change helps" in str(folder)
    denied = SpooledFilesUnreadable(tmp_path, [unreadable_file(path, PermissionError(13, "Permission denied"))], 2)
    assert "(chown -R), then `dicomnode retry STUDY`" in str(denied)
    failing = SpooledFilesUnreadable(tmp_path, [unreadable_file(path, OSError(5, "Input/output error"))], 2)
    assert "chown" not in str(failing) and "check the storage under node.storage_dir" in str(failing)
