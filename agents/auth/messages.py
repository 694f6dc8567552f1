"""Wire encoding of the authentication messages (see docs/protocol.md for the format).

Every message class packs to bytes and strictly unpacks from bytes: exact lengths, no trailing
octets, bounded counts, canonical names and prefixes; a violation raises a typed AuthError.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any, NamedTuple

from .errors import (
    BadVersion,
    MalformedMessage,
    Oversized,
    Truncated,
    UnknownType,
    UnsupportedSuite,
)
from .kdf import NONCE_LEN, TAG_LEN
from .keys import MAX_NAME_LEN, Suite, is_canonical_name

VERSION = 1


class MsgType(enum.IntEnum):
    AUTH = 1
    AUTH_REPLY = 2
    REMSK = 3
    REMSK_ACK = 4
    FAILURE = 5
    COOKIE = 6
    REDIRECT = 7  # reserved for the AR-to-AR redirect; not yet defined


FLAG_MOBILITY = 0x01
FLAG_COOKIE = 0x02
FLAG_PREVIOUS = 0x04  # AUTH names the authenticator the peer was attached to before
FLAG_IDLE = 0x08  # AUTH: the MN goes idle; keep its addresses and page it (draft 4)
FLAG_PAGE = 0x10  # AUTH between ARs: page the MN holding these addresses on your access link
# AUTH between ARs: the timestamp of the MN's AUTH this redirect follows (8 octets after the
# previous name), so that the AR asked can tell whose attachment is the MN's newer move.
FLAG_ORIGIN = 0x20
ORIGIN_LEN = 8
FLAG_TAL = 0x02  # AUTH_REPLY: a Tracking Area List follows the address list
# AUTH, beyond the draft: a stapled DNSSEC bundle (agents/staple.py, docs/protocol.md 6.9).
FLAG_STAPLED = 0x80
STAPLE_VERSION = 1
MAX_STAPLE_LEN = 1400  # what fits in one 1,500-octet datagram beside the rest of an AUTH
MAX_TAL = 8
SESSION_ID_LEN = 8
COOKIE_LEN = 16
MAX_ADDRESSES = 16
FAMILY_V4 = 4
FAMILY_V6 = 6

Prefix = IPv4Network | IPv6Network
AddressLike = Prefix | IPv4Address | IPv6Address | str

# Fixed-size parts; the variable parts are two names and an address list.
AUTH_FIXED = 4 + 8 + NONCE_LEN + NONCE_LEN  # version type flags suite, timestamp, two nonces
AUTH_MIN_LEN = AUTH_FIXED + 2 + 2 + 1 + TAG_LEN
AUTH_MAX_PLAIN = (AUTH_FIXED + 3 * (1 + MAX_NAME_LEN) + 1 + MAX_ADDRESSES * 18
                  + COOKIE_LEN + TAG_LEN)
# With a staple, the AUTH must still be one unfragmented IPv4 datagram on a 1,500-octet link.
AUTH_MAX_STAPLED = 1500 - 20 - 8
AUTH_MAX_LEN = max(AUTH_MAX_PLAIN, AUTH_MAX_STAPLED)
REPLY_FIXED = 3 + SESSION_ID_LEN + 2 * NONCE_LEN
REPLY_MIN_LEN = REPLY_FIXED + 1 + TAG_LEN
REPLY_MAX_LEN = (REPLY_FIXED + 1 + MAX_ADDRESSES * 18 + 1 + MAX_TAL * (1 + MAX_NAME_LEN)
                 + TAG_LEN)
REMSK_LEN = 3 + SESSION_ID_LEN + 8 + NONCE_LEN + TAG_LEN
REMSK_ACK_LEN = 3 + SESSION_ID_LEN + 2 * NONCE_LEN + TAG_LEN
FAILURE_LEN = 3 + NONCE_LEN
COOKIE_REPLY_LEN = 3 + NONCE_LEN + COOKIE_LEN
MIN_DATAGRAM = FAILURE_LEN
MAX_DATAGRAM = AUTH_MAX_LEN

_AUTH_HEAD = struct.Struct("!BBBBQ16s16sB")
_REPLY_HEAD = struct.Struct("!BBB8s16s16sB")
_REMSK = struct.Struct("!BBB8sQ16s16s")
_REMSK_ACK = struct.Struct("!BBB8s16s16s16s")
_FAILURE = struct.Struct("!BBB16s")
_COOKIE = struct.Struct("!BBB16s16s")
_U64_MAX = (1 << 64) - 1

# Decoded names and prefixes repeat from message to message; bounded so junk cannot grow them.
_CACHE_MAX = 4096
_names: dict[bytes, str] = {}
_prefixes: dict[bytes, Prefix] = {}
_blocks: dict[bytes, tuple[Prefix, ...]] = {}


def to_prefix(value: AddressLike) -> Prefix:
    """Normalise an address or prefix to a network; an address becomes a host prefix."""
    if isinstance(value, IPv4Network | IPv6Network):
        return value
    if isinstance(value, IPv4Address | IPv6Address):
        return ipaddress.ip_network(value)
    return ipaddress.ip_network(value, strict=True)


def encode_prefix(prefix: Prefix) -> bytes:
    family = FAMILY_V4 if prefix.version == 4 else FAMILY_V6
    return bytes((family, prefix.prefixlen)) + prefix.network_address.packed


def encode_addresses(prefixes: Iterable[Prefix]) -> bytes:
    items = [encode_prefix(p) for p in prefixes]
    if len(items) > MAX_ADDRESSES:
        raise ValueError(f"at most {MAX_ADDRESSES} addresses fit in a message")
    if len(set(items)) != len(items):
        raise ValueError("duplicate address in list")
    return bytes((len(items),)) + b"".join(items)


def _decode_prefix(item: bytes) -> Prefix:
    cached = _prefixes.get(item)
    if cached is not None:
        return cached
    family, plen = item[0], item[1]
    prefix: Prefix
    try:
        if family == FAMILY_V4 and plen <= 32:
            prefix = IPv4Network((item[2:], plen), strict=True)
        elif family == FAMILY_V6 and plen <= 128:
            prefix = IPv6Network((item[2:], plen), strict=True)
        else:
            raise MalformedMessage(f"bad address family {family} / prefix length {plen}")
    except ValueError:
        raise MalformedMessage("address has host bits set beyond its prefix length") from None
    if len(_prefixes) >= _CACHE_MAX:
        _prefixes.clear()
    _prefixes[item] = prefix
    return prefix


def _decode_block(block: bytes) -> tuple[Prefix, ...]:
    """Strictly decode a whole address list (count octet, then items) that must fill ``block``."""
    count = block[0]
    if count > MAX_ADDRESSES:
        raise MalformedMessage(f"address count {count} exceeds {MAX_ADDRESSES}")
    end = len(block)
    off = 1
    out: list[Prefix] = []
    seen: set[bytes] = set()
    for _ in range(count):
        if off >= end:
            raise Truncated("address list cut short")
        size = 6 if block[off] == FAMILY_V4 else 18
        if off + size > end:
            raise Truncated("address cut short")
        item = block[off:off + size]
        if item in seen:
            raise MalformedMessage("duplicate address in list")
        seen.add(item)
        out.append(_decode_prefix(item))
        off += size
    if off != end:
        raise MalformedMessage(f"{end - off} unexpected octets after the address list")
    addrs = tuple(out)
    if len(_blocks) >= _CACHE_MAX:
        _blocks.clear()
    _blocks[block] = addrs
    return addrs


def _address_list_end(data: bytes, off: int, end: int) -> int:
    """Where the address list starting at ``off`` ends (it is decoded strictly later)."""
    if off >= end:
        raise Truncated("address list missing")
    count = data[off]
    if count > MAX_ADDRESSES:
        raise MalformedMessage(f"address count {count} exceeds {MAX_ADDRESSES}")
    pos = off + 1
    for _ in range(count):
        if pos >= end:
            raise Truncated("address list cut short")
        pos += 6 if data[pos] == FAMILY_V4 else 18
    if pos > end:
        raise Truncated("address cut short")
    return pos


def encode_names(names: Iterable[str]) -> bytes:
    items = [_encode_name(n) for n in names]
    if len(items) > MAX_TAL:
        raise ValueError(f"at most {MAX_TAL} names fit in a list")
    return bytes((len(items),)) + b"".join(items)


def _decode_names(block: bytes, what: str) -> tuple[str, ...]:
    """A count octet then that many length-prefixed names, filling ``block`` exactly."""
    if not block:
        raise Truncated(f"{what} list missing")
    count = block[0]
    if count > MAX_TAL:
        raise MalformedMessage(f"{what} count {count} exceeds {MAX_TAL}")
    out: list[str] = []
    off = 1
    for _ in range(count):
        if off >= len(block):
            raise Truncated(f"{what} list cut short")
        nxt = off + 1 + block[off]
        if nxt > len(block):
            raise Truncated(f"{what} name cut short")
        out.append(_decode_name(block[off + 1:nxt], what))
        off = nxt
    if off != len(block):
        raise MalformedMessage(f"{len(block) - off} unexpected octets after the {what} list")
    return tuple(out)


def _decode_name(raw: bytes, what: str) -> str:
    name = _names.get(raw)
    if name is None:
        if not is_canonical_name(raw):
            raise MalformedMessage(f"{what} is not a canonical DNS name")
        name = raw.decode("ascii")
        if len(_names) >= _CACHE_MAX:
            _names.clear()
        _names[raw] = name
    return name


def _encode_name(name: str) -> bytes:
    raw = name.encode("ascii")
    if not is_canonical_name(raw):
        raise ValueError(f"not a canonical DNS name: {name!r}")
    return bytes((len(raw),)) + raw


def _check_nonce(value: bytes, what: str) -> None:
    if len(value) != NONCE_LEN:
        raise ValueError(f"{what} must be {NONCE_LEN} octets")


def _sealed(mac: bytes, body: Callable[[], bytes]) -> bytes:
    """A message's octets: its body, then its MAC (a MAC of the wrong size is refused first)."""
    if len(mac) != TAG_LEN:
        raise ValueError(f"MAC must be {TAG_LEN} octets")
    return body() + mac


