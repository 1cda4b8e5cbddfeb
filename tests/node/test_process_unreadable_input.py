"""`dicomnode process` on an input folder holding what this user may not read (s49 fixer f49a #1): a sub-folder of
mode 000 or another user's 0700 one, a folder it may list but not search, a file of mode 000; and symbolic link
loops. The readable files are analysed, what was not read is named in the output and in summary.json's
`unreadable_files` (as the node path names a file it may not read: `unreadable (PermissionError: ...)`), the exit
status is 1, and nothing crashes."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dicomnode import process
from dicomnode.cli import main
from dicomnode.cmr.grouping import UNREADABLE_NOTE
from dicomnode.process import UNREADABLE_FOLDER_NOTE, find_files
from tests.hardening.hardening_support import synthetic_mr
from tests.node.nodeproc import ENV, REPO

#: what a folder this user may not list and a file it may not read are called (the node path's words)
REFUSED_FOLDER = f"unreadable (PermissionError: Permission denied): {UNREADABLE_FOLDER_NOTE}"
REFUSED_FILE = f"unreadable (PermissionError: Permission denied): {UNREADABLE_NOTE}"
#: root reads a file of any mode (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH); the node's service user does not
DROP_OVERRIDE = ("--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search")


def _as_a_plain_user(probe: Path) -> list[str]:
    """The command prefix under which a process of this user is refused what the file modes refuse: none for a
    user that is not root; for root, util-linux `setpriv` without the capabilities that override the modes (checked
    on `probe`, a folder of mode 000: a container that may not drop them skips)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("run as root, and util-linux setpriv is not installed: a folder of mode 000 is readable to "
                    "this process")
    prefix = [setpriv, *DROP_OVERRIDE]
    check = subprocess.run([*prefix, sys.executable, "-c", f"import os; os.listdir({str(probe)!r})"],
                           capture_output=True, text=True)
    if "PermissionError" not in check.stderr:
        pytest.skip(f"setpriv could not drop root's override of file modes here: {check.stderr.strip()[-200:]}")
    return prefix


