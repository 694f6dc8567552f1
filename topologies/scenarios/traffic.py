"""The one traffic harness of the scenarios: the paced prober (agents/probe.py), iperf3 server
and client, the UDP stream (agents/udpstream.py), all started through `Lab.background` so
each has a pid file and a stop; and the one traceroute helper that names each hop's node.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator, Mapping
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Any

from topologies.analysis import measure
from topologies.lab.daemons import LabError, NodeExec, wait_until
from topologies.lab.lab import Background, Lab
from topologies.scenarios.base import PROBE_INTERVAL_S, wait_for_clock

PING_INTERVAL_S = PROBE_INTERVAL_S
IPERF_PORT = 5201
# The IPv6 stream's own server: one iperf3 server runs one test at a time.
IPERF_PORT6 = 5205
IPERF_JSON, IPERF6_JSON = "iperf.json", "iperf6.json"
IPERF_RATE = "20M"  # paced: a full-rate stream would starve the daemons of the 2-core VM
IPERF_INTERVAL_S = 0.1


def listening(ex: NodeExec, port: int) -> bool:
    """A TCP socket listens on ``port`` in the node."""
    return f":{port}" in ex.run(["ss", "-ltn"]).stdout


def probe(lab: Lab, node: str, address: IPv4Address | IPv6Address | str, out: Path,
          interval_s: float = PING_INTERVAL_S) -> contextlib.AbstractContextManager[Background]:
    """Our paced ICMP prober, not iputils ping: `ping -i 0.01` sends every 16 ms here."""
    return lab.background(node, [sys.executable, "-m", "agents.probe", str(address),
                                 "--interval", str(interval_s)], out)


@contextlib.contextmanager
def iperf_server(lab: Lab, node: str, out: Path, port: int = IPERF_PORT, *, once: bool = True,
                 interval_s: float | None = IPERF_INTERVAL_S) -> Iterator[Background]:
    """An iperf3 server with JSON output, returned once it listens."""
    cmd = ["iperf3", "-s", *(["-1"] if once else []), "-p", str(port), "-J",
           *(["-i", str(interval_s)] if interval_s is not None else [])]
    with lab.background(node, cmd, out) as bg:
        ex = lab.execs[node]
        wait_until(lambda: listening(ex, port), 10, f"iperf3 server on {node}:{port}")
        yield bg


def iperf_client(lab: Lab, node: str, address: IPv4Address | IPv6Address | str, out: Path,
                 duration_s: float, rate: str = IPERF_RATE, port: int = IPERF_PORT, *,
                 server_output: bool = True,
                 udp: bool = False) -> contextlib.AbstractContextManager[Background]:
    """A paced iperf3 TCP (or with ``udp``, UDP) stream to ``address``, reporting every
    100 ms (so the stalls of a handoff show); ``server_output`` puts the receiver's
    intervals into the same JSON."""
    cmd = ["iperf3", "-c", str(address), "-p", str(port), "-t", f"{duration_s:.0f}",
           "-i", str(IPERF_INTERVAL_S), "-b", rate, "-J", *(["-u"] if udp else []),
           *(["--get-server-output"] if server_output else [])]
    return lab.background(node, cmd, out)


@contextlib.contextmanager
def udp_receiver(lab: Lab, node: str, port: int, out: Path) -> Iterator[Background]:
    """The UDP stream's receiver, returned once it listens."""
    with lab.background(node, [sys.executable, "-m", "agents.udpstream", "recv",
                               "--port", str(port)], out) as bg:
        wait_until(lambda: out.exists() and "listening" in out.read_text(), 10,
                   f"the UDP receiver on {node}")
        yield bg


@contextlib.contextmanager
def iperf6(lab: Lab, cn: str, mn: str, address: IPv6Address | str, out_dir: Path,
           duration_s: float, port: int = IPERF_PORT6, name: str = IPERF6_JSON, *,
           receiver: bool = True) -> Iterator[Background]:
    """The walk's TCP stream to the MN's IPv6 address (issue 18), beside the IPv4 one: its
    own server on the MN, the paced client at the CN; the client's JSON is ``name``. With
    ``receiver`` its stalls are the receiver's, as the IPv4 stream beside it has them (the
    sender's view hides a stall behind its socket buffer)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(iperf_server(lab, mn, out_dir / f"server-{name}", port,
                                         interval_s=IPERF_INTERVAL_S if receiver else None))
        yield stack.enter_context(iperf_client(lab, cn, address, out_dir / name, duration_s,
                                               IPERF_RATE, port, server_output=receiver))


def iperf_result(path: Path) -> dict[str, Any]:
    """A walk's iperf3 client JSON summarised; a missing or broken one is a stream that did
    not survive, with the reason."""
    failed: dict[str, Any] = {"survived": False, "max_stall_ms": None, "mean_mbps": 0.0}
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return {**failed, "error": f"no iperf3 result: {exc}"}
    try:
        return measure.iperf_summary(doc)
    except measure.MeasureError as exc:
        return {**failed, "error": str(exc)}


def iperf_line(ip: dict[str, Any], what: str) -> str:
    """One table line for a walk's TCP stream."""
    stall = ip.get("max_stall_ms")
    return (f"iperf3 TCP {what}: survived={ip.get('survived')} "
            f"max_stall={stall if stall is None else round(stall)} ms "
            f"mean={ip.get('mean_mbps', 0):.1f} Mbit/s")


def end_walk(ping: Background, iperf: Background, duration_s: float,
             lead_s: float = 0.5) -> float:
    """The end of a walk's window, ``lead_s`` after its last handoff: wait for it, stop the
    probe (SIGINT, so it writes its last lines) and let iperf3 finish its test."""
    t_end = time.time() + lead_s
    wait_for_clock(t_end)
    ping.interrupt()
    iperf.wait(duration_s + 15)
    return t_end


def udp_send(lab: Lab, node: str, address: IPv4Address | IPv6Address | str, port: int,
             count: int, interval_s: float, first: int) -> str:
    """Send ``count`` numbered datagrams from ``first``; the sender's lines (agents.udpstream
    format), to keep as a raw file."""
    res = lab.execs[node].run(
        [sys.executable, "-m", "agents.udpstream", "send", str(address), "--port", str(port),
         "--count", str(count), "--interval", str(interval_s), "--first", str(first)],
        timeout=60)
    if res.returncode != 0:
        raise LabError(f"udpstream send failed: {res.stderr.strip()[:300]}")
    return res.stdout


def trace(ex: NodeExec, dst: IPv4Address | IPv6Address | str,
          owner: Mapping[IPv4Address, str] | Mapping[str, str], *,
          target: str | None = None, icmp: bool = False, max_hops: int = 12,
          timeout: float = 20) -> list[str | None]:
    """traceroute from the node to ``dst`` (IPv6 too, issue 18): each hop's node name (None
    for a silent hop, the address itself when no node owns it); ``target`` names ``dst``
    itself. ``icmp`` sends echo probes, which an MN answers every time (UDP probes meet its
    ICMP rate limit)."""
    want = ip_address(str(dst))
    cmd = ["traceroute", *(["-6"] if want.version == 6 else []), *(["-I"] if icmp else []),
           "-n", "-q", "1", "-w", "1", "-m", str(max_hops), str(dst)]
    out = ex.run(cmd, timeout=timeout).stdout
    by_text = {str(a): n for a, n in owner.items()}
    names: list[str | None] = []
    for h in measure.parse_traceroute(out):
        if h is None:
            names.append(None)
        elif target is not None and h == want:
            names.append(target)
        else:
            names.append(by_text.get(str(h), str(h)))
    return names
