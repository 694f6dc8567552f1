"""Turn the typed topology into plain per-node data, then into config text via Jinja2.

Each *_data() function returns only str/int/bool/list/dict so templates stay dumb
and golden files stay readable; render_node() is the single place templates are filled.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import jinja2

from agents import contract
from agents.auth.prefilter import prefilter_data
from agents.contract import (
    ACCESS_GATEWAY,
    ACCESS_MAC,
    AUTH_PORT,
    NAMED_PORT,
    PAGING_PORT,
    RESOLVER_PORT,
    Layout,
    access_ifname,
)
from agents.ra import eui64_link_local
from topologies.model import Node, Role, Topology, fqdn
from topologies.model.topology import LAB_BLOCKS_V4
from topologies.render.bgpkeys import session_key

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

OSPF_HELLO = 1
OSPF_DEAD = 3
BGP_KEEPALIVE = 3
BGP_HOLD = 9
# ExaBGP advertises graceful restart only so that FRR 8 sends it End-of-RIB (FRR sends EOR only
# to a peer with the capability before 10.1); FRR then keeps a killed ExaBGP's routes this
# long for the new one to re-announce (docs/faults.md).
EXABGP_RESTART_S = 10
UPDATES_LOG = "bgpd.updates.log"  # bgpd's received UPDATEs, millisecond stamps
BACKBONE_MTU = 1600  # room for the overlay's 50 octets around a full 1500-octet packet
OVERLAY = {"dev": "vx0", "vni": 4242, "port": 4789, "mtu": 1500, "net": LAB_BLOCKS_V4["overlay"]}
# The base of the ARs' overlay link-local addresses (fe80::fa01:<AR index>), IPv6 redirect.
OVERLAY6_LINK_LOCAL = "fe80::fa01:0"
PAGING_DEV = "pg0"  # the TUN device where an idle MN's packets wait (agents/paging.py)
PAGING_BUFFER = 256  # packets buffered per idle MN; beyond it, new packets are dropped
PAGING_TIMEOUT_S = 3.0  # an unanswered page ends, and its buffer is freed
# DHCP (draft 2.3): requests from the access link to any server are marked and routed to
# the AR itself, so it serves its own and relays the rest (agents/dhcpd.py).
DHCP_MARK = 0x43
DHCP_TABLE = 67
OUTSIDE_FIRST, OUTSIDE_LAST = 10, 99  # care-of addresses the visited network leases
OUTSIDE_LEASE_S = 600


# The access link's IPv6 gateway: every AR's access interface derives it from the shared
# ACCESS_MAC, so it too is the same on every AR (issue 18).
ACCESS_GATEWAY6 = eui64_link_local(ACCESS_MAC)
ESCAPE_TAG = 911  # community ASN:911 on a host route lets it leave its cluster (draft 2.1)


def escape_community(topo: Topology) -> str:
    return f"{topo.asn}:{ESCAPE_TAG}"

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


def overlay_address(topo: Topology, ar: str) -> str:
    """The AR's address in the redirect overlay (agents/fib.py routes redirects to it)."""
    return str(topo.overlay[ar])


def _overlay_index(topo: Topology, ar: str) -> int:
    return [a.name for a in topo.by_role(Role.AR)].index(ar) + 1


def overlay_mac(topo: Topology, ar: str) -> str:
    index = _overlay_index(topo, ar)
    return f"02:fa:01:00:{index >> 8:02x}:{index & 0xFF:02x}"


def overlay_address6(topo: Topology, ar: str) -> ipaddress.IPv6Address:
    """The AR's link-local address on the overlay (the IPv6 redirect's next hop, issue 18):
    set explicitly, with a static neighbour at every other AR, as the IPv4 side does."""
    return ipaddress.IPv6Address(OVERLAY6_LINK_LOCAL) + _overlay_index(topo, ar)


def _overlay6(topo: Topology, ar: str) -> str:
    return str(overlay_address6(topo, ar)) if topo.backbone6 is not None else ""


