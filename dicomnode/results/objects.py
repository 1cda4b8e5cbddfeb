"""All result objects of one study in one call: SEGs, the TID 1500 SR, the suggestions SR, PDF and SC."""
from __future__ import annotations

import copy
import datetime as dt
import logging
import re
from collections.abc import Sequence

from pydicom.dataset import Dataset

from dicomnode.results.display_copy import (display_copies, needs_display_copies, shared_frame_of_reference,
                                            viewer_order)
from dicomnode.results.headers import carry_identity, derivable_header, fit_character_set
from dicomnode.analysis.phase_text import series_name
from dicomnode.results.provenance import NODE_MARK, UNVERIFIED_MARK, node_algorithm, utc_offset
from dicomnode.results.report import build_pdf_document, build_secondary_capture, render_report
from dicomnode.results.seg import SegNotExpressible, build_seg, seg_parts
from dicomnode.results.sr import bsa_for, build_sr, build_suggestions_sr
from dicomnode.types import AnalysisContext, Declined, PipelineResult

log = logging.getLogger("dicomnode.results")

#: series numbers of the result series (high, so they sort after the acquisitions)
SEG_SERIES_BASE = 9001
SR_SERIES = 9100
SUGGESTIONS_SR_SERIES = 9101
PDF_SERIES = 9200
SC_SERIES = 9201
#: copies of the analysed frames of a phase whose source series also holds other images (results/display_copy.py)
COPY_SERIES_BASE = 9301
#: the step between the Series Times of the result series of one analysis (order_for_viewers)
SERIES_TIME_STEP = dt.timedelta(milliseconds=1)


def _study_header(study, results: list[PipelineResult] = ()) -> Dataset:
    """Patient/study attributes for every result object, taken from an image that was analysed (the SR lists this
    header in its evidence, which must name only analysed images): the first segmented frame's instance; without a
    segmentation, the first instance of the study. This one identity goes on every object of the analysis, the SEGs
    and display copies too (headers.carry_identity), whatever their own source slices say."""
    for result in results:
        for segmentation in result.segmentations:
            ref = segmentation.volume.frames[segmentation.phases[0]][0]
            for instance in segmentation.series.instances:
                if str(instance.sop_instance_uid) == str(ref.sop_instance_uid):
                    return derivable_header(_with_values_used(instance.dataset, study))
    for series in study.series:
        if series.instances:
            return derivable_header(_with_values_used(study.first_dataset(series), study))
    raise ValueError(f"study {study.study_instance_uid} has no instance to take patient/study attributes from")


def _with_values_used(dataset: Dataset, study) -> Dataset:
    """`dataset`, or where the study's instances disagree on the patient's size, weight, age or sex a copy holding
    the values the analysis used (cmr.study.study_patient: those received last), so that the result objects state
    the values their numbers were computed with."""
    used = getattr(getattr(study, "patient", None), "values_used", None) or {}
    if not used:
        return dataset
    copied = copy.deepcopy(dataset)  # a header: no pixel data
    for keyword, value in used.items():
        setattr(copied, keyword, value)
    return copied


def _parts_in_viewer_order(segmentation, parts, sources: dict[str, Dataset]) -> list:
    """The SEG parts of a segmentation, phase by phase (ED before ES), and within a phase in the order a viewer
    lists their images (source Series Number, then Instance Number): the SEG series are numbered in that order, so
    the SEG of series 21 comes before the SEG of series 33."""
    def first_image(part) -> Dataset:
        refs = [segmentation.volume.frames[segmentation.phases[p]][k] for p in part.phase_positions
                for k in part.slices]
        datasets = [sources[str(ref.sop_instance_uid)] for ref in refs]
        return datasets[viewer_order(datasets)[0]]

    rank = {n: place for place, n in enumerate(viewer_order([first_image(part) for part in parts]))}
    return [parts[n] for n in sorted(range(len(parts)), key=lambda n: (min(parts[n].phase_positions), rank[n]))]


