"""The IPv6 prefix handoff's decisions (agents/handoff6.py), with fakes for DNS, BGP and
the kernel: LOCAL_PREF ordered as for IPv4, withdrawal on a newer route, the pool covering
a prefix back home, and every refusal."""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Awaitable
from ipaddress import IPv4Network, IPv6Address, IPv6Network

import pytest

from agents.auth import AuthResult, Suite
from agents.contract import Mode
from agents.exabgp_api import Route
from agents.fib import Rib
from agents.handoff import REDIRECT_LIFETIME_S
from agents.handoff6 import Peer6, PrefixMobility
from agents.idle import IdleTable
from agents.paging import prefix_of

ME = IPv6Address("2001:db8:ff::7")  # ar1
AR2 = IPv6Address("2001:db8:ff::8")
POOL = IPv6Network("2001:db8:4000::/56")  # ar1's
HOME = IPv6Network("2001:db8:4000:1::/64")  # an MN of ar1
VISITOR = IPv6Network("2001:db8:4000:101::/64")  # an MN of ar2


class Fakes:
    def __init__(self, refuse: dict[IPv6Network, str] | None = None,
                 fail: bool = False) -> None:
        self.refuse, self.fail = refuse or {}, fail
        self.announced: list[tuple[IPv6Network, int]] = []
        self.escaped: list[IPv6Network] = []
        self.withdrawn: list[IPv6Network] = []
        self.attached: list[IPv6Network] = []
        self.detached: list[IPv6Network] = []
        self.redirected: list[tuple[IPv6Network, IPv6Address, bool]] = []
        self.unredirected: list[IPv6Network] = []

    async def verify_prefixes(self, mn: str, claimed: list[IPv6Network]
                              ) -> tuple[list[IPv6Network], dict[IPv6Network, str]]:
        if self.fail:
            raise TimeoutError("resolver timed out")
        return [p for p in claimed if p not in self.refuse], dict(self.refuse)

    def announce6(self, prefix: IPv6Network, local_pref: int, escape: bool = False) -> None:
        self.announced.append((prefix, local_pref))
        if escape:
            self.escaped.append(prefix)

    def withdraw6(self, prefix: IPv6Network) -> None:
        self.withdrawn.append(prefix)

    async def attach6(self, prefix: IPv6Network, ifindex: int) -> None:
        self.attached.append(prefix)

    async def detach6(self, prefix: IPv6Network) -> None:
        self.detached.append(prefix)

    async def redirect6(self, prefix: IPv6Network, via: IPv6Address, detach: bool) -> bool:
        self.redirected.append((prefix, via, detach))
        return True

    async def unredirect6(self, prefix: IPv6Network) -> None:
        self.unredirected.append(prefix)


def mobility(fakes: Fakes, rib: Rib, now: float | list[float] = 1000.0) -> PrefixMobility:
    """``now`` a list: the test moves the clock by changing its one element."""
    clock = (lambda: now[0]) if isinstance(now, list) else (lambda: now)
    return PrefixMobility(loopback=ME, pool=POOL, managed=IPv6Network("2001:db8:4000::/40"),
                          mn_prefixlen=64, checker=fakes, kernel=fakes, bgp=fakes, rib=rib,
                          clock=clock, spawn=asyncio.run)


def test_a_visitor_prefix_is_announced_newer_than_any_path_heard_of() -> None:
    fakes, rib = Fakes(), Rib()
    rib.update("agg1", [Route(VISITOR, AR2, 5000)], [])  # ar2's, stamped ahead of our clock
    m = mobility(fakes, rib)
    assert asyncio.run(m.on_authenticated("mn2.example", [VISITOR], 3)) == [VISITOR]
    assert fakes.attached == [VISITOR] and fakes.announced == [(VISITOR, 5001)]
    # ar2 hears of it and stays; a newer route elsewhere (the MN moved on) ends ours.
    rib.update("agg1", [Route(VISITOR, AR2, 6000)], [])
    assert m.on_rib_change({VISITOR}) == [VISITOR]
    assert fakes.withdrawn == [VISITOR] and VISITOR not in m.attached
    assert fakes.detached == [VISITOR]


def test_at_home_the_pool_covers_the_prefix_unless_a_visitor_route_must_be_beaten() -> None:
    fakes, rib = Fakes(), Rib()
    m = mobility(fakes, rib)
    asyncio.run(m.on_authenticated("mn1.example", [HOME], 3))
    assert fakes.announced == []  # the pool's /56 covers it
    # Back from ar2, whose /64 is still there: beat it, then withdraw once it is gone.
    fakes2, rib2 = Fakes(), Rib()
    rib2.update("agg1", [Route(HOME, AR2, 900)], [])
    m2 = mobility(fakes2, rib2)
    asyncio.run(m2.on_authenticated("mn1.example", [HOME], 3))
    assert fakes2.announced == [(HOME, 1000)]
    rib2.update("agg1", [], [HOME])
    assert m2.on_rib_change({HOME}) == [] and fakes2.withdrawn == [HOME]
    assert HOME in m2.attached


