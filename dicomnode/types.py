"""Records shared by every stage, at the bottom of the layering (they import nothing from dicomnode at run time).

One study travels the stages as these records: `Declined` (cmr, analysis), `SegmentationResult` and
`PipelineResult` (analysis -> results), `StudyOutcome` (analysis -> study path), `ResultObject` and `OutboxItem`
(study path -> state -> dispatch). The layer order is declared in scripts/check_layers.py.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - annotations only; these layers sit above this module
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
    #: node labels whose segmentation the model card does not validate (LGE: MVO, summary lge.mvo_validation): the
    #: SEG names their segments "not validated"
    unvalidated_labels: tuple[int, ...] = ()
    #: the other models that decided this label map (LGE: the localiser that chose the crop `algorithm` segmented),
    #: credited after `algorithm` in the SEG's Contributing Equipment (IHE AIR)
    contributing: tuple[AlgorithmInfo, ...] = ()
    #: the label map is written for review only (LGE numbers withheld, summary `lge.determined` false): the SEG says
    #: so in its series description and segment labels
    unreliable: bool = False

    @property
    def key(self) -> str:
        """Names this segmentation within its study: the pipeline and the analysed series' stable key; the SR
        finds the SEG(s) written for it under this key."""
        return f"{self.pipeline}:{self.series.key}"


@dataclass
class Declined:
    """Why a series (None: the whole study) was not analysed or not fully; goes into summary.json `declined`."""

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
    #: top-level keys beside `name` in the study's summary.json entry (e.g. "suggestions_note"; README)
    summary_extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class AnalysisContext:
    """What every pipeline of one study run sees besides the study."""

    config: "Config"
    runtime: "Runtime"
    started_at: dt.datetime  # Content Date/Time of every result object (IHE AIR)
    study_summary_so_far: dict = field(default_factory=dict)  # earlier pipelines' blocks (suggestions reads them)
    earlier_results: list[PipelineResult] = field(default_factory=list)


@dataclass
class StudyOutcome:
    """One study analysed: its summary.json entry (without `outputs`, which the study path fills in once the
    objects are written), the result objects (pydicom Datasets) to store and send, seconds per pipeline, and the
    node's own failures (a pipeline that could not load or raised: not the input's fault, so worth re-running)."""

    summary: dict
    datasets: list = field(default_factory=list)
    durations: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


class ResultObject(NamedTuple):
    """A result object written durably under the storage folder (a row of the state's `results` table)."""

    sop_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    path: str  # relative to the storage folder
    #: the one outbox destination it goes to (a rejection note: study_path.with_rejection_note), None: every one
    destination: str | None = None


@dataclass(frozen=True)
class OutboxItem:
    """One send to queue: a result object to one destination (a row of the state's `outbox` table)."""

    destination: str  # the configured destination's name, or "sender"
    ae_title: str
    host: str
    port: int
    sop_instance_uid: str
    path: str  # relative to the storage folder
