"""A calculated parametric map whose SeriesDescription / ProtocolName says nothing ('SAX_3', empty) is routed to
T1 mapping by what its header declares (recognize.declared_map), never analysed as LGE, the reason recorded in the
series' recognition evidence: ImageType map values, a Real World Value Mapping in ms, RescaleType 'T1', ImageComments
naming a map, the Parametric Map SOP class. A real LGE (magnitude 'M' / GE 'MAG', PSIR) stays LGE. Every series
holds the real pixels of the bundled demo LGE study under the headers each vendor writes."""
from __future__ import annotations

import dataclasses

import pytest
from pydicom.dataset import Dataset

from dicomnode.analysis.phase_text import maps_not_measured
from dicomnode.cmr.frames import frames_of
from dicomnode.cmr.grouping import PARAMETRIC_MAP_DECLINE
from dicomnode.cmr.recognize import build_evidence, declared_map, mapping_recognition
from dicomnode.uids import PARAMETRIC_MAP_STORAGE
from tests.cmr.test_recognize_field_series import _Study

GR_IR = {"ScanningSequence": ["GR", "IR"], "SequenceVariant": ["SK", "SP", "MP"], "SequenceName": "*tfl2d1"}
#: an unnamed series with everything an LGE magnitude acquisition carries: IR, a TI typical of LGE, ORIGINAL \ M
UNNAMED = {**GR_IR, "SeriesDescription": "SAX_3", "ProtocolName": "SAX_3", "InversionTime": "300",
           "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"]}


def _one(tmp_path, headers, after=None):
    study = _Study(tmp_path)
    study.series(3101, {**headers, "SeriesTime": "084000", "AcquisitionTime": "090510"}, slices=[2, 4, 6],
                 after=after)
    cmr = study.load()
    (series,) = cmr.series
    return cmr, series


def _rwvm(units: str | None = "ms", label: str | None = None, explanation: str | None = None):
    def after(ds):
        item = Dataset()
        if units:
            code = Dataset()
            code.CodeValue, code.CodingSchemeDesignator = units, "UCUM"
            code.CodeMeaning = "millisecond" if units == "ms" else "no units"
            item.MeasurementUnitsCodeSequence = [code]
        if label:
            item.LUTLabel = label
        if explanation:
            item.LUTExplanation = explanation
        item.RealWorldValueFirstValueMapped, item.RealWorldValueLastValueMapped = 0, 4095
        item.RealWorldValueIntercept, item.RealWorldValueSlope = 0.0, 1.0
        ds.RealWorldValueMappingSequence = [item]
    return after


def _assert_t1_map(cmr, series, reason: str, confidence: float = 0.9):
    assert series.sequence.value == "t1map", series.sequence.evidence
    assert reason in series.sequence.evidence[0], series.sequence.evidence  # the first reason recorded
    assert series.sequence.confidence >= confidence - 0.005
    assert series.lge_kind is None and cmr.preferred("lge") is None
    ((_, declined),) = maps_not_measured(cmr.series)
    assert "T1 map recognised but not measured" in declined


@pytest.mark.parametrize("description", ["SAX_3", ""])
@pytest.mark.parametrize("image_type", [["DERIVED", "PRIMARY", "T1 MAP", "ND"],  # Siemens MyoMaps
                                        ["DERIVED", "PRIMARY", "T1 MAP", "MOCO", "T1", "DIS2D"],  # Siemens MOCO map
                                        ["ORIGINAL", "PRIMARY", "T1 MAP", "T1", "UNSPECIFIED"],  # Philips
                                        ["DERIVED", "PRIMARY", "T1MAP"],  # GE / Philips
                                        ["DERIVED", "PRIMARY", "T1", "T1"]])  # Philips calculated T1
def test_an_unnamed_map_with_a_map_image_type_is_t1_mapping(tmp_path, description, image_type):
    cmr, series = _one(tmp_path, {**UNNAMED, "SeriesDescription": description, "ProtocolName": description,
                                  "ImageType": image_type})
    _assert_t1_map(cmr, series, "ImageType contains")


@pytest.mark.parametrize("description", ["SAX_3", ""])
@pytest.mark.parametrize("image_type", [["DERIVED", "PRIMARY", "MOCO", "T1"], ["ORIGINAL", "PRIMARY", "MOCO", "T1"],
                                        ["DERIVED", "PRIMARY", "T1", "MOCO"]])
