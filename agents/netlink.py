"""A minimal rtnetlink client for the AR's hot path: route replace, delete and get, and link
lookups, each one synchronous request and its answer on a raw socket.

pyroute2's synchronous API runs an event loop per call; under the agent's load that cost
2 to 6 ms per handoff step, which the handoff's interruption pays directly. Messages are
packed and parsed here with struct, strictly: a malformed answer raises NetlinkError.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

NETLINK_ROUTE = 0
NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTMGRP_LINK, RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_ROUTE = 0x1, 0x40, 0x400
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_DELNEIGH = 29
NDA_DST = 1
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLM_F_REPLACE, NLM_F_CREATE = 0x100, 0x400
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_TABLE = 1, 4, 5, 6, 15
RTA_ENCAP_TYPE, RTA_ENCAP = 21, 22
NLA_F_NESTED = 0x8000
# SRv6 (linux/lwtunnel.h, seg6_iptunnel.h, seg6_local.h): the encapsulation of a route, and
# the behaviours of a local SID.
LWTUNNEL_ENCAP_SEG6, LWTUNNEL_ENCAP_SEG6_LOCAL = 5, 7
SEG6_IPTUNNEL_SRH = 1
SEG6_IPTUN_MODE_ENCAP = 1
IPV6_SRCRT_TYPE_4 = 4  # the Segment Routing Header's routing type (RFC 8754)
SEG6_LOCAL_ACTION, SEG6_LOCAL_NH4, SEG6_LOCAL_NH6 = 1, 4, 5
SEG6_LOCAL_ACTION_END_DX6, SEG6_LOCAL_ACTION_END_DX4 = 5, 6
IFLA_IFNAME = 3
IFF_UP = 0x1
RT_TABLE_MAIN = 254
RTN_UNICAST = 1
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253

_NLMSGHDR = struct.Struct("=IHHII")
_RTMSG = struct.Struct("=BBBBBBBBI")
_IFINFOMSG = struct.Struct("=BxHiII")
_RTA = struct.Struct("=HH")
_NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type (linux/neighbour.h)
# The headers, for other decoders of the same messages (topologies/scenarios/routewatch.py).
NLMSGHDR, RTMSG, IFINFOMSG = _NLMSGHDR, _RTMSG, _IFINFOMSG


class NetlinkError(OSError):
    """The kernel refused a request (errno set), or answered something unparseable."""


def _align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, payload: bytes) -> bytes:
    length = _RTA.size + len(payload)
    return _RTA.pack(length, kind) + payload + bytes(_align(length) - length)


def parse_attrs(buf: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    off = 0
    while off + _RTA.size <= len(buf):
        length, kind = _RTA.unpack_from(buf, off)
        if length < _RTA.size or off + length > len(buf):
            raise NetlinkError(errno.EPROTO, f"bad attribute length {length}")
        out[kind & 0x3FFF] = buf[off + _RTA.size:off + length]
        off += _align(length)
    return out


def messages(buf: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """(type, flags, seq, payload) of each netlink message in one datagram; a truncated
    tail (a header that claims more than the datagram holds) ends the iteration."""
    off = 0
    while off + _NLMSGHDR.size <= len(buf):
        length, mtype, flags, seq, _ = _NLMSGHDR.unpack_from(buf, off)
        if length < _NLMSGHDR.size or off + length > len(buf):
            return
        yield mtype, flags, seq, buf[off + _NLMSGHDR.size:off + length]
        off += _align(length)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _family(version: int) -> int:
    return socket.AF_INET6 if version == 6 else socket.AF_INET


@dataclass(frozen=True)
class Encap:
    """A route's lightweight-tunnel encapsulation: its type and its nested attributes."""

    kind: int
    body: bytes


def seg6_encap(segments: tuple[ipaddress.IPv6Address, ...]) -> Encap:
    """H.Encaps (RFC 8986 section 5.1): the packet inside a new IPv6 header whose Segment
    Routing Header lists ``segments``, the first visited first (the SRH holds them last
    first). Octet for octet what ``ip route ... encap seg6 mode encap segs`` sends."""
    if not segments:
        raise NetlinkError(errno.EINVAL, "an SRv6 encapsulation needs a segment")
    n = len(segments)
    srh = struct.pack("=BBBBBBH", 0, 2 * n, IPV6_SRCRT_TYPE_4, n - 1, n - 1, 0, 0)
    srh += b"".join(seg.packed for seg in reversed(segments))
    return Encap(LWTUNNEL_ENCAP_SEG6,
                 attr(SEG6_IPTUNNEL_SRH, struct.pack("=i", SEG6_IPTUN_MODE_ENCAP) + srh))


