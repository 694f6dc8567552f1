"""The access-router agent: ExaBGP's API process on each AR.

It originates the AR's pool, keeps the RIB of routes reflected to the AR and mirrors
the best ones into the kernel FIB, re-resolving next hops when OSPF changes.
stdout carries ExaBGP commands only; logs go to a file in the node's run directory.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from . import exabgp_api as api
from .fib import RTPROT_FLATARCH, KernelFib, Rib

log = logging.getLogger("agents.ar")


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
    def __init__(self, node: str, rundir: Path, pool: ipaddress.IPv4Network) -> None:
        self.node = node
        self.rundir = rundir
        self.pool = pool
        self.rib = Rib()
        # pyroute2's synchronous API runs its own event loop, so every netlink call
        # lives on one worker thread; a single worker also keeps FIB changes in order.
        self._fib_thread = ThreadPoolExecutor(1, thread_name_prefix="fib")
        self.fib: KernelFib = self._fib_thread.submit(
            # Our own pool is local (blackhole + addresses); the default comes from OSPF.
            KernelFib, lambda p: p.prefixlen == 0 or p == pool
        ).result()
        self.peers: dict[str, bool] = {}
        self.channel = ExaBgpChannel(sys.stdout)
        self._resync = asyncio.Event()

    def _apply(self, best: dict[ipaddress.IPv4Network, Any], full: bool) -> None:
        """Worker thread: bring the kernel in line with the given best routes."""
        paths: dict[ipaddress.IPv4Address, Any] = {}
        for p, route in best.items():
            self.fib.sync(p, route, paths)
        if full:
            for p in set(self.fib.installed) - set(best):
                self.fib.sync(p, None)
        self.write_status()

    def push(self, prefixes: set[ipaddress.IPv4Network] | None = None) -> None:
        """Snapshot best paths in the loop thread and hand them to the FIB worker."""
        full = prefixes is None
        todo = set(self.rib.prefixes()) if prefixes is None else prefixes
        self._fib_thread.submit(self._apply, {p: self.rib.best(p) for p in todo}, full)

    def _shutdown_fib(self) -> None:
        self.fib.flush()
        self.fib.close()

    def write_status(self) -> None:
        status = {
            "node": self.node,
            "time": time.time(),
            "peers": self.peers,
            "rib_prefixes": len(self.rib.prefixes()),
            "fib_routes": {str(p): str(r.next_hop) for p, (r, _) in self.fib.installed.items()},
        }
        tmp = self.rundir / "agent.status.json.tmp"
        tmp.write_text(json.dumps(status, indent=1, sort_keys=True))
        tmp.replace(self.rundir / "agent.status.json")

    def handle(self, event: api.Event) -> None:
        if isinstance(event, api.Ack):
            self.channel.ack(event.ok)
        elif isinstance(event, api.PeerState):
            self.peers[event.peer] = event.up
            log.info("peer %s %s %s", event.peer, "up" if event.up else "down", event.reason)
            self.push(self.rib.drop_peer(event.peer) if not event.up else set())
        elif isinstance(event, api.Update) and not event.eor:
            self.push(self.rib.update(event.peer, event.announced, event.withdrawn))

    def watch_igp(self, loop: asyncio.AbstractEventLoop) -> None:
        """Thread: any route change not made by us may move a BGP next hop."""
        from pyroute2 import IPRoute

        with IPRoute() as mon:
            mon.bind()
            while True:
                for msg in mon.get():
                    if msg.get("event") in ("RTM_NEWROUTE", "RTM_DELROUTE", "RTM_NEWLINK",
                                            "RTM_DELLINK"):
                        if msg.get("proto") == RTPROT_FLATARCH:
                            continue
                        loop.call_soon_threadsafe(self._resync.set)

    async def resync_loop(self) -> None:
        while True:
            await self._resync.wait()
            # Coalesce an SPF's burst of route changes into one pass.
            await asyncio.sleep(0.01)
            self._resync.clear()
            self.push(None)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        assert main is not None
        loop.add_signal_handler(signal.SIGTERM, main.cancel)
        reader = asyncio.StreamReader(limit=1 << 24)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        threading.Thread(target=self.watch_igp, args=(loop,), daemon=True).start()
        resync = asyncio.create_task(self.resync_loop())
        announce = asyncio.create_task(self.channel.send(api.announce(self.pool)))
        self.push(set())
        try:
            while True:
                line = await reader.readline()
                if not line:
                    log.info("exabgp closed our stdin; exiting")
                    return
                try:
                    event = api.parse_line(line.decode(errors="replace"))
                except (api.ApiError, ValueError) as exc:
                    log.warning("ignoring line: %s", exc)
                    continue
                if isinstance(event, api.Shutdown):
                    log.info("exabgp shutting down")
                    return
                if event is not None:
                    self.handle(event)
        finally:
            resync.cancel()
            announce.cancel()
            self._fib_thread.submit(self._shutdown_fib).result(timeout=5)
            self._fib_thread.shutdown(wait=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="agents.ar", description=__doc__)
    ap.add_argument("--node", required=True)
    ap.add_argument("--rundir", required=True, type=Path)
    ap.add_argument("--pool", required=True, type=ipaddress.IPv4Network)
    args = ap.parse_args(argv)
    logging.basicConfig(
        filename=str(args.rundir / "agent.log"),
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    pidfile = args.rundir / "agent.pid"
    pidfile.write_text(f"{os.getpid()}\n")
    try:
        asyncio.run(ArAgent(args.node, args.rundir, args.pool).run())
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    finally:
        pidfile.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
