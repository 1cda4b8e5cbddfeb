"""Known-answer tests of the LGE quantification functions (volumes, %LGE, flag, rim, n-SD, FWHM)."""
from __future__ import annotations

import numpy as np
import pytest

from dicomnode.analysis.lge_metrics import (
    endocardial_rim,
    fwhm_enhancement,
    large_burden,
    lge_volumes,
    myocardial_sectors,
    nsd_enhancement,
    remote_myocardium,
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
    assert result.scar_volume_ml == pytest.approx(5 * voxel_ml)
    assert result.mvo_volume_ml == pytest.approx(5 * voxel_ml)
    assert result.lge_percent == pytest.approx(25.0)
    assert result.large_scar_burden is True
    assert [s.lge_percent for s in result.per_slice] == pytest.approx([20.0, 5 / 15 * 100])
    assert result.per_slice[1].mvo_volume_ml == pytest.approx(5 * voxel_ml)
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
    """Ring myocardium: remote signal 100 +- 5 (Gaussian), a bright 'scar' quarter at 300 on the +col side."""
    rng = np.random.default_rng(seed)
    labels = ring_labels(slices=3, size=64)
    rows, cols = np.mgrid[:64, :64]
    angle = np.degrees(np.arctan2(rows - 32, cols - 32))
    scar_region = np.broadcast_to((np.abs(angle) < 45)[None], labels.shape) & (labels == Label.LV_MYOCARDIUM)
    image = rng.normal(100.0, 5.0, size=labels.shape)
    image[labels == Label.LV_BLOOD_POOL] = 400.0  # bright blood pool next to the rim
    image[scar_region] = 300.0
    return image, labels, scar_region


def test_remote_myocardium_avoids_the_enhanced_sector():
    image, labels, scar_region = enhanced_phantom()
    remote = remote_myocardium(image, labels)
    assert not (remote.mask & scar_region).any()
    assert remote.mean == pytest.approx(100.0, abs=2.0)
    assert remote.sd == pytest.approx(5.0, rel=0.25)
    assert remote.voxels > 50 and remote.sectors >= 3


@pytest.mark.parametrize("n", [2, 3, 5, 6])
def test_nsd_threshold_and_enhanced_region(n):
    image, labels, scar_region = enhanced_phantom()
    result = nsd_enhancement(image, labels, n, voxel_volume_ml=0.02)
    remote = remote_myocardium(image, labels)
    assert result.threshold == pytest.approx(remote.mean + n * remote.sd)
    rim = endocardial_rim(labels)
    scar_without_rim = scar_region & ~rim
    # every scar voxel (300) is above threshold; the rim is never counted despite its bright neighbours
    assert (result.enhanced_mask & scar_without_rim).sum() == scar_without_rim.sum()
    assert not (result.enhanced_mask & rim).any()
    false_positives = int((result.enhanced_mask & ~scar_region).sum())
    if n >= 5:
        assert false_positives == 0  # 5 SD above a Gaussian remote: essentially none
    myo = int(np.isin(labels, [2, 3, 4]).sum())
    assert result.lge_percent == pytest.approx(100 * result.enhanced_voxels / myo)
    assert result.enhanced_volume_ml == pytest.approx(result.enhanced_voxels * 0.02)
    assert result.summary()["n"] == n


def test_fwhm_threshold_is_half_the_maximum_and_region_is_connected():
    image, labels, scar_region = enhanced_phantom()
    image = image.copy()
    image[1, 32, 47] = 320.0  # maximum, inside the scar sector, away from the rim
    far_bright = (1, 32, 32 - 14)  # isolated bright myocardium pixel opposite the scar: not connected
    image[far_bright] = 250.0
    result = fwhm_enhancement(image, labels, voxel_volume_ml=1.0)
    assert result.threshold == pytest.approx(160.0)
    assert result.details["maximum_voxel"] == [1, 32, 47]
    scar_without_rim = scar_region & ~endocardial_rim(labels)
    np.testing.assert_array_equal(result.enhanced_mask, scar_without_rim)
    assert not result.enhanced_mask[far_bright]


def test_fwhm_baseline_for_psir_offsets():
    image, labels, scar_region = enhanced_phantom()
    shifted = image * 2.0 - 500.0  # PSIR-like arbitrary zero: classic max/2 would be meaningless
    remote = remote_myocardium(shifted, labels)
    result = fwhm_enhancement(shifted, labels, 1.0, baseline=remote.mean)
    maximum = result.details["maximum"]
    assert result.threshold == pytest.approx(remote.mean + (maximum - remote.mean) / 2)
    np.testing.assert_array_equal(result.enhanced_mask, scar_region & ~endocardial_rim(labels))
    with pytest.raises(ValueError, match="baseline"):
        fwhm_enhancement(shifted, labels, 1.0, baseline=maximum + 1)
