"""Cardiac phases in text for readers: counted from 1, as viewers number a cine's phases.

Every text a person reads (flags and notes, the PDF, SEG descriptions, the stdout table) names phases through these
functions, and the SR writes 1-based phase numbers (PHASENUM); the indices in summary.json stay 0-based (design.md's
`ed_phase` / `es_phase`: positions in the volume curves), with `ed_phase_number` / `es_phase_number` beside them
(analysis.cine.PHASE_NUMBERING). A number is the acquisition's phase, as a viewer shows it: where a phase was left out
at every slice (an image missing at one, cmr.volume.common_phases) the phases after it keep their numbers, so each
function takes the acquisition phase number of each index (`numbers`: cmr.types.Volume.acquisition_phase_numbers,
summary.json `cine.phase_numbers`); without it index i is phase i + 1.
"""
from __future__ import annotations

import re
from typing import Iterable, Sequence

from dicomnode.cmr.frames import GEOMETRY_NOTES
from dicomnode.cmr.recognize import UNTIMED_CINE
from dicomnode.cmr.types import series_number_range

COUNTED_FROM = "counted from 1"


def phase_number(index: int, numbers: Sequence[int] | None = None) -> int:
    """The number a reader sees for a 0-based phase index: `numbers[index]` (the acquisition phase number of each
    index) where given, else index + 1. Raises IndexError for an index outside `numbers`."""
    if numbers:
        return int(numbers[int(index)])
    return int(index) + 1


def phase_name(index: int, numbers: Sequence[int] | None = None) -> str:
    """"phase 3" for index 2 (phase_number)."""
    return f"phase {phase_number(index, numbers)}"


def phases_name(indices: Iterable[int], numbers: Sequence[int] | None = None) -> str:
    """"phase 2", "phases 2 and 11", "phases 2, 5 and 11" for 0-based indices (in the order given; phase_number)."""
    named = [str(phase_number(i, numbers)) for i in indices]
    if len(named) < 2:
        return "phase " + "".join(named)
    return f"phases {', '.join(named[:-1])} and {named[-1]}"


def summary_phase_numbers(cine_summary) -> list[int] | None:
    """The acquisition phase number of each position of a cine summary's volume curves (`phase_numbers`), None where
    the summary has none (then position i is phase i + 1)."""
    numbers = cine_summary.get("phase_numbers") if isinstance(cine_summary, dict) else None
    return [int(n) for n in numbers] if isinstance(numbers, list) and numbers else None



def source_series_name(summary) -> str | None:
    """'series 33 "DE_SAX_PSIR"': the analysed series as a viewer lists it (SeriesNumber (0020,0011), then
    SeriesDescription (0008,103E)) from a pipeline summary's `series_number` / `series_description`; a stack merged
    from one-slice series by the range of its SeriesNumbers ('series 21-35 "LGE_PSIR_SAX"', the summary's
    `series_numbers`), as the series left aside beside it are named; None without either."""
    if not isinstance(summary, dict):
        return None
    numbers = summary.get("series_numbers")
    number = (series_number_range(numbers) if isinstance(numbers, list) and numbers else None) \
        or summary.get("series_number")
    description = str(summary.get("series_description") or "").strip()
    parts = ([f"series {number}"] if number is not None else []) + ([f'"{description}"'] if description else [])
    return " ".join(parts) or None


def merged_numbers(series) -> dict:
    """{"series_numbers": [21, 23, ..., 35]} for a pipeline summary of a stack merged from one-slice series (every
    SeriesNumber of its instances, ascending; cmr.types.AnalysisSeries.series_numbers), {} for a stack of one series,
    so that source_series_name names the merged stack by its range."""
    numbers = series.series_numbers() if hasattr(series, "series_numbers") else []
    return {"series_numbers": numbers} if len(numbers) > 1 else {}


def other_views_text(series_list, sequence: str) -> str:
    """'; LGE only in other views: series 12 "LGE_4CH" (4ch), series 13 (2ch)' for the series of `sequence` that are
    not short axis (each with its SeriesNumber, SeriesDescription and view), so a decline for want of a short-axis
    stack says what the study does hold; a series whose slices make no stack (`geometry_notes`: not parallel, one
    position shared by distinct slices) is named apart with the reason ('; LGE without a stack of usable geometry:
    series 1001 "tfl_LGE_SAX" (slices not parallel: up to 6.0 deg apart ...)'), and one slice of no recognised view
    apart ('; LGE of only 1 slice (a stack needs at least 2): series 12 "DE_SAX"'); '' when there is none."""
    found, broken, single = [], [], []
    for series in series_list:
        if getattr(series.sequence, "value", series.sequence) != sequence:
            continue
        view = getattr(series.view, "value", series.view)
        if view == "sax":
            continue
        name = source_series_name({"series_number": series.series_number,
                                   "series_description": series.description}) or "a series"
        notes = geometry_notes(series)
        if notes:
            broken.append(f"{name} ({'; '.join(notes)})")
        elif view == "other" and getattr(series, "slices", None) == 1:
            single.append(name)  # one slice of no recognised view: no long-axis series to look for (break2 #9)
        else:
            found.append(f"{name} ({view})")
    what = "LGE" if sequence == "lge" else sequence
    return ((f"; {what} only in other views: {', '.join(found)}" if found else "")
            + (f"; {what} without a stack of usable geometry: {', '.join(broken)}" if broken else "")
            + (f"; {what} of only 1 slice (a stack needs at least 2): {', '.join(single)}" if single else "")
            + (untimed_cine_text(series_list) if sequence == "cine" else ""))


