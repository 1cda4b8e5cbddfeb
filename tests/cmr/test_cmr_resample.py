"""InplaneResampler: forward to a model grid and the exact inverse back to the source grid."""
from __future__ import annotations

import numpy as np
import pytest

from dicomnode.cmr import InplaneResampler


def _disc(shape, centre, radius) -> np.ndarray:
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    return ((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius ** 2).astype(np.uint8)


@pytest.mark.parametrize("out_size", [(256, 256), (300, 280), (255, 257)])
def test_same_spacing_larger_grid_is_exact_identity(out_size):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, (3, 216, 256)).astype(np.uint8)
    resampler = InplaneResampler((216, 256), (1.5625, 1.5625), 1.5625, out_size)
    forward = resampler.forward(labels, order=0)
    assert forward.shape == (3,) + out_size
    assert np.array_equal(resampler.inverse_labels(forward), labels)


def test_same_spacing_crop_is_identity_inside_the_crop():
    labels = np.random.default_rng(1).integers(0, 6, (256, 256)).astype(np.uint8)
    resampler = InplaneResampler((256, 256), (1.3, 1.3), 1.3, 128, centre_rc=(100.2, 140.7))
    back = resampler.inverse_labels(resampler.forward(labels, order=0))
    r0, c0 = int(resampler.offset[0]), int(resampler.offset[1])
    inside = np.zeros_like(labels, bool)
    inside[r0:r0 + 128, c0:c0 + 128] = True
    assert np.array_equal(back[inside], labels[inside])
    assert not back[~inside].any()


@pytest.mark.parametrize("spacing,target", [((1.367, 1.367), 1.0), ((1.786, 1.786), 1.25), ((1.0, 1.2), 1.5)])
def test_other_spacings_restore_shape_and_labels(spacing, target):
    shape = (224, 154)
    labels = _disc(shape, (110, 80), 30) + _disc(shape, (110, 80), 15)
    resampler = InplaneResampler(shape, spacing, target, (192, 192))
    model = resampler.forward(labels.astype(np.float32))
    assert model.shape == (192, 192)
    back = resampler.inverse_labels(np.rint(model).astype(np.uint8))
    assert back.shape == shape and back.dtype == np.uint8
    for value in (1, 2):
        a, b = labels == value, back == value
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.93
    probabilities = np.stack([model == v for v in (0, 1, 2)]).astype(np.float32)
    back_probabilities = resampler.inverse_probabilities(probabilities)
    assert back_probabilities.shape == (3,) + shape
    assert np.mean(np.argmax(back_probabilities, axis=0) == labels) > 0.98


def test_contract_errors():
    with pytest.raises(ValueError, match="spacing_rc must be"):
        InplaneResampler((10, 10), (0, 1), 1, 8)
    resampler = InplaneResampler((10, 10), 1, 1, 8)
    with pytest.raises(ValueError, match=r"forward expects \(\.\.\., 10, 10\)"):
        resampler.forward(np.zeros((9, 10)))
    with pytest.raises(ValueError, match=r"inverse expects \(\.\.\., 8, 8\)"):
        resampler.inverse_labels(np.zeros((10, 10)))


