"""Logging set-up: plain or JSON lines, patient data kept out unless explicitly switched on."""
from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import threading
import time
import warnings
from collections import OrderedDict
from contextlib import contextmanager

from dicomnode.config import LoggingConfig


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


class PatientValues:
    """The patient names, IDs and birth dates the node has seen lately (bounded), as one regex to redact them."""

    MIN_LENGTH = 3  # shorter values (a PatientID "1") would redact half of every message

    def __init__(self, capacity: int = 2000):
        self.capacity = capacity
        self._values: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._pattern: re.Pattern | None = None

    def remember(self, dataset) -> None:
        """Record the identifying values of a received dataset (PatientName with its components, ID, birth date)."""
        found = []
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "PatientAddress"):
            try:
                value = dataset.get(keyword)
            except Exception:
                continue
            if value in (None, ""):
                continue
            text = str(value).strip()
            found.append(text)
            if keyword == "PatientName":
                found.extend(part for part in re.split(r"[\\^=]+", text) if part)
                found.append(" ".join(p for p in re.split(r"[\\^=]+", text) if p))
        self.add(*found)

    def add(self, *values: str) -> None:
        with self._lock:
            changed = False
            for value in values:
                value = str(value).strip()
                if len(value) < self.MIN_LENGTH:
                    continue
                if value in self._values:
                    self._values.move_to_end(value)
                    continue
                self._values[value] = None
                changed = True
                while len(self._values) > self.capacity:
                    self._values.popitem(last=False)
            if changed:
                self._pattern = None

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._pattern = None

    def redact(self, text: str) -> str:
        with self._lock:
            if not self._values:
                return text
            if self._pattern is None:
                alternatives = sorted(self._values, key=len, reverse=True)
                self._pattern = re.compile(
                    r"(?<![0-9A-Za-z])(?:" + "|".join(map(re.escape, alternatives)) + r")(?![0-9A-Za-z])", re.IGNORECASE
                )
            pattern = self._pattern
        return pattern.sub("[redacted]", text)


#: filled by the receive path (`remember`), read by `PatientDataFilter`
patient_values = PatientValues()


class PatientDataFilter(logging.Filter):
    """Replaces any known patient value in a record's message (and traceback) by [redacted]."""

    def __init__(self, values: PatientValues = patient_values):
        super().__init__()
        self.values = values

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        redacted = self.values.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.values.redact(record.exc_text)
        return True


def configure_logging(config: LoggingConfig) -> None:
    handler: logging.Handler
    handler = logging.FileHandler(config.file) if config.file else logging.StreamHandler(sys.stderr)
    handler.addFilter(StudyContextFilter())
    if not config.show_patient_data:
        handler.addFilter(PatientDataFilter())
    if config.json_format:
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(PlainFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.level)
    # pynetdicom logs every PDU at INFO; keep it at WARNING unless debugging
    logging.getLogger("pynetdicom").setLevel("DEBUG" if config.level == "DEBUG" else "ERROR")
    # pynetdicom's standard event handlers format every DIMSE message for its logs even when nobody reads them
    from pynetdicom import _config as pynetdicom_config

    pynetdicom_config.LOG_HANDLER_LEVEL = "standard" if config.level == "DEBUG" else "none"
    logging.getLogger("apscheduler").setLevel("WARNING")
    # highdicom logs every copied module at INFO (dozens of lines per object)
    logging.getLogger("highdicom").setLevel(config.level if config.level == "DEBUG" else "WARNING")
    # library warnings (e.g. highdicom quoting a PatientName it finds odd) go through this handler, and so through
    # the patient-data filter, instead of straight to stderr
    logging.captureWarnings(True)
    # results copy PatientName as received: a one-component name (e.g. an anonymised ID) is valid DICOM
    warnings.filterwarnings("ignore", message=r"The string .* is unlikely to represent the intended person name",
                            category=UserWarning)
    if config.show_patient_data:
        for _ in range(3):  # loud on purpose: this must not stay on unnoticed
            logging.getLogger("dicomnode").warning(
                "logging.show_patient_data is ON: patient identifiers may appear in logs. Switch it off after debugging."
            )
