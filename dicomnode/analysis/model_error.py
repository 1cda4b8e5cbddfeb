"""Whether a flag that compares a model's measurement with a cut-off can be asserted, given the model's known error.

Shared by the LGE large-burden flag (analysis/lge.py, lge_percent_validation) and the cine range flags
(analysis/cine_metrics.py, normal_range_flags and stroke_volume_mismatch_note).
"""
from __future__ import annotations

import math
from typing import Literal

Side = Literal["below", "above"]


def beyond_known_error(value: float, limit: float, side: Side, mae: float, bias: float = 0.0) -> bool:
    """Whether `value` lies beyond `limit` on `side` ("below" or "above") by more than the model's known error, so
    that a flag on it may be asserted; False where the flag is within the model's error ("confirm by reading").

    The error is the model's agreement with expert readers in its card's patient-level cross-validation (Bland-Altman
    style, prediction - expert, in the value's unit): `bias` its mean error, `mae` its mean absolute error. The expert
    reading expected for a measured value is value - bias (the mean difference is the systematic part of the
    disagreement, Bland & Altman, Lancet 1986;327:307-310); the rest is typically `mae` in size. The flag is asserted
    only where value - bias lies beyond `limit` by more than `mae`: e.g. RVEF 42 % against the <= 45 % cut-off with a
    model that reads RVEF 5 points low (bias -5, MAE 9.3) is expected at 47 % by a reader, no evidence of dysfunction,
    while 25 % (expected 30 %) is. With bias 0 the rule is |value - limit| <= mae within the error, the LGE
    large-burden rule. Since mae >= |bias| for any set of errors, a value on the normal side of the limit is never
    beyond it. Units: those of value, limit, mae and bias alike. Raises ValueError for a non-finite input, a negative
    mae or an unknown side.
    """
    if side not in ("below", "above"):
        raise ValueError(f"side must be 'below' or 'above', not {side!r}")
    numbers = {"value": value, "limit": limit, "mae": mae, "bias": bias}
    for name, number in numbers.items():
        if number is None or not math.isfinite(float(number)):
            raise ValueError(f"{name} must be a finite number, not {number!r}")
    if mae < 0:
        raise ValueError(f"mae must not be negative, not {mae!r}")
    expected = float(value) - float(bias)
    return expected < limit - mae if side == "below" else expected > limit + mae


#: the two-sided 95 % normal quantile: a mean error outside +-BIAS_Z standard errors of 0 is systematic
BIAS_Z = 1.96


def systematic_bias(bias: float | None, sd: float | None, n: int | None) -> float:
    """The part of a model's mean error (`bias`, prediction - expert over `n` patients with standard deviation `sd`)
    that beyond_known_error subtracts: `bias` where its 95 % confidence interval excludes 0 (|bias| > 1.96 sd / sqrt(n),
    Bland & Altman 1986: the mean difference is systematic only where it is distinguishable from chance), else 0.0.
    One rule for every flag it qualifies: the cine range flags (RVEF -5.0 +- 11.2 points over 100 patients: subtracted)
    and the LGE large-burden flag (%LGE +0.8 +- 7.4 over 33 MyoPS patients: chance, not subtracted). Where `sd` or `n`
    is unknown the bias is taken as given; None counts as 0. The rule only qualifies a flag the measured value
    triggers: it never raises a flag on a value inside its limit."""
    if bias is None or not math.isfinite(float(bias)):
        return 0.0
    if sd is None or n is None or not math.isfinite(float(sd)) or float(sd) < 0 or not math.isfinite(float(n)) \
            or int(n) < 2:
        return float(bias)
    return float(bias) if abs(float(bias)) > BIAS_Z * float(sd) / math.sqrt(int(n)) else 0.0