def test_a_visitor_route_heard_only_after_the_mn_came_home_is_beaten_then_withdrawn() -> None:
    """The MN moved home before the reflectors told its home AR of the visitor's /64: the
    older /64 must not stay at the routers (it did, and the CN's traffic went to ar5)."""
    fakes, rib = Fakes(), Rib()
    m = mobility(fakes, rib)
    asyncio.run(m.on_authenticated("mn1.example", [HOME], 3))
    assert fakes.announced == []
    rib.update("agg1", [Route(HOME, AR2, 900)], [])  # older than our attachment (1000)
    assert m.on_rib_change({HOME}) == [] and fakes.announced == [(HOME, 1000)]
    assert HOME in m.attached and fakes.detached == []
    rib.update("agg1", [], [HOME])  # ar2 saw ours and withdrew: the pool covers it again
    assert m.on_rib_change({HOME}) == [] and fakes.withdrawn == [HOME]


@pytest.mark.parametrize(("claimed", "fakes", "reason"), [
    (IPv6Network("2001:db8:4000:100::/56"), Fakes(), "not a /64 (the plan's prefix per MN)"),
    (IPv6Network("2001:db8:9999::/64"), Fakes(), "outside the AS's managed range"),
    (VISITOR, Fakes(fail=True), "DNS: resolver timed out"),
    (VISITOR, Fakes(refuse={VISITOR: "no PTR"}), "no PTR"),
])
def test_anything_unverified_is_refused(claimed: IPv6Network, fakes: Fakes,
                                        reason: str) -> None:
    m = mobility(fakes, Rib())
    assert asyncio.run(m.on_authenticated("mn2.example", [claimed], 3)) == []
    assert fakes.attached == [] and fakes.announced == []
    (checked,) = [r for r in m.events.records if r["ev"] == "checked6"]
    assert checked["refused"] == {str(claimed): reason}


def test_ipv4_prefixes_are_left_to_the_ipv4_handoff() -> None:
    fakes = Fakes()
    m = mobility(fakes, Rib())
    assert asyncio.run(m.on_authenticated("mn1.example", [IPv4Network("10.64.0.10/32")], 3)) == []
    assert m.on_rib_change({IPv4Network("10.64.0.10/32")}) == []


def test_the_resolver_verifies_a_prefix_by_aaaa_and_its_own_ptr() -> None:
    """draft 2.3: an AAAA drawn from the prefix, then the PTR of the containing prefix."""
    import dns.rdatatype
    import dns.rrset

    from agents.dns import DnsRecordError, ValidatingResolver, prefix_reverse_name

    other = IPv6Network("2001:db8:4000:2::/64")
    stranger = IPv6Network("2001:db8:4000:3::/64")
    records = {
        ("mn1.example", "AAAA"): ["2001:db8:4000:1::1", "2001:db8:4000:2::1"],
        (prefix_reverse_name(HOME), "PTR"): ["mn1.example."],
        (prefix_reverse_name(other), "PTR"): ["mn9.example."],
    }

    class Fake(ValidatingResolver):
        async def require(self, name: str, rdtype: dns.rdatatype.RdataType) -> dns.rrset.RRset:
            values = records.get((name, dns.rdatatype.to_text(rdtype)))
            if values is None:
                raise DnsRecordError(f"{name}: no such name")
            return dns.rrset.from_text(name, 5, "IN", dns.rdatatype.to_text(rdtype), *values)

    accepted, refused = asyncio.run(Fake("127.0.0.1").verify_prefixes(
        "mn1.example", [HOME, other, stranger, VISITOR]))
    assert accepted == [HOME]
    assert refused[other] == "PTR names mn9.example, not mn1.example"
    assert refused[stranger].startswith("not among the validated addresses")
    assert refused[VISITOR].startswith("not among the validated addresses")


def test_back_home_from_another_cluster_the_prefix_escapes_the_cluster() -> None:
    """The stale /64 at ar5 (cluster k3) is beaten only if ours reaches the cores: tagged
    with the escape community, as a /32 is; from a cluster-mate it stays in the cluster."""
    ar5 = IPv6Address("2001:db8:ff::b")
    k1, k3 = IPv6Network("2001:db8:4000::/44"), IPv6Network("2001:db8:4020::/44")
    for far, escaped in ((ar5, [HOME]), (AR2, [])):
        fakes, rib = Fakes(), Rib()
        rib.update("agg1", [Route(HOME, far, 900)], [])
        m = mobility(fakes, rib)
        m.clusters = {ME: k1, AR2: k1, ar5: k3}
        asyncio.run(m.on_authenticated("mn1.example", [HOME], 3))
        assert fakes.announced == [(HOME, 1000)] and fakes.escaped == escaped


def test_an_older_far_prefix_heard_after_ours_makes_ours_leave_the_cluster() -> None:
    """As for a /32: ar5's older /64 (cluster k3) heard after ours was kept in cluster k1;
    ours escapes at the same LOCAL_PREF so that ar5 hears it and withdraws."""
    ar5 = IPv6Address("2001:db8:ff::b")
    k1, k3 = IPv6Network("2001:db8:4000::/44"), IPv6Network("2001:db8:4020::/44")
    fakes, rib = Fakes(), Rib()
    rib.update("agg2", [Route(VISITOR, AR2, 900)], [])
    m = mobility(fakes, rib)
    m.clusters = {ME: k1, AR2: k1, ar5: k3}
    asyncio.run(m.on_authenticated("mn2.example", [VISITOR], 3))
    assert fakes.announced == [(VISITOR, 1000)] and fakes.escaped == []
    rib.update("core1", [Route(VISITOR, ar5, 950)], [])
    assert m.on_rib_change({VISITOR}) == []
    assert fakes.announced == [(VISITOR, 1000), (VISITOR, 1000)]
    assert fakes.escaped == [VISITOR] and m.escaped == {VISITOR}
    assert m.on_rib_change({VISITOR}) == [] and len(fakes.announced) == 2


