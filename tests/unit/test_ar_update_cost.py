"""Issue 15: what a reflected /32 costs an AR agent that takes no part in the handoff. Its
next hops resolve once, not per UPDATE, yet anew when the IGP or a covering route of ours
changes; its status is written after FIB passes, but not once per UPDATE; UPDATEs that
wait for a busy FIB worker are one pass."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from ipaddress import IPv4Address, IPv4Network
from itertools import pairwise
from pathlib import Path
from typing import Any

from agents import ar
from agents import exabgp_api as api
from agents.arbench import (
    BenchConfig,
    KernelStandIn,
    ars,
    feed,
    handoff_lines,
    make_agent,
    run_bench,
)
from agents.exabgp_api import Route
from agents.fib import KernelFib


def stand_in_fib() -> tuple[KernelFib, KernelStandIn]:
    fib = KernelFib(lambda _p: False)
    fib._nl.close()
    nl = KernelStandIn()
    fib._nl = nl  # type: ignore[assignment]
    return fib, nl


def test_every_move_installs_its_host_route_once_and_resolves_no_hop_twice() -> None:
    res = run_bench(BenchConfig(mobiles=40, ars=4, handoffs=30))
    assert res["updates"] == 4 * 30  # each move: announced by both reflectors, the old path
    assert res["host_routes"] == 40  # withdrawn by both
    assert res["routes_replaced"] == 40 + 30 and res["routes_deleted"] == 0
    assert res["next_hops_resolved"] == 3  # the three other ARs' loopbacks
    assert res["cpu_us_per_update"] > 0 and res["status_write_us"] > 0


def test_a_hop_resolves_anew_when_a_route_of_ours_over_it_comes_or_goes() -> None:
    fib, nl = stand_in_fib()
    hop = IPv4Address("10.255.0.3")
    paths = fib.hop_paths
    for i in range(5):
        p = IPv4Network(f"10.64.1.{i}/32")
        fib.sync(p, Route(p, hop, 100), paths)
    assert nl.resolved == 1 and len(fib.installed) == 5
    cover = IPv4Network("10.255.0.0/24")  # a BGP route of ours over the hop itself
    fib.sync(cover, Route(cover, IPv4Address("10.255.0.9"), 100), paths)
    assert hop not in paths
    late = IPv4Network("10.64.1.9/32")
    fib.sync(late, Route(late, hop, 100), paths)
    assert late not in fib.installed  # never resolved through a route of ours
    fib.sync(cover, None, paths)
    assert hop not in paths
    fib.sync(late, Route(late, hop, 100), paths)
    assert late in fib.installed


def test_status_follows_fib_passes_at_most_once_per_gap(tmp_path: Path) -> None:
    routers = ars(4)
    warm, moves = handoff_lines(routers, 60, 100)
    agent = make_agent(tmp_path, routers)
    writes: list[float] = []
    write = agent.write_status

    def counted() -> None:
        writes.append(time.monotonic())
        write()

    agent.write_status = counted  # type: ignore[method-assign]

    async def main() -> None:
        agent._loop = asyncio.get_running_loop()
        agent._persisting = True
        t0 = time.monotonic()
        await feed(agent, warm + moves)
        deadline = time.monotonic() + 10.0
        status = tmp_path / "agent.status.json"
        while time.monotonic() < deadline:  # the last pass's write comes within the gap
            if status.exists() and len(json.loads(status.read_text())["fib_routes"]) == 60:
                break
            await asyncio.sleep(0.05)
        assert len(json.loads(status.read_text())["rib_host_routes"]) == 60
        elapsed = time.monotonic() - t0
        # 640 UPDATEs, each its own FIB pass: the writes are bounded by time, not by them.
        assert len(writes) <= 2 + elapsed / ar.STATUS_GAP_S
        assert all(b - a >= ar.STATUS_GAP_S * 0.9 for a, b in pairwise(writes))

    try:
        asyncio.run(main())
    finally:
        agent._fib_thread.shutdown(wait=True)
        agent._handoff_thread.shutdown(wait=True)


def test_a_costly_status_widens_the_gap_between_writes(tmp_path: Path) -> None:
    """A status that takes long to build is written less often (STATUS_DUTY), and the
    housekeeping's write waits for that gap too; a cheap one keeps STATUS_GAP_S."""
    agent = make_agent(tmp_path, ars(4))
    try:
        status = agent.status

        def slow() -> dict[str, Any]:
            time.sleep(0.03)
            return status()

        agent.write_status()
        assert agent.status_gap() == ar.STATUS_GAP_S
        agent.status = slow  # type: ignore[method-assign]
        agent.write_status()
        assert agent.status_gap() >= ar.STATUS_DUTY * 0.03 > ar.STATUS_GAP_S
        agent.status = status  # type: ignore[method-assign]
        agent.write_status()
        assert agent.status_gap() == ar.STATUS_GAP_S
    finally:
        agent._fib_thread.shutdown(wait=True)
        agent._handoff_thread.shutdown(wait=True)


def test_updates_behind_a_busy_fib_worker_are_one_pass_with_the_newest_best(
        tmp_path: Path) -> None:
    routers = ars(4)
    warm, moves = handoff_lines(routers, 10, 10)
    agent = make_agent(tmp_path, routers)
    passes: list[tuple[int, bool]] = []
    apply = agent._apply

    def counted(best: dict[Any, Any], full: bool) -> None:
        passes.append((len(best), full))
        apply(best, full)

    agent._apply = counted  # type: ignore[method-assign]
    gate = threading.Event()
    try:
        agent._fib_thread.submit(gate.wait, 10.0)  # the worker busy, as under a burst
        for text in warm + moves:
            event = api.parse_line(text)
            assert event is not None
            agent.handle(event)
        agent.push(None)  # a full pass joins the batch and keeps it full
        gate.set()
        agent._fib_thread.submit(lambda: None).result(10.0)
        assert passes == [(10, True)]
        assert {p: r for p, (r, _) in agent.fib.installed.items()} == {
            p: agent.rib.best(p) for p in agent.rib.prefixes()}
    finally:
        gate.set()
        agent._fib_thread.shutdown(wait=True)
        agent._handoff_thread.shutdown(wait=True)
