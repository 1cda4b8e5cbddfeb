"""`dicomnode process`: analyse every study in a folder of DICOM files, no network; write .dcm + summary.json."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from dicomnode.analysis.run import Analyser
from dicomnode.cmr.study import CMRStudy, load_studies
from dicomnode.config import Config
from dicomnode.observe import patient_values
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


def process_folder(input_dir: Path, out_dir: Path, config: Config, analyser: StudyAnalyser | None = None) -> dict:
    """Analyse each study found through the study path (as `serve` does, without a network); returns the
    summary.json content (also written to out_dir/summary.json). Raises FileNotFoundError without `input_dir`."""
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"input folder {input_dir} does not exist")
    out_dir.mkdir(parents=True, exist_ok=True)
    analyser = analyser or Analyser(config)
    files = find_files(input_dir)
    log.info("found %d file(s) under %s", len(files), input_dir)
    if not files:
        log.warning("no file under %s: nothing to analyse (summary.json lists no study)", input_dir)
    studies = load_studies(files)
    summary = {"studies": [_process_study(study, out_dir, config, analyser) for study in studies]}
    write_durably(out_dir / "summary.json", json.dumps(summary, indent=2).encode("utf-8"), mode=0o644)
    return summary


def _process_study(study: CMRStudy, out_dir: Path, config: Config, analyser: StudyAnalyser) -> dict:
    """The summary.json entry of one study; any failure becomes this study's `declined` entry, never a crash."""
    for series in study.series:  # its patient identifiers are redacted from the logs, as the receiver does
        if series.instances:
            patient_values.remember(series.instances[0].dataset)
    if not study.series and study.declined:  # malformed Study Instance UID, unreadable files: the reasons say why
        return {"study_instance_uid": study.study_instance_uid or None, "series": study.summary_series(),
                "outputs": [], "declined": [d.summary() for d in study.declined]}
    try:
        return run_study(study, config, analyser, None, out_dir, _result_name, file_mode=0o644).summary
    except Exception as error:  # noqa: BLE001 - one study's failure is its own declined entry
        log.exception("study %s: processing failed", short_hash(study.study_instance_uid or "-"))
        return declined_entry(study, f"processing failed: {type(error).__name__}: {error}")


def _result_name(dataset) -> Path:
    """<Study Instance UID>/<Modality>_<SOP Instance UID>.dcm (design.md: `process` output layout)."""
    return Path(check_uid(dataset.StudyInstanceUID)) / f"{dataset.Modality}_{check_uid(dataset.SOPInstanceUID)}.dcm"
