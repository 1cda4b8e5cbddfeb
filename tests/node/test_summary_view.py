"""The stdout table of `process` and `demo`: threshold methods read "not applicable", never "n/a %"."""
from __future__ import annotations

from dicomnode.analysis.cine_metrics import COVERAGE_CAVEAT
from dicomnode.summary_view import print_summary_table


def _study(nsd, fwhm):
    return {"studies": [{"study_instance_uid": "1.2.3", "series": [], "outputs": [], "lge": {
        "scar_volume_ml": 10.0, "mvo_volume_ml": 1.0, "myocardium_volume_ml": 100.0, "lv_mass_g": 105.0,
        "lge_percent": 10.0, "large_scar_burden": False, "nsd": nsd, "fwhm": fwhm}}]}


def test_methods_that_do_not_apply_say_so_and_numbers_keep_their_unit(capsys):
    print_summary_table(_study({"lge_percent": None, "applicable": False, "reason": "8-bit"}, {"lge_percent": 4.56}))
    out = capsys.readouterr().out
    assert "n-SD not applicable" in out and "FWHM 4.6 %" in out and "n/a %" not in out


def test_cine_phases_are_counted_from_1_as_on_the_report(capsys):
    cine = {"lv_edv_ml": 224.0, "lv_esv_ml": 180.0, "lv_sv_ml": 44.0, "lv_ef_percent": 19.6, "lv_mass_g": 145.0,
            "rv_edv_ml": 97.0, "rv_esv_ml": 43.0, "rv_sv_ml": 54.0, "rv_ef_percent": 55.0, "ed_phase": 18,
            "es_phase": 6, "lv_volume_curve_ml": [200.0] * 20}
    print_summary_table({"studies": [{"study_instance_uid": "1.2.3", "series": [], "outputs": [], "cine": cine}]})
    assert "(ED phase 19, ES phase 7 of 20, counted from 1 as the report)" in capsys.readouterr().out


def test_a_cine_holding_some_phases_of_its_cycle_is_not_printed_as_a_whole_cycle(capsys):
    cine = {"lv_edv_ml": 150.0, "lv_esv_ml": 60.0, "lv_sv_ml": 90.0, "lv_ef_percent": 60.0, "lv_mass_g": 120.0,
            "rv_edv_ml": 150.0, "rv_esv_ml": 70.0, "rv_sv_ml": 80.0, "rv_ef_percent": 53.0, "ed_phase": 0,
            "es_phase": 1, "lv_volume_curve_ml": [150.0, 60.0],
            "stack_warnings": ["2 of 30 cardiac phases present (CardiacNumberOfImages 30)"]}
    print_summary_table({"studies": [{"study_instance_uid": "1.2.3", "series": [], "outputs": [], "cine": cine}]})
    out = capsys.readouterr().out
    assert "ES phase 2 of the 2 phases sent (the cycle has 30)" in out and "of 2," not in out


def test_withheld_lge_numbers_print_the_reason_and_partial_ones_lower_bounds(capsys):
    """break2 findings 2 and 3: a stack whose heart was not found prints no number (before: a TypeError on None);
    a stack missing part of the LV prints its volumes as lower bounds and says the flag was withheld."""
    withheld = _study(None, None)
    withheld["studies"][0]["lge"].update(
        {key: None for key in ("scar_volume_ml", "mvo_volume_ml", "myocardium_volume_ml", "lv_mass_g", "lge_percent",
                               "large_scar_burden")}, determined=False, reason="not determined: the heart was not found",
        stack_warnings=["not determined: the heart was not found", "the SEG is for review only"])
    print_summary_table(withheld)
    out = capsys.readouterr().out
    assert "LGE: not determined: the heart was not found" in out and "0.0" not in out
    assert out.count("the heart was not found") == 1 and "LGE input: the SEG is for review only" in out
    partial = _study(None, None)
    partial["studies"][0]["lge"].update(coverage={"complete": False}, large_scar_burden=None,
                                        large_scar_burden_reason="withheld: the LV found spans only 24 mm")
    print_summary_table(partial)
    out = capsys.readouterr().out
    assert "scar ≥ 10.0 mL" in out and "(≥ 105.0 g)" in out and "(slices present only)" in out
    assert "large-burden flag withheld" in out


def test_lge_series_left_aside_are_printed(capsys):
    study = _study(None, None)
    study["studies"][0]["lge"]["series_left_aside"] = ["series 11 'DE_SAX' (magnitude of the same slices) not measured"]
    print_summary_table(study)
    assert "LGE left aside: series 11 'DE_SAX' (magnitude of the same slices) not measured" in capsys.readouterr().out


