"""A population in the YAML and the mobility models that move it: validated at load with
every problem named, addressed by the plan, reproducible from its seed."""

from __future__ import annotations

import copy
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from topologies import model
from topologies.model import TopologyError
from topologies.scenarios import mobility
from topologies.scenarios.mobility import Dwell, MobilityError, Move

ROOT = Path(__file__).resolve().parents[2]


def doc(**pop: Any) -> dict[str, Any]:
    d = dict(yaml.safe_load((ROOT / "topologies" / "figure2.yaml").read_text()))
    d = copy.deepcopy(d)
    d["addressing"]["pool_prefixlen"] = 22  # room for a thousand MNs per cluster
    d["population"] = pop
    return d


def test_a_population_is_homed_and_addressed_by_the_plan() -> None:
    t = model.build(doc(count=1000, home="round-robin", dhcp=0.1, seed=3))
    assert t.population is not None and len(t.population_nodes) == 1000
    homes = Counter(m.home for m in t.population_nodes.values())
    assert set(homes.values()) == {125}
    dhcp = [m for m in t.population_nodes.values() if m.dhcp]
    assert len(dhcp) == 100 and all(m.address is None for m in dhcp)
    addrs = [m.address for m in t.population_nodes.values() if m.address is not None]
    named = {t.mobile(m).address for m in t.mobiles}
    assert len(set(addrs)) == 900 and not set(addrs) & named
    again = model.build(doc(count=1000, home="round-robin", dhcp=0.1, seed=3))
    assert again.population_nodes == t.population_nodes  # the seed fixes everything


def test_per_cluster_and_weighted_homing() -> None:
    t = model.build(doc(count=400, home="per-cluster"))
    per_cluster = Counter(t.cluster_of(m.home).name for m in t.population_nodes.values())
    assert set(per_cluster.values()) == {100}
    t = model.build(doc(count=300, home="weights", weights={"ar1": 2, "ar5": 1}, seed=9))
    assert Counter(m.home for m in t.population_nodes.values()) == {"ar1": 200, "ar5": 100}


def test_every_population_problem_is_named_at_once() -> None:
    with pytest.raises(TopologyError) as err:
        model.build(doc(count=0, home="nearest", dhcp=1.5, colour="red"))
    text = str(err.value)
    for part in ("unknown key 'colour'", "population.count", "population.home: 'nearest'",
                 "population.dhcp"):
        assert part in text


def test_a_population_name_cannot_clash() -> None:
    with pytest.raises(TopologyError, match="'mn1' is already a node or mobile name"):
        model.build(doc(count=3, prefix="mn"))


def test_the_walk_is_reproducible_and_hits_the_target_rate() -> None:
    t = model.load(ROOT / "topologies" / "figure2.yaml")
    adj = mobility.ar_adjacency(t)
    assert adj["ar2"] == {"ar1", "ar3"}  # its cluster and the direct ar2-ar3 link
    start = {f"m{i}": ["ar1", "ar3", "ar5", "ar7"][i % 4] for i in range(200)}
    mean = mobility.dwell_for_rate(len(start), 20.0)
    moves = mobility.random_walk(adj, start, Dwell(mean), 60.0, seed=1)
    assert moves == mobility.random_walk(adj, start, Dwell(mean), 60.0, seed=1)
    assert moves != mobility.random_walk(adj, start, Dwell(mean), 60.0, seed=2)
    assert 16 <= mobility.handoff_rate(moves, 60.0) <= 24
    last = dict(start)
    for m in moves:  # every move goes to a neighbour of where the MN was
        assert m.ar in adj[last[m.mn]]
        last[m.mn] = m.ar


def test_log_normal_dwell_has_the_mean_and_spread() -> None:
    import random

    rng = random.Random(5)
    xs = [Dwell(10.0, 4.0).sample(rng) for _ in range(20000)]
    assert statistics.mean(xs) == pytest.approx(10.0, rel=0.05)
    assert statistics.stdev(xs) == pytest.approx(4.0, rel=0.1)


def test_rotation_takes_a_new_address_where_the_mn_is() -> None:
    t = model.load(ROOT / "topologies" / "figure2.yaml")
    start = {f"m{i}": "ar1" for i in range(10)}
    moves = mobility.random_walk(mobility.ar_adjacency(t), start, Dwell(5.0), 60.0, seed=4,
                                 rotate=0.5)
    rotating = {m.mn for m in moves if m.kind == "rotate"}
    assert len(rotating) <= 5 and rotating
    where = dict(start)
    for m in moves:
        if m.kind == "move":
            where[m.mn] = m.ar
        else:
            assert m.ar == where[m.mn]


def test_waypoint_moves_to_the_nearest_cell() -> None:
    cells = {"ar1": (0.0, 0.0), "ar2": (10.0, 0.0), "ar3": (20.0, 0.0)}
    moves = mobility.random_waypoint(cells, {"m0": "ar1", "m1": "ar3"}, speed=5.0,
                                     pause_s=1.0, duration_s=30.0, seed=7)
    assert moves and all(m.ar in cells for m in moves)
    assert moves == mobility.random_waypoint(cells, {"m0": "ar1", "m1": "ar3"}, speed=5.0,
                                             pause_s=1.0, duration_s=30.0, seed=7)


def test_a_trace_is_replayed_and_every_bad_row_named_with_its_line() -> None:
    good = "t_s,mn,ar\n0.5,mn1,ar2\n1.0,mn2,ar3\n# a comment\n2.0,mn1,ar1\n"
    assert mobility.parse_trace(good, ["mn1", "mn2"], ["ar1", "ar2", "ar3"]) == [
        Move(0.5, "mn1", "ar2"), Move(1.0, "mn2", "ar3"), Move(2.0, "mn1", "ar1")]
    bad = "0.5,mn1,ar2\nsoon,mn1,ar2\n1,mn9,ar2\n1,mn1,ar99\n0.1,mn1,ar1\n1,mn1\n-1,mn1,ar1\n"
    with pytest.raises(MobilityError) as err:
        mobility.parse_trace(bad, ["mn1"], ["ar1", "ar2"])
    text = str(err.value)
    for part in ("line 2: t_s 'soon' is not a number", "line 3: unknown mobile node 'mn9'",
                 "line 4: unknown access router 'ar99'", "line 5: mn1 goes back in time",
                 "line 6: expected t_s,mn,ar, got 2 fields", "line 7: t_s '-1' must be"):
        assert part in text
