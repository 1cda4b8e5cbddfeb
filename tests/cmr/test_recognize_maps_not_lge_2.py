"""Maps with an IR header whose TI lies inside the LGE nulling range, LGE preference by recognition strength, the
MOCO-averaged LGE, 'T1' in an LGE name, and the parameter a declined map is named by (rebreak-maps findings 1, 2,
4, 5, 6). Every series holds the real pixels of the bundled demo LGE study under the headers each vendor writes.
"""
from __future__ import annotations

import pytest

from dicomnode.analysis.phase_text import maps_not_measured
from dicomnode.cmr.recognize import normalise_text
from tests.cmr.test_recognize_field_series import _by_number, _Study

GR_IR = {"ScanningSequence": ["GR", "IR"], "SequenceVariant": ["SK", "SP", "MP"], "SequenceName": "*tfl2d1"}
MAP_HEADER = {**GR_IR, "ImageType": ["DERIVED", "PRIMARY", "M", "ND"], "SpecificCharacterSet": "ISO_IR 192"}
LGE = {**GR_IR, "SeriesDescription": "LGE_SAX", "ImageType": ["ORIGINAL", "PRIMARY", "M", "NONE"],
       "InversionTime": "300", "SeriesTime": "091000", "AcquisitionTime": "091010"}


def _one(tmp_path, headers, **kwargs):
    study = _Study(tmp_path)
    study.series(3101, {"ProtocolName": headers.get("SeriesDescription", ""), **headers,
                        "SeriesTime": "084000", "AcquisitionTime": "090510"}, slices=[2, 4, 6], **kwargs)
    cmr = study.load()
    (series,) = cmr.series
    return cmr, series


# ------------------------------------------------------------------ 1. map names in many languages, native + T1
MAP_NAMES_IN_RANGE = {  # description: TI (inside 120-600 ms); each a native T1 map keeping an IR header
    "SAX_T1_native": "180", "T1 pre": "180", "native T1": "150", "T1-Karte nativ SAX": "180",
    "T1 Kartierung": "200", "Carte T1 native PA": "180", "Cartographie T1": "180", "T1 kaart": "250",
    "T1マップ 造影前 SAX": "180", "T1マッピング": "200", "T1 맵 SAX": "180", "T1 매핑": "180", "T1映射 SAX": "180",
    "T1图 短轴": "180", "短轴 图T1": "200", "Т1 карта": "180",  # Cyrillic 'Т'
    "Т1 картирование": "300", "Т1_МАР": "180",  # Cyrillic 'Т' and 'М', 'А', 'Р': a Latin 'T1_MAP' look-alike
    "ＳＡＸ Ｔ１ ｍａｐ": "200",  # full-width letters
    "T1 NATIVE SAX": "300", "SAX T1 MOCO": "250", "T1 平扫": "180", "T1 조영 전": "180",
    "T1 без контраста": "180", "T1 sin contraste": "180", "Pre-contrast T1 SAX": "260",
}


@pytest.mark.parametrize("description", list(MAP_NAMES_IN_RANGE))
def test_a_map_name_with_a_ti_in_the_nulling_range_is_a_map(tmp_path, description):
    cmr, series = _one(tmp_path, {**MAP_HEADER, "SeriesDescription": description,
                                  "InversionTime": MAP_NAMES_IN_RANGE[description]})
    assert series.sequence.value == "t1map", (description, series.sequence.evidence)
    assert cmr.preferred("lge") is None
    ((_, reason),) = maps_not_measured(cmr.series)
    assert "T1 map recognised but not measured" in reason


def test_the_ge_original_native_map_is_a_map(tmp_path):
    _, series = _one(tmp_path, {**GR_IR, "SeriesDescription": "T1 nativ SAX", "SequenceVariant": ["SS", "MP"],
                                "ImageType": ["ORIGINAL", "PRIMARY", "OTHER"], "InversionTime": "150"})
    assert series.sequence.value == "t1map", series.sequence.evidence


@pytest.mark.parametrize("text, folded", [("Т1 карта", "t1 карта"), ("ЛГЭ", "лгэ"), ("Ｔ１", "t1"),
                                          ("T1-KARTE", "t1-karte"), ("tРufi", "tpufi"),
                                          ("Т1_МАР", "t1_map"), ("карта", "карта")])
def test_normalise_text_folds_look_alikes_only_beside_latin(text, folded):
    assert normalise_text(text) == folded


