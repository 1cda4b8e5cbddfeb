"""Recognizer registry (a learned model can outvote the rules) and geometry-based view rules on synthetic headers."""
from __future__ import annotations

import copy

import numpy as np
from pydicom.uid import generate_uid
import pytest

from dicomnode.cmr import Recognition, RecognizerRegistry, default_registry, understand_study
from dicomnode.cmr.grouping import read_header
from dicomnode.cmr.recognize import CANONICAL_LONG_AXIS
from dicomnode.devtools.make_study import SAX_ORIENTATION
from cmr_helpers import generated  # noqa: F401 (fixture)


def _headers(study):
    return [read_header(p) for p in study.paths]


def _clone(header, series_suffix: str, series_number: int, index: int, **attributes):
    clone = copy.copy(header)
    clone.dataset = copy.deepcopy(header.dataset)
    # derived UIDs stay valid (at most 64 characters, PS3.5 9.1): malformed ones are declined
    clone.sop_instance_uid = clone.dataset.SOPInstanceUID = generate_uid(
        entropy_srcs=[header.sop_instance_uid, str(series_number), str(index)])
    clone.series_instance_uid = clone.dataset.SeriesInstanceUID = generate_uid(
        entropy_srcs=[header.series_instance_uid, series_suffix])
    clone.dataset.SeriesNumber = series_number
    for keyword, value in attributes.items():
        setattr(clone.dataset, keyword, value)
    return clone


def _long_axis_plane(rotation_deg: float, through: np.ndarray, size=(256, 256), spacing=1.5):
    """Orientation + position of a plane containing the SAX normal, rotated about it from the vertical long axis."""
    axis = np.cross(SAX_ORIENTATION[:3], SAX_ORIENTATION[3:])
    axial = np.array([axis[0], axis[1], 0.0])
    reference = np.cross([0, 0, 1.0], axial / np.linalg.norm(axial))
    reference -= axis * np.dot(reference, axis)
    reference /= np.linalg.norm(reference)
    other = np.cross(axis, reference)
    angle = np.radians(rotation_deg)
    normal = np.cos(angle) * reference + np.sin(angle) * other
    row_dir = axis
    col_dir = np.cross(normal, row_dir)
    position = through - row_dir * spacing * (size[1] - 1) / 2 - col_dir * spacing * (size[0] - 1) / 2
    return [f"{v:.6f}" for v in np.concatenate([row_dir, col_dir])], [f"{v:.4f}" for v in position]


@pytest.mark.parametrize("rotation,expected", [(0, "2ch"), (90, "4ch"), (45, "3ch")])
def test_long_axis_view_from_geometry_relative_to_the_sax_stack(generated, rotation, expected):
    headers = _headers(generated[("lge", "ge", None)])
    sax = [h for h in headers if "psir" in h.path.name]
    centre = np.mean([[float(v) for v in h.dataset.ImagePositionPatient] for h in sax], axis=0)
    centre += (SAX_ORIENTATION[:3] + SAX_ORIENTATION[3:]) * 1.5 * 127.5
    orientation, position = _long_axis_plane(rotation, centre)
    lax = _clone(sax[0], ".77", 77, 0, ImageOrientationPatient=orientation, ImagePositionPatient=position,
                 SeriesDescription="")
    study = understand_study(sax + [lax])
    view = {s.series_number: s.view for s in study.series}[77]
    assert view.value == expected, view.evidence
    assert any("passes" in e and "SAX stack centre" in e for e in view.evidence)
    assert study.preferred("lge").view.value == "sax"
    assert any("long-axis plane(s) cross the stack" in e for e in study.preferred("lge").view.evidence)


def test_canonical_long_axis_is_close_to_the_real_sunnybrook_sax_normal():
    normal = np.cross(SAX_ORIENTATION[:3], SAX_ORIENTATION[3:])
    assert np.degrees(np.arccos(abs(normal @ CANONICAL_LONG_AXIS))) < 25


class _LearnedStub:
    """Stands in for a learned classifier: always answers T1 map with high confidence."""

    name, aspect = "learned-stub", "sequence"

    def recognize(self, evidence, context):
        return Recognition("t1map", 0.99, ["model says so"])


def test_registry_lets_a_learned_recognizer_outvote_rules(generated):
    headers = _headers(generated[("cine", "ge", None)])
    registry = default_registry()
    registry.register(_LearnedStub())
    (series,) = understand_study(headers, registry).series
    assert series.sequence.value == "t1map" and series.sequence.evidence == ["[learned-stub] model says so"]
    with pytest.raises(ValueError, match="aspect"):
        RecognizerRegistry().register(type("Bad", (), {"name": "bad", "aspect": "colour"})())


def test_unknown_is_other_with_zero_confidence(generated):
    headers = _headers(generated[("cine", "ge", None)])
    plain = [_clone(h, ".5", 90, i, ScanningSequence="SE", SequenceVariant="NONE", EchoTime="12", TriggerTime="0",
                    CardiacNumberOfImages=0, ImageType=["ORIGINAL", "PRIMARY", "OTHER"], SeriesDescription="")
             for i, h in enumerate(headers) if int(h.dataset.TemporalPositionIdentifier) == 1]
    (series,) = understand_study(plain).series
    assert series.sequence.value == "other" and series.sequence.confidence == 0.0
    assert "no sequence rule matched" in series.sequence.evidence[0]


def test_t1_map_from_image_type(generated):
    headers = [h for h in _headers(generated[("lge", "ge", None)]) if "magnitude" in h.path.name]
    maps = [_clone(h, ".6", 60, i, ImageType=["DERIVED", "PRIMARY", "T1 MAP", "NONE"], SeriesDescription="MOLLI T1 map")
            for i, h in enumerate(headers)]
    (series,) = understand_study(maps).series
    assert series.sequence.value == "t1map" and series.sequence.confidence >= 0.85
