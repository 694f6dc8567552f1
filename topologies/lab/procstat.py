"""CPU and memory of a lab's processes by kind (bgpd, zebra, exabgp, the agents, named,
unbound, the population agent): sampled from /proc in a thread while a scenario runs, so
that the step that saturates first can be named with numbers.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of ``pid`` in clock ticks; None once it is gone."""
    try:
        rest = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return int(rest[11]) + int(rest[12])


def rss_bytes(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return None


def pss_bytes(pid: int) -> int | None:
    """The process's proportional share of its pages (smaps_rollup's Pss): what it costs the
    machine, its shared pages divided among their sharers. A thousand udhcpc clients show
    2.2 MB of RSS each and 0.12 MB of PSS, busybox's pages being shared."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        return None
    return None


class Sampler:
    """Every ``interval_s``: each process's CPU share since the last sample (percent of
    one core) and its RSS, as rows {t, kind, node, cpu_pct, rss_mb}."""

    def __init__(self, pids: Mapping[tuple[str, str], int], interval_s: float = 1.0) -> None:
        self.pids = dict(pids)  # (kind, node) -> pid
        self.interval_s = interval_s
        self.rows: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="procstat", daemon=True)

    def _run(self) -> None:
        last = {k: cpu_ticks(p) for k, p in self.pids.items()}
        t_last = time.monotonic()
        while not self._stop.wait(self.interval_s):
            now = time.monotonic()
            for (kind, node), pid in self.pids.items():
                ticks, rss, before = cpu_ticks(pid), rss_bytes(pid), last.get((kind, node))
                if ticks is None or rss is None or before is None:
                    continue
                last[(kind, node)] = ticks
                self.rows.append({
                    "t": time.time(), "kind": kind, "node": node,
                    "cpu_pct": round(100.0 * (ticks - before) / TICKS / (now - t_last), 2),
                    "rss_mb": round(rss / 2**20, 2)})
            t_last = now

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * self.interval_s + 1)


def by_kind(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per kind: the busiest process's mean CPU percent over the samples, its peak, the
    largest RSS of any process of that kind, and the kind's processes together (the sum of
    their means: eight AR agents at 10 % each are most of a core)."""
    cpu: dict[tuple[str, str], list[float]] = {}
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        cpu.setdefault((r["kind"], r["node"]), []).append(float(r["cpu_pct"]))
        k = out.setdefault(r["kind"], {"cpu_pct": 0.0, "cpu_pct_peak": 0.0, "rss_mb": 0.0,
                                       "cpu_pct_all": 0.0})
        k["rss_mb"] = max(k["rss_mb"], float(r["rss_mb"]))
        k["cpu_pct_peak"] = max(k["cpu_pct_peak"], float(r["cpu_pct"]))
    for (kind, _), samples in cpu.items():
        mean = sum(samples) / len(samples)
        out[kind]["cpu_pct"] = max(out[kind]["cpu_pct"], round(mean, 2))
        out[kind]["cpu_pct_all"] += mean
    for k in out.values():
        k["cpu_pct_all"] = round(k["cpu_pct_all"], 2)
    return dict(sorted(out.items()))


def backlog_drops() -> int:
    """Packets the kernel dropped, all CPUs, since boot, because a CPU's input backlog was
    full (/proc/net/softnet_stat, second column): every veth hop of every lab passes it."""
    try:
        lines = Path("/proc/net/softnet_stat").read_text().splitlines()
    except OSError:
        return 0
    return sum(int(line.split()[1], 16) for line in lines if len(line.split()) > 1)


def total_rss_mb(pids: Mapping[tuple[str, str], int]) -> float:
    """The RSS of all the given processes together, now."""
    return round(sum(rss_bytes(p) or 0 for p in pids.values()) / 2**20, 2)


def total_pss_mb(pids: Mapping[tuple[str, str], int]) -> float:
    """The PSS of all the given processes together, now (``pss_bytes``)."""
    return round(sum(pss_bytes(p) or 0 for p in pids.values()) / 2**20, 2)



