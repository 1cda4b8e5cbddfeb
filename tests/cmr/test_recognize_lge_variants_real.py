"""LGE series as workstations and scanners re-write them are recognised as LGE, and T1 maps stay T1 maps, on real
data: the LGE studies built by the make-study devtool from MyoPS 2020 (real 12-bit LGE, real geometry) and EMIDEC,
their headers rewritten with pydicom.

Faults this guards (series recognition, LGE against T1 map): an LGE re-saved by a workstation as DERIVED\\SECONDARY
without SeriesDescription / ProtocolName was a T1 map (SECONDARY counted as map evidence); an LGE whose ImageType
carries MOCO, or a bare 'T1' beside MOCO, was a T1 map (MOCO is said of maps, LGE and cines alike; Siemens writes
'T1 MAP' on its maps); an LGE whose InversionTime is not in (0018,0082) (GE may leave it empty; no GE private element
is documented, frames.PRIVATE_INVERSION_TIME) and that a workstation derived was a T1 map on the missing TI. The T1
maps hold T1 values in ms (myocardium ~1000, blood ~1600, from the expert labels) under the headers vendors write."""
from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicomnode.cmr import load_studies
from dicomnode.devtools.make_study import make_study
from dicomnode.labels import Label

SOURCES = ["myops:Case3002", "emidec:Case_P043"]
_BUILT: dict[str, tuple[list[Path], dict[str, np.ndarray]]] = {}
_NUMBERS = itertools.count(500)


@pytest.fixture(scope="module")
def lge_sources(datasets, tmp_path_factory):
    """source -> (the magnitude LGE instances make_study wrote, SOPInstanceUID -> node label image), built once."""
    if not _BUILT:
        root = tmp_path_factory.mktemp("lge_sources")
        for source in SOURCES:
            study = make_study(source, root / source.replace(":", "_"), "ge", datasets=datasets)
            # the magnitude images (EMIDEC also has a PSIR series, its primary one): slice k of the labels
            frames = study.secondary["magnitude"][0] if study.primary_role != "magnitude" else study.frames
            labels = {ref.sop_instance_uid: study.labelmap[0, k] for k, ref in enumerate(frames[0])}
            paths = [p for p in study.paths if pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID in labels]
            _BUILT[source] = (sorted(paths), labels)
    return _BUILT


def _t1_values(ds: Dataset, labels: np.ndarray, rng: np.random.Generator) -> None:
    """Replace the LGE pixels by a native T1 map in ms: LV myocardium ~1000 (scar ~1350), LV / RV blood ~1600, the
    rest the LGE's own structure scaled into 200-1400 ms; stored as 12-bit values with an identity rescale."""
    image = ds.pixel_array.astype(float) * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    high = np.percentile(image, 99.5) or 1.0
    t1 = 200.0 + 1200.0 * np.clip(image / high, 0, 1)
    for label, value, spread in ((Label.LV_MYOCARDIUM, 1000, 40), (Label.SCAR, 1350, 60), (Label.MVO, 1350, 60),
                                 (Label.LV_BLOOD_POOL, 1600, 50), (Label.RV_BLOOD_POOL, 1600, 50)):
        mask = labels == label
        t1[mask] = rng.normal(value, spread, int(mask.sum()))
    ds.PixelData = np.clip(np.rint(t1), 0, 4095).astype(np.uint16).tobytes()
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = "1", "0"
    ds.WindowCenter, ds.WindowWidth = "1200", "2000"
    for keyword in ("SmallestImagePixelValue", "LargestImagePixelValue"):
        if keyword in ds:
            delattr(ds, keyword)


def _write(out: Path, source: tuple[list[Path], dict[str, np.ndarray]], headers: dict, after=None,
           t1_map: bool = False, series_time: str = "094000") -> int:
    """One series of the source's LGE instances under new UIDs and the given headers (None deletes one)."""
    paths, labels = source
    number, series_uid = next(_NUMBERS), generate_uid()
    rng = np.random.default_rng(number)
    out.mkdir(parents=True, exist_ok=True)
    for path in paths:
        ds = pydicom.dcmread(path)
        if t1_map:
            _t1_values(ds, labels[ds.SOPInstanceUID], rng)
        ds.SeriesInstanceUID, ds.SeriesNumber = series_uid, number
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SeriesTime = ds.AcquisitionTime = series_time
        for keyword, value in headers.items():
            if value is None:
                if keyword in ds:
                    delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        if after:
            after(ds)
        ds.save_as(out / f"{number}_{ds.InstanceNumber:03d}.dcm")
    return number


