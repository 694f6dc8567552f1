"""The AR agent's state that outlives the agent: attached MNs, what it told ExaBGP, its
redirects, DHCP leases and source-filter members, and for dual-stack MNs their attached and
announced /64s, kept as a JSON snapshot in its run directory plus an append-only journal of
the changes since, both parsed strictly on start (docs/faults.md).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any, TypeVar

K = TypeVar("K")
V = TypeVar("V")
STATE_FILE = "agent.state.json"
VERSION = 1
# The journal beside the snapshot: one JSON line per change since the snapshot was written.
JOURNAL_SUFFIX = ".journal"
JOURNAL_VERSION = 1
MAPS = ("attached", "announced", "redirects", "leases", "sources", "attached6", "announced6",
        "bindings6")
# The IPv6 maps (issue 18) are left out of a snapshot while empty: an IPv4-only AR's file
# is what it was before they existed, and such a file still parses.
MAPS6 = ("attached6", "announced6", "bindings6")


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
class Binding6Record:
    """A DHCPv6 delegation (agents/dhcpd6.Binding6), keyed by its lease ``<name>#<serial>``."""

    prefix: IPv6Network
    duid: bytes
    mn: str
    iaid: int
    peer: IPv6Address
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
    # A dual-stack MN's /64s (agents/handoff6.py): attached here (the stamp is its
    # LOCAL_PREF), and announced by us.
    attached6: dict[IPv6Network, Attached] = field(default_factory=dict)
    announced6: dict[IPv6Network, Announced] = field(default_factory=dict)
    bindings6: dict[str, Binding6Record] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON, keys sorted by the caller's dump: the same state gives the same bytes.
        No dataclasses.asdict: its deep copies were most of a save at 1,000 MNs (issue 15)."""
        return {
            "version": VERSION,
            "node": self.node,
            "saved_at": self.saved_at,
            "attached": {str(a): value_json("attached", v) for a, v in self.attached.items()},
            "announced": {str(p): value_json("announced", v) for p, v in self.announced.items()},
            "redirects": {str(a): value_json("redirects", v) for a, v in self.redirects.items()},
            "leases": [value_json("leases", x) for x in self.leases],
            "sources": {str(a): sorted(v) for a, v in self.sources.items()},
            **({"attached6": {str(p): value_json("attached6", v)
                              for p, v in self.attached6.items()}} if self.attached6 else {}),
            **({"announced6": {str(p): value_json("announced6", v)
                               for p, v in self.announced6.items()}} if self.announced6 else {}),
            **({"bindings6": {k: value_json("bindings6", v)
                              for k, v in self.bindings6.items()}} if self.bindings6 else {}),
        }

    def same_as(self, other: ArState | None) -> bool:
        """Equal but for the time it was saved: nothing to write."""
        return other is not None and {**self.to_json(), "saved_at": 0} == {
            **other.to_json(), "saved_at": 0}


def value_json(name: str, v: Any) -> Any:
    """One entry's value of the map ``name`` as the snapshot and the journal write it."""
    if isinstance(v, Attached):
        return {"mn": v.mn, "ifindex": v.ifindex, "stamp": v.stamp}
    if isinstance(v, Announced):
        return {"local_pref": v.local_pref, "escape": v.escape}
    if isinstance(v, Redirected):
        return {"target": v.target, "deadline": v.deadline}
    if isinstance(v, LeaseRecord):
        return {"address": str(v.address), "client_id": v.client_id.hex(), "mn": v.mn,
                "chaddr": v.chaddr.hex(), "expires": v.expires, "bound": v.bound,
                "remote_renewals": v.remote_renewals}
    if isinstance(v, Binding6Record):
        return {"prefix": str(v.prefix), "duid": v.duid.hex(), "mn": v.mn, "iaid": v.iaid,
                "peer": str(v.peer), "expires": v.expires, "bound": v.bound,
                "remote_renewals": v.remote_renewals}
    if name == "sources" and isinstance(v, tuple):
        return sorted(v)
    raise TypeError(f"{name}: no JSON form for {type(v).__name__}")


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


def _net6(v: Any, where: str) -> IPv6Network:
    try:
        return IPv6Network(v if isinstance(v, str) else "-")
    except ValueError:
        raise StateError(f"{where}: {v!r} is not an IPv6 prefix") from None


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


