"""`dicomnode process` and its --out folder: one run's results only, a file given as --out, non-DICOM input."""
from __future__ import annotations

import json

import pytest

from dicomnode.cli import main
from dicomnode.process import OutputFolderError, clear_previous_run


def _previous_run(out, outputs):
    out.mkdir(parents=True, exist_ok=True)
    for output in outputs:
        (out / output).parent.mkdir(parents=True, exist_ok=True)
        (out / output).write_bytes(b"result")
    (out / "summary.json").write_text(json.dumps({"studies": [{"study_instance_uid": "1.2.3", "outputs": outputs}]}))


def test_a_rerun_replaces_the_previous_runs_results_and_leaves_other_files(tmp_path):
    out = tmp_path / "out"
    _previous_run(out, ["1.2.3/SEG_1.dcm", "1.2.3/SR_2.dcm"])
    (out / "notes.txt").write_text("the admin's own file")
    assert clear_previous_run(out) == 2
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # results, their study folder and summary gone
    assert clear_previous_run(out) == 0


def test_a_summary_listing_files_outside_the_folder_is_refused(tmp_path):
    _previous_run(tmp_path / "elsewhere", [])
    (tmp_path / "victim.dcm").write_bytes(b"keep me")
    out = tmp_path / "out"
    _previous_run(out, [])
    (out / "summary.json").write_text(json.dumps({"studies": [{"outputs": ["../victim.dcm"]}]}))
    with pytest.raises(OutputFolderError, match="lists files outside it"):
        clear_previous_run(out)
    assert (tmp_path / "victim.dcm").exists()
    (out / "summary.json").write_text("not json")
    with pytest.raises(OutputFolderError, match="not a previous run's"):
        clear_previous_run(out)


def test_process_names_a_file_given_as_out_and_reads_non_dicom_input_plainly(tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "notes.txt").write_text("not DICOM")
    (tmp_path / "afile").write_text("x")
    assert main(["process", str(inputs), "--out", str(tmp_path / "afile")]) == 1
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "Traceback" not in err
    assert main(["process", str(inputs), "--out", str(tmp_path / "out")]) == 0
    shown = capsys.readouterr().out
    assert "Files that belong to no readable study" in shown and "Study None" not in shown
    assert "notes.txt: not a DICOM file (no DICOM File Meta Information" in shown and "force=True" not in shown


def test_process_exits_non_zero_when_the_node_could_not_analyse_a_study(tmp_path, capsys):
    """design.md: exit 0 only when every study was analysed or cleanly declined; a model that is not there is the
    node's failure, named on stderr (summary.json still lists the study with the reason)."""
    from tests.hardening.hardening_support import synthetic_mr

    inputs = tmp_path / "in"
    inputs.mkdir()
    synthetic_mr().save_as(inputs / "mr.dcm", enforce_file_format=True)
    (tmp_path / "empty-models").mkdir()
    config = tmp_path / "node.toml"
    config.write_text(f'[inference]\nmodels_dir = "{tmp_path / "empty-models"}"\n')
    assert main(["process", str(inputs), "--out", str(tmp_path / "out"), "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "analysis failure(s), not the input's fault" in err and "is unavailable" in err
    (study,) = json.loads((tmp_path / "out" / "summary.json").read_text())["studies"]
    assert any("is unavailable" in d["reason"] for d in study["declined"])
