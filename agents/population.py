"""Many mobile nodes in one process (issue 15): every MN keeps its own key pair, its own
address on its own interface (a veth end into the radio) and does the real one-message AUTH
to the AR the radio attached it to; what is shared is the process, its loop and its AR keys.
A DHCP member takes its addresses through its own udhcpc clients, as a named DHCP MN does.

Run in the population's namespace by the lab (topologies/lab/popnet.py); commands arrive on
its control socket: `attach` one MN after the radio moved it, `attach_all` at bring-up,
`rotate` a DHCP member's address (draft 2.3), `dhcp` from the udhcpc hook.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .addresses import AddressError, AddressManager, hardware_address
from .auth import AuthError, KeyStore, Peer, StaticDirectory
from .contract import OMIT_IF_NONE, Config, ContractError, Event, Layout
from .control import start_control
from .dhcp_hook import MN_NAME
from .dns import DnsError, DnsUpdater, TsigKey
from .handoff import EventLog
from .linkproof import link_key, link_proof
from .mn import load_key_list

log = logging.getLogger("agents.population")

AUTH_TIMEOUT_S = 0.3  # per try; an MN's own agent uses the same (agents/mn.py)
AUTH_RETRIES = 5
FIRST_AUTH_DEADLINE_S = 120.0  # the bound for a thousand MNs up and authenticated
FIRST_AUTH_PAUSE_S = 0.5  # before retrying an MN whose AR refused it right after bring-up
# A handoff whose AUTH failed (no answer within its tries, or a refusal) is not the end: a
# station keeps trying the cell it is on. Tried again after RECOVER_FIRST_S, doubling up to
# RECOVER_MAX_S, each wait jittered by RECOVER_JITTER so that an overload's failures do not
# come back in step; for RECOVER_FOR_S, or until the MN moves on.
RECOVER_FIRST_S = 1.0
RECOVER_MAX_S = 8.0
RECOVER_JITTER = 0.25
RECOVER_FOR_S = 120.0


@dataclass(frozen=True)
class Member(Config):
    """One MN of the population: its node name, DNS identity, interface and address."""

    name: str
    identity: str
    ifname: str
    home: str
    # Provisioned; None for a DHCP member, whose addresses come by udhcpc.
    address: ipaddress.IPv4Address | None = field(default=None, metadata=OMIT_IF_NONE)
    # Its planned /64 when the run is dual-stack (issue 18): claimed beside the /32, its
    # first address on the MN's interface. Omitted for an IPv4 run.
    prefix6: ipaddress.IPv6Network | None = field(default=None, metadata=OMIT_IF_NONE)
    # A DHCP member: the address it authenticates from before its first lease, its TSIG
    # key (for its forward name) and its routing table (rules by source, popnet.py).
    link_local: ipaddress.IPv4Address | None = field(default=None, metadata=OMIT_IF_NONE)
    tsig: Path | None = field(default=None, metadata=OMIT_IF_NONE)
    table: int = 0

    def __post_init__(self) -> None:
        if self.address is None and (self.link_local is None or self.tsig is None
                                     or not self.table):
            raise ContractError(f"population MN {self.name}: a DHCP member needs link_local, "
                                "tsig and table")


@dataclass(frozen=True)
class PopulationDhcp(Config):
    """What the DHCP members share: udhcpc's event script and the DNS primary their forward
    names are updated at, in their home domain's one zone."""

    hook: Path
    primary: str
    primary_port: int
    zone: str


@dataclass(frozen=True)
class PopulationConfig(Config):
    """agent.json of the population agent."""

    keys: Path  # {identity: PKCS#8 PEM}, 0600 (topologies/render/identities.py)
    ar_keys: Path  # the operator's AR keys, as every MN is provisioned with them
    gateway: str
    auth_port: int
    ars: dict[str, str]  # AR node -> its DNS name
    members: tuple[Member, ...]
    concurrency: int = 32  # first authentications in flight at once
    dhcp: PopulationDhcp | None = field(default=None, metadata=OMIT_IF_NONE)