def overlay_data(topo: Topology, node: Node) -> dict[str, Any] | None:
    if node.role is not Role.AR:
        return None
    net = ipaddress.IPv4Network(str(OVERLAY["net"]))
    return {
        **OVERLAY,
        "address": overlay_address(topo, node.name),
        "prefixlen": net.prefixlen,
        "address6": _overlay6(topo, node.name),
        "mac": overlay_mac(topo, node.name),
        "peers": [
            {"address": overlay_address(topo, a.name), "mac": overlay_mac(topo, a.name),
             "address6": _overlay6(topo, a.name), "loopback": str(a.loopback)}
            for a in topo.by_role(Role.AR) if a.name != node.name
        ],
    }


def ip_data(topo: Topology, node: Node) -> dict[str, Any]:
    return {
        "name": node.name,
        "loopback": str(node.loopback) if node.loopback else "",
        "interfaces": [
            {"name": i.name, "cidr": i.cidr,
             "mtu": BACKBONE_MTU if node.is_router and topo.nodes[i.peer].is_router else 0,
             "cidr6": str(topo.backbone6.end(node.name, i.peer)) if topo.backbone6 else ""}
            for i in node.interfaces
        ],
        **ip6_data(topo, node),
        "overlay": overlay_data(topo, node),
        "pool": str(node.pool) if node.pool else "",
        "pool_gateway": str(node.pool_gateway) if node.pool else "",
        "gateway": str(node.gateway) if node.gateway else "",
        # The access link into the radio exists only in labs with mobile nodes.
        "access": (
            {"name": access_ifname(node.name), "address": ACCESS_GATEWAY, "mac": ACCESS_MAC,
             "dhcp_mark": f"{DHCP_MARK:#x}", "dhcp_table": DHCP_TABLE,
             "address6": ACCESS_GATEWAY6 if topo.backbone6 else ""}
            if node.role is Role.AR and topo.mobiles else None
        ),
        # The visited network's access link, on the Internet router (draft 2.4).
        "outside": (
            {"name": access_ifname(node.name),
             "cidr": f"{topo.outside_gateway}/{topo.outside_net.prefixlen}"}
            if node.name == topo.outside_cell and topo.outside_net else None
        ),
    }


def ip6_data(topo: Topology, node: Node) -> dict[str, str]:
    """The node's IPv6 side (issue 18), all empty on an IPv4-only backbone."""
    bb = topo.backbone6
    if bb is None:
        return {"loopback6": "", "pool6": "", "pool6_gateway": "", "gateway6": ""}
    pool6 = node.pool6 if node.role is Role.AR else None
    gateway6 = (str(bb.end(node.interfaces[0].peer, node.name).ip)
                if node.role is Role.HOST else "")
    return {
        "loopback6": str(bb.loopback(node.name)) if node.is_router else "",
        "pool6": str(pool6) if pool6 else "",
        "pool6_gateway": str(pool6.network_address + 1) if pool6 else "",
        "gateway6": gateway6,
    }


def cells(topo: Topology) -> list[str]:
    """Every node with an access link into the radio: the ARs, then the visited network."""
    out = [a.name for a in topo.by_role(Role.AR)]
    if topo.outside_cell is not None:
        out.append(topo.outside_cell)
    return out


def dnsmasq_data(topo: Topology, node: Node, rundir: Path) -> dict[str, Any]:
    net = topo.outside_net
    assert net is not None
    return {
        "name": node.name, "ifname": access_ifname(node.name), "rundir": str(rundir),
        "first": str(net.network_address + OUTSIDE_FIRST),
        "last": str(net.network_address + min(OUTSIDE_LAST, net.num_addresses - 2)),
        "netmask": str(net.netmask), "gateway": str(topo.outside_gateway),
        "lease_s": OUTSIDE_LEASE_S,
    }


