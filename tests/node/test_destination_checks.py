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
from dicomnode import spool
from dicomnode.preflight import listen_port_warnings
from dicomnode.spool import LockHolder, StorageLock
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


def _listening(port: int = 0) -> socket.socket:
    busy = socket.socket()
    busy.bind(("127.0.0.1", port))
    busy.listen()
    return busy


def test_a_port_held_by_this_configs_own_running_node_is_not_warned_about(tmp_path, monkeypatch):
    """break48a #5, review48 #4: the unit's ExecReload runs `config check` while the node holds node.port; that node
    is not "another process" where facts show it: node.lock really locked (the kernel's lock table) by the pid its
    text names, which wrote the same node.port there. The text alone (it stays after the node stops, and pids are
    reused), another port, another machine or no /proc/locks still get the warning."""
    store = tmp_path / "store"
    store.mkdir()
    with _listening() as busy:
        port = busy.getsockname()[1]
        config = Config.model_validate({"node": {"port": port, "storage_dir": str(store)}})
        lock = StorageLock(store)
        lock.acquire(True, "dicomnode serve (single node)", port=port)
        try:
            assert f", node.port {port}, since " in (store / "node.lock").read_text()
            assert StorageLock.running_holder(store) == LockHolder(os.getpid(), port)
            assert listen_port_warnings(config) == []
            with _listening() as other:  # the config edited to a port another service listens on
                moved = config.model_copy(update={"node": config.node.model_copy(
                    update={"port": other.getsockname()[1]})})
                (warning,) = listen_port_warnings(moved)
                assert "another process listens there" in warning
                assert f"node.storage_dir, pid {os.getpid()}, listens on {port})" in warning
                assert "a change of node.port needs, does not start" in warning
            monkeypatch.setattr(spool, "PROC_LOCKS", str(tmp_path / "no-proc-locks"))  # not Linux: no proof
            assert StorageLock.running_holder(store) is None
            assert "another process listens there" in listen_port_warnings(config)[0]
            monkeypatch.undo()
        finally:
            lock.release()
        # the text stays after the node stopped, naming a pid that runs (this one: as a reused pid would)
        assert (store / "node.lock").read_text().startswith(f"pid {os.getpid()} on {socket.gethostname()}:")
        assert StorageLock.running_holder(store) is None
        assert "another process listens there" in listen_port_warnings(config)[0]
        for holder in (f"pid {os.getpid()} on another-machine.example", "garbage"):
            (store / "node.lock").write_text(f"{holder}: dicomnode serve (single node), node.port {port}, since "
                                             "2026-12-07 10:00:00\n")
            assert "another process listens there" in listen_port_warnings(config)[0], holder
        (store / "node.lock").unlink()
        assert "another process listens there" in listen_port_warnings(config)[0]


def test_a_lock_held_by_a_node_of_an_earlier_release_without_its_port_keeps_the_warning(tmp_path):
    """A lock file without `node.port` (written by an earlier release): held, but the port it listens on is not
    known, so a port in use is not assumed to be its own."""
    store = tmp_path / "store"
    store.mkdir()
    with _listening() as busy:
        config = Config.model_validate({"node": {"port": busy.getsockname()[1], "storage_dir": str(store)}})
        lock = StorageLock(store)
        lock.acquire(True, "dicomnode serve (single node)")
        try:
            assert StorageLock.running_holder(store) == LockHolder(os.getpid(), None)
            assert "another process listens there (a running node?)" in listen_port_warnings(config)[0]
        finally:
            lock.release()


def test_only_an_exclusive_lock_held_by_the_named_pid_on_the_lock_files_inode_counts(tmp_path, monkeypatch):
    """/proc/locks lines as the kernel writes them: a shared (READ) lock, one waited for ("->"), another pid's or
    another inode's is not the running node's."""
    store = tmp_path / "store"
    store.mkdir()
    (store / "node.lock").write_text("pid 4242 on " + socket.gethostname() + ": dicomnode serve (single node), "
                                     "node.port 11112, since 2026-12-07 10:00:00\n")
    inode = (store / "node.lock").stat().st_ino
    table = tmp_path / "locks"
    monkeypatch.setattr(spool, "PROC_LOCKS", str(table))
    for lines, held in ((f"1: FLOCK  ADVISORY  WRITE 4242 fe:00:{inode} 0 EOF", True),
                        (f"1: FLOCK  ADVISORY  READ  4242 fe:00:{inode} 0 EOF", False),
                        (f"1: FLOCK  ADVISORY  WRITE 4243 fe:00:{inode} 0 EOF", False),
                        (f"1: FLOCK  ADVISORY  WRITE 4242 fe:00:{inode + 1} 0 EOF", False),
                        (f"1: POSIX  ADVISORY  WRITE 9 fe:00:{inode} 0 EOF\n"
                         f"1: -> FLOCK  ADVISORY  WRITE 4242 fe:00:{inode} 0 EOF", False),
                        ("", False)):
        table.write_text(lines + "\n")
        holder = StorageLock.running_holder(store)
        assert holder == (LockHolder(4242, 11112) if held else None), lines


def test_config_check_before_a_reload_of_a_running_node_and_after_it_stopped(tmp_path, capsys):
    """review48 #4 end to end: a running `serve` writes its node.port into node.lock, and `config check` of its
    config says nothing about the port it holds; once it stopped, a process that got its pid and listens on the
    port is warned about (the lock file's text stays, the lock does not)."""
    node = NodeProcess(tmp_path / "n", free_port())
    node.start()
    try:
        assert f"pid {node.process.pid} on " in (node.storage / "node.lock").read_text()
        assert f", node.port {node.port}, since " in (node.storage / "node.lock").read_text()
        assert main(["config", "check", str(node.config_path), "--roles", "receive"]) == 0
        assert "node.port" not in capsys.readouterr().err
    finally:
        assert node.stop() == 0
    squatter = subprocess.Popen([sys.executable, "-c", "import socket, sys, time; s = socket.socket(); "
                                 f"s.bind(('127.0.0.1', {node.port})); s.listen(); print('ok', flush=True); "
                                 "time.sleep(120)"], stdout=subprocess.PIPE, text=True)
    try:
        assert squatter.stdout.readline().strip() == "ok"
        text = (node.storage / "node.lock").read_text()  # as if the pid had been reused by the squatter
        (node.storage / "node.lock").write_text(text.replace(f"pid {node.process.pid} ", f"pid {squatter.pid} ", 1))
        assert main(["config", "check", str(node.config_path), "--roles", "receive"]) == 0
        assert "another process listens there" in capsys.readouterr().err
    finally:
        squatter.kill()
        squatter.wait(10)
