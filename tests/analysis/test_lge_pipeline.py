"""LGE pipeline on DICOM studies derived from EMIDEC with the shipped lge_unet model, plus its declines and mapping."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from dicomnode.analysis.lge import ASSUMED_GEOMETRY_NOTE, LGEInputSpec, LGEPipeline, normalise_percentile, segment_stack
from dicomnode.analysis.lge_metrics import lge_volumes
from dicomnode.analysis.pipeline import AnalysisContext
from dicomnode.cmr.study import load_studies
from dicomnode.cmr.types import StudyError
from dicomnode.config import Config
from dicomnode.devtools.make_study import make_study
from dicomnode.inference import Runtime
from dicomnode.analysis.phase_text import source_series_name
from dicomnode.rounding import stored_value

SUMMARY_KEYS = {"method", "myocardium_volume_ml", "lv_mass_g", "scar_volume_ml", "mvo_volume_ml", "lge_percent",
                "large_scar_burden", "nsd", "fwhm", "per_slice", "aha_segments", "series_instance_uid",
                "series_number", "series_description", "stack_warnings",
                # added (break2 findings 2, 3): numbers withheld with their reason, the burden flag's reason, coverage
                "determined", "reason", "large_scar_burden_reason", "coverage",
                # other LGE series of the same slices left aside, and why
                "series_left_aside",
                # every SeriesNumber of the stack merged from one-slice series (the siemens variant), break45a F1
                "series_numbers",
                # the model's cross-validated %LGE error on input like this, and whether %LGE lies within it of 15 %
                "lge_percent_validation",
                # the model's cross-validated MVO agreement: whether MVO is validated and its presence stated
                "mvo_validation",
                # the numbers behind the input warnings (blood / myocardium ratio, field of view), for the SR's NUMs
                "input_checks",
                # LGE present / absent / uncertain from %LGE against the cross-validated band (break49b finding 4)
                "lge_presence"}


@pytest.fixture(scope="module")
def runtime() -> Runtime:
    return Runtime()


@pytest.fixture(scope="module")
def siemens_study(datasets, tmp_path_factory):
    generated = make_study("emidec:Case_P043", tmp_path_factory.mktemp("lge") / "p043", "siemens", None,
                           datasets=datasets)
    [study] = load_studies([generated.out_dir / "dicom"])
    return generated, study


def context(config: Config, runtime: Runtime) -> AnalysisContext:
    return AnalysisContext(config=config, runtime=runtime, started_at=dt.datetime(2026, 11, 21, 12, 0))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * (a & b).sum() / max(1, a.sum() + b.sum())


def test_pipeline_on_psir_stack_matches_ground_truth_and_contract(siemens_study, runtime):
    generated, study = siemens_study
    config = Config()
    result = LGEPipeline(config, runtime).run(study, context(config, runtime))
    assert result.name == "lge" and not result.declined
    summary = result.summary
    assert set(summary) == SUMMARY_KEYS and summary["method"] == "dl"
    # one series per slice: named by the range of its SeriesNumbers, as the magnitude series left aside is
    numbers = summary["series_numbers"]
    assert len(numbers) == len(summary["per_slice"]) > 1 and numbers == sorted(numbers)
    assert summary["series_number"] == numbers[0]
    assert source_series_name(summary).startswith(f"series {numbers[0]}-{numbers[-1]} ")
    assert summary["nsd"]["n"] == config.analysis.lge.nsd_n and "lge_percent" in summary["fwhm"]
    # the EMIDEC-derived study states its assumed spacing in its header: its mL and g are nominal on every output
    # (break45a finding 12), not only on the demo's console
    assert ASSUMED_GEOMETRY_NOTE.format(where="DerivationDescription / ImageComments") in summary["stack_warnings"]
    # the shipped card's MVO is not validated: said in the summary, and its SEG segment marked (results/seg.py)
    assert summary["mvo_validation"]["validated"] is False and summary["mvo_validation"]["note"]
    assert result.segmentations[0].unvalidated_labels == (4,)
    psir = study.preferred("lge", "sax")
    assert psir.lge_kind == "psir" and summary["series_instance_uid"] == psir.series_instance_uid
    assert (summary["series_number"], summary["series_description"]) == (psir.series_number, psir.description)
    [segmentation] = result.segmentations
    volume = segmentation.volume
    assert segmentation.labelmap.shape == (1,) + volume.pixels.shape[1:]
    assert segmentation.phases == [0] and segmentation.phase_names == ["late enhancement"]
    assert segmentation.pipeline == "lge" and result.algorithms[0] == segmentation.algorithm
    # the numbers are the metrics of the returned label map on the source grid
    expected = lge_volumes(segmentation.labelmap[0], volume.voxel_volume_ml)
    assert summary["myocardium_volume_ml"] == pytest.approx(expected.myocardium_volume_ml, abs=0.01)
    assert summary["lge_percent"] == pytest.approx(expected.lge_percent, abs=0.01)
    assert summary["lv_mass_g"] == pytest.approx(expected.myocardium_volume_ml * 1.05, abs=0.02)
    assert len(summary["per_slice"]) == volume.pixels.shape[1]
    # every number stored as README says (rounding.stored_value: 2 decimals, more only where 2 would read otherwise)
    stored = [summary[k] for k in ("myocardium_volume_ml", "lv_mass_g", "scar_volume_ml", "mvo_volume_ml",
                                   "lge_percent")]
    stored += [v for entry in summary["per_slice"] for k, v in entry.items()
               if k.endswith(("_ml", "_percent")) and v is not None]
    assert stored and all(value == stored_value(value) for value in stored), stored
    # each slice names its image, in volume order (ascending along the stack normal, the SEG's frame order)
    for k, (entry, ref) in enumerate(zip(summary["per_slice"], volume.frames[0])):
        assert entry["slice_index"] == k and entry["sop_instance_uid"] == ref.sop_instance_uid
        assert entry["frame_number"] == ref.frame_number and isinstance(entry["position_mm"], float)
    positions = [entry["position_mm"] for entry in summary["per_slice"]]
    assert positions == sorted(positions)
    # agreement with the expert labels (ground truth slice order is generator order: match by SOP instance)
    truth_by_frame = generated.mask_by_frame()
    truth = np.stack([truth_by_frame[(f.sop_instance_uid, f.frame_number)] for f in volume.frames[0]])
    predicted = segmentation.labelmap[0]
    assert dice(np.isin(truth, [2, 3, 4]), np.isin(predicted, [2, 3, 4])) > 0.7
    assert dice(np.isin(truth, [3, 4]), np.isin(predicted, [3, 4])) > 0.3
    true_percent = lge_volumes(truth.astype(np.uint8), 1.0).lge_percent
    assert abs(summary["lge_percent"] - true_percent) < 12
    assert result.measurements["lge_kind"] == "psir" and result.measurements["heart_localised"] is True


def test_cutoff_comparator_and_nsd_factor_come_from_config(siemens_study, runtime):
    _, study = siemens_study
    config = Config.model_validate({"analysis": {"lge": {"large_burden_percent": 99.0, "nsd_n": 2}}})
    result = LGEPipeline(config, runtime).run(study, context(config, runtime))
    assert result.summary["large_scar_burden"] is False
    assert result.summary["nsd"]["n"] == 2
    assert result.measurements["large_burden_cutoff_percent"] == 99.0
    assert result.measurements["large_burden_comparator"] == ">="


class _Study:
    """A study stand-in for the decline paths."""

    def __init__(self, series=None, error: str | None = None):
        self._series, self._error = series, error

    def preferred(self, sequence, view="sax"):
        assert (sequence, view) == ("lge", "sax")
        return self._series

    def load_preferred(self, series, require_stack=True):
        return series, self.load_volume(series, require_stack)

    def load_volume(self, series, require_stack=True):
        raise StudyError(self._error)


class _Series:
    series_instance_uid = "1.2.3.4"
    lge_kind = "magnitude"


def test_declines_without_lge_stack_or_with_refused_volume(runtime):
    config = Config()
    pipeline = LGEPipeline(config, runtime)
    none = pipeline.run(_Study(), context(config, runtime))
    assert none.summary is None and none.declined[0].series_instance_uid is None
    assert "no LGE short-axis" in none.declined[0].reason
    refused = pipeline.run(_Study(_Series(), "slices are not parallel"), context(config, runtime))
    assert refused.summary is None and refused.declined[0].series_instance_uid == "1.2.3.4"
    assert "slices are not parallel" in refused.declined[0].reason


def test_constructor_refuses_wrong_arguments(runtime):
    with pytest.raises(TypeError, match="config"):
        LGEPipeline({"analysis": {}}, runtime)
    with pytest.raises(TypeError, match="runtime"):
        LGEPipeline(Config(), None)


def _threshold_model(x: np.ndarray) -> np.ndarray:
    """Fake model: bright pixels (normalised > 0.5) are LV blood pool, the rest background."""
    bright = (x[:, 0] > 0.5).astype(np.float32)
    logits = np.zeros((x.shape[0], 5) + x.shape[2:], dtype=np.float32)
    logits[:, 0] = 1 - bright
    logits[:, 1] = bright * 2
    return logits


def test_segment_stack_localises_and_maps_back_exactly():
    spec = LGEInputSpec()
    rows, cols = 300, 280
    # air noise, as a magnitude image has (a constant background would be the matrix's padding, left out of the
    # normalisation's statistics)
    image = np.random.default_rng(0).uniform(0.0, 2.0, (3, rows, cols)).astype(np.float32)
    rr, cc = np.mgrid[:rows, :cols]
    disc = np.hypot(rr - 110, cc - 170) < 15  # off the image centre (149.5, 139.5)
    image[:, disc] = 100.0
    segmented = segment_stack(image, (spec.pixel_spacing_mm, spec.pixel_spacing_mm), _threshold_model, spec)
    assert segmented.localised
    assert segmented.centre_rc == pytest.approx((110, 170), abs=0.6)
    # source spacing == model spacing: the crop is a pure shift, so the labels come back pixel for pixel
    np.testing.assert_array_equal(segmented.labels, np.broadcast_to(disc, image.shape).astype(np.uint8))


def _shrinking_discs(slices: int, rows: int = 300, cols: int = 280) -> tuple[np.ndarray, np.ndarray]:
    """A stack of bright discs off the field's centre (the field's centre competes as a candidate), smaller towards
    the apex so that a slice put back in the wrong place shows: (image, discs)."""
    rr, cc = np.mgrid[:rows, :cols]
    discs = np.stack([np.hypot(rr - 110, cc - 170) < radius for radius in range(18, 18 - slices, -1)])
    image = np.zeros((slices, rows, cols), dtype=np.float32)
    image[discs] = 100.0
    return image, discs


def test_segment_stack_compares_candidate_crops_on_the_middle_slice_and_runs_the_rest_once_per_chosen_crop():
    spec = LGEInputSpec()
    image, discs = _shrinking_discs(7)
    depths = []

    def counting_model(x):
        depths.append(x.shape[2])
        return _threshold_model(x)

    segmented = segment_stack(image, (spec.pixel_spacing_mm, spec.pixel_spacing_mm), counting_model, spec)
    # the chosen crops run the six slices the middle-slice probe did not (its probabilities are reused)
    whole = [i for i, depth in enumerate(depths) if depth == 6]
    assert depths[0] == 1 and len(depths) > 2, depths  # wide pass on the middle slice, then the candidates
    assert whole and all(depth == 1 for depth in depths[:whole[0]]), depths
    assert len(whole) <= 2 and whole == list(range(whole[0], len(depths))), depths
    assert segmented.localised
    np.testing.assert_array_equal(segmented.labels, discs.astype(np.uint8))


def _neighbour_model(x):
    """A 2.5-D stand-in: LV where a slice and both its neighbours (the slice itself at either end) are bright, so
    each slice's answer depends on the slices around it, as engines.lge.model.with_neighbours gives them."""
    bright = x[:, 0] > 0.5
    previous = np.concatenate([bright[:, :1], bright[:, :-1]], axis=1)
    following = np.concatenate([bright[:, 1:], bright[:, -1:]], axis=1)
    lv = (bright & previous & following).astype(np.float32)
    logits = np.zeros((x.shape[0], 5) + x.shape[2:], dtype=np.float32)
    logits[:, 0] = 1 - lv
    logits[:, 1] = lv * 2
    return logits


