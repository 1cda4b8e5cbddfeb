"""Latency of one whole cine (12 slices x 25 phases) on the CPU: ONNX Runtime vs torch, model alone and end to end.

    .venv/bin/python bench/cine_latency.py [--runs 5] [--threads 1 2]

End to end = resampling to 1.5 mm + normalisation + ONE batched model call over all 300 slices (fed in chunks of the
card's max_batch, as the node's runtime does) + mapping class
probabilities back to the source grid + volume curves / ED / ES / EF / mass. Input: Sunnybrook SCD0000101 (12
slices x 20 phases, 256x256 DICOM) with phases 0-4 repeated to make 25 phases (synthetic discs when the shared data
is missing). Each configuration runs in its own process so its peak RSS is its own. Median of --runs runs after a
warm-up. Prints a table and writes bench/results/cine_latency.json.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PHASES, SLICES = 25, 12


def load_cine(datasets: Path | None):
    if datasets is not None and (datasets / "sunnybrook-scd" / "dicoms" / "SCD0000101").is_dir():
        from engines.cine.data import load_sunnybrook_cine

        pixels, spacing, dz, _, _ = load_sunnybrook_cine(datasets, "SCD0000101")
        pixels = np.concatenate([pixels, pixels[: PHASES - pixels.shape[0]]])[:, :SLICES]
        return pixels, spacing, dz, "Sunnybrook SCD0000101 (phases 0-4 repeated to 25)"
    rr, cc = np.mgrid[0:256, 0:256]
    pixels = np.full((PHASES, SLICES, 256, 256), 80.0, np.float32)
    for phase in range(PHASES):
        radius = 20 + 8 * np.cos(2 * np.pi * phase / PHASES)
        pixels[phase, :, ((rr - 128) ** 2 + (cc - 120) ** 2) * 1.37 ** 2 <= radius ** 2] = 400.0
    return pixels, (1.37, 1.37), 10.0, "synthetic discs (shared datasets not found)"


def worker(backend: str, threads: int, runs: int, datasets: str | None, queue) -> None:
    from dicomnode.analysis.cine import CineModelSpec, segment_cine
    from dicomnode.analysis.cine_metrics import measure_cine
    from engines import models_dir

    card = json.loads((models_dir() / "cine_unet.json").read_text())
    spec = CineModelSpec.from_card(card)
    pixels, spacing, dz, source = load_cine(Path(datasets) if datasets else None)
    if backend == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(models_dir() / "cine_unet.onnx"), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run_model(inputs):
            return session.run(None, {name: inputs})[0]
    else:
        import torch

        from engines.cine.model import build_model

        torch.set_num_threads(threads)
        model = build_model(**card["torch"]["kwargs"])
        model.load_state_dict(torch.load(models_dir() / card["torch"]["weights"], map_location="cpu", weights_only=True))
        model.eval()

        def run_model(inputs):
            with torch.inference_mode():
                return model(torch.from_numpy(inputs)).numpy()

    chunk = int(card.get("max_batch", 64))  # the node's LoadedModel feeds the model at most this many slices at once
    run_whole = run_model

    def run_model(inputs):  # noqa: F811 - same chunking as dicomnode.inference.LoadedModel
        return np.concatenate([run_whole(inputs[i:i + chunk]) for i in range(0, len(inputs), chunk)])

    inputs = np.random.default_rng(0).standard_normal((PHASES * SLICES, 1, spec.crop_size, spec.crop_size)).astype(np.float32)

    def model_only():
        run_model(inputs)

    def end_to_end():
        labels = segment_cine(pixels, spacing, run_model, spec)
        return measure_cine(labels, spacing[0] * spacing[1] * dz / 1000.0)

    def timed(function):
        function()
        seconds = []
        for _ in range(runs):
            began = time.perf_counter()
            function()
            seconds.append(time.perf_counter() - began)
        return {"median_s": statistics.median(seconds), "min_s": min(seconds), "runs": seconds}

    result = {"backend": backend, "threads": threads, "source": source, "model_only": timed(model_only),
              "end_to_end": timed(end_to_end)}
    measured = end_to_end()
    result["lv_ef_percent"] = measured.lv_ef_percent
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    queue.put(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    parser.add_argument("--datasets", type=Path, default=REPO.parent / "shared" / "datasets")
    args = parser.parse_args()
    if args.runs < 5:
        raise SystemExit("--runs must be >= 5 (median of at least five runs)")
    context = multiprocessing.get_context("spawn")
    results = []
    for threads in sorted(set(args.threads)):
        for backend in ("onnxruntime", "torch"):
            queue = context.Queue()
            process = context.Process(target=worker, args=(backend, threads, args.runs, str(args.datasets), queue))
            process.start()
            results.append(queue.get())
            process.join()
    print(f"cine {PHASES} phases x {SLICES} slices = {PHASES * SLICES} slices; {results[0]['source']}")
    print(f"machine: {platform.machine()} {platform.processor()} {os.cpu_count()} CPUs (shared; load avg {os.getloadavg()[0]:.1f})")
    header = f"{'backend':<12} {'threads':>7} {'model only s':>13} {'end to end s':>13} {'peak RSS MiB':>13} {'goal 3 s':>9}"
    print(header)
    print("-" * len(header))
    for r in results:
        e2e = r["end_to_end"]["median_s"]
        print(f"{r['backend']:<12} {r['threads']:>7} {r['model_only']['median_s']:>13.2f} {e2e:>13.2f} "
              f"{r['peak_rss_mib']:>13.0f} {'met' if e2e <= 3.0 else 'missed':>9}")
    for threads in sorted(set(args.threads)):
        pair = {r["backend"]: r for r in results if r["threads"] == threads}
        ratio = pair["torch"]["end_to_end"]["median_s"] / pair["onnxruntime"]["end_to_end"]["median_s"]
        print(f"threads {threads}: torch / ONNX Runtime end to end = {ratio:.2f}x")
    out = REPO / "bench" / "results" / "cine_latency.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"phases": PHASES, "slices": SLICES, "machine": {
        "processor": platform.processor(), "machine": platform.machine(), "cpus": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0]}, "goal_end_to_end_s": 3.0, "results": results}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
