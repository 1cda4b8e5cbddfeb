"""`dicomnode process`: analyse every study in a folder of DICOM files, no network; write .dcm + summary.json."""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from dicomnode.analysis.run import Analyser
from dicomnode.cmr.study import CMRStudy, load_studies
from dicomnode.config import Config
from dicomnode.observe import patient_values, study_context
from dicomnode.spool import write_durably
from dicomnode.study_path import StudyAnalyser, declined_entry, run_study
from dicomnode.uids import check_uid, short_hash

log = logging.getLogger("dicomnode.process")


def find_files(input_dir: Path) -> list[Path]:
    """Every regular file below `input_dir` (recursively, following links once), hidden files and DICOMDIR excluded."""
    found = []
    visited: set[str] = set()
    for root, dirs, files in os.walk(input_dir, followlinks=True):
        real = os.path.realpath(root)
        if real in visited:  # a link cycle, or a folder linked twice
            dirs[:] = []
            continue
        visited.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            found.append(Path(root) / name)
    return found


class OutputFolderError(Exception):
    """The --out folder cannot take this run's results; the message says why and what to do."""


def check_writable(out_dir: Path) -> None:
    """Create out_dir when missing and prove a file can be written there, before any analysis runs.
    Raises OutputFolderError naming the folder and the system's reason (read-only, permission, no such parent)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".dicomnode-probe-"):
            pass
    except OSError as error:
        raise OutputFolderError(f"--out {out_dir}: cannot write results there ({error.strerror or error}); "
                                "choose a folder this user can write") from error


def clear_previous_run(out_dir: Path) -> int:
    """Remove the result files a previous run listed in out_dir/summary.json (and its summary), so that the folder
    holds one run's results only; files the node did not write are left alone. Returns how many were removed.
    Raises OutputFolderError when summary.json cannot be read or lists a path outside out_dir."""
    summary_path = out_dir / "summary.json"
    if not summary_path.is_file():
        return 0
    try:
        previous = json.loads(summary_path.read_text(encoding="utf-8"))
        listed = [output for study in previous.get("studies", []) for output in study.get("outputs", [])]
    except (OSError, ValueError, AttributeError, TypeError) as error:
        raise OutputFolderError(f"--out {out_dir} holds a summary.json that is not a previous run's ({error}); "
                                "choose another folder or remove it") from error
    root = out_dir.resolve()
    paths = [(out_dir / str(output)).resolve() for output in listed]
    outside = [str(p) for p in paths if root not in p.parents]
    if outside:
        raise OutputFolderError(f"--out {out_dir}: its summary.json lists files outside it ({outside[0]}); "
                                "choose another folder or remove it")
    removed = 0
    for path in paths:
        if path.is_file():
            path.unlink()
            removed += 1
        if path.parent != root and path.parent.is_dir() and not any(path.parent.iterdir()):
            path.parent.rmdir()
    summary_path.unlink()
    return removed


def process_folder(input_dir: Path, out_dir: Path, config: Config, analyser: StudyAnalyser | None = None,
                   failures: list[str] | None = None) -> dict:
    """Analyse each study found through the study path (as `serve` does, without a network); returns the
    summary.json content (also written to out_dir/summary.json). A previous run's results in out_dir are replaced
    (clear_previous_run). `failures`, when given, receives one line per study the node failed to analyse (a model
    that did not load, a pipeline or the study path that raised), as opposed to a study cleanly declined. Raises
    FileNotFoundError without `input_dir`, OutputFolderError when out_dir is a file or holds something that is not a
    previous run's summary.json."""
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"input folder {input_dir} does not exist")
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputFolderError(f"--out {out_dir} is a file, not a folder: give a folder for the results")
    check_writable(out_dir)
    removed = clear_previous_run(out_dir)
    if removed:
        log.info("replaced the previous run's %d result file(s) in %s", removed, out_dir)
    analyser = analyser or Analyser(config)
    files = find_files(input_dir)
    log.info("found %d file(s) under %s", len(files), input_dir)
    if not files:
        log.warning("no file under %s: nothing to analyse (summary.json lists no study)", input_dir)
    unreadable: list[dict] = []
    studies = load_studies(files, unreadable_files=unreadable)
    failures = failures if failures is not None else []
    entries = []
    for study in studies:
        with study_context(short_hash(study.study_instance_uid or "-")):  # lines carry the study, as serve's do
            entries.append(_process_study(study, out_dir, config, analyser, failures))
    summary = {"studies": entries, "unreadable_files": unreadable}
    write_durably(out_dir / "summary.json", json.dumps(summary, indent=2).encode("utf-8"), mode=0o644)
    return summary


def _process_study(study: CMRStudy, out_dir: Path, config: Config, analyser: StudyAnalyser,
                   failures: list[str]) -> dict:
    """The summary.json entry of one study; any failure becomes this study's `declined` entry (and a line in
    `failures`), never a crash."""
    for series in study.series:  # its patient identifiers are redacted from the logs, as the receiver does
        if series.instances:
            patient_values.remember(series.instances[0].dataset)
    if not study.series and study.declined:  # a malformed Study Instance UID, a study not understood: reasons say why
        return {"study_instance_uid": study.study_instance_uid or None, "series": study.summary_series(),
                "outputs": [], "declined": [d.summary() for d in study.declined]}
    tag = short_hash(study.study_instance_uid or "-")
    try:
        run = run_study(study, config, analyser, None, out_dir, _result_name, file_mode=0o644)
    except Exception as error:  # noqa: BLE001 - one study's failure is its own declined entry
        log.exception("study %s: processing failed", tag)
        failures.append(f"study {study.study_instance_uid or '(no UID)'}: processing failed: "
                        f"{type(error).__name__}: {error}")
        return declined_entry(study, f"processing failed: {type(error).__name__}: {error}")
    failures.extend(f"study {study.study_instance_uid}: {error}" for error in run.errors)
    return run.summary


def _result_name(dataset) -> Path:
    """<Study Instance UID>/<Modality>_<SOP Instance UID>.dcm (design.md: `process` output layout)."""
    return Path(check_uid(dataset.StudyInstanceUID)) / f"{dataset.Modality}_{check_uid(dataset.SOPInstanceUID)}.dcm"