def order_for_viewers(measurement_sr: Dataset | None, segs: list[Dataset], others: list[Dataset],
                      copies: list[list[Dataset]], started_at: dt.datetime) -> None:
    """Series Date/Time of every result series of one analysis: distinct, and increasing with the Series Number.

    A viewer that orders series by Series Date and Time (OHIF v3's default series sort, `seriesInfoSortingCriteria`
    / `compareSeriesDateTime`, newest first, ties broken at random by Series Instance UID) or by Series Number lists
    them in one and the same order, never SEG 9005, 9009, 9001 as when the later series were given the earlier
    times (break48b #7): the analysis start plus SERIES_TIME_STEP per place in Series Number order, the SEGs (stack
    order), the measurement SR, the suggestions SR, the PDF, the SC, then the display copies. The node's own objects
    (not the copies, whose content is the scanner's) get the same Content Date/Time. Each is written in the UTC
    offset the object declares (TimezoneOffsetFromUTC; a display copy keeps its source's), which becomes
    `started_at`'s where the object declares none (PS3.3 C.12.1.1.8).
    """
    ranked: list[tuple[list[Dataset], bool]] = [([measurement_sr], True)] if measurement_sr is not None else []
    ranked += [([seg], True) for seg in segs] + [([other], True) for other in others]
    ranked += [(series, False) for series in copies if series]
    ranked.sort(key=lambda entry: int(entry[0][0].SeriesNumber))
    for place, (datasets, own_content) in enumerate(ranked):
        for dataset in datasets:
            at = started_at + SERIES_TIME_STEP * place
            # written in the offset the object declares (a display copy keeps its source's), else declaring `at`'s
            offset = utc_offset(dataset.get("TimezoneOffsetFromUTC"))
            if offset is not None and at.utcoffset() is not None:
                at = at.astimezone(offset)
            elif at.utcoffset() is not None:
                dataset.TimezoneOffsetFromUTC = at.strftime("%z")
            dataset.SeriesDate, dataset.SeriesTime = at.strftime("%Y%m%d"), at.strftime("%H%M%S.%f")
            if own_content:
                dataset.ContentDate, dataset.ContentTime = dataset.SeriesDate, dataset.SeriesTime


def series_names(study) -> dict[str, str]:
    """{SeriesInstanceUID: 'series 5 "cine SAX"'} of every analysis series of the study (phase_text.series_name), so
    the report names a declined series as a viewer lists it; {} where the study has none."""
    names = {}
    for series in getattr(study, "series", None) or ():
        uids = getattr(series, "series_instance_uids", None) or [getattr(series, "series_instance_uid", None)]
        for uid in uids:
            if uid:
                names[str(uid)] = series_name(series)
    return names


def not_measured(results) -> list[Declined]:
    """The pipelines' declines that name a series (a recognised series the analysis declined, with the reason), as
    opposed to a study without such a series ("no LGE short-axis stack in the study")."""
    return [d for r in results for d in r.declined if d.series_instance_uid]


#: the sequences the node analyses (summary series[].sequence): a study holding a series of one, with every analysis
#: declined, gets a report saying why (declined_study_report)
ANALYSED_SEQUENCES = ("lge", "cine")


def declined_study_report(study, results) -> bool:
    """Whether a study none of whose analyses gave numbers gets the report saying why: a recognised series was
    declined (not_measured), or the study holds a series recognised as LGE or cine (ANALYSED_SEQUENCES) that no
    analysis could use (one LGE slice, no short-axis stack), so the reader waiting in the viewer learns that the AI
    analysis was not performed and why, not nothing (break43d). A study without such a series (no cardiac MR the
    node analyses) gets nothing."""
    if not_measured(results):
        return True
    for series in getattr(study, "series", None) or ():
        sequence = getattr(series, "sequence", None)
        if getattr(sequence, "value", sequence) in ANALYSED_SEQUENCES:
            return True
    return False


