"""Fuzz target ``dhcp6``: the DHCPv6 wire format (agents/dhcp6.py) and the AR's DHCPv6 policy
core (agents/dhcpd6.py). Each case is a fresh server whose one authenticated MN holds a bound
/64; random client and relay messages (every type, the victim's DUID and others', IA_PD and
IA_NA, nested relays, Remote-IDs) arrive from the access link or the backbone, then mutants.

Findings: an exception out of ``Dhcp6Server.handle`` or out of ``unpack`` other than
Dhcp6Error; a parsed message that does not re-pack to the same octets; from a station on the
access link that is not the victim, anything that binds, renews or ends the victim's /64 or is
answered with a prefix; and from the backbone, anything acted on that the peer AR did not sign
(its mutants, replays, unsigned relay messages): a forgery. The server runs the real relay
authenticator (agents/relayauth.RelayAuth6) with AR2 as its one peer, and most backbone
messages are signed by the fuzzer's own AR2, so genuine relay traffic exists.
"""

from __future__ import annotations

import random
from ipaddress import IPv6Address, IPv6Network

from agents import dhcp6
from agents.dhcp6 import (
    ALL_SERVERS,
    ClientId,
    Dhcp6Error,
    Dhcp6Message,
    ElapsedTime,
    IaNa,
    IaPd,
    IaPrefix,
    InterfaceId,
    MessageType,
    Option,
    OptionRequest,
    RapidCommit,
    Relay6Message,
    RelayMsg,
    RemoteId,
    ServerId,
    StatusCode,
)
from agents.dhcpd6 import Binding6, Dhcp6Server, Server6Config
from agents.relayauth import RelayAuth6

from .common import Tally, mutate

ACCESS, BACKBONE = 7, 3
AR1, AR2 = IPv6Address("2001:db8:ff::7"), IPv6Address("2001:db8:ff::8")
POOL1, POOL2 = IPv6Network("2001:db8:4000:100::/56"), IPv6Network("2001:db8:4000:200::/56")
VICTIM = "mn3.example"
VICTIM_LL, ATTACKER_LL = IPv6Address("fe80::fa:ff:fe00:3"), IPv6Address("fe80::fa:ff:fe00:ee")
VICTIM_DUID = dhcp6.make_duid(VICTIM, 1)
SERVER1, SERVER2 = dhcp6.server_duid("ar1.isp.test"), dhcp6.server_duid("ar2.isp.test")
MUTANTS = 15
PAIR_KEY = bytes(range(32, 64))  # the AR1-AR2 DHCPv6 relay key of the fuzzed pair
CONFIG = Server6Config(server_duid=SERVER1, address=AR1, pool=POOL1, prefixlen=64, first=1,
                       last=4, valid_s=3600, remote_renewals=2,
                       interface_id=b"ar1.isp.test/ar1-acc")


class _Hooks:
    def __init__(self) -> None:
        self.bound_calls: list[Binding6] = []
        self.ended_calls: list[Binding6] = []
        self.relayed_calls: list[IPv6Network] = []

    def identity_on_link(self, peer: IPv6Address, ifindex: int,
                         duid: bytes | None) -> str | None:
        # The proof in the DUID is the link's (agents/linkproof.py); the station is taken
        # as proven by its link-local address here, as the dhcp target does with chaddr.
        return VICTIM if (peer, ifindex) == (VICTIM_LL, ACCESS) else None

    def identity_of_prefix(self, prefix: IPv6Network, ifindex: int) -> str | None:
        return VICTIM if ifindex == ACCESS and prefix.subnet_of(POOL2) else None

    def owner_of(self, prefix: IPv6Network) -> IPv6Address | None:
        return AR1 if prefix.subnet_of(POOL1) else AR2 if prefix.subnet_of(POOL2) else None

    def bound(self, binding: Binding6, ifindex: int, renewal: bool) -> None:
        self.bound_calls.append(binding)

    def ended(self, binding: Binding6, reason: str) -> None:
        self.ended_calls.append(binding)

    def relayed(self, prefix: IPv6Network, kind: str, expires: float | None) -> None:
        self.relayed_calls.append(prefix)


def _server(now: list[float]) -> tuple[Dhcp6Server, _Hooks, IPv6Network]:
    hooks = _Hooks()
    relay_auth = RelayAuth6(AR1, {AR2: "ar2.isp.test"}, lambda name: PAIR_KEY,
                            clock=lambda: now[0])
    server = Dhcp6Server(CONFIG, hooks, lambda i: i == ACCESS, clock=lambda: now[0],
                         relay_auth=relay_auth, backbone=lambda i: i == BACKBONE)
    ia = IaPd(3, 0, 0)
    solicit = Dhcp6Message(MessageType.SOLICIT, 1, (ClientId(VICTIM_DUID), ia, RapidCommit()))
    server.handle(solicit.pack(), VICTIM_LL, ALL_SERVERS, ACCESS)
    prefix = server.bindings[f"{VICTIM}#1"].prefix  # bindings are keyed by lease
    hooks.bound_calls.clear()
    return server, hooks, prefix