def seg6local_dx(version: int) -> Encap:
    """End.DX6 or End.DX4 (RFC 8986 sections 4.5, 4.6) with no next hop of its own: the
    kernel removes the outer header and routes the inner packet by its destination (here:
    onto the MN's access route). What ``ip -6 route ... encap seg6local action End.DX6
    nh6 ::`` (``End.DX4 nh4 0.0.0.0``) sends."""
    if version == 6:
        return Encap(LWTUNNEL_ENCAP_SEG6_LOCAL,
                     attr(SEG6_LOCAL_ACTION, struct.pack("=I", SEG6_LOCAL_ACTION_END_DX6))
                     + attr(SEG6_LOCAL_NH6, bytes(16)))
    return Encap(LWTUNNEL_ENCAP_SEG6_LOCAL,
                 attr(SEG6_LOCAL_ACTION, struct.pack("=I", SEG6_LOCAL_ACTION_END_DX4))
                 + attr(SEG6_LOCAL_NH4, bytes(4)))


def route_message(*, dst: Network, oif: int | None = None,
                  gateway: Address | None = None, proto: int = 0,
                  priority: int | None = None, scope: int = RT_SCOPE_UNIVERSE,
                  rtype: int = RTN_UNICAST, encap: Encap | None = None) -> bytes:
    """The rtmsg and attributes of one route of either family in the main table."""
    if gateway is not None and gateway.version != dst.version:
        raise NetlinkError(errno.EINVAL, f"gateway {gateway} for {dst}: another family")
    body = _RTMSG.pack(_family(dst.version), dst.prefixlen, 0, 0, RT_TABLE_MAIN, proto, scope,
                       rtype, 0)
    body += attr(RTA_DST, dst.network_address.packed)
    if oif is not None:
        body += attr(RTA_OIF, struct.pack("=I", oif))
    if gateway is not None:
        body += attr(RTA_GATEWAY, gateway.packed)
    if priority is not None:
        body += attr(RTA_PRIORITY, struct.pack("=I", priority))
    if encap is not None:
        body += attr(RTA_ENCAP | NLA_F_NESTED, encap.body)
        body += attr(RTA_ENCAP_TYPE, struct.pack("=H", encap.kind))
    return body


@dataclass(frozen=True)
class RouteInfo:
    rtype: int
    table: int
    oif: int | None
    gateway: Address | None


def parse_route(payload: bytes) -> RouteInfo:
    if len(payload) < _RTMSG.size:
        raise NetlinkError(errno.EPROTO, "short rtmsg")
    family, _, _, _, table, _, _, rtype, _ = _RTMSG.unpack_from(payload)
    attrs = parse_attrs(payload[_RTMSG.size:])
    if RTA_TABLE in attrs:
        table = struct.unpack("=I", attrs[RTA_TABLE][:4])[0]
    oif = struct.unpack("=I", attrs[RTA_OIF][:4])[0] if RTA_OIF in attrs else None
    gw: Address | None = None
    if RTA_GATEWAY in attrs:
        raw = attrs[RTA_GATEWAY]
        size = 16 if family == socket.AF_INET6 else 4
        if len(raw) < size:
            raise NetlinkError(errno.EPROTO, f"short gateway ({len(raw)} octets)")
        gw = (ipaddress.IPv6Address(raw[:16]) if family == socket.AF_INET6
              else ipaddress.IPv4Address(raw[:4]))
    return RouteInfo(rtype, table, oif, gw)


