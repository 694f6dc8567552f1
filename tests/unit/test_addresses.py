"""The MN's address manager (agents/addresses.py) without root: the kernel's socket tables,
udhcpc's events turned into interface addresses, the default route's source and DNS records
newest first, and the release of older addresses no connection uses, sent again while the
owner shows no end of the lease."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from agents import addresses as addresses_module
from agents.addresses import (
    ADDRESS_TTL,
    RELEASE_RESENDS,
    AddressError,
    AddressManager,
    Held,
    own_socket_inodes,
    parse_proc_net,
    release_message,
    socket_table,
)
from agents.dhcp import DhcpMessage
from agents.dns import DnsError, DnsUpdater
from agents.handoff import EventLog

MN = "mn3.example"
IF = "mn3-eth0"
GW = "169.254.0.1"
A = IPv4Address("10.64.0.100")  # leased first, from ar1
B = IPv4Address("10.64.1.100")  # then from ar2
C = IPv4Address("10.64.2.100")  # the newest, from ar3
T0 = 1_800_000_000.0

def _hex(a: str) -> str:
    """An address as /proc/net prints it: each 32-bit word of it in host order, in hex."""
    raw = ipaddress.ip_address(a).packed
    return "".join(f"{int.from_bytes(raw[i:i + 4], sys.byteorder):08X}"
                   for i in range(0, len(raw), 4))


def _row(i: int, local: str, port: int, remote: str, rport: int, state: int,
         inode: int) -> str:
    return (f"{i:4d}: {_hex(local)}:{port:04X} {_hex(remote)}:{rport:04X} {state:02X} "
            f"00000000:00000000 00:00000000 00000000     0        0 {inode} 1 "
            "0000000000000000 100 0 0 10 0")


HEAD = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
        "timeout inode")
ANY4, ANY6 = "0.0.0.0", "::"
TCP = "\n".join([
    HEAD,
    _row(0, ANY4, 22, ANY4, 0, 0x0A, 101),  # a listener holds no address
    _row(1, "10.64.2.100", 8080, ANY4, 0, 0x0A, 102),
    _row(2, "10.64.0.100", 5201, "198.51.100.2", 43210, 0x01, 103),  # two established
    _row(3, "10.64.0.100", 5202, "198.51.100.2", 43212, 0x01, 104),
    _row(4, "10.64.2.100", 40000, "198.51.100.2", 80, 0x06, 0),  # TIME_WAIT: none
    _row(5, "10.64.2.100", 40002, "198.51.100.2", 80, 0x02, 105),  # SYN_SENT: being opened
    _row(6, "10.64.1.100", 7411, "10.255.0.2", 7411, 0x01, 700),  # the agent's own
]) + "\n"
UDP = "\n".join([
    HEAD,
    _row(0, "127.0.0.53", 53, ANY4, 0, 0x07, 201),  # unconnected
    _row(1, "10.64.0.100", 68, ANY4, 0, 0x07, 202),
    _row(2, "10.64.1.100", 40112, "198.51.100.2", 7000, 0x01, 203),  # connected UDP
]) + "\n"
TCP6 = "\n".join([
    HEAD,
    # An IPv4 connection to a dual-stack listener (iperf3 -s).
    _row(0, "::ffff:10.64.1.100", 5201, "::ffff:198.51.100.2", 43999, 0x01, 301),
    _row(1, ANY6, 22, ANY6, 0, 0x0A, 302),
    _row(2, "2001:db8::10", 22, "2001:db8::2", 50000, 0x01, 303),
    _row(3, "fe80::1", 22, "fe80::2", 50001, 0x01, 304),
]) + "\n"


def test_the_kernels_socket_tables_count_connections_per_local_address(
        tmp_path: Path) -> None:
    for name, text in (("tcp", TCP), ("udp", UDP), ("tcp6", TCP6)):
        (tmp_path / name).write_text(text)  # no udp6: a table that is absent counts nothing
    assert socket_table(tmp_path) == {
        A: 2,  # two established TCP connections
        # A connected UDP socket, and an IPv4 connection to a dual-stack listener (iperf3 -s).
        B: 3,  # ... and the socket of inode 700, which this process does not own
        C: 1,  # a connection being opened; the listener and TIME-WAIT do not hold the address
        # An IPv6 connection holds its address (a DHCPv6 /64's, agents/delegations.py); the
        # link-local one holds nothing the MN could release.
        IPv6Address("2001:db8::10"): 1,
    }
    # The agent's own sockets (its AUTH and resolver sockets) are left out.
    assert parse_proc_net(TCP, frozenset({700})) == {A: 2, C: 1}
    assert parse_proc_net("") == {} and parse_proc_net(HEAD) == {}
    assert parse_proc_net("garbage\n 0: 0100007F:0016 00000000:0000 0A\n"
                          " 1: 0100007:0016 00000000:0000 01 0 0 0 0 0 7\n") == {}


def test_the_real_table_sees_a_connection_and_leaves_out_our_own_sockets() -> None:
    """This namespace's own tables: a loopback connection on an address nothing else uses
    shows in them with both its ends, and leaves the table once both are known as ours."""
    here = "127.0.0.233"
    with socket.socket() as srv:
        srv.bind((here, 0))
        srv.listen()
        with socket.socket() as cli:
            cli.bind((here, 0))
            cli.connect(srv.getsockname())
            conn, _ = srv.accept()
            with conn:
                net = Path("/proc/thread-self/net")
                raw = sum(parse_proc_net((net / t).read_text()).get(IPv4Address(here), 0)
                          for t in ("tcp", "tcp6"))
                assert raw == 2  # the client's end and the accepted one; not the listener
                inodes = own_socket_inodes()
                assert {os.fstat(f.fileno()).st_ino for f in (srv, cli, conn)} <= inodes
                assert socket_table().get(IPv4Address(here), 0) == 0


@pytest.mark.parametrize("seed", range(3))
def test_socket_table_parser_fuzz(seed: int) -> None:
    rng = random.Random(seed)
    lines = (TCP + UDP + TCP6).splitlines()
    for _ in range(2000):
        line = list(rng.choice(lines))
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(line))
            line[i] = rng.choice("0123456789ABCDEFx: \t")
        out = parse_proc_net("".join(line))
        assert all(isinstance(n, int) and n > 0 for n in out.values())


class FakeUpdater:
    def __init__(self) -> None:
        self.sets: list[list[IPv4Address]] = []
        self.fail = False

    async def set_addresses(self, name: str, addresses: Sequence[IPv4Address], ttl: int,
                            zone: str | None = None,
                            addresses6: Sequence[IPv6Address] | None = None) -> None:
        assert (name, ttl, zone) == (MN, ADDRESS_TTL, MN)
        if self.fail:
            raise DnsError("REFUSED")
        self.sets.append(list(addresses))


class FakeUdhcpc:
    """A udhcpc process: SIGUSR2 releases the lease, which udhcpc reports as deconfig."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.signals: list[int] = []
        self.manager: AddressManager | None = None
        self.serial = 0
        self.confirms = True
        self.on_release: Callable[[], None] | None = None  # udhcpc's RELEASE on the wire
        self._tasks: list[asyncio.Task[object]] = []

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)
        if sig == signal.SIGUSR2 and self.on_release is not None:
            self.on_release()
        if sig == signal.SIGUSR2 and self.confirms and self.manager is not None:
            self._tasks.append(asyncio.get_running_loop().create_task(
                self.manager.on_event(self.serial, "deconfig", {})))

    def terminate(self) -> None:
        self.signals.append(signal.SIGTERM)
        self.returncode = -signal.SIGTERM

    def kill(self) -> None:
        self.signals.append(signal.SIGKILL)
        self.returncode = -signal.SIGKILL

    async def wait(self) -> int | None:
        return self.returncode


