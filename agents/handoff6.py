"""The handoff of an MN's IPv6 prefixes (issue 18; draft 2.2, and 2.3's true prefixes): the
AR re-routes each verified prefix the MN claims with a more-specific whose LOCAL_PREF follows
the IPv4 rule (handoff.newest_local_pref), and lets go when a newer route appears elsewhere.

Pure decision logic like agents/handoff.py, with the kernel, BGP and DNS injected; the AR
agent drives it for the MNs a topology makes dual-stack (``AgentPorts`` below). No fast
redirect, source filter or paging in IPv6 yet (docs/ipv6.md).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network
from typing import Any, Protocol

from . import exabgp_api as api
from .auth import AuthResult
from .exabgp_api import Route
from .handoff import EventLog, newest_local_pref

NO_CLUSTER = IPv6Network("::/128")  # the cluster of a next hop that is no AR's


class PrefixChecker(Protocol):
    async def verify_prefixes(self, mn: str, claimed: list[IPv6Network]
                              ) -> tuple[list[IPv6Network], dict[IPv6Network, str]]:
        """(accepted, {refused: reason}): an AAAA of the MN inside the prefix, and the
        prefix's own PTR (on its nibble boundary) naming the MN (draft 2.3)."""


class Bgp6(Protocol):
    def announce6(self, prefix: IPv6Network, local_pref: int, escape: bool = False) -> None:
        """``escape``: tag the route so that it leaves the cluster (bgpd.conf's TO-CORE)."""

    def withdraw6(self, prefix: IPv6Network) -> None: ...


class Kernel6(Protocol):
    async def attach6(self, prefix: IPv6Network, ifindex: int) -> None:
        """The prefix routed onto the MN's access link."""

    async def detach6(self, prefix: IPv6Network) -> None: ...


class Paths(Protocol):
    def paths(self, prefix: IPv6Network) -> list[Route]: ...


@dataclass
class Attached6:
    mn: str
    ifindex: int
    stamp: int  # the LOCAL_PREF this attachment earned, announced or not (at home)
    # The IPv6 loopback of the AR the MN says it came from: a route of that AR with our
    # LOCAL_PREF is the older one (a one-second timestamp ties two moves in one second).
    came_from: IPv6Address | None = None