def test_values_are_rounded_half_up_as_on_the_pdf(capsys):
    """break4 finding 4: 223.05 printed 223 (console) / 223.1 (PDF page 1) / 223.0 (page 2); 1.25 and 14.25 as 1.2
    and 14.2. The console rounds the stored value half up to the PDF's one decimal (dicomnode.rounding)."""
    study = _study({"lge_percent": 2.35}, {"lge_percent": None, "applicable": False, "reason": "PSIR input: ..."})
    study["studies"][0]["lge"].update(scar_volume_ml=1.25, mvo_volume_ml=0.05, lge_percent=14.25, lv_mass_g=137.65)
    study["studies"][0]["cine"] = {
        "lv_edv_ml": 300.75, "lv_esv_ml": 223.05, "lv_sv_ml": 77.7, "lv_ef_percent": 25.85, "lv_mass_g": 160.45,
        "rv_edv_ml": 138.85, "rv_esv_ml": 90.15, "rv_sv_ml": 48.7, "rv_ef_percent": 35.05, "ed_phase": 0,
        "es_phase": 1, "lv_volume_curve_ml": [300.75, 223.05]}
    print_summary_table(study)
    out = capsys.readouterr().out
    assert "scar 1.3 mL, MVO 0.1 mL" in out and "(137.7 g)" in out and "LGE 14.3 %" in out
    assert "(n-SD 2.4 %, FWHM not applicable)" in out
    assert "EDV 300.8 mL, ESV 223.1 mL, SV 77.7 mL, EF 25.9 %, mass 160.5 g" in out
    assert "RV: EDV 138.9 mL, ESV 90.2 mL, SV 48.7 mL, EF 35.1 %" in out


def test_threshold_methods_that_both_do_not_apply_are_said_once(capsys):
    """break4 finding 10: "(n-SD not applicable, FWHM not applicable)" on every LGE line reads as one short note."""
    reason = {"lge_percent": None, "applicable": False, "reason": "only 212 distinct values in 458752 pixels: ..."}
    print_summary_table(_study(reason, dict(reason)))
    out = capsys.readouterr().out
    assert "(threshold methods not applicable)" in out and "n-SD" not in out and "FWHM" not in out
    assert "distinct values" not in out


def test_a_partial_stack_qualifies_the_large_burden_flag_and_a_zero_bound_is_no_bound(capsys):
    """break4 findings 2 and 10: on a stack the node calls partial the flag covers the slices present, as %LGE
    does, said also for 'no'; a lower bound of 0 mL ("MVO ≥ 0.0 mL") says nothing: "0.0 mL"."""
    for flag, shown in ((False, "large scar burden: no (slices present only)"),
                        (True, "LARGE SCAR BURDEN (slices present only)")):
        study = _study(None, None)
        study["studies"][0]["lge"].update(coverage={"complete": False}, mvo_volume_ml=0.0, large_scar_burden=flag)
        print_summary_table(study)
        out = capsys.readouterr().out
        assert shown in out and "MVO 0.0 mL" in out and "≥ 0.0" not in out and "scar ≥ 10.0 mL" in out
    print_summary_table(_study(None, None))  # a whole stack: the flag as before, nothing where it is not set
    out = capsys.readouterr().out
    assert "slices present only" not in out and "large scar burden" not in out.lower()


def test_lge_prints_its_typical_error_and_a_flag_near_the_cutoff(capsys):
    study = _study(None, None)
    study["studies"][0]["lge"].update(lge_percent=14.25, large_scar_burden=None, large_scar_burden_reason=(
        "indeterminate: %LGE 14.3 % lies within the model's mean absolute error (5.8 points) of the 15 % cut-off"),
        lge_percent_validation={"mae": 5.8, "data": "MyoPS 2020", "patients": 33, "near_cutoff": True})
    print_summary_table(study)
    out = capsys.readouterr().out
    assert "LGE 14.3 % (mean abs. error 5.8)" in out
    assert "large scar burden: indeterminate (%LGE within the mean absolute error of the cut-off)" in out
    assert "withheld" not in out and "LARGE SCAR BURDEN" not in out


def test_the_cine_checks_are_printed(capsys):
    """break5: the process printout showed no cine flag although the PDF and SR carry them."""
    cine = {"lv_edv_ml": 150.0, "lv_esv_ml": 70.0, "lv_sv_ml": 80.0, "lv_ef_percent": 53.0, "lv_mass_g": 120.0,
            "rv_edv_ml": 150.0, "rv_esv_ml": 110.0, "rv_sv_ml": 40.0, "rv_ef_percent": 26.7, "ed_phase": 0,
            "es_phase": 8, "lv_volume_curve_ml": [150.0] * 20,
            "flags": ["RVEF below the RV systolic dysfunction cut-off (26.7 %; dysfunction at ≤ 45 %, Gulati 2013)",
                      "LV and RV stroke volumes disagree: LV SV 80.0 mL, RV SV 40.0 mL", "phase 3: a timing note"]}
    print_summary_table({"studies": [{"study_instance_uid": "1.2.3", "series": [], "outputs": [], "cine": cine}]})
    out = capsys.readouterr().out
    assert "Cine check: RVEF below the RV systolic dysfunction cut-off" in out
    assert "Cine check: LV and RV stroke volumes disagree" in out
    assert "Cine note: phase 3: a timing note" in out  # break40b F2: every flag the PDF lists, notes too


