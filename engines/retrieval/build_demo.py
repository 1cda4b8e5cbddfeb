"""Build the shipped demonstration report bank (reports.jsonl, one record per labelled case) from shared/datasets."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .demo_cases import all_cases
from .report_writer import write_report

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "models" / "report_bank" / "reports.jsonl"


def default_datasets_dir() -> Path:
    return Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


def build(datasets_dir: Path, out: Path, seed: int = 0) -> list[dict]:
    records = [write_report(case, seed=seed) for case in all_cases(datasets_dir)]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
    tmp.replace(out)
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", type=Path, default=default_datasets_dir())
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=0, help="seed of the phrasing choices")
    args = parser.parse_args(argv)
    records = build(args.datasets, args.out, args.seed)
    print(f"wrote {len(records)} reports to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
