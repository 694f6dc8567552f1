"""Pure analysis of what the lab's tools print: ping, iperf3, bgpd debug log, traceroute.

Also replays the kernel route events recorded by routewatch to find when a node's route
settled, and writes/reads those events as routes.jsonl. No root, no I/O: every function
takes text or records and returns numbers or text.
"""

from __future__ import annotations

import bisect
import json
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any, Literal

from topologies.analysis import stats


class MeasureError(ValueError):
    """The tool output cannot answer the question asked of it."""


def _net(prefix: IPv4Network | str) -> IPv4Network:
    net = ip_network(prefix)
    if not isinstance(net, IPv4Network):
        raise MeasureError(f"not an IPv4 prefix: {prefix}")
    return net


def _route_net(prefix: IPv4Network | IPv6Network | str) -> IPv4Network | IPv6Network:
    """A route's destination, of either family (routewatch records both)."""
    return prefix if isinstance(prefix, IPv4Network | IPv6Network) else ip_network(prefix)


# --------------------------------------------------------------------------- ping

_PING_RE = re.compile(
    r"^\[(?P<ts>\d+(?:\.\d+)?)\]\s+\d+ bytes from \S+?:?\s+icmp_seq=(?P<seq>\d+)\s"
    r".*?time=(?P<rtt>\d+(?:\.\d+)?) ms(?P<rest>.*)$"
)
_SEQ_MOD = 1 << 16  # iputils prints icmp_seq as the 16-bit wire field


@dataclass(frozen=True)
class PingReply:
    seq: int
    recv_ts: float
    rtt_ms: float

    @property
    def send_ts(self) -> float:
        return self.recv_ts - self.rtt_ms / 1000.0


def parse_ping(text: str) -> list[PingReply]:
    """The echo replies of `ping -D` output, sorted by seq, without duplicates.

    At -i 0.01 the 16-bit icmp_seq wraps after ~11 minutes, so seqs are unwrapped in
    arrival order: a drop of more than half the space is taken as a wrap.
    """
    by_seq: dict[int, PingReply] = {}
    base = 0
    last_raw: int | None = None
    for line in text.splitlines():
        m = _PING_RE.match(line.strip())
        if m is None or "(DUP!)" in m["rest"]:
            continue
        raw = int(m["seq"])
        if last_raw is not None and raw < last_raw - _SEQ_MOD // 2:
            base += _SEQ_MOD
        last_raw = raw
        seq = base + raw
        if seq not in by_seq:
            by_seq[seq] = PingReply(seq, float(m["ts"]), float(m["rtt"]))
    return [by_seq[s] for s in sorted(by_seq)]


def _send_times(
    replies: list[PingReply], interval_s: float, t_to: float | None
) -> list[tuple[int, float, PingReply | None]]:
    """(seq, send time, reply or None) for every seq from 1 to the last one we can place.

    Lost seqs between replies are placed by linear interpolation; those before the first
    reply (iputils numbers from 1) and, up to t_to, after the last one, by interval_s.
    """
    out: list[tuple[int, float, PingReply | None]] = []
    first = replies[0]
    out.extend(
        (s, first.send_ts - (first.seq - s) * interval_s, None)
        for s in range(min(1, first.seq), first.seq)
    )
    for a, b in zip(replies, replies[1:], strict=False):
        out.append((a.seq, a.send_ts, a))
        step = (b.send_ts - a.send_ts) / (b.seq - a.seq)
        out.extend((s, a.send_ts + (s - a.seq) * step, None) for s in range(a.seq + 1, b.seq))
    last = replies[-1]
    out.append((last.seq, last.send_ts, last))
    if t_to is not None:
        k = 1
        while last.send_ts + k * interval_s <= t_to:
            out.append((last.seq + k, last.send_ts + k * interval_s, None))
            k += 1
    return out


