"""A paced ICMP echo prober: one request every interval on an absolute schedule, and one
line per reply in `ping -D` format (so topologies/analysis/measure.py parses both). Given
many targets (a population, issue 15) it probes each every interval, the sends spread evenly.

iputils ping cannot hold 10 ms here: `-i 0.01` sends every 16 ms on this machine (any
interval of 10 ms or more is stretched) and `-i 0.009` every 9 ms. A handoff measured in
lost pings needs the stated interval, so the CN uses this instead.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

ICMP_ECHO, ICMP_ECHOREPLY = 8, 0
ICMP6_ECHO, ICMP6_ECHOREPLY = 128, 129  # an IPv6 target (issue 18): ICMPv6 echo
PAYLOAD = 56


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return int(~total & 0xFFFF)


def echo_request(ident: int, seq: int, kind: int = ICMP_ECHO) -> bytes:
    """An echo request; for ICMPv6 the kernel rewrites the checksum (pseudo-header)."""
    payload = bytes(PAYLOAD)
    head = struct.pack("!BBHHH", kind, 0, 0, ident, seq & 0xFFFF)
    return struct.pack("!BBHHH", kind, 0, checksum(head + payload), ident,
                       seq & 0xFFFF) + payload


def parse_reply(packet: bytes, ident: int) -> tuple[int, int] | None:
    """(sequence, ttl) of an echo reply to us inside an IPv4 packet, else None."""
    if len(packet) < 28:
        return None
    ihl = (packet[0] & 0x0F) * 4
    if len(packet) < ihl + 8:
        return None
    kind, _, _, rid, seq = struct.unpack_from("!BBHHH", packet, ihl)
    if kind != ICMP_ECHOREPLY or rid != ident:
        return None
    return seq, packet[8]


def parse_reply6(message: bytes, ident: int) -> int | None:
    """The sequence of an ICMPv6 echo reply to us (a raw ICMPv6 socket gives no IP header)."""
    if len(message) < 8:
        return None
    kind, _, _, rid, seq = struct.unpack_from("!BBHHH", message)
    return seq if kind == ICMP6_ECHOREPLY and rid == ident else None


class Prober:
    def __init__(self, target: str, interval: float, more: Sequence[str] = ()) -> None:
        self.target = target
        self.targets = [target, *more]
        self.interval = interval
        self.ident = os.getpid() & 0xFFFF
        self.kind = ICMP6_ECHO if ":" in target else ICMP_ECHO
        self.v6 = ":" in target
        self.sock = (socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
                     if self.v6 else
                     socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
        if self.v6:
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
        self.sent: dict[tuple[str, int], float] = {}
        self.stop = threading.Event()
        self.transmitted = 0
        self.received = 0

    def receive(self) -> None:
        out = sys.stdout
        while not self.stop.is_set():
            ready, _, _ = select.select([self.sock], [], [], 0.2)
            if not ready:
                continue
            if self.v6:
                self._receive6(out)
                continue
            packet, (src, _) = self.sock.recvfrom(2048)
            now = time.time()
            got = parse_reply(packet, self.ident)
            if got is None:
                continue
            seq, ttl = got
            sent = self.sent.pop((src, seq), None)
            if sent is None:
                continue
            self.received += 1
            out.write(f"[{now:.6f}] {len(packet) - (packet[0] & 0x0F) * 4} bytes from {src}: "
                      f"icmp_seq={seq} ttl={ttl} time={(now - sent) * 1000:.3f} ms\n")
            out.flush()

    def _receive6(self, out: TextIO) -> None:
        packet, anc, _, addr = self.sock.recvmsg(2048, socket.CMSG_SPACE(4))
        now = time.time()
        seq = parse_reply6(packet, self.ident)
        src = str(addr[0]).split("%")[0]
        sent = self.sent.pop((src, seq), None) if seq is not None else None
        if sent is None:
            return
        hops = next((int.from_bytes(d[:4], sys.byteorder) for lv, k, d in anc
                     if lv == socket.IPPROTO_IPV6 and k == socket.IPV6_HOPLIMIT), 0)
        self.received += 1
        out.write(f"[{now:.6f}] {len(packet)} bytes from {src}: icmp_seq={seq} ttl={hops} "
                  f"time={(now - sent) * 1000:.3f} ms\n")
        out.flush()

    def retarget(self, targets: Sequence[str]) -> bool:
        """The same number of targets, some at new addresses (a DHCP MN's new lease): each
        keeps its slot in the schedule. Another count, or another family, is refused."""
        if len(targets) != len(self.targets) or any((":" in t) != self.v6 for t in targets):
            return False
        self.targets = list(targets)
        return True

    def follow(self, path: Path, every: float = 0.5) -> None:
        """Re-read ``path`` (every target, one a line) whenever it changes."""
        seen = path.stat().st_mtime_ns
        while not self.stop.wait(every):
            try:
                now = path.stat().st_mtime_ns
                if now == seen:
                    continue
                seen = now
                if not self.retarget(path.read_text().split()):
                    print(f"agents.probe: {path}: not {len(self.targets)} targets of one "
                          "family; kept the old ones", file=sys.stderr)
            except OSError as exc:
                print(f"agents.probe: {path}: {exc}", file=sys.stderr)

    def run(self) -> None:
        sys.stdout.write(f"PROBE {self.target} every {self.interval * 1000:.1f} ms\n")
        sys.stdout.flush()
        rx = threading.Thread(target=self.receive, daemon=True)
        rx.start()
        start = time.monotonic()
        step = self.interval / len(self.targets)
        n = 0
        while not self.stop.is_set():
            seq, i = divmod(n, len(self.targets))
            seq += 1
            n += 1
            target = self.targets[i]
            due = start + (n - 1) * step
            while (left := due - time.monotonic()) > 0:
                time.sleep(left)
            self.sent[(target, seq & 0xFFFF)] = time.time()
            try:
                self.sock.sendto(echo_request(self.ident, seq, self.kind), (target, 0))
                self.transmitted += 1
            except OSError:
                pass  # no route for a moment: the sequence number still counts as lost
        rx.join(1.0)
        sys.stdout.write(f"--- {self.transmitted} packets transmitted, "
                         f"{self.received} received ---\n")
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="agents.probe", description=__doc__)
    ap.add_argument("target")
    ap.add_argument("more", nargs="*", help="further targets, each probed every interval")
    ap.add_argument("--targets", type=Path, help="a file of further targets, one a line")
    ap.add_argument("--interval", type=float, default=0.01)
    ap.add_argument("--follow", type=Path,
                    help="a file of every target (the first one too), re-read when it "
                    "changes: addresses that move (DHCP leases)")
    args = ap.parse_args(argv)
    more = [*args.more, *(args.targets.read_text().split() if args.targets else [])]
    if args.follow is not None:
        every = args.follow.read_text().split()
        if not every or every[0] != args.target:
            ap.error(f"--follow {args.follow}: its first line must be the target")
        more = every[1:]
    prober = Prober(args.target, args.interval, more)
    signal.signal(signal.SIGINT, lambda *_: prober.stop.set())
    signal.signal(signal.SIGTERM, lambda *_: prober.stop.set())
    if args.follow is not None:
        threading.Thread(target=prober.follow, args=(args.follow,), daemon=True).start()
    prober.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
