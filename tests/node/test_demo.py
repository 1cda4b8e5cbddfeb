"""The README's main job: `dicomnode demo` runs offline, end to end, and tells the reader what it did."""
from __future__ import annotations

import json
import subprocess
import sys


def test_demo_runs_end_to_end_and_explains_its_output(tmp_path):
    run = subprocess.run([sys.executable, "-m", "dicomnode", "demo", "--workdir", str(tmp_path / "demo")],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout
    assert "note: EMIDEC ships 8-bit PNGs without geometry" in out  # nominal mL / g are said to be nominal
    # ... and in the results themselves (summary, PDF, SR: its stack warning; break45a finding 12)
    assert "LGE input: the images state an ASSUMED pixel or slice spacing" in out and "mL and g are nominal" in out
    assert "LGE:" in out and "Cine LV:" in out and "n/a %" not in out
    assert "Traceback" not in run.stderr
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    studies = summary["studies"]
    assert len(studies) == 2
    assert any("lge" in s for s in studies) and any("cine" in s for s in studies)
    outputs = [output for s in studies for output in s["outputs"]]  # design.md: relative to summary.json's folder
    assert outputs and all((tmp_path / "demo" / output).is_file() for output in outputs), outputs[:3]
    received = [p for p in (tmp_path / "demo" / "pacs").iterdir() if p.suffix == ".dcm"]
    assert received, "the embedded PACS received no result"
