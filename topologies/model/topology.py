"""Topology model: a YAML description becomes typed, validated dataclasses.

The addressing plan (loopbacks, point-to-point links, per-AR pools contiguous per
cluster, draft 2.1) is derived here, once, so every later stage reads plain data.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import dualstack
from . import links as linkattrs
from . import population as populations
from .errors import TopologyError
from .plan import AddressPlan, Allocator

IPv4Network = ipaddress.IPv4Network
IPv4Address = ipaddress.IPv4Address
IPv6Network = ipaddress.IPv6Network

# Interface names are "<node>-eth<N>" and must fit IFNAMSIZ (15) with room for N.
_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,8}$")


ISP_ZONE = "isp.test"  # ARs and HAs are named <node>.isp.test (the ISP's zone)
HOME_TLD = "example"  # MNs are named <mn>.example (their home zones)


def fqdn(role: str, node: str) -> str:
    """The DNS name of a lab identity: its key, its address records, its AUTH name."""
    return f"{node}.{ISP_ZONE}" if role in ("ar", "ha") else f"{node}.{HOME_TLD}"


class Role(enum.StrEnum):
    CORE = "core"
    AGG = "agg"
    AR = "ar"
    INET = "inet"
    HOST = "host"


@dataclass(frozen=True)
class Interface:
    name: str
    address: IPv4Address
    network: IPv4Network
    peer: str

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.network.prefixlen}"


@dataclass(frozen=True)
class Link:
    a: str
    b: str
    network: IPv4Network
    a_ip: IPv4Address
    b_ip: IPv4Address
    ospf: bool  # False for the eBGP edge and host attachments


@dataclass
class Node:
    name: str
    role: Role
    loopback: IPv4Address | None
    interfaces: list[Interface] = field(default_factory=list)
    cluster: str | None = None  # ARs only
    pool: IPv4Network | None = None  # ARs only
    pool6: IPv6Network | None = None  # ARs only, when the plan has IPv6 (draft 2.3)
    gateway: IPv4Address | None = None  # hosts: default gateway
    service: str | None = None  # hosts: "cn", "dns", "ha", "pgw"
    tal: tuple[str, ...] = ()  # ARs: the Tracking Area List given to MNs (draft 4)

    @property
    def is_router(self) -> bool:
        return self.role is not Role.HOST

    @property
    def pool_gateway(self) -> IPv4Address:
        """The AR's own address inside its pool, the target of the health ping."""
        if self.pool is None:
            raise TopologyError(f"{self.name} has no pool")
        return self.pool.network_address + 1


@dataclass(frozen=True)
class Cluster:
    name: str
    prefix: IPv4Network
    aggs: tuple[str, ...]
    ars: tuple[str, ...]
    prefix6: IPv6Network | None = None  # the cluster's IPv6 aggregate


@dataclass(frozen=True)
class Mobile:
    """A mobile node: its home AR and the address that AR's pool gave it, provisioned; or,
    for an MN that gets its addresses by DHCP (draft 2.3), no address until it asks."""

    name: str
    home: str
    address: IPv4Address | None
    dhcp: bool = False
    # RFC 3927 address to authenticate with before DHCP, and the anchored baseline's address:
    # both from the plan, unique per MN.
    link_local: IPv4Address | None = None
    anchored: IPv4Address | None = None
    prefix6: IPv6Network | None = None  # a true prefix for the MN (draft 2.3), from its home pool
    dns: str = "lookup"  # DNS_MODES: the AR looks the MN up, or the MN staples its proof


@dataclass(frozen=True)
class DhcpPolicy:
    """The ARs' DHCP service (draft 2.3): lease length, the renewals an AR accepts for its
    addresses through another AR's relay before it refuses, and the range leases come from."""

    lease_s: int = 60
    remote_renewals: int = 2
    first: int = 100  # host offsets into each AR pool
    last: int = 199


