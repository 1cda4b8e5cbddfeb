"""LGE numbers withheld where the heart was not found or the myocardium is implausibly small (break2 finding 2), and
the LGE's LV coverage (the cine's stack_coverage; break2 finding 3): lower bounds on a partial stack, the burden flag
and the AHA thirds withheld on a stack clearly shorter than the LV."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from dicomnode.analysis import lge as lge_module
from dicomnode.analysis.cine_metrics import MIN_LV_EXTENT_MM
from dicomnode.analysis.aha import BASE_UNCONFIRMED_CAVEAT
from dicomnode.analysis.lge import (LGE_COVERAGE_CAVEAT, LGE_COVERAGE_CAVEAT_UNCONFIRMED, MIN_MYOCARDIUM_SECTION_MM2, NOT_LOCALISED,
                                    UNRELIABLE_SEG_NOTE, LGEPipeline, SegmentedStack, lge_coverage,
                                    not_determined_reason, short_stack_reason)
from dicomnode.analysis.pipeline import AnalysisContext
from dicomnode.config import Config
from dicomnode.labels import Label


def rings(shape, spacing_rc, blood_radii_mm, wall_mm=8.0, scar_slices=(), rv=True) -> np.ndarray:
    """(slices, rows, cols) node labels: per slice an LV blood disc of the given radius (mm; 0: no LV) in a ring of
    myocardium `wall_mm` thick, an RV blood pool beside it, and scar in the ring's upper half on `scar_slices`."""
    slices, rows, cols = shape
    rr, cc = np.mgrid[:rows, :cols]
    dy, dx = (rr - rows / 2) * spacing_rc[0], (cc - cols / 2) * spacing_rc[1]
    distance = np.hypot(dy, dx)
    labels = np.zeros(shape, dtype=np.uint8)
    for k, radius in enumerate(blood_radii_mm):
        if radius <= 0:
            continue
        plane = labels[k]
        ring = (distance >= radius) & (distance < radius + wall_mm)
        plane[ring] = Label.LV_MYOCARDIUM
        plane[distance < radius] = Label.LV_BLOOD_POOL
        if k in scar_slices:
            plane[ring & (dy < 0)] = Label.SCAR
        if rv:
            rv_distance = np.hypot(dy, dx + radius + wall_mm + 14.0)
            plane[(rv_distance < radius + 2) & (plane == 0) & (dx < 0)] = Label.RV_BLOOD_POOL
    return labels


# ---- pure rules ------------------------------------------------------------------------------------------------

def test_not_determined_when_not_localised_or_the_myocardium_is_too_small_for_an_lv():
    spacing = (1.0, 1.0)
    heart = rings((3, 120, 120), spacing, [20, 20, 15])
    assert not_determined_reason(True, heart, spacing) is None
    assert not_determined_reason(None, heart, spacing) is None
    assert not_determined_reason(False, heart, spacing).startswith("not determined: the heart was not found")
    tiny = rings((3, 120, 120), spacing, [3, 3, 3], wall_mm=3.0)  # ~85 mm² per slice, as a failed localisation
    reason = not_determined_reason(True, tiny, spacing)
    assert reason.startswith("not determined: the LV myocardium segmented is at most")
    assert f"{MIN_MYOCARDIUM_SECTION_MM2:.0f}" in reason
    # a child's LV (cavity 30 mm, wall 4 mm: ~430 mm²) is a measurement, not a failed localisation
    child = rings((3, 120, 120), spacing, [15, 15, 12], wall_mm=4.0)
    assert not_determined_reason(True, child, spacing) is None
    assert not_determined_reason(True, np.zeros((2, 8, 8), np.uint8), spacing) is not None


