"""Study completion: quiet timer, expected instance counts, and max-wait force-complete, rebuilt from the index."""
from __future__ import annotations

import bisect
import datetime as dt
import json
import logging
import os
import re
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np
from apscheduler.schedulers.background import BackgroundScheduler

from dicomnode.config import Config, StudiesConfig
from dicomnode.spool import PSIR_MAY_FOLLOW, write_durably
from dicomnode.state import COMPLETE, FAILED, INCOMPLETE_PREFIX, RECEIVED, RoundFailures, StateDB
from dicomnode.uids import short_hash

log = logging.getLogger("dicomnode.studies")

#: after the expected counts are met, wait this long for stragglers before completing
EXPECTED_COUNT_GRACE_SECONDS = 2.0

#: the reason of a study still receiving whose instances the node refused for lack of space (0xA700)
REFUSED_PREFIX = INCOMPLETE_PREFIX  # "incomplete: ": state.add_instance clears it when an instance is stored
_REFUSED_COUNT = re.compile(r"incomplete: (\d+) instance")


#: the causes of a refusal (0xA700) that refused_reason names
STORAGE_REFUSAL = "storage under node.min_free_space_mb, or unavailable"
STATE_UNREACHABLE_REFUSAL = "the state database unreachable"


def refused_reason(count: int, cause: str = STORAGE_REFUSAL) -> str:
    """The study's reason after `count` of its instances were refused as out of resources (0xA700) for `cause`
    (STORAGE_REFUSAL: storage floor or storage unavailable; STATE_UNREACHABLE_REFUSAL)."""
    return (f"{REFUSED_PREFIX}{count} instance(s) refused as out of resources (0xA700: {cause}); waiting for the "
            f"sender to send again")


def waiting_for_resend(study) -> bool:
    """Whether a study still receiving had instances refused for lack of space and none stored since.

    The node answered 0xA700 (out of resources), so the sender will send them again once it retries: the study is
    not quiet, it is incomplete. Told from its row, so that every completion scheduler (this process, or the
    database-polling one of a scale-out) and a restart agree: a refusal sets the reason (and updated_at) without
    touching last_received; an instance stored afterwards moves last_received past updated_at.
    """
    return (study["state"] == RECEIVED and (study["reason"] or "").startswith(REFUSED_PREFIX)
            and study["last_received"] < study["updated_at"])


def refused_count(study) -> int:
    """How many instances of the study were refused for lack of space (0 when not `waiting_for_resend`)."""
    if not waiting_for_resend(study):
        return 0
    match = _REFUSED_COUNT.match(study["reason"] or "")
    return int(match.group(1)) if match else 0


def record_refusal(db: StateDB, study_key: str, config: StudiesConfig, count: int = 1,
                   cause: str = STORAGE_REFUSAL) -> int:
    """After the node answered 0xA700 for `count` instance(s) of `study_key`: mark the study (still receiving)
    incomplete, counting the refusals; returns the count so far, 0 when the study is not receiving (nothing to hold
    back). Raises the state database's errors (an outage: PendingRefusals keeps the refusal meanwhile).

    The first refusal of a round is logged (the SCP logs each refused instance itself)."""
    study = db.study(study_key)
    if study is None or study["state"] != RECEIVED:
        return 0
    before = refused_count(study)
    total = before + count
    if not db.set_study_state(study_key, RECEIVED, refused_reason(total, cause), expect=(RECEIVED,),
                              generation=study["generation"]):
        return 0
    if before == 0:
        log.warning("study %s: incomplete, %d instance(s) refused (0xA700: %s): not completed on the quiet timer "
                    "until its sender sends again (at max_wait_seconds=%s: force_complete_policy %r)",
                    short_hash(study["study_instance_uid"]), count, cause, config.max_wait_seconds,
                    config.force_complete_policy)
    return total


#: the folder under node.storage_dir of the refusals the state database could not record (PendingRefusals)
PENDING_REFUSALS_DIR = "refusals"
#: the name prefix of a pending refusal's file while one process writes it to the state (PendingRefusals.flush)
CLAIMED_PREFIX = ".claimed-"
#: a claim older than this (seconds) was left by a process that stopped mid-flush: the refusal is pending again
CLAIM_STALE_SECONDS = 300.0