def air_data(topo: Topology) -> dict[str, Any]:
    return {
        "ars": [{"bridge": f"br-{a}", "port": f"air-{a}"} for a in cells(topo)],
        "mobiles": [f"air-{mn}" for mn in topo.mobiles],
    }


def render_air(topo: Topology) -> str:
    return render("ip/air.batch.j2", air_data(topo))


def zebra_data(topo: Topology, node: Node) -> dict[str, Any]:
    return {"name": node.name, "role": str(node.role), "ipv6": topo.backbone6 is not None}


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
        "route_map_out": "",
        "addpath_tx": False,
    }
    base.update(kw)
    return base


def _ebgp(topo: Topology, node: Node, peer: str, asn: int, **kw: Any) -> dict[str, Any]:
    """The eBGP session between the AS's edge and the Internet router, over their link."""
    _, peer_ip = _link_peer(topo, node, peer)
    return _ibgp(topo, peer, address=peer_ip, asn=asn, update_source=False, **kw)


def _link_peer(topo: Topology, node: Node, peer: str) -> tuple[str, str]:
    """(my address, peer address) on the direct link between node and peer."""
    mine = next(i for i in node.interfaces if i.peer == peer)
    theirs = next(i for i in topo.nodes[peer].interfaces if i.peer == node.name)
    return str(mine.address), str(theirs.address)


def bgpd_data(topo: Topology, node: Node, rundir: Path = Path("."),
              secret: bytes | None = None) -> dict[str, Any]:
    neighbors: list[dict[str, Any]] = []
    prefix_lists: list[dict[str, Any]] = []
    aggregates: list[str] = []
    networks: list[str] = []
    asn = topo.asn
    escape = ""
    cluster_len = topo.clusters[0].prefix.prefixlen
    if node.role is Role.CORE:
        for core in topo.by_role(Role.CORE):
            if core.name != node.name:
                neighbors.append(_ibgp(topo, core.name, next_hop_self=True))
        for agg in topo.by_role(Role.AGG):
            if any(i.peer == agg.name for i in node.interfaces):
                neighbors.append(_ibgp(topo, agg.name, rr_client=True, next_hop_self=True))
        for ha in (n for n in topo.nodes.values() if n.service == "ha"):
            # The Home Agent is a client of every core reflector (draft 2.4, Figure 3).
            neighbors.append(_ibgp(topo, ha.name, address=str(ha.interfaces[0].address),
                                   rr_client=True))
        inet = topo.by_role(Role.INET)[0]
        if any(i.peer == inet.name for i in node.interfaces):
            neighbors.append(_ebgp(topo, node, inet.name, topo.inet_asn,
                                   prefix_list_out="TO-INTERNET"))
        # Host routes and AR pools never leave the AS: only cluster aggregates do, and the
        # Home Agent's subnet, which MNs outside the AS must reach (draft 2.4).
        ha_nets = [str(n.interfaces[0].network) for n in topo.nodes.values()
                   if n.service == "ha"]
        networks = ha_nets
        prefix_lists.append(
            {
                "name": "TO-INTERNET",
                "entries": [
                    {"action": "permit", "prefix": str(topo.managed), "ge": 0,
                     "le": cluster_len},
                    *({"action": "permit", "prefix": n, "ge": 0, "le": 0} for n in ha_nets),
                    {"action": "deny", "prefix": "0.0.0.0/0", "ge": 0, "le": 32},
                ],
            }
        )
    elif node.role is Role.AGG:
        for core in topo.by_role(Role.CORE):
            if any(i.peer == core.name for i in node.interfaces):
                neighbors.append(_ibgp(topo, core.name, route_map_out="TO-CORE"))
        for ar in topo.agg_clients(node.name):
            # ADD-PATH: an AR sees every path of a host route, not only the reflector's best,
            # so it knows when a competing /32 is really gone.
            neighbors.append(_ibgp(topo, ar, rr_client=True, addpath_tx=True))
        served = [c.prefix for c in topo.agg_clusters(node.name)]
        aggregates = [str(p) for p in served]
        # Draft 2.1: more-specifics inside our own aggregates stay in the cluster; those
        # outside them (a borrowed address) go up to the core. An AR tags a host route with
        # the escape community when it must also replace a stale /32 outside the cluster.
        prefix_lists.append(
            {
                "name": "OWN-MORE-SPECIFICS",
                "entries": [
                    {"action": "permit", "prefix": str(p), "ge": p.prefixlen + 1, "le": 32}
                    for p in served
                ],
            }
        )
        escape = escape_community(topo)
    elif node.role is Role.INET:
        asn = topo.inet_asn
        networks = [str(topo.cn_network)]
        if topo.outside_cell is not None and topo.outside_net is not None:
            networks.append(str(topo.outside_net))
        for core in topo.by_role(Role.CORE):
            if any(i.peer == core.name for i in node.interfaces):
                neighbors.append(_ebgp(topo, node, core.name, topo.asn,
                                       default_originate=True))
    else:
        raise ValueError(f"{node.name}: role {node.role} runs no bgpd")
    _passwords(node, {"neighbors": neighbors}, secret)
    return {
        "name": node.name,
        "role": str(node.role),
        "asn": asn,
        "escape_community": escape if node.role is Role.AGG else "",
        "updates_log": str(rundir / UPDATES_LOG),
        "router_id": str(node.loopback),
        "keepalive": BGP_KEEPALIVE,
        "holdtime": BGP_HOLD,
        "neighbors": neighbors,
        "prefix_lists": prefix_lists,
        "aggregates": aggregates,
        "networks": networks,
        "ipv6": bgp6_data(topo, node),
    }


