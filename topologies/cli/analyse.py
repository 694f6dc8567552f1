"""`flatarch analyse DIR`: re-run a kept run directory's analysis offline (no lab, no root),
by the scenario its run.json names (or, for a run of several labs, its points.json);
the same JSON as the scenario gave."""

from __future__ import annotations

import argparse
from pathlib import Path

from topologies.analysis.measure import MeasureError
from topologies.cli.common import write_json
from topologies.lab.daemons import LabError
from topologies.scenarios import registry
from topologies.scenarios.base import RunDir, points_scenario

ORDER = 80


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    an = sub.add_parser("analyse", help="re-run the analysis of a kept run directory offline")
    an.add_argument("dir", metavar="DIR")
    an.add_argument("--json")
    an.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.dir)
    try:
        name = points_scenario(out) or RunDir.open(out).meta["scenario"]
        cls = registry.get(name)
        result = cls.analysed_points(out)
    except (MeasureError, OSError, KeyError, ValueError) as exc:
        raise LabError(f"cannot analyse {out}: {exc}") from None
    print(cls.table(result))
    write_json(args.json, result)
    return 0
