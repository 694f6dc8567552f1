"""The experiment file of `flatarch run` (docs/experiments.md): YAML → a typed Experiment
(topology and link profile, traffic, a timeline of actions, checks), validated against the
topology before any lab starts; every error is reported at once, with its line.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from topologies import model
from topologies.lab.lab import DAEMON_CLASSES
from topologies.model import Role, Topology, TopologyError
from topologies.scenarios.base import FAMILIES, PROBE_INTERVAL_S, TOPOLOGIES

TRAFFIC_KINDS = ("ping", "iperf3", "udp")
# Each action's usage and its number of words after the verb (None: two or more).
USAGE: dict[str, tuple[str, int | None]] = {
    "handoff": ("handoff MN AR [AR...]", None), "idle": ("idle MN", 1),
    "rotate": ("rotate MN", 1), "leave": ("leave MN", 1), "mode": ("mode redirect|draft", 1),
    "link": ("link A B down|up", 3), "fault": ("fault kill|restart DAEMON NODE", 3),
}
VERBS = tuple(USAGE)
FAULTS = ("kill", "restart")
MODES = ("redirect", "draft")
ANY_HOP = "*"  # in a `path` check, a hop that may be any node (ECMP)
GROUP = "mobiles"  # `to: mobiles`: one stream toward every MN
OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": lambda a, b: a <= b, "<": lambda a, b: a < b, ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b, "==": lambda a, b: a == b,
}
# What a `METRIC OP NUMBER` check may name; docs/experiments.md says how each is counted.
METRICS = (
    "interruption_ms_p95", "interruption_ms_max", "auth_ms_p95", "auth_ms_max",
    "ping_lost", "udp_lost", "iperf_max_stall_ms", "iperf_mean_mbps", "pages", "paging_ms_max",
    "handoffs",
    "actions_failed",
)
# `METRIC[MODE]`: these, over the handoffs made in one handoff mode only; `METRIC[FAMILY]`:
# over one family's streams (issue 18).
PER_MODE = ("interruption_ms_p95", "interruption_ms_max", "auth_ms_p95", "auth_ms_max")
FAMILY_NAMES = ("ipv4", "ipv6")
SUFFIXES = (*MODES, *FAMILY_NAMES)  # what `METRIC[...]` may name
PER_FAMILY_CHECKS = ("reachable", "path", "no_stale_routes")  # one verdict per family
MAX_FIRINGS = 1000  # a timeline entry that fires more often is a typo, not an experiment
TAIL_S = 3.0  # the run goes on this long after the last action when no duration is given
_TIME = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s)\s*$")
_METRIC = re.compile(
    r"^\s*([a-z0-9_]+)(?:\[([a-z0-9]+)\])?\s*(<=|>=|==|<|>)\s*(-?\d+(?:\.\d+)?)\s*$")
_RATE = re.compile(r"^\d+(?:\.\d+)?[KMG]?$")


class ExperimentError(TopologyError):
    """The experiment file is invalid; ``errors`` holds every problem, each with its line."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__(f"{len(errors)} error(s) in the experiment:\n  " + "\n  ".join(errors))


@dataclass(frozen=True)
class Traffic:
    """One stream: the paced prober (ping), iperf3 (TCP or UDP), or the UDP stream."""

    kind: str
    src: str
    dst: str
    line: int
    proto: str = "tcp"  # iperf3 only
    rate: str = "10M"  # iperf3 only
    interval_s: float = PROBE_INTERVAL_S  # ping and udp
    start_s: float = 0.0  # udp: when the sender starts, on the timeline
    count: int | None = None  # udp: datagrams (default: as many as fit before the end)
    family: str = "ipv4"  # to the destination's IPv4 address, or its IPv6 one (issue 18)


@dataclass(frozen=True)
class Action:
    verb: str
    args: tuple[str, ...]
    text: str
    line: int