class _Mobile:
    """What the process keeps per MN: its peer (key pair) and where it is authenticated;
    for a DHCP member its leases and the key of its last session (the link proof)."""

    __slots__ = ("addresses", "attaching", "lock", "member", "peer", "current", "sent_to",
                 "link_key", "rotating", "leasing", "recovering", "_mac")

    def __init__(self, member: Member, peer: Peer) -> None:
        self.member = member
        self.peer = peer
        self.current: str | None = None
        # The AR our last AUTH went to, answered or not: an AUTH abandoned when the MN moved
        # on may still have been accepted, and its AR's route then races ours.
        self.sent_to: str | None = None
        self.lock = asyncio.Lock()
        self.attaching: asyncio.Task[dict[str, Any]] | None = None
        self.recovering: asyncio.Task[None] | None = None  # retrying a failed handoff's AUTH
        self.addresses: PopulationAddresses | None = None
        self.rotating: asyncio.Task[dict[str, Any]] | None = None
        self.leasing = False  # the rotation waits for its new lease (it may be abandoned)
        # Only the session's link key is kept, not its socket: the AR serves DHCP to a
        # station whose client identifier proves the session (agents/linkproof.py).
        self.link_key: bytes | None = None
        self._mac: bytes | None = None

    def held(self) -> list[ipaddress.IPv4Address]:
        """Its IPv4 addresses, newest first: provisioned, or leased."""
        if self.addresses is not None:
            return self.addresses.addresses()
        return [self.member.address] if self.member.address is not None else []

    def proof(self, serial: int) -> bytes | None:
        if self.link_key is None:
            return None
        if self._mac is None:
            self._mac = hardware_address(self.member.ifname)
        return link_proof(self.link_key, self._mac, self.member.identity, serial)


@dataclass
class PopulationAddresses(AddressManager):
    """A DHCP member's leases in the shared namespace: each leased address on the MN's own
    interface with a rule that sends its traffic by the MN's own table, whose default route
    leaves from the newest address (or the link-local before the first lease)."""

    table: int = 0
    _ruled: set[ipaddress.IPv4Address] = field(default_factory=set)

    async def _configure(self, address: ipaddress.IPv4Address) -> None:
        cmds = [["addr", "replace", f"{address}/32", "dev", self.ifname]]
        if address not in self._ruled:
            cmds.append(["rule", "add", "from", str(address), "lookup", str(self.table),
                         "pref", str(self.table)])
        await self.ip_batch(cmds)
        self._ruled.add(address)
        await self._default_route()

    async def _unconfigure(self, address: ipaddress.IPv4Address) -> None:
        cmds = [["addr", "del", f"{address}/32", "dev", self.ifname]]
        if address in self._ruled:
            cmds.append(["rule", "del", "from", str(address), "lookup", str(self.table),
                         "pref", str(self.table)])
        self._ruled.discard(address)
        try:
            await self.ip_batch(cmds)
        except AddressError as exc:
            log.info("%s", exc)
        await self._default_route()

    async def _default_route(self) -> None:
        held = self.addresses()
        await self.ip(["route", "replace", "default", "via", self.gateway, "dev", self.ifname,
                       "src", str(held[0] if held else self.link_local), "table",
                       str(self.table)])


class _MemberEvents(EventLog):
    """One DHCP member's events, into the population's one log with the member's name."""

    def __init__(self, shared: EventLog, mn: str) -> None:
        super().__init__(None)
        self._shared, self._mn = shared, mn

    def __call__(self, ev: str, **fields: Any) -> None:
        self._shared(ev, mn=self._mn, **fields)


def _planned6(prefix: ipaddress.IPv6Network) -> Callable[[], list[ipaddress.IPv6Address]]:
    first = prefix.network_address + 1  # the member's address in it (render/population.py)
    return lambda: [first]


