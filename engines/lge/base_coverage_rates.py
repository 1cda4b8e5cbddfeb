"""How often the coverage check's base rules fire on expert labels (cine_metrics.stack_coverage): whole stacks (false
alarms) and the same stacks with their 1, 2 or 3 most basal slices removed (detections). Data: the 133 LGE cases of
load_cases (100 EMIDEC, 33 MyoPS; the basal end is the larger end of the LV, as the node takes it without geometry)
and the 100 ACDC ED cine stacks of load_acdc_cine (z0 is the base). The slice positions are index x the case's slice
spacing. Prints, per data set and number of basal slices removed, the stacks where "base coverage not confirmed"
(BASE_UNCONFIRMED_START) and where any base rule ("base cut off" or not confirmed) fires.

    python -m engines.lge.base_coverage_rates
"""
from __future__ import annotations

import numpy as np

from dicomnode.analysis.cine_metrics import BASE_UNCONFIRMED_START, stack_coverage
from dicomnode.labels import MYOCARDIUM_LABELS, Label
from engines.lge.data import load_acdc_cine, load_cases

LV_LABELS = [int(Label.LV_BLOOD_POOL)] + [int(v) for v in MYOCARDIUM_LABELS]


#: the LV extent (mm) of every whole stack, filled by rates() (cine_metrics.BASE_MISSING_MM cites its percentiles)
WHOLE_EXTENTS_MM: list[float] = []


def _base_reasons(labels: np.ndarray, spacing_mm: float, apex_first: bool | None) -> tuple[bool, bool, bool, float]:
    """(base not confirmed, any base rule, coverage incomplete for any reason, LV extent mm) for one stack
    (slices, rows, cols) of node labels."""
    coverage = stack_coverage(labels, np.arange(labels.shape[0]) * spacing_mm, apex_first)
    unconfirmed = any(r.startswith(BASE_UNCONFIRMED_START) for r in coverage.reasons)
    return (unconfirmed, unconfirmed or any("base cut off" in r for r in coverage.reasons), not coverage.complete,
            float(coverage.lv_extent_mm or 0.0))


def rates() -> dict[tuple[str, int], tuple[int, int, int, int]]:
    """{(data set, basal slices removed): (stacks, base not confirmed, any base rule, incomplete for any reason)};
    stacks under 3 slices after the removal are left out."""
    stacks = [(case.centre, case.labels, case.slice_spacing_mm, None) for case in load_cases()]
    stacks += [("acdc_ed", case.labels, case.slice_spacing_mm, False) for case in load_acdc_cine()
               if case.name.endswith("_ED")]
    found: dict[tuple[str, int], list[int]] = {}
    for centre, labels, spacing, apex_first in stacks:
        lv = np.isin(labels, LV_LABELS).reshape(labels.shape[0], -1).sum(axis=1)
        occupied = np.flatnonzero(lv)
        if apex_first is None:  # the larger end is the base: stored apex first or base first
            apex_first = bool(lv[occupied[0]] <= lv[occupied[-1]])
        for removed in range(4):
            cut = labels if not removed else (labels[:-removed] if apex_first else labels[removed:])
            if cut.shape[0] < 3:
                continue
            unconfirmed, any_rule, incomplete, extent = _base_reasons(cut, spacing, apex_first)
            if not removed:
                WHOLE_EXTENTS_MM.append(extent)
            counts = found.setdefault((centre, removed), [0, 0, 0, 0])
            counts[0] += 1
            counts[1] += unconfirmed
            counts[2] += any_rule
            counts[3] += incomplete
    return {key: tuple(value) for key, value in sorted(found.items())}


if __name__ == "__main__":
    for (centre, removed), (n, unconfirmed, any_rule, incomplete) in rates().items():
        print(f"{centre:8s} basal slices removed {removed}: {n:3d} stacks, base not confirmed {unconfirmed:3d} "
              f"({100 * unconfirmed / n:.0f} %), any base rule {any_rule:3d} ({100 * any_rule / n:.0f} %), "
              f"incomplete {incomplete:3d} ({100 * incomplete / n:.0f} %)")
    median, p90, top = np.percentile(WHOLE_EXTENTS_MM, [50, 90, 100])
    print(f"LV extent of the {len(WHOLE_EXTENTS_MM)} whole stacks: median {median:.0f} mm, 90th percentile "
          f"{p90:.0f} mm, max {top:.0f} mm")