def test_segment_stack_gives_a_2p5d_model_every_slice_with_its_neighbours():
    """With slice_context 1 every slice comes out as in a whole-stack pass (the probe and the localisation pass
    carry their neighbours; nothing from a partial pass is reused); without it the middle slice, probed alone,
    would be its own neighbour and come out larger."""
    image, discs = _shrinking_discs(7)
    expected = np.stack([discs[max(k - 1, 0)] & discs[k] & discs[min(k + 1, 6)] for k in range(7)])
    depths = []

    def counting(x):
        depths.append(x.shape[2])
        return _neighbour_model(x)

    spec = LGEInputSpec(slice_context=1)
    result = segment_stack(image, (spec.pixel_spacing_mm, spec.pixel_spacing_mm), counting, spec)
    np.testing.assert_array_equal(result.labels, expected.astype(np.uint8))
    assert depths[0] == 3 and depths[-1] == 7, depths  # the middle slice with its neighbours; the whole stack
    independent = segment_stack(image, (spec.pixel_spacing_mm, spec.pixel_spacing_mm), _neighbour_model,
                                LGEInputSpec())
    assert (independent.labels[3] != expected[3]).any()
    with pytest.raises(ValueError, match="slice_context"):
        LGEInputSpec(slice_context=2)


def test_segment_stack_finds_the_heart_with_the_locating_model_and_segments_with_the_other():
    """The ensemble locates with one member and spends all members on the reported segmentation: the locating
    model runs pass 1 and the candidate comparison only, the segmenting model every slice at the chosen crop."""
    spec = LGEInputSpec()
    image, discs = _shrinking_discs(5)
    located, segmented_depths = [], []

    def locating_model(x):
        located.append(x.shape[2])
        return _threshold_model(x)

    def segmenting_model(x):
        segmented_depths.append(x.shape[2])
        logits = _threshold_model(x)
        logits[:, 1] = -1.0  # the segmenting model's own answer: no LV anywhere
        return logits

    result = segment_stack(image, (spec.pixel_spacing_mm, spec.pixel_spacing_mm), segmenting_model, spec,
                           locate_model=locating_model)
    assert located and all(depth == 1 for depth in located), located
    assert segmented_depths and all(depth == 5 for depth in segmented_depths), segmented_depths
    assert result.centre_rc == pytest.approx((110, 170), abs=0.6)  # found by the locating model
    assert not result.labels.any()  # the labels are the segmenting model's
    same = segment_stack(image, (spec.pixel_spacing_mm, spec.pixel_spacing_mm), _threshold_model, spec,
                         locate_model=_threshold_model)
    np.testing.assert_array_equal(same.labels, discs.astype(np.uint8))