def test_lge_coverage_reuses_the_cine_rule_with_the_lge_caveat():
    spacing = (1.0, 1.0)
    # a whole stack: the LV tapers to a small apical section on the first slice (apex first)
    whole = lge_coverage(rings((6, 120, 120), spacing, [4, 12, 18, 22, 24, 24]), np.arange(6) * 10.0, True)
    assert whole["complete"] is True and whole["caveat"] is None and whole["lv_shorter_than_whole"] is False
    assert short_stack_reason(whole) is None
    # two contiguous mid slices 12 mm apart (break2 Case3004 'two'): too short, clearly less than the LV
    two = lge_coverage(rings((2, 120, 120), spacing, [22, 24]), np.array([0.0, 12.0]), True)
    assert two["complete"] is False and two["caveat"] == LGE_COVERAGE_CAVEAT
    assert two["lv_extent_mm"] == 24.0 and two["lv_shorter_than_whole"] is True
    assert f"{MIN_LV_EXTENT_MM:.0f} mm" in short_stack_reason(two)
    # a MyoPS-like stack (3 slices 23 mm apart, LV on every slice, the smaller end 64 % of the largest): the apex may
    # be cut off (lower bounds) but it spans 69 mm, so it is not 'clearly less than the LV'
    myops = lge_coverage(rings((3, 120, 120), spacing, [16, 19, 22]), np.array([0.0, 23.0, 46.0]), None)
    assert myops["complete"] is False and any("apex cut off" in r for r in myops["reasons"])
    assert myops["lv_extent_mm"] == 69.0 and myops["lv_shorter_than_whole"] is False
    assert short_stack_reason(myops) is None


# ---- through the pipeline, the segmentation replaced ------------------------------------------------------------

@pytest.fixture(scope="module")
def study(datasets, tmp_path_factory):
    from dicomnode.cmr.study import load_studies
    from dicomnode.devtools.make_study import make_study

    generated = make_study("emidec:Case_P043", tmp_path_factory.mktemp("lgecov") / "p043", "siemens", None,
                           datasets=datasets)
    [found] = load_studies([generated.out_dir / "dicom"])
    return found  # 5 slices 10 mm apart, the first apical


@pytest.fixture(scope="module")
def pipeline():
    from dicomnode.inference import Runtime

    runtime = Runtime()
    return LGEPipeline(Config(), runtime), runtime


def run_with(pipeline, study, monkeypatch, radii, localised=True, scar_slices=(), wall_mm=8.0):
    """Run the pipeline with segment_stack replaced by rings of the given blood radii (mm) per slice."""
    lge, runtime = pipeline

    def fake_segment(image, spacing_rc, run_model, spec, scar_log_offset=0.0, locate_model=None):
        labels = rings(image.shape, spacing_rc, radii, wall_mm=wall_mm, scar_slices=scar_slices)
        return SegmentedStack(labels=labels, probabilities=np.zeros((1,), np.float32),
                              centre_rc=(image.shape[1] / 2, image.shape[2] / 2), localised=localised)

    monkeypatch.setattr(lge_module, "segment_stack", fake_segment)
    context = AnalysisContext(config=lge.config, runtime=runtime, started_at=dt.datetime(2026, 12, 6, 12, 0))
    return lge.run(study, context)


NUMBERS = ("myocardium_volume_ml", "lv_mass_g", "scar_volume_ml", "mvo_volume_ml", "lge_percent", "large_scar_burden")


@pytest.mark.parametrize("localised, wall_mm, why", [(False, 8.0, "the heart was not found"),
                                                      (True, 2.0, "not a measurement of this heart")])
def test_numbers_are_withheld_when_the_heart_is_not_found_or_the_myocardium_is_implausible(
        pipeline, study, monkeypatch, localised, wall_mm, why):
    radii = [3, 3, 3, 3, 3] if not localised or wall_mm < 5 else [4, 12, 18, 22, 24]
    result = run_with(pipeline, study, monkeypatch, radii, localised=localised, scar_slices=(2,), wall_mm=wall_mm)
    summary = result.summary
    assert not result.declined and result.segmentations  # the SEG is still written, said to be unreliable
    assert summary["determined"] is False and summary["reason"].startswith("not determined: ")
    assert why in summary["reason"]
    assert all(summary[key] is None for key in NUMBERS)  # never a coded 'No' or a 0.0 % from a failed localisation
    assert summary["large_scar_burden_reason"] == summary["reason"]
    assert summary["nsd"]["lge_percent"] is None and summary["fwhm"]["lge_percent"] is None
    assert summary["aha_segments"]["applicable"] is False and \
        summary["aha_segments"]["reason"].startswith(summary["reason"])
    # every measured value withheld; which image each slice is (slice_index, position, source image) stays
    identity = {"slice_index", "position_mm", "sop_instance_uid", "frame_number", "instance_number", "series_number"}
    assert all(set(v for k, v in s.items() if k not in identity) == {None} for s in summary["per_slice"])
    assert all(s["sop_instance_uid"] for s in summary["per_slice"])
    assert summary["coverage"] is None
    assert summary["reason"] in summary["stack_warnings"] and UNRELIABLE_SEG_NOTE in summary["stack_warnings"]
    assert NOT_LOCALISED not in summary["stack_warnings"]  # the reason says it, once
    assert result.measurements["determined"] is False
    # the SEG itself says "review only" (break48b #2): results/seg.py reads it from the segmentation
    assert result.segmentations[0].unreliable is True


