"""A population's attachment in a running lab (issue 15): one namespace for all its MNs,
one veth per MN from it into the radio (so a handoff is still a real L2 move of that MN's
own port), and the one agent process (agents/population.py) that authenticates them all.

Measured against a namespace per MN (500 MNs, this machine): 0.31 s and 69 kB per MN for
the shared namespace with a routing table per MN, 5.0 s and 439 kB per MN for namespaces.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from agents import control
from agents.contract import Layout
from topologies.lab.daemons import LabError, MnAgentProcess, NodeExec
from topologies.lab.lab import Lab
from topologies.lab.radio import AIR
from topologies.render import population as render_population
from topologies.render.identities import POPULATION_DIR

POP = "pop"  # the population namespace's node name
# One namespace holds every MN's address: each must answer ARP only on its own interface and
# announce only its own address there, or every port in a cell would claim every MN.
SYSCTLS = ("net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2",
           "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
           "net.ipv4.conf.default.arp_ignore=1", "net.ipv4.conf.default.arp_announce=2")
REQUEST_TIMEOUT_S = 10.0  # one MN's handoff: five AUTH tries of 0.3 s, and a busy loop


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

    def __init__(self, lab: Lab) -> None:
        if not lab.topo.population_nodes:
            raise LabError("the topology has no population: (see docs/scale.md)")
        if lab.radio is None or lab.dns is None:
            raise LabError("a population needs the radio and the DNS plane: the topology "
                           "must list named mobiles and services.dns")
        self.lab = lab
        self.radio = lab.radio
        self.members = render_population.members(lab.topo)
        self.rundir = lab.dir / POPULATION_DIR
        self.agent: PopulationAgent | None = None
        self.timings: dict[str, float] = {}

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
        host = lab.net.addHost(POP, cls=MnNode, ip=None, inNamespace=True)
        ex = lab.execs[POP] = NodeExec(POP, host.pid)
        lab._write_state()  # so that `flatarch down` removes the namespace after a crash
        for key in SYSCTLS:
            ex.check(["sysctl", "-q", "-w", key])
        files = render_population.render_batches(lab.topo, host.pid)
        for kind, text in files.items():
            (self.rundir / f"{kind}.batch").write_text(text)
        lab.execs[AIR].check(["ip", "-batch", str(self.rundir / "air.batch")])
        ex.check(["ip", "-batch", str(self.rundir / "population.batch")])
        t = self._timed("links_s", t)
        # The batch put every port into its home cell; the radio learns where they are.
        self.radio.where.update({m.name: m.home for m in self.members})
        t = self._timed("radio_s", t)
        keys = lab.rundir(lab.mobiles[0]) / Layout.AR_KEYS
        cfg = render_population.agent_config(lab.topo, lab.dir, keys)
        self.agent = PopulationAgent(self.rundir, cfg.to_json())
        self.agent.write()
        self.agent.dry_run()
        lab._track(self.agent.pid_path, self.agent.marker)
        lab.start_daemons({POP: [self.agent]}, classes={PopulationAgent.kind: PopulationAgent})
        t = self._timed("agent_s", t)
        lab.progress(f"population: first authentication of {len(self.members)} MNs at home")
        answer = self.request({"cmd": "attach_all"}, timeout=300.0)
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

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.stop()
            self.agent = None