def bgp6_data(topo: Topology, node: Node) -> dict[str, Any] | None:
    """The IPv6 unicast family of a bgpd (issue 18), the IPv4 policy in the other family:
    cluster aggregates at the aggregation reflectors, their more-specifics kept inside the
    cluster, only aggregates (and the HA's subnet) out to the Internet."""
    bb, plan6 = topo.backbone6, topo.plan6
    if bb is None or plan6 is None:
        return None
    managed = plan6.block("addressing.ipv6.managed").network
    networks: list[str] = []
    aggregates: list[str] = []
    prefix_lists: list[dict[str, Any]] = []
    if node.role is Role.CORE:
        cluster_len = _v6net(topo.clusters[0].prefix6).prefixlen
        networks = [str(bb.end(n.name, n.interfaces[0].peer).network)
                    for n in topo.nodes.values() if n.service == "ha"]
        prefix_lists.append({"name": "TO-INTERNET6", "entries": [
            {"action": "permit", "prefix": str(managed), "ge": 0, "le": cluster_len},
            *({"action": "permit", "prefix": n, "ge": 0, "le": 0} for n in networks),
            {"action": "deny", "prefix": "::/0", "ge": 0, "le": 128},
        ]})
    elif node.role is Role.AGG:
        served = [_v6net(c.prefix6) for c in topo.agg_clusters(node.name)]
        aggregates = [str(p) for p in served]
        prefix_lists.append({"name": "OWN-MORE-SPECIFICS6", "entries": [
            {"action": "permit", "prefix": str(p), "ge": p.prefixlen + 1, "le": 128}
            for p in served]})
    elif node.role is Role.INET:
        cn = topo.service("cn")
        networks = [str(bb.end(cn.name, cn.interfaces[0].peer).network)]
    return {"networks": networks, "aggregates": aggregates, "prefix_lists": prefix_lists}


def _v6net(n: ipaddress.IPv6Network | None) -> ipaddress.IPv6Network:
    assert n is not None
    return n


def _passwords(node: Node, data: dict[str, Any], secret: bytes | None) -> dict[str, Any]:
    """TCP-MD5 on every session (issue 19 defect 10); no secret: unauthenticated sessions."""
    for nb in data["neighbors"]:
        nb["password"] = session_key(secret, node.name, nb["name"]) if secret else ""
    return data


