"""Retention: purge finished studies (spool files, results, index rows) after N days, or oldest first when disk runs low.

A study with undelivered results (dead letters) is never purged automatically, whatever its age or the free space:
its results exist nowhere else. `dicomnode status` lists it; `dicomnode retry` sends it again."""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dicomnode.config import RetentionConfig
from dicomnode.state import DONE, FAILED, StateDB
from dicomnode.uids import short_hash

log = logging.getLogger("dicomnode.retention")

#: how often free space is checked for the emergency purge, between the scheduled purges
FREE_SPACE_CHECK_SECONDS = 60

#: only studies in these states are ever purged; everything unfinished is kept whatever the disk says
PURGEABLE_STATES = (DONE, FAILED)


@dataclass
class PurgeReport:
    studies: list[str] = field(default_factory=list)  # study keys purged
    files: int = 0
    bytes: int = 0


def _inside(root: Path, relative: str) -> Path | None:
    """The file a stored relative path names, or None when it would leave the storage folder."""
    candidate = (root / relative).resolve()
    try:
        candidate.relative_to(root.resolve())
    except ValueError:
        return None
    return candidate


def purge_study(db: StateDB, storage_dir: Path, study_key: str, report: PurgeReport | None = None) -> bool:
    """Delete one finished study's files, then its rows, in one transaction; False if it is not finished (anymore).

    The transaction holds the study's row lock: a late instance of this study waits, then starts a new study.
    A crash after some files are gone leaves the rows, and the next purge finishes the job.
    """
    report = report if report is not None else PurgeReport()
    storage_dir = Path(storage_dir)
    folders: set[Path] = set()

    def delete_files(paths: list[str]) -> None:
        for relative in paths:
            path = _inside(storage_dir, relative)
            if path is None:
                log.error("not deleting %r: outside the storage folder", relative)
                continue
            try:
                size = path.stat().st_size
                path.unlink()
                report.files += 1
                report.bytes += size
            except FileNotFoundError:
                pass
            folders.add(path.parent)

    study = db.purge_study_rows(study_key, PURGEABLE_STATES, delete_files)
    if study is None:
        return False
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        for candidate in (folder, folder.parent):
            if candidate.resolve() in (storage_dir.resolve(), (storage_dir / "spool").resolve(),
                                       (storage_dir / "results").resolve()):
                continue
            try:
                os.rmdir(candidate)  # only when empty: a late instance's file keeps its folder
            except OSError:
                pass
    report.studies.append(study_key)
    log.info("purged study %s (%s)", short_hash(study["study_instance_uid"]), study["state"])
    return True


def purge_expired(db: StateDB, storage_dir: Path, days: float, now: float | None = None) -> PurgeReport:
    """Purge every finished study whose last change is older than `days`."""
    now = time.time() if now is None else now
    cutoff = now - days * 86400
    report = PurgeReport()
    for study_key in db.studies_updated_before(PURGEABLE_STATES, cutoff, undelivered=False):
        purge_study(db, storage_dir, study_key, report)
    kept = db.studies_updated_before(PURGEABLE_STATES, cutoff, undelivered=True)
    if kept:
        log.warning("%d stud(ies) past retention.days kept: their results were never delivered (dead letters; "
                    "dicomnode status lists them, dicomnode retry sends them again): %s", len(kept),
                    ", ".join(short_hash(key) for key in kept[:10]) + (" ..." if len(kept) > 10 else ""))
    return report


def emergency_purge(db: StateDB, storage_dir: Path, floor_mb: float, free_space_mb: Callable[[], float]) -> PurgeReport:
    """While free space is under `floor_mb`, purge finished studies oldest first; unfinished ones are never touched."""
    report = PurgeReport()
    if free_space_mb() >= floor_mb:
        return report
    for study_key in db.studies_updated_before(PURGEABLE_STATES, undelivered=False):
        if free_space_mb() >= floor_mb:
            break
        purge_study(db, storage_dir, study_key, report)
    if free_space_mb() < floor_mb:
        undelivered = len(db.studies_updated_before(PURGEABLE_STATES, undelivered=True))
        log.error("free space %.0f MB is still under retention.emergency_free_space_mb=%d after purging %d finished "
                  "stud(ies); unfinished studies and %d with undelivered results are kept", free_space_mb(), floor_mb,
                  len(report.studies), undelivered)
    elif report.studies:
        log.warning("emergency purge: %d finished stud(ies) removed to get over %d MB free", len(report.studies), floor_mb)
    return report


class Retention:
    """The scheduled job: age-based purge, then the emergency purge; `clock` and `free_space_mb` are replaceable."""

    def __init__(self, db: StateDB, storage_dir: Path, config: RetentionConfig, free_space_mb: Callable[[], float],
                 clock: Callable[[], float] = time.time):
        self.db = db
        self.storage_dir = Path(storage_dir)
        self.config = config
        self.free_space_mb = free_space_mb
        self.clock = clock

    def run_once(self) -> PurgeReport:
        report = purge_expired(self.db, self.storage_dir, self.config.days, now=self.clock())
        emergency = emergency_purge(self.db, self.storage_dir, self.config.emergency_free_space_mb, self.free_space_mb)
        report.studies += emergency.studies
        report.files += emergency.files
        report.bytes += emergency.bytes
        if report.studies:
            log.info("retention: purged %d stud(ies), %d file(s), %.1f MB", len(report.studies), report.files,
                     report.bytes / 1e6)
        return report

    def run_safely(self) -> None:
        try:
            self.run_once()
        except Exception:
            log.exception("retention purge failed; it runs again at the next interval")

    def check_free_space_safely(self) -> None:
        """The frequent check between scheduled purges: only the emergency purge, only when space is low."""
        try:
            emergency_purge(self.db, self.storage_dir, self.config.emergency_free_space_mb, self.free_space_mb)
        except Exception:
            log.exception("emergency purge failed; it runs again at the next check")
