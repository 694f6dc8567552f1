"""Many mobile nodes in one process (issue 15): every MN keeps its own key pair, its own
address on its own interface (a veth end into the radio) and does the real one-message AUTH
to the AR the radio attached it to; what is shared is the process, its loop and its AR keys.

Run in the population's namespace by the lab (topologies/lab/popnet.py); commands arrive on
its control socket: `attach` one MN after the radio moved it, `attach_all` at bring-up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .auth import AuthError, KeyStore, Peer, StaticDirectory
from .contract import OMIT_IF_NONE, Config, ContractError, Layout
from .control import start_control
from .mn import load_key_list

log = logging.getLogger("agents.population")

AUTH_TIMEOUT_S = 0.3  # per try; an MN's own agent uses the same (agents/mn.py)
AUTH_RETRIES = 5
FIRST_AUTH_DEADLINE_S = 120.0  # the bound for a thousand MNs up and authenticated
FIRST_AUTH_PAUSE_S = 0.5  # before retrying an MN whose AR refused it right after bring-up


@dataclass(frozen=True)
class Member(Config):
    """One MN of the population: its node name, DNS identity, interface and address."""

    name: str
    identity: str
    ifname: str
    address: ipaddress.IPv4Address
    home: str
    # Its planned /64 when the run is dual-stack (issue 18): claimed beside the /32, its
    # first address on the MN's interface. Omitted for an IPv4 run.
    prefix6: ipaddress.IPv6Network | None = field(default=None, metadata=OMIT_IF_NONE)


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


class _Mobile:
    """What the process keeps per MN: its peer (key pair) and where it is authenticated."""

    __slots__ = ("attaching", "lock", "member", "peer", "current", "sent_to")

    def __init__(self, member: Member, peer: Peer) -> None:
        self.member = member
        self.peer = peer
        self.current: str | None = None
        # The AR our last AUTH went to, answered or not: an AUTH abandoned when the MN moved
        # on may still have been accepted, and its AR's route then races ours.
        self.sent_to: str | None = None
        self.lock = asyncio.Lock()
        self.attaching: asyncio.Task[dict[str, Any]] | None = None


class Population:
    def __init__(self, config: PopulationConfig) -> None:
        self.config = config
        self.directory = StaticDirectory(load_key_list(config.ar_keys))
        pems = json.loads(config.keys.read_text())
        if not isinstance(pems, dict):
            raise ContractError(f"{config.keys}: expected an object of PEM keys")
        self.mobiles: dict[str, _Mobile] = {}
        for m in config.members:
            pem = pems.get(m.identity)
            if not isinstance(pem, str):
                raise ContractError(f"{config.keys}: no key for {m.identity}")
            self.mobiles[m.name] = _Mobile(m, Peer(KeyStore.from_pem(m.identity, pem.encode()),
                                                   self.directory))
        self.counts = {"auth_ok": 0, "auth_failed": 0}

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
            address = mob.member.address
            claimed: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = [
                ipaddress.IPv4Network((address, 32))]
            if mob.member.prefix6 is not None:
                claimed.append(mob.member.prefix6)
            t_sent = time.time()
            try:
                key = await self.directory.resolve(fqdn)
                mob.sent_to = ar
                session = await mob.peer.authenticate(
                    (self.config.gateway, self.config.auth_port), fqdn,
                    claimed, mobility=True, ar_key=key,
                    timeout=AUTH_TIMEOUT_S, retries=AUTH_RETRIES,
                    local_addr=(str(address), 0), previous=prev_fqdn)
            except (AuthError, OSError) as exc:
                self.counts["auth_failed"] += 1
                return {"ok": False, "mn": name, "ar": ar, "t_auth_sent": t_sent,
                        "error": f"{type(exc).__name__}: {exc}"}
            t_reply = time.time()
            # Nothing is kept open per MN: a thousand sessions would be a thousand sockets.
            session.close()
            mob.current = ar
            self.counts["auth_ok"] += 1
            return {"ok": True, "mn": name, "ar": ar, "previous": prev, "t_auth_sent": t_sent,
                    "t_reply": t_reply, "auth_ms": (t_reply - t_sent) * 1000,
                    "rerouted": [str(p) for p in session.rerouted],
                    "not_rerouted": [str(p) for p in session.not_rerouted]}

    async def attach(self, name: str, ar: str) -> dict[str, Any]:
        """The radio moved ``name`` to ``ar``: an AUTH still in flight to the cell it left is
        abandoned (its retries would reach the wrong AR), and this one starts at once."""
        mob = self.mobiles.get(name)
        if mob is not None and mob.attaching is not None:
            mob.attaching.cancel()
        task = asyncio.ensure_future(self.authenticate(name, ar))
        if mob is not None:
            mob.attaching = task
        try:
            return await task
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if me is not None and me.cancelling():
                raise  # we are stopping, not superseded
            return {"ok": False, "mn": name, "ar": ar, "superseded": True,
                    "error": "superseded: moved again before the AR answered"}
        finally:
            if mob is not None and mob.attaching is task:
                mob.attaching = None

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
                "where": {n: m.current for n, m in self.mobiles.items()}}

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
        return {"ok": False, "error": f"unknown command {cmd!r} (attach, attach_all, status)"}

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
            control.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="agents.population", description=__doc__)
    for where in ("--rundir", "--config"):
        ap.add_argument(where, required=True, type=Path)
    ap.add_argument("--check", action="store_true", help="load every key, then exit")
    args = ap.parse_args(argv)
    try:
        population = Population(PopulationConfig.load(args.config))
    except (OSError, ValueError, AuthError) as exc:
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
