"""What OHIF v3 shows of an RV read at another phase than the LV's, of ES numbers, of a withheld LGE stack and of a
scar-free AHA segment (break48b findings 1, 2, 6 and 9).

OHIF v3.13 shows a group's NUMs only (concept meaning, value to two decimals, a value 0 drawn blank), its SR viewport
steps only through the groups drawn on the series of the first group (the ED display copy), and it shows no tracking
identifier: what a reader must learn goes into NUMs of the groups drawn on the ED copy.
"""
from __future__ import annotations

import pytest

from dicomnode.results import codes
from dicomnode.results.report import key_number_table
from dicomnode.results.seg import build_seg, seg_parts
from dicomnode.results.sr import OHIF_SHOWN_NUMS, build_sr
from synthetic import make_study, rv_es_at_next_phase, write
from test_results_lge_withheld import withhold
from test_results_sr import group_named, groups, nums, segs_of
from test_results_sr_display import identifier_of
from validators import assert_all_valid, assert_valid

PRIVATE = "99DICOMNODE"
RV_ES_OTHER = ("RVESPHASE", PRIVATE)
RV_ED_OTHER = ("RVEDPHASE", PRIVATE)
PHASE = (codes.PHASE_NUMBER.value, PRIVATE)
NOT_DETERMINED = ("LGENOTDET", PRIVATE)
NO_SCAR = ("AHANOSCAR", PRIVATE)


def _sr(results, context, study):
    return build_sr(study.series[0].instances[0].dataset, results, segs_of(results, context), context, 9100)


def _rv_es_at_next_phase(results) -> dict:
    """The cine summary of an RV whose ESV is read one phase after the LV's ES (0-based: LV ES 3, RV ES 4), its
    segmentation carrying that phase as CinePipeline's does (synthetic.rv_es_at_next_phase)."""
    return rv_es_at_next_phase(results).summary


def _group(sr, name: str):
    """The group with numbers whose tracking identifier begins with `name` (the RV's own phase may follow it)."""
    return next(g for g in groups(sr) if identifier_of(g).startswith(name) and nums(g))


def _value(group, key) -> float:
    return next(value for c, value, *_ in nums(group) if c == key)


def test_the_rv_es_group_says_the_rv_s_own_phase_first_and_as_its_phase_number():
    study, results, context = make_study(slices=4, cine_phases=5)
    _rv_es_at_next_phase(results)
    sr = _sr(results, context, study)
    rv_es = _group(sr, "RV blood pool ES")
    first = nums(rv_es)[0]
    assert first[0] == RV_ES_OTHER and first[1] == 5  # 1-based: phase 5, the LV's ES is phase 4
    # f49b: the RV is outlined at the phase its ESV was read at (its own SEG), no longer at the LV's
    assert "not LV ES; RV also outlined at it" in codes.RV_ESV_OTHER_PHASE.meaning
    assert _value(rv_es, PHASE) == 5
    assert _value(group_named(sr, "LV blood pool ES"), PHASE) == 4
    assert identifier_of(rv_es) == "RV blood pool ES (phase 5 of 5, not LV's 4)"
    # the ED group of the RV is read at the LV's ED: no caveat there, and none for RV EDV anywhere
    assert RV_ES_OTHER not in {c for c, *_ in nums(group_named(sr, "RV blood pool ED"))}
    assert RV_ED_OTHER not in {c for g in groups(sr) for c, *_ in nums(g)}


def test_an_rv_read_at_the_lv_s_phases_carries_no_phase_caveat():
    study, results, context = make_study(slices=4, cine_phases=5)
    cine = _rv_es_at_next_phase(results)
    cine["timing"]["rv_es_phase"] = cine["es_phase"]
    sr = _sr(results, context, study)
    assert not {RV_ES_OTHER, RV_ED_OTHER} & {c for g in groups(sr) for c, *_ in nums(g)}
    assert _value(_group(sr, "RV blood pool ES"), PHASE) == 4


def test_the_pdf_phase_row_gives_the_rv_s_phases_and_where_its_outline_is():
    _, results, _ = make_study(slices=4, cine_phases=5)
    cine = _rv_es_at_next_phase(results)
    rows = {q: v for q, v, _ in key_number_table(results[1:2], (2.0, "mosteller"), "M")}
    assert rows["ED / ES phase"].startswith("1 / 4 ")
    # f49b: the SEG and the SR outline the RV at its own phase; the PDF's figures stay at the LV's
    assert rows["ED / ES phase"].endswith(
        "; RV EDV / ESV read at phases 1 / 5 (RV's own; outlined in SEG 'RV ES'; images below at the LV's phases)")
    cine["timing"]["rv_es_phase"] = cine["es_phase"]
    rows = {q: v for q, v, _ in key_number_table(results[1:2], (2.0, "mosteller"), "M")}
    assert "RV" not in rows["ED / ES phase"]


