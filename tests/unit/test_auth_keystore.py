"""The key store and the cheap guards: both sides derive the same MSK, the LTSS cache is
bounded and dies with a key change, secrets do not leave, replay/rate/cookie checks hold.
"""

from __future__ import annotations

import pickle

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agents.auth import (
    KeyMismatch,
    KeyResolutionError,
    KeyStore,
    PublishedKey,
    Replay,
    Role,
    StaleMessage,
    Suite,
    load_public_key,
    normalize_name,
)
from agents.auth.guards import CookieJar, RateLimiter, ReplayGuard

N_P = b"\x11" * 16
N_A = b"\x22" * 16


@pytest.mark.parametrize("suite", list(Suite))
def test_both_sides_derive_the_same_msk(suite: Suite) -> None:
    peer = KeyStore.generate("mn.example", suite)
    auth = KeyStore.generate("ar.example", suite)
    msk_p, ctx_p = peer.derive_msk(auth.published_key(), Role.PEER, N_P, N_A)
    msk_a, ctx_a = auth.derive_msk(peer.published_key(), Role.AUTHENTICATOR, N_P, N_A)
    assert msk_p == msk_a and ctx_p == ctx_a
    other, _ = auth.derive_msk(peer.published_key(), Role.AUTHENTICATOR, N_P, b"\x23" * 16)
    assert other != msk_a


def test_ltss_cache_hits_and_is_bounded() -> None:
    auth = KeyStore.generate("ar.example", ltss_cache_size=2)
    peers = [KeyStore.generate(f"mn{i}.example") for i in range(3)]
    for p in peers:
        auth.derive_msk(p.published_key(), Role.AUTHENTICATOR, N_P, N_A)
    assert auth.cache_stats()["size"] == 2
    assert auth.cache_stats()["evictions"] == 1
    assert not auth.has_ltss(peers[0].published_key())
    assert auth.has_ltss(peers[2].published_key())
    ecdh = auth.ecdh_count
    auth.derive_msk(peers[2].published_key(), Role.AUTHENTICATOR, N_P, N_A)
    assert auth.ecdh_count == ecdh  # served from the cache
    assert auth.derive_msk_if_cached(peers[0].published_key(), Role.AUTHENTICATOR, N_P,
                                     N_A) is None


def test_key_change_invalidates_ltss() -> None:
    auth = KeyStore.generate("ar.example")
    old = KeyStore.generate("mn.example")
    new = KeyStore.generate("mn.example")
    msk_old, _ = auth.derive_msk(old.published_key(), Role.AUTHENTICATOR, N_P, N_A)
    assert auth.has_ltss(old.published_key())
    assert not auth.has_ltss(new.published_key())
    msk_new, _ = auth.derive_msk(new.published_key(), Role.AUTHENTICATOR, N_P, N_A)
    assert msk_new != msk_old
    assert msk_new == new.derive_msk(auth.published_key(), Role.PEER, N_P, N_A)[0]
    assert not auth.has_ltss(old.published_key())  # the old LTSS is gone, not kept beside
    auth.forget("mn.example")
    assert auth.cache_stats()["size"] == 0


def test_suite_and_key_mismatches() -> None:
    auth = KeyStore.generate("ar.example", Suite.P256)
    x = KeyStore.generate("mn.example", Suite.X25519)
    with pytest.raises(KeyMismatch):
        auth.derive_msk(x.published_key(), Role.AUTHENTICATOR, N_P, N_A)
    mislabelled = PublishedKey("mn.example", Suite.P256, x.spki)
    with pytest.raises(KeyMismatch):
        auth.derive_msk(mislabelled, Role.AUTHENTICATOR, N_P, N_A)
    with pytest.raises(KeyMismatch):
        load_public_key(Suite.P256, b"\x30\x03garbage")
    point = ec.generate_private_key(ec.SECP256R1()).public_key()
    compressed = point.public_bytes(serialization.Encoding.DER,
                                    serialization.PublicFormat.SubjectPublicKeyInfo)
    assert load_public_key(Suite.P256, compressed)  # the canonical, uncompressed form
    compressed_spki = bytes.fromhex("3039301306072a8648ce3d020106082a8648ce3d030107032200") + \
        point.public_bytes(serialization.Encoding.X962,
                           serialization.PublicFormat.CompressedPoint)
    with pytest.raises(KeyMismatch):
        load_public_key(Suite.P256, compressed_spki)


