"""ExaBGP process API: typed events parsed from its JSON lines, and the commands we send.

ExaBGP writes JSON messages and command acknowledgements ("done"/"error") on our
stdin; everything we print on stdout is a command, so nothing else may go there.
"""

from __future__ import annotations

import ipaddress
import json
import re
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
    prefix: ipaddress.IPv4Network | ipaddress.IPv6Network  # IPv6 on a dual-stack backbone
    next_hop: ipaddress.IPv4Address | ipaddress.IPv6Address
    local_pref: int
    path_id: str = ""  # ADD-PATH path identifier: a reflector sends every path, not just its best


@dataclass(frozen=True)
class Update:
    peer: str
    announced: list[Route] = field(default_factory=list)
    withdrawn: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)
    eor: bool = False
    withdrawn_ids: list[str] = field(default_factory=list)  # path ids, parallel to withdrawn
    family: str = ""  # an End-of-RIB's address family, one of FAMILIES


@dataclass(frozen=True)
class Shutdown:
    pass


Event = Ack | PeerState | Update | Shutdown


_U32 = 1 << 32


def _obj(value: Any, what: str) -> dict[str, Any]:
    """A JSON object field; missing (None) reads as empty, any other type is an ApiError."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(f"{what} is a {type(value).__name__}, not an object")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ApiError(f"{what} is a {type(value).__name__}, not a list")
    return value


def _text(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ApiError(f"{what} is a {type(value).__name__}, not a string")
    return value


# The families we read: each parses its prefixes and next hops with its own strict class.
FAMILIES: dict[str, tuple[type[ipaddress.IPv4Network | ipaddress.IPv6Network],
                          type[ipaddress.IPv4Address | ipaddress.IPv6Address]]] = {
    "ipv4 unicast": (ipaddress.IPv4Network, ipaddress.IPv4Address),
    "ipv6 unicast": (ipaddress.IPv6Network, ipaddress.IPv6Address),
}


def _net(nlri: Any, family: str = "ipv4 unicast") -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if not isinstance(nlri, dict) or not isinstance(nlri.get("nlri"), str):
        raise ApiError(f"bad nlri entry: a {type(nlri).__name__} without a string nlri")
    try:
        return FAMILIES[family][0](nlri["nlri"])
    except ValueError as exc:
        raise ApiError(f"bad nlri prefix: {exc}") from None


def _hop(text: Any, family: str = "ipv4 unicast") -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return FAMILIES[family][1](_text(text, "next hop"))
    except ValueError as exc:
        raise ApiError(f"bad next hop: {exc}") from None


def _path_id(nlri: Any) -> str:
    value = nlri.get("path-information", "") if isinstance(nlri, dict) else ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ApiError(f"path-information is a {type(value).__name__}")
    return str(value)


def _local_pref(value: Any) -> int:
    if value is None:
        return 100
    if isinstance(value, str) and value.isdigit() and len(value) <= 10:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _U32:
        shown = repr(value)[:20] if isinstance(value, str | int) else type(value).__name__
        raise ApiError(f"bad local-preference {shown}")
    return value


def _eor_family(value: Any) -> str:
    """The family of an End-of-RIB, ``{"afi": "ipv4", "safi": "unicast"}``: the peer has sent
    its whole table of that family (RFC 4724 section 2)."""
    eor = _obj(value, "eor")
    if not eor:
        raise ApiError("an eor without its family")
    family = f"{_text(eor.get('afi'), 'eor afi')} {_text(eor.get('safi'), 'eor safi')}"
    if family not in FAMILIES:
        raise ApiError(f"an eor for a family we do not read: {family[:40]!r}")
    return family


def parse_line(line: str) -> Event | None:
    """One line from ExaBGP; None for messages we do not act on (open, keepalive...).

    Raises only ApiError: ExaBGP's stdout is trusted as a process but its JSON carries what
    BGP peers sent, so every field's type is checked, not assumed.
    """
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
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than the stack
        raise ApiError(f"bad JSON from exabgp: {str(exc)[:80]}") from None
    msg = _obj(msg, "message")
    kind = msg.get("type")
    if kind == "notification" and msg.get("notification") == "shutdown":
        return Shutdown()
    if kind not in ("state", "update"):
        return None
    neighbor = _obj(msg.get("neighbor"), "neighbor")
    peer = _text(_obj(neighbor.get("address"), "neighbor address").get("peer"), "peer")
    if kind == "state":
        state = neighbor.get("state")
        if state in ("up", "down"):
            reason = neighbor.get("reason")
            return PeerState(peer, state == "up", reason if isinstance(reason, str) else "")
        return None
    if _text(neighbor.get("direction"), "direction") == "send":
        return None  # our own UPDATEs, echoed: not what a peer sent
    message = _obj(neighbor.get("message"), "neighbor message")
    if "eor" in message:
        if "update" in message:
            raise ApiError("a message with both an update and an eor")
        return Update(peer, eor=True, family=_eor_family(message["eor"]))
    if "update" not in message:
        raise ApiError("an update message with neither an update nor an eor")
    update = _obj(message["update"], "update")
    attrs = _obj(update.get("attribute"), "attribute")
    lp = _local_pref(attrs.get("local-preference"))
    announced: list[Route] = []
    withdrawn: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    ids: list[str] = []
    families = _obj(update.get("announce"), "announce")
    withdrawals = _obj(update.get("withdraw"), "withdraw")
    for family in FAMILIES:
        for nh, nlris in _obj(families.get(family), f"announce {family}").items():
            hop = _hop(nh, family)
            announced.extend(Route(_net(n, family), hop, lp, _path_id(n))
                             for n in _list(nlris, "announced nlris"))
        gone = _list(withdrawals.get(family), "withdrawn nlris")
        withdrawn += [_net(n, family) for n in gone]
        ids += [_path_id(n) for n in gone]
    return Update(peer, announced, withdrawn, withdrawn_ids=ids)


def announce(prefix: ipaddress.IPv4Network | ipaddress.IPv6Network,
             local_pref: int | None = None, communities: tuple[str, ...] = (),
             next_hop: ipaddress.IPv6Address | None = None) -> str:
    """An IPv6 route names its next hop (the AR's IPv6 loopback): "self" on an IPv4
    session would be the IPv4 address."""
    lp = f" local-preference {local_pref}" if local_pref is not None else ""
    comm = f" community [{' '.join(communities)}]" if communities else ""
    return f"announce route {prefix} next-hop {next_hop or 'self'}{lp}{comm}"


def withdraw(prefix: ipaddress.IPv4Network | ipaddress.IPv6Network,
             next_hop: ipaddress.IPv6Address | None = None) -> str:
    return f"withdraw route {prefix} next-hop {next_hop or 'self'}"


def clear_adj_rib_out() -> str:
    """Withdraw everything ExaBGP announces for us: after a restart whose saved state was
    refused, what the previous process announced is unknown."""
    return "clear adj-rib out"


def show_adj_rib_in() -> str:
    """ExaBGP's Adj-RIB-In, one route a line (parse_rib_line), then the acknowledgement: a
    restarted API process learns the routes its sessions received before it started."""
    return "show adj-rib in extensive"


_RIB_LINE = re.compile(
    r"neighbor (?P<peer>[0-9.]{7,15}) (?:[a-z-]+ [0-9A-Za-z.:-]+ )*?(?:family-allowed \S+ )?"
    r"ipv4 unicast (?P<prefix>[0-9./]{9,18})(?: path-information (?P<pid>[0-9.]{7,15}))?"
    r" next-hop (?P<hop>[0-9.]{7,15})(?P<rest>(?: [\x21-\x7e]+)*)")
_RIB_LP = re.compile(r" local-preference ([0-9]+)(?: |$)")


def parse_rib_line(line: str) -> tuple[str, Route] | None:
    """(peer, route) from one line of `show adj-rib in extensive`; None for a line of another
    family. Raises ApiError for anything else that is not exactly such a line."""
    text = line.strip()
    if len(text) > 4096:
        raise ApiError("adj-rib line too long")
    m = _RIB_LINE.fullmatch(text)
    if m is None:
        if text.startswith("neighbor ") and " ipv4 unicast " not in text:
            return None
        raise ApiError(f"not an adj-rib line: {text[:80]!r}")
    try:
        peer = str(ipaddress.IPv4Address(m["peer"]))
        prefix = ipaddress.IPv4Network(m["prefix"])
        hop = ipaddress.IPv4Address(m["hop"])
        pid = str(ipaddress.IPv4Address(m["pid"])) if m["pid"] else ""
    except ValueError as exc:
        raise ApiError(f"bad adj-rib line: {exc}") from None
    lp = _RIB_LP.search(m["rest"])
    return peer, Route(prefix, hop, _local_pref(lp[1] if lp else None), pid)
