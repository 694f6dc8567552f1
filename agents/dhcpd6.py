"""The AR's DHCPv6 server and relay policy (draft 2.3, RFC 8415): an authenticated MN is
delegated its /64 out of the AR's /56 (IA_PD), a remote renewal is relayed with the MN's DNS
name in Remote-ID (RFC 4649), the owner caps remote renewals, and binding ends are reported.

The policy core (``Dhcp6Server``) is transport-free like agents/dhcpd.py's ``DhcpServer``: it
takes a datagram and where it came from and returns what to send where. ``Dhcp6Service``
puts it on UDP port 547, joined to ff02::1:2 on the access link (not yet run by agents/ar.py).
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network
from typing import Any, Protocol

from .dhcp6 import (
    ALL_SERVERS,
    CLIENT_PORT,
    HOP_COUNT_LIMIT,
    LAB_ENTERPRISE,
    SERVER_PORT,
    ClientId,
    Dhcp6Error,
    Dhcp6Message,
    IaPd,
    IaPrefix,
    InterfaceId,
    MessageType,
    Option,
    Preference,
    RapidCommit,
    Relay6Message,
    RelayMsg,
    RemoteId,
    ServerId,
    Status,
    StatusCode,
    duid_text,
    unpack,
)
from .dhcpd import PktinfoService, client_parts
from .relayauth import RelayAuthError, admit

log = logging.getLogger(__name__)

LINK_LOCAL = IPv6Network("fe80::/10")
OFFER_S = 30.0  # an advertised prefix is held this long for the Request (as DhcpServer's offer)
RELAY_WAIT_S = 10.0


class Dhcp6PolicyError(Exception):
    """A message the server will not serve; the text says why (logged and counted, not sent)."""


def eui64_mac(peer: IPv6Address) -> bytes | None:
    """The MAC a link-local address was formed from (RFC 4291 appendix A), or None: how an
    AR's ``identity_on_link`` finds the station (its IPv4 hook takes ``chaddr``)."""
    raw = peer.packed
    if peer not in LINK_LOCAL or raw[2:8] != bytes(6) or raw[11:13] != b"\xff\xfe":
        return None
    return bytes([raw[8] ^ 0x02]) + raw[9:11] + raw[13:16]


def lease_key(duid: bytes | None) -> str | None:
    """``<name>#<serial>`` of a lab DUID-EN, its proof left out: the lease a server keys its
    binding by (the proof changes with every session; the lease does not)."""
    parts = client_parts(duid_text(duid))
    return f"{parts[0]}#{parts[1]}" if parts is not None else None


@dataclass(frozen=True)
class Server6Config:
    server_duid: bytes
    address: IPv6Address  # the AR's IPv6 loopback: where another AR relays to
    pool: IPv6Network  # the AR's /56
    prefixlen: int  # what each MN gets: a /64
    first: int  # indices of the pool's /64s that are delegated (0 is the AR's own)
    last: int
    valid_s: int
    remote_renewals: int  # renewals through a relay per binding; the next ends it
    interface_id: bytes  # what this AR puts in Interface-ID when it relays

    def prefixes(self) -> list[IPv6Network]:
        step = 1 << (128 - self.prefixlen)
        count = 1 << (self.prefixlen - self.pool.prefixlen)
        base = int(self.pool.network_address)
        return [IPv6Network((base + i * step, self.prefixlen))
                for i in range(self.first, min(self.last, count - 1) + 1)]


@dataclass
class Binding6:
    prefix: IPv6Network
    duid: bytes
    mn: str
    iaid: int
    peer: IPv6Address  # the holder's link-local address (the IPv4 lease's chaddr)
    expires: float
    bound: bool = False  # False: advertised only
    remote_renewals: int = 0


@dataclass(frozen=True)
class Send6:
    """One datagram out: to (address, port), through ``ifindex`` for a link-local address."""

    data: bytes
    dest: IPv6Address
    port: int
    ifindex: int | None = None


