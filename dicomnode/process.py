"""`dicomnode process`: analyse every study in a folder of DICOM files, no network; write .dcm + summary.json."""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import stat
import tempfile
from collections import Counter
from pathlib import Path

from dicomnode import strict_json
from dicomnode.analysis.run import Analyser
from dicomnode.cmr.grouping import UNREADABLE_NOTE, refused_by_os, unreadable_file
from dicomnode.cmr.study import CMRStudy, load_studies
from dicomnode.config import Config
from dicomnode.inflate import file_inflates_over
from dicomnode.net.filemeta import NotBareDataset, read_bare_dataset
from dicomnode.net.scp import max_instance_bytes
from dicomnode.observe import patient_values, study_context
from dicomnode.spool import fsync_directory, write_durably
from dicomnode.study_path import StudyAnalyser, declined_entry, run_study
from dicomnode.uids import check_uid, short_hash

log = logging.getLogger("dicomnode.process")


#: the list of the result files a run writes, each path added (and made durable) before its file is written; removed
#: once summary.json is in place. A run that was stopped (Ctrl-C, SIGTERM, kill -9, power loss) leaves it, and the
#: next run into the folder removes what it lists. Hidden: never read as input where OUT_DIR is INPUT_DIR.
PARTIAL_MANIFEST = ".dicomnode-process-partial"

#: what an archive's name ends with (lower case), as an admin would name it
ARCHIVE_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tar.zst", ".tgz", ".tbz2", ".txz", ".zip", ".tar", ".7z",
                    ".rar", ".gz", ".bz2", ".xz", ".zst")
#: (offset, magic bytes, kind) of archives whatever their name
ARCHIVE_MAGIC = ((0, b"PK\x03\x04", "zip"), (0, b"PK\x05\x06", "zip"), (0, b"7z\xbc\xaf\x27\x1c", "7z"),
                 (0, b"Rar!\x1a\x07", "rar"), (0, b"\x1f\x8b", "gzip"), (0, b"BZh", "bzip2"),
                 (0, b"\xfd7zXZ\x00", "xz"), (0, b"\x28\xb5\x2f\xfd", "zstd"), (257, b"ustar", "tar"))


#: the end of the reason summary.json's `unreadable_files` gives a folder this user may not list (as UNREADABLE_NOTE
#: ends a file's)
UNREADABLE_FOLDER_NOTE = "the folder is there, this process may not list it: none of its files was read"


def unreadable_folder(path, error: OSError) -> dict:
    """The `unreadable_files` entry of a folder whose listing the operating system refused (`error`, e.g. a
    PermissionError for a folder of mode 000 or another user's 0700 one): named as a file the node may not read is
    (cmr.grouping.unreadable_file), none of its files known."""
    return {"path": str(path), "reason": f"unreadable ({type(error).__name__}: {error.strerror or error}): "
                                         f"{UNREADABLE_FOLDER_NOTE}"}


def not_a_regular_file(path: Path) -> str | None:
    """Why `path` is not read as an input file (a FIFO, a socket, a device, a broken or looping link, one the
    operating system will not stat for this user: its folder may not be searched), else None.
    Only stat()s it: opening a FIFO would wait for a writer for ever."""
    try:
        mode = os.stat(path).st_mode  # follows links: a link to a regular file is read
    except FileNotFoundError:
        if os.path.islink(path):
            return f"a broken symbolic link (its target {os.readlink(path)} does not exist)"
        return "gone while the folder was read"
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "a symbolic link loop (the link leads back to itself)"
        if refused_by_os(error):  # named as load_studies names a file it may not read (its study is incomplete)
            return unreadable_file(path, error).reason.removeprefix(f"{path}: ")
        return f"cannot be read ({error.strerror or error})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISFIFO(mode):
        kind = "a named pipe (FIFO)"
    elif stat.S_ISSOCK(mode):
        kind = "a socket"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = "a device"
    elif stat.S_ISDIR(mode):
        return "a folder that could not be searched"
    else:
        kind = "not a regular file"
    return f"{kind}, not a regular file: not read"


def _filesystem_lost_found(folder, input_dir: Path) -> bool:
    """Whether `folder` is the `lost+found` that ext2/3/4 (e2fsck) keep at the root of every file system, root's
    and mode 0700: below `input_dir` (INPUT_DIR itself is never passed over), directly in a mount point."""
    path = Path(folder)
    return (path.name == "lost+found" and os.path.realpath(path) != os.path.realpath(input_dir)
            and os.path.ismount(path.parent))


