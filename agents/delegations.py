"""The MN's IPv6 prefixes by DHCPv6 prefix delegation (issue 18, draft 2.3): one standard client
(ISC dhclient -6 -P) per delegated /64, the first address of each /64 on the interface and in
the MN's AAAA set, newest first, and release by ``dhclient -r``.

The client's DUID carries a proof of the MN's session at the AR it is on (agents/linkproof.py),
and a session ends with every authentication. So before a client next renews, it is started
again with the current session's proof: dhclient, started on a lease it holds, sends a Rebind
(its INIT-REBOOT for a prefix), which the AR the MN is on relays to the /64's owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

from .addresses import AddressError, die_with_parent
from .contract import Event
from .handoff import EventLog

log = logging.getLogger(__name__)

# How long before the client's own renewal time (T1) a client whose proof is stale is started
# again: its Rebind then renews the /64 in place of the Renew it would have sent.
RESTART_LEAD_S = 1.0
DHCLIENT = "dhclient"
RELEASE_WAIT_S = 15.0  # dhclient -r's four retransmissions of a Release fit in it
# The events the hook reports (configs/dhcp/dhclient6.hook.j2 passes only these).
HELD_EVENTS = ("BOUND6", "RENEW6", "REBIND6")
GONE_EVENTS = ("EXPIRE6", "RELEASE6")


def duid_statement(duid: bytes) -> str:
    """The lease file's ``default-duid`` line, every octet escaped: dhclient sends it."""
    return 'default-duid "' + "".join(f"\\{b:03o}" for b in duid) + '";'


def with_duid(lease_text: str, duid: bytes) -> str:
    """A dhclient lease file with its default DUID replaced and its leases kept."""
    kept = [line for line in lease_text.splitlines() if not line.startswith("default-duid")]
    return "\n".join([duid_statement(duid), *kept]) + "\n"


def address_of(prefix: IPv6Network) -> IPv6Address:
    """The address the MN holds from a prefix: its first (as a planned prefix's, draft 2.3)."""
    return prefix.network_address + 1


@dataclass
class Delegation:
    """One delegated /64 and the dhclient that holds it."""

    serial: int
    proc: asyncio.subprocess.Process | None = None
    prefix: IPv6Network | None = None
    bound_at: float = 0.0  # monotonic: the recency order
    expires: float = 0.0  # wall clock, for the status
    renew_at: float = 0.0  # monotonic: the client's T1
    proof_of: int = -1  # the authentication whose session the client's DUID proves
    renewals: int = 0
    restarts: int = 0
    bound: asyncio.Event = field(default_factory=asyncio.Event)
    timer: asyncio.TimerHandle | None = None


Runner = Callable[[list[list[str]]], Awaitable[None]]


