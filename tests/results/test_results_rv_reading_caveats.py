"""What a reader of OHIF and of PDF page 1 sees of an RV read at its own ED and ES and of the cine flags that change
how a number is read (break51c findings 2, 3 and 5).

- 2: where RV EDV / ESV were read at other phases than the LV's, the LV's ED / ES SEGs label their RV segment as the
  RV at the LV's phase, not where RV EDV / ESV were read (OHIF shows the Segment Label only), and the SR's RV function
  group (RVEF, RV EDV, RV ESV) is the RV's own ED segment, drawn on its display copy; where they agree nothing changes.
- 3: "RV EDV and RVEF uncertain" (RV volume jump), "confirm ES" and "LV and RV stroke volumes disagree" are NUMs first
  in the groups of the numbers they concern (OHIF shows no report-level comment), and PDF page 1 names them in the
  row of that number.
- 5: the PDF's ED / ES row says the RV numbers were read at the RV's phases, the images at the LV's.
"""
from __future__ import annotations

import numpy as np
import pytest

from dicomnode.analysis.cine_metrics import CONFIRM_ES_END, REPORTED_ES_START, RV_JUMP_START, SV_MISMATCH_START, \
    reading_caveats
from dicomnode.results import codes
from dicomnode.results.objects import build_result_objects
from dicomnode.results.report import key_number_table
from dicomnode.results.sr import OHIF_SHOWN_NUMS, build_sr
from synthetic import make_study, rv_at_own_phases, write
from test_results_sr import groups, nums, segs_of
from test_results_sr_display import identifier_of
from validators import assert_valid

MEASUREMENT_SR = "1.2.840.10008.5.1.4.1.1.88.34"
PRIVATE = "99DICOMNODE"
RV_EDV_UNCERTAIN = (codes.RV_EDV_UNCERTAIN.value, PRIVATE)
RV_ESV_UNCERTAIN = (codes.RV_ESV_UNCERTAIN.value, PRIVATE)
ES_UNCERTAIN = (codes.ES_UNCERTAIN.value, PRIVATE)
SV_MISMATCH = (codes.SV_MISMATCH.value, PRIVATE)

#: the flags as cine_metrics words them (break51c study B and C), each beginning and ending as the node's do
RV_ED_JUMP = (f"{RV_JUMP_START}end-diastolic phase 2: RV EDV and RVEF uncertain, review the RV contours (95.3 mL "
              "against 79.2 mL, the per-slice median)")
RV_ES_JUMP = (f"{RV_JUMP_START}end-systolic phase 5: RV ESV and RVEF uncertain, review the RV contours (4.1 mL "
              "against 5.0 mL, the per-slice median)")
CONFIRM_ES = (f"{REPORTED_ES_START}phase 4: the smallest LV volume on the curve that times the cycle ... ESV is read "
              f"at phase 4 (3.8 mL, LVEF 61.7 %); read at phase 3: ESV 2.0 mL, LVEF 79.8 %: {CONFIRM_ES_END}")
SV_DISAGREE = (f"{SV_MISMATCH_START}: LV SV 36.3 mL, RV SV 79.4 mL, 43.1 mL apart (54 % of the larger; flagged "
               "above 30 mL and 30 %; without significant valve regurgitation or a shunt they are equal). Check the RV "
               "(and LV) contours at ED and ES; if the segmentation is right, consider valve regurgitation or a shunt")


def _own_phases(rv_ed: int | None = 1, rv_es: int | None = 4):
    """make_study's study (LV ED 0, ES 3, 0-based) with RV EDV / ESV read at `rv_ed` / `rv_es`, its result objects."""
    study, results, context = make_study(slices=3, cine_phases=5)
    rv_at_own_phases(results, rv_ed=rv_ed, rv_es=rv_es)
    return study, results, context, build_result_objects(study, results[1:2], context)


def _sr(objects):
    return next(o for o in objects if o.Modality == "SR" and str(o.SOPClassUID) == MEASUREMENT_SR)


def _segment_of(group) -> tuple[str, int]:
    """(SEG SOP Instance UID, segment number) a TID 1411 group references."""
    (item,) = [i for i in group.ContentSequence if i.ValueType == "IMAGE"
               and "ReferencedSegmentNumber" in i.ReferencedSOPSequence[0]]
    reference = item.ReferencedSOPSequence[0]
    return str(reference.ReferencedSOPInstanceUID), int(reference.ReferencedSegmentNumber)