class PendingRefusals:
    """Refusals (0xA700) that the state could not record when they were made (the state database unreachable):
    kept in memory and as one small JSON file each under <storage_dir>/refusals/, so that a restart keeps them and
    every process sharing the spool sees them; `flush` writes them to the state (record_refusal) once it is
    reachable again. Completion flushes before it completes anything (CompletionTracker, DatabaseCompletion), so
    that a study whose instances were refused during an outage is held as `incomplete`, never completed as whole.

    A refusal is dropped, not recorded, when its instance is stored (the sender re-sent an instance the node already
    held: the outage hid the duplicate, and an instance held is not missing) or when it was made before the study's
    latest stored instance (its sender sends again).

    Processes sharing the spool flush at the same moment without counting a refusal twice: each claims a refusal's
    file by renaming it (an atomic rename(2): one process wins) before it writes the refusal to the state; a claim
    left by a process that stopped mid-flush is pending again after CLAIM_STALE_SECONDS."""

    def __init__(self, storage_dir: str | os.PathLike):
        self.folder = Path(storage_dir) / PENDING_REFUSALS_DIR
        self._memory: dict[str, dict] = {}  # file name -> refusal, until written to the state
        self._recorded: set[str] = set()  # written to the state, but its file could not be removed
        self._written: set[str] = set()  # in memory and on disk: a file gone was recorded by a process sharing it
        self._claimed: set[str] = set()  # claim file names this process holds during a flush
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()

    def add(self, study_key: str, study_instance_uid: str, sop_instance_uid: str, calling_ae: str,
            now: float | None = None) -> None:
        """Remember one refused instance (times: epoch seconds). A file that cannot be written (the disk full or
        read-only too) leaves the refusal in memory only, said in a WARNING."""
        refusal = {"study_key": study_key, "study_instance_uid": study_instance_uid,
                   "sop_instance_uid": sop_instance_uid, "calling_ae": calling_ae,
                   "refused_at": time.time() if now is None else now}
        name = f"{uuid.uuid4().hex}.json"
        with self._lock:
            self._memory[name] = refusal
        try:
            write_durably(self.folder / name, json.dumps(refusal).encode(), root=self.folder.parent)
        except OSError as exc:
            log.warning("study %s: a refusal made while the state database is unreachable is kept in memory only "
                        "(cannot write %s: %s); a restart before the database is back forgets it",
                        short_hash(study_instance_uid), self.folder, exc.strerror or exc)
            return
        with self._lock:
            flushed = name not in self._memory  # by this process, while the file was written
            if not flushed:
                self._written.add(name)
        if flushed:
            self._forget({name: refusal})

    def pending(self) -> dict[str, dict]:
        """The refusals not yet written to the state: this process's and the files of any process sharing the
        spool, by file name. A file that cannot be read as a refusal is named in a WARNING and left alone; one of
        this process's whose file is gone was recorded by another process sharing the spool, and is forgotten."""
        with self._lock:
            found = dict(self._memory)
            written = set(self._written)
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:  # the folder itself gone (storage_dir unavailable?): this process's stay pending
            return found
        except OSError as exc:
            log.warning("cannot list the pending refusals in %s: %s", self.folder, exc.strerror or exc)
            return found
        on_disk = {entry.name for entry in entries}
        with self._lock:
            claimed = set(self._claimed)
        for entry in entries:
            if entry.name.startswith(CLAIMED_PREFIX) and entry.name not in claimed:
                self._release_if_stale(entry, on_disk)
        gone = {name for name in written if name not in on_disk and CLAIMED_PREFIX + name not in on_disk}
        if gone:
            with self._lock:
                for name in gone:
                    self._memory.pop(name, None)
                    self._written.discard(name)
            for name in gone:
                found.pop(name, None)
        for name in sorted(on_disk):
            if name in found or name in self._recorded or name.startswith(".") or not name.endswith(".json"):
                continue
            path = self.folder / name
            try:
                refusal = json.loads(path.read_text())
                str(refusal["study_key"]), float(refusal["refused_at"])
            except FileNotFoundError:  # flushed by another process meanwhile
                continue
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("pending refusal %s is unreadable and left alone: %s", path, exc)
                continue
            found[name] = refusal
        return found

    def flush(self, db: StateDB, config: StudiesConfig) -> list[str]:
        """Write the pending refusals to the state, per study (record_refusal, cause STATE_UNREACHABLE_REFUSAL);
        returns the keys of the studies now held as incomplete. Raises the state database's errors (an outage:
        the refusals stay pending for the next flush)."""
        with self._flush_lock:  # two threads of one process (receive and complete) never record one refusal twice
            pending = self._claim(self.pending())
            if not pending:
                return []
            try:
                return self._record(db, config, pending)
            except BaseException:
                self._release(pending)
                raise

    def _record(self, db: StateDB, config: StudiesConfig, pending: dict[str, dict]) -> list[str]:
        by_study: dict[str, dict[str, dict]] = defaultdict(dict)
        for name, refusal in pending.items():
            by_study[str(refusal["study_key"])][name] = refusal
        stored = db.held_instances(sorted({str(r["sop_instance_uid"]) for r in pending.values()
                                           if r.get("sop_instance_uid")}))
        held = []
        for study_key, refusals in by_study.items():
            study = db.study(study_key)
            missing = [r for r in refusals.values() if str(r.get("sop_instance_uid")) not in stored]
            count = 0
            if study is not None and study["state"] == RECEIVED:
                count = sum(1 for r in missing if float(r["refused_at"]) > study["last_received"])
            if count and record_refusal(db, study_key, config, count, STATE_UNREACHABLE_REFUSAL):
                held.append(study_key)
            elif study is not None:
                why = [f"{len(refusals) - len(missing)} of the refused instance(s) held already"] \
                    if len(missing) < len(refusals) else []
                if missing and study["state"] == RECEIVED:
                    why.append("instances stored since")
                log.info("study %s: %d refusal(s) made while the state database was unreachable need no hold (the "
                         "study is %s)", short_hash(study["study_instance_uid"]), len(refusals),
                         ", ".join([study["state"], *why]))
            self._forget(refusals)
        return held

    def _claim(self, pending: dict[str, dict]) -> dict[str, dict]:
        """The pending refusals this process may write to the state: those whose file it renamed to its claim, and
        its own kept in memory only. A file another process renamed first is that process's to record (this one
        forgets it); a rename refused otherwise (a read-only spool) leaves the refusal this process's, as before
        processes shared spools."""
        claimed = {}
        for name, refusal in pending.items():
            claim = self.folder / (CLAIMED_PREFIX + name)
            try:
                os.rename(self.folder / name, claim)
                os.utime(claim)  # the claim's age, for CLAIM_STALE_SECONDS
            except FileNotFoundError:
                with self._lock:
                    own = name in self._memory and name not in self._written
                    if not own:
                        self._memory.pop(name, None)
                        self._written.discard(name)
                if not own:
                    continue
            except OSError:
                pass
            else:
                with self._lock:
                    self._claimed.add(claim.name)
            claimed[name] = refusal
        return claimed

    def _release(self, refusals: dict[str, dict]) -> None:
        """Give back the claims of refusals a flush could not write (the state database unreachable again)."""
        for name in refusals:
            claim = CLAIMED_PREFIX + name
            with self._lock:
                if claim not in self._claimed:
                    continue
                self._claimed.discard(claim)
            try:
                os.rename(self.folder / claim, self.folder / name)
            except OSError as exc:
                log.warning("cannot give back the claim of pending refusal %s: %s (pending again after %g s)",
                            self.folder / name, exc.strerror or exc, CLAIM_STALE_SECONDS)

    def _release_if_stale(self, entry: os.DirEntry, on_disk: set[str]) -> None:
        try:
            age = time.time() - entry.stat().st_mtime
            if age < CLAIM_STALE_SECONDS:
                return
            name = entry.name.removeprefix(CLAIMED_PREFIX)
            os.rename(entry.path, self.folder / name)
        except OSError:  # claimed, released or recorded by another process meanwhile
            return
        on_disk.add(name)
        log.warning("pending refusal %s was claimed %.0f s ago by a process that did not record it (stopped "
                    "mid-flush?): pending again", self.folder / name, age)

    def _forget(self, refusals: dict[str, dict]) -> None:
        with self._lock:
            for name in refusals:
                self._memory.pop(name, None)
                self._written.discard(name)
                self._claimed.discard(CLAIMED_PREFIX + name)
        for name in refusals:
            try:
                (self.folder / name).unlink(missing_ok=True)
                (self.folder / (CLAIMED_PREFIX + name)).unlink(missing_ok=True)
            except OSError as exc:  # a read-only spool: recorded already, never recorded twice by this process
                with self._lock:
                    self._recorded.add(name)
                log.warning("cannot remove the recorded pending refusal %s: %s", self.folder / name,
                            exc.strerror or exc)


