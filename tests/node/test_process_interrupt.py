"""`dicomnode process` stopped part-way (Ctrl-C, SIGTERM, kill -9) never leaves a folder that a re-run turns into two
result sets; only regular files are read (a FIFO never hangs it); a folder without any DICOM study exits 1, naming
archives (opsbreak findings 1, 8, 9). The analysis is a stand-in (three result objects per study): no model loads."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from dicomnode.process import PARTIAL_MANIFEST, find_files
from tests.hardening.hardening_support import synthetic_mr

ROOT = Path(__file__).resolve().parents[2]

#: `dicomnode process` with a stand-in analyser; STOP_AT=N: the Nth study's analysis sleeps ("sleep") or the
#: process kills itself with SIGKILL ("kill")
PROGRAM = """
import os, signal, sys, time
# as from a terminal: a suite started in the background of a non-interactive shell hands its children SIGINT
# ignored, and `process` rightly keeps a signal its caller ignores
signal.signal(signal.SIGINT, signal.default_int_handler)
import dicomnode.process as process
from dicomnode.types import StudyOutcome
from tests.hardening.hardening_support import synthetic_mr

class StandIn:
    calls = 0

    def __init__(self, config=None):
        pass

    def analyse(self, study, pipelines, started_at=None, supersedes=None):
        StandIn.calls += 1
        if StandIn.calls == int(os.environ.get("STOP_AT", "0")):
            if os.environ["HOW"] == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(600)
        datasets = []
        for modality in ("SEG", "SR", "DOC"):
            result = synthetic_mr(study_uid=study.study_instance_uid)
            result.Modality = modality
            datasets.append(result)
        return StudyOutcome(summary={"study_instance_uid": study.study_instance_uid, "declined": []},
                            datasets=datasets)

process.Analyser = StandIn
from dicomnode.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _command(inputs: Path, out: Path) -> list[str]:
    return [sys.executable, "-c", PROGRAM, "process", str(inputs), "--out", str(out)]


