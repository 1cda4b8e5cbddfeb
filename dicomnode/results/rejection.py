"""The IHE IOCM Rejection Note a re-analysis sends to retire the result objects it supersedes.

The node cannot change what a PACS already holds, and a viewer shows an earlier SEG, SR, PDF or SC exactly like a
current one (OHIF ignores the new SR's Predecessor Documents Sequence). IHE RAD TF-1 IOCM (Imaging Object Change
Management) gives the standard way to retire them: a Key Object Selection Document (PS3.3 A.35.4, TID 2010) whose
document title is a rejection reason (CID 7011) and which lists the instances retired. IOCM-aware archives
(DCM4CHEE, Orthanc with its IOCM plugin, most vendor PACS) hide the listed instances from the reading view and keep
them for audit; an archive that knows nothing of IOCM stores the note as one more small key-object series.
"""
from __future__ import annotations

import datetime as dt
from typing import Sequence

import highdicom as hd
from highdicom.sr import CodedConcept
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import (Comprehensive3DSRStorage, ComprehensiveSRStorage, EncapsulatedPDFStorage,
                         EnhancedMRColorImageStorage, EnhancedMRImageStorage, LegacyConvertedEnhancedMRImageStorage,
                         MRImageStorage, SecondaryCaptureImageStorage, SegmentationStorage)

from pydicom.datadict import dictionary_VR, tag_for_keyword

from dicomnode.results.headers import carry_identity, identity_keywords, fit_character_set, repair_value
from dicomnode.results.provenance import NODE_MANUFACTURER, NODE_MODEL_NAME, declare_offset, node_version
from dicomnode.uids import new_uid

#: Key Object Selection Document title (CID 7011 "Rejected for Quality Reasons", DCM 113001). A superseded AI
#: result is of the right patient and study and was correct to send at the time; a later analysis of more or changed
#: images replaces its numbers. IOCM's "quality" rejection says exactly that: the instances are hidden from the
#: reading view but kept, and an administrator can restore them (an audit can still show what was reported when).
#: (113037, DCM, "Rejected for Patient Safety Reasons") is for instances that must never be seen again (wrong
#: patient, a dangerous error) and which many archives delete outright; (113038) "Incorrect Modality Worklist Entry"
#: and (113039) "Data Retention Policy Expired" name other situations.
REJECTED_FOR_QUALITY_REASONS = CodedConcept(value="113001", scheme_designator="DCM",
                                            meaning="Rejected for Quality Reasons")
#: the SOP classes of the node's own result objects that a re-analysis supersedes: SEG, the TID 1500 SR
#: (Comprehensive 3D SR), the suggestions SR (Comprehensive SR), the PDF and the report image.
REJECTED_SOP_CLASSES = frozenset({SegmentationStorage, Comprehensive3DSRStorage, ComprehensiveSRStorage,
                                  EncapsulatedPDFStorage, SecondaryCaptureImageStorage})
#: the classes of the display copies (results.display_copy: a source frame copied into a series of its own that the
#: SEG can reference, DERIVED\SECONDARY, the source's SOP class). Each analysis writes them under new UIDs, and the
#: SEG it supersedes was their only user, so a note lists the superseded analysis's copies where the new analysis
#: writes its own (review46 #9: n re-analyses would otherwise leave n copies of the same series beside the
#: scanner's); where it writes none (no copy needed this time), the earlier copies are left as they are: the note
#: retires results, and a copy still shows the scanner's pixels unchanged.
DISPLAY_COPY_CLASSES = frozenset({MRImageStorage, EnhancedMRImageStorage, EnhancedMRColorImageStorage,
                                  LegacyConvertedEnhancedMRImageStorage})
#: the classes among them that are images: referenced by IMAGE content items (TID 2010), the others by COMPOSITE
_IMAGE_CLASSES = frozenset({SegmentationStorage, SecondaryCaptureImageStorage}) | DISPLAY_COPY_CLASSES
#: the measurement SR's Series Number less that of the first SEG of one analysis (results.objects: SR_SERIES 9100,
#: SEG_SERIES_BASE 9001; the objects module builds on this one, so the offset is said here)
SEG_SERIES_OFFSET = 99


def rejection_description(report_time: str | None, sr_series: int | None = None, pdf_series: int | None = None,
                          analysis: int | None = None, series_range: tuple[int, int] | None = None) -> str:
    """Series Description of the note (LO, at most 64 characters): what a viewer's series list shows of it, which
    results it retires and why, that word first: "Superseded by AI run 2: series 9001-9200 of 2026-12-07 13:45:14".
    `sr_series` / `pdf_series`: the Series Numbers of the superseded analysis's measurement SR and PDF (its SEGs are
    numbered from `sr_series` - (SR_SERIES - SEG_SERIES_BASE), results.objects); `analysis`: the number of the
    analysis that supersedes them (objects.mark_reanalysis names its series "AI run <analysis> ..."). `series_range`:
    (first, last) Series Number of the objects the note lists, named instead of the range `sr_series` /
    `pdf_series` give (listed_series_range). The document
    title keeps IOCM's code (REJECTED_FOR_QUALITY_REASONS), which archives act on; this free text is the node's, so
    a reader of a viewer that lists the note (most do not act on it) reads "superseded", not "bad images"."""
    when = f" of {report_time}" if report_time else ""
    series = ""
    if series_range is not None:
        first, last = series_range
        series = f": series {first}" if first == last else f": series {first}-{last}"
    elif sr_series is not None:
        last = pdf_series if pdf_series is not None else sr_series
        series = f": series {int(sr_series) - SEG_SERIES_OFFSET}-{int(last)}"
    for by in ((f" by AI run {analysis}" if analysis else ""), ""):
        text = f"Superseded{by}{series or ': AI results'}{when}"
        if len(text) <= 64:
            return text
    return f"Superseded{series or ': AI results'}{when}"[:64]


