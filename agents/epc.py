"""Wire format of the anchored baseline's control plane (draft Figure 1: MME, HSS, eNB, UE).

A small, strictly parsed stand-in for NAS, S1-AP and S6a: a fixed header and a set of
tag-length-value fields that each message type must carry exactly (docs/baseline.md).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import struct
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Network

MAGIC = b"EP"
VERSION = 1
HEADER = struct.Struct("!2sBBI")  # magic, version, type, sequence number
MAX_MESSAGE = 1024
RAND_LEN = 16
RES_LEN = 16

# Well-known ports of the real interfaces, reused so captures read naturally.
MME_PORT = 2123  # GTP-C (S11): here the MME's S1 and S6a endpoint
HSS_PORT = 3868  # Diameter (S6a)
ENB_PORT = 36412  # S1-AP: the eNB relay on every AR, for its UEs and the MME
GTPU_PORT = 2152  # GTP-U: the anchor <-> AR user-plane tunnel (VXLAN here, see docs)


class EpcError(ValueError):
    """A datagram that is not a well-formed message of this protocol."""


class Kind(enum.IntEnum):
    ATTACH_REQUEST = 1  # UE -> MME (via eNB): the UE arrived at a cell
    AUTH_INFO_REQUEST = 2  # MME -> HSS: a vector for this subscriber (a home round trip)
    AUTH_INFO_ANSWER = 3  # HSS -> MME: RAND and the expected response
    AUTH_REQUEST = 4  # MME -> UE (via eNB): the challenge
    AUTH_RESPONSE = 5  # UE -> MME (via eNB): the response
    ATTACH_ACCEPT = 6  # MME -> UE (via eNB): bearer switched, the session's address
    ATTACH_REJECT = 7  # MME -> UE (via eNB): with a cause
    CONTEXT_RELEASE = 8  # MME -> previous eNB: forget the UE
    S1_UPLINK = 9  # eNB -> MME: a UE's NAS message, with the cell it arrived at
    S1_DOWNLINK = 10  # MME -> eNB: a NAS message for the UE at that address and port


class Tag(enum.IntEnum):
    IMSI = 1  # ASCII subscriber name, 1..32 octets
    CELL = 2  # ASCII cell (AR) name, 1..32 octets
    RAND = 3  # 16 octets
    RES = 4  # 16 octets
    ADDRESS = 5  # IPv4, 4 octets: the session address the anchor holds
    CAUSE = 6  # 1 octet
    UE_ADDR = 7  # IPv4, 4 octets
    UE_PORT = 8  # 2 octets
    NAS = 9  # an encoded message of this protocol, 1..255 octets
    PREFIX6 = 10  # 17 octets, prefix length then address: the session's IPv6 prefix


REQUIRED: dict[Kind, frozenset[Tag]] = {
    Kind.ATTACH_REQUEST: frozenset({Tag.IMSI}),
    Kind.AUTH_INFO_REQUEST: frozenset({Tag.IMSI}),
    Kind.AUTH_INFO_ANSWER: frozenset({Tag.IMSI, Tag.RAND, Tag.RES}),
    Kind.AUTH_REQUEST: frozenset({Tag.IMSI, Tag.RAND}),
    Kind.AUTH_RESPONSE: frozenset({Tag.IMSI, Tag.RES}),
    Kind.ATTACH_ACCEPT: frozenset({Tag.IMSI, Tag.CELL, Tag.ADDRESS}),
    Kind.ATTACH_REJECT: frozenset({Tag.IMSI, Tag.CAUSE}),
    Kind.CONTEXT_RELEASE: frozenset({Tag.IMSI, Tag.CELL}),
    Kind.S1_UPLINK: frozenset({Tag.CELL, Tag.UE_ADDR, Tag.UE_PORT, Tag.NAS}),
    Kind.S1_DOWNLINK: frozenset({Tag.CELL, Tag.UE_ADDR, Tag.UE_PORT, Tag.NAS}),
}
# Fields a type may carry beyond its own: a dual-stack session's IPv6 prefix (the PDN
# type IPv4v6 of LTE, issue 18), given with the IPv4 address it goes with.
OPTIONAL: dict[Kind, frozenset[Tag]] = {Kind.ATTACH_ACCEPT: frozenset({Tag.PREFIX6})}

# Reject causes
CAUSE_UNKNOWN_SUBSCRIBER = 1
CAUSE_AUTH_FAILED = 2
CAUSE_UNKNOWN_CELL = 3
CAUSE_HSS_UNREACHABLE = 4


@dataclass(frozen=True)
class Message:
    kind: Kind
    seq: int
    imsi: str = ""
    cell: str = ""
    rand: bytes = b""
    res: bytes = b""
    address: IPv4Address | None = None
    cause: int | None = None
    ue_addr: IPv4Address | None = None
    ue_port: int | None = None
    nas: bytes = field(default=b"", repr=False)
    prefix6: IPv6Network | None = None

    def present(self) -> frozenset[Tag]:
        tags = {
            Tag.IMSI: bool(self.imsi), Tag.CELL: bool(self.cell), Tag.RAND: bool(self.rand),
            Tag.RES: bool(self.res), Tag.ADDRESS: self.address is not None,
            Tag.CAUSE: self.cause is not None, Tag.UE_ADDR: self.ue_addr is not None,
            Tag.UE_PORT: self.ue_port is not None, Tag.NAS: bool(self.nas),
            Tag.PREFIX6: self.prefix6 is not None,
        }
        return frozenset(t for t, on in tags.items() if on)


def _name(value: bytes, what: str) -> str:
    if not 1 <= len(value) <= 32:
        raise EpcError(f"{what}: length {len(value)} outside 1..32")
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        raise EpcError(f"{what}: not ASCII") from None
    if not text.isprintable() or " " in text:
        raise EpcError(f"{what}: not a plain name")
    return text


def _fixed(value: bytes, n: int, what: str) -> bytes:
    if len(value) != n:
        raise EpcError(f"{what}: {len(value)} octets, expected {n}")
    return value


def encode(msg: Message) -> bytes:
    """The datagram for msg; refuses a message whose fields do not match its type."""
    if not 0 <= msg.seq <= 0xFFFFFFFF:
        raise EpcError(f"sequence number {msg.seq} out of range")
    want = REQUIRED[msg.kind]
    have = msg.present()
    if not want <= have <= want | OPTIONAL.get(msg.kind, frozenset()):
        raise EpcError(f"{msg.kind.name}: fields {sorted(t.name for t in have)}, "
                       f"expected {sorted(t.name for t in want)}")
    out = bytearray(HEADER.pack(MAGIC, VERSION, msg.kind, msg.seq))

    def tlv(tag: Tag, value: bytes) -> None:
        if not 1 <= len(value) <= 255:
            raise EpcError(f"{tag.name}: length {len(value)} outside 1..255")
        out.extend((tag, len(value)))
        out.extend(value)

    if msg.imsi:
        tlv(Tag.IMSI, _name(msg.imsi.encode("ascii", "replace"), "IMSI").encode())
    if msg.cell:
        tlv(Tag.CELL, _name(msg.cell.encode("ascii", "replace"), "CELL").encode())
    if msg.rand:
        tlv(Tag.RAND, _fixed(msg.rand, RAND_LEN, "RAND"))
    if msg.res:
        tlv(Tag.RES, _fixed(msg.res, RES_LEN, "RES"))
    if msg.address is not None:
        tlv(Tag.ADDRESS, msg.address.packed)
    if msg.cause is not None:
        if not 0 <= msg.cause <= 255:
            raise EpcError(f"cause {msg.cause} out of range")
        tlv(Tag.CAUSE, bytes((msg.cause,)))
    if msg.ue_addr is not None:
        tlv(Tag.UE_ADDR, msg.ue_addr.packed)
    if msg.ue_port is not None:
        if not 1 <= msg.ue_port <= 0xFFFF:
            raise EpcError(f"UE port {msg.ue_port} out of range")
        tlv(Tag.UE_PORT, struct.pack("!H", msg.ue_port))
    if msg.nas:
        decode(msg.nas)  # only a well-formed message may be wrapped
        tlv(Tag.NAS, msg.nas)
    if msg.prefix6 is not None:
        tlv(Tag.PREFIX6, bytes((msg.prefix6.prefixlen,)) + msg.prefix6.network_address.packed)
    return bytes(out)


def decode(data: bytes) -> Message:
    """Parse one datagram strictly: every byte accounted for, every field where it belongs."""
    if len(data) > MAX_MESSAGE:
        raise EpcError(f"{len(data)} octets, more than {MAX_MESSAGE}")
    if len(data) < HEADER.size:
        raise EpcError(f"{len(data)} octets, shorter than the {HEADER.size}-octet header")
    magic, version, kind_raw, seq = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise EpcError(f"bad magic {magic!r}")
    if version != VERSION:
        raise EpcError(f"unsupported version {version}")
    try:
        kind = Kind(kind_raw)
    except ValueError:
        raise EpcError(f"unknown message type {kind_raw}") from None
    fields: dict[Tag, bytes] = {}
    pos = HEADER.size
    while pos < len(data):
        if pos + 2 > len(data):
            raise EpcError(f"truncated field header at octet {pos}")
        tag_raw, length = data[pos], data[pos + 1]
        try:
            tag = Tag(tag_raw)
        except ValueError:
            raise EpcError(f"unknown field tag {tag_raw} at octet {pos}") from None
        if length == 0:
            raise EpcError(f"{tag.name}: empty field")
        value = data[pos + 2: pos + 2 + length]
        if len(value) != length:
            raise EpcError(f"{tag.name}: truncated, {len(value)} of {length} octets")
        if tag in fields:
            raise EpcError(f"{tag.name}: repeated")
        fields[tag] = value
        pos += 2 + length
    want = REQUIRED[kind]
    may = want | OPTIONAL.get(kind, frozenset())
    if not want <= set(fields) <= may:
        missing = sorted(t.name for t in want - set(fields))
        extra = sorted(t.name for t in set(fields) - may)
        raise EpcError(f"{kind.name}: missing {missing}, unexpected {extra}")
    kw: dict[str, object] = {}
    if Tag.IMSI in fields:
        kw["imsi"] = _name(fields[Tag.IMSI], "IMSI")
    if Tag.CELL in fields:
        kw["cell"] = _name(fields[Tag.CELL], "CELL")
    if Tag.RAND in fields:
        kw["rand"] = _fixed(fields[Tag.RAND], RAND_LEN, "RAND")
    if Tag.RES in fields:
        kw["res"] = _fixed(fields[Tag.RES], RES_LEN, "RES")
    if Tag.ADDRESS in fields:
        kw["address"] = ipaddress.IPv4Address(_fixed(fields[Tag.ADDRESS], 4, "ADDRESS"))
    if Tag.CAUSE in fields:
        kw["cause"] = _fixed(fields[Tag.CAUSE], 1, "CAUSE")[0]
    if Tag.UE_ADDR in fields:
        kw["ue_addr"] = ipaddress.IPv4Address(_fixed(fields[Tag.UE_ADDR], 4, "UE_ADDR"))
    if Tag.UE_PORT in fields:
        port = struct.unpack("!H", _fixed(fields[Tag.UE_PORT], 2, "UE_PORT"))[0]
        if port == 0:
            raise EpcError("UE_PORT: zero")
        kw["ue_port"] = port
    if Tag.NAS in fields:
        inner = decode(fields[Tag.NAS])
        if inner.kind in (Kind.S1_UPLINK, Kind.S1_DOWNLINK):
            raise EpcError("NAS: an S1 message cannot be wrapped in another")
        kw["nas"] = fields[Tag.NAS]
    if Tag.PREFIX6 in fields:
        kw["prefix6"] = _prefix6(fields[Tag.PREFIX6])
    return Message(kind, seq, **kw)  # type: ignore[arg-type]


def _prefix6(value: bytes) -> IPv6Network:
    raw = _fixed(value, 17, "PREFIX6")
    if raw[0] > 128:
        raise EpcError(f"PREFIX6: prefix length {raw[0]} above 128")
    try:
        return IPv6Network((raw[1:], raw[0]))
    except ValueError:
        raise EpcError("PREFIX6: bits set beyond the prefix length") from None


def response(key: bytes, rand: bytes) -> bytes:
    """RES = XRES: the subscriber key's HMAC-SHA256 over RAND, first 16 octets (a stand-in
    for AKA's f2; what matters here is where the key lives, not the algorithm)."""
    return hmac.new(key, _fixed(rand, RAND_LEN, "RAND"), hashlib.sha256).digest()[:RES_LEN]


def verify(key: bytes, rand: bytes, res: bytes) -> bool:
    return hmac.compare_digest(response(key, rand), res)
