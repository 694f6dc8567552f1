"""The soak's and the faults' analysis parts that need no lab: /proc sampling of a process,
the soak's summary (growth after warm-up, first and last windows), the fault kinds, and a
fault's sessions, ICMP and TCP, from its raw files."""

from __future__ import annotations

import json
import os
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path

import pytest

from agents.contract import REDIRECT_METRIC
from tests.unit.test_measure import iperf_doc
from topologies.analysis.measure import RouteEvent
from topologies.lab.daemons import LabError
from topologies.scenarios import faults
from topologies.scenarios.soak import proc_sample, reroute_summary, reroutes, summarise


def test_a_process_is_sampled_from_proc_and_a_gone_one_is_none() -> None:
    got = proc_sample(os.getpid())
    assert got is not None and got[0] > 0 and got[1] > 0 and got[2] >= 0
    assert proc_sample(2 ** 22 + 1) is None


def _sample(t: float, rss: int, fds: int) -> dict[str, object]:
    return {"t": t, "rib_prefixes": 10, "fib_routes": 5,
            "kinds": {"agent": {"procs": 1, "rss_kb": rss, "fds": fds, "cpu_s": t / 100}}}


def test_growth_is_counted_after_warm_up_and_windows_split_a_short_run() -> None:
    rows = [{"kind": "handoff", "t": 1000.0 + i, "ok": True, "reroute_ms": float(i % 2 + 1),
             "auth_ms": 0.5} for i in range(120)]
    rows += [{"kind": "handoff", "t": 1121.0, "ok": False, "reroute_ms": None,
              "error": "AuthTimeout"},
             {"kind": "rotate", "t": 1122.0, "ok": True}]
    samples = [_sample(1000, 50000, 10), _sample(1060, 100000, 20), _sample(1120, 110000, 20)]
    r = summarise(2.0, 1000.0, rows, samples, 0, 0)
    assert (r["handoffs"], r["failed"], r["rotations"]) == (121, 1, 1)
    assert r["rss_growth_pct"] == {"agent": 10.0} and r["fd_growth"] == {"agent": 0}
    assert r["reroute_ms"]["p50"] == 1.5 and r["reroute_ms"]["p99"] == 2.0
    assert r["reroute_ms"]["p99_first_10min"] == 2.0 and r["errors"] == ["AuthTimeout"]
    assert r["stale_routes_end"] == 0 and r["auth_ms"] == {"p50": 0.5, "p99": 0.5}
    # A run from before the route events were read: its reroute_ms was the AUTH's.
    older = [{k: v for k, v in row.items() if k != "auth_ms"} for row in rows]
    r = summarise(2.0, 1000.0, older, samples, 0, 0)
    assert r["reroute_ms"]["p99"] is None and r["auth_ms"]["p99"] == 2.0


def test_a_handoffs_reroute_ends_when_the_last_router_settles_on_the_new_route() -> None:
    dst = IPv4Network("10.64.0.10/32")

    def route(ts: float, node: str, kind: str, metric: int, hop: str) -> RouteEvent:
        return RouteEvent(ts, node, "add" if kind == "add" else "del", dst, metric, 186,
                          frozenset({hop}))

    events = [route(99.0, "agg1", "add", 20, "10.0.0.1"),  # before the move: via ar1
              route(100.05, "ar1", "add", REDIRECT_METRIC, "10.0.0.9"),  # a redirect: no
              route(100.06, "agg1", "add", 20, "10.0.0.2"),  # agg1 now via ar2
              route(100.12, "core1", "add", 20, "10.0.0.2"),  # core1 last, 120 ms in
              route(101.53, "agg1", "add", 20, "10.0.0.1")]  # the next move, back
    rows = [{"kind": "handoff", "mn": "mn1", "t": 99.99, "ok": True, "t_attach": 100.0,
             "t_auth_sent": 100.0, "auth_ms": 5.0},
            {"kind": "rotate", "mn": "mn3", "t": 100.5, "ok": True},
            {"kind": "handoff", "mn": "mn1", "t": 101.49, "ok": True, "t_attach": 101.5,
             "t_auth_sent": 101.5, "auth_ms": 5.0},
            {"kind": "handoff", "mn": "mn2", "t": 101.9, "ok": False, "t_attach": 102.0,
             "t_auth_sent": None}]
    got = reroutes(rows, events, {"mn1": dst, "mn2": IPv4Network("10.64.1.10/32")},
                   ["agg1", "ar1", "core1"], 110.0)
    assert got[0]["reroute_ms"] == pytest.approx(120.0)
    assert got[2]["reroute_ms"] == pytest.approx(30.0)
    assert "reroute_ms" not in got[1] and "reroute_ms" not in got[3]
    assert "reroute_ms" not in rows[0]  # the raw rows stay as recorded
    # --family: the /64's own route events give the same handoff its IPv6 re-route.
    p6 = IPv6Network("2001:db8:4000:1::/64")
    six = [RouteEvent(100.09, "core1", "add", p6, 20, 186, frozenset({"fe80::2"}))]
    both = reroutes(got, six, {"mn1": p6}, ["agg1", "ar1", "core1"], 110.0,
                    key="reroute6_ms")
    assert both[0]["reroute6_ms"] == pytest.approx(90.0)
    assert both[0]["reroute_ms"] == pytest.approx(120.0)  # the /32's stays
    assert both[2]["reroute6_ms"] == 0.0  # no /64 route changed in that window
    summary = reroute_summary(both, "reroute6_ms", 99.0, 1.0)["reroute_ms"]
    assert (summary["p50"], summary["p99"]) == (pytest.approx(45.0), pytest.approx(89.1))


