"""`flatarch scenario faults`: while the CN probes every MN, streams TCP to each, and one MN
keeps handing off, a timeline of faults (daemons killed, DNS servers stopped, links flapped,
an RR and an AR down together), each repaired and then checked: sessions kept (ICMP and TCP),
routes neither stale nor missing. With ``--family ipv6|both`` every provisioned MN is made
dual-stack and its /64 is probed, streamed to and checked the same way (issue 18).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any, Self

from agents.contract import Layout
from topologies.analysis import measure
from topologies.analysis.measure import MeasureError
from topologies.lab import inject
from topologies.lab.daemons import DeadlineError, LabError, wait_until
from topologies.lab.lab import Background, Lab
from topologies.model import Role
from topologies.scenarios import traffic
from topologies.scenarios.base import (
    FAMILIES,
    Progress,
    RunDir,
    Scenario,
    provisioned_address,
    read_events,
    wait_for_clock,
    walk,
)
from topologies.scenarios.baseline import failure_sessions
from topologies.scenarios.handoff import add_family_argument, dual_stack_topology
from topologies.scenarios.progress import Eta
from topologies.scenarios.registry import register

FAULTS = "faults.json"  # per fault: what broke and was repaired when, handoffs, route checks
KINDS = ("bgpd_agg", "bgpd_core", "exabgp_ar", "agent_ar", "named", "unbound",
         "link_agg_core", "link_ar_uplink", "rr_and_ar")
LEAD_S = 1.0  # probes before the fault
HOLD_S = 2.0  # the fault lasts this long (a handoff falls inside it) before its repair
TAIL_S = 1.0  # probes after recovery
RECOVER_S = 60.0  # a repair that has not converged by then is reported as such
TCP_AFTER_S = 5.0  # each fault's TCP streams go on this long after its repair
TCP_S = LEAD_S + HOLD_S + TCP_AFTER_S  # from before the fault to after its repair
TCP_RATE = "4M"  # paced: one stream per MN beside the probes, on 2 cores
V6 = "-v6"  # the IPv6 sessions' tag suffix: probe fail-<tag>-v6-<mn>.txt and its TCP stream


def tcp_file(tag: str, mn: str) -> str:
    """The `iperf3 -J` output of the CN's TCP stream to ``mn`` through fault ``tag``."""
    return f"fail-{tag}-{mn}-tcp.json"


def agent_status(lab: Lab, node: str) -> dict[str, Any]:
    try:
        return dict(json.loads((lab.rundir(node) / Layout.AGENT_STATUS).read_text()))
    except (OSError, ValueError):
        return {}


def route_check(lab: Lab, addresses: dict[str, IPv4Address]) -> tuple[int, int]:
    """(stale, missing) host-route state over every AR, from the agents' status: the AR
    serving an MN attaches it and, away from home, announces its /32; no other AR attaches
    or announces it, and no AR's RIB holds a /32 path for it toward another AR."""
    loop = {a.name: str(a.loopback) for a in lab.topo.by_role(Role.AR)}
    return _route_check(lab, {mn: (str(a), f"{a}/32") for mn, a in addresses.items()},
                        "mobility", loop, lambda here, mn: addresses[mn] in here.pool
                        if here.pool is not None else False)


def route_check6(lab: Lab, prefixes: dict[str, IPv6Network]) -> tuple[int, int]:
    """route_check for the dual-stack MNs' /64s (issue 18): the agents' "prefixes" state and
    the /64's paths, whose next hops are the ARs' IPv6 loopbacks."""
    six = lab.topo.backbone6
    loop = {a.name: str(six.loopbacks[a.name]) for a in lab.topo.by_role(Role.AR)
            if six is not None and a.name in six.loopbacks}
    return _route_check(lab, {mn: (str(p), str(p)) for mn, p in prefixes.items()},
                        "prefixes", loop, lambda here, mn: here.pool6 is not None
                        and prefixes[mn].subnet_of(here.pool6))


