"""What every scenario shares: the plug-in base class (its CLI arguments, measuring into a run
directory, analysing that directory offline, its table), the walk across ARs, address owners,
the topology graph, event logs and the wall-clock pacing.

A run directory holds `run.json` (which scenario, its parameters, what the measurement
noted), `topology.yaml` (the topology it ran on) and the raw files; the analysis reads
nothing else, so `flatarch analyse DIR` gives the same JSON as the scenario gave.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any, ClassVar, Self

from agents.contract import REDIRECT_METRIC
from agents.contract import read_events as read_events  # the run dir's events.jsonl
from topologies import model
from topologies.analysis.measure import MeasureError, dump_route_events
from topologies.lab.daemons import LabError
from topologies.lab.lab import Lab
from topologies.model import Role, Topology
from topologies.scenarios.routewatch import RouteWatcher

# `--family` (issue 18): the families a run probes and records, one record per family.
FAMILIES = {"ipv4": ["ipv4"], "ipv6": ["ipv6"], "both": ["ipv4", "ipv6"]}

Progress = Callable[[str], None]

RUN_FILE = "run.json"
TOPOLOGY_FILE = "topology.yaml"
ROUTES = "routes.jsonl"  # every watched router's kernel route changes over the run
# A run of several labs (a sweep over what a lab is built with): which scenario, and the
# subdirectories that hold one run directory each, in order.
POINTS_FILE = "points.json"
# The old AR's redirect (its own metric) bridges a re-route; a route settling on it is not one.
REDIRECT = frozenset({REDIRECT_METRIC})
TOPOLOGIES = Path(__file__).resolve().parents[1]  # the shipped topologies/*.yaml


PROBE_INTERVAL_S = 0.01  # the paced prober toward an MN: interruptions resolve to this

@dataclass(frozen=True)
class Step:
    to: str
    kind: str  # intra-cluster | inter-cluster | return-home
    direct_link: bool = False  # the new AR and the previous one share a link (draft 2.2)


def walk(topo: Topology, mn: str) -> list[Step]:
    """One round trip from the MN's home AR covering every case the issue names: another AR
    of the home cluster, across a direct AR-AR link into another cluster, a third cluster,
    and home again. Falls back gracefully on topologies without an AR-AR link."""
    home = topo.mobile(mn).home
    cluster = topo.cluster_of(home)
    ar_links = [
        (lk.a, lk.b) for lk in topo.links
        if topo.nodes[lk.a].role is Role.AR and topo.nodes[lk.b].role is Role.AR
        and topo.cluster_of(lk.a) != topo.cluster_of(lk.b)
    ]
    bridge: tuple[str, str] | None = None
    for a, b in ar_links:
        if a in cluster.ars and a != home:
            bridge = (a, b)
        elif b in cluster.ars and b != home:
            bridge = (b, a)
        if bridge:
            break
    sibling = bridge[0] if bridge else next((a for a in cluster.ars if a != home), None)
    order: list[str] = []
    if sibling:
        order.append(sibling)
    if bridge:
        order.append(bridge[1])
    used = {topo.cluster_of(a).name for a in [home, *order]}
    third = next((c for c in topo.clusters if c.name not in used), None)
    if third is not None:
        order.append(third.ars[0])
    elif not bridge:
        other = next((c for c in topo.clusters if c.name != cluster.name), None)
        if other is not None:
            order.append(other.ars[0])
    order.append(home)
    steps: list[Step] = []
    prev = home
    for ar in order:
        if ar == home:
            kind = "return-home"
        elif topo.cluster_of(ar) == topo.cluster_of(prev):
            kind = "intra-cluster"
        else:
            kind = "inter-cluster"
        linked = any({lk.a, lk.b} == {prev, ar} for lk in topo.links)
        steps.append(Step(ar, kind, linked))
        prev = ar
    return steps


def address_owner(topo: Topology, pools: bool = True) -> dict[IPv4Address, str]:
    """Which node each interface, loopback and (with ``pools``) pool gateway address
    belongs to."""
    owner: dict[IPv4Address, str] = {}
    for n in topo.nodes.values():
        for i in n.interfaces:
            owner[i.address] = n.name
        if n.loopback is not None:
            owner[n.loopback] = n.name
        if pools and n.pool is not None:
            owner[n.pool_gateway] = n.name
    return owner


def provisioned_address(topo: Topology, mn: str) -> IPv4Address:
    address = topo.mobile(mn).address
    if address is None:
        raise LabError(f"{mn} has no provisioned address")
    return address


def add_walk_arguments(parser: argparse.ArgumentParser) -> None:
    """--handoffs and --period, for the scenarios that walk the MN across the ARs."""
    parser.add_argument("--handoffs", type=int, default=20, help="handoffs per mode (at least)")
    parser.add_argument("--period", type=float, default=2.0, help="seconds between handoffs")


def graph(topo: Topology) -> dict[str, set[str]]:
    adj: dict[str, set[str]] = {n: set() for n in topo.nodes}
    for lk in topo.links:
        adj[lk.a].add(lk.b)
        adj[lk.b].add(lk.a)
    return adj


def wait_for_clock(t: float) -> None:
    """Pace the walk: wait until wall-clock time t (a schedule, not a guess at readiness)."""
    while (left := t - time.time()) > 0:
        time.sleep(min(left, 0.05))


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSON-lines file the measurement wrote; a bad line is a MeasureError
    (unlike an agent's event log, these files are ours and must be whole)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise MeasureError(f"{path}: {exc}") from None
    out: list[dict[str, Any]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise MeasureError(f"{path}:{n}: {exc}") from None
        if not isinstance(row, dict):
            raise MeasureError(f"{path}:{n}: not a JSON object")
        out.append(row)
    return out


def topology_source(topo: Topology) -> Path | None:
    """The shipped topology file that describes ``topo`` (by name), for runs started from
    Python without a file name."""
    for p in sorted(TOPOLOGIES.glob("*.yaml")):
        with contextlib.suppress(model.TopologyError):
            if model.load(p).name == topo.name:
                return p
    return None


def write_points(out_dir: Path, scenario: str, subs: list[str]) -> None:
    """A run of several labs: written before the first is up, so that a run stopped part
    way is still read back point by point."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / POINTS_FILE).write_text(json.dumps({"scenario": scenario, "points": subs},
                                                  indent=1) + "\n")


