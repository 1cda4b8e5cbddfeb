"""`dicomnode process`: analyse every study in a folder of DICOM files, no network; write .dcm + summary.json."""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
from pathlib import Path

from dicomnode.config import Config
from dicomnode.routing import select_route
from dicomnode.spool import write_durably
from dicomnode.uids import short_hash

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


def process_folder(input_dir: Path, out_dir: Path, config: Config, analyser=None) -> dict:
    """Analyse each study found; returns the summary.json content (also written to out_dir/summary.json)."""
    from dicomnode.analysis.run import Analyser
    from dicomnode.cmr.study import load_studies

    input_dir, out_dir = Path(input_dir), Path(out_dir)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"input folder {input_dir} does not exist")
    out_dir.mkdir(parents=True, exist_ok=True)
    analyser = analyser or Analyser(config)
    files = find_files(input_dir)
    log.info("found %d file(s) under %s", len(files), input_dir)
    studies = load_studies(files)
    summaries = [_process_study(study, out_dir, config, analyser) for study in studies]
    summary = {"studies": summaries}
    write_durably(out_dir / "summary.json", json.dumps(summary, indent=2).encode("utf-8"), mode=0o644)
    return summary


def _process_study(study, out_dir: Path, config: Config, analyser) -> dict:
    """The summary.json entry of one study; any failure becomes this study's `declined` entry, never a crash."""
    from dicomnode.node import dataset_bytes

    entry = {"study_instance_uid": study.study_instance_uid or None, "series": study.summary_series(),
             "outputs": [], "declined": [d.summary() for d in study.declined]}
    if not study.series and study.declined:
        return entry  # declined up front (malformed Study Instance UID, unreadable files): the reasons say why
    try:
        headers = [series.instances[0].dataset for series in study.series if series.instances]
        route = select_route(config, None, headers)
        if route is None:
            entry["declined"].append({"series_instance_uid": None, "reason": "no routing rule matches"})
            return entry
        outcome = analyser.analyse(study, route.pipelines, started_at=dt.datetime.now().astimezone())
        outputs = []
        for dataset in outcome.datasets:
            relative = Path(_safe(study.study_instance_uid)) / f"{dataset.Modality}_{_safe(dataset.SOPInstanceUID)}.dcm"
            write_durably(out_dir / relative, dataset_bytes(dataset), mode=0o644)
            outputs.append(str(relative))
        outcome.summary["outputs"] = outputs
        return outcome.summary
    except Exception as error:  # noqa: BLE001 - one study's failure is its own declined entry
        log.exception("study %s: processing failed", short_hash(study.study_instance_uid or "-"))
        entry["declined"].append({"series_instance_uid": None,
                                  "reason": f"processing failed: {type(error).__name__}: {error}"})
        return entry


def _safe(uid: str) -> str:
    from dicomnode.uids import check_uid

    return check_uid(uid)
