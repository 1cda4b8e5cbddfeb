"""Cine pipeline: exact crop geometry both ways, batched segmentation mapped back, declines, and a real Sunnybrook study."""
import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pytest

from dicomnode.rounding import number_text
from scipy import ndimage

from dicomnode.analysis.cine import (CineModelSpec, CinePipeline, labels_from_probabilities, locate_heart, preprocess_cine,
                                    segment_cine, softmax)
from dicomnode.analysis.pipeline import AnalysisContext, AlgorithmInfo
from dicomnode.analysis.cine_metrics import myocardial_surround
from dicomnode.cmr.intensity import normalise_slices
from dicomnode.cmr.resample import InplaneResampler
from dicomnode.cmr.types import StudyError
from dicomnode.config import Config
from dicomnode.labels import Label

SPEC = CineModelSpec()


def disc(shape, centre_rc, radius_mm, spacing_rc):
    rr, cc = np.mgrid[0:shape[0], 0:shape[1]]
    return ((rr - centre_rc[0]) * spacing_rc[0]) ** 2 + ((cc - centre_rc[1]) * spacing_rc[1]) ** 2 <= radius_mm ** 2


def threshold_model(inputs: np.ndarray) -> np.ndarray:
    """Stand-in for the network: pixels brighter than halfway from the median to the maximum -> LV blood pool."""
    logits = np.zeros((inputs.shape[0], 4) + inputs.shape[2:], np.float32)
    crops = inputs[:, 0]
    high = crops.max(axis=(1, 2), keepdims=True)
    middle = (high + np.median(crops, axis=(1, 2), keepdims=True)) / 2
    logits[:, 1] = np.where(high > middle + 1e-3, (crops - middle) * 20.0, -1.0)
    # a 3-pixel myocardial wall around the bright pool, as a real network gives (the basal-slice rule needs it)
    pool = logits[:, 1] > 0
    wall = ndimage.binary_dilation(pool, np.ones((1, 7, 7), bool)) & ~pool
    logits[:, 2] = np.where(wall, 5.0, -5.0)
    return logits


@pytest.mark.parametrize("shape, spacing, centre", [((230, 256), (1.37, 1.37), None), ((150, 170), (1.5, 1.5), None),
                                                     ((200, 180), (0.8, 0.75), (90.3, 70.6))])
def test_labels_are_argmax_of_the_shared_resampler_probabilities(shape, spacing, centre):
    # one implementation of the geometry (cmr.resample); the box-restricted arg-max must equal the full-image one
    rng = np.random.default_rng(2)
    resampler = InplaneResampler(shape, spacing, 1.5, 128, centre_rc=centre)
    rr, cc = np.mgrid[0:128, 0:128]
    logits = np.zeros((3, 4, 128, 128), np.float32)
    for channel in (1, 2, 3):
        logits[:, channel] = 3 - ((rr - 50 - 6 * channel) ** 2 + (cc - 60 + 4 * channel) ** 2) / 80 + rng.normal(0, 0.5, (3, 128, 128))
    probabilities = softmax(logits, axis=1)
    fast = labels_from_probabilities(probabilities, resampler)
    full = np.asarray(SPEC.channel_labels, np.uint8)[np.argmax(resampler.inverse_probabilities(probabilities), axis=1)]
    assert fast.shape == (3,) + shape
    assert np.array_equal(fast, full)
    assert set(np.unique(fast)) == {0, 1, 2, 5}
    all_background = np.zeros((2, 4, 128, 128), np.float32)
    all_background[:, 0] = 1.0
    assert not labels_from_probabilities(all_background, resampler).any()


def test_normalise_slices_zero_mean_unit_sd_per_slice():
    crops = np.random.default_rng(3).random((1, 32, 32)).astype(np.float32) * np.array([1, 10, 100, 1000])[:, None, None]
    normalised = normalise_slices(crops)
    assert np.allclose(normalised.mean(axis=(1, 2)), 0, atol=1e-4)
    assert np.allclose(normalised.std(axis=(1, 2)), 1, atol=1e-3)
    assert np.allclose(normalised[0], normalised[3], atol=1e-4)  # invariant to the intensity scale


@pytest.mark.parametrize("spacing", [(1.37, 1.37), (0.8, 0.8)])
def test_segment_cine_maps_back_onto_the_source_grid(spacing):
    # an off-centre bright disc whose radius changes with the phase: the labels must land on it in source pixels
    shape, centre = (200, 240), (80.0, 140.0)
    radii = [30.0, 24.0, 18.0]
    pixels = np.full((3, 2, *shape), 100.0, np.float32)
    truth = np.zeros(pixels.shape, bool)
    for phase, radius in enumerate(radii):
        mask = disc(shape, centre, radius, spacing)
        pixels[phase, :, mask] = 400.0
        truth[phase] = mask
    labels = segment_cine(pixels, spacing, threshold_model, SPEC)
    assert labels.shape == pixels.shape and labels.dtype == np.uint8
    predicted = labels == Label.LV_BLOOD_POOL
    for phase in range(3):
        overlap = 2 * (predicted[phase] & truth[phase]).sum() / (predicted[phase].sum() + truth[phase].sum())
        assert overlap > 0.97, (phase, overlap)


def test_segment_cine_refuses_wrong_model_output():
    with pytest.raises(ValueError, match="logits of shape"):
        segment_cine(np.zeros((2, 2, 64, 64), np.float32), (1.5, 1.5), lambda x: np.zeros((1, 4, 128, 128), np.float32))


# ------------------------------------------------------------------ the pipeline on stand-in study objects
@dataclass
class FakeSeries:
    series_instance_uid: str = "1.2.3.4"


@dataclass
class FakeVolume:
    pixels: np.ndarray
    pixel_spacing: tuple = (1.5, 1.5)
    slice_spacing: float = 8.0
    trigger_times: list = field(default_factory=list)
    orientation: np.ndarray = field(default_factory=lambda: np.array([1.0, 0, 0, 0, 1, 0]))
    warnings: list = field(default_factory=list)
    declared_phases: int | None = None

    @property
    def voxel_volume_ml(self):
        return self.pixel_spacing[0] * self.pixel_spacing[1] * self.slice_spacing / 1000.0


