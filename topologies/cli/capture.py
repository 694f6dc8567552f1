"""`flatarch capture NODE[:IFACE] [-w FILE] [-f FILTER]`: tcpdump inside a node of the running
lab, pcap to stdout (`flatarch capture ar1 | wireshark -k -i -`) or to a file, until Ctrl-C,
SIGTERM or the reader closing the pipe; tcpdump is stopped before the verb exits 0.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys
from pathlib import Path
from typing import IO, Any

from topologies.cli.common import stop_on
from topologies.lab.capture import Capture, CaptureError, CaptureSpec
from topologies.lab.daemons import LabError
from topologies.lab.lab import RUN_ROOT, attach, stderr_progress

ORDER = 25  # after exec: another terminal's view of the running lab

def add_parser(sub: Any) -> None:
    cp = sub.add_parser("capture", help="capture packets in a node of the running lab (pcap)")
    cp.add_argument("target", metavar="NODE[:IFACE]", help="interface default: any")
    cp.add_argument("-w", dest="write", metavar="FILE", help="write the pcap here, not stdout")
    cp.add_argument("-f", dest="filter", metavar="FILTER",
                    help="capture filter (BPF), e.g. 'udp port 7411'")
    cp.set_defaults(func=cmd_capture)


def _reader_gone(fd: int) -> bool:
    """True once the read end of a pipe on ``fd`` is closed (poll reports an error)."""
    p = select.poll()
    p.register(fd, 0)  # no events asked for: only POLLERR / POLLHUP come back
    return bool(p.poll(0))


def cmd_capture(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise LabError("capture enters the lab's namespaces and needs root (use sudo)")
    spec = CaptureSpec.parse(args.target)
    state, execs = attach()
    if spec.node not in execs:
        raise CaptureError(f"no node {spec.node!r} (nodes: {', '.join(sorted(execs))})")
    out: Path | IO[bytes]
    if args.write:
        out = Path(args.write)
    else:
        if sys.stdout.isatty():
            raise CaptureError("pcap is binary: pipe it (| wireshark -k -i -) or use -w FILE")
        out = sys.stdout.buffer
    stop_on(signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    watch = None if args.write else sys.stdout.fileno()
    cap = Capture(execs[spec.node], RUN_ROOT / state["name"], spec, out, args.filter)
    try:
        with cap:
            stderr_progress(f"capturing in {spec.node} on {spec.iface}"
                            + (f" to {args.write}" if args.write else "") + "; Ctrl-C stops")
            try:
                while not cap.wait(0.2):
                    if watch is not None and _reader_gone(watch):
                        break
            except KeyboardInterrupt:
                pass
            # A second Ctrl-C must not cut the stop short and leave tcpdump behind.
            for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(s, signal.SIG_IGN)
    except KeyboardInterrupt:
        pass  # interrupted while tcpdump was starting; Capture has stopped it
    if cap.summary():
        stderr_progress(f"tcpdump: {cap.summary()}")
    return 0
