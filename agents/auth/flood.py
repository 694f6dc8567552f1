"""The pieces of `flatarch bench flood` that run inside its namespaces: the AR side (the real
Authenticator as the AR agent runs it), the legitimate client (the real Peer), the
cookie-reuse attacker, and the flood captures tcpreplay sends (issue 19).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import selectors
import signal
import socket
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .authenticator import DEFAULT_PORT, Authenticator, Limits
from .errors import AuthError, KeyResolutionError
from .kdf import TAG_LEN
from .keys import PublishedKey, StaticDirectory, Suite
from .keystore import KeyStore
from .messages import AuthMessage, CookieReply, MsgType

log = logging.getLogger("flatarch.auth.flood")

AR_NAME = "ar.flood.flatarch.test"
LEGIT_ZONE = "legit.flood.flatarch.test"
DEAD_ZONE = "dead.flood.flatarch.test"  # its resolver drops every query
SUITE = Suite.P256
AR_NONCE = hashlib.sha256(b"flatarch flood nonce").digest()[:16]


def secret(name: str) -> bytes:
    # Fixed keys let the namespaces agree on identities without shipping private keys.
    return hashlib.sha256(f"flatarch flood {name}".encode()).digest()


def keystore(name: str) -> KeyStore:
    return KeyStore.from_private_bytes(name, SUITE, secret(name))


def legit_name(i: int) -> str:
    return f"mn{i}.{LEGIT_ZONE}"


def ar_key() -> PublishedKey:
    return PublishedKey(AR_NAME, SUITE, keystore(AR_NAME).spki, AR_NONCE)


# --- the AR side ------------------------------------------------------------------------------

class KnownKeys:
    """Legitimate MNs' keys are known (the bench's stand-in for a fast DNS answer); any other
    name goes to a real DNS resolver, which for the dead zone never answers."""

    def __init__(self, dns: Any) -> None:
        self._dns = dns
        self._known: dict[str, PublishedKey] = {}

    async def resolve(self, name: str) -> PublishedKey:
        if name.endswith("." + LEGIT_ZONE):
            key = self._known.get(name)
            if key is None:
                key = self._known[name] = keystore(name).published_key()
            return key
        key = await self._dns.resolve(name)
        if not isinstance(key, PublishedKey):
            raise KeyResolutionError(f"resolver answered {key!r}")
        return key


async def serve(state: Path, resolver_addr: str, access: str) -> None:
    """Run the AR's authenticator on the access interface until SIGTERM; then write stats."""
    from agents.dns import DnssecKeyResolver, ValidatingResolver

    dns = DnssecKeyResolver(ValidatingResolver(resolver_addr, 53, timeout=1.0))
    access_index = socket.if_nametoindex(access)
    # As agents/ar.py builds it: the AR's limits, interface tracking, replies on the access.
    auth = Authenticator(AR_NAME, keystore(AR_NAME), KnownKeys(dns), None,
                         limits=Limits(nonce_lifetime_s=None), track_interface=True,
                         reply_on_arrival=lambda ifindex: ifindex == access_index)
    auth.rotate_nonce(AR_NONCE)
    await auth.start("0.0.0.0", DEFAULT_PORT)
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()

    def on_term() -> None:
        if not stop.done():
            stop.set_result(None)

    loop.add_signal_handler(signal.SIGTERM, on_term)
    (state / "ready").write_text(f"{os.getpid()}\n")
    await stop
    auth.close()
    (state / "stats.json").write_text(json.dumps(dict(auth.stats), sort_keys=True))


# --- the legitimate client --------------------------------------------------------------------