@pytest.mark.parametrize("seed", range(4))
def test_inverse_equals_interpolating_the_whole_source_grid(seed):
    """The inverse interpolates only the box the model grid can reach; it must equal the full-grid transform."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    for _ in range(40):
        shape = (int(rng.integers(20, 200)), int(rng.integers(20, 200)))
        spacing = (float(rng.uniform(0.5, 2)), float(rng.uniform(0.5, 2)))
        out = (int(rng.integers(8, 48)),) * 2
        centre = (float(rng.uniform(-30, shape[0] + 30)), float(rng.uniform(-30, shape[1] + 30)))
        resampler = InplaneResampler(shape, spacing, float(rng.uniform(0.5, 2.5)), out, centre_rc=centre)
        probabilities = rng.random((3,) + out).astype(np.float32)
        labels = rng.integers(0, 5, out).astype(np.uint8)
        matrix = tuple(1.0 / s for s in resampler.scale)
        offset = tuple(-o / s for o, s in zip(resampler.offset, resampler.scale))
        for data, order, inverse in ((probabilities, 1, resampler.inverse_probabilities),
                                     (labels, 0, resampler.inverse_labels)):
            expected = np.stack([ndimage.affine_transform(image.astype(np.float32 if order else image.dtype), matrix,
                                                          offset=offset, output_shape=shape, order=order,
                                                          mode="constant", cval=0, prefilter=False)
                                 for image in data.reshape((-1,) + out)]).reshape(data.shape[:-2] + shape)
            np.testing.assert_allclose(inverse(data), expected, atol=1e-6)


def test_an_image_of_finer_pixels_gives_the_model_the_image_of_coarse_pixels_it_was_upsampled_from():
    """break43b #3: the same cine upsampled 4x (1024², PixelSpacing / 4) gave EF 29.9 % for 23.7 %: sampled to the
    1.5 mm grid by linear interpolation alone, one pixel in four was read and the rest dropped. Smoothed first
    (anti_alias_sigma), the model grid holds about what the original 1.37 mm image gives."""
    rng = np.random.default_rng(3)
    coarse = rng.normal(100.0, 30.0, (64, 64)).astype(np.float32)  # noise: the worst case for aliasing
    fine = np.kron(coarse, np.ones((4, 4), np.float32))
    centre = (31.5, 31.5)
    reference = InplaneResampler((64, 64), 1.37, 1.5, (48, 48), centre_rc=centre).forward(coarse)
    upsampled = InplaneResampler((256, 256), 1.37 / 4, 1.5, (48, 48), centre_rc=tuple(4 * c + 1.5 for c in centre))
    assert upsampled.anti_alias_sigma()[0] == pytest.approx((1.5 / (1.37 / 4) - 1) / 2)
    smoothed = upsampled.forward(fine)
    unsmoothed = upsampled._apply(fine, upsampled.scale, upsampled.offset, upsampled.out_size, 1, 0.0)
    inner = (slice(4, -4), slice(4, -4))
    error = np.abs(smoothed - reference)[inner].mean()
    assert error < 0.6 * np.abs(unsmoothed - reference)[inner].mean()
    # the usual CMR spacings (1.2-1.8 mm to 1.5 mm) and MyoPS's 0.73 mm LGE are sampled as they are, as the models
    # were trained and validated
    usual = InplaneResampler((64, 64), 1.37, 1.5, (48, 48), centre_rc=centre)
    assert usual.anti_alias_sigma() == (0.0, 0.0)
    assert InplaneResampler((64, 64), 0.73, 1.5, (48, 48)).anti_alias_sigma() == (0.0, 0.0)
    np.testing.assert_array_equal(usual.forward(coarse), usual._apply(coarse, usual.scale, usual.offset,
                                                                       usual.out_size, 1, 0.0))


def test_the_anti_alias_sigma_ramps_up_continuously_from_2_5_times():
    """Review 43 #12: smoothing switched on at a scale of 2.5 with sigma 0.75 px, so 0.61 and 0.59 mm LGE (common
    Philips reconstructions) reached the model unsmoothed and smoothed. None up to 2.5x (validated inputs unchanged),
    then a sigma that grows without a step to (scale - 1) / 2 at 3.5x."""
    def sigma(spacing_mm: float) -> float:
        return InplaneResampler((64, 64), spacing_mm, 1.5, (48, 48)).anti_alias_sigma()[0]

    assert sigma(0.73) == 0.0 and sigma(0.6) == 0.0 and sigma(1.5 / 2.5) == 0.0
    assert 0.0 < sigma(0.59) < 0.05  # 2.54x: barely smoothed
    assert sigma(1.5 / 3.5) == pytest.approx(1.25) and sigma(0.3) == pytest.approx(2.0)
    scales = np.linspace(2.0, 5.0, 3001)
    sigmas = np.array([sigma(1.5 / scale) for scale in scales])
    assert np.all(np.diff(sigmas) >= -1e-12) and np.max(np.diff(sigmas)) < 0.01  # monotone, no step
    rng = np.random.default_rng(5)
    image = rng.normal(100.0, 30.0, (64, 64)).astype(np.float32)
    just_over = InplaneResampler((64, 64), 0.599, 1.5, (24, 24))  # 2.504x
    unsmoothed = just_over._apply(image, just_over.scale, just_over.offset, just_over.out_size, 1, 0.0)
    assert np.abs(just_over.forward(image) - unsmoothed).max() < 1.0  # noise of SD 30: the smoothing is negligible