def test_a_bare_t1_with_moco_does_not_outvote_an_lge_header_but_is_said(tmp_path, description, image_type):
    """A bare 'T1' ImageType value declares no map (Siemens writes 'T1 MAP' on its MOCO maps): beside MOCO (which LGE
    and cines carry too) and an LGE's IR header with TI 300 ms it is weighed and outweighed, and said as weak LGE
    evidence so that the reader checks; it was a declared map (confidence 0.9) before."""
    cmr, series = _one(tmp_path, {**UNNAMED, "SeriesDescription": description, "ProtocolName": description,
                                  "ImageType": image_type})
    assert series.sequence.value == "lge", series.sequence.evidence
    evidence = build_evidence("k", [f for h in series.instances for f in frames_of(h)])
    assert declared_map(evidence) is None and mapping_recognition(evidence) is None
    (warning,) = [w for w in cmr.stack_warnings[series.key] if w.startswith("weak LGE evidence")]
    assert "ImageType value 'T1'" in warning and "check that this series is an LGE" in warning


def test_an_unnamed_map_in_ms_by_its_real_world_value_mapping_is_t1_mapping(tmp_path):
    """RealWorldValueMappingSequence (0040,9096) with MeasurementUnitsCodeSequence UCUM 'ms': a declaration, not one
    weight among the acquisition's (it was 45 points against ORIGINAL 20 + TI 300 ms 20, at confidence 0.70)."""
    cmr, series = _one(tmp_path, UNNAMED, after=_rwvm("ms"))
    _assert_t1_map(cmr, series, "pixel values in ms (Real World Value Mapping units 'ms')")


def test_a_real_world_value_mapping_label_names_the_parameter(tmp_path):
    cmr, series = _one(tmp_path, {**UNNAMED, "ScanningSequence": "GR", "SequenceVariant": ["SK", "SP"],
                                  "InversionTime": None}, after=_rwvm(None, "T1"))
    _assert_t1_map(cmr, series, "Real World Value Mapping LUTLabel 'T1'")


@pytest.mark.parametrize("rescale", ["T1", "MS"])
def test_an_unnamed_map_with_rescale_type_t1_or_ms_is_t1_mapping(tmp_path, rescale):
    cmr, series = _one(tmp_path, {**UNNAMED, "RescaleType": rescale})
    _assert_t1_map(cmr, series, "RescaleType")


@pytest.mark.parametrize("comment", ["T1 Map", "MOLLI T1 map post", "ShMOLLI", "T1-Karte"])
def test_an_unnamed_map_named_in_its_image_comments_is_t1_mapping(tmp_path, comment):
    """Where nothing else speaks (the map keeps the inversion preparation but no InversionTime in the nulling range:
    the header is no LGE's), comments declaring a map route it to T1 mapping."""
    cmr, series = _one(tmp_path, {**UNNAMED, "InversionTime": None, "ImageComments": comment})
    _assert_t1_map(cmr, series, "ImageComments", confidence=0.75)


@pytest.mark.parametrize("comment", ["T1 Map", "MOLLI T1 map post"])
def test_comments_declaring_a_map_do_not_outvote_an_lge_header_but_are_said(tmp_path, comment):
    """break1 finding 1: free text never outvotes the acquisition header (IR, TI 300 ms, one image per position);
    a comment that declares a map is said as weak LGE evidence, so that a renamed map keeping its source header is
    checked, never silently measured nor silently dropped."""
    cmr, series = _one(tmp_path, {**UNNAMED, "ImageComments": comment})
    assert series.sequence.value == "lge", series.sequence.evidence
    assert any("not a map" in e and "does not outvote the acquisition header" in e for e in series.sequence.evidence)
    warnings = cmr.stack_warnings[series.key]
    assert warnings[0].startswith("weak LGE evidence: ImageComments") and "check that this series is an LGE" in warnings[0]


def test_image_comments_do_not_outvote_an_lge_name_or_a_psir_reconstruction(tmp_path):
    _, series = _one(tmp_path, {**UNNAMED, "SeriesDescription": "LGE_SAX", "ProtocolName": "LGE_SAX",
                                "ImageComments": "T1 map"})
    assert series.sequence.value == "lge", series.sequence.evidence


def test_a_parametric_map_instance_is_declined_as_a_map(tmp_path):
    def parametric(ds):
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = PARAMETRIC_MAP_STORAGE

    study = _Study(tmp_path)
    study.series(3101, {**UNNAMED, "ImageType": ["DERIVED", "PRIMARY"]}, slices=[2, 4, 6], after=parametric)
    cmr = study.load()
    assert cmr.series == [] and cmr.preferred("lge") is None
    (declined,) = cmr.declined
    assert declined.reason == f"3 instance(s): {PARAMETRIC_MAP_DECLINE}"


