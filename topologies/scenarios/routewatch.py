"""Records the route changes (IPv4, IPv6 or both) of many network namespaces from one process,
stamped on receipt.

Each namespace gets rtnetlink sockets created by a short-lived thread that setns()'d into
it; one poll loop then reads them all and turns RTM_NEWROUTE/RTM_DELROUTE into RouteEvents.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from types import TracebackType
from typing import Literal

from agents.netlink import (
    IFF_UP,
    IFINFOMSG,
    IFLA_IFNAME,
    NETLINK_ROUTE,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSGHDR,
    RT_TABLE_MAIN,
    RTA_DST,
    RTA_GATEWAY,
    RTA_OIF,
    RTA_PRIORITY,
    RTA_TABLE,
    RTM_DELLINK,
    RTM_DELROUTE,
    RTM_GETLINK,
    RTM_GETROUTE,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    RTMGRP_IPV4_ROUTE,
    RTMGRP_IPV6_ROUTE,
    RTMGRP_LINK,
    RTMSG,
    RTN_UNICAST,
    NetlinkError,
    messages,
    parse_attrs,
)
from topologies.analysis.measure import RouteEvent

log = logging.getLogger(__name__)


CLONE_NEWNET = 0x40000000
SO_RCVBUFFORCE = 33
RCVBUF = 8 << 20  # a full BGP reconvergence in one node must not overflow the socket

RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR = 0x10, 0x100
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
RTM_DELADDR = 21
RTA_MULTIPATH, RTA_VIA, RTA_NH_ID = 9, 18, 30
RTN_NAMES = {6: "blackhole", 7: "unreachable", 8: "prohibit", 9: "throw"}
RTNH_F_DEAD = 0x1
RTM_F_CLONED = 0x200

# The kernel flushes IPv4 routes silently when their interface goes down (IPv6 notifies),
# and it does so just after announcing the link change. So a link change schedules a
# re-dump this much later, and whatever the re-dump finds is stamped at the link change.
RESYNC_DELAY_S = 0.05

_NLMSGHDR, _RTMSG, _IFINFOMSG = NLMSGHDR, RTMSG, IFINFOMSG
_RTNEXTHOP = struct.Struct("=HBBi")
_U32 = struct.Struct("=I")
_I32 = struct.Struct("=i")

_libc = ctypes.CDLL(None, use_errno=True)

Net = IPv4Network | IPv6Network
# The subscriptions of each family's routes and addresses (an address going takes the
# routes that use it as their source, silently).
_GROUPS: dict[int, int] = {int(socket.AF_INET): RTMGRP_IPV4_ROUTE | RTMGRP_IPV4_IFADDR,
                           int(socket.AF_INET6): RTMGRP_IPV6_ROUTE | RTMGRP_IPV6_IFADDR}


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attrs(buf: bytes, off: int = 0) -> dict[int, bytes]:
    """agents.netlink's strict attribute parser; a malformed attribute is a NetlinkError,
    and the caller drops that message."""
    return parse_attrs(buf[off:])


def _u32(b: bytes) -> int:
    return int(_U32.unpack_from(b)[0])


def _via(b: bytes) -> str:
    family = struct.unpack_from("=H", b)[0]
    addr = b[2:]
    if family == socket.AF_INET6 and len(addr) >= 16:
        return socket.inet_ntop(socket.AF_INET6, addr[:16])
    return str(IPv4Address(addr[:4]))


def _gateway(family: int, b: bytes) -> str:
    """An RTA_GATEWAY of the route's own family; a short one is a malformed message."""
    size = 16 if family == socket.AF_INET6 else 4
    if len(b) < size:
        raise NetlinkError(errno.EPROTO, f"short gateway ({len(b)} octets)")
    return str(IPv6Address(b[:16]) if family == socket.AF_INET6 else IPv4Address(b[:4]))


def _inside(dst: Net, within: Iterable[Net]) -> bool:
    return any(dst.version == w.version and dst.subnet_of(w)  # type: ignore[arg-type]
               for w in within)


