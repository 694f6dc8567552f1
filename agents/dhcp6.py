"""DHCPv6 messages (RFC 8415) with Relay-Forward/Relay-Reply and the Remote-ID option
(RFC 4649): strict unpack raising only ``Dhcp6Error``, pack that round-trips octet for octet.

The IPv6 side of address management (draft 2.3): an AR delegating an MN its /64 (IA_PD), a
remote renewal relayed with the MN's DNS name in Remote-ID. The server is agents/dhcpd6.py.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network
from typing import TypeVar

CLIENT_PORT, SERVER_PORT = 546, 547
ALL_SERVERS = IPv6Address("ff02::1:2")  # All_DHCP_Relay_Agents_and_Servers (RFC 8415 §7.1)
HOP_COUNT_LIMIT = 8  # RFC 8415 §7.6
# One datagram in one Ethernet frame (1500 - IPv6 40 - UDP 8): nothing in the lab is larger.
MAX_MESSAGE = 1452
MAX_DUID = 130  # type (2 octets) and at most 128 octets (RFC 8415 §11.1)
INFINITY = 0xFFFFFFFF

OPT_CLIENTID, OPT_SERVERID, OPT_IA_NA, OPT_IAADDR, OPT_ORO = 1, 2, 3, 5, 6
OPT_PREFERENCE, OPT_ELAPSED_TIME, OPT_RELAY_MSG, OPT_STATUS_CODE = 7, 8, 9, 13
OPT_RAPID_COMMIT, OPT_INTERFACE_ID, OPT_DNS_SERVERS, OPT_IA_PD, OPT_IAPREFIX = 14, 18, 23, 25, 26
OPT_REMOTE_ID = 37  # RFC 4649
# RFC 8415 §21.11; kept as a RawOption: only the relay authenticator reads it (agents/relayauth.py).
OPT_AUTH = 11
RELAY_HEADER = 34  # type, hop count, link-address, peer-address

DUID_LLT, DUID_EN, DUID_LL = 1, 2, 3


class Dhcp6Error(ValueError):
    """A datagram that is not a well-formed DHCPv6 message; the message says what is wrong."""


class MessageType(enum.IntEnum):
    SOLICIT = 1
    ADVERTISE = 2
    REQUEST = 3
    CONFIRM = 4
    RENEW = 5
    REBIND = 6
    REPLY = 7
    RELEASE = 8
    DECLINE = 9
    RECONFIGURE = 10
    INFORMATION_REQUEST = 11
    RELAY_FORW = 12
    RELAY_REPL = 13


class Status(enum.IntEnum):
    SUCCESS = 0
    UNSPEC_FAIL = 1
    NO_ADDRS_AVAIL = 2
    NO_BINDING = 3
    NOT_ON_LINK = 4
    USE_MULTICAST = 5
    NO_PREFIX_AVAIL = 6


RELAY_TYPES = (MessageType.RELAY_FORW, MessageType.RELAY_REPL)


# --- options -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClientId:
    duid: bytes


@dataclass(frozen=True)
class ServerId:
    duid: bytes


@dataclass(frozen=True)
class StatusCode:
    code: int
    message: str = ""


@dataclass(frozen=True)
class IaAddress:
    address: IPv6Address
    preferred: int
    valid: int
    options: tuple[StatusCode | RawOption, ...] = ()


@dataclass(frozen=True)
class IaPrefix:
    preferred: int
    valid: int
    prefix: IPv6Network
    options: tuple[StatusCode | RawOption, ...] = ()


@dataclass(frozen=True)
class IaNa:
    iaid: int
    t1: int
    t2: int
    options: tuple[IaAddress | StatusCode | RawOption, ...] = ()


@dataclass(frozen=True)
class IaPd:
    iaid: int
    t1: int
    t2: int
    options: tuple[IaPrefix | StatusCode | RawOption, ...] = ()


@dataclass(frozen=True)
class ElapsedTime:
    hundredths: int


@dataclass(frozen=True)
class Preference:
    value: int


@dataclass(frozen=True)
class RapidCommit:
    pass


@dataclass(frozen=True)
class OptionRequest:
    codes: tuple[int, ...]


@dataclass(frozen=True)
class InterfaceId:
    value: bytes


@dataclass(frozen=True)
class RemoteId:
    """RFC 4649: the relay's enterprise number and its name for the client (the MN's DNS name)."""

    enterprise: int
    remote_id: bytes


@dataclass(frozen=True)
class RelayMsg:
    message: Message


@dataclass(frozen=True)
class RawOption:
    """Any other option, kept as it came so that it re-packs (RFC 8415 §16: ignored)."""

    code: int
    data: bytes


Option = (ClientId | ServerId | StatusCode | IaAddress | IaPrefix | IaNa | IaPd | ElapsedTime
          | Preference | RapidCommit | OptionRequest | InterfaceId | RemoteId | RelayMsg
          | RawOption)
OptT = TypeVar("OptT")

# Options that may appear once in a message (RFC 8415 §21, "only one"), and those that
# belong to one side of the relay boundary.
_SINGLE = {OPT_CLIENTID, OPT_SERVERID, OPT_ORO, OPT_PREFERENCE, OPT_ELAPSED_TIME,
           OPT_RELAY_MSG, OPT_RAPID_COMMIT, OPT_INTERFACE_ID, OPT_REMOTE_ID}
_RELAY_ONLY = {OPT_RELAY_MSG, OPT_INTERFACE_ID, OPT_REMOTE_ID}
_TOP_ONLY = {OPT_IAADDR, OPT_IAPREFIX}  # never at message level


def _code(opt: Option) -> int:
    return {ClientId: OPT_CLIENTID, ServerId: OPT_SERVERID, StatusCode: OPT_STATUS_CODE,
            IaAddress: OPT_IAADDR, IaPrefix: OPT_IAPREFIX, IaNa: OPT_IA_NA, IaPd: OPT_IA_PD,
            ElapsedTime: OPT_ELAPSED_TIME, Preference: OPT_PREFERENCE,
            RapidCommit: OPT_RAPID_COMMIT, OptionRequest: OPT_ORO,
            InterfaceId: OPT_INTERFACE_ID, RemoteId: OPT_REMOTE_ID,
            RelayMsg: OPT_RELAY_MSG}.get(type(opt), getattr(opt, "code", -1))


def _pack_option(opt: Option) -> bytes:
    if isinstance(opt, (ClientId, ServerId)):
        body = opt.duid
    elif isinstance(opt, StatusCode):
        body = struct.pack("!H", opt.code) + opt.message.encode("utf-8")
    elif isinstance(opt, IaAddress):
        body = opt.address.packed + struct.pack("!II", opt.preferred, opt.valid)
        body += _pack_options(opt.options)
    elif isinstance(opt, IaPrefix):
        body = struct.pack("!IIB", opt.preferred, opt.valid, opt.prefix.prefixlen)
        body += opt.prefix.network_address.packed + _pack_options(opt.options)
    elif isinstance(opt, (IaNa, IaPd)):
        body = struct.pack("!III", opt.iaid, opt.t1, opt.t2) + _pack_options(opt.options)
    elif isinstance(opt, ElapsedTime):
        body = struct.pack("!H", opt.hundredths)
    elif isinstance(opt, Preference):
        body = bytes([opt.value])
    elif isinstance(opt, RapidCommit):
        body = b""
    elif isinstance(opt, OptionRequest):
        body = b"".join(struct.pack("!H", c) for c in opt.codes)
    elif isinstance(opt, InterfaceId):
        body = opt.value
    elif isinstance(opt, RemoteId):
        body = struct.pack("!I", opt.enterprise) + opt.remote_id
    elif isinstance(opt, RelayMsg):
        body = opt.message.pack()
    else:
        body = opt.data
    if len(body) > 0xFFFF:
        raise ValueError(f"option {_code(opt)} longer than 65535 octets")
    return struct.pack("!HH", _code(opt), len(body)) + body


def _pack_options(options: tuple[Option, ...]) -> bytes:
    return b"".join(_pack_option(o) for o in options)


def _walk(data: bytes) -> Iterator[tuple[int, bytes]]:
    i = 0
    while i < len(data):
        if len(data) - i < 4:
            raise Dhcp6Error(f"truncated option header at octet {i}")
        code, length = struct.unpack_from("!HH", data, i)
        if i + 4 + length > len(data):
            raise Dhcp6Error(f"option {code} runs past the end ({length} octets)")
        yield code, data[i + 4:i + 4 + length]
        i += 4 + length


def _lifetimes(preferred: int, valid: int, what: str) -> None:
    if preferred > valid:  # RFC 8415 §21.6, §21.22: the client must discard it
        raise Dhcp6Error(f"{what}: preferred lifetime {preferred} exceeds valid {valid}")


def _status(body: bytes) -> StatusCode:
    if len(body) < 2:
        raise Dhcp6Error("status code shorter than 2 octets")
    try:
        text = body[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise Dhcp6Error("status message is not UTF-8") from None
    return StatusCode(struct.unpack_from("!H", body)[0], text)


def _sub(body: bytes, allowed: set[int], what: str) -> list[Option]:
    out: list[Option] = []
    seen: set[object] = set()
    for code, value in _walk(body):
        if code not in allowed and code in _KNOWN:
            raise Dhcp6Error(f"option {code} inside {what}")
        opt = _parse(code, value, depth=HOP_COUNT_LIMIT)
        key: object = code
        if isinstance(opt, IaAddress):
            key = ("addr", opt.address)
        elif isinstance(opt, IaPrefix):
            key = ("prefix", opt.prefix)
        if key in seen and code in (OPT_STATUS_CODE, OPT_IAADDR, OPT_IAPREFIX):
            raise Dhcp6Error(f"{what} repeats option {code}")
        seen.add(key)
        out.append(opt)
    return out


def _parse(code: int, body: bytes, depth: int) -> Option:
    n = len(body)
    if code in (OPT_CLIENTID, OPT_SERVERID):
        if not 3 <= n <= MAX_DUID:
            raise Dhcp6Error(f"DUID of {n} octets (3 to {MAX_DUID})")
        return ClientId(body) if code == OPT_CLIENTID else ServerId(body)
    if code == OPT_STATUS_CODE:
        return _status(body)
    if code == OPT_IAADDR:
        if n < 24:
            raise Dhcp6Error(f"IAADDR of {n} octets (at least 24)")
        preferred, valid = struct.unpack_from("!II", body, 16)
        _lifetimes(preferred, valid, "IAADDR")
        subs = _sub(body[24:], {OPT_STATUS_CODE}, "IAADDR")
        return IaAddress(IPv6Address(body[:16]), preferred, valid,
                         tuple(s for s in subs if isinstance(s, (StatusCode, RawOption))))
    if code == OPT_IAPREFIX:
        if n < 25:
            raise Dhcp6Error(f"IAPREFIX of {n} octets (at least 25)")
        preferred, valid, plen = struct.unpack_from("!IIB", body)
        _lifetimes(preferred, valid, "IAPREFIX")
        if plen > 128:
            raise Dhcp6Error(f"prefix length {plen}")
        try:
            prefix = IPv6Network((IPv6Address(body[9:25]), plen))
        except ValueError:
            raise Dhcp6Error(f"IAPREFIX {IPv6Address(body[9:25])}/{plen} has host bits set") \
                from None
        subs = _sub(body[25:], {OPT_STATUS_CODE}, "IAPREFIX")
        return IaPrefix(preferred, valid, prefix,
                        tuple(s for s in subs if isinstance(s, (StatusCode, RawOption))))
    if code in (OPT_IA_NA, OPT_IA_PD):
        what = "IA_NA" if code == OPT_IA_NA else "IA_PD"
        if n < 12:
            raise Dhcp6Error(f"{what} of {n} octets (at least 12)")
        iaid, t1, t2 = struct.unpack_from("!III", body)
        if t1 > t2 and t2 != 0:  # RFC 8415 §21.4, §21.21: the client must discard it
            raise Dhcp6Error(f"{what}: T1 {t1} exceeds T2 {t2}")
        inner = OPT_IAADDR if code == OPT_IA_NA else OPT_IAPREFIX
        subs = _sub(body[12:], {inner, OPT_STATUS_CODE}, what)
        if code == OPT_IA_NA:
            return IaNa(iaid, t1, t2, tuple(
                s for s in subs if isinstance(s, (IaAddress, StatusCode, RawOption))))
        return IaPd(iaid, t1, t2, tuple(
            s for s in subs if isinstance(s, (IaPrefix, StatusCode, RawOption))))
    if code == OPT_ELAPSED_TIME:
        if n != 2:
            raise Dhcp6Error(f"elapsed time of {n} octets (2)")
        return ElapsedTime(struct.unpack("!H", body)[0])
    if code == OPT_PREFERENCE:
        if n != 1:
            raise Dhcp6Error(f"preference of {n} octets (1)")
        return Preference(body[0])
    if code == OPT_RAPID_COMMIT:
        if n:
            raise Dhcp6Error(f"rapid commit of {n} octets (0)")
        return RapidCommit()
    if code == OPT_ORO:
        if n % 2:
            raise Dhcp6Error(f"option request of odd length {n}")
        return OptionRequest(struct.unpack(f"!{n // 2}H", body))
    if code == OPT_INTERFACE_ID:
        if not n:
            raise Dhcp6Error("empty interface-id")
        return InterfaceId(body)
    if code == OPT_REMOTE_ID:
        if n < 5:
            raise Dhcp6Error(f"remote-id of {n} octets (at least 5)")
        return RemoteId(struct.unpack_from("!I", body)[0], body[4:])
    if code == OPT_RELAY_MSG:
        return RelayMsg(_unpack(body, depth - 1))
    return RawOption(code, body)


_KNOWN = {OPT_CLIENTID, OPT_SERVERID, OPT_IA_NA, OPT_IAADDR, OPT_ORO, OPT_PREFERENCE,
          OPT_ELAPSED_TIME, OPT_RELAY_MSG, OPT_STATUS_CODE, OPT_RAPID_COMMIT,
          OPT_INTERFACE_ID, OPT_IA_PD, OPT_IAPREFIX, OPT_REMOTE_ID}


def _options(body: bytes, relay: bool, depth: int) -> tuple[Option, ...]:
    out: list[Option] = []
    seen: set[int] = set()
    iaids: set[tuple[int, int]] = set()
    for code, value in _walk(body):
        if code in _TOP_ONLY:
            raise Dhcp6Error(f"option {code} outside an IA")
        if code in _RELAY_ONLY and not relay:
            raise Dhcp6Error(f"option {code} in a {'client/server' if not relay else 'relay'}"
                             " message")
        if relay and code in _KNOWN - _RELAY_ONLY:
            raise Dhcp6Error(f"option {code} in a relay message")
        if code in _SINGLE and code in seen:
            raise Dhcp6Error(f"option {code} repeated")
        seen.add(code)
        opt = _parse(code, value, depth)
        if isinstance(opt, (IaNa, IaPd)):
            if (code, opt.iaid) in iaids:
                raise Dhcp6Error(f"two IAs of option {code} with IAID {opt.iaid}")
            iaids.add((code, opt.iaid))
        out.append(opt)
    if relay and OPT_RELAY_MSG not in seen:
        raise Dhcp6Error("a relay message without a relay message option")
    return tuple(out)


# --- messages ------------------------------------------------------------------------------

class _Options:
    options: tuple[Option, ...]

    def find(self, kind: type[OptT]) -> OptT | None:
        return next((o for o in self.options if isinstance(o, kind)), None)

    def all(self, kind: type[OptT]) -> list[OptT]:
        return [o for o in self.options if isinstance(o, kind)]


@dataclass(frozen=True)
class Dhcp6Message(_Options):
    """A client/server message (RFC 8415 §8): type, 24-bit transaction ID, options."""

    msg_type: MessageType
    xid: int
    options: tuple[Option, ...] = field(default_factory=tuple)

    @property
    def client_duid(self) -> bytes | None:
        opt = self.find(ClientId)
        return opt.duid if opt is not None else None

    @property
    def server_duid(self) -> bytes | None:
        opt = self.find(ServerId)
        return opt.duid if opt is not None else None

    def pack(self) -> bytes:
        if self.msg_type in RELAY_TYPES or not 0 <= self.xid < 1 << 24:
            raise ValueError("not a client/server message")
        return _fit(struct.pack("!I", self.msg_type << 24 | self.xid)
                    + _pack_options(self.options))


@dataclass(frozen=True)
class Relay6Message(_Options):
    """Relay-Forward or Relay-Reply (RFC 8415 §9): the relayed message is its RelayMsg."""

    msg_type: MessageType
    hop_count: int
    link_address: IPv6Address
    peer_address: IPv6Address
    options: tuple[Option, ...] = field(default_factory=tuple)

    @property
    def inner(self) -> Message:
        opt = self.find(RelayMsg)
        assert opt is not None  # unpack refuses a relay message without one
        return opt.message

    def pack(self) -> bytes:
        if self.msg_type not in RELAY_TYPES:
            raise ValueError("not a relay message")
        return _fit(bytes([self.msg_type, self.hop_count]) + self.link_address.packed
                    + self.peer_address.packed + _pack_options(self.options))


Message = Dhcp6Message | Relay6Message


def _fit(data: bytes) -> bytes:
    if len(data) > MAX_MESSAGE:
        raise ValueError(f"DHCPv6 message of {len(data)} octets, longer than one frame")
    return data


def _unpack(data: bytes, depth: int) -> Message:
    if depth <= 0:
        raise Dhcp6Error(f"relay messages nested deeper than {HOP_COUNT_LIMIT}")
    if len(data) > MAX_MESSAGE:
        raise Dhcp6Error(f"{len(data)} octets, more than {MAX_MESSAGE}")
    if len(data) < 4:
        raise Dhcp6Error(f"{len(data)} octets, shorter than a header")
    try:
        kind = MessageType(data[0])
    except ValueError:
        raise Dhcp6Error(f"unknown message type {data[0]}") from None
    if kind in RELAY_TYPES:
        if len(data) < RELAY_HEADER:
            raise Dhcp6Error(f"relay message of {len(data)} octets (at least {RELAY_HEADER})")
        if data[1] > HOP_COUNT_LIMIT:
            raise Dhcp6Error(f"hop count {data[1]} over {HOP_COUNT_LIMIT}")
        return Relay6Message(kind, data[1], IPv6Address(data[2:18]), IPv6Address(data[18:34]),
                             _options(data[RELAY_HEADER:], True, depth))
    return Dhcp6Message(kind, int.from_bytes(data[1:4], "big"), _options(data[4:], False, depth))


def unpack(data: bytes) -> Message:
    """Parse one DHCPv6 datagram; raises Dhcp6Error, and nothing else, on any defect."""
    return _unpack(bytes(data), HOP_COUNT_LIMIT + 1)


# --- the lab's client identity -------------------------------------------------------------

# DUID-EN (RFC 8415 §11.3) under the enterprise number reserved for documentation (RFC 5612):
# the identifier is the IPv4 client identifier's text, ``<name>#<serial>[#<proof>]`` (docs/
# protocol.md §14.2), so that the MN's session proof and DNS name travel in the DUID.
LAB_ENTERPRISE = 32473


def make_duid(name: str, serial: int, proof: bytes | None = None) -> bytes:
    tail = f"#{proof.hex()}" if proof is not None else ""
    text = f"{name.lower().rstrip('.')}#{serial}{tail}".encode("ascii")
    return struct.pack("!HI", DUID_EN, LAB_ENTERPRISE) + text


def duid_text(duid: bytes | None) -> bytes | None:
    """The identifier of a lab DUID-EN, as a type-0 DHCPv4 client identifier
    (agents.dhcpd.client_parts reads it), or None for any other DUID."""
    if duid is None or len(duid) < 7:
        return None
    kind, enterprise = struct.unpack_from("!HI", duid)
    if kind != DUID_EN or enterprise != LAB_ENTERPRISE:
        return None
    return b"\x00" + duid[6:]


def server_duid(name: str) -> bytes:
    """An AR's server DUID: DUID-EN with its DNS name (no ``#serial``: never a client's)."""
    return struct.pack("!HI", DUID_EN, LAB_ENTERPRISE) + name.lower().rstrip(".").encode("ascii")
