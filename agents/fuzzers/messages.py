"""Fuzz target ``auth_messages``: every message type of docs/protocol.md, built with random
valid fields (all AUTH flags, TALs, long names, 16 addresses), then mutated, through the strict
parser and the peer's and authenticator's tag checks.

Findings: a parser exception that is not an AuthError; an accepted message that re-encodes to
other octets (two spellings of one message); a mutant whose tag still verifies (a forgery).
"""

from __future__ import annotations

import hashlib
import ipaddress
import random
from collections.abc import Callable

from agents.auth import protocol
from agents.auth.errors import AuthError
from agents.auth.keys import Suite
from agents.auth.keystore import KeyStore, Role
from agents.auth.messages import (
    CookieReply,
    Failure,
    MsgType,
    Prefix,
    encode_addresses,
    encode_names,
    unpack_any,
)
from agents.auth.protocol import SessionKeys

from .common import Tally, mutate

AR = "ar.fuzz.flatarch.test"
NAMES = ("mn.fuzz.flatarch.test", "a", "a-b.c9", "x" * 63 + ".y",
         ".".join(["abcdefg"] * 31) + ".abcd")  # the last is 252 octets
MUTANTS = 31  # per generated message


def _secret(label: str) -> bytes:
    return hashlib.sha256(b"flatarch fuzz messages " + label.encode()).digest()


def _prefix(rng: random.Random) -> Prefix:
    if rng.random() < 0.5:
        plen = rng.choice((32, 32, 24, 0, rng.randint(0, 32)))
        return ipaddress.IPv4Network((rng.getrandbits(32) >> (32 - plen) << (32 - plen)
                                      if plen else 0, plen))
    plen = rng.choice((128, 64, 48, 0, rng.randint(0, 128)))
    return ipaddress.IPv6Network((rng.getrandbits(128) >> (128 - plen) << (128 - plen)
                                  if plen else 0, plen))


def _prefixes(rng: random.Random, most: int = 16) -> tuple[Prefix, ...]:
    out: dict[Prefix, None] = {}
    for _ in range(rng.choice((0, 1, 2, rng.randint(0, most), most))):
        out[_prefix(rng)] = None
    return tuple(out)[:most]


class _Keys:
    """Fixed identities: one authenticator and a peer per name, so MACs are real."""

    def __init__(self) -> None:
        self.ar = KeyStore.from_private_bytes(AR, Suite.P256, _secret("ar"))
        self.ar_key = self.ar.published_key()
        self.peers = {n: KeyStore.from_private_bytes(n, Suite.P256, _secret(n)) for n in NAMES}


def _auth(rng: random.Random, keys: _Keys) -> tuple[bytes, bytes, bytes]:
    peer = keys.peers[rng.choice(NAMES)]
    nonce = bytes(16) if rng.random() < 0.3 else rng.randbytes(16)
    data, msk0, ctx0 = protocol.build_auth(
        peer, keys.ar_key, timestamp_us=rng.getrandbits(rng.choice((8, 51, 64))),
        peer_nonce=rng.randbytes(16), auth_nonce=nonce, addresses=_prefixes(rng),
        mobility=(mobility := rng.random() < 0.5),
        cookie=rng.randbytes(16) if rng.random() < 0.3 else None,
        previous=rng.choice(NAMES) if rng.random() < 0.3 else None,
        idle=rng.random() < 0.2, page=rng.random() < 0.2,
        origin_us=rng.getrandbits(64) if mobility and rng.random() < 0.2 else None)
    return data, msk0, ctx0


Verify = Callable[[bytes], object]


def _case(rng: random.Random, keys: _Keys) -> tuple[bytes, Verify | None]:
    """A random valid message and the receiver's check of it (None: nothing to verify)."""
    kind = rng.choice(list(MsgType))
    data, msk0, ctx0 = _auth(rng, keys)
    name_len = data[44]
    if kind == MsgType.AUTH:
        return data, lambda d: protocol.check_auth_mac(msk0, ctx0, d)
    if kind == MsgType.AUTH_REPLY:
        n_p = data[12:28]
        tal = tuple(rng.choice(NAMES) for _ in range(rng.choice((0, 0, 1, 3, 8))))
        reply, _, _ = protocol.seal_auth_reply(
            msk0, ctx0, session_id=rng.randbytes(8), peer_nonce=n_p,
            fresh_nonce=rng.randbytes(16), address_block=encode_addresses(_prefixes(rng)),
            mobility=rng.random() < 0.5, tal_block=encode_names(tal) if tal else b"")
        return reply, lambda d: protocol.open_auth_reply(d, msk0, ctx0, peer_nonce=n_p,
                                                         peer_name_len=name_len)
    if kind in (MsgType.REMSK, MsgType.REMSK_ACK):
        sid = rng.randbytes(8)
        sender = rng.choice((Role.PEER, Role.AUTHENTICATOR))
        receiver = Role.AUTHENTICATOR if sender is Role.PEER else Role.PEER

        def fresh() -> SessionKeys:  # checks move keys forward; each input starts afresh
            return SessionKeys(sid, name_len, msk0, ctx0)

        nonce = rng.randbytes(16)
        remsk = protocol.build_remsk(fresh(), sender, timestamp_us=rng.getrandbits(60),
                                     nonce=nonce)
        if kind == MsgType.REMSK:
            return remsk, lambda d: protocol.open_remsk(fresh(), receiver, d)
        msg, prev = protocol.open_remsk(fresh(), receiver, remsk)
        ack = protocol.answer_remsk(fresh(), receiver, msg, prev, rng.randbytes(16))
        return ack, lambda d: protocol.open_remsk_ack(fresh(), sender, d, nonce)
    if kind == MsgType.FAILURE:
        return Failure(rng.randbytes(16)).pack(), None
    if kind == MsgType.COOKIE:
        return CookieReply(rng.randbytes(16), rng.randbytes(16)).pack(), None
    # Reserved and undefined types: a header and anything.
    return bytes((1, rng.choice((0, 7, 8, 255)), 0)) + rng.randbytes(rng.randint(0, 100)), None


def _one(data: bytes, verify: Verify | None) -> tuple[bool, bool, bool]:
    """(parsed, re-encodes to the same octets, the receiver's tag check passed)."""
    try:
        msg = unpack_any(data)
    except AuthError:
        parsed = canonical = False
    else:
        parsed, canonical = True, msg.pack() == data
    if verify is None:
        return parsed, canonical, False
    try:
        verify(data)
    except AuthError:
        return parsed, canonical, False
    return parsed, canonical, True


def run(tally: Tally, count: int, seed: int) -> None:
    rng = random.Random(seed)
    keys = _Keys()
    donors: list[bytes] = []
    while tally.inputs < count:
        base, verify = _case(rng, keys)
        if len(donors) < 64:
            donors.append(base)
        else:
            donors[rng.randrange(64)] = base
        for i in range(MUTANTS + 1):
            if tally.inputs >= count:
                return
            data = base if i == 0 else mutate(rng, base, donors=tuple(donors))
            ok, out = tally.run(data, lambda: _one(data, verify), ())  # noqa: B023
            if not ok or out is None:
                continue
            parsed, canonical, verified = out
            tally.count("parsed", parsed)
            if parsed and not canonical:
                tally.forgery(data, "parsed message re-encodes to other octets")
            if verified:
                if data == base:
                    tally.accepted += 1
                else:
                    tally.forgery(data, "tag verified on a mutant")
            elif data == base and verify is not None:
                tally.uncaught += 1
                tally.note("genuine rejected", data, "the unmutated message did not verify")
            else:
                tally.rejected += 1
