"""A sequence-numbered UDP stream for the idle-mode scenario: the CN sends, the MN receives,
each side writes one line per datagram with its wall-clock time (one kernel, one clock).

    python -m agents.udpstream send 10.64.0.10 --count 50 --interval 0.01
    python -m agents.udpstream send 2001:db8:4000:1::1 --count 50 --interval 0.01
    python -m agents.udpstream recv --port 9000   # both families on one socket
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import re
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass

_HEAD = struct.Struct("!4sQd")
MAGIC = b"fa-s"
_LINE = re.compile(r"^(sent|recv) (\d+) ([\d.]+)$")


@dataclass(frozen=True)
class Record:
    kind: str
    seq: int
    ts: float


def parse(text: str) -> list[Record]:
    out = []
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if m:
            out.append(Record(m.group(1), int(m.group(2)), float(m.group(3))))
    return out


def send(target: str, port: int, count: int, interval: float, first: int) -> None:
    v6 = ipaddress.ip_address(target).version == 6
    s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
    start = time.monotonic()
    for i in range(count):
        due = start + i * interval
        while (left := due - time.monotonic()) > 0:
            time.sleep(left)
        now = time.time()
        seq = first + i
        with contextlib.suppress(OSError):
            s.sendto(_HEAD.pack(MAGIC, seq, now) + bytes(32), (target, port))
        sys.stdout.write(f"sent {seq} {now:.6f}\n")
    sys.stdout.flush()


def recv(port: int) -> None:
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    # One socket for both families (IPv4 arrives as ::ffff:a.b.c.d): one file, one order.
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    sys.stdout.write(f"listening {port}\n")
    sys.stdout.flush()
    while True:
        data, _ = s.recvfrom(2048)
        now = time.time()
        if len(data) >= _HEAD.size and data[:4] == MAGIC:
            _, seq, _ = _HEAD.unpack_from(data)
            sys.stdout.write(f"recv {seq} {now:.6f}\n")
            sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="agents.udpstream", description=__doc__)
    sub = ap.add_subparsers(dest="mode", required=True)
    snd = sub.add_parser("send")
    snd.add_argument("target")
    snd.add_argument("--port", type=int, default=9000)
    snd.add_argument("--count", type=int, default=50)
    snd.add_argument("--interval", type=float, default=0.01)
    snd.add_argument("--first", type=int, default=1)
    rcv = sub.add_parser("recv")
    rcv.add_argument("--port", type=int, default=9000)
    args = ap.parse_args(argv)
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.mode == "send":
        send(args.target, args.port, args.count, args.interval, args.first)
    else:
        recv(args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
