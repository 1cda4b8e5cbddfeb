"""Source headers made safe to derive result objects from: type-2 patient/study attributes present and valid."""
from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.valuerep import DA, TM

#: patient/study attributes highdicom reads unconditionally from a source dataset (type 2 in the source IODs)
PATIENT_STUDY_KEYWORDS = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                          "StudyDate", "StudyTime", "ReferringPhysicianName")
_DATES = ("PatientBirthDate", "StudyDate")
_TIMES = ("StudyTime",)
_SEXES = {"M", "F", "O"}


def _valid(value, kind) -> bool:
    try:
        kind(str(value))
        return True
    except (ValueError, TypeError, OverflowError):
        return False


def derivable_header(dataset: Dataset) -> Dataset:
    """A shallow copy with missing patient/study attributes added empty and invalid dates/times/sex emptied.

    Real archives hold values such as PatientBirthDate "00000000" or StudyDate "20120000" (Sunnybrook); highdicom
    refuses them and a result object must not repeat them, so they become empty (type 2) in the results.
    """
    copy = Dataset(dataset)
    copy.file_meta = getattr(dataset, "file_meta", Dataset())
    for keyword in PATIENT_STUDY_KEYWORDS:
        if keyword not in copy:
            setattr(copy, keyword, None)
    for keyword in _DATES:
        if copy[keyword].value not in (None, "") and not _valid(copy[keyword].value, DA):
            setattr(copy, keyword, None)
    for keyword in _TIMES:
        if copy[keyword].value not in (None, "") and not _valid(copy[keyword].value, TM):
            setattr(copy, keyword, None)
    if copy.PatientSex not in (None, "") and str(copy.PatientSex).upper() not in _SEXES:
        copy.PatientSex = None
    return copy