def test_segment_stack_resamples_other_spacings_and_refuses_bad_input():
    image = np.random.default_rng(0).uniform(0.0, 2.0, (2, 200, 200)).astype(np.float32)  # air noise
    rr, cc = np.mgrid[:200, :200]
    disc = np.hypot(rr - 100, cc - 100) < 30
    image[:, disc] = 50.0
    labels = segment_stack(image, (1.1, 1.1), _threshold_model).labels
    assert labels.shape == image.shape
    assert dice(labels[0] == 1, disc) > 0.97
    with pytest.raises(ValueError, match="slices, rows, cols"):
        segment_stack(image[0], (1.0, 1.0), _threshold_model)
    with pytest.raises(ValueError, match="NaN"):
        segment_stack(np.full((2, 64, 64), np.nan, np.float32), (1.0, 1.0), _threshold_model)
    with pytest.raises(ValueError, match="multiple"):
        LGEInputSpec(crop_size=100)


def test_normalise_percentile_maps_percentiles_and_flat_stacks():
    values = np.arange(101, dtype=np.float32).reshape(1, 1, 101)
    out = normalise_percentile(values, 1, 99)
    assert out[0, 0, 1] == pytest.approx(0.0) and out[0, 0, 99] == pytest.approx(1.0)
    assert not normalise_percentile(np.full((2, 3, 3), 7.0)).any()


