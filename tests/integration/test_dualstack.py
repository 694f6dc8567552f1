"""Figure 2 dual-stack with the real daemons (issue 18): OSPFv3 beside OSPFv2, the IPv6
unicast family on every BGP session, every AR's IPv6 pool reachable from the CN, and the
IPv4 policy (aggregates only at the cores) in IPv6 too. One lab for the module.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.labs import figure2_lab
from topologies.lab import health
from topologies.lab.lab import Lab

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from figure2_lab()


def test_both_families_converge_and_every_ipv6_pool_answers_the_cn(lab: Lab) -> None:
    h = lab.check_health()
    assert h.ipv6 is not None, "figure2 declares an IPv6 backbone"
    sessions = len(health.sessions(lab.topo))
    assert h.bgp_established == h.bgp_total == sessions
    assert h.ipv6.bgp_established == h.ipv6.bgp_total == sessions  # the same sessions
    assert h.ipv6.ospf_full == h.ipv6.ospf_expected == h.ospf_expected > 0
    assert h.pools_ok == h.pools_total == 8
    assert h.ipv6.pools_ok == h.ipv6.pools_total == 8
    assert h.ipv6.core_leaks == [] and h.core_leaks == []
    assert h.healthy
    record = h.as_json()
    assert record["ipv6"]["pools_reachable"] == {"ok": 8, "total": 8}
    assert record["pools_reachable"] == {"ok": 8, "total": 8}  # IPv4's fields as before


def test_cores_hold_the_ipv6_cluster_aggregates_only(lab: Lab) -> None:
    assert lab.topo.plan6 is not None
    managed = lab.topo.plan6.block("addressing.ipv6.managed").network
    for core in ("core1", "core2"):
        prefixes = health.bgp_prefixes6(lab.execs[core], lab.rundir(core))
        inside = sorted(str(p) for p in prefixes if p.subnet_of(managed))  # type: ignore[arg-type]
        assert inside == sorted(str(c.prefix6) for c in lab.topo.clusters)
