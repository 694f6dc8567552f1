"""Fuzz target ``exabgp``: the AR agent's reader of ExaBGP's JSON lines (agents/exabgp_api.py).
Random state, update (announce, withdraw, ADD-PATH ids), End-of-RIB and other messages with
fields of every JSON type, deep nesting and huge numbers, then mutants of their text.

Findings: any exception other than ApiError; an event whose fields are not what the AR acts on
(an IPv4 prefix, an IPv4 next hop, a LOCAL_PREF in 0..2^32-1), which counts as a forgery.
"""

from __future__ import annotations

import ipaddress
import json
import random
from typing import Any

from agents import exabgp_api as api

from .common import Tally, mutate

MUTANTS = 15


def _junk(rng: random.Random, depth: int = 0) -> Any:
    """Any JSON value, occasionally nested."""
    roll = rng.randrange(10 if depth < 3 else 7)
    if roll == 0:
        return None
    if roll == 1:
        return rng.random() < 0.5
    if roll == 2:
        return rng.choice((0, -1, 100, 2**32, 2**64, rng.getrandbits(40)))
    if roll == 3:
        return rng.choice((0.5, 1e308, -0.0))
    if roll in (4, 5, 6):
        return rng.choice(("", "up", "10.0.0.1", "10.64.0.0/24", "::1", "x" * 300, "\u00e9"))
    if roll == 7:
        return [_junk(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(("nlri", "peer", "update", "ipv4 unicast", "k")): _junk(rng, depth + 1)
            for _ in range(rng.randint(0, 3))}


def _maybe(rng: random.Random, value: Any) -> Any:
    return value if rng.random() < 0.93 else _junk(rng)


def _nlri(rng: random.Random) -> Any:
    plen = rng.choice((32, 24, 16, rng.randint(0, 32)))
    net = ipaddress.IPv4Network((rng.getrandbits(32) >> (32 - plen) << (32 - plen)
                                 if plen else 0, plen))
    entry: dict[str, Any] = {"nlri": _maybe(rng, str(net))}
    if rng.random() < 0.5:
        entry["path-information"] = _maybe(rng, f"0.0.0.{rng.randint(0, 255)}")
    return _maybe(rng, entry)


def _message(rng: random.Random) -> dict[str, Any]:
    peer = {"local": "10.255.0.7", "peer": _maybe(rng, f"10.255.0.{rng.randint(1, 9)}")}
    neighbor: dict[str, Any] = {"address": _maybe(rng, peer), "asn": {"local": 65000}}
    kind = rng.choice(("update", "update", "update", "state", "notification", "keepalive",
                       "open", None))
    if kind == "state":
        neighbor["state"] = _maybe(rng, rng.choice(("up", "down", "connected")))
        neighbor["reason"] = _maybe(rng, "peer reset")
    elif kind == "update" and rng.random() < 0.1:  # an End-of-RIB: its own message, no update
        neighbor["direction"] = _maybe(rng, rng.choice(("receive", "receive", "send")))
        eor = {"afi": _maybe(rng, rng.choice(("ipv4", "ipv6", "l2vpn"))),
               "safi": _maybe(rng, rng.choice(("unicast", "unicast", "evpn")))}
        neighbor["message"] = _maybe(rng, {"eor": _maybe(rng, eor)})
    elif kind == "update":
        update: dict[str, Any] = {}
        if rng.random() < 0.05:
            update["eor"] = {"afi": "ipv4", "safi": "unicast"}  # not where ExaBGP puts it
        else:
            update["attribute"] = _maybe(rng, {"origin": "igp", "local-preference": _maybe(
                rng, rng.choice((100, 200, 1795812671, 0, 2**32 - 1)))})
            if rng.random() < 0.8:
                # JSON keys are strings: a hostile key is a string that is not an address.
                hop = f"10.255.0.{rng.randint(1, 9)}"
                hops = {rng.choice((hop, hop, hop, "", "::1", "300.1.1.1", "null")): _maybe(
                    rng, [_nlri(rng) for _ in range(rng.randint(0, 4))])
                    for _ in range(rng.randint(1, 2))}
                update["announce"] = _maybe(rng, {"ipv4 unicast": _maybe(rng, hops)})
            if rng.random() < 0.5:
                update["withdraw"] = _maybe(rng, {"ipv4 unicast": _maybe(
                    rng, [_nlri(rng) for _ in range(rng.randint(0, 4))])})
        neighbor["direction"] = "receive"
        neighbor["message"] = _maybe(rng, {"update": _maybe(rng, update)})
    msg: dict[str, Any] = {"exabgp": "5.0.0", "time": 1.0, "type": _maybe(rng, kind),
                           "neighbor": _maybe(rng, neighbor)}
    if kind == "notification":
        msg["notification"] = _maybe(rng, "shutdown")
    return msg


def _line(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.05:
        return rng.choice(("done", "error", "shutdown", "", "garbage", "{", "[]"))
    if roll < 0.08:  # nesting beyond the interpreter's recursion limit
        depth = rng.choice((900, 5000, 100_000))
        return '{"type": "update", "neighbor": ' + "[" * depth + "]" * depth + "}"
    if roll < 0.10:
        return '{"type": "update", "x": ' + "9" * rng.choice((4000, 5000)) + "}"
    return json.dumps(_message(rng))


def _sane(event: api.Event | None) -> str | None:
    """Why an event is not one the AR can act on safely, or None."""
    if isinstance(event, api.Update):
        if not isinstance(event.peer, str):
            return "peer is not a string"
        if event.eor != bool(event.family) or (event.family and event.family not in api.FAMILIES):
            return "an End-of-RIB without a family we read, or a family without one"
        if event.eor and (event.announced or event.withdrawn):
            return "an End-of-RIB that carries routes"
        for route in event.announced:
            if not isinstance(route.prefix, ipaddress.IPv4Network):
                return "announced prefix is not IPv4"
            if not isinstance(route.next_hop, ipaddress.IPv4Address):
                return "next hop is not IPv4"
            if type(route.local_pref) is not int or not 0 <= route.local_pref < 2**32:
                return "local-preference out of range"
            if not isinstance(route.path_id, str):
                return "path id is not a string"
        if not all(isinstance(p, ipaddress.IPv4Network) for p in event.withdrawn):
            return "withdrawn prefix is not IPv4"
        if len(event.withdrawn_ids) != len(event.withdrawn):
            return "withdrawn ids do not match"
    elif isinstance(event, api.PeerState) and not (
            isinstance(event.peer, str) and isinstance(event.reason, str)):
        return "peer state fields are not strings"
    return None


def run(tally: Tally, count: int, seed: int) -> None:
    rng = random.Random(seed)
    while tally.inputs < count:
        base = _line(rng)
        raw = base.encode("utf-8", "surrogatepass")
        for i in range(MUTANTS + 1):
            if tally.inputs >= count:
                return
            # What the AR does with a line: bytes from the pipe, decoded with replacement.
            text = base if i == 0 else mutate(rng, raw).decode(errors="replace")
            ok, event = tally.run(text, lambda: api.parse_line(text), (api.ApiError,))  # noqa: B023
            if not ok:
                continue
            why = _sane(event)
            if why is not None:
                tally.forgery(text, why)
            elif event is None:
                tally.rejected += 1
            else:
                tally.accepted += 1
