"""Recognition of LGE and mapping series as scanners send them (lgebreak defects 1, 2, 3, 4, 9, 10): parametric maps
and their source images are mapping whatever their IR / TI say; an LGE stack stays LGE when TriggerTime or
InversionTime differ between slices; magnitude / PSIR come from ImageType before the protocol name; description
hints with underscores and in other languages; long-axis LGE in one series is LGE, not a localizer.

Every series holds the real pixels of the bundled demo LGE study (EMIDEC-derived; tests/data/field_inputs), under
the headers each vendor writes (the mapping series carry LGE pixels: what is checked is what the series is called).
"""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from dicomnode.cmr import load_studies
from dicomnode.cmr.recognize import normalise_text
from tests.data.field_inputs import lge_variant

GR_IR = {"ScanningSequence": ["GR", "IR"], "SequenceVariant": ["SK", "SP", "MP"], "SequenceName": "*tfi2d1_80"}
MOLLI_TI = [100, 180, 260, 1100, 1180, 2100, 2180, 3100]
MAPPING = ("t1map", "t2map")


class _Study:
    """One study of series built from the demo LGE's real pixels (0-7: magnitude slices, 8-15: PSIR)."""

    def __init__(self, root: Path):
        self.root = root
        self.study_uid, self.frame_uid = generate_uid(), generate_uid()

    def series(self, number: int, headers: dict | None = None, role: str = "magnitude", slices=range(8),
               per_image=None, images_per_slice: int = 1, after=None) -> str:
        """One series; per_image(slice, image) gives headers for one image (None deletes the attribute);
        after(ds) changes what setattr cannot (private tags)."""
        uid = generate_uid()
        base = 0 if role == "magnitude" else 8
        instance = itertools.count(1)
        for image in range(images_per_slice):
            def change(ds, index, image=image):
                ds.StudyInstanceUID, ds.FrameOfReferenceUID = self.study_uid, self.frame_uid
                ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = uid, number, next(instance)
                extra = dict(headers or {})
                if per_image:
                    extra.update(per_image(index - base, image))
                for keyword, value in extra.items():
                    if value is None:
                        if keyword in ds:
                            delattr(ds, keyword)
                    else:
                        setattr(ds, keyword, value)
                if after:
                    after(ds)
            lge_variant(self.root / f"S{number}_{image}", change, indices=[base + k for k in slices])
        return uid

    def load(self):
        (study,) = load_studies([self.root])
        return study


def _by_number(study) -> dict:
    return {s.series_number: s for s in study.series}


# ------------------------------------------------------------------ 1. parametric maps are mapping, never LGE
MAPS = [  # (SeriesDescription, ImageType, expected) as Siemens / Philips / GE / Canon write them
    ("T1 Map Post", ["DERIVED", "PRIMARY", "OTHER"], "t1map"),  # GE: only the description says it
    ("T1map_post_SA", ["DERIVED", "PRIMARY", "T1", "T1"], "t1map"),  # Philips calculated T1
    ("MOLLI_5(3)3_SAX_ECV", ["DERIVED", "PRIMARY", "ECV", "ND"], "t1map"),  # Siemens ECV map
    ("SAX post", ["DERIVED", "PRIMARY", "T1MAP"], "t1map"),  # GE / Canon value 3
    ("SAX post", ["DERIVED", "PRIMARY", "MAP"], "t1map"),  # a map that does not name its parameter (IR: T1)
    ("SAX_native", ["DERIVED", "PRIMARY", "MOCO", "T1"], "t1map"),  # MOCO + T1
    ("ShMOLLI_T1_SAX", ["DERIVED", "PRIMARY", "OTHER"], "t1map"),
    ("SASHA_SAX", ["DERIVED", "PRIMARY", "OTHER"], "t1map"),
    ("ECV", ["DERIVED", "PRIMARY", "OTHER"], "t1map"),
    ("T1_map_post", ["ORIGINAL", "PRIMARY", "M", "ND"], "t1map"),
    ("T2map", ["DERIVED", "PRIMARY", "T2 MAP", "ND"], "t2map"),
    ("T2*", ["DERIVED", "PRIMARY", "OTHER"], "t2map"),
    ("T2STAR_SAX", ["DERIVED", "PRIMARY", "T2_STAR MAP"], "t2map"),
]


