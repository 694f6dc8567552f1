"""Fuzz target ``dhcp``: the AR's DHCP server and relay (agents/dhcpd.py) and the wire format
under it (agents/dhcp.py). Each case is a fresh server whose one authenticated MN holds a bound
lease and a visitor address it renews through this AR; random requests and replies (every
message type, client identifiers of the victim, of someone else and malformed, option 82, long
and split options, giaddr and hops, the owner's answers to a relayed renewal) arrive from the
access link or the backbone, then their mutants.

Findings: an exception out of ``DhcpServer.handle`` (it must count and drop bad input) or out
of ``DhcpMessage.unpack`` other than DhcpError; a parsed message that does not re-pack; and,
from a station on the access link that is not the victim, anything that offers, acknowledges,
relays, binds or ends the victim's lease (a forgery). Backbone input is counted, not judged:
who may speak for a relay is issue 19 defect 3.
"""

from __future__ import annotations

import random
import struct
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network

from agents import dhcpd
from agents.dhcp import (
    BOOTREPLY,
    BOOTREQUEST,
    OPT_CLIENT_ID,
    OPT_HOME_AGENT,
    OPT_LEASE_TIME,
    OPT_PARAM_REQUEST,
    OPT_REQUESTED_IP,
    OPT_SERVER_ID,
    DhcpError,
    DhcpMessage,
    MessageType,
    RelayAgentInfo,
)
from agents.dhcpd import BROADCAST, ZERO, DhcpServer, Lease, make_client_id
from agents.relayauth import RelayAuth, RelayAuthError

from .common import Tally, mutate

ACCESS, BACKBONE = 7, 3
AR1 = IPv4Address("10.255.0.1")
AR2 = IPv4Address("10.255.0.2")
POOLS = {AR1: IPv4Network("10.64.0.0/24"), AR2: IPv4Network("10.64.1.0/24")}
ROUTER = IPv4Address("169.254.0.1")
VICTIM = "mn3.example"
VICTIM_MAC = bytes.fromhex("02fa00000003")
ATTACKER_MAC = bytes.fromhex("02fa000000ee")
VICTIM_CID = make_client_id(VICTIM, 1)
MUTANTS = 15
PAIR_KEY = bytes(range(32))  # the AR1-AR2 relay key of the fuzzed pair
# An address of AR2's pool that the victim holds while attached here: this AR is its relay.
VISITOR_ADDRESS = POOLS[AR2][100]


class _Hooks:
    """The AR around the server: the victim authenticated on the access link, and a record."""

    def __init__(self) -> None:
        self.victim_address: IPv4Address | None = None
        self.bound_calls: list[tuple[Lease, int, bool]] = []
        self.ended_calls: list[tuple[Lease, str]] = []
        self.relayed_calls: list[tuple[IPv4Address, str]] = []

    def identity_on_link(self, chaddr: bytes, ifindex: int,
                         client_id: bytes | None = None) -> str | None:
        # The session proof in the client identifier is the link's (agents/linkproof.py);
        # the fuzz target judges the server's policy with the station taken as proven.
        return VICTIM if (chaddr, ifindex) == (VICTIM_MAC, ACCESS) else None

    def identity_of_source(self, address: IPv4Address, ifindex: int) -> str | None:
        held = (self.victim_address, VISITOR_ADDRESS)
        return VICTIM if ifindex == ACCESS and address in held else None

    def owner_of(self, address: IPv4Address) -> IPv4Address | None:
        return next((sid for sid, pool in POOLS.items() if address in pool), None)

    def bound(self, lease: Lease, ifindex: int, renewal: bool) -> None:
        self.bound_calls.append((lease, ifindex, renewal))

    def ended(self, lease: Lease, reason: str) -> None:
        self.ended_calls.append((lease, reason))

    def relayed(self, address: IPv4Address, kind: str, expires: float | None) -> None:
        self.relayed_calls.append((address, kind))

    def reset(self) -> None:
        self.bound_calls.clear()
        self.ended_calls.clear()
        self.relayed_calls.clear()