ATTACHED_KEYS = {"mn", "ifindex", "stamp"}
ANNOUNCED_KEYS = {"local_pref", "escape"}
REDIRECT_KEYS = {"target", "deadline"}
LEASE_KEYS = {"address", "client_id", "mn", "chaddr", "expires", "bound", "remote_renewals"}
BINDING6_KEYS = {"prefix", "duid", "mn", "iaid", "peer", "expires", "bound", "remote_renewals"}


def _attached(o: dict[str, Any], w: str) -> Attached:
    return Attached(_str(o["mn"], f"{w}.mn"), _int(o["ifindex"], f"{w}.ifindex", 1),
                    _int(o["stamp"], f"{w}.stamp"))


def _announced(o: dict[str, Any], w: str) -> Announced:
    return Announced(_int(o["local_pref"], f"{w}.local_pref"), _bool(o["escape"], f"{w}.escape"))


def _redirected(o: dict[str, Any], w: str) -> Redirected:
    return Redirected(_str(o["target"], f"{w}.target"), _num(o["deadline"], f"{w}.deadline"))


def _lease(v: Any, w: str) -> LeaseRecord:
    o = _obj(v, w, LEASE_KEYS)
    return LeaseRecord(_addr(o["address"], f"{w}.address"), _hex(o["client_id"], f"{w}.client_id"),
                       _str(o["mn"], f"{w}.mn"), _hex(o["chaddr"], f"{w}.chaddr"),
                       _num(o["expires"], f"{w}.expires"), _bool(o["bound"], f"{w}.bound"),
                       _int(o["remote_renewals"], f"{w}.remote_renewals"))


def _binding6(o: dict[str, Any], w: str) -> Binding6Record:
    try:
        peer = IPv6Address(o["peer"] if isinstance(o["peer"], str) else "-")
    except ValueError:
        raise StateError(f"{w}.peer: {o['peer']!r} is not an IPv6 address") from None
    return Binding6Record(_net6(o["prefix"], f"{w}.prefix"), _hex(o["duid"], f"{w}.duid"),
                          _str(o["mn"], f"{w}.mn"), _int(o["iaid"], f"{w}.iaid"), peer,
                          _num(o["expires"], f"{w}.expires"), _bool(o["bound"], f"{w}.bound"),
                          _int(o["remote_renewals"], f"{w}.remote_renewals"))


def _lease_key(v: Any, w: str) -> str:
    """A DHCPv6 lease's key, ``<name>#<serial>`` (agents/dhcpd6.lease_key)."""
    name, sep, serial = _str(v, w).partition("#")
    if not sep or not name or not serial.isdigit() or not serial.isascii():
        raise StateError(f"{w}: {v!r} is not a lease <name>#<serial>")
    return f"{name}#{serial}"


def _names(v: Any, w: str) -> tuple[str, ...]:
    if not isinstance(v, list):
        raise StateError(f"{w}: expected a list of interface names")
    return tuple(_str(x, w) for x in v)


def parse(text: str) -> ArState:
    """The state a file holds; anything malformed, of another version or shape, is a
    StateError (the agent then starts clean and re-learns from the network)."""
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise StateError(f"not JSON: {exc}") from None
    six = {k: doc.pop(k) for k in MAPS6 if k in doc} if isinstance(doc, dict) else {}
    d = _obj(doc, "state", {"version", "node", "saved_at", "attached", "announced",
                            "redirects", "leases", "sources"})
    if d["version"] != VERSION:
        raise StateError(f"version {d['version']!r}, expected {VERSION}")
    attached = _entries(d, "attached", ATTACHED_KEYS, _addr, _attached)
    announced = _entries(d, "announced", ANNOUNCED_KEYS, _net, _announced)
    redirects = _entries(d, "redirects", REDIRECT_KEYS, _addr, _redirected)
    if not isinstance(d["leases"], list):
        raise StateError("leases: expected a list")
    leases = [_lease(v, f"leases[{i}]") for i, v in enumerate(d["leases"])]
    sources = {_addr(k, f"sources[{k}]"): _names(v, f"sources[{k}]")
               for k, v in _map(d["sources"], "sources").items()}
    attached6 = (_entries(six, "attached6", ATTACHED_KEYS, _net6, _attached)
                 if "attached6" in six else {})
    announced6 = (_entries(six, "announced6", ANNOUNCED_KEYS, _net6, _announced)
                  if "announced6" in six else {})
    bindings6 = (_entries(six, "bindings6", BINDING6_KEYS, _lease_key, _binding6)
                 if "bindings6" in six else {})
    return ArState(_str(d["node"], "node"), _num(d["saved_at"], "saved_at"), attached,
                   announced, redirects, tuple(leases), sources, attached6, announced6,
                   bindings6)