def _route_check(lab: Lab, keys: dict[str, tuple[str, str]], state: str,
                 loop: dict[str, str], at_home: Callable[[Any, str], bool]) -> tuple[int, int]:
    """One family's check. ``keys``: per MN, its key in the agents' ``state`` maps and in
    their RIB listing; ``at_home(node, mn)``: the AR's pool covers the MN's route."""
    assert lab.radio is not None
    ars = [a.name for a in lab.topo.by_role(Role.AR)]
    st = {a: agent_status(lab, a) for a in ars}
    stale = missing = 0
    for mn, (key, rib_key) in keys.items():
        here = lab.radio.where.get(mn)
        away = here not in lab.topo.nodes or not at_home(lab.topo.nodes[here], mn)
        mob = st.get(here or "", {}).get(state, {})
        missing += key not in mob.get("attached", {})
        missing += away and key not in mob.get("announced", {})
        for ar in ars:
            m = st[ar].get(state, {})
            if ar != here:
                stale += (key in m.get("attached", {})) + (key in m.get("announced", {}))
            paths = st[ar].get("rib_host_routes", {}).get(rib_key, [])
            stale += sum(1 for hop, _lp in paths if not away or hop != loop.get(here or ""))
    return stale, missing


def prefixes6(topo: Any, mobiles: Iterable[str]) -> dict[str, IPv6Network]:
    """The dual-stack MNs' planned /64s among ``mobiles``."""
    six = topo.backbone6
    return {m: p for m in mobiles if six is not None and m in six.mobiles
            and (p := topo.mobile(m).prefix6) is not None}


def dual_stack_prefixes(topo: Any, mobiles: Iterable[str],
                        families: list[str]) -> dict[str, IPv6Network]:
    """The /64s a run with ``families`` measures: none for IPv4 alone; refused when IPv6 is
    asked for and no MN of ``mobiles`` is dual-stack."""
    if "ipv6" not in families:
        return {}
    out = prefixes6(topo, mobiles)
    if not out:
        raise LabError(f"--family ipv6: no provisioned MN of {topo.name} is dual-stack (a "
                       "dual-stack backbone is needed)")
    return out


def managed6(topo: Any, families: list[str]) -> list[str]:
    """The IPv6 managed range, for a route watcher of a run with ``families`` (else none)."""
    plan6 = topo.plan6
    if "ipv6" not in families or plan6 is None:
        return []
    return [str(plan6.block("addressing.ipv6.managed").network)]


