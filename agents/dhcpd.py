"""The AR's DHCP server and relay (draft 2.3): leases from the AR's pool to authenticated MNs,
remote renewals relayed with the MN's DNS name in option 82's Agent Remote ID, a limit on
renewals from remote ARs (then NAK), and lease ends (release, expiry, NAK) reported upward.

The policy core (``DhcpServer``) is transport-free: it takes a message and where it came
from, and returns what to send where. ``DhcpService`` puts it on UDP port 67.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Protocol

from .dhcp import (
    BOOTREPLY,
    BOOTREQUEST,
    OPT_CLIENT_ID,
    OPT_DNS,
    OPT_HOME_AGENT,
    OPT_LEASE_TIME,
    OPT_MESSAGE,
    OPT_ROUTER,
    OPT_SERVER_ID,
    OPT_SUBNET_MASK,
    OPT_T1,
    OPT_T2,
    DhcpError,
    DhcpMessage,
    MessageType,
    RelayAgentInfo,
)
from .linkproof import PROOF_LEN
from .relayauth import RelayAuth, RelayAuthError, admit

log = logging.getLogger(__name__)

SERVER_PORT, CLIENT_PORT = 67, 68
BROADCAST = IPv4Address("255.255.255.255")
ZERO = IPv4Address(0)
_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
MAX_HOPS = 4  # relays in the lab are one hop; more means a loop


class DhcpPolicyError(Exception):
    """A request the server will not serve; the message says why (it is logged, not sent)."""


def client_parts(client_id: bytes | None) -> tuple[str, int, bytes | None] | None:
    """(name, serial, proof) from a client identifier of type 0 (RFC 2132 §9.14: not a
    hardware address) spelled ``<name>#<serial>`` or ``<name>#<serial>#<proof>``, the proof
    16 lowercase hex digits (agents/linkproof.py): one identifier per lease."""
    if not client_id or client_id[0] != 0:
        return None
    try:
        text = client_id[1:].decode("ascii")
    except UnicodeDecodeError:
        return None
    name, sep, rest = text.partition("#")
    serial, sep2, proof = rest.partition("#")
    if not sep or not name or not serial.isdigit() or not serial.isascii():
        return None
    if not sep2:
        return name.lower().rstrip("."), int(serial), None
    if len(proof) != 2 * PROOF_LEN or proof.strip("0123456789abcdef"):
        return None
    return name.lower().rstrip("."), int(serial), bytes.fromhex(proof)


def client_identity(client_id: bytes | None) -> str | None:
    """The MN's DNS name that a client identifier names (``client_parts``)."""
    parts = client_parts(client_id)
    return parts[0] if parts is not None else None


def make_client_id(name: str, serial: int, proof: bytes | None = None) -> bytes:
    tail = f"#{proof.hex()}" if proof is not None else ""
    return b"\x00" + f"{name.lower().rstrip('.')}#{serial}{tail}".encode("ascii")


@dataclass(frozen=True)
class ServerConfig:
    server_id: IPv4Address  # the AR's loopback: unique in the AS, so a renewal can find us
    pool: IPv4Network
    first: int  # offsets into the pool that leases come from
    last: int
    lease_s: int
    remote_renewals: int  # renewals through a relay (option 82) per lease; the next is NAKed
    router: IPv4Address
    dns: IPv4Address
    home_agent: str | None
    circuit_id: bytes  # what we put in option 82's circuit ID when relaying

    def addresses(self) -> list[IPv4Address]:
        return [self.pool.network_address + i for i in range(self.first, self.last + 1)
                if i < self.pool.num_addresses - 1]


@dataclass
class Lease:
    address: IPv4Address
    client_id: bytes
    mn: str
    chaddr: bytes
    expires: float
    bound: bool = False  # False: offered only
    remote_renewals: int = 0


@dataclass(frozen=True)
class Send:
    """One datagram out: to (address, port), or broadcast on the access link ``ifindex``."""

    data: bytes
    dest: IPv4Address
    port: int
    ifindex: int | None = None
    source: IPv4Address | None = None


