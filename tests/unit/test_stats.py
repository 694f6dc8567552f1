"""The one percentile of the analysis room (topologies/analysis/stats.py) on known inputs,
and against numpy's default method, which its docstring says it is."""

from __future__ import annotations

import math
import random

import pytest

from topologies.analysis.stats import mean, median, percentile, percentile_or_none


def test_known_values() -> None:
    v = [30.0, 10.0, 20.0, 20.0]  # order does not matter
    assert percentile(v, 0.5) == 20.0
    assert percentile(v, 0.95) == pytest.approx(28.5)
    assert percentile(v, 0.0) == 10.0 and percentile(v, 1.0) == 30.0
    assert percentile([1.0, 2.0], 0.25) == pytest.approx(1.25)
    assert percentile([7.0], 0.95) == 7.0
    assert median([1.0, 2.0, 3.0, 4.0]) == 2.5


def test_no_values_is_nan_and_a_bad_quantile_is_refused() -> None:
    assert math.isnan(percentile([], 0.5))
    assert math.isnan(mean([]))
    with pytest.raises(ValueError):
        percentile([1.0], 95)


def test_for_json_no_values_is_none_and_a_value_is_rounded_when_asked() -> None:
    assert percentile_or_none([], 0.5) is None
    assert percentile_or_none(iter([]), 0.99, 3) is None
    assert percentile_or_none([1.0, 2.0], 0.25) == pytest.approx(1.25)
    assert percentile_or_none((x for x in [1.0, 2.0]), 0.25, 1) == 1.2  # a generator, once


def test_matches_numpys_default_linear_method() -> None:
    np = pytest.importorskip("numpy")
    rng = random.Random(14)
    for n in (1, 2, 3, 5, 10, 101):
        values = [rng.uniform(0, 500) for _ in range(n)]
        for q in (0.0, 0.05, 0.5, 0.9, 0.95, 0.99, 1.0):
            assert percentile(values, q) == pytest.approx(float(np.percentile(values, q * 100)))


def test_mean() -> None:
    assert mean([1, 2, 3, 6]) == 3.0
