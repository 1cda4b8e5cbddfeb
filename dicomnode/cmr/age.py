"""The patient's age at the study, from PatientAge (0010,1010) or from PatientBirthDate (0010,0030) and the study's
date: what decides whether adult reference ranges apply (dicomnode.analysis.reference_age).

PatientAge is a DICOM Age String (PS3.5 6.2, VR AS): three digits and one of D (days), W (weeks), M (months),
Y (years), e.g. "006M"; fewer digits ("45Y", written by some archives) are read the same. A value of another form
("45", "6 months", "-01Y") is not guessed at, and a count of 0 ("000Y", an archive's placeholder for unknown; the
correction path, spool.valid_measurement, does not take it for an age either) is no age: the age is unknown, and
age_reading says why. An age from the birth date is counted by the calendar (completed years, months, days: a
patient is 18 on the 18th birthday). Where PatientAge and the birth date disagree by more than an Age String's
rounding, the younger age is used (in doubt the child rule) and age_reading says so.
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


@dataclass(frozen=True)
class AgeReading:
    """The age used (None: unknown) and, where the header's age data say something a reader must know, one note:
    AGE_UNKNOWN_START and why the age data present are unusable (a birth date after the study date, no study date,
    "45" without a unit, "000Y"), or AGE_NOTE_START and how PatientAge and the birth date disagree."""

    age: PatientAge | None
    note: str | None = None


#: how the note on unusable age data begins (AgeReading.note)
AGE_UNKNOWN_START = "age unknown: "
#: how the note on age data that disagree (or contradict the body size, reference_age) begins
AGE_NOTE_START = "age in doubt: "


def _words(count: int, unit: str) -> str:
    return f"{count} {_UNIT_WORDS[unit]}{'' if count == 1 else 's'}"


def _age_string(value) -> tuple[int, str] | None:
    match = re.fullmatch(r"(\d{1,3})([DWMY])", str(value if value is not None else "").strip().upper())
    return (int(match.group(1)), match.group(2)) if match else None


def age_string_problem(value) -> str | None:
    """Why a present PatientAge is no age ("PatientAge '45' is not an Age String ..."), None where it is one or
    absent (empty)."""
    text = str(value if value is not None else "").strip()
    if not text:
        return None
    parsed = _age_string(text)
    if parsed is None:
        return f"PatientAge {text!r} is not an Age String (a count and D, W, M or Y, e.g. 045Y)"
    count, unit = parsed
    if count == 0:
        return f"PatientAge {text} is 0, an archive's placeholder for an unknown age, not an age"
    if count * _UNIT_DAYS[unit] / 365.25 > MAX_AGE_YEARS:
        return f"PatientAge {text} is over {MAX_AGE_YEARS:g} years"
    return None


def age_from_age_string(value) -> PatientAge | None:
    """A DICOM Age String ("006M", "045Y", "010W", "012D"; also 1-2 digits, surrounding spaces ignored,
    case-insensitive); None for an absent, empty or malformed value, a count of 0 ("000Y": a placeholder for
    unknown, age_string_problem) or one over MAX_AGE_YEARS."""
    if age_string_problem(value) is not None or _age_string(value) is None:
        return None
    count, unit = _age_string(value)
    return PatientAge(count * _UNIT_DAYS[unit] / 365.25, _words(count, unit), "PatientAge")


def da_date(value) -> datetime.date | None:
    """A DICOM DA (PS3.5 6.2, YYYYMMDD) as a date; also the ACR-NEMA dotted form "YYYY.MM.DD" that earlier
    editions allowed and the forms "YYYY-MM-DD", "YYYY/MM/DD"; None for anything else or an impossible date. The one
    date parser for the age and the headers the node writes (results.headers.repair_value)."""
    text = str(value if value is not None else "").strip(" \x00")
    match = re.fullmatch(r"(\d{4})(\d{2})(\d{2})", text) or re.fullmatch(r"(\d{4})([-./])(\d{2})\2(\d{2})", text)
    if not match:
        return None
    year, month, day = (match.group(1), match.group(2), match.group(3)) if match.lastindex == 3 else \
        (match.group(1), match.group(3), match.group(4))
    try:
        return datetime.date(int(year), int(month), int(day))
    except ValueError:
        return None


_date = da_date


def _anniversary(born: datetime.date, year: int) -> datetime.date:
    try:
        return born.replace(year=year)
    except ValueError:  # born on 29 February: the birthday of a common year is 1 March
        return datetime.date(year, 3, 1)


def completed_years(born: datetime.date, on: datetime.date) -> float:
    """The age on `on` of a patient born on `born` in years by the calendar: the completed years plus the share of
    the current year of life elapsed (18.0 on the 18th birthday, whatever the leap days in between)."""
    years = on.year - born.year
    if _anniversary(born, on.year) > on:
        years -= 1
    last, following = _anniversary(born, born.year + years), _anniversary(born, born.year + years + 1)
    return years + (on - last).days / (following - last).days


def age_from_dates(birth_date, study_date, source: str = "PatientBirthDate and StudyDate") -> PatientAge | None:
    """The age on `study_date` of a patient born on `birth_date` (DICOM DA, da_date); None where either is absent
    or malformed, or the birth date is after the study date or over MAX_AGE_YEARS before it. `years` by the calendar
    (completed_years); said in completed years from 2 years, in completed months under 2 years, in days under 1
    month."""
    born, studied = da_date(birth_date), da_date(study_date)
    if born is None or studied is None or born > studied:
        return None
    days = (studied - born).days
    years = completed_years(born, studied)
    if years > MAX_AGE_YEARS:
        return None
    months = (studied.year - born.year) * 12 + studied.month - born.month - (studied.day < born.day)
    if months >= 24:
        text = _words(int(years), "Y")
    elif months >= 1:
        text = _words(months, "M")
    else:
        text = _words(days, "D")
    return PatientAge(years, text, source)


def _in_unit(born: datetime.date, studied: datetime.date, unit: str) -> float:
    """The age from the dates in an Age String's unit, with its fraction."""
    if unit == "Y":
        return completed_years(born, studied)
    if unit == "M":
        months = (studied.year - born.year) * 12 + studied.month - born.month - (studied.day < born.day)
        return months + ((studied.day - born.day) % 31) / 31.0
    return (studied - born).days / (7.0 if unit == "W" else 1.0)


