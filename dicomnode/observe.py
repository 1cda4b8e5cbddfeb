"""Logging set-up: plain or JSON lines, patient data kept out unless explicitly switched on."""
from __future__ import annotations

import contextvars
import json
import logging
import logging.handlers
import os
import re
import sys
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path

from pydicom._uid_dict import UID_dictionary
from pydicom.multival import MultiValue
from pydicom.uid import UID

from dicomnode.config import LoggingConfig
from dicomnode.uids import check_uid, short_hash


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("study", "stage"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info or record.exc_text:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry)


class PlainFormatter(logging.Formatter):
    """One line per record; the study correlation id, when there is one, at the end as `[study=...]`."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        study = getattr(record, "study", None)
        if study:
            first, newline, rest = line.partition("\n")
            line = f"{first} [study={study}]{newline}{rest}"
        return line


class RepeatedWarningFilter(logging.Filter):
    """Library warnings (logger `py.warnings`) once per kind and study: pydicom warns about an invalid value (e.g.
    "Invalid value for VR UI") for every image of a study from a scanner that writes it so, hundreds of lines that
    bury the node's own. The kind is the message without its quoted values; the study is the record's `[study=...]`
    (or none: the receive path before the study is known). A repeat is dropped, unless the node logs at DEBUG;
    the same kind is logged again after `period_seconds`.
    """

    def __init__(self, period_seconds: float = 3600.0, capacity: int = 2000):
        super().__init__()
        self.period_seconds = period_seconds
        self.capacity = capacity
        self._seen: OrderedDict[tuple, float] = OrderedDict()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        first, newline, rest = message.partition("\n")
        kind = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", first)
        key = (getattr(record, "study", None) or current_study.get(), kind)
        now = time.monotonic()
        with self._lock:
            last = self._seen.get(key)
            if last is not None and now - last < self.period_seconds:
                return logging.getLogger().isEnabledFor(logging.DEBUG)
            self._seen[key] = now
            self._seen.move_to_end(key)
            while len(self._seen) > self.capacity:
                self._seen.popitem(last=False)
        record.msg = f"{first} (repeats of this warning for this study are not logged for " \
                     f"{self.period_seconds / 60:.0f} min){newline}{rest}"
        record.args = None
        return True


#: the hashed study id of the work this thread (or task) is doing: every log record carries it as `study`
current_study: contextvars.ContextVar[str | None] = contextvars.ContextVar("dicomnode_study", default=None)


@contextmanager
def study_context(study_id: str | None):
    """Within the block, log records carry `study=study_id` (a short hash, never the UID itself)."""
    token = current_study.set(study_id)
    try:
        yield
    finally:
        current_study.reset(token)


class StudyContextFilter(logging.Filter):
    """Adds the correlation id `study` from the context unless the call gave one with `extra=`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "study"):
            study = current_study.get()
            if study is not None:
                record.study = study
        return True


#: how the parts of a whole name are written apart: "Short^Ann", "Short Ann", "Short, Ann", "SHORT_ANN"
_NAME_GAP = r"[\s^,_]+"
#: a traceback line that is code, not data: a frame's header (its source line follows, indented)
_FRAME_LINE = re.compile(r'  File ".*", line \d+')


def _name_forms(value: str) -> tuple[list[str], list[str]]:
    """A PatientName's whole-name regexes (each name group family name first, and given name first) and its single
    components."""
    wholes: list[str] = []
    components: list[str] = []
    for group in re.split(r"[\\=]", value):
        parts = [part.strip() for part in group.split("^")]
        components.extend(part for part in parts if part)
        family, given, middle = (parts + ["", ""])[:3]
        for order in ((family, given, middle), (given, middle, family), (family, given), (given, family)):
            named = [part for part in order if part]
            if len(named) >= 2:
                wholes.append(_NAME_GAP.join(map(re.escape, named)))
    return wholes, components


def _study_of(dataset) -> str | None:
    """The log id (`[study=…]`) of a dataset's study, or None when its Study Instance UID is unusable."""
    try:
        return short_hash(check_uid(dataset.get("StudyInstanceUID")))
    except Exception:  # missing, malformed, or not decodable
        return None


