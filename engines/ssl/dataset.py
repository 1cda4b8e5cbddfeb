"""Self-supervised training samples from DICOM alone: 2-D frames on the model grid + geometric pretext targets."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pydicom

from dicomnode.cmr.intensity import normalise_slices
from dicomnode.cmr import InplaneResampler, load_studies
from dicomnode.cmr.frames import FrameInfo, frames_of, orientation_groups, slice_groups
from dicomnode.cmr.recognize import CANONICAL_LONG_AXIS

#: model grid of the pretraining cache: 2 mm pixels, 112 x 112 canvas (training crops 96 x 96 from it)
TARGET_SPACING_MM = 2.0
CANVAS_SIZE = 112
#: line heatmap width (Gaussian sigma of the in-plane distance to the intersection line)
LINE_SIGMA_MM = 4.0
#: planes closer than this to parallel have no usable intersection line
MIN_PLANE_ANGLE_DEG = 10.0
#: sequence classes of the learned classifier (tag-rule labels); anything else is "other"
SEQUENCE_CLASSES = ("cine", "lge", "localizer")


@dataclass(frozen=True)
class Plane:
    """An imaged plane in patient LPS mm: origin = centre of the first pixel, finite extent rows x cols."""

    position: np.ndarray  # (3,) ImagePositionPatient
    row_dir: np.ndarray  # (3,) direction of increasing column index (IOP[:3])
    col_dir: np.ndarray  # (3,) direction of increasing row index (IOP[3:])
    spacing_rc: tuple[float, float]  # (between rows, between columns) mm
    shape_rc: tuple[int, int]

    def __post_init__(self):
        if abs(np.dot(self.row_dir, self.col_dir)) > 1e-3:
            raise ValueError(f"row and column directions are not orthogonal: {self.row_dir} . {self.col_dir}")
        if min(self.spacing_rc) <= 0 or min(self.shape_rc) <= 0:
            raise ValueError(f"plane needs positive spacing and shape, got {self.spacing_rc}, {self.shape_rc}")

    @property
    def normal(self) -> np.ndarray:
        normal = np.cross(self.row_dir, self.col_dir)
        return normal / np.linalg.norm(normal)

    @classmethod
    def from_frame(cls, frame: FrameInfo) -> "Plane":
        orientation = np.asarray(frame.orientation, float)
        return cls(np.asarray(frame.position, float), orientation[:3] / np.linalg.norm(orientation[:3]),
                   orientation[3:] / np.linalg.norm(orientation[3:]), tuple(frame.pixel_spacing),
                   (int(frame.rows), int(frame.cols)))

    def points(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Patient coordinates (..., 3) of (possibly fractional) pixel coordinates."""
        return (self.position + cols[..., None] * self.spacing_rc[1] * self.row_dir
                + rows[..., None] * self.spacing_rc[0] * self.col_dir)

    def contains(self, points: np.ndarray, margin_mm: float = 0.0) -> np.ndarray:
        """Whether points lying in this plane fall inside its imaged extent (plus a margin)."""
        offset = points - self.position
        col = offset @ self.row_dir / self.spacing_rc[1]
        row = offset @ self.col_dir / self.spacing_rc[0]
        margin_c, margin_r = margin_mm / self.spacing_rc[1], margin_mm / self.spacing_rc[0]
        return ((col >= -0.5 - margin_c) & (col <= self.shape_rc[1] - 0.5 + margin_c)
                & (row >= -0.5 - margin_r) & (row <= self.shape_rc[0] - 0.5 + margin_r))


def plane_angle_deg(a: Plane, b: Plane) -> float:
    return float(np.degrees(np.arccos(np.clip(abs(np.dot(a.normal, b.normal)), 0.0, 1.0))))


def model_grid_coordinates(resampler: InplaneResampler) -> tuple[np.ndarray, np.ndarray]:
    """Source pixel coordinates (rows, cols), each (out_rows, out_cols), sampled by the resampler's model grid."""
    out_rows, out_cols = resampler.out_size
    rows = resampler.offset[0] + np.arange(out_rows) * resampler.scale[0]
    cols = resampler.offset[1] + np.arange(out_cols) * resampler.scale[1]
    return np.meshgrid(rows, cols, indexing="ij")


