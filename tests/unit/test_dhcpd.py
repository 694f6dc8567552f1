"""The AR's DHCP server and relay (agents/dhcpd.py) without sockets: the local exchange for an
authenticated MN, refusals, a remote renewal relayed with option 82 up to the owner's limit,
release and expiry, and malformed or unsolicited datagrams counted and dropped."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network

import pytest

from agents.dhcp import (
    BOOTREPLY,
    BOOTREQUEST,
    OPT_CLIENT_ID,
    OPT_DNS,
    OPT_HOME_AGENT,
    OPT_MESSAGE,
    OPT_PARAM_REQUEST,
    OPT_REQUESTED_IP,
    OPT_ROUTER,
    OPT_SERVER_ID,
    OPT_SUBNET_MASK,
    OPT_T1,
    OPT_T2,
    DhcpMessage,
    MessageType,
    RelayAgentInfo,
)
from agents.dhcpd import (
    BROADCAST,
    CLIENT_PORT,
    SERVER_PORT,
    ZERO,
    DhcpServer,
    Lease,
    Send,
    ServerConfig,
    client_identity,
    make_client_id,
)
from agents.relayauth import RelayAuth

ACCESS, BACKBONE = 7, 3
NOW = 1_800_000_000.0
AR1 = IPv4Address("10.255.0.1")  # owns 10.64.0.0/24: the MN's leases come from here
AR2 = IPv4Address("10.255.0.2")  # owns 10.64.1.0/24: the AR the MN moves to
POOLS = {AR1: IPv4Network("10.64.0.0/24"), AR2: IPv4Network("10.64.1.0/24")}
ROUTER = IPv4Address("169.254.0.1")
DNS = IPv4Address("10.253.0.2")
HA = "ha.isp.test"
MN = "mn3.example"
CHADDR = bytes.fromhex("02fa00000003")
CID = make_client_id(MN, 1)
LEASE_S, REMOTE_RENEWALS = 20, 2
NAMES = {AR1: "ar1.isp.test", AR2: "ar2.isp.test"}
PAIR_KEY = bytes(range(32))  # what KeyStore.pair_key gives the two ARs (tests/unit/test_relayauth)


class FakeHooks:
    """The AR side of the server: who is on the link, and a record of what it was told."""

    def __init__(self) -> None:
        self.on_link: dict[tuple[bytes, int], str] = {}
        self.sources: dict[tuple[IPv4Address, int], str] = {}
        self.bound_calls: list[tuple[IPv4Address, str, int, bool]] = []
        self.ended_calls: list[tuple[IPv4Address, str, str]] = []
        self.relayed_calls: list[tuple[IPv4Address, str, float | None]] = []

    def identity_on_link(self, chaddr: bytes, ifindex: int,
                         client_id: bytes | None) -> str | None:
        return self.on_link.get((chaddr, ifindex))

    def identity_of_source(self, address: IPv4Address, ifindex: int) -> str | None:
        return self.sources.get((address, ifindex))

    def owner_of(self, address: IPv4Address) -> IPv4Address | None:
        return next((sid for sid, pool in POOLS.items() if address in pool), None)

    def bound(self, lease: Lease, ifindex: int, renewal: bool) -> None:
        self.bound_calls.append((lease.address, lease.mn, ifindex, renewal))

    def ended(self, lease: Lease, reason: str) -> None:
        self.ended_calls.append((lease.address, lease.mn, reason))

    def relayed(self, address: IPv4Address, kind: str, expires: float | None) -> None:
        self.relayed_calls.append((address, kind, expires))

    def quiet(self) -> bool:
        return not (self.bound_calls or self.ended_calls or self.relayed_calls)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def config(sid: IPv4Address, name: str, last: int = 199) -> ServerConfig:
    return ServerConfig(server_id=sid, pool=POOLS[sid], first=100, last=last, lease_s=LEASE_S,
                        remote_renewals=REMOTE_RENEWALS, router=ROUTER, dns=DNS, home_agent=HA,
                        circuit_id=f"{name}.isp.test/{name}-acc".encode("ascii"))


class Ar:
    """One AR's DHCP server with its fake hooks, on a shared clock."""

    def __init__(self, sid: IPv4Address, name: str, clock: Clock, last: int = 199) -> None:
        self.hooks = FakeHooks()
        self.relay_auth = RelayAuth(sid, {a: n for a, n in NAMES.items() if a != sid},
                                    lambda peer: PAIR_KEY, clock=clock)
        self.server = DhcpServer(config(sid, name, last), self.hooks,
                                 lambda ifindex: ifindex == ACCESS, clock=clock,
                                 relay_auth=self.relay_auth,
                                 backbone=lambda ifindex: ifindex == BACKBONE)

    def sign(self, msg: DhcpMessage, to: IPv4Address) -> bytes:
        """``msg`` as this AR would send it to the AR ``to``: authenticated."""
        return self.relay_auth.sign(msg, to)

    def from_client(self, msg: DhcpMessage, dst: IPv4Address = BROADCAST,
                    src: IPv4Address = ZERO) -> list[Send]:
        return self.server.handle(msg.pack(), src, dst, ACCESS)

    def from_backbone(self, data: bytes, src: IPv4Address) -> list[Send]:
        return self.server.handle(data, src, self.server.config.server_id, BACKBONE)