#: the cause of an interrupted transfer (interrupted_reason): the node stopped (crash or stop) while the study was
#: receiving, or the association that sent it ended by A-ABORT (or a lost connection) instead of a release
NODE_STOPPED = "the node stopped"
ASSOCIATION_ABORTED = "the association was aborted"
_INTERRUPTED = "transfer interrupted ("


def interrupted_reason(count: int, cause: str, config: StudiesConfig) -> str:
    """The reason of a study still receiving whose transfer was cut (`cause`: NODE_STOPPED, ASSOCIATION_ABORTED)
    with `count` instances received: not completed on the quiet timer (`waiting_for_resend`), but at max wait or
    when its sender sends again (state.add_instance clears it; a re-sent duplicate: end_wait_for_resend)."""
    return (f"{REFUSED_PREFIX}{_INTERRUPTED}{count} instance(s) received when {cause}); the study may be incomplete: "
            f"waiting the full max wait (studies.max_wait_seconds={config.max_wait_seconds:g}) for a re-send")


def interrupted_note(reason: str | None) -> str | None:
    """The interrupted-transfer note of a study's reason ("transfer interrupted (...) ..."), or None; the study path
    adds it to the study's declined reasons, so that the summary, the SR and the report say it may be incomplete."""
    text = (reason or "").removeprefix(REFUSED_PREFIX)
    return text if text.startswith(_INTERRUPTED) else None


