"""What the integration modules share: the Figure-2 lab of a module, reading a node's agent
state (its status snapshot, its event log, its control socket), and zone surgery."""

from __future__ import annotations

import contextlib
import copy
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.rdatatype
import dns.zone
import yaml

from agents import udpstream
from agents.contract import Layout, read_events
from topologies import model
from topologies.lab.daemons import vtysh, wait_until
from topologies.lab.lab import Lab

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def udp_receiver(lab: Lab, node: str, out: Path) -> Iterator[Path]:
    """The idle tests' numbered-datagram receiver on ``node`` (both families), once it
    listens; its lines go to ``out``."""
    with lab.background(node, [sys.executable, "-m", "agents.udpstream", "recv"], out):
        wait_until(lambda: out.exists() and "listening" in out.read_text(), 10, "receiver")
        yield out


def udp_stream(lab: Lab, target: str, first: int, count: int) -> None:
    """``count`` numbered datagrams from the CN to ``target``, 5 ms apart."""
    res = lab.execs["cn"].run([sys.executable, "-m", "agents.udpstream", "send", target,
                               "--count", str(count), "--interval", "0.005",
                               "--first", str(first)], timeout=30)
    assert res.returncode == 0, res.stderr


def received(path: Path, first: int) -> list[int]:
    """The sequence numbers from ``first`` on that the receiver wrote, in arrival order."""
    return [r.seq for r in udpstream.parse(path.read_text())
            if r.kind == "recv" and r.seq >= first]


def figure2_lab(mode: str | None = "redirect") -> Iterator[Lab]:
    """The body of a module-scoped lab fixture: Figure 2, converged, every MN attached."""
    topo = model.load(ROOT / "topologies" / "figure2.yaml")
    with Lab(topo, ready_timeout=120) as running:
        if mode is not None:
            running.set_mode(mode)
        yield running


def population_source(where: Path, mobiles: int, seed: int, **population: Any) -> Path:
    """Figure 2 with a population of ``mobiles`` (scenarios.population.derived_topology,
    given ``population``'s dhcp and lease), written under ``where``."""
    from topologies.scenarios.population import derived_topology

    doc = yaml.safe_load((ROOT / "topologies" / "figure2.yaml").read_text())
    path = where / "population.yaml"
    path.write_text(yaml.safe_dump(derived_topology(doc, mobiles, seed, **population),
                                   sort_keys=False))
    return path


def redirect_lab(source: Path) -> Iterator[Lab]:
    """The body of a module-scoped lab fixture: the topology at ``source``, converged, in
    redirect mode."""
    with Lab(model.load(source), ready_timeout=120) as running:
        running.set_mode("redirect")
        yield running


def dualstack_mn_lab() -> Iterator[Lab]:
    """The body of a module-scoped lab fixture: Figure 2 with mn1 dual-stack on its planned
    prefix and mn3 on /64s delegated by DHCPv6 (issue 18)."""
    doc = copy.deepcopy(yaml.safe_load((ROOT / "topologies" / "figure2.yaml").read_text()))
    doc["addressing"]["ipv6"]["mobiles"] = ["mn1"]
    doc["dhcp"]["ipv6"] = ["mn3"]
    with Lab(model.build(doc), ready_timeout=120) as running:
        running.set_mode("redirect")
        yield running


def status(lab: Lab, node: str) -> dict[str, Any]:
    """An agent's status snapshot (rewritten every 0.5 s: read it only through a wait)."""
    return dict(json.loads((lab.rundir(node) / Layout.AGENT_STATUS).read_text()))


def events(lab: Lab, node: str) -> list[dict[str, Any]]:
    return read_events(lab.rundir(node) / Layout.EVENTS)


def why_unreachable(lab: Lab, address: str, ars: tuple[str, ...] = ("ar1", "ar2"),
                    routers: tuple[str, ...] = ("agg1", "agg2", "core1")) -> str:
    """A failure's report for an MN address the CN cannot reach: each node's kernel route to
    it, the reflectors' BGP paths, and the ARs' last decisions about it."""
    lines = []
    for node in (*ars, *routers):
        out = lab.execs[node].run(["ip", "route", "show", "table", "all", "match", address])
        lines.append(f"--- {node} routes matching {address}:\n{out.stdout}")
    for node in routers[:2]:
        bgp = vtysh(lab.execs[node], lab.rundir(node), f"show bgp ipv4 unicast {address}/32")
        lines.append(f"--- {node} BGP {address}/32:\n{bgp}")
    for node in ars:
        mine = [e for e in events(lab, node) if address in json.dumps(e)]
        lines.append(f"--- {node} events:\n" + "\n".join(json.dumps(e) for e in mine[-16:]))
    return "\n".join(lines)


def mn_request(lab: Lab, mn: str, cmd: str, **args: Any) -> dict[str, Any]:
    """A command to an MN agent's control socket that must succeed."""
    answer = lab.control(mn).request({"cmd": cmd, **args}, timeout=30)
    assert answer.get("ok"), answer
    return answer


DNSSEC_TYPES = frozenset({dns.rdatatype.RRSIG, dns.rdatatype.NSEC, dns.rdatatype.DNSKEY,
                          dns.rdatatype.CDS, dns.rdatatype.CDNSKEY})


def strip_dnssec(zone: dns.zone.Zone) -> None:
    """Remove every DNSSEC record from ``zone``: what an unsigned copy of it would serve."""
    for node in zone.nodes.values():
        for rds in list(node.rdatasets):
            if rds.rdtype in DNSSEC_TYPES:
                node.rdatasets.remove(rds)
