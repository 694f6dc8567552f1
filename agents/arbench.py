"""What one BGP UPDATE costs an AR agent that takes no part in the handoff (issue 15): ExaBGP
JSON lines of a population's handoffs fed through the agent's own handling (parse, RIB, the
FIB worker, mobility's check, the status write), against a kernel stand-in, without root.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import json
import pstats
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from . import exabgp_api as api
from .ar import STATUS_GAP_S, ArAgent
from .handoff import ArInfo, Mobility
from .netlink import RT_TABLE_MAIN, RTN_UNICAST, RouteInfo, route_message

REFLECTORS = ("10.255.1.1", "10.255.1.2")  # an AR's two route-reflector parents
ME = "ar1"
STATUS_WRITES = 20


class KernelStandIn:
    """The agent's netlink socket without a kernel: every next hop resolves to one gateway,
    and every route change is packed as for the kernel, then counted."""

    def __init__(self) -> None:
        self.replaced = 0
        self.deleted = 0
        self.resolved = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        pass

    def route_get(self, dst: Any) -> RouteInfo:
        with self._lock:
            self.resolved += 1
        return RouteInfo(RTN_UNICAST, RT_TABLE_MAIN, 2, IPv4Address("10.254.0.1"))

    def route_replace(self, **route: Any) -> None:
        route_message(**route)
        with self._lock:
            self.replaced += 1

    def route_delete(self, **route: Any) -> None:
        route_message(**route)
        with self._lock:
            self.deleted += 1

    def neigh_delete(self, address: Any, ifindex: int) -> bool:
        return True  # no kernel, no neighbour table


def ars(count: int) -> dict[str, ArInfo]:
    """``count`` ARs of one cluster, each a /24 pool of 10.64/16 and a loopback."""
    return {f"ar{i}": ArInfo(f"ar{i}", f"ar{i}.isp.test", IPv4Address(f"10.255.0.{i}"),
                             IPv4Network(f"10.64.{i}.0/24"), IPv4Network("10.64.0.0/16"),
                             IPv4Address(f"169.254.1.{i}"))
            for i in range(1, count + 1)}


def update_line(peer: str, counter: int, *, announce: tuple[IPv4Network, IPv4Address, int]
                | None = None, withdraw: IPv4Network | None = None,
                path_id: str = "0.0.0.1") -> str:
    """One UPDATE as ExaBGP 5 writes it to its API process (ADD-PATH, from a reflector)."""
    upd: dict[str, Any] = {}
    if announce is not None:
        prefix, hop, lp = announce
        upd["attribute"] = {"origin": "igp", "local-preference": lp,
                            "originator-id": str(hop), "cluster-list": [peer]}
        upd["announce"] = {"ipv4 unicast": {str(hop): [
            {"nlri": str(prefix), "path-information": path_id}]}}
    if withdraw is not None:
        upd["withdraw"] = {"ipv4 unicast": [{"nlri": str(withdraw),
                                             "path-information": path_id}]}
    return json.dumps({
        "exabgp": "5.0.0", "time": 1_800_000_000.0 + counter / 1000, "host": "ar1",
        "pid": 4242, "ppid": 1, "counter": counter, "type": "update",
        "neighbor": {"address": {"local": "10.255.0.1", "peer": peer},
                     "asn": {"local": 65000, "peer": 65000}, "direction": "receive",
                     "message": {"update": upd}}})


def handoff_lines(routers: dict[str, ArInfo], mobiles: int, handoffs: int,
                  seed_lp: int = 1_800_000_000) -> tuple[list[str], list[str]]:
    """(warm-up, measured) lines. Warm-up: every MN away from its home AR has its /32 at a
    foreign AR (not ours). Measured: each handoff moves one MN to another foreign AR, whose
    /32 arrives from both reflectors, and the previous AR's path is withdrawn from both."""
    others = [a for n, a in sorted(routers.items()) if n != ME]
    homes = list(routers.values())
    where: dict[IPv4Network, int] = {}
    counter = 0
    lp = seed_lp
    warm: list[str] = []

    def lines(prefix: IPv4Network, hop: ArInfo, gone: ArInfo | None) -> Iterator[str]:
        nonlocal counter, lp
        lp += 1
        for rr in REFLECTORS:
            counter += 1
            yield update_line(rr, counter, announce=(prefix, hop.loopback, lp),
                              path_id=str(hop.loopback))
        if gone is not None:
            for rr in REFLECTORS:
                counter += 1
                yield update_line(rr, counter, withdraw=prefix, path_id=str(gone.loopback))

    for m in range(mobiles):
        home = homes[m % len(homes)]
        prefix = IPv4Network((int(home.pool.network_address) + 10 + m // len(homes), 32))
        at = (m + 1) % len(others)
        if others[at] is home:
            at = (at + 1) % len(others)
        where[prefix] = at
        warm += lines(prefix, others[at], None)
    measured: list[str] = []
    moving = sorted(where)
    for h in range(handoffs):
        prefix = moving[(h * 7919) % len(moving)]
        old = where[prefix]
        new = (old + 1 + h % (len(others) - 1)) % len(others)
        where[prefix] = new
        measured += lines(prefix, others[new], others[old])
    return warm, measured


@dataclass(frozen=True)
class BenchConfig:
    mobiles: int = 1000
    ars: int = 8
    handoffs: int = 500
    burst: int = 1  # lines read per turn of the loop: ExaBGP writes a burst at once
    profile: bool = False


async def feed(agent: ArAgent, lines: list[str], burst: int = 1) -> None:
    """The agent's own reading (ArAgent.run): parse each line, handle its event, and let
    the loop turn after each ``burst`` lines; then wait for the FIB worker and the loop's
    callbacks it scheduled."""
    for i, text in enumerate(lines, 1):
        event = api.parse_line(text)
        if event is not None:
            agent.handle(event)
        if i % burst == 0:
            await asyncio.sleep(0)
    await asyncio.wrap_future(agent._fib_thread.submit(lambda: None))
    await asyncio.sleep(0)  # the worker's call_soon_threadsafe arms the status timer
    # The status write the worker scheduled, at most STATUS_GAP_S away: waited for, not
    # guessed at.
    deadline = time.monotonic() + STATUS_GAP_S + 2.0
    while agent._status_timer is not None:
        if time.monotonic() > deadline:
            raise TimeoutError("the agent's status write never came")
        await asyncio.sleep(0.01)


def make_agent(rundir: Path, routers: dict[str, ArInfo]) -> ArAgent:
    """An uninvolved AR's agent as ArAgent.start_auth leaves it, on the kernel stand-in."""
    me = routers[ME]
    agent = ArAgent(ME, rundir, me.pool)
    agent.fib._nl.close()
    agent.fib._nl = KernelStandIn()  # type: ignore[assignment]
    agent.ars = routers
    agent.mobility = Mobility(
        me=me, ars=routers, managed=IPv4Network("10.64.0.0/12"), checker=None,  # type: ignore[arg-type]
        kernel=agent, bgp=agent, rib=agent.rib, redirector=agent.send_redirect,
        mode=agent._mode)
    return agent


def run_bench(config: BenchConfig, progress: Callable[[str], None] = lambda _m: None
              ) -> dict[str, Any]:
    """CPU (all threads of this process) per UPDATE line over the measured handoffs."""
    routers = ars(config.ars)
    warm, measured = handoff_lines(routers, config.mobiles, config.handoffs)
    # cProfile sees only the thread that enabled it: one profiler in the loop's thread, one
    # enabled from inside the FIB worker.
    profiler = cProfile.Profile() if config.profile else None
    worker = cProfile.Profile() if config.profile else None
    with tempfile.TemporaryDirectory(prefix="arbench-") as tmp:
        agent = make_agent(Path(tmp), routers)

        async def main() -> tuple[float, float, float]:
            agent._loop = asyncio.get_running_loop()
            agent._persisting = True
            progress(f"warm-up: {len(warm)} UPDATEs for {config.mobiles} MNs")
            await feed(agent, warm)
            progress(f"measuring {len(measured)} UPDATEs of {config.handoffs} handoffs")
            if profiler is not None and worker is not None:
                await asyncio.wrap_future(agent._fib_thread.submit(worker.enable))
                profiler.enable()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            await feed(agent, measured, config.burst)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            if profiler is not None and worker is not None:
                profiler.disable()
                await asyncio.wrap_future(agent._fib_thread.submit(worker.disable))
            # A status write is paid per second, not per UPDATE (ar.STATUS_GAP_S).
            t0 = time.process_time()
            for _ in range(STATUS_WRITES):
                agent.write_status()
            return cpu, wall, (time.process_time() - t0) / STATUS_WRITES

        try:
            cpu, wall, status = asyncio.run(main())
        finally:
            # Every worker, the status writer too: a status file it writes while the
            # directory is removed fails the removal ("Directory not empty").
            for pool in (agent._fib_thread, agent._handoff_thread, agent._status_thread):
                pool.shutdown(wait=True)
        fib = agent.fib
        res: dict[str, Any] = {
            "bench": "ar_update", "mobiles": config.mobiles, "ars": config.ars,
            "handoffs": config.handoffs, "updates": len(measured), "burst": config.burst,
            "host_routes": sum(1 for p in fib.installed if p.prefixlen == 32),
            "cpu_us_per_update": round(cpu / len(measured) * 1e6, 1),
            "wall_us_per_update": round(wall / len(measured) * 1e6, 1),
            "status_write_us": round(status * 1e6, 1),
            "routes_replaced": fib._nl.replaced,  # type: ignore[attr-defined]
            "routes_deleted": fib._nl.deleted,  # type: ignore[attr-defined]
            "next_hops_resolved": fib._nl.resolved,  # type: ignore[attr-defined]
        }
    if profiler is not None and worker is not None:
        for key, prof in (("profile_loop", profiler), ("profile_fib", worker)):
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(20)
            res[key] = out.getvalue()
    return res


def format_table(res: dict[str, Any]) -> str:
    rows = [(k, res[k]) for k in ("mobiles", "ars", "handoffs", "updates", "burst",
                                  "host_routes",
                                  "cpu_us_per_update", "wall_us_per_update",
                                  "status_write_us")]
    return "\n".join(f"{k:<22} {v:>12,}" for k, v in rows)
