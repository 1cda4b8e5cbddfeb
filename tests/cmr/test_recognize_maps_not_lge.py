"""Maps that keep their source images' header are never LGE; weak LGE evidence is said; native and post-contrast maps
are no repeats; maps are declined as not measured (break-emf findings 2, 3, 4).

2. A post-contrast T1 map made inline or on a workstation keeps its MOLLI source header (ImageType DERIVED\\PRIMARY\\
   M\\ND or ORIGINAL, ScanningSequence GR\\IR, InversionTime 100 ms: the first source TI) and no MAP word: it was
   LGE on 'ScanningSequence contains IR' alone and reported 'LGE 0 %'. An InversionTime outside the nulling range,
   'T1' beside 'post' / 'native', pixel values in ms speak against LGE; such a series is a map or 'other', and the
   LGE decline names it. An LGE analysed on one kind of evidence says so in its stack warnings.
3. A native and a post-contrast map of the same slices are two measurements (ECV needs both), never repeats; nor are
   a T2 and a T2* map, a T1 and an ECV map, or a map and its source images.
4. Every T1 / T2 mapping series gets a `declined` entry: recognised but not measured by this version.

Every series holds the real pixels of the bundled demo LGE study under the headers each vendor writes.
"""
from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset

from dicomnode.analysis.phase_text import maps_not_measured, not_lge_text
from dicomnode.analysis.run import Analyser
from dicomnode.cmr import Recognition
from dicomnode.cmr.frames import frames_of
from dicomnode.cmr.recognize import (LGE_POINTS, StudyContext, build_evidence, default_registry,
                                     weak_lge_evidence)
from dicomnode.config import Config
from tests.cmr.test_recognize_field_series import _by_number, _Study

GR_IR = {"ScanningSequence": ["GR", "IR"], "SequenceVariant": ["SK", "SP", "MP"], "SequenceName": "*tfl2d1"}
MAPPING = ("t1map", "t2map")
LGE_FIRST = {**GR_IR, "SeriesDescription": "tfl_LGE_SAX", "ImageType": ["ORIGINAL", "PRIMARY", "M", "NONE"],
             "InversionTime": "300", "SeriesTime": "084000", "AcquisitionTime": "091210"}


# ------------------------------------------------------------------ 2. maps keeping their source header
SOURCE_HEADER_MAPS = {  # name: headers of a map that keeps its source images' header, expected sequence
    # the tester's inline post-contrast T1 map (Siemens source header, no MAP word)
    "inline-post": ({**GR_IR, "SeriesDescription": "SAX_T1_post", "ImageType": ["DERIVED", "PRIMARY", "M", "ND"],
                     "InversionTime": "100"}, "t1map"),
    # the tester's GE-like site-named map: ORIGINAL, 'SAX post 15min' (a name an LGE may carry too)
    "site-named": ({**GR_IR, "SeriesDescription": "SAX post 15min", "ImageType": ["ORIGINAL", "PRIMARY", "OTHER"],
                    "SequenceVariant": ["SS", "MP"], "InversionTime": "100"}, "other"),
    # lower case, 'native' and 'pre' instead of 'post'
    "native-lower": ({**GR_IR, "SeriesDescription": "sax t1 native", "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"],
                      "InversionTime": "100"}, "t1map"),
    "pre-derived": ({**GR_IR, "SeriesDescription": "Pre_T1_SA", "ImageType": ["DERIVED", "PRIMARY", "M", "ND"],
                     "InversionTime": "110"}, "t1map"),
    # Philips TFE source header: GR + MP with the first TI, ImageType M_FFE, 'T1' beside 'post'
    "philips-tfe": ({"ScanningSequence": "GR", "SequenceVariant": "MP", "SequenceName": "", "Manufacturer": "Philips",
                     "SeriesDescription": "SA_T1_post", "ImageType": ["ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"],
                     "InversionTime": "95"}, "t1map"),
    # GE IR FGRE source header: ScanOptions IR_GEMS, the first TI, no name at all
    "ge-ir-gems-no-name": ({"ScanningSequence": "GR", "SequenceVariant": ["SK", "SP"], "ScanOptions": "IR_GEMS",
                            "SequenceName": "fgre", "Manufacturer": "GE MEDICAL SYSTEMS", "SeriesDescription": "",
                            "ProtocolName": "", "ImageType": ["ORIGINAL", "PRIMARY", "OTHER"],
                            "InversionTime": "100"}, "other"),
    # pixel values in ms (RescaleType), a TI typical of LGE copied from elsewhere: the units decide
    "rescale-ms": ({**GR_IR, "SeriesDescription": "SAX", "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"],
                    "InversionTime": "300", "RescaleType": "ms"}, "t1map"),
}


