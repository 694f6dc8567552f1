"""The fast redirect over SRv6 (issue 18): the route encapsulations agents/netlink.py sends,
octet for octet against what iproute2 6.1 sends for the same routes (captured with strace on
this machine, whose kernel then refused them: it has no seg6 lightweight tunnels), and the
FIB's choice between SRv6 and the VXLAN overlay."""

from __future__ import annotations

import errno
from ipaddress import IPv4Address, IPv6Address, IPv6Network
from typing import Any

import pytest

from agents import netlink
from agents.contract import srv6_sid
from agents.fib import KernelFib

SID4, SID6 = IPv6Address("2001:db8:4000::d4"), IPv6Address("2001:db8:4000::d6")

# The RTA_ENCAP payloads of:
#   ip -6 route add 2001:db8:4000::d6/128 encap seg6local action End.DX6 nh6 :: dev va
#   ip -6 route add 2001:db8:4000::d4/128 encap seg6local action End.DX4 nh4 0.0.0.0 dev va
#   ip route add 10.9.9.9/32 encap seg6 mode encap segs 2001:db8:4000::d4 dev va
IPROUTE2_DX6 = bytes.fromhex("0800010005000000" "14000500" + "00" * 16)
IPROUTE2_DX4 = bytes.fromhex("0800010006000000" "0800040000000000")
IPROUTE2_ENCAP = bytes.fromhex("200001000100000000020400000000002001" "0db840000000000000000000"
                               "00d4")


def test_encapsulations_are_iproute2s() -> None:
    assert netlink.seg6local_dx(6) == netlink.Encap(netlink.LWTUNNEL_ENCAP_SEG6_LOCAL,
                                                    IPROUTE2_DX6)
    assert netlink.seg6local_dx(4) == netlink.Encap(netlink.LWTUNNEL_ENCAP_SEG6_LOCAL,
                                                    IPROUTE2_DX4)
    assert netlink.seg6_encap((SID4,)) == netlink.Encap(netlink.LWTUNNEL_ENCAP_SEG6,
                                                        IPROUTE2_ENCAP)
    # Two segments: the SRH lists them last first, segments left and last entry at 1.
    two = netlink.seg6_encap((SID6, SID4)).body
    # (attribute header, mode, then the SRH: next header, length, type, segments left)
    assert two[16:32] == SID4.packed and two[-16:] == SID6.packed
    assert two[8:12] == bytes([0, 4, 4, 1]) and len(two) == 4 + 4 + 8 + 32
    with pytest.raises(netlink.NetlinkError):
        netlink.seg6_encap(())


def test_a_route_message_carries_the_encapsulation_as_iproute2_does() -> None:
    body = netlink.route_message(dst=IPv6Network(SID6), oif=3,
                                 encap=netlink.seg6local_dx(6))
    attrs = netlink.parse_attrs(body[netlink.RTMSG.size:])
    assert attrs[netlink.RTA_ENCAP] == IPROUTE2_DX6
    assert attrs[netlink.RTA_ENCAP_TYPE] == b"\x07\x00"
    # The nested flag is set on the wire, as iproute2's addattr_nest sets it.
    off = body.index(IPROUTE2_DX6) - 4
    assert int.from_bytes(body[off + 2:off + 4], "little") == \
        netlink.RTA_ENCAP | netlink.NLA_F_NESTED


def test_the_sids_lie_in_the_ars_own_64() -> None:
    pool = IPv6Network("2001:db8:4000:100::/56")
    assert srv6_sid(pool, 4) == IPv6Address("2001:db8:4000:100::d4")
    assert srv6_sid(pool, 6) == IPv6Address("2001:db8:4000:100::d6")
    assert srv6_sid(pool, 6) in next(pool.subnets(new_prefix=64))