def _process(prefix: list[str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", "dicomnode", "process", *args], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=600)


def _save(dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def restore_modes():
    """Folders and files a test made unreadable get their mode back, so that pytest can remove tmp_path."""
    changed: list[Path] = []
    yield changed
    for path in reversed(changed):
        os.chmod(path, 0o700, follow_symlinks=False)


def _chmod(changed: list[Path], path: Path, mode: int) -> None:
    os.chmod(path, mode)
    changed.append(path)


def test_process_analyses_what_it_may_read_and_names_what_it_may_not(tmp_path, restore_modes):
    inputs, out = tmp_path / "in", tmp_path / "out"
    first = synthetic_mr()
    study = str(first.StudyInstanceUID)
    _save(first, inputs / "mr1.dcm")
    _save(synthetic_mr(study_uid=study, instance=2, position=8.0), inputs / "locked" / "mr2.dcm")
    _save(synthetic_mr(study_uid=study, instance=3, position=16.0), inputs / "theirs" / "mr3.dcm")
    _save(synthetic_mr(study_uid=study, instance=4, position=24.0), inputs / "listed" / "mr4.dcm")
    _save(synthetic_mr(study_uid=study, instance=5, position=32.0), inputs / "mr5.dcm")
    (inputs / "loop").symlink_to("loop")  # a link to itself
    (inputs / "again").mkdir()
    (inputs / "again" / "up").symlink_to("..")  # a folder link back to the input folder: searched once
    _chmod(restore_modes, inputs / "locked", 0o000)
    os.chown(inputs / "theirs", 65534, 65534)  # another user's folder (nobody), owner-only
    _chmod(restore_modes, inputs / "theirs", 0o700)
    _chmod(restore_modes, inputs / "listed", 0o444)  # its names may be listed, its files not reached
    _chmod(restore_modes, inputs / "mr5.dcm", 0o000)
    prefix = _as_a_plain_user(inputs / "locked")

    run = _process(prefix, str(inputs), "--out", str(out))
    assert run.returncode == 1, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    summary = json.loads((out / "summary.json").read_text())
    (analysed,) = summary["studies"]  # the readable file's study, analysed
    assert analysed["study_instance_uid"] == study
    assert [series["slices"] for series in analysed["series"]] == [1]
    reasons = {entry["path"]: entry["reason"] for entry in summary["unreadable_files"]}
    assert reasons == {str(inputs / "locked"): REFUSED_FOLDER, str(inputs / "theirs"): REFUSED_FOLDER,
                       str(inputs / "listed" / "mr4.dcm"): REFUSED_FILE, str(inputs / "mr5.dcm"): REFUSED_FILE,
                       str(inputs / "loop"): "a symbolic link loop (the link leads back to itself)"}
    for path, reason in reasons.items():  # on the console too
        assert f"{path}: {reason}" in run.stdout
    assert "4 analysis failure(s)" in run.stderr
    assert f"{inputs / 'locked'}: {REFUSED_FOLDER}: the studies found were analysed without its files" in run.stderr
    assert f"{inputs / 'mr5.dcm'}: {REFUSED_FILE}: its study was analysed without it" in run.stderr
    assert f"{inputs / 'theirs'} cannot be listed by this process (PermissionError: Permission denied)" in run.stderr


def test_an_input_folder_it_may_not_list_or_reach_is_said_so(tmp_path, restore_modes):
    inputs = tmp_path / "in"
    _save(synthetic_mr(), inputs / "mr1.dcm")
    _chmod(restore_modes, inputs, 0o000)
    prefix = _as_a_plain_user(inputs)
    run = _process(prefix, str(inputs), "--out", str(tmp_path / "out"))
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert (f"error: no DICOM study found in {inputs}: 1 folder(s) this user may not list ({inputs}): run as a user "
            "who may read them") in run.stderr
    assert "it holds no file" not in run.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["unreadable_files"] == [{"path": str(inputs), "reason": REFUSED_FOLDER}]

    run = _process(prefix, str(inputs / "below"), "--out", str(tmp_path / "out2"))  # its parent may not be searched
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert (f"error: input folder {inputs / 'below'} cannot be reached by this user (PermissionError: Permission "
            "denied)") in run.stderr


def test_find_files_names_a_folder_and_a_file_the_operating_system_refuses(tmp_path, monkeypatch, capsys):
    """The same without a second user (as root reads any mode): os.walk's listing and the stat refused by hand."""
    inputs, tmp_path = tmp_path, tmp_path / "in"
    _save(synthetic_mr(), tmp_path / "mr1.dcm")
    _save(synthetic_mr(), tmp_path / "locked" / "mr2.dcm")
    _save(synthetic_mr(), tmp_path / "listed" / "mr3.dcm")
    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "listed" / "again").symlink_to("..")
    scandir, stat = os.scandir, os.stat

    def refusing_scandir(path="."):
        if not isinstance(path, int) and Path(path) == tmp_path / "locked":  # shutil.rmtree scans by descriptor
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    def refusing_stat(path, *args, **kwargs):
        if not isinstance(path, int) and Path(path) == tmp_path / "listed" / "mr3.dcm":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", refusing_scandir)
    monkeypatch.setattr(process.os, "stat", refusing_stat)
    skipped: list[dict] = []
    assert find_files(tmp_path, skipped) == [tmp_path / "mr1.dcm"]
    assert {entry["path"]: entry["reason"] for entry in skipped} == {
        str(tmp_path / "locked"): REFUSED_FOLDER, str(tmp_path / "listed" / "mr3.dcm"): REFUSED_FILE,
        str(tmp_path / "loop"): "a symbolic link loop (the link leads back to itself)"}
    assert main(["process", str(tmp_path), "--out", str(inputs / "out")]) == 1  # something was not read
    err = capsys.readouterr().err
    assert "2 analysis failure(s)" in err and "Traceback" not in err
    assert f"{tmp_path / 'locked'}: {REFUSED_FOLDER}: the studies found were analysed without its files" in err
    summary = json.loads((inputs / "out" / "summary.json").read_text())
    assert len(summary["studies"]) == 1 and len(summary["unreadable_files"]) == 3
    (tmp_path / "listed" / "mr3.dcm").unlink()
    monkeypatch.setattr(os, "scandir", scandir)
    assert main(["process", str(tmp_path), "--out", str(inputs / "out")]) == 0  # a link loop alone: named, exit 0
    assert json.loads((inputs / "out" / "summary.json").read_text())["unreadable_files"] == [
        {"path": str(tmp_path / "loop"), "reason": "a symbolic link loop (the link leads back to itself)"}]


def test_a_mounted_disks_own_lost_found_it_may_not_list_is_no_skipped_study_folder(tmp_path, monkeypatch, caplog):
    """INPUT_DIR the root of a mounted ext4 disk: its root-owned 0700 `lost+found` (every non-root run is refused
    its listing) is not named and not counted (the run's exit stays 0); the same refusal anywhere else still is."""
    disk = tmp_path / "usb"
    _save(synthetic_mr(), disk / "study" / "mr1.dcm")
    for folder in (disk / "lost+found", disk / "study" / "lost+found", disk / "locked"):
        folder.mkdir()
    refused_to = {str(disk / "lost+found"), str(disk / "study" / "lost+found"), str(disk / "locked")}
    listing = os.scandir

    def scandir(path="."):  # what the operating system answers a user without CAP_DAC_READ_SEARCH
        if os.fspath(path) in refused_to:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return listing(path)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os.path, "ismount", lambda path: os.fspath(path) == str(disk))
    skipped: list[dict] = []
    with caplog.at_level("DEBUG", logger="dicomnode.process"):
        found = find_files(disk, skipped=skipped)
    assert found == [disk / "study" / "mr1.dcm"]
    # a lost+found below the mount point's root, and any other folder, are still folders whose files were not read
    assert skipped == [{"path": str(disk / "locked"), "reason": REFUSED_FOLDER},
                       {"path": str(disk / "study" / "lost+found"), "reason": REFUSED_FOLDER}]
    assert f"{disk / 'lost+found'} cannot be listed by this process" in caplog.text
    assert all(record.levelname == "DEBUG" for record in caplog.records if "usb/lost+found" in record.getMessage())

    skipped = []  # INPUT_DIR itself the lost+found: the run read nothing, which is said
    monkeypatch.setattr(os.path, "ismount", lambda path: os.fspath(path) == str(disk))
    assert find_files(disk / "lost+found", skipped=skipped) == []
    assert skipped == [{"path": str(disk / "lost+found"), "reason": REFUSED_FOLDER}]
