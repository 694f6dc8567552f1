"""The MN's addresses (draft 2.3): one standard DHCP client (busybox udhcpc) per address,
every held address registered in the MN's home DNS newest first, the kernel's socket table
to see which addresses connections use, and release of the ones none uses, sent again while
the owner shows no end of the lease (a DHCPRELEASE is never acknowledged).

A new address comes from the AR the MN is on (rotation); an old one is renewed by its own
client, unicast to the AR that assigned it, which the current AR relays (agents/dhcpd.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import ipaddress
import logging
import os
import secrets
import signal
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
import dns.reversename

from .dhcp import BOOTREQUEST, OPT_CLIENT_ID, OPT_SERVER_ID, DhcpMessage, MessageType
from .dhcpd import CLIENT_PORT, SERVER_PORT, make_client_id
from .dns import DnsError, DnsUpdater
from .handoff import EventLog

log = logging.getLogger(__name__)

# The hook's file for a client that has been bound: its first deconfig, before any lease,
# has nothing to undo and costs no interpreter start (configs/dhcp/udhcpc.hook.j2).
LEASE_MARK = "FLATARCH_LEASE_MARK"
ADDRESS_TTL = 5  # the MN's A records: short, so a rotation shows in DNS within seconds
_PR_SET_PDEATHSIG = 1
# A DHCPRELEASE is never answered (RFC 2131 4.4.6); the owner shows that it ended the lease by
# deleting the PTR it set. While the PTR stays, the RELEASE is sent again, this many times.
RELEASE_RESENDS = 2
RELEASE_CONFIRM_S = 1.0  # how long one RELEASE is given to show at the owner
UDHCPC_MIN_LEASE = 30  # busybox udhcpc takes a shorter lease as this long, and renews at half
_SIOCGIFHWADDR = 0x8927


class AddressError(Exception):
    """An address operation failed; the message says which and why."""


def release_message(chaddr: bytes, client_id: bytes, address: IPv4Address,
                    server: IPv4Address) -> bytes:
    """The DHCPRELEASE udhcpc sends (RFC 2131 4.4.6): ciaddr, the client identifier and the
    server identifier, from a fresh transaction ID."""
    return DhcpMessage(BOOTREQUEST, secrets.randbits(32), chaddr, MessageType.RELEASE,
                       ciaddr=address, options={OPT_CLIENT_ID: client_id,
                                                OPT_SERVER_ID: server.packed}).pack()


def hardware_address(ifname: str) -> bytes:
    """The interface's MAC, asked of this network namespace (sysfs may show another's)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        info = fcntl.ioctl(s.fileno(), _SIOCGIFHWADDR, struct.pack("256s", ifname.encode()))
    return info[18:24]


def send_release(ifname: str, source: IPv4Address, data: bytes, server: IPv4Address) -> None:
    """One RELEASE to the server, as udhcpc sends it: UDP from port 68 out of ``ifname``. The
    released address is off the interface by now, so it leaves from ``source``; the AR takes
    every DHCP datagram from its access link (configs/nft/ar.nft.j2), whatever the source."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        # udhcpc's clients may hold port 68 open (SO_REUSEADDR) while they renew.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        s.bind((str(source), CLIENT_PORT))
        s.sendto(data, (str(server), SERVER_PORT))


async def ptr_at_primary(updater: DnsUpdater, address: IPv4Address) -> bool | None:
    """Whether the primary still has a PTR for ``address``: the owner deletes it when the lease
    ends. Asked of the primary, not a resolver, whose cache would answer for seconds after.
    None when the primary gives no usable answer."""
    query = dns.message.make_query(dns.reversename.from_address(str(address)),
                                   dns.rdatatype.PTR)
    try:
        answer = await dns.asyncquery.udp(query, updater.server, 1.0, updater.port,
                                          source=updater.source() if updater.source else None)
    except (dns.exception.DNSException, OSError):
        return None
    if answer.rcode() == dns.rcode.NXDOMAIN:
        return False
    if answer.rcode() != dns.rcode.NOERROR:
        return None
    return any(rrset.rdtype == dns.rdatatype.PTR for rrset in answer.answer)


def die_with_parent() -> None:
    """A child's pre-exec: a DHCP client must not outlive the agent that owns its address."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


# The kernel's socket tables (proc(5)), one per protocol and family.
PROC_NET_TABLES = ("tcp", "udp", "tcp6", "udp6")
# States that hold no connection, as /proc/net prints them (include/net/tcp_states.h):
# TIME_WAIT, CLOSE (an unconnected UDP socket too), CLOSE_WAIT and LISTEN.
_IDLE_STATES = frozenset({0x06, 0x07, 0x08, 0x0A})


