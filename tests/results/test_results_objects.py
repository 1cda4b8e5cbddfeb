"""All result objects of one study: one object that cannot be built is declined by name, the others are still
written; an Enhanced MR stack with per-frame geometry (Philips) beside a classic one gets every result."""
from __future__ import annotations

from dataclasses import replace

import pytest

from dicomnode.analysis.run import Analyser
from dicomnode.config import Config
from dicomnode.results import objects as result_objects
from dicomnode.results.objects import build_result_objects
from dicomnode.types import Declined
from synthetic import GivenPipeline, algorithm, as_enhanced_mr, make_study


def _failing_for(pipeline: str, real_build_seg):
    def build_seg(segmentation, *args, **kwargs):
        if segmentation.pipeline == pipeline:
            raise RuntimeError("the SEG writer refused it")
        return real_build_seg(segmentation, *args, **kwargs)
    return build_seg


def _referenced_series(seg) -> set[str]:
    return {str(item.SeriesInstanceUID) for item in seg.ReferencedSeriesSequence}


def test_a_seg_that_cannot_be_built_leaves_the_other_results_and_is_declined(monkeypatch):
    study, results, context = make_study(slices=3, cine_phases=5)
    monkeypatch.setattr(result_objects, "build_seg", _failing_for("cine", result_objects.build_seg))
    failures: list[Declined] = []
    objects = build_result_objects(study, results, context, failures=failures)
    lge_series, cine_series = results[0].segmentations[0].series, results[1].segmentations[0].series
    segs = [o for o in objects if o.Modality == "SEG"]
    assert len(segs) == 1 and _referenced_series(segs[0]) == {lge_series.series_instance_uids[0]}
    assert not [o for o in objects if o.Modality == "MR"]  # no display copy of the cine without its SEG
    assert len([o for o in objects if o.Modality == "SR"]) == 2  # measurements and suggestions
    assert [o for o in objects if o.Modality == "DOC"]  # the PDF
    assert failures == [Declined(cine_series.series_instance_uids[0],
                                 "cine SEG of series 5 'cine SAX' not written: RuntimeError: the SEG writer "
                                 "refused it")]


def test_a_measurement_sr_that_cannot_be_built_leaves_the_segs_and_the_report(monkeypatch):
    study, results, context = make_study(slices=3, cine_phases=5)

    def build_sr(*args, **kwargs):
        raise ValueError("no")

    monkeypatch.setattr(result_objects, "build_sr", build_sr)
    failures: list[Declined] = []
    objects = build_result_objects(study, results, context, failures=failures)
    assert len([o for o in objects if o.Modality == "SEG"]) == 3  # LGE, cine ED and ES
    assert [o.Modality for o in objects if o.Modality in ("SR", "DOC")] == ["SR", "DOC"]  # suggestions SR, PDF
    assert failures == [Declined(None, "measurement SR (TID 1500) not written: ValueError: no")]


def test_the_analyser_sends_the_other_results_and_names_the_failure(monkeypatch):
    study, results, context = make_study(slices=3, cine_phases=5)
    study.declined, study.excluded_instances, study.summary_series = [], [], lambda: []
    monkeypatch.setattr(result_objects, "build_seg", _failing_for("lge", result_objects.build_seg))
    analyser = Analyser(Config())
    for result in results[:2]:
        analyser._pipelines[result.name] = GivenPipeline(result)
    outcome = analyser.analyse(study, ["lge", "cine"], started_at=context.started_at)
    lge_uid = results[0].segmentations[0].series.series_instance_uids[0]
    segs = [o for o in outcome.datasets if o.Modality == "SEG"]
    assert len(segs) == 2 and all(lge_uid not in _referenced_series(seg) for seg in segs)  # cine ED and ES
    assert [o for o in outcome.datasets if o.Modality == "SR"] and outcome.summary["lge"]
    reason = "lge SEG of series 7 'PSIR LGE SAX' not written: RuntimeError: the SEG writer refused it"
    assert {"series_instance_uid": lge_uid, "reason": reason} in outcome.summary["declined"]
    assert outcome.errors == [reason]  # the node's fault: `process` exits 1, the rest is sent


@pytest.mark.parametrize("layout", ["perframe", "orientation_perframe"])
def test_a_per_frame_enhanced_cine_beside_a_classic_lge_gets_every_result(layout):
    study, results, context = make_study(slices=3, cine_phases=5)
    cine = results[1]
    enhanced = as_enhanced_mr(cine.segmentations[0], layout)
    results[1] = replace(cine, segmentations=[enhanced])
    study.series[0] = enhanced.series
    failures: list[Declined] = []
    objects = build_result_objects(study, results, context, failures=failures)
    assert failures == []
    source = enhanced.series.instances[0].dataset
    segs = [o for o in objects if o.Modality == "SEG"]
    cine_segs = [s for s in segs if _referenced_series(s) == {str(source.SeriesInstanceUID)}]
    assert len(segs) == 3 and len(cine_segs) == 2  # LGE; cine ED and ES on the multi-frame original
    assert not [o for o in objects if o.Modality == "MR"]  # a multi-frame source is not copied (display_copy.py)
    for seg, phase_index in zip(cine_segs, enhanced.phases):
        frames = {ref.frame_number for ref in enhanced.volume.frames[phase_index]}
        referenced = {int(item.ReferencedFrameNumber) for frame in seg.PerFrameFunctionalGroupsSequence
                      for item in frame.DerivationImageSequence[0].SourceImageSequence}
        assert referenced and referenced <= frames
    assert [o.Modality for o in objects if o.Modality in ("SR", "DOC")] == ["SR", "SR", "DOC"]


