"""RV EDV / ESV read at the RV's own largest / smallest volume within one phase of the LV's ED / ES (break47a #2: the
same cine at 512² moved RV EDV by 13-18 mL, as the RV at the LV's ED phase sat on a dip of the RV curve)."""
import numpy as np
import pytest

from dicomnode.analysis.cine_metrics import (RV_PHASE_START, RV_TIMING_METHOD, measure_cine, rv_cardiac_phases,
                                             rv_phase_notes)
from test_cine_metrics import cine_curve, synthetic_cine

TRIGGERS = [40.0 * p for p in range(12)]


def _cine(rv_dip_at=None, dip_voxels=0):
    """12 phases: LV ED at phase 0 (index), ES at 5; RV the same shape, largest (160) at index 11 and 0."""
    lv = np.rint(cine_curve(12, 150.0, 60.0, es_phase=5)).astype(int)
    rv = np.rint(cine_curve(12, 160.0, 80.0, es_phase=5)).astype(int)
    rv[11] = 160  # the RV's late-diastolic phase as large as at the R wave
    if rv_dip_at is not None:
        rv[rv_dip_at] = dip_voxels
    return synthetic_cine(lv, rv, shape=(2, 40, 40))


def test_a_dip_of_the_rv_at_the_lvs_ed_phase_does_not_decide_rv_edv():
    clean = measure_cine(_cine(), 1.0, trigger_times=TRIGGERS)
    dipped = measure_cine(_cine(rv_dip_at=0, dip_voxels=120), 1.0, trigger_times=TRIGGERS)  # 40 mL lost at ED only
    assert (clean.ed_phase, clean.es_phase) == (dipped.ed_phase, dipped.es_phase) == (0, 5)
    # the LV is read as before
    assert (dipped.lv_edv_ml, dipped.lv_esv_ml, dipped.lv_ef_percent) == (clean.lv_edv_ml, clean.lv_esv_ml,
                                                                           clean.lv_ef_percent)
    assert clean.rv_edv_ml == dipped.rv_edv_ml == 160.0 and clean.rv_ef_percent == dipped.rv_ef_percent == 50.0
    assert clean.timing.summary()["rv_ed_phase"] == 0 and dipped.timing.summary()["rv_ed_phase"] == 11
    assert dipped.timing.summary()["rv_es_phase"] == 5
    [note] = [flag for flag in dipped.flags if flag.startswith(RV_PHASE_START)]
    assert "end-diastolic phase 1 (120.0 mL) differs by 40.0 mL from RV EDV 160.0 mL" in note and "phase 12" in note
    assert not any(flag.startswith(RV_PHASE_START) for flag in clean.flags)


def test_rv_phases_are_the_rvs_extremes_next_to_the_lvs_on_the_cycle():
    rv = cine_curve(12, 150.0, 60.0, es_phase=5)
    assert rv_cardiac_phases(rv, 0, 5) == (0, 5)  # the LV's phases where the RV peaks there too
    rv[0], rv[4] = 100.0, 59.0
    assert rv_cardiac_phases(rv, 0, 5) == (11, 4)  # wraps round the cycle: index 11 is next to 0
    rv[11] = rv[1] = 100.0
    assert rv_cardiac_phases(rv, 0, 5) == (0, 4)  # a tie keeps the LV's phase
    rv[2] = 500.0
    assert rv_cardiac_phases(rv, 0, 5)[0] == 0  # two phases away is not looked at
    # a cycle cut short: the last phase sent is not next to the first
    assert rv_cardiac_phases(cine_curve(12, 150.0, 60.0, es_phase=5)[[0, 1, 2, 3, 4, 5, 6, 7]] * [1, 1, 1, 1, 1, 1, 1, 9],
                             0, 5, phase_numbers=[1, 2, 3, 4, 5, 6, 7, 8], cycle_phases=12) == (0, 5)
    # an ED + ES export has no cycle
    assert rv_cardiac_phases([50.0, 100.0], 0, 1) == (0, 1)
    with pytest.raises(ValueError, match="outside"):
        rv_cardiac_phases(rv, 12, 5)


