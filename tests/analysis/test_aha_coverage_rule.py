"""One AHA coverage rule for LGE and cine (break46c findings 3 and 7): no segments on a stack clearly shorter than the
LV, a caveat on a stack missing part of the LV, and thirds counted on the slice grid so that a slice missing inside
the LV does not move the others into another third (aha.aha_summary_for_stack, aha._thirds)."""
from __future__ import annotations

import numpy as np
import pytest

from dicomnode.analysis import cine as cine_module
from dicomnode.analysis.aha import (GAP_CAVEAT, PARTIAL_STACK_CAVEAT, WHOLE_STACK_NEEDED, aha_segments,
                                    aha_summary_for_stack)
from dicomnode.analysis.cine_metrics import stack_coverage
from dicomnode.analysis.lge import lge_coverage
from tests.analysis.test_aha import POSITIONS, by_number, stack
from tests.analysis.test_aha_patient_geometry import normal_heart


@pytest.mark.parametrize("coverage_of", ["cine", "lge"])
def test_a_two_slice_stack_gets_no_segments_in_either_pipeline(coverage_of):
    """The two middle slices of a heart (16 mm of LV): the cine's coverage block and the LGE's say it is shorter
    than a whole LV, and the one rule withholds the segments with the same words."""
    labels, volume = normal_heart()
    middle = slice(4, 6)
    labels, volume.positions = labels[middle].copy(), volume.positions[middle]
    positions = volume.positions @ np.cross(volume.orientation[:3], volume.orientation[3:])
    coverage = (stack_coverage(labels, positions, True).summary() if coverage_of == "cine"
                else lge_coverage(labels, positions, True))
    assert coverage["lv_shorter_than_whole"] is True
    block = aha_summary_for_stack(labels, volume, coverage, scar=coverage_of == "lge",
                                  wall_thickness=coverage_of == "cine")
    assert block["applicable"] is False
    assert block["reason"] == (f"the LV found spans only 16 mm of stack, under the 40 mm of the shortest whole LV: the "
                               f"stack covers clearly less than the LV; {WHOLE_STACK_NEEDED}")


def test_a_partial_stack_keeps_its_segments_with_the_caveat_and_a_whole_one_without():
    labels, volume = normal_heart()
    assert "caveat" not in aha_summary_for_stack(labels, volume, {"complete": True, "lv_shorter_than_whole": False})
    partial = aha_summary_for_stack(labels, volume, {"complete": False, "lv_shorter_than_whole": False})
    assert partial["applicable"] and partial["caveat"] == PARTIAL_STACK_CAVEAT
    withheld = aha_summary_for_stack(labels, volume, None, "not determined: the heart was not found")
    assert withheld["reason"] == f"not determined: the heart was not found; {WHOLE_STACK_NEEDED}"


def test_the_cine_pipeline_uses_the_shared_rule_with_its_coverage(monkeypatch):
    """cine.py builds its aha_segments block with aha_summary_for_stack from its own coverage block, as lge.py does
    (the synthetic 3-slice cine of test_cine_pipeline: a stack shorter than a whole LV)."""
    from dicomnode.analysis.cine import CinePipeline
    from dicomnode.config import Config
    from tests.analysis.test_cine_pipeline import FakeRuntime, FakeStudy, FakeVolume, context, disc

    seen = []

    def shared(labels, volume, coverage, withheld=None, **kwargs):
        seen.append(coverage)
        return {"applicable": False, "reason": "sentinel"}

    monkeypatch.setattr(cine_module, "aha_summary_for_stack", shared)
    shape, spacing = (160, 160), (1.5, 1.5)
    pixels = np.full((12, 3, *shape), 100.0, np.float32)
    for phase in range(12):
        pixels[phase, :, disc(shape, (79.5, 79.5), 34.0 - 1.2 * min(phase, 12 - phase), spacing)] = 400.0
    volume = FakeVolume(pixels, spacing, 8.0, trigger_times=[40.0 * p for p in range(12)])
    runtime = FakeRuntime()
    result = CinePipeline(Config(), runtime).run(FakeStudy(volume), context(runtime))
    assert result.summary["aha_segments"] == {"applicable": False, "reason": "sentinel"}
    assert len(seen) == 1 and seen[0] == result.summary["coverage"] and "lv_shorter_than_whole" in seen[0]


def test_a_missing_slice_keeps_the_other_slices_in_their_thirds_and_is_flagged():
    """Nine ring slices base to apex (8 mm apart) and a cap; slice 1 (basal) missing. Dividing the eight slices left
    made slice 3 basal (a mid-ventricular slice named basal, break46c finding 7); on the slice grid it stays mid."""
    labels = stack(from_apex=False)
    whole = aha_segments(labels, (1.0, 1.0), POSITIONS, "first")
    keep = [k for k in range(labels.shape[0]) if k != 1]
    gapped = aha_segments(labels[keep], (1.0, 1.0), POSITIONS[keep], "first")
    assert whole.thirds["basal"] == [0, 1, 2] and whole.caveat is None
    # indices in the gapped stack: slice 3 of the whole stack is index 2
    assert gapped.thirds == {"basal": [0, 1], "mid": [2, 3, 4], "apical": [5, 6, 7], "apex": [8]}
    assert gapped.caveat == GAP_CAVEAT
    assert by_number(gapped)[7].slices == (2, 3, 4)
