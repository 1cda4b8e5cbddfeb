"""AHA 17-segment model on synthetic rings with known answers (Cerqueira 2002 numbering and boundaries)."""
from __future__ import annotations

import numpy as np
import pytest

from dicomnode.analysis.aha import (aha_segments, aha_summary, basal_end_from_geometry, transmurality_class)
from dicomnode.labels import Label

SIZE = 96
CENTRE = (48.0, 48.0)
R_POOL, R_EPI = 16.0, 26.0


def polar(from_apex: bool = False):
    rows, cols = np.mgrid[:SIZE, :SIZE]
    dy, dx = rows - CENTRE[0], cols - CENTRE[1]
    radius = np.hypot(dy, dx)
    angle = np.degrees(np.arctan2(-dy if from_apex else dy, dx)) % 360.0
    return radius, angle


def ring_slice(rv_from: float = 90.0, rv_to: float = 210.0, rv: bool = True, from_apex: bool = False,
               pool: bool = True) -> np.ndarray:
    """LV ring centred in the image; RV blood pool touching the epicardium from rv_from to rv_to degrees (CCW seen
    from the apex), so the anterior RV insertion point is at rv_from and the inferior one at rv_to. A stack with the
    base first (slices ascending towards the apex) is seen from the base on screen: `from_apex` False mirrors."""
    radius, angle = polar(from_apex)
    labels = np.zeros((SIZE, SIZE), dtype=np.uint8)
    labels[radius <= R_EPI] = Label.LV_MYOCARDIUM
    if pool:
        labels[radius <= R_POOL] = Label.LV_BLOOD_POOL
    if rv:
        in_arc = ((angle - rv_from) % 360.0) <= ((rv_to - rv_from) % 360.0)
        labels[(radius > R_EPI) & (radius <= R_EPI + 10) & in_arc] = Label.RV_BLOOD_POOL
    return labels


def stack(n: int = 9, cap: int = 1, **kwargs) -> np.ndarray:
    """n ring slices base (index 0) to apex, then `cap` apical-cap slices (myocardium disc, no cavity)."""
    slices = [ring_slice(**kwargs) for _ in range(n)]
    slices += [ring_slice(rv=False, pool=False, from_apex=kwargs.get("from_apex", False)) for _ in range(cap)]
    return np.stack(slices)


def by_number(result):
    return {s.segment: s for s in result.segments}


def add_scar(labels, k, lo, hi, r_lo=R_POOL, r_hi=R_EPI, from_apex=False):
    radius, angle = polar(from_apex)
    in_arc = ((angle - lo) % 360.0) < ((hi - lo) % 360.0)
    region = in_arc & (radius > r_lo) & (radius <= r_hi) & (labels[k] == Label.LV_MYOCARDIUM)
    labels[k][region] = Label.SCAR


POSITIONS = np.arange(10) * 8.0


def test_scar_in_exactly_one_mid_sector_fills_that_segment_only():
    # RV arc 90..210: anterior RVIP 90, septum 90..210 (segments 8, 9), free wall 210..450 in 60 degree quarters
    labels = stack()
    mid = [3, 4, 5]
    for k in mid:
        add_scar(labels, k, 270.0, 330.0)  # the second free-wall quarter after the inferior RVIP: inferolateral (11)
    result = aha_segments(labels, (1.5, 1.5), POSITIONS, "first")
    assert result.applicable
    segments = by_number(result)
    assert segments[11].scar_extent_percent == pytest.approx(100.0, abs=4.0)
    assert segments[11].transmurality_max_percent == pytest.approx(100.0)
    assert segments[11].transmurality_mean_percent == pytest.approx(100.0, abs=4.0)
    for number, values in segments.items():
        if number != 11:
            assert (values.scar_extent_percent or 0.0) <= 4.0, (number, values)
    assert result.thirds == {"basal": [0, 1, 2], "mid": [3, 4, 5], "apical": [6, 7, 8], "apex": [9]}


def test_half_wall_scar_is_fifty_percent_transmural():
    labels = stack()
    half = (R_POOL + R_EPI) / 2.0
    for k in (0, 1, 2):
        add_scar(labels, k, 90.0, 150.0, r_hi=half)  # subendocardial half of the basal anteroseptal segment (2)
    segments = by_number(aha_segments(labels, (1.5, 1.5), POSITIONS, "first"))
    assert segments[2].transmurality_mean_percent == pytest.approx(50.0, abs=6.0)
    assert segments[2].transmurality_max_percent <= 60.0  # one ray may cross a pixel more of scar than of wall
    assert segments[1].transmurality_mean_percent == pytest.approx(0.0, abs=5.0)  # only boundary rays touch it


