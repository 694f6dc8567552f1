"""Figure 2 dual-stack with the real daemons (issue 18): OSPFv3 beside OSPFv2, the IPv6
unicast family on every BGP session, every AR's IPv6 pool reachable from the CN, and the
IPv4 policy (aggregates only at the cores) in IPv6 too. One lab for the module.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from agents.fib import RTPROT_FLATARCH
from tests.integration.labs import figure2_lab
from topologies.lab import health
from topologies.lab.daemons import wait_until
from topologies.lab.dnsplane6 import nibble_name
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


def kernel_route6(lab: Lab, node: str, prefix: str) -> dict[str, object] | None:
    out = lab.execs[node].check(["ip", "-j", "-6", "route", "show", "exact", prefix])
    routes = json.loads(out or "[]")
    return routes[0] if routes else None


def test_the_ar_agent_installs_reflected_ipv6_routes_through_ospfv3(lab: Lab) -> None:
    """ar1's agent learns ar2's IPv6 pool by reflection and the other clusters' IPv6
    aggregates via the core, and installs them via the OSPFv3 path to their next hops."""
    topo = lab.topo
    ar2_pool = str(topo.node("ar2").pool6)
    wait_until(lambda: kernel_route6(lab, "ar1", ar2_pool) is not None, 20,
               f"{ar2_pool} in ar1's FIB")
    for prefix in [ar2_pool, *(str(c.prefix6) for c in topo.clusters[1:])]:
        route = kernel_route6(lab, "ar1", prefix)
        assert route is not None, prefix
        assert route.get("protocol") == str(RTPROT_FLATARCH) or route.get("protocol") == 250
        assert str(route.get("gateway", "")).startswith("fe80:"), route  # an OSPFv3 next hop
    # Its own pool stays local: the blackhole, never a BGP route of the agent's.
    own = kernel_route6(lab, "ar1", str(topo.node("ar1").pool6))
    assert own is not None and own.get("type") == "blackhole"


def validated(lab: Lab, rtype: str, name: str) -> str:
    """The answer section of a query to the lab's validating resolver, or "" unless the
    answer came back authenticated (the AD flag)."""
    assert lab.dns is not None
    res = lab.execs["ar1"].run(["dig", f"@{lab.dns.resolver_address}", "+dnssec", "+tries=2",
                                "+time=2", "+noall", "+comments", "+answer", rtype, name])
    flags = next((ln for ln in res.stdout.splitlines() if ";; flags:" in ln), "")
    return res.stdout if " ad" in flags.split("QUERY")[0] else ""


def test_the_mns_aaaa_and_its_prefixs_ptr_validate(lab: Lab) -> None:
    """Draft 2.3: the AR looks the MN's name up, then the PTR of the containing prefix,
    on its nibble boundary under ip6.arpa; both signed and validated."""
    prefix = lab.topo.mobile("mn1").prefix6
    assert prefix is not None
    wait_until(lambda: str(prefix.network_address + 1) in validated(lab, "AAAA", "mn1.example"),
               20, "a validated AAAA for mn1")
    ptr = nibble_name(prefix)
    wait_until(lambda: "mn1.example." in validated(lab, "PTR", ptr), 20,
               f"a validated PTR at {ptr}")
