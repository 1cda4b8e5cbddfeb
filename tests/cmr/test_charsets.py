"""Specific Character Set as real sites write it: every defined term, ISO 2022 code extensions with an empty first
value, aliases and mistakes; names survive into result objects (re-encoded where highdicom refuses the source)."""
from __future__ import annotations

import io

import highdicom as hd
import pydicom
import pytest
from pydicom.charset import convert_encodings, python_encoding
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.valuerep import PersonName
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from dicomnode import charsets
from dicomnode.cmr.grouping import read_header
from dicomnode.results.headers import derivable_header

#: (Specific Character Set as written, Python codec of the bytes (None: pydicom's ISO 2022 encoder), patient name)
CASES = [
    (["", "ISO 2022 IR 87"], "iso2022_jp", "Test^Patient=試験^患者=しけん^かんじゃ"),
    (["ISO 2022 IR 6", "ISO 2022 IR 87"], "iso2022_jp", "Yamada^Tarou=山田^太郎"),
    (["", "ISO 2022 IR 149"], None, "Hong^Gildong=洪^吉洞"),
    ("ISO_IR 100", "latin_1", "Müller^José"),
    ("ISO-IR 100", "latin_1", "Müller^José"),
    ("ISO_IR100", "latin_1", "Müller^José"),
    ("iso_ir 100", "latin_1", "Müller^José"),
    ("latin1", "latin_1", "Müller^José"),
    ("ISO-8859-1", "latin_1", "Müller^José"),
    ("UTF-8", "utf-8", "Müller^José=試験"),
    ("utf8", "utf-8", "Ørsted^Ælfrida"),
    ("ISO_IR 192", "utf-8", "Иванов^Иван"),
    ("ISO_IR 144", "iso8859_5", "Иванов^Иван"),
    ("ISO_IR 126", "iso8859_7", "Παπαδόπουλος^Γιώργος"),
    ("ISO_IR 101", "iso8859_2", "Dvořák^Antonín"),
    ("ISO_IR 148", "iso8859_9", "Öztürk^Ağa"),
    ("GB18030", "gb18030", "Wang^XiaoDong=王^小东"),
    ("ISO_IR 6", "ascii", "Plain^Ascii"),
    ("", "ascii", "Plain^Ascii"),
]


def _file(tmp_path, charset, codec: str, name: str):
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    encoded = name.encode(codec) if codec else PersonName(name).encode(convert_encodings(charset))
    ds.add_new(0x00100010, "PN", encoded)  # the bytes a scanner writes
    ds.PatientID = "P1"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.SOPClassUID = MRImageStorage
    ds.Modality = "MR"
    ds.StudyDate, ds.StudyTime = "20240131", "083000"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = tmp_path / "in.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def _written_by_highdicom(header: Dataset) -> Dataset:
    """A highdicom object that copies patient/study from `header`, written and read back."""
    obj = hd.SOPClass(study_instance_uid=header.StudyInstanceUID, series_instance_uid=generate_uid(),
                      series_number=9100, sop_instance_uid=generate_uid(), sop_class_uid="1.2.840.10008.5.1.4.1.1.88.34",
                      instance_number=1, modality="SR", manufacturer="t",
                      specific_character_set=header.get("SpecificCharacterSet"))
    obj.copy_patient_and_study_information(header)
    buffer = io.BytesIO()
    obj.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


@pytest.mark.parametrize("charset, codec, name", CASES, ids=[repr(c[0]) for c in CASES])
def test_patient_name_survives_into_results(tmp_path, charset, codec, name):
    header = read_header(_file(tmp_path, charset, codec, name))
    assert str(header.dataset.PatientName) == name
    derived = derivable_header(header.dataset)
    back = _written_by_highdicom(derived)
    assert str(back.PatientName) == name
    assert back.StudyDate == "20240131" and back.StudyTime == "083000"


def test_every_defined_term_and_its_spellings_normalise():
    for term in python_encoding:
        if not term:
            continue
        for spelling in (term, term.lower(), term.replace("_", "-"), term.replace(" ", ""), f" {term} "):
            assert charsets.normalise(spelling) == [term], spelling
    assert charsets.normalise(["", "ISO 2022 IR 87"]) == ["ISO 2022 IR 6", "ISO 2022 IR 87"]
    assert charsets.normalise(["ISO_IR 100", "ISO 2022 IR 87"]) == ["ISO 2022 IR 100", "ISO 2022 IR 87"]
    assert charsets.normalise("UTF-8") == ["ISO_IR 192"]
    assert charsets.normalise("latin1") == ["ISO_IR 100"]
    assert charsets.normalise("no-such-set") == ["no-such-set"]


