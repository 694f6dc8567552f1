"""Public keys as published in the DNS, cipher suites, and the key-resolution interface.

A ``KeyResolver`` maps a DNS name to its ``PublishedKey``; the DNSSEC plane plugs a real
resolver in, tests use ``StaticDirectory``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519

from .errors import KeyMismatch, KeyResolutionError

NONCE_LEN = 16
MAX_NAME_LEN = 253

# LDH host names only, already lowercase and without the trailing dot: the wire and the KDF
# use the name bytes verbatim, so only one spelling of a name may ever be accepted.
_LABEL = rb"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_NAME_RE = re.compile(rb"(?:" + _LABEL + rb"\.)*" + _LABEL)


class Suite(enum.IntEnum):
    """Cipher suite: static-static ECDH group; the KDF and MAC are SHA-256 in both."""

    P256 = 1
    X25519 = 2


PublicKey = ec.EllipticCurvePublicKey | x25519.X25519PublicKey


def is_canonical_name(raw: bytes) -> bool:
    """True when ``raw`` is a lowercase LDH DNS name of 1..253 octets without trailing dot."""
    return 0 < len(raw) <= MAX_NAME_LEN and _NAME_RE.fullmatch(raw) is not None


def normalize_name(name: str) -> str:
    """Lowercase ``name`` and drop one trailing dot; raise ValueError if it is not a host name."""
    canon = name.lower()
    if canon.endswith("."):
        canon = canon[:-1]
    try:
        raw = canon.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"not an ASCII host name: {name!r}") from None
    if not is_canonical_name(raw):
        raise ValueError(f"not a valid host name: {name!r}")
    return canon


@dataclass(frozen=True)
class PublishedKey:
    """A name's public key as the DNS publishes it (TLSA 3 1 0 carries ``spki``)."""

    name: str
    suite: Suite
    spki: bytes
    nonce: bytes | None = None
    nonce_expires: int | None = None

    def __post_init__(self) -> None:
        if not is_canonical_name(self.name.encode("ascii", "replace")):
            raise KeyResolutionError(f"published key has a non-canonical name {self.name!r}")
        if not isinstance(self.suite, Suite):
            try:
                object.__setattr__(self, "suite", Suite(self.suite))
            except ValueError:
                raise KeyResolutionError(f"unknown suite {self.suite!r} for {self.name}") from None
        if self.nonce is not None and len(self.nonce) != NONCE_LEN:
            raise KeyResolutionError(
                f"published nonce for {self.name} has {len(self.nonce)} octets, not {NONCE_LEN}"
            )

    def usable_nonce(self, now: float) -> bytes | None:
        """The published authenticator nonce, or None when absent or expired at ``now``."""
        if self.nonce is None:
            return None
        if self.nonce_expires is not None and now >= self.nonce_expires:
            return None
        return self.nonce


@runtime_checkable
class KeyResolver(Protocol):
    """Maps a DNS name to its validated published key."""

    async def resolve(self, name: str) -> PublishedKey:
        """Return the key of ``name``; raise KeyResolutionError when it has no valid key."""
        ...


@runtime_checkable
class KeyChangeSource(Protocol):
    """A resolver that can tell its users that the record of a name changed."""

    def subscribe(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(name)`` whenever the published key of ``name`` changes."""
        ...


class StaticDirectory:
    """An in-memory ``KeyResolver`` for tests, benchmarks and labs without DNSSEC."""

    def __init__(self, keys: Iterable[PublishedKey] = ()) -> None:
        self._keys: dict[str, PublishedKey] = {}
        self._listeners: list[Callable[[str], None]] = []
        for key in keys:
            self._keys[key.name] = key

    def publish(self, key: PublishedKey) -> None:
        """Add or replace the record of ``key.name``; listeners hear about any change."""
        old = self._keys.get(key.name)
        self._keys[key.name] = key
        if old is not None and old != key:
            self._notify(key.name)

    def remove(self, name: str) -> None:
        if self._keys.pop(name, None) is not None:
            self._notify(name)

    def subscribe(self, callback: Callable[[str], None]) -> None:
        self._listeners.append(callback)

    def _notify(self, name: str) -> None:
        for callback in self._listeners:
            callback(name)

    async def resolve(self, name: str) -> PublishedKey:
        try:
            return self._keys[name]
        except KeyError:
            raise KeyResolutionError(f"no published key for {name!r}") from None


def spki_of(public: PublicKey) -> bytes:
    """DER SubjectPublicKeyInfo of a public key (uncompressed point for P-256)."""
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def parse_spki(spki: bytes) -> object:
    """Parse DER SPKI octets from the network; any failure is a KeyMismatch, never a crash.

    ``cryptography`` raises UnsupportedAlgorithm for unknown key types, unknown curve OIDs and
    custom explicit curve parameters, besides ValueError for bad DER; a resolver may serve any
    of these, so every failure of the parser must become the typed error.
    """
    try:
        return serialization.load_der_public_key(spki)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyMismatch(f"published SPKI does not parse: {exc}") from None
    except Exception as exc:  # the parser is a C/Rust binding: no other failure may escape
        raise KeyMismatch(f"published SPKI does not parse: {type(exc).__name__}") from None


def suite_of_spki(spki: bytes) -> Suite:
    """The suite a published SPKI belongs to, by its algorithm; KeyMismatch for any other."""
    public = parse_spki(spki)
    if isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, ec.SECP256R1):
        return Suite.P256
    if isinstance(public, x25519.X25519PublicKey):
        return Suite.X25519
    raise KeyMismatch(f"key type {type(public).__name__} is not a flatarch suite")


def load_public_key(suite: Suite, spki: bytes) -> PublicKey:
    """Parse and validate a published SPKI for ``suite``; raise KeyMismatch if it does not fit.

    The SPKI must be the canonical DER encoding, so that one key has exactly one spelling and
    a cache keyed by SPKI bytes cannot be fooled by re-encodings.
    """
    public = parse_spki(spki)
    if suite is Suite.P256:
        if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(
            public.curve, ec.SECP256R1
        ):
            raise KeyMismatch("published key is not a P-256 key")
    elif suite is Suite.X25519:
        if not isinstance(public, x25519.X25519PublicKey):
            raise KeyMismatch("published key is not an X25519 key")
    else:  # pragma: no cover - Suite is closed
        raise KeyMismatch(f"unknown suite {suite!r}")
    try:
        canonical = spki_of(public)
    except Exception as exc:  # re-encoding a key the parser accepted must not crash either
        raise KeyMismatch(f"published SPKI does not re-encode: {type(exc).__name__}") from None
    if canonical != spki:
        raise KeyMismatch("published SPKI is not in canonical DER form")
    return public
