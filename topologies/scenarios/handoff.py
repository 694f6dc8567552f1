"""`flatarch scenario handoff`: an MN walks across ARs while the CN pings it every 10 ms and
streams TCP to it; every handoff is measured from the MN's, the ARs' and the routers' clocks
(one kernel, so one clock) and reported per mode, as a table and as JSON.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any, ClassVar

from topologies.analysis import measure
from topologies.lab.daemons import LabError, NodeExec, wait_until
from topologies.lab.lab import Lab
from topologies.model import Role, Topology
from topologies.render.configs import UPDATES_LOG
from topologies.scenarios.routewatch import RouteWatcher

log = logging.getLogger(__name__)

PING_INTERVAL_S = 0.01
IPERF_RATE = "20M"  # paced: a full-rate stream would starve the daemons of the 2-core VM
REDIRECT_METRIC = 150  # agents.fib.REDIRECT_METRIC: a temporary redirect does not count
SETTLE_QUIET_S = 0.4
SETTLE_TIMEOUT_S = 6.0

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Step:
    to: str
    kind: str  # intra-cluster | inter-cluster | return-home
    direct_link: bool = False  # the new AR and the previous one share a link (draft 2.2)


def walk(topo: Topology, mn: str) -> list[Step]:
    """One round trip from the MN's home AR covering every case the issue names: another AR
    of the home cluster, across a direct AR-AR link into another cluster, a third cluster,
    and home again. Falls back gracefully on topologies without an AR-AR link."""
    home = topo.mobile(mn).home
    cluster = topo.cluster_of(home)
    ar_links = [
        (lk.a, lk.b) for lk in topo.links
        if topo.nodes[lk.a].role is Role.AR and topo.nodes[lk.b].role is Role.AR
        and topo.cluster_of(lk.a) != topo.cluster_of(lk.b)
    ]
    bridge: tuple[str, str] | None = None
    for a, b in ar_links:
        if a in cluster.ars and a != home:
            bridge = (a, b)
        elif b in cluster.ars and b != home:
            bridge = (b, a)
        if bridge:
            break
    sibling = bridge[0] if bridge else next((a for a in cluster.ars if a != home), None)
    order: list[str] = []
    if sibling:
        order.append(sibling)
    if bridge:
        order.append(bridge[1])
    used = {topo.cluster_of(a).name for a in [home, *order]}
    third = next((c for c in topo.clusters if c.name not in used), None)
    if third is not None:
        order.append(third.ars[0])
    elif not bridge:
        other = next((c for c in topo.clusters if c.name != cluster.name), None)
        if other is not None:
            order.append(other.ars[0])
    order.append(home)
    steps: list[Step] = []
    prev = home
    for ar in order:
        if ar == home:
            kind = "return-home"
        elif topo.cluster_of(ar) == topo.cluster_of(prev):
            kind = "intra-cluster"
        else:
            kind = "inter-cluster"
        linked = any({lk.a, lk.b} == {prev, ar} for lk in topo.links)
        steps.append(Step(ar, kind, linked))
        prev = ar
    return steps


def address_owner(topo: Topology) -> dict[IPv4Address, str]:
    """Which node each interface, loopback and pool gateway address belongs to."""
    owner: dict[IPv4Address, str] = {}
    for n in topo.nodes.values():
        for i in n.interfaces:
            owner[i.address] = n.name
        if n.loopback is not None:
            owner[n.loopback] = n.name
        if n.pool is not None:
            owner[n.pool_gateway] = n.name
    return owner


def graph(topo: Topology) -> dict[str, set[str]]:
    adj: dict[str, set[str]] = {n: set() for n in topo.nodes}
    for lk in topo.links:
        adj[lk.a].add(lk.b)
        adj[lk.b].add(lk.a)
    return adj


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def read_events(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
    return out


class Scenario:
    """What every scenario starts from: a running lab, the MN it moves (a provisioned one,
    or with ``dhcp_mn`` one that gets its addresses by DHCP), a directory for its raw files
    and progress lines."""

    name: ClassVar[str]
    dhcp_mn: ClassVar[bool] = False

    def __init__(self, lab: Lab, mn: str | None, progress: Progress | None,
                 out_dir: Path | None) -> None:
        kind = "an MN listed under dhcp.mobiles" if self.dhcp_mn else "a provisioned MN"
        pool = [m for m in lab.mobiles if (m in lab.topo.dhcp_mobiles) == self.dhcp_mn]
        if not pool:
            raise LabError(f"the {self.name} scenario needs a topology with {kind}")
        if mn is not None and mn not in pool:
            raise LabError(f"the {self.name} scenario needs {kind}; {mn!r} is not one")
        self.lab = lab
        self.topo = lab.topo
        self.mn = mn or pool[0]
        self.progress = progress or lab.progress
        self.dir = out_dir or lab.dir / f"scenario-{self.name}"
        self.dir.mkdir(parents=True, exist_ok=True)


class HandoffScenario(Scenario):
    """Runs the walk in each mode inside one lab and measures every handoff."""

    name = "handoff"

    def __init__(self, lab: Lab, *, mn: str | None = None, modes: Sequence[str] = ("redirect",
                 "draft"), per_mode: int = 20, period_s: float = 2.0,
                 progress: Progress | None = None, out_dir: Path | None = None) -> None:
        super().__init__(lab, mn, progress, out_dir)
        self.address = self.topo.mobile(self.mn).address
        self.prefix = IPv4Network((self.address, 32))
        self.modes = list(modes)
        self.per_mode = per_mode
        self.period_s = period_s
        self.steps = walk(self.topo, self.mn)
        self.plot_files: list[str] = []
        self._owner = address_owner(self.topo)
        self._adjacency = graph(self.topo)

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

    def run(self) -> dict[str, Any]:
        lab = self.lab
        plan = self.plan()
        duration = len(plan) * self.period_s + 4.0
        cn_name = self.topo.service("cn").name
        cn = lab.execs[cn_name]
        mnx = lab.execs[self.mn]
        namespaces = {r: lab.execs[r].pid for r in self.routers}
        self.progress(f"handoff scenario: {len(plan)} handoffs of {self.mn} "
                      f"({', '.join(self.modes)}), one every {self.period_s:.1f}s, "
                      f"~{duration:.0f}s of traffic")
        records: list[dict[str, Any]] = []
        with contextlib.ExitStack() as stack:
            # Every route, not only the managed range: the IGP routes toward the new AR's
            # loopback tell which next hops count as "forwarding by the new route".
            watcher = stack.enter_context(RouteWatcher(namespaces, IPv4Network("0.0.0.0/0")))
            stack.enter_context(lab.background(
                self.mn, ["iperf3", "-s", "-1", "-p", "5201", "-J", "-i", "0.1"],
                self.dir / "iperf-server.json"))
            wait_until(lambda: self._listening(mnx), 10, "iperf3 server on the MN")
            # Our paced prober, not iputils ping: `ping -i 0.01` sends every 16 ms here.
            ping = stack.enter_context(lab.background(
                cn_name, [sys.executable, "-m", "agents.probe", str(self.address),
                     "--interval", str(PING_INTERVAL_S)], self.dir / "ping.txt"))
            iperf = stack.enter_context(lab.background(
                cn_name, ["iperf3", "-c", str(self.address), "-p", "5201", "-t", f"{duration:.0f}",
                     "-i", "0.1", "-b", IPERF_RATE, "-J", "--get-server-output"],
                self.dir / "iperf.json"))
            t_next = time.time() + 1.5
            for i, (mode, step, measured) in enumerate(plan):
                lab.set_mode(mode)
                wait_for_clock(t_next)
                rec = lab.handoff(self.mn, step.to)
                if not rec.get("ok"):
                    raise LabError(f"handoff {i + 1} to {step.to} failed: {rec.get('error')}")
                rec.update(mode=mode, kind=step.kind, direct_link=step.direct_link,
                           warmup=not measured)
                t_settle = time.monotonic()
                self._settle(watcher, rec["t_attach"])
                t_trace = time.monotonic()
                rec["traceroute"] = self._traceroute(cn)
                records.append(rec)
                self.progress(
                    f"  {i + 1:2d}/{len(plan)} {mode if measured else 'warm-up':8s} "
                    f"{rec['from']}->{step.to} "
                    f"({step.kind}) auth {rec['auth_ms']:.1f} ms; settled in "
                    f"{t_trace - t_settle:.1f}s, traceroute {time.monotonic() - t_trace:.1f}s"
                )
                t_next = max(t_next + self.period_s, time.time() + 0.3)
            t_end = time.time() + 0.5
            wait_for_clock(t_end)
            events = watcher.events()
            ping.interrupt()
            iperf.wait(duration + 15)
        self._keep_logs()
        return self.analyse(records, events, t_end)

    def _keep_logs(self) -> None:
        """The agents' event logs and bgpd's UPDATE logs, beside the scenario's own files."""
        for r in self.topo.routers:
            for name in ("events.jsonl", UPDATES_LOG):
                src = self.lab.rundir(r.name) / name
                if src.exists():
                    shutil.copyfile(src, self.dir / f"{r.name}.{name}")

    def _listening(self, ex: NodeExec) -> bool:
        return ":5201" in ex.run(["ss", "-ltn"]).stdout

    def _settle(self, watcher: RouteWatcher, t0: float) -> None:
        """Wait until no route for the MN's /32 changed for a while (BGP has converged)."""
        def quiet() -> bool:
            evs = [e for e in watcher.events() if e.dst == self.prefix and e.ts >= t0]
            last = max((e.ts for e in evs), default=t0)
            return time.time() - last >= SETTLE_QUIET_S

        with contextlib.suppress(LabError):
            wait_until(quiet, SETTLE_TIMEOUT_S, "routes to settle", 0.05)

    def _traceroute(self, cn: NodeExec) -> list[str | None]:
        out = cn.run(["traceroute", "-n", "-q", "1", "-w", "1", "-m", "12",
                      str(self.address)], timeout=20).stdout
        hops = measure.parse_traceroute(out)
        names: list[str | None] = []
        for h in hops:
            if h is None:
                names.append(None)
            elif h == self.address:
                names.append(self.mn)
            else:
                names.append(self._owner.get(h, str(h)))
        return names

    # --- analysis -------------------------------------------------------------------------

    def analyse(self, records: list[dict[str, Any]], events: list[measure.RouteEvent],
                t_end: float) -> dict[str, Any]:
        replies = measure.parse_ping((self.dir / "ping.txt").read_text(errors="replace"))
        rx: dict[str, list[measure.BgpRx]] = {}
        for r in self.topo.routers:
            logfile = self.dir / f"{r.name}.{UPDATES_LOG}"
            if logfile.exists():
                rx[r.name] = measure.parse_bgpd_log(logfile.read_text(errors="replace"))
        cores = [n.name for n in self.topo.by_role(Role.CORE)]
        ar_events = {a.name: read_events(self.dir / f"{a.name}.events.jsonl")
                     for a in self.topo.by_role(Role.AR)}
        out: list[dict[str, Any]] = []
        for i, rec in enumerate(records):
            t_auth = float(rec["t_auth_sent"])
            w0 = float(rec["t_attach"]) - 0.3
            w1 = float(records[i + 1]["t_attach"]) - 0.3 if i + 1 < len(records) else t_end
            interruption, lost = measure.ping_window(replies, w0, w1, PING_INTERVAL_S)
            path = [h for h in rec["traceroute"] if h is not None]
            routers = [h for h in path if h in self.topo.nodes and self.topo.nodes[h].is_router]
            optimal = (
                bool(path) and path[-1] == self.mn and None not in rec["traceroute"]
                and measure.is_shortest_path(routers, self._adjacency,
                                             self.topo.service("cn").name, rec["to"])
            )
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
            })
        iperf = self._iperf()
        measured = [h for h in out if not h["warmup"]]
        for h, rec in zip(out, records, strict=True):
            h["t_attach"] = rec["t_attach"]
        self.plot_files = self._plots(replies, out)
        return {"scenario": "handoff", "topology": self.topo.name, "mn": self.mn,
                "modes": self.modes, "period_s": self.period_s, "handoffs": measured,
                "warmup_handoffs": [h for h in out if h["warmup"]],
                "iperf": iperf, "summary": summarise(measured), "plots": self.plot_files,
                "first_contact": summarise([{**h, "mode": "warm-up"} for h in out
                                            if h["warmup"]])}

    def _settled(self, events: list[measure.RouteEvent], router: str, t0: float,
                 t1: float, new_ar: IPv4Address) -> float:
        """When the router's forwarding for the /32 became, for good, forwarding by the new
        route: its final state, or a host route whose next hops are those of the IGP route
        toward the new AR's loopback (the new AR's /32, resolved recursively). A /32 that
        ends absent leaves forwarding to the covering route, which the path check verifies.
        The redirect's temporary route (its own metric) never counts.
        """
        ignore = frozenset({REDIRECT_METRIC})
        final = measure.final_state(events, router, self.prefix, t1, ignore)
        toward = measure.final_state(events, router, IPv4Network((new_ar, 32)), t1,
                                     frozenset()) or frozenset()
        table: dict[int, frozenset[str]] = {}
        ok_since: float | None = None
        for e in sorted((e for e in events if e.node == router and e.dst == self.prefix
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
        if not any(e.node == router and e.dst == self.prefix and e.ts <= t1 for e in events):
            return t0  # never had a host route: the covering route was right all along
        return ok_since if ok_since is not None else t1

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
        timeline = measure.ping_timeline(replies, PING_INTERVAL_S)
        return [
            str(plots.handoff_timeline(timeline, handoffs, self.dir / "handoff-timeline.png")),
            str(plots.interruption_cdf([h for h in handoffs if not h["warmup"]],
                                       self.dir / "interruption-cdf.png")),
        ]

    def _iperf(self) -> dict[str, Any]:
        try:
            doc = json.loads((self.dir / "iperf.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            return {"survived": False, "max_stall_ms": None, "mean_mbps": 0.0,
                    "error": f"no iperf3 result: {exc}"}
        try:
            return measure.iperf_summary(doc)
        except measure.MeasureError as exc:
            return {"survived": False, "max_stall_ms": None, "mean_mbps": 0.0,
                    "error": str(exc)}


def wait_for_clock(t: float) -> None:
    """Pace the walk: wait until wall-clock time t (a schedule, not a guess at readiness)."""
    while (left := t - time.time()) > 0:
        time.sleep(min(left, 0.05))


def summarise(handoffs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    keys = sorted({(h["mode"], h["kind"]) for h in handoffs})
    for mode, kind in [*keys, *((m, "all") for m in sorted({h["mode"] for h in handoffs}))]:
        hs = [h for h in handoffs if h["mode"] == mode and (kind == "all" or h["kind"] == kind)]
        rows.append({
            "mode": mode, "kind": kind, "n": len(hs),
            "interruption_ms_p50": _pct([h["interruption_ms"] for h in hs], 0.5),
            "interruption_ms_p95": _pct([h["interruption_ms"] for h in hs], 0.95),
            "reroute_ms_p50": _pct([h["reroute_ms"] for h in hs], 0.5),
            "reroute_ms_p95": _pct([h["reroute_ms"] for h in hs], 0.95),
            "auth_ms_p50": _pct([h["auth_ms"] for h in hs], 0.5),
            "auth_ms_p95": _pct([h["auth_ms"] for h in hs], 0.95),
            "ping_lost": sum(h["ping_lost"] for h in hs),
            "core_updates_max": max((h["core_updates"] for h in hs), default=0),
            "path_optimal": sum(1 for h in hs if h["path_optimal"]),
        })
    return rows


def table(result: dict[str, Any]) -> str:
    head = (f"{'mode':9s} {'kind':14s} {'n':>3s} {'interr p50/p95 ms':>18s} "
            f"{'reroute p50/p95 ms':>19s} {'auth p50/p95':>13s} {'lost':>5s} "
            f"{'core upd':>8s} {'optimal':>8s}")
    lines = [head, "-" * len(head)]
    for r in result["summary"]:
        lines.append(
            f"{r['mode']:9s} {r['kind']:14s} {r['n']:3d} "
            f"{r['interruption_ms_p50']:8.1f}/{r['interruption_ms_p95']:<9.1f} "
            f"{r['reroute_ms_p50']:8.1f}/{r['reroute_ms_p95']:<10.1f} "
            f"{r['auth_ms_p50']:6.1f}/{r['auth_ms_p95']:<6.1f} {r['ping_lost']:5d} "
            f"{r['core_updates_max']:8d} {r['path_optimal']:4d}/{r['n']:<3d}"
        )
    ip = result["iperf"]
    stall = ip.get("max_stall_ms")
    lines.append(
        f"iperf3 TCP CN->MN: survived={ip.get('survived')} "
        f"max_stall={stall if stall is None else round(stall)} ms "
        f"mean={ip.get('mean_mbps', 0):.1f} Mbit/s"
    )
    return "\n".join(lines)

