"""Operation: sd_notify READY/WATCHDOG/STOPPING, SIGHUP reload keeping open associations, disk-full refusal."""
from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
from pynetdicom import AE

from tests.hardening.hardening_support import MR_IMAGE_STORAGE, echo_status, store_one, synthetic_mr
from tests.node.nodeproc import ENV, NodeProcess
from tests.peers import free_port


def _receive_until(sock: socket.socket, wanted: str, deadline: float, seen: list[str]) -> None:
    while wanted not in seen:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            seen.append(sock.recv(4096).decode())
        except socket.timeout:
            raise AssertionError(f"no {wanted} on NOTIFY_SOCKET; got {seen}") from None


def test_serve_notifies_ready_watchdog_and_stopping(tmp_path):
    port = free_port()
    node = NodeProcess(tmp_path, port, pipelines=(), quiet_seconds=3600)  # writes the config only
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        process = subprocess.Popen([sys.executable, "-m", "dicomnode.cli", "serve", "--config", str(node.config_path)],
                                   env=dict(ENV, NOTIFY_SOCKET=address), cwd=tmp_path,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            seen: list[str] = []
            _receive_until(sock, "READY=1", time.monotonic() + 120, seen)
            assert echo_status(port) == 0  # READY means it answers
            _receive_until(sock, "WATCHDOG=1", time.monotonic() + 15, seen)
            assert seen.index("READY=1") < seen.index("WATCHDOG=1")
            process.send_signal(signal.SIGTERM)
            _receive_until(sock, "STOPPING=1", time.monotonic() + 30, seen)
            assert process.wait(60) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_sighup_without_a_config_file_is_logged_and_the_node_keeps_running(tmp_path):
    """The embedded defaults listen on port 11112: in the private network namespace nothing else holds it."""
    from tests.peers import require_private_netns

    require_private_netns()
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        process = subprocess.Popen([sys.executable, "-m", "dicomnode.cli", "serve", "--roles", "receive"],
                                   env=dict(ENV, NOTIFY_SOCKET=address), cwd=tmp_path,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            _receive_until(sock, "READY=1", time.monotonic() + 120, [])
            process.send_signal(signal.SIGHUP)
            time.sleep(1.0)
            assert process.poll() is None  # SIGHUP's default action would have ended it
            assert echo_status(11112) == 0
            process.send_signal(signal.SIGTERM)
            assert process.wait(60) == 0
            assert "SIGHUP: nothing to reload" in process.stderr.read()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_sighup_reload_keeps_an_open_association_working(tmp_path):
    port = free_port()
    node = NodeProcess(tmp_path, port, pipelines=(), quiet_seconds=3600).start()
    try:
        _reload_with_an_open_association(node, port)
        assert len(node.db_rows("SELECT * FROM instances")) == 5
        assert echo_status(port) == 0
    finally:
        assert node.stop() == 0


def _reload_with_an_open_association(node: NodeProcess, port: int) -> None:
    ae = AE(ae_title="SCANNER1")
    ae.add_requested_context(MR_IMAGE_STORAGE, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMNODE")
    try:
        assert assoc.is_established
        study = synthetic_mr().StudyInstanceUID
        assert assoc.send_c_store(synthetic_mr(study_uid=study, instance=1)).Status == 0
        node.config_path.write_text(node.config_text.replace(
            '[dispatch]', '[[destinations]]\nname = "later"\nae_title = "LATER"\nhost = "127.0.0.1"\nport = 4999\n'
                          '[dispatch]').replace('destinations = []', 'destinations = ["later"]'))
        node.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while "configuration reloaded" not in node.log():
            assert time.monotonic() < deadline, node.log()[-2000:]
            time.sleep(0.05)
        for index in range(2, 5):  # the same association, after the reload
            assert assoc.send_c_store(synthetic_mr(study_uid=study, instance=index)).Status == 0
        assert assoc.is_established
        # a broken config is refused and the node keeps the running one
        node.config_path.write_text("[node]\nno_such_key = 1\n")
        node.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while "reload refused" not in node.log():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert assoc.send_c_store(synthetic_mr(study_uid=study, instance=5)).Status == 0
    finally:
        if assoc.is_established:
            assoc.release()


def test_disk_floor_refuses_with_a700_and_recovers(tmp_path):
    port = free_port()
    node = NodeProcess(tmp_path, port, pipelines=(), quiet_seconds=3600).start()
    try:
        assert store_one(port, synthetic_mr()).Status == 0
        free_mb = shutil.disk_usage(tmp_path).free // (1024 * 1024)
        node.config_path.write_text(node.config_text.replace("min_free_space_mb = 10",
                                                             f"min_free_space_mb = {free_mb + 100_000}"))
        node.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while True:
            status = store_one(port, synthetic_mr())
            if status.Status == 0xA700:
                break
            assert time.monotonic() < deadline, "the raised floor never took effect"
            time.sleep(0.1)
        assert "under the floor" in str(status.ErrorComment)
        assert echo_status(port) == 0  # still serving
        stored = len(node.db_rows("SELECT * FROM instances"))
        assert store_one(port, synthetic_mr()).Status == 0xA700
        assert len(node.db_rows("SELECT * FROM instances")) == stored  # nothing half-stored
        assert not [p for p in (tmp_path / "store" / "spool").rglob(".*.tmp")]
        node.config_path.write_text(node.config_text)  # space "returns"
        node.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while store_one(port, synthetic_mr()).Status != 0:
            assert time.monotonic() < deadline, "never recovered after the floor came down"
            time.sleep(0.1)
        assert len(node.db_rows("SELECT * FROM instances")) >= stored + 1
    finally:
        assert node.stop() == 0


def test_systemd_unit_exposure_stays_low():
    import re
    import shutil

    from tests.node.nodeproc import REPO

    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(REPO / "systemd" / "dicomnode.service")],
                            capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for dicomnode.service: ([0-9.]+)", result.stdout + result.stderr)
    assert match, result.stdout[-2000:] + result.stderr[-2000:]
    assert float(match.group(1)) <= 2.0, f"exposure {match.group(1)} (was 1.7 when this test was written)"


def test_json_logs_carry_the_hashed_study_id_across_stages(tmp_path):
    import json

    from dicomnode.uids import short_hash

    port = free_port()
    node = NodeProcess(tmp_path, port, pipelines=(), quiet_seconds=1, extra="json_format = true\n").start()
    try:
        study = synthetic_mr().StudyInstanceUID
        for index in range(2):
            assert store_one(port, synthetic_mr(study_uid=study, instance=index, position=8.0 * index)).Status == 0
        node.wait_states(states=("done", "failed"), timeout=120)
    finally:
        assert node.stop() == 0
    entries = []
    for line in node.log().splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    tagged = [e for e in entries if e.get("study") == short_hash(study)]
    loggers = {e["logger"] for e in tagged}
    # analysis stages (study understanding, the node's analysis step); completion logs from the scheduler thread
    # in dicomnode/studies.py carry the hashed id in the message only
    assert {"dicomnode.cmr", "dicomnode.node"} <= loggers, loggers
    assert study not in node.log()
