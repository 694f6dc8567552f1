"""`flatarch bench links`: configured against measured one-way delay, jitter, loss and rate
of one shaped link in namespaces of its own (fa-links-a → fa-links-m → fa-links-b, shaped on
m's egress toward b), through the mechanism `up` would choose (topologies/lab/shaping.py),
and the delay line's CPU.

The shaped link is a router's, as in a lab: traffic is forwarded through it. A sender on the
shaped interface itself would measure its own socket's limits instead (TCP Small Queues
hold a socket to about 1 ms of data below it; netem orphans its packets to escape that).

Each phase builds the pair afresh and removes it after, even after an exception; the bench
holds the machine's lab lock, so it never runs beside a lab.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from topologies.lab import shaping
from topologies.lab.daemons import LabError, NodeExec, start_batch, wait_until
from topologies.lab.lab import machine_lock
from topologies.model.links import LinkAttributes

PREFIX = "fa-links-"
A, M, B = f"{PREFIX}a", f"{PREFIX}m", f"{PREFIX}b"
DEV_A, DEV_MA, DEV_MB, DEV_B = "fla0", "flm0", "flm1", "flb0"
ADDR_A, ADDR_MA, ADDR_MB, ADDR_B = "10.77.0.1", "10.77.0.2", "10.77.0.5", "10.77.0.6"
POINTS_PPS = (100, 1000, 10000)
LOSS_PACKETS = 100_000
# iperf3 counts TCP payload; the rate limits frames. A full segment is 1,448 bytes of payload
# in 1,514 on the wire (Ethernet 14, IPv4 20, TCP with timestamps 32).
WIRE_PER_GOODPUT = 1514 / 1448
Progress = Callable[[str], None]


class NetnsExec(NodeExec):
    """Runs commands in a named namespace (ip netns), like a lab node's NodeExec."""

    def __init__(self, name: str) -> None:
        super().__init__(name, 0)

    def argv(self, cmd: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *cmd]


