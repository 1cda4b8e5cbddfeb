"""Every text a result object holds is written in its Specific Character Set, never as "?" (break40b F7): the SR's
flags ("≤ 45 %", "106–214 mL") on a Latin-1 or Japanese source make the object ISO_IR 192, names re-encoded."""
from __future__ import annotations

import io
import warnings

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicomnode.results.headers import encodable, fit_character_set

FLAG = "RVEF below the RV systolic dysfunction cut-off (35.1 %; dysfunction at ≤ 45 %); men 106–214 mL"
JIS_NAME = "Yamada^Taro=山田^太郎=やまだ^たろう"  # as c01b_charset_jis (ISO 2022 IR 87)


def _object(charset, name: str, text: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.88.34", generate_uid()
    ds.SpecificCharacterSet, ds.PatientName = charset, name
    item = Dataset()
    item.ValueType, item.TextValue = "TEXT", text
    ds.ContentSequence = [item]
    return ds


def _written(ds: Dataset) -> Dataset:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pydicom warns where it writes a replacement character
        ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return pydicom.dcmread(buffer)


@pytest.mark.parametrize("charset, name", [("ISO_IR 100", "Müller^Zoë"), (["", "ISO 2022 IR 87"], JIS_NAME),
                                           ("ISO_IR 192", "Παπαδόπουλος^Γιώργος"), (None, "Smith^John")])
def test_text_the_character_set_cannot_hold_makes_the_object_utf8(charset, name):
    ds = _object(charset, name, FLAG)
    fit_character_set(ds)
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    read = _written(ds)
    assert str(read.PatientName) == name and read.ContentSequence[0].TextValue == FLAG


@pytest.mark.parametrize("charset, name, text", [("ISO_IR 100", "Müller^Zoë", "Größe 1.80 m"),
                                                 (["", "ISO 2022 IR 87"], JIS_NAME, "山田 LV EDV 81.4 mL")])
def test_text_the_character_set_holds_keeps_it(charset, name, text):
    ds = _object(charset, name, text)
    fit_character_set(ds)
    assert ds.SpecificCharacterSet == charset
    read = _written(ds)
    assert str(read.PatientName) == name and read.ContentSequence[0].TextValue == text


def test_a_read_object_is_decoded_with_its_own_set_before_it_is_re_encoded():
    """A display copy is a source read from disk: its raw Japanese name must be decoded as JIS, not as UTF-8."""
    source = _written(_object(["", "ISO 2022 IR 87"], JIS_NAME, "no flag"))
    source.SeriesDescription = "AI display copy – phase 1"
    fit_character_set(source)
    read = _written(source)
    assert read.SpecificCharacterSet == "ISO_IR 192" and str(read.PatientName) == JIS_NAME


def test_encodable_checks_each_run_of_a_code_extension():
    assert encodable("山田 abc", ["", "ISO 2022 IR 87"]) and not encodable("≤", ["ISO_IR 100"])
    assert not encodable("山田 –", ["", "ISO 2022 IR 87"]) and encodable("–≤", ["ISO_IR 192"])