@register
class FaultsScenario(Scenario):
    name = "faults"
    help = "daemons killed, DNS stopped, links flapped under traffic and handoffs; recovery checked"

    def __init__(self, lab: Lab, *, kinds: tuple[str, ...] = KINDS, mn: str | None = None,
                 out_dir: Path | None = None, progress: Progress | None = None,
                 families: list[str] | None = None) -> None:
        unknown = sorted(set(kinds) - set(KINDS))
        if unknown:
            raise LabError(f"unknown fault kinds {unknown} (known: {', '.join(KINDS)})")
        super().__init__(lab, mn, progress, out_dir)
        self.kinds = kinds
        self.mobiles = [m for m in lab.mobiles if m not in self.topo.dhcp_mobiles]
        self.families = families or ["ipv4"]
        self.addresses = {m: provisioned_address(self.topo, m) for m in self.mobiles}
        # The dual-stack MNs' /64s and the address the CN probes in each (its first).
        self.prefixes = dual_stack_prefixes(self.topo, self.mobiles, self.families)
        self.addresses6: dict[str, IPv6Address] = {
            m: p.network_address + 1 for m, p in self.prefixes.items()}
        self._walk = [s.to for s in walk(self.topo, self.mn)]
        self._step = 0
        self._t_start = time.time()

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--kinds", default=",".join(KINDS),
                            help="comma-separated fault kinds, in order (default: all)")
        add_family_argument(parser, "session")

    @classmethod
    def topology_for(cls, args: argparse.Namespace, out_dir: Path) -> Path:
        return dual_stack_topology(args, out_dir, every=True)

    @classmethod
    def from_args(cls, lab: Lab, args: argparse.Namespace, out_dir: Path) -> Self:
        return cls(lab, kinds=tuple(k for k in args.kinds.split(",") if k), out_dir=out_dir,
                   families=FAMILIES[getattr(args, "family", "ipv4")])

    def params(self) -> dict[str, Any]:
        return {"mn": self.mn, "kinds": list(self.kinds), "mobiles": self.mobiles,
                "families": self.families}

    def _sessions(self) -> dict[str, dict[str, IPv4Address | IPv6Address]]:
        """The probed and streamed addresses per tag suffix: "" IPv4, V6 the /64s'."""
        out: dict[str, dict[str, IPv4Address | IPv6Address]] = {}
        if "ipv4" in self.families:
            out[""] = dict(self.addresses)
        if "ipv6" in self.families:
            out[V6] = dict(self.addresses6)
        return out

    def _route_state(self) -> dict[str, dict[str, int]]:
        """Per measured family, the stale and missing host routes now."""
        out: dict[str, dict[str, int]] = {}
        if "ipv4" in self.families:
            stale, missing = route_check(self.lab, self.addresses)
            out["ipv4"] = {"stale": stale, "missing": missing}
        if "ipv6" in self.families:
            stale, missing = route_check6(self.lab, self.prefixes)
            out["ipv6"] = {"stale": stale, "missing": missing}
        return out

    # --- the faults: each returns (node, repair) after breaking something ----------------

    def _serving(self) -> str:
        assert self.lab.radio is not None
        return self.lab.radio.where[self.mn]

    def _parent(self, ar: str) -> str:
        return self.topo.ar_parents(ar)[0]

    def _core(self, agg: str) -> str:
        return next(i.peer for i in self.topo.nodes[agg].interfaces
                    if self.topo.nodes[i.peer].role is Role.CORE)

    def _dns(self, kind: str) -> str:
        return next(n for n, ds in self.lab.daemons.items() if any(d.kind == kind for d in ds))

    def _break(self, kind: str) -> tuple[str, Callable[[], None]]:
        lab, ar = self.lab, self._serving()
        agg = self._parent(ar)
        if kind in ("bgpd_agg", "bgpd_core"):
            node = agg if kind == "bgpd_agg" else self._core(agg)
            inject.kill(lab, node, "bgpd")
            return node, lambda: (inject.start(lab, node, "bgpd"), None)[1]
        if kind == "exabgp_ar":
            inject.kill(lab, ar, "exabgp")
            return ar, lambda: (inject.restart_exabgp(lab, ar), None)[1]
        if kind == "agent_ar":
            inject.kill_agent(lab, ar)  # ExaBGP respawns it: the repair is part of the fault
            return ar, lambda: None
        if kind in ("named", "unbound"):
            node = self._dns(kind)
            inject.daemon(lab, node, kind).stop()
            return node, lambda: (inject.start(lab, node, kind), None)[1]
        if kind == "link_agg_core":
            ifname = inject.link_toward(lab, agg, self._core(agg))
            inject.set_link(lab, agg, ifname, False)
            return agg, lambda: (inject.set_link(lab, agg, ifname, True), None)[1]
        if kind == "link_ar_uplink":
            ifname = inject.link_toward(lab, ar, agg)
            inject.set_link(lab, ar, ifname, False)
            return ar, lambda: (inject.set_link(lab, ar, ifname, True), None)[1]
        # rr_and_ar: the MN's reflector and another AR of its cluster fail together; that
        # AR's MNs move to a sibling at once (radio-loss detection is not modelled).
        victim = next(a for a in self.topo.cluster_of(ar).ars if a != ar)
        links = [i.name for i in self.topo.nodes[victim].interfaces]
        inject.kill(lab, agg, "bgpd")
        for name in links:
            inject.set_link(lab, victim, name, False)
        assert lab.radio is not None
        for mn in self.mobiles:
            if lab.radio.where.get(mn) == victim:
                lab.handoff(mn, ar)

        def repair() -> None:
            for name in links:
                inject.set_link(lab, victim, name, True)
            inject.start(lab, agg, "bgpd")

        return f"{agg}+{victim}", repair

    # --- the run ----------------------------------------------------------------------------

    def _handoff(self, node: str) -> dict[str, Any]:
        """The mover's next step of its walk, skipping the AR under fault."""
        here = self._serving()
        for _ in range(len(self._walk)):
            to = self._walk[self._step % len(self._walk)]
            self._step += 1
            if to != here and to not in node.split("+"):
                break
        t = time.time()
        try:
            rec = self.lab.handoff(self.mn, to)
        except LabError as exc:
            rec = {"ok": False, "error": str(exc)}
        reasons = self._refusals(to, t)
        ok = bool(rec.get("ok")) and not rec.get("not_rerouted")
        if not ok and not reasons:
            reasons = [str(rec.get("error") or "not re-routed")]
        return {"to": to, "t": t, "ok": ok, "reasons": reasons,
                "auth_ms": rec.get("auth_ms")}

    def _retry(self, ar: str) -> bool:
        answer = self.lab.control(self.mn).request({"cmd": "attach", "ar": ar}, timeout=30)
        return bool(answer.get("ok")) and not answer.get("not_rerouted")

    def _refusals(self, ar: str, since: float) -> list[str]:
        """The reasons the AR gave for refusing the mover's addresses and prefixes (its
        'checked' and 'checked6' events)."""
        out: list[str] = []
        for ev in read_events(self.lab.rundir(ar) / Layout.EVENTS):
            if ev.get("ev") in ("checked", "checked6") and float(ev.get("t", 0)) >= since:
                out += [str(r) for r in (ev.get("refused") or {}).values()]
        return out

    def _tcp(self, stack: contextlib.ExitStack, tag: str) -> list[Background]:
        """A paced TCP stream from the CN to every MN in each measured family, from before
        the fault to TCP_AFTER_S after its repair (the handoff scenario's iperf3,
        traffic.iperf_*; an MN's IPv6 stream is a second server on the next port)."""
        streams = []
        for i, (suffix, addresses) in enumerate(self._sessions().items()):
            for mn, addr in addresses.items():
                port = traffic.IPERF_PORT + i
                stack.enter_context(traffic.iperf_server(
                    self.lab, mn, self.dir / f"fail-{tag}{suffix}-{mn}-tcp-server.json",
                    port))
                streams.append(stack.enter_context(traffic.iperf_client(
                    self.lab, self.cn, str(addr), self.dir / tcp_file(tag + suffix, mn),
                    TCP_S, TCP_RATE, port)))
        return streams

    def _one(self, kind: str) -> dict[str, Any]:
        tag = kind
        with contextlib.ExitStack() as stack:
            streams = self._tcp(stack, tag)
            for suffix, addresses in self._sessions().items():
                for mn, addr in addresses.items():
                    stack.enter_context(traffic.probe(self.lab, self.cn, str(addr),
                                                      self.dir / f"fail-{tag}{suffix}-{mn}.txt"))
            wait_for_clock(time.time() + LEAD_S)
            t_fault = time.time()
            node, repair = self._break(kind)
            handoffs = [self._handoff(node)]
            wait_for_clock(t_fault + HOLD_S)
            repair()
            t_repaired = time.time()
            counts = {"stale": -1, "missing": -1}
            by_family: dict[str, dict[str, int]] = {}

            def clean() -> bool:
                if not handoffs[-1]["ok"] and not handoffs[-1].get("retried_ok"):
                    # Refused while the fault lasted (fail closed): the MN authenticates
                    # again, as after any rejection; the network must take it now.
                    handoffs[-1]["retried_ok"] = self._retry(handoffs[-1]["to"])
                by_family.clear()
                by_family.update(self._route_state())
                for k in counts:
                    counts[k] = sum(v[k] for v in by_family.values())
                return counts["stale"] == 0 and counts["missing"] == 0

            try:
                wait_until(clean, RECOVER_S, f"routes after {kind}", 0.2)
                t_recovered: float | None = time.time()
            except DeadlineError:
                t_recovered = None
            t_end = max(time.time(), t_repaired) + TAIL_S
            wait_for_clock(t_end)
            for stream in streams:  # each ends at its own -t, TCP_S after it began
                stream.wait(TCP_S + 15)
        self.progress(f"  {kind} on {node}: recovered "
                      f"{'in %.1f s' % (t_recovered - t_fault) if t_recovered else 'NOT'}; "
                      f"stale {counts['stale']}, missing {counts['missing']}")
        return {"kind": kind, "node": node, "tag": tag, "arch": "flat", "event": kind,
                "t_start": self._t_start, "t_fail": t_fault,
                "t_repaired": t_repaired, "t_recovered": t_recovered,
                "observe_s": t_end - t_fault, "handoffs": handoffs,
                "stale_routes_after": counts["stale"], "missing_routes_after": counts["missing"],
                "addresses": {mn: str(a) for mn, a in self._sessions().get("", {}).items()},
                "tcp": sorted(self._sessions().get("", {})),
                "addresses6": {mn: str(a) for mn, a in self._sessions().get(V6, {}).items()},
                "families": self.families, "routes_after": by_family}

    @property
    def cn(self) -> str:
        return self.topo.service("cn").name

    def measure(self) -> None:
        self.progress(f"faults scenario: {len(self.kinds)} faults, {len(self.mobiles)} sessions")
        out: list[dict[str, Any]] = []
        self._t_start = time.time()
        eta = Eta(len(self.kinds), self.progress)
        try:
            for kind in self.kinds:
                out.append(self._one(kind))
                eta.step(kind)
        finally:
            eta.done()
            (self.dir / FAULTS).write_text(json.dumps(out, indent=1))
            self.keep_files([a.name for a in self.topo.by_role(Role.AR)], ("events.jsonl",))

    # --- analysis ---------------------------------------------------------------------------

    @classmethod
    def analyse(cls, out_dir: Path) -> dict[str, Any]:
        RunDir.open(out_dir)
        try:
            raw = json.loads((out_dir / FAULTS).read_text())
        except (OSError, ValueError) as exc:
            raise MeasureError(f"{out_dir}: no usable {FAULTS}: {exc}") from None
        return {"scenario": cls.name, "faults": [fault_row(out_dir, f) for f in raw]}

    @staticmethod
    def table(result: dict[str, Any]) -> str:
        head = (f"{'fault':16s} {'at_s':>6s} {'sess':>5s} {'kept':>5s} {'tcp':>5s} {'gap_ms':>8s} "
                f"{'hand':>4s} {'fail':>4s} {'stale':>5s} {'miss':>4s} {'recov_s':>7s}")
        rows = [head]
        for f in result["faults"]:
            gap = "-" if f["worst_gap_ms"] is None else f"{f['worst_gap_ms']:.0f}"
            rec = "-" if f["recovered_s"] is None else f"{f['recovered_s']:.1f}"
            tcp = f"{f['tcp_survived']}/{f['tcp_sessions']}"
            rows.append(f"{f['kind']:16s} {f['at_s']:6.1f} {f['sessions_total']:5d} "
                        f"{f['sessions_survived']:5d} {tcp:>5s} {gap:>8s} "
                        f"{f['handoffs_during']:4d} {f['handoffs_failed']:4d} "
                        f"{f['stale_routes_after']:5d} {f['missing_routes_after']:4d} {rec:>7s}")
            by_family = f.get("by_family") or {}
            for fam, x in by_family.items() if set(by_family) != {"ipv4"} else ():
                gap = "-" if x["worst_gap_ms"] is None else f"{x['worst_gap_ms']:.0f}"
                rows.append(f"{'  ' + fam:16s} {'':6s} {x['sessions_total']:5d} "
                            f"{x['sessions_survived']:5d} "
                            f"{str(x['tcp_survived']) + '/' + str(x['tcp_sessions']):>5s} "
                            f"{gap:>8s} {'':4s} {'':4s} "
                            f"{x.get('stale_routes_after', '-'):>5} "
                            f"{x.get('missing_routes_after', '-'):>4}")
            if f["failure_reasons"]:
                rows.append(f"{'':16s} refused: {f['failure_reasons']}")
        return "\n".join(rows)


