"""The project's one statistics module: percentiles and means over measured values.

Every percentile a scenario, the report, a benchmark or the fuzz campaign prints comes from
`percentile` here, so two figures called "p95" are always computed the same way. Standard
library only: agents and the lab both import it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def percentile(values: Iterable[float], q: float) -> float:
    """The q-quantile (0 <= q <= 1) of ``values``; NaN when there are none.

    Method: linear interpolation between the closest ranks, numpy's default ('linear',
    Hyndman and Fan type 7). Sort the n values v[0..n-1]; the rank is h = (n - 1) * q;
    the result is v[floor(h)] + (h - floor(h)) * (v[floor(h) + 1] - v[floor(h)]). So the
    0.5-quantile of [10, 20, 20, 30] is 20 and its 0.95-quantile is 28.5; q = 0 is the
    minimum and q = 1 the maximum.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} is not within [0, 1]")
    s = sorted(float(v) for v in values)
    if not s:
        return float("nan")
    h = (len(s) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (h - lo)


def percentile_or_none(values: Iterable[float], q: float,
                       digits: int | None = None) -> float | None:
    """`percentile`, but None when there are no values: JSON has no NaN. Rounded to
    `digits` places when they are given."""
    s = list(values)
    if not s:
        return None
    v = percentile(s, q)
    return round(v, digits) if digits is not None else v


def median(values: Iterable[float]) -> float:
    """The 0.5-quantile, by `percentile`'s method."""
    return percentile(values, 0.5)


def mean(values: Iterable[float]) -> float:
    """The arithmetic mean; NaN when there are no values."""
    vals = [float(v) for v in values]
    return sum(vals) / len(vals) if vals else float("nan")
