"""Router Advertisements after a handoff (draft 4, issue 18): the AR tells the MN, in a real
ICMPv6 RA on the access link, exactly which of its IPv6 prefixes it re-routed; the MN binds
the ones the RA leaves out at its Home Agent.

The message (RFC 4861 4.2, Prefix Information options 4.6.2) with ``pack()`` and a strict
``unpack()``, the AR's sender, the MN's receiver and its comparison (docs/ipv6.md,
docs/protocol.md section 15).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any, Protocol

from .contract import ACCESS_MAC

ICMP6_RA = 134
HOP_LIMIT = 255  # RFC 4861 6.1.2: anything less was forwarded by a router, not on-link
INFINITY = 0xFFFFFFFF
OPT_SLLA, OPT_PREFIX = 1, 3
FLAG_ON_LINK, FLAG_AUTONOMOUS = 0x80, 0x40
HEADER = struct.Struct("!BBHBBHII")  # type, code, checksum, hop limit, flags, lifetime, ...
PREFIX_BODY = struct.Struct("!BBII4x16s")  # after type and length: RFC 4861 4.6.2
MAX_RA = 1280 - 40  # one unfragmented datagram on any IPv6 link
ICMP6_FILTER = 1  # <netinet/icmp6.h>: not in Python's socket module
NEIGHBOUR_WAIT_S = 0.5  # the MN's ARP entry, made by the AUTH_REPLY just sent
ARP_TABLE = Path("/proc/net/arp")
ATF_COM = 0x2  # a complete ARP entry


class RaError(ValueError):
    """A datagram that is not a well-formed RA from the current AR's link (dropped)."""


def eui64_link_local(mac: str) -> str:
    """The link-local address the kernel derives from a MAC (RFC 4291 appendix A)."""
    octets = bytes.fromhex(mac.replace(":", ""))
    eui = bytes([octets[0] ^ 0x02, *octets[1:3], 0xFF, 0xFE, *octets[3:]])
    return str(IPv6Address(b"\xfe\x80" + bytes(6) + eui))


# Every AR's access interface has this address (the anycast gateway): the RA's source.
ROUTER_LINK_LOCAL = IPv6Address(eui64_link_local(ACCESS_MAC))


@dataclass(frozen=True)
class PrefixInfo:
    """One Prefix Information option. Re-routed prefixes go with L and A clear: the MN holds
    its prefix already and reaches everything through the AR (docs/ipv6.md)."""

    prefix: IPv6Network
    on_link: bool = False
    autonomous: bool = False
    valid_s: int = INFINITY
    preferred_s: int = INFINITY

    def pack(self) -> bytes:
        flags = (FLAG_ON_LINK if self.on_link else 0) | (FLAG_AUTONOMOUS if self.autonomous
                                                         else 0)
        return bytes((OPT_PREFIX, 4)) + PREFIX_BODY.pack(
            self.prefix.prefixlen, flags, self.valid_s, self.preferred_s,
            self.prefix.network_address.packed)

    @classmethod
    def unpack(cls, body: bytes) -> PrefixInfo:
        """``body``: the option after its type and length octets (30 octets)."""
        if len(body) != PREFIX_BODY.size:
            raise RaError(f"prefix information option of {len(body) + 2} octets, not 32")
        plen, flags, valid, preferred, raw = PREFIX_BODY.unpack(body)
        if plen > 128:
            raise RaError(f"prefix length {plen} > 128")
        if flags & ~(FLAG_ON_LINK | FLAG_AUTONOMOUS) & 0xFF:
            raise RaError(f"prefix flags {flags:#04x}: reserved bits set")
        if preferred > valid:
            raise RaError(f"preferred lifetime {preferred} > valid lifetime {valid}")
        try:
            prefix = IPv6Network((IPv6Address(raw), plen))
        except ValueError:
            raise RaError(f"prefix {IPv6Address(raw)}/{plen} has host bits set") from None
        return cls(prefix, bool(flags & FLAG_ON_LINK), bool(flags & FLAG_AUTONOMOUS), valid,
                   preferred)


