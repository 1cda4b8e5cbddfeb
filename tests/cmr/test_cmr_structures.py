"""Largest-connected-component post-processing of the LV and the RV (dicomnode.cmr.structures)."""
from __future__ import annotations

import numpy as np
import pytest

from dicomnode.cmr.structures import keep_largest_structures
from dicomnode.labels import Label


def _heart(slices: int = 4) -> np.ndarray:
    labels = np.zeros((slices, 64, 64), np.uint8)
    labels[:, 20:40, 20:40] = Label.LV_MYOCARDIUM
    labels[:, 25:35, 25:35] = Label.LV_BLOOD_POOL
    labels[:, 22:26, 30:36] = Label.SCAR
    labels[:, 20:40, 8:19] = Label.RV_BLOOD_POOL
    return labels


def test_stray_islands_of_either_ventricle_become_background():
    labels = _heart()
    labels[1, 50:54, 50:54] = Label.LV_MYOCARDIUM  # a ring far from the heart (bowel, stomach)
    labels[2, 2:5, 50:53] = Label.RV_BLOOD_POOL
    labels[3, 55:58, 5:8] = Label.SCAR
    out = keep_largest_structures(labels)
    assert out.dtype == np.uint8 and out.shape == labels.shape
    assert (out[1, 50:54, 50:54] == 0).all() and (out[2, 2:5, 50:53] == 0).all() and (out[3, 55:58, 5:8] == 0).all()
    # the heart itself is untouched: blood pool, myocardium and scar count as one LV body; the RV touching it stays
    assert (out == _heart()).all()
    assert (labels[1, 50:54, 50:54] == Label.LV_MYOCARDIUM).all(), "the input must not be modified"


def test_components_connect_across_slices_but_never_across_phases():
    # one LV body spread over slices 0-2 by face contact: nothing is removed although no slice holds all of it
    stack = np.zeros((3, 32, 32), np.uint8)
    stack[0, 5:10, 5:10] = stack[1, 8:13, 8:13] = stack[2, 11:16, 11:16] = Label.LV_BLOOD_POOL
    assert (keep_largest_structures(stack) == stack).all()
    # a cine: phase 1 holds only a small LV; it is that phase's largest, so it stays although phase 0's is larger
    cine = np.stack([_heart(), np.zeros((4, 64, 64), np.uint8)])
    cine[1, 2, 5:9, 5:9] = Label.LV_BLOOD_POOL
    cine[1, 2, 50:52, 50:52] = Label.LV_BLOOD_POOL
    out = keep_largest_structures(cine)
    assert (out[0] == _heart()).all()
    assert (out[1, 2, 5:9, 5:9] == Label.LV_BLOOD_POOL).all() and (out[1, 2, 50:52, 50:52] == 0).all()


def test_empty_and_malformed_inputs():
    empty = np.zeros((2, 8, 8), np.uint8)
    assert (keep_largest_structures(empty) == 0).all()
    with pytest.raises(ValueError, match="slices, rows, cols"):
        keep_largest_structures(np.zeros((8, 8), np.uint8))