@pytest.mark.parametrize("name", list(SOURCE_HEADER_MAPS))
def test_a_map_keeping_its_source_header_is_never_the_analysed_lge(tmp_path, name):
    headers, expected = SOURCE_HEADER_MAPS[name]
    study = _Study(tmp_path)
    study.series(3101, {"ProtocolName": headers.get("SeriesDescription", ""), **headers,
                        "SeriesTime": "084000", "AcquisitionTime": "090510"}, slices=[2, 4, 6])
    cmr = study.load()
    (series,) = cmr.series
    assert series.sequence.value == expected, series.sequence.evidence
    assert series.lge_kind is None
    assert cmr.preferred("lge") is None
    said = " ".join(series.sequence.evidence)
    if expected == "other":
        assert "not LGE" in said and "against LGE" in said
        assert not_lge_text(cmr.series).startswith("; not taken as LGE")
        assert "series 3101" in not_lge_text(cmr.series)
    else:  # a native-phase word beside 'T1' names a native T1 map outright (rebreak-maps finding 1)
        assert "calculated map" in said or "a native T1" in said


@pytest.mark.parametrize("name", ["inline-post", "site-named", "philips-tfe"])
def test_a_map_keeping_its_source_header_beside_the_real_lge_leaves_the_lge_analysed(tmp_path, name):
    # the map covers more slices and comes later: before, it competed with the LGE on equal terms
    headers, _ = SOURCE_HEADER_MAPS[name]
    study = _Study(tmp_path)
    study.series(1001, LGE_FIRST, slices=[2, 3, 4])
    study.series(5001, {**headers, "SeriesTime": "093000", "AcquisitionTime": "093000"}, slices=range(8))
    cmr = study.load()
    series = _by_number(cmr)
    assert [s.series_number for s in cmr.series if s.sequence.value == "lge"] == [1001]
    assert cmr.preferred("lge", "sax").series_number == 1001
    assert not any("5001" in note for note in series[1001].notes)


def test_a_palette_color_map_keeping_its_source_header_is_not_lge(tmp_path):
    def palette(ds):
        ds.PhotometricInterpretation = "PALETTE COLOR"
        for offset in range(3):  # Red, Green, Blue (0028,1101-1103) and (0028,1201-1203)
            ds.add_new(0x00281101 + offset, "US", [256, 0, 16])
            ds.add_new(0x00281201 + offset, "OW", (np.arange(256, dtype="<u2") * 256).tobytes())

    study = _Study(tmp_path)
    study.series(3101, {**SOURCE_HEADER_MAPS["inline-post"][0]}, slices=[2, 4, 6], after=palette)
    cmr = study.load()
    (series,) = cmr.series
    assert series.sequence.value in MAPPING + ("other",), series.sequence.evidence
    assert cmr.preferred("lge") is None


