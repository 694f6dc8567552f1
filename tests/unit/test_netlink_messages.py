"""agents/netlink.py's message iterator, which routewatch now decodes with: every whole
message of a datagram, aligned, and nothing from a header that claims more than is there."""

from __future__ import annotations

import struct

from agents import netlink


def _msg(mtype: int, seq: int, payload: bytes) -> bytes:
    length = netlink.NLMSGHDR.size + len(payload)
    pad = bytes((4 - length % 4) % 4)
    return netlink.NLMSGHDR.pack(length, mtype, 0, seq, 0) + payload + pad


def test_messages_of_one_datagram() -> None:
    buf = _msg(netlink.RTM_NEWROUTE, 1, b"abcde") + _msg(netlink.RTM_DELROUTE, 2, b"xy")
    assert list(netlink.messages(buf)) == [(netlink.RTM_NEWROUTE, 0, 1, b"abcde"),
                                           (netlink.RTM_DELROUTE, 0, 2, b"xy")]


def test_a_truncated_or_short_header_ends_the_iteration() -> None:
    good = _msg(netlink.RTM_NEWROUTE, 1, b"abcd")
    claims_more = struct.pack("=IHHII", 400, netlink.RTM_NEWROUTE, 0, 2, 0) + b"zz"
    too_short = struct.pack("=IHHII", 4, netlink.RTM_NEWROUTE, 0, 3, 0)
    assert [m[2] for m in netlink.messages(good + claims_more)] == [1]
    assert [m[2] for m in netlink.messages(too_short + good)] == []
    assert list(netlink.messages(b"\x01\x02")) == []
