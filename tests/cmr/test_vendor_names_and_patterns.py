"""break47a findings 5-9: what a series is, read from its geometry and timing when its name is not English.

5: a 3-plane localizer (5 axial, 5 sagittal, 5 coronal, as GE sends it) named in German, Japanese or not at all is
   one localizer, not three 'other' stacks of which two are 'repeats not preferred';
6: a TI scout without a name (TI rising with TriggerTime inside one beat after one inversion) is a TI scout, not
   T1-mapping source images; MOLLI source images without a name stay t1map;
7: single-shot LGE repetitions (8 images per slice at ONE TI over several heartbeats, what a MOCO average is made
   of) are no T1-mapping source images;
8: Japanese / Chinese view names (2腔像 / 3腔像 / 4腔像, 短軸) are view hints, and a description that the plane's
   geometry contradicts is said;
9: a stack merged from one-slice series numbered in their description ('... Schicht 1' ... 'Schicht 6') is
   described as all of them ('... Schicht 1-6'), not as its first slice.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from dicomnode.cmr.grouping import merged_description
from dicomnode.cmr.recognize import CANONICAL_LONG_AXIS, LongAxisViewRule, _view_hint, normalise_text
from tests.cmr.test_recognize_field_series import _by_number, _Study

GR_IR = {"ScanningSequence": ["GR", "IR"], "SequenceVariant": ["SK", "SP", "MP"], "SequenceName": "*tfl2d1",
         "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"]}
#: (ImageOrientationPatient, axis the slices step along) of the three planes of a GE 3-plane localizer
BODY_PLANES = [([1, 0, 0, 0, 1, 0], 2), ([0, 1, 0, 0, 0, -1], 0), ([1, 0, 0, 0, 0, -1], 1)]


def _localizer_image(position: int, plane: int) -> dict:
    orientation, axis = BODY_PLANES[plane]
    corner = [-120.0, -120.0, 120.0]
    corner[axis] = -20.0 + 10.0 * position
    return {"ImageOrientationPatient": orientation, "ImagePositionPatient": corner, "SliceLocation": None,
            "InversionTime": None, "TriggerTime": None}


@pytest.mark.parametrize("name", ["Lokalisierer", "ロカライザ", ""], ids=["german", "japanese", "empty"])
def test_a_three_plane_localizer_of_any_name_stays_one_localizer(tmp_path, name):
    study = _Study(tmp_path)
    study.series(30, {"SeriesDescription": "LGE_SAX"})
    study.series(1, {"SpecificCharacterSet": "ISO_IR 192", "SeriesDescription": name, "ProtocolName": name,
                     "ScanningSequence": "GR", "SequenceVariant": "SS", "SequenceName": "fgre",
                     "ImageType": ["ORIGINAL", "PRIMARY", "OTHER"]},
                 slices=range(5), images_per_slice=3, per_image=_localizer_image)
    cmr = study.load()
    (localizer,) = [s for s in cmr.series if s.series_number == 1]
    assert localizer.sequence.value == "localizer", localizer.sequence.evidence
    assert localizer.slices == 15 and sorted(localizer.planes) == ["axial", "coronal", "sagittal"]
    assert not any("split into one stack each" in n or "not preferred" in n for n in localizer.notes)
    assert cmr.preferred("lge").series_number == 30


def test_oblique_stacks_of_one_series_are_still_split(tmp_path):
    # the localizer exception is for body planes only: a short-axis stack and an oblique stack across it (a
    # Philips multi-stack scan) are still two stacks, whatever the name
    def image(position, plane):
        if plane == 0:
            return {}
        return {"ImageOrientationPatient": [0.6, 0.8, 0.0, 0.0, 0.0, -1.0], "SliceLocation": None,
                "ImagePositionPatient": [-60.0 + 8.0 * position * 0.8, 60.0 - 8.0 * position * 0.6, 80.0]}
    study = _Study(tmp_path)
    study.series(30, {"SeriesDescription": ""}, slices=range(5), images_per_slice=2, per_image=image)
    numbered = [s for s in study.load().series if s.series_number == 30]
    assert len(numbered) == 2
    assert all(any("split into one stack each" in n for n in s.notes) for s in numbered)


def _ti_scout(tmp_path, name: str, slices=(3,)):
    study = _Study(tmp_path)
    study.series(30, {"SeriesDescription": "LGE_SAX"})
    study.series(8, {**GR_IR, "SeriesDescription": name, "ProtocolName": name}, slices=list(slices),
                 images_per_slice=15,
                 per_image=lambda k, j: {"InversionTime": str(100 + 40 * j), "TriggerTime": str(30 + 40 * j)})
    return _by_number(study.load())[8]


@pytest.mark.parametrize("slices", [(3,), (2, 3, 4)], ids=["one-slice", "three-slices"])
def test_an_unnamed_ti_scout_is_a_ti_scout_not_t1_mapping(tmp_path, slices):
    scout = _ti_scout(tmp_path, "", slices)
    assert scout.sequence.value == "other", scout.sequence.evidence
    assert any("a TI scout" in e for e in scout.sequence.evidence)
    assert not any("T1-mapping" in e or "T1 map" in e for e in scout.sequence.evidence)


def test_unnamed_molli_source_images_stay_t1map(tmp_path):
    # three inversions, TI 100-5100 ms at one TriggerTime: not one inversion, so no TI scout
    tis = [100, 180, 260, 1100, 1180, 1260, 2100, 2180, 3100, 4100, 5100]
    study = _Study(tmp_path)
    study.series(30, {"SeriesDescription": "LGE_SAX"})
    study.series(20, {**GR_IR, "SeriesDescription": ""}, slices=[2, 3, 4], images_per_slice=len(tis),
                 per_image=lambda k, j: {"InversionTime": str(tis[j]), "TriggerTime": "500"})
    series = _by_number(study.load())[20]
    assert series.sequence.value == "t1map", series.sequence.evidence


def test_single_shot_lge_repetitions_at_one_ti_are_not_t1_mapping(tmp_path):
    study = _Study(tmp_path)
    study.series(20, {**GR_IR, "SeriesDescription": "de_SS_MOCO_AVE_SAX", "InversionTime": "300",
                      "ImageType": ["DERIVED", "PRIMARY", "M", "NORM", "DIS2D", "MOCO", "AVE"]}, slices=range(5))
    study.series(19, {**GR_IR, "SeriesDescription": "de_SS_SAX", "InversionTime": "300"}, slices=range(5),
                 images_per_slice=8, per_image=lambda k, j: {"TriggerTime": str(400 + 800 * j),
                                                             "AcquisitionNumber": str(j + 1)})
    cmr = study.load()
    repetitions = _by_number(cmr)[19]
    assert repetitions.sequence.value == "other", repetitions.sequence.evidence
    (said,) = repetitions.sequence.evidence
    assert "single-shot LGE repetitions" in said and "one TI fits no T1" in said
    assert cmr.preferred("lge").series_number == 20


def test_repetitions_at_several_tis_over_several_beats_stay_t1_mapping(tmp_path):
    # the heartbeat rule itself stands where the TI is not one value (here absent on every image but one)
    study = _Study(tmp_path)
    study.series(30, {"SeriesDescription": "LGE_SAX"})
    study.series(19, {**GR_IR, "SeriesDescription": "", "InversionTime": None}, slices=range(5), images_per_slice=8,
                 per_image=lambda k, j: {"TriggerTime": str(400 + 800 * j),
                                         **({"InversionTime": "300"} if j == 0 else {})})
    series = _by_number(study.load())[19]
    assert series.sequence.value == "t1map", series.sequence.evidence


@pytest.mark.parametrize("description,view", [
    ("Cine 2腔像", "2ch"), ("Cine 3腔像", "3ch"), ("Cine 4腔像", "4ch"), ("シネ ４腔像", "4ch"), ("遅延造影 二腔像", "2ch"),
    ("电影 两腔心", "2ch"), ("四腔心 延迟强化", "4ch"), ("遅延造影 短軸", "sax"), ("延迟强化 短轴", "sax")])
def test_japanese_and_chinese_view_names_are_view_hints(description, view):
    evidence = SimpleNamespace(text_hints=lambda: normalise_text(description))
    assert _view_hint(evidence)[0] == view


def _long_axis_plane(rotation_deg: float, description: str) -> SimpleNamespace:
    """A single plane containing the typical LV long axis, turned rotation_deg from the vertical long-axis plane."""
    axis = CANONICAL_LONG_AXIS
    reference = np.cross([0.0, 0.0, 1.0], np.array([axis[0], axis[1], 0.0]))
    reference -= axis * np.dot(reference, axis)
    reference /= np.linalg.norm(reference)
    turned = np.cross(axis, reference)
    angle = np.radians(rotation_deg)
    normal = np.cos(angle) * reference + np.sin(angle) * turned
    return SimpleNamespace(single_orientation=True, slices=1, normal=normal,
                           text_hints=lambda: normalise_text(description))


@pytest.mark.parametrize("description", ["Cine 2腔像", "Cine 2-Kammerblick", "Cine 2 cavités"])
def test_a_view_name_the_geometry_contradicts_is_said(description):
    rule, context = LongAxisViewRule(), SimpleNamespace(sax_stacks=lambda: [])
    answer = rule.recognize(_long_axis_plane(80.0, description), context)
    assert answer.value == "2ch"
    assert any("the description says 2ch, the plane's geometry 4ch" in e for e in answer.evidence)
    agreeing = rule.recognize(_long_axis_plane(5.0, description), context)
    assert agreeing.value == "2ch" and not any("the description says" in e for e in agreeing.evidence)


def test_a_stack_merged_from_numbered_series_is_described_as_all_of_them(tmp_path):
    study = _Study(tmp_path)
    for k in range(6):
        study.series(1001 + k, {"SeriesDescription": f"LGE Kurzachse Schicht {k + 1}"}, slices=[k])
    (merged,) = study.load().series
    assert merged.slices == 6 and len(merged.series_instance_uids) == 6
    assert merged.description == "LGE Kurzachse Schicht 1-6"
    assert merged.summary()["series_description"] == "LGE Kurzachse Schicht 1-6"


@pytest.mark.parametrize("descriptions,expected", [
    (["cine_sax", "cine_sax"], "cine_sax"),
    (["SA 3 slice 1", "SA 3 slice 2", "SA 3 slice 12"], "SA 3 slice 1-12"),
    (["LGE SA", "LGE sa"], "LGE SA / LGE sa"),
    (["a", "b", "c", "d"], "a / b / c / …"),
    ([], "")])
def test_merged_description(descriptions, expected):
    assert merged_description(descriptions) == expected
