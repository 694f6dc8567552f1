"""The AR agent's state that outlives the agent: attached MNs, what it told ExaBGP, its
redirects, DHCP leases and source-filter members, kept as one JSON file in its run
directory, replaced atomically on every change and parsed strictly on start (docs/faults.md).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any, TypeVar

K = TypeVar("K")
V = TypeVar("V")
STATE_FILE = "agent.state.json"
VERSION = 1


class StateError(ValueError):
    """The state file cannot be trusted; the message says which field and why."""


@dataclass(frozen=True)
class Attached:
    mn: str
    ifindex: int
    stamp: int  # the LOCAL_PREF the attachment earned


@dataclass(frozen=True)
class Announced:
    local_pref: int
    escape: bool = False


@dataclass(frozen=True)
class Redirected:
    target: str  # the AR node the address is tunnelled to
    deadline: float  # wall clock: removed after this even if BGP never supersedes it


@dataclass(frozen=True)
class LeaseRecord:
    address: IPv4Address
    client_id: bytes
    mn: str
    chaddr: bytes
    expires: float  # wall clock
    bound: bool
    remote_renewals: int


@dataclass(frozen=True)
class ArState:
    node: str
    saved_at: float = 0.0
    attached: dict[IPv4Address, Attached] = field(default_factory=dict)
    announced: dict[IPv4Network, Announced] = field(default_factory=dict)
    redirects: dict[IPv4Address, Redirected] = field(default_factory=dict)
    leases: tuple[LeaseRecord, ...] = ()
    sources: dict[IPv4Address, tuple[str, ...]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON, keys sorted by the caller's dump: the same state gives the same bytes."""
        return {
            "version": VERSION,
            "node": self.node,
            "saved_at": self.saved_at,
            "attached": {str(a): asdict(v) for a, v in self.attached.items()},
            "announced": {str(p): asdict(v) for p, v in self.announced.items()},
            "redirects": {str(a): asdict(v) for a, v in self.redirects.items()},
            "leases": [{**asdict(x), "address": str(x.address), "client_id": x.client_id.hex(),
                        "chaddr": x.chaddr.hex()} for x in self.leases],
            "sources": {str(a): sorted(v) for a, v in self.sources.items()},
        }

    def same_as(self, other: ArState | None) -> bool:
        """Equal but for the time it was saved: nothing to write."""
        return other is not None and {**self.to_json(), "saved_at": 0} == {
            **other.to_json(), "saved_at": 0}


# --- strict parsing: every field typed, nothing extra, nothing missing --------------------


