"""Data types of an understood CMR study: analysis series, their recognition, and volumes with geometry."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

Sequence = Literal["cine", "lge", "t1map", "t2map", "t2w", "perfusion", "localizer", "other"]
View = Literal["sax", "2ch", "3ch", "4ch", "lvot", "other"]


def series_number_range(numbers) -> str | None:
    """'21-35' for the SeriesNumbers (0020,0011) of a stack merged from one-slice series (lowest-highest), '21' for
    one, None where none is known (None entries are skipped). The one way every output names a merged stack, so
    that a reader finds all its slices in a viewer's series list."""
    known = sorted({int(n) for n in numbers if n is not None})
    if not known:
        return None
    return f"{known[0]}-{known[-1]}" if len(known) > 1 else str(known[0])


class StudyError(ValueError):
    """Input that cannot be understood or turned into a volume; the message says what was wrong. `excluded`: the
    `excluded_instances` entries of the images left out on the way (every image of a series none of whose pixel data
    is usable), for the study to list although no volume was built."""

    def __init__(self, message: str, excluded: list[dict] | None = None, unusable: dict[str, str] | None = None):
        super().__init__(message)
        self.excluded = list(excluded or [])
        #: {path: reason} of the files whose pixel data could not be read or used (Volume.unusable)
        self.unusable = dict(unusable or {})


@dataclass(frozen=True)
class FrameRef:
    """One source frame: a single-frame instance (frame_number None) or one frame of a multi-frame instance."""

    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    frame_number: int | None = None  # 1-based, multi-frame only


@dataclass
class Recognition:
    """An answer with its confidence (0..1) and the DICOM evidence it rests on."""

    value: str
    confidence: float
    evidence: list[str] = field(default_factory=list)


@dataclass
class InstanceHeader:
    """What the grouping needs of one stored instance (pixel data not loaded)."""

    path: Path
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    dataset: object  # pydicom Dataset read with stop_before_pixels=True


@dataclass
class AnalysisSeries:
    """A series as analysis sees it: may be a part of one SeriesInstanceUID or several merged (one per slice)."""

    key: str  # stable id within the study, e.g. "1.2.3#300#cine"
    series_instance_uids: list[str]  # source series (several when single-slice series were merged)
    series_number: int | None
    description: str
    sequence: Recognition  # value is a Sequence
    view: Recognition  # value is a View
    lge_kind: Literal["psir", "magnitude"] | None
    instances: list[InstanceHeader]
    slices: int
    phases: int
    preferred: bool = False  # the one of its repeats chosen for analysis
    preferred_reason: str = ""
    notes: list[str] = field(default_factory=list)
    planes: list[str] = field(default_factory=list)  # axial/sagittal/coronal/oblique of each distinct orientation
    # SOPInstanceUID -> 1-based frame numbers of this series, for a multi-frame instance whose frames are split
    # between series (e.g. Enhanced MR holding PSIR and magnitude frames); instances not listed: all frames
    frames_included: dict[str, list[int]] = field(default_factory=dict)

    @property
    def series_instance_uid(self) -> str:
        return self.series_instance_uids[0]

    def summary(self) -> dict:
        """The `series` entry of summary.json (design.md contract) plus recognition detail."""
        return {
            "series_instance_uid": self.series_instance_uid,
            "series_number": self.series_number,
            "series_description": self.description,
            "sequence": self.sequence.value,
            "view": self.view.value,
            "slices": self.slices,
            "phases": self.phases,
            "sequence_confidence": round(self.sequence.confidence, 3),
            "view_confidence": round(self.view.confidence, 3),
            "evidence": self.sequence.evidence + self.view.evidence,
            "preferred": self.preferred,
            **({"lge_kind": self.lge_kind} if self.lge_kind else {}),
            **({"notes": list(self.notes)} if self.notes else {}),
            **({"merged_series": merged} if len(merged := self.merged_series()) > 1 else {}),
        }

    def merged_series(self) -> list[dict]:
        """[{"series_instance_uid", "series_number"}] of every source series of this stack, in stack order: more
        than one where single-slice series (one per slice, Siemens style) were merged, so that summary.json names
        each series received and analysed, not only the first (series_number None where the headers give none)."""
        numbers: dict[str, int | None] = {}
        for header in self.instances:
            if numbers.get(header.series_instance_uid) is None:
                try:
                    numbers[header.series_instance_uid] = int(header.dataset.get("SeriesNumber"))
                except (TypeError, ValueError):
                    numbers[header.series_instance_uid] = None
        return [{"series_instance_uid": uid, "series_number": numbers.get(uid)}
                for uid in dict.fromkeys(self.series_instance_uids)]

    def series_numbers(self) -> list[int]:
        """The distinct SeriesNumbers of the instances of this stack, ascending (several for a merged stack)."""
        found = set()
        for header in self.instances:
            try:
                found.add(int(header.dataset.get("SeriesNumber")))
            except (TypeError, ValueError, AttributeError):
                continue
        return sorted(found)

    def series_number_text(self) -> str | None:
        """'21-35' for a stack merged from one-slice series, '21' for one series (series_number_range; the
        series' own SeriesNumber where its instances give none), None without any."""
        return series_number_range(self.series_numbers() or [self.series_number])


