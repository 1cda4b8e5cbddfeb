"""Every result object of a study names the source's patient in its own Specific Character Set (break41b F2): the
TID 1500 SR re-encoded as ISO_IR 192 (its flags hold "≤" and "–") shared its PatientName element with the
suggestions SR, which then wrote the UTF-8 bytes of "Müller^Jürgen" under ISO_IR 100 ("MÃ¼ller^JÃ¼rgen")."""
from __future__ import annotations

import io
import warnings

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import PersonName

from dicomnode.results.headers import fit_character_set, own_header
from dicomnode.results.objects import build_result_objects
from synthetic import make_study

FLAG = "slice gap 10.0 mm ≤ 12 mm – kept"  # text no single-byte or JIS repertoire holds: the SR becomes ISO_IR 192
JIS_NAME = "Yamada^Taro=山田^太郎=やまだ^たろう"


def _written(ds: Dataset) -> Dataset:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return pydicom.dcmread(buffer)


@pytest.mark.parametrize("charset, name", [("ISO_IR 100", "Müller^Jürgen"), (["", "ISO 2022 IR 87"], JIS_NAME)])
def test_every_result_object_names_the_source_patient(charset, name):
    study, results, context = make_study(slices=4, cine_phases=4)
    for series in study.series:
        for instance in series.instances:
            instance.dataset.SpecificCharacterSet = charset
            instance.dataset.PatientName = name
            instance.dataset.ReferringPhysicianName = name
    results[1].summary["stack_warnings"] = [FLAG]
    objects = build_result_objects(study, results, context)
    by_series = {int(ds.SeriesNumber): ds for ds in objects}
    assert {9100, 9101} <= set(by_series)
    assert by_series[9100].SpecificCharacterSet == "ISO_IR 192"  # the case of the finding: one object re-encoded
    for ds in objects:  # in the order a node sends them: the re-encoded SR before the suggestions SR
        written = _written(ds)
        assert str(written.PatientName) == name, (ds.Modality, ds.SeriesNumber, written.get("SpecificCharacterSet"))
        assert str(written.ReferringPhysicianName) == name, (ds.Modality, ds.SeriesNumber)


def test_re_encoding_one_object_leaves_another_built_from_the_same_header_as_it_was():
    header = Dataset()
    header.SpecificCharacterSet = "ISO_IR 100"
    header.PatientName = "Müller^Jürgen"
    item = Dataset()
    item.CodeMeaning = "Herz-MRT"
    header.ProcedureCodeSequence = [item]
    first, second = own_header(header), own_header(header)
    for keyword in ("PatientName", "ProcedureCodeSequence", "SpecificCharacterSet"):
        assert first[keyword] is not second[keyword] and first[keyword] is not header[keyword]
    assert first.ProcedureCodeSequence[0] is not header.ProcedureCodeSequence[0]
    assert first.PatientName is not second.PatientName
    # objects built by highdicom share the header's elements as they are; re-encoding one replaces, never changes them
    shared = header["PatientName"]
    one, other = Dataset(), Dataset()
    for ds in (one, other):
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.add(shared)
        ds.add(header["ProcedureCodeSequence"])
    one.TextValue = FLAG
    fit_character_set(one)
    assert one.SpecificCharacterSet == "ISO_IR 192"
    assert one["PatientName"] is not shared and other["PatientName"] is shared
    assert one["ProcedureCodeSequence"].value[0] is not item
    assert str(_written(_as_file(one)).PatientName) == "Müller^Jürgen"
    raw = _written(_as_file(other))
    assert raw.SpecificCharacterSet == "ISO_IR 100" and str(raw.PatientName) == "Müller^Jürgen"
    assert isinstance(other.PatientName, PersonName)


def _as_file(ds: Dataset) -> Dataset:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.88.34", generate_uid()
    return ds


def test_an_invalid_value_in_the_source_header_is_left_out_and_every_object_is_built(caplog):
    """break43b #4: TriggerTime "abc" (DS) in the source images stopped the measurement SR and the suggestions SR
    from being built (own_elements re-made the element outside its error handling). The value is left out of the
    result objects with a WARNING naming it, and every object is built and can be written."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    study, results, context = make_study(slices=4, cine_phases=4)
    healthy = {(ds.Modality, int(ds.SeriesNumber)) for ds in build_result_objects(study, results, context)}
    study, results, context = make_study(slices=4, cine_phases=4)
    for series in study.series:
        for instance in series.instances:
            instance.dataset[0x00181060] = RawDataElement(Tag(0x00181060), "DS", 4, b"abc ", 0, False, True)
    objects = build_result_objects(study, results, context)
    assert {(ds.Modality, int(ds.SeriesNumber)) for ds in objects} == healthy
    assert any(ds.Modality == "SR" for ds in objects)
    for ds in objects:
        written = _written(ds)
        if ds.Modality == "SR":
            assert "TriggerTime" not in written
    assert "TriggerTime (VR DS) value 'abc'" in caplog.text and "left out of the result objects" in caplog.text