def test_a_study_whose_recognised_series_were_all_declined_gets_a_report_saying_why():
    """A cine of two mid-cycle phases, declined, and no LGE: nothing was sent, so the reader waiting in the viewer
    never learnt why there were no results. The node's analysis now sends a PDF whose page 1 says what was not
    measured and on which series, crediting the model whose segmentation the decline rests on (else the node's
    own software); a study with no recognised series, a pipeline failure or a re-analysis still gets nothing."""
    import shutil
    import subprocess

    from dicomnode.analysis.pipeline import PipelineResult
    from dicomnode.results.report import not_analysed_rows, not_measured_rows
    study, results, context = make_study(slices=3, cine_phases=5)
    study.declined, study.excluded_instances, study.summary_series = [], [], lambda: []
    cine_series = results[1].segmentations[0].series
    cine_uid = cine_series.series_instance_uids[0]
    model = results[1].algorithms[0]
    reason = ("cine LV/RV function not measured: the 2 phases sent of the 20 of the cycle at TriggerTime 133 ms, "
              "475 ms are not shown to be end diastole and end systole")
    cine = PipelineResult(name="cine", summary=None, declined=[Declined(cine_uid, reason)], algorithms=[model])
    no_lge = PipelineResult(name="lge", summary=None, declined=[Declined(None, "no LGE short-axis stack in the study")])

    def analysed(*given, supersedes=None):
        analyser = Analyser(Config())
        for result in given:
            analyser._pipelines[result.name] = GivenPipeline(result)
        return analyser.analyse(study, [r.name for r in given], started_at=context.started_at, supersedes=supersedes)

    outcome = analysed(no_lge, cine)
    (document,) = outcome.datasets
    assert document.Modality == "DOC" and document.StudyInstanceUID == study.study_instance_uid
    assert [e.ManufacturerModelName for e in document.ContributingEquipmentSequence][-1] == model.name
    assert not outcome.errors and {"series_instance_uid": cine_uid, "reason": reason} in outcome.summary["declined"]
    # design.md: an absent analysis is an absent key, not a decline naming no series
    assert "lge" not in outcome.summary and all(d["series_instance_uid"] for d in outcome.summary["declined"])
    assert outcome.summary["not_analysed"] == [{"analysis": "lge", "reason": "no LGE short-axis stack in the study"}]
    (row,) = not_measured_rows([no_lge, cine], {cine_uid: 'series 5 "cine SAX"'})
    assert row == ("Cine: not measured", reason, 'series 5 "cine SAX"')
    if shutil.which("pdftotext"):
        page_1 = subprocess.run(["pdftotext", "-f", "1", "-l", "1", "-", "-"], input=document.EncapsulatedDocument,
                                capture_output=True, check=True).stdout.decode()
        assert "Cine: not measured" in page_1 and "not shown to be end diastole" in " ".join(page_1.split())
    # without a model behind the decline the node's own software is credited
    untried = PipelineResult(name="cine", summary=None, declined=[Declined(cine_uid, "cine short-axis series is not "
                                                                                       "a usable stack: …")])
    (document,) = build_result_objects(study, [untried], context)
    assert [e.ManufacturerModelName for e in document.ContributingEquipmentSequence][-1] == "dicomnode"
    # a study holding an LGE or cine series that no analysis could use (one LGE slice, no short-axis stack) gets the
    # report too, page 1 naming the study-level decline (break43d: nothing at all read like "not run / node down")
    (document,) = analysed(no_lge).datasets
    assert document.Modality == "DOC"
    assert not_analysed_rows([no_lge]) == [("LGE: not measured", "no LGE short-axis stack in the study", "")]
    # nothing without a recognised LGE or cine series, when a pipeline failed, or where earlier results would stand
    # beside it
    kept, study.series = study.series, [s for s in study.series
                                        if getattr(s.sequence, "value", s.sequence) not in ("lge", "cine")]
    assert analysed(no_lge).datasets == []
    study.series = kept
    failing = PipelineResult(name="lge", summary=None, declined=[Declined(None, "lge: analysis failed: boom")])

    class Failing(GivenPipeline):
        def run(self, study, context):
            raise RuntimeError("boom")

    analyser = Analyser(Config())
    analyser._pipelines["lge"], analyser._pipelines["cine"] = Failing(failing), GivenPipeline(cine)
    assert analyser.analyse(study, ["lge", "cine"], started_at=context.started_at).datasets == []
    earlier = [{"sop_instance_uid": "1.2.3", "series_instance_uid": "1.2.4", "study_instance_uid": "1.2.5"}]
    assert analysed(no_lge, cine, supersedes=earlier).datasets == []


def test_every_model_that_decided_the_lge_result_is_in_contributing_equipment():
    """IHE AIR (cmr-reference): the LGE localiser chooses the crop the ensemble segments (a failed localisation
    withholds the numbers), so it is credited beside the ensemble in the SEG, the SR and the PDF."""
    study, results, context = make_study(slices=3, cine_phases=5)
    lge = results[0]
    localiser = replace(algorithm("lge-localiser"), device_uid="2.25.4242")
    segmentation = replace(lge.segmentations[0], contributing=(localiser,))
    results[0] = replace(lge, segmentations=[segmentation], algorithms=[segmentation.algorithm, localiser])
    objects = build_result_objects(study, results[:1], context)

    def credited(dataset) -> list[str]:
        return [item.DeviceUID for item in dataset.ContributingEquipmentSequence if "DeviceUID" in item]

    by_modality = {o.Modality: o for o in objects}
    assert set(by_modality) >= {"SEG", "SR", "DOC"}
    for dataset in by_modality.values():
        assert {segmentation.algorithm.device_uid, localiser.device_uid} <= set(credited(dataset)), dataset.Modality