def _check_head(data: bytes, want: MsgType, min_len: int, max_len: int) -> None:
    n = len(data)
    if n < 3:
        raise Truncated(f"{n} octets is shorter than the header")
    if data[0] != VERSION:
        raise BadVersion(f"version {data[0]} is not {VERSION}")
    if data[1] != want:
        raise UnknownType(f"type {data[1]} where {want.name} was expected")
    if n < min_len:
        raise Truncated(f"{want.name} of {n} octets is shorter than the minimum {min_len}")
    if n > max_len:
        raise Oversized(f"{want.name} of {n} octets is longer than the maximum {max_len}")


def _unpack_fixed(data: bytes, want: MsgType, length: int,
                  layout: struct.Struct) -> tuple[Any, ...]:
    """The fields after the header of a fixed-size message that defines no flags."""
    _check_head(data, want, length, length)
    _, _, flags, *fields = layout.unpack(data)
    if flags:
        raise MalformedMessage(f"unknown flags 0x{flags:02x}")
    return tuple(fields)


class AuthMessage(NamedTuple):
    """The one-message authentication, peer to authenticator."""

    suite: int
    timestamp_us: int
    peer_nonce: bytes
    auth_nonce: bytes
    peer_name: str
    auth_name: str
    addresses: tuple[Prefix, ...]
    mobility: bool
    cookie: bytes | None
    mac: bytes
    previous: str | None = None  # the peer's previous authenticator, a hint for redirects
    idle: bool = False
    page: bool = False
    staple: bytes | None = None  # flag S: the DNSSEC bundle, DNS wire format (section 6.9)
    origin_us: int | None = None  # flag O: the MN's AUTH timestamp a redirect follows

    def body(self) -> bytes:
        """Every octet the MAC covers: the message without its trailing tag."""
        _check_nonce(self.peer_nonce, "peer nonce")
        _check_nonce(self.auth_nonce, "authenticator nonce")
        if not 0 <= self.timestamp_us <= _U64_MAX:
            raise ValueError("timestamp out of range")
        if self.suite not in (Suite.P256, Suite.X25519):
            raise ValueError(f"unknown suite {self.suite}")
        flags = FLAG_MOBILITY if self.mobility else 0
        tail = b""
        if self.cookie is not None:
            if len(self.cookie) != COOKIE_LEN:
                raise ValueError(f"cookie must be {COOKIE_LEN} octets")
            flags |= FLAG_COOKIE
            tail = self.cookie
        previous = b""
        if self.previous is not None:
            flags |= FLAG_PREVIOUS
            previous = _encode_name(self.previous)
        if self.origin_us is not None:
            if not self.mobility or not 0 <= self.origin_us <= _U64_MAX:
                raise ValueError("an origin timestamp needs mobility and must fit 64 bits")
            flags |= FLAG_ORIGIN
            previous += struct.pack("!Q", self.origin_us)
        flags |= (FLAG_IDLE if self.idle else 0) | (FLAG_PAGE if self.page else 0)
        if self.staple is not None:
            flags |= FLAG_STAPLED
            previous += encode_staple(self.staple)
        body = b"".join((
            struct.pack("!BBBBQ", VERSION, MsgType.AUTH, flags, self.suite, self.timestamp_us),
            self.peer_nonce, self.auth_nonce,
            _encode_name(self.peer_name), _encode_name(self.auth_name), previous,
            encode_addresses(self.addresses), tail,
        ))
        if len(body) + TAG_LEN > AUTH_MAX_LEN:
            raise ValueError(f"AUTH of {len(body) + TAG_LEN} octets exceeds one datagram "
                             f"({AUTH_MAX_LEN})")
        return body

    def pack(self) -> bytes:
        return _sealed(self.mac, self.body)

    @classmethod
    def unpack(cls, data: bytes) -> AuthMessage:
        n = len(data)
        if n > AUTH_MAX_PLAIN and not data[2] & FLAG_STAPLED:
            raise Oversized(f"AUTH of {n} octets without a staple is longer than "
                            f"{AUTH_MAX_PLAIN}")
        if n < AUTH_MIN_LEN or n > AUTH_MAX_LEN or data[0] != VERSION or data[1] != MsgType.AUTH:
            _check_head(data, MsgType.AUTH, AUTH_MIN_LEN, AUTH_MAX_LEN)
        _, _, flags, suite, ts, n_p, n_a, n1 = _AUTH_HEAD.unpack_from(data)
        if flags & ~(FLAG_MOBILITY | FLAG_COOKIE | FLAG_PREVIOUS | FLAG_IDLE | FLAG_PAGE
                     | FLAG_STAPLED | FLAG_ORIGIN):
            raise MalformedMessage(f"unknown flags 0x{flags:02x}")
        if flags & FLAG_ORIGIN and not flags & FLAG_MOBILITY:
            raise MalformedMessage("flag O (origin) without flag M")
        if suite != Suite.P256 and suite != Suite.X25519:
            raise UnsupportedSuite(f"unknown suite {suite}")
        end = n - TAG_LEN
        # Bounds are checked before each cache lookup: a cut-short slice could otherwise
        # match a cached name.
        off = AUTH_FIXED + 1 + n1
        if off >= end:
            raise Truncated("peer name cut short")
        peer = _names.get(data[AUTH_FIXED + 1:off]) or _decode_name(data[AUTH_FIXED + 1:off],
                                                                    "peer name")
        off2 = off + 1 + data[off]
        if off2 > end:
            raise Truncated("authenticator name cut short")
        auth = _names.get(data[off + 1:off2]) or _decode_name(data[off + 1:off2],
                                                              "authenticator name")
        previous = None
        if flags & FLAG_PREVIOUS:
            if off2 >= end:
                raise Truncated("previous authenticator name missing")
            off3 = off2 + 1 + data[off2]
            if off3 > end:
                raise Truncated("previous authenticator name cut short")
            previous = _names.get(data[off2 + 1:off3]) or _decode_name(
                data[off2 + 1:off3], "previous authenticator name")
            off2 = off3
        origin = None
        if flags & FLAG_ORIGIN:
            if off2 + ORIGIN_LEN > end:
                raise Truncated("origin timestamp cut short")
            (origin,) = struct.unpack_from("!Q", data, off2)
            off2 += ORIGIN_LEN
        staple = None
        if flags & FLAG_STAPLED:
            staple, off2 = _decode_staple(data, off2, end)
        cookie = None
        if flags & FLAG_COOKIE:
            end -= COOKIE_LEN
            cookie = data[end:end + COOKIE_LEN]
        if off2 >= end:
            raise Truncated("address list missing")
        block = data[off2:end]
        addrs = _blocks.get(block)
        if addrs is None:
            addrs = _decode_block(block)
        return cls(suite, ts, n_p, n_a, peer, auth, addrs, bool(flags & FLAG_MOBILITY), cookie,
                   data[n - TAG_LEN:], previous, bool(flags & FLAG_IDLE),
                   bool(flags & FLAG_PAGE), staple, origin)

    def address_block(self, data: bytes) -> bytes:
        """The encoded address list inside ``data``, the datagram this message came from."""
        start = AUTH_FIXED + 2 + len(self.peer_name) + len(self.auth_name)
        if self.previous is not None:
            start += 1 + len(self.previous)
        if self.origin_us is not None:
            start += ORIGIN_LEN
        if self.staple is not None:
            start += 3 + len(self.staple)
        end = len(data) - TAG_LEN - (COOKIE_LEN if self.cookie is not None else 0)
        return data[start:end]