def _compile(sources) -> re.Pattern:
    alternatives = sorted(sources, key=len, reverse=True)  # at one position the longer value wins
    return re.compile(r"(?<![0-9A-Za-z])(?:" + "|".join(alternatives) + r")(?![0-9A-Za-z])", re.IGNORECASE)


class PatientValues:
    """The patient names, IDs and birth dates the node has seen lately (bounded), as regexes that redact them.

    Whole values (an ID, a birth date, a name as a whole in its written forms: "Short^Ann", "Short Ann", "Ann Short",
    "Short, Ann") are redacted wherever they occur. A value that is one word of letters (a name component such as
    "Short", a one-component name) may equally be a word of the node's own messages ("short-axis", "cine"), so it
    is redacted only in the log lines of its own study (`[study=…]`), and there only in what a line interpolates.
    """

    MIN_LENGTH = 3  # shorter values (a PatientID "1") would redact half of every message

    def __init__(self, capacity: int = 2000):
        self.capacity = capacity
        self._wholes: OrderedDict[str, None] = OrderedDict()  # regex sources
        self._words: OrderedDict[str, set[str]] = OrderedDict()  # study log id -> its patients' single words
        self._lock = threading.Lock()
        self._pattern: re.Pattern | None = None
        self._study_patterns: dict[str, re.Pattern] = {}
        self._last_remembered: tuple | None = None

    def remember(self, dataset) -> None:
        """Record the identifying values of a received dataset (PatientName with its components, ID, birth date)."""
        found = {}
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "PatientAddress"):
            try:
                value = dataset.get(keyword)
            except Exception:
                continue
            if value not in (None, ""):
                found[keyword] = value
        study = _study_of(dataset)
        seen = (study, repr(found))
        if seen == self._last_remembered:  # the next instance of the same study: nothing new
            return
        forms: list[str] = []
        wholes: list[str] = []
        words: list[str] = []
        for keyword, value in found.items():
            for text in (str(item).strip() for item in (value if isinstance(value, MultiValue) else [value])):
                values = [text]
                if keyword == "PatientName":
                    name_forms, values = _name_forms(text)
                    forms.extend(name_forms)
                    values.append(text)
                for item in values:
                    (words if item.isalpha() else wholes).append(item)
        self._add_sources(forms)
        self.add(*wholes)
        if study is not None:
            self.add_words(study, *words)
        self._last_remembered = seen

    def add(self, *values: str) -> None:
        """Values to redact wherever they occur."""
        self._add_sources(re.escape(value) for value in (str(v).strip() for v in values)
                          if len(value) >= self.MIN_LENGTH)

    def add_words(self, study: str, *words: str) -> None:
        """Words of the patient of `study` (its log id) to redact in what that study's log lines interpolate."""
        words = {word.strip().lower() for word in words if len(word.strip()) >= self.MIN_LENGTH}
        with self._lock:
            known = self._words.setdefault(study, set())
            self._words.move_to_end(study)
            if not words <= known:
                known |= words
                self._study_patterns.pop(study, None)
            while len(self._words) > self.capacity:
                dropped, _ = self._words.popitem(last=False)
                self._study_patterns.pop(dropped, None)

    def _add_sources(self, sources) -> None:
        with self._lock:
            for source in sources:
                if source in self._wholes:
                    self._wholes.move_to_end(source)
                    continue
                self._wholes[source] = None
                self._pattern = None
                while len(self._wholes) > self.capacity:
                    self._wholes.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._wholes.clear()
            self._words.clear()
            self._pattern = None
            self._study_patterns.clear()
            self._last_remembered = None

    def has_words(self, study: str | None) -> bool:
        """Whether `study` (a log id) has patient words to redact."""
        with self._lock:
            return bool(study is not None and self._words.get(study))

    def _patterns(self, study: str | None) -> list[re.Pattern]:
        with self._lock:
            if self._pattern is None and self._wholes:
                self._pattern = _compile(self._wholes)
            patterns = [self._pattern] if self._wholes else []
            words = self._words.get(study) if study is not None else None
            if words:
                if study not in self._study_patterns:
                    self._study_patterns[study] = _compile(map(re.escape, words))
                patterns.append(self._study_patterns[study])
        return patterns

    def redact(self, text: str, study: str | None = None) -> str:
        """`text` with every whole value, and the words of `study`'s patient when given, replaced by [redacted]."""
        for pattern in self._patterns(study):
            text = pattern.sub("[redacted]", text)
        return text

    def redact_traceback(self, text: str, study: str | None = None) -> str:
        """A traceback redacted as `redact` does, except that its code (frame headers and source lines) keeps the
        words of `study`'s patient: they are the node's own code there."""
        lines, in_frame = [], False
        for line in text.split("\n"):
            in_frame = bool(_FRAME_LINE.match(line)) or (in_frame and line.startswith("    "))
            lines.append(self.redact(line, None if in_frame else study))
        return "\n".join(lines)


