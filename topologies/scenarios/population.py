"""`flatarch scenario population`: a population of --mobiles MNs in one process, moved by a
mobility model at --rate handoffs a second for --duration seconds; each handoff a real L2
move and a real AUTH. Measured: bring-up, per-handoff reroute and interruption (one paced
CN-side prober over every MN), host routes and BGP UPDATEs per router, CPU and RSS by kind.
Several rates (`--rate 10,30,100`) are phases of one lab, one after the other: a sweep.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any, Self

import yaml

from agents.contract import Layout
from agents.stats import percentile_or_none
from topologies.analysis import dnscount, measure, plots
from topologies.lab import procstat
from topologies.lab.daemons import DeadlineError, LabError, wait_until
from topologies.lab.dnsplane import NAMED_LOG, QUERY_LOG
from topologies.lab.lab import Background, Lab
from topologies.lab.popnet import PopulationNet, check_cells
from topologies.model import DhcpPolicy, Role, Topology
from topologies.render.configs import UPDATES_LOG
from topologies.render.identities import POPULATION_DIR
from topologies.scenarios import mobility
from topologies.scenarios.addresses import counted, counted6
from topologies.scenarios.base import (
    FAMILIES,
    REDIRECT,
    ROUTES,
    Progress,
    RunDir,
    Scenario,
    read_jsonl,
    wait_for_clock,
    write_jsonl,
)
from topologies.scenarios.faults import managed6
from topologies.scenarios.handoff import add_family_argument
from topologies.scenarios.progress import Eta
from topologies.scenarios.registry import register

log = logging.getLogger(__name__)

MODELS = ("walk", "waypoint", "trace")
HANDOFFS = "handoffs.jsonl"  # one row per scheduled move: radio time and the AR's answer
SAMPLES = "procstat.jsonl"  # CPU and RSS per process, every second
SWEEP_PLOT = "rate-sweep.png"  # re-route and CPU against the rate, for a sweep
SIZE_PLOT = "size-sweep.png"  # host routes and memory against the population, for a size sweep
PROBE = "probe.txt"  # the CN's paced prober over every MN, `ping -D` lines with the source
PROBE6 = "probe6.txt"  # the same over every MN's IPv6 address, in a dual-stack run
LEASES = "leases.jsonl"  # each change of a DHCP member's addresses, as the agent reports it
LEASE_POLL_S = 1.0  # how often the agent is asked for its DHCP members' addresses
# Handoffs in flight at once (each holds a thread on the agent's control socket): an AUTH
# takes ~10 ms, a lost one 1.5 s with its retries; 32 of them capped a run at ~21/s.
WORKERS = 256
START_DELAY_S = 1.0  # between scheduling the first move and making it
# After the last move, until every router's host routes stop changing for QUIET_S and no
# failed handoff is still being tried again (agents/population.py RECOVER_*): at most this.
SETTLE_S = 30.0
QUIET_S = 2.0
WAYPOINT_SPACING = 100.0  # units between cells on the default waypoint layout
KNEE_P99_MS = 1000.0  # the knee: the rate at which reroute p99 passes 1 s
# The DHCP range of a population with DHCP members, in host offsets of each AR's pool (the
# model's bounds): provisioned MNs then take the offsets above it.
DHCP_FIRST, DHCP_LAST = 10, 254


def rates(text: str) -> tuple[float, ...]:
    """--rate: one rate, or a comma-separated sweep of them, each > 0."""
    try:
        out = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: rates are numbers, comma-separated") \
            from None
    if not all(r > 0 for r in out):
        raise argparse.ArgumentTypeError(f"{text!r}: every rate must be > 0")
    return out


def sizes(text: str) -> tuple[int, ...]:
    """--mobiles: one population size, or a comma-separated sweep of them, each >= 1, in
    increasing order (the memory per MN is taken by difference between neighbours)."""
    try:
        out = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: sizes are whole numbers, "
                                         "comma-separated") from None
    if not all(n >= 1 for n in out):
        raise argparse.ArgumentTypeError(f"{text!r}: every size must be at least 1")
    if list(out) != sorted(set(out)):
        raise argparse.ArgumentTypeError(f"{text!r}: sizes must increase")
    return out


def size_point(sub: str, result: dict[str, Any], roles: dict[str, str]) -> dict[str, Any]:
    """One population size of a size sweep: bring-up, memory, the handoffs, and the host
    routes' peak per router and, by role, the most any router of it held."""
    peak = result["host_routes"]["peak"]
    by_role: dict[str, int] = {}
    for router, n in peak.items():
        role = roles.get(router, "other")
        by_role[role] = max(by_role.get(role, 0), int(n))
    return {"point": sub, "mobiles": result["mobiles"], "up_s": result["up_s"],
            "rss_mb_added": result["rss_mb_added"],
            "pss_mb_added": result.get("pss_mb_added"),
            "machine_mb_added": result["machine_mb_added"],
            "memory_mb_per_mobile": result["memory_mb_per_mobile"],
            "handoffs": {k: result["handoffs"][k] for k in ("attempted", "ok", "failed")},
            "reroute_ms": result["reroute_ms"], "host_routes_peak": dict(peak),
            "mobiles_away_at_end": result["mobiles_away_at_end"],
            "host_routes_peak_by_role": dict(sorted(by_role.items())),
            "stale_host_routes": sum(result["stale_host_routes"].values())}


