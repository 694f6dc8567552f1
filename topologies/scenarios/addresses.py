"""`flatarch scenario addresses`: a DHCP MN through attach, moves, a relayed renewal, rotation
with a long-lived TCP connection, release, and the remote-renewal limit (draft 2.3), with
every router's host routes counted from netlink over the whole run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, Self

from topologies.analysis import measure
from topologies.lab.daemons import LabError, wait_until
from topologies.lab.lab import Lab, Progress
from topologies.model import Topology, fqdn
from topologies.scenarios import traffic
from topologies.scenarios.base import ROUTES, RunDir, Scenario, read_events, wait_for_clock
from topologies.scenarios.registry import register
from topologies.scenarios.routewatch import RouteWatcher

LONG_PORT, SHORT_PORT = 5201, 5202
IPERF_RATE = "2M"


def counted(ev: measure.RouteEvent) -> bool:
    """A host route that is routing state for mobility: a /32 not on an access link.

    The route an AR keeps on its access link to an MN attached there exists in any design;
    the ones learned through BGP (and redirect tunnels) are what the draft warns about."""
    return ev.dst.prefixlen == 32 and off_access_link(ev)


def off_access_link(ev: measure.RouteEvent) -> bool:
    """Not (only) an AR's route onto its access link: routing state that mobility made."""
    return not all(h.startswith("dev:") and h.endswith("-acc") for h in ev.nexthops)


def host_route_series(events: list[measure.RouteEvent], t0: float,
                      routers: list[str]) -> list[dict[str, Any]]:
    """[{t, router, count}]: every router at t=0, then each change of its /32 count."""
    present: dict[str, dict[tuple[str, int], bool]] = {r: {} for r in routers}
    counts = {r: 0 for r in routers}
    out: list[dict[str, Any]] = []
    for ev in sorted(events, key=lambda e: e.ts):
        if ev.node not in present:
            continue
        table = present[ev.node]
        key = (str(ev.dst), ev.metric)
        if ev.kind == "add":
            table[key] = counted(ev)
        else:
            table.pop(key, None)
        n = len({k[0] for k, c in table.items() if c})
        if n != counts[ev.node] or ev.ts <= t0:
            counts[ev.node] = n
            out.append({"t": round(max(ev.ts - t0, 0.0), 3), "router": ev.node, "count": n})
    # One row per router at t=0 whatever the dump held, so every series has a start.
    seen = {(row["router"]) for row in out if row["t"] == 0.0}
    out += [{"t": 0.0, "router": r, "count": 0} for r in routers if r not in seen]
    return sorted(out, key=lambda row: (row["t"], row["router"]))


