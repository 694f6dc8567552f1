"""Authenticated DHCP relay between ARs (issue 19 defect 3; docs/protocol.md §14.7): only a
known AR may relay, and every relayed message carries RFC 4030's relay agent authentication
sub-option (8) with a replay counter and HMAC-SHA-256 under a key the two ARs share.

The key comes from the ARs' existing AR-to-AR trust: the static ECDH LTSS of their published
keys, through the KDF with its own label (``KeyStore.pair_key``). Nothing here trusts giaddr,
the UDP source or option 82 until the authenticator has been checked.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address

from .auth.kdf import algorithm_id
from .dhcp import (
    BOOTREQUEST,
    FIXED,
    MAGIC,
    OPT_END,
    OPT_PAD,
    OPT_RELAY_AGENT,
    RAI_AUTH,
    DhcpMessage,
    RelayAgentInfo,
)

LABEL_RELAY = b"FLATARCH-v1 DHCP relay"
ALG_RELAY = algorithm_id(LABEL_RELAY)
# RFC 4030 registers algorithm 1 (HMAC-SHA1) only; 2 is this lab's HMAC-SHA-256.
ALGORITHM_HMAC_SHA256 = 2
RDM_COUNTER = 0  # RFC 4030 replay detection method 0: a monotonically increasing counter
MAC_LEN = 32
_HEAD = struct.Struct("!BBQ")  # algorithm, RDM, replay counter
AUTH_LEN = _HEAD.size + MAC_LEN  # sub-option 8's value: 42 octets
WINDOW_S = 30.0  # a counter (ns since the epoch) this far from our clock is refused
SEEN_MAX = 4096  # counters remembered per peer inside the window


class RelayAuthError(Exception):
    """A relayed message that is not from an AR we trust; ``reason`` names the counter."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def auth_offset(data: bytes) -> int:
    """Where sub-option 8's value starts in ``data``: option 82 must be the message's last
    option, present once, and sub-option 8 its last sub-option, present once, 42 octets."""
    off = FIXED.size
    if len(data) < off + len(MAGIC) + 1 or data[off:off + 4] != MAGIC:
        raise RelayAuthError("malformed", "not a DHCP message")
    off += 4
    found: int | None = None
    while True:
        if off >= len(data):
            raise RelayAuthError("malformed", "no end option")
        code = data[off]
        if code == OPT_PAD:
            off += 1
            continue
        if code == OPT_END:
            break
        if off + 2 > len(data) or off + 2 + data[off + 1] > len(data):
            raise RelayAuthError("malformed", f"option {code} runs past the message")
        length = data[off + 1]
        if found is not None:
            raise RelayAuthError("malformed", "option 82 is not the last option")
        if code == OPT_RELAY_AGENT:
            found = _auth_in_option(data, off + 2, off + 2 + length)
        off += 2 + length
    if found is None:
        raise RelayAuthError("unsigned", "no relay agent information")
    if any(data[off + 1:]):
        raise RelayAuthError("malformed", "octets other than padding after the end option")
    return found


def _auth_in_option(data: bytes, start: int, end: int) -> int:
    off, found = start, None
    while off < end:
        if off + 2 > end or off + 2 + data[off + 1] > end:
            raise RelayAuthError("malformed", f"sub-option {data[off]} runs past option 82")
        code, length = data[off], data[off + 1]
        if found is not None:
            raise RelayAuthError("malformed", "the authentication sub-option is not the last")
        if code == RAI_AUTH:
            if length != AUTH_LEN:
                raise RelayAuthError("malformed", f"authentication sub-option of {length} "
                                                  f"octets, not {AUTH_LEN}")
            found = off + 2
        off += 2 + length
    if found is None:
        raise RelayAuthError("unsigned", "no authentication sub-option")
    return found


def compute_mac(key: bytes, data: bytes, value_at: int) -> bytes:
    """HMAC-SHA-256 over the whole datagram with the 32-octet MAC field zeroed."""
    mac_at = value_at + _HEAD.size
    return hmac.new(key, data[:mac_at] + bytes(MAC_LEN) + data[mac_at + MAC_LEN:],
                    hashlib.sha256).digest()


