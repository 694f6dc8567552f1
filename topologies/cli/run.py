"""`flatarch run EXPERIMENT.yaml`: validate the experiment file (every error at once, exit 2,
nothing started), build its topology, run it into a kept run directory, analyse, print the
table and exit 1 naming each failed check."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from topologies.cli.common import write_json
from topologies.cli.scenario import kept_dir, measure_then_analyse
from topologies.scenarios import declared, experiment

ORDER = 85  # after the scenarios and their analysis, which it builds on
TOPOLOGY_IN = "experiment-topology.yaml"  # the named topology with the link profile laid over


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run a declarative experiment file (docs/experiments.md)")
    p.add_argument("experiment", metavar="EXPERIMENT.yaml")
    p.add_argument("--out", help="the run directory (default: a new one, as for scenarios)")
    p.add_argument("--json")
    p.add_argument("--capture", metavar="NODE[:IFACE],...",
                   help="write a pcap per capture point into the run directory's pcap/")
    p.add_argument("--check", action="store_true",
                   help="only validate the file against its topology; start nothing")
    declared.add_family_override(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        exp = experiment.load(args.experiment, args.family)
    except experiment.ExperimentError as exc:
        print(f"flatarch: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(f"{args.experiment}: valid ({len(exp.traffic)} streams, {len(exp.timeline)} "
              f"actions, {len(exp.checks)} checks on {exp.topology.name}, "
              f"{'/'.join(exp.families)})")
        return 0
    out = Path(args.out) if args.out else kept_dir(f"run-{exp.name}")
    out.mkdir(parents=True, exist_ok=True)
    topo_file = out / TOPOLOGY_IN
    topo_file.write_text(yaml.safe_dump(exp.topology_doc, sort_keys=False))
    args.topology = str(topo_file)
    return report(measure_then_analyse(declared.DeclaredExperiment, args, out), args.json)


def report(result: dict[str, Any], json_path: str | None) -> int:
    """The table on stdout, the JSON, and each failed check named on stderr: 1 if any."""
    print(declared.table(result))
    write_json(json_path, result)
    for c in result["checks"]:
        if not c["ok"]:
            print(f"flatarch: check failed (line {c['line']}): {c['check']}: {c['detail']}",
                  file=sys.stderr)
    return 1 if result["failed"] else 0
