"""Retention: purge done studies (spool files, results, index rows) after N days, or oldest first when disk runs low.

What is purged, whatever its age or the free space: only a `done` study (its current results delivered, or none to
deliver), and never one with a result object not delivered (pending or dead, in any state): those exist nowhere
else. A `failed` study is kept: its instances are the input `dicomnode retry` analyses again, and its results (if
any) were not all delivered; each purge names how many it kept. `dicomnode status` lists them; once retried and
delivered a study is `done` and ages out as any other; `purge_failed` removes failed ones on an explicit request.

A purge is three steps (StateDB.begin_purge / files / StateDB.finish_purge): the study is marked `purging` in its
own transaction before the first file goes, so a crash in the middle never leaves a half-deleted study that says
`done`; every run (and so every start) first finishes the purges a crash interrupted. The rows go only once every
file has: a file kept for now (maybe an instance sent again during the purge) keeps its study `purging`, rows and
all, until a later run deletes it, so retention never forgets a file on disk. The last step keeps a tombstone of the
study's result objects, which the analysis of a study re-sent after its purge supersedes.

Step 1 needs a write to the state database, which on a disk filled to the last block (by another writer: a log, a
backup job) fails like any write, so no purge could ever free that disk. The node therefore keeps a space reserve,
`<node.storage_dir>/space.reserve` (RESERVE_MB, real blocks), while the emergency purge is on: when a purge's state
write fails for lack of space, the reserve is deleted and the purge tried again, its bookkeeping (and so its crash
safety) unchanged; the reserve is made again once there is room for it above retention.emergency_free_space_mb. A
purge that cannot go on even so says why at ERROR, and what to do (SpaceReserve, Retention)."""
from __future__ import annotations

import errno
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dicomnode.config import RetentionConfig
from dicomnode.spool import CONFLICTS_DIR, MIN_FREE_INODES
from dicomnode.state import (DONE, FAILED, PURGING, REPEAT_REMINDER_SECONDS, RoundFailures, StateDB, describe_url,
                             is_disk_full)
from dicomnode.uids import short_hash

log = logging.getLogger("dicomnode.retention")

#: how often free space is checked for the emergency purge, between the scheduled purges
FREE_SPACE_CHECK_SECONDS = 60

#: the emergency purge (while retention.emergency_free_space_mb is above 0) also runs while fewer inodes than this are
#: free on node.storage_dir's file system: a disk out of inodes refuses every new file however many MB are free, and
#: C-STORE is refused under spool.MIN_FREE_INODES (below this, so that the purge starts first)
EMERGENCY_FREE_INODES = 5 * MIN_FREE_INODES

#: only studies in these states are purged automatically; unfinished and failed ones are kept whatever the disk says
PURGEABLE_STATES = (DONE,)

#: a file written after the start of its study's purge (less this, the lag of the kernel's coarse file clock) may be
#: a re-send of the instance during the purge (the spool writes the same path; its receiver then either indexes it in
#: a new study once the purge is over, or removes it): it is not deleted yet. (On a shared mount the file server's
#: clock sets the time: keep the machines' clocks synchronised.)
REWRITTEN_SLACK_SECONDS = 0.1

#: ... but only while it is this recent: a receiver indexes or removes its file within seconds, so one older than this
#: was left by a receive that died, and goes. Until then its study stays `purging`, with every row (see _purge)
RESEND_GRACE_SECONDS = 120.0

#: a modification time further than this past the present was not written by a re-send, nor by anything during the
#: purge: the clock was stepped back since, or a restore or a file server set it ahead. Such a file is deleted with
#: its study (kept, it would be patient data that no row names)
FUTURE_SLACK_SECONDS = 5.0

#: the start of the reason of a study left `purging` by _purge (status shows it)
WAITING_PREFIX = "retention purge waiting for"

#: `keep_going()`, called between the studies of a purge: False stops it there (the caller's `complete` lease was
#: lost, and another process purges now); None: no caller to ask
KeepGoing = Callable[[], bool] | None


#: the space reserve kept in node.storage_dir for the emergency purge's state writes on a full disk (MB): a purge
#: marks a study `purging` (a few pages of the state database) before its first file goes, and its files then free
#: far more than its later writes need
RESERVE_MB = 8

#: the reserve's file name in node.storage_dir
RESERVE_NAME = "space.reserve"


