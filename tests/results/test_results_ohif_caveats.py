"""The caveats a reader of OHIF v3 must see beside the numbers they qualify (break43d F2): OHIF shows only a group's
NUMs (concept meaning, value, unit code; the first five) and its first finding site, never a TEXT comment, so each
caveat that was only a report-level comment is now also the concept of a NUM first in the groups it qualifies, its
value the quantity behind it: a mirrored heart's AHA segment names (RV offset), a child's adult reference ranges
(age or body size), the MVO not validated (agreement with the expert), a large-burden verdict not given (cut-off).
Whole-number NUMs (phase numbers, phases sent) are written as integers."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from dicomnode.analysis.aha import MIRRORED_CAVEAT, aha_summary, geometry_warnings
from dicomnode.analysis.cine_metrics import rv_accuracy_note
from dicomnode.analysis.lge import (DARK_BLOOD_NOTE, child_burden_reason, child_lge_note, contrast_notes, input_checks,
                                    small_field_notes)
from dicomnode.analysis.reference_age import adult_ranges_note, reference_ranges_summary
from dicomnode.cmr.age import age_from_age_string
from dicomnode.labels import Label
from dicomnode.results import codes
from dicomnode.results.sr import _measurement, build_sr
from synthetic import ORIENTATION, SPACING, make_study, write
from test_results_sr import concept, group_named, groups, nums, report_comments, segs_of
from test_results_sr_display import identifier_of
from validators import assert_valid

MIRROR = (codes.AHA_MIRRORED.value, "99DICOMNODE")
CHILD_AGE = (codes.CHILD_AGE.value, "99DICOMNODE")
CHILD_BSA = (codes.CHILD_BSA.value, "99DICOMNODE")
MVO_AGREE = (codes.MVO_NOT_VALIDATED_AGREEMENT.value, "99DICOMNODE")
MVO_VOLUME = (codes.MVO_NOT_VALIDATED_VOLUME.value, "99DICOMNODE")
UNDETERMINED = (codes.LARGE_LGE_BURDEN_CUTOFF_UNDETERMINED.value, "99DICOMNODE")
WHOLE = {(codes.PHASE_NUMBER.value, "99DICOMNODE"), (codes.PARTIAL_CYCLE.value, "99DICOMNODE"), MIRROR}
VERDICTS = {(codes.LARGE_LGE_BURDEN_CUTOFF_MET.value, "99DICOMNODE"),
            (codes.LARGE_LGE_BURDEN_CUTOFF_NOT_MET.value, "99DICOMNODE")}


def _sr(results, context, study):
    return build_sr(study.series[0].instances[0].dataset, results, segs_of(results, context), context, 9100)


def _aha_groups(sr, what: str) -> list:
    return [g for g in groups(sr) if identifier_of(g).startswith("AHA ") and f"({what})" in identifier_of(g)
            and nums(g)]


def _mirrored(results):
    """The LGE and cine results of a mirrored heart (the label maps flipped left-right, RV to the patient's left),
    their AHA blocks and stack warnings as the pipelines make them with the patient geometry (aha.py)."""
    for result, scar in ((results[0], True), (results[1], False)):
        segmentation = result.segmentations[0]
        flipped = np.ascontiguousarray(np.asarray(segmentation.labelmap)[..., ::-1])
        result.segmentations = [replace(segmentation, labelmap=flipped)]
        block = aha_summary(flipped[0], SPACING, segmentation.volume.positions[:, 2], "first", scar=scar,
                            wall_thickness=not scar, orientation=ORIENTATION)
        result.summary["aha_segments"] = block
        result.summary["stack_warnings"] = geometry_warnings(block)
    return results


@pytest.fixture(scope="module")
def mirrored():
    study, results, context = make_study(slices=4, cine_phases=4)
    return study, _mirrored(results), context


def test_a_mirrored_heart_says_so_first_beside_every_aha_segment_name(mirrored):
    """break43d F2: the mirrored heart's AHA segments were shown with confident names in OHIF, the caveat "RV to the
    left of the LV: dextrocardia / situs inversus? ... confirm" only a report-level comment. Each segment group now
    begins with a NUM saying so, valued with the segment's number (an integer: a DS without decimals)."""
    study, results, context = mirrored
    assert MIRRORED_CAVEAT in results[0].summary["aha_segments"]["caveat"]
    sr = _sr(results, context, study)
    for what in ("LGE", "ED wall thickness"):
        segment_groups = _aha_groups(sr, what)
        assert len(segment_groups) >= 16, what
        for group in segment_groups:
            first = nums(group)[0]
            # valued with the segment's number: OHIF shows it even where the finding site falls past its fifth line
            number = int(identifier_of(group).split()[1])
            assert first[0] == MIRROR and first[1] == number and first[2] == "1", identifier_of(group)
            site = next(i for i in group.ContentSequence if concept(i) == ("363698007", "SCT"))
            assert site.ConceptCodeSequence[0].CodeValue == codes.AHA_SEGMENTS[number].value
            assert len([c for c, *_ in nums(group) if c == MIRROR]) == 1
    # the numbers that do not name an AHA segment carry no such caveat; the comment stays for the other viewers
    assert MIRROR not in {c for c, *_ in nums(group_named(sr, "LGE LV myocardium, whole"))}
    assert any("situs inversus" in text for text in report_comments(sr))
    assert len(codes.AHA_MIRRORED.meaning) <= 64 and codes.AHA_MIRRORED in codes.PRIVATE_CODES


def test_a_normally_placed_heart_has_no_geometry_caveat():
    study, results, context = make_study(slices=4, cine_phases=4)
    sr = _sr(results, context, study)
    caveat_codes = {(c.value, "99DICOMNODE") for c in (codes.AHA_MIRRORED, codes.AHA_MIDLINE, codes.AHA_UNUSUAL_TURN)}
    assert not caveat_codes & {c for g in groups(sr) for c, *_ in nums(g)}


def _cine_with_ranges(ranges: dict, **header):
    study, results, context = make_study(slices=4, cine_phases=4)
    results[1].summary["reference_ranges"] = ranges
    dataset = study.series[0].instances[0].dataset
    for keyword, value in header.items():
        setattr(dataset, keyword, value)
    return _sr(results, context, study)


def _cine_groups_with_numbers(sr) -> list:
    lge = ("LGE", "AHA")
    return [g for g in groups(sr) if nums(g) and not identifier_of(g).startswith(lge)
            or (identifier_of(g).startswith("AHA") and "(ED wall thickness)" in identifier_of(g) and nums(g))]


def test_a_child_s_cine_numbers_say_the_adult_ranges_are_not_applied():
    """break43d F2: an 8-year-old's adult-looking volumes stood alone in OHIF; "adult reference ranges not applied
    ... judge against paediatric references" was only a comment."""
    sr = _cine_with_ranges(reference_ranges_summary(age_from_age_string("008Y")))
    cine = _cine_groups_with_numbers(sr)
    assert len(cine) >= 6 + 16
    for group in cine:
        first = nums(group)[0]
        assert first[0] == CHILD_AGE and first[1] == pytest.approx(8.0) and first[2] == "a", identifier_of(group)
    lge = [g for g in groups(sr) if identifier_of(g).startswith("LGE") and nums(g)]
    assert lge and not any(CHILD_AGE == c for g in lge for c, *_ in nums(g))  # the LGE has no adult range


def test_a_child_of_unknown_age_is_told_by_body_size_and_an_adult_gets_nothing():
    child = _cine_with_ranges(reference_ranges_summary(None, "height 1.15 m, weight 20 kg"), PatientSize=1.15,
                              PatientWeight=20)
    for group in _cine_groups_with_numbers(child):
        first = nums(group)[0]
        assert first[0] == CHILD_BSA and first[2] == "m2", identifier_of(group)
        assert first[1] == pytest.approx(np.sqrt(115 * 20 / 3600), abs=0.001)
    adult = _cine_with_ranges(reference_ranges_summary(age_from_age_string("045Y")))
    found = {c for g in groups(adult) for c, *_ in nums(g)}
    assert not {CHILD_AGE, CHILD_BSA} & found


def test_the_mvo_group_says_it_is_not_validated_beside_its_volume():
    """The MVO group's "(not validated)" is in its tracking identifier, which OHIF does not show: it showed
    "Volume: 0.88 cm3" on the MVO outline. Its first NUM now says it, valued with the card's agreement figure."""
    study, results, context = make_study(slices=4, cine_phases=4)
    assert results[0].summary["mvo_validation"]["validated"] is False
    sr = _sr(results, context, study)
    mvo = group_named(sr, "LGE microvascular obstruction (not validated)")
    first = nums(mvo)[0]
    assert first[0] == MVO_AGREE and first[1] == pytest.approx(69.0) and first[2] == "%"
    others = [g for g in groups(sr) if "microvascular" not in identifier_of(g)]
    assert not any(c == MVO_AGREE for g in others for c, *_ in nums(g))
    # without cross-validated figures: the MVO volume itself under the not-validated concept
    results[0].summary["mvo_validation"] = {"validated": False, "presence_stated": False}
    sr = _sr(results, context, study)
    first = nums(group_named(sr, "LGE microvascular obstruction (not validated)"))[0]
    assert first[0] == MVO_VOLUME and first[1] == pytest.approx(results[0].summary["mvo_volume_ml"])


def test_a_validated_mvo_carries_no_caveat():
    study, results, context = make_study(slices=4, cine_phases=4)
    results[0].summary["mvo_validation"] = dict(results[0].summary["mvo_validation"], validated=True,
                                                presence_stated=True)
    sr = _sr(results, context, study)
    assert not {MVO_AGREE, MVO_VOLUME} & {c for g in groups(sr) for c, *_ in nums(g)}


def test_an_undetermined_large_burden_says_so_where_the_verdict_would_be():
    """%LGE within the model's error of the cut-off: the coded answer is Undetermined and no verdict NUM is written;
    OHIF showed %LGE with nothing about the rule. The cut-off NUM's concept now says the verdict is not given."""
    study, results, context = make_study(slices=4, cine_phases=4)
    summary = results[0].summary
    summary.pop("large_scar_burden")
    summary["large_scar_burden_reason"] = "indeterminate: %LGE 14.7 % lies within the model's error of 15 %"
    sr = _sr(results, context, study)
    scar = group_named(sr, "LGE scar incl. MVO")
    found = {c: v for c, v, *_ in nums(scar)}
    assert found[UNDETERMINED] == pytest.approx(15.0) and not VERDICTS & set(found)
    burden = next(i for i in scar.ContentSequence if concept(i) == (codes.LARGE_LGE_BURDEN.value, "99DICOMNODE"))
    assert burden.ConceptCodeSequence[0].CodeValue == codes.UNDETERMINED.value
    assert len(nums(scar)) <= 5  # OHIF shows five


def test_a_child_s_withheld_large_burden_says_so_where_the_verdict_would_be():
    """break51c #6: a child's flag is withheld (the cut-off is an adult risk marker); that was a report comment only,
    so OHIF showed %LGE with no burden line. The scar group now carries the cut-off under a concept saying the flag is
    withheld for a child, where the verdict NUM would be; no Yes / No is coded."""
    study, results, context = make_study(slices=4, cine_phases=4)
    summary = results[0].summary
    adult = [c for c, *_ in nums(group_named(_sr(results, context, study), "LGE scar incl. MVO"))]
    verdict_at = next(i for i, c in enumerate(adult) if c in VERDICTS)
    summary["large_scar_burden"] = None
    summary["large_scar_burden_reason"] = child_burden_reason(adult_ranges_note(age_from_age_string("012Y")))
    sr = _sr(results, context, study)
    scar = group_named(sr, "LGE scar incl. MVO")
    found = [(c, v, u) for c, v, u, _ in nums(scar)]
    withheld = ((codes.LARGE_LGE_BURDEN_WITHHELD_CHILD.value, "99DICOMNODE"), pytest.approx(15.0), "%")
    assert withheld in found and not VERDICTS & {c for c, *_ in found}
    assert found.index(withheld) == verdict_at  # where an adult's verdict stands
    assert not any(concept(i) == (codes.LARGE_LGE_BURDEN.value, "99DICOMNODE") for i in scar.ContentSequence)
    assert len(nums(scar)) <= 5  # OHIF shows five
    # an adult's flag withheld for another reason (a short stack) gets no such line
    summary["large_scar_burden_reason"] = "withheld: the stack covers clearly less than the LV"
    scar = group_named(_sr(results, context, study), "LGE scar incl. MVO")
    assert withheld[0] not in {c for c, *_ in nums(scar)}


def test_whole_numbers_are_written_as_integers():
    """break43d F7: OHIF printed "1.00 1" for the phase number, stored as "1.0"; a whole-number concept is now an
    integer DS (OHIF 3.13.2 formats every NUM with two decimals itself; other viewers print the DS as it is)."""
    study, results, context = make_study(slices=4, cine_phases=4)
    _mirrored(results)
    results[1].summary["stack_warnings"] += ["4 of 30 cardiac phases present"]
    sr = _sr(results, context, study)
    seen = set()
    for group in groups(sr):
        for code, value, _, item in nums(group):
            if code in WHOLE:
                text = str(item.MeasuredValueSequence[0]["NumericValue"].repval).strip("'")
                assert text == str(int(value)) and "." not in text, text
                seen.add(code)
    assert seen == WHOLE
    with pytest.raises(ValueError, match="whole number"):
        _measurement(codes.PHASE_NUMBER, 2.5, codes.UNIT_NONE)
    assert str(_measurement(codes.LV_EDV, 120.0, codes.UNIT_ML)[0][0].MeasuredValueSequence[0].NumericValue) == "120.0"


@pytest.mark.peers
def test_a_report_with_every_caveat_passes_dciodvfy_and_pixelmed(tmp_path):
    study, results, context = make_study(slices=4, cine_phases=4)
    _mirrored(results)
    results[1].summary["reference_ranges"] = reference_ranges_summary(age_from_age_string("008Y"))
    results[1].summary["stack_warnings"] += ["4 of 30 cardiac phases present"]
    results[0].summary.pop("large_scar_burden")
    results[0].summary["large_scar_burden_reason"] = "indeterminate: within the model's error of the cut-off"
    sr = _sr(results, context, study)
    found = {c for g in groups(sr) for c, *_ in nums(g)}
    assert {MIRROR, CHILD_AGE, MVO_AGREE, UNDETERMINED} <= found
    assert_valid(write(sr, tmp_path / "sr.dcm"), "DicomSRValidator")


RV_ERROR = (codes.RV_LESS_RELIABLE.value, "99DICOMNODE")


def test_the_rv_numbers_say_they_are_less_reliable_beside_them():
    """The cine flag "RV volumes and RVEF are less reliable than the LV's: ... review the RV contours" was a
    report-level comment; OHIF showed RVEDV / RVEF without it. Each RV group now begins with it, valued with the
    model's validated RVEF error; the LV groups do not."""
    study, results, context = make_study(slices=4, cine_phases=4)
    cine = results[1].summary
    cine["flags"] = [rv_accuracy_note({"cv": {"n": 100, "mae": 9.32, "mean_error": -5.0, "sd_error": 11.2}})]
    cine["flag_validation"] = {"rv_ef_percent": {"mae": 9.32, "unit": "%"}}
    sr = _sr(results, context, study)
    for name in ("RV blood pool ED", "RV blood pool ES", "RV function (ED and ES)"):
        first = nums(group_named(sr, name))[0]
        assert first[0] == RV_ERROR and first[1] == pytest.approx(9.32) and first[2] == "%", name
    for name in ("LV blood pool ED", "LV blood pool ES", "LV function (ED and ES)", "LV myocardium ED"):
        assert RV_ERROR not in {c for c, *_ in nums(group_named(sr, name))}, name
    cine["flags"] = []  # no flag, no caveat
    assert RV_ERROR not in {c for g in groups(_sr(results, context, study)) for c, *_ in nums(g)}


def _lge_with_warnings(warnings, checks, **header):
    study, results, context = make_study(slices=4, cine_phases=4)
    results[0].summary["stack_warnings"] = list(warnings)
    results[0].summary["input_checks"] = checks
    dataset = study.series[0].instances[0].dataset
    for keyword, value in header.items():
        setattr(dataset, keyword, value)
    sr = _sr(results, context, study)
    with_numbers = [g for g in groups(sr) if nums(g)]
    return [g for g in with_numbers if identifier_of(g).startswith("LGE") or "(LGE)" in identifier_of(g)], with_numbers


def test_an_lge_input_the_model_may_misread_says_so_beside_every_lge_number():
    """The LGE stack warnings that question the input itself were comments only: a series that may be a T1 map
    ("CHECK THE SERIES FIRST"), a dark-blood LGE, a field smaller than the model knows, a child's heart. Each LGE
    group with numbers now begins with a NUM saying so, valued with the number the check judged."""
    image = np.zeros((2, 40, 40))
    labels = np.zeros((2, 40, 40), dtype=np.int16)
    labels[:, 5:15, 5:15], labels[:, 20:30, 20:30] = int(Label.LV_MYOCARDIUM), int(Label.LV_BLOOD_POOL)
    image[labels == int(Label.LV_MYOCARDIUM)], image[labels == int(Label.LV_BLOOD_POOL)] = 450.0, 300.0  # T1 map, ms
    image[:, 1:39, 2:38] += np.indices((38, 36)).sum(axis=0) % 2  # a matrix zero-padded to 40 x 40
    (note,) = contrast_notes(image, labels)
    checks = input_checks(image, labels, (2.0, 3.0))
    assert checks["blood_myocardium_ratio"] == pytest.approx(float(np.median(image[labels == Label.LV_BLOOD_POOL]))
                                                             / float(np.median(image[labels == Label.LV_MYOCARDIUM])),
                                                             abs=0.001) and checks["blood_myocardium_ratio"] < 0.7
    assert checks["field_of_view_mm"] == pytest.approx(76.0)  # 38 rows x 2 mm (36 columns x 3 mm = 108 mm)
    (small,) = small_field_notes(image, (2.0, 3.0))
    child = child_lge_note("patient 8 years (from PatientAge), whose LV is shorter than an adult's")
    lge, _ = _lge_with_warnings([note, small, child], checks, PatientAge="008Y")
    assert len(lge) >= 5 + 16
    expected = [((codes.NOT_LGE_CONTRAST.value, "99DICOMNODE"),
                 pytest.approx(checks["blood_myocardium_ratio"], abs=0.005), "1"),
                ((codes.SMALL_FIELD.value, "99DICOMNODE"), pytest.approx(76.0), "mm"),
                ((codes.CHILD_LGE.value, "99DICOMNODE"), pytest.approx(8.0), "a")]
    caveat_codes = {code for code, *_ in expected}
    for group in lge:
        own = [n for n in nums(group) if n[0] not in caveat_codes]
        room = max(1, 5 - min(3, len(own)))  # OHIF shows five NUMs: three of them stay the group's own numbers
        found = [(c, v, u) for c, v, u, _ in nums(group)[:min(3, room)]]
        assert found == expected[:min(3, room)], identifier_of(group)
        assert not caveat_codes & {c for c, *_ in nums(group)[min(3, room):]}, identifier_of(group)
    dark = f"{DARK_BLOOD_NOTE}: the name says so ('DB LGE'). The model was trained on bright-blood LGE only"
    lge, _ = _lge_with_warnings([dark], {"blood_myocardium_ratio": 1.05, "field_of_view_mm": 300.0})
    assert all(nums(g)[0][:2] == ((codes.DARK_BLOOD_LGE.value, "99DICOMNODE"), pytest.approx(1.05)) for g in lge)


def test_an_lge_without_input_warnings_has_no_input_caveat():
    _, with_numbers = _lge_with_warnings(["a gap of 9 mm"], {"blood_myocardium_ratio": 1.6, "field_of_view_mm": 300.0})
    input_codes = {(c.value, "99DICOMNODE") for c in (codes.NOT_LGE_CONTRAST, codes.DARK_BLOOD_LGE, codes.SMALL_FIELD,
                                                       codes.CHILD_LGE)}
    assert not input_codes & {c for g in with_numbers for c, *_ in nums(g)}


def test_caveats_never_crowd_out_a_group_s_own_numbers_in_the_five_lines_ohif_shows():
    """review44 item 8: caveat NUMs stacked first (here a T1-map-like contrast, a small field, a child and
    non-square pixels) could fill all five lines OHIF shows of a group and hide the numbers they qualify. At most
    as many caveats are put in a group as leave three of its own numbers shown (all where it has fewer), the most
    important first (sr.CAVEAT_PRIORITY); every warning stays a report comment."""
    from dicomnode.results.sr import CAVEAT_PRIORITY
    image = np.zeros((2, 40, 40))
    labels = np.zeros((2, 40, 40), dtype=np.int16)
    labels[:, 5:15, 5:15], labels[:, 20:30, 20:30] = int(Label.LV_MYOCARDIUM), int(Label.LV_BLOOD_POOL)
    image[labels == int(Label.LV_MYOCARDIUM)], image[labels == int(Label.LV_BLOOD_POOL)] = 450.0, 300.0
    (note,) = contrast_notes(image, labels)
    (small,) = small_field_notes(image, (2.0, 3.0))
    child = child_lge_note("patient 8 years (from PatientAge), whose LV is shorter than an adult's")
    lge, _ = _lge_with_warnings([note, small, child], input_checks(image, labels, (2.0, 3.0)), PatientAge="008Y")
    crowded = 0
    for group in lge:
        shown = nums(group)[:5]
        own_total = [n for n in nums(group) if n[0] not in CAVEAT_PRIORITY]
        own_shown = [n for n in shown if n[0] not in CAVEAT_PRIORITY]
        assert len(own_shown) >= min(3, len(own_total)), identifier_of(group)
        crowded += len(own_total) >= 3
    assert crowded, "no LGE group with three or more numbers of its own: the test checks nothing"