async def legit_client(ar: str, sources: list[str], first: int, count: int,
                       rate: float) -> dict[str, Any]:
    """``count`` authentications at ``rate`` per second, each a new MN name (a cold lookup
    and an ECDH at the AR), round-robin over the source addresses; latency per success."""
    from .peer import Peer

    key = ar_key()
    directory = StaticDirectory([key])
    stores = [keystore(legit_name(first + i)) for i in range(count)]
    latencies: list[float] = []
    failures: dict[str, int] = {}

    async def attempt(i: int) -> None:
        peer = Peer(stores[i], directory)
        start = time.perf_counter()
        try:
            session = await peer.authenticate((ar, DEFAULT_PORT), AR_NAME, (), mobility=False,
                                              ar_key=key, local_addr=(sources[i % len(sources)], 0))
        except AuthError as exc:
            failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
            return
        latencies.append((time.perf_counter() - start) * 1000.0)
        session.close()

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    tasks = []
    for i in range(count):
        delay = t0 + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing the offered load, not waiting for an event
        tasks.append(asyncio.create_task(attempt(i)))
    await asyncio.gather(*tasks)
    return {"attempts": count, "ok": len(latencies), "latencies_ms": latencies,
            "failures": failures}


# --- the cookie-reuse attacker ----------------------------------------------------------------

def dead_auth(i: int, ts_us: int, cookie: bytes | None) -> bytes:
    """An AUTH naming a fresh name in a fresh zone under the dead zone: each one a lookup
    that times out and dodges any per-zone negative cache."""
    msg = AuthMessage(int(SUITE), ts_us, os.urandom(16), AR_NONCE, f"x{i}.z{i}.{DEAD_ZONE}",
                      AR_NAME, (), False, cookie, os.urandom(TAG_LEN))
    return msg.pack()


def cookie_attack(ar: str, sources: list[str], pps: float, duration_s: float,
                  started: Path | None = None) -> dict[str, Any]:
    """Each source fetches a cookie once and then reuses it on every AUTH it sends, picking
    up any fresh cookie the AR hands out (an adaptive attacker with real addresses)."""
    socks = []
    for src in sources:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((src, 0))
        sock.setblocking(False)
        socks.append(sock)
    selector = selectors.DefaultSelector()
    for k, sock in enumerate(socks):
        selector.register(sock, selectors.EVENT_READ, k)
    cookies: list[bytes | None] = [None] * len(socks)
    sent = got_cookies = 0
    start = time.monotonic()
    deadline = start + duration_s
    i = random.randrange(1 << 40)  # names no earlier run struck into the negative cache
    try:
        while (now := time.monotonic()) < deadline:
            due = int((now - start) * pps)
            while sent < due:
                k = sent % len(socks)
                with contextlib.suppress(OSError):  # a full buffer: the attacker moves on
                    socks[k].sendto(dead_auth(i, int(time.time() * 1e6), cookies[k]),
                                    (ar, DEFAULT_PORT))
                sent += 1
                i += 1
            for ready, _ in selector.select(0.002):  # paces the attack as well
                k = ready.data
                while True:
                    try:
                        data = socks[k].recv(2048)
                    except OSError:
                        break
                    if len(data) > 1 and data[1] == MsgType.COOKIE:
                        try:
                            cookies[k] = CookieReply.unpack(data).cookie
                        except AuthError:
                            continue
                        got_cookies += 1
                        if started is not None and got_cookies == len(socks) // 2:
                            started.write_text(f"{time.time()}\n")  # the AR is loaded
    finally:
        selector.close()
        for sock in socks:
            sock.close()
    elapsed = time.monotonic() - start
    return {"sent": sent, "pps": sent / elapsed if elapsed else 0.0, "cookies": got_cookies}


# --- flood captures ---------------------------------------------------------------------------