def _obj(v: Any, where: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise StateError(f"{where}: expected an object")
    if set(v) != keys:
        missing, extra = sorted(keys - set(v)), sorted(set(v) - keys)
        raise StateError(f"{where}: missing {missing}, unexpected {extra}")
    return v


def _int(v: Any, where: str, lo: int = 0, hi: int = (1 << 32) - 1) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise StateError(f"{where}: expected an integer in {lo}..{hi}")
    return v


def _num(v: Any, where: str) -> float:
    if not isinstance(v, int | float) or isinstance(v, bool) or not 0 <= v < 1e12:
        raise StateError(f"{where}: expected a time in seconds")
    return float(v)


def _str(v: Any, where: str) -> str:
    if not isinstance(v, str) or not 0 < len(v) <= 255 or not v.isprintable():
        raise StateError(f"{where}: expected a printable name")
    return v


def _bool(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise StateError(f"{where}: expected true or false")
    return v


def _addr(v: Any, where: str) -> IPv4Address:
    try:
        return IPv4Address(v if isinstance(v, str) else "-")
    except ValueError:
        raise StateError(f"{where}: {v!r} is not an IPv4 address") from None


def _net(v: Any, where: str) -> IPv4Network:
    try:
        return IPv4Network(v if isinstance(v, str) else "-")
    except ValueError:
        raise StateError(f"{where}: {v!r} is not an IPv4 prefix") from None


def _hex(v: Any, where: str) -> bytes:
    try:
        out = bytes.fromhex(v if isinstance(v, str) else "-")
    except ValueError:
        raise StateError(f"{where}: expected hex") from None
    if len(out) > 255:
        raise StateError(f"{where}: longer than 255 bytes")
    return out


def _map(v: Any, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise StateError(f"{where}: expected an object")
    return v


def _entries(d: dict[str, Any], name: str, keys: set[str], key: Callable[[Any, str], K],
             build: Callable[[dict[str, Any], str], V]) -> dict[K, V]:
    """One of the state's maps: each key parsed by ``key``, each value an object of exactly
    ``keys`` built by ``build``; errors name the entry (``attached[10.64.0.10]``)."""
    out: dict[K, V] = {}
    for k, v in _map(d[name], name).items():
        where = f"{name}[{k}]"
        out[key(k, where)] = build(_obj(v, where, keys), where)
    return out


def parse(text: str) -> ArState:
    """The state a file holds; anything malformed, of another version or shape, is a
    StateError (the agent then starts clean and re-learns from the network)."""
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise StateError(f"not JSON: {exc}") from None
    d = _obj(doc, "state", {"version", "node", "saved_at", "attached", "announced",
                            "redirects", "leases", "sources"})
    if d["version"] != VERSION:
        raise StateError(f"version {d['version']!r}, expected {VERSION}")
    attached = _entries(d, "attached", {"mn", "ifindex", "stamp"}, _addr, lambda o, w: Attached(
        _str(o["mn"], f"{w}.mn"), _int(o["ifindex"], f"{w}.ifindex", 1),
        _int(o["stamp"], f"{w}.stamp")))
    announced = _entries(d, "announced", {"local_pref", "escape"}, _net, lambda o, w: Announced(
        _int(o["local_pref"], f"{w}.local_pref"), _bool(o["escape"], f"{w}.escape")))
    redirects = _entries(d, "redirects", {"target", "deadline"}, _addr, lambda o, w: Redirected(
        _str(o["target"], f"{w}.target"), _num(o["deadline"], f"{w}.deadline")))
    if not isinstance(d["leases"], list):
        raise StateError("leases: expected a list")
    leases = []
    for i, v in enumerate(d["leases"]):
        w = f"leases[{i}]"
        o = _obj(v, w, {"address", "client_id", "mn", "chaddr", "expires", "bound",
                        "remote_renewals"})
        leases.append(LeaseRecord(_addr(o["address"], f"{w}.address"),
                                  _hex(o["client_id"], f"{w}.client_id"),
                                  _str(o["mn"], f"{w}.mn"), _hex(o["chaddr"], f"{w}.chaddr"),
                                  _num(o["expires"], f"{w}.expires"),
                                  _bool(o["bound"], f"{w}.bound"),
                                  _int(o["remote_renewals"], f"{w}.remote_renewals")))
    sources = {}
    for k, v in _map(d["sources"], "sources").items():
        w = f"sources[{k}]"
        if not isinstance(v, list):
            raise StateError(f"{w}: expected a list of interface names")
        sources[_addr(k, w)] = tuple(_str(x, w) for x in v)
    return ArState(_str(d["node"], "node"), _num(d["saved_at"], "saved_at"), attached,
                   announced, redirects, tuple(leases), sources)


def load(path: Path, node: str) -> ArState | None:
    """The saved state of ``node``, None when there is none; StateError when the file is
    unreadable, malformed or another node's."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise StateError(f"{path}: {exc}") from None
    try:
        state = parse(text)
    except StateError as exc:
        raise StateError(f"{path}: {exc}") from None
    if state.node != node:
        raise StateError(f"{path}: the state of {state.node!r}, not of {node!r}")
    return state


def save(path: Path, state: ArState) -> None:
    """Write-then-rename: a reader (or the next agent) sees the old state or the new one,
    never half of one, even if the agent is killed mid-write."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as fh:
        json.dump(state.to_json(), fh, sort_keys=True, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