def test_derived_phases_are_not_read_as_the_rvs_ed():
    rv = np.repeat(cine_curve(8, 150.0, 60.0, es_phase=3), 2)  # each phase sent twice (16, 8 distinct)
    rv[15] = 400.0  # the copy after the last distinct phase: not an acquisition of its own
    rv[14] = 151.0  # the last distinct phase, next to ED on the distinct cycle
    distinct = list(range(0, 16, 2))
    assert rv_cardiac_phases(rv, 0, 6, distinct_phases=distinct) == (14, 6)


def test_rv_phase_notes_only_where_the_difference_exceeds_the_jump_step():
    curve = [100.0, 80.0, 60.0, 50.0, 60.0, 97.5]
    assert rv_phase_notes(curve, 0, 3, 5, 3) == []  # 2.5 mL: within max(3 mL, 5 %)
    [note] = rv_phase_notes([100.0, 80.0, 60.0, 50.0, 60.0, 90.0], 5, 3, 0, 3)
    assert note.startswith(RV_PHASE_START + "end-diastolic phase 6 (90.0 mL) differs by 10.0 mL from RV EDV 100.0")


def test_the_methods_text_says_how_the_rv_is_read():
    assert "RV's largest / smallest volume within 1 phase of the LV's ED / ES" in RV_TIMING_METHOD


def test_a_refining_model_also_segments_the_phases_the_rv_is_read_at():
    """The RV's ED may be a neighbour of the LV's: a refining model (segment_and_measure's `refine`) segments it too,
    so RV EDV does not mix the refined ED with the all-phase model's neighbour."""
    from types import SimpleNamespace

    from dicomnode.analysis.cine import CineModelSpec, segment_and_measure
    from dicomnode.analysis.cine_metrics import CardiacPhases
    from test_cine_pipeline import threshold_model

    spec = CineModelSpec()
    pixels = np.full((6, 2, 96, 96), 1.0, np.float32)
    rr, cc = np.mgrid[:96, :96]
    pixels[..., np.hypot(rr - 48, cc - 48) < 12] = 100.0
    timing = CardiacPhases(0, 2, 0, [0.0] * 6, [0.0] * 6, [0.0] * 6, rv_ed=5, rv_es=2)
    seen = []

    def measure(maps, timing=timing, given=None):
        seen.append(given)
        return SimpleNamespace(lv_edv_ml=1.0, ed_phase=0, es_phase=2, timing=timing, summary=lambda: {})

    refined_inputs = []

    def refine_run(inputs):
        refined_inputs.append(inputs.shape[0])
        return threshold_model(inputs)

    def measure_kw(maps, timing=None):  # segment_and_measure's signature
        return measure(maps, given=timing)

    _, _, refinement = segment_and_measure(pixels, (spec.target_spacing,) * 2, threshold_model, spec, measure_kw,
                                           refine=(refine_run, spec), anatomical_pose=False)
    assert refinement["phases"] == [0, 2, 5] and refined_inputs == [6]  # 3 phases x 2 slices
    assert seen[-1] is timing  # measured again at the same LV and RV phases


def _lv_rv_model(inputs: np.ndarray) -> np.ndarray:
    """Stand-in for the network: the brightest pixels (over 3/4 of the way from the median to the maximum) -> LV blood
    pool with a 3-pixel wall, those halfway (0.3-0.7 of the way) away from that wall -> RV blood pool."""
    from scipy import ndimage

    crops = inputs[:, 0]
    low, high = np.median(crops, axis=(1, 2), keepdims=True), crops.max(axis=(1, 2), keepdims=True)
    level = (crops - low) / np.maximum(high - low, 1e-6)
    pool = level > 0.75
    wall = ndimage.binary_dilation(pool, np.ones((1, 7, 7), bool)) & ~pool
    rv = (level > 0.3) & (level < 0.7) & ~ndimage.binary_dilation(pool | wall, np.ones((1, 5, 5), bool))
    logits = np.zeros((inputs.shape[0], 4) + inputs.shape[2:], np.float32)
    logits[:, 1] = np.where(pool, 10.0, -10.0)
    logits[:, 2] = np.where(wall, 5.0, -5.0)
    logits[:, 3] = np.where(rv, 8.0, -8.0)
    return logits


