"""Cine and LGE pipelines: a magnitude series whose values carry a negative offset (RescaleIntercept -300) gives the
numbers of the same series without it, with a stack warning that names the offset; a PSIR keeps its sign
(break44b finding 1: a -300 intercept read LV EDV 59 instead of 185 mL, RVEF -2.5 %, no warning)."""
from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from dicomnode.analysis.cine import CinePipeline
from dicomnode.analysis.lge import LGEPipeline
from dicomnode.analysis.pipeline import AlgorithmInfo, AnalysisContext
from dicomnode.config import Config

NOTE_START = "negative values in a magnitude"


# ------------------------------------------------------------------ cine, stand-in model that records its input
@dataclasses.dataclass
class Volume:
    pixels: np.ndarray
    pixel_spacing: tuple = (1.5, 1.5)
    slice_spacing: float = 8.0
    trigger_times: list = dataclasses.field(default_factory=list)
    orientation: np.ndarray = dataclasses.field(default_factory=lambda: np.array([1.0, 0, 0, 0, 1, 0]))
    warnings: list = dataclasses.field(default_factory=list)
    declared_phases: int | None = None

    @property
    def voxel_volume_ml(self):
        return self.pixel_spacing[0] * self.pixel_spacing[1] * self.slice_spacing / 1000.0


class Series:
    series_instance_uid = "1.2.3.4"

    def __init__(self, intercept=None):
        dataset = pydicom.Dataset()  # the header the pipelines read, as a received instance carries it
        if intercept is not None:
            dataset.RescaleIntercept = str(intercept)
        self.instances = [type("Instance", (), {"dataset": dataset, "sop_instance_uid": "1.2.3.4.1"})()]


class Study:
    def __init__(self, volume, series):
        self.volume, self.series_ = volume, series
        self.patient = type("Patient", (), {"height_m": 1.8, "weight_kg": 80.0, "sex": "M", "age": None})()

    def preferred(self, sequence, view="sax"):
        return self.series_

    def load_preferred(self, series, require_stack=True):
        return series, self.load_volume(series, require_stack)

    def load_volume(self, series, require_stack=True):
        return self.volume


def wall_model(inputs: np.ndarray) -> np.ndarray:
    """The pool: pixels over the crop's 97th percentile; the wall: pixels between the 80th and the 97th (a model that
    needs the wall's grey level, which the clip at 0 of a -300 offset flattens into the background)."""
    crops = inputs[:, 0]
    high = np.percentile(crops, 97, axis=(1, 2), keepdims=True)
    low = np.percentile(crops, 80, axis=(1, 2), keepdims=True)
    logits = np.full((inputs.shape[0], 4) + inputs.shape[2:], -5.0, np.float32)
    pool = crops >= high - 1e-3
    wall = (crops >= low - 1e-3) & ~pool & ndimage.binary_dilation(pool, np.ones((1, 9, 9), bool))
    logits[:, 0] = 0.0
    logits[:, 1] = np.where(pool, 5.0, -5.0)
    logits[:, 2] = np.where(wall, 5.0, -5.0)
    return logits


class RecordingModel:
    def __init__(self):
        self.card = type("Card", (), {"data": {"input": {"spacing_mm": 1.5, "crop_size": 128},
                                               "output": {"channels": [{"channel": c, "node_label": v}
                                                                       for c, v in enumerate((0, 1, 2, 5))]}}})()
        self.algorithm = AlgorithmInfo("fake-cine", "1", "dicomnode project", "2.25.1")
        self.inputs = []

    def run(self, inputs):
        self.inputs.append(np.array(inputs))
        return wall_model(inputs)


class Runtime:
    def __init__(self):
        self.loaded = RecordingModel()

    def model(self, name):
        return self.loaded

    def available(self, name):
        return name == "cine_unet"


def beating_cine() -> np.ndarray:
    """(12 phases, 3 slices, 160, 160) stored values >= 0: background 10, a 6 mm myocardial wall at 120 around a
    pool at 400 whose radius follows a cosine cycle (34 mm at phase 0, 20 mm at phase 4)."""
    shape, spacing = (160, 160), 1.5
    rows, cols = np.mgrid[:shape[0], :shape[1]]
    distance = np.hypot(rows - 79.5, cols - 79.5) * spacing
    pixels = np.full((12, 3, *shape), 10.0, np.float32)
    for phase in range(12):
        share = (1 + np.cos(np.pi * (phase / 4 if phase <= 4 else (12 - phase) / 8))) / 2
        radius = np.sqrt(20.0 ** 2 + (34.0 ** 2 - 20.0 ** 2) * share)
        pixels[phase][:, distance < radius + 6] = 120.0
        pixels[phase][:, distance < radius] = 400.0
    return pixels


