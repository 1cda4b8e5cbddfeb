"""One slice of a short-axis stack tilted a few degrees out of the plane of the others (break1 FINDINGS, s08 e8): the
slice is left out with a stack warning naming it (instance / frame, position, its angle to the stack) and the rest
measured, as a slice re-acquired on another pixel matrix is; its position still counts as acquired, so a tilted end
slice makes the volumes lower bounds and a tilted middle slice a gap. At most one slice position in four is left out
so (`frames.tilted_slices`); half the slices tilted is no stack and declined as not parallel, as before. LGE and
cine, classic and Enhanced MR alike (the demo LGE and cine of tests/data, field_inputs)."""
from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import generate_uid
from scipy.spatial.transform import Rotation

from dicomnode.analysis.cine_metrics import stack_coverage
from dicomnode.analysis.phase_text import other_views_text
from dicomnode.cmr import understand_study
from dicomnode.cmr.grouping import read_header
from dicomnode.labels import Label
from tests.data.field_inputs import legacy_converted, lge_variant

PSIR = range(8, 16)  # the demo PSIR stack, base to apex (field_inputs.lge_variant)


def _tilted(iop, position, spacing, rows: int, cols: int, degrees: float) -> tuple[list[float], list[float]]:
    """(ImageOrientationPatient, ImagePositionPatient) of an image turned by `degrees` about its row direction and
    its own centre (the centre stays where it was; the plane leans)."""
    iop = np.asarray(iop, float)
    row, col = iop[:3], iop[3:]
    half = lambda r, c: r * spacing[1] * (cols - 1) / 2 + c * spacing[0] * (rows - 1) / 2  # noqa: E731
    centre = np.asarray(position, float) + half(row, col)
    rotation = Rotation.from_rotvec(np.radians(degrees) * row)
    new_row, new_col = rotation.apply(row), rotation.apply(col)
    corner = centre - half(new_row, new_col)
    return [round(float(v), 6) for v in np.concatenate([new_row, new_col])], [round(float(v), 4) for v in corner]


def _tilt_classic(ds: pydicom.Dataset, degrees: float) -> None:
    spacing = [float(v) for v in ds.PixelSpacing]
    ds.ImageOrientationPatient, ds.ImagePositionPatient = _tilted(
        ds.ImageOrientationPatient, ds.ImagePositionPatient, spacing, int(ds.Rows), int(ds.Columns), degrees)


def _classic_lge(tmp_path, tilted: dict[int, float], indices=range(8, 14), one_series: bool = True):
    """The demo PSIR slices `indices` (6 by default) as classic images, slice k (index into `indices`) turned by
    tilted[k] degrees: one series (as most scanners send a stack) or, with `one_series` False, one series per slice
    as the demo is exported (GE-like). Returns (study, paths)."""
    order = list(indices)
    series_uid = generate_uid()

    def change(ds, index):
        k = order.index(index)
        if one_series:
            ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = series_uid, 21, k + 1
        if k in tilted:
            _tilt_classic(ds, tilted[k])

    paths = lge_variant(tmp_path, change, indices=indices)
    return understand_study([read_header(p) for p in paths]), paths


def _lge(study):
    return [s for s in study.series if s.sequence.value == "lge" and s.view.value == "sax"]


