"""`flatarch scenario population --rate 10,30,100`: a sweep's phases in one lab, each
summarised as a run of its own, and the knee named (issue 15)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from topologies.analysis import plots
from topologies.scenarios.population import (
    KNEE_P99_MS,
    knee,
    phase_inputs,
    rates,
    sweep_table,
)


def test_rates_are_one_or_a_comma_separated_sweep() -> None:
    assert rates("100") == (100.0,)
    assert rates("10,30,100") == (10.0, 30.0, 100.0)
    for bad in ("10,x", "10,0", "-5", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            rates(bad)


def test_a_phase_sees_only_its_handoffs_samples_and_end_positions() -> None:
    params = {"mobiles": 2, "rate_per_s": 10.0, "duration_s": 30.0, "probe_interval_s": 1.0}
    measured = {"t_start": 100.0, "t_end": 140.0, "where": {"p1": "ar1"}, "up": {}}
    rows = [{"mn": "p1", "phase": 0}, {"mn": "p2"}, {"mn": "p1", "phase": 1}]
    samples = [{"t": t, "kind": "ar_agent"} for t in (120.0, 150.0, 175.0, 190.0)]
    phase = {"rate_per_s": 30.0, "t_start": 145.0, "t_end": 180.0, "backlog_drops": 7,
             "where": {"p1": "ar3"}}
    p, m, r, x = phase_inputs(1, phase, params, measured, rows, samples)
    assert p["rate_per_s"] == 30.0 and p["duration_s"] == 30.0 and p["mobiles"] == 2
    assert m["t_start"] == 145.0 and m["backlog_drops"] == 7 and m["where"] == {"p1": "ar3"}
    assert r == [{"mn": "p1", "phase": 1}]
    assert [s["t"] for s in x] == [150.0, 175.0]
    # A row written before sweeps existed belongs to the first phase.
    assert phase_inputs(0, {**phase, "t_start": 100.0}, params, measured, rows, samples)[2] \
        == rows[:2]


def point(rate: float, p99: float | None, failed: int = 0) -> dict[str, Any]:
    return {"rate_per_s": rate, "achieved_rate_per_s": rate, "handoffs": {"ok": 10,
            "failed": failed}, "reroute_ms": {"p50": 50.0, "p99": p99},
            "auth_ms": {"p99": 9.0}, "cpu_pct": {"ar_agent": rate / 10},
            "cpu_pct_all": {"ar_agent": rate / 10}, "machine_cpu_pct": {}}


def test_the_knee_is_the_lowest_rate_past_one_second_or_failing() -> None:
    assert knee([point(100, 400.0), point(30, 120.0)]) is None
    assert knee([point(300, 2500.0), point(100, KNEE_P99_MS + 1), point(30, 120.0)]) == 100.0
    assert knee([point(30, 120.0), point(50, None, failed=3)]) == 50.0


def test_the_sweep_table_has_a_line_per_rate() -> None:
    sweep = [point(10, 80.0), point(100, 1500.0)]
    lines = sweep_table({"sweep": sweep, "knee_rate_per_s": knee(sweep),
                         "knee_p99_ms": KNEE_P99_MS})
    assert "at 100.0" in lines[0] and len(lines) == 4
    assert lines[3].split()[:4] == ["100", "100.0", "10", "0"]


def test_the_sweep_is_drawn_with_and_without_the_machine_share(tmp_path: Path) -> None:
    old = [point(10, 80.0), point(50, None, failed=3)]  # a run kept before the share
    new = [{**p, "cpu_pct_all": {"ar_agent": 8 * p["cpu_pct"]["ar_agent"], "exabgp": 20.0},
            "machine_cpu_pct": {"idle": 100.0 - p["rate_per_s"]}} for p in old]
    for name, sweep in (("old.png", old), ("new.png", new)):
        f = plots.rate_sweep(sweep, KNEE_P99_MS, tmp_path / name)
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f.stat().st_size > 5000
    # The idle share and each kind's processes together are what the table shows too.
    line = sweep_table({"sweep": new, "knee_rate_per_s": 50.0, "knee_p99_ms": KNEE_P99_MS})[3]
    assert line.split()[6:9] == ["50.0", "40.0", "20.0"]
