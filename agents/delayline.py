"""The userspace delay line: one process holds the packets of every delayed link of a lab
in NFQUEUE queues (iptables, one queue per link direction, each in its node's namespace)
and gives each its ACCEPT verdict when its delay has passed, on CLOCK_MONOTONIC.

    python -m agents.delayline --config delayline.json --rundir DIR [--check]

Why NFQUEUE, and the measured accuracy: docs/links.md. Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import heapq
import json
import logging
import os
import random
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("delayline")

READY_FILE = "delayline.ready"  # written once every queue is bound: the lab's readiness
STATUS_FILE = "delayline.status.json"  # counters, rewritten at most once a second
MAX_DELAY_MS = 10_000.0
QUEUE_MAXLEN = 20_000  # packets held per queue: 2 s at 10,000 pps
# A wake-up from select() overshoots by ~0.1 ms at the median on this VM (docs/links.md):
# packets due within this lead are released in the same pass rather than after one more
# sleep, so the median lands on the configured delay instead of a sleep late.
LEAD_S = 60e-6
# An emulated wire must not wait for a CPU behind the lab's daemons: on a loaded 2-core VM a
# normal-priority wake-up comes milliseconds late at p99 (docs/links.md). FIFO priority, low
# enough that the kernel's interrupts and its real-time throttling still come first.
RT_PRIORITY = 20  # above the link probe (10)

# --- nfnetlink_queue, as the kernel's uapi headers define it -------------------------------
NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG, NFQNL_MSG_VERDICT_BATCH = 0, 1, 2, 3
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN = 1, 2, 3
NFQA_CFG_FLAGS, NFQA_CFG_MASK = 5, 6
NFQA_CFG_F_GSO = 1 << 2
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NF_ACCEPT = 1
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK = 1, 4
SOL_NETLINK, NETLINK_NO_ENOBUFS = 270, 5
CLONE_NEWNET = 0x40000000

_NLMSG = struct.Struct("=IHHII")
_NFGEN = struct.Struct("=BBH")  # family, version, res_id (big-endian, packed by hand)
_ATTR = struct.Struct("=HH")


class ConfigError(ValueError):
    """The delay line's configuration is invalid; the message names the field."""


class NetlinkError(OSError):
    """The kernel refused a queue configuration."""


@dataclass(frozen=True)
class LinkDelay:
    """One delayed link direction: the packets leaving ``name`` in namespace ``netns``."""

    name: str
    netns: str
    queue: int
    delay_ms: float
    jitter_ms: float


def _number(raw: dict[str, Any], key: str, where: str, lo: float, hi: float) -> float:
    val = raw.get(key, 0.0)
    if isinstance(val, bool) or not isinstance(val, int | float) or not lo <= val <= hi:
        raise ConfigError(f"{where}.{key}: expected a number in [{lo:g}, {hi:g}], got {val!r}")
    return float(val)


def parse_config(data: Any) -> list[LinkDelay]:
    """The links of a config object; every field checked, unknown ones refused."""
    if not isinstance(data, dict) or set(data) - {"links"} or "links" not in data:
        raise ConfigError("config: expected an object with exactly one field 'links'")
    links = data["links"]
    if not isinstance(links, list) or not links:
        raise ConfigError("links: expected a non-empty list")
    out: list[LinkDelay] = []
    seen: set[tuple[str, int]] = set()
    fields = {"name", "netns", "queue", "delay_ms", "jitter_ms"}
    for i, raw in enumerate(links):
        where = f"links[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected an object")
        extra = set(raw) - fields
        if extra:
            raise ConfigError(f"{where}: unknown field {sorted(extra)[0]!r}")
        name, netns, queue = raw.get("name"), raw.get("netns"), raw.get("queue")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}.name: expected a non-empty string")
        if not isinstance(netns, str) or not netns.startswith("/"):
            raise ConfigError(f"{where}.netns: expected an absolute path, got {netns!r}")
        if isinstance(queue, bool) or not isinstance(queue, int) or not 0 <= queue <= 65535:
            raise ConfigError(f"{where}.queue: expected an integer in [0, 65535], got {queue!r}")
        if (netns, queue) in seen:
            raise ConfigError(f"{where}.queue: queue {queue} used twice in {netns}")
        seen.add((netns, queue))
        delay = _number(raw, "delay_ms", where, 0.0, MAX_DELAY_MS)
        jitter = _number(raw, "jitter_ms", where, 0.0, MAX_DELAY_MS)
        if jitter > delay:
            raise ConfigError(f"{where}.jitter_ms: {jitter:g} exceeds delay_ms {delay:g}")
        out.append(LinkDelay(name, netns, queue, delay, jitter))
    return out


def load_config(path: Path) -> list[LinkDelay]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return parse_config(data)


# --- the wire -------------------------------------------------------------------------------


def _attr(kind: int, payload: bytes) -> bytes:
    length = _ATTR.size + len(payload)
    return _ATTR.pack(length, kind) + payload + bytes((4 - length % 4) % 4)