@dataclass
class DelegationManager:
    name: str  # the MN's DNS name
    ifname: str
    gateway: IPv6Address
    hook: Path
    control: Path
    rundir: Path
    events: EventLog
    duid: Callable[[int], bytes | None]  # lease serial -> its DUID with the session's proof
    epoch: Callable[[], int]  # which authentication the current session is
    register: Callable[[], Awaitable[None]]  # DNS: our A and AAAA sets, as they are now
    ip_batch: Runner
    held: dict[int, Delegation] = field(default_factory=dict)
    dhclient: str = DHCLIENT
    paused: bool = False  # outside the AS: the clients hold still, and none is restarted
    _serial: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    # --- what the rest of the agent asks ------------------------------------------------------

    def prefixes(self) -> list[IPv6Network]:
        """Every /64 we hold, the most recently delegated first."""
        bound = sorted((d for d in self.held.values() if d.prefix is not None),
                       key=lambda d: -d.bound_at)
        return [d.prefix for d in bound if d.prefix is not None]

    def addresses(self) -> list[IPv6Address]:
        return [address_of(p) for p in self.prefixes()]

    def _files(self, serial: int) -> tuple[Path, Path, Path]:
        return (self.rundir / f"dhclient6-{serial}.leases",
                self.rundir / f"dhclient6-{serial}.pid", self.rundir / f"dhclient6-{serial}.log")

    def _argv(self, serial: int, *extra: str) -> list[str]:
        lease, pid, _ = self._files(serial)
        return [self.dhclient, "-6", "-P", "-v", "-lf", str(lease), "-pf", str(pid),
                "-sf", str(self.hook),
                # dhclient clears its script's environment; -e puts these back.
                "-e", f"FLATARCH_MN_SOCK={self.control}", "-e", f"FLATARCH_LEASE_SERIAL={serial}",
                *extra, self.ifname]

    def _write_duid(self, serial: int) -> None:
        duid = self.duid(serial)
        if duid is None:
            raise AddressError("not authenticated: no session for the DHCPv6 DUID to prove")
        lease = self._files(serial)[0]
        text = lease.read_text() if lease.exists() else ""
        lease.write_text(with_duid(text, duid))

    async def _start(self, d: Delegation) -> None:
        self._write_duid(d.serial)
        d.proof_of = self.epoch()
        log_file = self._files(d.serial)[2].open("ab")
        try:
            d.proc = await asyncio.create_subprocess_exec(
                *self._argv(d.serial, "-d"), stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file, stderr=log_file, preexec_fn=die_with_parent)
        finally:
            log_file.close()

    async def acquire(self, timeout: float = 15.0) -> IPv6Network:
        """One more dhclient, and wait until it holds a /64 from the AR we are on."""
        self._serial += 1
        d = self.held[self._serial] = Delegation(self._serial)
        await self._start(d)
        assert d.proc is not None
        self.events(Event.DHCP6_STARTED, serial=d.serial, pid=d.proc.pid)
        try:
            await asyncio.wait_for(d.bound.wait(), timeout)
        except TimeoutError:
            await self._stop(d)
            self.held.pop(d.serial, None)
            raise AddressError(f"no DHCPv6 delegation within {timeout:.0f} s (see "
                               f"{self._files(d.serial)[2]})") from None
        assert d.prefix is not None
        return d.prefix

    def authenticated(self) -> None:
        """A new session: each client's proof is stale from now on. A client due to renew
        within RESTART_LEAD_S is started again now, the others just before they renew."""
        now = asyncio.get_running_loop().time()
        for d in self.held.values():
            if d.prefix is not None and not self.paused and now >= d.renew_at - RESTART_LEAD_S:
                self._spawn(self._restart(d, "renewal due"))

    def _pace(self, d: Delegation, renew_s: float) -> None:
        if d.timer is not None:
            d.timer.cancel()
        loop = asyncio.get_running_loop()
        d.renew_at = loop.time() + renew_s
        d.timer = loop.call_at(d.renew_at - RESTART_LEAD_S, self._before_renewal, d)

    def _before_renewal(self, d: Delegation) -> None:
        d.timer = None
        if d.prefix is not None and not self.paused and d.proof_of != self.epoch():
            self._spawn(self._restart(d, "stale proof"))

    async def _restart(self, d: Delegation, why: str) -> None:
        """The client again on the lease it holds, with the proof of the session we have."""
        if d.proof_of == self.epoch():
            return
        await self._stop(d, cancel_timer=False)
        if self.held.get(d.serial) is not d:
            return  # released meanwhile
        try:
            await self._start(d)
        except (AddressError, OSError) as exc:
            log.warning("DHCPv6 client %d not restarted: %s", d.serial, exc)
            return
        d.restarts += 1
        self.events(Event.DHCP6_RESTARTED, serial=d.serial, prefix=d.prefix, reason=why,
                    pid=d.proc.pid if d.proc else None)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def release(self, prefix: IPv6Network) -> None:
        """Give ``prefix`` back: out of DNS first, then off the interface; then, in the
        background (a handoff must not wait on a slow owner), ``dhclient -r``, which stops
        the running client by its pid file and sends the Release, relayed if need be, and
        retransmits it until the owner answers (RFC 8415 18.2.7)."""
        d = next((x for x in self.held.values() if x.prefix == prefix), None)
        if d is None:
            raise AddressError(f"{prefix} is not held")
        self._write_duid(d.serial)  # the Release proves the session we have now
        del self.held[d.serial]
        if d.timer is not None:
            d.timer.cancel()
            d.timer = None
        await self.register()
        await self._unconfigure(prefix)
        self._spawn(self._send_release(d, prefix))

    async def _send_release(self, d: Delegation, prefix: IPv6Network) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self._argv(d.serial, "-r"), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            preexec_fn=die_with_parent)
        try:
            _, err = await asyncio.wait_for(proc.communicate(), RELEASE_WAIT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            err = f"no answer to the Release within {RELEASE_WAIT_S:.0f} s".encode()
        await self._stop(d)
        # dhclient -v logs to stderr: what it said matters only when it failed.
        why = err.decode(errors="replace").strip()[-200:] if proc.returncode else None
        self.events(Event.DELEGATION_RELEASED, serial=d.serial, prefix=prefix,
                    rc=proc.returncode, error=why)

    async def settled(self) -> None:
        """Wait until every release and restart under way has ended."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def in_use(self, table: dict[Any, int]) -> dict[IPv6Network, int]:
        """Connections per /64 we hold, from the socket table's counts per local address."""
        return {p: sum(n for a, n in table.items()
                       if isinstance(a, IPv6Address) and a in p) for p in self.prefixes()}

    async def tidy(self, sockets: Callable[[], dict[Any, int]]) -> list[IPv6Network]:
        """Release every /64 but the newest that no connection uses (draft 2.3)."""
        held = self.prefixes()
        if len(held) < 2:
            return []
        use = self.in_use(sockets())
        gone = [p for p in held[1:] if use.get(p, 0) == 0]
        for p in gone:
            await self.release(p)
        return gone

    # --- dhclient's events (through agents/dhcp_hook.py) --------------------------------------

    async def on_event(self, serial: int, event: str, env: dict[str, str]) -> dict[str, Any]:
        d = self.held.get(serial)
        if d is None:
            # A client we released or stopped, reporting its end: nothing to act on.
            return {"ok": True, "ignored": f"no DHCPv6 client {serial}"}
        if event in HELD_EVENTS:
            try:
                prefix = IPv6Network(env["new_ip6_prefix"])
                life = int(env.get("new_max_life") or 0)
                renew = int(env.get("new_renew") or 0)
            except (KeyError, ValueError) as exc:
                return {"ok": False, "error": f"{event}: bad lease variables: {exc}"}
            if life == 0:
                return await self._lost(d, f"{event} with lifetime 0")
            fresh = d.prefix != prefix
            if fresh and d.prefix is not None:
                await self._unconfigure(d.prefix)
            d.prefix, d.expires = prefix, time.time() + life
            self._pace(d, renew if renew > 0 else life / 2)
            if fresh:
                d.bound_at = time.monotonic()
                await self._configure()
                await self.register()
                self.events(Event.DELEGATED, serial=serial, prefix=prefix, how=event, life=life)
            else:
                d.renewals += 1
                self.events(Event.DELEGATION_RENEWED, serial=serial, prefix=prefix, how=event,
                            life=life)
            d.bound.set()
        elif event in GONE_EVENTS and d.prefix is not None:
            return await self._lost(d, event)
        return {"ok": True}

    async def _lost(self, d: Delegation, why: str) -> dict[str, Any]:
        """The /64 is gone (expired, or its owner gave lifetimes 0 at the renewal limit): off
        the interface and out of DNS; a fresh client asks the AR we are on for another, as
        the IPv4 side does after a NAK (agents/addresses.py)."""
        lost = d.prefix
        d.prefix = None
        if lost is not None:
            await self._unconfigure(lost)
            await self.register()
        self.events(Event.DELEGATION_LOST, serial=d.serial, prefix=lost, reason=why)

        async def again() -> None:
            await self._stop(d)
            self.held.pop(d.serial, None)
            with contextlib.suppress(FileNotFoundError):
                self._files(d.serial)[0].unlink()
            try:
                await self.acquire()
            except AddressError as exc:
                log.warning("no fresh delegation after losing %s: %s", lost, exc)

        self._spawn(again())
        return {"ok": True}

    # --- the interface ------------------------------------------------------------------------

    async def _configure(self) -> None:
        held = self.addresses()
        # The newest /64's address is the source of new connections; older ones keep theirs.
        await self.ip_batch([
            *(["addr", "replace", f"{a}/128", "dev", self.ifname, "nodad"] for a in held),
            ["route", "replace", "default", "via", str(self.gateway), "dev", self.ifname,
             "src", str(held[0])],
        ])

    async def _unconfigure(self, prefix: IPv6Network) -> None:
        try:
            await self.ip_batch([["addr", "del", f"{address_of(prefix)}/128", "dev",
                                  self.ifname]])
        except AddressError as exc:
            log.info("%s", exc)
        if self.prefixes():
            await self._configure()
        else:
            with contextlib.suppress(AddressError):
                await self.ip_batch([["route", "del", "::/0", "dev", self.ifname]])

    async def _stop(self, d: Delegation, cancel_timer: bool = True) -> None:
        if cancel_timer and d.timer is not None:
            d.timer.cancel()
            d.timer = None
        proc = d.proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGCONT)  # a paused client (outside the AS) acts on TERM
            proc.terminate()  # dhclient: stop, keeping the lease (no Release)
            try:
                await asyncio.wait_for(proc.wait(), 3.0)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        self._files(d.serial)[1].unlink(missing_ok=True)

    def pause(self) -> None:
        """Outside the AS no AR relays a renewal: the clients hold still (as udhcpc's), and
        none is started again until the MN is back and authenticated (``authenticated``)."""
        self.paused = True
        for d in self.held.values():
            if d.proc is not None and d.proc.returncode is None:
                d.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.paused = False
        for d in self.held.values():
            if d.proc is not None and d.proc.returncode is None:
                d.proc.send_signal(signal.SIGCONT)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for d in list(self.held.values()):
            await self._stop(d)

    def status(self) -> dict[str, Any]:
        return {
            "prefixes": [str(p) for p in self.prefixes()],
            "leases": [{"serial": d.serial, "prefix": str(d.prefix) if d.prefix else None,
                        "expires": round(d.expires, 3), "renewals": d.renewals,
                        "restarts": d.restarts, "proof_of": d.proof_of,
                        "pid": d.proc.pid if d.proc else None}
                       for d in self.held.values()],
        }


def parse_prefix(text: str) -> IPv6Network | None:
    """An IPv6 prefix given to the control socket's release, or None if ``text`` is not one."""
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError:
        return None
    return net if isinstance(net, IPv6Network) else None