class Hooks(Protocol):
    """What the server needs from its AR, and what it tells the AR."""

    def identity_on_link(self, chaddr: bytes, ifindex: int,
                         client_id: bytes | None) -> str | None:
        """The MN that authenticated on ``ifindex`` from the station ``chaddr`` and whose
        session the client identifier's proof verifies with (agents/linkproof.py), if any."""
        ...

    def identity_of_source(self, address: IPv4Address, ifindex: int) -> str | None:
        """The MN attached here on ``ifindex`` that holds ``address``, if any."""
        ...

    def owner_of(self, address: IPv4Address) -> IPv4Address | None:
        """The server ID (loopback) of the AR whose pool holds ``address``."""
        ...

    def bound(self, lease: Lease, ifindex: int, renewal: bool) -> None: ...

    def ended(self, lease: Lease, reason: str) -> None: ...

    def relayed(self, address: IPv4Address, kind: str, expires: float | None) -> None:
        """As the MN's current AR we relayed an ACK, NAK or RELEASE for ``address``."""
        ...


@dataclass
class _Pending:
    ifindex: int
    mn: str
    address: IPv4Address
    kind: MessageType
    at: float
    server: IPv4Address  # the owner we relayed to: the only AR whose reply we take


@dataclass
class DhcpServer:
    config: ServerConfig
    hooks: Hooks
    access: Callable[[int], bool]  # is this ifindex an access link?
    clock: Callable[[], float] = time.time
    leases: dict[bytes, Lease] = field(default_factory=dict)  # by client identifier
    counters: dict[str, int] = field(default_factory=dict)
    relay_log: list[dict[str, object]] = field(default_factory=list)  # option 82 seen
    # Relayed messages from and to other ARs (issue 19 defect 3): without it none are taken
    # or sent. ``backbone`` says which interfaces another AR's messages may arrive on.
    relay_auth: RelayAuth | None = None
    backbone: Callable[[int], bool] | None = None
    _relays: dict[int, _Pending] = field(default_factory=dict)  # by xid

    def _count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1

    # --- entry point -----------------------------------------------------------------------

    def handle(self, data: bytes, src: IPv4Address, dst: IPv4Address,
               ifindex: int) -> list[Send]:
        """One datagram to port 67; never raises on bad input: it is counted and dropped."""
        try:
            msg = DhcpMessage.unpack(data)
            if self.access(ifindex):
                if msg.op != BOOTREQUEST:
                    raise DhcpPolicyError("a reply from the access side")
                return self._from_client(msg, dst, ifindex)
            admit(self.relay_auth, self.backbone, ifindex).verify(data, msg, src)
            if msg.op == BOOTREPLY:
                return self._relay_reply(msg, src)
            return self._relayed_request(msg, src)
        except RelayAuthError as exc:
            # Forged, replayed or from a host that is not an AR: nothing of it is used.
            self._count("relay_refused")
            self._count("relay_refused_" + exc.reason)
            log.info("refused relayed DHCP datagram from %s (if %d): %s", src, ifindex, exc)
            return []
        except (DhcpError, DhcpPolicyError) as exc:
            self._count("refused")
            log.info("dropped DHCP datagram from %s (if %d): %s", src, ifindex, exc)
            return []

    # --- the local server --------------------------------------------------------------------

    def _from_client(self, msg: DhcpMessage, dst: IPv4Address, ifindex: int) -> list[Send]:
        if msg.giaddr != ZERO:
            # Only relays set giaddr; from a client it would aim our reply at anyone.
            raise DhcpPolicyError("a client request with giaddr set")
        foreign = msg.server_id if msg.server_id not in (None, self.config.server_id) else None
        if dst not in (BROADCAST, self.config.server_id, self.config.router) and dst != ZERO:
            # A unicast renewal or release for another AR's server, caught on its way.
            return self._relay_request(msg, dst, ifindex)
        held = msg.ciaddr if msg.ciaddr != ZERO else msg.requested_ip
        kind = msg.message_type
        if kind == MessageType.REQUEST and foreign is not None:
            # The client chose another server's offer: forget ours.
            self._drop_offer(msg)
            return []
        if (kind in (MessageType.REQUEST, MessageType.RELEASE) and foreign is None
                and held is not None and held not in self.config.pool):
            owner = self.hooks.owner_of(held)
            if owner is None:
                return [self._nak(msg, "address not managed here", ifindex)]
            # Rebinding or rebooting with an address another AR assigned: relay it there.
            return self._relay_request(msg, owner, ifindex)
        cid = msg.options.get(OPT_CLIENT_ID)
        mn = client_identity(cid)
        if cid is None or mn is None:
            raise DhcpPolicyError("no client identifier of the form <name>#<serial>")
        if kind == MessageType.DISCOVER:
            return self._offer(msg, cid, mn, ifindex)
        if kind == MessageType.REQUEST:
            return self._request(msg, cid, mn, ifindex, held, remote=None)
        if kind in (MessageType.RELEASE, MessageType.DECLINE):
            self._release(cid, mn, kind.name.lower(), msg.chaddr)
            return []
        raise DhcpPolicyError(f"{kind.name} is not served")

    def _authenticated(self, msg: DhcpMessage, mn: str, ifindex: int) -> None:
        who = self.hooks.identity_on_link(msg.chaddr, ifindex, msg.options.get(OPT_CLIENT_ID))
        if who is None:
            raise DhcpPolicyError(
                f"{msg.chaddr.hex(':')} has not authenticated on this link (draft 2.3: "
                "addresses only after authentication)")
        if who != mn:
            raise DhcpPolicyError(f"client identifier names {mn}, the station authenticated "
                                  f"as {who}")

    def _offer(self, msg: DhcpMessage, cid: bytes, mn: str, ifindex: int) -> list[Send]:
        self._authenticated(msg, mn, ifindex)
        now = self.clock()
        lease = self.leases.get(cid)
        if lease is None:
            address = self._free_address()
            if address is None:
                return [self._nak(msg, "pool exhausted", ifindex)]
            lease = Lease(address, cid, mn, msg.chaddr, now + 30.0)
            self.leases[cid] = lease
        self._count("offer")
        return [self._reply(msg, MessageType.OFFER, lease, ifindex)]

    def _free_address(self) -> IPv4Address | None:
        used = {lease.address for lease in self.leases.values()}
        return next((a for a in self.config.addresses() if a not in used), None)

    def _drop_offer(self, msg: DhcpMessage) -> None:
        cid = msg.options.get(OPT_CLIENT_ID)
        lease = self.leases.get(cid) if cid else None
        if lease is not None and not lease.bound:
            del self.leases[lease.client_id]

    def _request(self, msg: DhcpMessage, cid: bytes, mn: str, ifindex: int,
                 held: IPv4Address | None, remote: RelayAgentInfo | None) -> list[Send]:
        lease = self.leases.get(cid)
        if remote is None and (lease is None or not lease.bound):
            self._authenticated(msg, mn, ifindex)
        elif remote is None and lease is not None and msg.chaddr != lease.chaddr:
            # Found by the fuzz campaign: the name and serial alone renewed (and re-homed) a lease.
            raise DhcpPolicyError("renewal from a station other than the lease holder")
        if lease is None or held != lease.address or lease.mn != mn:
            return [self._nak(msg, "no such lease", ifindex, remote)]
        renewal = lease.bound
        if remote is not None and renewal:
            lease.remote_renewals += 1
            if lease.remote_renewals > self.config.remote_renewals:
                self._count("nak_limit")
                del self.leases[cid]
                self.hooks.ended(lease, "remote renewal limit")
                return [self._nak(msg, f"remote renewal limit "
                                       f"{self.config.remote_renewals} reached", ifindex, remote)]
        lease.bound = True
        lease.expires = self.clock() + self.config.lease_s
        self._count("renew_remote" if remote else ("renew" if renewal else "ack"))
        self.hooks.bound(lease, ifindex, renewal)
        return [self._reply(msg, MessageType.ACK, lease, ifindex, remote)]

    def _release(self, cid: bytes, mn: str, why: str, chaddr: bytes | None = None) -> None:
        lease = self.leases.get(cid)
        if lease is None or lease.mn != mn:
            raise DhcpPolicyError(f"{why} for a lease {mn} does not hold")
        if chaddr is not None and chaddr != lease.chaddr:  # from the access link: the holder only
            raise DhcpPolicyError(f"{why} from a station other than the lease holder")
        del self.leases[cid]
        self._count(why)
        if lease.bound:
            self.hooks.ended(lease, why)

    def expire(self) -> list[Lease]:
        """End every lease past its time (housekeeping calls this)."""
        now = self.clock()
        gone = [lease for lease in self.leases.values() if lease.expires <= now]
        for lease in gone:
            del self.leases[lease.client_id]
            if lease.bound:
                self._count("expired")
                self.hooks.ended(lease, "expired")
        for xid in [x for x, p in self._relays.items() if now - p.at > 10.0]:
            del self._relays[xid]
        return gone

    def _options(self, lease: Lease) -> dict[int, bytes]:
        c = self.config
        opts = {
            OPT_SERVER_ID: c.server_id.packed,
            OPT_LEASE_TIME: struct.pack("!I", c.lease_s),
            OPT_T1: struct.pack("!I", c.lease_s // 2),
            OPT_T2: struct.pack("!I", c.lease_s * 7 // 8),
            # A host route, not a subnet: the MN's neighbours are reached through the AR.
            OPT_SUBNET_MASK: IPv4Address("255.255.255.255").packed,
            OPT_ROUTER: c.router.packed,
            OPT_DNS: c.dns.packed,
        }
        if c.home_agent:
            opts[OPT_HOME_AGENT] = c.home_agent.encode("ascii")
        return opts

    def _reply(self, msg: DhcpMessage, kind: MessageType, lease: Lease, ifindex: int,
               remote: RelayAgentInfo | None = None) -> Send:
        out = DhcpMessage(BOOTREPLY, msg.xid, msg.chaddr, kind, ciaddr=msg.ciaddr,
                          yiaddr=lease.address, giaddr=msg.giaddr, flags=msg.flags,
                          options=self._options(lease), relay=remote)
        return self._to_client(msg, out, ifindex)

    def _nak(self, msg: DhcpMessage, why: str, ifindex: int,
             remote: RelayAgentInfo | None = None) -> Send:
        self._count("nak")
        log.info("NAK to %s: %s", msg.chaddr.hex(":"), why)
        out = DhcpMessage(BOOTREPLY, msg.xid, msg.chaddr, MessageType.NAK, giaddr=msg.giaddr,
                          flags=msg.flags, options={OPT_SERVER_ID: self.config.server_id.packed,
                                                    OPT_MESSAGE: why.encode("ascii")},
                          relay=remote)
        return self._to_client(msg, out, ifindex)

    def _to_client(self, msg: DhcpMessage, out: DhcpMessage, ifindex: int) -> Send:
        if msg.giaddr != ZERO:
            if self.relay_auth is None:
                raise DhcpPolicyError("a relayed request, and no relay authentication")
            try:
                data = self.relay_auth.sign(out, msg.giaddr)
            except ValueError:
                # RFC 3046 §2: a server unable to echo the whole option answers without it;
                # the authentication sub-option still goes (§14.7).
                self._count("option82_not_echoed")
                data = self.relay_auth.sign(replace(out, relay=RelayAgentInfo()), msg.giaddr)
            return Send(data, msg.giaddr, SERVER_PORT, source=self.config.server_id)
        # Broadcast on the access link, whatever the flag: an MN runs one standard client
        # per address, and only a broadcast reaches all of them (each matches its xid).
        return Send(out.pack(), BROADCAST, CLIENT_PORT, ifindex, self.config.router)

    # --- the relay (the MN's current AR) -------------------------------------------------------

    def _relay_request(self, msg: DhcpMessage, server: IPv4Address, ifindex: int) -> list[Send]:
        if msg.message_type not in (MessageType.REQUEST, MessageType.RELEASE):
            raise DhcpPolicyError(f"{msg.message_type.name} to a remote server is not relayed")
        if msg.hops >= MAX_HOPS:
            raise DhcpPolicyError("too many relay hops")
        if self.relay_auth is None or server not in self.relay_auth.peers:
            raise DhcpPolicyError(f"relay to {server}: not another AR's server identifier")
        address = msg.ciaddr if msg.ciaddr != ZERO else msg.requested_ip
        if address is None:
            raise DhcpPolicyError("a remote request names no address")
        mn = self.hooks.identity_of_source(address, ifindex)
        cid_mn = client_identity(msg.options.get(OPT_CLIENT_ID))
        if mn is not None and cid_mn != mn:
            # Found by the fuzz campaign: anyone on the link could relay for the attached MN's
            # address, and the owner's NAK for the wrong identifier then detached that MN.
            raise DhcpPolicyError(f"relay for {address}: the client identifier is not its MN's")
        if mn is None:
            who = self.hooks.identity_on_link(msg.chaddr, ifindex,
                                              msg.options.get(OPT_CLIENT_ID))
            if cid_mn is None or who != cid_mn:
                raise DhcpPolicyError(f"relay for {address}: no MN attached here holds it")
            mn = who
        # RFC 3046: the relay adds option 82 and sets giaddr; the Agent Remote ID is the MN's
        # DNS name (draft 2.3), which the owning server checks against its lease.
        rai = RelayAgentInfo(self.config.circuit_id, mn.encode("ascii"))
        out = DhcpMessage(BOOTREQUEST, msg.xid, msg.chaddr, msg.message_type, msg.ciaddr,
                          msg.yiaddr, msg.siaddr, self.config.server_id, msg.hops + 1,
                          msg.secs, msg.flags, dict(msg.options), rai)
        try:
            data = self.relay_auth.sign(out, server)
        except ValueError as exc:  # a request near 1500 octets has no room for option 82
            raise DhcpPolicyError(f"relay for {address}: {exc}") from None
        except RelayAuthError as exc:
            raise DhcpPolicyError(f"relay for {address}: {exc}") from None
        self._relays[msg.xid] = _Pending(ifindex, mn, address, msg.message_type, self.clock(),
                                         server)
        self._count("relayed_" + msg.message_type.name.lower())
        if msg.message_type == MessageType.RELEASE:
            self.hooks.relayed(address, "release", None)
        return [Send(data, server, SERVER_PORT, source=self.config.server_id)]

    def _relay_reply(self, msg: DhcpMessage, src: IPv4Address) -> list[Send]:
        pending = self._relays.get(msg.xid) if msg.giaddr == self.config.server_id else None
        if pending is None or pending.server != src:
            raise DhcpPolicyError(f"a relayed reply (xid {msg.xid:#x}) we did not ask {src} for")
        del self._relays[msg.xid]
        # RFC 3046 §2.1.1: strip option 82 before the reply goes to the client.
        out = DhcpMessage(BOOTREPLY, msg.xid, msg.chaddr, msg.message_type, msg.ciaddr,
                          msg.yiaddr, msg.siaddr, ZERO, msg.hops, msg.secs, msg.flags,
                          dict(msg.options), None)
        if msg.message_type == MessageType.ACK:
            lease_s = msg.lease_time
            self.hooks.relayed(pending.address, "ack",
                               self.clock() + lease_s if lease_s is not None else None)
        elif msg.message_type == MessageType.NAK:
            self.hooks.relayed(pending.address, "nak", None)
        self._count("relayed_reply")
        return [Send(out.pack(), BROADCAST, CLIENT_PORT, pending.ifindex, self.config.router)]

    # --- the owning server, for a relayed request ---------------------------------------------

    def _relayed_request(self, msg: DhcpMessage, src: IPv4Address) -> list[Send]:
        if msg.giaddr == ZERO or msg.relay is None or not msg.relay.remote_id:
            raise DhcpPolicyError("a request from the backbone without giaddr and option 82")
        try:
            remote = msg.relay.remote_id.decode("ascii").lower().rstrip(".")
        except UnicodeDecodeError:
            raise DhcpPolicyError("option 82 remote ID is not a DNS name") from None
        self.relay_log.append({"t": self.clock(), "giaddr": str(msg.giaddr), "remote_id": remote,
                               "circuit_id": msg.relay.circuit_id.decode("ascii", "replace"),
                               "type": msg.message_type.name})
        cid = msg.options.get(OPT_CLIENT_ID)
        mn = client_identity(cid)
        if cid is None or mn is None:
            raise DhcpPolicyError("relayed request without a usable client identifier")
        if mn != remote:
            # The relay vouches for who is on its link; a client ID naming someone else is a
            # theft attempt, not a renewal.
            self._count("remote_id_mismatch")
            return [self._nak(msg, f"remote ID {remote} is not the lease holder", 0, msg.relay)]
        held = msg.ciaddr if msg.ciaddr != ZERO else msg.requested_ip
        if msg.message_type == MessageType.RELEASE:
            self._release(cid, mn, "release")
            return []
        if msg.message_type != MessageType.REQUEST:
            raise DhcpPolicyError(f"relayed {msg.message_type.name} is not served")
        return self._request(msg, cid, mn, 0, held, remote=msg.relay)

    def status(self) -> dict[str, object]:
        return {
            "leases": [{"address": str(v.address), "mn": v.mn, "bound": v.bound,
                        "expires": round(v.expires, 3), "remote_renewals": v.remote_renewals}
                       for v in self.leases.values()],
            "counters": dict(self.counters),
            "option82_seen": self.relay_log[-20:],
        }


class PktinfoService:
    """A DHCP server's UDP socket on the event loop: what arrives is read until the socket
    would block, with its arrival interface and destination from the PKTINFO ancillary
    data, and handed to ``received``. One loop for both families (DhcpService,
    dhcpd6.Dhcp6Service); a subclass opens the socket and reads its family's PKTINFO."""

    label = "DHCP"
    port = SERVER_PORT  # the family's server port

    def __init__(self) -> None:
        self.sock: socket.socket | None = None

    def open_socket(self, port: int) -> socket.socket:
        raise NotImplementedError

    def received(self, data: bytes, anc: list[tuple[int, int, bytes]], addr: Any) -> None:
        raise NotImplementedError

    async def start(self, port: int | None = None) -> None:
        self.sock = self.open_socket(self.port if port is None else port)
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._readable)

    def close(self) -> None:
        if self.sock is not None:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None

    def _readable(self) -> None:
        assert self.sock is not None
        while True:
            try:
                data, anc, _flags, addr = self.sock.recvmsg(2048, 64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("%s socket: %s", self.label, exc)
                return
            self.received(data, anc, addr)


class DhcpService(PktinfoService):
    """``DhcpServer`` on UDP 67: the arrival interface and destination come from IP_PKTINFO,
    broadcasts leave through the access link they are meant for."""

    def __init__(self, server: DhcpServer) -> None:
        super().__init__()
        self.server = server

    def open_socket(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
        sock.bind(("0.0.0.0", port))
        sock.setblocking(False)
        return sock

    def received(self, data: bytes, anc: list[tuple[int, int, bytes]], addr: Any) -> None:
        ifindex, dst = 0, ZERO
        for level, kind, value in anc:
            if level == socket.IPPROTO_IP and kind == _IP_PKTINFO and len(value) >= 12:
                ifindex, _spec, raw = struct.unpack("I4s4s", value[:12])
                dst = IPv4Address(raw)
        for out in self.server.handle(data, IPv4Address(addr[0]), dst, ifindex):
            self.send(out)

    def send(self, out: Send) -> None:
        assert self.sock is not None
        anc = []
        if out.ifindex is not None or out.source is not None:
            spec = (out.source or ZERO).packed
            anc = [(socket.IPPROTO_IP, _IP_PKTINFO,
                    struct.pack("I4s4s", out.ifindex or 0, spec, ZERO.packed))]
        try:
            self.sock.sendmsg([out.data], anc, 0, (str(out.dest), out.port))
        except OSError as exc:
            log.warning("DHCP send to %s:%d: %s", out.dest, out.port, exc)