def test_the_es_volumes_are_stated_in_the_function_groups_drawn_on_the_ed_copy():
    """OHIF's SR viewport never reaches the ES groups (they are drawn on the ES copy): the "function (ED and ES)"
    groups, on the ED copy, state the ESV among the NUMs OHIF shows, and the RV's the phase its ESV was read at."""
    study, results, context = make_study(slices=4, cine_phases=5)
    cine = _rv_es_at_next_phase(results)
    sr = _sr(results, context, study)
    for name, concept, key in (("LV function (ED and ES)", codes.LV_ESV, "lv_esv_ml"),
                               ("RV function (ED and ES)", codes.RV_ESV, "rv_esv_ml")):
        shown = nums(group_named(sr, name))[:OHIF_SHOWN_NUMS]
        assert (concept.value, concept.scheme_designator) in [c for c, *_ in shown], name
        assert _value(group_named(sr, name), (concept.value, concept.scheme_designator)) == \
            pytest.approx(cine[key], abs=0.01)
    rv_shown = [c for c, *_ in nums(group_named(sr, "RV function (ED and ES)"))[:OHIF_SHOWN_NUMS]]
    assert RV_ES_OTHER in rv_shown
    # on the same display copy as the ED groups: the outline's images are those of LV blood pool ED
    ed_images = _images(group_named(sr, "LV blood pool ED"))
    assert _images(group_named(sr, "LV function (ED and ES)")) <= ed_images | _all_ed_images(sr)


def test_the_function_groups_hold_both_volumes_their_ef_and_sv_come_from(tmp_path):
    """break49b #8: "LV function (ED and ES)" gave EF, ESV and SV but not EDV (in its own group only), so OHIF's reader
    saw ESV twice and EDV once; the group now states both, ESV first (OHIF reaches no ES group), EDV among the five
    NUMs OHIF shows too, equal to the ED group's."""
    study, results, context = make_study(slices=4, cine_phases=5)
    cine = _rv_es_at_next_phase(results)
    sr = _sr(results, context, study)
    for ventricle, edv, esv in (("LV", codes.LV_EDV, codes.LV_ESV), ("RV", codes.RV_EDV, codes.RV_ESV)):
        group = group_named(sr, f"{ventricle} function (ED and ES)")
        shown = [c for c, *_ in nums(group)[:OHIF_SHOWN_NUMS]]
        key = (edv.value, edv.scheme_designator)
        assert key in shown and shown.index((esv.value, esv.scheme_designator)) < shown.index(key), shown
        assert _value(group, key) == pytest.approx(cine[f"{ventricle.lower()}_edv_ml"], abs=0.01)
        assert _value(group, key) == _value(group_named(sr, f"{ventricle} blood pool ED"), key)
    assert_valid(write(sr, tmp_path / "sr.dcm"), "DicomSRValidator")  # the TID 1500 template still holds


def _images(group) -> set[str]:
    return {str(ref.ReferencedSOPInstanceUID) for item in group.ContentSequence if item.ValueType == "SCOORD"
            for sub in item.ContentSequence for ref in sub.ReferencedSOPSequence}


def _all_ed_images(sr) -> set[str]:
    return {uid for g in groups(sr) if " ED" in identifier_of(g) and "(ED and ES)" not in identifier_of(g)
            for uid in _images(g)}


@pytest.fixture(scope="module")
def withheld():
    study, results, context = make_study()
    withhold(results[0].summary)
    segmentation = results[0].segmentations[0]
    from dataclasses import replace
    results[0].segmentations = [replace(segmentation, unreliable=True)]
    return study, results, context


def test_a_withheld_lge_seg_says_review_only_where_ohif_lists_it_and_in_every_segment_label(withheld):
    _, results, context = withheld
    segmentation = results[0].segmentations[0]
    sources = [i.dataset for i in segmentation.series.instances]
    for part in seg_parts(segmentation):
        seg = build_seg(segmentation, sources, context, 9001, part)
        assert "REVIEW ONLY" in str(seg.SeriesDescription)[:22]  # OHIF's series list cuts after ~22 characters
        assert str(seg.ContentDescription).startswith("REVIEW ONLY")
        # review48b note: the whole text within LO's 64 characters, no word cut ("... numbers not determi")
        assert str(seg.ContentDescription) == "REVIEW ONLY: AI LGE SEG unreliable, numbers not determined"
        assert all(str(s.SegmentLabel).endswith("(unreliable)") for s in seg.SegmentSequence)