def ping_window(
    replies: list[PingReply], t_from: float, t_to: float, interval_s: float = 0.01
) -> tuple[float, int]:
    """(interruption_ms, lost) of a ping stream over the send-time window [t_from, t_to].

    The interruption is the longest run between consecutive received seqs whose gap
    overlaps the window, counted in seqs times interval_s: with no loss it is one interval
    (10 ms at -i 0.01). Seq gaps, not receive-time gaps, are used on purpose: on a loaded
    2-core VM the ping process is sometimes scheduled late, and a late send or a late
    receive stamp is not a lost packet. Lost seqs after the last reply are assumed sent
    every interval_s up to t_to, so the window must lie within the time ping ran.
    """
    if t_to < t_from:
        raise MeasureError(f"empty window [{t_from}, {t_to}]")
    if not replies:
        raise MeasureError("no ping replies at all")
    inside = any(t_from <= r.send_ts <= t_to for r in replies)
    around = replies[0].send_ts < t_from and replies[-1].send_ts > t_to
    if not (inside or around):
        raise MeasureError(f"no ping replies in or around [{t_from:.3f}, {t_to:.3f}]")

    timeline = _send_times(replies, interval_s, t_to)
    lost = sum(1 for _, ts, r in timeline if r is None and t_from <= ts <= t_to)

    # Anchors bound the runs of loss: real replies, plus a virtual seq 0 before ping's
    # first seq and a virtual reply one interval after the open trailing run.
    anchors = [(s, ts) for s, ts, r in timeline if r is not None]
    head_seq, head_ts, _ = timeline[0]
    anchors.insert(0, (head_seq - 1, head_ts - interval_s))
    tail_seq, tail_ts, tail = timeline[-1]
    if tail is None:
        anchors.append((tail_seq + 1, tail_ts + interval_s))
    worst = interval_s * 1000.0
    for (sa, ta), (sb, tb) in zip(anchors, anchors[1:], strict=False):
        if ta <= t_to and tb >= t_from:
            worst = max(worst, (sb - sa) * interval_s * 1000.0)
    return worst, lost


def ping_timeline(
    replies: list[PingReply], interval_s: float = 0.01
) -> list[tuple[float, float | None]]:
    """(send time, rtt_ms or None when lost) for each seq from 1 to the last reply."""
    if not replies:
        return []
    return [(ts, r.rtt_ms if r else None) for _, ts, r in _send_times(replies, interval_s, None)]


# --------------------------------------------------------------------------- iperf3


def _intervals(doc: Mapping[str, Any]) -> list[dict[str, float]]:
    out: list[dict[str, float]] = []
    for iv in doc.get("intervals") or []:
        s = iv.get("sum") or {}
        out.append({
            "start": float(s.get("start", 0.0)),
            "end": float(s.get("end", 0.0)),
            "seconds": float(s.get("seconds", float(s.get("end", 0)) - float(s.get("start", 0)))),
            "bytes": float(s.get("bytes", 0)),
        })
    return out


def _resolution(ivs: list[dict[str, float]]) -> float:
    # The median, so that iperf3's short final interval does not count.
    secs = [iv["seconds"] for iv in ivs]
    return stats.median(secs) if secs else float("inf")