class Mn:
    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = T0
        # Recency is the clock at binding: give the module a clock we move.
        monkeypatch.setattr(addresses_module, "time", SimpleNamespace(time=lambda: self.now,
                                                                  monotonic=lambda: self.now))
        self.ip_calls: list[list[str]] = []
        self.table: dict[IPv4Address, int] = {}
        self.dns = FakeUpdater()
        self.procs: dict[int, FakeUdhcpc] = {}
        # The owner's PTR for each address it still leases; a RELEASE that arrives deletes it.
        self.ptrs: set[IPv4Address] = set()
        self.lost = 0  # how many RELEASEs, udhcpc's first, never reach the owner
        self.resent: list[IPv4Address] = []
        self.mgr = AddressManager(
            name=MN, ifname=IF, gateway=GW, link_local=IPv4Address("169.254.7.3"),
            hook=tmp / "udhcpc.hook", control=tmp / "mn.sock", rundir=tmp,
            updater=cast(DnsUpdater, self.dns), events=EventLog(None), ip=self.ip,
            sockets=lambda: dict(self.table), ptr_held=self.ptr_held, resend=self.resend,
            confirm_interval=0.0)

    async def ptr_held(self, address: IPv4Address) -> bool | None:
        return address in self.ptrs

    def resend(self, held: Held, address: IPv4Address) -> None:
        self.resent.append(address)
        self.arrives(address)

    def arrives(self, address: IPv4Address) -> None:
        if self.lost:
            self.lost -= 1
        else:
            self.ptrs.discard(address)

    async def ip(self, argv: list[str]) -> None:
        self.ip_calls.append(argv)

    def start(self, serial: int) -> FakeUdhcpc:
        """What acquire() does before udhcpc reports: a client process per lease."""
        proc = FakeUdhcpc(4000 + serial)
        proc.manager, proc.serial = self.mgr, serial
        self.procs[serial] = proc
        self.mgr.held[serial] = Held(serial, cast(asyncio.subprocess.Process, proc))
        return proc

    async def lease(self, serial: int, address: IPv4Address, server: str,
                    event: str = "bound", **extra: str) -> dict[str, object]:
        env = {"ip": str(address), "serverid": server, "lease": "20", "router": GW, **extra}
        return await self.mgr.on_event(serial, event, env)

    async def hold(self, *addresses: IPv4Address) -> None:
        """One client per address, bound in this order, a second apart."""
        for serial, address in enumerate(addresses, 1):
            self.start(serial)
            await self.lease(serial, address, "10.255.0.1")
            self.now += 1

    def events(self, name: str) -> list[dict[str, object]]:
        return [r for r in self.mgr.events.records if r["ev"] == name]


