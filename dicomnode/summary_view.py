"""The summary.json content as a table on stdout (`dicomnode process` and `dicomnode demo`)."""
from __future__ import annotations

from dicomnode.analysis.cine_metrics import (BASE_UNCONFIRMED_QUALIFIER, NO_INDEX_START, RV_ACCURACY_START,
                                             SV_MISMATCH_START, base_unconfirmed_only, is_range_flag)
from dicomnode.analysis.lge_metrics import INDETERMINATE, presence_text
from dicomnode.analysis.lge import mvo_validation_text
from dicomnode.analysis.phase_text import COUNTED_FROM, cycle_phases, phase_name, stack_warnings, summary_phase_numbers
from dicomnode.analysis.reference_age import REFERENCE_CHECK_STARTS
from dicomnode.analysis.threshold_text import (agreement_r, method_name, method_reason, method_reported,
                                               not_validated_short, unvalidated_caveat, withheld_not_validated)
from dicomnode.analysis.report_text import shorten
from dicomnode.analysis.wall_thickness import wall_thickness_text
from dicomnode.cmr.types import series_number_range
from dicomnode.results.objects import ANALYSED_SEQUENCES
from dicomnode.rounding import display_round, number_text


def _number(value, digits: int = 1) -> str:
    """A summary value rounded as the PDF rounds it (dicomnode.rounding: 223.05 -> 223.1 on every output)."""
    return number_text(value, digits)


def _method(block: dict, name: str) -> str:
    """A threshold method's %LGE with its name as the PDF gives it ("3-SD 20.6 %"), and its caveat where computed
    though not validated ("3-SD 20.6 % not validated (r = 0.48)"); without a number "3-SD not reported - not
    validated (r = 0.34)" where the card does not validate it, else "3-SD not applicable" (its full reason stays in
    summary.json and on the PDF)."""
    block = block or {}
    if not method_reported(block):
        if withheld_not_validated(block):
            return f"{name} not reported - {not_validated_short(method_reason(block))}"
        return f"{name} not applicable"
    caveat = unvalidated_caveat(block)
    return f"{name} {_number(block.get('lge_percent'))} %" + (f" {not_validated_short(caveat)}" if caveat else "")


def _methods(lge: dict) -> str:
    """Both threshold methods, named as on the PDF ("3-SD", "FWHM"); in one short "(threshold methods not
    applicable)" where neither applies to the input, "(threshold methods 5-SD, FWHM not reported - not validated
    (r = 0.34 / 0.12))" where the card validates neither."""
    nsd, fwhm = lge.get("nsd") or {}, lge.get("fwhm") or {}
    nsd_name = method_name("nsd", nsd.get("n"))
    if not method_reported(nsd) and not method_reported(fwhm):
        unvalidated = [withheld_not_validated(block) for block in (nsd, fwhm)]
        if not any(unvalidated):
            return "(threshold methods not applicable)"
        if all(unvalidated):
            rs = [agreement_r(method_reason(block)) for block in (nsd, fwhm)]
            said = f" (r = {rs[0]:.2f} / {rs[1]:.2f})" if None not in rs else ""
            return f"(threshold methods {nsd_name}, FWHM not reported - not validated{said})"
    return f"({_method(nsd, nsd_name)}, {_method(fwhm, 'FWHM')})"


def _bound(value, unit: str, partial: bool) -> str:
    """A volume or mass, "≥ " before it on a stack missing part of the LV, but for 0 (a lower bound of 0 says
    nothing: "0.0 mL", as on the PDF)."""
    zero = value is None or display_round(value, 1) in (None, 0)  # a lower bound that reads 0.0 says nothing
    return f"{'≥ ' if partial and not zero else ''}{_number(value)} {unit}"