def nfq_message(msg: int, queue: int, attrs: bytes, flags: int = NLM_F_REQUEST,
                seq: int = 0) -> bytes:
    """One nfnetlink_queue message to the kernel (config or verdict) for ``queue``."""
    body = _NFGEN.pack(socket.AF_UNSPEC, 0, socket.htons(queue)) + attrs
    kind = (NFNL_SUBSYS_QUEUE << 8) | msg
    return _NLMSG.pack(_NLMSG.size + len(body), kind, flags, seq, 0) + body


def verdict(queue: int, packet_id: int, batch: bool = False) -> bytes:
    """ACCEPT for one packet, or (batch) for every packet of the queue up to packet_id."""
    hdr = _attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, packet_id))
    return nfq_message(NFQNL_MSG_VERDICT_BATCH if batch else NFQNL_MSG_VERDICT, queue, hdr)


def parse_messages(buf: bytes) -> list[tuple[str, int, int]]:
    """The packets and errors in one netlink datagram: ("packet", queue, packet id) or
    ("error", errno, seq). Anything malformed ends the parse; nothing raises."""
    out: list[tuple[str, int, int]] = []
    off = 0
    while off + _NLMSG.size <= len(buf):
        length, kind, _flags, seq, _pid = _NLMSG.unpack_from(buf, off)
        if length < _NLMSG.size or off + length > len(buf):
            break
        body = buf[off + _NLMSG.size: off + length]
        off += (length + 3) & ~3
        if kind == NLMSG_ERROR:
            if len(body) >= 4:
                code = struct.unpack_from("=i", body)[0]
                out.append(("error", -code, seq))
            continue
        if kind != (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET or len(body) < _NFGEN.size:
            continue
        queue = socket.ntohs(_NFGEN.unpack_from(body)[2])
        aoff = _NFGEN.size
        while aoff + _ATTR.size <= len(body):
            alen, akind = _ATTR.unpack_from(body, aoff)
            if alen < _ATTR.size or aoff + alen > len(body):
                break
            if akind & 0x3FFF == NFQA_PACKET_HDR and alen >= _ATTR.size + 7:
                out.append(("packet", queue, struct.unpack_from("!I", body, aoff + 4)[0]))
                break
            aoff += (alen + 3) & ~3
    return out


# --- the schedule ---------------------------------------------------------------------------


class Schedule:
    """Packets held per queue in arrival order, each released at its due time.

    A link never reorders (each due time is at least its predecessor's, as netem does when
    it also paces a rate), so every queue is a FIFO and one heap of queue heads orders them.
    """

    def __init__(self, links: list[LinkDelay], rng: Callable[[], float] = random.random):
        self.links = {i: ln for i, ln in enumerate(links)}
        self.held: dict[int, list[tuple[float, int]]] = {i: [] for i in self.links}
        self.head: dict[int, int] = dict.fromkeys(self.links, 0)
        self.last: dict[int, float] = dict.fromkeys(self.links, 0.0)
        self.rng = rng
        self.heap: list[tuple[float, int]] = []  # (due, link index) of each queue's head
        self.counts = {"held": 0, "released": 0, "errors": 0}

    def due_time(self, idx: int, arrived: float) -> float:
        ln = self.links[idx]
        # Uniform jitter in [-j, +j] around the delay, never before the previous packet.
        offset = (2 * self.rng() - 1) * ln.jitter_ms if ln.jitter_ms else 0.0
        due = max(arrived + (ln.delay_ms + offset) / 1000.0, self.last[idx])
        self.last[idx] = due
        return due

    def hold(self, idx: int, packet_id: int, arrived: float) -> None:
        q = self.held[idx]
        due = self.due_time(idx, arrived)
        if self.head[idx] == len(q):
            heapq.heappush(self.heap, (due, idx))
        q.append((due, packet_id))
        self.counts["held"] += 1

    def next_due(self) -> float | None:
        return self.heap[0][0] if self.heap else None

    def pop_due(self, now: float) -> list[tuple[int, int, int]]:
        """(link index, last packet id released, how many) for each queue with packets due."""
        out: list[tuple[int, int, int]] = []
        while self.heap and self.heap[0][0] <= now:
            _, idx = heapq.heappop(self.heap)
            q, h = self.held[idx], self.head[idx]
            n = 0
            while h < len(q) and q[h][0] <= now:
                h += 1
                n += 1
            out.append((idx, q[h - 1][1], n))
            if h == len(q):
                q.clear()
                h = 0
            elif h > 4096:
                del q[:h]  # compact now and then, not on every release
                h = 0
            self.head[idx] = h
            if h < len(q):
                heapq.heappush(self.heap, (q[h][0], idx))
            self.counts["released"] += n
        return out


# --- the process ----------------------------------------------------------------------------


def _setns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def _request(sock: socket.socket, msg: int, queue: int, attrs: bytes, seq: int) -> None:
    sock.send(nfq_message(msg, queue, attrs, NLM_F_REQUEST | NLM_F_ACK, seq))
    while True:
        for what, code, got in parse_messages(sock.recv(65536)):
            if what == "error" and got == seq:
                if code:
                    raise NetlinkError(code, f"queue {queue}: {os.strerror(code)}")
                return


def open_queue(ln: LinkDelay) -> socket.socket:
    """A netlink socket in the link's namespace, bound to its queue, metadata only."""
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        _setns(ln.netns)
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    finally:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.setns(home, CLONE_NEWNET)
        os.close(home)
    sock.bind((0, 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
    _request(sock, NFQNL_MSG_CONFIG, ln.queue,
             _attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, 0)), 1)
    # GSO packets whole: we never read a payload, so the kernel need not segment them first
    # (one verdict per 64 KB instead of one per 1,500 bytes).
    with contextlib.suppress(NetlinkError):
        gso = struct.pack("!I", NFQA_CFG_F_GSO)
        _request(sock, NFQNL_MSG_CONFIG, ln.queue,
                 _attr(NFQA_CFG_FLAGS, gso) + _attr(NFQA_CFG_MASK, gso), 4)
    # The copy mode last: until it is set the kernel drops rather than queues, so no packet
    # can arrive while we still read acknowledgements (and be skipped, never released).
    _request(sock, NFQNL_MSG_CONFIG, ln.queue,
             _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", QUEUE_MAXLEN)), 2)
    _request(sock, NFQNL_MSG_CONFIG, ln.queue,
             _attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META)), 3)
    sock.setblocking(False)
    return sock


