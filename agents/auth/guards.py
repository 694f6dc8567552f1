"""Cheap admission checks run before any DNS lookup or ECDH: rate limits, load, cookies
(each buys one lookup), fairly shared lookup slots, a negative cache for dead zones (and
which zones have answered, so that a slow resolver does not make a live zone look dead),
and the timestamp replay guard.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
from collections import OrderedDict
from collections.abc import Callable

from .errors import Replay, StaleMessage
from .kdf import tag

COOKIE_LABEL = b"FLATARCH-v1 cookie"


class ReplayGuard:
    """Per-sender high-water mark of accepted timestamps, plus a freshness window.

    A message is accepted only if its timestamp lies within ``window_s`` of local time and is
    strictly greater than the last timestamp accepted from the same sender. The table is
    bounded; an evicted sender's mark folds into ``floor``, which every sender not in the table
    must exceed, so eviction can never re-open a replay.
    """

    __slots__ = ("window_us", "capacity", "_last", "floor")

    def __init__(self, window_s: float = 30.0, capacity: int = 65536) -> None:
        self.window_us = int(window_s * 1_000_000)
        self.capacity = capacity
        self._last: OrderedDict[str | bytes, int] = OrderedDict()
        self.floor = 0

    def check(self, who: str | bytes, ts_us: int, now: float) -> None:
        now_us = int(now * 1_000_000)
        if ts_us < now_us - self.window_us:
            raise StaleMessage(f"timestamp {(now_us - ts_us) / 1e6:.3f} s old")
        if ts_us > now_us + self.window_us:
            raise StaleMessage(f"timestamp {(ts_us - now_us) / 1e6:.3f} s in the future")
        last = self._last.get(who, self.floor)
        if ts_us <= last:
            raise Replay(f"timestamp not after the last accepted one from {who!r}")

    def commit(self, who: str | bytes, ts_us: int, now: float) -> None:
        """Check again (another message may have won meanwhile) and record ``ts_us``."""
        self.check(who, ts_us, now)
        self.record(who, ts_us)

    def record(self, who: str | bytes, ts_us: int) -> None:
        """Record ``ts_us`` as accepted; only right after a ``check`` with no await between."""
        last = self._last
        last[who] = ts_us
        last.move_to_end(who)
        if len(last) > self.capacity:
            _, evicted = last.popitem(last=False)
            if evicted > self.floor:
                self.floor = evicted

    def forget(self, who: str | bytes) -> None:
        evicted = self._last.pop(who, None)
        if evicted is not None and evicted > self.floor:
            self.floor = evicted

    def __len__(self) -> int:
        return len(self._last)


class RateLimiter:
    """Token bucket per source address; the table is bounded by dropping its oldest half."""

    __slots__ = ("rate", "burst", "capacity", "_buckets")

    def __init__(self, rate: float, burst: float, capacity: int = 65536) -> None:
        self.rate = rate
        self.burst = burst
        self.capacity = capacity
        self._buckets: dict[str, list[float]] = {}

    def allow(self, source: str, now: float) -> bool:
        bucket = self._buckets.get(source)
        if bucket is None:
            if len(self._buckets) >= self.capacity:
                # A forgotten source restarts with a full bucket: at worst one burst extra.
                for key in list(self._buckets)[: self.capacity // 2]:
                    del self._buckets[key]
            self._buckets[source] = [self.burst - 1.0, now]
            return True
        tokens = bucket[0] + (now - bucket[1]) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        return True


class LoadMonitor:
    """Counts requests that need a DNS lookup or ECDH; above the threshold we are under load."""

    __slots__ = ("threshold", "_second", "_count")

    def __init__(self, threshold_per_s: float) -> None:
        self.threshold = threshold_per_s
        self._second = 0
        self._count = 0

    def note(self, now: float) -> None:
        second = int(now)
        if second != self._second:
            self._second = second
            self._count = 0
        self._count += 1

    def under_load(self, now: float, pending: int, max_pending: int) -> bool:
        if pending * 2 >= max_pending:
            return True
        return int(now) == self._second and self._count > self.threshold


class CookieJar:
    """Stateless return-routability cookies bound to the source address and port.

    cookie = HMAC-SHA-256(secret, label || address || port)[:16]; the secret rotates every
    ``rotate_s`` seconds and the previous one stays valid, so a cookie lives 1-2 periods.
    Only the authenticator computes cookies; the peer treats them as opaque.
    """

    __slots__ = ("rotate_s", "_epoch", "_current", "_previous")

    def __init__(self, rotate_s: float = 120.0) -> None:
        self.rotate_s = rotate_s
        self._epoch = -1
        self._current = os.urandom(32)
        self._previous = os.urandom(32)

    def _rotate(self, now: float) -> None:
        epoch = int(now // self.rotate_s)
        if epoch != self._epoch:
            self._previous = self._current if epoch == self._epoch + 1 else os.urandom(32)
            self._current = os.urandom(32)
            self._epoch = epoch

    @staticmethod
    def _material(host: str, port: int) -> bytes:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            packed = socket.inet_pton(family, host.split("%", 1)[0])
        except OSError:
            packed = hashlib.sha256(host.encode("utf-8", "replace")).digest()
        return COOKIE_LABEL + packed + port.to_bytes(2, "big")

    def make(self, host: str, port: int, now: float) -> bytes:
        self._rotate(now)
        return tag(self._current, self._material(host, port))

    def check(self, cookie: bytes, host: str, port: int, now: float) -> bool:
        self._rotate(now)
        material = self._material(host, port)
        ok = hmac.compare_digest(cookie, tag(self._current, material))
        return hmac.compare_digest(cookie, tag(self._previous, material)) or ok


class SpentCookies:
    """Cookies that already bought an expensive lookup: each one buys exactly one.

    A cookie stays valid for up to two rotation periods, so a spent mark is kept that long.
    The table is bounded oldest-first; an evicted mark is older than the newest
    ``capacity`` ones, so at worst a very old cookie buys one more lookup.
    """

    __slots__ = ("lifetime_s", "capacity", "_spent")

    def __init__(self, rotate_s: float = 120.0, capacity: int = 65536) -> None:
        self.lifetime_s = 2.0 * rotate_s
        self.capacity = capacity
        self._spent: OrderedDict[bytes, float] = OrderedDict()

    def spend(self, cookie: bytes, now: float) -> bool:
        """Mark ``cookie`` spent; False if it was spent already (and still could be valid)."""
        spent = self._spent
        while spent:
            oldest, expires = next(iter(spent.items()))
            if expires > now and len(spent) < self.capacity:
                break
            del spent[oldest]
        if cookie in spent:
            return False
        spent[cookie] = now + self.lifetime_s
        return True

    def __len__(self) -> int:
        return len(self._spent)


def source_prefix(host: str) -> str:
    """The share group of a source address: its /24 (IPv4) or /56 (IPv6)."""
    if ":" in host:
        try:
            packed = socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
        except OSError:
            return host
        return packed[:7].hex() + "::/56"
    head, _, _ = host.rpartition(".")
    return head + ".0/24" if head else host


def claimed_zone(name: str) -> str:
    """The zone a peer name claims to live in: the name without its first label."""
    _, dot, parent = name.partition(".")
    return parent if dot else name


class LookupSlots:
    """Key-lookup slots shared fairly between source prefixes and claimed zones.

    Each slot is held by one (prefix, zone) pair. While slots are free anyone takes one;
    when all are taken, a newcomer whose prefix (or zone) holds fewer slots than the
    largest holder (even none against one) takes that holder's oldest slot, which is
    cancelled (by zone only where no prefix's share shrinks below the newcomer's). So a
    flood from many sources, or
    naming many dead zones, can never hold every slot against a quiet prefix or zone.
    """

    __slots__ = ("capacity", "_order", "_by_prefix", "_by_zone")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        # Insertion order is age: the oldest slot of a group is its first.
        self._order: dict[int, tuple[str, str, Callable[[], object]]] = {}
        self._by_prefix: dict[str, dict[int, None]] = {}
        self._by_zone: dict[str, dict[int, None]] = {}

    def __len__(self) -> int:
        return len(self._order)

    def held(self, prefix: str | None = None, zone: str | None = None) -> int:
        if prefix is not None:
            return len(self._by_prefix.get(prefix, ()))
        return len(self._by_zone.get(zone or "", ()))

    def acquire(self, token: int, prefix: str, zone: str, cancel: Callable[[], object]) -> bool:
        """Take a slot for ``token``; False if none is free and no holder may be preempted.
        ``cancel`` is called if the slot is later taken away."""
        if len(self._order) >= self.capacity:
            victim = self._victim(self._by_prefix, prefix)
            if victim is None:
                victim = self._zone_victim(prefix, zone)
            if victim is None:
                return False
            _, _, cancel_victim = self._order[victim]
            self.release(victim)
            cancel_victim()
        self._order[token] = (prefix, zone, cancel)
        self._by_prefix.setdefault(prefix, {})[token] = None
        self._by_zone.setdefault(zone, {})[token] = None
        return True

    @staticmethod
    def _victim(groups: dict[str, dict[int, None]], mine: str) -> int | None:
        if not groups:
            return None
        biggest = max(groups.values(), key=len)
        if len(groups.get(mine, ())) >= len(biggest):
            return None  # no smaller than the largest: taking would only trade places
        return next(iter(biggest))

    def _zone_victim(self, prefix: str, zone: str) -> int | None:
        """A slot of the largest zone whose taking leaves no prefix with a smaller share."""
        if self._victim(self._by_zone, zone) is None:
            return None
        biggest = max(self._by_zone.values(), key=len)
        mine = len(self._by_prefix.get(prefix, ()))
        for token in biggest:
            theirs = self._order[token][0]
            if theirs == prefix or len(self._by_prefix[theirs]) > mine:
                return token
        return None

    def release(self, token: int) -> None:
        held = self._order.pop(token, None)
        if held is None:
            return
        prefix, zone, _ = held
        for groups, key in ((self._by_prefix, prefix), (self._by_zone, zone)):
            group = groups[key]
            del group[token]
            if not group:
                del groups[key]


class NegativeCache:
    """Names and zones that did not answer, refused without a lookup until their backoff
    ends; each further failure doubles the backoff (up to ``max_s``), a success clears it."""

    __slots__ = ("base_s", "max_s", "capacity", "_until")

    def __init__(self, base_s: float = 2.0, max_s: float = 60.0,
                 capacity: int = 65536) -> None:
        self.base_s = base_s
        self.max_s = max_s
        self.capacity = capacity
        self._until: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def blocked(self, key: str, now: float) -> float:
        """Seconds left of ``key``'s backoff (0.0: not penalised)."""
        entry = self._until.get(key)
        if entry is None or entry[0] <= now:
            return 0.0
        return entry[0] - now

    def strike(self, key: str, now: float) -> float:
        """Record a failure of ``key``; returns the backoff it now serves."""
        until = self._until
        _, strikes = until.pop(key, (0.0, 0))
        backoff = min(self.max_s, self.base_s * (1 << min(strikes, 30)))
        until[key] = (now + backoff, strikes + 1)
        while len(until) > self.capacity:
            until.popitem(last=False)
        return backoff

    def clear(self, key: str) -> None:
        self._until.pop(key, None)

    def __len__(self) -> int:
        return len(self._until)


