"""Weak evidence never outvotes the series' own (break1 findings 0, 1, 2):

0. an exam-level ProtocolName naming mapping ('CARDIAC T1 MAPPING', 'CMR LGE + T1 map + ECV', GE writes the exam
   protocol into every series) no longer turns the study's cine and LGE into maps: it is weaker than the
   SeriesDescription and the acquisition header, does not count where it names several techniques or where a cine /
   LGE of the study shares it, and still names a map where nothing else speaks;
1. ImageComments that only mention a map ('10 min after MOLLI', 'T1 map not done (AF)') leave an LGE an LGE;
2. an unnamed later series on an IR header alone (a T1 map keeping its source header reads the same) does not
   displace a named LGE of the same slices: it is left aside, the reason said.

Real pixels: the bundled demo LGE (EMIDEC-derived) under the headers each case writes, and the real GE cine of
Sunnybrook SCD0000101 (12 slices x 20 phases, empty SeriesDescription)."""
from __future__ import annotations

import pydicom
import pytest

from dicomnode.cmr.recognize import build_evidence, mapping_recognition, protocol_not_taken
from dicomnode.cmr.frames import frames_of
from tests.cmr.test_recognize_field_series import MOLLI_TI, _by_number, _Study

#: Sunnybrook UIDs have leading-zero components; pydicom warns on every read
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI")

GR_IR = {"ScanningSequence": ["GR", "IR"], "SequenceVariant": ["SK", "SP", "MP"], "SequenceName": "*tfl2d1"}
#: a textbook LGE magnitude acquisition without a name: IR, TI 300 ms, ORIGINAL \ M, one image per position
UNNAMED_LGE = {**GR_IR, "SeriesDescription": "SAX_3", "ProtocolName": "SAX_3", "InversionTime": "300",
               "ImageType": ["ORIGINAL", "PRIMARY", "M", "NONE"]}
EXAM_PROTOCOLS = ["CARDIAC T1 MAPPING", "CMR LGE + T1 map + ECV", "Heart^T2 map oedema"]


