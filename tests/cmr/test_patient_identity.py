"""cmr.identity: when a study's instances carry more than one patient's identity (break3 H1), and when they do not
(formatting, empty values, character-set renderings of one name)."""
from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from dicomnode.cmr.identity import identity_conflict, same_name


def _ds(patient_id="F58CB8F31F5B", name="Case^P043", birth="19610423", series=11, charset=None) -> Dataset:
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    for keyword, value in (("PatientID", patient_id), ("PatientName", name), ("PatientBirthDate", birth)):
        if value is not None:
            setattr(ds, keyword, value)
    ds.SeriesNumber = series
    return ds


def test_two_patient_ids_in_one_series_are_named_with_their_counts():
    """The tester's study: InstanceNumber 1,3,5 of another patient interleaved with 2,4 of the study's own."""
    datasets = [_ds("OTHER-PATIENT-999", "Other^Patient", None) if i % 2 else _ds() for i in range(1, 6)]
    datasets.append(_ds(series=9))
    conflict = identity_conflict(datasets)
    assert conflict is not None and len(conflict.patients) == 2
    reason = conflict.reason
    assert reason.startswith("instances of 2 patients under one Study Instance UID: ")
    assert "PatientID 'OTHER-PATIENT-999', PatientName 'Other^Patient' (3 instances)" in reason
    assert "PatientID 'F58CB8F31F5B', PatientName 'Case^P043', PatientBirthDate 19610423 (3 instances)" in reason
    assert "series 11 hold instances of more than one" in reason
    assert "not analysed" in reason and len(reason) <= 500


@pytest.mark.parametrize("other, why", [
    (dict(patient_id="", name="Smith^Jane"), "no ID on one side: the name decides"),
    (dict(patient_id="", birth="19700101"), "no ID on one side: a full birth date decides"),
])
def test_without_an_id_on_one_side_a_clearly_different_name_or_birth_date_conflicts(other, why):
    conflict = identity_conflict([_ds(name="Smith^John")] * 3 + [_ds(**{"name": "Smith^John", **other})])
    assert conflict is not None, why
    assert [p.instances for p in conflict.patients] == [3, 1]


@pytest.mark.parametrize("other, why", [
    (dict(birth="19000101"), "same ID, a placeholder birth date"),
    (dict(name="SORENSEN^ANNE"), "same ID, SØRENSEN written without the letter Ø"),
    (dict(name="SMITH^J"), "same ID, the given name as an initial"),
    (dict(name="=山田^太郎"), "same ID, the name in ideographs only"),
    (dict(name="Smith^Jane"), "same ID, another name (a correction between two series)"),
    (dict(patient_id="00" + "12345"), "a numeric ID with leading zeros"),
])
def test_the_same_patient_id_is_one_patient_whatever_the_names_say(other, why):
    """break5: a real patient whose instances spell the name differently (or pad the ID) was declined as two
    patients; the ID decides where both instances carry one."""
    base = dict(patient_id="12345", name="SØRENSEN^ANNE", birth="19610423")
    assert identity_conflict([_ds(**base)] * 3 + [_ds(**{**base, **other})]) is None, why


def _with_sex(ds: Dataset, sex: str) -> Dataset:
    ds.PatientSex = sex
    return ds


@pytest.mark.parametrize("name, birth, sex, conflict", [
    ("Jones^Mary", "19850212", "F", True),  # every demographic differs: an ID reused by another patient
    ("Jones^Mary", "19850212", "M", True),  # break46: name and full birth date differ (the sex agrees)
    ("Jones^Mary", "19610423", "F", True),  # break46: name and sex differ (the birth date agrees)
    ("SMITH^JOHN^A", "19850212", "F", True),  # break46: birth date and sex differ (the name agrees)
    ("Jones^Mary", "1985", "F", True),  # name and sex differ; a partial birth date says nothing
    ("Jones^Mary", "19850212", "O", True),  # name and birth date differ; "O" (unknown) says nothing
    ("Jones^Mary", "1985", "O", False),  # only the name differs: a correction between two series
    ("Smith^John", "19850212", "", False),  # only the birth date differs
    ("Smith^John", "19610423", "F", False),  # only the sex differs
    ("Jones^Mary", "19000101", "M", False),  # a placeholder birth date is no second difference
    ("Jones^Mary", "00000000", "M", False),  # nor is a malformed one
    ("=山田^太郎", "19850212", "M", False),  # kanji only against romaji: the name says nothing, one difference
    ("=山田^太郎", "19850212", "F", True),  # ... but birth date and sex differ
])
def test_the_same_patient_id_with_two_demographics_different_is_another_patient(name, birth, sex, conflict):
    """break45b / break46: the very same PatientID (no issuer) on a patient of another name, full birth date or sex
    was measured with the rest unless all three differed; two differing (each given on both) now decline, so a
    result never mixes two patients, while one (a misspelt or corrected name, a placeholder date) never declines."""
    base = [_with_sex(_ds(patient_id="12345", name="Smith^John", birth="19610423"), "M") for _ in range(3)]
    other = _with_sex(_ds(patient_id="12345", name=name, birth=birth), sex)
    found = identity_conflict(base + [other])
    assert (found is not None) == conflict
    if conflict:
        assert [p.instances for p in found.patients] == [3, 1]
        assert ("PatientSex F" in found.reason) == (sex == "F")


