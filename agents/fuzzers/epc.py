"""Fuzz target ``epc``: the anchored baseline's control plane (agents/epc.py), which the UE,
the eNB relay on every AR and the MME read from the air and the backbone. Well-formed
messages of every type (the dual-stack ATTACH_ACCEPT with PREFIX6 among them), S1 wrappers
around them, and their mutants go through ``decode``.

Findings: any exception that is not an EpcError; a decoded message whose fields are not its
type's (a missing or foreign field, PREFIX6 off an ATTACH_ACCEPT, bits set beyond a prefix
length); one that does not encode back to the same octets; an S1 message wrapped in another.
"""

from __future__ import annotations

import random
from ipaddress import IPv4Address, IPv6Network

from agents import epc
from agents.epc import Kind, Message

from .common import Tally, cases

MUTANTS = 15
NAMES = ("mn1", "ar3", "p12", "x" * 32)


def _message(rng: random.Random, kind: Kind | None = None) -> Message:
    kind = kind or rng.choice([k for k in Kind if k not in (Kind.S1_UPLINK, Kind.S1_DOWNLINK)])
    want = epc.REQUIRED[kind] | (epc.OPTIONAL.get(kind, frozenset())
                                 if rng.random() < 0.5 else frozenset())
    kw: dict[str, object] = {}
    if epc.Tag.IMSI in want:
        kw["imsi"] = rng.choice(NAMES)
    if epc.Tag.CELL in want:
        kw["cell"] = rng.choice(NAMES)
    if epc.Tag.RAND in want:
        kw["rand"] = rng.randbytes(epc.RAND_LEN)
    if epc.Tag.RES in want:
        kw["res"] = rng.randbytes(epc.RES_LEN)
    if epc.Tag.ADDRESS in want:
        kw["address"] = IPv4Address(rng.getrandbits(32))
    if epc.Tag.CAUSE in want:
        kw["cause"] = rng.randrange(256)
    if epc.Tag.PREFIX6 in want:
        kw["prefix6"] = IPv6Network((rng.getrandbits(128), rng.choice((64, 48, 128, 0))),
                                    strict=False)
    return Message(kind, rng.getrandbits(32), **kw)  # type: ignore[arg-type]


def _datagram(rng: random.Random) -> bytes:
    inner = _message(rng)
    if rng.random() < 0.5:
        return epc.encode(inner)
    return epc.encode(Message(rng.choice((Kind.S1_UPLINK, Kind.S1_DOWNLINK)),
                              rng.getrandbits(32), cell=rng.choice(NAMES),
                              ue_addr=IPv4Address(rng.getrandbits(32)),
                              ue_port=rng.randrange(1, 65536), nas=epc.encode(inner)))


def _check(data: bytes, msg: Message) -> str | None:
    have = msg.present()
    if not epc.REQUIRED[msg.kind] <= have <= (epc.REQUIRED[msg.kind]
                                              | epc.OPTIONAL.get(msg.kind, frozenset())):
        return f"{msg.kind.name} accepted with fields {sorted(t.name for t in have)}"
    if msg.prefix6 is not None and int(msg.prefix6.hostmask) & int(msg.prefix6.network_address):
        return "a prefix with bits set beyond its length"
    if msg.nas and epc.decode(msg.nas).kind in (Kind.S1_UPLINK, Kind.S1_DOWNLINK):
        return "an S1 message wrapped in another"
    if epc.encode(msg) != data:
        return "accepted octets that do not encode back to themselves"
    return None


def run(tally: Tally, count: int, seed: int) -> None:
    rng = random.Random(seed)
    for data in cases(tally, count, rng, lambda: _datagram(rng), MUTANTS):
        ok, msg = tally.run(data, lambda: epc.decode(data), (epc.EpcError,))  # noqa: B023
        if not ok or msg is None:
            continue
        why = _check(data, msg)
        if why is not None:
            tally.forgery(data, why)
        else:
            tally.accepted += 1