def test_a_late_route_of_the_ar_the_mn_came_from_is_outbid_once_not_obeyed() -> None:
    """As for a /32 (test_handoff): ar2's route, stamped ahead of the clock and heard only
    after the MN came to us from ar2, is out-announced once; one stamped past ours ends it."""
    fakes, rib = Fakes(), Rib()
    m = mobility(fakes, rib)
    m.peers = {AR2: Peer6("ar2", "ar2.isp.test", AR2, IPv6Address("fe80::fa01:2"),
                          IPv6Network("2001:db8:4000:100::/56"))}
    asyncio.run(m.on_authenticated("mn1.example", [HOME], 3, previous="ar2.isp.test"))
    assert fakes.announced == []  # home, nothing heard to beat
    rib.update("agg1", [Route(HOME, AR2, 1001)], [])
    assert m.on_rib_change({HOME}) == [] and HOME in m.attached
    assert fakes.announced == [(HOME, 1002)]
    rib.update("agg1", [Route(HOME, AR2, 1003)], [])  # the MN really went back to ar2
    assert m.on_rib_change({HOME}) == [HOME] and HOME not in m.attached


def test_a_tie_is_the_newer_move_unless_the_mn_came_from_there() -> None:
    """As for a /32: ar2's route with our attachment's LOCAL_PREF (two moves in one second)
    is the newer move, unless the MN said it came from ar2; then ours beats it strictly."""
    fakes, rib = Fakes(), Rib()
    m = mobility(fakes, rib)
    asyncio.run(m.on_authenticated("mn1.example", [HOME], 3))
    rib.update("agg1", [Route(HOME, AR2, 1000)], [])
    assert m.on_rib_change({HOME}) == [HOME] and HOME not in m.attached
    fakes2, rib2 = Fakes(), Rib()
    m2 = mobility(fakes2, rib2)
    m2.peers = {AR2: Peer6("ar2", "ar2.isp.test", AR2, IPv6Address("fe80::fa01:2"),
                           IPv6Network("2001:db8:4000:100::/56"))}
    asyncio.run(m2.on_authenticated("mn1.example", [HOME], 3, previous="ar2.isp.test"))
    rib2.update("agg1", [Route(HOME, AR2, 1000)], [])
    assert m2.on_rib_change({HOME}) == [] and HOME in m2.attached
    assert fakes2.announced == [(HOME, 1001)]


def test_back_home_from_the_home_agent_the_prefix_escapes_the_cluster() -> None:
    """Issue 18: the HA's /64 has a next hop of no AR, in no cluster (as for a /32 in
    handoff.Mobility): ours must reach the cores, where the HA's is, so it is tagged."""
    ha = IPv6Address("2001:db8:fe00:20::2")
    k1 = IPv6Network("2001:db8:4000::/44")
    fakes, rib = Fakes(), Rib()
    rib.update("agg1", [Route(HOME, ha, 900)], [])
    m = mobility(fakes, rib)
    m.clusters = {ME: k1, AR2: k1}
    asyncio.run(m.on_authenticated("mn1.example", [HOME], 3))
    assert fakes.announced == [(HOME, 1000)] and fakes.escaped == [HOME]


def test_the_home_agent_announces_every_prefix_tagged_and_withdraws_it_on_a_newer_route(
        ) -> None:
    """The Home Agent's PrefixMobility: no pool (NO_POOL6) and no cluster of its own, so it
    announces a bound /64 anywhere in the plan, tagged to leave a cluster; an AR's newer
    route ends the binding (detach: the tunnel route goes) and the announcement."""
    ha = IPv6Address("2001:db8:fe00:20::2")
    fakes, rib = Fakes(), Rib()
    m = PrefixMobility(loopback=ha, pool=IPv6Network("::/128"),
                       managed=IPv6Network("2001:db8:4000::/40"), mn_prefixlen=64,
                       checker=fakes, kernel=fakes, bgp=fakes, rib=rib, clock=lambda: 1000.0,
                       spawn=asyncio.run, escape_always=True,
                       clusters={ME: IPv6Network("2001:db8:4000::/44")})
    rib.update("core1", [Route(HOME, AR2, 900)], [])  # where the MN was before
    assert asyncio.run(m.on_authenticated("mn1.example", [HOME], 0)) == [HOME]
    assert fakes.announced == [(HOME, 1000)] and fakes.escaped == [HOME]
    rib.update("core1", [Route(HOME, AR2, 900)], [])  # the old one is older: it stays
    assert m.on_rib_change({HOME}) == [] and fakes.withdrawn == []
    rib.update("core1", [Route(HOME, ME, 2000)], [])  # re-routed by ar1 (home), newer
    assert m.on_rib_change({HOME}) == [HOME]
    assert fakes.withdrawn == [HOME] and fakes.detached == [HOME] and HOME not in m.attached


