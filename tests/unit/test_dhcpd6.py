"""The AR's DHCPv6 policy core (agents/dhcpd6.py): every decision, grants and refusals. A /64
only for an MN authenticated on this access link, renewals only by the holder, remote renewals
relayed with Remote-ID and capped at the owner, ends reported upward as IPv4's lease ends.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from ipaddress import IPv6Address, IPv6Network

import pytest

from agents import dhcp6
from agents.dhcp6 import (
    ALL_SERVERS,
    ClientId,
    Dhcp6Message,
    ElapsedTime,
    IaNa,
    IaPd,
    IaPrefix,
    InterfaceId,
    MessageType,
    Option,
    Preference,
    RapidCommit,
    Relay6Message,
    RelayMsg,
    RemoteId,
    ServerId,
    Status,
    StatusCode,
)
from agents.dhcpd6 import (
    Binding6,
    Dhcp6Server,
    Send6,
    Server6Config,
    UnsignedRelayAuth,
    eui64_mac,
)

ACCESS, BACKBONE = 7, 3
AR1, AR2 = IPv6Address("2001:db8:ff::7"), IPv6Address("2001:db8:ff::8")
POOL1, POOL2 = IPv6Network("2001:db8:4000:100::/56"), IPv6Network("2001:db8:4000:200::/56")
MN, OTHER = "mn1.example", "mn2.example"
MN_LL, OTHER_LL = IPv6Address("fe80::fa:ff:fe00:3"), IPv6Address("fe80::fa:ff:fe00:4")
MN_DUID, OTHER_DUID = dhcp6.make_duid(MN, 1), dhcp6.make_duid(OTHER, 1)
MN_LEASE = f"{MN}#1"  # the servers key bindings by lease, not by the whole DUID
S1, S2 = dhcp6.server_duid("ar1.isp.test"), dhcp6.server_duid("ar2.isp.test")
CONFIG1 = Server6Config(server_duid=S1, address=AR1, pool=POOL1, prefixlen=64, first=1, last=2,
                        valid_s=600, remote_renewals=2, interface_id=b"ar1.isp.test/ar1-acc")
CONFIG2 = replace(CONFIG1, server_duid=S2, address=AR2, pool=POOL2,
                  interface_id=b"ar2.isp.test/ar2-acc")
FIRST = IPv6Network("2001:db8:4000:101::/64")  # the pool's /64 number 1 (0 is the AR's own)


@pytest.fixture(autouse=True)
def _refusals_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agents.dhcpd6")


class Hooks:
    def __init__(self) -> None:
        self.on_link: dict[IPv6Address, str] = {MN_LL: MN, OTHER_LL: OTHER}
        self.visitors: dict[IPv6Network, str] = {}
        self.bound_calls: list[tuple[IPv6Network, int, bool]] = []
        self.ended_calls: list[tuple[IPv6Network, str]] = []
        self.relayed_calls: list[tuple[IPv6Network, str, float | None]] = []

    def identity_on_link(self, peer: IPv6Address, ifindex: int,
                         duid: bytes | None) -> str | None:
        return self.on_link.get(peer) if ifindex == ACCESS else None

    def identity_of_prefix(self, prefix: IPv6Network, ifindex: int) -> str | None:
        return self.visitors.get(prefix) if ifindex == ACCESS else None

    def owner_of(self, prefix: IPv6Network) -> IPv6Address | None:
        return AR1 if prefix.subnet_of(POOL1) else AR2 if prefix.subnet_of(POOL2) else None

    def bound(self, binding: Binding6, ifindex: int, renewal: bool) -> None:
        self.bound_calls.append((binding.prefix, ifindex, renewal))

    def ended(self, binding: Binding6, reason: str) -> None:
        self.ended_calls.append((binding.prefix, reason))

    def relayed(self, prefix: IPv6Network, kind: str, expires: float | None) -> None:
        self.relayed_calls.append((prefix, kind, expires))


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def server(config: Server6Config = CONFIG1, auth: bool = True) -> tuple[Dhcp6Server, Hooks,
                                                                           Clock]:
    hooks, clock = Hooks(), Clock()
    peer = AR2 if config is CONFIG1 else AR1
    srv = Dhcp6Server(config, hooks, lambda i: i == ACCESS, clock=clock,
                      relay_auth=UnsignedRelayAuth({peer: "ar"}) if auth else None)
    return srv, hooks, clock


def msg(kind: MessageType, *options: Option, duid: bytes = MN_DUID,
        xid: int = 0x123456) -> Dhcp6Message:
    return Dhcp6Message(kind, xid, (ClientId(duid), ElapsedTime(0)) + options)


def pd(prefix: IPv6Network | None = None, iaid: int = 3) -> IaPd:
    return IaPd(iaid, 0, 0, (IaPrefix(600, 600, prefix),) if prefix is not None else ())


def send(srv: Dhcp6Server, m: dhcp6.Message, src: IPv6Address = MN_LL,
         dst: IPv6Address = ALL_SERVERS, ifindex: int = ACCESS) -> list[Send6]:
    return srv.handle(m.pack(), src, dst, ifindex)


def reply_of(out: list[Send6]) -> Dhcp6Message:
    assert len(out) == 1
    m = dhcp6.unpack(out[0].data)
    assert isinstance(m, Dhcp6Message)
    return m


def prefix_of(m: Dhcp6Message) -> IaPrefix | None:
    ia = m.find(IaPd)
    return next((o for o in ia.options if isinstance(o, IaPrefix)), None) if ia else None


def bind(srv: Dhcp6Server, duid: bytes = MN_DUID, src: IPv6Address = MN_LL) -> IPv6Network:
    adv = reply_of(send(srv, msg(MessageType.SOLICIT, pd(), duid=duid), src))
    given = prefix_of(adv)
    assert given is not None
    reply_of(send(srv, msg(MessageType.REQUEST, ServerId(S1), pd(given.prefix), duid=duid), src))
    return given.prefix


# --- Solicit, Advertise, Request, Reply ----------------------------------------------------

def test_solicit_request_delegates_the_next_64_and_reports_it() -> None:
    srv, hooks, clock = server()
    out = send(srv, msg(MessageType.SOLICIT, pd(IPv6Network("2001:db8::/64"))))
    assert out[0].dest == MN_LL and out[0].port == dhcp6.CLIENT_PORT and out[0].ifindex == ACCESS
    adv = reply_of(out)
    assert adv.msg_type == MessageType.ADVERTISE and adv.xid == 0x123456
    assert adv.server_duid == S1 and adv.client_duid == MN_DUID
    assert adv.find(Preference) == Preference(255)
    given = prefix_of(adv)
    assert given is not None and given.prefix == FIRST  # the hint is not taken
    assert adv.find(IaPd) == IaPd(3, 300, 480, (IaPrefix(600, 600, FIRST),))
    assert hooks.bound_calls == []  # advertised only
    rep = reply_of(send(srv, msg(MessageType.REQUEST, ServerId(S1), pd(FIRST))))
    assert rep.msg_type == MessageType.REPLY and prefix_of(rep) == IaPrefix(600, 600, FIRST)
    assert hooks.bound_calls == [(FIRST, ACCESS, False)]
    assert srv.bindings[MN_LEASE].bound and srv.bindings[MN_LEASE].expires == clock.now + 600


def test_rapid_commit_binds_at_once() -> None:
    srv, hooks, _ = server()
    rep = reply_of(send(srv, msg(MessageType.SOLICIT, pd(), RapidCommit())))
    assert rep.msg_type == MessageType.REPLY and rep.find(RapidCommit) is not None
    assert hooks.bound_calls == [(FIRST, ACCESS, False)]


def test_each_mn_its_own_64_and_the_pool_runs_out() -> None:
    srv, _, _ = server()
    assert bind(srv) == FIRST
    assert bind(srv, OTHER_DUID, OTHER_LL) == IPv6Network("2001:db8:4000:102::/64")
    third = dhcp6.make_duid("mn3.example", 1)
    srv.hooks.on_link[IPv6Address("fe80::5")] = "mn3.example"  # type: ignore[attr-defined]
    adv = reply_of(send(srv, msg(MessageType.SOLICIT, pd(), duid=third), IPv6Address("fe80::5")))
    ia = adv.find(IaPd)
    assert ia is not None and ia.options == (StatusCode(Status.NO_PREFIX_AVAIL,
                                                        "pool exhausted"),)
    assert srv.counters["pool_exhausted"] == 1


def test_ia_na_only_gets_no_addresses() -> None:
    srv, hooks, _ = server()
    adv = reply_of(send(srv, msg(MessageType.SOLICIT, IaNa(1, 0, 0))))
    assert adv.find(StatusCode) == StatusCode(Status.NO_ADDRS_AVAIL, "IA_PD only")
    assert srv.bindings == {} and hooks.bound_calls == []


@pytest.mark.parametrize(("who", "src", "why"), [
    (MN_DUID, IPv6Address("fe80::99"), "has not authenticated"),
    (OTHER_DUID, MN_LL, "the DUID names mn2.example, the station authenticated as mn1"),
])
def test_solicit_refused_unless_authenticated_here(who: bytes, src: IPv6Address,
                                                   why: str, caplog: pytest.LogCaptureFixture
                                                   ) -> None:
    srv, hooks, _ = server()
    assert send(srv, msg(MessageType.SOLICIT, pd(), duid=who), src) == []
    assert why in caplog.text and srv.counters["refused"] == 1 and srv.bindings == {}


def test_solicit_on_another_interface_is_not_served() -> None:
    srv, _, _ = server()
    # The backbone takes relay messages only; a client message there is refused.
    assert send(srv, msg(MessageType.SOLICIT, pd()), AR2, AR1, BACKBONE) == []


@pytest.mark.parametrize(("m", "src", "dst", "why"), [
    (msg(MessageType.SOLICIT, pd()), IPv6Address("2001:db8::1"), ALL_SERVERS, "not link-local"),
    (msg(MessageType.SOLICIT, pd()), MN_LL, IPv6Address("fe80::fa:ff:fe00:1"), "not ff02::1:2"),
    (Dhcp6Message(MessageType.SOLICIT, 1, (pd(),)), MN_LL, ALL_SERVERS, "without a client id"),
    (msg(MessageType.SOLICIT, pd(), duid=bytes.fromhex("0003000102fa00000003")), MN_LL,
     ALL_SERVERS, "not a lab DUID-EN"),
    (msg(MessageType.SOLICIT, ServerId(S1), pd()), MN_LL, ALL_SERVERS, "with a server id"),
    (msg(MessageType.INFORMATION_REQUEST), MN_LL, ALL_SERVERS, "INFORMATION_REQUEST is not"),
    (msg(MessageType.CONFIRM, pd(FIRST)), MN_LL, ALL_SERVERS, "CONFIRM is not served"),
    (msg(MessageType.REPLY, ServerId(S1)), MN_LL, ALL_SERVERS, "REPLY is not served"),
    (Relay6Message(MessageType.RELAY_FORW, 0, AR2, MN_LL, (RelayMsg(msg(MessageType.RENEW)),)),
     MN_LL, ALL_SERVERS, "a relay message from the access link"),
    (msg(MessageType.RENEW, ServerId(S1)), MN_LL, ALL_SERVERS, "names no delegated prefix"),
    (msg(MessageType.REBIND, ServerId(S1), pd(FIRST)), MN_LL, ALL_SERVERS, "Rebind with a"),
])
def test_client_messages_refused(m: Dhcp6Message | Relay6Message, src: IPv6Address,
                                 dst: IPv6Address, why: str,
                                 caplog: pytest.LogCaptureFixture) -> None:
    srv, hooks, _ = server()
    assert send(srv, m, src, dst) == []
    assert why.lower() in caplog.text.lower(), caplog.text
    assert srv.counters == {"refused": 1} and hooks.bound_calls == []


def test_garbage_is_counted_not_raised() -> None:
    srv, _, _ = server()
    assert srv.handle(b"\x01\x00", MN_LL, ALL_SERVERS, ACCESS) == []
    assert srv.handle(b"\x0c" + bytes(40), AR2, AR1, BACKBONE) == []
    assert srv.counters["refused"] == 2


def test_request_for_another_server_drops_our_advertisement() -> None:
    srv, hooks, _ = server()
    send(srv, msg(MessageType.SOLICIT, pd()))
    assert send(srv, msg(MessageType.REQUEST, ServerId(S2), pd(FIRST))) == []
    assert srv.bindings == {} and hooks.bound_calls == []


def test_request_without_advertise_or_ia_is_no_binding() -> None:
    srv, hooks, _ = server()
    rep = reply_of(send(srv, msg(MessageType.REQUEST, ServerId(S1), pd(FIRST))))
    ia = rep.find(IaPd)
    assert ia is not None and ia.options[0] == StatusCode(Status.NO_BINDING, "nothing advertised")
    assert hooks.bound_calls == [] and srv.counters["no_binding"] == 1


def test_request_needs_authentication_too() -> None:
    srv, hooks, _ = server()
    send(srv, msg(MessageType.SOLICIT, pd()))
    del hooks.on_link[MN_LL]  # the session ended between Advertise and Request
    assert send(srv, msg(MessageType.REQUEST, ServerId(S1), pd(FIRST))) == []
    assert hooks.bound_calls == []


# --- Renew, Rebind, Release, Decline on the access link --------------------------------------

@pytest.mark.parametrize("kind", [MessageType.RENEW, MessageType.REBIND])
def test_holder_renews_and_rebinds(kind: MessageType) -> None:
    srv, hooks, clock = server()
    bind(srv)
    clock.now += 300
    server_id: tuple[Option, ...] = (ServerId(S1),) if kind == MessageType.RENEW else ()
    rep = reply_of(send(srv, msg(kind, *server_id, pd(FIRST))))
    assert prefix_of(rep) == IaPrefix(600, 600, FIRST)
    assert hooks.bound_calls[-1] == (FIRST, ACCESS, True)
    assert srv.bindings[MN_LEASE].expires == clock.now + 600 and srv.counters["renew"] == 1


@pytest.mark.parametrize(("m", "src", "why"), [
    (msg(MessageType.RENEW, ServerId(S1), pd(FIRST)), OTHER_LL, "other than the holder"),
    (msg(MessageType.RENEW, ServerId(S1), pd(FIRST), duid=OTHER_DUID), OTHER_LL,
     "does not hold"),
    (msg(MessageType.RENEW, ServerId(S1), pd(IPv6Network("2001:db8:4000:102::/64"))), MN_LL,
     "does not hold"),
    (msg(MessageType.RENEW, ServerId(S2), pd(FIRST)), MN_LL, "our prefix to another server"),
    (msg(MessageType.RELEASE, ServerId(S1), pd(FIRST)), OTHER_LL, "other than the holder"),
    (msg(MessageType.DECLINE, ServerId(S1), pd(FIRST), duid=dhcp6.make_duid(MN, 2)), MN_LL,
     "does not hold"),
])
def test_renewal_and_release_only_by_the_holder(m: Dhcp6Message, src: IPv6Address, why: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    srv, hooks, _ = server()
    bind(srv)
    hooks.bound_calls.clear()
    assert send(srv, m, src) == []
    assert why in caplog.text
    assert hooks.bound_calls == [] and hooks.ended_calls == [] and srv.bindings[MN_LEASE].bound


@pytest.mark.parametrize("kind", [MessageType.RELEASE, MessageType.DECLINE])
def test_release_and_decline_end_the_binding_upward(kind: MessageType) -> None:
    srv, hooks, _ = server()
    bind(srv)
    rep = reply_of(send(srv, msg(kind, ServerId(S1), pd(FIRST))))
    assert rep.find(StatusCode) == StatusCode(Status.SUCCESS, f"{kind.name.lower()}d")
    assert hooks.ended_calls == [(FIRST, kind.name.lower())] and srv.bindings == {}
    assert bind(srv) == FIRST  # the /64 is free again


def test_expiry_ends_bound_and_forgets_advertised() -> None:
    srv, hooks, clock = server()
    bind(srv)
    send(srv, msg(MessageType.SOLICIT, pd(), duid=OTHER_DUID), OTHER_LL)
    clock.now += 31  # the advertisement's hold, not the binding's
    srv.expire()
    assert list(srv.bindings) == [MN_LEASE] and hooks.ended_calls == []
    clock.now += 600
    srv.expire()
    assert srv.bindings == {} and hooks.ended_calls == [(FIRST, "expired")]


# --- remote renewal: the relay (the MN's current AR) and the owner ---------------------------

def visiting() -> tuple[Dhcp6Server, Hooks, Dhcp6Server, Hooks, Clock]:
    """mn1 bound FIRST at ar1 and moved to ar2, which knows it holds FIRST (its AUTH)."""
    owner, ohooks, clock = server(CONFIG1)
    bind(owner)
    ohooks.bound_calls.clear()
    relay, rhooks, _ = server(CONFIG2)
    relay.clock = clock
    rhooks.visitors[FIRST] = MN
    return owner, ohooks, relay, rhooks, clock


def renew(xid: int = 0x9ABCDE, duid: bytes = MN_DUID) -> Dhcp6Message:
    return msg(MessageType.RENEW, ServerId(S1), pd(FIRST), duid=duid, xid=xid)


def test_remote_renewal_relayed_with_remote_id_and_answered() -> None:
    owner, ohooks, relay, rhooks, clock = visiting()
    [fwd] = send(relay, renew())
    assert fwd.dest == AR1 and fwd.port == dhcp6.SERVER_PORT
    rf = dhcp6.unpack(fwd.data)
    assert isinstance(rf, Relay6Message) and rf.msg_type == MessageType.RELAY_FORW
    assert rf.link_address == AR2 and rf.peer_address == MN_LL and rf.hop_count == 0
    assert rf.find(RemoteId) == RemoteId(dhcp6.LAB_ENTERPRISE, MN.encode())
    assert rf.find(InterfaceId) == InterfaceId(b"ar2.isp.test/ar2-acc")
    assert rf.inner == renew()
    [back] = owner.handle(fwd.data, AR2, AR1, BACKBONE)
    assert back.dest == AR2 and back.port == dhcp6.SERVER_PORT
    assert ohooks.bound_calls == [(FIRST, 0, True)]
    assert owner.bindings[MN_LEASE].remote_renewals == 1
    assert owner.relay_log[-1]["remote_id"] == MN
    [out] = relay.handle(back.data, AR1, AR2, BACKBONE)
    assert out.dest == MN_LL and out.port == dhcp6.CLIENT_PORT and out.ifindex == ACCESS
    rep = dhcp6.unpack(out.data)
    assert isinstance(rep, Dhcp6Message) and rep.msg_type == MessageType.REPLY
    assert prefix_of(rep) == IaPrefix(600, 600, FIRST)
    assert rhooks.relayed_calls == [(FIRST, "reply", clock.now + 600)]


def test_remote_renewal_limit_ends_the_binding() -> None:
    owner, ohooks, relay, rhooks, _ = visiting()
    for xid in (1, 2, 3):
        [fwd] = send(relay, renew(xid))
        [back] = owner.handle(fwd.data, AR2, AR1, BACKBONE)
        [out] = relay.handle(back.data, AR1, AR2, BACKBONE)
    rep = dhcp6.unpack(out.data)
    assert isinstance(rep, Dhcp6Message)
    assert prefix_of(rep) == IaPrefix(0, 0, FIRST)  # lifetimes 0: stop using it
    assert ohooks.ended_calls == [(FIRST, "remote renewal limit")] and owner.bindings == {}
    assert owner.counters["remote_renewal_limit"] == 1
    assert rhooks.relayed_calls[-1] == (FIRST, "ended", None)


def test_remote_release_relayed_and_reported() -> None:
    owner, ohooks, relay, rhooks, _ = visiting()
    [fwd] = send(relay, msg(MessageType.RELEASE, ServerId(S1), pd(FIRST)))
    assert rhooks.relayed_calls == [(FIRST, "release", None)]
    [back] = owner.handle(fwd.data, AR2, AR1, BACKBONE)
    assert ohooks.ended_calls == [(FIRST, "release")]
    [out] = relay.handle(back.data, AR1, AR2, BACKBONE)
    rep = dhcp6.unpack(out.data)
    assert isinstance(rep, Dhcp6Message) and rep.find(StatusCode) == StatusCode(0, "released")


def test_owner_refuses_a_remote_id_that_is_not_the_holder() -> None:
    owner, ohooks, _, _, _ = visiting()
    forged = Relay6Message(MessageType.RELAY_FORW, 0, AR2, OTHER_LL, (
        RemoteId(dhcp6.LAB_ENTERPRISE, OTHER.encode()), RelayMsg(renew())))
    [back] = owner.handle(forged.pack(), AR2, AR1, BACKBONE)
    rr = dhcp6.unpack(back.data)
    assert isinstance(rr, Relay6Message) and isinstance(rr.inner, Dhcp6Message)
    ia = rr.inner.find(IaPd)
    assert ia is not None and ia.options == (StatusCode(Status.NO_BINDING,
                                                        "not this client's prefix"),)
    assert owner.counters["remote_id_mismatch"] == 1
    assert ohooks.bound_calls == [] and owner.bindings[MN_LEASE].remote_renewals == 0


@pytest.mark.parametrize(("options", "src", "why"), [
    ((RemoteId(dhcp6.LAB_ENTERPRISE, MN.encode()), RelayMsg(renew())), IPv6Address("2001::9"),
     "is not an AR"),
    ((RelayMsg(renew()),), AR2, "without the lab's Remote-ID"),
    ((RemoteId(9, MN.encode()), RelayMsg(renew())), AR2, "without the lab's Remote-ID"),
    ((RemoteId(dhcp6.LAB_ENTERPRISE, b"\xff\xfe"), RelayMsg(renew())), AR2, "not a DNS name"),
    ((RemoteId(dhcp6.LAB_ENTERPRISE, MN.encode()),
      RelayMsg(msg(MessageType.SOLICIT, pd()))), AR2, "relayed SOLICIT is not served"),
    ((RemoteId(dhcp6.LAB_ENTERPRISE, MN.encode()),
      RelayMsg(msg(MessageType.RENEW, ServerId(S2), pd(FIRST)))), AR2, "for another server"),
    ((RemoteId(dhcp6.LAB_ENTERPRISE, MN.encode()),
      RelayMsg(msg(MessageType.RENEW, ServerId(S1)))), AR2, "without a lab DUID and a prefix"),
])
def test_owner_refuses_bad_relay_forwards(options: tuple[Option, ...], src: IPv6Address,
                                          why: str, caplog: pytest.LogCaptureFixture) -> None:
    owner, ohooks, _, _, _ = visiting()
    fwd = Relay6Message(MessageType.RELAY_FORW, 0, AR2, MN_LL, options)
    assert owner.handle(fwd.pack(), src, AR1, BACKBONE) == []
    assert why in caplog.text and ohooks.bound_calls == []


def test_owner_refuses_a_relay_forward_relayed_again() -> None:
    owner, _, _, _, _ = visiting()
    inner = Relay6Message(MessageType.RELAY_FORW, 0, AR2, MN_LL, (RelayMsg(renew()),))
    fwd = Relay6Message(MessageType.RELAY_FORW, 1, AR2, MN_LL, (
        RemoteId(dhcp6.LAB_ENTERPRISE, MN.encode()), RelayMsg(inner)))
    assert owner.handle(fwd.pack(), AR2, AR1, BACKBONE) == []


def test_no_relay_authenticator_no_relayed_messages(caplog: pytest.LogCaptureFixture) -> None:
    owner, _, _ = server(CONFIG1, auth=False)
    bind(owner)
    fwd = Relay6Message(MessageType.RELAY_FORW, 0, AR2, MN_LL, (
        RemoteId(dhcp6.LAB_ENTERPRISE, MN.encode()), RelayMsg(renew())))
    assert owner.handle(fwd.pack(), AR2, AR1, BACKBONE) == []
    relay, rhooks, _ = server(CONFIG2, auth=False)
    rhooks.visitors[FIRST] = MN
    assert send(relay, renew()) == []
    assert "no relay authentication" in caplog.text and "takes no relayed" in caplog.text


@pytest.mark.parametrize(("m", "src", "visitor", "why"), [
    (renew(), MN_LL, None, "no MN attached here named mn1.example holds it"),
    (renew(duid=OTHER_DUID), OTHER_LL, MN, "no MN attached here named mn2.example"),
    (renew(), OTHER_LL, MN, "the station authenticated as mn2.example"),
    (msg(MessageType.RENEW, ServerId(S1), pd(IPv6Network("2001:db8:9::/64"))), MN_LL, MN,
     "is no other AR's prefix"),
    (msg(MessageType.DECLINE, ServerId(S1), pd(FIRST)), MN_LL, MN, "Decline for another AR"),
])
def test_relay_refuses(m: Dhcp6Message, src: IPv6Address, visitor: str | None, why: str,
                       caplog: pytest.LogCaptureFixture) -> None:
    _, _, relay, rhooks, _ = visiting()
    if visitor is None:
        rhooks.visitors.clear()
    assert send(relay, m, src) == []
    assert why in caplog.text and rhooks.relayed_calls == []


@pytest.mark.parametrize(("src", "peer", "xid", "why"), [
    (AR2, MN_LL, 0x9ABCDE, "is not an AR"),  # to the relay, AR2 is itself, not a peer
    (AR1, MN_LL, 0x111111, "did not ask"),
    (AR1, OTHER_LL, 0x9ABCDE, "did not ask"),
])
def test_relay_takes_only_the_reply_it_asked_for(src: IPv6Address, peer: IPv6Address,
                                                 xid: int, why: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    _, _, relay, rhooks, _ = visiting()
    send(relay, renew())
    reply = Dhcp6Message(MessageType.REPLY, xid, (ServerId(S1), ClientId(MN_DUID), pd(FIRST)))
    rr = Relay6Message(MessageType.RELAY_REPL, 0, AR2, peer, (RelayMsg(reply),))
    assert relay.handle(rr.pack(), src, AR2, BACKBONE) == []
    assert why in caplog.text and rhooks.relayed_calls == []


def test_relay_reply_must_carry_a_reply() -> None:
    _, _, relay, _, _ = visiting()
    send(relay, renew())
    rr = Relay6Message(MessageType.RELAY_REPL, 0, AR2, MN_LL, (
        RelayMsg(Dhcp6Message(MessageType.ADVERTISE, 0x9ABCDE, (ServerId(S1),))),))
    assert relay.handle(rr.pack(), AR1, AR2, BACKBONE) == []
    assert relay.counters == {"relayed_renew": 1, "refused": 1}


def test_relay_marks_expire() -> None:
    _, _, relay, _, clock = visiting()
    send(relay, renew())
    clock.now += 11
    relay.expire()
    reply = Dhcp6Message(MessageType.REPLY, 0x9ABCDE, (ServerId(S1), ClientId(MN_DUID)))
    rr = Relay6Message(MessageType.RELAY_REPL, 0, AR2, MN_LL, (RelayMsg(reply),))
    assert relay.handle(rr.pack(), AR1, AR2, BACKBONE) == []


def test_status_lists_bindings_and_counters() -> None:
    srv, _, _ = server()
    bind(srv)
    status = srv.status()
    assert status["bindings"] == [{"prefix": str(FIRST), "mn": MN, "bound": True,
                                   "expires": 1_800_000_600.0, "remote_renewals": 0}]
    assert status["counters"] == {"advertise": 1, "bind": 1}


def test_eui64_mac_finds_the_station() -> None:
    assert eui64_mac(MN_LL) == bytes.fromhex("02fa00000003")
    assert eui64_mac(IPv6Address("fe80::cc1e:c6ff:fe36:9a67")) == bytes.fromhex("ce1ec6369a67")
    assert eui64_mac(IPv6Address("fe80::5")) is None  # not EUI-64 (a privacy address)
    assert eui64_mac(IPv6Address("2001:db8::fa:ff:fe00:3")) is None  # not link-local


# --- a lease outlives the session proof in its DUID ---------------------------------------

PROVEN_A, PROVEN_B = dhcp6.make_duid(MN, 1, b"a" * 8), dhcp6.make_duid(MN, 1, b"b" * 8)


def test_a_fresh_session_proof_renews_the_same_lease_only_if_it_proves_the_station() -> None:
    """After each authentication the MN's DUID carries a new proof (agents/delegations.py):
    the server keys the binding by ``<name>#<serial>``, so the /64 stays; the new DUID must
    prove the station's current session, as a Solicit's does."""
    srv, hooks, _ = server()
    prefix = bind(srv, PROVEN_A)
    hooks.on_link = {}  # the new proof does not verify under any session on this link
    assert send(srv, msg(MessageType.RENEW, ServerId(S1), pd(prefix), duid=PROVEN_B)) == []
    assert srv.bindings[MN_LEASE].duid == PROVEN_A and srv.counters["refused"] == 1
    hooks.on_link = {MN_LL: MN}
    rep = reply_of(send(srv, msg(MessageType.RENEW, ServerId(S1), pd(prefix), duid=PROVEN_B)))
    assert prefix_of(rep) == IaPrefix(600, 600, prefix) and rep.client_duid == PROVEN_B
    assert srv.bindings[MN_LEASE].duid == PROVEN_B and list(srv.bindings) == [MN_LEASE]
    # Another lease of the same MN is another binding.
    second = bind(srv, dhcp6.make_duid(MN, 2, b"c" * 8))
    assert second != prefix and sorted(srv.bindings) == [MN_LEASE, f"{MN}#2"]


def test_a_relayed_rebind_with_a_fresh_proof_keeps_the_64_at_its_owner() -> None:
    """dhclient restarted with a new proof sends a Rebind (INIT-REBOOT for a prefix): the
    relay checks the proof, the owner finds the lease by name and serial and keeps it."""
    owner, ohooks, relay, _, _ = visiting()
    rebind = msg(MessageType.REBIND, pd(FIRST), duid=PROVEN_B, xid=0x777)
    [fwd] = send(relay, rebind)
    [back] = owner.handle(fwd.data, AR2, AR1, BACKBONE)
    [out] = relay.handle(back.data, AR1, AR2, BACKBONE)
    rep = dhcp6.unpack(out.data)
    assert isinstance(rep, Dhcp6Message) and prefix_of(rep) == IaPrefix(600, 600, FIRST)
    assert owner.bindings[MN_LEASE].duid == PROVEN_B
    assert owner.bindings[MN_LEASE].remote_renewals == 1 and ohooks.ended_calls == []
