"""Held-out evaluation of image<->report retrieval: joint projection vs a measurements-as-text baseline vs chance."""
from __future__ import annotations

import argparse
import json
import platform
import random
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from dicomnode.analysis.suggestions import DESCRIPTOR_FEATURES, FEATURE_NAMES, measurement_sentence

from .train import MODELS_DIR, Pair, encode_texts, feature_matrix, load_pairs, train_projection

HERE = Path(__file__).resolve().parent
KS = (1, 5, 10)
METHODS = ("joint", "joint_summary_only", "text_baseline", "chance")


def subject_split(pairs: list[Pair], seed: int, test_fraction: float) -> tuple[list[int], list[int]]:
    """Seeded split by subject (one case = one subject in these sets), stratified by dataset and group."""
    strata: dict[tuple[str, str], list[int]] = defaultdict(list)
    for index, pair in enumerate(pairs):
        strata[(pair.dataset, pair.group)].append(index)
    rng = random.Random(seed)
    train, test = [], []
    for key in sorted(strata):
        members = strata[key][:]
        rng.shuffle(members)
        n_test = max(1, round(len(members) * test_fraction)) if len(members) > 1 else 0
        test += members[:n_test]
        train += members[n_test:]
    return sorted(train), sorted(test)


def ranks(similarity: np.ndarray) -> np.ndarray:
    """1-based rank of the true item (the diagonal) in each row of a query x gallery similarity matrix."""
    true = np.diag(similarity)[:, None]
    return 1 + np.sum(similarity > true, axis=1)


def metrics(similarity: np.ndarray, groups: list[str]) -> dict:
    r = ranks(similarity)
    top1 = np.argmax(similarity, axis=1)
    return {
        **{f"R@{k}": float(np.mean(r <= k)) for k in KS},
        "median_rank": float(np.median(r)),
        "top1_same_group": float(np.mean([groups[i] == groups[j] for i, j in enumerate(top1)])),
    }


def chance(n: int, groups: list[str]) -> dict:
    counts = defaultdict(int)
    for g in groups:
        counts[g] += 1
    same_group = np.mean([(counts[g] - 1) / (n - 1) for g in groups]) if n > 1 else 1.0
    return {**{f"R@{k}": min(k, n) / n for k in KS}, "median_rank": (n + 1) / 2, "top1_same_group": float(same_group)}


def evaluate_split(pairs: list[Pair], text_embeddings: np.ndarray, sentence_embeddings: np.ndarray,
                   features: np.ndarray, seed: int, test_fraction: float, epochs: int) -> dict:
    train, test = subject_split(pairs, seed, test_fraction)
    projection, _ = train_projection(features[train], text_embeddings[train], seed=seed, epochs=epochs)
    study = projection(features[test])
    summary_only = features[test].copy()
    for name in DESCRIPTOR_FEATURES:  # as when the node has the summary numbers but no label maps
        column = FEATURE_NAMES.index(name)
        summary_only[:, [column, len(FEATURE_NAMES) + column]] = 0.0
    study_summary_only = projection(summary_only)
    reports = text_embeddings[test]
    sentences = sentence_embeddings[test]
    groups = [f"{pairs[i].dataset}:{pairs[i].group}" for i in test]
    return {
        "n_train": len(train), "n_test": len(test),
        "joint": {"image_to_report": metrics(study @ reports.T, groups),
                  "report_to_image": metrics(reports @ study.T, groups)},
        "joint_summary_only": {"image_to_report": metrics(study_summary_only @ reports.T, groups),
                               "report_to_image": metrics(reports @ study_summary_only.T, groups)},
        "text_baseline": {"image_to_report": metrics(sentences @ reports.T, groups),
                          "report_to_image": metrics(reports @ sentences.T, groups)},
        "chance": {"image_to_report": chance(len(test), groups), "report_to_image": chance(len(test), groups)},
    }


def _aggregate(runs: list[dict]) -> dict:
    out: dict = {}
    for method in METHODS:
        out[method] = {}
        for direction in ("image_to_report", "report_to_image"):
            keys = runs[0][method][direction].keys()
            out[method][direction] = {
                key: {"mean": float(np.mean([r[method][direction][key] for r in runs])),
                      "sd": float(np.std([r[method][direction][key] for r in runs]))} for key in keys}
    return out