def by_difference(points: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """MB per additional MN between each two neighbouring sizes, from ``key`` (the memory
    the population added to its lab): the issue's measure, free of each lab's fixed cost."""
    out = []
    for a, b in zip(points, points[1:], strict=False):
        if a[key] is None or b[key] is None:
            continue
        out.append({"from": a["mobiles"], "to": b["mobiles"],
                    "mb_per_mobile": round((b[key] - a[key]) / (b["mobiles"] - a["mobiles"]),
                                           4)})
    return out


def between_counters(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What each cumulative counter gained between two readings, from when (``t0``) and
    over how long (``s``); empty if either reading failed."""
    if "t" not in before or "t" not in after:
        return {}
    out = {k: after[k] - before[k] for k in after if k in before and k != "t"}
    return {"t0": before["t"], "s": round(after["t"] - before["t"], 3), **out}


def per_second(times: list[float], t0: float, t1: float) -> dict[str, float | None]:
    """The mean and the busiest second's count of the events at ``times`` within [t0, t1]."""
    inside = [t for t in times if t0 <= t <= t1]
    if t1 <= t0:
        return {"mean": None, "peak": None}
    peak = max(Counter(int(t) for t in inside).values(), default=0)
    return {"mean": round(len(inside) / (t1 - t0), 2), "peak": float(peak)}


def dns_load(unbound: dict[str, float], bind_queries: list[float],
             bind_updates: list[float], t0: float, t1: float, ok: int) -> dict[str, Any]:
    """The DNS plane's load over the moves: the resolver's queries a second and per
    successful handoff, its cache misses (what reaches BIND), and BIND's queries and
    UPDATEs a second from its own logs, over the same moves as the resolver's counters
    when they were read (else over [t0, t1])."""
    s = unbound.get("s")
    if s and "t0" in unbound:
        t0, t1 = unbound["t0"], unbound["t0"] + s
    queries, misses = unbound.get("total.num.queries"), unbound.get("total.num.cachemiss")
    return {
        "unbound_queries_per_s": round(queries / s, 2) if s and queries is not None else None,
        "unbound_cachemiss_per_s": round(misses / s, 2) if s and misses is not None else None,
        "unbound_queries_per_handoff": round(queries / ok, 2)
        if ok and queries is not None else None,
        "bind_queries_per_s": per_second(bind_queries, t0, t1),
        "bind_updates_per_s": per_second(bind_updates, t0, t1),
    }


def phase_inputs(i: int, phase: dict[str, Any], params: dict[str, Any],
                 measured: dict[str, Any], rows: list[dict[str, Any]],
                 samples: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any],
                                                         list[dict[str, Any]],
                                                         list[dict[str, Any]]]:
    """(params, measured, rows, samples) of phase ``i`` of a sweep, as summarise takes them
    for a run of that phase alone: its rate, start, drops, end positions, its handoffs and
    the CPU samples within it."""
    t0, t1 = float(phase["t_start"]), float(phase["t_end"])
    return ({**params, "rate_per_s": phase["rate_per_s"],
             "duration_s": phase.get("duration_s", params["duration_s"])},
            {**measured, "t_start": t0, "backlog_drops": phase.get("backlog_drops"),
             "kernel_drops": phase.get("kernel_drops", {}),
             "machine_cpu_pct": phase.get("machine_cpu_pct", {}),
             "unbound": phase.get("unbound", {}), "where": phase.get("where", {}),
             "recovery": phase.get("recovery", {})},
            [r for r in rows if int(r.get("phase", 0)) == i],
            [x for x in samples if t0 <= float(x.get("t", 0.0)) <= t1])


def knee(sweep: list[dict[str, Any]]) -> float | None:
    """The lowest rate of the sweep whose reroute p99 passed KNEE_P99_MS, or at which
    handoffs failed; None if none did."""
    for point in sorted(sweep, key=lambda p: float(p["rate_per_s"])):
        p99 = point["reroute_ms"]["p99"]
        if point["handoffs"]["failed"] or (p99 is not None and p99 > KNEE_P99_MS):
            return float(point["rate_per_s"])
    return None


def derived_topology(doc: dict[str, Any], mobiles: int, seed: int,
                     dhcp: float = 0.0, lease_s: int | None = None) -> dict[str, Any]:
    """The topology with a population of ``mobiles``, ``dhcp`` of them leasing by DHCP (for
    ``lease_s`` if given), its pools widened to hold them and its DHCP range their leases."""
    out: dict[str, Any] = json.loads(json.dumps(doc))
    ars = sum(len(c["ars"]) for c in out["clusters"])
    check_cells(Counter({"most": math.ceil(mobiles / ars)}), ars)  # round-robin homes
    per_ar = math.ceil(mobiles / ars) + len(out.get("mobiles") or []) + 16
    if dhcp:
        # Each DHCP member may hold two leases at once (a rotation, a lease lost and taken
        # again), and the named MNs lease from the same range.
        leases = 2 * math.ceil(dhcp * mobiles / ars) + 8
        if leases > DHCP_LAST - DHCP_FIRST + 1:
            raise LabError(f"--dhcp {dhcp:g} of {mobiles} MNs: {leases} leases per AR do not "
                           f"fit the DHCP range (host offsets {DHCP_FIRST}..{DHCP_LAST}); at "
                           f"most {(DHCP_LAST - DHCP_FIRST + 1 - 8) // 2 * ars} DHCP MNs "
                           f"over {ars} ARs")
        policy = out.setdefault("dhcp", {})
        if lease_s is not None:
            policy["lease_s"] = lease_s
        policy.update(first=DHCP_FIRST, last=max(int(policy.get("last", 0)),
                                                 DHCP_FIRST + leases - 1))
    # Provisioned addresses skip the DHCP range: the pool holds both.
    policy, default = out.get("dhcp") or {}, DhcpPolicy()
    per_ar += int(policy.get("last", default.last)) - int(policy.get("first", default.first)) + 1
    addressing = out["addressing"]
    addressing["pool_prefixlen"] = min(int(addressing.get("pool_prefixlen", 24)),
                                       32 - math.ceil(math.log2(per_ar + 2)))
    v6 = addressing.get("ipv6")
    if isinstance(v6, dict) and per_ar > 2 ** (64 - int(v6.get("pool_prefixlen", 56))) - 8:
        v6["pool_prefixlen"] = 64 - 4 * math.ceil(math.log2(per_ar + 8) / 4)
    out["population"] = {"count": mobiles, "seed": seed, "home": "round-robin", "dhcp": dhcp}
    return out


def check_shares(dhcp: float, rotate: float) -> None:
    if not 0.0 <= dhcp <= 1.0 or not 0.0 <= rotate <= 1.0:
        raise LabError("--dhcp and --rotate are fractions in 0..1")
    if rotate > dhcp:
        raise LabError(f"--rotate {rotate:g} needs --dhcp {rotate:g} or more: a rotating MN "
                       "takes its new address by DHCP")


def kind_of(topo: Topology, node: str, kind: str) -> str:
    """The process kind the issue names: bgpd of a reflector apart from a core's."""
    if kind == "agent":
        return "ha_agent" if topo.nodes[node].service == "ha" else "ar_agent"
    if kind == "bgpd":
        return f"bgpd_{topo.nodes[node].role.value}"
    return kind


def split_probe(text: str) -> dict[str, str]:
    """The prober's lines by source address, each group parseable by measure.parse_ping."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        head, sep, _ = line.partition(": icmp_seq=")
        if sep:
            out.setdefault(head.rpartition(" from ")[2], []).append(line)
    return {src: "\n".join(lines) + "\n" for src, lines in out.items()}


class LeaseKeeper:
    """Asks the population agent for its DHCP members' addresses every LEASE_POLL_S (and at
    once when poked after a rotation): each change a line of leases.jsonl, and the prober's
    target file rewritten so that it follows an MN to its new address."""

    def __init__(self, net: PopulationNet, log: Path, targets: Path,
                 first: dict[str, str]) -> None:
        self.net, self.log, self.targets = net, log, targets
        self.current = dict(first)  # MN -> the IPv4 address probed
        self.leased: dict[str, list[str]] = {}
        self.errors = 0
        self._stop, self._poke = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)

    def __enter__(self) -> Self:
        self.poll()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop polling, after one last poll: the addresses at the end, by which a host
        route left over is judged."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._poke.set()
        self._thread.join(10.0)
        self.poll()

    def poke(self) -> None:
        self._poke.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._poke.wait(LEASE_POLL_S)
            self._poke.clear()
            if not self._stop.is_set():
                self.poll()

    def poll(self) -> None:
        try:
            leased = self.net.leased()
        except LabError as exc:
            self.errors += 1
            log.warning("lease keeper: %s", exc)
            return
        now = time.time()
        changed = {mn: held for mn, held in leased.items() if self.leased.get(mn) != held}
        if not changed:
            return
        self.leased.update(changed)
        with self.log.open("a") as fh:
            for mn, held in sorted(changed.items()):
                fh.write(json.dumps({"t": now, "mn": mn, "addresses": held}) + "\n")
        moved = {mn: held[0] for mn, held in changed.items()
                 if held and self.current.get(mn) != held[0]}
        if moved:
            # An MN with no lease for a moment keeps its old target: its probes fail, as
            # they should.
            self.current.update(moved)
            tmp = self.targets.with_suffix(".tmp")
            tmp.write_text("".join(f"{a}\n" for a in self.current.values()))
            os.replace(tmp, self.targets)


@register
class PopulationScenario(Scenario):
    name = "population"
    help = "thousands of MNs in one process, moved by a mobility model: routes and BGP load"

    def __init__(self, lab: Lab, *, rate: float | tuple[float, ...] = 10.0,
                 duration_s: float = 30.0,
                 model: str = "walk", trace: Path | None = None, rotate: float = 0.0,
                 dhcp: float = 0.0, rotate_after_s: float | None = None,
                 probe_interval_s: float = 0.2, seed: int = 0,
                 spread_s: float | None = None,
                 speed: float = 20.0, out_dir: Path | None = None,
                 progress: Progress | None = None, families: list[str] | None = None) -> None:
        check_shares(dhcp, rotate)
        super().__init__(lab, None, progress, out_dir)
        if model not in MODELS:
            raise LabError(f"--model: {model!r} is not one of {', '.join(MODELS)}")
        if model == "trace" and trace is None:
            raise LabError("--model trace needs --trace FILE")
        self.rates = rate if isinstance(rate, tuple) else (rate,)
        if not self.rates or not all(r > 0 for r in self.rates) or not duration_s > 0 \
                or not probe_interval_s > 0:
            raise LabError("--rate, --duration and --probe-interval must be > 0")
        if model == "trace" and len(self.rates) > 1:
            raise LabError("--model trace replays its own times: one --rate only")
        self.rate, self.duration_s, self.model = self.rates[0], duration_s, model
        self.trace, self.rotate, self.dhcp, self.seed = trace, rotate, dhcp, seed
        if rotate_after_s is not None and not rotate_after_s > 0:
            raise LabError("--rotate-after must be > 0")
        self.rotate_after_s = rotate_after_s
        self.spread_s, self.speed = spread_s, speed
        self.probe_interval_s = probe_interval_s
        self.families = families or ["ipv4"]
        self.net = PopulationNet(lab, ipv6="ipv6" in self.families)
        self._keeper: LeaseKeeper | None = None

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--mobiles", type=sizes, default=(100,),
                            help="MNs in the population; several, comma-separated and "
                            "increasing, run one lab each (a size sweep)")
        parser.add_argument("--rate", type=rates, default=(10.0,),
                            help="target handoffs a second across the population; several, "
                            "comma-separated, run one after the other in the same lab")
        parser.add_argument("--duration", type=float, default=30.0, help="seconds of moves")
        parser.add_argument("--model", choices=MODELS, default="walk")
        parser.add_argument("--trace", type=Path, help="CSV of t_s,mn,ar (--model trace)")
        parser.add_argument("--dhcp", type=float, default=0.0,
                            help="share of MNs that lease their addresses by udhcpc")
        parser.add_argument("--lease", type=int, default=None,
                            help="the ARs' DHCP lease in seconds (default: the topology's); "
                            "each renewal costs a hook run")
        parser.add_argument("--rotate", type=float, default=0.0,
                            help="share of MNs that take a new address after a dwell (DHCP "
                            "members: at most --dhcp)")
        parser.add_argument("--rotate-after", type=float, default=None,
                            help="mean seconds from an arrival to a rotation (exponential; "
                            "default: the model's mean dwell)")
        parser.add_argument("--spread", type=float, default=None,
                            help="dwell spread in seconds: log-normal (default exponential)")
        parser.add_argument("--speed", type=float, default=20.0,
                            help="waypoint speed, cells 100 units apart")
        parser.add_argument("--probe-interval", type=float, default=0.2,
                            help="seconds between the CN's probes of each MN")
        parser.add_argument("--seed", type=int, default=0)
        add_family_argument(parser, "run")

    @classmethod
    def points(cls, args: argparse.Namespace) -> list[tuple[str, argparse.Namespace]]:
        """A lab per population size: the population is provisioned with its lab (keys,
        zones, pools), so sizes cannot share one the way rates do."""
        counts = args.mobiles if isinstance(args.mobiles, tuple) else (args.mobiles,)
        if len(counts) == 1:
            return [("", argparse.Namespace(**{**vars(args), "mobiles": counts[0]}))]
        return [(f"mobiles-{n}", argparse.Namespace(**{**vars(args), "mobiles": n}))
                for n in counts]

    @classmethod
    def combine(cls, out_dir: Path, results: list[tuple[str, dict[str, Any]]]
                ) -> dict[str, Any]:
        """A size sweep: a row per size, the memory per MN by difference between sizes, and
        the host routes per router against the population drawn (size-sweep.png)."""
        points = []
        for sub, result in results:
            topo = RunDir.open(out_dir / sub).topo
            points.append(size_point(sub, result, {r.name: r.role.value
                                                   for r in topo.routers}))
        plot = plots.size_sweep(points, out_dir / SIZE_PLOT)
        largest = results[-1][1]
        return {**largest, "size_sweep": points,
                "memory_by_difference": {"processes": by_difference(points, "rss_mb_added"),
                                         "processes_pss": by_difference(points, "pss_mb_added"),
                                         "machine": by_difference(points, "machine_mb_added")},
                "points": [r for _, r in results],
                "plots": [*largest.get("plots", []), str(plot)]}

    @classmethod
    def topology_for(cls, args: argparse.Namespace, out_dir: Path) -> Path:
        if args.mobiles < 1:
            raise LabError("--mobiles: at least one")
        check_shares(args.dhcp, args.rotate)  # before the lab is built
        doc = yaml.safe_load(Path(args.topology).read_text())
        path = out_dir / "population.yaml"
        path.write_text(yaml.safe_dump(derived_topology(doc, args.mobiles, args.seed,
                                                        args.dhcp, args.lease),
                                       sort_keys=False))
        return path

    @classmethod
    def from_args(cls, lab: Lab, args: argparse.Namespace, out_dir: Path) -> Self:
        return cls(lab, rate=args.rate, duration_s=args.duration, model=args.model,
                   trace=args.trace, rotate=args.rotate, dhcp=args.dhcp,
                   rotate_after_s=args.rotate_after,
                   probe_interval_s=args.probe_interval,
                   seed=args.seed, spread_s=args.spread, speed=args.speed, out_dir=out_dir,
                   families=FAMILIES[getattr(args, "family", "ipv4")])

    def params(self) -> dict[str, Any]:
        return {"mobiles": len(self.net.members), "rate_per_s": self.rate,
                "rates_per_s": list(self.rates),
                "duration_s": self.duration_s, "model": self.model,
                "trace": str(self.trace) if self.trace else None, "rotate": self.rotate,
                "dhcp": self.dhcp, "dhcp_members": len(self.net.dhcp_members),
                "lease_s": self.topo.dhcp.lease_s if self.net.dhcp_members else None,
                "rotate_after_s": self.rotate_after_s,
                "seed": self.seed, "spread_s": self.spread_s,
                "probe_interval_s": self.probe_interval_s, "families": self.families}

    # --- the schedule ---------------------------------------------------------------------

    def schedule(self, rate: float | None = None,
                 start: dict[str, str] | None = None) -> list[mobility.Move]:
        """The moves of one phase at ``rate`` (the first), from ``start`` (every MN home),
        with the rotations of the share that rotates: each a dwell after an arrival (the
        model's mean dwell, or --rotate-after), if the MN is still there by then."""
        rate = rate or self.rate
        start = start or {m.name: m.home for m in self.net.members}
        mean = mobility.dwell_for_rate(len(start), rate)
        ars = [a.name for a in self.topo.by_role(Role.AR)]
        if self.model == "trace":
            assert self.trace is not None
            moves = mobility.parse_trace(self.trace.read_text(), start, ars)
        elif self.model == "walk":
            moves = mobility.random_walk(mobility.ar_adjacency(self.topo), start,
                                         mobility.Dwell(mean, self.spread_s), self.duration_s,
                                         self.seed)
        else:
            cells = {a: (i * WAYPOINT_SPACING, 0.0) for i, a in enumerate(ars)}
            moves = mobility.random_waypoint(cells, start, self.speed, mean, self.duration_s,
                                             self.seed)
        # Only the DHCP members can take a new address.
        return mobility.with_rotations(moves, self.rotate,
                                       mobility.Dwell(self.rotate_after_s or mean),
                                       self.duration_s, self.seed, self.net.dhcp_members)

    # --- the measurement ----------------------------------------------------------------

    def _pids(self) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        for node, ds in self.lab.daemons.items():
            for d in ds:
                pid = d.pid()
                if pid is not None:
                    kind = kind_of(self.topo, node, d.kind) if node in self.topo.nodes \
                        else d.kind
                    out[(kind, node)] = pid
        if self.net.agent is not None and (pid := self.net.agent.pid()) is not None:
            out[("population", self.net.agent.node)] = pid
            # The DHCP members' udhcpc clients running now (one per lease); those started
            # later (a rotation, a lease taken again) are not sampled.
            out |= {("udhcpc", str(c)): c for c in procstat.children(pid)}
        return out

    def _measure(self) -> None:
        moves = self.schedule()
        self.note(probe_interval_ms=self.probe_interval_s * 1000.0, scheduled=len(moves),
                  schedule_rate_per_s=round(mobility.handoff_rate(moves, self.duration_s), 3))
        before = self._pids()
        rss_before, used_before = procstat.total_rss_mb(before), procstat.machine_used_mb()
        pss_before = procstat.total_pss_mb(before)
        with contextlib.ExitStack() as stack:
            stack.callback(self.net.stop)
            up = self.net.start()
            pids = self._pids()
            self.note(up=up, rss_mb_before=rss_before, rss_mb_up=procstat.total_rss_mb(pids),
                      pss_mb_before=pss_before, pss_mb_up=procstat.total_pss_mb(pids),
                      machine_mb_before=used_before, machine_mb_up=procstat.machine_used_mb())
            self.progress(f"population: {len(self.net.members)} MNs up in {up['up_s']:.1f}s "
                          f"({', '.join(f'{k} {v:.1f}s' for k, v in up.items())})")
            watcher = self.watch_routes(stack, [str(self.topo.managed), *managed6(
                self.topo, self.families)])
            first = {m.name: str(m.address) for m in self.net.members if m.address}
            keeper: LeaseKeeper | None = None
            if self.net.dhcp_members:
                leased = self.net.leased()
                first = {m.name: first.get(m.name) or leased[m.name][0]
                         for m in self.net.members}
                keeper = stack.enter_context(LeaseKeeper(
                    self.net, self.dir / LEASES, self.dir / "probe.targets", first))
            self._keeper = keeper
            probers = [self._prober(stack, "probe.targets", PROBE, list(first.values()),
                                    follow=keeper is not None)]
            if self.net.ipv6:
                probers.append(self._prober(stack, "probe6.targets", PROBE6, [
                    str(m.prefix6.network_address + 1) for m in self.net.members
                    if m.prefix6 is not None]))
            sampler = stack.enter_context(procstat.Sampler(pids))
            rows: list[dict[str, Any]] = []
            phases: list[dict[str, Any]] = []
            for i, rate in enumerate(self.rates):
                if i:  # the next phase walks on from where the last one left every MN
                    where = self.net.radio.where
                    moves = self.schedule(rate, {m.name: where.get(m.name, m.home)
                                                 for m in self.net.members})
                    self.progress(f"population: phase {i + 1}/{len(self.rates)}, {rate:g}/s, "
                                  f"{len(moves)} moves")
                drops = procstat.backlog_drops()
                counters = procstat.drop_counters(self.lab.execs)
                cpu = procstat.machine_cpu()
                resolver = self._resolver_counters()
                retried = self._recovery()
                rows += [{**r, "phase": i} for r in self._drive(moves)]
                resolver = between_counters(resolver, self._resolver_counters())
                machine = procstat.machine_cpu_between(cpu, procstat.machine_cpu())
                drops = procstat.backlog_drops() - drops
                kernel = procstat.drops_between(counters, procstat.drop_counters(self.lab.execs))
                t_end = self._settle(lambda: len(watcher.events()),
                                     lambda: bool(self._recovery().get("recovering")))
                retried = {k: int(v) - int(retried.get(k, 0)) if k != "recovering" else int(v)
                           for k, v in self._recovery().items() if k != "ok"}
                phases.append({"rate_per_s": rate, "t_start": self._measured["t_start"],
                               "t_end": t_end, "recovery": retried,
                               "backlog_drops": drops, "kernel_drops": kernel,
                               "machine_cpu_pct": machine, "unbound": resolver,
                               "scheduled": len(moves), "where": dict(self.net.radio.where)})
                self.note(phases=phases)
            write_jsonl(self.dir / HANDOFFS, rows)
            if keeper is not None:
                keeper.close()
                self.note(leased_at_end=keeper.leased, lease_poll_errors=keeper.errors)
            for prober in probers:
                prober.interrupt()
            self.note(t_start=phases[0]["t_start"], t_end=phases[0]["t_end"],
                      backlog_drops=phases[0]["backlog_drops"],
                      kernel_drops=phases[0]["kernel_drops"],
                      machine_cpu_pct=phases[0]["machine_cpu_pct"],
                      unbound=phases[0]["unbound"], where=phases[0]["where"],
                      recovery=phases[0]["recovery"])
        write_jsonl(self.dir / SAMPLES, sampler.rows)

    def measure(self) -> None:
        try:
            self._measure()
        finally:
            # Kept even when the bring-up or the moves fail: the reason is in these.
            self._keep_logs()

    def _keep_logs(self) -> None:
        self.keep_files([r.name for r in self.topo.routers], [UPDATES_LOG])
        # The AR agents' and the population agent's own accounts, for a failure's reason.
        self.keep_files([a.name for a in self.topo.by_role(Role.AR)],
                        [Layout.EVENTS, Layout.AGENT_LOG])
        self.keep_files([POPULATION_DIR], [Layout.AGENT_LOG, Layout.AGENT_STDERR,
                                           Layout.EVENTS])
        # Each DHCP member's udhcpc logs, for a lease that did not come or go.
        leases_dir = self.net.rundir / "dhcp"
        if leases_dir.is_dir():
            shutil.copytree(leases_dir, self.dir / "dhcp", dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("*.pid"))
        # BIND's queries (from the resolvers' cache misses) and its UPDATEs, for its load.
        self.keep_files([self.topo.service("dns").name], [QUERY_LOG, NAMED_LOG])

    def _resolver_counters(self) -> dict[str, float]:
        """The resolver's cumulative counters, stamped with when they were read."""
        dns = self.lab.dns
        if dns is None:
            return {}
        return {"t": time.time(),
                **dns.unbound_stats(self.lab.execs[self.topo.service("dns").name])}

    def _prober(self, stack: contextlib.ExitStack[Any], targets: str, out: str,
                addresses: list[str], follow: bool = False) -> Background:
        """One paced prober on the CN over ``addresses`` (one family), into ``out``; with
        ``follow`` it re-reads the targets file, which then lists every address."""
        path = self.dir / targets
        more = addresses if follow else addresses[1:]  # the first is argv's
        path.write_text("".join(f"{a}\n" for a in more))
        where = ["--follow" if follow else "--targets", str(path)]
        return stack.enter_context(self.lab.background(self.topo.service("cn").name, [
            sys.executable, "-m", "agents.probe", addresses[0], *where,
            "--interval", str(self.probe_interval_s)], self.dir / out))

    def _drive(self, moves: list[mobility.Move]) -> list[dict[str, Any]]:
        """Each move at its time: the radio moves the port here, the AUTH runs in a worker
        (the population agent serialises one MN's AUTHs)."""
        chunk = max(1, len(moves) // 20)  # twenty progress lines, not one per handoff
        eta = Eta(math.ceil(len(moves) / chunk), self.progress)
        pending: list[tuple[dict[str, Any], Future[dict[str, Any]]]] = []
        t0 = time.time() + START_DELAY_S
        self.note(t_start=t0)
        with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
            for i, mv in enumerate(moves):
                wait_for_clock(t0 + mv.t_s)
                if mv.kind == "rotate":
                    pending.append(({"mn": mv.mn, "kind": "rotate", "at": mv.ar,
                                     "t_s": mv.t_s}, pool.submit(self._rotate, mv.mn, mv.ar)))
                    continue
                previous = self.net.radio.where.get(mv.mn)
                row: dict[str, Any] = {"mn": mv.mn, "from": previous, "to": mv.ar,
                                       "t_s": mv.t_s}
                if previous == mv.ar:
                    row.update(ok=True, skipped="already there")
                    pending.append((row, _done({})))
                    continue
                row.update(self.net.move(mv.mn, mv.ar))
                pending.append((row, pool.submit(self._attach, mv.mn, mv.ar)))
                if (i + 1) % chunk == 0:
                    eta.step(f"{i + 1}/{len(moves)} handoffs")
        out = []
        for row, fut in pending:
            try:
                answer = fut.result()
            except LabError as exc:
                answer = {"ok": False, "error": f"control: {exc}"}
            out.append({**row, **{k: v for k, v in answer.items() if k not in ("mn", "ar")}})
        return out

    def _rotate(self, mn: str, ar: str) -> dict[str, Any]:
        """A rotation at ``ar``, unless the MN has moved on meanwhile (the model's rotation
        belongs to that stay); the prober is told of the new address at once."""
        if self.net.radio.where.get(mn) != ar:
            return {"ok": False, "superseded": True, "error": "superseded: moved on"}
        answer = self.net.rotate(mn)
        if self._keeper is not None:
            self._keeper.poke()
        return answer

    def _attach(self, mn: str, ar: str) -> dict[str, Any]:
        """The AUTH after a move, unless the radio has moved the MN on while this waited for
        a worker: sent now, it would reach the wrong AR."""
        if self.net.radio.where.get(mn) != ar:
            return {"ok": False, "superseded": True,
                    "error": "superseded: moved again before the AUTH was sent"}
        return self.net.attach(mn, ar)

    def _recovery(self) -> dict[str, Any]:
        """The agent's retries of failed handoffs so far ({} if it does not answer)."""
        try:
            return self.net.request({"cmd": "recovery"})
        except LabError:
            return {}

    @staticmethod
    def _settle(count: Callable[[], int], busy: Callable[[], bool] = lambda: False) -> float:
        """Wait until no router's host routes changed for QUIET_S and nothing is ``busy``
        (at most SETTLE_S): the end state, where a stale /32 would show."""
        last = [count(), time.monotonic()]

        def quiet() -> bool:
            n = count()
            if n != last[0]:
                last[:] = [n, time.monotonic()]
            return time.monotonic() - last[1] >= QUIET_S and not busy()

        with contextlib.suppress(DeadlineError):
            wait_until(quiet, SETTLE_S, "host routes to settle", 0.25)
        return time.time()

    # --- the analysis ---------------------------------------------------------------------

    @classmethod
    def analyse(cls, out_dir: Path) -> dict[str, Any]:
        run = RunDir.open(out_dir)
        measured, params = run.measured, run.params
        rows = read_jsonl(out_dir / HANDOFFS)
        events = measure.parse_route_events((out_dir / ROUTES).read_text())
        probe = {fam: (out_dir / name).read_text(errors="replace")
                 for fam, name in (("ipv4", PROBE), ("ipv6", PROBE6)) if (out_dir / name).exists()}
        samples, rx = read_jsonl(out_dir / SAMPLES), updates(run.topo, out_dir)
        dns_logs = bind_logs(run.topo, out_dir)
        leases = read_jsonl(out_dir / LEASES) if (out_dir / LEASES).exists() else []
        evs = ar_events(run.topo, out_dir)
        ends = lease_ends(evs)
        rows = with_refusals(rows, evs)
        phases = measured.get("phases") or []
        if len(phases) <= 1:
            return summarise(run.topo, params, measured, rows, events, probe, samples, rx,
                             float(measured["t_end"]), dns_logs, leases, ends)
        sweep = []
        for i, ph in enumerate(phases):
            p, m, r, x = phase_inputs(i, ph, params, measured, rows, samples)
            sweep.append(summarise(run.topo, p, m, r, events, probe, x, rx, float(ph["t_end"]),
                                   dns_logs, leases, ends))
        plot = plots.rate_sweep(sweep, KNEE_P99_MS, out_dir / SWEEP_PLOT)
        return {**sweep[0], "sweep": sweep, "knee_rate_per_s": knee(sweep),
                "plots": [str(plot)],
                "knee_p99_ms": KNEE_P99_MS}

    @staticmethod
    def table(result: dict[str, Any]) -> str:
        h = result["handoffs"]
        lines = [
            f"population: {result['mobiles']} MNs up in {result['up_s']:.1f}s; "
            f"{h['attempted']} handoffs ({result['achieved_rate_per_s']:.1f}/s of "
            f"{result['rate_per_s']:g}/s): {h['ok']} ok, {h['failed']} failed "
            f"{json.dumps(h['failures']) if h['failures'] else ''}"
            + (f"; tried again at the same AR: {h['recovered']} answered, "
               f"{h.get('unrecovered') or 0} gave up, {h.get('recovering_at_end') or 0} still "
               "trying at the end" if h.get("recovered") is not None and h["failed"] else ""),
            f"reroute ms p50/p99 {result['reroute_ms']['p50']}/{result['reroute_ms']['p99']}; "
            f"interruption ms p50/p99 {result['interruption_ms']['p50']}/"
            f"{result['interruption_ms']['p99']}; auth ms p50/p99 "
            f"{result['auth_ms']['p50']}/{result['auth_ms']['p99']}",
            f"memory per MN {result['memory_mb_per_mobile']} MB (processes' RSS), "
            f"{result.get('pss_mb_per_mobile')} MB (their PSS), "
            f"{result['machine_mb_per_mobile']} MB (machine); stale /32 at the end: "
            f"{sum(result['stale_host_routes'].values())}",
            "machine CPU over the moves (% of all cores): " + (", ".join(
                f"{k} {v:g}" for k, v in result["machine_cpu_pct"].items() if v) or "-"),
            "kernel drops over the moves: backlog "
            f"{result['backlog_drops']}; " + (", ".join(
                f"{k} {v}" for k, v in result["kernel_drops"]["total"].items()) or "none"),
            dns_line(result.get("dns")),
            *dhcp_lines(result.get("dhcp")),
            f"{'router':10s} {'/32 peak':>9s} {'/32 end':>8s} {'UPDATE/s peak':>14s}",
        ]
        for r in sorted(result["host_routes"]["peak"]):
            lines.append(f"{r:10s} {result['host_routes']['peak'][r]:9d} "
                         f"{result['host_routes']['end'].get(r, 0):8d} "
                         f"{result['updates_per_s']['peak'].get(r, 0):14.0f}")
        if (six := result.get("ipv6")) is not None:
            lines.append(
                f"ipv6: reroute ms p50/p99 {six['reroute_ms']['p50']}/{six['reroute_ms']['p99']}; "
                f"interruption ms p50/p99 {six['interruption_ms']['p50']}/"
                f"{six['interruption_ms']['p99']}; /64 peak "
                f"{max(six['host_routes']['peak'].values(), default=0)} on a router; stale /64 "
                f"at the end: {sum(six['stale_host_routes'].values())}")
        lines.append(f"{'process':12s} {'cpu % mean':>10s} {'peak':>6s} {'all %':>6s} "
                     f"{'rss MB':>8s}")
        for k, v in result["processes"].items():
            lines.append(f"{k:12s} {v['cpu_pct']:10.1f} {v['cpu_pct_peak']:6.0f} "
                         f"{v['cpu_pct_all']:6.1f} {v['rss_mb']:8.1f}")
        if "sweep" in result:
            lines += sweep_table(result)
        if "size_sweep" in result:
            lines += size_table(result)
        return "\n".join(lines)


def dhcp_lines(dhcp: dict[str, Any] | None) -> list[str]:
    """The DHCP members' line of the table, if there are any."""
    if not dhcp:
        return []
    rot = dhcp["rotations"]
    return [f"dhcp: {dhcp['members']} members; rotations {rot['ok']} ok, {rot['failed']} failed"
            f"{' ' + json.dumps(rot['failures']) if rot['failures'] else ''}, "
            f"{rot['superseded']} superseded by a move, {rot['released']} addresses released; "
            f"lease ms p50/p99 {dhcp['lease_ms']['p50']}/{dhcp['lease_ms']['p99']}, rotation "
            f"{dhcp['rotation_ms']['p50']}/{dhcp['rotation_ms']['p99']}; "
            f"{dhcp['address_changes']} address changes, {dhcp['addresses_held_at_end']} "
            "held at the end"]


def dns_line(dns: dict[str, Any] | None) -> str:
    """The DNS plane's load over the moves, one line (a run kept before it was counted: -)."""
    if not dns:
        return "dns: -"
    q, u = dns["bind_queries_per_s"], dns["bind_updates_per_s"]
    return (f"dns: resolver {dns['unbound_queries_per_s']} queries/s "
            f"({dns['unbound_queries_per_handoff']} per handoff, "
            f"{dns['unbound_cachemiss_per_s']} cache misses/s); BIND queries/s mean/peak "
            f"{q['mean']}/{q['peak']}, UPDATEs/s {u['mean']}/{u['peak']}")


# The columns a size sweep's and a rate sweep's tables share, after their own first ones.
HANDOFF_COLUMNS = f"{'ok':>6s} {'failed':>6s} {'reroute p50/p99':>16s}"


def handoff_cells(point: dict[str, Any]) -> str:
    """A sweep point's HANDOFF_COLUMNS."""
    h, rr = point["handoffs"], point["reroute_ms"]
    return f"{h['ok']:6d} {h['failed']:6d} {str(rr['p50']) + '/' + str(rr['p99']):>16s}"


def size_table(result: dict[str, Any]) -> list[str]:
    """One line per population size of a size sweep, then the memory per additional MN
    between neighbouring sizes."""
    roles = sorted({k for p in result["size_sweep"] for k in p["host_routes_peak_by_role"]})
    lines = ["size sweep: host routes' peak on the busiest router of each role; away: MNs "
             "the moves left away from home",
             f"{'MNs':>6s} {'up s':>6s} {HANDOFF_COLUMNS} {'away':>6s} {'procs MB':>8s} "
             f"{'machine MB':>10s} " + " ".join(f"{r:>7s}" for r in roles)]
    for p in result["size_sweep"]:
        lines.append(f"{p['mobiles']:6d} {p['up_s']:6.1f} {handoff_cells(p)} "
                     f"{p['mobiles_away_at_end']:6d} {p['rss_mb_added']:8.1f} "
                     f"{p['machine_mb_added']!s:>10s} "
                     + " ".join(f"{p['host_routes_peak_by_role'].get(r, 0):7d}" for r in roles))
    for what, rows in result["memory_by_difference"].items():
        lines.append(f"memory per additional MN ({what}): " + (", ".join(
            f"{r['from']}->{r['to']} {r['mb_per_mobile']:g} MB" for r in rows) or "-"))
    return lines


def sweep_table(result: dict[str, Any]) -> list[str]:
    """One line per rate of a sweep: handoffs, reroute and auth, the machine's idle share,
    and the CPU of each kind's processes together (percent of one core)."""
    kinds = sorted({k for p in result["sweep"] for k in p["cpu_pct_all"]})
    lines = [f"sweep: knee (reroute p99 > {result['knee_p99_ms']:g} ms or a failure) at "
             f"{result['knee_rate_per_s'] or 'none of the rates'}",
             f"{'rate/s':>7s} {'got/s':>6s} {HANDOFF_COLUMNS} "
             f"{'auth p99':>8s} {'idle %':>6s} " + " ".join(f"{k[:9]:>9s}" for k in kinds)]
    for p in result["sweep"]:
        lines.append(f"{p['rate_per_s']:7g} {p['achieved_rate_per_s']:6.1f} {handoff_cells(p)} "
                     f"{p['auth_ms']['p99']!s:>8s} "
                     f"{p['machine_cpu_pct'].get('idle', '-')!s:>6s} "
                     + " ".join(f"{p['cpu_pct_all'].get(k, 0.0):9.1f}" for k in kinds))
    return lines


def _done(value: dict[str, Any]) -> Future[dict[str, Any]]:
    fut: Future[dict[str, Any]] = Future()
    fut.set_result(value)
    return fut


def bind_logs(topo: Topology, out_dir: Path) -> tuple[list[float], list[float]]:
    """The times of BIND's queries and of its UPDATEs, from the DNS node's kept logs (none
    in a run kept before they were)."""
    node = topo.service("dns").name
    queries, log = out_dir / f"{node}.{QUERY_LOG}", out_dir / f"{node}.{NAMED_LOG}"
    return ([q.t for q in dnscount.parse_query_log(queries.read_text(errors="replace"))]
            if queries.exists() else [],
            [t for t, _ in dnscount.parse_update_log(log.read_text(errors="replace"))]
            if log.exists() else [])


def updates(topo: Topology, out_dir: Path) -> dict[str, list[measure.BgpRx]]:
    out = {}
    for r in topo.routers:
        path = out_dir / f"{r.name}.{UPDATES_LOG}"
        if path.exists():
            out[r.name] = measure.parse_bgpd_log(path.read_text(errors="replace"))
    return out


# Per family: an MN's host route's (version, length), and which of its routes count.
HOST_ROUTES: dict[str, tuple[tuple[int, int], Callable[[measure.RouteEvent], bool]]] = {
    "ipv4": ((4, 32), counted), "ipv6": ((6, 64), counted6)}


def host_route_counts(events: list[measure.RouteEvent], t_from: float, t_end: float,
                      family: str = "ipv4") -> tuple[dict[str, int], dict[str, int]]:
    """(peak, end) number of the family's host routes (/32s, or MN /64s) per router off an
    access link, replaying the events."""
    shape, keep = HOST_ROUTES[family]
    present: dict[str, set[tuple[IPv4Network | IPv6Network, int]]] = {}
    peak: dict[str, int] = {}
    for ev in sorted(events, key=lambda e: e.ts):
        if ev.ts > t_end or (ev.dst.version, ev.dst.prefixlen) != shape:
            continue
        table = present.setdefault(ev.node, set())
        key = (ev.dst, ev.metric)
        if ev.kind == "add" and keep(ev):
            table.add(key)
        else:
            table.discard(key)
        if ev.ts >= t_from:
            peak[ev.node] = max(peak.get(ev.node, 0), len(table))
    end = {n: len(t) for n, t in present.items()}
    return ({n: max(peak.get(n, 0), end[n]) for n in end}, end)


def _pct(xs: list[float]) -> dict[str, float | None]:
    return {"p50": percentile_or_none(xs, 0.5, 1), "p99": percentile_or_none(xs, 0.99, 1)}


def _claimed(row: dict[str, Any], family: str) -> IPv4Network | IPv6Network | None:
    """The host route a handoff re-routes and the CN probes: the newest claimed prefix of
    the family (a DHCP member's newest lease)."""
    for text in row.get("claimed") or ():
        net = ip_network(text)
        if (net.version == 4) == (family == "ipv4"):
            return net
    return None


def ar_events(topo: Topology, out_dir: Path) -> list[dict[str, Any]]:
    """Every AR's kept event log, one list: where the analysis finds leases ended and the
    reasons claims were refused."""
    out: list[dict[str, Any]] = []
    for ar in topo.by_role(Role.AR):
        path = out_dir / f"{ar.name}.{Layout.EVENTS}"
        if path.exists():
            out += [{**ev, "ar": ar.name} for ev in read_jsonl(path)]
    return out


def lease_ends(events: Sequence[dict[str, Any]]) -> dict[str, list[float]]:
    """Per address, when its owner AR ended a lease of it (released, refused at the
    remote-renewal limit, expired): the moment its host route starts to go, which the lease
    keeper's polls see a second late."""
    out: dict[str, list[float]] = {}
    for ev in events:
        if ev.get("ev") == "lease_ended" and ev.get("addr"):
            out.setdefault(str(ev["addr"]), []).append(float(ev["t"]))
    return {a: sorted(ts) for a, ts in out.items()}


_SPECIFIC = re.compile(r"\b\d+\.\d+\.\d+\.\d+(/\d+)?\b|\b[\w-]+\.example\b")


def with_refusals(rows: list[dict[str, Any]], events: Sequence[dict[str, Any]]
                  ) -> list[dict[str, Any]]:
    """Each handoff the AR did not re-route, with the AR's reasons (its `checked` event for
    that MN between the AUTH and the reply) under "refused"."""
    checked: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for ev in events:
        if ev.get("ev") == "checked" and ev.get("refused"):
            checked.setdefault((str(ev["ar"]), str(ev.get("mn"))), []).append(ev)
    out = []
    for r in rows:
        if r.get("not_rerouted") and r.get("t_auth_sent"):
            t0, t1 = float(r["t_auth_sent"]), float(r.get("t_reply") or r["t_auth_sent"])
            hit = next((ev for ev in checked.get((str(r.get("to")), f"{r['mn']}.example"), [])
                        if t0 - 0.01 <= float(ev["t"]) <= t1 + 0.01), None)
            if hit is not None:
                r = {**r, "refused": hit["refused"]}
        out.append(r)
    return out


def refusal_reason(row: dict[str, Any]) -> str:
    """The failure's name for a handoff not re-routed: the AR's first reason, its addresses
    and names taken out so that like refusals count together."""
    reasons = sorted((row.get("refused") or {}).values())
    if not reasons:
        return "not re-routed"
    return "not re-routed: " + _SPECIFIC.sub("<>", str(reasons[0]))


def target_periods(leases: Sequence[dict[str, Any]]) -> dict[str, list[tuple[str, float, float]]]:
    """Per DHCP member, when the CN probed which of its addresses: the newest it held, from
    the lease keeper's records (an MN left with none keeps its last target)."""
    out: dict[str, list[tuple[str, float, float]]] = {}
    for rec in leases:
        held = rec["addresses"]
        periods = out.setdefault(rec["mn"], [])
        if not held or (periods and periods[-1][0] == held[0]):
            continue
        t = float(rec["t"])
        if periods:
            periods[-1] = (periods[-1][0], periods[-1][1], t)
        periods.append((held[0], t, math.inf))
    return out


def _probed(replies: list[measure.PingReply], periods: list[tuple[str, float, float]],
            address: str, t: float, interval: float
            ) -> tuple[list[measure.PingReply], float] | None:
    """The replies of ``address`` while it was the MN's target around ``t``, and when that
    ended; None if it was not the target then (another MN may hold it at other times).
    They are numbered from 1 at the period's start, as a ping started then would number
    them: the slot's earlier sequence numbers went to the MN's earlier address."""
    for addr, t0, t1 in periods:
        if addr == address and t0 <= t <= t1:
            got = [r for r in replies if t0 <= r.send_ts <= t1]
            if not got:
                return [], t1
            first = got[0].seq - max(0, math.floor((got[0].send_ts - t0) / interval))
            return [dataclasses.replace(r, seq=r.seq - first + 1) for r in got], t1
    return None


def _window_end(row: dict[str, Any], dst: IPv4Network | IPv6Network, w1: float,
                rotations: dict[str, list[float]], ends: dict[str, list[float]]) -> float:
    """A handoff's window ends at the MN's next move, or sooner at its next rotation or
    when the lease of the address measured ends: after that, its route goes by design."""
    t = float(row["t_auth_sent"])
    later = [x for x in (*rotations.get(row["mn"], ()), *ends.get(str(dst.network_address), ()))
             if x > t]
    return float(min([w1, *later]))


def family_figures(family: str, topo: Topology, rows: list[dict[str, Any]], ok: list[int],
                   events: list[measure.RouteEvent], probe: str, interval: float,
                   t_start: float, t_end: float, where: dict[str, str],
                   leases: Sequence[dict[str, Any]] = (),
                   leased_at_end: dict[str, list[str]] | None = None,
                   ends: dict[str, list[float]] | None = None) -> dict[str, Any]:
    """One family's share of the JSON: each successful handoff's re-route of the MN's /32
    (or /64) on every router and its interruption at the CN's prober, then the host routes
    per router and those left behind. A DHCP member is measured at the address its AUTH
    claimed first (its newest), its window cut at its next rotation or lease change."""
    members = topo.population_nodes
    dsts: dict[str, IPv4Network | IPv6Network] = {}
    for n, m in members.items():
        if family == "ipv4" and m.address is not None:
            dsts[n] = IPv4Network((m.address, 32))
        elif family == "ipv6" and m.prefix6 is not None:
            dsts[n] = m.prefix6
    by_key: dict[tuple[str, IPv4Network | IPv6Network], list[measure.RouteEvent]] = {}
    for ev in events:
        by_key.setdefault((ev.node, ev.dst), []).append(ev)
    routers = [r.name for r in topo.routers]
    replies = {src: measure.parse_ping(text) for src, text in split_probe(probe).items()}
    next_move: dict[int, float] = {}
    last_by_mn: dict[str, int] = {}
    ok_set = set(ok)
    # A handoff after one that failed starts from an MN already cut off: its probes' gap is
    # that failure's outage (counted under failures), not this handoff's interruption.
    after_failure: set[int] = set()
    for i, r in enumerate(rows):
        if r.get("kind") == "rotate" or r.get("skipped"):
            continue
        if r["mn"] in last_by_mn:
            last = last_by_mn[r["mn"]]
            next_move[last] = float(r.get("t_attach") or 0.0)
            if last not in ok_set and not rows[last].get("superseded"):
                after_failure.add(i)
        last_by_mn[r["mn"]] = i
    rotations: dict[str, list[float]] = {}
    for r in rows:
        if r.get("kind") == "rotate" and r.get("t_start"):
            rotations.setdefault(r["mn"], []).append(float(r["t_start"]))
    periods = target_periods(leases) if family == "ipv4" else {}
    reroute, interruption = [], []
    for i in ok:
        r = rows[i]
        dst = _claimed(r, family) or dsts.get(r["mn"])
        if dst is None:
            continue
        t_auth = float(r["t_auth_sent"])
        w1 = _window_end(r, dst, next_move.get(i, t_end) or t_end, rotations, ends or {})
        # The old AR's redirect (its own metric) bridges the reroute; it is not one.
        settled = [measure.settled_at(by_key.get((n, dst), []), n, dst, t_auth, w1,
                                      REDIRECT)
                   for n in routers]
        reroute.append((max(settled) - t_auth) * 1000.0)
        # The CN probes the first address of a /64 (render/population.py).
        probed = str(dst.network_address + (1 if family == "ipv6" else 0))
        got = replies.get(probed)
        if i in after_failure:
            got = []
        if got and r["mn"] in periods:
            # A DHCP member's address is probed only while it is its newest, and may be
            # another MN's before or after.
            span = _probed(got, periods[r["mn"]], probed, float(r["t_attach"]), interval)
            got, w1 = (span[0], min(w1, span[1])) if span else ([], w1)
        if got:
            with contextlib.suppress(measure.MeasureError):
                interruption.append(measure.ping_window(
                    got, float(r["t_attach"]) - interval, w1, interval)[0])
    keep = HOST_ROUTES[family][1]
    peak, end = host_route_counts(events, t_start, t_end, family)
    stale: Counter[str] = Counter()
    owed = _owed(topo, family, dsts, where, leased_at_end or {})
    ours = _ours(family, dsts, leases)
    for (n, d), evs in by_key.items():
        if d in ours and d not in owed and measure.final_state(
                [e for e in evs if keep(e)], n, d, t_end) is not None:
            stale[n] += 1
    return {"family": family, "reroute_ms": _pct(reroute), "interruption_ms": _pct(interruption),
            "interruption_samples": len(interruption),
            "host_routes": {"peak": dict(sorted(peak.items())), "end": dict(sorted(end.items()))},
            "stale_host_routes": dict(sorted(stale.items()))}


def _ours(family: str, dsts: dict[str, IPv4Network | IPv6Network],
          leases: Sequence[dict[str, Any]]) -> set[IPv4Network | IPv6Network]:
    """Every host route the population could have caused: its provisioned prefixes and
    every address a DHCP member held."""
    out: set[IPv4Network | IPv6Network] = set(dsts.values())
    if family == "ipv4":
        out |= {IPv4Network((a, 32)) for lease in leases for a in lease["addresses"]}
    return out


def dhcp_figures(params: dict[str, Any], rows: list[dict[str, Any]],
                 leases: Sequence[dict[str, Any]], measured: dict[str, Any]) -> dict[str, Any]:
    """The DHCP members' share: how many, their rotations (ok, failed with the reason, the
    addresses released, how long a lease and the whole rotation took) and how often their
    addresses changed otherwise (a lease lost at the remote-renewal limit, taken again)."""
    rot = [r for r in rows if r.get("kind") == "rotate" and not r.get("superseded")]
    ok = [r for r in rot if r.get("ok")]
    failures = Counter(str(r.get("error", "unknown")).split(":")[0] for r in rot
                       if not r.get("ok"))
    changes = Counter(lease["mn"] for lease in leases)
    return {"members": params.get("dhcp_members"), "rotate_share": params.get("rotate"),
            "rotations": {"attempted": len(rot), "ok": len(ok), "failed": len(rot) - len(ok),
                          "failures": dict(failures),
                          "superseded": sum(1 for r in rows if r.get("kind") == "rotate"
                                            and r.get("superseded")),
                          "released": sum(len(r.get("released") or ()) for r in ok)},
            "lease_ms": _pct([(float(r["t_bound"]) - float(r["t_start"])) * 1000 for r in ok]),
            "rotation_ms": _pct([(float(r["t_done"]) - float(r["t_start"])) * 1000
                                 for r in ok]),
            # Every change of a member's addresses the keeper saw (its first lease included).
            "address_changes": sum(changes.values()),
            "addresses_held_at_end": sum(len(a) for a in
                                         (measured.get("leased_at_end") or {}).values()),
            "lease_poll_errors": measured.get("lease_poll_errors", 0)}


def _owed(topo: Topology, family: str, dsts: dict[str, IPv4Network | IPv6Network],
          where: dict[str, str], leased_at_end: dict[str, list[str]]
          ) -> set[IPv4Network | IPv6Network]:
    """The host routes the end state should have: an address an MN still holds, away from
    the AR whose pool it came from (draft 2.2)."""
    members = topo.population_nodes
    out: set[IPv4Network | IPv6Network] = set()
    for n, m in members.items():
        at = topo.nodes[where.get(n, m.home)]
        if n in leased_at_end and family == "ipv4":
            for a in leased_at_end[n]:
                if at.pool is None or IPv4Network((a, 32)).network_address not in at.pool:
                    out.add(IPv4Network((a, 32)))
        elif n in dsts and where.get(n, m.home) != m.home:
            out.add(dsts[n])
    return out


def summarise(topo: Topology, params: dict[str, Any], measured: dict[str, Any],
              rows: list[dict[str, Any]], events: list[measure.RouteEvent],
              probes: dict[str, str], samples: list[dict[str, Any]],
              rx: dict[str, list[measure.BgpRx]], t_end: float,
              dns_logs: tuple[list[float], list[float]] = ([], []),
              leases: Sequence[dict[str, Any]] = (),
              ends: dict[str, list[float]] | None = None) -> dict[str, Any]:
    """The issue's JSON from the raw files; ``probes``: the prober's output per family;
    ``dns_logs``: the times of BIND's queries and of its UPDATEs. The top level is IPv4's;
    a dual-stack run adds its IPv6 figures under "ipv6"."""
    mobiles = int(params["mobiles"])
    families = list(params.get("families") or ["ipv4"])
    failures: Counter[str] = Counter()
    auth, queued, ok_rows = [], [], []
    attempted = superseded = 0
    for i, r in enumerate(rows):
        if r.get("skipped") or r.get("kind") == "rotate":
            continue
        if r.get("superseded"):
            superseded += 1  # the MN left the cell before the AR answered: not a handoff
            continue
        attempted += 1
        if not r.get("ok"):
            failures[str(r.get("error", "unknown")).split(":")[0]] += 1
            continue
        if r.get("not_rerouted"):
            failures[refusal_reason(r)] += 1
            continue
        ok_rows.append(i)
        auth.append(float(r["auth_ms"]))
        queued.append((float(r["t_auth_sent"]) - float(r["t_attach"])) * 1000.0)
    t_start = float(measured.get("t_start", 0.0))
    where = measured.get("where", {})
    interval = float(params["probe_interval_s"])
    figures = {fam: family_figures(fam, topo, rows, ok_rows, events, probes.get(fam, ""),
                                   interval, t_start, t_end, where, leases,
                                   measured.get("leased_at_end"), ends)
               for fam in ("ipv4", *(["ipv6"] if "ipv6" in families else []))}
    v4 = figures["ipv4"]
    ups: dict[str, float] = {}
    for router, lines in rx.items():
        per_s = Counter(int(b.ts) for b in lines if t_start <= b.ts <= t_end)
        ups[router] = float(max(per_s.values(), default=0))
    up = measured.get("up", {})
    rss_delta = float(measured.get("rss_mb_up", 0.0)) - float(measured.get("rss_mb_before", 0))
    pss_delta = (float(measured["pss_mb_up"]) - float(measured["pss_mb_before"])
                 if "pss_mb_up" in measured and "pss_mb_before" in measured else None)
    used_before, used_up = measured.get("machine_mb_before"), measured.get("machine_mb_up")
    machine_delta = float(used_up) - float(used_before) \
        if used_before is not None and used_up is not None else None
    duration = float(params["duration_s"])
    processes = procstat.by_kind(samples)
    return {
        # Every MN claims its /32; in a dual-stack run its /64 too, in the same AUTH.
        "scenario": "population", "family": "ipv4", "families": families, "mobiles": mobiles,
        "up_s": up.get("up_s"),
        "up_steps_s": up, "rate_per_s": params["rate_per_s"], "duration_s": duration,
        "model": params["model"], "achieved_rate_per_s": round(attempted / duration, 2),
        "handoffs": {"attempted": attempted, "ok": len(ok_rows),
                     "failed": attempted - len(ok_rows), "failures": dict(failures),
                     "superseded": superseded,
                     # A failed handoff's AUTH, tried again at the same AR until answered:
                     # how many were answered before the end, gave up, were still trying.
                     "recovered": (measured.get("recovery") or {}).get("recovered"),
                     "unrecovered": (measured.get("recovery") or {}).get("unrecovered"),
                     "recovering_at_end": (measured.get("recovery") or {}).get("recovering")},
        # From the radio's move to the AUTH leaving the MN: the driver's and the agent's share.
        "auth_queue_ms": _pct(queued),
        "auth_ms": _pct(auth), "reroute_ms": v4["reroute_ms"],
        "interruption_ms": v4["interruption_ms"],
        "interruption_samples": v4["interruption_samples"],
        # The machine's input-backlog drops over the moves (any lab's packets, DNS too).
        "backlog_drops": measured.get("backlog_drops"),
        # The whole machine's CPU by state over the moves, percent of all its cores: what
        # the processes' figures below leave out (the kernel's packet work, other work).
        "machine_cpu_pct": measured.get("machine_cpu_pct", {}),
        # Per node, what its namespace's kernel dropped or refused over the moves
        # (procstat.DROP_COUNTERS), and each counter summed over the nodes.
        "kernel_drops": {"by_node": measured.get("kernel_drops", {}),
                         "total": procstat.drop_totals(measured.get("kernel_drops", {}))},
        "host_routes": v4["host_routes"], "stale_host_routes": v4["stale_host_routes"],
        **({"dhcp": dhcp_figures(params, rows, leases, measured)}
           if params.get("dhcp_members") else {}),
        **({"ipv6": figures["ipv6"]} if "ipv6" in figures else {}),
        "updates_per_s": {"peak": dict(sorted(ups.items()))},
        # How many MNs the moves left away from home: the routing state they should cost.
        "mobiles_away_at_end": sum(1 for n, m in topo.population_nodes.items()
                                   if where.get(n, m.home) != m.home),
        "dns": dns_load(measured.get("unbound", {}), *dns_logs, t_start, t_end, len(ok_rows)),
        "cpu_pct": {k: v["cpu_pct"] for k, v in processes.items()},
        # Every process of the kind together, percent of one core (the sweep's curves).
        "cpu_pct_all": {k: v["cpu_pct_all"] for k, v in processes.items()},
        "rss_mb": {k: v["rss_mb"] for k, v in processes.items()},
        "processes": processes,
        # Processes' RSS only, by difference between the lab without and with the
        # population; the kernel's share (veths, routes, rules) is measured in docs/scale.md.
        "memory_mb_per_mobile": round(rss_delta / mobiles, 4) if mobiles else None,
        "rss_mb_added": round(rss_delta, 2),
        # The same by PSS: shared pages counted once among their sharers (a DHCP member's
        # udhcpc shows 2.2 MB of RSS and 0.12 MB of PSS).
        "pss_mb_added": round(pss_delta, 2) if pss_delta is not None else None,
        "pss_mb_per_mobile": round(pss_delta / mobiles, 4)
        if pss_delta is not None and mobiles else None,
        # The machine's memory in use, by the same difference: the kernel's share too
        # (veths, routes, neighbour entries), and whatever else moved meanwhile.
        "machine_mb_added": round(machine_delta, 1) if machine_delta is not None else None,
        "machine_mb_per_mobile": round(machine_delta / mobiles, 4)
        if machine_delta is not None and mobiles else None,
    }
