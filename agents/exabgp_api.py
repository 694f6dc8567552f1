"""ExaBGP process API: typed events parsed from its JSON lines, and the commands we send.

ExaBGP writes JSON messages and command acknowledgements ("done"/"error") on our
stdin; everything we print on stdout is a command, so nothing else may go there.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any


class ApiError(ValueError):
    """A line from ExaBGP we cannot interpret."""


@dataclass(frozen=True)
class Ack:
    ok: bool
    text: str


@dataclass(frozen=True)
class PeerState:
    peer: str
    up: bool
    reason: str = ""


@dataclass(frozen=True)
class Route:
    prefix: ipaddress.IPv4Network
    next_hop: ipaddress.IPv4Address
    local_pref: int
    path_id: str = ""  # ADD-PATH path identifier: a reflector sends every path, not just its best


@dataclass(frozen=True)
class Update:
    peer: str
    announced: list[Route] = field(default_factory=list)
    withdrawn: list[ipaddress.IPv4Network] = field(default_factory=list)
    eor: bool = False
    withdrawn_ids: list[str] = field(default_factory=list)  # path ids, parallel to withdrawn


@dataclass(frozen=True)
class Shutdown:
    pass


Event = Ack | PeerState | Update | Shutdown


def _net(nlri: Any) -> ipaddress.IPv4Network:
    if not isinstance(nlri, dict) or "nlri" not in nlri:
        raise ApiError(f"bad nlri entry {nlri!r}")
    return ipaddress.IPv4Network(str(nlri["nlri"]))


def _path_id(nlri: Any) -> str:
    return str(nlri.get("path-information", "")) if isinstance(nlri, dict) else ""


def parse_line(line: str) -> Event | None:
    """One line from ExaBGP; None for messages we do not act on (open, keepalive...)."""
    text = line.strip()
    if not text:
        return None
    if text in ("done", "error"):
        return Ack(text == "done", text)
    if text == "shutdown":
        return Shutdown()
    if not text.startswith("{"):
        raise ApiError(f"unexpected line from exabgp: {text[:80]!r}")
    try:
        msg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApiError(f"bad JSON from exabgp: {exc}") from None
    kind = msg.get("type")
    if kind == "notification" and msg.get("notification") == "shutdown":
        return Shutdown()
    neighbor = msg.get("neighbor") or {}
    peer = str((neighbor.get("address") or {}).get("peer", ""))
    if kind == "state":
        state = neighbor.get("state")
        if state in ("up", "down"):
            return PeerState(peer, state == "up", str(neighbor.get("reason", "")))
        return None
    if kind != "update":
        return None
    update = ((neighbor.get("message") or {}).get("update")) or {}
    if "eor" in update or not update:
        return Update(peer, eor=True)
    attrs = update.get("attribute") or {}
    lp = int(attrs.get("local-preference", 100))
    announced: list[Route] = []
    for nh, nlris in ((update.get("announce") or {}).get("ipv4 unicast") or {}).items():
        hop = ipaddress.IPv4Address(nh)
        announced.extend(Route(_net(n), hop, lp, _path_id(n)) for n in nlris)
    gone = (update.get("withdraw") or {}).get("ipv4 unicast") or []
    return Update(peer, announced, [_net(n) for n in gone],
                  withdrawn_ids=[_path_id(n) for n in gone])


def announce(prefix: ipaddress.IPv4Network, local_pref: int | None = None,
             communities: tuple[str, ...] = ()) -> str:
    lp = f" local-preference {local_pref}" if local_pref is not None else ""
    comm = f" community [{' '.join(communities)}]" if communities else ""
    return f"announce route {prefix} next-hop self{lp}{comm}"


def withdraw(prefix: ipaddress.IPv4Network) -> str:
    return f"withdraw route {prefix} next-hop self"