def _proc_address(text: str) -> IPv4Address | IPv6Address:
    """A /proc/net address: the in-memory (network-order) words printed as host-order hex."""
    if len(text) not in (8, 32):
        raise ValueError(f"not a /proc/net address: {text!r}")
    raw = b"".join(int(text[i:i + 8], 16).to_bytes(4, sys.byteorder)
                   for i in range(0, len(text), 8))
    return IPv4Address(raw) if len(raw) == 4 else IPv6Address(raw)


def parse_proc_net(text: str, exclude_inodes: frozenset[int] = frozenset()
                   ) -> dict[IPv4Address | IPv6Address, int]:
    """Connections per local address in one /proc/net/{tcp,udp,tcp6,udp6} table, leaving out
    the sockets in ``exclude_inodes`` (the agent's own resolver and AUTH sockets are not
    connections an application holds) and any line that is not a socket's."""
    out: dict[IPv4Address | IPv6Address, int] = {}
    for line in text.splitlines():
        cols = line.split()
        # sl, local, remote, state, queues, timer, retransmits, uid, timeout, inode, ...
        if len(cols) < 10 or not cols[0].endswith(":"):
            continue
        try:
            host = cols[1].split(":", 1)[0]
            state, inode = int(cols[3], 16), int(cols[9])
            a = _proc_address(host)
        except ValueError:
            continue
        if state in _IDLE_STATES or (inode and inode in exclude_inodes):
            continue
        if isinstance(a, IPv6Address):
            if a.is_link_local:
                continue  # the link's own, not an address the MN was given
            # An IPv4 connection to a dual-stack socket (iperf3 -s, for one) shows as
            # ::ffff:a.b.c.d: it uses the IPv4 address as much as any other.
            a = a.ipv4_mapped or a
        out[a] = out.get(a, 0) + 1
    return out


def own_socket_inodes() -> frozenset[int]:
    """The inodes of this process's sockets. Python opens them non-inheritable (PEP 446), so
    no child of the agent shares one."""
    inodes: set[int] = set()
    with contextlib.suppress(FileNotFoundError):
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/self/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return frozenset(inodes)


def socket_table(net: Path = Path("/proc/thread-self/net")
                 ) -> dict[IPv4Address | IPv6Address, int]:
    """This namespace's connections per local address, the agent's own excepted. Read from
    the kernel's tables of the calling thread's namespace: `ss -p` would read every
    process's descriptors to name the owners (80 ms a call here, once per rotation)."""
    mine = own_socket_inodes()
    out: dict[IPv4Address | IPv6Address, int] = {}
    for name in PROC_NET_TABLES:
        try:
            text = (net / name).read_text()
        except FileNotFoundError:
            continue  # a kernel without IPv6 has no tcp6 table
        except OSError as exc:
            raise AddressError(f"{net / name}: {exc}") from exc
        for a, n in parse_proc_net(text, mine).items():
            out[a] = out.get(a, 0) + n
    return out


@dataclass
class Held:
    """One lease and the udhcpc process that holds it."""

    serial: int
    proc: asyncio.subprocess.Process
    address: IPv4Address | None = None
    server: IPv4Address | None = None
    bound_at: float = 0.0  # when this address was first bound: the recency order
    expires: float = 0.0
    renewals: int = 0
    naks: int = 0
    bound: asyncio.Event = field(default_factory=asyncio.Event)
    renew_timer: asyncio.TimerHandle | None = None  # our T1, where udhcpc's would be late


Runner = Callable[[list[str]], Awaitable[None]]


def _signal(held: Held, sig: int) -> bool:
    """Signal a lease's client; False if it has exited (it may have died between our
    look at its return code and the signal: a busy machine reaps late)."""
    if held.proc.returncode is not None:
        return False
    try:
        held.proc.send_signal(sig)
    except ProcessLookupError:
        return False
    return True


