"""Every result object of one analysis carries ONE patient and study identity, the SR's (break45b #1, #2, #9): a SEG
built from a slice whose header spells the patient differently, and the report's Secondary Capture, carry the
patient/study attributes (IssuerOfPatientID, StudyDescription, OtherPatientIDsSequence ...) of the study header."""
from __future__ import annotations

import io

import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from dicomnode.results.objects import build_result_objects
from synthetic import make_study, one_series_per_slice

IDENTITY = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "StudyDescription",
            "AccessionNumber", "StudyID", "StudyDate")


def _identity(dataset: Dataset) -> tuple:
    other_ids = tuple(str(item.PatientID) for item in dataset.get("OtherPatientIDsSequence", []))
    return tuple(str(dataset.get(keyword, "")) for keyword in IDENTITY) + (other_ids,)


def _written(dataset: Dataset) -> Dataset:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return pydicom.dcmread(buffer)


def _as_received(dataset: Dataset, keyword: str) -> str:
    """The value as its bytes spell it: several values joined by the backslash that separated them."""
    value = dataset[keyword].value
    return "\\".join(str(v) for v in value) if isinstance(value, MultiValue) else str(value)


def test_every_object_carries_the_identity_of_the_sr_whatever_its_slice_says():
    study, results, context = make_study(slices=4, cine_phases=5)
    one_series_per_slice(results[0].segmentations[0])  # one SEG per LGE slice, each built from its own slice
    other = Dataset()
    other.PatientID = "OTHER-1"
    for series in study.series:
        for index, instance in enumerate(series.instances):
            dataset = instance.dataset
            dataset.SpecificCharacterSet = "ISO_IR 100"
            dataset.IssuerOfPatientID = "HOSP_A"
            dataset.StudyDescription = "CMR Herz"
            dataset.PatientName = "Müller^Jürgen"
            dataset.OtherPatientIDsSequence = [other]
            if index % 2:  # the same patient, written by another system
                dataset.PatientName = "MUELLER^JUERGEN"
                dataset.IssuerOfPatientID = "HOSP_A_RIS"
                del dataset.StudyDescription
                del dataset.OtherPatientIDsSequence
    objects = [_written(o) for o in build_result_objects(study, results, context, secondary_capture=True)]
    expected = _identity(next(o for o in objects if o.Modality == "SR"))
    assert expected[0] in ("Müller^Jürgen", "MUELLER^JUERGEN") and expected[2] in ("HOSP_A", "HOSP_A_RIS")
    modalities = sorted({o.Modality for o in objects})
    assert {"SEG", "SR", "DOC", "OT"} <= set(modalities), modalities
    segs = [o for o in objects if o.Modality == "SEG"]
    assert len(segs) >= 4  # the LGE slices' SEGs, half of them from a slice spelling the patient differently
    assert {_identity(o) for o in objects} == {expected}, [(o.Modality, _identity(o)) for o in objects]


def test_the_secondary_capture_carries_the_optional_patient_and_study_attributes():
    study, results, context = make_study(slices=3, cine_phases=5)
    for series in study.series:
        for instance in series.instances:
            instance.dataset.IssuerOfPatientID = "HOSP_A"
            instance.dataset.StudyDescription = "CMR test study"
    objects = build_result_objects(study, results, context, secondary_capture=True)
    [capture] = [o for o in objects if o.Modality == "OT"]
    [document] = [o for o in objects if o.Modality == "DOC"]
    assert capture.IssuerOfPatientID == document.IssuerOfPatientID == "HOSP_A"
    assert capture.StudyDescription == document.StudyDescription == "CMR test study"


LONG_ID = "P" * 65  # LO allows 64: an archive (Orthanc) stores it with the images as it is
LONG_NAME = "Abcdefghij" * 8 + "^Long"  # an alphabetic group of 85 characters (PN allows 64)


def test_an_over_long_patient_id_or_name_is_copied_as_it_is_with_a_warning(caplog):
    """break45b #4: PatientID / PatientName over their VR's length were emptied in every result object, which the
    archive then filed under no patient (or another), apart from the images; the log said it at INFO only."""
    study, results, context = make_study(slices=3, cine_phases=5)
    for series in study.series:
        for instance in series.instances:
            instance.dataset.PatientID = LONG_ID
            instance.dataset.PatientName = LONG_NAME
    with caplog.at_level("WARNING", logger="dicomnode.results"):
        objects = [_written(o) for o in build_result_objects(study, results, context, secondary_capture=True)]
    assert {o.Modality for o in objects} >= {"SEG", "SR", "DOC", "OT"}
    assert {(str(o.PatientID), str(o.PatientName)) for o in objects} == {(LONG_ID, LONG_NAME)}
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    for keyword in ("PatientID", "PatientName"):
        assert f"source {keyword} is longer than VR" in warned, warned