def addr(address: IPv4Address) -> list[str]:
    return ["addr", "replace", f"{address}/32", "dev", IF]


def route(newest: IPv4Address) -> list[str]:
    return ["route", "replace", "default", "via", GW, "dev", IF, "src", str(newest)]


def test_bound_configures_the_address_and_registers_newest_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mn = Mn(tmp_path, monkeypatch)

    async def go() -> None:
        mn.start(1)
        ha = "ha.isp.test".encode("ascii").hex()  # udhcpc exports unknown options in hex
        assert await mn.lease(1, A, "10.255.0.1", opt224=ha) == {"ok": True}
        assert mn.ip_calls == [addr(A), route(A)]
        assert mn.dns.sets == [[A]]
        held = mn.mgr.held[1]
        assert held.address == A and held.server == IPv4Address("10.255.0.1")
        assert held.expires == T0 + 20 and held.bound.is_set()
        assert mn.mgr.home_agent == "ha.isp.test"

        mn.now += 5
        mn.start(2)
        await mn.lease(2, B, "10.255.0.2")
        # New connections leave from the newest address; the older one stays configured.
        assert mn.ip_calls[2:] == [addr(B), route(B)]
        assert mn.dns.sets[-1] == [B, A]
        assert mn.mgr.addresses() == [B, A] and mn.mgr.source() == B
        assert mn.mgr.home_agent == "ha.isp.test"  # kept when a lease does not carry it

    asyncio.run(go())
    bound = mn.events("dhcp_bound")
    assert [(r["addr"], r["home_agent"]) for r in bound] == [
        (str(A), "ha.isp.test"), (str(B), "ha.isp.test")]
    status = mn.mgr.status()
    assert status["addresses"] == [str(B), str(A)]
    assert [(lease["serial"], lease["pid"]) for lease in status["leases"]] == [(1, 4001),
                                                                              (2, 4002)]