def _drawn_on(sr, name: str) -> set[str]:
    """The images the SCOORDs of the groups named `name` (and their outline group) are drawn on."""
    return {str(ref.ReferencedSOPInstanceUID) for g in groups(sr) if identifier_of(g).startswith(name)
            for item in g.ContentSequence if item.ValueType == "SCOORD"
            for sub in item.ContentSequence for ref in sub.ReferencedSOPSequence}


def _label(seg, number: int) -> str:
    return next(str(s.SegmentLabel) for s in seg.SegmentSequence if int(s.SegmentNumber) == number)


def test_the_lv_phase_segs_label_their_rv_as_the_rv_at_the_lvs_phase_and_rvef_is_drawn_on_the_rvs_own_ed():
    _, results, _, objects = _own_phases()
    segs = {str(s.SOPInstanceUID): s for s in objects if s.Modality == "SEG"}
    ed_seg, es_seg, rv_ed_seg, rv_es_seg = sorted(segs.values(), key=lambda s: int(s.SeriesNumber))
    labels = [[str(s.SegmentLabel) for s in seg.SegmentSequence] for seg in (ed_seg, es_seg, rv_ed_seg, rv_es_seg)]
    assert labels == [
        ["LV blood pool ED", "LV myocardium ED", "RV blood pool at LV ED (phase 1); RV EDV read at phase 2"],
        ["LV blood pool ES", "LV myocardium ES", "RV blood pool at LV ES (phase 4); RV ESV read at phase 5"],
        ["RV blood pool; RV at ED (phase 2)"], ["RV blood pool; RV at ES (phase 5)"]]
    assert all(len(label) <= 64 for seg_labels in labels for label in seg_labels)  # LO, written whole

    sr = _sr(objects)
    (rv_function,) = [g for g in groups(sr) if identifier_of(g).startswith("RV function (ED and ES)") and nums(g)]
    # RVEF's RV EDV is read at phase 2: the group is the RV ED SEG's segment, drawn on the RV ED copy
    assert _segment_of(rv_function) == (str(rv_ed_seg.SOPInstanceUID), 1)
    rv_ed_copies = {str(i.ReferencedSOPInstanceUID) for s in rv_ed_seg.ReferencedSeriesSequence
                    for i in s.ReferencedInstanceSequence}
    drawn = _drawn_on(sr, "RV function (ED and ES)")
    assert drawn and drawn <= rv_ed_copies
    # and the RV ED / ES groups as before (f49b), so that no SR group stands on the RV at the LV's phase
    referenced = {_segment_of(g) for g in groups(sr) if nums(g) and any(
        i.ValueType == "IMAGE" and "ReferencedSegmentNumber" in i.ReferencedSOPSequence[0] for i in g.ContentSequence)}
    assert not any(uid in (str(ed_seg.SOPInstanceUID), str(es_seg.SOPInstanceUID))
                   and _label(segs[uid], number).startswith("RV") for uid, number in referenced)


def test_where_only_the_rv_es_is_its_own_the_ed_seg_and_rvef_group_are_the_lvs_ed():
    _, _, _, objects = _own_phases(rv_ed=None, rv_es=4)
    ed_seg, es_seg, rv_es_seg = sorted((s for s in objects if s.Modality == "SEG"), key=lambda s: int(s.SeriesNumber))
    assert [str(s.SegmentLabel) for s in ed_seg.SegmentSequence][2] == "RV blood pool ED"
    assert [str(s.SegmentLabel) for s in es_seg.SegmentSequence][2] == \
        "RV blood pool at LV ES (phase 4); RV ESV read at phase 5"
    (rv_function,) = [g for g in groups(_sr(objects)) if identifier_of(g).startswith("RV function") and nums(g)]
    assert _segment_of(rv_function) == (str(ed_seg.SOPInstanceUID), 3)


def test_where_the_rv_is_read_at_the_lvs_phases_the_rvef_group_is_the_ed_segs_rv():
    study, results, context = make_study(slices=3, cine_phases=5)
    objects = build_result_objects(study, results[1:2], context)
    ed_seg = min((s for s in objects if s.Modality == "SEG"), key=lambda s: int(s.SeriesNumber))
    (rv_function,) = [g for g in groups(_sr(objects)) if identifier_of(g).startswith("RV function") and nums(g)]
    assert _segment_of(rv_function) == (str(ed_seg.SOPInstanceUID), 3)
    assert _label(ed_seg, 3) == "RV blood pool ED"


