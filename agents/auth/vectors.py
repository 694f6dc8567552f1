"""Test vectors for docs/protocol.md: fixed keys and nonces -> LTSS -> MSK -> message bytes.

``python -m agents.auth.vectors`` prints the fenced blocks pasted into the document; the unit
tests parse them back out of the document and re-derive every value.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric import ec, x25519

from .kdf import ALG_MAC_A2P, ALG_MAC_P2A, kdf
from .keys import Suite
from .keystore import KeyStore, Role
from .messages import CookieReply, Failure, to_prefix
from .protocol import (
    SessionKeys,
    answer_remsk,
    build_auth,
    build_auth_reply,
    build_remsk,
    open_auth_reply,
    open_remsk,
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


if __name__ == "__main__":
    print(render(), end="")
