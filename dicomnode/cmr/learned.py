"""Learned sequence recognizer (cine / LGE / localizer from pixels, ONNX Runtime): a fallback for series without tags.

Not part of `default_registry()`. `learned_registry(models_dir)` returns the rule registry plus this recognizer,
which answers with a confidence that stays below the rules' whenever the series carries the tags they read
(ScanningSequence, SequenceVariant, SequenceName, description/protocol, InversionTime, several trigger times), so
the rules decide when they can and the model only decides for series that lack those tags.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pydicom

from dicomnode.cmr.intensity import magnitude_floor_shift, normalise_slices
from dicomnode.cmr.frames import FrameInfo
from dicomnode.cmr.recognize import (RecognizerRegistry, SeriesEvidence, StudyContext, default_registry,
                                    phase_sensitive_marker)
from dicomnode.cmr.resample import InplaneResampler
from dicomnode.cmr.types import Recognition
from dicomnode.cmr.volume import as_monochrome2

log = logging.getLogger("dicomnode.cmr")

MODEL_NAME = "view_classifier"
#: confidence scale when the rule tags are present (keeps the answer below every rule answer, the lowest is 0.4)
TAGGED_SCALE = 0.35
#: confidence scale when they are missing
UNTAGGED_SCALE = 0.9


def tags_missing(evidence: SeriesEvidence) -> bool:
    """True when none of the tags the sequence rules rely on is present."""
    return not (evidence.scanning_sequence or evidence.sequence_variant or evidence.sequence_name.strip()
                or evidence.description.strip() or evidence.protocol.strip() or evidence.inversion_times
                or len(evidence.trigger_times) >= 2)


class LearnedSequenceRecognizer:
    """Runs engines/models/view_classifier.onnx on a few frames of the series and averages the class probabilities."""

    name, aspect = "learned-sequence", "sequence"

    def __init__(self, model_path: Path, card: dict, frames_per_series: int = 6):
        import onnxruntime  # lazy: heavy (~0.5 s), and only a session needs it

        try:
            self.classes = tuple(card["output"]["classes"])
            self.spacing_mm = float(card["input"]["spacing_mm"])
            self.canvas = int(card["input"]["canvas_size"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{model_path}: model card lacks output.classes / input.spacing_mm / input.canvas_size") from error
        if frames_per_series < 1:
            raise ValueError(f"frames_per_series must be >= 1, got {frames_per_series}")
        self.frames_per_series = frames_per_series
        self.card = card
        self.session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])

    @classmethod
    def from_models_dir(cls, models_dir: Path, **kwargs) -> "LearnedSequenceRecognizer":
        models_dir = Path(models_dir)
        model_path, card_path = models_dir / f"{MODEL_NAME}.onnx", models_dir / f"{MODEL_NAME}.json"
        if not model_path.is_file() or not card_path.is_file():
            raise FileNotFoundError(f"{MODEL_NAME}.onnx and {MODEL_NAME}.json must both be in {models_dir}")
        return cls(model_path, json.loads(card_path.read_text()), **kwargs)

    def preprocess(self, pixels: np.ndarray, spacing_rc: tuple[float, float]) -> np.ndarray:
        """One 2-D frame (rows, cols) -> normalised (1, canvas, canvas) model input."""
        resampler = InplaneResampler(pixels.shape, spacing_rc, self.spacing_mm, self.canvas)
        return normalise_slices(resampler.forward(np.asarray(pixels, np.float32)))[None]

    def classify(self, frames: list[tuple[np.ndarray, tuple[float, float]]]) -> np.ndarray:
        """(pixels, pixel spacing) per frame -> class probabilities (N, classes)."""
        batch = np.stack([self.preprocess(p, s) for p, s in frames]).astype(np.float32)
        return self.session.run(None, {"image": batch})[0]

    def _sample_frames(self, evidence: SeriesEvidence) -> list[FrameInfo]:
        frames = [f for f in evidence.frames if f.pixel_spacing is not None]
        if len(frames) <= self.frames_per_series:
            return frames
        return [frames[i] for i in np.linspace(0, len(frames) - 1, self.frames_per_series).round().astype(int)]

    def recognize(self, evidence: SeriesEvidence, context: StudyContext) -> Recognition | None:
        frames = self._sample_frames(evidence)
        if not frames:
            return None
        inputs = []
        for frame in frames:
            try:
                dataset = pydicom.dcmread(str(frame.header.path))
                array = as_monochrome2(dataset.pixel_array, dataset)  # what the model saw in training
            except Exception as error:  # unreadable pixels: the rules still answer
                log.warning("learned recognizer cannot read pixels of %s: %s", frame.header.path, error)
                return None
            pixels = array[frame.frame_index] if array.ndim == 3 else array
            slope, intercept = frame.rescale
            inputs.append((pixels.astype(np.float32) * slope + intercept, frame.pixel_spacing))
        # a magnitude series below 0 carries an offset that the normalisation's clip at 0 would flatten: one shift for
        # all its frames (intensity.magnitude_floor_shift); a phase-sensitive or phase image keeps its sign
        shift = 0.0 if phase_sensitive_marker(evidence) else magnitude_floor_shift(
            np.concatenate([p.ravel() for p, _ in inputs]))
        if shift:
            inputs = [(p + np.float32(shift), s) for p, s in inputs]
        mean = self.classify(inputs).mean(axis=0)
        best = int(np.argmax(mean))
        missing = tags_missing(evidence)
        confidence = float(mean[best]) * (UNTAGGED_SCALE if missing else TAGGED_SCALE)
        evidence_text = [f"{MODEL_NAME} on {len(inputs)} frame(s): " +
                         ", ".join(f"{c} {p:.2f}" for c, p in zip(self.classes, mean)),
                         "sequence tags missing: model decides" if missing else "sequence tags present: rules outrank the model"]
        return Recognition(self.classes[best], confidence, evidence_text)


def learned_registry(models_dir: Path, **kwargs) -> RecognizerRegistry:
    """default_registry() plus the learned sequence recognizer from models_dir (view_classifier.onnx + .json).

    Use it where series arrive with stripped or missing sequence tags (anonymised exports, secondary captures):
    `load_studies(paths, registry=learned_registry(Path("engines/models")))`.
    """
    registry = default_registry()
    registry.register(LearnedSequenceRecognizer.from_models_dir(models_dir, **kwargs))
    return registry
