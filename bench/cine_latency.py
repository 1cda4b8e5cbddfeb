"""Latency of one whole cine (12 slices x 25 phases) on the CPU: ONNX Runtime vs torch, model alone and end to end,
the shipped cine_unet alone and, where cine_unet_refine is installed, with it re-segmenting ED and ES (as the node).

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


def load_runner(name: str, backend: str, threads: int):
    """(card, run_model) of an installed model, fed in chunks of the card's max_batch as the node's LoadedModel does."""
    from engines import models_dir

    card = json.loads((models_dir() / f"{name}.json").read_text())
    if backend == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(models_dir() / f"{name}.onnx"), options, providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name

        def run_whole(inputs):
            return session.run(None, {input_name: inputs})[0]
    else:
        import torch

        from engines.cine.model import build_model

        torch.set_num_threads(threads)
        model = build_model(**card["torch"]["kwargs"])
        model.load_state_dict(torch.load(models_dir() / card["torch"]["weights"], map_location="cpu", weights_only=True))
        model.eval()

        def run_whole(inputs):
            with torch.inference_mode():
                return model(torch.from_numpy(inputs)).numpy()

    chunk = int(card.get("max_batch", 64))

    def run_model(inputs):
        return np.concatenate([run_whole(inputs[i:i + chunk]) for i in range(0, len(inputs), chunk)])

    return card, run_model


def worker(backend: str, threads: int, runs: int, datasets: str | None, refine: bool, queue) -> None:
    from dicomnode.analysis.cine import REFINE_MODEL_NAME, CineModelSpec, segment_and_measure
    from dicomnode.analysis.cine_metrics import measure_cine

    card, run_model = load_runner("cine_unet", backend, threads)
    spec = CineModelSpec.from_card(card)
    refining = None
    if refine:
        refine_card, refine_run = load_runner(REFINE_MODEL_NAME, backend, threads)
        refining = (refine_run, CineModelSpec.from_card(refine_card))
    pixels, spacing, dz, source = load_cine(Path(datasets) if datasets else None)
    voxel_ml = spacing[0] * spacing[1] * dz / 1000.0
    inputs = np.random.default_rng(0).standard_normal((PHASES * SLICES, 1, spec.crop_size, spec.crop_size)).astype(np.float32)

    def model_only():
        run_model(inputs)
        if refining:
            refining[0](inputs[:2 * SLICES])

    def end_to_end():
        return segment_and_measure(pixels, spacing, run_model, spec,
                                   lambda maps, timing=None: measure_cine(maps, voxel_ml, timing=timing),
                                   refine=refining)[1]

    def timed(function):
        function()
        seconds = []
        for _ in range(runs):
            began = time.perf_counter()
            function()
            seconds.append(time.perf_counter() - began)
        return {"median_s": statistics.median(seconds), "min_s": min(seconds), "runs": seconds}

    result = {"backend": backend, "threads": threads, "source": source,
              "models": "cine_unet" + (f" + {REFINE_MODEL_NAME} at ED/ES" if refine else ""),
              "model_only": timed(model_only), "end_to_end": timed(end_to_end)}
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
    from engines import models_dir
    refines = [False] + ([True] if (models_dir() / "cine_unet_refine.onnx").is_file() else [])
    for threads in sorted(set(args.threads)):
        for backend in ("onnxruntime", "torch"):
            for refine in refines:
                queue = context.Queue()
                process = context.Process(target=worker, args=(backend, threads, args.runs, str(args.datasets), refine,
                                                               queue))
                process.start()
                results.append(queue.get())
                process.join()
    print(f"cine {PHASES} phases x {SLICES} slices = {PHASES * SLICES} slices; {results[0]['source']}")
    print(f"machine: {platform.machine()} {platform.processor()} {os.cpu_count()} CPUs (shared; load avg {os.getloadavg()[0]:.1f})")
    header = (f"{'backend':<12} {'threads':>7} {'models':<40} {'model only s':>13} {'end to end s':>13} {'LVEF %':>7} "
              f"{'peak RSS MiB':>13} {'goal 3 s':>9}")
    print(header)
    print("-" * len(header))
    for r in results:
        e2e = r["end_to_end"]["median_s"]
        print(f"{r['backend']:<12} {r['threads']:>7} {r['models']:<40} {r['model_only']['median_s']:>13.2f} {e2e:>13.2f} "
              f"{r['lv_ef_percent']:>7.1f} {r['peak_rss_mib']:>13.0f} {'met' if e2e <= 3.0 else 'missed':>9}")
    for threads in sorted(set(args.threads)):
        pair = {r["backend"]: r for r in results if r["threads"] == threads and r["models"] == "cine_unet"}
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
