"""`flatarch scenario handoff`: an MN walks across ARs while the CN probes it (every 1 ms by
default, `--probe-interval-ms`) and streams TCP to it; every handoff is measured from the
MN's, the ARs' and the routers' clocks (one kernel, so one clock) and reported per mode, as a
table and as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from pathlib import Path
from typing import Any, Self

import yaml

from agents.contract import REDIRECT_METRIC  # a temporary redirect does not count
from topologies.analysis import measure
from topologies.analysis.dnscount import home_round_trips
from topologies.analysis.stats import percentile, percentile_or_none
from topologies.lab.daemons import LabError, wait_until
from topologies.lab.dnsplane import QUERY_LOG
from topologies.lab.lab import Lab
from topologies.model import Role, Topology, fqdn
from topologies.render.configs import UPDATES_LOG
from topologies.scenarios import traffic
from topologies.scenarios.base import (
    FAMILIES,
    ROUTES,
    Progress,
    RunDir,
    Scenario,
    Step,
    add_walk_arguments,
    address_owner,
    graph,
    provisioned_address,
    read_events,
    read_jsonl,
    wait_for_clock,
    walk,
    write_jsonl,
)
from topologies.scenarios.progress import Eta
from topologies.scenarios.registry import register
from topologies.scenarios.routewatch import RouteWatcher

log = logging.getLogger(__name__)

PING_INTERVAL_S = traffic.PING_INTERVAL_S
IPERF_RATE = traffic.IPERF_RATE
SETTLE_QUIET_S = 0.4
WALK_PROBE_INTERVAL_MS = 1.0  # the walking MN's probe: interruption resolved to 1 ms
SETTLE_TIMEOUT_S = 6.0
RECORDS = "handoffs.jsonl"  # what the MN and the radio reported, per handoff
PING6 = "ping6.txt"  # the CN's probe of the MN's IPv6 address (issue 18, --family)
# An IPv6 record of a run whose route watcher was IPv4's only (runs kept from before it
# watched both families) has no re-route time.
NOT_MEASURED6: dict[str, Any] = {"reroute_ms": None, "settled_ms": {}}


@register
class HandoffScenario(Scenario):
    """Runs the walk in each mode inside one lab and measures every handoff."""

    name = "handoff"
    help = "an MN walks across ARs under ping and TCP; every handoff measured"

    def __init__(self, lab: Lab, *, mn: str | None = None, modes: Sequence[str] = ("redirect",
                 "draft"), per_mode: int = 20, period_s: float = 2.0,
                 progress: Progress | None = None, out_dir: Path | None = None,
                 dns_modes: Sequence[str] = ("lookup",),
                 probe_interval_ms: float = WALK_PROBE_INTERVAL_MS,
                 families: Sequence[str] = ("ipv4",)) -> None:
        super().__init__(lab, mn, progress, out_dir)
        self.families = list(families)
        self.address6 = mn_address6(self.topo, self.mn) if "ipv6" in families else None
        self.dns_modes = list(dns_modes)
        self.probe_interval_ms = probe_interval_ms
        self.address = provisioned_address(self.topo, self.mn)
        self.prefix = IPv4Network((self.address, 32))
        self.modes = list(modes)
        self.per_mode = per_mode
        self.period_s = period_s
        self.steps = walk(self.topo, self.mn)
        self._owner = address_owner(self.topo)
        six = self.topo.backbone6
        self._owner6 = six.owners() if six is not None and self.address6 is not None else {}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--mode", default="both", choices=["redirect", "draft", "both"])
        parser.add_argument("--dns", default="lookup", choices=["lookup", "stapled", "both"],
                            help="the AR looks the MN up in its home zone, or the MN staples "
                            "its DNSSEC proof into the AUTH (issue 17); both: one walk each")
        add_walk_arguments(parser)
        add_probe_interval(parser)
        add_family_argument(parser, "handoff")

    @classmethod
    def topology_for(cls, args: argparse.Namespace, out_dir: Path) -> Path:
        return dual_stack_topology(args, out_dir)

    @classmethod
    def from_args(cls, lab: Lab, args: argparse.Namespace, out_dir: Path) -> Self:
        modes = ["redirect", "draft"] if args.mode == "both" else [args.mode]
        dns_modes = ["lookup", "stapled"] if args.dns == "both" else [args.dns]
        return cls(lab, modes=modes, per_mode=args.handoffs, period_s=args.period,
                   out_dir=out_dir, dns_modes=dns_modes,
                   probe_interval_ms=args.probe_interval_ms,
                   families=FAMILIES[getattr(args, "family", "ipv4")])

    def params(self) -> dict[str, Any]:
        return {"mn": self.mn, "modes": self.modes, "per_mode": self.per_mode,
                "period_s": self.period_s, "dns_modes": self.dns_modes,
                "probe_interval_ms": self.probe_interval_ms, "families": self.families}

    # --- topology helpers -------------------------------------------------------------------

    @property
    def routers(self) -> list[str]:
        return [n.name for n in self.topo.routers]

    # --- the run ------------------------------------------------------------------------------

    def plan(self) -> list[tuple[str, Step, bool]]:
        """(mode, step, measured). One unmeasured round trip first: an AR's first contact
        with an MN costs a DNS key lookup and an ECDH, which would otherwise land on
        whichever mode runs first. Its records are reported apart, as `warmup`."""
        out: list[tuple[str, Step, bool]] = [(self.modes[0], s, False) for s in self.steps]
        # Whole round trips (each ends at home), so every mode starts from the same place.
        rounds = -(-self.per_mode // len(self.steps))
        for mode in self.modes:
            out += [(mode, s, True) for _ in range(rounds) for s in self.steps]
        return out

    def measure(self) -> None:
        lab = self.lab
        # The whole plan once per DNS mode: no figure mixes modes.
        plan = [(dns, mode, step, measured) for dns in self.dns_modes
                for mode, step, measured in self.plan()]
        duration = len(plan) * self.period_s + 4.0
        cn_name = self.topo.service("cn").name
        cn = lab.execs[cn_name]
        self.progress(f"handoff scenario: {len(plan)} handoffs of {self.mn} "
                      f"({', '.join(self.modes)}), one every {self.period_s:.1f}s, "
                      f"~{duration:.0f}s of traffic")
        records: list[dict[str, Any]] = []
        eta = Eta(len(plan), self.progress)
        self.note(probe_interval_ms=self.probe_interval_ms)
        with contextlib.ExitStack() as stack:
            # Every route, not only the managed range: the IGP routes toward the new AR's
            # loopback tell which next hops count as "forwarding by the new route".
            watcher = self.watch_routes(
                stack, ("0.0.0.0/0",) if self.address6 is None else ("0.0.0.0/0", "::/0"))
            # Whatever happens below, the logs so far are kept (the route events too).
            stack.callback(self.keep_files, self.routers, ("events.jsonl", UPDATES_LOG))
            # Every query that reached the home zones' server: the exact home round trips.
            stack.callback(self.keep_files, [self.topo.service("dns").name], (QUERY_LOG,))
            stack.enter_context(traffic.iperf_server(lab, self.mn,
                                                     self.dir / "iperf-server.json"))
            ping = stack.enter_context(traffic.probe(lab, cn_name, self.address,
                                                     self.dir / "ping.txt",
                                                     self.probe_interval_ms / 1000.0))
            iperf = stack.enter_context(traffic.iperf_client(
                lab, cn_name, self.address, self.dir / traffic.IPERF_JSON, duration))
            ping6 = None if self.address6 is None else stack.enter_context(traffic.probe(
                lab, cn_name, str(self.address6), self.dir / PING6,
                self.probe_interval_ms / 1000.0))
            # The MN's /64 carries a TCP stream of its own, through the same handoffs.
            iperf6 = None if self.address6 is None else stack.enter_context(
                traffic.iperf6(lab, cn_name, self.mn, self.address6, self.dir, duration))
            t_next = time.time() + 1.5
            dns_now: str | None = None
            for i, (dns, mode, step, measured) in enumerate(plan):
                if dns != dns_now:
                    self.set_dns_mode(self.mn, dns)
                    dns_now = dns
                lab.set_mode(mode)
                wait_for_clock(t_next)
                rec = lab.handoff(self.mn, step.to)
                if not rec.get("ok"):
                    raise LabError(f"handoff {i + 1} to {step.to} failed: {rec.get('error')}")
                rec.update(mode=mode, kind=step.kind, direct_link=step.direct_link,
                           warmup=not measured, dns_mode=dns)
                t_settle = time.monotonic()
                self._settle(watcher, rec["t_attach"])
                t_trace = time.monotonic()
                rec["traceroute"] = traffic.trace(cn, self.address, self._owner, target=self.mn)
                if self.address6 is not None:
                    rec["traceroute6"] = traffic.trace(cn, self.address6, self._owner6,
                                                       target=self.mn)
                records.append(rec)
                write_jsonl(self.dir / RECORDS, records)
                eta.step(
                    f"{mode if measured else 'warm-up':8s} {rec['from']}->{step.to} "
                    f"({step.kind}) auth {rec['auth_ms']:.1f} ms; settled in "
                    f"{t_trace - t_settle:.1f}s, traceroute {time.monotonic() - t_trace:.1f}s"
                )
                t_next = max(t_next + self.period_s, time.time() + 0.3)
            self.note(t_end=traffic.end_walk(ping, iperf, duration))
            if ping6 is not None:
                ping6.interrupt()
            if iperf6 is not None:
                iperf6.wait(duration + 15)
        eta.done()

    def set_dns_mode(self, mn: str, dns: str) -> None:
        answer = self.lab.control(mn).request({"cmd": "dns_mode", "mode": dns}, timeout=30)
        if not answer.get("ok"):
            raise LabError(f"{mn}: DNS mode {dns}: {answer.get('error')}")
        self.progress(f"  {mn} now in DNS mode {dns} (staple {answer.get('staple_size')} "
                      "octets)")

    def _settle(self, watcher: RouteWatcher, t0: float) -> None:
        """Wait until no route for the MN's /32 changed for a while (BGP has converged)."""
        def quiet() -> bool:
            evs = [e for e in watcher.events() if e.dst == self.prefix and e.ts >= t0]
            last = max((e.ts for e in evs), default=t0)
            return time.time() - last >= SETTLE_QUIET_S

        with contextlib.suppress(LabError):
            wait_until(quiet, SETTLE_TIMEOUT_S, "routes to settle", 0.05)

    # --- analysis -------------------------------------------------------------------------

    @classmethod
    def analyse(cls, out_dir: Path) -> dict[str, Any]:
        run = RunDir.open(out_dir)
        p = run.params
        if "t_end" not in run.measured:
            raise measure.MeasureError(f"{out_dir}: the measurement did not finish (no t_end)")
        # Runs kept before the interval was a parameter probed every 10 ms.
        interval_s = float(p.get("probe_interval_ms", PING_INTERVAL_S * 1000)) / 1000.0
        return HandoffAnalysis(run.topo, str(p["mn"]), list(p["modes"]), float(p["period_s"]),
                               out_dir, interval_s, list(p.get("families", ["ipv4"]))
                               ).result(float(run.measured["t_end"]))

    @staticmethod
    def table(result: dict[str, Any]) -> str:
        return table(result)