def test_normalise_zscore_is_invariant_to_linear_rescaling():
    from dicomnode.analysis.lge import normalise_zscore

    rng = np.random.default_rng(0)
    stack = rng.gamma(2.0, 100.0, size=(3, 40, 40)).astype(np.float32)
    twelve_bit = normalise_zscore(stack)
    eight_bit_like = normalise_zscore(stack * 0.06 + 12.0)
    np.testing.assert_allclose(twelve_bit, eight_bit_like, atol=1e-4)
    assert abs(float(twelve_bit.mean())) < 1e-4 and float(twelve_bit.std()) == pytest.approx(1.0, abs=1e-3)
    assert not normalise_zscore(np.full((2, 3, 3), 7.0)).any()



@pytest.mark.parametrize("fill", [0.0, "minimum", 5000.0])
def test_normalise_zscore_ignores_padding_of_the_matrix(fill):
    """A stack zero-filled (or filled with any constant) to a larger matrix normalises its image exactly as the
    unpadded stack: the padding does not enter the statistics (it moved a real case's %LGE by 1.5 points)."""
    from dicomnode.analysis.lge import normalise_zscore, padding_bounds

    rng = np.random.default_rng(1)
    stack = rng.gamma(2.0, 100.0, size=(3, 40, 50)).astype(np.float32)
    value = float(stack.min()) if fill == "minimum" else fill
    padded = np.pad(stack, ((0, 0), (30, 7), (0, 61)), constant_values=value)
    assert padding_bounds(padded) == (30, 70, 0, 50)
    np.testing.assert_allclose(normalise_zscore(padded)[:, 30:70, :50], normalise_zscore(stack), atol=1e-5)
    # a stack without padding is untouched by the rule (one constant row inside is not padding)
    stack[:, 20] = 7.0
    assert padding_bounds(stack) == (0, 40, 0, 50)