def children(pid: int) -> list[int]:
    """The processes ``pid`` started that still run (a population's udhcpc clients)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def machine_used_mb(text: str | None = None) -> float | None:
    """The machine's memory in use, MemTotal less MemAvailable of /proc/meminfo (or
    ``text``), in MiB: what the processes' RSS leaves out (the kernel's veths, routes and
    neighbour entries), though page cache and other work on the machine move it too."""
    if text is None:
        try:
            text = Path("/proc/meminfo").read_text()
        except OSError:
            return None
    kb: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        with contextlib.suppress(ValueError, IndexError):
            kb[name] = int(rest.split()[0])
    if "MemTotal" not in kb or "MemAvailable" not in kb:
        return None
    return round((kb["MemTotal"] - kb["MemAvailable"]) / 1024, 1)

# Where inside the lab a datagram was dropped, by the kernel's own counters in each node's
# namespace (/proc/net/snmp and snmp6): a full socket buffer (RcvbufErrors), no route, a
# late answer to a closed port (NoPorts). The backlog drops above are the machine's; these
# name the node and the step.
DROP_COUNTERS = (
    "Ip:InDiscards", "Ip:OutDiscards", "Ip:OutNoRoutes", "IpExt:InNoRoutes",
    "Udp:InErrors", "Udp:RcvbufErrors", "Udp:NoPorts",
    "Ip6InDiscards", "Ip6OutDiscards", "Ip6OutNoRoutes", "Ip6InNoRoutes",
    "Udp6InErrors", "Udp6RcvbufErrors", "Udp6NoPorts",
)
SNMP_FILES = ("/proc/net/snmp", "/proc/net/netstat", "/proc/net/snmp6")


def parse_snmp(text: str) -> dict[str, int]:
    """The counters of /proc/net/snmp and netstat (a line of names then a line of values,
    both led by "Ip:") and of snmp6 (a name and a value a line), as {"Ip:InDiscards": n,
    "Ip6InDiscards": n}. Lines that fit neither shape are skipped."""
    out: dict[str, int] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        words = lines[i].split()
        if words and words[0].endswith(":") and i + 1 < len(lines):
            values = lines[i + 1].split()
            if values and values[0] == words[0] and len(values) == len(words):
                for name, value in zip(words[1:], values[1:], strict=True):
                    with contextlib.suppress(ValueError):
                        out[words[0] + name] = int(value)
                i += 2
                continue
        if len(words) == 2 and not words[0].endswith(":"):
            with contextlib.suppress(ValueError):
                out[words[0]] = int(words[1])
        i += 1
    return out


class Runs(Protocol):
    def run(self, cmd: Sequence[str], timeout: float = ...) -> subprocess.CompletedProcess[str]:
        ...


def drop_counters(nodes: Mapping[str, Runs]) -> dict[str, dict[str, int]]:
    """Each node's DROP_COUNTERS now; a node that cannot be read is left out."""
    out: dict[str, dict[str, int]] = {}
    for name, node in nodes.items():
        try:
            res = node.run(["cat", *SNMP_FILES], timeout=5.0)
        except (OSError, subprocess.SubprocessError):
            continue
        counters = parse_snmp(res.stdout)
        out[name] = {k: counters[k] for k in DROP_COUNTERS if k in counters}
    return out


def drops_between(before: Mapping[str, Mapping[str, int]],
                  after: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    """What each node's counters grew by, non-zero ones only; a node or counter missing on
    either side is left out rather than guessed."""
    out: dict[str, dict[str, int]] = {}
    for node, now in sorted(after.items()):
        was = before.get(node)
        if was is None:
            continue
        grown = {k: v - was[k] for k, v in now.items() if k in was and v > was[k]}
        if grown:
            out[node] = grown
    return out


def drop_totals(drops: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    """Each counter summed over the nodes."""
    out: dict[str, int] = {}
    for counters in drops.values():
        for k, v in counters.items():
            out[k] = out.get(k, 0) + v
    return dict(sorted(out.items()))


# The machine's CPU time by state, all CPUs (/proc/stat's first line): the processes above
# leave out the kernel's packet work (softirq), which every veth hop of the lab costs.
CPU_STATES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def machine_cpu(text: str | None = None) -> dict[str, int]:
    """The aggregate "cpu" line of /proc/stat (or ``text``), in clock ticks by state."""
    if text is None:
        try:
            text = Path("/proc/stat").read_text()
        except OSError:
            return {}
    for line in text.splitlines():
        words = line.split()
        if words and words[0] == "cpu":
            return {k: int(v) for k, v in zip(CPU_STATES, words[1:], strict=False)}
    return {}


def machine_cpu_between(before: Mapping[str, int], after: Mapping[str, int]
                        ) -> dict[str, float]:
    """Each state's share of all CPUs' time between the two readings, in percent of the
    whole machine (so 100 is every core busy in that state); empty if either is missing."""
    spent = {k: after[k] - before[k] for k in CPU_STATES if k in before and k in after}
    total = sum(spent.values())
    if total <= 0:
        return {}
    return {k: round(100.0 * v / total, 1) for k, v in spent.items()}
