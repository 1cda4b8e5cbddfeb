"""Benchmark report retrieval: embedding a study on CPU, exact vs HNSW search over 1k/100k/1M embeddings, memory."""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dicomnode.analysis.report_bank import ApproximateIndex, approximate_index_available, top_k_cosine  # noqa: E402
from dicomnode.analysis.suggestions import (StudyProjection, feature_vector, lge_descriptors,  # noqa: E402
                                            measurement_sentence, study_features)
from dicomnode.analysis.text_encoder import TextEncoder  # noqa: E402

MODELS = REPO / "engines" / "models"
SUMMARY = {"cine": {"lv_edv_ml": 290, "lv_esv_ml": 220, "lv_ef_percent": 24, "lv_mass_g": 170, "rv_edv_ml": 140,
                    "rv_esv_ml": 60, "rv_ef_percent": 57},
           "lge": {"lge_percent": 21.0, "myocardium_volume_ml": 120.0, "mvo_volume_ml": 3.0, "large_scar_burden": True}}
K = 10
USAGE = """    .venv/bin/python bench/retrieval.py                      # table + bench/results/retrieval.json
    .venv/bin/python bench/retrieval.py --hnsw-max 1000000   # also build HNSW at 1M (long on 2 cores)
Synthetic banks: the shipped bank's real report embeddings, each copied many times with Gaussian noise and
re-normalised, so the data has the clustered shape of real report embeddings rather than uniform noise."""


def median_ms(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def synthetic_lge_labelmap(slices=10, size=256) -> tuple[np.ndarray, np.ndarray]:
    r, c = np.mgrid[:size, :size]
    distance = np.hypot(r - size / 2, c - size / 2)
    plane = np.zeros((size, size), dtype=np.uint8)
    plane[distance < 25] = 1
    plane[(distance >= 25) & (distance < 35)] = 2
    plane[(plane == 2) & (r < size / 2 - 10)] = 3
    labels = np.stack([plane] * slices)
    return labels, np.where(labels == 3, 300.0, 100.0).astype(np.float32)


def bench_study_embedding(repeats: int) -> dict:
    projection = StudyProjection.load(MODELS / "retrieval_projection.npz")
    encoder = TextEncoder(MODELS / "text_encoder")
    labels, pixels = synthetic_lge_labelmap()

    def joint():
        features = study_features(SUMMARY)
        return projection(feature_vector(features)[None, :])

    def descriptors():
        return lge_descriptors(labels, pixels)

    sentence = measurement_sentence(study_features(SUMMARY))
    encoder.encode([sentence])  # warm
    return {
        "joint_features_plus_projection_ms": median_ms(joint, repeats * 20),
        "lge_descriptors_10x256x256_ms": median_ms(descriptors, repeats),
        "text_query_sentence_encoder_ms": median_ms(lambda: encoder.encode([sentence]), repeats),
        "report_text_encoder_per_report_ms": median_ms(lambda: encoder.encode([sentence * 4] * 8), max(3, repeats // 3)) / 8,
    }


def synthetic_bank(n: int, seed: int = 0) -> np.ndarray:
    base = np.load(MODELS / "text_encoder" / "reference_fp32_bank_embeddings.npy").astype(np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((n, base.shape[1]), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        chunk = base[rng.integers(0, len(base), stop - start)] + rng.normal(0, 0.04, (stop - start, base.shape[1]))
        out[start:stop] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return out


def bench_search(n: int, queries: np.ndarray, hnsw: bool) -> dict:
    before = rss_bytes()
    bank = synthetic_bank(n)
    row = {"n": n, "embeddings_bytes": int(bank.nbytes), "rss_growth_bytes_exact": rss_bytes() - before}
    exact_results = [top_k_cosine(bank, q, K)[0] for q in queries]
    row["exact_ms"] = median_ms(lambda: [top_k_cosine(bank, q, K) for q in queries[:5]], 5) / 5
    if hnsw:
        before_index = rss_bytes()
        start = time.perf_counter()
        index = ApproximateIndex(bank)
        row["hnsw_build_s"] = time.perf_counter() - start
        row["hnsw_extra_rss_bytes"] = rss_bytes() - before_index
        row["hnsw_ms"] = median_ms(lambda: [index.search(q, K) for q in queries[:5]], 5) / 5
        recalls = [len(set(index.search(q, K)[0].tolist()) & set(e.tolist())) / K for q, e in zip(queries, exact_results)]
        row["hnsw_recall_at_10"] = float(np.mean(recalls))
        del index
    del bank
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, epilog=USAGE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 100_000, 1_000_000])
    parser.add_argument("--hnsw-max", type=int, default=100_000, help="build HNSW only for banks up to this size")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "retrieval.json")
    args = parser.parse_args(argv)

    embedding = bench_study_embedding(args.repeats)
    rng = np.random.default_rng(1)
    queries = synthetic_bank(50, seed=99) + rng.normal(0, 0.02, (50, 384)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    hnsw_available = approximate_index_available()
    rows = [bench_search(n, queries, hnsw_available and n <= args.hnsw_max) for n in args.sizes]
    result = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs (shared), python {platform.python_version()}",
        "numpy": np.__version__, "hnswlib_available": hnsw_available, "k": K,
        "study_embedding": embedding, "search": rows,
        "memory_per_100k_reports_mb": {
            "embeddings_float32": 100_000 * 384 * 4 / 1e6,
            "hnsw_index_measured": next((r["hnsw_extra_rss_bytes"] / 1e6 * 100_000 / r["n"] for r in rows
                                         if r["n"] == 100_000 and "hnsw_extra_rss_bytes" in r), None),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    print(f"machine: {result['machine']}")
    print("\nstudy embedding (CPU, median ms)")
    for key, value in embedding.items():
        print(f"  {key:42s} {value:9.3f}")
    print(f"\nsearch, top-{K}, median ms per query")
    print(f"{'reports':>10} | {'exact numpy':>11} | {'HNSW':>8} | {'HNSW build s':>12} | {'recall@10':>9} | {'embeddings MB':>13}")
    for row in rows:
        hnsw = f"{row['hnsw_ms']:8.3f}" if "hnsw_ms" in row else f"{'-':>8}"
        build = f"{row['hnsw_build_s']:12.1f}" if "hnsw_build_s" in row else f"{'-':>12}"
        recall = f"{row['hnsw_recall_at_10']:9.3f}" if "hnsw_recall_at_10" in row else f"{'-':>9}"
        print(f"{row['n']:>10} | {row['exact_ms']:11.3f} | {hnsw} | {build} | {recall} | {row['embeddings_bytes'] / 1e6:13.1f}")
    memory = result["memory_per_100k_reports_mb"]
    print(f"\nmemory per 100k reports: {memory['embeddings_float32']:.1f} MB embeddings"
          + (f" + {memory['hnsw_index_measured']:.1f} MB HNSW index" if memory["hnsw_index_measured"] else ""))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
