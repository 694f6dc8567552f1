"""Test vectors for docs/protocol.md: fixed keys and nonces -> LTSS -> MSK -> message bytes.

``python -m agents.auth.vectors`` prints the fenced blocks pasted into section 12 of the
document, ``... extra`` those of 12.1 and ``... malformed`` that of 12.2; the unit tests parse
them back out of the document and re-derive every value.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric import ec, x25519

from .errors import AuthError
from .kdf import ALG_MAC_A2P, ALG_MAC_P2A, kdf
from .keys import Suite
from .keystore import KeyStore, Role
from .messages import (
    FLAG_COOKIE,
    FLAG_IDLE,
    FLAG_MOBILITY,
    FLAG_ORIGIN,
    FLAG_PAGE,
    FLAG_PREVIOUS,
    AuthMessage,
    AuthReply,
    CookieReply,
    Failure,
    Remsk,
    RemskAck,
    encode_addresses,
    encode_names,
    to_prefix,
    unpack_any,
)
from .protocol import (
    SessionKeys,
    answer_remsk,
    build_auth,
    build_auth_reply,
    build_remsk,
    check_auth_mac,
    open_auth_reply,
    open_remsk,
    open_remsk_ack,
    seal_auth_reply,
)

PEER_NAME = "mn1.example.net"
AUTH_NAME = "ar1.example.net"
PEER_NONCE = bytes(range(0x00, 0x10))
AUTH_NONCE_PUBLISHED = bytes(range(0xF0, 0x100))
FRESH_AUTH_NONCE = bytes(range(0xA0, 0xB0))
SESSION_ID = bytes(range(1, 9))
TIMESTAMP_US = 1_700_000_000_000_000
ADDRESSES = ("192.0.2.10/32", "2001:db8:1::/64")
REMSK_TIMESTAMP_US = 1_700_000_001_000_000
REMSK_PEER_NONCE = bytes(range(0xB0, 0xC0))
REMSK_AUTH_NONCE = bytes(range(0xC0, 0xD0))
COOKIE = bytes([0x5A]) * 16


def private_bytes(suite: Suite, who: str) -> bytes:
    return hashlib.sha256(f"flatarch test vector {who} {suite.name}".encode()).digest()


def _ltss(suite: Suite, mine: bytes, theirs: bytes) -> bytes:
    if suite is Suite.P256:
        a = ec.derive_private_key(int.from_bytes(mine, "big"), ec.SECP256R1())
        b = ec.derive_private_key(int.from_bytes(theirs, "big"), ec.SECP256R1())
        return a.exchange(ec.ECDH(), b.public_key())
    xa = x25519.X25519PrivateKey.from_private_bytes(mine)
    xb = x25519.X25519PrivateKey.from_private_bytes(theirs)
    return xa.exchange(xb.public_key())


def compute(suite: Suite) -> list[tuple[str, str]]:
    """Every input and derived value of one suite's vector, in document order."""
    peer_secret = private_bytes(suite, "peer")
    auth_secret = private_bytes(suite, "authenticator")
    peer_ks = KeyStore.from_private_bytes(PEER_NAME, suite, peer_secret)
    auth_ks = KeyStore.from_private_bytes(AUTH_NAME, suite, auth_secret)
    addresses = tuple(to_prefix(a) for a in ADDRESSES)
    auth_key = auth_ks.published_key(AUTH_NONCE_PUBLISHED)

    auth_msg, msk0, ctx0 = build_auth(peer_ks, auth_key, timestamp_us=TIMESTAMP_US,
                                      peer_nonce=PEER_NONCE, auth_nonce=AUTH_NONCE_PUBLISHED,
                                      addresses=addresses, mobility=True)
    msk0_auth, ctx0_auth = auth_ks.derive_msk(peer_ks.published_key(), Role.AUTHENTICATOR,
                                              PEER_NONCE, AUTH_NONCE_PUBLISHED)
    assert (msk0_auth, ctx0_auth) == (msk0, ctx0)
    reply, msk1, ctx1 = build_auth_reply(msk0, ctx0, session_id=SESSION_ID,
                                         peer_nonce=PEER_NONCE, fresh_nonce=FRESH_AUTH_NONCE,
                                         rerouted=addresses, mobility=True)
    _, peer_keys = open_auth_reply(reply, msk0, ctx0, peer_nonce=PEER_NONCE,
                                   peer_name_len=len(PEER_NAME))
    assert peer_keys.msk == msk1
    remsk = build_remsk(peer_keys, Role.PEER, timestamp_us=REMSK_TIMESTAMP_US,
                        nonce=REMSK_PEER_NONCE)
    auth_keys = SessionKeys(SESSION_ID, len(PEER_NAME), msk1, ctx1)
    msg, used_prev = open_remsk(auth_keys, Role.AUTHENTICATOR, remsk)
    ack = answer_remsk(auth_keys, Role.AUTHENTICATOR, msg, used_prev, REMSK_AUTH_NONCE)
    ltss = _ltss(suite, peer_secret, auth_secret)
    assert ltss == _ltss(suite, auth_secret, peer_secret)

    return [
        ("suite", str(int(suite))),
        ("peer_name", PEER_NAME),
        ("auth_name", AUTH_NAME),
        ("peer_private", peer_secret.hex()),
        ("auth_private", auth_secret.hex()),
        ("peer_spki", peer_ks.spki.hex()),
        ("auth_spki", auth_ks.spki.hex()),
        ("peer_nonce", PEER_NONCE.hex()),
        ("auth_nonce_published", AUTH_NONCE_PUBLISHED.hex()),
        ("timestamp_us", str(TIMESTAMP_US)),
        ("addresses", " ".join(ADDRESSES)),
        ("mobility", "1"),
        ("ltss", ltss.hex()),
        ("ctx0", ctx0.hex()),
        ("msk0", msk0.hex()),
        ("k_auth_mac", kdf(msk0, ALG_MAC_P2A, ctx0).hex()),
        ("auth_message", auth_msg.hex()),
        ("fresh_auth_nonce", FRESH_AUTH_NONCE.hex()),
        ("session_id", SESSION_ID.hex()),
        ("ctx1", ctx1.hex()),
        ("msk1", msk1.hex()),
        ("k_reply_mac", kdf(msk1, ALG_MAC_A2P, ctx1).hex()),
        ("auth_reply", reply.hex()),
        ("remsk_timestamp_us", str(REMSK_TIMESTAMP_US)),
        ("remsk_peer_nonce", REMSK_PEER_NONCE.hex()),
        ("k_remsk_mac", kdf(msk1, ALG_MAC_P2A, ctx1).hex()),
        ("remsk", remsk.hex()),
        ("remsk_auth_nonce", REMSK_AUTH_NONCE.hex()),
        ("ctx2", auth_keys.ctx.hex()),
        ("msk2", auth_keys.msk.hex()),
        ("k_ack_mac", kdf(auth_keys.msk, ALG_MAC_A2P, auth_keys.ctx).hex()),
        ("remsk_ack", ack.hex()),
        ("failure", Failure(PEER_NONCE).pack().hex()),
        ("cookie", COOKIE.hex()),
        ("cookie_reply", CookieReply(PEER_NONCE, COOKIE).pack().hex()),
    ]