def _prefix(rng: random.Random, victim: IPv6Network) -> IPv6Network:
    return rng.choice((victim, victim, IPv6Network((int(POOL1.network_address)
                                                    + (rng.randrange(256) << 64), 64)),
                       IPv6Network((int(POOL2.network_address) + (rng.randrange(256) << 64), 64)),
                       IPv6Network("::/0"), IPv6Network((rng.getrandbits(64) << 64, 64))))


def _message(rng: random.Random, victim: IPv6Network) -> Dhcp6Message:
    options: list[Option] = []
    # The victim's lease with another proof: the same binding, so it must prove the station.
    duid = rng.choice((VICTIM_DUID, VICTIM_DUID, dhcp6.make_duid(VICTIM, 2),
                       dhcp6.make_duid(VICTIM, 1, rng.randbytes(8)),
                       dhcp6.make_duid("evil.example", 1), bytes.fromhex("0003000102fa000000ee"),
                       rng.randbytes(rng.randint(3, 40)), None))
    if duid is not None:
        options.append(ClientId(duid))
    if rng.random() < 0.6:
        options.append(ServerId(rng.choice((SERVER1, SERVER1, SERVER2, rng.randbytes(8)))))
    options.append(ElapsedTime(rng.getrandbits(16)))
    if rng.random() < 0.3:
        options.append(OptionRequest((23, 24, 39)))
    if rng.random() < 0.2:
        options.append(RapidCommit())
    if rng.random() < 0.8:
        life = rng.choice((0, 60, 3600, dhcp6.INFINITY))
        subs = (IaPrefix(life, life, _prefix(rng, victim)),) if rng.random() < 0.8 else ()
        options.append(IaPd(rng.choice((3, 3, 1, rng.getrandbits(32))), 0, 0, subs))
    if rng.random() < 0.15:
        options.append(IaNa(1, 0, 0, (StatusCode(0, "x"),)))
    kind = rng.choice((MessageType.SOLICIT, MessageType.REQUEST, MessageType.RENEW,
                       MessageType.REBIND, MessageType.RELEASE, MessageType.DECLINE,
                       rng.choice([t for t in MessageType if t not in dhcp6.RELAY_TYPES])))
    return Dhcp6Message(kind, rng.getrandbits(24), tuple(options))


def _relay(rng: random.Random, inner: dhcp6.Message) -> Relay6Message:
    opts: list[Option] = []
    if rng.random() < 0.7:
        opts.append(InterfaceId(b"ar2.isp.test/ar2-acc"))
    if rng.random() < 0.8:
        opts.append(RemoteId(rng.choice((dhcp6.LAB_ENTERPRISE, 9)),
                             rng.choice((VICTIM.encode(), b"evil.example", b"\xff",
                                         VICTIM.upper().encode() + b"."))))
    opts.append(RelayMsg(inner))
    kind = rng.choice((MessageType.RELAY_FORW, MessageType.RELAY_FORW, MessageType.RELAY_REPL))
    return Relay6Message(kind, rng.choice((0, 0, 1, 7, 8)), rng.choice((AR2, AR1)),
                         rng.choice((VICTIM_LL, ATTACKER_LL)), tuple(opts))


def _plausible(rng: random.Random, msg: Dhcp6Message, victim: IPv6Network) -> Dhcp6Message:
    """What the victim, or a station posing as it, would send: the requests the server acts
    on, so that acceptances and near misses are common rather than rare."""
    kind = rng.choice((MessageType.SOLICIT, MessageType.REQUEST, MessageType.RENEW,
                       MessageType.REBIND, MessageType.RELEASE, MessageType.DECLINE))
    held = victim if rng.random() < 0.7 else IPv6Network((int(POOL2.network_address), 64))
    opts: list[Option] = [ClientId(VICTIM_DUID), ElapsedTime(0)]
    if kind not in (MessageType.SOLICIT, MessageType.REBIND):
        opts.append(ServerId(SERVER1 if held.subnet_of(POOL1) else SERVER2))
    opts.append(IaPd(3, 0, 0, (IaPrefix(3600, 3600, held),) if kind != MessageType.SOLICIT
                     else ()))
    if kind == MessageType.SOLICIT and rng.random() < 0.5:
        opts.append(RapidCommit())
    return Dhcp6Message(kind, msg.xid, tuple(opts))


