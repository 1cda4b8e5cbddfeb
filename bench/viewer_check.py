"""Open the node's results in OHIF v3 (headless Chromium) and fail on anything a reader would not see.

    python bench/viewer_check.py INPUT_DIR [--out OUT_DIR] [--shots SHOTS_DIR] [--skip-process]

Runs `dicomnode process INPUT_DIR --out OUT_DIR`, then the project's viewer harness
(`../shared/viewer-check/run_check.sh OUT_DIR INPUT_DIR SHOTS_DIR`: Orthanc + DICOMweb, the published OHIF build,
puppeteer; installs what it lacks, needs root for its private network namespace), reads its report.json and fails
(exit 1) on:
- a SEG that does not load (no "open this Segmentation?" prompt, still "Loading SEG", console errors, frames not
  imported, no segment in the panel);
- an SR with OHIF's error boundary, measurements OHIF could not rehydrate, or measurement groups without SCOORD;
- a PDF that Chromium's PDF viewer did not load.
Not a test (3-5 minutes, downloads OHIF on the first run): a check to run before resolving viewer issues. Prints a
table and writes bench/results/viewer_check.json; the screenshots stay in SHOTS_DIR.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT.parent / "shared" / "viewer-check" / "run_check.sh"


def seg_problems(seg: dict) -> list[str]:
    problems = []
    if seg.get("result"):
        problems.append(seg["result"])
    if seg.get("firstOutcome") != "prompt":
        problems.append(f"first outcome {seg.get('firstOutcome')!r}, not the load prompt")
    if seg.get("stillLoading"):
        problems.append("still 'Loading SEG'")
    if seg.get("framesNotImported"):
        problems.append(f"{seg['framesNotImported']} frame(s) not imported")
    if seg.get("firstOutcome") == "prompt" and not seg.get("segmentsInPanel"):
        problems.append("no segment in the segmentation panel")
    problems += [f"error: {e}" for e in seg.get("errors", [])]
    return problems


def sr_problems(sr: dict) -> list[str]:
    problems = []
    if sr.get("result"):
        problems.append(sr["result"])
    problems += [f"error boundary: {e.splitlines()[0]}" for e in sr.get("errorBoundary", [])]
    if sr.get("notRehydratable"):
        problems.append(f"{len(sr['notRehydratable'])} measurement(s) not rehydratable")
    if sr.get("noScoordWarnings"):
        problems.append(f"{sr['noScoordWarnings']} measurement group(s) without SCOORD (not listed)")
    return problems


def pdf_problems(pdf: dict) -> list[str]:
    problems = [pdf["result"]] if pdf.get("result") else []
    if not pdf.get("chromePdfViewerLoaded"):
        problems.append("Chromium's PDF viewer did not load the document")
    return problems + [f"error: {e}" for e in pdf.get("errors", [])]


def findings(report: dict) -> list[dict]:
    """One row per object the harness opened: study tag, kind, series, problems."""
    rows = []
    for study in report.get("studies", []):
        for kind, check in (("SEG", seg_problems), ("SR", sr_problems), ("PDF", pdf_problems)):
            for item in study.get(kind.lower(), []):
                rows.append({"study": study.get("tag"), "kind": kind, "series": item.get("series"),
                             "problems": check(item)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("input", type=Path)
    parser.add_argument("--out", type=Path, default=Path("/tmp/dicomnode-viewer-check/out"))
    parser.add_argument("--shots", type=Path, default=Path("/tmp/dicomnode-viewer-check/shots"))
    parser.add_argument("--skip-process", action="store_true", help="use the results already in --out")
    args = parser.parse_args(argv)
    if not HARNESS.exists():
        print(f"viewer harness not found at {HARNESS}", file=sys.stderr)
        return 2
    if not args.skip_process:
        cli = [sys.executable, "-c", "import sys; from dicomnode.cli import main; sys.exit(main())"]
        subprocess.run(cli + ["process", str(args.input), "--out", str(args.out)], check=True, cwd=ROOT)
    subprocess.run(["bash", str(HARNESS), str(args.out), str(args.input), str(args.shots)], check=True,
                   env={**os.environ})
    report = json.loads((args.shots / "report.json").read_text())
    rows = findings(report)
    for row in rows:
        verdict = "ok" if not row["problems"] else "FAIL: " + "; ".join(row["problems"])
        print(f"{row['study']:<28} {row['kind']:<4} {str(row['series'])[:52]:<52} {verdict}")
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "viewer_check.json").write_text(json.dumps(
        {"chromium": report.get("chromium"), "objects": rows, "shots": str(args.shots)}, indent=1))
    failed = [r for r in rows if r["problems"]]
    print(f"\n{len(rows) - len(failed)} of {len(rows)} object(s) display without a problem; screenshots in {args.shots}")
    return 1 if failed or not rows else 0


if __name__ == "__main__":
    sys.exit(main())