class HandoffAnalysis:
    """The handoff scenario's numbers, from its run directory alone."""

    def __init__(self, topo: Topology, mn: str, modes: list[str], period_s: float,
                 out_dir: Path, interval_s: float = PING_INTERVAL_S,
                 families: Sequence[str] = ("ipv4",)) -> None:
        self.topo = topo
        self.families = list(families)
        self.interval_s = interval_s
        self.mn = mn
        self.modes = modes
        self.period_s = period_s
        self.dir = out_dir
        self.prefix = IPv4Network((topo.mobile(mn).address, 32))
        self._adjacency = graph(topo)

    @property
    def routers(self) -> list[str]:
        return [n.name for n in self.topo.routers]

    def result(self, t_end: float) -> dict[str, Any]:
        records = read_jsonl(self.dir / RECORDS)
        try:
            events = measure.parse_route_events((self.dir / ROUTES).read_text())
        except OSError as exc:
            raise measure.MeasureError(f"{self.dir}: no route events: {exc}") from None
        return self.analyse(records, events, t_end)

    def analyse(self, records: list[dict[str, Any]], events: list[measure.RouteEvent],
                t_end: float) -> dict[str, Any]:
        replies = measure.parse_ping((self.dir / "ping.txt").read_text(errors="replace"))
        replies6 = (measure.parse_ping((self.dir / PING6).read_text(errors="replace"))
                    if "ipv6" in self.families else [])
        rx: dict[str, list[measure.BgpRx]] = {}
        for r in self.topo.routers:
            logfile = self.dir / f"{r.name}.{UPDATES_LOG}"
            if logfile.exists():
                rx[r.name] = measure.parse_bgpd_log(logfile.read_text(errors="replace"))
        cores = [n.name for n in self.topo.by_role(Role.CORE)]
        queries_path = self.dir / f"{self.topo.service('dns').name}.{QUERY_LOG}"
        queries = queries_path.read_text(errors="replace") if queries_path.exists() else None
        ar_events = {a.name: read_events(self.dir / f"{a.name}.events.jsonl")
                     for a in self.topo.by_role(Role.AR)}
        out: list[dict[str, Any]] = []
        sources: list[dict[str, Any]] = []  # the record of each entry of ``out``
        for i, rec in enumerate(records):
            t_auth = float(rec["t_auth_sent"])
            w0 = float(rec["t_attach"]) - 0.3
            w1 = float(records[i + 1]["t_attach"]) - 0.3 if i + 1 < len(records) else t_end
            interruption, lost = measure.ping_window(replies, w0, w1, self.interval_s)
            routers, optimal = self._path(rec["traceroute"], rec["to"])
            watch = sorted({*routers, rec["from"]})
            lo = self.topo.nodes[rec["to"]].loopback
            assert lo is not None
            settled = {r: self._settled(events, r, t_auth, w1, lo) for r in watch}
            reroute = max(settled.values()) - t_auth
            updates = {r: measure.count_updates(lines, self.prefix, t_auth, w1)
                       for r, lines in rx.items()}
            out.append({
                "mn": self.mn, "from": rec["from"], "to": rec["to"], "mode": rec["mode"],
                "kind": rec["kind"], "direct_link": rec["direct_link"],
                "auth_ms": round(float(rec["auth_ms"]), 3),
                "reroute_ms": round(reroute * 1000, 3),
                "interruption_ms": round(interruption, 3), "ping_lost": lost,
                "core_updates": sum(updates.get(c, 0) for c in cores),
                "path_optimal": optimal, "path": rec["traceroute"],
                "updates": {r: n for r, n in updates.items() if n},
                "settled_ms": {r: round((t - t_auth) * 1000, 3) for r, t in settled.items()},
                "timeline_ms": self._timeline(rec, ar_events, t_auth, w1),
                "warmup": bool(rec.get("warmup")),
                "dns_mode": rec.get("dns_mode", "lookup"),
                "staple_size": rec.get("staple_size"),
                "auth_size": rec.get("auth_size"),
                # Queries that reached the MN's home zone from the radio's attach to the AR's
                # answer (the AR may ask before the MN stamps its send); None where the run
                # kept no query log.
                "home_round_trips": None if queries is None else home_round_trips(
                    queries, fqdn("mn", self.mn), float(rec["t_attach"]),
                    float(rec.get("t_reply", t_auth + float(rec["auth_ms"]) / 1000))),
                "family": "ipv4",
                "redirect_tunnel": self._tunnel(ar_events, rec, "redirect_installed", t_auth, w1),
            })
            sources.append(rec)
            if "ipv6" in self.families:
                # The same handoff seen by the IPv6 probe and the IPv6 route events.
                interruption6, lost6 = measure.ping_window(replies6, w0, w1, self.interval_s)
                prefix6 = self.topo.mobile(self.mn).prefix6
                updates6 = {r: measure.count_updates(lines, prefix6, t_auth, w1)
                            for r, lines in rx.items()} if prefix6 is not None else {}
                trace6 = rec.get("traceroute6")
                out.append({**out[-1], **self._reroute6(events, rec, trace6, t_auth, w1),
                            "family": "ipv6",
                            "redirect_tunnel": self._tunnel(ar_events, rec,
                                                            "redirect6_installed", t_auth, w1),
                            "path": trace6, "path_optimal": None if trace6 is None
                            else self._path(trace6, rec["to"])[1],
                            "interruption_ms": round(interruption6, 3), "ping_lost": lost6,
                            "core_updates": sum(updates6.get(c, 0) for c in cores),
                            "updates": {r: n for r, n in updates6.items() if n}})
                sources.append(rec)
        by_family = [(h, rec) for h, rec in zip(out, sources, strict=True)
                     if h["family"] in self.families]
        out = [h for h, _ in by_family]
        iperf = traffic.iperf_result(self.dir / traffic.IPERF_JSON)
        six = {"iperf6": traffic.iperf_result(self.dir / traffic.IPERF6_JSON)} \
            if "ipv6" in self.families else {}
        measured = [h for h in out if not h["warmup"]]
        for h, rec in by_family:
            h["t_attach"] = rec["t_attach"]
        plot_files = self._plots(replies, [h for h in out if h["family"] == "ipv4"] or out)
        return {"scenario": "handoff", "topology": self.topo.name, "mn": self.mn,
                "modes": self.modes, "period_s": self.period_s,
                "probe_interval_ms": round(self.interval_s * 1000.0, 3), "handoffs": measured,
                "warmup_handoffs": [h for h in out if h["warmup"]],
                "iperf": iperf, **six, "summary": summarise(measured), "plots": plot_files,
                "first_contact": summarise([{**h, "mode": "warm-up"} for h in out
                                            if h["warmup"]])}

    def _path(self, trace: list[str | None], to: str) -> tuple[list[str], bool]:
        """The routers on a CN->MN traceroute, and whether it reached the MN on a shortest
        path through ``to`` with every hop answering."""
        path = [h for h in trace if h is not None]
        routers = [h for h in path if h in self.topo.nodes and self.topo.nodes[h].is_router]
        return routers, (bool(path) and path[-1] == self.mn and None not in trace
                         and measure.is_shortest_path(routers, self._adjacency,
                                                      self.topo.service("cn").name, to))

    def _reroute6(self, events: list[measure.RouteEvent], rec: dict[str, Any],
                  trace6: list[str | None] | None, t_auth: float, w1: float
                  ) -> dict[str, Any]:
        """The /64's re-route time, as the /32's: the routers on its path and the AR the MN
        left, each settled on the new AR's IPv6 loopback. NOT_MEASURED6 for a run
        whose watcher recorded no IPv6 route (kept from before it watched both families)."""
        prefix6 = self.topo.mobile(self.mn).prefix6
        bb = self.topo.backbone6
        if prefix6 is None or bb is None or not any(e.dst.version == 6 for e in events):
            return dict(NOT_MEASURED6)
        lo6 = bb.loopback(rec["to"])
        # Its own traceroute's routers, else the IPv4 one's (the same backbone, both families).
        routers = self._path(trace6 if trace6 is not None else rec["traceroute"], rec["to"])[0]
        settled = {r: self._settled(events, r, t_auth, w1, lo6, prefix6)
                   for r in sorted({*routers, rec["from"]})}
        return {"reroute_ms": round((max(settled.values()) - t_auth) * 1000, 3),
                "settled_ms": {r: round((t - t_auth) * 1000, 3) for r, t in settled.items()}}

    def _settled(self, events: list[measure.RouteEvent], router: str, t0: float,
                 t1: float, new_ar: IPv4Address | IPv6Address,
                 prefix: IPv4Network | IPv6Network | None = None) -> float:
        """When the router's forwarding for the MN's prefix (its /32, or its /64) became,
        for good, forwarding by the new route: its final state, or a route whose next hops
        are those of the IGP route toward the new AR's loopback (its /32 or /128, resolved
        recursively). A route that ends absent leaves forwarding to the covering route,
        which the path check verifies. The redirect's temporary route (its own metric)
        never counts.
        """
        prefix = self.prefix if prefix is None else prefix
        ignore = frozenset({REDIRECT_METRIC})
        final = measure.final_state(events, router, prefix, t1, ignore)
        toward = measure.final_state(events, router, ip_network(new_ar), t1,
                                     frozenset()) or frozenset()
        table: dict[int, frozenset[str]] = {}
        ok_since: float | None = None
        for e in sorted((e for e in events if e.node == router and e.dst == prefix
                         and e.ts <= t1), key=lambda e: e.ts):
            if e.kind == "add":
                table[e.metric] = e.nexthops
            else:
                table.pop(e.metric, None)
            state = measure.effective(table, ignore)
            good = state == final or (state is not None and bool(toward)
                                      and state <= toward)
            t = max(e.ts, t0)
            if good and ok_since is None:
                ok_since = t
            elif not good:
                ok_since = None
        if not any(e.node == router and e.dst == prefix and e.ts <= t1 for e in events):
            return t0  # never had a host route: the covering route was right all along
        return ok_since if ok_since is not None else t1

    @staticmethod
    def _tunnel(ar_events: dict[str, list[dict[str, Any]]], rec: dict[str, Any], name: str,
                t0: float, t1: float) -> str | None:
        """How the previous AR redirected this handoff: "srv6" or "vxlan" (issue 18), None
        when it did not (the draft's mode, or no redirect reached it)."""
        for ev in ar_events.get(rec["from"], []):
            if ev.get("ev") == name and t0 - 0.05 <= float(ev.get("t", 0)) <= t1:
                tunnel = ev.get("tunnel")
                return str(tunnel) if tunnel is not None else None
        return None

    def _timeline(self, rec: dict[str, Any], ar_events: dict[str, list[dict[str, Any]]],
                  t0: float, t1: float) -> dict[str, float]:
        """The MN's and the ARs' own stamps, in ms after the MN sent its AUTH."""
        marks: dict[str, float] = {"reply": (float(rec["t_reply"]) - t0) * 1000}
        wanted = {
            (rec["to"], "verified"): "verified", (rec["to"], "checked"): "dns_checked",
            (rec["to"], "attached"): "installed", (rec["to"], "announced"): "announced",
            (rec["to"], "redirect_sent"): "redirect_sent",
            (rec["from"], "redirect_installed"): "redirect_installed",
            (rec["from"], "redirect_removed"): "redirect_removed",
            (rec["from"], "withdrawn"): "old_withdrawn",
            (rec["to"], "withdrawn"): "withdrawn_home",
        }
        for node in {rec["to"], rec["from"]}:
            for ev in ar_events.get(node, []):
                key = wanted.get((node, ev.get("ev", "")))
                t = float(ev.get("t", 0))
                if key and key not in marks and t0 - 0.05 <= t <= t1:
                    marks[key] = round((t - t0) * 1000, 3)
        return marks

    def _plots(self, replies: list[measure.PingReply],
               handoffs: list[dict[str, Any]]) -> list[str]:
        """PNG files beside the raw data; a missing matplotlib costs the plots, not the run."""
        try:
            from topologies.analysis import plots
        except ImportError as exc:
            log.warning("no plots: %s", exc)
            return []
        timeline = measure.ping_timeline(replies, self.interval_s)
        return [
            str(plots.handoff_timeline(timeline, handoffs, self.dir / "handoff-timeline.png")),
            str(plots.interruption_cdf([h for h in handoffs if not h["warmup"]],
                                       self.dir / "interruption-cdf.png")),
        ]