def test_a_t2_map_without_ir_and_values_in_ms_is_a_t2_map(tmp_path):
    def units(ds):
        item, code = Dataset(), Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "ms", "UCUM", "millisecond"
        item.MeasurementUnitsCodeSequence = [code]
        ds.RealWorldValueMappingSequence = [item]

    study = _Study(tmp_path)
    study.series(4101, {"ScanningSequence": "GR", "SequenceVariant": ["SK", "SS"], "SequenceName": "*tfi2d1",
                        "SeriesDescription": "SAX_T2", "ImageType": ["DERIVED", "PRIMARY", "OTHER"],
                        "InversionTime": None}, slices=[2, 4, 6], after=units)
    (series,) = study.load().series
    assert series.sequence.value == "t2map", series.sequence.evidence
    assert any("ms" in e and "Real World Value Mapping" in e for e in series.sequence.evidence)


LGE_STAYS = {  # name: headers of an LGE that must stay LGE, whether its evidence is weak
    "ir-and-ti": ({**GR_IR, "SeriesDescription": "", "ProtocolName": "", "InversionTime": "300",
                   "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"]}, False),
    "psir-ti-280": ({**GR_IR, "SeriesDescription": "LGE_PSIR", "InversionTime": "280",
                     "ImageType": ["DERIVED", "PRIMARY", "PSIR", "ND"]}, False),
    "ir-only": ({**GR_IR, "SeriesDescription": "", "ProtocolName": "", "InversionTime": None,
                 "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"]}, True),
    "name-only": ({"ScanningSequence": "GR", "SequenceVariant": ["SK", "SP"], "InversionTime": None,
                   "ImageType": ["ORIGINAL", "PRIMARY", "OTHER"], "SequenceName": "fgre",
                   "SeriesDescription": "Delayed_Enh_SA"}, True),
    # a PSIR named LGE whose TI is written as 100 ms: still LGE, but the TI is said against it
    "psir-named-ti-100": ({**GR_IR, "SeriesDescription": "LGE_PSIR", "InversionTime": "100",
                           "ImageType": ["DERIVED", "PRIMARY", "PSIR", "ND"]}, True),
}


@pytest.mark.parametrize("name", list(LGE_STAYS))
def test_an_lge_stays_lge_and_says_when_its_evidence_is_weak(tmp_path, name):
    headers, weak = LGE_STAYS[name]
    study = _Study(tmp_path)
    study.series(13, headers, role="psir" if "PSIR" in headers["ImageType"] else "magnitude")
    cmr = study.load()
    (series,) = cmr.series
    assert series.sequence.value == "lge", series.sequence.evidence
    warnings = cmr.load_volume(series).warnings
    assert any(w.startswith("weak LGE evidence") for w in warnings) == weak, warnings
    if weak:
        assert any("check that this series is an LGE" in w for w in warnings)


def test_an_lge_named_magnitude_with_a_ti_no_lge_uses_is_declined_and_named(tmp_path):
    """'LGE_SAX' but an IR magnitude at TI 100 ms (no PSIR): the evidence decides neither, so nothing is analysed."""
    study = _Study(tmp_path)
    study.series(14, {**GR_IR, "SeriesDescription": "LGE_SAX", "InversionTime": "100",
                      "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"]})
    cmr = study.load()
    (series,) = cmr.series
    assert series.sequence.value == "other" and cmr.preferred("lge") is None
    assert "InversionTime 100 ms" in not_lge_text(cmr.series)


def test_a_learned_lge_answer_does_not_outvote_the_evidence_against(tmp_path):
    class _Learned:
        name, aspect = "learned-sequence", "sequence"

        def recognize(self, evidence, context):
            return Recognition("lge", 0.35, ["stub: looks like LGE"])  # learned.TAGGED_SCALE caps a tagged series

    study = _Study(tmp_path)
    study.series(3101, {**SOURCE_HEADER_MAPS["site-named"][0]}, slices=[2, 4, 6])
    (series,) = study.load().series
    evidence = build_evidence("k", [f for h in series.instances for f in frames_of(h)])
    registry = default_registry()
    registry.register(_Learned())
    answer = registry.recognize("sequence", evidence, StudyContext(series=[evidence]))
    assert answer.value == "other" and answer.confidence >= LGE_POINTS / 100
    assert weak_lge_evidence(evidence).startswith("weak LGE evidence")


