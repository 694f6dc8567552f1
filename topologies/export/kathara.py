"""`flatarch export kathara`: a Kathará lab (lab.conf: a device per node, a collision
domain per link and per cell's access link), per-device directories holding the rendered
configs and keys, a <device>.startup per device in the lab's daemon order, and the recipe
of the image every device runs. The same lab deploys on Kubernetes through Megalos.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from topologies.export.plan import (
    IMAGE_PYTHON,
    IMAGE_ROOT,
    MODES_FILE,
    ExportError,
    ExportNode,
    ExportPlan,
    rundir,
)
from topologies.export.stage import in_image, stage
from topologies.lab.radio import AIR
from topologies.model import Topology
from topologies.render.configs import render

ROOT = Path(__file__).resolve().parents[2]
RECIPE_DIR = "_image"  # no node may be called that (names start with a letter)
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# What a node runs, from Debian, and nothing more: the daemons, the startups' tools (ip,
# bridge, nft; setsid and timeout from util-linux and coreutils; dig for BIND's readiness),
# the MN's busybox udhcpc, ping and ps. Left out: what only our engine's scenarios, benches,
# captures and shaping run (iperf3, traceroute, tcpdump, iptables), modules (kmod: a
# container loads none) and a DHCP client no node runs (isc-dhcp-client).
NODE_DEBS = ("frr", "bind9", "bind9-utils", "bind9-dnsutils", "unbound", "iputils-ping",
             "nftables", "iproute2", "procps", "python3", "python3-venv", "busybox",
             "dnsmasq-base", "util-linux", "coreutils")
HOST_ONLY = {"mininet", "matplotlib"}  # the project's dependencies no node imports


def devices(plan: ExportPlan) -> list[ExportNode]:
    """Every node but the radio: on Kathará an access link is a collision domain."""
    return [n for n in plan.nodes.values() if n.name != AIR]


def short_names(plan: ExportPlan) -> dict[str, str]:
    """Collision domain names of at most 4 characters, as Megalos requires: l<base36> per
    link, c<base36> per access link, in the order the devices first name them."""
    out: dict[str, str] = {}
    counts = {"l": 0, "c": 0}
    for node in devices(plan):
        for port in node.ports:
            if port.domain not in out:
                prefix = "c" if port.domain.startswith("acc-") else "l"
                out[port.domain] = f"{prefix}{_base36(counts[prefix]):0>3}"
                counts[prefix] += 1
    return out


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    if n >= 36 ** 3:
        raise ExportError(f"{n + 1} collision domains of one kind: Megalos names hold 3 digits")
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if not n:
            return out


def lab_conf_data(topo: Topology, plan: ExportPlan) -> dict[str, Any]:
    short = short_names(plan)
    return {
        "name": topo.name,
        "image": plan.image,
        "ipv6": topo.plan6 is not None,
        "domains": [{"short": v, "name": k} for k, v in short.items()],
        "devices": [{"name": n.name, "ports": [short[p.domain] for p in n.ports],
                     "sysctls": [f"{k}={v}" for k, v in n.sysctls.items()]}
                    for n in devices(plan)],
    }


def startup_data(topo: Topology, node: ExportNode) -> dict[str, Any]:
    return {
        "name": node.name,
        "topology": topo.name,
        "renames": [{"index": i, "name": p.name} for i, p in enumerate(node.ports)],
        "modes": str(rundir(topo, node.name) / MODES_FILE),
        "kinds": node.kinds,
        "steps": [{"why": s.why, "command": s.command} for s in node.steps],
    }


def node_requirements() -> list[str]:
    """The project's Python dependencies a node needs (pyproject.toml, less HOST_ONLY)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [d for d in project["dependencies"]
            if d.split(">")[0].split("<")[0].split("=")[0].strip() not in HOST_ONLY]


def image_data(plan: ExportPlan) -> dict[str, Any]:
    return {
        "image": plan.image, "suite": DEBIAN_SUITE, "mirror": DEBIAN_MIRROR,
        "debs": list(NODE_DEBS), "requirements": node_requirements(),
        "root": str(IMAGE_ROOT), "python": IMAGE_PYTHON,
    }


def write(topo: Topology, plan: ExportPlan, out: Path) -> list[Path]:
    """lab.conf, the startups and the image recipe; the device directories' configs are
    staged separately (topologies/export/stage.py)."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "lab.conf"]
    written[0].write_text(render("export/kathara-lab.conf.j2", lab_conf_data(topo, plan)))
    for node in devices(plan):
        path = out / f"{node.name}.startup"
        path.write_text(render("export/kathara.startup.j2", startup_data(topo, node)))
        written.append(path)
    recipe = out / RECIPE_DIR / "build-image.sh"
    recipe.parent.mkdir(exist_ok=True)
    recipe.write_text(render("export/build-image.sh.j2", image_data(plan)))
    recipe.chmod(0o755)
    written.append(recipe)
    return written


def export(topo: Topology, plan: ExportPlan, out: Path, configs: bool = True) -> list[Path]:
    """The whole Kathará lab under ``out``: with ``configs``, each device's directory
    holds its run directory where Kathará copies it, at the path our engine uses."""
    written = write(topo, plan, out)
    if configs:
        stage(topo, plan, {n.name: out / n.name / in_image(rundir(topo, n.name))
                           for n in devices(plan)})
    return written