def add_family_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--family", default="ipv4", choices=sorted(FAMILIES),
                        help="probe the MN's IPv4 address, its IPv6 prefix or both; one "
                        f"record per {what} and family (the MN is made dual-stack)")


def add_probe_interval(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--probe-interval-ms", type=positive_ms, default=WALK_PROBE_INTERVAL_MS,
                        help="the CN's probe to the walking MN (interruption is resolved to it)")


def is_dual_stack(topo: Topology, mn: str) -> bool:
    """Whether the MN holds a /64 that the dual-stack backbone routes."""
    return topo.backbone6 is not None and topo.mobile(mn).prefix6 is not None and \
        mn in topo.backbone6.mobiles


def mn_address6(topo: Topology, mn: str) -> IPv6Address:
    """The walking MN's IPv6 address, the first of its prefix (what the CN probes)."""
    prefix = topo.mobile(mn).prefix6
    if prefix is None or not is_dual_stack(topo, mn):
        raise LabError(f"--family ipv6: {mn} is not dual-stack in {topo.name} (a dual-stack "
                       "backbone, addressing.ipv6.loopbacks and links, is needed)")
    return prefix.network_address + 1


def dual_stack_walker(doc: dict[str, Any], dhcp_mn: bool = False,
                      delegated: bool = False, every: bool = False) -> dict[str, Any]:
    """The topology with the MN a scenario moves dual-stack: its first provisioned MN (the
    one that walks), or with ``dhcp_mn`` its first DHCP MN (as Scenario picks them); with
    ``delegated`` that DHCP MN takes its /64s by DHCPv6 (dhcp.ipv6) instead of holding a
    planned prefix; with ``every``, every provisioned MN holds its planned prefix."""
    dhcp = set((doc.get("dhcp") or {}).get("mobiles") or ())
    walker = next((m for m in doc.get("mobiles") or () if (m in dhcp) == dhcp_mn), None)
    six = (doc.get("addressing") or {}).get("ipv6")
    if walker is None or not isinstance(six, dict):
        kind = "a DHCP MN" if dhcp_mn else "a provisioned MN"
        raise LabError(f"--family ipv6: the topology needs addressing.ipv6 and {kind}")
    if delegated:
        doc["dhcp"]["ipv6"] = sorted({*(doc["dhcp"].get("ipv6") or ()), walker})
    else:
        chosen = [m for m in doc.get("mobiles") or () if m not in dhcp] if every else [walker]
        six["mobiles"] = sorted({*(six.get("mobiles") or ()), *chosen})
    return doc