@dataclass(frozen=True)
class RouterAdvert:
    """An ICMPv6 Router Advertisement (RFC 4861 4.2). ``pack`` leaves the checksum 0 unless
    given both addresses: a raw ICMPv6 socket has the kernel fill it."""

    prefixes: tuple[PrefixInfo, ...] = ()
    source_mac: bytes | None = None  # the source link-layer address option (Ethernet)
    cur_hop_limit: int = 0  # 0: unspecified
    flags: int = 0  # M, O and the later flags: none
    router_lifetime_s: int = 0  # 0: not a default router (the MN's default is provisioned)
    reachable_ms: int = 0
    retrans_ms: int = 0

    def listed(self) -> list[IPv6Network]:
        return [p.prefix for p in self.prefixes]

    def pack(self, src: IPv6Address | None = None, dst: IPv6Address | None = None) -> bytes:
        out = bytearray(HEADER.pack(ICMP6_RA, 0, 0, self.cur_hop_limit, self.flags,
                                    self.router_lifetime_s, self.reachable_ms, self.retrans_ms))
        if self.source_mac is not None:
            if len(self.source_mac) != 6:
                raise RaError("source link-layer address: 6 octets (Ethernet)")
            out += bytes((OPT_SLLA, 1)) + self.source_mac
        for p in self.prefixes:
            out += p.pack()
        if len(out) > MAX_RA:
            raise RaError(f"{len(self.prefixes)} prefixes do not fit one RA")
        if src is not None and dst is not None:
            out[2:4] = icmp6_checksum(src, dst, bytes(out)).to_bytes(2, "big")
        return bytes(out)

    @classmethod
    def unpack(cls, data: bytes, src: IPv6Address | None = None,
               dst: IPv6Address | None = None) -> RouterAdvert:
        """Strict: the header, every option's framing, each known option's length and
        fields; unknown options are skipped (RFC 4861 4.6 requires it). With ``src`` and
        ``dst`` the checksum is verified too (a raw socket's kernel already did)."""
        if len(data) < HEADER.size:
            raise RaError(f"{len(data)} octets: shorter than an RA header")
        if len(data) > MAX_RA:
            raise RaError(f"{len(data)} octets: longer than one RA")
        kind, code, _, hops, flags, lifetime, reachable, retrans = HEADER.unpack_from(data)
        if kind != ICMP6_RA:
            raise RaError(f"ICMPv6 type {kind}, not a Router Advertisement")
        if code != 0:
            raise RaError(f"ICMPv6 code {code}, not 0")
        if src is not None and dst is not None and icmp6_checksum(src, dst, data) != 0:
            raise RaError("bad ICMPv6 checksum")
        mac: bytes | None = None
        prefixes: list[PrefixInfo] = []
        i = HEADER.size
        while i < len(data):
            if len(data) - i < 2:
                raise RaError(f"option at {i}: truncated")
            opt, units = data[i], data[i + 1]
            if units == 0:
                raise RaError(f"option {opt} at {i}: length 0")
            end = i + 8 * units
            if end > len(data):
                raise RaError(f"option {opt} at {i}: {8 * units} octets, {len(data) - i} left")
            body = data[i + 2:end]
            if opt == OPT_SLLA:
                if units != 1 or mac is not None:
                    raise RaError("source link-layer address: one, of 8 octets")
                mac = bytes(body)
            elif opt == OPT_PREFIX:
                info = PrefixInfo.unpack(bytes(body))
                if any(p.prefix == info.prefix for p in prefixes):
                    raise RaError(f"prefix {info.prefix} listed twice")
                prefixes.append(info)
            i = end
        return cls(tuple(prefixes), mac, hops, flags, lifetime, reachable, retrans)


def icmp6_checksum(src: IPv6Address, dst: IPv6Address, message: bytes) -> int:
    """RFC 4443 2.3 over the pseudo-header; 0 over a message that carries its checksum."""
    data = src.packed + dst.packed + struct.pack("!I3xB", len(message), 58) + message
    if len(data) % 2:
        data += b"\x00"
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def rerouted_advert(prefixes: Iterable[IPv6Network]) -> RouterAdvert:
    """The RA an AR sends after a handoff: exactly the prefixes it re-routed."""
    return RouterAdvert(tuple(PrefixInfo(p) for p in prefixes),
                        bytes.fromhex(ACCESS_MAC.replace(":", "")))


def accept(data: bytes, source: IPv6Address, hop_limit: int | None, ifindex: int,
           access: int) -> RouterAdvert:
    """The MN's checks before it believes an RA (RFC 4861 6.1.2, and our anycast gateway):
    on its access interface, hop limit 255, from the ARs' link-local address."""
    if ifindex != access:
        raise RaError(f"arrived on interface {ifindex}, not the access interface {access}")
    if hop_limit != HOP_LIMIT:
        raise RaError(f"hop limit {hop_limit}, not {HOP_LIMIT}: not from this link")
    if source != ROUTER_LINK_LOCAL:
        raise RaError(f"from {source}, not the access router {ROUTER_LINK_LOCAL}")
    return RouterAdvert.unpack(data)


