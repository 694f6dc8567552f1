"""Relay authentication between ARs (agents/relayauth.py, issue 19 defect 3): forged, replayed,
tampered or misdirected relayed DHCP messages change nothing at the owner and are counted by
name; the pair key is the same at both ends; random mutations never raise or get through."""

from __future__ import annotations

import random
from dataclasses import replace
from ipaddress import IPv4Address

import pytest

from agents.auth.keys import Suite
from agents.auth.keystore import KeyStore
from agents.dhcp import OPT_SERVER_ID, DhcpMessage, MessageType, RelayAgentInfo
from agents.relayauth import ALG_RELAY, AUTH_LEN, WINDOW_S, RelayAuth, RelayAuthError, auth_offset
from tests.unit.test_dhcpd import (
    AR1,
    AR2,
    BACKBONE,
    CID,
    MN,
    NAMES,
    NOW,
    Ar,
    Clock,
    renew_through,
    request,
    two_ars,
)

CN = IPv4Address("10.253.1.2")  # a host on the backbone that is not an AR


def forged_release(address: IPv4Address, giaddr: IPv4Address) -> DhcpMessage:
    """What an attacker sends the owner: a relayed RELEASE naming the victim."""
    return request(MessageType.RELEASE, 0xF001, ciaddr=address, giaddr=giaddr, hops=1,
                   options={OPT_SERVER_ID: AR1.packed},
                   relay=RelayAgentInfo(b"ar2.isp.test/ar2-acc", MN.encode()))


def forged_renewal(address: IPv4Address, giaddr: IPv4Address, xid: int) -> DhcpMessage:
    return request(MessageType.REQUEST, xid, ciaddr=address, giaddr=giaddr, hops=1,
                   relay=RelayAgentInfo(b"ar2.isp.test/ar2-acc", MN.encode()))


def unchanged(ar1: Ar, address: IPv4Address) -> None:
    lease = ar1.server.leases[CID]
    assert lease.bound and lease.address == address and lease.remote_renewals == 0
    assert ar1.hooks.ended_calls == [] and len(ar1.hooks.bound_calls) == 1
    assert ar1.server.relay_log == []


def test_a_forged_release_from_a_host_that_is_no_ar_changes_nothing() -> None:
    _, ar1, _, address = two_ars()
    for giaddr in (CN, AR2):  # its own address in giaddr, or the relay's
        assert ar1.from_backbone(forged_release(address, giaddr).pack(), CN) == []
    unchanged(ar1, address)
    assert ar1.server.counters["relay_refused_not_an_ar"] == 2


def test_forged_renewals_do_not_use_up_the_remote_renewal_limit() -> None:
    _, ar1, _, address = two_ars()
    for n in range(3):
        # Spoofed from the relay's loopback: unsigned, then signed with a key guessed wrong.
        msg = forged_renewal(address, AR2, 0xF100 + n)
        assert ar1.from_backbone(msg.pack(), AR2) == []
        wrong = RelayAuth(AR2, {AR1: NAMES[AR1]}, lambda peer: bytes(32), clock=lambda: NOW)
        assert ar1.from_backbone(wrong.sign(msg, AR1), AR2) == []
    unchanged(ar1, address)
    assert ar1.server.counters["relay_refused_unsigned"] == 3
    assert ar1.server.counters["relay_refused_bad_mac"] == 3


def test_a_genuine_relayed_message_is_taken_once_and_only_from_its_relay() -> None:
    clock, ar1, ar2, address = two_ars()
    up = renew_through(ar2, address, 0xF201)
    assert ar1.from_backbone(up.data, CN) == []  # captured, sent on from elsewhere
    assert ar1.server.handle(up.data, AR2, AR1, 7) == []  # from the access link
    assert len(ar1.from_backbone(up.data, AR2)) == 1  # the real one: an ACK
    assert ar1.from_backbone(up.data, AR2) == []  # and again: a replay
    clock.now += WINDOW_S + 1
    assert ar1.from_backbone(up.data, AR2) == []  # much later: stale
    c = ar1.server.counters
    assert (c["relay_refused_not_an_ar"], c["relay_refused_replay"], c["renew_remote"]) == (
        1, 1, 1)
    assert c["relay_refused_stale"] == 1 and ar1.server.leases[CID].remote_renewals == 1
    assert c.get("refused", 0) == 1  # from the access link: a relayed message is no client's


def test_a_relayed_message_on_a_non_backbone_interface_is_refused() -> None:
    _, ar1, ar2, address = two_ars()
    up = renew_through(ar2, address, 0xF301)
    assert ar1.server.handle(up.data, AR2, AR1, BACKBONE + 1) == []  # e.g. the overlay
    assert ar1.server.counters["relay_refused_wrong_interface"] == 1
    unchanged(ar1, address)


def test_giaddr_must_be_the_relay_that_signed() -> None:
    _, ar1, ar2, address = two_ars()
    msg = forged_renewal(address, IPv4Address("192.0.2.66"), 0xF401)
    assert ar1.from_backbone(ar2.sign(msg, AR1), AR2) == []
    assert ar1.server.counters["relay_refused_giaddr_mismatch"] == 1
    unchanged(ar1, address)