def spoofed_sources(n: int, seed: int = 19) -> list[tuple[bytes, bytes]]:
    """``n`` (MAC, IPv4) pairs, random in 10.208.0.0/12: forged link and network sources."""
    rng = random.Random(seed)
    out: set[tuple[bytes, bytes]] = set()
    while len(out) < n:
        mac = bytes([0x02]) + rng.randbytes(5)
        ip = bytes([10, 208 | rng.randrange(16), rng.randrange(256), 1 + rng.randrange(254)])
        out.add((mac, ip))
    return sorted(out)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def frame(src: tuple[bytes, bytes], dst_mac: bytes, dst_ip: bytes, sport: int,
          payload: bytes) -> bytes:
    """Ethernet + IPv4 + UDP to the auth port, checksums right, so only our checks drop it."""
    mac, ip = src
    udp_len = 8 + len(payload)
    pseudo = ip + dst_ip + struct.pack("!BBH", 0, socket.IPPROTO_UDP, udp_len)
    udp = struct.pack("!HHHH", sport, DEFAULT_PORT, udp_len, 0) + payload
    csum = _checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
    ip_hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0x4000, 64,
                         socket.IPPROTO_UDP, 0, ip, dst_ip)
    ip_hdr = ip_hdr[:10] + struct.pack("!H", _checksum(ip_hdr)) + ip_hdr[12:]
    return dst_mac + mac + b"\x08\x00" + ip_hdr + udp


def payloads(kind: str, n: int, seed: int = 19) -> Iterator[bytes]:
    """``garbage``: random octets of random length (a random version and type); ``forged_mac``:
    well-formed AUTHs naming legitimate MNs whose keys the AR holds, with timestamps fresh for
    a minute and a wrong MAC, so each one costs the AR a parse, a KDF and an HMAC."""
    rng = random.Random(seed)
    if kind == "garbage":
        for _ in range(n):
            yield rng.randbytes(1 + rng.randrange(1400))
        return
    if kind != "forged_mac":
        raise ValueError(f"no capture for {kind!r}")
    ts = int((time.time() + 25.0) * 1e6)
    for i in range(n):
        msg = AuthMessage(int(SUITE), ts + i, rng.randbytes(16), bytes(16), legit_name(i % 20),
                          AR_NAME, (), False, None, rng.randbytes(TAG_LEN))
        yield msg.pack()


def write_pcap(path: Path, frames: Iterator[bytes]) -> int:
    """A classic pcap (microsecond, Ethernet) of ``frames``; returns how many."""
    count = 0
    with path.open("wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for data in frames:
            fh.write(struct.pack("<IIII", 0, count, len(data), len(data)))
            fh.write(data)
            count += 1
    return count


def flood_capture(path: Path, kind: str, sources: int, dst_mac: bytes, dst_ip: str) -> int:
    srcs = spoofed_sources(sources)
    dst = socket.inet_aton(dst_ip)
    rng = random.Random(7)
    return write_pcap(path, (frame(src, dst_mac, dst, 1024 + rng.randrange(60000), data)
                             for src, data in zip(srcs, payloads(kind, sources), strict=True)))


# --- entry point: one role per invocation -----------------------------------------------------

def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="role", required=True)
    sv = sub.add_parser("serve")
    sv.add_argument("--state", type=Path, required=True)
    sv.add_argument("--resolver", required=True)
    sv.add_argument("--access", required=True)
    cl = sub.add_parser("client")
    cl.add_argument("--ar", required=True)
    cl.add_argument("--sources", required=True, help="comma-separated source addresses")
    cl.add_argument("--first", type=int, default=0)
    cl.add_argument("--count", type=int, required=True)
    cl.add_argument("--rate", type=float, required=True)
    cl.add_argument("--out", type=Path, required=True)
    ca = sub.add_parser("cookie-attack")
    ca.add_argument("--ar", required=True)
    ca.add_argument("--sources", required=True)
    ca.add_argument("--pps", type=float, required=True)
    ca.add_argument("--duration", type=float, required=True)
    ca.add_argument("--out", type=Path, required=True)
    ca.add_argument("--started", type=Path, help="written once the AR hands out cookies")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    if args.role == "serve":
        asyncio.run(serve(args.state, args.resolver, args.access))
    elif args.role == "client":
        result = asyncio.run(legit_client(args.ar, args.sources.split(","), args.first,
                                          args.count, args.rate))
        args.out.write_text(json.dumps(result))
    else:
        result = cookie_attack(args.ar, args.sources.split(","), args.pps, args.duration,
                               args.started)
        args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
