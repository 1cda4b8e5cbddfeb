"""Known-answer tests of the LGE quantification functions (volumes, %LGE, flag, rim, n-SD, FWHM)."""
from __future__ import annotations

import numpy as np
import pytest

from dicomnode.analysis.lge_metrics import (
    endocardial_rim,
    epicardial_rim,
    fwhm_enhancement,
    large_burden,
    lge_volumes,
    myocardial_sectors,
    nsd_enhancement,
    remote_myocardium,
    thresholding_mask,
    threshold_applicability,
)
from dicomnode.labels import Label


def ring_labels(slices: int = 3, size: int = 64, inner: float = 10.0, outer: float = 16.0) -> np.ndarray:
    """LV blood pool disc inside a myocardial ring, the same on every slice."""
    rows, cols = np.mgrid[:size, :size]
    radius = np.hypot(rows - size / 2, cols - size / 2)
    plane = np.zeros((size, size), dtype=np.uint8)
    plane[radius < outer] = Label.LV_MYOCARDIUM
    plane[radius < inner] = Label.LV_BLOOD_POOL
    return np.repeat(plane[None], slices, axis=0)


def test_volumes_mass_percent_and_per_slice_known_counts():
    labels = np.zeros((2, 10, 10), dtype=np.uint8)
    labels[0, :4, :5] = Label.LV_MYOCARDIUM  # 20 healthy
    labels[0, 4, :5] = Label.SCAR  # 5 scar
    labels[1, :2, :5] = Label.LV_MYOCARDIUM  # 10 healthy
    labels[1, 2, :5] = Label.MVO  # 5 MVO
    labels[1, 5:, :] = Label.LV_BLOOD_POOL  # not myocardium
    voxel_ml = 0.002  # e.g. 1 x 0.2 x 10 mm
    result = lge_volumes(labels, voxel_ml, density_g_per_ml=1.05)
    assert result.myocardium_volume_ml == pytest.approx(40 * voxel_ml)
    assert result.lv_mass_g == pytest.approx(40 * voxel_ml * 1.05)
    assert result.scar_volume_ml == pytest.approx(10 * voxel_ml)  # scar including MVO
    assert result.mvo_volume_ml == pytest.approx(5 * voxel_ml)
    assert result.lge_percent == pytest.approx(25.0)
    assert result.lge_percent == pytest.approx(100 * result.scar_volume_ml / result.myocardium_volume_ml)
    assert result.large_scar_burden is True
    assert [s.lge_percent for s in result.per_slice] == pytest.approx([20.0, 5 / 15 * 100])
    assert result.per_slice[1].mvo_volume_ml == pytest.approx(5 * voxel_ml)
    assert result.per_slice[1].scar_volume_ml == pytest.approx(5 * voxel_ml)
    assert result.per_slice_dicts()[0]["myocardium_volume_ml"] == pytest.approx(25 * voxel_ml)


def test_empty_slice_has_no_percent_and_no_myocardium_gives_zero():
    labels = np.zeros((2, 4, 4), dtype=np.uint8)
    labels[0, 0, 0] = Label.LV_MYOCARDIUM
    result = lge_volumes(labels, 1.0)
    assert result.per_slice[1].lge_percent is None
    assert result.lge_percent == 0.0
    assert lge_volumes(np.zeros((1, 3, 3), dtype=np.uint8), 1.0).lge_percent == 0.0


def test_density_changes_mass_only():
    labels = ring_labels()
    light = lge_volumes(labels, 0.01, density_g_per_ml=1.0)
    heavy = lge_volumes(labels, 0.01, density_g_per_ml=1.1)
    assert heavy.lv_mass_g == pytest.approx(light.lv_mass_g * 1.1)
    assert heavy.myocardium_volume_ml == light.myocardium_volume_ml


@pytest.mark.parametrize(
    "percent, cutoff, comparator, expected",
    [(15.0, 15.0, ">=", True), (15.0, 15.0, ">", False), (15.01, 15.0, ">", True), (14.99, 15.0, ">=", False),
     (20.0, 25.0, ">=", False)],
)
def test_large_burden_cutoff_and_comparator(percent, cutoff, comparator, expected):
    assert large_burden(percent, cutoff, comparator) is expected