def interrupted(study) -> bool:
    """Whether a study still receiving waits for the re-send of an interrupted transfer (see interrupted_reason)."""
    return waiting_for_resend(study) and interrupted_note(study["reason"]) is not None


def record_interruption(db: StateDB, study_key: str, cause: str, config: StudiesConfig) -> int | None:
    """Mark a study still receiving as interrupted (interrupted_reason, `cause`); returns the instances it holds,
    None when it was not marked (no longer receiving, waiting for instances refused for lack of space, or whole by
    its headers' expected counts: `ExpectedCounts`, with studies.use_expected_counts)."""
    study = db.study(study_key)
    if study is None or study["state"] != RECEIVED or refused_count(study):
        return None
    instances = db.study_instances(study_key)
    count = len(instances)
    if config.use_expected_counts and expected_counts_met(instances):
        # the headers' own counts (ExpectedCounts) say every series is whole: nothing was cut, and a sender that
        # ends its associations by A-ABORT (or a restart right after a whole transfer) must not wait max wait
        return None
    if not db.set_study_state(study_key, RECEIVED, interrupted_reason(count, cause, config), expect=(RECEIVED,),
                              generation=study["generation"], updated_at=_after(study["last_received"])):
        return None
    log.warning("study %s: transfer interrupted (%d instance(s) received when %s): not completed on the quiet timer; "
                "waiting for a re-send until max wait (studies.max_wait_seconds=%g)",
                short_hash(study["study_instance_uid"]), count, cause, config.max_wait_seconds)
    return count


def end_wait_for_resend(db: StateDB, study_key: str, now: float) -> bool:
    """An instance the study already held was sent again (a duplicate): its sender is sending again, so a study
    waiting for a re-send (`waiting_for_resend`: an interrupted transfer, or instances refused with 0xA700) loses
    its reason and counts as received `now` (back on the quiet timer). Returns whether it was waiting; an instance
    refused again is counted again (record_refusal). Raises the state database's errors."""
    study = db.study(study_key)
    if study is None or not waiting_for_resend(study):
        return False
    if not db.set_study_state(study_key, RECEIVED, None, expect=(RECEIVED,), generation=study["generation"],
                              last_received=now):
        return False
    log.info("instances of the study arrive again after %s; it completes when quiet",
             "its interrupted transfer" if interrupted(study) else "the refusals (0xA700)")
    return True


def completion_note(study, why: str) -> str | None:
    """The reason a study takes into `complete`: the interrupted-transfer note, when it was never sent again
    (the study path adds it to the study's declined reasons); None otherwise."""
    if not interrupted(study):
        return None
    return _after_max_wait(study["reason"]) if why == "max wait reached" else interrupted_note(study["reason"])


def max_wait_failed_reason(config: StudiesConfig, study) -> str:
    """The reason of a study failed at max_wait_seconds (force_complete_policy = "fail")."""
    reason = f"not complete after max_wait_seconds={config.max_wait_seconds}"
    refused = refused_count(study)
    if refused:
        reason += f": {refused} instance(s) refused as out of resources (0xA700) were not sent again"
    elif interrupted(study):
        reason += f": {_after_max_wait(study['reason'])}"
    return reason


def _after_max_wait(reason: str) -> str:
    """The interrupted-transfer note once max wait came without a re-send."""
    note = interrupted_note(reason) or ""
    return note.split("; the study may be incomplete")[0] + "; the study may be incomplete: nothing was sent again " \
                                                              "within max wait"


#: planes whose normals differ by less than this are parallel (slice keys keep direction cosines to 0.1)
PARALLEL_DEGREES = 10.0
#: positions closer than this along the normal are one slice position (mm; slice keys keep 0.1 mm)
SAME_POSITION_MM = 0.5


