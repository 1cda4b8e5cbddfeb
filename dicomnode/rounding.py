"""The one display rounding of every number a reader sees (the PDF's pages, the console table, flag texts).

A summary value is stored with 2 decimals (summary.json); a reader rounds that decimal value half up (223.05 ->
223.1, 1.25 -> 1.3, 14.25 -> 14.3). Python's float formatting rounds the binary value half to even (223.05 is
stored as 223.0499999... and formats as 223.0), so two outputs formatting the same value differently disagree.
Every place that prints a summary value goes through number_text.
"""
from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Context, Decimal


def display_round(value: float, digits: int = 1) -> Decimal | None:
    """`value` rounded half up (away from zero) on its shortest decimal form (repr of the float: 223.05, not the
    binary 223.04999...) to `digits` decimals; None where not a finite number. Zero is never negative."""
    number = float(value)
    if not math.isfinite(number):
        return None
    exact = Decimal(repr(number))
    # enough precision for any float's integer digits (the default 28 raises InvalidOperation from 1e27 up)
    rounded = exact.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP,
                             context=Context(prec=max(28, exact.adjusted() + digits + 2)))
    return abs(rounded) if rounded == 0 else rounded


def number_text(value, digits: int = 1, below: bool = False) -> str:
    """`value` as text rounded by display_round to `digits` decimals ("223.1"); "n/a" for None or a value that is no
    number, str(value) for a non-finite float ("nan"). below=True: a value above 0 that rounds to 0 reads "<1"
    ("<0.1" at 1 decimal): an extent that is present is never shown as 0."""
    if value is None or isinstance(value, bool):
        return "n/a"
    try:
        rounded = display_round(value, digits)
    except (TypeError, ValueError):
        return "n/a"
    if rounded is None:
        return str(float(value))
    if below and rounded == 0 and float(value) > 0:
        return "<" + f"{Decimal(1).scaleb(-digits):.{digits}f}"
    return f"{rounded:.{digits}f}"
