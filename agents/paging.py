"""Idle mode on the AR (draft 4): a TUN device where an idle MN's packets wait, a bounded
buffer per MN, the page broadcast on the access link, and re-injection in order.

Packets for an idle MN are routed into the TUN device (`pg0`); the agent reads them, keeps
at most `bound` per MN and drops the newest beyond it (tail drop: what is kept stays a
contiguous, in-order prefix of the stream). When the MN authenticates again the buffer is
written back through a raw socket, so the kernel routes it along whatever route now holds.
Both families share the device: an IPv4 packet is an idle MN's /32's, an IPv6 one its /64's.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import struct
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, IPv6Network, ip_address

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
SO_BINDTODEVICE = 25
PAGE_MAGIC = "fa-page-1"


class PagingError(OSError):
    """The TUN device or a paging socket could not be set up."""


def open_tun(name: str) -> int:
    """Create (or attach to) TUN device ``name``; returns its non-blocking fd."""
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    except OSError as exc:
        raise PagingError(exc.errno, f"/dev/net/tun: {exc.strerror}") from None
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError as exc:
        os.close(fd)
        raise PagingError(exc.errno, f"TUNSETIFF {name}: {exc.strerror}") from None
    return fd


def destination4(packet: bytes) -> IPv4Address | None:
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    return IPv4Address(packet[16:20])


def destination6(packet: bytes) -> IPv6Address | None:
    if len(packet) < 40 or packet[0] >> 4 != 6:
        return None
    return IPv6Address(packet[24:40])


def destination(packet: bytes) -> IPv4Address | IPv6Address | None:
    """Where a packet read from the device goes, in either family; None if neither."""
    return destination4(packet) or destination6(packet)


def prefix_of(packet: bytes, prefixlen: int) -> IPv6Network | None:
    """The /``prefixlen`` an IPv6 packet's destination is in: the MN prefix it is for."""
    dst = destination6(packet)
    return None if dst is None else IPv6Network((dst, prefixlen), strict=False)


def is_for(packet: bytes, key: IPv4Address | IPv6Network) -> bool:
    """Whether a packet goes to a parked /32 (its address) or a parked /64 (inside it)."""
    if isinstance(key, IPv6Network):
        dst6 = destination6(packet)
        return dst6 is not None and dst6 in key
    return destination4(packet) == key


@dataclass
class Buffer:
    """One idle MN's packets, bounded, tail-drop."""

    bound: int
    packets: deque[bytes] = field(default_factory=deque)
    dropped: int = 0
    received: int = 0

    def add(self, packet: bytes) -> bool:
        self.received += 1
        if len(self.packets) >= self.bound:
            self.dropped += 1
            return False
        self.packets.append(packet)
        return True

    def drain(self) -> list[bytes]:
        out = list(self.packets)
        self.packets.clear()
        return out


class Reinjector:
    """Writes buffered packets back into the IP stack. Bound to a device, the route lookup
    only considers routes through it, so the paging route that still holds newer packets
    back is passed by; unbound, the routing table decides."""

    def __init__(self) -> None:
        self._socks: dict[tuple[int, str | None], socket.socket] = {}

    def _sock(self, family: int, device: str | None) -> socket.socket:
        # IPPROTO_RAW includes the header in both families (IP_HDRINCL, IPV6_HDRINCL).
        s = self._socks.get((family, device))
        if s is None:
            s = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW)
            if device is not None:
                s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, device.encode())
            self._socks[(family, device)] = s
        return s

    def send(self, packets: list[bytes], device: str | None = None) -> int:
        sent = 0
        for p in packets:
            dst = destination(p)
            if dst is None:
                continue
            family = socket.AF_INET if dst.version == 4 else socket.AF_INET6
            try:
                self._sock(family, device).sendto(p, (str(dst), 0))
                sent += 1
            except OSError:
                pass  # no route at this instant: the packet is lost, as on a real link
        return sent

    def close(self) -> None:
        for s in self._socks.values():
            s.close()


Paged = IPv4Address | IPv6Network  # an idle MN's /32 (its address) or its /64


def page_payload(addresses: Sequence[Paged], by: str) -> bytes:
    return json.dumps({"m": PAGE_MAGIC, "addrs": [str(a) for a in addresses],
                       "by": by}).encode()


def _paged(text: object) -> Paged:
    if not isinstance(text, str):
        raise TypeError("not a string")
    if "/" in text:
        return IPv6Network(text)  # strict: host bits set is no prefix
    a = ip_address(text)
    if not isinstance(a, IPv4Address):
        raise ValueError("an IPv6 page names a prefix")
    return a


def parse_page(data: bytes) -> tuple[list[Paged], str] | None:
    """The addresses and prefixes a page is for and the AR that pages, or None for
    anything else (docs/protocol.md, the page)."""
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("m") != PAGE_MAGIC:
            return None
        addrs = doc["addrs"]
        if not isinstance(addrs, list):
            return None
        return [_paged(a) for a in addrs[:16]], str(doc["by"])[:255]
    except (ValueError, KeyError, TypeError):
        return None


class Pager:
    """Broadcasts pages on the AR's access link (the radio's paging channel)."""

    def __init__(self, ifname: str, port: int) -> None:
        self.port = port
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())
        except OSError as exc:
            self._sock.close()
            raise PagingError(exc.errno, f"binding the pager to {ifname}: {exc}") from None

    def page(self, addresses: Sequence[Paged], by: str) -> None:
        self._sock.sendto(page_payload(addresses, by), ("255.255.255.255", self.port))

    def close(self) -> None:
        self._sock.close()
