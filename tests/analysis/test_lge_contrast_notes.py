"""An LGE whose healthy myocardium is not darker than its blood pool says so (break-emf finding 2: a post-contrast T1
map analysed as LGE reported 'LGE 0 %'; a map in ms has myocardium ~450 against blood ~300)."""
from __future__ import annotations

import numpy as np

from dicomnode.analysis.lge import contrast_notes
from dicomnode.labels import Label


def _stack(myocardium: float, blood: float, size: int = 10) -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros((2, 40, 40), dtype=np.uint8)
    labels[:, 10:30, 10:30] = Label.LV_MYOCARDIUM
    labels[:, 15:25, 15:25] = Label.LV_BLOOD_POOL
    image = np.where(labels == Label.LV_MYOCARDIUM, myocardium, 0.0)
    image = np.where(labels == Label.LV_BLOOD_POOL, blood, image).astype(np.float32)
    return image, labels


def test_a_post_contrast_t1_map_in_ms_is_warned():
    (warning,) = contrast_notes(*_stack(450.0, 300.0))
    assert "not clearly darker than the LV blood pool" in warning and "450 against 300" in warning


def test_a_ring_without_blood_myocardium_contrast_is_warned():
    image, labels = _stack(295.0, 300.0)
    image[:, :5, :5] = 1600.0  # a map's range: the segmented ring and pool differ by under 1 % of it
    (warning,) = contrast_notes(image, labels)
    assert "295 against 300" in warning


def test_lge_contrast_magnitude_and_psir_are_not_warned():
    assert contrast_notes(*_stack(80.0, 900.0)) == []  # magnitude: nulled myocardium, bright blood
    assert contrast_notes(*_stack(-150.0, 600.0)) == []  # PSIR: signed, myocardium below zero


def test_too_few_voxels_say_nothing():
    image, labels = _stack(450.0, 300.0)
    labels[labels == Label.LV_BLOOD_POOL] = Label.BACKGROUND
    assert contrast_notes(image, labels) == []