class ExpectedCounts:
    """Whether the study's received series declare their own counts, hold them, and say the study is likely whole.

    A series' declaration is ImagesInAcquisition > 1 (the series' total) or one multi-frame instance (NumberOfFrames
    > 1: Enhanced MR carries a whole series in one instance) whose own header does not say the series goes on in
    other instances (the index's series_continues, net.scp.series_continues: one cardiac phase of a cine sent one
    instance per phase, a later piece). CardiacNumberOfImages is no declaration: it counts the phases of one slice,
    not the slices still to come (it is only used to refuse a series whose slices do not all hold that many phases).
    A series without a declaration gives no evidence and the study waits for the quiet timer. Instances other than
    MR images (SR, SC, PDF ... routed with the study) are not counted.

    A declaration proves its own series whole, not the study: scanners send one acquisition as one series per slice
    (or per breath-hold slab), each declaring only its own images, the next one seconds later. So the counts say
    the study is in only when also
    - the series received last is a stack: its images lie at two or more slice positions in parallel planes (a
      one-position series may be one slice of such an acquisition; a series of several orientations is a
      localizer, sent before the rest of the study), and not inversion-recovery magnitude images alone (every
      instance spool.PSIR_MAY_FOLLOW: a scanner that reconstructs the PSIR after the magnitude sends it as a later
      series; magnitude and PSIR in one series complete as before),
    - no earlier series looks like another piece of that acquisition: parallel planes, no slice position in common,
      the same images per position and the same CardiacNumberOfImages.
    Planes come from the index's slice keys (net.scp.slice_key_of); a series without them is no stack.

    Kept per study while it is received and updated one index row at a time (`add`, in the order received), so that
    the check after each instance costs the number of series and slices, not the number of instances received.
    """

    def __init__(self, rows=()):
        self._series: dict[tuple, _SeriesCounts] = {}
        self._last: tuple | None = None
        for row in rows:
            self.add(row)

    def add(self, row) -> None:
        """Count one index row (a mapping with the `instances` columns)."""
        if "modality" in row.keys() and row["modality"] not in (None, "", "MR"):
            return
        key = (row["series_instance_uid"], row["series_number"])
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _SeriesCounts()
        series.add(row)
        self._last = key

    def met(self) -> bool:
        return self.waiting_for() is None

    def header_says_more(self) -> bool:
        """Whether the counts wait because an instance's own header says that more of its series, or a PSIR series,
        may follow (series_continues), rather than for want of a declaration."""
        reason = self.waiting_for()
        return reason is not None and any(reason.endswith(said) for said in (
            PSIR_MAY_FOLLOW, *(text for series in self._series.values() for text in series.continues)))

    def waiting_for(self) -> str | None:
        """Why the counts do not say the study is in (None: they do); see the class."""
        if not self._series:
            return "no MR series"
        for (_, number), series in self._series.items():
            if series.continues:
                return f"series {number}: {sorted(series.continues)[0]}"
            if not series.met():
                return f"series {number}: no declared count that it holds"
        last = self._series[self._last]
        if last.psir_may_follow == last.instances:
            return f"series {self._last[1]}: {PSIR_MAY_FOLLOW}"
        if not last.is_stack():
            return f"series {self._last[1]} is no stack"
        if any(series.piece_of(last) for key, series in self._series.items() if key != self._last):
            return f"series {self._last[1]} may be one piece of an acquisition sent as several series"
        return None


class _SeriesCounts:
    __slots__ = ("instances", "images", "multi_frame", "announced_totals", "phases", "per_slice", "planes",
                 "continues", "psir_may_follow")

    def __init__(self):
        self.instances = 0
        self.images = 0  # frames of multi-frame instances, 1 per single-frame instance
        self.multi_frame = False
        self.announced_totals: set[int] = set()
        self.phases: set[int] = set()
        self.per_slice: dict[str | None, int] = defaultdict(int)
        self.planes: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # slice key -> (position mm, unit normal)
        self.continues: set[str] = set()  # series_continues of its instances: a piece of the series, more to come
        self.psir_may_follow = 0  # instances saying PSIR_MAY_FOLLOW: when all do, a PSIR series may follow

    def add(self, row) -> None:
        self.instances += 1
        frames = row["frames"] or 0
        self.images += max(frames, 1)
        self.multi_frame = self.multi_frame or frames > 1
        if row["images_in_acquisition"]:
            self.announced_totals.add(row["images_in_acquisition"])
        if row["cardiac_images"]:
            self.phases.add(row["cardiac_images"])
        self.per_slice[row["slice_key"]] += 1
        continues = row["series_continues"] if "series_continues" in row.keys() else None
        if continues == PSIR_MAY_FOLLOW:
            self.psir_may_follow += 1
        elif continues:
            self.continues.add(continues)
        for key in (row["slice_key"] or "").split(";"):
            if key and key not in self.planes:
                plane = _plane(key)
                if plane is not None:
                    self.planes[key] = plane

    def met(self) -> bool:
        """Whether the series declares its count and holds it (see ExpectedCounts)."""
        if self.multi_frame:
            return self.instances == 1  # several multi-frame instances: how many more come is not declared
        if len(self.announced_totals) != 1:
            return False
        total = next(iter(self.announced_totals))
        if total < 2 or self.instances != total:
            return False
        if len(self.phases) == 1 and None not in self.per_slice:
            phases = next(iter(self.phases))
            return all(count == phases for count in self.per_slice.values())
        return True

    def positions(self, normal: np.ndarray) -> list[float]:
        """Distinct slice positions along `normal` (mm, ascending), when every plane is parallel to it; [] otherwise."""
        if not self.planes or not all(_parallel(n, normal) for _, n in self.planes.values()):
            return []
        found: list[float] = []
        for distance in sorted(float(position @ normal) for position, _ in self.planes.values()):
            if not found or distance - found[-1] >= SAME_POSITION_MM:
                found.append(distance)
        return found

    def normal(self) -> np.ndarray | None:
        return next(iter(self.planes.values()))[1] if self.planes else None

    def is_stack(self) -> bool:
        """Images at two or more slice positions in parallel planes."""
        normal = self.normal()
        return normal is not None and len(self.positions(normal)) >= 2

    def piece_of(self, stack: _SeriesCounts) -> bool:
        """Whether this series looks like another part of the acquisition `stack` belongs to (see ExpectedCounts)."""
        normal = stack.normal()
        mine, theirs = self.positions(normal), stack.positions(normal)
        if not mine or not theirs or self.phases != stack.phases:
            return False
        if any(abs(theirs[min(i, len(theirs) - 1)] - a) < SAME_POSITION_MM
               or abs(theirs[max(i - 1, 0)] - a) < SAME_POSITION_MM
               for a, i in ((a, bisect.bisect_left(theirs, a)) for a in mine)):
            return False
        return self.images * len(theirs) == stack.images * len(mine)  # the same images per slice position


