"""Durable instance store: bytes fsynced to disk, then indexed, before an instance is acknowledged."""
from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import math
import os
import re
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Iterable

import numpy as np
import pydicom
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element

from dicomnode.state import InstanceRow, StateDB, StorageDirError, StoreOutcome, describe_url
from dicomnode.uids import MR_STORAGE_CLASSES, check_uid, short_hash

log = logging.getLogger("dicomnode.spool")


class OutOfSpace(Exception):
    """Free space is under the configured floor; nothing was written.

    `str()` is the whole explanation (for the log); `comment` is its short form for a DIMSE Error Comment (64 chars);
    `inodes`: the file system is short of inodes (MIN_FREE_INODES), not of space.
    """

    def __init__(self, message: str, comment: str | None = None, inodes: bool = False):
        super().__init__(message)
        self.comment = (comment or message)[:64]
        self.inodes = inodes


class StorageUnavailable(Exception):
    """node.storage_dir does not hold this node's spool now (its SPOOL_ID_FILE is gone or another's: a share that
    came unmounted); nothing was written or indexed.

    `str()` is the whole explanation (for the log); `comment` is its short form for a DIMSE Error Comment (64 chars).
    """

    def __init__(self, message: str, comment: str):
        super().__init__(message)
        self.comment = f"storage unavailable: {comment}"[:64]


class StorageInUse(StorageDirError):
    """Another node process holds node.storage_dir (its `node.lock`); this one must not touch its state."""


#: the lock file in node.storage_dir: an exclusive flock by a single-node `serve`, shared by scale-out role processes
LOCK_FILE = "node.lock"

#: the spool's identity in node.storage_dir: a random id that the state database records too (meta key `spool`), so
#: that a process whose storage_dir is not the spool of the state it shares (a per-machine local folder, a share
#: not mounted) refuses to start, instead of claiming studies whose files it cannot see
SPOOL_ID_FILE = "spool.id"

#: how long (s) a spool.id found empty is read again before it counts as empty: another process starting at the same
#: moment may have created it and not written it yet
SPOOL_ID_WRITE_SECONDS = 2.0

#: when a state that indexes instances records its spool for the first time (a node upgraded to spool ids), the
#: folder must hold at least one of its newest instances: the first process to start may be the misconfigured one
SPOOL_SAMPLE = 20


class SpoolMismatch(StorageDirError):
    """node.storage_dir is not the spool the state database indexes: this process must not serve on it."""


def fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes | memoryview, mode: int = 0o600, root: Path | None = None) -> None:
    """Write via a temporary file, fsync it, rename into place, fsync the folder: all or nothing.

    A folder made for the file is made durable in its parent too (fsync of the parent), so that after a power
    loss the file is not in a folder that was never recorded. Raises OSError (e.g. ENOSPC) with nothing in place.
    `root`: folders are made only below it, never `root` itself (the spool: on the bare mount point of an unmounted
    share it is missing, and this raises FileNotFoundError instead of writing beside the share).
    """
    if not path.parent.is_dir():
        if root is not None and not root.is_dir():
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(root))
        missing = [p for p in [path.parent, *path.parent.parents] if not p.exists()]
        for folder in reversed(missing):  # intermediate folders owner-only too, not only the last one
            folder.mkdir(mode=0o700, exist_ok=True)
            fsync_directory(folder.parent)
    temporary = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)  # a full disk must not keep the part written so far
        raise
    fsync_directory(path.parent)


#: C-STORE is refused (0xA700) and result objects are not written while fewer inodes than this are free on
#: node.storage_dir's file system: every file takes one (an instance; a new study's or series' folder; an analysis's
#: ten or so result objects; SQLite's journal), and a file system out of inodes refuses every new file with "No space
#: left on device" however many MB are free. The emergency purge starts above it (retention.EMERGENCY_FREE_INODES)
MIN_FREE_INODES = 200


@dataclass(frozen=True)
class FreeSpace:
    """What a file system has free for an unprivileged writer (statvfs `f_bavail`, `f_favail`): `mb` in MB, and
    `inodes` (files that can still be created), None where the file system has no fixed number of them (statvfs
    `f_files` 0: btrfs, many network file systems)."""

    mb: float
    inodes: int | None

    def inodes_short(self, floor: int = MIN_FREE_INODES) -> bool:
        """Whether fewer than `floor` inodes are free (never where the file system does not count them)."""
        return self.inodes is not None and self.inodes < floor


def free_space(path: str | os.PathLike) -> FreeSpace:
    """Free space and free inodes of the file system holding `path` (one statvfs). Raises OSError (e.g.
    FileNotFoundError where `path` is gone: an unmounted share)."""
    stat = os.statvfs(path)
    return FreeSpace(stat.f_bavail * stat.f_frsize / (1024 * 1024), stat.f_favail if stat.f_files else None)


def free_space_mb(path: str | os.PathLike) -> float:
    """Free space (MB) of the file system holding `path` (free_space)."""
    return free_space(path).mb


#: the kernel's table of file locks (Linux): "1: FLOCK  ADVISORY  WRITE <pid> <major>:<minor>:<inode> 0 EOF"
PROC_LOCKS = "/proc/locks"


@dataclass(frozen=True)
class LockHolder:
    """The running single-node `serve` that holds node.lock (StorageLock.running_holder): its pid, and the node.port
    it listens on (None where its lock file does not say)."""

    pid: int
    port: int | None


