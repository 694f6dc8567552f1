"""The lease bound to the authenticated session (agents/linkproof.py, issue 19 defect 8): a
station that delivered a captured AUTH first, from its own address and MAC, can name the MN
but never gets a lease in its name; the MN itself, proving its session, does."""

from __future__ import annotations

import asyncio
import os
import random
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from agents.dhcp import OPT_CLIENT_ID, DhcpMessage, MessageType
from agents.dhcpd import BROADCAST, ZERO, DhcpServer, client_parts, make_client_id
from agents.linkproof import PROOF_LEN, LinkBindings, link_key, link_proof, proves
from tests.unit.test_addresses import A, Mn
from tests.unit.test_dhcpd import ACCESS, AR1, CHADDR, MN, NOW, Clock, FakeHooks, config

ATTACKER_MAC = bytes.fromhex("02fa000000ee")


class Sessions:
    """The AR's sessions by id, as Authenticator.export_msk would give them."""

    def __init__(self) -> None:
        self.msk: dict[bytes, bytes] = {}

    def new(self) -> tuple[bytes, bytes]:
        sid, msk = os.urandom(8), os.urandom(32)
        self.msk[sid] = msk
        return sid, msk


class ProvingHooks(FakeHooks):
    """FakeHooks whose link identity is the AR agent's: LinkBindings over the sessions."""

    def __init__(self, bindings: LinkBindings) -> None:
        super().__init__()
        self.bindings = bindings

    def identity_on_link(self, chaddr: bytes, ifindex: int,
                         client_id: bytes | None) -> str | None:
        parts = client_parts(client_id)
        return self.bindings.identity(chaddr, ifindex, *parts) if parts else None


def setup() -> tuple[Clock, Sessions, LinkBindings, DhcpServer, ProvingHooks]:
    clock, sessions = Clock(), Sessions()
    bindings = LinkBindings(sessions.msk.get, 120.0, clock=clock)
    hooks = ProvingHooks(bindings)
    server = DhcpServer(config(AR1, "ar1"), hooks, lambda i: i == ACCESS, clock=clock)
    return clock, sessions, bindings, server, hooks


def discover(chaddr: bytes, cid: bytes, xid: int = 0x1234) -> bytes:
    return DhcpMessage(1, xid, chaddr, MessageType.DISCOVER,
                       options={OPT_CLIENT_ID: cid}).pack()


def test_the_mn_proving_its_session_is_served() -> None:
    _, sessions, bindings, server, _ = setup()
    sid, msk = sessions.new()
    bindings.authenticated(MN, ACCESS, sid)
    cid = make_client_id(MN, 1, link_proof(link_key(msk), CHADDR, MN, 1))
    [offer] = server.handle(discover(CHADDR, cid), ZERO, BROADCAST, ACCESS)
    assert DhcpMessage.unpack(offer.data).message_type is MessageType.OFFER


def test_a_replayed_auth_from_another_station_never_gets_a_lease_in_the_mns_name() -> None:
    _, sessions, bindings, server, hooks = setup()
    # The MN's session elsewhere (or before): the attacker captured its AUTH and its
    # client identifier, and delivered the AUTH here first, from its own address and MAC.
    _, genuine_msk = sessions.new()
    replay_sid, _ = sessions.new()  # the AR's session for the replay: no one knows its MSK
    bindings.authenticated(MN, ACCESS, replay_sid)
    copied = make_client_id(MN, 1, link_proof(link_key(genuine_msk), CHADDR, MN, 1))
    guessed = make_client_id(MN, 1, bytes(PROOF_LEN))
    for chaddr, cid in ((ATTACKER_MAC, make_client_id(MN, 1)),  # no proof at all
                        (ATTACKER_MAC, copied), (CHADDR, copied),  # a proof of another session
                        (ATTACKER_MAC, guessed)):
        assert server.handle(discover(chaddr, cid), ZERO, BROADCAST, ACCESS) == []
    assert server.leases == {} and hooks.quiet()
    assert server.counters == {"refused": 4}