# ------------------------------------------------------------------ 3. native and post-contrast maps are no repeats
def _t1_map(description, series_time="084000"):
    return {"ScanningSequence": "GR", "SequenceVariant": ["SK", "SP", "MP"], "InversionTime": None,
            "SeriesDescription": description, "ProtocolName": description,
            "ImageType": ["DERIVED", "PRIMARY", "T1 MAP", "T1"], "SeriesTime": series_time}


PRE_POST = {  # name: (native headers, post headers)
    # Siemens MyoMaps names, the same SeriesTime (the tester's build)
    "siemens-names": ({**_t1_map("MOLLI_5(3)3_SAX_T1 MAP"), "AcquisitionTime": "090510"},
                      {**_t1_map("MOLLI_4(1)3(1)2_SAX_POST_T1 MAP"), "AcquisitionTime": "093010"}),
    # Philips: one name for both; only ContrastBolusAgent says which came after the contrast
    "philips-agent": ({**_t1_map("T1map_SA"), "ImageType": ["DERIVED", "PRIMARY", "T1", "T1"],
                       "AcquisitionTime": "090510"},
                      {**_t1_map("T1map_SA"), "ImageType": ["DERIVED", "PRIMARY", "T1", "T1"],
                       "AcquisitionTime": "093010", "ContrastBolusAgent": "Gadovist"}),
    # ContrastBolusStartTime written on both (as some scanners do on every series after it is set)
    "bolus-start": ({**_t1_map("T1 Map SAX"), "AcquisitionTime": "085510", "ContrastBolusStartTime": "090000"},
                    {**_t1_map("T1 Map SAX"), "AcquisitionTime": "092010", "ContrastBolusStartTime": "090000"}),
    # GE: the same name, nothing but the time: the second map was acquired after the LGE
    "after-the-lge": ({**_t1_map("T1 Map SAX"), "AcquisitionTime": "090510"},
                      {**_t1_map("T1 Map SAX"), "AcquisitionTime": "093010"}),
    # lower-case 'native' / 'post gd' names
    "lower-case": ({**_t1_map("sax t1map native"), "AcquisitionTime": "090510"},
                   {**_t1_map("sax t1map post gd"), "AcquisitionTime": "090510"}),
}


@pytest.mark.parametrize("name", list(PRE_POST))
def test_native_and_post_contrast_maps_are_not_repeats(tmp_path, name):
    native, post = PRE_POST[name]
    study = _Study(tmp_path)
    study.series(1001, LGE_FIRST, slices=[2, 3, 4])
    study.series(2001, native, slices=[2, 3, 4])
    study.series(3001, post, slices=[2, 3, 4])
    series = _by_number(study.load())
    assert series[2001].sequence.value == series[3001].sequence.value == "t1map"
    assert series[2001].preferred and series[3001].preferred
    for number in (2001, 3001):
        assert not any("repeat of" in n or "left aside" in n for n in series[number].notes), series[number].notes
    assert any(n.startswith("post-contrast") for n in series[3001].notes), series[3001].notes


def test_two_native_maps_are_still_repeats(tmp_path):
    study = _Study(tmp_path)
    study.series(2001, {**_t1_map("MOLLI_5(3)3_SAX_T1 MAP", "090500"), "AcquisitionTime": "090510"}, slices=[2, 3, 4])
    study.series(2101, {**_t1_map("MOLLI_5(3)3_SAX_T1 MAP", "091000"), "AcquisitionTime": "091010"}, slices=[2, 3, 4])
    series = _by_number(study.load())
    assert series[2101].preferred and not series[2001].preferred
    assert any(n.startswith("repeat of t1map/sax") for n in series[2001].notes)