class Recorder:
    """The FIB's netlink: every request kept; ``refuse`` fails the ones with an encap."""

    def __init__(self, refuse: bool = False) -> None:
        self.replaced: list[dict[str, Any]] = []
        self.deleted: list[dict[str, Any]] = []
        self.forgotten: list[tuple[Any, int]] = []
        self.refuse = refuse

    def route_replace(self, **route: Any) -> None:
        if self.refuse and route.get("encap") is not None \
                and route["encap"].kind == netlink.LWTUNNEL_ENCAP_SEG6:
            raise netlink.NetlinkError(errno.EOPNOTSUPP, "Operation not supported")
        self.replaced.append(route)

    def route_delete(self, **route: Any) -> None:
        self.deleted.append(route)

    def neigh_delete(self, address: Any, ifindex: int) -> bool:
        self.forgotten.append((address, ifindex))
        return True

    def close(self) -> None: ...


def fib_with(nl: Recorder) -> KernelFib:
    fib = KernelFib(lambda _p: False)
    fib._nl.close()
    fib._nl = nl  # type: ignore[assignment]
    return fib


PEER4, PEER6 = IPv4Address("10.252.0.2"), IPv6Address("fe80::fa:2ff:fe00:2")
PEER_SID4, PEER_SID6 = IPv6Address("2001:db8:4000:200::d4"), IPv6Address("2001:db8:4000:200::d6")


def test_with_srv6_a_redirect_is_encapsulated_to_the_peers_sid() -> None:
    nl = Recorder()
    fib = fib_with(nl)
    assert fib.redirect_tunnel == "vxlan"
    fib.enable_srv6({4: SID4, 6: SID6}, 9, {PEER4: PEER_SID4, PEER6: PEER_SID6})
    assert fib.redirect_tunnel == "srv6" and fib.own_sids == [SID4, SID6]
    assert [r["encap"] for r in nl.replaced[:2]] == [netlink.seg6local_dx(4),
                                                      netlink.seg6local_dx(6)]
    assert nl.deleted == [{"dst": IPv6Network(SID6 + 1), "proto": 250}]  # the probe went
    nl.replaced.clear()
    assert fib.add_redirect(IPv4Address("10.64.0.5"), PEER4, 9)
    prefix = IPv6Network("2001:db8:4000:101::/64")
    assert fib.add_redirect6(prefix, PEER6, 9)
    four, six = nl.replaced
    assert four["encap"] == netlink.seg6_encap((PEER_SID4,)) and "gateway" not in four
    assert six["encap"] == netlink.seg6_encap((PEER_SID6,)) and six["dst"] == prefix
    assert fib.redirected == {IPv4Address("10.64.0.5"): PEER4}
    assert fib.redirected6 == {prefix: PEER6}


def test_without_srv6_the_sids_are_taken_back_and_the_redirect_stays_on_vxlan() -> None:
    nl = Recorder(refuse=True)
    fib = fib_with(nl)
    with pytest.raises(netlink.NetlinkError):
        fib.enable_srv6({4: SID4, 6: SID6}, 9, {PEER4: PEER_SID4})
    assert fib.redirect_tunnel == "vxlan" and fib.own_sids == []
    assert [d["dst"] for d in nl.deleted] == [IPv6Network(SID4), IPv6Network(SID6)]
    nl.replaced.clear()
    assert fib.add_redirect(IPv4Address("10.64.0.5"), PEER4, 9)
    (route,) = nl.replaced
    assert route["gateway"] == PEER4 and "encap" not in route


def test_an_address_leaving_its_access_link_takes_its_neighbour_entry_along() -> None:
    # A recycled lease's next holder has another MAC: the AR must not keep the last one's.
    nl = Recorder()
    fib = fib_with(nl)
    a, p6 = IPv4Address("10.64.0.12"), IPv6Network("2001:db8:4000:140::/64")
    fib.add_access(a, 5)
    fib.add_access(p6, 5)
    fib.del_access(a)
    fib.del_access(p6)
    fib.del_access(a)  # gone already: nothing more
    assert nl.forgotten == [(a, 5)]
