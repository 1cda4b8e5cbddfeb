"""Pretraining samples from a real multi-plane study (Sunnybrook cine SAX + its 3-plane localizer, one study UID)."""
from __future__ import annotations

import numpy as np
import pytest

from dicomnode.devtools.make_study import make_study
from engines.ssl.dataset import CANVAS_SIZE, Plane, build_samples, line_distance_map, model_grid_coordinates
from dicomnode.cmr import InplaneResampler, load_studies
from dicomnode.cmr.frames import frames_of


@pytest.fixture(scope="module")
def sunnybrook(datasets, tmp_path_factory):
    out = tmp_path_factory.mktemp("scd301")
    make_study("sunnybrook:SCD0000301", out, datasets=datasets, with_localizers=True)
    return out / "dicom"


def test_samples_cover_cine_and_localizer_with_targets(sunnybrook):
    samples = build_samples([sunnybrook], max_phases=2, log=lambda *_: None)
    arrays = samples.arrays()
    sequences = list(arrays["sequence"])
    assert sequences.count("cine") == 10 * 2 and sequences.count("localizer") == 15
    assert arrays["images"].shape == (35, CANVAS_SIZE, CANVAS_SIZE)
    assert arrays["has_lines"].all()  # every cine slice is crossed by localizer planes and vice versa
    cine = arrays["sequence"] == "cine"
    positions = arrays["position"][cine]
    assert np.isfinite(positions).all() and positions.min() == 0.0 and positions.max() == 1.0
    assert len(np.unique(np.round(positions, 4))) == 10
    # the 5 parallel planes of each localizer orientation form stacks too
    assert np.isfinite(arrays["position"][~cine]).all()
    assert (arrays["lines"][cine].max(axis=(1, 2)) > 200).all()
    assert len(set(arrays["subject"])) == 1 and arrays["subject"][0] == "SCD0000301"


def test_line_heat_lies_on_a_localizer_plane(sunnybrook):
    study = load_studies([sunnybrook])[0]
    cine = study.preferred("cine")
    localizer = next(s for s in study.series if s.sequence.value == "localizer")
    planes = [Plane.from_frame(f) for h in localizer.instances for f in frames_of(h)]
    frame = frames_of(cine.instances[0])[0]
    plane = Plane.from_frame(frame)
    resampler = InplaneResampler(plane.shape_rc, plane.spacing_rc, 2.0, CANVAS_SIZE)
    rows, cols = model_grid_coordinates(resampler)
    samples = build_samples([sunnybrook], max_phases=1, log=lambda *_: None)
    index = list(samples.sop).index(frame.ref.sop_instance_uid)
    heat = samples.lines[index]
    peak = np.argwhere(heat > 0.99)
    assert len(peak) > 20
    points = plane.points(rows[tuple(peak.T)], cols[tuple(peak.T)])
    # each peak pixel lies (within a pixel) on one of the localizer planes
    nearest = np.min([np.abs((points - p.position) @ p.normal) for p in planes], axis=0)
    assert nearest.max() < 2.0
    assert all(line_distance_map(plane, p, rows, cols) is not None for p in planes)