def listed_series_range(superseded: Sequence[dict]) -> tuple[int, int] | None:
    """(lowest, highest) `series_number` of the objects one destination's note lists (`superseded`: its entries,
    node._rejected), where they all come from one earlier analysis (one `analysis_id`) and each Series Number is
    known; None otherwise (the note then says "AI results"): objects of several analyses (a destination that missed
    the latest received an older one), or a purged one whose file, and so its number, is gone."""
    analyses = {entry.get("analysis_id") for entry in superseded}
    numbers = [entry.get("series_number") for entry in superseded]
    if not superseded or len(analyses) != 1 or None in analyses or None in numbers:
        return None
    return min(numbers), max(numbers)


def _valid_dates(header: Dataset) -> Dataset:
    """`header` with each identity date or time that is no real one (a PatientBirthDate "00000000" copied from the
    source) made empty, as the other result objects carry it: highdicom builds the note's Patient module from its
    first evidence item and refuses such a value (a re-analysis of a Sunnybrook study failed on it)."""
    fixed = None
    for keyword in identity_keywords():
        vr = dictionary_VR(tag_for_keyword(keyword))
        value = header.get(keyword)
        if vr in ("DA", "TM", "DT") and value not in (None, "") and repair_value(vr, str(value), keyword) is None:
            fixed = fixed if fixed is not None else _shallow_copy(header)
            fixed[tag_for_keyword(keyword)] = DataElement(tag_for_keyword(keyword), vr, "")  # the header's stays
    return header if fixed is None else fixed


def _shallow_copy(header: Dataset) -> Dataset:
    copy = Dataset()
    for element in header:
        copy[element.tag] = element
    copy.file_meta = getattr(header, "file_meta", Dataset())
    return copy


def build_rejection_note(header: Dataset, superseded: Sequence[dict], started_at: dt.datetime, series_number: int,
                         report_time: str | None = None, sr_series: int | None = None, pdf_series: int | None = None,
                         analysis: int | None = None, series_range: tuple[int, int] | None = None) -> Dataset:
    """The Rejection Note (Key Object Selection Document, title REJECTED_FOR_QUALITY_REASONS) listing `superseded`.

    `header`: the patient and study identity of the new analysis's objects (headers.derivable_header of the study,
    as every result object carries it). `superseded`: the earlier result objects, each a dict with
    `sop_instance_uid`, `series_instance_uid`, `sop_class_uid` (one of REJECTED_SOP_CLASSES or DISPLAY_COPY_CLASSES)
    and `study_instance_uid`, which must be `header`'s study; one destination's list (an IOCM archive refuses a
    whole note that names an instance it does not hold). `report_time`: when the superseded results were made
    ("2026-12-07 07:25:14", provenance.report_time), `sr_series` / `pdf_series` (their SR and PDF Series Numbers)
    and `analysis` (the superseding analysis's number), named in the Series Description (rejection_description;
    `series_range`, listed_series_range, names the Series Numbers the note lists instead of `sr_series` /
    `pdf_series`).
    Series and Content Date/Time:
    `started_at` (the new analysis's start). Raises ValueError for an empty list, a class not in
    REJECTED_SOP_CLASSES or DISPLAY_COPY_CLASSES, or an instance of another study (IOCM notes are per study).
    """
    if not superseded:
        raise ValueError("a rejection note needs at least one superseded instance")
    header = _valid_dates(header)
    study_uid = str(header.StudyInstanceUID)
    references = []
    for entry in superseded:
        if entry["sop_class_uid"] not in REJECTED_SOP_CLASSES | DISPLAY_COPY_CLASSES:
            raise ValueError(f"{entry['sop_instance_uid']}: SOP class {entry['sop_class_uid']} is not one of the "
                             "node's result objects a re-analysis supersedes")
        if str(entry["study_instance_uid"]) != study_uid:
            raise ValueError(f"{entry['sop_instance_uid']} belongs to study {entry['study_instance_uid']}, not to "
                             f"{study_uid}: a rejection note lists the instances of one study")
        reference = Dataset()
        reference.StudyInstanceUID = study_uid
        reference.SeriesInstanceUID = entry["series_instance_uid"]
        reference.SOPInstanceUID = entry["sop_instance_uid"]
        reference.SOPClassUID = entry["sop_class_uid"]
        if entry["sop_class_uid"] in _IMAGE_CLASSES:
            reference.Rows = reference.Columns = 0  # highdicom writes an IMAGE item for a dataset with Rows/Columns
        carry_identity(reference, header)
        references.append(reference)
    content = hd.ko.KeyObjectSelection(document_title=REJECTED_FOR_QUALITY_REASONS, referenced_objects=references)
    note = hd.ko.KeyObjectSelectionDocument(
        evidence=references, content=content, series_instance_uid=new_uid(), series_number=series_number,
        sop_instance_uid=new_uid(), instance_number=1, manufacturer=NODE_MANUFACTURER,
        manufacturer_model_name=NODE_MODEL_NAME, software_versions=node_version(),
        series_description=rejection_description(report_time, sr_series, pdf_series, analysis, series_range),
        series_date=started_at.date(), series_time=started_at.time(),
        content_date=started_at.date(), content_time=started_at.time())
    carry_identity(note, header)
    declare_offset(note, started_at)
    return fit_character_set(note)