def build_result_objects(
    study,
    results: list[PipelineResult],
    context: AnalysisContext,
    supersedes: list[dict] | None = None,
    secondary_capture: bool = False,
    failures: list[Declined] | None = None,
    declines: list[Declined] | None = None,
    not_measured: Sequence[Declined] = (),
) -> list[Dataset]:
    """Every result object for one study, in the source study, new series and new UIDs on every call.

    `study` is duck-typed on CMRStudy: `study_instance_uid`, `series` (with `.instances[i].dataset`) and
    `first_dataset(series)`. `supersedes`: earlier SRs this analysis replaces, as dicts with sop_instance_uid,
    series_instance_uid, study_instance_uid (and optionally sop_class_uid); they go into the SR's Predecessor
    Documents Sequence. Order of the list: SEGs (one per phase and source series, in the order a viewer lists their
    source images; where the images a SEG labels are only part of their source series - other phases, a localizer -
    the display copies of display_copy.py come first, one series per labelled phase, and the SEGs, one per phase,
    and the SR's outlines reference the copies), SR (TID 1500), the text-only SR of the report-text suggestions, PDF,
    SC. Their Series Date/Time put them in that order in a viewer (order_for_viewers). Each object's Specific
    Character Set can write all of its text (headers.fit_character_set: ISO_IR 192 where the source's cannot).

    One object that cannot be built does not take the others with it: the SEGs (and display copies) of a
    segmentation are left out together (the SR then names no SEG of it), the SR, the suggestions SR, the PDF or the
    SC alone; each such failure is appended to `failures` as a Declined naming the source series (None for a
    study-level object) and the reason, and logged. A SEG the input cannot be expressed in (seg.SegNotExpressible:
    the source images mix forms, a frame has no functional groups) is no failure: it goes into `declines` with the
    reason in words. A pipeline whose SEG is not written keeps its measurements in the SR (outlines on the analysed
    images, a comment saying that the SEG was not written). A study header that cannot be found still raises.
    `not_measured`: series recognised but never measured by this version (T1 / T2 maps, perfusion:
    analysis.phase_text.maps_not_measured), listed in the PDF's "Declined / not analysed" and in the SR's comments as
    summary.json `declined` lists them, named in one row of PDF page 1 ("Not analysed") and counted in a NUM OHIF
    shows (sr.NOT_ANALYSED), so a reader in the viewer tells 'not measured' from 'not found'.
    """
    failures = failures if failures is not None else []
    declined_segs = declines if declines is not None else []

    def failed(series_instance_uid: str | None, what: str, error: Exception) -> None:
        log.exception("%s could not be built", what)
        failures.append(Declined(series_instance_uid, f"{what} not written: {type(error).__name__}: {error}"))

    seg_missing: dict[str, str] = {}  # SegmentationResult.key -> why its SEG was not written (the SR says so)

    header = _study_header(study, results)
    if str(header.StudyInstanceUID) != str(study.study_instance_uid):
        raise ValueError("the study's first dataset belongs to another StudyInstanceUID")
    objects: list[Dataset] = []
    segs: dict[str, list] = {}  # SegmentationResult.key -> [(SegPart, SEG)]
    shown: dict[str, object] = {}  # SegmentationResult.key -> the segmentation on the images its SEGs reference
    all_segs: list[Dataset] = []
    copy_series_list: list[list[Dataset]] = []
    series_number, copy_series = SEG_SERIES_BASE, COPY_SERIES_BASE
    for result in results:
        for segmentation in result.segmentations:
            if segmentation.key in segs:
                raise ValueError(f"two segmentations named {segmentation.key}: one pipeline segmented a series twice")
            try:
                copies_made, target, built = _segs_of(study, segmentation, context, series_number, copy_series)
            except Exception as error:  # noqa: BLE001 - the other pipelines' results are still sent
                series = segmentation.series
                number = series.series_number_text() if hasattr(series, "series_number_text") else series.series_number
                what = f"{segmentation.pipeline} SEG of series {number} '{series.description}'"
                if isinstance(error, SegNotExpressible):  # a refusal in words, not an analysis failure
                    log.warning("%s not written: %s", what, error)
                    declined_segs.append(Declined(
                        series.series_instance_uids[0] if series.series_instance_uids else None,
                        f"{what} not written: {error}"))
                else:
                    failed(series.series_instance_uids[0] if series.series_instance_uids else None, what, error)
                seg_missing[segmentation.key] = str(error) if isinstance(error, SegNotExpressible) else \
                    f"{type(error).__name__}: {error}"
                continue
            objects += [copy for copies in copies_made for copy in copies]
            copy_series_list += copies_made
            copy_series += len(copies_made)
            shown[segmentation.key] = target
            segs[segmentation.key] = built
            objects += [seg for _, seg in built]
            all_segs += [seg for _, seg in built]
            series_number += len(built)
    sr = None
    try:
        sr = build_sr(header, results, segs, context, SR_SERIES, supersedes=supersedes, shown=shown,
                      seg_missing=seg_missing, not_measured=[d.reason for d in not_measured])
    except Exception as error:  # noqa: BLE001
        failed(None, "measurement SR (TID 1500)", error)
    if sr is not None:
        objects.append(sr)
    others: list[Dataset] = []
    suggestions = next((r for r in results if r.name == "suggestions"), None)
    if suggestions is not None:  # a text-only SR of its own, shown as text by viewers (docs/conformance.md)
        suggestions_sr = None
        try:
            suggestions_sr = build_suggestions_sr(header, suggestions, context, SUGGESTIONS_SR_SERIES)
        except Exception as error:  # noqa: BLE001
            failed(None, "report text suggestions SR", error)
        if suggestions_sr is not None:
            objects.append(suggestions_sr)
            others.append(suggestions_sr)
    algorithms = [a for r in results for a in r.algorithms]
    algorithms += [s.algorithm for r in results for s in r.segmentations]
    config = context.config
    want_pdf = config.analysis.report_pdf
    want_sc = secondary_capture or config.analysis.secondary_capture
    if not algorithms and declined_study_report(study, results):
        # every recognised series declined (a cine that is not ED and ES, an unusable stack): the report says what
        # was not measured and why, so the reader waiting for results in the viewer learns it there
        algorithms = [node_algorithm()]
    if algorithms and (want_pdf or want_sc):
        cine = next((r for r in results if r.name == "cine" and r.summary), None)
        bsa = bsa_for(cine, header, config.analysis.cine.bsa_formula) if cine is not None else None
        declined = list(getattr(study, "declined", [])) + [d for r in results for d in r.declined] + failures \
            + declined_segs + list(not_measured)
        try:
            pdf_bytes, png_bytes = render_report(header, results, context, bsa=bsa, declined=declined,
                                                 series_names=series_names(study), supersedes=supersedes,
                                                 not_analysed=[d.reason for d in not_measured])
        except Exception as error:  # noqa: BLE001
            failed(None, "visual report (PDF / SC)", error)
            want_pdf = want_sc = False
        if want_pdf:
            try:
                objects.append(build_pdf_document(pdf_bytes, header, context, algorithms, PDF_SERIES,
                                                  source_instances=list(objects)))
                others.append(objects[-1])
            except Exception as error:  # noqa: BLE001
                failed(None, "visual report PDF", error)
        if want_sc:
            try:
                objects.append(build_secondary_capture(png_bytes, header, context, algorithms, SC_SERIES))
                others.append(objects[-1])
            except Exception as error:  # noqa: BLE001
                failed(None, "visual report secondary capture", error)
    order_for_viewers(sr, all_segs, others, copy_series_list, context.started_at)
    if supersedes:
        mark_reanalysis(objects, len(supersedes) + 1,
                        {int(series[0].SeriesNumber) for series in copy_series_list if series})
    for dataset in objects:
        carry_identity(dataset, header)  # one patient and study identity on every object, the SR's
        fit_character_set(dataset)  # the node's text (comments, descriptions) never written as "?" (F7)
    return objects