def coverage_reasons(block) -> list[str]:
    """Why a cine or LGE summary block's stack does not hold the whole LV (its `coverage.reasons` where
    `coverage.complete` is false: an apex or base cut off, a gap, too short), [] otherwise."""
    coverage = (block or {}).get("coverage") if isinstance(block, dict) else None
    if not isinstance(coverage, dict) or coverage.get("complete") is not False:
        return []
    return [str(reason) for reason in coverage.get("reasons") or []]


def _typical_error(lge: dict) -> str:
    """" (mean abs. error 5.8)": the model's cross-validated %LGE error on input like this (lge_percent_validation)."""
    block = lge.get("lge_percent_validation")
    return f" (mean abs. error {_number(block['mae'])})" if isinstance(block, dict) and block.get("mae") is not None \
        else ""


def _mvo_caveat(lge: dict) -> str:
    """" (not validated: presence right in 69-78 % of cases)" beside the MVO volume, from lge.mvo_validation (as the
    PDF and SR say it, shorter); "" where the model card validates the MVO."""
    text = mvo_validation_text(lge.get("mvo_validation"), short=True)
    return f" ({text})" if text else ""


def _note(block: dict) -> str:
    """" (base not confirmed)" where the stack's only coverage reason is that its base is not confirmed covered
    (cine_metrics.base_unconfirmed_only): its volumes may be lower bounds, as the SR and the PDF say; "" otherwise."""
    return f" ({BASE_UNCONFIRMED_QUALIFIER})" if base_unconfirmed_only(block.get("coverage")) else ""


def _burden(lge: dict, partial: bool) -> str:
    """The large-burden flag: "  LARGE SCAR BURDEN" where set; on a stack the node calls partial (coverage.complete
    false) qualified as %LGE is, "(slices present only)" ("(slices present only; base not confirmed)" where the
    base is only not confirmed covered), and said also where not set; "(large-burden flag withheld)" where the
    summary withholds it."""
    present = "slices present only" + (f"; {BASE_UNCONFIRMED_QUALIFIER}" if _note(lge) else "")
    if str(lge.get("large_scar_burden_reason") or "").startswith(INDETERMINATE):
        return (f"  large scar burden: {INDETERMINATE} (%LGE within the mean absolute error of the cut-off"
                f"{'; ' + present if partial else ''})")
    if lge.get("large_scar_burden_reason"):
        return "  (large-burden flag withheld)"
    flag = lge.get("large_scar_burden")
    if (lge.get("lge_percent_validation") or {}).get("near_cutoff") and isinstance(flag, bool):
        return (f"  {'LARGE SCAR BURDEN' if flag else 'large scar burden: no'} (%LGE within the mean absolute error of "
                f"the cut-off{'; ' + present if partial else ''})")
    if partial and isinstance(flag, bool):
        return f"  {'LARGE SCAR BURDEN' if flag else 'large scar burden: no'} ({present})"
    return "  LARGE SCAR BURDEN" if flag else ""