@dataclass
class PrefixMobility:
    """Per-prefix state of one AR: attached here, announced by us."""

    loopback: IPv6Address  # ours: the next hop of what we announce
    pool: IPv6Network
    managed: IPv6Network
    mn_prefixlen: int
    checker: PrefixChecker
    kernel: Kernel6
    bgp: Bgp6
    rib: Paths
    events: EventLog = field(default_factory=lambda: EventLog(None))
    clock: Callable[[], float] = time.time
    # Every AR's IPv6 loopback -> its cluster's aggregate, ours included (the escape rule).
    clusters: dict[IPv6Address, IPv6Network] = field(default_factory=dict)
    # Every AR's DNS name -> its IPv6 loopback (the MN's "previous AR" hint names it so).
    by_fqdn: dict[str, IPv6Address] = field(default_factory=dict)
    # Runs the kernel's detach when a newer route appears (the RIB update is synchronous).
    spawn: Callable[[Awaitable[None]], None] = lambda aw: None
    attached: dict[IPv6Network, Attached6] = field(default_factory=dict)
    announced: dict[IPv6Network, int] = field(default_factory=dict)
    escaped: set[IPv6Network] = field(default_factory=set)  # announced, tagged to leave
    # The Home Agent's: it is in no cluster, so what it announces is tagged to leave one.
    escape_always: bool = False

    def next_local_pref(self, prefix: IPv6Network) -> int:
        seen = [r.local_pref for r in self.rib.paths(prefix)]
        if prefix in self.announced:
            seen.append(self.announced[prefix])
        return newest_local_pref(seen, self.clock())

    def _others(self, prefix: IPv6Network) -> list[Route]:
        return [r for r in self.rib.paths(prefix) if r.next_hop != self.loopback]

    async def on_result(self, result: AuthResult, from_ar: bool) -> list[IPv6Network]:
        """An MN's AUTH with flag M (not an AR's redirect or page, not going idle)."""
        if from_ar or not result.mobility or result.idle:
            return []
        return await self.on_authenticated(result.peer_name, result.addresses, result.ifindex,
                                           result.previous)

    async def on_authenticated(self, mn: str, claimed: Iterable[object], ifindex: int,
                               previous: str | None = None) -> list[IPv6Network]:
        """Draft 2.2 for the IPv6 prefixes of one AUTH: only the plan's prefix length,
        only inside the managed range, only what DNS confirms; anything else is refused."""
        refused: dict[IPv6Network, str] = {}
        inside: list[IPv6Network] = []
        six = [p for p in claimed if isinstance(p, IPv6Network)]  # IPv4 is handoff.Mobility's
        if not six:
            return []
        for p in six:
            if p.prefixlen != self.mn_prefixlen:
                refused[p] = f"not a /{self.mn_prefixlen} (the plan's prefix per MN)"
            elif not p.subnet_of(self.managed):
                refused[p] = "outside the AS's managed range"
            else:
                inside.append(p)
        accepted: list[IPv6Network] = []
        if inside:
            try:
                accepted, why = await self.checker.verify_prefixes(mn, inside)
                refused.update(why)
            except Exception as exc:  # noqa: BLE001 - any DNS doubt refuses; never crash
                refused.update({p: f"DNS: {exc}" for p in inside})
                accepted = []
        self.events("checked6", mn=mn, accepted=[str(p) for p in accepted],
                    refused={str(p): r for p, r in refused.items()})
        came_from = self.by_fqdn.get(previous) if previous is not None else None
        for p in accepted:
            await self._take(mn, p, ifindex, came_from)
        return accepted

    async def _take(self, mn: str, prefix: IPv6Network, ifindex: int,
                    came_from: IPv6Address | None = None) -> None:
        await self.kernel.attach6(prefix, ifindex)
        lp = self.next_local_pref(prefix)
        self.attached[prefix] = Attached6(mn, ifindex, lp, came_from)
        home = prefix.subnet_of(self.pool)
        others = self._others(prefix)
        if not home or others:
            # At home the pool's route covers the prefix, unless a visitor's more-specific
            # elsewhere must be beaten (the MN came back).
            self._announce(prefix, lp, home, others)

    def _announce(self, prefix: IPv6Network, lp: int, home: bool, others: list[Route]) -> None:
        # Inside our cluster's aggregate the route stays in the cluster, unless a stale one
        # of another cluster must be beaten everywhere (handoff.Mobility's rule for a /32).
        escape = self._must_escape(prefix, others)
        if escape:
            self.escaped.add(prefix)
        else:
            self.escaped.discard(prefix)
        self.announced[prefix] = lp
        self.bgp.announce6(prefix, lp, escape)
        self.events("announced6", prefix=str(prefix), local_pref=lp, home=home,
                    escape=escape)

    def _must_escape(self, prefix: IPv6Network, others: list[Route]) -> bool:
        if self.escape_always:
            return True
        # A next hop of no AR (the Home Agent's) is in no cluster, as in handoff.Mobility.
        mine = self.clusters.get(self.loopback)
        return mine is not None and prefix.subnet_of(mine) and any(
            not prefix.subnet_of(self.clusters.get(r.next_hop, NO_CLUSTER)) for r in others
            if isinstance(r.next_hop, IPv6Address))

    def on_rib_change(self, prefixes: Iterable[object]) -> list[IPv6Network]:
        """The prefixes detached from the access link (each detach6 spawned)."""
        gone: list[IPv6Network] = []
        for p in prefixes:
            if isinstance(p, IPv6Network) and p.prefixlen == self.mn_prefixlen:
                gone += self._check(p)
        for p in gone:
            self.spawn(self.kernel.detach6(p))
        return gone

    def _check(self, prefix: IPv6Network) -> list[IPv6Network]:
        others = self._others(prefix)
        mine = self.announced.get(prefix)
        att = self.attached.get(prefix)
        ref = mine if mine is not None else (att.stamp if att is not None else 0)
        # A tie is two moves within one second: the other AR's is the newer one unless the
        # MN came to us from it (then ours is, and it hears ours and lets go).
        newer = [r for r in others if r.local_pref > ref or (
            r.local_pref == ref and att is not None and r.next_hop != att.came_from)]
        gone: list[IPv6Network] = []
        if att is not None and newer:
            self.attached.pop(prefix)
            self.events("detached6", prefix=str(prefix), mn=att.mn,
                        reason="newer route elsewhere")
            gone.append(prefix)
        elif att is not None and mine is None and others:
            # Home, unannounced, and a visitor's older /64 reached us only after the MN did
            # (the radio beat the reflectors): left alone, it would stay at the routers for
            # good. Beat it now, as the attachment would have (test_dualstack_mn found it).
            # Strictly newer than what we heard: a tie would leave both routes standing.
            self._announce(prefix, self.next_local_pref(prefix), prefix.subnet_of(self.pool),
                           others)
            return gone
        if mine is not None and (newer or (prefix.subnet_of(self.pool)
                                           and prefix in self.attached and not others)):
            self.announced.pop(prefix)
            self.escaped.discard(prefix)
            self.bgp.withdraw6(prefix)
            self.events("withdrawn6", prefix=str(prefix),
                        reason="newer route" if newer else "home again, pool covers it")
        elif (mine is not None and att is not None and prefix not in self.escaped
              and self._must_escape(prefix, others)):
            # An older /64 of another cluster reached us only after we announced ours inside
            # the cluster: its AR never hears ours, so it would stay at the cores for good.
            self._announce(prefix, mine, prefix.subnet_of(self.pool), others)
        return gone


@dataclass
class AgentPorts:
    """PrefixMobility's kernel and BGP in the AR agent: access routes through its handoff
    worker (``run``), ExaBGP commands through its channel (``send``)."""

    fib: Any  # agents.fib.KernelFib
    run: Callable[..., Awaitable[Any]]
    send: Callable[[str], None]
    loopback: IPv6Address
    sources: Callable[[], Any]  # the agent's agents.nft.SourceFilter, or None
    escape_community: str = ""

    def _attach_now(self, prefix: IPv6Network, ifindex: int) -> None:
        """Handoff worker, one job: the access route, then the source filter's entry."""
        self.fib.add_access(prefix, ifindex)
        if (sources := self.sources()) is not None:
            sources.allow(self.fib.ifname(ifindex), prefix)

    def _detach_now(self, prefix: IPv6Network) -> None:
        self.fib.del_access(prefix)
        if (sources := self.sources()) is not None:
            sources.revoke_address(prefix)

    async def attach6(self, prefix: IPv6Network, ifindex: int) -> None:
        await self.run(self._attach_now, prefix, ifindex)

    async def detach6(self, prefix: IPv6Network) -> None:
        await self.run(self._detach_now, prefix)

    def announce6(self, prefix: IPv6Network, local_pref: int, escape: bool = False) -> None:
        tags = (self.escape_community,) if escape and self.escape_community else ()
        self.send(api.announce(prefix, local_pref, tags, next_hop=self.loopback))

    def withdraw6(self, prefix: IPv6Network) -> None:
        self.send(api.withdraw(prefix, next_hop=self.loopback))