def load(path: Path, node: str) -> ArState | None:
    """The saved state of ``node`` with its journal replayed, None when there is none;
    StateError when the snapshot is unreadable, malformed or another node's. A journal that
    cannot be trusted is left out (load_report says so)."""
    return load_report(path, node)[0]


def load_report(path: Path, node: str) -> tuple[ArState | None, JournalReport]:
    """The snapshot with its journal replayed, and what the journal contributed."""
    snapshot = load_snapshot(path, node)
    report = read_journal(journal_path(path), node)
    if report.error is not None or not report.records:
        return snapshot, report
    return replay(snapshot or ArState(node), report.records), report


def load_snapshot(path: Path, node: str) -> ArState | None:
    """The snapshot alone, without the journal."""
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
        # Unindented: only then does json use its C encoder.
        json.dump(state.to_json(), fh, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


# --- the journal: the changes since the snapshot, one JSON line each ----------------------
#
# The first line names the node ({"journal": 1, "node": ...}); every other line is one entry
# of one map as it is now: {"m": map, "k": key, "v": value or null for gone, "t": wall clock}.
# Replaying a line sets or removes that entry, so a line replayed twice, or over a snapshot
# written after it, gives the same state: compaction may die between writing the snapshot
# and emptying the journal. Lines are appended with one write() each, without fsync: the
# agent's failure mode is being killed, which the page cache survives, and the snapshot
# (written every few seconds with fsync) bounds what a crash of the machine loses.


class JournalError(StateError):
    """A journal line other than a torn last one is malformed: the whole journal is left out."""


@dataclass(frozen=True)
class Record:
    map: str
    key: Any  # IPv4Address, IPv4Network (announced), IPv6Network (the /64 maps) or bytes (a
    # lease's client identifier)
    value: Any  # the map's value type; None: the entry is gone
    at: float = 0.0


@dataclass(frozen=True)
class JournalReport:
    records: tuple[Record, ...] = ()
    torn: bool = False  # an unfinished last line was skipped
    error: str | None = None  # why the journal was left out


def journal_path(state_path: Path) -> Path:
    return state_path.with_name(state_path.name + JOURNAL_SUFFIX)


def header_line(node: str) -> bytes:
    return (json.dumps({"journal": JOURNAL_VERSION, "node": node}, sort_keys=True)
            + "\n").encode()


def record_line(map_name: str, key: Any, value: Any, at: float) -> bytes:
    """One journal line: ``value`` None when the entry is gone."""
    if map_name not in MAPS:
        raise ValueError(f"no map {map_name!r}")
    k = key.hex() if isinstance(key, bytes) else str(key)
    v = None if value is None else value_json(map_name, value)
    return (json.dumps({"m": map_name, "k": k, "v": v, "t": round(at, 3)}, sort_keys=True)
            + "\n").encode()


def _record(line: str, where: str) -> Record:
    try:
        doc = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise JournalError(f"{where}: not JSON: {exc}") from None
    d = _obj(doc, where, {"m", "k", "v", "t"})
    name, k, v = d["m"], d["k"], d["v"]
    at = _num(d["t"], f"{where}.t")
    if name not in MAPS:
        raise JournalError(f"{where}: no map {name!r}")
    w = f"{where}:{name}[{k}]"
    if name == "leases":
        key: Any = _hex(k, w)
        if v is not None:
            value: Any = _lease(v, w)
            if value.client_id != key:
                raise JournalError(f"{w}: the lease of client {value.client_id.hex()}")
            return Record(name, key, value, at)
        return Record(name, key, None, at)
    key = (_lease_key(k, w) if name == "bindings6" else _net6(k, w) if name in MAPS6
           else _net(k, w) if name == "announced" else _addr(k, w))
    if v is None:
        return Record(name, key, None, at)
    if name == "sources":
        return Record(name, key, _names(v, w), at)
    keys, build = {"attached": (ATTACHED_KEYS, _attached),
                   "announced": (ANNOUNCED_KEYS, _announced),
                   "redirects": (REDIRECT_KEYS, _redirected),
                   "attached6": (ATTACHED_KEYS, _attached),
                   "announced6": (ANNOUNCED_KEYS, _announced),
                   "bindings6": (BINDING6_KEYS, _binding6)}[name]
    return Record(name, key, build(_obj(v, w, keys), w), at)


def parse_journal(text: str, node: str) -> JournalReport:
    """The records of a journal's text; a torn last line (no newline yet) is skipped, any
    other malformed line, a missing header or another node's header is a JournalError."""
    lines = text.split("\n")
    torn = lines[-1] != ""
    complete = lines[:-1]
    if not complete:
        return JournalReport((), torn)
    try:
        head = _obj(json.loads(complete[0]), "journal header", {"journal", "node"})
    except (json.JSONDecodeError, RecursionError) as exc:
        raise JournalError(f"journal header: not JSON: {exc}") from None
    except StateError as exc:
        raise JournalError(str(exc)) from None
    if head["journal"] != JOURNAL_VERSION:
        raise JournalError(f"journal version {head['journal']!r}, expected {JOURNAL_VERSION}")
    if head["node"] != node:
        raise JournalError(f"the journal of {head['node']!r}, not of {node!r}")
    try:
        records = tuple(_record(line, f"journal line {i}")
                        for i, line in enumerate(complete[1:], 2))
    except JournalError:
        raise
    except StateError as exc:
        raise JournalError(str(exc)) from None
    return JournalReport(records, torn)


def read_journal(path: Path, node: str) -> JournalReport:
    """The journal at ``path``: no file is no records; a journal that cannot be trusted
    comes back with its error and no records."""
    try:
        text = path.read_bytes().decode()
    except FileNotFoundError:
        return JournalReport()
    except (OSError, UnicodeDecodeError) as exc:
        return JournalReport(error=f"{path}: {exc}")
    try:
        return parse_journal(text, node)
    except JournalError as exc:
        return JournalReport(error=f"{path}: {exc}")


def replay(state: ArState, records: tuple[Record, ...]) -> ArState:
    """``state`` with the journal's records applied in order."""
    maps: dict[str, dict[Any, Any]] = {
        "attached": dict(state.attached), "announced": dict(state.announced),
        "redirects": dict(state.redirects), "leases": {x.client_id: x for x in state.leases},
        "sources": dict(state.sources), "attached6": dict(state.attached6),
        "announced6": dict(state.announced6), "bindings6": dict(state.bindings6)}
    at = state.saved_at
    for r in records:
        if r.value is None or (r.map == "sources" and not r.value):
            maps[r.map].pop(r.key, None)
        else:
            maps[r.map][r.key] = r.value
        at = max(at, r.at)
    return ArState(state.node, at, maps["attached"], maps["announced"], maps["redirects"],
                   tuple(maps["leases"].values()), maps["sources"], maps["attached6"],
                   maps["announced6"], maps["bindings6"])


class Journal:
    """The append side, kept open by the agent: one write() per batch of changes."""

    def __init__(self, path: Path, node: str) -> None:
        self.path = path
        self.node = node
        self.records = 0  # lines since the last reset
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def reset(self) -> None:
        """Empty it: the snapshot just written holds every change it recorded."""
        os.ftruncate(self._fd, 0)
        os.write(self._fd, header_line(self.node))
        self.records = 0

    def append(self, lines: list[bytes]) -> None:
        if lines:
            os.write(self._fd, b"".join(lines))
            self.records += len(lines)

    def close(self) -> None:
        os.close(self._fd)


class Tracked(dict[K, V]):
    """A dict that names every key it changes, after the change (the journal's O(change)
    save: the agent writes only the entries its maps report)."""

    def __init__(self, data: dict[K, V], changed: Callable[[K], None]) -> None:
        super().__init__(data)
        self._changed = changed

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, value)
        self._changed(key)

    def __delitem__(self, key: K) -> None:
        super().__delitem__(key)
        self._changed(key)

    def pop(self, key: K, *default: Any) -> Any:
        had = key in self
        out = super().pop(key, *default)
        if had:
            self._changed(key)
        return out

    def popitem(self) -> tuple[K, V]:
        k, v = super().popitem()
        self._changed(k)
        return k, v

    def setdefault(self, key: K, default: Any = None) -> Any:
        had = key in self
        out = super().setdefault(key, default)
        if not had:
            self._changed(key)
        return out

    def update(self, *args: Any, **kwargs: Any) -> None:
        for k, v in dict(*args, **kwargs).items():
            self[k] = v

    def clear(self) -> None:
        keys = list(self)
        super().clear()
        for k in keys:
            self._changed(k)
