"""Pretext targets from DICOM geometry: intersection-line heatmaps and relative stack positions on known planes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset

from dicomnode.cmr import InplaneResampler
from dicomnode.cmr.frames import frames_of
from dicomnode.cmr.types import InstanceHeader
from engines.ssl.dataset import (Plane, line_distance_map, line_heatmap, model_grid_coordinates, plane_angle_deg,
                                 relative_positions)


def axial(z: float, size: int = 64, spacing: float = 2.0) -> Plane:
    """Axial plane at height z: rows run along +y (posterior), columns along +x (left), centred on x = y = 0."""
    half = (size - 1) / 2 * spacing
    return Plane(np.array([-half, -half, z]), np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), (spacing, spacing), (size, size))


def oblique_sax(size: int = 64, spacing: float = 2.0) -> Plane:
    """A plane through the origin tilted 45 degrees about the x axis (contains the x axis)."""
    row_dir = np.array([1.0, 0, 0])
    col_dir = np.array([0, 1.0, 1.0]) / np.sqrt(2)
    half = (size - 1) / 2 * spacing
    return Plane(-half * row_dir - half * col_dir, row_dir, col_dir, (spacing, spacing), (size, size))


def test_axial_line_on_oblique_slice_matches_the_analytic_line():
    sax = oblique_sax()
    ax = axial(z=10.0, size=200)
    rows, cols = np.meshgrid(np.arange(64.0), np.arange(64.0), indexing="ij")
    heat = line_heatmap(sax, [ax], rows, cols, sigma_mm=2.0)
    # the point at row r lies at z = (r - 31.5) * 2 / sqrt(2); z = 10 -> r = 31.5 + 10 * sqrt(2) / 2 = 38.57
    expected_row = 31.5 + 10.0 * np.sqrt(2) / 2
    peak_rows = heat.argmax(axis=0)
    assert np.all(np.abs(peak_rows - expected_row) <= 0.5 + 1e-9)
    # the line runs along the columns: every column has its peak on the same row; in-plane distance is |row offset|*2 mm
    distance = line_distance_map(sax, ax, rows, cols)
    np.testing.assert_allclose(distance[:, 5], np.abs(np.arange(64.0) - expected_row) * 2.0, atol=1e-6)
    assert heat.max() > 0.9 and heat[0].max() < 1e-6


def test_parallel_planes_have_no_line_and_extent_limits_the_line():
    a, b = axial(0.0), axial(20.0)
    rows, cols = np.meshgrid(np.arange(64.0), np.arange(64.0), indexing="ij")
    assert plane_angle_deg(a, b) < 1e-6
    assert line_distance_map(a, b, rows, cols) is None
    assert line_heatmap(a, [b], rows, cols).max() == 0.0
    # a tiny axial plane far off to the side does not draw a line across the oblique slice
    small = Plane(np.array([500.0, 500.0, 10.0]), np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), (1.0, 1.0), (4, 4))
    assert line_heatmap(oblique_sax(), [small], rows, cols).max() == 0.0


def test_heatmap_on_the_resampled_model_grid_follows_the_source_line():
    sax = oblique_sax(size=64, spacing=2.0)
    ax = axial(z=-14.0, size=200)
    resampler = InplaneResampler((64, 64), (2.0, 2.0), 1.0, (96, 96))
    rows, cols = model_grid_coordinates(resampler)
    heat = line_heatmap(sax, [ax], rows, cols, sigma_mm=2.0)
    source_row = 31.5 - 14.0 * np.sqrt(2) / 2
    expected_model_row = (source_row - resampler.offset[0]) / resampler.scale[0]
    assert np.all(np.abs(heat.argmax(axis=0) - expected_model_row) <= 0.5 + 1e-9)


def _header(position, orientation, number) -> InstanceHeader:
    ds = Dataset()
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = [1.5, 1.5]
    ds.Rows = ds.Columns = 8
    ds.InstanceNumber = number
    return InstanceHeader(Path(f"/nonexistent/{number}.dcm"), f"1.2.{number}", "1.2.840.10008.5.1.4.1.1.4", "1.2.9", ds)


def test_relative_positions_run_base_to_apex_and_skip_single_planes():
    sax_orientation = np.array([-0.104592, 0.346381, -0.932245, -0.733192, -0.660188, -0.163037])
    normal = np.cross(sax_orientation[:3], sax_orientation[3:])
    frames = []
    for k in range(5):  # two phases per slice, written in scrambled order
        for phase in range(2):
            frames += frames_of(_header(normal * (10.0 * ((k * 3) % 5)), sax_orientation, len(frames) + 1))
    frames += frames_of(_header([0, 0, 0], [1, 0, 0, 0, 1, 0], 99))  # a lone axial plane: no stack, no position
    positions = relative_positions(frames)
    assert len(positions) == 10 and id(frames[-1]) not in positions
    along = {id(f): float(np.dot(f.position, normal)) for f in frames[:-1]}
    # typical LV long axis (0.61, -0.51, -0.61) points against this normal: apex = lowest position along it
    sign = -1.0 if np.dot(normal, [0.61, -0.51, -0.61]) < 0 else 1.0
    for frame in frames[:-1]:
        expected = (sign * along[id(frame)] - min(sign * v for v in along.values())) / 40.0
        assert positions[id(frame)] == pytest.approx(expected)
    assert sorted(set(round(v, 6) for v in positions.values())) == [0.0, 0.25, 0.5, 0.75, 1.0]