def _server(now: list[float]) -> tuple[DhcpServer, _Hooks]:
    hooks = _Hooks()
    config = dhcpd.ServerConfig(server_id=AR1, pool=POOLS[AR1], first=100, last=103,
                                lease_s=3600, remote_renewals=2, router=ROUTER,
                                dns=IPv4Address("10.253.0.2"), home_agent="ha.isp.test",
                                circuit_id=b"ar1.isp.test/ar1-acc")
    # The relay authenticator as an AR runs it (docs/protocol.md §14.7): AR2 is the one peer,
    # with a pair key that the fuzzer's own AR2 signs with, so genuine relay traffic exists.
    relay_auth = RelayAuth(AR1, {AR2: "ar2.isp.test"}, lambda name: PAIR_KEY,
                           clock=lambda: now[0])
    server = DhcpServer(config, hooks, lambda ifindex: ifindex == ACCESS, clock=lambda: now[0],
                        relay_auth=relay_auth, backbone=lambda ifindex: ifindex == BACKBONE)
    # The victim's own exchange, so that there is a bound lease to attack.
    discover = DhcpMessage(BOOTREQUEST, 1, VICTIM_MAC, MessageType.DISCOVER,
                           options={OPT_CLIENT_ID: VICTIM_CID})
    offer = DhcpMessage.unpack(server.handle(discover.pack(), ZERO, BROADCAST, ACCESS)[0].data)
    request = DhcpMessage(BOOTREQUEST, 2, VICTIM_MAC, MessageType.REQUEST,
                          options={OPT_CLIENT_ID: VICTIM_CID, OPT_SERVER_ID: AR1.packed,
                                   OPT_REQUESTED_IP: offer.yiaddr.packed})
    server.handle(request.pack(), ZERO, BROADCAST, ACCESS)
    hooks.victim_address = offer.yiaddr
    hooks.reset()
    return server, hooks


def _address(rng: random.Random, victim: IPv4Address) -> IPv4Address:
    return rng.choice((victim, victim, ZERO, POOLS[AR1][rng.randrange(256)],
                       POOLS[AR2][rng.randrange(256)], IPv4Address(rng.getrandbits(32))))


def _cid(rng: random.Random) -> bytes | None:
    return rng.choice((VICTIM_CID, VICTIM_CID, make_client_id(VICTIM, rng.randint(2, 9)),
                       make_client_id("evil.example", 1), b"\x00MN3.Example.#1",
                       b"\x01" + ATTACKER_MAC, b"\x00" + rng.randbytes(rng.randint(0, 40)),
                       None))


def _message(rng: random.Random, victim: IPv4Address) -> DhcpMessage:
    options: dict[int, bytes] = {}
    cid = _cid(rng)
    if cid is not None:
        options[OPT_CLIENT_ID] = cid
    if rng.random() < 0.5:
        options[OPT_SERVER_ID] = rng.choice((AR1, AR2, IPv4Address(rng.getrandbits(32)))).packed
    if rng.random() < 0.4:
        options[OPT_REQUESTED_IP] = _address(rng, victim).packed
    if rng.random() < 0.3:
        options[OPT_PARAM_REQUEST] = bytes([1, 3, 6, 51, 54, OPT_HOME_AGENT])
    if rng.random() < 0.2:
        options[OPT_LEASE_TIME] = struct.pack("!I", rng.getrandbits(32))
    if rng.random() < 0.1:
        options[OPT_HOME_AGENT] = rng.choice((b"ha.isp.test", b"", b"a b", b"\xff"))
    if rng.random() < 0.1:  # long enough to be split over several options (RFC 3396)
        options[rng.choice((12, 43, 60, 77, 250))] = rng.randbytes(rng.randint(200, 700))
    relay = None
    if rng.random() < 0.3:
        relay = RelayAgentInfo(rng.choice((b"ar2.isp.test/ar2-acc", b"", rng.randbytes(9))),
                               rng.choice((VICTIM.encode(), b"evil.example", b"", b"\xff\xfe",
                                           VICTIM.upper().encode() + b".")))
    return DhcpMessage(
        BOOTREPLY if rng.random() < 0.15 else BOOTREQUEST, rng.getrandbits(32),
        rng.choice((VICTIM_MAC, ATTACKER_MAC, ATTACKER_MAC, rng.randbytes(rng.randint(1, 16)))),
        rng.choice(list(MessageType)), ciaddr=_address(rng, victim),
        yiaddr=rng.choice((ZERO, victim)), giaddr=rng.choice((ZERO, ZERO, AR1, AR2)),
        hops=rng.choice((0, 0, 1, 3, 4, 255)), secs=rng.getrandbits(16),
        flags=rng.choice((0, 0x8000, rng.getrandbits(16))), options=options, relay=relay)