@dataclass(frozen=True)
class _Route:
    dst: Net
    metric: int
    proto: int
    nexthops: frozenset[str]


def _parse_route(payload: bytes, ifname: Callable[[int], str],
                 families: frozenset[int] = frozenset({socket.AF_INET})) -> _Route | None:
    """A main-table route of one of ``families`` from an rtmsg, or None for anything else."""
    try:
        return _decode_route(payload, ifname, families)
    except (NetlinkError, ValueError) as exc:
        log.warning("routewatch: malformed route message dropped: %s", exc)
        return None


def _decode_route(payload: bytes, ifname: Callable[[int], str],
                  families: frozenset[int]) -> _Route | None:
    if len(payload) < _RTMSG.size:
        return None
    family, dst_len, _src, _tos, table, proto, _scope, rtype, flags = _RTMSG.unpack_from(payload)
    if family not in families or flags & RTM_F_CLONED:
        return None
    a = _attrs(payload, _RTMSG.size)
    if RTA_TABLE in a:
        table = _u32(a[RTA_TABLE])
    if table != RT_TABLE_MAIN:
        return None
    dst: Net
    if family == socket.AF_INET6:
        raw = a.get(RTA_DST, bytes(16))
        if len(raw) < 16:
            raise NetlinkError(errno.EPROTO, f"short IPv6 destination ({len(raw)} octets)")
        dst = IPv6Network((IPv6Address(raw[:16]), dst_len), strict=False)
    else:
        raw = a.get(RTA_DST, bytes(4))
        if len(raw) < 4:
            raise NetlinkError(errno.EPROTO, f"short IPv4 destination ({len(raw)} octets)")
        dst = IPv4Network((IPv4Address(raw[:4]), dst_len), strict=False)
    hops: set[str] = set()
    if RTA_MULTIPATH in a:
        mp, off = a[RTA_MULTIPATH], 0
        while off + _RTNEXTHOP.size <= len(mp):
            length, nh_flags, _hops, oif = _RTNEXTHOP.unpack_from(mp, off)
            if length < _RTNEXTHOP.size:
                break
            # A dead next hop (its device went down) no longer carries traffic.
            if not nh_flags & RTNH_F_DEAD:
                na = _attrs(mp[off + _RTNEXTHOP.size:off + length])
                if RTA_GATEWAY in na:
                    hops.add(_gateway(family, na[RTA_GATEWAY]))
                elif RTA_VIA in na:
                    hops.add(_via(na[RTA_VIA]))
                else:
                    hops.add(f"dev:{ifname(oif)}")
            off += _align(length)
    elif RTA_GATEWAY in a:
        hops.add(_gateway(family, a[RTA_GATEWAY]))
    elif RTA_VIA in a:
        hops.add(_via(a[RTA_VIA]))
    elif RTA_OIF in a:
        hops.add(f"dev:{ifname(_u32(a[RTA_OIF]))}")
    if not hops:
        if rtype != RTN_UNICAST:
            hops.add(RTN_NAMES.get(rtype, f"type{rtype}"))
        elif RTA_NH_ID in a:
            # With nexthop objects and nexthop_compat_mode=0 the route names only the id.
            hops.add(f"nhid:{_u32(a[RTA_NH_ID])}")
    metric = _u32(a[RTA_PRIORITY]) if RTA_PRIORITY in a else 0
    return _Route(dst, metric, proto, frozenset(hops))


