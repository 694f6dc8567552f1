"""Idle mode's decisions on the AR (draft 4), one table per address family: what is parked
here, each idle MN's bounded buffer, the page on our link and at the other ARs of the
Tracking Area, the page's timeout, and the wake-up that sends the buffer on in order.

handoff.Mobility keeps one for the MNs' /32s and handoff6.PrefixMobility one for their /64s
(issue 18); the kernel and the pages are injected, as in the modules that use it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from .paging import Buffer

Via = Literal["access", "overlay"] | None
K = TypeVar("K", bound=Hashable)  # an IPv4Address (a /32's) or an IPv6Network (a /64)


@dataclass
class Idle:
    """An idle MN's address or prefix parked here (draft 4): packets wait in the buffer."""

    mn: str
    tal: tuple[str, ...]
    buffer: Buffer
    since: float
    paging_since: float | None = None
    pages: int = 0


@dataclass
class IdleTable(Generic[K]):
    """The parked keys of one family. Events carry ``family``; IPv4's keep the names and
    fields they had before IPv6 (the scenarios read them)."""

    family: str  # "ipv4" or "ipv6"
    me: str  # our node name: whether our own link is in an MN's Tracking Area List
    key_of: Callable[[bytes], K | None]  # the parked key a packet is for
    reinject: Callable[[list[bytes], Via], Awaitable[int]]
    # Removes the paging route, then sends on what the device still holds for the key.
    unpark: Callable[[K, Via, deque[bytes]], Awaitable[None]]
    events: Callable[..., None]
    clock: Callable[[], float]
    spawn: Callable[[Awaitable[Any]], None]
    tal: tuple[str, ...] = ()
    pager: Callable[[list[K]], None] | None = None  # a page on our own access link
    # Asks another AR of the list (by node name) to page on its link.
    page_remote: Callable[[str, list[K]], Awaitable[object]] | None = None
    bound: int = 256
    timeout_s: float = 3.0
    idle: dict[K, Idle] = field(default_factory=dict)
    waking: dict[K, tuple[Via, deque[bytes]]] = field(default_factory=dict)
    unbuffered_drops: int = 0

    def _tagged(self, **fields: Any) -> dict[str, Any]:
        return fields if self.family == "ipv4" else {**fields, "family": self.family}

    def park(self, key: K, mn: str) -> None:
        """The key's paging route is in: its packets are buffered from now on."""
        self.idle[key] = Idle(mn, self.tal, Buffer(self.bound), self.clock())

    def on_buffered(self, packet: bytes) -> None:
        """A packet came out of the paging device: buffer it, and page if not yet paging."""
        key = self.key_of(packet)
        if key is not None and key in self.waking:
            # Read from the device after the buffer was handed on: it follows, in order.
            self.waking[key][1].append(packet)
            return
        state = self.idle.get(key) if key is not None else None
        if state is None or key is None:
            self.unbuffered_drops += 1
            return
        state.buffer.add(packet)
        if state.paging_since is not None:
            return
        state.paging_since = self.clock()
        state.pages += 1
        self.events("page_start", **self._tagged(addr=key, mn=state.mn, tal=list(state.tal)))
        if self.pager is not None and self.me in state.tal:
            self.pager([key])
        if self.page_remote is not None:
            for node in state.tal:
                if node != self.me:
                    self.spawn(self._page_via(node, key))
        self.spawn(self._page_timeout(key, state.paging_since))

    async def _page_via(self, node: str, key: K) -> None:
        assert self.page_remote is not None
        try:
            await self.page_remote(node, [key])
            self.events("page_sent", **self._tagged(addr=key, to=node))
        except Exception as exc:  # noqa: BLE001 - one AR not answering must not stop paging
            self.events("page_failed", **self._tagged(addr=key, to=node, error=str(exc)))

    async def _page_timeout(self, key: K, started: float) -> None:
        await asyncio.sleep(self.timeout_s)
        state = self.idle.get(key)
        if state is None or state.paging_since != started:
            return
        freed = len(state.buffer.drain())
        state.buffer.dropped += freed
        state.paging_since = None
        self.events("page_timeout", **self._tagged(addr=key, mn=state.mn, freed=freed,
                                                   dropped=state.buffer.dropped))

    async def wake(self, key: K, reason: str, via: Via) -> None:
        """The MN is reachable again: its buffer goes first, through ``via`` while the
        paging route still holds new packets back; then the paging route goes, and what
        the device still held follows. New packets take the new route after that."""
        state = self.idle.pop(key, None)
        if state is None:
            return
        late: deque[bytes] = deque()
        self.waking[key] = (via, late)
        packets = state.buffer.drain()
        sent = await self.reinject(packets, via) if packets else 0
        await self.unpark(key, via, late)
        # The paging route is gone and the device drained: whatever the loop read in the
        # meantime is the last of it.
        self.waking.pop(key, None)
        if late:
            sent += await self.reinject(list(late), via)
        self.events("flushed", **self._tagged(
            addr=key, mn=state.mn, reason=reason, buffered=len(packets), sent=sent,
            dropped=state.buffer.dropped, received=state.buffer.received,
            paging_ms=(self.clock() - state.paging_since) * 1000
            if state.paging_since is not None else None))

    async def release(self, key: K, reason: str) -> None:
        """A newer route elsewhere: the buffer follows the routing table."""
        if key in self.idle:
            await self.wake(key, reason, None)

    def status(self) -> dict[str, Any]:
        return {str(k): {"mn": st.mn, "buffered": len(st.buffer.packets),
                         "dropped": st.buffer.dropped, "paging": st.paging_since is not None}
                for k, st in self.idle.items()}
