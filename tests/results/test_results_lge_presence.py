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


#: AHA segments assigned, none with 10 % scar or more: the decision lge_presence makes on them
SPECKS_AHA = {"applicable": True, "segments": [{"segment": n, "scar_extent_percent": 2.0} for n in range(1, 18)]}


def _sr(study, percent: float, **how):
    header_study, results, context = study
    results[0].summary["lge_presence"] = lge_presence(percent, **{"aha": SPECKS_AHA, **how})
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
    assert ("LGE presence: no significant LGE by the automatic count: %LGE 0.64 % is under 1.5 %, the level normal "
            "hearts read in cross-validation, and no AHA segment holds 10 % scar or more; a small focal scar can still "
            "be missed") in report_comments(sr)
    assert title == "Scar extent per AHA segment: no significant LGE by the automatic count (< 1.5 %)"


def test_an_uncertain_presence_is_said_and_a_present_one_adds_nothing(study):
    sr, title = _sr(study, 2.02)
    assert not any(NOT_SIGNIFICANT in [n[0] for n in nums(g)] for g in _aha_groups(sr, "LGE"))
    assert any(c.startswith("LGE presence: LGE presence uncertain: %LGE 2.02 % lies in 1.5 % to under 4 %")
               for c in report_comments(sr))
    assert title == "Scar extent per AHA segment: LGE presence uncertain"
    sr, title = _sr(study, 14.74)
    assert not any(c.startswith("LGE presence") for c in report_comments(sr))
    assert title == "Scar extent per AHA segment"


@pytest.mark.parametrize("how, comment, short", [
    # review49 #4: a small field (scar under-read) or a dark-blood LGE: no 'no significant' statement, its own reason
    ({"not_stated_reason": "small field of view (140 x 157 mm, smaller than the 229 mm of any stack the model was "
                           "trained on)"},
     "LGE presence: LGE presence not stated (%LGE 1.00 %): small field of view (140 x 157 mm", "LGE presence not stated"),
    ({"not_stated_reason": "dark-blood LGE"}, "LGE presence: LGE presence not stated (%LGE 1.00 %): dark-blood LGE",
     "LGE presence not stated"),
    # a stack covering less than the LV: the slices present only
    ({"absence_stated": False}, "LGE presence: %LGE 1.00 % on the slices present is under 1.5 %; the LV outside them",
     "%LGE < 1.5 % on the slices present"),
    # review49 #2: a segment holding 10 % scar or more: a focal scar, presence uncertain
    ({"aha": {"applicable": True, "segments": [{"segment": 10, "scar_extent_percent": 24.0}]}},
     "LGE presence: LGE presence uncertain: %LGE 1.00 % is under 1.5 %, but AHA segment 10 holds 24 % scar",
     "LGE presence uncertain"),
])
def test_no_absence_is_stated_where_the_node_cannot_say_it(study, how, comment, short):
    sr, title = _sr(study, 1.0, **how)
    assert not any(NOT_SIGNIFICANT in [n[0] for n in nums(g)] for g in _aha_groups(sr, "LGE"))
    assert any(c.startswith(comment) for c in report_comments(sr)), report_comments(sr)
    assert not any("no significant LGE" in c for c in report_comments(sr))
    assert title == f"Scar extent per AHA segment: {short}"
