"""Where the node's log lines go and which ones an admin alerts on (break3 L1, L2): with [logging] file set every line
still reaches stderr (the journal under the shipped unit); the file is reopened once logrotate moves it; pynetdicom's
routine failures (a retried send to a PACS that is down) are not ERROR lines; the shipped logrotate snippet."""
from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config

from dicomnode.config import Config, LoggingConfig, load_config
from dicomnode.observe import LibraryFailureFilter, configure_logging
from tests.peers import free_port

REPO = Path(__file__).resolve().parents[2]
MR = "1.2.840.10008.5.1.4.1.1.4"


class _Stderr:
    """What the node wrote to stderr in this test (capsys: the handler takes sys.stderr when it is made)."""

    def __init__(self, capsys):
        self.capsys, self.text = capsys, ""

    def getvalue(self) -> str:
        self.text += self.capsys.readouterr().err
        return self.text


@pytest.fixture
def restore_logging(capsys):
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("pynetdicom").level,
             logging.getLogger("highdicom").level, pynetdicom_config.LOG_HANDLER_LEVEL)
    try:
        yield _Stderr(capsys)
    finally:
        for handler in root.handlers:
            if handler not in saved[0]:
                handler.close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("pynetdicom").setLevel(saved[2])
        logging.getLogger("highdicom").setLevel(saved[3])
        pynetdicom_config.LOG_HANDLER_LEVEL = saved[4]
        logging.captureWarnings(False)


def _configure(**logging_keys) -> None:
    configure_logging(LoggingConfig(**logging_keys))


def test_with_a_log_file_every_line_still_goes_to_stderr(tmp_path, restore_logging):
    log_file = tmp_path / "node.log"
    _configure(file=str(log_file))
    logging.getLogger("dicomnode.test").warning("destination pacs: association failed")
    assert "destination pacs: association failed" in restore_logging.getvalue()
    assert "destination pacs: association failed" in log_file.read_text()


def test_stderr_false_writes_the_file_only(tmp_path, restore_logging):
    log_file = tmp_path / "node.log"
    _configure(file=str(log_file), stderr=False)
    logging.getLogger("dicomnode.test").info("file only")
    assert "file only" in log_file.read_text() and restore_logging.getvalue() == ""


def test_without_a_file_stderr_is_kept_even_if_switched_off(restore_logging):
    _configure(stderr=False)  # nowhere at all would lose every line: stderr stays
    logging.getLogger("dicomnode.test").info("still here")
    assert "still here" in restore_logging.getvalue()


def test_the_file_is_reopened_after_logrotate_moves_or_deletes_it(tmp_path, restore_logging):
    log_file = tmp_path / "node.log"
    _configure(file=str(log_file))
    log = logging.getLogger("dicomnode.test")
    log.info("line before rotation")
    log_file.rename(tmp_path / "node.log.1")  # what logrotate does without copytruncate
    log.info("line after rotation")
    assert "line after rotation" in log_file.read_text()
    rotated = (tmp_path / "node.log.1").read_text()
    assert "line before rotation" in rotated and "line after rotation" not in rotated
    log_file.unlink()  # a remove / compress of the moved file
    log.info("line after deletion")
    assert "line after deletion" in log_file.read_text()


def test_configuring_again_closes_the_previous_file(tmp_path, restore_logging):
    _configure(file=str(tmp_path / "a.log"))
    first = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)][0]
    _configure(file=str(tmp_path / "b.log"))
    assert first.stream is None or first.stream.closed


def _pynetdicom_record(name: str, level: int, message: str, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, None, exc_info)


def test_routine_library_failures_are_debug_lines_and_node_bugs_stay_errors(restore_logging):
    keep = LibraryFailureFilter()
    for name, message in (("pynetdicom.transport", "Association request failed: unable to connect to remote"),
                          ("pynetdicom.transport", "TCP Initialisation Error: [Errno 111] Connection refused"),
                          ("pynetdicom.acse", "Association Rejected"),
                          ("pynetdicom.acse", "Reason: Calling AE title not recognised"),
                          ("pynetdicom.assoc", "Network timeout reached")):
        record = _pynetdicom_record(name, logging.ERROR, message)
        assert keep.filter(record) is logging.getLogger().isEnabledFor(logging.DEBUG)
        assert record.levelno == logging.DEBUG and record.levelname == "DEBUG"
        assert keep.filter(record) is logging.getLogger().isEnabledFor(logging.DEBUG)  # the second handler agrees
    for name, message in (("pynetdicom.assoc", "Exception in the handler bound to 'evt.EVT_C_STORE'"),
                          ("pynetdicom.events", "Exception raised in user's 'evt.EVT_C_STORE' handler 'on_store'"),
                          ("pynetdicom.acse", "Exception raised in handler bound to 'evt.EVT_ASYNC_OPS'"),
                          ("pynetdicom.dul", "Exception in DUL.run(), aborting association"),
                          ("pynetdicom.assoc", "The EVT_C_STORE handler returned a Dataset without a 'Status' element"),
                          ("pynetdicom.assoc", "Invalid status returned by the EVT_C_STORE handler"),
                          ("pynetdicom.service-c", "User callback returned a `Dataset` without a Status element")):
        announced = _pynetdicom_record(name, logging.ERROR, message)
        assert keep.filter(announced) and announced.levelno == logging.ERROR, message
    try:
        raise ConnectionResetError("peer went away")  # raised here, in tests/: not the node's code
    except ConnectionResetError:
        library = _pynetdicom_record("pynetdicom.dul", logging.ERROR, "peer went away", exc_info=sys.exc_info())
    assert not keep._node_bug(library)
    node = _pynetdicom_record("dicomnode.dispatch", logging.ERROR, "dead letter: x")
    assert keep.filter(node) and node.levelno == logging.ERROR  # the node's own lines are never touched