class ZoneHealth:
    """Which zones have answered a lookup, and which of their names timed out since.

    A timeout proves a zone dead only if the zone never answered: the AR's own resolver
    times out too when the AR is loaded, and one home domain holds every MN of a
    population, so striking such a zone for one slow answer refuses them all (issue 15).
    A zone that has answered is struck only after ``names`` distinct names of it timed out
    with no success in between. Only a success adds a zone, so a flood naming fresh zones
    fills nothing; the table is bounded least-recently-answered first, and an evicted zone
    is judged as one that never answered.
    """

    __slots__ = ("names", "capacity", "_timed_out")

    def __init__(self, names: int = 8, capacity: int = 65536) -> None:
        self.names = names
        self.capacity = capacity
        # zone -> its names that timed out since its last success (at most ``names``)
        self._timed_out: OrderedDict[str, set[str]] = OrderedDict()

    def answered(self, zone: str) -> None:
        table = self._timed_out
        table.pop(zone, None)
        table[zone] = set()
        if len(table) > self.capacity:
            table.popitem(last=False)

    def timed_out(self, zone: str, name: str) -> bool:
        """Record that ``name`` timed out; True if that now counts against its zone."""
        names = self._timed_out.get(zone)
        if names is None:
            return True
        if len(names) < self.names:
            names.add(name)
        return len(names) >= self.names

    def __len__(self) -> int:
        return len(self._timed_out)
