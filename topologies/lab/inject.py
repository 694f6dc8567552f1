"""Faults in a running lab and their repair: a daemon killed by pid (checked by identity) and
started again, ExaBGP restarted by the lab's supervisor so that a new AR agent recovers from
its saved state, a link of a node taken down and up. The faults scenario and tests use these.
"""

from __future__ import annotations

import os
import signal
import time

from agents.contract import Layout
from topologies.lab.daemons import AgentProcess, Daemon, LabError, read_pid, wait_until
from topologies.lab.lab import Lab

READY_S = 60.0  # a restarted daemon (an agent that re-reads DNS keys) ready within this


def daemon(lab: Lab, node: str, kind: str) -> Daemon:
    """The lab's daemon of ``kind`` in ``node``."""
    for d in lab.daemons.get(node, []):
        if d.kind == kind:
            return d
    raise LabError(f"{node} runs no {kind}")


def kill(lab: Lab, node: str, kind: str, sig: int = signal.SIGKILL) -> float:
    """Signal the daemon's own process (a pid its pid file names and its identity confirms),
    wait until it is gone; returns when it was signalled."""
    d = daemon(lab, node, kind)
    pid = d.pid()
    if pid is None:
        raise LabError(f"{node}/{kind} is not running")
    t = time.time()
    os.kill(pid, sig)
    wait_until(lambda: not _exists(pid), 10, f"{node}/{kind} (pid {pid}) to die", 0.05)
    return t


def _exists(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[-1][:1] not in ("Z", "X")
    except OSError:
        return False


def start(lab: Lab, node: str, kind: str) -> float:
    """Start the daemon again as the lab did, and wait until it is ready; returns when ready."""
    d = daemon(lab, node, kind)
    ex = lab.execs[node]
    d.start(ex)
    wait_until(lambda: d.ready(ex), READY_S, f"{node}/{kind} to be ready again", 0.1)
    return time.time()


def agent_pid(lab: Lab, node: str) -> int | None:
    return read_pid(lab.rundir(node) / Layout.AGENT_PID)


def restart_exabgp(lab: Lab, node: str) -> float:
    """The supervisor's part after ExaBGP died: its agent exits on the closed pipe (keeping
    the kernel's routes), then ExaBGP starts again and spawns a new agent, which recovers
    from the saved state. Returns when the new agent answers."""
    agent = daemon(lab, node, AgentProcess.kind)
    wait_until(lambda: agent.pid() is None, 15, f"{node}'s agent to exit after ExaBGP", 0.05)
    start(lab, node, "exabgp")
    return wait_agent(lab, node, None)


def wait_agent(lab: Lab, node: str, old_pid: int | None) -> float:
    """Until an agent other than ``old_pid`` answers on the node's control socket."""
    agent = daemon(lab, node, AgentProcess.kind)
    ex = lab.execs[node]

    def fresh() -> bool:
        pid = agent.pid()
        return pid is not None and pid != old_pid and agent.ready(ex)

    wait_until(fresh, READY_S, f"a new agent on {node}", 0.1)
    return time.time()


def kill_agent(lab: Lab, node: str) -> tuple[float, float]:
    """SIGKILL the AR agent; ExaBGP respawns its API process. (killed at, new one ready at)."""
    old = daemon(lab, node, AgentProcess.kind).pid()
    t = kill(lab, node, AgentProcess.kind)
    return t, wait_agent(lab, node, old)


def set_link(lab: Lab, node: str, ifname: str, up: bool) -> float:
    """``ip link set dev IFNAME down|up`` in the node's namespace; returns when done."""
    lab.execs[node].check(["ip", "link", "set", "dev", ifname, "up" if up else "down"])
    return time.time()


def link_toward(lab: Lab, node: str, peer: str) -> str:
    """The name of ``node``'s interface on its link to ``peer``."""
    for i in lab.topo.nodes[node].interfaces:
        if i.peer == peer:
            return i.name
    raise LabError(f"no link between {node} and {peer}")