@dataclass
class FakePatient:
    height_m: float | None = 1.80
    weight_kg: float | None = 80.0
    sex: str | None = "M"


class FakeStudy:
    def __init__(self, volume=None, error=None, has_cine=True):
        self.volume, self.error, self.has_cine = volume, error, has_cine
        self.patient = FakePatient()
        self.asked = []

    def preferred(self, sequence, view="sax"):
        self.asked.append((sequence, view))
        return FakeSeries() if self.has_cine else None

    def load_preferred(self, series):
        return series, self.load_volume(series)

    def load_volume(self, series):
        if self.error:
            raise self.error
        return self.volume


class FakeModel:
    def __init__(self):
        self.card = type("Card", (), {"data": {"input": {"spacing_mm": 1.5, "crop_size": 128},
                                               "output": {"channels": [{"channel": c, "node_label": l}
                                                                       for c, l in enumerate((0, 1, 2, 5))]}}})()
        self.algorithm = AlgorithmInfo("fake-cine", "1", "dicomnode project", "2.25.1")
        self.calls = 0

    def run(self, inputs):
        self.calls += 1
        return threshold_model(inputs)


class FakeRuntime:
    def __init__(self):
        self.loaded = FakeModel()

    def model(self, name):
        assert name == "cine_unet"
        return self.loaded

    def available(self, name):
        return name == "cine_unet"


def context(runtime):
    return AnalysisContext(config=Config(), runtime=runtime, started_at=dt.datetime(2026, 11, 21))


def test_pipeline_measures_a_synthetic_cine_in_one_batched_run():
    shape, spacing = (160, 160), (1.5, 1.5)
    # 12 phases, pool area a smooth cosine cycle: radius 34 mm at the R wave (ED, phase 0), 20 mm at ES (phase 4)
    areas = [20.0 ** 2 + (34.0 ** 2 - 20.0 ** 2) * (1 + np.cos(np.pi * (p / 4 if p <= 4 else (12 - p) / 8))) / 2
             for p in range(12)]
    radii = np.sqrt(areas)
    pixels = np.full((12, 3, *shape), 100.0, np.float32)
    for phase, radius in enumerate(radii):
        pixels[phase, :, disc(shape, (79.5, 79.5), radius, spacing)] = 400.0
    volume = FakeVolume(pixels, spacing, 8.0, trigger_times=[40.0 * p for p in range(12)])
    runtime = FakeRuntime()
    result = CinePipeline(Config(), runtime).run(FakeStudy(volume), context(runtime))
    # one probe of the middle slices finds the heart at the image centre, one more there reads where the RV lies
    # (the anatomical pose; this fake finds none, so no turn), then one batched run of every slice
    assert runtime.loaded.calls == 3
    assert result.name == "cine" and not result.declined
    required = {"lv_edv_ml", "lv_esv_ml", "lv_sv_ml", "lv_ef_percent", "lv_mass_g", "rv_edv_ml", "rv_esv_ml", "rv_sv_ml",
                "rv_ef_percent", "ed_phase", "es_phase"}
    assert required <= set(result.summary)
    assert (result.summary["ed_phase"], result.summary["es_phase"]) == (0, 4)
    expected_edv = 3 * np.pi * 34.0 ** 2 * 8.0 / 1000.0
    expected_esv = 3 * np.pi * 20.0 ** 2 * 8.0 / 1000.0
    assert result.summary["lv_edv_ml"] == pytest.approx(expected_edv, rel=0.03)
    assert result.summary["lv_esv_ml"] == pytest.approx(expected_esv, rel=0.05)
    assert result.summary["lv_ef_percent"] == pytest.approx((1 - (20 / 34) ** 2) * 100, abs=1.5)
    assert result.summary["bsa_m2"] == pytest.approx(2.0) and result.summary["bsa_formula"] == "mosteller"
    segmentation = result.segmentations[0]
    assert segmentation.labelmap.shape == (2, 3, *shape)
    assert segmentation.phases == [0, 4] and segmentation.phase_names == ["end diastole", "end systole"]
    assert segmentation.pipeline == "cine"
    assert len(result.measurements["lv_volume_curve_ml"]) == 12
    assert result.summary["lv_volume_curve_ml"] == result.measurements["lv_volume_curve_ml"]
    assert len(result.summary["rv_volume_curve_ml"]) == 12
    assert result.summary["timing"]["flagged_phases"] == [] and result.summary["timing"]["trigger_phase"] == 0
    assert result.summary["basal_slices_excluded"] == [] and "50 %" in result.summary["basal_slice_rule"]
    assert result.measurements["papillary_muscles"] == "cavity"
    assert result.measurements["trigger_times"] == [40.0 * p for p in range(12)]
    # EDV ~87 mL is below the male range (106-214 mL), but a lower bound (the LV goes on beyond the stack): not
    # judged against the lower limit, and said so (break40b F3)
    assert not any(flag.startswith("LV EDV below normal range") for flag in result.measurements["flags"])
    assert any(flag.startswith("lower limits of normal not applied to lower bounds (incomplete LV coverage): LV EDV")
               for flag in result.measurements["flags"])
    assert result.summary["flags"] == result.measurements["flags"]
    # three equal slices of a cylinder: the LV goes on beyond the stack, said beside the numbers
    assert result.summary["coverage"]["complete"] is False and result.summary["coverage"]["apical_end"] == "first"
    assert result.summary["flags"][0].startswith("incomplete LV coverage: the LV still covers 100 %")
    assert result.algorithms == [runtime.loaded.algorithm]


def test_pipeline_declines_without_cine_sax_and_on_study_error():
    runtime = FakeRuntime()
    study = FakeStudy(has_cine=False)
    result = CinePipeline(Config(), runtime).run(study, context(runtime))
    assert study.asked == [("cine", "sax")]
    assert result.summary is None and "no cine short-axis" in result.declined[0].reason
    result = CinePipeline(Config(), runtime).run(FakeStudy(error=StudyError("slices differ in size")), context(runtime))
    assert result.summary is None and "slices differ in size" in result.declined[0].reason
    single_phase = FakeVolume(np.zeros((1, 4, 64, 64), np.float32))
    result = CinePipeline(Config(), runtime).run(FakeStudy(single_phase), context(runtime))
    assert result.summary is None and "phase" in result.declined[0].reason


