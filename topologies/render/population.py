"""A population's files (issue 15): the radio's veth per MN, the population namespace's
addresses and per-MN routing tables (configs/ip/population*.j2), and the population agent's
configuration, all from the topology's `population:` members as plain data. A dual-stack run
(issue 18) gives each MN its planned /64 too: its first address and a default via the ARs'
link-local gateway, in the same per-MN table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.contract import ACCESS_GATEWAY, AUTH_PORT
from agents.population import Member, PopulationConfig
from topologies.model import Role, Topology, TopologyError, fqdn
from topologies.render.configs import ACCESS_GATEWAY6, render
from topologies.render.identities import population_keys_path

TABLE_BASE = 1000  # MN i routes by table and rule preference TABLE_BASE + i, below main's
MAX_MEMBERS = 32766 - TABLE_BASE - 1  # rule preferences must stay below the main table's


def members(topo: Topology, ipv6: bool = False) -> list[Member]:
    """The population's MNs that hold a provisioned address, in name order; with ``ipv6``
    each with its planned /64 (refused without a dual-stack backbone)."""
    if ipv6 and (topo.backbone6 is None or topo.plan6 is None):
        raise TopologyError("population: IPv6 needs a dual-stack backbone (addressing.ipv6 "
                            "with loopbacks and links)")
    out = []
    for name, mob in topo.population_nodes.items():
        if mob.address is None:
            raise TopologyError(f"population MN {name} uses DHCP: not supported by the "
                                "population runtime yet (set population.dhcp: 0)")
        out.append(Member(name=name, identity=fqdn("mn", name), ifname=f"{name}-eth0",
                          address=mob.address, home=mob.home,
                          prefix6=mob.prefix6 if ipv6 else None))
    if len(out) > MAX_MEMBERS:
        raise TopologyError(f"population: at most {MAX_MEMBERS} MNs in one namespace")
    return out


def batch_data(topo: Topology, netns: int | str, ipv6: bool = False) -> dict[str, Any]:
    """What both batches read; ``netns`` is the population namespace (a pid)."""
    # The radio's port and bridge names (radio.air_ifname, radio.bridge_name), spelt here
    # as render_air spells them.
    return {"gateway": ACCESS_GATEWAY, "gateway6": ACCESS_GATEWAY6, "netns": str(netns),
            "members": [{"ifname": m.ifname, "port": f"air-{m.name}", "bridge": f"br-{m.home}",
                         "address": str(m.address), "table": TABLE_BASE + i,
                         # The first address of the /64, as a named MN's (mn_address6).
                         "address6": str(m.prefix6.network_address + 1) if m.prefix6 else ""}
                        for i, m in enumerate(members(topo, ipv6))]}


def render_batches(topo: Topology, netns: int | str, ipv6: bool = False) -> dict[str, str]:
    """{"air": the radio's batch, "population": the population namespace's, and with
    ``ipv6`` "population6": its IPv6 half, for `ip -6 -batch`}."""
    data = batch_data(topo, netns, ipv6)
    out = {"air": render("ip/population-air.batch.j2", data),
           "population": render("ip/population.batch.j2", data)}
    if ipv6:
        out["population6"] = render("ip/population6.batch.j2", data)
    return out


def agent_config(topo: Topology, labdir: Path, ar_keys: Path,
                 ipv6: bool = False) -> PopulationConfig:
    return PopulationConfig(
        keys=population_keys_path(labdir), ar_keys=ar_keys, gateway=ACCESS_GATEWAY,
        auth_port=AUTH_PORT, ars={ar.name: fqdn("ar", ar.name) for ar in topo.by_role(Role.AR)},
        members=tuple(members(topo, ipv6)))

