"""Turn the typed topology into plain per-node data, then into config text via Jinja2.

Each *_data() function returns only str/int/bool/list/dict so templates stay dumb
and golden files stay readable; render_node() is the single place templates are filled.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import jinja2

from .model import Node, Role, Topology

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

OSPF_HELLO = 1
OSPF_DEAD = 3
BGP_KEEPALIVE = 3
BGP_HOLD = 9

def _fail(message: str) -> NoReturn:
    """Templates call fail() to reject data the model should never have produced."""
    raise jinja2.TemplateRuntimeError(message)


# The one template environment of the project: every config is rendered through it.
ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(CONFIGS)),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    autoescape=False,
)
ENV.globals["fail"] = _fail


def render(template: str, data: Mapping[str, Any]) -> str:
    return ENV.get_template(template).render(**data)


def ip_data(topo: Topology, node: Node) -> dict[str, Any]:
    return {
        "name": node.name,
        "loopback": str(node.loopback) if node.loopback else "",
        "interfaces": [{"name": i.name, "cidr": i.cidr} for i in node.interfaces],
        "pool": str(node.pool) if node.pool else "",
        "pool_gateway": str(node.pool_gateway) if node.pool else "",
        "gateway": str(node.gateway) if node.gateway else "",
    }


def zebra_data(topo: Topology, node: Node) -> dict[str, Any]:
    return {"name": node.name, "role": str(node.role)}


def ospfd_data(topo: Topology, node: Node) -> dict[str, Any]:
    ospf_links = [lk for lk in topo.links if lk.ospf and node.name in (lk.a, lk.b)]
    ospf_nets = {str(lk.network) for lk in ospf_links}
    intfs = [i for i in node.interfaces if str(i.network) in ospf_nets]
    return {
        "name": node.name,
        "role": str(node.role),
        "router_id": str(node.loopback),
        "hello": OSPF_HELLO,
        "dead": OSPF_DEAD,
        "interfaces": [{"name": i.name} for i in intfs if topo.nodes[i.peer].is_router],
        "networks": [f"{node.loopback}/32", *(str(i.network) for i in intfs)],
        # Links to hosts are announced but carry no adjacency.
        "passive": [i.name for i in intfs if not topo.nodes[i.peer].is_router],
        "default_originate": node.role is Role.CORE,
    }


def _ibgp(topo: Topology, peer: str, **kw: Any) -> dict[str, Any]:
    base = {
        "address": str(topo.nodes[peer].loopback),
        "name": peer,
        "asn": topo.asn,
        "update_source": True,
        "rr_client": False,
        "next_hop_self": False,
        "default_originate": False,
        "prefix_list_out": "",
    }
    base.update(kw)
    return base


def _link_peer(topo: Topology, node: Node, peer: str) -> tuple[str, str]:
    """(my address, peer address) on the direct link between node and peer."""
    mine = next(i for i in node.interfaces if i.peer == peer)
    theirs = next(i for i in topo.nodes[peer].interfaces if i.peer == node.name)
    return str(mine.address), str(theirs.address)


def bgpd_data(topo: Topology, node: Node) -> dict[str, Any]:
    neighbors: list[dict[str, Any]] = []
    prefix_lists: list[dict[str, Any]] = []
    aggregates: list[str] = []
    networks: list[str] = []
    asn = topo.asn
    cluster_len = topo.clusters[0].prefix.prefixlen
    if node.role is Role.CORE:
        for core in topo.by_role(Role.CORE):
            if core.name != node.name:
                neighbors.append(_ibgp(topo, core.name, next_hop_self=True))
        for agg in topo.by_role(Role.AGG):
            if any(i.peer == agg.name for i in node.interfaces):
                neighbors.append(_ibgp(topo, agg.name, rr_client=True, next_hop_self=True))
        inet = topo.by_role(Role.INET)[0]
        if any(i.peer == inet.name for i in node.interfaces):
            _, peer_ip = _link_peer(topo, node, inet.name)
            neighbors.append(
                {
                    "address": peer_ip, "name": inet.name, "asn": topo.inet_asn,
                    "update_source": False, "rr_client": False, "next_hop_self": False,
                    "default_originate": False, "prefix_list_out": "TO-INTERNET",
                }
            )
        # Host routes and AR pools never leave the AS: only cluster aggregates do.
        prefix_lists.append(
            {
                "name": "TO-INTERNET",
                "entries": [
                    {"action": "permit", "prefix": str(topo.managed), "ge": 0,
                     "le": cluster_len},
                    {"action": "deny", "prefix": "0.0.0.0/0", "ge": 0, "le": 32},
                ],
            }
        )
    elif node.role is Role.AGG:
        for core in topo.by_role(Role.CORE):
            if any(i.peer == core.name for i in node.interfaces):
                neighbors.append(_ibgp(topo, core.name, prefix_list_out="TO-CORE"))
        for ar in topo.agg_clients(node.name):
            neighbors.append(_ibgp(topo, ar, rr_client=True))
        served = [c.prefix for c in topo.agg_clusters(node.name)]
        aggregates = [str(p) for p in served]
        # Draft 2.1: more-specifics inside our own aggregates stay in the cluster;
        # those outside them (a borrowed address) go up to the core.
        prefix_lists.append(
            {
                "name": "TO-CORE",
                "entries": [
                    *(
                        {"action": "deny", "prefix": str(p), "ge": p.prefixlen + 1, "le": 32}
                        for p in served
                    ),
                    {"action": "permit", "prefix": "0.0.0.0/0", "ge": 0, "le": 32},
                ],
            }
        )
    elif node.role is Role.INET:
        asn = topo.inet_asn
        networks = [str(topo.cn_network)]
        for core in topo.by_role(Role.CORE):
            if any(i.peer == core.name for i in node.interfaces):
                _, peer_ip = _link_peer(topo, node, core.name)
                neighbors.append(
                    {
                        "address": peer_ip, "name": core.name, "asn": topo.asn,
                        "update_source": False, "rr_client": False, "next_hop_self": False,
                        "default_originate": True, "prefix_list_out": "",
                    }
                )
    else:
        raise ValueError(f"{node.name}: role {node.role} runs no bgpd")
    return {
        "name": node.name,
        "role": str(node.role),
        "asn": asn,
        "router_id": str(node.loopback),
        "keepalive": BGP_KEEPALIVE,
        "holdtime": BGP_HOLD,
        "neighbors": neighbors,
        "prefix_lists": prefix_lists,
        "aggregates": aggregates,
        "networks": networks,
    }


def agent_argv(topo: Topology, node: Node, rundir: Path) -> list[str]:
    assert node.pool is not None
    return [
        sys.executable, "-m", "agents.ar",
        "--node", node.name,
        "--rundir", str(rundir),
        "--pool", str(node.pool),
    ]


def exabgp_data(topo: Topology, node: Node, rundir: Path) -> dict[str, Any]:
    return {
        "name": node.name,
        "router_id": str(node.loopback),
        "asn": topo.asn,
        "holdtime": BGP_HOLD,
        "agent_argv": " ".join(agent_argv(topo, node, rundir)),
        "neighbors": [
            {"address": str(topo.nodes[a].loopback), "name": a} for a in topo.ar_parents(node.name)
        ],
    }


def daemons_for(node: Node) -> list[str]:
    """Which daemons run in a node, in start order."""
    if node.role is Role.HOST:
        return []
    if node.role is Role.INET:
        return ["zebra", "bgpd"]
    if node.role is Role.AR:
        return ["zebra", "ospfd", "exabgp"]
    return ["zebra", "ospfd", "bgpd"]


def render_node(topo: Topology, node: Node, rundir: Path) -> dict[str, str]:
    """Every config file of one node: {daemon kind or 'ip': text}."""
    out = {"ip": render("ip/node.batch.j2", ip_data(topo, node))}
    for kind in daemons_for(node):
        if kind == "exabgp":
            out[kind] = render("exabgp/exabgp.conf.j2", exabgp_data(topo, node, rundir))
        else:
            builder = {"zebra": zebra_data, "ospfd": ospfd_data, "bgpd": bgpd_data}[kind]
            out[kind] = render(f"frr/{kind}.conf.j2", builder(topo, node))
    return out