def find_files(input_dir: Path, skipped: list[dict] | None = None) -> list[Path]:
    """Every regular file below `input_dir` (recursively, following links once), hidden files and DICOMDIR excluded.
    Anything else found there (a FIFO, a socket, a device, a broken or looping link, a file or a folder, `input_dir`
    too, that the operating system will not let this user read or list) is not returned: given `skipped`, each is
    appended there as {"path", "reason"} (summary.json's `unreadable_files`; the reason of one refused ends with
    cmr.grouping.UNREADABLE_NOTE, of a folder with UNREADABLE_FOLDER_NOTE). A folder reached again through a link
    (a link loop) is searched once. A file system's own `lost+found` at a mount point (INPUT_DIR the root of a mounted
    disk) that this user may not list is no study folder: not searched, not named (DEBUG log only)."""
    found = []
    visited: set[str] = set()

    def refused(error: OSError) -> None:  # os.walk could not list a folder
        if not refused_by_os(error):  # gone while the folder was read
            return
        if _filesystem_lost_found(error.filename, input_dir):
            log.debug("%s cannot be listed by this process (%s): a file system's own recovery folder, not a study "
                      "folder: not searched", error.filename, error.strerror or error)
            return
        log.warning("%s cannot be listed by this process (%s: %s): its files are left out of the analysis",
                    error.filename, type(error).__name__, error.strerror or error)
        if skipped is not None:
            skipped.append(unreadable_folder(error.filename, error))

    for root, dirs, files in os.walk(input_dir, onerror=refused, followlinks=True):
        real = os.path.realpath(root)
        if real in visited:  # a link cycle, or a folder linked twice
            dirs[:] = []
            continue
        visited.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            path = Path(root) / name
            problem = not_a_regular_file(path)
            if problem is None:
                found.append(path)
            elif skipped is not None:
                skipped.append({"path": str(path), "reason": problem})
    return found


def part10_copies(files: list[Path], staging: Path, max_inflated_bytes: int = 0) -> list[Path]:
    """`files` with each data set stored without File Meta Information (no preamble / 'DICM', PS3.10 7.1: older
    PACS exports, `dcmconv -F`) replaced by a Part 10 copy in `staging` (`net.filemeta.read_bare_dataset`: the
    transfer syntax inferred, Implicit VR Little Endian the usual one), named in one log line; a file that is no
    such data set stays as it is, for load_studies to decline with the reason (not a DICOM file), and so does one
    whose group 0002 names the Deflated syntax and which inflates past `max_inflated_bytes` (> 0; load_studies
    declines it, read_header)."""
    result, inferred = [], Counter()
    for index, path in enumerate(files):
        try:
            with open(path, "rb") as file:
                part10 = file.read(132)[128:] == b"DICM"
        except OSError:
            part10 = True  # load_studies says why it cannot be read
        if part10:
            result.append(path)
            continue
        try:
            if max_inflated_bytes and file_inflates_over(path, max_inflated_bytes) is not None:
                result.append(path)
                continue
            dataset = read_bare_dataset(path)
        except (NotBareDataset, OSError):
            result.append(path)
            continue
        copy = staging / f"{index:06d}_{path.name}"
        dataset.save_as(copy, enforce_file_format=True)
        inferred[dataset.file_meta.TransferSyntaxUID.name] += 1
        result.append(copy)
    if inferred:
        log.warning("%d file(s) hold a data set without DICOM File Meta Information (no 'DICM' prefix after the "
                    "128-byte preamble, PS3.10 7.1): read with the transfer syntax inferred (%s)",
                    sum(inferred.values()), ", ".join(f"{name}: {n}" for name, n in sorted(inferred.items())))
    return result


def archive_kind(path: Path) -> str | None:
    """"zip", ".tar.gz" ... when `path` is an archive (by its name, or its first bytes), else None."""
    lower = path.name.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lower.endswith(suffix):
            return suffix
    try:
        with open(path, "rb") as file:
            head = file.read(262)
    except OSError:
        return None
    for offset, magic, kind in ARCHIVE_MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return kind
    return None


def _name_archives(unreadable: list[dict]) -> None:
    """An archive among the files that are not DICOM is named as one, with what to do (unpack it first)."""
    for entry in unreadable:
        if entry["reason"].startswith("not a DICOM file"):
            kind = archive_kind(Path(entry["path"]))
            if kind is not None:
                entry["reason"] = (f"an archive ({kind}), not a DICOM file: unpack it first, then give the unpacked "
                                   "folder as INPUT_DIR")


#: the mode of every file `process` writes (result objects, summary.json, its manifest): patient data, owner only,
#: as the node's spool; folders it creates are 0700 (an existing --out folder keeps its own mode)
OUTPUT_FILE_MODE = 0o600


class OutputFolderError(Exception):
    """The --out folder cannot take this run's results; the message says why and what to do."""


class InputFolderError(Exception):
    """INPUT_DIR cannot be reached by this user; the message says why and what to do."""