@dataclass
class Volume:
    """Pixel data of one analysis series with full geometry and the way back to the source frames.

    `pixels` has shape (phases, slices, rows, cols), float32, rescale applied. Slices are sorted along the
    stack normal (ascending position along n = row_dir x col_dir). `affine` maps voxel indices
    (col j, row i, slice k, 1) to patient LPS millimetres for every phase.
    """

    pixels: np.ndarray
    affine: np.ndarray  # 4x4
    pixel_spacing: tuple[float, float]  # (between rows, between columns) mm
    slice_spacing: float  # mm, from positions
    frames: list[list[FrameRef]]  # [phase][slice]
    trigger_times: list[float | None]  # per phase (median over slices), ms
    orientation: np.ndarray  # (6,) ImageOrientationPatient
    positions: np.ndarray  # (slices, 3) ImagePositionPatient of each slice
    warnings: list[str] = field(default_factory=list)
    # instances of the series left out, each {"series_instance_uid", "sop_instance_uid", "reason"}
    excluded: list[dict] = field(default_factory=list)
    # {path: reason} of the series' files left out because their pixel data could not be read, decoded or used
    # (cmr.volume.decode_instances): instances lost after the series was chosen among its repeats (CMRStudy.load_preferred)
    unusable: dict[str, str] = field(default_factory=dict)
    # mm: the median step over all acquired slice positions, slices left out (other grid, unusable pixels) included
    # (cmr.volume.nominal_step_mm); None where unknown (one slice, or a Volume built elsewhere)
    nominal_step_mm: float | None = None
    # mm along the normal: acquired slices beyond the measured stack's ends that it does not use (an end slice on
    # another pixel grid or with unusable pixels, the end of an earlier pass on another geometry: cmr.volume
    # end_slice_note, latest_stacks); volumes and mass are then lower bounds and a cine's coverage is not complete
    ends_left_out_mm: list[float] = field(default_factory=list)
    # the cardiac phases of the whole cycle as the images declare them (CardiacNumberOfImages (0018,1090), the
    # largest over the measured frames); None where no image declares it or the Volume was built elsewhere
    declared_phases: int | None = None
    # the acquisition phase number (1-based, the series' temporal order over all phases acquired, as a viewer numbers
    # them) of each phase of `pixels`: a phase left out at every slice for an image missing at one (cmr.volume
    # common_phases) leaves a gap, e.g. [.., 7, 9, ..], and so do phases an export dropped at every slice where the
    # images declare more (CardiacNumberOfImages) and their timing or temporal index places them on that cycle
    # (cmr.volume.acquisition_grid_numbers: [1, 9] for an ED + ES export); None: 1..phases (a Volume built elsewhere)
    phase_numbers: list[int] | None = None
    # the phases of the cycle `phase_numbers` count over: the phases acquired, those left out at every slice included,
    # or the declared CardiacNumberOfImages where the phases kept were placed on it; None: the phases of `pixels`
    acquired_phases: int | None = None
    # ms, per slice (the order of `positions`): the RR interval its headers give (NominalInterval (0018,1062),
    # RRIntervalTimeNominal (0020,9251), else 60000 / HeartRate (0018,1088); the median over its frames), None where
    # they give none; empty for a Volume built elsewhere. Each slice of a breath-hold cine has its own beats.
    slice_rr_ms: list[float | None] = field(default_factory=list)
    #: where the phases' TriggerTime order contradicts the order they were put in (volume.trigger_order_note), a
    #: timing note for the cine; None where they agree
    trigger_order_note: str | None = None

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(self.pixels.shape)  # type: ignore[return-value]

    def acquisition_phase_numbers(self) -> list[int]:
        """The 1-based acquisition phase number of each phase of `pixels` (`phase_numbers`, else 1..phases)."""
        phases = int(self.pixels.shape[0])
        numbers = self.phase_numbers
        return [int(n) for n in numbers] if numbers is not None and len(numbers) == phases \
            else list(range(1, phases + 1))

    @property
    def voxel_volume_ml(self) -> float:
        return self.pixel_spacing[0] * self.pixel_spacing[1] * self.slice_spacing / 1000.0
