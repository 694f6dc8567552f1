"""`flatarch scenario addresses`: a DHCP MN through attach, moves, a relayed renewal, rotation
with a long-lived TCP connection, release, and the remote-renewal limit (draft 2.3), with
every router's host routes counted from netlink over the whole run. With `--family ipv6` or
`both` the MN also takes its /64s by DHCPv6, and each step is made and measured for them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any, Self

from topologies.analysis import measure
from topologies.lab.daemons import LabError, wait_until
from topologies.lab.lab import Lab, Progress
from topologies.model import Topology, fqdn
from topologies.scenarios import traffic
from topologies.scenarios.base import (
    FAMILIES,
    ROUTES,
    RunDir,
    Scenario,
    read_events,
    wait_for_clock,
)
from topologies.scenarios.handoff import add_family_argument, dual_stack_topology
from topologies.scenarios.registry import register
from topologies.scenarios.routewatch import RouteWatcher

LONG_PORT, SHORT_PORT = 5201, 5202
LONG6_PORT, SHORT6_PORT = 5203, 5204  # the IPv6 flows' own servers: iperf3 runs one test each
IPERF_RATE = "2M"


def counted(ev: measure.RouteEvent) -> bool:
    """A host route that is routing state for mobility: a /32 not on an access link.

    The route an AR keeps on its access link to an MN attached there exists in any design;
    the ones learned through BGP (and redirect tunnels) are what the draft warns about."""
    return ev.dst.version == 4 and ev.dst.prefixlen == 32 and off_access_link(ev)


def counted6(ev: measure.RouteEvent) -> bool:
    """The same for IPv6 (issue 18): an MN's /64 (a pool is a /56), not on an access link."""
    return ev.dst.version == 6 and ev.dst.prefixlen == 64 and off_access_link(ev)


def _first(prefix: str) -> str:
    """The address an MN holds from a /64: its first (agents/delegations.py)."""
    return str(IPv6Network(prefix).network_address + 1)


def off_access_link(ev: measure.RouteEvent) -> bool:
    """Not (only) an AR's route onto its access link: routing state that mobility made."""
    return not all(h.startswith("dev:") and h.endswith("-acc") for h in ev.nexthops)