def run_cine(pixels, intercept=None):
    runtime = Runtime()
    volume = Volume(pixels, trigger_times=[40.0 * p for p in range(12)])
    result = CinePipeline(Config(), runtime).run(Study(volume, Series(intercept)),
                                                   AnalysisContext(config=Config(), runtime=runtime,
                                                                   started_at=dt.datetime(2026, 12, 7)))
    return result, runtime.loaded.inputs


NUMBERS = ("lv_edv_ml", "lv_esv_ml", "lv_ef_percent", "lv_mass_g", "ed_phase", "es_phase")


@pytest.mark.parametrize("slope, intercept", [(1.0, -300.0), (1.0, -1000.0), (0.5, -300.0)])
def test_a_cine_with_a_negative_offset_gives_the_numbers_of_the_same_cine_without(slope, intercept):
    stored = beating_cine()
    base, base_inputs = run_cine(stored)
    assert not base.declined and not any(w.startswith(NOTE_START) for w in base.summary["stack_warnings"])
    shifted, shifted_inputs = run_cine(stored * np.float32(slope) + np.float32(intercept), intercept)
    assert not shifted.declined, shifted.declined
    assert len(shifted_inputs) == len(base_inputs)
    for here, there in zip(shifted_inputs, base_inputs):
        assert np.allclose(here, there, atol=1e-4)  # the model sees the same input
    assert {k: shifted.summary[k] for k in NUMBERS} == pytest.approx({k: base.summary[k] for k in NUMBERS})
    [note] = [w for w in shifted.summary["stack_warnings"] if w.startswith(NOTE_START)]
    assert f"RescaleIntercept {intercept:g}" in note and f"{intercept + 10 * slope:g}" in note


def test_a_cine_with_a_positive_offset_reaches_the_model_exactly_as_before():
    stored = beating_cine()
    _, base_inputs = run_cine(stored)
    offset, offset_inputs = run_cine(stored + 200)
    assert not any(w.startswith(NOTE_START) for w in offset.summary["stack_warnings"])
    assert all(np.array_equal(a, b) for a, b in zip(base_inputs, offset_inputs))


# ------------------------------------------------------------------ LGE, real stacks and the shipped model
def _study(datasets, tmp_path_factory, source, variant):
    from dicomnode.cmr.study import load_studies
    from dicomnode.devtools.make_study import make_study

    generated = make_study(source, tmp_path_factory.mktemp("lge") / "study", variant, None, datasets=datasets)
    [study] = load_studies([generated.out_dir / "dicom"])
    return study


@pytest.fixture(scope="module")
def magnitude_study(datasets, tmp_path_factory):
    """MyoPS Case3002: real 12-bit magnitude LGE, darkest value 0."""
    return _study(datasets, tmp_path_factory, "myops:Case3002", "ge")


@pytest.fixture(scope="module")
def psir_study(datasets, tmp_path_factory):
    """EMIDEC Case_P043 as a Siemens PSIR + magnitude pair: the PSIR's values are signed."""
    return _study(datasets, tmp_path_factory, "emidec:Case_P043", "siemens")


class OneSeries:
    """The study with one of its LGE series preferred and its pixels offset by `offset`."""

    def __init__(self, study, series, offset=0.0):
        self.study, self.series, self.offset = study, series, offset

    def preferred(self, sequence, view="sax"):
        return self.series

    def load_preferred(self, series, require_stack=True):
        return series, self.load_volume(series, require_stack)

    def load_volume(self, series, require_stack=True):
        volume = self.study.load_volume(series)
        return dataclasses.replace(volume, pixels=volume.pixels + np.float32(self.offset))


def run_lge(study, series, offset=0.0, threshold_methods="always"):
    from dicomnode.inference import Runtime

    runtime = Runtime()
    config = Config.model_validate({"analysis": {"lge": {"threshold_methods": threshold_methods}}})
    context = AnalysisContext(config=config, runtime=runtime, started_at=dt.datetime(2026, 12, 7))
    return LGEPipeline(config, runtime).run(OneSeries(study, series, offset), context).summary


