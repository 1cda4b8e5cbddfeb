"""Latency per LGE stack on the CPU, end to end (normalisation, localisation pass, crop passes, mapping back,
volumes; n-SD and FWHM with --threshold-methods, which the node skips by default because the card does not validate
them on the model's myocardium): ONNX Runtime with ensembles of 1..k of the shipped fold models, and torch eager with the full ensemble,
on an EMIDEC stack (256², assumed per-case spacing, 1.4 mm on average) and a MyoPS stack (~480², 0.73 mm, real geometry), side by side.

    .venv/bin/python bench/lge_latency.py [--runs 10] [--threads 2]

Prints a table and writes bench/results/lge_latency.json. The goal (issue #13) is <= 1 s per stack on 2 cores with
the ensemble that ships. The node finds the heart with the card's localiser (one member) and segments with the
ensemble: the row "node runtime, heart found by ..." is what the node does.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dicomnode.analysis.lge import LGEInputSpec, segment_stack  # noqa: E402
from dicomnode.analysis.lge_metrics import fwhm_enhancement, lge_volumes, nsd_enhancement  # noqa: E402
from dicomnode.devtools.sources import EMIDEC_SLICE_SPACING_MM, emidec_pixel_spacing  # noqa: E402
from dicomnode.inference import Runtime  # noqa: E402
from engines import models_dir  # noqa: E402

EMIDEC_CASE = "Case_P043"


def stacks(datasets: Path) -> dict[str, tuple[np.ndarray, tuple[float, float], float]]:
    from PIL import Image

    from engines.lge.data import load_myops

    files = sorted((datasets / "emidec-lge-png" / "train").glob(f"{EMIDEC_CASE}_slice*.png"))
    emidec = np.stack([np.asarray(Image.open(f), dtype=np.float32) for f in files])
    labels = np.stack([np.asarray(Image.open(datasets / "emidec-lge-png" / "trainannot" / f.name)) for f in files])
    myops = max(load_myops(datasets / "myops2020-lge"), key=lambda c: c.image.shape[0])
    return {f"EMIDEC {EMIDEC_CASE} {emidec.shape}": (emidec, emidec_pixel_spacing(labels), EMIDEC_SLICE_SPACING_MM),
            f"MyoPS {myops.name} {myops.image.shape}": (myops.image, myops.spacing_rc, myops.slice_spacing_mm)}


def end_to_end(image, spacing, slice_mm, run_model, spec: LGEInputSpec, threshold_methods: bool = False,
               locate_model=None) -> float:
    labels = segment_stack(image, spacing, run_model, spec, locate_model=locate_model).labels
    voxel_ml = spacing[0] * spacing[1] * slice_mm / 1000
    volumes = lge_volumes(labels, voxel_ml)
    for call in () if not threshold_methods else (lambda: nsd_enhancement(image, labels, 5, voxel_ml, spacing),
                 lambda: fwhm_enhancement(image, labels, voxel_ml, spacing)):
        try:
            call()
        except ValueError:
            pass
    return volumes.lge_percent


def timed(function, runs: int) -> dict:
    function()  # warm-up
    seconds = []
    for _ in range(runs):
        began = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - began)
    return {"median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds), "runs": runs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads for both runtimes")
    parser.add_argument("--threshold-methods", action="store_true",
                        help="also compute n-SD and FWHM (analysis.lge.threshold_methods = 'always')")
    parser.add_argument("--datasets", type=Path, default=REPO.parent / "shared" / "datasets")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "lge_latency.json")
    args = parser.parse_args()
    import onnxruntime as ort
    import torch

    from engines.lge.export import export_onnx
    from engines.lge.model import LGEEnsemble

    torch.set_num_threads(args.threads)
    card = json.loads((models_dir() / "lge_unet.json").read_text())
    spec = LGEInputSpec.from_card(card)
    shipped = LGEEnsemble(**card["torch"]["kwargs"])
    shipped.load_state_dict(torch.load(models_dir() / card["torch"]["weights"], weights_only=True))
    shipped = shipped.float().eval()
    members = list(shipped.members)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    runners = {}
    with tempfile.TemporaryDirectory() as folder:
        for count in sorted({1, 2, 3, len(members)}):
            if count > len(members):
                continue
            path = Path(folder) / f"ens{count}.onnx"
            export_onnx(LGEEnsemble.from_members(members[:count]), path)
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            runners[f"onnxruntime, {count} member(s)"] = lambda x, s=session: s.run(None, {"image": x})[0]

    def torch_run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return shipped(torch.from_numpy(x)).numpy()

    node = Runtime()
    localiser = (card.get("localiser") or {}).get("model")
    runners["node runtime (shipped lge_unet.onnx)"] = node.model("lge_unet").run
    if localiser:
        runners[f"node runtime, heart found by {localiser}"] = (node.model("lge_unet").run,
                                                                  node.model(localiser).run)
    # torch last: its OpenMP threads keep spinning after a call and slowed the ONNX Runtime runs that followed
    runners[f"torch eager, {len(members)} member(s)"] = torch_run
    rows = {}
    for stack_name, (image, spacing, slice_mm) in stacks(args.datasets).items():
        for runner_name, run in runners.items():
            run, locate = run if isinstance(run, tuple) else (run, None)
            rows[f"{stack_name} | {runner_name}"] = timed(
                lambda: end_to_end(image, spacing, slice_mm, run, spec, args.threshold_methods, locate), args.runs)
    maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"LGE end to end per stack, {args.threads} thread(s), {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; shipped ensemble: {len(members)} member(s), flip TTA {card['torch']['kwargs']['flip_tta']}")
    print(f"{'stack | runtime':90s} {'median s':>9s} {'min s':>8s} {'max s':>8s}")
    for name, row in rows.items():
        print(f"{name:90s} {row['median_s']:9.3f} {row['min_s']:8.3f} {row['max_s']:8.3f}")
    print(f"process peak RSS {maxrss_mb:.0f} MB; goal <= 1 s per stack with the shipped model")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "threads": args.threads, "rows": rows, "peak_rss_mb": maxrss_mb, "goal_s": 1.0,
        "shipped_members": len(members),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "python": platform.python_version(), "cpu_count": os.cpu_count()},
    }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
