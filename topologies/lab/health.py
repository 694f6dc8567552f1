"""Health of a running lab, read from the daemons themselves (vtysh JSON, ping).

Produces the contract's `up --check` record: BGP sessions, OSPF adjacencies, pool
reachability from the CN, and whether core routers hold only cluster aggregates; on a
dual-stack backbone the same for IPv6 (OSPFv3, the IPv6 unicast family), under "ipv6".
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.contract import Layout, ServiceState
from topologies.lab.daemons import LabError, NodeExec, vtysh
from topologies.model import Node, Role, Topology
from topologies.render.configs import daemons_for


@dataclass
class FamilyHealth:
    """One address family's counts: IPv4's at the top of the record, IPv6's under "ipv6"."""

    bgp_established: int = 0
    bgp_total: int = 0
    ospf_full: int = 0
    ospf_expected: int = 0
    pools_ok: int = 0
    pools_total: int = 0
    core_leaks: list[str] = field(default_factory=list)

    @property
    def family_converged(self) -> bool:
        return self.bgp_established == self.bgp_total and self.ospf_full == self.ospf_expected

    @property
    def family_reachable(self) -> bool:
        return self.pools_ok == self.pools_total and not self.core_leaks

    def family_rows(self, family: str = "") -> list[tuple[str, str, str]]:
        return [
            (f"{family}BGP sessions established", f"{self.bgp_established}/{self.bgp_total}",
             _ok(self.bgp_established == self.bgp_total)),
            (f"{family}OSPF adjacencies full", f"{self.ospf_full}/{self.ospf_expected}",
             _ok(self.ospf_full == self.ospf_expected)),
            (f"{family}AR pools reachable from CN", f"{self.pools_ok}/{self.pools_total}",
             _ok(self.pools_ok == self.pools_total)),
            (f"core holds only {family}aggregates", str(len(self.core_leaks)) + " leaks",
             _ok(not self.core_leaks)),
        ]

    def counts_json(self) -> dict[str, Any]:
        return {
            "bgp_sessions": {"established": self.bgp_established, "total": self.bgp_total},
            "ospf_full": self.ospf_full == self.ospf_expected,
            "ospf_adjacencies": {"full": self.ospf_full, "expected": self.ospf_expected},
            "pools_reachable": {"ok": self.pools_ok, "total": self.pools_total},
            "core_more_specifics": self.core_leaks,
        }


@dataclass
class Health(FamilyHealth):
    nodes: int = 0
    problems: list[str] = field(default_factory=list)
    ipv6: FamilyHealth | None = None  # a dual-stack backbone only

    @property
    def converged(self) -> bool:
        return (self.family_converged and not self.problems
                and (self.ipv6 is None or self.ipv6.family_converged))

    @property
    def reachable(self) -> bool:
        """Every pool of both families answers the CN."""
        return (self.pools_ok == self.pools_total
                and (self.ipv6 is None or self.ipv6.pools_ok == self.ipv6.pools_total))

    @property
    def healthy(self) -> bool:
        return (self.converged and self.family_reachable
                and (self.ipv6 is None or self.ipv6.family_reachable))

    def as_json(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "nodes": self.nodes,
            **self.counts_json(),
            "problems": self.problems,
            **({"ipv6": self.ipv6.counts_json()} if self.ipv6 is not None else {}),
        }

    def table(self) -> str:
        rows = [("nodes", str(self.nodes), ""), *self.family_rows(),
                *(self.ipv6.family_rows("IPv6 ") if self.ipv6 is not None else [])]
        w = max(len(r[0]) for r in rows)
        lines = [f"{a:<{w}}  {b:>10}  {c}" for a, b, c in rows]
        lines += [f"problem: {p}" for p in self.problems]
        lines.append(f"{'healthy':<{w}}  {str(self.healthy).lower():>10}")
        return "\n".join(lines)


def _ok(v: bool) -> str:
    return "ok" if v else "FAIL"


def _json(ex: NodeExec, rundir: Path, cmd: str) -> Any:
    text = vtysh(ex, rundir, cmd)
    try:
        return json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise LabError(f"{ex.name}: {cmd}: bad JSON: {exc}") from None


