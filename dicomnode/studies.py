"""Study completion: quiet timer, expected instance counts, and max-wait force-complete, rebuilt from the index."""
from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from typing import Callable

from apscheduler.schedulers.background import BackgroundScheduler

from dicomnode.config import StudiesConfig
from dicomnode.state import COMPLETE, FAILED, RECEIVED, StateDB
from dicomnode.uids import short_hash

log = logging.getLogger("dicomnode.studies")

#: after the expected counts are met, wait this long for stragglers before completing
EXPECTED_COUNT_GRACE_SECONDS = 2.0


def expected_counts_met(rows: list) -> bool:
    """True when every image series of the study declares how many instances it holds, and holds them.

    A declaration is ImagesInAcquisition > 1 (the series' total) or a multi-frame instance (NumberOfFrames > 1:
    Enhanced MR carries a whole series in one instance). CardiacNumberOfImages is no declaration: it counts the
    phases of one slice, not the slices still to come, so a stack sent as one single-image series per slice would
    "meet" it after every slice. A series without a declaration gives no evidence and the study waits for the
    quiet timer. Instances other than MR images (SR, SC, PDF ... routed with the study) are not counted.
    """
    by_series: dict[tuple, list] = defaultdict(list)
    for row in rows:
        if "modality" in row.keys() and row["modality"] not in (None, "", "MR"):
            continue
        by_series[(row["series_instance_uid"], row["series_number"])].append(row)
    if not by_series:
        return False
    for series_rows in by_series.values():
        if any((row["frames"] or 0) > 1 for row in series_rows):
            continue
        announced_total = {row["images_in_acquisition"] for row in series_rows if row["images_in_acquisition"]}
        if len(announced_total) != 1:
            return False
        total = announced_total.pop()
        if total < 2 or len(series_rows) != total:
            return False
        phases = {row["cardiac_images"] for row in series_rows if row["cardiac_images"]}
        per_slice: dict[str | None, int] = defaultdict(int)
        for row in series_rows:
            per_slice[row["slice_key"]] += 1
        if len(phases) == 1 and None not in per_slice and any(c != next(iter(phases)) for c in per_slice.values()):
            return False
    return True


class CompletionTracker:
    """Moves studies from RECEIVED to COMPLETE and hands them to `on_complete(study_key, generation)`."""

    def __init__(self, db: StateDB, config: StudiesConfig, on_complete: Callable[[str, int], None],
                 scheduler: BackgroundScheduler):
        self.db = db
        self.config = config
        self.on_complete = on_complete
        self.scheduler = scheduler
        self._deadlines: dict[str, float] = {}
        self._rows: dict[str, list[dict]] = {}
        self._lock = threading.Lock()

    def rebuild(self) -> int:
        """After a start: re-arm timers of every study still receiving; returns how many."""
        studies = self.db.studies((RECEIVED,))
        for study in studies:
            self._schedule_quiet(study["study_key"], study["last_received"] + self.config.quiet_seconds)
            self._schedule_max_wait(study["study_key"], study["first_received"])
        return len(studies)

    def instance_stored(self, study_key: str, new_study: bool, first_received: float | None = None,
                        row: dict | None = None) -> None:
        """Re-arm the study's timers after an instance was stored (`row`: its index columns, if at hand)."""
        now = time.time()
        deadline = now + self.config.quiet_seconds
        if self.config.use_expected_counts and self._counts_met(study_key, row):
            deadline = min(deadline, now + EXPECTED_COUNT_GRACE_SECONDS)
        self._schedule_quiet(study_key, deadline, force=True)
        if new_study:
            self._schedule_max_wait(study_key, first_received or now)

    def _counts_met(self, study_key: str, row: dict | None) -> bool:
        """expected_counts_met over an in-memory copy of the study's index rows (read once, then appended)."""
        with self._lock:
            rows = self._rows.get(study_key)
            if rows is None or row is None:
                rows = self._rows[study_key] = [dict(r) for r in self.db.study_instances(study_key)]
            elif row is not None:
                rows.append(row)
            return expected_counts_met(rows)

    def forget(self, study_key: str) -> None:
        with self._lock:
            self._rows.pop(study_key, None)
            self._deadlines.pop(study_key, None)

    def _schedule_quiet(self, study_key: str, deadline: float, force: bool = False) -> None:
        with self._lock:
            current = self._deadlines.get(study_key)
            # Re-arming costs a scheduler call; within a second of the armed deadline the check at fire time covers it.
            if not force and current is not None and abs(current - deadline) < 1.0:
                return
            if force and current is not None and 0 <= deadline - current < 1.0:
                return
            self._deadlines[study_key] = deadline
        self.scheduler.add_job(
            self._quiet_elapsed, "date", run_date=_datetime(deadline), args=[study_key],
            id=f"quiet:{study_key}", replace_existing=True, misfire_grace_time=None,
        )

    def _schedule_max_wait(self, study_key: str, first_received: float) -> None:
        self.scheduler.add_job(
            self._max_wait_elapsed, "date", run_date=_datetime(first_received + self.config.max_wait_seconds),
            args=[study_key], id=f"maxwait:{study_key}", replace_existing=True, misfire_grace_time=None,
        )

    def _quiet_elapsed(self, study_key: str) -> None:
        with self._lock:
            self._deadlines.pop(study_key, None)
        study = self.db.study(study_key)
        if study is None or study["state"] != RECEIVED:
            return
        now = time.time()
        quiet_deadline = study["last_received"] + self.config.quiet_seconds
        if now >= quiet_deadline - 0.05:
            self.complete(study_key, "quiet")
            return
        if self.config.use_expected_counts and expected_counts_met(self.db.study_instances(study_key)):
            counts_deadline = study["last_received"] + EXPECTED_COUNT_GRACE_SECONDS
            if now >= counts_deadline - 0.05:
                self.complete(study_key, "expected counts met")
                return
            quiet_deadline = min(quiet_deadline, counts_deadline)
        self._schedule_quiet(study_key, quiet_deadline, force=True)

    def _max_wait_elapsed(self, study_key: str) -> None:
        study = self.db.study(study_key)
        if study is None or study["state"] != RECEIVED:
            return
        if self.config.force_complete_policy == "fail":
            self.db.set_study_state(study_key, FAILED, f"not complete after max_wait_seconds={self.config.max_wait_seconds}",
                                    expect=(RECEIVED,))
            return
        self.complete(study_key, "max wait reached")

    def complete(self, study_key: str, why: str) -> bool:
        study = self.db.study(study_key)
        if study is None:
            return False
        if not self.db.set_study_state(study_key, COMPLETE, None, expect=(RECEIVED,), generation=study["generation"]):
            return False
        for job_id in (f"quiet:{study_key}", f"maxwait:{study_key}"):
            try:
                self.scheduler.remove_job(job_id)
            except Exception:
                pass
        self.forget(study_key)
        log.info("study %s complete (%s), generation %d", short_hash(study["study_instance_uid"]), why, study["generation"])
        self.on_complete(study_key, study["generation"])
        return True


def _datetime(timestamp: float):
    import datetime as dt

    return dt.datetime.fromtimestamp(timestamp).astimezone()