def test_small_field_of_view_is_said():
    from dicomnode.analysis.lge import MIN_TRAINED_FIELD_MM, small_field_notes

    stack = np.random.default_rng(2).gamma(2.0, 100.0, size=(2, 200, 256)).astype(np.float32)
    assert small_field_notes(stack, (1.4, 1.4)) == []  # 280 x 358 mm
    notes = small_field_notes(stack, (0.73, 0.73))  # 146 x 187 mm
    assert len(notes) == 1 and "146 x 187 mm" in notes[0] and f"{MIN_TRAINED_FIELD_MM:.0f} mm" in notes[0]
    # padding does not make a small field large
    padded = np.pad(stack, ((0, 0), (200, 200), (200, 200)))
    assert small_field_notes(padded, (0.73, 0.73)) == notes

@pytest.mark.parametrize("variant", ["as stored", "rotated, 2 slices", "cropped matrix, flipped"])
def test_shipped_model_on_real_geometry_any_orientation_field_of_view_and_two_slices(datasets, runtime, variant):
    """MyoPS (second centre, 12-bit, 0.73 mm): the node's inference finds the myocardium whatever the in-plane
    orientation, matrix and field of view, and on a stack of only two slices."""
    from engines.lge.data import load_myops

    case = load_myops(datasets / "myops2020-lge")[1]
    image, truth, spacing = case.image, case.labels, case.spacing_rc
    if variant == "rotated, 2 slices":
        image, truth = np.rot90(image[1:3], 1, axes=(1, 2)), np.rot90(truth[1:3], 1, axes=(1, 2))
        spacing = spacing[::-1]
    elif variant == "cropped matrix, flipped":
        rows, cols = np.nonzero(truth.max(axis=0))
        centre_r, centre_c = int(rows.mean()), int(cols.mean())
        window = (slice(None), slice(max(0, centre_r - 150), centre_r + 130), slice(max(0, centre_c - 140), centre_c + 160))
        image, truth = image[window][:, :, ::-1], truth[window][:, :, ::-1]
    model = runtime.model("lge_unet")
    spec = LGEInputSpec.from_card(model.card.data)
    labels = segment_stack(np.ascontiguousarray(image), spacing, model.run, spec).labels
    assert dice(np.isin(truth, [2, 3, 4]), np.isin(labels, [2, 3, 4])) > 0.6
    assert dice(truth == 1, labels == 1) > 0.6  # basal slices vary by up to ~0.15 with orientation