# --- the fast redirect of a /64 (issue 18): handoff.Mobility's, for IPv6 ---------------------

AR2_LL = IPv6Address("fe80::fa01:2")
PEER2 = Peer6("ar2", "ar2.isp.test", AR2, AR2_LL, IPv6Network("2001:db8:4000:100::/56"))
ME_PEER = Peer6("ar1", "ar1.isp.test", ME, IPv6Address("fe80::fa01:1"), POOL)


class Spawned:
    """The agent's spawn, kept: a test runs what was spawned when it chooses."""

    def __init__(self) -> None:
        self.tasks: list[Awaitable[None]] = []

    def __call__(self, aw: Awaitable[None]) -> None:
        self.tasks.append(aw)

    async def run(self) -> None:
        while self.tasks:
            await self.tasks.pop(0)


def redirecting(fakes: Fakes, rib: Rib, spawned: Spawned, *, me: IPv6Address = ME,
                pool: IPv6Network = POOL, peers: tuple[Peer6, ...] = (PEER2,),
                mode: Mode = Mode.REDIRECT, now: float = 1000.0
                ) -> tuple[PrefixMobility, list[tuple[str, list[IPv6Network]]]]:
    sent: list[tuple[str, list[IPv6Network]]] = []

    async def redirector(peer: Peer6, prefixes: list[IPv6Network],
                         origin_us: int | None) -> list[IPv6Network]:
        sent.append((peer.node, prefixes))
        return prefixes

    m = PrefixMobility(loopback=me, pool=pool, managed=IPv6Network("2001:db8:4000::/40"),
                       mn_prefixlen=64, checker=fakes, kernel=fakes, bgp=fakes, rib=rib,
                       clock=lambda: now, spawn=spawned, redirect_hold_s=0,
                       peers={p.loopback: p for p in peers}, redirector=redirector,
                       mode=lambda: mode)
    return m, sent


def redirect_from(peer: Peer6, *prefixes: IPv6Network, page: bool = False,
                  origin_us: int | None = None) -> AuthResult:
    return AuthResult(peer.fqdn, "ar1.isp.test", Suite.P256, prefixes, True, b"r" * 8,
                      ("10.255.0.8", 7411), None, 0, page=page, origin_us=origin_us)


def test_the_new_ar_asks_the_previous_one_first_with_every_accepted_prefix() -> None:
    """ar1 -> ar2: ar2 (here ``ME_PEER``'s role is ar1's) names the MN's /64s in one AUTH."""
    fakes, rib, spawned = Fakes(), Rib(), Spawned()
    m, sent = redirecting(fakes, rib, spawned, me=AR2, pool=PEER2.pool, peers=(ME_PEER,))
    other = IPv6Network("2001:db8:4000:2::/64")
    assert asyncio.run(m.on_authenticated("mn1.example", [HOME, other], 3,
                                          "ar1.isp.test")) == [HOME, other]
    assert len(spawned.tasks) == 1 and fakes.attached == [HOME, other]
    asyncio.run(spawned.run())
    assert sent == [("ar1", [HOME, other])]
    assert [r["ev"] for r in m.events.records][-2:] == ["redirect6_sent", "redirect6_acked"]


@pytest.mark.parametrize("mode", [Mode.DRAFT])
def test_no_redirect_in_draft_mode(mode: Mode) -> None:
    fakes, rib, spawned = Fakes(), Rib(), Spawned()
    m, sent = redirecting(fakes, rib, spawned, me=AR2, pool=PEER2.pool, peers=(ME_PEER,),
                          mode=mode)
    asyncio.run(m.on_authenticated("mn1.example", [HOME], 3, "ar1.isp.test"))
    asyncio.run(spawned.run())
    assert sent == [] and fakes.attached == [HOME]


def test_without_a_hint_the_pool_owner_is_asked() -> None:
    fakes, rib, spawned = Fakes(), Rib(), Spawned()
    m, sent = redirecting(fakes, rib, spawned, me=AR2, pool=PEER2.pool, peers=(ME_PEER,))
    asyncio.run(m.on_authenticated("mn1.example", [HOME], 3))
    asyncio.run(spawned.run())
    assert sent == [("ar1", [HOME])]


def test_the_previous_ar_moves_the_prefix_into_the_overlay_then_lets_go_after_bgp() -> None:
    """ar1 (home) held the MN; ar2's redirect arrives: the access route goes and the overlay
    route comes in one step, ar2's route counts as newer whatever its LOCAL_PREF, and the
    redirect goes once our BGP points at ar2 (after the hold, zero here)."""
    fakes, rib, spawned = Fakes(), Rib(), Spawned()
    m, _ = redirecting(fakes, rib, spawned)
    asyncio.run(m.on_authenticated("mn1.example", [HOME], 3))
    assert asyncio.run(m.on_redirect(PEER2.fqdn, redirect_from(PEER2, HOME))) == [HOME]
    assert fakes.redirected == [(HOME, AR2_LL, True)] and HOME not in m.attached
    assert m.superseded_by[HOME] == AR2 and HOME in m.redirects
    assert m.status()["redirects"] == {str(HOME): "ar2"}
    assert m.status()["redirect_kind"] == "vxlan"
    asyncio.run(spawned.run())
    assert fakes.unredirected == []  # BGP has not converged yet
    rib.update("agg1", [Route(HOME, AR2, 10)], [])  # ar2's clock far behind: still newer
    m.on_rib_change({HOME})
    asyncio.run(spawned.run())
    assert fakes.unredirected == [HOME] and m.redirects == {}
    assert [r["reason"] for r in m.events.records if r["ev"] == "redirect6_removed"] == [
        "bgp converged"]


