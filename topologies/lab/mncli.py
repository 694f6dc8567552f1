"""Mininet CLI with lab commands: vtysh, routes, bgp, lping, health, handoff, idle, mode.

Mininet's own syntax still works (`ar1 ip route`); these add the FRR view of a node
and pings by node name, resolved to the node's loopback or host address.
"""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

from mininet.cli import CLI

from topologies.lab import health
from topologies.lab.daemons import LabError, vtysh

if TYPE_CHECKING:
    from topologies.lab.lab import Lab


class LabCli(CLI):  # type: ignore[misc]
    prompt = "flatarch> "

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        super().__init__(lab.net)

    def _node(self, name: str) -> str | None:
        if name not in self.lab.topo.nodes:
            print(f"no node {name!r}; nodes: {' '.join(self.lab.topo.nodes)}")
            return None
        return name

    def _vtysh(self, name: str, *cmds: str) -> None:
        if "zebra" not in {d.kind for d in self.lab.daemons.get(name, [])}:
            print(f"{name} runs no FRR")
            return
        try:
            print(vtysh(self.lab.execs[name], self.lab.rundir(name), *cmds), end="")
        except LabError as exc:
            print(exc)

    def do_vtysh(self, line: str) -> None:
        """vtysh NODE COMMAND...: run one vtysh command in a node's FRR."""
        name, _, cmd = line.strip().partition(" ")
        if self._node(name) and cmd:
            self._vtysh(name, cmd)

    def do_routes(self, line: str) -> None:
        """routes NODE: FRR's RIB (routers) and the kernel FIB of a node."""
        name = line.strip()
        if not self._node(name):
            return
        if self.lab.topo.nodes[name].is_router:
            self._vtysh(name, "show ip route")
        print("--- kernel ---")
        print(self.lab.execs[name].run(["ip", "-4", "route"]).stdout, end="")

    def do_bgp(self, line: str) -> None:
        """bgp NODE: BGP sessions and table (FRR routers) or the AR agent's view."""
        name = line.strip()
        if not self._node(name):
            return
        status = self.lab.rundir(name) / "agent.status.json"
        if status.exists():
            print(status.read_text())
        else:
            self._vtysh(name, "show bgp ipv4 unicast summary", "show bgp ipv4 unicast")

    def do_lping(self, line: str) -> None:
        """lping SRC DST [COUNT]: ping from SRC to DST (an AR's pool address, else loopback)."""
        parts = line.split()
        if len(parts) < 2 or not self._node(parts[0]) or not self._node(parts[1]):
            print("usage: lping SRC DST [COUNT]")
            return
        dst = self.lab.topo.nodes[parts[1]]
        # An AR's pool address is reachable from outside the AS; loopbacks are internal.
        addr = dst.pool_gateway if dst.pool else dst.loopback or dst.interfaces[0].address
        count = parts[2] if len(parts) > 2 else "3"
        subprocess.call(self.lab.execs[parts[0]].argv(["ping", "-c", count, str(addr)]))

    def do_handoff(self, line: str) -> None:
        """handoff MN AR: move the MN's radio link to AR; it authenticates there."""
        parts = line.split()
        if len(parts) != 2:
            print(f"usage: handoff MN AR   (MNs: {' '.join(self.lab.mobiles)})")
            return
        try:
            rec = self.lab.handoff(parts[0], parts[1])
        except LabError as exc:
            print(exc)
            return
        if not rec.get("ok"):
            print(f"authentication failed: {rec.get('error')}")
            return
        print(f"{rec['mn']}: {rec['from']} -> {rec['to']}: authenticated in "
              f"{rec['auth_ms']:.1f} ms; re-routed {', '.join(rec['rerouted']) or 'nothing'}"
              + (f"; NOT re-routed {', '.join(rec['not_rerouted'])}"
                 if rec["not_rerouted"] else ""))

    def do_idle(self, line: str) -> None:
        """idle MN: the MN goes idle at its AR; it may then move inside its Tracking Area
        List without signalling, and is paged when a packet arrives for it."""
        mn = line.strip()
        if mn not in self.lab.mobiles:
            print(f"usage: idle MN   (MNs: {' '.join(self.lab.mobiles)})")
            return
        try:
            answer = self.lab.control(mn).request({"cmd": "idle"})
        except LabError as exc:
            print(exc)
            return
        if answer.get("ok"):
            print(f"{mn} is idle at {answer['ar']}; Tracking Area List: "
                  f"{' '.join(answer.get('tal') or [])}")
        else:
            print(f"{mn} could not go idle: {answer.get('error')}")

    def do_addr(self, line: str) -> None:
        """addr MN [rotate | release ADDRESS | in_use]: a DHCP MN's addresses (draft 2.3):
        list them newest first, take a fresh one where the MN is, give one back, or show
        how many connections use each."""
        parts = line.split()
        if not parts or parts[0] not in self.lab.mobiles or len(parts) > 3:
            print(f"usage: addr MN [rotate | release ADDRESS | in_use]   "
                  f"(MNs: {' '.join(self.lab.mobiles)})")
            return
        mn, *rest = parts
        req: dict[str, str] = {"cmd": rest[0] if rest else "status"}
        if rest[:1] == ["release"]:
            if len(rest) != 2:
                print("usage: addr MN release ADDRESS")
                return
            req["address"] = rest[1]
        try:
            answer = self.lab.control(mn).request(req, timeout=30)
        except LabError as exc:
            print(exc)
            return
        if not answer.get("ok"):
            print(f"{mn}: {answer.get('error')}")
        elif "in_use" in answer:
            for a, n in answer["in_use"].items():
                print(f"{a}: {n} connection(s)")
        else:
            print(f"{mn}: {', '.join(answer.get('addresses') or []) or 'no address'} "
                  "(newest first)")

    def do_mode(self, line: str) -> None:
        """mode redirect|draft: how ARs hand off (fast redirect, or BGP only as in the draft)."""
        try:
            self.lab.set_mode(line.strip())
        except LabError as exc:
            print(exc)

    def do_health(self, line: str) -> None:
        """health: the `flatarch up --check` table for the running lab."""
        h = health.check(self.lab.topo, self.lab.execs, self.lab.rundirs())
        print(h.table())
