"""The soak's and the faults' analysis parts that need no lab: /proc sampling of a process,
the soak's summary (growth after warm-up, first and last windows) and the fault kinds."""

from __future__ import annotations

import os

import pytest

from topologies.lab.daemons import LabError
from topologies.scenarios import faults
from topologies.scenarios.soak import proc_sample, summarise


def test_a_process_is_sampled_from_proc_and_a_gone_one_is_none() -> None:
    got = proc_sample(os.getpid())
    assert got is not None and got[0] > 0 and got[1] > 0 and got[2] >= 0
    assert proc_sample(2 ** 22 + 1) is None


def _sample(t: float, rss: int, fds: int) -> dict[str, object]:
    return {"t": t, "rib_prefixes": 10, "fib_routes": 5,
            "kinds": {"agent": {"procs": 1, "rss_kb": rss, "fds": fds, "cpu_s": t / 100}}}


def test_growth_is_counted_after_warm_up_and_windows_split_a_short_run() -> None:
    rows = [{"kind": "handoff", "t": 1000.0 + i, "ok": True, "reroute_ms": float(i % 2 + 1)}
            for i in range(120)]
    rows += [{"kind": "handoff", "t": 1121.0, "ok": False, "reroute_ms": None,
              "error": "AuthTimeout"},
             {"kind": "rotate", "t": 1122.0, "ok": True}]
    samples = [_sample(1000, 50000, 10), _sample(1060, 100000, 20), _sample(1120, 110000, 20)]
    r = summarise(2.0, 1000.0, rows, samples, 0, 0)
    assert (r["handoffs"], r["failed"], r["rotations"]) == (121, 1, 1)
    assert r["rss_growth_pct"] == {"agent": 10.0} and r["fd_growth"] == {"agent": 0}
    assert r["reroute_ms"]["p50"] == 1.5 and r["reroute_ms"]["p99"] == 2.0
    assert r["reroute_ms"]["p99_first_10min"] == 2.0 and r["errors"] == ["AuthTimeout"]
    assert r["stale_routes_end"] == 0


def test_an_unknown_fault_kind_is_refused_by_name() -> None:
    assert len(faults.KINDS) == 9
    with pytest.raises(LabError, match="unknown fault kinds"):
        faults.FaultsScenario(object(), kinds=("meteor",))  # type: ignore[arg-type]
