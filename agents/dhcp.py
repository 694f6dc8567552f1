"""DHCPv4 messages (RFC 2131/2132) with the Relay Agent Information option (RFC 3046) and
the lab's Home Agent name option: strict unpack, typed errors, pack that round-trips.

The groundwork of address management (draft 2.3 and 5 item 5): an AR serving DHCP to a
standard client, relaying a remote renewal with the MN's DNS name as Agent Remote ID.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from ipaddress import IPv4Address

MAGIC = b"\x63\x82\x53\x63"
FIXED = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
BOOTREQUEST, BOOTREPLY = 1, 2
HTYPE_ETHER = 1
FLAG_BROADCAST = 0x8000
MAX_MESSAGE = 1500

OPT_PAD, OPT_END = 0, 255
OPT_SUBNET_MASK, OPT_ROUTER, OPT_DNS, OPT_HOSTNAME = 1, 3, 6, 12
OPT_REQUESTED_IP, OPT_LEASE_TIME, OPT_MESSAGE_TYPE, OPT_SERVER_ID = 50, 51, 53, 54
OPT_PARAM_REQUEST, OPT_MESSAGE, OPT_T1, OPT_T2, OPT_CLIENT_ID = 55, 56, 58, 59, 61
OPT_RELAY_AGENT = 82
# Site-specific range (RFC 2132 §2: 224-254): the DNS name of the MN's Home Agent (draft 5,
# item 5). Documented in docs/protocol.md; any code in the range would do.
OPT_HOME_AGENT = 224
RAI_CIRCUIT_ID, RAI_REMOTE_ID = 1, 2
RAI_AUTH = 8  # RFC 4030's relay agent authentication; agents/relayauth.py checks it


class DhcpError(ValueError):
    """A datagram that is not a well-formed DHCP message; the message says what is wrong."""


class MessageType(enum.IntEnum):
    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8


@dataclass(frozen=True)
class RelayAgentInfo:
    """Option 82: the relay's circuit and the remote end's identity (the MN's DNS name)."""

    circuit_id: bytes = b""
    remote_id: bytes = b""
    auth: bytes = b""  # sub-option 8's value, last (RFC 4030 §4); agents/relayauth.py

    def pack(self) -> bytes:
        out = b""
        for code, value in ((RAI_CIRCUIT_ID, self.circuit_id), (RAI_REMOTE_ID, self.remote_id),
                            (RAI_AUTH, self.auth)):
            if value:
                if len(value) > 255:
                    raise ValueError("relay agent sub-option longer than 255 octets")
                out += bytes((code, len(value))) + value
        return out

    @classmethod
    def unpack(cls, data: bytes) -> RelayAgentInfo:
        # Other sub-options (RFC 3046 §2.0) are parsed for shape, then ignored.
        subs = _tlv(data, "relay agent sub-option", allow_pad=False)
        return cls(subs.get(RAI_CIRCUIT_ID, b""), subs.get(RAI_REMOTE_ID, b""),
                   subs.get(RAI_AUTH, b""))


def _tlv(data: bytes, what: str, *, allow_pad: bool) -> dict[int, bytes]:
    """Code-length-value items filling ``data``; a repeated code is concatenated (RFC 3396)."""
    out: dict[int, bytes] = {}
    off = 0
    while off < len(data):
        code = data[off]
        if allow_pad and code == OPT_PAD:
            off += 1
            continue
        if allow_pad and code == OPT_END:
            if any(b for b in data[off + 1:]):
                raise DhcpError(f"octets other than padding after the {what} end")
            return out
        if off + 2 > len(data):
            raise DhcpError(f"{what} {code} has no length")
        length = data[off + 1]
        end = off + 2 + length
        if end > len(data):
            raise DhcpError(f"{what} {code} runs past the message ({length} octets)")
        out[code] = out.get(code, b"") + data[off + 2:end]
        off = end
    if allow_pad:
        raise DhcpError(f"no end {what}")
    return out


def _addr(value: bytes, what: str) -> IPv4Address:
    if len(value) != 4:
        raise DhcpError(f"{what} must be 4 octets, not {len(value)}")
    return IPv4Address(value)


@dataclass(frozen=True)
class DhcpMessage:
    op: int
    xid: int
    chaddr: bytes  # the client's hardware address (hlen octets)
    message_type: MessageType
    ciaddr: IPv4Address = IPv4Address(0)
    yiaddr: IPv4Address = IPv4Address(0)
    siaddr: IPv4Address = IPv4Address(0)
    giaddr: IPv4Address = IPv4Address(0)
    hops: int = 0
    secs: int = 0
    flags: int = 0
    options: dict[int, bytes] = field(default_factory=dict)  # everything but 53 and 82
    relay: RelayAgentInfo | None = None

    # --- typed views of the options the lab uses -------------------------------------------

    def _get_addr(self, code: int, what: str) -> IPv4Address | None:
        value = self.options.get(code)
        return _addr(value, what) if value is not None else None

    @property
    def server_id(self) -> IPv4Address | None:
        return self._get_addr(OPT_SERVER_ID, "server identifier")

    @property
    def requested_ip(self) -> IPv4Address | None:
        return self._get_addr(OPT_REQUESTED_IP, "requested address")

    @property
    def lease_time(self) -> int | None:
        value = self.options.get(OPT_LEASE_TIME)
        if value is None:
            return None
        if len(value) != 4:
            raise DhcpError("lease time must be 4 octets")
        return int(struct.unpack("!I", value)[0])

    @property
    def home_agent(self) -> str | None:
        value = self.options.get(OPT_HOME_AGENT)
        if value is None:
            return None
        try:
            name = value.decode("ascii")
        except UnicodeDecodeError:
            raise DhcpError("home agent name is not ASCII") from None
        if not name or any(c.isspace() for c in name):
            raise DhcpError("home agent name is empty or has blanks")
        return name

    # --- wire -----------------------------------------------------------------------------

    def pack(self) -> bytes:
        if not 1 <= len(self.chaddr) <= 16:
            raise ValueError("chaddr must be 1 to 16 octets")
        head = FIXED.pack(self.op, HTYPE_ETHER, len(self.chaddr), self.hops, self.xid,
                          self.secs, self.flags, self.ciaddr.packed, self.yiaddr.packed,
                          self.siaddr.packed, self.giaddr.packed, self.chaddr.ljust(16, b"\0"),
                          b"", b"")
        opts = [bytes((OPT_MESSAGE_TYPE, 1, int(self.message_type)))]
        for code, value in sorted(self.options.items()):
            if code in (OPT_PAD, OPT_END, OPT_MESSAGE_TYPE, OPT_RELAY_AGENT):
                raise ValueError(f"option {code} is not set through options")
            for i in range(0, max(len(value), 1), 255):  # RFC 3396 for long values
                chunk = value[i:i + 255]
                opts.append(bytes((code, len(chunk))) + chunk)
        if self.relay is not None:
            rai = self.relay.pack()
            opts.append(bytes((OPT_RELAY_AGENT, len(rai))) + rai)  # last, per RFC 3046 §2.1
        data = head + MAGIC + b"".join(opts) + bytes((OPT_END,))
        if len(data) > MAX_MESSAGE:
            raise ValueError("message longer than one Ethernet frame")
        return data.ljust(300, b"\0")  # BOOTP's minimum, which some clients still expect

    @classmethod
    def unpack(cls, data: bytes) -> DhcpMessage:
        if len(data) < FIXED.size + len(MAGIC) + 1:
            raise DhcpError(f"{len(data)} octets is shorter than a DHCP message")
        if len(data) > MAX_MESSAGE:
            raise DhcpError(f"{len(data)} octets is longer than one Ethernet frame")
        (op, htype, hlen, hops, xid, secs, flags, ci, yi, si, gi, ch, _, _) = \
            FIXED.unpack_from(data)
        if op not in (BOOTREQUEST, BOOTREPLY):
            raise DhcpError(f"op {op} is neither request nor reply")
        if htype != HTYPE_ETHER or not 1 <= hlen <= 16:
            raise DhcpError(f"hardware type {htype} / length {hlen} unsupported")
        if data[FIXED.size:FIXED.size + 4] != MAGIC:
            raise DhcpError("no DHCP magic cookie (a plain BOOTP message)")
        opts = _tlv(data[FIXED.size + 4:], "option", allow_pad=True)
        kind = opts.pop(OPT_MESSAGE_TYPE, None)
        if kind is None or len(kind) != 1:
            raise DhcpError("message type option missing or malformed")
        try:
            message_type = MessageType(kind[0])
        except ValueError:
            raise DhcpError(f"unknown message type {kind[0]}") from None
        rai = opts.pop(OPT_RELAY_AGENT, None)
        msg = cls(op, xid, ch[:hlen], message_type, IPv4Address(ci), IPv4Address(yi),
                  IPv4Address(si), IPv4Address(gi), hops, secs, flags, opts,
                  RelayAgentInfo.unpack(rai) if rai is not None else None)
        # Checked now, so that a bad value is the parser's error, not a later surprise.
        _ = (msg.server_id, msg.requested_ip, msg.lease_time, msg.home_agent)
        return msg

