"""Suggestions that are safe to adopt: another patient's numbers blanked, a study's (or patient's) own report never
suggested for it, an empty list that says why, and a bank that config check warns about."""
from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydicom import Dataset

from dicomnode.analysis import run as analysis_run
from dicomnode.analysis.pipeline import AnalysisContext, PipelineResult
from dicomnode.analysis.report_bank import scan_bank
from dicomnode.analysis.run import Analyser
from dicomnode.analysis.suggestions import BLANK, SuggestionsPipeline, blank_measurements, own_report_ids
from dicomnode.cli import main
from dicomnode.config import Config
from dicomnode.inference.runtime import Runtime
from dicomnode.summary_view import print_summary_table

DCM_SUMMARY = {"cine": {"lv_edv_ml": 290, "lv_esv_ml": 220, "lv_ef_percent": 19.4, "lv_mass_g": 170,
                        "rv_edv_ml": 140, "rv_esv_ml": 60, "rv_ef_percent": 57}}
#: a number with a measurement unit, as a prior report would quote it
QUOTED_NUMBER = re.compile(r"\d+(?:[.,]\d+)?\s?(?:mL|ml|%|g\b|g/m2|mm|ms\b)")


def context_for(config, summary):
    return AnalysisContext(config=config, runtime=None, started_at=dt.datetime(2026, 12, 5),
                           study_summary_so_far=summary, earlier_results=[])


def site_pipeline(tmp_path: Path, models_dir: Path, records: list[dict] | None = None, files: dict | None = None,
                  min_similarity: float = -1.0) -> SuggestionsPipeline:
    models = tmp_path / "models"
    models.mkdir()
    (models / "text_encoder").symlink_to(models_dir / "text_encoder")
    bank = tmp_path / "bank"
    bank.mkdir()
    if records is not None:
        (bank / "reports.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    for name, content in (files or {}).items():
        (bank / name).write_bytes(content)
    config = Config()
    config.node.storage_dir = tmp_path / "storage"
    config.inference.models_dir = models
    config.analysis.suggestions.bank_dir = bank
    config.analysis.suggestions.min_similarity = min_similarity
    pipeline = SuggestionsPipeline(config, Runtime(config.inference))
    assert pipeline.wait_until_indexed(60)
    return pipeline


def study_with(patient_id: str = "", accession: str = "", study_uid: str = "1.2.3.999"):
    header = Dataset()
    header.PatientID, header.AccessionNumber = patient_id, accession
    series = SimpleNamespace(instances=[SimpleNamespace(dataset=header)])
    return SimpleNamespace(study_instance_uid=study_uid, series=[series])


# --- finding 10: another patient's numbers -------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("LV end-diastolic volume 226 mL (124 mL/m2), end-systolic volume 159 mL, ejection fraction 30%.",
     "LV end-diastolic volume ___ mL (___ mL/m2), end-systolic volume ___ mL, ejection fraction ___%."),
    ("LV mass 121 g (67 g/m2). Wall thickness about 8 mm. Native T1 1050 ms. EF 19,4 %.",
     "LV mass ___ g (___ g/m2). Wall thickness about ___ mm. Native T1 ___ ms. EF ___ %."),
    ("It extends over 8 of the 8 slices, about 28% of the LV myocardium (male, 79 years).",
     "It extends over ___ of the ___ slices, about ___% of the LV myocardium (male, ___ years)."),
    ("EDV/ESV 226/159 mL, EF 20-25%.", "EDV/ESV ___/___ mL, EF ___-___%."),
    ("Inferior segments 4 and 10 (AHA 17-segment model), 1.5 T, TID 1500.",
     "Inferior segments 4 and 10 (AHA 17-segment model), 1.5 T, TID 1500."),
])
def test_blank_measurements_replaces_every_number_with_a_unit(text, expected):
    blanked, count = blank_measurements(text)
    assert blanked == expected
    assert count == expected.count(BLANK)


def test_the_shipped_banks_suggestions_quote_no_other_patients_numbers(tmp_path):
    """The tester's cine study (LVEF 19.4 % measured) was offered "ejection fraction 30%" of acdc-patient045."""
    config = Config()
    config.node.storage_dir = tmp_path
    pipeline = SuggestionsPipeline(config, Runtime(config.inference))
    assert pipeline.wait_until_indexed(120)
    result = pipeline.run(None, context_for(config, DCM_SUMMARY))
    assert result.summary and set(result.summary[0]) == {"text", "score", "report_id"}
    for suggestion in result.summary:
        raw = next(r.text for r in pipeline.bank.reports if r.id == suggestion["report_id"])
        assert QUOTED_NUMBER.search(raw), "the prior report quotes numbers"
        assert not QUOTED_NUMBER.search(suggestion["text"]), suggestion["text"]
        assert BLANK in suggestion["text"]
    assert result.measurements["numbers_blanked"] > 0
    assert not any(QUOTED_NUMBER.search(text) for text in result.measurements["impressions"].values())
    assert "suggestions_note" not in result.summary_extra


