"""The MN's DHCPv6 side (agents/delegations.py) without dhclient: what each of dhclient's
events does to the interface and DNS, when a client is started again with a fresh session
proof, and which /64s the connection tracking releases."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

import pytest

from agents import delegations
from agents.delegations import Delegation, DelegationManager, parse_prefix, with_duid
from agents.dhcp6 import make_duid
from agents.handoff import EventLog

MN = "mn3.example"
GW = IPv6Address("fe80::fa:ff:fe00:1")
P1, P2 = IPv6Network("2001:db8:4010:c0::/64"), IPv6Network("2001:db8:4011:1c0::/64")


def run(coro: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(coro())  # type: ignore[arg-type]


class World:
    """The manager's surroundings: ip batches, DNS registrations, the session count."""

    def __init__(self, tmp: Path) -> None:
        self.batches: list[list[list[str]]] = []
        self.registered = 0
        self.epoch = 1
        self.restarted: list[tuple[int, str]] = []
        self.manager = DelegationManager(
            MN, "mn3-eth0", GW, tmp / "hook", tmp / "control.sock", tmp,
            EventLog(tmp / "events.jsonl"), lambda serial: make_duid(MN, serial, b"p" * 8),
            lambda: self.epoch, self.register, self.ip_batch)

    async def ip_batch(self, commands: list[list[str]]) -> None:
        self.batches.append(commands)

    async def register(self) -> None:
        self.registered += 1

    def held(self, serial: int, prefix: IPv6Network | None = None) -> Delegation:
        d = self.manager.held[serial] = Delegation(serial, prefix=prefix, proof_of=self.epoch)
        return d


def bound(prefix: IPv6Network, renew: int = 10, life: int = 20) -> dict[str, str]:
    return {"new_ip6_prefix": str(prefix), "new_max_life": str(life), "new_renew": str(renew)}


def test_a_bound_64_puts_its_first_address_on_the_link_and_in_dns(tmp_path: Path) -> None:
    async def body() -> None:
        w = World(tmp_path)
        w.held(1)
        assert (await w.manager.on_event(1, "BOUND6", bound(P1)))["ok"]
        assert w.manager.prefixes() == [P1] and w.manager.addresses() == [P1[1]]
        assert w.registered == 1
        [batch] = w.batches
        assert ["addr", "replace", f"{P1[1]}/128", "dev", "mn3-eth0", "nodad"] in batch
        assert batch[-1] == ["route", "replace", "default", "via", str(GW), "dev", "mn3-eth0",
                             "src", str(P1[1])]
        # A renewal of the same /64 changes nothing on the link or in DNS.
        await w.manager.on_event(1, "RENEW6", bound(P1))
        assert len(w.batches) == 1 and w.registered == 1 and w.manager.held[1].renewals == 1
        # The newest /64 is the source of new connections.
        w.held(2)
        await w.manager.on_event(2, "BOUND6", bound(P2))
        assert w.manager.prefixes() == [P2, P1]
        assert w.batches[-1][-1][-1] == str(P2[1])
        await w.manager.close()
    run(body)


def test_bad_or_foreign_events_change_nothing(tmp_path: Path) -> None:
    async def body() -> None:
        w = World(tmp_path)
        w.held(1)
        bad = await w.manager.on_event(1, "BOUND6", {"new_ip6_prefix": "10.0.0.0/8"})
        assert not bad["ok"] and w.manager.prefixes() == []
        assert (await w.manager.on_event(9, "BOUND6", bound(P1)))["ok"]  # a client we stopped
        assert w.manager.prefixes() == [] and w.batches == []
        await w.manager.close()
    run(body)