@dataclass(frozen=True)
class Firing:
    """An action at its time; ``n`` counts the firings of its timeline entry (from 0), so
    that `handoff MN AR1 AR2 ...` goes to the n-th AR, cycling."""

    t_s: float
    action: Action
    n: int = 0

    @property
    def target(self) -> str:
        """The AR a handoff fires toward (its n-th, cycling); '' for other verbs."""
        if self.action.verb != "handoff":
            return ""
        ars = self.action.args[1:]
        return ars[self.n % len(ars)]


@dataclass(frozen=True)
class Check:
    kind: str  # reachable | path | no_stale_routes | auth_ok | metric
    text: str
    line: int
    nodes: tuple[str, ...] = ()
    metric: str = ""
    op: str = ""
    bound: float = 0.0
    family: str = "ipv4"  # reachable, path and no_stale_routes: which family's


@dataclass(frozen=True)
class Experiment:
    name: str
    topology: Topology
    topology_doc: dict[str, Any]  # with the experiment's link profile laid over it
    duration_s: float
    traffic: tuple[Traffic, ...]
    timeline: tuple[Firing, ...]
    checks: tuple[Check, ...]
    description: str = ""
    families: tuple[str, ...] = ("ipv4",)  # `family:` (or --family): the default streams'

    @property
    def mobiles6(self) -> list[str]:
        """The MNs an IPv6 stream or check names: dual-stack in the experiment's topology."""
        return _mobiles6(self.topology, self.traffic, self.checks)


def _mobiles6(topo: Topology, traffic: Iterable[Traffic], checks: Iterable[Check]) -> list[str]:
    named = {n for t in traffic if t.family == "ipv6" for n in (t.src, t.dst)}
    named |= {n for c in checks if c.family == "ipv6" for n in c.nodes}
    return [mn for mn in topo.mobiles if mn in named]


@dataclass
class _Errors:
    where: str
    items: list[str] = field(default_factory=list)

    def add(self, node: Node, msg: str) -> None:
        self.at(node.start_mark.line + 1, msg)

    def at(self, line: int, msg: str) -> None:
        self.items.append(f"{self.where}:{line}: {msg}")


_SCALARS = yaml.constructor.SafeConstructor()


def _value(node: Node) -> Any:
    return _SCALARS.construct_object(node, deep=True)


def _mapping(node: Node, what: str, errs: _Errors) -> Iterator[tuple[str, Node, Node]]:
    """(key, key node, value node) of a mapping; anything else is an error."""
    if not isinstance(node, MappingNode):
        errs.add(node, f"{what}: expected a mapping")
        return
    for k, v in node.value:
        yield str(_value(k)), k, v


def _sequence(node: Node, what: str, errs: _Errors) -> list[Node]:
    if not isinstance(node, SequenceNode):
        errs.add(node, f"{what}: expected a list")
        return []
    return list(node.value)


def _string(node: Node, what: str, errs: _Errors) -> str | None:
    if not isinstance(node, ScalarNode) or not isinstance(v := _value(node), str | int):
        errs.add(node, f"{what}: expected a word")
        return None
    return str(v)


def _names(node: Node, what: str, errs: _Errors) -> list[str]:
    out = [_string(n, what, errs) for n in _sequence(node, what, errs)]
    return [n for n in out if n is not None]


def parse_time(node: Node, what: str, errs: _Errors, *, positive: bool = False) -> float | None:
    """`2.5s`, `250ms` or a number of seconds; None (and an error) for anything else."""
    raw = _value(node) if isinstance(node, ScalarNode) else None
    t: float | None = None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        t = float(raw)
    elif isinstance(raw, str) and (m := _TIME.match(raw)):
        t = float(m.group(1)) / (1000.0 if m.group(2) == "ms" else 1.0)
    if t is None or not math.isfinite(t) or t < 0 or (positive and t == 0):
        bound = "> 0" if positive else ">= 0"
        errs.add(node, f"{what}: bad time {raw!r} (expected e.g. 2.5s or 250ms, {bound})")
        return None
    return t