OSPF_NEIGHBORS = {"ospfd": "show ip ospf neighbor json", "ospf6d": "show ipv6 ospf6 neighbor json"}


def ospf_full(ex: NodeExec, rundir: Path, daemon: str = "ospfd") -> int:
    data = _json(ex, rundir, OSPF_NEIGHBORS[daemon])
    count = 0
    # ospfd lists neighbours per router id, ospf6d in one list.
    neighbors = data.get("neighbors") or {}
    for entries in neighbors.values() if isinstance(neighbors, dict) else [neighbors]:
        for e in entries if isinstance(entries, list) else [entries]:
            state = str(e.get("nbrState") or e.get("state") or "")
            if state.startswith("Full"):
                count += 1
    return count


def bgp_peers(ex: NodeExec, rundir: Path, family: str = "ipv4") -> dict[str, str]:
    data = _json(ex, rundir, f"show bgp {family} unicast summary json")
    peers = (data.get(f"{family}Unicast") or data).get("peers") or {}
    return {addr: str(p.get("state", "")) for addr, p in peers.items()}


def bgp_prefixes(ex: NodeExec, rundir: Path) -> list[ipaddress.IPv4Network]:
    data = _json(ex, rundir, "show bgp ipv4 unicast json")
    return [ipaddress.IPv4Network(p) for p in (data.get("routes") or {})]


def bgp_prefixes6(ex: NodeExec, rundir: Path) -> list[ipaddress.IPv6Network]:
    data = _json(ex, rundir, "show bgp ipv6 unicast json")
    return [ipaddress.IPv6Network(p) for p in (data.get("routes") or {})]


def sessions(topo: Topology) -> set[frozenset[str]]:
    """Every BGP session the model implies, as unordered pairs of node names."""
    out: set[frozenset[str]] = set()
    cores = [n.name for n in topo.by_role(Role.CORE)]
    for i, a in enumerate(cores):
        for b in cores[i + 1 :]:
            out.add(frozenset((a, b)))
    for node in topo.routers:
        for intf in node.interfaces:
            peer = topo.nodes[intf.peer]
            if {node.role, peer.role} in ({Role.CORE, Role.AGG}, {Role.CORE, Role.INET}):
                out.add(frozenset((node.name, peer.name)))
    for cl in topo.clusters:
        for ar in cl.ars:
            for agg in cl.aggs:
                out.add(frozenset((ar, agg)))
    for ha in (n for n in topo.nodes.values() if n.service == "ha"):
        out.update(frozenset((c, ha.name)) for c in cores)  # the Home Agent (draft 2.4)
    return out


def check(
    topo: Topology,
    execs: dict[str, NodeExec],
    rundirs: dict[str, Path],
    *,
    ping: bool = True,
) -> Health:
    h = Health(nodes=len(topo.nodes), ipv6=FamilyHealth() if topo.backbone6 else None)
    # Which node does each BGP peer address belong to, from one router's view.
    addr_owner: dict[str, str] = {}
    for n in topo.routers:
        addr_owner[str(n.loopback)] = n.name
        for i in n.interfaces:
            addr_owner[str(i.address)] = n.name
    for n in topo.nodes.values():
        if n.service == "ha":
            addr_owner[str(n.interfaces[0].address)] = n.name
    up: dict[frozenset[str], list[bool]] = {}
    up6: dict[frozenset[str], list[bool]] = {}
    for node in topo.routers:
        ex, rd = execs[node.name], rundirs[node.name]
        kinds = daemons_for(node, topo)
        try:
            if "ospfd" in kinds:
                h.ospf_expected += len(topo.ospf_neighbors(node.name))
                h.ospf_full += ospf_full(ex, rd)
            if "bgpd" in kinds:
                for addr, state in bgp_peers(ex, rd).items():
                    pair = frozenset((node.name, addr_owner.get(addr, addr)))
                    up.setdefault(pair, []).append(state == "Established")
            if h.ipv6 is not None:
                _check6(topo, node, ex, rd, h.ipv6, up6, addr_owner)
            if node.role is Role.CORE:
                cluster_len = topo.clusters[0].prefix.prefixlen
                h.core_leaks += [
                    f"{node.name}:{p}" for p in bgp_prefixes(ex, rd)
                    if p.subnet_of(topo.managed) and p.prefixlen > cluster_len
                ]
        except (LabError, subprocess.TimeoutExpired) as exc:
            h.problems.append(f"{node.name}: {exc}")
    h.problems += agent_problems(topo, rundirs)
    expected = sessions(topo)
    h.bgp_total = len(expected)
    h.bgp_established = sum(1 for s in expected if up.get(s) and all(up[s]))
    if h.ipv6 is not None:
        h.ipv6.bgp_total = len(expected)
        h.ipv6.bgp_established = sum(1 for s in expected if up6.get(s) and all(up6[s]))
    if ping:
        cn = execs[topo.service("cn").name]
        ars = topo.by_role(Role.AR)
        h.pools_total = len(ars)
        h.pools_ok = sum(ping_many(cn, [str(a.pool_gateway) for a in ars]).values())
        if h.ipv6 is not None:
            targets = [str(a.pool6.network_address + 1) for a in ars if a.pool6]
            h.ipv6.pools_total = len(ars)
            h.ipv6.pools_ok = sum(ping_many(cn, targets).values())
    return h


