"""An LGE whose healthy myocardium is not darker than its blood pool says so (break-emf finding 2: a post-contrast T1
map analysed as LGE reported 'LGE 0 %'; a map in ms has myocardium ~450 against blood ~300)."""
from __future__ import annotations

import numpy as np

from dicomnode.analysis.lge import NOT_LGE_CONTRAST_NOTE, contrast_notes
from dicomnode.labels import Label


def _stack(myocardium: float, blood: float, size: int = 10) -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros((2, 40, 40), dtype=np.uint8)
    labels[:, 10:30, 10:30] = Label.LV_MYOCARDIUM
    labels[:, 15:25, 15:25] = Label.LV_BLOOD_POOL
    image = np.where(labels == Label.LV_MYOCARDIUM, myocardium, 0.0)
    image = np.where(labels == Label.LV_BLOOD_POOL, blood, image).astype(np.float32)
    return image, labels


def test_a_post_contrast_t1_map_in_ms_is_warned():
    (warning,) = contrast_notes(*_stack(450.0, 300.0))
    assert "not clearly darker than the LV blood pool" in warning and "450 against 300" in warning


def test_a_ring_as_bright_as_the_blood_is_warned():
    image, labels = _stack(305.0, 300.0)
    image[:, :5, :5] = 1600.0
    (warning,) = contrast_notes(image, labels)
    assert "305 against 300" in warning


def test_the_node_ring_on_a_post_contrast_map_is_warned_and_the_brightest_real_lge_is_not():
    """The node's own segmentation of the rebreak-maps post-contrast maps: 296 against 300 (0.987); the highest
    ratio of real LGE with expert labels: EMIDEC Case_N014, 0.967."""
    (warning,) = contrast_notes(*_stack(296.0, 300.0))
    assert "0.99 x the blood" in warning
    assert contrast_notes(*_stack(96.7, 100.0)) == []


def test_real_lge_with_bright_fat_is_not_warned():
    """rebreak-maps finding 3: MyoPS Case3035 (blood 147, myocardium 63) beside fat that dominates the image range,
    and an EMIDEC-like stack whose myocardium is 0.95 x its blood, were flagged by the range-normalised measure."""
    image, labels = _stack(63.0, 147.0)
    image[:, :5, :] = 1200.0  # subcutaneous / epicardial fat
    assert contrast_notes(image, labels) == []
    image, labels = _stack(95.0, 100.0)
    image[:, :8, :] = 255.0
    assert contrast_notes(image, labels) == []


def test_psir_with_blood_not_positive():
    assert contrast_notes(*_stack(-300.0, -100.0)) == []
    assert contrast_notes(*_stack(0.0, -50.0))  # myocardium above a non-positive blood: warned


def test_lge_contrast_magnitude_and_psir_are_not_warned():
    assert contrast_notes(*_stack(80.0, 900.0)) == []  # magnitude: nulled myocardium, bright blood
    assert contrast_notes(*_stack(-150.0, 600.0)) == []  # PSIR: signed, myocardium below zero


def test_too_few_voxels_say_nothing():
    image, labels = _stack(450.0, 300.0)
    labels[labels == Label.LV_BLOOD_POOL] = Label.BACKGROUND
    assert contrast_notes(image, labels) == []


def test_the_warning_says_first_that_the_series_may_be_a_map():
    (warning,) = contrast_notes(*_stack(450.0, 300.0))
    assert warning.startswith(NOT_LGE_CONTRAST_NOTE + ": ") and "T1 map" in NOT_LGE_CONTRAST_NOTE


def test_the_contrast_warning_is_the_first_stack_warning_of_the_lge_block(datasets, tmp_path, monkeypatch):
    """Whatever else the stack showed (here a gap warning of the volume), the summary, SR and PDF begin with it."""
    import datetime as dt

    from dicomnode.analysis import lge
    from dicomnode.analysis.pipeline import AnalysisContext
    from dicomnode.cmr.study import load_studies
    from dicomnode.config import Config
    from dicomnode.devtools.make_study import make_study
    from dicomnode.inference import Runtime

    generated = make_study("emidec:Case_P043", tmp_path / "p043", "siemens", None, datasets=datasets)
    [study] = load_studies([generated.out_dir / "dicom"])
    load_volume = study.load_volume

    def with_a_geometry_warning(series, require_stack=True):  # CMRStudy.load_preferred loads through it
        volume = load_volume(series, require_stack)
        volume.warnings.append("a geometry warning of the stack")
        return volume

    monkeypatch.setattr(study, "load_volume", with_a_geometry_warning)
    monkeypatch.setattr(lge, "contrast_notes", lambda image, labels: [f"{NOT_LGE_CONTRAST_NOTE}: stub"])
    config, runtime = Config(), Runtime()
    result = lge.LGEPipeline(config, runtime).run(study, AnalysisContext(config=config, runtime=runtime,
                                                                         started_at=dt.datetime(2026, 11, 21)))
    warnings = result.summary["stack_warnings"]
    assert warnings[0] == f"{NOT_LGE_CONTRAST_NOTE}: stub"
    assert "a geometry warning of the stack" in warnings[1:]
    # the number behind the warning, which the SR gives with it (NOTLGE) where OHIF shows NUMs only
    checks = result.summary["input_checks"]
    segmentation = result.segmentations[0]
    image, labels = segmentation.volume.pixels[0], segmentation.labelmap[0]
    assert checks["blood_myocardium_ratio"] == round(lge.blood_myocardium_ratio(image, labels), 3) > 1.0
    assert checks["field_of_view_mm"] == round(min(lge.field_of_view_mm(image, segmentation.volume.pixel_spacing)), 3)
