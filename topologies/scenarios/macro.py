"""`flatarch scenario macro`: a DHCP MN with a TCP stream leaves the AS for the visited
network, binds to its Home Agent with the one-message protocol, and comes back (draft 2.4).
Measured: the interruption both ways, the path while away and after return, stale routes;
with `--family ipv6|both` the MN is dual-stack and its /64 is probed and checked too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from ipaddress import IPv4Address, IPv4Network, IPv6Network
from pathlib import Path
from typing import Any, Self

from topologies.analysis import measure
from topologies.analysis.stats import percentile
from topologies.lab.daemons import LabError, wait_until
from topologies.lab.lab import Lab, Progress
from topologies.model import Topology
from topologies.scenarios import traffic
from topologies.scenarios.addresses import off_access_link
from topologies.scenarios.base import (
    FAMILIES,
    ROUTES,
    RunDir,
    Scenario,
    address_owner,
    graph,
    read_jsonl,
    wait_for_clock,
    write_jsonl,
)
from topologies.scenarios.handoff import (
    PING6,
    SETTLE_QUIET_S,
    add_family_argument,
    dual_stack_topology,
    mn_address6,
)
from topologies.scenarios.progress import Eta
from topologies.scenarios.registry import register
from topologies.scenarios.routewatch import RouteWatcher

PING_INTERVAL_S = traffic.PING_INTERVAL_S
IPERF_RATE = "10M"
AWAY_S = 4.0  # within one lease (the home leases are not renewed while away)
HOME_S = 4.0
RECORDS = "moves.jsonl"


def _ha(topo: Topology) -> str:
    return next(n.name for n in topo.nodes.values() if n.service == "ha")


@register
class MacroScenario(Scenario):
    name = "macro"
    help = "a DHCP MN leaves for the visited network, binds to its Home Agent, returns"
    dhcp_mn = True

    def __init__(self, lab: Lab, *, rounds: int = 3, mn: str | None = None,
                 progress: Progress | None = None, out_dir: Path | None = None,
                 families: list[str] | None = None) -> None:
        super().__init__(lab, mn, progress, out_dir)
        self.families = families or ["ipv4"]
        # IPv4 carries the move (care-of address, Binding Update) and is always probed.
        self.address6 = mn_address6(self.topo, self.mn) if "ipv6" in self.families else None
        six = self.topo.backbone6
        self._owner6 = six.owners() if six is not None and self.address6 is not None else {}
        if self.topo.outside_cell is None:
            raise LabError("the macro scenario needs internet.outside_subnet in the topology")
        self.outside = self.topo.outside_cell
        self.rounds = rounds
        self.home = self.topo.mobile(self.mn).home
        self.ha = self.topo.node(_ha(self.topo))
        self.cn = self.topo.service("cn")
        self._owner = address_owner(self.topo)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--rounds", type=int, default=5, help="leave-and-return rounds")
        add_family_argument(parser, "move")

    @classmethod
    def topology_for(cls, args: argparse.Namespace, out_dir: Path) -> Path:
        return dual_stack_topology(args, out_dir, dhcp_mn=True)

    @classmethod
    def from_args(cls, lab: Lab, args: argparse.Namespace, out_dir: Path) -> Self:
        return cls(lab, rounds=args.rounds, out_dir=out_dir,
                   families=FAMILIES[getattr(args, "family", "ipv4")])

    def params(self) -> dict[str, Any]:
        return {"mn": self.mn, "rounds": self.rounds, "families": self.families}

    def _mn(self, req: dict[str, Any]) -> dict[str, Any]:
        answer = self.lab.control(self.mn).request(req, timeout=30)
        if not answer.get("ok"):
            raise LabError(f"{self.mn} {req.get('cmd')}: {answer.get('error')}")
        return answer

    def _settled_path(self, watcher: RouteWatcher, address: IPv4Address,
                      t_by: float) -> list[str | None]:
        """The path once the move has settled (no route for the /32 changed for a while),
        from a traceroute that reached the MN: one probe a hop is lost now and then on a busy
        machine. Tried again until ``t_by``, the end of the stay; the last try counts."""
        prefix = IPv4Network((address, 32))
        t0 = time.time()

        def quiet() -> bool:
            last = max((e.ts for e in watcher.events() if e.dst == prefix and e.ts >= t0 - 1.0),
                       default=t0 - 1.0)
            return time.time() - last >= SETTLE_QUIET_S

        with contextlib.suppress(LabError):
            wait_until(quiet, max(0.5, t_by - time.time()), "routes to settle", 0.05)
        while True:
            path = traffic.trace(self.lab.execs[self.cn.name], address, self._owner,
                                 target=self.mn, max_hops=14, timeout=30)
            if (path and path[-1] == self.mn and None not in path) or time.time() >= t_by:
                return path

    def measure(self) -> None:
        lab = self.lab
        status = self._mn({"cmd": "status"})
        if status.get("ha") is None:
            self._mn({"cmd": "prepare_ha"})
        address = IPv4Address(status["address"])
        self.note(address=str(address))
        routers = [n.name for n in self.topo.routers]
        moves = [(self.outside, "leave"), (self.home, "return")] * self.rounds
        duration = len(moves) * max(AWAY_S, HOME_S) + 6.0
        records: list[dict[str, Any]] = []
        self.progress(f"macro scenario: {self.mn} ({address}) leaves {self.home} for the "
                      f"visited network on {self.outside} and returns, {self.rounds} times; "
                      f"Home Agent {self.ha.name}")
        eta = Eta(len(moves), self.progress)
        prefix6 = self.topo.mobile(self.mn).prefix6 if self.address6 is not None else None
        within = [str(self.topo.managed), *([str(prefix6)] if prefix6 is not None else [])]
        with contextlib.ExitStack() as stack:
            watcher = self.watch_routes(stack, within)
            stack.callback(self.keep_files, [*routers, self.mn, self.ha.name],
                           ["events.jsonl"])
            stack.callback(self.keep_files, [self.ha.name], ["agent.status.json"])
            stack.enter_context(traffic.iperf_server(lab, self.mn,
                                                     self.dir / "iperf-server.json"))
            ping = stack.enter_context(traffic.probe(lab, self.cn.name, address,
                                                     self.dir / "ping.txt"))
            iperf = stack.enter_context(traffic.iperf_client(
                lab, self.cn.name, address, self.dir / "iperf.json", duration, IPERF_RATE))
            ping6 = None if self.address6 is None else stack.enter_context(traffic.probe(
                lab, self.cn.name, str(self.address6), self.dir / PING6))
            t_next = time.time() + 1.5
            for where, direction in moves:
                wait_for_clock(t_next)
                rec = lab.handoff(self.mn, where)
                if not rec.get("ok") or rec.get("not_rerouted"):
                    raise LabError(f"{direction} to {where}: {rec.get('error') or rec}")
                rec["direction"] = direction
                hold = AWAY_S if direction == "leave" else HOME_S
                rec["traceroute"] = self._settled_path(watcher, address,
                                                       float(rec["t_attach"]) + hold)
                if self.address6 is not None:
                    # Once, after the IPv4 path settled: echo probes, which the MN answers.
                    rec["traceroute6"] = traffic.trace(
                        lab.execs[self.cn.name], self.address6, self._owner6, target=self.mn,
                        icmp=True, max_hops=14, timeout=30)
                records.append(rec)
                write_jsonl(self.dir / RECORDS, records)
                eta.step(f"{direction:6s} -> {where}: auth {rec['auth_ms']:.1f} ms"
                         + (f", care-of {rec['care_of_ms']:.1f} ms, {rec['tunnel']}"
                            if direction == "leave" else ""))
                t_next = float(rec["t_attach"]) + hold
            t_end = max(t_next, time.time() + 1.0)
            wait_for_clock(t_end)
            self.note(t_end=t_end)
            ping.interrupt()
            if ping6 is not None:
                ping6.interrupt()
            iperf.wait(duration + 15)
        eta.done()

    @classmethod
    def analyse(cls, out_dir: Path) -> dict[str, Any]:
        run = RunDir.open(out_dir)
        m = run.measured
        if "t_end" not in m:
            raise measure.MeasureError(f"{out_dir}: the measurement did not finish (no t_end)")
        try:
            events = measure.parse_route_events((out_dir / ROUTES).read_text())
        except OSError as exc:
            raise measure.MeasureError(f"{out_dir}: no route events: {exc}") from None
        return analyse_moves(run.topo, str(run.params["mn"]), out_dir,
                             read_jsonl(out_dir / RECORDS), events, IPv4Address(m["address"]),
                             float(m["t_end"]), list(run.params.get("families") or ["ipv4"]))

    @staticmethod
    def table(result: dict[str, Any]) -> str:
        return table(result)


def stale(events: list[measure.RouteEvent], prefix: IPv4Network | IPv6Network) -> list[str]:
    """Routers still holding a route for the MN's /32 (or /64), off an access link."""
    present: dict[tuple[str, int], measure.RouteEvent] = {}
    for ev in sorted(events, key=lambda e: e.ts):
        if ev.dst != prefix:
            continue
        key = (ev.node, ev.metric)
        if ev.kind == "add":
            present[key] = ev
        else:
            present.pop(key, None)
    return sorted({n for (n, _), ev in present.items() if off_access_link(ev)})


