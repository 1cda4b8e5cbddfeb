"""Training step time of the LGE network on this machine: fp32 vs bf16 autocast, channels-last, 1 vs 2 threads,
and the time one cross-validation fold (the shipped recipe's steps) takes at each, side by side in one run.

    .venv/bin/python bench/lge_training.py [--steps 8] [--recipe-steps 1400]

bf16 pays only where the CPU has native bf16 matrix units (AMX or AVX-512 BF16: engines.lge.train enables it
there by itself); the table says what this CPU has. Writes bench/results/lge_training.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per configuration (after 2 warm-up steps)")
    parser.add_argument("--recipe-steps", type=int, default=1400)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "lge_training.json")
    args = parser.parse_args()
    import numpy as np
    import torch

    from engines.lge.data import load_cases
    from engines.lge.losses import deep_supervision_loss
    from engines.lge.train import BATCH_SIZE, SliceSampler, cpu_has_native_bf16
    from engines.lge.model import LGESliceUNet

    sampler = SliceSampler(load_cases(), np.random.default_rng(0))
    batches = [sampler.batch(BATCH_SIZE) for _ in range(args.steps + 2)]
    rows = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for bf16 in (False, True):
            torch.manual_seed(0)
            model = LGESliceUNet().to(memory_format=torch.channels_last).train()
            optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
            seconds = []
            for index, (images, labels, merges, available) in enumerate(batches):
                began = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    outputs = model.forward_slices(images)
                loss = deep_supervision_loss(outputs.float(), labels, merges, available)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                if index >= 2:
                    seconds.append(time.perf_counter() - began)
            step = statistics.median(seconds)
            rows[f"{'bf16 autocast' if bf16 else 'fp32'}, {threads} thread(s)"] = {
                "step_s": step, "fold_minutes": step * args.recipe_steps / 60}
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    has = {"amx_bf16": "amx_bf16" in flags, "avx512_bf16": "avx512_bf16" in flags, "avx512f": "avx512f" in flags}
    print(f"LGE training step (batch {BATCH_SIZE}, patch 96², model only, data sampling excluded), "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, flags {has}, "
          f"native bf16 used by train.py: {cpu_has_native_bf16()}")
    print(f"{'configuration':28s} {'s/step':>8s} {'min per fold (' + str(args.recipe_steps) + ' steps)':>28s}")
    for name, row in rows.items():
        print(f"{name:28s} {row['step_s']:8.3f} {row['fold_minutes']:28.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "cpu_flags": has, "recipe_steps": args.recipe_steps,
                                    "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()}},
                                   indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
