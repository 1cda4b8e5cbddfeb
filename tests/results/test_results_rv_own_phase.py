"""The RV outline a reader sees is the one the RV numbers were measured on (f49b): where RV EDV / ESV were read at
another phase than the LV's ED / ES (cine_metrics.rv_cardiac_phases), the cine segmentation carries that phase too,
with the RV alone, so it gets an RV SEG of its own, a display copy of that phase for OHIF, and the SR's RV group is
drawn on it; where the RV's phases are the LV's nothing changes."""
from __future__ import annotations

import numpy as np
import pytest

from dicomnode.analysis.cine import PHASE_NAMES, RV_PHASE_NAMES, counted_labelmaps, segmented_phases
from dicomnode.labels import Label
from dicomnode.results import codes
from dicomnode.results.objects import build_result_objects
from dicomnode.results.report import RV_OUTLINE_AT_LV_PHASE, key_number_table
from dicomnode.results.seg import segment_masks, segment_plan
from dicomnode.results.sr import build_sr
from synthetic import make_study, rv_at_own_phases, rv_es_at_next_phase, write
from test_results_sr import groups, nums, segs_of
from test_results_sr_display import identifier_of
from validators import assert_valid

MEASUREMENT_SR = "1.2.840.10008.5.1.4.1.1.88.34"


def test_the_rvs_own_phases_are_added_only_where_they_differ_from_the_lvs():
    assert segmented_phases(0, 3, 0, 3) == ([0, 3], PHASE_NAMES)
    assert segmented_phases(0, 3) == ([0, 3], PHASE_NAMES)  # not chosen: the LV's
    assert segmented_phases(0, 3, 0, 4) == ([0, 3, 4], PHASE_NAMES + [RV_PHASE_NAMES[1]])
    assert segmented_phases(0, 3, 11, 4) == ([0, 3, 11, 4], PHASE_NAMES + RV_PHASE_NAMES)
    # an RV phase that is the LV's other phase is carried already (its label map holds that RV): not added twice
    assert segmented_phases(0, 1, 1, 1) == ([0, 1], PHASE_NAMES)


def test_the_map_of_the_rvs_own_phase_holds_the_rv_alone():
    maps = np.zeros((5, 2, 6, 6), np.uint8)
    maps[:, :, :2] = Label.LV_BLOOD_POOL
    maps[:, :, 2:4] = Label.LV_MYOCARDIUM
    maps[:, :, 4:] = Label.RV_BLOOD_POOL
    shown = counted_labelmaps(maps, [0, 3, 4], [(3, 1)], rv_only=[2])
    assert set(np.unique(shown[2])) == {Label.BACKGROUND, Label.RV_BLOOD_POOL}
    assert np.array_equal(shown[2] == Label.RV_BLOOD_POOL, maps[4] == Label.RV_BLOOD_POOL)
    assert np.array_equal(shown[0], maps[0])  # the LV's phases as before
    assert not (shown[1, 1] == Label.LV_BLOOD_POOL).any() and (shown[1, 0] == Label.LV_BLOOD_POOL).any()


def _objects(rv_es_moved: bool):
    study, results, context = make_study(slices=3, cine_phases=5)
    if rv_es_moved:
        rv_es_at_next_phase(results)
    return results, build_result_objects(study, results[1:2], context)


def _by_series(objects, modality):
    found = {}
    for dataset in objects:
        if dataset.Modality == modality:
            found.setdefault(str(dataset.SeriesInstanceUID), []).append(dataset)
    return found


def _referenced_images(seg) -> set[str]:
    return {str(i.ReferencedSOPInstanceUID) for s in seg.ReferencedSeriesSequence for i in s.ReferencedInstanceSequence}