@dataclass(frozen=True)
class Delays:
    """One-way delays in ms of the datagrams that arrived, and how many were sent."""

    delays: list[float]
    sent: int

    def summary(self) -> dict[str, Any]:
        d = sorted(self.delays)
        n = len(d)
        if n == 0:
            return {"p50": None, "p99": None, "max": None, "jitter_ms": None, "loss_pct": 100.0}
        # Jitter as RFC 3550 sees it: the mean change of delay between consecutive packets.
        steps = [abs(b - a) for a, b in zip(self.delays, self.delays[1:], strict=False)]
        return {"p50": d[n // 2], "p99": d[min(n - 1, int(n * 0.99))], "max": d[-1],
                "mean": statistics.fmean(d), "jitter_ms": statistics.fmean(steps) if steps
                else 0.0, "loss_pct": 100.0 * (1 - n / self.sent) if self.sent else 0.0}


def parse_recv(text: str) -> list[float]:
    """Delays (ms) from the receiver's "seq sent_ns recv_ns" lines, in arrival order."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            out.append((int(parts[2]) - int(parts[1])) / 1e6)
    return out


def _run(cmd: list[str]) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        raise LabError(f"{' '.join(cmd)}: {(res.stderr or res.stdout).strip()}")


def remove_pair() -> None:
    for ns in (A, M, B):
        if Path(f"/run/netns/{ns}").exists():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


class Pair:
    """a → m → b over two veths, m forwarding; attributes laid on m's end toward b."""

    def __init__(self, workdir: Path, progress: Progress) -> None:
        self.workdir = workdir
        self.progress = progress
        self.a, self.m, self.b = NetnsExec(A), NetnsExec(M), NetnsExec(B)
        self.applied = shaping.Applied()

    def build(self) -> None:
        remove_pair()
        for ns in (A, M, B):
            _run(["ip", "netns", "add", ns])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        _run(["ip", "-n", A, "link", "add", DEV_A, "type", "veth", "peer", "name", DEV_MA,
              "netns", M])
        _run(["ip", "-n", M, "link", "add", DEV_MB, "type", "veth", "peer", "name", DEV_B,
              "netns", B])
        for ns, dev, addr in ((A, DEV_A, ADDR_A), (M, DEV_MA, ADDR_MA), (M, DEV_MB, ADDR_MB),
                              (B, DEV_B, ADDR_B)):
            _run(["ip", "-n", ns, "addr", "add", f"{addr}/30", "dev", dev])
            _run(["ip", "-n", ns, "link", "set", dev, "up"])
        _run(["ip", "-n", A, "route", "add", "default", "via", ADDR_MA])
        _run(["ip", "-n", B, "route", "add", "default", "via", ADDR_MB])
        _run(["ip", "netns", "exec", M, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])

    def shape(self, attrs: LinkAttributes) -> None:
        self.applied = shaping.apply({(M, DEV_MB): attrs}, {M: self.m}, self.workdir,
                                     self.progress, netns={M: f"/run/netns/{M}"})
        if self.applied.daemon is not None:
            start_batch([(self.applied.daemon, self.m)])

    def close(self) -> None:
        if self.applied.daemon is not None:
            self.applied.daemon.stop()
        remove_pair()

    def delayline_ticks(self) -> int | None:
        d = self.applied.daemon
        pid = d.pid() if d is not None else None
        if pid is None:
            return None
        rest = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return int(rest[11]) + int(rest[12])  # utime + stime

    def probe(self, pps: int, count: int) -> Delays:
        out = self.workdir / f"recv-{pps}.txt"
        ready = Path(str(out) + ".ready")
        ready.unlink(missing_ok=True)
        py = [sys.executable, "-m", "agents.linkprobe"]
        with subprocess.Popen(self.b.argv([*py, "recv", "--out", str(out), "--count",
                                           str(count), "--idle", "1"]),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) as rx:
            try:
                wait_until(ready.exists, 10, "the probe receiver")
                sent = subprocess.run(self.a.argv([*py, "send", ADDR_B, "--pps", str(pps),
                                                   "--count", str(count)]),
                                      capture_output=True, text=True,
                                      timeout=count / pps * 3 + 30)
                rx.wait(timeout=30)
            finally:
                if rx.poll() is None:
                    rx.kill()
        if sent.returncode != 0:
            raise LabError(f"probe sender: {sent.stderr.strip()[-300:]}")
        return Delays(parse_recv(out.read_text()), int(sent.stdout.strip() or 0))

    def iperf(self, seconds: float) -> float:
        """TCP throughput a → b in Mbit/s (iperf3, the receiver's count)."""
        with subprocess.Popen(self.b.argv(["iperf3", "-s", "-1", "-B", ADDR_B]),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as srv:
            try:
                # The one-off server serves exactly one test: wait for its port, by ss.
                wait_until(lambda: "5201" in self.b.run(["ss", "-ltn"]).stdout, 10,
                           "the iperf3 server")
                res = self.a.run(["iperf3", "-c", ADDR_B, "-t", str(seconds), "-J"],
                                 timeout=seconds + 30)
            finally:
                if srv.poll() is None:
                    srv.kill()
        try:
            doc = json.loads(res.stdout)
            return float(doc["end"]["sum_received"]["bits_per_second"]) / 1e6
        except (ValueError, KeyError, TypeError):
            raise LabError(f"iperf3: {res.stdout[-300:]} {res.stderr[-300:]}") from None


@contextlib.contextmanager
def pair(workdir: Path, progress: Progress) -> Iterator[Pair]:
    p = Pair(workdir, progress)
    try:
        p.build()
        yield p
    finally:
        p.close()


def run(delay_ms: float = 10.0, pps: Sequence[int] = POINTS_PPS, seconds: float = 5.0,
        loss_pct: float = 1.0, rate_mbit: float = 50.0, tcp_seconds: float = 5.0,
        progress: Progress = lambda _: None) -> dict[str, Any]:
    """Every figure of the bench, as the JSON the CLI writes."""
    from topologies.lab.lab import RUN_ROOT

    workdir = RUN_ROOT / "fa-links"
    out: dict[str, Any] = {"mechanism": None, "points": []}
    hz = os.sysconf("SC_CLK_TCK")
    with machine_lock("bench links"):
        try:
            workdir.mkdir(parents=True, exist_ok=True)
            with pair(workdir, progress) as p:
                p.shape(LinkAttributes(delay_ms=delay_ms))
                out["mechanism"] = p.applied.mechanism
                for rate in pps:
                    count = max(200, int(rate * seconds))
                    progress(f"links: {count} datagrams at {rate} pps, delay {delay_ms} ms")
                    t0 = p.delayline_ticks()
                    start = _now()
                    d = p.probe(rate, count)
                    t1 = p.delayline_ticks()
                    s = d.summary()
                    cpu = (100.0 * (t1 - t0) / hz / (_now() - start)
                           if t0 is not None and t1 is not None else None)
                    out["points"].append({
                        "pps": rate, "delay_ms": delay_ms, "packets": d.sent,
                        "measured_ms": {k: s[k] for k in ("p50", "p99", "max", "mean")},
                        "jitter_ms": s["jitter_ms"], "loss_pct": s["loss_pct"],
                        "delayline_cpu_pct": cpu})
                progress(f"links: TCP through the {delay_ms} ms link ({tcp_seconds:g} s)")
                out["tcp_mbit"] = p.iperf(tcp_seconds)
                cpus = [pt["delayline_cpu_pct"] for pt in out["points"]
                        if pt["delayline_cpu_pct"] is not None]
                out["cpu_pct"] = max(cpus) if cpus else 0.0
            with pair(workdir, progress) as p:
                p.shape(LinkAttributes(loss_pct=loss_pct))
                rate = max(pps)
                progress(f"links: loss {loss_pct} % over {LOSS_PACKETS} datagrams at {rate} pps")
                s = p.probe(rate, LOSS_PACKETS).summary()
                out["loss"] = {"configured_pct": loss_pct, "packets": LOSS_PACKETS,
                               "measured_pct": s["loss_pct"]}
            with pair(workdir, progress) as p:
                p.shape(LinkAttributes(rate_mbit=rate_mbit))
                progress(f"links: TCP through a {rate_mbit} Mbit/s link ({tcp_seconds:g} s)")
                goodput = p.iperf(tcp_seconds)
                out["rate"] = {"configured_mbit": rate_mbit, "measured_mbit": goodput,
                               "measured_wire_mbit": goodput * WIRE_PER_GOODPUT}
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    return out


def _now() -> float:
    return time.monotonic()


def table(res: dict[str, Any]) -> str:
    lines = [f"mechanism {res['mechanism']}",
             f"{'pps':>7} {'delay':>7} {'p50':>8} {'p99':>8} {'max':>8} {'jitter':>7} "
             f"{'loss %':>7} {'cpu %':>6}"]
    for pt in res["points"]:
        m = pt["measured_ms"]
        cpu = pt["delayline_cpu_pct"]
        lines.append(f"{pt['pps']:>7} {pt['delay_ms']:>7.2f} {_f(m['p50'])} {_f(m['p99'])} "
                     f"{_f(m['max'])} {_f(pt['jitter_ms'], 7)} {pt['loss_pct']:>7.2f} "
                     f"{'-' if cpu is None else f'{cpu:.1f}':>6}")
    lines.append(f"TCP through the delayed link   {res.get('tcp_mbit', 0.0):10.1f} Mbit/s")
    if "loss" in res:
        lo = res["loss"]
        lines.append(f"loss {lo['configured_pct']} % over {lo['packets']} packets "
                     f"measured {lo['measured_pct']:.3f} %")
    if "rate" in res:
        ra = res["rate"]
        lines.append(f"rate {ra['configured_mbit']} Mbit/s measured {ra['measured_mbit']:.1f} "
                     f"TCP goodput, {ra.get('measured_wire_mbit', 0.0):.1f} on the wire")
    return "\n".join(lines)


def _f(v: float | None, width: int = 8) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:>{width}.3f}"