def test_a_traceback_through_dicomnode_code_keeps_error_level():
    from dicomnode.observe import _handlers

    try:
        _handlers(None)  # AttributeError raised inside dicomnode/observe.py
    except AttributeError:
        record = _pynetdicom_record("pynetdicom.events", logging.ERROR, "boom", exc_info=sys.exc_info())
    assert LibraryFailureFilter().filter(record) and record.levelno == logging.ERROR


def _associate_with_closed_port() -> None:
    ae = AE(ae_title="DICOMNODE")
    ae.add_requested_context(MR)
    ae.acse_timeout = ae.network_timeout = 3
    assoc = ae.associate("127.0.0.1", free_port(), ae_title="PACS")
    assert not assoc.is_established


def test_a_send_to_a_pacs_that_is_down_logs_no_library_error(tmp_path, restore_logging):
    log_file = tmp_path / "node.log"
    _configure(file=str(log_file))
    _associate_with_closed_port()
    text = log_file.read_text() + restore_logging.getvalue()
    assert "pynetdicom" not in text and "ERROR" not in text, text


def test_at_debug_the_library_failures_are_debug_lines(tmp_path, restore_logging):
    log_file = tmp_path / "node.log"
    _configure(file=str(log_file), level="DEBUG")
    _associate_with_closed_port()
    lines = [line for line in log_file.read_text().splitlines() if "pynetdicom" in line]
    assert any("Association request failed" in line for line in lines), lines
    assert all(" DEBUG " in line for line in lines), lines


def test_library_debug_restores_the_librarys_own_lines(tmp_path, restore_logging):
    log_file = tmp_path / "node.log"
    _configure(file=str(log_file), library_debug=True)
    assert pynetdicom_config.LOG_HANDLER_LEVEL == "standard"
    _associate_with_closed_port()
    assert "ERROR   pynetdicom.transport: Association request failed" in log_file.read_text()


def test_defaults_and_the_shipped_config_document_both_outputs():
    defaults = Config.model_validate({}).logging
    assert defaults.stderr is True and defaults.library_debug is False and defaults.file is None
    shipped = load_config(REPO / "config" / "dicomnode.toml").logging
    assert shipped.stderr is True and shipped.library_debug is False
    text = (REPO / "config" / "dicomnode.toml").read_text()
    assert "config/dicomnode.logrotate" in text and "ALSO goes to this file" in text
    assert "config/dicomnode.logrotate" in (REPO / "README.md").read_text()


def test_the_shipped_logrotate_snippet_rotates_the_documented_file_without_copytruncate(tmp_path):
    snippet = (REPO / "config" / "dicomnode.logrotate").read_text()
    rules = [line.split("#")[0].strip() for line in snippet.splitlines()]
    rules = [rule for rule in rules if rule]
    assert rules[0] == "/var/lib/dicomnode/dicomnode.log {" and rules[-1] == "}"
    assert "su dicomnode dicomnode" in rules and "missingok" in rules
    assert not any(rule.startswith(("copytruncate", "postrotate")) for rule in rules)
    assert '/var/lib/dicomnode/dicomnode.log"' in (REPO / "config" / "dicomnode.toml").read_text()
    logrotate = shutil.which("logrotate")
    if logrotate is None:
        pytest.skip("logrotate is not installed: syntax not checked")
    # the same rules on a file of our own, as its owner, in debug (dry-run) mode: a syntax error fails
    log_file = tmp_path / "dicomnode.log"
    log_file.write_text("x\n")
    local = snippet.replace("/var/lib/dicomnode/dicomnode.log", str(log_file)).replace("su dicomnode dicomnode", "")
    (tmp_path / "rotate.conf").write_text(local)
    done = subprocess.run([logrotate, "-d", "-s", str(tmp_path / "state"), str(tmp_path / "rotate.conf")],
                          capture_output=True, text=True)
    assert done.returncode == 0 and "error" not in done.stderr.lower(), done.stderr
