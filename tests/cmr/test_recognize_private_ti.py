"""An inversion time written only in a vendor's private element (frames.PRIVATE_INVERSION_TIME) is read where
InversionTime (0018,0082) is absent, found through its private creator wherever the creator's block lies, and the
recognition evidence names the element it came from; InversionTime, where present, always wins.

Every series holds the real pixels of the bundled demo LGE study (EMIDEC-derived), as in test_recognize_field_series.
"""
from __future__ import annotations

import pydicom
from pydicom.datadict import get_private_entry
from pydicom.tag import Tag

from dicomnode.cmr.frames import PRIVATE_INVERSION_TIME, frames_of, private_inversion_time
from dicomnode.cmr.types import InstanceHeader
from tests.cmr.test_recognize_field_series import _Study

#: a Philips TFE LGE (GR + MP, no LGE word): without a TI, MP alone is no inversion preparation
PHILIPS_TFE = {"SeriesDescription": "SA_2D_TFE_BH", "ProtocolName": "SA_2D_TFE_BH", "Manufacturer": "Philips",
               "ScanningSequence": "GR", "SequenceVariant": "MP", "ScanOptions": "FC", "SequenceName": "",
               "InversionTime": None, "ImageType": ["ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"]}


def _philips_ti(value: str, creator: str = "Philips Imaging DD 001", block: int = 0x10):
    def after(ds):
        ds.add_new(Tag(0x2001, block), "LO", creator)
        ds.add_new(Tag(0x2001, (block << 8) | 0x84), "DS", value)
    return after


def test_the_private_elements_are_the_inversion_times_of_pydicoms_private_dictionary():
    for group, creator, offset, _, name in PRIVATE_INVERSION_TIME:
        assert get_private_entry(Tag(group, 0x1000 | offset), creator)[2] == name


def test_pydicoms_private_dictionary_has_no_ge_inversion_time():
    """Why no GE element is read: should pydicom learn one, it belongs in PRIVATE_INVERSION_TIME."""
    from pydicom._private_dict import private_dictionaries
    ge = [(creator, tag, entry[2]) for creator, entries in private_dictionaries.items() if creator.startswith("GEMS")
          for tag, entry in entries.items() if "inversion time" in entry[2].lower()]
    assert ge == []


def test_philips_lge_with_its_ti_only_in_a_private_element_is_lge_and_says_where_the_ti_came_from(tmp_path):
    study = _Study(tmp_path)
    study.series(1201, PHILIPS_TFE, after=_philips_ti("280"))
    (series,) = study.load().series
    assert (series.sequence.value, series.lge_kind) == ("lge", "magnitude"), series.sequence.evidence
    said = " ".join(series.sequence.evidence)
    assert "InversionTime 280 ms (nulling range 120-600)" in said
    assert "Philips private (2001,1084) 'Inversion Time'" in said and "(0018,0082) being absent" in said
    assert series.sequence.confidence == 0.85  # as with InversionTime 280: 45 (MP + TI) + 35 (TI) + 5 (GR)


def test_without_the_private_ti_the_same_series_has_no_inversion_evidence(tmp_path):
    study = _Study(tmp_path)
    study.series(1201, PHILIPS_TFE)
    (series,) = study.load().series
    assert series.sequence.value != "lge" and not any("InversionTime" in e for e in series.sequence.evidence)


def test_the_private_creator_is_found_in_any_block_and_in_any_case(tmp_path):
    study = _Study(tmp_path)
    study.series(7, PHILIPS_TFE, after=_philips_ti("300", creator="PHILIPS IMAGING DD 001", block=0x13), slices=[3])
    (path,) = (tmp_path / "S7_0").iterdir()
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert ds[0x20011384].value == "300" and (0x2001, 0x1084) not in ds
    (frame,) = frames_of(InstanceHeader(path, ds.SOPInstanceUID, ds.SOPClassUID, ds.SeriesInstanceUID, ds))
    assert frame.inversion_time == 300.0 and "(2001,1384)" in frame.inversion_source


def test_inversion_time_wins_over_a_private_one(tmp_path):
    study = _Study(tmp_path)
    study.series(1201, {**PHILIPS_TFE, "InversionTime": "280"}, after=_philips_ti("999"))
    (series,) = study.load().series
    assert series.sequence.value == "lge"
    frames = [f for header in series.instances for f in frames_of(header)]
    assert frames and all(f.inversion_time == 280.0 and f.inversion_source is None for f in frames)
    assert not any("private" in e for e in series.sequence.evidence)


def test_an_undecoded_private_ti_and_an_unknown_ge_element_are_read_as_they_should_be():
    ds = pydicom.Dataset()
    ds.add_new(0x00190011, "LO", "PHILIPS MR/PART")
    ds.add_new(0x0019116B, "UN", b"310 ")  # VR UN: a PACS that did not know the creator
    assert private_inversion_time(ds) == (310.0, "Philips private (0019,116B) 'Inversion Delay' (creator "
                                                 "'PHILIPS MR/PART')")
    ge = pydicom.Dataset()
    ge.private_block(0x0019, "GEMS_ACQU_01", create=True).add_new(0x89, "DS", "300")
    assert private_inversion_time(ge) == (None, None)  # no dictionary names a GE inversion time


def _inversion_times(value):
    def after(ds):
        ds.InversionTimes = value
    return after


def test_a_ti_only_in_the_standard_inversion_times_is_read_and_named(tmp_path):
    """InversionTimes (0018,9079), the standard attribute some classic exports write instead of (0018,0082), is read
    before any private element (dcm2niix issue 380 reads it as the same fall-back)."""
    study = _Study(tmp_path)
    study.series(1201, PHILIPS_TFE, after=_inversion_times([280.0]))
    (series,) = study.load().series
    assert (series.sequence.value, series.lge_kind) == ("lge", "magnitude"), series.sequence.evidence
    said = " ".join(series.sequence.evidence)
    assert "InversionTime 280 ms" in said and "read from InversionTimes (0018,9079)" in said


def test_an_implausible_inversion_times_value_is_no_inversion_time(tmp_path):
    """'0\\1.797e308' as a Philips classic export wrote it (dcm2niix issue 385): no TI, so no inversion evidence."""
    study = _Study(tmp_path)
    study.series(1201, PHILIPS_TFE, after=_inversion_times([0.0, 1.7976931348623157e308]))
    (series,) = study.load().series
    frames = [f for header in series.instances for f in frames_of(header)]
    assert all(f.inversion_time is None for f in frames)
    assert series.sequence.value != "lge" and not any("InversionTime" in e for e in series.sequence.evidence)