#: the step between the series numbers of successive analyses of one study: analysis n (a re-analysis superseding
#: n - 1 earlier ones) numbers its series from SEG_SERIES_BASE + (n - 1) * REANALYSIS_SERIES_STEP on
REANALYSIS_SERIES_STEP = 1000


def reanalysis_description(description: str, analysis: int) -> str:
    """`description` marked as analysis number `analysis` of its study (> 1: it replaces analysis `analysis` - 1),
    the mark first where a viewer's series list cuts the text (OHIF v3: about 22 characters), then what the series
    is, so that the SEGs of a stack sent one series per slice still differ there: "AI unverified LGE S:25 SEG
    (dicomnode)" becomes "AI run 2 LGE S:25 SEG unverified, replaces run 1 (dicomnode)", "REVIEW ONLY AI
    unverified ..." (a flag before the AI mark: provenance.ai_series_description) "REVIEW ONLY AI run 2 ...", and a
    display copy's "ED copy of CINE_SSFP_SAX for AI SEG" "Run 2 ED copy of CINE_SSFP_SAX for AI SEG". Within the 64
    characters of LO: the node's name goes first, then "replaces run n", then the last words of what the series is,
    never the flag, the run or "unverified"."""
    found = re.match(rf"^(?P<flag>.*?){re.escape(UNVERIFIED_MARK)} (?P<what>.*?)(?:{re.escape(NODE_MARK)})?$",
                     description)
    if found is None:  # a display copy, named after its source series
        return f"Run {analysis} {description}"[:64]
    head = f"{found.group('flag')}AI run {analysis} "
    what = found.group("what")
    tails = [f" unverified, replaces run {analysis - 1}{NODE_MARK}", f" unverified, replaces run {analysis - 1}",
             " unverified"]
    for tail in tails:
        if len(head + what + tail) <= 64:
            return head + what + tail
    if len(head + what + tails[-1]) > 64:  # the SEG's source series said short, as build_seg falls back to
        what = re.sub(r", series (\d+)", r" S:\1", what)
    while len(head + what + tails[-1]) > 64 and " " in what.strip():
        what = what.rstrip().rsplit(" ", 1)[0].rstrip(" ,;:")
    return head + what[:max(0, 64 - len(head + tails[-1]))] + tails[-1]


