"""The shipped demonstration bank: complete, reproducible from shared/datasets, faithful to the ground truth."""
from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

BANK = Path(__file__).resolve().parents[2] / "engines" / "models" / "report_bank"


def shipped_records() -> list[dict]:
    return [json.loads(line) for line in (BANK / "reports.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]


def test_bank_holds_every_labelled_case_once():
    records = shipped_records()
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == 205
    assert Counter(r["metadata"]["dataset"] for r in records) == {"emidec": 100, "acdc": 100, "sunnybrook": 5}
    for record in records:
        assert record["text"].startswith("Findings: ") and "Impression: " in record["text"]
        assert record["metadata"]["licence"] in {"CC BY-NC-SA 4.0", "CC0 1.0"}
        assert record["metadata"]["study_features"]


def test_bank_readme_states_licence_and_purpose():
    readme = (BANK / "README.md").read_text(encoding="utf-8")
    assert "CC BY-NC-SA 4.0" in readme and "CC0" in readme
    assert "demonstrat" in readme.lower() and "own" in readme.lower()


def test_bank_is_rebuilt_byte_for_byte_from_the_datasets(datasets, tmp_path):
    from engines.retrieval.build_demo import build

    build(datasets, tmp_path / "reports.jsonl")
    assert (tmp_path / "reports.jsonl").read_bytes() == (BANK / "reports.jsonl").read_bytes()


def test_reports_state_the_ground_truth_numbers(datasets):
    records = {r["id"]: r for r in shipped_records()}
    with open(datasets / "emidec-lge-png" / "reference_values_pixel_counts.csv", encoding="utf-8-sig") as handle:
        for row in csv.DictReader(handle):
            record = records[f"emidec-{row['case']}"]
            percent = float(row["mi_pct_of_myocardium_incl_mvo"])
            if percent > 0:
                assert f"{percent:.0f}%" in record["text"]
                assert "approximate" in record["text"].lower()
            else:
                assert "no" in record["impression"].lower()
    with open(datasets / "acdc-sample" / "reference_values_from_gt.csv", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            record = records[f"acdc-{row['patient']}"]
            assert f"{float(row['lv_edv_ml']):.0f} mL" in record["text"]
            assert record["metadata"]["study_features"]["lv_ef_percent"] == pytest.approx(float(row["lv_ef_pct"]), abs=0.1)
