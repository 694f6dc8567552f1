"""`flatarch scenario population --mobiles 100,300,1000`: a lab per size, combined into one
result with the memory per additional MN by difference between sizes and the host routes
per router against the population (issue 15); `flatarch analyse` reads such a run back. And
the DNS plane's load over the moves (the resolver's counters, BIND's logs)."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from topologies.analysis.measure import MeasureError
from topologies.lab import procstat
from topologies.scenarios.base import (
    POINTS_FILE,
    RUN_FILE,
    TOPOLOGY_FILE,
    points_scenario,
    read_points,
    write_points,
)
from topologies.scenarios.population import (
    SIZE_PLOT,
    PopulationScenario,
    between_counters,
    by_difference,
    dns_line,
    dns_load,
    per_second,
    size_point,
    size_table,
    sizes,
)

ROOT = Path(__file__).resolve().parents[2]


def test_sizes_are_one_or_an_increasing_comma_separated_sweep() -> None:
    assert sizes("1000") == (1000,)
    assert sizes("100,300,1000") == (100, 300, 1000)
    for bad in ("100,x", "0", "300,100", "100,100", "", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError):
            sizes(bad)


def test_a_lab_per_size_each_in_its_own_subdirectory_and_one_size_in_the_run_itself() -> None:
    args = argparse.Namespace(mobiles=(100, 300), rate=(10.0,), topology="t.yaml")
    points = PopulationScenario.points(args)
    assert [(sub, a.mobiles) for sub, a in points] == [("mobiles-100", 100),
                                                      ("mobiles-300", 300)]
    points[0][1].topology = "changed"  # each point's arguments are its own
    assert args.topology == "t.yaml" and points[1][1].topology == "t.yaml"
    assert [(sub, a.mobiles) for sub, a in
            PopulationScenario.points(argparse.Namespace(mobiles=(50,)))] == [("", 50)]


def test_the_machine_memory_in_use_is_total_less_available() -> None:
    text = "MemTotal:       24000000 kB\nMemFree:  1000 kB\nMemAvailable:   20000000 kB\n"
    assert procstat.machine_used_mb(text) == pytest.approx(3906.2, abs=0.1)
    assert procstat.machine_used_mb("MemTotal: 5 kB\n") is None
    assert isinstance(procstat.machine_used_mb(), float)


def result(mobiles: int, rss: float, machine: float | None) -> dict[str, Any]:
    return {"mobiles": mobiles, "up_s": mobiles / 100, "rss_mb_added": rss,
            "machine_mb_added": machine, "memory_mb_per_mobile": rss / mobiles,
            "handoffs": {"attempted": 10, "ok": 10, "failed": 0, "failures": {}},
            "reroute_ms": {"p50": 90.0, "p99": 240.0},
            "host_routes": {"peak": {"agg1": mobiles // 3, "core1": mobiles // 2,
                                     "ar1": 4}, "end": {}},
            "stale_host_routes": {}, "plots": [], "mobiles_away_at_end": mobiles // 4}


def test_the_memory_per_additional_mn_is_taken_between_neighbouring_sizes() -> None:
    points = [size_point("a", result(100, 10.0, 30.0), {}),
              size_point("b", result(300, 22.0, None), {}),
              size_point("c", result(1000, 64.0, 130.0), {})]
    assert by_difference(points, "rss_mb_added") == [
        {"from": 100, "to": 300, "mb_per_mobile": 0.06},
        {"from": 300, "to": 1000, "mb_per_mobile": 0.06}]
    # A size whose machine figure is missing gives no difference with either neighbour.
    assert by_difference(points, "machine_mb_added") == []


def test_a_size_point_keeps_the_busiest_router_of_each_role() -> None:
    p = size_point("mobiles-300", result(300, 20.0, 40.0),
                   {"agg1": "agg", "core1": "core", "ar1": "ar"})
    assert p["host_routes_peak_by_role"] == {"agg": 100, "ar": 4, "core": 150}
    assert p["handoffs"] == {"attempted": 10, "ok": 10, "failed": 0}
    assert size_point("x", result(300, 20.0, 40.0), {})["host_routes_peak_by_role"] \
        == {"other": 150}


def fake_point(out: Path, sub: str, complete: bool = True) -> None:
    d = out / sub
    d.mkdir(parents=True)
    (d / RUN_FILE).write_text(json.dumps({"scenario": "population", "complete": complete}))
    shutil.copyfile(ROOT / "topologies" / "figure2.yaml", d / TOPOLOGY_FILE)


def test_a_size_sweep_is_combined_drawn_and_read_back_point_by_point(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_points(tmp_path, "population", ["mobiles-100", "mobiles-300", "mobiles-1000"])
    for sub in ("mobiles-100", "mobiles-300"):
        fake_point(tmp_path, sub)
    fake_point(tmp_path, "mobiles-1000", complete=False)  # stopped part way: left out
    assert points_scenario(tmp_path) == "population"
    assert read_points(tmp_path) == ["mobiles-100", "mobiles-300"]
    sizes_of = {"mobiles-100": result(100, 10.0, 25.0), "mobiles-300": result(300, 22.0, 45.0)}
    monkeypatch.setattr(PopulationScenario, "analysed",
                        classmethod(lambda cls, d: sizes_of[d.name]))
    got = PopulationScenario.analysed_points(tmp_path)
    assert [p["mobiles"] for p in got["size_sweep"]] == [100, 300]
    assert got["mobiles"] == 300 and len(got["points"]) == 2
    assert got["size_sweep"][1]["host_routes_peak_by_role"]["agg"] == 100
    assert got["memory_by_difference"] == {
        "processes": [{"from": 100, "to": 300, "mb_per_mobile": 0.06}],
        "processes_pss": [],  # runs from before PSS was read have none
        "machine": [{"from": 100, "to": 300, "mb_per_mobile": 0.1}]}
    plot = tmp_path / SIZE_PLOT
    assert str(plot) in got["plots"] and plot.read_bytes()[:4] == b"\x89PNG"
    table = "\n".join(size_table(got))
    assert "size sweep" in table and "100->300 0.06 MB" in table
    assert table.splitlines()[3].split()[5] == "75"  # 300 MNs, a quarter away at the end


def test_a_run_directory_of_one_lab_is_not_a_run_of_points(tmp_path: Path) -> None:
    assert points_scenario(tmp_path) is None and read_points(tmp_path) is None
    (tmp_path / POINTS_FILE).write_text('{"scenario": "population", "points": ["../x"]}')
    with pytest.raises(MeasureError, match="subdirectory"):
        points_scenario(tmp_path)
    write_points(tmp_path, "population", ["mobiles-1"])
    with pytest.raises(MeasureError, match="none of the points"):
        read_points(tmp_path)


def test_the_dns_planes_load_over_the_moves() -> None:
    before = {"t": 100.0, "total.num.queries": 50.0, "total.num.cachemiss": 10.0}
    after = {"t": 110.0, "total.num.queries": 250.0, "total.num.cachemiss": 30.0}
    got = between_counters(before, after)
    assert got == {"t0": 100.0, "s": 10.0, "total.num.queries": 200.0,
                   "total.num.cachemiss": 20.0}
    assert between_counters({}, after) == {}
    # The resolver's window is BIND's too: not the run's, which goes on while routes settle.
    load = dns_load(got, [100.5, 101.2, 101.7, 105.0, 120.0], [102.0], 90.0, 130.0, ok=40)
    assert load["unbound_queries_per_s"] == 20.0 and load["unbound_cachemiss_per_s"] == 2.0
    assert load["unbound_queries_per_handoff"] == 5.0
    assert load["bind_queries_per_s"] == {"mean": 0.4, "peak": 2.0}  # 120.0 is outside
    assert load["bind_updates_per_s"] == {"mean": 0.1, "peak": 1.0}
    empty = dns_load({}, [], [], 100.0, 110.0, ok=0)
    assert empty["unbound_queries_per_s"] is None and empty["unbound_queries_per_handoff"] is None
    assert empty["bind_updates_per_s"] == {"mean": 0.0, "peak": 0.0}
    assert per_second([1.0], 5.0, 5.0) == {"mean": None, "peak": None}
    assert "20.0 queries/s (5.0 per handoff" in dns_line(load) and dns_line(None) == "dns: -"