def test_flag_uses_configured_cutoff_in_volumes():
    labels = np.full((1, 1, 20), Label.LV_MYOCARDIUM, dtype=np.uint8)
    labels[0, 0, :3] = Label.SCAR  # exactly 15 %
    assert lge_volumes(labels, 1.0, cutoff_percent=15.0, comparator=">=").large_scar_burden is True
    assert lge_volumes(labels, 1.0, cutoff_percent=15.0, comparator=">").large_scar_burden is False


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: lge_volumes(np.zeros((4, 4), dtype=np.uint8), 1.0), "slices, rows, cols"),
        (lambda: lge_volumes(np.zeros((1, 4, 4), dtype=np.float32), 1.0), "integer"),
        (lambda: lge_volumes(np.zeros((1, 4, 4), dtype=np.uint8), 0.0), "voxel_volume_ml"),
        (lambda: lge_volumes(np.zeros((1, 4, 4), dtype=np.uint8), 1.0, density_g_per_ml=-1), "density"),
        (lambda: large_burden(10.0, 15.0, "=="), "comparator"),
        (lambda: nsd_enhancement(np.zeros((3, 64, 64)), ring_labels(), 4, 1.0), "n must be one of"),
        (lambda: fwhm_enhancement(np.zeros((2, 64, 64)), ring_labels(), 1.0), "differs"),
    ],
)
def test_invalid_input_is_refused_with_a_named_reason(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_endocardial_rim_is_the_myocardium_touching_blood_pool():
    labels = np.zeros((1, 7, 7), dtype=np.uint8)
    labels[0, 1:6, 1:6] = Label.LV_MYOCARDIUM
    labels[0, 3, 3] = Label.LV_BLOOD_POOL
    rim = endocardial_rim(labels)
    expected = np.zeros_like(rim)
    expected[0, 2, 3] = expected[0, 4, 3] = expected[0, 3, 2] = expected[0, 3, 4] = True
    np.testing.assert_array_equal(rim, expected)


def test_sectors_split_the_ring_evenly():
    labels = ring_labels(slices=1, size=65)
    sectors = myocardial_sectors(labels, sectors=4)
    counts = [int((sectors == s).sum()) for s in range(4)]
    assert min(counts) > 0 and max(counts) - min(counts) <= 0.1 * max(counts)
    assert (sectors[labels != Label.LV_MYOCARDIUM] == -1).all()


def enhanced_phantom(seed: int = 0):
    """Ring myocardium: remote signal 100 +- 5 (Gaussian); a bright 'scar' quarter at 300 on the +col side, labelled
    scar as a segmentation would; bright blood pool next to the endocardium."""
    rng = np.random.default_rng(seed)
    labels = ring_labels(slices=3, size=64)
    rows, cols = np.mgrid[:64, :64]
    angle = np.degrees(np.arctan2(rows - 32, cols - 32))
    scar_region = np.broadcast_to((np.abs(angle) < 45)[None], labels.shape) & (labels == Label.LV_MYOCARDIUM)
    image = rng.normal(100.0, 5.0, size=labels.shape)
    blood_pool = labels == Label.LV_BLOOD_POOL
    image[blood_pool] = rng.normal(400.0, 10.0, size=int(blood_pool.sum()))
    image[scar_region] = 300.0
    labels = labels.copy()
    labels[scar_region] = Label.SCAR
    return image, labels, scar_region


def test_rims_are_excluded_from_thresholding():
    labels = ring_labels(slices=1)
    usable = thresholding_mask(labels)
    assert not (usable & endocardial_rim(labels)).any() and not (usable & epicardial_rim(labels)).any()
    assert epicardial_rim(labels).any() and usable.any()


def test_remote_myocardium_is_far_from_the_labelled_scar():
    image, labels, scar_region = enhanced_phantom()
    remote = remote_myocardium(image, labels, spacing_rc=(1.0, 1.0), min_distance_mm=10.0)
    assert not (remote.mask & scar_region).any()
    rows, cols = np.nonzero(remote.mask[0])
    from scipy import ndimage
    distance = ndimage.distance_transform_edt(~scar_region[0])
    assert distance[rows, cols].min() >= 10.0
    assert remote.mean == pytest.approx(100.0, abs=2.0)
    assert remote.sd == pytest.approx(5.0, rel=0.25)
    # a wider exclusion leaves less remote myocardium; an impossible one is refused with the reason
    assert remote_myocardium(image, labels, min_distance_mm=20.0).voxels < remote.voxels
    with pytest.raises(ValueError, match="no remote myocardium"):
        remote_myocardium(image, labels, min_distance_mm=100.0)


@pytest.mark.parametrize("n", [2, 3, 5, 6])
def test_nsd_threshold_and_enhanced_region(n):
    image, labels, scar_region = enhanced_phantom()
    result = nsd_enhancement(image, labels, n, voxel_volume_ml=0.02)
    remote = remote_myocardium(image, labels)
    assert result.threshold == pytest.approx(remote.mean + n * remote.sd)
    usable_scar = scar_region & thresholding_mask(labels)
    # every rim-free scar voxel (300) is above threshold; the rims are never counted despite bright neighbours
    assert (result.enhanced_mask & usable_scar).sum() == usable_scar.sum()
    assert not (result.enhanced_mask & endocardial_rim(labels)).any()
    assert not (result.enhanced_mask & ~scar_region).any()  # isolated noise pixels (< 10 mm²) are dropped
    myo = int(np.isin(labels, [2, 3, 4]).sum())
    assert result.lge_percent == pytest.approx(100 * result.enhanced_voxels / myo)
    assert result.enhanced_volume_ml == pytest.approx(result.enhanced_voxels * 0.02)
    assert result.summary()["n"] == n


def test_fwhm_threshold_is_half_the_enhanced_maximum_and_region_overlaps_it():
    image, labels, scar_region = enhanced_phantom()
    image = image.copy()
    image[1, 32, 45] = 320.0  # maximum of the labelled enhanced region, away from the rims
    far_bright = (slice(None), slice(30, 35), slice(19, 23))  # bright healthy patch opposite: not overlapping
    image[far_bright] = 250.0
    result = fwhm_enhancement(image, labels, voxel_volume_ml=1.0)
    assert result.threshold == pytest.approx(160.0)
    assert result.details["maximum_voxel"] == [1, 32, 45]
    np.testing.assert_array_equal(result.enhanced_mask, scar_region & thresholding_mask(labels))
    assert not result.enhanced_mask[far_bright].any()


def test_fwhm_without_an_enhanced_region_is_zero_with_a_note():
    image, labels, _ = enhanced_phantom()
    healthy = np.where(np.isin(labels, [3, 4]), Label.LV_MYOCARDIUM, labels).astype(np.uint8)
    result = fwhm_enhancement(image, healthy, voxel_volume_ml=1.0)
    assert result.lge_percent == 0.0 and "no enhanced region" in result.details["note"]


@pytest.mark.parametrize(
    "transform, bits, kind, nsd_reason, fwhm_reason",
    [
        (lambda im: im * 8, 12, "magnitude", None, None),
        (lambda im: np.round(np.clip(im / 2, 0, 255)), 8, "magnitude", "8-bit", "8-bit"),
        (lambda im: np.round(np.clip(im / 2, 0, 255)), 16, "magnitude", "8-bit value range", "8-bit value range"),
        (lambda im: np.minimum(im * 8, 3000.0), 12, "magnitude", "windowed", "windowed"),
        (lambda im: im * 8 - 2000, 12, "psir", None, "PSIR"),
        # an offset in the stored values of a magnitude stack (break44b): n-SD is invariant to it, FWHM is not
        (lambda im: im * 8 + 1500, 12, "magnitude", None, "offset in the stored values"),
    ],
)
def test_threshold_methods_are_declared_not_applicable_where_unsound(transform, bits, kind, nsd_reason, fwhm_reason):
    image, labels, _ = enhanced_phantom()
    assert not labels[:, :4].any()
    image[:, :4] = 0.0  # air above the heart: a magnitude image's darkest values are about 0
    reasons = threshold_applicability(transform(image), labels, bits, kind)
    for method, expected in (("nsd", nsd_reason), ("fwhm", fwhm_reason)):
        if expected is None:
            assert reasons[method] is None
        else:
            assert expected in reasons[method]


def _six_slice_phantom():
    """Two phantoms stacked: 6 x 64 x 64 pixels, enough for the distinct-values test (EIGHT_BIT_MIN_PIXELS)."""
    first, labels_a, _ = enhanced_phantom(seed=0)
    second, labels_b, _ = enhanced_phantom(seed=1)
    return np.concatenate([first, second]), np.concatenate([labels_a, labels_b])


def test_a_saturating_narrow_window_on_12_bit_data_is_named_as_saturation():
    """Finding (break2 #7): a 12-bit export with a narrow window burnt in (190 levels spread over 0-4095, blood pool
    and scar at 4095) was declared "8-bit data rescaled"; the fault is the saturation, and it is named."""
    image, labels = _six_slice_phantom()
    windowed = np.round(np.clip((image - 60.0) / 190.0, 0.0, 1.0) * 189.0) * 4095.0 / 189.0
    windowed = np.round(windowed)
    assert np.unique(windowed).size <= 190 and windowed.size >= 16384
    reasons = threshold_applicability(windowed, labels, 12, "magnitude")
    for method in ("nsd", "fwhm"):
        assert "windowed input" in reasons[method] and "maximum stored value" in reasons[method]
        assert "8-bit" not in reasons[method]


def test_few_distinct_values_without_saturation_is_named_as_quantised():
    """The same narrow-window quantisation without clipping the LV: the reason names what its test found (few
    distinct values), not an 8-bit export."""
    image, labels = _six_slice_phantom()
    quantised = np.round(np.clip(image, 0.0, 600.0) / 600.0 * 199.0) * 4000.0 / 199.0 + 7.0
    assert np.unique(quantised).size <= 200
    reasons = threshold_applicability(quantised, labels, 12, "magnitude")
    assert "distinct values" in reasons["nsd"] and "quantised" in reasons["nsd"]
    assert "8-bit data rescaled" not in reasons["nsd"]
