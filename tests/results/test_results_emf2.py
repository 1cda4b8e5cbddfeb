"""Result objects, Enhanced MR second round (rebreak-emf findings 2 and 3): a pipeline whose SEG is not written keeps
its measurements in the TID 1500 SR (outlines on the analysed images, a comment saying the SEG was not written); a
source the SEG cannot reference (a frame without its per-frame functional groups) is declined in words, not as a
raw highdicom error; a series of classic images followed by an Enhanced instance gets its SEG."""
from __future__ import annotations

from dataclasses import replace

import pytest

from dicomnode.results import objects as result_objects
from dicomnode.results.objects import build_result_objects
from dicomnode.results.seg import SegNotExpressible, build_seg, frames_without_geometry, seg_parts
from dicomnode.types import Declined
from synthetic import GivenPipeline, as_enhanced_mr, make_study


def _failing_for(pipeline: str, real_build_seg):
    def build(segmentation, *args, **kwargs):
        if segmentation.pipeline == pipeline:
            raise RuntimeError("the SEG writer refused it")
        return real_build_seg(segmentation, *args, **kwargs)
    return build


def _items(node):
    stack = [node]
    while stack:
        item = stack.pop()
        yield item
        stack.extend(item.get("ContentSequence", []))


def _measurement_sr(objects):
    return next(o for o in objects if o.Modality == "SR" and "measurements" in str(o.SeriesDescription))


def test_an_lge_seg_not_written_keeps_the_lge_measurements_in_the_sr(monkeypatch):
    study, results, context = make_study(slices=3, cine_phases=5)
    monkeypatch.setattr(result_objects, "build_seg", _failing_for("lge", result_objects.build_seg))
    failures: list[Declined] = []
    objects = build_result_objects(study, results, context, failures=failures)
    assert len(failures) == 1 and failures[0].reason.startswith("lge SEG")
    items = list(_items(_measurement_sr(objects)))
    texts = [str(i.TextValue) for i in items if i.get("ValueType") == "TEXT"]
    assert any("LGE segmentation (SEG) not written: RuntimeError: the SEG writer refused it" in t for t in texts)
    names = {str(i.ConceptNameCodeSequence[0].CodeMeaning) for i in items if i.get("ValueType") == "NUM"}
    assert any("LGE" in n or "Late" in n for n in names), names  # the %LGE is there
    assert "Volume" in names  # myocardium volume
    lge_series = results[0].segmentations[0].series.series_instance_uids[0]
    image_refs = {str(i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) for i in items
                  if i.get("ValueType") == "IMAGE" and i.get("ReferencedSOPSequence")}
    lge_uids = {inst.sop_instance_uid for inst in results[0].segmentations[0].series.instances}
    assert image_refs & lge_uids and lge_series  # outlines on the LGE images themselves


def test_a_frame_without_per_frame_groups_declines_the_seg_in_words():
    study, results, context = make_study(slices=3, cine_phases=5)
    cine = results[1]
    enhanced = as_enhanced_mr(cine.segmentations[0], "perframe")
    source = enhanced.series.instances[0].dataset
    source.NumberOfFrames = len(source.PerFrameFunctionalGroupsSequence) + 1  # one frame has no item
    assert frames_without_geometry(source) == [int(source.NumberOfFrames)]
    with pytest.raises(SegNotExpressible, match=r"frame \d+ of \d+\).*needs the position of every frame"):
        build_seg(enhanced, [source], context, 9001)
    results[1] = replace(cine, segmentations=[enhanced])
    study.series[0] = enhanced.series
    failures: list[Declined] = []
    declines: list[Declined] = []
    objects = build_result_objects(study, results, context, failures=failures, declines=declines)
    assert failures == []  # not the node's fault
    assert len(declines) == 1 and "cine SEG" in declines[0].reason and "per-frame functional groups" in \
        declines[0].reason
    texts = [str(i.TextValue) for i in _items(_measurement_sr(objects)) if i.get("ValueType") == "TEXT"]
    assert any("cine segmentation (SEG) not written" in t for t in texts)


def test_frames_without_geometry_reads_shared_plane_position():
    study, results, context = make_study(slices=3, cine_phases=5)
    enhanced = as_enhanced_mr(results[1].segmentations[0], "shared")
    source = enhanced.series.instances[0].dataset
    assert frames_without_geometry(source) == []
    del source.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence
    assert frames_without_geometry(source) == [2]


def test_classic_images_followed_by_an_enhanced_instance_in_one_series_get_their_seg():
    """Slices 1-2 classic single-frame images, slice 3 frames of one Enhanced MR instance of the same series: the
    classic images are highdicom's source images, the multi-frame one a further source (it raised AttributeError
    ImageOrientationPatient when listed among the single-frame sources)."""
    from dicomnode.analysis.pipeline import SegmentationResult
    from dicomnode.cmr.types import AnalysisSeries, Volume

    study, results, context = make_study(slices=3, cine_phases=5)
    classic = results[1].segmentations[0]
    enhanced = as_enhanced_mr(classic, "perframe")
    frames = [[classic_ref if k < 2 else enhanced_ref for k, (classic_ref, enhanced_ref) in enumerate(zip(c, e))]
              for c, e in zip(classic.volume.frames, enhanced.volume.frames)]
    used = {ref.sop_instance_uid for row in frames for ref in row}
    instances = [i for i in classic.series.instances if i.sop_instance_uid in used] + enhanced.series.instances
    mixed = SegmentationResult(**{**classic.__dict__,
                                  "series": AnalysisSeries(**{**classic.series.__dict__, "instances": instances}),
                                  "volume": Volume(**{**classic.volume.__dict__, "frames": frames})})
    sources = [i.dataset for i in instances]
    for position in range(len(mixed.phases)):
        part = next(p for p in seg_parts(mixed) if p.phase_positions == (position,))
        seg = build_seg(mixed, sources, context, 9001 + position, part=part)
        referenced = {str(item.ReferencedSOPInstanceUID) for frame in seg.PerFrameFunctionalGroupsSequence
                      for item in frame.DerivationImageSequence[0].SourceImageSequence}
        assert referenced <= used and referenced


def test_a_seg_declined_in_words_is_no_analysis_failure(monkeypatch):
    from dicomnode.analysis.run import Analyser
    from dicomnode.config import Config

    study, results, context = make_study(slices=3, cine_phases=5)
    study.declined, study.excluded_instances, study.summary_series = [], [], lambda: []

    def build(segmentation, *args, **kwargs):
        raise SegNotExpressible("source instance X has 1 frame(s) without their per-frame functional groups")

    monkeypatch.setattr(result_objects, "build_seg", build)
    analyser = Analyser(Config())
    for result in results[:2]:
        analyser._pipelines[result.name] = GivenPipeline(result)
    outcome = analyser.analyse(study, ["lge", "cine"], started_at=context.started_at)
    assert outcome.errors == []  # `process` exits 0: the input's form, said in words
    reasons = [d["reason"] for d in outcome.summary["declined"]]
    assert any(r.startswith("lge SEG") and "without their per-frame functional groups" in r for r in reasons)
    assert [o for o in outcome.datasets if o.Modality == "SR"]
