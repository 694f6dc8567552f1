"""DHCPv4 wire format (agents/dhcp.py): round trips, option 82, the Home Agent option, strict
rejection of malformed datagrams, and a real DISCOVER from Debian's busybox udhcpc."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from agents.dhcp import (
    BOOTREPLY,
    BOOTREQUEST,
    MAGIC,
    OPT_HOME_AGENT,
    OPT_LEASE_TIME,
    OPT_SERVER_ID,
    DhcpError,
    DhcpMessage,
    MessageType,
    RelayAgentInfo,
)

CAPTURE = Path(__file__).resolve().parents[1] / "data" / "udhcpc-discover.bin"


def ack() -> DhcpMessage:
    return DhcpMessage(
        BOOTREPLY, 0x12345678, bytes.fromhex("02fa00000009"), MessageType.ACK,
        yiaddr=IPv4Address("10.64.0.10"), giaddr=IPv4Address("169.254.0.1"),
        options={OPT_SERVER_ID: IPv4Address("10.64.0.1").packed,
                 OPT_LEASE_TIME: (600).to_bytes(4, "big"),
                 OPT_HOME_AGENT: b"ha.isp.test"},
        relay=RelayAgentInfo(b"ar2-acc", b"mn1.example"),
    )


def test_round_trip_with_relay_info_and_home_agent() -> None:
    msg = ack()
    data = msg.pack()
    assert len(data) == 300 and data[236:240] == MAGIC
    back = DhcpMessage.unpack(data)
    assert back == msg
    assert back.server_id == IPv4Address("10.64.0.1") and back.lease_time == 600
    assert back.home_agent == "ha.isp.test"
    assert back.relay == RelayAgentInfo(b"ar2-acc", b"mn1.example")


def test_long_option_is_split_and_concatenated() -> None:  # RFC 3396
    msg = replace(ack(), options={OPT_HOME_AGENT: b"h" * 300})
    assert DhcpMessage.unpack(msg.pack()).options[OPT_HOME_AGENT] == b"h" * 300


def test_a_real_udhcpc_discover_parses() -> None:
    msg = DhcpMessage.unpack(CAPTURE.read_bytes())
    assert msg.op == BOOTREQUEST and msg.message_type is MessageType.DISCOVER
    assert len(msg.chaddr) == 6 and msg.options[12] == b"mn1"
    assert OPT_HOME_AGENT in msg.options[55]  # udhcpc -O 224 asks for the HA option


@pytest.mark.parametrize("mutate, why", [
    (lambda d: d[:200], "shorter"),
    (lambda d: d[:236] + b"\0\0\0\0" + d[240:], "magic"),
    (lambda d: bytes([3]) + d[1:], "op"),
    (lambda d: d[:240] + bytes([53, 1, 9]) + d[243:], "message type"),
    (lambda d: d[:240] + bytes([51, 40]) + d[242:244], "runs past"),
    (lambda d: d.rstrip(b"\0")[:-1], "no end"),
    (lambda d: d.rstrip(b"\0") + b"\x07", "after the option end"),
    (lambda d: d + bytes(1300), "longer"),
])
def test_malformed_datagrams_are_rejected_with_a_reason(mutate: object, why: str) -> None:
    data = ack().pack()
    with pytest.raises(DhcpError, match=why):
        DhcpMessage.unpack(mutate(data))  # type: ignore[operator]


def test_bad_option_values_are_the_parsers_error() -> None:
    bad = replace(ack(), options={OPT_SERVER_ID: b"\x0a\x40"})
    with pytest.raises(DhcpError, match="server identifier"):
        DhcpMessage.unpack(bad.pack())
    blank = replace(ack(), options={OPT_HOME_AGENT: b"ha isp"})
    with pytest.raises(DhcpError, match="home agent"):
        DhcpMessage.unpack(blank.pack())
