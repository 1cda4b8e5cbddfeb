"""The shipped systemd units (opsbreak finding 6 and its small items) and the README's install steps (finding 7):
a unit that keeps failing ends as failed instead of restarting for ever, start-up may take as long as loading the
models does, SIGTERM goes to the main process only, the role template waits for the shared spool's mount; the install
steps run setup.sh as root and copy no .git, .venv or spool. `systemd-analyze verify` where it is installed."""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNITS = ("dicomnode.service", "dicomnode@.service")


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """section -> key -> every value assigned (systemd keys may repeat), comments and blank lines left out."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None and "=" in line, line
        key, value = line.split("=", 1)
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def seconds(value: str) -> float:
    """A systemd time span ('200', '30min', '1h 30s', '10s') in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(number) * units[unit]
    return total


@pytest.fixture(params=UNITS)
def unit(request):
    return request.param, parse_unit((REPO / "systemd" / request.param).read_text())


def test_a_unit_that_keeps_failing_ends_as_failed_instead_of_restarting_for_ever(unit):
    name, sections = unit
    service, unit_section = sections["Service"], sections["Unit"]
    assert service["Restart"] == ["on-failure"], name
    # the start rate limit belongs in [Unit]: in [Service] systemd ignores it (and keeps its 10 s / 5 default)
    assert "StartLimitIntervalSec" not in service and "StartLimitBurst" not in service, name
    interval = seconds(unit_section["StartLimitIntervalSec"][-1])
    burst = int(unit_section["StartLimitBurst"][-1])
    restart = seconds(service["RestartSec"][-1])
    # the limit is reachable: `burst` failed starts, each one RestartSec after the last and taking a couple of minutes
    # to load the models before it fails, fit in the interval (systemd's default 10 s / 5 with RestartSec=5 never did)
    assert burst * (restart + 120) <= interval, (name, interval, burst, restart)
    assert 2 <= burst <= 10, name


def test_start_up_may_take_as_long_as_loading_every_model_twice(unit):
    name, sections = unit
    # READY=1 after every model is loaded, `config check` before it opens them too (about 13 s measured in session 48),
    # and a start may also migrate a large state or wait for a shared spool
    assert seconds(sections["Service"]["TimeoutStartSec"][-1]) >= 300, name


def test_sigterm_goes_to_the_main_process_which_stops_its_helpers(unit):
    name, sections = unit
    assert sections["Service"]["KillMode"] == ["mixed"], name


def test_a_reload_checks_the_config_before_it_sends_sighup(unit):
    """break48a #5: `kill -HUP` alone always succeeds, so `systemctl reload` of a broken config said nothing; the
    check runs first, on the file and roles `serve` runs with, and a failed check stops the reload before SIGHUP."""
    name, sections = unit
    service = sections["Service"]
    *checks, signal = service["ExecReload"]
    assert signal == "/bin/kill -HUP $MAINPID", name
    serve = service["ExecStart"][-1].split()
    assert serve[1:3] == ["serve", "--config"], name
    # the same binary, file and --roles; --no-probe: the machine's present state does not refuse a reload (review48 #5)
    expected = [serve[0], "config", "check", serve[3], *serve[4:], "--no-probe"]
    assert [check.split() for check in checks] == [expected], (name, checks)
    start_checks = [c for c in service["ExecStartPre"] if c.split()[1:3] == ["config", "check"]]
    assert [c.split() for c in start_checks] == [expected[:-1]], name  # a start still checks everything
    assert not checks[0].startswith("-"), name  # a "-" prefix would ignore the check's failure


def _exec_reload_check(tmp_path, body: str, key: str = "ExecReload") -> subprocess.CompletedProcess:
    """The single-node unit's ExecReload (or ExecStartPre) config check, run as systemd runs it, with this machine's
    python for the venv's dicomnode and a config file of `body`."""
    config = tmp_path / "dicomnode.toml"
    config.write_text(body)
    sections = parse_unit((REPO / "systemd" / "dicomnode.service").read_text())
    (command,) = [c.split() for c in sections["Service"][key] if c.split()[1:3] == ["config", "check"]]
    assert command[0] == "/opt/dicomnode/.venv/bin/dicomnode" and command[3] == "/etc/dicomnode/dicomnode.toml"
    command = [sys.executable, "-m", "dicomnode", *command[1:3], str(config), *command[4:]]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)


def test_the_exec_reload_check_fails_on_a_broken_config_and_passes_a_good_one(tmp_path):
    with socket.socket() as probe:  # config check refuses port 0 and warns about a port in use: a free one
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    good = (f'[node]\nstorage_dir = "{tmp_path / "store"}"\nport = {port}\n[studies]\nquiet_seconds = 30\n'
            f'[analysis.suggestions]\nenabled = false\n[[routes]]\nname = "store"\npipelines = []\n')
    passed = _exec_reload_check(tmp_path, good)
    assert passed.returncode == 0, passed.stderr
    failed = _exec_reload_check(tmp_path, good.replace("quiet_seconds", "quiet_secnds"))
    assert failed.returncode == 1
    assert "studies.quiet_secnds: unknown key; did you mean quiet_seconds?" in failed.stderr