def test_the_genuine_mn_retrying_takes_its_name_back() -> None:
    _, sessions, bindings, server, _ = setup()
    replay_sid, _ = sessions.new()
    bindings.authenticated(MN, ACCESS, replay_sid)
    sid, msk = sessions.new()  # the MN's fresh AUTH after its first was refused as a replay
    bindings.authenticated(MN, ACCESS, sid)
    cid = make_client_id(MN, 2, link_proof(link_key(msk), CHADDR, MN, 2))
    assert len(server.handle(discover(CHADDR, cid), ZERO, BROADCAST, ACCESS)) == 1


def test_a_proof_counts_only_on_its_link_in_time_and_for_its_serial() -> None:
    clock, sessions, bindings, _, _ = setup()
    sid, msk = sessions.new()
    bindings.authenticated(MN, ACCESS, sid)
    proof = link_proof(link_key(msk), CHADDR, MN, 1)
    assert bindings.identity(CHADDR, ACCESS, MN, 1, proof) == MN
    assert bindings.identity(CHADDR, ACCESS + 1, MN, 1, proof) is None
    assert bindings.identity(CHADDR, ACCESS, MN, 2, proof) is None
    assert bindings.identity(CHADDR, ACCESS, "mn4.example", 1, proof) is None
    assert bindings.identity(CHADDR, ACCESS, MN, 1, None) is None
    del sessions.msk[sid]  # the session ended
    assert bindings.identity(CHADDR, ACCESS, MN, 1, proof) is None
    sessions.msk[sid] = msk
    clock.now = NOW + 120.0
    assert bindings.identity(CHADDR, ACCESS, MN, 1, proof) is None
    assert proves(link_key(msk), CHADDR, MN, 1, proof)


def test_client_identifiers_with_and_without_a_proof_parse_strictly() -> None:
    proof = bytes(range(PROOF_LEN))
    assert client_parts(make_client_id(MN, 3, proof)) == (MN, 3, proof)
    assert client_parts(make_client_id(MN, 3)) == (MN, 3, None)
    for bad in (b"\x00mn3.example#1#" + b"A" * 16, b"\x00mn3.example#1#" + b"0" * 15,
                b"\x00mn3.example#1#" + b"0" * 17, b"\x00mn3.example#1#xyz",
                b"\x00mn3.example#x#" + b"0" * 16, b"\x00#1", b"\x01mn3#1", b""):
        assert client_parts(bad) is None, bad
    rng = random.Random(8)
    for _ in range(5000):
        raw = bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))
        parts = client_parts(b"\x00" + raw)
        assert parts is None or isinstance(parts[1], int)


def test_a_lost_lease_restarts_its_client_with_a_fresh_proof(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """udhcpc starts over after a NAK with the identifier it was started with; that proof
    belongs to the session of the AR where it started, so the MN starts a fresh client."""
    mn = Mn(tmp_path, monkeypatch)
    mn.mgr.link_proof = lambda serial: bytes(PROOF_LEN)
    acquired: list[int] = []

    async def acquire(timeout: float = 15.0) -> IPv4Address:
        acquired.append(len(mn.mgr.held))
        return A

    monkeypatch.setattr(mn.mgr, "acquire", acquire)

    async def go() -> None:
        mn.start(1)
        await mn.lease(1, A, "10.255.0.1")
        await mn.mgr.on_event(1, "nak", {"message": "remote renewal limit 2 reached"})
        await mn.mgr.on_event(1, "deconfig", {})
        await asyncio.gather(*mn.mgr._restarts)
        assert mn.procs[1].returncode is not None and 1 not in mn.mgr.held
        assert acquired == [0]
        # A release is not a loss: no new client.
        mn.start(2)
        await mn.lease(2, A, "10.255.0.1")
        await mn.mgr.release(A)
        assert acquired == [0] and not mn.mgr._restarts

    asyncio.run(go())