def _topology(node: Node, profile: Node | None, base: Path,
              errs: _Errors) -> tuple[Topology, dict[str, Any]] | None:
    """The named topology (a shipped name, or a path beside the experiment file), with the
    experiment's `link_profile` (profiles and link_profiles) laid over its document."""
    name = _string(node, "topology", errs)
    if name is None:
        return None
    tries = [base / name, TOPOLOGIES / name, TOPOLOGIES / f"{name}.yaml"]
    path = next((p for p in tries if p.is_file()), None)
    if path is None:
        errs.add(node, f"topology: no topology {name!r} (a shipped name such as figure2, or "
                 "a file beside the experiment)")
        return None
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict):
        errs.add(node, f"topology: {path} is not a topology (not a mapping)")
        return None
    if profile is not None:
        for key, _, v in _mapping(profile, "link_profile", errs):
            if key not in ("profiles", "link_profiles"):
                errs.add(v, f"link_profile.{key}: unknown key (profiles, link_profiles)")
                continue
            value = _value(v)
            if not isinstance(value, dict):
                errs.add(v, f"link_profile.{key}: expected a mapping")
                continue
            doc[key] = {**(doc.get(key) or {}), **value}
    try:
        return model.build(doc), doc
    except TopologyError as exc:
        errs.add(profile or node, f"topology {name}: {exc}")
        return None