def encode_staple(staple: bytes) -> bytes:
    """Flag S's field: staple version, a 16-bit length, then the bundle's octets."""
    if not 0 < len(staple) <= MAX_STAPLE_LEN:
        raise ValueError(f"a staple is 1 to {MAX_STAPLE_LEN} octets, not {len(staple)}")
    return struct.pack("!BH", STAPLE_VERSION, len(staple)) + staple


def _decode_staple(data: bytes, off: int, end: int) -> tuple[bytes, int]:
    """The staple at ``off`` (its DNS content is parsed by agents/staple.py) and its end."""
    if off + 3 > end:
        raise Truncated("staple header cut short")
    version, length = struct.unpack_from("!BH", data, off)
    if version != STAPLE_VERSION:
        raise BadVersion(f"staple version {version} is not {STAPLE_VERSION}")
    if not 0 < length <= MAX_STAPLE_LEN:
        raise MalformedMessage(f"staple length {length} is not 1 to {MAX_STAPLE_LEN}")
    if off + 3 + length >= end:
        raise Truncated("staple cut short")
    return data[off + 3:off + 3 + length], off + 3 + length


class AuthReply(NamedTuple):
    """The authenticator's answer: fresh nonce (re-MSK), session id and re-routed addresses."""

    mobility: bool
    session_id: bytes
    peer_nonce: bytes
    auth_nonce: bytes
    rerouted: tuple[Prefix, ...]
    mac: bytes
    tal: tuple[str, ...] = ()  # the Tracking Area List for idle mode (draft 4)

    def body(self) -> bytes:
        _check_nonce(self.peer_nonce, "peer nonce")
        _check_nonce(self.auth_nonce, "authenticator nonce")
        if len(self.session_id) != SESSION_ID_LEN:
            raise ValueError(f"session id must be {SESSION_ID_LEN} octets")
        flags = (FLAG_MOBILITY if self.mobility else 0) | (FLAG_TAL if self.tal else 0)
        return b"".join((
            bytes((VERSION, MsgType.AUTH_REPLY, flags)), self.session_id,
            self.peer_nonce, self.auth_nonce, encode_addresses(self.rerouted),
            encode_names(self.tal) if self.tal else b"",
        ))

    def pack(self) -> bytes:
        return _sealed(self.mac, self.body)

    @classmethod
    def unpack(cls, data: bytes) -> AuthReply:
        _check_head(data, MsgType.AUTH_REPLY, REPLY_MIN_LEN, REPLY_MAX_LEN)
        _, _, flags, sid, n_p, n_a, _ = _REPLY_HEAD.unpack_from(data)
        if flags & ~(FLAG_MOBILITY | FLAG_TAL):
            raise MalformedMessage(f"unknown flags 0x{flags:02x}")
        end = len(data) - TAG_LEN
        tal: tuple[str, ...] = ()
        if flags & FLAG_TAL:
            mid = _address_list_end(data, REPLY_FIXED, end)
            tal = _decode_names(data[mid:end], "tracking area")
            if not tal:
                raise MalformedMessage("TAL flag set with an empty list")
            end = mid
        block = data[REPLY_FIXED:end]
        addrs = _blocks.get(block)
        if addrs is None:
            addrs = _decode_block(block)
        return cls(bool(flags & FLAG_MOBILITY), sid, n_p, n_a, addrs, data[len(data) - TAG_LEN:],
                   tal)