def refused(held: Sequence[IPv6Network], advertised: Iterable[IPv6Network],
            confirmed: Iterable[IPv6Network]) -> list[IPv6Network]:
    """The prefixes we hold that need the Home Agent (draft 4). An RA is not authenticated
    (no SEND here), so it may only narrow what the authenticated AUTH_REPLY confirmed:
    a prefix counts as re-routed when both list it."""
    routed = set(advertised) & set(confirmed)
    return [p for p in held if p not in routed]


def arp_mac(address: IPv4Address, ifname: str, table: str) -> bytes | None:
    """The MAC of a complete entry for ``address`` on ``ifname`` in /proc/net/arp's text."""
    for line in table.splitlines()[1:]:
        f = line.split()
        if len(f) < 6 or f[0] != str(address) or f[5] != ifname:
            continue
        try:
            flags, mac = int(f[2], 16), bytes.fromhex(f[3].replace(":", ""))
        except ValueError:
            continue
        if flags & ATF_COM and len(mac) == 6 and any(mac):
            return mac
    return None


def mac_link_local(mac: bytes) -> IPv6Address:
    return IPv6Address(eui64_link_local(mac.hex(":")))


class Sender(Protocol):
    ifname: str

    def send(self, advert: RouterAdvert, dst: IPv6Address) -> None: ...


class RaSender:
    """The AR's raw ICMPv6 socket on its access interface: hop limit 255, from the anycast
    gateway's link-local address, unicast to one MN's link-local address."""

    def __init__(self, ifname: str) -> None:
        self.ifname = ifname
        self.ifindex = socket.if_nametoindex(ifname)
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, HOP_LIMIT)
        self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, HOP_LIMIT)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        # Send only: without a filter every ICMPv6 datagram on the link would queue here.
        self.sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, b"\xff" * 32)
        self.sock.setblocking(False)

    def send(self, advert: RouterAdvert, dst: IPv6Address) -> None:
        info = ROUTER_LINK_LOCAL.packed + struct.pack("@I", self.ifindex)
        self.sock.sendmsg([advert.pack()], [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, info)],
                          0, (str(dst), 0, 0, self.ifindex))

    def close(self) -> None:
        self.sock.close()


async def advertise_rerouted(sender: Sender, mn: IPv4Address, prefixes: list[IPv6Network],
                             events: Callable[..., None], mn_name: str,
                             read_arp: Callable[[], str] = ARP_TABLE.read_text,
                             wait_s: float = NEIGHBOUR_WAIT_S) -> IPv6Address | None:
    """After a handoff: the RA listing ``prefixes`` to the MN whose AUTH came from ``mn``.

    The MN's link-local address is the EUI-64 one of the MAC its AUTH came from (our ARP
    entry for it, which the AUTH_REPLY just made): the access link is shared by every MN in
    the cell, so an RA to all nodes would tell the others their prefixes were refused.
    """
    deadline = time.monotonic() + wait_s
    while (mac := arp_mac(mn, sender.ifname, read_arp())) is None:
        if time.monotonic() >= deadline:
            events("ra_failed", mn=mn_name, error=f"no ARP entry for {mn} on {sender.ifname}")
            return None
        await asyncio.sleep(0.005)
    dst = mac_link_local(mac)
    try:
        sender.send(rerouted_advert(prefixes), dst)
    except OSError as exc:
        events("ra_failed", mn=mn_name, to=str(dst), error=str(exc))
        return None
    events("ra_sent", mn=mn_name, to=str(dst), prefixes=[str(p) for p in prefixes])
    return dst