@dataclass
class Topology:
    name: str
    asn: int
    inet_asn: int
    managed: IPv4Network
    nodes: dict[str, Node]
    links: list[Link]
    clusters: list[Cluster]
    cn_network: IPv4Network
    mobiles: list[str] = field(default_factory=list)  # MN names, for keys and home zones
    dhcp_mobiles: list[str] = field(default_factory=list)  # the MNs that use DHCP
    # The DHCP MNs that also take their IPv6 /64s by DHCPv6 (dhcp.ipv6, issue 18).
    dhcp6_mobiles: list[str] = field(default_factory=list)
    dhcp: DhcpPolicy = field(default_factory=DhcpPolicy)
    # Draft 2.4: an access network outside the AS, on the Internet router (a visited
    # operator's network), where an MN gets a care-of address and calls its Home Agent.
    outside_net: IPv4Network | None = None
    plan: AddressPlan = field(default_factory=lambda: AddressPlan(4))
    mobile_nodes: dict[str, Mobile] = field(default_factory=dict)
    overlay: dict[str, IPv4Address] = field(default_factory=dict)  # AR -> redirect mesh address
    plan6: AddressPlan | None = None  # the IPv6 instance of the plan, when the YAML gives one
    backbone6: dualstack.Backbone6 | None = None  # IPv6 loopbacks and links (dual stack)
    # MNs described in bulk (`population:`): addressed by the same plan, run by the
    # population runtime rather than one agent process each.
    population: populations.Population | None = None
    population_nodes: dict[str, Mobile] = field(default_factory=dict)
    # (node, interface) of a sending end -> what that direction of its link does (links.py)
    link_attrs: dict[tuple[str, str], linkattrs.LinkAttributes] = field(default_factory=dict)
    # How far the MNs' home network is (`home:`, one-way) and the distance set laid over the
    # YAML (`distances:`, links.with_distance), if any.
    home_link: linkattrs.LinkAttributes = field(default_factory=linkattrs.LinkAttributes)
    distance: str | None = None

    def link_profile(self) -> dict[str, dict[str, float]]:
        """The configured links as plain data, "a-b" -> attributes, for scenario JSON; the
        home network's distance as "home"."""
        out: dict[str, dict[str, float]] = {}
        for lk in self.links:
            ia = next(i.name for i in self.nodes[lk.a].interfaces if i.peer == lk.b)
            attrs = self.link_attrs.get((lk.a, ia))
            if attrs is not None:
                out[f"{lk.a}-{lk.b}"] = attrs.as_dict()
        if not self.home_link.empty:
            out["home"] = self.home_link.as_dict()
        return out

    @property
    def home_rtt_ms(self) -> float:
        """The round trip to the home network the links add (twice the one-way delay)."""
        return 2.0 * (self.home_link.delay_ms or 0.0)

    @property
    def outside_gateway(self) -> IPv4Address | None:
        return self.outside_net.network_address + 1 if self.outside_net else None

    @property
    def outside_cell(self) -> str | None:
        """The node whose access link is the visited network: the Internet router, with
        mobile nodes to visit it."""
        if self.outside_net is None or not self.mobiles:
            return None
        return self.by_role(Role.INET)[0].name

    def dhcp6_range(self, ar: str) -> tuple[int, int] | None:
        """The first and last index of the MN prefixes of ``ar``'s IPv6 pool that its DHCPv6
        server delegates: the top quarter (192-255 of a /56's /64s), above every named or
        population MN's prefix (those come from the bottom, after the AR's own); None when
        they leave none, or without an IPv6 plan."""
        pool, plan6 = self.nodes[ar].pool6, self.plan6
        if pool is None or plan6 is None:
            return None
        shift = 128 - plan6.mn_prefixlen
        count = 1 << (plan6.mn_prefixlen - pool.prefixlen)
        held = [(int(m.prefix6.network_address) - int(pool.network_address)) >> shift
                for m in (*self.mobile_nodes.values(), *self.population_nodes.values())
                if m.prefix6 is not None and m.prefix6.subnet_of(pool)]
        first = max(count - count // 4, max(held, default=0) + 1)
        return (first, count - 1) if first < count else None

    def mobile(self, name: str) -> Mobile:
        """A provisioned MN starts out holding one address from its home AR's pool; a DHCP
        MN starts with none and asks its home AR first."""
        try:
            return self.mobile_nodes[name]
        except KeyError:
            raise TopologyError(f"no mobile node named {name!r}") from None

    def pool_owner(self, address: IPv4Address) -> Node | None:
        for n in self.by_role(Role.AR):
            if n.pool is not None and address in n.pool:
                return n
        return None

    def by_role(self, role: Role) -> list[Node]:
        return [n for n in self.nodes.values() if n.role is role]

    @property
    def routers(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.is_router]

    def node(self, name: str) -> Node:
        try:
            return self.nodes[name]
        except KeyError:
            raise TopologyError(f"no node named {name!r}") from None

    def service(self, service: str) -> Node:
        for n in self.nodes.values():
            if n.service == service:
                return n
        raise TopologyError(f"topology has no {service} node")

    def agg_clusters(self, agg: str) -> list[Cluster]:
        return [c for c in self.clusters if agg in c.aggs]

    def ar_parents(self, ar: str) -> tuple[str, ...]:
        return self.cluster_of(ar).aggs

    def cluster_of(self, ar: str) -> Cluster:
        for c in self.clusters:
            if ar in c.ars:
                return c
        raise TopologyError(f"{ar} is in no cluster")

    def agg_clients(self, agg: str) -> list[str]:
        return [ar for c in self.agg_clusters(agg) for ar in c.ars]

    def ospf_neighbors(self, router: str) -> list[str]:
        out: list[str] = []
        for link in self.links:
            if link.ospf and router in (link.a, link.b):
                peer = link.b if link.a == router else link.a
                if self.nodes[peer].is_router:
                    out.append(peer)
        return out


def _req(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise TopologyError(f"{where}: missing required key {key!r}")
    return d[key]


def _net(value: Any, where: str) -> IPv4Network:
    try:
        return ipaddress.IPv4Network(str(value), strict=True)
    except ValueError as exc:
        raise TopologyError(f"{where}: {exc}") from None


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise TopologyError(
            f"{where}: node name {value!r} must be lowercase alphanumerics, 1-9 chars"
        )
    return value


def _names(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise TopologyError(f"{where}: expected a non-empty list of node names")
    return [_name(v, where) for v in value]


class _Builder:
    """Allocates addresses from the plan in declaration order, so a plan is stable across
    runs and running out names the block."""

    def __init__(self, plan: AddressPlan):
        self.nodes: dict[str, Node] = {}
        self.links: list[Link] = []
        self._lo = plan.allocator("addressing.loopbacks")
        self._p2p = plan.allocator("addressing.links")
        self._svc = plan.allocator("addressing.services")
        self._loopbacks = 0

    def add(self, name: str, role: Role, **kw: Any) -> Node:
        if name in self.nodes:
            raise TopologyError(f"node {name!r} declared twice")
        lo: IPv4Address | None = None
        if role is not Role.HOST:
            self._loopbacks += 1
            lo = _v4(self._lo.host(self._loopbacks, f"the loopback of {name}"))
        node = Node(name=name, role=role, loopback=lo, **kw)
        self.nodes[name] = node
        return node

    def link(self, a: str, b: str, *, ospf: bool = True, net: IPv4Network | None = None) -> None:
        for n in (a, b):
            if n not in self.nodes:
                raise TopologyError(f"link {a}-{b}: unknown node {n!r}")
        if a == b:
            raise TopologyError(f"link {a}-{b}: a node cannot link to itself")
        if any({a, b} == {lk.a, lk.b} for lk in self.links):
            raise TopologyError(f"link {a}-{b} declared twice")
        if net is None:
            net = _v4net(self._p2p.subnet(31, f"link {a}-{b}"))
            a_ip, b_ip = net.network_address, net.network_address + 1
        else:
            a_ip, b_ip = net.network_address + 1, net.network_address + 2
        self.links.append(Link(a, b, net, a_ip, b_ip, ospf))
        for me, ip, peer in ((a, a_ip, b), (b, b_ip, a)):
            node = self.nodes[me]
            ifname = f"{me}-eth{len(node.interfaces)}"
            node.interfaces.append(Interface(ifname, ip, net, peer))

    def service_net(self, host: str) -> IPv4Network:
        return _v4net(self._svc.subnet(30, f"the attachment of {host}"))


def _v4(a: object) -> IPv4Address:
    assert isinstance(a, IPv4Address)
    return a


def _v4net(n: object) -> IPv4Network:
    assert isinstance(n, IPv4Network)
    return n


# Fixed blocks of every lab, beside the YAML's ranges; the plan checks them against each
# other and against the YAML so that a topology cannot reuse them by accident.
LAB_BLOCKS_V4 = {
    "access": "169.254.0.0/24",  # the anycast gateway on every AR's access link
    "overlay": "169.254.1.0/24",  # the redirect mesh between ARs, one address per AR
    "ha-tunnel": "169.254.3.0/24",  # inside the MN-HA tunnel
    "anchored-tunnel": "169.254.4.0/24",  # the anchored baseline's bearer tunnel, per AR
    "mn-link-local": "169.254.64.0/18",  # an MN's RFC 3927 address before DHCP, per MN
    "anchored": "100.64.0.0/16",  # the anchored baseline's session addresses, per MN
}
# The same for IPv6 (issue 18): the anchored baseline's session prefixes, a /64 per MN, in
# unique local space so that no plan's documentation prefixes can meet them.
LAB_BLOCKS_V6 = {"anchored6": "fd00:64::/48"}
MN_OFFSET = 10  # provisioned MN addresses start here in their home pool (below: the AR's own)


def _plan(addr: dict[str, Any], inet: dict[str, Any]) -> AddressPlan:
    plan = AddressPlan(4)
    for key in ("loopbacks", "links", "services", "managed"):
        plan.declare(f"addressing.{key}", _req(addr, key, "addressing"))
    plan.declare("internet.cn_subnet", _req(inet, "cn_subnet", "internet"))
    if inet.get("outside_subnet"):
        plan.declare("internet.outside_subnet", inet["outside_subnet"])
    for name, net in LAB_BLOCKS_V4.items():
        plan.declare(name, net)
    return plan


V6_KEYS = {"managed", "cluster_prefixlen", "pool_prefixlen", "mn_prefixlen",
           "loopbacks", "links", "mobiles"}  # the last three: dual stack (model/dualstack.py)


def _plan6(doc: Any, clusters: list[Cluster], nodes: dict[str, Node]) -> AddressPlan | None:
    """The IPv6 instance of the plan (draft 2.3): a managed range, an aggregate per cluster,
    a pool per AR and a prefix length per MN, every one on a nibble boundary so that the
    reverse zones under ip6.arpa fall on label boundaries."""
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise TopologyError("addressing.ipv6: expected a mapping")
    unknown = sorted(set(doc) - V6_KEYS)
    if unknown:
        raise TopologyError(f"addressing.ipv6: unknown key {unknown[0]!r}")
    plan = AddressPlan(6)
    managed = plan.declare("addressing.ipv6.managed", _req(doc, "managed", "addressing.ipv6"))
    for key in ("loopbacks", "links"):
        if key in doc:
            plan.declare(f"addressing.ipv6.{key}", doc[key])
    for name, block6 in LAB_BLOCKS_V6.items():
        plan.declare(name, block6)
    lengths = {"managed": managed.network.prefixlen}
    for key, default in (("cluster_prefixlen", 44), ("pool_prefixlen", 56), ("mn_prefixlen", 64)):
        value = doc.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TopologyError(f"addressing.ipv6.{key}: expected an integer, got {value!r}")
        lengths[key] = value
    for key, length in lengths.items():
        if length % 4:
            raise TopologyError(
                f"addressing.ipv6.{key}: /{length} is not on a nibble boundary (a multiple of "
                "4): reverse lookups under ip6.arpa need whole nibbles (draft 2.3)")
    cluster_len, pool_len, mn_len = (lengths["cluster_prefixlen"], lengths["pool_prefixlen"],
                                     lengths["mn_prefixlen"])
    if not lengths["managed"] <= cluster_len < pool_len <= mn_len <= 64:
        raise TopologyError("addressing.ipv6: need managed <= cluster_prefixlen < "
                            "pool_prefixlen <= mn_prefixlen <= 64")
    cluster_nets = plan.allocator("addressing.ipv6.managed")
    for i, cl in enumerate(clusters):
        net = cluster_nets.subnet(cluster_len, f"cluster {cl.name}")
        block = plan.declare(f"ipv6 cluster {cl.name}", net, inside="addressing.ipv6.managed")
        assert isinstance(block.network, IPv6Network)
        clusters[i] = dataclasses.replace(cl, prefix6=block.network)
        pools = Allocator(block)
        for ar in cl.ars:
            pool = plan.declare(f"ipv6 pool of {ar}", pools.subnet(pool_len, ar),
                                inside=f"ipv6 cluster {cl.name}")
            assert isinstance(pool.network, IPv6Network)
            nodes[ar].pool6 = pool.network
    plan.mn_prefixlen = mn_len
    return plan


def _mobile_prefixes(plan6: AddressPlan, nodes: dict[str, Node], mobiles: dict[str, Mobile],
                     after: dict[str, Mobile] | None = None) -> dict[str, Mobile]:
    """Each MN a true prefix of its home AR's IPv6 pool, the first ones after the AR's own
    (and after those of the MNs in ``after``)."""
    taken: dict[str, int] = {}
    for m in (after or {}).values():
        taken[m.home] = taken.get(m.home, 0) + 1
    pools: dict[str, Allocator] = {}
    out: dict[str, Mobile] = {}
    for name, m in mobiles.items():
        alloc = pools.get(m.home)
        if alloc is None:
            alloc = pools[m.home] = plan6.allocator(f"ipv6 pool of {m.home}")
            for _ in range(1 + taken.get(m.home, 0)):  # the AR's own, then those taken
                alloc.subnet(plan6.mn_prefixlen, f"the AR {m.home} and its named MNs")
        prefix = alloc.subnet(plan6.mn_prefixlen, name)
        assert isinstance(prefix, IPv6Network)
        out[name] = dataclasses.replace(m, prefix6=prefix)
    return out


class _MobileAddresses:
    """Hands each MN its addresses: a provisioned MN the next free host of its home pool
    outside the DHCP range, so no two MNs ever share an address; every MN a link-local and
    an anchored address of its own. Named mobiles and a population draw from the same."""

    def __init__(self, plan: AddressPlan, policy: DhcpPolicy) -> None:
        self.plan = plan
        self.policy = policy
        self.link_local = plan.allocator("mn-link-local")
        self.anchored = plan.allocator("anchored")
        self.pools: dict[str, Allocator] = {}
        self.used: dict[str, int] = {}
        self.count = 0

    def add(self, mn: str, home: Node, dhcp: bool) -> Mobile:
        assert home.pool is not None
        policy = self.policy
        address: IPv4Address | None = None
        if not dhcp:
            alloc = self.pools.setdefault(home.name, self.plan.allocator(f"pool of {home.name}"))
            offset = self.used.get(home.name, MN_OFFSET - 1) + 1
            if policy.first <= offset <= policy.last:
                offset = policy.last + 1  # the DHCP range is the ARs' own to lease
            self.used[home.name] = offset
            if offset >= home.pool.num_addresses - 1:
                raise TopologyError(
                    f"pool of {home.name} {home.pool} ran out: no address left for {mn} "
                    f"(provisioned MNs take .{MN_OFFSET} up, outside the DHCP range "
                    f".{policy.first}-.{policy.last}); use a longer pool or fewer MNs per AR")
            address = _v4(alloc.host(offset, mn))
        k = MN_OFFSET + self.count
        self.count += 1
        return Mobile(mn, home.name, address, dhcp=dhcp,
                      link_local=_v4(self.link_local.host(k, mn)),
                      anchored=_v4(self.anchored.host(k, mn)))


def _mobiles(alloc: _MobileAddresses, ars: list[Node], mobiles: list[str],
             dhcp_mobiles: list[str]) -> dict[str, Mobile]:
    """Named mobiles: homed round-robin over the ARs in declaration order."""
    if mobiles and not ars:
        raise TopologyError("mobiles: the topology has no access router to home them")
    return {mn: alloc.add(mn, ars[i % len(ars)], mn in dhcp_mobiles)
            for i, mn in enumerate(mobiles)}


def _population(alloc: _MobileAddresses, doc: Any, b: _Builder, clusters: list[Cluster],
                taken: set[str]) -> tuple[populations.Population | None, dict[str, Mobile]]:
    ars = [n.name for n in b.nodes.values() if n.role is Role.AR]
    members = {c.name: list(c.ars) for c in clusters}
    pop = populations.parse(doc, ars, members)
    if pop is None:
        return None, {}
    if not ars:
        raise TopologyError("population: the topology has no access router to home it")
    clash = next((n for n in pop.names() if n in taken), None)
    if clash is not None:
        raise TopologyError(f"population: {clash!r} is already a node or mobile name "
                            "(set population.prefix)")
    dhcp = populations.dhcp_members(pop)
    return pop, {mn: alloc.add(mn, b.nodes[home], mn in dhcp)
                 for mn, home in zip(pop.names(), populations.homes(pop, ars, members),
                                     strict=True)}


DNS_MODES = ("lookup", "stapled")


def _dns_modes(value: Any, mobiles: list[str]) -> dict[str, str]:
    """``dns: stapled`` for the whole lab, or ``dns: {default: lookup, mn2: stapled}``."""
    doc = {"default": value or "lookup"} if value is None or isinstance(value, str) else value
    if not isinstance(doc, dict):
        raise TopologyError("dns: expected lookup, stapled, or a mapping of MN -> mode")
    default = doc.get("default") or "lookup"
    out: dict[str, str] = {}
    for key, mode in doc.items():
        if mode not in DNS_MODES:
            raise TopologyError(f"dns.{key}: {mode!r} is not one of {', '.join(DNS_MODES)}")
        if key != "default" and key not in mobiles:
            raise TopologyError(f"dns.{key}: not listed under mobiles")
    for mn in mobiles:
        out[mn] = str(doc.get(mn, default))
    return out


def build(doc: dict[str, Any]) -> Topology:
    """Validate a parsed YAML document and derive the full addressing plan."""
    if not isinstance(doc, dict):
        raise TopologyError("topology must be a mapping")
    name = str(_req(doc, "name", "topology"))
    if not re.match(r"^[a-z][a-z0-9_-]{0,31}$", name):
        raise TopologyError(f"name: {name!r} must be lowercase, 1-32 chars")
    asn = int(_req(doc, "asn", "topology"))
    addr = _req(doc, "addressing", "topology")
    if not isinstance(addr, dict):
        raise TopologyError("addressing: expected a mapping")
    inet = _req(doc, "internet", "topology")
    if not isinstance(inet, dict):
        raise TopologyError("internet: expected a mapping")
    plan = _plan(addr, inet)
    managed = _v4net(plan.block("addressing.managed").network)
    cluster_len = int(addr.get("cluster_prefixlen", 16))
    pool_len = int(addr.get("pool_prefixlen", 24))
    if not managed.prefixlen <= cluster_len < pool_len <= 30:
        raise TopologyError(
            "addressing: need managed prefixlen <= cluster_prefixlen < pool_prefixlen <= 30"
        )
    b = _Builder(plan)

    cores = _names(_req(doc, "core", "topology"), "core")
    for c in cores:
        b.add(c, Role.CORE)
    aggs_doc = _req(doc, "aggregation", "topology")
    if not isinstance(aggs_doc, dict) or not aggs_doc:
        raise TopologyError("aggregation: expected a mapping of router -> {uplinks: [...]}")
    for agg in aggs_doc:
        b.add(_name(agg, "aggregation"), Role.AGG)

    clusters_doc = _req(doc, "clusters", "topology")
    if not isinstance(clusters_doc, list) or not clusters_doc:
        raise TopologyError("clusters: expected a non-empty list")
    cluster_nets = plan.allocator("addressing.managed")
    clusters: list[Cluster] = []
    for i, cdoc in enumerate(clusters_doc):
        where = f"clusters[{i}]"
        cname = _name(_req(cdoc, "name", where), f"{where}.name")
        caggs = _names(_req(cdoc, "aggs", where), f"{where}.aggs")
        for agg in caggs:
            if agg not in aggs_doc:
                raise TopologyError(f"{where}.aggs: {agg!r} is not an aggregation router")
        cars = _names(_req(cdoc, "ars", where), f"{where}.ars")
        prefix = _v4net(cluster_nets.subnet(cluster_len, f"cluster {cname}"))
        pools = Allocator(plan.declare(f"cluster {cname}", prefix, inside="addressing.managed"))
        for ar in cars:
            pool = plan.declare(f"pool of {ar}", pools.subnet(pool_len, f"the pool of {ar}"),
                                inside=f"cluster {cname}")
            b.add(ar, Role.AR, cluster=cname, pool=_v4net(pool.network))
        clusters.append(Cluster(cname, prefix, tuple(caggs), tuple(cars)))

    inet_name = _name(_req(inet, "router", "internet"), "internet.router")
    b.add(inet_name, Role.INET)
    cn_net = _v4net(plan.block("internet.cn_subnet").network)
    outside_net = (_v4net(plan.block("internet.outside_subnet").network)
                   if inet.get("outside_subnet") else None)
    if outside_net is not None and outside_net.prefixlen > 28:
        raise TopologyError("internet.outside_subnet must be a /28 or wider")

    # Link order fixes the address plan: edge, core mesh, uplinks, access, extras, services.
    for core in _names(_req(inet, "links", "internet"), "internet.links"):
        if core not in cores:
            raise TopologyError(f"internet.links: {core!r} is not a core router")
        b.link(inet_name, core, ospf=False)
    for i, c1 in enumerate(cores):
        for c2 in cores[i + 1 :]:
            b.link(c1, c2)
    for agg, adoc in aggs_doc.items():
        for core in _names(_req(adoc or {}, "uplinks", f"aggregation.{agg}"), f"{agg}.uplinks"):
            if core not in cores:
                raise TopologyError(f"aggregation.{agg}.uplinks: {core!r} is not a core router")
            b.link(core, agg)
    for cl in clusters:
        for ar in cl.ars:
            for agg in cl.aggs:
                b.link(agg, ar)
    for i, entry in enumerate(doc.get("links", []) or []):
        pair, mapping = linkattrs.link_between(entry, f"links[{i}]")
        names = _names(pair, f"links[{i}]")
        if len(names) != 2:
            raise TopologyError(f"links[{i}]: a link joins exactly two nodes")
        for n in names:
            if b.nodes.get(n) is None or b.nodes[n].role in (Role.INET, Role.HOST):
                raise TopologyError(f"links[{i}]: {n!r} is not an AS router")
        if mapping is not None and any({*names} == {lk.a, lk.b} for lk in b.links):
            continue  # attributes for a link the structure already made
        b.link(names[0], names[1])

    cn = _name(_req(inet, "cn", "internet"), "internet.cn")
    b.add(cn, Role.HOST, service="cn")
    b.link(inet_name, cn, ospf=False, net=cn_net)
    for svc, sdoc in (doc.get("services") or {}).items():
        if svc not in ("dns", "ha", "pgw"):  # pgw: the anchored baseline's anchor (Figure 1)
            raise TopologyError(f"services: unknown service {svc!r} (dns, ha, pgw)")
        host = _name(sdoc.get("name", svc), f"services.{svc}.name")
        attach = _name(_req(sdoc, "attach", f"services.{svc}"), f"services.{svc}.attach")
        if attach not in cores:
            raise TopologyError(f"services.{svc}.attach: {attach!r} is not a core router")
        b.add(host, Role.HOST, service=svc)
        b.link(attach, host, ospf=True, net=b.service_net(host))

    for node in b.nodes.values():
        if node.role is Role.HOST:
            (intf,) = node.interfaces
            gw_node = b.nodes[intf.peer]
            node.gateway = next(i.address for i in gw_node.interfaces if i.peer == node.name)
    for access in (n for n in b.nodes.values() if n.role is Role.AR):
        if not access.interfaces:
            raise TopologyError(f"{access.name} has no links")
    # Draft 4: a Tracking Area List per AR, the ARs an idle MN may roam without
    # re-authenticating; by default the AR's own cluster.
    tals_doc = doc.get("tracking_areas") or {}
    if not isinstance(tals_doc, dict):
        raise TopologyError("tracking_areas: expected a mapping of AR -> [ARs]")
    for ar_name, members in tals_doc.items():
        where = f"tracking_areas.{ar_name}"
        if b.nodes.get(ar_name) is None or b.nodes[ar_name].role is not Role.AR:
            raise TopologyError(f"{where}: {ar_name!r} is not an access router")
        listed = _names(members, where)
        for m in listed:
            if b.nodes.get(m) is None or b.nodes[m].role is not Role.AR:
                raise TopologyError(f"{where}: {m!r} is not an access router")
        if ar_name not in listed:
            raise TopologyError(f"{where}: an AR's list must include the AR itself")
        if len(listed) > 8:
            raise TopologyError(f"{where}: at most 8 ARs fit in an authentication reply")
        b.nodes[ar_name].tal = tuple(listed)
    for cl in clusters:
        for ar in cl.ars:
            if not b.nodes[ar].tal:
                b.nodes[ar].tal = cl.ars[:8]
    mobiles = _names(doc["mobiles"], "mobiles") if doc.get("mobiles") else []
    if "air" in b.nodes or "air" in mobiles:
        raise TopologyError("'air' is reserved: the lab's radio namespace has that name")
    if mobiles and not any(n.service == "dns" for n in b.nodes.values()):
        raise TopologyError("mobiles: mobile nodes authenticate through DNS; add services.dns")
    for mn in mobiles:
        if mn in b.nodes:
            raise TopologyError(f"mobiles: {mn!r} is already a node name")
    if len(set(mobiles)) != len(mobiles):
        raise TopologyError("mobiles: a name is listed twice")
    dhcp_doc = doc.get("dhcp") or {}
    if not isinstance(dhcp_doc, dict):
        raise TopologyError("dhcp: expected a mapping")
    dhcp_mobiles = _names(dhcp_doc["mobiles"], "dhcp.mobiles") if dhcp_doc.get("mobiles") else []
    for mn in dhcp_mobiles:
        if mn not in mobiles:
            raise TopologyError(f"dhcp.mobiles: {mn!r} is not listed under mobiles")
    unknown = set(dhcp_doc) - {"mobiles", "ipv6", "lease_s", "remote_renewals", "first", "last"}
    if unknown:
        raise TopologyError(f"dhcp: unknown keys {sorted(unknown)}")
    dhcp6_mobiles = _names(dhcp_doc["ipv6"], "dhcp.ipv6") if dhcp_doc.get("ipv6") else []
    if stray := [mn for mn in dhcp6_mobiles if mn not in dhcp_mobiles]:
        raise TopologyError(f"dhcp.ipv6: {', '.join(stray)} not listed under dhcp.mobiles "
                            "(DHCPv6 follows the first DHCPv4 lease)")
    try:
        policy = DhcpPolicy(**{k: int(v) for k, v in dhcp_doc.items()
                               if k not in ("mobiles", "ipv6")})
    except (TypeError, ValueError) as exc:
        raise TopologyError(f"dhcp: {exc}") from None
    if policy.lease_s < 10 or policy.remote_renewals < 0:
        raise TopologyError("dhcp: lease_s must be at least 10 s, remote_renewals at least 0")
    if not 10 <= policy.first <= policy.last <= 254:
        raise TopologyError("dhcp: first..last must lie in 10..254 (below 10: gateway, MNs)")
    for node in b.nodes.values():
        if dhcp_mobiles and node.pool is not None and policy.last >= node.pool.num_addresses - 1:
            raise TopologyError(f"dhcp: last {policy.last} lies outside the pool {node.pool}")
    ars = [n for n in b.nodes.values() if n.role is Role.AR]
    dns_modes = _dns_modes(doc.get("dns"), mobiles)  # issue 17: lookup or stapled, per MN
    overlay = plan.allocator("overlay")
    plan6 = _plan6(addr.get("ipv6"), clusters, b.nodes)
    addresses = _MobileAddresses(plan, policy)
    mobile_nodes = {mn: dataclasses.replace(m, dns=dns_modes[mn])
                    for mn, m in _mobiles(addresses, ars, mobiles, dhcp_mobiles).items()}
    pop, pop_nodes = _population(addresses, doc.get("population"), b, clusters,
                                 {*b.nodes, *mobiles})
    if plan6 is not None:
        mobile_nodes = _mobile_prefixes(plan6, b.nodes, mobile_nodes)
        pop_nodes = _mobile_prefixes(plan6, b.nodes, pop_nodes, after=mobile_nodes)
    six = (addr.get("ipv6") or {}).get("mobiles") or []
    mobiles6 = tuple(_names(six, "addressing.ipv6.mobiles")) if six else ()
    if unknown_mn := next((m for m in mobiles6 if m not in mobiles), None):
        raise TopologyError(f"addressing.ipv6.mobiles: {unknown_mn!r} is not listed under mobiles")
    backbone6 = None if plan6 is None else dualstack.backbone(
        plan6, [n.name for n in b.nodes.values() if n.is_router], [(lk.a, lk.b) for lk in b.links],
        mobiles6)
    if dhcp6_mobiles and backbone6 is None:
        raise TopologyError("dhcp.ipv6: DHCPv6 needs a dual-stack backbone "
                            "(addressing.ipv6 with loopbacks and links)")
    if both := [mn for mn in dhcp6_mobiles if mn in mobiles6]:
        raise TopologyError(f"dhcp.ipv6: {', '.join(both)} already hold a planned prefix "
                            "(addressing.ipv6.mobiles)")
    role_of = {n.name: (n.service, n.role.value) if n.service else (n.role.value,)
               for n in b.nodes.values()}
    spec = linkattrs.parse(doc, {r for names in role_of.values() for r in names})
    link_attrs = linkattrs.resolve(spec, (
        (lk.a, next(i.name for i in b.nodes[lk.a].interfaces if i.peer == lk.b),
         lk.b, next(i.name for i in b.nodes[lk.b].interfaces if i.peer == lk.a))
        for lk in b.links), role_of)
    return Topology(
        plan=plan,
        plan6=plan6,
        backbone6=backbone6,
        mobile_nodes=mobile_nodes,
        population=pop,
        population_nodes=pop_nodes,
        overlay={a.name: _v4(overlay.host(i + 1, f"the overlay address of {a.name}"))
                 for i, a in enumerate(ars)},
        name=name,
        asn=asn,
        inet_asn=int(inet.get("asn", 64999)),
        managed=managed,
        nodes=b.nodes,
        links=b.links,
        clusters=clusters,
        cn_network=cn_net,
        mobiles=mobiles,
        dhcp_mobiles=dhcp_mobiles,
        dhcp6_mobiles=dhcp6_mobiles,
        dhcp=policy,
        outside_net=outside_net,
        link_attrs=link_attrs,
        home_link=spec.home,
        distance=_distance_name(doc.get("distance")),
    )


def _distance_name(raw: Any) -> str | None:
    if raw is None or (isinstance(raw, str) and raw):
        return raw
    raise TopologyError(f"distance: expected the name of a distances: set, got {raw!r}")


def load(path: str | Path) -> Topology:
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise TopologyError(f"{p}: {exc}") from None
    try:
        return build(doc)
    except TopologyError as exc:
        raise TopologyError(f"{p}: {exc}") from None
