"""`flatarch report`: the flat and anchored evaluation in one run (the baseline scenario),
written as evaluation.md with its plots; the raw run is kept under OUT/raw."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from topologies.cli.common import add_topology
from topologies.cli.scenario import measure_then_analyse
from topologies.scenarios import registry

ORDER = 70


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rp = sub.add_parser("report", help="run the evaluation and write evaluation.md")
    rp.add_argument("--out", default="results")
    rp.add_argument("--markdown", help="where evaluation.md goes (default: in --out)")
    add_topology(rp)
    rp.add_argument("--handoffs", type=int, default=12, help="measured handoffs per mode")
    rp.add_argument("--period", type=float, default=2.0, help="seconds between handoffs")
    rp.add_argument("--home-rtt-ms", type=float, default=30.0,
                    help="round trip to the home network's HSS (emulated)")
    rp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from topologies.analysis import report

    cls = registry.get("baseline")
    out = Path(args.out)
    raw = out / "raw"
    result = measure_then_analyse(cls, args, raw)
    md = Path(args.markdown) if args.markdown else out / "evaluation.md"
    prefix = os.path.relpath(out, md.parent) + "/" if md.parent.resolve() != out.resolve() else ""
    path = report.write_report(result, out, raw=raw, prefix=prefix, markdown=md)
    print(cls.table(result))
    print(f"wrote {path}")
    return 0