def test_a_malformed_birth_date_says_nothing():
    from dicomnode.cmr.identity import normalised_birth_date
    assert normalised_birth_date("19610423") == "19610423"
    assert normalised_birth_date("1961-04-23") == "19610423"
    for value in ("00000000", "20120000", "19611323", "1961"):
        assert normalised_birth_date(value) is None, value
    # without IDs a malformed date no longer splits one patient
    assert identity_conflict([_ds(patient_id="", birth="19610423")] * 3 + [_ds(patient_id="", birth="00000000")]) is None


@pytest.mark.parametrize("variant, why", [
    (dict(patient_id=" f58cb8f31f5b "), "ID in another case, padded"),
    (dict(name="CASE^P043^^^"), "name in capitals with empty trailing components"),
    (dict(name=" case ^ p043"), "name with spaces around its components"),
    (dict(name="Case P043"), "family and given name written without '^'"),
    (dict(name="Case^P043^A"), "a middle initial added"),
    (dict(name="", birth=""), "name and birth date empty"),
    (dict(name=None, birth=None, patient_id=None), "no identity at all"),
    (dict(birth="1961"), "a partial birth date says nothing"),
    (dict(birth="19610423 "), "a padded birth date"),
])
def test_formatting_and_empty_values_are_no_second_patient(variant, why):
    assert identity_conflict([_ds()] * 4 + [_ds(**variant)]) is None, why


@pytest.mark.parametrize("a, b", [
    ("Yamada^Tarou=山田^太郎=やまだ^たろう", "YAMADA^TAROU"),  # alphabetic group alone
    ("Yamada^Tarou=山田^太郎=やまだ^たろう", "=山田^太郎"),  # ideographic group alone
    ("Müller^Hans", "MÃ¼ller^Hans"),  # UTF-8 read as Latin-1
    ("Müller^Hans", "Mueller^Hans"),  # German transliteration
    ("Müller^Hans", "MULLER^HANS"),  # accents dropped by an old system
    ("Müller^Hans", "M?ller^Hans"),  # not decodable: not compared
    ("Ōta^Jirō", "Ota^Jiro"),
])
def test_character_set_renderings_of_one_name_are_the_same_name(a, b):
    assert same_name(a, b)
    assert identity_conflict([_ds(name=a), _ds(name=b)]) is None


def test_a_name_stored_in_another_character_set_is_the_same_patient():
    latin = _ds(name="Müller^Hans", charset="ISO_IR 100")
    utf8 = _ds(name="Müller^Hans", charset="ISO_IR 192")
    assert identity_conflict([latin, utf8, latin]) is None


def test_one_patient_is_no_conflict_and_a_third_patient_is_named():
    assert identity_conflict([_ds()] * 5) is None
    assert identity_conflict([]) is None
    conflict = identity_conflict([_ds()] * 3 + [_ds("B", "B^B", None)] * 2 + [_ds("C", "C^C", None)])
    assert [p.patient_id for p in conflict.patients] == ["F58CB8F31F5B", "B", "C"]
    assert conflict.reason.startswith("instances of 3 patients")


def _mix(base: dict, other: dict, extra: dict | None = None, other_extra: dict | None = None):
    """Seven instances of `base` and one of `other`, each with the extra attributes (IssuerOfPatientID, PatientSex)."""
    datasets = []
    for index in range(8):
        odd = index == 7
        dataset = _ds(**(other if odd else base))
        for keyword, value in ((other_extra if odd else extra) or {}).items():
            setattr(dataset, keyword, value)
        datasets.append(dataset)
    return datasets


IDA = dict(patient_id="12345", name="Issuer^Ida", birth="19600229")
OTTO = dict(patient_id="12345", name="Other^Otto", birth="19801111")


