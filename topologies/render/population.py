"""A population's files (issue 15): the radio's veth per MN, the population namespace's
addresses and per-MN routing tables (configs/ip/population*.j2), and the population agent's
configuration, all from the topology's `population:` members as plain data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.contract import ACCESS_GATEWAY, AUTH_PORT
from agents.population import Member, PopulationConfig
from topologies.model import Role, Topology, TopologyError, fqdn
from topologies.render.configs import render
from topologies.render.identities import population_keys_path

TABLE_BASE = 1000  # MN i routes by table and rule preference TABLE_BASE + i, below main's
MAX_MEMBERS = 32766 - TABLE_BASE - 1  # rule preferences must stay below the main table's


def members(topo: Topology) -> list[Member]:
    """The population's MNs that hold a provisioned address, in name order."""
    out = []
    for name, mob in topo.population_nodes.items():
        if mob.address is None:
            raise TopologyError(f"population MN {name} uses DHCP: not supported by the "
                                "population runtime yet (set population.dhcp: 0)")
        out.append(Member(name=name, identity=fqdn("mn", name), ifname=f"{name}-eth0",
                          address=mob.address, home=mob.home))
    if len(out) > MAX_MEMBERS:
        raise TopologyError(f"population: at most {MAX_MEMBERS} MNs in one namespace")
    return out


def batch_data(topo: Topology, netns: int | str) -> dict[str, Any]:
    """What both batches read; ``netns`` is the population namespace (a pid)."""
    # The radio's port and bridge names (radio.air_ifname, radio.bridge_name), spelt here
    # as render_air spells them.
    return {"gateway": ACCESS_GATEWAY, "netns": str(netns),
            "members": [{"ifname": m.ifname, "port": f"air-{m.name}", "bridge": f"br-{m.home}",
                         "address": str(m.address), "table": TABLE_BASE + i}
                        for i, m in enumerate(members(topo))]}


def render_batches(topo: Topology, netns: int | str) -> dict[str, str]:
    """{"air": the radio's batch, "population": the population namespace's}."""
    data = batch_data(topo, netns)
    return {"air": render("ip/population-air.batch.j2", data),
            "population": render("ip/population.batch.j2", data)}


def agent_config(topo: Topology, labdir: Path, ar_keys: Path) -> PopulationConfig:
    return PopulationConfig(
        keys=population_keys_path(labdir), ar_keys=ar_keys, gateway=ACCESS_GATEWAY,
        auth_port=AUTH_PORT, ars={ar.name: fqdn("ar", ar.name) for ar in topo.by_role(Role.AR)},
        members=tuple(members(topo)))