def line_distance_map(plane: Plane, other: Plane, rows: np.ndarray, cols: np.ndarray) -> np.ndarray | None:
    """In-plane distance (mm) from each pixel of `plane` to its intersection line with `other`; inf off `other`'s extent.

    The line is where the signed distance to `other` is zero; the in-plane distance to it is that signed distance
    divided by sin(angle between the planes). None when the planes are within MIN_PLANE_ANGLE_DEG of parallel.
    """
    sine = np.linalg.norm(np.cross(plane.normal, other.normal))
    if sine < np.sin(np.radians(MIN_PLANE_ANGLE_DEG)):
        return None
    points = plane.points(rows, cols)
    signed = (points - other.position) @ other.normal
    distance = np.abs(signed) / sine
    # the foot of each pixel on the line, projected into `other`, must lie in other's imaged extent
    in_plane_normal = other.normal - plane.normal * np.dot(other.normal, plane.normal)
    in_plane_normal /= np.linalg.norm(in_plane_normal)
    feet = points - (signed / sine)[..., None] * in_plane_normal
    return np.where(other.contains(feet), distance, np.inf)


def line_heatmap(plane: Plane, others: Iterable[Plane], rows: np.ndarray, cols: np.ndarray,
                 sigma_mm: float = LINE_SIGMA_MM) -> np.ndarray:
    """Max over the non-parallel planes of exp(-d^2 / 2 sigma^2), d = in-plane distance to the intersection line."""
    heat = np.zeros(rows.shape, np.float32)
    for other in others:
        distance = line_distance_map(plane, other, rows, cols)
        if distance is not None:
            heat = np.maximum(heat, np.exp(-0.5 * (distance / sigma_mm) ** 2).astype(np.float32))
    return heat


def relative_positions(frames: list[FrameInfo]) -> dict[int, float]:
    """id(frame) -> relative position 0..1 along the normal of its parallel stack (>= 2 positions).

    Measured along the stack normal turned to point the way of the typical LV long axis (base -> apex for a
    short-axis stack), so 0 is the basal end of a SAX stack. Frames of single-plane orientations get none.
    """
    result: dict[int, float] = {}
    for group in orientation_groups(frames):
        positions = slice_groups(group)
        if len(positions) < 2:
            continue
        sign = 1.0 if np.dot(group[0].normal, CANONICAL_LONG_AXIS) >= 0 else -1.0
        along = [sign * distance for distance, _ in positions]
        low, high = min(along), max(along)
        for value, (_, members) in zip(along, positions):
            for frame in members:
                result[id(frame)] = (value - low) / (high - low)
    return result


def subject_of(dataset) -> str:
    """Subject id: the last component of PatientName (make_study writes 'acdc^patient002'), else PatientID."""
    name = str(getattr(dataset, "PatientName", "") or "")
    if "^" in name:
        return name.split("^")[-1]
    return str(getattr(dataset, "PatientID", "") or name or "unknown")


@dataclass
class SampleSet:
    """Pretraining samples; `position` is NaN and `has_lines` False where the target does not exist."""

    images: list[np.ndarray] = field(default_factory=list)  # (S, S) float32, normalised
    lines: list[np.ndarray] = field(default_factory=list)  # (S, S) float32 0..1
    has_lines: list[bool] = field(default_factory=list)
    position: list[float] = field(default_factory=list)
    sequence: list[str] = field(default_factory=list)
    view: list[str] = field(default_factory=list)
    subject: list[str] = field(default_factory=list)
    study: list[str] = field(default_factory=list)
    series: list[str] = field(default_factory=list)
    sop: list[str] = field(default_factory=list)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "images": np.asarray(self.images, np.float16).reshape(-1, CANVAS_SIZE, CANVAS_SIZE),
            "lines": np.round(np.asarray(self.lines, np.float32) * 255).astype(np.uint8).reshape(-1, CANVAS_SIZE, CANVAS_SIZE),
            "has_lines": np.asarray(self.has_lines, bool),
            "position": np.asarray(self.position, np.float32),
            "sequence": np.asarray(self.sequence, dtype="U16"),
            "view": np.asarray(self.view, dtype="U8"),
            "subject": np.asarray(self.subject, dtype="U32"),
            "study": np.asarray(self.study, dtype="U80"),
            "series": np.asarray(self.series, dtype="U120"),
            "sop": np.asarray(self.sop, dtype="U80"),
        }