def test_threshold_methods_are_reported_only_where_the_model_card_validates_them(runtime):
    from dicomnode.analysis.lge import THRESHOLD_VALIDATION_KEY

    pipeline = LGEPipeline(Config(), runtime)
    pipeline.card_metrics = {THRESHOLD_VALIDATION_KEY: {"nsd5": {"r": 0.91}, "fwhm": {"r": 0.34}}}
    assert pipeline._unvalidated("nsd5") is None
    assert "r = 0.34" in pipeline._unvalidated("fwhm") and "not validated" in pipeline._unvalidated("fwhm")
    assert "no validation on record" in pipeline._unvalidated("nsd2")
    rng = np.random.default_rng(0)
    labels = np.zeros((3, 64, 64), np.uint8)
    rows, cols = np.mgrid[:64, :64]
    radius = np.hypot(rows - 32, cols - 32)
    labels[:, radius < 16] = 2
    labels[:, radius < 10] = 1
    labels[:, (radius >= 10) & (radius < 16) & (cols > 40)] = 3
    image = rng.normal(1000, 50, labels.shape) + 2000 * (labels == 3) + 3000 * (labels == 1)
    image[:, :4] = 0.0  # air above the heart: FWHM needs a magnitude image's zero (lge_metrics.FWHM_MAX_FLOOR_FRACTION)

    class Series:
        lge_kind = "magnitude"
        instances = []

    nsd, fwhm = pipeline._threshold_methods(image, labels, 0.01, (1.0, 1.0), Series())
    assert nsd["applicable"] is True and nsd["lge_percent"] > 0
    assert fwhm["applicable"] is False and fwhm["lge_percent"] is None and "r = 0.34" in fwhm["reason"]
    research = LGEPipeline(Config.model_validate({"analysis": {"lge": {"threshold_methods": "always"}}}), runtime)
    research.card_metrics = pipeline.card_metrics
    _, fwhm_always = research._threshold_methods(image, labels, 0.01, (1.0, 1.0), Series())
    assert fwhm_always["applicable"] is True and fwhm_always["lge_percent"] > 0
    # computed for research, the number keeps its caveat (summary.json) and the report page says it
    assert fwhm_always["validated"] is False and "r = 0.34" in fwhm_always["caveat"]
    assert "threshold_methods" not in fwhm_always["caveat"]
    from dicomnode.analysis.lge import FWHM_SUMMARY_EXTRAS, NSD_SUMMARY_EXTRAS, summary_block
    block = summary_block(fwhm_always, FWHM_SUMMARY_EXTRAS)
    assert block["validated"] is False and block["caveat"] == fwhm_always["caveat"] and block["lge_percent"] > 0
    assert summary_block(nsd, NSD_SUMMARY_EXTRAS)["n"] == nsd["n"] and "validated" not in nsd
    from dicomnode.results.report import _method_reference
    assert _method_reference(fwhm_always).startswith("NOT VALIDATED: agreement with expert %LGE r = 0.34")
    assert _method_reference(nsd) == "method-dependent, see methods"


def test_slice_order_does_not_change_the_numbers(datasets, runtime):
    """The node sorts slices along the stack normal, so a stack arrives base-first or apex-first depending on the
    scanner; localisation used to follow the middle slice and moved the crop by 48 mm between the two orders
    (EMIDEC Case_P002: %LGE 12.2 vs 6.8). The crop is now re-centred on the LV the network found."""
    from engines.lge.data import load_emidec

    case = next(c for c in load_emidec(datasets / "emidec-lge-png") if c.name == "Case_P002")
    model = runtime.model("lge_unet")
    spec = LGEInputSpec.from_card(model.card.data)
    forward = lge_volumes(segment_stack(case.image, case.spacing_rc, model.run, spec).labels, case.voxel_volume_ml)
    backward = lge_volumes(segment_stack(case.image[::-1].copy(), case.spacing_rc, model.run, spec).labels,
                           case.voxel_volume_ml)
    assert abs(forward.lge_percent - backward.lge_percent) < 2.0
    assert backward.myocardium_volume_ml == pytest.approx(forward.myocardium_volume_ml, rel=0.05)


def test_the_same_lge_stack_stored_another_way_gives_the_same_result(siemens_study, runtime):
    """A scanner may store the plane transposed, rotated or mirrored (ImageOrientationPatient follows the grid): the
    shipped network is not exactly invariant to that, so the pipeline hands it one canonical orientation and the
    labels and numbers do not move (before, %LGE moved by up to a point and scar by 5 % on such re-stored stacks)."""
    import dataclasses

    from dicomnode.cmr.orientation import ALL_TRANSFORMS

    _, study = siemens_study
    series = study.preferred("lge", "sax")
    volume = study.load_volume(series)

    class Restored:
        def __init__(self, transform):
            self.transform = transform

        def preferred(self, sequence, view="sax"):
            return study.preferred(sequence, view)

        def load_preferred(self, series, require_stack=True):
            return series, self.load_volume(series, require_stack)

        def load_volume(self, series, require_stack=True):
            row_dir, col_dir = self.transform.directions(volume.orientation[:3], volume.orientation[3:])
            return dataclasses.replace(volume, pixels=self.transform.apply(volume.pixels),
                                       pixel_spacing=self.transform.spacing(volume.pixel_spacing),
                                       orientation=np.concatenate([row_dir, col_dir]))

    config = Config()
    results = {}
    for transform in (ALL_TRANSFORMS[0], ALL_TRANSFORMS[3], ALL_TRANSFORMS[5], ALL_TRANSFORMS[6]):
        result = LGEPipeline(config, runtime).run(Restored(transform), context(config, runtime))
        results[transform] = (transform.invert(result.segmentations[0].labelmap), result.summary["lge_percent"],
                              result.summary["myocardium_volume_ml"])
    reference = results[ALL_TRANSFORMS[0]]
    for transform, (labels, percent, myocardium) in results.items():
        assert np.array_equal(labels, reference[0]), transform
        assert (percent, myocardium) == reference[1:]
    # and the network alone does depend on the stored orientation (so the check above can fail)
    model = runtime.model("lge_unet")
    spec = LGEInputSpec.from_card(model.card.data)
    plain = [ALL_TRANSFORMS[i].invert(segment_stack(ALL_TRANSFORMS[i].apply(volume.pixels[0]),
                                                    ALL_TRANSFORMS[i].spacing(volume.pixel_spacing), model.run,
                                                    spec, anatomical_pose=False).labels) for i in (0, 3)]
    assert not np.array_equal(plain[0], plain[1])


