"""The lab's radio: one bridge per AR in an `air` namespace; a handoff moves the MN's port.

Every AR has one access interface (`<ar>-acc`) into its own bridge, like one cell; every MN's
single interface (`<mn>-eth0`) has its far end (`air-<mn>`) in the bridge of the AR it is
attached to. A handoff re-parents that port to another bridge: a real L2 change that takes
well under a millisecond, where moving a veth between namespaces costs 15 to 45 ms of kernel
teardown here and would be charged to the handoff. All ARs answer for the same gateway
address with the same MAC on their access interfaces (an anycast gateway), so the MN keeps
its neighbour entry across ARs.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from agents import control
from topologies.lab.daemons import DeadlineError, LabError, wait_until

AIR = "air"  # the radio namespace's node name; reserved in topologies
# A Linux bridge numbers its ports in 10 bits (BR_MAX_PORTS): past 1,024 a port is refused
# with EXFULL, "Exchange full". A cell holds at most that many MNs, its AR's port included.
BRIDGE_PORTS = 1024


class RadioError(LabError):
    """A port could not be moved."""


def access_ifname(ar: str) -> str:
    """The AR's access interface, in the AR's namespace."""
    return f"{ar}-acc"


def air_ifname(node: str) -> str:
    """The far end of an AR's or an MN's link, in the air namespace."""
    return f"{AIR}-{node}"


def bridge_name(ar: str) -> str:
    return f"br-{ar}"


class Radio:
    """Moves MNs between the ARs' bridges over one netlink socket into the air namespace."""

    def __init__(self, air_pid: int) -> None:
        from pyroute2 import IPRoute

        self._ipr: Any = IPRoute(netns=f"/proc/{air_pid}/ns/net")
        self._index: dict[str, int] = {}
        self.where: dict[str, str] = {}  # MN -> AR whose bridge holds its port

    def _idx(self, ifname: str) -> int:
        idx = self._index.get(ifname)
        if idx is None:
            found = self._ipr.link_lookup(ifname=ifname)
            if not found:
                raise RadioError(f"no interface {ifname} in the air namespace")
            idx = self._index[ifname] = int(found[0])
        return idx

    def _attach(self, mn: str, ar: str) -> float:
        try:
            self._ipr.link("set", index=self._idx(air_ifname(mn)),
                           master=self._idx(bridge_name(ar)))
        except RadioError:
            raise
        except Exception as exc:
            raise RadioError(f"attaching {mn} to {ar}: {exc}") from exc
        t = time.time()
        self.where[mn] = ar
        return t

    def place(self, mn: str, ar: str) -> None:
        """The MN's first attachment, at bring-up."""
        self._attach(mn, ar)

    def move(self, mn: str, ar: str) -> dict[str, float]:
        """Re-parent the MN's port to ``ar``'s bridge; the wall-clock time it happened."""
        src = self.where.get(mn)
        if src is None:
            raise RadioError(f"{mn} is attached nowhere")
        if src == ar:
            raise RadioError(f"{mn} is already attached to {ar}")
        t = self._attach(mn, ar)
        return {"t_detach": t, "t_attach": t}

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing on teardown
            self._ipr.close()


class MnControl:
    """Client of an MN agent's control socket (agents/mn.py)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def wait_ready(self, timeout: float = 15.0) -> None:
        try:
            wait_until(self.path.exists, timeout, f"MN agent socket {self.path}", 0.05)
        except DeadlineError as exc:
            raise LabError(str(exc)) from None

    def request(self, req: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        try:
            return control.request(self.path, req, timeout)
        except control.ControlError as exc:
            raise LabError(f"MN {exc}") from None