def _cine(**changes) -> dict:
    cine = {"lv_edv_ml": 81.44, "lv_esv_ml": 45.15, "lv_sv_ml": 36.29, "lv_ef_percent": 44.56, "lv_mass_g": 80.4,
            "rv_edv_ml": 220.5, "rv_esv_ml": 159.4, "rv_sv_ml": 61.1, "rv_ef_percent": 27.7, "ed_phase": 2,
            "es_phase": 9, "lv_volume_curve_ml": [80.0] * 12, "flags": []}
    cine.update(changes)
    return cine


def _printed(cine: dict, capsys) -> str:
    print_summary_table({"studies": [{"study_instance_uid": "1.2.3", "series": [], "outputs": [], "cine": cine}]})
    return capsys.readouterr().out


def test_an_incomplete_cine_stack_prints_lower_bounds_and_its_caveat(capsys):
    """break40b F2: the console printed "EDV 81.4 mL ... EF 44.6 %" with no lower-bound mark and without the coverage
    caveat, the temporal-resolution note or the height-in-centimetres note, which the PDF and SR carry."""
    coverage = f"incomplete LV coverage: apex cut off; {COVERAGE_CAVEAT}"
    coarse = "coarse temporal resolution: 12 phases, 83 ms per phase (SCMR recommends <= 45 ms)"
    out = _printed(_cine(coverage={"complete": False}, flags=[coverage, coarse], bsa_m2=1.66, bsa_formula="mosteller",
                         indexed={"lv_edvi_ml_m2": 49.06, "lv_esvi_ml_m2": 27.2, "lv_svi_ml_m2": 21.86,
                                  "lv_mass_index_g_m2": 48.43, "rv_edvi_ml_m2": 132.83, "rv_esvi_ml_m2": 96.02,
                                  "rv_svi_ml_m2": 36.81}), capsys)
    assert "Cine LV: EDV ≥ 81.4 mL, ESV ≥ 45.2 mL, SV 36.3 mL, EF 44.6 % (partial stack), mass ≥ 80.4 g" in out
    assert f"Cine note: {coverage}" in out and f"Cine note: {coarse}" in out
    assert ("Cine indexed: BSA 1.66 m² (mosteller): LV EDVi ≥ 49.1 mL/m², LV ESVi ≥ 27.2 mL/m², LV SVi 21.9 mL/m², "
            "LV mass index ≥ 48.4 g/m², RV EDVi ≥ 132.8 mL/m², RV ESVi ≥ 96.0 mL/m², RV SVi 36.8 mL/m²") in out
    # the RV lies outside the stack with the LV: its volumes are lower bounds too (review F4)
    rv = next(line for line in out.splitlines() if "Cine RV:" in line)
    assert rv.startswith("  Cine RV: EDV ≥ ") and ", ESV ≥ " in rv and rv.endswith("% (partial stack)")
    whole = _printed(_cine(coverage={"complete": True}), capsys)
    assert "≥" not in whole and "partial stack" not in whole


def test_the_console_says_why_there_are_no_indexed_values(capsys):
    """break40b F2 and F11: a height in centimetres, a weight of 0 or an absent height or weight is said on the
    console (the "no indexed values" flag), once, on the line of the indexed values."""
    for why in ("implausible height 187 m for BSA: it looks like centimetres; PatientSize is in metres",
                "implausible weight 0 kg for BSA: PatientWeight 0 kg is not between 1 and 500 kg (both excluded)",
                "PatientSize absent from the header (BSA needs PatientSize and PatientWeight)"):
        out = _printed(_cine(flags=[f"no indexed values: {why}"], bsa_m2=None), capsys)
        assert f"Cine indexed: not given: {why}" in out and out.count(why) == 1


def test_an_analysis_the_study_has_no_series_for_is_printed_as_not_analysed_not_declined(capsys):
    print_summary_table({"studies": [{"study_instance_uid": "1.2.3", "series": [], "outputs": [], "declined": [],
                                      "not_analysed": [{"analysis": "lge",
                                                        "reason": "no LGE short-axis stack in the study"}]}]})
    out = capsys.readouterr().out
    assert "not analysed (lge): no LGE short-axis stack in the study" in out and "declined:" not in out


def test_only_a_series_the_node_analyses_is_marked_preferred(capsys):
    """break49b #8: the Sunnybrook localizer, the preferred one of its repeats but never analysed, read "(preferred)"
    as if it had been used."""
    series = [{"series_number": 1, "sequence": "localizer", "view": "other", "slices": 15, "phases": 1,
               "preferred": True},
              {"series_number": 300, "sequence": "cine", "view": "sax", "slices": 12, "phases": 20, "preferred": True}]
    print_summary_table({"studies": [{"study_instance_uid": "1.2.3", "series": series, "outputs": [],
                                      "declined": []}]})
    lines = capsys.readouterr().out.splitlines()
    (localizer,) = [line for line in lines if "series #1 " in line]
    (cine,) = [line for line in lines if "series #300" in line]
    assert "preferred" not in localizer and cine.endswith("(preferred)")
