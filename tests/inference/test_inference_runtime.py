"""Runtime on ONNX Runtime CPU: loading, chunked batches, backend choice, GPU worker queue, TensorRT fallback path."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from inference_models import pointwise_reference, pointwise_weights, write_pointwise_model

from dicomnode.config import InferenceConfig
from dicomnode.inference import BackendUnavailable, Runtime, RuntimeErrorNoModel, probe
from dicomnode.inference.batching import chunk_bounds, run_in_chunks
from dicomnode.inference.runtime import LoadedModel
from dicomnode.inference.worker import DeviceWorker

REPO = Path(__file__).resolve().parents[2]


def runtime_for(folder: Path, **overrides) -> Runtime:
    return Runtime(InferenceConfig(models_dir=folder, backend=overrides.pop("backend", "onnxruntime"), **overrides))


def test_runs_model_and_matches_its_arithmetic(models_dir):
    model = runtime_for(models_dir).model("tiny2d")
    x = np.random.default_rng(1).normal(size=(3, 1, 20, 24)).astype(np.float64)  # float64 in: cast to float32
    out = model.run(x)
    assert out.dtype == np.float32 and out.shape == (3, 3, 20, 24)
    np.testing.assert_allclose(out, pointwise_reference(x.astype(np.float32), *pointwise_weights(3, 0)), atol=1e-6)
    assert model.backend == "onnxruntime" and model.description == "onnxruntime[CPU]"
    assert model.algorithm.name == "test-tiny2d"


def test_big_batch_runs_in_chunks_and_concatenates(models_dir):
    runtime = runtime_for(models_dir)
    model = runtime.model("tiny3d")  # card max_batch = 2
    assert model.max_batch == 2
    calls = []
    real_run = model._session.run
    model._session.run = lambda chunk: calls.append(chunk.shape[0]) or real_run(chunk)
    x = np.random.default_rng(2).normal(size=(5, 1, 4, 8, 8)).astype(np.float32)
    out = model.run(x)
    assert calls == [2, 2, 1]
    np.testing.assert_allclose(out, pointwise_reference(x, *pointwise_weights(3, 1)), atol=1e-6)


def test_chunk_bounds_cover_evenly():
    assert chunk_bounds(360, 64) == [(i * 60, (i + 1) * 60) for i in range(6)]
    assert chunk_bounds(5, 2) == [(0, 2), (2, 4), (4, 5)]
    assert chunk_bounds(3, 8) == [(0, 3)]
    for total in range(0, 50):
        for size in range(1, 12):
            bounds = chunk_bounds(total, size)
            assert sum(b - a for a, b in bounds) == total
            assert all(0 < b - a <= size for a, b in bounds)
            assert all(bounds[i][1] == bounds[i + 1][0] for i in range(len(bounds) - 1))
    with pytest.raises(ValueError, match="max_batch"):
        chunk_bounds(3, 0)
    with pytest.raises(ValueError, match="empty batch"):
        run_in_chunks(lambda a: a, np.zeros((0, 1)), 4)


def test_models_load_once_and_warm_up_loads_all(models_dir):
    runtime = runtime_for(models_dir)
    assert runtime.names() == ["tiny2d", "tiny3d"]
    warm = runtime.warm_up()
    assert set(warm) == {"tiny2d", "tiny3d"}
    assert runtime.model("tiny2d") is warm["tiny2d"]
    runtime.close()
    assert runtime.model("tiny2d") is not warm["tiny2d"]


def test_missing_model_is_refused_clearly(models_dir):
    runtime = runtime_for(models_dir)
    assert not runtime.available("lge_unet")
    with pytest.raises(RuntimeErrorNoModel, match="lge_unet.onnx"):
        runtime.model("lge_unet")


def test_device_uid_follows_the_model_bytes(models_dir, tmp_path):
    first = runtime_for(models_dir).card("tiny2d").algorithm().device_uid
    other = tmp_path / "other"
    write_pointwise_model(other, "tiny2d", seed=7)
    second = runtime_for(other).card("tiny2d").algorithm().device_uid
    assert first.startswith("2.25.") and second.startswith("2.25.") and first != second
    assert len(first) <= 64 and first[5:].isdigit()
    # a recalibrated card (decision thresholds, same bytes) is another device; one without thresholds is not
    card_path = other / "tiny2d.json"
    card = json.loads(card_path.read_text())
    card.setdefault("output", {})["epicardial_logit_offset"] = 0.0
    card_path.write_text(json.dumps(card))
    assert runtime_for(other).card("tiny2d").algorithm().device_uid == second
    card["output"]["epicardial_logit_offset"] = 1.0
    card_path.write_text(json.dumps(card))
    recalibrated = runtime_for(other).card("tiny2d").algorithm().device_uid
    assert recalibrated != second and len(recalibrated) <= 64 and recalibrated[5:].isdigit()


def test_torch_backend_refuses_a_card_without_torch_entry(models_dir):
    with pytest.raises(BackendUnavailable, match="no 'torch' entry"):
        runtime_for(models_dir, backend="torch").model("tiny2d")


def test_auto_on_a_cpu_machine_is_onnxruntime_cpu(models_dir, monkeypatch):
    monkeypatch.setattr(probe, "gpus", lambda: ())
    runtime = runtime_for(models_dir, backend="auto")
    assert runtime.plan() == [("onnxruntime", "cpu")]
    assert runtime.model("tiny2d").description == "onnxruntime[CPU]"


@pytest.mark.parametrize(
    "tensorrt, cuda_python, providers, torch_cuda, expected",
    [
        (True, True, ["CUDAExecutionProvider", "CPUExecutionProvider"], True,
         [("tensorrt", "cuda"), ("onnxruntime", "cuda"), ("torch", "cuda"), ("onnxruntime", "cpu")]),
        (True, False, ["CPUExecutionProvider"], True, [("torch", "cuda"), ("onnxruntime", "cpu")]),
        (False, True, ["CUDAExecutionProvider", "CPUExecutionProvider"], False,
         [("onnxruntime", "cuda"), ("onnxruntime", "cpu")]),
        (False, False, ["CPUExecutionProvider"], False, [("onnxruntime", "cpu")]),
    ],
)
def test_auto_order_on_a_gpu_machine(monkeypatch, tensorrt, cuda_python, providers, torch_cuda, expected):
    monkeypatch.setattr(probe, "gpus", lambda: (probe.GPU(0, "NVIDIA H100 80GB HBM3", "9.0"),))
    monkeypatch.setattr(probe, "tensorrt_version", lambda: "10.7.0" if tensorrt else None)
    monkeypatch.setattr(probe, "cuda_python_installed", lambda: cuda_python)
    monkeypatch.setattr(probe, "onnxruntime_providers", lambda: providers)
    monkeypatch.setattr(probe, "torch_cuda_build", lambda: torch_cuda)
    assert probe.auto_order(0) == expected
    assert probe.auto_order(1) == [("onnxruntime", "cpu")]  # no device 1


def test_auto_falls_through_a_failing_backend(models_dir, monkeypatch):
    monkeypatch.setattr(Runtime, "plan", lambda self: [("torch", "cpu"), ("onnxruntime", "cpu")])
    model = runtime_for(models_dir, backend="auto").model("tiny2d")  # tiny2d's card has no torch entry
    assert model.backend == "onnxruntime"


def test_torch_cuda_build_reads_version_file_without_importing(tmp_path, monkeypatch):
    package = tmp_path / "torch"
    package.mkdir()
    (package / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    (package / "version.py").write_text("cuda: Optional[str] = '12.4'\n")
    assert probe.torch_cuda_build()
    (package / "version.py").write_text("cuda: Optional[str] = None\n")
    assert not probe.torch_cuda_build()


@pytest.mark.parametrize("backend", ["auto", "onnxruntime"])
def test_node_never_imports_torch_for_onnxruntime(models_dir, backend):
    script = textwrap.dedent(f"""
        import sys, numpy as np
        from dicomnode.config import InferenceConfig
        from dicomnode.inference import Runtime
        runtime = Runtime(InferenceConfig(backend={backend!r}, models_dir={str(models_dir)!r}))
        runtime.warm_up()
        out = runtime.model("tiny2d").run(np.ones((1, 1, 8, 8), np.float32))
        assert out.shape == (1, 3, 8, 8), out.shape
        print(runtime.model("tiny2d").backend, "torch" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    backend_used, torch_loaded = result.stdout.split()
    if probe.gpus():
        pytest.skip("a GPU machine may legitimately pick torch under auto")
    assert backend_used == "onnxruntime" and torch_loaded == "False"


def test_worker_runs_everything_on_one_thread_one_at_a_time():
    worker = DeviceWorker("cuda:test")
    active, peak, threads, order = [0], [0], set(), []
    lock = threading.Lock()

    def job(index):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            threads.add(threading.get_ident())
        time.sleep(0.002)
        with lock:
            active[0] -= 1
            order.append(index)
        return index

    callers = [threading.Thread(target=worker.call, args=(job, i)) for i in range(12)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert peak[0] == 1 and len(threads) == 1 and sorted(order) == list(range(12))
    futures = [worker.submit(job, 100 + i) for i in range(5)]
    assert [f.result() for f in futures] == list(range(100, 105))
    assert order[-5:] == list(range(100, 105))  # FIFO
    assert worker.call(lambda: worker.call(lambda: 7)) == 7  # re-entrant from the worker thread
    worker.shutdown()


class _ProfiledSession:
    """Stands in for a TensorRT session: accepts depths 4..24 only."""

    device = "cuda:0"
    description = "fake-tensorrt"

    def __init__(self):
        self.shapes = []

    def accepts(self, shape):
        return 4 <= shape[2] <= 24

    def run(self, x):
        self.shapes.append(x.shape)
        return np.full((x.shape[0], 3) + x.shape[2:], 1.0, np.float32)


class _FallbackSession:
    def __init__(self):
        self.calls = 0

    def run(self, x):
        self.calls += 1
        return np.full((x.shape[0], 3) + x.shape[2:], 2.0, np.float32)


def test_shapes_outside_the_engine_profile_run_on_the_fallback(models_dir):
    card = runtime_for(models_dir).card("tiny3d")
    fallback = _FallbackSession()
    session = _ProfiledSession()
    worker = DeviceWorker("cuda:fake")
    model = LoadedModel(card, "tensorrt", session, worker=worker, max_batch=2, fallback=lambda: fallback)
    inside = model.run(np.zeros((3, 1, 12, 8, 8), np.float32))
    assert (inside == 1).all() and session.shapes == [(2, 1, 12, 8, 8), (1, 1, 12, 8, 8)]
    outside = model.run(np.zeros((1, 1, 30, 8, 8), np.float32))
    assert (outside == 2).all() and fallback.calls == 1
    worker.shutdown()


def test_tensorrt_backend_without_tensorrt_says_what_is_missing(models_dir):
    if probe.tensorrt_usable(0):
        pytest.skip("TensorRT is usable here")
    with pytest.raises(BackendUnavailable, match="TensorRT is not installed|no CUDA device|cuda-python"):
        runtime_for(models_dir, backend="tensorrt").model("tiny2d")


def test_engine_cache_dir_defaults_under_storage_dir(models_dir, tmp_path):
    runtime = Runtime(InferenceConfig(models_dir=models_dir), storage_dir=tmp_path / "var")
    assert runtime.engine_cache_dir == tmp_path / "var" / "engines"
    explicit = Runtime(InferenceConfig(models_dir=models_dir, engine_cache_dir=tmp_path / "e"))
    assert explicit.engine_cache_dir == tmp_path / "e"


def test_card_sha256_is_the_file_hash(models_dir):
    import hashlib

    card = runtime_for(models_dir).card("tiny2d")
    assert card.sha256 == hashlib.sha256((models_dir / "tiny2d.onnx").read_bytes()).hexdigest()
    assert json.loads((models_dir / "tiny2d.json").read_text())["version"] == card.algorithm().version


def test_load_gives_a_fresh_model_on_the_named_backend(models_dir):
    runtime = runtime_for(models_dir)
    cached = runtime.model("tiny2d")
    fresh = runtime.load("tiny2d", "onnxruntime", "cpu")
    assert fresh is not cached and fresh.description == "onnxruntime[CPU]"
    with pytest.raises(ValueError, match="cuda only"):
        runtime.load("tiny2d", "tensorrt", "cpu")
    with pytest.raises(ValueError, match="backend must be"):
        runtime.load("tiny2d", "tflite", "cpu")
