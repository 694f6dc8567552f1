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