def request(kind: MessageType, xid: int, cid: bytes | None = CID, *,
            ciaddr: IPv4Address = ZERO, giaddr: IPv4Address = ZERO, hops: int = 0,
            relay: RelayAgentInfo | None = None,
            options: dict[int, bytes] | None = None) -> DhcpMessage:
    """What a udhcpc started by agents/addresses.py sends (plus what a relay added)."""
    opts = {OPT_PARAM_REQUEST: bytes([1, 3, 6, 51, 54, OPT_HOME_AGENT]), **(options or {})}
    if cid is not None:
        opts[OPT_CLIENT_ID] = cid
    return DhcpMessage(BOOTREQUEST, xid, CHADDR, kind, ciaddr=ciaddr, giaddr=giaddr, hops=hops,
                       options=opts, relay=relay)


def only(sends: list[Send]) -> tuple[Send, DhcpMessage]:
    assert len(sends) == 1, sends
    return sends[0], DhcpMessage.unpack(sends[0].data)


def assert_to_client(send: Send) -> None:
    # Every reply on the access link is a broadcast: several udhcpc share the interface.
    assert (send.dest, send.port, send.ifindex, send.source) == (BROADCAST, CLIENT_PORT,
                                                                  ACCESS, ROUTER)


def bind(ar: Ar, cid: bytes = CID, xid: int = 0x1001) -> IPv4Address:
    """The full local exchange for the authenticated MN; returns its address."""
    ar.hooks.on_link[(CHADDR, ACCESS)] = MN
    _, offer = only(ar.from_client(request(MessageType.DISCOVER, xid, cid)))
    _, ack = only(ar.from_client(request(
        MessageType.REQUEST, xid + 1, cid,
        options={OPT_SERVER_ID: ar.server.config.server_id.packed,
                 OPT_REQUESTED_IP: offer.yiaddr.packed})))
    assert ack.message_type is MessageType.ACK
    return ack.yiaddr


# --- the local server ---------------------------------------------------------------------


def test_client_identifier_names_the_mn_and_the_lease() -> None:
    assert CID == b"\x00mn3.example#1"
    assert make_client_id("MN3.Example.", 2) == b"\x00mn3.example#2"
    assert client_identity(CID) == MN
    # A hardware-type identifier (what udhcpc sends without -C), no serial, not ASCII.
    for bad in (b"\x01\x02\xfa\x00\x00\x00\x03", b"\x00mn3.example", b"\x00mn3.example#x",
                b"\x00#1", b"\x00\xff#1", b"", None):
        assert client_identity(bad) is None