def test_a_whole_cine_whose_rv_es_differs_gets_an_rv_es_seg_on_a_copy_of_that_phase():
    results, objects = _objects(rv_es_moved=True)
    cine, segmentation = results[1], results[1].segmentations[0]
    assert segmentation.phases == [0, 3, 4]
    segs = [o for o in objects if o.Modality == "SEG"]
    copies = _by_series(objects, "MR")
    assert len(segs) == 3 and len(copies) == 3 and all(len(c) == 3 for c in copies.values())
    rv_seg = segs[2]  # ED, ES, then the RV's own ES (series numbers in that order)
    assert [int(s.SeriesNumber) for s in segs] == [9001, 9002, 9003]
    # OHIF's series list shows about 22 characters: "AI unverified RV ES ci" tells it from the LV's ES SEG
    assert str(rv_seg.SeriesDescription).startswith("AI unverified RV ES cine S:9303 SEG")
    (segment,) = rv_seg.SegmentSequence  # the RV alone: no LV outline at a phase no LV number was read at
    assert str(segment.SegmentLabel) == "RV blood pool; RV at ES (phase 5)"
    assert str(segment.SegmentDescription).endswith("; RV at ES, phase 5 (1-based)")
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == codes.RIGHT_VENTRICLE.value
    # the LV's ES SEG still holds the LV and the RV at the LV's ES, labelled as not where RV ESV was read (OHIF shows
    # only the label: "RV blood pool ES" beside "RV at ES (phase 5)" read as two RVs at ES, break51c #2)
    assert [str(s.SegmentLabel) for s in segs[1].SegmentSequence] == [
        "LV blood pool ES", "LV myocardium ES", "RV blood pool at LV ES (phase 4); RV ESV read at phase 5"]
    assert [str(s.SegmentLabel) for s in segs[0].SegmentSequence][2] == "RV blood pool ED"  # RV ED is the LV's
    # it references exactly the copies of phase index 4, whose sources are that phase's images
    (series,) = rv_seg.ReferencedSeriesSequence
    mine = copies[str(series.SeriesInstanceUID)]
    assert _referenced_images(rv_seg) == {str(c.SOPInstanceUID) for c in mine}
    assert {str(c.SourceImageSequence[0].ReferencedSOPInstanceUID) for c in mine} == \
        {ref.sop_instance_uid for ref in segmentation.volume.frames[4]}
    assert all(str(c.SeriesDescription).startswith("RV ES copy of ") for c in mine)
    assert int(mine[0].SeriesNumber) == 9303
    # its frames re-measure to the RV ESV reported
    voxels = int(np.count_nonzero(rv_seg.pixel_array))  # one segment: every frame is the RV
    assert voxels * segmentation.volume.voxel_volume_ml == pytest.approx(cine.summary["rv_esv_ml"], abs=0.01)
    masks = segment_masks(segmentation, segment_plan(segmentation, [2]))
    assert int(masks.sum()) == voxels

    # the SR's RV ES group is that SEG's segment, outlined on the RV ES copy, named with both phases
    sr = next(o for o in objects if o.Modality == "SR" and str(o.SOPClassUID) == MEASUREMENT_SR)
    rv_es = [g for g in groups(sr) if identifier_of(g).startswith("RV blood pool ES")]
    assert rv_es and all("(phase 5 of 5, not LV's 4)" in identifier_of(g) for g in rv_es)
    referenced = [item for g in rv_es for item in g.ContentSequence if item.ValueType == "IMAGE"
                  and "ReferencedSegmentNumber" in item.ReferencedSOPSequence[0]]
    assert [str(i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) for i in referenced] == \
        [str(rv_seg.SOPInstanceUID)]
    drawn = {str(ref.ReferencedSOPInstanceUID) for g in rv_es for item in g.ContentSequence
             if item.ValueType == "SCOORD" for sub in item.ContentSequence for ref in sub.ReferencedSOPSequence}
    assert drawn and drawn <= {str(c.SOPInstanceUID) for c in mine}
    assert ("RVESPHASE", "99DICOMNODE") == nums(rv_es[0])[0][0] and nums(rv_es[0])[0][1] == 5
    # the PDF says where the RV is outlined
    rows = {q: v for q, v, _ in key_number_table(results[1:2], (2.0, "mosteller"), "M")}
    assert rows["ED / ES phase"].endswith(
        "; RV EDV / ESV read at phases 1 / 5 (RV's own; outlined in SEG 'RV ES'; images below at the LV's phases)")


