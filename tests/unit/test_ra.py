"""The Router Advertisement after a handoff (agents/ra.py, docs/protocol.md section 15): the
document's vectors, rebuilt octet by octet from its layout; the strict parser; the MN's checks
on arrival and its comparison; the AR's MAC lookup and send path.
"""

from __future__ import annotations

import asyncio
import re
import struct
from ipaddress import IPv4Address, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

import pytest

from agents import ra
from agents.ra import PrefixInfo, RaError, RouterAdvert

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
MN_MAC = bytes.fromhex("02fa00000003")
MN_LL = IPv6Address("fe80::fa:ff:fe00:3")
PREFIXES = {
    "rerouted_one": [IPv6Network("2001:db8:4000:100::/64")],
    "rerouted_two": [IPv6Network("2001:db8:4000:100::/64"),
                     IPv6Network("2001:db8:4010:200::/64")],
    "rerouted_none": [],
}


def compute_ra_vectors() -> dict[str, list[tuple[str, str]]]:
    out = {}
    for name, prefixes in PREFIXES.items():
        advert = ra.rerouted_advert(prefixes)
        out[name] = [("src", str(ra.ROUTER_LINK_LOCAL)), ("dst", str(MN_LL)),
                     ("mn_mac", MN_MAC.hex()),
                     ("prefixes", " ".join(map(str, prefixes)) or "-"),
                     ("ra", advert.pack(ra.ROUTER_LINK_LOCAL, MN_LL).hex())]
    return out


def render_ra_vectors() -> str:
    return "\n".join(
        f"```ra-vector {name}\n" + "".join(f"{k} = {v}\n" for k, v in items) + "```\n"
        for name, items in compute_ra_vectors().items())


def load_ra_vectors() -> dict[str, dict[str, str]]:
    blocks = re.findall(r"^```ra-vector (\w+)\n(.*?)^```", DOC.read_text(), re.S | re.M)
    return {name: dict(line.split(" = ", 1) for line in body.strip().splitlines())
            for name, body in blocks}


VECTORS = load_ra_vectors()


def hand_packed(src: IPv6Address, dst: IPv6Address, prefixes: list[IPv6Network]) -> bytes:
    """Section 15.2's layout, written out as a third party would, checksum included."""
    body = bytes([134, 0, 0, 0, 0, 0, 0, 0]) + bytes(8)  # hop limit, flags, lifetime 0...
    body += bytes([1, 1]) + bytes.fromhex("02fa00000001")  # the ARs' shared access MAC
    for p in prefixes:
        body += bytes([3, 4, p.prefixlen, 0]) + b"\xff" * 8 + bytes(4) + p.network_address.packed
    pseudo = src.packed + dst.packed + len(body).to_bytes(4, "big") + bytes([0, 0, 0, 58])
    words = pseudo + body
    total = sum(int.from_bytes(words[i:i + 2], "big") for i in range(0, len(words), 2))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return body[:2] + (0xFFFF - total).to_bytes(2, "big") + body[4:]


def test_document_has_the_ra_vectors() -> None:
    assert set(VECTORS) == set(PREFIXES)
    for name, items in compute_ra_vectors().items():
        assert VECTORS[name] == dict(items), f"regenerate the {name} vector"


@pytest.mark.parametrize("name", sorted(PREFIXES))
def test_vector_octet_by_octet_and_back(name: str) -> None:
    vec = VECTORS[name]
    src, dst = IPv6Address(vec["src"]), IPv6Address(vec["dst"])
    prefixes = [IPv6Network(p) for p in vec["prefixes"].split() if p != "-"]
    wire = bytes.fromhex(vec["ra"])
    assert wire == hand_packed(src, dst, prefixes)
    advert = RouterAdvert.unpack(wire, src, dst)
    assert advert.listed() == prefixes
    assert advert.source_mac == bytes.fromhex("02fa00000001")
    assert advert.router_lifetime_s == 0 and advert.cur_hop_limit == 0
    assert all(not p.on_link and not p.autonomous for p in advert.prefixes)
    # The MN's link-local address is the EUI-64 one of its MAC (RFC 4291 appendix A).
    assert ra.mac_link_local(bytes.fromhex(vec["mn_mac"])) == dst


def test_the_checksum_is_verified_when_the_addresses_are_given() -> None:
    wire = bytearray(bytes.fromhex(VECTORS["rerouted_one"]["ra"]))
    wire[3] ^= 1
    RouterAdvert.unpack(bytes(wire))  # a raw socket's kernel checks it; without addresses
    with pytest.raises(RaError, match="checksum"):
        RouterAdvert.unpack(bytes(wire), ra.ROUTER_LINK_LOCAL, MN_LL)


def _pio(plen: int = 64, flags: int = 0, valid: int = 10, preferred: int = 10,
         prefix: str = "2001:db8::") -> bytes:
    return bytes([3, 4]) + struct.pack("!BBII4x16s", plen, flags, valid, preferred,
                                       IPv6Address(prefix).packed)


HEAD = bytes([134, 0, 0, 0, 0, 0, 0, 0]) + bytes(8)