def test_the_exec_reload_check_does_not_refuse_a_reload_for_the_machines_state(tmp_path):
    """review48 #5: a storage folder the node cannot write now (a full disk: here a file where its parent folder
    should be, which fails the same writability check for root too) fails a start, not a reload, which is how an
    admin applies retention.* or node.min_free_space_mb to get out of it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "full").write_text("not a folder")
    body = (f'[node]\nstorage_dir = "{tmp_path / "full" / "store"}"\nport = {port}\n[studies]\nquiet_seconds = 30\n'
            f'[analysis.suggestions]\nenabled = false\n[[routes]]\nname = "store"\npipelines = []\n')
    start = _exec_reload_check(tmp_path, body, key="ExecStartPre")
    assert start.returncode == 1 and "node.storage_dir" in start.stderr, start.stderr
    reload = _exec_reload_check(tmp_path, body)
    assert reload.returncode == 0, reload.stderr
    assert "--no-probe: storage and log folders, shared spool, state database, node.host and node.port not checked" \
        in reload.stdout
    broken = _exec_reload_check(tmp_path, body.replace("quiet_seconds", "quiet_secnds"))
    assert broken.returncode == 1 and "studies.quiet_secnds" in broken.stderr  # a config error still refuses it


def test_the_role_template_waits_for_the_shared_spools_mount():
    sections = parse_unit((REPO / "systemd" / "dicomnode@.service").read_text())
    mounts = " ".join(sections["Unit"].get("RequiresMountsFor", [])).split()
    shared = [path.lstrip("-") for value in sections["Service"]["ReadWritePaths"] for path in value.split()
              if path.lstrip("-") != "/var/lib/dicomnode"]
    assert shared and all(path in mounts for path in shared), (mounts, shared)
    assert "remote-fs.target" in " ".join(sections["Unit"]["After"])


def test_systemd_analyze_verify_finds_no_unknown_or_misplaced_key(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    shutil.copy(REPO / "systemd" / "dicomnode.service", tmp_path / "dicomnode.service")
    shutil.copy(REPO / "systemd" / "dicomnode@.service", tmp_path / "dicomnode@dispatch.service")  # an instance
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "dicomnode.service"),
                             str(tmp_path / "dicomnode@dispatch.service")], capture_output=True, text=True, timeout=60)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    # this machine has no /opt/dicomnode install: that, and only that, may be said
    problems = [line for line in lines if "/opt/dicomnode/.venv/bin/dicomnode is not executable" not in line]
    assert not [line for line in problems if re.search(r"Unknown|Invalid|ignoring|Failed to parse|not valid", line)], \
        problems


def readme_section(title: str) -> str:
    text = (REPO / "README.md").read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 3)
    return text[start:end if end != -1 else len(text)]


def shell_lines(section: str) -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    return [line.split("#", 1)[0].strip() for block in blocks for line in block.splitlines()
            if line.split("#", 1)[0].strip()]


def test_the_readme_install_steps_run_setup_as_root_and_copy_no_git_venv_or_spool():
    lines = shell_lines(readme_section("Running under systemd"))
    install = " && ".join(lines)
    assert "cp -r ." not in install  # it copied .git (1 GB), .venv and a ./var/dicomnode spool (patient data)
    assert any("git archive" in line and "sudo tar" in line and "/opt/dicomnode" in line for line in lines), lines
    setup = [line for line in lines if "setup.sh" in line]
    assert setup and all(line.startswith("sudo ") and "(cd" not in line for line in setup), setup
    for line in lines:  # every step that writes to /opt, /etc or systemd runs as root
        for part in line.split("&&"):
            part = part.strip()
            if re.search(r"(^|\s)(/opt/|/etc/)", part) and part.split()[0] not in ("sudo", "sudoedit", "git"):
                pytest.fail(f"not run as root: {part}")


@pytest.mark.parametrize("section", ["Running under systemd", "More than one machine"])
def test_the_install_steps_run_node_commands_as_the_node_user_in_one_form(section):
    """break48a #6: one form for every command, the one the production install puts on PATH (setup.sh --production
    links /usr/local/bin/dicomnode, which sudo's secure_path holds)."""
    lines = shell_lines(readme_section(section))
    commands = [line for line in lines if re.search(r"(^|\s)(\S*/)?dicomnode (state|status|echo|retry)\b", line)]
    assert commands or section != "More than one machine"
    for line in commands:
        assert line.startswith("sudo -u dicomnode dicomnode "), line


