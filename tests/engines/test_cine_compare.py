"""engines.cine.compare: pairing by fold and patient, the paired statistics, both kinds of source, clear refusals."""
from __future__ import annotations

import json
import math

import pytest

from engines.cine.compare import compare, load_subjects, load_whole_cines, main, markdown, paired_errors

DICE = {"lv_blood_pool": 0.9, "lv_myocardium": 0.8, "rv_blood_pool": 0.85}


def subject(name: str, lvef_error: float, fold: str = "fold0", myo: float = 0.8) -> dict:
    reference = {"lv_ef_percent": 55.0, "rv_ef_percent": 50.0, "lv_mass_g": 100.0, "lv_edv_ml": 150.0, "lv_esv_ml": 67.5}
    predicted = dict(reference, lv_ef_percent=55.0 + lvef_error, rv_ef_percent=None)
    dice = {phase: dict(DICE, lv_myocardium=myo) for phase in ("ED", "ES")}
    return {"subject": name, "fold": fold, "predicted": predicted, "reference": reference, "dice": dice}


def test_paired_errors_on_shared_subjects_only():
    first = [subject("a", 1.0), subject("b", -3.0), subject("only-first", 50.0)]
    second = [subject("b", 5.0), subject("a", -2.0), subject("only-second", 50.0)]
    result = paired_errors(first, second, "lv_ef_percent")
    assert result["n"] == 2
    assert result["mae"] == pytest.approx(2.0) and result["other_mae"] == pytest.approx(3.5)
    assert result["bias"] == pytest.approx(-1.0) and result["other_bias"] == pytest.approx(1.5)
    # |a|-|b| per patient: a 1-2 = -1, b 3-5 = -2
    assert result["mae_difference"] == pytest.approx(-1.5)
    assert result["mae_difference_se"] == pytest.approx(math.sqrt(0.5) / math.sqrt(2))
    # a value missing on either side drops the pair (RVEF not predicted here)
    assert paired_errors(first, second, "rv_ef_percent") == {"n": 0}


def test_compare_pairs_within_folds_and_pools():
    first = {"fold0": [subject("a", 1.0, myo=0.9)], "fold1": [subject("a", 2.0, "fold1")], "fold2": [subject("z", 0.0)]}
    second = {"fold0": [subject("a", 3.0)], "fold1": [subject("a", -4.0, "fold1")], "fold3": [subject("z", 0.0)]}
    rows = compare(first, second)
    assert list(rows) == ["fold0", "fold1", "pooled"]
    assert rows["fold0"]["dice"]["lv_myocardium_ED"] == pytest.approx([0.9, 0.8])
    # the same patient name in two folds is two pairs once pooled
    assert rows["pooled"]["n"] == 2
    assert rows["pooled"]["errors"]["lv_ef_percent"]["mae_difference"] == pytest.approx(((1 - 3) + (2 - 4)) / 2)
    text = markdown(rows, {}, {}, ("new", "old"))
    assert "| pooled | 2 |" in text and "1.50 vs 3.50" in text


def test_compare_refuses_sources_without_shared_patients():
    with pytest.raises(ValueError, match="share no held-out patient"):
        compare({"fold0": [subject("a", 1.0)]}, {"fold0": [subject("b", 1.0)]})


def test_both_kinds_of_source(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "fold0").mkdir(parents=True)
    (run / "fold0" / "heldout_evaluation.json").write_text(json.dumps({"subjects": [subject("a", 1.0)]}))
    whole = [{"subject": "ACDC patient090", "ed_phase": 1, "es_phase": 9, "reference_ed_phase": 3,
              "reference_es_phase": 10, "lv_ef_percent": 60.0, "reference_lv_ef_percent": 44.9}]
    (run / "fold0" / "whole_cines.json").write_text(json.dumps(whole))
    report = tmp_path / "evaluation.json"
    report.write_text(json.dumps({"cv": {"subjects": [subject("a", 4.0), subject("c", 1.0, "fold1")]}}))
    assert set(load_subjects(report)) == {"fold0", "fold1"}
    assert load_whole_cines(report) == {} and load_whole_cines(run)["fold0"][0]["lv_ef_percent"] == 60.0
    out = tmp_path / "rows.json"
    main([str(run), "--against", str(report), "--json", str(out)])
    printed = capsys.readouterr().out
    assert "1/9 vs 3/10; 60.0 vs 44.9" in printed
    assert json.loads(out.read_text())["pooled"]["errors"]["lv_ef_percent"]["mae_difference"] == pytest.approx(-3.0)


def test_empty_source_is_refused_with_the_reason(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(FileNotFoundError, match="no held-out results"):
        load_subjects(tmp_path / "run")
    with pytest.raises(SystemExit, match="no held-out results"):
        main([str(tmp_path / "run"), "--against", str(tmp_path / "run")])
