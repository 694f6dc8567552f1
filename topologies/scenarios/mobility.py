"""Mobility models that drive a population's moves: a random walk over the AR adjacency
graph with a dwell-time distribution, random waypoint over cell coordinates, and the replay
of a user's trace (CSV of t_s,mn,ar). Every model takes a seed and is reproducible; address
rotation (draft 2.3) is part of the schedule a model emits.
"""

from __future__ import annotations

import csv
import io
import math
import random
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from topologies.model import Role, Topology


class MobilityError(ValueError):
    """A model's parameters, or a trace, cannot drive moves; the message says where."""


@dataclass(frozen=True, order=True)
class Move:
    """At t_s after the start, ``mn`` attaches to ``ar`` (kind move) or takes a new
    address at the AR it is on (kind rotate)."""

    t_s: float
    mn: str
    ar: str
    kind: Literal["move", "rotate"] = "move"


@dataclass(frozen=True)
class Dwell:
    """How long an MN stays at an AR: exponential with the mean, or log-normal fitted to the
    mean and the standard deviation (spread)."""

    mean_s: float
    spread_s: float | None = None  # None: exponential

    def __post_init__(self) -> None:
        if not self.mean_s > 0 or (self.spread_s is not None and not self.spread_s > 0):
            raise MobilityError(f"dwell: mean and spread must be > 0 (got {self.mean_s}, "
                                f"{self.spread_s})")

    def sample(self, rng: random.Random) -> float:
        if self.spread_s is None:
            return rng.expovariate(1.0 / self.mean_s)
        # For a log-normal of mean m and standard deviation s: sigma² = ln(1 + s²/m²),
        # mu = ln m − sigma²/2.
        sigma2 = math.log1p((self.spread_s / self.mean_s) ** 2)
        return rng.lognormvariate(math.log(self.mean_s) - sigma2 / 2, math.sqrt(sigma2))


def ar_adjacency(topo: Topology) -> dict[str, set[str]]:
    """Two ARs are neighbours when they share a cluster or a direct link (draft 2.2): the
    cells a walking MN can reach from here."""
    adj: dict[str, set[str]] = {a.name: set() for a in topo.by_role(Role.AR)}
    for c in topo.clusters:
        for a in c.ars:
            adj[a] |= set(c.ars) - {a}
    for lk in topo.links:
        if lk.a in adj and lk.b in adj:
            adj[lk.a].add(lk.b)
            adj[lk.b].add(lk.a)
    return adj


def _rotations(moves: list[Move], share: float, dwell: Dwell, rng: random.Random,
               duration_s: float, among: Collection[str] | None = None) -> list[Move]:
    """A share of the MNs takes a new address at its current AR a dwell after arriving;
    with ``among``, the rotating ones are drawn from those (the MNs that lease addresses)."""
    if not 0.0 <= share <= 1.0:
        raise MobilityError(f"rotate: expected a fraction in 0..1, got {share}")
    mns = sorted({m.mn for m in moves})
    pool = mns if among is None else sorted(set(mns) & set(among))
    rotating = set(rng.sample(pool, min(len(pool), round(share * len(mns)))))
    out: list[Move] = []
    by_mn: dict[str, list[Move]] = {}
    for m in moves:
        by_mn.setdefault(m.mn, []).append(m)
    for mn in sorted(rotating):
        seq = by_mn[mn]
        for here, nxt in zip(seq, [*seq[1:], None], strict=True):
            t = here.t_s + dwell.sample(rng)
            if t < (nxt.t_s if nxt else duration_s):
                out.append(Move(t, mn, here.ar, "rotate"))
    return out


def with_rotations(moves: list[Move], share: float, dwell: Dwell, duration_s: float,
                   seed: int, among: Collection[str] | None = None) -> list[Move]:
    """A replayed trace's moves with the rotations of ``share`` of its MNs added."""
    if not share:
        return moves
    return sorted(moves + _rotations(moves, share, dwell, random.Random(seed), duration_s,
                                     among))


def random_walk(adjacency: Mapping[str, set[str]], start: Mapping[str, str], dwell: Dwell,
                duration_s: float, seed: int, rotate: float = 0.0,
                among: Collection[str] | None = None) -> list[Move]:
    """Each MN stays a dwell at its AR, then moves to a neighbour chosen uniformly."""
    rng = random.Random(seed)
    moves: list[Move] = []
    for mn in sorted(start):
        here, t = start[mn], 0.0
        if here not in adjacency:
            raise MobilityError(f"{mn}: start AR {here!r} is not in the AR graph")
        while True:
            t += dwell.sample(rng)
            if t >= duration_s or not adjacency[here]:
                break
            here = rng.choice(sorted(adjacency[here]))
            moves.append(Move(t, mn, here))
    return sorted(moves + _rotations(moves, rotate, dwell, rng, duration_s, among))


