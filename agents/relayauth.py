"""Authenticated DHCP relay between ARs (issue 19 defect 3; docs/protocol.md §14.7, §16.4): only
a known AR may relay, and every relayed message carries a replay counter and HMAC-SHA-256 under
a key the two ARs share: RFC 4030's sub-option 8 of option 82 for DHCPv4, RFC 8415's
Authentication option, last in the Relay-Forward or Relay-Reply, for DHCPv6.

The key comes from the ARs' existing AR-to-AR trust: the static ECDH LTSS of their published
keys, through the KDF with one label per family (``KeyStore.pair_key``). Nothing here trusts
giaddr, the link-address, the UDP source or the relay options until the authenticator has been
checked.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv6Address
from typing import Generic, TypeVar

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
from .dhcp6 import OPT_AUTH, RELAY_HEADER, MessageType, RawOption, Relay6Message

LABEL_RELAY = b"FLATARCH-v1 DHCP relay"
ALG_RELAY = algorithm_id(LABEL_RELAY)
# A key of its own for DHCPv6: one MAC never verifies as the other family's.
LABEL_RELAY6 = b"FLATARCH-v1 DHCPv6 relay"
ALG_RELAY6 = algorithm_id(LABEL_RELAY6)
# RFC 4030 registers algorithm 1 (HMAC-SHA1) only; 2 is this lab's HMAC-SHA-256.
ALGORITHM_HMAC_SHA256 = 2
RDM_COUNTER = 0  # RFC 4030 replay detection method 0: a monotonically increasing counter
MAC_LEN = 32
_HEAD = struct.Struct("!BBQ")  # algorithm, RDM, replay counter
AUTH_LEN = _HEAD.size + MAC_LEN  # sub-option 8's value: 42 octets
# RFC 8415 §21.11's protocol field: 255 is unassigned by IANA, this lab's inter-AR relay.
PROTOCOL_RELAY6 = 255
_HEAD6 = struct.Struct("!BBBQ")  # protocol, algorithm, RDM, replay detection
AUTH6_LEN = _HEAD6.size + MAC_LEN  # the Authentication option's body: 43 octets
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
    return _last_tlv(data, start, end, wide=False, code=RAI_AUTH, size=AUTH_LEN,
                     what="sub-option")


def _last_tlv(data: bytes, start: int, end: int, *, wide: bool, code: int, size: int,
              what: str) -> int:
    """Where the value of the authenticator ``code`` starts among the TLVs of data[start:end]
    (1-octet code and length, or 2-octet ones if ``wide``): present once, the last, ``size``
    octets long."""
    head, fmt = (4, "!HH") if wide else (2, "!BB")
    off, found = start, None
    while off < end:
        if off + head > end:
            raise RelayAuthError("malformed", f"truncated {what} header at octet {off}")
        got, length = struct.unpack_from(fmt, data, off)
        if off + head + length > end:
            raise RelayAuthError("malformed", f"{what} {got} runs past its container")
        if found is not None:
            raise RelayAuthError("malformed", f"the authentication {what} is not the last")
        if got == code:
            if length != size:
                raise RelayAuthError("malformed", f"authentication {what} of {length} "
                                                  f"octets, not {size}")
            found = off + head
        off += head + length
    if found is None:
        raise RelayAuthError("unsigned", f"no authentication {what}")
    return found


def compute_mac(key: bytes, data: bytes, value_at: int, head: int = _HEAD.size) -> bytes:
    """HMAC-SHA-256 over the whole datagram with the 32-octet MAC field zeroed: it starts
    ``head`` octets into the value at ``value_at`` (the algorithm, RDM and counter before it)."""
    mac_at = value_at + head
    return hmac.new(key, data[:mac_at] + bytes(MAC_LEN) + data[mac_at + MAC_LEN:],
                    hashlib.sha256).digest()


def auth6_offset(data: bytes) -> int:
    """Where the Authentication option's body starts in a relay message: the option must be
    the outermost message's last option, present once, 43 octets."""
    if len(data) < RELAY_HEADER or data[0] not in (MessageType.RELAY_FORW,
                                                   MessageType.RELAY_REPL):
        raise RelayAuthError("malformed", "not a DHCPv6 relay message")
    return _last_tlv(data, RELAY_HEADER, len(data), wide=True, code=OPT_AUTH, size=AUTH6_LEN,
                     what="option")


AddrT = TypeVar("AddrT", IPv4Address, IPv6Address)
AuthT = TypeVar("AuthT")


def admit(relay_auth: AuthT | None, backbone: Callable[[int], bool] | None,
          ifindex: int) -> AuthT:
    """The authenticator to check a relayed datagram that came in on ``ifindex`` with: none
    means the server takes no relayed messages, and they come over backbone links only."""
    if relay_auth is None:
        raise RelayAuthError("not_an_ar", "this server takes no relayed messages")
    if backbone is not None and not backbone(ifindex):
        raise RelayAuthError("wrong_interface", f"interface {ifindex} is not the backbone")
    return relay_auth