def check_writable(out_dir: Path) -> None:
    """Create out_dir when missing and prove a file can be written there, before any analysis runs.
    Raises OutputFolderError naming the folder and the system's reason (read-only, permission, no such parent)."""
    try:
        out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".dicomnode-probe-"):
            pass
    except OSError as error:
        raise OutputFolderError(f"--out {out_dir}: cannot write results there ({error.strerror or error}); "
                                "choose a folder this user can write") from error


def _listed_in_summary(out_dir: Path, summary_path: Path) -> list[str]:
    try:
        previous = json.loads(summary_path.read_text(encoding="utf-8"))
        return [str(output) for study in previous.get("studies", []) for output in study.get("outputs", [])]
    except (OSError, ValueError, AttributeError, TypeError) as error:
        raise OutputFolderError(f"--out {out_dir} holds a summary.json that is not a previous run's ({error}); "
                                "choose another folder or remove it") from error


def _listed_in_manifest(manifest_path: Path) -> list[str]:
    text = manifest_path.read_text(encoding="utf-8", errors="replace")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _inside(out_dir: Path, listed: list[str], what: str) -> list[Path]:
    """The files `listed` names, resolved; raises OutputFolderError when one is outside out_dir."""
    root = out_dir.resolve()
    paths = [(out_dir / output).resolve() for output in listed]
    outside = [str(p) for p in paths if root not in p.parents]
    if outside:
        raise OutputFolderError(f"--out {out_dir}: its {what} lists files outside it ({outside[0]}); "
                                "choose another folder or remove it")
    return paths


def _remove(out_dir: Path, paths: list[Path]) -> int:
    """Remove `paths` (and what write_durably left of them when killed: its hidden temporary files), then their
    folders left empty; returns how many result files were removed."""
    root = out_dir.resolve()
    removed = 0
    for path in paths:
        if path.is_file():
            path.unlink()
            removed += 1
        if path.parent.is_dir():
            for temporary in path.parent.glob(f".{path.name}.*.tmp"):
                temporary.unlink(missing_ok=True)
        if path.parent != root and path.parent.is_dir() and not any(path.parent.iterdir()):
            path.parent.rmdir()
    return removed


def clear_previous_run(out_dir: Path) -> int:
    """Remove the result files a previous run listed in out_dir/summary.json (and its summary), and those an
    interrupted run listed in its PARTIAL_MANIFEST (and the manifest), so that the folder holds one run's results
    only; files the node did not write are left alone. Returns how many were removed.
    Raises OutputFolderError when summary.json cannot be read, or either lists a path outside out_dir."""
    summary_path, manifest_path = out_dir / "summary.json", out_dir / PARTIAL_MANIFEST
    removed = 0
    if manifest_path.is_file():
        partial = _inside(out_dir, _listed_in_manifest(manifest_path), PARTIAL_MANIFEST)
        interrupted = _remove(out_dir, partial)
        if interrupted:
            log.info("removed %d result file(s) of an earlier run that was stopped before it finished (listed in "
                     "%s)", interrupted, manifest_path)
        removed += interrupted
    if summary_path.is_file():
        removed += _remove(out_dir, _inside(out_dir, _listed_in_summary(out_dir, summary_path), "summary.json"))
        summary_path.unlink()
    manifest_path.unlink(missing_ok=True)
    return removed


class _Manifest:
    """This run's PARTIAL_MANIFEST: each result path is added, durably, before its file is written (name_result)."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.path = out_dir / PARTIAL_MANIFEST
        self.listed: list[str] = []
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, OUTPUT_FILE_MODE)
        self._append("# dicomnode process: result files of a run in progress, or stopped before it finished; "
                     "the next run into this folder removes them\n")
        fsync_directory(out_dir)

    def _append(self, line: str) -> None:
        os.write(self._fd, line.encode("utf-8"))
        os.fsync(self._fd)

    def name_result(self, dataset) -> Path:
        relative = _result_name(dataset)
        self._append(f"{relative}\n")
        self.listed.append(str(relative))
        return relative

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def commit(self) -> None:
        """summary.json is in place: the results are the run's, the manifest goes."""
        self.close()
        self.path.unlink(missing_ok=True)
        fsync_directory(self.out_dir)

    def discard(self) -> int:
        """The run stops before its summary.json: remove every result file it listed (and a summary.json it may
        have just written), then the manifest; returns how many files were removed."""
        self.close()
        listed = dict.fromkeys(self.listed + (_listed_in_manifest(self.path) if self.path.is_file() else []))
        removed = _remove(self.out_dir, [(self.out_dir / relative).resolve() for relative in listed])
        (self.out_dir / "summary.json").unlink(missing_ok=True)  # clear_previous_run removed any earlier one
        self.path.unlink(missing_ok=True)
        return removed