class Population:
    def __init__(self, config: PopulationConfig, rundir: Path | None = None) -> None:
        self.config = config
        self.directory = StaticDirectory(load_key_list(config.ar_keys))
        pems = json.loads(config.keys.read_text())
        if not isinstance(pems, dict):
            raise ContractError(f"{config.keys}: expected an object of PEM keys")
        self.events = EventLog(rundir / Layout.EVENTS if rundir is not None else None)
        self.mobiles: dict[str, _Mobile] = {}
        for m in config.members:
            pem = pems.get(m.identity)
            if not isinstance(pem, str):
                raise ContractError(f"{config.keys}: no key for {m.identity}")
            mob = self.mobiles[m.name] = _Mobile(
                m, Peer(KeyStore.from_pem(m.identity, pem.encode()), self.directory))
            if m.address is None:
                mob.addresses = self._leases(mob, rundir)
        self.counts = {"auth_ok": 0, "auth_failed": 0, "rotated": 0, "rotate_failed": 0,
                       "recovered": 0, "unrecovered": 0}
        self._jitter = random.Random(0)  # the waits' spread only, not the experiment's seed

    def _leases(self, mob: _Mobile, rundir: Path | None) -> PopulationAddresses:
        """A DHCP member's address manager: its clients' files under dhcp/<name>/, their
        events to our control socket naming the member."""
        m, dhcp = mob.member, self.config.dhcp
        if dhcp is None:
            raise ContractError(f"population MN {m.name} uses DHCP: the config has no dhcp")
        assert m.link_local is not None and m.tsig is not None
        where = (rundir or Path(".")) / "dhcp" / m.name
        if rundir is not None:
            where.mkdir(parents=True, exist_ok=True)
        updater = DnsUpdater(dhcp.primary, dhcp.primary_port, TsigKey.load(m.tsig))
        manager = PopulationAddresses(
            m.identity, m.ifname, self.config.gateway, m.link_local, dhcp.hook,
            (rundir or Path(".")) / Layout.CONTROL, where, updater,
            _MemberEvents(self.events, m.name), link_proof=mob.proof, zone=dhcp.zone,
            hook_env={MN_NAME: m.name}, table=m.table,
            # A dual-stack member's planned /64 stays in its AAAA set, written with its A set.
            addresses6=_planned6(m.prefix6) if m.prefix6 else None)
        # The shared namespace has no default route: the member's updates leave from its
        # own address, by its own table.
        updater.source = lambda: str(manager.source())
        return manager

    async def authenticate(self, name: str, ar: str) -> dict[str, Any]:
        """One AUTH of MN ``name`` to ``ar``, from its own address; the AR's answer timed."""
        mob = self.mobiles.get(name)
        if mob is None:
            return {"ok": False, "mn": name, "error": f"unknown MN {name!r}"}
        fqdn = self.config.ars.get(ar)
        if fqdn is None:
            return {"ok": False, "mn": name, "error": f"unknown AR {ar!r}"}
        async with mob.lock:
            # The AR we came from, by our own word (draft 2.2's hint that breaks a tie of two
            # moves within one LOCAL_PREF second): the last one we sent an AUTH to. Moved on
            # before it answered, it is still the one whose late route the new AR must beat.
            prev = mob.sent_to or mob.current
            prev_fqdn = self.config.ars.get(prev) if prev and prev != ar else None
            held = mob.held()
            claimed: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = [
                ipaddress.IPv4Network((a, 32)) for a in held]
            if claimed and mob.member.prefix6 is not None:
                claimed.append(mob.member.prefix6)
            # A DHCP member with no lease yet authenticates from its link-local, claiming
            # nothing: the AR then serves it DHCP (draft 2.3).
            source = held[0] if held else mob.member.link_local
            t_sent = time.time()
            try:
                key = await self.directory.resolve(fqdn)
                mob.sent_to = ar
                session = await mob.peer.authenticate(
                    (self.config.gateway, self.config.auth_port), fqdn,
                    claimed, mobility=bool(claimed), ar_key=key,
                    timeout=AUTH_TIMEOUT_S, retries=AUTH_RETRIES,
                    local_addr=(str(source), 0), previous=prev_fqdn)
            except (AuthError, OSError) as exc:
                self.counts["auth_failed"] += 1
                return {"ok": False, "mn": name, "ar": ar, "t_auth_sent": t_sent,
                        "claimed": [str(p) for p in claimed],
                        "error": f"{type(exc).__name__}: {exc}"}
            t_reply = time.time()
            if mob.addresses is not None:
                mob.link_key = link_key(session.export_msk())
            # Nothing is kept open per MN: a thousand sessions would be a thousand sockets.
            session.close()
            mob.current = ar
            self.counts["auth_ok"] += 1
            record: dict[str, Any] = {
                "ok": True, "mn": name, "ar": ar, "previous": prev, "t_auth_sent": t_sent,
                "t_reply": t_reply, "auth_ms": (t_reply - t_sent) * 1000,
                "claimed": [str(p) for p in claimed],
                "rerouted": [str(p) for p in session.rerouted],
                "not_rerouted": [str(p) for p in session.not_rerouted]}
            if mob.addresses is not None and not held:
                # First attachment, or every lease lost: an address by ordinary DHCP.
                try:
                    address = await mob.addresses.acquire()
                except AddressError as exc:
                    return {**record, "ok": False, "error": f"DHCP: {exc}"}
                record.update(address=str(address), t_bound=time.time())
            return record

    async def rotate(self, name: str) -> dict[str, Any]:
        """A DHCP member takes a new address at the AR it is on and releases every older one
        that no connection uses (draft 2.3); a move meanwhile supersedes it (``attach``)."""
        mob = self.mobiles.get(name)
        if mob is None or mob.addresses is None:
            return {"ok": False, "mn": name, "error": f"{name!r} is not a DHCP member"}
        task = asyncio.ensure_future(self._rotate(mob))
        mob.rotating = task
        try:
            return await task
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if me is not None and me.cancelling():
                raise
            return {"ok": False, "mn": name, "superseded": True,
                    "error": "superseded: moved before the new lease was bound"}
        finally:
            if mob.rotating is task:
                mob.rotating = None

    async def _rotate(self, mob: _Mobile) -> dict[str, Any]:
        """The rotation itself, each step timed."""
        name = mob.member.name
        assert mob.addresses is not None
        async with mob.lock:
            if mob.current is None:
                return {"ok": False, "mn": name, "error": "not attached"}
            before = [str(a) for a in mob.held()]
            t0 = time.time()
            try:
                mob.leasing = True
                try:
                    address = await mob.addresses.acquire()
                finally:
                    mob.leasing = False
                t_bound = time.time()
                gone = await mob.addresses.tidy()
            except (AddressError, OSError) as exc:
                self.counts["rotate_failed"] += 1
                return {"ok": False, "mn": name, "ar": mob.current, "t_start": t0,
                        "before": before, "error": f"{type(exc).__name__}: {exc}"}
            self.counts["rotated"] += 1
            return {"ok": True, "mn": name, "ar": mob.current, "t_start": t0,
                    "t_bound": t_bound, "t_done": time.time(), "before": before,
                    "address": str(address), "released": [str(a) for a in gone],
                    "held": [str(a) for a in mob.held()]}

    async def on_dhcp(self, req: dict[str, Any]) -> dict[str, Any]:
        """An event from a member's udhcpc (agents/dhcp_hook.py names the member)."""
        mob = self.mobiles.get(str(req.get("mn")))
        if mob is None or mob.addresses is None:
            return {"ok": False, "error": f"dhcp: {req.get('mn')!r} is not a DHCP member"}
        try:
            serial = int(req["serial"])
        except (KeyError, TypeError, ValueError):
            return {"ok": False, "error": "dhcp: serial: expected an integer"}
        env = req.get("env")
        if not isinstance(env, dict):
            return {"ok": False, "error": "dhcp: env: expected an object"}
        return await mob.addresses.on_event(serial, str(req.get("event")),
                                            {str(k): str(v) for k, v in env.items()})

    async def attach(self, name: str, ar: str) -> dict[str, Any]:
        """The radio moved ``name`` to ``ar``: an AUTH still in flight to the cell it left is
        abandoned (its retries would reach the wrong AR), and this one starts at once."""
        mob = self.mobiles.get(name)
        if mob is not None and mob.attaching is not None:
            mob.attaching.cancel()
        if mob is not None and mob.recovering is not None:
            mob.recovering.cancel()  # the cell it was retrying is behind it
            mob.recovering = None
        if mob is not None and mob.rotating is not None and mob.leasing:
            # Its DISCOVER would now reach the new AR, with the old session's proof. A
            # rotation already releasing finishes first (under the MN's lock).
            mob.rotating.cancel()
        task = asyncio.ensure_future(self.authenticate(name, ar))
        if mob is not None:
            mob.attaching = task
        try:
            rec = await task
            # Only an AUTH that went out is tried again (not a bad name or AR).
            if mob is not None and not rec["ok"] and "t_auth_sent" in rec \
                    and mob.attaching is task:
                mob.recovering = asyncio.ensure_future(self._recover(mob, ar, rec))
            return rec
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if me is not None and me.cancelling():
                raise  # we are stopping, not superseded
            return {"ok": False, "mn": name, "ar": ar, "superseded": True,
                    "error": "superseded: moved again before the AR answered"}
        finally:
            if mob is not None and mob.attaching is task:
                mob.attaching = None

    async def _recover(self, mob: _Mobile, ar: str, failed: dict[str, Any]) -> None:
        """Try the failed handoff's AUTH again, with backoff, until the AR answers, the MN
        moves on (``attach`` cancels us) or RECOVER_FOR_S has passed; each end is an event,
        so that the routes an overload left behind are seen to heal, or not."""
        name, t0, wait, tries, rec = mob.member.name, time.time(), RECOVER_FIRST_S, 0, failed
        try:
            while time.time() - t0 < RECOVER_FOR_S:
                await asyncio.sleep(wait * self._jitter.uniform(1 - RECOVER_JITTER,
                                                                1 + RECOVER_JITTER))
                tries += 1
                rec = await self.authenticate(name, ar)
                if rec["ok"]:
                    self.counts["recovered"] += 1
                    self.events(Event.HANDOFF_RECOVERED, mn=name, ar=ar, tries=tries,
                                after_s=round(time.time() - t0, 3), failure=failed.get("error"))
                    return
                wait = min(2 * wait, RECOVER_MAX_S)
            self.counts["unrecovered"] += 1
            self.events(Event.HANDOFF_UNRECOVERED, mn=name, ar=ar, tries=tries,
                        error=rec.get("error"))
        finally:
            if mob.recovering is asyncio.current_task():
                mob.recovering = None

    def recovery(self) -> dict[str, Any]:
        """The failed handoffs' retries: how many ended answered, gave up, are still on."""
        return {"ok": True, "recovered": self.counts["recovered"],
                "unrecovered": self.counts["unrecovered"],
                "recovering": sum(1 for m in self.mobiles.values() if m.recovering is not None)}

    async def attach_all(self, deadline_s: float = FIRST_AUTH_DEADLINE_S) -> dict[str, Any]:
        """Every MN's first authentication at its home AR, ``concurrency`` at a time; an MN
        refused right after bring-up (a DNS answer not yet cached) is tried again."""
        t0 = time.monotonic()
        gate = asyncio.Semaphore(self.config.concurrency)
        last: dict[str, str] = {}

        async def first(mob: _Mobile) -> float | None:
            while True:
                async with gate:
                    rec = await self.authenticate(mob.member.name, mob.member.home)
                if rec["ok"] and not rec["not_rerouted"]:
                    return time.monotonic() - t0
                last[mob.member.name] = str(rec.get("error") or rec["not_rerouted"])
                if time.monotonic() - t0 > deadline_s:
                    return None
                await asyncio.sleep(FIRST_AUTH_PAUSE_S)

        done = await asyncio.gather(*(first(m) for m in self.mobiles.values()))
        failed = {n: last.get(n, "") for n, t in zip(self.mobiles, done, strict=True)
                  if t is None}
        return {"ok": not failed, "authenticated": len(done) - len(failed),
                "failed": dict(sorted(failed.items())[:20]), "failed_count": len(failed),
                "elapsed_s": time.monotonic() - t0}

    def status(self) -> dict[str, Any]:
        return {"ok": True, "mobiles": len(self.mobiles), **self.counts,
                "recovering": self.recovery()["recovering"],
                "where": {n: m.current for n, m in self.mobiles.items()},
                "leased": self.leased()}

    def leased(self) -> dict[str, list[str]]:
        """The DHCP members' addresses, newest first: the prober's targets."""
        return {n: [str(a) for a in m.held()] for n, m in self.mobiles.items()
                if m.addresses is not None}

    async def command(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req.get("cmd")
        if cmd == "attach":
            return await self.attach(str(req.get("mn")), str(req.get("ar")))
        if cmd == "attach_all":
            deadline = req.get("deadline_s", FIRST_AUTH_DEADLINE_S)
            if isinstance(deadline, bool) or not isinstance(deadline, int | float):
                return {"ok": False, "error": "deadline_s: expected a number"}
            return await self.attach_all(float(deadline))
        if cmd == "status":
            return self.status()
        if cmd == "recovery":  # polled while the routes settle: not every MN's AR
            return self.recovery()
        if cmd == "leased":  # what the scenario polls each second: not every MN's AR
            return {"ok": True, "leased": self.leased()}
        if cmd == "rotate":
            return await self.rotate(str(req.get("mn")))
        if cmd == "dhcp":
            return await self.on_dhcp(req)
        return {"ok": False, "error": f"unknown command {cmd!r} (attach, attach_all, rotate, "
                "status, leased, recovery, dhcp)"}

    async def run(self, control: Path) -> None:
        loop = asyncio.get_running_loop()
        main_task = asyncio.current_task()
        assert main_task is not None
        loop.add_signal_handler(signal.SIGTERM, main_task.cancel)
        server = await start_control(control, self.command)
        log.info("%d MNs ready on %s", len(self.mobiles), control)
        try:
            await server.serve_forever()
        finally:
            server.close()
            # Every member's udhcpc stops with us (their leases run out at the ARs).
            await asyncio.gather(*(m.addresses.close() for m in self.mobiles.values()
                                   if m.addresses is not None), return_exceptions=True)
            control.unlink(missing_ok=True)
            self.events.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="agents.population", description=__doc__)
    for where in ("--rundir", "--config"):
        ap.add_argument(where, required=True, type=Path)
    ap.add_argument("--check", action="store_true", help="load every key, then exit")
    args = ap.parse_args(argv)
    try:
        population = Population(PopulationConfig.load(args.config),
                                None if args.check else args.rundir)
    except (OSError, ValueError, AuthError, DnsError) as exc:
        print(f"agents.population: {exc}", file=sys.stderr)
        return 1
    if args.check:
        return 0
    # The lab writes our pid file (with our start time) and stops us by it.
    logging.basicConfig(filename=str(args.rundir / Layout.AGENT_LOG), level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(asyncio.CancelledError):
        asyncio.run(population.run(args.rundir / Layout.CONTROL))
    return 0


if __name__ == "__main__":
    sys.exit(main())
