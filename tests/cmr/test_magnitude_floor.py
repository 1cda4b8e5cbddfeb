"""A magnitude series stored with a negative offset (RescaleIntercept below 0) reaches the models as it would without
the offset; a series whose values are all >= 0 reaches them exactly as before (break44b finding 1)."""
from __future__ import annotations

import numpy as np
import pydicom
import pytest

from dicomnode.cmr.intensity import magnitude_floor_note, magnitude_floor_shift, normalise_slices


def three_level_slices() -> np.ndarray:
    """(2, 64, 64) slices: background 0, a wall at 150, a pool at 400, a little noise (stored values, all >= 0)."""
    rng = np.random.default_rng(4)
    rows, cols = np.mgrid[:64, :64]
    radius = np.hypot(rows - 32, cols - 30)
    image = np.where(radius < 10, 400.0, np.where(radius < 16, 150.0, 0.0))
    return np.stack([image, image[::-1]]).astype(np.float32) + rng.integers(0, 20, (2, 64, 64)).astype(np.float32)


def test_a_series_without_negative_values_is_not_shifted():
    slices = three_level_slices()
    assert magnitude_floor_shift(slices) == 0.0
    assert magnitude_floor_shift(slices + 200) == 0.0
    assert magnitude_floor_shift(np.zeros((2, 4, 4))) == 0.0
    assert magnitude_floor_shift(np.full((3,), np.nan)) == 0.0


@pytest.mark.parametrize("intercept", [-300.0, -1000.0])
def test_an_offset_below_zero_is_undone_and_the_model_input_is_the_same(intercept):
    stored = three_level_slices()
    rescaled = stored + np.float32(intercept)
    # the clip at 0 of the models' normalisation flattens the wall into the background: a different image
    assert not np.allclose(normalise_slices(rescaled), normalise_slices(stored), atol=1e-3)
    shift = magnitude_floor_shift(rescaled)
    assert shift == pytest.approx(-float(rescaled.min()))
    assert np.allclose(normalise_slices(rescaled + np.float32(shift)), normalise_slices(stored), atol=1e-5)
    # a scale as well (RescaleSlope 0.5)
    scaled = stored * np.float32(0.5) + np.float32(intercept)
    assert np.allclose(normalise_slices(scaled + np.float32(magnitude_floor_shift(scaled))), normalise_slices(stored),
                       atol=1e-4)


def test_one_shift_for_the_whole_series():
    stored = three_level_slices()
    stored[1] += 50  # the second slice's darkest value is 50 above the first's
    shifted = stored - 300
    shift = magnitude_floor_shift(shifted)
    assert np.array_equal(shifted + np.float32(shift), stored)


def test_the_note_names_the_offset_and_the_intercept():
    note = magnitude_floor_note(300.0, "cine", [-300.0, -300.0])
    assert note.startswith("negative values in a magnitude cine") and "-300" in note and "RescaleIntercept -300" in note
    assert "+300" in note
    assert "RescaleIntercept" not in magnitude_floor_note(12.5, "LGE", [])


# ------------------------------------------------------------------ the learned sequence recognizer
def test_the_learned_recognizer_reads_a_cine_with_a_negative_intercept_as_without(datasets, tmp_path):
    from pathlib import Path

    from dicomnode.cmr import load_studies
    from dicomnode.cmr.learned import learned_registry

    models = Path(__file__).resolve().parents[2] / "engines" / "models"
    source = datasets / "sunnybrook-scd" / "dicoms" / "SCD0000301"
    answers = {}
    for intercept in (None, -300):
        folder = tmp_path / f"intercept{intercept}"
        folder.mkdir()
        for number in range(1, 41):  # two slice positions x 20 phases, sequence tags stripped: the model decides
            ds = pydicom.dcmread(str(source / f"{number}.dcm"))
            for keyword in ("ScanningSequence", "SequenceVariant", "SequenceName", "SeriesDescription", "ProtocolName",
                            "TriggerTime", "CardiacNumberOfImages", "InversionTime", "ImageType"):
                if keyword in ds:
                    delattr(ds, keyword)
            if intercept is not None:  # the same stored pixels, every value 300 lower
                ds.RescaleSlope, ds.RescaleIntercept = "1", str(intercept)
            ds.save_as(folder / f"{number}.dcm")
        [series] = load_studies([folder], learned_registry(models))[0].series
        answers[intercept] = series.sequence
    assert answers[-300].value == answers[None].value == "cine"
    model_line = [e for e in answers[None].evidence if "view_classifier on" in e]
    assert model_line and model_line == [e for e in answers[-300].evidence if "view_classifier on" in e]
    assert answers[-300].confidence == pytest.approx(answers[None].confidence, abs=1e-6)
