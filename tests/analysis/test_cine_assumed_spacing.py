"""A cine whose own header states an assumed pixel or slice spacing warns that its mL, g and mm are nominal, as the
LGE did alone (review45 #8); either word order of the header text counts."""
from __future__ import annotations

import types

import numpy as np
import pydicom
import pytest

from dicomnode.analysis.cine import ASSUMED_GEOMETRY_NOTE, CinePipeline, assumed_spacing_attributes
from dicomnode.analysis.lge import ASSUMED_GEOMETRY_NOTE as LGE_NOTE
from dicomnode.analysis.lge import assumed_geometry_notes as lge_notes
from dicomnode.config import Config
from test_cine_pipeline import FakeRuntime, FakeStudy, FakeVolume, context, disc


def _series(**attributes):
    dataset = pydicom.Dataset()
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    return types.SimpleNamespace(series_instance_uid="1.2.3.4", instances=[types.SimpleNamespace(dataset=dataset)])


class _StudyOf(FakeStudy):
    def __init__(self, volume, series):
        super().__init__(volume)
        self.series = series

    def preferred(self, sequence, view="sax"):
        self.asked.append((sequence, view))
        return self.series


def _cine_warnings(series) -> list[str]:
    shape, spacing = (160, 160), (1.5, 1.5)
    pixels = np.full((12, 3, *shape), 100.0, np.float32)
    for phase in range(12):
        pixels[phase, :, disc(shape, (79.5, 79.5), 34.0 - 14.0 * np.sin(np.pi * phase / 12), spacing)] = 400.0
    volume = FakeVolume(pixels, spacing, 8.0, trigger_times=[40.0 * p for p in range(12)])
    runtime = FakeRuntime()
    result = CinePipeline(Config(), runtime).run(_StudyOf(volume, series), context(runtime))
    assert not result.declined
    return result.summary["stack_warnings"]


def test_a_cine_stating_an_assumed_spacing_warns_that_its_volumes_and_mass_are_nominal():
    stated = _series(DerivationDescription="converted from PNG; ASSUMED pixel spacing 1.5 x 1.5 mm")
    note = ASSUMED_GEOMETRY_NOTE.format(where="DerivationDescription")
    assert note in _cine_warnings(stated)
    assert "mL, g and mm are nominal" in note and "%LGE" not in note
    assert not any("ASSUMED" in w for w in _cine_warnings(_series(ImageComments="TI 100")))


@pytest.mark.parametrize("text", ["ASSUMED pixel spacing 1.2 mm", "slice spacing assumed (10 mm)",
                                  "pixel spacing was Assumed"])
def test_either_word_order_states_an_assumed_spacing(text):
    assert assumed_spacing_attributes(_series(ImageComments=text)) == ["ImageComments"]
    assert lge_notes(_series(ImageComments=text)) == [LGE_NOTE.format(where="ImageComments")]


@pytest.mark.parametrize("text", ["TI 100", "assumed; spacing 8 mm", "pixel spacing 1.4 mm"])
def test_text_that_does_not_say_the_spacing_was_assumed_is_no_warning(text):
    assert assumed_spacing_attributes(_series(ImageComments=text)) == []