def test_a_report_of_the_same_patient_or_accession_is_never_suggested(tmp_path, models_dir):
    text = "Dilated LV, ejection fraction 24%. Impression: dilated cardiomyopathy."
    records = [
        {"id": "same-accession", "text": text, "metadata": {"accession_number": "ACC42"}},
        {"id": "same-patient", "text": "Severely enlarged left ventricle with poor global contraction, LVEF 20 %, "
                                       "mitral regurgitation.", "metadata": {"patient_id": ["P-7", "P-7b"]}},
        {"id": "other", "text": "Late gadolinium enhancement in the inferior wall. Impression: old infarct.",
         "metadata": {"patient_id": "P-1", "accession_number": "ACC1"}},
    ]
    pipeline = site_pipeline(tmp_path, models_dir, records)
    anyone = pipeline.run(study_with("P-2", "ACC2"), context_for(pipeline.config, DCM_SUMMARY))
    assert {s["report_id"] for s in anyone.summary} == {"same-accession", "same-patient", "other"}
    resent = pipeline.run(study_with("P-7", "ACC42", study_uid="1.2.3.1000"), context_for(pipeline.config, DCM_SUMMARY))
    assert [s["report_id"] for s in resent.summary] == ["other"]
    assert resent.measurements["own_reports_excluded"] == ["same-accession", "same-patient"]
    assert all(item["report_id"] == "other" for item in resent.measurements["similar_studies"])
    assert own_report_ids(pipeline.bank.reports, None, None, None) == []  # no identity: nothing left out


# --- finding 11: an empty list says why; the bank is checked ------------------------------------------------------

def test_an_empty_suggestion_list_carries_a_note_into_summary_json(tmp_path, models_dir, monkeypatch, capsys):
    files = {"binary.txt": b"\x95\xff\x00 not text", "r1.txt": b"Late enhancement of the inferior wall."}
    records = [{"id": "r2", "text": "Normal study."}, "not json"]
    bank_lines = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n"
    files["reports.jsonl"] = bank_lines.encode()
    pipeline = site_pipeline(tmp_path, models_dir, files=files, min_similarity=0.99)
    result = pipeline.run(None, context_for(pipeline.config, DCM_SUMMARY))
    assert result.summary == []
    note = result.summary_extra["suggestions_note"]
    assert note.startswith("no prior report above min_similarity 0.99 among 2 reports in the bank")
    assert "1 file(s) and 1 line(s) of it could not be read" in note
    assert result.measurements["note"] == note

    # the analyser puts the note beside `suggestions` in the study's summary.json entry
    analyser = Analyser(pipeline.config)
    analyser._pipelines["suggestions"] = SimpleNamespace(run=lambda study, context: PipelineResult(
        name="suggestions", summary=[], summary_extra={"suggestions_note": note}))
    monkeypatch.setattr(analysis_run, "build_result_objects", lambda *args, **kwargs: [])
    study = SimpleNamespace(study_instance_uid="1.2.3", series=[object()], declined=[], excluded_instances=[],
                            summary_series=lambda: [])
    summary = analyser.analyse(study, ["suggestions"]).summary
    assert summary["suggestions"] == [] and summary["suggestions_note"] == note
    print_summary_table({"studies": [summary]})  # `process` prints it
    assert f"  Suggestions: none, {note}" in capsys.readouterr().out


def test_the_bank_scan_counts_what_it_would_use_and_skip(tmp_path):
    (tmp_path / "a.txt").write_text("Report A.")
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "bin.txt").write_bytes(b"\x95\xff")
    (tmp_path / "r.jsonl").write_text('{"id": "a", "text": "dup"}\n{"x": 1}\n{bad\n{"id": "b", "text": "B"}\n')
    (tmp_path / ".dicomnode-index").mkdir()
    (tmp_path / ".dicomnode-index" / "ignored.txt").write_text("x")
    scan = scan_bank(tmp_path)
    assert (scan.files, scan.reports, scan.duplicates) == (4, 2, 1)
    assert [s.split(":")[0] for s in scan.skipped_files] == ["bin.txt"]
    assert len(scan.skipped_lines) == 3


def _check(tmp_path: Path, bank: Path, capsys) -> str:
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\nstorage_dir = "{tmp_path / "store"}"\n[analysis.suggestions]\nbank_dir = "{bank}"\n')
    assert main(["config", "check", str(config), "--roles", "analyse"]) == 0
    return capsys.readouterr().err


def test_config_check_warns_about_an_empty_or_partly_unreadable_bank(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    err = _check(tmp_path, empty, capsys)
    assert (f"warning: analysis.suggestions.bank_dir: {empty} holds no usable report (0 report file(s)): every "
            "study's suggestions are declined") in err
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "binary.txt").write_bytes(b"\x95\xff")
    (corrupt / "reports.jsonl").write_text('{"id": "r1", "text": "Report."}\n{bad\n{"id": "r2"}\n')
    err = _check(tmp_path, corrupt, capsys)
    assert f"warning: analysis.suggestions.bank_dir: {corrupt}: 1 file(s) unreadable (first: binary.txt: " in err
    assert "2 line(s) skipped (first: reports.jsonl line 2 skipped: not JSON" in err and "1 usable report(s)" in err
    good = tmp_path / "good"
    good.mkdir()
    (good / "r1.txt").write_text("Report.")
    assert "analysis.suggestions" not in _check(tmp_path, good, capsys)
