"""What every exported node runs, in order: its interface setup, then its daemons sorted by
their declarations (``Daemon.after``, ``start_order``), as shell-free command lines with the
paths they have inside the image. Both exporters lay these steps out in their own format.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from agents.contract import access_ifname
from topologies.lab.daemons import (
    AgentProcess,
    Daemon,
    ExaBgp,
    ForegroundDaemon,
    LabError,
    MnAgentProcess,
    Zebra,
    start_order,
)
from topologies.lab.dnsplane import Named, Unbound
from topologies.lab.lab import DAEMON_CLASSES, LISTEN_PORTS
from topologies.lab.radio import AIR, air_ifname, bridge_name
from topologies.model import ISP_ZONE, Node, Role, Topology
from topologies.render.configs import cells, daemons_for

# Where the image holds this project and its interpreter (configs/export/build-image.sh.j2).
IMAGE_ROOT = PurePosixPath("/opt/flatarch")
IMAGE_PYTHON = str(IMAGE_ROOT / ".venv" / "bin" / "python")
IMAGE_EXABGP = str(IMAGE_ROOT / ".venv" / "bin" / "exabgp")
IMAGE = "flatarch/node:latest"
CONTAINER_RUN = PurePosixPath("/run/flatarch")
# In a device's run directory: "MODE PATH" for each staged file whose mode is not 0644.
# Kathará copies a device's files into its container without their modes, so its startup
# puts them back (the DHCP hook must be executable, keys readable by root only).
MODES_FILE = ".modes"
DEFAULT_MODE = 0o644
READY_TIMEOUT_S = 60  # how long a startup waits for a daemon its followers need
ROUTER_SYSCTLS = ("net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0",
                  "net.ipv4.conf.default.rp_filter=0", "net.ipv4.icmp_ratelimit=0")
HA_SYSCTLS = ("net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0",
              "net.ipv4.conf.default.rp_filter=0")


class ExportError(LabError):
    """A topology that cannot be exported as asked (a bad split, a drifted declaration)."""


@dataclass(frozen=True)
class Wire:
    """A point-to-point link: (node, interface) at each end."""

    a: str
    a_if: str
    b: str
    b_if: str


@dataclass
class ExportNode:
    name: str
    kinds: list[str]  # daemon kinds in start order
    ports: list[Port] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Port:
    """One interface of an exported node: its kernel name in our engine and its link."""

    name: str
    domain: str  # the link or access domain it joins (a Kathará collision domain)


@dataclass(frozen=True)
class Step:
    """One command a node runs at start, and why (the startup files carry the why)."""

    why: str
    command: str


@dataclass
class ExportPlan:
    topo: str
    nodes: dict[str, ExportNode]
    wires: list[Wire]  # containerlab: every link, the radio's included, as a veth pair
    access: dict[str, str]  # Kathará: MN -> the access domain of its home cell
    image: str = IMAGE


def lab_dir(topo: Topology) -> PurePosixPath:
    return CONTAINER_RUN / topo.name


def rundir(topo: Topology, node: str) -> PurePosixPath:
    """A node's run directory inside its container: the path our own engine uses."""
    return lab_dir(topo) / node


def access_domain(cell: str) -> str:
    return f"acc-{cell}"


def has_mobiles(topo: Topology) -> bool:
    """MNs run only with a DNS plane (they authenticate through it), as in our own engine."""
    return bool(topo.mobiles) and any(n.service == "dns" for n in topo.nodes.values())


def declared_daemons(topo: Topology, where: Callable[[str], Path]) -> dict[str, list[Daemon]]:
    """The daemons of every node as the lab declares them, with the image's interpreter;
    ``where`` gives each node's run directory. Configs are left empty: only commands and
    order are read from these."""
    build: dict[str, Callable[[Node, Path], Daemon]] = {
        "exabgp": lambda n, rd: ExaBgp(n.name, rd, "", IMAGE_EXABGP),
        "agent": lambda n, rd: AgentProcess(
            n.name, rd, "", "agents.ha" if n.service == "ha" else "agents.ar", IMAGE_PYTHON),
    }
    out: dict[str, list[Daemon]] = {}
    for node in topo.nodes.values():
        rd = where(node.name)
        out[node.name] = [build[k](node, rd) if k in build else DAEMON_CLASSES[k](node.name, rd, "")
                          for k in daemons_for(node, topo)]
        if node.service == "dns":
            out[node.name] += [Named(node.name, rd, ""), Unbound(node.name, rd, "")]
    if has_mobiles(topo):
        for mn in topo.mobiles:
            out[mn] = [MnAgentProcess(mn, where(mn), "", IMAGE_PYTHON)]
    return out