def test_numbering_follows_the_insertion_points_and_the_viewing_side():
    # septum between the anterior RVIP (90) and the inferior RVIP (210): 2 anteroseptal, 3 inferoseptal at base
    labels = stack()
    result = aha_segments(labels, (1.5, 1.5), POSITIONS, "first")
    probe = {120.0: 2, 180.0: 3, 240.0: 4, 300.0: 5, 0.0: 6, 60.0: 1}
    for degrees, expected in probe.items():
        r, c = (CENTRE[0] + 21 * np.sin(np.radians(degrees)), CENTRE[1] + 21 * np.cos(np.radians(degrees)))
        assert result.segment_map[0, int(round(r)), int(round(c))] == expected, degrees
    # apical ring: 14 septal centred on the septum (150), 15 inferior, 16 lateral, 13 anterior
    for degrees, expected in {150.0: 14, 240.0: 15, 330.0: 16, 60.0: 13}.items():
        r, c = (CENTRE[0] + 21 * np.sin(np.radians(degrees)), CENTRE[1] + 21 * np.cos(np.radians(degrees)))
        assert result.segment_map[7, int(round(r)), int(round(c))] == expected, degrees
    assert (result.segment_map[9][labels[9] > 0] == 17).all()
    # the same anatomy seen from the other side (base last): mirrored on screen, same numbering
    mirrored = stack(from_apex=True)[::-1]
    flipped = aha_segments(mirrored, (1.5, 1.5), POSITIONS, "last")
    assert flipped.applicable
    assert flipped.segment_map[5, 48, 48] == 0  # the cavity is no segment
    counts = {s.segment: s.myocardium_voxels for s in flipped.segments}
    assert counts == {s.segment: s.myocardium_voxels for s in result.segments}


def test_wall_thickness_of_a_ring():
    labels = stack()
    result = aha_segments(labels, (1.5, 1.5), POSITIONS, "first", scar=False, wall_thickness=True)
    for values in result.segments[:16]:
        assert values.wall_thickness_mm == pytest.approx((R_EPI - R_POOL) * 1.5, abs=1.6)
        assert values.scar_extent_percent is None
    assert result.segments[16].wall_thickness_mm is None


def test_no_rv_falls_back_with_a_reason():
    labels = stack(rv=False)
    result = aha_segments(labels, (1.5, 1.5), POSITIONS, "first")
    assert not result.applicable and "RV" in result.reason
    block = aha_summary(labels, (1.5, 1.5), POSITIONS, "first")
    assert block["applicable"] is False and "insertion points" in block["reason"]


def test_summary_reports_bad_inputs_instead_of_raising():
    block = aha_summary(stack(), (1.5, 1.5), POSITIONS[::-1].copy() * 0, "first")
    assert block["applicable"] is False and "monotonic" in block["reason"]
    with pytest.raises(ValueError, match="basal_end"):
        aha_segments(stack(), (1.5, 1.5), POSITIONS, "base")


def test_summary_block_is_json_ready():
    import json

    labels = stack()
    add_scar(labels, 4, 270.0, 330.0)
    block = aha_summary(labels, (1.5, 1.5), POSITIONS, "first")
    json.dumps(block)
    assert [s["segment"] for s in block["segments"]] == list(range(1, 18))
    # transmural on one of the segment's three slices: a third of its rays, class from the mean
    assert block["segments"][10]["transmurality_class"] == "26-50"


def test_a_patchy_segment_is_classed_by_its_mean_not_its_worst_ray():
    labels = stack()
    add_scar(labels, 4, 270.0, 280.0)  # a 10-degree transmural wedge in a 60-degree segment
    segment = next(s for s in aha_summary(labels, (1.5, 1.5), POSITIONS, "first")["segments"]
                   if s.get("transmurality_max_percent") and s["transmurality_max_percent"] > 90)
    assert segment["transmurality_mean_percent"] < 25
    assert segment["transmurality_class"] == transmurality_class(segment["transmurality_mean_percent"]) != "76-100"


def test_helpers():
    assert [transmurality_class(v) for v in (0, 10, 25, 26, 50, 60, 80, None)] == [
        "0", "1-25", "1-25", "26-50", "26-50", "51-75", "76-100", None]
    assert basal_end_from_geometry([0.58, -0.58, -0.58]) == "first"
    assert basal_end_from_geometry([-0.58, 0.58, 0.58]) == "last"
    with pytest.raises(ValueError, match="orthogonal"):
        basal_end_from_geometry([0.0, 0.7, -0.7])
