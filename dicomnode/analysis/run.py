"""Runs the routed pipelines over one understood study and collects summary.json entries and result objects.

This module composes analysis/ (the pipelines) with results/ (the objects they become), so it sits above both in
the layering (scripts/check_layers.py); the pipelines themselves never import results/.
"""
from __future__ import annotations

import datetime as dt
import importlib
import logging
import time
import traceback

from dicomnode.analysis.phase_text import maps_not_measured
from dicomnode.config import Config
from dicomnode.inference import Runtime
from dicomnode.results.headers import copied_control_characters
from dicomnode.results.objects import build_result_objects, declined_study_report
from dicomnode.results.provenance import in_source_offset
from dicomnode.types import AnalysisContext, Declined, PipelineResult, StudyOutcome
from dicomnode.uids import short_hash

log = logging.getLogger("dicomnode.analysis")

#: pipeline name -> (module, class); run in this order (suggestions reads the others' numbers)
PIPELINE_CLASSES = {
    "lge": ("dicomnode.analysis.lge", "LGEPipeline"),
    "cine": ("dicomnode.analysis.cine", "CinePipeline"),
    "suggestions": ("dicomnode.analysis.suggestions", "SuggestionsPipeline"),
}


def _attach_excluded_instances(result: PipelineResult, study) -> None:
    """measurements["excluded_instances"]: the images of the analysed series that were left out (gaps), each
    {"series_instance_uid", "sop_instance_uid", "reason"}, so that the SR and the report can show them."""
    analysed = {uid for s in result.segmentations for uid in s.series.series_instance_uids}
    descriptions = {str(getattr(h.dataset, "SeriesDescription", "") or "") for s in result.segmentations
                    if len(s.series.series_instance_uids) > 1 for h in s.series.instances}
    if not analysed:
        return
    # a stack merged from one-slice series (Siemens style): a left-out slice has its own series of the same name
    result.measurements["excluded_instances"] = [
        e for e in getattr(study, "excluded_instances", [])
        if e["series_instance_uid"] in analysed or e.get("series_description") in descriptions]


#: the pipelines that measure a series of the study (suggestions reads their numbers, no series)
SERIES_PIPELINES = ("lge", "cine")


def absent_inputs(result: PipelineResult) -> bool:
    """Whether a series pipeline (SERIES_PIPELINES) found nothing to analyse in the study: no summary, and every
    decline naming no series (it names the series it declines; one naming none says the study holds no series of
    its kind: "no LGE short-axis stack in the study"). design.md: an absent analysis is an absent key, not a
    decline, so these go to summary.json `not_analysed`, never to `declined`."""
    return result.name in SERIES_PIPELINES and result.summary is None and bool(result.declined) and all(
        d.series_instance_uid is None for d in result.declined)