def print_summary_table(summary: dict) -> None:
    if summary.get("unreadable_files"):
        print("\nFiles that belong to no readable study")
        for entry in summary["unreadable_files"]:
            print(f"  {entry['path']}: {entry['reason']}")
    for study in summary.get("studies", []):
        uid = study["study_instance_uid"]
        print(f"\nStudy {uid}" if uid else "\nFiles that belong to no readable study")
        for series in study.get("series", []):
            # a stack merged from one-slice series by the range of its SeriesNumbers (merged_series), as the PDF and SR
            number = series_number_range([m.get("series_number") for m in series.get("merged_series") or []]) \
                or series.get("series_number")
            # the repeat chosen for analysis; a localizer or map is chosen among its repeats too but never analysed
            preferred = series.get("preferred") and series["sequence"] in ANALYSED_SEQUENCES
            print(f"  series #{number!s:<6} {series['sequence']:<10} {series['view']:<6} "
                  f"{series['slices']:>3} slices x {series['phases']:>2} phases{'  (preferred)' if preferred else ''}")
        if "lge" in study:
            lge = study["lge"]
            if lge.get("determined") is False:  # numbers withheld: the reason, no number
                print(f"  LGE: {lge.get('reason') or 'not determined'}")
            else:
                # part of the LV outside the stack (lge.coverage): volumes and mass are lower bounds, %LGE and the
                # large-burden flag of the slices present
                # base only not confirmed covered (_note): "(base not confirmed)" instead of "≥" and "partial"
                partial = (lge.get("coverage") or {}).get("complete") is False
                bounded, note = partial and not _note(lge), _note(lge)
                scar_note = note if display_round(lge['scar_volume_ml'], 1) not in (None, 0) else ""
                print(f"  LGE: scar {_bound(lge['scar_volume_ml'], 'mL', bounded)}{scar_note}, "
                      f"MVO {_bound(lge['mvo_volume_ml'], 'mL', bounded)}{_mvo_caveat(lge)}, "
                      f"myocardium {_bound(lge['myocardium_volume_ml'], 'mL', bounded)} "
                      f"({_bound(lge['lv_mass_g'], 'g', bounded)}){note}, "
                      f"LGE {_number(lge['lge_percent'])} %{_typical_error(lge)}"
                      f"{(' (slices present only)' if bounded else note) if partial else ''}"
                      f" {_methods(lge)}{_burden(lge, partial)}")
                presence = presence_text(lge.get("lge_presence"))
                if presence:  # not stated present: no significant LGE, or presence uncertain (as the PDF and SR)
                    print(f"  LGE presence: {presence}")
        if "cine" in study:
            cine = study["cine"]
            # part of the LV outside the stack (cine.coverage): LV and RV volumes and mass lower bounds, EF of the slices
            # present, as on the PDF
            # base only not confirmed covered (_note): "(base not confirmed)" instead of "≥" and "partial stack"
            note = _note(cine)
            partial = (cine.get("coverage") or {}).get("complete") is False and not note
            print(f"  Cine LV: EDV {_bound(cine['lv_edv_ml'], 'mL', partial)},"
                  f" ESV {_bound(cine['lv_esv_ml'], 'mL', partial)}{note},"
                  f" SV {_number(cine['lv_sv_ml'])} mL, EF {_number(cine['lv_ef_percent'])} %"
                  f"{' (partial stack)' if partial else note},"
                  f" mass {_bound(cine['lv_mass_g'], 'g', partial)}{note}"
                  f" (ED {phase_name(cine['ed_phase'], summary_phase_numbers(cine))},"
                  f" ES {phase_name(cine['es_phase'], summary_phase_numbers(cine))}{_of_phases(cine)},"
                  f" {COUNTED_FROM} as the report)")
            print(f"  Cine RV: EDV {_bound(cine['rv_edv_ml'], 'mL', partial)}, ESV {_bound(cine['rv_esv_ml'], 'mL', partial)}{note},"
                  f" SV {_number(cine['rv_sv_ml'])} mL, EF {_number(cine['rv_ef_percent'])} %"
                  f"{' (partial stack)' if partial else note}")
            wall = wall_thickness_text(cine.get("max_wall_thickness"), cine.get("slices"))
            if wall:
                print(f"  Cine LV maximal ED wall thickness: {wall}")
            print(f"  Cine indexed: {_indexed(cine, partial)}{note if cine.get('indexed') else ''}")
            # every flag the PDF lists (one source: cine.flags): a check where a value is outside its range, the
            # LV/RV stroke volumes disagree or the RV's accuracy is stated, a note else (coverage, timing, phases);
            # the reason for no indexed values is on the line above
            for flag in cine.get("flags") or []:
                if not isinstance(flag, str) or flag.startswith(NO_INDEX_START):
                    continue
                check = is_range_flag(flag) or flag.startswith((SV_MISMATCH_START, RV_ACCURACY_START, *REFERENCE_CHECK_STARTS))
                print(f"  Cine {'check' if check else 'note'}: {flag}")
        for name in ("lge", "cine"):
            for reason in coverage_reasons(study.get(name)):
                print(f"  {name.upper() if name == 'lge' else 'Cine'} incomplete LV coverage: {reason}")
            for warning in stack_warnings(study.get(name)):
                print(f"  {name.upper() if name == 'lge' else 'Cine'} input: {warning}")
        if study.get("suggestions"):
            print("  Suggestions: text of OTHER patients' reports (unverified; not findings of this study, their "
                  "numbers are not this study's)")
        for suggestion in study.get("suggestions", []) or []:
            text = suggestion["text"]
            shown = text[text.index("Impression:"):] if "Impression:" in text else text
            print(f"  Suggestion (another patient's report {suggestion['report_id']}, {_number(suggestion['score'], 2)};"
                  f" unverified): {shorten(shown, 120)}")
        if study.get("suggestions_lge_presence"):
            print(f"  Suggestions: {study['suggestions_lge_presence']}")
        if study.get("suggestions_note"):
            print(f"  Suggestions: none, {study['suggestions_note']}")
        for text in (study.get("lge") or {}).get("series_left_aside") or []:
            print(f"  LGE left aside: {text}")
        aha = (study.get("lge") or {}).get("aha_segments")
        if isinstance(aha, dict) and not aha.get("applicable") and aha.get("reason") \
                and study["lge"].get("determined") is not False:  # as the PDF bullseye and the SR comment say it
            print(f"  LGE AHA segments not assigned: {aha['reason']}")
        for item in study.get("identifier_warnings") or []:  # copied as received: every result object invalid
            print(f"  identifier: {item['text']}")
        for item in study.get("declined", []):
            print(f"  declined: {item['reason']}")
        for item in study.get("not_analysed") or []:
            print(f"  not analysed ({item['analysis']}): {item['reason']}")
        print(f"  {len(study.get('outputs', []))} result object(s)")