def _table(aggregate: dict, direction: str) -> list[str]:
    names = {"joint": "joint embedding (projection)",
             "joint_summary_only": "joint, summary numbers only (no label-map descriptors)",
             "text_baseline": "measurements as text (baseline)", "chance": "chance"}
    lines = ["| method | R@1 | R@5 | R@10 | median rank | top-1 same group |", "|---|---|---|---|---|---|"]
    for method in METHODS:
        m = aggregate[method][direction]
        cells = [f"{m[k]['mean']:.3f} ± {m[k]['sd']:.3f}" for k in ("R@1", "R@5", "R@10")]
        cells.append(f"{m['median_rank']['mean']:.1f} ± {m['median_rank']['sd']:.1f}")
        cells.append(f"{m['top1_same_group']['mean']:.3f} ± {m['top1_same_group']['sd']:.3f}")
        lines.append(f"| {names[method]} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=Path, default=MODELS_DIR / "report_bank" / "reports.jsonl")
    parser.add_argument("--encoder-dir", type=Path, default=MODELS_DIR / "text_encoder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--test-fraction", type=float, default=0.25)
    parser.add_argument("--epochs", type=int, default=400)
    parser.add_argument("--out-json", type=Path, default=HERE / "evaluation.json")
    parser.add_argument("--out-md", type=Path, default=HERE / "EVALUATION.md")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    pairs = load_pairs(args.pairs)
    text_embeddings = encode_texts([p.text for p in pairs], args.encoder_dir)
    sentences = [measurement_sentence(p.features) for p in pairs]
    sentence_embeddings = encode_texts(sentences, args.encoder_dir)
    features = feature_matrix(pairs)
    probe = encode_texts(["Cardiac MRI: LV ejection fraction 24%.", "Cardiac MRI: LV ejection fraction 62%.",
                          "Cardiac MRI: severely reduced LV ejection fraction.", "Cardiac MRI: normal LV ejection fraction."],
                         args.encoder_dir)
    number_probe = {"EF 24% vs EF 62% (numbers)": float(probe[0] @ probe[1]),
                    "severely reduced vs normal EF (words)": float(probe[2] @ probe[3])}
    runs = [evaluate_split(pairs, text_embeddings, sentence_embeddings, features, seed, args.test_fraction, args.epochs)
            for seed in args.seeds]
    aggregate = _aggregate(runs)
    result = {
        "pairs": len(pairs), "pairs_file": str(args.pairs.name), "seeds": args.seeds, "test_fraction": args.test_fraction,
        "epochs": args.epochs, "n_test": runs[0]["n_test"], "aggregate": aggregate, "runs": runs,
        "example_baseline_query": sentences[0],
        "text_encoder_number_probe_cosine": number_probe,
        "machine": f"{platform.machine()} {platform.processor() or ''} python {platform.python_version()}".strip(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out_json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    args.out_md.write_text(render_markdown(result), encoding="utf-8")
    print(render_markdown(result))
    return 0


def render_markdown(result: dict) -> str:
    aggregate = result["aggregate"]
    joint, base = aggregate["joint"], aggregate["text_baseline"]
    lines = [
        "# Image–report retrieval: held-out evaluation",
        "",
        "Generated by `python -m engines.retrieval.evaluate` (numbers in `evaluation.json`).",
        "",
        f"- Pairs: {result['pairs']} study–report pairs of the demonstration bank (`{result['pairs_file']}`), one per "
        "subject: EMIDEC LGE (100), ACDC cine (100), Sunnybrook cine (5).",
        f"- Split: seeded, subject-level, stratified by dataset and diagnosis group; {result['test_fraction']:.0%} held out "
        f"({result['n_test']} test subjects per split); mean ± SD over seeds {result['seeds']}. The projection is "
        "retrained on each split's training part; the gallery is the held-out part only.",
        "- Joint embedding: study feature vector (measurements + label-map descriptors) → MLP → text space, trained "
        "with symmetric InfoNCE against the frozen all-MiniLM-L6-v2 report embeddings.",
        "- Baseline: the same measured numbers written as one templated sentence (e.g. "
        f"“{result['example_baseline_query']}”), embedded with the same text encoder, cosine against the reports.",
        "- Top-1 same group: the top-ranked item has the subject's dataset and diagnosis group (e.g. ACDC DCM).",
        "",
        "## Image → report",
        "",
        *_table(aggregate, "image_to_report"),
        "",
        "## Report → image",
        "",
        *_table(aggregate, "report_to_image"),
        "",
        "## What the joint embedding adds, honestly",
        "",
        f"- Image→report R@1 {joint['image_to_report']['R@1']['mean']:.3f} (joint) vs "
        f"{base['image_to_report']['R@1']['mean']:.3f} (numbers as text) vs "
        f"{aggregate['chance']['image_to_report']['R@1']['mean']:.3f} (chance); R@10 "
        f"{joint['image_to_report']['R@10']['mean']:.3f} vs {base['image_to_report']['R@10']['mean']:.3f}; "
        f"median rank {joint['image_to_report']['median_rank']['mean']:.1f} vs {base['image_to_report']['median_rank']['mean']:.1f}.",
        "- The reports were written by a template from the very ground truth the study features are computed from. "
        "Retrieval here therefore measures whether the machinery can learn the numbers-to-phrasing mapping, not "
        "clinical retrieval quality. Real reports carry information no measurement holds (history, comparison, "
        "advice), so numbers on a site's own archive will be lower.",
        "- The text baseline is weak because a general sentence encoder barely separates numbers: cosine between "
        "“Cardiac MRI: LV ejection fraction 24%.” and “… 62%.” is "
        f"{result['text_encoder_number_probe_cosine']['EF 24% vs EF 62% (numbers)']:.3f}, while “severely reduced” vs "
        f"“normal” ejection fraction gives {result['text_encoder_number_probe_cosine']['severely reduced vs normal EF (words)']:.3f}. The projection learns which numbers matter for which phrasing "
        "(e.g. LGE percent → scar size words, EF → grading) — that is the whole gain, and it needs paired training data.",
        "- Without the label-map descriptors (the node has only the summary.json numbers) image→report R@1 is "
        f"{aggregate['joint_summary_only']['image_to_report']['R@1']['mean']:.3f} and top-1 same group "
        f"{aggregate['joint_summary_only']['image_to_report']['top1_same_group']['mean']:.3f}: the descriptors (scar "
        "sector, transmurality, wall thickness) carry the phrasing details the summary numbers lack. Here they come "
        "from ground-truth labels; in the node they come from the LGE/cine segmentation networks.",
        "- Exact-case recall is capped by near-duplicate reports: EMIDEC normal cases differ only in phrasing, so "
        "among them any rank is a guess; the group-level column is the fairer view of usefulness.",
        "- Small data: ~150 training pairs per split; the SDs over seeds show how much a different split moves the numbers.",
        "",
        f"Run time {result['seconds']} s on {result['machine']} (2 shared CPU cores).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