def _points_doc(out_dir: Path) -> dict[str, Any] | None:
    """POINTS_FILE read and checked, or None for a run directory of one lab."""
    path = out_dir / POINTS_FILE
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MeasureError(f"{path}: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("scenario"), str) \
            or not isinstance(doc.get("points"), list) \
            or not all(isinstance(x, str) and x and "/" not in x for x in doc["points"]):
        raise MeasureError(f"{path}: not {{\"scenario\": name, \"points\": [subdirectory]}}")
    return doc


def points_scenario(out_dir: Path) -> str | None:
    """The scenario a run of several labs names, or None for a run directory of one lab."""
    doc = _points_doc(out_dir)
    return str(doc["scenario"]) if doc is not None else None


def read_points(out_dir: Path) -> list[str] | None:
    """The subdirectories of a run of several labs that hold a complete point, in order;
    None for a run directory of one lab."""
    doc = _points_doc(out_dir)
    if doc is None:
        return None
    subs = [str(x) for x in doc["points"]]
    done = [s for s in subs if (out_dir / s / RUN_FILE).exists()
            and json.loads((out_dir / s / RUN_FILE).read_text()).get("complete")]
    if not done:
        raise MeasureError(f"{out_dir}: none of the points {', '.join(subs)} is complete")
    return done


@dataclass
class RunDir:
    """A kept run directory, read back: its run.json and its topology."""

    path: Path
    meta: dict[str, Any]
    topo: Topology

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.meta.get("params") or {})

    @property
    def measured(self) -> dict[str, Any]:
        return dict(self.meta.get("measured") or {})

    @classmethod
    def open(cls, path: Path) -> RunDir:
        try:
            meta = json.loads((path / RUN_FILE).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise MeasureError(f"{path} is not a run directory ({RUN_FILE}: {exc})") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("scenario"), str):
            raise MeasureError(f"{path / RUN_FILE} names no scenario")
        try:
            topo = model.load(path / TOPOLOGY_FILE)
        except model.TopologyError as exc:
            raise MeasureError(f"{path}: no usable {TOPOLOGY_FILE}: {exc}") from None
        return cls(path, meta, topo)


