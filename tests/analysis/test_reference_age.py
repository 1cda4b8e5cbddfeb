"""Adult reference ranges withheld for a patient under 18 (dicomnode/cmr/age.py, dicomnode/analysis/reference_age.py):
age parsing from PatientAge or the birth and study dates, the flags kept and left out, and every output saying it."""
from __future__ import annotations

import pydicom
import pytest

from dicomnode.analysis.cine_metrics import normal_range_flags
from dicomnode.analysis.reference_age import (ADULT_RANGES_NOT_APPLIED, adult_ranges_apply, adult_ranges_note,
                                              age_adjusted_flags, reference_ranges_summary)
from dicomnode.analysis.wall_thickness import wall_thickness_flag
from dicomnode.cmr.age import age_from_age_string, age_from_dates, patient_age


@pytest.mark.parametrize("value, years, text", [
    ("006M", 0.5, "6 months"), ("010W", 70 / 365.25, "10 weeks"), ("012D", 12 / 365.25, "12 days"),
    ("045Y", 45.0, "45 years"), ("001Y", 1.0, "1 year"), (" 017y ", 17.0, "17 years"), ("216M", 18.0, "216 months"),
    ("45Y", 45.0, "45 years")])
def test_age_strings_are_read_with_their_unit(value, years, text):
    age = age_from_age_string(value)
    assert age.years == pytest.approx(years) and age.text == text and age.source == "PatientAge"


@pytest.mark.parametrize("value", [None, "", "45", "6 months", "-01Y", "0006M", "12X", "Y045", "999Y"])
def test_an_absent_or_garbled_age_string_is_an_unknown_age(value):
    assert age_from_age_string(value) is None


def test_the_birth_and_study_dates_give_the_age_when_patient_age_does_not():
    assert age_from_dates("20260110", "20260706").text == "5 months"
    assert age_from_dates("20260620", "20260706").text == "16 days"
    assert age_from_dates("20100707", "20260706").text == "15 years"  # the 16th birthday is tomorrow
    assert age_from_dates("20240706", "20260706").text == "2 years"
    for born, studied in (("20270101", "20260706"), ("2026", "20260706"), ("20261301", "20270101"), (None, "2026")):
        assert age_from_dates(born, studied) is None
    ds = pydicom.Dataset()
    ds.PatientBirthDate, ds.StudyDate = "20200301", "20260301"
    assert (patient_age(ds).text, patient_age(ds).source) == ("6 years", "PatientBirthDate and StudyDate")
    ds.PatientAge = "072M"  # valid and agreeing with the dates: the dates' exact count (review50 #4)
    assert (patient_age(ds).text, patient_age(ds).source) == ("6 years", "PatientBirthDate and StudyDate")
    del ds.PatientBirthDate  # PatientAge alone
    assert (patient_age(ds).text, patient_age(ds).source) == ("72 months", "PatientAge")
    ds.PatientBirthDate = "20200301"
    ds.PatientAge = "040Y"  # disagreeing (break50b #7): the younger, in doubt the child rule
    assert (patient_age(ds).text, patient_age(ds).source) == ("6 years", "PatientBirthDate and StudyDate")
    ds.PatientAge = "forty"
    assert patient_age(ds).text == "6 years"
    del ds.StudyDate
    ds.SeriesDate = "20210301"
    assert patient_age(ds).source == "PatientBirthDate and SeriesDate" and patient_age(ds).text == "12 months"
    assert patient_age(pydicom.Dataset()) is None


def test_adult_ranges_apply_from_18_and_where_the_age_is_unknown():
    assert adult_ranges_apply(None) and adult_ranges_apply(age_from_age_string("018Y"))
    assert adult_ranges_apply(age_from_age_string("216M"))
    assert not adult_ranges_apply(age_from_age_string("017Y"))
    assert not adult_ranges_apply(age_from_age_string("006M"))
    assert adult_ranges_note(None) is None
    assert adult_ranges_note(age_from_age_string("006M")).startswith(
        f"{ADULT_RANGES_NOT_APPLIED}: patient 6 months (from PatientAge)")


def test_a_child_keeps_the_notes_but_no_flag_judged_against_an_adult_range():
    """break40b F5: a 6-month-old was told "LV EDVi above normal range (391.1 mL/m²; women 56–96 mL/m²)"."""
    ranges = normal_range_flags({"lv_edvi_ml_m2": 391.1, "lv_mass_index_g_m2": 326.4, "rv_edvi_ml_m2": 462.4,
                                 "rv_ef_percent": 40.0}, "F")
    wall = wall_thickness_flag({"max_mm": 16.0, "slice_index": 2, "segment": 3, "segment_name": "basal inferoseptal"})
    notes = ["2 phases: ED = largest, ES = smallest LV volume (no curve to smooth)"]
    flags = ranges + [wall] + notes
    assert len(ranges) == 4
    child = age_adjusted_flags(flags, age_from_age_string("006M"))
    assert child == [adult_ranges_note(age_from_age_string("006M"))] + notes
    assert age_adjusted_flags(flags, None) == flags  # age unknown: as before
    assert age_adjusted_flags(flags, age_from_age_string("045Y")) == flags
    # no flag raised at all: the note still says that the ranges were not applied
    assert age_adjusted_flags([], age_from_age_string("010W"))[0].startswith(
        f"{ADULT_RANGES_NOT_APPLIED}: patient 10 weeks")
    summary = reference_ranges_summary(age_from_age_string("006M"))
    assert summary["adult_ranges_applied"] is False and summary["patient_age"] == "6 months"
    assert summary["note"].startswith(ADULT_RANGES_NOT_APPLIED)
    assert reference_ranges_summary(None) == {"adult_ranges_applied": True, "patient_age": None,
                                              "patient_age_years": None, "patient_age_source": None,
                                              "child_body_size": None, "note": None, "age_note": None}