def dual_stack_topology(args: argparse.Namespace, out_dir: Path,
                        dhcp_mn: bool = False, delegated: bool = False,
                        every: bool = False) -> Path:
    """Where `--family` other than ipv4 makes the scenario's MN dual-stack: a copy of the
    topology beside the run (topology_for of the scenarios that take --family)."""
    if getattr(args, "family", "ipv4") == "ipv4":
        return Path(args.topology)
    path = out_dir / "dualstack.yaml"
    doc = dual_stack_walker(yaml.safe_load(Path(args.topology).read_text()), dhcp_mn,
                            delegated, every)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def positive_ms(text: str) -> float:
    """An interval in ms for argparse: a number in [0.1, 1000]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.1 <= value <= 1000.0:
        raise argparse.ArgumentTypeError(f"{value:g} ms is outside [0.1, 1000]")
    return value


def summarise(handoffs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per handoff mode, DNS mode and kind, then per handoff and DNS mode over all
    kinds: no row mixes modes."""
    rows: list[dict[str, Any]] = []
    dns = {h.get("dns_mode", "lookup") for h in handoffs}
    keys = sorted({(h["mode"], h.get("dns_mode", "lookup"), h["kind"],
                    h.get("family", "ipv4")) for h in handoffs})
    alls = sorted({(h["mode"], h.get("dns_mode", "lookup"), "all", h.get("family", "ipv4"))
                   for h in handoffs})
    for mode, dns_mode, kind, family in [*keys, *alls]:
        hs = [h for h in handoffs if h["mode"] == mode
              and h.get("dns_mode", "lookup") == dns_mode
              and (kind == "all" or h["kind"] == kind) and h.get("family", "ipv4") == family]
        trips = [h["home_round_trips"] for h in hs if h.get("home_round_trips") is not None]
        v4 = family == "ipv4"
        reroutes = [h["reroute_ms"] for h in hs if h["reroute_ms"] is not None]
        paths = [h["path_optimal"] for h in hs if h["path_optimal"] is not None]
        label = mode if len(dns) == 1 else f"{mode}/{dns_mode}"
        rows.append({
            "mode": label if v4 else f"{label}/{family}", "dns_mode": dns_mode,
            "kind": kind, "n": len(hs), "family": family,
            "home_round_trips_mean": round(sum(trips) / len(trips), 3) if trips else None,
            "interruption_ms_p50": percentile([h["interruption_ms"] for h in hs], 0.5),
            "interruption_ms_p95": percentile([h["interruption_ms"] for h in hs], 0.95),
            # None where not measured (IPv6 rows of runs kept from before: NOT_MEASURED6).
            "reroute_ms_p50": percentile_or_none(reroutes, 0.5),
            "reroute_ms_p95": percentile_or_none(reroutes, 0.95),
            "auth_ms_p50": percentile([h["auth_ms"] for h in hs], 0.5),
            "auth_ms_p95": percentile([h["auth_ms"] for h in hs], 0.95),
            "ping_lost": sum(h["ping_lost"] for h in hs),
            "core_updates_max": max((h["core_updates"] for h in hs), default=0),
            "path_optimal": sum(1 for p in paths if p) if paths else None,
        })
    return rows


