"""A heart the node judges free of significant LGE says so beside its AHA segment numbers (break49b finding 5): EMIDEC
N006 (0.64 % LGE, expert normal) had 1 mL of scar voxels in AHA 2 and 4 with a maximal transmurality of 100 % in the
SR while the suggestions said "no scar". The SR's segment groups holding scar voxels begin with LGENOTSIG (valued
with the %LGE limit), the SR comments and the PDF bullseye say "no significant LGE (< 1.5 %)"; where %LGE lies in the
uncertain band they say presence is uncertain."""
from __future__ import annotations

import pytest

from dicomnode.analysis.lge_metrics import lge_presence
from dicomnode.results import codes
from dicomnode.results.report import _bullseye_values
from dicomnode.results.sr import build_sr
from synthetic import make_study
from test_results_sr import nums, report_comments, segs_of
from test_results_ohif_caveats import _aha_groups
from test_results_sr_display import identifier_of

NOT_SIGNIFICANT = (codes.LGE_NOT_SIGNIFICANT.value, "99DICOMNODE")
NO_SCAR = (codes.AHA_NO_SCAR.value, "99DICOMNODE")


@pytest.fixture(scope="module")
def study():
    return make_study(slices=4, cine_phases=4)


def _sr(study, percent: float):
    header_study, results, context = study
    results[0].summary["lge_presence"] = lge_presence(percent)
    try:
        sr = build_sr(header_study.series[0].instances[0].dataset, results, segs_of(results, context), context, 9100)
        title = _bullseye_values(results)[2]
    finally:
        results[0].summary.pop("lge_presence")
    return sr, title


def test_segments_of_a_heart_without_significant_lge_say_so_beside_their_numbers(study):
    sr, title = _sr(study, 0.64)
    scarred, free = 0, 0
    for group in _aha_groups(sr, "LGE"):
        first = nums(group)[0]
        extent = next(value for key, value, _, _ in nums(group) if key == (codes.AHA_SCAR_EXTENT.value, "99DICOMNODE"))
        if extent > 0:  # a segment with scar voxels: "No significant LGE in this study: %LGE under 1.5 %" first
            scarred += 1
            assert first[0] == NOT_SIGNIFICANT and first[1] == 1.5 and first[2] == "%", identifier_of(group)
        else:
            free += 1
            assert first[0] == NO_SCAR and NOT_SIGNIFICANT not in [n[0] for n in nums(group)]
    assert scarred >= 2 and free >= 10
    assert len(codes.LGE_NOT_SIGNIFICANT.meaning) <= 64 and codes.LGE_NOT_SIGNIFICANT in codes.PRIVATE_CODES
    assert "LGE presence: no significant LGE (%LGE 0.64 % < 1.5 %)" in report_comments(sr)
    assert title == "Scar extent per AHA segment: no significant LGE (< 1.5 %)"


def test_an_uncertain_presence_is_said_and_a_present_one_adds_nothing(study):
    sr, title = _sr(study, 2.02)
    assert not any(NOT_SIGNIFICANT in [n[0] for n in nums(g)] for g in _aha_groups(sr, "LGE"))
    assert any(c.startswith("LGE presence: LGE presence uncertain: %LGE 2.02 % lies in 1.5-4 %")
               for c in report_comments(sr))
    assert title == "Scar extent per AHA segment: LGE presence uncertain (%LGE in 1.5-4 %)"
    sr, title = _sr(study, 14.74)
    assert not any(c.startswith("LGE presence") for c in report_comments(sr))
    assert title == "Scar extent per AHA segment"
