"""Links with distance in a running lab: the topology's per-direction attributes laid on the
interfaces after the links are built and before any daemon starts. Where the kernel has
netem it does delay, jitter and loss (HTB the rate, as Mininet's TCLink); where it has not
(docs/links.md) HTB does the rate, iptables' statistic the loss and the delay line
(agents/delayline.py, one process, the `delayline` daemon) the delay and jitter.

The home network's distance (`home:` in the YAML) is a delay on flows, not on an interface:
its servers (BIND for the MNs' home zones, the baseline's HSS) share nodes with the ISP's
own, so their packets on the node's loopback go through the delay line, on either kernel.

With no attribute configured nothing is applied: no qdisc, no rule, no process.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents import delayline, epc
from agents.contract import NAMED_PORT
from topologies.lab.daemons import ForegroundDaemon, NodeExec
from topologies.model import Topology
from topologies.model.links import LinkAttributes
from topologies.render.configs import render

NETEM, NFQUEUE = "netem", "nfqueue"
NETEM_LIMIT = 10_000  # packets netem holds (its default, 1,000, is 0.1 s at 10,000 pps)
IPTABLES_RESTORE = "iptables-legacy-restore"  # legacy: iptables-nft would ask for nft queue
# The same rules for IPv6: a queue is one per number whatever the family, so the delay line
# holds both families' packets on a link in one order (a dual-stack lab's /64s measured at
# distance took no delay before: 0.135 ms CN-MN RTT against IPv4's 56.7 ms).
IP6TABLES_RESTORE = "ip6tables-legacy-restore"


class DelayLineDaemon(ForegroundDaemon):
    """The one delay line of a lab; its config names each queue's namespace by path."""

    kind = "delayline"
    ready_timeout = 20.0

    def __init__(self, node: str, rundir: Path, config: str,
                 python: str = sys.executable) -> None:
        super().__init__(node, rundir, config)
        self.python = python

    @property
    def conf_path(self) -> Path:
        return self.rundir / "delayline.json"

    def argv(self) -> list[str]:
        return [self.python, "-m", "agents.delayline", "--config", str(self.conf_path),
                "--rundir", str(self.rundir)]

    def check_cmd(self) -> list[str]:
        return [*self.argv(), "--check"]

    def ready(self, ex: NodeExec) -> bool:
        self.exited()
        return self.alive() and (self.rundir / delayline.READY_FILE).exists()


