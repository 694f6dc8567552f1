"""When a restarted AR agent's BGP tables are whole (issue 20, docs/faults.md): each BGP peer has
sent End-of-RIB for every family we carry, or its session predates the agent and ExaBGP listed
its routes. The agent then lets the FIB drop the previous agent's routes nobody named.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

# After ExaBGP's restart, a BGP route the previous agent put in the kernel stays until every
# BGP peer has sent its End-of-RIB (named again by then: replaced in place; else removed), or
# this long: a peer not up by then is down (hold time 9 s, connect retry 2 s).
EOR_WAIT_S = 30.0


@dataclass
class EndOfRib:
    """What the sessions told this agent: which came up under it, which sent End-of-RIB."""

    families: frozenset[str]  # "ipv4 unicast", and "ipv6 unicast" on a dual-stack backbone
    configured: frozenset[str] | None  # the peers in agent.json; None: those seen up count
    came_up: set[str] = field(default_factory=set)
    received: dict[str, set[str]] = field(default_factory=dict)  # peer -> families
    news: asyncio.Event = field(default_factory=asyncio.Event)

    def session(self, peer: str, up: bool) -> None:
        if up:
            self.came_up.add(peer)
        self.received.pop(peer, None)  # a new session sends its table again
        self.news.set()

    def end_of_rib(self, peer: str, family: str) -> None:
        self.received.setdefault(peer, set()).add(family)
        self.news.set()

    def whole(self, listed: set[str], up: set[str]) -> bool:
        """``listed``: the peers ExaBGP's Adj-RIB-In listing named; ``up``: the sessions up."""
        peers = self.configured if self.configured is not None else up | listed
        return bool(peers) and all(
            self.families <= self.received.get(p, set()) or (p in listed and p not in self.came_up)
            for p in peers)

    async def wait(self, listed: set[str], up: Callable[[], set[str]], timeout: float) -> bool:
        """Until whole, toward a deadline; False if the deadline came first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.whole(listed, up()):
            left = deadline - loop.time()
            if left <= 0:
                return False
            self.news.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.news.wait(), left)
        return True