def test_without_a_key_nothing_is_relayed_or_taken() -> None:
    clock = Clock()
    ar1, ar2 = Ar(AR1, "ar1", clock), Ar(AR2, "ar2", clock)
    ar2.relay_auth.key_of = lambda peer: None  # the other AR's key not resolved yet
    msg = forged_renewal(IPv4Address("10.64.0.100"), AR2, 0xF501)
    with pytest.raises(RelayAuthError) as err:
        ar2.sign(msg, AR1)
    assert err.value.reason == "no_key"
    ar1.relay_auth.key_of = lambda peer: None
    good = Ar(AR2, "ar2", clock).sign(msg, AR1)
    assert ar1.from_backbone(good, AR2) == []
    assert ar1.server.counters["relay_refused_no_key"] == 1


def test_the_owner_answers_and_the_relay_relays_only_to_known_ars() -> None:
    _, _, ar2, address = two_ars()
    # A client aims its renewal at a server identifier that is no AR's: not relayed.
    stray = IPv4Address("192.0.2.67")
    assert ar2.from_client(request(MessageType.REQUEST, 0xF601, ciaddr=address),
                           dst=stray, src=address) == []
    assert ar2.server._relays == {} and ar2.server.counters == {"refused": 1}


def test_every_single_octet_change_of_a_signed_message_is_refused() -> None:
    _, ar1, ar2, address = two_ars()
    up = renew_through(ar2, address, 0xF701)
    data = up.data
    for i in range(len(data)):
        tampered = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]
        assert ar1.from_backbone(tampered, AR2) == []
    unchanged(ar1, address)
    c = ar1.server.counters
    assert c.get("relay_refused", 0) + c.get("refused", 0) == len(data)


def test_random_mutations_never_raise_and_never_get_through() -> None:
    rng = random.Random(19)
    _, ar1, ar2, address = two_ars()
    data = renew_through(ar2, address, 0xF801).data
    for _ in range(3000):
        buf = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            op = rng.randrange(3)
            pos = rng.randrange(len(buf) + 1)
            if op == 0 and buf:
                buf[min(pos, len(buf) - 1)] = rng.randrange(256)
            elif op == 1:
                buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
            else:
                del buf[pos:pos + rng.randint(1, 4)]
        if bytes(buf) == data:
            continue
        assert ar1.from_backbone(bytes(buf), AR2) == []
        with pytest.raises(RelayAuthError):
            _verify(ar1, bytes(buf))
    unchanged(ar1, address)


def _verify(ar: Ar, data: bytes) -> None:
    try:
        msg = DhcpMessage.unpack(data)
    except ValueError as exc:  # the parser's refusal, as the server sees it
        raise RelayAuthError("malformed", str(exc)) from None
    ar.relay_auth.verify(data, msg, AR2)


def test_the_authentication_sub_option_has_the_documented_shape() -> None:
    _, _, ar2, address = two_ars()
    data = renew_through(ar2, address, 0xF901).data
    at = auth_offset(data)
    assert data[at - 2:at] == bytes([8, AUTH_LEN])
    assert data[at:at + 2] == bytes([2, 0])  # HMAC-SHA-256, counter
    assert int.from_bytes(data[at + 2:at + 10], "big") == int(NOW * 1e9)
    assert data[at + AUTH_LEN] == 0xFF  # option 82 last, sub-option 8 last in it
    msg = DhcpMessage.unpack(data)
    assert msg.relay is not None and len(msg.relay.auth) == AUTH_LEN
    # Counters never repeat, even when the clock stands still.
    again = DhcpMessage.unpack(ar2.sign(replace(msg, relay=RelayAgentInfo()), AR1))
    assert again.relay is not None and again.relay.auth[2:10] > msg.relay.auth[2:10]


@pytest.mark.parametrize("suite", [Suite.P256, Suite.X25519])
def test_the_pair_key_is_the_same_at_both_ends_and_only_there(suite: Suite) -> None:
    a, b, c = (KeyStore.generate(f"ar{i}.isp.test", suite) for i in (1, 2, 3))
    ab = a.pair_key(b.published_key(), ALG_RELAY)
    assert ab == b.pair_key(a.published_key(), ALG_RELAY)
    assert ab != a.pair_key(c.published_key(), ALG_RELAY)
    assert ab != b.pair_key(c.published_key(), ALG_RELAY)
    assert len(ab) == 32


def test_counters_are_forgotten_once_older_than_the_window() -> None:
    clock = Clock()
    sender = RelayAuth(AR2, {AR1: NAMES[AR1]}, lambda peer: bytes(32), clock=clock)
    receiver = RelayAuth(AR1, {AR2: NAMES[AR2]}, lambda peer: bytes(32), clock=clock)
    msg = forged_renewal(IPv4Address("10.64.0.100"), AR2, 0xFA01)
    for _ in range(10):
        data = sender.sign(msg, AR1)
        receiver.verify(data, DhcpMessage.unpack(data), AR2)
    clock.now += WINDOW_S + 1
    data = sender.sign(msg, AR1)
    receiver.verify(data, DhcpMessage.unpack(data), AR2)
    order, seen = receiver._seen[AR2]
    assert len(seen) == len(order) == 1