@pytest.mark.parametrize("description,image_type,expected", MAPS, ids=[f"{m[0]}-{m[1][2]}" for m in MAPS])
def test_a_post_contrast_map_after_the_lge_is_mapping_and_never_the_analysed_lge(tmp_path, description, image_type,
                                                                                 expected):
    # a 3-slice LGE, then the map at the same levels 10 min later, keeping the IR / TI 150 ms the scanner wrote:
    # before, it scored as LGE and, being later and as complete, was the LGE analysed
    study = _Study(tmp_path)
    study.series(30, {"SeriesDescription": "LGE_SAX_3sl", "SeriesTime": "093000", "AcquisitionTime": "093000"},
                 slices=[2, 3, 4])
    study.series(31, {**GR_IR, "SeriesDescription": description, "ProtocolName": description, "ImageType": image_type,
                      "InversionTime": "150", "SeriesTime": "094000", "AcquisitionTime": "094000"}, slices=[2, 3, 4])
    cmr = study.load()
    series = _by_number(cmr)
    assert series[31].sequence.value == expected, series[31].sequence.evidence
    assert series[31].lge_kind is None
    assert cmr.preferred("lge").series_number == 30
    assert [s.series_number for s in cmr.series if s.sequence.value == "lge"] == [30]


def test_an_ecv_map_beside_a_ti_adjusted_lge_is_not_analysed_as_lge(tmp_path):
    """lgebreak v11: the LGE (TI raised 260 -> 330 ms) was 'other' and the ECV map became the analysed LGE."""
    study = _Study(tmp_path)
    tis = [260, 270, 280, 290, 300, 310, 320, 330]
    study.series(30, {"SeriesDescription": "LGE_SAX"}, per_image=lambda k, _: {"InversionTime": str(tis[k])})
    study.series(31, {**GR_IR, "SeriesDescription": "T1 Map Post", "ImageType": ["DERIVED", "PRIMARY", "OTHER"],
                      "InversionTime": "150", "SeriesTime": "094000"}, slices=[2, 3, 4])
    study.series(33, {**GR_IR, "SeriesDescription": "MOLLI_5(3)3_SAX_ECV", "ImageType": ["DERIVED", "PRIMARY", "ECV"],
                      "InversionTime": "150", "SeriesTime": "094200"}, slices=[2, 3, 4])
    cmr = study.load()
    series = _by_number(cmr)
    assert series[30].sequence.value == "lge" and cmr.preferred("lge").series_number == 30
    assert series[31].sequence.value == series[33].sequence.value == "t1map"
    assert any("ECV" in e for e in series[33].sequence.evidence)


# ------------------------------------------------------------------ 2. slice-to-slice timing differences stay LGE
TRIGGER_JITTER = [402.5, 398.0, 411.3, 405.0, 395.8, 408.8, 400.2, 396.6]  # one breath-hold (heart rate) per slice
TI_ADJUSTED = [260, 270, 280, 290, 300, 310, 320, 330]  # TI raised as gadolinium washes out


@pytest.mark.parametrize("change", ["trigger", "inversion", "both"])
@pytest.mark.parametrize("role", ["magnitude", "psir"])
def test_lge_stack_with_per_slice_trigger_or_inversion_time_is_lge(tmp_path, change, role):
    def per_image(k, _):
        headers = {}
        if change in ("trigger", "both"):
            headers["TriggerTime"] = f"{TRIGGER_JITTER[k]:.1f}"
        if change in ("inversion", "both"):
            headers["InversionTime"] = str(TI_ADJUSTED[k])
        return headers

    study = _Study(tmp_path)
    study.series(12, {"SeriesDescription": "LGE_SAX"}, role=role, per_image=per_image)
    cmr = study.load()
    series = cmr.preferred("lge")
    assert series is not None, [s.summary() for s in cmr.series]
    assert (series.slices, series.phases, series.view.value, series.lge_kind) == (8, 1, "sax", role)
    assert series.sequence.confidence >= 0.85
    if change != "inversion":
        assert any("between slice positions only" in e for e in series.sequence.evidence)


def test_a_real_cine_is_still_cine_and_never_lge(tmp_path):
    """The per-slice criterion keeps the cine side: 10 phases per slice over 700 ms (IR-free SSFP)."""
    study = _Study(tmp_path)
    study.series(5, {"ScanningSequence": "GR", "SequenceVariant": ["SS", "SK"], "SequenceName": "*tfi2d1_12",
                     "InversionTime": None, "SeriesDescription": "CINE_SAX", "ImageType": ["ORIGINAL", "PRIMARY", "M"],
                     "CardiacNumberOfImages": 10}, slices=[2, 3, 4], images_per_slice=10,
                 per_image=lambda k, j: {"TriggerTime": f"{30 + 70 * j:.1f}"})
    (series,) = study.load().series
    assert (series.sequence.value, series.slices, series.phases) == ("cine", 3, 10), series.sequence.evidence