class Remsk(NamedTuple):
    """A mid-session re-MSK request carrying the sender's fresh nonce."""

    session_id: bytes
    timestamp_us: int
    nonce: bytes
    mac: bytes

    def body(self) -> bytes:
        _check_nonce(self.nonce, "nonce")
        if len(self.session_id) != SESSION_ID_LEN:
            raise ValueError(f"session id must be {SESSION_ID_LEN} octets")
        if not 0 <= self.timestamp_us <= _U64_MAX:
            raise ValueError("timestamp out of range")
        return struct.pack("!BBB8sQ16s", VERSION, MsgType.REMSK, 0, self.session_id,
                           self.timestamp_us, self.nonce)

    def pack(self) -> bytes:
        return _sealed(self.mac, self.body)

    @classmethod
    def unpack(cls, data: bytes) -> Remsk:
        return cls(*_unpack_fixed(data, MsgType.REMSK, REMSK_LEN, _REMSK))


class RemskAck(NamedTuple):
    """The answer to a re-MSK: echoes the requester's nonce and adds the responder's."""

    session_id: bytes
    echo_nonce: bytes
    nonce: bytes
    mac: bytes

    def body(self) -> bytes:
        _check_nonce(self.echo_nonce, "echoed nonce")
        _check_nonce(self.nonce, "nonce")
        if len(self.session_id) != SESSION_ID_LEN:
            raise ValueError(f"session id must be {SESSION_ID_LEN} octets")
        return b"".join((bytes((VERSION, MsgType.REMSK_ACK, 0)), self.session_id,
                         self.echo_nonce, self.nonce))

    def pack(self) -> bytes:
        return _sealed(self.mac, self.body)

    @classmethod
    def unpack(cls, data: bytes) -> RemskAck:
        return cls(*_unpack_fixed(data, MsgType.REMSK_ACK, REMSK_ACK_LEN, _REMSK_ACK))


