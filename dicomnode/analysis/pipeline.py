"""The pipeline interface: an understood study in, result masks + numbers + summary blocks out.

The records a pipeline returns live in dicomnode.types (the bottom layer), so that cmr/ and inference/ can use
them without importing analysis/; they are re-exported here for the pipelines.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from dicomnode.types import AlgorithmInfo, AnalysisContext, Declined, PipelineResult, SegmentationResult

if TYPE_CHECKING:  # pragma: no cover
    from dicomnode.cmr.study import CMRStudy

__all__ = ["AlgorithmInfo", "AnalysisContext", "Declined", "Pipeline", "PipelineResult", "SegmentationResult"]


class Pipeline(Protocol):
    """A named analysis: `run` never raises for bad input, it returns a PipelineResult whose `declined` says why."""

    name: str

    def run(self, study: "CMRStudy", context: AnalysisContext) -> PipelineResult: ...