def tcp_sessions(out_dir: Path, f: dict[str, Any]) -> list[dict[str, Any]]:
    """The fault's TCP streams (measure.iperf_summary): one survived if it delivered and was
    still delivering in its last second, TCP_AFTER_S after the repair."""
    out = []
    for mn in f.get("tcp", []):
        try:
            text = (out_dir / tcp_file(str(f["tag"]), str(mn))).read_text(errors="replace")
        except OSError as exc:
            text = f"missing: {exc}"
        out.append({"mn": mn, **measure.iperf_outcome(text)})
    return out


def _family_sessions(out_dir: Path, f: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per measured family, the fault's probed sessions and TCP streams (IPv6's files
    carry the V6 suffix on the fault's tag); a record from before --family is IPv4's."""
    out: dict[str, dict[str, Any]] = {}
    if f.get("addresses") or "ipv4" in f.get("families", ["ipv4"]):
        out["ipv4"] = {"icmp": failure_sessions(out_dir, f)["sessions"],
                       "tcp": tcp_sessions(out_dir, f)}
    if f.get("addresses6"):
        six = {**f, "tag": f"{f['tag']}{V6}", "addresses": f["addresses6"],
               "tcp": sorted(f["addresses6"])}
        out["ipv6"] = {"icmp": failure_sessions(out_dir, six)["sessions"],
                       "tcp": tcp_sessions(out_dir, six)}
    return out


def _sessions_summary(icmp: list[dict[str, Any]], tcp: list[dict[str, Any]]) -> dict[str, Any]:
    stalls = [t["max_stall_ms"] for t in tcp if t["max_stall_ms"] is not None]
    gaps = [s["recovery_ms"] for s in icmp if s["recovery_ms"] is not None]
    return {
        "sessions_total": len(icmp) + len(tcp),
        "sessions_survived": sum(1 for s in [*icmp, *tcp] if s["survived"]),
        "tcp_sessions": len(tcp), "tcp_survived": sum(1 for t in tcp if t["survived"]),
        "tcp_worst_stall_ms": max(stalls) if stalls else None,
        "worst_gap_ms": max(gaps) if gaps else None,
    }


def fault_row(out_dir: Path, f: dict[str, Any]) -> dict[str, Any]:
    """One fault in the issue's shape, from its raw record, its probe and TCP files: the
    sessions of every measured family together, and each family's apart."""
    t0 = float(f["t_fail"])
    families = _family_sessions(out_dir, f)
    reasons = Counter(r for h in f["handoffs"] for r in h["reasons"])
    start = float(f.get("t_start", t0))
    return {
        "kind": f["kind"], "node": f["node"], "at_s": round(t0 - start, 3),
        **_sessions_summary([s for x in families.values() for s in x["icmp"]],
                            [t for x in families.values() for t in x["tcp"]]),
        "by_family": {k: {"family": k, **_sessions_summary(x["icmp"], x["tcp"]),
                          **{f"{what}_routes_after": int(n) for what, n in
                             (f.get("routes_after") or {}).get(k, {}).items()}}
                      for k, x in families.items()},
        "handoffs_during": len(f["handoffs"]),
        "handoffs_failed": sum(1 for h in f["handoffs"] if not h["ok"]),
        "failure_reasons": dict(reasons),
        "stale_routes_after": int(f["stale_routes_after"]),
        "missing_routes_after": int(f["missing_routes_after"]),
        "recovered_s": (round(float(f["t_recovered"]) - t0, 3)
                        if f["t_recovered"] is not None else None),
    }
