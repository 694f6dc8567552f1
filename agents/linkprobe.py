"""One-way delay probe for `flatarch bench links`: the sender stamps each UDP datagram with
its CLOCK_REALTIME send time, the receiver takes the kernel's receive stamp (SO_TIMESTAMPNS,
the same clock: both ends share one kernel) and writes one line per datagram.

    python -m agents.linkprobe send 10.0.0.2 --pps 1000 --count 10000
    python -m agents.linkprobe recv --out recv.txt --count 10000
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import struct
import sys
import time
from pathlib import Path

MAGIC = b"faLP"
_HEAD = struct.Struct("!4sQQ")  # magic, sequence number, send time (ns, CLOCK_REALTIME)
PORT = 9100
SO_TIMESTAMPNS = 35
_TS = struct.Struct("=qq")


def send(target: str, port: int, pps: float, count: int, size: int) -> int:
    """Send ``count`` datagrams on an absolute schedule of ``pps``; return how many were
    sent, refused ones included: a refusal (a local rule's drop) is a loss like any other."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # Preempted between its stamp and sendto(), the sender would add its wait to the delay
    # it measures; at FIFO priority it is not. It only sleeps: late wake-ups send in bursts
    # that keep the absolute schedule, each datagram stamped when it leaves.
    with contextlib.suppress(OSError):
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    pad = bytes(max(0, size - _HEAD.size))
    interval = 1.0 / pps
    start = time.monotonic()
    sent = 0
    for seq in range(count):
        due = start + seq * interval
        left = due - time.monotonic()
        if left > 0:
            time.sleep(left)
        sent += 1
        with contextlib.suppress(OSError):
            s.sendto(_HEAD.pack(MAGIC, seq, time.time_ns()) + pad, (target, port))
    return sent


def recv(port: int, out: Path, count: int, idle: float) -> int:
    """Write "seq sent_ns recv_ns" per datagram until ``count`` arrived or ``idle`` seconds
    passed without one after the first; return how many arrived."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("0.0.0.0", port))
    lines: list[str] = []
    Path(str(out) + ".ready").write_text("ready\n")
    s.settimeout(60.0)
    try:
        while len(lines) < count:
            try:
                data, anc, _, _ = s.recvmsg(2048, 64)
            except TimeoutError:
                break
            s.settimeout(idle)
            if len(data) < _HEAD.size or data[:4] != MAGIC:
                continue
            _, seq, sent_ns = _HEAD.unpack_from(data)
            recv_ns = time.time_ns()
            for level, kind, val in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(val) >= 16:
                    sec, nsec = _TS.unpack_from(val)
                    recv_ns = sec * 1_000_000_000 + nsec
            lines.append(f"{seq} {sent_ns} {recv_ns}\n")
    finally:
        out.write_text("".join(lines))
    return len(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="agents.linkprobe", description=__doc__)
    sub = ap.add_subparsers(dest="mode", required=True)
    snd = sub.add_parser("send")
    snd.add_argument("target")
    snd.add_argument("--port", type=int, default=PORT)
    snd.add_argument("--pps", type=float, default=1000.0)
    snd.add_argument("--count", type=int, default=1000)
    snd.add_argument("--size", type=int, default=64)
    rcv = sub.add_parser("recv")
    rcv.add_argument("--port", type=int, default=PORT)
    rcv.add_argument("--out", type=Path, required=True)
    rcv.add_argument("--count", type=int, default=1000)
    rcv.add_argument("--idle", type=float, default=2.0)
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.mode == "send":
        print(send(args.target, args.port, args.pps, args.count, args.size))
    else:
        print(recv(args.port, args.out, args.count, args.idle))
    return 0


if __name__ == "__main__":
    sys.exit(main())
