"""Another patient's report text held to this study (break43c): what a text claims is read from its words and held
against the node's own LGE and cine measurements, every numeral but limits is blanked, identifiers withhold a
report, a huge report is cut, and every rendering says the text is another patient's."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from dicomnode.analysis.pipeline import AnalysisContext
from dicomnode.analysis.report_bank import read_bank_file, scan_bank
from dicomnode.analysis.report_text import (BLANK, MAX_REPORT_CHARS, NodeFacts, blank_measurements, contradicted,
                                            cut_text, fitting_text, identifier_findings, node_facts, report_claims,
                                            shorten)
from dicomnode.analysis.suggestions import SuggestionsPipeline, node_lge_findings
from dicomnode.cli import main
from dicomnode.config import Config
from dicomnode.inference.runtime import Runtime
from dicomnode.summary_view import print_summary_table

# --- what the node measured in the tester's studies (summary blocks as the node writes them) ----------------------

LVEF_FLAG = "LVEF below normal range (19.4 %; men 57–77 %, women 57–77 %)"
DEMO_CINE = {"cine": {"lv_edv_ml": 223.94, "lv_ef_percent": 19.39, "rv_edv_ml": 95.94, "rv_ef_percent": 54.95,
                      "coverage": {"complete": True}, "max_wall_thickness": {"max_mm": 12.76},
                      "flags": ["LV EDV above normal range (223.9 mL; men 106–214 mL, women 86–178 mL)", LVEF_FLAG]}}
HCM_CINE = {"cine": {"lv_edv_ml": 180.45, "lv_ef_percent": 59.68, "rv_edv_ml": 161.21, "rv_ef_percent": 57.3,
                     "coverage": {"complete": True}, "max_wall_thickness": {"max_mm": 24.97},
                     "flags": ["LV EDV outside the normal range for one sex (180.5 mL: within for men; above for "
                               "women; men 106–214 mL, women 86–178 mL)"]}}
DCM_CINE = {"cine": {"lv_edv_ml": 300.8, "lv_ef_percent": 25.84, "rv_edv_ml": 150.0, "rv_ef_percent": 35.05,
                     "coverage": {"complete": True}, "max_wall_thickness": {"max_mm": 16.31},
                     "flags": ["LV EDV above normal range (300.8 mL; men 106–214 mL, women 86–178 mL)",
                               "LVEF below normal range (25.8 %; men 57–77 %, women 57–77 %)",
                               "RVEF below the RV systolic dysfunction cut-off, within the model's known error: confirm "
                               "by reading (35.1 %; cut-off 45 %)"]}}
NORMAL_CINE = {"cine": {"lv_edv_ml": 139.05, "lv_ef_percent": 63.42, "rv_edv_ml": 140.0, "rv_ef_percent": 49.93,
                        "coverage": {"complete": True}, "max_wall_thickness": {"max_mm": 11.5}, "flags": []}}
#: the demo LGE: 22.5 %, large burden, MVO presence not stated, AHA segments not assigned
DEMO_LGE = {"lge": {"determined": True, "lge_percent": 22.52, "myocardium_volume_ml": 138.24, "mvo_volume_ml": 3.51,
                    "large_scar_burden": True, "mvo_validation": {"presence_stated": False},
                    "aha_segments": {"applicable": False}}}


def facts_of(summary: dict) -> NodeFacts:
    findings = node_lge_findings(summary.get("lge"))
    return node_facts(summary, *((findings.significant_lge, findings.large_burden, findings.mvo) if findings else ()))


# --- kind 1: a suggestion never contradicts the node's own measurements --------------------------------------------

@pytest.mark.parametrize("summary, text, point", [
    (HCM_CINE, "Non-dilated LV, mildly reduced global systolic function.", "LV function"),
    (HCM_CINE, "Hyperdynamic systolic function.", "LV function"),
    (HCM_CINE, "Normal LV wall thickness (about 10 mm).", "hypertrophy"),
    (DEMO_CINE, "The left ventricle is normal in size with severely reduced systolic function.", "LV size"),
    (DEMO_CINE, "The right ventricle is not dilated with moderately reduced function (RVEF 40%).", "RV function"),
    (DCM_CINE, "RVEF 40% (mildly reduced RV function).", "RV function"),
    (NORMAL_CINE, "RVEF 40% (mildly reduced RV function).", "RV function"),
    (NORMAL_CINE, "Dilated LV with severely impaired systolic function.", "LV size"),
    (DEMO_LGE, "No LGE. Impression: Structurally normal heart.", "LGE"),
    (DEMO_LGE, "Befund: Kein Late Enhancement. Beurteilung: Unauffällige Kardio-MRT.", "LGE"),
    (DEMO_LGE, "Moderate predominantly transmural myocardial infarction.", "LGE extent"),
    (DEMO_LGE, "Myocardial infarction of small extent.", "LGE extent"),
    ({"lge": {**DEMO_LGE["lge"], "lge_percent": 8.0, "large_scar_burden": False}}, "Large scar burden.", "LGE extent"),
])
def test_a_report_text_that_contradicts_the_nodes_measurements_is_found(summary, text, point):
    assert point in contradicted(report_claims(text), facts_of(summary))


@pytest.mark.parametrize("summary, text", [
    (HCM_CINE, "Non-dilated LV, normal global systolic function. Increased LV wall thickness. RVEF 60% (normal)."),
    (DEMO_CINE, "Dilated LV, severely reduced global systolic function. Right ventricle: normal size."),
    (DCM_CINE, "Severely dilated left ventricle with severely impaired systolic function."),
    (NORMAL_CINE, "Normal biventricular size and function. Impression: Normal cardiac MRI."),
    (DEMO_LGE, "Large transmural myocardial infarction. Large scar burden (at least 15% of LV mass)."),
])
def test_a_report_text_that_fits_the_measurements_is_not_held_back(summary, text):
    assert contradicted(report_claims(text), facts_of(summary)) == ()


def test_the_shipped_bank_is_held_to_the_demo_studies():
    """Every shipped report that the tester found contradicting (acdc-patient040/026/034 for the HCM study, 053 for
    the demo cine, 012 for DCM, 062 for the normal study, the 'moderate' infarcts for the demo LGE) is held back."""
    bank = Path(__file__).resolve().parents[2] / "engines" / "models" / "report_bank" / "reports.jsonl"
    texts = {record["id"]: record["text"] for record in map(json.loads, bank.read_text().splitlines())}
    for summary, ids in ((HCM_CINE, ("acdc-patient040", "acdc-patient026", "acdc-patient034")),
                         (DEMO_CINE, ("acdc-patient053",)), (DCM_CINE, ("acdc-patient012",)),
                         (NORMAL_CINE, ("acdc-patient062",)), (DEMO_LGE, ("emidec-Case_P096", "emidec-Case_P036"))):
        for report_id in ids:
            assert contradicted(report_claims(texts[report_id]), facts_of(summary)), (report_id, summary)


def test_what_the_node_did_not_measure_or_state_is_taken_out():
    text = ("Findings: Transmural enhancement of the inferior wall (AHA segments 4, 10), with microvascular "
            "obstruction. Microvascular obstruction (no-reflow) within the infarct. Non-dilated LV, normal function. "
            "Impression: Inferior infarction, MVO present.")
    lge_only, removed = fitting_text(text, facts_of(DEMO_LGE))
    assert "obstruction" not in lge_only.lower() and "MVO" not in lge_only
    assert "inferior" not in lge_only.lower() and "function" not in lge_only
    assert lge_only.startswith("Findings: Transmural enhancement of the ___ (AHA ___).")
    assert any("MVO" in reason for reason in removed) and any("AHA" in reason for reason in removed)
    cine_only, removed = fitting_text(text, facts_of(NORMAL_CINE))
    assert cine_only == "Findings: Non-dilated LV, normal function."
    assert any("no LGE measured" in reason for reason in removed)
    # with MVO presence stated and segments assigned, the walls and MVO stay
    stated = {"lge": {**DEMO_LGE["lge"], "mvo_validation": {"presence_stated": True},
                      "aha_segments": {"applicable": True}}}
    kept, _ = fitting_text(text, facts_of(stated))
    assert "inferior wall (AHA segments 4, 10), with microvascular obstruction" in kept


# --- kind 2: another patient's numbers and identifiers -------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("LVEF 25 per cent.", f"LVEF {BLANK} per cent."), ("25 percent", f"{BLANK} percent"),
    ("LVEF of 0.25.", f"LVEF of {BLANK}."), ("ejection fraction 25", f"ejection fraction {BLANK}"),
    ("SV 70 mL/beat", f"SV {BLANK} mL/beat"), ("LVEDVi 110 mL/m^2", f"LVEDVi {BLANK} mL/m^2"),
    ("mass 90 g/m^2", f"mass {BLANK} g/m^2"), ("CO 5.1 l/min", f"CO {BLANK} l/min"),
    ("EDV 250 cm3", f"EDV {BLANK} cm3"), ("a 65 yo man", f"a {BLANK} yo man"), ("aged 65", f"aged {BLANK}"),
    ("65-year old man", f"{BLANK}-year old man"), ("LVEF 25±5%", f"LVEF {BLANK}±{BLANK}%"),
    ("Enhancement is present on 8 of 9 short-axis slices.", f"Enhancement is present on {BLANK} of {BLANK} short-axis slices."),
    ("prior study of 12/03/2025", f"prior study of {BLANK}"), ("LVEF45%, EDV250ml", f"LVEF{BLANK}%, EDV{BLANK}ml"),
    ("Native T1 1050 ms at 1.5 T", f"Native T1 {BLANK} ms at 1.5 T"), ("25 Prozent", f"{BLANK} Prozent"),
    ("Scar burden of 15% or more.", "Scar burden of 15% or more."),
    ("Large scar burden (at least 15% of LV mass).", "Large scar burden (at least 15% of LV mass)."),
    ("LVEF 45 % (normal 57-77 %)", f"LVEF {BLANK} % (normal 57-77 %)"),
    ("ICD indicated for LVEF <35%", "ICD indicated for LVEF <35%"),
    ("AHA segments 1, 2, 7 and 8 (AHA 17-segment model)", "AHA segments 1, 2, 7 and 8 (AHA 17-segment model)"),
])
def test_every_numeral_but_limits_and_segments_is_blanked(text, expected):
    assert blank_measurements(text)[0] == expected


def test_segment_numbers_are_blanked_where_the_node_assigned_none():
    assert blank_measurements("AHA segments 1, 2, 7", keep_segments=False)[0] == f"AHA segments {BLANK}, {BLANK}, {BLANK}"


@pytest.mark.parametrize("text", [
    "Patient: MUELLER^HANS. Findings: normal.", "Name: John Smith", "MRN 4711-0815", "DOB 12.03.1958",
    "patient NAME^SECRET", "Compared with 03/02/2024.", "Signed: Dr. Smith", "reported by the attending"])
def test_identifiers_are_found(text):
    assert identifier_findings(text)


def test_the_shipped_bank_holds_no_identifier():
    bank = Path(__file__).resolve().parents[2] / "engines" / "models" / "report_bank" / "reports.jsonl"
    assert not [r["id"] for r in map(json.loads, bank.read_text().splitlines()) if identifier_findings(r["text"])]
    assert not identifier_findings("LVEDV 310 mL, 150 mL/m^2. TID 1500, AHA segment 7, 1.5 T.")


# --- kind 3: an oversize report, kind 6: a console line -----------------------------------------------------------

def test_an_oversize_text_is_cut_at_a_word_with_a_marker():
    text, cut = cut_text("word " * 10_000)
    assert cut and len(text) < MAX_REPORT_CHARS + 100 and "cut here" in text and "word wo" not in text.split(" …")[0][-8:]
    assert cut_text("short report.") == ("short report.", False)


def test_a_console_line_is_cut_at_a_word_with_an_ellipsis():
    assert shorten("Scar burden of ___% or more and something else entirely", 30) == "Scar burden of ___% or more…"
    assert shorten("short", 30) == "short"


# --- kind 5: bank loading ------------------------------------------------------------------------------------------

def test_invalid_bank_entries_are_refused_naming_the_file_and_line(tmp_path):
    (tmp_path / "r.jsonl").write_text("\n".join([
        '{"id": null, "text": "Transmural anterior infarct with 30% LGE."}',
        '{"id": "c", "findings": {"x": 1}}',
        '{"id": "e", "text": "No LGE.", "metadata": {"study_features": {"lge_percent": -5}}}',
        '{"id": "ok", "text": "No LGE."}']) + "\n")
    read = read_bank_file(tmp_path / "r.jsonl", "r.jsonl")
    assert [r.id for r in read.reports] == ["ok"]
    assert read.skipped == ["r.jsonl line 1 skipped: 'id' must be a non-empty string, got None",
                            "r.jsonl line 2 skipped: 'findings' must be a string, got dict",
                            "r.jsonl line 3 skipped: 'metadata.study_features.lge_percent' = -5 is outside 0..100"]


def test_txt_ids_are_paths_duplicates_are_named_and_latin1_is_read(tmp_path):
    for year in ("2024", "2025"):
        (tmp_path / year).mkdir()
        (tmp_path / year / "report.txt").write_text(f"Report of {year[-1]} kind.")
    (tmp_path / "dup.jsonl").write_text('{"id": "2024/report", "text": "Another."}\n')
    (tmp_path / "old.txt").write_bytes("Kein Late Enhancement, unauffällige Funktion.".encode("latin-1"))
    scan = scan_bank(tmp_path)
    assert scan.reports == 3 and not scan.skipped_files
    assert scan.duplicate_ids == ["id '2024/report' in dup.jsonl (first in 2024/report.txt)"]
    assert scan.notes == ["old.txt read as Windows-1252 (not UTF-8)"]
    reports = read_bank_file(tmp_path / "old.txt", "old.txt").reports
    assert reports[0].text == "Kein Late Enhancement, unauffällige Funktion."


def test_a_report_with_identifiers_is_withheld_and_config_check_says_so(tmp_path, capsys):
    bank = tmp_path / "bank"
    bank.mkdir()
    (bank / "named.txt").write_text("Patient: MUELLER^HANS, MRN 4711-0815. Inferior infarct.")
    (bank / "long.txt").write_text("Inferior infarct. " * 100_000)
    (bank / "clean.txt").write_text("Inferior infarct.")
    scan = scan_bank(bank)
    assert scan.reports == 2 and len(scan.withheld) == 1 and scan.withheld[0].startswith("named.txt (id 'named')")
    assert scan.notes[0].startswith("long.txt (id 'long') is 1799999 characters long: only its first 4000 are used")
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\nstorage_dir = "{tmp_path / "store"}"\n[analysis.suggestions]\nbank_dir = "{bank}"\n')
    assert main(["config", "check", str(config), "--roles", "analyse"]) == 0
    err = capsys.readouterr().err
    assert "1 report(s) WITHHELD because they hold patient or person identifiers" in err and "named.txt" in err


# --- the pipeline with a site's plain-text bank (no stored fields) -------------------------------------------------

def _site(tmp_path: Path, models_dir: Path, files: dict[str, str]) -> SuggestionsPipeline:
    models = tmp_path / "models"
    models.mkdir()
    (models / "text_encoder").symlink_to(models_dir / "text_encoder")
    bank = tmp_path / "bank"
    bank.mkdir()
    for name, text in files.items():
        (bank / name).parent.mkdir(parents=True, exist_ok=True)
        (bank / name).write_text(text)
    config = Config()
    config.node.storage_dir = tmp_path / "storage"
    config.inference.models_dir = models
    config.analysis.suggestions.bank_dir = bank
    config.analysis.suggestions.min_similarity = -1.0
    config.analysis.suggestions.top_k = 5
    pipeline = SuggestionsPipeline(config, Runtime(config.inference))
    assert pipeline.wait_until_indexed(60)
    return pipeline


SITE_BANK = {
    "normal2.txt": "Findings: Normal LV size and normal global and regional systolic function (LVEF 65 per cent). "
                   "No LGE. Impression: Structurally normal heart. No evidence of infarction.",
    "dcm.txt": "Findings: Severely dilated left ventricle (LVEDV 310 mL, 150 mL/m^2) with severely impaired systolic "
               "function, LVEF 18 percent. Mid-wall septal LGE. Impression: Dilated cardiomyopathy.",
    "infarct.txt": "Findings: Transmural late gadolinium enhancement of the anterior wall (AHA segments 1, 2, 7, 8), "
                   "about 25% of the LV myocardium, with microvascular obstruction. Impression: Large anterior "
                   "myocardial infarction.",
    "moderate.txt": "Impression: Myocardial infarction of moderate extent.",
    "unreadable.txt": "Conclusion: aspect habituel.",
}


def _context(pipeline, summary):
    return AnalysisContext(config=pipeline.config, runtime=None, started_at=dt.datetime(2026, 12, 6),
                           study_summary_so_far=summary, earlier_results=[])


def test_a_site_bank_without_fields_is_held_to_the_study(tmp_path, models_dir, capsys):
    pipeline = _site(tmp_path, models_dir, SITE_BANK)
    lge = pipeline.run(None, _context(pipeline, DEMO_LGE))
    assert [s["report_id"] for s in lge.summary][0] == "infarct"
    assert not {"normal2", "moderate"} & {s["report_id"] for s in lge.summary}
    text = lge.summary[0]["text"]
    assert "anterior" not in text and "obstruction" not in text and "25%" not in text and "Large" in text
    excluded = lge.measurements["contradicting_reports_excluded"]
    assert excluded["LGE"] == 1 and excluded["LGE extent"] == 1  # "No LGE" and "moderate extent"
    assert lge.measurements["unchecked_reports_excluded"] == 1  # nothing it claims can be read
    assert "another patient" not in lge.summary_extra and "OTHER patients" in lge.summary_extra["suggestions_source"]
    cine = pipeline.run(None, _context(pipeline, DCM_CINE))
    assert [s["report_id"] for s in cine.summary] == ["dcm"]  # the normal report contradicts, the LGE ones say nothing
    assert "LGE" not in cine.summary[0]["text"] and "150" not in cine.summary[0]["text"]
    assert "18" not in cine.summary[0]["text"]
    print_summary_table({"studies": [{"study_instance_uid": "1.2", "series": [], "outputs": [],
                                      "suggestions": cine.summary}]})
    out = capsys.readouterr().out
    assert "text of OTHER patients' reports" in out and "another patient's report dcm" in out


# --- review 43: claims read per statement, identifiers in every field, limits and dates read as such ---------------

NO_LGE = NodeFacts(lge_measured=True, significant_lge=False)
LGE_FOUND = NodeFacts(lge_measured=True, significant_lge=True)
EF_30 = NodeFacts(cine_measured=True, lv_ef=30.0, rv_ef=30.0)


@pytest.mark.parametrize("facts, text, point", [
    (NO_LGE, "Subendocardial late enhancement of the inferior wall, no enhancement elsewhere.", "LGE"),
    (NO_LGE, "No LGE in the septum but extensive transmural LGE in the lateral wall.", "LGE"),
    (NO_LGE, "No inferior scar and extensive lateral LGE.", "LGE"),
    (EF_30, "Severely reduced RV function and normal LV function.", "LV function"),
    (EF_30, "Good LV function despite reduced RV function.", "LV function"),
    (NodeFacts(cine_measured=True, lv_dilated=True, rv_dilated=True),
     "Normal LV and RV size, with severely impaired biventricular function.", "LV size"),
    (NodeFacts(cine_measured=True, lv_dilated=True, rv_dilated=True),
     "Normal LV and RV size, with severely impaired biventricular function.", "RV size"),
    (NodeFacts(cine_measured=True, lv_dilated=True, rv_dilated=True),
     "Normal-sized left ventricle and dilated right ventricle.", "LV size"),
    (NodeFacts(cine_measured=True, lv_dilated=False, rv_dilated=True), "The ventricles are not dilated.", "RV size"),
])
def test_each_statement_of_a_sentence_is_held_to_the_node(facts, text, point):
    assert point in contradicted(report_claims(text), facts)


@pytest.mark.parametrize("facts, text", [
    (LGE_FOUND, "Subendocardial late enhancement of the inferior wall, no enhancement elsewhere."),
    (NO_LGE, "No evidence of myocardial scar or fibrosis."),
    (NO_LGE, "No oedema, scar or fibrosis."),
    (NodeFacts(cine_measured=True, lv_ef=62.0, rv_ef=30.0), "Severely reduced RV function and normal LV function."),
    (NodeFacts(cine_measured=True, lv_dilated=False, rv_dilated=True),
     "Normal-sized left ventricle and dilated right ventricle."),
    (NodeFacts(cine_measured=True, lv_dilated=False, rv_dilated=False), "The ventricles are not dilated."),
])
def test_a_sentence_read_statement_by_statement_fits(facts, text):
    assert contradicted(report_claims(text), facts) == ()


@pytest.mark.parametrize("text", ["Reduced RV versus LV function.", "Severely reduced and dilated LV and normal RV."])
def test_a_grade_that_cannot_be_tied_to_one_ventricle_is_not_offered(text):
    facts = NodeFacts(cine_measured=True, lv_ef=30.0, rv_ef=60.0, lge_measured=True, significant_lge=False)
    fitted, removed = fitting_text(f"{text} No LGE.", facts)
    assert fitted == "No LGE." and any("one ventricle" in reason for reason in removed)


@pytest.mark.parametrize("text, expected", [
    ("LVEF was 30 or less.", f"LVEF was {BLANK} or less."),
    ("EF 30% or more reduced.", f"EF {BLANK}% or more reduced."),
    ("LGE extent of 20% or more was seen.", f"LGE extent of {BLANK}% or more was seen."),
    ("A scar burden of 15 % or more is associated with events.", "A scar burden of 15 % or more is associated with events."),
    ("ICD threshold LVEF 35% or less.", "ICD threshold LVEF 35% or less."),
])
def test_or_more_or_less_is_a_limit_only_in_a_criterion(text, expected):
    assert blank_measurements(text)[0] == expected


@pytest.mark.parametrize("text", [
    "Reported by John Smith, consultant.", "Signed by J. Smith", "Verified By: Jane Doe", "Dictated by the fellow.",
    "Mrs Smith, 65 years", "Mr. Jones was scanned.", "Herr Müller, 70 Jahre", "Frau Schmidt", "Miss Brown",
    "Compared with 31.12.24.", "Study of 2024-03-02."])
def test_signatures_titles_and_dates_are_identifiers(text):
    assert identifier_findings(text)


@pytest.mark.parametrize("text", [
    "Enhancement of segments 1-2-7.", "Enhancement of segments 1/2/7.", "LGE in segments 1-7-13.",
    "AHA segments 4, 10/11/16.", "Ratio 45/60/70 over 3 slices.", "Values 2024-13-45."])
def test_segment_lists_and_implausible_dates_are_no_identifiers(text):
    assert identifier_findings(text) == []


def test_an_impression_field_is_checked_for_identifiers(tmp_path):
    path = tmp_path / "bank.jsonl"
    path.write_text(json.dumps({"id": "a", "text": "Inferior infarct.", "impression": "Reported by John Smith."}) + "\n"
                    + json.dumps({"id": "b", "text": "Inferior infarct.", "findings": "Mrs Smith, LGE inferior."}) + "\n"
                    + json.dumps({"id": "c", "text": "Inferior infarct.", "impression": "Inferior infarction."}) + "\n")
    read = read_bank_file(path, "bank.jsonl")
    assert [r.id for r in read.reports] == ["c"] and len(read.withheld) == 2


def test_an_impression_that_contradicts_the_node_is_not_offered(tmp_path, models_dir):
    record = {"id": "imp", "text": "Findings: Transmural late gadolinium enhancement of the lateral wall.",
              "impression": "No LGE. Normal cardiac MRI."}
    pipeline = _site(tmp_path, models_dir, {"site.jsonl": json.dumps(record) + "\n",
                                            "infarct.txt": SITE_BANK["infarct.txt"]})
    result = pipeline.run(None, _context(pipeline, DEMO_LGE))
    assert "imp" not in {s["report_id"] for s in result.summary} and "imp" not in result.measurements["impressions"]
    assert result.measurements["contradicting_reports_excluded"]["LGE"] == 1