def host_route_series(events: list[measure.RouteEvent], t0: float, routers: list[str],
                      count: Callable[[measure.RouteEvent], bool] = counted
                      ) -> list[dict[str, Any]]:
    """[{t, router, count}]: every router at t=0, then each change of its /32 (``count``:
    its /64) count."""
    present: dict[str, dict[tuple[str, int], bool]] = {r: {} for r in routers}
    counts = {r: 0 for r in routers}
    out: list[dict[str, Any]] = []
    for ev in sorted(events, key=lambda e: e.ts):
        if ev.node not in present:
            continue
        table = present[ev.node]
        key = (str(ev.dst), ev.metric)
        if ev.kind == "add":
            table[key] = count(ev)
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
                 out_dir: Path | None = None, families: list[str] | None = None) -> None:
        super().__init__(lab, mn, progress, out_dir)
        self.home = self.topo.mobile(self.mn).home
        self.cn = self.topo.service("cn")
        self.cn_address = str(self.cn.interfaces[0].address)
        # IPv4 carries the MN's first lease (DHCPv6 follows it), so it always runs.
        self.families = families or ["ipv4"]
        self.six = "ipv6" in self.families
        bb = self.topo.backbone6
        if self.six and (bb is None or self.mn not in self.topo.dhcp6_mobiles):
            raise LabError(f"--family ipv6: {self.mn} takes no /64 by DHCPv6 in "
                           f"{self.topo.name} (dhcp.ipv6 on a dual-stack backbone)")
        self.cn_address6 = (str(bb.end(self.cn.name, self.cn.interfaces[0].peer).ip)
                            if self.six and bb is not None else "")
        self.phases: list[dict[str, Any]] = []
        self.t0 = 0.0

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        add_family_argument(parser, "scenario")

    @classmethod
    def topology_for(cls, args: argparse.Namespace, out_dir: Path) -> Path:
        return dual_stack_topology(args, out_dir, dhcp_mn=True, delegated=True)

    @classmethod
    def from_args(cls, lab: Lab, args: argparse.Namespace, out_dir: Path) -> Self:
        return cls(lab, out_dir=out_dir, families=FAMILIES[getattr(args, "family", "ipv4")])

    def params(self) -> dict[str, Any]:
        return {"mn": self.mn, "families": self.families}

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

    def _no_host_routes(self, watcher: RouteWatcher, routers: list[str], base: int,
                        count: Callable[[measure.RouteEvent], bool] = counted) -> bool:
        series = host_route_series(watcher.events(), self.t0, routers, count)
        tot = totals(series)
        return bool(tot) and tot[-1][1] <= base

    def _prefixes6(self) -> list[str]:
        return list(self._mn({"cmd": "status"}).get("prefixes6") or [])

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
        within = [str(topo.managed)]
        if self.six and topo.plan6 is not None:
            within.append(str(topo.plan6.block("addressing.ipv6.managed").network))
        with contextlib.ExitStack() as stack:
            watcher = self.watch_routes(stack, within)
            stack.callback(self.keep_files, [*routers, self.mn], ["events.jsonl"])
            self.t0 = watcher.started_at or time.time()
            base = totals(host_route_series(watcher.events(), self.t0, routers))[-1][1]
            base6 = totals(host_route_series(watcher.events(), self.t0, routers,
                                             counted6))[-1][1]
            a1 = str(IPv4Address(self._mn({"cmd": "status"})["address"]))
            self.note(t0=self.t0, base=base, a1=a1, base6=base6)
            self._phase("attached at home", ar=self.home, address=str(a1))
            if lab.radio is not None and lab.radio.where.get(self.mn) != self.home:
                self._move(self.home)
            p1 = ""
            if self.six:
                self._wait(lambda: bool(self._prefixes6()), 20, f"{self.mn}'s first /64")
                p1 = self._prefixes6()[0]
                self.note(p1=p1)
                self._phase("delegated at home", ar=self.home, prefix=p1)
            stack.enter_context(traffic.iperf_server(
                lab, self.cn.name, self.dir / "iperf-server.json", LONG_PORT, once=False))
            stack.enter_context(traffic.iperf_server(
                lab, self.cn.name, self.dir / "iperf-short-server.json", SHORT_PORT,
                once=False, interval_s=None))
            # The stream must end before its address can reach the remote-renewal limit: the
            # first relayed renewal may come right after the move (at 3.7 s), and the owner
            # ends the lease at the (limit + 1)-th, one T1 (half the lease) apart.
            long_s = min(30.0, 3.0 + limit * lease / 2)
            iperf = stack.enter_context(traffic.iperf_client(
                lab, self.mn, self.cn_address, self.dir / "iperf-long.json", long_s, IPERF_RATE,
                LONG_PORT))
            self._phase("long-lived TCP started", source=str(a1))
            iperf6 = None
            if self.six:
                for port, name in ((LONG6_PORT, "iperf6-server.json"),
                                   (SHORT6_PORT, "iperf6-short-server.json")):
                    stack.enter_context(traffic.iperf_server(
                        lab, self.cn.name, self.dir / name, port, once=False,
                        interval_s=None if port == SHORT6_PORT else traffic.IPERF_INTERVAL_S))
                iperf6 = stack.enter_context(traffic.iperf_client(
                    lab, self.mn, self.cn_address6, self.dir / "iperf6-long.json", long_s,
                    IPERF_RATE, LONG6_PORT))
                self._phase("long-lived IPv6 TCP started", source=_first(p1))
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
            if self.six:
                # The /64 too: dhclient again with the new session's proof, its Rebind relayed
                # by the visited AR with the Remote-ID (RFC 4649) naming the MN.
                seen6: list[dict[str, Any]] = []

                def relayed6() -> bool:
                    seen6[:] = [r for r in self._status(self.home).get("dhcp6", {})
                                .get("remote_id_seen", []) if r.get("remote_id")
                                == self._identity()]
                    return bool(seen6)

                waited = self._wait(relayed6, lease + 10, "a relayed DHCPv6 renewal")
                self._phase("renewal relayed with Remote-ID (DHCPv6)", owner=self.home,
                            remote_id=seen6[-1]["remote_id"], relay=seen6[-1]["relay"],
                            message=seen6[-1]["type"], waited_s=round(waited, 1))
            rot = self._mn({"cmd": "rotate"})
            a2 = str(IPv4Address(rot["address"]))
            self.note(a2=a2)
            self._phase("rotated", new=str(a2), held=rot["addresses"])
            new_src = self._short_connection()
            self.note(new_src=new_src)
            in_use = self._mn({"cmd": "in_use"})["in_use"]
            self._phase("new connection", source=new_src, in_use=in_use)
            p2 = new_src6 = ""
            if self.six:
                rot6 = self._mn({"cmd": "rotate", "family": "ipv6"})
                p2 = str(rot6["prefix6"])
                self._phase("rotated (IPv6)", new=p2, held=rot6["prefixes6"])
                new_src6 = self._short_connection(self.cn_address6, SHORT6_PORT)
                self.note(p2=p2, new_src6=new_src6)
                self._phase("new IPv6 connection", source=new_src6)
            iperf.wait(long_s + 15)
            self._phase("long-lived TCP ended")
            if iperf6 is not None:
                iperf6.wait(long_s + 15)
                self._phase("long-lived IPv6 TCP ended")
            self._wait(lambda: str(a1) not in self._mn({"cmd": "status"})["addresses"], 10,
                       f"{a1} released")
            self._phase("old address released", address=str(a1))
            self._wait(lambda: self._no_host_routes(watcher, routers, base), 15,
                       "host routes back to the pool-only baseline")
            self._phase("host routes back to baseline")
            if self.six:
                self._wait(lambda: p1 not in self._prefixes6(), 10, f"{p1} released")
                self._phase("old prefix released", prefix=p1)
                self._wait(lambda: self._no_host_routes(watcher, routers, base6, counted6), 15,
                           "IPv6 host routes back to the pool-only baseline")
                self._phase("IPv6 host routes back to baseline")
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
            if self.six:
                self._limit6(events_path, p1, p2, lease * (limit + 2) + 10, inter_peer)
                self._wait(lambda: self._no_host_routes(watcher, routers, base6, counted6), 15,
                           "IPv6 host routes back to the pool-only baseline")
                self._phase("IPv6 host routes back to baseline")
            wait_for_clock(time.time() + 1.0)  # the timeline's pause
            self.note(t_end=time.time())

    def _limit6(self, events_path: Path, p1: str, p2: str, timeout: float, at: str) -> None:
        """The owner ends a /64 renewed through relays past the limit (lifetimes 0, RFC 8415
        18.3.4); the MN then takes a fresh one from the AR it is on."""
        def ended() -> list[dict[str, Any]]:
            return [e for e in read_events(events_path) if e.get("ev") == "delegation_lost"
                    and e.get("prefix") in (p1, p2)]

        waited = self._wait(lambda: bool(ended()), timeout, f"lifetimes 0 for {p1} or {p2}")
        lost = ended()[0]
        self._phase("renewal refused (lifetimes 0)", prefix=lost["prefix"],
                    reason=lost.get("reason"), waited_s=round(waited, 1))
        held: list[str] = []

        def fresh() -> bool:
            held[:] = self._prefixes6()
            return bool(held) and lost["prefix"] not in held and p2 not in held

        self._wait(fresh, 15, "a fresh /64 after lifetimes 0")
        self.note(p3=held[0])
        self._phase("fresh prefix", prefix=held[0], owner=at)

    def _identity(self) -> str:
        return fqdn("mn", self.mn)

    def _short_connection(self, address: str | None = None, port: int = SHORT_PORT) -> str:
        """A new TCP connection from the MN, as an application would open one: its source."""
        res = self.lab.execs[self.mn].run(
            ["iperf3", "-c", address or self.cn_address, "-p", str(port), "-t", "1", "-J"],
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
        result = analyse_addresses(run.topo, str(run.params["mn"]), out_dir, events,
                                   list(m.get("phases", [])), float(m["t0"]), int(m["base"]),
                                   str(m["a1"]), str(m["a2"]), str(m["new_src"]))
        families = list(run.params.get("families") or ["ipv4"])
        result["families"] = families
        if "ipv6" in families:
            missing = [k for k in ("p1", "p2", "new_src6", "base6") if k not in m]
            if missing:
                raise measure.MeasureError(f"{out_dir}: the IPv6 steps did not finish "
                                           f"(no {', '.join(missing)})")
            result["ipv6"] = analyse_ipv6(run.topo, out_dir, events, result["phases"],
                                          float(m["t0"]), int(m["base6"]), m)
        return result

    @staticmethod
    def table(result: dict[str, Any]) -> str:
        return table(result)


def _family_run(topo: Topology, out_dir: Path, events: list[measure.RouteEvent], t0: float,
                count: Callable[[measure.RouteEvent], bool], iperf_file: str
                ) -> tuple[list[dict[str, Any]], list[tuple[float, int]], dict[str, Any]]:
    """One family's host-route series, its AS-wide totals, and its long-lived stream."""
    series = host_route_series(events, t0, [n.name for n in topo.routers], count)
    try:
        iperf = measure.iperf_summary(json.loads((out_dir / iperf_file).read_text()))
    except (OSError, ValueError, measure.MeasureError) as exc:
        iperf = {"survived": False, "error": f"no iperf3 result: {exc}"}
    return series, totals(series), iperf


def analyse_addresses(topo: Topology, mn: str, out_dir: Path,
                      events: list[measure.RouteEvent], phase_list: list[dict[str, Any]],
                      t0: float, base: int, a1: str, a2: str, new_src: str) -> dict[str, Any]:
    routers = [n.name for n in topo.routers]
    series, tot, iperf = _family_run(topo, out_dir, events, t0, counted, "iperf-long.json")
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


def analyse_ipv6(topo: Topology, out_dir: Path, events: list[measure.RouteEvent],
                 phase_list: list[dict[str, Any]], t0: float, base: int,
                 m: dict[str, Any]) -> dict[str, Any]:
    """The /64s' side of the run (issue 18): DHCPv6 through dhclient, the relayed renewal
    with its Remote-ID, rotation under a long-lived TCP flow, release, the renewal limit,
    and every router's /64 routes off the access links."""
    series, tot, iperf = _family_run(topo, out_dir, events, t0, counted6, "iperf6-long.json")
    phases = {p["phase"]: p for p in phase_list}
    relayed = phases.get("renewal relayed with Remote-ID (DHCPv6)", {})
    new_src, rotated = str(m["new_src6"]), IPv6Network(str(m["p2"]))
    return {
        "family": "ipv6",
        "dhcp_client": "dhclient",
        "prefixes": {"first": str(m["p1"]), "rotated": str(rotated),
                     "fresh": m.get("p3")},
        "remote_id_seen": bool(relayed),
        "remote_id": {k: v for k, v in relayed.items() if k in ("owner", "remote_id",
                                                                "relay", "message")},
        "renew_limit_ended": "renewal refused (lifetimes 0)" in phases,
        "new_connection_source": new_src,
        "new_connection_used_new_prefix": IPv6Address(new_src) in rotated,
        "old_tcp_survived_rotation": bool(iperf.get("survived")),
        "old_prefix_released": "old prefix released" in phases,
        "iperf": iperf,
        "host_routes": series,
        "host_routes_baseline": base,
        "host_routes_peak": max((n for _, n in tot), default=0),
        "host_routes_end": tot[-1][1] if tot else 0,
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
    six = result.get("ipv6")
    if six:
        lines.append(
            f"IPv6 /64 routes: baseline {six['host_routes_baseline']}, peak "
            f"{six['host_routes_peak']}, end {six['host_routes_end']}; Remote-ID seen at the "
            f"owner: {six['remote_id_seen']}; renewal limit ended a /64: "
            f"{six['renew_limit_ended']}; old IPv6 TCP survived rotation: "
            f"{six['old_tcp_survived_rotation']}; new connection from "
            f"{six['new_connection_source']}")
    return "\n".join(lines)
