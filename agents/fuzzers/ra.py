"""Fuzz target ``ra``: Router Advertisements on the MN's access interface (agents/ra.py).
Random RAs (prefix information options of every length and flag, link-layer address options,
unknown and zero-length options, odd header fields), sent with a random hop limit, interface
and source, and their mutants, go through ``accept`` and then the MN's ``refused``.

Findings: any exception that is not an RaError; an RA accepted from off the link (hop limit
not 255, another interface, another source); an accepted RA without unknown options that does
not re-pack to itself; and a comparison that counts a prefix as re-routed although
the authenticated AUTH_REPLY did not confirm it (a forgery).
"""

from __future__ import annotations

import random
import struct
from ipaddress import IPv6Address, IPv6Network

from agents import ra

from .common import Tally, cases

MUTANTS = 15
ACCESS = 4
HELD = [IPv6Network("2001:db8:4000:100::/64"), IPv6Network("2001:db8:4010:200::/64")]


def _prefix(rng: random.Random) -> bytes:
    plen = rng.choice((64, 64, 56, 128, 0, 129, 255, rng.randrange(256)))
    if rng.random() < 0.5:
        net = rng.choice(HELD)
        raw = net.network_address.packed
        plen = plen if rng.random() < 0.3 else net.prefixlen
    else:
        raw = rng.randbytes(16)
    valid = rng.choice((ra.INFINITY, 0, 30, rng.getrandbits(32)))
    preferred = rng.choice((valid, 0, ra.INFINITY, rng.getrandbits(32)))
    flags = rng.choice((0, 0, ra.FLAG_ON_LINK, ra.FLAG_AUTONOMOUS, 0xC0, rng.randrange(256)))
    units = rng.choice((4, 4, 4, 3, 5, 0))
    body = struct.pack("!BBII4x16s", plen % 256, flags, valid, preferred, raw)
    return bytes((ra.OPT_PREFIX, units)) + body


def _option(rng: random.Random) -> bytes:
    kind = rng.randrange(5)
    if kind < 2:
        return _prefix(rng)
    if kind == 2:
        return bytes((ra.OPT_SLLA, rng.choice((1, 1, 2)))) + rng.randbytes(6)
    units = rng.randrange(3)
    return bytes((rng.choice((5, 24, 25, 200, rng.randrange(256))), units)) + bytes(
        max(0, 8 * units - 2))


def _advert(rng: random.Random) -> bytes:
    if rng.random() < 0.4:  # what an AR really sends
        return ra.rerouted_advert(rng.sample(HELD, rng.randrange(3))).pack()
    head = struct.pack("!BBHBBHII", rng.choice((134, 134, 134, 133, 135)),
                       rng.choice((0, 0, 0, 1)), rng.getrandbits(16), rng.randrange(256),
                       rng.randrange(256), rng.getrandbits(16), rng.getrandbits(32),
                       rng.getrandbits(32))
    return head + b"".join(_option(rng) for _ in range(rng.randrange(5)))


def _arrival(rng: random.Random) -> tuple[IPv6Address, int | None, int, bool]:
    """(source, hop limit, interface, whether the MN should believe it at all)."""
    source = rng.choice((ra.ROUTER_LINK_LOCAL, ra.ROUTER_LINK_LOCAL, IPv6Address("fe80::1"),
                         IPv6Address("2001:db8::1")))
    hops = rng.choice((255, 255, 255, 254, 64, 0, None))
    ifindex = rng.choice((ACCESS, ACCESS, ACCESS, 1, 5, 0))
    return source, hops, ifindex, (source == ra.ROUTER_LINK_LOCAL and hops == 255
                                   and ifindex == ACCESS)


def _check(data: bytes, advert: ra.RouterAdvert, on_link: bool,
           confirmed: list[IPv6Network]) -> str | None:
    if not on_link:
        return "accepted from off the link"
    known = (ra.OPT_SLLA, ra.OPT_PREFIX)
    i, plain = ra.HEADER.size, True
    while i < len(data):
        plain = plain and data[i] in known
        i += 8 * data[i + 1]
    again = advert.pack()
    # The reserved field of a prefix option is ignored (RFC 4861 4.6.2), so compare parses.
    if ra.RouterAdvert.unpack(again) != advert or (plain and len(again) != len(data)):
        return "does not re-pack to itself"
    routed = [p for p in HELD if p not in ra.refused(HELD, advert.listed(), confirmed)]
    if any(p not in confirmed for p in routed):
        return "a prefix counted as re-routed that the AUTH_REPLY did not confirm"
    return None


def run(tally: Tally, count: int, seed: int) -> None:
    rng = random.Random(seed)
    for data in cases(tally, count, rng, lambda: _advert(rng), MUTANTS):
        source, hops, ifindex, on_link = _arrival(rng)
        confirmed = rng.sample(HELD, rng.randrange(3))
        ok, advert = tally.run(
            data, lambda: ra.accept(data, source, hops, ifindex, ACCESS),  # noqa: B023
            (ra.RaError,))
        if not ok or advert is None:
            continue
        why = _check(data, advert, on_link, confirmed)
        if why is not None:
            tally.forgery(data, why)
        else:
            tally.accepted += 1