def _indexed(cine: dict, partial: bool) -> str:
    """The BSA and the indexed values, as the PDF gives them ("BSA 1.66 m² (mosteller): LV EDVi ≥ 49.1 mL/m², ...");
    without a BSA, why not (the "no indexed values: ..." flag), or that none is given."""
    indexed = cine.get("indexed") or {}
    if cine.get("bsa_m2") is None or not indexed:
        why = next((f.removeprefix(NO_INDEX_START) for f in cine.get("flags") or []
                    if isinstance(f, str) and f.startswith(NO_INDEX_START)), None)
        return f"not given: {why}" if why else "not given"
    values = [f"{name} {_bound(indexed[key], unit, partial and bound)}" for key, name, unit, bound in INDEXED_SHOWN
              if indexed.get(key) is not None]
    return f"BSA {_number(cine['bsa_m2'], 2)} m² ({cine.get('bsa_formula') or 'formula not given'}): " \
        + ", ".join(values)


#: (summary `indexed` key, name, unit, a lower bound on a partial stack) of the indexed values printed, as on the PDF
INDEXED_SHOWN = (("lv_edvi_ml_m2", "LV EDVi", "mL/m²", True), ("lv_esvi_ml_m2", "LV ESVi", "mL/m²", True),
                 ("lv_svi_ml_m2", "LV SVi", "mL/m²", False), ("lv_mass_index_g_m2", "LV mass index", "g/m²", True),
                 ("rv_edvi_ml_m2", "RV EDVi", "mL/m²", True), ("rv_esvi_ml_m2", "RV ESVi", "mL/m²", True),
                 ("rv_svi_ml_m2", "RV SVi", "mL/m²", False))


def _of_phases(cine: dict) -> str:
    """" of 20" over a whole cycle; " of the 2 phases sent (the cycle has 30)" where only some were sent."""
    sent, cycle = cycle_phases(cine)
    if cycle is not None:
        return f" of the {sent} phases sent (the cycle has {cycle})"
    return f" of {sent}" if sent else ""
