"""`flatarch scenario soak --minutes M [--rate R]`: handoffs (and a DHCP MN's address rotations)
at a steady rate for M minutes, sampling every daemon's and agent's RSS, open descriptors and
CPU each minute from /proc of the pids in the lab's pid files, with the FIB and RIB sizes.
A handoff's re-route time is read from every router's kernel route events, not the AUTH's.
With ``--family ipv6|both`` every provisioned MN is dual-stack: each handoff's /64 re-route is
read the same way, and the end's route check covers the /64s (issue 18).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import time
from collections.abc import Iterable, Mapping
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any, Self

from agents.stats import percentile_or_none
from topologies.analysis import measure
from topologies.lab.daemons import DeadlineError, LabError, wait_until
from topologies.lab.lab import Lab
from topologies.model import Role
from topologies.scenarios.base import (
    FAMILIES,
    REDIRECT,
    ROUTES,
    Progress,
    RunDir,
    Scenario,
    provisioned_address,
    read_jsonl,
    wait_for_clock,
    write_jsonl,
)
from topologies.scenarios.faults import (
    agent_status,
    dual_stack_prefixes,
    managed6,
    route_check,
    route_check6,
)
from topologies.scenarios.handoff import add_family_argument, dual_stack_topology
from topologies.scenarios.mobility import ar_adjacency
from topologies.scenarios.progress import Eta
from topologies.scenarios.registry import register

HANDOFFS = "handoffs.jsonl"  # one line per handoff or rotation
SAMPLES = "samples.jsonl"  # one line per minute: per kind, RSS, fds, CPU; FIB and RIB sizes
SAMPLE_S = 60.0
WINDOW_S = 600.0  # the "first 10 min" and "last 10 min"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_sample(pid: int) -> tuple[int, int, float] | None:
    """(RSS kB, open descriptors, CPU seconds) of one process, None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            rss = next((int(line.split()[1]) for line in fh if line.startswith("VmRSS:")), 0)
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return rss, fds, cpu


def sample(lab: Lab) -> dict[str, Any]:
    """Per daemon kind, summed over its nodes: RSS, descriptors, CPU; and the ARs' RIB and
    FIB sizes from their status."""
    kinds: dict[str, dict[str, float]] = {}
    for ds in lab.daemons.values():
        for d in ds:
            pid = d.pid()
            got = proc_sample(pid) if pid is not None else None
            k = kinds.setdefault(d.kind, {"procs": 0, "rss_kb": 0, "fds": 0, "cpu_s": 0.0})
            if got is not None:
                k["procs"] += 1
                k["rss_kb"] += got[0]
                k["fds"] += got[1]
                k["cpu_s"] = round(k["cpu_s"] + got[2], 2)
    ars = [agent_status(lab, a.name) for a in lab.topo.by_role(Role.AR)]
    return {"t": time.time(), "kinds": kinds,
            "rib_prefixes": sum(int(s.get("rib_prefixes", 0)) for s in ars),
            "fib_routes": sum(len(s.get("fib_routes", {})) for s in ars)}