class Scenario:
    """What every scenario starts from: a running lab, the MN it moves (a provisioned one,
    or with ``dhcp_mn`` one that gets its addresses by DHCP), a directory for its raw files
    and progress lines.

    A plug-in sets `name` and `help`, declares its options in `add_arguments` and builds
    itself from them in `from_args`; `measure` writes raw files into `self.dir` (inside the
    lab), `analyse` turns a run directory into the result (no lab), `table` prints it.
    Registering it (topologies.scenarios.registry.register) is all `flatarch` needs.
    """

    name: ClassVar[str]
    help: ClassVar[str] = ""
    dhcp_mn: ClassVar[bool] = False
    # Where the topology came from, copied into the run directory for the offline analysis.
    topology_file: Path | None = None

    def __init__(self, lab: Lab, mn: str | None, progress: Progress | None,
                 out_dir: Path | None) -> None:
        kind = "an MN listed under dhcp.mobiles" if self.dhcp_mn else "a provisioned MN"
        pool = [m for m in lab.mobiles if (m in lab.topo.dhcp_mobiles) == self.dhcp_mn]
        if not pool:
            raise LabError(f"the {self.name} scenario needs a topology with {kind}")
        if mn is not None and mn not in pool:
            raise LabError(f"the {self.name} scenario needs {kind}; {mn!r} is not one")
        self.lab = lab
        self.topo = lab.topo
        self.mn = mn or pool[0]
        self.progress = progress or lab.progress
        self.dir = out_dir or lab.dir / f"scenario-{self.name}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._measured: dict[str, Any] = {}

    # --- the plug-in interface -------------------------------------------------------------

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """The scenario's own options on `flatarch scenario NAME`."""

    @classmethod
    def from_args(cls, lab: Lab, args: argparse.Namespace, out_dir: Path) -> Self:
        raise NotImplementedError(f"{cls.__name__} cannot be built from the command line")

    @classmethod
    def topology_for(cls, args: argparse.Namespace, out_dir: Path) -> Path:
        """The topology file the lab is built from: --topology, unless the scenario derives
        its own from it (a population of --mobiles MNs) into ``out_dir``."""
        return Path(args.topology)

    @classmethod
    def points(cls, args: argparse.Namespace) -> list[tuple[str, argparse.Namespace]]:
        """The labs one run takes, each (its subdirectory, its arguments): one lab in the
        run directory itself, unless the scenario sweeps something a lab is built with."""
        return [("", args)]

    @classmethod
    def combine(cls, out_dir: Path, results: list[tuple[str, dict[str, Any]]]
                ) -> dict[str, Any]:
        """One result from the points' (subdirectory, result) of a run of several labs."""
        raise NotImplementedError(f"{cls.__name__} runs in one lab")

    @classmethod
    def analysed_points(cls, out_dir: Path) -> dict[str, Any]:
        """The analysis of a run directory, or of a run of several labs (POINTS_FILE): each
        point analysed from its own directory, then combined."""
        subs = read_points(out_dir)
        if subs is None:
            return cls.analysed(out_dir)
        return cls.combine(out_dir, [(sub, cls.analysed(out_dir / sub)) for sub in subs])

    def params(self) -> dict[str, Any]:
        """The parameters the run directory records (run.json `params`)."""
        return {"mn": self.mn}

    def measure(self) -> None:
        """Drive the lab and write every raw file into self.dir."""
        raise NotImplementedError

    @classmethod
    def analyse(cls, out_dir: Path) -> dict[str, Any]:
        """The result, from the run directory's files alone."""
        raise NotImplementedError

    @staticmethod
    def table(result: dict[str, Any]) -> str:
        return json.dumps(result.get("summary", {}), indent=1, default=str)

    # --- the run -----------------------------------------------------------------------------

    def watch_routes(self, stack: contextlib.ExitStack[Any],
                     within: IPv4Network | str | Iterable[str]) -> RouteWatcher:
        """A RouteWatcher on every router for the block of ``stack``; whatever happens in
        it, the events end up in routes.jsonl."""
        watcher = stack.enter_context(RouteWatcher(
            {r.name: self.lab.execs[r.name].pid for r in self.topo.routers}, within))
        stack.callback(lambda: (self.dir / ROUTES).write_text(
            dump_route_events(watcher.events())))
        return watcher

    def keep_files(self, nodes: Iterable[str], names: Iterable[str]) -> None:
        """Copy the nodes' run-directory files (event logs, bgpd logs, status) into the run
        directory as <node>.<name>, the only place the analysis looks."""
        wanted = list(names)
        for node in nodes:
            for name in wanted:
                src = self.lab.rundir(node) / name
                if src.exists():
                    shutil.copyfile(src, self.dir / f"{node}.{name}")

    def note(self, **fields: Any) -> None:
        """Values the measurement learned (times, addresses), kept in run.json `measured`
        as soon as they are known, so that a failed run still shows how far it came."""
        self._measured.update(fields)
        self._write_run(complete=False)

    def record(self) -> Path:
        """run.json and the topology first, then the measurement's raw files."""
        src = self.topology_file or topology_source(self.topo)
        if src is not None:
            shutil.copyfile(src, self.dir / TOPOLOGY_FILE)
        # What every record of every scenario names: the links it ran over and the probe
        # interval (the contract), known before anything is measured.
        self.note(link_profile=self.topo.link_profile(), shaping=self.lab.shaping.record(),
                  probe_interval_ms=PROBE_INTERVAL_S * 1000.0)
        try:
            self.measure()
        except BaseException as exc:  # recorded, not handled: the caller still sees it
            self.note(error=f"{type(exc).__name__}: {exc}")
            raise
        self._write_run(complete=True)
        return self.dir

    def run(self) -> dict[str, Any]:
        """Measure, then analyse what was written: the whole scenario in one call."""
        self.record()
        return type(self).analysed(self.dir)

    @classmethod
    def analysed(cls, out_dir: Path) -> dict[str, Any]:
        """The scenario's analysis of a run directory, with what every result names: the link
        profile and shaping it ran with, and the probe interval."""
        result = cls.analyse(out_dir)
        measured = RunDir.open(out_dir).measured
        for key in ("link_profile", "shaping", "probe_interval_ms"):
            if key in measured:  # runs kept before these were recorded have none
                result.setdefault(key, measured[key])
        return result

    def _write_run(self, complete: bool) -> None:
        doc = {"scenario": self.name, "topology": self.topo.name,
               "topology_file": TOPOLOGY_FILE, "params": self.params(),
               "measured": self._measured, "complete": complete}
        tmp = self.dir / f"{RUN_FILE}.tmp"
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True, default=str) + "\n")
        tmp.replace(self.dir / RUN_FILE)