def _netlink_sockets_in(pid: int, groups: int = RTMGRP_IPV4_ROUTE | RTMGRP_LINK
                        | RTMGRP_IPV4_IFADDR) -> tuple[socket.socket, socket.socket]:
    """(subscription, request) rtnetlink sockets inside the network namespace of pid.

    setns(CLONE_NEWNET) moves only the calling thread, and a socket stays in the namespace
    it was created in, so a throwaway thread enters the namespace and makes the sockets.
    """
    box: dict[str, tuple[socket.socket, socket.socket] | BaseException] = {}

    def enter() -> None:
        try:
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                want = os.fstat(fd).st_ino
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into the netns of pid {pid}: {os.strerror(err)}")
            finally:
                os.close(fd)
            if os.stat("/proc/thread-self/ns/net").st_ino != want:
                raise OSError(errno.EINVAL, f"setns did not move the thread into pid {pid}'s netns")
            sub = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                NETLINK_ROUTE)
            req = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                NETLINK_ROUTE)
            try:
                try:
                    sub.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
                except OSError:
                    sub.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
                sub.bind((0, groups))
                req.bind((0, 0))
                req.settimeout(2.0)
            except BaseException:
                sub.close()
                req.close()
                raise
            box["socks"] = (sub, req)
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    t = threading.Thread(target=enter, name=f"routewatch-setns-{pid}", daemon=True)
    t.start()
    t.join()
    got = box.get("socks") or box.get("error") or OSError(f"no sockets for pid {pid}")
    if isinstance(got, BaseException):
        raise got
    return got


@dataclass
class _Namespace:
    name: str
    pid: int
    sub: socket.socket
    req: socket.socket
    links: dict[int, tuple[str, int]] = field(default_factory=dict)  # index -> (name, flags)
    table: dict[tuple[Net, int], _Route] = field(default_factory=dict)
    seq: int = 0

    def close(self) -> None:
        self.sub.close()
        self.req.close()

    def request(self, mtype: int, body: bytes, dump: bool) -> list[tuple[int, bytes]]:
        self.seq += 1
        flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else 0)
        self.req.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), mtype, flags, self.seq, 0)
                      + body)
        out: list[tuple[int, bytes]] = []
        while True:
            for t, _flags, seq, payload in messages(self.req.recv(1 << 20)):
                if seq != self.seq:
                    continue  # a late answer to an earlier, timed-out request
                if t == NLMSG_DONE:
                    return out
                if t == NLMSG_ERROR:
                    err = -_I32.unpack_from(payload)[0]
                    if err:
                        raise OSError(err, os.strerror(err))
                    return out
                out.append((t, payload))
                if not dump:
                    return out

    def learn_link(self, payload: bytes) -> tuple[int, int] | None:
        """Caches an RTM_NEWLINK; returns (index, previous flags or -1) when it names one."""
        if len(payload) < _IFINFOMSG.size:
            return None
        _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(payload)
        try:
            a = _attrs(payload, _IFINFOMSG.size)
        except NetlinkError as exc:
            log.warning("routewatch: %s: malformed link message dropped: %s", self.name, exc)
            return None
        old = self.links.get(index)
        name = a[IFLA_IFNAME].split(b"\0", 1)[0].decode() if IFLA_IFNAME in a else None
        if name is None and old is None:
            return None
        self.links[index] = (name or (old[0] if old else f"if{index}"), flags)
        return index, old[1] if old else -1

    def ifname(self, index: int) -> str:
        if index not in self.links:
            # A link made since the last RTM_NEWLINK we saw: ask the kernel for it now.
            try:
                for t, payload in self.request(
                    RTM_GETLINK, _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, 0), dump=False
                ):
                    if t == RTM_NEWLINK:
                        self.learn_link(payload)
            except OSError as exc:
                log.debug("%s: no name for ifindex %d: %s", self.name, index, exc)
        entry = self.links.get(index)
        return entry[0] if entry else f"if{index}"

    def dump_links(self) -> None:
        for t, payload in self.request(RTM_GETLINK, _IFINFOMSG.pack(0, 0, 0, 0, 0), dump=True):
            if t == RTM_NEWLINK:
                self.learn_link(payload)

    def dump_routes(self, within: tuple[Net, ...]) -> dict[tuple[Net, int], _Route]:
        out: dict[tuple[Net, int], _Route] = {}
        families = _families(within)
        for family in sorted(families):
            body = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
            for t, payload in self.request(RTM_GETROUTE, body, dump=True):
                r = _parse_route(payload, self.ifname, families) if t == RTM_NEWROUTE else None
                if r is not None and _inside(r.dst, within):
                    out[(r.dst, r.metric)] = r
        return out