# ------------------------------------------------------------------ 3. mapping source images are mapping, not cine
RAW = {
    # Siemens MOLLI: InversionTime and TriggerTime per image (TriggerTime spans seconds: several heartbeats)
    "molli": ({**GR_IR, "SeriesDescription": "MOLLI_5(3)3_SAX", "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"]},
              lambda k, j: {"InversionTime": str(MOLLI_TI[j]), "TriggerTime": str(MOLLI_TI[j] + 300 * j)}, "t1map"),
    # the same without any name: the InversionTimes within one slice say it
    "molli-unnamed": ({**GR_IR, "SeriesDescription": "", "ProtocolName": "", "ImageType": ["ORIGINAL", "PRIMARY", "M"]},
                      lambda k, j: {"InversionTime": str(MOLLI_TI[j])}, "t1map"),
    # Siemens MOCO: motion-corrected, TI only in ImageComments, one TriggerTime, a bSSFP sequence name
    "moco": ({**GR_IR, "SeriesDescription": "MOLLI_5(3)3_SAX_MOCO", "InversionTime": None,
              "ImageType": ["DERIVED", "PRIMARY", "M", "ND", "MOCO"]},
             lambda k, j: {"ImageComments": f"TI {MOLLI_TI[j]}"}, "t1map"),
    "moco-unnamed": ({**GR_IR, "SeriesDescription": "SAX", "ProtocolName": "SAX", "InversionTime": None,
                      "ImageType": ["DERIVED", "PRIMARY", "M", "ND", "MOCO"]},
                     lambda k, j: {"ImageComments": f"T1 MOLLI TI={MOLLI_TI[j]}ms"}, "t1map"),
    "shmolli": ({**GR_IR, "SeriesDescription": "ShMOLLI_SAX", "ImageType": ["ORIGINAL", "PRIMARY", "OTHER"],
                 "InversionTime": None}, lambda k, j: {}, "t1map"),
    # T2-prepared bSSFP source images: the preparation time in ImageComments
    "t2prep": ({"ScanningSequence": "GR", "SequenceVariant": ["SK", "SS"], "SequenceName": "*tfi2d1_63",
                "InversionTime": None, "SeriesDescription": "SAX", "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"]},
               lambda k, j: {"ImageComments": f"T2 prep. duration = {[0, 25, 55, 25, 0, 55, 25, 0][j]} ms",
                             "AcquisitionNumber": j + 1}, "t2map"),
    # the same named only by its protocol: 'T2prep' on a series of several images per slice
    "t2prep-named": ({"ScanningSequence": "GR", "SequenceVariant": ["SK", "SS"], "SequenceName": "*tfi2d1_63",
                      "InversionTime": None, "SeriesDescription": "T2prep_TrueFISP_SAX",
                      "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"]}, lambda k, j: {}, "t2map"),
    # saturation-recovery (SASHA-like) images with no IR and no name: TriggerTime over several heartbeats
    "sr-triggers": ({"ScanningSequence": "GR", "SequenceVariant": ["SK", "SS", "MP"], "SequenceName": "*tfi2d1_55",
                     "InversionTime": None, "SeriesDescription": "SAX", "ImageType": ["ORIGINAL", "PRIMARY", "M"]},
                    lambda k, j: {"TriggerTime": f"{300 + 900 * j:.0f}"}, "t1map"),
    # multi-echo gradient echo (T2*): EchoTime per image
    "t2star-echoes": ({"ScanningSequence": "GR", "SequenceVariant": "SP", "SequenceName": "*fl2d8",
                       "InversionTime": None, "SeriesDescription": "SAX_me", "ImageType": ["ORIGINAL", "PRIMARY", "M"]},
                      lambda k, j: {"EchoTime": f"{2.6 + 2.3 * j:.2f}"}, "t2map"),
}


@pytest.mark.parametrize("name", list(RAW))
def test_mapping_source_images_are_mapping_and_never_cine_or_lge(tmp_path, name):
    headers, per_image, expected = RAW[name]
    study = _Study(tmp_path)
    study.series(10, headers, slices=[2, 3, 4], images_per_slice=8, per_image=per_image)
    cmr = study.load()
    (series,) = cmr.series
    assert (series.sequence.value, series.slices, series.phases) == (expected, 3, 8), series.sequence.evidence
    assert any("source images" in e for e in series.sequence.evidence)
    assert cmr.preferred("cine") is None and cmr.preferred("lge") is None  # nothing measured as function on them