def test_a_redirect_for_an_earlier_auth_than_our_attachment_keeps_the_prefix() -> None:
    """handoff.Mobility's rule for a /64: ar2's redirect follows an AUTH the MN sent before
    the one that attached it here, so the MN is here; a later one moves the prefix."""
    fakes, rib, spawned = Fakes(), Rib(), Spawned()
    m, _ = redirecting(fakes, rib, spawned)
    asyncio.run(m.on_authenticated("mn1.example", [HOME], 3, origin_us=2_000))
    assert asyncio.run(m.on_redirect(PEER2.fqdn, redirect_from(PEER2, HOME,
                                                                origin_us=1_000))) == []
    assert fakes.redirected == [] and HOME in m.attached and HOME not in m.superseded_by
    assert asyncio.run(m.on_redirect(PEER2.fqdn, redirect_from(PEER2, HOME,
                                                                origin_us=3_000))) == [HOME]
    assert fakes.redirected == [(HOME, AR2_LL, True)] and HOME not in m.attached


def test_a_retry_makes_the_prefix_attachment_as_new_as_it() -> None:
    """handoff.Mobility.saw_auth for a /64: a retry's later time protects the attachment
    from a redirect that follows an AUTH sent between the two."""
    fakes, rib, spawned = Fakes(), Rib(), Spawned()
    m, _ = redirecting(fakes, rib, spawned)
    asyncio.run(m.on_authenticated("mn1.example", [HOME], 3, origin_us=2_000))
    m.saw_auth(AuthResult("mn1.example", "ar1.isp.test", Suite.P256, (HOME,), True, b"t" * 8,
                          ("10.64.0.10", 4000), None, 3, timestamp_us=2_600))
    assert m.attached[HOME].origin_us == 2_600
    assert asyncio.run(m.on_redirect(PEER2.fqdn, redirect_from(PEER2, HOME,
                                                                origin_us=2_300))) == []
    assert HOME in m.attached
    asyncio.run(m.on_authenticated("mn1.example", [HOME], 3, origin_us=2_100))
    assert m.attached[HOME].origin_us == 2_600


def test_a_prefix_checked_after_a_redirect_told_of_a_later_auth_is_not_taken() -> None:
    """handoff.moved_on_since for a /64: ar2's redirect (not ours: refused) said the MN
    authenticated there after the AUTH whose checks we finish late; a newer AUTH is taken."""
    fakes, rib, spawned = Fakes(), Rib(), Spawned()
    m, sent = redirecting(fakes, rib, spawned)
    assert asyncio.run(m.on_redirect(PEER2.fqdn, redirect_from(PEER2, VISITOR,
                                                                origin_us=2_000))) == []
    assert asyncio.run(m.on_authenticated("mn2.example", [VISITOR], 3, "ar2.isp.test",
                                          origin_us=1_000)) == []
    assert fakes.attached == [] and fakes.announced == [] and spawned.tasks == []
    assert asyncio.run(m.on_authenticated("mn2.example", [VISITOR], 3,
                                          origin_us=3_000)) == [VISITOR]
    assert fakes.attached == [VISITOR] and m.moved_on == {}
    asyncio.run(spawned.run())
    assert sent == [("ar2", [VISITOR])]  # the newer AUTH's redirect to the pool's owner


def test_a_visitor_prefix_announced_here_is_withdrawn_for_the_redirecting_ar() -> None:
    fakes, rib, spawned = Fakes(), Rib(), Spawned()
    m, _ = redirecting(fakes, rib, spawned, peers=(PEER2,))
    asyncio.run(m.on_authenticated("mn2.example", [VISITOR], 3))
    assert fakes.announced == [(VISITOR, 1000)]
    asyncio.run(m.on_redirect(PEER2.fqdn, redirect_from(PEER2, VISITOR)))
    assert fakes.redirected == [(VISITOR, AR2_LL, True)]
    rib.update("agg1", [Route(VISITOR, AR2, 999)], [])  # a tie-breaking clock behind ours
    m.on_rib_change({VISITOR})
    assert fakes.withdrawn == [VISITOR]
    # Return home: ar2 owns the pool; once no /64 remains at all the redirect goes too.
    asyncio.run(spawned.run())
    assert fakes.unredirected == [VISITOR]


def test_return_home_redirect_goes_when_no_prefix_route_is_left() -> None:
    fakes, rib, spawned = Fakes(), Rib(), Spawned()
    m, _ = redirecting(fakes, rib, spawned, peers=(PEER2,))
    asyncio.run(m.on_authenticated("mn2.example", [VISITOR], 3))
    rib.update("agg1", [Route(VISITOR, AR2, 1001)], [])  # the home AR beat ours...
    asyncio.run(m.on_redirect(PEER2.fqdn, redirect_from(PEER2, VISITOR)))
    rib.update("agg1", [], [VISITOR])  # ...then withdrew: its pool covers the /64
    m.on_rib_change({VISITOR})
    asyncio.run(spawned.run())
    assert fakes.unredirected == [VISITOR] and m.redirects == {}


