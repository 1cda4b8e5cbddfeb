"""One command from data to evaluated model: train (time-boxed) -> export ONNX + card -> evaluate on held-out subjects.

python -m engines.cine.pipeline --datasets ../shared/datasets --minutes 40
"""
from __future__ import annotations

import argparse
from pathlib import Path

from engines.cine import evaluate, export, train


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "datasets")
    parser.add_argument("--run-dir", type=Path, default=Path("engines/runs/cine"))
    parser.add_argument("--models", type=Path, default=Path(__file__).resolve().parents[1] / "models")
    parser.add_argument("--minutes", type=float, default=40.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    train.main(["--datasets", str(args.datasets), "--out", str(args.run_dir), "--minutes", str(args.minutes),
                "--threads", str(args.threads)])
    export.main(["--checkpoint", str(args.run_dir / "checkpoint.pt"), "--out", str(args.models)])
    evaluate.main(["--datasets", str(args.datasets), "--models", str(args.models), "--threads", str(args.threads)])


if __name__ == "__main__":
    main()
