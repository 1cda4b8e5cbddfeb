"""Build the shipped demonstration report bank (reports.jsonl, one record per labelled case) from shared/datasets."""
from __future__ import annotations

import argparse
import io
import json
import zipfile
from pathlib import Path

import pydicom
import pydicom.errors

from .demo_cases import all_cases
from .report_writer import write_report

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "models" / "report_bank" / "reports.jsonl"


def default_datasets_dir() -> Path:
    return Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


#: bank record id -> the demo study made from that case (dicomnode/demo_data): its report carries the study's
#: Study Instance UID, so `dicomnode demo` never suggests a case's own report back to it
DEMO_STUDIES = {"emidec-Case_P009": "emidec_Case_P009_lge.zip", "sunnybrook-SCD0000301": "sunnybrook_SCD0000301.zip"}
DEMO_DATA = Path(__file__).resolve().parents[2] / "dicomnode" / "demo_data"


def demo_study_uid(zip_name: str) -> str:
    """The Study Instance UID of the demo study in `dicomnode/demo_data/<zip_name>`."""
    with zipfile.ZipFile(DEMO_DATA / zip_name) as archive:
        for name in archive.namelist():
            if name.endswith("/"):
                continue
            try:
                return str(pydicom.dcmread(io.BytesIO(archive.read(name)), stop_before_pixels=True).StudyInstanceUID)
            except (pydicom.errors.InvalidDicomError, AttributeError):
                continue
    raise ValueError(f"no DICOM with a Study Instance UID in {zip_name}")


def build(datasets_dir: Path, out: Path, seed: int = 0) -> list[dict]:
    records = [write_report(case, seed=seed) for case in all_cases(datasets_dir)]
    for record in records:
        if record["id"] in DEMO_STUDIES:
            record["metadata"]["study_instance_uid"] = demo_study_uid(DEMO_STUDIES[record["id"]])
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