def _load(root: Path):
    (study,) = load_studies([root])
    return study, {s.series_number: s for s in study.series}


def _weak(study, series) -> list[str]:
    return [w for w in study.stack_warnings.get(series.key, []) if w.startswith("weak LGE evidence")]


UNNAMED = {"SeriesDescription": None, "ProtocolName": None}


def _ge_private_ti(ds: Dataset) -> None:
    """The TI moved out of InversionTime (0018,0082) into a GE private block (no dictionary names a GE TI element)."""
    ti = ds.get("InversionTime", "300")
    del ds.InversionTime
    ds.private_block(0x0019, "GEMS_ACQU_01", create=True).add_new(0x89, "DS", str(ti))


LGE_VARIANTS = {  # name -> (headers, after, said as weak LGE evidence)
    # (a) a workstation re-save: DERIVED\SECONDARY, unnamed
    "workstation-derived-secondary": ({**UNNAMED, "ImageType": ["DERIVED", "SECONDARY"]}, None, False),
    "workstation-derived-secondary-m": ({**UNNAMED, "ImageType": ["DERIVED", "SECONDARY", "M"]}, None, False),
    # (b) motion-corrected LGE: Siemens MOCO magnitude, a bare 'T1' beside MOCO, a MOCO PSIR-named series
    "moco-original-m": ({**UNNAMED, "ImageType": ["ORIGINAL", "PRIMARY", "M", "MOCO"]}, None, False),
    "moco-derived-m-nd": ({**UNNAMED, "ImageType": ["DERIVED", "PRIMARY", "M", "ND", "MOCO"]}, None, False),
    "moco-bare-t1": ({**UNNAMED, "ImageType": ["DERIVED", "PRIMARY", "T1", "MOCO"]}, None, True),
    "moco-named": ({"SeriesDescription": "de_PSIR_MOCO_SAX_MAG", "ImageType": ["DERIVED", "PRIMARY", "M", "ND",
                                                                              "MOCO"]}, None, False),
    # (c) GE: the TI only in a private element; ScanOptions IR_GEMS is the inversion preparation GE writes
    "ge-private-ti-named": ({"SeriesDescription": "MDE SAX", "ScanningSequence": "GR", "ScanOptions": "IR_GEMS"},
                            _ge_private_ti, False),
    "ge-private-ti-unnamed": ({**UNNAMED, "ScanningSequence": "GR", "ScanOptions": "IR_GEMS"}, _ge_private_ti,
                              True),
    # ... or in the standard InversionTimes (0018,9079) instead of InversionTime (0018,0082)
    "inversion-times-9079": ({**UNNAMED, "InversionTime": None, "InversionTimes": [300.0]}, None, False),
    # (a) + (c): a workstation re-save of an LGE without InversionTime: one kind of evidence, said as weak
    "workstation-no-ti": ({**UNNAMED, "ImageType": ["DERIVED", "SECONDARY", "M"], "InversionTime": None}, None, True),
}


@pytest.mark.parametrize("variant", list(LGE_VARIANTS))
@pytest.mark.parametrize("source", SOURCES)
def test_a_rewritten_lge_is_recognised_as_lge(lge_sources, tmp_path, source, variant):
    headers, after, weak = LGE_VARIANTS[variant]
    number = _write(tmp_path, lge_sources[source], headers, after)
    study, series = _load(tmp_path)
    assert series[number].sequence.value == "lge", series[number].sequence.evidence
    assert series[number].lge_kind == "magnitude"
    assert study.preferred("lge") is series[number]
    assert not any("MOCO" in e and "calculated" in e for e in series[number].sequence.evidence)
    warnings = _weak(study, series[number])
    assert bool(warnings) == weak, warnings
    if weak:
        assert warnings[0].endswith("check that this series is an LGE")


def _rwvm_ms(ds: Dataset) -> None:
    unit = Dataset()
    unit.CodeValue, unit.CodingSchemeDesignator, unit.CodeMeaning = "ms", "UCUM", "millisecond"
    item = Dataset()
    item.MeasurementUnitsCodeSequence = [unit]
    item.LUTLabel = "T1"
    item.RealWorldValueFirstValueMapped, item.RealWorldValueLastValueMapped = 0, 4095
    item.RealWorldValueIntercept, item.RealWorldValueSlope = 0.0, 1.0
    ds.RealWorldValueMappingSequence = [item]


