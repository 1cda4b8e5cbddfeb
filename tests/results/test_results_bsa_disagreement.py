"""break48b #4: where the study's images disagree on PatientSize / PatientWeight, OHIF (which shows a group's NUMs
only) showed the BSA and every BSA-indexed value bare, the disagreement only a TEXT comment. Each cine group holding
a BSA-indexed value or the BSA now begins with the NUM BSADISAGR valued with the BSA the other images' values give
(summary `cine.bsa_other_m2`); groups without one, and a study whose images agree, get nothing."""
from __future__ import annotations

import pytest

from dicomnode.analysis.cine_metrics import body_surface_area_m2, other_bsa_m2
from dicomnode.results import codes
from dicomnode.results.sr import BSA_DEPENDENT, build_sr
from synthetic import make_study, write
from test_results_sr import groups, nums, segs_of
from test_results_sr_display import identifier_of
from validators import assert_valid

DISAGREE = (codes.BSA_DISAGREEMENT.value, "99DICOMNODE")


def _sr(other_bsa):
    study, results, context = make_study(slices=4, cine_phases=4)
    if other_bsa is not None:
        results[1].summary["bsa_other_m2"] = other_bsa
    return build_sr(study.series[0].instances[0].dataset, results, segs_of(results, context), context, 9100)


def test_every_group_with_an_indexed_value_or_the_bsa_says_the_bsa_is_uncertain_first(tmp_path):
    sr = _sr(1.657)
    dependent = [g for g in groups(sr) if {c for c, *_ in nums(g)} & BSA_DEPENDENT]
    assert len(dependent) >= 5  # LV / RV blood pool ED and ES, LV myocardium, LV and RV function
    for group in dependent:
        first = nums(group)[0]
        assert first[0] == DISAGREE and first[1] == pytest.approx(1.657) and first[2] == "m2", identifier_of(group)
    others = [g for g in groups(sr) if nums(g) and g not in dependent]
    assert others and not any(c == DISAGREE for g in others for c, *_ in nums(g))  # LGE, AHA segments
    assert_valid(write(sr, tmp_path / "sr.dcm"), "DicomSRValidator")


def test_agreeing_images_add_no_caveat():
    assert not any(c == DISAGREE for g in groups(_sr(None)) for c, *_ in nums(g))


def test_the_other_bsa_is_the_pair_farthest_from_the_one_used():
    used = body_surface_area_m2(1.78, 82.0)
    # break48b S1: cine 1.78 m / 82 kg, LGE 1.62 m / 61 kg
    assert other_bsa_m2([(1.78, 82.0), (1.62, 61.0)], used) == pytest.approx(body_surface_area_m2(1.62, 61.0))
    assert other_bsa_m2([(1.78, 82.0), (1.62, 61.0), (1.75, 80.0)], used) == pytest.approx(1.6567, abs=1e-3)
    # an implausible pair (a height in cm), one without a weight, or only the pair used: none
    assert other_bsa_m2([(1.78, 82.0), (178.0, 82.0), (1.62, None)], used) is None
    assert other_bsa_m2([(1.62, 61.0)], None) is None
    assert other_bsa_m2([], used) is None
