"""`flatarch scenario handoff --family` (issue 18): one record per handoff and family, the
IPv6 one from the CN's IPv6 probe only; the walking MN made dual-stack; the prober's ICMPv6.
"""

from __future__ import annotations

import json
import struct
from datetime import UTC, datetime
from ipaddress import IPv4Network, IPv6Address, IPv6Network
from pathlib import Path

import pytest
import yaml

from agents import probe
from tests.unit.test_analyse import T0, _ping, canned_handoff_run
from topologies import model
from topologies.analysis import measure
from topologies.lab.daemons import LabError
from topologies.render.configs import UPDATES_LOG
from topologies.scenarios.base import RUN_FILE
from topologies.scenarios.handoff import (
    PING6,
    RECORDS,
    HandoffScenario,
    dual_stack_walker,
    mn_address6,
    table,
)

ROOT = Path(__file__).resolve().parents[2]


def _with_families(d: Path, families: list[str]) -> None:
    doc = json.loads((d / RUN_FILE).read_text())
    doc["params"]["families"] = families
    (d / RUN_FILE).write_text(json.dumps(doc))
    # IPv6: BGP only, so longer gaps than the IPv4 probe's (no fast redirect).
    (d / PING6).write_text(_ping(T0, T0 + 4.2, [(T0 + 1.0, T0 + 1.2), (T0 + 2.5, T0 + 2.6)])
                           .replace("10.64.1.10", "2001:db8:4000:100::1"))
    # core1 heard of the /64 once, during the second handoff (the first stayed in the cluster).
    topo = model.load(ROOT / "topologies" / "figure2.yaml")
    stamp = datetime.fromtimestamp(T0 + 2.6, UTC).strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]
    (d / f"core1.{UPDATES_LOG}").write_text(
        f"{stamp} BGP: [XPXHJ-ZG0PX] 10.255.0.3(agg1) rcvd {topo.mobile('mn1').prefix6} "
        "IPv6 unicast\n")


def test_both_families_give_a_record_each_and_ipv4_is_unchanged(tmp_path: Path) -> None:
    plain, both = tmp_path / "plain", tmp_path / "both"
    canned_handoff_run(plain)
    canned_handoff_run(both)
    _with_families(both, ["ipv4", "ipv6"])
    v4 = HandoffScenario.analyse(plain)
    res = HandoffScenario.analyse(both)
    assert [h["family"] for h in res["handoffs"]] == ["ipv4", "ipv6", "ipv4", "ipv6"]
    assert [h for h in res["handoffs"] if h["family"] == "ipv4"] == v4["handoffs"]
    six = [h for h in res["handoffs"] if h["family"] == "ipv6"]
    assert [(h["ping_lost"], h["interruption_ms"]) for h in six] == [
        (20, pytest.approx(210.0)), (10, pytest.approx(110.0))]
    assert all(h["reroute_ms"] is None and h["path_optimal"] is None for h in six)  # no trace
    assert [h["core_updates"] for h in six] == [0, 1] and six[1]["updates"] == {"core1": 1}
    assert all(h["core_updates"] == 0 for h in res["handoffs"] if h["family"] == "ipv4")
    assert [h["to"] for h in six] == ["ar2", "ar1"] and six[0]["t_attach"] == T0 + 1.0
    rows = {(r["mode"], r["kind"]): r for r in res["summary"]}
    assert rows[("redirect/ipv6", "all")]["interruption_ms_p50"] == pytest.approx(160.0)
    assert rows[("redirect/ipv6", "all")]["reroute_ms_p50"] is None
    assert [r for r in res["summary"] if r["family"] == "ipv4"] == v4["summary"]
    text = table(res)
    assert "redirect/ipv6" in text and "-/-" in text  # no IPv6 re-route time


def test_family_ipv6_alone_reports_only_ipv6_records_with_their_own_path(
        tmp_path: Path) -> None:
    d = tmp_path / "six"
    canned_handoff_run(d)
    _with_families(d, ["ipv6"])
    recs = [json.loads(line) for line in (d / RECORDS).read_text().splitlines()]
    recs[0]["traceroute6"] = ["inet", "core1", "agg1", "ar2", "mn1"]
    recs[1]["traceroute6"] = ["inet", "core1", None, "ar1", "mn1"]  # a silent hop
    (d / RECORDS).write_text("".join(json.dumps(r) + "\n" for r in recs))
    res = HandoffScenario.analyse(d)
    assert [h["family"] for h in res["handoffs"]] == ["ipv6", "ipv6"]
    assert [h["path_optimal"] for h in res["handoffs"]] == [True, False]
    assert res["handoffs"][0]["path"] == recs[0]["traceroute6"]
    assert {r["family"] for r in res["summary"]} == {"ipv6"}
    assert next(r for r in res["summary"] if r["kind"] == "all")["path_optimal"] == 1


def test_the_walking_mn_is_made_dual_stack_and_its_address_probed() -> None:
    doc = yaml.safe_load((ROOT / "topologies" / "figure2.yaml").read_text())
    plain = model.build(yaml.safe_load((ROOT / "topologies" / "figure2.yaml").read_text()))
    with pytest.raises(LabError, match="not dual-stack"):
        mn_address6(plain, "mn1")
    topo = model.build(dual_stack_walker(doc))
    assert doc["addressing"]["ipv6"]["mobiles"] == ["mn1"]
    prefix = topo.mobile("mn1").prefix6
    assert prefix is not None and mn_address6(topo, "mn1") == prefix.network_address + 1
    with pytest.raises(LabError, match="addressing.ipv6"):
        dual_stack_walker({"mobiles": ["mn1"], "addressing": {}})