def agent_argv(topo: Topology, node: Node, rundir: Path) -> list[str]:
    if node.service == "ha":
        return [sys.executable, "-m", "agents.ha", "--node", node.name, "--rundir", str(rundir),
                "--config", str(rundir / "agent.json")]
    assert node.pool is not None
    return [
        sys.executable, "-m", "agents.ar",
        "--node", node.name,
        "--rundir", str(rundir),
        "--pool", str(node.pool),
        "--config", str(rundir / "agent.json"),
    ]


def resolver_address(topo: Topology) -> str:
    """Unbound listens on the dns host's own address (topologies/lab/dnsplane.py)."""
    try:
        return str(topo.service("dns").interfaces[0].address)
    except Exception:  # noqa: BLE001 - a topology without DNS: agents run without auth
        return ""


def _ars(topo: Topology) -> dict[str, contract.ArEntry]:
    return {
        ar.name: contract.ArEntry(
            fqdn=fqdn("ar", ar.name), loopback=_v4(ar.loopback), pool=_v4net(ar.pool),
            cluster=topo.cluster_of(ar.name).prefix, overlay=topo.overlay[ar.name])
        for ar in topo.by_role(Role.AR)
    }


def _v4(a: ipaddress.IPv4Address | None) -> ipaddress.IPv4Address:
    assert a is not None
    return a


def _v4net(n: ipaddress.IPv4Network | None) -> ipaddress.IPv4Network:
    assert n is not None
    return n


def _v4addr(a: ipaddress.IPv4Address | None) -> ipaddress.IPv4Address:
    assert a is not None
    return a


def _paging() -> contract.Paging:
    return contract.Paging(port=PAGING_PORT, buffer=PAGING_BUFFER, timeout_s=PAGING_TIMEOUT_S)


def _agent_view(topo: Topology, role: str, node: Node, rundir: Path) -> dict[str, Any]:
    """What every BGP-speaking agent (AR or HA) knows: its identity, the resolver, the AS."""
    return {
        "node": node.name, "identity": fqdn(role, node.name), "key": rundir / Layout.KEY,
        "nonce": rundir / Layout.NONCE, "resolver": resolver_address(topo),
        "resolver_port": RESOLVER_PORT, "auth_port": AUTH_PORT, "managed": topo.managed,
        "escape_community": escape_community(topo), "paging": _paging(),
        "trust_anchor": rundir / Layout.TRUST_ANCHOR,
    }


def agent_data(topo: Topology, node: Node, rundir: Path) -> contract.ArAgentConfig:
    """The AR agent's view of the AS: its identity, the resolver, every AR's loopback."""
    return contract.ArAgentConfig(
        **_agent_view(topo, "ar", node, rundir), pool=_v4net(node.pool), ars=_ars(topo),
        overlay_dev=str(OVERLAY["dev"]), paging_dev=PAGING_DEV, tal=tuple(node.tal),
        dhcp=contract.DhcpServer(
            lease_s=topo.dhcp.lease_s, remote_renewals=topo.dhcp.remote_renewals,
            first=topo.dhcp.first, last=topo.dhcp.last, home_agent=home_agent_name(topo),
            tsig=rundir / Layout.TSIG, primary=resolver_address(topo), primary_port=NAMED_PORT),
        ipv6=ar_ipv6(topo, node),
        bgp_peers=tuple(_v4addr(topo.nodes[a].loopback) for a in topo.ar_parents(node.name)),
        home_agents=home_agents(topo),
    )