@pytest.mark.parametrize("base, other, extra, other_extra, why", [
    (IDA, OTTO, {"IssuerOfPatientID": "HOSP_A", "PatientSex": "F"}, {"IssuerOfPatientID": "HOSP_B", "PatientSex": "M"},
     "the same ID of two issuers, another name, birth date and sex (break45b #1)"),
    (dict(IDA, patient_id="0012345"), OTTO, {"PatientSex": "F"}, {"PatientSex": "M"},
     "IDs equal only without their leading zeros, everything else different"),
    (dict(IDA, patient_id="ab12c"), dict(OTTO, patient_id="AB12C"), None, None,
     "IDs equal only in another case, name and birth date different"),
    (dict(patient_id="", name="Smith^John", birth=""), dict(patient_id="", name="Gonz?lez^Mar?a", birth=""),
     None, None, "no IDs; a name with '?' is no wildcard for any name"),
    (dict(patient_id="", name="Smith^John", birth=""), dict(patient_id="", name="Smith", birth=""),
     {"PatientSex": "F"}, {"PatientSex": "M"}, "no IDs; one name's words in the other's, another sex"),
])
def test_an_id_that_does_not_decide_leaves_it_to_the_demographics(base, other, extra, other_extra, why):
    conflict = identity_conflict(_mix(base, other, extra, other_extra))
    assert conflict is not None, why
    assert [p.instances for p in conflict.patients] == [7, 1], why
    if extra and extra.get("PatientSex"):  # what tells them apart is named
        described = [p.describe() for p in conflict.patients]
        assert described[0].endswith("PatientSex F (7 instances)") and described[1].endswith("PatientSex M (1 instance)")


def test_a_conflict_of_issuers_names_them_in_the_reason():
    conflict = identity_conflict(_mix(IDA, OTTO, {"IssuerOfPatientID": "HOSP_A"}, {"IssuerOfPatientID": "HOSP_B"}))
    assert "PatientID '12345', IssuerOfPatientID 'HOSP_A', PatientName 'Issuer^Ida'" in conflict.reason
    assert "PatientID '12345', IssuerOfPatientID 'HOSP_B', PatientName 'Other^Otto'" in conflict.reason


@pytest.mark.parametrize("base, other, extra, other_extra, why", [
    (IDA, dict(IDA, name="ISSUER^IDA"), {"IssuerOfPatientID": "HOSP_A"}, {"IssuerOfPatientID": "hosp_a "},
     "one issuer written in another case"),
    (IDA, IDA, {"IssuerOfPatientID": "HOSP_A"}, {"IssuerOfPatientID": "HOSP_B"},
     "two issuers, the same person by name, birth date and sex"),
    (IDA, dict(IDA, name="Jones^Ida", birth="19000101"), {"IssuerOfPatientID": "HOSP_A"}, None,
     "the same ID, one instance without issuer: the ID decides"),
    (dict(patient_id="", name="González^María", birth=""), dict(patient_id="", name="Gonz?lez^Mar?a", birth=""),
     None, None, "'?' where a system could not write a letter"),
    (dict(IDA, patient_id="0012345"), dict(IDA, name="ISSUER^IDA"), None, None,
     "leading zeros, the same person by the demographics"),
])
def test_one_patient_whose_id_or_name_is_written_differently_is_no_conflict(base, other, extra, other_extra, why):
    assert identity_conflict(_mix(base, other, extra, other_extra)) is None, why


def test_a_multi_valued_patient_id_is_compared_and_shown_as_its_dicom_text():
    """review45 #1: the check compared the Python repr "['123', '456']"; it compares and names "123\\456", the value
    every result object carries, and one "123\\456" throughout is one patient."""
    assert identity_conflict([_ds(["123", "456"]), _ds("123\\456", series=12)]) is None
    conflict = identity_conflict([_ds(["123", "456"]), _ds("123", series=12)])
    assert conflict is not None and "PatientID '123\\456'" in conflict.reason, conflict.reason
    assert "[" not in conflict.reason


def test_wildcard_name_matching_takes_linear_time():
    """review45 #2: each '?' run was a regex group that backtracked O(n^k) on a word that does not match (a 33
    character name against a 51 character one did not finish in 40 s); the answers stay those of the regex."""
    import time

    started = time.perf_counter()
    assert not same_name("A?" * 16 + "C", "A" * 50 + "B")
    assert not same_name("A?" * 32, "A" * 63) and same_name("A?" * 32, "A" * 64)  # each run: one letter or more
    assert same_name("A?" * 16 + "B", "A" * 50 + "B")
    assert identity_conflict([_ds("", "A" * 50 + "B", "")] * 5 + [_ds("", "A?" * 16 + "C", "")]) is not None
    assert time.perf_counter() - started < 1.0
    assert same_name("M?ller^Hans", "Müller^Hans") and same_name("M??ller^Hans", "Mueller^Hans")
    assert not same_name("M?ller^Hans", "Mller^Hans")  # a run stands for one letter at least
    assert same_name("?ller^Hans", "Müller^Hans") and same_name("M?^Hans", "Müller^Hans")
    assert not same_name("M?x^Hans", "Müller^Hans")