def _env_prefix(d: Daemon) -> list[str]:
    """The variables a daemon adds to the environment it inherits (ExaBGP's settings)."""
    env = d.env()
    if env is None:
        return []
    extra = sorted(f"{k}={v}" for k, v in env.items() if os.environ.get(k) != v)
    return ["env", *extra] if extra else []


def daemon_steps(d: Daemon) -> list[Step]:
    """How one daemon starts in a container: a daemonizing one by its own command, a
    foreground one detached with a pid file that records it, a spawned one not at all."""
    if d.spawned_by is not None:
        return []
    if isinstance(d, ForegroundDaemon):
        inner = f"echo $$ > {shlex.quote(str(d.pid_path))}; exec {shlex.join(d.argv())}" \
                f" >> {shlex.quote(str(d.log_path))} 2>&1"
        steps = [Step(f"{d.kind}: in the foreground, detached", shlex.join(
            ["setsid", "-f", "sh", "-c", inner]))]
    else:
        steps = [Step(f"{d.kind}: daemonizes", shlex.join([*_env_prefix(d), *d.start_cmd()]))]
    ready = _ready(d)
    if ready:
        why, test = ready
        steps.append(Step(f"{d.kind}: wait until {why}", shlex.join(
            ["timeout", str(READY_TIMEOUT_S), "sh", "-c",
             f"until {test}; do sleep 0.1; done"])))
    return steps


def _ready(d: Daemon) -> tuple[str, str] | None:
    """The shell test of a readiness the next kinds depend on (the lab's own ``ready``):
    zebra's API socket, which ospfd and bgpd register at; BIND serving the root and the
    ISP zone signed, so that Unbound never primes its trust anchor against a half-signed
    tree. Other kinds retry by themselves (BGP reconnects, agents retry their resolver)."""
    if isinstance(d, Zebra):
        return "its API socket exists", f"[ -e {shlex.quote(str(d.rundir / 'zserv.api'))} ]"
    if isinstance(d, Named):
        dig = shlex.join(["dig", "@127.0.0.1", "-p", str(d.port), "+norec", "+dnssec",
                          "+tries=1", "+time=1", "+noall", "+answer", ".", "SOA",
                          ISP_ZONE, "SOA"])
        return "the root and ISP zones are served signed", \
            f"[ \"$({dig} | grep -cw RRSIG)\" -ge 2 ]"
    return None


def sysctls(node: Node | None) -> dict[str, str]:
    """What our engine sets in a namespace (Lab._reserve_ports, Lab._configure), as the
    engines' own per-container sysctls: a container may not write /proc/sys itself."""
    ports = ",".join(str(p) for p in sorted(LISTEN_PORTS))
    out = {"net.ipv4.ip_local_reserved_ports": ports}
    # Explicit for every node: Kathará's defaults make every device a router.
    values = (ROUTER_SYSCTLS if node is not None and node.is_router else
              HA_SYSCTLS if node is not None and node.service == "ha" else
              ("net.ipv4.ip_forward=0",))
    for v in values:
        key, _, value = v.partition("=")
        out[key] = value
    return out


def _ip_batch(rd: PurePosixPath) -> Step:
    return Step("addresses and routes", shlex.join(["ip", "-batch", str(rd / "ip.batch")]))


def setup_steps(node: Node, rd: PurePosixPath, owners: set[str]) -> list[Step]:
    """What our engine does to a node before its daemons (Lab._configure)."""
    steps = [_ip_batch(rd)]
    if node.role is Role.AR:
        steps += [Step("the overlay's static entries",
                       shlex.join(["bridge", "-batch", str(rd / "overlay.bridge")])),
                  Step("the access filter", shlex.join(["nft", "-f", str(rd / "ar.nft")]))]
    for owner in sorted(owners):
        steps.append(Step(f"{owner} owns the run directory",
                          shlex.join(["chown", "-R", f"{owner}:{owner}", str(rd)])))
    return steps