class Netlink:
    """One rtnetlink socket in the caller's namespace; calls are serialised by a lock."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self._sock.bind((0, 0))
        self._sock.settimeout(2.0)
        self._seq = int.from_bytes(os.urandom(2), "big")
        self._lock = threading.Lock()

    def close(self) -> None:
        self._sock.close()

    def _request(self, mtype: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
        """Send one request; return the (type, payload) answers up to its ACK or DONE."""
        with self._lock:
            self._seq = (self._seq + 1) & 0xFFFFFFFF
            seq = self._seq
            msg = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), mtype, flags | NLM_F_REQUEST,
                                 seq, 0) + body
            self._sock.send(msg)
            answers: list[tuple[int, bytes]] = []
            while True:
                data = self._sock.recv(65536)
                off = 0
                while off + _NLMSGHDR.size <= len(data):
                    length, kind, _, rseq, _ = _NLMSGHDR.unpack_from(data, off)
                    if length < _NLMSGHDR.size or off + length > len(data):
                        raise NetlinkError(errno.EPROTO, "bad netlink message length")
                    payload = data[off + _NLMSGHDR.size:off + length]
                    off += _align(length)
                    if rseq != seq:
                        continue  # a late answer to an earlier, timed-out request
                    if kind == NLMSG_ERROR:
                        code = -struct.unpack_from("=i", payload)[0]
                        if code:
                            raise NetlinkError(code, os.strerror(code))
                        return answers
                    if kind == NLMSG_DONE:
                        return answers
                    answers.append((kind, payload))
                    if not flags & NLM_F_ACK:
                        return answers

    def route_replace(self, **route: object) -> None:
        self._request(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
                      route_message(**route))  # type: ignore[arg-type]

    def route_delete(self, **route: object) -> None:
        self._request(RTM_DELROUTE, NLM_F_ACK, route_message(**route))  # type: ignore[arg-type]

    def neigh_delete(self, address: Address, ifindex: int) -> bool:
        """Forget ``address``'s neighbour entry on ``ifindex``; False if there was none."""
        body = _NDMSG.pack(_family(address.version), ifindex, 0, 0, 0) + \
            attr(NDA_DST, address.packed)
        try:
            self._request(RTM_DELNEIGH, NLM_F_ACK, body)
        except NetlinkError as exc:
            if exc.errno == errno.ENOENT:
                return False
            raise
        return True

    def route_get(self, dst: Address) -> RouteInfo | None:
        body = _RTMSG.pack(_family(dst.version), dst.max_prefixlen, 0, 0, 0, 0, 0, 0, 0)
        body += attr(RTA_DST, dst.packed)
        try:
            answers = self._request(RTM_GETROUTE, 0, body)
        except NetlinkError as exc:
            if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ESRCH):
                return None
            raise
        routes = [parse_route(p) for k, p in answers if k == RTM_NEWROUTE]
        return routes[0] if routes else None

    def _get_link(self, index: int, name: str | None) -> bytes | None:
        """The RTM_NEWLINK payload for an interface, by index or by name; None if absent."""
        body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, 0)
        if name is not None:
            body += attr(IFLA_IFNAME, name.encode() + b"\0")
        try:
            answers = self._request(RTM_GETLINK, 0, body)
        except NetlinkError as exc:
            if exc.errno in (errno.ENODEV, errno.ENOENT):
                return None
            raise
        return next((p for k, p in answers if k == RTM_NEWLINK and len(p) >= _IFINFOMSG.size),
                    None)

    def link_index(self, name: str) -> int | None:
        payload = self._get_link(0, name)
        return int(_IFINFOMSG.unpack_from(payload)[2]) if payload is not None else None

    def link_name(self, index: int) -> str | None:
        payload = self._get_link(index, None)
        if payload is None:
            return None
        return parse_attrs(payload[_IFINFOMSG.size:]).get(IFLA_IFNAME, b"").rstrip(b"\0").decode()

    def link_up(self, index: int) -> None:
        body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, IFF_UP, IFF_UP)
        self._request(RTM_NEWLINK, NLM_F_ACK, body)


def route_proto(payload: bytes) -> int | None:
    """The protocol octet of an rtmsg, without parsing its attributes."""
    return payload[5] if len(payload) >= _RTMSG.size else None


def monitor(groups: int) -> Iterator[tuple[int, bytes]]:
    """Yield (message type, payload) for every notification of ``groups``, forever."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    sock.bind((0, groups))
    try:
        while True:
            try:
                data = sock.recv(1 << 16)
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # overrun: the caller resyncs on any event
                    yield RTM_NEWLINK, b""
                    continue
                raise
            off = 0
            while off + _NLMSGHDR.size <= len(data):
                length, kind, _, _, _ = _NLMSGHDR.unpack_from(data, off)
                if length < _NLMSGHDR.size:
                    break
                yield kind, data[off + _NLMSGHDR.size:off + length]
                off += _align(length)
    finally:
        sock.close()


def arp_table(ifname: str, table: str = "/proc/net/arp") -> dict[ipaddress.IPv4Address, bytes]:
    """The link-layer addresses the kernel resolved on ``ifname``: address -> MAC.

    /proc/net/arp is this namespace's ARP table; an incomplete entry has flags 0x0.
    """
    try:
        lines = Path(table).read_text().splitlines()[1:]
    except OSError:
        return {}
    out: dict[ipaddress.IPv4Address, bytes] = {}
    for line in lines:
        cols = line.split()
        if len(cols) < 6 or cols[5] != ifname or int(cols[2], 16) == 0:
            continue
        try:
            out[ipaddress.IPv4Address(cols[0])] = bytes.fromhex(cols[3].replace(":", ""))
        except ValueError:
            continue
    return out
