"""Key derivation (NIST SP 800-56A single-step KDF, SHA-256, one block) and the message MAC.

The KDF is computed with hashlib because one block of ConcatKDFHash is exactly
SHA-256(counter || Z || OtherInfo); tests prove it byte-identical to ``cryptography``'s.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash

KEY_LEN = 32
TAG_LEN = 16
NONCE_LEN = 16

LABEL_MSK = b"FLATARCH-v1 MSK"
LABEL_REMSK = b"FLATARCH-v1 re-MSK"
LABEL_MAC_P2A = b"FLATARCH-v1 MAC peer->auth"
LABEL_MAC_A2P = b"FLATARCH-v1 MAC auth->peer"
LABELS = (LABEL_MSK, LABEL_REMSK, LABEL_MAC_P2A, LABEL_MAC_A2P)

_COUNTER_1 = b"\x00\x00\x00\x01"
# SuppPubInfo ends with the output length in bits; one SHA-256 block is 256 bits.
_KEYDATALEN_BITS = (KEY_LEN * 8).to_bytes(2, "big")


def algorithm_id(label: bytes) -> bytes:
    """The AlgorithmID field of OtherInfo: one length octet, then the label."""
    if not 0 < len(label) < 256:
        raise ValueError("label must be 1..255 octets")
    return bytes([len(label)]) + label


ALG_MSK = algorithm_id(LABEL_MSK)
ALG_REMSK = algorithm_id(LABEL_REMSK)
ALG_MAC_P2A = algorithm_id(LABEL_MAC_P2A)
ALG_MAC_A2P = algorithm_id(LABEL_MAC_A2P)


def supp_pub_info(suite: int) -> bytes:
    """SuppPubInfo: the suite octet, then the derived length in bits (two octets)."""
    return bytes((suite,)) + _KEYDATALEN_BITS


def context(peer_name: bytes, peer_nonce: bytes, auth_name: bytes, auth_nonce: bytes,
            suite: int) -> bytes:
    """PartyUInfo || PartyVInfo || SuppPubInfo: everything of OtherInfo except AlgorithmID."""
    return b"".join((
        bytes((len(peer_name),)), peer_name, peer_nonce,
        bytes((len(auth_name),)), auth_name, auth_nonce,
        bytes((suite,)), _KEYDATALEN_BITS,
    ))


def with_auth_nonce(ctx: bytes, auth_nonce: bytes) -> bytes:
    """The same context with another authenticator nonce (it sits just before SuppPubInfo)."""
    return ctx[:-(NONCE_LEN + 3)] + auth_nonce + ctx[-3:]


def with_nonces(ctx: bytes, peer_name_len: int, peer_nonce: bytes, auth_nonce: bytes) -> bytes:
    """The same context with both nonces replaced."""
    cut = 1 + peer_name_len
    return ctx[:cut] + peer_nonce + ctx[cut + NONCE_LEN:-(NONCE_LEN + 3)] + auth_nonce + ctx[-3:]


def kdf(z: bytes, alg_id: bytes, ctx: bytes) -> bytes:
    """One-block single-step KDF: SHA-256(00000001 || Z || AlgorithmID || ctx)."""
    return hashlib.sha256(_COUNTER_1 + z + alg_id + ctx).digest()


def reference_kdf(z: bytes, label: bytes, ctx: bytes) -> bytes:
    """The same KDF through ``cryptography``'s ConcatKDFHash (slow; for tests and docs)."""
    return ConcatKDFHash(
        algorithm=hashes.SHA256(), length=KEY_LEN, otherinfo=algorithm_id(label) + ctx
    ).derive(z)


_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))
_BLOCK = 64


def tag(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA-256(key, data) truncated to its first 16 octets.

    Written on hashlib directly: ``hmac.digest`` costs about a third more per call, and the
    keys here are always 32 octets, so the RFC 2104 key padding is a plain zero fill.
    """
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\x00")
    inner = hashlib.sha256(key.translate(_IPAD) + data).digest()
    return hashlib.sha256(key.translate(_OPAD) + inner).digest()[:TAG_LEN]
