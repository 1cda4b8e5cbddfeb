"""The summary.json content as a table on stdout (`dicomnode process` and `dicomnode demo`)."""
from __future__ import annotations

from dicomnode.analysis.phase_text import COUNTED_FROM, cycle_phases, phase_name, stack_warnings


def _method(block: dict, name: str) -> str:
    """A threshold method's %LGE, or "not applicable" (its reason stays in summary.json and on the PDF)."""
    value = (block or {}).get("lge_percent")
    return f"{name} not applicable" if value is None else f"{name} {value:.1f} %"


def print_summary_table(summary: dict) -> None:
    if summary.get("unreadable_files"):
        print("\nFiles that belong to no readable study")
        for entry in summary["unreadable_files"]:
            print(f"  {entry['path']}: {entry['reason']}")
    for study in summary.get("studies", []):
        uid = study["study_instance_uid"]
        print(f"\nStudy {uid}" if uid else "\nFiles that belong to no readable study")
        for series in study.get("series", []):
            print(f"  series #{series.get('series_number')!s:<6} {series['sequence']:<10} {series['view']:<6} "
                  f"{series['slices']:>3} slices x {series['phases']:>2} phases"
                  f"{'  (preferred)' if series.get('preferred') else ''}")
        if "lge" in study:
            lge = study["lge"]
            if lge.get("determined") is False:  # numbers withheld: the reason, no number
                print(f"  LGE: {lge.get('reason') or 'not determined'}")
            else:
                # part of the LV outside the stack (lge.coverage): volumes and mass are lower bounds
                at_least = "≥ " if (lge.get("coverage") or {}).get("complete") is False else ""
                print(f"  LGE: scar {at_least}{lge['scar_volume_ml']:.1f} mL, MVO {at_least}{lge['mvo_volume_ml']:.1f} mL, "
                      f"myocardium {at_least}{lge['myocardium_volume_ml']:.1f} mL ({at_least}{lge['lv_mass_g']:.0f} g), "
                      f"LGE {lge['lge_percent']:.1f} %{' (slices present only)' if at_least else ''}"
                      f" ({_method(lge.get('nsd'), 'n-SD')}, {_method(lge.get('fwhm'), 'FWHM')})"
                      f"{'  LARGE SCAR BURDEN' if lge['large_scar_burden'] else ''}"
                      f"{'  (large-burden flag withheld)' if lge.get('large_scar_burden_reason') else ''}")
        if "cine" in study:
            cine = study["cine"]
            print(f"  Cine LV: EDV {cine['lv_edv_ml']:.0f} mL, ESV {cine['lv_esv_ml']:.0f} mL, SV {cine['lv_sv_ml']:.0f} mL,"
                  f" EF {cine['lv_ef_percent']:.0f} %, mass {cine['lv_mass_g']:.0f} g"
                  f" (ED {phase_name(cine['ed_phase'])}, ES {phase_name(cine['es_phase'])}{_of_phases(cine)},"
                  f" {COUNTED_FROM} as the report)")
            print(f"  Cine RV: EDV {cine['rv_edv_ml']:.0f} mL, ESV {cine['rv_esv_ml']:.0f} mL, SV {cine['rv_sv_ml']:.0f} mL,"
                  f" EF {cine['rv_ef_percent']:.0f} %")
        for name in ("lge", "cine"):
            for warning in stack_warnings(study.get(name)):
                print(f"  {name.upper() if name == 'lge' else 'Cine'} input: {warning}")
        for suggestion in study.get("suggestions", []) or []:
            text = suggestion["text"]
            shown = text[text.index("Impression:"):] if "Impression:" in text else text
            print(f"  Suggestion ({suggestion['score']:.2f}, {suggestion['report_id']}; unverified): {shown[:120]}")
        if study.get("suggestions_note"):
            print(f"  Suggestions: none, {study['suggestions_note']}")
        for text in (study.get("lge") or {}).get("series_left_aside") or []:
            print(f"  LGE left aside: {text}")
        for item in study.get("declined", []):
            print(f"  declined: {item['reason']}")
        print(f"  {len(study.get('outputs', []))} result object(s)")


def _of_phases(cine: dict) -> str:
    """" of 20" over a whole cycle; " of the 2 phases sent (the cycle has 30)" where only some were sent."""
    sent, cycle = cycle_phases(cine)
    if cycle is not None:
        return f" of the {sent} phases sent (the cycle has {cycle})"
    return f" of {sent}" if sent else ""