def _cycle(phase: int, smallest: int) -> float:
    """0 at the R wave (phase index 0), 1 at `smallest`, back to 0 at the end of a 12-phase cycle."""
    return phase / smallest if phase <= smallest else (12 - phase) / (12 - smallest)


def test_the_cine_segmentation_carries_the_rvs_own_es_phase_with_the_rv_alone():
    """f49b: a whole cine whose RV is smallest one phase after the LV's ES: the pipeline's segmentation (hence the SEGs
    and display copies) carries that phase too, holding the RV it read RV ESV on, and summary.json's slices name
    that phase's images under "rv_es"; RV ED, read at the LV's ED, adds nothing."""
    from test_cine_pipeline import FakeModel, FakeRuntime, FakeStudy, FakeVolume, context, disc

    from dicomnode.analysis.cine import PHASE_NAMES, RV_PHASE_NAMES, CinePipeline
    from dicomnode.config import Config
    from dicomnode.labels import Label

    shape, spacing = (160, 160), (1.5, 1.5)
    pixels = np.full((12, 3, *shape), 100.0, np.float32)
    for phase in range(12):
        # squared radii (mm²) of cosine cycles: the LV smallest at phase index 4, the RV at 5
        lv = 20.0 ** 2 + (34.0 ** 2 - 20.0 ** 2) * (1 + np.cos(np.pi * _cycle(phase, 4))) / 2
        rv = 14.0 ** 2 + (22.0 ** 2 - 14.0 ** 2) * (1 + np.cos(np.pi * _cycle(phase, 5))) / 2
        pixels[phase, :, disc(shape, (79.5, 79.5), np.sqrt(lv), spacing)] = 400.0
        pixels[phase, :, disc(shape, (79.5, 36.0), np.sqrt(rv), spacing)] = 250.0

    class Model(FakeModel):
        def run(self, inputs):
            self.calls += 1
            return _lv_rv_model(inputs)

    runtime = FakeRuntime()
    runtime.loaded = Model()
    volume = FakeVolume(pixels, spacing, 8.0, trigger_times=[40.0 * p for p in range(12)])
    result = CinePipeline(Config(), runtime).run(FakeStudy(volume), context(runtime))
    summary, (segmentation,) = result.summary, result.segmentations
    assert (summary["ed_phase"], summary["es_phase"]) == (0, 4)
    assert (summary["timing"]["rv_ed_phase"], summary["timing"]["rv_es_phase"]) == (0, 5)
    assert segmentation.phases == [0, 4, 5] and segmentation.phase_names == PHASE_NAMES + [RV_PHASE_NAMES[1]]
    labels = np.asarray(segmentation.labelmap)
    assert set(np.unique(labels[2]).tolist()) == {int(Label.BACKGROUND), int(Label.RV_BLOOD_POOL)}
    assert {int(Label.LV_BLOOD_POOL), int(Label.RV_BLOOD_POOL)} <= set(np.unique(labels[1]).tolist())
    rv_ml = (labels[2] == Label.RV_BLOOD_POOL).sum() * volume.voxel_volume_ml
    assert rv_ml == pytest.approx(summary["rv_esv_ml"], abs=0.01) and rv_ml > 0
    assert (labels[1] == Label.RV_BLOOD_POOL).sum() * volume.voxel_volume_ml > summary["rv_esv_ml"]
    assert all("rv_es" in entry and "rv_ed" not in entry for entry in summary["slices"])
