"""The topology model: the addressing plan and the validation of bad YAML."""

from __future__ import annotations

import copy
import ipaddress
from pathlib import Path
from typing import Any

import pytest
import yaml

from topologies import model
from topologies.model import Role, TopologyError

TOPO = Path(__file__).resolve().parents[2] / "topologies"


def doc(name: str = "figure2.yaml") -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((TOPO / name).read_text())
    return loaded


def test_figure2_shape() -> None:
    t = model.load(TOPO / "figure2.yaml")
    assert len(t.by_role(Role.CORE)) == 2
    assert len(t.by_role(Role.AGG)) == 4
    assert len(t.by_role(Role.AR)) >= 8
    assert len(t.clusters) == 4
    for ar in t.by_role(Role.AR):
        assert len(t.ar_parents(ar.name)) == 2  # dual-homed
    ar_ar = [lk for lk in t.links
             if t.nodes[lk.a].role is Role.AR and t.nodes[lk.b].role is Role.AR]
    assert ar_ar, "draft 2.2 needs a direct AR-AR link"
    assert t.service("ha").interfaces[0].peer in {n.name for n in t.by_role(Role.CORE)}
    t.service("dns")


def test_pools_are_contiguous_per_cluster_and_disjoint() -> None:
    t = model.load(TOPO / "figure2.yaml")
    seen: list[ipaddress.IPv4Network] = []
    for cl in t.clusters:
        assert cl.prefix.subnet_of(t.managed)
        for ar in cl.ars:
            pool = t.nodes[ar].pool
            assert pool is not None and pool.subnet_of(cl.prefix)
            assert all(not pool.overlaps(p) for p in seen)
            seen.append(pool)


def test_addresses_are_unique_and_links_consistent() -> None:
    for name in ("figure2.yaml", "three_by_five.yaml"):
        t = model.load(TOPO / name)
        addrs = [i.address for n in t.nodes.values() for i in n.interfaces]
        addrs += [n.loopback for n in t.nodes.values() if n.loopback]
        assert len(addrs) == len(set(addrs))
        for lk in t.links:
            assert lk.a_ip in lk.network and lk.b_ip in lk.network
        for n in t.nodes.values():
            for i in n.interfaces:
                assert len(i.name) <= 15


def test_second_topology_is_three_clusters_of_five() -> None:
    t = model.load(TOPO / "three_by_five.yaml")
    assert [len(c.ars) for c in t.clusters] == [5, 5, 5]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("asn"), "asn"),
        (lambda d: d["clusters"][0].update(aggs=["nope"]), "not an aggregation router"),
        (lambda d: d["links"].append(["ar1", "ar1"]), "itself"),
        (lambda d: d["links"].append(["ar1", "cn"]), "not an AS router"),
        (lambda d: d["addressing"].update(managed="10.64.0.0/30"), "prefixlen"),
        (lambda d: d["clusters"][1].update(ars=["ar1"]), "declared twice"),
        (lambda d: d.update(name="Bad Name"), "name"),
        (lambda d: d["services"].update(smtp={"attach": "core1"}), "unknown service"),
    ],
)
def test_bad_topologies_are_rejected_clearly(mutate: Any, message: str) -> None:
    d = copy.deepcopy(doc())
    mutate(d)
    with pytest.raises(TopologyError, match=message):
        model.build(d)
