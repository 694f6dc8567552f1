"""A population of mobile nodes described in bulk (`population:` in the YAML): how many,
where each is homed (round-robin, per cluster, or by weights), which fraction uses DHCP,
all from one seed so that a run is reproducible.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from .errors import TopologyError

HOMING = ("round-robin", "per-cluster", "weights")
KEYS = {"count", "home", "weights", "dhcp", "seed", "prefix"}
MAX_COUNT = 100_000


@dataclass(frozen=True)
class Population:
    count: int
    home: str = "round-robin"
    weights: dict[str, float] = field(default_factory=dict)  # AR -> weight (home: weights)
    dhcp: float = 0.0  # the fraction that gets its addresses through udhcpc
    seed: int = 0
    prefix: str = "p"  # names are <prefix><i>

    def names(self) -> list[str]:
        return [f"{self.prefix}{i}" for i in range(self.count)]


def parse(doc: Any, ars: list[str], clusters: dict[str, list[str]]) -> Population | None:
    """The `population:` mapping, every problem reported at once with its key."""
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise TopologyError("population: expected a mapping")
    errors: list[str] = []
    unknown = sorted(set(doc) - KEYS)
    if unknown:
        errors.append(f"population: unknown key {unknown[0]!r} ({', '.join(sorted(KEYS))})")
    count = doc.get("count")
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
        errors.append(f"population.count: expected an integer in 1..{MAX_COUNT}, got {count!r}")
    home = doc.get("home", "round-robin")
    if home not in HOMING:
        errors.append(f"population.home: {home!r} is not one of {', '.join(HOMING)}")
    weights_doc = doc.get("weights") or {}
    weights: dict[str, float] = {}
    if not isinstance(weights_doc, dict):
        errors.append("population.weights: expected a mapping of AR -> weight")
    else:
        for ar, w in weights_doc.items():
            if ar not in ars:
                errors.append(f"population.weights.{ar}: not an access router")
            elif isinstance(w, bool) or not isinstance(w, int | float) or w < 0:
                errors.append(f"population.weights.{ar}: expected a weight >= 0, got {w!r}")
            else:
                weights[str(ar)] = float(w)
    if home == "weights" and not any(weights.values()):
        errors.append("population.weights: home: weights needs a positive weight for an AR")
    dhcp = doc.get("dhcp", 0.0)
    if isinstance(dhcp, bool) or not isinstance(dhcp, int | float) or not 0.0 <= dhcp <= 1.0:
        errors.append(f"population.dhcp: expected a fraction in 0..1, got {dhcp!r}")
    seed = doc.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        errors.append(f"population.seed: expected an integer, got {seed!r}")
    prefix = doc.get("prefix", "p")
    if not isinstance(prefix, str) or not prefix.isalpha() or not prefix.islower() or \
            len(prefix) + len(str(MAX_COUNT)) > 9:
        errors.append(f"population.prefix: {prefix!r} must be 1-3 lowercase letters")
    if errors:
        raise TopologyError("; ".join(errors))
    assert isinstance(count, int)
    return Population(count=count, home=home, weights=weights, dhcp=float(dhcp), seed=seed,
                      prefix=prefix)


def homes(pop: Population, ars: list[str], clusters: dict[str, list[str]]) -> list[str]:
    """The home AR of each MN, in name order; deterministic for a given seed."""
    if pop.home == "round-robin":
        return [ars[i % len(ars)] for i in range(pop.count)]
    if pop.home == "per-cluster":
        # The same number of MNs per cluster, round-robin over each cluster's ARs.
        names = list(clusters)
        seen: dict[str, int] = {}
        out = []
        for i in range(pop.count):
            members = clusters[names[i % len(names)]]
            k = seen.get(names[i % len(names)], 0)
            seen[names[i % len(names)]] = k + 1
            out.append(members[k % len(members)])
        return out
    # Weights: largest-remainder apportionment, then a seeded shuffle of who goes where.
    total = sum(pop.weights.values())
    quotas = {ar: pop.count * pop.weights.get(ar, 0.0) / total for ar in ars}
    counts = {ar: int(q) for ar, q in quotas.items()}
    by_remainder = sorted(ars, key=lambda a: (-(quotas[a] - counts[a]), ars.index(a)))
    for ar in by_remainder[: pop.count - sum(counts.values())]:
        counts[ar] += 1
    out = [ar for ar in ars for _ in range(counts[ar])]
    random.Random(pop.seed).shuffle(out)
    return out


def dhcp_members(pop: Population) -> set[str]:
    """The MNs that use DHCP: round(fraction × count) of them, chosen by the seed."""
    names = pop.names()
    k = round(pop.dhcp * pop.count)
    return set(random.Random(pop.seed + 1).sample(names, k))