def _holds_exclusive(line: str, pid: int, inode: int) -> bool:
    """Whether one line of /proc/locks is an exclusive (WRITE) lock held, not waited for ("->"), by `pid` on the
    file `inode`: FLOCK, or POSIX where a network file system (NFS) takes flock() as a whole-file lock. The device
    is not compared: on overlay and network file systems the lock's may differ from the one stat() gives."""
    fields = line.split()
    if len(fields) < 6 or "->" in fields:
        return False
    kind, mode, holder, where = fields[1], fields[3], fields[4], fields[5]
    return (kind in ("FLOCK", "POSIX") and mode == "WRITE" and holder == str(pid)
            and where.rsplit(":", 1)[-1] == str(inode))


class StorageLock:
    """An advisory lock on node.storage_dir (flock on `<storage_dir>/node.lock`), taken before a node process
    touches the storage or its state.

    A single-node `serve` (every role in one process, SQLite) holds it exclusively: a second `serve` on the same
    config (an admin checking that it starts while systemd runs the node) refuses before it releases claims,
    removes temporaries or purges anything. Scale-out role processes share it with each other (each role process
    of a machine works on the shared storage at once), and so still exclude a single-node `serve` there.
    """

    def __init__(self, storage_dir: Path):
        self.path = Path(storage_dir) / LOCK_FILE
        self._fd: int | None = None
        self.exclusive = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, exclusive: bool, description: str = "dicomnode serve", port: int | None = None) -> None:
        """Take the lock (no waiting); raises StorageInUse naming the holder when another process has it. An
        exclusive holder writes its pid, host and `port` (the node.port it listens on, TCP) into the lock file
        (running_holder reads them)."""
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd, exclusive)
            os.close(fd)
            raise StorageInUse(
                f"node.storage_dir {str(self.path.parent)!r} is in use by {holder} (lock {self.path}); this process "
                f"stops without touching it. Stop the running node first (systemctl stop dicomnode), or give this "
                f"one its own node.storage_dir") from None
        except OSError:
            os.close(fd)
            raise
        if exclusive:
            os.ftruncate(fd, 0)
            listens = "" if port is None else f", node.port {port}"
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}: {description}{listens}, since "
                         f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        self._fd = fd
        self.exclusive = exclusive

    @staticmethod
    def _holder(fd: int, exclusive: bool) -> str:
        """Who holds it, as well as the lock file tells: an exclusive holder wrote its pid; shared holders did not."""
        if exclusive:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                pass
            else:  # only shared holders
                fcntl.flock(fd, fcntl.LOCK_UN)
                return "scale-out role process(es) (dicomnode serve --roles ...)"
        try:
            text = os.pread(fd, 300, 0).decode("utf-8", "replace").strip()
        except OSError:
            text = ""
        return f"another node process ({text})" if text else "another node process"

    @staticmethod
    def running_holder(storage_dir: str | os.PathLike) -> LockHolder | None:
        """The single-node `serve` of this machine that holds `storage_dir`'s lock now, with the node.port it
        listens on, as facts say, not the lock file's text alone (the text stays after the node stops, and its pid
        may be reused): the kernel's lock table (PROC_LOCKS, Linux) must list an exclusive lock on the lock file's
        inode held by the pid the text names, on this host. None where that cannot be shown: no lock file, another
        machine's, a lock not held (a node that stopped or was killed), only shared holders (scale-out role
        processes, which write no pid), or no PROC_LOCKS to read (not Linux). Takes no lock, so a node starting at
        this moment is never disturbed. `port` is None where the holder did not write it (a node of an earlier
        release)."""
        path = Path(storage_dir) / LOCK_FILE
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
            inode = path.stat().st_ino
            table = Path(PROC_LOCKS).read_text(encoding="ascii", errors="replace")
        except OSError:
            return None
        match = re.match(r"pid (\d+) on (\S+):", text)
        if match is None or match.group(2) != socket.gethostname():
            return None
        pid = int(match.group(1))
        if not any(_holds_exclusive(line, pid, inode) for line in table.splitlines()):
            return None
        port = re.search(r", node\.port (\d+),", text)
        return LockHolder(pid, int(port.group(1)) if port else None)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None