def test_pipeline_declines_when_nothing_is_found():
    runtime = FakeRuntime()
    flat = FakeVolume(np.full((3, 3, 160, 160), 100.0, np.float32))  # nothing brighter than the rest
    result = CinePipeline(Config(), runtime).run(FakeStudy(flat), context(runtime))
    assert result.summary is None and "no LV blood pool" in result.declined[0].reason


# ------------------------------------------------------------------ real DICOM, real shipped model
def test_real_sunnybrook_cine_with_the_shipped_model(datasets):
    from dicomnode.cmr.study import load_studies
    from dicomnode.inference import Runtime

    runtime = Runtime()
    if not runtime.available("cine_unet"):
        pytest.fail("engines/models/cine_unet.onnx + .json must ship with the repository")
    studies = load_studies([datasets / "sunnybrook-scd" / "dicoms" / "SCD0000301"])
    assert len(studies) == 1
    result = CinePipeline(Config(), runtime).run(studies[0], context(runtime))
    assert not result.declined, result.declined
    summary = result.summary
    # SCD0000301: heart failure with infarction, contour reference LVEF 21.8 %, ED phase 19, ES phase 6
    assert 5.0 <= summary["lv_ef_percent"] <= 40.0
    # a failing heart has a flat systolic plateau: ES may sit a few phases from the contoured frame
    assert summary["ed_phase"] in (16, 17, 18, 19, 0, 1) and summary["es_phase"] in range(3, 11)
    assert 150.0 <= summary["lv_edv_ml"] <= 330.0
    assert len(result.measurements["lv_volume_curve_ml"]) == 20
    segmentation = result.segmentations[0]
    # ED and ES, then the RV's own ED / ES where RV EDV / ESV were read at other phases (f49b: SCD0000301's RV ES is
    # one phase after the LV's)
    timing = summary["timing"]
    own_rv = [p for p in (timing["rv_ed_phase"], timing["rv_es_phase"]) if p not in (summary["ed_phase"],
                                                                                   summary["es_phase"])]
    assert segmentation.phases == [summary["ed_phase"], summary["es_phase"]] + own_rv
    assert segmentation.labelmap.shape == (2 + len(own_rv),) + segmentation.volume.pixels.shape[1:]
    assert result.algorithms[0].manufacturer == "dicomnode project"


def test_report_methods_state_the_basal_rule_and_the_unused_phases():
    from dicomnode.results.report import _methods_lines

    cine = type("Result", (), {"name": "cine", "summary": {"timing": {"flagged_phases": [3, 7]}}})()
    text = " ".join(_methods_lines([cine]))
    assert ">= 50 % of its outline borders myocardium" in text and "the same rule at every phase" in text
    assert "phases 4 and 8 (counted from 1) not used as ED or ES (LV volume jumps" in text


def test_pipeline_measures_a_two_phase_export_es_first():
    # an export of only the ES and ED phases (in that order): ED is the larger LV volume, no curve is smoothed
    shape, spacing = (160, 160), (1.5, 1.5)
    pixels = np.full((2, 3, *shape), 100.0, np.float32)
    for phase, radius in enumerate((20.0, 34.0)):
        pixels[phase, :, disc(shape, (79.5, 79.5), radius, spacing)] = 400.0
    runtime = FakeRuntime()
    volume = FakeVolume(pixels, spacing, 8.0, trigger_times=[310.0, 0.0])
    result = CinePipeline(Config(), runtime).run(FakeStudy(volume), context(runtime))
    assert not result.declined
    assert (result.summary["ed_phase"], result.summary["es_phase"]) == (1, 0)
    assert result.summary["lv_ef_percent"] == pytest.approx((1 - (20 / 34) ** 2) * 100, abs=1.5)
    assert result.summary["timing"]["trigger_phase"] == 1
    assert any("2 phases" in note for note in result.summary["timing"]["notes"])


# ------------------------------------------------------------------ first-phase context (two-channel models)
def test_first_phase_context_is_the_same_slice_at_the_r_wave_phase():
    rng = np.random.default_rng(5)
    pixels = rng.random((3, 2, 90, 100)).astype(np.float32) * 500
    spec = CineModelSpec(context="first_phase")
    assert spec.input_channels == 2 and SPEC.input_channels == 1
    inputs, _ = preprocess_cine(pixels, (1.4, 1.4), spec, first_phase=2)
    single, _ = preprocess_cine(pixels, (1.4, 1.4), SPEC)
    assert inputs.shape == (6, 2, 128, 128)
    grid = inputs.reshape(3, 2, 2, 128, 128)
    assert np.array_equal(grid[:, :, 0], single.reshape(3, 2, 128, 128))  # channel 0: the slice itself
    for phase in range(3):
        assert np.array_equal(grid[phase, :, 1], grid[2, :, 0])  # channel 1: the same slice at the R-wave phase
    with pytest.raises(ValueError, match="outside the cine's 3 phases"):
        preprocess_cine(pixels, (1.4, 1.4), spec, first_phase=3)


def test_model_card_context_is_read_and_checked():
    card = FakeModel().card.data
    assert CineModelSpec.from_card(card).context == "none"
    with_context = {**card, "input": {**card["input"], "context": "first_phase"}}
    assert CineModelSpec.from_card(with_context).input_channels == 2
    with pytest.raises(ValueError, match="'previous_phase' is not one of"):
        CineModelSpec.from_card({**card, "input": {**card["input"], "context": "previous_phase"}})


