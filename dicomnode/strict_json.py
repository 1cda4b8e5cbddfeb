"""JSON as RFC 8259 has it, for every JSON file the node writes (summary.json, the state database's summaries,
engine and report-bank manifests, `status --json`).

Python's json writes a float NaN or infinity as the bare words NaN / Infinity, which RFC 8259, JavaScript's
JSON.parse and strict parsers reject (break2 finding 4: FWHM with no enhanced region wrote `"threshold": NaN`). A
value that was not determined is mapped to None (null) where it is made (e.g. lge_metrics.ThresholdResult.summary);
`dumps` is the backstop: it writes any non-finite number that still reaches it as null, names where in a warning
(so the source can be fixed), and serialises with allow_nan=False, so a bare NaN can never be written.
"""
from __future__ import annotations

import json
import logging
import math
from typing import Any

log = logging.getLogger(__name__)


def finite(value: Any, where: str = "$", found: list[str] | None = None) -> Any:
    """`value` with every non-finite float (NaN, +-inf; numpy's float64 included) in its dicts, lists and tuples
    replaced by None; the JSON path of each replaced one appended to `found` when given."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        if found is not None:
            found.append(where)
        return None
    if isinstance(value, dict):
        return {key: finite(item, f"{where}.{key}", found) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item, f"{where}[{n}]", found) for n, item in enumerate(value)]
    return value


def dumps(value: Any, what: str = "JSON", **kwargs) -> str:
    """json.dumps of `value` with allow_nan=False after `finite` (non-finite numbers as null, a warning naming
    their paths in `what`, e.g. "summary.json"); other keyword arguments as json.dumps takes them."""
    found: list[str] = []
    cleaned = finite(value, found=found)
    if found:
        log.warning("%s: %d non-finite number(s) written as null (not determined): %s", what, len(found),
                    ", ".join(found[:10]) + (" ..." if len(found) > 10 else ""))
    return json.dumps(cleaned, allow_nan=False, **kwargs)