def home_agents(topo: Topology) -> dict[str, contract.HomeAgentEntry]:
    """The AS's Home Agent as the ARs know it: its DNS name and the next hops of its routes
    (its address toward its core, as in ha_agent_data and ha_ipv6); empty without one."""
    if not any(n.service == "ha" for n in topo.nodes.values()):
        return {}
    node = topo.service("ha")
    iface = node.interfaces[0]
    bb = topo.backbone6
    return {fqdn("ha", node.name): contract.HomeAgentEntry(
        next_hop=_v4addr(iface.address),
        next_hop6=None if bb is None else bb.end(node.name, iface.peer).ip)}


def ar_ipv6(topo: Topology, node: Node) -> contract.ArIpv6 | None:
    """The AR agent's IPv6 side, on a dual-stack backbone only."""
    bb, plan6 = topo.backbone6, topo.plan6
    if bb is None or plan6 is None or node.pool6 is None:
        return None
    managed = plan6.block("addressing.ipv6.managed").network
    assert isinstance(managed, ipaddress.IPv6Network)
    return contract.ArIpv6(
        loopback=bb.loopback(node.name), pool=node.pool6, managed=managed,
        mn_prefixlen=plan6.mn_prefixlen,
        loopbacks={a.name: bb.loopback(a.name) for a in topo.by_role(Role.AR)},
        clusters={a.name: _v6net(topo.cluster_of(a.name).prefix6) for a in topo.by_role(Role.AR)},
        overlays={a.name: overlay_address6(topo, a.name) for a in topo.by_role(Role.AR)},
        pools={a.name: _v6net(a.pool6) for a in topo.by_role(Role.AR)},
        dhcp6=None if (delegated := topo.dhcp6_range(node.name)) is None else
        contract.Dhcp6Server(*delegated, valid_s=topo.dhcp.lease_s,
                             remote_renewals=topo.dhcp.remote_renewals))


HA_TUNNEL = contract.HaTunnel(
    vni=4343, port=4790, mtu=1450, ha_mac="02:fa:03:00:00:01", mn_mac="02:fa:03:00:00:02",
    ha_inner=str(ipaddress.IPv4Network(LAB_BLOCKS_V4["ha-tunnel"]).network_address + 1))


def ha_agent_data(topo: Topology, node: Node, rundir: Path) -> contract.ArAgentConfig:
    """The Home Agent's agent.json: an AR agent's view (agents/ha.py reuses agents/ar.py)
    with no pool, no access link, and the tunnel to care-of addresses instead."""
    me = node.interfaces[0].address
    none = ipaddress.IPv4Network("0.0.0.0/32")
    ars = _ars(topo)
    ars[node.name] = contract.ArEntry(fqdn=fqdn("ha", node.name), loopback=me, pool=none,
                                      cluster=none, overlay=ipaddress.IPv4Address(0))
    return contract.ArAgentConfig(
        **_agent_view(topo, "ha", node, rundir), pool=none, ars=ars, overlay_dev="",
        paging_dev="", tal=(), tunnel=dataclasses.replace(HA_TUNNEL, local=str(me)),
        ipv6=ha_ipv6(topo, node))


def ha_ipv6(topo: Topology, node: Node) -> contract.ArIpv6 | None:
    """The Home Agent's IPv6 side on a dual-stack backbone: its link address toward its
    core is its next hop (a host has no loopback), ``NO_POOL6`` (it has no pool), and no
    cluster of its own (what it announces goes to the cores directly)."""
    bb, plan6 = topo.backbone6, topo.plan6
    if bb is None or plan6 is None:
        return None
    managed = plan6.block("addressing.ipv6.managed").network
    assert isinstance(managed, ipaddress.IPv6Network)
    iface = node.interfaces[0]
    return contract.ArIpv6(
        loopback=bb.end(node.name, iface.peer).ip, pool=contract.NO_POOL6, managed=managed,
        mn_prefixlen=plan6.mn_prefixlen,
        loopbacks={a.name: bb.loopback(a.name) for a in topo.by_role(Role.AR)},
        clusters={a.name: _v6net(topo.cluster_of(a.name).prefix6) for a in topo.by_role(Role.AR)})