async def run_ip_batch(commands: list[list[str]]) -> None:
    """Several iproute2 commands in one process: one start-up instead of one each."""
    proc = await asyncio.create_subprocess_exec(
        "ip", "-batch", "-", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate("".join(" ".join(c) + "\n" for c in commands).encode())
    if proc.returncode != 0:
        raise AddressError(f"ip -batch: {err.decode().strip()}")


async def run_ip(argv: list[str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        "ip", *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise AddressError(f"ip {' '.join(argv)}: {err.decode().strip()}")


@dataclass
class AddressManager:
    name: str  # the MN's DNS name
    ifname: str
    gateway: str
    link_local: IPv4Address
    hook: Path
    control: Path  # the agent's control socket, which the hook talks to
    rundir: Path
    updater: DnsUpdater | None
    events: EventLog
    ip: Runner = run_ip
    ip_batch: Callable[[list[list[str]]], Awaitable[None]] = run_ip_batch
    sockets: Callable[[], dict[IPv4Address | IPv6Address, int]] = socket_table
    held: dict[int, Held] = field(default_factory=dict)
    home_agent: str | None = None
    dns_errors: int = 0
    care_of: IPv4Address | None = None  # outside the AS (draft 2.4)
    care_of_gateway: str | None = None
    # How the owner's end of a lease is seen, and how a RELEASE is sent again (tests replace
    # them); by default the PTR at the primary, and a datagram like udhcpc's.
    ptr_held: Callable[[IPv4Address], Awaitable[bool | None]] | None = None
    resend: Callable[[Held, IPv4Address], None] | None = None
    confirm_interval: float = 0.1
    # The client identifier's proof for a lease serial, from our session at the AR we are on
    # (agents/linkproof.py): the AR serves only a station that proves the session.
    link_proof: Callable[[int], bytes | None] | None = None
    # A DHCPv6 MN's addresses (agents/delegations.py), newest first: its AAAA set is written
    # with its A set, under one order record.
    addresses6: Callable[[], list[IPv6Address]] | None = None
    # The zone our forward name lives in: a named MN's own (its name), a population MN's
    # its home domain's one zone (issue 15).
    zone: str | None = None
    # Passed to the event script beside the socket and serial: a population process names
    # the MN an event is for (agents/population.py).
    hook_env: dict[str, str] = field(default_factory=dict)
    _restarts: set[asyncio.Task[None]] = field(default_factory=set)
    _care_of_bound: asyncio.Event = field(default_factory=asyncio.Event)
    _confirming: set[asyncio.Task[None]] = field(default_factory=set)
    _serial: int = 0

    # --- what the rest of the agent asks -------------------------------------------------------

    def addresses(self) -> list[IPv4Address]:
        """Every address we hold, the most recently allocated first (draft 2.3)."""
        bound = [h for h in self.held.values() if h.address is not None]
        return [h.address for h in sorted(bound, key=lambda h: -h.bound_at)
                if h.address is not None]

    def source(self) -> IPv4Address:
        held = self.addresses()
        return held[0] if held else self.link_local

    async def acquire(self, timeout: float = 15.0) -> IPv4Address:
        """Start one more DHCP client and wait until it holds an address."""
        self._serial += 1
        serial = self._serial
        cid = make_client_id(self.name, serial,
                             self.link_proof(serial) if self.link_proof is not None else None)
        argv = [
            "busybox", "udhcpc", "-f", "-i", self.ifname,
            "-C", "-x", f"0x3d:{cid.hex()}",  # our identifier names the MN and the lease
            "-O", "224",  # the Home Agent's name (agents/dhcp.py OPT_HOME_AGENT)
            "-s", str(self.hook), "-t", "5", "-T", "1", "-A", "2",
            "-p", str(self.rundir / f"udhcpc-{serial}.pid"),
        ]
        log_file = (self.rundir / f"udhcpc-{serial}.log").open("ab")
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "FLATARCH_MN_SOCK": str(self.control),
               "FLATARCH_LEASE_SERIAL": str(serial), LEASE_MARK: str(self._mark(serial)),
               **self.hook_env}
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=log_file, env=env,
            preexec_fn=die_with_parent)
        log_file.close()
        held = self.held[serial] = Held(serial, proc)
        self.events("dhcp_started", serial=serial, pid=proc.pid)
        try:
            await asyncio.wait_for(held.bound.wait(), timeout)
        except TimeoutError:
            await self._stop(held)
            self.held.pop(serial, None)
            raise AddressError(f"no DHCP lease within {timeout:.0f} s "
                               f"(see {self.rundir}/udhcpc-{serial}.log)") from None
        except asyncio.CancelledError:
            # Given up (the MN moved on): a client left running would ask the next AR
            # with a proof of the session it had here.
            await self._stop(held)
            self.held.pop(serial, None)
            raise
        assert held.address is not None
        return held.address

    async def release(self, address: IPv4Address) -> None:
        """Give ``address`` back: out of DNS first, then DHCPRELEASE, then off the interface;
        then, in the background, the owner's confirmation (``_confirm_release``)."""
        held = next((h for h in self.held.values() if h.address == address), None)
        if held is None:
            raise AddressError(f"{address} is not held")
        rest = [a for a in self.addresses() if a != address]
        await self._register(rest)
        held.bound.clear()
        if _signal(held, signal.SIGUSR2):  # udhcpc: release the lease
            try:
                # The release ends in a deconfig event, which takes the address off.
                await asyncio.wait_for(self._until_unbound(held), 5.0)
            except TimeoutError:
                log.warning("udhcpc %d did not confirm the release of %s", held.serial, address)
        await self._stop(held)
        self.held.pop(held.serial, None)
        if held.address is not None:
            await self._unconfigure(held.address)
        self.events("released", addr=address, serial=held.serial)
        # Not under the caller's lock: a handoff must not wait on an owner that is slow to
        # show the end of a lease.
        task = asyncio.get_running_loop().create_task(self._confirm_release(held, address))
        self._confirming.add(task)
        task.add_done_callback(self._confirming.discard)

    async def _confirm_release(self, held: Held, address: IPv4Address) -> None:
        """Wait toward a deadline for the owner to end the lease, and send the RELEASE again
        while it has not: one lost on the way (a radio, a relay, a client not in a state to
        send it) would leave the lease to run out at the owner, which reclaims it only then."""
        check = self.ptr_held
        if check is None and self.updater is not None:
            updater = self.updater

            async def check_primary(a: IPv4Address) -> bool | None:
                return await ptr_at_primary(updater, a)

            check = check_primary
        if check is None or held.server is None:
            return  # nothing shows the owner's side: its expiry ends the lease
        loop = asyncio.get_running_loop()
        for resent in range(RELEASE_RESENDS + 1):
            if resent:
                try:
                    (self.resend or self._resend)(held, address)
                    self.events("release_resent", addr=address, serial=held.serial, n=resent)
                except OSError as exc:
                    log.warning("sending the RELEASE of %s again: %s", address, exc)
            deadline = loop.time() + RELEASE_CONFIRM_S
            while True:
                if await check(address) is False:
                    self.events("release_confirmed", addr=address, serial=held.serial,
                                resent=resent)
                    return
                if loop.time() >= deadline:
                    break
                await asyncio.sleep(self.confirm_interval)
        log.warning("the owner %s did not end the lease of %s; it reclaims it at expiry",
                    held.server, address)
        self.events("release_unconfirmed", addr=address, serial=held.serial,
                    resent=RELEASE_RESENDS)

    def _resend(self, held: Held, address: IPv4Address) -> None:
        assert held.server is not None
        data = release_message(hardware_address(self.ifname),
                               make_client_id(self.name, held.serial), address, held.server)
        send_release(self.ifname, self.source(), data, held.server)

    async def settled(self) -> None:
        """Wait until every release has been confirmed or given up on."""
        while self._confirming:
            await asyncio.gather(*self._confirming, return_exceptions=True)

    async def _until_unbound(self, held: Held) -> None:
        while held.address is not None:
            await asyncio.sleep(0.02)

    def in_use(self) -> dict[IPv4Address, int]:
        table = self.sockets()
        return {a: table.get(a, 0) for a in self.addresses()}

    async def tidy(self) -> list[IPv4Address]:
        """Release every address but the newest that no connection uses."""
        held = self.addresses()
        if len(held) < 2:
            return []
        # In a thread: a population's namespace holds a thousand MNs' sockets, and its loop
        # serves them meanwhile.
        use = await asyncio.to_thread(self.in_use)
        gone = [a for a in held[1:] if use.get(a, 0) == 0]
        for a in gone:
            await self.release(a)
        return gone

    # --- udhcpc events (through agents/dhcp_hook.py) -------------------------------------------

    # --- outside the AS (draft 2.4): a care-of address, and home leases held still ------------

    def pause(self) -> None:
        """Stop the home leases' clients: outside the AS no AR relays their renewals, and
        their rebinding broadcasts would meet the visited network's server."""
        for h in self.held.values():
            _signal(h, signal.SIGSTOP)

    def resume(self) -> None:
        for h in self.held.values():
            _signal(h, signal.SIGCONT)

    async def acquire_care_of(self, timeout: float = 10.0) -> IPv4Address:
        """A care-of address from the visited network's DHCP server, by a one-shot client."""
        self._care_of_bound.clear()
        argv = ["busybox", "udhcpc", "-f", "-q", "-n", "-i", self.ifname, "-s", str(self.hook),
                "-t", "5", "-T", "1"]
        log_file = (self.rundir / "udhcpc-care-of.log").open("ab")
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "FLATARCH_MN_SOCK": str(self.control),
               "FLATARCH_LEASE_SERIAL": "0", **self.hook_env}
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=log_file, env=env,
            preexec_fn=die_with_parent)
        log_file.close()
        try:
            await asyncio.wait_for(self._care_of_bound.wait(), timeout)
        except TimeoutError:
            raise AddressError(f"no care-of address within {timeout:.0f} s") from None
        finally:
            if proc.returncode is None:
                try:
                    await asyncio.wait_for(proc.wait(), 3.0)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
        assert self.care_of is not None
        return self.care_of

    async def drop_care_of(self) -> None:
        if self.care_of is not None:
            try:
                await self.ip(["addr", "del", f"{self.care_of}/32", "dev", self.ifname])
            except AddressError as exc:
                log.info("%s", exc)
            self.care_of = None
        await self._default_route()

    async def _on_care_of(self, event: str, env: dict[str, str]) -> dict[str, Any]:
        if event != "bound":
            return {"ok": True}
        try:
            address = ipaddress.IPv4Address(env["ip"])
            gateway = str(ipaddress.IPv4Address(env["router"].split()[0]))
        except (KeyError, ValueError, IndexError) as exc:
            return {"ok": False, "error": f"care-of lease: {exc}"}
        self.care_of, self.care_of_gateway = address, gateway
        # One process for the three changes: the MN is out of reach until they are done.
        await self.ip_batch([
            ["addr", "replace", f"{address}/32", "dev", self.ifname],
            ["route", "replace", f"{gateway}/32", "dev", self.ifname, "scope", "link"],
            ["route", "replace", "default", "via", gateway, "dev", self.ifname,
             "src", str(address)],
        ])
        self.events("care_of", addr=address, gateway=gateway)
        self._care_of_bound.set()
        return {"ok": True}

    async def on_event(self, serial: int, event: str, env: dict[str, str]) -> dict[str, Any]:
        if serial == 0:
            return await self._on_care_of(event, env)
        held = self.held.get(serial)
        if held is None:
            return {"ok": False, "error": f"no DHCP client {serial}"}
        if event in ("bound", "renew"):
            try:
                address = ipaddress.IPv4Address(env["ip"])
                server = ipaddress.IPv4Address(env["serverid"]) if env.get("serverid") else None
                lease = int(env.get("lease") or 0)
            except (KeyError, ValueError) as exc:
                return {"ok": False, "error": f"{event}: bad lease variables: {exc}"}
            if env.get("opt224"):
                try:
                    self.home_agent = bytes.fromhex(env["opt224"]).decode("ascii")
                except (ValueError, UnicodeDecodeError):
                    log.warning("unusable Home Agent option %r", env["opt224"])
            fresh = held.address != address
            if fresh and held.address is not None:
                await self._unconfigure(held.address)
            held.address, held.server = address, server
            held.expires = time.time() + lease
            self._pace_renewal(held, lease)
            if fresh:
                held.bound_at = time.monotonic()  # the order, immune to clock steps
                await self._configure(address)
                await self._register(self.addresses())
            else:
                held.renewals += 1
            self.events("dhcp_" + event, serial=serial, addr=address, server=server,
                        lease=lease, home_agent=self.home_agent)
            held.bound.set()
        elif event == "deconfig":
            self._pace_renewal(held, 0)
            if held.address is not None:
                lost = held.address
                held.address = None
                # The lease is gone (NAK, expiry): the address no longer routes, so DNS is
                # updated from what remains, or at the next lease, which rewrites the set.
                await self._unconfigure(lost)
                if self.addresses():
                    await self._register(self.addresses())
                self.events("dhcp_deconfig", serial=serial, addr=lost)
                if self.link_proof is not None and held.bound.is_set():
                    self._restart(held)
        elif event == "nak":
            held.naks += 1
            self.events("dhcp_nak", serial=serial, addr=held.address, message=env.get("message"))
        elif event == "leasefail":
            self.events("dhcp_leasefail", serial=serial)
        return {"ok": True}

    def _pace_renewal(self, held: Held, lease: int) -> None:
        """Renew at the server's T1, half its lease (RFC 2131 4.4.5), not at udhcpc's: udhcpc
        stretches a lease under 30 s to 30 s, so it would renew a 20-s lease 5 s before the
        owner ends it, leaving no room for a stay outside the AS or a lost REQUEST."""
        if held.renew_timer is not None:
            held.renew_timer.cancel()
            held.renew_timer = None
        if 0 < lease < UDHCPC_MIN_LEASE:
            held.renew_timer = asyncio.get_running_loop().call_later(
                lease / 2, self._renew, held)

    def _renew(self, held: Held) -> None:
        held.renew_timer = None
        # udhcpc: renew now. A paused client (outside the AS) renews once resumed.
        if held.address is not None and _signal(held, signal.SIGUSR1):
            self.events("dhcp_renew_requested", serial=held.serial, addr=held.address)

    def _restart(self, held: Held) -> None:
        """A lease lost, not released (NAK, expiry): udhcpc would start over with its client
        identifier's proof, made for a session that may be gone (issue 19 defect 8); a fresh
        client proves the session we have now."""
        async def again() -> None:
            await self._stop(held)
            self.held.pop(held.serial, None)
            try:
                await self.acquire()
            except AddressError as exc:
                log.warning("no fresh lease after losing lease %d: %s", held.serial, exc)

        task = asyncio.ensure_future(again())
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    # --- the interface and DNS ------------------------------------------------------------------

    async def _configure(self, address: IPv4Address) -> None:
        await self.ip(["addr", "replace", f"{address}/32", "dev", self.ifname])
        await self._default_route()

    async def _unconfigure(self, address: IPv4Address) -> None:
        try:
            await self.ip(["addr", "del", f"{address}/32", "dev", self.ifname])
        except AddressError as exc:
            log.info("%s", exc)
        await self._default_route()

    async def _default_route(self) -> None:
        # New connections leave from the newest address; older ones keep theirs. Away from
        # the AS the care-of address owns the default route.
        held = self.addresses()
        if self.care_of is not None:
            return
        if held:
            await self.ip(["route", "replace", "default", "via", self.gateway, "dev",
                           self.ifname, "src", str(held[0])])
        else:
            with contextlib.suppress(AddressError):
                await self.ip(["route", "del", "default"])

    async def register(self) -> None:
        """DNS again from what we hold now (a DHCPv6 delegation came or went)."""
        await self._register(self.addresses())

    async def _register(self, addresses: list[IPv4Address]) -> None:
        if self.updater is None:
            return
        six = self.addresses6() if self.addresses6 is not None else None
        try:
            await self.updater.set_addresses(self.name, addresses, ADDRESS_TTL,
                                             zone=self.zone or self.name, addresses6=six)
            self.events("dns_registered", addrs=addresses,
                        **({"addrs6": six} if six is not None else {}))
        except DnsError as exc:
            # The lease stands; the next change registers the whole set again.
            self.dns_errors += 1
            log.warning("registering %s %s in DNS: %s", addresses, six or "", exc)
            self.events("dns_failed", addrs=addresses, error=str(exc))

    async def _stop(self, held: Held) -> None:
        self._pace_renewal(held, 0)
        # A paused client would not act on TERM.
        if _signal(held, signal.SIGCONT):
            with contextlib.suppress(ProcessLookupError):
                held.proc.terminate()
            try:
                await asyncio.wait_for(held.proc.wait(), 3.0)
            except TimeoutError:
                _signal(held, signal.SIGKILL)
                await held.proc.wait()
        (self.rundir / f"udhcpc-{held.serial}.pid").unlink(missing_ok=True)
        self._mark(held.serial).unlink(missing_ok=True)

    def _mark(self, serial: int) -> Path:
        return self.rundir / f"udhcpc-{serial}.bound"

    async def close(self) -> None:
        for task in list(self._confirming):
            task.cancel()
        await self.settled()
        for held in list(self.held.values()):
            await self._stop(held)

    def status(self) -> dict[str, Any]:
        return {
            "addresses": [str(a) for a in self.addresses()],
            "home_agent": self.home_agent,
            "leases": [{"serial": h.serial, "address": str(h.address) if h.address else None,
                        "server": str(h.server) if h.server else None,
                        "expires": round(h.expires, 3), "renewals": h.renewals,
                        "naks": h.naks, "pid": h.proc.pid}
                       for h in self.held.values()],
            "dns_errors": self.dns_errors,
            "care_of": str(self.care_of) if self.care_of else None,
        }
