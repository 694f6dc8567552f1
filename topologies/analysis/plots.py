"""Plots of the handoff scenario, drawn from its own measurements: the probe stream over
time with every handoff marked, and the interruption distribution per mode.

matplotlib's Agg backend only: no display is needed, and nothing here changes a number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MODE_COLOURS = {"redirect": "tab:blue", "draft": "tab:orange", "anchored": "tab:red"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: Path,
          rect: tuple[float, float, float, float] | None = None) -> Path:
    """Lay out, write the PNG and free the figure: every plot here ends this way."""
    fig.tight_layout(rect=rect)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    ax.set_title("Probe stream across the handoffs")
    ax.legend(loc="upper right", fontsize="small")
    return _save(plt, fig, path)


def interruption_cdf(handoffs: list[dict[str, Any]], path: Path) -> Path:
    """Empirical CDF of interruption_ms, one curve per mode."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for mode in sorted({str(h["mode"]) for h in handoffs}):
        values = sorted(float(h["interruption_ms"]) for h in handoffs if h["mode"] == mode)
        n = len(values)
        ax.step(values, [(i + 1) / n for i in range(n)], where="post",
                color=MODE_COLOURS.get(mode, "grey"), label=f"{mode} (n={n})")
    ax.set_xlabel("interruption (ms): longest gap in the probe stream")
    ax.set_ylabel("fraction of handoffs")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return _save(plt, fig, path)


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
    return _save(plt, fig, path, rect=(0, 0.07, 1, 1))


# --- the evaluation: flat against the anchored baseline (topologies/scenarios/baseline.py) ----


def path_stretch(rows: list[dict[str, Any]], path: Path) -> Path:
    """Router hops CN -> MN at every AR, flat and anchored, against the shortest path; the
    anchored count includes the routers its tunnel crosses, which its traceroute cannot see."""
    plt = _pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    names = [f"{r['ar']}\n(d={r['anchor_distance']})" for r in rows]
    xs = list(range(len(rows)))
    w = 0.27
    ax.bar([x - w for x in xs], [r["shortest_hops"] for r in rows], w, color="grey",
           label="shortest path")
    ax.bar(xs, [r["flat_hops"] for r in rows], w, color=MODE_COLOURS["draft"], label="flat")
    ax.bar([x + w for x in xs], [r["anchored_hops"] for r in rows], w,
           color=MODE_COLOURS["anchored"], label="anchored (incl. tunnel)")
    ax.set_xticks(xs, names, fontsize=8)
    ax.set_ylabel("hops CN → MN")
    ax.set_title("Path length with the MN at each AR (d: hops from the anchor)")
    ax.legend(fontsize="small")
    ax2.plot(xs, [r["flat_rtt_ms"] for r in rows], "o-", color=MODE_COLOURS["draft"],
             label="flat")
    ax2.plot(xs, [r["anchored_rtt_ms"] for r in rows], "s-", color=MODE_COLOURS["anchored"],
             label="anchored")
    ax2.set_xticks(xs, names, fontsize=8)
    ax2.set_ylabel("mean RTT CN → MN (ms)")
    ax2.set_ylim(bottom=0)
    ax2.set_title("RTT (20 pings) with the MN at each AR")
    ax2.legend(fontsize="small")
    return _save(plt, fig, path)


def messages_per_handoff(flat: dict[str, float], anchored: dict[str, float],
                         path: Path) -> Path:
    """Control messages per handoff, stacked by interface."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    colours = ["tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:olive", "tab:cyan"]
    for x, parts in ((0, flat), (1, anchored)):
        bottom = 0.0
        for i, (name, value) in enumerate(parts.items()):
            v = float(value or 0.0)
            ax.bar(x, v, 0.5, bottom=bottom, color=colours[(i + 3 * x) % len(colours)],
                   edgecolor="white")
            if v:
                ax.text(x, bottom + v / 2, f"{name} {v:.1f}", ha="center", va="center",
                        fontsize=8, color="white")
            bottom += v
        ax.text(x, bottom, f"{bottom:.1f}", ha="center", va="bottom")
    ax.set_xticks([0, 1], ["flat", "anchored"])
    ax.set_ylabel("messages per handoff (mean)")
    ax.set_title("Control messages per handoff")
    return _save(plt, fig, path)


def failure_timeline(failures: list[dict[str, Any]], path: Path) -> Path:
    """Every session's probe stream around each failure: replies as dots, lost as red ticks."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(failures), 1, figsize=(11, 2.2 * len(failures)),
                             squeeze=False)
    for ax, ev in zip(axes[:, 0], failures, strict=True):
        for row, s in enumerate(ev["sessions"]):
            got = [t for t, rtt in s["timeline"] if rtt is not None]
            lost = [t for t, rtt in s["timeline"] if rtt is None]
            ax.plot(got, [row] * len(got), "|", color="tab:green", markersize=6)
            ax.plot(lost, [row] * len(lost), "|", color="red", markersize=6)
        ax.axvline(0, color="black", linewidth=1)
        ax.set_yticks(range(len(ev["sessions"])), [s["mn"] for s in ev["sessions"]])
        ax.set_ylim(-0.7, len(ev["sessions"]) - 0.3)
        who = ev.get("config") or ev["arch"]
        ax.set_title(f"{who}: {ev['event']} — {ev['survived']}/{ev['total']} sessions "
                     "survive", fontsize=9)
    axes[-1, 0].set_xlabel("time since the failure (s); green: reply, red: lost probe")
    return _save(plt, fig, path)


