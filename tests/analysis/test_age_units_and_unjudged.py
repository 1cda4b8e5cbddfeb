"""break50b #3-5, 7-9, 11, 12: the age by the calendar and from every date form the node shows, unusable or
disagreeing age data named, a height / weight in another unit read in it for the child test, the unit named, and
the checks not made without a BSA."""
from __future__ import annotations

import datetime

import pydicom
import pytest

from dicomnode.analysis.cine_metrics import (NO_INDEX_START, NOT_JUDGED_START, _bsa_or_note, body_surface_area_m2,
                                             measure_cine, recognised_unit)
from dicomnode.analysis.reference_age import (ADULT_RANGES_NOT_APPLIED, adult_ranges_apply, age_adjusted_flags,
                                              age_note, patient_child_size, reference_ranges_summary)
from dicomnode.cmr import PatientInfo
from dicomnode.cmr.age import (AGE_NOTE_START, AGE_UNKNOWN_START, age_from_age_string, age_from_dates, age_reading,
                               da_date)
from dicomnode.results.headers import repair_value
from dicomnode.spool import valid_measurement

from test_cine_metrics import synthetic_cine


def _dataset(**values) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def test_the_18th_birthday_is_18_years_and_adult_for_every_birthday():
    """#3: days / 365.25 made 730 of 1460 18th birthdays 17.9986 years: 'patient 18 years' judged as a child."""
    day = datetime.date(2000, 1, 1)
    while day <= datetime.date(2003, 12, 31):
        born = day.strftime("%Y%m%d")
        studied = (day.replace(year=day.year + 18) if not (day.month == 2 and day.day == 29)
                   else datetime.date(day.year + 18, 3, 1)).strftime("%Y%m%d")
        age = age_from_dates(born, studied)
        assert age.text == "18 years" and adult_ranges_apply(age), (born, studied, age)
        day_before = (datetime.datetime.strptime(studied, "%Y%m%d") - datetime.timedelta(days=1)).strftime("%Y%m%d")
        younger = age_from_dates(born, day_before)
        assert younger.text == "17 years" and not adult_ranges_apply(younger), (born, day_before, younger)
        day += datetime.timedelta(days=1)


def test_a_dotted_birth_date_gives_the_age_as_the_page_shows_it():
    """#4: "2016.01.31" shown on the PDF as 2016-01-31, but no age: an 8-year-old judged as an adult."""
    assert da_date("2016.01.31") == datetime.date(2016, 1, 31) == da_date("20160131")
    assert da_date("2016.13.01") is None and da_date("2016.01-31") is None and da_date("2016") is None
    reading = age_reading(_dataset(PatientBirthDate="2016.01.31", StudyDate="2024.01.31"))
    assert reading.age.text == "8 years" and reading.note is None and not adult_ranges_apply(reading.age)
    assert repair_value("DA", "2016.01.31") == "20160131" and repair_value("DA", "2016.13.01") is None


def test_a_height_in_cm_or_mm_or_a_weight_in_grams_is_read_in_that_unit_for_the_child_test():
    """#5: 130 (cm) / 25 kg and no height / 25000 (g) got the adult ranges; the weight rule's note named the wrong
    criteria."""
    assert recognised_unit("PatientSize", 130) == (pytest.approx(1.30), "centimetres")
    assert recognised_unit("PatientSize", 1300) == (pytest.approx(1.30), "millimetres")
    assert recognised_unit("PatientWeight", 25000) == (pytest.approx(25.0), "grams")
    assert recognised_unit("PatientSize", 1.30) is None and recognised_unit("PatientSize", 290) is None
    cm = patient_child_size(PatientInfo(height_m=130.0, weight_kg=25.0))
    assert cm.startswith("height 1.30 m, weight 25 kg, BSA 0.95 m²: height under 1.40 m, BSA under 1.1 m²")
    assert "PatientSize 130 read as 1.3 m: it looks like centimetres" in cm
    grams = patient_child_size(PatientInfo(weight_kg=25000.0))
    assert grams.startswith("weight 25 kg: weight under 30 kg without a height") and "grams" in grams
    assert not adult_ranges_apply(None, cm) and not adult_ranges_apply(None, grams)
    assert patient_child_size(PatientInfo(height_m=175.0, weight_kg=80.0)) is None  # an adult in cm stays adult
    note = age_adjusted_flags([], None, grams)[0]
    assert "height under 1.40 m or BSA" not in note and "weight under 30 kg without a height" in note