def iperf_summary(doc: dict[str, Any]) -> dict[str, Any]:
    """Did a TCP stream survive, its longest stall and mean goodput, from `iperf3 -J` output.

    The receiver's intervals (server_output_json, from --get-server-output) are preferred,
    but only when the server reported at least as finely as the client: a server started
    without `-i 0.1` reports 1 s intervals, which would hide the stalls we look for.
    Stalls are seen at interval resolution only: one shorter than a 100 ms interval leaves
    no zero-byte interval and is invisible here; the ping stream measures those.

    Returns {"survived", "max_stall_ms", "mean_mbps", "seconds", "source"}. survived means
    no error, bytes received, and bytes still flowing in the last second of the test.
    """
    if "intervals" not in doc:
        raise MeasureError("iperf3 document has no intervals (not `iperf3 -J` output?)")
    client_ivs = _intervals(doc)
    server = doc.get("server_output_json")
    ivs, source, end = client_ivs, "client", doc.get("end") or {}
    if isinstance(server, dict) and server.get("intervals"):
        server_ivs = _intervals(server)
        if not client_ivs or _resolution(server_ivs) <= _resolution(client_ivs) * 1.5:
            ivs, source = server_ivs, "server"
            if (server.get("end") or {}).get("sum_received"):
                end = server["end"]

    received = end.get("sum_received") or {}
    total = max([iv["end"] for iv in ivs] + [float(received.get("seconds", 0.0))], default=0.0)
    rx_bytes = float(received.get("bytes", sum(iv["bytes"] for iv in ivs)))
    tail_alive = any(iv["end"] >= total - 1.0 and iv["bytes"] > 0 for iv in ivs)

    stall = run = 0.0
    for iv in ivs:
        run = run + iv["seconds"] if iv["bytes"] == 0 else 0.0
        stall = max(stall, run)
    return {
        "survived": "error" not in doc and rx_bytes > 0 and tail_alive,
        "max_stall_ms": stall * 1000.0,
        "mean_mbps": float(received.get("bits_per_second", 0.0)) / 1e6,
        "seconds": total,
        "source": source,
    }


# --------------------------------------------------------------------------- bgpd log

_BGP_TS_RE = re.compile(r"^(\d{4})/(\d{2})/(\d{2}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?\s")
_BGP_RX_RE = re.compile(  # an IPv4 prefix, or an IPv6 one (issue 18: the same line format)
    r"(?P<peer>\S+) rcvd (?:UPDATE about )?(?P<prefix>\d{1,3}(?:\.\d{1,3}){3}/\d{1,2}"
    r"|[0-9a-fA-F]*:[0-9a-fA-F:]*/\d{1,3})(?!\d)"
)


def iperf_outcome(text: str) -> dict[str, Any]:
    """iperf_summary of an `iperf3 -J` file's text; a stream without a usable result (never
    started, killed, not JSON) did not survive, and says why in "error"."""
    failed: dict[str, Any] = {"survived": False, "max_stall_ms": None, "mean_mbps": 0.0}
    try:
        doc = json.loads(text)
    except ValueError as exc:
        return {**failed, "error": f"no iperf3 result: {exc}"}
    if not isinstance(doc, dict):
        return {**failed, "error": "no iperf3 result: not a JSON object"}
    try:
        return iperf_summary(doc)
    except MeasureError as exc:
        return {**failed, "error": str(exc)}


@dataclass(frozen=True)
class BgpRx:
    ts: float
    peer: str
    prefix: IPv4Network | IPv6Network
    withdrawn: bool


def parse_bgpd_log(text: str) -> list[BgpRx]:
    """Every per-prefix receive line of a bgpd `debug bgp updates in` log, in log order.

    bgpd stamps lines with the local wall clock; the lab runs in UTC, so stamps are read
    as UTC. Accepted, denied and duplicate prefixes are all kept: each was received.
    """
    out: list[BgpRx] = []
    for line in text.splitlines():
        tm = _BGP_TS_RE.match(line)
        if tm is None:
            continue
        rx = _BGP_RX_RE.search(line, tm.end())
        if rx is None:
            continue
        try:
            prefix = ip_network(rx["prefix"], strict=False)
        except ValueError:
            continue
        y, mo, d, h, mi, s = (int(g) for g in tm.groups()[:6])
        frac = float("0." + tm[7]) if tm[7] else 0.0
        ts = datetime(y, mo, d, h, mi, s, tzinfo=UTC).timestamp() + frac
        out.append(BgpRx(ts, rx["peer"], prefix, "withdrawn" in line[rx.end():]))
    return out


def count_updates(
    rx: Iterable[BgpRx], prefix: IPv4Network | IPv6Network | str, t_from: float, t_to: float
) -> int:
    """How many announcements and withdrawals of exactly prefix arrived in [t_from, t_to]."""
    net = prefix if isinstance(prefix, IPv6Network) else _net(prefix)
    return sum(1 for r in rx if r.prefix == net and t_from <= r.ts <= t_to)


