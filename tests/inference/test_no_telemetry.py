"""ONNX Runtime's usage telemetry (a device ID and an event database under ~/.cache/Microsoft/DeveloperTools, uploaded
to Microsoft) stays off in every process of the node (break48a #1): the package sets ORT_DISABLE_TELEMETRY before
any of its modules imports onnxruntime."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(home: Path, code: str, **env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME")}
    environment.update(HOME=str(home), PYTHONPATH=str(ROOT), **env)
    return subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=120,
                          cwd=home)


@pytest.mark.parametrize("module", ["dicomnode.inference.probe", "dicomnode.cmr.learned",
                                    "dicomnode.analysis.text_encoder"])
def test_loading_onnxruntime_through_the_node_records_no_telemetry(tmp_path, module):
    code = (f"import {module}, os\n"
            "from dicomnode.inference import probe\n"
            "probe.onnxruntime_providers()\n"  # imports onnxruntime, as every backend, the classifier and retrieval do
            "print(os.environ['ORT_DISABLE_TELEMETRY'])\n")
    done = _run(tmp_path, code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1"]
    assert not (tmp_path / ".cache" / "Microsoft").exists(), sorted(p.name for p in tmp_path.rglob("*"))
    assert "telemetry" not in done.stderr


def test_an_admins_own_setting_is_kept(tmp_path):
    done = _run(tmp_path, "import dicomnode, os; print(os.environ['ORT_DISABLE_TELEMETRY'])",
                ORT_DISABLE_TELEMETRY="0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0"]