def test_patient_age_disagreeing_with_the_birth_date_is_named_and_the_child_rule_kept():
    """#7: PatientAge 045Y with a birth date 8 years before the study: adult flags, no word anywhere."""
    reading = age_reading(_dataset(PatientAge="045Y", PatientBirthDate="20160131", StudyDate="20240131"))
    assert reading.age.text == "8 years" and reading.age.source == "PatientBirthDate and StudyDate"
    assert reading.note.startswith(f"{AGE_NOTE_START}PatientAge 45 years disagrees with PatientBirthDate and "
                                   "StudyDate (8 years: born 2016-01-31, studied 2024-01-31)")
    patient = PatientInfo.from_dataset(_dataset(PatientAge="045Y", PatientBirthDate="20160131", StudyDate="20240131",
                                                PatientSize="1.30", PatientWeight="26"))
    flags = age_adjusted_flags(["LVEF below normal range (44.6 %; men 57–77 %, women 57–77 %)"], patient.age, None,
                               age_note(patient))
    assert flags[0] == patient.age_note and flags[1].startswith(ADULT_RANGES_NOT_APPLIED) and len(flags) == 2
    assert reference_ranges_summary(patient.age, None, age_note(patient))["age_note"] == patient.age_note
    # within an Age String's rounding: no disagreement (018Y for 17 years 364 days; 006M for 6 months 20 days)
    for age, born in (("018Y", "20060201"), ("006M", "20230711")):
        assert age_reading(_dataset(PatientAge=age, PatientBirthDate=born, StudyDate="20240131")).note is None
    # and then the exact count decides: 17 years 364 days is a child, whatever the rounded 018Y says
    reading = age_reading(_dataset(PatientAge="018Y", PatientBirthDate="20060201", StudyDate="20240131"))
    assert reading.age.years < 18 and reading.age.source == "PatientBirthDate and StudyDate"
    assert not adult_ranges_apply(reading.age)


@pytest.mark.parametrize("values, why", [
    ({"PatientBirthDate": "20250101", "StudyDate": "20240131"},
     "PatientBirthDate 2025-01-01 is after the study date (StudyDate 2024-01-31)"),
    ({"PatientBirthDate": "20160131"}, "PatientBirthDate given but no StudyDate, SeriesDate or AcquisitionDate"),
    ({"PatientAge": "45"}, "PatientAge '45' is not an Age String"),
    ({"PatientAge": "000Y"}, "PatientAge 000Y is 0, an archive's placeholder for an unknown age"),
    ({"PatientBirthDate": "31/01/2016", "StudyDate": "20240131"}, "PatientBirthDate '31/01/2016' is not a date")])
def test_unusable_age_data_are_named_not_silently_adult(values, why):
    """#8, #9: a birth after the study, no study date, "45", "000Y": adult ranges without a word ("000Y" a newborn)."""
    reading = age_reading(_dataset(**values))
    assert reading.age is None and reading.note.startswith(f"{AGE_UNKNOWN_START}{why}"), reading.note
    patient = PatientInfo.from_dataset(_dataset(**values, PatientSize="1.50", PatientWeight="66"))
    assert age_note(patient).endswith("adult reference ranges applied, assuming an adult")
    assert age_adjusted_flags(["x"], patient.age, None, age_note(patient)) == [age_note(patient), "x"]
    assert age_reading(pydicom.Dataset()).note is None  # no age data at all: nothing to say


def test_000y_is_no_age_as_for_the_correction_path():
    """#9: spool.valid_measurement refuses 000Y, cmr.age read it as a newborn."""
    for value in ("000Y", "000D", "0M"):
        assert not valid_measurement("PatientAge", value) and age_from_age_string(value) is None


def test_an_infant_age_with_an_adult_body_size_is_noted():
    """#9: 006M / 12W with 1.50 m and 66 kg accepted without a word."""
    patient = PatientInfo.from_dataset(_dataset(PatientAge="006M", PatientSize="1.50", PatientWeight="66"))
    note = age_note(patient)
    assert note.startswith(f"{AGE_NOTE_START}patient 6 months (from PatientAge) with an adult's body size (height "
                           "1.50 m, weight 66 kg)"), note
    assert age_note(PatientInfo.from_dataset(_dataset(PatientAge="006M", PatientSize="0.68", PatientWeight="8"))) \
        is None
    assert age_note(PatientInfo.from_dataset(_dataset(PatientAge="014Y", PatientSize="1.70", PatientWeight="60"))) \
        is None


def test_the_unit_named_and_not_a_number_told_from_absent():
    """#11: 1750 called centimetres, "66 kg" called absent, the grams weight beside an absent height not named,
    "outside 1-500 kg" for 500 kg."""
    with pytest.raises(ValueError, match="height 1750 m for BSA: it looks like millimetres"):
        body_surface_area_m2(1750, 66)
    with pytest.raises(ValueError, match="height 175 m for BSA: it looks like centimetres"):
        body_surface_area_m2(175, 66)
    with pytest.raises(ValueError, match=r"PatientWeight 500 kg is not between 1 and 500 kg \(both excluded\)"):
        body_surface_area_m2(1.5, 500)
    with pytest.raises(ValueError, match="implausible weight 66000 kg for BSA: it looks like grams"):
        body_surface_area_m2(1.5, 66000)
    patient = PatientInfo.from_dataset(_dataset(PatientSize="1.50", PatientWeight="66"))
    patient_text = PatientInfo.from_dataset(pydicom.dcmread(_raw_weight_file("66 kg"), force=True))
    assert patient.not_numbers == {} and patient_text.not_numbers == {"PatientWeight": "66 kg"}
    _, [note] = _bsa_or_note(1.5, None, "mosteller", patient_text.not_numbers)
    assert note.startswith(f"{NO_INDEX_START}PatientWeight '66 kg' is not a number") and "absent" not in note
    _, [note] = _bsa_or_note(None, 25000.0, "mosteller")
    assert note.startswith(f"{NO_INDEX_START}PatientSize absent from the header; weight 25000 kg implausible: it "
                           "looks like grams"), note


