"""The access-router agent: ExaBGP's API process on each AR.

It originates the AR's pool, keeps the RIB of routes reflected to the AR and mirrors the
best ones into the kernel FIB, and serves the one-message authentication: after a valid
AUTH it re-routes the MN's addresses (agents/handoff.py). stdout carries ExaBGP commands
only; logs go to a file in the node's run directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import ipaddress
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from . import arstate, endofrib, netlink
from . import exabgp_api as api
from .ardhcp6 import ArDhcp6, ArDhcp6Config
from .auth import Authenticator, AuthResult, KeyStore, Limits, Peer, PublishedKey, Role
from .auth.errors import AuthError, UnknownSession
from .contract import (
    ACCESS_GATEWAY,
    REDIRECT_METRIC,
    SRV6_FUNCTIONS,
    ArAgentConfig,
    ArIpv6,
    Command,
    Event,
    Layout,
    Mode,
    ServiceState,
    access_ifname,
    srv6_sid,
)
from .contract import (
    Dhcp6Server as Dhcp6Settings,
)
from .contract import (
    DhcpServer as DhcpSettings,
)
from .control import start_control
from .dhcpd import DhcpServer, DhcpService, Lease, ServerConfig, client_parts
from .dhcpd6 import Binding6
from .dns import (
    LEASE_PTR_TTL,
    DnsError,
    DnssecKeyResolver,
    DnsUpdater,
    TsigKey,
    ValidatingResolver,
)
from .fib import ACCESS_METRIC, METRIC, PARK_METRIC, RTPROT_FLATARCH, KernelFib, Net, Rib
from .fib import Path as FibPath
from .handoff import ArInfo, Attachment, EventLog, Mobility, Redirect
from .handoff6 import AgentPorts, Attached6, Peer6, PrefixMobility
from .idle import IdleTable
from .linkproof import LinkBindings
from .nft import Nft, NftError, SourceFilter
from .paging import Paged, Pager, PagingError, Reinjector, is_for, open_tun, prefix_of
from .ra import RaSender, advertise_rerouted
from .relayauth import ALG_RELAY, ALG_RELAY6, RelayAuth, RelayAuth6
from .staple import StapleService, load_verifier

# How much newer than the AUTH being handled a retry may be and still join it: an MN's tries
# span 1.5 s (6 x 0.3 s, agents/mn.py and population.AUTH_TIMEOUT_S), an AR's 0.75 s.
RETRY_JOIN_US = 2_000_000
AR_KEY_TTL_S = 60.0  # other ARs' keys, for redirects; a DNS lookup saved per handoff
LINK_AUTH_S = 120.0  # an authentication on the access link entitles the station to DHCP
# A FIB pass's status write waits until this long after the previous one: a write
# serialises every route, and written after each UPDATE it was most of an uninvolved AR's
# CPU at 1,000 MNs (issue 15, docs/scale.md). The housekeeping writes every 0.5 s besides.
STATUS_GAP_S = 0.25
# ...and no status write comes sooner than this many times the last one's cost after the
# previous write: at 1,000 MNs a status took 20-40 ms to build, and six a second were a fifth
# of a serving AR's loop at 50 handoffs a second (py-spy, docs/scale.md). A small lab's
# status costs about a millisecond, so its gap stays STATUS_GAP_S.
STATUS_DUTY = 20.0
# The saved state is a snapshot plus a journal of changes (agents/arstate.py): a change costs
# one line, and the housekeeping folds the journal into a new snapshot once it holds this
# many lines, or when it holds any and the last snapshot is this old. A snapshot serialises
# every MN: written after each event it was 20 ms per event at 1,000 MNs (issue 15).
JOURNAL_MAX_RECORDS = 4096
COMPACT_S = 5.0
# A wake-up's passes over the paging device before its route goes: a stream that keeps
# coming must not hold the worker; what is left follows the removal.
UNPARK_DRAIN_ROUNDS = 8

log = logging.getLogger("agents.ar")

# The status names every host route, and ipaddress's str() is pure Python: texts are kept,
# one per prefix or next hop the agent has seen (a population's MNs and the ARs).
_text = functools.lru_cache(maxsize=1 << 16)(str)


class SavingEvents(EventLog):
    """The agent's event log, which also saves the agent's state after each event: every
    change of attachment, announcement or redirect is an event, so the saved state never
    lags what the scenarios read (the save appends the changed entries to the journal)."""

    def __init__(self, path: Path, save: Any) -> None:
        super().__init__(path)
        self._save = save

    def __call__(self, ev: str, **fields: Any) -> None:
        super().__call__(ev, **fields)
        self._save()


class ExaBgpChannel:
    """Writes commands to ExaBGP and matches each one to its acknowledgement."""

    def __init__(self, out: Any) -> None:
        self._out = out
        self._pending: asyncio.Queue[asyncio.Future[bool]] = asyncio.Queue()

    async def send(self, command: str) -> bool:
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        await self._pending.put(fut)
        self._out.write(command + "\n")
        self._out.flush()
        ok = await fut
        if not ok:
            log.warning("exabgp refused: %s", command)
        return ok

    def ack(self, ok: bool) -> None:
        try:
            fut = self._pending.get_nowait()
        except asyncio.QueueEmpty:
            log.warning("acknowledgement with no command pending")
            return
        if not fut.done():
            fut.set_result(ok)


class ArAgent:
    def __init__(self, node: str, rundir: Path, pool: ipaddress.IPv4Network,
                 config: ArAgentConfig | None = None) -> None:
        self.node = node
        self.rundir = rundir
        self.pool = pool
        self.config = config
        self.ars: dict[str, ArInfo] = {
            n: ArInfo(n, e.fqdn, e.loopback, e.pool, e.cluster, e.overlay)
            for n, e in (config.ars.items() if config else ())}
        self.mode = config.mode if config else Mode.REDIRECT
        # What health reads: a service that failed to start makes the lab unhealthy.
        self.services: dict[str, str] = {
            "auth": ServiceState.STARTING if config else ServiceState.OFF,
            "dhcp": ServiceState.STARTING if config and config.dhcp else ServiceState.OFF,
            "dhcp6": (ServiceState.STARTING if config and config.dhcp and config.ipv6
                      and config.ipv6.dhcp6 else ServiceState.OFF),
            "netlink": ServiceState.STARTING,
        }
        self.rib = Rib()
        # pyroute2's synchronous API runs its own event loop, so every netlink call
        # lives on one worker thread; a single worker also keeps FIB changes in order.
        self._fib_thread = ThreadPoolExecutor(1, thread_name_prefix="fib")
        # Handoff steps (access routes, redirects, source filter) get their own worker: they
        # must not queue behind a burst of BGP route syncs. They touch other metrics than
        # the BGP routes, so the two workers never undo each other's kernel state.
        self._handoff_thread = ThreadPoolExecutor(1, thread_name_prefix="handoff")
        pool6 = config.ipv6.pool if config is not None and config.ipv6 is not None else None
        self.fib: KernelFib = self._fib_thread.submit(
            # Our own pools are local (blackhole + addresses); the default comes from OSPF.
            KernelFib, lambda p: p.prefixlen == 0 or p in (pool, pool6)
        ).result()
        self.peers: dict[str, bool] = {}
        self.channel = ExaBgpChannel(sys.stdout)
        self._resync = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.mobility: Mobility | None = None
        self.prefixes: PrefixMobility | None = None  # dual-stack MNs' IPv6 prefixes
        self._ra: RaSender | None = None  # the RA after a handoff (agents/ra.py)
        self.staples: StapleService | None = None
        self.authenticator: Authenticator | None = None
        self._sources: SourceFilter | None = None
        self._peer: Peer | None = None
        self._ar_keys: dict[str, tuple[PublishedKey, float]] = {}
        self._ifnames: dict[int, str] = {}
        self._overlay_index: int | None = None
        self._paging_index: int | None = None
        self._tun_fd: int | None = None
        self._unparking = 0  # wake-ups whose worker reads the paging device (unpark)
        self._reinjector: Reinjector | None = None
        self._pager: Pager | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.dhcp: DhcpServer | None = None
        self._dhcp_service: DhcpService | None = None
        self.dhcp6: ArDhcp6 | None = None  # issue 18: the /64s of the pool by DHCPv6
        self._ptr: DnsUpdater | None = None
        self._keystore: KeyStore | None = None  # for the relay keys shared with other ARs
        self._access_name = access_ifname(node)
        # Who authenticated on the access link with which session: DHCP serves only a
        # station that proves that session in its client identifier (agents/linkproof.py).
        self._on_link = LinkBindings(self._session_msk, LINK_AUTH_S, attached=self._attached_on)
        # Restart recovery (docs/faults.md): what we told ExaBGP, the saved state, and no
        # saving until the saved state has been read back (an empty start would erase it).
        # Every map of the saved state names the keys it changes (arstate.Tracked), so that a
        # save writes only those; the source filter changes on the handoff worker, hence a
        # deque (appends are thread-safe) rather than a set.
        self._dirty: dict[str, set[Any]] = {name: set() for name in arstate.MAPS}
        self._source_changes: deque[Any] = deque()
        self._bgp_out: dict[IPv4Network, arstate.Announced] = arstate.Tracked(
            {}, self._dirty["announced"].add)
        self._state_path = rundir / arstate.STATE_FILE
        self._journal: arstate.Journal | None = None
        self._compacted_at = 0.0  # monotonic time of the last snapshot
        self._compact_due = False  # a journal write failed: the next housekeeping compacts
        # Who is attached by MN name: the DHCP link check asks per request (was a scan).
        self._by_mn: dict[str, set[ipaddress.IPv4Address]] = {}
        self._mn_of: dict[ipaddress.IPv4Address, str] = {}
        self._recovered: arstate.ArState | None = None
        # AUTHs being handled, by everything but their session and timestamp: the handling
        # and the first AUTH's timestamp. A retry joins its original.
        self._handling: dict[AuthResult, tuple[asyncio.Future[Any], int]] = {}
        self.coalesced = 0  # retries answered with the outcome of the AUTH they repeat
        self._persisting = False
        self._exabgp_gone = False
        self.recovery: dict[str, Any] = {"state": "none"}
        # SRv6 for the fast redirect: "in use", or why not (the redirect is then VXLAN).
        self.srv6 = "not tried: an IPv4-only backbone"
        self._eor = endofrib.EndOfRib(
            frozenset({"ipv4 unicast", *(["ipv6 unicast"] if pool6 is not None else [])}),
            frozenset(str(p) for p in config.bgp_peers)
            if config is not None and config.bgp_peers is not None else None)
        self._rib_replay: dict[str, list[api.Route]] | None = None
        self._rib_live: set[tuple[str, Net]] = set()
        self._peer_up = asyncio.Event()
        self._status_timer: asyncio.TimerHandle | None = None
        self._status_at = 0.0  # monotonic time of the last write after a FIB pass
        self._status_written = 0.0  # ... and of the last write of any kind
        self._status_cost = 0.0  # seconds the last status took to build and serialise
        self._batch_lock = threading.Lock()
        self._batch: dict[Net, Any] = {}  # best routes not yet taken by the FIB worker
        self._batch_full = False
        self._batch_queued = False
        # The status file is written by a worker of its own; the status's host routes are
        # kept, and recomputed for the prefixes push() names.
        self._status_thread = ThreadPoolExecutor(1, thread_name_prefix="status")
        self._status_lock = threading.Lock()
        self._status_text: str | None = None
        self._host_rows: dict[str, list[list[Any]]] = {}
        self._host_dirty: set[Net] = set()
        self._host_all = True

    # --- FIB ----------------------------------------------------------------------------

    def _apply(self, best: dict[Net, Any], full: bool) -> None:
        """Worker thread: bring the kernel in line with the given best routes."""
        paths = self.fib.hop_paths
        if full:  # a full pass follows a change of the IGP: next hops resolve anew
            paths.clear()
        for p, route in best.items():
            self.fib.sync(p, route, paths)
        if full:
            for p in set(self.fib.installed) - set(best):
                self.fib.sync(p, None)
        # Read across threads, which is safe: a write already due covers this pass, and
        # a wake-up of the loop per UPDATE costs a system call (issue 15).
        if self._loop is not None and self._status_timer is None:
            self._loop.call_soon_threadsafe(self._status_soon)

    def _status_soon(self) -> None:
        if self._status_timer is None and self._loop is not None:
            wait = self._status_at + self.status_gap() - time.monotonic()
            self._status_timer = self._loop.call_later(max(0.0, wait), self._status_due)

    def status_gap(self) -> float:
        """The least time between two status writes: STATUS_GAP_S, or STATUS_DUTY times the
        last write's cost when that is longer."""
        return max(STATUS_GAP_S, STATUS_DUTY * self._status_cost)

    def _status_due(self) -> None:
        self._status_timer = None
        # Only these writes count toward the gap: a route change shows at once unless
        # another showed less than STATUS_GAP_S ago (the tests wait on single changes).
        self._status_at = time.monotonic()
        self.write_status()

    def push(self, prefixes: set[Net] | None = None) -> None:
        """Snapshot best paths in the loop thread and hand them to the FIB worker.

        Snapshots wait in one batch while the worker has not taken it yet: a burst of
        UPDATEs is one job, not a job each (issue 15). A later snapshot of a prefix is the
        newer one, and a full pass stays full with what joined it (each prefix of the RIB
        is in it), so merging keeps the order the jobs had."""
        full = prefixes is None
        todo = set(self.rib.prefixes()) if prefixes is None else prefixes
        if full:
            self._host_all = True
        else:
            self._host_dirty.update(p for p in todo if self._is_host(p))
        with self._batch_lock:
            self._batch.update({p: self.rib.best(p) for p in todo})
            self._batch_full |= full
            if self._batch_queued:
                return
            self._batch_queued = True
        self._fib_thread.submit(self._apply_batch)

    def _apply_batch(self) -> None:
        with self._batch_lock:
            best, full = self._batch, self._batch_full
            self._batch, self._batch_full, self._batch_queued = {}, False, False
        self._apply(best, full)

    async def _on_handoff(self, fn: Any, *args: Any) -> Any:
        return await self._on_fib(fn, *args, worker=self._handoff_thread)

    async def _on_fib(self, fn: Any, *args: Any,
                      worker: ThreadPoolExecutor | None = None) -> Any:
        t0 = time.perf_counter()
        stamps: list[float] = []

        def timed() -> Any:
            stamps.append(time.perf_counter())
            try:
                return fn(*args)
            finally:
                stamps.append(time.perf_counter())

        try:
            return await asyncio.wrap_future((worker or self._fib_thread).submit(timed))
        finally:
            if len(stamps) == 2 and stamps[1] - t0 > 0.002:
                log.info("fib job %s: queued %.1f ms, ran %.1f ms, back %.1f ms",
                         getattr(fn, "__name__", fn), (stamps[0] - t0) * 1000,
                         (stamps[1] - stamps[0]) * 1000,
                         (time.perf_counter() - stamps[1]) * 1000)

    def _shutdown_fib(self) -> None:
        self.fib.flush()
        self.fib.close()

    def write_status(self) -> None:
        """The status as of now, serialised in the loop, written by the status worker: the
        write and the rename wait on the disk (ext4 flushes a file renamed over another),
        which was a tenth of the loop's time at 1,000 MNs (issue 15). A text not yet
        taken by the worker is replaced by the newer one."""
        self.persist()
        t0 = time.monotonic()
        # No indent: json's C encoder serves only unindented output, ten times faster.
        text = json.dumps(self.status(), sort_keys=True)
        self._status_written = now = time.monotonic()
        self._status_cost = now - t0
        with self._status_lock:
            queued = self._status_text is not None
            self._status_text = text
        if not queued:
            self._status_thread.submit(self._write_status_file)

    def _write_status_file(self) -> None:
        """Status worker: the newest text, write-then-rename."""
        with self._status_lock:
            text, self._status_text = self._status_text, None
        if text is None:
            return
        tmp = self.rundir / "agent.status.json.tmp"
        try:
            tmp.write_text(text)
            tmp.replace(self.rundir / Layout.AGENT_STATUS)
        except OSError as exc:
            log.warning("writing the status: %s", exc)

    def _is_host(self, p: Net) -> bool:
        """An MN's route: a /32, or a dual-stack MN's prefix (the plan's /64)."""
        if p.version == 4:
            return p.prefixlen == 32
        return self.prefixes is not None and p.prefixlen == self.prefixes.mn_prefixlen

    def _host_routes(self) -> dict[str, list[list[Any]]]:
        """Every /32's and MN /64's paths as the status shows them, recomputed only for the
        prefixes that changed since the last status (push() names them): all of them each
        time was a quarter of a status at 1,000 MNs (issue 15)."""
        rows = self._host_rows
        if self._host_all:
            rows.clear()
            todo: set[Net] = {p for p in self.rib.prefixes() if self._is_host(p)}
            self._host_all = False
            self._host_dirty = set()
        else:
            todo, self._host_dirty = self._host_dirty, set()
        for p in todo:
            paths = self.rib.paths(p)
            if paths:
                rows[_text(p)] = sorted([_text(r.next_hop), r.local_pref] for r in paths)
            else:
                rows.pop(_text(p), None)
        return dict(rows)

    def status(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "time": time.time(),
            "peers": self.peers,
            "rib_prefixes": len(self.rib.prefixes()),
            # A snapshot in one C-level step: the FIB worker thread changes the dict meanwhile.
            "fib_routes": {_text(p): _text(r.next_hop)
                           for p, (r, _) in list(self.fib.installed.items())},
            "mobility": self.mobility.status() if self.mobility else {},
            "prefixes": self.prefixes.status() if self.prefixes else {},
            # Host routes as this AR hears them: every path's next hop and LOCAL_PREF.
            "rib_host_routes": self._host_routes(),
            "auth": {**self.authenticator.stats, "coalesced": self.coalesced}
            if self.authenticator else {},
            "dhcp": self.dhcp.status() if self.dhcp else {},
            "dhcp6": self.dhcp6.status() if self.dhcp6 else {},
            "mode": str(self.mode),
            "services": dict(self.services),
            "recovery": dict(self.recovery),
            "redirect_tunnel": {"kind": self.fib.redirect_tunnel, "srv6": self.srv6},
        }

    # --- the handoff's kernel, BGP and AR-to-AR parts (handoff.Kernel / Bgp / Redirector) --

    def _attach_now(self, address: ipaddress.IPv4Address, ifindex: int) -> None:
        """FIB thread, one job: the host route, then the source filter's entry."""
        self.fib.add_access(address, ifindex)
        if self._sources is not None:
            ifname = self._ifnames.get(ifindex) or self.fib.ifname(ifindex)
            self._ifnames[ifindex] = ifname
            self._sources.allow(ifname, address)

    def _detach_now(self, address: ipaddress.IPv4Address) -> None:
        self.fib.del_access(address)
        if self._sources is not None:
            self._sources.revoke_address(address)

    async def attach(self, address: ipaddress.IPv4Address, ifindex: int) -> None:
        await self._on_handoff(self._attach_now, address, ifindex)

    async def detach(self, address: ipaddress.IPv4Address) -> None:
        await self._on_handoff(self._detach_now, address)

    def _redirect_now(self, address: ipaddress.IPv4Address, via: ipaddress.IPv4Address,
                      detach: bool) -> bool:
        if self._overlay_index is None:
            log.warning("no redirect overlay device: cannot redirect %s", address)
            ok = False
        else:
            ok = self.fib.add_redirect(address, via, self._overlay_index)
        if detach:
            self._detach_now(address)
        return ok

    async def redirect(self, address: ipaddress.IPv4Address, via: ipaddress.IPv4Address,
                       detach: bool) -> bool:
        return bool(await self._on_handoff(self._redirect_now, address, via, detach))

    def _park_now(self, address: ipaddress.IPv4Address) -> None:
        if self._paging_index is None:
            raise RuntimeError("no paging device")
        self.fib.add_park(address, self._paging_index)
        self._detach_now(address)

    async def park(self, address: ipaddress.IPv4Address) -> None:
        await self._on_handoff(self._park_now, address)

    def _unpark_now(self, address: Paged, device: str | None,
                    late: deque[bytes] | None) -> None:
        """Remove the paging route (a /32's or a /64's) once what it caught has gone on, so
        that no packet the new route carries overtakes an older one. Through a device, the
        caught packets go on while the route still holds new ones back, until a read finds
        none; only the few that come in during the route's removal are left to follow it.
        Without one (the routing table), they can only follow the removal: sent before it,
        they would come back into the device. Other keys' packets go back to the loop, to be
        buffered as usual."""
        fd, loop, out = self._tun_fd, self._loop, self._reinjector
        if fd is None or loop is None or out is None:
            self.fib.del_park(address)
            return

        def caught() -> list[bytes]:
            mine: list[bytes] = []
            while late:  # read by the loop since the wake-up began: older than the device's
                mine.append(late.popleft())
            while True:
                try:
                    packet = os.read(fd, 65535)
                except OSError:
                    break
                if is_for(packet, address):
                    mine.append(packet)
                else:
                    loop.call_soon_threadsafe(self._buffered, packet)
            return mine

        if device is not None:
            for _ in range(UNPARK_DRAIN_ROUNDS):
                mine = caught()
                if not mine:
                    break
                out.send(mine, device)
        self.fib.del_park(address)
        mine = caught()
        if mine:
            out.send(mine, device)

    async def unpark(self, address: Paged, via: str | None = None,
                     late: deque[bytes] | None = None) -> None:
        # The worker alone reads the paging device meanwhile: a packet the loop read would
        # be sent only after the worker, behind what the new route already carried.
        fd, loop = self._tun_fd, asyncio.get_running_loop()
        if fd is not None and self._unparking == 0:
            loop.remove_reader(fd)
        self._unparking += 1
        try:
            await self._on_handoff(self._unpark_now, address, self._device(via), late)
        finally:
            self._unparking -= 1
            if fd is not None and self._unparking == 0 and self._tun_fd == fd:
                loop.add_reader(fd, self._tun_readable)

    def _device(self, via: str | None) -> str | None:
        if self.config is None:
            return None
        return {"access": access_ifname(self.config.node),
                "overlay": self.config.overlay_dev}.get(via or "")

    async def reinject(self, packets: list[bytes], via: str | None) -> int:
        if self._reinjector is None or self.config is None:
            return 0
        return int(await self._on_handoff(self._reinjector.send, packets, self._device(via)))

    def page_local(self, addresses: Sequence[Paged]) -> None:
        if self._pager is not None and self.config is not None:
            try:
                self._pager.page(addresses, self.config.identity)
            except OSError as exc:
                log.warning("page on the access link failed: %s", exc)

    async def send_page(self, target: ArInfo,
                        addresses: list[ipaddress.IPv4Address]) -> list[ipaddress.IPv4Address]:
        """Ask another AR of the Tracking Area to page: the same one-message AUTH, flag G."""
        return await self._ar_auth(target, addresses, page=True, origin_us=None)

    async def send_page6(self, node: str, prefixes: list[ipaddress.IPv6Network]) -> object:
        """The page of an idle MN's /64s at another AR of its list (issue 18)."""
        return await self._ar_auth_prefixes(self.ars[node], list(prefixes), page=True)

    def _buffered(self, packet: bytes) -> None:
        """A packet out of the paging device, to the table of its family."""
        if packet[:1] and packet[0] >> 4 == 6:
            if self.prefixes is not None and self.prefixes.paging is not None:
                self.prefixes.paging.on_buffered(packet)
            return
        if self.mobility is not None:
            self.mobility.on_buffered(packet)

    def _tun_readable(self) -> None:
        fd = self._tun_fd
        if fd is None:
            return
        for _ in range(256):
            try:
                packet = os.read(fd, 65535)
            except BlockingIOError:
                return
            except OSError as exc:
                log.warning("paging device read: %s", exc)
                return
            self._buffered(packet)

    async def start_srv6(self, cfg: ArAgentConfig, six: ArIpv6, oif: int) -> None:
        """Issue 18: the fast redirect over SRv6 where the kernel has it: our End.DX4 and
        End.DX6 SIDs, every peer's by its overlay address; else the VXLAN overlay stays,
        and the status says why."""
        own = {v: srv6_sid(six.pool, v) for v in SRV6_FUNCTIONS}
        peers: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, ipaddress.IPv6Address] = {}
        for n, ar in self.ars.items():
            if n == cfg.node or n not in six.pools:
                continue
            peers[ar.overlay] = srv6_sid(six.pools[n], 4)
            if n in six.overlays:
                peers[six.overlays[n]] = srv6_sid(six.pools[n], 6)
        try:
            await self._on_fib(self.fib.enable_srv6, own, oif, peers)
        except netlink.NetlinkError as exc:
            self.srv6 = f"unavailable, the redirect uses VXLAN: {exc}"
            log.info("SRv6 %s", self.srv6)
            return
        self.srv6 = "in use"
        log.info("the fast redirect uses SRv6: SIDs %s", ", ".join(map(str, own.values())))

    async def start_paging(self, cfg: ArAgentConfig) -> None:
        try:
            self._tun_fd = open_tun(cfg.paging_dev)
            index = await self._on_fib(self.fib.index_of, cfg.paging_dev)
            if index is None:
                raise PagingError(0, f"{cfg.paging_dev} did not appear")
            await self._on_fib(self.fib.link_up, index)
            self._paging_index = index
            self._reinjector = Reinjector()
            self._pager = Pager(access_ifname(cfg.node), cfg.paging.port)
        except (OSError, PagingError) as exc:
            log.error("idle mode unavailable: %s", exc)
            return
        asyncio.get_running_loop().add_reader(self._tun_fd, self._tun_readable)

    async def unredirect(self, address: ipaddress.IPv4Address) -> None:
        # On the FIB worker, behind the sync that installed the BGP route which made the
        # redirect unnecessary: removing it first would leave a gap (at the pool owner, the
        # pool's blackhole).
        await self._on_fib(self.fib.del_redirect, address)
        self.push({IPv4Network((address, 32))})

    def announce(self, prefix: ipaddress.IPv4Network, local_pref: int,
                 escape: bool = False) -> None:
        assert self.config is not None
        communities = (self.config.escape_community,) if escape else ()
        self._bgp_out[prefix] = arstate.Announced(local_pref, escape)
        self._spawn(self.channel.send(api.announce(prefix, local_pref, communities)))
        self.persist()

    def withdraw(self, prefix: ipaddress.IPv4Network) -> None:
        self._bgp_out.pop(prefix, None)
        self._spawn(self.channel.send(api.withdraw(prefix)))
        self.persist()

    async def send_redirect(self, target: ArInfo, addresses: list[ipaddress.IPv4Address],
                            origin_us: int | None) -> list[ipaddress.IPv4Address]:
        """The one-message AUTH from this AR's key to the previous AR's, over the backbone,
        carrying the time of the MN's AUTH it follows (flag O)."""
        return await self._ar_auth(target, addresses, page=False, origin_us=origin_us)

    async def send_redirect6(self, target: Peer6, prefixes: list[ipaddress.IPv6Network],
                             origin_us: int | None) -> list[ipaddress.IPv6Network]:
        """The IPv6 redirect: the same one-message AUTH, listing the MN's /64s (issue 18)."""
        done = await self._ar_auth_prefixes(self.ars[target.node], list(prefixes), page=False,
                                            origin_us=origin_us)
        return [p for p in done if isinstance(p, ipaddress.IPv6Network)]

    async def _ar_auth(self, target: ArInfo, addresses: list[ipaddress.IPv4Address], *,
                       page: bool, origin_us: int | None) -> list[ipaddress.IPv4Address]:
        done = await self._ar_auth_prefixes(
            target, [IPv4Network((a, 32)) for a in addresses], page=page, origin_us=origin_us)
        return [p.network_address for p in done
                if isinstance(p.network_address, ipaddress.IPv4Address)]

    async def _ar_auth_prefixes(self, target: ArInfo,
                                prefixes: list[IPv4Network | ipaddress.IPv6Network], *,
                                page: bool, origin_us: int | None = None
                                ) -> list[IPv4Network | ipaddress.IPv6Network]:
        assert self._peer is not None and self.config is not None
        key = await self._ar_key(target.fqdn)
        session = await self._peer.authenticate(
            (str(target.loopback), self.config.auth_port), target.fqdn,
            prefixes, mobility=True, ar_key=key, timeout=0.25, retries=3, page=page,
            origin_us=origin_us,
        )
        session.close()
        return list(session.rerouted)

    async def _ar_key(self, fqdn: str) -> PublishedKey:
        cached = self._ar_keys.get(fqdn)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        assert self._peer is not None
        key = await self._key_resolver.resolve(fqdn)
        self._ar_keys[fqdn] = (key, now + AR_KEY_TTL_S)
        return key

    async def keep_ar_keys_warm(self, keystore: KeyStore) -> None:
        """Resolve every other AR's key and run the ECDH ahead of time, then keep them fresh:
        a redirect or a redirect's verification then costs neither a DNS lookup nor an ECDH."""
        assert self.config is not None and self.authenticator is not None
        zero = bytes(16)
        while True:
            failed = 0
            for ar in self.ars.values():
                if ar.node == self.config.node:
                    continue
                try:
                    key = await self._key_resolver.resolve(ar.fqdn)
                except Exception as exc:  # noqa: BLE001 - retried on the next round
                    log.debug("warming key of %s: %s", ar.fqdn, exc)
                    failed += 1
                    continue
                self._ar_keys[ar.fqdn] = (key, time.monotonic() + AR_KEY_TTL_S)
                self.authenticator.prime_key(key)
                keystore.derive_msk(key, Role.PEER, zero, zero)
            # The DNS plane starts after the ARs: until every key resolves, retry soon.
            await asyncio.sleep(1.0 if failed else AR_KEY_TTL_S / 2)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- ExaBGP events ------------------------------------------------------------------

    def handle(self, event: api.Event) -> None:
        if isinstance(event, api.Ack):
            self.channel.ack(event.ok)
        elif isinstance(event, api.PeerState):
            self.peers[event.peer] = event.up
            if event.up:
                self._peer_up.set()
            self._eor.session(event.peer, event.up)
            log.info("peer %s %s %s", event.peer, "up" if event.up else "down", event.reason)
            changed = self.rib.drop_peer(event.peer) if not event.up else set()
            self.push(changed)
            if self.mobility is not None:
                self.mobility.on_rib_change(changed)
            if self.prefixes is not None:
                self.prefixes.on_rib_change(changed)
        elif isinstance(event, api.Update) and not event.eor:
            # A restarted agent hears no neighbour change for sessions that stayed up.
            self.peers.setdefault(event.peer, True)
            if self._rib_replay is not None:
                self._rib_live.update((event.peer, p) for p in
                                      [*(r.prefix for r in event.announced), *event.withdrawn])
            changed = self.rib.update(event.peer, event.announced, event.withdrawn,
                                      event.withdrawn_ids)
            self.push(changed)
            if self.mobility is not None:
                self.mobility.on_rib_change(changed)
            if self.prefixes is not None:
                self.prefixes.on_rib_change(changed)
        elif isinstance(event, api.Update):  # End-of-RIB: that peer's table of a family is in
            self._eor.end_of_rib(event.peer, event.family)

    def _watch_kernel_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        def state(value: str) -> None:
            self.services["netlink"] = value
            loop.call_soon_threadsafe(self.write_status)

        try:
            loop.call_soon_threadsafe(state, ServiceState.UP)
            self.watch_kernel(loop)
            loop.call_soon_threadsafe(state, f"{ServiceState.FAILED}: the monitor ended")
        except Exception as exc:  # noqa: BLE001 - a dead monitor is reported, not raised
            log.exception("netlink monitor failed")
            loop.call_soon_threadsafe(state, f"{ServiceState.FAILED}: {exc}")

    def watch_kernel(self, loop: asyncio.AbstractEventLoop) -> None:
        """Thread: any route or link change not made by us may move a BGP next hop. A raw
        netlink socket, reading only the header and the route's protocol: parsing every
        message in Python would hold the interpreter lock against the handoff path while
        our own FIB changes stream by."""
        six = netlink.RTMGRP_IPV6_ROUTE if self.config and self.config.ipv6 else 0  # OSPFv3
        for kind, payload in netlink.monitor(netlink.RTMGRP_LINK | netlink.RTMGRP_IPV4_ROUTE
                                             | six):
            if kind in (netlink.RTM_NEWROUTE, netlink.RTM_DELROUTE):
                if netlink.route_proto(payload) == RTPROT_FLATARCH:
                    continue
            elif kind not in (netlink.RTM_NEWLINK, netlink.RTM_DELLINK):
                continue
            loop.call_soon_threadsafe(self._resync.set)

    async def resync_loop(self) -> None:
        while True:
            await self._resync.wait()
            # Coalesce an SPF's burst of route changes into one pass.
            await asyncio.sleep(0.01)
            self._resync.clear()
            self.push(None)

    async def housekeeping(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            if self.mobility is not None:
                self.mobility.expire()
            if self.prefixes is not None:
                self.prefixes.expire()
            if self.dhcp is not None:
                self.dhcp.expire()
            if self.dhcp6 is not None:
                self.dhcp6.expire()
            gap = self.status_gap()
            if gap <= STATUS_GAP_S or time.monotonic() - self._status_written >= gap:
                self.write_status()
            self._maybe_compact()

    # --- restart recovery (docs/faults.md) -------------------------------------------------

    # One saved entry of each map, as of now (None: the entry is gone): the snapshot and the
    # journal write the same records.
    @staticmethod
    def _attached_record(att: Attachment) -> arstate.Attached:
        return arstate.Attached(att.mn, att.ifindex, att.stamp)

    @staticmethod
    def _redirect_record(red: Redirect) -> arstate.Redirected:
        return arstate.Redirected(red.target.node, red.deadline)

    @staticmethod
    def _lease_record(x: Lease) -> arstate.LeaseRecord:
        return arstate.LeaseRecord(x.address, x.client_id, x.mn, x.chaddr, x.expires, x.bound,
                                   x.remote_renewals)

    def snapshot(self) -> arstate.ArState:
        """What a restarted agent of this node needs, as of now (the loop thread)."""
        m = self.mobility
        return arstate.ArState(
            node=self.node,
            attached={a: self._attached_record(att)
                      for a, att in (m.attached.items() if m else ())},
            announced=dict(self._bgp_out),
            redirects={a: self._redirect_record(r)
                       for a, r in (m.redirects.items() if m else ())},
            leases=tuple(self._lease_record(x)
                         for x in (list(self.dhcp.leases.values()) if self.dhcp else ())),
            sources=self._sources.members() if self._sources else {},
            attached6={p: self._attached6_record(att)
                       for p, att in (self.prefixes.attached.items() if self.prefixes else ())},
            announced6={p: self._announced6_record(p)
                        for p in (self.prefixes.announced if self.prefixes else ())},
            bindings6={k: self._binding6_record(b)
                       for k, b in (self.dhcp6.server.bindings.items() if self.dhcp6 else ())},
        )

    @staticmethod
    def _binding6_record(b: Binding6) -> arstate.Binding6Record:
        return arstate.Binding6Record(b.prefix, b.duid, b.mn, b.iaid, b.peer, b.expires,
                                      b.bound, b.remote_renewals)

    @staticmethod
    def _attached6_record(att: Attached6) -> arstate.Attached:
        return arstate.Attached(att.mn, att.ifindex, att.stamp)

    def _announced6_record(self, prefix: ipaddress.IPv6Network) -> arstate.Announced:
        assert self.prefixes is not None
        return arstate.Announced(self.prefixes.announced[prefix],
                                 prefix in self.prefixes.escaped)

    def persist(self) -> None:
        """Save what changed since the last save: one journal line per changed entry, in
        one write, so the cost follows the change, not the state. The first save writes the
        snapshot. A failed write is logged, never raised (the routes matter more than their
        record), and the next housekeeping writes a snapshot instead."""
        if not self._persisting:
            return
        if self._journal is None:
            self.compact()
            return
        lines = self._changes()
        if not lines:
            return
        try:
            self._journal.append(lines)
        except OSError as exc:
            log.warning("journal of the state: %s", exc)
            self._compact_due = True

    def _changes(self) -> list[bytes]:
        """The journal lines of every entry changed since the last save (the loop thread)."""
        now = time.time()
        m = self.mobility
        # Each map's entries as they are now, and how one is saved from its key and entry
        # (None: it is gone).
        maps: dict[str, tuple[Any, Callable[[Any, Any], Any]]] = {
            "attached": (m.attached if m else {}, lambda k, att: self._attached_record(att)),
            "announced": (self._bgp_out, lambda k, ann: ann),
            "redirects": (m.redirects if m else {}, lambda k, r: self._redirect_record(r)),
            "leases": (self.dhcp.leases if self.dhcp else {},
                       lambda k, x: self._lease_record(x)),
            "attached6": (self.prefixes.attached if self.prefixes else {},
                          lambda k, att: self._attached6_record(att)),
            # The LOCAL_PREF is the entry; its escape tag is kept apart (escaped).
            "announced6": (self.prefixes.announced if self.prefixes else {},
                           lambda k, lp: self._announced6_record(k)),
            "bindings6": (self.dhcp6.server.bindings if self.dhcp6 else {},
                          lambda k, b: self._binding6_record(b)),
        }
        out: list[bytes] = []
        for name, (entries, record) in maps.items():
            keys = self._dirty[name]
            for k in keys:
                entry = entries.get(k)
                out.append(arstate.record_line(name, k, None if entry is None
                                               else record(k, entry), now))
            keys.clear()
        if self._source_changes:
            changed = set()
            while self._source_changes:
                changed.add(self._source_changes.popleft())
            for a in changed:
                if isinstance(a, ipaddress.IPv4Address) and self._sources is not None:
                    out.append(arstate.record_line("sources", a,
                                                   self._sources.names(a) or None, now))
        return out

    def compact(self) -> None:
        """Write the full snapshot, then empty the journal (housekeeping, off the handoff
        path). Killed in between, the next agent replays the old journal over the new
        snapshot, which changes nothing (arstate: lines set entries as they are now)."""
        if not self._persisting:
            return
        # Forget the changes first: one made meanwhile on the handoff worker is then both
        # in the snapshot and journalled again, never in neither.
        for keys in self._dirty.values():
            keys.clear()
        self._source_changes.clear()
        self._compact_due = False
        self._compacted_at = time.monotonic()
        state = self.snapshot()
        try:
            arstate.save(self._state_path, dataclasses.replace(state, saved_at=time.time()))
            if self._journal is None:
                self._journal = arstate.Journal(arstate.journal_path(self._state_path),
                                                self.node)
            self._journal.reset()
        except OSError as exc:
            log.warning("saving state: %s", exc)
            self._compact_due = True

    def _maybe_compact(self) -> None:
        j = self._journal
        if j is None or self._compact_due or j.records >= JOURNAL_MAX_RECORDS or (
                j.records and time.monotonic() - self._compacted_at >= COMPACT_S):
            self.compact()

    def _attached_changed(self, address: ipaddress.IPv4Address) -> None:
        """Mobility's attachments changed at ``address``: journal it, keep the index."""
        self._dirty["attached"].add(address)
        old = self._mn_of.pop(address, None)
        if old is not None:
            held = self._by_mn.get(old)
            if held is not None:
                held.discard(address)
                if not held:
                    del self._by_mn[old]
        att = self.mobility.attached.get(address) if self.mobility else None
        if att is not None:
            self._mn_of[address] = att.mn
            self._by_mn.setdefault(att.mn, set()).add(address)

    def _track6(self, pm: PrefixMobility) -> None:
        """PrefixMobility's saved maps, likewise; each change is saved at once (the IPv6
        steps have no announce() of the agent's own to hang the save on)."""
        def changed(name: str) -> Callable[[Any], None]:
            def mark(key: Any) -> None:
                self._dirty[name].add(key)
                self.persist()
            return mark

        pm.attached = arstate.Tracked(pm.attached, changed("attached6"))
        pm.announced = arstate.Tracked(pm.announced, changed("announced6"))

    def _track(self, m: Mobility) -> None:
        """Mobility's saved maps, made to name their changes (before anything is in them
        but what recovery puts there, which the first snapshot covers)."""
        m.attached = arstate.Tracked(m.attached, self._attached_changed)
        m.redirects = arstate.Tracked(m.redirects, self._dirty["redirects"].add)
        for a in list(m.attached):
            self._attached_changed(a)

    @staticmethod
    def _flatarch_routes(version: int = 4) -> list[tuple[Any, int]]:
        """FIB thread: (prefix, metric) of every route of ours in the main table, of IP
        ``version``."""
        res = subprocess.run(["ip", "-j", f"-{version}", "route", "show", "table", "main",
                              "proto", str(RTPROT_FLATARCH)],
                             capture_output=True, text=True, timeout=10)
        out: list[tuple[Any, int]] = []
        try:
            rows = json.loads(res.stdout or "[]")
        except json.JSONDecodeError:
            return out
        net = IPv4Network if version == 4 else ipaddress.IPv6Network
        for r in rows if isinstance(rows, list) else ():
            if isinstance(r, dict) and r.get("dst") not in (None, "default"):
                with contextlib.suppress(ValueError, TypeError):
                    out.append((net(str(r["dst"]), strict=False), int(r.get("metric", 0))))
        return out

    def _sweep_now(self, kernel: list[tuple[IPv4Network, int]],
                   attached: set[ipaddress.IPv4Address],
                   redirected: set[ipaddress.IPv4Address]) -> int:
        """FIB thread: remove what the previous agent left in the kernel and nobody now
        holds; its BGP routes are adopted, so that the first full sync after the refresh
        replaces or removes them. Returns how many routes were removed."""
        removed = 0
        for prefix, metric in kernel:
            a = prefix.network_address
            if metric == METRIC:
                self.fib.installed[prefix] = (api.Route(prefix, ipaddress.IPv4Address(0), 0),
                                              FibPath("", 0))
            elif metric == ACCESS_METRIC and a not in attached:
                self.fib.access[a] = 0
                self._detach_now(a)
                removed += 1
            elif metric == REDIRECT_METRIC and a not in redirected:
                self.fib.redirected[a] = ipaddress.IPv4Address(0)
                self.fib.del_redirect(a)
                removed += 1
            elif metric == PARK_METRIC:  # the paging buffer died with the agent
                self.fib.parked[a] = 0
                self.fib.del_park(a)
                removed += 1
        return removed

    async def recover(self, access: int | None) -> None:
        """Bring back what the previous agent of this node held, checked against the
        network: attachments on our access link, their /32s at the LOCAL_PREF they earned,
        redirects still in their lifetime; everything else the kernel or ExaBGP still holds
        is removed. The RIB, refreshed from the reflectors, then withdraws what a newer
        route elsewhere superseded while we were down (Mobility's usual check)."""
        refused = False
        journal = arstate.JournalReport()
        try:
            state, journal = arstate.load_report(self._state_path, self.node)
        except arstate.StateError as exc:
            log.error("saved state refused, starting clean and re-learning: %s", exc)
            self.recovery = {"state": "refused", "reason": str(exc)}
            state, refused = None, True
        if journal.error is not None:
            # The snapshot alone, then the network's replay below, as after any older state.
            log.error("state journal left out, recovering from the snapshot: %s", journal.error)
        m = self.mobility
        if access is None or m is None:  # the HA keeps no access state of its own
            return
        self._recovered = state
        now = time.time()
        attached = {a: v for a, v in (state.attached.items() if state else ())
                    if v.ifindex == access}
        redirects = {a: v for a, v in (state.redirects.items() if state else ())
                     if v.deadline > now and v.target in self.ars and a not in attached}
        kernel = await self._on_fib(self._flatarch_routes)
        for a, att in attached.items():
            await self.attach(a, att.ifindex)
            m.attached[a] = Attachment(att.mn, att.ifindex, now, att.stamp)
        for a, red in redirects.items():
            target = self.ars[red.target]
            if await self.redirect(a, target.overlay, detach=False):
                m.redirects[a] = Redirect(target, red.deadline)
                m.superseded_by[a] = target.fqdn
        if self._sources is not None:
            try:
                if refused:
                    self._sources.flush()
                for a, names in (state.sources.items() if state else ()):
                    for name in names:
                        self._sources.adopt(name, a)
                    if a not in attached:
                        await self._on_handoff(self._sources.revoke_address, a)
            except NftError as exc:
                log.warning("recovering the source filter: %s", exc)
        removed = await self._on_fib(self._sweep_now, kernel, set(attached), set(redirects))
        if refused:
            # Spawned, not awaited: the acknowledgements are read by run()'s loop, which
            # starts after the authentication service.
            self._spawn(self._clean_announcements())
        withdrawn = 0
        for prefix, ann in (state.announced.items() if state else ()):
            if prefix.network_address in attached and prefix.prefixlen == 32:
                m.announced[prefix.network_address] = ann.local_pref
                m.set_escape(prefix.network_address, ann.escape)
                self.announce(prefix, ann.local_pref, ann.escape)
            else:
                self.withdraw(prefix)
                withdrawn += 1
        six = await self._recover6(state, access)
        self._spawn(self._replay_rib())
        if state is not None:
            self.recovery = {"state": "recovered", "saved_at": state.saved_at, "at": now,
                             "attached": len(attached), "announced": len(m.announced),
                             "redirects": len(m.redirects), "withdrawn": withdrawn,
                             "removed_routes": removed,
                             "dropped_attached": len(state.attached) - len(attached),
                             "journal": len(journal.records), "journal_torn": journal.torn,
                             **six}
            if journal.error is not None:
                self.recovery["journal_refused"] = journal.error
        m.events(Event.RECOVERED, **{k: v for k, v in self.recovery.items() if k != "state"},
                 state=self.recovery["state"])

    async def _recover6(self, state: arstate.ArState | None, access: int) -> dict[str, int]:
        """recover() for dual-stack MNs' /64s (issue 18): those attached on our access link
        come back at the LOCAL_PREF they earned and are announced again as they were; a /64
        we announced but no longer hold is withdrawn; our kernel routes for /64s nobody
        holds go, and the IPv6 source set keeps only what came back. Redirects of /64s last
        seconds and are not saved: one that was under way is gone."""
        pm = self.prefixes
        if pm is None:
            return {}
        now = time.time()
        attached = {p: v for p, v in (state.attached6.items() if state else ())
                    if v.ifindex == access}
        if self._sources is not None:
            try:
                await self._on_handoff(self._sources.flush6)
            except NftError as exc:
                log.warning("recovering the IPv6 source filter: %s", exc)
        for p, att in attached.items():
            await pm.kernel.attach6(p, att.ifindex)
            pm.attached[p] = Attached6(att.mn, att.ifindex, att.stamp, since=now)
        withdrawn = 0
        for p, ann in (state.announced6.items() if state else ()):
            if p in attached:
                if ann.escape:
                    pm.escaped.add(p)
                pm.announced[p] = ann.local_pref
                pm.bgp.announce6(p, ann.local_pref, ann.escape)
            else:
                pm.bgp.withdraw6(p)
                withdrawn += 1
        removed = await self._on_fib(self._sweep6_now, set(attached))
        return {"attached6": len(attached), "announced6": len(pm.announced),
                "withdrawn6": withdrawn, "removed_routes6": removed}

    def _sweep6_now(self, attached: set[ipaddress.IPv6Network]) -> int:
        """FIB thread: the previous agent's /64 routes that nobody now holds (access,
        redirect, paging) go; its BGP routes are adopted for the first full sync, as IPv4's."""
        removed = 0
        for prefix, metric in self._flatarch_routes(6):
            if metric == METRIC:
                self.fib.installed[prefix] = (api.Route(prefix, ipaddress.IPv6Address(0), 0),
                                              FibPath("", 0))
            elif metric == ACCESS_METRIC and prefix not in attached:
                self.fib.access[prefix] = 0
                self.fib.del_access(prefix)
                removed += 1
            elif metric == REDIRECT_METRIC:
                self.fib.redirected6[prefix] = ipaddress.IPv6Address(0)
                self.fib.del_redirect6(prefix)
                removed += 1
            elif metric == PARK_METRIC:  # the paging buffer died with the agent
                self.fib.parked[prefix] = 0
                self.fib.del_park(prefix)
                removed += 1
        return removed

    async def _clean_announcements(self) -> None:
        await self.channel.send(api.clear_adj_rib_out())
        await self.channel.send(api.announce(self.pool))

    async def _replay_rib(self) -> None:
        """Learn the routes ExaBGP's sessions received before this agent started (its
        Adj-RIB-In), then let the FIB drop the previous agent's routes nobody names. A live
        update that arrives meanwhile is newer than the listing: it wins."""
        self._rib_replay, self._rib_live = {}, set()
        ok = await self.channel.send(api.show_adj_rib_in())
        got, live = self._rib_replay, self._rib_live
        self._rib_replay = None
        for peer, routes in got.items():
            fresh = [r for r in routes if (peer, r.prefix) not in live]
            self.handle(api.Update(peer, fresh))
        log.info("adj-rib-in replayed (%s): %d routes from %d peers", "ok" if ok else "refused",
                 sum(len(r) for r in got.values()), len(got))
        how = "listed"
        if not got or self._peer_up.is_set():
            # A new ExaBGP (or a session new since we started): its sessions send everything,
            # each table ending with End-of-RIB; until then the old routes stay.
            if await self._eor.wait(set(got), self._up_peers, endofrib.EOR_WAIT_S):
                how = "end-of-rib"
            else:
                how = "deadline"
                log.warning("no End-of-RIB from every BGP peer in %.0f s (%s): refreshing the "
                            "FIB without it", endofrib.EOR_WAIT_S, sorted(self._eor.received))
        self.recovery["rib_refresh"] = how
        self.push(None)
        self.write_status()

    def _up_peers(self) -> set[str]:
        return {p for p, up in self.peers.items() if up}

    def _rib_line(self, text: str) -> None:
        if self._rib_replay is None:
            log.warning("adj-rib line with no listing asked for: %s", text[:80])
            return
        try:
            parsed = api.parse_rib_line(text)
        except api.ApiError as exc:
            log.warning("ignoring adj-rib line: %s", exc)
            return
        if parsed is not None:
            self._rib_replay.setdefault(parsed[0], []).append(parsed[1])

    def _restore_leases(self) -> None:
        """The previous agent's leases still running, back in the DHCP server."""
        state, server = self._recovered, self.dhcp
        if state is None or server is None:
            return
        now = time.time()
        for x in state.leases:
            if x.expires > now and x.address in self.pool:
                server.leases[x.client_id] = Lease(x.address, x.client_id, x.mn, x.chaddr,
                                                   x.expires, x.bound, x.remote_renewals)
        self.recovery["leases"] = len(server.leases)

    # --- authentication service ---------------------------------------------------------

    async def start_auth(self) -> None:
        cfg = self.config
        assert cfg is not None
        keystore = self._keystore = KeyStore.from_pem(cfg.identity, cfg.key.read_bytes())
        validating = ValidatingResolver(cfg.resolver, cfg.resolver_port, timeout=1.0)
        self._key_resolver = DnssecKeyResolver(validating)
        events = SavingEvents(self.rundir / Layout.EVENTS, self.persist)
        # Stapled AUTHs (issue 17): validated offline, else the same lookups as without.
        self.staples = StapleService(self._key_resolver, validating,
                                     load_verifier(cfg.trust_anchor), events)
        access = await self._access_index(cfg)
        self.mobility = Mobility(
            me=self.ars[cfg.node], ars=self.ars, managed=cfg.managed,
            checker=self.staples, kernel=self, bgp=self, rib=self.rib,
            redirector=self.send_redirect, mode=self._mode,
            on_access_link=lambda ifindex: self._serves(access, ifindex),
            events=events, tal=cfg.tal, pager=self.page_local, page_remote=self.send_page,
            paging_bound=cfg.paging.buffer, paging_timeout_s=cfg.paging.timeout_s,
            home_agents={n: h.next_hop for n, h in cfg.home_agents.items()},
            tunnel=lambda: self.fib.redirect_tunnel,
        )
        self._track(self.mobility)
        if cfg.ipv6 is not None:  # issue 18: the IPv6 prefixes of dual-stack MNs
            six = cfg.ipv6
            self.prefixes = PrefixMobility(
                loopback=six.loopback, pool=six.pool, managed=six.managed,
                mn_prefixlen=six.mn_prefixlen, rib=self.rib, events=events,
                # Its own socket: the families' checks run side by side, and an ICMP error
                # fails every lookup waiting on a socket (test_ha6 refuses reverse IPv6
                # lookups with one, and the MN's IPv4 claim was refused with it).
                checker=ValidatingResolver(cfg.resolver, cfg.resolver_port, timeout=1.0),
                clusters={six.loopbacks[n]: c for n, c in six.clusters.items()
                          if n in six.loopbacks},
                kernel=(ports := self._ports6(cfg, six)), bgp=ports, spawn=self._spawn,
                peers={six.loopbacks[n]: Peer6(n, ar.fqdn, six.loopbacks[n], six.overlays[n],
                                               six.pools[n])
                       for n, ar in self.ars.items()
                       if n != cfg.node and n in six.loopbacks and n in six.overlays
                       and n in six.pools},
                redirector=self.send_redirect6, mode=self._mode,
                tunnel=lambda: self.fib.redirect_tunnel,
                home_agents={n: h.next_hop6 for n, h in cfg.home_agents.items()
                             if h.next_hop6 is not None},
                paging=self._paging6(cfg, six, events))
            self._track6(self.prefixes)
        await self.start_paging(cfg)
        self._start_filter()
        await self.recover(access)
        if cfg.ipv6 is not None and self._overlay_index is not None:
            await self.start_srv6(cfg, cfg.ipv6, self._overlay_index)
        self._peer = Peer(keystore, self._key_resolver)
        self.authenticator = Authenticator(
            cfg.identity, keystore, self.staples, self._on_authenticated,
            limits=Limits(nonce_lifetime_s=None), track_interface=True,
            reply_on_arrival=lambda ifindex: access is not None and ifindex == access,
            tracking_area=[self.ars[n].fqdn for n in cfg.tal if n in self.ars],
        )
        nonce_hex = cfg.nonce.read_text().split()[0]
        self.authenticator.rotate_nonce(bytes.fromhex(nonce_hex))
        await self.authenticator.start("0.0.0.0", cfg.auth_port)
        self.services["auth"] = ServiceState.UP
        self._spawn(self.keep_ar_keys_warm(keystore))
        if cfg.dhcp is not None:
            if access is None:
                self.services["dhcp"] = f"{ServiceState.FAILED}: no access interface"
                return
            try:
                await self.start_dhcp(cfg, cfg.dhcp, access, validating)
            except (OSError, DnsError) as exc:
                log.error("DHCP service failed to start: %s", exc)
                self.services["dhcp"] = f"{ServiceState.FAILED}: {exc}"
            else:
                self.services["dhcp"] = ServiceState.UP
                self._restore_leases()
            if cfg.ipv6 is not None and cfg.ipv6.dhcp6 is not None:
                try:
                    await self.start_dhcp6(cfg, cfg.ipv6, cfg.ipv6.dhcp6, access)
                except OSError as exc:
                    log.error("DHCPv6 service failed to start: %s", exc)
                    self.services["dhcp6"] = f"{ServiceState.FAILED}: {exc}"
                else:
                    self.services["dhcp6"] = ServiceState.UP

    # The parts a Home Agent (agents/ha.py) does differently: it has no access link, no
    # paging, no source filter and no redirect; MNs reach it from anywhere.

    def _ports6(self, cfg: ArAgentConfig, six: ArIpv6) -> AgentPorts:
        """PrefixMobility's kernel and BGP: the access link and ExaBGP (the HA: its tunnels)."""
        return AgentPorts(self.fib, self._on_handoff,
                          lambda line: self._spawn(self.channel.send(line)),
                          six.loopback, lambda: self._sources, cfg.escape_community,
                          overlay_index=lambda: self._overlay_index,
                          paging_index=lambda: self._paging_index,
                          after_unredirect=lambda prefix: self.push({prefix}))

    def _paging6(self, cfg: ArAgentConfig, six: ArIpv6,
                 events: SavingEvents) -> IdleTable[ipaddress.IPv6Network]:
        """Idle mode for the /64s (issue 18): the same device, pager and Tracking Area as
        the /32s', its own table."""
        return IdleTable[ipaddress.IPv6Network](
            "ipv6", cfg.node, functools.partial(prefix_of, prefixlen=six.mn_prefixlen),
            self.reinject, self.unpark, events, time.time, self._spawn,
            tuple(n for n in cfg.tal if n in self.ars), pager=self.page_local,
            page_remote=self.send_page6, bound=cfg.paging.buffer,
            timeout_s=cfg.paging.timeout_s)

    async def _access_index(self, cfg: ArAgentConfig) -> int | None:
        access: int | None = await self._on_fib(self.fib.index_of, access_ifname(cfg.node))
        self._overlay_index = await self._on_fib(self.fib.index_of, cfg.overlay_dev)
        if access is None:
            log.warning("no access interface %s: no MN can attach here", access_ifname(cfg.node))
        return access

    def _serves(self, access: int | None, ifindex: int) -> bool:
        return access is not None and ifindex == access

    def _mode(self) -> Mode:
        return self.mode

    async def command(self, req: dict[str, Any]) -> dict[str, Any]:
        """The AR's control socket: the lab sets the handoff mode and reads the status."""
        cmd = req.get("cmd")
        if cmd == Command.MODE:
            try:
                self.mode = Mode(str(req.get("mode")))
            except ValueError:
                return {"ok": False, "error": f"unknown mode {req.get('mode')!r}"}
            log.info("handoff mode: %s", self.mode)
            return {"ok": True, "mode": str(self.mode)}
        if cmd == Command.STATUS:
            return {"ok": True, **self.status()}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    def _start_filter(self) -> None:
        try:
            self._sources = SourceFilter(Nft(), changed=self._source_changes.append)
        except NftError as exc:
            log.error("source filtering unavailable: %s", exc)

    async def _on_authenticated(
            self, result: AuthResult) -> Sequence[ipaddress.IPv4Address | ipaddress.IPv6Network]:
        assert self.mobility is not None
        if result.ifindex and self.mobility.on_access_link(result.ifindex):
            self._on_link.authenticated(result.peer_name, result.ifindex, result.session_id)
        if self.staples is not None:
            self.staples.offer(result.peer_name, result.staple)
        self.mobility.saw_auth(result)
        if self.prefixes is not None:
            self.prefixes.saw_auth(result)
        # A retry of an AUTH still being handled (the MN sends a new one every 0.3 s, an AR
        # every 0.25 s) gets that handling's outcome: handled anew, each retry re-ran the
        # DNS checks and the handoff, 3.7 times per handoff at 1,000 MNs and 100 handoffs/s,
        # and the extra load made more retries (issue 15). A retry differs in its session
        # and its timestamp; with the timestamp in the key (it orders one MN's moves) no
        # retry joined, and at 100/s an AR asked its resolver 30 times per handoff. The
        # newer timestamp is not lost: saw_auth gave it to what the handling records.
        key = result._replace(session_id=b"", timestamp_us=0)
        running = self._handling.get(key)
        if running is not None and 0 <= result.timestamp_us - running[1] <= RETRY_JOIN_US:
            self.coalesced += 1
            task = running[0]
        else:
            task = asyncio.ensure_future(self._handle_auth(result))
            self._handling[key] = (task, result.timestamp_us)
            task.add_done_callback(functools.partial(self._handled, key))
        return list(await asyncio.shield(task))

    def _handled(self, key: AuthResult, task: asyncio.Future[Any]) -> None:
        running = self._handling.get(key)
        if running is not None and running[0] is task:
            del self._handling[key]

    async def _handle_auth(
            self, result: AuthResult) -> list[ipaddress.IPv4Address | ipaddress.IPv6Network]:
        assert self.mobility is not None
        # The two families side by side: the IPv6 checks (and so the /64s' redirect) do not
        # wait for the IPv4 handoff's routes and announcements (measured: 8-14 ms later).
        six = asyncio.ensure_future(self._on_prefixes(result)) if self.prefixes else None
        accepted: list[ipaddress.IPv4Address | ipaddress.IPv6Network] = [
            *await self.mobility.on_authenticated(result)]
        if six is not None:
            accepted += await six
        return accepted

    async def _on_prefixes(self, result: AuthResult) -> list[ipaddress.IPv6Network]:
        assert self.prefixes is not None
        from_ar = any(a.fqdn == result.peer_name for a in self.ars.values())
        try:
            if from_ar:
                return await self.prefixes.on_redirect(result.peer_name, result)
            six = await self.prefixes.on_result(result, from_ar)
            self._advertise(result, from_ar, six)
            return six
        except Exception:  # noqa: BLE001 - IPv6 must never cost the IPv4 handoff
            log.exception("IPv6 prefixes of %s", result.peer_name)
            return []

    def _advertise(self, result: AuthResult, from_ar: bool,
                   rerouted: list[ipaddress.IPv6Network]) -> None:
        """Draft 4: after an MN's AUTH on the access link that claimed IPv6 prefixes, the RA
        listing exactly those we re-routed (none if we refused them all), once the
        AUTH_REPLY is out (agents/ra.py)."""
        assert self.mobility is not None
        if (from_ar or not result.mobility or result.idle or not result.ifindex
                or not self.mobility.on_access_link(result.ifindex)
                or not any(p.version == 6 for p in result.addresses)):
            return
        if self._ra is None:
            self._ra = RaSender(self._access_name)
        self._spawn(advertise_rerouted(self._ra, ipaddress.IPv4Address(result.source[0]),
                                       rerouted, self.mobility.events, result.peer_name))

    # --- DHCP (draft 2.3): agents/dhcpd.py's hooks ----------------------------------------

    async def start_dhcp(self, cfg: ArAgentConfig, d: DhcpSettings, access: int,
                         validating: ValidatingResolver) -> None:
        me = self.ars[cfg.node]
        server = ServerConfig(
            server_id=me.loopback, pool=cfg.pool, first=d.first, last=d.last,
            lease_s=d.lease_s, remote_renewals=d.remote_renewals,
            router=ipaddress.IPv4Address(ACCESS_GATEWAY),
            dns=ipaddress.IPv4Address(cfg.resolver), home_agent=d.home_agent or None,
            circuit_id=f"{me.fqdn}/{self._access_name}".encode("ascii"))
        try:
            self._ptr = DnsUpdater(d.primary, d.primary_port, TsigKey.load(d.tsig), validating)
        except DnsError as exc:
            log.error("no PTR updates: %s", exc)
        # Relayed messages only from and to the other ARs, authenticated (docs/protocol.md
        # §14.7), and only over the backbone links.
        relay_auth = RelayAuth(me.loopback, {a.loopback: a.fqdn for a in self.ars.values()
                                             if a.node != cfg.node}, self._relay_key)
        self.dhcp = DhcpServer(server, self, lambda ifindex: ifindex == access,
                               relay_auth=relay_auth, backbone=self._on_backbone)
        self.dhcp.leases = arstate.Tracked(self.dhcp.leases, self._dirty["leases"].add)
        self._dhcp_service = DhcpService(self.dhcp)
        await self._dhcp_service.start()
        log.info("DHCP serving %s..%s of %s, leases %d s", server.addresses()[0],
                 server.addresses()[-1], cfg.pool, server.lease_s)

    async def start_dhcp6(self, cfg: ArAgentConfig, six: ArIpv6, d: Dhcp6Settings,
                          access: int) -> None:
        """DHCPv6 beside DHCPv4 (issue 18): the MN's /64 out of our /56, its PTR with the
        same TSIG key as the IPv4 PTRs (start_dhcp made the updater)."""
        assert self.prefixes is not None and self.mobility is not None
        me = self.ars[cfg.node]
        relay_auth = RelayAuth6(six.loopback, {six.loopbacks[n]: a.fqdn for n, a in
                                               self.ars.items()
                                               if n != cfg.node and n in six.loopbacks},
                                lambda fqdn: self._relay_key(fqdn, ALG_RELAY6))
        self.dhcp6 = ArDhcp6(
            ArDhcp6Config(me.fqdn, six.loopback, six.pool, six.mn_prefixlen, d, access,
                          self._access_name,
                          {pool: six.loopbacks[n] for n, pool in six.pools.items()
                           if n in six.loopbacks}),
            self._on_link, self.prefixes, relay_auth, self._on_backbone, self._ptr,
            self.mobility.events, self._spawn, self._dirty["bindings6"].add)
        server = self.dhcp6.server
        state, now = self._recovered, time.time()
        for k, x in (state.bindings6.items() if state else ()):
            # The previous agent's delegations still running (its /64 attachments came back
            # with recover): the MN renews them with this server as with that one.
            if x.bound and x.expires > now and x.prefix.subnet_of(six.pool):
                server.bindings[k] = Binding6(x.prefix, x.duid, x.mn, x.iaid, x.peer,
                                              x.expires, True, x.remote_renewals)
        self.recovery["bindings6"] = len(server.bindings)
        server.bindings = arstate.Tracked(server.bindings, self._dirty["bindings6"].add)
        await self.dhcp6.start()

    def _relay_key(self, fqdn: str, algorithm: bytes = ALG_RELAY) -> bytes | None:
        """The DHCP relay key (``algorithm``: DHCPv4's or DHCPv6's) shared with the AR
        ``fqdn``, once its published key is known (keep_ar_keys_warm): it stays valid while
        that AR publishes the same key."""
        known = self._ar_keys.get(fqdn)
        if known is None or self._keystore is None:
            return None
        try:
            return self._keystore.pair_key(known[0], algorithm)
        except (AuthError, ValueError) as exc:
            log.warning("no relay key with %s: %s", fqdn, exc)
            return None

    def _on_backbone(self, ifindex: int) -> bool:
        """A backbone link (``<node>-eth<n>``): not the access link, the overlay, the paging
        device or the loopback, where no other AR's relay traffic belongs."""
        name = self._ifnames.get(ifindex)
        if name is None:
            try:
                name = self._ifnames[ifindex] = socket.if_indextoname(ifindex)
            except OSError:
                return False
        return name.startswith(f"{self.node}-eth")

    def _session_msk(self, session_id: bytes) -> bytes | None:
        if self.authenticator is None:
            return None
        try:
            return self.authenticator.export_msk(session_id)
        except UnknownSession:
            return None

    def identity_on_link(self, chaddr: bytes, ifindex: int,
                         client_id: bytes | None) -> str | None:
        # Not the AUTH's source address or its ARP entry: anyone can deliver a captured AUTH
        # (issue 19 defect 8). Only the session's MSK proves the station (docs/addresses.md).
        parts = client_parts(client_id)
        return self._on_link.identity(chaddr, ifindex, *parts) if parts is not None else None

    def _attached_on(self, mn: str, ifindex: int) -> bool:
        m = self.mobility
        if m is None:
            return False
        return any((att := m.attached.get(a)) is not None and att.ifindex == ifindex
                   for a in self._by_mn.get(mn, ()))

    def identity_of_source(self, address: ipaddress.IPv4Address, ifindex: int) -> str | None:
        att = self.mobility.attached.get(address) if self.mobility else None
        return att.mn if att is not None and att.ifindex == ifindex else None

    def owner_of(self, address: ipaddress.IPv4Address) -> ipaddress.IPv4Address | None:
        return next((a.loopback for a in self.ars.values() if address in a.pool), None)

    def bound(self, lease: Lease, ifindex: int, renewal: bool) -> None:
        # The server changed the lease in place (bound, expires, renewals): journal it.
        self._dirty["leases"].add(lease.client_id)
        if self.mobility is None:
            return
        self.mobility.events("dhcp_bound", mn=lease.mn, addr=lease.address, renewal=renewal,
                             remote=not ifindex, remote_renewals=lease.remote_renewals)
        if ifindex and self.mobility.on_access_link(ifindex):
            self._spawn(self.mobility.assigned(lease.address, lease.mn, ifindex))
        if not renewal and self._ptr is not None:
            self._spawn(self._set_ptr(lease.address, lease.mn))

    def ended(self, lease: Lease, reason: str) -> None:
        if self.mobility is not None:
            self.mobility.reclaim(lease.address, reason)
        if self._ptr is not None:
            self._spawn(self._set_ptr(lease.address, None))

    def relayed(self, address: ipaddress.IPv4Address, kind: str, expires: float | None) -> None:
        if self.mobility is None:
            return
        self.mobility.events("dhcp_relayed", addr=address, kind=kind)
        if kind == "ack":
            self.mobility.visitor_lease(address, expires)
        else:
            self._spawn(self.mobility.lease_gone(address, f"relayed {kind}"))

    async def _set_ptr(self, address: ipaddress.IPv4Address, mn: str | None) -> None:
        assert self._ptr is not None and self.mobility is not None
        zone = ".".join(reversed(str(address).split(".")[:3])) + ".in-addr.arpa"
        try:
            if mn is None:
                await self._ptr.delete_ptr(address, zone)
            else:
                await self._ptr.set_ptr(address, mn, LEASE_PTR_TTL, zone)
            self.mobility.events("ptr_set" if mn else "ptr_deleted", addr=address, mn=mn)
        except DnsError as exc:
            log.warning("PTR %s -> %s: %s", address, mn, exc)
            self.mobility.events("ptr_failed", addr=address, error=str(exc))

    async def run(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        assert main is not None
        loop.add_signal_handler(signal.SIGTERM, main.cancel)
        reader = asyncio.StreamReader(limit=1 << 24)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        threading.Thread(target=self._watch_kernel_thread, args=(loop,), daemon=True).start()
        control = await start_control(self.rundir / Layout.CONTROL, self.command)
        resync = asyncio.create_task(self.resync_loop())
        chores = asyncio.create_task(self.housekeeping())
        # A Home Agent originates nothing of its own: it has no pool.
        announce = asyncio.create_task(self.channel.send(api.announce(self.pool))
                                       if self.pool.prefixlen < 32 else asyncio.sleep(0))
        if (self.config is not None and self.config.ipv6 is not None  # dual stack (issue 18)
                and self.config.ipv6.pool.prefixlen < 128):  # the HA's NO_POOL6: none
            six = self.config.ipv6
            self._spawn(self.channel.send(api.announce(six.pool, next_hop=six.loopback)))
        if self.config is not None:
            try:
                await self.start_auth()
            except Exception as exc:  # noqa: BLE001 - routing must go on without the auth service
                log.exception("authentication service failed to start")
                self.services["auth"] = f"{ServiceState.FAILED}: {exc}"
        self._persisting = True
        self.write_status()
        self.push(set())
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError as exc:  # longer than the reader's limit; the rest is dropped
                    log.warning("ignoring line: %s", exc)
                    continue
                if not line:
                    # ExaBGP died without a shutdown: the MNs' routes stay in the kernel
                    # for the agent of the next ExaBGP, which recovers them (docs/faults.md).
                    log.info("exabgp closed our stdin; exiting, kernel state kept")
                    self._exabgp_gone = True
                    return
                text = line.decode(errors="replace")
                if text.startswith("neighbor "):  # the Adj-RIB-In listing (_replay_rib)
                    self._rib_line(text)
                    continue
                try:
                    event = api.parse_line(text)
                except Exception as exc:  # noqa: BLE001 - one bad line must not end routing
                    log.warning("ignoring line: %s", exc)
                    continue
                if isinstance(event, api.Shutdown):
                    log.info("exabgp shutting down")
                    return
                if event is not None:
                    self.handle(event)
        finally:
            control.close()
            (self.rundir / Layout.CONTROL).unlink(missing_ok=True)
            resync.cancel()
            chores.cancel()
            announce.cancel()
            if self.authenticator is not None:
                self.authenticator.close()
            if self._dhcp_service is not None:
                self._dhcp_service.close()
            if self.dhcp6 is not None:
                self.dhcp6.close()
            if self._tun_fd is not None:
                loop.remove_reader(self._tun_fd)
                os.close(self._tun_fd)
            self.persist()
            if self._journal is not None:
                self._journal.close()
            self._fib_thread.submit(self.fib.close if self._exabgp_gone
                                    else self._shutdown_fib).result(timeout=5)
            self._fib_thread.shutdown(wait=False)
            self._handoff_thread.shutdown(wait=False)
            self._status_thread.shutdown(wait=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="agents.ar", description=__doc__)
    ap.add_argument("--node", required=True)
    ap.add_argument("--rundir", required=True, type=Path)
    ap.add_argument("--pool", type=ipaddress.IPv4Network, help="default: the config's pool")
    ap.add_argument("--config", type=Path, help="agent.json: identity, resolver, ARs")
    ap.add_argument("--check", action="store_true", help="load the config and key, then exit")
    args = ap.parse_args(argv)
    if args.check:
        return check_config(args.config)
    if args.pool is None and args.config is None:
        ap.error("give --pool or --config")

    def make() -> ArAgent:
        config = ArAgentConfig.load(args.config) if args.config else None
        pool = args.pool or (config.pool if config else None)
        assert pool is not None
        return ArAgent(args.node, args.rundir, pool, config)

    return run_agent(args.rundir, make)


def check_config(path: Path | None) -> int:
    """The agent's dry-run: its agent.json against the contract, and its key, loaded as the
    agent would; a problem is one line on stderr and exit 1."""
    if path is None:
        print("agents: --check needs --config", file=sys.stderr)
        return 1
    try:
        config = ArAgentConfig.load(path)
        KeyStore.from_pem(config.identity, config.key.read_bytes())
    except (OSError, ValueError) as exc:  # ContractError is a ValueError
        print(f"agents: {exc}", file=sys.stderr)
        return 1
    return 0


def run_agent(rundir: Path, make: Any) -> int:
    """ExaBGP's API process: log to the node's file, keep a pid file while running."""
    logging.basicConfig(
        filename=str(rundir / Layout.AGENT_LOG),
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    pidfile = rundir / Layout.AGENT_PID
    pidfile.write_text(f"{os.getpid()}\n")
    try:
        asyncio.run(make().run())
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    finally:
        # Only our own: the agent of a restarted ExaBGP may have written its pid already.
        with contextlib.suppress(OSError):
            if pidfile.read_text().strip() == str(os.getpid()):
                pidfile.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