def _environment(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def _studies(folder: Path, count: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    uids = []
    for number in range(count):
        dataset = synthetic_mr()
        dataset.save_as(folder / f"mr{number}.dcm", enforce_file_format=True)
        uids.append(str(dataset.StudyInstanceUID))
    return uids


def _results(out: Path) -> set[str]:
    return {str(path.relative_to(out)) for path in out.rglob("*.dcm")}


def _listed(out: Path) -> set[str]:
    summary = json.loads((out / "summary.json").read_text())
    return {output for study in summary["studies"] for output in study["outputs"]}


def _wait_for_results(out: Path, count: int, process: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while len(_results(out)) < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the first study's results never appeared"
        time.sleep(0.2)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_run_says_so_in_one_line_and_leaves_no_result_behind(tmp_path, signum):
    inputs, out = tmp_path / "in", tmp_path / "out"
    _studies(inputs, 3)
    running = subprocess.Popen(_command(inputs, out), env=_environment(STOP_AT="2", HOW="sleep"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        _wait_for_results(out, 3, running)  # the first study's three objects are written, the second one "runs"
        running.send_signal(signum)
        _, err = running.communicate(timeout=120)
    finally:
        if running.poll() is None:
            running.kill()
    assert running.returncode == 128 + signum, err[-3000:]  # 130 / 143, as shells report it
    assert f"interrupted ({signal.Signals(signum).name})" in err and "removed the 3 result file(s)" in err, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert _results(out) == set() and sorted(p.name for p in out.iterdir()) == []  # nothing half done is left


def test_a_rerun_after_a_kill_leaves_exactly_one_result_set_per_study(tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    uids = _studies(inputs, 2)
    killed = subprocess.run(_command(inputs, out), env=_environment(STOP_AT="2", HOW="kill"), capture_output=True,
                            text=True, timeout=300, cwd=ROOT)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert len(_results(out)) == 3 and not (out / "summary.json").exists()
    # a comment line, then each result path, listed before its file was written
    assert len((out / PARTIAL_MANIFEST).read_text().splitlines()) == 4

    again = subprocess.run(_command(inputs, out), env=_environment(), capture_output=True, text=True, timeout=300,
                           cwd=ROOT)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _results(out) == _listed(out) and len(_results(out)) == 6
    for uid in uids:  # one SEG, one SR, one PDF stand-in per study: not two sets
        assert sorted(Path(p).name.split("_")[0] for p in _results(out) if p.startswith(uid)) == ["DOC", "SEG", "SR"]
    assert not (out / PARTIAL_MANIFEST).exists()


def test_fifos_sockets_and_link_loops_are_skipped_and_named_never_read(tmp_path):
    import socket

    inputs, out = tmp_path / "in", tmp_path / "out"
    _studies(inputs, 1)
    elsewhere = tmp_path / "elsewhere"
    _studies(elsewhere, 1)
    (inputs / "linked.dcm").symlink_to(elsewhere / "mr0.dcm")  # a link to a regular file is read
    os.mkfifo(inputs / "x.dcm")
    (inputs / "dangling.dcm").symlink_to(tmp_path / "no-such-file.dcm")
    (inputs / "loop.dcm").symlink_to(inputs / "loop.dcm")
    (inputs / "a").symlink_to(inputs / "b")
    (inputs / "b").symlink_to(inputs / "a")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(inputs / "sock"))
    try:
        done = subprocess.run(_command(inputs, out), env=_environment(), capture_output=True, text=True, timeout=300,
                              cwd=ROOT)
    finally:
        server.close()
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["studies"]) == 2  # mr0.dcm and the linked one
    reasons = {Path(entry["path"]).name: entry["reason"] for entry in summary["unreadable_files"]}
    assert reasons["x.dcm"].startswith("a named pipe (FIFO), not a regular file")
    assert reasons["sock"].startswith("a socket, not a regular file")
    assert reasons["dangling.dcm"].startswith("a broken symbolic link")
    assert "loop" in reasons["loop.dcm"] and "loop" in reasons["a"] and "loop" in reasons["b"]


def test_find_files_names_what_it_does_not_return(tmp_path):
    _studies(tmp_path, 1)
    os.mkfifo(tmp_path / "pipe")
    skipped: list[dict] = []
    assert [p.name for p in find_files(tmp_path, skipped)] == ["mr0.dcm"]
    assert [Path(entry["path"]).name for entry in skipped] == ["pipe"]
    assert [p.name for p in find_files(tmp_path)] == ["mr0.dcm"]  # `send` and the demo: regular files only


def test_a_folder_without_any_dicom_study_exits_1_and_names_an_archive(tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    _studies(tmp_path / "packed", 1)
    inputs.mkdir()
    with zipfile.ZipFile(inputs / "lge.zip", "w") as archive:
        archive.write(tmp_path / "packed" / "mr0.dcm", "mr0.dcm")
    (inputs / "export").write_bytes((inputs / "lge.zip").read_bytes())  # a zip by its bytes, whatever its name
    (inputs / "notes.txt").write_text("not DICOM")
    done = subprocess.run(_command(inputs, out), env=_environment(), capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    assert done.returncode == 1, done.stderr[-3000:]
    assert f"no DICOM study found in {inputs}: 3 file(s), none DICOM" in done.stderr, done.stderr[-3000:]
    assert "2 of them an archive (export, lge.zip): unpack it first" in done.stderr, done.stderr[-3000:]
    unreadable = json.loads((out / "summary.json").read_text())["unreadable_files"]
    reasons = {Path(entry["path"]).name: entry["reason"] for entry in unreadable}
    assert reasons["lge.zip"].startswith("an archive (.zip), not a DICOM file: unpack it first")
    assert reasons["export"].startswith("an archive (zip), not a DICOM file: unpack it first")
    assert reasons["notes.txt"].startswith("not a DICOM file")

    empty = tmp_path / "empty"
    empty.mkdir()
    done = subprocess.run(_command(empty, tmp_path / "out2"), env=_environment(), capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert done.returncode == 1 and f"no DICOM study found in {empty}: it holds no file" in done.stderr


def test_a_declined_study_still_exits_0(tmp_path):
    """Exit 1 is for "nothing found": a study the node cleanly declines (here: no route matches it) is exit 0."""
    inputs, out = tmp_path / "in", tmp_path / "out"
    _studies(inputs, 1)
    config = tmp_path / "node.toml"
    config.write_text('[[routes]]\nname = "ct-only"\nmatch = { modality = "CT" }\npipelines = ["lge"]\n'
                      'destinations = []\n')
    done = subprocess.run(_command(inputs, out) + ["--config", str(config)], env=_environment(), capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    (study,) = json.loads((out / "summary.json").read_text())["studies"]
    assert study["outputs"] == [] and study["declined"]


def test_send_skips_a_fifo_in_a_folder_or_given_by_name_instead_of_hanging(tmp_path, capsys):
    from dicomnode.cli import main

    folder = tmp_path / "in"
    folder.mkdir()
    os.mkfifo(folder / "x.dcm")
    config = tmp_path / "node.toml"
    config.write_text('[[destinations]]\nname = "pacs"\nae_title = "PACS"\nhost = "127.0.0.1"\nport = 9\n')
    assert main(["send", str(folder), str(folder / "x.dcm"), "--to", "pacs", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.count("x.dcm: a named pipe (FIFO), not a regular file") == 2 and "nothing to send" in err, err


def test_a_study_that_fails_part_way_through_writing_leaves_no_unlisted_result(tmp_path):
    from dicomnode.config import Config
    from dicomnode.process import process_folder
    from dicomnode.types import StudyOutcome

    class HalfWritten:
        def analyse(self, study, pipelines, started_at=None, supersedes=None):
            good, bad = (synthetic_mr(study_uid=study.study_instance_uid) for _ in range(2))
            bad.SOPInstanceUID = "1.2.bad-uid"  # write_results raises on it, after the first object is written
            return StudyOutcome(summary={"study_instance_uid": study.study_instance_uid, "declined": []},
                                datasets=[good, bad])

    inputs, out = tmp_path / "in", tmp_path / "out"
    _studies(inputs, 1)
    summary = process_folder(inputs, out, Config(), analyser=HalfWritten())
    (study,) = summary["studies"]
    assert study["outputs"] == [] and any("processing failed" in d["reason"] for d in study["declined"])
    assert _results(out) == set() and sorted(p.name for p in out.iterdir()) == ["summary.json"]
