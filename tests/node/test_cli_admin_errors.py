"""An admin's ordinary mistakes get one line naming the key, exit 1, no traceback, and nothing written."""
from __future__ import annotations

import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from dicomnode.cli import main
from dicomnode.inference.probe import tensorrt_usable
from dicomnode.state import SCHEMA_VERSION, InstanceRow, StateDB, StateSchemaError, StorageDirError, prepare_storage_dir


def _config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(body)
    return path


@pytest.mark.parametrize("command", [["serve"], ["state", "upgrade"], ["status"], ["retry", "1.2.3"]])
def test_a_file_where_the_storage_folder_should_be_is_named(tmp_path, capsys, command):
    (tmp_path / "afile").write_text("not a folder")
    config = _config(tmp_path, f'[node]\nstorage_dir = "{tmp_path / "afile"}"\n')
    code = main([*command, "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 1
    if command[0] in ("status", "retry"):  # read-only commands: there is no state there, and none is created
        assert "no node state" in err
    else:
        assert "node.storage_dir" in err and "is not a folder" in err and "Traceback" not in err


def test_a_storage_folder_that_cannot_be_created_is_named():
    with pytest.raises(StorageDirError, match=r"node.storage_dir '/proc/dicomnode-test' cannot be used"):
        prepare_storage_dir("/proc/dicomnode-test")  # nobody, root included, may make a folder in /proc


def test_prepare_storage_dir_makes_it_owner_only(tmp_path):
    folder = prepare_storage_dir(tmp_path / "a" / "store")
    assert folder.is_dir() and stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_retry_and_status_without_state_create_nothing(tmp_path, capsys):
    config = _config(tmp_path, f'[node]\nstorage_dir = "{tmp_path / "never"}"\n')
    assert main(["retry", "1.2.3", "--config", str(config)]) == 1
    assert main(["status", "--config", str(config)]) == 1
    assert "no node state" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_a_port_in_use_is_named_without_a_traceback(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = _config(tmp_path, f'[node]\nstorage_dir = "{tmp_path / "store"}"\nport = {port}\n'
                                   '[logging]\nlevel = "WARNING"\n')
        run = subprocess.run([sys.executable, "-m", "dicomnode", "serve", "--config", str(config)],
                             capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert f"node.port {port}" in run.stderr and "cannot be opened" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "store").exists()  # a refused start leaves nothing behind (break48a #12)


def test_status_prints_whole_study_uids_and_says_when_no_node_runs(tmp_path, capsys):
    from dicomnode.spool import IncomingInstance, Spool
    from dicomnode.state import StateDB

    store = tmp_path / "store"
    study = "1.2.826.0.1.3680043.8.498." + "1" * 38  # 64 characters, as long as a UID may be
    db = StateDB(prepare_storage_dir(store) / "state.sqlite3")
    Spool(store, db).store(IncomingInstance(
        encoded=b"DICM", sop_instance_uid="1.2.3.4.5", sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
        study_instance_uid=study, series_instance_uid="1.2.3.4", transfer_syntax="1.2.840.10008.1.2.1",
        modality="MR", study_key=study, calling_ae="SCANNER1"))
    db.close()
    config = _config(tmp_path, f'[node]\nstorage_dir = "{store}"\n')
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert study in out and "no node process has a heartbeat" in out


@pytest.mark.parametrize("body, key, message", [
    ('[inference]\nmodels_dir = "{tmp}/nope"\n', "inference.models_dir", "/nope does not exist"),
    ('[node.tls]\nenabled = true\ncertificate = "{tmp}/nope.crt"\nprivate_key = "{tmp}/nope.key"\n',
     "node.tls.certificate", "nope.crt does not exist or is not a file"),
    # both missing: both named in the one run (break48a #10)
    ('[node.tls]\nenabled = true\ncertificate = "{tmp}/nope.crt"\nprivate_key = "{tmp}/nope.key"\n',
     "node.tls.private_key", "nope.key does not exist or is not a file"),
    ('[analysis.suggestions]\nbank_dir = "{tmp}/no-bank"\n', "analysis.suggestions.bank_dir", "no-bank does not exist"),
    ('[inference]\nmodels_dir = "{tmp}/node.toml"\n', "inference.models_dir", "node.toml is a file, not a folder"),
    pytest.param('[inference]\nbackend = "tensorrt"\n', "inference.backend", "'tensorrt' cannot run on this machine",
                 marks=pytest.mark.skipif(tensorrt_usable(), reason="TensorRT runs here")),
])
def test_paths_the_machine_lacks_fail_config_check_and_serve(tmp_path, capsys, body, key, message):
    config = _config(tmp_path, f'[node]\nstorage_dir = "{tmp_path / "store"}"\nport = 0\n'
                               + body.format(tmp=tmp_path))
    assert main(["config", "check", str(config)]) == 1
    err = capsys.readouterr().err
    assert "INVALID on this machine" in err and f"{key}: " in err and message in err
    assert main(["serve", "--config", str(config)]) == 1  # refused before anything is bound or created
    err = capsys.readouterr().err
    assert key in err and message in err and "Traceback" not in err
    assert not (tmp_path / "store").exists()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("host, reason", [
    ("db.invalid", "db.invalid"),  # a name DNS does not know (RFC 6761: never resolves)
    ("127.0.0.1:{port}", "Connection refused"),  # no PostgreSQL listening there
])
def test_a_state_database_that_cannot_be_reached_fails_config_check_as_serve(tmp_path, capsys, host, reason):
    pytest.importorskip("psycopg")
    url = f"postgresql://dicomnode:secret@{host.format(port=_closed_port())}/dicomnode"
    config = _config(tmp_path, f'[node]\nstorage_dir = "{tmp_path / "store"}"\nport = 0\n[state]\nurl = "{url}"\n')
    assert main(["config", "check", str(config), "--roles", "receive"]) == 1
    err = capsys.readouterr().err
    assert "INVALID on this machine" in err and "state.url: cannot open the state database" in err
    assert reason in err and "secret" not in err and "OK" not in err
    assert main(["serve", "--config", str(config), "--roles", "receive"]) == 1  # what the check foretold
    err = capsys.readouterr().err
    assert "state.url" in err and "Traceback" not in err


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_a_storage_folder_that_cannot_be_created_fails_config_check_as_serve(tmp_path, capsys):
    """/proc passes the permission bits for root, yet no folder can be made there (nor on a read-only mount)."""
    config = _config(tmp_path, '[node]\nstorage_dir = "/proc/dicomnode-nope"\nport = 0\n')
    assert main(["config", "check", str(config)]) == 1
    err = capsys.readouterr().err
    assert "node.storage_dir: /proc/dicomnode-nope: " in err and "/proc" in err
    assert main(["serve", "--config", str(config)]) == 1
    assert "node.storage_dir" in capsys.readouterr().err


def test_a_models_folder_without_a_routed_pipelines_model_is_named(tmp_path, capsys):
    models = tmp_path / "models"
    models.mkdir()
    config = _config(tmp_path, f'[node]\nstorage_dir = "{tmp_path / "store"}"\n[inference]\nmodels_dir = "{models}"\n'
                               '[[routes]]\nname = "cine only"\npipelines = ["cine"]\n')
    assert main(["config", "check", str(config)]) == 1
    err = capsys.readouterr().err
    assert "routes (pipeline cine): model 'cine_unet' is not installed" in err and "lge_unet" not in err
    # a receive-only process loads no model: only its own paths are checked, as dicomnode@receive's check does
    from dicomnode.config import load_config
    from dicomnode.preflight import preflight_problems
    assert preflight_problems(load_config(str(config)), models=False) == []
    assert main(["config", "check", str(config), "--roles", "receive,complete,dispatch"]) == 0
    assert main(["config", "check", str(config), "--roles", "analyse"]) == 1
    assert main(["config", "check", str(config), "--roles", "scan"]) == 2
    assert "unknown role(s) ['scan']" in capsys.readouterr().err


@pytest.mark.parametrize("damage, message", [
    ("truncate_onnx", "cine_unet.onnx cannot be read as an ONNX model"),
    ("card_not_json", "model card {models}/cine_unet.json is not usable"),
    ("card_without_input", "cine model card lacks input.spacing_mm"),
])
def test_a_damaged_model_fails_config_check_and_serve_before_any_study(tmp_path, capsys, damage, message):
    import shutil
    from dicomnode.inference.runtime import shipped_models_dir
    models = tmp_path / "models"
    models.mkdir()
    for suffix in (".onnx", ".json"):
        shutil.copy(shipped_models_dir() / f"cine_unet{suffix}", models / f"cine_unet{suffix}")
    onnx, card = models / "cine_unet.onnx", models / "cine_unet.json"
    if damage == "truncate_onnx":  # a copy cut short, as by a full disk
        onnx.write_bytes(onnx.read_bytes()[: onnx.stat().st_size // 3])
    elif damage == "card_not_json":
        card.write_text(card.read_text()[:-40])
    else:
        card.write_text(card.read_text().replace('"input"', '"inputs"', 1))
    config = _config(tmp_path, f'[node]\nstorage_dir = "{tmp_path / "store"}"\n[inference]\nmodels_dir = "{models}"\n'
                               '[[routes]]\nname = "cine only"\npipelines = ["cine"]\n')
    assert main(["config", "check", str(config)]) == 1
    err = capsys.readouterr().err
    assert "routes (pipeline cine): " in err and message.format(models=models) in err
    assert "Traceback" not in err
    assert main(["config", "check", str(config), "--roles", "receive,complete,dispatch"]) == 0
    assert main(["serve", "--config", str(config)]) == 1
    assert message.format(models=models) in capsys.readouterr().err


def test_the_shipped_models_pass_the_opening_check(tmp_path, capsys):
    config = _config(tmp_path, f'[node]\nstorage_dir = "{tmp_path / "store"}"\n')
    assert main(["config", "check", str(config)]) == 0, capsys.readouterr().err


def test_the_role_units_check_only_what_their_role_needs():
    unit = (Path(__file__).resolve().parents[2] / "systemd" / "dicomnode@.service").read_text()
    [check] = [line for line in unit.splitlines() if line.startswith("ExecStartPre=") and "config check" in line]
    [serve] = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    assert check.endswith("--roles %i") and serve.endswith("--roles %i")


def test_a_destination_that_is_down_or_not_dicom_is_described(tmp_path):
    from pydicom.uid import ExplicitVRLittleEndian
    from tests.hardening.hardening_support import synthetic_mr
    from dicomnode.net.scu import AssociationFailed, send_files

    path = tmp_path / "one.dcm"
    dataset = synthetic_mr()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.save_as(path, enforce_file_format=True)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, not listening: the connection is refused
        with pytest.raises(AssociationFailed, match=r"PACS@127.0.0.1:\d+ failed: cannot connect: Connection refused"):
            send_files([path], "PACS", "127.0.0.1", port, timeout=5)
    with socket.socket() as silent:  # listens, accepts, says nothing DICOM
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        with pytest.raises(AssociationFailed, match="aborted after the TCP connection was accepted"):
            send_files([path], "PACS", "127.0.0.1", silent.getsockname()[1], timeout=2)


def test_send_skips_what_is_not_dicom_and_says_when_nothing_is_left(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not DICOM")
    config = _config(tmp_path, '[[destinations]]\nname = "pacs"\nae_title = "PACS"\nhost = "127.0.0.1"\nport = 1\n')
    assert main(["send", "--config", str(config), "--to", "pacs", str(empty)]) == 1
    err = capsys.readouterr().err
    assert "skipped" in err and "notes.txt: not a DICOM file" in err and "nothing to send" in err
    assert "Traceback" not in err
    assert main(["send", "--config", str(config), "--to", "pacs", str(tmp_path / "missing.dcm")]) == 1
    assert "missing.dcm: no such file" in capsys.readouterr().err


def test_status_retry_and_the_logs_name_a_study_the_same_way(tmp_path, capsys):
    from dicomnode.state import StateDB
    from dicomnode.uids import short_hash

    store = tmp_path / "store"
    prepare_storage_dir(store)
    db = StateDB(store / "state.sqlite3", upgrade=True)
    study = "1.2.826.0.1.3680043.8.498.77"
    db.add_instance(InstanceRow("1.2.9.1", study, study, "1.2.9.0", "1.2.840.10008.5.1.4.1.1.4",
                                "1.2.840.10008.1.2.1", "MR", "spool/x.dcm", 1, "SCANNER1", 0.0))
    db.close()
    config = _config(tmp_path, f'[node]\nstorage_dir = "{store}"\n')
    log_id = short_hash(study)
    assert main(["status", "--config", str(config)]) == 0
    assert log_id in capsys.readouterr().out
    assert main(["retry", log_id, "--config", str(config)]) == 0  # the id the logs print finds the study
    assert "nothing to retry" in capsys.readouterr().out


def test_a_busy_metrics_port_is_named_without_a_traceback(tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = _config(tmp_path, f'[node]\nstorage_dir = "{tmp_path / "store"}"\nport = 0\n'
                                   f'[observability]\nmetrics_enabled = true\nmetrics_port = {port}\n'
                                   '[[routes]]\nname = "none"\npipelines = []\n')
        result = subprocess.run([sys.executable, "-m", "dicomnode.cli", "serve", "--config", str(config)],
                                capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert f"cannot serve metrics on 127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr


def test_a_log_folder_or_storage_folder_this_user_cannot_use_fails_config_check(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    config = _config(tmp_path, f'[node]\nstorage_dir = "{tmp_path / "afile" / "store"}"\n'
                               f'[logging]\nfile = "{tmp_path / "afile" / "logs" / "node.log"}"\n')
    assert main(["config", "check", str(config)]) == 1
    err = capsys.readouterr().err
    assert "node.storage_dir: " in err and "logging.file: the log file's folder" in err and "is not a folder" in err


def test_state_upgrade_without_config_says_whose_state_it_made(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["state", "upgrade"]) == 0
    captured = capsys.readouterr()
    assert f"was empty, dicomnode schema version {SCHEMA_VERSION} created" in captured.out
    assert "no --config given" in captured.err
    config = _config(tmp_path, f'[node]\nstorage_dir = "{tmp_path / "store"}"\n')
    assert main(["state", "upgrade", "--config", str(config)]) == 0
    assert "no --config given" not in capsys.readouterr().err


def test_serve_logs_the_config_warnings_that_config_check_prints(tmp_path):
    with socket.socket() as busy:  # serve then stops at the busy metrics port, after logging is set up
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = _config(tmp_path, f'[node]\nstorage_dir = "{tmp_path / "store"}"\nport = 0\n'
                                   '[studies]\nquiet_seconds = 60\nmax_wait_seconds = 30\n'
                                   f'[observability]\nmetrics_enabled = true\nmetrics_port = {port}\n'
                                   '[[routes]]\nname = "none"\npipelines = []\n')
        result = subprocess.run([sys.executable, "-m", "dicomnode.cli", "serve", "--config", str(config)],
                                capture_output=True, text=True, timeout=120)
    assert "config: studies.max_wait_seconds (30) is not longer than studies.quiet_seconds (60)" in result.stderr


@pytest.mark.parametrize("body, key, message", [
    ('[inference]\nmodels_dir = "{tmp}/nope"\n', "inference.models_dir", "/nope does not exist"),
    pytest.param('[inference]\nbackend = "tensorrt"\n', "inference.backend", "'tensorrt' cannot run on this machine",
                 marks=pytest.mark.skipif(tensorrt_usable(), reason="TensorRT runs here")),
])
def test_schema_errors_do_not_hide_what_the_machine_lacks_of_the_valid_sections(tmp_path, capsys, body, key, message):
    """README: every bad key with its path, then what this machine lacks, in one run."""
    config = _config(tmp_path, '[node]\nportt = 1\n[[routes]]\nname = "r"\npipelines = ["lge"]\n'
                               'destinations = ["nowhere"]\n' + body.format(tmp=tmp_path))
    assert main(["config", "check", str(config)]) == 1
    err = capsys.readouterr().err
    schema, machine = err.split("INVALID on this machine")
    assert "node.portt: unknown key" in schema and "routes[r].destinations: unknown destination(s)" in schema
    assert f"{key}: " in machine and message in machine


def test_an_invalid_section_is_not_checked_against_the_machine(tmp_path, capsys):
    """node.storage_dir of a [node] with an error is not checked (nor its default in its place)."""
    (tmp_path / "afile").write_text("x")
    config = _config(tmp_path, f'[node]\nstorage_dir = "{tmp_path / "afile"}"\nport = "104"\n'
                               '[inference]\nbackend = "cuda"\nmodels_dir = "/nope"\n'
                               f'[logging]\nfile = "{tmp_path / "afile" / "node.log"}"\n')
    assert main(["config", "check", str(config)]) == 1
    err = capsys.readouterr().err
    assert "node.port: " in err and "inference.backend: " in err
    assert "node.storage_dir" not in err and "inference.models_dir" not in err
    assert "logging.file: the log file's folder" in err  # [logging] itself is valid


def test_a_listen_host_that_does_not_resolve_fails_config_check_and_serve(tmp_path, capsys):
    config = _config(tmp_path, f'[node]\nstorage_dir = "{tmp_path / "store"}"\nhost = "node.invalid"\n')
    assert main(["config", "check", str(config), "--roles", "receive"]) == 1
    err = capsys.readouterr().err
    assert "node.host: 'node.invalid' does not resolve" in err and "Traceback" not in err
    assert main(["serve", "--config", str(config)]) == 1
    assert "node.host: 'node.invalid' does not resolve" in capsys.readouterr().err
    assert not (tmp_path / "store" / "state.sqlite3").exists()  # refused before touching the storage


def _state_of_a_running_older_node(store: Path) -> tuple[str, int]:
    """A SQLite state as an older, lock-less node left it while running: schema 2, a study it is analysing.
    Returns the study key and the port nothing listens on yet."""
    from dicomnode.spool import IncomingInstance, Spool
    from dicomnode.state import COMPLETE, StateDB

    db = StateDB(prepare_storage_dir(store) / "state.sqlite3", process_id="oldhost:1")
    study = "1.2.826.0.1.3680043.8.498.77"
    Spool(store, db).store(IncomingInstance(
        encoded=b"DICM", sop_instance_uid="1.2.3.4.5", sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
        study_instance_uid=study, series_instance_uid="1.2.3.4", transfer_syntax="1.2.840.10008.1.2.1",
        modality="MR", study_key=study, calling_ae="SCANNER1"))
    db.set_study_state(study, COMPLETE, None)
    assert db.claim_next_study() == (study, 0)
    with db.engine.begin() as connection:
        connection.exec_driver_sql("UPDATE meta SET value='2' WHERE key='schema_version'")
    db.close()
    return study


@pytest.mark.parametrize("busy", ["dicom", "metrics"])
def test_serve_beside_a_lockless_node_on_its_port_changes_nothing(tmp_path, busy):
    """An older node (no storage lock) still runs on the storage and listens: the new `serve` refuses on the port
    before it upgrades the schema, writes spool.id or takes the study back."""
    import sqlite3

    store = tmp_path / "store"
    study = _state_of_a_running_older_node(store)
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        ports = (f"port = {port}\n" if busy == "dicom" else "port = 0\n[observability]\nmetrics_enabled = true\n"
                 f"metrics_port = {port}\n")
        config = _config(tmp_path, f'[logging]\nlevel = "WARNING"\n[node]\nstorage_dir = "{store}"\n{ports}')
        run = subprocess.run([sys.executable, "-m", "dicomnode", "serve", "--config", str(config)],
                             capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    named = f"node.port {port}" if busy == "dicom" else f"cannot serve metrics on 127.0.0.1:{port}"
    assert named in run.stderr and "older dicomnode" in run.stderr and "nothing was changed" in run.stderr
    with sqlite3.connect(store / "state.sqlite3") as connection:
        assert connection.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("2",)
        assert connection.execute("SELECT state, claimed_by FROM studies WHERE study_key=?", (study,)).fetchone() \
            == ("analysing", "oldhost:1")
    assert not (store / "spool.id").exists()


def test_a_new_empty_state_database_is_called_empty_not_an_older_version(tmp_path):
    """break46b #4: a state database nothing has written yet (a new PostgreSQL database; SQLite opened without the
    upgrade) is said to be empty, with the command that creates its schema, not "schema version none" and "stop every
    process of the older version"."""
    with pytest.raises(StateSchemaError) as caught:
        StateDB(tmp_path / "new.sqlite3", upgrade=False)
    message = str(caught.value)
    assert "is empty (no dicomnode schema yet): run `dicomnode state upgrade` once to create it" in message
    assert "none" not in message and "older version" not in message