@pytest.mark.parametrize(("prefix", "page"), [
    (IPv6Network("2001:db8:4000:300::/64"), False),  # not ours: nothing of ours, not our pool
    (IPv6Network("2001:db8:4000::/60"), False),  # not the plan's length
    (HOME, True),  # a page is no redirect
])
def test_a_redirect_for_what_is_not_ours_changes_nothing(prefix: IPv6Network,
                                                         page: bool) -> None:
    fakes, rib, spawned = Fakes(), Rib(), Spawned()
    m, _ = redirecting(fakes, rib, spawned)
    assert asyncio.run(m.on_redirect(PEER2.fqdn, redirect_from(PEER2, prefix, page=page))) == []
    assert fakes.redirected == [] and m.redirects == {} and m.superseded_by == {}


def test_a_redirect_from_no_ar_is_ignored() -> None:
    fakes, rib, spawned = Fakes(), Rib(), Spawned()
    m, _ = redirecting(fakes, rib, spawned)
    stranger = Peer6("x", "mn9.example", AR2, AR2_LL, PEER2.pool)
    assert asyncio.run(m.on_redirect(stranger.fqdn, redirect_from(stranger, HOME))) == []
    assert fakes.redirected == []


def test_a_redirect_bgp_never_supersedes_expires() -> None:
    fakes, rib, spawned = Fakes(), Rib(), Spawned()
    now = [1000.0]
    m, _ = redirecting(fakes, rib, spawned)
    m.clock = lambda: now[0]
    asyncio.run(m.on_redirect(PEER2.fqdn, redirect_from(PEER2, HOME)))
    m.expire()
    asyncio.run(spawned.run())
    assert fakes.unredirected == []
    now[0] += REDIRECT_LIFETIME_S
    m.expire()
    asyncio.run(spawned.run())
    assert fakes.unredirected == [HOME] and m.redirects == {}


def test_the_mn_back_before_bgp_settled_is_served_on_the_access_link_again() -> None:
    fakes, rib, spawned = Fakes(), Rib(), Spawned()
    m, _ = redirecting(fakes, rib, spawned)
    asyncio.run(m.on_redirect(PEER2.fqdn, redirect_from(PEER2, HOME)))
    asyncio.run(m.on_authenticated("mn1.example", [HOME], 3, PEER2.fqdn))
    assert fakes.unredirected == [HOME] and m.redirects == {} and m.superseded_by == {}
    assert HOME in m.attached
    asyncio.run(spawned.run())  # and it asks ar2 to redirect back to us


# --- address management (draft 2.3): what the AR's DHCPv6 server reports ---------------------

DELEGATED = IPv6Network("2001:db8:4000:80::/64")  # ar1's pool, its DHCPv6 half


def test_a_delegation_attaches_the_64_at_home_without_announcing_it() -> None:
    fakes, rib = Fakes(), Rib()
    m = mobility(fakes, rib)
    asyncio.run(m.assigned(DELEGATED, "mn3.example", 3))
    asyncio.run(m.assigned(DELEGATED, "mn3.example", 3))  # a renewal: nothing new
    assert fakes.attached == [DELEGATED] and fakes.announced == []
    assert m.attached[DELEGATED].mn == "mn3.example"


def test_an_ended_delegation_beats_a_visitor_route_then_leaves_only_the_pool() -> None:
    """The MN went to ar2 and its delegation ended there: ar1 out-announces ar2's /64, so
    that ar2 detaches and withdraws, and then withdraws its own: no /64 is left anywhere."""
    fakes, rib = Fakes(), Rib()
    m = mobility(fakes, rib)
    asyncio.run(m.assigned(DELEGATED, "mn3.example", 3))
    rib.update("agg1", [Route(DELEGATED, AR2, 1500)], [])  # the MN is at ar2 now
    assert m.on_rib_change({DELEGATED}) == [DELEGATED]  # detached here
    m.reclaim(DELEGATED, "expired")
    assert fakes.announced == [(DELEGATED, 1501)] and DELEGATED in m.reclaiming
    rib.update("agg1", [], [DELEGATED])  # ar2 saw the newer route and withdrew
    m.on_rib_change({DELEGATED})
    assert fakes.withdrawn == [DELEGATED] and not m.reclaiming and not m.announced


def test_a_reclaim_that_never_sees_the_visitor_go_withdraws_after_its_timeout() -> None:
    fakes, rib = Fakes(), Rib()
    now = [1000.0]
    m = mobility(fakes, rib, now)
    rib.update("agg1", [Route(DELEGATED, AR2, 900)], [])
    m.reclaim(DELEGATED, "released")
    now[0] += m.reclaim_timeout_s
    m.expire()
    assert fakes.withdrawn == [DELEGATED] and not m.reclaiming