@dataclass
class RelayAuth:
    """One AR's side: signs what it relays or answers to another AR, checks what it gets."""

    me: IPv4Address
    peers: Mapping[IPv4Address, str]  # the other ARs' loopbacks -> their DNS names
    key_of: Callable[[str], bytes | None]  # the pair key shared with that AR, once derived
    clock: Callable[[], float] = time.time
    window_s: float = WINDOW_S
    _last: int = 0
    _seen: dict[IPv4Address, tuple[deque[int], set[int]]] = field(default_factory=dict)

    def _key(self, peer: IPv4Address) -> bytes:
        name = self.peers.get(peer)
        if name is None or peer == self.me:
            raise RelayAuthError("not_an_ar", f"{peer} is not another AR's loopback")
        key = self.key_of(name)
        if key is None:
            raise RelayAuthError("no_key", f"no key shared with {name} yet")
        return key

    def sign(self, msg: DhcpMessage, peer: IPv4Address) -> bytes:
        """``msg`` packed for ``peer`` with a fresh counter and its authenticator."""
        key = self._key(peer)
        # Nanoseconds of the clock, and never twice the same: a peer remembers counters only
        # inside the window, so they must also be near its clock.
        counter = self._last = max(self._last + 1, int(self.clock() * 1e9))
        rai = msg.relay or RelayAgentInfo()
        head = _HEAD.pack(ALGORITHM_HMAC_SHA256, RDM_COUNTER, counter)
        zeroed = replace(msg, relay=replace(rai, auth=head + bytes(MAC_LEN))).pack()
        at = auth_offset(zeroed)
        mac_at = at + _HEAD.size
        return zeroed[:mac_at] + compute_mac(key, zeroed, at) + zeroed[mac_at + MAC_LEN:]

    def verify(self, data: bytes, msg: DhcpMessage, src: IPv4Address) -> None:
        """``data`` (parsed as ``msg``) came from ``src`` on the backbone: a request another AR
        relayed to us, or a reply to one we relayed. Raises RelayAuthError."""
        key = self._key(src)
        # A relay's request names the relay in giaddr; a reply is aimed at us.
        expected = src if msg.op == BOOTREQUEST else self.me
        if msg.giaddr != expected:
            raise RelayAuthError("giaddr_mismatch", f"giaddr {msg.giaddr} from {src}")
        if msg.relay is None or not msg.relay.auth:
            raise RelayAuthError("unsigned", f"no authentication sub-option from {src}")
        at = auth_offset(data)
        algorithm, rdm, counter = _HEAD.unpack_from(data, at)
        if algorithm != ALGORITHM_HMAC_SHA256 or rdm != RDM_COUNTER:
            raise RelayAuthError("malformed", f"algorithm {algorithm}, RDM {rdm}")
        mac = data[at + _HEAD.size:at + AUTH_LEN]
        if not hmac.compare_digest(mac, compute_mac(key, data, at)):
            raise RelayAuthError("bad_mac", f"authenticator from {src} does not verify")
        now = self.clock()
        if abs(now - counter / 1e9) > self.window_s:
            raise RelayAuthError("stale", f"counter {counter} from {src} is outside the window")
        order, seen = self._seen.setdefault(src, (deque(), set()))
        if counter in seen:
            raise RelayAuthError("replay", f"counter {counter} from {src} seen before")
        # Forget by the counter's own time: a forgotten counter is then refused as stale. A
        # peer's counters arrive nearly in order, so the oldest are at the left.
        oldest = (now - self.window_s) * 1e9
        while order and order[0] < oldest:
            seen.discard(order.popleft())
        if len(seen) >= SEEN_MAX:
            raise RelayAuthError("replay", f"{src} sent {SEEN_MAX} messages in the window")
        seen.add(counter)
        order.append(counter)