def _shown(value: float | int | None, spec: str) -> str:
    """A table cell: '-' where the figure was not measured (an IPv6 row's reroute)."""
    if value is not None:
        return format(value, spec)
    width = len(format(0, spec))
    return "-".ljust(width) if spec.startswith("<") else "-".rjust(width)


def table(result: dict[str, Any]) -> str:
    head = (f"{'mode':16s} {'kind':14s} {'n':>3s} {'interr p50/p95 ms':>18s} "
            f"{'reroute p50/p95 ms':>19s} {'auth p50/p95':>13s} {'lost':>5s} "
            f"{'core upd':>8s} {'optimal':>8s} {'home rt':>7s}")
    lines = [head, "-" * len(head)]
    for r in result["summary"]:
        lines.append(
            f"{r['mode']:16s} {r['kind']:14s} {r['n']:3d} "
            f"{r['interruption_ms_p50']:8.1f}/{r['interruption_ms_p95']:<9.1f} "
            f"{_shown(r['reroute_ms_p50'], '8.1f')}/{_shown(r['reroute_ms_p95'], '<10.1f')} "
            f"{r['auth_ms_p50']:6.1f}/{r['auth_ms_p95']:<6.1f} {r['ping_lost']:5d} "
            f"{_shown(r['core_updates_max'], '8d')} {_shown(r['path_optimal'], '4d')}/"
            f"{r['n']:<3d} "
            f"{'-' if r.get('home_round_trips_mean') is None else r['home_round_trips_mean']:>7}"
        )
    lines.append(traffic.iperf_line(result["iperf"], "CN->MN"))
    if "iperf6" in result:
        lines.append(traffic.iperf_line(result["iperf6"], "CN->MN's /64"))
    return "\n".join(lines)