def _raw_weight_file(text: str):
    """A file whose PatientWeight (DS) holds `text` as written, not a number."""
    import io

    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds = _dataset(PatientSize="1.50")
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=False)
    data = buffer.getvalue()
    value = text.encode() + (b" " if len(text) % 2 else b"")
    # (0010,1030) DS: appended after (0010,1020), tags ascend
    data += b"\x10\x00\x30\x10DS" + len(value).to_bytes(2, "little") + value
    return io.BytesIO(data)


def test_without_a_bsa_the_checks_not_made_are_named():
    """#12: without a BSA no RV size or LV mass flag, and nothing said: read as 'RV normal'."""
    maps = synthetic_cine([120, 150, 50, 90], [150, 160, 90, 140], myo_voxels=100, shape=(4, 30, 30))
    without = measure_cine(maps, 1.0, height_m=175.0, weight_kg=80.0, sex="M")
    [note] = [f for f in without.flags if f.startswith(NOT_JUDGED_START)]
    assert "RV EDVi and LV mass index" in note
    assert not any(f.startswith(NOT_JUDGED_START) for f in measure_cine(maps, 1.0, height_m=1.75, weight_kg=80.0,
                                                                         sex="M").flags)
    # a child: nothing is judged against an adult range, the note on the unindexed checks goes with them
    child = age_adjusted_flags(without.flags, age_from_age_string("008Y"))
    assert not any(f.startswith(NOT_JUDGED_START) for f in child)


def test_the_age_note_needs_no_height_or_weight():
    """An infant's age note with a height or weight absent (child_noheight: the cine failed on the absent height)."""
    assert age_note(PatientInfo.from_dataset(_dataset(PatientAge="006M", PatientWeight="66"))).endswith(
        "(weight 66 kg), beyond any growth chart under 5 years: the age or the size is wrong; the child rule is kept "
        "(adult reference ranges not applied)")
    assert age_note(PatientInfo.from_dataset(_dataset(PatientAge="006M"))) is None
    assert age_note(None) is None


def test_the_page_header_gives_the_age_used_and_the_bsa_inputs():
    """#13: PatientSize, PatientWeight and the age that decided adult or child were on no page."""
    from dicomnode.results.report import identification_line

    line = identification_line(_dataset(PatientAge="045Y", PatientBirthDate="20160131", StudyDate="20240131",
                                        PatientSize="130", PatientWeight="25"))
    assert line.endswith("Age: 8 years (from PatientBirthDate and StudyDate)   Height: 130 m   Weight: 25 kg"), line
    assert identification_line(pydicom.Dataset()).endswith("Age: unknown   Height: not given   Weight: not given")
    assert identification_line(pydicom.dcmread(_raw_weight_file("66 kg"), force=True)).endswith(
        "Height: 1.50 m   Weight: 66 kg (not a number in kg)")


def test_page_1_lists_the_checks_not_made_without_a_bsa_with_the_range_flags(capsys):
    """#12: the PDF's 'Outside the reference range' row listed LVEF only: an empty RV read as normal."""
    from dicomnode.analysis.cine_metrics import not_judged_note
    from dicomnode.analysis.pipeline import PipelineResult
    from dicomnode.results.report import FLAG_ROWS, key_number_table
    from dicomnode.summary_view import print_summary_table

    flags = ["LVEF below normal range (44.6 %; men 57–77 %, women 57–77 %)", not_judged_note(True),
             f"{NO_INDEX_START}implausible height 175 m for BSA: it looks like centimetres; PatientSize is in metres"]
    summary = {"lv_edv_ml": 81.4, "lv_esv_ml": 45.2, "lv_sv_ml": 36.3, "lv_ef_percent": 44.6, "lv_mass_g": 74.9,
               "rv_edv_ml": 220.5, "rv_esv_ml": 141.1, "rv_sv_ml": 79.4, "rv_ef_percent": 36.0, "ed_phase": 2,
               "es_phase": 9, "bsa_m2": None, "indexed": {}, "flags": flags}
    cine = PipelineResult(name="cine", summary=summary, measurements={})
    rows = {q: v for q, v, _ in key_number_table([cine], None, "M")}
    assert "RV EDVi and LV mass index" in rows[FLAG_ROWS[0]] and "LVEF below" in rows[FLAG_ROWS[0]]
    print_summary_table({"studies": [{"study_instance_uid": "1.2.3", "series": [], "outputs": [], "cine": summary}]})
    assert f"Cine check: {not_judged_note(True)}" in capsys.readouterr().out