def read_spool_id(storage_dir: str | os.PathLike) -> str | None:
    """The spool id in `storage_dir` (its SPOOL_ID_FILE), or None when there is none. Raises OSError when the folder
    cannot be read (a share gone stale)."""
    try:
        text = (Path(storage_dir) / SPOOL_ID_FILE).read_text(encoding="ascii", errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return None
    words = text.split()
    return words[0] if words else None


def _create_spool_id(storage_dir: Path) -> str:
    """Write a new spool id into `storage_dir` unless one is there (O_EXCL: processes starting together on one
    spool agree on the first); returns the id the folder holds."""
    path = storage_dir / SPOOL_ID_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        existing = read_spool_id(storage_dir)
        deadline = time.monotonic() + SPOOL_ID_WRITE_SECONDS
        while existing is None and time.monotonic() < deadline:  # a process starting beside this one is writing it
            time.sleep(0.05)
            existing = read_spool_id(storage_dir)
        if existing is None:
            raise SpoolMismatch(f"{path} is empty: remove it, or write the spool id the state records into it")
        return existing
    spool_id = uuid.uuid4().hex
    try:
        os.write(fd, f"{spool_id}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_directory(storage_dir)
    return spool_id


def _recorded_where(recorded: dict) -> str:
    return (f"spool {recorded.get('id')}, recorded from {recorded.get('storage_dir')} on {recorded.get('host')} at "
            f"{recorded.get('recorded_at')}")


def _mismatch_message(storage_dir: Path, marker: str | None, recorded: dict, url: str) -> str:
    here = (f"has no {SPOOL_ID_FILE}" if marker is None else f"holds spool {marker} (its {SPOOL_ID_FILE})")
    return (f"node.storage_dir {storage_dir} is not the spool the state database {url} indexes: the state belongs to "
            f"{_recorded_where(recorded)}, and {storage_dir} {here}. Is storage_dir the shared spool (or an unmounted "
            f"share)? Every process sharing one state must use that one spool folder, mounted at node.storage_dir. "
            f"If {storage_dir} is that spool (its {SPOOL_ID_FILE} was lost, or the state recorded a wrong folder "
            f"first), write the state's id into it: echo {recorded.get('id')} > {storage_dir / SPOOL_ID_FILE}")


def _sample_problem(db: StateDB, storage_dir: Path, url: str) -> str | None:
    """Before a state that indexes instances records its spool: None when `storage_dir` holds one of its newest
    instance files, else why this folder is not its spool."""
    if db.is_sqlite and db.path is not None and db.path.parent.resolve() == storage_dir.resolve():
        return None  # the default state lives in the folder: it is that folder's index, whatever is missing
    count, paths = db.newest_instance_paths(SPOOL_SAMPLE)
    if not paths or any((storage_dir / path).exists() for path in paths):
        return None
    return (f"node.storage_dir {storage_dir} is not the spool the state database {url} indexes: the state indexes "
            f"{count} instance(s), and none of the newest {len(paths)} is under it (e.g. {storage_dir / paths[0]}). "
            f"Is storage_dir the shared spool (or an unmounted share)? Every process sharing one state must use that "
            f"one spool folder, mounted at node.storage_dir")


def verify_spool_identity(db: StateDB, storage_dir: str | os.PathLike) -> str:
    """At `serve`, after the storage lock and before anything else touches the spool: `storage_dir` must be the spool
    the state indexes. The first process to serve on a state records the spool's id (making one in storage_dir when
    it has none, once it holds the state's newest instances, if the state has any); every later one compares.
    Returns the id; raises SpoolMismatch naming both folders and ids, and how to repair a lost marker."""
    folder = Path(storage_dir)
    url = describe_url(db.url)
    # the record first: the process that records an id wrote its marker before, so a marker read after is there
    recorded = db.spool_identity()
    marker = read_spool_id(folder)
    if recorded is None:
        if marker is None:
            problem = _sample_problem(db, folder, url)
            if problem is not None:
                raise SpoolMismatch(problem)
            marker = _create_spool_id(folder)
        recorded = db.record_spool_identity(marker, folder.resolve())
    if marker != recorded.get("id"):
        raise SpoolMismatch(_mismatch_message(folder, marker, recorded, url))
    return marker


def spool_identity_problem(db: StateDB, storage_dir: str | os.PathLike) -> str | None:
    """`config check`'s read-only form of verify_spool_identity: why `storage_dir` is not the state's spool, or None
    (also when no spool is recorded yet and the folder could be it: the first `serve` records it)."""
    folder = Path(storage_dir)
    url = describe_url(db.url)
    # the record first, as verify_spool_identity: a process starting beside this one writes its marker, then the
    # record; read the other way round, its record could be read without its marker (a false mismatch)
    recorded = db.spool_identity()
    marker = read_spool_id(folder)
    if recorded is None:
        return None if marker is not None else _sample_problem(db, folder, url)
    if marker != recorded.get("id"):
        return _mismatch_message(folder, marker, recorded, url)
    return None


def shared_spool_problem(state_url: str, storage_dir: str | os.PathLike, timeout: float = 5.0) -> str | None:
    """spool_identity_problem for a `[state] url` the check has to open (and closes again); None where it cannot be
    reached or has no schema yet: `serve` says that itself."""
    try:
        db = StateDB(state_url, upgrade=False, check=False, readonly=True, connect_timeout=timeout)
    except Exception:  # noqa: BLE001 - no state there (yet): nothing to compare
        return None
    try:
        return spool_identity_problem(db, storage_dir)
    except OSError as exc:
        return f"node.storage_dir {storage_dir} cannot be read: {exc.strerror or exc}"
    except Exception:  # noqa: BLE001 - unreachable, or no schema: serve says which
        return None
    finally:
        db.close()


#: IncomingInstance.series_continues of inversion-recovery magnitude frames without phase-sensitive ones: unlike the
#: other reasons (a piece of its own series), it says that another series may follow (studies.ExpectedCounts)
PSIR_MAY_FOLLOW = "inversion-recovery magnitude frames only: their phase-sensitive (PSIR) images may follow"


@dataclass
class IncomingInstance:
    """What the receive path knows of an instance: its encoded bytes and the identifying attributes."""

    encoded: bytes | memoryview  # the dataset exactly as received, with File Meta Information
    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax: str
    modality: str
    study_key: str
    calling_ae: str
    series_number: int | None = None
    slice_key: str | None = None
    cardiac_images: int | None = None
    frames: int | None = None
    images_in_acquisition: int | None = None
    series_continues: str | None = None  # net.scp.series_continues


class Spool:
    """Files under <storage_dir>/spool/<study hash>/<series hash>/<SOP UID>.dcm plus the SQLite index."""

    def __init__(self, storage_dir: Path, db: StateDB, min_free_space_mb: int = 0):
        self.root = Path(storage_dir)
        self.spool_dir = self.root / "spool"
        self.spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.db = db
        self.min_free_space_mb = min_free_space_mb
        #: the spool's identity once verified (Node.verify_spool); from then on nothing is stored while
        #: storage_dir does not hold it (identity_problem). None: not verified, nothing to compare
        self.spool_id: str | None = None
        self._gone: str | None = None  # why the spool is not there now (logged when it goes and when it is back)
        self._gone_lock = threading.Lock()

    def identity_problem(self) -> str | None:
        """Why node.storage_dir does not hold this spool now (its SPOOL_ID_FILE gone, another spool's, or the folder
        unreadable: a share that came unmounted), or None; None too before the spool is verified.

        Reads the marker on every call (a small read, microseconds on a local disk). Said once when the spool goes
        and once when it is back, whichever thread (C-STORE, analysis, dispatch, /healthz) notices."""
        problem = self._identity()
        return problem[1] if problem is not None else None

    def _identity(self) -> tuple[str, str] | None:
        """identity_problem as (short form for a DIMSE Error Comment, whole explanation), or None."""
        problem = self._marker_problem()
        with self._gone_lock:
            gone, self._gone = self._gone, (problem[1] if problem is not None else None)
        if problem is not None and gone is None:
            log.error("%s; instances are refused (0xA700), results are not sent, and no study is claimed for analysis "
                      "until it is back", problem[1])
        elif problem is None and gone is not None:
            log.warning("node.storage_dir %s holds the spool again: receiving, analyses and sending resume", self.root)
        return problem

    def _marker_problem(self) -> tuple[str, str] | None:
        if self.spool_id is None:
            return None
        try:
            marker = read_spool_id(self.root)
        except OSError as exc:
            why = exc.strerror or str(exc)
            return (f"storage_dir unreadable: {why}",
                    f"node.storage_dir {self.root} cannot be read ({why}): is the shared spool unmounted?")
        if marker == self.spool_id:
            return None
        there = "none there" if marker is None else f"spool {marker} there"
        return (f"{SPOOL_ID_FILE} missing" if marker is None else f"{SPOOL_ID_FILE} of another spool",
                f"node.storage_dir {self.root} no longer holds this spool's {SPOOL_ID_FILE} ({there}, {self.spool_id} "
                f"expected): is the shared spool unmounted?")

    def _check_identity(self) -> None:
        """Raise StorageUnavailable while storage_dir does not hold this spool (identity_problem)."""
        problem = self._identity()
        if problem is not None:
            raise StorageUnavailable(problem[1], problem[0])

    def free_space_mb(self) -> float:
        """Free space (MB) of the spool's file system. Raises OSError where the spool folder is gone."""
        return free_space_mb(self.spool_dir)

    def free_inodes(self) -> int | None:
        """Free inodes of the spool's file system (FreeSpace.inodes: None where it does not count them). Raises
        OSError where the spool folder is gone."""
        return free_space(self.spool_dir).inodes

    def has_room_for(self, size: int) -> bool:
        return self.no_room(size) is None

    def no_room(self, size: int, what: str = "the instance") -> OutOfSpace | None:
        """None when `size` bytes fit above node.min_free_space_mb and at least MIN_FREE_INODES inodes are free,
        else the OutOfSpace to raise (saying which)."""
        free = self.free_space_mb()
        needed = size / (1024 * 1024)
        if free - needed < self.min_free_space_mb:
            return OutOfSpace(f"free space {_mb(free)} MB minus {what} ({_mb(needed)} MB) would be under the floor "
                              f"of {self.min_free_space_mb} MB (node.min_free_space_mb): {what} does not fit",
                              f"free {_mb(free)} MB - {_mb(needed)} MB instance is under the floor of "
                              f"{self.min_free_space_mb} MB")
        inodes = self.free_inodes()
        if inodes is not None and inodes < MIN_FREE_INODES:
            return OutOfSpace(f"only {inodes} inode(s) free on the file system of node.storage_dir ({_mb(free)} MB "
                              f"free), under the floor of {MIN_FREE_INODES} inodes: the file system runs out of "
                              f"files, not of space, and {what} is not written (`df -i` shows it)",
                              f"{inodes} free inodes is under the floor of {MIN_FREE_INODES} inodes", inodes=True)
        return None

    def relative_path(self, instance: IncomingInstance) -> str:
        sop = check_uid(instance.sop_instance_uid, "SOP Instance UID")
        return f"spool/{short_hash(instance.study_key, 16)}/{short_hash(instance.series_instance_uid, 16)}/{sop}.dcm"

    def store(self, instance: IncomingInstance, calling_host: str | None = None) -> StoreOutcome:
        """Make the instance durable and indexed. Raises OutOfSpace before writing anything, and StorageUnavailable
        (nothing written, nothing indexed) while storage_dir does not hold this spool (identity_problem)."""
        for what, value in (
            ("SOP Instance UID", instance.sop_instance_uid),
            ("Study Instance UID", instance.study_instance_uid),
            ("Series Instance UID", instance.series_instance_uid),
            ("SOP Class UID", instance.sop_class_uid),
        ):
            check_uid(value, what)
        relative = self.relative_path(instance)
        self._check_identity()  # before anything is written: a spool folder on a bare mount point is not ours
        # a stored instance has its file: without one (the usual case) there is nothing to ask the index
        if (self.root / relative).exists() and self.db.has_instance(instance.sop_instance_uid):
            study = self.db.study(instance.study_key)
            return StoreOutcome(False, instance.study_key, study["state"] if study else None, study["generation"] if study else 0)
        size = len(instance.encoded)
        refusal = self.no_room(size)
        if refusal is not None:
            raise refusal
        write_durably(self.root / relative, instance.encoded, root=self.spool_dir)
        try:
            self._check_identity()  # the share may have gone while the file was written: then it is not on the share
        except StorageUnavailable:
            self._remove_unindexed(relative)
            for folder in (self.root / relative).parents:  # the study and series folders made for it, when empty
                if folder == self.spool_dir or self.spool_dir not in folder.parents:
                    break
                try:
                    folder.rmdir()
                except OSError:
                    break
            raise
        row = InstanceRow(
            sop_instance_uid=instance.sop_instance_uid, study_key=instance.study_key,
            study_instance_uid=instance.study_instance_uid, series_instance_uid=instance.series_instance_uid,
            sop_class_uid=instance.sop_class_uid, transfer_syntax=instance.transfer_syntax, modality=instance.modality,
            path=relative, size=size, calling_ae=instance.calling_ae, received_at=time.time(),
            series_number=instance.series_number, slice_key=instance.slice_key, cardiac_images=instance.cardiac_images,
            frames=instance.frames, images_in_acquisition=instance.images_in_acquisition,
            series_continues=instance.series_continues,
        )
        # only an image the analysis reads re-opens a study past receiving (cmr.grouping reads MR images only)
        try:
            outcome = self.db.add_instance(row, calling_host, reopens=instance.sop_class_uid in MR_STORAGE_CLASSES)
        except BaseException:
            # not indexed (StudyPurging, the state database unreachable ...): the sender gets a failure status and
            # sends it again, so the file just written goes; kept, it would stay behind indexed by nothing, and
            # retention (which works from the index) would never remove it
            self._remove_unindexed(relative)
            raise
        if not outcome.stored:  # the same SOP Instance UID indexed under another study or series: keep that one
            indexed = self.db.instance_path(instance.sop_instance_uid)
            if indexed is not None and indexed != relative:
                (self.root / relative).unlink(missing_ok=True)
        return outcome

    def unindexed_study_folders(self, study_keys: Iterable[str]) -> dict[str, list[Path]]:
        """The spool/<study hash> folders that no study of `study_keys` (every key the state database holds) names,
        each with its instance files (temporaries left out): what a state restored from a backup older than the
        spool does not know (Node.reindex_spool). Folders without a file are left out."""
        known = {short_hash(key, 16) for key in study_keys}
        found: dict[str, list[Path]] = {}
        for folder in sorted(self.spool_dir.iterdir()) if self.spool_dir.is_dir() else ():
            if folder.name in known or not folder.is_dir():
                continue
            files = sorted(p for p in folder.glob("*/*.dcm") if p.is_file() and not p.name.startswith("."))
            if files:
                found[folder.name] = files
        return found

    def reindex(self, instance: IncomingInstance, path: Path) -> StoreOutcome:
        """Index a spooled file the state database does not know (`instance`: read from it, net.scp.
        instance_of_file) as received at its modification time, without writing it again; StoreOutcome.stored
        False where its SOP Instance UID is indexed already (the file is left as it is)."""
        stat = path.stat()
        row = InstanceRow(
            sop_instance_uid=instance.sop_instance_uid, study_key=instance.study_key,
            study_instance_uid=instance.study_instance_uid, series_instance_uid=instance.series_instance_uid,
            sop_class_uid=instance.sop_class_uid, transfer_syntax=instance.transfer_syntax, modality=instance.modality,
            path=str(path.relative_to(self.root)), size=stat.st_size, calling_ae=instance.calling_ae or None,
            received_at=stat.st_mtime, series_number=instance.series_number, slice_key=instance.slice_key,
            cardiac_images=instance.cardiac_images, frames=instance.frames,
            images_in_acquisition=instance.images_in_acquisition, series_continues=instance.series_continues,
        )
        return self.db.add_instance(row, None, reopens=instance.sop_class_uid in MR_STORAGE_CLASSES)

    def _remove_unindexed(self, relative: str) -> None:
        """Remove a file just written that is not indexed (its sender gets a failure status and sends it again)."""
        try:
            (self.root / relative).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not remove %s, which was not indexed: %s", relative, exc)

    def difference_from_stored(self, instance: IncomingInstance) -> Resend | None:
        """None when a duplicate SOP instance has exactly the bytes of the stored copy, else how it differs: in its
        encoding only (`Resend.same_content`: a PACS re-routing the instance in another transfer syntax) or in its
        content (content_difference).

        Raises OSError when the stored copy cannot be read."""
        relative = self.db.instance_path(instance.sop_instance_uid) or self.relative_path(instance)
        path = self.root / relative
        received = memoryview(instance.encoded)
        with path.open("rb") as stored:
            size = os.fstat(stored.fileno()).st_size
            head = stored.read(1024)
            if size == len(received):
                stored.seek(0)
                offset = 0
                while offset < size:
                    chunk = stored.read(1 << 20)
                    if not chunk or received[offset:offset + len(chunk)] != chunk:
                        break
                    offset += len(chunk)
                else:
                    return None
            stored.seek(0)
            stored_bytes = stored.read()
        encoding = f"{len(received)} bytes, the stored copy {size} bytes"
        stored_syntax = _transfer_syntax(head)
        if stored_syntax and stored_syntax != instance.transfer_syntax:
            encoding += (f"; sent in transfer syntax {instance.transfer_syntax}, stored in transfer syntax "
                         f"{stored_syntax}")
        differences = content_differences(bytes(received), stored_bytes)
        content = differences.text()
        return Resend(content is None, encoding if content is None else f"{content}; {encoding}",
                      conflict=differences.conflict(), stored_study_uid=differences.stored_study_uid,
                      replaces_lossy=differences.replaces_lossy and differences.conflict() is None,
                      keeps_lossless=differences.keeps_lossless,
                      corrects_measurements=differences.corrects_measurements(),
                      differing=differences.attributes + (("pixel data",) if differences.pixels else ())
                      + (("unreadable",) if differences.unreadable else ()))

    def replace(self, instance: IncomingInstance, calling_host: str | None = None) -> StoreOutcome:
        """Store `instance` in place of the copy indexed under its SOP Instance UID (a lossless original for a lossy
        copy: Resend.replaces_lossy; a corrected height, weight or age: Resend.corrects_measurements) and re-open its study as a late image does (StateDB.replace_instance). The new
        file is written beside the stored one and renamed over it once durable: until then the stored copy stays
        whole. Raises OutOfSpace and StorageUnavailable before writing anything, OSError when it cannot be written,
        StudyPurging while retention purges the study."""
        relative = self.db.instance_path(instance.sop_instance_uid) or self.relative_path(instance)
        self._check_identity()
        refusal = self.no_room(len(instance.encoded))
        if refusal is not None:
            raise refusal
        write_durably(self.root / relative, instance.encoded, root=self.spool_dir)
        row = InstanceRow(
            sop_instance_uid=instance.sop_instance_uid, study_key=instance.study_key,
            study_instance_uid=instance.study_instance_uid, series_instance_uid=instance.series_instance_uid,
            sop_class_uid=instance.sop_class_uid, transfer_syntax=instance.transfer_syntax, modality=instance.modality,
            path=relative, size=len(instance.encoded), calling_ae=instance.calling_ae, received_at=time.time(),
            series_number=instance.series_number, slice_key=instance.slice_key, cardiac_images=instance.cardiac_images,
            frames=instance.frames, images_in_acquisition=instance.images_in_acquisition,
            series_continues=instance.series_continues,
        )
        return self.db.replace_instance(row, calling_host)

    def quarantine(self, instance: IncomingInstance) -> str:
        """Keep a received instance that cannot be stored under its SOP Instance UID (another instance holds that UID:
        Resend.conflict) under <storage_dir>/conflicts/<study hash>/<SOP UID>.<content hash>.dcm, durably, out of the
        index (never analysed). Retention deletes such a copy once it is retention.days old, and the emergency purge
        oldest first before any study (retention.purge_conflicts): the sender was refused and keeps its own. Returns
        the storage_dir-relative path.

        Raises OutOfSpace under node.min_free_space_mb, OSError when it cannot be written."""
        return self.quarantine_bytes(instance.encoded, instance.sop_instance_uid, instance.study_instance_uid)

    def quarantine_bytes(self, encoded: bytes | memoryview, sop_instance_uid: str,
                         study_instance_uid: str | None) -> str:
        """Spool.quarantine for a refused instance known only by its bytes as received (Part 10, with File Meta)
        and its SOP Instance UID: one whose data set is not parsed (a Deflated data set inflating past
        node.max_instance_mb, net.scp.StorageSCP). `study_instance_uid` None: not known, the folder is
        conflicts/<hash of "">. Same path scheme, retention, errors and return value as quarantine."""
        sop = check_uid(sop_instance_uid, "SOP Instance UID")
        digest = hashlib.sha256(bytes(encoded)).hexdigest()[:16]
        relative = f"{CONFLICTS_DIR}/{short_hash(study_instance_uid or '', 16)}/{sop}.{digest}.dcm"
        if (self.root / relative).exists():
            return relative
        refusal = self.no_room(len(encoded))
        if refusal is not None:
            raise refusal
        self._check_identity()
        (self.root / CONFLICTS_DIR).mkdir(exist_ok=True, mode=0o700)
        write_durably(self.root / relative, encoded, root=self.root / CONFLICTS_DIR)
        return relative

    def path_of(self, relative: str) -> Path:
        return self.root / relative

    def remove_temporaries(self) -> int:
        """Temporary files left by a crash mid-write were never acknowledged: remove them."""
        removed = 0
        for temporary in self.spool_dir.rglob(".*.tmp"):
            temporary.unlink(missing_ok=True)
            removed += 1
        return removed


@dataclass(frozen=True)
class Resend:
    """How a SOP instance sent again differs from the stored copy (Spool.difference_from_stored)."""

    same_content: bool  # every attribute and every pixel value the same: only the encoding differs
    detail: str  # what differs (content_difference) and the two encodings (sizes, transfer syntaxes)
    #: why the received copy is another instance, not a re-send (ContentDifferences.conflict: another StudyInstanceUID
    #: or SeriesInstanceUID, or other pixel values where both copies are lossless and decode), or None: a re-send
    conflict: str | None = None
    stored_study_uid: str | None = None  # StudyInstanceUID of the stored copy (for the message)
    #: the stored copy is lossy (_lossless) and the received one is lossless, both decoded to the same shape, in the
    #: same study and series: the received one replaces it (Spool.replace; lossy aging of an archive keeps the UIDs)
    replaces_lossy: bool = False
    #: the stored copy is lossless and the received one lossy: the stored one is kept (and no new UID is needed)
    keeps_lossless: bool = False
    #: only the patient's body measurements differ (CORRECTABLE_ATTRIBUTES: a height or weight entered after the scan
    #: and the study sent again under its UIDs), the pixel values the same: the received copy replaces the stored one
    corrects_measurements: bool = False
    #: what differs, by name: the attributes' keywords, and "pixel data" where the pixel values (or data) differ
    differing: tuple[str, ...] = ()


#: attributes that make an instance re-using a stored SOP Instance UID another instance, not a re-send of it. Not
#: PatientID: a PACS forwarding across domains routinely rewrites it (an issuer prefix, a merged record)
CONFLICT_ATTRIBUTES = ("StudyInstanceUID", "SeriesInstanceUID")
#: attributes a corrected re-send under the same SOP Instance UIDs may change and have applied (Spool.replace, the
#: study analysed again): the patient's body measurements and age, which the indexed values (BSA) and the reference
#: ranges are read from, and which a site enters or corrects after the scan. Not the patient's identity (a PACS that
#: rewrites PatientID or re-encodes names on forwarding would have every double-routed study analysed twice), the
#: geometry or the pixels.
CORRECTABLE_ATTRIBUTES = frozenset({"PatientWeight", "PatientSize", "PatientAge"})
#: the values a correction may set (review46 #4): PatientWeight (kg) and PatientSize (m) strictly inside these ranges
#: (those analysis.cine_metrics.body_surface_area_m2 takes as plausible: a layer below it, so written again here),
#: PatientAge a DICOM Age String (PS3.5 6.2, "045Y") of more than 0 and at most MAX_CORRECTED_AGE_YEARS. A re-send
#: that removes, empties or zeroes one, or writes centimetres or grams, corrects nothing: the stored copy is kept
CORRECTABLE_RANGES = {"PatientWeight": (1.0, 500.0), "PatientSize": (0.3, 2.8)}
MAX_CORRECTED_AGE_YEARS = 130.0
_AGE_STRING = re.compile(r"\s*(\d{1,3})([DWMY])\s*")
_AGE_UNIT_YEARS = {"D": 1.0 / 365.25, "W": 7.0 / 365.25, "M": 1.0 / 12.0, "Y": 1.0}


def valid_measurement(keyword: str, value) -> bool:
    """Whether `value`, the received copy's value of a CORRECTABLE_ATTRIBUTES `keyword` (None: absent), is one a
    corrected re-send may set (CORRECTABLE_RANGES, an Age String of more than 0 and at most
    MAX_CORRECTED_AGE_YEARS); False for an absent, empty, zero, negative, non-numeric or out-of-range value."""
    if value is None or str(value).strip() == "":
        return False
    if keyword == "PatientAge":
        match = _AGE_STRING.fullmatch(str(value).upper())
        return match is not None and 0 < int(match.group(1)) * _AGE_UNIT_YEARS[match.group(2)] \
            <= MAX_CORRECTED_AGE_YEARS
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    low, high = CORRECTABLE_RANGES[keyword]
    return math.isfinite(number) and low < number < high
#: encapsulated transfer syntaxes that keep every pixel value (PS3.5 A.4, 8.2): pixel values of two copies in these
#: (or native) syntaxes that differ are other images, not a lossy re-encoding of one
LOSSLESS_ENCAPSULATED = frozenset({
    pydicom.uid.JPEGLossless, pydicom.uid.JPEGLosslessSV1, pydicom.uid.JPEGLSLossless, pydicom.uid.JPEG2000Lossless,
    pydicom.uid.RLELossless, pydicom.uid.HTJ2KLossless, pydicom.uid.HTJ2KLosslessRPCL})
#: the folder under storage_dir that keeps instances refused for a SOP Instance UID conflict (Spool.quarantine) or
#: for a Deflated data set inflating past node.max_instance_mb (Spool.quarantine_bytes)
CONFLICTS_DIR = "conflicts"


@dataclass(frozen=True)
class ContentDifferences:
    """What differs between a received and a stored copy of one SOP Instance UID (content_differences)."""

    attributes: tuple[str, ...] = ()  # keywords (or tags) of the differing attributes
    pixels: str | None = None  # how the pixel data differ, or None
    unreadable: str | None = None  # why the two could not be compared
    stored_study_uid: str | None = None  # StudyInstanceUID of the stored copy
    #: both copies lossless (_lossless) and their pixel values decoded and compared: `pixels` then names other images
    pixels_compared: bool = False
    #: the received copy (`first`) is lossless, the stored one lossy, both decoded to arrays of one shape
    replaces_lossy: bool = False
    #: the received copy is lossy, the stored one lossless
    keeps_lossless: bool = False
    #: every CORRECTABLE_ATTRIBUTES attribute among `attributes` has a valid value in the received copy
    #: (valid_measurement): nothing removed, emptied or zeroed
    measurements_valid: bool = False

    def text(self) -> str | None:
        if self.unreadable:
            return self.unreadable
        found = []
        if self.attributes:
            names = self.attributes
            found.append(f"{len(names)} attribute(s) differ: {', '.join(names[:5])}" + (", ..." if len(names) > 5 else ""))
        if self.pixels:
            found.append(self.pixels)
        elif found:
            found.append("the pixel values are the same")
        return "; ".join(found) or None

    def conflict(self) -> str | None:
        """Why the received copy is another instance, not a re-send of the stored one: another StudyInstanceUID or
        SeriesInstanceUID (CONFLICT_ATTRIBUTES), or other pixel values where both copies are lossless and were decoded
        and compared. None for a re-send: other attributes only (a corrected name, a rewritten PatientID), a lossy
        or undecodable re-encoding, copies pydicom cannot read."""
        named = [name for name in CONFLICT_ATTRIBUTES if name in self.attributes]
        if named:
            return f"{', '.join(named)} {'differ' if len(named) > 1 else 'differs'} from the stored copy"
        return self.pixels if self.pixels and self.pixels_compared else None

    def corrects_measurements(self) -> bool:
        """Whether the received copy is the stored one with only CORRECTABLE_ATTRIBUTES changed, each added or given
        another valid value (valid_measurement), and the same pixel data: a corrected re-send to apply. A copy that
        removes, empties or zeroes one (an anonymising or older route forwarding the study without them) is a
        re-send with different content: the stored copy is kept."""
        return bool(self.attributes) and set(self.attributes) <= CORRECTABLE_ATTRIBUTES and not self.pixels \
            and not self.unreadable and self.measurements_valid


#: Pixel Data, Float Pixel Data, Double Float Pixel Data (7FE0,0010 / 0008 / 0009): compared as pixel values
PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)


def content_difference(first: bytes, second: bytes) -> str | None:
    """None when two DICOM files (preamble, File Meta Information, dataset) hold the same instance: every data
    element but the File Meta Information (group 0002) and group lengths (gggg,0000) has the same value, each compared
    in one encoding (Implicit VR Little Endian), whatever transfer syntax, VR (explicit or UN), byte order or padding
    it came in; and the pixel data hold the same values (the same bytes, else the same decoded array: a lossless
    re-compression is the same image, a lossy one is not). Else what differs: the attributes by keyword (or tag),
    at most five named, and / or the pixel data; said too where a file or its pixel data cannot be read."""
    return content_differences(first, second).text()


def content_differences(first: bytes, second: bytes) -> ContentDifferences:
    """content_difference in parts: the differing attributes, the pixel difference, and the StudyInstanceUID of
    `second` (the stored copy)."""
    try:
        datasets = [pydicom.dcmread(BytesIO(data), force=True) for data in (first, second)]
        tags = sorted({tag for ds in datasets for tag in ds.keys()
                       if tag.group != 0x0002 and tag.element != 0 and tag not in PIXEL_TAGS})
        differing = [tag for tag in tags
                     if _implicit_encoding(datasets[0], tag) != _implicit_encoding(datasets[1], tag)]
        stored_study = str(datasets[1].get("StudyInstanceUID", "") or "") or None
    except Exception as exc:  # a copy pydicom cannot decode: nothing says the two are the same
        return ContentDifferences(unreadable=f"the two copies could not be compared: {type(exc).__name__}: {exc}")
    names = tuple(pydicom.datadict.keyword_for_tag(tag) or str(tag) for tag in differing)
    pixels = _pixel_difference(*datasets)
    lossless = [_lossless(ds) for ds in datasets]
    compared = bool(pixels and pixels.startswith("the pixel values differ")) and all(lossless)
    decoded = bool(pixels and pixels.startswith("the pixel values differ") and "(shape" not in pixels)
    measurements_valid = all(valid_measurement(name, datasets[0].get(name)) for name in names
                             if name in CORRECTABLE_ATTRIBUTES)
    return ContentDifferences(names, pixels, None, stored_study, compared,
                              replaces_lossy=decoded and lossless[0] and not lossless[1],
                              keeps_lossless=bool(pixels) and lossless[1] and not lossless[0],
                              measurements_valid=measurements_valid)


def _lossless(dataset) -> bool:
    """Whether a copy's pixel values are as acquired: a native or lossless transfer syntax and no
    LossyImageCompression 01 (PS3.3 C.7.6.1.1.5)."""
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and pydicom.uid.UID(str(syntax)).is_encapsulated and syntax not in LOSSLESS_ENCAPSULATED:
        return False
    return str(dataset.get("LossyImageCompression", "") or "").strip() != "01"


def _implicit_encoding(dataset, tag) -> bytes | None:
    """The element's bytes in Implicit VR Little Endian (how a value reads independent of its VR), or None where the
    dataset lacks it."""
    if tag not in dataset:
        return None
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_data_element(buffer, dataset[tag], dataset.original_character_set)
    return buffer.getvalue()


def _pixel_difference(first, second) -> str | None:
    """None when the two datasets hold the same pixel values (the same pixel elements with the same bytes, else the
    same decoded arrays), else how they differ."""
    present = [[tag for tag in PIXEL_TAGS if tag in ds] for ds in (first, second)]
    if present[0] != present[1]:
        return "the pixel data differ (one copy has none, or another kind)"
    if not present[0] or all(first[tag].value == second[tag].value for tag in present[0]):
        return None
    try:
        arrays = [ds.pixel_array for ds in (first, second)]
    except Exception as exc:  # no decoder for a compressed transfer syntax, or a truncated element
        return f"the pixel data differ in bytes and could not be decoded to compare values: {exc}"
    if arrays[0].shape != arrays[1].shape or not np.array_equal(arrays[0], arrays[1]):
        changed = (int(np.count_nonzero(arrays[0] != arrays[1])) if arrays[0].shape == arrays[1].shape else None)
        return "the pixel values differ" + (f" ({changed} of {arrays[0].size})" if changed is not None else
                                           f" (shape {arrays[0].shape} vs {arrays[1].shape})")
    return None


def _mb(value: float) -> str:
    """Megabytes as the refusals print them: one decimal under 10 MB (an instance), whole above."""
    return f"{value:.1f}" if abs(value) < 10 else f"{value:.0f}"


def _transfer_syntax(head: bytes) -> str | None:
    """The Transfer Syntax UID (0002,0010) of a stored file's header (Explicit VR Little Endian), or None."""
    at = head.find(b"\x02\x00\x10\x00UI")
    if at < 0 or at + 8 > len(head):
        return None
    (length,) = struct.unpack("<H", head[at + 6:at + 8])
    return head[at + 8:at + 8 + length].rstrip(b"\x00 ").decode("ascii", "replace") or None