LGE_WITH_T1_WORDS = {  # real LGE names with 'T1' that must stay LGE (and not weak: IR + an LGE TI)
    "SAX_T1_IR": "280", "T1_SAX_post_10min": "300", "TFL_T1_PSIR": "300", "T1 PSIR late": "300",
    "T1 IR SAX post": "320", "T1w IR 10 min": "300",
}


@pytest.mark.parametrize("description", list(LGE_WITH_T1_WORDS))
def test_an_lge_named_t1_stays_lge_without_weak_evidence(tmp_path, description):
    cmr, series = _one(tmp_path, {**GR_IR, "SeriesDescription": description,
                                  "InversionTime": LGE_WITH_T1_WORDS[description],
                                  "ImageType": ["ORIGINAL", "PRIMARY", "M", "NONE"]})
    assert series.sequence.value == "lge", series.sequence.evidence
    warnings = cmr.load_volume(series).warnings
    assert not any(w.startswith("weak LGE evidence") for w in warnings), warnings


# ------------------------------------------------------------------ 2. preference weighs the recognition
@pytest.mark.parametrize("map_description, map_time, map_number", [
    ("SAX_T1_post", "093000", 3101),  # later and higher-numbered
    ("SAX_T1_post", "091000", 3101),  # the same time, higher number
    ("T1 post 20min", "095000", 901),  # later, lower number
])
def test_a_strong_lge_beats_a_later_map_like_series_of_the_same_coverage(tmp_path, map_description, map_time,
                                                                         map_number):
    study = _Study(tmp_path)
    study.series(1001, LGE, slices=range(6))
    study.series(map_number, {**MAP_HEADER, "SeriesDescription": map_description, "InversionTime": "250",
                              "SeriesTime": map_time, "AcquisitionTime": map_time}, slices=range(6))
    cmr = study.load()
    series = _by_number(cmr)
    assert series[map_number].sequence.value == "lge"  # reads as LGE, but weaker
    assert cmr.preferred("lge", "sax").series_number == 1001
    said = " ".join(cmr.stack_warnings.get(series[1001].key, []))
    assert "strongly recognised LGE is preferred" in said


def test_two_strong_lge_repeats_still_go_by_time(tmp_path):
    study = _Study(tmp_path)
    study.series(1001, LGE, slices=range(6))
    study.series(1002, {**LGE, "SeriesTime": "092000", "AcquisitionTime": "092010"}, slices=range(6))
    cmr = study.load()
    assert cmr.preferred("lge", "sax").series_number == 1002


# ------------------------------------------------------------------ 4. MOCO-averaged LGE
@pytest.mark.parametrize("description", ["tfi_SS_SAX_MOCO_AVE", "", "SAX T1 MOCO"])
def test_a_moco_averaged_ir_series_with_an_lge_ti_is_lge(tmp_path, description):
    _, series = _one(tmp_path, {**GR_IR, "SeriesDescription": description, "InversionTime": "300",
                                "ImageType": ["DERIVED", "PRIMARY", "M", "ND", "MOCO", "AVE"]})
    assert series.sequence.value == "lge", series.sequence.evidence


def test_moco_without_ave_is_judged_on_its_inversion_time(tmp_path):
    """MOCO says the images were motion-corrected, which maps, their source images, LGE and cines all are: with an
    LGE's IR header and TI 300 ms it is an LGE (it was a map on 'MOCO' alone), with TI 0 a map."""
    _, series = _one(tmp_path, {**GR_IR, "SeriesDescription": "SAX_MOCO", "InversionTime": "300",
                                "ImageType": ["DERIVED", "PRIMARY", "M", "ND", "MOCO"]})
    assert series.sequence.value == "lge", series.sequence.evidence
    _, series = _one(tmp_path / "ti0", {**GR_IR, "SeriesDescription": "SAX_MOCO", "InversionTime": "0",
                                        "ImageType": ["DERIVED", "PRIMARY", "M", "ND", "MOCO"]})
    assert series.sequence.value == "t1map", series.sequence.evidence


# ------------------------------------------------------------------ 6. the parameter of a declined map
@pytest.mark.parametrize("description, parameter", [("SAX_ECV", "ECV map"), ("SAX extracellular volume", "ECV map"),
                                                    ("T2star_map SAX", "T2* map"), ("SAX T2* map", "T2* map"),
                                                    ("T1_map", "T1 map"), ("T2_map", "T2 map")])
def test_a_declined_map_is_named_by_its_parameter(tmp_path, description, parameter):
    cmr, series = _one(tmp_path, {**MAP_HEADER, "SeriesDescription": description, "InversionTime": "150"})
    ((_, reason),) = maps_not_measured(cmr.series)
    assert f"{parameter} recognised but not measured" in reason, reason