def render() -> str:
    blocks = []
    for suite in Suite:
        lines = [f"```vector {suite.name.lower()}"]
        lines += [f"{key} = {value}" for key, value in compute(suite)]
        lines.append("```")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


# --- more vectors (section 12.1): each flag, the zero nonce, a re-MSK from the authenticator --

PREVIOUS_NAME = "ar0.example.net"
TAL = ("ar1.example.net", "ar2.example.net")
ZERO_NONCE = bytes(16)
ORIGIN_US = TIMESTAMP_US - 250_000  # flag O: the MN's AUTH a redirect follows, 250 ms before
EXTRA_AUTHS = (  # name, flags (M C P I G O), authenticator nonce, what the case shows
    ("auth_cookie", FLAG_MOBILITY | FLAG_COOKIE, AUTH_NONCE_PUBLISHED),
    ("auth_previous", FLAG_MOBILITY | FLAG_PREVIOUS, AUTH_NONCE_PUBLISHED),
    ("auth_idle", FLAG_MOBILITY | FLAG_IDLE, AUTH_NONCE_PUBLISHED),
    ("auth_page", FLAG_PAGE, AUTH_NONCE_PUBLISHED),
    ("auth_zero_nonce", FLAG_MOBILITY, ZERO_NONCE),
    ("auth_origin", FLAG_MOBILITY | FLAG_PREVIOUS | FLAG_ORIGIN, AUTH_NONCE_PUBLISHED),
)
REPLY_TAL_SESSION_ID = bytes(range(0x11, 0x19))
REPLY_TAL_FRESH_NONCE = bytes(range(0x60, 0x70))
AUTH_REMSK_TIMESTAMP_US = 1_700_000_002_000_000
AUTH_REMSK_AUTH_NONCE = bytes(range(0xD0, 0xE0))  # the authenticator asks
AUTH_REMSK_PEER_NONCE = bytes(range(0xE0, 0xF0))  # the peer answers


