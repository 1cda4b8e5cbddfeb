"""Cine measurements on synthetic label maps whose volumes, ED/ES, EF, mass and BSA are known by construction."""
import math

import numpy as np
import pytest

from dicomnode.analysis.cine_metrics import (PAPILLARY_MUSCLES, body_surface_area_m2, ejection_fraction_percent,
                                             find_ed_es, measure_cine, myocardial_mass_g, normal_range_flags,
                                             volume_curve_ml)
from dicomnode.labels import Label


def synthetic_cine(lv_voxels_per_phase, rv_voxels_per_phase, myo_voxels=50, shape=(3, 20, 20)):
    """Label maps (phases, slices, rows, cols) with exact voxel counts per label and phase."""
    maps = np.zeros((len(lv_voxels_per_phase),) + shape, dtype=np.uint8)
    for phase, (lv, rv) in enumerate(zip(lv_voxels_per_phase, rv_voxels_per_phase)):
        flat = maps[phase].reshape(-1)
        flat[:lv] = Label.LV_BLOOD_POOL
        flat[lv:lv + myo_voxels] = Label.LV_MYOCARDIUM
        flat[lv + myo_voxels:lv + myo_voxels + rv] = Label.RV_BLOOD_POOL
    return maps


def test_volume_curve_counts_voxels_times_voxel_volume():
    maps = synthetic_cine([100, 60, 80], [120, 70, 90])
    assert volume_curve_ml(maps, [Label.LV_BLOOD_POOL], 0.5).tolist() == [50.0, 30.0, 40.0]
    assert volume_curve_ml(maps, [Label.RV_BLOOD_POOL], 0.5).tolist() == [60.0, 35.0, 45.0]


def test_volume_curve_refuses_wrong_shape_and_voxel_volume():
    with pytest.raises(ValueError, match="phases, slices"):
        volume_curve_ml(np.zeros((3, 4, 4)), [1], 1.0)
    with pytest.raises(ValueError, match="voxel_volume_ml"):
        volume_curve_ml(np.zeros((1, 1, 4, 4)), [1], 0.0)


def test_ed_is_max_and_es_is_min_of_the_lv_curve():
    assert find_ed_es([70.0, 120.0, 90.0, 40.0, 60.0]) == (1, 3)
    with pytest.raises(ValueError):
        find_ed_es([])


def test_ejection_fraction():
    assert ejection_fraction_percent(150.0, 50.0) == pytest.approx(200 / 3)
    assert ejection_fraction_percent(0.0, 0.0) is None
    with pytest.raises(ValueError):
        ejection_fraction_percent(-1.0, 0.0)


def test_mass_counts_every_myocardium_label_with_density():
    labelmap = np.array([[Label.LV_MYOCARDIUM, Label.SCAR, Label.MVO, Label.LV_BLOOD_POOL, Label.RV_BLOOD_POOL]])
    assert myocardial_mass_g(labelmap, 2.0) == pytest.approx(3 * 2.0 * 1.05)
    assert myocardial_mass_g(labelmap, 2.0, density_g_per_ml=1.0) == pytest.approx(6.0)
    with pytest.raises(ValueError, match="density"):
        myocardial_mass_g(labelmap, 2.0, density_g_per_ml=0)


def test_bsa_formulas_match_hand_computation():
    assert body_surface_area_m2(1.80, 80.0, "mosteller") == pytest.approx(math.sqrt(180 * 80 / 3600))  # 2.0
    assert body_surface_area_m2(1.80, 80.0, "dubois") == pytest.approx(0.007184 * 80 ** 0.425 * 180 ** 0.725)
    with pytest.raises(ValueError, match="centimetres"):
        body_surface_area_m2(180.0, 80.0)
    with pytest.raises(ValueError, match="unknown BSA"):
        body_surface_area_m2(1.8, 80.0, "haycock")  # type: ignore[arg-type]


def test_measure_cine_end_to_end_known_answers():
    # voxel 1 mL; LV 150 -> 50 voxels (EF 66.7 %), RV 160 at ED phase 1, 80 at ES phase 3; myo 100 voxels
    maps = synthetic_cine([120, 150, 100, 50, 90], [130, 160, 120, 80, 110], myo_voxels=100, shape=(4, 30, 30))
    result = measure_cine(maps, 1.0, height_m=1.80, weight_kg=80.0, sex="M")
    assert (result.ed_phase, result.es_phase) == (1, 3)
    assert (result.lv_edv_ml, result.lv_esv_ml, result.lv_sv_ml) == (150.0, 50.0, 100.0)
    assert result.lv_ef_percent == pytest.approx(200 / 3)
    assert (result.rv_edv_ml, result.rv_esv_ml, result.rv_sv_ml) == (160.0, 80.0, 80.0)
    assert result.rv_ef_percent == pytest.approx(50.0)
    assert result.lv_mass_g == pytest.approx(105.0)
    assert result.bsa_m2 == pytest.approx(2.0) and result.bsa_formula == "mosteller"
    assert result.indexed["lv_edvi_ml_m2"] == pytest.approx(75.0)
    assert result.indexed["lv_mass_index_g_m2"] == pytest.approx(52.5)
    summary = result.summary()
    assert set(summary) == {"lv_edv_ml", "lv_esv_ml", "lv_sv_ml", "lv_ef_percent", "lv_mass_g", "rv_edv_ml",
                            "rv_esv_ml", "rv_sv_ml", "rv_ef_percent", "ed_phase", "es_phase"}
    assert result.flags == []  # every value inside the male normal ranges
    assert PAPILLARY_MUSCLES == "cavity"


def test_no_bsa_without_height_or_weight():
    maps = synthetic_cine([100, 50], [100, 50])
    result = measure_cine(maps, 1.0, height_m=None, weight_kg=70.0)
    assert result.bsa_m2 is None and result.indexed == {}


def test_flags_by_sex_and_against_both_when_unknown():
    low_ef = normal_range_flags({"lv_ef_percent": 35.0}, "F")
    assert len(low_ef) == 1 and low_ef[0].startswith("LVEF below normal range")
    assert normal_range_flags({"lv_ef_percent": 67.0}, "M") == []
    # EDV 200 mL: above the women's range (86-178), inside the men's (106-214)
    assert normal_range_flags({"lv_edv_ml": 200.0}, "M") == []
    assert normal_range_flags({"lv_edv_ml": 200.0}, "F")[0].startswith("LV EDV above normal range")
    unknown = normal_range_flags({"lv_edv_ml": 200.0}, None)
    assert len(unknown) == 1 and "one sex" in unknown[0] and "above for women" in unknown[0]
    both = normal_range_flags({"lv_edv_ml": 260.0}, "")
    assert both[0].startswith("LV EDV above normal range") and "men" in both[0] and "women" in both[0]