# --------------------------------------------------------------------------- traceroute

_HOP_RE = re.compile(r"^\s*(\d+)\s+(\S+)")


def parse_traceroute(text: str) -> list[IPv4Address | IPv6Address | None]:
    """The hop addresses of `traceroute [-6] -n -q 1`, None for an unanswered hop."""
    hops: list[IPv4Address | IPv6Address | None] = []
    for line in text.splitlines():
        m = _HOP_RE.match(line)
        if m is None:
            continue
        if m[2] == "*":
            hops.append(None)
            continue
        try:
            hops.append(ip_address(m[2]))
        except ValueError as exc:
            raise MeasureError(f"bad traceroute hop line: {line!r}") from exc
    return hops


def bfs_distance(adjacency: Mapping[str, set[str]], src: str, dst: str) -> int | None:
    """Hop count of a shortest path from src to dst; None when dst is unreachable."""
    dist = {src: 0}
    queue = deque([src])
    while queue:
        here = queue.popleft()
        if here == dst:
            return dist[here]
        for nxt in adjacency.get(here, set()):
            if nxt not in dist:
                dist[nxt] = dist[here] + 1
                queue.append(nxt)
    return None


def is_shortest_path(
    nodes: list[str], adjacency: Mapping[str, set[str]], src: str, dst: str
) -> bool:
    """Whether the hops a traceroute from src saw form one of the shortest walks to dst.

    nodes are the hops after src (src itself may lead); any of several equal-cost paths
    is accepted.
    """
    walk = nodes[1:] if nodes[:1] == [src] else nodes
    if not walk:
        return src == dst
    if walk[-1] != dst or walk[0] not in adjacency.get(src, set()):
        return False
    if any(b not in adjacency.get(a, set()) for a, b in zip(walk, walk[1:], strict=False)):
        return False
    return len(walk) == bfs_distance(adjacency, src, dst)


# --------------------------------------------------------------------------- route events


@dataclass(frozen=True)
class RouteEvent:
    """One kernel route change in one node's main table, as routewatch saw it.

    A next hop is a gateway address, "dev:<ifname>" for a device route, or the route type
    ("blackhole", "unreachable", "prohibit") when there is none.
    """

    ts: float
    node: str
    kind: Literal["add", "del"]
    dst: IPv4Network | IPv6Network
    metric: int
    proto: int
    nexthops: frozenset[str]


def effective(
    entries: Mapping[int, frozenset[str]], ignore_metrics: frozenset[int] = frozenset()
) -> frozenset[str] | None:
    """The next hops the kernel forwards with: those of the lowest metric not ignored."""
    metrics = [m for m in entries if m not in ignore_metrics]
    return entries[min(metrics)] if metrics else None


def _replay(
    events: Iterable[RouteEvent], node: str, dst: IPv4Network | IPv6Network, t_end: float
) -> list[RouteEvent]:
    # sorted() is stable: events with equal stamps keep the order they were recorded in.
    return sorted(
        (e for e in events if e.node == node and e.dst == dst and e.ts <= t_end),
        key=lambda e: e.ts,
    )


def _apply(table: dict[int, frozenset[str]], ev: RouteEvent) -> None:
    if ev.kind == "add":
        table[ev.metric] = ev.nexthops
    else:
        table.pop(ev.metric, None)


def final_state(
    events: Iterable[RouteEvent],
    node: str,
    dst: IPv4Network | IPv6Network | str,
    t_end: float,
    ignore_metrics: frozenset[int] = frozenset(),
) -> frozenset[str] | None:
    """The effective next hops of node for exactly dst at t_end (None: no route)."""
    table: dict[int, frozenset[str]] = {}
    for ev in _replay(events, node, _route_net(dst), t_end):
        _apply(table, ev)
    return effective(table, ignore_metrics)


