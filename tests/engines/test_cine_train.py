"""Cine training recipe: stratified subject-level folds, checkpoint-resume, bf16 only where the CPU has it."""
import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.cine import train
from engines.cine.data import BIT, CANVAS_SIZE, acdc_folds
from dicomnode.labels import Label


def test_acdc_folds_are_disjoint_stratified_and_cover_all_100():
    folds = acdc_folds(5)
    flat = [p for fold in folds for p in fold]
    assert len(flat) == 100 and len(set(flat)) == 100
    for fold in folds:
        numbers = [int(p[-3:]) for p in fold]
        assert [sum((n - 1) // 20 == g for n in numbers) for g in range(5)] == [4, 4, 4, 4, 4]
    assert acdc_folds(5) == folds  # fixed seed
    with pytest.raises(ValueError, match="divide"):
        acdc_folds(3)


def test_bf16_only_with_native_support(tmp_path):
    plain = tmp_path / "cpuinfo"
    plain.write_text("flags\t\t: fpu sse avx2 avx512f\n")
    amx = tmp_path / "cpuinfo_amx"
    amx.write_text("flags\t\t: fpu avx512f amx_bf16 amx_tile\n")
    assert not train.cpu_has_native_bf16(plain)
    assert train.cpu_has_native_bf16(amx)
    assert not train.cpu_has_native_bf16(tmp_path / "missing")


def _data(n=6):
    rng = np.random.default_rng(0)
    images = rng.random((n, CANVAS_SIZE, CANVAS_SIZE)).astype(np.float32) * 100
    allowed = np.full((n, CANVAS_SIZE, CANVAS_SIZE), BIT[Label.BACKGROUND], np.uint8)
    allowed[:, 80:110, 80:110] = BIT[Label.LV_BLOOD_POOL]
    subjects = np.array(["patient001", "patient002", "patient003", "SCD0000401", "Case3002", "patient004"])
    sources = np.array(["acdc", "acdc", "acdc", "sunnybrook", "myops", "acdc"])
    return images, allowed, subjects, sources


def _args(out: Path, steps: int):
    return argparse.Namespace(out=out, steps=steps, save_every=1, batch=2, lr=1e-3, threads=1, seed=1,
                              sunnybrook_weight=4.0)


def test_a_stopped_run_resumes_where_it_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "WIDTHS", (4, 8))
    torch.manual_seed(0)
    data = _data()
    path = train.train_one("fold0", ["patient004"], data, _args(tmp_path, 2), torch.device("cpu"))
    first = torch.load(path, weights_only=False)
    assert first["iterations"] == 2 and first["final"]
    assert "patient004" in first["test_subjects"] and "patient004" not in first["train_subjects"]
    assert {"Case3002", "SCD0000401"} <= set(first["train_subjects"])
    # a longer budget continues from iteration 2 (model, optimiser, sampler) instead of starting over
    path = train.train_one("fold0", ["patient004"], data, _args(tmp_path, 4), torch.device("cpu"))
    second = torch.load(path, weights_only=False)
    assert second["iterations"] == 4 and second["optimiser"]["state"][0]["step"].item() == 4
    assert not torch.equal(first["state_dict"]["head.weight"], second["state_dict"]["head.weight"])
    # a finished run is not trained again
    train.train_one("fold0", ["patient004"], data, _args(tmp_path, 4), torch.device("cpu"))
    assert torch.load(path, weights_only=False)["elapsed_s"] == second["elapsed_s"]