def test_bgpd_lines_about_ipv6_prefixes_are_read_and_counted() -> None:
    p = "2026/11/27 21:42:"
    log = "\n".join([
        p + "23.100 BGP: [ZP3RE-J8N9Y] 10.255.0.5(agg1) rcvd UPDATE w/ attr: nexthop "
            "2001:db8:ff::7, localpref 1764280000, metric 0, path",
        p + "23.123 BGP: [XPXHJ-ZG0PX] 10.255.0.5(agg1) rcvd 2001:db8:4000:100::/64 IPv6 unicast",
        p + "23.456 BGP: [XXXXX-XXXXX] 10.255.0.5(agg1) rcvd UPDATE about "
            "2001:db8:4000:100::/64 IPv6 unicast -- withdrawn",
        p + "23.500 BGP: [XPXHJ-ZG0PX] 10.255.0.5(agg1) rcvd 10.64.0.10/32 IPv4 unicast",
    ])
    rx = measure.parse_bgpd_log(log)
    six = IPv6Network("2001:db8:4000:100::/64")
    assert [(r.prefix, r.withdrawn) for r in rx] == [
        (six, False), (six, True), (IPv4Network("10.64.0.10/32"), False)]
    t = rx[0].ts
    assert measure.count_updates(rx, six, t, t + 1) == 2
    assert measure.count_updates(rx, "10.64.0.10/32", t, t + 1) == 1


def test_the_prober_speaks_icmpv6_to_an_ipv6_target() -> None:
    req = probe.echo_request(0x1234, 70000, probe.ICMP6_ECHO)
    assert req[0] == 128 and len(req) == 8 + probe.PAYLOAD
    reply = bytes([129, 0, 0, 0]) + struct.pack("!HH", 0x1234, 70000 & 0xFFFF) + req[8:]
    assert probe.parse_reply6(reply, 0x1234) == 70000 & 0xFFFF
    assert probe.parse_reply6(reply, 0x9999) is None  # someone else's
    assert probe.parse_reply6(req, 0x1234) is None  # a request, not a reply
    assert probe.parse_reply6(reply[:7], 0x1234) is None


def test_traceroute_hops_of_either_family_are_read() -> None:
    out = ("traceroute to 2001:db8:4000:100::1, 12 hops max\n"
           " 1  2001:db8:fe00:10::1  0.101 ms\n 2  *\n 3  2001:db8:4000:100::1  0.3 ms\n")
    assert measure.parse_traceroute(out) == [
        IPv6Address("2001:db8:fe00:10::1"), None, IPv6Address("2001:db8:4000:100::1")]


def test_the_scenario_runs_on_a_copy_of_the_topology_with_the_walker_dual_stack(
        tmp_path: Path) -> None:
    import argparse
    fig2 = ROOT / "topologies" / "figure2.yaml"
    args = argparse.Namespace(topology=str(fig2), family="ipv4")
    assert HandoffScenario.topology_for(args, tmp_path) == fig2
    args.family = "both"
    path = HandoffScenario.topology_for(args, tmp_path)
    assert path.parent == tmp_path
    topo = model.load(path)
    assert topo.backbone6 is not None and topo.backbone6.mobiles == ("mn1",)


def test_an_ipv6_record_has_the_re_route_time_of_the_64(tmp_path: Path) -> None:
    """With the watcher's IPv6 events (issue 18), an IPv6 record's reroute_ms is its /64's,
    found as the /32's: here the old AR's /64 went 90 ms after the first AUTH and came back
    60 ms after the second; the IPv4 records keep their own 70 and 40 ms."""
    d = tmp_path / "both"
    canned_handoff_run(d)
    _with_families(d, ["ipv4", "ipv6"])
    topo = model.load(ROOT / "topologies" / "figure2.yaml")
    p6 = topo.mobile("mn1").prefix6
    assert p6 is not None
    acc = frozenset({"dev:ar1-acc"})
    routes = d / "routes.jsonl"
    events = measure.parse_route_events(routes.read_text()) + [
        measure.RouteEvent(T0, "ar1", "add", p6, 0, 186, acc),
        measure.RouteEvent(T0 + 1.09, "ar1", "del", p6, 0, 186, acc),
        measure.RouteEvent(T0 + 2.56, "ar1", "add", p6, 0, 186, acc)]
    routes.write_text(measure.dump_route_events(sorted(events, key=lambda e: e.ts)))
    res = HandoffScenario.analyse(d)
    by_family = {f: [h["reroute_ms"] for h in res["handoffs"] if h["family"] == f]
                 for f in ("ipv4", "ipv6")}
    assert by_family["ipv4"] == [pytest.approx(70.0), pytest.approx(40.0)]
    assert by_family["ipv6"] == [pytest.approx(90.0), pytest.approx(60.0)]
    rows = {(r["mode"], r["kind"]): r for r in res["summary"]}
    assert rows[("redirect/ipv6", "all")]["reroute_ms_p50"] == pytest.approx(75.0)
    six_rows = [ln for ln in table(res).splitlines() if ln.startswith("redirect/ipv6")]
    assert any("90.0/90.0" in ln for ln in six_rows), six_rows  # shown, not "-"
