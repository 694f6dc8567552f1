"""The mobile node's agent: on each attachment it authenticates to the new AR with one UDP
message (mobility flag set for the addresses it keeps) and reports what was re-routed.

The radio (topologies/lab/radio.py) tells it which AR it is now attached to over a Unix socket
in its run directory, the way a cell's system information tells a UE its cell identity.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .addresses import AddressError, AddressManager, run_ip_batch
from .auth import (
    AuthError,
    KeyStore,
    Peer,
    PeerSession,
    PublishedKey,
    Role,
    StaticDirectory,
    Suite,
)
from .contract import Command, DnsMode, Event, Layout, MnAgentConfig
from .control import start_control
from .delegations import DelegationManager, parse_prefix
from .dhcp6 import make_duid
from .dns import DnsError, DnssecKeyResolver, DnsUpdater, TsigKey, ValidatingResolver
from .handoff import EventLog
from .linkproof import link_key, link_proof
from .macro import HaTunnel, detect_tunnel
from .paging import parse_page
from .ra import RaJudge, RaListener
from .staple import StapleKeeper, auth_size, fits_auth

log = logging.getLogger("agents.mn")

KEY_REFRESH_S = 20.0
TIDY_S = 1.0  # how often unused older addresses are looked for and released
STAPLE_CHECK_S = 1.0  # how often the stapled bundle is compared with what we hold


class _PageListener(asyncio.DatagramProtocol):
    """Pages broadcast by ARs on the access link (the radio's paging channel)."""

    def __init__(self, on_page: Any) -> None:
        self.on_page = on_page

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.on_page(data)


def load_key_list(path: Path) -> list[PublishedKey]:
    """The operator's AR keys as provisioned with the MN (its SIM profile, in effect).

    An MN cannot ask DNS for the key of an AR it is not yet authenticated at: its packets
    are not forwarded until it is. DNSSEC refreshes the list whenever the MN is attached.
    """
    doc = json.loads(path.read_text())
    return [
        PublishedKey(name, Suite(int(k["suite"])), bytes.fromhex(k["spki"]),
                     bytes.fromhex(k["nonce"]) if k.get("nonce") else None,
                     int(k["nonce_expires"]) if k.get("nonce_expires") else None)
        for name, k in doc.items()
    ]


class MnAgent:
    def __init__(self, config: MnAgentConfig, rundir: Path, keys: list[PublishedKey]) -> None:
        self.config = config
        self.rundir = rundir
        self.directory = StaticDirectory(keys)
        self.dns = DnssecKeyResolver(
            ValidatingResolver(config.resolver, config.resolver_port, timeout=1.0))
        keystore = self.keystore = KeyStore.from_pem(config.identity,
                                                     config.key.read_bytes())
        self.peer = Peer(keystore, self.directory)
        self.events = EventLog(rundir / Layout.EVENTS)
        # Issue 17: in stapled mode every AUTH carries our DNSSEC proof, kept current here.
        self.dns_mode = config.dns_mode
        self.staples = StapleKeeper(self.dns.dns, config.identity, self.events)
        self.current: str | None = None  # the AR node we are authenticated at
        # Back from outside the AS: our next AUTH names the Home Agent as where we came from
        # (its /32 is the older route, whatever its LOCAL_PREF: agents/handoff.py).
        self._back_from: str | None = None
        self.session: PeerSession | None = None
        self._lock = asyncio.Lock()
        self.handoffs = 0
        # Idle mode (draft 4): the Tracking Area List of the AR we went idle at, the cell we
        # are in now (told by the radio), and whether we answer pages at all.
        self.idle = False
        self.tal: tuple[str, ...] = ()
        self.cell: str | None = None
        self.deaf = False
        self._by_fqdn = {fqdn: node for node, fqdn in config.ars.items()}
        self._tasks: set[asyncio.Task[dict[str, Any]]] = set()
        self.addresses: AddressManager | None = None
        # Macro-mobility (draft 2.4): our Home Agent (name from DHCP), its address and key,
        # resolved and its shared secret derived while we are still inside the AS.
        self.ha: tuple[str, ipaddress.IPv4Address, PublishedKey] | None = None
        self.away: str | None = None  # the visited network we are in
        self.tunnel = (HaTunnel(config.macro, detect_tunnel(), run_ip_batch)
                       if config.macro is not None else None)
        self.delegations: DelegationManager | None = None
        if config.dhcp is not None:
            updater = DnsUpdater(config.dhcp.primary, config.dhcp.primary_port,
                                 TsigKey.load(config.dhcp.tsig))
            self.addresses = AddressManager(
                config.identity, config.ifname, config.gateway, config.dhcp.link_local,
                config.dhcp.hook, rundir / Layout.CONTROL, rundir, updater, self.events,
                link_proof=self._link_proof)
            if config.dhcp.ipv6 is not None:
                # Issue 18: the /64s by DHCPv6, their AAAA set written with the A set.
                self.delegations = DelegationManager(
                    config.identity, config.ifname, config.dhcp.ipv6.gateway,
                    config.dhcp.ipv6.hook, rundir / Layout.CONTROL, rundir, self.events,
                    self._duid, lambda: self.handoffs, self.addresses.register, run_ip_batch)
                self.addresses.addresses6 = self.delegations.addresses
        # Draft 4 for a dual-stack MN (issue 18): the AR's RA after each handoff.
        self.ra = (RaJudge(self.events, self._refused6)
                   if config.prefix6 is not None or self.delegations is not None else None)
        self.refused6: list[ipaddress.IPv6Network] = []

    def _link_proof(self, serial: int) -> bytes | None:
        """Lease ``serial``'s client identifier proof: our hardware address under the MSK of
        the session with the AR we are on (issue 19 defect 8, docs/addresses.md)."""
        if self.session is None:
            return None
        mac = Path(f"/sys/class/net/{self.config.ifname}/address").read_text().strip()
        return link_proof(link_key(self.session.export_msk()),
                          bytes.fromhex(mac.replace(":", "")), self.config.identity, serial)

    def _duid(self, serial: int) -> bytes | None:
        """DHCPv6 lease ``serial``'s DUID: the DHCPv4 client identifier's name, serial and
        proof (our MAC under the session's MSK) in a DUID-EN, which the AR's DHCPv6 server
        checks against the link-local address's EUI-64 (agents/ardhcp6.py)."""
        proof = self._link_proof(serial)
        return make_duid(self.config.identity, serial, proof) if proof is not None else None

    def prefixes6(self) -> list[ipaddress.IPv6Network]:
        """The IPv6 prefixes we hold, newest first: planned, or delegated by DHCPv6."""
        planned = [self.config.prefix6] if self.config.prefix6 is not None else []
        return planned + (self.delegations.prefixes() if self.delegations else [])

    def held(self) -> list[ipaddress.IPv4Address]:
        """The addresses we hold, newest first: provisioned, or leased."""
        if self.addresses is not None:
            return self.addresses.addresses()
        assert self.config.address is not None
        return [self.config.address]

    def _source(self) -> ipaddress.IPv4Address:
        if self.addresses is not None:
            return self.addresses.source()
        assert self.config.address is not None
        return self.config.address

    async def attach(self, ar: str, previous: str | None = None) -> dict[str, Any]:
        """The radio attached us to ``ar``: authenticate there, unless we are idle and ``ar``
        is in our Tracking Area List (draft 4: an idle MN moves without signalling)."""
        if ar not in self.config.ars:
            raise ValueError(f"unknown AR {ar!r}")
        self.cell = ar
        if self.idle and ar in self.tal:
            self.events("idle_move", ar=ar)
            return {"ok": True, "ar": ar, "idle": True, "authenticated": False}
        if self.away is not None:
            await self._come_back()
        record = await self.authenticate(ar, previous)
        if record.get("ok") and self.addresses is not None and not self.held():
            # First attachment (draft 2.3): authenticated, now an address by ordinary DHCP.
            try:
                address = await self.addresses.acquire()
            except AddressError as exc:
                return {**record, "ok": False, "error": f"DHCP: {exc}"}
            record = {**record, "address": str(address), "t_bound": time.time()}
            self._spawn(self.prepare_ha())
        if record.get("ok") and self.delegations is not None and not self.prefixes6():
            # Dual stack by DHCPv6 (issue 18): a /64 from the AR we just authenticated at.
            try:
                prefix6 = await self.delegations.acquire()
                record = {**record, "prefix6": str(prefix6), "t_delegated": time.time()}
            except AddressError as exc:
                record = {**record, "dhcp6_error": str(exc)}  # IPv4 stands without it
        return await self.bind_not_rerouted(record)

    # --- macro-mobility (draft 2.4) ---------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def prepare_ha(self) -> dict[str, Any]:
        """Resolve our Home Agent's key and address through DNSSEC and derive the shared
        secret now: outside the AS there is no validating resolver to ask (draft 2.4)."""
        name = self.addresses.home_agent if self.addresses else None
        if not name:
            return {"ok": False, "error": "no Home Agent named by DHCP (option 224)"}
        try:
            key = await self.dns.resolve(name)
            addrs = await self.dns.dns.addresses(name)
        except (AuthError, DnsError, OSError) as exc:
            self.events("ha_prepare_failed", ha=name, error=str(exc))
            return {"ok": False, "error": f"{name}: {exc}"}
        if not addrs:
            return {"ok": False, "error": f"{name} has no address"}
        self.directory.publish(key)
        self.keystore.derive_msk(key, Role.PEER, bytes(16), bytes(16))
        self.ha = (name, addrs[0], key)
        self.events("ha_ready", ha=name, address=addrs[0])
        return {"ok": True, "ha": name, "address": str(addrs[0])}

    async def leave(self, node: str) -> dict[str, Any]:
        """We are in a visited network outside the AS: a care-of address by DHCP there, then
        a Binding Update to our Home Agent for every address no AR re-routes (draft 4): our
        IPv4 addresses and, on a dual-stack MN, our IPv6 prefix."""
        if self.addresses is None or self.tunnel is None:
            return {"ok": False, "error": "this MN has no Home Agent service"}
        if self.ha is None:
            return {"ok": False, "error": "Home Agent not prepared (no DHCP option 224 yet)"}
        async with self._lock:
            name = self.ha[0]
            homes = self.held()
            self.addresses.pause()
            if self.delegations is not None:
                self.delegations.pause()
            t_moved = time.time()
            try:
                coa = await self.addresses.acquire_care_of()
            except AddressError as exc:
                return {"ok": False, "ar": node, "error": f"care-of: {exc}"}
            t_coa = time.time()
            left = self.config.ars.get(self.current) if self.current else None
            # Our IPv6 prefix goes with us as our IPv4 addresses do: no AR routes it while we
            # are outside the AS (issue 18). Over VXLAN only: ipip carries no IPv6.
            six = (self.prefixes6() or None) if self.tunnel.kind == "vxlan" else None
            try:
                session = await self._bind(homes, coa, six, previous=left)
            except AuthError as exc:
                return {"ok": False, "ar": node, "error": f"{type(exc).__name__}: {exc}",
                        "care_of": str(coa)}
            t_reply = time.time()
            self.away, self.current, self.cell = node, None, node
            record = {
                "ok": True, "ar": node, "care_of": str(coa), "ha": name,
                "tunnel": self.tunnel.kind, "t_auth_sent": t_coa, "t_reply": t_reply,
                "auth_ms": (t_reply - t_coa) * 1000, "care_of_ms": (t_coa - t_moved) * 1000,
                "rerouted": [str(p) for p in session.rerouted],
                "not_rerouted": [str(p) for p in session.not_rerouted],
                "authenticated": True,
            }
            self.events("binding_update", **record)
            return record

    async def _bind(self, homes: list[ipaddress.IPv4Address],
                    care_of: ipaddress.IPv4Address,
                    prefixes6: list[ipaddress.IPv6Network] | None = None,
                    previous: str | None = None) -> PeerSession:
        """The Binding Update: one AUTH to the HA from ``care_of``, then our tunnel end;
        ``prefixes6``: IPv6 prefixes an AR refused, bound too (issue 18); ``previous``: the
        AR we left, whose /32 is then the older route at the HA (agents/handoff.py)."""
        assert self.ha is not None and self.tunnel is not None
        name, ha_addr, key = self.ha
        claimed: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = [
            ipaddress.IPv4Network((a, 32)) for a in homes]
        claimed += prefixes6 or []
        try:
            session = await self.peer.authenticate(
                (str(ha_addr), self.config.auth_port), name, claimed, mobility=True,
                ar_key=key, timeout=0.3, retries=5, local_addr=(str(care_of), 0),
                previous=previous)
        except AuthError as exc:
            self.events("bu_failed", ha=name, error=str(exc))
            raise
        bound = [p.network_address for p in session.rerouted]
        await self.tunnel.open(care_of, ha_addr, [a for a in bound
                                                  if isinstance(a, ipaddress.IPv4Address)],
                               [p for p in session.rerouted
                                if isinstance(p, ipaddress.IPv6Network)])
        session.close()
        return session

    async def bind_not_rerouted(self, record: dict[str, Any]) -> dict[str, Any]:
        """Draft 4 inside the AS: the AR re-routed some of our addresses, not all; the rest
        we bind at the Home Agent, with a re-routed one as the care-of address."""
        # IPv6 prefixes are the RA's business: _refused6 binds the ones it leaves out.
        rest = [n.network_address for n in map(ipaddress.ip_network, record.get("not_rerouted")
                                                or ()) if n.version == 4]
        if self.tunnel is None or self.ha is None or not rest:
            if self.tunnel is not None and self.tunnel.up and record.get("ok"):
                if self.tunnel.prefixes6:  # the RA after this AUTH binds them again if refused
                    self.events("prefix_debound", prefixes=[str(p) for p in
                                                            self.tunnel.prefixes6], ar=record["ar"])
                await self.tunnel.close()  # every address is routed by the AS again
            return record
        routed = [n.network_address for n in map(ipaddress.ip_network, record["rerouted"])
                  if n.version == 4]
        if not routed:
            return {**record, "ha_bound": [], "ha_error": "no re-routed address to use"}
        async with self._lock:
            try:
                session = await self._bind(rest, routed[0])
            except AuthError as exc:
                return {**record, "ha_bound": [], "ha_error": f"{type(exc).__name__}: {exc}"}
        bound = [str(p) for p in session.rerouted]
        self.events("binding_update", care_of=routed[0], rerouted=bound, inside=True)
        return {**record, "ha_bound": bound, "care_of": str(routed[0])}

    async def _come_back(self) -> None:
        """Back in the AS: the tunnel and the care-of address go, the home leases resume."""
        assert self.addresses is not None and self.tunnel is not None
        await self.tunnel.close()
        await self.addresses.drop_care_of()
        self.addresses.resume()
        if self.delegations is not None:
            self.delegations.resume()
        self.events("returned", outside=self.away)
        self.away = None
        if self.ha is not None:
            self._back_from = self.ha[0]

    async def deregister(self) -> dict[str, Any]:
        """Tell the Home Agent to drop our binding: the AUTH without the mobility flag."""
        if self.ha is None or self.addresses is None or self.addresses.care_of is None:
            return {"ok": False, "error": "not away from the AS"}
        name, ha_addr, key = self.ha
        claimed = [ipaddress.IPv4Network((a, 32)) for a in self.held()]
        try:
            session = await self.peer.authenticate(
                (str(ha_addr), self.config.auth_port), name, claimed, mobility=False,
                ar_key=key, timeout=0.3, retries=5,
                local_addr=(str(self.addresses.care_of), 0))
        except AuthError as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        session.close()
        if self.tunnel is not None:
            await self.tunnel.close()
        # An AUTH_REPLY lists addresses only when flag M was set: the authenticated reply is
        # the acknowledgement; the HA's routing shows the effect.
        return {"ok": True, "deregistered": [str(p) for p in claimed]}

    async def authenticate(self, ar: str, previous: str | None = None, *,
                           idle: bool = False, page: bool = False) -> dict[str, Any]:
        """One AUTH to ``ar``; ``idle``: we go idle there; ``page``: we answer a page."""
        async with self._lock:
            fqdn = self.config.ars[ar]
            prev = previous if previous is not None else self.current
            prev_fqdn = (self.config.ars.get(prev) if prev and prev != ar
                         else self._back_from)
            key = await self.directory.resolve(fqdn)
            claimed: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = [
                ipaddress.IPv4Network((a, 32)) for a in self.held()]
            if claimed:  # a dual-stack MN's prefixes too (issue 18)
                claimed += self.prefixes6()
            staple = (self.staples.current(self.held()) if self.dns_mode is DnsMode.STAPLED
                      else None)
            if staple is not None and not fits_auth(staple, self.config.identity, fqdn,
                                                    prev_fqdn, len(claimed)):
                self.events(Event.STAPLE_FAILED, mn=self.config.identity, size=len(staple),
                            error="the AUTH would not fit one datagram; sent without")
                staple = None
            t_sent = time.time()
            try:
                # With nothing to claim (before our first lease) this is a plain
                # authentication: the AR then serves us DHCP.
                session = await self.peer.authenticate(
                    (self.config.gateway, self.config.auth_port), fqdn, claimed,
                    mobility=bool(claimed), ar_key=key, timeout=0.3, retries=5,
                    local_addr=(str(self._source()), 0), previous=prev_fqdn, idle=idle,
                    page=page, staple=staple,
                )
            except AuthError as exc:
                self.events("auth_failed", ar=ar, error=str(exc), t_sent=t_sent)
                return {"ok": False, "ar": ar, "error": f"{type(exc).__name__}: {exc}",
                        "t_auth_sent": t_sent}
            t_reply = time.time()
            if self.session is not None:
                self.session.close()
            self.session = session
            self.current = self.cell = ar
            self._back_from = None
            self.handoffs += 1
            self.idle = idle
            self.tal = tuple(self._by_fqdn[n] for n in session.tal if n in self._by_fqdn)
            rerouted = [str(p) for p in session.rerouted]
            not_rerouted = [str(p) for p in session.not_rerouted]
            record = {
                "ok": True, "ar": ar, "previous": prev, "t_auth_sent": t_sent,
                "t_reply": t_reply, "auth_ms": (t_reply - t_sent) * 1000,
                "rerouted": rerouted, "not_rerouted": not_rerouted, "idle": idle,
                "tal": list(self.tal), "authenticated": True,
                "dns_mode": str(self.dns_mode), "staple_size": len(staple) if staple else 0,
                "auth_size": auth_size(staple, self.config.identity, fqdn, prev_fqdn,
                                       len(claimed)),
            }
            self.events("idle" if idle else "attached", **record)
            if self.delegations is not None:
                self.delegations.authenticated()  # the DHCPv6 DUIDs' proof is stale now
            if not_rerouted:
                # Draft 4: these need the macro-mobility path (a Home Agent binding).
                log.warning("not re-routed by %s: %s", ar, ", ".join(not_rerouted))
            six = [p for p in claimed if isinstance(p, ipaddress.IPv6Network)]
            if self.ra is not None and six and not idle:
                self.ra.expect(ar, t_sent, six, [
                    p for p in session.rerouted if isinstance(p, ipaddress.IPv6Network)])
            return record

    def _refused6(self, prefixes: list[ipaddress.IPv6Network], by: str) -> None:
        """Draft 4: prefixes we hold that the AR did not re-route need our Home Agent: bound
        there, with a re-routed IPv4 address as the care-of address (as bind_not_rerouted),
        over the VXLAN tunnel, which carries IPv6 too (docs/ipv6.md)."""
        self.refused6 = prefixes
        if not prefixes:
            return
        why = ("no Home Agent named for this MN" if self.ha is None or self.tunnel is None
               else f"a {self.tunnel.kind} tunnel carries no IPv6"
               if self.tunnel.kind != "vxlan" else None)
        if why is not None:
            self.events("prefix_unbound", prefixes=[str(p) for p in prefixes], by=by,
                        ha=self.ha[0] if self.ha else None, reason=why)
            return
        self._spawn(self._bind6(list(prefixes), by))

    async def _bind6(self, prefixes: list[ipaddress.IPv6Network], by: str
                     ) -> dict[str, Any]:
        """The Binding Update for refused IPv6 prefixes, from the address the AR re-routed."""
        assert self.ha is not None and self.tunnel is not None
        routed = ([p.network_address for p in self.session.rerouted
                   if isinstance(p, ipaddress.IPv4Network)] if self.session else [])
        care_of = routed[0] if routed else None
        if self.away is not None or not isinstance(care_of, ipaddress.IPv4Address):
            reason = "away from the AS" if self.away else "no re-routed address to use"
            self.events("prefix_unbound", prefixes=[str(p) for p in prefixes], by=by,
                        ha=self.ha[0], reason=reason)
            return {"ok": False, "error": reason}
        async with self._lock:
            if prefixes != self.refused6:
                return {"ok": False, "error": "superseded by a later handoff"}
            # IPv4 addresses already bound from this care-of address stay bound.
            homes = (list(self.tunnel.homes) if self.tunnel.up
                     and self.tunnel.care_of == care_of else [])
            try:
                session = await self._bind(homes, care_of, prefixes)
            except Exception as exc:  # noqa: BLE001 - a task: record why, never lose it
                self.events("prefix_unbound", prefixes=[str(p) for p in prefixes], by=by,
                            ha=self.ha[0], reason=f"{type(exc).__name__}: {exc}")
                return {"ok": False, "error": str(exc)}
        bound = [p for p in session.rerouted if isinstance(p, ipaddress.IPv6Network)]
        self.events("prefix_bound", prefixes=[str(p) for p in bound], by=by, ha=self.ha[0],
                    care_of=care_of, tunnel=self.tunnel.kind)
        if rest := [p for p in prefixes if p not in bound]:
            self.events("prefix_unbound", prefixes=[str(p) for p in rest], by=by,
                        ha=self.ha[0], reason="refused by the Home Agent")
        return {"ok": True, "bound6": [str(p) for p in bound]}

    async def refresh_keys(self) -> None:
        """Keep the AR key list current through DNSSEC while we have a working attachment."""
        while True:
            if self.current is not None:
                for fqdn in self.config.ars.values():
                    try:
                        self.directory.publish(await self.dns.resolve(fqdn))
                    except (AuthError, DnsError, OSError) as exc:
                        log.debug("key refresh for %s failed: %s", fqdn, exc)
            await asyncio.sleep(KEY_REFRESH_S)

    async def go_idle(self) -> dict[str, Any]:
        """Tell the AR we are going idle (an AUTH with flag IDLE); it keeps our address."""
        if self.current is None:
            return {"ok": False, "error": "not attached"}
        return await self.authenticate(self.current, self.current, idle=True)

    def on_page(self, data: bytes) -> None:
        page = parse_page(data)
        if page is None or not self.idle or self.deaf:
            return
        addrs, by = page
        mine: set[ipaddress.IPv4Address | ipaddress.IPv6Network] = {*self.held(),
                                                                    *self.prefixes6()}
        if not mine & set(addrs) or self.cell is None:
            return
        self.events("paged", by=by, cell=self.cell)
        self._spawn(self.authenticate(self.cell, self.current, page=True))

    async def command(self, req: dict[str, Any]) -> dict[str, Any]:
        """The control socket's one dispatch: the radio, the lab and the udhcpc hook."""
        try:
            handler = self._commands[Command(str(req.get("cmd")))]
        except (ValueError, KeyError):
            return {"ok": False, "error": f"unknown command {req.get('cmd')!r}"}
        try:
            answer: dict[str, Any] = await handler(req)
            return answer
        except AddressError as exc:
            return {"ok": False, "error": str(exc)}

    @property
    def _commands(self) -> dict[Command, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]]:
        return {
            Command.ATTACH: self._cmd_attach,
            Command.PREPARE_HA: lambda req: self.prepare_ha(),
            Command.DEREGISTER: lambda req: self.deregister(),
            Command.IDLE: lambda req: self.go_idle(),
            Command.DEAF: self._cmd_deaf,
            Command.STATUS: self._cmd_status,
            Command.DHCP: self._cmd_dhcp,
            Command.ROTATE: self._cmd_rotate,
            Command.RELEASE: self._cmd_release,
            Command.IN_USE: self._cmd_in_use,
            Command.DNS_MODE: self._cmd_dns_mode,
            Command.DHCP6_DUID: self._cmd_dhcp6_duid,
            Command.DHCP6: self._cmd_dhcp6,
        }

    async def _cmd_attach(self, req: dict[str, Any]) -> dict[str, Any]:
        where = str(req["ar"])
        if self.config.macro is not None and where == self.config.macro.outside:
            self.cell = where
            return await self.leave(where)
        return await self.attach(where, req.get("previous"))

    async def _cmd_deaf(self, req: dict[str, Any]) -> dict[str, Any]:
        self.deaf = bool(req.get("on", True))  # the MN is switched off: it answers no page
        return {"ok": True, "deaf": self.deaf}

    async def _cmd_status(self, req: dict[str, Any]) -> dict[str, Any]:
        held = [str(a) for a in self.held()]
        return {"ok": True, "ar": self.current, "cell": self.cell, "idle": self.idle,
                "tal": list(self.tal), "address": held[0] if held else None,
                "addresses": held, "handoffs": self.handoffs, "away": self.away,
                "ha": self.ha[0] if self.ha else None,
                "ra": self.ra.status() if self.ra else None,
                "refused6": [str(p) for p in self.refused6],
                "bound6": [str(p) for p in self.tunnel.prefixes6] if self.tunnel else [],
                "dhcp": self.addresses.status() if self.addresses else None,
                "prefixes6": [str(p) for p in self.prefixes6()],
                "dhcp6": self.delegations.status() if self.delegations else None}

    def _dhcp_mn(self, req: dict[str, Any]) -> AddressManager:
        if self.addresses is None:
            raise AddressError(f"{req.get('cmd')!r}: this MN has a provisioned address")
        return self.addresses

    async def _cmd_dhcp(self, req: dict[str, Any]) -> dict[str, Any]:
        return await self._dhcp_mn(req).on_event(int(req["serial"]), str(req["event"]),
                                                 dict(req.get("env") or {}))

    def _dhcp6_mn(self, req: dict[str, Any]) -> DelegationManager:
        if self.delegations is None:
            raise AddressError(f"{req.get('cmd')!r}: this MN takes no prefix by DHCPv6")
        return self.delegations

    async def _cmd_dhcp6(self, req: dict[str, Any]) -> dict[str, Any]:
        return await self._dhcp6_mn(req).on_event(int(req["serial"]), str(req["event"]),
                                                   dict(req.get("env") or {}))

    async def _cmd_rotate(self, req: dict[str, Any]) -> dict[str, Any]:
        """A fresh address (``family`` ipv6: a fresh /64) from the AR we are on (draft 2.3)."""
        if req.get("family", "ipv4") not in ("ipv4", "ipv6"):
            return {"ok": False, "error": f"family {req.get('family')!r} is not ipv4|ipv6"}
        six = req.get("family") == "ipv6"
        manager = self._dhcp6_mn(req) if six else self._dhcp_mn(req)
        if self.current is None:
            return {"ok": False, "error": "not attached"}
        if isinstance(manager, DelegationManager):
            prefix = await manager.acquire()
            return {"ok": True, "prefix6": str(prefix),
                    "prefixes6": [str(p) for p in self.prefixes6()]}
        address = await manager.acquire()
        return {"ok": True, "address": str(address), "addresses": [str(a) for a in self.held()]}

    async def _cmd_release(self, req: dict[str, Any]) -> dict[str, Any]:
        prefix = parse_prefix(str(req.get("address")))
        async with self._lock:
            if prefix is not None:
                await self._dhcp6_mn(req).release(prefix)
            else:
                await self._dhcp_mn(req).release(ipaddress.IPv4Address(req["address"]))
        return {"ok": True, "addresses": [str(a) for a in self.held()],
                "prefixes6": [str(p) for p in self.prefixes6()]}

    async def _cmd_in_use(self, req: dict[str, Any]) -> dict[str, Any]:
        addresses = self._dhcp_mn(req)
        in_use: dict[str, int] = {str(a): n for a, n in addresses.in_use().items()}
        if self.delegations is not None:
            table = addresses.sockets()
            in_use |= {str(p): n for p, n in self.delegations.in_use(table).items()}
        return {"ok": True, "in_use": in_use}

    async def _cmd_dhcp6_duid(self, req: dict[str, Any]) -> dict[str, Any]:
        """The DUID of DHCPv6 lease ``serial``: the DHCPv4 client identifier's name, serial
        and proof (our MAC under the session's MSK) in a DUID-EN, which the AR's DHCPv6
        server checks against the link-local address's EUI-64 (agents/ardhcp6.py)."""
        serial = req.get("serial", 1)
        if not isinstance(serial, int) or isinstance(serial, bool) or serial < 0:
            return {"ok": False, "error": f"serial {serial!r} is not a lease number"}
        duid = self._duid(serial)
        if duid is None:
            return {"ok": False, "error": "not authenticated: no session to prove"}
        return {"ok": True, "duid": duid.hex()}

    async def _cmd_dns_mode(self, req: dict[str, Any]) -> dict[str, Any]:
        try:
            mode = DnsMode(str(req.get("mode")))
        except ValueError:
            return {"ok": False, "error": f"dns mode {req.get('mode')!r} is not lookup|stapled"}
        self.dns_mode = mode
        built = mode is not DnsMode.STAPLED or await self.staples.refresh(self.held())
        return {"ok": built, "dns_mode": str(mode),
                "staple_size": len(self.staples.current(self.held()) or b"")}

    async def staple_loop(self) -> None:
        """Keep the stapled bundle current while in stapled mode (agents/staple.py)."""
        while True:
            if self.dns_mode is DnsMode.STAPLED:
                await self.staples.refresh(self.held())
            await asyncio.sleep(STAPLE_CHECK_S)

    async def tidy_loop(self) -> None:
        """Release, now and then, every older address no connection uses (draft 2.3)."""
        assert self.addresses is not None
        while True:
            await asyncio.sleep(TIDY_S)
            if self.idle or self.current is None:
                continue
            try:
                async with self._lock:
                    gone: list[Any] = await self.addresses.tidy()
                    if self.delegations is not None:
                        gone += await self.delegations.tidy(self.addresses.sockets)
                if gone:
                    log.info("released unused %s", ", ".join(map(str, gone)))
            except (AddressError, OSError, subprocess.SubprocessError) as exc:
                log.warning("tidy: %s", exc)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        assert main is not None
        loop.add_signal_handler(signal.SIGTERM, main.cancel)
        sock_path = self.rundir / Layout.CONTROL
        server = await start_control(sock_path, self.command)
        refresher = asyncio.create_task(self.refresh_keys())
        stapler = asyncio.create_task(self.staple_loop())
        tidy = asyncio.create_task(self.tidy_loop()) if self.addresses else None
        pages, _ = await loop.create_datagram_endpoint(
            lambda: _PageListener(self.on_page), local_addr=("0.0.0.0", self.config.paging_port),
            allow_broadcast=True)
        adverts = None
        if self.ra is not None:
            try:
                adverts = RaListener(self.config.ifname, self.ra.advert, self.ra.dropped)
                adverts.start(loop)
            except OSError as exc:
                log.error("no Router Advertisements (draft 4): %s", exc)
        log.info("%s ready on %s", self.config.identity, sock_path)
        try:
            await server.serve_forever()
        finally:
            refresher.cancel()
            stapler.cancel()
            if tidy is not None:
                tidy.cancel()
            if self.tunnel is not None:
                await self.tunnel.close()
            if self.delegations is not None:
                await self.delegations.close()
            if self.addresses is not None:
                await self.addresses.close()
            pages.close()
            if adverts is not None:
                adverts.close()
            server.close()
            sock_path.unlink(missing_ok=True)
            self.events.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="agents.mn", description=__doc__)
    ap.add_argument("--rundir", required=True, type=Path)
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("--keys", required=True, type=Path, help="provisioned AR keys (JSON)")
    ap.add_argument("--check", action="store_true", help="load everything, then exit")
    args = ap.parse_args(argv)
    if args.check:
        try:
            cfg = MnAgentConfig.load(args.config)
            KeyStore.from_pem(cfg.identity, cfg.key.read_bytes())
            keys = {k.name for k in load_key_list(args.keys)}
        except (OSError, ValueError, KeyError, AuthError) as exc:
            print(f"agents.mn: {exc}", file=sys.stderr)
            return 1
        missing = sorted(set(cfg.ars.values()) - keys)
        if missing:
            print(f"agents.mn: no provisioned key for {', '.join(missing)}", file=sys.stderr)
            return 1
        return 0
    logging.basicConfig(
        filename=str(args.rundir / Layout.AGENT_LOG), level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    pidfile = args.rundir / Layout.AGENT_PID
    pidfile.write_text(f"{os.getpid()}\n")
    try:
        agent = MnAgent(MnAgentConfig.load(args.config), args.rundir, load_key_list(args.keys))
        with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
            asyncio.run(agent.run())
    except Exception as exc:  # noqa: BLE001 - the one place this process reports and exits
        log.exception("mn agent failed")
        print(f"agents.mn: {exc}", file=sys.stderr)
        return 1
    finally:
        pidfile.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
