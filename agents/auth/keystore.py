"""The key store: the draft's secure environment for private keys and LTSSs.

Callers hand in the other side's published key and the session nonces and get an MSK back;
the private key and the long-term shared secrets (and their cache) never leave this object.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from typing import NoReturn

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519

from .cache import LruCache
from .errors import KeyMismatch
from .kdf import ALG_MSK, NONCE_LEN, kdf, supp_pub_info
from .keys import PublicKey, PublishedKey, Suite, load_public_key, normalize_name, spki_of

_ECDH = ec.ECDH()
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

_PrivateKey = ec.EllipticCurvePrivateKey | x25519.X25519PrivateKey


class Role(enum.Enum):
    """Which party of the KDF the key store's owner is."""

    PEER = "peer"
    AUTHENTICATOR = "authenticator"


class KeyStore:
    """Holds one identity's private key and its LTSS cache; derives MSKs.

    The LTSS cache maps a remote name to (its SPKI, the LTSS): a lookup with a different SPKI
    misses and replaces the entry, so a changed published key can never reuse an old LTSS.
    """

    __slots__ = ("_name", "_prefix", "_supp", "_suite", "__private", "_spki", "_ltss",
                 "_ltss_capacity", "_parsed", "ecdh_count", "hits", "misses", "evictions")

    def __init__(self, name: str, private: _PrivateKey, *, ltss_cache_size: int = 4096,
                 parsed_key_cache_size: int = 4096) -> None:
        self._name = normalize_name(name)
        raw = self._name.encode("ascii")
        self._prefix = bytes((len(raw),)) + raw
        if isinstance(private, x25519.X25519PrivateKey):
            self._suite = Suite.X25519
        elif isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(
            private.curve, ec.SECP256R1
        ):
            self._suite = Suite.P256
        else:
            raise TypeError("private key must be P-256 or X25519")
        self.__private = private
        self._spki = spki_of(private.public_key())
        self._supp = supp_pub_info(self._suite)
        if ltss_cache_size < 0:
            raise ValueError("ltss_cache_size must be >= 0")
        # name -> (SPKI, LTSS, encoded name); an OrderedDict used as an LRU, inline for speed.
        self._ltss: OrderedDict[str, tuple[bytes, bytes, bytes]] = OrderedDict()
        self._ltss_capacity = ltss_cache_size
        self.hits = self.misses = self.evictions = 0
        # Parsing and validating a point costs a sizeable fraction of an ECDH; this caches
        # public-key objects, not secrets.
        self._parsed: LruCache[bytes, PublicKey] = LruCache(parsed_key_cache_size)
        self.ecdh_count = 0

    @classmethod
    def generate(cls, name: str, suite: Suite = Suite.P256, **kwargs: int) -> KeyStore:
        private: _PrivateKey
        if suite is Suite.P256:
            private = ec.generate_private_key(ec.SECP256R1())
        else:
            private = x25519.X25519PrivateKey.generate()
        return cls(name, private, **kwargs)

    @classmethod
    def from_private_bytes(cls, name: str, suite: Suite, secret: bytes,
                           **kwargs: int) -> KeyStore:
        """P-256: 32-octet big-endian scalar; X25519: the 32-octet RFC 7748 private key."""
        if len(secret) != 32:
            raise ValueError("private key must be 32 octets")
        private: _PrivateKey
        if suite is Suite.P256:
            scalar = int.from_bytes(secret, "big")
            if not 0 < scalar < _P256_ORDER:
                raise ValueError("P-256 scalar out of range")
            private = ec.derive_private_key(scalar, ec.SECP256R1())
        else:
            private = x25519.X25519PrivateKey.from_private_bytes(secret)
        return cls(name, private, **kwargs)

    @classmethod
    def from_pem(cls, name: str, pem: bytes, **kwargs: int) -> KeyStore:
        """Load an unencrypted PKCS#8 PEM private key (P-256 or X25519)."""
        try:
            private = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise ValueError(f"cannot load private key: {exc}") from None
        if not isinstance(private, ec.EllipticCurvePrivateKey | x25519.X25519PrivateKey):
            raise ValueError("private key must be P-256 or X25519")
        return cls(name, private, **kwargs)

    @property
    def name(self) -> str:
        return self._name

    @property
    def suite(self) -> Suite:
        return self._suite

    @property
    def spki(self) -> bytes:
        return self._spki

    def published_key(self, nonce: bytes | None = None,
                      nonce_expires: int | None = None) -> PublishedKey:
        """The record the DNS should publish for this identity."""
        return PublishedKey(self._name, self._suite, self._spki, nonce, nonce_expires)

    def _ltss_entry(self, remote: PublishedKey) -> tuple[bytes, bytes, bytes]:
        """(SPKI, LTSS, encoded remote name) for ``remote``, running the ECDH on a miss."""
        cache = self._ltss
        entry = cache.get(remote.name)
        if entry is not None:
            if entry[0] == remote.spki:
                cache.move_to_end(remote.name)
                self.hits += 1
                return entry
            # The name now publishes another key: the old LTSS is dead.
            del cache[remote.name]
        self.misses += 1
        if remote.suite is not self._suite:
            raise KeyMismatch(
                f"{remote.name} publishes a {remote.suite.name} key; this identity uses "
                f"{self._suite.name}"
            )
        public = self._parsed.get(remote.spki)
        if public is None:
            public = load_public_key(self._suite, remote.spki)
            self._parsed.put(remote.spki, public)
        private = self.__private
        self.ecdh_count += 1
        try:
            if isinstance(private, x25519.X25519PrivateKey):
                assert isinstance(public, x25519.X25519PublicKey)
                z = private.exchange(public)
            else:
                assert isinstance(public, ec.EllipticCurvePublicKey)
                z = private.exchange(_ECDH, public)
        except ValueError:
            # X25519 refuses an all-zero result (a low-order public key).
            raise KeyMismatch(f"ECDH with the key of {remote.name} failed") from None
        raw = remote.name.encode("ascii")
        entry = (remote.spki, z, bytes((len(raw),)) + raw)
        if self._ltss_capacity:
            cache[remote.name] = entry
            if len(cache) > self._ltss_capacity:
                cache.popitem(last=False)
                self.evictions += 1
        return entry

    def _msk(self, entry: tuple[bytes, bytes, bytes], role: Role, peer_nonce: bytes,
             auth_nonce: bytes) -> tuple[bytes, bytes]:
        if len(peer_nonce) != NONCE_LEN or len(auth_nonce) != NONCE_LEN:
            raise ValueError(f"nonces must be {NONCE_LEN} octets")
        if role is Role.AUTHENTICATOR:
            ctx = entry[2] + peer_nonce + self._prefix + auth_nonce + self._supp
        else:
            ctx = self._prefix + peer_nonce + entry[2] + auth_nonce + self._supp
        return kdf(entry[1], ALG_MSK, ctx), ctx

    def derive_msk(self, remote: PublishedKey, role: Role, peer_nonce: bytes,
                   auth_nonce: bytes) -> tuple[bytes, bytes]:
        """MSK = KDF(LTSS, "FLATARCH-v1 MSK", context); ECDH only when no LTSS is cached.

        Returns the MSK and the KDF context (names, nonces, suite: public data) so that the
        caller can derive the MAC key from the MSK with the same context.
        """
        return self._msk(self._ltss_entry(remote), role, peer_nonce, auth_nonce)

    def derive_msk_if_cached(self, remote: PublishedKey, role: Role, peer_nonce: bytes,
                             auth_nonce: bytes) -> tuple[bytes, bytes] | None:
        """As ``derive_msk`` but None instead of an ECDH when no LTSS is cached."""
        cache = self._ltss
        entry = cache.get(remote.name)
        if entry is None or entry[0] != remote.spki:
            return None
        cache.move_to_end(remote.name)
        self.hits += 1
        return self._msk(entry, role, peer_nonce, auth_nonce)

    def pair_key(self, remote: PublishedKey, alg_id: bytes) -> bytes:
        """A long-term key only this identity and ``remote`` can derive, the same at both
        ends: KDF(LTSS, label, ctx) with the two names in sorted order and no nonces (used by
        agents/relayauth.py; docs/protocol.md §14.7)."""
        entry = self._ltss_entry(remote)
        low, high = sorted((self._prefix, entry[2]), key=lambda p: p[1:])
        return kdf(entry[1], alg_id, low + high + self._supp)

    def has_ltss(self, remote: PublishedKey) -> bool:
        """True when an MSK for ``remote`` can be derived without an ECDH."""
        entry = self._ltss.get(remote.name)
        return entry is not None and entry[0] == remote.spki

    def forget(self, name: str) -> None:
        """Drop the LTSS of ``name`` (its published key changed or was withdrawn)."""
        self._ltss.pop(name, None)

    def clear(self) -> None:
        self._ltss.clear()

    def cache_stats(self) -> dict[str, int]:
        return {"size": len(self._ltss), "capacity": self._ltss_capacity, "hits": self.hits,
                "misses": self.misses, "evictions": self.evictions, "ecdh": self.ecdh_count}

    def __repr__(self) -> str:
        return f"KeyStore({self._name!r}, {self._suite.name})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a KeyStore cannot be pickled; its secrets stay in this process")