def by_phase(tot: list[tuple[float, int]], phases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The AS-wide host-route count at the end of each phase (just before the next)."""
    out = []
    for i, p in enumerate(phases):
        end = phases[i + 1]["t"] if i + 1 < len(phases) else float("inf")
        before = [n for t, n in tot if t < end]
        out.append({"phase": p["phase"], "t": p["t"], "host_routes": before[-1] if before
                    else 0})
    return out


def totals(series: list[dict[str, Any]]) -> list[tuple[float, int]]:
    """The AS-wide host-route count after each change."""
    now: dict[str, int] = {}
    out: list[tuple[float, int]] = []
    for row in series:
        now[row["router"]] = row["count"]
        out.append((row["t"], sum(now.values())))
    return out


@register
class AddressesScenario(Scenario):
    name = "addresses"
    help = "a DHCP MN through moves, a relayed renewal, rotation, release, the renewal limit"
    dhcp_mn = True

    def __init__(self, lab: Lab, *, mn: str | None = None, progress: Progress | None = None,
                 out_dir: Path | None = None) -> None:
        super().__init__(lab, mn, progress, out_dir)
        self.home = self.topo.mobile(self.mn).home
        self.cn = self.topo.service("cn")
        self.cn_address = str(self.cn.interfaces[0].address)
        self.phases: list[dict[str, Any]] = []
        self.t0 = 0.0

    @classmethod
    def from_args(cls, lab: Lab, args: argparse.Namespace, out_dir: Path) -> Self:
        return cls(lab, out_dir=out_dir)

    # --- helpers ---------------------------------------------------------------------------

    def _mn(self, req: dict[str, Any]) -> dict[str, Any]:
        answer = self.lab.control(self.mn).request(req, timeout=30)
        if not answer.get("ok"):
            raise LabError(f"{self.mn} {req.get('cmd')}: {answer.get('error')}")
        return answer

    def _phase(self, what: str, **fields: Any) -> None:
        t = time.time() - self.t0
        self.phases.append({"t": round(t, 3), "phase": what, **fields})
        self.note(phases=self.phases)
        detail = " ".join(f"{k}={v}" for k, v in fields.items())
        self.progress(f"  {t:6.1f}s {what} {detail}")

    def _status(self, ar: str) -> dict[str, Any]:
        return dict(json.loads((self.lab.rundir(ar) / "agent.status.json").read_text()))

    def _neighbours(self, ar: str) -> tuple[str, str]:
        """An AR in the same cluster as ``ar`` and one in another cluster."""
        cl = self.topo.cluster_of(ar)
        same = next(a for a in cl.ars if a != ar)
        other = next(c for c in self.topo.clusters if ar not in c.ars and same not in c.ars)
        return same, other.ars[0]

    def _move(self, ar: str) -> dict[str, Any]:
        rec = self.lab.handoff(self.mn, ar)
        if not rec.get("ok") or rec.get("not_rerouted"):
            raise LabError(f"handoff of {self.mn} to {ar}: {rec.get('error') or rec}")
        return rec

    def _wait(self, pred: Callable[[], bool], timeout: float, what: str) -> float:
        t = time.monotonic()
        wait_until(pred, timeout, what, 0.2)
        return time.monotonic() - t

    def _no_host_routes(self, watcher: RouteWatcher, routers: list[str], base: int) -> bool:
        series = host_route_series(watcher.events(), self.t0, routers)
        tot = totals(series)
        return bool(tot) and tot[-1][1] <= base

    # --- the run ------------------------------------------------------------------------------

    def measure(self) -> None:
        lab, topo = self.lab, self.topo
        routers = [n.name for n in topo.routers]
        lease = topo.dhcp.lease_s
        limit = topo.dhcp.remote_renewals
        intra, inter = self._neighbours(self.home)
        inter_peer = next(a for a in topo.cluster_of(inter).ars if a != inter)
        self.progress(f"addresses scenario: {self.mn} from {self.home} -> {intra} -> {inter}, "
                      f"rotation, release, then {inter_peer} until the remote-renewal limit "
                      f"({limit} renewals of {lease} s leases)")
        with contextlib.ExitStack() as stack:
            watcher = self.watch_routes(stack, topo.managed)
            stack.callback(self.keep_files, [*routers, self.mn], ["events.jsonl"])
            self.t0 = watcher.started_at or time.time()
            base = totals(host_route_series(watcher.events(), self.t0, routers))[-1][1]
            a1 = str(IPv4Address(self._mn({"cmd": "status"})["address"]))
            self.note(t0=self.t0, base=base, a1=a1)
            self._phase("attached at home", ar=self.home, address=str(a1))
            if lab.radio is not None and lab.radio.where.get(self.mn) != self.home:
                self._move(self.home)
            stack.enter_context(traffic.iperf_server(
                lab, self.cn.name, self.dir / "iperf-server.json", LONG_PORT, once=False))
            stack.enter_context(traffic.iperf_server(
                lab, self.cn.name, self.dir / "iperf-short-server.json", SHORT_PORT,
                once=False, interval_s=None))
            long_s = 30.0
            iperf = stack.enter_context(traffic.iperf_client(
                lab, self.mn, self.cn_address, self.dir / "iperf-long.json", long_s, IPERF_RATE,
                LONG_PORT))
            self._phase("long-lived TCP started", source=str(a1))
            wait_for_clock(time.time() + 1.5)  # the timeline's pause
            self._move(intra)
            self._phase("moved, intra-cluster", ar=intra)
            wait_for_clock(time.time() + 2.0)  # the timeline's pause
            self._move(inter)
            self._phase("moved, inter-cluster", ar=inter)
            # The old address is renewed through the new AR, option 82 naming the MN.
            home_status: dict[str, Any] = {}

            def relayed() -> bool:
                home_status.clear()
                home_status.update(self._status(self.home))
                return any(r.get("remote_id") == self._identity()
                           for r in home_status.get("dhcp", {}).get("option82_seen", []))

            waited = self._wait(relayed, lease + 10, "a relayed renewal at the owning AR")
            seen82 = [r for r in home_status["dhcp"]["option82_seen"]
                      if r.get("remote_id") == self._identity()]
            self._phase("renewal relayed with option 82", owner=self.home,
                        remote_id=seen82[-1]["remote_id"], circuit_id=seen82[-1]["circuit_id"],
                        waited_s=round(waited, 1))
            rot = self._mn({"cmd": "rotate"})
            a2 = str(IPv4Address(rot["address"]))
            self.note(a2=a2)
            self._phase("rotated", new=str(a2), held=rot["addresses"])
            new_src = self._short_connection()
            self.note(new_src=new_src)
            in_use = self._mn({"cmd": "in_use"})["in_use"]
            self._phase("new connection", source=new_src, in_use=in_use)
            iperf.wait(long_s + 15)
            self._phase("long-lived TCP ended")
            self._wait(lambda: str(a1) not in self._mn({"cmd": "status"})["addresses"], 10,
                       f"{a1} released")
            self._phase("old address released", address=str(a1))
            self._wait(lambda: self._no_host_routes(watcher, routers, base), 15,
                       "host routes back to the pool-only baseline")
            self._phase("host routes back to baseline")
            # The limit: the rotated address, renewed from a neighbour, is refused in the end.
            self._move(inter_peer)
            self._phase("moved, intra-cluster", ar=inter_peer, holding=str(a2))
            events_path = lab.rundir(self.mn) / "events.jsonl"

            # Renewals pace at the server's T1 (half the lease), so the first address may
            # reach the limit through the first foreign AR before its connection ends: the
            # limit is shown by whichever borrowed address is refused first.
            def naks() -> list[dict[str, Any]]:
                return [e for e in read_events(events_path)
                        if e.get("ev") == "dhcp_nak" and e.get("addr") in (str(a1), str(a2))]

            waited = self._wait(lambda: bool(naks()), lease * (limit + 2) + 10,
                                f"NAK for {a1} or {a2}")
            nak_ev = naks()[0]
            refused = str(nak_ev["addr"])
            self._phase("renewal refused (NAK)", address=refused, message=nak_ev.get("message"),
                        waited_s=round(waited, 1))
            held: list[str] = []

            def fresh() -> bool:
                held[:] = self._mn({"cmd": "status"})["addresses"]
                return bool(held) and refused not in held and str(a2) not in held

            self._wait(fresh, 15, "a fresh lease after the NAK")
            a3 = held[0]
            self._phase("fresh lease", address=a3, owner=inter_peer)
            self._wait(lambda: self._no_host_routes(watcher, routers, base), 15,
                       "host routes back to the pool-only baseline")
            self._phase("host routes back to baseline")
            wait_for_clock(time.time() + 1.0)  # the timeline's pause
            self.note(t_end=time.time())

    def _identity(self) -> str:
        return fqdn("mn", self.mn)

    def _short_connection(self) -> str:
        """A new TCP connection from the MN, as an application would open one: its source."""
        res = self.lab.execs[self.mn].run(
            ["iperf3", "-c", self.cn_address, "-p", str(SHORT_PORT), "-t", "1", "-J"],
            timeout=20)
        try:
            doc = json.loads(res.stdout)
            return str(doc["start"]["connected"][0]["local_host"])
        except (ValueError, KeyError, IndexError) as exc:
            raise LabError(f"short iperf3 from {self.mn}: {exc}: {res.stderr[-200:]}") from None

    @classmethod
    def analyse(cls, out_dir: Path) -> dict[str, Any]:
        run = RunDir.open(out_dir)
        m = run.measured
        missing = [k for k in ("t0", "base", "a1", "a2", "new_src", "t_end") if k not in m]
        if missing:
            raise measure.MeasureError(f"{out_dir}: the measurement did not finish "
                                       f"(no {', '.join(missing)})")
        try:
            events = measure.parse_route_events((out_dir / ROUTES).read_text())
        except OSError as exc:
            raise measure.MeasureError(f"{out_dir}: no route events: {exc}") from None
        events = [e for e in events if e.ts <= float(m["t_end"])]
        return analyse_addresses(run.topo, str(run.params["mn"]), out_dir, events,
                                 list(m.get("phases", [])), float(m["t0"]), int(m["base"]),
                                 str(m["a1"]), str(m["a2"]), str(m["new_src"]))

    @staticmethod
    def table(result: dict[str, Any]) -> str:
        return table(result)


def analyse_addresses(topo: Topology, mn: str, out_dir: Path,
                      events: list[measure.RouteEvent], phase_list: list[dict[str, Any]],
                      t0: float, base: int, a1: str, a2: str, new_src: str) -> dict[str, Any]:
    routers = [n.name for n in topo.routers]
    series = host_route_series(events, t0, routers)
    tot = totals(series)
    try:
        iperf = measure.iperf_summary(json.loads((out_dir / "iperf-long.json").read_text()))
    except (OSError, ValueError, measure.MeasureError) as exc:
        iperf = {"survived": False, "error": f"no iperf3 result: {exc}"}
    phases = {p["phase"]: p for p in phase_list}
    from topologies.analysis import plots

    plot_files = [str(plots.host_routes(series, phase_list, out_dir / "host-routes.png"))]
    return {
        "scenario": "addresses",
        "topology": topo.name,
        "mn": mn,
        "dhcp_client": "udhcpc",
        "lease_s": topo.dhcp.lease_s,
        "remote_renewals_limit": topo.dhcp.remote_renewals,
        "addresses": {"first": str(a1), "rotated": str(a2)},
        "option82_seen": "renewal relayed with option 82" in phases,
        "option82": {k: v for k, v in phases.get("renewal relayed with option 82", {}).items()
                     if k in ("owner", "remote_id", "circuit_id")},
        "renew_limit_nak": "renewal refused (NAK)" in phases,
        "new_connection_source": new_src,
        "new_connection_used_new_address": new_src == str(a2),
        "old_tcp_survived_rotation": bool(iperf.get("survived")),
        "iperf": iperf,
        "phases": phase_list,
        "host_routes": series,
        "host_routes_total": [{"t": t, "count": n} for t, n in tot],
        "host_routes_by_phase": by_phase(tot, phase_list),
        "host_routes_baseline": base,
        "host_routes_peak": max((n for _, n in tot), default=0),
        "host_routes_end": tot[-1][1] if tot else 0,
        "routers": len(routers),
        "plots": plot_files,
    }


def table(result: dict[str, Any]) -> str:
    lines = [f"{'t (s)':>7}  phase"]
    lines.append("-" * 72)
    for p in result["phases"]:
        extra = " ".join(f"{k}={v}" for k, v in p.items() if k not in ("t", "phase"))
        lines.append(f"{p['t']:7.1f}  {p['phase']}  {extra}")
    lines.append("")
    lines.append(
        f"host routes (all {result['routers']} routers): baseline "
        f"{result['host_routes_baseline']}, peak {result['host_routes_peak']}, "
        f"end {result['host_routes_end']}")
    lines.append(
        f"option 82 seen at the owner: {result['option82_seen']}; remote-renewal NAK: "
        f"{result['renew_limit_nak']}; old TCP survived rotation: "
        f"{result['old_tcp_survived_rotation']}; new connection from "
        f"{result['new_connection_source']}")
    return "\n".join(lines)