def _plausible(rng: random.Random, msg: DhcpMessage, victim: IPv4Address) -> DhcpMessage:
    """What the victim, or a station posing as it, would send: the requests the server acts
    on, so that acceptances and near misses are common rather than rare."""
    kind = rng.choice((MessageType.DISCOVER, MessageType.REQUEST, MessageType.REQUEST,
                       MessageType.RELEASE, MessageType.DECLINE))
    cid = rng.choice((VICTIM_CID, VICTIM_CID, make_client_id(VICTIM, 2)))
    options = {OPT_CLIENT_ID: cid}
    if kind == MessageType.REQUEST and rng.random() < 0.5:
        options[OPT_SERVER_ID] = AR1.packed
        options[OPT_REQUESTED_IP] = rng.choice((victim, POOLS[AR1][101])).packed
    return replace(msg, op=BOOTREQUEST, message_type=kind, giaddr=ZERO, hops=0, relay=None,
                   chaddr=rng.choice((VICTIM_MAC, VICTIM_MAC, ATTACKER_MAC)),
                   ciaddr=rng.choice((victim, ZERO)) if kind != MessageType.DISCOVER else ZERO,
                   options=options)


def _wire(tally: Tally, data: bytes) -> None:
    """The parser alone: DhcpError or a message that re-packs."""
    try:
        msg = DhcpMessage.unpack(data)
    except DhcpError:
        return
    try:
        DhcpMessage.unpack(msg.pack())
    except ValueError as exc:  # pack refuses what it cannot encode; unpack must still agree
        if "longer than one Ethernet frame" not in str(exc):
            raise


def _names_victim(data: bytes) -> bool:
    try:
        cid = DhcpMessage.unpack(data).options.get(OPT_CLIENT_ID)
        return dhcpd.client_identity(cid) == VICTIM
    except DhcpError:
        return False


def _judge(tally: Tally, data: bytes, chaddr: bytes | None, sends: list[dhcpd.Send],
           hooks: _Hooks, from_access: bool, genuine: bytes | None = None) -> None:
    acted = bool(sends or hooks.bound_calls or hooks.ended_calls or hooks.relayed_calls)
    if not acted:
        tally.rejected += 1
        return
    if not from_access:
        # From the backbone only what AR2 really signed may act: anything else the server
        # acted on got past the relay authenticator.
        if data == genuine:
            tally.accepted += 1
            tally.count("backbone_genuine_acted")
        else:
            tally.forgery(data, "a backbone datagram not signed by the peer AR was acted on")
        return
    if chaddr == VICTIM_MAC or chaddr is None:
        # The victim itself, or bytes the parser refused; the victim may do what it likes.
        tally.accepted += 1
        return
    victim_touched = any(lease.mn == VICTIM for lease, _, _ in hooks.bound_calls) or any(
        lease.mn == VICTIM for lease, _ in hooks.ended_calls) or bool(hooks.relayed_calls)
    granted = False
    for send in sends:
        try:
            out = DhcpMessage.unpack(send.data)
        except DhcpError:
            tally.uncaught += 1
            tally.note("server sent unparseable", send.data, "reply does not parse")
            continue
        if out.message_type in (MessageType.OFFER, MessageType.ACK) or out.op == BOOTREQUEST:
            granted = True
    relayed = [s for s in sends if s.port == dhcpd.SERVER_PORT]
    if (relayed and len(relayed) == len(sends) and not hooks.bound_calls
            and not hooks.ended_calls and _names_victim(data)):
        # A relay cannot tell the station holding an attached MN's address from another that
        # writes the same client identifier: it has no record of the MN's hardware address.
        tally.count("relay_holder_unverified")
        return
    if victim_touched or granted:
        what = "touched the victim's lease" if victim_touched else "served a stranger"
        tally.forgery(data, f"unauthenticated station {chaddr.hex(':')}: {what}")
    else:
        tally.rejected += 1