def _stores() -> tuple[KeyStore, KeyStore]:
    return (KeyStore.from_private_bytes(PEER_NAME, Suite.P256, private_bytes(Suite.P256, "peer")),
            KeyStore.from_private_bytes(AUTH_NAME, Suite.P256,
                                        private_bytes(Suite.P256, "authenticator")))


def compute_extra() -> dict[str, list[tuple[str, str]]]:
    """The P-256 vectors of section 12.1, on the keys and names of the ``p256`` vector."""
    peer_ks, auth_ks = _stores()
    addresses = (to_prefix(ADDRESSES[0]),)
    out: dict[str, list[tuple[str, str]]] = {}
    opened: dict[str, tuple[bytes, bytes, bytes]] = {}
    for i, (name, flags, auth_nonce) in enumerate(EXTRA_AUTHS):
        peer_nonce = bytes(range(0x10 * (i + 1), 0x10 * (i + 2)))
        timestamp = TIMESTAMP_US + 1 + i
        cookie = COOKIE if flags & FLAG_COOKIE else None
        previous = PREVIOUS_NAME if flags & FLAG_PREVIOUS else None
        origin = ORIGIN_US if flags & FLAG_ORIGIN else None
        data, msk0, ctx0 = build_auth(
            peer_ks, auth_ks.published_key(AUTH_NONCE_PUBLISHED), timestamp_us=timestamp,
            peer_nonce=peer_nonce, auth_nonce=auth_nonce, addresses=addresses,
            mobility=bool(flags & FLAG_MOBILITY), cookie=cookie, previous=previous,
            idle=bool(flags & FLAG_IDLE), page=bool(flags & FLAG_PAGE), origin_us=origin)
        assert data[2] == flags
        opened[name] = (msk0, ctx0, peer_nonce)
        rows = [("base", "p256"), ("flags", f"{flags:02x}"), ("timestamp_us", str(timestamp)),
                ("peer_nonce", peer_nonce.hex()), ("auth_nonce", auth_nonce.hex()),
                ("addresses", ADDRESSES[0])]
        if cookie is not None:
            rows.append(("cookie", cookie.hex()))
        if previous is not None:
            rows.append(("previous", previous))
        if origin is not None:
            rows.append(("origin_us", str(origin)))
        rows += [("ctx0", ctx0.hex()), ("msk0", msk0.hex()),
                 ("k_auth_mac", kdf(msk0, ALG_MAC_P2A, ctx0).hex()), ("auth_message", data.hex())]
        out[name] = rows

    # The reply to the idle AUTH, with the authenticator's Tracking Area List (flag T).
    msk0, ctx0, peer_nonce = opened["auth_idle"]
    reply, msk1, ctx1 = seal_auth_reply(
        msk0, ctx0, session_id=REPLY_TAL_SESSION_ID, peer_nonce=peer_nonce,
        fresh_nonce=REPLY_TAL_FRESH_NONCE, address_block=encode_addresses(addresses),
        mobility=True, tal_block=encode_names(TAL))
    parsed, _ = open_auth_reply(reply, msk0, ctx0, peer_nonce=peer_nonce,
                                peer_name_len=len(PEER_NAME))
    assert parsed.tal == TAL
    out["reply_tal"] = [
        ("base", "p256"), ("answers", "auth_idle"), ("flags", f"{reply[2]:02x}"),
        ("session_id", REPLY_TAL_SESSION_ID.hex()),
        ("fresh_auth_nonce", REPLY_TAL_FRESH_NONCE.hex()), ("addresses", ADDRESSES[0]),
        ("tal", " ".join(TAL)), ("ctx1", ctx1.hex()), ("msk1", msk1.hex()),
        ("k_reply_mac", kdf(msk1, ALG_MAC_A2P, ctx1).hex()), ("auth_reply", reply.hex())]

    # A re-MSK the authenticator starts, on the session of the p256 vector (its MSK1).
    main = dict(compute(Suite.P256))
    msk1, ctx1 = bytes.fromhex(main["msk1"]), bytes.fromhex(main["ctx1"])
    auth_side = SessionKeys(SESSION_ID, len(PEER_NAME), msk1, ctx1)
    peer_side = SessionKeys(SESSION_ID, len(PEER_NAME), msk1, ctx1)
    remsk = build_remsk(auth_side, Role.AUTHENTICATOR, timestamp_us=AUTH_REMSK_TIMESTAMP_US,
                        nonce=AUTH_REMSK_AUTH_NONCE)
    msg, used_prev = open_remsk(peer_side, Role.PEER, remsk)
    ack = answer_remsk(peer_side, Role.PEER, msg, used_prev, AUTH_REMSK_PEER_NONCE)
    open_remsk_ack(auth_side, Role.AUTHENTICATOR, ack, AUTH_REMSK_AUTH_NONCE)
    assert auth_side.msk == peer_side.msk
    out["remsk_by_authenticator"] = [
        ("base", "p256"), ("session", "msk1, ctx1 and session_id of p256"),
        ("remsk_timestamp_us", str(AUTH_REMSK_TIMESTAMP_US)),
        ("remsk_auth_nonce", AUTH_REMSK_AUTH_NONCE.hex()),
        ("k_remsk_mac", kdf(msk1, ALG_MAC_A2P, ctx1).hex()), ("remsk", remsk.hex()),
        ("remsk_peer_nonce", AUTH_REMSK_PEER_NONCE.hex()), ("ctx2", peer_side.ctx.hex()),
        ("msk2", peer_side.msk.hex()),
        ("k_ack_mac", kdf(peer_side.msk, ALG_MAC_P2A, peer_side.ctx).hex()),
        ("remsk_ack", ack.hex())]
    return out