def _disagree(count: int, unit: str, born: datetime.date, studied: datetime.date) -> bool:
    """Whether an Age String's count cannot be the age from the dates: an Age String is the age truncated or
    rounded to its unit (count - 0.5 .. count + 1), with one day of slack for a date taken in another time zone."""
    exact = _in_unit(born, studied, unit)
    slack = 1.0 / {"Y": 365.25, "M": 30.44, "W": 7.0, "D": 1.0}[unit]
    return not count - 0.5 - slack <= exact < count + 1 + slack


def _study_date(ds) -> tuple[str, str] | None:
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate"):
        if da_date(getattr(ds, keyword, None)) is not None:
            return keyword, getattr(ds, keyword)
    return None


def _shown(date: datetime.date) -> str:
    return date.isoformat()


def age_reading(ds) -> AgeReading:
    """The patient's age from a dataset and what a reader must know about it (AgeReading): PatientAge where it is
    a valid Age String, else PatientBirthDate with the first of StudyDate, SeriesDate, AcquisitionDate (da_date,
    dotted dates read too); where both give an age and agree, the dates' (exact: "018Y" may be written for 17 years
    and 11 months). Where both give an age and they disagree beyond an Age String's rounding, the younger is
    used (in doubt the child rule) with an AGE_NOTE_START note naming both; where age data are present but give no
    age, None with an AGE_UNKNOWN_START note naming why; where there are none, None without a note."""
    raw_age = str(getattr(ds, "PatientAge", None) or "").strip()
    raw_birth = str(getattr(ds, "PatientBirthDate", None) or "").strip()
    stated = age_from_age_string(raw_age)
    born = da_date(raw_birth)
    study = _study_date(ds)
    dated = age_from_dates(raw_birth, study[1], f"PatientBirthDate and {study[0]}") if study and born else None
    problems = [problem for problem in (age_string_problem(raw_age),) if problem]
    if raw_birth and born is None:
        problems.append(f"PatientBirthDate {raw_birth!r} is not a date")
    elif born is not None and study is None:
        problems.append("PatientBirthDate given but no StudyDate, SeriesDate or AcquisitionDate to count the age to")
    elif born is not None and dated is None:
        studied = da_date(study[1])
        problems.append(f"PatientBirthDate {_shown(born)} is after the study date ({study[0]} {_shown(studied)})"
                        if born > studied else f"PatientBirthDate {_shown(born)} is over {MAX_AGE_YEARS:g} years "
                        f"before the study date ({study[0]} {_shown(studied)})")
    if stated is not None and dated is not None:
        count, unit = _age_string(raw_age)
        if _disagree(count, unit, born, da_date(study[1])):
            used = min(stated, dated, key=lambda age: age.years)
            return AgeReading(used, f"{AGE_NOTE_START}PatientAge {stated.text} disagrees with {dated.source} "
                                    f"({dated.text}: born {_shown(born)}, studied {_shown(da_date(study[1]))}): the "
                                    f"younger, {used.text} (from {used.source}), is used, in doubt the child rule; "
                                    "check the patient's age")
        return AgeReading(dated)  # they agree: the calendar's count is exact, an Age String is rounded down
    found = stated or dated
    if found is None:
        return AgeReading(None, f"{AGE_UNKNOWN_START}{'; '.join(problems)}" if problems else None)
    return AgeReading(found, f"{AGE_NOTE_START}{'; '.join(problems)}; the age {found.text} from {found.source} is "
                             "used" if problems else None)


def patient_age(ds) -> PatientAge | None:
    """The patient's age from a dataset (age_reading; None: unknown)."""
    return age_reading(ds).age
