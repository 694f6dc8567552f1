"""What the DHCP fuzz target found on the access link (agents/fuzzers/dhcp.py): knowing an MN's
name was enough to renew, re-home or end its lease from any station, and to make the relay
speak for its address. Each now changes nothing.
"""

from __future__ import annotations

from dataclasses import replace

from agents.dhcp import OPT_SERVER_ID, MessageType
from agents.dhcpd import make_client_id
from tests.unit.test_dhcpd import (
    AR1,
    CID,
    MN,
    Ar,
    Clock,
    bind,
    only,
    request,
    two_ars,
)

STRANGER = bytes.fromhex("02fa000000ee")


def test_a_stranger_cannot_renew_release_or_decline_the_mns_lease() -> None:
    ar1 = Ar(AR1, "ar1", Clock())
    address = bind(ar1)
    ar1.hooks.bound_calls.clear()
    for kind in (MessageType.REQUEST, MessageType.RELEASE, MessageType.DECLINE):
        forged = replace(request(kind, 0x7001, ciaddr=address), chaddr=STRANGER)
        assert ar1.from_client(forged, dst=AR1, src=address) == []
    assert ar1.hooks.quiet() and ar1.server.leases[CID].bound
    assert ar1.server.counters["refused"] == 3
    # The holder itself still renews and releases.
    assert only(ar1.from_client(request(MessageType.REQUEST, 0x7002, ciaddr=address),
                                dst=AR1, src=address))[1].message_type is MessageType.ACK
    ar1.from_client(request(MessageType.RELEASE, 0x7003, ciaddr=address), dst=AR1, src=address)
    assert ar1.server.leases == {} and ar1.hooks.ended_calls == [(address, MN, "release")]


def test_the_relay_does_not_speak_for_an_attached_mn_under_another_identifier() -> None:
    """Before: a RELEASE or REQUEST for the attached MN's address with no or another client
    identifier was relayed; the owner's NAK for the mismatch then detached the MN."""
    _, ar1, ar2, address = two_ars()
    ar1.hooks.bound_calls.clear()
    for cid in (None, make_client_id("evil.example", 1)):
        for kind in (MessageType.REQUEST, MessageType.RELEASE):
            forged = replace(request(kind, 0x7101, cid, ciaddr=address,
                                     options={OPT_SERVER_ID: AR1.packed}), chaddr=STRANGER)
            assert ar2.from_client(forged, dst=AR1, src=address) == []
    assert ar2.hooks.quiet() and ar1.hooks.quiet()
    assert ar2.server.counters == {"refused": 4}