def test_a_field_of_view_smaller_than_the_crop_is_not_padded(siemens_study, runtime, monkeypatch):
    """A stack whose field of view (170 mm, whole LV inside) is smaller than the model's 192 mm crop: the crop
    shrinks to the field (the network never saw padding in training) and stays inside it. Padded to the full crop,
    the same stack moved %LGE by 7 points and the myocardium by 9 % in a field review."""
    from dicomnode.analysis.lge import LGEInputSpec

    _, study = siemens_study
    volume = study.load_volume(study.preferred("lge", "sax"))
    image, spacing = volume.pixels[0], volume.pixel_spacing
    model = runtime.model("lge_unet")
    spec = LGEInputSpec.from_card(model.card.data)
    full = segment_stack(image, spacing, model.run, spec)
    rows, cols = np.nonzero(np.isin(full.labels, [1, 2, 3, 4]).any(axis=0))
    half = [int(85 / s) for s in spacing]
    r0, c0 = int(rows.mean()) - half[0], int(cols.mean()) - half[1]
    window = (slice(None), slice(max(r0, 0), r0 + 2 * half[0]), slice(max(c0, 0), c0 + 2 * half[1]))
    small = np.ascontiguousarray(image[window])
    assert max(spec.crop_shape(small.shape[1:], spacing)) < spec.crop_size  # 96 x 112 model pixels

    def measured(labels):
        result = lge_volumes(labels, volume.voxel_volume_ml)
        return result.lge_percent, result.myocardium_volume_ml

    reference = measured(full.labels[window])
    shrunk = measured(segment_stack(small, spacing, model.run, spec).labels)
    monkeypatch.setattr(LGEInputSpec, "crop_shape", lambda self, shape_rc, spacing_rc: (self.crop_size,) * 2)
    padded = measured(segment_stack(small, spacing, model.run, spec).labels)
    # the 16 000-step weights: %LGE 24.7 whole field, 23.4 shrunk, 28.8 padded; myocardium -6 % shrunk, -9 % padded
    assert abs(shrunk[0] - reference[0]) < 3 and abs(shrunk[1] / reference[1] - 1) < 0.07
    assert abs(padded[0] - reference[0]) > abs(shrunk[0] - reference[0])
    assert abs(padded[1] / reference[1] - 1) > abs(shrunk[1] / reference[1] - 1)


def test_the_card_scar_decision_for_the_input_kind_is_applied_and_recorded(siemens_study, runtime):
    from dicomnode.analysis.lge import LGEDecision

    _, study = siemens_study
    config = Config()
    pipeline = LGEPipeline(config, runtime)
    results = {}
    for name, offsets in (("none", {}), ("other kind", {"native": -3.0}), ("strict", {"windowed_8bit": -3.0})):
        pipeline.decision = LGEDecision(offsets)
        results[name] = pipeline.run(study, context(config, runtime))
    # an EMIDEC-derived study: 8-bit values stored again with a PSIR rescale
    assert results["none"].measurements["scar_decision"] == {"input_kind": "windowed_8bit", "scar_log_offset": 0.0}
    assert results["other kind"].summary["scar_volume_ml"] == results["none"].summary["scar_volume_ml"]
    assert results["strict"].measurements["scar_decision"]["scar_log_offset"] == -3.0
    assert results["strict"].summary["scar_volume_ml"] < 0.8 * results["none"].summary["scar_volume_ml"]
    # scar given up becomes healthy myocardium: the myocardium as a whole hardly moves
    assert results["strict"].summary["myocardium_volume_ml"] == pytest.approx(
        results["none"].summary["myocardium_volume_ml"], rel=0.1)


