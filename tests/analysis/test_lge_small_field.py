"""LGE on a field of view smaller than the model's training stacks (break 44b finding 3): the warning names the
myocardial volume and LV mass as well as the scar, its numbers do not contradict themselves by rounding, and the
large-burden flag is withheld with the reason rather than coded a definite No."""
import numpy as np

from dicomnode.analysis import lge as lge_module
from dicomnode.analysis.lge import (MIN_TRAINED_FIELD_MM, SMALL_FIELD_START, small_field_notes,
                                    small_field_reason)
from tests.analysis import test_lge_withheld_and_coverage as coverage_tests

# the LGE pipeline with its segmentation replaced by rings (test_lge_withheld_and_coverage)
study, pipeline, run_with = coverage_tests.study, coverage_tests.pipeline, coverage_tests.run_with


def test_the_small_field_warning_names_myocardium_and_mass_and_does_not_round_into_its_limit():
    stack = np.random.default_rng(3).gamma(2.0, 100.0, size=(2, 313, 313)).astype(np.float32)
    spacing = (0.7305, 0.7305)  # 228.6 mm: under the 229 mm limit, '229 x 229 mm' in whole mm
    reason = small_field_reason(stack, spacing)
    assert reason is not None and reason.startswith(SMALL_FIELD_START)
    assert f"smaller than the {MIN_TRAINED_FIELD_MM:.0f} mm" in reason
    assert "229 x 229 mm" not in reason and "228.6 x 228.6 mm" in reason
    assert "myocardial volume and LV mass" in reason and "%LGE" in reason
    assert small_field_notes(stack, spacing) == [reason]
    # whole mm where they cannot be read as the limit; none on a field as large as the training stacks
    assert "146 x 146 mm" in small_field_reason(stack[:, :200, :200], spacing)
    assert small_field_reason(stack, (0.74, 0.74)) is None and small_field_notes(stack, (0.74, 0.74)) == []


def test_a_small_field_withholds_the_large_burden_flag_with_its_reason(pipeline, study, monkeypatch):
    """Case3004 cut to 140 x 157 mm read %LGE 4.4 (11.6 on the whole field) and coded 'large scar burden: No'."""
    whole = run_with(pipeline, study, monkeypatch, [4, 12, 18, 24, 22], scar_slices=(1, 2, 3)).summary
    assert isinstance(whole["large_scar_burden"], bool) and whole["large_scar_burden_reason"] is None
    assert not any(w.startswith(SMALL_FIELD_START) for w in whole["stack_warnings"])
    # the same stack judged against a limit larger than its field: the small-field rule fires
    monkeypatch.setattr(lge_module, "MIN_TRAINED_FIELD_MM", 10_000.0)
    small = run_with(pipeline, study, monkeypatch, [4, 12, 18, 24, 22], scar_slices=(1, 2, 3)).summary
    assert small["large_scar_burden"] is None
    assert small["large_scar_burden_reason"].startswith(f"withheld: {SMALL_FIELD_START} (")
    assert small["large_scar_burden_reason"].endswith("of any stack the model was trained on)")
    warnings = [w for w in small["stack_warnings"] if w.startswith(SMALL_FIELD_START)]
    assert len(warnings) == 1 and "myocardial volume and LV mass" in warnings[0]
    # the numbers stay, with the warning: only the yes/no verdict is withheld
    assert small["lge_percent"] == whole["lge_percent"] and small["lv_mass_g"] == whole["lv_mass_g"]