def test_the_readme_installs_the_production_set_up_with_the_systems_python_and_lists_the_keys_to_edit():
    """break48a #7, #8: no torch or test tools on a production machine, a Python the service user can run, and the
    keys a literal install must change, with the drop-in for a spool on a data volume."""
    section = readme_section("Running under systemd")
    (setup,) = [line for line in shell_lines(section) if "setup.sh" in line]
    assert setup == "sudo PYTHON=/usr/bin/python3 /opt/dicomnode/scripts/setup.sh --production"
    for key in ("`node.host`", "`node.allowed_calling_aes`", "`[[destinations]]`", "`node.storage_dir`"):
        assert f"| {key} |" in section, key
    assert "#   ReadWritePaths=/data/dicomnode" in section and "sudo systemctl edit dicomnode`" in section
    example = (REPO / "config" / "dicomnode.toml").read_text()
    node = example.split("\n[node]\n", 1)[1].split("\n[", 1)[0]
    for key in ("host = ", "storage_dir = ", "allowed_calling_aes = "):
        (line,) = [line for line in node.splitlines() if line.startswith(key)]
        assert "EDIT" in line, line
    assert "EDIT" in example.split("\n[[destinations]]", 1)[0].rsplit("\n\n", 1)[1]  # the comment above it


def _setup(tmp_path, python: Path, *args: str) -> subprocess.CompletedProcess:
    """scripts/setup.sh run from a copy of the checkout's scripts in tmp_path (outside /root and /home)."""
    (tmp_path / "scripts").mkdir(exist_ok=True)
    shutil.copy(REPO / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    return subprocess.run(["bash", str(tmp_path / "scripts" / "setup.sh"), *args], capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHON": str(python),
                                            "DICOMNODE_BIN_DIR": str(tmp_path / "bin")})


def test_the_production_set_up_refuses_a_python_the_service_user_cannot_run(tmp_path):
    """break48a #7: a venv made from a pyenv Python under /root fails under the unit (ProtectHome=yes, and /root is
    private): refused before anything is made. A stand-in interpreter that reports such a location."""
    fake = tmp_path / "python3"
    fake.write_text("#!/bin/sh\necho /home/admin/.pyenv/versions/3.11.7/bin/python3.11\n")
    fake.chmod(0o755)
    refused = _setup(tmp_path, fake, "--production")
    assert refused.returncode == 1
    assert "/home/admin/.pyenv/versions/3.11.7/bin/python3.11, under /root or /home" in refused.stderr
    assert "PYTHON=/usr/bin/python3" in refused.stderr and not (tmp_path / ".venv").exists()
    # the developer's and CI's set-up (no --production) does not ask
    assert "under /root or /home" not in _setup(tmp_path, fake).stderr
    assert _setup(tmp_path, fake, "--prod").returncode == 2  # usage


def test_the_production_set_up_refuses_this_machines_pyenv_python(tmp_path):
    private = [path for path in Path("/root/.pyenv/versions").glob("3.1[1-9]*/bin/python3")] \
        if os.access("/root/.pyenv/versions", os.R_OK) else []
    if not private:
        pytest.skip("no pyenv Python under /root on this machine")
    refused = _setup(tmp_path, private[0], "--production")
    assert refused.returncode == 1 and "under /root or /home" in refused.stderr


def test_the_log_file_mode_the_docs_state_is_the_one_the_node_uses():
    """break48a #12: the README said 0640, the logrotate snippet 0600; the node creates it 0640 whatever the umask."""
    from dicomnode.observe import LOG_FILE_MODE
    mode = f"{LOG_FILE_MODE:04o}"
    snippet = (REPO / "config" / "dicomnode.logrotate").read_text()
    assert re.findall(r"mode (0\d{3})", snippet) == [mode]
    assert re.findall(r"creates the file with mode `(0\d{3})`", readme_section("Running under systemd")) == [mode]


def test_the_units_start_up_comment_states_a_measured_time_under_the_timeout(unit):
    name, _ = unit
    text = (REPO / "systemd" / name).read_text()
    (measured,) = re.findall(r"about (\d+) s measured", text)
    assert "~110 s" not in text  # the figure the units gave before it was measured again (session 48)
    assert int(measured) * 10 <= seconds(parse_unit(text)["Service"]["TimeoutStartSec"][-1]), name


def test_units_keep_caches_out_of_the_spool_and_telemetry_off(unit):
    """HOME of the service user is its spool (/var/lib/dicomnode): matplotlib's and other caches go to the unit's
    CacheDirectory instead, and ONNX Runtime's telemetry stays off for every process of the unit (break48a #1)."""
    _, sections = unit
    service = sections["Service"]
    environment = " ".join(service.get("Environment", []))
    assert "XDG_CACHE_HOME=/var/cache/dicomnode" in environment
    assert "MPLCONFIGDIR=/var/cache/dicomnode/" in environment
    assert "ORT_DISABLE_TELEMETRY=1" in environment
    assert service.get("CacheDirectory") == ["dicomnode"]