@pytest.mark.parametrize(("data", "why"), [
    (b"", "shorter"),
    (HEAD[:15], "shorter"),
    (bytes([133]) + HEAD[1:], "type 133"),
    (HEAD[:1] + b"\x01" + HEAD[2:], "code 1"),
    (HEAD + b"\x03", "truncated"),
    (HEAD + bytes([9, 0]) + bytes(6), "length 0"),
    (HEAD + bytes([3, 5]) + bytes(30), "40 octets"),
    (HEAD + bytes([3, 3]) + bytes(22), "24 octets, not 32"),
    (HEAD + _pio(plen=129), "129"),
    (HEAD + _pio(flags=0x20), "reserved"),
    (HEAD + _pio(valid=5, preferred=6), "preferred"),
    (HEAD + _pio(prefix="2001:db8::1"), "host bits"),
    (HEAD + _pio() + _pio(), "twice"),
    (HEAD + bytes([1, 2]) + bytes(14), "one, of 8"),
    (HEAD + bytes([1, 1]) + bytes(6) + bytes([1, 1]) + bytes(6), "one, of 8"),
    (HEAD + _pio() * 40, "longer"),
])
def test_strict_parsing(data: bytes, why: str) -> None:
    with pytest.raises(RaError, match=why):
        RouterAdvert.unpack(data)


def test_unknown_options_are_skipped_and_the_rest_kept() -> None:
    mtu = bytes([5, 1, 0, 0]) + (1500).to_bytes(4, "big")
    advert = RouterAdvert.unpack(HEAD + mtu + _pio() + bytes([200, 2]) + bytes(14))
    assert advert.listed() == [IPv6Network("2001:db8::/64")]
    assert advert.prefixes[0] == PrefixInfo(IPv6Network("2001:db8::/64"), valid_s=10,
                                            preferred_s=10)


def test_pack_round_trips_and_refuses_what_does_not_fit() -> None:
    advert = RouterAdvert((PrefixInfo(IPv6Network("2001:db8:1::/48"), True, True, 30, 20),),
                          None, 64, 0x80, 1800, 1, 2)
    assert RouterAdvert.unpack(advert.pack()) == advert
    many = [IPv6Network(f"2001:db8:{i:x}::/64") for i in range(40)]
    with pytest.raises(RaError, match="do not fit"):
        ra.rerouted_advert(many).pack()
    with pytest.raises(RaError, match="6 octets"):
        RouterAdvert(source_mac=b"\x01").pack()


# --- the MN: what it believes, and what it then binds at its Home Agent --------------------

def test_the_mn_accepts_only_an_on_link_ra_from_the_access_router() -> None:
    wire = bytes.fromhex(VECTORS["rerouted_one"]["ra"])
    gw = ra.ROUTER_LINK_LOCAL
    assert ra.accept(wire, gw, 255, 4, 4).listed() == PREFIXES["rerouted_one"]
    with pytest.raises(RaError, match="access interface"):
        ra.accept(wire, gw, 255, 5, 4)
    for hops in (254, 64, None):
        with pytest.raises(RaError, match="hop limit"):
            ra.accept(wire, gw, hops, 4, 4)
    for src in ("fe80::1", "2001:db8::1"):
        with pytest.raises(RaError, match="not the access router"):
            ra.accept(wire, IPv6Address(src), 255, 4, 4)


def test_a_held_prefix_the_ra_leaves_out_is_refused() -> None:
    a, b = PREFIXES["rerouted_two"]
    assert ra.refused([a, b], [a, b], [a, b]) == []
    assert ra.refused([a, b], [a], [a, b]) == [b]
    assert ra.refused([a], [], [a]) == [a]
    # The RA is not authenticated: it cannot add what the AUTH_REPLY did not confirm.
    assert ra.refused([a, b], [a, b], [a]) == [b]
    assert ra.refused([a], [a, b], [a]) == []  # listing more than we hold changes nothing


# --- the AR: the MN's MAC, its link-local address, the send ----------------------------------

ARP = """IP address       HW type     Flags       HW mask     Mask     Device
10.64.0.5        0x1         0x2         02:fa:00:00:00:03     *        ar2-acc
10.64.0.6        0x1         0x0         00:00:00:00:00:00     *        ar2-acc
10.64.0.7        0x1         0x2         02:aa:00:00:00:07     *        ar2-eth1
10.64.0.8        0x1         0x2         zz:aa:00:00:00:07     *        ar2-acc
"""


def test_arp_lookup_wants_a_complete_entry_on_the_access_interface() -> None:
    assert ra.arp_mac(IPv4Address("10.64.0.5"), "ar2-acc", ARP) == MN_MAC
    assert ra.arp_mac(IPv4Address("10.64.0.6"), "ar2-acc", ARP) is None  # incomplete
    assert ra.arp_mac(IPv4Address("10.64.0.7"), "ar2-acc", ARP) is None  # another link
    assert ra.arp_mac(IPv4Address("10.64.0.8"), "ar2-acc", ARP) is None  # garbage
    assert ra.arp_mac(IPv4Address("10.64.0.9"), "ar2-acc", "") is None