def test_an_ended_delegation_at_home_detaches_and_announces_nothing() -> None:
    fakes, rib = Fakes(), Rib()
    m = mobility(fakes, rib)
    asyncio.run(m.assigned(DELEGATED, "mn3.example", 3))
    m.reclaim(DELEGATED, "released")
    assert fakes.detached == [DELEGATED] and fakes.announced == fakes.withdrawn == []
    assert DELEGATED not in m.attached


def test_a_visitors_delegation_ends_at_its_current_ar_with_the_relayed_release() -> None:
    fakes, rib = Fakes(), Rib()
    now = [1000.0]
    m = mobility(fakes, rib, now)
    asyncio.run(m.on_authenticated("mn2.example", [VISITOR], 3))
    m.visitor_lease(VISITOR, 1030.0)
    m.visitor_lease(DELEGATED, 1030.0)  # our own pool's: the server's business, not kept
    assert list(m.visitor_leases) == [VISITOR]
    now[0] = 1030.0
    m.expire()  # its delegation was never renewed through us
    assert fakes.withdrawn == [VISITOR] and fakes.detached == [VISITOR]
    assert VISITOR not in m.attached and not m.visitor_leases


def test_a_lease_recorded_on_an_earlier_visit_does_not_end_the_next_one() -> None:
    """The MN renewed through us, moved on, came back: the first visit's lease end must not
    withdraw the /64 it brought again (it had renewed through the AR it was on meanwhile;
    a lab run lost a /64 and its DHCPv6 relay to exactly this, 0.5 s after the handoff)."""
    fakes, rib = Fakes(), Rib()
    now = [1000.0]
    m = mobility(fakes, rib, now)
    asyncio.run(m.on_authenticated("mn2.example", [VISITOR], 3))
    m.visitor_lease(VISITOR, 1020.0)
    rib.update("agg1", [Route(VISITOR, AR2, 5000)], [])  # the MN moved on
    assert m.on_rib_change({VISITOR}) == [VISITOR] and VISITOR not in m.attached
    now[0] = 1010.0
    asyncio.run(m.on_authenticated("mn2.example", [VISITOR], 3))  # and came back
    assert VISITOR in m.attached and not m.visitor_leases
    now[0] = 1021.0
    m.expire()
    assert VISITOR in m.attached and fakes.detached == [VISITOR]  # only the first departure
    # Within one visit a relayed renewal's lease still bounds it.
    m.visitor_lease(VISITOR, 1030.0)
    asyncio.run(m.on_authenticated("mn2.example", [VISITOR], 3))  # authenticated again here
    assert m.visitor_leases == {VISITOR: 1030.0}


# --- idle mode for the /64s (draft 4; agents/idle.py's table, the IPv6 one) -----------------

def packet6(seq: int, dst: str = "2001:db8:4000:1::1") -> bytes:
    """An IPv6 header (next header UDP, no payload checks) and the sequence number."""
    head = bytes([0x60, 0, 0, 0, 0, 8, 17, 64]) + IPv6Address("2001:db8:1::2").packed
    return head + IPv6Address(dst).packed + seq.to_bytes(8, "big")


class IdleKernel(Fakes):
    def __init__(self) -> None:
        super().__init__()
        self.parked: list[IPv6Network] = []
        self.unparked: list[tuple[IPv6Network, str | None]] = []
        self.reinjected: list[tuple[int, str | None]] = []

    async def park6(self, prefix: IPv6Network) -> None:
        self.parked.append(prefix)

    async def reinject(self, packets: list[bytes], via: str | None) -> int:
        self.reinjected += [(int.from_bytes(p[40:], "big"), via) for p in packets]
        return len(packets)

    async def unpark(self, prefix: IPv6Network, via: str | None,
                     late: deque[bytes]) -> None:
        self.unparked.append((prefix, via))


def drop(spawned: Spawned) -> None:
    """Close what was spawned without running it (pages and their 30 s timeout)."""
    for task in spawned.tasks:
        if asyncio.iscoroutine(task):
            task.close()
    spawned.tasks.clear()


def idling(spawned: Spawned, *, bound: int = 3) -> tuple[
        PrefixMobility, IdleKernel, list[list[IPv6Network]], list[str]]:
    fakes = IdleKernel()
    paged: list[list[IPv6Network]] = []
    remote: list[str] = []

    async def page_remote(node: str, prefixes: list[IPv6Network]) -> object:
        remote.append(node)
        return prefixes

    m, _ = redirecting(fakes, Rib(), spawned)
    m.paging = IdleTable[IPv6Network](
        "ipv6", "ar1", functools.partial(prefix_of, prefixlen=64), fakes.reinject,
        fakes.unpark, m.events, lambda: 1000.0, spawned, ("ar1", "ar2", "ar3"),
        pager=paged.append, page_remote=page_remote, bound=bound, timeout_s=30.0)
    return m, fakes, paged, remote


def idle_at_home(spawned: Spawned) -> tuple[PrefixMobility, IdleKernel]:
    """mn1 attached here with its /64, then idle: the /64 parked."""
    m, fakes, _, _ = idling(spawned)
    asyncio.run(m.on_authenticated("mn1.example", [HOME], 3))
    asyncio.run(m.on_result(idle_auth(HOME), False))
    return m, fakes


def idle_auth(*prefixes: IPv6Network, idle: bool = True, page: bool = False,
              previous: str | None = None) -> AuthResult:
    return AuthResult("mn1.example", "ar1.isp.test", Suite.P256, prefixes, True, b"s" * 8,
                      ("10.64.0.10", 4000), previous, 3, idle, page)