class _Parser:
    def __init__(self, topo: Topology | None, errs: _Errors,
                 families: tuple[str, ...] = ("ipv4",)) -> None:
        self.topo = topo
        self.errs = errs
        self.families = families  # of a stream or check that names none

    # --- names ---------------------------------------------------------------------------

    def node(self, n: Node, name: str, what: str) -> bool:
        if self.topo is not None and name not in self.topo.nodes and name not in self.mobiles:
            self.errs.add(n, f"{what}: unknown node {name!r}")
            return False
        return True

    @property
    def mobiles(self) -> list[str]:
        return list(self.topo.mobiles) if self.topo is not None else []

    def mobile(self, n: Node, name: str, what: str) -> bool:
        if self.topo is not None and name not in self.mobiles:
            self.errs.add(n, f"{what}: {name!r} is not a mobile node "
                          f"({', '.join(self.mobiles)})")
            return False
        return True

    # --- traffic -------------------------------------------------------------------------

    def traffic(self, node: Node) -> list[Traffic]:
        out: list[Traffic] = []
        for i, entry in enumerate(_sequence(node, "traffic", self.errs)):
            items = list(_mapping(entry, f"traffic[{i}]", self.errs))
            if len(items) != 1:
                if items:
                    self.errs.add(entry, f"traffic[{i}]: one kind per entry "
                                  f"({', '.join(TRAFFIC_KINDS)})")
                continue
            kind, knode, body = items[0]
            if kind not in TRAFFIC_KINDS:
                self.errs.add(knode, f"traffic[{i}]: unknown traffic {kind!r} "
                              f"({', '.join(TRAFFIC_KINDS)})")
                continue
            out += self.stream(kind, body, f"traffic[{i}].{kind}")
        return out

    def stream(self, kind: str, body: Node, what: str) -> list[Traffic]:
        allowed = {"family", *{"ping": {"from", "to", "interval"},
                               "iperf3": {"from", "to", "proto", "rate"},
                               "udp": {"from", "to", "interval", "start", "count"}}[kind]}
        fields: dict[str, Any] = {}
        families = self.families
        src: str | None = None
        dsts: list[str] = []
        ok = True
        for key, knode, v in _mapping(body, what, self.errs):
            where = f"{what}.{key}"
            if key not in allowed:
                self.errs.add(knode, f"{where}: unknown key ({', '.join(sorted(allowed))})")
                ok = False
            elif key == "from":
                src = _string(v, where, self.errs)
                ok = src is not None and self.node(v, src, where) and ok
            elif key == "to":
                dsts = self.destinations(v, where)
                ok = bool(dsts) and ok
            elif key in ("interval", "start"):
                t = parse_time(v, where, self.errs, positive=key == "interval")
                fields["interval_s" if key == "interval" else "start_s"] = t
                ok = t is not None and ok
            elif key == "count":
                c = _value(v) if isinstance(v, ScalarNode) else None
                if not isinstance(c, int) or isinstance(c, bool) or c < 1:
                    self.errs.add(v, f"{where}: expected a whole number >= 1, got {c!r}")
                    ok = False
                fields["count"] = c
            elif key == "proto":
                p = _value(v) if isinstance(v, ScalarNode) else None
                if p not in ("tcp", "udp"):
                    self.errs.add(v, f"{where}: {p!r} is not tcp or udp")
                    ok = False
                fields["proto"] = p
            elif key == "rate":
                r = str(_value(v)) if isinstance(v, ScalarNode) else ""
                if not _RATE.match(r):
                    self.errs.add(v, f"{where}: {r!r} is not a rate such as 10M or 500K")
                    ok = False
                fields["rate"] = r
            elif key == "family":
                got = self.family(v, where)
                families = got or families
                ok = got is not None and ok
        for key in ("from", "to"):
            if isinstance(body, MappingNode) and key not in (
                    str(_value(k)) for k, _ in body.value):
                self.errs.add(body, f"{what}: missing {key!r}")
                ok = False
        if not ok or src is None:
            return []
        return [Traffic(kind, src, d, body.start_mark.line + 1, family=f, **fields)
                for d in dsts if d != src for f in families]

    def family(self, v: Node, where: str) -> tuple[str, ...] | None:
        """`ipv4`, `ipv6` or `both`: the families it means; None (and an error) otherwise."""
        f = _value(v) if isinstance(v, ScalarNode) else None
        if not isinstance(f, str) or f not in FAMILIES:
            self.errs.add(v, f"{where}: {f!r} is not {', '.join(sorted(FAMILIES))}")
            return None
        return tuple(FAMILIES[f])

    def destinations(self, v: Node, where: str) -> list[str]:
        if isinstance(v, ScalarNode) and _value(v) == GROUP:
            return self.mobiles
        names = _names(v, where, self.errs) if isinstance(v, SequenceNode) else [
            n for n in [_string(v, where, self.errs)] if n is not None]
        return names if all([self.node(v, n, where) for n in names]) else []

    # --- the timeline --------------------------------------------------------------------

    def timeline(self, node: Node) -> list[Firing]:
        out: list[Firing] = []
        for i, entry in enumerate(_sequence(node, "timeline", self.errs)):
            out += self.entry(entry, f"timeline[{i}]")
        return sorted(out, key=lambda f: f.t_s)

    def entry(self, entry: Node, what: str) -> list[Firing]:
        got: dict[str, tuple[Node, Node]] = {}
        for key, knode, v in _mapping(entry, what, self.errs):
            if key not in ("at", "every", "until", "count", "do"):
                self.errs.add(knode, f"{what}.{key}: unknown key (at, every, until, count, do)")
            got[key] = (knode, v)
        if not isinstance(entry, MappingNode):
            return []
        if "do" not in got:
            self.errs.add(entry, f"{what}: missing 'do' (the action)")
        if "at" not in got and "every" not in got:
            self.errs.add(entry, f"{what}: give 'at' or 'every'")
        for key in ("until", "count"):
            if key in got and "every" not in got:
                self.errs.add(got[key][0], f"{what}.{key}: only with 'every'")
        at = parse_time(got["at"][1], f"{what}.at", self.errs) if "at" in got else None
        every = parse_time(got["every"][1], f"{what}.every", self.errs, positive=True) \
            if "every" in got else None
        until = parse_time(got["until"][1], f"{what}.until", self.errs) \
            if "until" in got else None
        count: int | None = None
        if "count" in got:
            c = _value(got["count"][1]) if isinstance(got["count"][1], ScalarNode) else None
            if not isinstance(c, int) or isinstance(c, bool) or c < 1:
                self.errs.add(got["count"][1], f"{what}.count: expected a whole number >= 1, "
                              f"got {c!r}")
            else:
                count = c
        if "every" in got and "until" not in got and "count" not in got:
            self.errs.add(got["every"][0], f"{what}: 'every' needs 'until' or 'count'")
        actions = self.actions(got["do"][1], f"{what}.do") if "do" in got else []
        if not actions:
            return []
        if every is None:
            if at is None:
                return []
            times = [at]
        else:
            first = at if at is not None else every
            if until is not None and until < first:
                self.errs.add(got["until"][1], f"{what}.until: before the first firing "
                              f"({first:g}s)")
                return []
            n = count if count is not None else int(((until or 0.0) - first) / every
                                                      + 1e-9) + 1
            times = [first + k * every for k in range(min(n, MAX_FIRINGS + 1))]
            if until is not None:
                times = [t for t in times if t <= until + 1e-9]
            if len(times) > MAX_FIRINGS:
                self.errs.add(got["every"][1], f"{what}: more than {MAX_FIRINGS} firings")
                return []
        return [Firing(t, a, k) for k, t in enumerate(times) for a in actions]

    def actions(self, node: Node, what: str) -> list[Action]:
        items = _sequence(node, what, self.errs) if isinstance(node, SequenceNode) else [node]
        out = []
        for n in items:
            text = _string(n, what, self.errs)
            if text is not None and (a := self.action(n, text, what)) is not None:
                out.append(a)
        return out if len(out) == len(items) else []

    def action(self, n: Node, text: str, what: str) -> Action | None:
        words = text.split()
        verb, args = (words[0], tuple(words[1:])) if words else ("", ())
        where = f"{what} {text!r}"
        if verb not in USAGE:
            self.errs.add(n, f"{where}: unknown action {verb!r} ({', '.join(VERBS)})")
            return None
        usage, arity = USAGE[verb]
        if (arity is None and len(args) < 2) or (arity is not None and len(args) != arity):
            self.errs.add(n, f"{where}: expected `{usage}`")
            return None
        ok = True
        if verb in ("handoff", "idle", "rotate", "leave"):
            ok = self.mobile(n, args[0], where)
        if self.topo is not None:
            ok = self.check_action(n, verb, args, where) and ok
        elif verb == "mode" and args[0] not in MODES:
            self.errs.add(n, f"{where}: mode {args[0]!r} is not redirect or draft")
            ok = False
        return Action(verb, args, text, n.start_mark.line + 1) if ok else None

    def check_action(self, n: Node, verb: str, args: tuple[str, ...], where: str) -> bool:
        topo = self.topo
        assert topo is not None
        ars = {a.name for a in topo.by_role(Role.AR)}
        problems: list[str] = []
        if verb == "handoff":
            problems += [f"{a!r} is not an access router" for a in args[1:] if a not in ars]
        elif verb == "rotate" and args[0] in self.mobiles and args[0] not in topo.dhcp_mobiles:
            problems.append(f"{args[0]} has a provisioned address; only an MN under "
                            "dhcp.mobiles rotates")
        elif verb == "leave" and topo.outside_cell is None:
            problems.append("the topology has no visited network (internet.outside_subnet)")
        elif verb == "mode" and args[0] not in MODES:
            problems.append(f"mode {args[0]!r} is not redirect or draft")
        elif verb == "link":
            a, b, state = args
            if state not in ("down", "up"):
                problems.append(f"{state!r} is not down or up")
            if not any({lk.a, lk.b} == {a, b} for lk in topo.links):
                problems.append(f"no link between {a!r} and {b!r}")
        elif verb == "fault":
            how, daemon, node = args
            if how not in FAULTS:
                problems.append(f"fault {how!r} is not kill or restart")
            if daemon not in DAEMON_CLASSES:
                problems.append(f"unknown daemon {daemon!r} ({', '.join(DAEMON_CLASSES)})")
            if node not in topo.nodes and node not in self.mobiles:
                problems.append(f"unknown node {node!r}")
        for p in problems:
            self.errs.add(n, f"{where}: {p}")
        return not problems

    # --- checks --------------------------------------------------------------------------

    def checks(self, node: Node) -> list[Check]:
        out: list[Check] = []
        for i, entry in enumerate(_sequence(node, "checks", self.errs)):
            what = f"checks[{i}]"
            line = entry.start_mark.line + 1
            if isinstance(entry, ScalarNode):
                text = str(_value(entry))
                if text == "no_stale_routes":
                    out += self.per_family(Check(text, text, line))
                elif text == "auth_ok":
                    out.append(Check(text, text, line))
                elif m := _METRIC.match(text):
                    name, mode, op, bound = m.groups()
                    if name not in METRICS:
                        self.errs.add(entry, f"{what}: unknown metric {name!r} "
                                      f"({', '.join(METRICS)})")
                        continue
                    if mode is not None and (name not in PER_MODE or mode not in SUFFIXES):
                        self.errs.add(entry, f"{what}: {name}[{mode}]: only "
                                      f"{', '.join(PER_MODE)} take "
                                      f"{' or '.join(f'[{x}]' for x in SUFFIXES)}")
                        continue
                    out.append(Check("metric", text, line, op=op, bound=float(bound),
                                     metric=name if mode is None else f"{name}[{mode}]"))
                else:
                    self.errs.add(entry, f"{what}: unknown check {text!r} (no_stale_routes, "
                                  "auth_ok, reachable: [...], path: [...], METRIC OP NUMBER)")
                continue
            items = list(_mapping(entry, what, self.errs))
            if len(items) != 1 or items[0][0] not in ("reachable", "path"):
                self.errs.add(entry, f"{what}: expected reachable: [A, B...], path: [A, ..., Z]"
                              ", no_stale_routes, auth_ok or METRIC OP NUMBER")
                continue
            kind, _, v = items[0]
            names = _names(v, f"{what}.{kind}", self.errs)
            if len(names) < 2:
                self.errs.add(v, f"{what}.{kind}: name at least two nodes")
                continue
            named = names if kind == "reachable" else [  # a path's "*": any one hop
                names[0], *(nm for nm in names[1:-1] if nm != ANY_HOP), names[-1]]
            if all([self.node(v, nm, f"{what}.{kind}") for nm in named]):
                out += self.per_family(Check(kind, f"{kind}: [{', '.join(names)}]", line,
                                             nodes=tuple(names)))
        return out

    def per_family(self, c: Check) -> list[Check]:
        """A reachability, path or stale-route check in each of the experiment's families;
        named by its family when that is not IPv4 alone, so each verdict reads apart."""
        if self.families == ("ipv4",):
            return [c]
        return [dataclasses.replace(c, text=f"{c.text} ({f})", family=f) for f in self.families]


