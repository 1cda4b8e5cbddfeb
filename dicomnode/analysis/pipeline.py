"""The pipeline interface: an understood study in, result masks + numbers + summary blocks out."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from dicomnode.cmr.study import CMRStudy
    from dicomnode.cmr.types import AnalysisSeries, Volume
    from dicomnode.config import Config
    from dicomnode.inference import Runtime


@dataclass(frozen=True)
class AlgorithmInfo:
    """IHE AIR identification of one algorithm (model) version."""

    name: str  # e.g. "dicomnode-lge-unet"
    version: str  # e.g. "2026.11.21"
    manufacturer: str  # "dicomnode project"
    device_uid: str  # changes whenever the model changes (derived from the model file hash)
    description: str = ""


@dataclass
class SegmentationResult:
    """A label map on a source volume (labels per dicomnode.labels.Label).

    `labelmap` has the shape of `volume.pixels` restricted to `phases` (len(phases), slices, rows, cols).
    """

    series: "AnalysisSeries"
    volume: "Volume"
    labelmap: np.ndarray
    phases: list[int]  # indices into volume's phase axis that labelmap covers (cine: [ED, ES]; LGE: [0])
    phase_names: list[str]  # e.g. ["end diastole", "end systole"] or ["late enhancement"]
    algorithm: AlgorithmInfo
    pipeline: str  # "lge" | "cine"


@dataclass
class Declined:
    series_instance_uid: str | None
    reason: str

    def summary(self) -> dict:
        return {"series_instance_uid": self.series_instance_uid, "reason": self.reason}


@dataclass
class PipelineResult:
    """What one pipeline produced for one study."""

    name: str  # "lge" | "cine" | "suggestions"
    summary: dict | list | None  # the block for summary.json under `name`; None when declined
    segmentations: list[SegmentationResult] = field(default_factory=list)
    measurements: dict[str, Any] = field(default_factory=dict)  # extra detail for the SR / report
    declined: list[Declined] = field(default_factory=list)
    algorithms: list[AlgorithmInfo] = field(default_factory=list)


@dataclass
class AnalysisContext:
    config: "Config"
    runtime: "Runtime"
    started_at: dt.datetime  # Content Date/Time of every result object (IHE AIR)
    study_summary_so_far: dict = field(default_factory=dict)  # earlier pipelines' blocks (suggestions reads them)
    earlier_results: list[PipelineResult] = field(default_factory=list)


class Pipeline(Protocol):
    name: str

    def run(self, study: "CMRStudy", context: AnalysisContext) -> PipelineResult: ...
