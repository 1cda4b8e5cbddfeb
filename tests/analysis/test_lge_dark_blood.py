"""A dark-blood (blood-suppressed) LGE is warned and its large-scar-burden flag withheld (break37 finding 3: the
blood pool at 1.1 x the remote myocardium doubled %LGE, 10.7 -> 24.9 %, and raised the flag; the myocardium / blood
check read 0.952, under its 0.975 cut-off)."""
from __future__ import annotations

import numpy as np

from dicomnode.analysis.lge import DARK_BLOOD_NOTE, MIN_BLOOD_POSITION, blood_position, dark_blood_notes
from dicomnode.cmr.recognize import dark_blood_name
from dicomnode.labels import Label


def _stack(myocardium: float, blood: float, scar: float) -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros((2, 40, 40), dtype=np.uint8)
    labels[:, 10:30, 10:30] = Label.LV_MYOCARDIUM
    labels[:, 10:30, 10:13] = Label.SCAR
    labels[:, 15:25, 15:25] = Label.LV_BLOOD_POOL
    values = {Label.LV_MYOCARDIUM: myocardium, Label.LV_BLOOD_POOL: blood, Label.SCAR: scar}
    image = np.zeros(labels.shape, np.float32)
    for label, value in values.items():
        image[labels == label] = value
    return image, labels


def test_the_break37_dark_blood_stack_is_warned():
    # node segmentation of break37 dark_blood: myocardium 120, blood 126 (ratio 0.952), scar ~ 4 x the myocardium
    image, labels = _stack(120.0, 126.0, 500.0)
    assert blood_position(image, labels) < MIN_BLOOD_POSITION
    (warning,) = dark_blood_notes(image, labels, "tfl_LGE_SAX", "")
    assert warning.startswith(DARK_BLOOD_NOTE) and "large-scar-burden flag is withheld" in warning


def test_bright_blood_lge_is_not_warned_even_near_the_former_cut_off():
    assert dark_blood_notes(*_stack(80.0, 600.0, 650.0), "LGE_SAX") == []  # MyoPS-like magnitude
    # EMIDEC-like: myocardium 0.93 x the blood (the former check's range), the scar about as bright as the blood
    image, labels = _stack(93.0, 100.0, 105.0)
    assert blood_position(image, labels) > MIN_BLOOD_POSITION
    assert dark_blood_notes(image, labels, "LGE_SAX") == []


def test_no_bright_wall_or_too_small_regions_say_nothing():
    assert blood_position(*_stack(100.0, 200.0, 100.0)) is None  # no scar: the wall's bright end is the myocardium
    image, labels = _stack(100.0, 105.0, 300.0)
    labels[labels == Label.LV_BLOOD_POOL] = Label.BACKGROUND
    assert blood_position(image, labels) is None


def test_a_dark_blood_name_is_warned_whatever_the_pixels():
    (warning,) = dark_blood_notes(*_stack(80.0, 600.0, 650.0), "DB_PSIR_SAX", "")
    assert "'db'" in warning
    for name in ("dark blood LGE", "BlackBlood_PSIR", "FIDDLE", "T2prep_PSIR", "LGE_BB", "LGE schwarzes Blut"):
        assert dark_blood_name(name), name
    for name in ("tfl_LGE_SAX", "PSIR_SAX", "de_sax", "LGE_dbl_check"):
        assert dark_blood_name(name) is None, name