class DelayLine:
    def __init__(self, links: list[LinkDelay], rundir: Path) -> None:
        self.links = links
        self.rundir = rundir
        self.sched = Schedule(links)
        self.socks: list[socket.socket] = []
        self.by_fd: dict[int, int] = {}
        self.stopping = False
        self._status_at = 0.0

    def open(self) -> None:
        for i, ln in enumerate(self.links):
            try:
                s = open_queue(ln)
            except OSError as exc:
                raise NetlinkError(exc.errno or errno.EIO,
                                   f"{ln.name}: cannot bind queue {ln.queue}: {exc}") from None
            self.socks.append(s)
            self.by_fd[s.fileno()] = i

    def _receive(self, idx: int) -> None:
        sock = self.socks[idx]
        for _ in range(256):  # bounded, so one busy queue cannot starve the releases
            try:
                buf = sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as exc:
                self.sched.counts["errors"] += 1
                log.warning("%s: recv: %s", self.links[idx].name, exc)
                return
            now = time.monotonic()
            for what, queue, pid in parse_messages(buf):
                if what == "packet" and queue == self.links[idx].queue:
                    self.sched.hold(idx, pid, now)
                elif what == "error" and queue:
                    self.sched.counts["errors"] += 1

    def _release(self, now: float) -> None:
        for idx, last_id, n in self.sched.pop_due(now):
            try:
                self.socks[idx].send(verdict(self.links[idx].queue, last_id, batch=n > 1))
            except OSError as exc:
                self.sched.counts["errors"] += 1
                log.warning("%s: verdict: %s", self.links[idx].name, exc)

    def _status(self, now: float) -> None:
        if now - self._status_at < 1.0:
            return
        self._status_at = now
        tmp = self.rundir / (STATUS_FILE + ".tmp")
        tmp.write_text(json.dumps({"links": len(self.links), **self.sched.counts}))
        tmp.replace(self.rundir / STATUS_FILE)

    def run(self) -> None:
        (self.rundir / READY_FILE).write_text(f"{os.getpid()}\n")
        while not self.stopping:
            now = time.monotonic()
            self._release(now + LEAD_S)
            nxt = self.sched.next_due()
            timeout = 1.0 if nxt is None else min(1.0, max(0.0, nxt - now - LEAD_S))
            try:
                ready, _, _ = select.select(self.socks, [], [], timeout)
            except InterruptedError:
                continue
            for s in ready:
                self._receive(self.by_fd[s.fileno()])
            self._status(now)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="agents.delayline", description=__doc__)
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--rundir", type=Path, required=True)
    ap.add_argument("--check", action="store_true", help="load the config, then exit")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s delayline %(levelname)s %(message)s")
    try:
        links = load_config(args.config)
        missing = [ln.netns for ln in links if not Path(ln.netns).exists()]
        if missing:
            raise ConfigError(f"netns {missing[0]} does not exist")
    except ConfigError as exc:
        print(f"delayline: {exc}", file=sys.stderr)
        return 2
    if args.check:
        return 0
    line = DelayLine(links, args.rundir)

    def stop(*_: object) -> None:
        line.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        line.open()
    except NetlinkError as exc:
        print(f"delayline: {exc}", file=sys.stderr)
        return 1
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))
        sched = f"SCHED_FIFO {RT_PRIORITY}"
    except OSError as exc:
        sched = f"normal priority ({exc.strerror})"
    log.info("holding %d link directions, %s", len(links), sched)
    line.run()
    (args.rundir / READY_FILE).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