def dwell_for_rate(mobiles: int, rate_per_s: float) -> float:
    """The mean dwell that makes ``mobiles`` walkers hand off ``rate_per_s`` times a second."""
    if mobiles < 1 or not rate_per_s > 0:
        raise MobilityError(f"need at least one MN and a rate > 0 (got {mobiles}, {rate_per_s})")
    return mobiles / rate_per_s


def random_waypoint(cells: Mapping[str, tuple[float, float]], start: Mapping[str, str],
                    speed: float, pause_s: float, duration_s: float, seed: int,
                    rotate: float = 0.0, among: Collection[str] | None = None) -> list[Move]:
    """Each MN walks at ``speed`` (units a second) to a random point of the cells' bounding
    box, pauses, and so on; it is attached to the nearest cell, and a move is emitted each
    time that changes (sampled every 50 ms of simulated time)."""
    if not cells or not speed > 0 or pause_s < 0:
        raise MobilityError("waypoint: needs cell coordinates, a speed > 0 and a pause >= 0")
    xs, ys = [c[0] for c in cells.values()], [c[1] for c in cells.values()]
    rng = random.Random(seed)
    step = 0.05

    def nearest(x: float, y: float) -> str:
        return min(sorted(cells), key=lambda c: (cells[c][0] - x) ** 2 + (cells[c][1] - y) ** 2)

    moves: list[Move] = []
    for mn in sorted(start):
        if start[mn] not in cells:
            raise MobilityError(f"{mn}: start AR {start[mn]!r} has no coordinates")
        x, y = cells[start[mn]]
        here, t = start[mn], 0.0
        while t < duration_s:
            tx, ty = rng.uniform(min(xs), max(xs)), rng.uniform(min(ys), max(ys))
            legs = max(1, math.ceil(math.hypot(tx - x, ty - y) / speed / step))
            dx, dy = (tx - x) / legs, (ty - y) / legs
            for _ in range(legs):
                t += step
                x, y = x + dx, y + dy
                cell = nearest(x, y)
                if cell != here and t < duration_s:
                    here = cell
                    moves.append(Move(round(t, 3), mn, here))
            t += pause_s
    dwell = Dwell(max(pause_s, step))
    return sorted(moves + _rotations(moves, rotate, dwell, rng, duration_s, among))


def parse_trace(text: str, mobiles: Iterable[str], ars: Iterable[str]) -> list[Move]:
    """A user's trace: CSV rows t_s,mn,ar (a header row naming them is allowed). Every bad
    row is reported, with its line number, in one error."""
    known_mn, known_ar = set(mobiles), set(ars)
    moves: list[Move] = []
    errors: list[str] = []
    last: dict[str, float] = {}
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
            continue
        if lineno == 1 and [c.strip() for c in row] == ["t_s", "mn", "ar"]:
            continue
        if len(row) != 3:
            errors.append(f"line {lineno}: expected t_s,mn,ar, got {len(row)} fields")
            continue
        t_text, mn, ar = (c.strip() for c in row)
        try:
            t = float(t_text)
        except ValueError:
            errors.append(f"line {lineno}: t_s {t_text!r} is not a number")
            continue
        if not math.isfinite(t) or t < 0:
            errors.append(f"line {lineno}: t_s {t_text!r} must be a time >= 0")
            continue
        if mn not in known_mn:
            errors.append(f"line {lineno}: unknown mobile node {mn!r}")
            continue
        if ar not in known_ar:
            errors.append(f"line {lineno}: unknown access router {ar!r}")
            continue
        if t < last.get(mn, 0.0):
            errors.append(f"line {lineno}: {mn} goes back in time ({t} < {last[mn]})")
            continue
        last[mn] = t
        moves.append(Move(t, mn, ar))
    if errors:
        raise MobilityError("trace: " + "; ".join(errors))
    return sorted(moves)


def handoff_rate(moves: Sequence[Move], duration_s: float) -> float:
    """Handoffs a second across the population in a schedule."""
    return sum(1 for m in moves if m.kind == "move") / duration_s if duration_s > 0 else 0.0
