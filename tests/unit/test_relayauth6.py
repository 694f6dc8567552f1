"""DHCPv6 relay authentication between ARs (agents/relayauth.RelayAuth6, docs/protocol.md
§16.4): a remote renewal goes through only signed by the relay, the owner's answer only signed
by the owner; forged, replayed, tampered, misaddressed or unsigned relay messages change
nothing and are counted by reason; random mutations never raise or get through."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from ipaddress import IPv6Address

import pytest

from agents import dhcp6
from agents.auth.keys import Suite
from agents.auth.keystore import KeyStore
from agents.dhcp6 import (
    OPT_AUTH,
    Dhcp6Message,
    InterfaceId,
    MessageType,
    RawOption,
    Relay6Message,
    RelayMsg,
    RemoteId,
)
from agents.dhcpd6 import Dhcp6Server, Send6
from agents.relayauth import (
    ALG_RELAY,
    ALG_RELAY6,
    AUTH6_LEN,
    PROTOCOL_RELAY6,
    WINDOW_S,
    RelayAuth6,
    RelayAuthError,
    auth6_offset,
)
from tests.unit.test_dhcpd6 import (
    ACCESS,
    AR1,
    AR2,
    BACKBONE,
    CONFIG1,
    CONFIG2,
    FIRST,
    MN,
    MN_LEASE,
    MN_LL,
    Clock,
    Hooks,
    bind,
    renew,
    send,
)

KEY = bytes(range(32))
OVERLAY = 9
NAMES = {AR1: "ar1.isp.test", AR2: "ar2.isp.test"}
CN = IPv6Address("2001:db8:fd::2")  # a host on the backbone that is not an AR


@dataclass
class Pair:
    owner: Dhcp6Server
    ohooks: Hooks
    relay: Dhcp6Server
    rhooks: Hooks
    clock: Clock


def auth(me: IPv6Address, clock: Clock, key: bytes = KEY) -> RelayAuth6:
    other = AR2 if me == AR1 else AR1
    return RelayAuth6(me, {other: NAMES[other]}, lambda name: key, clock=clock)


def pair() -> Pair:
    """mn1 bound FIRST at ar1 and now attached to ar2; both run the real authenticator."""
    clock = Clock()
    ohooks, rhooks = Hooks(), Hooks()
    owner = Dhcp6Server(CONFIG1, ohooks, lambda i: i == ACCESS, clock=clock,
                        relay_auth=auth(AR1, clock), backbone=lambda i: i == BACKBONE)
    relay = Dhcp6Server(CONFIG2, rhooks, lambda i: i == ACCESS, clock=clock,
                        relay_auth=auth(AR2, clock), backbone=lambda i: i == BACKBONE)
    bind(owner)
    ohooks.bound_calls.clear()
    rhooks.visitors[FIRST] = MN
    return Pair(owner, ohooks, relay, rhooks, clock)


def forward(p: Pair, xid: int = 0x9ABCDE) -> Send6:
    [fwd] = send(p.relay, renew(xid))
    return fwd


def unchanged(p: Pair) -> None:
    b = p.owner.bindings[MN_LEASE]
    assert b.bound and b.prefix == FIRST and b.remote_renewals == 0
    assert p.ohooks.bound_calls == [] and p.ohooks.ended_calls == []
    assert p.owner.relay_log == []


def refused(p: Pair, reason: str) -> int:
    return p.owner.counters.get(f"relay_refused_{reason}", 0)


def test_a_signed_renewal_is_served_and_the_signed_reply_relayed() -> None:
    p = pair()
    fwd = forward(p)
    assert fwd.dest == AR1
    [back] = p.owner.handle(fwd.data, AR2, AR1, BACKBONE)
    assert p.owner.bindings[MN_LEASE].remote_renewals == 1
    assert p.owner.relay_log[-1]["remote_id"] == MN
    auth6_offset(back.data)  # the owner signed its Relay-Reply
    [out] = p.relay.handle(back.data, AR1, AR2, BACKBONE)
    assert out.dest == MN_LL and out.port == dhcp6.CLIENT_PORT
    rep = dhcp6.unpack(out.data)
    assert isinstance(rep, Dhcp6Message) and rep.msg_type == MessageType.REPLY
    # The MN gets the owner's Reply alone: no relay option, no authenticator.
    assert all(not isinstance(o, RawOption) for o in rep.options)


def test_a_signed_renewal_is_taken_once() -> None:
    p = pair()
    fwd = forward(p)
    p.owner.handle(fwd.data, AR2, AR1, BACKBONE)
    assert p.owner.handle(fwd.data, AR2, AR1, BACKBONE) == []
    assert refused(p, "replay") == 1 and p.owner.bindings[MN_LEASE].remote_renewals == 1


@pytest.mark.parametrize(("src", "ifindex", "reason"), [
    (CN, BACKBONE, "not_an_ar"),          # the relay's signature, from a host that is no AR
    (AR1, BACKBONE, "not_an_ar"),         # our own address
    (AR2, OVERLAY, "wrong_interface"),    # the redirect overlay, not a backbone link
])
def test_a_signed_renewal_only_from_its_relay_over_the_backbone(src: IPv6Address, ifindex: int,
                                                                 reason: str) -> None:
    p = pair()
    fwd = forward(p)
    assert p.owner.handle(fwd.data, src, AR1, ifindex) == []
    assert refused(p, reason) == 1
    unchanged(p)
    # On the access link a relay message is refused before the authenticator is asked.
    assert p.owner.handle(fwd.data, AR2, AR1, ACCESS) == []
    assert p.owner.counters["refused"] == 1 and p.owner.counters["relay_refused"] == 1


def test_unsigned_misaddressed_and_wrongly_keyed_relay_messages_are_refused() -> None:
    p = pair()
    unsigned = Relay6Message(MessageType.RELAY_FORW, 0, AR2, MN_LL, (
        InterfaceId(b"ar2.isp.test/ar2-acc"), RemoteId(dhcp6.LAB_ENTERPRISE, MN.encode()),
        RelayMsg(renew(0x100))))
    assert p.owner.handle(unsigned.pack(), AR2, AR1, BACKBONE) == []
    wrong_key = auth(AR2, p.clock, key=bytes(32)).sign(unsigned, AR1)
    assert p.owner.handle(wrong_key, AR2, AR1, BACKBONE) == []
    # Signed by AR2, but naming AR1 as the relay: the reply would go elsewhere.
    misaddressed = auth(AR2, p.clock).sign(replace(unsigned, link_address=AR1), AR1)
    assert p.owner.handle(misaddressed, AR2, AR1, BACKBONE) == []
    # An authenticator that is not the last option.
    signed = auth(AR2, p.clock).sign(unsigned, AR1)
    msg = dhcp6.unpack(signed)
    assert isinstance(msg, Relay6Message)
    last, *rest = reversed(msg.options)
    moved = replace(msg, options=(last, *reversed(rest))).pack()
    assert p.owner.handle(moved, AR2, AR1, BACKBONE) == []
    assert (refused(p, "unsigned"), refused(p, "bad_mac"), refused(p, "link_address_mismatch"),
            refused(p, "malformed")) == (1, 1, 1, 1)
    unchanged(p)


def test_a_stale_counter_is_refused() -> None:
    p = pair()
    fwd = forward(p)
    p.clock.now += WINDOW_S + 1
    assert p.owner.handle(fwd.data, AR2, AR1, BACKBONE) == []
    assert refused(p, "stale") == 1
    unchanged(p)


def test_without_a_key_nothing_is_relayed_or_taken() -> None:
    p = pair()
    fwd = forward(p)
    nokey = RelayAuth6(AR1, {AR2: NAMES[AR2]}, lambda name: None, clock=p.clock)
    p.owner.relay_auth = nokey
    assert p.owner.handle(fwd.data, AR2, AR1, BACKBONE) == []
    assert refused(p, "no_key") == 1
    p.relay.relay_auth = RelayAuth6(AR2, {AR1: NAMES[AR1]}, lambda name: None, clock=p.clock)
    assert send(p.relay, renew(0x200)) == []
    unchanged(p)


def test_a_reply_not_signed_by_the_owner_is_not_relayed() -> None:
    p = pair()
    fwd = forward(p)
    [back] = p.owner.handle(fwd.data, AR2, AR1, BACKBONE)
    reply = dhcp6.unpack(back.data)
    assert isinstance(reply, Relay6Message)
    stripped = replace(reply, options=tuple(o for o in reply.options
                                            if not isinstance(o, RawOption))).pack()
    assert p.relay.handle(stripped, AR1, AR2, BACKBONE) == []
    forged = auth(AR1, p.clock, key=bytes(32)).sign(reply, AR2)
    assert p.relay.handle(forged, AR1, AR2, BACKBONE) == []
    assert p.rhooks.relayed_calls == []
    [out] = p.relay.handle(back.data, AR1, AR2, BACKBONE)  # the genuine one still goes
    assert out.dest == MN_LL


def test_every_single_octet_change_of_a_signed_message_is_refused() -> None:
    p = pair()
    data = forward(p).data
    for i in range(len(data)):
        tampered = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]
        assert p.owner.handle(tampered, AR2, AR1, BACKBONE) == []
    unchanged(p)
    c = p.owner.counters
    assert c.get("relay_refused", 0) + c.get("refused", 0) == len(data)


def test_random_mutations_never_raise_and_never_get_through() -> None:
    rng = random.Random(18)
    p = pair()
    data = forward(p).data
    for _ in range(3000):
        buf = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            pos = rng.randrange(len(buf) + 1)
            op = rng.randrange(3)
            if op == 0 and buf:
                buf[min(pos, len(buf) - 1)] = rng.randrange(256)
            elif op == 1:
                buf[pos:pos] = rng.randbytes(rng.randint(1, 4))
            else:
                del buf[pos:pos + rng.randint(1, 4)]
        if bytes(buf) == data:
            continue
        assert p.owner.handle(bytes(buf), AR2, AR1, BACKBONE) == []
    unchanged(p)


def test_the_authentication_option_has_the_documented_shape() -> None:
    p = pair()
    data = forward(p).data
    at = auth6_offset(data)
    assert data[at - 4:at] == OPT_AUTH.to_bytes(2, "big") + AUTH6_LEN.to_bytes(2, "big")
    assert at + AUTH6_LEN == len(data)  # the last option
    assert data[at:at + 3] == bytes([PROTOCOL_RELAY6, 2, 0])  # lab protocol, HMAC-SHA-256, RDM 0
    assert int.from_bytes(data[at + 3:at + 11], "big") == int(p.clock.now * 1e9)
    msg = dhcp6.unpack(data)
    assert isinstance(msg, Relay6Message) and msg.pack() == data
    # Signing again replaces the option, and the counter moves on with the clock standing still.
    again = auth(AR2, p.clock)
    first, second = again.sign(msg, AR1), again.sign(msg, AR1)
    assert len(first) == len(data)
    assert second[at + 3:at + 11] > first[at + 3:at + 11]
    for bad in (b"\x00" * 10, data[:20], Dhcp6Message(MessageType.RENEW, 1).pack()):
        with pytest.raises(RelayAuthError):
            auth6_offset(bad)


def test_the_dhcpv6_relay_key_is_its_own() -> None:
    a, b = (KeyStore.generate(f"ar{i}.isp.test", Suite.P256) for i in (1, 2))
    six = a.pair_key(b.published_key(), ALG_RELAY6)
    assert six == b.pair_key(a.published_key(), ALG_RELAY6)
    assert six != a.pair_key(b.published_key(), ALG_RELAY)
