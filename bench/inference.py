"""Inference benchmark: latency/throughput per LGE stack and per 12x25 cine study on every backend this machine has.

    .venv/bin/python bench/inference.py [--runs 20] [--budget-s 120] [--models lge_unet cine_unet]

Per model and backend: median (and p90) of >= --runs timed runs after warm-up (fewer only when --budget-s runs out;
the JSON records how many), peak host RSS (and device memory on CUDA), ratio to torch eager on the same device and to
ONNX Runtime CPU, and the model's arithmetic/bandwidth floor. Prints a table and writes bench/results/inference.json.
Uses the shipped models; when none is shipped it uses clearly labelled stand-ins (the engines' own architectures with
random weights when importable, else a tiny net) so the harness itself can be checked.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dicomnode.config import InferenceConfig  # noqa: E402
from dicomnode.inference import Runtime, probe  # noqa: E402
from dicomnode.inference.cost import gpu_peaks, model_cost  # noqa: E402
from dicomnode.inference.parity import compare  # noqa: E402

LGE_SLICES = 12
CINE_SLICES, CINE_PHASES = 12, 25
GOALS_MS = {"lge": 10.0, "cine": 50.0}  # one H100


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "gpus": [g.__dict__ for g in probe.gpus()], "tensorrt": probe.tensorrt_version(),
            "onnxruntime_providers": probe.onnxruntime_providers()}


class RssSampler:
    """Peak resident set size of this process, sampled every 2 ms while active (Linux /proc)."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def rss(self) -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * self._page

    def __enter__(self):
        self.peak = self.rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self.rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def stand_in_models(folder: Path, threads: int) -> dict[str, str]:
    """Export stand-ins for lge_unet / cine_unet into `folder`; returns name -> label (what the stand-in is)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    made = {}
    specs = []
    try:
        from engines.lge.model import LGESliceUNet

        specs.append(("lge_unet", LGESliceUNet().eval(), (1, 1, LGE_SLICES, 128, 128), {0: "N", 2: "D"},
                      "engines.lge.model", "LGESliceUNet",
                      "stand-in: engines.lge.model.LGESliceUNet, random weights (model not shipped yet)"))
    except Exception as exc:  # noqa: BLE001 - the stand-in is only a fallback
        print(f"(no LGE architecture importable: {exc})", file=sys.stderr)
    try:
        from engines.cine.model import CineUNet

        specs.append(("cine_unet", CineUNet(), (8, 1, 128, 128), {0: "N"}, "engines.cine.model", "CineUNet",
                      "stand-in: engines.cine.model.CineUNet, random weights (model not shipped yet)"))
    except Exception as exc:  # noqa: BLE001
        print(f"(no cine architecture importable: {exc})", file=sys.stderr)
    for name, net, shape, dynamic, module, factory, label in specs:
        net.eval()
        torch.save(net.state_dict(), folder / f"{name}.pt")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (torch.randn(*shape),), str(folder / f"{name}.onnx"), dynamo=False,
                              input_names=["image"], output_names=["logits"], opset_version=17,
                              dynamic_axes={"image": dynamic, "logits": dynamic})
        profile = {"min": list(shape), "opt": list(shape), "max": list(shape)}
        for axis in dynamic:
            profile["min"][axis] = 4 if axis == 2 else 1
            profile["max"][axis] = 24 if axis == 2 else 64
        if name == "cine_unet":
            profile["opt"][0] = 60
        card = {"algorithm_name": name + "-standin", "version": "0", "description": label, "max_batch": 64 if name == "cine_unet" else 2,
                "tensorrt": {"profile": profile},
                "torch": {"module": module, "factory": factory, "weights": f"{name}.pt"}}
        (folder / f"{name}.json").write_text(json.dumps(card))
        made[name] = label
    return made


def workloads(runtime: Runtime, name: str) -> tuple[str, tuple[int, ...], int]:
    """(kind, input shape, items) of one study: an LGE stack of 12 slices, or a 12 x 25 cine as 300 frames."""
    opt = list(runtime.card(name).profile().opt)
    if len(opt) == 5:
        opt[0], opt[2] = 1, LGE_SLICES
        return "lge", tuple(opt), 1
    opt[0] = CINE_SLICES * CINE_PHASES
    return "cine", tuple(opt), 1


def backends_here(runtime: Runtime, name: str) -> list[tuple[str, str, str]]:
    """(label, backend, device) for every backend that can run this model here."""
    found = [("onnxruntime-cpu", "onnxruntime", "cpu")]
    has_gpu = bool(probe.gpus())
    has_torch_entry = "torch" in runtime.card(name).data
    if probe.torch_installed() and has_torch_entry:
        found.append(("torch-cpu", "torch", "cpu"))
    if has_gpu and "CUDAExecutionProvider" in probe.onnxruntime_providers():
        found.append(("onnxruntime-cuda", "onnxruntime", "cuda"))
    if has_gpu and probe.torch_cuda_build() and has_torch_entry:
        found.append(("torch-cuda", "torch", "cuda"))
    if probe.tensorrt_usable(0):
        found.append(("tensorrt-fp16", "tensorrt", "cuda"))
        found.append(("tensorrt-fp32", "tensorrt", "cuda"))
    return found


def device_memory_probe(device: str):
    if device != "cuda":
        return None
    from dicomnode.inference.cuda_memory import device_memory_used

    return lambda: device_memory_used(0)


def measure(model, x: np.ndarray, runs: int, budget_s: float, warmup: int = 3) -> dict:
    for _ in range(warmup):
        output = model.run(x)
    memory = device_memory_probe("cuda" if model.device.startswith("cuda") else "cpu")
    device_before = memory() if memory else None
    times = []
    started = time.perf_counter()
    with RssSampler() as rss:
        while len(times) < runs:
            begin = time.perf_counter()
            output = model.run(x)
            times.append(time.perf_counter() - begin)
            if time.perf_counter() - started > budget_s and len(times) >= 5:
                break
    device_after = memory() if memory else None
    times_ms = sorted(t * 1000 for t in times)
    return {"runs": len(times), "median_ms": statistics.median(times_ms),
            "p90_ms": times_ms[min(len(times_ms) - 1, int(0.9 * len(times_ms)))],
            "peak_rss_mib": rss.peak / 2**20,
            "device_used_mib": None if device_after is None else device_after / 2**20,
            "device_delta_mib": None if device_after is None or device_before is None else (device_after - device_before) / 2**20,
            "output": output}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--budget-s", type=float, default=120.0, help="per model+backend; at least 5 runs are kept")
    parser.add_argument("--models", nargs="*", default=["lge_unet", "cine_unet"])
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for ONNX Runtime and torch; 0 = their default")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "inference.json")
    args = parser.parse_args(argv)

    info = machine()
    info["threads"] = args.threads or "runtime default"
    shipped = Runtime(InferenceConfig(backend="onnxruntime", intra_op_threads=args.threads))
    names = [n for n in args.models if shipped.available(n)]
    labels = {n: "shipped" for n in names}
    temporary = None
    if names:
        runtime = shipped
    else:
        temporary = tempfile.TemporaryDirectory(prefix="dicomnode-bench-")
        labels = stand_in_models(Path(temporary.name), args.threads)
        names = [n for n in args.models if n in labels]
        runtime = Runtime(InferenceConfig(backend="onnxruntime", models_dir=Path(temporary.name),
                                          intra_op_threads=args.threads))
        print("NO SHIPPED MODELS: timing labelled stand-ins (random weights), not the real models\n", file=sys.stderr)
    if not names:
        print("nothing to benchmark: no shipped models and no stand-in could be built", file=sys.stderr)
        return 1

    results = []
    for name in names:
        kind, shape, _ = workloads(runtime, name)
        x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
        cost = model_cost(runtime.card(name).path, shape) if probe.torch_installed() or _has_onnx() else None
        rows = {}
        for label, backend, device in backends_here(runtime, name):
            if backend == "tensorrt":
                runtime.config = runtime.config.model_copy(update={"precision": label.split("-")[1]})
            try:
                model = runtime.load(name, backend, device)
            except Exception as exc:  # noqa: BLE001 - report and go on with the other backends
                print(f"{name} {label}: cannot load: {exc}", file=sys.stderr)
                continue
            row = measure(model, x, args.runs, args.budget_s)
            row.update(model=name, model_source=labels[name], kind=kind, backend=label, description=model.description,
                       input_shape=list(shape), max_batch=model.max_batch)
            rows[label] = row
            model.close()
            print(f"  {name:10s} {label:17s} {row['median_ms']:10.1f} ms ({row['runs']} runs)", file=sys.stderr)
        for label, row in rows.items():
            device = "cuda" if "cuda" in label or "tensorrt" in label else "cpu"
            torch_same = rows.get(f"torch-{device}")
            row["vs_torch_same_device"] = torch_same["median_ms"] / row["median_ms"] if torch_same else None
            row["vs_onnxruntime_cpu"] = rows["onnxruntime-cpu"]["median_ms"] / row["median_ms"]
            reference = (torch_same or rows.get("torch-cpu") or rows["onnxruntime-cpu"])["output"]
            parity = compare(reference, row["output"])
            row["parity_vs"] = next(k for k, v in rows.items() if v["output"] is reference)
            row["parity"] = parity.as_dict()
            row["throughput_per_s"] = 1000.0 / row["median_ms"]
            if cost is not None:
                row["conv_gflop"] = cost.conv_flops / 1e9
                row["achieved_gflop_per_s"] = cost.conv_flops / 1e9 / (row["median_ms"] / 1000)
                peaks = gpu_peaks(info["gpus"][0]["name"]) if device == "cuda" and info["gpus"] else None
                if peaks:
                    precision = "fp16" if label.endswith("fp16") else "fp32"
                    row["floor_ms"] = cost.floor_seconds(peaks, precision) * 1000
                    row["times_floor"] = row["median_ms"] / row["floor_ms"]
        for row in rows.values():
            row.pop("output")
        results.append({"model": name, "source": labels[name], "kind": kind, "input_shape": list(shape),
                        "cost": None if cost is None else {
                            "conv_gflop": cost.conv_flops / 1e9, "conv_nodes": cost.conv_nodes,
                            "conv_nodes_unsized": cost.conv_nodes_unsized, "weight_mib": cost.weight_bytes / 2**20,
                            "min_traffic_mib": cost.min_bytes / 2**20, "unfused_traffic_mib": cost.unfused_bytes / 2**20},
                        "backends": list(rows.values())})

    print_table(info, results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": info, "goals_ms_h100": GOALS_MS, "results": results,
                                    "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2))
    print(f"\nwrote {args.out}")
    if temporary is not None:
        temporary.cleanup()
    return 0


def _has_onnx() -> bool:
    try:
        import onnx  # noqa: F401
    except ImportError:
        return False
    return True


def print_table(info: dict, results: list[dict]) -> None:
    gpus = ", ".join(g["name"] for g in info["gpus"]) or "none"
    print(f"machine: {info['cpu']} ({info['cores']} cores); GPU: {gpus}; TensorRT: {info['tensorrt'] or 'not installed'}")
    for result in results:
        cost = result["cost"]
        unit = "LGE stack (12 slices)" if result["kind"] == "lge" else f"cine study ({CINE_SLICES}x{CINE_PHASES} frames)"
        print(f"\n{result['model']} [{result['source']}] per {unit}, input {result['input_shape']}")
        if cost:
            print(f"  floor inputs: {cost['conv_gflop']:.2f} GFLOP in {cost['conv_nodes']} Conv nodes"
                  f"{' (+%d unsized)' % cost['conv_nodes_unsized'] if cost['conv_nodes_unsized'] else ''}; weights "
                  f"{cost['weight_mib']:.2f} MiB; traffic {cost['min_traffic_mib']:.1f} MiB fused .. "
                  f"{cost['unfused_traffic_mib']:.1f} MiB unfused")
        print(f"  {'backend':17s} {'median ms':>10s} {'p90 ms':>9s} {'runs':>4s} {'per s':>7s} {'GFLOP/s':>8s} "
              f"{'x torch':>7s} {'x ORT-CPU':>9s} {'peak RSS':>9s} {'dev MiB':>8s} {'floor ms':>8s} {'max err':>8s} {'argmax':>7s}")
        for row in result["backends"]:
            def fmt(value, spec):
                return format(value, spec) if value is not None else "-"
            print(f"  {row['backend']:17s} {row['median_ms']:10.1f} {row['p90_ms']:9.1f} {row['runs']:4d} "
                  f"{row['throughput_per_s']:7.2f} {fmt(row.get('achieved_gflop_per_s'), '8.1f')} "
                  f"{fmt(row['vs_torch_same_device'], '7.2f')} {row['vs_onnxruntime_cpu']:9.2f} "
                  f"{row['peak_rss_mib']:8.0f}M {fmt(row['device_used_mib'], '8.0f')} {fmt(row.get('floor_ms'), '8.3f')} "
                  f"{row['parity']['max_abs_error']:8.1e} {fmt(row['parity']['argmax_agreement'], '7.4f')}")
        goal = GOALS_MS[result["kind"]]
        if not any(b["backend"].startswith(("tensorrt", "torch-cuda", "onnxruntime-cuda")) for b in result["backends"]):
            print(f"  goal on one H100: <= {goal:.0f} ms; not measurable here (no GPU)")


if __name__ == "__main__":
    sys.exit(main())