def analyse_moves(topo: Topology, mn: str, out_dir: Path, records: list[dict[str, Any]],
                  events: list[measure.RouteEvent], address: IPv4Address,
                  t_end: float, families: list[str] | None = None) -> dict[str, Any]:
    """One record per move and family (IPv6: the CN's probe and traceroute of the MN's /64,
    whether the HA bound it while away, and its stale routes)."""
    families = families or ["ipv4"]
    ha = _ha(topo)
    cn = topo.service("cn").name
    home = topo.mobile(mn).home
    adjacency = graph(topo)
    prefixes: dict[str, IPv4Network | IPv6Network] = {"ipv4": IPv4Network((address, 32))}
    replies = {"ipv4": measure.parse_ping((out_dir / "ping.txt").read_text(errors="replace"))}
    if "ipv6" in families:
        prefix6 = topo.mobile(mn).prefix6
        if prefix6 is None:
            raise measure.MeasureError(f"{out_dir}: {mn} has no IPv6 prefix in the topology")
        prefixes["ipv6"] = prefix6
        replies["ipv6"] = measure.parse_ping((out_dir / PING6).read_text(errors="replace"))
    moves: list[dict[str, Any]] = []
    via_ha_away: list[bool] = []
    optimal_back: list[bool] = []

    def judged(trace: list[str | None] | None, to: str) -> tuple[bool | None, bool | None]:
        """Whether a traced path went through the HA, and (home again) was the shortest."""
        if trace is None:
            return None, None
        path = [h for h in trace if h is not None]
        via_ha = ha in path
        routers = [h for h in path if h in topo.nodes and topo.nodes[h].is_router]
        return via_ha, (bool(path) and path[-1] == mn and None not in trace and not via_ha
                        and measure.is_shortest_path(routers, adjacency, cn, to))

    for i, rec in enumerate(records):
        w0 = float(rec["t_attach"]) - 0.3
        w1 = float(records[i + 1]["t_attach"]) - 0.3 if i + 1 < len(records) else t_end
        back = rec["direction"] == "return"
        for family in families:
            interruption, lost = measure.ping_window(replies[family], w0, w1, PING_INTERVAL_S)
            v4 = family == "ipv4"
            trace = rec["traceroute"] if v4 else rec.get("traceroute6")
            via_ha, optimal = judged(trace, rec["to"])
            if via_ha is not None and back:
                optimal_back.append(bool(optimal))
            elif via_ha is not None:
                via_ha_away.append(via_ha)
            move: dict[str, Any] = {
                "direction": rec["direction"], "from": rec["from"], "to": rec["to"],
                "family": family,
                "interruption_ms": round(interruption, 3), "ping_lost": lost,
                "auth_ms": round(float(rec["auth_ms"]), 3),
                "care_of_ms": round(float(rec.get("care_of_ms", 0.0)), 3),
                "path": trace, "path_via_ha": via_ha,
                "path_optimal": optimal if back else None,
            }
            if not v4 and not back:
                # Outside the AS: the HA's answer to the Binding Update named the /64.
                move["bound_at_ha"] = str(prefixes[family]) in (rec.get("rerouted") or ())
            moves.append(move)
    try:
        iperf = measure.iperf_summary(json.loads((out_dir / "iperf.json").read_text()))
    except (OSError, ValueError, measure.MeasureError) as exc:
        iperf = {"survived": False, "error": f"no iperf3 result: {exc}"}
    before_end = [e for e in events if e.ts <= t_end]
    left = {f: stale(before_end, prefixes[f]) for f in families}
    ha_status = json.loads((out_dir / f"{ha}.agent.status.json").read_text())
    tunnel = next((r.get("tunnel") for r in records if r.get("tunnel")), None)

    def p95(kind: str, family: str) -> float:
        vals = [m["interruption_ms"] for m in moves
                if m["direction"] == kind and m["family"] == family]
        return percentile(vals, 0.95) if vals else 0.0

    by_family = {f: {"leave": p95("leave", f), "return": p95("return", f)} for f in families}
    return {
        "scenario": "macro",
        "topology": topo.name,
        "mn": mn, "address": str(address), "home": home,
        "outside": topo.outside_cell, "home_agent": ha,
        "tunnel": tunnel,
        "families": families,
        "moves": moves,
        "interruption_ms_p95": by_family[families[0]],
        "interruption_ms_p95_by_family": by_family,
        "away_paths_via_ha": all(via_ha_away),
        "return_paths_optimal": all(optimal_back),
        "iperf": iperf,
        "stale_routes_end": sum(len(v) for v in left.values()),
        "stale_routers": sorted({n for v in left.values() for n in v}),
        "stale_routes_end_by_family": {f: len(v) for f, v in left.items()},
        "ha_bindings_end": len(ha_status.get("mobility", {}).get("attached", {}))
        + len(ha_status.get("bound6") or {}),
    }