def _position_mm(volume, path, study) -> float:
    """Where a left-out image lies along the volume's normal (mm), as the volume measures slice positions."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    normal = np.cross(volume.orientation[:3], volume.orientation[3:])
    spacing = [float(v) for v in ds.PixelSpacing]
    iop = np.asarray(ds.ImageOrientationPatient, float)
    centre = (np.asarray(ds.ImagePositionPatient, float) + iop[:3] * spacing[1] * (int(ds.Columns) - 1) / 2
              + iop[3:] * spacing[0] * (int(ds.Rows) - 1) / 2)
    return float(np.dot(centre, normal))


@pytest.mark.parametrize("one_series", [True, False], ids=["one_series", "one_series_per_slice"])
def test_one_tilted_classic_slice_in_six_is_left_out_and_named_the_rest_measured(tmp_path, one_series):
    study, paths = _classic_lge(tmp_path, {2: 3.0}, one_series=one_series)
    assert [s for s in study.series if s.sequence.value == "lge"] == _lge(study)  # no one-slice series apart
    (series,) = _lge(study)
    assert series.slices == 5 and study.preferred("lge") is series
    tilted = pydicom.dcmread(paths[2], stop_before_pixels=True)
    assert any("tilted slice" in e and tilted.SOPInstanceUID in e and "3.0 deg" in e for e in series.view.evidence)
    volume = study.load_volume(series)
    assert volume.pixels.shape[:2] == (1, 5)
    assert tilted.SOPInstanceUID not in {ref.sop_instance_uid for ref in volume.frames[0]}
    (warning,) = [w for w in volume.warnings if w.startswith("tilted slice left out")]
    assert f"instance {tilted.SOPInstanceUID}, InstanceNumber {tilted.InstanceNumber}" in warning
    assert f"ImagePositionPatient {[round(float(v), 1) for v in tilted.ImagePositionPatient]}" in warning
    assert "tilted 3.0 deg out of the plane" in warning and "inside the stack" in warning
    assert "the other 5 of 6 slice positions" in warning
    (entry,) = [e for e in volume.excluded if e["sop_instance_uid"] == tilted.SOPInstanceUID]
    assert "tilted 3.0 deg" in entry["reason"]
    # a middle slice missing: a gap on the nominal step of all acquired positions, no lower bound
    assert any("gap: missing slice?" in w and "slices left out included" in w for w in volume.warnings)
    assert volume.ends_left_out_mm == [] and not [w for w in volume.warnings if "lower bounds" in w]


def test_a_tilted_end_slice_makes_the_volumes_lower_bounds(tmp_path):
    study, paths = _classic_lge(tmp_path, {5: -3.0})
    (series,) = _lge(study)
    volume = study.load_volume(series)
    assert volume.pixels.shape[:2] == (1, 5)
    (warning,) = [w for w in volume.warnings if w.startswith("tilted slice left out")]
    assert "beyond an end of the stack" in warning
    end = _position_mm(volume, paths[5], study)
    assert volume.ends_left_out_mm == [pytest.approx(end, abs=0.01)]
    (note,) = [w for w in volume.warnings if w.startswith("end slice left out")]
    assert "lower bounds" in note
    # the coverage check then says the stack is not complete where the LV reaches that end
    labels = np.zeros((5, 8, 8), np.int64)
    labels[:, 2:6, 2:6] = int(Label.LV_BLOOD_POOL)
    labels[0] = 0
    labels[0, 3:5, 3:5] = int(Label.LV_BLOOD_POOL)  # a small apical section: the stack itself reaches the apex
    labels[-1, 2:6, 5] = 0  # the base narrower than the largest section: a 50-mm stack ending on it is not confirmed
    distances = [float(np.dot(p, np.cross(volume.orientation[:3], volume.orientation[3:]))) for p in volume.positions]
    assert stack_coverage(labels, distances, apex_first=True).complete
    coverage = stack_coverage(labels, distances, apex_first=True, ends_left_out_mm=volume.ends_left_out_mm)
    assert not coverage.complete and f"{volume.ends_left_out_mm[0]:.2f} mm" in coverage.reasons[0]


def test_half_the_slices_tilted_is_declined_as_not_parallel(tmp_path):
    # 5 deg: at 3 deg the two halves (1.5 deg from their mean plane) are one stack by the 2 deg rule
    study, _ = _classic_lge(tmp_path, {3: 5.0, 4: 5.0, 5: 5.0})
    assert _lge(study) == [] and study.preferred("lge") is None
    (series,) = [s for s in study.series if s.sequence.value == "lge"]
    assert series.view.value == "other"
    (note,) = [e for e in series.view.evidence if "slices not parallel" in e]
    assert "no one plane holds all but at most one slice position in 4" in note
    assert "slices not parallel: up to 5.0 deg apart" in other_views_text(study.series, "lge")


def test_two_tilted_slices_in_six_are_more_than_one_in_four(tmp_path):
    """Not split into a stack of the 4 untilted slices and two one-slice series either (it was: measured on 4
    slices, the two unnamed): one view, declined as not parallel."""
    study, _ = _classic_lge(tmp_path, {1: 3.0, 4: -3.0})
    assert _lge(study) == []
    (series,) = [s for s in study.series if s.sequence.value == "lge"]
    assert any("slices not parallel" in e for e in series.view.evidence)


def test_two_tilted_slices_of_eight_are_left_out(tmp_path):
    study, _ = _classic_lge(tmp_path, {1: 3.0, 5: -2.5}, indices=PSIR)
    (series,) = _lge(study)
    assert series.slices == 6
    volume = study.load_volume(series)
    assert volume.pixels.shape[:2] == (1, 6)
    warnings = [w for w in volume.warnings if w.startswith("tilted slice left out")]
    assert len(warnings) == 2 and all("the other 6 of 8 slice positions" in w for w in warnings)
    assert any("3.0 deg" in w for w in warnings) and any("2.5 deg" in w for w in warnings)


def _enhanced_lge(tmp_path, tilted: dict[int, float], indices=range(8, 13)):
    """The demo PSIR slices as ONE Enhanced MR instance (Legacy Converted, field_inputs.legacy_converted), its
    orientation moved into each frame's Plane Orientation Sequence and frame k + 1 turned by tilted[k] degrees."""
    path = legacy_converted(tmp_path, indices=indices)
    ds = pydicom.dcmread(path)
    shared = ds.SharedFunctionalGroupsSequence[0]
    iop = [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient]
    del shared.PlaneOrientationSequence
    spacing = [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing]
    for k, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        position = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        orientation = list(iop)
        if k in tilted:
            orientation, position = _tilted(iop, position, spacing, int(ds.Rows), int(ds.Columns), tilted[k])
            item.PlanePositionSequence[0].ImagePositionPatient = position
        plane = pydicom.Dataset()
        plane.ImageOrientationPatient = orientation
        item.PlaneOrientationSequence = DicomSequence([plane])
    ds.save_as(path, enforce_file_format=True)
    return understand_study([read_header(path)]), ds


