"""The layering holds (scripts/check_layers.py), and the checker itself finds cycles and upward imports."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
import check_layers  # noqa: E402 - a script, not a package module


def test_every_module_imports_without_cycles_or_upward_imports_and_the_node_without_torch():
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "check_layers.py")], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_checker_finds_a_cycle():
    assert check_layers.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert check_layers.cycles({"a": {"b"}, "b": set()}) == []


def _package(tmp_path: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = tmp_path / "dicomnode" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize("files, expected", [
    ({"state.py": "from dicomnode.node import Node\n", "node.py": "Node = 1\n"},
     "dicomnode.state (state) imports dicomnode.node (node), a layer above it"),
    ({"state.py": "def f():\n    from dicomnode import uids\n", "uids.py": ""},
     "function-level import of dicomnode.uids"),
    ({"spool.py": "import dicomnode.net.scp\n", "net/__init__.py": "", "net/scp.py": "import dicomnode.spool\n"},
     "import cycle: dicomnode.net.scp -> dicomnode.spool -> dicomnode.net.scp"),
    ({"cmr/__init__.py": "", "cmr/x.py": "import engines\n"}, "imports engines"),
])
def test_the_checker_flags(tmp_path, monkeypatch, files, expected):
    _package(tmp_path, {"__init__.py": "", **files})
    monkeypatch.setattr(check_layers, "ROOT", tmp_path)
    monkeypatch.setattr(check_layers, "PACKAGE", tmp_path / "dicomnode")
    problems = check_layers.static_problems()
    assert any(expected in problem for problem in problems), problems


def test_a_typing_only_import_is_not_an_upward_import(tmp_path, monkeypatch):
    _package(tmp_path, {"__init__.py": "", "node.py": "",
                        "types.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from dicomnode.node import N\n"})
    monkeypatch.setattr(check_layers, "ROOT", tmp_path)
    monkeypatch.setattr(check_layers, "PACKAGE", tmp_path / "dicomnode")
    assert check_layers.static_problems() == []