def test_the_source_dataset_is_not_changed(tmp_path):
    header = read_header(_file(tmp_path, ["", "ISO 2022 IR 87"], "iso2022_jp", "Test^Patient=試験^患者"))
    before = list(header.dataset.SpecificCharacterSet)
    derivable_header(header.dataset)
    assert list(header.dataset.SpecificCharacterSet) == before


#: (Specific Character Set as declared, Python codec of the bytes actually written, patient name, what is assumed)
WRONG_BYTES = [
    ("ISO_IR 192", "latin_1", "Müller^Jürgen", "Windows-1252"),  # UTF-8 declared, Latin-1 written (break34 F3)
    ("ISO_IR 192", "cp1252", "Núñez–Zoë^Renée", "Windows-1252"),  # with a Windows-1252 en dash (0x96)
    ("", "latin_1", "Müller^José", "Windows-1252"),  # nothing declared (ASCII), Latin-1 written
    ("", "utf-8", "Müller^José=試験", "UTF-8"),  # nothing declared, UTF-8 written
    # break45b F8: UTF-8 declared ISO_IR 100 (read "MÃ¼ller" by pydicom, without complaint)
    ("ISO_IR 100", "utf-8", "Müller^Jürgen", "UTF-8"),
    ("ISO_IR 144", "utf-8", "Иванов^Иван", "UTF-8"),
    # break45b F7: GB 2312 under "\ISO 2022 IR 58" without its escape sequence (what pydicom writes; read as Latin-1)
    (["", "ISO 2022 IR 58"], "gb2312", "Zhang^XiaoDong=张^小东", "GB 2312 (ISO 2022 IR 58) without its escape"),
]


@pytest.mark.parametrize("charset, codec, name, assumed", WRONG_BYTES, ids=[f"{c[0]!r}-{c[1]}" for c in WRONG_BYTES])
def test_bytes_invalid_in_the_declared_set_are_read_by_a_stated_fallback(tmp_path, caplog, charset, codec, name,
                                                                         assumed):
    """No U+FFFD in any result: the name as written, and one WARNING per study naming the attribute."""
    path = _file(tmp_path, charset, codec, name)
    with caplog.at_level("WARNING", logger="dicomnode.charsets"):
        headers = [read_header(path) for _ in range(3)]  # the instances of one study repeat the header
    assert [str(h.dataset.PatientName) for h in headers] == [name] * 3
    back = _written_by_highdicom(derivable_header(headers[0].dataset))
    assert str(back.PatientName) == name and "\ufffd" not in str(back.PatientName)
    warned = [r.getMessage() for r in caplog.records if "PatientName" in r.getMessage()]
    assert len(warned) == 1 and assumed in warned[0], caplog.text


def test_a_real_lge_header_declared_utf8_with_latin1_bytes(tmp_path, caplog):
    """The demo LGE stack's header with ISO_IR 192 declared and the name in Latin-1, through read_header and
    derivable_header as every SEG/SR/PDF/display copy is; also when the name was decoded before (replacement
    characters): written with '?', never U+FFFD."""
    from tests.data.field_inputs import demo_lge_files

    ds = pydicom.dcmread(demo_lge_files()[0])
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.add_new(0x00100010, "PN", "Müller^Jürgen".encode("latin_1"))
    ds.save_as(tmp_path / "lge.dcm")
    with caplog.at_level("WARNING"):
        back = _written_by_highdicom(derivable_header(read_header(tmp_path / "lge.dcm").dataset))
        assert str(back.PatientName) == "Müller^Jürgen"
        decoded_before = pydicom.dcmread(tmp_path / "lge.dcm", stop_before_pixels=True)
        with pytest.warns(UserWarning):
            assert "\ufffd" in str(decoded_before.PatientName)  # pydicom's replacement characters
        back = _written_by_highdicom(derivable_header(decoded_before))
    assert str(back.PatientName) == "M?ller^J?rgen"
    assert "PatientName" in caplog.text


@pytest.mark.parametrize("charset, codec, name", [
    ("ISO_IR 100", "latin_1", "Müller^José"),  # Latin-1 letters are no UTF-8
    ("ISO_IR 100", "latin_1", "Ã©cole^Â±"),  # reads as UTF-8 "é" but not as letters: left as declared
    ("ISO_IR 144", "iso8859_5", "ФИ^ЦА"),  # C4 B8 ^ C6 B0: valid UTF-8 letters "ĸ^ư", but Cyrillic letters as declared
])
def test_text_valid_in_its_declared_set_is_read_as_declared(tmp_path, caplog, charset, codec, name):
    """The repairs above take nothing that reads correctly in its declaration: no WARNING, the name as written."""
    with caplog.at_level("WARNING", logger="dicomnode.charsets"):
        header = read_header(_file(tmp_path, charset, codec, name))
    assert str(header.dataset.PatientName) == name
    assert not [r for r in caplog.records if "PatientName" in r.getMessage()], caplog.text