def state_growth(rows: list[dict[str, Any]], path: Path) -> Path:
    """Forwarding state as MNs leave home: the busiest node and the AS total, both modes."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ks = [r["mns_away"] for r in rows]
    ax.plot(ks, [r["flat_max"] for r in rows], "o-", color=MODE_COLOURS["draft"],
            label="flat: busiest router (host routes)")
    ax.plot(ks, [r["flat_total"] for r in rows], "o--", color=MODE_COLOURS["draft"],
            alpha=0.6, label="flat: all routers")
    ax.plot(ks, [r["anchored_max"] for r in rows], "s-", color=MODE_COLOURS["anchored"],
            label="anchored: busiest node (bearers)")
    ax.plot(ks, [r["anchored_total"] for r in rows], "s--", color=MODE_COLOURS["anchored"],
            alpha=0.6, label="anchored: all nodes")
    ax.set_xticks(ks)
    ax.set_xlabel(f"MNs away from their home cluster (of {rows[0]['mns_total'] if rows else 0})")
    ax.set_ylabel("per-MN forwarding entries")
    ax.set_title("State as MNs move")
    ax.legend(fontsize="small")
    return _save(plt, fig, path)


def rate_sweep(sweep: list[dict[str, Any]], knee_p99_ms: float, path: Path) -> Path:
    """A population's rate sweep (issue 15's curves): re-route p50 and p99 against the
    handoff rate with the knee's line, and beside it each kind's CPU (its processes
    together, percent of one core) and the machine's busy share."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    rates = [float(p["rate_per_s"]) for p in sweep]
    for q, style in (("p50", "o-"), ("p99", "s-")):
        ys = [p["reroute_ms"][q] for p in sweep]
        left.plot([r for r, y in zip(rates, ys, strict=True) if y is not None],
                  [y for y in ys if y is not None], style, label=f"reroute {q}")
    failed = [(r, p["handoffs"]["failed"]) for r, p in zip(rates, sweep, strict=True)
              if p["handoffs"]["failed"]]
    for r, n in failed:
        left.annotate(f"{n} failed", (r, knee_p99_ms), textcoords="offset points",
                      xytext=(0, 6), ha="center", fontsize="small", color="tab:red")
    left.axhline(knee_p99_ms, color="tab:red", alpha=0.5, linewidth=0.8,
                 label=f"knee: p99 {knee_p99_ms:g} ms")
    left.set_xlabel("target handoffs per second")
    left.set_ylabel("re-route of the MN's host route (ms)")
    left.set_yscale("log")
    left.grid(alpha=0.3)
    left.legend(loc="upper left", fontsize="small")
    kinds = sorted({k for p in sweep for k in p["cpu_pct_all"]})
    top = sorted(kinds, key=lambda k: -max(p["cpu_pct_all"].get(k, 0.0) for p in sweep))[:5]
    for k in top:
        right.plot(rates, [p["cpu_pct_all"].get(k, 0.0) for p in sweep], "o-", label=k)
    # A phase kept before the machine's share was recorded has none ({}).
    busy = [100.0 - float(p["machine_cpu_pct"]["idle"]) if p["machine_cpu_pct"] else None
            for p in sweep]
    right.set_xlabel("target handoffs per second")
    right.set_ylabel("CPU of each kind's processes, % of one core")
    right.grid(alpha=0.3)
    right.legend(loc="upper left", fontsize="small")
    if any(b is not None for b in busy):
        # The whole machine, on its own scale: all its cores are 100 %.
        machine = right.twinx()
        machine.plot([r for r, b in zip(rates, busy, strict=True) if b is not None],
                     [b for b in busy if b is not None], "k--", label="machine busy")
        machine.set_ylim(0, 105)
        machine.set_ylabel("machine busy, % of all cores")
        machine.legend(loc="lower right", fontsize="small")
    fig.suptitle("Population: re-route and CPU against the handoff rate")
    return _save(plt, fig, path, rect=(0, 0, 1, 0.95))


def size_sweep(points: list[dict[str, Any]], path: Path) -> Path:
    """A population's size sweep (issue 15's routing-state curve): the host routes' peak on
    the busiest router of each role against the population, and beside it the memory the
    population added, its processes' and the machine's."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    sizes = [int(p["mobiles"]) for p in points]
    roles = sorted({r for p in points for r in p["host_routes_peak_by_role"]})
    for role in roles:
        left.plot(sizes, [p["host_routes_peak_by_role"].get(role, 0) for p in points], "o-",
                  label=role)
    left.plot(sizes, [p["mobiles_away_at_end"] for p in points], "k--",
              label="MNs away from home at the end")
    left.plot(sizes, sizes, "k:", alpha=0.5, label="one per MN")
    left.set_xlabel("MNs in the population")
    left.set_ylabel("host routes, peak on the busiest router")
    left.grid(alpha=0.3)
    left.legend(loc="upper left", fontsize="small")
    for key, label in (("rss_mb_added", "processes' RSS"), ("machine_mb_added", "machine")):
        have = [(n, p[key]) for n, p in zip(sizes, points, strict=True) if p[key] is not None]
        right.plot([n for n, _ in have], [v for _, v in have], "o-", label=label)
    right.set_xlabel("MNs in the population")
    right.set_ylabel("memory the population added (MB)")
    right.grid(alpha=0.3)
    right.legend(loc="upper left", fontsize="small")
    fig.suptitle("Population: routing state and memory against its size")
    return _save(plt, fig, path, rect=(0, 0, 1, 0.95))
