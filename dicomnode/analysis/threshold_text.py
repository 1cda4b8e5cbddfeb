"""The words every output (PDF, SR, console) uses for the LGE threshold methods (n-SD, FWHM) and the large-burden
rule, from the LGE summary block, so that a method's name, its caveat and its reason read alike wherever its value
appears (break45a findings 2-4)."""
from __future__ import annotations

import re

#: the start of a threshold method's `reason` / `caveat` where the model card does not validate it (lge.py
#: LGEPipeline._unvalidated): withheld by analysis.lge.threshold_methods = 'validated', computed with 'always'
NOT_VALIDATED_START = "not validated"

#: short, plain reasons for a threshold method not reported, matched on the start of summary nsd/fwhm `reason`
#: (dicomnode/analysis/lge.py, lge_metrics.py): page 1 and the console give these, page 2 and the SR the full reason
SHORT_METHOD_REASONS = (
    (NOT_VALIDATED_START, "not validated"),
    ("only ", "quantised (8-bit) input"),
    ("8-bit", "8-bit input"),
    ("windowed input", "clipped (windowed) input"),
    ("PSIR input", "PSIR input"),
    ("no enhanced region", "no enhanced region"),
    ("not determined", "not determined"),
)
#: where a method's reason is none of SHORT_METHOD_REASONS and not plain words (numbers, settings)
METHOD_REASON_FALLBACK = "not applicable to this input"

#: the large-burden rule of Chan 2014 (HCM: LGE >= 15 % of the LV mass), the default of analysis.lge.large_burden_*
CHAN_2014_CUTOFF_PERCENT = 15.0
CHAN_2014_COMPARATOR = ">="


def method_name(key: str, n=None) -> str:
    """"3-SD" (key "nsd", n 3; "n-SD" where n is unknown) or "FWHM" (key "fwhm"): the name a method's value carries
    on every output."""
    if key == "fwhm":
        return "FWHM"
    return f"{n}-SD" if n is not None else "n-SD"


def method_reported(block) -> bool:
    """Whether a threshold method's summary block (or a bare number) gives a %LGE to report."""
    if isinstance(block, (int, float)) and not isinstance(block, bool):
        return True
    return isinstance(block, dict) and block.get("lge_percent") is not None and block.get("applicable", True) is not False


def method_reason(block) -> str:
    """The full reason a threshold method gives no number (summary `reason`, or the `error` of one that failed)."""
    return str((block.get("reason") or block.get("error") or "") if isinstance(block, dict) else "") or "no reason given"


def short_method_reason(block) -> str:
    """A threshold method's reason in a few plain words (SHORT_METHOD_REASONS): no pixel statistics, no setting."""
    reason = method_reason(block)
    for start, short in SHORT_METHOD_REASONS:
        if reason.startswith(start):
            return short
    first = re.split(r"[:;(]", reason, maxsplit=1)[0].strip()
    plain = first and len(first) <= 60 and not re.search(r"[0-9=_]|\w\.\w", first)
    return first if plain else METHOD_REASON_FALLBACK


def withheld_not_validated(block) -> bool:
    """True for a method given no number because the model card does not validate it (threshold_methods =
    'validated'): withheld, not inapplicable to the input."""
    return not method_reported(block) and isinstance(block, dict) and method_reason(block).startswith(NOT_VALIDATED_START)


def unvalidated_caveat(block) -> str | None:
    """The caveat of a method computed though not validated (threshold_methods = 'always': summary `validated`
    false, `caveat`), None for a validated method or one without a number."""
    if not method_reported(block) or not isinstance(block, dict) or block.get("validated") is not False:
        return None
    return str(block.get("caveat") or NOT_VALIDATED_START)


def agreement_r(text: str | None) -> float | None:
    """The agreement with expert %LGE ("... r = 0.48 ...") a not-validated caveat or reason states, None without."""
    found = re.search(r"\br = (-?\d+(?:\.\d+)?)", str(text or ""))
    return float(found.group(1)) if found else None


def not_validated_short(text: str | None) -> str:
    """"not validated (r = 0.48)" from a caveat or reason (agreement_r), "not validated" where it gives no r."""
    r = agreement_r(text)
    return NOT_VALIDATED_START if r is None else f"{NOT_VALIDATED_START} (r = {r:.2f})"


def threshold_method_lines(nsd, fwhm) -> list[str]:
    """The full reason of each threshold method not reported (PDF page 2, SR comments), once where both agree:
    "Threshold methods 5-SD and FWHM not reported: not validated on the automatic myocardium: ... r = 0.34 ..."."""
    n = nsd.get("n", "n") if isinstance(nsd, dict) else "n"
    missing = [(name, method_reason(block)) for name, block in ((f"{n}-SD", nsd), ("FWHM", fwhm))
               if not method_reported(block)]
    if len(missing) == 2 and missing[0][1] == missing[1][1]:
        return [f"Threshold methods {n}-SD and FWHM not reported: {missing[0][1]}."]
    return [f"Threshold method {name} not reported: {reason}." for name, reason in missing]


def threshold_caveat_lines(nsd, fwhm) -> list[str]:
    """The caveat of each threshold method computed though not validated (SR comments): "%LGE by 3-SD threshold:
    not validated on the automatic myocardium: agreement with expert %LGE r = 0.48 ..."; [] where none is."""
    n = nsd.get("n") if isinstance(nsd, dict) else None
    return [f"%LGE by {method_name(key, n)} threshold: {caveat}" for key, block in (("nsd", nsd), ("fwhm", fwhm))
            if (caveat := unvalidated_caveat(block))]


def is_chan_rule(cutoff: float, comparator: str) -> bool:
    """Whether the large-burden rule is Chan 2014's (>= 15 %), the default, not a site-configured one."""
    return comparator == CHAN_2014_COMPARATOR and float(cutoff) == CHAN_2014_CUTOFF_PERCENT


def burden_rule_source(cutoff: float, comparator: str) -> str:
    """Where the large-burden rule comes from, as every output says it beside the rule: Chan 2014's HCM risk cut-off
    only where the rule is Chan's (>= 15 %); a site-configured cut-off else (analysis.lge.large_burden_*)."""
    if is_chan_rule(cutoff, comparator):
        return "HCM risk cut-off, Chan 2014; not validated for infarct scar"
    return "site-configured cut-off; not validated for infarct scar"