def _plane(key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(position mm, unit normal) of one plane of a slice key, None when the text is no plane."""
    try:
        values = np.array([float(v) for v in key.split(",")])
    except ValueError:
        return None
    if values.shape != (9,):
        return None
    normal = np.cross(values[3:6], values[6:9])
    length = np.linalg.norm(normal)
    return (values[:3], normal / length) if length > 0.5 else None


def _parallel(a: np.ndarray, b: np.ndarray) -> bool:
    return abs(float(a @ b)) >= np.cos(np.radians(PARALLEL_DEGREES))


def expected_counts_met(rows) -> bool:
    """`ExpectedCounts` over a study's index rows, in one call."""
    return ExpectedCounts(rows).met()


def receiving_at_crash(db: StateDB) -> set[str] | None:
    """At a single node's start after a crash: the study keys the associations open at the crash were sending, from
    the heartbeat row of the run that crashed (the newest row of a receiving process: detail.receiving, written
    before an association's first instance of a study is stored and soon after an association ends). None where
    there is no such record: no row (removed by `dicomnode status` once GONE), or one written by a release that did
    not record them; every study still receiving is then taken for cut."""
    rows = [row for row in db.nodes() if "receive" in (row["roles"] or "").split(",")]  # before this run's first
    if not rows:
        return None
    newest = max(rows, key=lambda row: row["last_seen"])
    try:
        receiving = json.loads(newest["detail_json"] or "{}").get("receiving")
    except (ValueError, AttributeError):
        return None
    return set(receiving) if isinstance(receiving, list) else None


class CompletionTracker:
    """Moves studies from RECEIVED to COMPLETE and hands them to `on_complete(study_key, generation)`."""

    def __init__(self, db: StateDB, config: StudiesConfig, on_complete: Callable[[str, int], None],
                 scheduler: BackgroundScheduler, retry_seconds: float = 5.0):
        """`retry_seconds`: a timer whose check failed (the state database unreachable) runs again this much later."""
        self.db = db
        self.config = config
        self.on_complete = on_complete
        self.scheduler = scheduler
        self.retry_seconds = retry_seconds
        self._failures = RoundFailures(db, log, "completion check failed", retry_seconds)
        self._deadlines: dict[str, float] = {}
        self._counts: dict[str, ExpectedCounts] = {}
        self._said_waiting: dict[str, str | None] = {}  # the last ExpectedCounts.waiting_for, to log each change once
        self._refused: set[str] = set()  # studies with instances refused for lack of space (waiting_for_resend)
        self._interrupted: set[str] = set()  # studies whose transfer was cut, waiting for a re-send (interrupted)
        self._lock = threading.Lock()
        #: refusals made while the state database was unreachable, written to the state before any completion
        self.pending_refusals: PendingRefusals | None = None

    def flush_refusals(self) -> list[str]:
        """Write the pending refusals (PendingRefusals) to the state; returns the studies now held as incomplete.
        Raises the state database's errors."""
        if self.pending_refusals is None:
            return []
        held = self.pending_refusals.flush(self.db, self.config)
        with self._lock:
            self._refused.update(held)
        return held

    def rebuild(self) -> int:
        """After a start: re-arm timers of every study still receiving; returns how many.

        After a crash or kill -9 (no clean stop recorded: StateDB.take_receiver_stopped) a study that an association
        open at the crash was sending (the crashed run's heartbeat, detail.receiving: receiving_at_crash), or any
        study receiving where that record is missing (a release that kept none, a heartbeat row removed), may
        have had its transfer cut, and no sender could deliver while the node was down: it is marked
        (interrupted_reason: "transfer interrupted (N instance(s) received when the node stopped) ...", shown by
        status) and waits for its sender, whose next instance (new or a duplicate) puts it back on the quiet timer,
        or the full max_wait_seconds from now; never the quiet timer alone (break3 L4: a cut cine was analysed as if
        whole). After a clean stop, which marked the transfers it cut itself (Node.stop, StorageSCP.studies_cut),
        and after a crash for the studies no open association was sending (their associations released), the other
        studies receiving go on with their quiet timer counted from now (the downtime is no quiet) and
        their max wait from their first instance. A study marked interrupted before waits the full max wait from now.
        A study waiting for instances refused for lack of space keeps waiting for them, its max wait not before a
        quiet period from now; so does one whose instances were refused while the state database was unreachable
        (PendingRefusals, written first)."""
        self.flush_refusals()
        clean_stop = self.db.take_receiver_stopped() is not None
        # after a crash: the studies the stopped run's open associations were sending (None: no record of them)
        cut = None if clean_stop else receiving_at_crash(self.db)
        studies = self.db.studies((RECEIVED,))
        now = time.time()
        resumed = now + self.config.quiet_seconds
        for study in studies:
            key = study["study_key"]
            if refused_count(study):  # incomplete: only its sender (or max wait) moves it on
                with self._lock:
                    self._refused.add(key)
                self._schedule_max_wait(key, study["first_received"], not_before=resumed)
                continue
            # receiving when the node crashed, cut by a clean stop, or its association aborted before: the transfer
            # may have been cut, so the study waits for its sender (any instance, even a duplicate, ends the wait)
            # or the full max wait from now, never the quiet timer alone
            if interrupted(study) or (not clean_stop and (cut is None or key in cut) and
                                      record_interruption(self.db, key, NODE_STOPPED, self.config) is not None):
                with self._lock:
                    self._interrupted.add(key)
                self._schedule_max_wait(key, now, not_before=resumed)
                continue
            # not cut (a clean stop that did not cut it, or whole by its expected counts): quiet from now
            self._schedule_quiet(key, resumed, force=True)
            self._schedule_max_wait(key, study["first_received"], not_before=resumed)
        return len(studies)

    def reload(self, config: Config) -> None:
        """SIGHUP: the new [studies] settings apply to the next timers armed."""
        self.config = config.studies

    def instance_stored(self, study_key: str, new_study: bool, first_received: float | None = None,
                        row: dict | None = None) -> None:
        """Re-arm the study's timers after an instance was stored (`row`: its index columns, if at hand)."""
        now = time.time()
        with self._lock:
            resent = study_key in self._refused
            self._refused.discard(study_key)
            again = study_key in self._interrupted
            self._interrupted.discard(study_key)
        if resent:
            # the receive path logs within the study's context ([study=...])
            log.info("instances of the study arrive again after the refusals for lack of space; it completes when quiet")
        if again:  # state.add_instance cleared the note
            log.info("instances of the study arrive again after its interrupted transfer; it completes when quiet")
        deadline = now + self.config.quiet_seconds
        if self.config.use_expected_counts and self._counts_met(study_key, row):
            deadline = min(deadline, now + EXPECTED_COUNT_GRACE_SECONDS)
        self._schedule_quiet(study_key, deadline, force=True)
        if new_study:
            self._schedule_max_wait(study_key, first_received or now)

    def _counts_met(self, study_key: str, row: dict | None) -> bool:
        """The study's `ExpectedCounts`, built from the index once, then updated with each stored row."""
        with self._lock:
            counts = self._counts.get(study_key)
            if counts is None or row is None:
                counts = self._counts[study_key] = ExpectedCounts(self.db.study_instances(study_key))
            else:
                counts.add(row)
            waiting = counts.waiting_for()
            say = waiting is not None and waiting != self._said_waiting.get(study_key) and counts.header_says_more()
            self._said_waiting[study_key] = waiting
        if say:  # the receive path logs within the study's context ([study=...])
            log.info("the study's expected counts do not complete it (%s): it completes when quiet "
                     "(studies.quiet_seconds=%g)", waiting, self.config.quiet_seconds)
        return waiting is None

    def instance_refused(self, study_key: str) -> int:
        """The SCP answered 0xA700 (out of resources) for an instance of the study: its sender will send it again,
        so the study is incomplete, not quiet (`waiting_for_resend`); returns the refusals counted so far."""
        count = record_refusal(self.db, study_key, self.config)
        if count:
            with self._lock:
                self._refused.add(study_key)
        return count

    def instance_resent(self, study_key: str) -> None:
        """An instance the node already held was sent again (a duplicate): a study waiting for a re-send (its
        transfer interrupted, or instances refused, by this process or any sharing the state) is being re-sent, so
        it waits no longer than its quiet time (end_wait_for_resend). Raises the state database's errors."""
        now = time.time()
        if not end_wait_for_resend(self.db, study_key, now):
            return
        with self._lock:
            self._interrupted.discard(study_key)
            self._refused.discard(study_key)
        self._schedule_quiet(study_key, now + self.config.quiet_seconds, force=True)

    def transfer_interrupted(self, study_key: str, cause: str = ASSOCIATION_ABORTED) -> bool:
        """The association that sent instances of the study ended by A-ABORT (or a lost connection), not a release:
        a study still receiving is marked (record_interruption) and waits for a re-send or its max wait (counted
        from its first instance) instead of the quiet timer. Returns whether it was marked."""
        if record_interruption(self.db, study_key, cause, self.config) is None:
            return False
        with self._lock:
            self._interrupted.add(study_key)
        return True

    def forget(self, study_key: str) -> None:
        with self._lock:
            self._counts.pop(study_key, None)
            self._said_waiting.pop(study_key, None)
            self._deadlines.pop(study_key, None)
            self._refused.discard(study_key)
            self._interrupted.discard(study_key)

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

    def _schedule_max_wait(self, study_key: str, first_received: float, not_before: float = 0.0) -> None:
        self.scheduler.add_job(
            self._max_wait_elapsed, "date",
            run_date=_datetime(max(first_received + self.config.max_wait_seconds, not_before)),
            args=[study_key], id=f"maxwait:{study_key}", replace_existing=True, misfire_grace_time=None,
        )

    def _quiet_elapsed(self, study_key: str) -> None:
        """The quiet timer of a study (a one-shot scheduler job): a check that fails is armed again, so that an
        outage of the state database never leaves a study receiving for good."""
        with self._lock:
            self._deadlines.pop(study_key, None)
        try:
            self._check_quiet(study_key)
        except Exception as exc:  # noqa: BLE001 - tried again in retry_seconds
            self._failures.failed(exc)
            if self.scheduler.running:  # not while the node stops
                self._schedule_quiet(study_key, time.time() + self.retry_seconds, force=True)
        else:
            self._failures.succeeded()

    def _check_quiet(self, study_key: str) -> None:
        self.flush_refusals()  # a refusal made during an outage holds the study like any other
        study = self.db.study(study_key)
        if study is None or study["state"] != RECEIVED:
            return
        if interrupted(study):  # re-armed by the next instance received; max wait still applies
            log.info("study %s quiet, but its transfer was interrupted: waiting for its sender to send again (or max "
                     "wait)", short_hash(study["study_instance_uid"]))
            return
        if waiting_for_resend(study):  # re-armed by the next instance stored; max wait still applies
            log.info("study %s quiet, but %d instance(s) were refused (0xA700): waiting for its sender to "
                     "send again", short_hash(study["study_instance_uid"]), refused_count(study))
            return
        now = time.time()
        # an outage of the state database is no quiet: the receiver refused (0xA700) what its sender sent meanwhile
        quiet_deadline = max(study["last_received"], self.db.outage.last_failure) + self.config.quiet_seconds
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
        """The max-wait timer (a one-shot job): a check that fails is armed again in retry_seconds."""
        try:
            self._check_max_wait(study_key)
        except Exception as exc:  # noqa: BLE001 - tried again in retry_seconds
            self._failures.failed(exc)
            if not self.scheduler.running:  # not while the node stops
                return
            self.scheduler.add_job(self._max_wait_elapsed, "date", run_date=_datetime(time.time() + self.retry_seconds),
                                   args=[study_key], id=f"maxwait:{study_key}", replace_existing=True,
                                   misfire_grace_time=None)
        else:
            self._failures.succeeded()

    def _check_max_wait(self, study_key: str) -> None:
        study = self.db.study(study_key)
        if study is None or study["state"] != RECEIVED:
            return
        if self.config.force_complete_policy == "fail":
            reason = max_wait_failed_reason(self.config, study)
            if self.db.set_study_state(study_key, FAILED, reason, expect=(RECEIVED,), generation=study["generation"]):
                self.forget(study_key)
                log.warning("study %s failed: %s (force_complete_policy = \"fail\")",
                            short_hash(study["study_instance_uid"]), reason)
            return
        refused = refused_count(study)
        if refused:
            log.warning("study %s: max_wait_seconds=%s reached with %d instance(s) refused (0xA700) never sent "
                        "again; analysed as received (force_complete_policy = \"analyse\")",
                        short_hash(study["study_instance_uid"]), self.config.max_wait_seconds, refused)
        elif interrupted(study):
            log.warning("study %s: max_wait_seconds=%s reached and nothing was sent again after its interrupted "
                        "transfer; analysed as received, the summary says it may be incomplete "
                        "(force_complete_policy = \"analyse\")",
                        short_hash(study["study_instance_uid"]), self.config.max_wait_seconds)
        self.complete(study_key, "max wait reached")

    def complete(self, study_key: str, why: str) -> bool:
        study = self.db.study(study_key)
        if study is None:
            return False
        # an interrupted transfer's note stays with the complete study: the study path adds it to its declined reasons
        note = completion_note(study, why)
        if not self.db.set_study_state(study_key, COMPLETE, note, expect=(RECEIVED,), generation=study["generation"]):
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


def _after(last_received: float) -> float:
    """An updated_at that `waiting_for_resend` reads as after the study's last instance, even within one clock tick."""
    return max(time.time(), last_received + 0.001)


def _datetime(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp).astimezone()