def _check6(topo: Topology, node: Node, ex: NodeExec, rd: Path, h6: FamilyHealth,
            up6: dict[frozenset[str], list[bool]], addr_owner: dict[str, str]) -> None:
    """One router's IPv6 side: OSPFv3 adjacencies, the IPv6 family on each BGP session
    (the sessions are the IPv4 ones, docs/ipv6.md), a core's IPv6 more-specifics."""
    kinds = daemons_for(node, topo)
    if "ospf6d" in kinds:
        h6.ospf_expected += len(topo.ospf_neighbors(node.name))
        h6.ospf_full += ospf_full(ex, rd, "ospf6d")
    if "bgpd" in kinds:
        for addr, state in bgp_peers(ex, rd, "ipv6").items():
            pair = frozenset((node.name, addr_owner.get(addr, addr)))
            up6.setdefault(pair, []).append(state == "Established")
    if node.role is Role.CORE and topo.plan6 is not None:
        managed = topo.plan6.block("addressing.ipv6.managed").network
        cluster6 = topo.clusters[0].prefix6
        assert cluster6 is not None and isinstance(managed, ipaddress.IPv6Network)
        h6.core_leaks += [f"{node.name}:{p}" for p in bgp_prefixes6(ex, rd)
                          if p.subnet_of(managed) and p.prefixlen > cluster6.prefixlen]


def agent_problems(topo: Topology, rundirs: dict[str, Path]) -> list[str]:
    """Services an AR or HA agent reports as failed (authentication, DHCP, the netlink
    monitor): a lab whose agent cannot authenticate is not healthy, whatever BGP says."""
    out: list[str] = []
    for node in topo.nodes.values():
        if "agent" not in daemons_for(node, topo):
            continue
        try:
            status = json.loads((rundirs[node.name] / Layout.AGENT_STATUS).read_text())
        except (OSError, ValueError):
            continue  # not written yet: the agent is still starting
        for service, state in sorted((status.get("services") or {}).items()):
            if str(state).startswith(ServiceState.FAILED):
                out.append(f"{node.name}: {service} service {state}")
    return out


def ping_many(ex: NodeExec, targets: list[str], count: int = 2) -> dict[str, bool]:
    """Ping every target in parallel from one node; True where any reply came back."""
    procs = {
        t: subprocess.Popen(
            ex.argv(["ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", "1", t]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for t in targets
    }
    return {t: p.wait(timeout=15) == 0 for t, p in procs.items()}


def progress_line(h: Health) -> str:
    v6 = h.ipv6
    return (
        f"OSPF {h.ospf_full}/{h.ospf_expected} full, "
        f"BGP {h.bgp_established}/{h.bgp_total} established"
        + (f"; OSPFv3 {v6.ospf_full}/{v6.ospf_expected} full, IPv6 BGP "
           f"{v6.bgp_established}/{v6.bgp_total} established" if v6 is not None else "")
    )