def test_local_exchange_offers_then_binds_with_the_lab_options() -> None:
    clock = Clock()
    ar1 = Ar(AR1, "ar1", clock)
    ar1.hooks.on_link[(CHADDR, ACCESS)] = MN
    send, offer = only(ar1.from_client(request(MessageType.DISCOVER, 0x1001)))
    assert_to_client(send)
    assert (offer.op, offer.message_type, offer.xid, offer.chaddr) == (
        BOOTREPLY, MessageType.OFFER, 0x1001, CHADDR)
    assert offer.yiaddr in ar1.server.config.addresses()
    assert offer.yiaddr == IPv4Address("10.64.0.100")  # the first of the configured range
    assert offer.server_id == AR1 and offer.lease_time == LEASE_S
    assert offer.options[OPT_T1] == (LEASE_S // 2).to_bytes(4, "big")
    assert offer.options[OPT_T2] == (LEASE_S * 7 // 8).to_bytes(4, "big")
    assert offer.options[OPT_SUBNET_MASK] == IPv4Address("255.255.255.255").packed
    assert offer.options[OPT_ROUTER] == ROUTER.packed and offer.options[OPT_DNS] == DNS.packed
    assert offer.home_agent == HA and offer.relay is None
    assert ar1.hooks.bound_calls == []  # an offer binds nothing

    send, ack = only(ar1.from_client(request(
        MessageType.REQUEST, 0x1002,
        options={OPT_SERVER_ID: AR1.packed, OPT_REQUESTED_IP: offer.yiaddr.packed})))
    assert_to_client(send)
    assert ack.message_type is MessageType.ACK and ack.yiaddr == offer.yiaddr
    assert ack.server_id == AR1 and ack.home_agent == HA
    assert ar1.hooks.bound_calls == [(offer.yiaddr, MN, ACCESS, False)]
    lease = ar1.server.leases[CID]
    assert lease.bound and lease.expires == NOW + LEASE_S

    # Renewing: unicast to our server ID from the leased address.
    clock.now += LEASE_S / 2
    send, ack = only(ar1.from_client(request(MessageType.REQUEST, 0x1003, ciaddr=offer.yiaddr),
                                     dst=AR1, src=offer.yiaddr))
    assert_to_client(send)
    assert ack.message_type is MessageType.ACK and ack.ciaddr == offer.yiaddr
    assert ar1.hooks.bound_calls[-1] == (offer.yiaddr, MN, ACCESS, True)
    assert lease.expires == clock.now + LEASE_S and lease.remote_renewals == 0
    assert ar1.server.counters == {"offer": 1, "ack": 1, "renew": 1}
    status = ar1.server.status()
    assert status["leases"] == [{"address": "10.64.0.100", "mn": MN, "bound": True,
                                 "expires": clock.now + LEASE_S, "remote_renewals": 0}]


def test_each_lease_of_one_mn_gets_its_own_address_until_the_pool_runs_out() -> None:
    ar1 = Ar(AR1, "ar1", Clock(), last=101)
    first = bind(ar1, make_client_id(MN, 1))
    second = bind(ar1, make_client_id(MN, 2), xid=0x2001)
    assert {first, second} == {IPv4Address("10.64.0.100"), IPv4Address("10.64.0.101")}
    _, nak = only(ar1.from_client(request(MessageType.DISCOVER, 0x3001, make_client_id(MN, 3))))
    assert nak.message_type is MessageType.NAK
    assert nak.options[OPT_MESSAGE] == b"pool exhausted"


def test_a_client_that_chose_another_offer_frees_ours() -> None:
    ar1 = Ar(AR1, "ar1", Clock())
    ar1.hooks.on_link[(CHADDR, ACCESS)] = MN
    only(ar1.from_client(request(MessageType.DISCOVER, 0x1001)))
    assert CID in ar1.server.leases
    chose_ar2 = request(MessageType.REQUEST, 0x1002,
                        options={OPT_SERVER_ID: AR2.packed,
                                 OPT_REQUESTED_IP: IPv4Address("10.64.1.100").packed})
    assert ar1.from_client(chose_ar2) == []
    assert ar1.server.leases == {} and ar1.hooks.quiet()


@pytest.mark.parametrize("on_link, cid, kind", [
    (None, CID, MessageType.DISCOVER),  # never authenticated on this link
    (None, CID, MessageType.REQUEST),
    ("mn2.example", CID, MessageType.DISCOVER),  # authenticated as another MN
    (MN, make_client_id("mn2.example", 1), MessageType.DISCOVER),
    (MN, make_client_id("mn2.example", 1), MessageType.REQUEST),
    (MN, None, MessageType.DISCOVER),  # no client identifier
    (MN, b"\x01" + CHADDR, MessageType.DISCOVER),  # udhcpc's default, hardware type
])
def test_only_the_authenticated_mn_named_by_its_client_id_is_served(
        on_link: str | None, cid: bytes | None, kind: MessageType) -> None:
    ar1 = Ar(AR1, "ar1", Clock())
    if on_link is not None:
        ar1.hooks.on_link[(CHADDR, ACCESS)] = on_link
    opts = {} if kind is MessageType.DISCOVER else {
        OPT_SERVER_ID: AR1.packed, OPT_REQUESTED_IP: IPv4Address("10.64.0.100").packed}
    assert ar1.from_client(request(kind, 0x1001, cid, options=opts)) == []
    assert ar1.server.counters == {"refused": 1}
    assert ar1.server.leases == {} and ar1.hooks.quiet()


def test_expiry_ends_bound_leases_and_drops_stale_offers_quietly() -> None:
    clock = Clock()
    ar1 = Ar(AR1, "ar1", clock)
    address = bind(ar1)
    other = make_client_id(MN, 2)
    only(ar1.from_client(request(MessageType.DISCOVER, 0x2001, other)))  # offered only
    clock.now += LEASE_S - 0.5
    assert ar1.server.expire() == [] and ar1.hooks.ended_calls == []
    clock.now += 0.5
    assert [lease.address for lease in ar1.server.expire()] == [address]
    assert ar1.hooks.ended_calls == [(address, MN, "expired")]
    assert ar1.server.counters["expired"] == 1
    clock.now = NOW + 30  # an offer is held 30 s, then forgotten without a word
    assert [lease.client_id for lease in ar1.server.expire()] == [other]
    assert ar1.hooks.ended_calls == [(address, MN, "expired")]
    assert ar1.server.leases == {} and ar1.server.counters["expired"] == 1


def test_local_release_ends_the_lease() -> None:
    ar1 = Ar(AR1, "ar1", Clock())
    address = bind(ar1)
    release = request(MessageType.RELEASE, 0x1009, ciaddr=address,
                      options={OPT_SERVER_ID: AR1.packed})
    assert ar1.from_client(release, dst=AR1, src=address) == []
    assert ar1.hooks.ended_calls == [(address, MN, "release")] and ar1.server.leases == {}


# --- relay (the MN's current AR) and owner (the AR whose pool the address is from) ------------


def two_ars() -> tuple[Clock, Ar, Ar, IPv4Address]:
    """ar1 leased the MN an address; the MN then authenticated at ar2 and is attached there."""
    clock = Clock()
    ar1, ar2 = Ar(AR1, "ar1", clock), Ar(AR2, "ar2", clock)
    address = bind(ar1)
    ar2.hooks.sources[(address, ACCESS)] = MN
    return clock, ar1, ar2, address


def renew_through(ar2: Ar, address: IPv4Address, xid: int) -> Send:
    """udhcpc renewing: unicast from its address to the server that assigned it (ar1)."""
    return only(ar2.from_client(request(MessageType.REQUEST, xid, ciaddr=address),
                                dst=AR1, src=address))[0]


def test_remote_renewal_is_relayed_with_option_82_and_nakked_past_the_limit() -> None:
    clock, ar1, ar2, address = two_ars()
    for n in range(1, REMOTE_RENEWALS + 2):
        clock.now += LEASE_S / 2
        xid = 0x5000 + n
        up = renew_through(ar2, address, xid)
        assert (up.dest, up.port, up.source, up.ifindex) == (AR1, SERVER_PORT, AR2, None)
        relayed = DhcpMessage.unpack(up.data)
        # RFC 3046 at the relay: giaddr is our server ID, one more hop, the MN's DNS name.
        assert relayed.relay is not None and relayed.relay.auth  # docs/protocol.md §14.7
        assert (relayed.relay.circuit_id, relayed.relay.remote_id) == (
            b"ar2.isp.test/ar2-acc", MN.encode())
        assert (relayed.giaddr, relayed.hops, relayed.ciaddr, relayed.xid) == (
            AR2, 1, address, xid)
        assert relayed.options[OPT_CLIENT_ID] == CID

        down = ar1.from_backbone(up.data, AR2)
        reply_send, reply = only(down)
        assert (reply_send.dest, reply_send.port, reply_send.source) == (AR2, SERVER_PORT, AR1)
        assert reply.giaddr == AR2 and reply.relay is not None  # echoed, RFC 3046 §2.2
        assert (reply.relay.circuit_id, reply.relay.remote_id) == (
            relayed.relay.circuit_id, relayed.relay.remote_id)
        assert reply.relay.auth != relayed.relay.auth  # the owner's own authenticator

        to_mn, forwarded = only(ar2.from_backbone(reply_send.data, AR1))
        assert_to_client(to_mn)
        assert forwarded.relay is None and forwarded.giaddr == ZERO  # option 82 stripped
        assert forwarded.message_type is reply.message_type and forwarded.xid == xid
        assert forwarded.server_id == AR1  # the client keeps renewing with its owner

        if n <= REMOTE_RENEWALS:
            assert reply.message_type is MessageType.ACK and reply.yiaddr == address
            assert ar1.server.leases[CID].remote_renewals == n
            assert ar1.hooks.bound_calls[-1] == (address, MN, 0, True)
            assert ar2.hooks.relayed_calls[-1] == (address, "ack", clock.now + LEASE_S)
        else:
            assert reply.message_type is MessageType.NAK
            assert b"remote renewal limit" in reply.options[OPT_MESSAGE]
            assert CID not in ar1.server.leases
            assert ar1.hooks.ended_calls == [(address, MN, "remote renewal limit")]
            assert ar2.hooks.relayed_calls[-1] == (address, "nak", None)
    assert ar1.server.counters["renew_remote"] == REMOTE_RENEWALS
    assert ar1.server.counters["nak_limit"] == 1
    assert ar2.server.counters["relayed_request"] == REMOTE_RENEWALS + 1
    assert ar2.server.counters["relayed_reply"] == REMOTE_RENEWALS + 1
    seen = ar1.server.status()["option82_seen"]
    assert isinstance(seen, list) and len(seen) == REMOTE_RENEWALS + 1
    assert seen[0]["remote_id"] == MN and seen[0]["circuit_id"] == "ar2.isp.test/ar2-acc"
    assert ar2.server.leases == {}  # a relay holds no lease


def test_rebinding_broadcast_is_relayed_to_the_pool_owner() -> None:
    _, ar1, ar2, address = two_ars()
    up = only(ar2.from_client(request(MessageType.REQUEST, 0x6001, ciaddr=address)))[0]
    assert up.dest == AR1 and DhcpMessage.unpack(up.data).giaddr == AR2
    # An address from no AR's pool: refused on the spot.
    stray = IPv4Address("192.0.2.7")
    send, nak = only(ar2.from_client(request(MessageType.REQUEST, 0x6002, ciaddr=stray)))
    assert_to_client(send)
    assert nak.message_type is MessageType.NAK


def test_relayed_request_whose_remote_id_is_not_the_holder_is_nakked() -> None:
    _, ar1, ar2, address = two_ars()
    theft = request(MessageType.REQUEST, 0x7001, ciaddr=address, giaddr=AR2, hops=1,
                    relay=RelayAgentInfo(b"ar2.isp.test/ar2-acc", b"mn2.example"))
    send, nak = only(ar1.from_backbone(ar2.sign(theft, AR1), AR2))
    assert (send.dest, send.port) == (AR2, SERVER_PORT)
    assert nak.message_type is MessageType.NAK and nak.relay is not None
    assert nak.relay.remote_id == b"mn2.example"
    assert ar1.server.counters["remote_id_mismatch"] == 1
    lease = ar1.server.leases[CID]
    assert lease.bound and lease.remote_renewals == 0 and lease.expires == NOW + LEASE_S
    assert ar1.hooks.bound_calls == [(address, MN, ACCESS, False)]  # only the first binding


def test_relayed_release_ends_the_lease_at_the_owner() -> None:
    _, ar1, ar2, address = two_ars()
    release = request(MessageType.RELEASE, 0x8001, ciaddr=address,
                      options={OPT_SERVER_ID: AR1.packed})
    up, relayed = only(ar2.from_client(release, dst=AR1, src=address))
    assert up.dest == AR1 and relayed.message_type is MessageType.RELEASE
    assert relayed.relay is not None and relayed.relay.remote_id == MN.encode()
    assert ar2.hooks.relayed_calls == [(address, "release", None)]
    assert ar1.from_backbone(up.data, AR2) == []  # RFC 2131: a release gets no answer
    assert ar1.hooks.ended_calls == [(address, MN, "release")]
    assert ar1.server.leases == {} and ar1.server.counters["release"] == 1


def test_relay_refuses_what_no_mn_here_holds() -> None:
    _, _, ar2, address = two_ars()
    ar2.hooks.sources.clear()  # the MN is not attached here
    assert ar2.from_client(request(MessageType.REQUEST, 0x9001, ciaddr=address),
                           dst=AR1, src=address) == []
    discover = request(MessageType.DISCOVER, 0x9002)  # only requests and releases go on
    assert ar2.from_client(discover, dst=AR1) == []
    assert ar2.server.counters == {"refused": 2} and ar2.hooks.quiet()


def test_a_reply_we_did_not_ask_for_is_dropped() -> None:
    _, ar1, ar2, address = two_ars()
    up = renew_through(ar2, address, 0xA001)
    reply = only(ar1.from_backbone(up.data, AR2))[0]
    assert len(ar2.from_backbone(reply.data, AR1)) == 1
    assert ar2.from_backbone(reply.data, AR1) == []  # the same reply again: a replay
    unknown = DhcpMessage(BOOTREPLY, 0xA002, CHADDR, MessageType.ACK, yiaddr=address,
                          giaddr=AR2, options={OPT_SERVER_ID: AR1.packed})
    assert ar2.from_backbone(ar1.sign(unknown, AR2), AR1) == []
    assert ar2.server.counters["relay_refused_replay"] == 1
    assert ar2.server.counters["refused"] == 1
    assert [kind for _, kind, _ in ar2.hooks.relayed_calls] == ["ack"]


# --- malformed input: counted, dropped, never raised ------------------------------------------


def _with_raw_option(msg: DhcpMessage, raw: bytes) -> bytes:
    """``msg`` with ``raw`` option octets inserted before its end option."""
    data = msg.pack().rstrip(b"\0")
    assert data.endswith(b"\xff")
    return data[:-1] + raw + b"\xff"


def _relayed(address: IPv4Address) -> DhcpMessage:
    return request(MessageType.REQUEST, 0xB001, ciaddr=address, giaddr=AR2, hops=1)


def _truncated(a: IPv4Address) -> bytes:
    return _relayed(a).pack()[:200]


def _wrong_magic(a: IPv4Address) -> bytes:
    data = _relayed(a).pack()
    return data[:236] + b"\x63\x82\x53\x00" + data[240:]


def _rai_runs_past(a: IPv4Address) -> bytes:
    return _with_raw_option(_relayed(a), bytes([82, 4, 2, 9]) + b"mn")


def _signed_by_ar2(msg: DhcpMessage) -> bytes:
    return RelayAuth(AR2, {AR1: NAMES[AR1]}, lambda peer: PAIR_KEY,
                     clock=lambda: NOW).sign(msg, AR1)


def _rai_without_remote_id(a: IPv4Address) -> bytes:
    return _signed_by_ar2(replace(_relayed(a), relay=RelayAgentInfo(b"ar")))


def _rai_not_ascii(a: IPv4Address) -> bytes:
    return _signed_by_ar2(replace(_relayed(a), relay=RelayAgentInfo(b"", "é".encode())))


def _no_rai(a: IPv4Address) -> bytes:
    return _relayed(a).pack()


BAD_FROM_BACKBONE = [_truncated, _wrong_magic, _rai_runs_past, _rai_without_remote_id,
                     _rai_not_ascii, _no_rai]


@pytest.mark.parametrize("make", BAD_FROM_BACKBONE, ids=lambda f: f.__name__.strip("_"))
def test_malformed_relayed_requests_are_counted_and_change_nothing(
        make: Callable[[IPv4Address], bytes]) -> None:
    _, ar1, _, address = two_ars()
    before = dict(vars(ar1.server.leases[CID]))
    assert ar1.from_backbone(make(address), AR2) == []
    # Refused by the parser or the policy, or (no option 82 at all) as unauthenticated.
    counters = ar1.server.counters
    assert counters.get("refused", 0) + counters.get("relay_refused", 0) == 1
    assert vars(ar1.server.leases[CID]) == before
    assert ar1.hooks.ended_calls == [] and len(ar1.hooks.bound_calls) == 1


def test_malformed_datagrams_from_the_access_link_are_counted() -> None:
    ar1 = Ar(AR1, "ar1", Clock())
    ar1.hooks.on_link[(CHADDR, ACCESS)] = MN
    good = request(MessageType.DISCOVER, 0xC001).pack()
    reply = DhcpMessage(BOOTREPLY, 0xC002, CHADDR, MessageType.OFFER,
                        yiaddr=IPv4Address("10.64.0.100"), options={OPT_SERVER_ID: AR2.packed})
    for data in (b"", good[:239], good[:236] + bytes(4) + good[240:],
                 good[:240] + bytes([53, 1, 99]) + good[243:],  # unknown message type
                 good + bytes(1300),  # longer than a frame
                 reply.pack()):  # a server on the access link: not ours to relay
        assert ar1.server.handle(data, ZERO, BROADCAST, ACCESS) == []
    assert ar1.server.counters == {"refused": 6}
    assert ar1.server.leases == {} and ar1.hooks.quiet()


def test_a_request_too_big_for_option_82_is_refused_not_raised() -> None:
    _, _, ar2, address = two_ars()
    big = request(MessageType.REQUEST, 0xD001, ciaddr=address, options={12: b"h" * 1200})
    assert len(big.pack()) <= 1500  # a valid datagram, with no room for what the relay adds
    assert ar2.from_client(big, dst=AR1, src=address) == []
    assert ar2.server.counters == {"refused": 1}
    assert ar2.server._relays == {} and ar2.hooks.quiet()


def test_option_82_split_in_two_is_refused_as_unauthenticated() -> None:
    # Two option 82 instances (RFC 3396) put the authenticator somewhere other than the last
    # sub-option of the last option (docs/protocol.md §14.7): refused, nothing changes.
    _, ar1, ar2, address = two_ars()
    up = renew_through(ar2, address, 0xE001)
    data = up.data.rstrip(b"\0")[:-1] + bytes([82, 13, 2, 11]) + MN.encode() + b"\xff"
    assert ar1.from_backbone(data, AR2) == []
    assert ar1.server.counters["relay_refused_malformed"] == 1
    assert ar1.server.leases[CID].remote_renewals == 0