def _flagged(results, *flags: str) -> dict:
    """The cine summary of make_study given `flags` and the LV curve a "confirm ES" reading refers to."""
    cine = results[1].summary
    cine["flags"] = list(cine.get("flags") or []) + list(flags)
    cine["lv_volume_curve_ml"] = [float(cine["lv_edv_ml"]), 6.0, 2.0, float(cine["lv_esv_ml"]), 5.0]
    return cine


def test_reading_caveats_take_their_quantity_from_the_summary():
    _, results, _ = make_study(slices=3, cine_phases=5)
    rv_at_own_phases(results, rv_ed=1, rv_es=4)
    cine = _flagged(results, RV_ED_JUMP, RV_ES_JUMP, CONFIRM_ES, SV_DISAGREE)
    found = {c.kind: c for c in reading_caveats(cine)}
    assert found["rv_edv_uncertain"].value == 2 and found["rv_esv_uncertain"].value == 5  # the RV's own, 1-based
    assert found["rv_edv_uncertain"].text == "RV EDV and RVEF uncertain (RV volume jumps at phase 2)"
    edv = float(cine["lv_edv_ml"])
    assert found["es_uncertain"].value == pytest.approx(100 * (edv - 2.0) / edv)  # ES at the smallest, phase 3
    assert found["es_uncertain"].text.endswith("% if ES at phase 3")
    assert found["sv_mismatch"].value == pytest.approx(abs(cine["lv_sv_ml"] - cine["rv_sv_ml"]))
    # review51 #3: the curve's minimum left out as a jump is not the reading to confirm; a jump only where it is all
    timing = dict(cine.get("timing") or {})
    curve = [edv, 6.0, 2.0, float(cine["lv_esv_ml"]), 0.9 * float(cine["lv_esv_ml"])]  # ES at index 3
    jumped = {c.kind: c for c in reading_caveats({**cine, "lv_volume_curve_ml": curve,
                                                  "timing": {**timing, "flagged_phases": [2]}})}
    assert jumped["es_uncertain"].value == pytest.approx(100 * (edv - curve[4]) / edv)
    assert jumped["es_uncertain"].text.endswith("% if ES at phase 5")
    only = {c.kind: c for c in reading_caveats({**cine, "lv_volume_curve_ml": curve,
                                                "timing": {**timing, "flagged_phases": [2, 4]}})}
    assert only["es_uncertain"].text.endswith("% if ES at phase 3 (left out as a jump)")
    assert reading_caveats({**cine, "flags": []}) == []
    for code in (codes.RV_EDV_UNCERTAIN, codes.RV_ESV_UNCERTAIN, codes.ES_UNCERTAIN, codes.SV_MISMATCH):
        assert len(code.meaning) <= 64 and code in codes.PRIVATE_CODES  # LO; declared in the coding scheme
    # an RV jump said of the other phase only: its own caveat only
    assert [c.kind for c in reading_caveats({**cine, "flags": [RV_ES_JUMP]})] == ["rv_esv_uncertain"]


def _caveats_first(group, expected: list[tuple[str, str]]):
    """`expected` among the NUMs OHIF shows of `group` (its first OHIF_SHOWN_NUMS), before the group's own number."""
    shown = [c for c, *_ in nums(group)][:OHIF_SHOWN_NUMS]
    assert all(code in shown for code in expected), shown


def test_the_flags_that_change_a_reading_are_nums_in_the_groups_of_their_numbers():
    study, results, context = make_study(slices=3, cine_phases=5)
    rv_at_own_phases(results, rv_ed=1, rv_es=4)
    _flagged(results, RV_ED_JUMP, CONFIRM_ES)
    sr = build_sr(study.series[0].instances[0].dataset, results[:2], segs_of(results, context), context, 9100)

    def group(name: str):
        return next(g for g in groups(sr) if identifier_of(g).startswith(name) and nums(g))

    _caveats_first(group("RV blood pool ED"), [RV_EDV_UNCERTAIN])
    _caveats_first(group("RV function (ED and ES)"), [RV_EDV_UNCERTAIN])
    _caveats_first(group("LV blood pool ES"), [ES_UNCERTAIN])
    _caveats_first(group("LV function (ED and ES)"), [ES_UNCERTAIN])
    (value,) = [v for c, v, unit, _ in nums(group("RV blood pool ED")) if c == RV_EDV_UNCERTAIN]
    assert value == 2
    # said where it concerns the number, not elsewhere
    for name in ("LV blood pool ED", "LV blood pool ES", "LV function", "RV blood pool ES"):
        assert RV_EDV_UNCERTAIN not in {c for c, *_ in nums(group(name))}
    assert ES_UNCERTAIN not in {c for c, *_ in nums(group("RV function (ED and ES)"))}
    assert SV_MISMATCH not in {c for g in groups(sr) for c, *_ in nums(g)}