def test_pipeline_gives_a_context_model_the_r_wave_phase_of_an_es_first_export():
    # ES stored first, ED (TriggerTime 0) second: the context channel must be the ED slice for both phases
    shape, spacing = (160, 160), (1.5, 1.5)
    pixels = np.full((2, 3, *shape), 100.0, np.float32)
    for phase, radius in enumerate((20.0, 34.0)):
        pixels[phase, :, disc(shape, (79.5, 79.5), radius, spacing)] = 400.0
    runtime = FakeRuntime()
    runtime.loaded.card.data = {**runtime.loaded.card.data,
                                "input": {**runtime.loaded.card.data["input"], "context": "first_phase"}}
    seen = []
    runtime.loaded.run = lambda inputs: seen.append(inputs) or threshold_model(inputs)
    result = CinePipeline(Config(), runtime).run(FakeStudy(FakeVolume(pixels, spacing, 8.0, trigger_times=[310.0, 0.0])),
                                                 context(runtime))
    assert not result.declined and (result.summary["ed_phase"], result.summary["es_phase"]) == (1, 0)
    inputs = seen[-1].reshape(2, 3, 2, 128, 128)
    assert np.array_equal(inputs[0, :, 1], inputs[1, :, 0]) and np.array_equal(inputs[1, :, 1], inputs[1, :, 0])
    probe = seen[0]  # the localisation probe: the middle slices at the R-wave phase, their own context
    assert probe.shape == (3, 2, 128, 128) and np.array_equal(probe[:, 0], probe[:, 1])
    assert np.array_equal(probe, inputs[1])


# ------------------------------------------------------------------ neighbours context (2.5-D models)
def test_neighbours_context_is_the_previous_and_next_slice_at_the_same_phase():
    rng = np.random.default_rng(6)
    pixels = rng.random((2, 4, 90, 100)).astype(np.float32) * 500
    spec = CineModelSpec(context="neighbours")
    assert spec.input_channels == 3
    inputs, _ = preprocess_cine(pixels, (1.4, 1.4), spec)
    single, _ = preprocess_cine(pixels, (1.4, 1.4), SPEC)
    assert inputs.shape == (8, 3, 128, 128)
    grid, own = inputs.reshape(2, 4, 3, 128, 128), single.reshape(2, 4, 128, 128)
    assert np.array_equal(grid[:, :, 0], own)
    for z in range(4):
        assert np.array_equal(grid[:, z, 1], own[:, max(z - 1, 0)])  # previous slice, the slice itself at the start
        assert np.array_equal(grid[:, z, 2], own[:, min(z + 1, 3)])  # next slice, the slice itself at the end
    one_slice, _ = preprocess_cine(pixels[:, :1], (1.4, 1.4), spec)
    assert all(np.array_equal(one_slice[:, k], one_slice[:, 0]) for k in (1, 2))


def test_pipeline_runs_a_neighbours_model_with_three_channels():
    shape, spacing = (160, 160), (1.5, 1.5)
    pixels = np.full((2, 5, *shape), 100.0, np.float32)
    for phase, radius in enumerate((34.0, 20.0)):
        pixels[phase, :, disc(shape, (79.5, 79.5), radius, spacing)] = 400.0
    runtime = FakeRuntime()
    runtime.loaded.card.data = {**runtime.loaded.card.data,
                                "input": {**runtime.loaded.card.data["input"], "context": "neighbours"}}
    seen = []
    runtime.loaded.run = lambda inputs: seen.append(inputs) or threshold_model(inputs)
    result = CinePipeline(Config(), runtime).run(FakeStudy(FakeVolume(pixels, spacing, 8.0)), context(runtime))
    assert not result.declined and (result.summary["ed_phase"], result.summary["es_phase"]) == (0, 1)
    assert seen[-1].shape == (10, 3, 128, 128)
    assert CineModelSpec.from_card(runtime.loaded.card.data).context == "neighbours"