class Analyser:
    """Holds the pipelines (built once, models warm) and analyses studies with them."""

    def __init__(self, config: Config, runtime: Runtime | None = None):
        self.config = config
        self.runtime = runtime or Runtime(config.inference, storage_dir=config.node.storage_dir)
        self._pipelines: dict[str, object] = {}
        self._unavailable: dict[str, str] = {}

    def pipeline(self, name: str):
        if name in self._pipelines:
            return self._pipelines[name]
        if name in self._unavailable:
            return None
        module_name, class_name = PIPELINE_CLASSES[name]
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
            self._pipelines[name] = cls(self.config, self.runtime)
        except Exception as exc:
            self._unavailable[name] = f"pipeline {name} is unavailable: {exc}"
            log.error("%s", self._unavailable[name])
            return None
        return self._pipelines[name]

    def warm_up(self, names=tuple(PIPELINE_CLASSES)) -> dict[str, str]:
        """Build every pipeline now (loads its models); returns {name: reason} of those that could not load."""
        for name in names:
            self.pipeline(name)
        return dict(self._unavailable)

    def analyse(self, study, pipelines: list[str], started_at: dt.datetime | None = None,
                supersedes: list[dict] | None = None) -> StudyOutcome:
        """Run `pipelines` in order on a CMRStudy; a failing pipeline becomes a `declined` entry, never a crash."""
        # the result objects' times in the study's own UTC offset, which they declare for its copied dates and times
        started_at = in_source_offset(started_at or dt.datetime.now().astimezone(), (
            header.dataset for series in study.series for header in getattr(series, "instances", ())))
        summary: dict = {"study_instance_uid": study.study_instance_uid or None, "series": study.summary_series()}
        declined: list[dict] = [d.summary() for d in study.declined]
        not_analysed: list[dict] = []  # routed analyses the study holds no series for (absent_inputs)
        context = AnalysisContext(config=self.config, runtime=self.runtime, started_at=started_at,
                                  study_summary_so_far=summary)
        results: list[PipelineResult] = []
        all_results: list[PipelineResult] = []
        durations: dict[str, float] = {}
        errors: list[str] = []
        study_tag = short_hash(study.study_instance_uid or "-")
        if not study.series:
            pipelines = []  # nothing usable: the declined entries say why
            if study.study_instance_uid:
                declined.append(Declined(None, "no usable MR series in the study").summary())
        for name in [n for n in PIPELINE_CLASSES if n in pipelines]:
            pipeline = self.pipeline(name)
            if pipeline is None:
                declined.append(Declined(None, self._unavailable[name]).summary())
                errors.append(self._unavailable[name])
                continue
            began = time.perf_counter()
            failed = False
            try:
                result = pipeline.run(study, context)
            except Exception as exc:
                failed = True
                log.error("study %s: pipeline %s failed: %s\n%s", study_tag, name, exc, traceback.format_exc())
                result = PipelineResult(name=name, summary=None,
                                        declined=[Declined(None, f"{name}: analysis failed: {exc}")])
                errors.append(f"{name}: analysis failed: {exc}")
            durations[name] = time.perf_counter() - began
            _attach_excluded_instances(result, study)
            if not failed and absent_inputs(result):
                not_analysed.extend({"analysis": name, "reason": d.reason} for d in result.declined)
            else:
                declined.extend(d.summary() for d in result.declined)
            all_results.append(result)
            if result.summary is not None:
                summary[name] = result.summary
                summary.update(result.summary_extra)
                results.append(result)
                context.earlier_results.append(result)
            log.info("study %s: %s %s in %.2f s", study_tag, name,
                     "done" if result.summary is not None else "declined", durations[name])
        datasets = []
        # T1 / T2 maps and perfusion are recognised, never measured: said per series in summary.json, the PDF and the
        # SR, so 'not supported' reads apart from 'not found'
        # a pipeline may have ranked the repeats again (CMRStudy.load_preferred): the series as they now stand
        summary["series"] = study.summary_series()
        maps = [Declined(uid, reason) for uid, reason in maps_not_measured(study.series)]
        # a study whose recognised series were all declined gets the report saying why
        # (results.objects.declined_study_report), unless a pipeline failed (the node's fault stays a failure to
        # retry) or earlier results exist (a report of nothing must not stand beside the numbers of an earlier
        # analysis it cannot supersede)
        if results or (not errors and not supersedes and declined_study_report(study, all_results)):
            # declined pipelines go along too: their reasons belong in the SR and the visual report; an object that
            # could not be built is declined (the node's fault, so an error too) and the others are still sent
            not_built: list[Declined] = []
            refused: list[Declined] = []  # a SEG the input cannot be expressed in: said, not an error
            datasets = build_result_objects(study, all_results, context, supersedes=supersedes,
                                            secondary_capture=self.config.analysis.secondary_capture,
                                            failures=not_built, declines=refused, not_measured=maps)
            declined.extend(d.summary() for d in refused + not_built)
            errors.extend(d.reason for d in not_built)
            # identifiers the archive matches by, copied with control characters: every object invalid (README)
            copied = copied_control_characters(datasets)
            if copied:
                summary["identifier_warnings"] = copied
        declined.extend(d.summary() for d in maps)
        summary["declined"] = declined
        summary["not_analysed"] = not_analysed
        summary["excluded_instances"] = list(getattr(study, "excluded_instances", []))
        return StudyOutcome(summary=summary, datasets=datasets, durations=durations, errors=errors)