#: filled by the receive path (`remember`), read by `PatientDataFilter`
patient_values = PatientValues()


class PatientDataFilter(logging.Filter):
    """Replaces known patient values in a record (message and traceback) by [redacted], as PatientValues says where.

    The node's own message templates are code, never data: in a record of a `dicomnode` logger a study's patient
    words are redacted in the arguments only; another library's message is data throughout.
    """

    def __init__(self, values: PatientValues = patient_values):
        super().__init__()
        self.values = values

    def filter(self, record: logging.LogRecord) -> bool:
        study = getattr(record, "study", None) or current_study.get()
        try:
            message = record.getMessage()
        except Exception:
            return True
        redacted = self._redacted_message(record, message, study)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.values.redact_traceback(record.exc_text, study)
        if record.stack_info:
            record.stack_info = self.values.redact_traceback(record.stack_info, study)
        return True

    def _redacted_message(self, record: logging.LogRecord, message: str, study: str | None) -> str:
        own = isinstance(record.msg, str) and (record.name == "dicomnode" or record.name.startswith("dicomnode."))
        if not own:
            return self.values.redact(message, study)
        if not record.args or not self.values.has_words(study):
            return self.values.redact(message)
        if isinstance(record.args, Mapping):
            args: tuple | dict = {key: self._redacted_arg(value, study) for key, value in record.args.items()}
        else:
            args = tuple(self._redacted_arg(value, study) for value in record.args)
        try:
            return self.values.redact(record.msg % args)
        except (TypeError, ValueError):  # a redacted number under %d: redact the whole line instead
            return self.values.redact(message, study)

    def _redacted_arg(self, value, study: str | None):
        try:
            text = str(value)
        except Exception:
            return value
        redacted = self.values.redact(text, study)
        return value if redacted == text else redacted


#: a DICOM UID in a log line (PS3.5 9.1: numeric components, the first 0-2): at least six components, so that
#: addresses (127.0.0.1), versions and dates are left alone, or a UUID-derived 2.25.<integer> (PS3.5 B.2: anonymisers,
#: modern PACS, the node's own result UIDs). Components are any digit run (old GE / Philips data has leading zeros).
#: A '.' or '.dcm' after it ends it (end of a sentence, a file name); a '.' and more digits would continue it.
_UID_IN_TEXT = re.compile(r"(?<![A-Za-z0-9.])(?:2\.25\.[0-9]{6,}(?:\.[0-9]+)*|[0-2](?:\.[0-9]+){5,})"
                          r"(?![A-Za-z0-9])(?!\.[0-9]+(?![A-Za-z0-9]))")
#: UIDs the DICOM standard defines (SOP classes, transfer syntaxes, coding schemes): no patient's, kept as they are
_STANDARD_UID_ROOT = "1.2.840.10008."
#: vendors' private SOP classes an admin may have to allow (node.non_mr_objects, a refused non-MR object): Siemens
#: CSA Non-Image, GE private classes (1.2.840.113619.4.N; GE's instance UIDs are under .2), Philips private MR
_PRIVATE_SOP_CLASS = re.compile(r"1\.3\.12\.2\.1107\.5\.9\.1|1\.2\.840\.113619\.4\.[0-9]+|"
                                r"1\.3\.46\.670589\.11\.0\.0\.12\.[0-9]+")