def _frame_pixels(frame: FrameInfo, cache: dict) -> np.ndarray:
    path = frame.header.path
    if path not in cache:
        cache.clear()  # one instance at a time: classic files are single-frame
        cache[path] = pydicom.dcmread(str(path)).pixel_array
    array = cache[path]
    pixels = array[frame.frame_index] if array.ndim == 3 else array
    slope, intercept = frame.rescale
    return pixels.astype(np.float32) * slope + intercept


def study_samples(study, samples: SampleSet, preferred_only: bool = True, max_phases: int | None = None) -> int:
    """Append every usable frame of one CMRStudy; returns how many were added.

    Lines: every frame gets the intersection lines with all planes of the OTHER series of the study that are not
    parallel to it (for Sunnybrook: the localizer planes on the cine, the cine slices on the localizers); a frame
    whose study has no such plane gets has_lines False. Intersections between the planes of one series (the three
    orientations of a localizer) are left out: they are one acquisition, not a cross-reference.
    """
    series_frames = {}
    for series in study.series:
        if preferred_only and not series.preferred:
            continue
        frames = [f for header in series.instances for f in frames_of(header) if f.has_geometry]
        if frames:
            series_frames[series.key] = (series, frames)
    planes_by_series = {}
    for key, (_, frames) in series_frames.items():
        unique = {}
        for frame in frames:
            signature = tuple(np.round(np.concatenate([frame.position, frame.orientation]), 2))
            unique.setdefault(signature, Plane.from_frame(frame))
        planes_by_series[key] = list(unique.values())
    added = 0
    pixel_cache: dict = {}
    for key, (series, frames) in series_frames.items():
        positions = relative_positions(frames)
        others = [p for other_key, planes in planes_by_series.items() if other_key != key for p in planes]
        if max_phases is not None:
            frames = _limit_phases(frames, max_phases)
        for frame in frames:
            plane = Plane.from_frame(frame)
            resampler = InplaneResampler(plane.shape_rc, plane.spacing_rc, TARGET_SPACING_MM, CANVAS_SIZE)
            rows, cols = model_grid_coordinates(resampler)
            crossing = [o for o in others if plane_angle_deg(plane, o) >= MIN_PLANE_ANGLE_DEG]
            samples.images.append(normalise_slices(resampler.forward(_frame_pixels(frame, pixel_cache))))
            samples.lines.append(line_heatmap(plane, crossing, rows, cols))
            samples.has_lines.append(bool(crossing))
            samples.position.append(positions.get(id(frame), np.nan))
            sequence = series.sequence.value
            samples.sequence.append(sequence if sequence in SEQUENCE_CLASSES else "other")
            samples.view.append(series.view.value)
            samples.subject.append(subject_of(frame.header.dataset))
            samples.study.append(study.study_instance_uid)
            samples.series.append(series.key)
            samples.sop.append(frame.ref.sop_instance_uid + (f"#{frame.ref.frame_number}" if frame.ref.frame_number else ""))
            added += 1
    return added


def _limit_phases(frames: list[FrameInfo], max_phases: int) -> list[FrameInfo]:
    """Keep at most max_phases evenly spread phases per slice position (by trigger time / instance number)."""
    kept = []
    for group in orientation_groups(frames):
        for _, members in slice_groups(group):
            members = sorted(members, key=lambda f: (f.trigger_time or 0.0, f.instance_number or 0))
            if len(members) > max_phases:
                members = [members[i] for i in np.linspace(0, len(members) - 1, max_phases).round().astype(int)]
            kept.extend(members)
    return kept


def build_samples(folders: Iterable[Path], preferred_only: bool = True, max_phases: int | None = None,
                  log=print) -> SampleSet:
    """Walk each folder (a spool or an archive export), understand its studies and collect samples from all of them."""
    samples = SampleSet()
    for folder in folders:
        for study in load_studies([Path(folder)]):
            if not study.series:
                continue
            count = study_samples(study, samples, preferred_only, max_phases)
            described = ", ".join(f"{s.sequence.value}/{s.view.value}x{len(s.instances)}" for s in study.series)
            log(f"{folder}: study {study.study_instance_uid[-12:]}: {count} samples ({described})")
    return samples
