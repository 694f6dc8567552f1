"""Health of a running lab, read from the daemons themselves (vtysh JSON, ping).

Produces the contract's `up --check` record: BGP sessions, OSPF adjacencies, pool
reachability from the CN, and whether core routers hold only cluster aggregates.
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
from topologies.model import Role, Topology
from topologies.render.configs import daemons_for


@dataclass
class Health:
    nodes: int
    bgp_established: int = 0
    bgp_total: int = 0
    ospf_full: int = 0
    ospf_expected: int = 0
    pools_ok: int = 0
    pools_total: int = 0
    core_leaks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def converged(self) -> bool:
        return (
            self.bgp_established == self.bgp_total
            and self.ospf_full == self.ospf_expected
            and not self.problems
        )

    @property
    def healthy(self) -> bool:
        return self.converged and self.pools_ok == self.pools_total and not self.core_leaks

    def as_json(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "nodes": self.nodes,
            "bgp_sessions": {"established": self.bgp_established, "total": self.bgp_total},
            "ospf_full": self.ospf_full == self.ospf_expected,
            "ospf_adjacencies": {"full": self.ospf_full, "expected": self.ospf_expected},
            "pools_reachable": {"ok": self.pools_ok, "total": self.pools_total},
            "core_more_specifics": self.core_leaks,
            "problems": self.problems,
        }

    def table(self) -> str:
        rows = [
            ("nodes", str(self.nodes), ""),
            ("BGP sessions established", f"{self.bgp_established}/{self.bgp_total}",
             _ok(self.bgp_established == self.bgp_total)),
            ("OSPF adjacencies full", f"{self.ospf_full}/{self.ospf_expected}",
             _ok(self.ospf_full == self.ospf_expected)),
            ("AR pools reachable from CN", f"{self.pools_ok}/{self.pools_total}",
             _ok(self.pools_ok == self.pools_total)),
            ("core holds only aggregates", str(len(self.core_leaks)) + " leaks",
             _ok(not self.core_leaks)),
        ]
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


def ospf_full(ex: NodeExec, rundir: Path) -> int:
    data = _json(ex, rundir, "show ip ospf neighbor json")
    count = 0
    for entries in (data.get("neighbors") or {}).values():
        for e in entries if isinstance(entries, list) else [entries]:
            state = str(e.get("nbrState") or e.get("state") or "")
            if state.startswith("Full"):
                count += 1
    return count


def bgp_peers(ex: NodeExec, rundir: Path) -> dict[str, str]:
    data = _json(ex, rundir, "show bgp ipv4 unicast summary json")
    peers = (data.get("ipv4Unicast") or data).get("peers") or {}
    return {addr: str(p.get("state", "")) for addr, p in peers.items()}


def bgp_prefixes(ex: NodeExec, rundir: Path) -> list[ipaddress.IPv4Network]:
    data = _json(ex, rundir, "show bgp ipv4 unicast json")
    return [ipaddress.IPv4Network(p) for p in (data.get("routes") or {})]


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
    h = Health(nodes=len(topo.nodes))
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
    if ping:
        cn = execs[topo.service("cn").name]
        ars = topo.by_role(Role.AR)
        h.pools_total = len(ars)
        h.pools_ok = sum(ping_many(cn, [str(a.pool_gateway) for a in ars]).values())
    return h


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
    return (
        f"OSPF {h.ospf_full}/{h.ospf_expected} full, "
        f"BGP {h.bgp_established}/{h.bgp_total} established"
    )