def home_agent_name(topo: Topology) -> str:
    """The Home Agent every MN is assigned (DHCP option 224, draft 5 item 5), if any."""
    try:
        return fqdn("ha", topo.service("ha").name)
    except Exception:  # noqa: BLE001 - a topology without an HA
        return ""


def nft_data(topo: Topology, node: Node) -> dict[str, Any]:
    return {
        "name": node.name,
        "backbone": [*(i.name for i in node.interfaces), str(OVERLAY["dev"])],
        "auth_port": AUTH_PORT,
        "open_ports": [],
        "access": access_ifname(node.name),
        "dhcp_mark": f"{DHCP_MARK:#x}",
        "auth_filter": prefilter_data(),
        "ipv6": topo.backbone6 is not None,
    }


def mobile_config(topo: Topology, mn: str, rundir: Path) -> contract.MnAgentConfig:
    mob = topo.mobile(mn)
    assert mob.link_local is not None
    return contract.MnAgentConfig(
        name=mn, ifname=f"{mn}-eth0", address=mob.address,
        dhcp=contract.MnDhcp(
            link_local=mob.link_local, tsig=rundir / Layout.TSIG,
            primary=resolver_address(topo), primary_port=NAMED_PORT,
            hook=rundir / Layout.UDHCPC_HOOK, python=sys.executable,
            # The hook imports only the standard library and agents.control: run with -S
            # (no site-packages scan) from the checkout, the event reaches the agent in
            # milliseconds rather than a full interpreter start-up.
            root=str(Path(__file__).resolve().parents[2]),
            # Issue 18: its /64s by DHCPv6 prefix delegation, through Debian's dhclient.
            ipv6=contract.MnDhcp6(hook=rundir / Layout.DHCLIENT6_HOOK,
                                  gateway=ipaddress.IPv6Address(ACCESS_GATEWAY6))
            if mn in topo.dhcp6_mobiles else None,
        ) if mob.dhcp else None,
        # Macro-mobility (draft 2.4): the visited network and the HA tunnel's constants;
        # the Home Agent's name itself comes by DHCP (option 224).
        macro=contract.MnMacro(outside=topo.outside_cell, **dataclasses.asdict(HA_TUNNEL))
        if mob.dhcp and topo.outside_cell else None,
        gateway=ACCESS_GATEWAY, home=mob.home, identity=fqdn("mn", mn),
        key=rundir / Layout.KEY, resolver=resolver_address(topo), resolver_port=RESOLVER_PORT,
        auth_port=AUTH_PORT, paging_port=PAGING_PORT,
        ars={ar.name: fqdn("ar", ar.name) for ar in topo.by_role(Role.AR)},
        dns_mode=contract.DnsMode(mob.dns),
        prefix6=mob.prefix6 if topo.backbone6 and mn in topo.backbone6.mobiles else None,
    )


def mobile_data(topo: Topology, mn: str, rundir: Path) -> dict[str, Any]:
    """The MN's configuration as plain data, for its interface and hook templates."""
    data: dict[str, Any] = json.loads(mobile_config(topo, mn, rundir).to_json())
    prefix6 = data.get("prefix6")
    data["address6"] = str(ipaddress.IPv6Network(prefix6).network_address + 1) if prefix6 else ""
    data["gateway6"] = ACCESS_GATEWAY6
    return data


def render_mobile(topo: Topology, mn: str, rundir: Path) -> dict[str, str]:
    """A mobile node's files: its interface setup and its agent's configuration."""
    config = mobile_config(topo, mn, rundir)
    data = mobile_data(topo, mn, rundir)
    out = {"ip": render("ip/mobile.batch.j2", data), "agent": config.to_json()}
    if data["dhcp"]:
        out["hook"] = render("dhcp/udhcpc.hook.j2", data)
        if data["dhcp"].get("ipv6"):
            out["hook6"] = render("dhcp/dhclient6.hook.j2", data)
    return out