def test_a_multi_valued_patient_id_name_or_accession_is_copied_as_received_into_every_object(caplog):
    """review45 #1: a PatientID "123\\456" was cut to "123" in every result object, which the archive (holding a
    patient 123 already) then filed under that other patient, apart from the images it filed under "123\\456"."""
    study, results, context = make_study(slices=3, cine_phases=5)
    for series in study.series:
        for instance in series.instances:
            instance.dataset.PatientID = "123\\456"
            instance.dataset.PatientName = "Doe^John\\Roe^Richard"
            instance.dataset.AccessionNumber = "A1\\B2"
    with caplog.at_level("WARNING", logger="dicomnode.results"):
        objects = [_written(o) for o in build_result_objects(study, results, context, secondary_capture=True)]
    assert {o.Modality for o in objects} >= {"SEG", "SR", "DOC", "OT"}
    raw = {tuple(_as_received(o, keyword) for keyword in ("PatientID", "PatientName", "AccessionNumber"))
           for o in objects}
    assert raw == {("123\\456", "Doe^John\\Roe^Richard", "A1\\B2")}, raw
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "several values" in r.getMessage()]
    for keyword in ("PatientID", "PatientName", "AccessionNumber"):
        assert sum(f"source {keyword} holds several values" in m for m in warned) == 1, warned


_CONTROLS_ALLOWED = {"LT", "ST", "UT"}  # PS3.5 6.2: CR, LF, FF, TAB allowed only in these


def _control_characters(dataset: Dataset, found: list, path: str = "") -> list:
    """Every (path, keyword, VR) of a text element of a VR that allows no control character holding one."""
    for element in dataset:
        if element.VR == "SQ":
            for index, item in enumerate(element.value or []):
                _control_characters(item, found, f"{path}{element.keyword}[{index}].")
        elif element.VR in {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "PN", "SH", "TM", "UC"}:
            values = element.value if isinstance(element.value, MultiValue) else [element.value]
            if any(v is not None and any(ord(c) < 32 or 127 <= ord(c) < 160 for c in str(v)) for v in values):
                found.append((path + element.keyword, element.VR))
    return found


def test_control_characters_in_the_source_header_are_spaces_in_every_result_object(caplog):
    """break45b #10 (the DICOM half): a CR LF in PatientName (and a TAB or CR LF in other PN / LO / SH values) was
    copied into every SEG, SR, PDF, SC and display copy, which dciodvfy rejects (PS3.5 6.2: no control character
    but ESC in PN, LO, SH); each run is one space now, with a WARNING per attribute; the PatientID, by which the
    archive files results with the images, is copied as received."""
    study, results, context = make_study(slices=3, cine_phases=5)
    for series in study.series:
        series.instances[0].dataset.SeriesDescription = "SA\tcine"
        for instance in series.instances:
            instance.dataset.PatientName = "Line\r\nBreak^Name"
            instance.dataset.StudyDescription = "CMR\r\nstudy"
            instance.dataset.ReferringPhysicianName = "Who^\x0bDoc"
    with caplog.at_level("WARNING", logger="dicomnode.results"):
        objects = [_written(o) for o in build_result_objects(study, results, context, secondary_capture=True)]
    assert {o.Modality for o in objects} >= {"SEG", "SR", "DOC", "OT", "MR"}
    for dataset in objects:
        assert _control_characters(dataset, []) == [], (dataset.Modality, dataset.SeriesDescription)
        assert str(dataset.PatientName) == "Line Break^Name"
        assert dataset.StudyDescription == "CMR study"
        assert str(dataset.ReferringPhysicianName) == "Who^ Doc"
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    for keyword in ("PatientName", "StudyDescription", "ReferringPhysicianName"):
        assert sum(f"source {keyword} holds control characters" in m for m in warned) == 1, warned


def test_a_patient_id_with_a_control_character_is_copied_as_received():
    from dicomnode.results.headers import derivable_header

    header = Dataset()
    header.PatientID, header.PatientName = "12\r345", "A\nB^C"
    derived = derivable_header(header)
    assert derived.PatientID == "12\r345" and str(derived.PatientName) == "A B^C"
