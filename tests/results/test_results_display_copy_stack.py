"""Each display copy series holds the whole stack of its phase (break41b F4): a slice where the model segmented nothing
at one phase is copied as well, so the ED and ES copies hold the same slice positions under the same Instance Numbers
and the reader scrolling them side by side sees one level in both, the end slices included."""
from __future__ import annotations

import highdicom as hd
import numpy as np
import pytest

from dicomnode.results.display_copy import tilted_sources
from dicomnode.results.objects import build_result_objects
from dicomnode.results.seg import segment_masks, segment_plan
from synthetic import cine_one_series_per_slice, make_study, one_series_per_slice, tilt_slices, write

SLICES = 4


def _referenced_images(seg) -> set[str]:
    return {i.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence for i in s.ReferencedInstanceSequence}


def _frame_positions(seg) -> set[float]:
    """The z (mm) of the SEG's frames (the synthetic stacks are axial)."""
    return {round(float(frame.PlanePositionSequence[0].ImagePositionPatient[2]), 3)
            for frame in seg.PerFrameFunctionalGroupsSequence}


def _copy_series(objects) -> dict[int, list]:
    """Series Number -> the copies of that series in Instance Number order."""
    series: dict[int, list] = {}
    for duplicate in (o for o in objects if o.Modality == "MR"):
        series.setdefault(int(duplicate.SeriesNumber), []).append(duplicate)
    return {number: sorted(copies, key=lambda c: int(c.InstanceNumber)) for number, copies in series.items()}


@pytest.mark.parametrize("layout", ["one series per slice", "one series"])
@pytest.mark.parametrize("empty_slice", [0, SLICES - 1])
def test_ed_and_es_copies_hold_the_same_slices_when_es_is_empty_on_an_end_slice(tmp_path, layout, empty_slice):
    """A cine whose ES segmentation is empty on one end slice (the model found no blood pool there): the ED and ES
    copies both hold all slices, numbered 1..N in the same slice order, the empty slice's ES image among them; the
    ES SEG references exactly its copy series and has no frame on that slice (PS3.3 C.8.20.2: empty frames are
    omitted)."""
    study, results, context = make_study(slices=SLICES, cine_phases=5)
    segmentation = results[1].segmentations[0]
    if layout == "one series per slice":  # Siemens: every slice series holds all phases of its slice
        cine_one_series_per_slice(segmentation, [30 + k for k in range(SLICES)])
    segmentation.labelmap[1, empty_slice] = 0
    objects = build_result_objects(study, results[1:2], context)
    series = _copy_series(objects)
    assert sorted(series) == [9301, 9302]
    ed, es = series[9301], series[9302]
    assert len(ed) == len(es) == SLICES
    assert [int(c.InstanceNumber) for c in ed] == [int(c.InstanceNumber) for c in es] == list(range(1, SLICES + 1))
    assert [list(map(float, c.ImagePositionPatient)) for c in ed] == [list(map(float, c.ImagePositionPatient))
                                                                      for c in es]
    ed_phase, es_phase = segmentation.phases
    sources = {i.sop_instance_uid: i.dataset for i in segmentation.series.instances}
    for copies, phase in ((ed, ed_phase), (es, es_phase)):
        copied = [str(c.SourceImageSequence[0].ReferencedSOPInstanceUID) for c in copies]
        assert sorted(copied) == sorted(ref.sop_instance_uid for ref in segmentation.volume.frames[phase])
        for duplicate, uid in zip(copies, copied):
            assert duplicate.PixelData == sources[uid].PixelData
    empty_z = round(float(segmentation.volume.positions[empty_slice][2]), 3)
    assert empty_z in {round(float(c.ImagePositionPatient[2]), 3) for c in es}
    segs = sorted((o for o in objects if o.Modality == "SEG"), key=lambda s: int(s.SeriesNumber))
    assert len(segs) == 2
    for seg, copies in zip(segs, (ed, es)):
        assert _referenced_images(seg) == {str(c.SOPInstanceUID) for c in copies}  # exactly its copy series
    assert empty_z in _frame_positions(segs[0]) and empty_z not in _frame_positions(segs[1])
    read = hd.seg.segread(write(segs[1], tmp_path / "es.dcm"))
    by_original = {str(c.SourceImageSequence[0].ReferencedSOPInstanceUID): str(c.SOPInstanceUID) for c in es}
    in_volume_order = [by_original[ref.sop_instance_uid] for ref in segmentation.volume.frames[es_phase]]
    pixels = read.get_pixels_by_source_instance(in_volume_order, assert_missing_frames_are_empty=True)
    expected = segment_masks(segmentation, segment_plan(segmentation, (1,)))
    assert not expected[empty_slice].any()
    np.testing.assert_array_equal(pixels, expected)


def test_a_tilted_stack_sent_one_series_per_slice_is_copied_whole():
    """A tilted LGE stack sent as one series per slice, its last slice without any segment (no SEG of its own): the
    copy series placed in the mean plane still holds every slice, the empty one included, numbered 1..N."""
    study, results, context = make_study(slices=SLICES, cine_phases=2)
    segmentation = tilt_slices(results[0].segmentations[0], 1.0)
    one_series_per_slice(segmentation)
    assert tilted_sources(segmentation)
    assert not segmentation.labelmap[0, SLICES - 1].any()
    objects = build_result_objects(study, results[:1], context)
    (copies,) = _copy_series(objects).values()
    assert [int(c.InstanceNumber) for c in copies] == list(range(1, SLICES + 1))
    assert {str(c.SourceImageSequence[0].ReferencedSOPInstanceUID) for c in copies} == {
        ref.sop_instance_uid for ref in segmentation.volume.frames[0]}
    (seg,) = [o for o in objects if o.Modality == "SEG"]
    assert _referenced_images(seg) == {str(c.SOPInstanceUID) for c in copies}
