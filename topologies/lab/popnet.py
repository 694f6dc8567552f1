"""A population's attachment in a running lab (issue 15): one namespace for all its MNs,
one veth per MN from it into the radio (so a handoff is still a real L2 move of that MN's
own port), and the one agent process (agents/population.py) that authenticates them all.

Measured against a namespace per MN (500 MNs, this machine): 0.31 s and 69 kB per MN for
the shared namespace with a routing table per MN, 5.0 s and 439 kB per MN for namespaces.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from agents import control
from agents.contract import Layout
from agents.population import FIRST_AUTH_DEADLINE_S
from topologies.lab.daemons import LabError, MnAgentProcess, NodeExec
from topologies.lab.lab import Lab
from topologies.lab.radio import AIR, BRIDGE_PORTS
from topologies.model import Role, TopologyError
from topologies.render import population as render_population
from topologies.render.identities import POPULATION_DIR

POP = "pop"  # the population namespace's node name
# One namespace holds every MN's address: each must answer ARP only on its own interface and
# announce only its own address there, or every port in a cell would claim every MN.
SYSCTLS = ("net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2",
           "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
           "net.ipv4.conf.default.arp_ignore=1", "net.ipv4.conf.default.arp_announce=2",
           # Neighbour discovery answers on the receiving interface already; what is left is
           # keeping a thousand ports from soliciting routers and probing their link-locals
           # (unique: each from its own veth's MAC) at once. The AR's RA after a handoff is
           # the named MN's business; the population reads the AUTH_REPLY's lists.
           "net.ipv6.conf.all.accept_ra=0", "net.ipv6.conf.default.accept_ra=0",
           "net.ipv6.conf.default.accept_dad=0")
# Every IPv6 interface costs the kernel's global work: its link-local's multicast listener
# reports (each flooded to every port of its cell), and the address checks that walk every
# IPv6 address of the machine under the routing lock the agents and zebra need. A cell's
# ports are layer 2 only and never need IPv6; an IPv4 population's interfaces neither. At
# 6,000 MNs these kept the CPU in softirq and kernel workers and the first AUTHs past 300 s.
AIR_SYSCTLS = ("net.ipv6.conf.default.disable_ipv6=1",)
IPV4_ONLY_SYSCTLS = ("net.ipv6.conf.all.disable_ipv6=1",
                     "net.ipv6.conf.default.disable_ipv6=1")
REQUEST_TIMEOUT_S = 10.0  # one MN's handoff: five AUTH tries of 0.3 s, and a busy loop
# A rotation: a lease (AddressManager.acquire allows 15 s), then a release confirmed or not.
ROTATE_TIMEOUT_S = 25.0
BATCH_TIMEOUT_S, BATCH_S_PER_MN = 15.0, 0.02  # the population's interface batches
FIRST_AUTH_S_PER_MN = 0.05  # the bring-up's deadline past the 1,000 MNs
FIRST_AUTH_SPARE_S = 60.0  # the last MN's tries and the answer, past the deadline
# The kernel's neighbour tables are one per family for the whole machine, every namespace's
# entries counted against limits that only the initial namespace can set. A population MN
# costs up to four: its gateway in the population namespace, its address and link-local at
# its AR, and the old AR's until it ages out. Past gc_thresh3 (1,024 for IPv6 by default)
# new entries are refused in every namespace: at 1,000 dual-stack MNs OSPFv3 neighbours and
# BGP next hops flapped on every router, and /64 re-routes took 30 s.
NEIGH_PER_MN = 4
NEIGH_SPARE = 2048  # the rest of the lab: backbone link-locals, named MNs, the CN's probes
NEIGH_SYSCTL = "/proc/sys/net/{family}/neigh/default/gc_thresh{n}"
# The share of a cell's bridge ports a population may fill at home (the rest: the walk's
# crowding of some cells, the named MNs, the AR's own port).
CELL_SHARE = 0.9
CELL_CAP = int(BRIDGE_PORTS * CELL_SHARE)


def check_cells(homes: Counter[str], ars: int) -> None:
    """Refuse a population whose cells would overflow: a cell is a bridge (radio.py)."""
    most = max(homes.values(), default=0)
    if most > CELL_CAP:
        raise LabError(
            f"population: {most} MNs homed at one AR; a cell is a Linux bridge of at most "
            f"{BRIDGE_PORTS} ports, so at most {CELL_CAP} per AR are allowed (room for the "
            f"moves): about {CELL_CAP * ars} MNs on {ars} ARs")


class NeighbourLimits:
    """Raises the machine's neighbour-table limits to what a population needs, and puts
    back on restore what it changed, unless someone else has changed it since."""

    def __init__(self, mobiles: int, families: tuple[str, ...] = ("ipv4", "ipv6"),
                 path: str = NEIGH_SYSCTL) -> None:
        self.need = NEIGH_PER_MN * mobiles + NEIGH_SPARE
        self.families = families
        self.path = path
        self.changed: list[tuple[Path, int, int]] = []  # (file, before, ours)

    def raise_(self) -> list[str]:
        """Soft limit (gc_thresh2) to the need, hard limit (gc_thresh3) to twice it; what
        was raised, as "ipv6 gc_thresh3 1024 -> 12096"."""
        out = []
        for family in self.families:
            for n, want in ((2, self.need), (3, 2 * self.need)):
                p = Path(self.path.format(family=family, n=n))
                before = int(p.read_text())
                if before < want:
                    p.write_text(f"{want}\n")
                    self.changed.append((p, before, want))
                    out.append(f"{family} gc_thresh{n} {before} -> {want}")
        return out

    def restore(self) -> None:
        for p, before, ours in reversed(self.changed):
            with contextlib.suppress(OSError, ValueError):
                if int(p.read_text()) == ours:
                    p.write_text(f"{before}\n")
        self.changed = []


class PopulationAgent(MnAgentProcess):
    """The population agent, in the population's namespace: an MN agent's files, start and
    readiness (its control socket answers), for every MN of the population at once."""

    kind = "population"
    ready_timeout = 60.0

    def __init__(self, rundir: Path, config: str) -> None:
        super().__init__(POP, rundir, config, sys.executable)

    def argv(self) -> list[str]:
        return [self.python, "-m", "agents.population", "--rundir", str(self.rundir),
                "--config", str(self.conf_path)]


class PopulationNet:
    """Brings a lab's `population:` up beside its named MNs, and moves its MNs."""

    def __init__(self, lab: Lab, ipv6: bool = False) -> None:
        if not lab.topo.population_nodes:
            raise LabError("the topology has no population: (see docs/scale.md)")
        if lab.radio is None or lab.dns is None:
            raise LabError("a population needs the radio and the DNS plane: the topology "
                           "must list named mobiles and services.dns")
        check_cells(Counter(m.home for m in lab.topo.population_nodes.values()),
                    len(lab.topo.by_role(Role.AR)))
        self.lab = lab
        self.radio = lab.radio
        self.ipv6 = ipv6  # dual-stack: every MN claims its /64 beside its /32 (issue 18)
        try:
            self.members = render_population.members(lab.topo, ipv6)
        except TopologyError as exc:
            raise LabError(str(exc)) from None
        self.rundir = lab.dir / POPULATION_DIR
        self.agent: PopulationAgent | None = None
        self.timings: dict[str, float] = {}
        self.neighbours = NeighbourLimits(len(self.members))

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.members]

    def _timed(self, step: str, t0: float) -> float:
        now = time.monotonic()
        self.timings[step] = round(now - t0, 3)
        return now

    def start(self) -> dict[str, Any]:
        """Namespace, ports, addresses, agent, then every MN's first AUTH at home; the time
        of each step (the issue's `up_s` is their sum)."""
        from mininet.node import Node as MnNode

        lab, t = self.lab, time.monotonic()
        t_start = t
        self.rundir.mkdir(parents=True, exist_ok=True)
        for change in self.neighbours.raise_():
            lab.progress(f"population: neighbour table limit {change} (restored at the end)")
        host = lab.net.addHost(POP, cls=MnNode, ip=None, inNamespace=True)
        ex = lab.execs[POP] = NodeExec(POP, host.pid)
        lab._write_state()  # so that `flatarch down` removes the namespace after a crash
        for key in (*SYSCTLS, *(() if self.ipv6 else IPV4_ONLY_SYSCTLS)):
            ex.check(["sysctl", "-q", "-w", key])
        for key in AIR_SYSCTLS:  # before the batch creates the ports
            lab.execs[AIR].check(["sysctl", "-q", "-w", key])
        files = render_population.render_batches(lab.topo, host.pid, self.ipv6)
        for kind, text in files.items():
            (self.rundir / f"{kind}.batch").write_text(text)
        # A rule's insertion walks the rules before it: 10,000 MNs' batch took 19 s here.
        timeout = BATCH_TIMEOUT_S + BATCH_S_PER_MN * len(self.members)
        lab.execs[AIR].check(["ip", "-batch", str(self.rundir / "air.batch")], timeout)
        ex.check(["ip", "-batch", str(self.rundir / "population.batch")], timeout)
        if "population6" in files:
            ex.check(["ip", "-6", "-batch", str(self.rundir / "population6.batch")], timeout)
        t = self._timed("links_s", t)
        # The batch put every port into its home cell; the radio learns where they are.
        self.radio.where.update({m.name: m.home for m in self.members})
        t = self._timed("radio_s", t)
        keys = lab.rundir(lab.mobiles[0]) / Layout.AR_KEYS
        hook = self.rundir / Layout.UDHCPC_HOOK
        hook.write_text(render_population.render_hook())
        hook.chmod(0o755)
        assert lab.dns is not None
        cfg = render_population.agent_config(lab.topo, lab.dir, keys, self.ipv6,
                                             lab.dns.tsig_path, hook)
        self.agent = PopulationAgent(self.rundir, cfg.to_json())
        self.agent.write()
        self.agent.dry_run()
        lab._track(self.agent.pid_path, self.agent.marker)
        lab.start_daemons({POP: [self.agent]}, classes={PopulationAgent.kind: PopulationAgent})
        t = self._timed("agent_s", t)
        lab.progress(f"population: first authentication of {len(self.members)} MNs at home")
        # 3,000 MNs took 75 s here: the 120 s for 1,000, twice that rate beyond.
        deadline = max(FIRST_AUTH_DEADLINE_S, FIRST_AUTH_S_PER_MN * len(self.members))
        answer = self.request({"cmd": "attach_all", "deadline_s": deadline},
                              timeout=deadline + FIRST_AUTH_SPARE_S)
        self._timed("first_auth_s", t)
        self.timings["up_s"] = round(time.monotonic() - t_start, 3)
        if not answer.get("ok"):
            raise LabError(f"population: {answer.get('failed_count')} MNs did not "
                           f"authenticate at home: {json.dumps(answer.get('failed'))}")
        return dict(self.timings)

    def request(self, req: dict[str, Any], timeout: float = REQUEST_TIMEOUT_S) -> dict[str, Any]:
        try:
            return control.request(self.rundir / Layout.CONTROL, req, timeout)
        except control.ControlError as exc:
            raise LabError(f"population agent: {exc}") from None

    def move(self, mn: str, ar: str) -> dict[str, float]:
        """The L2 move alone (the radio); the AUTH follows with ``attach``."""
        return self.radio.move(mn, ar)

    def attach(self, mn: str, ar: str) -> dict[str, Any]:
        return self.request({"cmd": "attach", "mn": mn, "ar": ar})

    def rotate(self, mn: str) -> dict[str, Any]:
        """A DHCP member's new address at its AR, its older ones released (draft 2.3)."""
        return self.request({"cmd": "rotate", "mn": mn}, timeout=ROTATE_TIMEOUT_S)

    @property
    def dhcp_members(self) -> list[str]:
        return [m.name for m in self.members if m.address is None]

    def leased(self) -> dict[str, list[str]]:
        """Each DHCP member's addresses now, newest first."""
        answer = self.request({"cmd": "leased"})
        leased = answer.get("leased")
        return dict(leased) if isinstance(leased, dict) else {}

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.stop()
            self.agent = None
        self.neighbours.restore()