def exabgp_data(topo: Topology, node: Node, rundir: Path,
                secret: bytes | None = None) -> dict[str, Any]:
    if node.service == "ha":
        # The Home Agent has no loopback: its one address is its BGP identity, and its
        # peers are the core route reflectors (Figure 3).
        return _passwords(node, {
            "name": node.name, "router_id": str(node.interfaces[0].address), "asn": topo.asn,
            # IPv6 unicast on the same sessions as the ARs' (docs/ipv6.md): the HA binds
            # refused /64s too.
            "ipv6": topo.backbone6 is not None,
            "holdtime": BGP_HOLD, "agent_argv": " ".join(agent_argv(topo, node, rundir)),
            "restart_s": EXABGP_RESTART_S,
            "neighbors": [{"address": str(c.loopback), "name": c.name}
                          for c in topo.by_role(Role.CORE)],
        }, secret)
    return _passwords(node, {
        "name": node.name,
        "ipv6": topo.backbone6 is not None,  # both families on the IPv4 sessions
        "router_id": str(node.loopback),
        "asn": topo.asn,
        "holdtime": BGP_HOLD,
        "restart_s": EXABGP_RESTART_S,
        "agent_argv": " ".join(agent_argv(topo, node, rundir)),
        "neighbors": [
            {"address": str(topo.nodes[a].loopback), "name": a} for a in topo.ar_parents(node.name)
        ],
    }, secret)


def daemons_for(node: Node, topo: Topology | None = None) -> list[str]:
    """Which daemons run in a node, in start order."""
    if node.role is Role.HOST:
        # The Home Agent speaks iBGP through ExaBGP, its agent the API process (draft 2.4).
        return ["exabgp", "agent"] if node.service == "ha" else []
    if node.role is Role.INET:
        return ["zebra", "bgpd", *(["dnsmasq"] if topo and topo.outside_cell else [])]
    # OSPFv3 beside OSPFv2 on a dual-stack backbone (issue 18).
    igp = ["ospfd", *(["ospf6d"] if topo is not None and topo.backbone6 else [])]
    if node.role is Role.AR:
        return ["zebra", *igp, "exabgp", "agent"]
    return ["zebra", *igp, "bgpd"]


def render_node(topo: Topology, node: Node, rundir: Path,
                bgp_secret: bytes | None = None) -> dict[str, str]:
    """Every config file of one node: {daemon kind or 'ip': text}; ``bgp_secret``: the lab's
    secret each BGP session's TCP-MD5 key comes from (topologies/render/bgpkeys.py)."""
    out = {"ip": render("ip/node.batch.j2", ip_data(topo, node))}
    if node.role is Role.AR:
        out["nft"] = render("nft/ar.nft.j2", nft_data(topo, node))
        out["bridge"] = render("ip/overlay.bridge.j2",
                               {"name": node.name, "overlay": overlay_data(topo, node)})
        out["agent"] = agent_data(topo, node, rundir).to_json()
    if node.service == "ha":
        out["agent"] = ha_agent_data(topo, node, rundir).to_json()
    for kind in daemons_for(node, topo):
        if kind == "agent":
            continue  # agent.json, above
        if kind == "exabgp":
            out[kind] = render("exabgp/exabgp.conf.j2",
                               exabgp_data(topo, node, rundir, bgp_secret))
        elif kind == "dnsmasq":
            out[kind] = render("dnsmasq/outside.conf.j2", dnsmasq_data(topo, node, rundir))
        elif kind == "bgpd":
            out[kind] = render("frr/bgpd.conf.j2", bgpd_data(topo, node, rundir, bgp_secret))
        else:
            # ospf6d runs on the same links as ospfd: the same data, another template.
            builder = {"zebra": zebra_data, "ospfd": ospfd_data, "ospf6d": ospfd_data}[kind]
            out[kind] = render(f"frr/{kind}.conf.j2", builder(topo, node))
    return out