def test_a_determined_lge_seg_is_not_marked_review_only():
    _, results, context = make_study()
    segmentation = results[0].segmentations[0]
    sources = [i.dataset for i in segmentation.series.instances]
    seg = build_seg(segmentation, sources, context, 9001, seg_parts(segmentation)[0])
    assert "REVIEW ONLY" not in str(seg.SeriesDescription)
    assert not any("unreliable" in str(s.SegmentLabel) for s in seg.SegmentSequence)


def test_every_withheld_lge_group_begins_with_the_not_determined_num(withheld):
    study, results, context = withheld
    sr = build_sr(study.series[0].instances[0].dataset, results[:1], segs_of(results, context), context, 9100)
    found = [g for g in groups(sr) if nums(g)]
    # each group of the region (the further contours of its drawn slice are display groups without numbers)
    assert found and len(found) == len([g for g in groups(sr) if identifier_of(g).endswith("numbers not determined)")])
    for group in found:
        first = nums(group)[0]
        assert first[0] == NOT_DETERMINED and first[1] > 0 and first[2] == "mm2"
        assert len(nums(group)) == 1  # no LGE number
    assert "NOT DETERMINED" in codes.LGE_NOT_DETERMINED.meaning and "unreliable" in codes.LGE_NOT_DETERMINED.meaning


def test_a_scar_free_aha_segment_says_no_scar_before_its_zero_values():
    """OHIF draws a NUM of value 0 as "Scar extent ...: %"; a scar-free segment first says "no scar, 0 %" with its
    number (the 0 % values follow under their own concepts for machine readers)."""
    study, results, context = make_study(slices=4, cine_phases=4)
    sr = _sr(results, context, study)
    segments = {int(s["segment"]): s for s in results[0].summary["aha_segments"]["segments"]}
    free = {n for n, s in segments.items() if s["scar_extent_percent"] == 0}
    scarred = set(segments) - free
    assert free and scarred
    lge_aha = [g for g in groups(sr) if identifier_of(g).startswith("AHA ") and "(LGE)" in identifier_of(g)
               and nums(g)]
    said_free = set()
    for group in lge_aha:
        values = nums(group)
        if any(value == 0 for _, value, *_ in values):  # a 0 drawn blank only after the line saying why
            assert values[0][0] == NO_SCAR, identifier_of(group)
        if values[0][0] == NO_SCAR:
            said_free.add(int(values[0][1]))
            assert [value for _, value, *_ in values[1:]] == [0, 0, 0]
            assert any(i.ValueType == "CODE" and i.ConceptCodeSequence[0].CodeValue == codes.ABSENT.value
                       for i in group.ContentSequence)
    assert said_free == free


@pytest.mark.peers
def test_the_new_nums_pass_dciodvfy_and_pixelmed(withheld, tmp_path):
    study, results, context = make_study(slices=4, cine_phases=5)
    _rv_es_at_next_phase(results)
    sr = _sr(results, context, study)
    files = [(write(sr, tmp_path / "sr.dcm"), "DicomSRValidator")]
    study, results, context = withheld
    sr = build_sr(study.series[0].instances[0].dataset, results[:1], segs_of(results, context), context, 9100)
    files.append((write(sr, tmp_path / "withheld.dcm"), "DicomSRValidator"))
    segmentation = results[0].segmentations[0]
    seg = build_seg(segmentation, [i.dataset for i in segmentation.series.instances], context, 9001,
                    seg_parts(segmentation)[0])
    files.append((write(seg, tmp_path / "seg.dcm"), "DicomInstanceValidator"))
    assert_all_valid(files)


def test_a_segment_whose_scar_rounds_to_zero_is_not_coded_scar_free():
    """review48b #10: "No scar" and LATE CONTRAST ENHANCEMENT Absent are coded findings, decided on the segment's
    scar voxel count, not on its stored percentages: a segment with 1 scar voxel whose extent rounds to 0.00 % is
    not said to be scar-free."""
    study, results, context = make_study(slices=4, cine_phases=4)
    segments = results[0].summary["aha_segments"]["segments"]
    trace = next(s for s in segments if s["scar_extent_percent"] == 0)
    trace.update(scar_voxels=1, scar_extent_percent=0.0, transmurality_max_percent=0.0,
                 transmurality_mean_percent=0.0)
    sr = _sr(results, context, study)
    group = next(g for g in groups(sr) if identifier_of(g).startswith(f"AHA {int(trace['segment'])} ")
                 and "(LGE)" in identifier_of(g))
    assert nums(group)[0][0] != NO_SCAR
    assert not any(i.ValueType == "CODE" and i.ConceptCodeSequence[0].CodeValue == codes.ABSENT.value
                   for i in group.ContentSequence)