def netem_available(ex: NodeExec) -> bool:
    """Whether this kernel has netem: a netem qdisc tried on the node's loopback, removed."""
    res = ex.run(["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "0ms"])
    if res.returncode != 0:
        return False
    ex.run(["tc", "qdisc", "del", "dev", "lo", "root"])
    return True


def shaping_data(attrs: Mapping[tuple[str, str], LinkAttributes], netem: bool,
                 first_queue: int = 0) -> dict[str, dict[str, Any]]:
    """Per node, the plain data of its templates: each shaped interface's numbers and, for
    the delay line, its queue number (unique in the lab, so a log names one queue)."""
    out: dict[str, dict[str, Any]] = {}
    queue = first_queue
    for (node, dev), a in sorted(attrs.items()):
        delayed = a.delayed and not netem
        entry = {
            "dev": dev,
            "rate_mbit": _num(a.rate_mbit),
            "delay_ms": _num(a.delay_ms or 0.0),
            "jitter_ms": _num(a.jitter_ms or 0.0),
            "loss_pct": _num(a.loss_pct or 0.0),
            "netem": bool(a.delayed or a.loss_pct),
            "queue": queue if delayed else None,
        }
        queue += int(delayed)
        out.setdefault(node, {"netem": netem, "limit": NETEM_LIMIT, "interfaces": []})
        out[node]["interfaces"].append(entry)
    return out


def _num(v: float | None) -> float | int | None:
    """Whole numbers print as integers in the commands (10, not 10.0)."""
    if v is None:
        return None
    return int(v) if float(v).is_integer() else v


def render_tc(data: Mapping[str, Any]) -> str:
    return render("links/tc.batch.j2", data)


def render_iptables(data: Mapping[str, Any]) -> str:
    return render("links/iptables.rules.j2", data)


def delayline_links(data: Mapping[str, Mapping[str, Any]],
                    netns: Mapping[str, str]) -> list[dict[str, Any]]:
    """The delay line's config entries: every queued interface with its node's namespace."""
    return [{"name": f"{node}/{i['dev']}", "netns": netns[node], "queue": i["queue"],
             "delay_ms": float(i["delay_ms"]), "jitter_ms": float(i["jitter_ms"])}
            for node, d in data.items() for i in d["interfaces"] if i["queue"] is not None]


@dataclass(frozen=True)
class HomeFlow:
    """One home-network server's traffic on its node's loopback: the packets to it and its
    answers, each direction delayed by the home distance (as a link's two directions)."""

    proto: str
    port: int
    address: str | None = None  # the server's address; None: any on the loopback


@dataclass(frozen=True)
class HomeDistance:
    attrs: LinkAttributes
    flows: Mapping[str, Sequence[HomeFlow]]  # node -> its home servers' flows


def home_distance(topo: Topology) -> HomeDistance | None:
    """Where the home network's servers are and how far: BIND as the server of the MNs'
    home zones (Unbound reaches it there on the DNS node's own address, the other zones on
    127.0.0.1), and the baseline's HSS on the anchor node (the MME asks it on 127.0.0.1)."""
    if not topo.home_link.delayed:
        return None
    flows: dict[str, list[HomeFlow]] = {}
    services = {n.service: n for n in topo.nodes.values() if n.service}
    if "dns" in services:
        dns = services["dns"]
        address = str(dns.interfaces[0].address)
        flows[dns.name] = [HomeFlow(proto, NAMED_PORT, address) for proto in ("udp", "tcp")]
    if "pgw" in services:
        flows[services["pgw"].name] = [HomeFlow("udp", epc.HSS_PORT)]
    return HomeDistance(topo.home_link, flows)


def home_data(home: HomeDistance, first_queue: int) -> dict[str, dict[str, Any]]:
    """Per node, the plain data of its home rules, shaped as shaping_data's entries (so the
    delay line's config comes from the same delayline_links)."""
    out: dict[str, dict[str, Any]] = {}
    for queue, (node, flows) in enumerate(sorted(home.flows.items()), first_queue):
        out[node] = {"interfaces": [{
            "dev": "lo", "queue": queue, "delay_ms": _num(home.attrs.delay_ms or 0.0),
            "jitter_ms": _num(home.attrs.jitter_ms or 0.0),
            "flows": [{"proto": f.proto, "port": f.port, "address": f.address}
                      for f in flows]}]}
    return out


def render_home_iptables(data: Mapping[str, Any]) -> str:
    return render("links/home.rules.j2", data)


@dataclass
class Applied:
    """What `up` laid on the links: the mechanism (recorded), the delay line if any."""

    mechanism: str | None = None
    daemon: DelayLineDaemon | None = None
    nodes: list[str] = field(default_factory=list)
    home: dict[str, Any] = field(default_factory=dict)  # the home distance and its nodes

    def record(self) -> dict[str, Any]:
        return {"mechanism": self.mechanism, "delayline": self.daemon is not None,
                "nodes": self.nodes, **({"home": self.home} if self.home else {})}


def apply(attrs: Mapping[tuple[str, str], LinkAttributes], execs: Mapping[str, NodeExec],
          labdir: Path, progress: Callable[[str], None],
          netns: Mapping[str, str] | None = None, home: HomeDistance | None = None) -> Applied:
    """Lay the attributes on the interfaces and the home distance on its flows; return the
    delay line to start (not started). ``netns`` names each node's namespace by path
    (default: its shell's, under /proc)."""
    if home is not None and not home.flows:
        home = None
    if not attrs and home is None:
        return Applied()
    first = min({n for n, _ in attrs} | set(home.flows if home else ()))
    netem = netem_available(execs[first])
    mechanism = NETEM if netem and attrs else NFQUEUE
    data = shaping_data(attrs, netem)
    hdata = home_data(home, sum(i["queue"] is not None for d in data.values()
                                for i in d["interfaces"])) if home else {}
    for node, hd in hdata.items():
        rd = labdir / node
        rd.mkdir(parents=True, exist_ok=True)
        (rd / "home.iptables").write_text(render_home_iptables(hd))
        execs[node].check([IPTABLES_RESTORE, "--noflush", str(rd / "home.iptables")])
    for node, nd in data.items():
        rd = labdir / node
        rd.mkdir(parents=True, exist_ok=True)
        tc = render_tc(nd)
        if tc.strip():
            (rd / "links.tc").write_text(tc)
            execs[node].check(["tc", "-batch", str(rd / "links.tc")])
        if not netem and any(i["loss_pct"] or i["queue"] is not None for i in nd["interfaces"]):
            (rd / "links.iptables").write_text(render_iptables(nd))
            for restore in (IPTABLES_RESTORE, IP6TABLES_RESTORE):
                execs[node].check([restore, "--noflush", str(rd / "links.iptables")])
    applied = Applied(mechanism, None, sorted(data))
    if home is not None:
        applied.home = {**home.attrs.as_dict(), "nodes": sorted(hdata)}
    paths = netns or {n: f"/proc/{execs[n].pid}/ns/net" for n in {*data, *hdata}}
    entries = delayline_links(data, paths) + delayline_links(hdata, paths)
    if entries:
        d = DelayLineDaemon(first, labdir / "delayline", json.dumps({"links": entries},
                                                                     indent=1))
        d.write()
        d.dry_run()
        applied.daemon = d
    what = f"{len(attrs)} link directions on {len(data)} nodes"
    if home is not None:
        what += (f", the home network {2 * (home.attrs.delay_ms or 0.0):g} ms RTT away "
                 f"({', '.join(sorted(hdata))})")
    progress(f"links: {what} shaped by {mechanism}"
             + (f", delay line holds {len(entries)}" if entries else ""))
    return applied
