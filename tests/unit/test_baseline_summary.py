"""The baseline's figures from plain records: the delay a traced path's links add, and one flat
configuration's summary, which never mixes modes and counts home round trips exactly."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
import yaml

from topologies import model
from topologies.model.links import with_distance
from topologies.scenarios.baseline import (
    failure_file,
    failure_sessions,
    flat_summary,
    ipv6_summary,
    of_family,
    path_delay_ms,
)
from topologies.scenarios.handoff import PING_INTERVAL_S, positive_ms

FIG2 = Path(__file__).resolve().parents[2] / "topologies" / "figure2.yaml"


def test_path_delay_is_the_links_one_way_sum() -> None:
    doc = yaml.safe_load(FIG2.read_text())
    topo = model.build(with_distance(doc, "regional"))
    # cn-inet 20, inet-core1 5, core1-agg1 2, agg1-ar1 1; the MN's address ends the chain.
    assert path_delay_ms(topo, ["cn", "inet", "core1", "agg1", "ar1", "10.64.0.10"]) == 28.0
    assert path_delay_ms(topo, ["cn", "inet", None, "agg1", "ar1"]) == 21.0  # a '*' adds 0
    assert path_delay_ms(model.build(doc), ["cn", "inet", "core1"]) == 0.0


def _h(ms: float, trips: int | None, size: int) -> dict[str, Any]:
    return {"interruption_ms": ms, "reroute_ms": 2 * ms, "auth_ms": ms / 10,
            "home_round_trips": trips, "auth_size": size, "path_optimal": True,
            "updates": {"core1": 2}, "timeline_ms": {"redirect_sent": 1.0}}


def test_flat_summary_of_one_configuration() -> None:
    walk = {"handoffs": [_h(10.0, 0, 1200), _h(30.0, 0, 1210)],
            "warmup_handoffs": [_h(50.0, 2, 1200)], "iperf": {"survived": True}}
    dns = {"before": {"total.num.queries": 10.0}, "after": {"total.num.queries": 19.0}}
    s = flat_summary(walk, dns, "redirect", "stapled")
    assert (s["mode"], s["dns_mode"], s["handoffs"]) == ("redirect", "stapled", 2)
    assert s["home_round_trips_per_handoff"] == 0.0  # the warm-up's 2 are not in it
    assert s["auth_size"] == {"min": 1200.0, "p50": 1205.0, "max": 1210.0}
    assert s["messages_per_handoff"] == {"air": 2.0, "dns_queries": 3.0, "bgp_updates": 2.0,
                                         "ar_to_ar": 2.0}
    assert s["interruption_ms_p95"] > s["interruption_ms_p50"] >= 10.0


def test_a_dual_stack_walk_is_summarised_per_family() -> None:
    """The IPv4 blocks read only IPv4 records; the ipv6 block the /64s' over the same
    handoffs, with the path phase's IPv6 round trips (a NaN, no echo, left out)."""
    v4 = [{**_h(10.0, 0, 1200), "family": "ipv4"}, {**_h(12.0, 0, 1200), "family": "ipv4"}]
    v6 = [{**_h(40.0, 0, 1200), "family": "ipv6"}, {**_h(44.0, 0, 1200), "family": "ipv6"}]
    walk = {"handoffs": [v4[0], v6[0], v4[1], v6[1]], "warmup_handoffs": [],
            "iperf": {"survived": True}, "iperf6": {"survived": False, "max_stall_ms": None}}
    assert of_family(walk, "ipv4")["handoffs"] == v4
    dns = {"before": {}, "after": {}}
    assert flat_summary(of_family(walk, "ipv4"), dns, "redirect", "stapled")[
        "interruption_ms_p95"] <= 12.0
    anchored6 = {"handoffs": [{"interruption_ms": 300.0, "family": "ipv6"}], "timeline": [],
                 "iperf": {"survived": True, "max_stall_ms": 900.0}}
    # The /64s' own traces: a stretch is averaged over the traces that reached the /64 only.
    stretch = {"flat": [{"flat_rtt6_ms": 2.0, "anchored_rtt6_ms": 9.0,
                         "flat_path6": ["core1", "mn1"], "flat_stretch6": 1.0,
                         "anchored_path6": ["pgw", "mn1"], "anchored_stretch6": 2.0},
                        {"flat_rtt6_ms": float("nan"), "anchored_rtt6_ms": 11.0,
                         "flat_path6": ["core1", None], "flat_stretch6": 5.0,
                         "anchored_path6": ["pgw", "mn1"], "anchored_stretch6": 3.0}]}
    six = ipv6_summary({"flat": walk}, anchored6, stretch, {"flat": ("redirect", "stapled")})
    assert six["family"] == "ipv6" and six["flat"]["handoffs"] == 2
    assert six["flat"]["interruption_ms_p50"] == 42.0 and six["flat"]["rtt_ms_mean"] == 2.0
    assert six["anchored"]["interruption_ms_p50"] == 300.0
    assert six["anchored"]["rtt_ms_mean"] == 10.0
    assert six["flat"]["path_stretch_mean"] == 1.0
    assert six["anchored"]["path_stretch_mean"] == 2.5
    # Each /64's TCP stream is its own: the flat one's failure is not hidden by IPv4's.
    assert six["flat"]["iperf"]["survived"] is False
    assert six["anchored"]["iperf"]["survived"] is True
    # A run kept from before the /64s were traced or streamed: not measured, not borrowed.
    old = ipv6_summary({"flat": {**walk, "iperf6": None}}, {**anchored6, "iperf": None},
                       {"flat": [{"flat_rtt6_ms": 2.0}]}, {"flat": ("redirect", "stapled")})
    assert old["flat"]["path_stretch_mean"] is None and old["flat"]["iperf"] is None
    assert old["anchored"]["iperf"] is None