def test_renewal_counts_without_touching_interface_or_dns(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mn = Mn(tmp_path, monkeypatch)

    async def go() -> None:
        mn.start(1)
        await mn.lease(1, A, "10.255.0.1")
        mn.now += 10
        calls, sets = list(mn.ip_calls), list(mn.dns.sets)
        await mn.lease(1, A, "10.255.0.1", event="renew")
        assert mn.mgr.held[1].renewals == 1 and mn.mgr.held[1].expires == T0 + 30
        assert mn.mgr.held[1].bound_at == T0  # a renewal does not make an address newer
        assert mn.ip_calls == calls and mn.dns.sets == sets

    asyncio.run(go())


def test_deconfig_removes_the_address_and_moves_the_default_route(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mn = Mn(tmp_path, monkeypatch)

    async def go() -> None:
        await mn.hold(A, B)
        del mn.ip_calls[:]
        assert await mn.mgr.on_event(2, "deconfig", {}) == {"ok": True}
        assert mn.ip_calls == [["addr", "del", f"{B}/32", "dev", IF], route(A)]
        assert mn.dns.sets[-1] == [A] and mn.mgr.addresses() == [A]
        assert mn.mgr.held[2].address is None  # the client lives on, looking for a lease
        # The last address going leaves no default route; DNS waits for the next lease.
        sets = len(mn.dns.sets)
        await mn.mgr.on_event(1, "deconfig", {})
        assert mn.ip_calls[2:] == [["addr", "del", f"{A}/32", "dev", IF],
                                   ["route", "del", "default"]]
        assert len(mn.dns.sets) == sets and mn.mgr.source() == IPv4Address("169.254.7.3")
        await mn.mgr.on_event(1, "deconfig", {})  # udhcpc also says so at start: no-op
        assert len(mn.ip_calls) == 4

    asyncio.run(go())
    assert [r["addr"] for r in mn.events("dhcp_deconfig")] == [str(B), str(A)]


def test_nak_counts_and_bad_events_are_answered_not_raised(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mn = Mn(tmp_path, monkeypatch)

    async def go() -> None:
        assert (await mn.lease(9, A, "10.255.0.1"))["ok"] is False  # no such client
        mn.start(1)
        for env in ({"serverid": "10.255.0.1"}, {"ip": "10.64.0.300"},
                    {"ip": str(A), "lease": "forever"}):
            got = await mn.mgr.on_event(1, "bound", env)
            assert got["ok"] is False and "bad lease variables" in str(got["error"])
        assert mn.ip_calls == [] and mn.dns.sets == [] and mn.mgr.addresses() == []
        await mn.lease(1, A, "10.255.0.1", opt224="zz")  # unusable HA option: ignored
        assert mn.mgr.home_agent is None and mn.mgr.addresses() == [A]
        await mn.mgr.on_event(1, "nak", {"message": "remote renewal limit 2 reached"})
        assert mn.mgr.held[1].naks == 1

    asyncio.run(go())
    assert mn.events("dhcp_nak")[0]["message"] == "remote renewal limit 2 reached"


def test_dns_failure_keeps_the_lease_and_is_counted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mn = Mn(tmp_path, monkeypatch)
    mn.dns.fail = True

    async def go() -> None:
        mn.start(1)
        assert await mn.lease(1, A, "10.255.0.1") == {"ok": True}

    asyncio.run(go())
    assert mn.mgr.addresses() == [A] and mn.ip_calls == [addr(A), route(A)]
    assert mn.mgr.dns_errors == 1 and mn.events("dns_failed")


def test_tidy_releases_only_older_addresses_no_connection_uses(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mn = Mn(tmp_path, monkeypatch)

    async def go() -> list[IPv4Address]:
        await mn.hold(A, B, C)
        mn.table.update(parse_proc_net(
            _row(0, "10.64.0.100", 5201, "198.51.100.2", 43210, 0x01, 1) + "\n"
            + _row(1, "10.64.1.100", 8080, ANY4, 0, 0x0A, 2)))
        assert mn.mgr.in_use() == {C: 0, B: 0, A: 1}
        del mn.ip_calls[:]
        return await mn.mgr.tidy()

    # C is the newest, A carries a connection: only B goes, and DNS loses it first.
    assert asyncio.run(go()) == [B]
    assert mn.mgr.addresses() == [C, A] and sorted(mn.mgr.held) == [1, 3]
    assert mn.dns.sets[-2:] == [[C, A], [C, A]]  # before the release, and after deconfig
    assert mn.ip_calls == [["addr", "del", f"{B}/32", "dev", IF], route(C)]
    assert mn.procs[2].signals == [signal.SIGUSR2, signal.SIGCONT, signal.SIGTERM]
    assert mn.procs[1].signals == [] and mn.procs[3].signals == []
    assert [r["addr"] for r in mn.events("released")] == [str(B)]


def test_tidy_keeps_a_single_address_and_release_needs_a_held_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mn = Mn(tmp_path, monkeypatch)

    async def go() -> None:
        await mn.hold(A)
        assert await mn.mgr.tidy() == []  # unused, but the only one
        with pytest.raises(AddressError, match="not held"):
            await mn.mgr.release(B)

    asyncio.run(go())
    assert mn.mgr.addresses() == [A] and mn.procs[1].signals == []


def test_release_of_an_exited_client_still_takes_the_address_off(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mn = Mn(tmp_path, monkeypatch)

    async def go() -> None:
        await mn.hold(A, B)
        mn.procs[1].returncode = 1  # udhcpc died: nobody will report the deconfig
        del mn.ip_calls[:]
        await mn.mgr.release(A)

    asyncio.run(go())
    assert mn.procs[1].signals == []
    assert mn.ip_calls == [["addr", "del", f"{A}/32", "dev", IF], route(B)]
    assert mn.mgr.addresses() == [B] and mn.dns.sets[-1] == [B] and 1 not in mn.mgr.held


def release_with(mn: Mn, lost: int) -> None:
    """Release A while B stays, ``lost`` RELEASEs going missing on the way to the owner."""

    async def go() -> None:
        await mn.hold(A, B)
        mn.ptrs.update({A, B})
        mn.lost = lost
        mn.procs[1].on_release = lambda: mn.arrives(A)
        await mn.mgr.release(A)
        await mn.mgr.settled()

    asyncio.run(go())


def test_a_release_the_owner_shows_is_not_sent_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mn = Mn(tmp_path, monkeypatch)
    release_with(mn, lost=0)
    assert mn.resent == [] and mn.ptrs == {B}
    assert [(r["addr"], r["resent"]) for r in mn.events("release_confirmed")] == [(str(A), 0)]


def test_a_lost_release_is_sent_again_until_the_owner_ends_the_lease(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(addresses_module, "RELEASE_CONFIRM_S", 0.01)
    mn = Mn(tmp_path, monkeypatch)
    release_with(mn, lost=2)  # udhcpc's RELEASE and our first copy go missing
    assert mn.resent == [A, A] and mn.ptrs == {B}
    assert [r["n"] for r in mn.events("release_resent")] == [1, 2]
    assert [(r["addr"], r["resent"]) for r in mn.events("release_confirmed")] == [(str(A), 2)]
    assert mn.mgr.addresses() == [B]  # the address was off the interface all along


def test_resending_is_bounded_and_a_send_error_is_not_raised(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(addresses_module, "RELEASE_CONFIRM_S", 0.01)
    mn = Mn(tmp_path, monkeypatch)
    sent = mn.resend

    def flaky(held: Held, address: IPv4Address) -> None:
        sent(held, address)
        raise OSError("Network is unreachable")

    mn.mgr.resend = flaky
    release_with(mn, lost=10)  # the owner is out of reach: its expiry ends the lease
    assert mn.resent == [A] * RELEASE_RESENDS and mn.ptrs == {A, B}
    assert mn.events("release_confirmed") == [] and mn.events("release_resent") == []
    assert [r["addr"] for r in mn.events("release_unconfirmed")] == [str(A)]


def test_the_release_sent_again_is_one_the_owner_ends_the_lease_on() -> None:
    from tests.unit.test_dhcpd import AR1, CHADDR, CID, Ar, Clock, bind

    ar1 = Ar(AR1, "ar1", Clock())
    address = bind(ar1)
    data = release_message(CHADDR, CID, address, AR1)
    msg = DhcpMessage.unpack(data)
    assert (msg.ciaddr, msg.server_id) == (address, AR1)
    # From the MN's newest address: the released one is off its interface by then.
    assert ar1.server.handle(data, IPv4Address("10.64.0.101"), AR1, 7) == []
    assert ar1.hooks.ended_calls == [(address, "mn3.example", "release")]


def test_renewal_is_asked_at_the_servers_t1_for_leases_udhcpc_would_stretch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mn = Mn(tmp_path, monkeypatch)

    async def go() -> None:
        mn.start(1)
        mn.start(2)
        mn.start(3)
        await mn.lease(1, A, "10.255.0.1", lease="1")  # udhcpc would renew at 15 s
        await mn.lease(2, B, "10.255.0.1", lease="1")
        await mn.lease(3, C, "10.255.0.1", lease="3600")  # udhcpc's own T1 is the server's
        assert mn.mgr.held[3].renew_timer is None
        await mn.mgr.on_event(2, "deconfig", {})  # a lease gone is not renewed
        await asyncio.sleep(0.7)
        assert mn.procs[1].signals == [signal.SIGUSR1] and mn.mgr.held[1].renew_timer is None
        await mn.lease(1, A, "10.255.0.1", event="renew", lease="1")  # the next T1
        assert mn.mgr.held[1].renew_timer is not None
        await mn.mgr.close()  # stopping the client ends its timer
        await asyncio.sleep(0.7)
        assert mn.procs[1].signals == [signal.SIGUSR1, signal.SIGCONT, signal.SIGTERM]
        assert mn.procs[2].signals == [signal.SIGCONT, signal.SIGTERM]

    asyncio.run(go())
    assert [r["addr"] for r in mn.events("dhcp_renew_requested")] == [str(A)]


def test_the_hook_starts_no_interpreter_for_a_clients_first_deconfig(tmp_path: Path) -> None:
    """The rendered udhcpc hook, run as udhcpc runs it: the deconfig udhcpc starts with,
    before any lease, ends in the shell; once bound, every event reaches the agent."""
    from topologies.render.configs import render

    calls = tmp_path / "calls"
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    fake.chmod(0o755)
    hook = tmp_path / "hook"
    hook.write_text(render("dhcp/udhcpc.hook.j2", {
        "name": "mn3", "dhcp": {"python": str(fake), "root": str(tmp_path)}}))
    mark = tmp_path / "udhcpc-1.bound"

    def run(event: str, **env: str) -> list[str]:
        subprocess.run(["sh", str(hook), event], check=True, env={
            "PATH": "/usr/bin:/bin", "FLATARCH_LEASE_SERIAL": "1", **env})
        return calls.read_text().splitlines() if calls.exists() else []

    assert run("deconfig", FLATARCH_LEASE_MARK=str(mark)) == []
    assert run("bound", FLATARCH_LEASE_MARK=str(mark)) == ["-S -m agents.dhcp_hook bound"]
    assert mark.exists()
    assert run("deconfig", FLATARCH_LEASE_MARK=str(mark))[-1] == \
        "-S -m agents.dhcp_hook deconfig"
    # A client started without the mark's name (an older agent): every event, as before.
    mark.unlink()
    assert run("deconfig")[-1] == "-S -m agents.dhcp_hook deconfig"