def test_the_pipeline_finds_the_heart_with_the_cards_localiser_and_falls_back_without_it(
        siemens_study, runtime, tmp_path, monkeypatch, caplog):
    """The shipped card names a one-member localiser: the node locates with it and segments with the ensemble. A
    models folder without it still works (the ensemble locates), with a warning naming the missing model."""
    import shutil

    import dicomnode.analysis.lge as node_lge
    from dicomnode.config import InferenceConfig

    _, study = siemens_study
    config = Config()
    pipeline = LGEPipeline(config, runtime)
    card = runtime.model("lge_unet").card.data
    assert pipeline.localiser == card["localiser"]["model"] == "lge_unet_localiser"
    assert runtime.model("lge_unet_localiser").card.data["torch"]["kwargs"]["members"] == 1
    calls = []
    real = node_lge.segment_stack

    def spy(*args, **kwargs):
        calls.append(kwargs.get("locate_model"))
        return real(*args, **kwargs)

    monkeypatch.setattr(node_lge, "segment_stack", spy)
    located = pipeline.run(study, context(config, runtime))
    assert calls[-1] is not None and calls[-1] == runtime.model("lge_unet_localiser").run
    # the localiser decided the crop: credited beside the ensemble (Contributing Equipment of the SR and the PDF)
    assert located.algorithms == [runtime.model("lge_unet").algorithm, runtime.model("lge_unet_localiser").algorithm]

    bare = tmp_path / "models"
    bare.mkdir()
    for suffix in (".onnx", ".json", ".pt"):
        shutil.copy(runtime.models_dir / f"lge_unet{suffix}", bare / f"lge_unet{suffix}")
    without = Runtime(InferenceConfig(models_dir=bare, backend="onnxruntime"))
    with caplog.at_level("WARNING", logger="dicomnode.analysis.lge"):
        fallback = LGEPipeline(config, without)
    assert fallback.localiser is None and "lge_unet_localiser" in caplog.text
    unlocated = fallback.run(study, context(config, without))
    assert calls[-1] is None and unlocated.algorithms == [without.model("lge_unet").algorithm]
    assert unlocated.summary["lge_percent"] == pytest.approx(located.summary["lge_percent"], abs=1.0)
    assert unlocated.summary["myocardium_volume_ml"] == pytest.approx(located.summary["myocardium_volume_ml"],
                                                                      rel=0.02)



def _pose_dependent_model(x: np.ndarray) -> np.ndarray:
    """Fake model that is not invariant to quarter turns, as a trained 2-D network is not exactly: the brightest
    structure is LV blood pool, the middle one RV blood pool, and LV pixels in the right half of its field scar."""
    top = x.max()
    lv, rv = x > 0.75 * top, (x > 0.25 * top) & (x <= 0.75 * top)
    right = np.zeros(x.shape, bool)
    right[..., x.shape[-1] // 2:] = True
    labels = np.where(lv & right, 3, np.where(lv, 1, np.where(rv, 5, 0)))[:, 0]
    return (np.moveaxis(np.eye(6, dtype=np.float32)[labels], -1, 1) * 5.0).astype(np.float32)


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_segment_stack_gives_the_same_heart_the_same_labels_in_every_quarter_turn(turns):
    """break46c #1: the patient-based orientation hands the network a quarter-turned plane when the patient lies
    a little differently; the anatomical pose (RV beside the LV) makes the result independent of it."""
    spec = LGEInputSpec()
    spacing = (spec.pixel_spacing_mm, spec.pixel_spacing_mm)
    image = np.random.default_rng(1).uniform(0.0, 2.0, (3, 200, 200)).astype(np.float32)
    rr, cc = np.mgrid[:200, :200]
    image[:, np.hypot(rr - 101, cc - 112) < 20] = 100.0  # LV
    image[:, np.hypot(rr - 95, cc - 66) < 18] = 50.0  # RV, to the LV's left and a little anterior
    reference = segment_stack(image, spacing, _pose_dependent_model, spec).labels
    assert (reference == 3).any() and (reference == 5).any()
    turned = segment_stack(np.rot90(image, turns, axes=(1, 2)).copy(), spacing, _pose_dependent_model, spec).labels
    np.testing.assert_array_equal(np.rot90(turned, -turns, axes=(1, 2)), reference)
    # without it the fake network's pose dependence reaches the result (what the node did before)
    plain = segment_stack(np.rot90(image, turns, axes=(1, 2)).copy(), spacing, _pose_dependent_model, spec,
                          anatomical_pose=False).labels
    unturned = segment_stack(image, spacing, _pose_dependent_model, spec, anatomical_pose=False).labels
    assert not np.array_equal(np.rot90(plain, -turns, axes=(1, 2)), unturned)