def test_probe_interval_is_a_bounded_parameter() -> None:
    assert positive_ms("1") == 1.0 and positive_ms("0.5") == 0.5
    for bad in ("0", "-1", "2000", "fast"):
        with pytest.raises(argparse.ArgumentTypeError):
            positive_ms(bad)


def _stream(path: Path, t0: float, n: int, gap: tuple[int, int] | None = None,
            interval: float = PING_INTERVAL_S) -> None:
    """A probe file as agents.probe writes it (ping -D's lines), with seqs in ``gap``
    unanswered."""
    lines = [f"[{t0 + i * interval:.6f}] 64 bytes from 192.0.2.1: icmp_seq={i} ttl=60 "
             f"time=1.0 ms" for i in range(n) if gap is None or not gap[0] <= i < gap[1]]
    path.write_text("\n".join(lines) + "\n")


def test_a_failure_gives_each_family_its_own_sessions(tmp_path: Path) -> None:
    """The /64 streamed through the same failure is read apart from the IPv4 address: a
    /64 that stops answering fails while the /32 survives, and a run without IPv6 streams
    gives the IPv6 side no figure rather than a borrowed one."""
    t_fail, n = 1000.0, int(6.0 / PING_INTERVAL_S)
    rec = {"arch": "flat", "config": "flat", "event": "aggregation RR agg2 down",
           "tag": "flat-agg", "t_fail": t_fail + 1.0, "observe_s": 4.0,
           "addresses": {"mn1": "10.64.0.10"}, "addresses6": {"mn1": "2001:db8:4000::1"}}
    _stream(tmp_path / failure_file("flat-agg", "mn1"), t_fail, n, gap=(100, 130))
    _stream(tmp_path / failure_file("flat-agg", "mn1", "ipv6"), t_fail, n // 3)
    v4 = failure_sessions(tmp_path, rec)
    v6 = failure_sessions(tmp_path, rec, "ipv6")
    assert (v4["family"], v4["survived"], v4["total"]) == ("ipv4", 1, 1)
    assert v4["sessions"][0]["recovery_ms"] is not None
    assert (v6["family"], v6["survived"], v6["total"]) == ("ipv6", 0, 1)
    assert v6["sessions"][0]["address"] == "2001:db8:4000::1"
    no6 = {k: v for k, v in rec.items() if k != "addresses6"}
    assert failure_sessions(tmp_path, no6, "ipv6")["total"] == 0
    anchored6 = {"handoffs": [], "timeline": []}
    walk = {"handoffs": [], "warmup_handoffs": []}
    state = {"flat": [{"flat6_max": 0, "anchored6_max": 1}, {"flat6_max": 3,
                                                              "anchored6_max": 2}]}
    six = ipv6_summary({"flat": walk}, anchored6, {}, {"flat": ("redirect", "stapled")}, [v6],
                       state)
    assert six["flat"]["sessions_survived_failure"] == 0
    assert six["anchored"]["sessions_survived_failure"] is None  # no anchored /64 streamed
    assert six["flat"]["state_max_per_node"] == 3 and six["anchored"]["state_max_per_node"] == 2
    # A run kept before the state phase counted /64s: not measured, not borrowed.
    old = ipv6_summary({"flat": walk}, anchored6, {}, {"flat": ("redirect", "stapled")})
    assert old["flat"]["state_max_per_node"] is None
