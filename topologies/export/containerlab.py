"""`flatarch export containerlab`: a *.clab.yml of `kind: linux` nodes with their rendered
configs bind-mounted and their start commands as `exec`, every link a veth pair; with a
split, one file per host, the links between hosts `vxlan-stitch` tunnels.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from topologies.export.plan import ExportError, ExportPlan, rundir
from topologies.export.stage import stage
from topologies.model import Topology
from topologies.render.configs import render

CONFIG_DIR = "configs"  # beside the topology file: one directory per node, bind-mounted
VNI_BASE = 10_000  # stitched links' VNIs: clear of the lab's own (the overlay's, the HA's)
STITCH_PORT = 14789  # their UDP port, clear of a host's own VXLAN on 4789


@dataclass(frozen=True)
class Host:
    name: str
    address: str  # the VTEP address other hosts reach it at
    nodes: tuple[str, ...]


def parse_split(spec: str, nodes: list[str]) -> list[Host]:
    """``NAME@ADDRESS=node,node;...`` (or ``ADDRESS=...``): every node on exactly one host."""
    hosts: list[Host] = []
    seen: dict[str, str] = {}
    for part in (p.strip() for p in spec.split(";")):
        if not part:
            continue
        head, eq, members = part.partition("=")
        name, _, address = head.partition("@")
        address = address or name
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ExportError(f"--split {part!r}: a host needs an address, NAME@ADDRESS "
                              "(its VTEP for the stitched links)") from None
        listed = [m.strip() for m in members.split(",") if m.strip()]
        if not eq or not listed:
            raise ExportError(f"--split {part!r}: expected NAME@ADDRESS=node,node,...")
        for m in listed:
            if m not in nodes:
                raise ExportError(f"--split: {m!r} is not a node of the export")
            if m in seen:
                raise ExportError(f"--split: {m!r} is on both {seen[m]} and {name}")
            seen[m] = name
        hosts.append(Host(name, address, tuple(listed)))
    missing = [n for n in nodes if n not in seen]
    if missing:
        raise ExportError(f"--split: no host for {', '.join(missing)}")
    if len({h.name for h in hosts}) != len(hosts):
        raise ExportError("--split: a host is named twice")
    return hosts


def clab_data(topo: Topology, plan: ExportPlan, host: Host | None = None,
              hosts: list[Host] | None = None) -> dict[str, Any]:
    """One topology file's data: the whole lab, or the part on ``host``."""
    mine = set(host.nodes) if host else set(plan.nodes)
    where = {n: h for h in hosts or [] for n in h.nodes}
    links: list[dict[str, Any]] = []
    stitched: list[dict[str, Any]] = []
    for i, w in enumerate(plan.wires):
        ends = [(w.a, w.a_if, w.b), (w.b, w.b_if, w.a)]
        if w.a in mine and w.b in mine:
            links.append({"endpoints": [f"{w.a}:{w.a_if}", f"{w.b}:{w.b_if}"]})
            continue
        for node, ifname, peer in ends:
            if node in mine:
                stitched.append({"node": node, "interface": ifname, "vni": VNI_BASE + i,
                                 "remote": where[peer].address, "port": STITCH_PORT})
    return {
        "name": f"{topo.name}-{host.name}" if host else topo.name,
        "topology": topo.name,
        "host": host.name if host else "",
        "image": plan.image,
        "nodes": [{"name": n.name, "binds": [f"{CONFIG_DIR}/{n.name}:{rundir(topo, n.name)}"],
                   "exec": [s.command for s in n.steps], "sysctls": n.sysctls}
                  for n in plan.nodes.values() if n.name in mine],
        "links": links,
        "stitched": stitched,
    }


def render_clab(data: dict[str, Any]) -> str:
    return render("export/clab.yml.j2", data)


def write(topo: Topology, plan: ExportPlan, out: Path, split: str | None = None) -> list[Path]:
    """The topology file(s) under ``out``; the configs they bind are staged separately."""
    out.mkdir(parents=True, exist_ok=True)
    if split is None:
        path = out / f"{topo.name}.clab.yml"
        path.write_text(render_clab(clab_data(topo, plan)))
        return [path]
    hosts = parse_split(split, list(plan.nodes))
    paths = []
    for h in hosts:
        path = out / f"{topo.name}-{h.name}.clab.yml"
        path.write_text(render_clab(clab_data(topo, plan, h, hosts)))
        paths.append(path)
    return paths


def export(topo: Topology, plan: ExportPlan, out: Path, split: str | None = None,
           configs: bool = True) -> list[Path]:
    """The topology file(s) and, with ``configs``, each node's run directory under
    configs/ beside them (with a split, copy the directory to every host)."""
    written = write(topo, plan, out, split)
    if configs:
        stage(topo, plan, {n: out / CONFIG_DIR / n for n in plan.nodes})
    return written
