"""Durable instance store: bytes fsynced to disk, then indexed, before an instance is acknowledged."""
from __future__ import annotations

import fcntl
import logging
import os
import shutil
import socket
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from dicomnode.state import InstanceRow, StateDB, StorageDirError, StoreOutcome, StudyPurging
from dicomnode.uids import MR_STORAGE_CLASSES, check_uid, short_hash

log = logging.getLogger("dicomnode.spool")


class OutOfSpace(Exception):
    """Free space is under the configured floor; nothing was written.

    `str()` is the whole explanation (for the log); `comment` is its short form for a DIMSE Error Comment (64 chars).
    """

    def __init__(self, message: str, comment: str | None = None):
        super().__init__(message)
        self.comment = (comment or message)[:64]


class StorageInUse(StorageDirError):
    """Another node process holds node.storage_dir (its `node.lock`); this one must not touch its state."""


#: the lock file in node.storage_dir: an exclusive flock by a single-node `serve`, shared by scale-out role processes
LOCK_FILE = "node.lock"


def fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes | memoryview, mode: int = 0o600) -> None:
    """Write via a temporary file, fsync it, rename into place, fsync the folder: all or nothing.

    A folder made for the file is made durable in its parent too (fsync of the parent), so that after a power
    loss the file is not in a folder that was never recorded. Raises OSError (e.g. ENOSPC) with nothing in place.
    """
    if not path.parent.is_dir():
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


def free_space_mb(path: Path) -> float:
    """Free space (MB) of the file system holding `path`."""
    return shutil.disk_usage(path).free / (1024 * 1024)


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

    def acquire(self, exclusive: bool, description: str = "dicomnode serve") -> None:
        """Take the lock (no waiting); raises StorageInUse naming the holder when another process has it."""
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
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}: {description}, since "
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

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None


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


class Spool:
    """Files under <storage_dir>/spool/<study hash>/<series hash>/<SOP UID>.dcm plus the SQLite index."""

    def __init__(self, storage_dir: Path, db: StateDB, min_free_space_mb: int = 0):
        self.root = Path(storage_dir)
        self.spool_dir = self.root / "spool"
        self.spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.db = db
        self.min_free_space_mb = min_free_space_mb

    def free_space_mb(self) -> float:
        return free_space_mb(self.spool_dir)

    def has_room_for(self, size: int) -> bool:
        return self.free_space_mb() - size / (1024 * 1024) >= self.min_free_space_mb

    def no_room(self, size: int, what: str = "the instance") -> OutOfSpace | None:
        """None when `size` bytes fit above node.min_free_space_mb, else the OutOfSpace to raise (saying so)."""
        free = self.free_space_mb()
        needed = size / (1024 * 1024)
        if free - needed >= self.min_free_space_mb:
            return None
        return OutOfSpace(f"free space {_mb(free)} MB minus {what} ({_mb(needed)} MB) would be under the floor of "
                          f"{self.min_free_space_mb} MB (node.min_free_space_mb): {what} does not fit",
                          f"free {_mb(free)} MB - {_mb(needed)} MB instance is under the floor of "
                          f"{self.min_free_space_mb} MB")

    def relative_path(self, instance: IncomingInstance) -> str:
        sop = check_uid(instance.sop_instance_uid, "SOP Instance UID")
        return f"spool/{short_hash(instance.study_key, 16)}/{short_hash(instance.series_instance_uid, 16)}/{sop}.dcm"

    def store(self, instance: IncomingInstance, calling_host: str | None = None) -> StoreOutcome:
        """Make the instance durable and indexed. Raises OutOfSpace before writing anything."""
        for what, value in (
            ("SOP Instance UID", instance.sop_instance_uid),
            ("Study Instance UID", instance.study_instance_uid),
            ("Series Instance UID", instance.series_instance_uid),
            ("SOP Class UID", instance.sop_class_uid),
        ):
            check_uid(value, what)
        relative = self.relative_path(instance)
        # a stored instance has its file: without one (the usual case) there is nothing to ask the index
        if (self.root / relative).exists() and self.db.has_instance(instance.sop_instance_uid):
            study = self.db.study(instance.study_key)
            return StoreOutcome(False, instance.study_key, study["state"] if study else None, study["generation"] if study else 0)
        size = len(instance.encoded)
        refusal = self.no_room(size)
        if refusal is not None:
            raise refusal
        write_durably(self.root / relative, instance.encoded)
        row = InstanceRow(
            sop_instance_uid=instance.sop_instance_uid, study_key=instance.study_key,
            study_instance_uid=instance.study_instance_uid, series_instance_uid=instance.series_instance_uid,
            sop_class_uid=instance.sop_class_uid, transfer_syntax=instance.transfer_syntax, modality=instance.modality,
            path=relative, size=size, calling_ae=instance.calling_ae, received_at=time.time(),
            series_number=instance.series_number, slice_key=instance.slice_key, cardiac_images=instance.cardiac_images,
            frames=instance.frames, images_in_acquisition=instance.images_in_acquisition,
        )
        # only an image the analysis reads re-opens a study past receiving (cmr.grouping reads MR images only)
        try:
            outcome = self.db.add_instance(row, calling_host, reopens=instance.sop_class_uid in MR_STORAGE_CLASSES)
        except StudyPurging:  # refused (0xA700): the file just written would stay behind, indexed by nothing
            (self.root / relative).unlink(missing_ok=True)
            raise
        if not outcome.stored:  # the same SOP Instance UID indexed under another study or series: keep that one
            indexed = self.db.instance_path(instance.sop_instance_uid)
            if indexed is not None and indexed != relative:
                (self.root / relative).unlink(missing_ok=True)
        return outcome

    def difference_from_stored(self, instance: IncomingInstance) -> str | None:
        """None when a duplicate SOP instance has exactly the bytes of the stored copy, else how it differs.

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
        difference = f"{len(received)} bytes, the stored copy {size} bytes"
        stored_syntax = _transfer_syntax(head)
        if stored_syntax and stored_syntax != instance.transfer_syntax:
            difference += (f"; sent in transfer syntax {instance.transfer_syntax}, stored in {stored_syntax}: "
                           f"possibly the same image re-encoded")
        return difference

    def path_of(self, relative: str) -> Path:
        return self.root / relative

    def remove_temporaries(self) -> int:
        """Temporary files left by a crash mid-write were never acknowledged: remove them."""
        removed = 0
        for temporary in self.spool_dir.rglob(".*.tmp"):
            temporary.unlink(missing_ok=True)
            removed += 1
        return removed


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