def settled_at(
    events: Iterable[RouteEvent],
    node: str,
    dst: IPv4Network | IPv6Network | str,
    t0: float,
    t_end: float,
    ignore_metrics: frozenset[int] = frozenset(),
) -> float:
    """The earliest t >= t0 from which node's route to dst stays at its t_end state.

    Events before t0 build the starting table. Only the effective choice matters: a
    change among ignored metrics or behind a better route does not unsettle it. t0 is
    returned when the effective state never changes after t0.
    """
    evs = _replay(events, node, _route_net(dst), t_end)
    return settled_series(evs, [(t0, t_end)], ignore_metrics)[0]


def settled_series(
    events: Sequence[RouteEvent],
    windows: Sequence[tuple[float, float]],
    ignore_metrics: frozenset[int] = frozenset(),
) -> list[float]:
    """settled_at for many (t0, t_end) windows of one node's route to one destination, in
    one pass over ``events`` (that node's and destination's only, in recorded order): an hour
    of handoffs replays each event a few times, not once per handoff."""
    evs = sorted(events, key=lambda e: e.ts)  # stable: equal stamps keep their order
    stamps = [e.ts for e in evs]
    out = [0.0] * len(windows)
    table: dict[int, frozenset[str]] = {}
    applied = 0  # events before the current window's t0, applied to ``table``
    for i in sorted(range(len(windows)), key=lambda k: windows[k][0]):
        t0, t_end = windows[i]
        start = bisect.bisect_left(stamps, t0)
        for ev in evs[applied:start]:
            _apply(table, ev)
        applied = start  # the windows come by t0, so start never goes back
        stop = bisect.bisect_right(stamps, t_end)
        later = evs[start:stop]
        scratch = dict(table)
        for ev in later:
            _apply(scratch, ev)
        final = effective(scratch, ignore_metrics)
        scratch = dict(table)
        state = effective(scratch, ignore_metrics)
        settled: float | None = t0 if state == final else None
        for ev in later:
            _apply(scratch, ev)
            new = effective(scratch, ignore_metrics)
            if new != final:
                settled = None
            elif state != final:
                settled = ev.ts
            state = new
        if settled is None:  # unreachable: replaying to t_end ends in the final state
            raise MeasureError(f"{evs[0].node} {evs[0].dst}: replay did not reach its final "
                               "state")
        out[i] = settled
    return out


# --------------------------------------------------------------------------- routes.jsonl

def dump_route_events(events: Iterable[RouteEvent]) -> str:
    """RouteEvents as JSON lines (routes.jsonl), in order; floats keep every digit."""
    lines = []
    for e in events:
        lines.append(json.dumps({"ts": e.ts, "node": e.node, "kind": e.kind, "dst": str(e.dst),
                                 "metric": e.metric, "proto": e.proto,
                                 "nexthops": sorted(e.nexthops)}, sort_keys=True))
    return "".join(line + "\n" for line in lines)


def parse_route_events(text: str) -> list[RouteEvent]:
    """The inverse of dump_route_events, strictly: any malformed line is a MeasureError."""
    out: list[RouteEvent] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise TypeError("not an object")
            kind = row["kind"]
            if kind not in ("add", "del"):
                raise ValueError(f"kind {kind!r}")
            ts, metric, proto = row["ts"], row["metric"], row["proto"]
            hops = row["nexthops"]
            if not isinstance(ts, int | float) or isinstance(ts, bool) or not all(
                    isinstance(v, int) and not isinstance(v, bool) for v in (metric, proto)):
                raise TypeError("ts, metric or proto of the wrong type")
            if not isinstance(row["node"], str) or not isinstance(hops, list) or not all(
                    isinstance(h, str) for h in hops):
                raise TypeError("node or nexthops of the wrong type")
            out.append(RouteEvent(float(ts), row["node"], kind, _route_net(str(row["dst"])),
                                  metric, proto, frozenset(hops)))
        except (ValueError, TypeError, KeyError) as exc:
            raise MeasureError(f"routes line {n}: {exc}") from None
    return out
