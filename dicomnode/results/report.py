"""One-page visual report (matplotlib PDF + PNG) and its DICOM wrappers: Encapsulated PDF and Secondary Capture.

matplotlib is imported where a page is drawn: the CLI (`dicomnode status`, `send`, ...) starts without it.
"""
from __future__ import annotations

import datetime as dt
import functools
import io
import math
import re
import textwrap
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import EncapsulatedPDFStorage, ExplicitVRLittleEndian
from pydicom.valuerep import PersonName

from dicomnode.analysis.aha import basal_end_for_volume, stack_geometry
from dicomnode.analysis.cine_metrics import (MIN_PHASES_FOR_CURVE, NORMAL_VALUES, SV_MISMATCH_FRACTION, SV_MISMATCH_ML,
                                           BASE_UNCONFIRMED_QUALIFIER, base_unconfirmed_only,
                                           RV_TIMING_METHOD, TIMING_METHOD, TIMING_METHOD_UNTRIGGERED,
                                           UNTRIGGERED_START, reading_caveats,
                                           is_near_flag, is_range_flag, normal_range)
from dicomnode.analysis.lge_metrics import INDETERMINATE, presence_short, presence_text
from dicomnode.analysis.report_text import shorten
from dicomnode.analysis.threshold_text import (burden_rule_source, method_reported, short_method_reason,
                                              threshold_method_lines)
from dicomnode.analysis.lge import mvo_validation_text
from dicomnode.analysis.phase_text import (COUNTED_FROM, cycle_phases, not_measured_label, phase_name, phase_number,
                                          phases_name, source_series_name, stack_warnings, summary_phase_numbers)
from dicomnode.analysis.pipeline import AlgorithmInfo, Declined, PipelineResult, SegmentationResult
from dicomnode.analysis.reference_age import ADULT_RANGES_NOT_APPLIED, REFERENCE_CHECK_STARTS
from dicomnode.analysis.wall_thickness import HCM_THRESHOLD_MM
from dicomnode.cmr.age import age_reading
from dicomnode.analysis.wall_thickness import METHOD as WALL_THICKNESS_METHOD
from dicomnode.analysis.wall_thickness import wall_thickness_text
from dicomnode.results.bullseye import draw_bullseye
from dicomnode.results.headers import derivable_header
from dicomnode.labels import ENHANCED_LABELS, MYOCARDIUM_LABELS, Label
from dicomnode.rounding import display_round, number_text
from dicomnode.results.provenance import (NODE_MANUFACTURER, NODE_MODEL_NAME, apply_provenance, node_version,
                                          supersede_text)
from dicomnode.results.regions import non_square_note
from dicomnode.results.report_layout import (PAGE_INCHES, TABLE_FONT, bottom_of, captioned_grid, fit_width,
                                             key_table, text_span)
from dicomnode.uids import new_uid

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from matplotlib.text import Text

BANNER = "AI-generated, not verified; not for diagnostic use without review"
DOCUMENT_TITLE = "AI CMR analysis report (unverified)"
PNG_DPI = 110
#: overlay colours per node label (RGBA); background transparent
LABEL_COLOURS = {
    Label.LV_BLOOD_POOL: (0.86, 0.16, 0.16, 0.45),
    Label.LV_MYOCARDIUM: (0.16, 0.70, 0.24, 0.45),
    Label.SCAR: (0.98, 0.82, 0.0, 0.75),
    Label.MVO: (0.59, 0.24, 0.86, 0.85),
    Label.RV_BLOOD_POOL: (0.16, 0.43, 0.90, 0.45),
}
@functools.cache
def _overlay_cmap():
    from matplotlib.colors import ListedColormap

    return ListedColormap([(0, 0, 0, 0)] + [LABEL_COLOURS[Label(v)] for v in range(1, 6)])