def test_a_whole_stack_keeps_its_numbers_and_flag(pipeline, study, monkeypatch):
    # the LV stops widening before its base (22 -> 24 mm radii would be +14 %: a base cut off, basal_end_widening),
    # and narrows onto the basal end slice (a 50-mm stack ending on its widest section: base not confirmed, below)
    result = run_with(pipeline, study, monkeypatch, [4, 12, 18, 24, 22], scar_slices=(1, 2, 3))
    assert result.segmentations[0].unreliable is False
    summary = result.summary
    assert summary["determined"] is True and summary["reason"] is None
    assert summary["coverage"]["complete"] is True and summary["coverage"]["lv_shorter_than_whole"] is False
    assert isinstance(summary["large_scar_burden"], bool) and summary["large_scar_burden_reason"] is None
    assert summary["aha_segments"]["applicable"] is True and "caveat" not in summary["aha_segments"]
    assert summary["lge_percent"] > 0 and summary["myocardium_volume_ml"] > 0


def test_a_short_stack_ending_on_its_widest_section_does_not_confirm_the_base(pipeline, study, monkeypatch):
    """break48b #3: 50 mm of LV ending on its largest section may be a stack whose base was cut off: the numbers stay,
    worded 'may be lower bounds', and the thirds say their basal segments may be mid-ventricular."""
    result = run_with(pipeline, study, monkeypatch, [4, 12, 18, 23, 24], scar_slices=(1, 2, 3))
    summary = result.summary
    coverage = summary["coverage"]
    assert coverage["complete"] is False and coverage["lv_shorter_than_whole"] is False
    assert [r.split(":")[0] for r in coverage["reasons"]] == ["base coverage not confirmed"]
    assert coverage["caveat"] == LGE_COVERAGE_CAVEAT_UNCONFIRMED
    assert summary["lge_percent"] > 0 and summary["aha_segments"]["applicable"] is True
    assert summary["aha_segments"]["caveat"] == BASE_UNCONFIRMED_CAVEAT


def test_a_stack_clearly_shorter_than_the_lv_withholds_the_flag_and_the_thirds(pipeline, study, monkeypatch):
    """Two mid slices with LV (20 mm of the 5 x 10 mm stack): before, the thirds called one slice basal and the
    other mid, and the flag was raised on the scar of the mid slices as if it were the LV's."""
    result = run_with(pipeline, study, monkeypatch, [0, 0, 22, 24, 0], scar_slices=(2, 3))
    summary = result.summary
    assert summary["determined"] is True and summary["lge_percent"] > 15  # the slices present, kept with a caveat
    coverage = summary["coverage"]
    assert coverage["complete"] is False and coverage["lv_extent_mm"] == 20.0
    assert coverage["lv_shorter_than_whole"] is True and coverage["caveat"] == LGE_COVERAGE_CAVEAT
    assert summary["large_scar_burden"] is None
    assert summary["large_scar_burden_reason"].startswith("withheld: the LV found spans only 20 mm")
    assert summary["aha_segments"]["applicable"] is False and "20 mm" in summary["aha_segments"]["reason"]