def _wire(data: bytes) -> str | None:
    """The parser alone: Dhcp6Error, or a message that re-packs to the same octets."""
    try:
        msg = dhcp6.unpack(data)
    except Dhcp6Error:
        return None
    if msg.pack() != data:
        return "accepted input does not re-pack to itself"
    return None


def _judge(tally: Tally, src: IPv6Address, sends: list[object], hooks: _Hooks,
           from_access: bool, signed: bool) -> None:
    """``signed``: the datagram is, octet for octet, one AR2 signed and was not seen before."""
    acted = bool(sends or hooks.bound_calls or hooks.ended_calls or hooks.relayed_calls)
    if not acted:
        tally.rejected += 1
        return
    if not from_access:
        if signed:
            tally.accepted += 1
        else:
            tally.forgery(b"", f"a backbone datagram from {src} that AR2 did not sign was used")
        return
    if src == VICTIM_LL:
        tally.accepted += 1
        return
    touched = any(b.mn == VICTIM for b in hooks.bound_calls + hooks.ended_calls)
    granted = False
    for send in sends:
        data = getattr(send, "data", b"")
        try:
            out = dhcp6.unpack(data)
        except Dhcp6Error:
            tally.uncaught += 1
            tally.note("server sent unparseable", data, "reply does not parse")
            continue
        if isinstance(out, Dhcp6Message):
            for ia in out.all(IaPd):
                granted |= any(isinstance(o, IaPrefix) and o.valid > 0 for o in ia.options)
        else:
            granted = True  # a stranger's message relayed to another AR
    if touched or granted or hooks.relayed_calls:
        tally.forgery(b"", f"station {src} on the access link: "
                      f"{'touched the victim' if touched else 'was served a prefix'}")
    else:
        tally.rejected += 1


def run(tally: Tally, count: int, seed: int) -> None:
    rng = random.Random(seed)
    now = [1_800_000_000.0]
    donors: list[bytes] = []
    signer = RelayAuth6(AR2, {AR1: "ar1.isp.test"}, lambda name: PAIR_KEY, clock=lambda: now[0])
    while tally.inputs < count:
        server, hooks, victim = _server(now)
        first = _message(rng, victim)
        plausible = rng.random() < 0.35
        msg: dhcp6.Message = _plausible(rng, first, victim) if plausible else first
        from_access = plausible or rng.random() < 0.6
        genuine = not from_access and rng.random() < 0.4
        if genuine:
            # AR2 relaying the victim's own request: what the owner acts on when it is signed.
            msg = Relay6Message(MessageType.RELAY_FORW, 0, AR2, VICTIM_LL, (
                InterfaceId(b"ar2.isp.test/ar2-acc"),
                RemoteId(dhcp6.LAB_ENTERPRISE, VICTIM.encode()),
                RelayMsg(_plausible(rng, first, victim))))
        elif not from_access or (not plausible and rng.random() < 0.05):
            msg = _relay(rng, msg if rng.random() < 0.9 else _relay(rng, msg))
        to_sign = (msg if not from_access and isinstance(msg, Relay6Message)
                   and rng.random() < 0.8 else None)
        signed = to_sign is not None
        try:
            base = signer.sign(to_sign, AR1) if to_sign is not None else msg.pack()
        except ValueError:
            continue
        donors = (donors + [base])[-32:]
        src = (rng.choice((VICTIM_LL, VICTIM_LL, ATTACKER_LL)) if plausible
               else rng.choice((VICTIM_LL, ATTACKER_LL, ATTACKER_LL, AR2)) if from_access
               else AR2 if genuine
               else rng.choice((AR2, AR2, AR1, IPv6Address(rng.getrandbits(128)))))
        dst = ALL_SERVERS if plausible else rng.choice((ALL_SERVERS, ALL_SERVERS, AR1, VICTIM_LL))
        ifindex = ACCESS if from_access else BACKBONE
        for i in range(MUTANTS + 1):
            if tally.inputs >= count:
                return
            data = base if i == 0 else mutate(rng, base, donors=tuple(donors))
            if i % 4 == 0:
                now[0] += rng.choice((1.0, 11.0, 31.0))
                server.expire()
            hooks.bound_calls.clear()
            hooks.ended_calls.clear()
            hooks.relayed_calls.clear()
            ok, sends = tally.run(data, lambda: server.handle(data, src, dst, ifindex), ())  # noqa: B023
            try:
                problem = _wire(data)
            except Exception as exc:  # the parser must raise Dhcp6Error or nothing
                problem = repr(exc)[:200]
            if problem is not None:
                tally.uncaught += 1
                tally.note("parser", data, problem)
            if ok and sends is not None:
                _judge(tally, src, list(sends), hooks, from_access, signed and i == 0)
