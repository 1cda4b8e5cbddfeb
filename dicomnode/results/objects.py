"""All result objects of one study in one call: SEGs, the TID 1500 SR, the suggestions SR, PDF and SC."""
from __future__ import annotations

from pydicom.dataset import Dataset

from dicomnode.results.display_copy import display_copies, shared_frame_of_reference, shares_its_series
from dicomnode.results.headers import derivable_header
from dicomnode.results.report import build_pdf_document, build_secondary_capture, render_report
from dicomnode.results.seg import build_seg, seg_parts
from dicomnode.results.sr import bsa_for, build_sr, build_suggestions_sr
from dicomnode.types import AnalysisContext, PipelineResult

#: series numbers of the result series (high, so they sort after the acquisitions)
SEG_SERIES_BASE = 9001
SR_SERIES = 9100
SUGGESTIONS_SR_SERIES = 9101
PDF_SERIES = 9200
SC_SERIES = 9201
#: copies of an analysed stack whose source series also holds other images (results/display_copy.py)
COPY_SERIES_BASE = 9301

def _study_header(study, results: list[PipelineResult] = ()) -> Dataset:
    """Patient/study attributes for every result object, taken from an image that was analysed (the SR lists this
    header in its evidence, which must name only analysed images): the first segmented frame's instance; without a
    segmentation, the first instance of the study."""
    for result in results:
        for segmentation in result.segmentations:
            ref = segmentation.volume.frames[segmentation.phases[0]][0]
            for instance in segmentation.series.instances:
                if str(instance.sop_instance_uid) == str(ref.sop_instance_uid):
                    return derivable_header(instance.dataset)
    for series in study.series:
        if series.instances:
            return derivable_header(study.first_dataset(series))
    raise ValueError(f"study {study.study_instance_uid} has no instance to take patient/study attributes from")


def build_result_objects(
    study,
    results: list[PipelineResult],
    context: AnalysisContext,
    supersedes: list[dict] | None = None,
    secondary_capture: bool = False,
) -> list[Dataset]:
    """Every result object for one study, in the source study, new series and new UIDs on every call.

    `study` is duck-typed on CMRStudy: `study_instance_uid`, `series` (with `.instances[i].dataset`) and
    `first_dataset(series)`. `supersedes`: earlier SRs this analysis replaces, as dicts with sop_instance_uid,
    series_instance_uid, study_instance_uid (and optionally sop_class_uid); they go into the SR's Predecessor
    Documents Sequence. Order of the list: SEGs (one per phase and source series; preceded by the copies
    of display_copy.py where a source series also holds other images), SR (TID 1500),
    the text-only SR of the report-text suggestions, PDF, SC.
    """
    header = _study_header(study, results)
    if str(header.StudyInstanceUID) != str(study.study_instance_uid):
        raise ValueError("the study's first dataset belongs to another StudyInstanceUID")
    objects: list[Dataset] = []
    segs: dict[str, list] = {}  # SegmentationResult.key -> [(SegPart, SEG)]
    series_number, copy_series = SEG_SERIES_BASE, COPY_SERIES_BASE
    for result in results:
        for segmentation in result.segmentations:
            sources = [instance.dataset for instance in segmentation.series.instances]
            if segmentation.key in segs:
                raise ValueError(f"two segmentations named {segmentation.key}: one pipeline segmented a series twice")
            segs[segmentation.key] = []
            separate = shares_its_series(study, segmentation)
            frame_of_reference = shared_frame_of_reference(segmentation) if separate else None
            for part in seg_parts(segmentation):  # one SEG per phase and source series (seg.py says why)
                target, part_sources = segmentation, sources
                if separate:  # the source series also holds e.g. a localizer: the SEG references a copy (OHIF)
                    copies, target = display_copies(segmentation, part, copy_series, frame_of_reference,
                                                     context.started_at)
                    objects += copies
                    part_sources, copy_series = copies, copy_series + 1
                seg = build_seg(target, part_sources, context, series_number, part)
                segs[segmentation.key].append((part, seg))
                objects.append(seg)
                series_number += 1
    sr = build_sr(header, results, segs, context, SR_SERIES, supersedes=supersedes)
    if sr is not None:
        objects.append(sr)
    suggestions = next((r for r in results if r.name == "suggestions"), None)
    if suggestions is not None:  # a text-only SR of its own, shown as text by viewers (docs/conformance.md)
        suggestions_sr = build_suggestions_sr(header, suggestions, context, SUGGESTIONS_SR_SERIES)
        if suggestions_sr is not None:
            objects.append(suggestions_sr)
    algorithms = [a for r in results for a in r.algorithms]
    algorithms += [s.algorithm for r in results for s in r.segmentations]
    config = context.config
    want_pdf = config.analysis.report_pdf
    want_sc = secondary_capture or config.analysis.secondary_capture
    if algorithms and (want_pdf or want_sc):
        cine = next((r for r in results if r.name == "cine" and r.summary), None)
        bsa = bsa_for(cine, header, config.analysis.cine.bsa_formula) if cine is not None else None
        declined = list(getattr(study, "declined", [])) + [d for r in results for d in r.declined]
        pdf_bytes, png_bytes = render_report(header, results, context, bsa=bsa, declined=declined)
        if want_pdf:
            objects.append(build_pdf_document(pdf_bytes, header, context, algorithms, PDF_SERIES,
                                              source_instances=list(objects)))
        if want_sc:
            objects.append(build_secondary_capture(png_bytes, header, context, algorithms, SC_SERIES))
    return objects
