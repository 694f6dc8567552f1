"""Issue 15: a retried AUTH that reaches the AR while the one it repeats is still being
handled gets that handling's outcome instead of a second DNS check and handoff; and the
status's host routes, kept between writes, are those the RIB holds."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from agents import exabgp_api as api
from agents.ar import RETRY_JOIN_US
from agents.arbench import REFLECTORS, ars, feed, handoff_lines, make_agent
from agents.auth.authenticator import AuthResult
from agents.auth.keys import Suite


def result(session: bytes, address: str = "10.64.0.10", us: int = 0) -> AuthResult:
    return AuthResult("mn1.example", "ar1.example", next(iter(Suite)),
                      (IPv4Network(f"{address}/32"),), True, session, ("10.64.0.10", 5000),
                      timestamp_us=us)


def test_a_retry_joins_the_auth_it_repeats(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, ars(4))
    assert agent.mobility is not None
    calls: list[AuthResult] = []
    gate = asyncio.Event()

    async def handled(r: AuthResult) -> list[IPv4Address]:
        calls.append(r)
        await gate.wait()
        return [r.addresses[0].network_address]  # type: ignore[list-item]

    agent.mobility.on_authenticated = handled  # type: ignore[method-assign]

    async def main() -> list[Any]:
        first = asyncio.ensure_future(agent._on_authenticated(result(b"1")))
        await asyncio.sleep(0)
        retry = asyncio.ensure_future(agent._on_authenticated(result(b"2")))
        other = asyncio.ensure_future(agent._on_authenticated(result(b"3", "10.64.0.11")))
        await asyncio.sleep(0)
        gate.set()
        out = list(await asyncio.gather(first, retry, other))
        # Done: the next AUTH is handled anew.
        out.append(await agent._on_authenticated(result(b"4")))
        return out

    out = asyncio.run(main())
    assert [r.session_id for r in calls] == [b"1", b"3", b"4"]
    assert out[0] == out[1] == out[3] == [IPv4Address("10.64.0.10")]
    assert out[2] == [IPv4Address("10.64.0.11")]
    assert agent.coalesced == 1 and agent._handling == {}
    agent._fib_thread.shutdown(wait=True)


def test_the_kept_host_routes_are_the_ribs(tmp_path: Path) -> None:
    routers = ars(4)
    warm, moves = handoff_lines(routers, 50, 80)
    agent = make_agent(tmp_path, routers)

    def brute() -> dict[str, list[list[Any]]]:
        return {str(p): sorted([str(r.next_hop), r.local_pref] for r in agent.rib.paths(p))
                for p in agent.rib.prefixes() if p.prefixlen == 32}

    async def main() -> None:
        agent._loop = asyncio.get_running_loop()
        await feed(agent, warm)
        assert agent.status()["rib_host_routes"] == brute()
        for i in range(0, len(moves), 7):  # some changes between two statuses
            await feed(agent, moves[i:i + 7])
            assert agent.status()["rib_host_routes"] == brute()
        before = sum(len(v) for v in brute().values())
        agent.handle(api.PeerState(REFLECTORS[0], False, "test"))  # a peer's routes go
        assert sum(len(v) for v in brute().values()) < before
        assert agent.status()["rib_host_routes"] == brute()

    try:
        asyncio.run(main())
    finally:
        agent._fib_thread.shutdown(wait=True)
        agent._status_thread.shutdown(wait=True)


def test_a_retry_with_its_own_later_timestamp_joins_and_a_much_later_auth_does_not(
        tmp_path: Path) -> None:
    """Every try of an MN carries a new timestamp: within RETRY_JOIN_US of the AUTH being
    handled it joins that handling (and its time reaches what the handling records);
    later, or earlier, it is an AUTH of its own."""
    agent = make_agent(tmp_path, ars(4))
    assert agent.mobility is not None
    calls: list[int] = []
    gate = asyncio.Event()

    async def handled(r: AuthResult) -> list[IPv4Address]:
        calls.append(r.timestamp_us)
        await gate.wait()
        return [r.addresses[0].network_address]  # type: ignore[list-item]

    agent.mobility.on_authenticated = handled  # type: ignore[method-assign]
    base = 10_000_000

    async def main() -> None:
        tries = [asyncio.ensure_future(agent._on_authenticated(result(bytes([i]), us=base + d)))
                 for i, d in enumerate((0, 300_000, RETRY_JOIN_US, RETRY_JOIN_US + 1, -1))]
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(*tries)

    asyncio.run(main())
    assert calls == [base, base + RETRY_JOIN_US + 1, base - 1]
    assert agent.coalesced == 2 and agent._handling == {}
    assert agent.mobility.newest.of("mn1.example", 0) == base + RETRY_JOIN_US + 1
    agent._fib_thread.shutdown(wait=True)