def process_folder(input_dir: Path, out_dir: Path, config: Config, analyser: StudyAnalyser | None = None,
                   failures: list[str] | None = None) -> dict:
    """Analyse each study found through the study path (as `serve` does, without a network); returns the
    summary.json content (also written to out_dir/summary.json). A previous run's results in out_dir are replaced
    (clear_previous_run). `failures`, when given, receives one line per study the node failed to analyse (a model
    that did not load, a pipeline or the study path that raised), as opposed to a study cleanly declined, and one per
    file or folder the operating system would not let this run read or list (a permission, an I/O error; the rest
    is analysed without it). Raises FileNotFoundError without `input_dir`, InputFolderError when
    this user may not reach `input_dir` (a folder above it it may not search), OutputFolderError when out_dir is a
    file, cannot be written or holds something that is not a previous run's summary.json.

    The output is all or nothing: every result path is listed in out_dir/PARTIAL_MANIFEST before its file is
    written, and the list goes once summary.json is in place. A run that raises (KeyboardInterrupt for Ctrl-C or,
    with the CLI's handler, SIGTERM) removes the results it wrote, and says how many in the exception's
    `removed_results`; one killed outright leaves the list, and the next run into out_dir removes what it names."""
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    try:
        input_mode = os.stat(input_dir).st_mode
    except FileNotFoundError:
        input_mode = None
    except OSError as error:  # a folder above it this user may not search
        raise InputFolderError(f"input folder {input_dir} cannot be reached by this user ({type(error).__name__}: "
                               f"{error.strerror or error}): run as a user who may read it, or give it and the "
                               "folders above it read and search permission") from error
    if input_mode is None or not stat.S_ISDIR(input_mode):
        raise FileNotFoundError(f"input folder {input_dir} does not exist")
    try:
        out_is_file = not stat.S_ISDIR(os.stat(out_dir).st_mode)
    except OSError:  # not there yet, or not reachable: check_writable says which
        out_is_file = False
    if out_is_file:
        raise OutputFolderError(f"--out {out_dir} is a file, not a folder: give a folder for the results")
    check_writable(out_dir)
    removed = clear_previous_run(out_dir)
    if removed:
        log.info("replaced the previous run's %d result file(s) in %s", removed, out_dir)
    manifest = _Manifest(out_dir)
    staging = Path(tempfile.mkdtemp(prefix="dicomnode-part10-"))
    try:
        analyser = analyser or Analyser(config)
        unreadable: list[dict] = []
        files = find_files(input_dir, skipped=unreadable)
        log.info("found %d file(s) under %s", len(files), input_dir)
        if not files and not unreadable:
            log.warning("no file under %s: nothing to analyse (summary.json lists no study)", input_dir)
        inflated_bound = max_instance_bytes(config.node.max_instance_mb)
        files = part10_copies(files, staging, inflated_bound)
        studies = load_studies(files, unreadable_files=unreadable, max_inflated_bytes=inflated_bound)
        _name_archives(unreadable)
        failures = failures if failures is not None else []
        # a file the operating system would not let this run read (a permission): its study is analysed without it,
        # its images counted as missing, so the run is not "all good" (exit 1)
        failures.extend(f"{e['path']}: {e['reason']}: its study was analysed without it" for e in unreadable
                        if e["reason"].endswith(UNREADABLE_NOTE))
        failures.extend(f"{e['path']}: {e['reason']}: the studies found were analysed without its files"
                        for e in unreadable if e["reason"].endswith(UNREADABLE_FOLDER_NOTE))
        entries = []
        for study in studies:
            with study_context(short_hash(study.study_instance_uid or "-")):  # lines carry the study, as serve's do
                mark = len(manifest.listed)
                entries.append(_process_study(study, out_dir, config, analyser, failures, manifest.name_result))
            # a study that failed part-way through writing lists none of its results: none may stay unlisted
            unlisted = set(manifest.listed[mark:]) - set(entries[-1].get("outputs", []))
            _remove(out_dir, [(out_dir / relative).resolve() for relative in sorted(unlisted)])
        summary = {"studies": entries, "unreadable_files": unreadable}
        write_durably(out_dir / "summary.json", strict_json.dumps(summary, "summary.json", indent=2).encode("utf-8"),
                      mode=OUTPUT_FILE_MODE)
    except BaseException as error:  # Ctrl-C, SIGTERM (cli), a full disk ...: nothing of this run stays
        error.removed_results = manifest.discard()
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    manifest.commit()
    return summary


def _process_study(study: CMRStudy, out_dir: Path, config: Config, analyser: StudyAnalyser,
                   failures: list[str], name_result=None) -> dict:
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
        run = run_study(study, config, analyser, None, out_dir, name_result or _result_name,
                        file_mode=OUTPUT_FILE_MODE)
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