def test_an_unknown_fault_kind_is_refused_by_name() -> None:
    assert len(faults.KINDS) == 9
    with pytest.raises(LabError, match="unknown fault kinds"):
        faults.FaultsScenario(object(), kinds=("meteor",))  # type: ignore[arg-type]


def _probe_file(path: Path, t0: float, seconds: float, gap: tuple[float, float]) -> None:
    """agents.probe lines every 10 ms from t0, none sent inside ``gap``."""
    lines = [f"[{t0 + i / 100 + 0.001:.3f}] 64 bytes from 10.64.0.10: icmp_seq={i} ttl=62 "
             "time=1.00 ms" for i in range(int(seconds * 100))
             if not gap[0] <= t0 + i / 100 < gap[1]]
    path.write_text("\n".join(lines) + "\n")


def test_a_faults_sessions_count_the_tcp_streams_and_a_dead_stream_is_not_kept(
        tmp_path: Path) -> None:
    t0 = 1000.0
    raw = {"kind": "exabgp_ar", "node": "ar2", "tag": "exabgp_ar", "arch": "flat",
           "event": "exabgp_ar", "t_start": t0, "t_fail": t0 + 1, "t_repaired": t0 + 3,
           "t_recovered": t0 + 4, "observe_s": 5.0, "handoffs": [],
           "stale_routes_after": 0, "missing_routes_after": 0,
           "addresses": {"mn1": "10.64.0.10", "mn2": "10.64.1.10"}, "tcp": ["mn1", "mn2"]}
    for mn in ("mn1", "mn2"):
        _probe_file(tmp_path / f"fail-exabgp_ar-{mn}.txt", t0, 7.0, (t0 + 1.2, t0 + 1.35))
    alive = iperf_doc([50000] * 20 + [0] * 4 + [50000] * 56)  # a 400 ms stall, then on
    dead = iperf_doc([50000] * 30 + [0] * 50)  # never came back
    (tmp_path / faults.tcp_file("exabgp_ar", "mn1")).write_text(json.dumps(alive))
    (tmp_path / faults.tcp_file("exabgp_ar", "mn2")).write_text(json.dumps(dead))
    row = faults.fault_row(tmp_path, raw)
    assert (row["sessions_total"], row["sessions_survived"]) == (4, 3)
    assert (row["tcp_sessions"], row["tcp_survived"]) == (2, 1)
    assert row["tcp_worst_stall_ms"] == pytest.approx(5000.0)
    assert row["worst_gap_ms"] is not None and row["worst_gap_ms"] < 300
    (tmp_path / faults.tcp_file("exabgp_ar", "mn2")).unlink()  # a stream that left no file
    row = faults.fault_row(tmp_path, raw)
    assert (row["sessions_total"], row["sessions_survived"], row["tcp_survived"]) == (4, 3, 1)
    assert " 1/2 " in faults.FaultsScenario.table({"faults": [row]})
    older = {k: v for k, v in raw.items() if k != "tcp"}  # a run from before TCP was counted
    assert faults.fault_row(tmp_path, older)["sessions_total"] == 2


def test_a_faults_ipv6_sessions_are_counted_with_the_ipv4_ones_and_apart(
        tmp_path: Path) -> None:
    """--family both: the /64's probe and TCP files carry the V6 suffix; the row totals both
    families, and ``by_family`` keeps each one's sessions and route check."""
    t0 = 1000.0
    raw = {"kind": "named", "node": "dns", "tag": "named", "arch": "flat", "event": "named",
           "t_start": t0, "t_fail": t0 + 1, "t_repaired": t0 + 3, "t_recovered": t0 + 4,
           "observe_s": 5.0, "handoffs": [], "stale_routes_after": 1,
           "missing_routes_after": 0, "addresses": {"mn1": "10.64.0.10"}, "tcp": ["mn1"],
           "addresses6": {"mn1": "2001:db8:4000:1::1"}, "families": ["ipv4", "ipv6"],
           "routes_after": {"ipv4": {"stale": 0, "missing": 0},
                            "ipv6": {"stale": 1, "missing": 0}}}
    _probe_file(tmp_path / "fail-named-mn1.txt", t0, 7.0, (t0 + 1.2, t0 + 1.3))
    _probe_file(tmp_path / f"fail-named{faults.V6}-mn1.txt", t0, 7.0, (t0 + 1.2, t0 + 1.5))
    (tmp_path / faults.tcp_file("named", "mn1")).write_text(
        json.dumps(iperf_doc([50000] * 80)))
    (tmp_path / faults.tcp_file(f"named{faults.V6}", "mn1")).write_text(
        json.dumps(iperf_doc([50000] * 30 + [0] * 50)))  # the IPv6 stream died
    row = faults.fault_row(tmp_path, raw)
    assert (row["sessions_total"], row["sessions_survived"]) == (4, 3)
    v4, v6 = row["by_family"]["ipv4"], row["by_family"]["ipv6"]
    assert (v4["sessions_survived"], v4["tcp_survived"], v4["stale_routes_after"]) == (2, 1, 0)
    assert (v6["sessions_survived"], v6["tcp_survived"], v6["stale_routes_after"]) == (1, 0, 1)
    assert v6["worst_gap_ms"] > v4["worst_gap_ms"]  # the longer IPv6 gap is its own
    only6 = {**raw, "addresses": {}, "tcp": [], "families": ["ipv6"]}
    assert set(faults.fault_row(tmp_path, only6)["by_family"]) == {"ipv6"}