# --- malformed messages (section 12.2): one defect each, and the error it must get -----------

def _at(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value):]


def malformed() -> list[tuple[str, str, bytes]]:
    """(case, error class, datagram): each a vector message with one field made invalid."""
    main = dict(compute(Suite.P256))
    extra = compute_extra()
    auth = bytes.fromhex(main["auth_message"])
    reply = bytes.fromhex(main["auth_reply"])
    tal_reply = bytes.fromhex(dict(extra["reply_tal"])["auth_reply"])
    remsk = bytes.fromhex(main["remsk"])
    ack = bytes.fromhex(main["remsk_ack"])
    failure = bytes.fromhex(main["failure"])
    cookie = bytes.fromhex(main["cookie_reply"])
    addr = 44 + 16 + 16  # the AUTH's address list: after the two 15-octet names
    v6 = addr + 1 + 6  # its second entry, the IPv6 prefix
    tal = len(tal_reply) - 16 - 1 - 2 * 16  # the TAL count octet of the T vector
    cases = [
        ("auth_short", "Truncated", auth[:64]),
        ("auth_long", "Oversized", auth[:-16] + bytes(1127 - len(auth) + 1) + auth[-16:]),
        ("bad_version", "BadVersion", _at(auth, 0, b"\x02")),
        ("undefined_type", "UnknownType", _at(auth, 1, b"\x08")),
        ("auth_undefined_flag", "MalformedMessage", _at(auth, 2, b"\x41")),
        ("auth_origin_without_mobility", "MalformedMessage", _at(auth, 2, b"\x20")),
        ("auth_origin_cut_short", "Truncated", _at(auth, 2, b"\x21")[:addr + 3] + auth[-16:]),
        ("auth_unknown_suite", "UnsupportedSuite", _at(auth, 3, b"\x03")),
        ("auth_name_uppercase", "MalformedMessage", _at(auth, 45, b"M")),
        ("auth_name_trailing_dot", "MalformedMessage", _at(auth, 59, b".")),
        ("auth_name_empty", "MalformedMessage", auth[:44] + b"\x00" + auth[60:]),
        ("auth_name_past_end", "Truncated", _at(auth, 44, b"\xff")),
        ("auth_previous_missing", "Truncated", _at(auth, 2, b"\x05")[:addr] + auth[-16:]),
        ("auth_address_count_17", "MalformedMessage", _at(auth, addr, b"\x11")),
        ("auth_address_count_short", "Truncated", _at(auth, addr, b"\x03")),
        ("auth_address_family_5", "MalformedMessage", _at(auth, addr + 1, b"\x05")),
        ("auth_prefix_length_33", "MalformedMessage", _at(auth, addr + 2, b"\x21")),
        ("auth_host_bits_set", "MalformedMessage", _at(auth, v6 + 1, b"\x20")),
        ("auth_duplicate_address", "MalformedMessage",
         auth[:addr] + b"\x02" + auth[addr + 1:v6] * 2 + auth[-16:]),
        ("auth_trailing_octet", "MalformedMessage", auth[:-16] + b"\x00" + auth[-16:]),
        ("auth_cookie_flag_without_cookie", "Truncated", _at(auth, 2, b"\x03")[:addr] + auth[-16:]),
        ("auth_bad_tag", "BadMac", auth[:-1] + bytes((auth[-1] ^ 1,))),
        ("reply_short", "Truncated", reply[:59]),
        ("reply_long", "Oversized", reply + bytes(2381 - len(reply) + 1)),
        ("reply_undefined_flag", "MalformedMessage", _at(reply, 2, b"\x05")),
        ("reply_tal_empty", "MalformedMessage",
         _at(tal_reply[:tal + 1], tal, b"\x00") + tal_reply[-16:]),
        ("reply_tal_count_9", "MalformedMessage", _at(tal_reply, tal, b"\x09")),
        ("reply_tal_name_past_end", "Truncated", _at(tal_reply, tal + 1, b"\x40")),
        ("reply_bad_tag", "BadMac", reply[:-1] + bytes((reply[-1] ^ 1,))),
        ("remsk_short", "Truncated", remsk[:-1]),
        ("remsk_long", "Oversized", remsk + b"\x00"),
        ("remsk_flag", "MalformedMessage", _at(remsk, 2, b"\x01")),
        ("remsk_bad_tag", "BadMac", remsk[:-1] + bytes((remsk[-1] ^ 1,))),
        ("remsk_ack_flag", "MalformedMessage", _at(ack, 2, b"\x01")),
        ("remsk_ack_bad_tag", "BadMac", ack[:-1] + bytes((ack[-1] ^ 1,))),
        ("failure_long", "Oversized", failure + b"\x00"),
        ("failure_flag", "MalformedMessage", _at(failure, 2, b"\x01")),
        ("cookie_short", "Truncated", cookie[:-1]),
    ]
    for name, error, data in cases:  # the document must never state what the code does not do
        assert _raised(data, main) == error, (name, _raised(data, main), error)
    return cases


