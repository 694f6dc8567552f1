"""Wire helpers of the handoff path that need no root: the rtnetlink messages the AR's FIB
sends, and the ICMP echo packets of the CN's paced prober."""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest

from agents import netlink, probe


def test_route_message_round_trips_through_the_parser() -> None:
    body = netlink.route_message(
        dst=ipaddress.IPv4Network("10.64.0.10/32"), oif=7,
        gateway=ipaddress.IPv4Address("169.254.1.3"), proto=250, priority=150,
    )
    family, dst_len, _, _, table, proto, scope, rtype, _ = struct.unpack_from("=BBBBBBBBI", body)
    assert (family, dst_len, table, proto, scope, rtype) == (
        socket.AF_INET, 32, netlink.RT_TABLE_MAIN, 250, netlink.RT_SCOPE_UNIVERSE,
        netlink.RTN_UNICAST)
    attrs = netlink.parse_attrs(body[12:])
    assert attrs[netlink.RTA_DST] == bytes([10, 64, 0, 10])
    assert struct.unpack("=I", attrs[netlink.RTA_PRIORITY])[0] == 150
    info = netlink.parse_route(body)
    assert info.oif == 7 and str(info.gateway) == "169.254.1.3"


def test_attributes_are_padded_and_strictly_parsed() -> None:
    a = netlink.attr(netlink.IFLA_IFNAME, b"vx0\0")  # 4 + 4 octets: no padding
    b = netlink.attr(netlink.RTA_DST, b"\x01")  # 4 + 1 octets: padded to 8
    assert len(a) == 8 and len(b) == 8
    assert netlink.parse_attrs(a + b) == {netlink.IFLA_IFNAME: b"vx0\0",
                                          netlink.RTA_DST: b"\x01"}
    with pytest.raises(netlink.NetlinkError):
        netlink.parse_attrs(struct.pack("=HH", 40, 1) + b"\0" * 4)  # claims more than it has
    with pytest.raises(netlink.NetlinkError):
        netlink.parse_route(b"\0" * 5)


def test_probe_packets_checksum_and_replies_are_matched_by_identifier() -> None:
    req = probe.echo_request(0x1234, 70000)  # sequence numbers wrap at 16 bits
    assert req[0] == probe.ICMP_ECHO and probe.checksum(req) == 0
    assert struct.unpack_from("!H", req, 6)[0] == 70000 & 0xFFFF
    ip = bytes([0x45, 0, 0, 84, 0, 0, 0, 0, 61, 1, 0, 0]) + bytes(8)
    reply = bytes([probe.ICMP_ECHOREPLY]) + req[1:]
    assert probe.parse_reply(ip + reply, 0x1234) == (70000 & 0xFFFF, 61)
    assert probe.parse_reply(ip + reply, 0x9999) is None  # someone else's ping
    assert probe.parse_reply(ip + req, 0x1234) is None  # a request, not a reply
    assert probe.parse_reply(ip[:10], 0x1234) is None
