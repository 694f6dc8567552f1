"""CPU and memory of a lab's processes by kind (bgpd, zebra, exabgp, the agents, named,
unbound, the population agent): sampled from /proc in a thread while a scenario runs, so
that the step that saturates first can be named with numbers.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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
    """Per kind: the busiest process's mean CPU percent over the samples, its peak, and the
    largest RSS of any process of that kind."""
    cpu: dict[tuple[str, str], list[float]] = {}
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        cpu.setdefault((r["kind"], r["node"]), []).append(float(r["cpu_pct"]))
        k = out.setdefault(r["kind"], {"cpu_pct": 0.0, "cpu_pct_peak": 0.0, "rss_mb": 0.0})
        k["rss_mb"] = max(k["rss_mb"], float(r["rss_mb"]))
        k["cpu_pct_peak"] = max(k["cpu_pct_peak"], float(r["cpu_pct"]))
    for (kind, _), samples in cpu.items():
        out[kind]["cpu_pct"] = max(out[kind]["cpu_pct"], round(sum(samples) / len(samples), 2))
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