def test_an_apex_cut_off_keeps_the_flag_with_lower_bounds(pipeline, study, monkeypatch):
    """LV on every slice, the apical end still large (as MyoPS stacks): partial (lower bounds) but 50 mm long, so
    the flag and the thirds stay, the thirds with a caveat."""
    # (the base narrowing onto its end slice: a 50-mm stack also ending on its widest section would not confirm
    # its base either, and where the verdict depends on it the flag is withheld: test_base_unconfirmed)
    result = run_with(pipeline, study, monkeypatch, [20, 21, 22, 24, 23], scar_slices=(2,))
    summary = result.summary
    assert summary["coverage"]["complete"] is False and summary["coverage"]["lv_shorter_than_whole"] is False
    assert any("apex cut off" in r for r in summary["coverage"]["reasons"])
    assert isinstance(summary["large_scar_burden"], bool)
    assert summary["aha_segments"]["applicable"] is True and "thirds divide the slices present" in \
        summary["aha_segments"]["caveat"]


def test_the_lge_percent_validation_names_the_card_agreement_for_the_input_kind():
    from dicomnode.analysis.lge import lge_percent_validation
    metrics = {"source": "engines/lge/EVALUATION.json: 5-fold CV",
               "myops_lge_percent": {"mae": 5.797, "bias": 0.811, "sd": 7.398, "flag_accuracy": 0.909, "n": 33},
               "emidec_lge_percent": {"mae": 4.095, "bias": -0.257, "sd": 6.025, "flag_accuracy": 0.88, "n": 100}}
    native = lge_percent_validation(metrics, "native", 14.25, False, 15.0)
    assert native["mae"] == 5.8 and native["patients"] == 33 and "MyoPS" in native["data"]
    assert native["near_cutoff"] is True and native["source"].startswith("engines/lge/EVALUATION.json")
    windowed = lge_percent_validation(metrics, "windowed_8bit", 22.5, True, 15.0)
    assert windowed["mae"] == 4.09 and "EMIDEC" in windowed["data"] and windowed["near_cutoff"] is False
    assert lge_percent_validation(metrics, "native", 14.25, None, 15.0)["near_cutoff"] is None  # flag withheld
    assert lge_percent_validation({}, "native", 14.25, False, 15.0) is None


def test_a_flag_within_the_model_error_of_the_cutoff_is_indeterminate():
    """break40b F8: a Yes/No within the model's mean absolute error of the cut-off is not stated."""
    from dicomnode.analysis.lge import indeterminate_burden_reason, lge_percent_validation
    metrics = {"myops_lge_percent": {"mae": 5.797, "bias": 0.811, "sd": 7.398, "n": 33}}
    for lge_percent, large, shown in ((14.25, False, "14.3"), (20.0, True, "20.0"), (9.3, False, "9.3")):
        reason = indeterminate_burden_reason(lge_percent_validation(metrics, "native", lge_percent, large, 15.0),
                                             lge_percent, 15.0)
        assert reason == (f"indeterminate: %LGE {shown} % lies within the model's mean absolute error "
                          "(5.8 points) of the 15 % cut-off")
    for lge_percent, large in ((22.5, True), (3.0, False)):  # clear of the cut-off: the flag stands
        assert indeterminate_burden_reason(lge_percent_validation(metrics, "native", lge_percent, large, 15.0),
                                           lge_percent, 15.0) is None
    assert indeterminate_burden_reason(None, 14.25, 15.0) is None  # no validated error for this input kind
    withheld = lge_percent_validation(metrics, "native", 14.25, None, 15.0)  # a flag withheld for another reason
    assert indeterminate_burden_reason(withheld, 14.25, 15.0) is None


def test_the_shipped_card_carries_the_agreement_the_summary_quotes():
    import json
    from pathlib import Path
    from dicomnode.analysis.lge import VALIDATION_BY_KIND
    card = json.loads((Path(__file__).resolve().parents[2] / "engines/models/lge_unet.json").read_text())
    for key, _ in VALIDATION_BY_KIND.values():
        assert card["metrics"][key]["mae"] > 0 and card["metrics"][key]["n"] > 0


#: a card's MVO figures (engines.lge.evaluate.mvo_agreement) as the shipped card's: under the goals
MVO_FIGURES = {"n": 100, "dice_per_slice": 0.377, "volume_mae_ml": 1.319, "volume_bias_ml": 0.19, "with_mvo": 40,
               "without_mvo": 60, "without_mvo_with_predicted": 29,
               "presence": [{"floor_ml": 0.0, "accuracy": 0.69, "sensitivity": 0.95, "specificity": 0.52},
                            {"floor_ml": 1.0, "accuracy": 0.78, "sensitivity": 0.75, "specificity": 0.8},
                            {"floor_ml": 1.5, "accuracy": 0.76, "sensitivity": 0.63, "specificity": 0.85}]}