T1_MAP_VARIANTS = {  # name -> (headers, after): T1 maps in ms that must stay T1 maps
    # Siemens MyoMaps MOCO map (ImageType as scanners write it), unnamed, keeping the IR header
    "siemens-moco-t1-map": ({**UNNAMED, "ImageType": ["DERIVED", "PRIMARY", "T1 MAP", "MOCO", "T1", "DIS2D"],
                             "InversionTime": "0"}, None),
    # Philips T1 map: 'T1 MAP' then 'T1'
    "philips-t1-map": ({**UNNAMED, "ImageType": ["ORIGINAL", "PRIMARY", "T1 MAP", "T1", "UNSPECIFIED"]}, None),
    # a workstation re-save of a map: DERIVED\SECONDARY, values declared in ms
    "workstation-rwvm-ms": ({**UNNAMED, "ImageType": ["DERIVED", "SECONDARY"]}, _rwvm_ms),
    # ... that kept its source images' first inversion time (MOLLI: ~100 ms), or TI 0
    "workstation-first-ti": ({**UNNAMED, "ImageType": ["DERIVED", "SECONDARY"], "InversionTime": "100"}, None),
    "workstation-ti-0": ({**UNNAMED, "ImageType": ["DERIVED", "SECONDARY", "OTHER"], "InversionTime": "0"}, None),
    # a MyoMaps re-export: MOCO, TI 0, no map word
    "moco-ti-0": ({"SeriesDescription": "SAX_post", "ImageType": ["DERIVED", "PRIMARY", "MOCO"],
                   "InversionTime": "0"}, None),
    # named: MOLLI, and a native T1 with MOCO in the name
    "named-molli": ({"SeriesDescription": "MOLLI_5(3)3_SAX_T1", "ImageType": ["DERIVED", "PRIMARY", "M", "MOCO"]},
                    None),
    "named-t1-moco": ({"SeriesDescription": "SAX T1 MOCO", "ImageType": ["DERIVED", "PRIMARY", "M", "MOCO"]}, None),
    "rescale-type-ms": ({**UNNAMED, "ImageType": ["DERIVED", "PRIMARY", "M", "MOCO"], "RescaleType": "MS"}, None),
}


@pytest.mark.parametrize("variant", list(T1_MAP_VARIANTS))
@pytest.mark.parametrize("source", SOURCES)
def test_a_t1_map_in_ms_stays_a_t1_map_beside_the_lge(lge_sources, tmp_path, source, variant):
    headers, after = T1_MAP_VARIANTS[variant]
    lge = _write(tmp_path, lge_sources[source], {}, series_time="093000")
    number = _write(tmp_path, lge_sources[source], headers, after, t1_map=True)
    study, series = _load(tmp_path)
    assert series[number].sequence.value == "t1map", series[number].sequence.evidence
    assert series[number].lge_kind is None
    assert [s.series_number for s in study.series if s.sequence.value == "lge"] == [lge]
    assert study.preferred("lge").series_number == lge


def test_the_t1_map_values_are_what_a_native_t1_map_holds(lge_sources, tmp_path):
    """The map fixture is a map by its pixels too: myocardium ~1000 and blood ~1600 ms, within 12 bits."""
    paths, labels = lge_sources["myops:Case3002"]
    ds = pydicom.dcmread(paths[1])
    _t1_values(ds, labels[ds.SOPInstanceUID], np.random.default_rng(0))
    values, label = ds.pixel_array, labels[ds.SOPInstanceUID]
    assert 950 < np.median(values[label == Label.LV_MYOCARDIUM]) < 1050
    assert 1550 < np.median(values[label == Label.LV_BLOOD_POOL]) < 1650
    assert values.max() <= 4095


def test_a_rewritten_lge_study_runs_through_recognition_unchanged_otherwise(lge_sources, tmp_path):
    """The untouched make-study LGE (named, IR, TI 300) and its DERIVED\\SECONDARY unnamed copy side by side: both
    LGE, the named one preferred over the copy of the same slices, neither a map."""
    original = tmp_path / "study"
    shutil.copytree(lge_sources["myops:Case3002"][0][0].parent, original)
    number = _write(original, lge_sources["myops:Case3002"], LGE_VARIANTS["workstation-derived-secondary"][0])
    study, series = _load(original)
    assert all(s.sequence.value == "lge" for s in study.series), [s.sequence for s in study.series]
    assert study.preferred("lge").series_number != number
