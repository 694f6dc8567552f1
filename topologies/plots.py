"""Plots of the handoff scenario, drawn from its own measurements: the probe stream over
time with every handoff marked, and the interruption distribution per mode.

matplotlib's Agg backend only: no display is needed, and nothing here changes a number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MODE_COLOURS = {"redirect": "tab:blue", "draft": "tab:orange"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def handoff_timeline(timeline: list[tuple[float, float | None]],
                     handoffs: list[dict[str, Any]], path: Path) -> Path:
    """RTT of every probe (lost ones at the bottom, in red) and a line per handoff."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(12, 4))
    t0 = timeline[0][0] if timeline else 0.0
    got = [(t - t0, rtt) for t, rtt in timeline if rtt is not None]
    lost = [t - t0 for t, rtt in timeline if rtt is None]
    if got:
        ax.plot([t for t, _ in got], [r for _, r in got], ",", color="black", label="probe RTT")
    if lost:
        ax.plot(lost, [0.0] * len(lost), "|", color="red", markersize=12, label="lost probe")
    seen: set[str] = set()
    for h in handoffs:
        mode = str(h["mode"])
        ax.axvline(float(h["t_attach"]) - t0, color=MODE_COLOURS.get(mode, "grey"),
                   alpha=0.5, linewidth=0.8,
                   label=f"handoff ({mode})" if mode not in seen else None)
        seen.add(mode)
    ax.set_xlabel("time since the first probe (s)")
    ax.set_ylabel("CN → MN probe RTT (ms)")
    ax.set_title("Probe stream (one every 10 ms) across the handoffs")
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def interruption_cdf(handoffs: list[dict[str, Any]], path: Path) -> Path:
    """Empirical CDF of interruption_ms, one curve per mode."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for mode in sorted({str(h["mode"]) for h in handoffs}):
        values = sorted(float(h["interruption_ms"]) for h in handoffs if h["mode"] == mode)
        n = len(values)
        ax.step(values, [(i + 1) / n for i in range(n)], where="post",
                color=MODE_COLOURS.get(mode, "grey"), label=f"{mode} (n={n})")
    ax.set_xlabel("interruption (ms): longest gap in the 10 ms probe stream")
    ax.set_ylabel("fraction of handoffs")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def host_routes(series: list[dict[str, Any]], phases: list[dict[str, Any]],
                path: Path) -> Path:
    """Host routes over time: the AS-wide total as a step line, each router's count faint,
    and a marker per scenario phase (the addresses scenario)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(12, 4.5))
    per: dict[str, list[tuple[float, int]]] = {}
    now: dict[str, int] = {}
    total: list[tuple[float, int]] = []
    for row in series:
        per.setdefault(row["router"], []).append((row["t"], row["count"]))
        now[row["router"]] = row["count"]
        total.append((row["t"], sum(now.values())))
    end = max([t for t, _ in total] + [p["t"] for p in phases] + [1.0])
    for pts in per.values():
        xs = [t for t, _ in pts] + [end]
        ys = [n for _, n in pts] + [pts[-1][1]]
        ax.step(xs, ys, where="post", color="grey", alpha=0.25, linewidth=0.8)
    if total:
        ax.step([t for t, _ in total] + [end], [n for _, n in total] + [total[-1][1]],
                where="post", color="tab:blue", linewidth=1.8, label="all routers")
    top = max([n for _, n in total] + [1])
    # Phases are numbered on the plot and named in the caption: their names would overlap.
    for i, p in enumerate(phases, 1):
        ax.axvline(p["t"], color="tab:orange", alpha=0.4, linewidth=0.8)
        ax.text(p["t"], top * (1.05 + 0.08 * (i % 3)), str(i), fontsize=7, ha="center",
                color="tab:orange")
    caption = "   ".join(f"{i}: {p['phase']}" for i, p in enumerate(phases, 1))
    fig.text(0.01, 0.01, caption, fontsize=6.5, wrap=True)
    ax.set_ylim(0, top * 1.3)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("/32 host routes (not on an access link)")
    ax.set_title("Routing state through attach, moves, rotation, release and the renewal limit")
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
