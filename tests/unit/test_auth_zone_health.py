"""Issue 15's amplifier: a key lookup that times out in a zone that has answered penalises
the name, not the zone (one home domain holds every MN of a population), while a zone that
never answered is still refused at once (issue 19's defence, tests/unit/test_auth_guards.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from agents.auth import KeyStore, PublishedKey, StaticDirectory, Suite
from agents.auth.guards import ZoneHealth
from agents.auth.messages import MsgType
from tests.unit.test_auth_guards import Fixture, Resolver, kind

SRC = ("192.0.2.50", 4000)


class SlowResolver(Resolver):
    """The lab's resolver under load: names in ``slow`` are never answered."""

    def __init__(self, directory: StaticDirectory, slow: set[str]) -> None:
        super().__init__(directory)
        self.slow = slow

    async def resolve(self, name: str) -> PublishedKey:
        if name in self.slow:
            self.calls.append(name)
            await asyncio.Event().wait()
        return await super().resolve(name)


class ZoneFixture(Fixture):
    def __init__(self, **limits: Any) -> None:
        super().__init__(**limits)
        self.slow: set[str] = set()
        self.resolver = SlowResolver(self.directory, self.slow)
        self.auth._resolver = self.resolver

    def member(self, label: str) -> KeyStore:
        """A published MN of the home zone (good.example.net)."""
        ks = KeyStore.generate(f"{label}.good.example.net", Suite.X25519)
        self.directory.publish(ks.published_key())
        return ks

    async def auth_of(self, ks: KeyStore) -> int | None:
        return kind(await self.auth.handle(self.msg(ks.name, ks=ks), SRC))


def test_a_timeout_in_a_zone_that_answered_strikes_the_name_only() -> None:
    async def main() -> None:
        fx = ZoneFixture(negative_base_s=10.0)
        assert kind(await fx.auth.handle(fx.msg(), SRC)) == MsgType.AUTH_REPLY  # zone answered
        slow = fx.member("slow")
        fx.slow.add(slow.name)
        assert await fx.auth_of(slow) == MsgType.FAILURE  # timed out
        assert fx.auth.stats["timeout_name_only"] == 1
        # Every other MN of the zone is still looked up and let in ...
        for i in range(3):
            assert await fx.auth_of(fx.member(f"mn{i + 2}")) == MsgType.AUTH_REPLY
        # ... while the slow name serves its backoff without a lookup.
        calls = len(fx.resolver.calls)
        assert await fx.auth_of(slow) == MsgType.FAILURE
        assert len(fx.resolver.calls) == calls
        assert fx.auth.stats["negative_cached"] == 1
        fx.auth.close()

    asyncio.run(main())


def test_a_zone_that_answered_is_struck_after_several_names_time_out() -> None:
    async def main() -> None:
        fx = ZoneFixture(negative_base_s=10.0, zone_timeout_names=3)
        assert kind(await fx.auth.handle(fx.msg(), SRC)) == MsgType.AUTH_REPLY
        slow = [fx.member(f"slow{i}") for i in range(3)]
        fx.slow.update(ks.name for ks in slow)
        assert await fx.auth_of(slow[0]) == MsgType.FAILURE
        assert await fx.auth_of(slow[1]) == MsgType.FAILURE
        # A success in between: the zone answers, the count starts again.
        assert await fx.auth_of(fx.member("ok1")) == MsgType.AUTH_REPLY
        assert await fx.auth_of(slow[2]) == MsgType.FAILURE
        assert await fx.auth_of(fx.member("ok2")) == MsgType.AUTH_REPLY
        fx.clock.t += 11.0  # the names' backoffs end; they time out again, nothing between
        fx.ts = int(fx.clock.t * 1e6)
        for ks in slow:
            assert await fx.auth_of(ks) == MsgType.FAILURE
        calls = len(fx.resolver.calls)
        # Three distinct names with no success between: now the zone looks dead.
        assert await fx.auth_of(fx.member("ok3")) == MsgType.FAILURE
        assert len(fx.resolver.calls) == calls
        fx.auth.close()

    asyncio.run(main())


def test_a_return_routable_mn_whose_lookup_timed_out_keeps_its_source() -> None:
    async def main() -> None:
        fx = ZoneFixture(cookie="always", negative_base_s=10.0)

        ports = iter(range(5000, 5100))

        async def with_cookie(ks: KeyStore) -> int | None:
            # A cookie binds the port too: each AUTH from a socket of its own, as the MNs do.
            src = (SRC[0], next(ports))
            first = await fx.auth.handle(fx.msg(ks.name, ks=ks), src)
            assert first is not None and kind(first) == MsgType.COOKIE
            return kind(await fx.auth.handle(fx.msg(ks.name, first[-16:], ks), src))

        assert await with_cookie(fx.mn_ks) == MsgType.AUTH_REPLY
        slow = fx.member("slow")
        fx.slow.add(slow.name)
        assert await with_cookie(slow) == MsgType.FAILURE
        assert fx.auth._negative.blocked(f"source {SRC[0]}", fx.clock()) == 0.0
        assert await with_cookie(fx.member("next")) == MsgType.AUTH_REPLY
        fx.auth.close()

    asyncio.run(main())


def test_a_zone_that_never_answered_is_struck_at_its_first_timeout() -> None:
    async def main() -> None:
        fx = ZoneFixture(negative_base_s=10.0)
        assert kind(await fx.auth.handle(fx.msg("a.dead.test"), SRC)) == MsgType.FAILURE
        assert kind(await fx.auth.handle(fx.msg("b.dead.test"), SRC)) == MsgType.FAILURE
        assert fx.resolver.calls == ["a.dead.test"]
        assert fx.auth.stats["timeout_name_only"] == 0
        fx.auth.close()

    asyncio.run(main())


def test_zone_health_counts_distinct_names_and_stays_bounded() -> None:
    health = ZoneHealth(names=2, capacity=3)
    assert health.timed_out("never.test", "a.never.test")  # never answered: counts at once
    assert len(health) == 0  # a zone that only timed out takes no room
    health.answered("example")
    assert not health.timed_out("example", "a.example")
    assert not health.timed_out("example", "a.example")  # the same name again: still one
    assert health.timed_out("example", "b.example")
    assert health.timed_out("example", "c.example")  # stays dead until it answers
    health.answered("example")
    assert not health.timed_out("example", "a.example")
    for zone in ("z1", "z2", "z3"):
        health.answered(zone)
    assert len(health) == 3
    assert health.timed_out("example", "a.example")  # evicted: judged as never answered