def test_moco_molli_and_its_map_give_no_cine_to_decline(tmp_path):
    """lgebreak v10b: the MOCO series was cine (3 x 8) and then declined as 'cine ... has 1 phase'; recognised as
    T1 source images, the cine pipeline finds no cine short-axis series, which is what the study holds."""
    study = _Study(tmp_path)
    study.series(11, RAW["moco"][0], slices=[2, 3, 4], images_per_slice=8, per_image=RAW["moco"][1])
    study.series(12, {**GR_IR, "SeriesDescription": "MOLLI_5(3)3_SAX_T1", "InversionTime": "100",
                      "ImageType": ["DERIVED", "PRIMARY", "T1 MAP", "ND", "MOCO"]}, slices=[2, 3, 4])
    cmr = study.load()
    assert {s.series_number: s.sequence.value for s in cmr.series} == {11: "t1map", 12: "t1map"}
    assert cmr.preferred("cine", None) is None


# ------------------------------------------------------------------ 4. lge_kind: ImageType, then signed values
@pytest.mark.parametrize("psir_first", [True, False])
def test_siemens_pair_sharing_a_psir_protocol_name_is_told_apart_by_image_type(tmp_path, psir_first):
    study = _Study(tmp_path)
    numbers = (12, 13) if psir_first else (13, 12)
    study.series(numbers[0], {"SeriesDescription": "de_PSIR_SAX_PSIR", "ProtocolName": "de_PSIR_SAX",
                              "ImageType": ["DERIVED", "PRIMARY", "PSIR", "NORM", "DIS2D"]}, role="psir")
    study.series(numbers[1], {"SeriesDescription": "de_PSIR_SAX_MAG", "ProtocolName": "de_PSIR_SAX",
                              "ImageType": ["ORIGINAL", "PRIMARY", "M", "NORM", "DIS2D"]}, role="magnitude")
    cmr = study.load()
    kinds = {s.series_number: s.lge_kind for s in cmr.series}
    assert kinds == {numbers[0]: "psir", numbers[1]: "magnitude"}
    assert cmr.preferred("lge").series_number == numbers[0]  # the PSIR, whatever the numbering


@pytest.mark.parametrize("description", ["PSIR_TFE_SA", "LGE_PSIR", "de_PSIR_SAX"])
def test_philips_pair_with_one_description(tmp_path, description):
    """Philips: M_IR\\M\\IR and R_IR\\R\\IR, ScanningSequence GR only, both described alike."""
    study = _Study(tmp_path)
    common = {"SeriesDescription": description, "ScanningSequence": "GR", "SequenceVariant": ["SK", "MP"],
              "InversionTime": "280", "Manufacturer": "Philips"}
    study.series(901, {**common, "ImageType": ["ORIGINAL", "PRIMARY", "M_IR", "M", "IR"]}, role="magnitude")
    study.series(902, {**common, "ImageType": ["ORIGINAL", "PRIMARY", "R_IR", "R", "IR"]}, role="psir")
    cmr = study.load()
    series = _by_number(cmr)
    assert (series[901].lge_kind, series[902].lge_kind) == ("magnitude", "psir")
    assert series[901].sequence.confidence >= 0.85  # the ImageType IR value counts as inversion recovery
    assert cmr.preferred("lge").series_number == 902


@pytest.mark.parametrize("psir_description,magnitude_description", [("MDE", "MDE"), ("MDE PSIR", "MDE PSIR MAG"),
                                                                    ("LGE_sa_psir", "LGE_sa_psir_mag")])
def test_ge_pair_without_image_type_markers_by_signed_values_then_description(tmp_path, psir_description,
                                                                              magnitude_description):
    """GE: ImageType ORIGINAL\\PRIMARY\\OTHER on both; the PSIR's RescaleIntercept -2048 with 16-bit stored values
    makes it signed; the magnitude's description says 'mag' or nothing."""
    study = _Study(tmp_path)
    other = ["ORIGINAL", "PRIMARY", "OTHER"]
    study.series(100, {"SeriesDescription": psir_description, "ImageType": other}, role="psir")
    study.series(101, {"SeriesDescription": magnitude_description, "ImageType": other}, role="magnitude")
    cmr = study.load()
    series = _by_number(cmr)
    assert (series[100].lge_kind, series[101].lge_kind) == ("psir", "magnitude")
    assert any("signed values" in e for e in series[100].sequence.evidence)


# ------------------------------------------------------------------ 9. description hints
HINTS = ["LGE_SAX", "DE_SAX", "MDE_SA", "sa_lge_psir", "Delayed_Enh", "late_gd", "HYPER_SAX", "LGE2_SAX",
         "Spätanreicherung SA", "Spaetanreicherung_SA", "LE_SA", "late enhancement", "réhaussement tardif",
         "Rehaussement_tardif_PA", "realce tardío", "realce_tardio", "enhancement tardivo", "late aankleuring"]