def _raised(data: bytes, main: dict[str, str]) -> str:
    """The error class the receiver of ``data`` raises: the parser's, else the tag check's."""
    try:
        msg = unpack_any(data)
    except AuthError as exc:
        return type(exc).__name__
    msk1, ctx1 = bytes.fromhex(main["msk1"]), bytes.fromhex(main["ctx1"])
    peer_keys = SessionKeys(SESSION_ID, len(PEER_NAME), msk1, ctx1)
    try:
        if isinstance(msg, AuthMessage):
            check_auth_mac(bytes.fromhex(main["msk0"]), bytes.fromhex(main["ctx0"]), data)
        elif isinstance(msg, AuthReply):
            open_auth_reply(data, bytes.fromhex(main["msk0"]), bytes.fromhex(main["ctx0"]),
                            peer_nonce=PEER_NONCE, peer_name_len=len(PEER_NAME))
        elif isinstance(msg, Remsk):
            open_remsk(peer_keys, Role.AUTHENTICATOR, data)
        elif isinstance(msg, RemskAck):
            open_remsk_ack(peer_keys, Role.PEER, data, REMSK_PEER_NONCE)
    except AuthError as exc:
        return type(exc).__name__
    return "accepted"


def render_extra() -> str:
    """The fenced blocks of section 12.1."""
    return "\n\n".join("\n".join([f"```vector-extra {name}",
                                    *(f"{k} = {v}" for k, v in rows), "```"])
                         for name, rows in compute_extra().items()) + "\n"


def render_malformed() -> str:
    """The fenced block of section 12.2."""
    return "\n".join(["```vector-malformed",
                      *(f"{name} = {error} {data.hex()}" for name, error, data in malformed()),
                      "```"]) + "\n"


if __name__ == "__main__":
    import sys

    part = sys.argv[1] if len(sys.argv) > 1 else ""
    print({"extra": render_extra, "malformed": render_malformed}.get(part, render)(), end="")