def parse(text: str, where: str = "<experiment>", base: Path | None = None,
          topo: Topology | None = None, family: str | None = None) -> Experiment:
    """The experiment in ``text``; ``base`` is where a topology path is looked up, and
    ``topo`` (the analysis of a kept run) replaces the file's own topology; ``family``
    (--family) replaces the file's `family:`."""
    try:
        return _parse(text, where, base, topo, family)
    except yaml.YAMLError as exc:  # the syntax, or a tag no safe constructor knows
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else "?"
        raise ExperimentError([f"{where}:{line}: not YAML: "
                               f"{getattr(exc, 'problem', None) or exc}"]) from None


def _parse(text: str, where: str, base: Path | None, topo: Topology | None,
           family: str | None) -> Experiment:
    errs = _Errors(where)
    root = yaml.compose(text)
    if root is None:
        raise ExperimentError([f"{where}:1: the file is empty"])
    top: dict[str, tuple[Node, Node]] = {}
    known = ("name", "description", "topology", "link_profile", "family", "duration",
             "traffic", "timeline", "checks")
    for key, knode, v in _mapping(root, "the experiment", errs):
        if key not in known:
            errs.add(knode, f"{key}: unknown key ({', '.join(known)})")
        top[key] = (knode, v)
    if not isinstance(root, MappingNode):
        raise ExperimentError(errs.items)
    doc: dict[str, Any] = {}
    given = topo is not None  # a kept run's topology: already as the run had it
    if topo is None:
        if "topology" not in top:
            errs.add(root, "missing 'topology'")
        else:
            built = _topology(top["topology"][1], top.get("link_profile", (None, None))[1],
                              base or Path.cwd(), errs)
            if built is not None:
                topo, doc = built
    p = _Parser(topo, errs)
    if family is not None:
        if family not in FAMILIES:
            raise ExperimentError([f"--family: {family!r} is not "
                                   f"{', '.join(sorted(FAMILIES))}"])
        p.families = tuple(FAMILIES[family])
    elif "family" in top:
        p.families = p.family(top["family"][1], "family") or p.families
    traffic = p.traffic(top["traffic"][1]) if "traffic" in top else []
    timeline = p.timeline(top["timeline"][1]) if "timeline" in top else []
    checks = p.checks(top["checks"][1]) if "checks" in top else []
    if topo is not None and not errs.items:
        topo = _dual_stack(topo, doc, traffic, checks, given, errs)
    last = max((f.t_s for f in timeline), default=0.0)
    duration = last + TAIL_S
    if "duration" in top:
        d = parse_time(top["duration"][1], "duration", errs, positive=True)
        if d is not None and d < last:
            errs.add(top["duration"][1], f"duration: {d:g}s ends before the last action "
                     f"({last:g}s)")
        duration = d if d is not None else duration
    for t in traffic:
        if t.start_s >= duration:
            errs.at(t.line, f"traffic: starts at {t.start_s:g}s, after the end ({duration:g}s)")
    name = str(_value(top["name"][1])) if "name" in top else Path(where).stem
    description = str(_value(top["description"][1])) if "description" in top else ""
    if errs.items:
        raise ExperimentError(errs.items)
    assert topo is not None
    return Experiment(name, topo, doc, duration, tuple(traffic), tuple(timeline),
                      tuple(checks), description, p.families)