class RaListener:
    """The MN's raw ICMPv6 socket on its access interface: RAs only (ICMP6_FILTER), with the
    hop limit and arrival interface of each, to ``on_advert`` once ``accept`` passed it."""

    def __init__(self, ifname: str, on_advert: Callable[[RouterAdvert], None],
                 on_drop: Callable[[str], None]) -> None:
        self.access = socket.if_nametoindex(ifname)
        self.on_advert = on_advert
        self.on_drop = on_drop
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        blocked = [0xFFFFFFFF] * 8
        blocked[ICMP6_RA >> 5] &= ~(1 << (ICMP6_RA & 31))
        self.sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("@8I", *blocked))
        self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
        self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        self.sock.setblocking(False)
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            data, anc, _, addr = self.sock.recvmsg(MAX_RA + 1, socket.CMSG_SPACE(20)
                                                   + socket.CMSG_SPACE(4))
        except OSError:
            return
        hops, ifindex = ancillary(anc)
        try:
            advert = accept(data, IPv6Address(str(addr[0]).split("%")[0]), hops, ifindex,
                            self.access)
        except (RaError, ValueError) as exc:
            self.on_drop(str(exc))
            return
        self.on_advert(advert)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()


def ancillary(anc: list[tuple[int, int, bytes]]) -> tuple[int | None, int]:
    """(hop limit, arrival interface) from recvmsg's control messages (None, 0 if absent)."""
    hops: int | None = None
    ifindex = 0
    for level, kind, data in anc:
        if level != socket.IPPROTO_IPV6:
            continue
        if kind == socket.IPV6_HOPLIMIT and len(data) >= 4:
            hops = int(struct.unpack("@i", data[:4])[0])
        elif kind == socket.IPV6_PKTINFO and len(data) >= 20:
            ifindex = int(struct.unpack("@I", data[16:20])[0])
    return hops, ifindex


RA_WAIT_S = 1.0  # after the AUTH_REPLY: no RA by then, and the reply's lists stand
DROP_LOG_S = 1.0  # a flood of bad RAs costs one event a second, not one each


@dataclass
class _Expected:
    ar: str
    t_sent: float
    held: list[IPv6Network]
    confirmed: list[IPv6Network]


class RaJudge:
    """The MN's side of draft 4: after each AUTH that claimed prefixes it waits for the RA,
    judges the first one that arrived after that AUTH was sent, and hands the prefixes it
    holds but the RA does not list (or, with no RA in time, those the reply did not list)
    to ``on_refused``."""

    def __init__(self, events: Callable[..., None],
                 on_refused: Callable[[list[IPv6Network], str], None],
                 clock: Callable[[], float] = time.time, wait_s: float = RA_WAIT_S) -> None:
        self.events = events
        self.on_refused = on_refused
        self.clock = clock
        self.wait_s = wait_s
        self._pending: _Expected | None = None
        self._last: tuple[float, RouterAdvert] | None = None
        self._serial = 0
        self._last_drop = -DROP_LOG_S
        self.counts = {"received": 0, "dropped": 0, "judged": 0, "missing": 0}
        self.judged: dict[str, Any] | None = None  # the last judgement, for the status

    def expect(self, ar: str, t_sent: float, held: list[IPv6Network],
               confirmed: list[IPv6Network]) -> None:
        """An AUTH to ``ar`` sent at ``t_sent`` was answered, confirming ``confirmed``."""
        self._serial += 1
        self._pending = _Expected(ar, t_sent, held, confirmed)
        serial = self._serial
        asyncio.get_running_loop().call_later(self.wait_s, self._expire, serial)
        if self._last is not None and self._last[0] >= t_sent:
            self._judge(self._last[1])

    def advert(self, advert: RouterAdvert) -> None:
        self.counts["received"] += 1
        self._last = (self.clock(), advert)
        if self._pending is not None:
            self._judge(advert)

    def dropped(self, reason: str) -> None:
        self.counts["dropped"] += 1
        now = self.clock()
        if now - self._last_drop >= DROP_LOG_S:
            self._last_drop = now
            self.events("ra_dropped", reason=reason, dropped=self.counts["dropped"])

    def _judge(self, advert: RouterAdvert) -> None:
        want = self._pending
        assert want is not None
        self._pending = None
        self.counts["judged"] += 1
        out = refused(want.held, advert.listed(), want.confirmed)
        self.judged = {"ar": want.ar, "listed": [str(p) for p in advert.listed()],
                       "refused": [str(p) for p in out], "t": self.clock()}
        self.events("ra_received", **self.judged)
        self.on_refused(out, "ra")

    def _expire(self, serial: int) -> None:
        want = self._pending
        if want is None or serial != self._serial:
            return
        self._pending = None
        self.counts["missing"] += 1
        out = refused(want.held, want.confirmed, want.confirmed)
        self.events("ra_missing", ar=want.ar, refused=[str(p) for p in out])
        self.on_refused(out, "auth_reply")

    def status(self) -> dict[str, Any]:
        return {**self.counts, "last": self.judged}
