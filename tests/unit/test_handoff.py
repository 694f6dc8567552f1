"""The AR's handoff decisions (agents/handoff.py) against fake kernel, BGP and DNS: what is
re-routed or refused, strictly newest-wins LOCAL_PREF, withdrawal, return home, redirects."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address, IPv4Network, IPv6Network

import pytest

from agents.auth import AuthResult, Suite
from agents.exabgp_api import Route
from agents.fib import Rib
from agents.handoff import (
    CAME_FROM_WINDOW_S,
    MOVED_ON,
    MOVED_ON_FOR_S,
    REDIRECT_LIFETIME_S,
    ArInfo,
    Mobility,
)

NOW = 1_800_000_000.25
A = IPv4Address("10.64.0.10")  # from ar1's pool
# ar1 and ar2 form cluster 10.64/16; ar3 is alone in 10.65/16 and owns no pool of 10.64.
ARS = {
    f"ar{i}": ArInfo(f"ar{i}", f"ar{i}.isp.test", IPv4Address(f"10.255.0.{i}"),
                     IPv4Network(f"10.6{4 if i < 3 else 5}.{i - 1}.0/24"),
                     IPv4Network(f"10.6{4 if i < 3 else 5}.0.0/16"),
                     IPv4Address(f"169.254.1.{i}"))
    for i in (1, 2, 3)
}


class FakeDns:
    def __init__(self) -> None:
        self.owned: dict[str, set[IPv4Address]] = {"mn1.example": {A}}
        self.fail = False

    async def verify(self, mn: str, claimed: list[IPv4Address]
                     ) -> tuple[list[IPv4Address], dict[IPv4Address, str]]:
        if self.fail:
            raise RuntimeError("SERVFAIL (DNSSEC bogus)")
        mine = self.owned.get(mn, set())
        return [a for a in claimed if a in mine], {a: "PTR mismatch" for a in claimed
                                                   if a not in mine}


class FakeKernel:
    def __init__(self) -> None:
        self.access: dict[IPv4Address, int] = {}
        self.redirects: dict[IPv4Address, IPv4Address] = {}
        self.parked: set[IPv4Address] = set()
        self.reinjected: list[bytes] = []
        self.vias: list[str | None] = []

    async def attach(self, address: IPv4Address, ifindex: int) -> None:
        self.access[address] = ifindex

    async def detach(self, address: IPv4Address) -> None:
        self.access.pop(address, None)

    async def redirect(self, address: IPv4Address, via: IPv4Address, detach: bool) -> bool:
        self.redirects[address] = via
        if detach:
            self.access.pop(address, None)
        return True

    async def unredirect(self, address: IPv4Address) -> None:
        self.redirects.pop(address, None)

    async def park(self, address: IPv4Address) -> None:
        self.access.pop(address, None)
        self.parked.add(address)

    async def unpark(self, address: IPv4Address, via: str | None = None,
                     late: object = None) -> None:
        self.parked.discard(address)

    async def reinject(self, packets: list[bytes], via: str | None) -> int:
        self.reinjected.extend(packets)
        self.vias.append(via)
        return len(packets)


class FakeBgp:
    def __init__(self) -> None:
        self.announced: dict[IPv4Network, int] = {}
        self.escaped: set[IPv4Network] = set()
        self.log: list[tuple[str, IPv4Network, int | None]] = []

    def announce(self, prefix: IPv4Network, local_pref: int, escape: bool = False) -> None:
        self.announced[prefix] = local_pref
        if escape:
            self.escaped.add(prefix)
        self.log.append(("announce", prefix, local_pref))

    def withdraw(self, prefix: IPv4Network) -> None:
        self.announced.pop(prefix, None)
        self.log.append(("withdraw", prefix, None))


class Harness:
    def __init__(self, me: str, mode: str = "redirect") -> None:
        self.dns = FakeDns()
        self.kernel = FakeKernel()
        self.bgp = FakeBgp()
        self.rib = Rib()
        self.redirected: list[tuple[str, list[IPv4Address]]] = []
        self.now = NOW

        self.origins: list[int | None] = []

        async def redirector(target: ArInfo, addrs: list[IPv4Address],
                             origin_us: int | None) -> list[IPv4Address]:
            self.redirected.append((target.node, addrs))
            self.origins.append(origin_us)
            return addrs

        self.paged: list[list[IPv4Address]] = []
        self.remote_pages: list[str] = []

        async def page_remote(target: ArInfo, addrs: list[IPv4Address]) -> list[IPv4Address]:
            self.remote_pages.append(target.node)
            return addrs

        self.mob = Mobility(
            me=ARS[me], ars=ARS, managed=IPv4Network("10.64.0.0/12"), checker=self.dns,
            kernel=self.kernel, bgp=self.bgp, rib=self.rib, redirector=redirector,
            mode=lambda: mode,  # type: ignore[arg-type, return-value]
            on_access_link=lambda ifindex: ifindex == 7, clock=lambda: self.now,
            tal=("ar1", "ar2", "ar3"), pager=self.paged.append, page_remote=page_remote,
            paging_bound=3, paging_timeout_s=0.05, redirect_hold_s=0.0,
        )

    def auth(self, *addrs: str, peer: str = "mn1.example", previous: str | None = None,
             ifindex: int = 7, idle: bool = False, timestamp_us: int = 0) -> list[IPv4Address]:
        result = AuthResult(peer, self.mob.me.fqdn, Suite.P256,
                            tuple(IPv4Network(a) for a in addrs), True, b"s" * 8,
                            ("10.64.0.10", 4000), previous, ifindex, idle,
                            timestamp_us=timestamp_us)

        async def go() -> list[IPv4Address]:
            out = await self.mob.on_authenticated(result)
            await asyncio.sleep(0)  # let spawned redirects and detaches run
            await asyncio.gather(*list(self.mob._tasks))
            return out

        return asyncio.run(go())

    def route_from(self, ar: str, lp: int, prefix: str = "10.64.0.10/32") -> None:
        self.route_via(ARS[ar].loopback, lp, prefix, f"rr-{ar}")

    def route_via(self, hop: IPv4Address, lp: int, prefix: str = "10.64.0.10/32",
                  peer: str = "rr-core") -> None:
        net = IPv4Network(prefix)
        changed = self.rib.update(peer, [Route(net, hop, lp)], [])

        async def go() -> None:
            self.mob.on_rib_change(changed)
            await asyncio.sleep(0)
            await asyncio.gather(*list(self.mob._tasks))

        asyncio.run(go())

    def withdraw_from(self, ar: str, prefix: str = "10.64.0.10/32") -> None:
        changed = self.rib.update(f"rr-{ar}", [], [IPv4Network(prefix)])

        async def go() -> None:
            self.mob.on_rib_change(changed)
            await asyncio.gather(*list(self.mob._tasks))

        asyncio.run(go())


H32 = IPv4Network("10.64.0.10/32")


def test_visited_ar_reroutes_announces_timestamp_and_redirects_the_previous_ar() -> None:
    h = Harness("ar2")
    assert h.auth("10.64.0.10/32") == [A]
    assert h.kernel.access == {A: 7}
    assert h.bgp.announced == {H32: int(NOW)}
    # No hint and no /32 in BGP: the pool owner is the previous AR.
    assert h.redirected == [("ar1", [A])]


def test_draft_mode_sends_no_redirect_and_hint_picks_the_previous_ar() -> None:
    h = Harness("ar3", mode="draft")
    assert h.auth("10.64.0.10/32", previous="ar2.isp.test") == [A]
    assert h.redirected == []
    h2 = Harness("ar3")
    h2.auth("10.64.0.10/32", previous="ar2.isp.test")
    assert h2.redirected == [("ar2", [A])]


def test_refusals_name_each_address_and_announce_nothing_for_them() -> None:
    h = Harness("ar2")
    # Outside the AS, owned by someone else, and a good one.
    got = h.auth("192.0.2.7/32", "10.64.0.11/32", "10.64.0.10/32")
    assert got == [A]
    checked = next(r for r in h.mob.events.records if r["ev"] == "checked")
    assert "outside" in checked["refused"]["192.0.2.7"]
    assert "PTR" in checked["refused"]["10.64.0.11"]
    assert list(h.bgp.announced) == [H32]


def test_dns_failure_or_wrong_link_refuses_everything() -> None:
    h = Harness("ar2")
    h.dns.fail = True
    assert h.auth("10.64.0.10/32") == []
    assert h.bgp.announced == {} and h.kernel.access == {}
    h2 = Harness("ar2")
    assert h2.auth("10.64.0.10/32", ifindex=3) == []  # arrived over the backbone
    assert h2.bgp.announced == {}


def test_local_pref_is_strictly_newest_within_a_second_and_against_skew() -> None:
    h = Harness("ar3")
    h.route_from("ar2", int(NOW))  # same second
    h.auth("10.64.0.10/32")
    assert h.bgp.announced[H32] == int(NOW) + 1
    h2 = Harness("ar3")
    h2.route_from("ar2", int(NOW) + 1)  # ar2's clock runs a second ahead
    h2.auth("10.64.0.10/32")
    assert h2.bgp.announced[H32] == int(NOW) + 2


def test_newer_route_elsewhere_withdraws_and_detaches() -> None:
    h = Harness("ar2", mode="draft")
    h.auth("10.64.0.10/32")
    h.route_from("ar3", int(NOW) - 1)  # older: keep serving
    assert h.bgp.announced == {H32: int(NOW)} and A in h.kernel.access
    h.route_from("ar3", int(NOW) + 1)
    assert h.bgp.announced == {} and h.kernel.access == {}
    assert ("withdraw", H32, None) in h.bgp.log


def test_a_tie_is_the_newer_move_unless_the_mn_came_from_there() -> None:
    """Two moves within one second earn the same LOCAL_PREF (a one-second timestamp): the
    other AR's route is the newer one, unless the MN's AUTH named that AR as its previous
    (test_dualstack_mn found both announced, the routers' tie-break picking the old AR)."""
    h = Harness("ar2", mode="draft")
    h.auth("10.64.0.10/32")
    h.route_from("ar3", int(NOW))  # the MN moved on to ar3 in the same second
    assert h.bgp.announced == {} and h.kernel.access == {}
    came = Harness("ar2", mode="draft")
    came.auth("10.64.0.10/32", previous="ar3.isp.test")
    came.route_from("ar3", int(NOW))  # ar3's older route, heard late: ours stands
    assert came.bgp.announced == {H32: int(NOW)} and A in came.kernel.access


def test_back_home_a_tied_route_of_the_ar_the_mn_came_from_is_beaten_strictly() -> None:
    h = Harness("ar1", mode="draft")
    h.auth("10.64.0.10/32", previous="ar3.isp.test")
    assert h.bgp.announced == {}
    h.route_from("ar3", int(NOW))  # same second as our attachment, and older
    assert h.bgp.announced == {H32: int(NOW) + 1} and h.kernel.access == {A: 7}


def test_a_late_route_of_the_ar_the_mn_came_from_is_outbid_once_not_obeyed() -> None:
    """Two moves within one reflector batch: ar3 stamped its route (highest seen + 1, ahead
    of the clock) after ours was stamped, and it reached us only after the MN did. Obeyed,
    we and ar3 (redirected away) would both let go: the MN would be left with no route."""
    for mode in ("draft", "redirect"):
        h = Harness("ar2", mode=mode)
        h.auth("10.64.0.10/32", previous="ar3.isp.test")
        assert h.bgp.announced == {H32: int(NOW)}
        h.route_from("ar3", int(NOW) + 1)
        assert h.bgp.announced == {H32: int(NOW) + 2} and h.kernel.access == {A: 7}, mode
        # One stamped past ours was stamped after ar3 heard ours: the MN went back.
        h.route_from("ar3", int(NOW) + 3)
        assert h.bgp.announced == {} and h.kernel.access == {}, mode


def test_back_home_a_late_route_of_the_ar_the_mn_came_from_is_outbid_then_withdrawn() -> None:
    h = Harness("ar1")
    h.auth("10.64.0.10/32", previous="ar2.isp.test")
    assert h.bgp.announced == {}  # home, and nothing heard to beat
    h.route_from("ar2", int(NOW) + 1)  # ar2's, stamped ahead of the clock, heard late
    assert h.bgp.announced == {H32: int(NOW) + 2} and h.kernel.access == {A: 7}
    h.withdraw_from("ar2")  # ar2 heard ours and let go
    assert h.bgp.announced == {} and h.kernel.access == {A: 7}


HA_FQDN, HA_HOP = "ha.isp.test", IPv4Address("10.253.0.6")


def test_back_from_outside_the_as_the_home_agents_route_is_the_older_one() -> None:
    """test_macro, about one run in three at a fast return: the MN came home within the
    second its HA bound it, before the HA's /32 reached its home AR. The HA's route then
    tied (or, stamped "highest seen + 1", beat) the attachment's LOCAL_PREF, and the home AR
    detached the MN and announced nothing, while the HA, which never hears a home AR's
    in-cluster /32, kept the binding: the MN's traffic went into a tunnel to nowhere. The
    MN's AUTH names its HA as where it came from, and that route is the older one."""
    for late in (0, 1):
        h = Harness("ar1", mode="draft")
        h.mob.home_agents = {HA_FQDN: HA_HOP}
        h.auth("10.64.0.10/32", previous=HA_FQDN)
        assert h.bgp.announced == {}
        h.route_via(HA_HOP, int(NOW) + late)
        # Beaten strictly, and everywhere: the HA's next hop is in no cluster.
        assert h.bgp.announced == {H32: int(NOW) + late + 1}, late
        assert h.bgp.escaped == {H32} and h.kernel.access == {A: 7}, late
        h.withdraw_from("core")  # the HA heard ours and let go
        assert h.bgp.announced == {} and h.kernel.access == {A: 7}, late
    # Not named by the MN, the HA's tied route is the newer move, as any AR's would be.
    h = Harness("ar1", mode="draft")
    h.mob.home_agents = {HA_FQDN: HA_HOP}
    h.auth("10.64.0.10/32")
    h.route_via(HA_HOP, int(NOW))
    assert h.bgp.announced == {} and h.kernel.access == {}


def test_the_mns_word_holds_only_shortly_after_the_attachment() -> None:
    """A route of the AR the MN came from is older only while it can still be late by the
    reflectors: one heard seconds later is that AR's new attachment, a real move back."""
    h = Harness("ar2", mode="draft")
    h.auth("10.64.0.10/32", previous="ar3.isp.test")
    h.now += CAME_FROM_WINDOW_S + 0.5
    h.route_from("ar3", int(NOW))  # tied with ours, but too late to be the old one
    assert h.bgp.announced == {} and h.kernel.access == {}
    late = Harness("ar2", mode="draft")
    late.auth("10.64.0.10/32", previous="ar3.isp.test")
    late.now += CAME_FROM_WINDOW_S + 0.5
    late.route_from("ar3", int(NOW) + 1)  # no out-announcing it now
    assert late.bgp.announced == {} and late.kernel.access == {}


def test_after_out_announcing_the_ar_it_came_from_a_tie_with_it_is_a_move_back() -> None:
    """Moves faster than the reflectors (ar2 -> ar3 -> ar2 -> ar3): we out-announced ar3's
    late route once; ar3 stamping our new LOCAL_PREF again is a new attachment there, and
    ours must let go, or both would stand, each naming the other as the older."""
    h = Harness("ar2", mode="draft")
    h.auth("10.64.0.10/32", previous="ar3.isp.test")
    h.route_from("ar3", int(NOW) + 1)
    assert h.bgp.announced == {H32: int(NOW) + 2}
    h.route_from("ar3", int(NOW) + 2)
    assert h.bgp.announced == {} and h.kernel.access == {}


def test_the_highest_local_pref_heard_is_remembered_after_its_route_is_gone() -> None:
    """A LOCAL_PREF stamped ahead of the clock outlives its route in our memory: the next
    attachment here is stamped above it (the HA forgot the home AR's and stamped below
    the home AR's stale attachment, which then out-announced the new binding)."""
    h = Harness("ar2", mode="draft")
    h.route_from("ar3", int(NOW) + 3)
    h.withdraw_from("ar3")
    h.auth("10.64.0.10/32")
    assert h.bgp.announced == {H32: int(NOW) + 4}


def test_a_newer_route_of_another_ar_is_obeyed_even_beside_the_previous_ars() -> None:
    h = Harness("ar2", mode="draft")
    h.auth("10.64.0.10/32", previous="ar1.isp.test")
    h.route_from("ar1", int(NOW) + 1)
    h.route_from("ar3", int(NOW) + 5)  # the MN moved on to ar3
    assert h.bgp.announced == {} and h.kernel.access == {}


def test_return_home_beats_the_visitor_then_withdraws_its_own_host_route() -> None:
    h = Harness("ar1")
    h.route_from("ar3", int(NOW) - 5)  # the MN is visiting ar3
    h.auth("10.64.0.10/32")
    assert h.bgp.announced == {H32: int(NOW)}  # beat the visitor's /32 ...
    assert h.bgp.escaped == {H32}  # ... everywhere: it lives outside our cluster
    h.withdraw_from("ar3")  # the visitor saw ours and let go
    assert h.bgp.announced == {}  # the pool route covers the MN again
    assert h.kernel.access == {A: 7}  # still attached here
    # A stale reflection of the visitor's old route must not detach us.
    h.route_from("ar3", int(NOW) - 5)
    assert h.kernel.access == {A: 7}


def test_a_visitor_route_heard_only_after_the_mn_came_home_is_beaten_then_withdrawn() -> None:
    """The MN came home before the reflectors told its home AR of the visitor's /32: that
    older /32 must not stay at the routers."""
    h = Harness("ar1")
    h.auth("10.64.0.10/32")
    assert h.bgp.announced == {}
    h.route_from("ar3", int(NOW) - 5)  # older than our attachment
    assert h.bgp.announced == {H32: int(NOW)} and h.bgp.escaped == {H32}
    assert h.kernel.access == {A: 7}
    h.withdraw_from("ar3")
    assert h.bgp.announced == {} and h.kernel.access == {A: 7}


def test_intra_cluster_host_route_stays_in_the_cluster() -> None:
    h = Harness("ar2")
    h.route_from("ar1", int(NOW) - 3)
    h.auth("10.64.0.10/32")
    assert h.bgp.announced == {H32: int(NOW)} and h.bgp.escaped == set()


def test_an_older_far_host_route_heard_after_ours_makes_ours_leave_the_cluster() -> None:
    """ar3's older /32 (another cluster) reaches ar2 only after ar2 announced the MN's /32
    inside the cluster: ar3 never hears a /32 kept in the cluster, so ours must escape, at
    the same LOCAL_PREF, or ar3's stays at the cores for good (test_dualstack_mn found it)."""
    h = Harness("ar2")
    h.route_from("ar1", int(NOW) - 3)
    h.auth("10.64.0.10/32")
    assert h.bgp.announced == {H32: int(NOW)} and h.bgp.escaped == set()
    h.route_from("ar3", int(NOW) - 5)
    assert h.bgp.announced == {H32: int(NOW)} and h.bgp.escaped == {H32}
    assert h.kernel.access == {A: 7}
    assert h.mob.escaped == {A}
    before = len(h.bgp.log)
    h.route_from("ar3", int(NOW) - 5)  # heard again: nothing more to do
    assert len(h.bgp.log) == before


def test_at_home_with_no_visitor_announces_nothing() -> None:
    h = Harness("ar1")
    h.auth("10.64.0.10/32")
    assert h.bgp.announced == {} and h.kernel.access == {A: 7}
    assert h.redirected == []  # nobody else to ask


def test_redirect_installs_temporary_route_until_bgp_points_the_same_way() -> None:
    h = Harness("ar2")
    h.auth("10.64.0.10/32")
    redirect = AuthResult("ar3.isp.test", "ar2.isp.test", Suite.P256, (H32,), True, b"r" * 8,
                          ("10.254.0.5", 7411), None, 3)

    async def go() -> list[IPv4Address]:
        out = await h.mob.on_authenticated(redirect)
        await asyncio.gather(*list(h.mob._tasks))
        return out

    assert asyncio.run(go()) == [A]
    assert h.kernel.redirects == {A: ARS["ar3"].overlay}  # tunnelled to ar3
    assert h.kernel.access == {}  # the MN left: no more local delivery
    # ar3's /32 arrives, even with a LOCAL_PREF that lost to a skewed clock: it is the one
    # the redirect named, so ours goes and the redirect is no longer needed.
    h.route_from("ar3", int(NOW) - 1)
    assert h.kernel.redirects == {} and h.bgp.announced == {}


def test_a_redirect_for_an_earlier_auth_than_our_attachment_is_refused() -> None:
    """The MN went ar1 -> ar2 -> ar1 faster than ar2 answered: ar2's redirect follows the
    older AUTH, so ar1 keeps the MN; one that follows a newer AUTH is acted on."""
    h = Harness("ar1")
    h.auth("10.64.0.10/32", previous="ar2.isp.test", timestamp_us=2_000)
    assert h.redirected == [("ar2", [A])] and h.origins == [2_000]  # ours names our AUTH

    def redirect(origin_us: int | None) -> list[IPv4Address]:
        r = AuthResult("ar2.isp.test", "ar1.isp.test", Suite.P256, (H32,), True, b"r" * 8,
                       ("10.254.0.5", 7411), None, 3, origin_us=origin_us)
        return asyncio.run(h.mob.on_authenticated(r))

    assert redirect(1_000) == []
    assert h.kernel.access == {A: 7} and h.kernel.redirects == {} and A in h.mob.attached
    refused = [r for r in h.mob.events.records if r["ev"] == "redirect_refused"]
    assert refused and "after" in refused[-1]["reason"]
    assert redirect(3_000) == [A]  # the MN moved on after it came back
    assert h.kernel.redirects == {A: ARS["ar2"].overlay} and h.kernel.access == {}


def test_a_retry_makes_the_attachment_as_new_as_it_before_its_checks() -> None:
    """A retry that joins the handling of the AUTH it repeats (agents/ar.py) still tells
    us the MN is here at its own, later, time: a redirect that follows an AUTH sent between
    the two is refused, and the next attachment and redirect carry the newest time."""
    h = Harness("ar1")
    h.auth("10.64.0.10/32", previous="ar2.isp.test", timestamp_us=2_000)
    retry = AuthResult("mn1.example", "ar1.isp.test", Suite.P256, (H32,), True, b"t" * 8,
                       ("10.64.0.10", 4000), "ar2.isp.test", 7, timestamp_us=2_600)
    h.mob.saw_auth(retry)
    assert h.mob.attached[A].origin_us == 2_600
    other = AuthResult("mn2.example", "ar1.isp.test", Suite.P256, (H32,), True, b"u" * 8,
                       ("10.64.0.10", 4000), None, 7, timestamp_us=9_000)
    h.mob.saw_auth(other)  # another MN's AUTH claiming the address changes nothing
    assert h.mob.attached[A].origin_us == 2_600
    r = AuthResult("ar2.isp.test", "ar1.isp.test", Suite.P256, (H32,), True, b"r" * 8,
                   ("10.254.0.5", 7411), None, 3, origin_us=2_300)
    assert asyncio.run(h.mob.on_authenticated(r)) == []
    assert h.kernel.access == {A: 7} and A in h.mob.attached
    h.auth("10.64.0.10/32", previous="ar2.isp.test", timestamp_us=2_100)  # an older try, late
    assert h.mob.attached[A].origin_us == 2_600 and h.origins[-1] == 2_600


def test_an_auth_checked_after_a_redirect_told_of_a_later_one_is_not_taken() -> None:
    """An overloaded AR finished an AUTH's checks seconds late, after the MN had moved on
    to ar2 and ar2's redirect (refused: not ours) had said so: taking it would stamp a
    LOCAL_PREF newer than ar2's and draw the MN's traffic away for good. An AUTH newer
    than the redirect is taken, and the redirect's word ages out."""
    v = IPv4Network("10.64.1.10/32")  # ar2's pool: a visitor here
    r = AuthResult("ar2.isp.test", "ar1.isp.test", Suite.P256, (v,), True, b"r" * 8,
                   ("10.254.0.5", 7411), None, 3, origin_us=2_000)
    h = Harness("ar1")
    h.dns.owned["mn1.example"] = {v.network_address}
    assert asyncio.run(h.mob.on_authenticated(r)) == []
    assert h.auth(str(v), timestamp_us=1_000) == []
    assert h.kernel.access == {} and h.bgp.announced == {} and h.redirected == []
    assert [e["reason"] for e in h.mob.events.records if e["ev"] == "not_taken"] == [MOVED_ON]
    assert h.auth(str(v), timestamp_us=3_000) == [v.network_address]
    assert h.kernel.access == {v.network_address: 7} and h.mob.moved_on == {}
    late = Harness("ar1")
    late.dns.owned["mn1.example"] = {v.network_address}
    assert asyncio.run(late.mob.on_authenticated(r)) == []
    late.now += MOVED_ON_FOR_S
    assert late.auth(str(v), timestamp_us=1_000) == [v.network_address]


def test_redirect_for_an_address_we_never_served_is_refused() -> None:
    h = Harness("ar3")
    redirect = AuthResult("ar2.isp.test", "ar3.isp.test", Suite.P256, (H32,), True, b"r" * 8,
                          ("10.254.0.5", 7411), None, 3)
    assert asyncio.run(h.mob.on_authenticated(redirect)) == []
    assert h.kernel.redirects == {}


def test_unremoved_redirect_expires() -> None:
    h = Harness("ar1")
    h.auth("10.64.0.10/32")
    redirect = AuthResult("ar2.isp.test", "ar1.isp.test", Suite.P256, (H32,), True, b"r" * 8,
                          ("10.254.0.5", 7411), None, 3)

    async def go() -> None:
        await h.mob.on_authenticated(redirect)
        h.now += REDIRECT_LIFETIME_S + 0.1
        h.mob.expire()
        await asyncio.gather(*list(h.mob._tasks))

    asyncio.run(go())
    assert h.kernel.redirects == {}
    removed = [r for r in h.mob.events.records if r["ev"] == "redirect_removed"]
    assert removed and removed[0]["reason"] == "lifetime expired"


@pytest.mark.parametrize("peer", ["mn2.example", "ar9.isp.test"])
def test_unknown_names_are_mns_and_pass_the_dns_checks(peer: str) -> None:
    h = Harness("ar2")
    assert h.auth("10.64.0.10/32", peer=peer) == []  # not theirs in DNS
    assert h.kernel.redirects == {} and h.bgp.announced == {}




def packet(seq: int, dst: str = "10.64.0.10") -> bytes:
    head = bytes([0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0]) + bytes([198, 51, 100, 2])
    return head + IPv4Address(dst).packed + seq.to_bytes(8, "big")


def test_idle_mn_is_buffered_paged_in_its_tal_then_delivered_in_order() -> None:
    h = Harness("ar1")
    h.mob.paging_timeout_s = 30.0
    h.auth("10.64.0.10/32")
    assert h.auth("10.64.0.10/32", idle=True) == [A]
    assert A in h.kernel.parked and A in h.mob.idle
    # The MN answers the page at ar3: its redirect arrives here, the buffer follows it.
    redirect = AuthResult("ar3.isp.test", "ar1.isp.test", Suite.P256, (H32,), True, b"r" * 8,
                          ("10.254.0.5", 7411), None, 3)

    async def go() -> None:
        for seq in range(5):  # the bound is 3: two are dropped, the newest
            h.mob.on_buffered(packet(seq))
        assert h.paged == [[A]]  # our own access link, once
        assert h.mob.idle[A].buffer.dropped == 2
        await asyncio.sleep(0.01)
        await h.mob.on_authenticated(redirect)
        for task in list(h.mob._tasks):
            task.cancel()

    asyncio.run(go())
    assert sorted(h.remote_pages) == ["ar2", "ar3"]  # the rest of the TAL was paged
    assert [int.from_bytes(p[20:], "big") for p in h.kernel.reinjected] == [0, 1, 2]
    assert h.kernel.vias == ["overlay"] and A not in h.kernel.parked  # tunnel, then unpark
    assert A not in h.mob.idle and h.kernel.redirects == {A: ARS["ar3"].overlay}
    flushed = next(r for r in h.mob.events.records if r["ev"] == "flushed")
    assert flushed["buffered"] == 3 and flushed["dropped"] == 2


def test_unanswered_page_times_out_and_frees_the_buffer() -> None:
    h = Harness("ar1")
    h.auth("10.64.0.10/32")
    h.auth("10.64.0.10/32", idle=True)

    async def go() -> None:
        h.mob.on_buffered(packet(1))
        h.mob.on_buffered(packet(2))
        await asyncio.gather(*list(h.mob._tasks))  # includes the 50 ms page timeout

    asyncio.run(go())
    state = h.mob.idle[A]
    assert len(state.buffer.packets) == 0 and state.buffer.dropped == 2
    assert state.paging_since is None  # the next packet pages again
    assert any(r["ev"] == "page_timeout" for r in h.mob.events.records)


def test_paged_mn_waking_where_it_went_idle_gets_its_packets_locally() -> None:
    h = Harness("ar1")
    h.mob.paging_timeout_s = 30.0
    h.auth("10.64.0.10/32")
    h.auth("10.64.0.10/32", idle=True)

    async def go() -> None:
        h.mob.on_buffered(packet(7))
        result = AuthResult("mn1.example", "ar1.isp.test", Suite.P256, (H32,), True, b"s" * 8,
                            ("10.64.0.10", 4000), None, 7)
        await h.mob.on_authenticated(result)  # answered the page in the same cell
        for task in list(h.mob._tasks):
            task.cancel()

    asyncio.run(go())
    assert h.kernel.access == {A: 7} and [p[-1] for p in h.kernel.reinjected] == [7]
    assert h.kernel.vias == ["access"]
    assert h.redirected == []  # nobody to redirect from


def test_page_from_another_ar_is_broadcast_on_our_link() -> None:
    h = Harness("ar2")
    page = AuthResult("ar1.isp.test", "ar2.isp.test", Suite.P256, (H32,), True, b"p" * 8,
                      ("10.254.0.5", 7411), None, 3, False, True)
    assert asyncio.run(h.mob.on_authenticated(page)) == [A]
    assert h.paged == [[A]] and h.kernel.redirects == {}


# --- address management (draft 2.3): lease ends reclaim the /32 --------------------------


def run(h: Harness, step: Callable[[], Awaitable[object] | None]) -> None:
    """One step inside a loop, then everything it spawned (detaches, withdrawals)."""

    async def go() -> None:
        out = step()
        if out is not None:
            await out
        await asyncio.sleep(0)
        await asyncio.gather(*list(h.mob._tasks))

    asyncio.run(go())


def test_reclaim_out_announces_the_visitor_then_withdraws_when_it_has_gone() -> None:
    # The MN leased A from ar1, moved to ar3 (another cluster), and its lease ended at ar1.
    ar3 = Harness("ar3")
    ar3.auth("10.64.0.10/32")
    assert ar3.bgp.announced == {H32: int(NOW)} and ar3.kernel.access == {A: 7}
    ar1 = Harness("ar1")
    ar1.route_from("ar3", ar3.bgp.announced[H32])
    run(ar1, lambda: ar1.mob.reclaim(A, "remote renewal limit"))
    # Strictly newer than the visitor's, in the same second, and beyond our cluster.
    lp = int(NOW) + 1
    assert ar1.bgp.announced == {H32: lp} and ar1.bgp.escaped == {H32}
    assert A in ar1.mob.reclaiming
    # At ar3 the reclaim is a newer route like any other: it withdraws and detaches.
    ar3.route_from("ar1", lp)
    assert ar3.bgp.announced == {} and ar3.kernel.access == {}
    ar1.withdraw_from("ar3")
    assert ar1.bgp.announced == {} and ar1.mob.reclaiming == {}  # the pool route covers A
    assert ar1.bgp.log == [("announce", H32, lp), ("withdraw", H32, None)]
    withdrawn = [r for r in ar1.mob.events.records if r["ev"] == "withdrawn"]
    assert [r["reason"] for r in withdrawn] == ["reclaimed, pool covers it"]


def test_reclaim_is_not_undone_by_the_ar_that_redirected_us_earlier() -> None:
    # ar3 redirected A from ar1 when the MN arrived; ar1's reclaim must still beat ar3's /32.
    h = Harness("ar1")
    h.auth("10.64.0.10/32")
    redirect = AuthResult("ar3.isp.test", "ar1.isp.test", Suite.P256, (H32,), True, b"r" * 8,
                          ("10.254.0.5", 7411), None, 3)
    run(h, lambda: h.mob.on_authenticated(redirect))
    h.route_from("ar3", int(NOW))
    run(h, lambda: h.mob.reclaim(A, "expired"))
    assert h.bgp.announced == {H32: int(NOW) + 1}
    h.route_from("ar3", int(NOW))  # ar3's route reflected again before it withdraws
    assert h.bgp.announced == {H32: int(NOW) + 1} and A in h.mob.reclaiming


def test_reclaim_with_no_other_path_leaves_bgp_alone_but_detaches() -> None:
    h = Harness("ar1")
    h.auth("10.64.0.10/32")  # at home: attached, nothing announced
    assert h.kernel.access == {A: 7} and h.bgp.log == []
    run(h, lambda: h.mob.reclaim(A, "expired"))
    assert h.bgp.log == [] and h.mob.reclaiming == {} and h.mob.announced == {}
    assert h.kernel.access == {} and A not in h.mob.attached
    ended = next(r for r in h.mob.events.records if r["ev"] == "lease_ended")
    assert ended["reason"] == "expired" and ended["others"] == 0


def test_reclaim_that_the_visitor_never_answers_times_out() -> None:
    h = Harness("ar1")
    h.route_from("ar2", int(NOW) - 5)
    run(h, lambda: h.mob.reclaim(A, "release"))
    assert h.bgp.announced == {H32: int(NOW)} and h.bgp.escaped == set()  # same cluster
    h.now += h.mob.reclaim_timeout_s - 0.1
    run(h, h.mob.expire)
    assert A in h.mob.reclaiming
    h.now += 0.1
    run(h, h.mob.expire)
    assert h.bgp.announced == {} and h.mob.reclaiming == {}
    assert h.bgp.log[-1] == ("withdraw", H32, None)


def test_a_new_lease_of_the_address_ends_the_reclaim_and_attaches() -> None:
    h = Harness("ar1")
    h.route_from("ar3", int(NOW) - 5)
    run(h, lambda: h.mob.reclaim(A, "expired"))
    run(h, lambda: h.mob.assigned(A, "mn2.example", 7))
    assert h.kernel.access == {A: 7} and h.mob.attached[A].mn == "mn2.example"
    assert h.mob.reclaiming == {}
    h.withdraw_from("ar3")  # home again: the pool route covers it, the MN stays attached
    assert h.bgp.announced == {} and h.kernel.access == {A: 7}


def test_lease_gone_withdraws_and_detaches_a_visitor_but_not_our_own() -> None:
    h = Harness("ar3")
    h.auth("10.64.0.10/32")
    h.mob.visitor_lease(A, NOW + 60)
    run(h, lambda: h.mob.lease_gone(A, "relayed nak"))
    assert h.bgp.announced == {} and h.kernel.access == {} and h.mob.visitor_leases == {}
    assert h.bgp.log[-1] == ("withdraw", H32, None)
    detached = next(r for r in h.mob.events.records if r["ev"] == "detached")
    assert detached["reason"] == "relayed nak"

    home = Harness("ar1")
    home.auth("10.64.0.10/32")
    run(home, lambda: home.mob.lease_gone(A, "relayed release"))
    # Our own pool's address: the DHCP server's end of lease reclaims it, not this.
    assert home.kernel.access == {A: 7} and A in home.mob.attached


def test_visitor_lease_expiry_ends_the_visit() -> None:
    h = Harness("ar3")
    h.auth("10.64.0.10/32")
    h.mob.visitor_lease(A, NOW + 20)
    h.mob.visitor_lease(IPv4Address("10.65.2.5"), NOW + 20)  # our own pool: not a visitor
    h.mob.visitor_lease(IPv4Address("10.64.1.5"), None)  # an ACK without a lease time
    assert h.mob.visitor_leases == {A: NOW + 20}
    h.now += 19
    run(h, h.mob.expire)
    assert h.kernel.access == {A: 7} and h.bgp.announced == {H32: int(NOW)}
    h.mob.visitor_lease(A, h.now + 20)  # a relayed renewal ACK pushes the end out
    h.now += 19
    run(h, h.mob.expire)
    assert h.kernel.access == {A: 7}
    h.now += 1
    run(h, h.mob.expire)
    assert h.kernel.access == {} and h.bgp.announced == {} and h.mob.visitor_leases == {}
    withdrawn = next(r for r in h.mob.events.records if r["ev"] == "withdrawn")
    assert withdrawn["reason"] == "lease expired"


def test_a_lease_recorded_on_an_earlier_visit_does_not_end_the_next_one() -> None:
    """The MN's renewal went through us, it moved on and came back: the first visit's lease
    end must not withdraw the /32 it brought again (handoff6 has the same test)."""
    h = Harness("ar3", mode="draft")
    h.auth("10.64.0.10/32")
    h.mob.visitor_lease(A, NOW + 20)
    h.route_from("ar2", int(NOW) + 1)  # the MN moved on
    assert h.kernel.access == {}
    h.now += 5
    h.auth("10.64.0.10/32")  # and came back
    assert h.kernel.access == {A: 7} and h.mob.visitor_leases == {}
    h.now += 16
    run(h, h.mob.expire)
    assert h.kernel.access == {A: 7} and A in h.mob.attached


def test_an_ipv6_only_redirect_is_left_to_the_prefix_handoff() -> None:
    """Issue 18: the IPv6 redirect is the same AUTH listing only /64s; the IPv4 side neither
    acts on it nor logs it (an IPv6 address in its event once failed the whole AUTH)."""
    h = Harness("ar2")
    h.auth("10.64.0.10/32")
    redirect = AuthResult("ar3.isp.test", "ar2.isp.test", Suite.P256,
                          (IPv6Network("2001:db8:4000:1::/64"),), True, b"r" * 8,
                          ("10.254.0.5", 7411), None, 3)
    before = len(h.mob.events.records)
    assert asyncio.run(h.mob.on_authenticated(redirect)) == []
    assert list(h.mob.events.records)[before:] == []
    assert h.kernel.access  # still attached here
