"""Drive a Kathará export through Kathará's own API (so the same on Docker and, through
Megalos, on Kubernetes): deploy, the routing status read from each router's vtysh, a
handoff as a runtime re-link of the MN between cells' collision domains, undeploy.

Kathará (PyPI `kathara`, the project's `docker` extra) is imported only when used; its
settings live in the lab directory, never in the user's ~/.config.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from topologies.export import kathara
from topologies.export.plan import (
    IMAGE,
    IMAGE_PYTHON,
    ExportError,
    access_domain,
    build_plan,
    relink_steps,
    rundir,
)
from topologies.model import Role, Topology
from topologies.render.configs import cells

SETTINGS_DIR = ".kathara"  # Kathará's settings file, beside lab.conf
NETWORK_PLUGIN = "kathara/katharanp_vde"
# Where the errors Kathará lets through come from: its own (no common base class) and its
# Docker and Kubernetes clients'.
KATHARA_MODULES = ("Kathara", "docker", "kubernetes", "requests", "urllib3")


@contextmanager
def kathara_errors() -> Iterator[None]:
    """Kathará's errors as ExportError, so that a verb reports them in one line."""
    try:
        yield
    except ExportError:
        raise
    except Exception as exc:
        if not type(exc).__module__.startswith(KATHARA_MODULES):
            raise
        raise ExportError(f"Kathará: {type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True)
class Routing:
    """Every BGP session and OSPF adjacency of the lab, as its routers report them."""

    bgp_established: int
    bgp_sessions: int
    ospf_full: int
    ospf_adjacencies: int
    # What is not up, as "router peer state" and "router: n/m OSPF Full": which session a
    # snapshot caught down says more than a count.
    down: tuple[str, ...] = ()

    @property
    def converged(self) -> bool:
        return (self.bgp_sessions > 0 and self.bgp_established == self.bgp_sessions
                and self.ospf_full == self.ospf_adjacencies)

    def line(self) -> str:
        down = f" (not up: {', '.join(self.down)})" if self.down else ""
        return (f"BGP {self.bgp_established}/{self.bgp_sessions} Established, "
                f"OSPF {self.ospf_full}/{self.ospf_adjacencies} Full{down}")


class KatharaLab:
    """One exported lab directory and the Kathará instance that runs it."""

    def __init__(self, topo: Topology, labdir: Path, image: str = IMAGE) -> None:
        self.topo = topo
        self.labdir = labdir
        self.image = image
        self.short = kathara.short_names(build_plan(topo))
        self._manager: Any = None

    def manager(self) -> Any:
        if self._manager is None:
            try:
                import Kathara.setting.Setting as settings
                from Kathara.manager.Kathara import Kathara
            except ImportError:
                raise ExportError("Kathará is not installed: pip install -e '.[docker]'") \
                    from None
            where = self.labdir / SETTINGS_DIR
            where.mkdir(exist_ok=True)
            settings.DEFAULT_SETTINGS_PATH = str(where / "kathara.conf")
            settings.Setting.get_instance().load_from_dict({
                "image": self.image, "manager_type": "docker", "open_terminals": False,
                "image_update_policy": "Never", "hosthome_mount": False,
                "shared_mount": False, "last_checked": time.time(),
                "print_startup_log": False, "network_plugin": NETWORK_PLUGIN,
            })
            self._manager = Kathara.get_instance()
        return self._manager

    def deploy(self) -> None:
        api = self.manager()
        from Kathara.parser.netkit.LabParser import LabParser

        api.deploy_lab(LabParser.parse(str(self.labdir)))

    def undeploy(self) -> None:
        self.manager().undeploy_lab(lab_name=self.topo.name)

    def run(self, device: str, argv: list[str]) -> tuple[int, str, str]:
        """(exit status, stdout, stderr) of a command in a device."""
        out, err, code = self.manager().exec(device, shlex.join(argv), lab_name=self.topo.name,
                                             stream=False)
        return int(code), (out or b"").decode(errors="replace"), \
            (err or b"").decode(errors="replace")

    def vtysh(self, device: str, command: str) -> Any:
        _, out, _ = self.run(device, ["vtysh", "--vty_socket", str(rundir(self.topo, device)),
                                      "-c", command])
        try:
            return json.loads(out or "{}")
        except json.JSONDecodeError:
            return {}

    def control(self, device: str, request: dict[str, Any]) -> dict[str, Any]:
        """A request to an agent's control socket, from inside its device."""
        code = ("import json, sys; from agents import control; print(json.dumps("
                "control.request(sys.argv[1], json.loads(sys.argv[2]), timeout=10)))")
        sock = str(rundir(self.topo, device) / "control.sock")
        status, out, err = self.run(device, [IMAGE_PYTHON, "-c", code, sock,
                                             json.dumps(request)])
        try:
            answer: dict[str, Any] = json.loads(out)
        except json.JSONDecodeError:
            return {"ok": False, "error": (err or f"exit {status}").strip()[-300:]}
        return answer

    def routing(self) -> Routing:
        bgp_up = bgp = full = adjacencies = 0
        down: list[str] = []
        for n in self.topo.routers:
            if n.role is not Role.AR:  # an AR's sessions are its ExaBGP's: its aggs see them
                peers = self.vtysh(n.name, "show bgp summary json").get("ipv4Unicast", {})
                states = {a: p.get("state") for a, p in peers.get("peers", {}).items()}
                bgp += len(states)
                bgp_up += list(states.values()).count("Established")
                down += [f"{n.name} {a} {st}" for a, st in sorted(states.items())
                         if st != "Established"]
            if n.role is not Role.INET:
                nbrs = self.vtysh(n.name, "show ip ospf neighbor json").get("neighbors", {})
                want = len(self.topo.ospf_neighbors(n.name))
                have = sum(any(x.get("nbrState", "").startswith("Full") for x in v)
                           for v in nbrs.values())
                adjacencies, full = adjacencies + want, full + have
                if have != want:
                    down.append(f"{n.name}: {have}/{want} OSPF Full")
        return Routing(bgp_up, bgp, full, adjacencies, tuple(down))

    def attach(self, mn: str, ar: str) -> dict[str, Any]:
        return self.control(mn, {"cmd": "attach", "ar": ar})

    def cell_of(self, mn: str) -> str:
        """The cell whose access domain the MN's device is linked to now."""
        cell_of = {short: name.removeprefix("acc-") for name, short in self.short.items()
                   if name.startswith("acc-")}
        lab = self.manager().get_lab_from_api(lab_name=self.topo.name)
        for iface in lab.get_machine(mn).interfaces.values():
            if iface.link.name in cell_of:
                return cell_of[iface.link.name]
        raise ExportError(f"{mn} is linked to no cell")

    def relink(self, mn: str, src: str, dst: str) -> None:
        """The radio move: the MN leaves ``src``'s access domain for ``dst``'s, and its new
        interface gets the MN's name, addresses and routes back."""
        for cell in (src, dst):
            if cell not in cells(self.topo):
                raise ExportError(f"{cell!r} is not an access router or the visited network")
        api = self.manager()
        lab = api.get_lab_from_api(lab_name=self.topo.name)
        machine = lab.get_machine(mn)
        api.disconnect_machine_from_link(machine, lab.get_link(self.short[access_domain(src)]))
        # Kathará 3.8.3 keeps a disconnected interface's number as an empty slot, then gives
        # the next interface number len(slots): on a lab read back from its containers, that
        # number can be taken, and a second handoff fails. An MN has one interface: dropping
        # the empty slots gives it the first number again.
        machine.interfaces = type(machine.interfaces)(
            (n, i) for n, i in machine.interfaces.items() if i is not None)
        api.connect_machine_to_link(machine, lab.get_link(self.short[access_domain(dst)]))
        for step in relink_steps(self.topo, mn):
            status, _, err = self.run(mn, ["sh", "-c", step.command])
            if status != 0:
                raise ExportError(f"{mn}: {step.why}: {err.strip()[:300]}")

    def handoff(self, mn: str, dst: str) -> dict[str, Any]:
        """Re-link, then let the MN authenticate at ``dst``; the wall-clock times and the
        AR's answer, as `flatarch handoff` reports them."""
        src = self.cell_of(mn)
        if src == dst:
            raise ExportError(f"{mn} is already attached to {dst}")
        t0 = time.time()
        self.relink(mn, src, dst)
        t_radio = time.time()
        answer = self.attach(mn, dst)
        return {"mn": mn, "from": src, "to": dst, "t_radio_start": t0, "t_radio": t_radio,
                **answer}
