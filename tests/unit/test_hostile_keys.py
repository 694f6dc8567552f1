"""Published keys a hostile or broken resolver may serve (issue 19, defect 1): every one fails as
a typed KeyMismatch/KeyResolutionError on the authenticator, the DNS plane and the peer, is
never cached, and is logged as a throttled rejection rather than an internal-error traceback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

import pytest

from agents import dns as adns
from agents.auth import (
    Authenticator,
    AuthError,
    KeyMismatch,
    KeyResolutionError,
    KeyStore,
    Limits,
    Peer,
    PublishedKey,
    StaticDirectory,
    Suite,
)
from agents.auth.keys import load_public_key, parse_spki, suite_of_spki
from agents.auth.messages import MsgType
from agents.auth.protocol import build_auth
from tests.unit.test_dns_agent import KEY, FakeServer, answer, resolver

# P-256 SPKI of the scalar 5, canonical; the hostile ones below are built around it.
GOOD_P256 = bytes.fromhex(
    "3059301306072a8648ce3d020106082a8648ce3d0301070342000451590b7a515140d2d784c85608668fdfef8c"
    "82fd1f5be52421554a0dc3d033ede0c17da8904a727d8ae1bf36bf8a79260d012f00d4d80888d1d0bb44fda16d"
    "a4")
# P-256 with explicit curve parameters: parses (it maps to secp256r1) but is not canonical.
EXPLICIT_P256 = bytes.fromhex(
    "3082014b3082010306072a8648ce3d02013081f7020101302c06072a8648ce3d0101022100ffffffff000000010"
    "00000000000000000000000ffffffffffffffffffffffff305b0420ffffffff0000000100000000000000000000"
    "0000fffffffffffffffffffffffc04205ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d"
    "2604b031500c49d360886e704936a6678e1139d26b7819f7e900441046b17d1f2e12c4247f8bce6e563a440f277"
    "037d812deb33a0f4a13945d898c2964fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf5"
    "1f5022100ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551020101034200049b48"
    "b231ea483e211faa0300de1e5b25c5cc2e0dc8c6e27ac8263d112f4243678e6d8be8b4f8151a42725e712d2ab51"
    "41b370552c054366a775e87bf97b47791")
_B = EXPLICIT_P256.find(bytes.fromhex("5ac635d8"))

HOSTILE = {
    # The minimal case: algorithm OID 1.2.3.4, empty key (UnsupportedAlgorithm).
    "unknown_key_type": bytes.fromhex("300a300506032a0304030100"),
    "unknown_curve_oid": GOOD_P256.replace(bytes.fromhex("06082a8648ce3d030107"),
                                           bytes.fromhex("06082a03040506070801")),
    "explicit_p256": EXPLICIT_P256,
    # Explicit parameters of a custom curve (b changed): UnsupportedAlgorithm.
    "explicit_custom_curve": EXPLICIT_P256[:_B + 31] + bytes((EXPLICIT_P256[_B + 31] ^ 1,))
    + EXPLICIT_P256[_B + 32:],
    "point_not_on_curve": GOOD_P256[:-1] + bytes((GOOD_P256[-1] ^ 1,)),
    "truncated": GOOD_P256[:40],
    "empty": b"",
    "trailing_octet": GOOD_P256 + b"\x00",
}

AR = "ar.hostile.test"
MN = "mn.hostile.test"


def _secret(label: str) -> bytes:
    import hashlib

    return hashlib.sha256(label.encode()).digest()


@pytest.mark.parametrize("name", sorted(HOSTILE))
@pytest.mark.parametrize("suite", list(Suite))
def test_hostile_spki_is_a_key_mismatch(name: str, suite: Suite) -> None:
    spki = HOSTILE[name]
    with pytest.raises(KeyMismatch):
        load_public_key(suite, spki)
    with pytest.raises(adns.DnsRecordError, match="not a DER SubjectPublicKeyInfo"):
        adns.suite_of_spki(spki)


def test_parse_spki_only_typed_errors() -> None:
    assert suite_of_spki(GOOD_P256) is Suite.P256
    with pytest.raises(KeyMismatch, match="Unknown key type"):
        parse_spki(HOSTILE["unknown_key_type"])
    with pytest.raises(KeyMismatch, match="not supported"):
        parse_spki(HOSTILE["unknown_curve_oid"])


@pytest.mark.parametrize("name", ["unknown_key_type", "unknown_curve_oid",
                                  "explicit_custom_curve", "explicit_p256"])
def test_dnssec_resolver_refuses_hostile_tlsa(name: str) -> None:
    server = FakeServer()
    try:
        server.handler = answer({KEY: [f"3 1 0 {HOSTILE[name].hex()}"]})
        keys = adns.DnssecKeyResolver(resolver(server))
        with pytest.raises(KeyResolutionError, match="not a DER"):
            asyncio.run(keys.resolve("ar1.isp.test"))
    finally:
        server.close()


def _auth_for(peer_ks: KeyStore, ar_key: PublishedKey) -> bytes:
    data, _, _ = build_auth(peer_ks, ar_key, timestamp_us=int(time.time() * 1e6),
                            peer_nonce=os.urandom(16), auth_nonce=bytes(16), addresses=(),
                            mobility=False)
    return data


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_authenticator_rejects_without_caching_or_traceback(
        name: str, caplog: pytest.LogCaptureFixture) -> None:
    ar_ks = KeyStore.from_private_bytes(AR, Suite.P256, _secret("ar"))
    peer_ks = KeyStore.from_private_bytes(MN, Suite.P256, _secret("mn"))
    directory = StaticDirectory([PublishedKey(MN, Suite.P256, HOSTILE[name])])
    auth = Authenticator(AR, ar_ks, directory, lambda result: (),
                         limits=Limits(cookie="never", nonce_lifetime_s=None))
    ar_key = auth.published_key()
    with caplog.at_level(logging.WARNING, logger="flatarch.auth"):
        for _ in range(3):
            reply = asyncio.run(auth.handle(_auth_for(peer_ks, ar_key), ("192.0.2.9", 4000)))
            assert reply is not None and reply[1] == MsgType.FAILURE
    assert auth.stats["KeyMismatch"] == 3 and auth.stats["InternalError"] == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    # Nothing was cached: once the name publishes its real key, the next AUTH succeeds.
    directory.publish(peer_ks.published_key())
    reply = asyncio.run(auth.handle(_auth_for(peer_ks, ar_key), ("192.0.2.9", 4000)))
    assert reply is not None and reply[1] == MsgType.AUTH_REPLY


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_peer_gets_a_typed_error(name: str) -> None:
    """The MN agent catches AuthError: a hostile AR key must surface as one, before sending."""
    peer_ks = KeyStore.from_private_bytes(MN, Suite.P256, _secret("mn"))
    peer = Peer(peer_ks, StaticDirectory([PublishedKey(AR, Suite.P256, HOSTILE[name])]))
    with pytest.raises(AuthError) as exc:
        asyncio.run(peer.authenticate(("127.0.0.1", 9), AR, timeout=0.2, retries=0))
    assert isinstance(exc.value, KeyMismatch | KeyResolutionError)