@pytest.mark.parametrize("first,second", [
    (("T2 MAP", "T2map_SAX"), ("T2* MAP", "T2star_SAX")),  # T2 and T2* of the same slices
    (("T1 MAP", "MOLLI_SAX_T1 MAP"), ("ECV", "MOLLI_SAX_ECV")),  # T1 and the ECV map made from it
])
def test_maps_of_different_parameters_are_not_repeats(tmp_path, first, second):
    study = _Study(tmp_path)
    for number, (token, description) in ((2001, first), (2101, second)):
        study.series(number, {"ScanningSequence": "GR", "SequenceVariant": ["SK", "SS"], "InversionTime": None,
                              "SeriesDescription": description, "ImageType": ["DERIVED", "PRIMARY", token],
                              "SeriesTime": "090500"}, slices=[2, 3, 4])
    series = _by_number(study.load())
    assert series[2001].sequence.value == series[2101].sequence.value
    assert series[2001].preferred and series[2101].preferred


def test_a_map_and_its_source_images_are_not_repeats(tmp_path):
    tis = [100, 180, 260, 1100, 1180, 2100, 2180, 3100]
    study = _Study(tmp_path)
    study.series(2000, {**GR_IR, "SeriesDescription": "MOLLI_5(3)3_SAX", "SeriesTime": "090500"}, slices=[2, 3, 4],
                 images_per_slice=8, per_image=lambda k, j: {"InversionTime": str(tis[j])})
    study.series(2001, {**_t1_map("MOLLI_5(3)3_SAX_T1 MAP", "090500")}, slices=[2, 3, 4])
    series = _by_number(study.load())
    assert series[2000].sequence.value == series[2001].sequence.value == "t1map"
    assert series[2000].preferred and series[2001].preferred


# ------------------------------------------------------------------ 4. maps are declined as not measured
def test_every_mapping_series_is_declined_as_not_measured(tmp_path):
    study = _Study(tmp_path)
    study.series(1001, LGE_FIRST, slices=[2, 3, 4])
    native, post = PRE_POST["siemens-names"]
    study.series(2001, native, slices=[2, 3, 4])
    study.series(3001, post, slices=[2, 3, 4])
    study.series(4001, {"ScanningSequence": "GR", "SequenceVariant": ["SK", "SS"], "InversionTime": None,
                        "SeriesDescription": "T2map_SAX", "ImageType": ["DERIVED", "PRIMARY", "T2 MAP"]},
                 slices=[2, 3, 4])
    cmr = study.load()
    by_uid = {s.series_instance_uid: s for s in cmr.series}
    entries = maps_not_measured(cmr.series)
    assert sorted(by_uid[uid].series_number for uid, _ in entries) == [2001, 3001, 4001]
    for uid, reason in entries:
        assert "recognised but not measured" in reason and f"series {by_uid[uid].series_number}" in reason
        assert f"({by_uid[uid].sequence.value}, sax)" in reason

    class _NoModels:
        def model(self, name):
            raise AssertionError("no pipeline runs here")

    outcome = Analyser(Config(), runtime=_NoModels()).analyse(cmr, pipelines=[])
    declined = outcome.summary["declined"]
    assert [d for d in declined if "not measured" in d["reason"]] == [
        {"series_instance_uid": uid, "reason": reason} for uid, reason in entries]
    assert all(set(d) == {"series_instance_uid", "reason"} for d in declined)  # design.md's summary.json contract


def test_source_images_are_declined_as_source_images(tmp_path):
    tis = [100, 180, 260, 1100, 1180, 2100, 2180, 3100]
    study = _Study(tmp_path)
    study.series(2000, {**GR_IR, "SeriesDescription": "MOLLI_5(3)3_SAX"}, slices=[2, 3, 4], images_per_slice=8,
                 per_image=lambda k, j: {"InversionTime": str(tis[j])})
    ((_, reason),) = maps_not_measured(study.load().series)
    assert "T1-mapping source images (8 per slice position)" in reason