def _relay_renewal(server: DhcpServer, xid: int) -> None:
    """The victim renews its visitor address through this AR: the relay now waits for ``xid``."""
    renew = DhcpMessage(BOOTREQUEST, xid, VICTIM_MAC, MessageType.REQUEST,
                        ciaddr=VISITOR_ADDRESS, options={OPT_CLIENT_ID: VICTIM_CID})
    server.handle(renew.pack(), VISITOR_ADDRESS, AR2, ACCESS)


def _owner_reply(rng: random.Random, xid: int) -> DhcpMessage:
    """What AR2, the owner, answers through the relay: an ACK or NAK with option 82 echoed."""
    return DhcpMessage(
        BOOTREPLY, xid, VICTIM_MAC, rng.choice((MessageType.ACK, MessageType.NAK)),
        ciaddr=VISITOR_ADDRESS, yiaddr=VISITOR_ADDRESS, giaddr=AR1,
        options={OPT_SERVER_ID: AR2.packed, OPT_LEASE_TIME: struct.pack("!I", 3600)},
        relay=RelayAgentInfo(b"ar1.isp.test/ar1-acc", VICTIM.encode()))


def run(tally: Tally, count: int, seed: int) -> None:
    rng = random.Random(seed)
    now = [1_800_000_000.0]
    donors: list[bytes] = []
    while tally.inputs < count:
        server, hooks = _server(now)
        assert hooks.victim_address is not None
        msg = _message(rng, hooks.victim_address)
        plausible = rng.random() < 0.35
        relay_reply = not plausible and rng.random() < 0.2
        if plausible:
            msg = _plausible(rng, msg, hooks.victim_address)
        elif relay_reply:
            msg = _owner_reply(rng, msg.xid)
        from_access = plausible or (not relay_reply and rng.random() < 0.7)
        try:
            base = msg.pack()
            if not from_access and rng.random() < 0.6:
                # Signed by the peer as it would be (then mutated below): the interesting
                # backbone inputs are near-genuine ones.
                base = RelayAuth(AR2, {AR1: "ar1.isp.test"}, lambda name: PAIR_KEY,
                                 clock=lambda: now[0]).sign(msg, AR1)
        except (ValueError, RelayAuthError):
            continue  # drawn options too long for one frame, or no option 82 room
        donors = (donors + [base])[-32:]
        src = AR2 if relay_reply else rng.choice(
            (ZERO, hooks.victim_address, AR2, IPv4Address(rng.getrandbits(32))))
        dst = rng.choice((BROADCAST, BROADCAST, AR1, ROUTER) if plausible
                         else (BROADCAST, BROADCAST, AR1, AR2, ROUTER, ZERO))
        ifindex = ACCESS if from_access else BACKBONE
        for i in range(MUTANTS + 1):
            if tally.inputs >= count:
                return
            data = base if i == 0 else mutate(rng, base, donors=tuple(donors))
            if i % 4 == 0:  # offers (30 s) and relay marks (10 s) expire; the lease does not
                now[0] += rng.choice((1.0, 11.0, 31.0))
                server.expire()
            if relay_reply:  # each input finds the relay waiting, as the real answer would
                _relay_renewal(server, msg.xid)
            hooks.reset()
            ok, sends = tally.run(data, lambda: server.handle(data, src, dst, ifindex), ())  # noqa: B023
            # The wire format alone, outside the timed call: pack and unpack must agree.
            try:
                _wire(tally, data)
            except Exception as exc:  # the parser must raise DhcpError or nothing
                tally.uncaught += 1
                tally.note("parser", data, repr(exc)[:200])
            if not ok or sends is None:
                continue
            try:
                parsed_chaddr: bytes | None = DhcpMessage.unpack(data).chaddr
            except DhcpError:
                parsed_chaddr = None
            _judge(tally, data, parsed_chaddr, sends, hooks, from_access,
                   genuine=base if src == AR2 else None)
