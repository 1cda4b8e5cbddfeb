"""Destination mistakes caught early (break41c finding 4): `config check` warns (exit 0) about a destination host
that does not resolve and a listen port already in use; `serve` and a SIGHUP reload log a WARNING for each
destination that does not answer a C-ECHO."""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time

from dicomnode.cli import main
from dicomnode.config import Config, DestinationConfig
from dicomnode.dispatch import check_destinations
from dicomnode.preflight import listen_port_warnings
from tests.node.nodeproc import NodeProcess
from tests.node.test_send_echo_cli import UNRESOLVABLE, _config, pacs  # noqa: F401 (pacs: fixture)
from tests.peers import free_port


def test_config_check_warns_about_a_destination_host_that_does_not_resolve(tmp_path, capsys):
    config = _config(tmp_path, ("pacs", UNRESOLVABLE, 104), ("local", "127.0.0.1", 104))
    assert main(["config", "check", str(config), "--roles", "receive,complete,dispatch"]) == 0
    captured = capsys.readouterr()
    assert "OK (2 destination(s)" in captured.out
    assert f"warning: destinations[pacs].host: '{UNRESOLVABLE}' does not resolve" in captured.err
    assert "destinations[local]" not in captured.err


def test_config_check_warns_about_a_listen_port_in_use(tmp_path, capsys):
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        config = tmp_path / "node.toml"
        config.write_text(f'[node]\nhost = "127.0.0.1"\nport = {port}\nstorage_dir = "{tmp_path / "store"}"\n')
        assert main(["config", "check", str(config), "--roles", "receive,complete,dispatch"]) == 0
        captured = capsys.readouterr()
        assert f"warning: node.port: {port} on 127.0.0.1 cannot be opened now" in captured.err
        assert "another process listens there" in captured.err
        assert main(["config", "check", str(config), "--roles", "dispatch"]) == 0  # no receiving: no port
        assert "node.port" not in capsys.readouterr().err
    assert main(["config", "check", str(config), "--roles", "receive,complete,dispatch"]) == 0
    assert "node.port" not in capsys.readouterr().err


def test_check_destinations_warns_about_each_destination_that_does_not_answer(pacs, caplog):
    dead = free_port()
    destinations = [DestinationConfig(name="good", ae_title="PACS", host="127.0.0.1", port=pacs.port),
                    DestinationConfig(name="gone", ae_title="PACS", host="127.0.0.1", port=dead)]
    with caplog.at_level(logging.INFO, logger="dicomnode.dispatch"):
        found = check_destinations(destinations, "DICOMNODE", timeout=5)
    assert found["good"] is None and "Connection refused" in found["gone"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith(f"destination gone (PACS@127.0.0.1:{dead}) does not "
                                                         f"answer C-ECHO")


def test_serve_and_a_reload_warn_about_a_destination_that_does_not_answer(tmp_path):
    dead = free_port()
    node = NodeProcess(tmp_path / "n", free_port(), destinations={"GONE": ("127.0.0.1", dead)})
    node.start()
    try:
        expected = f"destination gone (GONE@127.0.0.1:{dead}) does not answer C-ECHO"
        deadline = time.monotonic() + 30
        while expected not in node.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert expected in node.log()
        moved = free_port()  # the PACS moved, and the config was edited to a port where nothing listens
        node.config_path.write_text(node.config_text.replace(f"port = {dead}", f"port = {moved}"))
        node.process.send_signal(signal.SIGHUP)
        expected = f"destination gone (GONE@127.0.0.1:{moved}) does not answer C-ECHO"
        deadline = time.monotonic() + 30
        while expected not in node.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert expected in node.log() and "configuration reloaded" in node.log()
    finally:
        node.stop()


def test_a_port_that_cannot_be_opened_for_another_reason_is_not_blamed_on_another_process():
    """node.host not an address of this machine (a config checked on a workstation): the OS's reason alone
    (review41b F8). 192.0.2.1 is TEST-NET-1 (RFC 5737), never a local address."""
    config = Config.model_validate({"node": {"host": "192.0.2.1", "port": free_port()}})
    (warning,) = listen_port_warnings(config)
    assert "(Cannot assign requested address)" in warning and "another process" not in warning


def test_a_port_held_by_this_configs_own_running_node_is_not_warned_about(tmp_path):
    """break48a #5: the unit's ExecReload runs `config check` while the node holds node.port; that node (its pid in
    node.storage_dir/node.lock, running on this machine) is not "another process". A lock naming a pid that no
    longer runs, or another machine, still gets the warning."""
    store = tmp_path / "store"
    store.mkdir()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        config = Config.model_validate({"node": {"port": busy.getsockname()[1], "storage_dir": str(store)}})
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout.strip()
        for holder, warned in ((f"pid {os.getpid()} on {socket.gethostname()}", False),
                               (f"pid {gone} on {socket.gethostname()}", True),
                               (f"pid {os.getpid()} on another-machine.example", True)):
            (store / "node.lock").write_text(f"{holder}: dicomnode serve (single node), since 2026-12-07 10:00:00\n")
            warnings = listen_port_warnings(config)
            assert bool(warnings) == warned, (holder, warnings)
        (store / "node.lock").unlink()
        assert "another process listens there" in listen_port_warnings(config)[0]