def test_mvo_below_the_goals_is_not_validated_and_its_presence_is_not_stated():
    from dicomnode.analysis.lge import mvo_validation, mvo_validation_text
    metrics = {"source": "engines/lge/EVALUATION.json: 5-fold CV", "emidec_mvo": MVO_FIGURES}
    block = mvo_validation(metrics, "windowed_8bit")
    assert block["validated"] is False and block["presence_stated"] is False and block["same_kind"] is True
    assert block["patients"] == 100 and block["dice_per_slice"] == 0.38 and block["presence_accuracy"] == 0.69
    assert block["presence_accuracy_range"] == [0.69, 0.78] and block["floors_ml"] == [0.0, 1.5]
    assert block["without_mvo"] == 60 and block["without_mvo_with_mvo"] == 29 and "MyoPS" in block["unlabelled"]
    assert block["note"] == mvo_validation_text(block) == (
        "not validated: 'MVO present' from this volume agreed with the expert in 69 % of EMIDEC cases (69-78 % with "
        "any volume floor 0-1.5 mL); 29 of 60 hearts without MVO were given MVO; per-slice Dice 0.38; MyoPS 2020 "
        "(the second centre) labels no MVO apart from scar")
    assert mvo_validation_text(block, short=True) == "not validated: presence right in 69-78 % of cases"
    # a scanner's own data: the only MVO figures are of 8-bit EMIDEC exports, which the text says
    native = mvo_validation(metrics, "native")
    assert native["validated"] is False and native["same_kind"] is False
    assert "those are 8-bit windowed LGE exports, not input like this one" in native["note"]


def test_mvo_is_validated_only_on_input_like_the_figures_where_they_reach_both_goals():
    from dicomnode.analysis.lge import (MVO_MIN_DICE_PER_SLICE, MVO_MIN_PRESENCE_ACCURACY, mvo_validation,
                                        mvo_validation_text)
    good = {**MVO_FIGURES, "dice_per_slice": MVO_MIN_DICE_PER_SLICE,
            "presence": [{"floor_ml": 0.0, "accuracy": MVO_MIN_PRESENCE_ACCURACY}]}
    block = mvo_validation({"emidec_mvo": good}, "windowed_8bit")
    assert block["validated"] is True and block["presence_stated"] is True and mvo_validation_text(block) == ""
    assert mvo_validation({"emidec_mvo": good}, "native")["validated"] is False
    for worse in ({"dice_per_slice": MVO_MIN_DICE_PER_SLICE - 0.01},
                  {"presence": [{"floor_ml": 0.0, "accuracy": MVO_MIN_PRESENCE_ACCURACY - 0.01},
                                {"floor_ml": 1.0, "accuracy": 0.99}]}):  # a floor that would help is not read
        assert mvo_validation({"emidec_mvo": {**good, **worse}}, "windowed_8bit")["validated"] is False
    # no MVO figures on the card: never validated, and said
    bare = mvo_validation({}, "windowed_8bit")
    assert bare["validated"] is False and bare["patients"] is None
    assert bare["note"] == "not validated: no cross-validated MVO figures on record"


def test_the_shipped_card_carries_the_mvo_agreement_the_summary_quotes():
    import json
    from pathlib import Path
    from dicomnode.analysis.lge import MVO_VALIDATION, mvo_validation
    card = json.loads((Path(__file__).resolve().parents[2] / "engines/models/lge_unet.json").read_text())
    figures = card["metrics"][MVO_VALIDATION[0]]
    assert figures["n"] > 0 and figures["presence"][0]["floor_ml"] == 0.0
    block = mvo_validation(card["metrics"], MVO_VALIDATION[2])
    assert block["presence_accuracy"] == round(figures["presence"][0]["accuracy"], 2)
    assert block["dice_per_slice"] == round(figures["dice_per_slice"], 2)
