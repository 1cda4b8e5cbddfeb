"""A dark-blood (blood-suppressed) LGE is warned and its large-scar-burden flag withheld (break37 finding 3: the
blood pool at 1.1 x the remote myocardium doubled %LGE, 10.7 -> 24.9 %, and raised the flag; the myocardium / blood
check read 0.952, under its 0.975 cut-off)."""
from __future__ import annotations

import numpy as np

from dicomnode.analysis.lge import (DARK_BLOOD_NOTE, MAX_DARK_BLOOD_RATIO, MIN_BLOOD_POSITION, NAME_NOT_PIXELS_NOTE,
                                   blood_myocardium_ratio, blood_position, dark_blood_notes)
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


def test_a_strong_dark_blood_name_is_warned_unless_the_pixels_clearly_say_bright_blood():
    (warning,) = dark_blood_notes(*_stack(120.0, 150.0, 300.0), "dark blood PSIR", "")  # position 0.17: unclear
    assert warning.startswith(DARK_BLOOD_NOTE) and "'dark blood'" in warning
    (note,) = dark_blood_notes(*_stack(80.0, 600.0, 650.0), "BlackBlood_PSIR", "")  # position 0.91
    assert note.startswith(NAME_NOT_PIXELS_NOTE) and "flag is kept" in note
    for name in ("dark blood LGE", "BlackBlood_PSIR", "FIDDLE", "LGE schwarzes Blut", "blood suppressed PSIR"):
        assert dark_blood_name(name), name
    for name in ("tfl_LGE_SAX", "PSIR_SAX", "de_sax", "LGE_dbl_check", "LGE_PSIR_DB_2", "LGE SAX BB"):
        assert dark_blood_name(name) is None, name


def test_a_weak_name_token_needs_pixel_support():
    # break37b finding 4: 'DB' / 'BB' / 'T2prep' alone called Case3004 (blood_position 0.64) dark-blood
    for name, protocol in (("LGE_PSIR_DB_2", ""), ("LGE SAX BB", ""), ("tfl_LGE_SAX", "DB cardiac LGE"),
                           ("PSIR T2prep LGE", "")):
        assert dark_blood_name(name, protocol, weak=True), name
        (note,) = dark_blood_notes(*_stack(80.0, 600.0, 650.0), name, protocol)
        assert note.startswith(NAME_NOT_PIXELS_NOTE), note
    (warning,) = dark_blood_notes(*_stack(120.0, 170.0, 400.0), "LGE_PSIR_DB_2", "")  # position 0.18, ratio 1.42
    assert warning.startswith(DARK_BLOOD_NOTE) and "'db' with the pixels' support" in warning


def test_blood_twice_the_myocardium_beside_a_bright_scar_is_not_dark_blood():
    # break37b finding 3 (grey_blood2): myocardium 134, blood 273 (2.04 x), scar x 3: blood_position 0.107
    image, labels = _stack(134.0, 273.0, 1430.0)
    assert blood_position(image, labels) < MIN_BLOOD_POSITION
    assert blood_myocardium_ratio(image, labels) > MAX_DARK_BLOOD_RATIO
    assert dark_blood_notes(image, labels, "tfl_LGE_SAX", "") == []