@pytest.mark.parametrize("jitter", [0.0, 0.8])
def test_one_tilted_enhanced_frame_in_five_is_left_out_and_named(tmp_path, jitter):
    """break1 s08 e8: frames tilted +-0.8 deg (one stack) and one of them 3 deg, or an untilted stack with one."""
    tilts = {k: (jitter if k % 2 else -jitter) for k in range(5)}
    tilts[2] = 3.0
    study, ds = _enhanced_lge(tmp_path, tilts)
    (series,) = _lge(study)
    assert series.slices == 4, [s.summary() for s in study.series]
    volume = study.load_volume(series)
    assert volume.pixels.shape[:2] == (1, 4)
    assert sorted(ref.frame_number for ref in volume.frames[0]) == [1, 2, 4, 5]
    (warning,) = [w for w in volume.warnings if w.startswith("tilted slice left out")]
    assert f"frame 3 of instance {ds.SOPInstanceUID}" in warning and "the other 4 of 5 slice positions" in warning
    assert "inside the stack" in warning
    assert any("gap: missing slice?" in w for w in volume.warnings)
    assert volume.ends_left_out_mm == []
    assert study.excluded_instances == []  # the instance's other frames are measured


def test_a_cine_slice_tilted_in_all_its_phases_is_left_out_and_the_rest_measured(tmp_path):
    from test_cmr_study import _demo_cine

    tilted_slice = 4

    def change(ds, slice_index, _phase):
        if slice_index == tilted_slice:
            _tilt_classic(ds, 3.0)

    paths = _demo_cine(tmp_path / "cine", change)
    study = understand_study([read_header(p) for p in paths])
    cine = study.preferred("cine")
    assert cine is not None and cine.view.value == "sax", [s.summary() for s in study.series]
    phases = len(paths) // 10  # the demo cine: 10 slices, their phases in order (test_cmr_study._demo_cine)
    assert cine.slices == 9 and cine.phases == phases
    volume = study.load_volume(cine)
    assert volume.pixels.shape[:2] == (phases, 9)
    (warning,) = [w for w in volume.warnings if w.startswith("tilted slice left out")]
    assert f"({phases} images:" in warning and "tilted 3.0 deg" in warning and "the other 9 of 10" in warning
    tilted = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in paths[tilted_slice * phases:
                                                                                           (tilted_slice + 1) * phases]}
    assert not tilted & {ref.sop_instance_uid for row in volume.frames for ref in row}