#: certificate and TLS object identifiers (a refused handshake names an extended key usage or an algorithm): PKIX
#: (1.3.6.1.5.5.7), PKCS (1.2.840.113549.1), ECDSA (1.2.840.10045), NIST algorithms (2.16.840.1.101.3.4)
_CERTIFICATE_OID_ROOTS = ("1.3.6.1.5.5.7.", "1.2.840.113549.1.", "1.2.840.10045.", "2.16.840.1.101.3.4.")
#: the words before a UID that present it as a class or syntax ("SOP class 1.2...", "SOPClassUID=1.2...",
#: "transfer syntax '1.2...'", "abstract syntax") or as an OID: no instance's, kept
_CLASS_BEFORE = re.compile(r"(?:class(?:es)?|syntax(?:es)?|\boid)\s*(?:uid)?\s*[:=]?\s*['\"(\[]?\s*$", re.IGNORECASE)


class ClassUIDs:
    """The SOP Class and Transfer Syntax UIDs (abstract and transfer syntaxes) the node has been told are such, by
    the protocol (a C-STORE request's Affected SOP Class UID, a presentation context's abstract and transfer
    syntaxes) or by the code that logs one (`class_uid`): bounded, the most recently used kept. A UID here names a
    kind of object, never one patient's object, so the UID filter leaves it readable wherever a log line has it
    (private and unknown classes included: the admin must see which one was refused or dropped)."""

    def __init__(self, capacity: int = 4096):
        self.capacity = capacity
        self._uids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, *uids) -> None:
        with self._lock:
            for uid in uids:
                text = str(uid or "").strip()
                if not text:
                    continue
                self._uids[text] = None
                self._uids.move_to_end(text)
            while len(self._uids) > self.capacity:
                self._uids.popitem(last=False)

    def __contains__(self, uid: str) -> bool:
        with self._lock:
            return uid in self._uids

    def clear(self) -> None:
        with self._lock:
            self._uids.clear()


class_uids = ClassUIDs()


def class_uid(uid) -> str:
    """`uid` (a SOP Class UID or a transfer syntax UID) as a log argument or in a composed message: remembered in
    `class_uids`, so that the UID filter keeps it readable in every log line of this process; returns it as text."""
    text = str(uid or "").strip()
    class_uids.add(text)
    return text


def sop_class_name(uid: str) -> str:
    """A SOP class for a log line or a message: 'Enhanced SR Storage (1.2.840.10008.5.1.4.1.1.88.22)', or 'SOP class
    1.2.3...' where pydicom knows no name (a private or unknown class); either way the UID stays readable in the
    logs (class_uid)."""
    text = class_uid(uid)
    name = UID(text).name if text else ""
    return f"{name} ({text})" if name and name != text else f"SOP class {text}"


def transfer_syntax_name(uid: str) -> str:
    """A transfer syntax as sop_class_name gives a SOP class: 'JPEG 2000 Image Compression (1.2.840.10008.1.2.4.91)'
    or 'transfer syntax 1.2.3...'."""
    text = class_uid(uid)
    name = UID(text).name if text else ""
    return f"{name} ({text})" if name and name != text else f"transfer syntax {text}"


def _readable_uid(uid: str, before: str) -> bool:
    """Whether a UID found in a log line names a kind of object rather than one patient's object: one this process
    was told is a class or syntax (`class_uids`), a UID of the standard (pydicom's UID dictionary,
    1.2.840.10008.*), a known private SOP class, a certificate OID, or one the line presents as a SOP class,
    transfer syntax or OID (`before`: the text just before it)."""
    if uid in class_uids or uid.startswith(_STANDARD_UID_ROOT) or uid in UID_dictionary:
        return True
    if _PRIVATE_SOP_CLASS.fullmatch(uid) or uid.startswith(_CERTIFICATE_OID_ROOTS):
        return True
    return _CLASS_BEFORE.search(before) is not None


def hash_uids(text: str) -> str:
    """`text` with every instance-level DICOM UID (a Study, Series or SOP Instance UID, a UUID-derived 2.25 UID,
    one in a file name) replaced by its log id, the short hash the logs give a study (uids.short_hash):
    `dicomnode status --study` takes a study's log id, and a UID known from the PACS is found in the logs by hashing
    it the same way (`dicomnode log-id UID`). Kept as they are (`_readable_uid`): every SOP class and transfer
    syntax UID this process was told is one (`class_uids`: what senders and destinations negotiate and send, and
    what the code logs through `class_uid`), the standard's, known private SOP classes, certificate OIDs, and any UID
    the line presents as a SOP class, transfer syntax or OID."""
    def replace(match: re.Match) -> str:
        uid = match.group(0)
        if _readable_uid(uid, text[max(0, match.start() - 40):match.start()]):
            return uid
        return "uid:" + short_hash(uid)

    return _UID_IN_TEXT.sub(replace, text)


