"""The DHCP client identifier's proof (issue 19 defect 8; docs/addresses.md): an MN's lease is
bound to its authenticated session, not to whatever address and MAC delivered the AUTH.

Both ends hold the session's MSK after one authentication. The MN puts a tag over its
hardware address and lease serial, keyed from that MSK, into its client identifier; the AR
serves a station on the access link only if the tag verifies with the MSK of the session the
name authenticated with there. A captured AUTH replayed from another station yields an
AR-side session whose MSK the replayer does not know, so it can name the MN but never prove
it.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass, field

LABEL_LINK = b"FLATARCH-v1 DHCP link"
PROOF_LEN = 8  # octets of the tag; 16 hex digits in the client identifier


def link_key(msk: bytes) -> bytes:
    """The session's key for client identifier proofs: HMAC-SHA-256(MSK, label)."""
    return hmac.new(msk, LABEL_LINK, hashlib.sha256).digest()


def link_proof(key: bytes, chaddr: bytes, name: str, serial: int) -> bytes:
    """HMAC-SHA-256(key, chaddr || "<name>#<serial>") truncated to 8 octets."""
    text = f"{name.lower().rstrip('.')}#{serial}".encode("ascii")
    return hmac.new(key, chaddr + text, hashlib.sha256).digest()[:PROOF_LEN]


def proves(key: bytes, chaddr: bytes, name: str, serial: int, proof: bytes) -> bool:
    return hmac.compare_digest(proof, link_proof(key, chaddr, name, serial))


@dataclass
class _Authenticated:
    ifindex: int
    session_id: bytes
    at: float


@dataclass
class LinkBindings:
    """The AR's record of who authenticated on which access link, with which session, and
    the one question DHCP asks of it."""

    msk_of: Callable[[bytes], bytes | None]  # a session's current MSK (Authenticator)
    ttl_s: float
    clock: Callable[[], float] = time.time
    _by_mn: dict[str, _Authenticated] = field(default_factory=dict)

    def authenticated(self, mn: str, ifindex: int, session_id: bytes) -> None:
        # The newest authentication wins: a genuine MN that retries after a replayed AUTH of
        # its own took its name here replaces the replayer's session.
        self._by_mn[mn] = _Authenticated(ifindex, session_id, self.clock())

    def identity(self, chaddr: bytes, ifindex: int, name: str, serial: int,
                 proof: bytes | None) -> str | None:
        """``name`` if it authenticated on ``ifindex`` lately and ``proof`` verifies with the
        MSK of that session over ``chaddr`` and ``serial``; else None."""
        rec = self._by_mn.get(name)
        if rec is None or rec.ifindex != ifindex or self.clock() - rec.at >= self.ttl_s:
            return None
        if proof is None:
            return None
        msk = self.msk_of(rec.session_id)
        if msk is None or not proves(link_key(msk), chaddr, name, serial, proof):
            return None
        return name
