"""Latency per LGE stack on the CPU: ONNX Runtime vs torch eager, inference alone and end to end (+ peak memory).

    .venv/bin/python bench/lge_latency.py [--runs 10] [--threads 1]

End to end = preprocessing (resampling, normalisation, two model passes: localisation + crop) + mapping back to the
source grid + metrics (volumes, %LGE, n-SD, FWHM). Input: EMIDEC Case_P043 (5 slices, 256x256 at the assumed
1.5 mm). Prints a table and writes bench/results/lge_latency.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dicomnode.analysis.lge import LGEInputSpec, normalise_percentile, segment_stack  # noqa: E402
from dicomnode.analysis.lge_metrics import fwhm_enhancement, lge_volumes, nsd_enhancement  # noqa: E402
from dicomnode.config import InferenceConfig  # noqa: E402
from dicomnode.inference import Runtime  # noqa: E402

CASE = "Case_P043"


def load_case(datasets: Path) -> np.ndarray:
    from PIL import Image

    files = sorted((datasets / "emidec-lge-png" / "train").glob(f"{CASE}_slice*.png"))
    if not files:
        raise SystemExit(f"{CASE} not found under {datasets}/emidec-lge-png/train")
    return np.stack([np.asarray(Image.open(f), dtype=np.float32) for f in files])


def end_to_end(image: np.ndarray, spacing, run_model, spec: LGEInputSpec) -> float:
    labels = segment_stack(image, spacing, run_model, spec).labels
    voxel_ml = spacing[0] * spacing[1] * 10.0 / 1000
    volumes = lge_volumes(labels, voxel_ml)
    nsd_enhancement(image, labels, 5, voxel_ml)
    fwhm_enhancement(image, labels, voxel_ml)
    return volumes.lge_percent


def timed(function, runs: int) -> dict:
    function()  # warm-up
    seconds = []
    for _ in range(runs):
        began = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - began)
    tracemalloc.start()
    function()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds), "runs": runs,
            "python_peak_alloc_mb": peak / 1e6}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for both runtimes")
    parser.add_argument("--datasets", type=Path, default=REPO.parent / "shared" / "datasets")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "lge_latency.json")
    args = parser.parse_args()
    if args.runs < 10:
        parser.error("--runs must be >= 10 (medians of at least 10 runs)")

    image = load_case(args.datasets)
    spacing = (1.5, 1.5)
    runtime = Runtime(InferenceConfig(intra_op_threads=args.threads))
    model = runtime.model("lge_unet")
    spec = LGEInputSpec.from_card(model.card.data)
    top = (image.shape[1] - spec.crop_size) // 2
    left = (image.shape[2] - spec.crop_size) // 2
    crop_input = normalise_percentile(image[:, top:top + spec.crop_size, left:left + spec.crop_size])[None, None]

    import torch

    from engines.lge.export import torch_model_from_onnx

    torch.set_num_threads(args.threads)
    torch_model = torch_model_from_onnx(model.card.path, model.card.data["architecture"])

    def torch_run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch_model(torch.from_numpy(x)).numpy()

    rows = {}
    rows["onnxruntime inference (96x96 crop)"] = timed(lambda: model.run(crop_input), args.runs)
    rows["torch eager inference (96x96 crop)"] = timed(lambda: torch_run(crop_input), args.runs)
    rows["onnxruntime end to end"] = timed(lambda: end_to_end(image, spacing, model.run, spec), args.runs)
    rows["torch eager end to end"] = timed(lambda: end_to_end(image, spacing, torch_run, spec), args.runs)
    maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ratio = rows["torch eager end to end"]["median_s"] / rows["onnxruntime end to end"]["median_s"]

    print(f"LGE stack {CASE}: {image.shape[0]} slices x {image.shape[1]}x{image.shape[2]}, {args.threads} thread(s), "
          f"{platform.processor() or platform.machine()}")
    print(f"{'what':40s} {'median s':>9s} {'min s':>8s} {'max s':>8s} {'py peak MB':>11s}")
    for name, row in rows.items():
        print(f"{name:40s} {row['median_s']:9.3f} {row['min_s']:8.3f} {row['max_s']:8.3f} {row['python_peak_alloc_mb']:11.1f}")
    print(f"end to end torch / onnxruntime: {ratio:.2f}x; process peak RSS {maxrss_mb:.0f} MB; goal <= 1 s per stack: "
          f"{'met' if rows['onnxruntime end to end']['median_s'] <= 1.0 else 'NOT met'}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "case": CASE, "shape": list(image.shape), "threads": args.threads, "rows": rows,
        "torch_over_onnxruntime_end_to_end": ratio, "peak_rss_mb": maxrss_mb, "goal_s": 1.0,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "python": platform.python_version(),
                    "cpu_count": __import__("os").cpu_count()},
    }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
