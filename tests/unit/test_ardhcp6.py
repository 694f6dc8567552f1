"""The AR's DHCPv6 side as the agent wires it (agents/ardhcp6.py): the real server, the real
link bindings and the real prefix mobility, with fakes only for the kernel, BGP and the DNS
primary. A /64 goes only to a station whose DUID proves its session; the delegation attaches
the /64 and writes its PTR; its end detaches it and deletes the PTR."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from ipaddress import IPv6Address, IPv6Network
from typing import Any

from agents import dhcp6
from agents.ardhcp6 import ArDhcp6, ArDhcp6Config
from agents.contract import Dhcp6Server as Dhcp6Settings
from agents.dhcp6 import (
    ALL_SERVERS,
    ClientId,
    Dhcp6Message,
    ElapsedTime,
    IaPd,
    IaPrefix,
    MessageType,
    ServerId,
    Status,
    StatusCode,
)
from agents.dhcpd6 import eui64_mac
from agents.fib import Rib
from agents.handoff6 import PrefixMobility
from agents.linkproof import LinkBindings, link_key, link_proof
from agents.relayauth import RelayAuth6
from tests.unit.test_handoff6 import Fakes

ACCESS = 7
ME, AR2 = IPv6Address("2001:db8:ff::7"), IPv6Address("2001:db8:ff::8")
POOL, POOL2 = IPv6Network("2001:db8:4000::/56"), IPv6Network("2001:db8:4000:100::/56")
MN = "mn1.example"
MN_LL = IPv6Address("fe80::fa:ff:fe00:3")
SESSION, MSK = b"s" * 8, b"k" * 32
FIRST = IPv6Network("2001:db8:4000:c0::/64")  # index 192: the DHCPv6 quarter's first


class Ptr:
    def __init__(self) -> None:
        self.records: dict[IPv6Network, str] = {}
        self.zones: list[str | None] = []

    async def set_ptr(self, prefix: IPv6Network, mn: str, ttl: int,
                      zone: str | None = None) -> None:
        self.records[prefix] = mn
        self.zones.append(zone)

    async def delete_ptr(self, prefix: IPv6Network, zone: str | None = None) -> None:
        self.records.pop(prefix, None)


def side(ptr: Ptr) -> tuple[ArDhcp6, Fakes, LinkBindings]:
    fakes = Fakes()
    prefixes = PrefixMobility(loopback=ME, pool=POOL, managed=IPv6Network("2001:db8:4000::/40"),
                              mn_prefixlen=64, checker=fakes, kernel=fakes, bgp=fakes, rib=Rib(),
                              spawn=asyncio.run)
    on_link = LinkBindings(lambda sid: MSK if sid == SESSION else None, 120.0)
    config = ArDhcp6Config("ar1.isp.test", ME, POOL, 64, Dhcp6Settings(192, 255, 600, 2),
                           ACCESS, "ar1-acc", {POOL: ME, POOL2: AR2})
    d = ArDhcp6(config, on_link, prefixes, RelayAuth6(ME, {AR2: "ar2.isp.test"}, lambda f: None),
                lambda ifindex: False, ptr, prefixes.events, run)
    return d, fakes, on_link


def run(aw: Awaitable[None]) -> None:
    asyncio.run(aw)  # type: ignore[arg-type]  # an Awaitable that is a coroutine


def duid(proof: bytes | None) -> bytes:
    return dhcp6.make_duid(MN, 1, proof)


def proof(mac: bytes) -> bytes:
    return link_proof(link_key(MSK), mac, MN, 1)


def exchange(d: ArDhcp6, client: bytes, src: IPv6Address = MN_LL) -> list[Any]:
    solicit = Dhcp6Message(MessageType.SOLICIT, 1, (ClientId(client), ElapsedTime(0),
                                                     IaPd(3, 0, 0, ())))
    out = d.server.handle(solicit.pack(), src, ALL_SERVERS, ACCESS)
    if not out:
        return []
    adv = dhcp6.unpack(out[0].data)
    assert isinstance(adv, Dhcp6Message)
    ia = adv.find(IaPd)
    assert ia is not None
    given = next(o.prefix for o in ia.options if isinstance(o, IaPrefix))
    request = Dhcp6Message(MessageType.REQUEST, 2, (
        ClientId(client), ElapsedTime(0), ServerId(dhcp6.server_duid("ar1.isp.test")),
        IaPd(3, 0, 0, (IaPrefix(600, 600, given),))))
    return d.server.handle(request.pack(), src, ALL_SERVERS, ACCESS)


def test_a_proven_station_gets_its_64_attached_with_its_ptr() -> None:
    ptr = Ptr()
    d, fakes, on_link = side(ptr)
    on_link.authenticated(MN, ACCESS, SESSION)
    mac = eui64_mac(MN_LL)
    assert mac is not None
    assert exchange(d, duid(proof(mac)))
    assert fakes.attached == [FIRST] and fakes.announced == []  # at home: the pool covers it
    assert d.prefixes.attached[FIRST].mn == MN
    assert ptr.records == {FIRST: MN}
    assert ptr.zones == ["0.0.0.0.0.4.8.b.d.0.1.0.0.2.ip6.arpa."]  # our pool's zone
    # Its end (a Release) detaches it and deletes the PTR.
    release = Dhcp6Message(MessageType.RELEASE, 3, (
        ClientId(duid(proof(mac))), ElapsedTime(0),
        ServerId(dhcp6.server_duid("ar1.isp.test")), IaPd(3, 0, 0, (IaPrefix(0, 0, FIRST),))))
    out = d.server.handle(release.pack(), MN_LL, ALL_SERVERS, ACCESS)
    reply = dhcp6.unpack(out[0].data)
    assert isinstance(reply, Dhcp6Message)
    status = reply.find(StatusCode)
    assert status is None or status.code == Status.SUCCESS
    assert fakes.detached == [FIRST] and FIRST not in d.prefixes.attached
    assert ptr.records == {}


def test_a_station_that_cannot_prove_the_session_gets_nothing() -> None:
    """A captured AUTH replayed from another station names the MN: without the session's
    MSK its DUID carries no valid proof, or a proof over another MAC."""
    ptr = Ptr()
    d, fakes, on_link = side(ptr)
    on_link.authenticated(MN, ACCESS, SESSION)
    other = IPv6Address("fe80::fa:ff:fe00:9")
    mac = eui64_mac(MN_LL)
    assert mac is not None
    for client, src in [(duid(None), MN_LL), (duid(b"\x00" * 8), MN_LL),
                        (duid(proof(mac)), other),  # the MN's proof, another station
                        (duid(proof(mac)), IPv6Address("fe80::1"))]:  # no EUI-64 at all
        assert exchange(d, client, src) == []
    assert fakes.attached == [] and ptr.records == {}
    assert d.server.bindings == {}