def test_a_lost_64_leaves_the_link_and_dns_and_a_fresh_client_asks_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lifetimes 0 (the owner's remote renewal limit) or expiry: as the IPv4 side's NAK."""
    async def body() -> None:
        w = World(tmp_path)
        asked: list[int] = []

        async def acquire(timeout: float = 15.0) -> IPv6Network:
            asked.append(1)
            return P2

        monkeypatch.setattr(w.manager, "acquire", acquire)
        w.held(1)
        await w.manager.on_event(1, "BOUND6", bound(P1))
        await w.manager.on_event(1, "RENEW6", bound(P1, life=0))
        assert w.manager.prefixes() == [] and w.registered == 2
        assert ["addr", "del", f"{P1[1]}/128", "dev", "mn3-eth0"] in w.batches[1]
        await w.manager.settled()
        assert asked == [1] and 1 not in w.manager.held
        await w.manager.close()
    run(body)


def test_a_stale_proof_restarts_the_client_just_before_it_renews(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An authentication makes the DUID's proof stale; the client is started again only
    when its renewal is near (each start is a Rebind: a remote renewal at the owner)."""
    async def body() -> None:
        w = World(tmp_path)

        async def restart(d: Delegation, why: str) -> None:
            w.restarted.append((d.serial, why))

        monkeypatch.setattr(w.manager, "_restart", restart)
        monkeypatch.setattr(delegations, "RESTART_LEAD_S", 0.05)
        w.held(1)
        await w.manager.on_event(1, "BOUND6", bound(P1, renew=10))
        w.epoch += 1
        w.manager.authenticated()
        await asyncio.sleep(0)
        assert w.restarted == []  # the renewal is 10 s away
        w.held(2)
        await w.manager.on_event(2, "BOUND6", bound(P2, renew=0, life=1))  # T1 in 0.5 s
        w.epoch += 1
        w.manager.authenticated()  # not yet due
        await asyncio.sleep(0.6)
        assert w.restarted == [(2, "stale proof")]
        # Outside the AS (paused) no client is started again, whatever is due.
        w.manager.pause()
        w.epoch += 1
        w.manager.authenticated()
        w.manager._before_renewal(w.manager.held[1])
        await asyncio.sleep(0)
        assert w.restarted == [(2, "stale proof")]
        w.manager.resume()
        w.manager._before_renewal(w.manager.held[1])
        await asyncio.sleep(0)
        assert w.restarted[-1] == (1, "stale proof")
        await w.manager.close()
    run(body)


def test_tidy_releases_the_older_64s_no_connection_uses(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def body() -> None:
        w = World(tmp_path)
        released: list[IPv6Network] = []

        async def release(prefix: IPv6Network) -> None:
            released.append(prefix)

        monkeypatch.setattr(w.manager, "release", release)
        w.held(1)
        await w.manager.on_event(1, "BOUND6", bound(P1))
        assert await w.manager.tidy(lambda: {}) == []  # the one /64 is kept
        w.held(2)
        await w.manager.on_event(2, "BOUND6", bound(P2))
        table: dict[Any, int] = {P1[1]: 1, IPv4Address("10.65.0.100"): 3}
        assert w.manager.in_use(table) == {P2: 0, P1: 1}
        assert await w.manager.tidy(lambda: table) == []  # P1 carries a connection
        assert await w.manager.tidy(lambda: {}) == [P1] and released == [P1]
        await w.manager.close()
    run(body)


def test_the_lease_file_gets_the_new_duid_and_keeps_its_leases() -> None:
    old = 'default-duid "\\000\\002";\nlease6 {\n  interface "mn3-eth0";\n}\n'
    new = with_duid(old, b"\x00\x02\x00\x00~\xd9mn3.example#1")
    lines = new.splitlines()
    assert lines[0] == ('default-duid "\\000\\002\\000\\000\\176\\331\\155\\156\\063\\056\\145'
                        '\\170\\141\\155\\160\\154\\145\\043\\061";')
    assert lines[1:] == ["lease6 {", '  interface "mn3-eth0";', "}"]
    assert with_duid("", b"\x01").splitlines() == ['default-duid "\\001";']


def test_release_takes_an_ipv6_prefix_only() -> None:
    assert parse_prefix(str(P1)) == P1
    assert parse_prefix("10.65.0.100") is None and parse_prefix("2001:db8::1/64") is None