@dataclass
class _PairTrust(Generic[AddrT]):
    """What both families' authenticators share: whom we trust, the key with each, our
    counters, and the counters each peer has used inside the window."""

    me: AddrT
    peers: Mapping[AddrT, str]  # the other ARs' loopbacks -> their DNS names
    key_of: Callable[[str], bytes | None]  # the pair key shared with that AR, once derived
    clock: Callable[[], float] = time.time
    window_s: float = WINDOW_S
    _last: int = 0
    _seen: dict[AddrT, tuple[deque[int], set[int]]] = field(default_factory=dict)

    def _key(self, peer: AddrT) -> bytes:
        name = self.peers.get(peer)
        if name is None or peer == self.me:
            raise RelayAuthError("not_an_ar", f"{peer} is not another AR's loopback")
        key = self.key_of(name)
        if key is None:
            raise RelayAuthError("no_key", f"no key shared with {name} yet")
        return key

    def _counter(self) -> int:
        # Nanoseconds of the clock, and never twice the same: a peer remembers counters only
        # inside the window, so they must also be near its clock.
        self._last = max(self._last + 1, int(self.clock() * 1e9))
        return self._last

    def _check(self, key: bytes, data: bytes, at: int, head: int, counter: int,
               src: AddrT) -> None:
        """The MAC, then the counter's freshness and novelty; the counter is then used up."""
        mac = data[at + head:at + head + MAC_LEN]
        if not hmac.compare_digest(mac, compute_mac(key, data, at, head)):
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


def _splice(key: bytes, zeroed: bytes, at: int, head: int) -> bytes:
    mac_at = at + head
    return zeroed[:mac_at] + compute_mac(key, zeroed, at, head) + zeroed[mac_at + MAC_LEN:]


@dataclass
class RelayAuth(_PairTrust[IPv4Address]):
    """One AR's DHCPv4 side: signs what it relays or answers to another AR, checks what it
    gets (sub-option 8 of option 82)."""

    def sign(self, msg: DhcpMessage, peer: IPv4Address) -> bytes:
        """``msg`` packed for ``peer`` with a fresh counter and its authenticator."""
        key = self._key(peer)
        rai = msg.relay or RelayAgentInfo()
        head = _HEAD.pack(ALGORITHM_HMAC_SHA256, RDM_COUNTER, self._counter())
        zeroed = replace(msg, relay=replace(rai, auth=head + bytes(MAC_LEN))).pack()
        return _splice(key, zeroed, auth_offset(zeroed), _HEAD.size)

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
        self._check(key, data, at, _HEAD.size, counter, src)


@dataclass
class RelayAuth6(_PairTrust[IPv6Address]):
    """One AR's DHCPv6 side (docs/protocol.md §16.4): the Authentication option, last in the
    outermost Relay-Forward or Relay-Reply, under the DHCPv6 relay key."""

    def sign(self, msg: Relay6Message, dest: IPv6Address) -> bytes:
        """``msg`` packed for ``dest`` with a fresh counter and its authenticator; an
        Authentication option it carried is replaced. Raises ValueError if it outgrows a frame."""
        key = self._key(dest)
        head = _HEAD6.pack(PROTOCOL_RELAY6, ALGORITHM_HMAC_SHA256, RDM_COUNTER, self._counter())
        kept = tuple(o for o in msg.options
                     if not (isinstance(o, RawOption) and o.code == OPT_AUTH))
        zeroed = replace(msg, options=(*kept, RawOption(OPT_AUTH, head + bytes(MAC_LEN)))).pack()
        return _splice(key, zeroed, auth6_offset(zeroed), _HEAD6.size)

    def verify(self, data: bytes, msg: Relay6Message, src: IPv6Address) -> None:
        """``data`` (parsed as ``msg``) came from ``src`` on the backbone: a Relay-Forward
        another AR sent us, or the Relay-Reply to one we sent. Raises RelayAuthError."""
        key = self._key(src)
        # A Relay-Forward names its relay in link-address; the Relay-Reply echoes ours.
        expected = src if msg.msg_type == MessageType.RELAY_FORW else self.me
        if msg.link_address != expected:
            raise RelayAuthError("link_address_mismatch",
                                 f"link-address {msg.link_address} from {src}")
        at = auth6_offset(data)
        protocol, algorithm, rdm, counter = _HEAD6.unpack_from(data, at)
        if (protocol, algorithm, rdm) != (PROTOCOL_RELAY6, ALGORITHM_HMAC_SHA256, RDM_COUNTER):
            raise RelayAuthError("malformed", f"protocol {protocol}, algorithm {algorithm}, "
                                              f"RDM {rdm}")
        self._check(key, data, at, _HEAD6.size, counter, src)
