"""Issue 19 defects 4, 6 and 7: a cookie buys one lookup, lookup slots are shared fairly,
dead zones are penalised, malformed datagrams are answered only within the rate, and the
arrival-interface table keeps checked and pending peers.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from agents.auth import (
    Authenticator,
    KeyStore,
    Limits,
    PublishedKey,
    StaticDirectory,
    Suite,
)
from agents.auth.guards import (
    LookupSlots,
    NegativeCache,
    SpentCookies,
    claimed_zone,
    source_prefix,
)
from agents.auth.messages import MAX_DATAGRAM, MsgType, to_prefix
from agents.auth.protocol import build_auth

AR = "ar1.example.net"
MN = "mn1.good.example.net"
NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.t = NOW

    def __call__(self) -> float:
        return self.t


class Resolver:
    """Answers from a directory; names under ``dead`` zones never answer (a real timeout)."""

    def __init__(self, directory: StaticDirectory) -> None:
        self.directory = directory
        self.calls: list[str] = []

    async def resolve(self, name: str) -> PublishedKey:
        self.calls.append(name)
        if ".dead" in name:
            await asyncio.Event().wait()
        return await self.directory.resolve(name)


class Fixture:
    def __init__(self, **limits: Any) -> None:
        self.clock = Clock()
        self.directory = StaticDirectory()
        self.resolver = Resolver(self.directory)
        self.ar_ks = KeyStore.generate(AR, Suite.X25519)
        self.mn_ks = KeyStore.generate(MN, Suite.X25519)
        self.directory.publish(self.mn_ks.published_key())
        base: dict[str, Any] = {"per_source_rate": None, "resolve_timeout_s": 0.2}
        self.auth = Authenticator(AR, self.ar_ks, self.resolver, lambda r: r.addresses,
                                  limits=Limits(**{**base, **limits}), clock=self.clock)
        self.ts = int(NOW * 1e6)

    def msg(self, name: str = MN, cookie: bytes | None = None,
            ks: KeyStore | None = None) -> bytes:
        ks = ks or (self.mn_ks if name == MN else KeyStore.generate(name, Suite.X25519))
        self.ts += 1
        key = self.auth.published_key()
        data, _, _ = build_auth(ks, key, timestamp_us=self.ts, peer_nonce=os.urandom(16),
                                auth_nonce=key.nonce or bytes(16),
                                addresses=(to_prefix("10.1.0.7"),), mobility=True,
                                cookie=cookie)
        return data


def kind(reply: bytes | None) -> int | None:
    return None if reply is None else reply[1]


# --- the guards alone --------------------------------------------------------------------------

def test_spent_cookie_buys_one_lookup_and_marks_expire() -> None:
    spent = SpentCookies(rotate_s=10.0, capacity=3)
    assert spent.spend(b"a" * 16, 0.0)
    assert not spent.spend(b"a" * 16, 1.0)
    assert spent.spend(b"a" * 16, 25.0)  # older than two periods: the jar refuses it anyway
    for i in range(10):
        spent.spend(bytes([i]) * 16, 26.0)
    assert len(spent) <= 3


def test_slots_preempt_the_largest_share_only() -> None:
    slots = LookupSlots(4)
    cancelled: list[int] = []
    for i in range(4):
        assert slots.acquire(i, "10.0.0.0/24", f"z{i}", lambda i=i: cancelled.append(i))
    # Another prefix and zone holding nothing takes the flood's oldest slot.
    assert slots.acquire(10, "192.0.2.0/24", "good", lambda: cancelled.append(10))
    assert cancelled == [0] and len(slots) == 4
    assert slots.held(prefix="192.0.2.0/24") == 1
    # Shares now 3 and 1: one more from the quiet prefix still evens them out ...
    assert slots.acquire(11, "192.0.2.0/24", "good", lambda: None)
    assert cancelled == [0, 1]
    # ... but at 2 and 2 neither side may take from the other.
    assert not slots.acquire(12, "192.0.2.0/24", "good", lambda: None)
    assert not slots.acquire(13, "10.0.0.0/24", "z9", lambda: None)
    slots.release(10)
    assert slots.acquire(13, "10.0.0.0/24", "z9", lambda: None)


def test_slots_are_shared_per_zone_when_prefixes_are_shared() -> None:
    slots = LookupSlots(3)
    for i in range(3):
        assert slots.acquire(i, "10.0.0.0/24", "dead.test", lambda: None)
    # A legitimate MN behind the same /24 but in another zone still gets a slot.
    assert slots.acquire(9, "10.0.0.0/24", "good.test", lambda: None)


def test_negative_cache_backs_off_and_clears() -> None:
    neg = NegativeCache(base_s=2.0, max_s=5.0)
    assert neg.blocked("z", 0.0) == 0.0
    assert neg.strike("z", 0.0) == 2.0
    assert neg.blocked("z", 1.0) == pytest.approx(1.0)
    assert neg.blocked("z", 2.5) == 0.0
    assert neg.strike("z", 3.0) == 4.0
    assert neg.strike("z", 8.0) == 5.0  # capped
    neg.clear("z")
    assert neg.blocked("z", 8.5) == 0.0


def test_share_groups() -> None:
    assert source_prefix("192.0.2.77") == "192.0.2.0/24"
    assert source_prefix("2001:db8:1:2ff::1") == source_prefix("2001:db8:1:200::9")
    assert claimed_zone("mn1.good.example.net") == "good.example.net"
    assert claimed_zone("localhost") == "localhost"


# --- in the authenticator ----------------------------------------------------------------------

def test_reused_cookie_gets_a_fresh_cookie_not_a_second_lookup() -> None:
    async def main() -> None:
        fx = Fixture(cookie="always")
        src = ("198.51.100.7", 5000)
        first = await fx.auth.handle(fx.msg("a.dead1.test"), src)
        assert kind(first) == MsgType.COOKIE and first is not None
        cookie = first[-16:]
        tasks = [asyncio.ensure_future(fx.auth.handle(fx.msg("a.dead1.test", cookie), src))]
        await asyncio.sleep(0)
        for i in range(5):  # the same cookie again, naming other dead zones
            reply = await fx.auth.handle(fx.msg(f"b.dead{i + 2}.test", cookie), src)
            assert kind(reply) == MsgType.COOKIE
        for _ in range(3):
            await asyncio.sleep(0)
        assert fx.resolver.calls == ["a.dead1.test"]
        assert kind(await tasks[0]) == MsgType.FAILURE  # timed out
        fx.auth.close()

    asyncio.run(main())


def test_flood_of_dead_lookups_cannot_starve_a_legitimate_peer() -> None:
    async def main() -> None:
        fx = Fixture(max_pending=8, resolve_timeout_s=30.0, cookie="never")
        flood = [asyncio.ensure_future(fx.auth.handle(fx.msg(f"x{i}.dead{i}.test"),
                                                      (f"203.0.113.{i}", 4000)))
                 for i in range(40)]
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(fx.auth._slots) == 8
        reply = await asyncio.wait_for(fx.auth.handle(fx.msg(), ("192.0.2.50", 4000)), 5.0)
        assert kind(reply) == MsgType.AUTH_REPLY
        assert fx.auth.stats["lookup_preempted"] >= 1
        assert kind(await flood[0]) is None  # preempted: RateLimited, never answered
        fx.auth.close()
        await asyncio.gather(*flood, return_exceptions=True)

    asyncio.run(main())


def test_dead_zone_is_refused_without_a_lookup_during_its_backoff() -> None:
    async def main() -> None:
        fx = Fixture(negative_base_s=10.0)
        src = ("198.51.100.7", 5000)
        assert kind(await fx.auth.handle(fx.msg("a.dead.test"), src)) == MsgType.FAILURE
        assert fx.resolver.calls == ["a.dead.test"]
        for name in ("a.dead.test", "b.dead.test"):
            assert kind(await fx.auth.handle(fx.msg(name), src)) == MsgType.FAILURE
        assert fx.resolver.calls == ["a.dead.test"]
        assert fx.auth.stats["negative_cached"] == 2
        fx.clock.t += 11.0
        fx.ts = int(fx.clock.t * 1e6)
        assert kind(await fx.auth.handle(fx.msg("c.dead.test"), src)) == MsgType.FAILURE
        assert len(fx.resolver.calls) == 2
        # A name that does not exist strikes the name only, never its (answering) zone.
        assert kind(await fx.auth.handle(fx.msg("nobody.good.example.net"), src)) == 5
        assert kind(await fx.auth.handle(fx.msg(), src)) == MsgType.AUTH_REPLY
        fx.auth.close()

    asyncio.run(main())


def test_negative_cache_never_blocks_a_cached_key() -> None:
    async def main() -> None:
        fx = Fixture()
        src = ("192.0.2.50", 4000)
        assert kind(await fx.auth.handle(fx.msg(), src)) == MsgType.AUTH_REPLY
        fx.auth._negative.strike(claimed_zone(MN), fx.clock())
        assert kind(await fx.auth.handle(fx.msg(), src)) == MsgType.AUTH_REPLY
        fx.auth.close()

    asyncio.run(main())


@pytest.mark.parametrize("junk", [bytes([1, 1]) + bytes(MAX_DATAGRAM), b"\x02" + bytes(80)])
def test_malformed_datagrams_are_answered_only_within_the_rate(junk: bytes) -> None:
    async def main() -> None:
        fx = Fixture(per_source_rate=0.001, per_source_burst=2)
        replies = [await fx.auth.handle(junk, ("198.51.100.9", 53)) for _ in range(6)]
        assert [kind(r) for r in replies] == [MsgType.FAILURE] * 2 + [None] * 4
        assert fx.auth.stats["RateLimited"] == 4

    asyncio.run(main())


def test_arrival_table_keeps_checked_and_pending_peers_only() -> None:
    async def main() -> None:
        fx = Fixture(sessions=4)
        auth = fx.auth
        arrival = (7, bytes([10, 0, 0, 1]))
        # Junk and a message for another authenticator never enter the table.
        for i, data in enumerate([os.urandom(60), b"\x01\x01" + os.urandom(70)]):
            auth._arrival = arrival
            await auth.handle(data, ("203.0.113.1", i))
        assert len(auth._ifindex) == 0
        pending = ("192.0.2.50", 4000)
        auth._arrival = arrival
        assert kind(await auth.handle(fx.msg(), pending)) == MsgType.AUTH_REPLY
        assert auth.interface_of(pending) == 7
        auth._pinned[pending] += 1  # as while its lookup or callback is outstanding
        for port in range(10):
            auth._arrival = (8, arrival[1])
            auth._note_arrival(("192.0.2.60", port))
        assert len(auth._ifindex) == 4
        assert auth.interface_of(pending) == 7  # pinned: never evicted
        assert auth.interface_of(("192.0.2.60", 9)) == 8  # newest kept
        assert auth.interface_of(("192.0.2.60", 0)) == 0  # oldest evicted one by one
        auth._arrival = None

    asyncio.run(main())


def test_a_name_published_late_succeeds_after_its_backoff() -> None:
    async def main() -> None:
        fx = Fixture(negative_base_s=0.5)
        src = ("192.0.2.50", 4000)
        late = KeyStore.generate("late.good.example.net", Suite.X25519)

        def auth_late() -> bytes:
            fx.ts += 1
            key = fx.auth.published_key()
            data, _, _ = build_auth(late, key, timestamp_us=fx.ts, peer_nonce=os.urandom(16),
                                    auth_nonce=key.nonce or bytes(16), addresses=(),
                                    mobility=False)
            return data

        assert kind(await fx.auth.handle(auth_late(), src)) == MsgType.FAILURE
        fx.directory.publish(late.published_key())
        assert kind(await fx.auth.handle(auth_late(), src)) == MsgType.FAILURE  # backoff
        assert fx.resolver.calls == ["late.good.example.net"]
        fx.clock.t += 1.0
        fx.ts = int(fx.clock.t * 1e6)
        assert kind(await fx.auth.handle(auth_late(), src)) == MsgType.AUTH_REPLY
        fx.auth.close()

    asyncio.run(main())


def test_failures_share_one_budget_over_udp() -> None:
    """A spoofed flood of bad AUTHs gets at most the service-wide FAILURE budget back."""
    async def main() -> None:
        fx = Fixture(failure_per_s=1.0)
        addr = await fx.auth.start("127.0.0.1", 0)
        loop = asyncio.get_running_loop()
        got: asyncio.Queue[bytes] = asyncio.Queue()

        class Sink(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, _addr: tuple[str, int]) -> None:
                got.put_nowait(data)

        transports = []
        try:
            for _ in range(10):  # ten sources, each well inside its own rate
                transport, _ = await loop.create_datagram_endpoint(Sink, remote_addr=addr)
                transports.append(transport)
                transport.sendto(b"\x01\x01" + os.urandom(70))
            deadline = loop.time() + 5.0
            def rejected() -> int:
                return sum(fx.auth.stats.values()) - fx.auth.stats["failure_suppressed"]

            while rejected() < 10 and loop.time() < deadline:
                await asyncio.sleep(0.01)
            assert rejected() == 10
            assert fx.auth.stats["failure_suppressed"] >= 7
            answered = 10 - fx.auth.stats["failure_suppressed"]
            while got.qsize() < answered and loop.time() < deadline:
                await asyncio.sleep(0.01)
            assert got.qsize() == answered
        finally:
            for transport in transports:
                transport.close()
            fx.auth.close()

    asyncio.run(main())


def test_a_return_routable_source_whose_lookups_time_out_is_penalised() -> None:
    async def main() -> None:
        fx = Fixture(cookie="always", negative_base_s=10.0)
        attacker, spoofed = ("198.51.100.7", 5000), ("198.51.100.8", 5000)
        first = await fx.auth.handle(fx.msg("a.dead1.test"), attacker)
        assert first is not None and kind(first) == MsgType.COOKIE
        reply = await fx.auth.handle(fx.msg("a.dead1.test", first[-16:]), attacker)
        assert kind(reply) == MsgType.FAILURE  # timed out
        # A fresh dead zone from the same source: refused at once, before any cookie round.
        assert kind(await fx.auth.handle(fx.msg("b.dead2.test"), attacker)) == MsgType.FAILURE
        assert fx.resolver.calls == ["a.dead1.test"]
        # Without a cookie nobody is proven to own a source: no source penalty then.
        fx.auth.limits = Limits(**{**fx.auth.limits.__dict__, "cookie": "never"})
        assert kind(await fx.auth.handle(fx.msg("c.dead3.test"), spoofed)) == MsgType.FAILURE
        assert fx.auth._negative.blocked("source 198.51.100.8", fx.clock()) == 0.0
        assert fx.auth._negative.blocked("source 198.51.100.7", fx.clock()) > 0.0
        fx.auth.close()

    asyncio.run(main())
