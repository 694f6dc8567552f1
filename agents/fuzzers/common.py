"""What every fuzz target shares: the per-target tally (inputs, uncaught exceptions, accepted
forgeries, cost per input) and a seeded byte mutator, so that a run is reproducible.
"""

from __future__ import annotations

import random
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..stats import percentile

T = TypeVar("T")
MAX_EXAMPLES = 20
# Values that make length, count and type fields interesting.
INTERESTING = (0, 1, 2, 3, 4, 6, 15, 16, 17, 18, 31, 32, 63, 64, 127, 128, 200, 253, 254, 255)


@dataclass
class Tally:
    """One target's results. An input either returns (accepted or rejected by value), raises
    one of the target's typed errors (rejected), or raises anything else (uncaught)."""

    target: str
    inputs: int = 0
    uncaught: int = 0
    forgeries: int = 0
    accepted: int = 0
    rejected: int = 0
    seconds: float = 0.0
    examples: list[str] = field(default_factory=list)
    extra: dict[str, int] = field(default_factory=dict)
    costs_ns: array[int] = field(default_factory=lambda: array("Q"))
    slowest: tuple[int, bytes | str] = (0, b"")  # the costliest input: is the max the input's?

    def note(self, kind: str, data: bytes | str, detail: str) -> None:
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"{kind}: {detail}: {_shown(data)}")

    def count(self, what: str, n: int = 1) -> None:
        self.extra[what] = self.extra.get(what, 0) + n

    def forgery(self, data: bytes | str, detail: str) -> None:
        self.forgeries += 1
        self.note("accepted forgery", data, detail)

    def run(self, data: bytes | str, fn: Callable[[], T],
            expected: tuple[type[BaseException], ...]) -> tuple[bool, T | None]:
        """Time one input through ``fn``: (True, result), or (False, None) when it raised.

        Only ``Exception`` is caught: a KeyboardInterrupt must still stop the campaign.
        """
        self.inputs += 1
        start = time.perf_counter_ns()
        try:
            out = fn()
        except expected:
            self._cost(time.perf_counter_ns() - start, data)
            self.rejected += 1
            return False, None
        except Exception as exc:  # the oracle: anything untyped is a finding
            self._cost(time.perf_counter_ns() - start, data)
            self.uncaught += 1
            self.note("uncaught", data, repr(exc)[:200])
            return False, None
        self._cost(time.perf_counter_ns() - start, data)
        return True, out

    def _cost(self, ns: int, data: bytes | str) -> None:
        self.costs_ns.append(ns)
        if ns > self.slowest[0]:
            self.slowest = (ns, data)

    @property
    def ok(self) -> bool:
        return self.uncaught == 0 and self.forgeries == 0

    def summary(self) -> dict[str, Any]:
        costs = self.costs_ns
        n = len(costs)

        def pct(p: float) -> float:
            return round(percentile(costs, p) / 1000, 1) if n else 0.0

        return {"inputs": self.inputs, "uncaught": self.uncaught, "forgeries": self.forgeries,
                "accepted": self.accepted, "rejected": self.rejected,
                "p50_us": pct(0.50), "p99_us": pct(0.99),
                "max_us": round(max(costs) / 1000, 1) if n else 0.0,
                "seconds": round(self.seconds, 2), **self.extra, "examples": self.examples,
                "slowest_input": _shown(self.slowest[1])}


def _shown(data: bytes | str) -> str:
    return (data.hex() if isinstance(data, bytes) else repr(data))[:600]


def cases(tally: Tally, count: int, rng: random.Random, make: Callable[[], bytes],
          mutants: int) -> Iterator[bytes]:
    """Until ``count`` inputs: a fresh valid-ish input from ``make``, then its mutants."""
    while tally.inputs < count:
        base = make()
        for i in range(mutants + 1):
            if tally.inputs >= count:
                return
            yield base if i == 0 else mutate(rng, base)


def mutate(rng: random.Random, data: bytes, rounds: int = 3,
           donors: tuple[bytes, ...] = ()) -> bytes:
    """One to ``rounds`` random edits of ``data``; ``donors`` lend slices for splicing."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, rounds)):
        op = rng.randrange(11)
        n = len(buf)
        if op == 0 and n:  # flip a bit
            buf[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # an interesting value where a length or count may sit
            buf[rng.randrange(n)] = rng.choice(INTERESTING)
        elif op == 2:  # truncate
            del buf[rng.randrange(n + 1):]
        elif op == 3:  # append
            buf += rng.randbytes(rng.randint(1, 64))
        elif op == 4:  # insert
            i = rng.randrange(n + 1)
            buf[i:i] = rng.randbytes(rng.randint(1, 16))
        elif op == 5 and n:  # delete a slice
            i = rng.randrange(n)
            del buf[i:i + rng.randint(1, 16)]
        elif op == 6 and n:  # duplicate a slice
            i = rng.randrange(n)
            buf[i:i] = buf[i:i + rng.randint(1, 32)]
        elif op == 7 and n:  # random byte
            buf[rng.randrange(n)] = rng.randrange(256)
        elif op == 8 and n >= 2:  # a 16-bit field to an extreme
            i = rng.randrange(n - 1)
            buf[i:i + 2] = rng.choice((b"\x00\x00", b"\xff\xff", b"\x7f\xff", b"\x80\x00"))
        elif op == 9 and donors:  # splice a slice of another valid input
            other = rng.choice(donors)
            if other:
                i = rng.randrange(len(other))
                j = rng.randrange(n + 1)
                buf[j:j] = other[i:i + rng.randint(1, 64)]
        elif op == 10 and n:  # swap two slices' order
            i, j = sorted((rng.randrange(n), rng.randrange(n)))
            buf[i:j] = bytes(reversed(buf[i:j]))
    return bytes(buf)
