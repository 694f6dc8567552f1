"""The handoff of an MN's IPv6 prefixes (issue 18; draft 2.2, and 2.3's true prefixes): the
AR re-routes each verified prefix the MN claims with a more-specific whose LOCAL_PREF follows
the IPv4 rule (handoff.newest_local_pref), and lets go when a newer route appears elsewhere.

Pure decision logic like agents/handoff.py, with the kernel, BGP and DNS injected; the AR
agent drives it for the MNs a topology makes dual-stack (``AgentPorts`` below). The fast
redirect moves a /64 from the previous AR's access link into the VXLAN overlay towards the new
AR, as handoff.Mobility does for a /32; an idle MN's /64s wait in the paging buffer as its
/32 does (agents/idle.py, a table of their own).
The AR's DHCPv6 server (agents/dhcpd6.py) reports its delegations here (``assigned``,
``reclaim``, ``visitor_lease``, ``lease_gone``), as DHCP's leases go to handoff.Mobility.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network
from typing import Any, Protocol

from . import exabgp_api as api
from .auth import AuthResult
from .contract import Mode
from .exabgp_api import Route
from .handoff import (
    MOVED_ON,
    RECLAIM_TIMEOUT_S,
    REDIRECT_HOLD_S,
    REDIRECT_LIFETIME_S,
    EventLog,
    NewestAuth,
    late_route_of_came_from,
    moved_on_since,
    newer_move,
    newest_local_pref,
    note_moved_on,
    redirect_is_stale,
    remember_highest,
    saw_auth,
)
from .idle import IdleTable

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

    async def redirect6(self, prefix: IPv6Network, via: IPv6Address, detach: bool) -> bool:
        """The prefix tunnelled to another AR (``via``: its overlay link-local address);
        with ``detach``, its access route goes in the same step."""

    async def unredirect6(self, prefix: IPv6Network) -> None: ...

    async def park6(self, prefix: IPv6Network) -> None:
        """Idle MN: the prefix routed into the paging device, its access route gone."""


class Paths(Protocol):
    def paths(self, prefix: IPv6Network) -> list[Route]: ...

    def best(self, prefix: IPv6Network) -> Route | None: ...


@dataclass(frozen=True)
class Peer6:
    """Another AR as the IPv6 redirect knows it."""

    node: str
    fqdn: str
    loopback: IPv6Address  # the next hop of its IPv6 routes
    overlay: IPv6Address  # its link-local address on the redirect overlay
    pool: IPv6Network


# Sends the one-message AUTH of the redirect to the previous AR; the /64s it re-routed.
# (the previous AR, the /64s, the timestamp of the MN's AUTH the redirect follows)
Redirector6 = Callable[[Peer6, list[IPv6Network], int | None], Awaitable[list[IPv6Network]]]


@dataclass
class Redirect6:
    target: Peer6
    deadline: float
    leaving: bool = False  # BGP converged here; removal is scheduled


@dataclass
class Attached6:
    mn: str
    ifindex: int
    stamp: int  # the LOCAL_PREF this attachment earned, announced or not (at home)
    # The IPv6 loopback of the AR the MN says it came from: a route of that AR with our
    # LOCAL_PREF is the older one (a one-second timestamp ties two moves in one second).
    came_from: IPv6Address | None = None
    # That AR's route has been out-announced once already (handoff.late_route_of_came_from).
    outbid: bool = False
    since: float = 0.0  # when it attached (handoff.CAME_FROM_WINDOW_S)
    origin_us: int = 0  # the MN's AUTH timestamp (handoff.redirect_is_stale)


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
    # Runs the kernel's detach when a newer route appears (the RIB update is synchronous).
    spawn: Callable[[Awaitable[None]], None] = lambda aw: None
    attached: dict[IPv6Network, Attached6] = field(default_factory=dict)
    announced: dict[IPv6Network, int] = field(default_factory=dict)
    escaped: set[IPv6Network] = field(default_factory=set)  # announced, tagged to leave
    # The Home Agent's: it is in no cluster, so what it announces is tagged to leave one.
    escape_always: bool = False
    # The fast redirect (handoff.Mobility's, for /64s): every other AR by IPv6 loopback, and
    # the AR-to-AR sender; None (the HA): no redirect.
    peers: dict[IPv6Address, Peer6] = field(default_factory=dict)
    redirector: Redirector6 | None = None
    mode: Callable[[], Mode] = lambda: Mode.REDIRECT
    # How a redirect leaves: "srv6" (the peer's End.DX6 SID) or "vxlan" (agents/fib.py).
    tunnel: Callable[[], str] = lambda: "vxlan"
    redirect_hold_s: float = REDIRECT_HOLD_S
    redirects: dict[IPv6Network, Redirect6] = field(default_factory=dict)
    # The AR (IPv6 loopback) a redirect said the MN moved to: its route is the newer one.
    superseded_by: dict[IPv6Network, IPv6Address] = field(default_factory=dict)
    # The Home Agents' DNS names and their /64s' next hop (handoff.Mobility.home_agents).
    home_agents: dict[str, IPv6Address] = field(default_factory=dict)
    # The highest LOCAL_PREF heard for each /64, kept after its route is gone (as
    # handoff.Mobility.highest_heard).
    highest_heard: dict[IPv6Network, int] = field(default_factory=dict)
    newest: NewestAuth = field(default_factory=NewestAuth)  # handoff.NewestAuth
    # handoff.moved_on_since: the MN's AUTH elsewhere a redirect told of, and when it did.
    moved_on: dict[IPv6Network, tuple[int, float]] = field(default_factory=dict)
    # Address management (draft 2.3), as handoff.Mobility's: our pool's /64s whose delegation
    # ended while another AR still routes them, and the delegation ends of visitors.
    reclaiming: dict[IPv6Network, float] = field(default_factory=dict)
    visitor_leases: dict[IPv6Network, float] = field(default_factory=dict)
    reclaim_timeout_s: float = RECLAIM_TIMEOUT_S
    # Idle mode (draft 4) for the /64s; None (the HA): no paging.
    paging: IdleTable[IPv6Network] | None = None

    def next_local_pref(self, prefix: IPv6Network) -> int:
        seen = [r.local_pref for r in self.rib.paths(prefix)]
        if prefix in self.announced:
            seen.append(self.announced[prefix])
        if prefix in self.highest_heard:
            seen.append(self.highest_heard[prefix])
        return newest_local_pref(seen, self.clock())

    def _others(self, prefix: IPv6Network) -> list[Route]:
        return [r for r in self.rib.paths(prefix) if r.next_hop != self.loopback]

    def saw_auth(self, result: AuthResult) -> None:
        """handoff.saw_auth for the MN's /64s."""
        saw_auth(self.newest, self.attached, result.peer_name, result.timestamp_us,
                 [p for p in result.addresses if isinstance(p, IPv6Network)])

    async def on_result(self, result: AuthResult, from_ar: bool) -> list[IPv6Network]:
        """An MN's AUTH with flag M (not an AR's redirect or page): a handoff, or the MN
        going idle here."""
        if from_ar or not result.mobility:
            return []
        if result.idle:
            return await self.go_idle(result.peer_name, result.addresses)
        return await self.on_authenticated(result.peer_name, result.addresses, result.ifindex,
                                           result.previous, page=result.page,
                                           origin_us=result.timestamp_us)

    async def go_idle(self, mn: str, claimed: Iterable[object]) -> list[IPv6Network]:
        """The MN goes idle: its /64s attached here stay routed here, into the paging
        buffer, and announced as they were (handoff.Mobility.go_idle for a /32)."""
        parked: list[IPv6Network] = []
        for p in claimed:
            att = self.attached.get(p) if isinstance(p, IPv6Network) else None
            if self.paging is None or att is None or att.mn != mn or not isinstance(
                    p, IPv6Network):
                continue
            await self.kernel.park6(p)
            self.attached.pop(p, None)
            self.paging.park(p, mn)
            parked.append(p)
        self.events("idle6", mn=mn, prefixes=[str(p) for p in parked])
        return parked

    def _idle(self, prefix: IPv6Network) -> bool:
        return self.paging is not None and prefix in self.paging.idle

    async def on_authenticated(self, mn: str, claimed: Iterable[object], ifindex: int,
                               previous: str | None = None,
                               page: bool = False, origin_us: int = 0) -> list[IPv6Network]:
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
        origin_us = self.newest.of(mn, origin_us)  # a retry may have joined meanwhile
        later = moved_on_since(self.moved_on, accepted, origin_us, self.clock())
        if later:
            self.events("not_taken6", mn=mn, prefixes=[str(p) for p in later], reason=MOVED_ON)
            accepted = [p for p in accepted if p not in later]
        hinted = self._peer_named(previous)
        # A Home Agent is no peer (no redirect to it), but its /64 is as old as an AR's.
        came_from = hinted.loopback if hinted is not None else self.home_agents.get(previous or "")
        # A paged MN waking up where it went idle has nobody to redirect its /64s from.
        moving = [p for p in accepted if not self._idle(p)]
        target = self._previous_ar(moving, came_from) if moving else None
        if self.redirector is None or self.mode() != Mode.REDIRECT:
            target = None
        if target is not None and not page:
            # First, as for IPv4: the previous AR acts on it in milliseconds, and every one
            # until then is outage. One message for all the MN's /64s that AR routes.
            self.spawn(self._send_redirect(target, moving, origin_us))
        for p in accepted:
            await self._take(mn, p, ifindex, came_from, origin_us)
        if target is not None and page:
            # An MN answering a page: the previous AR sends its buffer the moment the
            # redirect arrives, so our access routes must be there first.
            self.spawn(self._send_redirect(target, moving, origin_us))
        return accepted

    def _peer_named(self, fqdn: str | None) -> Peer6 | None:
        """The other AR of this DNS name (an MN's "previous AR" hint, a redirect's sender)."""
        return next((p for p in self.peers.values() if p.fqdn == fqdn), None)

    def _previous_ar(self, prefixes: list[IPv6Network],
                     came_from: IPv6Address | None) -> Peer6 | None:
        """Whom to redirect from: the MN's hint, else our BGP table, else the pool owner."""
        if came_from is not None and came_from in self.peers:
            return self.peers[came_from]
        for p in prefixes:
            best = self.rib.best(p)
            if best is not None and isinstance(best.next_hop, IPv6Address) and (
                    best.next_hop in self.peers):
                return self.peers[best.next_hop]
            for peer in self.peers.values():
                if p.subnet_of(peer.pool):
                    return peer
        return None

    async def _send_redirect(self, target: Peer6, prefixes: list[IPv6Network],
                             origin_us: int) -> None:
        assert self.redirector is not None
        self.events("redirect6_sent", prefixes=[str(p) for p in prefixes], to=target.node)
        try:
            done = await self.redirector(target, prefixes, origin_us or None)
        except Exception as exc:  # noqa: BLE001 - the BGP path still converges without it
            self.events("redirect6_failed", prefixes=[str(p) for p in prefixes],
                        to=target.node, error=str(exc))
            return
        self.events("redirect6_acked", to=target.node, rerouted=[str(p) for p in done])

    async def _take(self, mn: str, prefix: IPv6Network, ifindex: int,
                    came_from: IPv6Address | None = None, origin_us: int = 0) -> None:
        await self.kernel.attach6(prefix, ifindex)
        if prefix not in self.attached:
            # A new arrival: a lease recorded on an earlier visit is not this visit's, and
            # its expiry would withdraw the /64 the MN just brought (its renewal had gone
            # through the AR it was on then). This visit's first relayed renewal sets it.
            self.visitor_leases.pop(prefix, None)
        lp = self.next_local_pref(prefix)
        self.attached[prefix] = Attached6(mn, ifindex, lp, came_from, since=self.clock(),
                                          # A retry may have joined during the await.
                                          origin_us=self.newest.of(mn, origin_us))
        self.superseded_by.pop(prefix, None)
        self.moved_on.pop(prefix, None)
        if self.redirects.pop(prefix, None) is not None:
            # The MN is back before BGP settled: the access route serves it again.
            await self.kernel.unredirect6(prefix)
            self.events("redirect6_removed", prefix=str(prefix), reason="MN back")
        home = prefix.subnet_of(self.pool)
        others = self._others(prefix)
        if not home or others:
            # At home the pool's route covers the prefix, unless a visitor's more-specific
            # elsewhere must be beaten (the MN came back).
            self._announce(prefix, lp, home, others)
        if self.paging is not None:
            await self.paging.wake(prefix, "paged MN authenticated here", "access")

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

    # --- the previous AR's side of the redirect ----------------------------------------------

    async def on_redirect(self, peer_fqdn: str, result: AuthResult) -> list[IPv6Network]:
        """Another AR's AUTH (flag M, not a page): the MN it names is there now. Each /64 of
        ours goes from the access link into the overlay towards it at once."""
        peer = self._peer_named(peer_fqdn)
        six = [p for p in result.addresses if isinstance(p, IPv6Network)]
        if peer is None or not six or not result.mobility or result.page:
            return []
        self.events("redirect6_received", by=peer.node, prefixes=[str(p) for p in six])
        done: list[IPv6Network] = []
        note_moved_on(self.moved_on, six, result.origin_us, self.clock())
        for p in six:
            if p.prefixlen != self.mn_prefixlen or not (
                    p in self.attached or p in self.announced or p.subnet_of(self.pool)
                    or self._idle(p)):
                self.events("redirect6_refused", prefix=str(p), by=peer.node,
                            reason="not ours")
                continue
            here = self.attached.get(p)
            if here is not None and redirect_is_stale(result.origin_us, here.origin_us):
                self.events("redirect6_refused", prefix=str(p), by=peer.node,
                            reason="the MN authenticated here after it did there")
                continue
            # The access route (metric 100) would beat the redirect (150): both at once. A
            # paging route (metric 90) stays until its buffer has gone through the tunnel.
            att = self.attached.pop(p, None)
            parked = self._idle(p)
            if await self.kernel.redirect6(p, peer.overlay, detach=att is not None):
                self.redirects[p] = Redirect6(peer, self.clock() + REDIRECT_LIFETIME_S)
                done.append(p)
            self.superseded_by[p] = peer.loopback
            self.events("redirect6_installed", prefix=str(p), to=peer.node,
                        tunnel=self.tunnel())
            if att is not None:
                self.events("detached6", prefix=str(p), mn=att.mn,
                            reason=f"redirected to {peer.node}")
            if parked and self.paging is not None:
                await self.paging.wake(p, f"redirected to {peer.node}", "overlay")
            self._check(p)
        return done

    def expire(self) -> None:
        """A redirect BGP never superseded goes after its lifetime; so do a reclaim's
        out-announcement and a visitor's delegation."""
        now = self.clock()
        for p, red in list(self.redirects.items()):
            if red.deadline <= now:
                self.redirects.pop(p)
                self.spawn(self._unredirect(p, "lifetime expired"))
        for p, until in list(self.reclaiming.items()):
            if until <= now:
                self._end_reclaim(p, "reclaim timed out")
        for p, until in list(self.visitor_leases.items()):
            if until <= now:
                self.visitor_leases.pop(p)
                self.spawn(self.lease_gone(p, "delegation expired"))

    # --- address management (draft 2.3): the AR's DHCPv6 server ---------------------------

    async def assigned(self, prefix: IPv6Network, mn: str, ifindex: int) -> None:
        """Our DHCPv6 server delegated ``prefix`` of our pool to ``mn`` on our access link."""
        att = self.attached.get(prefix)
        if att is not None and att.mn == mn and att.ifindex == ifindex:
            return
        self.reclaiming.pop(prefix, None)
        await self._take(mn, prefix, ifindex)
        self.events("assigned6", mn=mn, prefix=str(prefix), ifindex=ifindex)

    def reclaim(self, prefix: IPv6Network, reason: str) -> None:
        """The delegation of a /64 of our pool ended: no /64 may remain anywhere. A visitor
        AR's route is beaten as a newer attachment beats it, then ours goes too, leaving the
        pool's aggregate (handoff.Mobility.reclaim for a /32)."""
        att = self.attached.pop(prefix, None)
        if att is not None:
            self.spawn(self.kernel.detach6(prefix))
            self.events("detached6", prefix=str(prefix), mn=att.mn, reason=reason)
        if self.paging is not None and prefix in self.paging.idle:
            # The delegation is gone: its paging route and buffer go too.
            self.spawn(self.paging.release(prefix, reason))
        self.superseded_by.pop(prefix, None)  # our reclaim is the newest claim now
        others = self._others(prefix)
        self.events("delegation_ended", prefix=str(prefix), reason=reason, others=len(others))
        if not others:
            if prefix in self.announced:
                self._end_reclaim(prefix, "reclaimed, pool covers it")
            return
        self.reclaiming[prefix] = self.clock() + self.reclaim_timeout_s
        self._announce(prefix, self.next_local_pref(prefix), True, others)
        self.events("reclaim6_announced", prefix=str(prefix), local_pref=self.announced[prefix])

    def _end_reclaim(self, prefix: IPv6Network, reason: str) -> None:
        self.reclaiming.pop(prefix, None)
        self._withdraw(prefix, reason)

    def _withdraw(self, prefix: IPv6Network, reason: str) -> None:
        """Our announcement of ``prefix`` goes, if we made one."""
        if self.announced.pop(prefix, None) is not None:
            self.escaped.discard(prefix)
            self.bgp.withdraw6(prefix)
            self.events("withdrawn6", prefix=str(prefix), reason=reason)

    def visitor_lease(self, prefix: IPv6Network, expires: float | None) -> None:
        """As the MN's current AR we relayed a renewal's Reply for ``prefix``: it lives until
        then."""
        if expires is not None and not prefix.subnet_of(self.pool):
            self.visitor_leases[prefix] = expires

    async def lease_gone(self, prefix: IPv6Network, reason: str) -> None:
        """As the MN's current AR: its delegation of a visitor's ``prefix`` ended (a release
        or a zero lifetime we relayed, or expiry). Withdraw at once rather than wait for the
        owner's reclaim to reach us."""
        self.visitor_leases.pop(prefix, None)
        if prefix.subnet_of(self.pool):
            return  # our own: the server's end of the delegation reclaims it
        self._withdraw(prefix, reason)
        att = self.attached.pop(prefix, None)
        if att is not None:
            await self.kernel.detach6(prefix)
            self.events("detached6", prefix=str(prefix), mn=att.mn, reason=reason)
        if self.paging is not None:
            await self.paging.release(prefix, reason)

    async def _unredirect_later(self, prefix: IPv6Network, red: Redirect6) -> None:
        # Converged here is not converged upstream (handoff.Mobility's micro-loop rule).
        if self.redirect_hold_s > 0:
            await asyncio.sleep(self.redirect_hold_s)
        if self.redirects.get(prefix) is red:
            self.redirects.pop(prefix)
            await self._unredirect(prefix, "bgp converged")

    async def _unredirect(self, prefix: IPv6Network, reason: str) -> None:
        await self.kernel.unredirect6(prefix)
        self.events("redirect6_removed", prefix=str(prefix), reason=reason)

    def status(self) -> dict[str, Any]:
        return {
            "attached": {str(p): att.mn for p, att in self.attached.items()},
            "announced": {str(p): lp for p, lp in self.announced.items()},
            "redirects": {str(p): r.target.node for p, r in self.redirects.items()},
            "redirect_kind": self.tunnel(),
            "reclaiming": [str(p) for p in self.reclaiming],
            "idle": self.paging.status() if self.paging is not None else {},
        }

    # --- reacting to BGP ------------------------------------------------------------------

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
        by = self.superseded_by.get(prefix)
        remember_highest(self.highest_heard, prefix, others)
        # A route of the AR a redirect named is newer whatever its LOCAL_PREF (a clock
        # behind ours); ties and late routes are handoff.newer_move's.
        now = self.clock()
        newer = [r for r in others if newer_move(r.local_pref, r.next_hop, ref, att, now)
                 or (by is not None and r.next_hop == by)]
        gone: list[IPv6Network] = []
        if newer and self.paging is not None and prefix in self.paging.idle:
            # The MN authenticated elsewhere while idle here: the buffer follows the routes.
            self.spawn(self.paging.release(prefix, "newer route elsewhere"))
        if att is not None and late_route_of_came_from(att, newer, now):
            # Out-announce it, once, as handoff.Mobility does a /32.
            att.outbid = True
            att.stamp = self.next_local_pref(prefix)
            self.events("outbid6", prefix=str(prefix),
                        late_local_pref=max(r.local_pref for r in newer))
            self._announce(prefix, att.stamp, prefix.subnet_of(self.pool), others)
            return gone
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
            self._withdraw(prefix, "newer route" if newer else "home again, pool covers it")
        elif (mine is not None and att is not None and prefix not in self.escaped
              and self._must_escape(prefix, others)):
            # An older /64 of another cluster reached us only after we announced ours inside
            # the cluster: its AR never hears ours, so it would stay at the cores for good.
            self._announce(prefix, mine, prefix.subnet_of(self.pool), others)
        elif prefix in self.reclaiming and not others:
            self._end_reclaim(prefix, "reclaimed, pool covers it")
        self._redirect_done(prefix, others)
        return gone

    def _redirect_done(self, prefix: IPv6Network, others: list[Route]) -> None:
        red = self.redirects.get(prefix)
        if red is None or red.leaving:
            return
        best = self.rib.best(prefix)
        converged = best is not None and best.next_hop == red.target.loopback
        # Return home: the target's pool covers the prefix, so no /64 may remain at all.
        home_target = (prefix.subnet_of(red.target.pool) and not others
                       and prefix not in self.announced)
        if converged or home_target:
            red.leaving = True
            self.spawn(self._unredirect_later(prefix, red))


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
    overlay_index: Callable[[], int | None] = lambda: None  # the redirect overlay device
    paging_index: Callable[[], int | None] = lambda: None  # the paging device (idle mode)
    # After a redirect goes: the agent's FIB re-syncs the BGP route it shadowed.
    after_unredirect: Callable[[IPv6Network], None] = lambda prefix: None

    def _attach_now(self, prefix: IPv6Network, ifindex: int) -> None:
        """Handoff worker, one job: the access route, then the source filter's entry."""
        self.fib.add_access(prefix, ifindex)
        if (sources := self.sources()) is not None:
            sources.allow(self.fib.ifname(ifindex), prefix)

    def _detach_now(self, prefix: IPv6Network) -> None:
        self.fib.del_access(prefix)
        if (sources := self.sources()) is not None:
            sources.revoke_address(prefix)

    def _park_now(self, prefix: IPv6Network) -> None:
        """Handoff worker, one job: the paging route (metric 90), then the access route goes."""
        index = self.paging_index()
        if index is None:
            raise RuntimeError("no paging device")
        self.fib.add_park(prefix, index)
        self._detach_now(prefix)

    async def park6(self, prefix: IPv6Network) -> None:
        await self.run(self._park_now, prefix)

    def _redirect_now(self, prefix: IPv6Network, via: IPv6Address, detach: bool) -> bool:
        """Handoff worker, one job: the overlay route, then (``detach``) the access route."""
        index = self.overlay_index()
        ok = index is not None and bool(self.fib.add_redirect6(prefix, via, index))
        if detach:
            self._detach_now(prefix)
        return ok

    async def redirect6(self, prefix: IPv6Network, via: IPv6Address, detach: bool) -> bool:
        return bool(await self.run(self._redirect_now, prefix, via, detach))

    async def unredirect6(self, prefix: IPv6Network) -> None:
        await self.run(self.fib.del_redirect6, prefix)
        self.after_unredirect(prefix)

    async def attach6(self, prefix: IPv6Network, ifindex: int) -> None:
        await self.run(self._attach_now, prefix, ifindex)

    async def detach6(self, prefix: IPv6Network) -> None:
        await self.run(self._detach_now, prefix)

    def announce6(self, prefix: IPv6Network, local_pref: int, escape: bool = False) -> None:
        tags = (self.escape_community,) if escape and self.escape_community else ()
        self.send(api.announce(prefix, local_pref, tags, next_hop=self.loopback))

    def withdraw6(self, prefix: IPv6Network) -> None:
        self.send(api.withdraw(prefix, next_hop=self.loopback))
