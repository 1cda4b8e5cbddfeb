"""The one display rounding of every number a reader sees (the PDF's pages, the console table, flag texts).

A summary value is stored with 2 decimals (summary.json); a reader rounds that decimal value half up (223.05 ->
223.1, 1.25 -> 1.3, 14.25 -> 14.3). Python's float formatting rounds the binary value half to even (223.05 is
stored as 223.0499999... and formats as 223.0), so two outputs formatting the same value differently disagree.
Every place that prints a summary value goes through number_text; a value is stored (summary.json, SR) by
stored_value, so that rounding the stored number gives the digits of the measured value (one rounding).
"""
from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Context, Decimal

#: the most decimals a stored value keeps (stored_value); digits beyond them are float noise (display_round)
MAX_STORED_DIGITS = 6


def display_round(value: float, digits: int = 1) -> Decimal | None:
    """`value` rounded half up (away from zero) on its shortest decimal form (repr of the float: 223.05, not the
    binary 223.04999...; beyond MAX_STORED_DIGITS decimals a float is taken as noise) to `digits` decimals; None where not a finite number. Zero is never negative."""
    number = float(value)
    if not math.isfinite(number):
        return None
    # float noise below MAX_STORED_DIGITS decimals is no digit (223.04999999999998 from a sum is 223.05)
    exact = Decimal(repr(round(number, max(MAX_STORED_DIGITS, digits))))
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


def stored_value(value: float | None, digits: int = 2, shown: int = 1) -> float | None:
    """A measured value as summary.json and the SR keep it: always `digits` decimals (one decimal count per quantity
    on every output: "RV SV 43.94 mL" beside "LV SV 43.93 mL", never 43.945), chosen so that a reader rounding the
    stored number to `shown` decimals gets what every output shows, rounded once from the measured value: the value
    rounded half up to `digits` decimals, or, where that would read otherwise at `shown` decimals (90.146 -> 90.15
    reads 90.2, the measured value 90.1), the neighbouring `digits`-decimal number towards zero that reads as the
    measured value (90.14). So the stored number lies within 10^-digits of the measured value (within half that where
    no such boundary is crossed). None stays None; a non-finite value is returned as it is."""
    if value is None:
        return None
    number = float(value)
    if not math.isfinite(number):
        return number
    number = round(number, MAX_STORED_DIGITS)
    wanted = display_round(number, shown)
    stored = display_round(number, digits)
    if display_round(float(stored), shown) != wanted:
        # half up crossed the display boundary (x.x45 .. x.x5 -> x.x5): the number one step towards zero is inside it
        stored = stored - Decimal(1).scaleb(-digits).copy_sign(stored)
    return float(stored)