def test_an_idle_mns_prefix_is_parked_buffered_paged_and_follows_the_redirect() -> None:
    spawned = Spawned()
    m, fakes, paged, remote = idling(spawned)
    asyncio.run(m.on_authenticated("mn1.example", [HOME], 3))
    assert asyncio.run(m.on_result(idle_auth(HOME), False)) == [HOME]
    assert fakes.parked == [HOME] and HOME not in m.attached
    assert m.status()["idle"][str(HOME)]["mn"] == "mn1.example"
    assert m.paging is not None
    for seq in range(5):  # the bound is 3: the two newest are dropped
        m.paging.on_buffered(packet6(seq, "2001:db8:4000:1::1"))
    m.paging.on_buffered(packet6(9, "2001:db8:4000:2::1"))  # nobody idle in that /64
    assert paged == [[HOME]] and m.paging.unbuffered_drops == 1
    start = next(r for r in m.events.records if r["ev"] == "page_start")
    assert start["family"] == "ipv6" and start["addr"] == str(HOME)

    async def remote_pages() -> None:  # spawned first; the page timeout is left
        for _ in range(2):
            await spawned.tasks.pop(0)

    asyncio.run(remote_pages())
    assert remote == ["ar2", "ar3"]
    # The MN answers at ar2: ar2's redirect arrives; the buffer goes into the overlay.
    assert asyncio.run(m.on_redirect(PEER2.fqdn, redirect_from(PEER2, HOME))) == [HOME]
    assert fakes.redirected == [(HOME, AR2_LL, False)]
    assert fakes.reinjected == [(0, "overlay"), (1, "overlay"), (2, "overlay")]
    assert fakes.unparked == [(HOME, "overlay")] and m.status()["idle"] == {}
    flushed = next(r for r in m.events.records if r["ev"] == "flushed")
    assert (flushed["buffered"], flushed["dropped"], flushed["family"]) == (3, 2, "ipv6")
    drop(spawned)  # the page timeout, not run


def test_a_paged_mn_answering_where_it_went_idle_gets_its_prefix_back_locally() -> None:
    spawned = Spawned()
    m, fakes = idle_at_home(spawned)
    assert m.paging is not None
    m.paging.on_buffered(packet6(7))
    before = len(spawned.tasks)
    answer = idle_auth(HOME, idle=False, page=True, previous="ar1.isp.test")
    assert asyncio.run(m.on_result(answer, False)) == [HOME]
    assert fakes.reinjected == [(7, "access")] and fakes.unparked == [(HOME, "access")]
    assert HOME in m.attached and fakes.attached == [HOME, HOME]
    # Nobody to redirect from: no redirect was spawned by the answer.
    assert len(spawned.tasks) == before
    drop(spawned)


def test_a_newer_route_elsewhere_releases_the_buffer_to_the_routing_table() -> None:
    spawned = Spawned()
    m, fakes = idle_at_home(spawned)
    assert m.paging is not None
    m.paging.on_buffered(packet6(4))
    drop(spawned)
    m.rib.update("agg1", [Route(HOME, AR2, 2000)], [])  # type: ignore[attr-defined]
    m.on_rib_change({HOME})
    asyncio.run(spawned.run())
    assert fakes.reinjected == [(4, None)] and fakes.unparked == [(HOME, None)]
    assert m.status()["idle"] == {}


def test_only_the_mns_own_attached_prefixes_go_idle() -> None:
    spawned = Spawned()
    m, fakes, _, _ = idling(spawned)
    asyncio.run(m.on_authenticated("mn1.example", [HOME], 3))
    other = AuthResult("mn2.example", "ar1.isp.test", Suite.P256, (HOME, VISITOR), True,
                       b"s" * 8, ("10.64.0.11", 4000), None, 3, True)
    assert asyncio.run(m.on_result(other, False)) == []
    assert fakes.parked == [] and HOME in m.attached
    m.paging = None  # the Home Agent: no paging, nothing parks
    assert asyncio.run(m.on_result(idle_auth(HOME), False)) == []


def test_an_ended_delegation_takes_an_idle_64s_paging_route_with_it() -> None:
    spawned = Spawned()
    m, fakes = idle_at_home(spawned)
    m.reclaim(HOME, "released")
    asyncio.run(spawned.run())
    assert fakes.unparked == [(HOME, None)] and m.status()["idle"] == {}
    m2, fakes2 = idle_at_home(spawned)
    asyncio.run(m2.lease_gone(HOME, "delegation expired"))  # our own: the server reclaims
    assert fakes2.unparked == [] and str(HOME) in m2.status()["idle"]
    visitor = IdleKernel()
    m3, _ = redirecting(visitor, Rib(), spawned, me=AR2, pool=PEER2.pool, peers=(ME_PEER,))
    m3.paging = idling(spawned)[0].paging
    asyncio.run(m3.on_authenticated("mn1.example", [HOME], 3))
    asyncio.run(m3.on_result(idle_auth(HOME), False))
    asyncio.run(m3.lease_gone(HOME, "released"))
    assert m3.paging is not None and m3.paging.idle == {}
    drop(spawned)