class SpaceReserve:
    """A file of `size_mb` MB of real blocks (random bytes: no file system stores them sparse or compressed) kept
    in node.storage_dir, deleted to give a purge's state writes room on a full disk (`release`) and made again once
    there is room for it (`ensure`). Several processes sharing the storage make it at most once (a temporary file
    linked into place)."""

    def __init__(self, storage_dir: str | os.PathLike, size_mb: float = RESERVE_MB):
        self.path = Path(storage_dir) / RESERVE_NAME
        self.size_mb = size_mb
        self.released_at: float | None = None  # when this process last deleted it (epoch s); None: not since made

    @property
    def present(self) -> bool:
        return self.path.is_file()

    def ensure(self, free_mb: float, floor_mb: float) -> bool:
        """Make the reserve where it is missing and `free_mb` (MB free now) leaves room for it above `floor_mb`
        (retention.emergency_free_space_mb); with the emergency purge off (`floor_mb` 0) the reserve is removed
        instead. Returns whether the reserve is there. A disk that fills while it is written leaves no part of it."""
        if floor_mb <= 0 or self.size_mb <= 0:
            if self.present:
                self.path.unlink(missing_ok=True)
                log.info("space reserve %s removed: retention.emergency_free_space_mb is 0 (no emergency purge)",
                         self.path)
            return False
        if self.present:
            return True
        if free_mb - self.size_mb < floor_mb:
            return False
        # one per thread and process (host too: processes on several machines share a spool): a name shared by two
        # threads let the second truncate the file the first had just linked into place (break51b #4)
        temporary = self.path.with_name(f".{RESERVE_NAME}.{socket.gethostname()}.{os.getpid()}."
                                        f"{threading.get_ident()}.tmp")
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                size = int(round(self.size_mb)) * 1024 * 1024
                try:  # real blocks without writing them (ext4, xfs, tmpfs)
                    os.posix_fallocate(descriptor, 0, size)
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                        raise
                    chunk = os.urandom(1024 * 1024)  # not zeros: a compressing file system would keep no blocks
                    for _ in range(size // len(chunk)):
                        os.write(descriptor, chunk)
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            os.link(temporary, self.path)
        except FileExistsError:
            pass  # another process sharing the storage made it meanwhile
        except OSError as exc:
            log.warning("could not make the space reserve %s (%d MB) for the emergency purge: %s", self.path,
                        self.size_mb, exc.strerror or exc)
            return False
        finally:
            temporary.unlink(missing_ok=True)
        if self.released_at is not None:
            log.info("space reserve %s (%d MB) made again: %.0f MB were free", self.path, self.size_mb, free_mb)
            self.released_at = None
        return True

    def release(self) -> bool:
        """Delete the reserve; False where there was none to delete (never made: the disk was already short when
        the node started, or released already and not made again yet)."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.error("could not delete the space reserve %s: %s", self.path, exc.strerror or exc)
            return False
        self.released_at = time.time()
        return True


class PurgeBlocked(Exception):
    """A purge cannot record its steps: the state database's disk is full and the space reserve is spent (or on
    another disk). Its text says the cause and the remedy."""


class PurgeStopped(Exception):
    """keep_going() said stop between two studies (Retention.run_once ends the run there, with nothing half done)."""


def _go_on(keep_going: KeepGoing) -> None:
    """Between two studies of a purge: raise PurgeStopped when keep_going() says stop."""
    if keep_going is not None and not keep_going():
        raise PurgeStopped()


# studies this process is purging now (the scheduled and the free-space job may overlap): not "interrupted"
_active: set[str] = set()
_active_lock = threading.Lock()


@dataclass
class PurgeReport:
    studies: list[str] = field(default_factory=list)  # study keys purged
    files: int = 0
    bytes: int = 0
    kept_failed: list[str] = field(default_factory=list)  # failed study keys kept for `dicomnode retry`
    conflicts: int = 0  # conflict copies deleted (purge_conflicts), counted in files and bytes too


def _inside(root: Path, relative: str) -> Path | None:
    """The file a stored relative path names, or None when it would leave the storage folder."""
    candidate = (root / relative).resolve()
    try:
        candidate.relative_to(root.resolve())
    except ValueError:
        return None
    return candidate


def _clock() -> float:
    """The time retention compares file times with (replaceable in tests)."""
    return time.time()


def _delete_files(storage_dir: Path, paths: list[str], began: float, report: PurgeReport, tag: str) -> list[str]:
    """Delete a purging study's files, then its emptied folders; returns the spool files kept because they may be an
    instance sent again since the purge began (written after `began`, within RESEND_GRACE_SECONDS, not in the
    future: see the constants). `tag`: the study in the log lines."""
    folders: set[Path] = set()
    kept: list[str] = []
    ahead: list[float] = []
    for relative in paths:
        path = _inside(storage_dir, relative)
        if path is None:
            log.error("not deleting %r: outside the storage folder", relative)
            continue
        try:
            stat = path.stat()
            if relative.startswith("spool/"):
                now = _clock()
                if stat.st_mtime > now + FUTURE_SLACK_SECONDS:
                    ahead.append(stat.st_mtime - now)
                elif stat.st_mtime >= max(began - REWRITTEN_SLACK_SECONDS, now - RESEND_GRACE_SECONDS):
                    kept.append(relative)
                    continue
            path.unlink()
            report.files += 1
            report.bytes += stat.st_size
        except FileNotFoundError:
            pass
        folders.add(path.parent)
    if ahead:
        log.warning("study %s: deleted %d file(s) whose modification time is up to %.0f s in the future (the clock "
                    "was set back since they were written, or a restore or a file server set their times ahead); "
                    "not an instance sent again", tag, len(ahead), max(ahead))
    roots = {storage_dir.resolve(), (storage_dir / "spool").resolve(), (storage_dir / "results").resolve()}
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        for candidate in (folder, folder.parent):
            if candidate.resolve() in roots:
                continue
            try:
                os.rmdir(candidate)  # only when empty: a late instance's file keeps its folder
            except OSError:
                pass
    return kept


def _purge(db: StateDB, storage_dir: Path, study_key: str, began: float, report: PurgeReport) -> dict | None:
    """Steps 2 and 3 of a purge whose step 1 is committed: the files, then the rows; the study row, or None.

    Rows are deleted only once every file is gone: where a file is kept (written since the purge began, see
    _delete_files), the study stays `purging` with all its rows, so that a later run (the next free-space check or
    retention run) deletes what is left instead of forgetting it on disk."""
    row = db.study(study_key)
    tag = short_hash(row["study_instance_uid"] if row is not None else study_key)  # the log id status shows
    kept = _delete_files(storage_dir, db.study_files(study_key), began, report, tag)
    if kept:
        db.note_purge(study_key, f"{WAITING_PREFIX} {len(kept)} file(s) written since it began (an instance "
                                 "sent again meanwhile?)")
        log.warning("study %s stays `purging`, its rows kept: %d of its file(s) were written after its purge began "
                    "(first: %s), as an instance sent again meanwhile would be; a later retention run deletes them "
                    "once they are %.0f s old, unless their receiver removed them", tag, len(kept), kept[0],
                    RESEND_GRACE_SECONDS)
        return None
    _delete_results_folder(storage_dir, study_key, report)
    study = db.finish_purge(study_key)
    if study is not None:
        report.studies.append(study_key)
    return study


def _delete_results_folder(storage_dir: Path, study_key: str, report: PurgeReport) -> None:
    """What is left of a purging study's results folder (results/<study hash>/): files no row records, of analyses
    killed mid-write or abandoned (break44c #6: patient data kept past the purge). No analysis of a `purging` study
    runs: nothing there is being written."""
    folder = storage_dir / "results" / short_hash(study_key, 16)
    if not folder.is_dir():
        return
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        try:
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
                continue
            size = path.lstat().st_size
            path.unlink()
            report.files += 1
            report.bytes += size
        except FileNotFoundError:
            pass
    try:
        folder.rmdir()
    except OSError:
        pass


def remove_abandoned_results(db: StateDB, storage_dir: Path, grace_seconds: float, now: float | None = None) -> int:
    """Remove the result files no `results` row records (never queued for sending, half-written temporaries
    included) of analyses that are over: done, failed or superseded (their worker finished them), or abandoned or
    no longer recorded (a killed worker's; only files older than `grace_seconds`, the claims' lease: a worker that
    lost its claim may still be finishing a file). Never those of a running analysis: another live process may be
    writing them. Returns how many were removed (break44c #6: scale-out role processes left them forever)."""
    root = Path(storage_dir) / "results"
    if not root.is_dir():
        return 0
    now = time.time() if now is None else now
    states = db.analysis_states()
    recorded = db.result_paths()
    removed = 0
    for study_folder in sorted(root.iterdir()):
        if not study_folder.is_dir():
            continue
        for folder in sorted(study_folder.iterdir()):
            if not folder.is_dir() or not folder.name.isdigit():
                continue
            state = states.get(int(folder.name))
            if state == "running":
                continue
            finished = state in ("done", "failed", "superseded")
            for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                try:
                    if path.is_dir():
                        path.rmdir()  # only when empty
                    elif str(path.relative_to(storage_dir)) not in recorded and \
                            (finished or path.lstat().st_mtime < now - grace_seconds):
                        path.unlink()
                        removed += 1
                except (FileNotFoundError, OSError):
                    pass
            try:
                folder.rmdir()
            except OSError:
                pass
        try:
            study_folder.rmdir()
        except OSError:
            pass
    return removed


def purge_study(db: StateDB, storage_dir: Path, study_key: str, report: PurgeReport | None = None,
                states: tuple[str, ...] = PURGEABLE_STATES) -> bool:
    """Purge one study in `states` with nothing undelivered; False if it is not purgeable (anymore).

    Step 1 (`purging`) is committed before any file goes: an instance of the study arriving meanwhile is refused
    for the moment (the sender sends it again and it starts a new study); a crash leaves a `purging` study that the
    next run finishes (finish_interrupted_purges).
    """
    report = report if report is not None else PurgeReport()
    storage_dir = Path(storage_dir)
    with _active_lock:
        if study_key in _active:
            return False
        _active.add(study_key)
    try:
        began = _clock()  # not after the mark committed below: a file written since may be a re-send, kept
        study = db.begin_purge(study_key, states)
        if study is None:
            return False
        purged = _purge(db, storage_dir, study_key, began, report)
    finally:
        with _active_lock:
            _active.discard(study_key)
    if purged is None:
        return False
    log.info("purged study %s (%s)", short_hash(study["study_instance_uid"]), study["state"])
    return True


def finish_interrupted_purges(db: StateDB, storage_dir: Path, report: PurgeReport | None = None,
                              keep_going: KeepGoing = None) -> PurgeReport:
    """Finish every purge a crash (or a stop) interrupted: studies left `purging` lose their remaining files and
    rows. Runs first in every retention run, so at the start of the node too. `keep_going`: see KeepGoing (raises
    PurgeStopped)."""
    report = report if report is not None else PurgeReport()
    for study in db.studies((PURGING,)):
        _go_on(keep_going)
        key = study["study_key"]
        with _active_lock:
            if key in _active:
                continue  # this process is purging it right now
            _active.add(key)
        try:
            if _purge(db, Path(storage_dir), key, study["updated_at"], report) is not None:
                if (study["reason"] or "").startswith(WAITING_PREFIX):
                    log.info("finished the purge of study %s (it waited for files written since it began)",
                             short_hash(study["study_instance_uid"]))
                else:
                    log.warning("finished the purge of study %s, interrupted by a crash or a stop",
                                short_hash(study["study_instance_uid"]))
        finally:
            with _active_lock:
                _active.discard(key)
    return report


def purge_conflicts(storage_dir: Path, report: PurgeReport, before: float | None = None,
                    enough: Callable[[], bool] | None = None) -> None:
    """Delete conflict copies (<storage_dir>/conflicts: instances refused 0x0111 because another instance holds their
    SOP Instance UID, Spool.quarantine, or 0xA700 for a Deflated data set inflating past node.max_instance_mb,
    Spool.quarantine_bytes), oldest first: those last written before `before` (epoch s; None: any age),
    until `enough()` says there is enough room. Counted in `report` (conflicts, files, bytes); said at WARNING, as
    the copies are patient data the admin may have been looking at (their senders keep their own)."""
    root = Path(storage_dir) / CONFLICTS_DIR
    if not root.is_dir():
        return
    found = []
    for path in root.glob("*/*.dcm"):
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        if before is None or stat.st_mtime < before:
            found.append((stat.st_mtime, stat.st_size, path))
    deleted = 0
    for _, size, path in sorted(found, key=lambda item: item[0]):
        if enough is not None and enough():
            break
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        deleted += 1
        report.files += 1
        report.bytes += size
        try:
            os.rmdir(path.parent)  # only when empty
        except OSError:
            pass
    if deleted:
        report.conflicts += deleted
        log.warning("retention: deleted %d conflict cop(ies) under %s (instances refused 0x0111: their SOP Instance "
                    "UID is held by another instance, or 0xA700: over node.max_instance_mb inflated; their senders "
                    "keep them), %s", deleted, root,
                    "older than retention.days" if before is not None else "oldest first, for free space")


def _kept_failed(db: StateDB, report: PurgeReport, cutoff: float | None = None) -> None:
    """Name the failed studies (past `cutoff` if given) that retention keeps for `dicomnode retry` (those with
    undelivered results are named as such)."""
    kept = db.studies_updated_before((FAILED,), cutoff, undelivered=False)
    report.kept_failed = kept
    if kept:
        log.warning("kept %d failed stud%s for retry (their instances are what `dicomnode retry` analyses again; "
                    "`dicomnode status` lists them): %s", len(kept), "y" if len(kept) == 1 else "ies",
                    ", ".join(short_hash(key) for key in kept[:10]) + (" ..." if len(kept) > 10 else ""))


def purge_expired(db: StateDB, storage_dir: Path, days: float, now: float | None = None,
                  keep_going: KeepGoing = None) -> PurgeReport:
    """Purge every done study whose last change is older than `days` and has nothing undelivered. `keep_going`: see
    KeepGoing (raises PurgeStopped). Conflict copies older than `days` go too (purge_conflicts)."""
    now = time.time() if now is None else now
    cutoff = now - days * 86400
    report = PurgeReport()
    for study_key in db.studies_updated_before(PURGEABLE_STATES, cutoff, undelivered=False):
        _go_on(keep_going)
        purge_study(db, storage_dir, study_key, report)
    purge_conflicts(storage_dir, report, before=cutoff)
    kept = db.studies_updated_before(PURGEABLE_STATES + (FAILED,), cutoff, undelivered=True)
    if kept:
        log.warning("%d stud(ies) past retention.days kept: their results were never delivered (dicomnode status "
                    "lists them, dicomnode retry sends dead letters again): %s", len(kept),
                    ", ".join(short_hash(key) for key in kept[:10]) + (" ..." if len(kept) > 10 else ""))
    _kept_failed(db, report, cutoff)
    return report


def purge_failed(db: StateDB, storage_dir: Path, days: float, now: float | None = None) -> PurgeReport:
    """An explicit request: purge `failed` studies unchanged for `days`, when none of their result objects is
    undelivered (a failed study with dead letters keeps them until retried). Never called by the scheduled runs."""
    now = time.time() if now is None else now
    report = PurgeReport()
    for study_key in db.studies_updated_before((FAILED,), now - days * 86400, undelivered=False):
        purge_study(db, storage_dir, study_key, report, states=(FAILED,))
    return report


#: storage folders whose emergency purge left free space under its floor: when that was last said (epoch s), so
#: that a disk with nothing left to purge is said once and then every REPEAT_REMINDER_SECONDS, not every check
_short_told: dict[str, float] = {}


def emergency_purge(db: StateDB, storage_dir: Path, floor_mb: float, free_space_mb: Callable[[], float],
                    keep_going: KeepGoing = None, reserve_mb: float = 0.0,
                    free_inodes: Callable[[], int | None] | None = None) -> PurgeReport:
    """While free space is under `floor_mb` (+ `reserve_mb`: room to make the space reserve again, see
    SpaceReserve), or `free_inodes()` (None: not counted) is under EMERGENCY_FREE_INODES, delete conflict copies
    oldest first (purge_conflicts: instances refused 0x0111, which their senders keep), then purge done studies
    oldest first; nothing else is ever touched. `floor_mb` 0 turns it off (the inodes too). Still short afterwards
    (under `floor_mb`, or of inodes) is an ERROR naming what is short, said once and then every
    REPEAT_REMINDER_SECONDS. `keep_going`: see KeepGoing (raises PurgeStopped)."""
    report = PurgeReport()
    target = floor_mb + reserve_mb
    key = str(storage_dir)

    def inodes_short() -> int | None:
        """The free inodes where they are under EMERGENCY_FREE_INODES (and the emergency purge is on), else None."""
        if floor_mb <= 0 or free_inodes is None:
            return None
        free = free_inodes()
        return free if free is not None and free < EMERGENCY_FREE_INODES else None

    def enough() -> bool:
        return free_space_mb() >= target and inodes_short() is None

    if enough():
        if _short_told.pop(key, None) is not None and floor_mb > 0:
            inodes = free_inodes() if free_inodes is not None else None
            log.warning("free space %.0f MB is over retention.emergency_free_space_mb=%d again%s", free_space_mb(),
                        floor_mb, "" if inodes is None else
                        f", and {inodes} inodes are free (over {EMERGENCY_FREE_INODES})")
        return report
    finish_interrupted_purges(db, storage_dir, report, keep_going)
    purge_conflicts(storage_dir, report, enough=enough)
    for study_key in db.studies_updated_before(PURGEABLE_STATES, undelivered=False):
        if enough():
            break
        _go_on(keep_going)
        purge_study(db, storage_dir, study_key, report)
    free, inodes = free_space_mb(), inodes_short()
    short = ([f"free space {free:.0f} MB is still under retention.emergency_free_space_mb={floor_mb:g}"]
             if free < floor_mb else [])
    if inodes is not None:
        short.append(f"{'only ' if not short else 'and only '}{inodes} inode(s) are free on the file system of "
                     f"node.storage_dir, under {EMERGENCY_FREE_INODES} (files, not space, run out: `df -i`; C-STORE "
                     f"is refused under {MIN_FREE_INODES})")
    if short:
        now = time.time()
        if now - _short_told.get(key, 0.0) >= REPEAT_REMINDER_SECONDS:
            _short_told[key] = now
            undelivered = len(db.studies_updated_before(PURGEABLE_STATES + (FAILED,), undelivered=True))
            failed = len(db.studies_updated_before((FAILED,), undelivered=False))
            log.error("%s after purging %d done stud(ies); unfinished studies, %d with undelivered results and %d "
                      "failed (kept for retry) are kept (said again every %.0f s while it lasts)", " ".join(short),
                      len(report.studies), undelivered, failed, REPEAT_REMINDER_SECONDS)
    elif report.studies or report.conflicts:
        _short_told.pop(key, None)
        log.warning("emergency purge: %d done stud(ies) and %d conflict cop(ies) removed to get over %d MB free%s%s",
                    len(report.studies), report.conflicts, target, f" (retention.emergency_free_space_mb={floor_mb} and {reserve_mb:g} MB to make the space "
                            f"reserve again)" if reserve_mb else "",
                    f" and {EMERGENCY_FREE_INODES} free inodes" if free_inodes is not None and floor_mb > 0 else "")
    return report


class Retention:
    """The scheduled job: interrupted purges, age-based purge, then the emergency purge; `clock` and
    `free_space_mb` are replaceable. `reserve`: the space reserve for a full disk (default: RESERVE_MB in
    `storage_dir`, see SpaceReserve); while it is missing the emergency purge frees its size on top of
    retention.emergency_free_space_mb, so that it can be made again. `free_inodes`: the free inodes of the storage's
    file system (None: not counted; see emergency_purge). `storage_problem`: why node.storage_dir does not hold the
    spool now (Spool.identity_problem: an unmounted share), or None; while it says one, nothing is purged (said in one
    line when it starts and when it ends).

    The scheduled run (run_safely) and the free-space check (check_free_space_safely), two scheduler threads, never
    run at once: the check is skipped while a run holds the lock (that run ends with the emergency purge itself)."""

    def __init__(self, db: StateDB, storage_dir: Path, config: RetentionConfig, free_space_mb: Callable[[], float],
                 clock: Callable[[], float] = time.time, reserve: SpaceReserve | None = None,
                 free_inodes: Callable[[], int | None] | None = None,
                 storage_problem: Callable[[], str | None] | None = None):
        self.db = db
        self.storage_dir = Path(storage_dir)
        self.config = config
        self.free_space_mb = free_space_mb
        self.free_inodes = free_inodes
        self.storage_problem = storage_problem
        self.clock = clock
        self.reserve = reserve if reserve is not None else SpaceReserve(self.storage_dir)
        self._running = threading.Lock()  # held by a run or a check (break51b #4: two overlapping jobs)
        self._paused: str | None = None  # the storage problem retention was last paused for (said once)
        # a failing round is said once with its traceback, then counted (an outage of the state database once for
        # the whole process): not a traceback every FREE_SPACE_CHECK_SECONDS
        self._purge_failures = RoundFailures(db, log, "retention purge failed; it runs again at the next interval",
                                             config.purge_interval_minutes * 60)
        self._space_failures = RoundFailures(db, log, "emergency purge (free-space check) failed; it runs again at "
                                             "the next check", FREE_SPACE_CHECK_SECONDS)
        # a purge that cannot record its steps on a full disk (PurgeBlocked says why and what to do): once, then a
        # reminder every REPEAT_REMINDER_SECONDS, whichever of the two jobs meets it
        self._blocked = RoundFailures(db, log, "retention", FREE_SPACE_CHECK_SECONDS, traceback=False)

    def _reserve_missing_mb(self) -> float:
        """What the emergency purge frees on top of retention.emergency_free_space_mb: the space reserve's size
        while it is missing (nothing while the emergency purge is off)."""
        if self.config.emergency_free_space_mb > 0 and not self.reserve.present and self._reserve_helps() is None:
            return self.reserve.size_mb
        return 0.0

    def _keep_reserve(self) -> None:
        """Make the reserve where it can help (_reserve_helps: a SQLite state on node.storage_dir's file system);
        elsewhere (PostgreSQL, another file system) none is kept."""
        why_not = self._reserve_helps()
        if why_not is None:
            self.reserve.ensure(self.free_space_mb(), self.config.emergency_free_space_mb)
        elif self.reserve.present:
            self.reserve.path.unlink(missing_ok=True)
            log.info("space reserve %s removed: %s", self.reserve.path, why_not)

    def _reserve_helps(self) -> str | None:
        """None where deleting the reserve gives the state database room (a SQLite file on the reserve's file
        system), else why it cannot."""
        if not self.db.is_sqlite:
            return (f"the state database is {describe_url(self.db.url)}, not on node.storage_dir's file system, so "
                    f"the node's space reserve cannot help: free space on the database server's disk")
        try:
            same = os.stat(self.db.path.parent).st_dev == os.stat(self.storage_dir).st_dev
        except OSError:
            same = True
        if not same:
            return (f"the state database {self.db.path} is on another file system than node.storage_dir, so the "
                    f"node's space reserve cannot help: free space on the file system of {self.db.path.parent}")
        return None

    def _blocked_text(self, exc: BaseException, why: str) -> str:
        cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200]
        return (f"the emergency purge (and the age purge) cannot run: the state database cannot be written "
                f"({cause}), and a purge records each study as `purging` there before it deletes any of its files "
                f"(so that a crash never leaves a half-deleted study that says done); {why}. Free space on the file "
                f"system of {self.storage_dir} by hand (move or delete files that are not the node's: another "
                f"program's data, an old log); the purge then runs by itself within {FREE_SPACE_CHECK_SECONDS} s")

    def _disk_full(self, exc: BaseException) -> bool:
        """Whether `exc` comes from a full disk: said so (is_disk_full), or SQLite's 'disk I/O error' (what it says
        where its shared-memory file cannot grow) while node.storage_dir has no space left (under 1 MB)."""
        if is_disk_full(exc):
            return True
        if "disk i/o error" not in str(getattr(exc, "orig", None) or exc).lower():
            return False
        try:
            return self.free_space_mb() < 1.0
        except OSError:
            return False

    def _with_room(self, what: str, step: Callable[[], object]):
        """Run `step`; where it fails because the state database's disk is full, delete the space reserve and run it
        once more. Raises PurgeBlocked (saying why and what to do) where that cannot help."""
        try:
            return step()
        except Exception as exc:  # noqa: BLE001 - only a full disk is handled here
            if not self._disk_full(exc):
                raise
            full = exc
        why = self._reserve_helps()
        if why is not None:
            raise PurgeBlocked(self._blocked_text(full, why)) from full
        if not self.reserve.release():
            state = ("it was deleted for an earlier purge and there has not been room to make it again since"
                     if self.reserve.released_at is not None else
                     f"there was never room for it ({self.reserve.size_mb} MB above "
                     f"retention.emergency_free_space_mb)")
            why = f"no space reserve is left to delete ({self.reserve.path}: {state})"
            raise PurgeBlocked(self._blocked_text(full, why)) from full
        log.warning("%s: the state database could not record it (the disk is full): deleted the space reserve %s "
                    "(%d MB) to let it go on; the reserve is made again once there is room for it", what,
                    self.reserve.path, self.reserve.size_mb)
        try:
            return step()
        except Exception as exc:  # noqa: BLE001 - only a full disk is handled here
            if not self._disk_full(exc):
                raise
            why = (f"the space reserve ({self.reserve.size_mb} MB) was deleted for it and was not enough (another "
                   f"writer filled that space at once?)")
            raise PurgeBlocked(self._blocked_text(exc, why)) from exc

    def run_once(self, keep_going: KeepGoing = None) -> PurgeReport:
        """Interrupted purges, the age-based purge, then the emergency purge. `keep_going()` is asked between
        studies (the scale-out completion process renews its `complete` lease there): False ends the run at once,
        said once (the studies purged so far stay purged: each one is whole). Raises PurgeBlocked where the disk
        is full and the space reserve cannot help (see _with_room)."""
        report = PurgeReport()
        self.remove_abandoned_results()

        def steps() -> tuple[PurgeReport, PurgeReport]:
            finish_interrupted_purges(self.db, self.storage_dir, report, keep_going)
            expired = purge_expired(self.db, self.storage_dir, self.config.days, now=self.clock(),
                                    keep_going=keep_going)
            emergency = emergency_purge(self.db, self.storage_dir, self.config.emergency_free_space_mb,
                                        self.free_space_mb, keep_going, self._reserve_missing_mb(), self.free_inodes)
            return expired, emergency

        try:
            expired, emergency = self._with_room("retention purge", steps)
        except PurgeStopped:
            log.warning("retention run stopped between two studies: this process no longer holds the `complete` "
                        "lease (the process holding it purges now)")
            return report
        report.kept_failed = expired.kept_failed
        for part in (expired, emergency):
            report.studies += part.studies
            report.files += part.files
            report.bytes += part.bytes
            report.conflicts += part.conflicts
        if report.studies or report.conflicts:
            log.info("retention: purged %d stud(ies) and %d conflict cop(ies), %d file(s), %.1f MB",
                     len(report.studies), report.conflicts, report.files, report.bytes / 1e6)
        return report

    def remove_abandoned_results(self) -> int:
        """remove_abandoned_results for this node (the claims' lease as grace), said in the log; returns the count."""
        removed = remove_abandoned_results(self.db, self.storage_dir, self.db.lease_seconds)
        if removed:
            log.info("removed %d result file(s) of analyses that never finished (killed, abandoned or superseded)",
                     removed)
        return removed

    def _storage_gone(self) -> bool:
        """Whether node.storage_dir does not hold the spool now (storage_problem): said once when retention pauses
        for it and once when it resumes; a purge then would find none of the files and drop the rows of files that
        are still on the unmounted disk."""
        problem = self.storage_problem() if self.storage_problem is not None else None
        if problem is not None and self._paused is None:
            log.warning("retention paused (no purge, no free-space check) while node.storage_dir does not hold the "
                        "spool: %s", problem)
        elif problem is None and self._paused is not None:
            log.info("retention resumes: node.storage_dir holds the spool again")
        self._paused = problem
        return problem is not None

    def run_safely(self, keep_going: KeepGoing = None) -> None:
        """run_once for a scheduler: an error is logged (see RoundFailures) and the next interval tries again; then
        the space reserve is made where it is missing and there is room. Waits for a free-space check running in
        another thread; does nothing while node.storage_dir does not hold the spool (storage_problem)."""
        with self._running:
            if not self._storage_gone():
                self._run_safely(keep_going)

    def _run_safely(self, keep_going: KeepGoing) -> None:
        try:
            self.run_once(keep_going)
            self._keep_reserve()
        except PurgeBlocked as exc:
            self._blocked.failed(exc)
        except Exception as exc:  # noqa: BLE001 - it runs again at the next interval
            if isinstance(exc, OSError) and self._storage_gone():  # unmounted during the run: said once, as paused
                return
            self._purge_failures.failed(exc)
        else:
            self._purge_failures.succeeded()
            self._blocked.succeeded()

    def check_free_space_safely(self, keep_going: KeepGoing = None) -> None:
        """The frequent check between scheduled purges: purges left `purging` are finished (one waiting for files
        written during it, see _purge, need not wait for the next scheduled run), then the emergency purge, only when
        space (or inodes) are low; then the space reserve is made where it is missing and there is room. Skipped while
        the scheduled run (run_safely) runs in another thread, which ends with the emergency purge, and while
        node.storage_dir does not hold the spool (storage_problem)."""
        if not self._running.acquire(blocking=False):
            log.debug("free-space check skipped: the scheduled retention run is running (it purges for space too)")
            return
        try:
            if not self._storage_gone():
                self._check_free_space(keep_going)
        finally:
            self._running.release()

    def _check_free_space(self, keep_going: KeepGoing) -> None:
        def steps() -> None:
            if self.db.count_studies((PURGING,)):  # one left waiting for files written during it (_purge), or a crash
                finish_interrupted_purges(self.db, self.storage_dir, keep_going=keep_going)
            emergency_purge(self.db, self.storage_dir, self.config.emergency_free_space_mb, self.free_space_mb,
                            keep_going, self._reserve_missing_mb(), self.free_inodes)

        try:
            self._with_room("emergency purge", steps)
            self._keep_reserve()
        except PurgeStopped:
            log.warning("emergency purge stopped: this process no longer holds the `complete` lease (the process "
                        "holding it purges now)")
        except PurgeBlocked as exc:
            self._blocked.failed(exc)
        except Exception as exc:  # noqa: BLE001 - it runs again at the next check
            self._space_failures.failed(exc)
        else:
            self._space_failures.succeeded()
            self._blocked.succeeded()