def _with_sunnybrook_cine(study: _Study, datasets, protocol: str) -> None:
    """The real GE cine of SCD0000101 (empty SeriesDescription) in the study, with the exam's ProtocolName."""
    folder = study.root / "cine"
    folder.mkdir()
    for path in sorted((datasets / "sunnybrook-scd" / "dicoms" / "SCD0000101").glob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.ProtocolName, ds.SeriesNumber = study.study_uid, protocol, 300
        ds.save_as(folder / path.name)


# ------------------------------------------------------------------ 0. the exam's ProtocolName
@pytest.mark.parametrize("protocol", EXAM_PROTOCOLS)
def test_an_exam_protocol_naming_mapping_leaves_the_cine_and_the_lge_theirs(tmp_path, datasets, protocol):
    study = _Study(tmp_path)
    study.series(10, {**GR_IR, "SeriesDescription": "MDE SAX", "ProtocolName": protocol, "InversionTime": "300",
                      "ImageType": ["ORIGINAL", "PRIMARY", "M", "NONE"]})
    _with_sunnybrook_cine(study, datasets, protocol)
    cmr = study.load()
    series = _by_number(cmr)
    assert series[300].sequence.value == "cine", series[300].sequence.evidence
    assert series[10].sequence.value == "lge", series[10].sequence.evidence
    assert cmr.preferred("lge").series_number == 10 and cmr.preferred("cine").series_number == 300
    assert any(e.startswith("[cine-rule] ProtocolName") and "not taken" in e for e in series[300].sequence.evidence)


@pytest.mark.parametrize("description", ["LGE_SAX", "PSIR SAX", "MDE SAX", "SAX_3", ""])
def test_the_series_description_and_the_lge_header_outvote_a_mapping_protocol(tmp_path, description):
    """Alone in its study (no sibling shows the protocol is the exam's): the SeriesDescription, else the IR header
    with TI 300 ms, decides."""
    study = _Study(tmp_path)
    study.series(10, {**UNNAMED_LGE, "SeriesDescription": description, "ProtocolName": "CARDIAC T1 MAPPING (ECV)"},
                 slices=[2, 4, 6])
    cmr = study.load()
    (series,) = cmr.series
    assert series.sequence.value == "lge", series.sequence.evidence
    assert cmr.preferred("lge") is series


def test_a_protocol_shared_with_the_studys_lge_is_the_exams(tmp_path):
    """A derived unnamed series without an LGE's or a cine's header, sharing 'CARDIAC T1 MAPPING' with an LGE of the
    study: the protocol is the exam's, not evidence that this series is a map."""
    study = _Study(tmp_path)
    study.series(10, {**UNNAMED_LGE, "SeriesDescription": "LGE_SAX", "ProtocolName": "CARDIAC T1 MAPPING"},
                 slices=[2, 4, 6])
    study.series(11, {"SeriesDescription": "", "ProtocolName": "CARDIAC T1 MAPPING", "ScanningSequence": "GR",
                      "SequenceVariant": "SK", "InversionTime": None,
                      "ImageType": ["DERIVED", "PRIMARY", "OTHER"]}, slices=[2, 4, 6])
    cmr = study.load()
    series = _by_number(cmr)
    assert series[10].sequence.value == "lge"
    assert series[11].sequence.value != "t1map", series[11].sequence.evidence
    frames = [f for h in series[11].instances for f in frames_of(h)]
    assert mapping_recognition(build_evidence("k", frames)) is not None  # alone, the protocol would have named it
    assert cmr.preferred("lge").series_number == 10


# controls: what really is a map stays one
def test_a_map_named_molli_under_an_exam_protocol_stays_a_map(tmp_path):
    study = _Study(tmp_path)
    study.series(10, {**UNNAMED_LGE, "SeriesDescription": "LGE_SAX", "ProtocolName": "CARDIAC T1 MAPPING"},
                 slices=[2, 4, 6])
    study.series(12, {**GR_IR, "SeriesDescription": "MOLLI SAX", "ProtocolName": "CARDIAC T1 MAPPING",
                      "InversionTime": "300", "ImageType": ["ORIGINAL", "PRIMARY", "M", "NONE"],
                      "SeriesTime": "102000"}, slices=[2, 4, 6])
    cmr = study.load()
    series = _by_number(cmr)
    assert series[12].sequence.value == "t1map", series[12].sequence.evidence
    assert series[10].sequence.value == "lge" and cmr.preferred("lge").series_number == 10


def test_an_empty_description_with_a_t1_map_image_type_stays_a_map(tmp_path):
    study = _Study(tmp_path)
    study.series(12, {**UNNAMED_LGE, "SeriesDescription": "", "ProtocolName": "CARDIAC",
                      "ImageType": ["DERIVED", "PRIMARY", "T1 MAP", "ND"]}, slices=[2, 4, 6])
    (series,) = study.load().series
    assert series.sequence.value == "t1map", series.sequence.evidence
    assert "ImageType contains 'T1 MAP'" in series.sequence.evidence[0]


def test_a_molli_like_series_named_only_by_its_protocol_stays_mapping_source(tmp_path):
    study = _Study(tmp_path)
    study.series(12, {**GR_IR, "SeriesDescription": "", "ProtocolName": "T1 MAPPING"}, slices=[2, 3, 4],
                 images_per_slice=8, per_image=lambda k, i: {"InversionTime": str(MOLLI_TI[i]),
                                                             "TriggerTime": "450"})
    (series,) = study.load().series
    assert series.sequence.value == "t1map", series.sequence.evidence


def test_a_series_that_says_nothing_else_is_named_a_map_by_its_protocol(tmp_path):
    """Weak evidence still counts where nothing else speaks: a derived unnamed series without IR or a cine's
    timing, alone with 'T1 MAPPING' in its ProtocolName, is T1 mapping at a lowered confidence."""
    study = _Study(tmp_path)
    study.series(12, {"SeriesDescription": "", "ProtocolName": "T1 MAPPING", "ScanningSequence": "GR",
                      "SequenceVariant": "SK", "InversionTime": None, "ImageType": ["DERIVED", "PRIMARY", "OTHER"]},
                 slices=[2, 4, 6])
    (series,) = study.load().series
    assert series.sequence.value == "t1map", series.sequence.evidence
    assert series.sequence.confidence < 0.75
    assert any("ProtocolName only" in e for e in series.sequence.evidence)
    frames = [f for h in series.instances for f in frames_of(h)]
    assert protocol_not_taken(build_evidence("k", frames)) is None


# ------------------------------------------------------------------ 1. comments that mention a map
@pytest.mark.parametrize("comment", ["10 min after MOLLI", "T1 map not done (AF)", "compare with T2 map (oedema)",
                                     "see T1 map", "before ECV map"])
def test_comments_that_mention_a_map_leave_an_lge_an_lge(tmp_path, comment):
    study = _Study(tmp_path)
    study.series(10, {**UNNAMED_LGE, "ImageComments": comment}, slices=[2, 4, 6])
    cmr = study.load()
    (series,) = cmr.series
    assert series.sequence.value == "lge", series.sequence.evidence
    assert cmr.preferred("lge") is series
    assert any("a mention of another series" in e for e in series.sequence.evidence), series.sequence.evidence
    assert not any(w.startswith("weak LGE evidence") for w in cmr.stack_warnings.get(series.key, []))


@pytest.mark.parametrize("comment", ["10 min after MOLLI", "T1 map not done (AF)"])
def test_a_mention_does_not_route_a_series_that_says_nothing_else(tmp_path, comment):
    """A mention is no declaration even where the header does not speak (IR prepared, no InversionTime)."""
    study = _Study(tmp_path)
    study.series(10, {**UNNAMED_LGE, "InversionTime": None, "ImageComments": comment}, slices=[2, 4, 6])
    (series,) = study.load().series
    assert series.sequence.value != "t1map", series.sequence.evidence


# ------------------------------------------------------------------ 2. a named LGE against a later unnamed series
@pytest.mark.parametrize("image_type", [["ORIGINAL", "PRIMARY", "M", "NONE"], ["DERIVED", "PRIMARY", "M", "NONE"]])
def test_a_later_unnamed_ir_series_does_not_displace_a_named_lge(tmp_path, image_type):
    study = _Study(tmp_path)
    study.series(10, {**UNNAMED_LGE, "SeriesDescription": "LGE_SAX", "ProtocolName": "LGE_SAX",
                      "SeriesTime": "100000", "AcquisitionTime": "100000"}, slices=[2, 3, 4, 5])
    study.series(12, {**UNNAMED_LGE, "ImageType": image_type, "SeriesTime": "102000", "AcquisitionTime": "102000"},
                 slices=[2, 3, 4, 5])
    cmr = study.load()
    series = _by_number(cmr)
    assert series[10].sequence.value == series[12].sequence.value == "lge"
    assert cmr.preferred("lge").series_number == 10
    (warning,) = [w for w in cmr.stack_warnings[series[10].key] if "left aside" in w]
    assert "SAX_3" in warning and "inversion-recovery header only" in warning and "named 'lge'" in warning
    assert "whatever the times" in warning


def test_an_unnamed_psir_beside_a_named_magnitude_is_still_preferred(tmp_path):
    """Control: a phase-sensitive reconstruction is as much an LGE's own evidence as its name (no map is one), so
    PSIR over magnitude still applies."""
    study = _Study(tmp_path)
    study.series(10, {**UNNAMED_LGE, "SeriesDescription": "LGE_SAX_MAG", "ProtocolName": "LGE_SAX"},
                 slices=[2, 3, 4])
    study.series(11, {**UNNAMED_LGE, "ImageType": ["DERIVED", "PRIMARY", "PSIR", "ND"]}, role="psir",
                 slices=[2, 3, 4])
    cmr = study.load()
    assert cmr.preferred("lge").series_number == 11


def test_two_unnamed_repeats_still_take_the_latest(tmp_path):
    study = _Study(tmp_path)
    study.series(10, {**UNNAMED_LGE, "SeriesTime": "100000", "AcquisitionTime": "100000"}, slices=[2, 3, 4])
    study.series(12, {**UNNAMED_LGE, "SeriesTime": "102000", "AcquisitionTime": "102000"}, slices=[2, 3, 4])
    cmr = study.load()
    assert cmr.preferred("lge").series_number == 12