def test_the_parametric_map_sop_class_declares_a_map_to_the_recognition(tmp_path):
    """Should a Parametric Map instance reach the recognition (grouping declines it first), it is a map."""
    _, series = _one(tmp_path, UNNAMED)
    frames = [dataclasses.replace(f, header=dataclasses.replace(f.header, sop_class_uid=PARAMETRIC_MAP_STORAGE))
              for h in series.instances for f in frames_of(h)]
    evidence = build_evidence("k", frames)
    kind, why, confidence = declared_map(evidence)
    assert "Parametric Map Storage" in why and confidence == 0.95
    answer = mapping_recognition(evidence)
    assert answer.value == "t1map" and "Parametric Map Storage" in answer.evidence[0]


LGE_STAYS = {  # an LGE of each reconstruction, unnamed or named, that no map rule may take
    "siemens-magnitude-unnamed": (UNNAMED, "magnitude", None),
    "ge-mag-unnamed": ({**UNNAMED, "ImageType": ["ORIGINAL", "PRIMARY", "OTHER", "MAG"], "ScanningSequence": "GR",
                        "SequenceVariant": ["SK", "SP"], "ScanOptions": "IR_GEMS"}, "magnitude", None),
    "siemens-psir-unnamed": ({**UNNAMED, "ImageType": ["DERIVED", "PRIMARY", "PSIR", "ND"]}, "psir", None),
    "dark-blood-named": ({**UNNAMED, "SeriesDescription": "DB_LGE_SAX", "ProtocolName": "DB_LGE_SAX"},
                         "magnitude", None),
    # an ImageComments text an LGE carries (the TI) is no map name
    "comment-ti": ({**UNNAMED, "ImageComments": "TI 300"}, "magnitude", None),
    # a Real World Value Mapping in arbitrary units (Philips writes one on every image) is no map
    "rwvm-no-units": (UNNAMED, "magnitude", _rwvm("1")),
    # break1 finding 7: a label naming the image's contrast ('T1-weighted') or a parameter in unitless units ('1')
    # is signal, not a map's values
    "rwvm-t1-weighted-unitless": (UNNAMED, "magnitude", _rwvm("1", "SI", "T1-weighted signal")),
    "rwvm-t1-weighted-no-units": (UNNAMED, "magnitude", _rwvm(None, "T1W")),
    "rwvm-t1-weighting-explained": (UNNAMED, "magnitude", _rwvm(None, None, "T1 weighted image")),
    "rwvm-t1-label-unitless": (UNNAMED, "magnitude", _rwvm("1", "T1")),
}


@pytest.mark.parametrize("name", list(LGE_STAYS))
def test_a_real_lge_stays_lge(tmp_path, name):
    headers, role, after = LGE_STAYS[name]
    study = _Study(tmp_path)
    study.series(13, headers, role=role, after=after)
    cmr = study.load()
    (series,) = cmr.series
    assert series.sequence.value == "lge", series.sequence.evidence
    assert declared_map(build_evidence("k", [f for h in series.instances for f in frames_of(h)])) is None
    assert cmr.preferred("lge") is series


@pytest.mark.parametrize("units, label, kind", [(None, "T1 map", "t1"), ("ms", "T1-weighted signal", "map"),
                                                ("1", "ECV", "ecv"), ("%", "ECV", "ecv"), (None, "T2*", "t2star")])
def test_a_real_world_value_mapping_label_still_names_a_map_as_a_quantity(tmp_path, units, label, kind):
    """A label naming a parameter as a quantity still declares a map: 'T1 map'; an ECV, a fraction, also unitless;
    a weighted label in ms is a map by its units (the label then names no kind)."""
    _, series = _one(tmp_path, {**UNNAMED, "ScanningSequence": "GR", "SequenceVariant": ["SK", "SP"],
                                "InversionTime": None}, after=_rwvm(units, label))
    found = declared_map(build_evidence("k", [f for h in series.instances for f in frames_of(h)]))
    assert found is not None and found[0] == kind, found


@pytest.mark.parametrize("inversion_time, sequence", [("150", "t1map"), ("180", "t1map"), ("300", "lge")])
def test_an_unnamed_workstation_copy_is_judged_by_its_inversion_time(tmp_path, inversion_time, sequence):
    """A reviewer: an unnamed DERIVED\\SECONDARY inversion-prepared copy keeping a TI of 150-180 ms (a post-contrast
    MOLLI map re-exported with its first source TI) became an LGE with no warning once processing marks alone no
    longer made a map; a TI typical of LGE (200-450 ms) is still an LGE re-saved by a workstation."""
    cmr, series = _one(tmp_path, {**GR_IR, "SeriesDescription": "", "ProtocolName": "",
                                  "InversionTime": inversion_time, "ImageType": ["DERIVED", "SECONDARY", "OTHER"]})
    assert series.sequence.value == sequence, series.sequence.evidence
