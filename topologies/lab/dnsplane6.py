"""The DNS plane's IPv6 side (issue 18, draft 2.3): an AAAA record in each MN's home zone,
and an ip6.arpa reverse zone per AR pool on its nibble boundary, holding a PTR on each
assigned prefix (the containing prefix the AR looks up), under one parent zone for the
managed range. The zones are signed like every other zone of the plane (dnsplane.py).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from agents.dns import prefix_reverse_name
from topologies.model import Role, Topology

IPv6Network = ipaddress.IPv6Network
# Unbound's built-in zone for the documentation prefix (RFC 3849), which the lab's plans use.
DOC_REVERSE = "8.b.d.0.1.0.0.2.ip6.arpa."


nibble_name = prefix_reverse_name  # the AR looks up the very names the plane publishes


@dataclass(frozen=True)
class PoolZone:
    name: str  # the pool's reverse zone
    ar: str  # its AR, the only writer of PTRs there
    ptrs: list[tuple[str, str]]  # (owner, node) of each prefix assigned from the pool


@dataclass(frozen=True)
class Reverse6:
    parent: str  # the managed range's reverse zone, delegated from the root
    pools: list[PoolZone]


def mn_prefix(topo: Topology, mn: str) -> IPv6Network | None:
    """The MN's planned /64; none for a DHCPv6 MN, whose /64s the ARs delegate (and whose
    records the MN and the delegating AR write)."""
    if mn in topo.dhcp6_mobiles:
        return None
    m = topo.mobile_nodes.get(mn) or topo.population_nodes.get(mn)
    return m.prefix6 if m is not None else None


def aaaa(topo: Topology, mn: str) -> str | None:
    """The MN's address in its home zone: the first of its prefix (draft 2.3: "single IP
    addresses that are drawn from the prefixes")."""
    if topo.backbone6 is None:
        return None
    prefix = mn_prefix(topo, mn)
    return str(prefix.network_address + 1) if prefix is not None else None


def reverse_zones(topo: Topology, mns: list[str]) -> Reverse6 | None:
    """The reverse zones of a dual-stack lab; ``mns``: the MN node names with identities."""
    if topo.backbone6 is None or topo.plan6 is None:
        return None
    managed = topo.plan6.block("addressing.ipv6.managed").network
    assert isinstance(managed, IPv6Network)
    pools = []
    for ar in topo.by_role(Role.AR):
        if ar.pool6 is None:
            continue
        own = next(ar.pool6.subnets(new_prefix=topo.plan6.mn_prefixlen))  # the AR's own
        ptrs = [(nibble_name(own), ar.name)]
        for mn in mns:
            prefix = mn_prefix(topo, mn)
            if prefix is not None and prefix.subnet_of(ar.pool6):
                ptrs.append((nibble_name(prefix), mn))
        pools.append(PoolZone(nibble_name(ar.pool6), ar.name, ptrs))
    return Reverse6(nibble_name(managed), pools)
