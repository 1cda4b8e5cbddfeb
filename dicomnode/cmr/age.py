"""The patient's age at the study, from PatientAge (0010,1010) or from PatientBirthDate (0010,0030) and the study's
date: what decides whether adult reference ranges apply (dicomnode.analysis.reference_age).

PatientAge is a DICOM Age String (PS3.5 6.2, VR AS): three digits and one of D (days), W (weeks), M (months),
Y (years), e.g. "006M"; fewer digits ("45Y", written by some archives) are read the same. A value of another form
("45", "6 months", "-01Y") is not guessed at: the age is unknown.
Pure functions: header values in, a PatientAge (or None) out.
"""
from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

#: days per unit of an Age String
_UNIT_DAYS = {"D": 1.0, "W": 7.0, "M": 365.25 / 12.0, "Y": 365.25}
_UNIT_WORDS = {"D": "day", "W": "week", "M": "month", "Y": "year"}
#: ages (years) above this are not a living patient's: a garbled header, not an age
MAX_AGE_YEARS = 130.0


@dataclass(frozen=True)
class PatientAge:
    """An age in years, how a reader says it ("6 months", "45 years") and where it came from."""

    years: float
    text: str
    source: str  # "PatientAge" | "PatientBirthDate and StudyDate" (or SeriesDate / AcquisitionDate)


def _words(count: int, unit: str) -> str:
    return f"{count} {_UNIT_WORDS[unit]}{'' if count == 1 else 's'}"


def age_from_age_string(value) -> PatientAge | None:
    """A DICOM Age String ("006M", "045Y", "010W", "012D"; also 1-2 digits, surrounding spaces ignored,
    case-insensitive); None for
    an absent, empty or malformed value, or one over MAX_AGE_YEARS."""
    match = re.fullmatch(r"(\d{1,3})([DWMY])", str(value if value is not None else "").strip().upper())
    if not match:
        return None
    count, unit = int(match.group(1)), match.group(2)
    years = count * _UNIT_DAYS[unit] / 365.25
    return PatientAge(years, _words(count, unit), "PatientAge") if years <= MAX_AGE_YEARS else None


def _date(value) -> datetime.date | None:
    text = str(value if value is not None else "").strip()
    if not re.fullmatch(r"\d{8}", text):
        return None
    try:
        return datetime.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def age_from_dates(birth_date, study_date, source: str = "PatientBirthDate and StudyDate") -> PatientAge | None:
    """The age on `study_date` of a patient born on `birth_date` (DICOM DA, YYYYMMDD); None where either is absent
    or malformed, or the birth date is after the study date or over MAX_AGE_YEARS before it. Said in completed
    years from 2 years, in completed months under 2 years, in days under 1 month."""
    born, studied = _date(birth_date), _date(study_date)
    if born is None or studied is None or born > studied:
        return None
    days = (studied - born).days
    years = days / 365.25
    if years > MAX_AGE_YEARS:
        return None
    months = (studied.year - born.year) * 12 + studied.month - born.month - (studied.day < born.day)
    if months >= 24:
        text = _words(months // 12, "Y")
    elif months >= 1:
        text = _words(months, "M")
    else:
        text = _words(days, "D")
    return PatientAge(years, text, source)


def patient_age(ds) -> PatientAge | None:
    """The patient's age from a dataset: PatientAge where it is a valid Age String, else PatientBirthDate with the
    first of StudyDate, SeriesDate, AcquisitionDate; None where neither says it (the age is unknown)."""
    found = age_from_age_string(getattr(ds, "PatientAge", None))
    if found is not None:
        return found
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate"):
        if _date(getattr(ds, keyword, None)) is not None:
            return age_from_dates(getattr(ds, "PatientBirthDate", None), getattr(ds, keyword),
                                  f"PatientBirthDate and {keyword}")
    return None
