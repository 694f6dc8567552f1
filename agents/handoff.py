"""The AR's handoff logic (draft 2.2): what to re-route after an authentication, and when to
let go. Host routes get LOCAL_PREF = a 32-bit timestamp made strictly newest-wins; an AR that
sees a newer route withdraws; the fast redirect asks the previous AR to forward at once.

Pure decision logic: the kernel, BGP, DNS and the AR-to-AR messages are injected, so the
unit tests drive it without root.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any, Protocol, TypeVar

from .auth import AuthResult
from .contract import Mode
from .exabgp_api import Route
from .fib import Hop, Net, host
from .idle import Idle, IdleTable, Via
from .paging import destination4

log = logging.getLogger("agents.handoff")

LP_MAX = (1 << 32) - 1
REDIRECT_LIFETIME_S = 3.0  # a redirect BGP never supersedes is removed after this
REDIRECT_HOLD_S = 0.5  # a redirect outlives local BGP convergence by this much (micro-loops)
# A reclaimed address's out-announcement is withdrawn after this even if a visitor's /32 stays.
RECLAIM_TIMEOUT_S = 5.0
KEPT_EVENTS = 500  # events an EventLog keeps in memory, newest last


def newest_local_pref(seen: Iterable[int], now: float) -> int:
    """The draft's 32-bit timestamp made strictly newest: max(now, highest seen + 1), so a
    route beats every path heard of, even within one second; one rule for both families."""
    return min(max(int(now), max(seen, default=0) + 1), LP_MAX)


@dataclass(frozen=True)
class ArInfo:
    node: str
    fqdn: str
    loopback: IPv4Address
    pool: IPv4Network
    cluster: IPv4Network  # the cluster's aggregate, inside which host routes stay (draft 2.1)
    overlay: IPv4Address = IPv4Address(0)  # its address in the redirect tunnel mesh


class AddressChecker(Protocol):
    async def verify(self, mn: str, claimed: list[IPv4Address]
                     ) -> tuple[list[IPv4Address], dict[IPv4Address, str]]:
        """(accepted, {refused: reason}); draft 2.2 steps 1-3."""


class Kernel(Protocol):
    async def attach(self, address: IPv4Address, ifindex: int) -> None:
        """Host route to the MN on its access interface, and allow it as a source there."""

    async def detach(self, address: IPv4Address) -> None: ...

    async def redirect(self, address: IPv4Address, via: IPv4Address, detach: bool) -> bool:
        """Temporary host route tunnelled to another AR (``via``: its overlay address, the
        tunnel itself riding the IGP); with ``detach``, drop the MN's access route and source
        entry in the same step."""

    async def unredirect(self, address: IPv4Address) -> None: ...

    async def park(self, address: IPv4Address) -> None:
        """Idle MN: route its packets into the paging buffer (a route that beats every
        other, including the access route), and drop its access route and source entry."""

    async def unpark(self, address: IPv4Address, via: Via = None,
                     late: deque[bytes] | None = None) -> None:
        """Remove the paging route: what is beneath it (access, redirect, BGP) takes over.
        Then, in order, ``late`` (read from the device since the wake-up began) and what the
        device still holds for the MN follow through ``via`` at once."""

    async def reinject(self, packets: list[bytes], via: Via) -> int:
        """Send buffered packets on, through ``via`` (the access link, the redirect tunnel,
        or None for the routing table); returns how many were sent."""


class Bgp(Protocol):
    def announce(self, prefix: IPv4Network, local_pref: int, escape: bool = False) -> None:
        """``escape``: tag the route so that it leaves the cluster (community, bgpd.conf)."""

    def withdraw(self, prefix: IPv4Network) -> None: ...


class RibView(Protocol):
    def paths(self, prefix: IPv4Network) -> list[Route]: ...

    def best(self, prefix: IPv4Network) -> Route | None: ...


# (the previous AR, the /32s, the timestamp of the MN's AUTH the redirect follows)
Redirector = Callable[[ArInfo, list[IPv4Address], int | None], Awaitable[list[IPv4Address]]]
RemotePager = Callable[[ArInfo, list[IPv4Address]], Awaitable[list[IPv4Address]]]
# Broadcasts a page on our own access link: /32s, or /64s (agents/paging.py).
Pager = Callable[[list[IPv4Address | IPv6Network]], None]


class EventLog:
    """One JSON object per line, wall-clock stamped: the scenarios read these files."""

    def __init__(self, path: Path | None, clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._clock = clock
        self._fh = path.open("a", buffering=1) if path is not None else None
        # Only tests read these (the scenarios read the file). Holding more grew an AR
        # agent's RSS by about 1 MB per 1,000 events, some 10 % an hour in the soak.
        self.records: deque[dict[str, Any]] = deque(maxlen=KEPT_EVENTS)

    def __call__(self, ev: str, **fields: Any) -> None:
        rec = {"t": self._clock(), "ev": ev, **{k: _plain(v) for k, v in fields.items()}}
        self.records.append(rec)
        if self._fh is not None:
            self._fh.write(json.dumps(rec) + "\n")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def _plain(v: Any) -> Any:
    if isinstance(v, IPv4Address | IPv4Network | IPv6Address | IPv6Network):
        return str(v)
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    return v


@dataclass
class Attachment:
    mn: str
    ifindex: int
    since: float
    stamp: int  # the LOCAL_PREF this attachment earned, announced or not (at home)
    # The loopback of the AR the MN says it came from: a route of that AR with our
    # LOCAL_PREF is the older one (a one-second timestamp ties two moves in one second).
    came_from: IPv4Address | None = None
    # That AR's route has been out-announced once already (late_route_of_came_from).
    outbid: bool = False
    # The timestamp of the MN's AUTH (its own clock, strictly increasing): which of two ARs
    # saw the MN's later AUTH, whatever order their redirects cross in (redirect_is_stale).
    origin_us: int = 0


def redirect_is_stale(origin_us: int | None, attached_origin_us: int | None) -> bool:
    """Whether a redirect asks us to give up an attachment the MN made after the AUTH the
    redirect follows: it moved away and back faster than the other AR answered (seen at a
    thousand MNs, an MN back home was black-holed at the AR it had left 24 ms before). A
    redirect without the origin (flag O) is trusted, as before it existed."""
    return (origin_us is not None and attached_origin_us is not None
            and attached_origin_us > origin_us)


class NewestAuth:
    """The newest AUTH timestamp (the MN's clock) that each MN sent this AR, one table per
    family. A retry joins the handling of the AUTH it repeats (agents/ar.py), yet it is
    the MN's latest word that it is here: what the handling records and the redirect it
    sends must carry it, or a redirect that crossed it would be taken (redirect_is_stale)."""

    def __init__(self) -> None:
        self._us: dict[str, int] = {}  # one entry per MN that authenticated here

    def saw(self, mn: str, us: int) -> None:
        if us > self._us.get(mn, 0):
            self._us[mn] = us

    def of(self, mn: str, us: int) -> int:
        return max(us, self._us.get(mn, 0))


K = TypeVar("K")  # an MN's address in either family: a /32's address, or a /64


class Stamped(Protocol):
    """An attachment of either family as saw_auth raises it."""

    mn: str
    origin_us: int


def saw_auth(newest: NewestAuth, attached: dict[K, Any], mn: str, us: int,
             claimed: Iterable[K]) -> None:
    """An MN's authenticated AUTH, before its checks: from now on its attachments here
    among ``claimed`` are as new as it (a redirect the MN's earlier move sent must not take
    them). ``attached`` holds Stamped values (Attachment, handoff6.Attached6)."""
    newest.saw(mn, us)
    for a in claimed:
        att: Stamped | None = attached.get(a)
        if att is not None and att.mn == mn:
            att.origin_us = max(att.origin_us, us)

MOVED_ON = "the MN authenticated at another AR after this AUTH"
# How long a redirect's word that the MN moved on is kept: longer than an overloaded AR's
# checks (seconds), short enough that an address given to another MN, whose clock the
# timestamps of the first do not order, is not refused for it.
MOVED_ON_FOR_S = 30.0


def moved_on_since(moved_on: dict[K, tuple[int, float]], claimed: Iterable[K],
                   origin_us: int, now: float) -> list[K]:
    """What of ``claimed`` a redirect has told us, within MOVED_ON_FOR_S, the MN took
    elsewhere by an AUTH later than ``origin_us`` (its newest here). An overloaded AR that
    finished an AUTH's checks seconds late took the address anyway, stamped a LOCAL_PREF
    newer than the AR the MN was at, and took the MN's traffic from it for good (seen at
    100 handoffs a second)."""
    return [a for a in claimed
            if (m := moved_on.get(a)) is not None and m[0] > origin_us
            and now - m[1] < MOVED_ON_FOR_S]


def note_moved_on(moved_on: dict[K, tuple[int, float]], claimed: Iterable[K],
                  origin_us: int | None, now: float) -> None:
    """A redirect's word, whatever we make of it: the MN authenticated elsewhere at
    ``origin_us`` (a redirect without flag O says nothing of when). The table is kept in
    the order it was told, so what has aged out is at its front."""
    old = [a for a, _ in itertools.takewhile(lambda item: now - item[1][1] >= MOVED_ON_FOR_S,
                                             moved_on.items())]
    for a in old:
        del moved_on[a]
    if origin_us is not None:
        for a in claimed:
            before = moved_on.pop(a, None)
            moved_on[a] = (max(before[0], origin_us) if before else origin_us, now)


class Arrival(Protocol):
    """An attachment as late_route_of_came_from sees it (one per family)."""

    @property
    def came_from(self) -> Hop | None: ...

    @property
    def outbid(self) -> bool: ...

    @property
    def since(self) -> float: ...


# How long after an attachment a route of the AR the MN came from may still be the older
# one. Such a route was stamped before the MN left that AR and is late by the reflectors'
# batches (about 50 ms a hop, a few hundred ms on a loaded machine); one heard later comes
# from a new attachment there, and is the newer move (test_macro: the MN left again
# seconds after returning, and its home AR out-announced the HA's new binding).
CAME_FROM_WINDOW_S = 1.0


def older_by_the_mns_word(att: Arrival | None, next_hop: Hop, now: float) -> bool:
    """Whether a route of next_hop is, by the MN's own word, older than our attachment:
    of the AR (or HA) it says it came from, heard within CAME_FROM_WINDOW_S, and not
    after we out-announced that AR once (it stamped past us after hearing us: a move back)."""
    return (att is not None and att.came_from is not None and next_hop == att.came_from
            and not att.outbid and now - att.since < CAME_FROM_WINDOW_S)


def newer_move(local_pref: int, next_hop: Hop, ref: int, att: Arrival | None,
               now: float) -> bool:
    """Whether another's route is a newer move than our LOCAL_PREF ``ref``. A tie is two
    moves within one second: the other's is the newer one unless the MN came to us from
    it (then ours is, and it hears ours and lets go)."""
    if local_pref != ref:
        return local_pref > ref
    return att is not None and not older_by_the_mns_word(att, next_hop, now)


def remember_highest(highest: dict[Any, int], key: Any, routes: Sequence[Route]) -> None:
    """Keeps the highest LOCAL_PREF heard for key, past its routes (both families)."""
    if routes:
        highest[key] = max(highest.get(key, 0), *(r.local_pref for r in routes))


def late_route_of_came_from(att: Arrival, newer: Sequence[Route], now: float) -> bool:
    """Whether the only routes newer than an attachment's are of the AR the MN came from,
    and none has been out-announced yet. Two moves within one reflector batch (50 ms) let
    that AR stamp its route (highest seen + 1, ahead of the clock) after ours was stamped,
    and its route reach us only after: it is the older one whatever its LOCAL_PREF. Obeyed,
    both ARs let go and the MN is left with no route (test_stapled found it, 1 handoff in
    about 250). A second newer route of that AR is a real move back: it stamped past ours."""
    return bool(newer) and all(older_by_the_mns_word(att, r.next_hop, now) for r in newer)


@dataclass
class Redirect:
    target: ArInfo
    deadline: float
    leaving: bool = False  # BGP converged here; removal is scheduled


@dataclass
class Mobility:
    """Per-address state of one AR: attached here, announced by us, redirected elsewhere."""

    me: ArInfo
    ars: dict[str, ArInfo]
    managed: IPv4Network
    checker: AddressChecker
    kernel: Kernel
    bgp: Bgp
    rib: RibView
    redirector: Redirector
    mode: Callable[[], Mode] = lambda: Mode.REDIRECT
    # How a redirect leaves: "srv6" (the peer's End.DX4 SID) or "vxlan" (agents/fib.py).
    tunnel: Callable[[], str] = lambda: "vxlan"
    on_access_link: Callable[[int], bool] = lambda ifindex: ifindex > 0
    events: EventLog = field(default_factory=lambda: EventLog(None))
    clock: Callable[[], float] = time.time
    attached: dict[IPv4Address, Attachment] = field(default_factory=dict)
    announced: dict[IPv4Address, int] = field(default_factory=dict)
    # The announced /32s tagged to leave the cluster (a subset of ``announced``).
    escaped: set[IPv4Address] = field(default_factory=set)
    redirects: dict[IPv4Address, Redirect] = field(default_factory=dict)
    superseded_by: dict[IPv4Address, str] = field(default_factory=dict)
    # Idle mode (draft 4): our Tracking Area List, the pager and the AR-to-AR page sender.
    tal: tuple[str, ...] = ()
    pager: Pager | None = None
    page_remote: RemotePager | None = None
    paging_bound: int = 256
    paging_timeout_s: float = 3.0
    idle: dict[IPv4Address, Idle] = field(default_factory=dict)
    waking: dict[IPv4Address, tuple[Via, deque[bytes]]] = field(default_factory=dict)
    redirect_hold_s: float = REDIRECT_HOLD_S
    # Address management (draft 2.3): our pool's addresses whose lease ended while another
    # AR still routes them (we out-announce, then withdraw), and the lease ends of visitors.
    reclaiming: dict[IPv4Address, float] = field(default_factory=dict)
    visitor_leases: dict[IPv4Address, float] = field(default_factory=dict)
    reclaim_timeout_s: float = RECLAIM_TIMEOUT_S
    # The Home Agents' DNS names and their routes' next hop: an MN back from outside the AS
    # names its HA as where it came from, and the HA's route is then the older one.
    home_agents: dict[str, IPv4Address] = field(default_factory=dict)
    # The highest LOCAL_PREF heard for each /32, kept after its route is gone: a route
    # stamped "highest seen + 1" runs ahead of the clock, and an AR (the HA above all,
    # which hears no in-cluster /32) that forgot it would stamp its next attachment below
    # an older one (test_macro: the home AR then out-announced the HA's new binding).
    highest_heard: dict[IPv4Address, int] = field(default_factory=dict)
    newest: NewestAuth = field(default_factory=NewestAuth)
    # Per /32, the MN's latest AUTH at another AR that a redirect told us of (moved_on_since).
    moved_on: dict[IPv4Address, tuple[int, float]] = field(default_factory=dict)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._by_fqdn = {a.fqdn: a for a in self.ars.values()}
        self._by_loopback: dict[Hop, ArInfo] = {a.loopback: a for a in self.ars.values()}
        remote = self.page_remote
        self.paging = IdleTable[IPv4Address](
            "ipv4", self.me.node, destination4, self.kernel.reinject, self.kernel.unpark,
            self.events, self.clock, self._spawn, tuple(n for n in self.tal if n in self.ars),
            pager=None if self.pager is None else self._page_here,
            page_remote=None if remote is None else (
                lambda node, keys: remote(self.ars[node], keys)),
            bound=self.paging_bound, timeout_s=self.paging_timeout_s,
            idle=self.idle, waking=self.waking)

    def _page_here(self, keys: list[IPv4Address]) -> None:
        assert self.pager is not None
        self.pager(list(keys))

    # --- LOCAL_PREF ------------------------------------------------------------------------

    def next_local_pref(self, address: IPv4Address) -> int:
        """max(now, highest LOCAL_PREF seen for the /32 + 1): strictly newer than anything
        this AR has heard of, even within one second or against a clock up to 1 s ahead."""
        seen = [r.local_pref for r in self.rib.paths(host(address))]
        if address in self.announced:
            seen.append(self.announced[address])
        if address in self.highest_heard:
            seen.append(self.highest_heard[address])
        return newest_local_pref(seen, self.clock())

    # --- the MN side: draft 2.2 -------------------------------------------------------------

    async def on_authenticated(
            self, result: AuthResult) -> Sequence[IPv4Address | IPv6Network]:
        """The /32s re-routed for one AUTH (a page request's: what was paged, /64s too)."""
        peer_ar = self._by_fqdn.get(result.peer_name)
        if peer_ar is not None:
            if result.page:
                return self.on_page(peer_ar, result)
            return await self.on_redirect(peer_ar, result)
        if not result.mobility:
            return []
        if result.idle:
            return await self.go_idle(result)
        t_verified = self.clock()
        claimed = [p.network_address for p in result.addresses
                   if p.version == 4 and p.prefixlen == 32]
        mode = self.mode()
        self.events("verified", mn=result.peer_name, claimed=claimed, mode=mode,
                    previous=result.previous, t_verified=t_verified)
        refused: dict[IPv4Address, str] = {}
        inside = []
        for a in claimed:
            if isinstance(a, IPv4Address) and a in self.managed:
                inside.append(a)
            else:
                refused[a] = "outside the AS's managed range"
        if not self.on_access_link(result.ifindex):
            refused.update({a: "AUTH did not arrive on an access link" for a in inside})
            inside = []
        accepted: list[IPv4Address] = []
        if inside:
            try:
                accepted, why = await self.checker.verify(result.peer_name, inside)
                refused.update(why)
            except Exception as exc:  # noqa: BLE001 - any DNS doubt refuses; never crash
                refused.update({a: f"DNS: {exc}" for a in inside})
                accepted = []
        self.events("checked", mn=result.peer_name, accepted=accepted,
                    refused={str(a): r for a, r in refused.items()})
        later = moved_on_since(self.moved_on, accepted,
                               self.newest.of(result.peer_name, result.timestamp_us),
                               self.clock())
        if later:
            self.events("not_taken", mn=result.peer_name, addrs=later, reason=MOVED_ON)
        taken = [a for a in accepted if a not in later]
        for a in taken:
            await self._take(a, result, mode)
        return taken

    def saw_auth(self, result: AuthResult) -> None:
        """The module's saw_auth for the MN's /32s."""
        saw_auth(self.newest, self.attached, result.peer_name, result.timestamp_us,
                 [p.network_address for p in result.addresses
                  if isinstance(p.network_address, IPv4Address)])

    async def _take(self, a: IPv4Address, result: AuthResult, mode: Mode) -> None:
        # A paged MN waking up where it went idle has nobody to redirect from.
        previous = None if a in self.idle else self._previous_ar(a, result.previous)
        redirect = previous if mode == Mode.REDIRECT else None
        origin_us = self.newest.of(result.peer_name, result.timestamp_us)
        if redirect is not None and not result.page:
            # First: the previous AR takes milliseconds to act on it, our route install less,
            # and every millisecond here is a millisecond of outage.
            self._spawn(self._send_redirect(redirect, a, origin_us))
        await self.kernel.attach(a, result.ifindex)
        if redirect is not None and result.page:
            # An MN answering a page: the previous AR holds its buffer and sends it the
            # moment the redirect arrives, so our access route must be there first.
            self._spawn(self._send_redirect(redirect, a, origin_us))
        await self._wake(a, "paged MN authenticated here", "access")
        if a not in self.attached:
            # A new arrival: a lease recorded on an earlier visit is not this visit's
            # (handoff6.PrefixMobility._take has the same rule).
            self.visitor_leases.pop(a, None)
        lp = self.next_local_pref(a)
        self.attached[a] = Attachment(result.peer_name, result.ifindex, self.clock(), lp,
                                      self._came_from(result.previous),
                                      # A retry may have joined during the awaits.
                                      origin_us=self.newest.of(result.peer_name, origin_us))
        self.superseded_by.pop(a, None)
        self.moved_on.pop(a, None)
        if a in self.redirects:  # the MN is back before BGP settled: forward locally again
            self.redirects.pop(a)
            await self.kernel.unredirect(a)
        self.events("attached", mn=result.peer_name, addr=a, ifindex=result.ifindex)
        home = a in self.me.pool
        others = self._others(a)
        if not home or others:
            self._announce(a, lp, home, others)

    def _announce(self, a: IPv4Address, lp: int, home: bool, others: list[Route]) -> None:
        # Inside our own cluster's aggregate the /32 stays in the cluster, unless a stale
        # /32 of another cluster must be beaten everywhere (the MN came back from afar).
        escape = self._must_escape(a, others)
        self.announced[a] = lp
        self.set_escape(a, escape)
        self.bgp.announce(host(a), lp, escape)
        self.events("announced", addr=a, local_pref=lp, home=home, escape=escape)

    def _withdraw(self, a: IPv4Address, reason: str, **extra: Any) -> None:
        self.escaped.discard(a)
        if self.announced.pop(a, None) is not None:
            self.bgp.withdraw(host(a))
            self.events("withdrawn", addr=a, reason=reason, **extra)

    def _must_escape(self, a: IPv4Address, others: list[Route]) -> bool:
        return a in self.me.cluster and any(
            a not in self._cluster_of(r.next_hop) for r in others)

    def set_escape(self, a: IPv4Address, escape: bool) -> None:
        if escape:
            self.escaped.add(a)
        else:
            self.escaped.discard(a)

    def _came_from(self, previous: str | None) -> IPv4Address | None:
        """The next hop of the routes of where the MN says it came from: an AR's loopback,
        or a Home Agent's address (a return from outside the AS); None if we know neither."""
        if previous is None:
            return None
        hint = self._by_fqdn.get(previous)
        return hint.loopback if hint is not None else self.home_agents.get(previous)

    def _previous_ar(self, a: IPv4Address, hint: str | None) -> ArInfo | None:
        """Whom to redirect from: the MN's own hint, else our BGP table, else the pool owner."""
        if hint is not None and hint in self._by_fqdn and hint != self.me.fqdn:
            return self._by_fqdn[hint]
        best = self.rib.best(host(a))
        if best is not None:
            ar = self._by_loopback.get(best.next_hop)
            if ar is not None and ar != self.me:
                return ar
        for ar in self.ars.values():
            if a in ar.pool and ar != self.me:
                return ar
        return None

    async def _send_redirect(self, target: ArInfo, a: IPv4Address, origin_us: int) -> None:
        self.events("redirect_sent", addr=a, to=target.node)
        try:
            done = await self.redirector(target, [a], origin_us or None)
        except Exception as exc:  # noqa: BLE001 - the BGP path still converges without it
            self.events("redirect_failed", addr=a, to=target.node, error=str(exc))
            return
        self.events("redirect_acked", addr=a, to=target.node, rerouted=done)

    # --- the previous AR's side of the redirect ----------------------------------------------

    async def on_redirect(self, peer: ArInfo, result: AuthResult) -> list[IPv4Address]:
        if not any(p.version == 4 for p in result.addresses):
            return []  # an IPv6 redirect: handoff6.PrefixMobility's
        self.events("redirect_received", by=peer.node, addrs=[p.network_address
                                                             for p in result.addresses
                                                             if p.version == 4])
        done: list[IPv4Address] = []
        for p in result.addresses:
            a = p.network_address
            if p.version != 4 or p.prefixlen != 32 or not isinstance(a, IPv4Address):
                continue
            note_moved_on(self.moved_on, [a], result.origin_us, self.clock())
            if not (a in self.attached or a in self.announced or a in self.me.pool
                    or a in self.idle):
                self.events("redirect_refused", addr=a, by=peer.node, reason="not ours")
                continue
            here = self.attached.get(a)
            if here is not None and redirect_is_stale(result.origin_us, here.origin_us):
                self.events("redirect_refused", addr=a, by=peer.node,
                            reason="the MN authenticated here after it did there")
                continue
            # The access route (metric 100) would beat the redirect (150): both change at once.
            # A paging route (metric 90) stays until its buffer has gone through the tunnel.
            att = self.attached.pop(a, None)
            parked = a in self.idle
            if await self.kernel.redirect(a, peer.overlay, detach=att is not None):
                self.redirects[a] = Redirect(peer, self.clock() + REDIRECT_LIFETIME_S)
                done.append(a)
            self.superseded_by[a] = peer.fqdn
            self.events("redirect_installed", addr=a, to=peer.node, tunnel=self.tunnel())
            if att is not None:
                self.events("detached", addr=a, mn=att.mn, reason=f"redirected to {peer.node}")
            if parked:
                await self._wake(a, f"redirected to {peer.node}", "overlay")
            self._check(a)
        return done

    # --- reacting to BGP and to the access links ----------------------------------------------

    def on_rib_change(self, prefixes: Iterable[Net]) -> None:
        for p in prefixes:
            if isinstance(p, IPv4Network) and p.prefixlen == 32:  # IPv6: routes only, so far
                self._check(p.network_address)

    def _cluster_of(self, loopback: Hop) -> IPv4Network:
        ar = self._by_loopback.get(loopback)
        return ar.cluster if ar is not None else IPv4Network("0.0.0.0/32")

    def _others(self, a: IPv4Address) -> list[Route]:
        return [r for r in self.rib.paths(host(a)) if r.next_hop != self.me.loopback]

    def _check(self, a: IPv4Address) -> None:
        others = self._others(a)
        remember_highest(self.highest_heard, a, others)
        mine = self.announced.get(a)
        att = self.attached.get(a)
        ref = mine if mine is not None else (att.stamp if att is not None else 0)
        by = self.superseded_by.get(a)
        now = self.clock()
        newer = [r for r in others if newer_move(r.local_pref, r.next_hop, ref, att, now)
                 or (by is not None and self._by_loopback.get(r.next_hop, self.me).fqdn == by)]
        if att is not None and late_route_of_came_from(att, newer, now):
            # Out-announce it, once: strictly newer than what we now hear, as our attachment
            # would have been had the route reached us first.
            att.outbid = True
            att.stamp = self.next_local_pref(a)
            self.events("outbid", addr=a, late_local_pref=max(r.local_pref for r in newer))
            self._announce(a, att.stamp, a in self.me.pool, others)
            return
        if att is not None and newer:
            # The MN authenticated elsewhere after us.
            self._spawn(self._detach(a, "newer route elsewhere"))
        elif att is not None and mine is None and others and a in self.me.pool:
            # Home, unannounced, and a visitor's older /32 reached us only after the MN did
            # (the radio beat the reflectors): left alone, it would stay at the routers.
            # Beat it now, as the attachment would have (PrefixMobility's rule for a /64),
            # strictly newer than what we heard: a tie would leave both routes standing.
            self._announce(a, self.next_local_pref(a), True, others)
            return
        if a in self.idle and newer:
            self._spawn(self._unpark(a, "newer route elsewhere"))
        if mine is not None:
            if newer:
                # At once: a superseded /32 kept as a fallback hides the newer one's
                # competitor from the reflectors' choices and makes the home AR withdraw
                # early (measured: 250 ms outages on return home with a 0.5 s hold).
                self._withdraw(a, "newer route",
                               newer_local_pref=max(r.local_pref for r in newer))
            elif a in self.me.pool and a in self.attached and not others:
                # Back home and the visitor's /32 is gone: the pool route covers it again.
                self._withdraw(a, "home again, pool covers it")
            elif (a in self.attached and a not in self.escaped
                  and self._must_escape(a, others)):
                # An older /32 of another cluster reached us only after we announced ours
                # inside the cluster: its own AR never hears ours, so it would stay at the
                # cores for good. Ours leaves the cluster now, as it would have at first.
                self._announce(a, mine, a in self.me.pool, others)
            elif a in self.reclaiming and not others:
                self._end_reclaim(a, "reclaimed, pool covers it")
        red = self.redirects.get(a)
        if red is not None:
            best = self.rib.best(host(a))
            converged = best is not None and best.next_hop == red.target.loopback
            # Return home: the target owns the pool, so no /32 of ours or theirs may remain.
            home_target = a in red.target.pool and not others and mine is None
            if (converged or home_target) and not red.leaving:
                # Converged here is not converged upstream: a router that still sends to us
                # would get the packet straight back by our new BGP route (a micro-loop).
                # The tunnel stays a little longer, then goes.
                red.leaving = True
                self._spawn(self._unredirect_later(a, red))

    async def _unredirect_later(self, a: IPv4Address, red: Redirect) -> None:
        if self.redirect_hold_s > 0:
            await asyncio.sleep(self.redirect_hold_s)
        if self.redirects.get(a) is red:
            self.redirects.pop(a)
            await self._unredirect(a, "bgp converged")

    async def _unredirect(self, a: IPv4Address, reason: str) -> None:
        await self.kernel.unredirect(a)
        self.events("redirect_removed", addr=a, reason=reason)

    async def _detach(self, a: IPv4Address, reason: str) -> None:
        att = self.attached.pop(a, None)
        if att is None:
            return
        await self.kernel.detach(a)
        self.events("detached", addr=a, mn=att.mn, reason=reason)

    # --- idle mode (draft 4) ---------------------------------------------------------------

    async def go_idle(self, result: AuthResult) -> list[IPv4Address]:
        """The MN goes idle: keep its addresses routed here, into the paging buffer."""
        parked: list[IPv4Address] = []
        for p in result.addresses:
            a = p.network_address
            att = self.attached.get(a) if isinstance(a, IPv4Address) else None
            if att is None or att.mn != result.peer_name or not isinstance(a, IPv4Address):
                continue
            await self.kernel.park(a)
            self.attached.pop(a, None)
            self.paging.park(a, att.mn)
            parked.append(a)
        self.events("idle", mn=result.peer_name, addrs=parked, tal=list(self.tal))
        return parked

    def on_buffered(self, packet: bytes) -> None:
        """A packet came out of the paging device: buffer it, and page if not yet paging."""
        self.paging.on_buffered(packet)

    def on_page(self, peer: ArInfo, result: AuthResult) -> list[IPv4Address | IPv6Network]:
        """Another AR of the MN's Tracking Area asks us to page it on our access link: its
        /32s, or its /64s (one page listing either family, agents/paging.py)."""
        addrs: list[IPv4Address | IPv6Network] = [
            p.network_address for p in result.addresses
            if p.version == 4 and p.prefixlen == 32
            and isinstance(p.network_address, IPv4Address)]
        addrs += [p for p in result.addresses if isinstance(p, IPv6Network)]
        if self.pager is not None and addrs:
            self.pager(addrs)
        self.events("page_broadcast", addrs=addrs, by=peer.node)
        return addrs

    async def _wake(self, a: IPv4Address, reason: str, via: Via) -> None:
        await self.paging.wake(a, reason, via)

    async def _unpark(self, a: IPv4Address, reason: str) -> None:
        await self.paging.release(a, reason)

    def expire(self) -> None:
        now = self.clock()
        for a, red in list(self.redirects.items()):
            if red.deadline <= now:
                self.redirects.pop(a)
                self._spawn(self._unredirect(a, "lifetime expired"))
        for a, until in list(self.reclaiming.items()):
            if until <= now:
                self._end_reclaim(a, "reclaim timed out")
        for a, until in list(self.visitor_leases.items()):
            if until <= now:
                self.visitor_leases.pop(a)
                self._spawn(self.lease_gone(a, "lease expired"))

    # --- address management (draft 2.3) -------------------------------------------------------

    async def assigned(self, a: IPv4Address, mn: str, ifindex: int) -> None:
        """Our DHCP server bound a lease from our pool to ``mn`` on our access link."""
        att = self.attached.get(a)
        if att is not None and att.mn == mn and att.ifindex == ifindex:
            return
        self.reclaiming.pop(a, None)
        await self.kernel.attach(a, ifindex)
        self.attached[a] = Attachment(mn, ifindex, self.clock(), self.next_local_pref(a))
        self.events("assigned", mn=mn, addr=a, ifindex=ifindex)

    def reclaim(self, a: IPv4Address, reason: str) -> None:
        """The lease of an address from our pool ended: no host route may remain anywhere.

        A visitor AR's /32 is beaten the way a newer attachment beats it: we announce the /32
        with a newer LOCAL_PREF, every AR that routes it withdraws and detaches (``_check``),
        and once no other path is left ours goes too, leaving only the pool's aggregate.
        """
        if a in self.attached:
            self._spawn(self._detach(a, reason))
        if a in self.idle:  # the address is gone: its paging route and buffer go too
            self._spawn(self._unpark(a, reason))
        self.superseded_by.pop(a, None)  # our reclaim is the newest claim now
        others = self._others(a)
        self.events("lease_ended", addr=a, reason=reason, others=len(others))
        if not others and a not in self.announced:
            return
        lp = self.next_local_pref(a)
        self.announced[a] = lp
        self.reclaiming[a] = self.clock() + self.reclaim_timeout_s
        escape = any(a not in self._cluster_of(r.next_hop) for r in others)
        self.set_escape(a, escape)
        self.bgp.announce(host(a), lp, escape)
        self.events("reclaim_announced", addr=a, local_pref=lp, escape=escape)

    def _end_reclaim(self, a: IPv4Address, reason: str) -> None:
        self.reclaiming.pop(a, None)
        self._withdraw(a, reason)

    def visitor_lease(self, a: IPv4Address, expires: float | None) -> None:
        """As the MN's current AR we relayed a renewal ACK for ``a``: it lives until then."""
        if expires is not None and a not in self.me.pool:
            self.visitor_leases[a] = expires

    async def deregister(self, a: IPv4Address, mn: str) -> bool:
        """A Home Agent's binding ends at the MN's word: withdraw and detach (draft 2.4)."""
        att = self.attached.get(a)
        if att is None or att.mn != mn:
            return False
        self._withdraw(a, "deregistered")
        await self._detach(a, "deregistered")
        return True

    async def lease_gone(self, a: IPv4Address, reason: str) -> None:
        """As the MN's current AR: its lease on ``a`` ended (a release or NAK we relayed, or
        expiry). Withdraw at once rather than wait for the owner's reclaim to reach us."""
        self.visitor_leases.pop(a, None)
        if a in self.me.pool:
            return  # our own lease: the server's end of lease reclaims it
        self._withdraw(a, reason)
        await self._detach(a, reason)
        await self._unpark(a, reason)

    def status(self) -> dict[str, Any]:
        return {
            "attached": {str(a): att.mn for a, att in self.attached.items()},
            "announced": {str(a): lp for a, lp in self.announced.items()},
            "redirects": {str(a): r.target.node for a, r in self.redirects.items()},
            "reclaiming": [str(a) for a in self.reclaiming],
            "idle": self.paging.status(),
        }

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("handoff task failed", exc_info=task.exception())
