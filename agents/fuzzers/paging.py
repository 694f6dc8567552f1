"""Fuzz target ``paging``: what idle mode reads from outside (agents/paging.py, agents/idle.py).
Pages broadcast on the access link (JSON of either family, hostile shapes and mutants) go
through ``parse_page`` and the MN's answer rule; packets from the paging device (IPv4 and
IPv6 headers, truncations, mutants) go through an AR's IPv4 and IPv6 idle tables.

Findings: any exception out of either; a page accepted with more than 16 entries, a longer
sender name, or an entry that is neither an IPv4 address nor an IPv6 prefix (an IPv6 address
would let a page for one host wake a whole /64's MN); a packet buffered for a /32 or a /64
its destination is not in.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
from ipaddress import IPv4Address, IPv6Address, IPv6Network

from agents import paging
from agents.idle import IdleTable

from .common import Tally, cases

MUTANTS = 15
HELD4 = IPv4Address("10.64.0.10")
HELD6 = IPv6Network("2001:db8:4000:1::/64")
OTHER6 = IPv6Network("2001:db8:4000:2::/64")


def _page(rng: random.Random) -> bytes:
    entries: list[object] = []
    valid = (str(HELD4), str(HELD6), str(OTHER6), "10.64.0.11")
    for _ in range(rng.choice((0, 1, 1, 2, 3, 17, 40))):
        if rng.random() < 0.7:  # what an AR sends: most pages parse, and are judged
            entries.append(rng.choice(valid))
            continue
        entries.append(rng.choice((
            str(HELD4), str(HELD6), str(OTHER6), "10.64.0.11", "2001:db8:4000:1::1",
            "2001:db8:4000:1::1/64", "10.64.0.0/24", "::/0", "", 7, None, ["x"],
            str(IPv6Network((rng.getrandbits(128), rng.randrange(129)), strict=False)))))
    doc: object = {"m": rng.choice((paging.PAGE_MAGIC, paging.PAGE_MAGIC, "fa-page-0", 1)),
                   "addrs": entries if rng.random() < 0.9 else str(HELD4),
                   "by": rng.choice(("ar1.isp.test", "x" * 400, 5, None))}
    if rng.random() < 0.05:
        doc = entries
    return json.dumps(doc).encode()


def _packet(rng: random.Random) -> bytes:
    if rng.random() < 0.5:
        dst = rng.choice((HELD4, IPv4Address(rng.getrandbits(32))))
        head = bytes([0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 198, 51, 100, 2]) + dst.packed
    else:
        dst6 = rng.choice((HELD6.network_address + 1, OTHER6.network_address + 9,
                           IPv6Address(rng.getrandbits(128))))
        head = (bytes([0x60, 0, 0, 0, 0, 8, 17, 64]) + IPv6Address("2001:db8:1::2").packed
                + dst6.packed)
    return head + rng.randbytes(rng.randrange(16))


def _check_page(page: tuple[list[paging.Paged], str]) -> str | None:
    addrs, by = page
    if len(addrs) > 16 or len(by) > 255:
        return "a page longer than its limits"
    if any(not isinstance(a, IPv4Address | IPv6Network) for a in addrs):
        return "an entry that is no IPv4 address or IPv6 prefix"
    return None


async def _none(*_: object) -> int:
    return 0


async def _unpark(*_: object) -> None:
    return None


def _tables() -> tuple[IdleTable[IPv4Address], IdleTable[IPv6Network]]:
    def spawn(aw: object) -> None:
        if asyncio.iscoroutine(aw):
            aw.close()

    t4 = IdleTable[IPv4Address]("ipv4", "ar1", paging.destination4, _none, _unpark,
                                lambda *a, **k: None, lambda: 0.0, spawn, ("ar1",))
    t6 = IdleTable[IPv6Network]("ipv6", "ar1", functools.partial(paging.prefix_of,
                                                                 prefixlen=64),
                                _none, _unpark, lambda *a, **k: None, lambda: 0.0, spawn,
                                ("ar1",))
    t4.park(HELD4, "mn1.example")
    t6.park(HELD6, "mn1.example")
    return t4, t6


def _buffer(data: bytes, t4: IdleTable[IPv4Address],
            t6: IdleTable[IPv6Network]) -> tuple[bool, str | None]:
    """(buffered at all, the finding if any) for one packet out of the paging device."""
    before = (len(t4.idle[HELD4].buffer.packets), len(t6.idle[HELD6].buffer.packets))
    for t in (t4, t6):
        t.on_buffered(data)
    got4 = len(t4.idle[HELD4].buffer.packets) > before[0]
    got6 = len(t6.idle[HELD6].buffer.packets) > before[1]
    for state in (t4.idle[HELD4], t6.idle[HELD6]):  # keep the buffers from filling up
        state.buffer.drain()
        state.paging_since = None
    if got4 and not paging.is_for(data, HELD4):
        return True, "buffered for a /32 it is not for"
    if got6 and not paging.is_for(data, HELD6):
        return True, "buffered for a /64 it is not in"
    return got4 or got6, None


def run(tally: Tally, count: int, seed: int) -> None:
    rng = random.Random(seed)
    for data in cases(tally, count // 2, rng, lambda: _page(rng), MUTANTS):
        ok, page = tally.run(data, lambda: paging.parse_page(data), ())  # noqa: B023
        if not ok:
            continue
        if page is None:
            tally.rejected += 1
        elif (why := _check_page(page)) is not None:
            tally.forgery(data, why)
        else:
            tally.accepted += 1
    t4, t6 = _tables()
    for data in cases(tally, count, rng, lambda: _packet(rng), MUTANTS):
        ok, out = tally.run(data, lambda: _buffer(data, t4, t6), ())  # noqa: B023
        if not ok or out is None:
            continue
        buffered, why = out
        if why is not None:
            tally.forgery(data, why)
        else:
            tally.count("buffered" if buffered else "not_buffered")