def test_where_the_rv_is_read_at_the_lvs_phases_nothing_changes():
    results, objects = _objects(rv_es_moved=False)
    moved_back = rv_at_own_phases(make_study(slices=3, cine_phases=5)[1], rv_ed=0, rv_es=3)
    assert moved_back.segmentations[0].phases == results[1].segmentations[0].phases == [0, 3]
    assert moved_back.segmentations[0].phase_names == PHASE_NAMES
    segs = [o for o in objects if o.Modality == "SEG"]
    copies = _by_series(objects, "MR")
    assert len(segs) == 2 and len(copies) == 2
    assert [[str(s.SegmentLabel) for s in seg.SegmentSequence] for seg in segs] == [
        ["LV blood pool ED", "LV myocardium ED", "RV blood pool ED"],
        ["LV blood pool ES", "LV myocardium ES", "RV blood pool ES"]]
    assert sorted(str(c[0].SeriesDescription)[:8] for c in copies.values()) == ["ED copy ", "ES copy "]
    sr = next(o for o in objects if o.Modality == "SR" and str(o.SOPClassUID) == MEASUREMENT_SR)
    assert not any("not LV's" in identifier_of(g) for g in groups(sr))
    rows = {q: v for q, v, _ in key_number_table(results[1:2], (2.0, "mosteller"), "M")}
    assert "RV" not in rows["ED / ES phase"]


def test_a_summary_reading_the_rv_at_a_phase_the_segmentation_lacks_is_refused_by_the_sr():
    """The SR never outlines the RV at the LV's phase beside a volume read at another one; the PDF, which draws its
    figures from the same label maps, says the RV contours are at the LV's phases."""
    study, results, context = make_study(slices=3, cine_phases=5)
    cine = results[1].summary
    cine["timing"] = {"ed_phase": 0, "es_phase": 3, "rv_ed_phase": 0, "rv_es_phase": 4}
    with pytest.raises(ValueError, match="RV ESV was read at phase index 4, which the cine segmentation"):
        build_sr(study.series[0].instances[0].dataset, results[:2], segs_of(results, context), context, 9100)
    rows = {q: v for q, v, _ in key_number_table(results[1:2], (2.0, "mosteller"), "M")}
    assert rows["ED / ES phase"].endswith(f"; RV EDV / ESV read at phases 1 / 5 ({RV_OUTLINE_AT_LV_PHASE})")


def test_an_rv_not_segmented_at_its_own_phase_keeps_its_group_as_an_absent_finding():
    """An RV ESV of 0 mL read at a phase where the RV segmentation vanished: that phase's map holds nothing, so the RV
    ES group is the absent finding on the LV myocardium at the LV's ES, still stating RV ESV and its phase."""
    study, results, context = make_study(slices=3, cine_phases=5)
    cine = rv_es_at_next_phase(results)
    cine.segmentations[0].labelmap[2][:] = Label.BACKGROUND
    cine.summary.update(rv_esv_ml=0.0)
    sr = build_sr(study.series[0].instances[0].dataset, results[:2], segs_of(results, context), context, 9100)
    (rv_es,) = [g for g in groups(sr) if identifier_of(g).startswith("RV blood pool ES") and nums(g)]
    assert identifier_of(rv_es) == "RV blood pool ES (phase 5 of 5, not LV's 4) (none found)"
    assert [c for c, *_ in nums(rv_es)][:1] == [("RVESPHASE", "99DICOMNODE")]


@pytest.mark.peers
def test_the_rv_es_seg_its_copy_and_the_sr_pass_dciodvfy_and_pixelmed(tmp_path):
    _, objects = _objects(rv_es_moved=True)
    rv_seg = [o for o in objects if o.Modality == "SEG"][2]
    copy = next(o for o in objects if o.Modality == "MR" and str(o.SeriesDescription).startswith("RV ES copy"))
    sr = next(o for o in objects if o.Modality == "SR" and str(o.SOPClassUID) == MEASUREMENT_SR)
    assert_valid(write(rv_seg, tmp_path / "rv_es_seg.dcm"), "DicomInstanceValidator")
    assert_valid(write(copy, tmp_path / "rv_es_copy.dcm"), "DicomInstanceValidator")
    assert_valid(write(sr, tmp_path / "sr.dcm"), "DicomSRValidator")