@pytest.mark.parametrize("description", HINTS)
def test_lge_description_hints_with_weak_headers(tmp_path, description):
    """No IR, no InversionTime, ImageType OTHER (a GE / Philips export): only the description can say LGE."""
    study = _Study(tmp_path)
    study.series(12, {"SpecificCharacterSet": "ISO_IR 192", "SeriesDescription": description,
                      "ProtocolName": description, "ScanningSequence": "GR", "SequenceVariant": ["SK", "SP"],
                      "InversionTime": None, "ImageType": ["ORIGINAL", "PRIMARY", "OTHER"], "SequenceName": "fgre"})
    (series,) = study.load().series
    assert series.sequence.value == "lge", series.sequence.evidence


@pytest.mark.parametrize("description", ["", "SAX", "T1map", "Frühanreicherung", "B0_map"])
def test_weak_headers_without_an_lge_name_are_not_lge(tmp_path, description):
    study = _Study(tmp_path)
    study.series(12, {"SpecificCharacterSet": "ISO_IR 192", "SeriesDescription": description,
                      "ProtocolName": description, "ScanningSequence": "GR", "SequenceVariant": ["SK", "SP"],
                      "InversionTime": None, "ImageType": ["ORIGINAL", "PRIMARY", "OTHER"], "SequenceName": "fgre"})
    (series,) = study.load().series
    assert series.sequence.value != "lge", series.sequence.evidence
    assert (series.sequence.value in MAPPING) == (description == "T1map")  # a B0 field map maps no tissue


def test_normalise_text_removes_accents():
    assert (normalise_text("Spätanreicherung RÉHAUSSEMENT tardío Straße")
            == "spatanreicherung rehaussement tardio strasse")


# ------------------------------------------------------------------ 10. long-axis LGE in one series
def _long_axis(angle_deg: float):
    """A change putting an image in a plane that holds the stack normal, rotated about it (2ch ~0, 3ch ~45, 4ch ~90)."""
    def change(ds):
        orientation = np.array([float(v) for v in ds.ImageOrientationPatient])
        row, col = orientation[:3], orientation[3:]
        normal = np.cross(row, col)
        spacing = [float(v) for v in ds.PixelSpacing]
        centre = (np.array([float(v) for v in ds.ImagePositionPatient]) + row * spacing[1] * (int(ds.Columns) - 1) / 2
                  + col * spacing[0] * (int(ds.Rows) - 1) / 2)
        angle = np.radians(angle_deg)
        direction = np.cos(angle) * row + np.sin(angle) * col
        position = (centre - direction * spacing[1] * (int(ds.Columns) - 1) / 2
                    + normal * spacing[0] * (int(ds.Rows) - 1) / 2)
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in np.concatenate([direction, -normal])]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
    return change


@pytest.mark.parametrize("headers,expected", [
    ({"SeriesDescription": "LGE_LAX"}, "lge"),  # IR, TI 300 ms, LGE name
    ({"SeriesDescription": "LAX"}, "lge"),  # IR, TI 300 ms: the contrast says LGE
    ({"SeriesDescription": "", "ScanningSequence": "GR", "InversionTime": None}, "localizer"),  # a real localizer
    ({"SeriesDescription": "LGE_scout", "ScanningSequence": "GR", "InversionTime": None}, "localizer"),
])
def test_long_axis_lge_slices_in_one_series_are_lge_not_a_localizer(tmp_path, headers, expected):
    study = _Study(tmp_path)
    study.series(12, {"SeriesDescription": "LGE_SAX"})
    changes = {1: _long_axis(0.0), 2: _long_axis(45.0), 3: _long_axis(90.0)}  # by InstanceNumber
    uid = study.series(15, headers, slices=[2, 3, 4])
    for path in (tmp_path / "S15_0").iterdir():  # move each image into its long-axis plane
        ds = pydicom.dcmread(path)
        changes[int(ds.InstanceNumber)](ds)
        ds.save_as(path, enforce_file_format=False)
    cmr = study.load()
    lax = next(s for s in cmr.series if s.series_instance_uid == uid)
    assert lax.sequence.value == expected, lax.sequence.evidence
    assert len(lax.planes) == 3 and lax.view.value == "other"
    if expected == "lge":
        assert cmr.preferred("lge", "sax").series_number == 12
        assert any("LGE images of several views" in e for e in lax.sequence.evidence)