def _ports(topo: Topology, node: Node) -> list[Port]:
    ports = [Port(i.name, link_domain(topo, node.name, i.peer)) for i in node.interfaces]
    if has_mobiles(topo) and node.name in cells(topo):
        ports.append(Port(access_ifname(node.name), access_domain(node.name)))
    return ports


def link_domain(topo: Topology, a: str, b: str) -> str:
    """A link's name, the same from either end: its two nodes in model order."""
    lk = next(lk for lk in topo.links if {lk.a, lk.b} == {a, b})
    return f"{lk.a}-{lk.b}"


def build_plan(topo: Topology) -> ExportPlan:
    declared = declared_daemons(topo, lambda n: Path(str(rundir(topo, n))))
    nodes: dict[str, ExportNode] = {}
    for name, ds in declared.items():
        order = start_order([d.kind for d in ds], DAEMON_CLASSES)
        by_kind = {d.kind: d for d in ds}
        rd = rundir(topo, name)
        if name in topo.nodes:
            node = topo.nodes[name]
            owners = {o for d in ds if (o := d.owner)}
            en = ExportNode(name, order, _ports(topo, node), setup_steps(node, rd, owners),
                            sysctls(node))
        else:  # a mobile node
            en = ExportNode(name, order, [Port(f"{name}-eth0", access_domain(
                topo.mobile(name).home))], [_ip_batch(rd)], sysctls(None))
        for kind in order:
            en.steps += daemon_steps(by_kind[kind])
        nodes[name] = en
    wires = [Wire(lk.a, next(i.name for i in topo.nodes[lk.a].interfaces if i.peer == lk.b),
                  lk.b, next(i.name for i in topo.nodes[lk.b].interfaces if i.peer == lk.a))
             for lk in topo.links]
    access: dict[str, str] = {}
    if has_mobiles(topo):
        nodes[AIR] = _air(topo)
        wires += [Wire(c, access_ifname(c), AIR, air_ifname(c)) for c in cells(topo)]
        wires += [Wire(mn, f"{mn}-eth0", AIR, air_ifname(mn)) for mn in topo.mobiles]
        access = {mn: access_domain(topo.mobile(mn).home) for mn in topo.mobiles}
    return ExportPlan(topo.name, nodes, wires, access)


def _air(topo: Topology) -> ExportNode:
    """containerlab's radio: the node our engine has, a bridge per cell, each MN's port in
    its home cell's bridge. Kathará needs none: its collision domains are the cells."""
    steps = [_ip_batch(rundir(topo, AIR))]
    steps += [Step(f"{mn} at home", shlex.join(
        ["ip", "link", "set", air_ifname(mn), "master", bridge_name(topo.mobile(mn).home)]))
        for mn in topo.mobiles]
    return ExportNode(AIR, [], [], steps, sysctls(None))


def check_staged(plan: ExportPlan, staged: Mapping[str, list[str]]) -> None:
    """The kinds a real lab prepared must be the ones the plan starts: a new daemon in the
    lab that the exporter does not know is an error here, not a silent omission."""
    for name, kinds in staged.items():
        planned = plan.nodes[name].kinds if name in plan.nodes else None
        if planned is None or sorted(planned) != sorted(kinds):
            raise ExportError(f"{name}: the lab prepares {sorted(kinds)} but the export "
                              f"starts {sorted(planned or [])}")


def relink_steps(topo: Topology, mn: str) -> list[Step]:
    """What an MN runs after a runtime re-link to another cell's collision domain (the
    radio move on Kathará): the new interface takes the MN's interface name and the MN's
    addresses and routes return; its agent is then told to attach, as in our engine."""
    find = ("k=$(ls /sys/class/net | grep -E '^net[0-9]+$' | head -1); "
            "[ -n \"$k\" ] || k=$(ls /sys/class/net | grep -E '^eth[0-9]+$' | head -1); "
            f"ip link set \"$k\" name {shlex.quote(f'{mn}-eth0')}")
    return [Step("the new access interface takes the MN's name",
                 shlex.join(["sh", "-c", find])), _ip_batch(rundir(topo, mn))]
