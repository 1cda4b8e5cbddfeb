"""engines.cine.basal_rules: each candidate basal rule on synthetic ED/ES label maps (z = 0 basal): an atrium drawn as
ventricle above the valve at ES is left out, a real basal ventricle kept, and the current rule leaves both as drawn."""
from __future__ import annotations

import numpy as np
import pytest

from engines.cine.basal_rules import function_values, lv_counted, rv_counted, wall_thickness
from dicomnode.labels import Label

LV, MYO, RV = int(Label.LV_BLOOD_POOL), int(Label.LV_MYOCARDIUM), int(Label.RV_BLOOD_POOL)


def heart_slice(lv_radius: int, rv_width: int, wall: int = 3, size: int = 48) -> np.ndarray:
    """One short-axis slice: an LV cavity in a closed myocardial ring, and an RV block beside it (0: none)."""
    r, c = np.mgrid[:size, :size]
    distance = np.hypot(r - 24, c - 28)
    labels = np.zeros((size, size), np.uint8)
    if lv_radius:
        labels[distance < lv_radius + wall] = MYO
        labels[distance < lv_radius] = LV
    if rv_width:
        labels[14:34, 28 - lv_radius - wall - rv_width:28 - lv_radius - wall] = RV
    return labels


def cine(es_basal_rv: int, es_basal_lv: int = 6) -> np.ndarray:
    """(2 phases, 4 slices) ED and ES maps: the ventricles fill slices 0-3 at ED; at ES slice 0 holds what the caller
    draws there (an 'atrial' RV block as large as at ED, or a shrunken ventricle)."""
    ed = [heart_slice(9, 8), heart_slice(10, 8), heart_slice(9, 7), heart_slice(6, 5)]
    es = [heart_slice(es_basal_lv, es_basal_rv), heart_slice(7, 5), heart_slice(6, 4), heart_slice(4, 3)]
    return np.stack([np.stack(ed), np.stack(es)])


def test_the_current_rules_count_every_rv_slice_and_the_es_rules_cut_an_atrial_basal_slice():
    labels = cine(es_basal_rv=8)  # slice 0 at ES: RV block as large as at ED, as a right atrium drawn as RV would be
    current = rv_counted(labels, 0.1, "RV_current", 0, 1)
    assert np.all(current[1] > 0)
    for rule in ("RV_es_below_lv", "RV_es_descent", "RV_es_not_shrinking"):
        counted = rv_counted(labels, 0.1, rule, 0, 1)
        assert counted[1, 0] == 0.0 and np.all(counted[1, 1:] == current[1, 1:]), rule
        assert np.all(counted[0] == current[0]), rule  # ED untouched
    # a basal RV that shrank in systole is a ventricle to the not-shrinking rule, kept
    shrunk = cine(es_basal_rv=4)
    assert rv_counted(shrunk, 0.1, "RV_es_not_shrinking", 0, 1)[1, 0] > 0


def test_rv_within_lv_keeps_rv_beside_the_lv_and_cuts_rv_above_the_lv_myocardium():
    labels = cine(es_basal_rv=8)
    assert np.all(rv_counted(labels, 0.1, "RV_within_lv", 0, 1) == rv_counted(labels, 0.1, "RV_current", 0, 1))
    above = labels.copy()
    above[1, 0][np.isin(above[1, 0], (LV, MYO))] = 0  # ES slice 0: RV-labelled blood with no LV at all
    counted = rv_counted(above, 0.1, "RV_within_lv", 0, 1)
    assert counted[1, 0] == 0.0 and counted[1, 1] > 0


def test_the_taper_rules_cut_a_basal_end_slice_with_under_half_the_next_slices_pool():
    labels = cine(es_basal_rv=8)
    assert np.all(lv_counted(labels, 0.1, "LV_basal_taper", 1) == lv_counted(labels, 0.1, "LV_current", 1))
    small = cine(es_basal_rv=2, es_basal_lv=3)  # ES slice 0: LV and RV blood pools a fraction of the next slice's
    lv, rv = lv_counted(small, 0.1, "LV_basal_taper", 1), rv_counted(small, 0.1, "RV_basal_taper", 0, 1)
    assert lv[1, 0] == 0.0 and rv[1, 0] == 0.0 and lv[1, 1] > 0 and rv[1, 1] > 0
    assert np.all(lv[0] == lv_counted(small, 0.1, "LV_current", 1)[0])


def test_lv_es_descent_cuts_the_ed_basal_slice_at_es_only():
    labels = cine(es_basal_rv=8)
    current, descent = lv_counted(labels, 0.1, "LV_current", 1), lv_counted(labels, 0.1, "LV_es_descent", 1)
    assert current[1, 0] > 0 and descent[1, 0] == 0.0
    assert np.all(descent[0] == current[0]) and np.all(descent[1, 1:] == current[1, 1:])
    values = function_values(labels, 0.1, "LV_es_descent", "RV_current")
    assert values["lv_esv_ml"] == pytest.approx(current[1, 1:].sum())


def test_wall_thickness_rule_leaves_out_the_most_basal_lv_slice():
    labels = cine(es_basal_rv=8)[0].astype(np.int16)
    labels[0][labels[0] == MYO] = 0
    r, c = np.mgrid[:48, :48]
    labels[0][(np.hypot(r - 24, c - 28) < 21) & (labels[0] != LV) & (labels[0] != RV)] = MYO  # a thick basal ring
    spacing = np.array([1.0, 1.0, 8.0])
    assert wall_thickness(labels, spacing, "WT_current") > wall_thickness(labels, spacing, "WT_no_basal_end")
    # its cavity is as large as the next slice's: a ventricle, kept by the taper rule
    assert wall_thickness(labels, spacing, "WT_basal_taper") == wall_thickness(labels, spacing, "WT_current")
    labels[0][labels[0] == LV] = MYO
    labels[0][np.hypot(r - 24, c - 28) < 4] = LV  # a small cavity in the basal end slice: cut by the taper rule
    assert wall_thickness(labels, spacing, "WT_basal_taper") == wall_thickness(labels, spacing, "WT_no_basal_end")
    assert wall_thickness(labels, spacing, "WT_current") > wall_thickness(labels, spacing, "WT_basal_taper")