class UIDFilter(logging.Filter):
    """Replaces the DICOM UIDs of a record (message, traceback) by their log ids (hash_uids): a Series or SOP
    Instance UID finds the study (and the patient) in the PACS as surely as its Study Instance UID, which the logs
    give only as a hash. Off with [logging] show_patient_data."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        hashed = hash_uids(message)
        if hashed != message:
            record.msg, record.args = hashed, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = hash_uids(record.exc_text)
        return True


#: libraries whose own failure lines repeat what the node logs in its own words (dispatch: "association with ...
#: failed", receive: "association ... aborted"): at ERROR they would fire ERROR alerting on every transient retry
QUIETED_LIBRARIES = ("pynetdicom",)
_OWN_PACKAGE_DIR = str(Path(__file__).resolve().parent)


class LibraryFailureFilter(logging.Filter):
    """On a handler: downgrades a network library's routine WARNING/ERROR lines (connection refused, association
    rejected or aborted, network timeout: the node logs each in its own line) to DEBUG, emitted only where the root
    logger is at DEBUG. Kept at their level: an exception raised by the node's own code inside a library callback
    (its traceback passes through dicomnode), and the library's lines announcing one ("Exception in handler bound to
    ..."), which are node bugs rather than network weather.
    """

    KEEP = re.compile(r"^exception |(handler|callback) (returned|yielded)|returned by .*(handler|callback)|"
                      r"invalid (dataset|status|type) (returned|received|from)", re.IGNORECASE)

    def __init__(self, libraries: tuple[str, ...] = QUIETED_LIBRARIES):
        super().__init__()
        self.libraries = libraries

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".", 1)[0] not in self.libraries:
            return True
        if not getattr(record, "library_downgraded", False):  # a record goes through every handler: decide once
            if record.levelno < logging.WARNING or record.levelno >= logging.CRITICAL or self._node_bug(record):
                return True
            record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
            record.library_downgraded = True
        return logging.getLogger().isEnabledFor(logging.DEBUG)

    def _node_bug(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[2] is not None:
            tb = record.exc_info[2]
            while tb is not None:
                if tb.tb_frame.f_code.co_filename.startswith(_OWN_PACKAGE_DIR):
                    return True
                tb = tb.tb_next
            return False
        try:
            message = record.getMessage()
        except Exception:
            return True
        return bool(self.KEEP.search(message))


#: permissions of a log file the node creates: owner read-write, its group read (an admin group, logrotate's
#: `create 0640`); never other users, whatever the umask (outside systemd's UMask=0077)
LOG_FILE_MODE = 0o640


class LogFileHandler(logging.handlers.WatchedFileHandler):
    """[logging] file: a WatchedFileHandler (logrotate moves or deletes the file, the next line reopens the path)
    that a file it cannot write (a full disk, a quota, an I/O error) does not make spray a Python traceback onto
    stderr for every line: the first line it loses is said once on stderr with the cause, the lines are dropped
    (stderr, the journal under systemd, still has them), and the first line written again is preceded in the file
    by one saying how many were lost. The file is created with LOG_FILE_MODE (also when reopened after logrotate
    moved it); an existing file this process owns loses any permission for other users (the log names studies and
    peers, not patients, but it lives beside the owner-only spool)."""

    def __init__(self, filename: str, encoding: str | None = "utf-8"):
        super().__init__(filename, encoding=encoding)
        self.lost = 0  # lines not written since the file last took one
        self._failed: BaseException | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self._failed = None
        try:
            self.reopenIfNeeded()  # its flush of the old file may fail too
        except OSError as exc:
            self._drop(exc)
            return
        reopened = self.stream is None
        logging.FileHandler.emit(self, record)  # calls handleError where the line cannot be written
        if self._failed is not None:
            return
        if reopened and self.stream is not None:
            self._statstream()
        if self.lost:
            lost, self.lost = self.lost, 0
            note = logging.LogRecord("dicomnode.observe", logging.WARNING, __file__, 0,
                                     "%d log line(s) before the next could not be written to this file and are "
                                     "missing here (stderr or the journal has them)", (lost,), None)
            try:
                self.stream.write(self.format(note) + self.terminator)
                self.flush()
            except OSError:
                pass
            sys.stderr.write(f"dicomnode: the log file {self.baseFilename} is written again ({lost} line(s) lost)\n")

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            super().handleError(record)  # a formatting bug: Python's own report
            return
        self._drop(error)

    def _drop(self, error: BaseException) -> None:
        self._failed = error
        self.lost += 1
        if self.lost == 1:
            sys.stderr.write(f"dicomnode: cannot write the log file {self.baseFilename}: {error}; its lines are "
                             f"dropped until it can be written again (said once here; a line in the file will "
                             f"count them)\n")
        stream, self.stream = self.stream, None  # what is buffered is dropped with it: the next line opens afresh
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass

    def _open(self):
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, LOG_FILE_MODE)
        try:
            mode = os.fstat(fd).st_mode
            if mode & 0o007 and os.fstat(fd).st_uid == os.geteuid():
                os.fchmod(fd, mode & 0o770)
        except OSError:
            pass  # not ours to change: it stays as its owner made it
        return open(fd, self.mode, encoding=self.encoding, errors=self.errors)


def _handlers(config: LoggingConfig) -> list[logging.Handler]:
    """stderr always (under systemd: the journal) unless [logging] stderr = false, plus [logging] file if set.
    The file is a WatchedFileHandler (LogFileHandler: mode 0640): once logrotate (or anyone) moves or deletes it,
    the next line reopens the path, so no copytruncate and no signal is needed (config/dicomnode.logrotate); a file
    it cannot write loses lines quietly."""
    handlers: list[logging.Handler] = []
    if config.stderr or not config.file:
        handlers.append(logging.StreamHandler(sys.stderr))
    if config.file:
        handlers.append(LogFileHandler(config.file, encoding="utf-8"))
    for handler in handlers:
        if not config.library_debug:
            handler.addFilter(LibraryFailureFilter())
        handler.addFilter(StudyContextFilter())
        if not config.show_patient_data:
            handler.addFilter(PatientDataFilter())
            handler.addFilter(UIDFilter())
        handler.setFormatter(JSONFormatter() if config.json_format else PlainFormatter())
    return handlers


def configure_logging(config: LoggingConfig) -> None:
    root = logging.getLogger()
    for old in root.handlers:  # a second call (tests, demo) must not leave the file it replaces open
        if isinstance(old, logging.FileHandler):
            old.close()
    root.handlers[:] = _handlers(config)
    root.setLevel(config.level)
    # pynetdicom logs every PDU at INFO and each routine network failure at ERROR (2-3 lines per failed association,
    # before the node's own WARNING): its failures become DEBUG lines; [logging] library_debug = true restores the
    # library's own lines at their own levels, PDU summaries included
    for name in QUIETED_LIBRARIES:
        logging.getLogger(name).setLevel("DEBUG" if config.library_debug else "WARNING")
    # pynetdicom's standard event handlers format every DIMSE message for its logs even when nobody reads them
    from pynetdicom import _config as pynetdicom_config

    pynetdicom_config.LOG_HANDLER_LEVEL = "standard" if config.library_debug else "none"
    logging.getLogger("apscheduler").setLevel("WARNING")
    # highdicom logs every copied module at INFO (dozens of lines per object)
    logging.getLogger("highdicom").setLevel("DEBUG" if config.library_debug else "WARNING")
    # library warnings (e.g. highdicom quoting a PatientName it finds odd) go through this handler, and so through
    # the patient-data filter, instead of straight to stderr
    logging.captureWarnings(True)
    warnings_logger = logging.getLogger("py.warnings")
    warnings_logger.filters[:] = [f for f in warnings_logger.filters if not isinstance(f, RepeatedWarningFilter)]
    warnings_logger.addFilter(RepeatedWarningFilter())
    # results copy PatientName as received: a one-component name (e.g. an anonymised ID) is valid DICOM
    warnings.filterwarnings("ignore", message=r"The string .* is unlikely to represent the intended person name",
                            category=UserWarning)
    if config.show_patient_data:
        for _ in range(3):  # loud on purpose: this must not stay on unnoticed
            logging.getLogger("dicomnode").warning(
                "logging.show_patient_data is ON: patient identifiers may appear in logs. Switch it off after debugging."
            )
