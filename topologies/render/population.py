"""A population's files (issue 15): the radio's veth per MN, the population namespace's
addresses and per-MN routing tables (configs/ip/population*.j2), and the population agent's
configuration, all from the topology's `population:` members as plain data. A dual-stack run
(issue 18) gives each MN its planned /64 too: its first address and a default via the ARs'
link-local gateway, in the same per-MN table. A DHCP member starts with its link-local
address in that place and gets its leases through the rendered udhcpc hook.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents.contract import ACCESS_GATEWAY, AUTH_PORT, NAMED_PORT
from agents.population import Member, PopulationConfig, PopulationDhcp
from topologies.model import HOME_TLD, Role, Topology, TopologyError, fqdn
from topologies.render.configs import ACCESS_GATEWAY6, render, resolver_address
from topologies.render.identities import population_keys_path

TABLE_BASE = 1000  # MN i routes by table and rule preference TABLE_BASE + i, below main's
MAX_MEMBERS = 32766 - TABLE_BASE - 1  # rule preferences must stay below the main table's


def members(topo: Topology, ipv6: bool = False,
            tsig: Callable[[str], Path] | None = None) -> list[Member]:
    """The population's MNs in name order, each with its routing table; with ``ipv6``
    each with its planned /64 (refused without a dual-stack backbone). A DHCP member has
    its link-local and, given ``tsig`` (identity -> key file), its TSIG key's file."""
    if ipv6 and (topo.backbone6 is None or topo.plan6 is None):
        raise TopologyError("population: IPv6 needs a dual-stack backbone (addressing.ipv6 "
                            "with loopbacks and links)")
    nodes = topo.population_nodes
    if len(nodes) > MAX_MEMBERS:
        raise TopologyError(f"population: at most {MAX_MEMBERS} MNs in one namespace")
    out = []
    for i, (name, mob) in enumerate(nodes.items()):
        identity = fqdn("mn", name)
        dhcp = mob.address is None
        out.append(Member(name=name, identity=identity, ifname=f"{name}-eth0",
                          address=mob.address, home=mob.home,
                          prefix6=mob.prefix6 if ipv6 else None,
                          link_local=mob.link_local if dhcp else None,
                          tsig=(tsig(identity) if tsig else Path(f"{identity}.json"))
                          if dhcp else None,
                          table=TABLE_BASE + i))
    return out


def batch_data(topo: Topology, netns: int | str, ipv6: bool = False) -> dict[str, Any]:
    """What both batches read; ``netns`` is the population namespace (a pid)."""
    # The radio's port and bridge names (radio.air_ifname, radio.bridge_name), spelt here
    # as render_air spells them.
    return {"gateway": ACCESS_GATEWAY, "gateway6": ACCESS_GATEWAY6, "netns": str(netns),
            "members": [{"ifname": m.ifname, "port": f"air-{m.name}", "bridge": f"br-{m.home}",
                         # A DHCP member's link-local holds the place until its first lease.
                         "address": str(m.address or m.link_local), "table": m.table,
                         # The first address of the /64, as a named MN's (mn_address6).
                         "address6": str(m.prefix6.network_address + 1) if m.prefix6 else ""}
                        for m in members(topo, ipv6)]}


def render_batches(topo: Topology, netns: int | str, ipv6: bool = False) -> dict[str, str]:
    """{"air": the radio's batch, "population": the population namespace's, and with
    ``ipv6`` "population6": its IPv6 half, for `ip -6 -batch`}."""
    data = batch_data(topo, netns, ipv6)
    out = {"air": render("ip/population-air.batch.j2", data),
           "population": render("ip/population.batch.j2", data)}
    if ipv6:
        out["population6"] = render("ip/population6.batch.j2", data)
    return out


def render_hook() -> str:
    """udhcpc's event script for the DHCP members (the named MNs' template)."""
    return render("dhcp/udhcpc.hook.j2", {
        "name": "the population's DHCP members",
        "dhcp": {"python": sys.executable, "root": str(Path(__file__).resolve().parents[2])}})


def agent_config(topo: Topology, labdir: Path, ar_keys: Path, ipv6: bool = False,
                 tsig: Callable[[str], Path] | None = None,
                 hook: Path | None = None) -> PopulationConfig:
    """The agent's config; ``tsig`` and ``hook`` are needed when the population has DHCP
    members (their TSIG key files, the rendered hook's path)."""
    pop = members(topo, ipv6, tsig)
    dhcp = None
    if any(m.address is None for m in pop):
        if hook is None or tsig is None:
            raise TopologyError("population: DHCP members need the hook and TSIG keys")
        dhcp = PopulationDhcp(hook=hook, primary=resolver_address(topo),
                              primary_port=NAMED_PORT, zone=HOME_TLD)
    return PopulationConfig(
        keys=population_keys_path(labdir), ar_keys=ar_keys, gateway=ACCESS_GATEWAY,
        auth_port=AUTH_PORT, ars={ar.name: fqdn("ar", ar.name) for ar in topo.by_role(Role.AR)},
        members=tuple(pop), dhcp=dhcp)