def _dual_stack(topo: Topology, doc: dict[str, Any], traffic: list[Traffic],
                checks: list[Check], given: bool, errs: _Errors) -> Topology:
    """The topology with every MN an IPv6 stream or check names dual-stack: a provisioned
    one holds its planned /64 (addressing.ipv6.mobiles), a DHCP one must take its /64s by
    DHCPv6 (dhcp.ipv6). IPv6 at all needs the dual-stack backbone."""
    six = [*(t.line for t in traffic if t.family == "ipv6"),
           *(c.line for c in checks if c.family == "ipv6")]
    if not six:
        return topo
    if topo.backbone6 is None:
        errs.at(min(six), f"family ipv6: {topo.name} has no IPv6 backbone (addressing.ipv6 "
                "with loopbacks and links)")
        return topo
    wanted = _mobiles6(topo, traffic, checks)
    for mn in wanted:
        if mn in topo.dhcp_mobiles and mn not in topo.dhcp6_mobiles:
            errs.at(min(six), f"family ipv6: {mn} takes its addresses by DHCP; IPv6 to it "
                    "needs it under dhcp.ipv6 (DHCPv6)")
    missing = [mn for mn in wanted if mn not in topo.dhcp_mobiles
               and mn not in topo.backbone6.mobiles]
    # A kept run's topology is the lab's, whose MNs DeclaredExperiment already checked.
    if not missing or errs.items or given:
        return topo
    plan = doc["addressing"]["ipv6"]
    plan["mobiles"] = sorted({*(plan.get("mobiles") or ()), *missing})
    try:
        return model.build(doc)
    except TopologyError as exc:
        errs.at(min(six), f"family ipv6: {exc}")
        return topo


def load(path: str | Path, family: str | None = None) -> Experiment:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ExperimentError([f"{p}: {exc}"]) from None
    return parse(text, str(p), p.resolve().parent, family=family)