def test_card_logit_offsets_move_the_decision_threshold():
    """output.channels[].logit_offset (engines.cine.calibrate) is added before the softmax: a myocardium offset thins
    the wall the model draws; none leaves the labels as they were; a wrong count or value is refused."""
    card = FakeModel().card.data
    assert CineModelSpec.from_card(card).logit_offsets == ()
    channels = [{**c, "logit_offset": (-3.0 if c["node_label"] == int(Label.LV_MYOCARDIUM) else 0.0)}
                for c in card["output"]["channels"]]
    spec = CineModelSpec.from_card({**card, "output": {**card["output"], "channels": channels}})
    assert spec.logit_offsets[[c["node_label"] for c in channels].index(int(Label.LV_MYOCARDIUM))] == -3.0

    def soft_wall_model(inputs):
        logits = threshold_model(inputs)
        logits[:, 2] = np.where(logits[:, 2] > 0, 2.0, -5.0)  # the wall wins over background by 2 logits only
        return logits

    shape, spacing = (160, 160), (1.5, 1.5)
    pixels = np.full((1, 1, *shape), 100.0, np.float32)
    pixels[0, 0, disc(shape, (80, 80), 20.0, spacing)] = 400.0
    plain = segment_cine(pixels, spacing, soft_wall_model, SPEC)
    unchanged = segment_cine(pixels, spacing, soft_wall_model, CineModelSpec(logit_offsets=(0.0, 0.0, 0.0, 0.0)))
    assert np.array_equal(plain, unchanged)
    thinner = segment_cine(pixels, spacing, soft_wall_model, CineModelSpec(logit_offsets=(0.0, 0.0, -3.0, 0.0)))
    wall = int(Label.LV_MYOCARDIUM)
    assert (plain == wall).sum() > 0 and (thinner == wall).sum() == 0
    with pytest.raises(ValueError, match="3 logit offsets for 4 channels"):
        CineModelSpec(logit_offsets=(0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="finite"):
        CineModelSpec(logit_offsets=(0.0, float("nan"), 0.0, 0.0))


def test_epicardial_offset_thins_the_outer_wall_and_leaves_every_blood_pool_alone():
    """output.epicardial_logit_offset (engines.cine.calibrate_epicardium) moves only the myocardium / background
    decision: the wall's uncertain outer rim becomes background, its confident inner part and every LV and RV
    blood-pool pixel keep their labels, and so does the wall the pools' outlines touch (volumes, EF, the basal-slice
    rule and the RV insertion points cannot change; review45 #7); negative or absurd offsets are refused."""
    resampler = InplaneResampler((128, 128), (1.5, 1.5), 1.5, 128)
    rr, cc = np.mgrid[0:128, 0:128]
    radius = np.hypot(rr - 64, cc - 54)
    probabilities = np.zeros((1, 4, 128, 128), np.float32)
    # the RV touches the wall's outer rim on the septal side (columns 72-84 of the wall reach radius 18-20)
    pool, wall = radius < 12, (radius >= 12) & (radius < 20)
    rv = (np.hypot(rr - 64, cc - 80) < 10) & ~wall & ~pool
    myocardium_share = np.clip(0.95 - 0.05 * (radius - 12), 0.5, 0.95)  # 0.95 at the pool, ~0.55 at the outer rim
    probabilities[0, 1][pool], probabilities[0, 0][pool] = 0.9, 0.1
    probabilities[0, 2][wall], probabilities[0, 0][wall] = myocardium_share[wall], 1 - myocardium_share[wall]
    probabilities[0, 3][rv], probabilities[0, 0][rv] = 0.6, 0.4
    probabilities[0, 0][~(pool | wall | rv)] = 1.0
    plain = labels_from_probabilities(probabilities, resampler)
    thinner = labels_from_probabilities(probabilities, resampler, epicardial_offset=1.0)
    myocardium = int(Label.LV_MYOCARDIUM)
    for label in (Label.LV_BLOOD_POOL, Label.RV_BLOOD_POOL):
        assert np.array_equal(plain == label, thinner == label)
    assert (plain == myocardium).sum() > (thinner == myocardium).sum() > 0
    assert not ((thinner == myocardium) & (plain != myocardium)).any()
    assert np.array_equal(myocardial_surround(plain[None]), myocardial_surround(thinner[None]))  # basal rule unmoved
    beside_rv = ndimage.binary_dilation(plain[0] == Label.RV_BLOOD_POOL, np.ones((3, 3), bool)) & (plain[0] == myocardium)
    assert beside_rv.sum() > 5 and (thinner[0][beside_rv] == myocardium).all()  # the septum's RV side stays
    assert (thinner[0][(radius > 17) & ~beside_rv] != myocardium).all()
    assert (thinner[0][(radius >= 12.5) & (radius < 14)] == myocardium).all()
    assert np.array_equal(labels_from_probabilities(probabilities, resampler, epicardial_offset=0.0), plain)

    card = FakeModel().card.data
    assert CineModelSpec.from_card(card).epicardial_offset == 0.0
    assert CineModelSpec.from_card({**card, "output": {**card["output"], "epicardial_logit_offset": 1.25}}
                                   ).epicardial_offset == 1.25
    for wrong in (-0.5, float("inf"), 11.0):
        with pytest.raises(ValueError, match="epicardial logit offset"):
            CineModelSpec(epicardial_offset=wrong)


def test_the_seg_draws_the_lv_blood_pool_only_where_the_volumes_counted_it():
    """A basal slice whose pool the basal-slice rule leaves out (no myocardium around it) is not drawn either: the
    SEG re-measures to the reported EDV and ESV."""
    shape, spacing, slices = (160, 160), (1.5, 1.5), 3
    radii = [34.0, 30.0, 24.0, 20.0, 26.0, 32.0]
    pixels = np.full((len(radii), slices, *shape), 100.0, np.float32)
    for phase, radius in enumerate(radii):
        pixels[phase, :, disc(shape, (79.5, 79.5), radius, spacing)] = 400.0

    def no_wall_on_slice_0(inputs):
        logits = threshold_model(inputs)
        logits[0::slices, 2] = -5.0  # inputs are phase-major: every `slices`-th crop is slice 0
        return logits

    runtime = FakeRuntime()
    runtime.loaded.run = no_wall_on_slice_0
    volume = FakeVolume(pixels, spacing, 8.0, trigger_times=[50.0 * p for p in range(len(radii))])
    result = CinePipeline(Config(), runtime).run(FakeStudy(volume), context(runtime))
    assert not result.declined and [z for _, z in result.summary["basal_slices_excluded"]].count(0) == len(radii)
    segmentation = result.segmentations[0]
    voxel_ml = spacing[0] * spacing[1] * 8.0 / 1000.0
    for index, key in enumerate(("lv_edv_ml", "lv_esv_ml")):
        drawn = (segmentation.labelmap[index] == Label.LV_BLOOD_POOL).sum() * voxel_ml
        assert drawn == pytest.approx(result.summary[key], abs=0.01)
        assert not (segmentation.labelmap[index, 0] == Label.LV_BLOOD_POOL).any()


# ------------------------------------------------------------------ heart localisation
@pytest.mark.parametrize("centre_mm, spacing", [((-95.0, 70.0), (1.4, 1.4)), ((60.0, -120.0), (0.9, 0.8)),
                                                ((0.0, 40.0), (1.5, 1.5)), ((0.0, 0.0), (1.5, 1.5))])
def test_an_off_centre_heart_is_segmented_whole(centre_mm, spacing):
    # a 400 mm field with the heart (LV disc r 30 mm, RV disc r 28 mm beside it) planned far from the image centre:
    # a crop centred on the image (192 mm) cuts it; the located crop holds all of it. A heart well inside the
    # image-centred crop keeps that crop (the network's training crops were centred on the image)
    shape = tuple(int(round(400 / s)) for s in spacing)
    middle = [(n - 1) / 2 + c / s for n, c, s in zip(shape, centre_mm, spacing)]
    lv_centre, rv_centre = (middle[0], middle[1] - 22 / spacing[1]), (middle[0], middle[1] + 40 / spacing[1])
    pixels = np.full((2, 4, *shape), 100.0, np.float32)
    lv = disc(shape, lv_centre, 30.0, spacing)
    rv = disc(shape, rv_centre, 28.0, spacing) & ~disc(shape, lv_centre, 38.0, spacing)
    pixels[:, :, lv] = 400.0
    pixels[:, :, rv] = 200.0

    def two_ventricles(inputs):  # the threshold model, plus grey pixels (a third of the way to the pool) as RV
        logits = threshold_model(inputs)
        crops = inputs[:, 0]
        background = np.median(crops, axis=(1, 2), keepdims=True)
        grey = (crops > background + (crops.max(axis=(1, 2), keepdims=True) - background) / 6)
        logits[:, 3] = np.where(grey & (logits[:, 1] <= 0) & (logits[:, 2] <= 0), 10.0, -10.0)
        return logits

    centre = locate_heart(pixels, spacing, two_ventricles, SPEC)
    assert centre is not None
    # the box of the LV with its 3-pixel wall (LV centre - 34.5 mm) and the RV (to LV centre + 62 + 28 mm)
    expected_col = lv_centre[1] + (90 - 34.5) / 2 / spacing[1]
    if centre_mm == (0.0, 0.0):  # box from 56.5 mm left to 68 mm right of the image centre: inside the 192 mm crop
        assert centre == tuple((n - 1) / 2 for n in shape)
    else:
        assert abs((centre[0] - middle[0]) * spacing[0]) < 4 and abs((centre[1] - expected_col) * spacing[1]) < 4
    labels = segment_cine(pixels, spacing, two_ventricles, SPEC)
    found_lv = labels[0, 0] == Label.LV_BLOOD_POOL
    found_rv = labels[0, 0] == Label.RV_BLOOD_POOL
    assert 2 * (found_lv & lv).sum() / (found_lv.sum() + lv.sum()) > 0.95
    assert 2 * (found_rv & rv).sum() / (found_rv.sum() + rv.sum()) > 0.9
    if max(abs(c) for c in centre_mm) >= 40:  # the image-centred crop loses part of the heart
        centred = segment_cine(pixels, spacing, two_ventricles, SPEC, localise=False)
        assert (centred[0, 0] == Label.RV_BLOOD_POOL).sum() < 0.9 * found_rv.sum()


def test_no_heart_in_any_crop_keeps_the_image_centre():
    pixels = np.full((2, 3, 300, 300), 100.0, np.float32)
    calls = []

    def nothing(inputs):
        calls.append(len(inputs))
        logits = np.zeros((len(inputs), 4, 128, 128), np.float32)
        logits[:, 0] = 5.0
        return logits

    assert locate_heart(pixels, (1.5, 1.5), nothing, SPEC) is None
    assert len(calls) == 25 and set(calls) == {3}  # the centred crop, then tiles 96 mm apart over the 450 mm field
    assert not segment_cine(pixels, (1.5, 1.5), nothing, SPEC).any()


# ------------------------------------------------------------------ orientation of the stored grid
def _lopsided_model(inputs: np.ndarray) -> np.ndarray:
    """A stand-in network that is not orientation-invariant: the threshold model, but it draws the myocardial wall
    three times as thick on the left half of its crop (so the stored grid's orientation changes its answer)."""
    logits = threshold_model(inputs)
    pool = logits[:, 1] > 0
    thick = ndimage.binary_dilation(pool, np.ones((1, 19, 19), bool)) & ~pool
    thick[:, :, inputs.shape[-1] // 2:] = False
    logits[:, 2] = np.where(thick, 5.0, logits[:, 2])
    return logits


def test_the_same_plane_stored_eight_ways_gives_the_same_labels():
    # a heart slightly off-centre towards the patient's left and posterior; stored as a scanner could store it in
    # eight ways (ImageOrientationPatient changed with the grid, anatomy unchanged): identical labels in patient
    # space, though the stand-in network answers differently for differently oriented inputs
    from dicomnode.cmr.orientation import ALL_TRANSFORMS

    shape, spacing = (150, 170), (1.4, 1.6)
    pixels = np.full((3, 2, *shape), 100.0, np.float32)
    for phase, radius in enumerate((32.0, 24.0, 28.0)):
        pixels[phase, :, disc(shape, (88.0, 94.0), radius, spacing)] = 400.0
    iop = np.array([0.8, 0.6, 0.0, -0.36, 0.48, 0.8])  # an oblique plane: columns left-posterior, rows superior-ish
    answers, raw = [], []
    for stored in ALL_TRANSFORMS:
        row_dir, col_dir = stored.directions(iop[:3], iop[3:])
        volume = FakeVolume(stored.apply(pixels), stored.spacing(spacing), 8.0, trigger_times=[0.0, 300.0, 600.0],
                            orientation=np.concatenate([row_dir, col_dir]))
        runtime = FakeRuntime()
        runtime.loaded.run = _lopsided_model
        result = CinePipeline(Config(), runtime).run(FakeStudy(volume), context(runtime))
        answers.append((result.summary["lv_edv_ml"], result.summary["lv_esv_ml"], result.summary["lv_mass_g"]))
        back = stored.invert(result.segmentations[0].labelmap)  # the source grid again
        raw.append(back)
        plain = segment_cine(stored.apply(pixels), stored.spacing(spacing), _lopsided_model, SPEC)
        answers.append(("without canonical orientation", int((plain == Label.LV_MYOCARDIUM).sum())))
    assert len({a for a in answers if a[0] != "without canonical orientation"}) == 1
    assert all(np.array_equal(raw[0], other) for other in raw[1:])
    # the stand-in network alone does depend on the stored orientation: the check above can fail
    assert len({a for a in answers if a[0] == "without canonical orientation"}) > 1


def test_a_decline_is_logged_with_its_reason_as_lge_does(caplog):
    """breaktest2 finding 5: the log said only "cine declined in 0.10 s"; the reason was in `dicomnode status` only."""
    runtime = FakeRuntime()
    with caplog.at_level("INFO", logger="dicomnode.analysis.cine"):
        CinePipeline(Config(), runtime).run(FakeStudy(error=StudyError("inconsistent phase counts")), context(runtime))
        CinePipeline(Config(), runtime).run(FakeStudy(has_cine=False), context(runtime))
    declines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "dicomnode.analysis.cine"]
    assert declines == [
        ("INFO", "cine declined: cine short-axis series is not a usable stack: inconsistent phase counts"),
        ("INFO", "cine declined: no cine short-axis series in the study")]
    # the reason is an argument, so the patient-data filter sees it as interpolated text
    assert all(r.args for r in caplog.records if r.name == "dicomnode.analysis.cine")


# ------------------------------------------------------------------ a wider model refining ED and ES
def wider_pool_model(inputs: np.ndarray) -> np.ndarray:
    """The threshold stand-in drawing the blood pool 2 model pixels (3 mm) wider: a model that differs."""
    logits = threshold_model(inputs)
    pool = ndimage.binary_dilation(logits[:, 1] > 0, np.ones((1, 5, 5), bool))
    logits[:, 1] = np.where(pool, 10.0, -10.0)
    wall = ndimage.binary_dilation(pool, np.ones((1, 7, 7), bool)) & ~pool
    logits[:, 2] = np.where(wall, 5.0, -5.0)
    return logits


class RefiningRuntime(FakeRuntime):
    def __init__(self, context="none"):
        super().__init__()
        self.refine = FakeModel()
        self.refine.algorithm = AlgorithmInfo("fake-cine-wide", "2", "dicomnode project", "2.25.2")
        self.refine.card.data = {**self.refine.card.data, "input": {"spacing_mm": 1.5, "crop_size": 128, "context": context}}
        self.refine.inputs = []
        self.refine.run = lambda inputs: self.refine.inputs.append(inputs.shape) or wider_pool_model(inputs)

    def model(self, name):
        return self.refine if name == "cine_unet_refine" else super().model(name)

    def available(self, name):
        return name in ("cine_unet", "cine_unet_refine")


def cycling_cine():
    shape, spacing = (160, 160), (1.5, 1.5)
    areas = [20.0 ** 2 + (34.0 ** 2 - 20.0 ** 2) * (1 + np.cos(np.pi * (p / 4 if p <= 4 else (12 - p) / 8))) / 2
             for p in range(12)]
    pixels = np.full((12, 3, *shape), 100.0, np.float32)
    for phase, radius in enumerate(np.sqrt(areas)):
        pixels[phase, :, disc(shape, (79.5, 79.5), radius, spacing)] = 400.0
    return FakeVolume(pixels, spacing, 8.0, trigger_times=[40.0 * p for p in range(12)])


def test_a_refining_model_measures_ed_and_es_only():
    volume = cycling_cine()
    plain = CinePipeline(Config(), FakeRuntime()).run(FakeStudy(volume), context(FakeRuntime()))
    runtime = RefiningRuntime()
    result = CinePipeline(Config(), runtime).run(FakeStudy(volume), context(runtime))
    # the all-phase model chose ED/ES; the wide one saw only those two phases' 3 slices each, centred on the same heart
    assert runtime.refine.inputs == [(6, 1, 128, 128)]
    assert (result.summary["ed_phase"], result.summary["es_phase"]) == (0, 4)
    refinement = result.summary["ed_es_refinement"]
    assert refinement["model"] == "fake-cine-wide" and refinement["phases"] == [0, 4]
    assert refinement["all_phase_values"]["lv_edv_ml"] == pytest.approx(plain.summary["lv_edv_ml"], abs=0.01)
    # a pool 3 mm wider in radius: EDV and ESV grow; the curve carries the refined values at ED and ES only
    assert result.summary["lv_edv_ml"] > plain.summary["lv_edv_ml"] + 5
    assert result.summary["lv_esv_ml"] > plain.summary["lv_esv_ml"] + 3
    curve, plain_curve = result.summary["lv_volume_curve_ml"], plain.summary["lv_volume_curve_ml"]
    assert curve[0] == pytest.approx(result.summary["lv_edv_ml"], abs=0.01)
    assert curve[4] == pytest.approx(result.summary["lv_esv_ml"], abs=0.01)
    assert [curve[p] for p in range(12) if p not in (0, 4)] == [plain_curve[p] for p in range(12) if p not in (0, 4)]
    # the SEG shows what was measured, made by the refining model; both models are credited
    segmentation = result.segmentations[0]
    assert segmentation.algorithm.name == "fake-cine-wide"
    assert [a.name for a in result.algorithms] == ["fake-cine", "fake-cine-wide"]
    pool_ml = (segmentation.labelmap[0] == Label.LV_BLOOD_POOL).sum() * volume.voxel_volume_ml
    assert pool_ml == pytest.approx(result.summary["lv_edv_ml"], rel=0.01)
    assert plain.summary["ed_es_refinement"] is None
    # the report's methods say which network measured ED and ES, only where one did
    from dicomnode.results.report import _methods_lines
    assert "segmented again by a wider network" in " ".join(_methods_lines([result]))
    assert "wider network" not in " ".join(_methods_lines([plain]))


def test_a_refining_model_without_cross_validation_keeps_every_flag_s_known_error():
    """Review F10: a refining model's card holds only held-out agreement (no acdc_cv_* blocks), so with it installed
    the EDV / ESV / EDVi flags lost their known error and were asserted again; each quantity its card lacks now
    keeps the all-phase model's block, named as such."""
    all_phase = {"acdc_cv_lv_edv_ml": {"n": 100, "mae": 6.1, "mean_error": -4.67, "sd_error": 7.36},
                 "acdc_cv_lv_ef_percent": {"n": 100, "mae": 3.48, "mean_error": -1.04, "sd_error": 5.26}}
    refine_only = {"acdc_lv_ef_percent": {"n": 20, "mae": 3.04, "mean_error": -0.5, "sd_error": 4.0}}
    runtime = RefiningRuntime()
    runtime.loaded.card.data = {**runtime.loaded.card.data, "metrics": all_phase}
    runtime.refine.card.data = {**runtime.refine.card.data, "metrics": refine_only}
    result = CinePipeline(Config(), runtime).run(FakeStudy(cycling_cine()), context(runtime))
    assert result.summary["ed_es_refinement"] is not None
    validation = result.summary["flag_validation"]
    assert validation["lv_ef_percent"]["card_metric"] == "acdc_lv_ef_percent"  # the refining model's own
    assert validation["lv_edv_ml"]["card_metric"] == "cine_unet card: acdc_cv_lv_edv_ml"
    assert validation["lv_edv_ml"]["mae"] == pytest.approx(6.1)
    assert validation["lv_edv_ml"]["bias"] == 0.0  # the other model's bias is not this one's


def test_refinement_can_be_turned_off_and_refuses_a_first_phase_model():
    volume = cycling_cine()
    config = Config.model_validate({"analysis": {"cine": {"refine_ed_es": False}}})
    runtime = RefiningRuntime()
    result = CinePipeline(config, runtime).run(FakeStudy(volume), context(runtime))
    assert runtime.refine.inputs == [] and result.summary["ed_es_refinement"] is None
    with pytest.raises(ValueError, match="first_phase"):
        CinePipeline(Config(), RefiningRuntime(context="first_phase"))


def rv_box_model(inputs: np.ndarray) -> np.ndarray:
    """The threshold model plus a fixed RV blood pool (a 20 x 20 pixel box of the crop, away from the LV) at every
    phase: an RV that does not contract, so RV SV 0 against an LV SV of about 57 mL."""
    logits = threshold_model(inputs)
    logits[:, 3, 12:32, 12:32] = 10.0
    return logits


def test_the_pipeline_flags_rv_numbers_the_stroke_volume_mismatch_and_quotes_the_card_of_the_model_used():
    card_metrics = {"acdc_cv_rv_ef_percent": {"n": 100, "mae": 9.323, "mean_error": -4.989, "sd_error": 11.247},
                    "acdc_rv_ef_percent": {"n": 20, "mae": 10.221, "mean_error": -2.098, "sd_error": 13.608}}
    runtime = FakeRuntime()
    runtime.loaded.run = rv_box_model
    runtime.loaded.card.data = {**runtime.loaded.card.data, "metrics": card_metrics}
    result = CinePipeline(Config(), runtime).run(FakeStudy(cycling_cine()), context(runtime))
    flags = result.summary["flags"]
    assert flags == result.measurements["flags"]
    assert result.summary["rv_sv_ml"] == pytest.approx(0.0, abs=0.5) and result.summary["lv_sv_ml"] > 40
    assert any(f.startswith("RVEF below the RV systolic dysfunction cut-off") for f in flags), flags
    [mismatch] = [f for f in flags if f.startswith("LV and RV stroke volumes disagree")]
    assert f"LV SV {number_text(result.summary['lv_sv_ml'], 1)} mL" in mismatch and "regurgitation or a shunt" in mismatch
    [accuracy] = [f for f in flags if f.startswith("RV volumes and RVEF are less reliable")]
    assert "9.3 points MAE in cross-validation over 100" in accuracy and "10.2 points MAE on its 20 held-out" in accuracy
    # a refining model gives the ED / ES volumes: its card is quoted (here it has no RV validation, and says so)
    refining = RefiningRuntime()
    refining.loaded.run = rv_box_model
    refining.loaded.card.data = {**refining.loaded.card.data, "metrics": card_metrics}
    refining.refine.run = rv_box_model
    refined = CinePipeline(Config(), refining).run(FakeStudy(cycling_cine()), context(refining))
    assert refined.summary["ed_es_refinement"] is not None
    [accuracy] = [f for f in refined.summary["flags"] if f.startswith("RV volumes and RVEF")]
    assert "the model card gives no validated RV accuracy" in accuracy


def _pose_dependent_cine_model(x: np.ndarray) -> np.ndarray:
    """Fake cine network (channels 0, LV pool, LV myocardium, RV pool) that is not invariant to quarter turns: the
    brightest structure is LV blood pool, except in the right half of its field, where it is called myocardium."""
    image = x[:, 0]
    top = image.max(axis=(1, 2), keepdims=True)
    lv, rv = image > 0.75 * top, (image > 0.25 * top) & (image <= 0.75 * top)
    right = np.zeros(image.shape, bool)
    right[..., image.shape[-1] // 2:] = True
    channel = np.where(lv & right, 2, np.where(lv, 1, np.where(rv, 3, 0)))
    return (np.moveaxis(np.eye(4, dtype=np.float32)[channel], -1, 1) * 5.0).astype(np.float32)


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_segment_and_measure_gives_the_same_heart_the_same_maps_in_every_quarter_turn(turns):
    """break46c #1: SCD0000101 stored in a patient frame turned by 20 degrees read LVEF 31.1 % instead of 23.7 %:
    the patient-based orientation handed the network a quarter-turned plane. The anatomical pose removes it."""
    from types import SimpleNamespace

    from dicomnode.analysis.cine import segment_and_measure

    spec = CineModelSpec()
    rng = np.random.default_rng(2)
    pixels = rng.uniform(0.0, 2.0, (2, 3, 150, 150)).astype(np.float32)
    rr, cc = np.mgrid[:150, :150]
    for phase, radius in enumerate((14, 9)):
        pixels[phase][:, np.hypot(rr - 76, cc - 80) < radius] = 100.0  # LV
        pixels[phase][:, np.hypot(rr - 70, cc - 50) < 12] = 50.0  # RV to the LV's left

    def measure(maps, timing=None):
        return SimpleNamespace(lv_edv_ml=float((maps == Label.LV_BLOOD_POOL).sum()), maps=maps.copy())

    spacing = (spec.target_spacing, spec.target_spacing)
    reference, measured, _ = segment_and_measure(pixels, spacing, _pose_dependent_cine_model, spec, measure)
    assert (reference == Label.RV_BLOOD_POOL).any() and (reference == Label.LV_MYOCARDIUM).any()
    turned_pixels = np.rot90(pixels, turns, axes=(2, 3)).copy()
    turned, turned_measured, _ = segment_and_measure(turned_pixels, spacing, _pose_dependent_cine_model, spec, measure)
    np.testing.assert_array_equal(np.rot90(turned, -turns, axes=(2, 3)), reference)
    # measure() sees the maps in the orientation it was handed, whatever pose the network saw
    np.testing.assert_array_equal(turned_measured.maps, turned)
    assert turned_measured.lv_edv_ml == measured.lv_edv_ml
    plain, _, _ = segment_and_measure(turned_pixels, spacing, _pose_dependent_cine_model, spec, measure,
                                      anatomical_pose=False)
    unturned, _, _ = segment_and_measure(pixels, spacing, _pose_dependent_cine_model, spec, measure,
                                         anatomical_pose=False)
    assert not np.array_equal(np.rot90(plain, -turns, axes=(2, 3)), unturned)
