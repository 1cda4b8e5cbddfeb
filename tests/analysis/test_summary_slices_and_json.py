"""summary.json is strict JSON (no NaN / Infinity: break2 finding 4) and its per-slice entries name their image
(position along the stack normal, source SOP Instance UID / frame, Instance Number: break2 finding 5)."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import numpy as np
import pytest

from dicomnode import strict_json
from dicomnode.analysis.cine import slice_images
from dicomnode.analysis.lge import LGEPipeline
from dicomnode.analysis.lge_metrics import NO_ENHANCED_REGION, fwhm_enhancement
from dicomnode.cmr.types import FrameRef
from dicomnode.config import Config


def _strict(text: str):
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")
    return json.loads(text, parse_constant=refuse)


def _ring(scar: bool) -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros((3, 64, 64), np.uint8)
    rows, cols = np.mgrid[:64, :64]
    radius = np.hypot(rows - 32, cols - 32)
    labels[:, radius < 16] = 2
    labels[:, radius < 10] = 1
    if scar:
        labels[:, (radius >= 10) & (radius < 16) & (cols > 40)] = 3
    image = np.random.default_rng(0).normal(1000, 50, labels.shape) + 2000 * (labels == 3) + 3000 * (labels == 1)
    image[:, :4] = 0.0  # air above the heart: FWHM needs a magnitude image's zero (lge_metrics.FWHM_MAX_FLOOR_FRACTION)
    return image, labels


def test_fwhm_without_an_enhanced_region_is_not_applicable_and_its_threshold_null():
    image, labels = _ring(scar=False)
    result = fwhm_enhancement(image, labels, 1.0)
    assert result.not_applicable == NO_ENHANCED_REGION and result.lge_percent == 0.0  # 0 % kept for evaluation
    summary = result.summary()
    assert summary["threshold"] is None
    _strict(json.dumps(summary, allow_nan=False))
    assert fwhm_enhancement(*_ring(scar=True), 1.0).not_applicable is None


def test_research_fwhm_on_a_stack_without_scar_says_not_applicable_with_the_reason():
    class Series:
        lge_kind = "magnitude"
        instances = []

    research = LGEPipeline.__new__(LGEPipeline)
    research.settings = Config.model_validate({"analysis": {"lge": {"threshold_methods": "always"}}}).analysis.lge
    research.card_metrics = {}
    image, labels = _ring(scar=False)
    _, fwhm = research._threshold_methods(image, labels, 0.01, (1.0, 1.0), Series())
    assert fwhm == {"lge_percent": None, "applicable": False, "reason": "no enhanced region to take a maximum from"}
    _strict(strict_json.dumps({"fwhm": fwhm}))


def test_strict_json_writes_non_finite_numbers_as_null_and_says_where(caplog):
    value = {"a": float("nan"), "b": [1.0, float("inf"), np.float64("-inf")], "c": (2, "x"), "d": {"e": 0.5}}
    with caplog.at_level(logging.WARNING, logger="dicomnode.strict_json"):
        text = strict_json.dumps(value, "summary.json", indent=2)
    assert _strict(text) == {"a": None, "b": [1.0, None, None], "c": [2, "x"], "d": {"e": 0.5}}
    assert "summary.json" in caplog.text and "$.a" in caplog.text and "$.b[1]" in caplog.text
    assert "NaN" not in text and "Infinity" not in text
    with pytest.raises(ValueError):  # the backstop itself refuses a bare NaN, should `finite` ever miss one
        json.dumps(float("nan"), allow_nan=False)


def test_no_json_writer_of_the_node_uses_plain_json_dumps_for_a_file():
    """Every JSON the node writes for others goes through strict_json (grep of json.dump in dicomnode/)."""
    from pathlib import Path
    import dicomnode
    root = Path(dicomnode.__file__).parent
    for path in ("process.py", "demo.py", "state.py", "inference/tensorrt_build.py", "analysis/report_bank.py"):
        text = (root / path).read_text()
        assert "strict_json.dumps(" in text, path
    assert " json.dumps(summary" not in (root / "process.py").read_text()


@dataclass
class _Instance:
    sop_instance_uid: str
    dataset: object


@dataclass
class _Series:
    instances: list = field(default_factory=list)


@dataclass
class _Volume:
    frames: list
    positions: np.ndarray
    orientation: np.ndarray = field(default_factory=lambda: np.array([1.0, 0, 0, 0, 1, 0]))


def test_slice_images_name_position_uid_frame_and_instance_number_in_volume_order():
    class Header:
        def __init__(self, number, series=None):
            self.InstanceNumber, self.SeriesNumber = number, series

    refs = [FrameRef("1.2.3", "1.2.840.10008.5.1.4.1.1.4", "1.2", None),
            FrameRef("1.2.4", "1.2.840.10008.5.1.4.1.1.4.1", "1.2", 3), FrameRef("1.2.5", "x", "1.2", None)]
    volume = _Volume(frames=[refs], positions=np.array([[0, 0, -20.0], [0, 0, -12.0], [0, 0, -4.004]]))
    series = _Series([_Instance("1.2.3", Header(7, 300)), _Instance("1.2.4", Header(1, "301")),
                      _Instance("1.2.5", Header(None))])
    found = slice_images(volume, 0, series)
    # SeriesNumber beside InstanceNumber: the image as a viewer names it ("S:300 I:7")
    assert found == [
        {"position_mm": -20.0, "sop_instance_uid": "1.2.3", "frame_number": None, "instance_number": 7,
         "series_number": 300},
        {"position_mm": -12.0, "sop_instance_uid": "1.2.4", "frame_number": 3, "instance_number": 1,
         "series_number": 301},
        {"position_mm": -4.0, "sop_instance_uid": "1.2.5", "frame_number": None, "instance_number": None,
         "series_number": None}]
    # the normal is row x column: another orientation gives the positions along it
    flipped = _Volume(frames=[refs], positions=volume.positions, orientation=np.array([0, 1.0, 0, 1, 0, 0]))
    assert [s["position_mm"] for s in slice_images(flipped)] == [20.0, 12.0, 4.0]


def test_the_cine_summary_names_each_slice_image_at_ed_and_es():
    from test_cine_pipeline import FakeRuntime, FakeStudy, FakeVolume, context, disc
    from dicomnode.analysis.cine import CinePipeline
    shape, spacing = (160, 160), (1.5, 1.5)
    radii = np.sqrt([20.0 ** 2 + (34.0 ** 2 - 20.0 ** 2) * (1 + np.cos(np.pi * (p / 4 if p <= 4 else (12 - p) / 8))) / 2
                     for p in range(12)])
    pixels = np.full((12, 3, *shape), 100.0, np.float32)
    for phase, radius in enumerate(radii):
        pixels[phase, :, disc(shape, (79.5, 79.5), radius, spacing)] = 400.0
    volume = FakeVolume(pixels, spacing, 8.0, trigger_times=[40.0 * p for p in range(12)])
    volume.positions = np.array([[0, 0, 8.0 * k] for k in range(3)])
    volume.frames = [[FrameRef(f"1.2.{p}.{k}", "x", "1.2", None) for k in range(3)] for p in range(12)]
    runtime = FakeRuntime()
    summary = CinePipeline(Config(), runtime).run(FakeStudy(volume), context(runtime)).summary
    ed, es = summary["ed_phase"], summary["es_phase"]
    assert [s["slice_index"] for s in summary["slices"]] == [0, 1, 2]
    assert [s["position_mm"] for s in summary["slices"]] == [0.0, 8.0, 16.0]
    assert [s["ed"]["sop_instance_uid"] for s in summary["slices"]] == [f"1.2.{ed}.{k}" for k in range(3)]
    assert [s["es"]["sop_instance_uid"] for s in summary["slices"]] == [f"1.2.{es}.{k}" for k in range(3)]
    _strict(strict_json.dumps(summary))