def untimed_cine_text(series_list) -> str:
    """'; series 5 "CINE_SSFP_SAX" looks like a cine but has no cardiac timing (ImageType CINE, ...): 2 images per
    slice and no TriggerTime ...' for each series not taken for a cine for want of TriggerTime
    (`cmr.recognize.UNTIMED_CINE` in its sequence evidence), so the decline says what the site must fix; '' when
    there is none."""
    found = []
    for series in series_list:
        evidence = getattr(getattr(series, "sequence", None), "evidence", None) or []
        for note in evidence:
            note = re.sub(r"^\[[^\]]*\]\s*", "", str(note))
            if note.startswith(UNTIMED_CINE):
                name = source_series_name({"series_number": series.series_number,
                                           "series_description": series.description}) or "a series"
                found.append(f"{name} {note}")
                break
    return "".join(f"; {text}" for text in found)


def geometry_notes(series) -> list[str]:
    """The notes of the series' view recognition (without their '[rule] ' prefix) that say its slices make no stack
    (`cmr.frames.GEOMETRY_NOTES`: not parallel, one position shared by distinct slices), so a decline names them."""
    evidence = getattr(getattr(series, "view", None), "evidence", None) or []
    notes = [re.sub(r"^\[[^\]]*\]\s*", "", note) for note in evidence if isinstance(note, str)]
    return [note for note in notes if note.startswith(GEOMETRY_NOTES)]


def series_name(series) -> str:
    """'series 2001-2003 "MOLLI_SAX_T1 MAP"' for an analysis series, as a viewer lists it; 'a series' without a
    SeriesNumber or SeriesDescription."""
    number = series.series_number_text() if hasattr(series, "series_number_text") \
        else getattr(series, "series_number", None)
    return source_series_name({"series_number": number,
                               "series_description": getattr(series, "description", None)}) or "a series"


#: what the node does not measure on a mapping series, per sequence value (summary.json `declined`)
NOT_MEASURED = {"t1map": ("T1", "no native or post-contrast T1 values, no ECV"),
                "t2map": ("T2", "no T2 / T2* values")}


#: what the recognition names beside t1map / t2map (recognize.MAP_KINDS: the evidence begins with the map's name),
#: so that an ECV map is not declined as a 'T1 map' nor a T2* map as a 'T2 map' (rebreak-maps finding 6)
MAPPED_PARAMETERS = (("ECV map", ("ECV", "no ECV values")), ("T2* map", ("T2*", "no T2* values")))


def _mapped_parameter(series) -> tuple[str, str] | None:
    evidence = list(getattr(getattr(series, "sequence", None), "evidence", None) or [])
    for name, found in MAPPED_PARAMETERS:
        if any(str(text).split("] ", 1)[-1].startswith(name) for text in evidence):
            return found
    return None


#: what the node does not measure on a first-pass perfusion series (recognize.PerfusionRule)
PERFUSION_NOT_MEASURED = "no perfusion assessment: no perfusion defect reading, upslope or myocardial blood flow"


def maps_not_measured(series_list) -> list[tuple[str | None, str]]:
    """(SeriesInstanceUID, reason) for each T1 / T2 mapping series and each first-pass perfusion series of the study:
    recognised, never measured by this version, so that such a study's `declined` tells 'not supported' from 'not
    found'."""
    found = []
    for series in series_list:
        sequence = getattr(series, "sequence", None)
        sequence = getattr(sequence, "value", sequence)
        if sequence == "perfusion":
            view = getattr(series.view, "value", series.view)
            slices, phases = getattr(series, "slices", None), getattr(series, "phases", None)
            shape = (f" ({slices} slice position(s) x {phases} dynamics)" if slices and phases else "")
            found.append((getattr(series, "series_instance_uid", None),
                          f"{series_name(series)} (perfusion, {view}): first-pass perfusion series{shape} recognised "
                          f"but not measured: this version measures LGE and cine only ({PERFUSION_NOT_MEASURED})"))
            continue
        if sequence not in NOT_MEASURED:
            continue
        parameter, missing = NOT_MEASURED[sequence]
        parameter, missing = _mapped_parameter(series) or (parameter, missing)
        view = getattr(series.view, "value", series.view)
        what = (f"{parameter}-mapping source images ({series.phases} per slice position)"
                if (getattr(series, "phases", 1) or 1) >= 2 else f"{parameter} map")
        found.append((getattr(series, "series_instance_uid", None),
                      f"{series_name(series)} ({sequence}, {view}): {what} recognised but not measured: this version "
                      f"measures LGE and cine only ({missing})"))
    return found