def table(result: dict[str, Any]) -> str:
    lines = [f"{'#':>2} {'direction':9} {'to':6} {'family':6} {'interr ms':>9} {'lost':>4} "
             f"{'auth ms':>8} {'care-of ms':>10}  path"]
    lines.append("-" * 100)
    for i, m in enumerate(result["moves"], 1):
        path = " ".join(h or "*" for h in m["path"] or ())
        if m.get("bound_at_ha") is False:
            path += " (the HA did not bind the /64)"
        lines.append(f"{i:2d} {m['direction']:9} {m['to']:6} {m.get('family', 'ipv4'):6} "
                     f"{m['interruption_ms']:9.1f} {m['ping_lost']:4d} {m['auth_ms']:8.1f} "
                     f"{m['care_of_ms']:10.1f}  {path}")
    ip = result["iperf"]
    lines.append("")
    by_family = result.get("interruption_ms_p95_by_family") or {
        "ipv4": result["interruption_ms_p95"]}
    p95s = "; ".join(f"{f} leave {v['leave']:.1f} ms, return {v['return']:.1f} ms"
                     for f, v in by_family.items())
    lines.append(f"tunnel {result['tunnel']}; p95 interruption {p95s}; away via HA: "
                 f"{result['away_paths_via_ha']}; return optimal: "
                 f"{result['return_paths_optimal']}")
    lines.append(f"iperf3 TCP CN->MN: survived={ip.get('survived')} "
                 f"max_stall={ip.get('max_stall_ms', 0):.0f} ms; stale routes at the end: "
                 f"{result['stale_routes_end']}; HA bindings at the end: "
                 f"{result['ha_bindings_end']}")
    return "\n".join(lines)
