"""Cheap admission checks run before any DNS lookup or ECDH: rate limits, load, cookies,
and the timestamp replay guard.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
from collections import OrderedDict

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
