"""Logging set-up: plain or JSON lines, patient data kept out unless explicitly switched on."""
from __future__ import annotations

import json
import logging
import sys
import time

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
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(config: LoggingConfig) -> None:
    handler: logging.Handler
    handler = logging.FileHandler(config.file) if config.file else logging.StreamHandler(sys.stderr)
    if config.json_format:
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.level)
    # pynetdicom logs every PDU at INFO; keep it at WARNING unless debugging
    logging.getLogger("pynetdicom").setLevel("DEBUG" if config.level == "DEBUG" else "WARNING")
    logging.getLogger("apscheduler").setLevel("WARNING")
    if config.show_patient_data:
        logging.getLogger("dicomnode").warning(
            "logging.show_patient_data is ON: patient identifiers may appear in logs. Switch it off after debugging."
        )