class FakeSender:
    ifname = "ar2-acc"

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[RouterAdvert, IPv6Address]] = []
        self.fail = fail

    def send(self, advert: RouterAdvert, dst: IPv6Address) -> None:
        if self.fail:
            raise OSError("no route")
        self.sent.append((advert, dst))


def test_advertise_waits_for_the_arp_entry_then_sends_to_the_mns_link_local() -> None:
    tables = iter(["", ARP])
    logged: list[tuple[str, dict[str, Any]]] = []
    sender = FakeSender()
    dst = asyncio.run(ra.advertise_rerouted(
        sender, IPv4Address("10.64.0.5"), PREFIXES["rerouted_one"],
        lambda ev, **kw: logged.append((ev, kw)), "mn1", lambda: next(tables, ARP)))
    assert dst == MN_LL and sender.sent[0][1] == MN_LL
    assert sender.sent[0][0].listed() == PREFIXES["rerouted_one"]
    assert logged[0][0] == "ra_sent"


def test_advertise_gives_up_at_its_deadline_and_logs_a_send_failure() -> None:
    logged: list[str] = []
    none = asyncio.run(ra.advertise_rerouted(
        FakeSender(), IPv4Address("10.64.0.9"), [],
        lambda ev, **kw: logged.append(ev), "mn1", lambda: ARP, wait_s=0.02))
    assert none is None
    failed = asyncio.run(ra.advertise_rerouted(
        FakeSender(fail=True), IPv4Address("10.64.0.5"), [],
        lambda ev, **kw: logged.append(ev), "mn1", lambda: ARP))
    assert failed is None and logged == ["ra_failed", "ra_failed"]


def test_ancillary_data_gives_hop_limit_and_interface() -> None:
    import socket
    anc = [(socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT, struct.pack("@i", 255)),
           (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, bytes(16) + struct.pack("@I", 7)),
           (socket.SOL_SOCKET, 1, b"x")]
    assert ra.ancillary(anc) == (255, 7)
    assert ra.ancillary([]) == (None, 0)


if __name__ == "__main__":
    print(render_ra_vectors(), end="")


# --- the MN's judge: the first RA after its AUTH, or the AUTH_REPLY's lists at the deadline --

class Judged:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.refused: list[tuple[list[IPv6Network], str]] = []
        self.now = 100.0

    def judge(self, wait_s: float = 5.0) -> ra.RaJudge:
        return ra.RaJudge(lambda ev, **kw: self.events.append((ev, kw)),
                          lambda ps, by: self.refused.append((ps, by)), lambda: self.now,
                          wait_s)


def test_the_judge_binds_what_the_ra_leaves_out() -> None:
    a, b = PREFIXES["rerouted_two"]
    seen = Judged()

    async def walk() -> None:
        judge = seen.judge()
        judge.advert(ra.rerouted_advert([a]))  # before any AUTH of ours: kept, not judged
        assert seen.refused == []
        judge.expect("ar2", 100.5, [a, b], [a, b])  # that RA is older than our AUTH
        assert seen.refused == []
        seen.now = 101.0
        judge.advert(ra.rerouted_advert([a]))
        judge.advert(ra.rerouted_advert([]))  # one judgement per AUTH: the first RA wins
        assert judge.status()["judged"] == 1 and judge.status()["received"] == 3

    asyncio.run(walk())
    assert seen.refused == [([b], "ra")]
    assert seen.events[-1] == ("ra_received", {"ar": "ar2", "listed": [str(a)],
                                               "refused": [str(b)], "t": 101.0})


def test_an_ra_that_beat_the_reply_is_judged_when_the_reply_comes() -> None:
    [a] = PREFIXES["rerouted_one"]
    seen = Judged()

    async def walk() -> None:
        judge = seen.judge()
        judge.advert(ra.rerouted_advert([a]))  # at 100.0, after the AUTH sent at 99.9
        judge.expect("ar2", 99.9, [a], [a])

    asyncio.run(walk())
    assert seen.refused == [([], "ra")]


def test_without_an_ra_the_authenticated_reply_decides_at_the_deadline() -> None:
    a, b = PREFIXES["rerouted_two"]
    seen = Judged()

    async def walk() -> None:
        judge = seen.judge(wait_s=0.01)
        judge.expect("ar5", 100.0, [a, b], [a])
        judge.expect("ar1", 100.0, [a, b], [a])  # a newer AUTH: the first deadline is void
        await asyncio.sleep(0.05)
        assert judge.status()["missing"] == 1

    asyncio.run(walk())
    assert seen.refused == [([b], "auth_reply")]
    assert seen.events == [("ra_missing", {"ar": "ar1", "refused": [str(b)]})]


def test_a_flood_of_bad_ras_costs_one_event_a_second() -> None:
    seen = Judged()
    judge = seen.judge()
    for i in range(100):
        seen.now = 100.0 + i * 0.05
        judge.dropped("hop limit 64")
    assert judge.status()["dropped"] == 100
    assert len(seen.events) == 5