def test_the_stroke_volume_mismatch_is_a_num_in_both_function_groups_even_beside_other_caveats():
    study, results, context = make_study(slices=3, cine_phases=5)
    rv_at_own_phases(results, rv_ed=None, rv_es=4)
    _flagged(results, RV_ES_JUMP, CONFIRM_ES, SV_DISAGREE)
    sr = build_sr(study.series[0].instances[0].dataset, results[:2], segs_of(results, context), context, 9100)

    def group(name: str):
        return next(g for g in groups(sr) if identifier_of(g).startswith(name) and nums(g))

    _caveats_first(group("LV function (ED and ES)"), [SV_MISMATCH])
    _caveats_first(group("RV function (ED and ES)"), [SV_MISMATCH])
    _caveats_first(group("RV blood pool ES"), [RV_ESV_UNCERTAIN])
    _caveats_first(group("LV blood pool ES"), [ES_UNCERTAIN])


def test_pdf_page_one_names_each_caveat_in_the_row_of_its_number():
    _, results, _ = make_study(slices=3, cine_phases=5)
    rv_at_own_phases(results, rv_ed=1, rv_es=4)
    _flagged(results, RV_ED_JUMP, CONFIRM_ES, SV_DISAGREE)
    rows = {q: v for q, v, _ in key_number_table(results[1:2], (2.0, "mosteller"), "M")}
    assert "RV EDV and RVEF uncertain (RV volume jumps at phase 2)" in rows["RV EDV / ESV"]
    assert "RV EDV and RVEF uncertain" in rows["RV SV / EF"]
    assert "confirm ES: LVEF" in rows["LV EF"] and "confirm ES: LVEF" in rows["LV ESV / ESVi"]
    assert "LV and RV SV disagree by" in rows["LV SV / EF"] and "LV and RV SV disagree by" in rows["RV SV / EF"]
    assert "uncertain" not in rows["LV EF"] and "confirm ES" not in rows["RV EDV / ESV"]
    # both RV phases the RV's own: the numbers read there, the images at the LV's (break51c #5)
    assert rows["ED / ES phase"].endswith("; RV EDV / ESV read at phases 2 / 5 (RV's own; outlined in SEG "
                                          "'RV ED/ES'; images below at the LV's phases)")


def test_without_those_flags_the_rows_say_nothing_more():
    _, results, _ = make_study(slices=3, cine_phases=5)
    rows = {q: v for q, v, _ in key_number_table(results[1:2], (2.0, "mosteller"), "M")}
    for row in ("LV EF", "LV ESV / ESVi", "LV SV / EF", "RV EDV / ESV", "RV SV / EF"):
        assert not any(t in rows[row] for t in ("uncertain", "confirm ES", "disagree")), rows[row]


@pytest.mark.peers
def test_the_relabelled_segs_and_the_sr_with_reading_caveats_pass_the_validators(tmp_path):
    study, results, context = make_study(slices=3, cine_phases=5)
    rv_at_own_phases(results, rv_ed=1, rv_es=4)
    _flagged(results, RV_ED_JUMP, RV_ES_JUMP, CONFIRM_ES, SV_DISAGREE)
    objects = build_result_objects(study, results[1:2], context)
    ed_seg = min((s for s in objects if s.Modality == "SEG"), key=lambda s: int(s.SeriesNumber))
    sr = _sr(objects)
    assert {c for g in groups(sr) for c, *_ in nums(g)} >= {RV_EDV_UNCERTAIN, ES_UNCERTAIN, SV_MISMATCH}
    assert np.count_nonzero(ed_seg.pixel_array)
    assert_valid(write(ed_seg, tmp_path / "ed_seg.dcm"), "DicomInstanceValidator")
    assert_valid(write(sr, tmp_path / "sr.dcm"), "DicomSRValidator")