@register
class SoakScenario(Scenario):
    name = "soak"
    help = "handoffs and rotations at a steady rate for minutes; RSS, fds, CPU sampled"

    def __init__(self, lab: Lab, *, minutes: float = 60.0, rate: float = 2.0, seed: int = 20,
                 out_dir: Path | None = None, progress: Progress | None = None,
                 families: list[str] | None = None) -> None:
        super().__init__(lab, None, progress, out_dir)
        if not minutes > 0 or not rate > 0:
            raise LabError(f"soak needs minutes > 0 and a rate > 0 (got {minutes}, {rate})")
        self.minutes, self.rate, self.seed = minutes, rate, seed
        self.mobiles = [m for m in lab.mobiles if m not in self.topo.dhcp_mobiles]
        self.rotating = [m for m in lab.mobiles if m in self.topo.dhcp_mobiles]
        self.addresses = {m: provisioned_address(self.topo, m) for m in self.mobiles}
        self.families = families or ["ipv4"]
        self.prefixes = dual_stack_prefixes(self.topo, self.mobiles, self.families)

    def params(self) -> dict[str, Any]:
        return {"minutes": self.minutes, "rate": self.rate, "seed": self.seed,
                "mobiles": self.mobiles, "rotating": self.rotating, "families": self.families,
                # The /64s measured, recorded: the run's topology file may be the shipped
                # one a test's dual-stack copy was made from.
                "prefixes6": {m: str(p) for m, p in self.prefixes.items()}}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        for flag, default, what in (("--minutes", 60.0, "how long to run"),
                                    ("--rate", 2.0, "handoffs and rotations a second")):
            parser.add_argument(flag, type=float, default=default, help=what)
        add_family_argument(parser, "handoff")

    @classmethod
    def topology_for(cls, args: argparse.Namespace, out_dir: Path) -> Path:
        return dual_stack_topology(args, out_dir, every=True)

    @classmethod
    def from_args(cls, lab: Lab, args: argparse.Namespace, out_dir: Path) -> Self:
        return cls(lab, out_dir=out_dir, families=FAMILIES[getattr(args, "family", "ipv4")],
                   **{k: getattr(args, k) for k in ("minutes", "rate")})

    def _step(self, rng: random.Random, adj: dict[str, set[str]], n: int) -> dict[str, Any]:
        """Every fifth step a rotation when a DHCP MN exists, else a handoff of the next MN
        to a neighbour of its AR."""
        assert self.lab.radio is not None
        t = time.time()
        if self.rotating and n % 5 == 4:
            mn = self.rotating[(n // 5) % len(self.rotating)]
            try:
                ans = self.lab.control(mn).request({"cmd": "rotate"}, timeout=5)
            except Exception as exc:  # noqa: BLE001 - counted as a failure, the soak goes on
                ans = {"ok": False, "error": str(exc)}
            return {"kind": "rotate", "mn": mn, "t": t, "ok": bool(ans.get("ok")),
                    "error": ans.get("error")}
        mn = self.mobiles[n % len(self.mobiles)]
        here = self.lab.radio.where[mn]
        to = rng.choice(sorted(adj[here]))
        try:
            rec = self.lab.handoff(mn, to)
        except LabError as exc:
            rec = {"ok": False, "error": str(exc)}
        ok = bool(rec.get("ok")) and not rec.get("not_rerouted")
        return {"kind": "handoff", "mn": mn, "from": here, "to": to, "t": t, "ok": ok,
                "auth_ms": rec.get("auth_ms"), "t_attach": rec.get("t_attach"),
                "t_auth_sent": rec.get("t_auth_sent"), "error": rec.get("error"),
                "not_rerouted": rec.get("not_rerouted")}

    def measure(self) -> None:
        duration = self.minutes * 60.0
        steps = max(1, int(duration * self.rate))
        self.progress(f"soak: {self.minutes:g} min, {self.rate:g}/s ({steps} steps), "
                      f"sampling every {SAMPLE_S:.0f} s")
        rng = random.Random(self.seed)
        adj = ar_adjacency(self.topo)
        rows: list[dict[str, Any]] = []
        samples = [sample(self.lab)]
        t0 = time.time()
        self.note(t_start=t0)
        every = max(1, int(self.rate * 10))  # a progress line every ten seconds or so
        eta = Eta(max(1, (steps - 1) // every), self.progress)
        next_sample = t0 + SAMPLE_S
        with contextlib.ExitStack() as stack:
            # Every router's route changes in the managed range, kept whatever happens: each
            # handoff's re-route is read from them.
            self.watch_routes(stack, [str(self.topo.managed), *managed6(self.topo, self.families)])
            stack.callback(write_jsonl, self.dir / SAMPLES, samples)
            stack.callback(write_jsonl, self.dir / HANDOFFS, rows)
            stack.callback(eta.done)
            for n in range(steps):
                wait_for_clock(t0 + n / self.rate)
                rows.append(self._step(rng, adj, n))
                if time.time() >= next_sample:
                    samples.append(sample(self.lab))
                    next_sample += SAMPLE_S
                    # Kept as it goes: a soak stopped early still shows how far it came.
                    write_jsonl(self.dir / HANDOFFS, rows)
                    write_jsonl(self.dir / SAMPLES, samples)
                if n and n % every == 0:
                    eta.step(f"{sum(not r['ok'] for r in rows)} failed")
            wait_for_clock(t0 + duration)
            counts = {"stale": -1, "missing": -1, "stale6": -1, "missing6": -1}

            def clean() -> bool:
                counts["stale"], counts["missing"] = route_check(self.lab, self.addresses)
                if self.prefixes:
                    counts["stale6"], counts["missing6"] = route_check6(self.lab, self.prefixes)
                return not any(v for k, v in counts.items() if self.prefixes or "6" not in k)

            with contextlib.suppress(DeadlineError):  # reported as counted
                wait_until(clean, 30, "host routes to settle after the soak", 0.2)
            samples.append(sample(self.lab))
            six = ({"stale6_routes_end": counts["stale6"],
                    "missing6_routes_end": counts["missing6"]} if self.prefixes else {})
            self.note(stale_routes_end=counts["stale"], missing_routes_end=counts["missing"],
                      t_end=time.time(), **six)

    @classmethod
    def analyse(cls, out_dir: Path) -> dict[str, Any]:
        run = RunDir.open(out_dir)
        rows = read_jsonl(out_dir / HANDOFFS)
        samples = read_jsonl(out_dir / SAMPLES)
        m = run.measured
        routes = out_dir / ROUTES
        families = list(run.params.get("families") or ["ipv4"])
        if routes.exists():
            events = measure.parse_route_events(routes.read_text())
            addresses = {mn: IPv4Network((provisioned_address(run.topo, mn), 32))
                         for mn in run.params["mobiles"]}
            routers = [r.name for r in run.topo.routers]
            t_end = float(m.get("t_end", math.inf))
            rows = reroutes(rows, events, addresses, routers, t_end)
            if "ipv6" in families:
                six: dict[str, IPv4Network | IPv6Network] = {
                    m: IPv6Network(p) for m, p in (run.params.get("prefixes6") or {}).items()}
                rows = reroutes(rows, events, six, routers, t_end, key="reroute6_ms")
        result = summarise(float(run.params["minutes"]), float(m.get("t_start", 0.0)), rows,
                           samples, int(m.get("stale_routes_end", -1)),
                           int(m.get("missing_routes_end", -1)))
        result["families"] = families
        if "ipv6" in families:
            result["ipv6"] = {"family": "ipv6", **reroute_summary(
                rows, "reroute6_ms", float(m.get("t_start", 0.0)),
                float(run.params["minutes"])),
                "stale_routes_end": int(m.get("stale6_routes_end", -1)),
                "missing_routes_end": int(m.get("missing6_routes_end", -1))}
        return result

    @staticmethod
    def table(result: dict[str, Any]) -> str:
        r = result["reroute_ms"]
        six = result.get("ipv6")
        extra = (["ipv6: reroute ms: " + ", ".join(f"{k} {v}" for k, v in
                                                     six["reroute_ms"].items())
                  + f"; stale /64s at the end {six['stale_routes_end']}, missing "
                  f"{six['missing_routes_end']}"] if six else [])
        lines = [f"soak {result['minutes']:g} min: {result['handoffs']} handoffs "
                 f"({result['failed']} failed), {result['rotations']} rotations "
                 f"({result['rotations_failed']} failed), stale routes at the end "
                 f"{result['stale_routes_end']}",
                 "reroute ms: " + ", ".join(f"{k} {v}" for k, v in r.items()),
                 "auth ms: " + ", ".join(f"{k} {v}" for k, v in result["auth_ms"].items()),
                 *extra,
                 f"{'kind':10s} {'rss_growth_%':>12s} {'fd_growth':>9s} {'cpu_s':>8s}"]
        for k in sorted(result["rss_growth_pct"]):
            lines.append(f"{k:10s} {result['rss_growth_pct'][k]:12.1f} "
                         f"{result['fd_growth'][k]:9d} {result['cpu_s'].get(k, 0):8.1f}")
        return "\n".join(lines)


def _p99(values: Iterable[float]) -> float | None:
    return percentile_or_none(values, 0.99, 3)


def reroutes(rows: list[dict[str, Any]], events: list[measure.RouteEvent],
             addresses: Mapping[str, IPv4Network | IPv6Network], routers: list[str],
             t_end: float, key: str = "reroute_ms") -> list[dict[str, Any]]:
    """The rows, each successful handoff of an MN in ``addresses`` given its re-route
    (under ``key``): from the AUTH leaving the MN until the last router settled for good on
    its route to the MN's /32 (or /64), within the window that ends at that MN's next move
    (the population's measure)."""
    by_key: dict[tuple[str, IPv4Network | IPv6Network], list[measure.RouteEvent]] = {}
    for ev in events:
        by_key.setdefault((ev.node, ev.dst), []).append(ev)
    moves: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if r["kind"] == "handoff" and r.get("t_attach") is not None:
            moves.setdefault(r["mn"], []).append(i)
    out = [dict(r) for r in rows]
    for mn, idx in moves.items():
        dst = addresses.get(mn)
        if dst is None:
            continue
        until = {a: float(rows[b]["t_attach"]) for a, b in zip(idx, idx[1:], strict=False)}
        chosen = [i for i in idx if rows[i]["ok"] and rows[i].get("t_auth_sent") is not None]
        windows = [(float(rows[i]["t_auth_sent"]), until.get(i, t_end)) for i in chosen]
        settled = [measure.settled_series(by_key.get((n, dst), []), windows, REDIRECT)
                   for n in routers]
        for k, i in enumerate(chosen):
            last = max((per_router[k] for per_router in settled), default=windows[k][0])
            out[i][key] = round((last - windows[k][0]) * 1000.0, 3)
    return out


def reroute_summary(rows: list[dict[str, Any]], key: str, t_start: float,
                    minutes: float) -> dict[str, Any]:
    """``reroute_ms``: the handoffs' re-route (``key``: the /32's or the /64's) over the
    run and in its first and last windows (10 minutes, or the halves of a shorter run). A
    run from before the route events were read recorded the AUTH's round trip under
    reroute_ms: it is reported as what it is, and its re-route as not measured."""
    ms = [(float(r["t"]), float(r[key])) for r in rows
          if r["kind"] == "handoff" and r["ok"] and "auth_ms" in r and r.get(key) is not None]
    window = min(WINDOW_S, minutes * 30.0)
    t_end = t_start + minutes * 60.0
    return {"reroute_ms": {
        "p50": percentile_or_none((v for _, v in ms), 0.5, 3),
        "p99": _p99(v for _, v in ms),
        "p99_first_10min": _p99(v for t, v in ms if t < t_start + window),
        "p99_last_10min": _p99(v for t, v in ms if t >= t_end - window),
    }}


def summarise(minutes: float, t_start: float, rows: list[dict[str, Any]],
              samples: list[dict[str, Any]], stale_end: int, missing_end: int
              ) -> dict[str, Any]:
    """The issue's JSON. Growth is from the first sample after warm-up (one minute in, or the
    first when the run is shorter) to the last; the first and last windows are 10 minutes,
    or the halves of a shorter run."""
    hand = [r for r in rows if r["kind"] == "handoff"]
    rot = [r for r in rows if r["kind"] == "rotate"]
    auth = [float(v) for r in hand if r["ok"]
            and (v := r["auth_ms"] if "auth_ms" in r else r.get("reroute_ms")) is not None]
    base = samples[1] if len(samples) > 2 else samples[0]
    last = samples[-1]
    rss: dict[str, float] = {}
    fds: dict[str, int] = {}
    cpu: dict[str, float] = {}
    for kind, now in last["kinds"].items():
        was = base["kinds"].get(kind, {})
        if was.get("rss_kb"):
            rss[kind] = round(100.0 * (now["rss_kb"] - was["rss_kb"]) / was["rss_kb"], 2)
            fds[kind] = int(now["fds"] - was["fds"])
            cpu[kind] = round(float(now["cpu_s"]) - float(was.get("cpu_s", 0.0)), 2)
    return {
        "scenario": "soak", "minutes": minutes,
        "handoffs": len(hand), "failed": sum(1 for r in hand if not r["ok"]),
        "rotations": len(rot), "rotations_failed": sum(1 for r in rot if not r["ok"]),
        **reroute_summary(rows, "reroute_ms", t_start, minutes),
        "auth_ms": {"p50": percentile_or_none(auth, 0.5, 3),
                    "p99": _p99(auth)},
        "rss_growth_pct": rss, "fd_growth": fds, "cpu_s": cpu,
        "stale_routes_end": stale_end, "missing_routes_end": missing_end,
        "samples": [{"t_s": round(float(s["t"]) - t_start, 1),
                     "rib_prefixes": s["rib_prefixes"], "fib_routes": s["fib_routes"],
                     "rss_kb": {k: v["rss_kb"] for k, v in s["kinds"].items()},
                     "fds": {k: v["fds"] for k, v in s["kinds"].items()}} for s in samples],
        "errors": sorted({str(r.get("error") or r.get("not_rerouted")) for r in rows
                          if not r["ok"]}),
    }