def _fmt(value, unit: str = "", digits: int = 1, below: bool = False) -> str:
    """A summary value as the pages show it: dicomnode.rounding.number_text (below=True: "<1 %", never a present
    extent as 0), "n/a" where there is none, "yes" / "no" for a flag."""
    if value is None or isinstance(value, (dict, list)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    try:
        float(value)
    except (TypeError, ValueError):
        return str(value)
    # half up on the decimal value, as a reader rounds (3.25 -> 3.3), the one rounding of every output
    return f"{number_text(value, digits, below)}{(' ' + unit) if unit else ''}"


def lower_bound_text(value, unit: str, partial: bool) -> str:
    """A volume or mass as the pages show it, "≥ " before it where the stack misses part of the LV (`partial`; not
    where its base is only not confirmed covered: coverage_note qualifies the row instead), except a value of 0: a
    lower bound of zero says nothing, "0.0 mL" is what was found."""
    shown = _fmt(value, unit)
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f"≥ {shown}" if partial and is_number and display_round(value, 1) != 0 else shown


def coverage_note(coverage) -> str:
    """" (base not confirmed)" after a row's volumes, mass or EF where the stack's only coverage reason is that its
    base is not confirmed covered (cine_metrics.base_unconfirmed_only): they may be lower bounds, or cover the
    slices present only, as the SR says ("may be"); neither "≥" nor "partial stack" asserts it. "" otherwise."""
    return f" ({BASE_UNCONFIRMED_QUALIFIER})" if base_unconfirmed_only(coverage) else ""


def _burden_percent_text(value, cutoff: float, comparator: str) -> str:
    """%LGE as the key numbers show it: one decimal, or two where one decimal would put the shown number on the
    other side of the large-burden cut-off than the value decided on (14.96 % is not shown as 15.0 % beside 'no')."""
    text = _fmt(value, "%")
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return text
    shown = float(text.split()[0])
    decided = value >= cutoff if comparator == ">=" else value > cutoff
    return text if (shown >= cutoff if comparator == ">=" else shown > cutoff) == decided else _fmt(value, "%", 2)


def method_value(block, unit: str = "%") -> str:
    """A threshold method's %LGE: the number, or "not applicable: <reason>" when the method could not run."""
    if isinstance(block, (int, float)) and not isinstance(block, bool):
        return _fmt(block, unit)
    if not isinstance(block, dict):
        return "n/a"
    if block.get("lge_percent") is not None and block.get("applicable", True) is not False:
        return _fmt(block.get("lge_percent"), unit)
    reason = block.get("reason") or block.get("error")
    return f"not applicable: {reason}" if reason else "n/a"


#: the key-number row of both threshold methods where neither gives a number
THRESHOLD_ROW = "Threshold methods ({n}-SD, FWHM)"


def threshold_method_rows(nsd, fwhm) -> list[tuple[str, str, str]]:
    """The key-number rows of the threshold methods: where neither gives a number one row, "not reported - <short
    reason> (details: page 2)"; else a row each, a number or that short "not reported"."""
    n = nsd.get("n", "n") if isinstance(nsd, dict) else "n"
    if not method_reported(nsd) and not method_reported(fwhm):
        reasons = [short_method_reason(nsd), short_method_reason(fwhm)]
        why = reasons[0] if reasons[0] == reasons[1] else f"{n}-SD: {reasons[0]}; FWHM: {reasons[1]}"
        return [(THRESHOLD_ROW.format(n=n), f"not reported - {why} (details: page 2)", "")]
    return [(label, method_value(block) if method_reported(block) else
             f"not reported - {short_method_reason(block)} (details: page 2)",
             _method_reference(block) if method_reported(block) else "")
            for label, block in ((f"%LGE ({n}-SD threshold)", nsd), ("%LGE (FWHM threshold)", fwhm))]


def _method_reference(block) -> str:
    """The reference column of a threshold method: its caveat when computed without validation (threshold_methods
    = 'always'), else that it depends on the method."""
    if isinstance(block, dict) and block.get("applicable") and block.get("caveat"):
        return "NOT VALIDATED: " + str(block["caveat"]).removeprefix("not validated on the automatic myocardium: ")
    return "method-dependent, see methods"


def _range_text(key: str, sex: str | None, index: bool = False) -> str:
    """Normal range (mean ± 2 SD, SSFP, cmr-reference.md) for the patient's sex, or both when unknown."""
    sexes = [sex] if sex in ("M", "F") else ["M", "F"]
    unit = NORMAL_VALUES[key]["unit"]
    parts = []
    for each in sexes:
        low, high = normal_range(key, each)
        span = f"> {low:g}" if math.isinf(high) else f"{low:g}-{high:g}"
        parts.append(f"{'' if len(sexes) == 1 else ('men ' if each == 'M' else 'women ')}{span}")
    if len(set(parts)) == 1 and len(sexes) > 1:  # the same for both sexes (RVEF's cut-off)
        parts = [parts[0].removeprefix("men ")]
    return ", ".join(parts) + f" {unit}"


#: the key-number row of the maximal ED wall thickness, and the cine rows whose reference column gives an adult range
#: (replaced by the reason for a patient under 18: reference_age.py)
WALL_THICKNESS_ROW = "LV max. ED wall thickness"
ADULT_RANGE_ROWS = ("LV EF", "LV EDV / EDVi", "LV ESV / ESVi", "LV mass (cine, ED) / index", "RV EDV / ESV",
                    "RV SV / EF", WALL_THICKNESS_ROW)
#: the key-number rows listing cine flags, cut short on page 1 where space runs out (page 2 gives them in full)
#: the third lists range flags within the model's known error of their limit (cine_metrics.is_near_flag): not asserted
FLAG_ROWS = ("Outside the reference range", f"Notes (phases {COUNTED_FROM})",
             "Within the model's error of a limit")
#: the reference column of FLAG_ROWS[2]
NEAR_REFERENCE = "confirm by reading; the model's error (card cross-validation) in full on page 2"
#: the key-number row giving a pipeline's stack warnings (summary `stack_warnings`: what dicomnode/cmr/volume.py
#: found in the analysed stack's geometry: a gap or missing slice, phases missing, a single slice, instances or
#: duplicates left out, shifted slices), last in that pipeline's block, in red; cut like the flags on page 1
STACK_ROWS = {"lge": "LGE input stack: caution", "cine": "Cine input stack: caution"}
#: what the stack warnings qualify, per pipeline (the reference column of STACK_ROWS)
STACK_QUALIFIES = {"lge": "LGE volumes, mass and %LGE", "cine": "cine volumes, EF and mass"}


#: how the key-number rows of a report without numbers end: "Cine: not measured", with the reason beside it
NOT_MEASURED_SUFFIX = ": not measured"


def not_measured_rows(results: Sequence[PipelineResult],
                      series_names: Mapping[str, str] | None = None) -> list[tuple[str, str, str]]:
    """Page 1's rows of a report without numbers, one per declined analysis of a recognised series ("Cine: not
    measured", the reason, the series as a viewer lists it: `series_names` {SeriesInstanceUID: 'series 5 "cine
    SAX"'}, phase_text.series_name); [] where none was declined for a series."""
    rows = []
    for r in results:
        for d in r.declined:
            if d.series_instance_uid:
                label = ("LGE" if r.name == "lge" else r.name.capitalize()) + NOT_MEASURED_SUFFIX
                rows.append((label, str(d.reason), declined_series_text(d.series_instance_uid, series_names)))
    return rows


#: the page-1 row listing the series recognised but never measured by this version (maps, perfusion)
NOT_ANALYSED_ROW = "Not analysed"


def recognised_not_measured_rows(reasons: Sequence[str]) -> list[tuple[str, str, str]]:
    """Page 1's one row naming the series recognised but never measured by this version (T1 / T2 maps, MOLLI source
    images, perfusion: `reasons`, phase_text.maps_not_measured's), short ("T1 map S:21, perfusion S:23: read them
    yourself", S: as the image captions name a series), so a reader of page 1 does not take the absence of T1 or perfusion numbers for normal
    (break48b #5); page 2 gives each reason in full. [] where there is none."""
    if not reasons:
        return []
    names = ", ".join(dict.fromkeys(not_measured_label(reason) for reason in reasons))
    return [(NOT_ANALYSED_ROW, f"{names}: read them yourself", "recognised, not measured by this version (page 2)")]


def not_analysed_rows(results: Sequence[PipelineResult]) -> list[tuple[str, str, str]]:
    """Page 1's rows of a report of a study whose LGE and cine analyses were declined for the study as a whole (no
    series usable as their input, e.g. an LGE of one slice): one per such decline ("LGE: not measured", the reason,
    ""); [] where there is none. The reason names the series it could not use (phase_text.other_views_text)."""
    return [(("LGE" if r.name == "lge" else r.name.capitalize()) + NOT_MEASURED_SUFFIX, str(d.reason), "")
            for r in results if r.name in ("lge", "cine") and r.summary is None
            for d in r.declined if not d.series_instance_uid]


def declined_series_text(series_instance_uid: str, series_names: Mapping[str, str] | None = None) -> str:
    """'series 5 "cine SAX"' where `series_names` knows the series, else 'series <SeriesInstanceUID>'."""
    return (series_names or {}).get(series_instance_uid) or f"series {series_instance_uid}"


def _stack_rows(name: str, summary: dict) -> list[tuple[str, str, str]]:
    """The STACK_ROWS row of one pipeline: every stack warning, beside the numbers they qualify; [] without any."""
    warnings = stack_warnings(summary)
    if not warnings:
        return []
    return [(STACK_ROWS[name], "; ".join(warnings),
             f"the {STACK_QUALIFIES[name]} above come from this stack; in full on page 2")]


#: the value of an LGE number withheld (summary `determined` false, `reason`)
NOT_DETERMINED_TEXT = "not determined"
#: where a withheld LGE would be shown again on page 1 (bullseye, per-slice plot): the reason is in the key numbers
SEE_KEY_NUMBERS = f"{NOT_DETERMINED_TEXT} (why: see the key numbers)"


#: beside %LGE and the large-burden flag of a stack the node calls partial (summary lge.coverage.complete false)
PARTIAL_QUALIFIER = "slices present only"
#: beside a large-burden flag whose %LGE lies within the model's mean absolute error of the cut-off
NEAR_CUTOFF_QUALIFIER = "%LGE within the mean absolute error of the cut-off"


def _present_qualifier(coverage) -> str:
    """PARTIAL_QUALIFIER, with "; base not confirmed" where the stack's only coverage reason is that its base is not
    confirmed covered (cine_metrics.base_unconfirmed_only: the LV may be whole)."""
    return f"{PARTIAL_QUALIFIER}; {BASE_UNCONFIRMED_QUALIFIER}" if base_unconfirmed_only(coverage) \
        else PARTIAL_QUALIFIER


def _burden_text(lge_summary: dict) -> str:
    """The large-burden flag as the key numbers show it: yes / no, qualified "(slices present only)" on a stack the
    summary calls partial (coverage.complete false: the flag, like %LGE, covers only the slices present; "(slices
    present only; base not confirmed)" where the base is only not confirmed covered) and
    "(%LGE within the mean absolute error of the cut-off)" where lge_percent_validation says so, or
    "indeterminate (%LGE within the mean absolute error of the cut-off)" where the summary says so
    (`analysis.lge.indeterminate_burden_reason`), or
    "withheld: <why>" where the summary withholds it (`large_scar_burden_reason`: a stack clearly shorter than the
    LV, a dark-blood LGE), the why cut at its first colon or comma (in full in the caution row and on page 2)."""
    value = lge_summary.get("large_scar_burden")
    reason = lge_summary.get("large_scar_burden_reason")
    partial = (lge_summary.get("coverage") or {}).get("complete") is False
    present = _present_qualifier(lge_summary.get("coverage"))
    if isinstance(value, bool) or not reason:
        near = (lge_summary.get("lge_percent_validation") or {}).get("near_cutoff")
        qualifiers = [q for q, on in ((present, partial), (NEAR_CUTOFF_QUALIFIER, near)) if on] \
            if isinstance(value, bool) else []
        return _fmt(value) + (f" ({'; '.join(qualifiers)})" if qualifiers else "")
    if str(reason).startswith(INDETERMINATE):  # qualified as the console qualifies it (summary_view._burden)
        return f"{INDETERMINATE} ({NEAR_CUTOFF_QUALIFIER}{'; ' + present if partial else ''})"
    return "withheld: " + str(reason).removeprefix("withheld: ").split(":")[0].split(",")[0]


def validation_text(lge_summary: dict) -> str:
    """The model's known %LGE error on input like this (summary `lge_percent_validation`, the model card's
    cross-validation): "mean absolute error vs expert readers 5.8 points (SD 7.4; MyoPS 2020, 33 patients,
    cross-validated)"; "" without one. A mean, not a bound: a third of the errors are larger."""
    block = lge_summary.get("lge_percent_validation")
    if not isinstance(block, dict) or block.get("mae") is None:
        return ""
    data = str(block.get("data") or "").split(":")[0]
    patients = f", {block['patients']} patients" if block.get("patients") else ""
    sd = f"SD {number_text(block['sd'], 1)}; " if block.get("sd") is not None else ""
    return (f"mean absolute error vs expert readers {number_text(block['mae'], 1)} points ({sd}{data}{patients}, "
            "cross-validated)")


#: beside the MVO volume where the model card does not validate the MVO: one line of the reference column (a longer
#: text wraps and shrinks the overlays); how often it was wrong is said in full on page 2 (_methods_lines)
MVO_NOT_VALIDATED_REFERENCE = "not validated (page 2)"


def _mvo_reference(lge_summary: dict) -> str:
    """MVO_NOT_VALIDATED_REFERENCE where summary `mvo_validation` says the MVO is not validated, "" where it is."""
    return MVO_NOT_VALIDATED_REFERENCE if mvo_validation_text(lge_summary.get("mvo_validation")) else ""


def partial_cycle(cine_summary: dict) -> bool:
    """True where ED and ES were not found over a whole cycle: fewer phases sent than the cycle has, or fewer than
    MIN_PHASES_FOR_CURVE (then ED / ES are the larger / smaller LV volume, dicomnode/analysis/cine_metrics.py)."""
    sent, cycle = cycle_phases(cine_summary)
    return cycle is not None or 0 < sent < MIN_PHASES_FOR_CURVE


def key_number_table(results: Sequence[PipelineResult], bsa: tuple[float, str] | None,
                     sex: str | None = None) -> list[tuple[str, str, str]]:
    """(quantity, value, reference) rows of the key-numbers table: LGE block first, then cine."""
    rows: list[tuple[str, str, str]] = []
    by_name = {r.name: r for r in results}
    lge = by_name.get("lge")
    if lge is not None and isinstance(lge.summary, dict):
        s = lge.summary
        nsd, fwhm = s.get("nsd") or {}, s.get("fwhm") or {}
        cutoff = lge.measurements.get("large_burden_cutoff_percent", 15.0)
        comparator = lge.measurements.get("large_burden_comparator", ">=")
        burden_rule = (f"large burden if {'≥' if comparator == '>=' else '>'} {cutoff:g} % "
                       f"({burden_rule_source(cutoff, comparator)})")
        if s.get("determined") is False:
            # numbers withheld (lge.reason: the heart not found, or an implausibly small myocardium): none shown
            reason = str(s.get("reason") or NOT_DETERMINED_TEXT)
            reason = reason if reason.startswith(NOT_DETERMINED_TEXT) else f"{NOT_DETERMINED_TEXT}: {reason}"
            rows += [
                ("%LGE (DL, scar incl. MVO / LV myocardium)", reason, burden_rule),
                ("Large scar burden", NOT_DETERMINED_TEXT, ""),
                ("Scar volume (incl. MVO)", NOT_DETERMINED_TEXT, ""),
                ("LV myocardial volume / mass (LGE)", NOT_DETERMINED_TEXT,
                 "the LGE segmentation (SEG) is unreliable: review only"),
                *_stack_rows("lge", s),
            ]
        else:
            # part of the LV outside the stack (summary `coverage`): volumes, mass and scar are lower bounds, %LGE
            # and the flag cover the slices present
            # only not confirmed covered at the base (coverage_note): "(base not confirmed)", no "≥", no "partial"
            note = coverage_note(s.get("coverage"))
            partial = (s.get("coverage") or {}).get("complete") is False and not note

            def bound(key: str, unit: str) -> str:  # a lower bound of 0 says nothing: "0.0 mL", never "≥ 0.0 mL"
                return lower_bound_text(s.get(key), unit, partial)

            def noted(key: str, unit: str) -> str:  # "(base not confirmed)" after a value, not after 0.0 mL
                return bound(key, unit) + (note if display_round(s.get(key), 1) not in (None, 0) else "")

            rows += [
                ("%LGE (DL, scar incl. MVO / LV myocardium)",
                 _burden_percent_text(s.get("lge_percent"), cutoff, comparator)
                 + ((f" (partial stack: {PARTIAL_QUALIFIER})" if partial else note)
                    if s.get("lge_percent") is not None else ""),
                 "; ".join(t for t in (burden_rule, validation_text(s)) if t)),
                ("Large scar burden", _burden_text(s), ""),
                ("Scar volume (incl. MVO)", noted("scar_volume_ml", "mL"), ""),
                ("  of which MVO", noted("mvo_volume_ml", "mL"), _mvo_reference(s)),
                ("LV myocardial volume / mass (LGE)",
                 f"{bound('myocardium_volume_ml', 'mL')} / {bound('lv_mass_g', 'g')}",
                 "may be lower bounds: the LV base may lie outside the stack" if note else
                 "lower bounds: part of the LV lies outside the stack" if partial else ""),
                *threshold_method_rows(nsd, fwhm),
                *_stack_rows("lge", s),
            ]
    cine = by_name.get("cine")
    if cine is not None and isinstance(cine.summary, dict):
        s = cine.summary

        # the pipeline's indexed values (measured value / unrounded BSA), the ones summary.json, the SR and the flags
        # give; only a result without them is indexed here, by the BSA shown
        given = cine.measurements.get("indexed") if isinstance(cine.measurements.get("indexed"), dict) \
            else s.get("indexed") if isinstance(s.get("indexed"), dict) else None

        def index(key: str):  # "lv_edvi_ml_m2": the indexed value of "lv_edv_ml"
            if given is not None:
                return given.get(key)
            value = s.get({"lv_mass_index_g_m2": "lv_mass_g"}.get(key, key.replace("i_ml_m2", "_ml")))
            return None if value is None or bsa is None else float(value) / bsa[0]

        refused = [f for f in s.get("flags") or [] if f.startswith("no indexed values: ")]
        why = refused[0].removeprefix("no indexed values: ") if refused else "height/weight missing"
        # "implausible weight 0 kg in the header", "PatientWeight absent from the header" (in full on page 2)
        no_index = why.split(" for BSA")[0] + " in the header" if " for BSA" in why else why.split(" (")[0]
        # a range flag within the model's known error of its limit is not listed as outside the range, but apart
        near = [f for f in s.get("flags") or [] if is_near_flag(f)]
        ranges = [f for f in s.get("flags") or [] if (is_range_flag(f) and not is_near_flag(f))
                  or str(f).startswith(REFERENCE_CHECK_STARTS)]
        notes = [f for f in s.get("flags") or [] if f not in ranges and f not in near]
        # part of the LV outside the stack (summary `coverage`): LV and RV volumes and mass are lower bounds, EF partial
        # only not confirmed covered at the base (coverage_note): "(base not confirmed)" after the row, no "≥"
        note = coverage_note(s.get("coverage"))
        partial = (s.get("coverage") or {}).get("complete") is False and not note
        ef_note = " (partial stack)" if partial else note

        def bound(value, unit: str) -> str:  # "≥ " on a partial stack, never before a 0 or n/a
            return lower_bound_text(value, unit, partial)

        # the flags that change how a number reads, named in its row (break51c #3: the Notes row, cut to its first
        # lines, had left "RVEF 68.0 %" without its "RV EDV and RVEF uncertain")
        caveats = {caveat.kind: caveat.text for caveat in reading_caveats(s)}

        def caveat(*kinds: str) -> str:
            return "".join(f"; {caveats[kind]}" for kind in kinds if kind in caveats)

        rows += [
            ("LV EF", _fmt(s.get("lv_ef_percent"), "%") + ef_note + caveat("es_uncertain"),
             _range_text("lv_ef_percent", sex)),
            ("LV EDV / EDVi",
             f"{bound(s.get('lv_edv_ml'), 'mL')} / {bound(index('lv_edvi_ml_m2'), 'mL/m²')}{note}",
             f"{_range_text('lv_edv_ml', sex)}; index {_range_text('lv_edvi_ml_m2', sex)}"),
            ("LV ESV / ESVi",
             f"{bound(s.get('lv_esv_ml'), 'mL')} / {bound(index('lv_esvi_ml_m2'), 'mL/m²')}{note}"
             + caveat("es_uncertain"), _range_text("lv_esv_ml", sex)),
            ("LV SV / EF", f"{_fmt(s.get('lv_sv_ml'), 'mL')} / {_fmt(s.get('lv_ef_percent'), '%')}{ef_note}"
             + (f"; SVi {_fmt(index('lv_svi_ml_m2'), 'mL/m²')}" if bsa is not None else "")
             + caveat("sv_mismatch"), ""),
            ("LV mass (cine, ED) / index",
             f"{bound(s.get('lv_mass_g'), 'g')} / {bound(index('lv_mass_index_g_m2'), 'g/m²')}{note}",
             "index " + _range_text("lv_mass_index_g_m2", sex) if bsa else
             "index " + _range_text("lv_mass_index_g_m2", sex) + f" (no index: {no_index})"),
            ("RV EDV / ESV", f"{bound(s.get('rv_edv_ml'), 'mL')} / {bound(s.get('rv_esv_ml'), 'mL')}"
             + (f"; EDVi {bound(index('rv_edvi_ml_m2'), 'mL/m²')} / ESVi {bound(index('rv_esvi_ml_m2'), 'mL/m²')}"
                if bsa is not None else "") + note + caveat("rv_edv_uncertain", "rv_esv_uncertain"),
             f"EDVi {_range_text('rv_edvi_ml_m2', sex)}"),
            ("RV SV / EF", f"{_fmt(s.get('rv_sv_ml'), 'mL')} / {_fmt(s.get('rv_ef_percent'), '%')}{ef_note}"
             + (f"; SVi {_fmt(index('rv_svi_ml_m2'), 'mL/m²')}" if bsa is not None else "")
             + caveat("rv_edv_uncertain", "rv_esv_uncertain", "sv_mismatch"),
             f"EF {_range_text('rv_ef_percent', sex)}"),
            # a result without the block (no slice measurable, or an older summary) has no row: page 1 is full
            *([(WALL_THICKNESS_ROW, wall_thickness_text(s.get("max_wall_thickness"), s.get("slices"), short=True),
                f"HCM if ≥ {HCM_THRESHOLD_MM:g} mm (adults)")]
              if wall_thickness_text(s.get("max_wall_thickness")) else []),
            ("ED / ES phase", _phases_text(s, cine.measurements.get("trigger_times") or (),
                                           [p for seg in cine.segmentations for p in seg.phases]),
             _phases_reference(s)),
            *([(FLAG_ROWS[0], "; ".join(_headline(f) for f in ranges), "ranges as in the column above")]
              if ranges else []),
            *([(FLAG_ROWS[2], "; ".join(_headline(f).split(", within the model's known error")[0] for f in near),
                NEAR_REFERENCE)] if near else []),
            *([(FLAG_ROWS[1], "; ".join(_headline(f) for f in notes),
                "in full on page 2, beside the volume curve")] if notes else []),
            *_stack_rows("cine", s),
            ("BSA", f"{_fmt(bsa[0], 'm²', 2)} ({bsa[1]})" if bsa else "n/a", ""),
        ]
        reference = s.get("reference_ranges") or {}
        age = reference.get("patient_age") or (f"of unknown age, a child's body size ({reference['child_body_size']})"
                                               if reference.get("child_body_size") else "under 18")
        if reference.get("adult_ranges_applied") is False:  # a child: no adult range shown
            rows = [(q, v, f"{ADULT_RANGES_NOT_APPLIED}: patient {age}" if q in ADULT_RANGE_ROWS else r)
                    for q, v, r in rows]
    return rows


def display_flag(flag, cine_summary: dict) -> str:
    """A cine flag as the pages print it: a value outside its range (is_range_flag: "LV ESV above normal range
    (223.0 mL; ...)", its number formatted from the unrounded value where the flag was made) gives the summary's
    stored value of that quantity rounded as every other output rounds it (dicomnode.rounding: 223.05 -> 223.1, as
    the key numbers) where the flag's number is that value otherwise rounded (within 0.05); any other flag as it
    is. (The flag text itself is made in dicomnode/analysis/cine_metrics.py normal_range_flags.)"""
    text = str(flag)
    if not is_range_flag(text) or not isinstance(cine_summary, dict):
        return text
    for key, spec in NORMAL_VALUES.items():
        if text.startswith(f"{spec['name']} "):
            value = cine_summary[key] if key in cine_summary else (cine_summary.get("indexed") or {}).get(key)
            found = re.search(r"\((-?\d+(?:\.\d+)?) ", text)
            # the same quantity, only rounded otherwise (within half a unit of the last decimal): rounded again
            if found and isinstance(value, (int, float)) and not isinstance(value, bool) and \
                    abs(float(found.group(1)) - float(value)) <= 0.05 + 1e-9:
                return f"{text[:found.start(1)]}{number_text(value, 1)}{text[found.end(1):]}"
    return text


def _headline(flag) -> str:
    """A flag without its parenthesised detail (the detail is in summary.json and on page 2)."""
    return str(flag).split(" (")[0]


def key_number_rows(results: Sequence[PipelineResult], bsa: tuple[float, str] | None) -> list[tuple[str, str]]:
    """(quantity, value) rows of the key-numbers table (key_number_table without the reference column)."""
    return [(quantity, value) for quantity, value, _ in key_number_table(results, bsa)]


def per_slice_scar_percent(result: SegmentationResult) -> np.ndarray:
    """Scar (incl. MVO) as % of the myocardium on each slice of the first phase; NaN where no myocardium."""
    labels = np.asarray(result.labelmap)[0]
    myocardium = np.isin(labels, MYOCARDIUM_LABELS).sum(axis=(1, 2)).astype(float)
    scar = np.isin(labels, ENHANCED_LABELS).sum(axis=(1, 2)).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(myocardium > 0, 100.0 * scar / np.maximum(myocardium, 1), np.nan)


def mid_ventricular_slice(result: SegmentationResult, phase_position: int = 0) -> int:
    """The slice with LV blood pool nearest the middle of the slices that contain any LV."""
    labels = np.asarray(result.labelmap)[phase_position]
    present = np.nonzero(np.isin(labels, [Label.LV_BLOOD_POOL, *MYOCARDIUM_LABELS]).any(axis=(1, 2)))[0]
    if present.size == 0:
        return labels.shape[0] // 2
    return int(present[len(present) // 2])


def crop_box(labelmap: np.ndarray, margin: int = 16,
             spacing: tuple[float, float] = (1.0, 1.0)) -> tuple[slice, slice]:
    """A (rows, cols) window around every labelled pixel of a (..., rows, cols) label map, with a margin, square in
    millimetres: `spacing` is (between rows, between columns) in mm (PixelSpacing), and `margin` counts pixels of
    the finer spacing. With square pixels the window is square in pixels."""
    rows, cols = labelmap.shape[-2:]
    found = np.nonzero(np.asarray(labelmap).reshape(-1, rows, cols).any(axis=0))
    if found[0].size == 0:
        return slice(0, rows), slice(0, cols)
    row_mm, col_mm = (float(v) for v in spacing)
    margin_mm = margin * min(row_mm, col_mm)
    margin_rows, margin_cols = int(np.ceil(margin_mm / row_mm - 1e-9)), int(np.ceil(margin_mm / col_mm - 1e-9))
    r0, r1 = found[0].min() - margin_rows, found[0].max() + 1 + margin_rows
    c0, c1 = found[1].min() - margin_cols, found[1].max() + 1 + margin_cols
    side_mm = min(max((r1 - r0) * row_mm, (c1 - c0) * col_mm), rows * row_mm, cols * col_mm)
    side_rows = min(rows, int(round(side_mm / row_mm)))
    side_cols = min(cols, int(round(side_mm / col_mm)))
    rc, cc = (r0 + r1) // 2, (c0 + c1) // 2
    r0 = int(np.clip(rc - side_rows // 2, 0, rows - side_rows))
    c0 = int(np.clip(cc - side_cols // 2, 0, cols - side_cols))
    return slice(r0, r0 + side_rows), slice(c0, c0 + side_cols)


def pixel_aspect(spacing: tuple[float, float]) -> float:
    """The height / width of one pixel on the page: row spacing / column spacing (PixelSpacing is (between rows,
    between columns)), so the heart has the shape a viewer shows, also where the pixels are not square."""
    row_mm, col_mm = (float(v) for v in spacing)
    return row_mm / col_mm if row_mm > 0 and col_mm > 0 else 1.0


def _show_overlay(ax, image: np.ndarray, labels: np.ndarray, title: str,
                  window: tuple[slice, slice] | None = None, aspect: float = 1.0) -> None:
    if window is not None:
        image, labels = image[window], labels[window]
    finite = image[np.isfinite(image)]
    low, high = (np.percentile(finite, [1, 99]) if finite.size else (0, 1))
    ax.imshow(image, cmap="gray", vmin=low, vmax=high if high > low else low + 1, interpolation="nearest",
              aspect=aspect)
    ax.imshow(np.clip(labels, 0, 5), cmap=_overlay_cmap(), vmin=-0.5, vmax=5.5, interpolation="nearest",
              aspect=aspect)
    ax.set_title(title, fontsize=PANEL_TITLE_FONT, pad=PANEL_TITLE_PAD)
    ax.set_axis_off()


def _find(results: Sequence[PipelineResult], name: str) -> PipelineResult | None:
    return next((r for r in results if r.name == name), None)


def _methods_lines(results: Sequence[PipelineResult]) -> list[str]:
    """How each number was made, in plain words (the report states its methods; cmr-reference.md)."""
    lines = []
    lge, cine = _find(results, "lge"), _find(results, "cine")
    if lge is not None and isinstance(lge.summary, dict):
        kind = lge.measurements.get("lge_kind") or "LGE"
        decision = lge.measurements.get("scar_decision") or {}
        offset = decision.get("scar_log_offset") or 0.0
        source = source_series_name(lge.summary)
        lines += [
            f"LGE: deep-learning segmentation of the {str(kind).upper()} short-axis stack"
            + (f" ({source})" if source else "") + "; %LGE = scar incl. MVO / "
            "whole LV myocardium x 100; LV mass = myocardial volume x 1.05 g/mL."
            + (f" Scar decision calibrated for {'scanner-native' if decision.get('input_kind') == 'native' else '8-bit'}"
               f" input: scar probability weighted by e^{offset:+.2f} against the other classes (model card)."
               if offset else ""),
            "n-SD: signal above remote-myocardium mean + n SD; FWHM: above half the maximum enhanced signal (PSIR: "
            "above the remote mean), both inside the DL myocardium without its endocardial rim. Threshold methods can "
            "differ from the DL result by 2x or more (they measure signal, the DL model a delineation): report the "
            "method.",
        ]
        mvo = mvo_validation_text(lge.summary.get("mvo_validation"))
        if lge.summary.get("mvo_volume_ml") is not None and mvo:  # an MVO volume given (not withheld): qualified
            lines.append(f"MVO (purple): {mvo}. The MVO volume is given as segmented; whether MVO is present or "
                         "absent is not stated.")
        nsd, fwhm = lge.summary.get("nsd"), lge.summary.get("fwhm")
        if lge.summary.get("determined") is not False and (isinstance(nsd, dict) or isinstance(fwhm, dict)):
            lines += threshold_method_lines(nsd or {}, fwhm or {})  # withheld numbers: the key numbers say why
    if cine is not None and isinstance(cine.summary, dict):
        flagged = (cine.summary.get("timing") or {}).get("flagged_phases") or []
        sent, cycle = cycle_phases(cine.summary)
        of_cycle = f" (of the {cycle} phases of the cycle)" if cycle else ""
        timing = (f"ED / ES = larger / smaller LV volume of the {sent} phases sent{of_cycle}, too few for a volume "
                  "curve: not detected over the cycle" if 0 < sent < MIN_PHASES_FOR_CURVE else
                  (TIMING_METHOD_UNTRIGGERED if any(str(n).startswith(UNTRIGGERED_START) for n in
                                                    (cine.summary.get("timing") or {}).get("notes") or [])
                   else TIMING_METHOD)
                  + (f", found among the {sent} phases sent{of_cycle}" if cycle else "")
                  + ("" if 0 < sent < MIN_PHASES_FOR_CURVE else f"; {RV_TIMING_METHOD}"))
        source = source_series_name(cine.summary)
        lines.append("Cine" + (f" ({source})" if source else "") + ": summation of discs; LV blood pool counted in a slice where >= 50 % of its outline borders "
                     f"myocardium (SCMR 2020), the same rule at every phase; {timing}"
                     + (f"; {phases_name(flagged, summary_phase_numbers(cine.summary))} ({COUNTED_FROM}) not used as ED or ES (LV volume jumps, "
                        "marked x on the volume curve)" if flagged else "")
                     + "; papillary muscles counted in the cavity; LV mass at ED x 1.05 g/mL. Reference ranges: SSFP "
                     "mean +/- 2 SD (LV: 2015 SCMR review; RV EDVi: Alfakih 2003), RVEF against the RV systolic "
                     "dysfunction cut-off <= 45 % (Gulati 2013); LV and RV stroke volumes flagged where they differ by "
                     f"over {SV_MISMATCH_ML:g} mL and {100 * SV_MISMATCH_FRACTION:g} %. A value beyond a limit by no "
                     "more than the model's mean absolute error against expert readers, once its systematic mean error "
                     "(bias) is taken off (card cross-validation), is called within the model's error: confirm by reading."
                     f" Maximal ED wall thickness: {WALL_THICKNESS_METHOD}."
                     + (" ED and ES segmented again by a wider network, which gives EDV, ESV, EF and mass (other "
                        "phases and the choice of ED/ES: the all-phase network)."
                        if cine.summary.get("ed_es_refinement") else ""))
    if any(isinstance(r.summary, dict) and isinstance(r.summary.get("aha_segments"), dict) for r in results):
        lines.append("AHA 17 segments (Cerqueira 2002): thirds of the slices with LV cavity, septum between the RV "
                     "insertion points; scar extent = % of the segment's myocardium; transmurality = scar share of the "
                     "wall along rays from the LV centre, one per degree; the segment's class 0/1-25/26-50/51-75/76-100 % "
                     "from its mean over the rays (the SR also gives the maximum).")
        for result in results:  # thirds of a stack that misses part of the LV (lge.aha_segments.caveat)
            block = result.summary.get("aha_segments") if isinstance(result.summary, dict) else None
            if isinstance(block, dict) and block.get("applicable") and block.get("caveat"):
                lines.append(f"AHA segments ({'LGE' if result.name == 'lge' else result.name}): {block['caveat']}.")
    for result in results:  # OHIF v3 misplaces the SR's outlines on such images (regions.NON_SQUARE_NOTE)
        notes = [non_square_note(s.volume.pixel_spacing) for s in getattr(result, "segmentations", ())
                 if s.volume is not None]
        note = next((n for n in notes if n), None)
        if note and isinstance(result.summary, dict):
            lines.append(f"{'LGE' if result.name == 'lge' else result.name.capitalize()}: {note}.")
    return lines


def _bullseye_values(results: Sequence[PipelineResult]):
    """(values, labels, title, unit, vmax, cmap) of the bullseye: LGE scar extent, else cine ED wall thickness; the
    LGE title says where the node does not state LGE present ("...: no significant LGE by the automatic count (< 1.5 %)",
    "...: LGE presence uncertain", lge_metrics.presence_short)."""
    for name, key, title, unit, vmax, cmap in (
            ("lge", "scar_extent_percent", "Scar extent per AHA segment", "% of segment", 100.0, "YlOrRd"),
            ("cine", "wall_thickness_mm", "ED wall thickness per AHA segment", "mm", 15.0, "viridis")):
        result = _find(results, name)
        block = result.summary.get("aha_segments") if result is not None and isinstance(result.summary, dict) \
            else None
        if isinstance(block, dict):
            if not block.get("applicable"):
                withheld = name == "lge" and result.summary.get("determined") is False  # the key numbers say why
                why = f"LGE numbers {SEE_KEY_NUMBERS}" if withheld else \
                    block.get("reader_reason") or block.get("reason", "unknown reason")
                return None, None, f"AHA segments not assigned: {why}", "", 0, ""
            values = {int(v["segment"]): v.get(key) for v in block.get("segments", [])}
            labels = {int(v["segment"]): v.get("transmurality_class") for v in block.get("segments", [])} \
                if name == "lge" else None
            presence = presence_short(result.summary.get("lge_presence")) if name == "lge" else None
            return values, labels, f"{title}: {presence}" if presence else title, unit, vmax, cmap
    return None, None, "AHA segments: no segmental analysis", "", 0, ""


PHASE_SHORT = {"end diastole": "ED", "end systole": "ES"}
#: the overlay colours (LABEL_COLOURS) each pipeline's images draw, in words: the cine model's myocardium is the
#: whole myocardium, the LGE model's green is the non-enhanced part beside scar (without MVO) and MVO
OVERLAY_LEGENDS = {
    "cine": "red LV blood pool, green LV myocardium (whole), blue RV blood pool",
    "lge": "red LV blood pool, green non-enhanced LV myocardium, yellow scar (without MVO), purple MVO, "
           "blue RV blood pool",
}
#: both pipelines' images on one page: the green differs, scar and MVO are LGE's only
OVERLAY_LEGEND_BOTH = ("red LV blood pool, blue RV blood pool, green LV myocardium (cine: whole; LGE: non-enhanced "
                       "part), yellow scar (without MVO) and purple MVO on the LGE images only")


def _shown(results: Sequence[PipelineResult], name: str) -> PipelineResult | None:
    """The result of pipeline `name` where it has a segmentation to show on page 1 (a declined one has none)."""
    result = _find(results, name)
    return result if result is not None and result.segmentations else None


def overlay_legend(results: Sequence[PipelineResult]) -> str:
    """The colours of the overlays page 1 shows, for the pipelines shown only; "none" where none is. The purple MVO
    is "purple MVO (not validated)" where the LGE segmentation's MVO is (SegmentationResult.unvalidated_labels)."""
    shown = [name for name in ("cine", "lge") if _shown(results, name) is not None]
    legend = OVERLAY_LEGEND_BOTH if len(shown) == 2 else OVERLAY_LEGENDS[shown[0]] if shown else "none"
    lge = _shown(results, "lge")
    if lge is not None and int(Label.MVO) in {int(v) for s in lge.segmentations for v in s.unvalidated_labels}:
        legend = legend.replace("purple MVO", "purple MVO (not validated)")
    return legend


def slice_levels(result: PipelineResult, segmentation: SegmentationResult) -> dict[int, str]:
    """Slice index -> "basal" | "mid" | "apical" | "apex" of a short-axis stack (the AHA thirds of the summary where
    the AHA model was applied, else thirds of the slices with LV myocardium, the basal end from the stack's
    direction in the patient); {} for another view or a stack whose basal end is unknown, and where the analysis
    withheld the thirds (numbers not determined, or an LV spanning clearly less than a whole one:
    `coverage.lv_shorter_than_whole`), so that the PDF never names levels the summary refused to name."""
    if getattr(getattr(segmentation.series, "view", None), "value", None) != "sax":
        return {}
    summary = result.summary if isinstance(result.summary, dict) else {}
    block = summary.get("aha_segments")
    coverage = summary.get("coverage") if isinstance(summary.get("coverage"), dict) else {}
    if summary.get("determined") is False or coverage.get("lv_shorter_than_whole"):
        return {}
    if isinstance(block, dict) and block.get("applicable") and isinstance(block.get("thirds"), dict):
        return {int(k): level for level, slices in block["thirds"].items() for k in slices}
    labels = np.asarray(segmentation.labelmap)[0]
    try:
        basal_end = basal_end_for_volume(labels, segmentation.volume)
    except (TypeError, ValueError):
        return {}
    present = [k for k in range(labels.shape[0]) if np.isin(labels[k], MYOCARDIUM_LABELS).any()]
    present = present if basal_end == "first" else present[::-1]
    return {int(k): level for level, part in zip(("basal", "mid", "apical"), np.array_split(present, 3))
            for k in part}


def slice_identities(segmentation: SegmentationResult, phase_position: int = 0) -> list[dict]:
    """How a reader finds each slice of one phase in a viewer, in volume order: the source image's Series Number,
    Instance Number (and frame number of a multi-frame image), and its position along the stack in mm (the image's
    Slice Location where it has one, as viewers show it, else ImagePositionPatient along the stack normal)."""
    volume = segmentation.volume
    headers = {str(i.sop_instance_uid): i.dataset for i in segmentation.series.instances}
    try:
        along, _ = stack_geometry(volume.orientation, volume.positions)
    except (TypeError, ValueError):
        along = [None] * len(volume.frames[0])
    found = []
    for k, ref in enumerate(volume.frames[segmentation.phases[phase_position]]):
        dataset = headers.get(str(ref.sop_instance_uid))
        values = {}
        for keyword in ("SeriesNumber", "InstanceNumber", "SliceLocation"):
            try:
                values[keyword] = float(dataset.get(keyword)) if dataset is not None else None
            except (TypeError, ValueError):
                values[keyword] = None
        location = values["SliceLocation"] if values["SliceLocation"] is not None else \
            (float(along[k]) if along[k] is not None else None)
        found.append({"series": None if values["SeriesNumber"] is None else int(values["SeriesNumber"]),
                      "instance": None if values["InstanceNumber"] is None else int(values["InstanceNumber"]),
                      "frame": ref.frame_number, "location_mm": location})
    return found


def slice_name(identity: dict) -> str:
    """"S:7 I:3, 26.0 mm": the source series and image (Instance) number as a viewer's overlay shows them (OHIF:
    "S:7" on the series, "I:3 (3/8)" on the image), then the slice position; parts the source lacks are left out."""
    numbers = []
    if identity.get("series") is not None:
        numbers.append(f"S:{identity['series']}")
    if identity.get("instance") is not None:
        numbers.append(f"I:{identity['instance']}" + (f" F:{identity['frame']}" if identity.get("frame") else ""))
    parts = [" ".join(numbers)] if numbers else []
    if identity.get("location_mm") is not None:
        parts.append(f"{identity['location_mm']:.1f} mm")
    return ", ".join(parts)


def _image_panels(results: Sequence[PipelineResult]) -> list[tuple[np.ndarray, np.ndarray, str, tuple, float]]:
    """(image, labels, title, crop window, pixel aspect) of the overlays: cine ED and ES mid-ventricular, LGE basal/
    mid/apical. Each title names the slice as a viewer shows it (slice_identities: source series and image number,
    position in mm) and its level of a short-axis stack (slice_levels); the window is square in mm and the aspect
    that of the pixels."""
    panels = []
    cine = _shown(results, "cine")
    cine_seg = cine.segmentations[0] if cine is not None else None
    if cine_seg is not None:
        spacing = cine_seg.volume.pixel_spacing
        window = crop_box(cine_seg.labelmap, spacing=spacing)
        levels = slice_levels(cine, cine_seg)
        for position, name in enumerate(cine_seg.phase_names[:2]):
            k = mid_ventricular_slice(cine_seg, position)
            phase = _phase_label(cine.summary, cine_seg.phases[position])
            level = f" {levels[k]}" if k in levels else ""
            where = slice_name(slice_identities(cine_seg, position)[k])
            panels.append((cine_seg.volume.pixels[cine_seg.phases[position], k],
                           np.asarray(cine_seg.labelmap)[position, k],
                           f"cine {PHASE_SHORT.get(name, name)} ({phase}){level}: {where}", window,
                           pixel_aspect(spacing)))
    lge = _shown(results, "lge")
    lge_seg = lge.segmentations[0] if lge is not None else None
    if lge_seg is not None:
        labels = np.asarray(lge_seg.labelmap)[0]
        present = np.nonzero(np.isin(labels, MYOCARDIUM_LABELS).any(axis=(1, 2)))[0]
        chosen = [int(present[int(round(q * (len(present) - 1)))]) for q in (0.15, 0.5, 0.85)] if present.size else []
        spacing = lge_seg.volume.pixel_spacing
        window = crop_box(lge_seg.labelmap, spacing=spacing)
        extent = per_slice_scar_percent(lge_seg)
        levels = slice_levels(lge, lge_seg)
        identities = slice_identities(lge_seg)
        withheld = isinstance(lge.summary, dict) and lge.summary.get("determined") is False
        for k in sorted(dict.fromkeys(chosen), key=lambda k: _viewer_rank(identities, k)):
            level = f" {levels[k]}" if k in levels else ""
            what = "segmentation unreliable, numbers not determined" if withheld else \
                f"scar {_fmt(extent[k], '%', 0, below=True)}"
            panels.append((lge_seg.volume.pixels[lge_seg.phases[0], k], labels[k],
                           f"LGE{level} ({what}): {slice_name(identities[k])}", window,
                           pixel_aspect(spacing)))
    return panels[:6]


def _viewer_rank(identities: list[dict], k: int) -> tuple:
    """The place of slice k in a viewer's order: source Series Number, then Instance Number (then volume order)."""
    identity = identities[k]
    return (identity["series"] if identity["series"] is not None else float("inf"),
            identity["instance"] if identity["instance"] is not None else float("inf"), k)


def _phases_text(cine_summary: dict, trigger_times: Sequence[float | None] = (), outlined: Sequence[int] = ()) -> str:
    """ED / ES phases counted from 1 as a viewer counts them, out of the cine's phases; where those are not a
    whole cycle (partial_cycle), "of the N phases sent" and the frames' TriggerTime (ms) where known; then the RV's
    own phases where they differ (_rv_phases_text; `outlined`: the phase indices the cine segmentation carries)."""
    ed, es = cine_summary.get("ed_phase"), cine_summary.get("es_phase")
    if ed is None or es is None:
        return "n/a"
    sent, _ = cycle_phases(cine_summary)
    acquired = summary_phase_numbers(cine_summary)
    numbers = f"{phase_number(ed, acquired)} / {phase_number(es, acquired)}"
    if not partial_cycle(cine_summary):
        return (numbers + (f" of {sent}" if sent else "") + f" ({COUNTED_FROM})"
                + _rv_phases_text(cine_summary, outlined))
    times = [trigger_times[p] if 0 <= int(p) < len(trigger_times) else None for p in (ed, es)]
    known = all(t is not None for t in times)
    return (f"{numbers} of the {sent} phases sent ({COUNTED_FROM})"
            + (f"; TriggerTime {_fmt(times[0], 'ms', 0)} / {_fmt(times[1], 'ms', 0)}" if known else "")
            + _rv_phases_text(cine_summary, outlined))


#: said after the RV's own ED / ES phases where they differ from the LV's and the cine segmentation carries them
#: (analysis.cine.segmented_phases): the SEG and the SR outline the RV there, this report's images are at the LV's;
#: "{seg}" is the RV SEG's phase ("RV ED/ES", "RV ES"), as its series description begins ("AI unverified RV ES cine")
RV_OUTLINE_AT_RV_PHASE = "RV's own; outlined in SEG '{seg}'; images below at the LV's phases"
#: said instead where the segmentation does not carry them: every RV contour shown is at the LV's phases
RV_OUTLINE_AT_LV_PHASE = "RV's own; RV outlines shown at the LV's phases"


def _rv_phases_text(cine_summary: dict, outlined: Sequence[int] = ()) -> str:
    """"; RV EDV / ESV read at phases 1 / 7 (RV's own; outlined in SEG 'RV ED/ES'; images below at the LV's
    phases)": the phases RV EDV / ESV were read at (summary `timing.rv_ed_phase` / `rv_es_phase`,
    cine_metrics.rv_cardiac_phases), counted from 1, where either differs from the LV's ED / ES, and where the RV is
    outlined at them: RV_OUTLINE_AT_RV_PHASE where `outlined` (the phase indices the cine segmentation carries, so its
    SEGs and the SR's RV groups) holds each that differs, else RV_OUTLINE_AT_LV_PHASE. The numbers are read at the
    RV's phases, the images of this report at the LV's (break51c #5: "figures at the LV's" read as the numbers). ""
    where both are the LV's."""
    ed, es = cine_summary.get("ed_phase"), cine_summary.get("es_phase")
    timing = cine_summary.get("timing") if isinstance(cine_summary.get("timing"), dict) else {}
    rv_ed, rv_es = timing.get("rv_ed_phase", ed), timing.get("rv_es_phase", es)
    if None in (ed, es, rv_ed, rv_es) or (int(rv_ed), int(rv_es)) == (int(ed), int(es)):
        return ""
    acquired = summary_phase_numbers(cine_summary)
    differing = [(name, int(rv)) for name, rv, lv in (("ED", rv_ed, ed), ("ES", rv_es, es)) if int(rv) != int(lv)]
    where = RV_OUTLINE_AT_RV_PHASE.format(seg="RV " + "/".join(name for name, _ in differing)) \
        if {rv for _, rv in differing} <= {int(p) for p in outlined} else RV_OUTLINE_AT_LV_PHASE
    return (f"; RV EDV / ESV read at phases {phase_number(int(rv_ed), acquired)} / "
            f"{phase_number(int(rv_es), acquired)} ({where})")


def _phases_reference(cine_summary: dict) -> str:
    """The reference column of the ED / ES row: how ED and ES were found where the phases are not a whole cycle."""
    sent, cycle = cycle_phases(cine_summary)
    if cycle is not None and sent < MIN_PHASES_FOR_CURVE:
        return (f"only {sent} of the {cycle} phases of the cycle sent: ED / ES = larger / "
                f"smaller LV volume of these {sent}, not detected over the cycle")
    if cycle is not None:
        return (f"only {sent} of the {cycle} phases of the cycle sent: ED / ES found among "
                f"these {sent}, the true ones may be missing")
    if 0 < sent < MIN_PHASES_FOR_CURVE:
        return (f"only {sent} phases sent: ED / ES = larger / smaller LV volume of these {sent}, not detected over "
                "a cycle")
    return ""


def _phase_label(cine_summary: dict, index: int) -> str:
    """"phase 3", or where the phases are not a whole cycle (partial_cycle) "phase 9 of 20; 2 sent" where the
    phases are numbered on the acquired cycle (summary `phases_acquired` is the cycle's count), else "phase 1 of 2
    sent" (numbered as sent: nothing placed them on the cycle)."""
    if isinstance(cine_summary, dict) and partial_cycle(cine_summary):
        sent, cycle = cycle_phases(cine_summary)
        name = phase_name(index, summary_phase_numbers(cine_summary))
        on_cycle = cycle is not None and cine_summary.get("phases_acquired") == cycle
        return f"{name} of {cycle}; {sent} sent" if on_cycle else f"{name} of {sent} sent"
    return phase_name(index, summary_phase_numbers(cine_summary) if isinstance(cine_summary, dict) else None)


#: the font of the page header: DejaVu Sans (shipped with matplotlib) has Latin, Greek and Cyrillic glyphs
HEADER_FONT = "DejaVu Sans"
#: fonts with Chinese, Japanese (kana and kanji) and Korean (Hangul) glyphs, the first installed of them taken as the
#: pages' fallback for a character HEADER_FONT lacks (matplotlib's per-glyph font fallback, text stays text in the
#: PDF): (family, the file where its Debian package installs it). fonts-wqy-microhei (5 MB, installed by .ci/run)
#: covers all three; fonts-noto-cjk (90 MB) too. Where none is installed, such a character is drawn as '?' in
#: HEADER_FONT and the page says so (mark_undrawable), never as an empty box
CJK_FONTS = (("WenQuanYi Micro Hei", "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
             ("Noto Sans CJK JP", "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"))
#: said in the banner of a page on which mark_undrawable replaced a character
UNDRAWABLE_NOTE = ("'?' stands for characters no font on this system has (Chinese, Japanese, Korean: install the "
                   "Debian package fonts-wqy-microhei)")
#: (script as the banner names it, Debian font package that draws it) for a character no report font has, by the
#: start of its Unicode name; CJK ideographs beyond the BMP (U+20000-, e.g. 𠮷) are in none of CJK_FONTS
FONT_PACKAGES = (("CJK UNIFIED IDEOGRAPH-2", ("Chinese, Japanese, Korean beyond the BMP", "fonts-hanazono")),
                 ("CJK UNIFIED IDEOGRAPH-3", ("Chinese, Japanese, Korean beyond the BMP", "fonts-hanazono")),
                 ("CJK", ("Chinese, Japanese, Korean", "fonts-wqy-microhei")),
                 ("HIRAGANA", ("Chinese, Japanese, Korean", "fonts-wqy-microhei")),
                 ("KATAKANA", ("Chinese, Japanese, Korean", "fonts-wqy-microhei")),
                 ("HALFWIDTH", ("Chinese, Japanese, Korean", "fonts-wqy-microhei")),
                 ("FULLWIDTH", ("Chinese, Japanese, Korean", "fonts-wqy-microhei")),
                 ("HANGUL", ("Chinese, Japanese, Korean", "fonts-wqy-microhei")),
                 ("BOPOMOFO", ("Chinese, Japanese, Korean", "fonts-wqy-microhei")),
                 ("IDEOGRAPHIC", ("Chinese, Japanese, Korean", "fonts-wqy-microhei")),
                 ("THAI", ("Thai", "fonts-thai-tlwg")))
#: the package for a script FONT_PACKAGES does not name (Noto's core fonts: Indic, Ethiopic, Armenian, Georgian ...)
OTHER_SCRIPTS_PACKAGE = "fonts-noto-core"
ABSENT = "not given"  # a header attribute absent or empty
SEXES = {"M": "male", "F": "female", "O": "other"}  # PatientSex (0010,0040) defined terms


@functools.cache
def report_fonts() -> tuple[str, ...]:
    """The font families the pages draw text in, in fallback order: HEADER_FONT, then the first of CJK_FONTS
    installed (registered with matplotlib's font manager from its file where matplotlib's font cache was built
    before the font was installed). A CJK font without a bold face gets its regular face listed as bold too (CJK
    characters of a bold text are drawn regular; matplotlib would log a warning for every bold text otherwise).

    With no CJK font, matplotlib's "Glyph ... missing from font(s)" warnings are ignored in this process: the page
    is laid out with them, then mark_undrawable draws each such character as '?' and says so on the page."""
    import dataclasses
    import warnings

    from matplotlib import font_manager

    manager = font_manager.fontManager
    families: tuple[str, ...] = (HEADER_FONT,)
    for family, path in CJK_FONTS:
        if not any(entry.name == family for entry in manager.ttflist) and Path(path).is_file():
            manager.addfont(path)
        entries = [entry for entry in manager.ttflist if entry.name == family]
        if entries:
            if not any(font_manager.weight_dict.get(entry.weight, entry.weight) == 700 for entry in entries):
                manager.ttflist.append(dataclasses.replace(entries[0], weight=700))
                manager._findfont_cached.cache_clear()  # as FontManager.addfont does after adding an entry
            families = (HEADER_FONT, family)
            break
    else:
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font", category=UserWarning)
    return families


def _use_report_fonts() -> None:
    """Before a page makes any text: matplotlib's rcParams["font.family"] = report_fonts (each text falls back from
    HEADER_FONT to the CJK font glyph by glyph; Latin, Greek and Cyrillic are drawn in HEADER_FONT as before). Set
    for the process, the same value by every page: rcParams are process-wide, and an rc_context per page would
    race between analysis threads."""
    import matplotlib

    families = list(report_fonts())
    if matplotlib.rcParams["font.family"] != families:
        matplotlib.rcParams["font.family"] = families


@functools.cache
def _font_glyphs() -> frozenset[int]:
    """The code points that one of report_fonts has glyphs for."""
    from matplotlib import font_manager

    glyphs: set[int] = set()
    for family in report_fonts():
        path = font_manager.findfont(font_manager.FontProperties(family=family))
        glyphs.update(font_manager.get_font(path).get_charmap())
    return frozenset(glyphs)


def _drawable(text: str) -> bool:
    """True where report_fonts have a glyph for every character of `text` (spaces and controls aside)."""
    glyphs = _font_glyphs()
    return all(ord(c) in glyphs for c in text if c.isprintable() and not c.isspace())


def _partly_drawable(text: str) -> bool:
    """True where report_fonts have a glyph for some character of `text` that is not ASCII punctuation or space (a
    name group 𠮷野 with one ideograph beyond the fonts is shown, that one as '?')."""
    glyphs = _font_glyphs()
    return any(ord(c) in glyphs for c in text if c.isprintable() and not c.isspace() and (c.isalnum() or
                                                                                           not c.isascii()))


def font_package(character: str) -> tuple[str, str]:
    """(script, Debian package with a font for it) of a character no report font has (FONT_PACKAGES)."""
    name = unicodedata.name(character, "")
    for start, found in FONT_PACKAGES:
        if name.startswith(start):
            return found
    script = name.split(" ")[0].capitalize() if name else f"U+{ord(character):04X}"
    return script, OTHER_SCRIPTS_PACKAGE


def undrawable_note(characters) -> str:
    """The banner line for a page on which `characters` were drawn as '?': what '?' stands for and the font package
    for each script among them (UNDRAWABLE_NOTE for Chinese, Japanese and Korean alone)."""
    advice: dict[str, list[str]] = {}
    for character in sorted(set(characters)):
        script, package = font_package(character)
        advice.setdefault(package, [])
        if script not in advice[package]:
            advice[package].append(script)
    return ("'?' stands for characters no font on this system has ("
            + "; ".join(f"{', '.join(scripts)}: install the Debian package {package}"
                        for package, scripts in advice.items()) + ")")


def page_text(value) -> str:
    """A header value as one line of page text: control characters (a CR LF in a PatientName, invalid for PN but
    seen) become one space, so nothing is drawn over the line above or below; half-width katakana full-width
    (full_width_katakana); several values joined by "\\"."""
    if isinstance(value, (list, tuple)) or (hasattr(value, "__iter__") and not isinstance(value, (str, bytes))
                                             and not isinstance(value, PersonName)):
        return "\\".join(page_text(item) for item in value)
    return full_width_katakana(re.sub(r"[^\S ]+|[\x00-\x1f\x7f-\x9f]+", " ",
                                      str(value if value is not None else "")).strip())


_HALF_WIDTH_KATAKANA = re.compile(r"[\uff65-\uff9f]+")


def full_width_katakana(text: str) -> str:
    """`text` with each run of half-width katakana (JIS X 0201, ISO_IR 13: "ﾔﾏﾀﾞ") in its full-width form ("ヤマダ",
    Unicode's compatibility mapping, NFKC), a voiced or semi-voiced mark joined to its letter. The PDF writer
    (matplotlib) maps each glyph of a shaped cluster to the whole cluster, so a half-width letter with its separate
    voiced mark read twice in the PDF's text layer ("ﾔﾏﾀﾞﾀﾞ": search and copy found a doubled name, break45b #10);
    the full-width letter is one glyph. Other text is returned as it is."""
    return _HALF_WIDTH_KATAKANA.sub(lambda run: unicodedata.normalize("NFKC", run.group()), text)


def mark_undrawable(figure: Figure) -> None:
    """Every character of the page's texts that no report font has (no CJK font installed: CJK_FONTS) becomes '?',
    and the banner says what '?' stands for and which font package draws it (undrawable_note): the text stays readable as far as the fonts go,
    rather than drawn as empty boxes. Half-width katakana is drawn full-width first (full_width_katakana), so that
    the PDF's text layer reads each letter once."""
    from matplotlib.text import Text

    glyphs = _font_glyphs()
    missing: set[str] = set()
    for text in figure.findobj(Text):
        if _HALF_WIDTH_KATAKANA.search(text.get_text()):
            text.set_text(full_width_katakana(text.get_text()))
        value = text.get_text()
        shown = "".join(c if ord(c) in glyphs or c.isspace() or not c.isprintable() else "?" for c in value)
        if shown != value:
            text.set_text(shown)
            missing.update(c for c, d in zip(value, shown) if c != d)
    if missing:
        note = figure.text(0.5, 0.9585, undrawable_note(missing), ha="center", va="bottom", color="white",
                           fontsize=6, family=HEADER_FONT)
        fit_width(note, figure, 0.92)


def person_name(value) -> str:
    """A DICOM PN (PatientName) as a report shows it: "Family, Given Middle" with prefix before the given names
    and suffix after them ("Family, Dr Given, Jr"), of the alphabetic group, else of the first ideographic or
    phonetic group that the report's fonts (report_fonts: a CJK font where one is installed) can draw, at least in
    part (a character beyond them is drawn as '?': mark_undrawable); the other groups present that the fonts can draw
    follow in parentheses, their parts in the name's order ("Yamada, Tarou
    (山田 太郎, やまだ たろう)" for "Yamada^Tarou=山田^太郎=やまだ^たろう"). Where no group can be drawn, the first
    group alone (drawn with '?' for what no font has: mark_undrawable); ABSENT where the name is empty."""
    if value is not None and not isinstance(value, (str, bytes, PersonName)) and hasattr(value, "__iter__"):
        return " \\ ".join(person_name(item) for item in value) or ABSENT  # VM > 1: invalid for PatientName
    if value is None or page_text(value).strip(" ^=") == "":
        return ABSENT
    name = PersonName(page_text(value))
    shown = []  # ("Family, Given", "Family Given") of each group present
    for group in name.components:
        family, given, middle, prefix, suffix = (list(group.split("^")) + [""] * 5)[:5]
        rest = " ".join(part for part in (prefix, given, middle) if part.strip())
        parts = [part for part in (family.strip(), rest.strip(), suffix.strip()) if part]
        if parts:
            shown.append((", ".join(parts), " ".join(parts)))
    drawable = list(dict.fromkeys(group for group in shown if _partly_drawable(group[0])))
    if not drawable:
        return shown[0][0] if shown else ABSENT
    others = list(dict.fromkeys(spaced for _, spaced in drawable[1:] if spaced != drawable[0][1]))
    return drawable[0][0] + (f" ({', '.join(others)})" if others else "")


def _date(value) -> str:
    """A DICOM DA (YYYYMMDD) as YYYY-MM-DD; any other text as it is; ABSENT where empty."""
    text = page_text(value or "")
    if not text:
        return ABSENT
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if re.fullmatch(r"\d{8}", text) else text


def _written(header: Dataset, keyword: str, unit: str) -> str:
    """A PatientSize / PatientWeight as the header holds it, with its DICOM unit ("1.5 m", "130 m": a value in
    another unit shown as written, for a reader to see; "66 kg (not a number in kg)"); ABSENT where there is none."""
    try:
        text = page_text(header.get(keyword) if header.get(keyword) is not None else "")
    except (TypeError, ValueError):  # a value pydicom cannot convert ("66 kg"): as written
        raw = getattr(header.get_item(keyword), "value", b"")
        text = page_text(raw.decode("latin-1", "replace") if isinstance(raw, bytes) else raw)
    if not text:
        return ABSENT
    try:
        float(text)
    except ValueError:
        return f"{text} (not a number in {unit})"
    return f"{text} {unit}"


def _age_used(header: Dataset) -> str:
    """The age the reference ranges were chosen by (cmr.age.age_reading, as the cine reads it) with its source:
    "8 years (from PatientBirthDate and StudyDate)"; "unknown" where there is none."""
    age = age_reading(header).age
    return "unknown" if age is None else f"{age.text} (from {age.source})"


def identification_line(header: Dataset) -> str:
    """Who and which study the page reports on, each value labelled: patient name (PN shown readably), Patient
    ID, birth date, sex, study date and accession number; then the inputs of the reference ranges and the BSA: the
    age used with its source (_age_used), PatientSize and PatientWeight as written; ABSENT for a value the header
    lacks."""
    sex = page_text(header.get("PatientSex") or "").upper()
    fields = [
        ("Patient", person_name(header.get("PatientName"))),
        ("Patient ID", page_text(header.get("PatientID")) or ABSENT),
        ("Birth date", _date(header.get("PatientBirthDate"))),
        ("Sex", SEXES.get(sex, sex) or ABSENT),
        ("Study date", _date(header.get("StudyDate"))),
        ("Accession no.", page_text(header.get("AccessionNumber")) or ABSENT),
        ("Age", _age_used(header)),
        ("Height", _written(header, "PatientSize", "m")),
        ("Weight", _written(header, "PatientWeight", "kg")),
    ]
    return FIELD_SEPARATOR.join(f"{label}: {value}" for label, value in fields)


def _page(title_suffix: str, header: Dataset, context, results: Sequence[PipelineResult]) -> Figure:
    """An A4 page with the red 'not verified' banner and the identification lines (shrunk to the page width; the
    patient's broken onto two where it would be too small: fit_identification)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    figure = Figure(figsize=PAGE_INCHES)
    FigureCanvasAgg(figure)
    figure.patches.append(Rectangle((0.0, 0.955), 1.0, 0.045, transform=figure.transFigure, color="#b00020",
                                    zorder=0))
    figure.text(0.5, 0.977, BANNER, ha="center", va="center", color="white", fontsize=12, weight="bold")
    started: dt.datetime = context.started_at
    offset = f" UTC{started:%z}" if started.utcoffset() is not None else ""  # the source study's (provenance)
    title = figure.text(0.04, 0.94, f"{DOCUMENT_TITLE}{title_suffix}   -   analysis {started:%Y-%m-%d %H:%M:%S}{offset}",
                        fontsize=8.5, weight="bold", family=list(report_fonts()))
    patient = figure.text(0.04, 0.927, identification_line(header), fontsize=8, family=list(report_fonts()))
    algorithms = sorted({f"{a.name} {a.version}" for r in results for a in r.algorithms})
    credits = figure.text(0.04, 0.915, "Algorithms: " + ("; ".join(algorithms) or "n/a")
                          + f"   -   dicomnode {node_version()}", fontsize=6.5, color="#444444",
                          family=list(report_fonts()))
    for line in (title, credits):
        fit_width(line, figure, 0.92)
    if fit_identification(patient, figure, 0.92):
        credits.set_y(0.9085)
        credits.set_fontsize(min(credits.get_fontsize(), 6.0))
    return figure


#: between the labelled fields of the identification line
FIELD_SEPARATOR = "   "
#: the smallest font (points) the identification line is shrunk to on one line before it is broken onto two
IDENTIFICATION_MIN_FONT = 6.5
ELLIPSIS = "\u2026"


def fit_identification(text: Text, figure: Figure, width: float) -> bool:
    """Fit the identification line (identification_line) into `width` of the page without losing a field: shrunk on
    one line down to IDENTIFICATION_MIN_FONT; else broken between two fields onto two lines (the break that makes the
    longer line shortest), at that font and, where needed, shrunk to 5 points; where that is still too wide, the
    name and the Patient ID form the first line and the name is shortened, with an ellipsis, until it fits (never the
    Patient ID, dates, sex or accession).
    The two lines hang from just below the title. Returns whether the line was broken (the caller moves what is
    below it)."""
    renderer = figure.canvas.get_renderer()
    original = text.get_text()

    def span(candidate: str) -> float:
        text.set_text(candidate)
        return text.get_window_extent(renderer).width / figure.bbox.width

    if span(original) * IDENTIFICATION_MIN_FONT / text.get_fontsize() <= width:
        fit_width(text, figure, width)
        return False
    text.set_fontsize(IDENTIFICATION_MIN_FONT)
    fields = original.split(FIELD_SEPARATOR)
    lines = min(([FIELD_SEPARATOR.join(fields[:cut]), FIELD_SEPARATOR.join(fields[cut:])]
                 for cut in range(1, len(fields))), key=lambda pair: max(span(line) for line in pair))
    text.set_text("\n".join(lines))
    text.set_verticalalignment("top")
    text.set_y(0.9355)
    fit_width(text, figure, width)
    if span(text.get_text()) <= width:
        return True
    lines = [FIELD_SEPARATOR.join(fields[:2]), FIELD_SEPARATOR.join(fields[2:])]  # the name beside the ID, cut
    if fields[0].startswith("Patient: "):
        other = lines[1]
        head, _, rest = lines[0].partition(FIELD_SEPARATOR)
        tail = FIELD_SEPARATOR + rest if rest else ""
        low, high = 0, len(head)
        while low < high:  # the longest prefix of the name that fits
            middle = (low + high + 1) // 2
            if span(head[:middle] + ELLIPSIS + tail + "\n" + other) <= width:
                low = middle
            else:
                high = middle - 1
        text.set_text(head[:max(low, len("Patient: ") + 1)] + ELLIPSIS + tail + "\n" + other)
    return True


#: the smallest font (points) of a one-line supersede notice; a longer one takes two lines of the red banner
SUPERSEDE_SMALLEST = 6.0


def mark_superseding(figure: Figure, notice: str) -> None:
    """A re-analysis's page: the red banner (_page) gets a second line, `notice` (provenance.supersede_text: which
    report this one replaces, when and why), in bold white below the BANNER text, shrunk to the page width, so that
    the page (and the report image, page 1) cannot be read as a report standing beside the earlier one; a notice
    too long for one line of SUPERSEDE_SMALLEST points (a reason naming a correction) is broken onto two."""
    banner = next(text for text in figure.texts if text.get_text() == BANNER)
    banner.set_y(0.986)
    banner.set_fontsize(10)
    line = figure.text(0.5, 0.966, notice, ha="center", va="center", color="white", fontsize=8, weight="bold",
                       family=list(report_fonts()), linespacing=1.05)
    renderer = figure.canvas.get_renderer()

    def span(text: str) -> float:
        line.set_text(text)
        return line.get_window_extent(renderer).width / figure.bbox.width

    fit_width(line, figure, 0.96, smallest=SUPERSEDE_SMALLEST)
    if span(notice) > 0.96:  # two lines of as even a width as the words allow, shrunk to the page width
        line.set_fontsize(SUPERSEDE_SMALLEST + 0.5)
        words = notice.split(" ")
        line.set_text(min((" ".join(words[:cut]) + "\n" + " ".join(words[cut:]) for cut in range(1, len(words))),
                          key=span))
        fit_width(line, figure, 0.96)


TABLE_LEFT, TABLE_TOP, TABLE_WIDTH = 0.04, 0.905, 0.59
BULLSEYE_BOX = (0.67, 0.63, 0.30, 0.26)  # right of the table; its title stays above the wheel
FOOTER_TOP = 0.03
#: lines the value of a flag or stack-warning row (FLAG_ROWS, STACK_ROWS) may take on page 1, tried longest first
#: while the images below would be smaller than MIN_PANEL_HEIGHT (a cut cell points to page 2, which gives every
#: flag and warning in full); a stack warning keeps at least STACK_MIN_LINES (the caveat stays legible)
CELL_LINE_CAPS = (12, 8, 4, 2)
STACK_MIN_LINES = 4
MIN_PANEL_HEIGHT = 0.14
#: (table font in points, flag-row cap) tried in turn while the images stay below MIN_PANEL_HEIGHT or the table
#: runs into the footer: first the caps at TABLE_FONT, then the shortest cap in smaller fonts
TABLE_TRIALS = (*((TABLE_FONT, cap) for cap in CELL_LINE_CAPS), (6.6, CELL_LINE_CAPS[-1]), (6.0, CELL_LINE_CAPS[-1]))
#: the smallest image height (page fraction, about 1.2 in) drawn on page 1: where every trial leaves less, the
#: overlays are drawn on a page of their own, OVERLAYS_PAGE, and page 1's footer says so (MOVED_OVERLAYS)
MIN_READABLE_PANEL = 0.10
OVERLAYS_PAGE = 3
MOVED_OVERLAYS = "Overlays on page {page} (no room beside the key numbers here)"
#: the label of the axes of an overlay image (has_overlays)
OVERLAY_AXES = "overlay"
PANEL_GAP = 0.01
#: a caption line at PANEL_TITLE_FONT (7 pt x 1.2 line spacing of an 11.69 in page), and the room between caption
#: and image: 2 lines take 0.026; a caption wraps between words within its image's width, as many lines as it needs
#: (report_layout.captioned_grid)
CAPTION_LINE, CAPTION_PAD = 0.0102, 0.0056
PANEL_TITLE_FONT, PANEL_TITLE_PAD = 7.0, 2.0  # points


def first_page(header: Dataset, results: Sequence[PipelineResult], context,
               bsa: tuple[float, str] | None = None, series_names: Mapping[str, str] | None = None,
               not_analysed: Sequence[str] = ()) -> Figure:
    """Page 1 (also the PNG): key numbers with reference ranges, the AHA bullseye beside them, and the overlays in
    the space left below both; drawn in report_fonts (CJK names as text), a character none has as '?'.
    `not_analysed`: the reasons of the series recognised but not measured (recognised_not_measured_rows)."""
    _use_report_fonts()
    figure = _first_page(header, results, context, bsa, series_names, not_analysed)
    mark_undrawable(figure)
    return figure


def _first_page(header: Dataset, results: Sequence[PipelineResult], context,
                bsa: tuple[float, str] | None = None, series_names: Mapping[str, str] | None = None,
                not_analysed: Sequence[str] = ()) -> Figure:
    figure = _page("", header, context, results)
    values, labels, title, unit, vmax, cmap = _bullseye_values(results)
    bull_ax = figure.add_axes(BULLSEYE_BOX)
    if values is not None:
        draw_bullseye(bull_ax, values, title, unit, vmax=vmax, cmap=cmap, labels=labels)
    else:
        bull_ax.set_axis_off()
        bull_ax.text(0.5, 0.5, "\n".join(textwrap.wrap(title, 40)), ha="center", va="center", fontsize=7)
    sex = str(header.get("PatientSex") or "").upper() or None
    rows = key_number_table(results, bsa, sex) or not_measured_rows(results, series_names) \
        or not_analysed_rows(results) or [("No quantitative result", "", "")]
    rows += recognised_not_measured_rows(not_analysed)
    panels = _image_panels(results)
    # (table, its bottom, grid: captioned_grid's columns, panel width and height, caption height, wrapped captions)
    # per TABLE_TRIALS, longest cells and largest font first, until the images reach MIN_PANEL_HEIGHT and the table
    # stays above the footer
    trials = []
    span, measured = text_span(figure, PANEL_TITLE_FONT)
    not_measured = [row[0] for row in rows if row[0].endswith(NOT_MEASURED_SUFFIX) or row[0] == NOT_ANALYSED_ROW]
    # the series left unread keep STACK_MIN_LINES, as a stack's caveat: cut to two lines they named one series
    for font, cap in TABLE_TRIALS:
        caps = {**{row: cap for row in (*FLAG_ROWS, *not_measured)},
                **{row: max(cap, STACK_MIN_LINES) for row in (*STACK_ROWS.values(), NOT_ANALYSED_ROW)}}
        table = key_table(figure, rows, TABLE_LEFT, TABLE_TOP, TABLE_WIDTH, caps, (*STACK_ROWS.values(), *not_measured),
                          font=font)
        bottom = bottom_of(table, figure)
        top = min(bottom, bottom_of(bull_ax, figure)) - PANEL_GAP
        trials.append((table, bottom, top, captioned_grid([panel[2] for panel in panels], top, FOOTER_TOP, span,
                                                          CAPTION_LINE, CAPTION_PAD, gap=PANEL_GAP)))
        if bottom >= FOOTER_TOP and (not panels or trials[-1][3][2] >= MIN_PANEL_HEIGHT):
            break
    measured()
    largest = max(grid[2] for *_, grid in trials)
    if panels and largest >= MIN_READABLE_PANEL:
        # the longest cells that give the images MIN_PANEL_HEIGHT, else the largest height cutting and shrinking
        # give (five images side by side are as tall as their width allows: cutting further would not enlarge them)
        enough = min(MIN_PANEL_HEIGHT, largest) - 1e-6
        table, _, top, grid = next(trial for trial in trials if trial[3][2] >= enough)
    else:  # no image, or none readable here: the longest cells whose table ends above the footer
        table, _, top, grid = next((trial for trial in trials if trial[1] >= FOOTER_TOP), trials[-1])
        grid = None
    for other, *_ in trials:
        if other is not table:
            other.axes.remove()
    if grid is not None:
        _draw_panels(figure, panels, top, grid)
    _overlay_footer(figure, results, moved=bool(panels) and grid is None)
    return figure


def _draw_panels(figure: Figure, panels: list, top: float, grid: tuple) -> None:
    """The overlay images under `top` (page fraction) in `grid` (captioned_grid's columns, panel width and height,
    caption height, wrapped captions), each axes labelled OVERLAY_AXES."""
    columns, width, height, caption_height, captions = grid
    for n, ((image, labelmap, _, window, aspect), caption) in enumerate(zip(panels, captions)):
        row, column = divmod(n, columns)
        ax = figure.add_axes((TABLE_LEFT + column * (width + PANEL_GAP),
                              top - (row + 1) * (height + caption_height), width, height), label=OVERLAY_AXES)
        _show_overlay(ax, image, labelmap, caption, window, aspect)
        fit_width(ax.title, figure, width)  # only where one word alone is wider than its image


def _overlay_footer(figure: Figure, results: Sequence[PipelineResult], moved: bool = False) -> None:
    """The footer: the colours of the overlays (overlay_legend) and how their captions name a slice; `moved`: the
    overlays are on page OVERLAYS_PAGE, not on this page (MOVED_OVERLAYS says so)."""
    where = MOVED_OVERLAYS.format(page=OVERLAYS_PAGE) if moved else "Overlay"
    footer = figure.text(0.04, 0.006, f"{where}: {overlay_legend(results)}.\nImages: S: / I: the source series / "
                         "image number as a viewer shows them, then the slice position. All numbers are unverified AI "
                         "output. Methods: page 2.", fontsize=6.5, va="bottom")
    fit_width(footer, figure, 0.92)


def has_overlays(figure: Figure) -> bool:
    """True where `figure` (a report page) draws overlay images (axes labelled OVERLAY_AXES)."""
    return any(ax.get_label() == OVERLAY_AXES for ax in figure.axes)


def overlay_page(header: Dataset, results: Sequence[PipelineResult], context) -> Figure:
    """Page OVERLAYS_PAGE, made only where page 1's key numbers leave the overlays less than MIN_READABLE_PANEL:
    the overlays of page 1 (_image_panels) as large as the page allows, with their legend."""
    _use_report_fonts()
    figure = _page(f" - page {OVERLAYS_PAGE}: overlays", header, context, results)
    panels = _image_panels(results)
    span, measured = text_span(figure, PANEL_TITLE_FONT)
    top = TABLE_TOP - PANEL_GAP
    grid = captioned_grid([panel[2] for panel in panels], top, FOOTER_TOP, span, CAPTION_LINE, CAPTION_PAD,
                          gap=PANEL_GAP)
    measured()
    _draw_panels(figure, panels, top, grid)
    _overlay_footer(figure, results)
    mark_undrawable(figure)
    return figure


def _volume_curves(ax, cine: PipelineResult | None) -> None:
    """LV and RV volume over the cycle, phases counted from 1: ED and ES named, flagged phases marked x; where the
    phases are not a whole cycle (partial_cycle), title and axis say how many were sent."""
    curve = cine.measurements.get("lv_volume_curve_ml") if cine is not None else None
    summary = cine.summary if cine is not None and isinstance(cine.summary, dict) else {}
    sent, cycle = cycle_phases(summary)
    if curve:
        # x: each point's acquisition phase number (a phase left out at every slice is a gap on the axis)
        numbers = summary_phase_numbers(summary)
        numbers = numbers if numbers and len(numbers) == len(curve) else None
        x = numbers or list(range(1, len(curve) + 1))
        ax.plot(x, curve, "-o", color="#dc2828", markersize=2.5, linewidth=1, label="LV")
        rv_curve = cine.measurements.get("rv_volume_curve_ml")
        if rv_curve:
            ax.plot(x if len(rv_curve) == len(x) else range(1, len(rv_curve) + 1), rv_curve, "-o", color="#2866dc",
                    markersize=2.5, linewidth=1, label="RV")
        flagged = [int(p) for p in (summary.get("timing") or {}).get("flagged_phases") or []
                   if 0 <= int(p) < len(curve)]
        if flagged:  # shown, never used as ED/ES
            ax.plot([phase_number(p, numbers) for p in flagged], [curve[p] for p in flagged], "x", color="black",
                    markersize=5, linestyle="none", label="LV volume jumps: phase not used as ED/ES")
        for key, label in (("ed_phase", "ED"), ("es_phase", "ES")):
            phase = summary.get(key)
            if phase is not None and 0 <= int(phase) < len(curve):
                ax.annotate(label, (phase_number(phase, numbers), curve[int(phase)]), fontsize=7, xytext=(2, 4),
                            textcoords="offset points", weight="bold")
        ax.legend(fontsize=6.5, loc="best")
        ax.set_xlabel(f"cardiac phase ({COUNTED_FROM})" if not partial_cycle(summary) else
                      f"phase of the {sent} sent ({COUNTED_FROM}" + (f"; the cycle has {cycle})" if cycle else ")"),
                      fontsize=7)
        ax.set_ylabel("volume (mL)", fontsize=7)
        ax.xaxis.get_major_locator().set_params(integer=True)
    else:
        ax.text(0.5, 0.5, "volume curve: no cine analysis", ha="center", va="center", fontsize=7)
        ax.set_axis_off()
    ax.tick_params(labelsize=6.5)
    ax.set_title(f"Ventricular volume at the {sent} phases sent" if partial_cycle(summary) else
                 "Ventricular volume over the cardiac cycle", fontsize=8.5, loc="left")


#: abbreviations of the short-axis levels under the per-slice bars
LEVEL_SHORT = {"basal": "bas", "mid": "mid", "apical": "api", "apex": "apex"}


def scar_bar_labels(lge: PipelineResult, segmentation: SegmentationResult) -> tuple[list[int], list[str], str]:
    """(slice indices in the viewer's order, their tick labels, the axis label) of the per-slice scar bars: each
    slice named as a viewer numbers it - the source Instance Number where the stack is one series, else
    "<series>/<image>" - with its position in mm and its short-axis level."""
    identities = slice_identities(segmentation)
    levels = slice_levels(lge, segmentation)
    order = sorted(range(len(identities)), key=lambda k: _viewer_rank(identities, k))
    series = {identity["series"] for identity in identities}
    one_series = len(series) == 1 and None not in series
    labels = []
    for k in order:
        identity = identities[k]
        image = str(identity["instance"]) if one_series else \
            f"{identity['series'] if identity['series'] is not None else '?'}/{identity['instance'] or '?'}"
        lines = [image]
        if identity["location_mm"] is not None:
            lines.append(f"{identity['location_mm']:.0f}")
        if k in levels:
            lines.append(LEVEL_SHORT.get(levels[k], levels[k]))
        labels.append("\n".join(lines))
    what = f"image no. in series {next(iter(series))}" if one_series else "series/image no."
    return order, labels, f"LGE {what}, position (mm)" + (", level" if levels else "")


def _scar_bars(ax, lge: PipelineResult | None) -> None:
    lge_seg = lge.segmentations[0] if lge is not None and lge.segmentations else None
    if lge_seg is not None and isinstance(lge.summary, dict) and lge.summary.get("determined") is False:
        ax.text(0.5, 0.5, f"per-slice scar: {SEE_KEY_NUMBERS}", ha="center", va="center", fontsize=6.5)
        ax.set_axis_off()
    elif lge_seg is not None:
        extent = per_slice_scar_percent(lge_seg)
        order, labels, axis_label = scar_bar_labels(lge, lge_seg)
        ax.bar(np.arange(len(order)), np.nan_to_num(extent[order]), color="#e0b000")
        ax.set_xticks(np.arange(len(order)), labels, fontsize=5.5 if len(order) > 10 else 6.5)
        ax.set_xlabel(axis_label, fontsize=7)
        ax.set_ylabel("scar % of myocardium", fontsize=7)
        ax.set_ylim(0, max(10.0, float(np.nanmax(extent)) * 1.15) if np.isfinite(extent).any() else 10.0)
    else:
        ax.text(0.5, 0.5, "per-slice scar: no LGE analysis", ha="center", va="center", fontsize=7)
        ax.set_axis_off()
    ax.tick_params(axis="y", labelsize=6.5)
    ax.set_title("Per-slice scar extent (incl. MVO)", fontsize=8.5, loc="left")


#: characters of one suggestion on the PDF page (cut at a word with an ellipsis; the suggestions SR holds it whole)
PDF_SUGGESTION_CHARS = 600


def second_page(header: Dataset, results: Sequence[PipelineResult], context,
                declined: Sequence[Declined] = (), series_names: Mapping[str, str] | None = None) -> Figure:
    """Page 2: volume curves, per-slice scar, methods, the cine's flags in full, declined series, suggestions; drawn
    in report_fonts (CJK series names as text), a character none has as '?'."""
    _use_report_fonts()
    figure = _second_page(header, results, context, declined, series_names)
    mark_undrawable(figure)
    return figure


#: lines of page 2's "Declined / not analysed" list; beyond them its last line says how many more summary.json lists
PDF_DECLINED_LINES = 10


def _second_page(header: Dataset, results: Sequence[PipelineResult], context,
                 declined: Sequence[Declined] = (), series_names: Mapping[str, str] | None = None) -> Figure:
    second = _page(" - page 2", header, context, results)
    cine, lge = _find(results, "cine"), _find(results, "lge")
    _volume_curves(second.add_axes((0.08, 0.70, 0.40, 0.19)), cine)
    _scar_bars(second.add_axes((0.57, 0.70, 0.39, 0.19)), lge)
    declined_lines = [f"- {d.reason}" + (f" ({named})" if d.series_instance_uid and not str(d.reason).startswith(
        named := declined_series_text(d.series_instance_uid, series_names)) else "") for d in declined]
    suggestions = _find(results, "suggestions")
    suggestion_lines = []
    if suggestions is not None and isinstance(suggestions.summary, list):
        for item in suggestions.summary[:5]:
            suggestion_lines.append(f"- (another patient's report {item.get('report_id', '')}, similarity "
                                    f"{_fmt(item.get('score'), digits=2)}) {shorten(str(item.get('text', '')), PDF_SUGGESTION_CHARS)}")
    lines = ["Methods", *[f"- {line}" for line in _methods_lines(results)]]
    # LGE not stated present (lge_presence): no significant LGE, or presence uncertain, in full (page 1: the bullseye)
    presence = presence_text(lge.summary.get("lge_presence")) if lge is not None and isinstance(lge.summary, dict) \
        else None
    if presence:
        lines.append(f"- LGE presence: {presence}; from {lge.summary['lge_presence'].get('basis')}.")
    presence_note = suggestions.measurements.get("lge_presence_note") if suggestions is not None else None
    if presence_note and not suggestion_lines:
        suggestion_lines.append(f"- none stating scar or no scar: {presence_note}")
    elif presence_note:
        suggestion_lines.insert(0, f"- {presence_note}")
    flags = cine.summary.get("flags") if cine is not None and isinstance(cine.summary, dict) else None
    if flags:
        lines += ["", f"Cine: outside the reference range and notes, in full (phases {COUNTED_FROM})",
                  *[f"- {display_flag(flag, cine.summary)}" for flag in flags]]
    warned = [(name, warning) for name in STACK_ROWS for warning in stack_warnings(getattr(_find(results, name),
                                                                                           "summary", None))]
    if warned:
        lines += ["", "Input stacks: what their geometry showed, in full (it qualifies that pipeline's numbers)",
                  *[f"- {'LGE' if name == 'lge' else 'Cine'}: {warning}" for name, warning in warned]]
    # other LGE series of the same slices not measured (summary `series_left_aside`: the magnitude beside the PSIR)
    aside = [f"- LGE: {text}" for text in ((lge.summary or {}).get("series_left_aside") or [])] \
        if lge is not None and isinstance(lge.summary, dict) else []
    listed = aside + declined_lines
    shown = listed[:PDF_DECLINED_LINES] if len(listed) <= PDF_DECLINED_LINES else \
        listed[:PDF_DECLINED_LINES - 1] + [f"- ... and {len(listed) - PDF_DECLINED_LINES + 1} more (summary.json "
                                           "declined)"]
    lines += ["", "Declined / not analysed", *(shown or ["- none"])]
    if suggestion_lines:
        lines += ["", "Report text suggestions from OTHER patients' reports (unverified; also in their own SR): not "
                  "findings of this study; their numbers are blanked (___) and are not this study's",
                  *suggestion_lines]
    second.text(0.04, 0.64, "\n".join(_wrap(line, 150) for line in lines), fontsize=7.2, va="top")
    return second


def render_report(
    header: Dataset,
    results: Sequence[PipelineResult],
    context,
    bsa: tuple[float, str] | None = None,
    declined: Sequence[Declined] = (),
    series_names: Mapping[str, str] | None = None,
    supersedes: Sequence[dict] | None = None,
    not_analysed: Sequence[str] = (),
) -> tuple[bytes, bytes]:
    """(pdf_bytes, png_bytes) of the report for one study: first_page (also the PNG), second_page, and overlay_page
    where page 1 left the overlays no room.
    `series_names` {SeriesInstanceUID: 'series 5 "cine SAX"'}: how declined series are named (else by UID).
    `supersedes`: the earlier reports a re-analysis replaces (provenance.supersede_text): every page says so in its
    banner. `not_analysed`: the reasons of the series recognised but never measured (maps, perfusion), named in one
    row of page 1 (they are in `declined` too, in full on page 2)."""
    from matplotlib.backends.backend_pdf import PdfPages

    first = first_page(header, results, context, bsa, series_names, not_analysed)
    pages = [first, second_page(header, results, context, declined, series_names)]
    if _image_panels(results) and not has_overlays(first):  # no room on page 1: its footer points here
        pages.append(overlay_page(header, results, context))
    notice = supersede_text(supersedes)
    if notice:
        for page in pages:
            mark_superseding(page, notice)
    pdf, png = io.BytesIO(), io.BytesIO()
    with PdfPages(pdf, metadata={"Title": DOCUMENT_TITLE, "Creator": f"dicomnode {node_version()}"}) as document:
        for page in pages:
            document.savefig(page)
    first.savefig(png, format="png", dpi=PNG_DPI)
    return pdf.getvalue(), png.getvalue()


def _wrap(line: str, width: int = 175) -> str:
    return "\n".join(textwrap.wrap(line, width=width, subsequent_indent="  ", break_long_words=False)) if line else ""


def _code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def build_pdf_document(
    pdf_bytes: bytes,
    header: Dataset,
    context,
    algorithms: Sequence[AlgorithmInfo],
    series_number: int,
    source_instances: Sequence[Dataset] = (),
) -> Dataset:
    """Encapsulated PDF IOD (highdicom 0.28 has no EncapsulatedDocument class: highdicom's SOPClass base + modules).

    `source_instances` (e.g. the SEG and SR) are listed in Source Instance Sequence.
    """
    if not pdf_bytes.startswith(b"%PDF"):
        raise ValueError("pdf_bytes is not a PDF document (no %PDF header)")
    started_at: dt.datetime = context.started_at
    document = hd.SOPClass(
        study_instance_uid=header.StudyInstanceUID,
        series_instance_uid=new_uid(),
        series_number=series_number,
        sop_instance_uid=new_uid(),
        sop_class_uid=EncapsulatedPDFStorage,
        instance_number=1,
        modality="DOC",
        manufacturer=NODE_MANUFACTURER,
        manufacturer_model_name=NODE_MODEL_NAME,
        software_versions=node_version(),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        patient_id=header.get("PatientID"),
        patient_name=header.get("PatientName"),
        patient_birth_date=header.get("PatientBirthDate"),
        patient_sex=header.get("PatientSex"),
        accession_number=header.get("AccessionNumber"),
        study_id=header.get("StudyID"),
        study_date=header.get("StudyDate"),
        study_time=header.get("StudyTime"),
        referring_physician_name=header.get("ReferringPhysicianName"),
        content_date=started_at.date(),
        content_time=started_at.time(),
        series_date=started_at.date(),
        series_time=started_at.time(),
        specific_character_set=header.get("SpecificCharacterSet"),
    )
    document.copy_patient_and_study_information(derivable_header(header))
    document._add_contributing_equipment(None)
    # SC Equipment module
    document.ConversionType = "SYN"
    # Encapsulated Document module
    document.AcquisitionDateTime = started_at.strftime("%Y%m%d%H%M%S.%f")
    document.BurnedInAnnotation = "YES"
    document.RecognizableVisualFeatures = "NO"
    document.DocumentTitle = DOCUMENT_TITLE
    document.ConceptNameCodeSequence = [_code_item("18748-4", "LN", "Diagnostic imaging report")]
    document.MIMETypeOfEncapsulatedDocument = "application/pdf"
    document.EncapsulatedDocumentLength = len(pdf_bytes)
    document.EncapsulatedDocument = pdf_bytes + (b"\x00" if len(pdf_bytes) % 2 else b"")
    if source_instances:
        references = []
        for instance in source_instances:
            item = Dataset()
            item.ReferencedSOPClassUID = instance.SOPClassUID
            item.ReferencedSOPInstanceUID = instance.SOPInstanceUID
            references.append(item)
        document.SourceInstanceSequence = references
    return apply_provenance(document, algorithms, started_at, "CMR report PDF")


def build_secondary_capture(
    png_bytes: bytes,
    header: Dataset,
    context,
    algorithms: Sequence[AlgorithmInfo],
    series_number: int,
) -> Dataset:
    """Secondary Capture (highdicom SCImage, RGB) of the report page, with the patient and study attributes of
    `header` that the PDF carries (IssuerOfPatientID, StudyDescription, OtherPatientIDsSequence ...)."""
    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(png_bytes)).convert("RGB"))
    started_at: dt.datetime = context.started_at
    reference = derivable_header(header)
    capture = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=reference,
        pixel_array=image,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=new_uid(),
        series_number=series_number,
        sop_instance_uid=new_uid(),
        instance_number=1,
        manufacturer=NODE_MANUFACTURER,
        patient_orientation=("L", "P"),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        manufacturer_model_name=NODE_MODEL_NAME,
        software_versions=node_version(),
        content_date=started_at.date(),
        content_time=started_at.time(),
        series_date=started_at.date(),
        series_time=started_at.time(),
    )
    # from_ref_dataset copies the type 1 and 2 attributes only: IssuerOfPatientID, StudyDescription ... as the PDF
    capture.copy_patient_and_study_information(reference)
    capture.PatientOrientation = None  # a report page has no patient orientation (type 2C, present and empty)
    capture.BodyPartExamined = "HEART"  # unpaired: no Laterality needed
    capture.BurnedInAnnotation = "YES"
    capture.ImageType = ["DERIVED", "SECONDARY"]
    capture.ConversionType = "SYN"
    return apply_provenance(capture, algorithms, started_at, "CMR report image")