class Failure(NamedTuple):
    """The generic, unauthenticated failure reply; ``echo`` names the rejected request."""

    echo: bytes

    def pack(self) -> bytes:
        _check_nonce(self.echo, "echo")
        return _FAILURE.pack(VERSION, MsgType.FAILURE, 0, self.echo)

    @classmethod
    def unpack(cls, data: bytes) -> Failure:
        return cls(*_unpack_fixed(data, MsgType.FAILURE, FAILURE_LEN, _FAILURE))


class CookieReply(NamedTuple):
    """The load-time challenge: resend the AUTH with this cookie from the same address."""

    echo: bytes
    cookie: bytes

    def pack(self) -> bytes:
        _check_nonce(self.echo, "echo")
        if len(self.cookie) != COOKIE_LEN:
            raise ValueError(f"cookie must be {COOKIE_LEN} octets")
        return _COOKIE.pack(VERSION, MsgType.COOKIE, 0, self.echo, self.cookie)

    @classmethod
    def unpack(cls, data: bytes) -> CookieReply:
        return cls(*_unpack_fixed(data, MsgType.COOKIE, COOKIE_REPLY_LEN, _COOKIE))


Message = AuthMessage | AuthReply | Remsk | RemskAck | Failure | CookieReply

_BY_TYPE: dict[int, type[AuthMessage] | type[AuthReply] | type[Remsk] | type[RemskAck]
               | type[Failure] | type[CookieReply]] = {
    MsgType.AUTH: AuthMessage, MsgType.AUTH_REPLY: AuthReply, MsgType.REMSK: Remsk,
    MsgType.REMSK_ACK: RemskAck, MsgType.FAILURE: Failure, MsgType.COOKIE: CookieReply,
}


def unpack_any(data: bytes) -> Message:
    """Unpack a datagram of any defined type; raise a typed AuthError otherwise."""
    if len(data) < 3:
        raise Truncated(f"{len(data)} octets is shorter than the header")
    if data[0] != VERSION:
        raise BadVersion(f"version {data[0]} is not {VERSION}")
    cls = _BY_TYPE.get(data[1])
    if cls is None:
        raise UnknownType(f"type {data[1]} is not defined")
    return cls.unpack(data)


def request_echo(data: bytes) -> bytes:
    """The 16 octets a failure reply echoes: the nonce that identifies the rejected request."""
    if len(data) >= 28 and data[1] == MsgType.AUTH:
        return data[12:28]
    if len(data) >= 35 and data[1] == MsgType.REMSK:
        return data[19:35]
    if len(data) >= 27 and data[1] == MsgType.REMSK_ACK:
        return data[11:27]
    return bytes(NONCE_LEN)
