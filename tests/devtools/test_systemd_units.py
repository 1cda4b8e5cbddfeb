"""The shipped systemd units (opsbreak finding 6 and its small items) and the README's install steps (finding 7):
a unit that keeps failing ends as failed instead of restarting for ever, start-up may take as long as loading the
models does, SIGTERM goes to the main process only, the role template waits for the shared spool's mount; the install
steps run setup.sh as root and copy no .git, .venv or spool. `systemd-analyze verify` where it is installed."""
from __future__ import annotations

import re
import shutil
import subprocess
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
    # READY=1 after every model is loaded, `config check` before it loads them too: 110 s measured under load
    assert seconds(sections["Service"]["TimeoutStartSec"][-1]) >= 300, name


def test_sigterm_goes_to_the_main_process_which_stops_its_helpers(unit):
    name, sections = unit
    assert sections["Service"]["KillMode"] == ["mixed"], name


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


def test_the_multi_machine_steps_run_node_commands_as_the_node_user():
    lines = shell_lines(readme_section("More than one machine"))
    for line in lines:
        if re.search(r"(^|\s)(\S*/)?dicomnode (state|status)\b", line):
            assert line.startswith("sudo -u dicomnode /opt/dicomnode/.venv/bin/dicomnode "), line