def _families(within: Iterable[Net]) -> frozenset[int]:
    return frozenset(int(socket.AF_INET6 if w.version == 6 else socket.AF_INET) for w in within)


class RouteWatcher:
    """Records main-table route changes for dst inside `within` (one prefix, or several of
    either family: "0.0.0.0/0" and "::/0" watch everything) in many namespaces.

    namespaces maps a node name to the pid of any process in that node's namespace. Each
    event is stamped with time.time() when its netlink message is read; routes present at
    start() are recorded as "add" events stamped with the start time (`started_at`).
    The open sockets keep each namespace alive until stop(): stop the watcher before the
    lab is torn down. A namespace that fails is logged and dropped; the others go on.
    """

    def __init__(self, namespaces: Mapping[str, int],
                 within: Net | str | Iterable[Net | str]) -> None:
        given = [within] if isinstance(within, str | IPv4Network | IPv6Network) else within
        self.within: tuple[Net, ...] = tuple(ip_network(w) for w in given)
        if not self.within:
            raise ValueError("within names no prefix")
        self._families = _families(self.within)
        self._groups = RTMGRP_LINK
        for family in self._families:
            self._groups |= _GROUPS[family]
        self.namespaces = dict(namespaces)
        self.started_at: float | None = None
        self.overruns = 0
        self._ns: dict[int, _Namespace] = {}  # by subscription socket fd
        self._events: list[RouteEvent] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._wake: tuple[int, int] | None = None
        self._resync_due: dict[int, tuple[float, float]] = {}  # fd -> (stamp, monotonic due)

    # ------------------------------------------------------------------ public

    def start(self) -> None:
        if self.started_at is not None:
            raise RuntimeError("RouteWatcher already started")
        self.started_at = now = time.time()
        # Subscribe everywhere before dumping anything, so no change falls in between.
        for name, pid in self.namespaces.items():
            try:
                sub, req = _netlink_sockets_in(pid, self._groups)
            except OSError as exc:
                log.error("routewatch: cannot watch %s (pid %d): %s; dropped", name, pid, exc)
                continue
            self._ns[sub.fileno()] = _Namespace(name, pid, sub, req)
        for fd, ns in list(self._ns.items()):
            try:
                ns.dump_links()
                ns.table = ns.dump_routes(self.within)
            except OSError as exc:
                log.error("routewatch: initial dump of %s failed: %s; dropped", ns.name, exc)
                self._drop(fd)
                continue
            self._record([self._event(now, ns.name, "add", r) for r in ns.table.values()])
        self._wake = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._thread = threading.Thread(target=self._run, name="routewatch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops the loop, closes every socket; returns within about a second."""
        if self._wake is not None:
            with contextlib.suppress(OSError):
                os.write(self._wake[1], b"x")
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            if self._thread.is_alive():
                log.error("routewatch: loop thread did not stop")
            self._thread = None
        for fd in list(self._ns):
            self._drop(fd)
        if self._wake is not None:
            for fd in self._wake:
                os.close(fd)
            self._wake = None

    def events(self) -> list[RouteEvent]:
        """A snapshot of every event so far, sorted by time (stable for equal stamps)."""
        with self._cond:
            return sorted(self._events, key=lambda e: e.ts)

    def wait_for(self, pred: Callable[[list[RouteEvent]], bool], timeout: float) -> bool:
        """Waits until pred(events()) holds or timeout passes; returns whether it held."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if pred(sorted(self._events, key=lambda e: e.ts)):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)

    @property
    def watching(self) -> list[str]:
        """The nodes still watched."""
        return sorted(ns.name for ns in list(self._ns.values()))

    def __enter__(self) -> RouteWatcher:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ loop

    @staticmethod
    def _event(ts: float, node: str, kind: Literal["add", "del"], r: _Route) -> RouteEvent:
        return RouteEvent(ts, node, kind, r.dst, r.metric, r.proto, r.nexthops)

    def _record(self, new: list[RouteEvent]) -> None:
        if new:
            with self._cond:
                self._events.extend(new)
                self._cond.notify_all()

    def _drop(self, fd: int) -> None:
        ns = self._ns.pop(fd, None)
        self._resync_due.pop(fd, None)
        if ns is not None:
            ns.close()

    def _run(self) -> None:
        assert self._wake is not None
        wake = self._wake[0]
        poller = select.poll()
        poller.register(wake, select.POLLIN)
        for fd in self._ns:
            poller.register(fd, select.POLLIN)
        while True:
            timeout_ms: float | None = None
            if self._resync_due:
                due = min(d for _, d in self._resync_due.values())
                timeout_ms = max(0.0, (due - time.monotonic()) * 1000.0)
            try:
                ready = poller.poll(timeout_ms)
            except OSError as exc:
                log.error("routewatch: poll failed: %s", exc)
                return
            for fd, mask in ready:
                if fd == wake:
                    return
                try:
                    self._readable(fd, mask, poller)
                except Exception:  # one bad message must not end the recording
                    log.exception("routewatch: error reading %s",
                                  getattr(self._ns.get(fd), "name", fd))
            for fd, (stamp, due) in list(self._resync_due.items()):
                if due <= time.monotonic():
                    del self._resync_due[fd]
                    try:
                        self._resync(fd, stamp)
                    except Exception:
                        log.exception("routewatch: resync of %s failed",
                                      getattr(self._ns.get(fd), "name", fd))

    def _readable(self, fd: int, mask: int, poller: select.poll) -> None:
        ns = self._ns.get(fd)
        if ns is None:
            return
        if mask & select.POLLNVAL:
            poller.unregister(fd)
            self._drop(fd)
            return
        try:
            buf = ns.sub.recv(1 << 16, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                # Messages were lost: re-read the table and record the difference.
                self.overruns += 1
                log.warning("routewatch: %s: netlink overrun, resyncing by dump", ns.name)
                self._resync(fd, time.time())
                return
            log.error("routewatch: %s (pid %d) failed: %s; dropped", ns.name, ns.pid, exc)
            poller.unregister(fd)
            self._drop(fd)
            return
        ts = time.time()
        new: list[RouteEvent] = []
        for mtype, _flags, _seq, payload in messages(buf):
            if mtype in (RTM_NEWROUTE, RTM_DELROUTE):
                r = _parse_route(payload, ns.ifname, self._families)
                if r is None or not _inside(r.dst, self.within):
                    continue
                if mtype == RTM_NEWROUTE:
                    ns.table[(r.dst, r.metric)] = r
                    new.append(self._event(ts, ns.name, "add", r))
                else:
                    ns.table.pop((r.dst, r.metric), None)
                    new.append(self._event(ts, ns.name, "del", r))
            elif mtype in (RTM_NEWLINK, RTM_DELLINK):
                learned = ns.learn_link(payload)
                if learned is not None:
                    index, old_flags = learned
                    up_changed = old_flags >= 0 and (old_flags ^ ns.links[index][1]) & IFF_UP
                    if mtype == RTM_DELLINK or up_changed:
                        self._resync_due.setdefault(fd, (ts, time.monotonic() + RESYNC_DELAY_S))
            elif mtype == RTM_DELADDR:
                # Routes using the address as their source go with it, silently.
                self._resync_due.setdefault(fd, (ts, time.monotonic() + RESYNC_DELAY_S))
        self._record(new)

    def _resync(self, fd: int, stamp: float) -> None:
        """Records what the kernel changed without telling us, stamped at `stamp`."""
        ns = self._ns.get(fd)
        if ns is None:
            return
        now = ns.dump_routes(self.within)
        new = [self._event(stamp, ns.name, "del", r)
               for key, r in ns.table.items() if key not in now]
        new += [self._event(stamp, ns.name, "add", r)
                for key, r in now.items() if ns.table.get(key) != r]
        ns.table = now
        self._record(new)