class Hooks6(Protocol):
    def identity_on_link(self, peer: IPv6Address, ifindex: int,
                         duid: bytes | None) -> str | None:
        """The MN that authenticated on ``ifindex`` from the station whose link-local address
        is ``peer`` and whose session the DUID's proof verifies with, if any."""
        ...

    def identity_of_prefix(self, prefix: IPv6Network, ifindex: int) -> str | None:
        """The MN attached here on ``ifindex`` that holds ``prefix`` (a visitor's), if any."""
        ...

    def owner_of(self, prefix: IPv6Network) -> IPv6Address | None:
        """The IPv6 loopback of the AR whose pool holds ``prefix``."""
        ...

    def bound(self, binding: Binding6, ifindex: int, renewal: bool) -> None: ...

    def ended(self, binding: Binding6, reason: str) -> None: ...

    def relayed(self, prefix: IPv6Network, kind: str, expires: float | None) -> None:
        """As the MN's current AR we relayed a reply ("reply", or "ended" when the owner set
        the lifetimes to 0) or a release for ``prefix``."""
        ...


class RelayAuth6(Protocol):
    """Authenticates relay messages between ARs (agents/relayauth.RelayAuth6, docs/protocol.md
    §16.4): without one the server neither takes nor sends relayed messages."""

    @property
    def peers(self) -> Mapping[IPv6Address, str]: ...

    def sign(self, msg: Relay6Message, dest: IPv6Address) -> bytes: ...

    def verify(self, data: bytes, msg: Relay6Message, src: IPv6Address) -> None:
        """Raises RelayAuthError unless another AR sent ``data``."""
        ...


class UnsignedRelayAuth:
    """The stand-in RelayAuth6 of the vectors, the tests and the fuzz target: relay
    messages go unsigned and are taken from the listed AR addresses alone. A source address
    proves nothing on the backbone, so no agent may use it (agents/ar.py builds none)."""

    def __init__(self, peers: dict[IPv6Address, str]) -> None:
        self.peers = peers

    def sign(self, msg: Relay6Message, dest: IPv6Address) -> bytes:
        return msg.pack()

    def verify(self, data: bytes, msg: Relay6Message, src: IPv6Address) -> None:
        if src not in self.peers:
            raise RelayAuthError("not_an_ar", f"{src} is not an AR")


@dataclass
class _Pending6:
    ifindex: int
    peer: IPv6Address
    prefix: IPv6Network
    at: float
    server: IPv6Address


def _pd(msg: Dhcp6Message) -> tuple[IaPd | None, IPv6Network | None]:
    """The message's first IA_PD and the first prefix it names (a hint or a held prefix)."""
    ia = msg.find(IaPd)
    if ia is None:
        return None, None
    held = next((o.prefix for o in ia.options if isinstance(o, IaPrefix)), None)
    return ia, held