def test_x25519_low_order_point_rejected() -> None:
    auth = KeyStore.generate("ar.example", Suite.X25519)
    zero_point = bytes.fromhex("302a300506032b656e032100") + bytes(32)
    with pytest.raises(KeyMismatch):
        auth.derive_msk(PublishedKey("mn.example", Suite.X25519, zero_point),
                        Role.AUTHENTICATOR, N_P, N_A)


def test_secrets_stay_inside() -> None:
    ks = KeyStore.generate("ar.example")
    with pytest.raises(TypeError):
        pickle.dumps(ks)
    public = {a for a in dir(ks) if not a.startswith("_")}
    assert public == {"name", "suite", "spki", "published_key", "derive_msk",
                      "derive_msk_if_cached", "pair_key", "has_ltss", "forget", "clear",
                      "cache_stats",
                      "generate", "from_private_bytes", "from_pem", "ecdh_count", "hits",
                      "misses", "evictions"}
    assert "ar.example" in repr(ks)


def test_deterministic_construction_and_pem() -> None:
    secret = bytes(31) + b"\x07"
    a = KeyStore.from_private_bytes("ar.example", Suite.P256, secret)
    b = KeyStore.from_private_bytes("ar.example", Suite.P256, secret)
    assert a.spki == b.spki
    with pytest.raises(ValueError):
        KeyStore.from_private_bytes("ar.example", Suite.P256, bytes(32))
    pem = ec.derive_private_key(7, ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    assert KeyStore.from_pem("ar.example", pem).spki == a.spki


def test_names_and_published_keys() -> None:
    assert normalize_name("AR1.Example.NET.") == "ar1.example.net"
    with pytest.raises(ValueError):
        normalize_name("bad_name.example")
    with pytest.raises(KeyResolutionError):
        PublishedKey("Upper.example", Suite.P256, b"")
    with pytest.raises(KeyResolutionError):
        PublishedKey("ok.example", Suite.P256, b"", nonce=b"short")
    key = PublishedKey("ok.example", Suite.P256, b"", nonce=b"\x01" * 16, nonce_expires=100)
    assert key.usable_nonce(99.0) == b"\x01" * 16
    assert key.usable_nonce(100.0) is None


def test_replay_guard_window_and_high_water() -> None:
    guard = ReplayGuard(window_s=30.0, capacity=2)
    now = 1000.0
    ts = int(now * 1e6)
    guard.check("a", ts, now)
    guard.commit("a", ts, now)
    with pytest.raises(Replay):
        guard.check("a", ts, now)  # replay inside the window
    with pytest.raises(StaleMessage):
        guard.check("a", ts, now + 31)  # the same message after the window
    with pytest.raises(StaleMessage):
        guard.check("b", ts + 31_000_000, now)  # from too far in the future
    guard.commit("a", ts + 1, now)
    guard.commit("b", ts + 5, now)
    guard.commit("c", ts + 6, now)  # evicts "a" (capacity 2)
    assert len(guard) == 2
    with pytest.raises(Replay):
        guard.check("a", ts + 1, now)  # eviction does not re-open the replay
    guard.check("a", ts + 7, now)


def test_rate_limiter() -> None:
    limiter = RateLimiter(rate=10.0, burst=3.0)
    assert [limiter.allow("192.0.2.1", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("192.0.2.2", 0.0)  # per source
    assert limiter.allow("192.0.2.1", 0.1)  # refilled one token


def test_cookie_jar() -> None:
    jar = CookieJar(rotate_s=120.0)
    cookie = jar.make("192.0.2.1", 4000, 10.0)
    assert jar.check(cookie, "192.0.2.1", 4000, 10.0)
    assert not jar.check(cookie, "192.0.2.1", 4001, 10.0)
    assert not jar.check(cookie, "192.0.2.2", 4000, 10.0)
    assert jar.check(cookie, "192.0.2.1", 4000, 130.0)  # previous secret still valid
    assert not jar.check(cookie, "192.0.2.1", 4000, 250.0)
    v6 = jar.make("2001:db8::1", 4000, 10.0)
    assert jar.check(v6, "2001:db8::1", 4000, 10.0)
