"""`dicomnode process` and its --out folder: one run's results only, a file given as --out, non-DICOM input."""
from __future__ import annotations

import json
import os
from pathlib import Path

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
    assert main(["process", str(inputs), "--out", str(tmp_path / "out")]) == 1  # no study: not "all good"
    captured = capsys.readouterr()
    shown = captured.out
    assert "Files that belong to no readable study" in shown and "Study None" not in shown
    assert "notes.txt: not a DICOM file (no DICOM File Meta Information" in shown and "force=True" not in shown
    assert f"error: no DICOM study found in {inputs}: 1 file(s), none DICOM" in captured.err


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


def test_a_missing_or_corrupt_cine_model_is_the_nodes_failure_not_a_clean_decline(tmp_path, capsys):
    """Every shipped model but the cine one, then a cine model cut short: each time `process` exits 1 naming the cine
    pipeline as unavailable (as for the LGE model), so that `serve` marks the study failed and `retry` can re-run it."""
    from dicomnode.inference.runtime import shipped_models_dir
    from tests.hardening.hardening_support import synthetic_mr

    inputs = tmp_path / "in"
    inputs.mkdir()
    synthetic_mr().save_as(inputs / "mr.dcm", enforce_file_format=True)
    models = tmp_path / "models"
    models.mkdir()
    for item in shipped_models_dir().iterdir():
        if not item.name.startswith("cine_unet"):
            (models / item.name).symlink_to(item)
    config = tmp_path / "node.toml"
    config.write_text(f'[inference]\nmodels_dir = "{models}"\nbackend = "onnxruntime"\n')
    assert main(["process", str(inputs), "--out", str(tmp_path / "out"), "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "pipeline cine is unavailable" in err and "cine_unet" in err, err

    (models / "cine_unet.json").symlink_to(shipped_models_dir() / "cine_unet.json")
    (models / "cine_unet.onnx").write_bytes((shipped_models_dir() / "cine_unet.onnx").read_bytes()[:100_000])
    assert main(["process", str(inputs), "--out", str(tmp_path / "out2"), "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "pipeline cine is unavailable" in err, err


def test_an_output_folder_that_cannot_be_written_is_refused_before_any_analysis(tmp_path, capsys):
    from tests.hardening.hardening_support import synthetic_mr

    inputs = tmp_path / "in"
    inputs.mkdir()
    synthetic_mr().save_as(inputs / "mr.dcm", enforce_file_format=True)
    missing_parent = Path("/proc/no-such-folder/out")
    assert main(["process", str(inputs), "--out", str(missing_parent)]) == 1
    err = capsys.readouterr().err
    assert f"--out {missing_parent}: cannot write results there" in err and "Traceback" not in err, err
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        if not os.access(read_only, os.W_OK):  # root ignores the mode bits: /proc above stands for it there
            assert main(["process", str(inputs), "--out", str(read_only)]) == 1
            assert f"--out {read_only}: cannot write results there" in capsys.readouterr().err
    finally:
        read_only.chmod(0o755)


@pytest.mark.parametrize("studies", [1, 2])
def test_unreadable_files_are_listed_once_at_the_top_whatever_the_number_of_studies(tmp_path, capsys, studies):
    """A file that is not DICOM belongs to no study: summary.json lists it in `unreadable_files`, never in a study's
    `declined` nor as a study without a Study Instance UID."""
    from tests.hardening.hardening_support import synthetic_mr

    inputs = tmp_path / "in"
    inputs.mkdir()
    for number in range(studies):
        synthetic_mr().save_as(inputs / f"mr{number}.dcm", enforce_file_format=True)
    (inputs / "notes.txt").write_text("not DICOM")
    assert main(["process", str(inputs), "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["unreadable_files"] == [{"path": str(inputs / "notes.txt"), "reason": summary["unreadable_files"][0]["reason"]}]
    assert summary["unreadable_files"][0]["reason"].startswith("not a DICOM file")
    assert len(summary["studies"]) == studies and all(s["study_instance_uid"] for s in summary["studies"])
    assert not any("notes.txt" in d["reason"] for s in summary["studies"] for d in s["declined"])
    assert f"{inputs / 'notes.txt'}: not a DICOM file" in capsys.readouterr().out


def test_process_logs_redact_a_patients_name_words_in_that_patients_study_only(tmp_path):
    """`process` tags its lines with the study as `serve` does, so a one-word name part (a patient named ...^Cine) is
    redacted in that study's lines and nowhere else."""
    import subprocess
    import sys

    from dicomnode.uids import short_hash
    from tests.hardening.hardening_support import synthetic_mr

    inputs = tmp_path / "in"
    inputs.mkdir()
    cine_patient = synthetic_mr(patient_name="Cine^Annabel", patient_id="PX1")
    other_patient = synthetic_mr(patient_name="Other^Person", patient_id="PX2")
    for name, dataset in (("a.dcm", cine_patient), ("b.dcm", other_patient)):
        dataset.save_as(inputs / name, enforce_file_format=True)
    done = subprocess.run([sys.executable, "-m", "dicomnode.cli", "process", str(inputs), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    named, other = (short_hash(str(d.StudyInstanceUID)) for d in (cine_patient, other_patient))
    assert f"study {named}: [redacted] declined" in done.stderr, done.stderr[-3000:]
    assert f"study {other}: cine declined" in done.stderr, done.stderr[-3000:]
    assert "Annabel" not in done.stderr and "Cine^" not in done.stderr
