"""`flatarch scenario NAME`: up, measure into a kept run directory, down; then, outside the
lab, analyse that directory. A failed analysis leaves the raw files for `flatarch analyse`.
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import sys
from pathlib import Path
from typing import Any

from topologies import model
from topologies.analysis.measure import MeasureError
from topologies.cli.common import (
    add_distance,
    add_topology,
    distance_topology,
    require_root,
    stop_on,
    write_json,
)
from topologies.lab.capture import capture_all, parse_specs
from topologies.lab.daemons import LabError
from topologies.lab.lab import Lab
from topologies.scenarios import registry
from topologies.scenarios.base import Scenario, write_points

ORDER = 50
RUNS = "flatarch-runs"  # where runs without --out are kept, under the current directory


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    scenarios = registry.load()
    sc = sub.add_parser("scenario", help="run a scripted experiment",
                        description="run a scripted experiment: " + ", ".join(scenarios))
    names = sc.add_subparsers(dest="name", metavar="NAME", required=True,
                              parser_class=type(sc))
    for name, cls in scenarios.items():
        p = names.add_parser(name, help=cls.help)
        add_topology(p)
        add_distance(p)
        p.add_argument("--out", help="the run directory: raw files, run.json, plots "
                       f"(default: a new one under ./{RUNS}/ or /var/tmp/flatarch/)")
        p.add_argument("--json")
        p.add_argument("--capture", metavar="NODE[:IFACE],...",
                       help="write a pcap per capture point into the run directory's pcap/")
        cls.add_arguments(p)
    sc.set_defaults(func=run)


def kept_dir(name: str) -> Path:
    """A new run directory that outlives the lab: under ./flatarch-runs when the current
    directory is writable, else under /var/tmp/flatarch."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    roots = [Path.cwd() / RUNS, Path("/var/tmp/flatarch")]
    for root in roots:
        if os.access(root if root.exists() else root.parent, os.W_OK):
            out = root / f"{name}-{stamp}"
            n = 1
            while out.exists():
                n += 1
                out = root / f"{name}-{stamp}-{n}"
            return out
    raise LabError(f"no writable directory for the run (tried {', '.join(map(str, roots))});"
                   " give --out")


def measure_then_analyse(cls: type[Scenario], args: argparse.Namespace,
                         out: Path) -> dict[str, Any]:
    """The scenario's measurement inside the lab, its analysis after the lab is down."""
    require_root()
    out.mkdir(parents=True, exist_ok=True)
    # A distance set is laid over --topology first; a scenario may derive its own from that.
    args.topology = str(distance_topology(args.topology, getattr(args, "distance", None), out))
    source = cls.topology_for(args, out)
    topo = model.load(source)
    print(f"flatarch: run directory {out}", file=sys.stderr)
    stop_on(signal.SIGINT, signal.SIGTERM)  # a stopped scenario still takes its lab down
    try:
        with Lab(topo) as lab:
            sc = cls.from_args(lab, args, out)
            sc.topology_file = source
            with capture_all(lab, parse_specs(args.capture or ""), out / "pcap"):
                sc.record()
    except LabError as exc:
        raise LabError(f"{exc} (the raw files so far are in {out})") from None
    try:
        return cls.analysed(out)
    except (MeasureError, OSError, KeyError, ValueError) as exc:
        raise LabError(f"the analysis failed: {exc}; the raw files are kept in {out} "
                       f"(`flatarch analyse {out}` re-runs it)") from None


def run(args: argparse.Namespace) -> int:
    cls = registry.get(args.name)
    out = Path(args.out) if args.out else kept_dir(args.name)
    points = cls.points(args)
    if len(points) == 1:
        result = measure_then_analyse(cls, points[0][1], out)
    else:
        # One lab after another, each point a run directory of its own under ``out``.
        write_points(out, cls.name, [sub for sub, _ in points])
        results = []
        for i, (sub, point) in enumerate(points):
            print(f"flatarch: point {i + 1}/{len(points)}: {sub}", file=sys.stderr)
            results.append((sub, measure_then_analyse(cls, point, out / sub)))
        result = cls.combine(out, results)
    print(cls.table(result))
    write_json(args.json, result)
    return 0