#: the parts of a maps_not_measured reason: '<series name> (<sequence>, <view>): <what>[ (<shape>)] recognised but not
#: measured: ...'
_NOT_MEASURED_REASON = re.compile(r"^(?P<series>series \S+|a series)\b.*?\([a-z0-9*]+, [a-z0-9]+\): "
                                  r"(?P<what>.+?)(?: \(.*\))? recognised but not measured")


def not_measured_label(reason: str) -> str:
    """A short name of a series maps_not_measured declined, for a one-line list: 'T1 map S:21', 'T1 source images
    S:20' (mapping source images: MOLLI, ShMOLLI), 'perfusion S:23' from its reason; the reason itself, cut to 60
    characters, where it is not one of maps_not_measured's."""
    found = _NOT_MEASURED_REASON.match(str(reason))
    if found is None:
        return str(reason)[:60]
    what = "perfusion" if "perfusion" in found.group("what") else \
        found.group("what").replace("-mapping source images", " source images")
    series = found.group("series")
    return f"{what} {series.replace('series ', 'S:')}" if series != "a series" else what


def not_lge_text(series_list) -> str:
    """'; not taken as LGE: series 5001 "SAX post 15min" (InversionTime 100 ms, outside ...)' for the series the LGE
    rule declined although inversion-recovery prepared or LGE-named (recognize.not_lge: sequence 'other' whose
    evidence begins with the LGE rule's 'not LGE'), so a decline for want of an LGE stack names them; '' when none."""
    found = []
    for series in series_list:
        if getattr(series.sequence, "value", series.sequence) != "other":
            continue
        evidence = list(getattr(series.sequence, "evidence", None) or [])
        if not evidence or "] not LGE:" not in evidence[0]:
            continue
        against = [e.split("against LGE: ", 1)[1] for e in evidence if "against LGE: " in e]
        found.append(series_name(series) + (f" ({'; '.join(against)})" if against else ""))
    return f"; not taken as LGE (inversion recovery, but the evidence is against it): {', '.join(found)}" if found \
        else ""


#: how dicomnode/cmr/volume.py words a cine holding fewer phases than its CardiacNumberOfImages declares
PHASES_PRESENT = re.compile(r"\b(\d+) of (\d+) cardiac phases present\b")


def stack_warnings(summary) -> list[str]:
    """The stack warnings of a pipeline's summary block (`stack_warnings`), [] where there are none, without the
    summary's `reason` where its numbers are withheld (`determined` false): a reader is shown that reason where the
    numbers would be, once."""
    if not isinstance(summary, dict):
        return []
    reason = summary.get("reason") if summary.get("determined") is False else None
    return [str(w) for w in summary.get("stack_warnings") or [] if str(w).strip() and w != reason]


def declared_cycle_phases(warnings) -> int | None:
    """The phases of the whole cardiac cycle (CardiacNumberOfImages) where a stack's warnings say fewer were sent
    ("N of M cardiac phases present", dicomnode/cmr/volume.py); None where they do not."""
    for warning in warnings or ():
        found = PHASES_PRESENT.search(str(warning))
        if found and int(found.group(2)) > int(found.group(1)):
            return int(found.group(2))
    return None


def cycle_phases(cine_summary: dict) -> tuple[int, int | None]:
    """(phases sent, phases of the whole cardiac cycle or None): the phases acquired of the analysed cine
    (`phases_acquired`: a phase left out at every slice for an image missing at one was still sent, and is named in
    the stack warnings; else its LV volume curve's; where the stack warnings say "N of M cardiac phases present", N:
    `phases_acquired` is then the cycle's M when the phases kept were numbered on it), and the CardiacNumberOfImages
    of its images where the stack warnings say fewer phases were sent."""
    acquired = cine_summary.get("phases_acquired")
    sent = int(acquired) if isinstance(acquired, int) and acquired > 0 else len(cine_summary.get("lv_volume_curve_ml")
                                                                                or [])
    warnings = stack_warnings(cine_summary)
    declared = declared_cycle_phases(warnings)
    if declared is None:
        return sent, None
    # the warning's N is the phases sent: `phases_acquired` is the cycle itself where the phases kept were numbered
    # on the declared grid (cmr.volume.acquisition_grid_numbers)
    present = next((int(found.group(1)) for found in map(PHASES_PRESENT.search, warnings) if found), None)
    return (present if present is not None else sent), declared
