"""A stored and acknowledged instance the node cannot read later (break48a #2): named at WARNING / ERROR with the
operating system's error, and the study not analysed without it (its images would be reported as missing, and with
an ED or ES image among them the volumes would change); `serve` started by a user that is not the owner of
node.storage_dir says so at start."""
from __future__ import annotations

import logging
import os
import pwd
import shutil


from dicomnode.cmr import grouping
from dicomnode.cmr.grouping import UnreadableFile, read_header
from dicomnode.cmr.study import load_studies
from dicomnode.node import MAX_UNRECORDED_RELEASES, Node
from dicomnode.state import COMPLETE, FAILED, foreign_owner_warning
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
        assert study["reason"].startswith("analysis waits: 1 of the study's 2 stored instance file(s) cannot be read "
                                          f"by this process, user {user} (uid {os.geteuid()}): PermissionError: "
                                          "Permission denied; received and acknowledged")
        assert study["reason"].endswith(f"first: {blocked.relative_to(node.storage_dir)}")
        assert "missing" not in study["reason"]
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and str(blocked.relative_to(node.storage_dir)) in errors[0]
        assert ": PermissionError: Permission denied;" in errors[0]
        assert "received and acknowledged, so the study is not analysed without them" in errors[0]
        assert not any("unrecorded failure" in r.getMessage() for r in caplog.records)
        assert any(str(blocked) in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
        for _ in range(MAX_UNRECORDED_RELEASES):  # never readable: failed in the end, saying why
            node.analyse_study(key, generation)
        study = node.db.study(key)
        assert study["state"] == FAILED and analyser.calls == 0
        assert study["reason"].startswith("analysis failed: 1 of the study's 2 stored instance file(s) cannot be read")
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
