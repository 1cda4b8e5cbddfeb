"""Durable instance store: bytes fsynced to disk, then indexed, before an instance is acknowledged."""
from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from dicomnode.state import InstanceRow, StateDB, StoreOutcome
from dicomnode.uids import MR_STORAGE_CLASSES, check_uid, short_hash

log = logging.getLogger("dicomnode.spool")


class OutOfSpace(Exception):
    """Free space is under the configured floor; nothing was written."""


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
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    fsync_directory(path.parent)


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
        return shutil.disk_usage(self.spool_dir).free / (1024 * 1024)

    def has_room_for(self, size: int) -> bool:
        return self.free_space_mb() - size / (1024 * 1024) >= self.min_free_space_mb

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
        if not self.has_room_for(size):
            raise OutOfSpace(f"free space {self.free_space_mb():.0f} MB is under the floor of {self.min_free_space_mb} MB")
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
        outcome = self.db.add_instance(row, calling_host, reopens=instance.sop_class_uid in MR_STORAGE_CLASSES)
        if not outcome.stored:  # the same SOP Instance UID indexed under another study or series: keep that one
            indexed = self.db.instance_path(instance.sop_instance_uid)
            if indexed is not None and indexed != relative:
                (self.root / relative).unlink(missing_ok=True)
        return outcome

    def path_of(self, relative: str) -> Path:
        return self.root / relative

    def remove_temporaries(self) -> int:
        """Temporary files left by a crash mid-write were never acknowledged: remove them."""
        removed = 0
        for temporary in self.spool_dir.rglob(".*.tmp"):
            temporary.unlink(missing_ok=True)
            removed += 1
        return removed
