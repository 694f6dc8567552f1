"""`flatarch scenario baseline`: the flat architecture and the anchored baseline (draft
Figure 1) measured side by side in one lab and one run, on the same walk and the same traffic:
handoff interruption, path stretch, messages and home round trips, failures, state per node.
The flat design is measured twice, each walk in one configuration: `flat` at its best
(redirect, stapled DNS proof) and `flat_draft` exactly as the draft has it (BGP only, lookup).
With `--family ipv6|both` the MNs and the anchored plane are dual-stack: the walks and the
path phase measure the MN's flat /64 and its anchored /64 too, under "ipv6", and so do the
failure phase's probe streams and the state phase (MN /64s per router; the anchor's /64
bearers and the ARs' IPv6 neighbours).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import Any, Self

from topologies.analysis import measure
from topologies.analysis.stats import mean as _mean
from topologies.analysis.stats import percentile, percentile_or_none
from topologies.lab.anchored import (
    ANCHOR_POOL,
    ANCHOR_POOL6,
    AnchoredPlane,
    anchor_node,
    anchored_address,
    anchored_address6,
)
from topologies.lab.daemons import DeadlineError, LabError, NodeExec, wait_until
from topologies.lab.lab import Background, Lab
from topologies.model import Role, Topology
from topologies.scenarios import traffic
from topologies.scenarios.base import (
    FAMILIES,
    Progress,
    RunDir,
    Scenario,
    add_walk_arguments,
    address_owner,
    graph,
    read_jsonl,
    wait_for_clock,
    walk,
    write_jsonl,
)
from topologies.scenarios.handoff import (
    IPERF_RATE,
    PING_INTERVAL_S,
    WALK_PROBE_INTERVAL_MS,
    HandoffScenario,
    add_family_argument,
    add_probe_interval,
    dual_stack_topology,
    is_dual_stack,
    mn_address6,
)
from topologies.scenarios.progress import Eta
from topologies.scenarios.registry import register

RTT_RE = re.compile(r"time=([0-9.]+) ms")
FAIL_OBSERVE_S = 8.0  # how long after a failure a session may take to come back
FAIL_LEAD_S = 1.5  # probe stream before the failure
# Each flat configuration's walk, a handoff scenario in its own run directory of that name:
# (handoff mode, DNS mode). `flat` is the flat design at its best, `flat_draft` the draft's.
FLAT_CONFIGS: dict[str, tuple[str, str]] = {"flat": ("redirect", "stapled"),
                                            "flat_draft": ("draft", "lookup")}
BEST = "flat"  # the configuration whose path and state rows also carry the anchored side
ANCHORED_RECORDS = "anchored-handoffs.jsonl"
ANCHORED_PING6 = "anchored6-ping.txt"  # the anchored /64's probe, in a dual-stack run
ANCHORED = "anchored"  # the anchored walk's tag: its files are <tag>-ping.txt, <tag>-iperf.json
ANCHORED_IPERF, ANCHORED_IPERF6 = f"{ANCHORED}-iperf.json", f"{ANCHORED}-iperf6.json"
ANCHORED_PORT, ANCHORED_PORT6 = 5202, 5206  # beside the flat walks' servers, one test each
PROCEDURES = "procedures.json"
STRETCH = "stretch.json"  # {configuration: rows}: the path phase, once per flat configuration
STATE = "state.json"  # {configuration: rows}: the state phase, the same
FAILURES = "failures.json"  # per failure: what broke, when, in which configuration, the probes


@register
class BaselineScenario(Scenario):
    name = "baseline"
    help = "the flat architecture and the anchored baseline side by side in one run"

    def __init__(self, lab: Lab, *, per_mode: int = 8, period_s: float = 2.0,
                 probe_interval_ms: float = WALK_PROBE_INTERVAL_MS,
                 progress: Progress | None = None, out_dir: Path | None = None,
                 families: Sequence[str] = ("ipv4",)) -> None:
        super().__init__(lab, None, progress, out_dir)
        self.families = list(families)
        self.ipv6 = "ipv6" in self.families
        self.per_mode = per_mode
        self.period_s = period_s
        self.probe_interval_ms = probe_interval_ms
        self.cn = self.topo.service("cn").name
        self.pgw = anchor_node(self.topo).name
        self.adj = graph(self.topo)
        self.owner = address_owner(self.topo, pools=False)
        six = self.topo.backbone6
        self.owner6 = six.owners() if six is not None and self.ipv6 else {}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        add_walk_arguments(parser)
        add_probe_interval(parser)
        add_family_argument(parser, "handoff")

    @classmethod
    def topology_for(cls, args: argparse.Namespace, out_dir: Path) -> Path:
        return dual_stack_topology(args, out_dir, every=True)

    @classmethod
    def from_args(cls, lab: Lab, args: argparse.Namespace, out_dir: Path) -> Self:
        return cls(lab, per_mode=args.handoffs, period_s=args.period,
                   probe_interval_ms=args.probe_interval_ms, out_dir=out_dir,
                   families=FAMILIES[getattr(args, "family", "ipv4")])

    def params(self) -> dict[str, Any]:
        return {"mn": self.mn, "per_mode": self.per_mode, "period_s": self.period_s,
                "home_rtt_ms": self.topo.home_rtt_ms, "distance": self.topo.distance,
                "flat_configs": {k: list(v) for k, v in FLAT_CONFIGS.items()},
                "probe_interval_ms": self.probe_interval_ms,
                "mobiles": list(self.lab.mobiles), "families": self.families}

    # --- the run ------------------------------------------------------------------------------

    def measure(self) -> None:
        t0 = time.time()
        self.note(probe_interval_ms=self.probe_interval_ms)  # the walks'; failures probe at 10
        dns: dict[str, dict[str, dict[str, float]]] = {}
        for key, (mode, dns_mode) in FLAT_CONFIGS.items():
            self.progress(f"{key}: the flat walk in mode {mode}, DNS {dns_mode}")
            before = self._unbound_stats()
            flat = HandoffScenario(self.lab, mn=self.mn, modes=(mode,), dns_modes=(dns_mode,),
                                   per_mode=self.per_mode, period_s=self.period_s,
                                   probe_interval_ms=self.probe_interval_ms,
                                   progress=self.progress, out_dir=self.dir / key,
                                   families=self.families)
            flat.topology_file = self.topology_file
            flat.record()
            dns[key] = {"before": before, "after": self._unbound_stats()}
            self.note(dns=dns)
        self._configure(flat, BEST)
        with AnchoredPlane(self.lab, progress=self.progress, ipv6=self.ipv6) as plane:
            try:
                plane.attach_all()
                self._anchored_walk(plane)
                # The path and state phases in every flat configuration, so that no figure of
                # one is borrowed from the other; the best last, as the failures start in it.
                stretch: dict[str, list[dict[str, Any]]] = {}
                state: dict[str, list[dict[str, Any]]] = {}
                for key in sorted(FLAT_CONFIGS, key=lambda k: k == BEST):
                    self._configure(flat, key)
                    stretch[key] = self._stretch(plane, key)
                    state[key] = self._state(plane, key)
                (self.dir / STRETCH).write_text(json.dumps(stretch, indent=1))
                (self.dir / STATE).write_text(json.dumps(state, indent=1))
                (self.dir / FAILURES).write_text(json.dumps(self._failures(plane, flat),
                                                            indent=1))
            finally:
                (self.dir / PROCEDURES).write_text(json.dumps(plane.procedures(), indent=1,
                                                              default=str))
        self.note(elapsed_s=time.time() - t0)

    def _configure(self, walk: HandoffScenario, key: str) -> None:
        """The lab in one flat configuration for a phase after the walks (path, state,
        failures): its handoff mode at every AR, its DNS mode at every MN."""
        mode, dns_mode = FLAT_CONFIGS[key]
        self.lab.set_mode(mode)
        for mn in self.lab.mobiles:
            walk.set_dns_mode(mn, dns_mode)

    def _unbound_stats(self) -> dict[str, float]:
        dns = self.lab.dns
        if dns is None:
            return {}
        return dns.unbound_stats(self.lab.execs[self.topo.service("dns").name])

    # --- anchored walk --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _traffic(self, address: IPv4Address, tag: str, duration: float,
                 port: int) -> Iterator[tuple[Background, Background]]:
        """The flat walks' traffic exactly: the paced prober and a paced iperf3."""
        lab = self.lab
        with contextlib.ExitStack() as stack:
            stack.enter_context(traffic.iperf_server(
                lab, self.mn, self.dir / f"{tag}-iperf-server.json", port, interval_s=None))
            ping = stack.enter_context(traffic.probe(lab, self.cn, address,
                                                     self.dir / f"{tag}-ping.txt",
                                                     self.probe_interval_ms / 1000.0))
            iperf = stack.enter_context(traffic.iperf_client(
                lab, self.cn, address, self.dir / f"{tag}-iperf.json", duration, IPERF_RATE,
                port, server_output=False))
            yield ping, iperf

    def _anchored_walk(self, plane: AnchoredPlane) -> None:
        steps = walk(self.topo, self.mn)
        rounds = -(-self.per_mode // len(steps))
        plan = [(s, False) for s in steps] + [(s, True) for _ in range(rounds) for s in steps]
        duration = len(plan) * self.period_s + 4.0
        address = anchored_address(self.topo, self.mn)
        self.progress(f"anchored walk: {len(plan)} handoffs of {self.mn} through the anchor "
                      f"{self.pgw}, one every {self.period_s:.1f}s")
        records: list[dict[str, Any]] = []
        eta = Eta(len(plan), self.progress)
        with contextlib.ExitStack() as six, \
                self._traffic(address, ANCHORED, duration, ANCHORED_PORT) as (ping, iperf):
            if self.ipv6:  # the anchored /64's sessions, probed and streamed beside IPv4's
                address6 = anchored_address6(self.topo, self.mn)
                ping6 = six.enter_context(traffic.probe(
                    self.lab, self.cn, address6, self.dir / ANCHORED_PING6,
                    self.probe_interval_ms / 1000.0))
                six.callback(ping6.interrupt)
                iperf6 = six.enter_context(traffic.iperf6(
                    self.lab, self.cn, self.mn, address6, self.dir, duration, ANCHORED_PORT6,
                    ANCHORED_IPERF6, receiver=False))  # as the anchored IPv4 stream
                six.callback(iperf6.wait, duration + 15)
            t_next = time.time() + 1.5
            for step, measured in plan:
                wait_for_clock(t_next)
                rec = plane.handoff(self.mn, step.to)
                rec.update(kind=step.kind, warmup=not measured, mode="anchored")
                records.append(rec)
                write_jsonl(self.dir / ANCHORED_RECORDS, records)
                eta.step(f"{'anchored' if measured else 'warm-up':8s} {rec['from']}->{step.to}"
                         f" ({step.kind}) attach {rec['attach_ms']:.1f} ms")
                t_next = max(t_next + self.period_s, time.time() + 0.3)
            self.note(anchored_t_end=traffic.end_walk(ping, iperf, duration))
        eta.done()

    # --- path stretch ---------------------------------------------------------------------------

    def _trace(self, ex: NodeExec, dst: str) -> list[str | None]:
        owner = self.owner6 if ":" in dst else self.owner
        return traffic.trace(ex, dst, owner, icmp=True, timeout=30)

    def _trace_to(self, ex: NodeExec, dst: str, deadline_s: float = 30.0) -> list[str | None]:
        """A trace that reaches `dst`: one whose last probes went unanswered measured the
        probes' loss, not the path (seen once at 56 ms RTT while ping answered), so it is
        taken again toward a deadline; the last attempt stands if none reaches."""
        got: list[list[str | None]] = []

        def reached() -> bool:
            got[:] = [self._trace(ex, dst)]
            return bool(got[0]) and got[0][-1] == dst

        with contextlib.suppress(DeadlineError):
            wait_until(reached, deadline_s, f"a trace that reaches {dst}", 0.5)
        return got[0]

    def _rtt(self, dst: str) -> float:
        """The median of 20 pings' round trips (the issue's target is a p50)."""
        out = self.lab.execs[self.cn].run(["ping", "-n", "-c", "20", "-i", "0.02", "-W", "1",
                                           dst], timeout=20).stdout
        rtts = [float(m.group(1)) for m in RTT_RE.finditer(out)]
        return percentile(rtts, 0.5) if rtts else float("nan")

    def _flat_address(self, mn: str) -> IPv4Address:
        out = self.lab.execs[mn].run(["ip", "-j", "-4", "addr", "show", "dev",
                                      f"{mn}-eth0"]).stdout
        for link in json.loads(out or "[]"):
            for a in link.get("addr_info", []):
                addr = IPv4Address(a["local"])
                if addr in self.topo.managed:
                    return addr
        raise LabError(f"{mn} holds no address in {self.topo.managed}")

    def _settle_flat(self, mn: str, ar: str) -> None:
        dst = str(self._flat_address(mn))

        def via_ar() -> bool:
            # Through the AR on a shortest path: in redirect mode the previous AR relays to
            # the new one until BGP has converged, and that detour is not the path.
            path = self._trace(self.lab.execs[self.cn], dst)
            routers = [h for h in path if h in self.topo.nodes and self.topo.nodes[h].is_router]
            return len(path) >= 2 and path[-1] == dst and path[-2] == ar and \
                measure.is_shortest_path(routers, self.adj, self.cn, ar)

        with contextlib.suppress(DeadlineError):
            wait_until(via_ar, 10, f"the flat path to {mn} through {ar}", 0.2)

    def _move_both(self, plane: AnchoredPlane, mn: str, ar: str) -> None:
        """Flat handoff (radio move and authentication) and the anchored attach at that AR."""
        if self.lab.radio is not None and self.lab.radio.where.get(mn) != ar:
            rec = self.lab.handoff(mn, ar)
            if not rec.get("ok"):
                raise LabError(f"flat handoff of {mn} to {ar} failed: {rec.get('error')}")
        plane.attach(mn)
        self._settle_flat(mn, ar)

    def _stretch(self, plane: AnchoredPlane, key: str) -> list[dict[str, Any]]:
        self.progress(f"path stretch ({key}): the MN at every AR, both addresses traced and "
                      "pinged")
        pgw = self.lab.execs[self.pgw]
        cn = self.lab.execs[self.cn]
        rows: list[dict[str, Any]] = []
        ars = sorted(self.topo.by_role(Role.AR),
                     key=lambda a: (measure.bfs_distance(self.adj, self.pgw, a.name) or 0, a.name))
        home = self.topo.mobile(self.mn).home
        for ar in ars:
            self._move_both(plane, self.mn, ar.name)
            flat_addr = str(self._flat_address(self.mn))
            anch_addr = str(anchored_address(self.topo, self.mn))
            flat_path = self._trace_to(cn, flat_addr)
            anch_path = self._trace_to(cn, anch_addr)
            underlay = self._trace(pgw, str(ar.loopback))
            shortest = (measure.bfs_distance(self.adj, self.cn, ar.name) or 0) + 1
            hidden = max(0, len(underlay) - 1)  # routers inside the tunnel, invisible inside it
            # The MN's flat /64 and anchored /64, traced and pinged beside the IPv4 addresses;
            # the anchored /64 rides the same IPv4 tunnel, so the same routers hide in it.
            six = self._stretch6(cn, shortest, hidden) if self.ipv6 else {}
            rows.append({
                "ar": ar.name,
                "anchor_distance": measure.bfs_distance(self.adj, self.pgw, ar.name),
                "shortest_hops": shortest,
                "flat_hops": len(flat_path), "flat_path": flat_path,
                "anchored_hops": len(anch_path) + hidden, "anchored_path": anch_path,
                "tunnel_path": underlay,
                "flat_rtt_ms": round(self._rtt(flat_addr), 3),
                "anchored_rtt_ms": round(self._rtt(anch_addr), 3),
                "flat_stretch": round(len(flat_path) / shortest, 3),
                "anchored_stretch": round((len(anch_path) + hidden) / shortest, 3),
                # What the links' delays alone make of each path's round trip.
                "flat_expected_rtt_ms": round(2 * path_delay_ms(self.topo,
                                                                [self.cn, *flat_path]), 3),
                "anchored_expected_rtt_ms": round(2 * (
                    path_delay_ms(self.topo, [self.cn, *anch_path[:anch_path.index(self.pgw)
                                                                  + 1]])
                    + path_delay_ms(self.topo, [self.pgw, *underlay])), 3)
                if self.pgw in anch_path else None,
                **six,
            })
            self.progress(f"  {ar.name}: hops flat {rows[-1]['flat_hops']} anchored "
                          f"{rows[-1]['anchored_hops']} (shortest {shortest}); RTT flat "
                          f"{rows[-1]['flat_rtt_ms']:.3f} anchored "
                          f"{rows[-1]['anchored_rtt_ms']:.3f} ms")
        self._move_both(plane, self.mn, home)  # back home for the phases that follow
        return rows

    def _stretch6(self, cn: NodeExec, shortest: int, hidden: int) -> dict[str, Any]:
        flat6, anch6 = str(mn_address6(self.topo, self.mn)), \
            str(anchored_address6(self.topo, self.mn))
        flat_path, anch_path = self._trace_to(cn, flat6), self._trace_to(cn, anch6)
        return {"flat_rtt6_ms": round(self._rtt(flat6), 3),
                "anchored_rtt6_ms": round(self._rtt(anch6), 3),
                "flat_hops6": len(flat_path), "flat_path6": flat_path,
                "anchored_hops6": len(anch_path) + hidden, "anchored_path6": anch_path,
                "flat_stretch6": round(len(flat_path) / shortest, 3),
                "anchored_stretch6": round((len(anch_path) + hidden) / shortest, 3)}

    # --- state per node -------------------------------------------------------------------------

    def _host_routes(self, family: str = "ipv4") -> dict[str, int]:
        """Per router, the MN host routes of the family inside its managed range: /32s, or
        the plan's per-MN /64s."""
        if family == "ipv4":
            managed: IPv4Network | IPv6Network = self.topo.managed
            length = 32
        else:
            plan6 = self.topo.plan6
            assert plan6 is not None
            managed, length = plan6.block("addressing.ipv6.managed").network, plan6.mn_prefixlen
        out: dict[str, int] = {}
        for r in self.topo.routers:
            text = self.lab.execs[r.name].run(["ip", "-j", "-4" if family == "ipv4" else "-6",
                                               "route", "show"]).stdout
            n = 0
            for route in json.loads(text or "[]"):
                with contextlib.suppress(ValueError):
                    net = ip_network(str(route.get("dst", "")))  # "10.64.0.10": a /32
                    if net.prefixlen == length and net.version == managed.version and \
                            net.subnet_of(managed):  # type: ignore[arg-type]
                        n += 1
            out[r.name] = n
        return out

    def _anchored_state(self, plane: AnchoredPlane, family: str = "ipv4") -> dict[str, int]:
        """Bearers at the anchor, and live neighbour entries of anchored addresses at each
        AR's access link; for ``family`` ipv6 the /64 bearers and their neighbours."""
        out = {self.pgw: len(plane.bearers("-6" if family == "ipv6" else "-4"))}
        pool: IPv4Network | IPv6Network = ANCHOR_POOL if family == "ipv4" else ANCHOR_POOL6
        for ar in self.topo.by_role(Role.AR):
            text = self.lab.execs[ar.name].run(["ip", "-j", "-6" if family == "ipv6" else "-4",
                                                "neigh", "show", "dev",
                                                f"{ar.name}-acc"]).stdout
            # Live entries only: a STALE one is what a departed MN leaves until it ages out.
            out[ar.name] = sum(1 for n in json.loads(text or "[]")
                               if _in_pool(str(n.get("dst", "")), pool)
                               and set(n.get("state", [])) & {"REACHABLE", "DELAY", "PROBE",
                                                              "PERMANENT"})
        return out

    def _stable(self, fn: Callable[[], dict[str, int]]) -> dict[str, int]:
        last: list[dict[str, int]] = []

        def same() -> bool:
            now = fn()
            done = bool(last) and now == last[0]
            last[:] = [now]
            return done

        with contextlib.suppress(DeadlineError):
            wait_until(same, 10, "routing state to settle", 0.5)
        return last[0]

    def _state(self, plane: AnchoredPlane, key: str) -> list[dict[str, Any]]:
        """k MNs away from home, k = 0..N: flat host routes per router; anchored bearers at
        the anchor and neighbour entries at the ARs, for the same placement."""
        self.progress(f"state per node ({key}): MNs moved one by one into another cluster")
        mobiles = self.lab.mobiles
        rows: list[dict[str, Any]] = []
        for k in range(len(mobiles) + 1):
            if k:
                mn = mobiles[k - 1]
                home = self.topo.cluster_of(self.topo.mobile(mn).home)
                far = next(c for c in reversed(self.topo.clusters) if c.name != home.name)
                self._move_both(plane, mn, far.ars[0])
            # Every MN sends once so each AR's neighbour table shows whom it serves.
            for mn in mobiles:
                self.lab.execs[self.cn].run(["ping", "-c", "1", "-W", "1",
                                             str(anchored_address(self.topo, mn))])
            flat = self._stable(self._host_routes)
            anch = self._anchored_state(plane)
            six: dict[str, Any] = {}
            if self.ipv6:
                for mn in mobiles:
                    self.lab.execs[self.cn].run(["ping", "-c", "1", "-W", "1",
                                                 str(anchored_address6(self.topo, mn))])
                six = state_tally(self._stable(lambda: self._host_routes("ipv6")),
                                  self._anchored_state(plane, "ipv6"), "6")
            rows.append({"mns_away": k, "mns_total": len(mobiles), **six,
                         **state_tally(flat, anch),
                         "flat_max_node": max(flat, key=lambda n: flat[n]),
                         "anchored_max_node": max(anch, key=lambda n: anch[n])})
            self.progress(f"  {k} away: flat host routes total {rows[-1]['flat_total']} (max "
                          f"{rows[-1]['flat_max']} at {rows[-1]['flat_max_node']}); anchored "
                          f"state total {rows[-1]['anchored_total']} (max "
                          f"{rows[-1]['anchored_max']} at {rows[-1]['anchored_max_node']})")
        for mn in mobiles:
            self._move_both(plane, mn, self.topo.mobile(mn).home)
        return rows

    # --- failures -------------------------------------------------------------------------------

    def _sessions(self, addresses: dict[str, IPv4Address], tag: str,
                  act: Callable[[], float], observe_s: float = FAIL_OBSERVE_S,
                  addresses6: dict[str, IPv6Address] | None = None) -> dict[str, Any]:
        """One probe stream per MN (and per MN /64 in ``addresses6``, through the same
        failure); `act` breaks something and returns when it did. The streams go to
        fail-<tag>-<mn>.txt (failure_file); this returns what the analysis needs besides."""
        six = addresses6 or {}
        with contextlib.ExitStack() as stack:
            for family, addrs in (("ipv4", addresses), ("ipv6", six)):
                for mn, addr in addrs.items():
                    stack.enter_context(traffic.probe(
                        self.lab, self.cn, addr, self.dir / failure_file(tag, mn, family)))
            wait_for_clock(time.time() + FAIL_LEAD_S)
            t_fail = act()
            t_end = t_fail + observe_s
            wait_for_clock(t_end)
        return {"tag": tag, "t_fail": t_fail, "observe_s": observe_s,
                "addresses": {mn: str(a) for mn, a in addresses.items()},
                **({"addresses6": {mn: str(a) for mn, a in six.items()}} if six else {})}

    def _links(self, node: str) -> list[str]:
        ex = self.lab.execs[node]
        return [i["ifname"] for i in json.loads(ex.check(["ip", "-j", "link", "show"]) or "[]")
                if i["ifname"] != "lo"]

    def _links_down(self, node: str) -> float:
        ex = self.lab.execs[node]
        names = self._links(node)
        t = time.time()
        for name in names:
            ex.run(["ip", "link", "set", name, "down"])
        return t

    def _repair(self, nodes: Sequence[str], serving: dict[str, str]) -> None:
        """Links up again, the backbone reconverged and every MN back at the AR it was at,
        so that the next configuration's failures start from the same network."""
        self.progress(f"repair: {', '.join(nodes)} up again, waiting for the backbone")
        for node in nodes:
            for name in self._links(node):
                self.lab.execs[node].run(["ip", "link", "set", name, "up"])
        self.lab.wait_converged()
        for mn, ar in serving.items():
            if self.lab.radio is not None and self.lab.radio.where.get(mn) != ar:
                rec = self.lab.handoff(mn, ar)
                if not rec.get("ok"):
                    raise LabError(f"{mn} back to {ar} after the repair: {rec.get('error')}")
            self._settle_flat(mn, ar)

    def _failures(self, plane: AnchoredPlane, walk: HandoffScenario) -> list[dict[str, Any]]:
        mobiles = self.lab.mobiles
        radio = self.lab.radio
        assert radio is not None
        out: list[dict[str, Any]] = []
        self.progress(f"failure: the anchor {self.pgw} fails with {len(mobiles)} sessions")
        rec = self._sessions({mn: anchored_address(self.topo, mn) for mn in mobiles},
                             "anchor", plane.kill_anchor,
                             addresses6={mn: anchored_address6(self.topo, mn)
                                         for mn in mobiles} if self.ipv6 else None)
        out.append({"arch": "anchored", "event": f"anchor {self.pgw} down", **rec})
        serving = {mn: radio.where[mn] for mn in mobiles}
        for i, key in enumerate(sorted(FLAT_CONFIGS, key=lambda k: k != BEST)):
            self._configure(walk, key)
            broken = self._flat_failures(key, serving, out)
            if i < len(FLAT_CONFIGS) - 1:
                self._repair(broken, serving)
        return out

    def _flat_failures(self, key: str, serving: dict[str, str],
                       out: list[dict[str, Any]]) -> list[str]:
        """The cumulative flat failure in one configuration: an RR, then an AR; returns the
        nodes it broke."""
        mobiles = self.lab.mobiles
        flat_addrs = {mn: self._flat_address(mn) for mn in mobiles}
        # Each dual-stack MN's flat /64 (a DHCP MN of figure2 holds none).
        flat6 = ({mn: mn_address6(self.topo, mn) for mn in mobiles
                  if is_dual_stack(self.topo, mn)} or None) if self.ipv6 else None
        # The aggregation router that serves the most sessions' clusters.
        aggs = [a.name for a in self.topo.by_role(Role.AGG)]
        agg = max(aggs, key=lambda a: sum(1 for mn in mobiles
                                          if a in self.topo.ar_parents(serving[mn])))
        self.progress(f"failure ({key}): route reflector {agg} fails")
        rec = self._sessions(flat_addrs, f"{key}-agg", lambda: self._links_down(agg),
                             addresses6=flat6)
        out.append({"arch": "flat", "config": key, "event": f"aggregation RR {agg} down",
                    **rec})
        # Then, without repairing it, the AR that serves the most sessions; its MNs move to a
        # sibling AR at once (radio-loss detection is not modelled: 0 s).
        ar = max(sorted(set(serving.values())),
                 key=lambda a: sum(1 for mn in mobiles if serving[mn] == a))
        sibling = next(a for a in self.topo.cluster_of(ar).ars if a != ar)
        self.progress(f"failure ({key}): access router {ar} fails; its MNs move to {sibling}")

        def kill_ar() -> float:
            t = self._links_down(ar)
            for mn in mobiles:
                if serving[mn] == ar:
                    self.lab.handoff(mn, sibling)
            return t

        rec = self._sessions(flat_addrs, f"{key}-ar", kill_ar, addresses6=flat6)
        out.append({"arch": "flat", "config": key, "event": f"access router {ar} down (MNs "
                    f"re-attach at {sibling})", **rec})
        return [agg, ar]

    # --- analysis -------------------------------------------------------------------------------

    @classmethod
    def analyse(cls, out_dir: Path) -> dict[str, Any]:
        run = RunDir.open(out_dir)
        p, m = run.params, run.measured
        if "flat_configs" not in p:
            raise measure.MeasureError(f"{out_dir}: a run kept before the flat / flat_draft "
                                       "split; re-run `flatarch scenario baseline`")
        missing = [k for k in ("dns", "anchored_t_end", "elapsed_s") if k not in m]
        missing += [f for f in (STRETCH, STATE, FAILURES, PROCEDURES)
                    if not (out_dir / f).exists()]
        if missing:
            raise measure.MeasureError(f"{out_dir}: the measurement did not finish "
                                       f"(no {', '.join(missing)})")
        flats = {key: HandoffScenario.analyse(out_dir / key) for key in p["flat_configs"]}
        interval_s = float(p["probe_interval_ms"]) / 1000.0
        procedures = json.loads((out_dir / PROCEDURES).read_text())
        records = read_jsonl(out_dir / ANCHORED_RECORDS)
        anchored = anchored_walk(out_dir, str(p["mn"]), records, procedures,
                                 float(m["anchored_t_end"]), interval_s)
        families = list(p.get("families") or ["ipv4"])
        anchored6 = anchored_walk(out_dir, str(p["mn"]), records, procedures,
                                  float(m["anchored_t_end"]), interval_s, "ipv6") \
            if "ipv6" in families else None
        raw_failures = json.loads((out_dir / FAILURES).read_text())
        failures = [failure_sessions(out_dir, f) for f in raw_failures]
        failures6 = [failure_sessions(out_dir, f, "ipv6") for f in raw_failures
                     if f.get("addresses6")]
        for key in flats:
            for name in ("handoff-timeline.png", "interruption-cdf.png"):
                src = out_dir / key / name
                if src.exists():
                    shutil.copyfile(src, out_dir / f"{key}-{name}")
        result = summarise(
            topo_name=run.topo.name, mn=str(p["mn"]), pgw=anchor_node(run.topo).name,
            home_rtt_ms=float(p["home_rtt_ms"]), distance=p.get("distance"),
            period_s=float(p["period_s"]), per_mode=int(p["per_mode"]),
            probe_interval_ms=float(p["probe_interval_ms"]),
            configs={k: (str(v[0]), str(v[1])) for k, v in p["flat_configs"].items()},
            mobiles=list(p["mobiles"]), flats=flats, dns=dict(m["dns"]), anchored=anchored,
            procedures=procedures, stretch=_per_config(json.loads((out_dir / STRETCH).read_text())),
            state=_per_config(json.loads((out_dir / STATE).read_text())), failures=failures,
            elapsed=float(m["elapsed_s"]))
        result["families"] = families
        if anchored6 is not None:
            result["ipv6"] = ipv6_summary(flats, anchored6, result["stretch_by_config"],
                                          {k: (str(v[0]), str(v[1]))
                                           for k, v in p["flat_configs"].items()}, failures6,
                                          _per_config(json.loads((out_dir / STATE).read_text())))
            result["ipv6"]["failures"] = failures6
        return result

    @staticmethod
    def table(result: dict[str, Any]) -> str:
        return table(result)


def path_delay_ms(topo: Topology, hops: Sequence[str | None]) -> float:
    """The one-way delay the links add along a traced path: each pair of consecutive hops
    that are nodes joined by a link (a '*' or an address breaks the chain, adding 0)."""
    total = 0.0
    for a, b in itertools.pairwise(hops):
        if a in topo.nodes and b in topo.nodes:
            iface = next((i.name for i in topo.nodes[a].interfaces if i.peer == b), None)
            attrs = topo.link_attrs.get((a, iface)) if iface else None
            total += (attrs.delay_ms or 0.0) if attrs else 0.0
    return total


def anchored_walk(out_dir: Path, mn: str, records: list[dict[str, Any]],
                  procedures: list[dict[str, Any]], t_end: float,
                  interval_s: float = PING_INTERVAL_S, family: str = "ipv4") -> dict[str, Any]:
    """The anchored walk's handoffs, from its probe file, records and the EPC's procedures;
    for ``family`` ipv6 the same handoffs seen by the anchored /64's probe and TCP stream
    (none in a run kept from before it had one)."""
    ping_file = f"{ANCHORED}-ping.txt" if family == "ipv4" else ANCHORED_PING6
    replies = measure.parse_ping((out_dir / ping_file).read_text(errors="replace"))
    procs = {(p["imsi"], p["seq"]): p for p in procedures}
    out: list[dict[str, Any]] = []
    for i, rec in enumerate(records):
        w0 = float(rec["t_attach"]) - 0.3
        w1 = float(records[i + 1]["t_attach"]) - 0.3 if i + 1 < len(records) else t_end
        interruption, lost = measure.ping_window(replies, w0, w1, interval_s)
        proc = next((p for (imsi, _), p in procs.items() if imsi == mn
                     and float(rec["t_sent"]) - 0.01 <= float(p["t_start"])
                     <= float(rec["t_accept"])), {})
        out.append({
            "mn": mn, "from": rec["from"], "to": rec["to"], "mode": "anchored",
            "kind": rec["kind"], "warmup": rec["warmup"], "t_attach": rec["t_attach"],
            "attach_ms": rec["attach_ms"], "attempts": rec["attempts"],
            "interruption_ms": round(interruption, 3), "ping_lost": lost,
            "hss_ms": proc.get("hss_ms"), "bearer_ms": proc.get("bearer_ms"),
            "messages": {"air": int(rec["air_tx"]) + int(rec["air_rx"]),
                         "s1": int(proc.get("s1", 0)), "s6a": int(proc.get("s6a", 0))},
            "home_round_trips": int(proc.get("home_round_trips", 0)), "family": family,
        })
    stream = out_dir / (ANCHORED_IPERF if family == "ipv4" else ANCHORED_IPERF6)
    iperf_res = traffic.iperf_result(stream) if family == "ipv4" or stream.exists() else None
    timeline = measure.ping_timeline(replies, interval_s)
    return {"handoffs": [h for h in out if not h["warmup"]],
            "warmup_handoffs": [h for h in out if h["warmup"]],
            "iperf": iperf_res, "timeline": timeline}


def failure_file(tag: str, mn: str, family: str = "ipv4") -> str:
    """The probe stream of one MN's address (or /64) through one failure."""
    return f"fail-{tag}-{mn}.txt" if family == "ipv4" else f"fail-{tag}-{mn}.v6.txt"


def failure_sessions(out_dir: Path, failure: dict[str, Any],
                     family: str = "ipv4") -> dict[str, Any]:
    """One failure's sessions of one family from their probe files: survived, and how long
    the gap. A run without that family's streams gives no sessions."""
    t_fail, observe_s = float(failure["t_fail"]), float(failure["observe_s"])
    t_end = t_fail + observe_s
    sessions: list[dict[str, Any]] = []
    addresses = failure["addresses"] if family == "ipv4" else failure.get("addresses6", {})
    for mn, addr in addresses.items():
        replies = measure.parse_ping((out_dir / failure_file(failure["tag"], mn, family))
                                     .read_text(errors="replace"))
        after = [r for r in replies if r.send_ts > t_fail]
        survived = bool(after) and after[-1].send_ts > t_end - 1.0
        gap = None
        if replies and survived:
            gap, _ = measure.ping_window(replies, t_fail - 0.05, t_end - 1.0, PING_INTERVAL_S)
        sessions.append({"mn": mn, "address": str(addr), "survived": survived,
                         "recovery_ms": round(gap, 3) if gap is not None else None,
                         "timeline": [(round(t - t_fail, 3), rtt) for t, rtt in
                                      measure.ping_timeline(replies, PING_INTERVAL_S)]})
    return {"arch": failure["arch"], "config": failure.get("config"), "family": family,
            "event": failure["event"], "t_fail": t_fail,
            "observe_s": observe_s, "sessions": sessions,
            "survived": sum(1 for s in sessions if s["survived"]), "total": len(sessions)}


def state_tally(flat: dict[str, int], anchored: dict[str, int],
                suffix: str = "") -> dict[str, Any]:
    """One state row's counts per node and their total and maximum, for the flat host routes
    and the anchored state; ``suffix`` "6" names the IPv6 side's fields."""
    return {f"flat{suffix}": flat, f"anchored{suffix}": anchored,
            f"flat{suffix}_total": sum(flat.values()), f"flat{suffix}_max": max(flat.values()),
            f"anchored{suffix}_total": sum(anchored.values()),
            f"anchored{suffix}_max": max(anchored.values())}


def _in_pool(address: str, pool: IPv4Network | IPv6Network) -> bool:
    """Whether a neighbour entry's address lies in the pool; a malformed one does not."""
    try:
        return ip_address(address) in pool
    except ValueError:
        return False


def survived_all(events: list[dict[str, Any]]) -> int:
    """The MNs whose sessions survived every one of these failures."""
    if not events:
        return 0
    mns = {s["mn"] for s in events[0]["sessions"]}
    for ev in events:
        mns &= {s["mn"] for s in ev["sessions"] if s["survived"]}
    return len(mns)


def failure_recovery(events: list[dict[str, Any]]) -> float | None:
    """The longest gap of a surviving session over these failures."""
    gaps = [s["recovery_ms"] for ev in events for s in ev["sessions"]
            if s["recovery_ms"] is not None and s["survived"]]
    return max(gaps) if gaps else None


def _failure_figures(failures: list[dict[str, Any]], arch: str,
                     config: str | None = None) -> dict[str, Any]:
    """A block's failure fields from one family's failures, None when none were streamed."""
    fail = [f for f in failures if f["arch"] == arch
            and (config is None or f.get("config", BEST) == config)]
    return {"sessions_survived_failure": survived_all(fail) if fail else None,
            "recovery_ms_max": failure_recovery(fail)}


def of_family(walk: dict[str, Any], family: str) -> dict[str, Any]:
    """A flat walk's analysis with one family's handoff records only."""
    return {**walk, **{k: [h for h in walk.get(k, []) if h.get("family", "ipv4") == family]
                       for k in ("handoffs", "warmup_handoffs")}}


def ipv6_summary(flats: dict[str, dict[str, Any]], anchored6: dict[str, Any],
                 stretch: dict[str, list[dict[str, Any]]],
                 configs: dict[str, tuple[str, str]],
                 failures6: list[dict[str, Any]] | None = None,
                 state: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """A dual-stack run's IPv6 side: each flat configuration's /64 and the anchored /64,
    over the same handoffs and through the same failures, in the fields their IPv4 blocks
    have."""
    six = failures6 or []
    st = state or {}

    def state_max(key: str, col: str) -> int | None:
        # Rows of a run whose state phase counted the /64s (older runs: not measured).
        vals = [int(r[col]) for r in st.get(key, []) if col in r]
        return max(vals) if vals else None

    def pct(rows: list[dict[str, Any]], key: str, q: float) -> float | None:
        xs = [float(h[key]) for h in rows if h.get(key) is not None]
        return percentile_or_none(xs, q)

    def rtt(key: str, col: str) -> float | None:
        xs = [float(r[col]) for r in stretch.get(key, []) if r.get(col) is not None
              and r[col] == r[col]]  # a NaN: no echo came back
        return round(_mean(xs), 3) if xs else None

    def path_stretch(key: str, arch: str) -> float | None:
        # Traces that reached the /64 (runs kept from before it was traced have none).
        xs = [float(r[f"{arch}_stretch6"]) for r in stretch.get(key, [])
              if r.get(f"{arch}_path6") and r[f"{arch}_path6"][-1] is not None]
        return round(_mean(xs), 3) if xs else None

    out: dict[str, Any] = {"family": "ipv6"}
    for key, (mode, dns_mode) in configs.items():
        fh = of_family(flats[key], "ipv6")["handoffs"]
        out[key] = {"mode": mode, "dns_mode": dns_mode, "handoffs": len(fh),
                    "interruption_ms_p50": pct(fh, "interruption_ms", 0.5),
                    "interruption_ms_p95": pct(fh, "interruption_ms", 0.95),
                    "reroute_ms_p50": pct(fh, "reroute_ms", 0.5),
                    "reroute_ms_p95": pct(fh, "reroute_ms", 0.95),
                    "path_optimal": sum(1 for h in fh if h.get("path_optimal")),
                    "path_stretch_mean": path_stretch(key, "flat"),
                    "rtt_ms_mean": rtt(key, "flat_rtt6_ms"),
                    "iperf": flats[key].get("iperf6"),
                    "state_max_per_node": state_max(key, "flat6_max"),
                    **_failure_figures(six, "flat", key)}
    ah = anchored6["handoffs"]
    out["anchored"] = {"mode": "anchored", "handoffs": len(ah),
                       "interruption_ms_p50": pct(ah, "interruption_ms", 0.5),
                       "interruption_ms_p95": pct(ah, "interruption_ms", 0.95),
                       "path_stretch_mean": path_stretch(BEST, "anchored"),
                       "rtt_ms_mean": rtt(BEST, "anchored_rtt6_ms"),
                       "iperf": anchored6.get("iperf"),
                       "state_max_per_node": state_max(BEST, "anchored6_max"),
                       **_failure_figures(six, "anchored")}
    out["handoffs"] = {**{k: of_family(flats[k], "ipv6")["handoffs"] for k in configs},
                       "anchored": ah}
    out["timelines"] = {"anchored": anchored6["timeline"]}
    return out


def flat_summary(walk: dict[str, Any], dns: dict[str, dict[str, float]],
                 mode: str, dns_mode: str) -> dict[str, Any]:
    """One flat configuration's walk, in the fields the anchored side has too: every handoff
    of it ran in that one mode and DNS mode."""
    fh = walk["handoffs"]
    n_all = len(fh) + len(walk.get("warmup_handoffs", []))
    queries = dns["after"].get("total.num.queries", 0.0) - \
        dns["before"].get("total.num.queries", 0.0)
    trips = [float(h["home_round_trips"]) for h in fh if h.get("home_round_trips") is not None]
    sizes = [float(h["auth_size"]) for h in fh if h.get("auth_size")]

    def p(key: str, q: float) -> float:
        return percentile([float(h[key]) for h in fh], q)

    return {
        "mode": mode, "dns_mode": dns_mode, "handoffs": len(fh),
        "interruption_ms_p50": p("interruption_ms", 0.5),
        "interruption_ms_p95": p("interruption_ms", 0.95),
        "reroute_ms_p50": p("reroute_ms", 0.5), "reroute_ms_p95": p("reroute_ms", 0.95),
        "auth_ms_p50": p("auth_ms", 0.5), "auth_ms_p95": p("auth_ms", 0.95),
        # Exact: the queries that reached the home zones' server, per handoff (dnscount.py).
        "home_round_trips_per_handoff": round(_mean(trips), 3) if trips else None,
        "auth_size": {"min": min(sizes), "p50": percentile(sizes, 0.5),
                      "max": max(sizes)} if sizes else None,
        "messages_per_handoff": {
            "air": 2.0,  # one AUTH and its answer (draft 3)
            # Unbound's counter over the walk, first contacts included: an upper bound.
            "dns_queries": round(queries / n_all, 3) if n_all else None,
            "bgp_updates": round(_mean([float(sum(h.get("updates", {}).values()))
                                        for h in fh]), 3),
            "ar_to_ar": round(_mean([2.0 if "redirect_sent" in h.get("timeline_ms", {})
                                     else 0.0 for h in fh]), 3),
        },
        "path_optimal": sum(1 for h in fh if h["path_optimal"]),
        "iperf": walk["iperf"],
    }


def summarise(*, topo_name: str, mn: str, pgw: str, home_rtt_ms: float, distance: str | None,
              period_s: float, per_mode: int, probe_interval_ms: float,
              configs: dict[str, tuple[str, str]], mobiles: list[str],
              flats: dict[str, dict[str, Any]], dns: dict[str, Any], anchored: dict[str, Any],
              procedures: list[dict[str, Any]], stretch: dict[str, list[dict[str, Any]]],
              state: dict[str, list[dict[str, Any]]], failures: list[dict[str, Any]],
              elapsed: float) -> dict[str, Any]:
    """The baseline's result: `flat`, `flat_draft` and `anchored` side by side, each with the
    same fields, with the raw records they came from. The path, state and failure phases ran
    in each flat configuration; one that a kept run lacks is named under `not_measured`
    rather than borrowed from the other."""
    ah = anchored["handoffs"]
    anch_fail = [f for f in failures if f["arch"] == "anchored"]

    def reached(rows: list[dict[str, Any]], arch: str) -> list[dict[str, Any]]:
        # A trace whose last probes went unanswered measured their loss, not a path.
        return [r for r in rows if r[f"{arch}_path"] and r[f"{arch}_path"][-1] is not None]

    def phases(key: str) -> dict[str, Any]:
        rows, st = reached(stretch.get(key, []), "flat"), state.get(key, [])
        return {
            "path_stretch_mean": round(_mean([r["flat_stretch"] for r in rows]), 3)
            if rows else None,
            "rtt_ms_mean": round(_mean([r["flat_rtt_ms"] for r in rows]), 3) if rows else None,
            **_failure_figures(failures, "flat", key),
            "state_max_per_node": max((r["flat_max"] for r in st), default=0) if st else None,
        }

    blocks: dict[str, dict[str, Any]] = {}
    for key, (mode, dns_mode) in configs.items():
        block = {**flat_summary(of_family(flats[key], "ipv4"), dns[key], mode, dns_mode),
                 "sessions_total": len(mobiles), **phases(key)}
        missing = [k for k in ("path_stretch_mean", "sessions_survived_failure",
                               "state_max_per_node") if block[k] is None]
        if missing:
            block["not_measured"] = {k: "not in this kept run" for k in missing}
        blocks[key] = block
    best_rows, best_state = reached(stretch.get(BEST, []), "anchored"), state.get(BEST, [])
    ap = [float(h["interruption_ms"]) for h in ah]
    blocks["anchored"] = {
        "mode": "anchored", "handoffs": len(ah),
        "interruption_ms_p50": percentile(ap, 0.5),
        "interruption_ms_p95": percentile(ap, 0.95),
        "path_stretch_mean": round(_mean([r["anchored_stretch"] for r in best_rows]), 3),
        "rtt_ms_mean": round(_mean([r["anchored_rtt_ms"] for r in best_rows]), 3),
        "home_round_trips_per_handoff": round(_mean([float(h["home_round_trips"])
                                                     for h in ah]), 3),
        "messages_per_handoff": {k: round(_mean([float(h["messages"][k]) for h in ah]), 3)
                                 for k in ("air", "s1", "s6a")},
        "sessions_survived_failure": survived_all(anch_fail),
        "sessions_total": len(mobiles),
        "recovery_ms_max": failure_recovery(anch_fail),
        "state_max_per_node": max((r["anchored_max"] for r in best_state), default=0),
        "attach_ms_p50": percentile([float(h["attach_ms"]) for h in ah], 0.5),
        "attach_ms_p95": percentile([float(h["attach_ms"]) for h in ah], 0.95),
        "hss_ms_p50": percentile([float(h["hss_ms"]) for h in ah if h["hss_ms"] is not None],
                                 0.5),
        "iperf": anchored["iperf"],
    }
    return {
        # IPv4's figures; a dual-stack run adds its IPv6 side under "ipv6" (analyse).
        "scenario": "baseline", "family": "ipv4", "topology": topo_name, "mn": mn,
        "anchor": pgw, "home_rtt_ms": home_rtt_ms, "distance": distance, "period_s": period_s,
        "per_mode": per_mode, "probe_interval_ms": probe_interval_ms,
        "elapsed_s": round(elapsed, 1),
        "configs": {k: {"mode": m, "dns_mode": d} for k, (m, d) in configs.items()},
        **blocks,
        "handoffs": {**{k: of_family(flats[k], "ipv4")["handoffs"] for k in configs},
                     "anchored": ah},
        "warmup": {**{k: of_family(flats[k], "ipv4")["warmup_handoffs"] for k in configs},
                   "anchored": anchored["warmup_handoffs"]},
        "flat_summary": [row for k in configs for row in flats[k].get("summary", [])],
        "dns": dns,
        # The report draws the best configuration's rows, which carry the anchored side too.
        "stretch": stretch.get(BEST, []), "state": best_state, "failures": failures,
        "stretch_by_config": stretch, "state_by_config": state,
        "timelines": {"anchored": anchored["timeline"]},
        "procedures": procedures,
    }


def _per_config(kept: Any) -> dict[str, list[dict[str, Any]]]:
    """A phase's kept rows by configuration; runs kept before the phases ran per
    configuration hold one list, measured in the best one."""
    return {BEST: kept} if isinstance(kept, list) else dict(kept)


COLUMNS = ("flat", "flat_draft", "anchored")


def table(result: dict[str, Any]) -> str:
    cols = [c for c in COLUMNS if c in result]
    rows: list[tuple[str, list[Any]]] = [
        ("handoffs measured", [result[c]["handoffs"] for c in cols]),
        ("interruption p50 (ms)", [result[c]["interruption_ms_p50"] for c in cols]),
        ("interruption p95 (ms)", [result[c]["interruption_ms_p95"] for c in cols]),
        ("reroute p95 (ms)", [result[c].get("reroute_ms_p95") for c in cols]),
        ("path stretch (mean)", [result[c]["path_stretch_mean"] for c in cols]),
        ("CN->MN RTT (ms, mean)", [result[c]["rtt_ms_mean"] for c in cols]),
        ("home round trips / handoff",
         [result[c]["home_round_trips_per_handoff"] for c in cols]),
        ("sessions surviving failures",
         [None if result[c]["sessions_survived_failure"] is None else
          f"{result[c]['sessions_survived_failure']}/{result[c]['sessions_total']}"
          for c in cols]),
        ("max state on one node", [result[c]["state_max_per_node"] for c in cols]),
        ("TCP survived the walk", [(result[c].get("iperf") or {}).get("survived")
                                   for c in cols]),
    ]

    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)
    six = result.get("ipv6")
    if six is not None:  # the same handoffs and paths, the flat and the anchored /64
        rows += [(f"ipv6 {name}", [six[c].get(key) for c in cols]) for name, key in (
            ("handoffs measured", "handoffs"), ("interruption p50 (ms)", "interruption_ms_p50"),
            ("interruption p95 (ms)", "interruption_ms_p95"),
            ("path stretch (mean)", "path_stretch_mean"),
            ("CN->MN RTT (ms, mean)", "rtt_ms_mean"),
            ("sessions survived failure", "sessions_survived_failure"),
            ("recovery max (ms)", "recovery_ms_max"),
            ("state max per node", "state_max_per_node"))]
        rows.append(("ipv6 TCP survived the walk", [(six[c].get("iperf") or {}).get("survived")
                                                    for c in cols]))
    lines = [f"{'measure':30s} " + " ".join(f"{c:>14s}" for c in cols), "-" * (31 + 15 * len(cols))]
    lines += [f"{name:30s} " + " ".join(f"{cell(v):>14s}" for v in vals) for name, vals in rows]
    lines.append(f"home network {result['home_rtt_ms']:g} ms RTT away; probe every "
                 f"{result['probe_interval_ms']:g} ms; "
                 + "; ".join(f"{k}: {v['mode']}, DNS {v['dns_mode']}"
                             for k, v in result["configs"].items()))
    return "\n".join(lines)