LGE_NUMBERS = ("myocardium_volume_ml", "scar_volume_ml", "lge_percent", "lv_mass_g")


def test_a_magnitude_lge_below_zero_gives_the_numbers_of_the_same_stack_without(magnitude_study):
    series = magnitude_study.preferred("lge", "sax")
    assert series.lge_kind == "magnitude" and float(magnitude_study.load_volume(series).pixels.min()) == 0.0
    base = run_lge(magnitude_study, series)
    shifted = run_lge(magnitude_study, series, -300.0)
    assert {k: shifted[k] for k in LGE_NUMBERS} == {k: base[k] for k in LGE_NUMBERS}
    # the signal thresholds read the values: FWHM (half the maximum above 0) moved with the offset, n-SD did not
    assert base["fwhm"]["applicable"] and base["nsd"]["applicable"]
    for method in ("fwhm", "nsd"):
        assert shifted[method]["lge_percent"] == base[method]["lge_percent"], method
    notes = [w for w in shifted["stack_warnings"] if w.startswith(NOTE_START)]
    assert len(notes) == 1 and "down to -300" in notes[0] and "+300" in notes[0]
    assert [w for w in shifted["stack_warnings"] if not w.startswith(NOTE_START)] == base["stack_warnings"]


def test_fwhm_is_not_applicable_on_a_magnitude_lge_lifted_by_an_offset(magnitude_study):
    series = magnitude_study.preferred("lge", "sax")
    base = run_lge(magnitude_study, series)
    lifted = run_lge(magnitude_study, series, 200.0)
    assert {k: lifted[k] for k in LGE_NUMBERS} == {k: base[k] for k in LGE_NUMBERS}
    assert lifted["nsd"]["lge_percent"] == base["nsd"]["lge_percent"]
    assert lifted["fwhm"]["applicable"] is False and "offset in the stored values" in lifted["fwhm"]["reason"]
    assert not any(w.startswith(NOTE_START) for w in lifted["stack_warnings"])


def test_a_psir_keeps_its_sign(psir_study):
    psir = psir_study.preferred("lge", "sax")
    assert psir.lge_kind == "psir" and float(psir_study.load_volume(psir).pixels.min()) < 0
    summary = run_lge(psir_study, psir, threshold_methods="validated")
    assert not any(w.startswith(NOTE_START) for w in summary["stack_warnings"])
    assert summary["fwhm"]["applicable"] is False


def test_the_report_suggestions_read_the_scar_signal_of_a_shifted_magnitude_lge_as_the_pipeline():
    from dicomnode.analysis.pipeline import PipelineResult, SegmentationResult
    from dicomnode.analysis.suggestions import descriptors_from_results
    from dicomnode.labels import Label

    rows, cols = np.mgrid[:48, :48]
    radius = np.hypot(rows - 24, cols - 24)
    labels = np.zeros((2, 48, 48), np.uint8)
    labels[:, radius < 14] = Label.LV_MYOCARDIUM
    labels[:, radius < 8] = Label.LV_BLOOD_POOL
    labels[:, (radius >= 8) & (radius < 14) & (cols > 30)] = Label.SCAR
    # air at 0, as in every real magnitude LGE of the shared sets (MyoPS 33, EMIDEC 100: darkest value 0)
    stored = np.where(labels == Label.SCAR, 500.0, np.where(labels == Label.LV_MYOCARDIUM, 100.0, 0.0))
    stored = stored.astype(np.float32)[None]

    def descriptors(pixels, kind):
        series = type("Series", (), {"lge_kind": kind})()
        volume = type("Volume", (), {"pixels": pixels, "pixel_spacing": (1.5, 1.5)})()
        segmentation = SegmentationResult(series=series, volume=volume, labelmap=labels[None], phases=[0],
                                          phase_names=["late enhancement"], algorithm=AlgorithmInfo("x", "1", "y", "2"),
                                          pipeline="lge")
        return descriptors_from_results([PipelineResult(name="lge", summary={}, segmentations=[segmentation])])[0]

    base = descriptors(stored, "magnitude")
    assert base["scar_to_remote_signal"] == pytest.approx(5.0)
    assert descriptors(stored - 300, "magnitude") == base
    # a PSIR keeps its sign: its ratio is read on the values as stored
    assert descriptors(stored - 300, "psir")["scar_to_remote_signal"] != base["scar_to_remote_signal"]