@dataclass
class Dhcp6Server:
    config: Server6Config
    hooks: Hooks6
    access: Callable[[int], bool]
    clock: Callable[[], float] = time.time
    # By lease, ``<name>#<serial>`` (``lease_key``), not by the whole DUID: the MN sends a
    # fresh session proof in its DUID after each authentication (agents/delegations.py), and
    # the /64 must stay the same lease.
    bindings: dict[str, Binding6] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    relay_log: list[dict[str, object]] = field(default_factory=list)  # Remote-IDs seen
    relay_auth: RelayAuth6 | None = None
    # Which interfaces are backbone links: relayed messages arrive on no other (as DhcpServer).
    backbone: Callable[[int], bool] | None = None
    _relays: dict[int, _Pending6] = field(default_factory=dict)  # by transaction ID

    def _count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1

    # --- entry point -----------------------------------------------------------------------

    def handle(self, data: bytes, src: IPv6Address, dst: IPv6Address,
               ifindex: int) -> list[Send6]:
        """One datagram to port 547; never raises on bad input: it is counted and dropped."""
        try:
            msg = unpack(data)
            if self.access(ifindex):
                if not isinstance(msg, Dhcp6Message):
                    raise Dhcp6PolicyError("a relay message from the access link")
                return self._from_client(msg, src, dst, ifindex)
            if not isinstance(msg, Relay6Message):
                raise Dhcp6PolicyError("a client/server message from the backbone")
            admit(self.relay_auth, self.backbone, ifindex).verify(data, msg, src)
            if msg.msg_type == MessageType.RELAY_REPL:
                return self._relay_reply(msg, src)
            return self._relayed_request(msg, src)
        except RelayAuthError as exc:
            # Forged, replayed or from a host that is not an AR: nothing of it is used.
            self._count("relay_refused")
            self._count("relay_refused_" + exc.reason)
            log.info("refused relayed DHCPv6 datagram from %s (if %d): %s", src, ifindex, exc)
            return []
        except (Dhcp6Error, Dhcp6PolicyError) as exc:
            self._count("refused")
            log.info("dropped DHCPv6 datagram from %s (if %d): %s", src, ifindex, exc)
            return []

    # --- the local server --------------------------------------------------------------------

    def _from_client(self, msg: Dhcp6Message, src: IPv6Address, dst: IPv6Address,
                     ifindex: int) -> list[Send6]:
        if src not in LINK_LOCAL:
            raise Dhcp6PolicyError(f"a client source {src} that is not link-local")
        if dst != ALL_SERVERS:
            # We send no Server Unicast option (RFC 8415 §18.4): every client message is
            # multicast, and a unicast one is someone's probe.
            raise Dhcp6PolicyError(f"a client message to {dst}, not {ALL_SERVERS}")
        kind = msg.msg_type
        duid = msg.client_duid
        if duid is None:
            raise Dhcp6PolicyError(f"{kind.name} without a client identifier")
        key = lease_key(duid)
        if key is None:
            raise Dhcp6PolicyError("a client DUID that is not a lab DUID-EN <name>#<serial>")
        mn = key.partition("#")[0]
        server = msg.server_duid
        ours = server == self.config.server_duid
        if kind == MessageType.SOLICIT:
            if server is not None:
                raise Dhcp6PolicyError("a Solicit with a server identifier")
            return self._solicit(msg, duid, mn, src, ifindex)
        if kind == MessageType.REQUEST:
            if not ours:
                self._drop_advertised(key)  # the client chose another server
                return []
            return self._request(msg, duid, mn, src, ifindex)
        if kind not in (MessageType.RENEW, MessageType.REBIND, MessageType.RELEASE,
                        MessageType.DECLINE):
            raise Dhcp6PolicyError(f"{kind.name} is not served")
        if kind == MessageType.REBIND and server is not None:
            raise Dhcp6PolicyError("a Rebind with a server identifier")
        _, held = _pd(msg)
        if held is None:
            raise Dhcp6PolicyError(f"{kind.name} names no delegated prefix")
        if held.subnet_of(self.config.pool):
            if server is not None and not ours:
                raise Dhcp6PolicyError(f"{kind.name} for our prefix to another server")
            return self._extend_or_end(msg, duid, mn, src, ifindex, held)
        if kind == MessageType.DECLINE:
            raise Dhcp6PolicyError("a Decline for another AR's prefix is not relayed")
        return self._relay_request(msg, mn, src, ifindex, held)

    def _authenticated(self, src: IPv6Address, ifindex: int, duid: bytes, mn: str) -> None:
        who = self.hooks.identity_on_link(src, ifindex, duid)
        if who is None:
            raise Dhcp6PolicyError(f"{src} has not authenticated on this link (draft 2.3: "
                                   "prefixes only after authentication)")
        if who != mn:
            raise Dhcp6PolicyError(f"the DUID names {mn}, the station authenticated as {who}")

    def _free_prefix(self) -> IPv6Network | None:
        used = {b.prefix for b in self.bindings.values()}
        return next((p for p in self.config.prefixes() if p not in used), None)

    def _solicit(self, msg: Dhcp6Message, duid: bytes, mn: str, src: IPv6Address,
                 ifindex: int) -> list[Send6]:
        self._authenticated(src, ifindex, duid, mn)
        ia, _hint = _pd(msg)  # the client's hint is ignored: an MN's /64 is the server's call
        if ia is None:
            # IA_NA only: this server delegates prefixes, it assigns no addresses.
            self._count("no_ia_pd")
            return [self._reply(msg, MessageType.ADVERTISE, ifindex, src,
                                (StatusCode(Status.NO_ADDRS_AVAIL, "IA_PD only"),))]
        key = lease_key(duid)
        assert key is not None  # _from_client checked it
        binding = self.bindings.get(key)
        if binding is None:
            prefix = self._free_prefix()
            if prefix is None:
                self._count("pool_exhausted")
                return [self._reply(msg, MessageType.ADVERTISE, ifindex, src, (
                    IaPd(ia.iaid, 0, 0, (StatusCode(Status.NO_PREFIX_AVAIL, "pool exhausted"),)),
                ))]
            binding = Binding6(prefix, duid, mn, ia.iaid, src, self.clock() + OFFER_S)
            self.bindings[key] = binding
        binding.duid = duid  # proven just now (_authenticated)
        if msg.find(RapidCommit) is not None:
            return self._bind(msg, binding, ifindex, src, rapid=True)
        self._count("advertise")
        return [self._reply(msg, MessageType.ADVERTISE, ifindex, src,
                            (self._ia(binding, ia.iaid), Preference(255)))]

    def _drop_advertised(self, key: str) -> None:
        binding = self.bindings.get(key)
        if binding is not None and not binding.bound:
            del self.bindings[key]

    def _request(self, msg: Dhcp6Message, duid: bytes, mn: str, src: IPv6Address,
                 ifindex: int) -> list[Send6]:
        self._authenticated(src, ifindex, duid, mn)
        ia, _ = _pd(msg)
        binding = self.bindings.get(lease_key(duid) or "")
        if ia is None or binding is None or binding.mn != mn:
            self._count("no_binding")
            iaid = ia.iaid if ia is not None else 0
            return [self._reply(msg, MessageType.REPLY, ifindex, src, (
                IaPd(iaid, 0, 0, (StatusCode(Status.NO_BINDING, "nothing advertised"),)),))]
        binding.peer, binding.duid = src, duid
        return self._bind(msg, binding, ifindex, src)

    def _bind(self, msg: Dhcp6Message, binding: Binding6, ifindex: int, src: IPv6Address,
              rapid: bool = False, renewal: bool | None = None) -> list[Send6]:
        renewal = binding.bound if renewal is None else renewal
        binding.bound = True
        binding.expires = self.clock() + self.config.valid_s
        self._count("renew" if renewal else "bind")
        self.hooks.bound(binding, ifindex, renewal)
        extra: tuple[Option, ...] = (RapidCommit(),) if rapid else ()
        return [self._reply(msg, MessageType.REPLY, ifindex, src,
                            (self._ia(binding, binding.iaid),) + extra)]

    def _extend_or_end(self, msg: Dhcp6Message, duid: bytes, mn: str, src: IPv6Address,
                       ifindex: int, held: IPv6Network) -> list[Send6]:
        binding = self.bindings.get(lease_key(duid) or "")
        if binding is None or not binding.bound or binding.mn != mn or binding.prefix != held:
            raise Dhcp6PolicyError(f"{msg.msg_type.name} for a prefix {mn} does not hold")
        if src != binding.peer:
            # As the IPv4 server's chaddr check: the DUID alone would let anyone on the link
            # renew or release another MN's prefix.
            raise Dhcp6PolicyError(f"{msg.msg_type.name} from a station other than the holder")
        if duid != binding.duid:
            # The same lease with a new proof (the MN authenticated again): it must prove
            # the session it has on this link now, as a Solicit does.
            self._authenticated(src, ifindex, duid, mn)
            binding.duid = duid
        if msg.msg_type in (MessageType.RELEASE, MessageType.DECLINE):
            why = msg.msg_type.name.lower()
            self._end(binding, why)
            return [self._reply(msg, MessageType.REPLY, ifindex, src,
                                (StatusCode(Status.SUCCESS, f"{why}d"),))]
        return self._bind(msg, binding, ifindex, src, renewal=True)

    def _end(self, binding: Binding6, reason: str) -> None:
        self.bindings.pop(lease_key(binding.duid) or "", None)
        self._count(reason.replace(" ", "_"))
        if binding.bound:
            self.hooks.ended(binding, reason)

    def expire(self) -> list[Binding6]:
        """End every binding past its time (housekeeping calls this)."""
        now = self.clock()
        gone = [b for b in self.bindings.values() if b.expires <= now]
        for binding in gone:
            self._end(binding, "expired")  # an advertised-only one ends unreported
        for xid in [x for x, p in self._relays.items() if now - p.at > RELAY_WAIT_S]:
            del self._relays[xid]
        return gone

    def _ia(self, binding: Binding6, iaid: int, lifetime: int | None = None) -> IaPd:
        valid = self.config.valid_s if lifetime is None else lifetime
        # RFC 8415 §21.4's recommendation: T1 at 0.5, T2 at 0.8 of the preferred lifetime.
        return IaPd(iaid, valid // 2, valid * 4 // 5, (IaPrefix(valid, valid, binding.prefix),))

    def _reply(self, msg: Dhcp6Message, kind: MessageType, ifindex: int, dest: IPv6Address,
               options: tuple[Option, ...]) -> Send6:
        client = msg.find(ClientId)
        assert client is not None  # every served message has one
        out = Dhcp6Message(kind, msg.xid, (ServerId(self.config.server_duid), client) + options)
        return Send6(out.pack(), dest, CLIENT_PORT, ifindex)

    # --- the relay (the MN's current AR) -------------------------------------------------------

    def _relay_request(self, msg: Dhcp6Message, mn: str, src: IPv6Address, ifindex: int,
                       held: IPv6Network) -> list[Send6]:
        if self.relay_auth is None:
            raise Dhcp6PolicyError("a remote renewal, and no relay authentication")
        owner = self.hooks.owner_of(held)
        if owner is None or owner not in self.relay_auth.peers:
            raise Dhcp6PolicyError(f"{held} is no other AR's prefix")
        holder = self.hooks.identity_of_prefix(held, ifindex)
        if holder is None or holder != mn:
            raise Dhcp6PolicyError(f"relay for {held}: no MN attached here named {mn} holds it")
        # Unlike the IPv4 relay (which has only the address to go by), the station itself is
        # checked: the DUID's session proof and the link-local source, as for a Solicit.
        self._authenticated(src, ifindex, msg.client_duid or b"", mn)
        # RFC 4649: the relay names the client; the owner checks the name against its binding.
        out = Relay6Message(MessageType.RELAY_FORW, 0, self.config.address, src, (
            InterfaceId(self.config.interface_id), RemoteId(LAB_ENTERPRISE, mn.encode("ascii")),
            RelayMsg(msg)))
        try:
            data = self.relay_auth.sign(out, owner)
        except ValueError as exc:
            raise Dhcp6PolicyError(f"relay for {held}: {exc}") from None
        self._relays[msg.xid] = _Pending6(ifindex, src, held, self.clock(), owner)
        self._count("relayed_" + msg.msg_type.name.lower())
        if msg.msg_type == MessageType.RELEASE:
            self.hooks.relayed(held, "release", None)
        return [Send6(data, owner, SERVER_PORT)]

    def _relay_reply(self, msg: Relay6Message, src: IPv6Address) -> list[Send6]:
        inner = msg.inner
        if not isinstance(inner, Dhcp6Message) or inner.msg_type != MessageType.REPLY:
            raise Dhcp6PolicyError("a Relay-Reply that carries no Reply")
        pending = self._relays.get(inner.xid)
        if pending is None or pending.server != src or pending.peer != msg.peer_address:
            raise Dhcp6PolicyError(f"a Relay-Reply (xid {inner.xid:#x}) we did not ask {src} for")
        del self._relays[inner.xid]
        ia = inner.find(IaPd)
        given = next((o for o in ia.options if isinstance(o, IaPrefix)
                      and o.prefix == pending.prefix), None) if ia is not None else None
        if given is not None and given.valid > 0:
            self.hooks.relayed(pending.prefix, "reply", self.clock() + given.valid)
        elif given is not None:
            self.hooks.relayed(pending.prefix, "ended", None)
        self._count("relayed_reply")
        return [Send6(inner.pack(), pending.peer, CLIENT_PORT, pending.ifindex)]

    # --- the owning server, for a relayed request ---------------------------------------------

    def _relayed_request(self, msg: Relay6Message, src: IPv6Address) -> list[Send6]:
        inner = msg.inner
        if msg.hop_count >= HOP_COUNT_LIMIT - 1 or not isinstance(inner, Dhcp6Message):
            raise Dhcp6PolicyError("a Relay-Forward relayed more than once")
        remote = msg.find(RemoteId)
        if remote is None or remote.enterprise != LAB_ENTERPRISE:
            raise Dhcp6PolicyError("a Relay-Forward without the lab's Remote-ID")
        try:
            name = remote.remote_id.decode("ascii").lower().rstrip(".")
        except UnicodeDecodeError:
            raise Dhcp6PolicyError("Remote-ID is not a DNS name") from None
        self.relay_log.append({"t": self.clock(), "relay": str(src), "remote_id": name,
                               "type": inner.msg_type.name})
        kind = inner.msg_type
        if kind not in (MessageType.RENEW, MessageType.REBIND, MessageType.RELEASE):
            raise Dhcp6PolicyError(f"relayed {kind.name} is not served")
        if kind != MessageType.REBIND and inner.server_duid != self.config.server_duid:
            raise Dhcp6PolicyError(f"relayed {kind.name} for another server")
        duid = inner.client_duid
        key = lease_key(duid)
        mn = key.partition("#")[0] if key is not None else None
        ia, held = _pd(inner)
        if duid is None or key is None or ia is None or held is None:
            raise Dhcp6PolicyError("a relayed request without a lab DUID and a prefix")
        binding = self.bindings.get(key)
        if mn != name or binding is None or not binding.bound or binding.prefix != held \
                or binding.mn != mn:
            # The relay vouches for who is on its link: a DUID naming someone else is a theft
            # attempt, not a renewal. The prefix is refused for this client (lifetimes 0).
            self._count("remote_id_mismatch" if mn != name else "no_binding")
            return self._wrap(msg, src, inner, (IaPd(ia.iaid, 0, 0, (
                StatusCode(Status.NO_BINDING, "not this client's prefix"),)),))
        if kind == MessageType.RELEASE:
            self._end(binding, "release")
            return self._wrap(msg, src, inner, (StatusCode(Status.SUCCESS, "released"),))
        binding.remote_renewals += 1
        if binding.remote_renewals > self.config.remote_renewals:
            self._end(binding, "remote renewal limit")
            # RFC 8415 §18.3.4: lifetimes 0 tell the client to stop using the prefix (the
            # IPv4 NAK): the MN re-attaches for a prefix of its current AR.
            return self._wrap(msg, src, inner, (self._ia(binding, ia.iaid, 0),))
        binding.expires = self.clock() + self.config.valid_s
        binding.duid = duid  # the relay checked its proof (_relay_request)
        self._count("renew_remote")
        self.hooks.bound(binding, 0, True)
        return self._wrap(msg, src, inner, (self._ia(binding, ia.iaid),))

    def _wrap(self, msg: Relay6Message, src: IPv6Address, inner: Dhcp6Message,
              options: tuple[Option, ...]) -> list[Send6]:
        assert self.relay_auth is not None
        client = inner.find(ClientId)
        assert client is not None
        reply = Dhcp6Message(MessageType.REPLY, inner.xid,
                             (ServerId(self.config.server_duid), client) + options)
        echo: tuple[Option, ...] = tuple(o for o in msg.options if isinstance(o, InterfaceId))
        out = Relay6Message(MessageType.RELAY_REPL, msg.hop_count, msg.link_address,
                            msg.peer_address, echo + (RelayMsg(reply),))
        return [Send6(self.relay_auth.sign(out, src), src, SERVER_PORT)]

    def status(self) -> dict[str, object]:
        return {
            "bindings": [{"prefix": str(b.prefix), "mn": b.mn, "bound": b.bound,
                          "expires": round(b.expires, 3), "remote_renewals": b.remote_renewals}
                         for b in self.bindings.values()],
            "counters": dict(self.counters),
            "remote_id_seen": self.relay_log[-20:],
        }



class Dhcp6Service(PktinfoService):
    """``Dhcp6Server`` on UDP 547: joined to ff02::1:2 on the access links, the arrival
    interface and destination from IPV6_PKTINFO, replies to a link-local address out of the
    interface they are meant for (its scope)."""

    label = "DHCPv6"
    port = SERVER_PORT

    def __init__(self, server: Dhcp6Server, access_ifindexes: tuple[int, ...],
                 host: str = "::") -> None:
        super().__init__()
        self.server = server
        self.access_ifindexes = access_ifindexes
        self.host = host

    def open_socket(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        for ifindex in self.access_ifindexes:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                            ALL_SERVERS.packed + struct.pack("@I", ifindex))
        sock.bind((self.host, port))
        sock.setblocking(False)
        return sock

    def received(self, data: bytes, anc: list[tuple[int, int, bytes]], addr: Any) -> None:
        ifindex, dst = 0, IPv6Address(0)
        for level, kind, value in anc:
            if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO \
                    and len(value) >= 20:
                dst = IPv6Address(value[:16])
                ifindex = struct.unpack("@I", value[16:20])[0]
        try:
            src = IPv6Address(addr[0].split("%")[0])
        except ValueError:
            return
        for out in self.server.handle(data, src, dst, ifindex):
            self.send(out)

    def send(self, out: Send6) -> None:
        assert self.sock is not None
        scope = out.ifindex if out.ifindex is not None and out.dest.is_link_local else 0
        try:
            if scope:
                self.sock.sendto(out.data, (str(out.dest), out.port, 0, scope))
            else:
                # To another AR: from our loopback, which is how it knows (and checks,
                # agents/relayauth.py) who relayed; the kernel would pick the link's address.
                source = self.server.config.address.packed + struct.pack("@I", 0)
                self.sock.sendmsg([out.data], [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO,
                                                source)], 0, (str(out.dest), out.port, 0, 0))
        except OSError as exc:
            log.warning("DHCPv6 send to %s:%d: %s", out.dest, out.port, exc)