def mark_reanalysis(objects: list[Dataset], analysis: int, copies: set[int] = frozenset()) -> None:
    """Make analysis number `analysis` (> 1: it supersedes earlier analyses of the study) visible where a viewer
    shows it, as OHIF ignores the SR's Predecessor Documents Sequence and an earlier SEG or PDF carries no mark:
    every series (display copies included) numbered REANALYSIS_SERIES_STEP * (analysis - 1) above the first
    analysis's, and its Series Description begun with "AI run <analysis>" ("Run <analysis>" for a display copy) and
    saying which run it replaces (reanalysis_description). New series and new UIDs as always: the earlier results
    stay (a re-analysis supersedes, it never overwrites). `copies`: the series numbers of the display-copy series
    among `objects`, which a SEG's description names ("S:9301") and so renumbered there too."""
    if analysis < 2:
        return
    step = REANALYSIS_SERIES_STEP * (analysis - 1)

    def renumbered(found: re.Match) -> str:
        number = int(found.group(2))
        return f"{found.group(1)}{number + step if number in copies else number}"

    for dataset in objects:
        dataset.SeriesNumber = int(dataset.SeriesNumber) + step
        text = re.sub(r"(series |S:)(\d+)", renumbered, str(dataset.get("SeriesDescription", "")))
        dataset.SeriesDescription = reanalysis_description(text, analysis)


def _segs_of(study, segmentation, context: AnalysisContext, series_number: int, copy_series: int):
    """(display-copy series made, the segmentation on the images its SEGs reference, [(SegPart, SEG)]) of one
    segmentation: SEG series from `series_number` on, copy series from `copy_series` on (build_result_objects).
    All or nothing: an error in any of its SEGs or copies raises, and none of them is sent."""
    sources = [instance.dataset for instance in segmentation.series.instances]
    parts = seg_parts(segmentation)  # one SEG per phase and source series (seg.py says why)
    target = segmentation
    copies_made: list[list[Dataset]] = []
    if needs_display_copies(study, segmentation, parts):
        # one copy series per labelled phase, holding its whole stack; each SEG then references exactly the images
        # of its phase's copy series (OHIF, see display_copy.py)
        frame_of_reference = shared_frame_of_reference(segmentation)
        for position in sorted({p for part in parts for p in part.phase_positions}):
            copies, target = display_copies(target, position, copy_series + len(copies_made), frame_of_reference,
                                            context.started_at)
            sources += copies
            copies_made.append(copies)
        parts = seg_parts(target)
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
    built = []
    for part in _parts_in_viewer_order(target, parts, by_uid):
        built.append((part, build_seg(target, sources, context, series_number + len(built), part)))
    return copies_made, target, built
