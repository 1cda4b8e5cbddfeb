"""`dicomnode engines list|build` through the parser the node's CLI adds."""
from __future__ import annotations

import argparse
import json

import pytest

from dicomnode.config import InferenceConfig
from dicomnode.inference import Runtime, probe
from dicomnode.inference.cli import add_engines_parser, main


def write_config(tmp_path, models_dir) -> str:
    path = tmp_path / "node.toml"
    path.write_text(f'[inference]\nmodels_dir = "{models_dir}"\nengine_cache_dir = "{tmp_path / "engines"}"\n')
    return str(path)


def test_parser_adds_build_and_list():
    parser = argparse.ArgumentParser(prog="dicomnode")
    add_engines_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["engines", "build", "--model", "lge_unet", "--model", "cine_unet", "--precision", "fp32", "--force"])
    assert args.model == ["lge_unet", "cine_unet"] and args.precision == "fp32" and args.force and callable(args.func)
    assert parser.parse_args(["engines", "list", "--json"]).json
    with pytest.raises(SystemExit):
        parser.parse_args(["engines", "build", "--precision", "int8"])


def test_list_shows_models_hashes_uids_and_backends(tmp_path, models_dir, capsys):
    config = write_config(tmp_path, models_dir)
    assert main(["engines", "list", "--config", config]) == 0
    text = capsys.readouterr().out
    runtime = Runtime(InferenceConfig(models_dir=models_dir))
    for name in ("tiny2d", "tiny3d"):
        card = runtime.card(name)
        assert card.sha256 in text and card.algorithm().device_uid in text
    assert "onnxruntime" in text and "engines     none cached" in text
    assert "[1, 1, 4, 32, 32] .. [1, 1, 12, 64, 64] .. [2, 1, 24, 128, 128]" in text

    assert main(["engines", "list", "--config", config, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in info["models"]] == ["tiny2d", "tiny3d"]
    assert info["models"][1]["max_batch"] == 2 and "onnxruntime" in info["models"][0]["backends"]
    assert info["auto_order"][-1] == "onnxruntime/cpu"


def test_list_marks_stale_engines(tmp_path, models_dir, capsys):
    engines = tmp_path / "engines"
    engines.mkdir()
    (engines / "tiny2d-old.engine").write_bytes(b"x")
    (engines / "tiny2d-old.engine.json").write_text(json.dumps({"model_name": "tiny2d", "model_sha256": "0" * 64}))
    assert main(["engines", "list", "--config", write_config(tmp_path, models_dir)]) == 0
    assert "tiny2d-old.engine (stale: model changed)" in capsys.readouterr().out


def test_build_without_tensorrt_exits_non_zero_with_a_clear_message(tmp_path, models_dir, capsys, monkeypatch):
    monkeypatch.setattr(probe, "tensorrt_version", lambda: None)
    assert main(["engines", "build", "--config", write_config(tmp_path, models_dir)]) == 2
    err = capsys.readouterr().err
    assert "TensorRT is not installed" in err and "pip install 'dicomnode[tensorrt]'" in err


def test_build_with_a_broken_config_exits_non_zero(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[inference]\nbackend = 'tpu'\n")
    assert main(["engines", "build", "--config", str(bad)]) == 2
    assert "inference.backend" in capsys.readouterr().err


def test_engines_commands_never_import_torch(tmp_path, models_dir):
    import subprocess
    import sys

    config = write_config(tmp_path, models_dir)
    script = ("import sys; from dicomnode.inference.cli import main; "
              f"codes = [main(['engines', 'list', '--config', {config!r}]), main(['engines', 'build', '--config', {config!r}])]; "
              "print(codes, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].endswith("False")
